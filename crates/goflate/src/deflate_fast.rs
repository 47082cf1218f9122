//! BestSpeed (level 1) matcher, mirroring Go's compress/flate deflatefast.go
//! (Snappy-style single-probe hash table, matches may reach into the
//! previous block). Offsets are Go int32s; all arithmetic stays in range by
//! the `BUFFER_RESET` design, and wrapping ops keep Go's semantics anyway.

use super::bit_writer::MAX_STORE_BLOCK_SIZE;
use super::token::{literal_token, match_token, Token};

const TABLE_BITS: u32 = 14;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const TABLE_MASK: u32 = TABLE_SIZE as u32 - 1;
const TABLE_SHIFT: u32 = 32 - TABLE_BITS;
const MAX_MATCH_OFFSET: i32 = 1 << 15;
const MAX_MATCH_LENGTH: usize = 258;
const BASE_MATCH_LENGTH: i32 = 3;
const BASE_MATCH_OFFSET: i32 = 1;
/// Rebase offsets before `cur` could overflow an int32 (Go `bufferReset`).
pub(super) const BUFFER_RESET: i32 = i32::MAX - MAX_STORE_BLOCK_SIZE as i32 * 2;
const INPUT_MARGIN: i32 = 16 - 1;
const MIN_NON_LITERAL_BLOCK_SIZE: usize = 1 + 1 + INPUT_MARGIN as usize;

#[derive(Clone, Copy, Default)]
struct TableEntry {
    val: u32,
    offset: i32,
}

/// Go `deflateFast`.
pub(super) struct DeflateFast {
    table: Box<[TableEntry; TABLE_SIZE]>,
    /// Previous block; empty if unknown.
    prev: Vec<u8>,
    /// Current match offset base.
    pub(super) cur: i32,
}

