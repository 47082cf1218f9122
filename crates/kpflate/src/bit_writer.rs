//! Block writer; mirrors klauspost/compress/flate huffman_bit_writer.go.
//!
//! Output goes to `out`, a Vec the caller lends for the duration of a
//! Writer call (see deflate.rs); Go's io.Writer errors cannot occur, so the
//! sticky `err` field is gone. Go's `writeBlock` (and `writeBlockSkip` in
//! deflate.go) have no callers in the compressor and are not ported.

use super::huffman_code::{
    bit_length, hcode_code64, hcode_len, Hcode, HuffmanEncoder, FIXED_LITERAL_CODES,
    FIXED_OFFSET_CODES, HUFF_OFFSET_CODES,
};
use super::token::{
    Token, Tokens, END_BLOCK_MARKER, LENGTH_CODES, LENGTH_EXTRA_BITS, LENGTH_SHIFT, LITERAL_COUNT,
    MATCH_OFFSET_ONLY_MASK, MAX_STORE_BLOCK_SIZE, OFFSET_CODE_COUNT, OFFSET_EXTRA_BITS,
};

/// The special code used to mark the end of a block.
const EOB: usize = END_BLOCK_MARKER as usize;
/// The first length code.
const LENGTH_CODES_START: usize = 257;
/// The number of codegen codes.
const CODEGEN_CODE_COUNT: usize = 19;
const BAD_CODE: u8 = 255;
/// Max tokens for which a fixed-table block is considered.
const MAX_PREDEFINED_TOKENS: u16 = 250;
/// Pending bytes are handed to `out` once this many accumulate.
const BUFFER_FLUSH_SIZE: usize = 246;
/// Headroom for one unconditional 8-byte store past the flush size.
const BUFFER_SIZE: usize = BUFFER_FLUSH_SIZE + 8;
/// Go's maxNumLit / maxNumDist (inflate.go).
const MAX_NUM_LIT: usize = 286;
const MAX_NUM_DIST: usize = 30;

/// Minimum length code that emits extra bits.
const LENGTH_EXTRA_BITS_MIN_CODE: usize = 8;
/// Minimum offset code that emits extra bits.
const OFFSET_EXTRA_BITS_MIN_CODE: usize = 4;

/// Go's `lengthBase`: length (minus 3) at the start of each length code.
const LENGTH_BASE: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
    160, 192, 224, 255, 0, 0, 0,
];

/// Go's `offsetCombined` (built in init): extra bits | base << 8, zero for
/// codes without extra bits and for the extended-window codes.
const OFFSET_COMBINED: [u32; 32] = {
    const OFFSET_BASE: [u32; 32] = [
        0x000000, 0x000001, 0x000002, 0x000003, 0x000004, 0x000006, 0x000008, 0x00000c, 0x000010,
        0x000018, 0x000020, 0x000030, 0x000040, 0x000060, 0x000080, 0x0000c0, 0x000100, 0x000180,
        0x000200, 0x000300, 0x000400, 0x000600, 0x000800, 0x000c00, 0x001000, 0x001800, 0x002000,
        0x003000, 0x004000, 0x006000, 0x008000, 0x00c000,
    ];
    let mut t = [0u32; 32];
    let mut i = 0;
    while i < 32 {
        if !(OFFSET_EXTRA_BITS[i] == 0 || OFFSET_BASE[i] > 0x006000) {
            t[i] = OFFSET_EXTRA_BITS[i] as u32 | (OFFSET_BASE[i] << 8);
        }
        i += 1;
    }
    t
};

/// The odd order in which the codegen code sizes are written.
const CODEGEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Which tables `write_tokens` uses (Go passes the code slices).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tables {
    Fixed,
    Dynamic,
}

