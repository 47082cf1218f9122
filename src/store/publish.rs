//! Writing a commit to the bucket (`--store s3://`), before the local index
//! batch that acknowledges it. The order is the durability rule:
//!
//! 1. the pack piece: the block records the ingest appended, with a footer
//!    (`upload_piece`, before the commit lock);
//! 2. the content object: recipes, plan and every chunk's place (a new
//!    content, or a conversion's);
//! 3. the segment: the blob records the commit changes. The commit point:
//!    a daemon that lists it can serve the blob.
//!
//! Any failure fails the commit before the local batch, so nothing is
//! acknowledged that is not in the bucket; what was uploaded before the
//! failure names nothing a segment names, and is garbage.
//!
//! A content object may name an object a collection marked only if its
//! segment is written within half a grace period of the mark
//! (`Store::naming_deadline`, checked when the object is made and again
//! right before the segment), and never one found gone.

use super::index::{cf, CF_META};
use super::ingest::{Committing, WriterDone};
use super::pack::{ChunkLoc, Hash};
use super::recipe::Recipe;
use super::remote::format::{
    content_dir, piece_footer, segment_name, ContentObject, ObjLoc, RecipeParts, Record, Segment,
};
use super::remote::{random_u32, unique_suffix, Remote, FOREIGN_BASE};
use super::{now_ms, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::split::Layout;
use rocksdb::WriteBatch;
use std::collections::{HashMap, HashSet};

/// `meta` keys of the bucket mode (all under the commit lock).
/// Local pack id u32 BE, piece start u64 BE → the piece's object name.
pub(super) const PIECE: &[u8] = b"remote-piece\0";
/// Object name → foreign pack id u32 BE (`remote::FOREIGN_BASE` and up).
pub(super) const OBJ: &[u8] = b"remote-obj\0";
/// Foreign pack id u32 BE → object name.
pub(super) const ID: &[u8] = b"remote-id\0";
/// Segment name → empty: applied to this index (or written by it).
pub(super) const SEG: &[u8] = b"remote-seg\0";
/// sha256 → the name of the content object this index follows for it.
pub(super) const CONTENT: &[u8] = b"remote-content\0";
/// Blob key (namespace \0 sha256) → time (ms, u64 BE) of the newest
/// segment record applied to it, then 1 for a put, 2 for a delete (none in
/// keys written before): an older record, listed late, changes nothing
/// (last writer wins, by record time; at one time a put wins, as in the
/// collection's liveness, whatever order the records are read in).
pub(super) const OP: &[u8] = b"remote-op\0";

/// An `OP` value: the record's time and whether it is a put.
pub(super) fn op_value(time_ms: u64, put: bool) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(&time_ms.to_be_bytes());
    v[8] = if put { 1 } else { 2 };
    v
}

/// Whether a record (`time_ms`, `put`) is superseded by the `OP` value
/// `known` (what this index applied or wrote for the blob).
pub(super) fn superseded(known: &[u8], time_ms: u64, put: bool) -> bool {
    let Some(t) = known.get(..8) else {
        return false;
    };
    let t = u64::from_be_bytes(t.try_into().unwrap());
    // A put tied with a delete applied before it wins the tie.
    t > time_ms || (t == time_ms && !(put && known.get(8) == Some(&2)))
}
/// The next foreign pack id.
pub(super) const NEXT_ID: &[u8] = b"remote-next";
/// This data directory's writer id (8 random bytes).
pub(super) const WRITER: &[u8] = b"remote-writer";
/// The `--store` URL this index belongs to.
pub(super) const URL: &[u8] = b"remote-url";
/// Object name → empty: a piece (or followed content object) this index
/// referred to that a collection deleted (`bucket_gc.rs`): never named
/// again, its chunks read through content objects.
pub(super) const GONE: &[u8] = b"remote-gone\0";

pub(super) fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(rest);
    k
}

fn piece_key(id: u32, start: u64) -> Vec<u8> {
    let mut k = PIECE.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&start.to_be_bytes());
    k
}

