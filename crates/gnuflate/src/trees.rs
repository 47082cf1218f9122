//! Symbol buffering and block output (gzip's trees.c): `tally` records
//! literals and matches and says when to cut a block, `flush_block` picks
//! stored, fixed or dynamic Huffman codes and writes the block. Tie-breaks,
//! the bit-length overflow fix-up and the cost sums are gzip's, since each
//! decides bytes of output.

use crate::bits::{reverse, Bits};

const MAX_BITS: usize = 15;
const MAX_BL_BITS: usize = 7;
const LENGTH_CODES: usize = 29;
const LITERALS: usize = 256;
const END_BLOCK: usize = 256;
const L_CODES: usize = LITERALS + 1 + LENGTH_CODES;
const D_CODES: usize = 30;
const BL_CODES: usize = 19;
const HEAP_SIZE: usize = 2 * L_CODES + 1;
/// gzip's LIT_BUFSIZE and DIST_BUFSIZE (not SMALL_MEM or MEDIUM_MEM).
const LIT_BUFSIZE: usize = 0x8000;
const DIST_BUFSIZE: usize = LIT_BUFSIZE;

const REP_3_6: usize = 16;
const REPZ_3_10: usize = 17;
const REPZ_11_138: usize = 18;

const STORED_BLOCK: u32 = 0;
const STATIC_TREES: u32 = 1;
const DYN_TREES: u32 = 2;

const EXTRA_LBITS: [u8; LENGTH_CODES] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const EXTRA_DBITS: [u8; D_CODES] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
const EXTRA_BLBITS: [u8; BL_CODES] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7];
const BL_ORDER: [usize; BL_CODES] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// One Huffman tree, leaves then internal nodes. gzip overlays Freq with
/// Code and Dad with Len; no value is read after its overlay partner was
/// written, except the scan guard (kept in `len` as gzip keeps it).
struct Tree {
    freq: Vec<u16>,
    code: Vec<u16>,
    dad: Vec<u16>,
    len: Vec<u16>,
    /// Largest code with a non-zero frequency (`tree_desc.max_code`).
    max_code: usize,
}

impl Tree {
    fn new(n: usize) -> Tree {
        Tree {
            freq: vec![0; n],
            code: vec![0; n],
            dad: vec![0; n],
            len: vec![0; n],
            max_code: 0,
        }
    }
}

/// What `build_tree` needs to know of a tree (`tree_desc` less the arrays).
struct Desc {
    extra: &'static [u8],
    extra_base: usize,
    elems: usize,
    max_length: usize,
}

const L_DESC: Desc = Desc {
    extra: &EXTRA_LBITS,
    extra_base: LITERALS + 1,
    elems: L_CODES,
    max_length: MAX_BITS,
};
const D_DESC: Desc = Desc {
    extra: &EXTRA_DBITS,
    extra_base: 0,
    elems: D_CODES,
    max_length: MAX_BITS,
};
const BL_DESC: Desc = Desc {
    extra: &EXTRA_BLBITS,
    extra_base: 0,
    elems: BL_CODES,
    max_length: MAX_BL_BITS,
};

/// The heap and counters `build_tree` shares across trees.
struct Build {
    heap: [usize; HEAP_SIZE],
    heap_len: usize,
    heap_max: usize,
    depth: [u8; HEAP_SIZE],
    bl_count: [u16; MAX_BITS + 1],
    /// Bit length of the block with the dynamic (`opt_len`) and fixed
    /// (`static_len`) codes; unsigned long in gzip, and it wraps below zero
    /// on the way, so wrapping here too.
    opt_len: u64,
    static_len: u64,
}

pub(crate) struct Trees {
    /// gzip's global `level`: the early block cut applies above 2.
    level: u32,
    ltree: Tree,
    dtree: Tree,
    bltree: Tree,
    static_lcode: [u16; L_CODES + 2],
    static_llen: [u16; L_CODES + 2],
    static_dcode: [u16; D_CODES],
    b: Build,
    length_code: [u8; 256],
    dist_code: [u8; 512],
    base_length: [u16; LENGTH_CODES],
    base_dist: [u16; D_CODES],
    /// The block's symbols: (distance, length - 3) or (0, literal).
    syms: Vec<(u16, u8)>,
    last_dist: usize,
}

