//! The compressor and public `Writer`, mirroring Go's compress/flate
//! deflate.go: level dispatch, window management, the hash-chain matcher
//! (levels 2..9) and block cutting.

use super::bit_writer::{HuffmanBitWriter, MAX_STORE_BLOCK_SIZE};
use super::deflate_fast::{common_prefix, DeflateFast, BUFFER_RESET};
use super::token::{literal_token, match_token, Token};

const LOG_WINDOW_SIZE: u32 = 15;
const WINDOW_SIZE: usize = 1 << LOG_WINDOW_SIZE;
const WINDOW_MASK: usize = WINDOW_SIZE - 1;
const BASE_MATCH_LENGTH: usize = 3;
const MIN_MATCH_LENGTH: usize = 4;
const MAX_MATCH_LENGTH: usize = 258;
const BASE_MATCH_OFFSET: usize = 1;
/// Tokens per block before it is cut (Go `maxFlateBlockTokens`).
const MAX_FLATE_BLOCK_TOKENS: usize = 1 << 14;
const HASH_BITS: u32 = 17;
const HASH_SIZE: usize = 1 << HASH_BITS;
const HASH_MASK: usize = HASH_SIZE - 1;
const MAX_HASH_OFFSET: isize = 1 << 24;
const SKIP_NEVER: usize = i32::MAX as usize;
/// Go's `math.MaxInt32` marker for "block start shifted out of the window".
const BLOCK_START_NONE: usize = i32::MAX as usize;
const HASHMUL: u32 = 0x1e35a7bd;

/// Go `compressionLevel` (minus `level`).
#[derive(Clone, Copy)]
struct LevelParams {
    good: usize,
    lazy: usize,
    nice: usize,
    chain: usize,
    fast_skip_hashing: usize,
}

/// Go `levels[2..=9]`.
const LEVELS: [LevelParams; 8] = [
    lp(4, 0, 16, 8, 5),
    lp(4, 0, 32, 32, 6),
    lp(4, 4, 16, 16, SKIP_NEVER),
    lp(8, 16, 32, 32, SKIP_NEVER),
    lp(8, 16, 128, 128, SKIP_NEVER),
    lp(8, 32, 128, 256, SKIP_NEVER),
    lp(32, 128, 258, 1024, SKIP_NEVER),
    lp(32, 258, 258, 4096, SKIP_NEVER),
];

const fn lp(good: usize, lazy: usize, nice: usize, chain: usize, fsh: usize) -> LevelParams {
    LevelParams {
        good,
        lazy,
        nice,
        chain,
        fast_skip_hashing: fsh,
    }
}

/// Go's `fill`/`step` function pair, chosen by level.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Level 0: `fillStore` + `store`.
    Store,
    /// Level -2: `fillStore` + `storeHuff`.
    HuffOnly,
    /// Level 1: `fillStore` + `encSpeed`.
    Fast,
    /// Levels 2..9: `fillDeflate` + `deflate`.
    Lazy,
}

/// Hash-chain matcher state for levels 2..9 (the deflate-only fields of
/// Go's `compressor`).
struct Lz {
    p: LevelParams,
    chain_head: isize,
    hash_head: Box<[u32; HASH_SIZE]>,
    hash_prev: Box<[u32; WINDOW_SIZE]>,
    hash_offset: isize,
    /// Unprocessed data is window[index..window_end].
    index: usize,
    /// Window index where the pending tokens start.
    block_start: usize,
    /// Still need to process window[index-1].
    byte_available: bool,
    length: usize,
    offset: usize,
    max_insert_index: isize,
}

fn boxed_zeroed<const N: usize>() -> Box<[u32; N]> {
    // Built on the heap: a boxed array literal would go through the stack.
    vec![0u32; N]
        .into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| unreachable!("length is N"))
}

/// Go `hash4`: hash of the first 4 bytes, big-endian composed.
#[inline(always)]
fn hash4(b: &[u8]) -> usize {
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (v.wrapping_mul(HASHMUL) >> (32 - HASH_BITS)) as usize
}

