//! Block writer, mirroring Go's compress/flate huffman_bit_writer.go.
//!
//! Go buffers whole 6-byte groups in a 248-byte array before handing them to
//! its io.Writer; that only changes when bytes become visible, not which
//! bytes are produced, so here completed bytes go straight to `out`.

use super::huffman_code::{
    bit_length, fixed_literal_codes, fixed_offset_codes, huff_offset_codes, HCode, HuffmanEncoder,
    MAX_NUM_LIT,
};
use super::token::{length_code, offset_code, token_length, token_offset, Token, MATCH_TYPE};

pub(super) const OFFSET_CODE_COUNT: usize = 30;
const END_BLOCK_MARKER: usize = 256;
const LENGTH_CODES_START: usize = 257;
const CODEGEN_CODE_COUNT: usize = 19;
const BAD_CODE: u8 = 255;
pub(super) const MAX_STORE_BLOCK_SIZE: usize = 65535;

/// Extra bits per length code (Go `lengthExtraBits`).
static LENGTH_EXTRA_BITS: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

/// Base (length-3) per length code (Go `lengthBase`).
static LENGTH_BASE: [u32; 29] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
    160, 192, 224, 255,
];

/// Extra bits per offset code (Go `offsetExtraBits`).
static OFFSET_EXTRA_BITS: [u8; 32] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13, 0, 0,
];

/// Base (offset-1) per offset code (Go `offsetBase`).
static OFFSET_BASE: [u32; 32] = [
    0x000000, 0x000001, 0x000002, 0x000003, 0x000004, 0x000006, 0x000008, 0x00000c, 0x000010,
    0x000018, 0x000020, 0x000030, 0x000040, 0x000060, 0x000080, 0x0000c0, 0x000100, 0x000180,
    0x000200, 0x000300, 0x000400, 0x000600, 0x000800, 0x000c00, 0x001000, 0x001800, 0x002000,
    0x003000, 0x004000, 0x006000, 0, 0,
];

/// The order codegen code lengths are written in (Go `codegenOrder`).
static CODEGEN_ORDER: [usize; CODEGEN_CODE_COUNT] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

static FIXED_LITERAL: [HCode; MAX_NUM_LIT] = fixed_literal_codes();
static FIXED_OFFSET: [HCode; OFFSET_CODE_COUNT] = fixed_offset_codes();
static HUFF_OFFSET: [HCode; OFFSET_CODE_COUNT] = huff_offset_codes();

/// The bit accumulator and output buffer (Go's bits/nbits/bytes fields).
/// Holds fewer than 48 pending bits between calls.
pub(super) struct BitSink {
    /// Output; swapped in from the caller's Vec for the duration of a call.
    pub(super) out: Vec<u8>,
    bits: u64,
    nbits: u32,
}

impl BitSink {
    /// Go `writeBits` / `writeCode`: `nb` <= 16 so `nbits` stays < 64.
    #[inline(always)]
    fn write_bits(&mut self, b: u32, nb: u32) {
        self.bits |= (b as u64) << self.nbits;
        self.nbits += nb;
        if self.nbits >= 48 {
            self.out.extend_from_slice(&self.bits.to_le_bytes()[..6]);
            self.bits >>= 48;
            self.nbits -= 48;
        }
    }

    #[inline(always)]
    fn write_code(&mut self, c: HCode) {
        self.write_bits(c.code as u32, c.len as u32);
    }

