//! Canonical length-limited Huffman code construction, mirroring Go's
//! compress/flate huffman_code.go.
//!
//! Sorting note: Go sorts with the unstable `sort.Sort` (pdqsort since
//! 1.19, quicksort/heapsort before). Both orderings used here are total:
//! `byFreq` breaks frequency ties by literal, `byLiteral` compares literals,
//! and literals in a list are distinct. A total order has exactly one sorted
//! permutation, so any correct sort (here `sort_unstable_by_key`) reproduces
//! Go's order exactly, whatever algorithm either side uses.

/// Number of literal/length codes (Go `maxNumLit`).
pub(super) const MAX_NUM_LIT: usize = 286;
const MAX_BITS_LIMIT: usize = 16;

/// A Huffman code (bit-reversed, ready to emit LSB first) and its length.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct HCode {
    pub(super) code: u16,
    pub(super) len: u16,
}

#[derive(Clone, Copy, Default)]
struct LiteralNode {
    literal: u16,
    freq: i32,
}

/// Go `maxNode`: the sentinel ending a frequency-sorted list.
const MAX_NODE: LiteralNode = LiteralNode {
    literal: u16::MAX,
    freq: i32::MAX,
};

/// Go `levelInfo` (the `level` field is the array index here).
#[derive(Clone, Copy, Default)]
struct LevelInfo {
    last_freq: i32,
    next_char_freq: i32,
    next_pair_freq: i32,
    needed: i32,
}

/// Go `huffmanEncoder` for an alphabet of `N` symbols. The arrays are fixed
/// size so symbol indexing is checked at compile time and nothing is
/// allocated per block.
pub(super) struct HuffmanEncoder<const N: usize> {
    pub(super) codes: [HCode; N],
    /// Go `freqcache`: the non-zero symbols plus one sentinel slot.
    freqcache: [LiteralNode; MAX_NUM_LIT + 1],
    bit_count: [i32; 17],
}

/// Go `reverseBits`.
pub(super) const fn reverse_bits(number: u16, bit_length: u8) -> u16 {
    (number << (16 - bit_length as u32)).reverse_bits()
}

/// Go `generateFixedLiteralEncoding` (RFC 1951 3.2.6).
pub(super) const fn fixed_literal_codes() -> [HCode; MAX_NUM_LIT] {
    let mut codes = [HCode { code: 0, len: 0 }; MAX_NUM_LIT];
    let mut ch = 0u16;
    while (ch as usize) < MAX_NUM_LIT {
        let (bits, size) = if ch < 144 {
            (ch + 48, 8)
        } else if ch < 256 {
            (ch + 400 - 144, 9)
        } else if ch < 280 {
            (ch - 256, 7)
        } else {
            (ch + 192 - 280, 8)
        };
        codes[ch as usize] = HCode {
            code: reverse_bits(bits, size as u8),
            len: size,
        };
        ch += 1;
    }
    codes
}

/// Go `generateFixedOffsetEncoding`.
pub(super) const fn fixed_offset_codes() -> [HCode; 30] {
    let mut codes = [HCode { code: 0, len: 0 }; 30];
    let mut ch = 0;
    while ch < 30 {
        codes[ch] = HCode {
            code: reverse_bits(ch as u16, 5),
            len: 5,
        };
        ch += 1;
    }
    codes
}

/// Go `huffOffset`: `generate` of an offset histogram with only code 0 used,
/// which takes the two-or-fewer-symbols path and gives code 0 length 1.
pub(super) const fn huff_offset_codes() -> [HCode; 30] {
    let mut codes = [HCode { code: 0, len: 0 }; 30];
    codes[0] = HCode { code: 0, len: 1 };
    codes
}

/// Go `huffmanEncoder.bitLength`: total bits to code `freq` with `codes`.
pub(super) fn bit_length(codes: &[HCode], freq: &[i32]) -> usize {
    let mut total = 0usize;
    for (c, &f) in codes.iter().zip(freq) {
        if f != 0 {
            total += f as usize * c.len as usize;
        }
    }
    total
}

impl<const N: usize> HuffmanEncoder<N> {
    /// Go `newHuffmanEncoder`.
    pub(super) fn new() -> Self {
        HuffmanEncoder {
            codes: [HCode::default(); N],
            freqcache: [LiteralNode::default(); MAX_NUM_LIT + 1],
            bit_count: [0; 17],
        }
    }

