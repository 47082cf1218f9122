//! The compressor and Writer; mirrors klauspost/compress/flate deflate.go.
//!
//! Levels: -2 Huffman only, 0 stored, -1 default (= 5), 1..=6 the fast
//! encoders (fast.rs, level*.rs), 7..=9 lazy matching with hash chains.
//! Output is raw deflate, appended to a caller-supplied Vec.

use super::bit_writer::HuffmanBitWriter;
use super::fast::{new_fast_enc, FastEnc};
use super::huffman_code::HuffmanEncoder;
use super::token::{offset_code, Tokens, LENGTH_CODES, LENGTH_EXTRA_BITS, OFFSET_EXTRA_BITS};

pub const NO_COMPRESSION: i32 = 0;
pub const BEST_SPEED: i32 = 1;
pub const BEST_COMPRESSION: i32 = 9;
pub const DEFAULT_COMPRESSION: i32 = -1;
/// Huffman entropy coding only, no match search (Go's HuffmanOnly).
pub const HUFFMAN_ONLY: i32 = -2;

const LOG_WINDOW_SIZE: usize = 15;
const WINDOW_SIZE: usize = 1 << LOG_WINDOW_SIZE;
const WINDOW_MASK: usize = WINDOW_SIZE - 1;
/// The smallest match length the lazy matcher looks for.
const MIN_MATCH_LENGTH: isize = 4;
const MAX_MATCH_LENGTH: isize = 258;
const MIN_OFFSET_SIZE: isize = 1;
/// Tokens per block for levels 7..=9.
const MAX_FLATE_BLOCK_TOKENS: u16 = 1 << 15;
const MAX_STORE_BLOCK_SIZE: usize = super::token::MAX_STORE_BLOCK_SIZE;
const HASH_BITS: u32 = 17;
const HASH_SIZE: usize = 1 << HASH_BITS;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
const MAX_HASH_OFFSET: isize = 1 << 28;
/// Go's `prime4bytes` (fast_encoder.go).
const PRIME_4_BYTES: u32 = 2654435761;

/// Go's `compressionLevel`.
#[derive(Clone, Copy, Default)]
struct CompressionLevel {
    lazy: isize,
    nice: isize,
    chain: isize,
    level: i32,
}

/// Go's `levels` for 7..=9 (levels 1..=6 use the fast encoders). Go's
/// `good` column and fastSkipHashing (always skipNever) are never read.
const fn lazy_level(level: i32) -> CompressionLevel {
    let (lazy, nice, chain) = match level {
        7 => (12, 16, 24),
        8 => (30, 40, 64),
        _ => (258, 258, 1024),
    };
    CompressionLevel {
        lazy,
        nice,
        chain,
        level,
    }
}

/// Go's `advancedState`: hash chains for levels 7..=9.
struct AdvancedState {
    length: isize,
    offset: isize,
    max_insert_index: isize,
    chain_head: isize,
    hash_offset: isize,
    /// Literals since the last match; wraps (Go: "intended to overflow").
    ii: u16,
    /// Unprocessed input is window[index..window_end].
    index: isize,
    hash_match: [u32; (MAX_MATCH_LENGTH + MIN_MATCH_LENGTH) as usize],
    /// hash_head[h]: largest input index (+hash_offset) with hash h.
    hash_head: Box<[u32]>,
    /// hash_prev[i & WINDOW_MASK]: previous index with the same hash.
    hash_prev: Box<[u32]>,
}

impl AdvancedState {
    fn new() -> Box<Self> {
        Box::new(AdvancedState {
            length: 0,
            offset: 0,
            max_insert_index: 0,
            chain_head: 0,
            hash_offset: 0,
            ii: 0,
            index: 0,
            hash_match: [0; (MAX_MATCH_LENGTH + MIN_MATCH_LENGTH) as usize],
            hash_head: vec![0; HASH_SIZE].into_boxed_slice(),
            hash_prev: vec![0; WINDOW_SIZE].into_boxed_slice(),
        })
    }
}

/// Go's `d.step` function pointer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Store,
    StoreHuff,
    StoreFast,
    DeflateLazy,
}