    /// Go `huffmanBitWriter.flush`: pad to a byte boundary and emit.
    pub(super) fn flush(&mut self) {
        while self.nbits != 0 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits = self.nbits.saturating_sub(8);
        }
        self.bits = 0;
    }

    /// Go `writeBytes`: only called byte-aligned (after a stored header).
    fn write_bytes(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.nbits & 7, 0);
        self.flush();
        self.out.extend_from_slice(bytes);
    }

    /// Go `writeTokens` followed by the end-of-block code (Go appends the
    /// marker token to the slice instead).
    fn write_tokens(
        &mut self,
        tokens: &[Token],
        le: &[HCode; MAX_NUM_LIT],
        oe: &[HCode; OFFSET_CODE_COUNT],
    ) {
        // Worst case 6 bytes per token; reserving once keeps the Vec growth
        // check out of the common path.
        self.out.reserve(tokens.len() * 6 + 8);
        for &t in tokens {
            if t < MATCH_TYPE {
                self.write_code(le[t as u8 as usize]);
                continue;
            }
            let length = token_length(t);
            let lc = length_code(length) as usize % 29;
            self.write_code(le[lc + LENGTH_CODES_START]);
            let extra = LENGTH_EXTRA_BITS[lc] as u32;
            if extra > 0 {
                self.write_bits(length - LENGTH_BASE[lc], extra);
            }
            let offset = token_offset(t);
            let oc = offset_code(offset) as usize & 31;
            self.write_code(oe[oc % OFFSET_CODE_COUNT]);
            let extra = OFFSET_EXTRA_BITS[oc] as u32;
            if extra > 0 {
                self.write_bits(offset - OFFSET_BASE[oc], extra);
            }
        }
        self.write_code(le[END_BLOCK_MARKER]);
    }

    /// Go `writeStoredHeader`.
    pub(super) fn write_stored_header(&mut self, length: usize, is_eof: bool) {
        self.write_bits(is_eof as u32, 3);
        self.flush();
        self.write_bits(length as u16 as u32, 16);
        self.write_bits(!(length as u16) as u32, 16);
    }

    /// Go `compressor.writeStoredBlock` (non-final stored block).
    pub(super) fn write_stored_block(&mut self, buf: &[u8]) {
        self.write_stored_header(buf.len(), false);
        self.write_bytes(buf);
    }
}

/// Go `huffmanBitWriter`.
pub(super) struct HuffmanBitWriter {
    pub(super) sink: BitSink,
    codegen_freq: [i32; CODEGEN_CODE_COUNT],
    literal_freq: [i32; MAX_NUM_LIT],
    offset_freq: [i32; OFFSET_CODE_COUNT],
    codegen: [u8; MAX_NUM_LIT + OFFSET_CODE_COUNT + 1],
    literal_encoding: HuffmanEncoder<MAX_NUM_LIT>,
    offset_encoding: HuffmanEncoder<OFFSET_CODE_COUNT>,
    codegen_encoding: HuffmanEncoder<CODEGEN_CODE_COUNT>,
}

/// Which literal/offset tables a Huffman block uses.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Tables {
    Fixed,
    Dynamic,
}

impl HuffmanBitWriter {
    /// Go `newHuffmanBitWriter`.
    pub(super) fn new() -> Box<Self> {
        Box::new(HuffmanBitWriter {
            sink: BitSink {
                out: Vec::new(),
                bits: 0,
                nbits: 0,
            },
            codegen_freq: [0; CODEGEN_CODE_COUNT],
            literal_freq: [0; MAX_NUM_LIT],
            offset_freq: [0; OFFSET_CODE_COUNT],
            codegen: [0; MAX_NUM_LIT + OFFSET_CODE_COUNT + 1],
            literal_encoding: HuffmanEncoder::new(),
            offset_encoding: HuffmanEncoder::new(),
            codegen_encoding: HuffmanEncoder::new(),
        })
    }

    /// Go `huffmanBitWriter.reset`.
    pub(super) fn reset(&mut self) {
        self.sink.bits = 0;
        self.sink.nbits = 0;
    }

