//! Level 6; mirrors klauspost/compress/flate level6.go (`fastEncL6`).

use super::fast_gen::{
    add_match_long, emit_lits, emit_remainder, extend_back, hash4, hash7, load3232, load6432,
    matchlen, matchlen_long, new_table, prefetch, rebase_table, FastEnc, FastGen, TableEntryPrev,
    BASE_MATCH_OFFSET, BUFFER_RESET, INPUT_MARGIN, MAX_MATCH_LENGTH, MAX_MATCH_OFFSET, TABLE_BITS,
    TABLE_SIZE,
};
use super::level5::{push, rebase_table_prev};
use super::token::Tokens;

/// Go's `fastEncL6`: level 5's tables plus a repeat-offset check and
/// denser indexing.
pub struct FastEncL6 {
    g: FastGen,
    table: Box<[i32; TABLE_SIZE]>,
    b_table: Box<[TableEntryPrev; TABLE_SIZE]>,
}

impl FastEncL6 {
    pub(super) fn new(cur: i32) -> Self {
        FastEncL6 {
            g: FastGen::new(cur),
            table: new_table(),
            b_table: new_table(),
        }
    }
}

impl FastEnc for FastEncL6 {
    /// Go's `(*fastEncL6).Encode`.
    fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        // Go: hashLen(cv, tableBits, hashShortBytes) with hashShortBytes = 4.
        let hash_s = |u: u64| hash4(u, TABLE_BITS);
        let hash_l = |u: u64| hash7(u, TABLE_BITS);

        // Protect against e.cur wraparound.
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(0);
                self.b_table.fill(TableEntryPrev::default());
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            // Shift down everything in the table that isn't already too far away.
            let min_off = self.g.cur + self.g.hist.len() as i32 - MAX_MATCH_OFFSET;
            rebase_table(&mut self.table[..], self.g.cur, min_off);
            rebase_table_prev(&mut self.b_table[..], self.g.cur, min_off);
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
        // Repeat MUST be > 1 and within range
        let mut repeat: i32 = 1;

        'outer: loop {
            const SKIP_LOG: i32 = 7;
            const DO_EVERY: i32 = 1;