/// A raw-deflate encoder producing exactly the bytes Go's
/// `compress/flate.Writer` produces for the same level and input.
///
/// Output is appended to the `out` argument of each call. After `close`,
/// `write` and `flush` do nothing (Go returns an error and writes nothing)
/// until `reset`.
pub struct Writer {
    mode: Mode,
    level: i32,
    w: Box<HuffmanBitWriter>,
    window: Vec<u8>,
    window_end: usize,
    tokens: Vec<Token>,
    sync: bool,
    closed: bool,
    fast: Option<Box<DeflateFast>>,
    lz: Option<Lz>,
}

impl Writer {
    /// Go `NewWriter` / `compressor.init`. Levels -2..=9; -1 means 6.
    pub fn new(level: i32) -> Result<Writer, String> {
        let (mode, window_len, token_cap) = match level {
            0 => (Mode::Store, MAX_STORE_BLOCK_SIZE, 0),
            -2 => (Mode::HuffOnly, MAX_STORE_BLOCK_SIZE, 0),
            1 => (Mode::Fast, MAX_STORE_BLOCK_SIZE, MAX_STORE_BLOCK_SIZE + 1),
            -1 | 2..=9 => (Mode::Lazy, 2 * WINDOW_SIZE, MAX_FLATE_BLOCK_TOKENS + 1),
            _ => {
                return Err(format!(
                    "flate: invalid compression level {level}: want value in range [-2, 9]"
                ))
            }
        };
        let level = if level == -1 { 6 } else { level };
        let lz = (mode == Mode::Lazy).then(|| Lz {
            p: LEVELS[(level - 2) as usize],
            chain_head: -1,
            hash_head: boxed_zeroed(),
            hash_prev: boxed_zeroed(),
            hash_offset: 1,
            index: 0,
            block_start: 0,
            byte_available: false,
            length: MIN_MATCH_LENGTH - 1,
            offset: 0,
            max_insert_index: 0,
        });
        Ok(Writer {
            mode,
            level,
            w: HuffmanBitWriter::new(),
            window: vec![0; window_len],
            window_end: 0,
            tokens: Vec::with_capacity(token_cap),
            sync: false,
            closed: false,
            fast: (mode == Mode::Fast).then(|| Box::new(DeflateFast::new())),
            lz,
        })
    }

