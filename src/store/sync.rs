//! Reading the bucket's commits into this index (`--store s3://`): other
//! daemons' segments, or every segment when the data directory starts
//! empty. Each blob record a segment puts is applied through the same
//! `put_content`/`move_refs` as a local push, with the content object it
//! names; chunk locations point at the bucket's pieces through foreign pack
//! ids (`remote::FOREIGN_BASE`). A segment is marked applied once all its
//! records are; one that names a content object not readable yet is tried
//! again at the next round. Applying twice changes nothing (a put of a held
//! blob only refreshes its record; a delete of an absent one does nothing).
//!
//! Each round also reads the collection's marks (`bucket_gc.rs`), and a
//! read whose piece a collection deleted finds the chunk again through the
//! blob's content object (`Store::relocate`).

use super::commit::{write_synced, Bases};
use super::index::{self, cf, BlobMeta, Counters, CF_BLOBS, CF_META, CF_RECIPES};
use super::ingest::{Committing, NewChunks, Recipes, Seen};
use super::pack::{ChunkLoc, Hash};
use super::publish::{key, CONTENT, ID, NEXT_ID, OBJ, OP, SEG};
use super::recipe::{decode_page, Recipe, Segment as PageSegment};
use super::remote::format::{
    content_dir, segment_name, segment_time, ContentObject, ObjLoc, RecipeParts, Record, Segment,
};
use super::remote::FOREIGN_BASE;
use super::Store;
use crate::codec::plan::Plan;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::split::Layout;
use rocksdb::WriteBatch;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Segments written up to this long before the newest applied one are
/// listed again at each round: a listing may show a segment late.
const RELIST_MS: u64 = 10 * 60 * 1000;
/// After a failed look, misses answer from the index alone this long.
const FAILED_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct SyncState {
    /// The newest segment time seen (ms).
    high: u64,
    /// When the last round began listing.
    round_began: Option<Instant>,
    /// A miss does not wait on a bucket that just failed.
    last_failure: Option<(Instant, String)>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    pub listed: usize,
    pub applied: usize,
    /// Segments that could not be applied yet (retried next round).
    pub pending: usize,
}

fn recipe_of(p: RecipeParts) -> Recipe {
    Recipe {
        size: p.size,
        pages: p.pages,
        page_starts: p.page_starts,
        chunk_refs: p.chunk_refs,
        literal_bytes: p.literal_bytes,
    }
}

impl Store {
    /// How often the server looks for other daemons' segments (None: no bucket).
    pub fn sync_interval(&self) -> Option<Duration> {
        self.remote().map(|r| r.cfg.sync_interval)
    }

    /// Applies the bucket's segments this index has not applied yet, oldest
    /// first. `full` lists them all (at open); otherwise from a little before
    /// the newest seen.
    pub fn sync_from_bucket(&self, full: bool) -> Result<SyncReport> {
        let Some(r) = self.remote() else {
            return Ok(SyncReport::default());
        };
        let mut st = self.inner.sync.lock();
        st.round_began = Some(Instant::now());
        let offset =
            (!full && st.high > RELIST_MS).then(|| segment_name(st.high - RELIST_MS, &[0; 8], 0));
        let mut rep = SyncReport::default();
        let db = self.db();
        let mut oldest_pending = u64::MAX;
        // A segment gone when read was merged by a compaction into one
        // written before it was deleted: a second listing finds that one.
        let mut passes = 0;
        let mut vanished = true;
        while vanished && passes < 4 {
            vanished = false;
            passes += 1;
            let listed = r.list("segments/", offset.as_deref())?;
            rep.listed = listed.len();
            for l in listed {
                let t = segment_time(&l.name).unwrap_or(0);
                let seg_key = key(SEG, l.name.as_bytes());
                if db.get_pinned_cf(cf(db, CF_META), &seg_key)?.is_some() {
                    st.high = st.high.max(t);
                    continue;
                }
                match self.apply_segment(&l.name) {
                    Ok(Some(true)) => {
                        let mut wo = rocksdb::WriteOptions::default();
                        wo.set_sync(true);
                        db.put_cf_opt(cf(db, CF_META), &seg_key, [], &wo)?;
                        st.high = st.high.max(t);
                        rep.applied += 1;
                    }
                    Ok(Some(false)) => {
                        rep.pending += 1;
                        oldest_pending = oldest_pending.min(t);
                    }
                    Ok(None) => vanished = true,
                    Err(e @ Error::Unavailable(_)) => {
                        // The marks still get read: otherwise commits would read
                        // them under the commit lock (check_deadline).
                        if let Err(m) = self.read_marks() {
                            tracing::warn!(error = %m, "reading the collection's marks failed");
                        }
                        return Err(e);
                    }
                    Err(e) => {
                        tracing::error!(segment = %l.name, error = %e, "a segment of the bucket cannot be applied; retried next round");
                        rep.pending += 1;
                        oldest_pending = oldest_pending.min(t);
                    }
                }
            }
        }
        if vanished {
            // Never "applied" with records missing (a rebuild at open).
            return Err(Error::Unavailable(
                "the bucket's segments kept being merged while read; try again".into(),
            ));
        }
        // The next round lists again from the oldest segment not applied.
        st.high = st.high.min(oldest_pending.saturating_add(RELIST_MS));
        self.read_marks()?;
        if rep.applied > 0 || rep.pending > 0 {
            tracing::info!(?rep, "applied the bucket's segments");
        }
        Ok(rep)
    }