/// Go's `compressor`.
struct Compressor {
    cl: CompressionLevel,
    /// Literal code lengths for level 9's match gain estimate.
    h: Option<Box<HuffmanEncoder>>,
    w: HuffmanBitWriter,
    step: Step,
    window: Vec<u8>,
    window_end: usize,
    /// Window index where the current tokens start; i32::MAX once the
    /// start slid out of the window (Go uses math.MaxInt32 too).
    block_start: isize,
    tokens: Tokens,
    fast: Option<Box<dyn FastEnc>>,
    state: Option<Box<AdvancedState>>,
    /// A flush was requested.
    sync: bool,
    /// window[index-1] still needs to be emitted.
    byte_available: bool,
}

/// Go's `hash4u` with hashBits.
#[inline(always)]
fn hash4u(u: u32) -> u32 {
    u.wrapping_mul(PRIME_4_BYTES) >> (32 - HASH_BITS)
}

/// Go's `hash4`: hash of the first 4 bytes of b.
#[inline(always)]
fn hash4(b: &[u8]) -> usize {
    hash4u(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) as usize
}

/// Go's `bulkHash4`.
fn bulk_hash4(b: &[u8], dst: &mut [u32]) {
    if b.len() < 4 {
        return;
    }
    let mut hb = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    dst[0] = hash4u(hb);
    for (d, &next) in dst[1..].iter_mut().zip(b[4..].iter()) {
        hb = (hb >> 8) | (next as u32) << 24;
        *d = hash4u(hb);
    }
}

/// Go's `matchLen`: length of the common prefix of a and b, at most a.len().
#[inline]
fn match_len(a: &[u8], b: &[u8]) -> usize {
    let b = &b[..a.len()];
    let mut checked = 0;
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let diff =
            u64::from_le_bytes(ca.try_into().unwrap()) ^ u64::from_le_bytes(cb.try_into().unwrap());
        if diff != 0 {
            return checked + (diff.trailing_zeros() >> 3) as usize;
        }
        checked += 8;
    }
    for (ca, cb) in a[checked..].iter().zip(b[checked..].iter()) {
        if ca != cb {
            return checked;
        }
        checked += 1;
    }
    checked
}

/// Go's `(*compressor).writeBlock`, as a free function so deflate_lazy
/// can call it while holding the hash state.
#[allow(clippy::too_many_arguments)]
fn write_block(
    w: &mut HuffmanBitWriter,
    tokens: &mut Tokens,
    window: &[u8],
    block_start: &mut isize,
    index: isize,
    eof: bool,
    sync: bool,
) {
    if index > 0 || eof {
        // Note: after a preset dictionary block_start is 0, so the stored
        // fallback includes the dictionary bytes; Go does the same.
        let win = if *block_start <= index {
            Some(&window[*block_start as usize..index as usize])
        } else {
            None
        };
        *block_start = index;
        w.write_block_dynamic(tokens, eof, win, sync);
    }
}

impl Compressor {
    /// Go's `(*compressor).init`.
    fn new(level: i32) -> Result<Self, String> {
        let mut d = Compressor {
            cl: CompressionLevel::default(),
            h: None,
            w: HuffmanBitWriter::new(),
            step: Step::Store,
            window: Vec::new(),
            window_end: 0,
            block_start: 0,
            tokens: Tokens::new(),
            fast: None,
            state: None,
            sync: false,
            byte_available: false,
        };
        let level = match level {
            NO_COMPRESSION => {
                d.window = vec![0; MAX_STORE_BLOCK_SIZE];
                d.step = Step::Store;
                level
            }
            HUFFMAN_ONLY => {
                d.w.log_new_table_penalty = 10;
                d.window = vec![0; 32 << 10];
                d.step = Step::StoreHuff;
                level
            }
            -1 | 1..=6 => {
                let level = if level == DEFAULT_COMPRESSION {
                    5
                } else {
                    level
                };
                d.w.log_new_table_penalty = 7;
                d.fast = Some(new_fast_enc(level as u8));
                d.window = vec![0; MAX_STORE_BLOCK_SIZE];
                d.step = Step::StoreFast;
                level
            }
            7..=9 => {
                d.w.log_new_table_penalty = 8;
                d.state = Some(AdvancedState::new());
                d.cl = lazy_level(level);
                d.init_deflate();
                d.step = Step::DeflateLazy;
                level
            }
            _ => {
                return Err(format!(
                    "flate: invalid compression level {level}: want value in range [-2, 9]"
                ))
            }
        };
        d.cl.level = level;
        Ok(d)
    }

