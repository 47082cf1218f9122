//! LZ77 tokens, mirroring Go's compress/flate token.go.

/// A literal (< `MATCH_TYPE`) or a match: bits 22..30 hold length-3 and
/// bits 0..22 offset-1, exactly as Go packs them.
pub(super) type Token = u32;

const LENGTH_SHIFT: u32 = 22;
const OFFSET_MASK: u32 = (1 << LENGTH_SHIFT) - 1;
pub(super) const MATCH_TYPE: u32 = 1 << 30;

/// Length code for (length - 3), Go's `lengthCodes`. Stored as u8 and sized
/// 256 so `x as u8 as usize` indexing needs no bounds check.
static LENGTH_CODES: [u8; 256] = [
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

/// Offset code for small offsets, Go's `offsetCodes` (built, not typed:
/// code c >= 2 covers 2^(c/2-1) offsets).
static OFFSET_CODES: [u8; 256] = offset_codes();

const fn offset_codes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        // Highest set bit of i; offsets 0..3 map to themselves.
        t[i] = if i < 4 {
            i as u8
        } else {
            let hb = 31 - (i as u32).leading_zeros();
            (2 * hb + ((i as u32 >> (hb - 1)) & 1)) as u8
        };
        i += 1;
    }
    t
}

/// Go `literalToken`.
#[inline(always)]
pub(super) fn literal_token(lit: u8) -> Token {
    lit as Token
}

/// Go `matchToken`: `xlength` = length-3, `xoffset` = offset-1.
#[inline(always)]
pub(super) fn match_token(xlength: u32, xoffset: u32) -> Token {
    MATCH_TYPE + (xlength << LENGTH_SHIFT) + xoffset
}

/// Go `token.length` (length - 3).
#[inline(always)]
pub(super) fn token_length(t: Token) -> u32 {
    (t - MATCH_TYPE) >> LENGTH_SHIFT
}

/// Go `token.offset` (offset - 1).
#[inline(always)]
pub(super) fn token_offset(t: Token) -> u32 {
    t & OFFSET_MASK
}

/// Go `lengthCode`; `xlength` is at most 255.
#[inline(always)]
pub(super) fn length_code(xlength: u32) -> u32 {
    LENGTH_CODES[xlength as u8 as usize] as u32
}

/// Go `offsetCode`; `xoffset` is below 1<<15.
#[inline(always)]
pub(super) fn offset_code(xoffset: u32) -> u32 {
    if xoffset < 256 {
        OFFSET_CODES[xoffset as usize] as u32
    } else if xoffset >> 7 < 256 {
        OFFSET_CODES[(xoffset >> 7) as usize] as u32 + 14
    } else {
        OFFSET_CODES[(xoffset >> 14) as u8 as usize] as u32 + 28
    }
}