    /// Go `huffmanEncoder.generate`: the minimum code for `freq` with no
    /// code longer than `max_bits`. Zero-frequency symbols get length 0
    /// (their stale `code` is kept, as in Go; it is never emitted).
    pub(super) fn generate(&mut self, freq: &[i32; N], max_bits: i32) {
        let mut count = 0;
        for (i, &f) in freq.iter().enumerate() {
            if f != 0 {
                self.freqcache[count] = LiteralNode {
                    literal: i as u16,
                    freq: f,
                };
                count += 1;
            } else {
                self.codes[i].len = 0;
            }
        }
        if count <= 2 {
            // With two or fewer literals everything has length 1; the list is
            // in literal order.
            for i in 0..count {
                let lit = self.freqcache[i].literal as usize;
                self.codes[lit] = HCode {
                    code: i as u16,
                    len: 1,
                };
            }
            return;
        }
        self.freqcache[..count].sort_unstable_by_key(|n| (n.freq, n.literal));
        let max_bits = self.bit_counts(count, max_bits);
        self.assign_encoding_and_size(max_bits, count);
    }

    /// Go `huffmanEncoder.bitCounts` (package-merge over levels). Fills
    /// `bit_count[..=max_bits]` and returns the effective `max_bits`.
    /// `count` >= 3 symbols are in `freqcache[..count]`, sorted by frequency.
    fn bit_counts(&mut self, count: usize, max_bits: i32) -> usize {
        let list = &mut self.freqcache[..count + 1];
        let n = count as i32;
        list[count] = MAX_NODE;
        // The tree can't be deeper than n-1.
        let max_bits = max_bits.min(n - 1) as usize;
        let mut levels = [LevelInfo::default(); MAX_BITS_LIMIT];
        let mut leaf_counts = [[0i32; MAX_BITS_LIMIT]; MAX_BITS_LIMIT];

        for level in 1..=max_bits {
            levels[level] = LevelInfo {
                last_freq: list[1].freq,
                next_char_freq: list[2].freq,
                next_pair_freq: if level == 1 {
                    // Level 0 is bogus: its pairs must never be chosen.
                    i32::MAX
                } else {
                    list[0].freq + list[1].freq
                },
                needed: 0,
            };
            leaf_counts[level][level] = 2;
        }
        // 2n-2 items at the top level, two already generated.
        levels[max_bits].needed = 2 * n - 4;

        let mut level = max_bits;
        loop {
            let l = levels[level];
            if l.next_pair_freq == i32::MAX && l.next_char_freq == i32::MAX {
                // Out of leaves and pairs: finish this level for good.
                levels[level].needed = 0;
                levels[level + 1].next_pair_freq = i32::MAX;
                level += 1;
                continue;
            }
            let prev_freq = l.last_freq;
            if l.next_char_freq < l.next_pair_freq {
                // Next item on this row is a leaf.
                let nl = leaf_counts[level][level] + 1;
                levels[level].last_freq = l.next_char_freq;
                leaf_counts[level][level] = nl;
                levels[level].next_char_freq = list[nl as usize].freq;
            } else {
                // Next item is a pair from the row below.
                levels[level].last_freq = l.next_pair_freq;
                let (lo, hi) = leaf_counts.split_at_mut(level);
                hi[0][..level].copy_from_slice(&lo[level - 1][..level]);
                levels[level - 1].needed = 2;
            }
            levels[level].needed -= 1;
            if levels[level].needed == 0 {
                if level == max_bits {
                    break;
                }
                levels[level + 1].next_pair_freq = prev_freq + levels[level].last_freq;
                level += 1;
            } else {
                // If we stole from below, move down to replenish it.
                while levels[level - 1].needed > 0 {
                    level -= 1;
                }
            }
        }

        let counts = &leaf_counts[max_bits];
        // Level `level` of the top chain holds the codes of length
        // max_bits+1-level.
        for (bits, level) in (1..).zip((1..=max_bits).rev()) {
            self.bit_count[bits] = counts[level] - counts[level - 1];
        }
        max_bits
    }

    /// Go `huffmanEncoder.assignEncodingAndSize`: canonical codes, assigned
    /// in literal order within each length.
    fn assign_encoding_and_size(&mut self, max_bits: usize, count: usize) {
        let mut code = 0u16;
        let mut end = count;
        for n in 0..=max_bits {
            let bits = self.bit_count[n];
            code <<= 1;
            if n == 0 || bits == 0 {
                continue;
            }
            // The `bits` least frequent remaining symbols get length n.
            let start = end - bits as usize;
            let chunk = &mut self.freqcache[start..end];
            chunk.sort_unstable_by_key(|node| node.literal);
            for node in chunk.iter() {
                self.codes[node.literal as usize] = HCode {
                    code: reverse_bits(code, n as u8),
                    len: n as u16,
                };
                code = code.wrapping_add(1);
            }
            end = start;
        }
    }
}
