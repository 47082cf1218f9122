//! Huffman code construction; mirrors klauspost/compress/flate
//! huffman_code.go, huffman_sortByFreq.go and huffman_sortByLiteral.go.

use super::token::{LITERAL_COUNT, OFFSET_CODE_COUNT};

/// Go's `maxBitsLimit`.
const MAX_BITS_LIMIT: usize = 16;

/// Go's `hcode`: bit length in the low 8 bits, (bit-reversed) code above.
pub type Hcode = u32;

/// Go's `hcode.len`.
#[inline(always)]
pub fn hcode_len(h: Hcode) -> u8 {
    h as u8
}

/// Go's `hcode.code64`.
#[inline(always)]
pub fn hcode_code64(h: Hcode) -> u64 {
    (h >> 8) as u64
}

/// Go's `newhcode`.
#[inline(always)]
pub const fn new_hcode(code: u16, length: u8) -> Hcode {
    length as u32 | ((code as u32) << 8)
}

/// Go's `reverseBits`.
#[inline]
pub const fn reverse_bits(number: u16, bit_length: u8) -> u16 {
    (number << ((16 - bit_length as u32) & 15)).reverse_bits()
}

/// Go's `literalNode`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct LiteralNode {
    pub literal: u16,
    pub freq: u16,
}

/// Go's `maxNode()`: list sentinel.
const MAX_NODE: LiteralNode = LiteralNode {
    literal: u16::MAX,
    freq: u16::MAX,
};

/// Go's `levelInfo`.
#[derive(Clone, Copy, Default)]
struct LevelInfo {
    level: i32,
    last_freq: i32,
    next_char_freq: i32,
    next_pair_freq: i32,
    needed: i32,
}

/// Go's `huffmanEncoder`.
pub struct HuffmanEncoder {
    pub codes: Vec<Hcode>,
    bit_count: [i32; 17],
    freqcache: [LiteralNode; LITERAL_COUNT + 1],
}

/// Go's `generateFixedLiteralEncoding`, evaluated at compile time.
pub const FIXED_LITERAL_CODES: [Hcode; LITERAL_COUNT] = {
    let mut codes = [0; LITERAL_COUNT];
    let mut ch: u16 = 0;
    while (ch as usize) < LITERAL_COUNT {
        let (bits, size) = if ch < 144 {
            (ch + 48, 8)
        } else if ch < 256 {
            (ch + 400 - 144, 9)
        } else if ch < 280 {
            (ch - 256, 7)
        } else {
            (ch + 192 - 280, 8)
        };
        codes[ch as usize] = new_hcode(reverse_bits(bits, size), size);
        ch += 1;
    }
    codes
};

/// Go's `generateFixedOffsetEncoding`.
pub const FIXED_OFFSET_CODES: [Hcode; OFFSET_CODE_COUNT] = {
    let mut codes = [0; OFFSET_CODE_COUNT];
    let mut ch = 0;
    while ch < OFFSET_CODE_COUNT {
        codes[ch] = new_hcode(reverse_bits(ch as u16, 5), 5);
        ch += 1;
    }
    codes
};

/// Go's `huffOffset` (huffman_bit_writer.go init): generated from a
/// histogram with only offset code 0 set, i.e. code 0 of length 1.
pub const HUFF_OFFSET_CODES: [Hcode; OFFSET_CODE_COUNT] = {
    let mut codes = [0; OFFSET_CODE_COUNT];
    codes[0] = new_hcode(0, 1);
    codes
};

/// Go's `(*huffmanEncoder).bitLength` over an arbitrary code table.
#[inline]
pub fn bit_length(codes: &[Hcode], freq: &[u16]) -> i32 {
    let mut total = 0i32;
    for (&f, &c) in freq.iter().zip(codes.iter()) {
        if f != 0 {
            total += f as i32 * hcode_len(c) as i32;
        }
    }
    total
}

impl HuffmanEncoder {
    /// Go's `newHuffmanEncoder`.
    pub fn new(size: usize) -> Self {
        HuffmanEncoder {
            codes: vec![0; size],
            bit_count: [0; 17],
            freqcache: [LiteralNode::default(); LITERAL_COUNT + 1],
        }
    }

    /// Go's `bitLength`.
    #[inline]
    pub fn bit_length(&self, freq: &[u16]) -> i32 {
        bit_length(&self.codes, freq)
    }

