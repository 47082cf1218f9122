//! Garbage collection: chunks no recipe references are dropped from the index,
//! and packs whose garbage passes a threshold are rewritten with only their
//! live chunks, online, while pushes and reads go on.
//!
//! The classic race (an ingest reuses a chunk that GC has just judged dead) is
//! impossible by design: an ingest pins a chunk *before* it looks the chunk up,
//! and GC decides and deletes under the same pin lock, skipping pinned chunks.
//! So either the ingest's lookup comes after the delete (it sees the chunk as
//! new and writes it again) or the pin comes first (GC leaves the chunk alone).
//! Pins last until the ingest has committed or given up.
//!
//! Crash safety: dropping dead chunks is one WriteBatch. A rewrite appends the
//! live chunks to another pack and fsyncs it, then one WriteBatch moves their
//! locations and forgets the old pack, and only then is the old file removed.
//! A crash before the batch leaves an uncommitted tail (trimmed at start); a
//! crash after it leaves a pack file no commit refers to (removed at start).

use super::chunk_entry::{self, ChunkEntry};
use super::densify;
use super::index::{cf, Counters, CF_CHUNKS, CF_META, CF_PACKS};
use super::pack::{self, BlockBuilder, ChunkLoc, Hash, RecordHeader, HEADER_LEN};
use super::Store;
use crate::error::{Error, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Rewrite a pack when at least this share of its plain bytes is garbage.
    pub rewrite_threshold: f64,
    /// Also rewrite every pack not yet dense (densify.rs), without yielding
    /// to pushes: what `strata gc` asks for. Background collection leaves
    /// that to the idle run.
    pub densify: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            rewrite_threshold: 0.25,
            densify: false,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub chunks_freed: u64,
    pub chunk_bytes_freed: u64,
    pub packs_rewritten: u64,
    pub packs_removed: u64,
    pub chunks_moved: u64,
    /// Packs rewritten dense (densify.rs), and their bytes before and after.
    pub packs_densified: u64,
    pub densified_bytes_before: u64,
    pub densified_bytes_after: u64,
    /// Pack bytes on disk before and after.
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// Bucket mode: the bucket's collection (`bucket_gc.rs`).
    pub bucket: super::bucket_gc::BucketGcReport,
}

