//! Shared machinery of the fast (level 1..=6) encoders: the `FastEnc`
//! trait, `FastGen` (history and `cur`), hash and match helpers and the
//! token emitters; mirrors klauspost/compress/flate fast_encoder.go
//! (v1.15.12) less its `newFastEnc`, which is `fast::new_fast_enc`.
//!
//! Positions are Go `int32`s throughout. Table entries store
//! `position + cur`; `cur` only grows until it passes [`BUFFER_RESET`],
//! where each encoder rebases its tables exactly like Go does.

use super::token::{
    offset_code, Token, Tokens, LENGTH_CODES1, LENGTH_SHIFT, MATCH_TYPE, MAX_STORE_BLOCK_SIZE,
};

/// Go's `fastEnc`: levels 1..=6 of klauspost/compress/flate.
pub trait FastEnc: Send {
    /// Go's `Encode(dst *tokens, src []byte)`.
    fn encode(&mut self, dst: &mut Tokens, src: &[u8]);
    /// Go's `Reset()`.
    fn reset(&mut self);
}

/// Go's `tableBits`: bits used in the (small) hash tables.
pub(super) const TABLE_BITS: u8 = 15;
/// Go's `tableSize`.
pub(super) const TABLE_SIZE: usize = 1 << TABLE_BITS;
/// Go's `baseMatchOffset`: the smallest match offset.
pub(super) const BASE_MATCH_OFFSET: i32 = 1;
/// Go's `maxMatchOffset`: the largest match offset.
pub(super) const MAX_MATCH_OFFSET: i32 = 1 << 15;
/// Go's `maxMatchLength` (deflate.go).
pub(super) const MAX_MATCH_LENGTH: i32 = 258;
/// Go's `bTableBits`: bits used in the big tables.
pub(super) const B_TABLE_BITS: u8 = 17;
/// Go's `bTableSize`.
pub(super) const B_TABLE_SIZE: usize = 1 << B_TABLE_BITS;
/// Go's `allocHistory`: history capacity; never grows.
pub(super) const ALLOC_HISTORY: usize = MAX_STORE_BLOCK_SIZE * 5;
/// Go's `bufferReset`: rebase offsets when `cur` reaches this.
pub(super) const BUFFER_RESET: i32 =
    ((1i64 << 31) - ALLOC_HISTORY as i64 - MAX_STORE_BLOCK_SIZE as i64 - 1) as i32;
/// Go's `inputMargin` (identical in every level).
pub(super) const INPUT_MARGIN: i32 = 12 - 1;
/// Go's `minNonLiteralBlockSize` (identical in every level).
pub(super) const MIN_NON_LITERAL_BLOCK_SIZE: usize = 1 + 1 + INPUT_MARGIN as usize;

const PRIME4BYTES: u32 = 2654435761;
const PRIME5BYTES: u64 = 889523592379;
const PRIME7BYTES: u64 = 58295818150454627;

/// Go's `tableEntryPrev`: the two most recent offsets for a hash.
/// Aligned so an entry moves as one 64-bit load or store.
#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
pub(super) struct TableEntryPrev {
    pub(super) cur: i32,
    pub(super) prev: i32,
}

/// Allocates a zeroed fixed-size table on the heap without building it on
/// the stack first (the big tables would overflow it).
pub(super) fn new_table<T: Copy + Default, const N: usize>() -> Box<[T; N]> {
    match vec![T::default(); N].into_boxed_slice().try_into() {
        Ok(b) => b,
        // The vector has exactly N elements, so the conversion cannot fail.
        Err(_) => unreachable!(),
    }
}

/// Go's `load3232`: little-endian u32 at `i` (panics where Go would).
#[inline(always)]
pub(super) fn load3232(b: &[u8], i: i32) -> u32 {
    // Zero-extending makes a negative i huge, so one compare covers both ends.
    let i = i as u32 as usize;
    match b.get(i..i + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => oob(),
    }
}

/// Go's `load6432`: little-endian u64 at `i` (panics where Go would).
#[inline(always)]
pub(super) fn load6432(b: &[u8], i: i32) -> u64 {
    // As in load3232: one unsigned compare.
    let i = i as u32 as usize;
    match b.get(i..i + 8) {
        Some(s) => u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => oob(),
    }
}

/// Starts pulling `x`'s cache line in; the hash tables outgrow L1 and the
/// match search mispredicts often, so a lookup's latency is rarely hidden.
#[inline(always)]
pub(super) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching has no architectural effect and cannot fault; the
    // pointer comes from a reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(x as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

#[cold]
#[inline(never)]
fn oob() -> ! {
    panic!("kpflate: history load out of range")
}

/// Go's `hashLen(u, bits, 4)`. The shift keeps the result below 1<<bits,
/// which lets the compiler drop bounds checks on the tables.
#[inline(always)]
pub(super) fn hash4(u: u64, bits: u8) -> usize {
    ((u as u32).wrapping_mul(PRIME4BYTES) >> (32 - bits as u32)) as usize
}