    /// Go `generateCodegen`: run-length encode the concatenated literal and
    /// offset code lengths (RFC 1951 3.2.7) into `codegen`, ending with
    /// `BAD_CODE`, and count codegen symbol frequencies.
    fn generate_codegen(
        &mut self,
        num_literals: usize,
        num_offsets: usize,
        lit: &[HCode],
        off: &[HCode],
    ) {
        self.codegen_freq = [0; CODEGEN_CODE_COUNT];
        let codegen = &mut self.codegen;
        let freq = &mut self.codegen_freq;
        // codegen doubles as input copy and output: output never overtakes
        // the input read so far.
        for (d, c) in codegen[..num_literals].iter_mut().zip(lit) {
            *d = c.len as u8;
        }
        for (d, c) in codegen[num_literals..num_literals + num_offsets]
            .iter_mut()
            .zip(off)
        {
            *d = c.len as u8;
        }
        codegen[num_literals + num_offsets] = BAD_CODE;

        let mut size = codegen[0];
        let mut count: i32 = 1;
        let mut out_index = 0;
        let mut in_index = 1;
        while size != BAD_CODE {
            // Invariant: `count` copies of `size` not yet output.
            let next_size = codegen[in_index];
            in_index += 1;
            if next_size == size {
                count += 1;
                continue;
            }
            if size != 0 {
                codegen[out_index] = size;
                out_index += 1;
                freq[size as usize] += 1;
                count -= 1;
                while count >= 3 {
                    let n = count.min(6);
                    codegen[out_index] = 16;
                    codegen[out_index + 1] = (n - 3) as u8;
                    out_index += 2;
                    freq[16] += 1;
                    count -= n;
                }
            } else {
                while count >= 11 {
                    let n = count.min(138);
                    codegen[out_index] = 18;
                    codegen[out_index + 1] = (n - 11) as u8;
                    out_index += 2;
                    freq[18] += 1;
                    count -= n;
                }
                if count >= 3 {
                    codegen[out_index] = 17;
                    codegen[out_index + 1] = (count - 3) as u8;
                    out_index += 2;
                    freq[17] += 1;
                    count = 0;
                }
            }
            while count > 0 {
                codegen[out_index] = size;
                out_index += 1;
                freq[size as usize] += 1;
                count -= 1;
            }
            size = next_size;
            count = 1;
        }
        codegen[out_index] = BAD_CODE;
    }

    /// Go `dynamicSize`: bits for a dynamic block, and the number of codegen
    /// lengths to transmit.
    fn dynamic_size(&self, lit: &[HCode], off: &[HCode], extra_bits: usize) -> (usize, usize) {
        let mut num_codegens = CODEGEN_CODE_COUNT;
        while num_codegens > 4 && self.codegen_freq[CODEGEN_ORDER[num_codegens - 1]] == 0 {
            num_codegens -= 1;
        }
        let header = 3
            + 5
            + 5
            + 4
            + 3 * num_codegens
            + bit_length(&self.codegen_encoding.codes, &self.codegen_freq)
            + self.codegen_freq[16] as usize * 2
            + self.codegen_freq[17] as usize * 3
            + self.codegen_freq[18] as usize * 7;
        let size = header
            + bit_length(lit, &self.literal_freq)
            + bit_length(off, &self.offset_freq)
            + extra_bits;
        (size, num_codegens)
    }

    /// Go `fixedSize`.
    fn fixed_size(&self, extra_bits: usize) -> usize {
        3 + bit_length(&FIXED_LITERAL, &self.literal_freq)
            + bit_length(&FIXED_OFFSET, &self.offset_freq)
            + extra_bits
    }

    /// Go `writeDynamicHeader`.
    fn write_dynamic_header(
        &mut self,
        num_literals: usize,
        num_offsets: usize,
        num_codegens: usize,
        is_eof: bool,
    ) {
        let s = &mut self.sink;
        s.write_bits(if is_eof { 5 } else { 4 }, 3);
        s.write_bits((num_literals - 257) as u32, 5);
        s.write_bits((num_offsets - 1) as u32, 5);
        s.write_bits((num_codegens - 4) as u32, 4);
        let cg = &self.codegen_encoding.codes;
        for &o in &CODEGEN_ORDER[..num_codegens] {
            s.write_bits(cg[o].len as u32, 3);
        }
        let mut i = 0;
        loop {
            let code_word = self.codegen[i];
            i += 1;
            if code_word == BAD_CODE {
                break;
            }
            s.write_code(cg[code_word as usize % CODEGEN_CODE_COUNT]);
            let extra = match code_word {
                16 => 2,
                17 => 3,
                18 => 7,
                _ => continue,
            };
            s.write_bits(self.codegen[i] as u32, extra);
            i += 1;
        }
    }