/// Go's `huffmanBitWriter`.
pub struct HuffmanBitWriter {
    /// Lent by the caller (see deflate.rs); compressed bytes are appended.
    pub(crate) out: Vec<u8>,
    /// Pending bytes are bytes[..nbytes], then the low nbits of bits.
    bits: u64,
    nbits: u8,
    nbytes: usize,
    last_huff_man: bool,
    literal_encoding: Box<HuffmanEncoder>,
    tmp_lit_encoding: Box<HuffmanEncoder>,
    offset_encoding: Box<HuffmanEncoder>,
    codegen_encoding: Box<HuffmanEncoder>,
    /// Nonzero: a reusable table is active (value = its header bits) and
    /// an EOB is owed.
    last_header: i32,
    /// Penalty shift for estimated new-table sizes.
    pub(crate) log_new_table_penalty: u32,
    bytes: [u8; BUFFER_SIZE],
    literal_freq: [u16; LENGTH_CODES_START + 32],
    offset_freq: [u16; 32],
    codegen_freq: [u16; CODEGEN_CODE_COUNT],
    /// Needs one extra slot for the final marker.
    codegen: [u8; LITERAL_COUNT + OFFSET_CODE_COUNT + 1],
}

impl Default for HuffmanBitWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends `bits`' low bytes at `nbytes` and hands full buffers to `out`;
/// the inlined "writeOutBits" of Go's hot loops.
#[inline(always)]
fn put_bits48(
    bytes: &mut [u8; BUFFER_SIZE],
    out: &mut Vec<u8>,
    bits: &mut u64,
    nbits: &mut u8,
    nbytes: &mut usize,
) {
    // nbytes < BUFFER_FLUSH_SIZE here, so the 8-byte store fits.
    bytes[*nbytes..*nbytes + 8].copy_from_slice(&bits.to_le_bytes());
    *bits >>= 48;
    *nbits -= 48;
    *nbytes += 6;
    if *nbytes >= BUFFER_FLUSH_SIZE {
        out.extend_from_slice(&bytes[..*nbytes]);
        *nbytes = 0;
    }
}

impl HuffmanBitWriter {
    /// Go's `newHuffmanBitWriter`.
    pub fn new() -> Self {
        HuffmanBitWriter {
            out: Vec::new(),
            bits: 0,
            nbits: 0,
            nbytes: 0,
            last_huff_man: false,
            literal_encoding: Box::new(HuffmanEncoder::new(LITERAL_COUNT)),
            tmp_lit_encoding: Box::new(HuffmanEncoder::new(LITERAL_COUNT)),
            offset_encoding: Box::new(HuffmanEncoder::new(OFFSET_CODE_COUNT)),
            codegen_encoding: Box::new(HuffmanEncoder::new(CODEGEN_CODE_COUNT)),
            last_header: 0,
            log_new_table_penalty: 0,
            bytes: [0; BUFFER_SIZE],
            literal_freq: [0; LENGTH_CODES_START + 32],
            offset_freq: [0; 32],
            codegen_freq: [0; CODEGEN_CODE_COUNT],
            codegen: [0; LITERAL_COUNT + OFFSET_CODE_COUNT + 1],
        }
    }

    /// Go's `reset`: the code tables are kept; with last_header == 0 they
    /// are never reused, so they cannot influence later output.
    pub fn reset(&mut self) {
        self.bits = 0;
        self.nbits = 0;
        self.nbytes = 0;
        self.last_header = 0;
        self.last_huff_man = false;
    }

    /// Go's `canReuse`: can the active table encode every symbol of `t`?
    fn can_reuse(&self, t: &Tokens) -> bool {
        let off = &self.offset_encoding.codes;
        for (&v, &c) in t.off_hist[..OFFSET_CODE_COUNT].iter().zip(off.iter()) {
            if v != 0 && c == 0 {
                return false;
            }
        }
        let lit = &self.literal_encoding.codes;
        for (&v, &c) in t.extra_hist[..LITERAL_COUNT - 256]
            .iter()
            .zip(lit[256..LITERAL_COUNT].iter())
        {
            if v != 0 && c == 0 {
                return false;
            }
        }
        for (&v, &c) in t.lit_hist.iter().zip(lit[..256].iter()) {
            if v != 0 && c == 0 {
                return false;
            }
        }
        true
    }