/// Go `load32` (little endian).
#[inline(always)]
fn load32(b: &[u8], i: i32) -> u32 {
    let i = i as usize;
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Go `load64` (little endian).
#[inline(always)]
fn load64(b: &[u8], i: i32) -> u64 {
    let i = i as usize;
    match b.get(i..i + 8) {
        Some(s) => u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => 0, // Unreachable: callers keep i+8 <= len(b), as in Go.
    }
}

/// Go `hash`.
#[inline(always)]
fn hash(u: u32) -> u32 {
    u.wrapping_mul(0x1e35a7bd) >> TABLE_SHIFT
}

/// Go `emitLiteral`.
#[inline]
fn emit_literal(dst: &mut Vec<Token>, lit: &[u8]) {
    dst.extend(lit.iter().map(|&b| literal_token(b)));
}

/// Common prefix length of `a` and `b`, at most `min(len(a), len(b))`;
/// compares 8 bytes at a time.
#[inline(always)]
pub(super) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let max = a.len().min(b.len());
    let (a, b) = (&a[..max], &b[..max]);
    let mut n = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        let y = u64::from_le_bytes([y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]]);
        let d = x ^ y;
        if d != 0 {
            return n + (d.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    for (x, y) in a[n..].iter().zip(&b[n..]) {
        if x != y {
            return n;
        }
        n += 1;
    }
    n
}

impl DeflateFast {
    /// Go `newDeflateFast`.
    pub(super) fn new() -> Self {
        DeflateFast {
            table: vec![TableEntry::default(); TABLE_SIZE]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("length is TABLE_SIZE")),
            prev: Vec::with_capacity(MAX_STORE_BLOCK_SIZE),
            cur: MAX_STORE_BLOCK_SIZE as i32,
        }
    }

    /// Go `deflateFast.encode`: append tokens for `src` to `dst`.
    pub(super) fn encode(&mut self, dst: &mut Vec<Token>, src: &[u8]) {
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
        if src.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            self.cur = self.cur.wrapping_add(MAX_STORE_BLOCK_SIZE as i32);
            self.prev.clear();
            emit_literal(dst, src);
            return;
        }
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut next_emit: i32 = 0;
        let mut s: i32 = 0;
        let mut cv = load32(src, s);
        let mut next_hash = hash(cv);
        let cur = self.cur;
        let table = &mut *self.table;

        'outer: loop {
            // Heuristic match skipping: after 32 misses step 2, etc.
            let mut skip: i32 = 32;
            let mut next_s = s;
            let mut candidate;
            loop {
                s = next_s;
                let between = skip >> 5;
                next_s = s + between;
                skip += between;
                if next_s > s_limit {
                    break 'outer;
                }
                let slot = &mut table[(next_hash & TABLE_MASK) as usize];
                candidate = *slot;
                let now = load32(src, next_s);
                *slot = TableEntry {
                    offset: s.wrapping_add(cur),
                    val: cv,
                };
                next_hash = hash(now);
                let offset = s.wrapping_sub(candidate.offset.wrapping_sub(cur));
                if offset > MAX_MATCH_OFFSET || cv != candidate.val {
                    cv = now;
                    continue;
                }
                break;
            }

            // A 4-byte match at s; src[next_emit..s] is unmatched.
            emit_literal(dst, &src[next_emit as usize..s as usize]);

            loop {
                // Extend the 4-byte match as far as possible.
                s += 4;
                let t = candidate.offset.wrapping_sub(cur).wrapping_add(4);
                let l = self_match_len(&self.prev, s, t, src);
                dst.push(match_token(
                    (l + 4 - BASE_MATCH_LENGTH) as u32,
                    (s - t - BASE_MATCH_OFFSET) as u32,
                ));
                s += l;
                next_emit = s;
                if s >= s_limit {
                    break 'outer;
                }
                // Update the table at s-1 and s with one 64-bit load; try
                // another copy at s.
                let mut x = load64(src, s - 1);
                let prev_hash = hash(x as u32);
                table[(prev_hash & TABLE_MASK) as usize] = TableEntry {
                    offset: cur.wrapping_add(s - 1),
                    val: x as u32,
                };
                x >>= 8;
                let curr_hash = hash(x as u32);
                let slot = &mut table[(curr_hash & TABLE_MASK) as usize];
                candidate = *slot;
                *slot = TableEntry {
                    offset: cur.wrapping_add(s),
                    val: x as u32,
                };
                let offset = s.wrapping_sub(candidate.offset.wrapping_sub(cur));
                if offset > MAX_MATCH_OFFSET || x as u32 != candidate.val {
                    cv = (x >> 8) as u32;
                    next_hash = hash(cv);
                    s += 1;
                    break;
                }
            }
        }

        // emitRemainder
        if (next_emit as usize) < src.len() {
            emit_literal(dst, &src[next_emit as usize..]);
        }
        self.cur = self.cur.wrapping_add(src.len() as i32);
        self.prev.clear();
        self.prev.extend_from_slice(src);
    }

    /// Go `deflateFast.reset`: forget history; bumping `cur` puts every
    /// table entry out of range.
    pub(super) fn reset(&mut self) {
        self.prev.clear();
        self.cur = self.cur.wrapping_add(MAX_MATCH_OFFSET);
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
    }

    /// Go `deflateFast.shiftOffsets`: rebase table offsets so `cur` becomes
    /// `MAX_MATCH_OFFSET + 1`.
    fn shift_offsets(&mut self) {
        if self.prev.is_empty() {
            // No history: just clear the table.
            self.table.fill(TableEntry::default());
            self.cur = MAX_MATCH_OFFSET + 1;
            return;
        }
        for e in self.table.iter_mut() {
            let v = e
                .offset
                .wrapping_sub(self.cur)
                .wrapping_add(MAX_MATCH_OFFSET + 1);
            // Entries beyond the window are capped at 0 (never matched).
            e.offset = v.max(0);
        }
        self.cur = MAX_MATCH_OFFSET + 1;
    }
}

/// Go `deflateFast.matchLen`: match length between src[s..] and src[t..]
/// (up to 258-4), where a negative `t` starts in `prev`. src[s-4..s] and
/// src[t-4..t] already match.
#[inline]
fn self_match_len(prev: &[u8], s: i32, t: i32, src: &[u8]) -> i32 {
    let s = s as usize;
    let s1 = (s + MAX_MATCH_LENGTH - 4).min(src.len());
    if t >= 0 {
        // Inside the current block (t < s, so src[t..] is long enough).
        return common_prefix(&src[s..s1], &src[t as usize..]) as i32;
    }
    // The match starts in the previous block.
    let tp = prev.len() as i32 + t;
    if tp < 0 {
        return 0;
    }
    let a = &src[s..s1];
    let b = &prev[tp as usize..];
    let n = common_prefix(a, b);
    if n < b.len().min(a.len()) {
        return n as i32;
    }
    if s + n == s1 {
        // Matched everything we are allowed to.
        return n as i32;
    }
    // Continue into the start of the current block.
    let a = &src[s + n..s1];
    (common_prefix(a, src) + n) as i32
}
