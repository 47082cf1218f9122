//! Collection in the bucket (`--store s3://`): pieces and content objects no
//! live blob record needs are deleted, by one daemon at a time, in two
//! phases separated by a grace period (`--s3-gc-grace`).
//!
//! - **Lease.** `gc/lease.json` names the collecting daemon and an expiry;
//!   a daemon takes it only when it is free or expired, then reads it back
//!   after a pause (no conditional write is needed: when two write at once,
//!   the store keeps one, and only its writer goes on), and renews it
//!   before each deletion.
//! - **Live set.** Every segment is read; per blob the newest record wins; the
//!   Put records left name the live content objects, which name the live
//!   pieces.
//! - **Mark, then delete.** Objects neither live nor younger than the grace
//!   period (a commit may be between its piece and its segment) are listed
//!   in a mark `gc/marks/<ms>-<writer>-<random>.json`. A mark older than the
//!   grace period is carried out: what is still not live is deleted.
//! - **Pushes never reference a marked piece they could lose.** Every
//!   daemon reads the marks at each sync round and treats chunks in marked
//!   pieces as absent (`Store::condemned`: they are stored again); a push
//!   fails if it ran longer than half the grace period, or if its daemon has
//!   not read the marks for a quarter of it. So a push that took a chunk
//!   from a piece before its daemon knew it was marked commits before the
//!   mark is a grace period old, and its segment makes the piece live again
//!   when the deletion looks.

use super::pack::ChunkLoc;
use super::publish::{key, OBJ, PIECE};
use super::remote::format::{ContentObject, Record, Segment};
use super::remote::{unique_suffix, FOREIGN_BASE};
use super::{now_ms, Store};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Local pack id and piece start → piece end (exclusive).
    local: BTreeMap<(u32, u64), u64>,
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
        c.local
            .range(..=(loc.pack, loc.block_offset))
            .next_back()
            .is_some_and(|(&(id, _), &end)| id == loc.pack && loc.block_offset < end)
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
            // This index's own pieces: (pack, start) → name, in key order.
            let mut local = Vec::new();
            let mut it = db.raw_iterator_cf(meta);
            it.seek(PIECE);
            let mut prev: Option<(u32, u64, bool)> = None;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(PIECE) || k.len() != PIECE.len() + 12 {
                    break;
                }
                let id = u32::from_be_bytes(k[PIECE.len()..PIECE.len() + 4].try_into().unwrap());
                let start = u64::from_be_bytes(k[PIECE.len() + 4..].try_into().unwrap());
                if let Some((pid, pstart, true)) = prev {
                    let end = if pid == id { start } else { u64::MAX };
                    local.push(((pid, pstart), end));
                }
                let hit = std::str::from_utf8(v).is_ok_and(|n| pieces.contains(n));
                prev = Some((id, start, hit));
                it.next();
            }
            it.status()?;
            if let Some((pid, pstart, true)) = prev {
                local.push(((pid, pstart), u64::MAX));
            }
            let mut c = self.inner.condemned.write();
            fresh |= !foreign.is_empty() || !local.is_empty();
            c.foreign.extend(foreign);
            c.local.extend(local);
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
        if let Err(e) = r.delete(LEASE) {
            tracing::warn!(error = %e, "could not release the collection lease; it expires by itself");
        }
        result.map(|_| rep)
    }

    fn collect_with_lease(&self, me: &str, rep: &mut BucketGcReport) -> Result<()> {
        let r = self.remote().expect("bucket mode");
        let grace_ms = self.grace().as_millis() as u64;
        let all = r.list("", None)?;
        let sizes: HashMap<&str, u64> = all.iter().map(|l| (l.name.as_str(), l.size)).collect();
        let live = self.live_objects(&all)?;
        let now = now_ms();
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

    /// The content objects the newest record of each blob names, and the
    /// pieces they name.
    fn live_objects(&self, all: &[super::remote::Listed]) -> Result<HashSet<String>> {
        let r = self.remote().expect("bucket mode");
        let mut newest: HashMap<(String, [u8; 32]), (u64, Option<String>)> = HashMap::new();
        for l in all.iter().filter(|l| l.name.starts_with("segments/")) {
            let seg = match r.get(&l.name) {
                Ok(b) => Segment::decode(&b)?,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            for rec in seg.records {
                let (k, v) = match rec {
                    Record::Put {
                        ns,
                        digest,
                        content,
                        ..
                    } => ((ns, digest.0), Some(content)),
                    Record::Delete { ns, digest } => ((ns, digest.0), None),
                };
                match newest.get(&k) {
                    Some((t, _)) if *t >= seg.time_ms => {}
                    _ => {
                        newest.insert(k, (seg.time_ms, v));
                    }
                }
            }
        }
        let mut live = HashSet::new();
        for (_, content) in newest.into_values() {
            let Some(c) = content else { continue };
            if c.is_empty() || !live.insert(c.clone()) {
                continue;
            }
            let obj = match r.get(&c) {
                Ok(b) => ContentObject::decode(&b)?,
                // Named but gone: nothing of it to keep (verify reports the blob).
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            live.extend(obj.objects);
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
