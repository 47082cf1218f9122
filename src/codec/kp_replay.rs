//! Replay of klauspost's Go encoders: `klauspost/compress/flate` as one
//! stream (its `gzip` package) and `klauspost/pgzip`'s blocks, the gzip
//! writers of podman, buildah, skopeo, CRI-O tooling and umoci. The encoder
//! itself is the Rust port in `kpflate`; this module names its parameters,
//! lists candidates for a gzip member, and drives it the way pgzip does.
//!
//! pgzip (v1.2.5) cuts its input into `block`-byte pieces (1 MiB unless
//! `SetConcurrency` says otherwise) and compresses each with a flate writer
//! reset with the previous block's last 16 KiB as dictionary (none for the
//! first). Every block is ended with a sync flush as soon as it is full; the
//! last one, possibly empty, with a sync flush and then `Close`. Blocks are
//! therefore independent given the input: reads rebuild them on the shared
//! pool's threads, several at once.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;

use super::block_pool;
use super::plan::Restart;
use super::Reencoder;
use crate::error::{Error, Result};
use kpflate::deflate::Writer;
use kpflate::pgzip;

/// pgzip's default block size.
pub const PGZIP_DEFAULT_BLOCK: u32 = 1 << 20;
/// pgzip's dictionary: the tail of the previous block.
const TAIL: usize = pgzip::TAIL_SIZE;
/// Bound on a block a reencoder will hold (memory per read).
const MAX_BLOCK: u32 = 64 << 20;
/// Blocks a parallel rebuild keeps in flight.
const IN_FLIGHT: usize = 3;
const FORMAT_V1: u8 = 1;
/// The output family: klauspost/compress 1.15.x as Debian 12 packages it.
const FAMILY_1_15: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KpFraming {
    /// One flate stream (`klauspost/compress/gzip`).
    Single,
    /// pgzip's independent blocks.
    Pgzip { block: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KpParams {
    /// -2 (Huffman only), 0 (stored), 1..=9. Go's -1 is level 5.
    pub level: i8,
    pub framing: KpFraming,
}

fn data_loss(what: &str) -> Error {
    Error::DataLoss(format!("klauspost replay parameters: {what}"))
}

impl KpParams {
    pub const fn pgzip(level: i8, block: u32) -> Self {
        KpParams {
            level,
            framing: KpFraming::Pgzip { block },
        }
    }

    pub const fn single(level: i8) -> Self {
        KpParams {
            level,
            framing: KpFraming::Single,
        }
    }

    fn check(&self) -> Result<()> {
        if !matches!(self.level, -2 | 0..=9) {
            return Err(data_loss("level out of range"));
        }
        if let KpFraming::Pgzip { block } = self.framing {
            if block as usize <= TAIL || block > MAX_BLOCK {
                return Err(data_loss("block size out of range"));
            }
        }
        Ok(())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[FORMAT_V1, FAMILY_1_15, self.level as u8]);
        match self.framing {
            KpFraming::Single => out.push(0),
            KpFraming::Pgzip { block } => {
                out.push(1);
                out.extend_from_slice(&block.to_le_bytes());
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<(Self, usize)> {
        let [FORMAT_V1, FAMILY_1_15, level, framing, ..] = *b else {
            return Err(data_loss("unknown format or family"));
        };
        let (framing, used) = match framing {
            0 => (KpFraming::Single, 4),
            1 => {
                let block = b
                    .get(4..8)
                    .ok_or_else(|| data_loss("truncated"))?
                    .try_into()
                    .expect("4 bytes");
                (
                    KpFraming::Pgzip {
                        block: u32::from_le_bytes(block),
                    },
                    8,
                )
            }
            _ => return Err(data_loss("unknown framing")),
        };
        let p = KpParams {
            level: level as i8,
            framing,
        };
        p.check()?;
        Ok((p, used))
    }

    /// "pgzip-5-1024k", "klauspost-9".
    pub fn name(&self) -> String {
        match self.framing {
            KpFraming::Single => format!("klauspost-{}", self.level),
            KpFraming::Pgzip { block } => {
                format!("pgzip-{}-{}", self.level, super::zlib::block_name(block))
            }
        }
    }

    /// For ingest: output trails input by at most a window.
    pub fn reencoder(&self) -> Result<Box<dyn Reencoder>> {
        self.check()?;
        Ok(Box::new(KpStream::new(*self)?))
    }

    /// pgzip's blocks confirmed on the pool's threads at ingest, and how
    /// far its output may then trail the input: the blocks in flight and the
    /// one being filled, at their largest compressed size.
    pub fn parallel(&self) -> Option<(Box<dyn Reencoder>, u64)> {
        let KpFraming::Pgzip { block } = self.framing else {
            return None;
        };
        self.check().ok()?;
        let worst = block as u64 + block as u64 / 8 + 4096;
        Some((
            Box::new(KpParallel::new(self.level, block)),
            (IN_FLIGHT as u64 + 1) * worst,
        ))
    }

    /// Plain bytes a pgzip block needs before it: the dictionary.
    pub fn resume_history(&self) -> Option<u64> {
        matches!(self.framing, KpFraming::Pgzip { .. }).then_some(TAIL as u64)
    }

    /// pgzip from a block start on, given the plain bytes before it.
    pub fn resume(&self, history: &[u8]) -> Result<Box<dyn Reencoder>> {
        self.check()?;
        let KpFraming::Pgzip { block } = self.framing else {
            return Err(Error::Internal("one klauspost stream cannot resume".into()));
        };
        let mut p = KpParallel::new(self.level, block);
        // A block after a full one: its dictionary is that block's tail.
        p.dict = history[history.len().saturating_sub(TAIL)..].to_vec();
        Ok(Box::new(p))
    }

    /// For reads: pgzip blocks on the pool's threads.
    pub fn rebuild_reencoder(&self) -> Result<Box<dyn Reencoder>> {
        self.check()?;
        match self.framing {
            KpFraming::Single => self.reencoder(),
            KpFraming::Pgzip { block } => Ok(Box::new(KpParallel::new(self.level, block))),
        }
    }
}

/// pgzip block sizes tried: skopeo, podman, buildah use pgzip's default;
/// umoci 256 KiB.
const BLOCKS: [u32; 4] = [PGZIP_DEFAULT_BLOCK, 256 << 10, 512 << 10, 128 << 10];

/// How many candidates `candidates` lists per level.
pub const fn framings_per_level() -> usize {
    BLOCKS.len() + 1
}

/// Candidates for a gzip member whose header says a Go program may have
/// written it (OS 255), most likely first. pgzip and klauspost write XFL 4
/// at level 1, 2 at level 9, else 0 (level 5, Go's -1, being the default).
pub fn candidates(xfl: u8) -> Vec<KpParams> {
    let levels: &[i8] = match xfl {
        4 => &[1],
        2 => &[9],
        _ => &[5, 6, 4, 3, 2, 7, 8, -2, 0],
    };
    let mut out = Vec::new();
    for &level in levels {
        out.extend(BLOCKS.iter().map(|&b| KpParams::pgzip(level, b)));
        out.push(KpParams::single(level));
    }
    out
}

/// pgzip block sizes read off a deflate stream's own structure: a pgzip
/// block ends with a sync flush (an empty stored block, `00 00 ff ff` on a
/// byte boundary), after which everything before it has been output; the
/// plain bytes decoded up to the first such marker are the block size. Chance
/// matches inside compressed data give sizes the probe then rejects.
pub fn block_sizes_from_markers(comp: &[u8]) -> Vec<u32> {
    const MARKER: [u8; 4] = [0, 0, 0xff, 0xff];
    let mut sizes = Vec::new();
    let mut from = 0;
    let mut tried = 0;
    while let Some(at) = comp[from..].windows(4).position(|w| w == MARKER) {
        let end = from + at + 4;
        from = end;
        tried += 1;
        if tried > 8 || sizes.len() == 2 {
            break;
        }
        let mut d = flate2::Decompress::new(false);
        let mut sink = vec![0u8; 64 << 10];
        let mut input = &comp[..end];
        let mut total = 0u64;
        let ok = loop {
            let (before_in, before_out) = (d.total_in(), d.total_out());
            match d.decompress(input, &mut sink, flate2::FlushDecompress::Sync) {
                Ok(_) => {}
                Err(_) => break false,
            }
            let used = (d.total_in() - before_in) as usize;
            let made = d.total_out() - before_out;
            total += made;
            input = &input[used..];
            if input.is_empty() && made < sink.len() as u64 {
                break true;
            }
            if used == 0 && made == 0 {
                break false;
            }
        };
        let n = total as usize;
        if ok && n > TAIL && n <= MAX_BLOCK as usize && !sizes.contains(&(n as u32)) {
            sizes.push(n as u32);
        }
    }
    sizes
}

/// Candidates at block sizes found by `block_sizes_from_markers` that the
/// usual list does not have, every level.
pub fn marker_candidates(comp: &[u8]) -> Vec<KpParams> {
    let mut out = Vec::new();
    for block in block_sizes_from_markers(comp) {
        if BLOCKS.contains(&block) {
            continue;
        }
        for level in [5i8, 6, 4, 3, 2, 7, 8, 1, 9, -2, 0] {
            out.push(KpParams::pgzip(level, block));
        }
    }
    out
}

fn writer(level: i8) -> Result<Writer> {
    Writer::new(level as i32).map_err(|e| Error::Internal(format!("klauspost flate: {e}")))
}

/// One writer fed as the input comes, blocks ended in place: the output
/// trails the input by one flate window, so a probe sees it early.
struct KpStream {
    w: Writer,
    block: Option<usize>,
    in_block: usize,
    tail: Vec<u8>,
    finished: bool,
    /// Bytes fed and made so far, and the block starts after the first.
    plain: u64,
    made: u64,
    restarts: Vec<Restart>,
}

impl KpStream {
    fn new(p: KpParams) -> Result<Self> {
        let block = match p.framing {
            KpFraming::Single => None,
            KpFraming::Pgzip { block } => Some(block as usize),
        };
        Ok(KpStream {
            w: writer(p.level)?,
            block,
            in_block: 0,
            tail: Vec::with_capacity(if block.is_some() { TAIL } else { 0 }),
            finished: false,
            plain: 0,
            made: 0,
            restarts: Vec::new(),
        })
    }
}

impl Reencoder for KpStream {
    fn feed(&mut self, mut plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal(
                "klauspost reencoder fed after finish".into(),
            ));
        }
        let start = out.len();
        let Some(block) = self.block else {
            self.w.write(plain, out);
            self.made += (out.len() - start) as u64;
            return Ok(());
        };
        while !plain.is_empty() {
            let take = (block - self.in_block).min(plain.len());
            self.w.write(&plain[..take], out);
            super::keep_tail(&mut self.tail, &plain[..take], TAIL);
            self.in_block += take;
            self.plain += take as u64;
            plain = &plain[take..];
            if self.in_block == block {
                // pgzip compresses a block as soon as it is full.
                self.w.flush(out);
                self.w.reset_dict(&self.tail);
                self.in_block = 0;
                self.restarts.push(Restart {
                    plain: self.plain,
                    out: self.made + (out.len() - start) as u64,
                });
            }
        }
        self.made += (out.len() - start) as u64;
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("klauspost reencoder finished twice".into()));
        }
        self.finished = true;
        if self.block.is_some() {
            self.w.flush(out);
        }
        self.w.close(out);
        Ok(())
    }

    fn restarts(&self) -> Vec<Restart> {
        self.restarts.clone()
    }
}

