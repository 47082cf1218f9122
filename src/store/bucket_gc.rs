//! Collection in the bucket (`--store s3://`): pieces and content objects no
//! live blob record needs are deleted, by one daemon at a time, in two
//! phases separated by a grace period (`--s3-gc-grace`).
//!
//! - **Lease.** `gc/lease.json` names the collecting daemon and an expiry;
//!   a daemon takes it only when it is free or expired, then reads it back
//!   after a pause (no conditional write is needed: when two write at once,
//!   the store keeps one, and only its writer goes on), and renews it
//!   before each deletion.
//! - **Live set.** Every segment is read; every content object a Put record
//!   names is live, and so is every piece those name. Only objects no record
//!   ever named are collected: the pieces and content objects of commits
//!   that never wrote their segment (a daemon killed, a bucket that failed
//!   mid-commit, a speculative content object whose content was stored
//!   meanwhile). The objects of deleted blobs stay: a daemon's index may
//!   still use them, and collecting them needs each daemon to say which it
//!   still references (not built).
//! - **Mark, then delete.** Objects neither live nor younger than the grace
//!   period (a commit may be between its piece and its segment) are listed
//!   in a mark `gc/marks/<ms>-<writer>-<random>.json`. A mark older than the
//!   grace period is carried out: what is still not live is deleted.
//! - **Young objects are never marked**, and a push fails if it ran longer
//!   than half the grace period: a commit's piece and content object are
//!   named by its segment long before they are old enough to mark.
//! - **Defence in depth.** Every daemon reads the marks at each sync round
//!   and treats chunks in marked pieces as absent (`Store::condemned`: they
//!   are stored again), though no index can hold a chunk of an object no
//!   record named.

use super::pack::ChunkLoc;
use super::publish::{key, OBJ};
use super::remote::format::{ContentObject, Record, Segment};
use super::remote::{unique_suffix, FOREIGN_BASE};
use super::{now_ms, Store};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const LEASE: &str = "gc/lease.json";
const MARKS: &str = "gc/marks/";
/// How long a lease holds without renewal.
const LEASE_MS: u64 = 5 * 60 * 1000;
/// The pause before reading a lease back.
const LEASE_SETTLE: Duration = Duration::from_millis(500);

#[derive(Serialize, Deserialize)]
struct Lease {
    owner: String,
    expires_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Mark {
    time_ms: u64,
    objects: Vec<String>,
}

/// Pieces a mark names, as this index knows them.
#[derive(Default)]
pub(super) struct Condemned {
    foreign: HashSet<u32>,
    /// Marked pieces by name: this index's own are found through
    /// `remote-piece` (the piece holding a local offset).
    names: HashSet<String>,
    marks_seen: HashSet<String>,
    /// When the marks were last read (None: never).
    read_at: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct BucketGcReport {
    /// False when another daemon holds the lease.
    pub ran: bool,
    pub marked: u64,
    pub deleted: u64,
    pub bytes_deleted: u64,
}

/// The time in an object name `<...>/<writer>-<ms>-<random>[.ext]`.
fn written_ms(name: &str) -> Option<u64> {
    name.rsplit('/').next()?.get(17..30)?.parse().ok()
}

impl Store {
    fn grace(&self) -> Duration {
        self.remote().map_or(Duration::ZERO, |r| r.cfg.gc_grace)
    }

    /// Whether a chunk at `loc` lies in a piece a collection marked.
    pub(super) fn condemned(&self, loc: &ChunkLoc) -> bool {
        if self.remote().is_none() {
            return false;
        }
        let c = self.inner.condemned.read();
        if loc.pack >= FOREIGN_BASE {
            return c.foreign.contains(&loc.pack);
        }
        if c.names.is_empty() {
            return false;
        }
        // Not found: a chunk no commit named yet (its piece is this ingest's).
        self.object_of(loc)
            .is_ok_and(|(name, _)| c.names.contains(&name))
    }