impl Trees {
    /// `ct_init` and the first `init_block`.
    pub(crate) fn new(level: u32) -> Trees {
        let mut length_code = [0u8; 256];
        let mut base_length = [0u16; LENGTH_CODES];
        let mut length = 0usize;
        let mut code = 0usize;
        while code < LENGTH_CODES - 1 {
            base_length[code] = length as u16;
            for _ in 0..(1 << EXTRA_LBITS[code]) {
                length_code[length] = code as u8;
                length += 1;
            }
            code += 1;
        }
        // Length 258 has two codes: gzip uses 285.
        length_code[length - 1] = code as u8;

        let mut dist_code = [0u8; 512];
        let mut base_dist = [0u16; D_CODES];
        let mut dist = 0usize;
        code = 0;
        while code < 16 {
            base_dist[code] = dist as u16;
            for _ in 0..(1 << EXTRA_DBITS[code]) {
                dist_code[dist] = code as u8;
                dist += 1;
            }
            code += 1;
        }
        dist >>= 7;
        while code < D_CODES {
            base_dist[code] = (dist << 7) as u16;
            for _ in 0..(1 << (EXTRA_DBITS[code] - 7)) {
                dist_code[256 + dist] = code as u8;
                dist += 1;
            }
            code += 1;
        }

        let mut b = Build {
            heap: [0; HEAP_SIZE],
            heap_len: 0,
            heap_max: 0,
            depth: [0; HEAP_SIZE],
            bl_count: [0; MAX_BITS + 1],
            opt_len: 0,
            static_len: 0,
        };
        let mut static_llen = [0u16; L_CODES + 2];
        for (n, l) in static_llen.iter_mut().enumerate() {
            *l = match n {
                0..=143 => 8,
                144..=255 => 9,
                256..=279 => 7,
                _ => 8,
            };
            b.bl_count[*l as usize] += 1;
        }
        let mut static_lcode = [0u16; L_CODES + 2];
        gen_codes(&mut static_lcode, &static_llen, L_CODES + 1, &b.bl_count);
        let mut static_dcode = [0u16; D_CODES];
        for (n, c) in static_dcode.iter_mut().enumerate() {
            *c = reverse(n as u32, 5) as u16;
        }

        let mut t = Trees {
            level,
            ltree: Tree::new(HEAP_SIZE),
            dtree: Tree::new(2 * D_CODES + 1),
            bltree: Tree::new(2 * BL_CODES + 1),
            static_lcode,
            static_llen,
            static_dcode,
            b,
            length_code,
            dist_code,
            base_length,
            base_dist,
            syms: Vec::with_capacity(LIT_BUFSIZE),
            last_dist: 0,
        };
        t.init_block();
        t
    }

    fn init_block(&mut self) {
        self.ltree.freq[..L_CODES].fill(0);
        self.dtree.freq[..D_CODES].fill(0);
        self.bltree.freq[..BL_CODES].fill(0);
        self.ltree.freq[END_BLOCK] = 1;
        self.b.opt_len = 0;
        self.b.static_len = 0;
        self.syms.clear();
        self.last_dist = 0;
    }

    #[inline]
    fn d_code(&self, dist: usize) -> usize {
        if dist < 256 {
            self.dist_code[dist] as usize
        } else {
            self.dist_code[256 + (dist >> 7)] as usize
        }
    }

    /// `ct_tally`: a literal (`dist` 0, `lc` the byte) or a match (`lc` its
    /// length - 3). True when the block should end here. `in_len` is
    /// `strstart - block_start` at the call, for the early-cut guess.
    #[inline]
    pub(crate) fn tally(&mut self, dist: usize, lc: usize, in_len: u64) -> bool {
        if dist == 0 {
            self.ltree.freq[lc] += 1;
        } else {
            let d = dist - 1;
            self.ltree.freq[self.length_code[lc] as usize + LITERALS + 1] += 1;
            let dc = self.d_code(d);
            self.dtree.freq[dc] += 1;
            self.last_dist += 1;
        }
        self.syms.push((dist as u16, lc as u8));
        let last_lit = self.syms.len();
        if self.level > 2 && last_lit & 0xfff == 0 {
            // Cut early when the block so far looks compressible enough
            // (an upper bound on its output against its input).
            let mut out_length = last_lit as u64 * 8;
            for (dcode, &x) in EXTRA_DBITS.iter().enumerate() {
                out_length += u64::from(self.dtree.freq[dcode]) * (5 + u64::from(x));
            }
            out_length >>= 3;
            if self.last_dist < last_lit / 2 && out_length < in_len / 2 {
                return true;
            }
        }
        // LIT_BUFSIZE - 1: gzip avoids 64 Ki wrap-around on 16-bit machines.
        last_lit == LIT_BUFSIZE - 1 || self.last_dist == DIST_BUFSIZE
    }