    /// Go `writeFixedHeader`.
    fn write_fixed_header(&mut self, is_eof: bool) {
        self.sink.write_bits(if is_eof { 3 } else { 2 }, 3);
    }

    /// Go `indexTokens` (with the end-of-block marker counted): histograms,
    /// both dynamic codes, and the used literal/offset alphabet sizes.
    fn index_tokens(&mut self, tokens: &[Token]) -> (usize, usize) {
        self.literal_freq = [0; MAX_NUM_LIT];
        self.offset_freq = [0; OFFSET_CODE_COUNT];
        for &t in tokens {
            if t < MATCH_TYPE {
                self.literal_freq[t as u8 as usize] += 1;
                continue;
            }
            let lc = length_code(token_length(t)) as usize;
            self.literal_freq[(LENGTH_CODES_START + lc) % MAX_NUM_LIT] += 1;
            self.offset_freq[offset_code(token_offset(t)) as usize % OFFSET_CODE_COUNT] += 1;
        }
        self.literal_freq[END_BLOCK_MARKER] += 1;

        // The end-of-block marker guarantees a non-zero entry.
        let mut num_literals = MAX_NUM_LIT;
        while self.literal_freq[num_literals - 1] == 0 {
            num_literals -= 1;
        }
        let mut num_offsets = OFFSET_CODE_COUNT;
        while num_offsets > 0 && self.offset_freq[num_offsets - 1] == 0 {
            num_offsets -= 1;
        }
        if num_offsets == 0 {
            // No matches: count one offset so the offset tree can be encoded.
            self.offset_freq[0] = 1;
            num_offsets = 1;
        }
        self.literal_encoding.generate(&self.literal_freq, 15);
        self.offset_encoding.generate(&self.offset_freq, 15);
        (num_literals, num_offsets)
    }

    /// Go `storedSize`: `None` input (Go nil) is never storable.
    fn stored_size(input: Option<&[u8]>) -> Option<usize> {
        match input {
            Some(b) if b.len() <= MAX_STORE_BLOCK_SIZE => Some((b.len() + 5) * 8),
            _ => None,
        }
    }

    /// Go `writeBlock`: the smallest of fixed, dynamic and (if `input` is
    /// given) stored encodings.
    pub(super) fn write_block(&mut self, tokens: &[Token], eof: bool, input: Option<&[u8]>) {
        let (num_literals, num_offsets) = self.index_tokens(tokens);
        let stored = Self::stored_size(input);
        let mut extra_bits = 0usize;
        if stored.is_some() {
            // Extra length/offset bits are the same for fixed and dynamic, so
            // they are only needed to compare against stored.
            for lc in LENGTH_CODES_START + 8..num_literals {
                extra_bits += self.literal_freq[lc] as usize
                    * LENGTH_EXTRA_BITS[lc - LENGTH_CODES_START] as usize;
            }
            // (num_offsets may be below 4: then nothing is added.)
            let offs = self.offset_freq.iter().zip(&OFFSET_EXTRA_BITS);
            for (f, &eb) in offs.take(num_offsets).skip(4) {
                extra_bits += *f as usize * eb as usize;
            }
        }
        let mut size = self.fixed_size(extra_bits);
        let mut tables = Tables::Fixed;

        // Always computed: Go builds the codegen even when fixed wins.
        let lit = self.literal_encoding.codes;
        let off = self.offset_encoding.codes;
        self.generate_codegen(num_literals, num_offsets, &lit, &off);
        self.codegen_encoding.generate(&self.codegen_freq, 7);
        let (dynamic_size, num_codegens) = self.dynamic_size(&lit, &off, extra_bits);
        if dynamic_size < size {
            size = dynamic_size;
            tables = Tables::Dynamic;
        }

        if let (Some(ss), Some(buf)) = (stored, input) {
            if ss < size {
                self.sink.write_stored_header(buf.len(), eof);
                self.sink.write_bytes(buf);
                return;
            }
        }

        if tables == Tables::Fixed {
            self.write_fixed_header(eof);
            self.sink
                .write_tokens(tokens, &FIXED_LITERAL, &FIXED_OFFSET);
        } else {
            self.write_dynamic_header(num_literals, num_offsets, num_codegens, eof);
            self.sink.write_tokens(
                tokens,
                &self.literal_encoding.codes,
                &self.offset_encoding.codes,
            );
        }
    }