    /// Reads the marks this index has not seen.
    pub(super) fn read_marks(&self) -> Result<()> {
        let Some(r) = self.remote() else {
            return Ok(());
        };
        let listed = r.list(MARKS, None)?;
        let db = self.db();
        let meta = super::index::cf(db, super::index::CF_META);
        let mut fresh = false;
        for l in &listed {
            if self.inner.condemned.read().marks_seen.contains(&l.name) {
                continue;
            }
            let m: Mark = match r.get(&l.name) {
                Ok(b) => serde_json::from_slice(&b)
                    .map_err(|e| Error::DataLoss(format!("{} is not a mark: {e}", l.name)))?,
                Err(Error::NotFound(_)) => continue, // carried out meanwhile
                Err(e) => return Err(e),
            };
            let pieces: HashSet<&str> = m
                .objects
                .iter()
                .filter(|o| o.starts_with("packs/"))
                .map(String::as_str)
                .collect();
            let mut foreign = Vec::new();
            for p in &pieces {
                if let Some(v) = db.get_cf(meta, key(OBJ, p.as_bytes()))? {
                    if v.len() == 4 {
                        foreign.push(u32::from_be_bytes(v[..].try_into().unwrap()));
                    }
                }
            }
            let mut c = self.inner.condemned.write();
            fresh |= !pieces.is_empty();
            c.foreign.extend(foreign);
            c.names.extend(pieces.iter().map(|p| p.to_string()));
            c.marks_seen.insert(l.name.clone());
        }
        if fresh {
            // Recipes followed from before no longer vouch for their chunks.
            self.inner
                .chunk_drops
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.condemned.write().read_at = Some(Instant::now());
        Ok(())
    }

    /// Before a push commits in bucket mode: it may not have run longer
    /// than half the grace period, and the marks must be fresh.
    pub(super) fn check_push_window(&self, started: Instant) -> Result<()> {
        if self.remote().is_none() {
            return Ok(());
        }
        let grace = self.grace();
        if started.elapsed() > grace / 2 {
            return Err(Error::Unavailable(format!(
                "this push ran {:?}, longer than half of --s3-gc-grace ({grace:?}): a collection may \
                 have deleted chunks it reuses; nothing was stored, push it again",
                started.elapsed()
            )));
        }
        let stale = self
            .inner
            .condemned
            .read()
            .read_at
            .is_none_or(|t| t.elapsed() > grace / 4);
        if stale {
            self.read_marks()?;
        }
        Ok(())
    }

    /// One collection of the bucket, if this daemon gets the lease.
    pub fn collect_bucket(&self) -> Result<BucketGcReport> {
        let Some(r) = self.remote() else {
            return Ok(BucketGcReport::default());
        };
        let me = hex::encode(self.writer_id());
        let mut rep = BucketGcReport::default();
        if !self.take_lease(&me)? {
            tracing::info!("another daemon holds the bucket's collection lease");
            return Ok(rep);
        }
        rep.ran = true;
        let result = self.collect_with_lease(&me, &mut rep);
        // Released only if still ours (another daemon may have taken it over).
        let ours = matches!(self.read_lease(), Ok(Some(l)) if l.owner == me);
        if ours {
            if let Err(e) = r.delete(LEASE) {
                tracing::warn!(error = %e, "could not release the collection lease; it expires by itself");
            }
        }
        result.map(|_| rep)
    }

    fn collect_with_lease(&self, me: &str, rep: &mut BucketGcReport) -> Result<()> {
        let r = self.remote().expect("bucket mode");
        let grace_ms = self.grace().as_millis() as u64;
        // Before listing: ages are measured against what the listing saw.
        let now = now_ms();
        let all = r.list("", None)?;
        let sizes: HashMap<&str, u64> = all.iter().map(|l| (l.name.as_str(), l.size)).collect();
        let live = self.live_objects(&all)?;
        // Marks old enough: carry them out (against today's live set).
        // Objects in marks not yet due, or deleted by this run: not marked again.
        let mut pending: HashSet<String> = HashSet::new();
        for l in all.iter().filter(|l| l.name.starts_with(MARKS)) {
            let m: Mark = match r.get(&l.name) {
                Ok(b) => serde_json::from_slice(&b)
                    .map_err(|e| Error::DataLoss(format!("{} is not a mark: {e}", l.name)))?,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if now.saturating_sub(m.time_ms) < grace_ms {
                pending.extend(m.objects);
                continue;
            }
            self.renew_lease(me)?;
            for o in &m.objects {
                if live.contains(o) {
                    continue;
                }
                if let Some(&n) = sizes.get(o.as_str()) {
                    match r.delete(o) {
                        Ok(()) | Err(Error::NotFound(_)) => {
                            rep.deleted += 1;
                            rep.bytes_deleted += n;
                            pending.insert(o.clone());
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            r.delete(&l.name)?;
        }
        // New marks: neither live, nor young, nor marked already.
        let objects: Vec<String> = all
            .iter()
            .filter(|l| l.name.starts_with("packs/") || l.name.starts_with("contents/"))
            .filter(|l| !live.contains(&l.name) && !pending.contains(&l.name))
            .filter(|l| written_ms(&l.name).is_some_and(|t| now.saturating_sub(t) >= grace_ms))
            .map(|l| l.name.clone())
            .collect();
        if !objects.is_empty() {
            rep.marked = objects.len() as u64;
            let name = format!(
                "{MARKS}{:013}-{}.json",
                now,
                unique_suffix(&self.writer_id())
            );
            let m = Mark {
                time_ms: now,
                objects,
            };
            r.put(&name, serde_json::to_vec(&m).expect("serializes"))?;
        }
        if rep.marked > 0 || rep.deleted > 0 {
            tracing::info!(?rep, "collected the bucket");
        }
        Ok(())
    }

    /// Every content object a Put record of any segment names, and the
    /// pieces those name. Not only the newest record per blob: a daemon's
    /// index may still follow an object an older record named (a blob
    /// pushed through two daemons at once, a chunk whose first copy is in
    /// a piece of a blob deleted since), and no daemon can be asked which.
    /// So only objects no record ever named are collected: what commits
    /// that never reached their segment left.
    fn live_objects(&self, all: &[super::remote::Listed]) -> Result<HashSet<String>> {
        let r = self.remote().expect("bucket mode");
        let mut named: HashSet<String> = HashSet::new();
        for l in all.iter().filter(|l| l.name.starts_with("segments/")) {
            let seg = match r.get(&l.name) {
                Ok(b) => Segment::decode(&b)?,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            for rec in seg.records {
                if let Record::Put { content, .. } = rec {
                    if !content.is_empty() {
                        named.insert(content);
                    }
                }
            }
        }
        let mut live = HashSet::new();
        for c in named {
            let obj = match r.get(&c) {
                Ok(b) => ContentObject::decode(&b)?,
                // Named but gone: nothing of it to keep (verify reports the blob).
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            live.extend(obj.objects);
            live.insert(c);
        }
        Ok(live)
    }

    fn take_lease(&self, me: &str) -> Result<bool> {
        if let Some(l) = self.read_lease()? {
            if l.owner != me && l.expires_ms > now_ms() {
                return Ok(false);
            }
        }
        self.write_lease(me)?;
        std::thread::sleep(LEASE_SETTLE);
        Ok(self.read_lease()?.is_some_and(|l| l.owner == me))
    }

    /// Before deleting: the lease must still be ours; extended.
    fn renew_lease(&self, me: &str) -> Result<()> {
        match self.read_lease()? {
            Some(l) if l.owner == me => self.write_lease(me),
            _ => Err(Error::Unavailable(
                "the bucket's collection lease was taken over; this collection stops".into(),
            )),
        }
    }

    fn read_lease(&self) -> Result<Option<Lease>> {
        let r = self.remote().expect("bucket mode");
        match r.get(LEASE) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_lease(&self, me: &str) -> Result<()> {
        let r = self.remote().expect("bucket mode");
        let l = Lease {
            owner: me.to_string(),
            expires_ms: now_ms() + LEASE_MS,
        };
        r.put(LEASE, serde_json::to_vec(&l).expect("serializes"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_names_carry_their_time() {
        assert_eq!(
            super::written_ms("packs/0123456789abcdef-1765000000123-0000abcd.pack"),
            Some(1_765_000_000_123)
        );
        assert_eq!(
            super::written_ms("contents/ab/0123456789abcdef-1765000000123-0000abcd"),
            Some(1_765_000_000_123)
        );
        assert_eq!(super::written_ms("packs/short"), None);
    }
}
