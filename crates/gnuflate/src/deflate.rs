//! The matcher and the public `Writer` (gzip's deflate.c): window refill,
//! hash chains, `deflate_fast` (levels 1..=3) and the lazy `deflate`
//! (levels 4..=9).
//!
//! gzip pulls its input with `read()` into a 64 KiB window; what it does
//! near the end depends on what the window holds past the input (stale bytes
//! of the previous pass, two zeros written at end of file), and on when each
//! read returns. This port keeps the same window and replays the reads of a
//! regular file (`gzip < file`): each returns all it asked for, or all that
//! is left. It pauses when it has less than a read wants and the input has
//! not ended, so how the input is split never shows in the output.

use crate::bits::Bits;
use crate::trees::Trees;
use crate::BadLevel;

const WSIZE: usize = 0x8000;
const WMASK: usize = WSIZE - 1;
/// gzip's `window_size`: two halves, input enters the upper one.
const WINDOW_SIZE: usize = 2 * WSIZE;
/// The window's buffer: past `WINDOW_SIZE` it holds zeros (gzip's
/// end-of-file zeros may land at the window's very end). A power of two so
/// that masked indexes (`at`) need no bounds checks; every index gzip uses
/// is below `WINDOW_SIZE + 2`, so the mask never changes one.
const WBUF: usize = 2 * WINDOW_SIZE;
const HASH_BITS: usize = 15;
const HASH_SIZE: usize = 1 << HASH_BITS;
const HASH_MASK: usize = HASH_SIZE - 1;
const H_SHIFT: usize = HASH_BITS.div_ceil(MIN_MATCH);
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const MIN_LOOKAHEAD: usize = MAX_MATCH + MIN_MATCH + 1;
const MAX_DIST: usize = WSIZE - MIN_LOOKAHEAD;
/// Length-3 matches farther than this are not taken (lazy levels).
const TOO_FAR: usize = 4096;
const NIL: usize = 0;

/// gzip's `configuration_table[level]`.
#[derive(Clone, Copy)]
struct Config {
    good: usize,
    lazy: usize,
    nice: usize,
    chain: usize,
}

const fn cfg(good: usize, lazy: usize, nice: usize, chain: usize) -> Config {
    Config {
        good,
        lazy,
        nice,
        chain,
    }
}

const CONFIGS: [Config; 9] = [
    cfg(4, 4, 8, 4),
    cfg(4, 5, 16, 8),
    cfg(4, 6, 32, 32),
    cfg(4, 4, 16, 16),
    cfg(8, 16, 32, 32),
    cfg(8, 16, 128, 128),
    cfg(8, 32, 128, 256),
    cfg(32, 128, 258, 1024),
    cfg(32, 258, 258, 4096),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `lm_init`'s first read.
    Start,
    /// `lm_init` read; its refill loop and hash priming are next.
    Init,
    Run,
    Done,
}

/// Input not yet read into the window: bytes held from earlier `write`s,
/// then the current call's.
struct Source<'h, 'd> {
    held: &'h mut Vec<u8>,
    data: &'d [u8],
    ended: bool,
}

impl Source<'_, '_> {
    fn available(&self) -> usize {
        self.held.len() + self.data.len()
    }

    /// True when a `read()` of `n` bytes from a regular file can be given
    /// its exact result now.
    fn can_read(&self, n: usize) -> bool {
        self.ended || self.available() >= n
    }

