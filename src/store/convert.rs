//! Converting blobs stored as received (`StoreConfig::defer_uploads`).
//!
//! containerd waits for the reply to each WRITE, and decoding a gzip layer
//! and proving its rebuild costs several times the CPU containerd spends
//! itself. So an upload of a compressed blob is cut as plain data, and its
//! digest gets a mark in the `meta` column family, in the commit's batch. A
//! background thread, at the lowest CPU priority, later reads each marked
//! blob back, runs it through a full ingest, and swaps the content's recipe
//! for the new one in one batch: new pages, plan and prefix entry, the
//! chunk references moved from the old chunks to the new, the mark deleted.
//! The old chunks are then garbage for the next collection.
//!
//! Readers never mix the two recipes: a read holds its digest's shard of
//! `swap_locks` shared from loading the content record to its last page,
//! and the swap holds it exclusively while it writes the batch and forgets
//! the content's cached pages and plan. A crash before the batch leaves the
//! blob as it was, still marked (its new chunks are an uncommitted pack tail,
//! trimmed at start); after it, converted.

use super::commit::{write_synced, Bases};
use super::index::{self, cf, mark_key, CF_META, MARK};
use super::ingest::{Committing, IngestOptions};
use super::{Inner, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a swap waits for readers of its shard before it gives up and
/// tries again later.
const SWAP_WAIT: Duration = Duration::from_secs(2);

/// Failures of one blob's conversion (not counting readers in the way or a
/// full disk) after which it is tried only every `FAILED_RETRY`.
const MAX_FAILURES: u32 = 3;
const FAILED_RETRY: Duration = Duration::from_secs(3600);
/// When a blob is tried again after readers were in the way, the disk was
/// full, or a failure below MAX_FAILURES.
const TRANSIENT_RETRY: Duration = Duration::from_secs(30);
/// Longest marked blobs wait for uploads to be quiet.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// What the converter thread waits on.
pub(super) struct Signal {
    started: Instant,
    /// Milliseconds after `started` of the last client write to an ingest.
    last_write_ms: AtomicU64,
    wake: Mutex<bool>,
    cond: Condvar,
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            started: Instant::now(),
            last_write_ms: AtomicU64::new(0),
            wake: Mutex::new(false),
            cond: Condvar::new(),
        }
    }
}

impl Signal {
    /// A client wrote to an ingest.
    pub(super) fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_write_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since a client last wrote.
    pub(super) fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// A blob was marked.
    pub(super) fn wake(&self) {
        *self.wake.lock() = true;
        self.cond.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let mut w = self.wake.lock();
        if !*w {
            self.cond.wait_for(&mut w, timeout);
        }
        *w = false;
    }
}

/// The background converter; stops when dropped.
pub struct Converter {
    stop: Arc<AtomicBool>,
    inner: Arc<Inner>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Converter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.inner.convert.wake();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Inner {
    /// The lock a read of `digest` holds shared, and its swap exclusively.
    pub(super) fn swap_lock(&self, d: &Digest) -> &parking_lot::RwLock<()> {
        &self.swap_locks[d.0[0] as usize % self.swap_locks.len()]
    }

    /// The lock held around loading and caching a page or plan of `digest`.
    pub(super) fn page_lock(&self, d: &Digest) -> &parking_lot::RwLock<()> {
        &self.page_locks[d.0[1] as usize % self.page_locks.len()]
    }
}

impl Store {
    /// Digests marked for conversion, in digest order.
    pub fn pending_conversions(&self) -> Result<Vec<Digest>> {
        let db = self.db();
        let mut out = Vec::new();
        for item in super::index::meta_prefixed(db, MARK) {
            let (d, _) = item?;
            let d = d[..]
                .try_into()
                .map_err(|_| Error::DataLoss("bad conversion mark".into()))?;
            out.push(Digest(d));
        }
        Ok(out)
    }

    /// Converts every marked blob now, in this thread; returns how many were
    /// converted.
    pub fn convert_pending(&self) -> Result<usize> {
        let mut n = 0;
        for d in self.pending_conversions()? {
            n += self.convert(&d, &AtomicBool::new(false))? as usize;
        }
        Ok(n)
    }

    /// Converts one marked blob now, at this thread's priority; false when
    /// there was nothing to convert or `stop` was set.
    pub fn convert(&self, digest: &Digest, stop: &AtomicBool) -> Result<bool> {
        self.convert_at(digest, stop, false)
    }