    /// Go `writeBlockDynamic`: dynamic Huffman, or stored if that saves
    /// less than 1/16.
    pub(super) fn write_block_dynamic(&mut self, tokens: &[Token], eof: bool, input: &[u8]) {
        let (num_literals, num_offsets) = self.index_tokens(tokens);
        let lit = self.literal_encoding.codes;
        let off = self.offset_encoding.codes;
        self.generate_codegen(num_literals, num_offsets, &lit, &off);
        self.codegen_encoding.generate(&self.codegen_freq, 7);
        let (size, num_codegens) = self.dynamic_size(&lit, &off, 0);

        if let Some(ss) = Self::stored_size(Some(input)) {
            if ss < size + (size >> 4) {
                self.sink.write_stored_header(input.len(), eof);
                self.sink.write_bytes(input);
                return;
            }
        }
        self.write_dynamic_header(num_literals, num_offsets, num_codegens, eof);
        self.sink.write_tokens(
            tokens,
            &self.literal_encoding.codes,
            &self.offset_encoding.codes,
        );
    }

    /// Go `writeBlockHuff`: literals only, dynamic Huffman or stored.
    pub(super) fn write_block_huff(&mut self, eof: bool, input: &[u8]) {
        self.literal_freq = [0; MAX_NUM_LIT];
        histogram(input, &mut self.literal_freq);
        self.literal_freq[END_BLOCK_MARKER] = 1;
        const NUM_LITERALS: usize = END_BLOCK_MARKER + 1;
        // Go leaves the other offset counts stale; they are multiplied by
        // zero-length codes in dynamicSize, so only [0] matters.
        self.offset_freq[0] = 1;
        const NUM_OFFSETS: usize = 1;

        self.literal_encoding.generate(&self.literal_freq, 15);
        let lit = self.literal_encoding.codes;
        self.generate_codegen(NUM_LITERALS, NUM_OFFSETS, &lit, &HUFF_OFFSET);
        self.codegen_encoding.generate(&self.codegen_freq, 7);
        let (size, num_codegens) = self.dynamic_size(&lit, &HUFF_OFFSET, 0);

        if let Some(ss) = Self::stored_size(Some(input)) {
            if ss < size + (size >> 4) {
                self.sink.write_stored_header(input.len(), eof);
                self.sink.write_bytes(input);
                return;
            }
        }
        self.write_dynamic_header(NUM_LITERALS, NUM_OFFSETS, num_codegens, eof);
        let enc = &self.literal_encoding.codes;
        let s = &mut self.sink;
        s.out.reserve(input.len() * 2 + 8);
        for &b in input {
            s.write_code(enc[b as usize]);
        }
        s.write_code(enc[END_BLOCK_MARKER]);
    }
}

/// Go `histogram`: byte counts of `b` added to `h`. Four interleaved
/// tables break the store-to-load dependency on runs of one byte.
fn histogram(b: &[u8], h: &mut [i32; MAX_NUM_LIT]) {
    let mut t = [[0i32; 256]; 4];
    let mut chunks = b.chunks_exact(4);
    for c in &mut chunks {
        t[0][c[0] as usize] += 1;
        t[1][c[1] as usize] += 1;
        t[2][c[2] as usize] += 1;
        t[3][c[3] as usize] += 1;
    }
    for &x in chunks.remainder() {
        t[0][x as usize] += 1;
    }
    for i in 0..256 {
        h[i] += t[0][i] + t[1][i] + t[2][i] + t[3][i];
    }
}
