//! Level 3; mirrors klauspost/compress/flate level3.go (`fastEncL3`).

use super::fast_gen::{
    add_match_long, emit_lits, emit_remainder, hash5, load3232, load6432, match_len, matchlen_long,
    new_table, FastEnc, FastGen, TableEntryPrev, BASE_MATCH_OFFSET, BUFFER_RESET, INPUT_MARGIN,
    MAX_MATCH_OFFSET,
};
use super::token::Tokens;

/// Go's level3 local `tableBits`.
const TABLE_BITS: u8 = 16;
const TABLE_SIZE: usize = 1 << TABLE_BITS;

/// Go's `fastEncL3`: two candidates per 5-byte hash.
pub struct FastEncL3 {
    g: FastGen,
    table: Box<[TableEntryPrev; TABLE_SIZE]>,
}

impl FastEncL3 {
    pub(super) fn new(cur: i32) -> Self {
        FastEncL3 {
            g: FastGen::new(cur),
            table: new_table(),
        }
    }
}

/// Pushes `offset` as the newest entry of `e`.
#[inline(always)]
fn push(e: &mut TableEntryPrev, offset: i32) {
    *e = TableEntryPrev {
        prev: e.cur,
        cur: offset,
    };
}

impl FastEnc for FastEncL3 {
    /// Go's `(*fastEncL3).Encode`.
    fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        // Go: hashLen(cv, tableBits, hashBytes) with hashBytes = 5.
        let hash = |u: u64| hash5(u, TABLE_BITS);

        // Protect against e.cur wraparound.
        while self.g.cur >= BUFFER_RESET {
            if self.g.hist.is_empty() {
                self.table.fill(TableEntryPrev::default());
                self.g.cur = MAX_MATCH_OFFSET;
                break;
            }
            // Shift down everything in the table that isn't already too far away.
            let cur = self.g.cur;
            let min_off = cur + self.g.hist.len() as i32 - MAX_MATCH_OFFSET;
            let shift = |v: i32| {
                if v <= min_off {
                    0
                } else {
                    v - cur + MAX_MATCH_OFFSET
                }
            };
            for v in self.table.iter_mut() {
                v.cur = shift(v.cur);
                v.prev = shift(v.prev);
            }
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
            const SKIP_LOG: i32 = 7;
            let mut next_s = s;
            let mut candidate;
            loop {
                let next_hash = hash(cv);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> SKIP_LOG);
                if next_s > s_limit {
                    break 'outer;
                }
                let candidates = table[next_hash];
                let now = load6432(src, next_s);

                // Safe offset distance until s + 4...
                let min_offset = cur + s - (MAX_MATCH_OFFSET - 4);
                table[next_hash] = TableEntryPrev {
                    prev: candidates.cur,
                    cur: s + cur,
                };

                // Check both candidates
                candidate = candidates.cur;
                if candidate < min_offset {
                    cv = now;
                    // Previous will also be invalid, we have nothing.
                    continue;
                }

                if cv as u32 == load3232(src, candidate - cur) {
                    if candidates.prev < min_offset
                        || cv as u32 != load3232(src, candidates.prev - cur)
                    {
                        break;
                    }
                    // Both match and are valid, pick longest.
                    let offset = s - (candidate - cur);
                    let o2 = s - (candidates.prev - cur);
                    let l1 = match_len(&src[(s + 4) as usize..], &src[(s - offset + 4) as usize..]);
                    let l2 = match_len(&src[(s + 4) as usize..], &src[(s - o2 + 4) as usize..]);
                    if l2 > l1 {
                        candidate = candidates.prev;
                    }
                    break;
                } else {
                    // We only check if value mismatches.
                    // Offset will always be invalid in other cases.
                    candidate = candidates.prev;
                    if candidate > min_offset && cv as u32 == load3232(src, candidate - cur) {
                        break;
                    }
                }
                cv = now;
            }

            // Emit copies until no match follows the last one.
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
                    t += l;
                    // Index first pair after match end.
                    if ((t + 8) as usize) < src.len() && t > 0 {
                        cv = load6432(src, t);
                        push(&mut table[hash(cv)], cur + t);
                    }
                    break 'outer;
                }

                // Store every 5th hash in-between.
                let mut i = s - l + 2;
                while i < s - 5 {
                    push(&mut table[hash(load6432(src, i))], cur + i);
                    i += 6;
                }
                // Update the hash table at s-2 to s.
                let mut x = load6432(src, s - 2);
                push(&mut table[hash(x)], cur + s - 2);
                x >>= 8;
                push(&mut table[hash(x)], cur + s - 1);
                x >>= 8;
                let curr_hash = hash(x);
                let candidates = table[curr_hash];
                cv = x;
                table[curr_hash] = TableEntryPrev {
                    prev: candidates.cur,
                    cur: s + cur,
                };

                // Check both candidates
                candidate = candidates.cur;
                let min_offset = cur + s - (MAX_MATCH_OFFSET - 4);

                if candidate > min_offset {
                    if cv as u32 == load3232(src, candidate - cur) {
                        // Found a match...
                        continue;
                    }
                    candidate = candidates.prev;
                    if candidate > min_offset && cv as u32 == load3232(src, candidate - cur) {
                        // Match at prev...
                        continue;
                    }
                }
                cv = x >> 8;
                s += 1;
                break;
            }
        }

        emit_remainder(dst, src, next_emit);
    }

    /// Go's `(*fastGen).Reset`.
    fn reset(&mut self) {
        self.g.reset();
    }
}
