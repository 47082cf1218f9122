//! Level 2; mirrors klauspost/compress/flate level2.go (`fastEncL2`).

use super::fast_gen::{
    add_match_long, emit_lits, emit_remainder, hash5, load3232, load6432, matchlen_long, new_table,
    rebase_table, FastEnc, FastGen, BASE_MATCH_OFFSET, BUFFER_RESET, B_TABLE_BITS, B_TABLE_SIZE,
    INPUT_MARGIN, MAX_MATCH_OFFSET,
};
use super::token::Tokens;

/// Go's `fastEncL2`: like level 1 with a bigger table and denser indexing.
pub struct FastEncL2 {
    g: FastGen,
    table: Box<[i32; B_TABLE_SIZE]>,
}

impl FastEncL2 {
    pub(super) fn new(cur: i32) -> Self {
        FastEncL2 {
            g: FastGen::new(cur),
            table: new_table(),
        }
    }
}

impl FastEnc for FastEncL2 {
    /// Go's `(*fastEncL2).Encode`.
    fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        // Go: hashLen(cv, bTableBits, hashBytes) with hashBytes = 5.
        let hash = |u: u64| hash5(u, B_TABLE_BITS);

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
            // When should we start skipping if we haven't found matches in a long while.
            const SKIP_LOG: i32 = 5;
            const DO_EVERY: i32 = 2;

            let mut next_s = s;
            let mut candidate;
            loop {
                let mut next_hash = hash(cv);
                s = next_s;
                next_s = s + DO_EVERY + ((s - next_emit) >> SKIP_LOG);
                if next_s > s_limit {
                    break 'outer;
                }
                candidate = table[next_hash];
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
                    break;
                }
                cv = now;
            }

            // A 4-byte match has been found; emit copies until no match
            // follows the last one.
            loop {
                // Extend the 4-byte match as long as possible.
                let mut t = candidate - cur;
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
                    if ((s + l + 8) as usize) < src.len() {
                        let cv = load6432(src, s);
                        table[hash(cv)] = s + cur;
                    }
                    break 'outer;
                }

                // Store every second hash in-between, but offset by 1.
                let mut i = s - l + 2;
                while i < s - 5 {
                    let mut x = load6432(src, i);
                    table[hash(x)] = cur + i;
                    // Skip one
                    x >>= 16;
                    table[hash(x)] = cur + i + 2;
                    // Skip one
                    x >>= 16;
                    table[hash(x)] = cur + i + 4;
                    i += 7;
                }

                // Update the table at s-2 to s from one 64-bit load.
                let x = load6432(src, s - 2);
                let o = cur + s - 2;
                let prev_hash = hash(x);
                let prev_hash2 = hash(x >> 8);
                table[prev_hash] = o;
                table[prev_hash2] = o + 1;
                let curr_hash = hash(x >> 16);
                candidate = table[curr_hash];
                table[curr_hash] = o + 2;

                let offset = s - (candidate - cur);
                if offset > MAX_MATCH_OFFSET || (x >> 16) as u32 != load3232(src, candidate - cur) {
                    cv = x >> 24;
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