    /// After a lookup missed: a round that began after the miss (waiting
    /// for one running now, whose listing may predate the blob). True when
    /// a round may have applied something (look again); Unavailable when
    /// the bucket could not be read (now or in the last 30 s).
    pub fn sync_on_miss(&self) -> Result<bool> {
        if self.remote().is_none() {
            return Ok(false);
        }
        let asked = Instant::now();
        if let Some((t, e)) = &self.inner.sync.lock().last_failure {
            if t.elapsed() < FAILED_WAIT {
                return Err(Error::Unavailable(e.clone()));
            }
        }
        // Misses that arrive together share a round: the lock queues them,
        // and a round begun after a miss answers it.
        let round = || -> Result<bool> {
            if self
                .inner
                .sync
                .lock()
                .round_began
                .is_some_and(|t| t > asked)
            {
                return Ok(true);
            }
            Ok(self.sync_from_bucket(false)?.applied > 0)
        };
        // On the server's async worker the round must not stall the other
        // requests: tokio moves them to another thread meanwhile. A
        // current-thread runtime cannot do that: no round from there.
        let r = match tokio::runtime::Handle::try_current() {
            Err(_) => round(),
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread => {
                return Ok(false)
            }
            Ok(_) => tokio::task::block_in_place(round),
        };
        r.inspect_err(|e| {
            tracing::warn!(error = %e, "looking in the bucket after a miss failed");
            self.inner.sync.lock().last_failure = Some((Instant::now(), e.to_string()));
        })
    }