    /// A regular file's `read()`: `dst.len()` bytes, or all that is left.
    fn read(&mut self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        if !self.held.is_empty() {
            n = self.held.len().min(dst.len());
            dst[..n].copy_from_slice(&self.held[..n]);
            self.held.drain(..n);
        }
        let k = self.data.len().min(dst.len() - n);
        dst[n..n + k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        n + k
    }
}

/// A streaming GNU gzip deflate encoder. Output is the raw deflate stream
/// (no gzip header or trailer).
pub struct Writer {
    level: u32,
    c: Config,
    phase: Phase,
    /// The sliding window, in a `WBUF` buffer.
    window: Box<[u8; WBUF]>,
    prev: Box<[u16; WSIZE]>,
    head: Box<[u16; HASH_SIZE]>,
    ins_h: usize,
    strstart: usize,
    match_start: usize,
    lookahead: usize,
    eofile: bool,
    /// Window offset of the current block; negative once slid out.
    block_start: isize,
    prev_length: usize,
    match_length: usize,
    match_available: bool,
    held: Vec<u8>,
    trees: Trees,
    bits: Bits,
}

impl Writer {
    /// An encoder for `gzip -level`.
    pub fn new(level: i32) -> Result<Writer, BadLevel> {
        if !(1..=9).contains(&level) {
            return Err(BadLevel(level));
        }
        let c = CONFIGS[level as usize - 1];
        Ok(Writer {
            level: level as u32,
            c,
            phase: Phase::Start,
            window: vec![0u8; WBUF]
                .into_boxed_slice()
                .try_into()
                .expect("WBUF bytes"),
            prev: Box::new([0; WSIZE]),
            head: Box::new([0; HASH_SIZE]),
            ins_h: 0,
            strstart: 0,
            match_start: 0,
            lookahead: 0,
            eofile: false,
            block_start: 0,
            // deflate_fast keeps this at MIN_MATCH - 1; the lazy loop sets it.
            prev_length: MIN_MATCH - 1,
            // deflate_fast starts at 0, the lazy deflate at MIN_MATCH - 1.
            match_length: if level <= 3 { 0 } else { MIN_MATCH - 1 },
            match_available: false,
            held: Vec::new(),
            trees: Trees::new(level as u32),
            bits: Bits::new(),
        })
    }

    /// Takes the next input; appends the compressed bytes now complete.
    /// Holds back less than 64 KiB of input (a read gzip could not yet
    /// make). Panics after `finish`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        assert!(self.phase != Phase::Done, "gnuflate: write after finish");
        let mut held = std::mem::take(&mut self.held);
        let mut src = Source {
            held: &mut held,
            data,
            ended: false,
        };
        self.run(&mut src);
        // Whatever is left is less than one read: at most a window.
        let rest = src.data;
        held.extend_from_slice(rest);
        self.held = held;
        out.append(&mut self.bits.out);
    }