thread_local! {
    /// A pool thread's writers, one per level, reused across blocks.
    static WRITERS: std::cell::RefCell<Vec<(i8, Writer)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Compresses one pgzip block as pgzip does, on the calling thread.
fn compress_block(level: i8, dict: &[u8], block: &[u8], last: bool) -> Result<Vec<u8>> {
    WRITERS.with(|ws| {
        let mut ws = ws.borrow_mut();
        let i = match ws.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                ws.push((level, writer(level)?));
                ws.len() - 1
            }
        };
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        pgzip::compress_block_with(&mut ws[i].1, dict, block, last, &mut out);
        Ok(out)
    })
}

/// pgzip rebuilt block by block on the pool: each full block goes out with
/// its dictionary at once, and outputs are returned in order.
struct KpParallel {
    level: i8,
    block: usize,
    cur: Vec<u8>,
    /// The previous block's tail (empty before the first block).
    dict: Vec<u8>,
    pending: VecDeque<Receiver<Result<Vec<u8>>>>,
    finished: bool,
    /// Blocks whose output was handed back, the bytes of it, and the block
    /// starts after the first.
    done: u64,
    made: u64,
    restarts: Vec<Restart>,
}

impl KpParallel {
    fn new(level: i8, block: u32) -> Self {
        KpParallel {
            level,
            block: block as usize,
            cur: Vec::new(),
            dict: Vec::new(),
            pending: VecDeque::new(),
            finished: false,
            done: 0,
            made: 0,
            restarts: Vec::new(),
        }
    }