    /// Go's `flush`: writes any owed EOB, then all pending bits padded to a
    /// byte boundary.
    pub fn flush(&mut self) {
        if self.last_header > 0 {
            // We owe an EOB
            self.write_code(self.literal_encoding.codes[EOB]);
            self.last_header = 0;
        }
        let mut n = self.nbytes;
        while self.nbits != 0 {
            self.bytes[n] = self.bits as u8;
            self.bits >>= 8;
            if self.nbits > 8 {
                self.nbits -= 8;
            } else {
                self.nbits = 0;
            }
            n += 1;
        }
        self.bits = 0;
        self.out.extend_from_slice(&self.bytes[..n]);
        self.nbytes = 0;
    }

    /// Go's `writeBits`.
    #[inline]
    fn write_bits(&mut self, b: i32, nb: u8) {
        self.bits |= (b as i64 as u64) << (self.nbits & 63);
        self.nbits += nb;
        if self.nbits >= 48 {
            self.write_out_bits();
        }
    }

    /// Go's `writeBytes`: pending bits must be byte aligned (they always
    /// are: only called right after a stored header).
    fn write_bytes(&mut self, bytes: &[u8]) {
        let mut n = self.nbytes;
        debug_assert!(self.nbits & 7 == 0, "writeBytes with unfinished bits");
        while self.nbits != 0 {
            self.bytes[n] = self.bits as u8;
            self.bits >>= 8;
            self.nbits -= 8;
            n += 1;
        }
        self.out.extend_from_slice(&self.bytes[..n]);
        self.nbytes = 0;
        self.out.extend_from_slice(bytes);
    }