    /// Go's `initDeflate`.
    fn init_deflate(&mut self) {
        self.window = vec![0; 2 * WINDOW_SIZE];
        self.byte_available = false;
        if let Some(s) = self.state.as_mut() {
            s.index = 0;
            s.hash_offset = 1;
            s.length = MIN_MATCH_LENGTH - 1;
            s.offset = 0;
            s.chain_head = -1;
        }
    }

    /// Go's `(*compressor).reset`.
    fn reset(&mut self) {
        self.w.reset();
        self.sync = false;
        if let Some(f) = self.fast.as_mut() {
            f.reset();
            self.window_end = 0;
            self.tokens.reset();
            return;
        }
        if self.cl.chain == 0 {
            // NoCompression or HuffmanOnly.
            self.window_end = 0;
            return;
        }
        let s = self.state.as_mut().expect("lazy levels have state");
        s.chain_head = -1;
        s.hash_head.fill(0);
        s.hash_prev.fill(0);
        s.hash_offset = 1;
        s.index = 0;
        self.window_end = 0;
        self.block_start = 0;
        self.byte_available = false;
        self.tokens.reset();
        s.length = MIN_MATCH_LENGTH - 1;
        s.offset = 0;
        s.ii = 0;
        s.max_insert_index = 0;
    }

    /// Go's `fillWindow`: preload a dictionary (right after a reset).
    fn fill_window(&mut self, mut b: &[u8]) {
        // Store-only and Huffman-only modes ignore dictionaries.
        if self.cl.level <= 0 {
            return;
        }
        if let Some(f) = self.fast.as_mut() {
            // Encode the tail of the dictionary, discarding the tokens.
            if b.len() > WINDOW_SIZE {
                b = &b[b.len() - WINDOW_SIZE..];
            }
            f.encode(&mut self.tokens, b);
            self.tokens.reset();
            return;
        }
        let s = self.state.as_mut().expect("lazy levels have state");
        if b.len() > WINDOW_SIZE {
            b = &b[b.len() - WINDOW_SIZE..];
        }
        let n = b.len();
        self.window[self.window_end..self.window_end + n].copy_from_slice(b);
        // Hash 256 positions at a time, like Go (from window start: only
        // valid right after a reset, as in Go).
        let min = MIN_MATCH_LENGTH as usize;
        let loops = (n + 256 - min) / 256;
        for j in 0..loops {
            let startindex = j * 256;
            let end = (startindex + 256 + min - 1).min(n);
            let tocheck = &self.window[startindex..end];
            let dst_size = tocheck.len() as isize - min as isize + 1;
            if dst_size <= 0 {
                continue;
            }
            let dst = &mut s.hash_match[..dst_size as usize];
            bulk_hash4(tocheck, dst);
            for (i, &val) in dst.iter().enumerate() {
                let di = i + startindex;
                let new_h = (val & HASH_MASK) as usize;
                s.hash_prev[di & WINDOW_MASK] = s.hash_head[new_h];
                s.hash_head[new_h] = (di as isize + s.hash_offset) as u32;
            }
        }
        self.window_end += n;
        s.index = n as isize;
    }

    /// Go's `fill` (fillBlock or fillDeflate): copy input into the window,
    /// returning how much was taken.
    fn fill(&mut self, b: &[u8]) -> usize {
        if self.step == Step::DeflateLazy {
            self.slide_window();
        }
        let n = b.len().min(self.window.len() - self.window_end);
        self.window[self.window_end..self.window_end + n].copy_from_slice(&b[..n]);
        self.window_end += n;
        n
    }

