//! Content-defined chunking of a byte stream that arrives in pieces.
//!
//! FastCDC v2020 (the `fastcdc` crate, pinned) decides a cut from at most `max`
//! bytes after the chunk's start, so a chunk is final once `max` bytes past its
//! start are buffered, or when the stream ends. Cutting with that rule gives the
//! same boundaries however the input is split into pieces.

use fastcdc::v2020::{self, MASKS};
use std::sync::Arc;

/// A chunk's name: BLAKE3 of its bytes.
pub type Hash = [u8; 32];

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
    /// The crate's gear tables (plain and shifted left by one), for `confirms`.
    gear: Arc<([u64; 256], [u64; 256])>,
}

impl Cutter {
    pub fn new(sizes: ChunkSizes) -> Self {
        let bits = v2020::logarithm2(sizes.avg) as usize;
        let (gear, gear_ls) = v2020::get_gear_with_seed(0);
        Cutter {
            sizes,
            mask_s: MASKS[bits + 1],
            mask_l: MASKS[bits - 1],
            gear: Arc::new((*gear, *gear_ls)),
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

    /// Whether `first_cut` would return `len` for a stream whose next bytes are
    /// `data`, *given* that a chunk of these same first `len` bytes was cut at
    /// `len` before (a stored chunk with the same BLAKE3). `rem` is
    /// min(bytes left in the stream, max); `data` holds at least `rem` bytes.
    ///
    /// Why two positions are enough: FastCDC v2020 checks the gear hash at
    /// each position from `min` on, with the small mask before `avg` and the
    /// large one after (the stream's length only decides where checking
    /// stops), and the hash at a position depends only on bytes up to it. The
    /// earlier cut found no hit at positions before `len - 1` in the same
    /// bytes, so none is found now. Position `len - 1` may have gone
    /// unchecked then (a stream ending at an odd `len`), and position `len`
    /// reads the byte after the chunk: both are checked here.
    pub fn confirms(&self, data: &[u8], len: usize, rem: usize) -> bool {
        let (min, avg) = (self.sizes.min as usize, self.sizes.avg as usize);
        if len == 0 || len > rem || data.len() < rem.min(len + 1) {
            return false;
        }
        if rem <= min {
            return len == rem;
        }
        let checked = |a: usize| a / 2 >= min / 2 && a / 2 < rem / 2;
        if checked(len - 1) && self.hits(data, len - 1, avg) {
            return false;
        }
        len == rem || (checked(len) && self.hits(data, len, avg))
    }

    /// Whether FastCDC's check at position `a` of `data` finds a cut. The
    /// crate switches masks at min(avg, stream length); for a position it
    /// checks at all that is the same as switching at `avg`.
    fn hits(&self, data: &[u8], a: usize, center: usize) -> bool {
        let (gear, gear_ls) = &*self.gear;
        let min = self.sizes.min as usize;
        // Hashing runs two bytes at a time from min/2, shifting one bit per
        // byte, so pairs more than 32 back have shifted out of the u64.
        let pair = a / 2;
        let mut hash: u64 = 0;
        for i in (min / 2).max(pair.saturating_sub(33))..pair {
            hash = (hash << 2).wrapping_add(gear_ls[data[2 * i] as usize]);
            hash = hash.wrapping_add(gear[data[2 * i + 1] as usize]);
        }
        hash = (hash << 2).wrapping_add(gear_ls[data[2 * pair] as usize]);
        let mask = if pair < center / 2 {
            self.mask_s
        } else {
            self.mask_l
        };
        if a.is_multiple_of(2) {
            hash & (mask << 1) == 0
        } else {
            hash.wrapping_add(gear[data[a] as usize]) & mask == 0
        }
    }
}

/// Where a chunker's chunks go. It may also name the chunk a stored recipe
/// expects next (a hint when a known blob is pushed again): the chunker
/// takes it, without running FastCDC over its bytes, when the bytes hash to
/// it and `Cutter::confirms` the cut.
pub trait ChunkOut {
    type Error;
    fn chunk(&mut self, bytes: &[u8], hash: Option<&Hash>) -> Result<(), Self::Error>;
    /// The (hash, length) of the chunk expected to start here, if any.
    fn expected(&mut self) -> Option<(Hash, u32)> {
        None
    }
}

/// A closure as a `ChunkOut` without hints.
struct Emit<F>(F);

impl<E, F: FnMut(&[u8]) -> Result<(), E>> ChunkOut for Emit<F> {
    type Error = E;
    fn chunk(&mut self, bytes: &[u8], _: Option<&Hash>) -> Result<(), E> {
        (self.0)(bytes)
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
        self.push_to(data, &mut Emit(emit))
    }

    /// `push`, taking hints from `out` (see `ChunkOut`).
    pub fn push_to<O: ChunkOut>(&mut self, data: &[u8], out: &mut O) -> Result<(), O::Error> {
        let max = self.cutter.sizes.max as usize;
        let mut data = data;
        while !data.is_empty() {
            if self.buf.is_empty() {
                while data.len() >= max {
                    data = &data[self.cut(data, max, out)?..];
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
            let n = Self::cut_with(&self.cutter, &self.buf, max, out)?;
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
        self.finish_to(&mut Emit(emit))
    }

    /// `finish`, taking hints from `out` (see `ChunkOut`).
    pub fn finish_to<O: ChunkOut>(&mut self, out: &mut O) -> Result<(), O::Error> {
        let max = self.cutter.sizes.max as usize;
        let mut pos = 0;
        while pos < self.buf.len() {
            let rest = &self.buf[pos..];
            pos += Self::cut_with(&self.cutter, rest, rest.len().min(max), out)?;
        }
        self.buf.clear();
        Ok(())
    }

    fn cut<O: ChunkOut>(&self, data: &[u8], rem: usize, out: &mut O) -> Result<usize, O::Error> {
        Self::cut_with(&self.cutter, data, rem, out)
    }

    /// Emits the first chunk of `data` (`rem` as in `Cutter::confirms`) and
    /// returns its length: the expected chunk when it checks out, else
    /// FastCDC's.
    fn cut_with<O: ChunkOut>(
        cutter: &Cutter,
        data: &[u8],
        rem: usize,
        out: &mut O,
    ) -> Result<usize, O::Error> {
        if let Some((hash, len)) = out.expected() {
            let len = len as usize;
            if cutter.confirms(data, len, rem) && *blake3::hash(&data[..len]).as_bytes() == hash {
                out.chunk(&data[..len], Some(&hash))?;
                return Ok(len);
            }
        }
        let n = cutter.first_cut(data);
        out.chunk(&data[..n], None)?;
        Ok(n)
    }
}
