//! Collection in the bucket (`--store s3://`): pieces and content objects no
//! live blob needs are deleted, by one daemon at a time, in two phases
//! separated by a grace period (`--s3-gc-grace`).
//!
//! - **Lease.** `gc/lease.json` names the collecting daemon and an expiry;
//!   a daemon takes it only when it is free or expired, then reads it back
//!   after a pause (no conditional write is needed: when two write at once,
//!   the store keeps one, and only its writer goes on), and renews it
//!   before each deletion.
//! - **Live set.** Every segment is read, in name order (as `sync.rs`
//!   applies them); a blob (namespace, digest) is live when its newest
//!   record is a Put (a Put tied in time with a Delete counts: some daemon
//!   may have applied it last). A digest is live when any of its blobs is.
//!   Every content object of a live digest is live (those Put records name,
//!   and every other object under `contents/<digest>/`: a conversion's, or
//!   another daemon's recipe of the same bytes, which some index may
//!   follow), but spares (`spares.rs`: another object of the digest
//!   places all their chunks), and so is every piece those objects name. So the objects of
//!   deleted blobs, and leftovers of commits that never wrote their segment,
//!   are collected once no namespace holds their digest.
//! - **Mark, then delete.** Objects neither live nor younger than the grace
//!   period (a commit may be between its piece and its segment) are listed
//!   in a mark `gc/marks/<ms>-<writer>-<random>.json`. A mark older than the
//!   grace period is carried out: what is still not live is deleted.
//! - **Naming a marked object.** A daemon's index may still point at a
//!   piece no live object names (its own first copy of a chunk, in a piece
//!   of a blob deleted since). Every daemon reads the marks at each sync
//!   round: ingests store chunks in marked pieces again (`condemned`), and a
//!   commit may name a marked object only if its segment is written within
//!   half a grace period of the mark (`naming_deadline`): the run that
//!   carries the mark out lists after a whole grace period, sees the
//!   segment, and keeps the object. A push that began before the mark
//!   commits within half a grace period (`check_push_window`), so it always
//!   may.
//! - **Gone pieces.** Marks are deleted when carried out and this state is
//!   in memory: a daemon that restarts, or missed a mark, lists `packs/`
//!   (at open, when its marks went unread for half a grace period, and when
//!   a mark it read disappears): a piece its index refers to that is
//!   missing and older than the grace period is gone for good, recorded in
//!   `meta` (`remote-gone\0<name>`) and condemned forever.
//! - **Reads** of a chunk whose piece is gone fall back to the content
//!   object this index follows for the blob (`Store::relocate`).