pub(super) fn parts(r: &Recipe) -> RecipeParts {
    RecipeParts {
        size: r.size,
        chunk_refs: r.chunk_refs,
        literal_bytes: r.literal_bytes,
        page_starts: r.page_starts.clone(),
        pages: r.pages.clone(),
    }
}

pub(super) fn layout_byte(l: Layout) -> u8 {
    match l {
        Layout::Raw => 0,
        Layout::Tar => 1,
        Layout::TarThenRaw => 2,
    }
}

impl Store {
    pub(super) fn remote(&self) -> Option<&Remote> {
        self.inner.remote.as_ref()
    }

    /// The bucket traffic's counters (None without a bucket).
    pub fn remote_metrics(&self) -> Option<&super::remote::RemoteMetrics> {
        self.remote().map(|r| &r.metrics)
    }

    pub(super) fn writer_id(&self) -> [u8; 8] {
        self.inner.writer
    }

    /// Uploads the block records an ingest appended to its local pack, with
    /// their footer, as one object. None without a bucket or new bytes.
    pub(super) fn upload_piece(&self, done: &WriterDone) -> Result<Option<String>> {
        let Some(r) = self.remote() else {
            return Ok(None);
        };
        if done.writer.len == done.start_len {
            return Ok(None);
        }
        let locs: Vec<(Hash, ObjLoc)> = done
            .locs
            .iter()
            .map(|(h, l)| (*h, obj_loc(l, done.start_len)))
            .collect();
        let name = format!("packs/{}.pack", unique_suffix(&self.writer_id()));
        let file = self.inner.packs.file(done.writer.id)?;
        r.put_file_range(
            &name,
            file,
            done.start_len,
            done.writer.len,
            piece_footer(&locs),
        )?;
        Ok(Some(name))
    }

    /// Where a chunk's block is in the bucket: its object and place (in
    /// the piece a compaction moved it to, if one did: `moves.rs`).
    pub(super) fn object_of(&self, loc: &ChunkLoc) -> Result<(String, ObjLoc)> {
        self.located(loc).map(|(name, place, _)| (name, place))
    }