    /// The effective level (-1 reported as 6).
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Go `Writer.Write`: compress `data`, appending finished output to
    /// `out`. The result does not depend on how input is split into calls.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.with_out(out, |d| {
            let mut b = data;
            while !b.is_empty() {
                d.step();
                let n = d.fill(b);
                b = &b[n..];
            }
        });
    }

    /// Go `Writer.Flush` (Z_SYNC_FLUSH): emit all pending data followed by
    /// an empty stored block, byte aligned.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.with_out(out, |d| {
            d.sync = true;
            d.step();
            d.w.sink.write_stored_header(0, false);
            d.w.sink.flush();
            d.sync = false;
        });
    }

    /// Go `Writer.Close`: emit pending data and the final (empty stored)
    /// block. Further calls do nothing until `reset`.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.with_out(out, |d| {
            d.sync = true;
            d.step();
            d.w.sink.write_stored_header(0, true);
            d.w.sink.flush();
            d.closed = true;
        });
    }

    /// Go `Writer.Reset` (without dictionary): discard all state, as if
    /// newly created with the same level. Keeps every allocation.
    pub fn reset(&mut self) {
        self.w.reset();
        self.sync = false;
        self.closed = false;
        self.window_end = 0;
        self.tokens.clear();
        if let Some(f) = self.fast.as_deref_mut() {
            f.reset();
        }
        if let Some(lz) = self.lz.as_mut() {
            lz.chain_head = -1;
            lz.hash_head.fill(0);
            lz.hash_prev.fill(0);
            lz.hash_offset = 1;
            lz.index = 0;
            lz.block_start = 0;
            lz.byte_available = false;
            lz.length = MIN_MATCH_LENGTH - 1;
            lz.offset = 0;
            lz.max_insert_index = 0;
        }
    }

    /// Test hook: start the level-1 matcher's offset base at `cur` (clamped
    /// to 0..=its reset threshold) to exercise the int32 rebase path
    /// cheaply; matches Go's `deflateFast.cur` set the same way.
    #[doc(hidden)]
    pub fn set_fast_cur_for_test(&mut self, cur: i32) {
        if let Some(f) = self.fast.as_deref_mut() {
            f.cur = cur.clamp(0, BUFFER_RESET);
        }
    }

    /// Lends the caller's `out` to the bit writer for the call (a swap, no
    /// copy), so finished bytes land directly in it.
    fn with_out(&mut self, out: &mut Vec<u8>, f: impl FnOnce(&mut Self)) {
        std::mem::swap(&mut self.w.sink.out, out);
        f(self);
        std::mem::swap(&mut self.w.sink.out, out);
    }

    /// Go `d.fill`: `fillStore` or `fillDeflate`.
    fn fill(&mut self, b: &[u8]) -> usize {
        if let Some(lz) = self.lz.as_mut() {
            lz.shift_window(&mut self.window, &mut self.window_end);
        }
        let space = &mut self.window[self.window_end..];
        let n = space.len().min(b.len());
        space[..n].copy_from_slice(&b[..n]);
        self.window_end += n;
        n
    }

    /// Go `d.step`.
    fn step(&mut self) {
        match self.mode {
            Mode::Store => self.store(),
            Mode::HuffOnly => self.store_huff(),
            Mode::Fast => self.enc_speed(),
            Mode::Lazy => self.deflate(),
        }
    }

    /// Go `compressor.store`.
    fn store(&mut self) {
        if self.window_end > 0 && (self.window_end == MAX_STORE_BLOCK_SIZE || self.sync) {
            self.w
                .sink
                .write_stored_block(&self.window[..self.window_end]);
            self.window_end = 0;
        }
    }

    /// Go `compressor.storeHuff`.
    fn store_huff(&mut self) {
        if self.window_end < self.window.len() && !self.sync || self.window_end == 0 {
            return;
        }
        self.w
            .write_block_huff(false, &self.window[..self.window_end]);
        self.window_end = 0;
    }

    /// Go `compressor.encSpeed`: encode whole 64 KiB-1 blocks (or what there
    /// is, on sync) with the BestSpeed matcher.
    fn enc_speed(&mut self) {
        let Some(fast) = self.fast.as_deref_mut() else {
            return;
        };
        let end = self.window_end;
        if end < MAX_STORE_BLOCK_SIZE {
            if !self.sync {
                return;
            }
            // Small sizes.
            if end < 128 {
                match end {
                    0 => return,
                    1..=16 => self.w.sink.write_stored_block(&self.window[..end]),
                    _ => self.w.write_block_huff(false, &self.window[..end]),
                }
                self.window_end = 0;
                fast.reset();
                return;
            }
        }
        self.tokens.clear();
        fast.encode(&mut self.tokens, &self.window[..end]);
        // If we removed less than 1/16th, Huffman-only is good enough.
        if self.tokens.len() > end - (end >> 4) {
            self.w.write_block_huff(false, &self.window[..end]);
        } else {
            self.w
                .write_block_dynamic(&self.tokens, false, &self.window[..end]);
        }
        self.window_end = 0;
    }

    /// Go `compressor.deflate`: lazy (levels 4..9) or greedy with skipped
    /// hashing (levels 2, 3) matching over the window.
    fn deflate(&mut self) {
        let Some(lz) = self.lz.as_mut() else {
            return;
        };
        let window_end = self.window_end;
        let sync = self.sync;
        if window_end - lz.index < MIN_MATCH_LENGTH + MAX_MATCH_LENGTH && !sync {
            return;
        }
        let p = lz.p;
        let fsh = p.fast_skip_hashing;
        let window = &self.window[..];
        let tokens = &mut self.tokens;
        let w = &mut *self.w;
        lz.max_insert_index = window_end as isize - (MIN_MATCH_LENGTH as isize - 1);

        loop {
            let lookahead = window_end - lz.index;
            if lookahead < MIN_MATCH_LENGTH + MAX_MATCH_LENGTH {
                if !sync {
                    break;
                }
                if lookahead == 0 {
                    // Flush the current block, if any.
                    if lz.byte_available {
                        // One pending literal.
                        tokens.push(literal_token(window[lz.index - 1]));
                        lz.byte_available = false;
                    }
                    if !tokens.is_empty() {
                        lz.write_block(w, window, tokens, lz.index);
                        tokens.clear();
                    }
                    break;
                }
            }
            let index = lz.index;
            if (index as isize) < lz.max_insert_index {
                // Update the hash chain.
                let h = hash4(&window[index..index + MIN_MATCH_LENGTH]) & HASH_MASK;
                lz.chain_head = lz.hash_head[h] as isize;
                lz.hash_prev[index & WINDOW_MASK] = lz.chain_head as u32;
                lz.hash_head[h] = (index as isize + lz.hash_offset) as u32;
            }
            let prev_length = lz.length;
            let prev_offset = lz.offset;
            lz.length = MIN_MATCH_LENGTH - 1;
            lz.offset = 0;
            let min_index = (index as isize - WINDOW_SIZE as isize).max(0);

            if lz.chain_head - lz.hash_offset >= min_index
                && (fsh != SKIP_NEVER && lookahead > MIN_MATCH_LENGTH - 1
                    || fsh == SKIP_NEVER && lookahead > prev_length && prev_length < p.lazy)
            {
                if let Some((l, o)) = lz.find_match(
                    window,
                    index,
                    lz.chain_head - lz.hash_offset,
                    MIN_MATCH_LENGTH - 1,
                    lookahead,
                ) {
                    lz.length = l;
                    lz.offset = o;
                }
            }
            if fsh != SKIP_NEVER && lz.length >= MIN_MATCH_LENGTH
                || fsh == SKIP_NEVER && prev_length >= MIN_MATCH_LENGTH && lz.length <= prev_length
            {
                // A match at the previous step, and the current one is not
                // better (lazy), or a match now (greedy): emit it.
                let (ml, mo) = if fsh != SKIP_NEVER {
                    (lz.length, lz.offset)
                } else {
                    (prev_length, prev_offset)
                };
                tokens.push(match_token(
                    (ml - BASE_MATCH_LENGTH) as u32,
                    (mo - BASE_MATCH_OFFSET) as u32,
                ));
                // Hash every string up to the end of the match (index and
                // index-1 are done); without enough lookahead the last two
                // are skipped.
                if lz.length <= fsh {
                    let new_index = if fsh != SKIP_NEVER {
                        index + lz.length
                    } else {
                        index + prev_length - 1
                    };
                    let mut i = index + 1;
                    while i < new_index {
                        if (i as isize) < lz.max_insert_index {
                            let h = hash4(&window[i..i + MIN_MATCH_LENGTH]) & HASH_MASK;
                            lz.hash_prev[i & WINDOW_MASK] = lz.hash_head[h];
                            lz.hash_head[h] = (i as isize + lz.hash_offset) as u32;
                        }
                        i += 1;
                    }
                    lz.index = i;
                    if fsh == SKIP_NEVER {
                        lz.byte_available = false;
                        lz.length = MIN_MATCH_LENGTH - 1;
                    }
                } else {
                    // Long greedy match: don't hash its strings.
                    lz.index += lz.length;
                }
                if tokens.len() == MAX_FLATE_BLOCK_TOKENS {
                    // The block includes the current character.
                    lz.write_block(w, window, tokens, lz.index);
                    tokens.clear();
                }
            } else {
                if fsh != SKIP_NEVER || lz.byte_available {
                    let i = if fsh != SKIP_NEVER { index } else { index - 1 };
                    tokens.push(literal_token(window[i]));
                    if tokens.len() == MAX_FLATE_BLOCK_TOKENS {
                        lz.write_block(w, window, tokens, i + 1);
                        tokens.clear();
                    }
                }
                lz.index += 1;
                if fsh == SKIP_NEVER {
                    lz.byte_available = true;
                }
            }
        }
    }
}