use super::commit::write_synced;
use super::compact::{SmallSegments, DELETES_PER_RENEWAL};
use super::index::{cf, meta_prefixed, CF_META};
use super::pack::ChunkLoc;
use super::publish::{key, GONE, ID, PIECE};
use super::remote::format::{Record, Segment};
use super::remote::unique_suffix;
use super::spares::{spares, Candidate};
use super::{now_ms, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEASE: &str = "gc/lease.json";
const MARKS: &str = "gc/marks/";
/// Not a mark: written when a bucket is upgraded to `strata-bucket-2`, so
/// that a daemon of the previous version still running on it fails its
/// commits and collections (a mark it cannot parse) instead of collecting
/// what compaction moved. Skipped here.
pub(super) const FENCE: &str = "gc/marks/0000000000000-strata-bucket-2-fence.json";
/// The same for `strata-bucket-3` (spares collected: `spares.rs`), which a
/// `strata-bucket-2` daemon cannot parse either.
pub(super) const FENCE_3: &str = "gc/marks/0000000000000-strata-bucket-3-fence.json";

fn is_fence(name: &str) -> bool {
    name == FENCE || name == FENCE_3
}
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

/// Objects a collection marked, or found gone, as this daemon knows them.
#[derive(Default)]
pub(super) struct Condemned {
    /// Object name (piece or content object) → when the earliest mark
    /// naming it was made (ms); 0: gone from the bucket.
    names: HashMap<String, u64>,
    /// Marks read and still listed: name → (time, objects).
    marks: HashMap<String, (u64, Vec<String>)>,
    /// Objects this index referred to that are gone (`remote-gone`).
    gone: HashSet<String>,
    /// Whether `gone` was loaded from the index.
    loaded: bool,
    /// When the last read of the marks began listing them (None: never
    /// since open).
    read_at: Option<Instant>,
    /// Content object → the objects it names (an object never changes).
    named_by: HashMap<String, Vec<String>>,
    /// Held through a read of the marks: two at once could each see the
    /// other's fresh mark as vanished and forget it.
    reading: Arc<Mutex<()>>,
}

impl Condemned {
    fn rebuild(&mut self) {
        let mut names: HashMap<String, u64> = HashMap::new();
        for (t, objs) in self.marks.values() {
            for o in objs {
                let e = names.entry(o.clone()).or_insert(*t);
                *e = (*e).min(*t);
            }
        }
        for g in &self.gone {
            names.insert(g.clone(), 0);
        }
        self.names = names;
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct BucketGcReport {
    /// False when another daemon holds the lease.
    pub ran: bool,
    pub marked: u64,
    pub deleted: u64,
    pub bytes_deleted: u64,
    /// Content objects another placing all their chunks stands in for
    /// (`spares.rs`), found by this run: not live, so marked once older
    /// than the grace period.
    pub spare_contents: u64,
    pub compacted: super::compact::CompactReport,
}

/// A mark; one that does not parse is UNAVAILABLE (retryable: a writer's
/// bug or a damaged object, for an operator to delete), not DATA_LOSS.
fn parse_mark(name: &str, b: &[u8]) -> Result<Mark> {
    serde_json::from_slice(b).map_err(|e| {
        Error::Unavailable(format!(
            "{name} is not a collection mark ({e}); commits and syncs wait until it is \
             readable or deleted"
        ))
    })
}

/// The time in an object name `<...>/<writer>-<ms>-<random>[.ext]`.
pub(super) fn written_ms(name: &str) -> Option<u64> {
    name.rsplit('/').next()?.get(17..30)?.parse().ok()
}

/// The digest a content object is of: `contents/<sha256 hex>/<name>`.
fn digest_of(name: &str) -> Option<Digest> {
    let hex = name.strip_prefix("contents/")?.split('/').next()?;
    let b = hex::decode(hex).ok()?;
    Some(Digest(b.try_into().ok()?))
}

impl Store {
    fn grace(&self) -> Duration {
        self.remote().map_or(Duration::ZERO, |r| r.cfg.gc_grace)
    }

    /// Whether a chunk at `loc` lies in a piece a collection marked, or
    /// that is gone.
    pub(super) fn condemned(&self, loc: &ChunkLoc) -> bool {
        if !self.any_condemned() {
            return false;
        }
        // Not found: a chunk no commit named yet (its piece is this ingest's).
        let name = self.object_of(loc).ok().map(|(n, _)| n);
        name.is_some_and(|n| self.inner.condemned.read().names.contains_key(&n))
    }

    /// Whether any object is marked or gone (bucket mode).
    pub(super) fn any_condemned(&self) -> bool {
        self.remote().is_some() && !self.inner.condemned.read().names.is_empty()
    }

    /// Whether object `name` is marked by a collection, or gone.
    pub(super) fn is_condemned_name(&self, name: &str) -> bool {
        self.inner.condemned.read().names.contains_key(name)
    }

    /// Whether `name` is gone from the bucket (as this index found).
    pub(super) fn is_gone(&self, name: &str) -> bool {
        self.inner.condemned.read().names.get(name) == Some(&0)
    }

    /// Before a commit names `objects` (in a content object, or by naming
    /// content objects): the time (ms) its segment must be written by when
    /// one of them is marked. The run carrying a mark out lists the bucket
    /// a whole grace period after the mark: a segment written within half of
    /// it is seen there and keeps what it names. UNAVAILABLE (push again:
    /// the chunks are stored anew) when one is gone or marked too long ago.
    pub(super) fn naming_deadline(&self, objects: &[String]) -> Result<Option<u64>> {
        let c = self.inner.condemned.read();
        if c.names.is_empty() {
            return Ok(None);
        }
        let half = self.grace().as_millis() as u64 / 2;
        let now = now_ms();
        let mut deadline: Option<u64> = None;
        for o in objects {
            // A piece a compaction moved is as good as its copy.
            let o = &self.resolved(o)?;
            let Some(&m) = c.names.get(o) else {
                continue;
            };
            let d = if m == 0 { 0 } else { m + half };
            if now >= d {
                return Err(Error::Unavailable(format!(
                    "{o} {} and this commit would name it; nothing was stored, try again \
                     (a push stores the chunks anew)",
                    if m == 0 {
                        "is gone from the bucket".to_string()
                    } else {
                        format!(
                            "is being collected from the bucket (marked {} ms ago)",
                            now - m
                        )
                    }
                )));
            }
            deadline = Some(deadline.map_or(d, |x| x.min(d)));
        }
        Ok(deadline)
    }

    /// Remembers the objects content object `name` names (a cache,
    /// bounded: objects are small lists of names).
    pub(super) fn remember_named(&self, name: &str, objects: &[String]) {
        let mut c = self.inner.condemned.write();
        if c.named_by.len() > 100_000 {
            c.named_by.clear();
        }
        c.named_by.insert(name.to_string(), objects.to_vec());
    }

    /// The objects content object `name` names (None: it is not in the
    /// bucket).
    fn objects_named(&self, name: &str) -> Result<Option<Vec<String>>> {
        if let Some(v) = self.inner.condemned.read().named_by.get(name) {
            return Ok(Some(v.clone()));
        }
        let Some(v) = self.read_content_object(name)?.map(|o| o.objects) else {
            return Ok(None);
        };
        self.remember_named(name, &v);
        Ok(Some(v))
    }

    /// Under the commit lock, right before a segment (or a conversion's
    /// swap) that names the content objects `contents` is written: the
    /// marks are made fresh (read, listing begun, less than a quarter grace
    /// period ago), then every object named is checked against the marks
    /// known. A segment written at t naming an object of a mark made at m
    /// thus has t < m + grace/2 (plus the PUT) when the mark was read, and
    /// t < m + grace/4 (plus the mark's and segment's PUTs) when it was not
    /// (it was not listed yet when reading began): before the run carrying
    /// the mark out lists, at m + grace or later.
    pub(super) fn check_deadline(&self, contents: &[&str]) -> Result<()> {
        if self.remote().is_none() || contents.iter().all(|n| n.is_empty()) {
            return Ok(());
        }
        self.fresh_marks()?;
        if !self.any_condemned() {
            return Ok(());
        }
        for name in contents.iter().filter(|n| !n.is_empty()) {
            let mut objects = self.objects_named(name)?.ok_or_else(|| {
                Error::Unavailable(format!(
                    "{name} is gone from the bucket; nothing was stored, try again"
                ))
            })?;
            objects.push(name.to_string());
            if let Err(e) = self.naming_deadline(&objects) {
                return Err(Error::Unavailable(format!(
                    "this commit would name {name} too late to keep what it names from a \
                     collection ({e}); nothing was stored, try again"
                )));
            }
        }
        Ok(())
    }

    /// Whether a Put may name the existing content object `name` now;
    /// false when it or a piece it names is gone or marked too long ago.
    pub(super) fn reusable(&self, name: &str) -> Result<bool> {
        if !self.any_condemned() {
            return Ok(true);
        }
        let Some(mut objects) = self.objects_named(name)? else {
            return Ok(false);
        };
        objects.push(name.to_string());
        match self.naming_deadline(&objects) {
            Ok(_) => Ok(true),
            Err(Error::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads the marks when those read are older than a quarter of the
    /// grace period (or were never read since open).
    pub(super) fn fresh_marks(&self) -> Result<()> {
        if self.remote().is_none() {
            return Ok(());
        }
        let grace = self.grace();
        let stale = || {
            self.inner
                .condemned
                .read()
                .read_at
                .is_none_or(|t| t.elapsed() > grace / 4)
        };
        if stale() {
            let lock = self.inner.condemned.read().reading.clone();
            let _reading = lock.lock();
            // Another caller may have read them while this one waited.
            if stale() {
                self.read_marks_locked()?;
            }
        }
        Ok(())
    }

    /// Reads the marks this index has not seen, forgets those carried out,
    /// and finds the pieces it refers to that are gone: at the first read
    /// since open, when the last read is half a grace period old (a mark
    /// may have come and gone unseen), and when a mark read before is gone.
    pub(super) fn read_marks(&self) -> Result<()> {
        if self.remote().is_none() {
            return Ok(());
        }
        let lock = self.inner.condemned.read().reading.clone();
        let _reading = lock.lock();
        self.read_marks_locked()
    }

    /// `read_marks`, its caller holding `Condemned::reading`.
    fn read_marks_locked(&self) -> Result<()> {
        let Some(r) = self.remote() else {
            return Ok(());
        };
        self.load_gone()?;
        // Before listing: a mark not listed was put after this instant.
        let began = Instant::now();
        let listed = r.list(MARKS, None)?;
        // Then the moves: every move made before a mark listed here is
        // listed there, so no piece this index reads through a move is
        // condemned or found gone.
        self.read_moves()?;
        let listed_names: HashSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        let mut fresh = Vec::new();
        // A mark listed but gone when read was carried out unseen: reconcile.
        let mut unseen = false;
        for l in &listed {
            if is_fence(&l.name) || self.inner.condemned.read().marks.contains_key(&l.name) {
                continue;
            }
            let m = match r.get(&l.name) {
                Ok(b) => parse_mark(&l.name, &b)?,
                Err(Error::NotFound(_)) => {
                    unseen = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            fresh.push((l.name.clone(), m.time_ms, m.objects));
        }
        let (vanished, due) = {
            let c = self.inner.condemned.read();
            let v: Vec<(String, Vec<String>)> = c
                .marks
                .iter()
                .filter(|(n, _)| !listed_names.contains(n.as_str()))
                .map(|(n, (_, o))| (n.clone(), o.clone()))
                .collect();
            let due = c.read_at.is_none_or(|t| t.elapsed() > self.grace() / 2);
            (v, due)
        };
        let found = if due || unseen || !vanished.is_empty() {
            self.find_gone(&vanished)?
        } else {
            Vec::new()
        };
        let db = self.db();
        let new_gone: Vec<&String> = {
            let c = self.inner.condemned.read();
            found.iter().filter(|n| !c.gone.contains(*n)).collect()
        };
        if !new_gone.is_empty() {
            let mut batch = rocksdb::WriteBatch::default();
            for n in &new_gone {
                batch.put_cf(cf(db, CF_META), key(GONE, n.as_bytes()), []);
            }
            write_synced(db, batch)?;
            tracing::info!(
                objects = new_gone.len(),
                "objects this index used are gone from the bucket; their chunks are stored anew \
                 by pushes and read through the blobs' content objects"
            );
        }
        let condemns = !new_gone.is_empty() || fresh.iter().any(|(_, _, o)| !o.is_empty());
        {
            let mut c = self.inner.condemned.write();
            for (n, _) in &vanished {
                c.marks.remove(n);
            }
            for (n, t, o) in fresh {
                c.marks.insert(n, (t, o));
            }
            c.gone.extend(found);
            c.rebuild();
            c.read_at = Some(began);
        }
        if condemns {
            // Recipes followed from before no longer vouch for their chunks.
            self.inner
                .chunk_drops
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    /// Loads the objects found gone before (once per open, before the
    /// first sync round: an ingest must not reuse them even if it fails).
    pub(super) fn load_gone(&self) -> Result<()> {
        if self.inner.condemned.read().loaded {
            return Ok(());
        }
        let db = self.db();
        let mut gone = HashSet::new();
        for item in meta_prefixed(db, GONE) {
            let (name, _) = item?;
            gone.insert(String::from_utf8_lossy(&name).into_owned());
        }
        let mut c = self.inner.condemned.write();
        c.gone.extend(gone);
        c.loaded = true;
        c.rebuild();
        Ok(())
    }

    /// The pieces this index refers to (its own through `remote-piece`,
    /// others' through their foreign ids) that `packs/` no longer lists and
    /// that are older than the grace period (younger ones may be listed
    /// late: a collection never deletes them), and the content objects it
    /// follows that marks carried out since deleted.
    fn find_gone(&self, vanished: &[(String, Vec<String>)]) -> Result<Vec<String>> {
        let r = self.remote().expect("bucket mode");
        let grace_ms = self.grace().as_millis() as u64;
        // Before listing: an age measured against what the listing saw.
        let now = now_ms();
        let listed: HashSet<String> = r
            .list("packs/", None)?
            .into_iter()
            .map(|l| l.name)
            .collect();
        let old = |n: &str| written_ms(n).is_some_and(|t| now.saturating_sub(t) >= grace_ms);
        let db = self.db();
        let mut gone = Vec::new();
        let mut referenced: HashSet<String> = HashSet::new();
        for prefix in [PIECE, ID] {
            for item in meta_prefixed(db, prefix) {
                let (_, v) = item?;
                let name = self.resolved(&String::from_utf8_lossy(&v))?;
                if name.starts_with("packs/") && !listed.contains(&name) && old(&name) {
                    gone.push(name.clone());
                }
                referenced.insert(name);
            }
        }
        // A listing may lag a delete: each piece of a carried-out mark this
        // index refers to is asked for itself.
        for (_, objs) in vanished {
            for o in objs.iter().filter(|o| o.starts_with("packs/")) {
                if !referenced.contains(o) || gone.contains(o) {
                    continue;
                }
                match r.size_of(o) {
                    Err(Error::NotFound(_)) => gone.push(o.clone()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for (_, objs) in vanished {
            for o in objs.iter().filter(|o| o.starts_with("contents/")) {
                let Some(d) = digest_of(o) else {
                    continue;
                };
                if self.content_name(&d)? != *o {
                    continue;
                }
                match r.size_of(o) {
                    Err(Error::NotFound(_)) => gone.push(o.clone()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        gone.sort();
        gone.dedup();
        Ok(gone)
    }

    /// Before a push commits in bucket mode: it may not have run longer
    /// than half the grace period, and the marks must be fresh. So a push
    /// that began before a mark writes its segment within half a grace
    /// period of it, before the run carrying the mark out lists.
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
        self.fresh_marks()
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
        // Every move, before liveness resolves the pieces objects name.
        self.read_moves()?;
        // Before listing: ages are measured against what the listing saw.
        let now = now_ms();
        let all = r.list("", None)?;
        let sizes: HashMap<&str, u64> = all.iter().map(|l| (l.name.as_str(), l.size)).collect();
        let mut small = SmallSegments::new(&all, self.compact_after());
        let (live, spare_n) = self.live_objects(&all, &mut small)?;
        rep.spare_contents = spare_n;
        // Marks old enough: carry them out (against today's live set).
        // Objects in marks not yet due, or deleted by this run: not marked again.
        let mut pending: HashSet<String> = HashSet::new();
        for l in all
            .iter()
            .filter(|l| l.name.starts_with(MARKS) && !is_fence(&l.name))
        {
            let m = match r.get(&l.name) {
                Ok(b) => parse_mark(&l.name, &b)?,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if now.saturating_sub(m.time_ms) < grace_ms {
                pending.extend(m.objects);
                continue;
            }
            let doomed: Vec<(String, u64)> = m
                .objects
                .iter()
                .filter(|o| !live.contains(*o))
                .filter_map(|o| sizes.get(o.as_str()).map(|&n| (o.clone(), n)))
                .collect();
            self.renew_lease(me)?;
            for (i, part) in doomed.chunks(DELETES_PER_RENEWAL).enumerate() {
                if i > 0 {
                    self.renew_lease(me)?;
                }
                let names: Vec<String> = part.iter().map(|(o, _)| o.clone()).collect();
                r.delete_many(&names)?;
                for (o, n) in part {
                    rep.deleted += 1;
                    rep.bytes_deleted += n;
                    pending.insert(o.clone());
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
            // The mark's time is taken right before its PUT (not `now`, from
            // before the listing): a daemon that has not read it yet began
            // its last read of the marks after this time (see
            // `check_deadline`).
            let time_ms = now_ms();
            let name = format!(
                "{MARKS}{:013}-{}.json",
                time_ms,
                unique_suffix(&self.writer_id())
            );
            let m = Mark { time_ms, objects };
            r.put(&name, serde_json::to_vec(&m).expect("serializes"))?;
        }
        // Compaction last: what it moves is marked by the next run, against
        // the moves it wrote.
        let renew = || self.renew_lease(me);
        self.compact_segments(&renew, small, &mut rep.compacted)?;
        self.compact_pieces(&renew, &all, &live, &pending, &mut rep.compacted)?;
        self.compact_moves(&renew, &all, &mut rep.compacted)?;
        let c = &rep.compacted;
        if rep.marked > 0 || rep.deleted > 0 || c.pieces > 0 || c.segments > 0 {
            tracing::info!(?rep, "collected the bucket");
        } else if rep.spare_contents > 0 {
            tracing::debug!(
                spares = rep.spare_contents,
                "spare content objects wait for their grace period"
            );
        }
        Ok(())
    }

    /// The live set: the content objects of every live digest but its
    /// spares (`spares.rs`), and the objects they name, with the number of
    /// spares. A blob's newest record decides (segment time; a Put tied
    /// with a Delete keeps it: daemons that listed them in another order
    /// hold it). Every content object of a live digest counts, named or
    /// not, unless another placing all its chunks stands in for it: an index
    /// may follow one an older record named (two daemons pushed the blob,
    /// or one kept it as received and another converted it), or a
    /// conversion's, which later records name.
    fn live_objects(
        &self,
        all: &[super::remote::Listed],
        small: &mut SmallSegments,
    ) -> Result<(HashSet<String>, u64)> {
        let r = self.remote().expect("bucket mode");
        // Blob → (time of its newest records, whether one of them is a Put).
        let mut newest: HashMap<(String, Digest), (u64, bool)> = HashMap::new();
        let mut named: HashMap<Digest, BTreeSet<String>> = HashMap::new();
        for l in all.iter().filter(|l| l.name.starts_with("segments/")) {
            let seg = match r.get(&l.name) {
                Ok(b) => Segment::decode(&b)?,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if small.takes(l) {
                small.add(&l.name, &seg);
            }
            let times: Vec<u64> = (0..seg.records.len()).map(|i| seg.time_of(i)).collect();
            for (rec, t) in seg.records.into_iter().zip(times) {
                let (ns, digest, put) = match rec {
                    Record::Put {
                        ns,
                        digest,
                        content,
                        ..
                    } => {
                        if !content.is_empty() {
                            named.entry(digest).or_default().insert(content);
                        }
                        (ns, digest, true)
                    }
                    Record::Delete { ns, digest } => (ns, digest, false),
                };
                let e = newest.entry((ns, digest)).or_insert((t, put));
                if t > e.0 {
                    *e = (t, put);
                } else if t == e.0 {
                    e.1 |= put;
                }
            }
        }
        let live_digests: HashSet<Digest> = newest
            .into_iter()
            .filter(|(_, (_, put))| *put)
            .map(|((_, d), _)| d)
            .collect();
        let mut contents: HashMap<Digest, BTreeSet<String>> = HashMap::new();
        for d in &live_digests {
            if let Some(n) = named.remove(d) {
                contents.insert(*d, n);
            }
        }
        for l in all.iter() {
            if let Some(d) = digest_of(&l.name).filter(|d| live_digests.contains(d)) {
                contents.entry(d).or_default().insert(l.name.clone());
            }
        }
        let listed: HashSet<&str> = all.iter().map(|l| l.name.as_str()).collect();
        let mut live = HashSet::new();
        let mut spare_count = 0;
        // One digest at a time: its objects are compared, then dropped.
        let collects_spares = self.remote().is_some_and(|r| r.spares_on());
        for names in contents.into_values() {
            let mut cands = Vec::new();
            let mut pieces = Vec::new();
            for c in names {
                // Named but gone: nothing of it to keep (verify reports the blob).
                let Some(obj) = self.read_content_object(&c)? else {
                    continue;
                };
                // A moved piece lives on in its copy (`moves.rs`): the copy is
                // live, and the piece is collected.
                let named: Vec<String> = obj
                    .objects
                    .iter()
                    .map(|o| self.resolved(o))
                    .collect::<Result<_>>()?;
                let complete = named.iter().all(|o| listed.contains(o.as_str()));
                cands.push(Candidate::new(c.clone(), written_ms(&c), &obj, complete));
                pieces.push(named);
            }
            let spare = match collects_spares {
                true => spares(&cands),
                false => HashSet::new(),
            };
            for (i, (c, named)) in cands.into_iter().zip(pieces).enumerate() {
                if spare.contains(&i) {
                    spare_count += 1;
                    continue;
                }
                live.extend(named);
                live.insert(c.name);
            }
        }
        Ok((live, spare_count))
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