    /// `flush_block`: writes the block. `stored` is the block's input when
    /// it is still in the window (gzip's `buf`), `stored_len` its length.
    pub(crate) fn flush_block(
        &mut self,
        bits: &mut Bits,
        stored: Option<&[u8]>,
        stored_len: u64,
        eof: bool,
    ) {
        build_tree(
            &mut self.ltree,
            &mut self.b,
            &L_DESC,
            Some(&self.static_llen[..]),
        );
        build_tree(
            &mut self.dtree,
            &mut self.b,
            &D_DESC,
            Some(&[5u16; D_CODES][..]),
        );
        let max_blindex = self.build_bl_tree();

        let mut opt_lenb = self.b.opt_len.wrapping_add(3 + 7) >> 3;
        let static_lenb = self.b.static_len.wrapping_add(3 + 7) >> 3;
        if static_lenb <= opt_lenb {
            opt_lenb = static_lenb;
        }
        // gzip's stdout is never `seekable()`: no whole-file stored method.
        let eofbit = u32::from(eof);
        match stored {
            Some(buf) if stored_len + 4 <= opt_lenb => {
                bits.send((STORED_BLOCK << 1) + eofbit, 3);
                bits.stored(buf);
            }
            _ if static_lenb == opt_lenb => {
                bits.send((STATIC_TREES << 1) + eofbit, 3);
                self.compress_block(bits, true);
            }
            _ => {
                bits.send((DYN_TREES << 1) + eofbit, 3);
                self.send_all_trees(
                    bits,
                    self.ltree.max_code + 1,
                    self.dtree.max_code + 1,
                    max_blindex + 1,
                );
                self.compress_block(bits, false);
            }
        }
        self.init_block();
        if eof {
            bits.windup();
        }
    }

    fn build_bl_tree(&mut self) -> usize {
        scan_tree(
            &mut self.ltree.len,
            self.ltree.max_code,
            &mut self.bltree.freq,
        );
        scan_tree(
            &mut self.dtree.len,
            self.dtree.max_code,
            &mut self.bltree.freq,
        );
        build_tree(&mut self.bltree, &mut self.b, &BL_DESC, None);
        let mut max_blindex = BL_CODES - 1;
        while max_blindex >= 3 {
            if self.bltree.len[BL_ORDER[max_blindex]] != 0 {
                break;
            }
            max_blindex -= 1;
        }
        self.b.opt_len = self
            .b
            .opt_len
            .wrapping_add(3 * (max_blindex as u64 + 1) + 5 + 5 + 4);
        max_blindex
    }

    fn send_all_trees(&self, bits: &mut Bits, lcodes: usize, dcodes: usize, blcodes: usize) {
        bits.send((lcodes - 257) as u32, 5);
        bits.send((dcodes - 1) as u32, 5);
        bits.send((blcodes - 4) as u32, 4);
        for &o in &BL_ORDER[..blcodes] {
            bits.send(u32::from(self.bltree.len[o]), 3);
        }
        send_tree(bits, &self.ltree.len, lcodes - 1, &self.bltree);
        send_tree(bits, &self.dtree.len, dcodes - 1, &self.bltree);
    }

    fn compress_block(&self, bits: &mut Bits, fixed: bool) {
        let (lcode, llen, dcode): (&[u16], &[u16], &[u16]) = if fixed {
            (&self.static_lcode, &self.static_llen, &self.static_dcode)
        } else {
            (&self.ltree.code, &self.ltree.len, &self.dtree.code)
        };
        let dlen = |c: usize| -> u32 {
            if fixed {
                5
            } else {
                u32::from(self.dtree.len[c])
            }
        };
        for &(dist, lc) in &self.syms {
            let lc = lc as usize;
            if dist == 0 {
                bits.send(u32::from(lcode[lc]), u32::from(llen[lc]));
            } else {
                let code = self.length_code[lc] as usize;
                let sym = code + LITERALS + 1;
                bits.send(u32::from(lcode[sym]), u32::from(llen[sym]));
                let extra = u32::from(EXTRA_LBITS[code]);
                if extra != 0 {
                    bits.send((lc - self.base_length[code] as usize) as u32, extra);
                }
                let d = dist as usize - 1;
                let code = self.d_code(d);
                bits.send(u32::from(dcode[code]), dlen(code));
                let extra = u32::from(EXTRA_DBITS[code]);
                if extra != 0 {
                    bits.send((d - self.base_dist[code] as usize) as u32, extra);
                }
            }
        }
        bits.send(u32::from(lcode[END_BLOCK]), u32::from(llen[END_BLOCK]));
    }
}

