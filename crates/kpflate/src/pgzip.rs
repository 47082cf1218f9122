//! pgzip's block framing; mirrors github.com/klauspost/pgzip v1.2.5
//! gzip.go (Writer.Write, compressCurrent, compressBlock, Close).
//!
//! pgzip splits the input into blocks of `block_size` bytes and deflates
//! each one independently with a fresh flate.Writer whose dictionary is the
//! previous block's last 16 KiB. Each block ends with a sync flush; the
//! block compressed at Close (possibly empty) also gets the final block.
//! This module produces exactly the bytes pgzip writes between its gzip
//! header and trailer.

use super::deflate::Writer;

/// pgzip's `defaultBlockSize`.
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
/// pgzip's `tailSize`: dictionary bytes carried from block to block.
pub const TAIL_SIZE: usize = 16384;

/// Parameters of a pgzip stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgzipParams {
    /// flate level, -2..=9 (-1 = 5).
    pub level: i32,
    /// pgzip block size; SetConcurrency requires > TAIL_SIZE.
    pub block_size: usize,
}

impl Default for PgzipParams {
    fn default() -> Self {
        PgzipParams {
            level: -1,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

impl PgzipParams {
    fn validate(&self) -> Result<(), String> {
        if !(-2..=9).contains(&self.level) {
            return Err(format!("gzip: invalid compression level: {}", self.level));
        }
        if self.block_size <= TAIL_SIZE {
            return Err(format!(
                "gzip: block size cannot be less than or equal to {TAIL_SIZE}"
            ));
        }
        Ok(())
    }
}

/// The dictionary pgzip gives the block after `block`: its last TAIL_SIZE
/// bytes if it is longer than that, else none (compressCurrent).
pub fn tail_of(block: &[u8]) -> &[u8] {
    if block.len() > TAIL_SIZE {
        &block[block.len() - TAIL_SIZE..]
    } else {
        &[]
    }
}

/// One pgzip block with a reusable Writer of the right level (Go's
/// compressBlock: ResetDict, Write, Flush, and Close if it is the block
/// compressed at Close).
pub fn compress_block_with(
    w: &mut Writer,
    dict: &[u8],
    block: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) {
    w.reset_dict(dict);
    w.write(block, out);
    w.flush(out);
    if last {
        w.close(out);
    }
}

/// One pgzip block, from scratch. `dict` is `tail_of(previous block)`
/// (empty for the first block); `last` marks the block compressed at
/// Close, which is empty when the input length is a multiple of the block
/// size (including empty input). Blocks are independent given their
/// dictionaries, so they may be compressed in parallel and concatenated.
///
/// Panics if `level` is outside -2..=9.
pub fn compress_block(level: i32, dict: &[u8], block: &[u8], last: bool, out: &mut Vec<u8>) {
    let mut w = Writer::new(level).expect("valid flate level");
    compress_block_with(&mut w, dict, block, last, out);
}

/// Streaming pgzip body encoder holding at most one block of input.
pub struct PgzipEncoder {
    params: PgzipParams,
    w: Writer,
    /// The current, not yet full, block.
    cur: Vec<u8>,
    /// Dictionary for `cur` (tail of the previous block).
    tail: Vec<u8>,
    finished: bool,
}

impl PgzipEncoder {
    /// Errors on a level outside -2..=9 or block_size <= TAIL_SIZE (pgzip
    /// rejects both).
    pub fn new(params: PgzipParams) -> Result<Self, String> {
        params.validate()?;
        Ok(PgzipEncoder {
            params,
            w: Writer::new(params.level)?,
            cur: Vec::new(),
            tail: Vec::with_capacity(TAIL_SIZE),
            finished: false,
        })
    }

    pub fn params(&self) -> PgzipParams {
        self.params
    }

    /// Compresses one full (non-final) block and records its tail.
    fn emit_full(&mut self, block: &[u8], out: &mut Vec<u8>) {
        compress_block_with(&mut self.w, &self.tail, block, false, out);
        self.tail.clear();
        self.tail.extend_from_slice(tail_of(block));
    }

    /// Go's `Write`: append plain bytes; every completed block is
    /// compressed and appended to `out`.
    pub fn feed(&mut self, mut plain: &[u8], out: &mut Vec<u8>) {
        assert!(!self.finished, "PgzipEncoder::feed after finish");
        let bs = self.params.block_size;
        while !plain.is_empty() {
            if self.cur.is_empty() && plain.len() >= bs {
                // Whole block available: compress in place, no copy.
                let (block, rest) = plain.split_at(bs);
                self.emit_full(block, out);
                plain = rest;
                continue;
            }
            let take = plain.len().min(bs - self.cur.len());
            if self.cur.capacity() < bs {
                self.cur.reserve_exact(bs - self.cur.len());
            }
            self.cur.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
            if self.cur.len() == bs {
                let cur = std::mem::take(&mut self.cur);
                self.emit_full(&cur, out);
                self.cur = cur;
                self.cur.clear();
            }
        }
    }

    /// Go's `Close`: compresses the pending (possibly empty) block as the
    /// last one. Further calls do nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        compress_block_with(&mut self.w, &self.tail, &self.cur, true, out);
        self.cur.clear();
        self.tail.clear();
    }
}