    /// The window-shifting half of Go's `fillDeflate`.
    fn slide_window(&mut self) {
        let s = self.state.as_mut().expect("lazy levels have state");
        if s.index < (2 * WINDOW_SIZE) as isize - (MIN_MATCH_LENGTH + MAX_MATCH_LENGTH) {
            return;
        }
        self.window.copy_within(WINDOW_SIZE..2 * WINDOW_SIZE, 0);
        s.index -= WINDOW_SIZE as isize;
        self.window_end -= WINDOW_SIZE;
        if self.block_start >= WINDOW_SIZE as isize {
            self.block_start -= WINDOW_SIZE as isize;
        } else {
            self.block_start = i32::MAX as isize;
        }
        s.hash_offset += WINDOW_SIZE as isize;
        if s.hash_offset > MAX_HASH_OFFSET {
            let delta = s.hash_offset - 1;
            s.hash_offset -= delta;
            s.chain_head -= delta;
            for v in s.hash_prev.iter_mut().chain(s.hash_head.iter_mut()) {
                *v = if *v as isize > delta {
                    (*v as isize - delta) as u32
                } else {
                    0
                };
            }
        }
    }

    fn do_step(&mut self) {
        match self.step {
            Step::Store => self.store(),
            Step::StoreHuff => self.store_huff(),
            Step::StoreFast => self.store_fast(),
            Step::DeflateLazy => self.deflate_lazy(),
        }
    }

    /// Go's `writeStoredBlock`.
    fn write_stored_block(&mut self, len: usize) {
        self.w.write_stored_header(len, false);
        let (w, window) = (&mut self.w, &self.window);
        w.write_stored_body(&window[..len]);
    }

    /// Go's `store` (level 0).
    fn store(&mut self) {
        if self.window_end > 0 && (self.window_end == MAX_STORE_BLOCK_SIZE || self.sync) {
            self.write_stored_block(self.window_end);
            self.window_end = 0;
        }
    }

    /// Go's `storeHuff` (HuffmanOnly).
    fn store_huff(&mut self) {
        if self.window_end < self.window.len() && !self.sync || self.window_end == 0 {
            return;
        }
        self.w
            .write_block_huff(false, &self.window[..self.window_end], self.sync);
        self.window_end = 0;
    }

    /// Go's `storeFast` (levels 1..=6): encode a full window (or what is
    /// there on flush) as one block.
    fn store_fast(&mut self) {
        // We only compress if we have maxStoreBlockSize.
        if self.window_end < self.window.len() {
            if !self.sync {
                return;
            }
            // Handle extremely small sizes.
            if self.window_end < 128 {
                if self.window_end == 0 {
                    return;
                }
                if self.window_end <= 32 {
                    self.write_stored_block(self.window_end);
                } else {
                    self.w
                        .write_block_huff(false, &self.window[..self.window_end], true);
                }
                self.tokens.reset();
                self.window_end = 0;
                if let Some(f) = self.fast.as_mut() {
                    f.reset();
                }
                return;
            }
        }
        let win = &self.window[..self.window_end];
        if let Some(f) = self.fast.as_mut() {
            f.encode(&mut self.tokens, win);
        }
        if self.tokens.n == 0 {
            // No matches: store the block as is.
            self.write_stored_block(self.window_end);
        } else if self.tokens.n as usize > self.window_end - (self.window_end >> 4) {
            // Removed less than 1/16th: Huffman-only block.
            self.w.write_block_huff(false, win, self.sync);
        } else {
            self.w
                .write_block_dynamic(&mut self.tokens, false, Some(win), self.sync);
        }
        self.tokens.reset();
        self.window_end = 0;
    }