/// gzip's `smaller`: by frequency, then by depth.
#[inline]
fn smaller(freq: &[u16], depth: &[u8], n: usize, m: usize) -> bool {
    freq[n] < freq[m] || (freq[n] == freq[m] && depth[n] <= depth[m])
}

fn pqdownheap(freq: &[u16], b: &mut Build, mut k: usize) {
    let v = b.heap[k];
    let mut j = k << 1;
    while j <= b.heap_len {
        if j < b.heap_len && smaller(freq, &b.depth, b.heap[j + 1], b.heap[j]) {
            j += 1;
        }
        if smaller(freq, &b.depth, v, b.heap[j]) {
            break;
        }
        b.heap[k] = b.heap[j];
        k = j;
        j <<= 1;
    }
    b.heap[k] = v;
}

/// `build_tree` with `gen_bitlen` and `gen_codes`. `stree`: the fixed code
/// lengths, to cost the block with them too.
fn build_tree(tree: &mut Tree, b: &mut Build, desc: &Desc, stree: Option<&[u16]>) {
    let elems = desc.elems;
    let mut max_code: isize = -1;
    let mut node = elems;
    b.heap_len = 0;
    b.heap_max = HEAP_SIZE;
    for n in 0..elems {
        if tree.freq[n] != 0 {
            b.heap_len += 1;
            b.heap[b.heap_len] = n;
            max_code = n as isize;
            b.depth[n] = 0;
        } else {
            tree.len[n] = 0;
        }
    }
    // At least two codes, so that at least one bit is sent per symbol.
    while b.heap_len < 2 {
        let new = if max_code < 2 {
            max_code += 1;
            max_code as usize
        } else {
            0
        };
        b.heap_len += 1;
        b.heap[b.heap_len] = new;
        tree.freq[new] = 1;
        b.depth[new] = 0;
        b.opt_len = b.opt_len.wrapping_sub(1);
        if let Some(s) = stree {
            b.static_len = b.static_len.wrapping_sub(u64::from(s[new]));
        }
    }
    let max_code = max_code as usize;
    tree.max_code = max_code;

    for n in (1..=b.heap_len / 2).rev() {
        pqdownheap(&tree.freq, b, n);
    }
    loop {
        // pqremove
        let n = b.heap[1];
        b.heap[1] = b.heap[b.heap_len];
        b.heap_len -= 1;
        pqdownheap(&tree.freq, b, 1);
        let m = b.heap[1];
        b.heap_max -= 1;
        b.heap[b.heap_max] = n;
        b.heap_max -= 1;
        b.heap[b.heap_max] = m;
        tree.freq[node] = tree.freq[n].wrapping_add(tree.freq[m]);
        b.depth[node] = b.depth[n].max(b.depth[m]).wrapping_add(1);
        tree.dad[n] = node as u16;
        tree.dad[m] = node as u16;
        b.heap[1] = node;
        node += 1;
        pqdownheap(&tree.freq, b, 1);
        if b.heap_len < 2 {
            break;
        }
    }
    b.heap_max -= 1;
    b.heap[b.heap_max] = b.heap[1];

    gen_bitlen(tree, b, desc, stree, max_code);
    let bl_count = b.bl_count;
    gen_codes(&mut tree.code, &tree.len, max_code, &bl_count);
}

fn gen_bitlen(tree: &mut Tree, b: &mut Build, desc: &Desc, stree: Option<&[u16]>, max_code: usize) {
    let max_length = desc.max_length;
    b.bl_count = [0; MAX_BITS + 1];
    let mut overflow = 0i32;
    tree.len[b.heap[b.heap_max]] = 0;
    let mut h = b.heap_max + 1;
    while h < HEAP_SIZE {
        let n = b.heap[h];
        h += 1;
        let mut bits = tree.len[tree.dad[n] as usize] as usize + 1;
        if bits > max_length {
            bits = max_length;
            overflow += 1;
        }
        tree.len[n] = bits as u16;
        if n > max_code {
            continue;
        }
        b.bl_count[bits] += 1;
        let xbits = if n >= desc.extra_base {
            desc.extra[n - desc.extra_base] as u64
        } else {
            0
        };
        let f = u64::from(tree.freq[n]);
        b.opt_len = b.opt_len.wrapping_add(f * (bits as u64 + xbits));
        if let Some(s) = stree {
            b.static_len = b.static_len.wrapping_add(f * (u64::from(s[n]) + xbits));
        }
    }
    if overflow == 0 {
        return;
    }
    // Move leaves down until the lengths fit (gzip's, after 'ar').
    loop {
        let mut bits = max_length - 1;
        while b.bl_count[bits] == 0 {
            bits -= 1;
        }
        b.bl_count[bits] -= 1;
        b.bl_count[bits + 1] += 2;
        b.bl_count[max_length] -= 1;
        overflow -= 2;
        if overflow <= 0 {
            break;
        }
    }
    // h == HEAP_SIZE: reassign lengths in increasing frequency order.
    let mut h = HEAP_SIZE;
    for bits in (1..=max_length).rev() {
        let mut n = b.bl_count[bits];
        while n != 0 {
            h -= 1;
            let m = b.heap[h];
            if m > max_code {
                continue;
            }
            if tree.len[m] as usize != bits {
                let delta = (bits as i64 - i64::from(tree.len[m])) * i64::from(tree.freq[m]);
                b.opt_len = b.opt_len.wrapping_add(delta as u64);
                tree.len[m] = bits as u16;
            }
            n -= 1;
        }
    }
}