    /// Go's `generateCodegen`: RFC 1951 3.2.7 run-length encoding of the
    /// code lengths into `codegen`, counting symbols in `codegen_freq`.
    fn generate_codegen(
        &mut self,
        num_literals: usize,
        num_offsets: usize,
        lit_codes: &[Hcode],
        off_codes: &[Hcode],
    ) {
        self.codegen_freq = [0; CODEGEN_CODE_COUNT];
        let codegen = &mut self.codegen;
        let freq = &mut self.codegen_freq;
        // codegen first holds a copy of the lengths, then (shorter) output.
        for (d, &c) in codegen[..num_literals].iter_mut().zip(lit_codes.iter()) {
            *d = hcode_len(c);
        }
        for (d, &c) in codegen[num_literals..num_literals + num_offsets]
            .iter_mut()
            .zip(off_codes.iter())
        {
            *d = hcode_len(c);
        }
        codegen[num_literals + num_offsets] = BAD_CODE;

        let mut size = codegen[0];
        let mut count: i32 = 1;
        let mut out_index = 0usize;
        let mut in_index = 1usize;
        while size != BAD_CODE {
            // Invariant: "count" copies of size seen, not yet output.
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
            count -= 1;
            while count >= 0 {
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

    /// Go's `codegens`.
    fn codegens(&self) -> usize {
        let mut n = CODEGEN_CODE_COUNT;
        while n > 4 && self.codegen_freq[CODEGEN_ORDER[n - 1]] == 0 {
            n -= 1;
        }
        n
    }

    /// Go's `headerSize`: (bits, numCodegens).
    fn header_size(&self) -> (i32, usize) {
        let num_codegens = self.codegens();
        (
            3 + 5
                + 5
                + 4
                + (3 * num_codegens as i32)
                + self.codegen_encoding.bit_length(&self.codegen_freq)
                + self.codegen_freq[16] as i32 * 2
                + self.codegen_freq[17] as i32 * 3
                + self.codegen_freq[18] as i32 * 7,
            num_codegens,
        )
    }

    /// Go's `dynamicReuseSize` (with the writer's own tables).
    fn dynamic_reuse_size(&self) -> i32 {
        self.literal_encoding.bit_length(&self.literal_freq)
            + self.offset_encoding.bit_length(&self.offset_freq)
    }

    /// Go's `dynamicSize` (with the writer's own tables).
    fn dynamic_size(&self, extra_bits: i32) -> (i32, usize) {
        let (header, num_codegens) = self.header_size();
        let size = header
            + self.literal_encoding.bit_length(&self.literal_freq)
            + self.offset_encoding.bit_length(&self.offset_freq)
            + extra_bits;
        (size, num_codegens)
    }

    /// Go's `extraBitSize`.
    fn extra_bit_size(&self) -> i32 {
        let mut total = 0i32;
        for (i, &n) in self.literal_freq[257..LITERAL_COUNT].iter().enumerate() {
            total += n as i32 * LENGTH_EXTRA_BITS[i & 31] as i32;
        }
        for (i, &n) in self.offset_freq[..OFFSET_CODE_COUNT].iter().enumerate() {
            total += n as i32 * OFFSET_EXTRA_BITS[i & 31] as i32;
        }
        total
    }

    /// Go's `fixedSize`.
    fn fixed_size(&self, extra_bits: i32) -> i32 {
        3 + bit_length(&FIXED_LITERAL_CODES, &self.literal_freq)
            + bit_length(&FIXED_OFFSET_CODES, &self.offset_freq)
            + extra_bits
    }

    /// Go's `storedSize`: `None` input is Go's nil slice.
    fn stored_size(input: Option<&[u8]>) -> (i32, bool) {
        match input {
            Some(b) if b.len() <= MAX_STORE_BLOCK_SIZE => (((b.len() + 5) * 8) as i32, true),
            _ => (0, false),
        }
    }

    /// Go's `writeCode`.
    #[inline]
    fn write_code(&mut self, c: Hcode) {
        self.bits |= hcode_code64(c) << (self.nbits & 63);
        self.nbits += hcode_len(c);
        if self.nbits >= 48 {
            self.write_out_bits();
        }
    }

    /// Go's `writeOutBits`.
    #[inline]
    fn write_out_bits(&mut self) {
        put_bits48(
            &mut self.bytes,
            &mut self.out,
            &mut self.bits,
            &mut self.nbits,
            &mut self.nbytes,
        );
    }

    /// Go's `writeDynamicHeader`.
    fn write_dynamic_header(
        &mut self,
        num_literals: usize,
        num_offsets: usize,
        num_codegens: usize,
        is_eof: bool,
    ) {
        let first_bits = if is_eof { 5 } else { 4 };
        self.write_bits(first_bits, 3);
        self.write_bits(num_literals as i32 - 257, 5);
        self.write_bits(num_offsets as i32 - 1, 5);
        self.write_bits(num_codegens as i32 - 4, 4);
        for &o in CODEGEN_ORDER.iter().take(num_codegens) {
            let value = hcode_len(self.codegen_encoding.codes[o]);
            self.write_bits(value as i32, 3);
        }
        let mut i = 0;
        loop {
            let code_word = self.codegen[i];
            i += 1;
            if code_word == BAD_CODE {
                break;
            }
            self.write_code(self.codegen_encoding.codes[code_word as usize]);
            let extra = match code_word {
                16 => 2,
                17 => 3,
                18 => 7,
                _ => continue,
            };
            self.write_bits(self.codegen[i] as i32, extra);
            i += 1;
        }
    }

    /// Go's `writeStoredHeader`. An empty EOF block becomes a fixed block.
    pub fn write_stored_header(&mut self, length: usize, is_eof: bool) {
        if self.last_header > 0 {
            // We owe an EOB
            self.write_code(self.literal_encoding.codes[EOB]);
            self.last_header = 0;
        }
        // To write EOF, use a fixed encoding block. 10 bits instead of 5 bytes.
        if length == 0 && is_eof {
            self.write_fixed_header(is_eof);
            // EOB: 7 bits, value: 0
            self.write_bits(0, 7);
            self.flush();
            return;
        }
        self.write_bits(is_eof as i32, 3);
        self.flush();
        self.write_bits(length as i32, 16);
        self.write_bits(!(length as u16) as i32, 16);
    }

    /// Go's `writeFixedHeader`.
    fn write_fixed_header(&mut self, is_eof: bool) {
        if self.last_header > 0 {
            // We owe an EOB
            self.write_code(self.literal_encoding.codes[EOB]);
            self.last_header = 0;
        }
        self.write_bits(if is_eof { 3 } else { 2 }, 3);
    }

    /// Go's `writeBytes` for a stored block body.
    pub fn write_stored_body(&mut self, input: &[u8]) {
        self.write_bytes(input);
    }

    /// Stored header plus raw bytes (Go repeats these two calls inline).
    pub fn write_stored(&mut self, input: &[u8], eof: bool) {
        self.write_stored_header(input.len(), eof);
        self.write_bytes(input);
    }

    /// Go's `writeBlockDynamic`: dynamic table (possibly reusing the
    /// previous one across blocks), fixed table or stored, whichever is
    /// estimated smallest. `input` None is Go's nil (never stored).
    pub fn write_block_dynamic(
        &mut self,
        tokens: &mut Tokens,
        eof: bool,
        input: Option<&[u8]>,
        sync: bool,
    ) {
        let sync = sync || eof;
        if sync {
            tokens.add_eob();
        }
        // We cannot reuse a pure huffman table, and must mark as EOF.
        if (self.last_huff_man || eof) && self.last_header > 0 {
            self.write_code(self.literal_encoding.codes[EOB]);
            self.last_header = 0;
            self.last_huff_man = false;
        }
        // Go's fillReuse is false: check reusability instead.
        if self.last_header > 0 && !self.can_reuse(tokens) {
            self.write_code(self.literal_encoding.codes[EOB]);
            self.last_header = 0;
        }

        let (num_literals, num_offsets) = self.index_tokens(tokens, !sync);
        let mut extra_bits = 0;
        let (ssize, storable) = Self::stored_size(input);
        if storable || self.last_header > 0 {
            extra_bits = self.extra_bit_size();
        }

        if self.last_header > 0 {
            // Estimate a new table from the previous header size plus an
            // optimal-coding estimate, with a penalty.
            let mut new_size = self.last_header + tokens.estimated_bits();
            new_size += hcode_len(self.literal_encoding.codes[EOB]) as i32
                + (new_size >> self.log_new_table_penalty);
            let reuse_size = self.dynamic_reuse_size() + extra_bits;
            let size;
            if new_size < reuse_size {
                // Write the EOB we owe.
                self.write_code(self.literal_encoding.codes[EOB]);
                size = new_size;
                self.last_header = 0;
            } else {
                size = reuse_size;
            }
            if tokens.n < MAX_PREDEFINED_TOKENS {
                let pre_size = self.fixed_size(extra_bits) + 7;
                if pre_size < size {
                    if storable && ssize <= size {
                        self.write_stored(input.unwrap_or_default(), eof);
                        return;
                    }
                    self.write_fixed_header(eof);
                    if !sync {
                        tokens.add_eob();
                    }
                    self.write_tokens(tokens.slice(), Tables::Fixed);
                    return;
                }
            }
            if storable && ssize <= size {
                self.write_stored(input.unwrap_or_default(), eof);
                return;
            }
        }

        // We want a new block/table
        if self.last_header == 0 {
            self.literal_freq[EOB] = 1;
            self.generate();
            self.generate_codegen_own(num_literals, num_offsets);
            self.codegen_encoding.generate(&self.codegen_freq, 7);
            let (size, num_codegens) = self.dynamic_size(extra_bits);

            // Use the fixed table if we don't get a reasonable improvement.
            if tokens.n < MAX_PREDEFINED_TOKENS {
                let pre_size = self.fixed_size(extra_bits);
                if pre_size <= size {
                    if storable && ssize <= pre_size {
                        self.write_stored(input.unwrap_or_default(), eof);
                        return;
                    }
                    self.write_fixed_header(eof);
                    if !sync {
                        tokens.add_eob();
                    }
                    self.write_tokens(tokens.slice(), Tables::Fixed);
                    return;
                }
            }
            if storable && ssize <= size {
                self.write_stored(input.unwrap_or_default(), eof);
                return;
            }
            self.write_dynamic_header(num_literals, num_offsets, num_codegens, eof);
            if !sync {
                self.last_header = self.header_size().0;
            }
            self.last_huff_man = false;
        }
        if sync {
            self.last_header = 0;
        }
        self.write_tokens(tokens.slice(), Tables::Dynamic);
    }

    /// generate_codegen with the writer's own literal and offset tables.
    fn generate_codegen_own(&mut self, num_literals: usize, num_offsets: usize) {
        let lit = std::mem::take(&mut self.literal_encoding.codes);
        let off = std::mem::take(&mut self.offset_encoding.codes);
        self.generate_codegen(num_literals, num_offsets, &lit, &off);
        self.literal_encoding.codes = lit;
        self.offset_encoding.codes = off;
    }

    /// Go's `indexTokens`: copy the histograms; returns the number of
    /// literal/length and offset codes to transmit (all when `filled`).
    fn index_tokens(&mut self, t: &Tokens, filled: bool) -> (usize, usize) {
        self.literal_freq[..256].copy_from_slice(&t.lit_hist);
        self.literal_freq[256..256 + 32].copy_from_slice(&t.extra_hist);
        self.offset_freq = t.off_hist;
        if t.n == 0 {
            return (0, 0);
        }
        if filled {
            return (MAX_NUM_LIT, MAX_NUM_DIST);
        }
        let mut num_literals = self.literal_freq.len();
        while self.literal_freq[num_literals - 1] == 0 {
            num_literals -= 1;
        }
        let mut num_offsets = self.offset_freq.len();
        while num_offsets > 0 && self.offset_freq[num_offsets - 1] == 0 {
            num_offsets -= 1;
        }
        if num_offsets == 0 {
            // No match: still count one offset so the tree can be encoded.
            self.offset_freq[0] = 1;
            num_offsets = 1;
        }
        (num_literals, num_offsets)
    }

    /// Go's `generate`.
    fn generate(&mut self) {
        self.literal_encoding
            .generate(&self.literal_freq[..LITERAL_COUNT], 15);
        self.offset_encoding
            .generate(&self.offset_freq[..OFFSET_CODE_COUNT], 15);
    }

    /// Go's `writeTokens`: the hot loop, with bit state kept in locals.
    ///
    /// Emits the same bits as Go, but arranged for speed: every token is
    /// at most 48 bits (length code + extra <= 20, offset code + extra <=
    /// 28), so whole bytes are flushed before each token (leaving < 8
    /// pending) and the token is added without further checks. Literals
    /// and matches take the same branch-free path, as the literal/match
    /// mix is too irregular to predict.
    fn write_tokens(&mut self, tokens: &[Token], tables: Tables) {
        if tokens.is_empty() {
            return;
        }
        let (le_codes, oe_codes): (&[Hcode], &[Hcode]) = match tables {
            Tables::Fixed => (&FIXED_LITERAL_CODES, &FIXED_OFFSET_CODES),
            Tables::Dynamic => (&self.literal_encoding.codes, &self.offset_encoding.codes),
        };
        // Only the last token may be an EOB.
        let mut tokens = tokens;
        let mut defer_eob = false;
        if tokens[tokens.len() - 1] == END_BLOCK_MARKER {
            tokens = &tokens[..tokens.len() - 1];
            defer_eob = true;
        }
        let eob_code = le_codes[EOB];

        // sym[0..256]: literal codes; sym[256 + xlength]: the length code
        // with its extra bits appended. Packed like Hcode (code << 8 | len).
        let mut sym = [0u32; 512];
        sym[..256].copy_from_slice(&le_codes[..256]);
        for (length, e) in sym[256..].iter_mut().enumerate() {
            let lc = (LENGTH_CODES[length] & 31) as usize;
            let c = le_codes[LENGTH_CODES_START + lc];
            let extra = (length as u8).wrapping_sub(LENGTH_BASE[lc]) as u32;
            let extra_bits = if lc >= LENGTH_EXTRA_BITS_MIN_CODE {
                LENGTH_EXTRA_BITS[lc]
            } else {
                0
            };
            let extra = extra & ((1u32 << extra_bits) - 1);
            let len = hcode_len(c) + extra_bits;
            *e = ((hcode_code64(c) as u32 | (extra << hcode_len(c))) << 8) | len as u32;
        }
        // Per offset code: code | code len << 16 | extra bits << 24, and
        // the base to subtract (codes < 4 have no extra bits).
        let mut offs = [(0u32, 0u32); 32];
        for (oc, e) in offs.iter_mut().enumerate().take(OFFSET_CODE_COUNT) {
            let c = oe_codes[oc];
            let (nb, base) = if oc >= OFFSET_EXTRA_BITS_MIN_CODE {
                let comb = OFFSET_COMBINED[oc];
                (comb & 0xff, comb >> 8)
            } else {
                (0, 0)
            };
            *e = ((c >> 8) | ((hcode_len(c) as u32) << 16) | (nb << 24), base);
        }

        let (mut bits, mut nbits, mut nbytes) = (self.bits, self.nbits as u32, self.nbytes);
        let bytes = &mut self.bytes;
        let out = &mut self.out;
        for &t in tokens {
            // Flush whole bytes: afterwards nbits < 8, room for 56 more.
            bytes[nbytes..nbytes + 8].copy_from_slice(&bits.to_le_bytes());
            nbytes += (nbits >> 3) as usize;
            bits >>= nbits & 56;
            nbits &= 7;
            if nbytes >= BUFFER_FLUSH_SIZE {
                out.extend_from_slice(&bytes[..nbytes]);
                nbytes = 0;
            }

            let is_match = t >= 256;
            // Literal byte, or 256 + xlength.
            let idx = if is_match {
                256 | ((t >> LENGTH_SHIFT) & 255) as usize
            } else {
                (t & 255) as usize
            };
            let c = sym[idx];
            bits |= ((c >> 8) as u64) << nbits;
            nbits += c & 0xff;

            // The offset part, masked away for literals.
            let (oc_tab, base) = offs[((t >> 16) & 31) as usize];
            let extra_n = oc_tab >> 24;
            let extra = (t.wrapping_sub(base) & MATCH_OFFSET_ONLY_MASK) & ((1u32 << extra_n) - 1);
            let code_len = (oc_tab >> 16) & 0xff;
            let v = (oc_tab & 0xffff) as u64 | ((extra as u64) << code_len);
            let mask = (is_match as u64).wrapping_neg();
            bits |= (v & mask) << nbits;
            nbits += (code_len + extra_n) & mask as u32;
        }
        // Restore the invariant the other writers rely on (nbits < 48).
        if nbits >= 48 {
            bytes[nbytes..nbytes + 8].copy_from_slice(&bits.to_le_bytes());
            bits >>= 48;
            nbits -= 48;
            nbytes += 6;
            if nbytes >= BUFFER_FLUSH_SIZE {
                out.extend_from_slice(&bytes[..nbytes]);
                nbytes = 0;
            }
        }
        self.bits = bits;
        self.nbits = nbits as u8;
        self.nbytes = nbytes;
        if defer_eob {
            self.write_code(eob_code);
        }
    }

    /// Go's `writeBlockHuff`: literals only, Huffman coded (or stored if
    /// that barely helps).
    pub fn write_block_huff(&mut self, eof: bool, input: &[u8], sync: bool) {
        // Clear histogram
        self.literal_freq = [0; LENGTH_CODES_START + 32];
        if !self.last_huff_man {
            self.offset_freq = [0; 32];
        }
        const NUM_LITERALS: usize = EOB + 1;
        const NUM_OFFSETS: usize = 1;
        // Assume the header is around 70 bytes.
        const GUESS_HEADER_SIZE_BITS: i32 = 70 * 8;
        for &b in input {
            self.literal_freq[b as usize] = self.literal_freq[b as usize].wrapping_add(1);
        }
        let (ssize, storable) = Self::stored_size(Some(input));
        if storable && input.len() > 1024 {
            // Quick check for incompressible content (same f64 math as Go).
            let mut abs = 0f64;
            let avg = input.len() as f64 / 256.0;
            let max = (input.len() * 2) as f64;
            for &v in self.literal_freq[..256].iter() {
                let diff = v as f64 - avg;
                abs += diff * diff;
                if abs > max {
                    break;
                }
            }
            if abs < max {
                // No chance we can compress this...
                self.write_stored(input, eof);
                return;
            }
        }
        self.literal_freq[EOB] = 1;
        self.tmp_lit_encoding
            .generate(&self.literal_freq[..NUM_LITERALS], 15);
        let mut est_bits = self
            .tmp_lit_encoding
            .can_reuse_bits(&self.literal_freq[..NUM_LITERALS]);
        if est_bits < i32::MAX {
            est_bits += self.last_header;
            if self.last_header == 0 {
                est_bits += GUESS_HEADER_SIZE_BITS;
            }
            est_bits += est_bits >> self.log_new_table_penalty;
        }
        // Store bytes, if we don't get a reasonable improvement.
        if storable && ssize <= est_bits {
            self.write_stored(input, eof);
            return;
        }
        if self.last_header > 0 {
            let reuse_size = self
                .literal_encoding
                .can_reuse_bits(&self.literal_freq[..256]);
            if est_bits < reuse_size {
                // We owe an EOB
                self.write_code(self.literal_encoding.codes[EOB]);
                self.last_header = 0;
            }
        }
        if self.last_header == 0 {
            // Use the temp encoding, so swap.
            std::mem::swap(&mut self.literal_encoding, &mut self.tmp_lit_encoding);
            let lit = std::mem::take(&mut self.literal_encoding.codes);
            self.generate_codegen(NUM_LITERALS, NUM_OFFSETS, &lit, &HUFF_OFFSET_CODES);
            self.literal_encoding.codes = lit;
            self.codegen_encoding.generate(&self.codegen_freq, 7);
            let num_codegens = self.codegens();
            self.write_dynamic_header(NUM_LITERALS, NUM_OFFSETS, num_codegens, eof);
            self.last_huff_man = true;
            self.last_header = self.header_size().0;
        }

        let mut encoding = [0 as Hcode; 256];
        encoding.copy_from_slice(&self.literal_encoding.codes[..256]);
        let (mut bits, mut nbits, mut nbytes) = (self.bits, self.nbits, self.nbytes);
        let bytes = &mut self.bytes;
        let out = &mut self.out;
        // Three codes per round (at most 45 bits) after making >= 56 bits room.
        let mut chunks = input.chunks_exact(3);
        // Go loops while len(input) > 3, leaving 1..=3 bytes for the tail.
        let n_rounds = if input.len() > 3 {
            (input.len() - 1) / 3
        } else {
            0
        };
        for ch in chunks.by_ref().take(n_rounds) {
            if nbits >= 8 {
                let n = nbits >> 3;
                bytes[nbytes..nbytes + 8].copy_from_slice(&bits.to_le_bytes());
                bits >>= (n * 8) & 63;
                nbits -= n * 8;
                nbytes += n as usize;
            }
            if nbytes >= BUFFER_FLUSH_SIZE {
                out.extend_from_slice(&bytes[..nbytes]);
                nbytes = 0;
            }
            let a = encoding[ch[0] as usize];
            let b = encoding[ch[1] as usize];
            bits |= hcode_code64(a) << (nbits & 63);
            bits |= hcode_code64(b) << ((nbits + hcode_len(a)) & 63);
            let c = encoding[ch[2] as usize];
            nbits += hcode_len(b) + hcode_len(a);
            bits |= hcode_code64(c) << (nbits & 63);
            nbits += hcode_len(c);
        }
        // Remaining...
        for &t in &input[n_rounds * 3..] {
            if nbits >= 48 {
                put_bits48(bytes, out, &mut bits, &mut nbits, &mut nbytes);
            }
            let c = encoding[t as usize];
            bits |= hcode_code64(c) << (nbits & 63);
            nbits += hcode_len(c);
        }
        self.bits = bits;
        self.nbits = nbits;
        self.nbytes = nbytes;
        // Flush if needed to have space.
        if self.nbits >= 48 {
            self.write_out_bits();
        }
        if eof || sync {
            self.write_code(self.literal_encoding.codes[EOB]);
            self.last_header = 0;
            self.last_huff_man = false;
        }
    }
}