    /// Go's `bitLengthRaw`: bits to encode `b` as literals.
    #[inline]
    pub fn bit_length_raw(&self, b: &[u8]) -> i32 {
        let codes = &self.codes[..256];
        let mut total = 0i32;
        for &f in b {
            total += hcode_len(codes[f as usize]) as i32;
        }
        total
    }

    /// Go's `canReuseBits`: bits needed, or i32::MAX if a used symbol has
    /// no code.
    pub fn can_reuse_bits(&self, freq: &[u16]) -> i32 {
        let mut total = 0i32;
        for (&f, &code) in freq.iter().zip(self.codes.iter()) {
            if f != 0 {
                if code == 0 {
                    return i32::MAX;
                }
                total += f as i32 * hcode_len(code) as i32;
            }
        }
        total
    }

    /// Go's `bitCounts`: number of literals per bit length (package-merge
    /// style, limited to max_bits). `list` holds the sorted nodes plus
    /// one spare slot for the sentinel. Returns max_bits used.
    fn bit_counts(&mut self, n: usize, mut max_bits: i32) -> i32 {
        let list = &mut self.freqcache[..n + 1];
        let n = n as i32;
        list[n as usize] = MAX_NODE;
        // The tree can't be deeper than n - 1.
        if max_bits > n - 1 {
            max_bits = n - 1;
        }
        let mut levels = [LevelInfo::default(); MAX_BITS_LIMIT];
        let mut leaf_counts = [[0i32; MAX_BITS_LIMIT]; MAX_BITS_LIMIT];

        let l2f = list[2].freq as i32;
        let l1f = list[1].freq as i32;
        let l0f = list[0].freq as i32 + list[1].freq as i32;

        for level in 1..=max_bits {
            levels[level as usize] = LevelInfo {
                level,
                last_freq: l1f,
                next_char_freq: l2f,
                next_pair_freq: l0f,
                needed: 0,
            };
            leaf_counts[level as usize][level as usize] = 2;
            if level == 1 {
                levels[level as usize].next_pair_freq = i32::MAX;
            }
        }
        // 2n - 2 items needed at the top level; 2 already generated.
        levels[max_bits as usize].needed = 2 * n - 4;

        let mut level = max_bits as usize;
        while level < 16 {
            let l = levels[level];
            if l.next_pair_freq == i32::MAX && l.next_char_freq == i32::MAX {
                // Out of both leaves and pairs: finish this level.
                levels[level].needed = 0;
                levels[level + 1].next_pair_freq = i32::MAX;
                level += 1;
                continue;
            }
            let prev_freq = l.last_freq;
            if l.next_char_freq < l.next_pair_freq {
                // Next item on this row is a leaf.
                let nn = leaf_counts[level][level] + 1;
                levels[level].last_freq = l.next_char_freq;
                leaf_counts[level][level] = nn;
                let e = list[nn as usize];
                levels[level].next_char_freq = if e.literal < u16::MAX {
                    e.freq as i32
                } else {
                    i32::MAX
                };
            } else {
                // Next item is a pair from the previous row.
                levels[level].last_freq = l.next_pair_freq;
                let save = leaf_counts[level][level];
                leaf_counts[level] = leaf_counts[level - 1];
                leaf_counts[level][level] = save;
                levels[(l.level - 1) as usize].needed = 2;
            }
            levels[level].needed -= 1;
            if levels[level].needed == 0 {
                // Level done; feed the sum of its last two nodes upwards.
                if l.level == max_bits {
                    break;
                }
                levels[(l.level + 1) as usize].next_pair_freq = prev_freq + levels[level].last_freq;
                level += 1;
            } else {
                // If we stole from below, move down temporarily to replenish it.
                while levels[level - 1].needed > 0 {
                    level -= 1;
                }
            }
        }
        debug_assert_eq!(leaf_counts[max_bits as usize][max_bits as usize], n);

        let counts = &leaf_counts[max_bits as usize];
        let mut bits = 1usize;
        let mut level = max_bits as usize;
        while level > 0 {
            self.bit_count[bits] = counts[level] - counts[level - 1];
            bits += 1;
            level -= 1;
        }
        max_bits
    }