    /// Go's `findMatch`: best match at `pos` longer than 3 within
    /// `chain` candidates, starting at `prev_head`.
    fn find_match(
        cl: &CompressionLevel,
        h: Option<&HuffmanEncoder>,
        window: &[u8],
        s: &AdvancedState,
        pos: isize,
        prev_head: isize,
        lookahead: isize,
    ) -> Option<(isize, isize)> {
        let min_match_look = MAX_MATCH_LENGTH.min(lookahead);
        let win = &window[..(pos + min_match_look) as usize];
        // We quit when we get a match that's at least nice long.
        let nice = (win.len() as isize - pos).min(cl.nice);
        let mut tries = cl.chain;
        let mut length = MIN_MATCH_LENGTH - 1;
        let mut w_end = win[(pos + length) as usize];
        let w_pos = &win[pos as usize..];
        let min_index = (pos - WINDOW_SIZE as isize).max(0);
        let mut offset = 0;
        let mut ok = false;
        let mml = min_match_look as usize;

        if cl.chain < 100 {
            let mut i = prev_head;
            while tries > 0 {
                if w_end == win[(i + length) as usize] {
                    let n = match_len(&win[i as usize..i as usize + mml], w_pos) as isize;
                    if n > length {
                        length = n;
                        offset = pos - i;
                        ok = true;
                        if n >= nice {
                            // Good enough; don't look for better.
                            break;
                        }
                        w_end = win[(pos + n) as usize];
                    }
                }
                if i <= min_index {
                    // hash_prev[i & WINDOW_MASK] has been overwritten.
                    break;
                }
                i = s.hash_prev[i as usize & WINDOW_MASK] as isize - s.hash_offset;
                if i < min_index {
                    break;
                }
                tries -= 1;
            }
            return ok.then_some((length, offset));
        }

        // Level 9: choose by estimated bit gain rather than length.
        let h = h.expect("huffman estimate generated for chain > 100");
        const BASE_COST: i32 = 6;
        let mut c_gain = 0i32;
        let mut i = prev_head;
        while tries > 0 {
            if w_end == win[(i + length) as usize] {
                let n = match_len(&win[i as usize..i as usize + mml], w_pos) as isize;
                if n > length {
                    let new_gain = h.bit_length_raw(&w_pos[..n as usize])
                        - OFFSET_EXTRA_BITS[offset_code((pos - i) as u32) as usize] as i32
                        - BASE_COST
                        - LENGTH_EXTRA_BITS[LENGTH_CODES[((n - 3) & 255) as usize] as usize] as i32;
                    if new_gain > c_gain {
                        length = n;
                        offset = pos - i;
                        c_gain = new_gain;
                        ok = true;
                        if n >= nice {
                            break;
                        }
                        w_end = win[(pos + n) as usize];
                    }
                }
            }
            if i <= min_index {
                break;
            }
            i = s.hash_prev[i as usize & WINDOW_MASK] as isize - s.hash_offset;
            if i < min_index {
                break;
            }
            tries -= 1;
        }
        ok.then_some((length, offset))
    }