impl Lz {
    /// The window-sliding half of Go `fillDeflate`: once `index` nears the
    /// end, move the upper half down and rebase hash positions.
    fn shift_window(&mut self, window: &mut [u8], window_end: &mut usize) {
        if self.index < 2 * WINDOW_SIZE - (MIN_MATCH_LENGTH + MAX_MATCH_LENGTH) {
            return;
        }
        window.copy_within(WINDOW_SIZE..2 * WINDOW_SIZE, 0);
        self.index -= WINDOW_SIZE;
        *window_end -= WINDOW_SIZE;
        if self.block_start >= WINDOW_SIZE {
            self.block_start -= WINDOW_SIZE;
        } else {
            self.block_start = BLOCK_START_NONE;
        }
        self.hash_offset += WINDOW_SIZE as isize;
        if self.hash_offset > MAX_HASH_OFFSET {
            // Keep stored positions (index + hash_offset) inside u32.
            let delta = self.hash_offset - 1;
            self.hash_offset -= delta;
            self.chain_head -= delta;
            let rebase = |v: &mut u32| {
                *v = if *v as isize > delta {
                    (*v as isize - delta) as u32
                } else {
                    0
                }
            };
            self.hash_prev.iter_mut().for_each(rebase);
            self.hash_head.iter_mut().for_each(rebase);
        }
    }