    /// Applies the records of segment `name` this index has not: true when
    /// all are. None when the segment is gone: a compaction merged it into
    /// one written before it deleted it (`compact.rs`).
    fn apply_segment(&self, name: &str) -> Result<Option<bool>> {
        let r = self.remote().expect("called in bucket mode");
        let seg = match r.get(name) {
            Ok(b) => Segment::decode(&b)?,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut all = true;
        let times: Vec<u64> = (0..seg.records.len()).map(|i| seg.time_of(i)).collect();
        for (rec, time_ms) in seg.records.into_iter().zip(times) {
            let (Record::Put { ns, digest, .. } | Record::Delete { ns, digest }) = &rec;
            super::validate_namespace(ns)?;
            let op = key(OP, &index::blob_key(ns, digest));
            // Last writer wins: a record older than what this index applied
            // (or wrote) for the blob is superseded.
            let db = self.db();
            let put = matches!(rec, Record::Put { .. });
            if let Some(v) = db.get_pinned_cf(cf(db, CF_META), &op)? {
                if super::publish::superseded(&v, time_ms, put) {
                    continue;
                }
            }
            let done = match &rec {
                Record::Put {
                    ns,
                    digest,
                    meta,
                    content,
                } => self.apply_put(ns, digest, meta, content)?,
                Record::Delete { ns, digest } => match self.delete_local(ns, digest) {
                    Ok(_) | Err(Error::NotFound(_)) => true,
                    Err(e) => return Err(e),
                },
            };
            if done {
                let mut wo = rocksdb::WriteOptions::default();
                wo.set_sync(true);
                db.put_cf_opt(
                    cf(db, CF_META),
                    &op,
                    super::publish::op_value(time_ms, put),
                    &wo,
                )?;
            }
            all &= done;
        }
        Ok(Some(all))
    }

    /// Applies one blob record put. False when its content object cannot be
    /// read yet.
    fn apply_put(&self, ns: &str, digest: &Digest, meta: &[u8], content: &str) -> Result<bool> {
        let meta = BlobMeta::decode(meta)?;
        if self.hold_stored(ns, digest, &meta)? {
            return Ok(true);
        }
        // A named object missing was written before the segment, so
        // deleted since: a spare (`spares.rs`), or the digest was collected
        // while no record kept it. Any object of the digest serves.
        let named = match content.is_empty() {
            true => None,
            false => self
                .read_content_object(content)?
                .map(|o| (content.to_string(), o)),
        };
        let (name, obj) = match named {
            Some(n) => n,
            None => match self.oldest_content_object(digest)? {
                Some(n) => n,
                None => return Ok(false),
            },
        };
        if obj.digest != *digest {
            return Err(Error::DataLoss(format!(
                "content object {name} describes {} where a segment said {digest}",
                obj.digest
            )));
        }
        self.install(ns, &meta, obj, &name)?;
        Ok(true)
    }

    /// The oldest readable content object of `digest` (by the time in its
    /// name: writer-time-random; the one a collection keeps of copies,
    /// `spares.rs`), for a record that names none (not written by strata)
    /// or one deleted since.
    fn oldest_content_object(&self, digest: &Digest) -> Result<Option<(String, ContentObject)>> {
        for name in self.content_objects_oldest_first(digest)? {
            if let Some(o) = self.read_content_object(&name)? {
                return Ok(Some((name, o)));
            }
        }
        Ok(None)
    }

    /// The names of `digest`'s content objects, oldest first by the time
    /// in their names (writer-time-random; names without one last): the
    /// order a collection keeps copies in (`spares.rs`).
    pub(super) fn content_objects_oldest_first(&self, digest: &Digest) -> Result<Vec<String>> {
        let r = self.remote().expect("called in bucket mode");
        let mut v: Vec<String> = r
            .list(&content_dir(digest), None)?
            .into_iter()
            .map(|l| l.name)
            .collect();
        v.sort_by_cached_key(|n| {
            let t = super::bucket_gc::written_ms(n);
            (t.is_none(), t, n.clone())
        });
        Ok(v)
    }

    /// Content object `name`, read and decoded (None: not in the bucket).
    pub(super) fn read_content_object(&self, name: &str) -> Result<Option<ContentObject>> {
        let r = self.remote().expect("called in bucket mode");
        match r.get(name) {
            Ok(b) => Ok(Some(ContentObject::decode(&b)?)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A put of a blob this index holds, or whose content it stores: its
    /// record is written (a newer one kept). False when the content is not
    /// stored.
    fn hold_stored(&self, ns: &str, digest: &Digest, meta: &BlobMeta) -> Result<bool> {
        let db = self.db();
        let mut counters = self.inner.counters.lock();
        let bkey = index::blob_key(ns, digest);
        if let Some(v) = db.get_cf(cf(db, CF_BLOBS), &bkey)? {
            if BlobMeta::decode(&v)?.updated_at <= meta.updated_at {
                let mut b = WriteBatch::default();
                b.put_cf(cf(db, CF_BLOBS), &bkey, meta.encode());
                write_synced(db, b)?;
            }
            return Ok(true);
        }
        let Some(mut content) = self.content(digest)? else {
            return Ok(false);
        };
        content.holders += 1;
        let mut c = *counters;
        c.blobs += 1;
        c.logical_bytes += content.size;
        c.logical_stream_bytes += content.stream_bytes();
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(db, CF_BLOBS), &bkey, meta.encode());
        batch.put_cf(cf(db, CF_RECIPES), digest.0, content.encode());
        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
        write_synced(db, batch)?;
        *counters = c;
        Ok(true)
    }

    /// Stores a content object's content and the blob record holding it.
    fn install(&self, ns: &str, meta: &BlobMeta, obj: ContentObject, name: &str) -> Result<()> {
        let digest = obj.digest;
        let mut seen: HashMap<Hash, Seen> = HashMap::new();
        for page in obj.recipe.pages.iter().chain(&obj.raw.pages) {
            for s in decode_page(page)? {
                if let PageSegment::Chunk { hash, .. } = s {
                    seen.entry(hash).or_insert_with(|| Seen::counted(0)).refs += 1;
                }
            }
        }
        let plan = obj.plan.as_deref().map(Plan::decode).transpose()?;
        let layout = match obj.layout {
            0 => Layout::Raw,
            1 => Layout::Tar,
            2 => Layout::TarThenRaw,
            l => {
                return Err(Error::DataLoss(format!(
                    "content object {name} has layout {l}"
                )))
            }
        };
        let db = self.db();
        let mut counters = self.inner.counters.lock();
        // A push may have stored it meanwhile.
        if self.content(&digest)?.is_some() {
            drop(counters);
            self.hold_stored(ns, &digest, meta)?;
            return Ok(());
        }
        let mut c: Counters = *counters;
        let mut batch = WriteBatch::default();
        let ids = self.foreign_ids(&mut batch, &obj.objects)?;
        let mut locs: Vec<(Hash, ChunkLoc)> = Vec::with_capacity(obj.locs.len());
        for (h, i, l) in &obj.locs {
            locs.push((
                *h,
                ChunkLoc {
                    pack: ids[*i as usize],
                    block_offset: l.block_offset,
                    block_len: l.block_len,
                    offset_in_block: l.offset_in_block,
                    len: l.len,
                },
            ));
        }
        // Every chunk the recipes name must be locatable.
        let located: std::collections::HashSet<&Hash> = locs.iter().map(|(h, _)| h).collect();
        for h in seen.keys() {
            if !located.contains(h) && super::chunk_entry::location(db, h)?.is_none() {
                return Err(Error::DataLoss(format!(
                    "content object {name} names chunk {} but not where it is",
                    hex::encode(h)
                )));
            }
        }
        let new = Committing {
            digest,
            size: obj.size,
            layout,
            recipes: Recipes {
                recipe: recipe_of(obj.recipe),
                raw: recipe_of(obj.raw),
                plan,
                prefix: obj.prefix,
            },
            seen: &seen,
            chunks: NewChunks {
                locs: &locs,
                pack: None,
                piece: None,
            },
            uploaded: None,
        };
        let mut bases = Bases::default();
        let put = self.put_content(&mut batch, &mut c, &mut bases, &new, 1)?;
        self.move_refs(&mut batch, &mut c, &put.refs)?;
        let gone = bases.write(db, &mut batch);
        c.contents += 1;
        c.blobs += 1;
        c.logical_bytes += obj.size;
        c.logical_stream_bytes += put.content.stream_bytes();
        batch.put_cf(
            cf(db, CF_BLOBS),
            index::blob_key(ns, &digest),
            meta.encode(),
        );
        batch.put_cf(cf(db, CF_META), key(CONTENT, &digest.0), name.as_bytes());
        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
        write_synced(db, batch)?;
        *counters = c;
        drop(counters);
        for d in gone {
            self.forget_recipe(&d);
        }
        Ok(())
    }

    /// The local pack id of each object, assigning new ones in `batch`
    /// (under the commit lock).
    pub(super) fn foreign_ids(
        &self,
        batch: &mut WriteBatch,
        objects: &[String],
    ) -> Result<Vec<u32>> {
        let db = self.db();
        let meta = cf(db, CF_META);
        let mut next = match db.get_cf(meta, NEXT_ID)? {
            Some(v) if v.len() == 4 => u32::from_be_bytes(v[..].try_into().unwrap()),
            _ => FOREIGN_BASE,
        };
        let start = next;
        let mut ids = Vec::with_capacity(objects.len());
        let mut fresh: HashMap<&str, u32> = HashMap::new();
        for o in objects {
            if let Some(&id) = fresh.get(o.as_str()) {
                ids.push(id);
                continue;
            }
            match db.get_cf(meta, key(OBJ, o.as_bytes()))? {
                Some(v) if v.len() == 4 => ids.push(u32::from_be_bytes(v[..].try_into().unwrap())),
                _ => {
                    let id = next;
                    next = next.checked_add(1).ok_or_else(|| {
                        Error::ResourceExhausted("foreign pack ids are exhausted".into())
                    })?;
                    batch.put_cf(meta, key(OBJ, o.as_bytes()), id.to_be_bytes());
                    batch.put_cf(meta, key(ID, &id.to_be_bytes()), o.as_bytes());
                    fresh.insert(o, id);
                    ids.push(id);
                }
            }
        }
        if next != start {
            batch.put_cf(meta, NEXT_ID, next.to_be_bytes());
        }
        Ok(ids)
    }
}

impl Store {
    /// A chunk of `digest` whose piece could not be read (a collection
    /// deleted it: this index kept its own first copy of a chunk another
    /// daemon stored too, in a piece of a blob deleted since): where the
    /// content object this index follows for `digest`, or another object of
    /// the digest (or of its base: a variant is read through its base's
    /// pages), says it is, once read there and found to hash right. The
    /// index is repaired when it still points at `old`, for every chunk of
    /// the block read back (each checked by its decode) that this index
    /// still has in the same piece. None when no object has it readable.
    pub(super) fn relocate(
        &self,
        hash: &Hash,
        len: u32,
        digest: &Digest,
        old: &ChunkLoc,
    ) -> Result<Option<ChunkLoc>> {
        let old_name = self.object_of(old).ok().map(|o| o.0);
        let mut found = Elsewhere::new(*digest);
        let moves_known = self.moves_applied();
        let mut hit = self.find_elsewhere(&mut found, hash, len, old_name.as_deref(), false)?;
        // A compaction may have moved the pieces that hold it since this
        // index last read the moves (here, or in a sync round meanwhile).
        if hit.is_none() && (self.read_moves()? > 0 || self.moves_applied() != moves_known) {
            found = Elsewhere::new(*digest);
            hit = self.find_elsewhere(&mut found, hash, len, old_name.as_deref(), false)?;
        }
        let Some((obj, piece, place)) = hit else {
            return Ok(None);
        };
        let obj = &found.objects.as_ref().expect("loaded")[obj].1;
        let verified = found
            .blocks
            .get(&(piece.clone(), place.block_offset))
            .and_then(|b| b.as_ref());
        let db = self.db();
        let _counters = self.inner.counters.lock();
        let mut batch = WriteBatch::default();
        let id = self.foreign_ids(&mut batch, std::slice::from_ref(&piece))?[0];
        let at = |p: &ObjLoc| ChunkLoc {
            pack: id,
            block_offset: p.block_offset,
            block_len: p.block_len,
            offset_in_block: p.offset_in_block,
            len: p.len,
        };
        let loc = at(&place);
        // Moved meanwhile (a push stored it again): keep that.
        if super::chunk_entry::location(db, hash)? == Some(*old) {
            super::chunk_entry::merge_loc(db, &mut batch, hash, &loc);
        }
        // The object's other chunks in the block just read, still placed in
        // the gone piece here, move with it (one batch, not one read each).
        let mut moved = 1usize;
        if let (Some(old_name), Some(verified)) = (&old_name, verified) {
            for (h, i, p) in obj.locs.iter().filter(|(h, _, _)| h != hash) {
                let Some(named) = obj.objects.get(*i as usize) else {
                    continue;
                };
                let (named, p, _) = &self.moved(named.clone(), *p);
                if *named != piece
                    || p.block_offset != place.block_offset
                    || verified.get(&p.offset_in_block) != Some(&(*h, p.len))
                {
                    continue;
                }
                let Some(cur) = super::chunk_entry::location(db, h)? else {
                    continue;
                };
                if cur.len == p.len
                    && self.object_of(&cur).ok().map(|o| o.0).as_ref() == Some(old_name)
                {
                    super::chunk_entry::merge_loc(db, &mut batch, h, &at(p));
                    moved += 1;
                }
            }
        }
        write_synced(db, batch)?;
        tracing::info!(
            chunk = %hex::encode(hash),
            chunks = moved,
            from = %old_name.unwrap_or_default(),
            to = %piece,
            "a chunk's piece is gone from the bucket; read from the blob's content object"
        );
        Ok(Some(loc))
    }

    /// Where a content object other than `old_name`'s piece places chunk
    /// `hash` of the digest `found` is for (see `relocate`), building a
    /// content object under the commit lock: the index is not repaired
    /// (that takes the lock). `found` keeps what was fetched, so a build
    /// costs one listing and GET per object and block, not per chunk.
    pub(super) fn relocated_place(
        &self,
        found: &mut Elsewhere,
        hash: &Hash,
        old_name: &str,
    ) -> Result<Option<(String, ObjLoc)>> {
        let Some(loc) = super::chunk_entry::location(self.db(), hash)? else {
            return Ok(None);
        };
        Ok(self
            .find_elsewhere(found, hash, loc.len, Some(old_name), true)?
            .map(|(_, piece, place)| (piece, place)))
    }

    /// The first content object of the digest (the followed one, then the
    /// others newest first by the time in their names, then those of its
    /// base) that places `hash` (`len` bytes) in a piece other than
    /// `old_name`, not gone (nor marked, with `unmarked`), where the chunk
    /// reads back hashing right: its index in `found.objects`, the piece
    /// and the place.
    fn find_elsewhere(
        &self,
        found: &mut Elsewhere,
        hash: &Hash,
        len: u32,
        old_name: Option<&str>,
        unmarked: bool,
    ) -> Result<Option<(usize, String, ObjLoc)>> {
        if self.remote().is_none() {
            return Ok(None);
        }
        if found.objects.is_none() {
            found.objects = Some(self.objects_of_digest(&found.digest)?);
        }
        let n = found.objects.as_ref().map_or(0, |o| o.len());
        for k in 0..n {
            let (name, obj) = &found.objects.as_ref().expect("loaded")[k];
            let Some((_, i, place)) = obj.locs.iter().find(|(h, _, _)| h == hash) else {
                continue;
            };
            // Where the piece is now, if a compaction moved it.
            let (piece, place, _) = self.moved(obj.objects[*i as usize].clone(), *place);
            let name = name.clone();
            if place.len != len
                || old_name == Some(piece.as_str())
                || (unmarked && self.is_condemned_name(&piece))
                || self.is_gone(&piece)
            {
                continue;
            }
            if !self.holds_chunk(found, &piece, &place, hash)? {
                tracing::warn!(
                    object = %name,
                    piece = %piece,
                    chunk = %hex::encode(hash),
                    "a content object places a chunk where it is not"
                );
                continue;
            }
            return Ok(Some((k, piece, place)));
        }
        Ok(None)
    }

    /// The content objects of `digest` and of its base, in the order
    /// `find_elsewhere` tries them.
    fn objects_of_digest(&self, digest: &Digest) -> Result<Vec<(String, ContentObject)>> {
        let r = self.remote().expect("bucket mode");
        let mut names = Vec::new();
        let followed = self.content_name(digest)?;
        if !followed.is_empty() {
            names.push(followed);
        }
        let mut dirs = vec![*digest];
        if let Some(base) = self.content(digest)?.and_then(|c| c.base()) {
            dirs.push(base);
        }
        for d in dirs {
            let mut listed: Vec<String> = r
                .list(&content_dir(&d), None)?
                .into_iter()
                .map(|l| l.name)
                .collect();
            listed.sort_by_key(|n| std::cmp::Reverse(super::bucket_gc::written_ms(n)));
            for n in listed {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let mut out = Vec::new();
        for name in names {
            if let Some(o) = self.read_content_object(&name)? {
                out.push((name, o));
            }
        }
        Ok(out)
    }

    /// Whether the block at `place` in `piece` decodes and holds the chunk
    /// hashing to `hash` at its offset (false when the piece is missing).
    /// Each block is read once per `found`.
    fn holds_chunk(
        &self,
        found: &mut Elsewhere,
        piece: &str,
        place: &ObjLoc,
        hash: &Hash,
    ) -> Result<bool> {
        let key = (piece.to_string(), place.block_offset);
        if !found.blocks.contains_key(&key) {
            let r = self.remote().expect("bucket mode");
            let start = place.block_offset;
            let chunks = match r.get_range(piece, start..start + place.block_len as u64) {
                Ok(rec) => {
                    let what = || format!("block at {start} of {piece}");
                    // decode_block checks every chunk's BLAKE3.
                    super::pack::decode_block(&rec, &what)
                        .ok()
                        .map(|b| b.chunks_by_offset())
                }
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            found.blocks.insert(key.clone(), chunks);
        }
        Ok(found.blocks[&key]
            .as_ref()
            .and_then(|m| m.get(&place.offset_in_block))
            == Some(&(*hash, place.len)))
    }
}

/// What the content objects of one digest (and its base) say about where its
/// chunks are, fetched once for a whole content-object build or repair: a
/// build runs under the commit lock and must not cost requests per chunk.
pub(super) struct Elsewhere {
    digest: Digest,
    objects: Option<Vec<(String, ContentObject)>>,
    /// Blocks read back: (piece, block offset) → its chunks by offset in
    /// the block (`decode_block` checked each one's hash); None when the
    /// block did not read or decode.
    blocks: HashMap<(String, u64), Option<BlockChunks>>,
}

/// A decoded block's chunks: offset in the block → hash and length.
type BlockChunks = HashMap<u32, (Hash, u32)>;

impl Elsewhere {
    pub(super) fn new(digest: Digest) -> Self {
        Elsewhere {
            digest,
            objects: None,
            blocks: HashMap::new(),
        }
    }
}