    /// Go's `deflateLazy` (levels 7..=9).
    fn deflate_lazy(&mut self) {
        let Compressor {
            cl,
            h,
            w,
            window,
            window_end,
            block_start,
            tokens,
            state,
            sync,
            byte_available,
            ..
        } = self;
        let sync = *sync;
        let cl = *cl;
        let window: &[u8] = window;
        let s: &mut AdvancedState = state.as_mut().expect("lazy levels have state");
        let window_end = *window_end as isize;

        if window_end - s.index < MIN_MATCH_LENGTH + MAX_MATCH_LENGTH && !sync {
            return;
        }
        if window_end != s.index && cl.chain > 100 {
            // Literal code lengths of the pending input, for match gains.
            let h = h.get_or_insert_with(|| Box::new(HuffmanEncoder::new(256)));
            let mut tmp = [0u16; 256];
            for &v in &window[s.index as usize..window_end as usize] {
                tmp[v as usize] = tmp[v as usize].wrapping_add(1);
            }
            h.generate(&tmp, 15);
        }
        let h: Option<&HuffmanEncoder> = h.as_deref();

        s.max_insert_index = window_end - (MIN_MATCH_LENGTH - 1);

        loop {
            let lookahead = window_end - s.index;
            if lookahead < MIN_MATCH_LENGTH + MAX_MATCH_LENGTH {
                if !sync {
                    return;
                }
                if lookahead == 0 {
                    // Flush current output block if any.
                    if *byte_available {
                        // One pending literal left.
                        tokens.add_literal(window[s.index as usize - 1]);
                        *byte_available = false;
                    }
                    if tokens.n > 0 {
                        write_block(w, tokens, window, block_start, s.index, false, sync);
                        tokens.reset();
                    }
                    return;
                }
            }
            if s.index < s.max_insert_index {
                // Update the hash
                let hash = hash4(&window[s.index as usize..]);
                let ch = s.hash_head[hash];
                s.chain_head = ch as isize;
                s.hash_prev[s.index as usize & WINDOW_MASK] = ch;
                s.hash_head[hash] = (s.index + s.hash_offset) as u32;
            }
            let mut prev_length = s.length;
            let mut prev_offset = s.offset;
            s.length = MIN_MATCH_LENGTH - 1;
            s.offset = 0;
            let min_index = (s.index - WINDOW_SIZE as isize).max(0);

            if s.chain_head - s.hash_offset >= min_index
                && lookahead > prev_length
                && prev_length < cl.lazy
            {
                if let Some((l, o)) = Self::find_match(
                    &cl,
                    h,
                    window,
                    s,
                    s.index,
                    s.chain_head - s.hash_offset,
                    lookahead,
                ) {
                    s.length = l;
                    s.offset = o;
                }
            }

            if prev_length >= MIN_MATCH_LENGTH && s.length <= prev_length {
                // Check for a better match ending where the previous one
                // would (checkOff >= 2 so s.index itself is not checked).
                const CHECK_OFF: isize = 2;
                let prev_index = s.index - 1;
                if prev_index + prev_length + CHECK_OFF < s.max_insert_index {
                    let end = lookahead.min(MAX_MATCH_LENGTH) + prev_index;
                    let idx = prev_index + prev_length - (4 - CHECK_OFF);
                    let hh = hash4(&window[idx as usize..]);
                    let ch2 =
                        s.hash_head[hh] as isize - s.hash_offset - prev_length + (4 - CHECK_OFF);
                    if ch2 > min_index {
                        let length = match_len(
                            &window[prev_index as usize..end as usize],
                            &window[ch2 as usize..],
                        ) as isize;
                        // A pure length metric works best here.
                        if length > prev_length {
                            prev_length = length;
                            prev_offset = prev_index - ch2;
                        }
                    }
                }
                // Output the previous match.
                tokens.add_match(
                    (prev_length - 3) as u32,
                    (prev_offset - MIN_OFFSET_SIZE) as u32,
                );

                // Insert hashes for the strings covered by the match (the
                // last ones only if there is enough lookahead).
                let new_index = s.index + prev_length - 1;
                let end = new_index.min(s.max_insert_index) + MIN_MATCH_LENGTH - 1;
                let startindex = (s.index + 1).min(s.max_insert_index);
                let tocheck = &window[startindex as usize..end as usize];
                let dst_size = tocheck.len() as isize - MIN_MATCH_LENGTH + 1;
                if dst_size > 0 {
                    let dst = &mut s.hash_match[..dst_size as usize];
                    bulk_hash4(tocheck, dst);
                    for (i, &val) in dst.iter().enumerate() {
                        let di = i + startindex as usize;
                        let new_h = (val & HASH_MASK) as usize;
                        s.hash_prev[di & WINDOW_MASK] = s.hash_head[new_h];
                        s.hash_head[new_h] = (di as isize + s.hash_offset) as u32;
                    }
                }

                s.index = new_index;
                *byte_available = false;
                s.length = MIN_MATCH_LENGTH - 1;
                if tokens.n == MAX_FLATE_BLOCK_TOKENS {
                    // The block includes the current character
                    write_block(w, tokens, window, block_start, s.index, false, sync);
                    tokens.reset();
                }
                s.ii = 0;
            } else {
                // Reset, if we got a match this run.
                if s.length >= MIN_MATCH_LENGTH {
                    s.ii = 0;
                }
                if *byte_available {
                    // We have a byte waiting. Emit it.
                    s.ii = s.ii.wrapping_add(1);
                    tokens.add_literal(window[s.index as usize - 1]);
                    if tokens.n == MAX_FLATE_BLOCK_TOKENS {
                        write_block(w, tokens, window, block_start, s.index, false, sync);
                        tokens.reset();
                    }
                    s.index += 1;

                    // After a long run of literals, skip ahead (hashing
                    // but not searching); s.ii wraps after 64K.
                    let n = s.ii as isize - cl.chain;
                    if n > 0 {
                        let n = 1 + (n >> 6);
                        for _ in 0..n {
                            if s.index >= window_end - 1 {
                                break;
                            }
                            tokens.add_literal(window[s.index as usize - 1]);
                            if tokens.n == MAX_FLATE_BLOCK_TOKENS {
                                write_block(w, tokens, window, block_start, s.index, false, sync);
                                tokens.reset();
                            }
                            if s.index < s.max_insert_index {
                                let hh = hash4(&window[s.index as usize..]);
                                let ch = s.hash_head[hh];
                                s.chain_head = ch as isize;
                                s.hash_prev[s.index as usize & WINDOW_MASK] = ch;
                                s.hash_head[hh] = (s.index + s.hash_offset) as u32;
                            }
                            s.index += 1;
                        }
                        // Flush last byte
                        tokens.add_literal(window[s.index as usize - 1]);
                        *byte_available = false;
                        if tokens.n == MAX_FLATE_BLOCK_TOKENS {
                            write_block(w, tokens, window, block_start, s.index, false, sync);
                            tokens.reset();
                        }
                    }
                } else {
                    s.index += 1;
                    *byte_available = true;
                }
            }
        }
    }