    /// `object_of`, and when the block's piece was moved, where that piece
    /// ends in the object now (what follows is other pieces').
    pub(super) fn located(&self, loc: &ChunkLoc) -> Result<(String, ObjLoc, Option<u64>)> {
        let db = self.db();
        if loc.pack >= FOREIGN_BASE {
            let name = self.foreign_name(loc.pack)?;
            return Ok(self.moved(name, obj_loc(loc, 0)));
        }
        // The piece holding the block: the last one starting at or before it.
        let want = piece_key(loc.pack, loc.block_offset);
        let mut it = db.raw_iterator_cf(cf(db, CF_META));
        it.seek_for_prev(&want);
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.len() == want.len() && k[..PIECE.len() + 4] == want[..PIECE.len() + 4] {
                let start = u64::from_be_bytes(k[PIECE.len() + 4..].try_into().unwrap());
                let name = String::from_utf8_lossy(v).into_owned();
                return Ok(self.moved(name, obj_loc(loc, start)));
            }
        }
        it.status()?;
        Err(Error::DataLoss(format!(
            "pack {} offset {} is in no piece of the bucket",
            loc.pack, loc.block_offset
        )))
    }

    /// The object name of a foreign pack id.
    pub(super) fn foreign_name(&self, id: u32) -> Result<String> {
        if let Some(n) = self.inner.foreign.lock().get(&id) {
            return Ok(n.clone());
        }
        let db = self.db();
        let v = db
            .get_cf(cf(db, CF_META), key(ID, &id.to_be_bytes()))?
            .ok_or_else(|| Error::DataLoss(format!("pack {id} names no object of the bucket")))?;
        let name = String::from_utf8_lossy(&v).into_owned();
        self.inner.foreign.lock().insert(id, name.clone());
        Ok(name)
    }

    /// Where a chunk the index holds is in the bucket.
    fn indexed_place(&self, h: &Hash, of: &Digest) -> Result<(String, ObjLoc)> {
        let db = self.db();
        let loc = super::chunk_entry::location(db, h)?.ok_or_else(|| {
            Error::DataLoss(format!(
                "chunk {} of {of} is missing from the index",
                hex::encode(h)
            ))
        })?;
        self.object_of(&loc)
    }

    /// The content object of a commit that stores `new`: its recipes as the
    /// ingest made them (a variant's whole plain recipe too, so a reader
    /// needs no other object) and where each chunk is.
    fn content_object(&self, new: &Committing) -> Result<ContentObject> {
        let piece = new.chunks.piece;
        let start = new.chunks.pack.map_or(0, |p| p.1);
        let fresh: HashMap<&Hash, &ChunkLoc> =
            new.chunks.locs.iter().map(|(h, l)| (h, l)).collect();
        let mut places = Places::default();
        for h in new.seen.keys() {
            let (name, place) = match (fresh.get(h), piece) {
                (Some(l), Some(p)) => (p.to_string(), obj_loc(l, start)),
                _ => self.indexed_place(h, &new.digest)?,
            };
            places.add(*h, name, place);
        }
        let r = &new.recipes;
        Ok(ContentObject {
            digest: new.digest,
            size: new.size,
            layout: layout_byte(new.layout),
            recipe: parts(&r.recipe),
            raw: parts(&r.raw),
            plan: r.plan.as_ref().map(|p| p.encode()),
            prefix: r.prefix,
            objects: places.objects,
            locs: places.locs,
        })
    }

    /// Uploads the content object of `new` (None without a bucket).
    pub(super) fn upload_content(&self, new: &Committing) -> Result<Option<String>> {
        let Some(r) = self.remote() else {
            return Ok(None);
        };
        let obj = self.content_object(new)?;
        // A chunk reused from a piece being collected: fine only if the
        // segment follows soon enough (an ingest that began before the mark).
        self.naming_deadline(&obj.objects)?;
        let name = format!(
            "{}{}",
            content_dir(&new.digest),
            unique_suffix(&self.writer_id())
        );
        r.put(&name, obj.encode()?)?;
        self.remember_named(&name, &obj.objects);
        Ok(Some(name))
    }

    /// Puts in `batch` the content object of a content `new` stores
    /// (uploaded now unless it was before the commit lock), and the piece it
    /// came in. Returns the object's name.
    pub(super) fn publish_content(
        &self,
        batch: &mut WriteBatch,
        new: &Committing,
    ) -> Result<Option<String>> {
        if self.remote().is_none() {
            return Ok(None);
        }
        let db = self.db();
        let name = match &new.uploaded {
            Some(n) => n.clone(),
            None => self.upload_content(new)?.expect("a bucket"),
        };
        if let (Some(p), Some((id, start, _))) = (new.chunks.piece, new.chunks.pack) {
            batch.put_cf(cf(db, CF_META), piece_key(id, start), p.as_bytes());
        }
        batch.put_cf(
            cf(db, CF_META),
            key(CONTENT, &new.digest.0),
            name.as_bytes(),
        );
        Ok(Some(name))
    }

    /// A push of a content already stored that stored chunks anew (their
    /// indexed copies lie in marked or gone pieces: a collection is taking
    /// them, e.g. a spare's, `spares.rs`): their places in the new piece,
    /// for the content object the commit builds from the index (else it
    /// would name the marked piece, and every retry would be refused
    /// alike). Written by `keep_fresh` only if that object uses them.
    pub(super) fn fresh_places(&self, new: &Committing) -> Result<HashMap<Hash, (String, ObjLoc)>> {
        let mut out = HashMap::new();
        let (Some(p), Some((_, start, _))) = (new.chunks.piece, new.chunks.pack) else {
            return Ok(out);
        };
        if new.chunks.locs.is_empty() {
            return Ok(out);
        }
        self.fresh_marks()?;
        if !self.any_condemned() {
            return Ok(out);
        }
        let db = self.db();
        for (h, loc) in new.chunks.locs {
            match super::chunk_entry::location(db, h)? {
                Some(cur) if self.condemned(&cur) => {
                    out.insert(*h, (p.to_string(), obj_loc(loc, start)));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Puts in `batch` what keeps the fresh places a content object now
    /// names (`fresh_places`): the chunks' new locations, the piece, and
    /// the pack's committed length (as `put_content` does for new content),
    /// so the ingest's bytes stay.
    pub(super) fn keep_fresh(
        &self,
        batch: &mut WriteBatch,
        c: &mut super::index::Counters,
        new: &Committing,
        fresh: &HashMap<Hash, (String, ObjLoc)>,
    ) {
        let (Some(p), Some((id, start, end))) = (new.chunks.piece, new.chunks.pack) else {
            return;
        };
        let db = self.db();
        for (h, loc) in new
            .chunks
            .locs
            .iter()
            .filter(|(h, _)| fresh.contains_key(h))
        {
            super::chunk_entry::merge_loc(db, batch, h, loc);
        }
        batch.put_cf(cf(db, CF_META), piece_key(id, start), p.as_bytes());
        batch.put_cf(
            cf(db, super::index::CF_PACKS),
            id.to_be_bytes(),
            end.to_le_bytes(),
        );
        c.pack_bytes += end - start;
    }

    /// Drops from the data directory the full packs whose every byte is in
    /// the bucket (each commit that appends names its piece, from offset 0:
    /// a first piece means the pack is covered). Reads then go to the bucket.
    pub(super) fn evict_full_packs(&self) {
        if self.remote().is_none() {
            return;
        }
        let ids = match self.inner.packs.full_packs() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing full packs failed");
                return;
            }
        };
        let db = self.db();
        for id in ids {
            match db.get_pinned_cf(cf(db, CF_META), piece_key(id, 0)) {
                Ok(Some(_)) => {}
                _ => continue,
            }
            match self.inner.packs.remove(id) {
                Ok(()) => tracing::info!(
                    pack = id,
                    "full pack dropped from the data directory: the bucket holds it"
                ),
                Err(e) => tracing::warn!(pack = id, error = %e, "could not drop a full pack"),
            }
        }
    }

    /// The content object this index follows for `d` (empty if none).
    pub(super) fn content_name(&self, d: &Digest) -> Result<String> {
        let db = self.db();
        Ok(db
            .get_cf(cf(db, CF_META), key(CONTENT, &d.0))?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default())
    }

    /// A segment putting one blob record whose content is stored.
    pub(super) fn publish_put(
        &self,
        batch: &mut WriteBatch,
        ns: &str,
        digest: &Digest,
        meta: &super::index::BlobMeta,
    ) -> Result<()> {
        if self.remote().is_none() {
            return Ok(());
        }
        let (content, _) = self.ensure_content_object(batch, digest, &HashMap::new())?;
        self.publish_records(
            batch,
            vec![Record::Put {
                ns: ns.to_string(),
                digest: *digest,
                meta: meta.encode(),
                content,
            }],
        )
    }

    /// Writes a segment of blob record changes: the commit point. Puts its
    /// name in `batch`, so this index never applies it again.
    pub(super) fn publish_records(
        &self,
        batch: &mut WriteBatch,
        records: Vec<Record>,
    ) -> Result<()> {
        let Some(r) = self.remote() else {
            return Ok(());
        };
        let contents: Vec<&str> = records
            .iter()
            .filter_map(|rec| match rec {
                Record::Put { content, .. } => Some(content.as_str()),
                Record::Delete { .. } => None,
            })
            .collect();
        self.check_deadline(&contents)?;
        let db = self.db();
        // After what this index applied or wrote for each blob, whatever
        // this clock says: a daemon whose clock lags must not write a Put
        // older than a Delete it applied (the collection would count the
        // blob deleted).
        let mut time_ms = now_ms();
        for rec in &records {
            let (Record::Put { ns, digest, .. } | Record::Delete { ns, digest }) = rec;
            let k = key(OP, &super::index::blob_key(ns, digest));
            if let Some(v) = db.get_pinned_cf(cf(db, CF_META), k)? {
                if let Some(b) = v.get(..8) {
                    time_ms = time_ms.max(u64::from_be_bytes(b.try_into().unwrap()) + 1);
                }
            }
        }
        let name = segment_name(time_ms, &self.writer_id(), random_u32());
        let seg = Segment {
            time_ms,
            writer: self.writer_id(),
            records,
            times: Vec::new(),
        };
        r.put(&name, seg.encode())?;
        batch.put_cf(cf(db, CF_META), key(SEG, name.as_bytes()), []);
        for rec in &seg.records {
            let (Record::Put { ns, digest, .. } | Record::Delete { ns, digest }) = rec;
            let k = key(OP, &super::index::blob_key(ns, digest));
            let put = matches!(rec, Record::Put { .. });
            batch.put_cf(cf(db, CF_META), k, op_value(time_ms, put));
        }
        Ok(())
    }

    /// The content object this index follows for `d`; when it has none (a
    /// base made for a compressed blob, or a content taken from a variant),
    /// or it or a piece it names is being collected too late to name,
    /// another of the digest placing the same chunks, or else one written
    /// from the index (chunks in `fresh` placed there: `fresh_places`) and
    /// named in `batch`. Also returns whether that object uses `fresh`.
    pub(super) fn ensure_content_object(
        &self,
        batch: &mut WriteBatch,
        d: &Digest,
        fresh: &HashMap<Hash, (String, ObjLoc)>,
    ) -> Result<(String, bool)> {
        let name = self.content_name(d)?;
        let Some(r) = self.remote() else {
            return Ok((name, false));
        };
        self.fresh_marks()?;
        if !name.is_empty() && self.reusable(&name)? {
            return Ok((name, false));
        }
        let obj = self.stored_object(d, fresh)?;
        // Another object of the digest placing every chunk this index's
        // recipe uses (this one is a spare the collection drops:
        // `spares.rs`): named and followed, rather than one more written,
        // which would be a spare in turn.
        let mine: HashSet<Hash> = obj.locs.iter().map(|(h, _, _)| *h).collect();
        if let Some(other) = self.reusable_other(d, &name, &mine)? {
            let db = self.db();
            batch.put_cf(cf(db, CF_META), key(CONTENT, &d.0), other.as_bytes());
            return Ok((other, false));
        }
        let uses_fresh = fresh
            .values()
            .next()
            .is_some_and(|(p, _)| obj.objects.contains(p));
        self.naming_deadline(&obj.objects)?;
        let name = format!("{}{}", content_dir(d), unique_suffix(&self.writer_id()));
        r.put(&name, obj.encode()?)?;
        self.remember_named(&name, &obj.objects);
        let db = self.db();
        batch.put_cf(cf(db, CF_META), key(CONTENT, &d.0), name.as_bytes());
        Ok((name, uses_fresh))
    }

    /// The oldest content object of `d` other than `not` that places every
    /// chunk in `mine` and may be named now (neither it nor a piece it
    /// names marked, nor gone): the one a collection keeps of copies
    /// (`spares.rs`), and one this index can find its chunks through.
    fn reusable_other(
        &self,
        d: &Digest,
        not: &str,
        mine: &HashSet<Hash>,
    ) -> Result<Option<String>> {
        for n in self.content_objects_oldest_first(d)? {
            if n == not || self.is_condemned_name(&n) {
                continue;
            }
            let Some(obj) = self.read_content_object(&n)? else {
                continue;
            };
            let mut named_condemned = false;
            for o in &obj.objects {
                named_condemned |= self.is_condemned_name(&self.resolved(o)?);
            }
            let placed: HashSet<Hash> = obj.locs.iter().map(|(h, _, _)| *h).collect();
            if !named_condemned && obj.digest == *d && mine.is_subset(&placed) {
                self.remember_named(&n, &obj.objects);
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// A content object built from what the index holds of `d`.
    fn stored_object(
        &self,
        d: &Digest,
        fresh: &HashMap<Hash, (String, ObjLoc)>,
    ) -> Result<ContentObject> {
        use super::index::{page_key, plan_key, CF_RECIPES};
        use super::recipe::{decode_page, Segment as Seg};
        let db = self.db();
        let content = self
            .content(d)?
            .ok_or_else(|| Error::NotFound(format!("content {d} is not stored")))?;
        let page = |owner: &Digest, i: usize| -> Result<Vec<u8>> {
            db.get_cf(cf(db, CF_RECIPES), page_key(owner, i as u32))?
                .ok_or_else(|| Error::DataLoss(format!("page {i} of {owner} is missing")))
        };
        let mut locs_of: std::collections::HashSet<Hash> = Default::default();
        let mut recipe_of =
            |owner: &Digest, from: usize, starts: &[u64], size: u64| -> Result<RecipeParts> {
                let mut p = RecipeParts {
                    size,
                    page_starts: starts.to_vec(),
                    ..Default::default()
                };
                for i in 0..starts.len() {
                    let b = page(owner, from + i)?;
                    for seg in decode_page(&b)? {
                        match seg {
                            Seg::Chunk { hash, .. } => {
                                p.chunk_refs += 1;
                                locs_of.insert(hash);
                            }
                            Seg::Literal(l) => p.literal_bytes += l.len() as u64,
                        }
                    }
                    p.pages.push(b);
                }
                Ok(p)
            };
        let n = content.page_starts.len();
        let (plain_size, raw_starts, raw_size) = match &content.wrap {
            Some(w) => (w.recipe_size, w.raw_page_starts.clone(), w.raw_size),
            None => (content.size, Vec::new(), 0),
        };
        let recipe = recipe_of(
            &content.plain_pages_of(d),
            0,
            &content.page_starts,
            plain_size,
        )?;
        let raw = recipe_of(d, n, &raw_starts, raw_size)?;
        let plan = match &content.wrap {
            Some(_) => Some(
                db.get_cf(cf(db, CF_RECIPES), plan_key(d))?
                    .ok_or_else(|| Error::DataLoss(format!("the plan of {d} is missing")))?,
            ),
            None => None,
        };
        let mut places = Places::default();
        let mut elsewhere = super::sync::Elsewhere::new(*d);
        for h in &locs_of {
            let (name, place) = self.indexed_place(h, d)?;
            // In a piece gone or being collected: where another object of
            // the digest has it (else the commit fails the same way at
            // every retry, a push of stored content keeping none of its
            // chunks).
            let (name, place) = match (self.is_condemned_name(&name), fresh.get(h)) {
                (true, Some(f)) => f.clone(),
                (true, None) => {
                    (self.relocated_place(&mut elsewhere, h, &name)?).unwrap_or((name, place))
                }
                (false, _) => (name, place),
            };
            places.add(*h, name, place);
        }
        Ok(ContentObject {
            digest: *d,
            size: content.size,
            layout: content.layout,
            recipe,
            raw,
            plan,
            prefix: None,
            objects: places.objects,
            locs: places.locs,
        })
    }
}

/// A content object's chunk places: object names listed once, by index.
#[derive(Default)]
struct Places {
    objects: Vec<String>,
    index: HashMap<String, u32>,
    locs: Vec<(Hash, u32, ObjLoc)>,
}

impl Places {
    fn add(&mut self, h: Hash, name: String, place: ObjLoc) {
        let objects = &mut self.objects;
        let i = *self.index.entry(name).or_insert_with_key(|n| {
            objects.push(n.clone());
            objects.len() as u32 - 1
        });
        self.locs.push((h, i, place));
    }
}

fn obj_loc(l: &ChunkLoc, start: u64) -> ObjLoc {
    ObjLoc {
        block_offset: l.block_offset - start,
        block_len: l.block_len,
        offset_in_block: l.offset_in_block,
        len: l.len,
    }
}