    /// Hands a finished block's output on, noting where the next one starts.
    fn emit(&mut self, b: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b);
        self.made += b.len() as u64;
        self.done += 1;
        self.restarts.push(Restart {
            plain: self.done * self.block as u64,
            out: self.made,
        });
    }

    fn submit(&mut self, last: bool) {
        let data = std::mem::take(&mut self.cur);
        let dict = std::mem::take(&mut self.dict);
        self.dict = pgzip::tail_of(&data).to_vec();
        let level = self.level;
        self.pending.push_back(block_pool::submit(move || {
            compress_block(level, &dict, &data, last)
        }));
    }

    fn collect_one(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let rx = self.pending.pop_front().expect("a block in flight");
        let b = rx
            .recv()
            .map_err(|_| Error::Internal("a rebuild worker went away".into()))??;
        self.emit(&b, out);
        Ok(())
    }
}

impl Reencoder for KpParallel {
    fn feed(&mut self, mut plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("pgzip reencoder fed after finish".into()));
        }
        while !plain.is_empty() {
            if self.cur.capacity() == 0 {
                self.cur.reserve_exact(self.block);
            }
            let take = (self.block - self.cur.len()).min(plain.len());
            self.cur.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
            if self.cur.len() == self.block {
                self.submit(false);
                while self.pending.len() >= IN_FLIGHT {
                    self.collect_one(out)?;
                }
            }
        }
        // Hand back whatever is already done, without waiting.
        while let Some(rx) = self.pending.front() {
            match rx.try_recv() {
                Ok(b) => {
                    self.pending.pop_front();
                    self.emit(&b?, out);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("pgzip reencoder finished twice".into()));
        }
        self.finished = true;
        self.submit(true);
        while !self.pending.is_empty() {
            self.collect_one(out)?;
        }
        Ok(())
    }

    fn restarts(&self) -> Vec<Restart> {
        // The last block's "next start" is the end, not a restart point.
        let mut r = self.restarts.clone();
        if self.finished {
            r.pop();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_reject_nonsense() {
        for p in candidates(0)
            .into_iter()
            .chain(candidates(2))
            .chain(candidates(4))
        {
            let mut b = Vec::new();
            p.encode(&mut b);
            assert_eq!(KpParams::decode(&b).unwrap(), (p, b.len()));
        }
        assert!(KpParams::decode(&[1, 1, 11, 0]).is_err());
        assert!(KpParams::decode(&[1, 1, 5, 1, 0, 1, 0, 0]).is_err()); // 256 bytes <= tail
        assert!(KpParams::decode(&[1, 2, 5, 0]).is_err());
        assert!(KpParams::decode(&[1, 1, 5, 1, 0]).is_err());
    }

    #[test]
    fn keep_tail_keeps_the_last_16k() {
        let mut t = Vec::new();
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        for piece in data.chunks(7_000) {
            crate::codec::keep_tail(&mut t, piece, TAIL);
        }
        assert_eq!(t, &data[data.len() - TAIL..]);
    }
}