    /// `lowered`: the reading, decoding and proving run on a thread at the
    /// lowest priority (with the threads it starts), and only the swap, which
    /// takes the commit lock, at this thread's.
    fn convert_at(&self, digest: &Digest, stop: &AtomicBool, lowered: bool) -> Result<bool> {
        if !self.is_marked(digest)? {
            return Ok(false);
        }
        let Some(content) = self.content(digest)? else {
            // Deleted: the delete took the mark too; a stray one goes, under
            // the commit lock so a new upload's mark is not taken with it.
            let _commits = self.inner.counters.lock();
            if self.content(digest)?.is_none() {
                let db = self.db();
                db.delete_cf(cf(db, CF_META), mark_key(digest))?;
            }
            return Ok(false);
        };
        let started = Instant::now();
        let ingest = if lowered {
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("strata-convert-work".into())
                    .spawn_scoped(s, || {
                        crate::codec::block_pool::lower_this_thread();
                        self.reingest(digest, &content, stop)
                    })
                    .map_err(|e| Error::io("starting a conversion thread", e))?
                    .join()
                    .map_err(|_| Error::Internal("a conversion thread panicked".into()))?
            })?
        } else {
            self.reingest(digest, &content, stop)?
        };
        let Some(ingest) = ingest else {
            return Ok(false);
        };
        let swapped = ingest.commit_conversion(*digest, content.size)?;
        if swapped {
            let c = self.content(digest)?;
            tracing::info!(
                %digest,
                size = content.size,
                kept = %c.as_ref().map(|c| self.kept(digest, c).unwrap_or_default()).unwrap_or_default(),
                secs = started.elapsed().as_secs_f64(),
                "blob converted"
            );
        }
        Ok(swapped)
    }

    pub(super) fn is_marked(&self, digest: &Digest) -> Result<bool> {
        let db = self.db();
        Ok(db
            .get_pinned_cf(cf(db, CF_META), mark_key(digest))?
            .is_some())
    }

    /// Reads a stored blob into a new ingest; None when `stop` was set.
    fn reingest(
        &self,
        digest: &Digest,
        content: &super::Content,
        stop: &AtomicBool,
    ) -> Result<Option<super::Ingest>> {
        let mut ingest = self.begin_ingest(IngestOptions {
            namespace: crate::config::DEFAULT_NAMESPACE.into(),
            background: true,
            ..Default::default()
        })?;
        let mut failed = None;
        self.read_range(digest, content, 0, 0, &mut |b| {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if let Err(e) = ingest.write(b) {
                failed = Some(e);
                return Ok(false);
            }
            Ok(true)
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((!stop.load(Ordering::Relaxed)).then_some(ingest))
    }

    /// Replaces a marked content's recipe with a conversion's (see the
    /// module doc). False, with nothing written, when the mark is gone.
    pub(super) fn swap_content(&self, new: Committing) -> Result<bool> {
        let digest = new.digest;
        if !self.is_marked(&digest)? {
            return Ok(false);
        }
        let lock = self.inner.swap_lock(&digest);
        let Some(_readers_out) = lock.try_write_for(SWAP_WAIT) else {
            return Err(Error::Unavailable(format!(
                "{digest} is being read; its conversion waits for the next round"
            )));
        };
        let db = self.db();
        let mut counters = self.inner.counters.lock();
        let mut c = *counters;
        if db
            .get_pinned_cf(cf(db, CF_META), mark_key(&digest))?
            .is_none()
        {
            return Ok(false);
        }
        let Some(old) = self.content(&digest)? else {
            return Ok(false);
        };
        let mut batch = rocksdb::WriteBatch::default();
        let (_, _, gone) = self.replace_recipe(&mut batch, &mut c, &old, &new, old.holders)?;
        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
        // The converted recipe's content object: later records name it.
        // (The object kept as received stays named by the records before;
        // rewriting them here could undo a delete this index has not seen.)
        let name = self.publish_content(&mut batch, &new)?;
        // Its pieces may be marked: it must be done within the deadline.
        if let Some(n) = &name {
            self.check_deadline(&[n.as_str()])?;
        }
        write_synced(db, batch)?;
        *counters = c;
        drop(counters);
        self.forget_recipe(&digest);
        for d in gone {
            self.forget_recipe(&d);
        }
        Ok(true)
    }

    /// Puts in `batch` the swap of a marked content's recipe for `new`'s,
    /// with `holders` namespaces holding it, and counts it; the caller holds
    /// the commit lock and the digest's swap lock exclusively, and forgets
    /// the cached recipe (and those of the bases returned) after writing the
    /// batch. Returns the new record and its recipe bytes.
    pub(super) fn replace_recipe(
        &self,
        batch: &mut rocksdb::WriteBatch,
        c: &mut index::Counters,
        old: &super::Content,
        new: &Committing,
        holders: u32,
    ) -> Result<(super::Content, u64, Vec<Digest>)> {
        let digest = new.digest;
        let db = self.db();
        let mut bases = Bases::default();
        let mut deltas = self.drop_content(batch, c, &mut bases, &digest, old)?;
        let put = self.put_content(batch, c, &mut bases, new, holders)?;
        for (h, d) in &put.refs {
            *deltas.entry(*h).or_default() += d;
        }
        self.move_refs(batch, c, &deltas)?;
        let gone = bases.write(db, batch);
        let content = put.content;
        // Stream bytes count once per namespace holding the blob.
        let held = old.holders as u64;
        c.logical_stream_bytes = (c.logical_stream_bytes + held * content.stream_bytes())
            .saturating_sub(held * old.stream_bytes());
        batch.delete_cf(cf(db, CF_META), mark_key(&digest));
        Ok((content, put.recipe_bytes, gone))
    }

    /// Forgets a content's cached pages, plan and paused rebuilds, after a
    /// batch that changed or removed its recipe. Under the page lock, so a
    /// page loaded before that batch cannot be cached after this.
    pub(super) fn forget_recipe(&self, digest: &Digest) {
        let inner = &self.inner;
        let _g = inner.page_lock(digest).write();
        inner.pages.forget(|k| k.0 == *digest);
        inner.plans.forget(|k| k == digest);
        inner.cursors.lock().retain(|(d, _)| d != digest);
    }

    /// Starts converting marked blobs in the background, whenever no client
    /// has written to an ingest for `after`.
    pub fn start_converter(&self, after: Duration) -> Result<Converter> {
        let stop = Arc::new(AtomicBool::new(false));
        let store = self.clone();
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("strata-convert".into())
            .spawn(move || store.convert_loop(after, &flag))
            .map_err(|e| Error::io("starting the converter thread", e))?;
        Ok(Converter {
            stop,
            inner: self.inner.clone(),
            handle: Some(handle),
        })
    }

    fn convert_loop(&self, after: Duration, stop: &AtomicBool) {
        let signal = &self.inner.convert;
        // Blobs whose conversion failed, and when to try them again.
        let mut failures: HashMap<Digest, (u32, Instant)> = HashMap::new();
        // Since when marked blobs have waited for a quiet moment.
        let mut waiting: Option<Instant> = None;
        // Marks left by a previous run are looked at right away.
        let mut idle = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) {
            signal.wait(idle);
            let pending = match self.pending_conversions() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "listing blobs to convert failed");
                    idle = Duration::from_secs(30);
                    continue;
                }
            };
            let now = Instant::now();
            failures.retain(|_, (_, retry)| *retry > now);
            let pending: Vec<Digest> = pending
                .into_iter()
                .filter(|d| !failures.contains_key(d))
                .collect();
            idle = if pending.is_empty() {
                waiting = None;
                Duration::from_secs(60)
            } else {
                Duration::from_millis(200)
            };
            let mut converted = 0;
            for d in pending {
                // Clients writing all the time would put conversions off
                // forever: past MAX_WAIT they go on anyway, at low priority.
                let since = *waiting.get_or_insert_with(Instant::now);
                let quiet = signal.quiet_for() >= after || since.elapsed() >= MAX_WAIT;
                if stop.load(Ordering::SeqCst) || !quiet {
                    break;
                }
                match self.convert_at(&d, stop, true) {
                    Ok(done) => converted += done as usize,
                    Err(e) => {
                        // Readers held the blob, or the disk is full: later,
                        // without counting against the blob.
                        let transient = matches!(e, Error::Unavailable(_)) || e.is_disk_full();
                        let (n, retry) = failures.entry(d).or_insert((0, now));
                        if !transient {
                            *n += 1;
                        }
                        *retry = Instant::now()
                            + if *n >= MAX_FAILURES {
                                FAILED_RETRY
                            } else {
                                TRANSIENT_RETRY
                            };
                        tracing::warn!(digest = %d, error = %e, failures = *n, "converting a blob stored as received failed; it stays as it is for now");
                        if e.is_disk_full() {
                            break;
                        }
                    }
                }
            }
            // The copies kept as received are garbage now: give their space
            // back once the queue is empty, rather than at the next timed
            // collection.
            if converted > 0
                && !stop.load(Ordering::SeqCst)
                && self.pending_conversions().is_ok_and(|p| p.is_empty())
            {
                if let Err(e) = self.gc(super::gc::GcOptions::default()) {
                    tracing::warn!(error = %e, "collecting the copies of converted blobs failed");
                }
            }
        }
    }
}