    /// Ends the stream: appends the rest, the last block included.
    /// Panics when called twice.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        assert!(self.phase != Phase::Done, "gnuflate: finished twice");
        let mut held = std::mem::take(&mut self.held);
        let mut src = Source {
            held: &mut held,
            data: &[],
            ended: true,
        };
        self.run(&mut src);
        debug_assert!(self.phase == Phase::Done);
        out.append(&mut self.bits.out);
    }

    /// Runs gzip's `deflate()` as far as the input allows.
    fn run(&mut self, src: &mut Source) {
        if self.phase == Phase::Start {
            // lm_init's first read: a whole window.
            if !src.can_read(WINDOW_SIZE) {
                return;
            }
            let n = src.read(&mut self.window[..WINDOW_SIZE]);
            if n == 0 {
                self.eofile = true;
                self.lookahead = 0;
                self.phase = Phase::Run;
            } else {
                self.lookahead = n;
                self.phase = Phase::Init;
            }
        }
        if self.phase == Phase::Init {
            if !self.refill(src) {
                return;
            }
            self.ins_h = 0;
            for j in 0..MIN_MATCH - 1 {
                self.update_hash(self.window[j]);
            }
            self.phase = Phase::Run;
        }
        if self.phase != Phase::Run {
            return;
        }
        let fast = self.level <= 3;
        loop {
            // gzip refills at the end of each step; the same before the next.
            if !self.refill(src) {
                return;
            }
            if self.lookahead == 0 {
                break;
            }
            if fast {
                self.step_fast();
            } else {
                self.step_lazy();
            }
        }
        if !fast && self.match_available {
            // gzip ignores whether this fills the block: it ends anyway.
            let c = self.window[self.strstart - 1] as usize;
            self.tally(0, c);
        }
        self.flush_block(true);
        self.phase = Phase::Done;
    }

    /// gzip's `while (lookahead < MIN_LOOKAHEAD && !eofile) fill_window();`.
    /// False when a read must wait for more input.
    fn refill(&mut self, src: &mut Source) -> bool {
        while self.lookahead < MIN_LOOKAHEAD && !self.eofile {
            let mut more = WINDOW_SIZE - self.lookahead - self.strstart;
            let slide = self.strstart >= WSIZE + MAX_DIST;
            if slide {
                more += WSIZE;
            }
            if !src.can_read(more) {
                return false;
            }
            if slide {
                self.slide();
            }
            let at = self.strstart + self.lookahead;
            let n = src.read(&mut self.window[at..at + more]);
            if n == 0 {
                self.eofile = true;
                // gzip zeroes these so that garbage stays out of the hash.
                self.window[at..at + MIN_MATCH - 1].fill(0);
            } else {
                self.lookahead += n;
            }
        }
        true
    }

    /// Moves the upper half of the window down (`fill_window`).
    fn slide(&mut self) {
        self.window.copy_within(WSIZE..WINDOW_SIZE, 0);
        // Unsigned in gzip: a stale match_start wraps, harmlessly.
        self.match_start = self.match_start.wrapping_sub(WSIZE) & 0xffff_ffff;
        self.strstart -= WSIZE;
        self.block_start -= WSIZE as isize;
        let down = |m: &mut u16| {
            *m = if *m as usize >= WSIZE {
                *m - WSIZE as u16
            } else {
                NIL as u16
            }
        };
        self.head.iter_mut().for_each(down);
        self.prev.iter_mut().for_each(down);
    }

    #[inline(always)]
    fn update_hash(&mut self, c: u8) {
        self.ins_h = ((self.ins_h << H_SHIFT) ^ c as usize) & HASH_MASK;
    }

    /// `INSERT_STRING`: links the string at `s` in; returns the chain head.
    #[inline(always)]
    fn insert_string(&mut self, s: usize) -> usize {
        self.update_hash(at(&self.window, s + MIN_MATCH - 1));
        let h = self.head[self.ins_h] as usize;
        self.prev[s & WMASK] = h as u16;
        self.head[self.ins_h] = s as u16;
        h
    }

    #[inline(always)]
    fn tally(&mut self, dist: usize, lc: usize) -> bool {
        let in_len = (self.strstart as i64 - self.block_start as i64) as u64;
        self.trees.tally(dist, lc, in_len)
    }

    /// `FLUSH_BLOCK(eof)`.
    fn flush_block(&mut self, eof: bool) {
        let stored_len = (self.strstart as i64 - self.block_start as i64) as u64;
        let buf = (self.block_start >= 0).then(|| {
            let b = self.block_start as usize;
            &self.window[b..b + stored_len as usize]
        });
        self.trees.flush_block(&mut self.bits, buf, stored_len, eof);
    }

    /// One step of `deflate_fast`: a match taken at once, or a literal.
    fn step_fast(&mut self) {
        let hash_head = self.insert_string(self.strstart);
        if hash_head != NIL
            && self.strstart - hash_head <= MAX_DIST
            && self.strstart <= WINDOW_SIZE - MIN_LOOKAHEAD
        {
            self.match_length = self.longest_match(hash_head).min(self.lookahead);
        }
        let flush;
        if self.match_length >= MIN_MATCH {
            flush = self.tally(
                self.strstart - self.match_start,
                self.match_length - MIN_MATCH,
            );
            self.lookahead -= self.match_length;
            if self.match_length <= self.c.lazy {
                // max_insert_length: hash every string of a short match.
                self.match_length -= 1;
                loop {
                    self.strstart += 1;
                    self.insert_string(self.strstart);
                    self.match_length -= 1;
                    if self.match_length == 0 {
                        break;
                    }
                }
                self.strstart += 1;
            } else {
                self.strstart += self.match_length;
                self.match_length = 0;
                self.ins_h = self.window[self.strstart] as usize;
                self.update_hash(self.window[self.strstart + 1]);
            }
        } else {
            let c = self.window[self.strstart] as usize;
            flush = self.tally(0, c);
            self.lookahead -= 1;
            self.strstart += 1;
        }
        if flush {
            self.flush_block(false);
            self.block_start = self.strstart as isize;
        }
    }

    /// One step of the lazy `deflate`: a match is taken only when the next
    /// position has none longer.
    fn step_lazy(&mut self) {
        let hash_head = self.insert_string(self.strstart);
        self.prev_length = self.match_length;
        let prev_match = self.match_start;
        self.match_length = MIN_MATCH - 1;
        if hash_head != NIL
            && self.prev_length < self.c.lazy
            && self.strstart - hash_head <= MAX_DIST
            && self.strstart <= WINDOW_SIZE - MIN_LOOKAHEAD
        {
            self.match_length = self.longest_match(hash_head).min(self.lookahead);
            if self.match_length == MIN_MATCH
                && (self.strstart.wrapping_sub(self.match_start) & 0xffff_ffff) > TOO_FAR
            {
                self.match_length -= 1;
            }
        }
        if self.prev_length >= MIN_MATCH && self.match_length <= self.prev_length {
            let flush = self.tally(self.strstart - 1 - prev_match, self.prev_length - MIN_MATCH);
            // strstart - 1 and strstart are in the hash already.
            self.lookahead -= self.prev_length - 1;
            self.prev_length -= 2;
            loop {
                self.strstart += 1;
                self.insert_string(self.strstart);
                self.prev_length -= 1;
                if self.prev_length == 0 {
                    break;
                }
            }
            self.match_available = false;
            self.match_length = MIN_MATCH - 1;
            self.strstart += 1;
            if flush {
                self.flush_block(false);
                self.block_start = self.strstart as isize;
            }
        } else if self.match_available {
            let c = self.window[self.strstart - 1] as usize;
            if self.tally(0, c) {
                self.flush_block(false);
                self.block_start = self.strstart as isize;
            }
            self.strstart += 1;
            self.lookahead -= 1;
        } else {
            self.match_available = true;
            self.strstart += 1;
            self.lookahead -= 1;
        }
    }

    /// gzip's `longest_match` (the portable C one): the longest match
    /// longer than `prev_length` along the chain from `cur_match`; sets
    /// `match_start` when it finds one. Byte 2 is not compared: equal hashes
    /// and equal bytes 0 and 1 imply it.
    fn longest_match(&mut self, mut cur_match: usize) -> usize {
        let w = &*self.window;
        let scan = self.strstart;
        let mut chain_length = self.c.chain;
        let mut best_len = self.prev_length;
        let limit = if scan > MAX_DIST {
            scan - MAX_DIST
        } else {
            NIL
        };
        let nice = self.c.nice;
        let mut scan_end1 = at(w, scan + best_len - 1);
        let mut scan_end = at(w, scan + best_len);
        if self.prev_length >= self.c.good {
            chain_length >>= 2;
        }
        let s0 = at(w, scan);
        let s1 = at(w, scan + 1);
        // Bytes 3..=257 of the string, and the byte gzip reads past them.
        let tail = &w[scan + 3..scan + MAX_MATCH + 1];
        loop {
            let m = cur_match;
            if at(w, m + best_len) == scan_end
                && at(w, m + best_len - 1) == scan_end1
                && at(w, m) == s0
                && at(w, m + 1) == s1
            {
                let len = 3 + common_prefix(tail, &w[m + 3..m + MAX_MATCH + 1]);
                if len > best_len {
                    self.match_start = cur_match;
                    best_len = len;
                    if len >= nice {
                        break;
                    }
                    scan_end1 = at(w, scan + best_len - 1);
                    scan_end = at(w, scan + best_len);
                }
            }
            cur_match = self.prev[cur_match & WMASK] as usize;
            if cur_match <= limit {
                break;
            }
            chain_length -= 1;
            if chain_length == 0 {
                break;
            }
        }
        best_len
    }
}

/// `w[i]`, for indexes known to be in the buffer.
#[inline(always)]
fn at(w: &[u8; WBUF], i: usize) -> u8 {
    w[i & (WBUF - 1)]
}

/// Length of the common prefix of `a` and `b` (same length, 256 bytes),
/// at most 255: gzip stops at MAX_MATCH whatever the 259th byte is.
#[inline(always)]
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const N: usize = MAX_MATCH - 3;
    let (a, b) = (&a[..N + 1], &b[..N + 1]);
    let mut i = 0;
    while i + 8 <= N + 1 {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let d = x ^ y;
        if d != 0 {
            return (i + (d.trailing_zeros() / 8) as usize).min(N);
        }
        i += 8;
    }
    N
}