    /// Go `compressor.writeBlock`: emit the pending tokens as a block ending
    /// at window `index`, offering the raw bytes for a stored block when
    /// they are still in the window.
    fn write_block(
        &mut self,
        w: &mut HuffmanBitWriter,
        window: &[u8],
        tokens: &[Token],
        index: usize,
    ) {
        if index > 0 {
            let input = (self.block_start <= index).then(|| &window[self.block_start..index]);
            self.block_start = index;
            w.write_block(tokens, false, input);
        }
    }

    /// Go `compressor.findMatch`: the longest match (longer than
    /// `prev_length`) for `pos`, walking at most `chain` hash-chain links
    /// from `prev_head`.
    #[inline]
    fn find_match(
        &self,
        window: &[u8],
        pos: usize,
        prev_head: isize,
        prev_length: usize,
        lookahead: usize,
    ) -> Option<(usize, usize)> {
        let min_match_look = lookahead.min(MAX_MATCH_LENGTH);
        let win = &window[..pos + min_match_look];
        // Stop at a match at least this long.
        let nice = (win.len() - pos).min(self.p.nice);
        let mut tries = self.p.chain;
        let mut length = prev_length;
        if length >= self.p.good {
            // Already good enough: search only 1/4 of the chain.
            tries >>= 2;
        }
        let mut w_end = win[pos + length];
        let w_pos = &win[pos..];
        let min_index = pos as isize - WINDOW_SIZE as isize;
        let mut found = None;
        let mut i = prev_head;
        while tries > 0 {
            let iu = i as usize;
            if w_end == win[iu + length] {
                let n = common_prefix(&win[iu..iu + min_match_look], w_pos);
                if n > length && (n > MIN_MATCH_LENGTH || pos - iu <= 4096) {
                    length = n;
                    found = Some((n, pos - iu));
                    if n >= nice {
                        break;
                    }
                    w_end = win[pos + n];
                }
            }
            if i == min_index {
                // hash_prev[i & WINDOW_MASK] is already overwritten.
                break;
            }
            i = self.hash_prev[iu & WINDOW_MASK] as isize - self.hash_offset;
            if i < min_index || i < 0 {
                break;
            }
            tries -= 1;
        }
        found
    }
}
