//! Level 1; mirrors klauspost/compress/flate level1.go (`fastEncL1`).

use super::fast_gen::{
    add_match_long, emit_lits, emit_remainder, hash5, load3232, load6432, match_len, new_table,
    rebase_table, FastEnc, FastGen, BASE_MATCH_OFFSET, BUFFER_RESET, INPUT_MARGIN,
    MAX_MATCH_OFFSET, TABLE_BITS, TABLE_SIZE,
};
use super::token::Tokens;

/// Go's `fastEncL1`: one 5-byte hash table, 2 probes per step.
pub struct FastEncL1 {
    g: FastGen,
    table: Box<[i32; TABLE_SIZE]>,
}

impl FastEncL1 {
    pub(super) fn new(cur: i32) -> Self {
        FastEncL1 {
            g: FastGen::new(cur),
            table: new_table(),
        }
    }
}

impl FastEnc for FastEncL1 {
    /// Go's `(*fastEncL1).Encode`.
    fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        // Go: hashLen(cv, tableBits, hashBytes) with hashBytes = 5.
        let hash = |u: u64| hash5(u, TABLE_BITS);

        // Protect against e.cur wraparound.
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            // Shift down everything in the table that isn't already too far away.
            let min_off = self.g.cur + self.g.hist.len() as i32 - MAX_MATCH_OFFSET;
            rebase_table(&mut self.table[..], self.g.cur, min_off);
            self.g.cur = MAX_MATCH_OFFSET;
        }

        let Some(mut s) = self.g.begin(dst, src) else {
            return;
        };
        let table = &mut *self.table;
        let cur = self.g.cur;
        // Override src
        let src = &self.g.hist[..];
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load6432(src, s);

        'outer: loop {
            const SKIP_LOG: i32 = 5;
            const DO_EVERY: i32 = 2;

            let mut next_s;
            let mut candidate;
            loop {
                let mut next_hash = hash(cv);
                candidate = table[next_hash];
                next_s = s + DO_EVERY + ((s - next_emit) >> SKIP_LOG);
                if next_s > s_limit {
                    break 'outer;
                }

                let mut now = load6432(src, next_s);
                table[next_hash] = s + cur;
                next_hash = hash(now);

                let offset = s - (candidate - cur);
                if offset < MAX_MATCH_OFFSET && cv as u32 == load3232(src, candidate - cur) {
                    table[next_hash] = next_s + cur;
                    break;
                }

                // Do one right away...
                cv = now;
                s = next_s;
                next_s += 1;
                candidate = table[next_hash];
                now >>= 8;
                table[next_hash] = s + cur;

                let offset = s - (candidate - cur);
                if offset < MAX_MATCH_OFFSET && cv as u32 == load3232(src, candidate - cur) {
                    table[next_hash] = next_s + cur;
                    break;
                }
                cv = now;
                s = next_s;
            }

            // A 4-byte match has been found; src[next_emit..s] is unmatched.
            loop {
                // Extend the 4-byte match as long as possible (Go inlines
                // matchLen here; same result).
                let mut t = candidate - cur;
                let mut l = 4 + match_len(&src[(s + 4) as usize..], &src[(t + 4) as usize..]);

                // Extend backwards
                while t > 0 && s > next_emit && src[(t - 1) as usize] == src[(s - 1) as usize] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                if next_emit < s {
                    emit_lits(dst, &src[next_emit as usize..s as usize]);
                }

                // Save the match found
                add_match_long(dst, l, (s - t - BASE_MATCH_OFFSET) as u32);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    // Index first pair after match end.
                    if ((s + l + 8) as usize) < src.len() {
                        let cv = load6432(src, s);
                        table[hash(cv)] = s + cur;
                    }
                    break 'outer;
                }

                // Update the table at s-2 and s from one 64-bit load.
                let mut x = load6432(src, s - 2);
                let o = cur + s - 2;
                let prev_hash = hash(x);
                table[prev_hash] = o;
                x >>= 16;
                let curr_hash = hash(x);
                candidate = table[curr_hash];
                table[curr_hash] = o + 2;

                let offset = s - (candidate - cur);
                if offset > MAX_MATCH_OFFSET || x as u32 != load3232(src, candidate - cur) {
                    cv = x >> 8;
                    s += 1;
                    break;
                }
            }
        }

        emit_remainder(dst, src, next_emit);
    }

    /// Go's `(*fastGen).Reset`.
    fn reset(&mut self) {
        self.g.reset();
    }
}
