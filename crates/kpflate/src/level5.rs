//! Level 5; mirrors klauspost/compress/flate level5.go (`fastEncL5`).

use super::fast_gen::{
    add_match_long, emit_lits, emit_remainder, extend_back, hash4, hash7, load3232, load6432,
    matchlen, matchlen_long, new_table, prefetch, rebase_table, FastEnc, FastGen, TableEntryPrev,
    BASE_MATCH_OFFSET, BUFFER_RESET, INPUT_MARGIN, MAX_MATCH_LENGTH, MAX_MATCH_OFFSET, TABLE_BITS,
    TABLE_SIZE,
};
use super::token::Tokens;

/// Go's `fastEncL5`: short table plus a two-deep long (7-byte) table.
pub struct FastEncL5 {
    g: FastGen,
    table: Box<[i32; TABLE_SIZE]>,
    b_table: Box<[TableEntryPrev; TABLE_SIZE]>,
}

impl FastEncL5 {
    pub(super) fn new(cur: i32) -> Self {
        FastEncL5 {
            g: FastGen::new(cur),
            table: new_table(),
            b_table: new_table(),
        }
    }
}

/// Go's `eLong.Cur, eLong.Prev = entry, eLong.Cur`.
#[inline(always)]
pub(super) fn push(e: &mut TableEntryPrev, offset: i32) {
    *e = TableEntryPrev {
        prev: e.cur,
        cur: offset,
    };
}

/// Go's bTable rebasing in levels 5 and 6: an out-of-reach `Cur` also
/// drops `Prev` (unlike level 3).
pub(super) fn rebase_table_prev(table: &mut [TableEntryPrev], cur: i32, min_off: i32) {
    for v in table.iter_mut() {
        if v.cur <= min_off {
            v.cur = 0;
            v.prev = 0;
        } else {
            v.cur = v.cur - cur + MAX_MATCH_OFFSET;
            if v.prev <= min_off {
                v.prev = 0;
            } else {
                v.prev = v.prev - cur + MAX_MATCH_OFFSET;
            }
        }
    }
}

impl FastEnc for FastEncL5 {
    /// Go's `(*fastEncL5).Encode`.
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

        'outer: loop {
            const SKIP_LOG: i32 = 6;
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

                next_hash_s = hash_s(next);
                next_hash_l = hash_l(next);
                prefetch(&table[next_hash_s]);
                prefetch(&b_table[next_hash_l]);

                t = l_candidate.cur - cur;
                if s - t < MAX_MATCH_OFFSET {
                    if cv as u32 == load3232(src, l_candidate.cur - cur) {
                        // Store the next match
                        table[next_hash_s] = next_s + cur;
                        push(&mut b_table[next_hash_l], next_s + cur);

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
                    l_candidate = b_table[next_hash_l];
                    // Store the next match
                    table[next_hash_s] = next_s + cur;
                    push(&mut b_table[next_hash_l], next_s + cur);

                    // If the next long is a candidate, use that...
                    let mut t2 = l_candidate.cur - cur;
                    if next_s - t2 < MAX_MATCH_OFFSET {
                        if load3232(src, l_candidate.cur - cur) == next as u32 {
                            let ml = matchlen(next_s + 4, t2 + 4, src) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                break;
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

            if l == 0 {
                // Extend the 4-byte match as long as possible.
                l = matchlen_long(s + 4, t + 4, src) + 4;
            } else if l == MAX_MATCH_LENGTH {
                l += matchlen_long(s + l, t + l, src);
            }

            // Try to locate a better match by checking the end of best match...
            let s_at = s + l;
            if l < 30 && s_at < s_limit {
                // Allow some bytes at the beginning to mismatch; backward
                // extension picks them up again if they do match.
                const SKIP_BEGINNING: i32 = 2;
                let e_long = b_table[hash_l(load6432(src, s_at))].cur;
                let t2 = e_long - cur - l + SKIP_BEGINNING;
                let s2 = s + SKIP_BEGINNING;
                let off = s2 - t2;
                if t2 >= 0 && off < MAX_MATCH_OFFSET && off > 0 {
                    let l2 = matchlen_long(s2, t2, src);
                    if l2 > l {
                        t = t2;
                        l = l2;
                        s = s2;
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
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }

            if s >= s_limit {
                break 'outer;
            }

            // Store every 3rd hash in-between.
            const HASH_EVERY: i32 = 3;
            let mut i = s - l + 1;
            if i < s - 1 {
                let mut cv = load6432(src, i);
                let mut t = i + cur;
                table[hash_s(cv)] = t;
                push(&mut b_table[hash_l(cv)], t);

                // Do an long at i+1
                cv >>= 8;
                t += 1;
                push(&mut b_table[hash_l(cv)], t);

                // We only have enough bits for a short entry at i+2
                cv >>= 8;
                t += 1;
                table[hash_s(cv)] = t;

                // Skip one - otherwise we risk hitting 's'
                i += 4;
                while i < s - 1 {
                    let cv = load6432(src, i);
                    let t = i + cur;
                    let t2 = t + 1;
                    push(&mut b_table[hash_l(cv)], t);
                    table[hash_s(cv >> 8)] = t2;
                    i += HASH_EVERY;
                }
            }

            // Update the hash table at s-1 and at s.
            let x = load6432(src, s - 1);
            let o = cur + s - 1;
            table[hash_s(x)] = o;
            push(&mut b_table[hash_l(x)], o);
            cv = x >> 8;
        }

        emit_remainder(dst, src, next_emit);
    }

    /// Go's `(*fastGen).Reset`.
    fn reset(&mut self) {
        self.g.reset();
    }
}