    /// Go's `assignEncodingAndSize`: canonical codes, assigned in literal
    /// order within each bit length (most frequent = shortest = list end).
    fn assign_encoding_and_size(&mut self, max_bits: i32, count: usize) {
        let mut code: u16 = 0;
        let mut list_len = count;
        for n in 0..=max_bits as usize {
            let bits = self.bit_count[n];
            code <<= 1;
            if n == 0 || bits == 0 {
                continue;
            }
            let chunk = &mut self.freqcache[list_len - bits as usize..list_len];
            sort_by_literal(chunk);
            for node in chunk.iter() {
                self.codes[node.literal as usize] = new_hcode(reverse_bits(code, n as u8), n as u8);
                code = code.wrapping_add(1);
            }
            list_len -= bits as usize;
        }
    }

    /// Go's `generate`: minimum code for `freq`, max_bits long at most.
    pub fn generate(&mut self, freq: &[u16], max_bits: i32) {
        let codes = &mut self.codes[..freq.len()];
        let list = &mut self.freqcache[..freq.len() + 1];
        let mut count = 0usize;
        for (i, (&f, c)) in freq.iter().zip(codes.iter_mut()).enumerate() {
            if f != 0 {
                list[count] = LiteralNode {
                    literal: i as u16,
                    freq: f,
                };
                count += 1;
            } else {
                *c = 0;
            }
        }
        list[count] = LiteralNode::default();
        if count <= 2 {
            // With two or fewer literals everything has length 1; the
            // list is in increasing literal order.
            for i in 0..count {
                let lit = self.freqcache[i].literal;
                self.codes[lit as usize] = new_hcode(i as u16, 1);
            }
            return;
        }
        sort_by_freq(&mut self.freqcache[..count]);
        let max_bits = self.bit_counts(count, max_bits);
        self.assign_encoding_and_size(max_bits, count);
    }
}

// ---- Sorting ----
//
// A faithful port of the Go pdqsort-less quicksort (huffman_sort*.go).
// The keys are unique, so any correct sort would agree, except that Go's
// sortByFreq falls back to heapSort *by literal* at max depth; mirroring the
// algorithm keeps even that case identical.

/// Go's `lessFreq` as one compare: (freq, literal) packed into a u32.
#[inline(always)]
fn less_freq(a: &LiteralNode, b: &LiteralNode) -> bool {
    let key = |n: &LiteralNode| ((n.freq as u32) << 16) | n.literal as u32;
    key(a) < key(b)
}

/// Go's `sortByFreq`.
pub fn sort_by_freq(data: &mut [LiteralNode]) {
    let n = data.len();
    quick_sort(data, 0, n, max_depth(n), less_freq);
}

/// Go's `sortByLiteral`. Literals are unique and Go's heapSort fallback
/// also orders by literal, so any correct sort gives Go's result.
pub fn sort_by_literal(data: &mut [LiteralNode]) {
    data.sort_unstable_by_key(|n| n.literal);
}

/// Go's `maxDepth`.
fn max_depth(n: usize) -> usize {
    let mut depth = 0;
    let mut i = n;
    while i > 0 {
        depth += 1;
        i >>= 1;
    }
    depth * 2
}

/// Go's `quickSort` / `quickSortByFreq`.
fn quick_sort<F: Fn(&LiteralNode, &LiteralNode) -> bool + Copy>(
    data: &mut [LiteralNode],
    mut a: usize,
    mut b: usize,
    mut max_depth: usize,
    less: F,
) {
    while b - a > 12 {
        if max_depth == 0 {
            // Both Go variants call the literal-ordered heapSort here.
            heap_sort(data, a, b);
            return;
        }
        max_depth -= 1;
        let (mlo, mhi) = do_pivot(data, a, b, less);
        if mlo - a < b - mhi {
            quick_sort(data, a, mlo, max_depth, less);
            a = mhi;
        } else {
            quick_sort(data, mhi, b, max_depth, less);
            b = mlo;
        }
    }
    if b - a > 1 {
        // Shell sort pass with gap 6.
        for i in a + 6..b {
            if less(&data[i], &data[i - 6]) {
                data.swap(i, i - 6);
            }
        }
        insertion_sort(data, a, b, less);
    }
}

/// Go's `heapSort` (literal order only).
fn heap_sort(data: &mut [LiteralNode], a: usize, b: usize) {
    let first = a;
    let lo = 0;
    let hi = b - a;
    let mut i = (hi as isize - 1) / 2;
    while i >= 0 {
        sift_down(data, i as usize, hi, first);
        i -= 1;
    }
    let mut i = hi as isize - 1;
    while i >= 0 {
        data.swap(first, first + i as usize);
        sift_down(data, lo, i as usize, first);
        i -= 1;
    }
}

