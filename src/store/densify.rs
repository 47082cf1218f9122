//! Dense packs: chunk data recompressed once it has gone cold.
//!
//! Ingest compresses at a fast level (3) in 2 MiB blocks, so pushes keep up
//! with the network. Once pushes pause, the packs they filled are rewritten
//! (gc.rs's `rewrite_pack`, so with the same crash safety) at a slower level
//! (9): on the corpus that takes 7 % off the packs (BENCHMARKS.md, issue
//! 18), and reads stay as fast (decompression costs the same at any level).
//! 4 MiB blocks would take 10 %, but reads of layers whose chunks are spread
//! over many blocks slowed by a third, so the block size stays ingest's.
//! Garbage collection's rewrites go to dense packs too: what they move is
//! cold by definition.
//!
//! A pack is dense when the index says so (`meta`: `dense\0` + id BE, written
//! in the batch that commits its first rewrite). The record format does not
//! change: level and block size are the writer's choice, and any reader
//! decodes any record.

use super::gc::GcReport;
use super::index::{cf, CF_PACKS};
use super::Store;
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::time::Duration;

const DENSE: &[u8] = b"dense\0";

/// The `meta` key marking pack `id` dense.
pub fn dense_key(id: u32) -> Vec<u8> {
    let mut k = DENSE.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Every pack the index marks dense.
pub fn load_dense(db: &rocksdb::DB) -> Result<HashSet<u32>> {
    let mut out = HashSet::new();
    for item in super::index::meta_prefixed(db, DENSE) {
        let (id, _) = item?;
        if let Ok(b) = <[u8; 4]>::try_from(&id[..]) {
            out.insert(u32::from_be_bytes(b));
        }
    }
    Ok(out)
}

/// Pushes quiet this long before an idle densify starts a pack.
pub const QUIET: Duration = Duration::from_secs(5);

/// Moved chunks past which a densify compacts the `chunks` family itself.
const COMPACT_AFTER_MOVES: u64 = 4096;

impl Store {
    /// Whether rewrites write dense packs: a dense level is set, and the
    /// packs are this data directory's alone (a bucket's are shared).
    pub(super) fn densifies(&self) -> bool {
        self.inner.cfg.dense_level > 0 && self.remote().is_none()
    }

    /// Rewrites every pack that is not dense and that no ingest holds.
    /// With `yield_to_pushes`, stops before the next pack once a push has
    /// written in the last `QUIET` (the daemon's idle run); `strata gc`
    /// takes them all. Returns false when it stopped for want of space.
    pub(super) fn densify_packs(&self, yield_to_pushes: bool, r: &mut GcReport) -> Result<bool> {
        if !self.densifies() {
            return Ok(true);
        }
        let db = self.db();
        let mut ids = Vec::new();
        for item in db.iterator_cf(cf(db, CF_PACKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let (id, _) = super::index::decode_pack_entry(&k, &v)?;
            if !self.inner.packs.is_dense(id) {
                ids.push(id);
            }
        }
        for id in ids {
            if self.rewrites_stopped() || (yield_to_pushes && self.quiet_for() < QUIET) {
                break;
            }
            let committed = self.committed_len(id)?;
            // Densifying is an optimisation: it starts a pack only with room
            // for the whole copy beside the full reserve pushes keep, so it
            // never takes what a push would need; collection still frees
            // space on a full disk.
            let cfg = &self.inner.cfg;
            if let Err(e) = self
                .inner
                .packs
                .claim(&self.inner.dir, committed, cfg.min_free_bytes)
            {
                if e.is_disk_full() {
                    tracing::warn!(pack = id, error = %e, "densifying waits for free space");
                    return Ok(false);
                }
                return Err(e);
            }
            if !self.inner.packs.retire(id) {
                continue; // an ingest is appending to it: next time
            }
            tracing::info!(pack = id, bytes = committed, "densifying a pack");
            match self.rewrite_pack(id, committed, r) {
                Ok(written) => {
                    r.packs_densified += 1;
                    r.densified_bytes_before += committed;
                    r.densified_bytes_after += written;
                }
                Err(e) if e.is_disk_full() => {
                    tracing::warn!(pack = id, error = %e, "densifying waits for free space");
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// After a densify moved many chunks: their new locations are merge
    /// operands beside the old records until a compaction folds them, which
    /// would leave the `chunks` family at rest up to twice its size. A few
    /// moved chunks are left to RocksDB's own compactions, and so is
    /// everything once the daemon is stopping.
    pub(super) fn compact_chunk_records(&self, moved: u64) -> Result<()> {
        if moved < COMPACT_AFTER_MOVES || self.rewrites_stopped() {
            return Ok(());
        }
        let db = self.db();
        let chunks = cf(db, super::index::CF_CHUNKS);
        db.flush_cf(chunks)?;
        db.compact_range_cf(chunks, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// The daemon's idle run: densifies what pushes left, yielding to new
    /// pushes. Returns what it did.
    pub fn densify_when_quiet(&self) -> Result<GcReport> {
        let mut r = GcReport::default();
        if !self.densifies() {
            return Ok(r);
        }
        let _one_at_a_time = self.inner.gc_lock.lock();
        r.pack_bytes_before = self.inner.counters.lock().pack_bytes;
        let had_room = self.densify_packs(true, &mut r)?;
        r.pack_bytes_after = self.inner.counters.lock().pack_bytes;
        if r.packs_densified > 0 {
            self.compact_chunk_records(r.chunks_moved)?;
            tracing::info!(
                packs = r.packs_densified,
                before = r.densified_bytes_before,
                after = r.densified_bytes_after,
                "packs densified: pushes paused"
            );
        }
        if !had_room {
            // The idle loop backs off rather than retry every second.
            return Err(Error::disk_full(
                Some(&self.inner.dir),
                "densifying packs waits for free space",
            ));
        }
        Ok(r)
    }

    /// Makes rewrites in progress give up (their partial output is cut off,
    /// as after a crash) and keeps new ones from starting: for shutdown.
    pub fn stop_rewrites(&self) {
        self.inner
            .stop_rewrites
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn rewrites_stopped(&self) -> bool {
        self.inner
            .stop_rewrites
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a pack awaits densifying (the idle loop's cheap check).
    pub fn has_packs_to_densify(&self) -> Result<bool> {
        if !self.densifies() {
            return Ok(false);
        }
        let db = self.db();
        for item in db.iterator_cf(cf(db, CF_PACKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let (id, _) = super::index::decode_pack_entry(&k, &v)?;
            if !self.inner.packs.is_dense(id) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
