//! Level 4; mirrors klauspost/compress/flate level4.go (`fastEncL4`).

use super::fast_gen::{
    add_match_long, emit_lits, emit_remainder, hash4, hash7, load3232, load6432, match_len,
    matchlen_long, new_table, rebase_table, FastEnc, FastGen, BASE_MATCH_OFFSET, BUFFER_RESET,
    INPUT_MARGIN, MAX_MATCH_OFFSET, TABLE_BITS, TABLE_SIZE,
};
use super::token::Tokens;

/// Go's `fastEncL4`: a 4-byte (short) and a 7-byte (long) hash table.
pub struct FastEncL4 {
    g: FastGen,
    table: Box<[i32; TABLE_SIZE]>,
    b_table: Box<[i32; TABLE_SIZE]>,
}

impl FastEncL4 {
    pub(super) fn new(cur: i32) -> Self {
        FastEncL4 {
            g: FastGen::new(cur),
            table: new_table(),
            b_table: new_table(),
        }
    }
}

impl FastEnc for FastEncL4 {
    /// Go's `(*fastEncL4).Encode`.
    fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        // Go: hashLen(cv, tableBits, hashShortBytes) with hashShortBytes = 4.
        let hash_s = |u: u64| hash4(u, TABLE_BITS);
        let hash_l = |u: u64| hash7(u, TABLE_BITS);

        // Protect against e.cur wraparound.
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.b_table.fill(0);
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            // Shift down everything in the table that isn't already too far away.
            let min_off = self.g.cur + self.g.hist.len() as i32 - MAX_MATCH_OFFSET;
            rebase_table(&mut self.table[..], self.g.cur, min_off);
            rebase_table(&mut self.b_table[..], self.g.cur, min_off);
            self.g.cur = MAX_MATCH_OFFSET;
        }

        let Some(mut s) = self.g.begin(dst, src) else {
            return;
        };
        let table = &mut *self.table;
        let b_table = &mut *self.b_table;
        let cur = self.g.cur;
        // Override src
        let src = &self.g.hist[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load6432(src, s);

        'outer: loop {
            const SKIP_LOG: i32 = 6;
            const DO_EVERY: i32 = 1;

            let mut next_s = s;
            let mut t;
            loop {
                let next_hash_s = hash_s(cv);
                let next_hash_l = hash_l(cv);

                s = next_s;
                next_s = s + DO_EVERY + ((s - next_emit) >> SKIP_LOG);
                if next_s > s_limit {
                    break 'outer;
                }
                // Fetch a short+long candidate
                let s_candidate = table[next_hash_s];
                let mut l_candidate = b_table[next_hash_l];
                let next = load6432(src, next_s);
                let entry = s + cur;
                table[next_hash_s] = entry;
                b_table[next_hash_l] = entry;

                t = l_candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load3232(src, l_candidate - cur) {
                    // We got a long match. Use that.
                    break;
                }

                t = s_candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load3232(src, s_candidate - cur) {
                    // Found a 4 match...
                    l_candidate = b_table[hash_l(next)];

                    // If the next long is a candidate, check if we should use that instead...
                    let l_off = next_s - (l_candidate - cur);
                    if l_off < MAX_MATCH_OFFSET && load3232(src, l_candidate - cur) == next as u32 {
                        let l1 = match_len(&src[(s + 4) as usize..], &src[(t + 4) as usize..]);
                        let l2 = match_len(
                            &src[(next_s + 4) as usize..],
                            &src[(next_s - l_off + 4) as usize..],
                        );
                        if l2 > l1 {
                            s = next_s;
                            t = l_candidate - cur;
                        }
                    }
                    break;
                }
                cv = next;
            }

            // Extend the 4-byte match as long as possible.
            let mut l = matchlen_long(s + 4, t + 4, src) + 4;

            // Extend backwards
            while t > 0 && s > next_emit && src[(t - 1) as usize] == src[(s - 1) as usize] {
                s -= 1;
                t -= 1;
                l += 1;
            }
            if next_emit < s {
                emit_lits(dst, &src[next_emit as usize..s as usize]);
            }

            add_match_long(dst, l, (s - t - BASE_MATCH_OFFSET) as u32);
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }

            if s >= s_limit {
                // Index first pair after match end.
                if ((s + 8) as usize) < src.len() {
                    let cv = load6432(src, s);
                    table[hash_s(cv)] = s + cur;
                    b_table[hash_l(cv)] = s + cur;
                }
                break 'outer;
            }

            // Store every 3rd hash in-between
            let mut i = next_s;
            if i < s - 1 {
                let cv = load6432(src, i);
                let t = i + cur;
                let t2 = t + 1;
                b_table[hash_l(cv)] = t;
                b_table[hash_l(cv >> 8)] = t2;
                table[hash_s(cv >> 8)] = t2;

                i += 3;
                while i < s - 1 {
                    let cv = load6432(src, i);
                    let t = i + cur;
                    let t2 = t + 1;
                    b_table[hash_l(cv)] = t;
                    b_table[hash_l(cv >> 8)] = t2;
                    table[hash_s(cv >> 8)] = t2;
                    i += 3;
                }
            }

            // Update the hash table at s-1 and at s.
            let x = load6432(src, s - 1);
            let o = cur + s - 1;
            table[hash_s(x)] = o;
            b_table[hash_l(x)] = o;
            cv = x >> 8;
        }

        emit_remainder(dst, src, next_emit);
    }

    /// Go's `(*fastGen).Reset`.
    fn reset(&mut self) {
        self.g.reset();
    }
}
