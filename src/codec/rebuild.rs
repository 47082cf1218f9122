//! Read side of the codec stage: the exact compressed bytes of a blob from its
//! plan, streamed, and its plain stream on request.

use super::plan::{Part, Plan, PreflatePiece, Restart, StoredKind};
use super::preflate::PreflateRebuilder;
use super::unwrap::{Streams, UnwrapConfig, Unwrapper};
use super::Reencoder;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Writes bytes on; returns false when the reader went away.
pub type Out<'a> = dyn FnMut(&[u8]) -> Result<bool> + 'a;

/// The two recipes a plan draws on.
pub trait Source {
    /// Streams `[offset, offset + len)` of the plain stream.
    fn plain(&mut self, offset: u64, len: u64, out: &mut Out) -> Result<bool>;
    /// Streams `[offset, offset + len)` of the raw stream.
    fn raw(&mut self, offset: u64, len: u64, out: &mut Out) -> Result<bool>;
}

/// How much of a stream a cursor asks its source for at a time.
const STEP: u64 = 256 << 10;

/// A position in a blob being rebuilt. Holds the encoder state of the part
/// it is in, so a reader that comes back for the next range (containerd reads
/// 32 KiB windows) carries on instead of re-encoding from the part's start.
pub struct Cursor {
    plan: Arc<Plan>,
    part: usize,
    /// Blob offset where the current part starts, and the stream offsets the
    /// part's bytes start at.
    part_start: u64,
    plain_at: u64,
    raw_at: u64,
    state: PartState,
    /// Next byte to return.
    pos: u64,
    /// Output for `[pos, pos + ready())`, made but not yet returned, from
    /// `buf[head..]` (an index: returning a window copies only the window).
    buf: Vec<u8>,
    head: usize,
}

enum PartState {
    Fresh,
    Replay {
        re: Box<dyn Reencoder>,
        fed: u64,
        /// Blob offset just past the last byte produced.
        made: u64,
        done: bool,
    },
    Preflate {
        rb: Box<PreflateRebuilder>,
        piece: usize,
        p_at: u64,
        r_at: u64,
        made: u64,
    },
}