/// Go's `hashLen(u, bits, 5)`.
#[inline(always)]
pub(super) fn hash5(u: u64, bits: u8) -> usize {
    ((u << (64 - 40)).wrapping_mul(PRIME5BYTES) >> (64 - bits as u32)) as usize
}

/// Go's `hash7(u, bits)`.
#[inline(always)]
pub(super) fn hash7(u: u64, bits: u8) -> usize {
    ((u << (64 - 56)).wrapping_mul(PRIME7BYTES) >> ((64 - bits as u32) & 63)) as usize
}

/// Go's `matchLen`: length of the common prefix of `a` and `b`. Go requires
/// `len(b) >= len(a)`; clamping to the shorter one gives the same answer
/// whenever Go's precondition holds and never panics otherwise.
#[inline(always)]
pub(super) fn match_len(a: &[u8], b: &[u8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut ac = a.chunks_exact(8);
    let mut bc = b.chunks_exact(8);
    let mut checked = 0usize;
    for (x, y) in (&mut ac).zip(&mut bc) {
        let x = u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        let y = u64::from_le_bytes([y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]]);
        let diff = x ^ y;
        if diff != 0 {
            return (checked + (diff.trailing_zeros() >> 3) as usize) as i32;
        }
        checked += 8;
    }
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        if x != y {
            break;
        }
        checked += 1;
    }
    checked as i32
}

/// Go's "Extend backwards" loop: how many bytes before `s` equal those
/// before `t`, going back no further than `next_emit` and position 0.
/// Compares 8 bytes at a time; the loop in Go is a byte at a time.
#[inline(always)]
pub(super) fn extend_back(src: &[u8], s: i32, t: i32, next_emit: i32) -> i32 {
    if t <= 0 || s <= next_emit {
        return 0;
    }
    let max = t.min(s - next_emit) as usize;
    let a = &src[..t as usize];
    let b = &src[..s as usize];
    let mut n = 0usize;
    while n + 8 <= max {
        let x = u64::from_le_bytes(a[a.len() - n - 8..a.len() - n].try_into().unwrap());
        let y = u64::from_le_bytes(b[b.len() - n - 8..b.len() - n].try_into().unwrap());
        let diff = x ^ y;
        if diff != 0 {
            // The highest bytes are the ones nearest to s and t.
            return (n + (diff.leading_zeros() >> 3) as usize) as i32;
        }
        n += 8;
    }
    let rest = a[..a.len() - n]
        .iter()
        .rev()
        .zip(b[..b.len() - n].iter().rev())
        .take(max - n)
        .take_while(|(x, y)| x == y)
        .count();
    (n + rest) as i32
}

/// Go's `(*fastGen).matchlenLong`: match length between `s` and `t < s`.
#[inline(always)]
pub(super) fn matchlen_long(s: i32, t: i32, src: &[u8]) -> i32 {
    match_len(&src[s as usize..], &src[t as usize..])
}

/// Go's `(*fastGen).matchlen`: like [`matchlen_long`], capped at
/// `MAX_MATCH_LENGTH - 4`.
#[inline(always)]
pub(super) fn matchlen(s: i32, t: i32, src: &[u8]) -> i32 {
    let s1 = (s as usize + MAX_MATCH_LENGTH as usize - 4).min(src.len());
    match_len(&src[s as usize..s1], &src[t as usize..])
}

/// Go's `fastGen`: the history window plus the offset base `cur`.
pub(super) struct FastGen {
    /// Go's `hist`: capacity is ALLOC_HISTORY from the start (Go allocates
    /// it on first use; nothing observable depends on when).
    pub(super) hist: Vec<u8>,
    pub(super) cur: i32,
}

impl FastGen {
    pub(super) fn new(cur: i32) -> Self {
        FastGen {
            hist: Vec::with_capacity(ALLOC_HISTORY),
            cur,
        }
    }

    /// Go's `(*fastGen).addBlock`: appends `src` to the history, sliding the
    /// last MAX_MATCH_OFFSET bytes down when full; returns where `src` starts.
    /// Callers guarantee `src.len() <= MAX_STORE_BLOCK_SIZE`, so the vector
    /// never grows past ALLOC_HISTORY (and never reallocates).
    #[inline]
    pub(super) fn add_block(&mut self, src: &[u8]) -> i32 {
        if self.hist.len() + src.len() > ALLOC_HISTORY {
            let offset = self.hist.len() - MAX_MATCH_OFFSET as usize;
            self.hist.copy_within(offset.., 0);
            self.cur += offset as i32;
            self.hist.truncate(MAX_MATCH_OFFSET as usize);
        }
        let s = self.hist.len() as i32;
        self.hist.extend_from_slice(src);
        s
    }