fn gen_codes(code: &mut [u16], len: &[u16], max_code: usize, bl_count: &[u16; MAX_BITS + 1]) {
    let mut next_code = [0u16; MAX_BITS + 1];
    let mut c = 0u16;
    for bits in 1..=MAX_BITS {
        c = c.wrapping_add(bl_count[bits - 1]) << 1;
        next_code[bits] = c;
    }
    for n in 0..=max_code {
        let l = len[n] as usize;
        if l == 0 {
            continue;
        }
        code[n] = reverse(u32::from(next_code[l]), l as u32) as u16;
        next_code[l] = next_code[l].wrapping_add(1);
    }
}

/// Run-length state shared by `scan_tree` and `send_tree`.
fn run_limits(curlen: u16, nextlen: u16) -> (usize, usize) {
    if nextlen == 0 {
        (138, 3)
    } else if curlen == nextlen {
        (6, 3)
    } else {
        (7, 4)
    }
}

/// Counts the code-length codes a tree's lengths need (`scan_tree`); leaves
/// gzip's guard (0xffff) after the last code.
fn scan_tree(len: &mut [u16], max_code: usize, bl_freq: &mut [u16]) {
    let mut prevlen: i32 = -1;
    let mut nextlen = len[0];
    let mut count = 0usize;
    let (mut max_count, mut min_count) = if nextlen == 0 { (138, 3) } else { (7, 4) };
    len[max_code + 1] = 0xffff;
    for n in 0..=max_code {
        let curlen = nextlen;
        nextlen = len[n + 1];
        count += 1;
        if count < max_count && curlen == nextlen {
            continue;
        } else if count < min_count {
            bl_freq[curlen as usize] += count as u16;
        } else if curlen != 0 {
            if i32::from(curlen) != prevlen {
                bl_freq[curlen as usize] += 1;
            }
            bl_freq[REP_3_6] += 1;
        } else if count <= 10 {
            bl_freq[REPZ_3_10] += 1;
        } else {
            bl_freq[REPZ_11_138] += 1;
        }
        count = 0;
        prevlen = i32::from(curlen);
        (max_count, min_count) = run_limits(curlen, nextlen);
    }
}

fn send_tree(bits: &mut Bits, len: &[u16], max_code: usize, bl: &Tree) {
    let send_code =
        |bits: &mut Bits, c: usize| bits.send(u32::from(bl.code[c]), u32::from(bl.len[c]));
    let mut prevlen: i32 = -1;
    let mut nextlen = len[0];
    let mut count = 0usize;
    let (mut max_count, mut min_count) = if nextlen == 0 { (138, 3) } else { (7, 4) };
    for n in 0..=max_code {
        let curlen = nextlen;
        nextlen = len[n + 1];
        count += 1;
        if count < max_count && curlen == nextlen {
            continue;
        } else if count < min_count {
            for _ in 0..count {
                send_code(bits, curlen as usize);
            }
        } else if curlen != 0 {
            if i32::from(curlen) != prevlen {
                send_code(bits, curlen as usize);
                count -= 1;
            }
            send_code(bits, REP_3_6);
            bits.send((count - 3) as u32, 2);
        } else if count <= 10 {
            send_code(bits, REPZ_3_10);
            bits.send((count - 3) as u32, 3);
        } else {
            send_code(bits, REPZ_11_138);
            bits.send((count - 11) as u32, 7);
        }
        count = 0;
        prevlen = i32::from(curlen);
        (max_count, min_count) = run_limits(curlen, nextlen);
    }
}
