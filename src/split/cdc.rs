//! Content-defined chunking of a byte stream that arrives in pieces.
//!
//! FastCDC v2020 (the `fastcdc` crate, pinned) decides a cut from at most `max`
//! bytes after the chunk's start, so a chunk is final once `max` bytes past its
//! start are buffered, or when the stream ends. Cutting with that rule gives the
//! same boundaries however the input is split into pieces.

use fastcdc::v2020::{self, MASKS};

/// Chunk size bounds in bytes. Part of the on-disk format: changing them changes
/// every boundary, so a store keeps the values it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkSizes {
    fn default() -> Self {
        ChunkSizes {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        }
    }
}

impl ChunkSizes {
    /// Parses "16K/64K/256K" (suffixes K and M, or plain bytes).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 3 {
            return Err(format!(
                "chunk sizes {s:?}: expected MIN/AVG/MAX, e.g. 16K/64K/256K"
            ));
        }
        let n = |p: &str| -> Result<u32, String> {
            let (num, mul) = match p.as_bytes().last() {
                Some(b'K' | b'k') => (&p[..p.len() - 1], 1024),
                Some(b'M' | b'm') => (&p[..p.len() - 1], 1024 * 1024),
                _ => (p, 1),
            };
            num.parse::<u32>()
                .ok()
                .and_then(|v| v.checked_mul(mul))
                .ok_or_else(|| format!("chunk size {p:?} is not a number"))
        };
        let cs = ChunkSizes {
            min: n(parts[0])?,
            avg: n(parts[1])?,
            max: n(parts[2])?,
        };
        cs.validate()?;
        Ok(cs)
    }

    pub fn validate(&self) -> Result<(), String> {
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&self.min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&self.avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {}/{}/{} out of range: need min<=avg<=max, min 64..1M, avg 256..4M, max 1K..16M",
                self.min, self.avg, self.max
            ))
        }
    }
}

impl std::fmt::Display for ChunkSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.min, self.avg, self.max)
    }
}

/// Finds cut points with FastCDC v2020 at normalization level 1, the crate's default.
#[derive(Clone, Debug)]
pub struct Cutter {
    sizes: ChunkSizes,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    pub fn new(sizes: ChunkSizes) -> Self {
        let bits = v2020::logarithm2(sizes.avg) as usize;
        Cutter {
            sizes,
            mask_s: MASKS[bits + 1],
            mask_l: MASKS[bits - 1],
        }
    }

    pub fn sizes(&self) -> ChunkSizes {
        self.sizes
    }

    /// Length of the first chunk of `data`; only final when `data.len() >= max`
    /// or `data` is the end of the stream.
    pub fn first_cut(&self, data: &[u8]) -> usize {
        let (_, n) = v2020::cut(
            data,
            self.sizes.min as usize,
            self.sizes.avg as usize,
            self.sizes.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        n.max(1).min(data.len())
    }
}

/// Buffers one stream (a file body, or raw data) and hands out its chunks.
#[derive(Debug)]
pub struct StreamChunker {
    cutter: Cutter,
    buf: Vec<u8>,
}

impl StreamChunker {
    pub fn new(cutter: Cutter) -> Self {
        let cap = cutter.sizes.max as usize;
        StreamChunker {
            cutter,
            buf: Vec::with_capacity(cap),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Adds bytes; calls `emit` for every chunk that is now final.
    ///
    /// Chunks are cut straight from `data` where possible; only a chunk that
    /// straddles two calls is assembled in the buffer, so at most `max` bytes
    /// are copied per call.
    pub fn push<E>(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.cutter.sizes.max as usize;
        let mut data = data;
        while !data.is_empty() {
            if self.buf.is_empty() {
                while data.len() >= max {
                    let n = self.cutter.first_cut(data);
                    emit(&data[..n])?;
                    data = &data[n..];
                }
                self.buf.extend_from_slice(data);
                return Ok(());
            }
            // Top the buffer up to `max` bytes, so its first cut is final.
            let before = self.buf.len();
            let take = (max - before).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            if self.buf.len() < max {
                return Ok(());
            }
            let n = self.cutter.first_cut(&self.buf);
            emit(&self.buf[..n])?;
            if n >= before {
                // What is left of the buffer came from `data`: go on from there, uncopied.
                data = &data[n - before..];
                self.buf.clear();
            } else {
                self.buf.drain(..n);
                data = &data[take..];
            }
        }
        Ok(())
    }

    /// Ends the stream: emits whatever is buffered as final chunks.
    pub fn finish<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.drain(1, emit)?;
        debug_assert!(self.buf.is_empty());
        Ok(())
    }

    /// Emits chunks while at least `keep` bytes are buffered from the chunk start.
    fn drain<E>(
        &mut self,
        keep: usize,
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut pos = 0;
        while self.buf.len() - pos >= keep && pos < self.buf.len() {
            let n = self.cutter.first_cut(&self.buf[pos..]);
            emit(&self.buf[pos..pos + n])?;
            pos += n;
        }
        self.buf.drain(..pos);
        Ok(())
    }
}