    /// Go's `(*fastGen).Reset`. The hash tables are NOT cleared: pushing
    /// `cur` past the old history puts every old entry out of reach.
    pub(super) fn reset(&mut self) {
        if self.cur <= BUFFER_RESET {
            self.cur += MAX_MATCH_OFFSET + self.hist.len() as i32;
        }
        self.hist.clear();
    }

    /// The shared prologue of every level's `Encode`: `None` means "done",
    /// with `dst` already handled the way Go handles it.
    ///
    /// Blocks larger than MAX_STORE_BLOCK_SIZE are outside Go's contract
    /// (Go would overflow its token array); they are refused without
    /// touching `dst` (so the caller stores them) and the history dropped.
    #[inline(always)]
    pub(super) fn begin(&mut self, dst: &mut Tokens, src: &[u8]) -> Option<i32> {
        if src.len() > MAX_STORE_BLOCK_SIZE {
            self.reset();
            return None;
        }
        let s = self.add_block(src);
        if src.len() < MIN_NON_LITERAL_BLOCK_SIZE {
            // Go: "We do not fill the token table. This will be picked up
            // by caller." (n without tokens; the caller stores the block).
            dst.n = src.len() as u16;
            return None;
        }
        Some(s)
    }
}

/// Go's rebasing loop for a table of plain offsets: entries that are out of
/// reach become 0, the rest are moved relative to a `cur` of MAX_MATCH_OFFSET.
pub(super) fn rebase_table(table: &mut [i32], cur: i32, min_off: i32) {
    for v in table.iter_mut() {
        *v = if *v <= min_off {
            0
        } else {
            *v - cur + MAX_MATCH_OFFSET
        };
    }
}

/// Go's `tokens.tokens` viewed as its fixed Go array type: indexing with a
/// u16 then needs no bounds check. `None` only if the buffer has an
/// unexpected length, in which case the slower safe paths are used.
#[inline(always)]
fn token_array(dst: &mut Tokens) -> Option<&mut [Token; MAX_STORE_BLOCK_SIZE + 1]> {
    (&mut *dst.tokens).try_into().ok()
}

/// Go's `emitLiteral` (and the inlined copies of it in each level).
#[inline(always)]
pub(super) fn emit_lits(dst: &mut Tokens, lits: &[u8]) {
    let mut n = dst.n;
    let hist = &mut dst.lit_hist;
    // Counters wrap like Go's uint16; that cannot happen within contract.
    match <&mut [Token; MAX_STORE_BLOCK_SIZE + 1]>::try_from(&mut *dst.tokens) {
        Ok(toks) => {
            for &v in lits {
                toks[n as usize] = v as Token;
                hist[v as usize] = hist[v as usize].wrapping_add(1);
                n = n.wrapping_add(1);
            }
        }
        Err(_) => {
            for &v in lits {
                if let Some(t) = dst.tokens.get_mut(n as usize) {
                    *t = v as Token;
                }
                hist[v as usize] = hist[v as usize].wrapping_add(1);
                n = n.wrapping_add(1);
            }
        }
    }
    dst.n = n;
}

/// Go's `(*tokens).AddMatchLong` (also the copy inlined in level 1): `l` is
/// the full length, split into pieces of at most 258 leaving at least 3.
#[inline(always)]
pub(super) fn add_match_long(dst: &mut Tokens, mut xlength: i32, xoffset: u32) {
    let oc = offset_code(xoffset);
    let xoffset = xoffset | (oc << 16);
    let mut n = dst.n;
    while xlength > 0 {
        let mut xl = xlength;
        if xl > 258 {
            xl = if xl > 258 + 3 { 258 } else { 258 - 3 };
        }
        xlength -= xl;
        xl -= 3;
        let lc = LENGTH_CODES1[xl as u8 as usize] as usize;
        dst.extra_hist[lc] = dst.extra_hist[lc].wrapping_add(1);
        let oh = (oc & 31) as usize;
        dst.off_hist[oh] = dst.off_hist[oh].wrapping_add(1);
        let tok = MATCH_TYPE | ((xl as u32) << LENGTH_SHIFT) | xoffset;
        match token_array(dst) {
            Some(t) => t[n as usize] = tok,
            None => {
                if let Some(t) = dst.tokens.get_mut(n as usize) {
                    *t = tok;
                }
            }
        }
        n = n.wrapping_add(1);
    }
    dst.n = n;
}

/// Go's `emitRemainder:` block shared by all levels.
#[inline(always)]
pub(super) fn emit_remainder(dst: &mut Tokens, src: &[u8], next_emit: i32) {
    if (next_emit as usize) < src.len() {
        // If nothing was added, don't encode literals.
        if dst.n == 0 {
            return;
        }
        emit_lits(dst, &src[next_emit as usize..]);
    }
}

/// Test hook: the histograms of `t` (literal, length-code, offset-code), so
/// integration tests can compare them with Go's.
#[doc(hidden)]
pub fn token_hists(t: &Tokens) -> (&[u16; 256], &[u16; 32], &[u16; 32]) {
    (&t.lit_hist, &t.extra_hist, &t.off_hist)
}