            let mut next_s = s;
            let mut l: i32 = 0;
            let mut t;
            loop {
                let mut next_hash_s = hash_s(cv);
                let mut next_hash_l = hash_l(cv);
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
                // Nothing wrote b_table since l_candidate was read.
                b_table[next_hash_l] = TableEntryPrev {
                    cur: entry,
                    prev: l_candidate.cur,
                };

                // Calculate hashes of 'next'
                next_hash_s = hash_s(next);
                next_hash_l = hash_l(next);
                prefetch(&table[next_hash_s]);
                prefetch(&b_table[next_hash_l]);

                t = l_candidate.cur - cur;
                if s - t < MAX_MATCH_OFFSET {
                    if cv as u32 == load3232(src, l_candidate.cur - cur) {
                        // Long candidate matches at least 4 bytes.

                        // Store the next match
                        table[next_hash_s] = next_s + cur;
                        push(&mut b_table[next_hash_l], next_s + cur);

                        // Check the previous long candidate as well.
                        let t2 = l_candidate.prev - cur;
                        if s - t2 < MAX_MATCH_OFFSET
                            && cv as u32 == load3232(src, l_candidate.prev - cur)
                        {
                            l = matchlen(s + 4, t + 4, src) + 4;
                            let ml1 = matchlen(s + 4, t2 + 4, src) + 4;
                            if ml1 > l {
                                t = t2;
                                l = ml1;
                                break;
                            }
                        }
                        break;
                    }
                    // Current value did not match, but check if previous long value does.
                    t = l_candidate.prev - cur;
                    if s - t < MAX_MATCH_OFFSET
                        && cv as u32 == load3232(src, l_candidate.prev - cur)
                    {
                        // Store the next match
                        table[next_hash_s] = next_s + cur;
                        push(&mut b_table[next_hash_l], next_s + cur);
                        break;
                    }
                }

                t = s_candidate - cur;
                if s - t < MAX_MATCH_OFFSET && cv as u32 == load3232(src, s_candidate - cur) {
                    // Found a 4 match...
                    l = matchlen(s + 4, t + 4, src) + 4;

                    // Look up next long candidate (at nextS)
                    l_candidate = b_table[next_hash_l];

                    // Store the next match
                    table[next_hash_s] = next_s + cur;
                    push(&mut b_table[next_hash_l], next_s + cur);

                    // Check repeat at s + repOff
                    const REP_OFF: i32 = 1;
                    let mut t2 = s - repeat + REP_OFF;
                    if load3232(src, t2) == (cv >> (8 * REP_OFF)) as u32 {
                        let ml = matchlen(s + 4 + REP_OFF, t2 + 4, src) + 4;
                        if ml > l {
                            t = t2;
                            l = ml;
                            s += REP_OFF;
                            // Not worth checking more.
                            break;
                        }
                    }

                    // If the next long is a candidate, use that...
                    t2 = l_candidate.cur - cur;
                    if next_s - t2 < MAX_MATCH_OFFSET {
                        if load3232(src, l_candidate.cur - cur) == next as u32 {
                            let ml = matchlen(next_s + 4, t2 + 4, src) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                // This is ok, but check previous as well.
                            }
                        }
                        // If the previous long is a candidate, use that...
                        t2 = l_candidate.prev - cur;
                        if next_s - t2 < MAX_MATCH_OFFSET
                            && load3232(src, l_candidate.prev - cur) == next as u32
                        {
                            let ml = matchlen(next_s + 4, t2 + 4, src) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                break;
                            }
                        }
                    }
                    break;
                }
                cv = next;
            }

            // Extend the 4-byte match as long as possible.
            if l == 0 {
                l = matchlen_long(s + 4, t + 4, src) + 4;
            } else if l == MAX_MATCH_LENGTH {
                l += matchlen_long(s + l, t + l, src);
            }

            // Try to locate a better match by checking the end-of-match...
            let s_at = s + l;
            if s_at < s_limit {
                // Allow some bytes at the beginning to mismatch; backward
                // extension picks them up again if they do match.
                const SKIP_BEGINNING: i32 = 2;
                let e_long = b_table[hash_l(load6432(src, s_at))];
                // Test current
                let mut t2 = e_long.cur - cur - l + SKIP_BEGINNING;
                let s2 = s + SKIP_BEGINNING;
                let off = s2 - t2;
                if off < MAX_MATCH_OFFSET {
                    if off > 0 && t2 >= 0 {
                        let l2 = matchlen_long(s2, t2, src);
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                    // Test next (note: uses the possibly updated l).
                    t2 = e_long.prev - cur - l + SKIP_BEGINNING;
                    let off = s2 - t2;
                    if off > 0 && off < MAX_MATCH_OFFSET && t2 >= 0 {
                        let l2 = matchlen_long(s2, t2, src);
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                }
            }

            // Extend backwards
            let back = extend_back(src, s, t, next_emit);
            s -= back;
            t -= back;
            l += back;
            if next_emit < s {
                emit_lits(dst, &src[next_emit as usize..s as usize]);
            }

            add_match_long(dst, l, (s - t - BASE_MATCH_OFFSET) as u32);
            repeat = s - t;
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }

            if s >= s_limit {
                // Index after match end.
                let mut i = next_s + 1;
                while i < src.len() as i32 - 8 {
                    let cv = load6432(src, i);
                    table[hash_s(cv)] = i + cur;
                    push(&mut b_table[hash_l(cv)], i + cur);
                    i += 2;
                }
                break 'outer;
            }

            // Store every long hash in-between and every second short.
            let mut i = next_s + 1;
            while i < s - 1 {
                let cv = load6432(src, i);
                let t = i + cur;
                let t2 = t + 1;
                let h_l = hash_l(cv);
                let h_l2 = hash_l(cv >> 8);
                table[hash_s(cv)] = t;
                push(&mut b_table[h_l], t);
                push(&mut b_table[h_l2], t2);
                i += 2;
            }

            // Update the hash table at s-1 and at s.
            cv = load6432(src, s);
        }

        emit_remainder(dst, src, next_emit);
    }

    /// Go's `(*fastGen).Reset`.
    fn reset(&mut self) {
        self.g.reset();
    }
}