    /// Go's `(*compressor).write`.
    fn write(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.window_end == self.window.len() || self.sync {
                self.do_step();
            }
            let n = self.fill(b);
            b = &b[n..];
        }
    }

    /// Go's `syncFlush`.
    fn sync_flush(&mut self) {
        self.sync = true;
        self.do_step();
        self.w.write_stored_header(0, false);
        self.w.flush();
        self.sync = false;
    }

    /// Go's `close`.
    fn close(&mut self) {
        self.sync = true;
        self.do_step();
        self.w.write_stored_header(0, true);
        self.w.flush();
        self.w.reset();
    }
}

/// Go's `flate.Writer`: a raw deflate stream encoder.
///
/// Compressed bytes are appended to the `out` passed to each call; some
/// may be held back (at most a few hundred bytes plus the pending block)
/// until `flush` or `close`.
pub struct Writer {
    d: Compressor,
    dict: Vec<u8>,
}

impl Writer {
    /// Go's `NewWriter`. Levels -2..=9.
    pub fn new(level: i32) -> Result<Self, String> {
        Ok(Writer {
            d: Compressor::new(level)?,
            dict: Vec::new(),
        })
    }

    /// Go's `NewWriterDict`.
    pub fn new_dict(level: i32, dict: &[u8]) -> Result<Self, String> {
        let mut w = Self::new(level)?;
        w.d.fill_window(dict);
        w.dict.extend_from_slice(dict);
        Ok(w)
    }

    /// The effective level (-1 is reported as 5).
    pub fn level(&self) -> i32 {
        self.d.cl.level
    }

    /// Runs `f` with `out` lent to the bit writer (a swap: no copy, no
    /// allocation), so everything it emits is appended to `out`.
    fn with_out(&mut self, out: &mut Vec<u8>, f: impl FnOnce(&mut Compressor)) {
        std::mem::swap(&mut self.d.w.out, out);
        f(&mut self.d);
        std::mem::swap(&mut self.d.w.out, out);
    }

    /// Go's `Write`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.with_out(out, |d| d.write(data));
    }

    /// Go's `Flush` (Z_SYNC_FLUSH: ends with an empty stored block).
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        self.with_out(out, |d| d.sync_flush());
    }

    /// Go's `Close`: flush and write the final block.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        self.with_out(out, |d| d.close());
    }

    /// Go's `Reset`: as new, with the dictionary given at creation (or by
    /// the last `reset_dict`).
    pub fn reset(&mut self) {
        self.d.reset();
        if !self.dict.is_empty() {
            let dict = std::mem::take(&mut self.dict);
            self.d.fill_window(&dict);
            self.dict = dict;
        }
    }

    /// Go's `ResetDict`: as new, with `dict` preloaded.
    pub fn reset_dict(&mut self, dict: &[u8]) {
        self.dict.clear();
        self.dict.extend_from_slice(dict);
        self.d.reset();
        self.d.fill_window(dict);
    }
}