impl Store {
    pub fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        let _one_at_a_time = self.inner.gc_lock.lock();
        let mut r = GcReport {
            pack_bytes_before: self.inner.counters.lock().pack_bytes,
            ..Default::default()
        };
        self.drop_dead_chunks(&mut r)?;
        if self.remote().is_some() {
            // Packs in a bucket are shared with other daemons: their bytes
            // are reclaimed by the bucket's own collection (one daemon at a
            // time, two phases), never rewritten from one index's view.
            r.bucket = self.collect_bucket()?;
            r.pack_bytes_after = self.inner.counters.lock().pack_bytes;
            return Ok(r);
        }
        // Retire every pack to rewrite before leasing any destination, so no
        // rewrite appends to a pack that is rewritten later in this run; packs
        // an ingest holds right now wait for the next run.
        let mut retired = Vec::new();
        for (id, _, live, total) in self.pack_liveness()? {
            let garbage = total.saturating_sub(live);
            let worth = garbage > 0
                && (live == 0 || garbage as f64 >= opts.rewrite_threshold * total as f64);
            if worth && self.inner.packs.retire(id) {
                retired.push(id);
            }
        }
        for (i, &id) in retired.iter().enumerate() {
            // The length now, not when liveness was measured: a push may have
            // committed to the pack before it was retired.
            let committed = self.committed_len(id)?;
            if let Err(e) = self.rewrite_pack(id, committed, &mut r) {
                for &rest in &retired[i..] {
                    self.inner.packs.unretire(rest);
                }
                return Err(e);
            }
        }
        if opts.densify {
            // A disk too full for a copy leaves the rest for later: the
            // collection above already freed what it could.
            self.densify_packs(false, &mut r)?;
            if r.packs_densified > 0 {
                self.compact_chunk_records(r.chunks_moved)?;
            }
        }
        r.pack_bytes_after = self.inner.counters.lock().pack_bytes;
        if r.chunks_freed > 0 || r.packs_rewritten > 0 || r.packs_removed > 0 {
            tracing::info!(?r, "garbage collected");
        }
        Ok(r)
    }

    fn drop_dead_chunks(&self, r: &mut GcReport) -> Result<()> {
        let db = self.db();
        let mut counters = self.inner.counters.lock();
        let pins = self.inner.pins.lock();
        let mut c: Counters = *counters;
        let mut batch = rocksdb::WriteBatch::default();
        for item in db.iterator_cf(cf(db, CF_CHUNKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let e = ChunkEntry::decode(&v)?;
            if e.refs > 0 {
                continue;
            }
            let hash: Hash = k[..]
                .try_into()
                .map_err(|_| Error::DataLoss("bad chunk key".into()))?;
            if pins.contains_key(&hash) {
                continue;
            }
            if let Some(loc) = e.loc {
                c.chunks -= 1;
                c.chunk_plain_bytes -= loc.len as u64;
                r.chunk_bytes_freed += loc.len as u64;
            }
            batch.delete_cf(cf(db, CF_CHUNKS), hash);
            c.unreferenced_chunks = c.unreferenced_chunks.saturating_sub(1);
            r.chunks_freed += 1;
        }
        if r.chunks_freed > 0 {
            batch.put_cf(cf(db, CF_META), super::index::META_COUNTERS, c.encode());
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(batch, &wo)?;
            *counters = c;
            // Still under the pin lock: an ingest that pins after this sees it.
            self.inner
                .chunk_drops
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    pub(super) fn committed_len(&self, id: u32) -> Result<u64> {
        let db = self.db();
        match db.get_cf(cf(db, CF_PACKS), id.to_be_bytes())? {
            Some(v) => Ok(u64::from_le_bytes(
                v[..]
                    .try_into()
                    .map_err(|_| Error::DataLoss("bad pack length".into()))?,
            )),
            None => Ok(0),
        }
    }

    /// (pack, committed length, live plain bytes, all plain bytes) per pack.
    fn pack_liveness(&self) -> Result<Vec<(u32, u64, u64, u64)>> {
        let db = self.db();
        let mut live: HashMap<u32, u64> = HashMap::new();
        for item in db.iterator_cf(cf(db, CF_CHUNKS), rocksdb::IteratorMode::Start) {
            let (_, v) = item?;
            if let Some(loc) = ChunkEntry::decode(&v)?.loc {
                *live.entry(loc.pack).or_default() += loc.len as u64;
            }
        }
        let mut out = Vec::new();
        for item in db.iterator_cf(cf(db, CF_PACKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let (id, committed) = super::index::decode_pack_entry(&k, &v)?;
            let mut total = 0u64;
            let mut off = 0u64;
            while off < committed {
                let h = self.inner.packs.read_at(id, off, HEADER_LEN)?;
                let h = RecordHeader::parse(&h).ok_or_else(|| {
                    Error::DataLoss(format!(
                        "pack {id} offset {off}: not a record; run strata verify"
                    ))
                })?;
                total += h.plain_len as u64;
                off += h.record_len();
            }
            out.push((id, committed, live.get(&id).copied().unwrap_or(0), total));
        }
        Ok(out)
    }

    /// Copies the live chunks of a retired pack to another pack (a dense one,
    /// densify.rs, unless that is off), moves their locations in one batch,
    /// then removes the old file. Returns the bytes written.
    pub(super) fn rewrite_pack(&self, id: u32, committed: u64, r: &mut GcReport) -> Result<u64> {
        let db = self.db();
        let dense = self.densifies();
        let cfg = &self.inner.cfg;
        let (mut writer, level, block_bytes) = if dense {
            let w = self.inner.packs.lease_dense()?;
            (w, cfg.dense_level, cfg.dense_block_bytes)
        } else {
            (self.inner.packs.lease()?, cfg.zstd_level, cfg.block_bytes)
        };
        let start_len = writer.len;
        let mut comp = zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        let mut moved: Vec<(Hash, ChunkLoc, ChunkLoc)> = Vec::new();
        let mut block = BlockBuilder::default();
        let mut old_locs: Vec<ChunkLoc> = Vec::new();
        let mut flush = |block: &mut BlockBuilder,
                         old_locs: &mut Vec<ChunkLoc>,
                         writer: &mut pack::PackWriter|
         -> Result<()> {
            if block.is_empty() {
                return Ok(());
            }
            let rec = pack::encode_block(block, &mut comp)?;
            // Moving chunks needs room too; half the reserve may go to it, so
            // that collecting on a nearly full disk frees space, not index room.
            let _room = self.inner.packs.claim(
                &self.inner.dir,
                rec.len() as u64,
                self.inner.cfg.min_free_bytes / 2,
            )?;
            let off = writer.append(&rec)?;
            let mut at = 0u32;
            for ((hash, len), old) in block.entries.iter().zip(old_locs.drain(..)) {
                let new = ChunkLoc {
                    pack: writer.id,
                    block_offset: off,
                    block_len: rec.len() as u32,
                    offset_in_block: at,
                    len: *len,
                };
                moved.push((*hash, old, new));
                at += len;
            }
            *block = BlockBuilder::default();
            Ok(())
        };
        let result = (|| -> Result<()> {
            let mut off = 0u64;
            while off < committed {
                if self.rewrites_stopped() {
                    return Err(Error::Unavailable(
                        "the daemon is stopping: pack rewrite abandoned".into(),
                    ));
                }
                let h = self.inner.packs.read_at(id, off, HEADER_LEN)?;
                let h = RecordHeader::parse(&h).ok_or_else(|| {
                    Error::DataLoss(format!("pack {id} offset {off}: not a record"))
                })?;
                let len = h.record_len();
                let rec = self.inner.packs.read_at(id, off, len as usize)?;
                let what = || format!("pack {id} record at offset {off}");
                let decoded = pack::decode_block(&rec, &what)?;
                let mut at = 0usize;
                for (hash, clen) in decoded.entries {
                    let data = &decoded.plain[at..at + clen as usize];
                    let here = chunk_entry::location(db, &hash)?;
                    if let Some(loc) = here.filter(|l| l.pack == id && l.block_offset == off) {
                        block.push(hash, data);
                        old_locs.push(loc);
                        if block.plain.len() >= block_bytes {
                            flush(&mut block, &mut old_locs, &mut writer)?;
                        }
                    }
                    at += clen as usize;
                }
                off += len;
            }
            flush(&mut block, &mut old_locs, &mut writer)?;
            writer.sync()
        })();
        // On any failure before the batch is written, the copy is cut off
        // and the source keeps serving; a writer whose cut failed takes no
        // appends again (its tail is trimmed at the next open).
        let give_up = |mut writer: pack::PackWriter, e: Error| -> Error {
            if writer.truncate(start_len).is_ok() {
                self.inner.packs.release(writer);
            } else {
                self.inner.packs.release_spent(writer);
            }
            self.inner.packs.unretire(id);
            e
        };
        if let Err(e) = result {
            return Err(give_up(writer, e));
        }
        let committed_batch = (|| -> Result<u64> {
            let mut counters = self.inner.counters.lock();
            let mut c = *counters;
            let mut batch = rocksdb::WriteBatch::default();
            for (hash, old, new) in &moved {
                // Only chunks that still live where we found them move.
                let now = chunk_entry::location(db, hash)?;
                if now.as_ref() == Some(old) {
                    chunk_entry::merge_loc(db, &mut batch, hash, new);
                    r.chunks_moved += 1;
                }
            }
            let written = writer.len - start_len;
            if written > 0 {
                batch.put_cf(
                    cf(db, CF_PACKS),
                    writer.id.to_be_bytes(),
                    writer.len.to_le_bytes(),
                );
                if dense {
                    batch.put_cf(cf(db, CF_META), densify::dense_key(writer.id), []);
                }
            }
            batch.delete_cf(cf(db, CF_PACKS), id.to_be_bytes());
            batch.delete_cf(cf(db, CF_META), densify::dense_key(id));
            c.pack_bytes = c.pack_bytes + written - committed;
            batch.put_cf(cf(db, CF_META), super::index::META_COUNTERS, c.encode());
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(batch, &wo)?;
            *counters = c;
            if dense && written > 0 {
                self.inner.packs.mark_dense(writer.id);
            }
            Ok(written)
        })();
        let written = match committed_batch {
            Ok(w) => w,
            Err(e) => return Err(give_up(writer, e)),
        };
        self.inner.packs.release(writer);
        self.inner.blocks.forget(|k| k.0 == id);
        self.inner.packs.remove(id)?;
        if moved.is_empty() {
            r.packs_removed += 1;
        } else {
            r.packs_rewritten += 1;
        }
        Ok(written)
    }
}