/// Go's `siftDown` (literal order).
fn sift_down(data: &mut [LiteralNode], lo: usize, hi: usize, first: usize) {
    let mut root = lo;
    loop {
        let mut child = 2 * root + 1;
        if child >= hi {
            break;
        }
        if child + 1 < hi && data[first + child].literal < data[first + child + 1].literal {
            child += 1;
        }
        if data[first + root].literal > data[first + child].literal {
            return;
        }
        data.swap(first + root, first + child);
        root = child;
    }
}

/// Go's `doPivot` / `doPivotByFreq`.
fn do_pivot<F: Fn(&LiteralNode, &LiteralNode) -> bool + Copy>(
    data: &mut [LiteralNode],
    lo: usize,
    hi: usize,
    less: F,
) -> (usize, usize) {
    let m = (lo + hi) >> 1;
    if hi - lo > 40 {
        // Tukey's ninther.
        let s = (hi - lo) / 8;
        median_of_three(data, lo, lo + s, lo + 2 * s, less);
        median_of_three(data, m, m - s, m + s, less);
        median_of_three(data, hi - 1, hi - 1 - s, hi - 1 - 2 * s, less);
    }
    median_of_three(data, lo, m, hi - 1, less);

    let pivot = lo;
    let (mut a, mut c) = (lo + 1, hi - 1);
    while a < c && less(&data[a], &data[pivot]) {
        a += 1;
    }
    let mut b = a;
    loop {
        while b < c && less(&data[b], &data[pivot]) {
            b += 1;
        }
        while b < c && less(&data[pivot], &data[c - 1]) {
            c -= 1;
        }
        if b >= c {
            break;
        }
        data.swap(b, c - 1);
        b += 1;
        c -= 1;
    }
    let mut protect = hi - c < 5;
    if !protect && hi - c < (hi - lo) / 4 {
        let mut dups = 0;
        if less(&data[hi - 1], &data[pivot]) {
            data.swap(c, hi - 1);
            c += 1;
            dups += 1;
        }
        if less(&data[pivot], &data[b - 1]) {
            b -= 1;
            dups += 1;
        }
        if less(&data[pivot], &data[m]) {
            data.swap(m, b - 1);
            b -= 1;
            dups += 1;
        }
        protect = dups > 1;
    }
    if protect {
        loop {
            while a < b && less(&data[pivot], &data[b - 1]) {
                b -= 1;
            }
            while a < b && less(&data[a], &data[pivot]) {
                a += 1;
            }
            if a >= b {
                break;
            }
            data.swap(a, b - 1);
            a += 1;
            b -= 1;
        }
    }
    data.swap(pivot, b - 1);
    (b - 1, c)
}

/// Go's `insertionSort` / `insertionSortByFreq`.
fn insertion_sort<F: Fn(&LiteralNode, &LiteralNode) -> bool + Copy>(
    data: &mut [LiteralNode],
    a: usize,
    b: usize,
    less: F,
) {
    for i in a + 1..b {
        let mut j = i;
        while j > a && less(&data[j], &data[j - 1]) {
            data.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// Go's `medianOfThree` / `medianOfThreeSortByFreq`.
fn median_of_three<F: Fn(&LiteralNode, &LiteralNode) -> bool + Copy>(
    data: &mut [LiteralNode],
    m1: usize,
    m0: usize,
    m2: usize,
    less: F,
) {
    if less(&data[m1], &data[m0]) {
        data.swap(m1, m0);
    }
    if less(&data[m2], &data[m1]) {
        data.swap(m2, m1);
        if less(&data[m1], &data[m0]) {
            data.swap(m1, m0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_agree_with_std() {
        let mut seed = 12345u64;
        for n in 0..300 {
            let mut v: Vec<LiteralNode> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    LiteralNode {
                        literal: i as u16,
                        freq: ((seed >> 33) % 7) as u16,
                    }
                })
                .collect();
            let mut w = v.clone();
            sort_by_freq(&mut v);
            w.sort_by_key(|x| (x.freq, x.literal));
            assert_eq!(v, w);
            sort_by_literal(&mut v);
            w.sort_by_key(|x| x.literal);
            assert_eq!(v, w);
        }
    }
}
