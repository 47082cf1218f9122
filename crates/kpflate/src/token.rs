//! Token buffer and code tables; mirrors klauspost/compress/flate token.go.

/// A literal or match, packed as in Go's `token`:
/// bits 0-16 xoffset (or literal), 16-22 offset code, 22-30 xlength,
/// 30-32 type (0 literal, 1 match).
pub type Token = u32;

pub const MAX_STORE_BLOCK_SIZE: usize = 65535;

pub const LENGTH_SHIFT: u32 = 22;
pub const OFFSET_MASK: u32 = (1 << LENGTH_SHIFT) - 1;
pub const TYPE_MASK: u32 = 3 << 30;
pub const LITERAL_TYPE: u32 = 0;
pub const MATCH_TYPE: u32 = 1 << 30;
pub const MATCH_OFFSET_ONLY_MASK: u32 = 0xffff;

/// Go's `literalCount` (huffman_code.go): number of literal/length codes.
pub const LITERAL_COUNT: usize = 286;
/// Go's `offsetCodeCount` (huffman_bit_writer.go).
pub const OFFSET_CODE_COUNT: usize = 30;
/// Go's `endBlockMarker`.
pub const END_BLOCK_MARKER: u32 = 256;

// Go's baseMatchLength (fast_encoder.go); kept private here so this file
// does not depend on the level encoders.
const BASE_MATCH_LENGTH: i32 = 3;

/// Extra bits per length code (Go's `lengthExtraBits`, huffman_bit_writer.go).
pub const LENGTH_EXTRA_BITS: [u8; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0, 0, 0, 0,
];

/// Extra bits per offset code (Go's `offsetExtraBits`).
pub const OFFSET_EXTRA_BITS: [i8; 32] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13, 14, 14,
];

/// Go's `lengthCodes`: code for length X is LENGTH_CODES[X - 3].
pub const LENGTH_CODES: [u8; 256] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14,
    14, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17, 17, 17, 17, 18, 18, 18,
    18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 22, 22, 22,
    22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 23, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24,
    24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25,
    25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 26, 26, 26,
    26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26,
    26, 26, 26, 26, 26, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27,
    27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 28,
];

/// Go's `lengthCodes1`: LENGTH_CODES plus one.
pub const LENGTH_CODES1: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = LENGTH_CODES[i] + 1;
        i += 1;
    }
    t
};

/// Go's `offsetCodes`.
pub const OFFSET_CODES: [u32; 256] = [
    0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9,
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15, 15, 15,
];

/// Go's `offsetCodes14`: OFFSET_CODES plus 14.
pub const OFFSET_CODES14: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = OFFSET_CODES[i] + 14;
        i += 1;
    }
    t
};