impl Cursor {
    pub fn new(plan: Arc<Plan>) -> Cursor {
        Cursor {
            plan,
            part: 0,
            part_start: 0,
            plain_at: 0,
            raw_at: 0,
            state: PartState::Fresh,
            pos: 0,
            buf: Vec::new(),
            head: 0,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// Moves to `offset`: forward at the cost of what lies between in the
    /// current part, backward by starting over.
    pub fn seek(&mut self, offset: u64) {
        if offset < self.pos {
            *self = Cursor::new(self.plan.clone());
        }
        let ahead = (offset - self.pos) as usize;
        if ahead <= self.ready() {
            self.head += ahead;
        } else {
            self.buf.clear();
            self.head = 0;
        }
        self.pos = offset;
        // Whole parts before the offset cost nothing to pass.
        while self.ready() == 0 {
            let Some(part) = self.plan.parts.get(self.part) else {
                break;
            };
            if self.part_start + part.out_len() > offset {
                break;
            }
            self.next_part();
        }
        // Inside a replayed part, a restart point between what the encoder
        // has made and the offset is a shorter way there.
        if let (Some(Part::Replay { restarts, .. }), PartState::Replay { made, .. }) =
            (self.plan.parts.get(self.part), &self.state)
        {
            let (made, start) = (*made, self.part_start);
            if self.ready() == 0
                && restarts
                    .iter()
                    .any(|r| start + r.out > made && start + r.out <= offset)
            {
                self.state = PartState::Fresh;
            }
        }
    }

    fn next_part(&mut self) {
        let part = &self.plan.parts[self.part];
        self.part_start += part.out_len();
        self.plain_at += part.plain_consumed();
        self.raw_at += part.raw_consumed();
        self.part += 1;
        self.state = PartState::Fresh;
    }

    /// The next bytes at the cursor (at most about `max`), or None at the end.
    pub fn next(&mut self, src: &mut dyn Source, max: usize) -> Result<Option<Vec<u8>>> {
        let max = max.max(1);
        loop {
            if self.ready() > 0 {
                let n = max.min(self.ready());
                let out = self.buf[self.head..self.head + n].to_vec();
                self.head += n;
                self.pos += n as u64;
                return Ok(Some(out));
            }
            let plan = self.plan.clone();
            let Some(part) = plan.parts.get(self.part) else {
                return Ok(None);
            };
            let len = part.out_len();
            let off = self.pos - self.part_start;
            if off >= len {
                self.next_part();
                continue;
            }
            match part {
                Part::Literal(b) => {
                    let n = (max as u64).min(len - off) as usize;
                    self.pos += n as u64;
                    return Ok(Some(b[off as usize..off as usize + n].to_vec()));
                }
                Part::Stored { .. } => {
                    let n = (max as u64).min(len - off).min(STEP);
                    let b = collect(|o| src.raw(self.raw_at + off, n, o))?;
                    if b.len() as u64 != n {
                        return Err(Error::DataLoss("the raw stream ends early".into()));
                    }
                    self.pos += n;
                    return Ok(Some(b));
                }
                Part::Replay {
                    enc,
                    plain_len,
                    restarts,
                    ..
                } => self.replay_step(src, enc, *plain_len, restarts, len)?,
                Part::Preflate { pieces } => self.preflate_step(src, pieces, len)?,
            }
        }
    }

    /// Makes more of a replayed part, keeping what lies at or after `pos`.
    fn replay_step(
        &mut self,
        src: &mut dyn Source,
        enc: &super::plan::Encoder,
        plain_len: u64,
        restarts: &[Restart],
        len: u64,
    ) -> Result<()> {
        if matches!(self.state, PartState::Fresh) {
            // From the last restart point at or before the cursor, if any:
            // a ranged read re-encodes from there, not from the part's start.
            let off = self.pos - self.part_start;
            let from = super::resume_history(enc).and_then(|h| {
                restarts
                    .iter()
                    .rev()
                    .find(|r| r.out <= off)
                    .map(|r| (*r, h))
            });
            self.state = match from {
                Some((r, h)) => {
                    let h = h.min(r.plain);
                    let history = collect(|o| src.plain(self.plain_at + r.plain - h, h, o))?;
                    if history.len() as u64 != h {
                        return Err(Error::DataLoss("the plain stream ends early".into()));
                    }
                    PartState::Replay {
                        re: super::resume_reencoder(enc, &history)?,
                        fed: r.plain,
                        made: self.part_start + r.out,
                        done: false,
                    }
                }
                None => PartState::Replay {
                    re: super::rebuild_reencoder(enc)?,
                    fed: 0,
                    made: self.part_start,
                    done: false,
                },
            };
        }
        let PartState::Replay {
            re,
            fed,
            made,
            done,
        } = &mut self.state
        else {
            unreachable!("set above")
        };
        let mut out = Vec::new();
        if *fed < plain_len {
            let n = (plain_len - *fed).min(STEP);
            let p = collect(|o| src.plain(self.plain_at + *fed, n, o))?;
            if p.len() as u64 != n {
                return Err(Error::DataLoss("the plain stream ends early".into()));
            }
            re.feed(&p, &mut out)?;
            *fed += n;
        } else if !*done {
            re.finish(&mut out)?;
            *done = true;
        } else {
            return Err(Error::DataLoss(format!(
                "a replayed part rebuilt {} bytes where {len} were recorded",
                *made - self.part_start
            )));
        }
        let start = *made;
        *made += out.len() as u64;
        if *made > self.part_start + len || (*done && *made != self.part_start + len) {
            return Err(Error::DataLoss(format!(
                "a replayed part rebuilt {} bytes where {len} were recorded",
                *made - self.part_start
            )));
        }
        self.keep(start, out);
        Ok(())
    }

    /// Keeps what of `out` (made from blob offset `start`) lies at or past `pos`.
    fn keep(&mut self, start: u64, out: Vec<u8>) {
        // Steps run only once everything made before was returned.
        debug_assert_eq!(self.ready(), 0);
        let skip = self.pos.saturating_sub(start) as usize;
        if skip < out.len() {
            self.buf = out;
            self.head = skip;
        }
    }

    /// Bytes made ahead of `pos`, ready to return.
    pub fn ready(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether reading ahead is worth a thread: the cursor's part is rebuilt by an
    /// encoder and not all made.
    pub fn encodes_ahead(&self) -> bool {
        self.plan.parts.get(self.part).is_some_and(|part| {
            matches!(part, Part::Replay { .. } | Part::Preflate { .. })
                && self.pos + (self.ready() as u64) < self.part_start + part.out_len()
        })
    }

    fn preflate_step(
        &mut self,
        src: &mut dyn Source,
        pieces: &[PreflatePiece],
        len: u64,
    ) -> Result<()> {
        if matches!(self.state, PartState::Fresh) {
            self.state = PartState::Preflate {
                rb: Box::new(PreflateRebuilder::new()),
                piece: 0,
                p_at: self.plain_at,
                r_at: self.raw_at,
                made: self.part_start,
            };
        }
        let PartState::Preflate {
            rb,
            piece,
            p_at,
            r_at,
            made,
        } = &mut self.state
        else {
            unreachable!("set above")
        };
        let Some(pc) = pieces.get(*piece) else {
            return Err(Error::DataLoss(format!(
                "preflate pieces rebuild less than the {len} bytes recorded"
            )));
        };
        let p = collect(|o| src.plain(*p_at, pc.plain_len, o))?;
        let c = collect(|o| src.raw(*r_at, pc.corr_len, o))?;
        let mut out = Vec::with_capacity(pc.out_len as usize);
        rb.piece(&p, &c, &mut out)?;
        if out.len() as u64 != pc.out_len {
            return Err(Error::DataLoss(
                "preflate rebuilt a piece of the wrong length".into(),
            ));
        }
        *piece += 1;
        *p_at += pc.plain_len;
        *r_at += pc.corr_len;
        let start = *made;
        *made += out.len() as u64;
        self.keep(start, out);
        Ok(())
    }
}

/// Streams bytes `[from, to)` of the blob a cursor rebuilds, starting from
/// wherever the cursor is.
pub fn rebuild(
    cur: &mut Cursor,
    src: &mut dyn Source,
    from: u64,
    to: u64,
    out: &mut Out,
) -> Result<bool> {
    cur.seek(from);
    while cur.pos() < to {
        let want = (to - cur.pos()).min(STEP) as usize;
        let Some(b) = cur.next(src, want)? else {
            return Err(Error::DataLoss(
                "the rebuilt blob is shorter than recorded".into(),
            ));
        };
        if !out(&b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect(f: impl FnOnce(&mut Out) -> Result<bool>) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    f(&mut |b: &[u8]| {
        v.extend_from_slice(b);
        Ok(true)
    })?;
    Ok(v)
}

/// Streams `[from, to)` of the blob's plain stream (the tar inside).
pub fn plain(plan: &Plan, src: &mut dyn Source, from: u64, to: u64, out: &mut Out) -> Result<bool> {
    let Some(size) = plan.plain_size else {
        return Err(Error::FailedPrecondition(
            "this blob's compressed stream does not decode to its end, so it has no plain form"
                .into(),
        ));
    };
    let to = to.min(size);
    if from >= to {
        return Ok(true);
    }
    // Every member's plain bytes are in the plain recipe, once each, unless
    // some member is kept compressed or a failed replay left bytes to skip.
    let all_decoded = !plan.parts.iter().any(|p| {
        matches!(
            p,
            Part::Stored {
                kind: StoredKind::Member,
                ..
            } | Part::Stored {
                skip_plain: 1..,
                ..
            }
        )
    });
    if all_decoded {
        return src.plain(from, to - from, out);
    }
    // Some member is kept compressed: decode the rebuilt blob.
    let mut dec = Unwrapper::new(UnwrapConfig::decode_only(), std::path::Path::new("."));
    let mut sink = PlainWindow {
        at: 0,
        from,
        to,
        out,
        stopped: false,
    };
    let total = plan.out_len();
    let mut cur = Cursor::new(Arc::new(plan.clone()));
    let mut pump = |b: &[u8]| -> Result<bool> {
        dec.feed(b, &mut sink)?;
        Ok(!sink.stopped && sink.at < to)
    };
    rebuild(&mut cur, src, 0, total, &mut pump)?;
    Ok(!sink.stopped)
}

struct PlainWindow<'o, 'a> {
    at: u64,
    from: u64,
    to: u64,
    out: &'o mut Out<'a>,
    stopped: bool,
}

impl Streams for PlainWindow<'_, '_> {
    fn plain(&mut self, b: &[u8]) -> Result<()> {
        let (start, end) = (self.at, self.at + b.len() as u64);
        self.at = end;
        if !self.stopped && end > self.from && start < self.to {
            let a = self.from.saturating_sub(start) as usize;
            let z = (self.to.min(end) - start) as usize;
            if !(self.out)(&b[a..z])? {
                self.stopped = true;
            }
        }
        Ok(())
    }
    fn raw(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
}