/// Go's `tokens`: one block's worth of tokens plus the symbol histograms
/// the bit writer and the block-size heuristics use.
pub struct Tokens {
    /// Length codes (index 0 is EOB, i.e. symbol 256 + i).
    pub(crate) extra_hist: [u16; 32],
    pub(crate) off_hist: [u16; 32],
    pub(crate) lit_hist: [u16; 256],
    pub(crate) n_filled: usize,
    /// u16 like Go: must hold MAX_STORE_BLOCK_SIZE.
    pub(crate) n: u16,
    pub(crate) tokens: Box<[Token]>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokens {
    pub fn new() -> Self {
        Tokens {
            extra_hist: [0; 32],
            off_hist: [0; 32],
            lit_hist: [0; 256],
            n_filled: 0,
            n: 0,
            tokens: vec![0; MAX_STORE_BLOCK_SIZE + 1].into_boxed_slice(),
        }
    }

    /// Go's `(*tokens).Reset`. Note the early return: n_filled and the
    /// histograms are only cleared when tokens were added (as in Go).
    pub fn reset(&mut self) {
        if self.n == 0 {
            return;
        }
        self.n = 0;
        self.n_filled = 0;
        self.lit_hist = [0; 256];
        self.extra_hist = [0; 32];
        self.off_hist = [0; 32];
    }

    /// Go's `(*tokens).Fill`: give every symbol a nonzero count so a
    /// generated table can encode anything (for table reuse).
    pub fn fill(&mut self) {
        if self.n == 0 {
            return;
        }
        for v in self.lit_hist.iter_mut() {
            if *v == 0 {
                *v = 1;
                self.n_filled += 1;
            }
        }
        for v in self.extra_hist[..LITERAL_COUNT - 256].iter_mut() {
            if *v == 0 {
                self.n_filled += 1;
                *v = 1;
            }
        }
        for v in self.off_hist[..OFFSET_CODE_COUNT].iter_mut() {
            if *v == 0 {
                *v = 1;
            }
        }
    }

    /// Go's `(*tokens).AddLiteral`.
    #[inline(always)]
    pub fn add_literal(&mut self, lit: u8) {
        self.tokens[self.n as usize] = lit as Token;
        self.lit_hist[lit as usize] += 1;
        self.n += 1;
    }

    /// Go's `(*tokens).EstimatedBits`: Shannon estimate of an optimal
    /// encoding, computed in f32 with the same operation order as Go.
    pub fn estimated_bits(&self) -> i32 {
        let mut shannon: f32 = 0.0;
        let mut bits: i32 = 0;
        let mut n_matches: i32 = 0;
        let total = self.n as usize + self.n_filled;
        if total > 0 {
            let inv_total = 1.0f32 / total as f32;
            for &v in self.lit_hist.iter() {
                if v > 0 {
                    let n = v as f32;
                    shannon += at_least_one(-m_fast_log2(n * inv_total)) * n;
                }
            }
            // Just add 15 for EOB
            shannon += 15.0;
            for (i, &v) in self.extra_hist[1..LITERAL_COUNT - 256].iter().enumerate() {
                if v > 0 {
                    let n = v as f32;
                    shannon += at_least_one(-m_fast_log2(n * inv_total)) * n;
                    // Go indexes with i (0-based into the subslice), kept as is.
                    bits += LENGTH_EXTRA_BITS[i & 31] as i32 * v as i32;
                    n_matches += v as i32;
                }
            }
        }
        if n_matches > 0 {
            let inv_total = 1.0f32 / n_matches as f32;
            for (i, &v) in self.off_hist[..OFFSET_CODE_COUNT].iter().enumerate() {
                if v > 0 {
                    let n = v as f32;
                    shannon += at_least_one(-m_fast_log2(n * inv_total)) * n;
                    bits += OFFSET_EXTRA_BITS[i & 31] as i32 * v as i32;
                }
            }
        }
        // Go's int(float32) truncates toward zero; shannon is never negative.
        shannon as i32 + bits
    }

    /// Go's `(*tokens).AddMatch`. xlength has the base (3) subtracted,
    /// xoffset the base (1).
    #[inline(always)]
    pub fn add_match(&mut self, xlength: u32, xoffset: u32) {
        let o_code = offset_code(xoffset);
        let xoffset = xoffset | (o_code << 16);
        self.extra_hist[LENGTH_CODES1[xlength as u8 as usize] as usize] += 1;
        self.off_hist[(o_code & 31) as usize] += 1;
        self.tokens[self.n as usize] = MATCH_TYPE | (xlength << LENGTH_SHIFT) | xoffset;
        self.n += 1;
    }

    /// Go's `(*tokens).AddMatchLong`: length may exceed 258 and is split;
    /// length WITHOUT base subtracted, offset with.
    #[inline]
    pub fn add_match_long(&mut self, mut xlength: i32, xoffset: u32) {
        let oc = offset_code(xoffset);
        let xoffset = xoffset | (oc << 16);
        while xlength > 0 {
            let mut xl = xlength;
            if xl > 258 {
                // Leave at least BASE_MATCH_LENGTH for the next round.
                if xl > 258 + BASE_MATCH_LENGTH {
                    xl = 258;
                } else {
                    xl = 258 - BASE_MATCH_LENGTH;
                }
            }
            xlength -= xl;
            xl -= BASE_MATCH_LENGTH;
            self.extra_hist[LENGTH_CODES1[xl as u8 as usize] as usize] += 1;
            self.off_hist[(oc & 31) as usize] += 1;
            self.tokens[self.n as usize] = MATCH_TYPE | ((xl as u32) << LENGTH_SHIFT) | xoffset;
            self.n += 1;
        }
    }

    /// Go's `(*tokens).AddEOB`.
    pub fn add_eob(&mut self) {
        self.tokens[self.n as usize] = END_BLOCK_MARKER;
        self.extra_hist[0] += 1;
        self.n += 1;
    }

    /// Go's `(*tokens).Slice`.
    #[inline]
    pub fn slice(&self) -> &[Token] {
        &self.tokens[..self.n as usize]
    }
}

/// Go's `emitLiteral`.
#[inline]
pub fn emit_literal(dst: &mut Tokens, lit: &[u8]) {
    for &v in lit {
        dst.tokens[dst.n as usize] = v as Token;
        dst.lit_hist[v as usize] += 1;
        dst.n += 1;
    }
}

/// Go's `atLeastOne` (huffman_code.go): clamp to [1, 15].
#[inline]
pub fn at_least_one(v: f32) -> f32 {
    if v < 1.0 {
        return 1.0;
    }
    if v > 15.0 {
        return 15.0;
    }
    v
}

/// Go's `mFastLog2`: approximate log2 via the float's exponent and a
/// quadratic on the mantissa; must match Go's f32 rounding step by step.
#[inline]
pub fn m_fast_log2(val: f32) -> f32 {
    let mut ux = val.to_bits() as i32;
    let mut log2 = (((ux >> 23) & 255) - 128) as f32;
    ux &= -0x7f800001;
    ux = ux.wrapping_add(127 << 23);
    let uval = f32::from_bits(ux as u32);
    // Go's decimal constants verbatim; both languages round them straight
    // to the nearest f32.
    #[allow(clippy::excessive_precision)]
    {
        log2 += ((-0.34484843f32) * uval + 2.02466578f32) * uval - 0.67487759f32;
    }
    log2
}

/// Token accessors (Go's `token.typ`, `literal`, `offset`, `length`).
#[inline(always)]
pub fn token_typ(t: Token) -> u32 {
    t & TYPE_MASK
}
#[inline(always)]
pub fn token_literal(t: Token) -> u8 {
    t as u8
}
#[inline(always)]
pub fn token_offset(t: Token) -> u32 {
    t & OFFSET_MASK
}
#[inline(always)]
pub fn token_length(t: Token) -> u8 {
    (t >> LENGTH_SHIFT) as u8
}

/// Go's `lengthCode`.
#[inline(always)]
pub fn length_code(len: u8) -> u8 {
    LENGTH_CODES[len as usize]
}

/// Go's `offsetCode`: offset code for an offset with base subtracted.
#[inline(always)]
pub fn offset_code(off: u32) -> u32 {
    if off < OFFSET_CODES.len() as u32 {
        return OFFSET_CODES[off as u8 as usize];
    }
    OFFSET_CODES14[(off >> 7) as u8 as usize]
}
