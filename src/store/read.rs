//! Reads: a byte range of a blob, rebuilt from its recipe. Only the recipe pages
//! the range touches are decoded; chunks come from decoded blocks, cached.

use super::index::{cf, page_key, plan_key, Content, CF_RECIPES};
use super::pack::{self, ChunkLoc};
use super::recipe::{decode_page, Segment};
use super::remote::FOREIGN_BASE;

/// A block read from the bucket brings the blocks after it, up to this far.
const READ_WINDOW: u64 = 8 << 20;
use super::Store;
use crate::codec::plan::Plan;
use crate::codec::rebuild::{self, Out, Source};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::sync::Arc;

/// The end of a requested range, or OutOfRange past the end (containerd's rules).
fn check_range(digest: &Digest, size: u64, offset: u64, length: u64) -> Result<u64> {
    if offset > size {
        return Err(Error::OutOfRange(format!(
            "offset {offset} is past the end of {digest} ({size} bytes)"
        )));
    }
    Ok(if length == 0 {
        size
    } else {
        offset.saturating_add(length).min(size)
    })
}

/// A compressed blob's two recipes, as the rebuild reads them.
pub(super) struct StoreSource<'a> {
    store: &'a Store,
    digest: &'a Digest,
    content: &'a Content,
}

impl<'a> StoreSource<'a> {
    pub(super) fn new(store: &'a Store, digest: &'a Digest, content: &'a Content) -> Self {
        StoreSource {
            store,
            digest,
            content,
        }
    }
}

impl Source for StoreSource<'_> {
    fn plain(&mut self, offset: u64, len: u64, out: &mut Out) -> Result<bool> {
        let rec = RecipeView::plain(self.content);
        self.store
            .read_recipe(self.digest, rec, offset, offset + len, false, out)
    }

    fn raw(&mut self, offset: u64, len: u64, out: &mut Out) -> Result<bool> {
        let rec = RecipeView::raw(self.content);
        self.store
            .read_recipe(self.digest, rec, offset, offset + len, false, out)
    }
}

/// One of a content's recipes: its pages and the stream they rebuild.
#[derive(Clone, Copy)]
struct RecipeView<'a> {
    /// The record the pages are read by.
    content: &'a Content,
    /// Whose pages these are when not the blob's own: a variant's plain
    /// recipe is its base's.
    base: Option<Digest>,
    page_base: u32,
    page_starts: &'a [u64],
    size: u64,
}

impl<'a> RecipeView<'a> {
    fn plain(c: &'a Content) -> Self {
        RecipeView {
            content: c,
            base: c.base(),
            page_base: 0,
            page_starts: &c.page_starts,
            size: c.recipe_size(),
        }
    }

    fn raw(c: &'a Content) -> Self {
        let w = c.wrap.as_ref();
        RecipeView {
            content: c,
            base: None,
            page_base: c.page_starts.len() as u32,
            page_starts: w.map_or(&[][..], |w| &w.raw_page_starts[..]),
            size: w.map_or(0, |w| w.raw_size),
        }
    }
}

impl Store {
    /// Streams `[offset, offset+length)` of a stored content to `out` (length 0:
    /// to the end). `out` returns false to stop early (the reader went away).
    pub fn read_range(
        &self,
        digest: &Digest,
        content: &Content,
        offset: u64,
        length: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        let (_no_swap, content) = self.hold(digest, content)?;
        let content = &*content;
        let end = check_range(digest, content.size, offset, length)?;
        if content.wrap.is_none() {
            self.read_recipe(digest, RecipeView::plain(content), offset, end, false, out)?;
            return Ok(());
        }
        let plan = self.plan(digest)?;
        let held = self.take_cursor(digest, &plan, offset);
        let r = held.read(
            &mut StoreSource::new(self, digest, content),
            offset,
            end,
            out,
        );
        if r.is_ok() {
            self.put_cursor(*digest, held, content);
        }
        r.map(|_| ())
    }

    /// Streams `[offset, offset+length)` of a blob's plain stream: the tar
    /// inside a compressed blob, the blob itself otherwise.
    pub fn read_plain(
        &self,
        digest: &Digest,
        content: &Content,
        offset: u64,
        length: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        // A blob still kept as received has no plain form yet: give it one
        // (nothing to do, and one lookup, for any other blob).
        self.convert(digest, &std::sync::atomic::AtomicBool::new(false))?;
        let (_no_swap, content) = self.hold(digest, content)?;
        let content = &*content;
        let Some(w) = &content.wrap else {
            return self.read_range(digest, content, offset, length, out);
        };
        let size = w.plain_size.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "{digest} does not decode to its end (corrupt, truncated or a decompression bomb), so it has no plain form"
            ))
        })?;
        let end = check_range(digest, size, offset, length)?;
        let plan = self.plan(digest)?;
        let mut src = StoreSource::new(self, digest, content);
        rebuild::plain(&plan, &mut src, offset, end, out).map(|_| ())
    }

    /// Like `read_range`, but only from the caches: returns false, having
    /// written some prefix or nothing, when a page or block would have to come
    /// from disk (or a compressed blob would have to be rebuilt). Lets a
    /// caller serve small reads without a thread hand-off.
    pub fn read_range_cached(
        &self,
        digest: &Digest,
        content: &Content,
        offset: u64,
        length: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<bool> {
        let (_no_swap, content) = self.hold(digest, content)?;
        let content = &*content;
        let end = check_range(digest, content.size, offset, length)?;
        if content.wrap.is_some() {
            return Ok(offset == end || self.read_made(digest, content, offset, end, out)?);
        }
        self.read_recipe(digest, RecipeView::plain(content), offset, end, true, out)
    }

    /// Holds the digest's swap lock for a read, and gives the record to read
    /// by: `content`, or, for a blob kept as plain data (which a conversion
    /// may have replaced since the caller loaded `content`), its record now.
    fn hold<'a>(
        &'a self,
        digest: &Digest,
        content: &'a Content,
    ) -> Result<(parking_lot::RwLockReadGuard<'a, ()>, Cow<'a, Content>)> {
        let guard = self.inner.swap_lock(digest).read_recursive();
        if content.wrap.is_some() || content.layout != 0 {
            return Ok((guard, Cow::Borrowed(content)));
        }
        match self.content(digest)? {
            Some(c) => Ok((guard, Cow::Owned(c))),
            None => Err(Error::NotFound(format!("blob {digest} was deleted"))),
        }
    }

    /// Fails unless the blob's record still is `content`, checked after a
    /// page is taken: a page written after `content` was loaded (the blob
    /// deleted and stored again in another shape, say as received where it
    /// was converted) comes with a record written in the same batch, so a
    /// read never serves another recipe's bytes.
    fn check_unchanged(&self, digest: &Digest, content: &Content) -> Result<()> {
        match self.content(digest)? {
            Some(c) if c.same_recipe(content) => Ok(()),
            Some(_) => Err(Error::Unavailable(format!(
                "{digest} was deleted and stored again while it was read; read it again"
            ))),
            None => Err(Error::NotFound(format!(
                "{digest} was deleted while it was read"
            ))),
        }
    }

    /// A compressed blob's rebuild plan, from the cache when it is there.
    pub(crate) fn plan(&self, digest: &Digest) -> Result<Arc<Plan>> {
        let _loading = self.inner.page_lock(digest).read_recursive();
        if let Some(p) = self.inner.plans.get(digest) {
            return Ok(p);
        }
        let rec = self
            .db()
            .get_pinned_cf(cf(self.db(), CF_RECIPES), plan_key(digest))?
            .ok_or_else(|| Error::DataLoss(format!("the rebuild plan of {digest} is missing")))?;
        let plan = Arc::new(Plan::decode(&rec)?);
        self.inner.plans.insert(*digest, plan.clone());
        Ok(plan)
    }

    /// Streams `[offset, end)` of one recipe's stream.
    fn read_recipe(
        &self,
        digest: &Digest,
        rec: RecipeView,
        offset: u64,
        end: u64,
        cached_only: bool,
        out: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<bool> {
        if offset >= end {
            return Ok(true);
        }
        if end > rec.size {
            return Err(Error::DataLoss(format!(
                "a read of {digest} runs past the end of its recipe"
            )));
        }
        let first_page = rec
            .page_starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        for page in first_page..rec.page_starts.len() {
            let mut pos = rec.page_starts[page];
            if pos >= end {
                break;
            }
            let owner = rec.base.as_ref().unwrap_or(digest);
            let segs = match self.page(owner, rec.page_base + page as u32, cached_only) {
                Ok(Some(segs)) => segs,
                Ok(None) => return Ok(false),
                // A page gone because the blob was deleted meanwhile (its
                // base with it) is that, not damage.
                Err(e) => {
                    self.check_unchanged(digest, rec.content)?;
                    return Err(e);
                }
            };
            self.check_unchanged(digest, rec.content)?;
            for seg in segs.iter() {
                let seg_end = pos + seg.len();
                if seg_end > offset && pos < end {
                    let from = offset.saturating_sub(pos) as usize;
                    let to = (end.min(seg_end) - pos) as usize;
                    let keep_going = match seg {
                        Segment::Literal(b) => out(&b[from..to])?,
                        Segment::Chunk { hash, len } => {
                            let Some((block, loc)) =
                                self.chunk_block(hash, *len, digest, cached_only)?
                            else {
                                return Ok(false);
                            };
                            let base = loc.offset_in_block as usize;
                            out(&block[base + from..base + to])?
                        }
                    };
                    if !keep_going {
                        return Ok(true);
                    }
                }
                pos = seg_end;
                if pos >= end {
                    return Ok(true);
                }
            }
        }
        // Pages ended before the range did: the recipe is shorter than its size.
        Err(Error::DataLoss(format!(
            "the recipe of {digest} ends before its recorded size"
        )))
    }

    /// A decoded recipe page, from the cache when it is there.
    pub(super) fn page(
        &self,
        digest: &Digest,
        page: u32,
        cached_only: bool,
    ) -> Result<Option<Arc<Vec<Segment>>>> {
        let _loading = self.inner.page_lock(digest).read_recursive();
        if let Some(p) = self.inner.pages.get(&(*digest, page)) {
            return Ok(Some(p));
        }
        if cached_only {
            return Ok(None);
        }
        let stored = self
            .db()
            .get_pinned_cf(cf(self.db(), CF_RECIPES), page_key(digest, page))?
            .ok_or_else(|| Error::DataLoss(format!("recipe page {page} of {digest} is missing")))?;
        let segs = Arc::new(decode_page(&stored)?);
        self.inner.pages.insert((*digest, page), segs.clone());
        Ok(Some(segs))
    }

    /// One block record: from its local pack, or, for a foreign pack id,
    /// from the disk cache or the bucket (then cached).
    pub(super) fn read_record(&self, pack: u32, offset: u64, len: u32) -> Result<Vec<u8>> {
        if pack < FOREIGN_BASE {
            match self.inner.packs.read_at(pack, offset, len as usize) {
                // Bucket mode: a full pack of this daemon's leaves the data
                // directory once all of it is in the bucket (`evict_full_packs`).
                Err(Error::Unavailable(_))
                    if self.remote().is_some() && !self.inner.packs.has(pack) => {}
                other => return other,
            }
        }
        let r = self.remote().ok_or_else(|| {
            Error::DataLoss(format!(
                "pack {pack} is in a bucket, and this store has none"
            ))
        })?;
        let m = &r.metrics;
        if let Some(b) = r.cache.get((pack, offset)) {
            if b.len() == len as usize {
                m.cache_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(b);
            }
        }
        m.cache_misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The object, and where the block starts in it (where a compaction
        // moved it, if one did).
        let (name, place, moved_end) = self.located(&pack::ChunkLoc {
            pack,
            block_offset: offset,
            block_len: len,
            offset_in_block: 0,
            len: 0,
        })?;
        let at = place.block_offset;
        // A piece gone or cut short is damage, not an outage.
        let lost = |e: Error| match e {
            Error::NotFound(m) => Error::DataLoss(format!("pack {pack}: {m}")),
            e => e,
        };
        let size = self.object_size(&name).map_err(lost)?;
        if at + len as u64 > size {
            return Err(Error::DataLoss(format!(
                "{name} ({size} bytes) ends before the block at {at} ({len} bytes)"
            )));
        }
        // Reads go through a layer's chunks mostly in the order they were
        // stored: one request takes the blocks that follow too (cached), so
        // a cold read is not one round trip per block.
        // Not past the moved piece the block came in: what follows it in the
        // copy is other pieces', at other offsets of this pack id.
        let end = size
            .min(at + READ_WINDOW)
            .min(moved_end.unwrap_or(u64::MAX));
        let got = r.get_range(&name, at..end).map_err(lost)?;
        let b = got[..len as usize].to_vec();
        r.cache.put((pack, offset), &b);
        let mut i = len as usize;
        while let Some(h) = got
            .get(i..i + pack::HEADER_LEN)
            .and_then(pack::RecordHeader::parse)
        {
            let Some(rec) = got.get(i..i + h.record_len() as usize) else {
                break;
            };
            r.cache.put((pack, offset + i as u64), rec);
            i += rec.len();
        }
        Ok(b)
    }

    /// An object's size in the bucket (asked once).
    fn object_size(&self, name: &str) -> Result<u64> {
        if let Some(&s) = self.inner.object_sizes.lock().get(name) {
            return Ok(s);
        }
        let r = self.remote().expect("objects come with a bucket");
        let s = r.size_of(name)?;
        self.inner.object_sizes.lock().insert(name.to_string(), s);
        Ok(s)
    }

    /// A chunk's block record; one in a piece this index found gone from
    /// the bucket is not asked for.
    fn read_bucket_record(&self, loc: &ChunkLoc) -> Result<Vec<u8>> {
        if self.any_condemned() {
            let name = match loc.pack >= FOREIGN_BASE || !self.inner.packs.has(loc.pack) {
                true => self.object_of(loc).ok().map(|o| o.0),
                false => None,
            };
            if let Some(n) = name.filter(|n| self.is_gone(n)) {
                return Err(Error::DataLoss(format!("{n} is gone from the bucket")));
            }
        }
        self.read_record(loc.pack, loc.block_offset, loc.block_len)
    }

    /// The decoded block that holds a chunk, and the chunk's place in it.
    fn chunk_block(
        &self,
        hash: &pack::Hash,
        len: u32,
        digest: &Digest,
        cached_only: bool,
    ) -> Result<Option<(Arc<Vec<u8>>, ChunkLoc)>> {
        match self.chunk_block_once(hash, len, digest, cached_only) {
            // Garbage collection moved the chunk between lookup and read: look
            // again. (Never in bucket mode, where it rewrites no pack: there
            // UNAVAILABLE is the bucket's, and a second try would double the wait.)
            Err(Error::Unavailable(_)) if self.remote().is_none() => {
                self.chunk_block_once(hash, len, digest, cached_only)
            }
            other => other,
        }
    }

    fn chunk_block_once(
        &self,
        hash: &pack::Hash,
        len: u32,
        digest: &Digest,
        cached_only: bool,
    ) -> Result<Option<(Arc<Vec<u8>>, ChunkLoc)>> {
        let loc = super::chunk_entry::location(self.db(), hash)?.ok_or_else(|| {
            Error::DataLoss(format!(
                "chunk {} of {digest} is missing from the index",
                hex::encode(hash)
            ))
        })?;
        if loc.len != len || loc.offset_in_block.checked_add(len).is_none() {
            return Err(Error::DataLoss(format!(
                "chunk {} has a different length in the index",
                hex::encode(hash)
            )));
        }
        let inner = &self.inner;
        if let Some(b) = inner.blocks.get(&loc.block_key()) {
            return Ok(Some((b, loc)));
        }
        if cached_only {
            return Ok(None);
        }
        let mut loc = loc;
        let mut relocated = false;
        let rec = match self.read_bucket_record(&loc) {
            // Bucket mode: the piece a collection deleted (or found damaged):
            // the blob's content object says where else the chunk is.
            Err(Error::DataLoss(m)) if self.remote().is_some() => {
                match self.relocate(hash, len, digest, &loc)? {
                    Some(l) => {
                        loc = l;
                        relocated = true;
                        self.read_record(loc.pack, loc.block_offset, loc.block_len)?
                    }
                    None => return Err(Error::DataLoss(m)),
                }
            }
            other => other?,
        };
        let from_bucket = loc.pack >= FOREIGN_BASE
            || (self.remote().is_some() && !self.inner.packs.has(loc.pack));
        let decoded = match decode_holding(&rec, &loc, hash, digest) {
            // A damaged cache file: drop it and read the bucket's copy; if
            // that does not hold the chunk either, the blob's content
            // objects say where else it is.
            Err(Error::DataLoss(_)) if from_bucket => {
                if let Some(r) = self.remote() {
                    r.cache.remove(loc.block_key());
                }
                let again = self
                    .read_record(loc.pack, loc.block_offset, loc.block_len)
                    .and_then(|rec| decode_holding(&rec, &loc, hash, digest));
                match again {
                    Err(Error::DataLoss(m)) if !relocated => {
                        match self.relocate(hash, len, digest, &loc)? {
                            Some(l) => {
                                loc = l;
                                let rec =
                                    self.read_record(loc.pack, loc.block_offset, loc.block_len)?;
                                decode_holding(&rec, &loc, hash, digest)?
                            }
                            None => return Err(Error::DataLoss(m)),
                        }
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        let block = Arc::new(decoded.plain);
        inner.blocks.insert(loc.block_key(), block.clone());
        Ok(Some((block, loc)))
    }
}

/// Decodes a block record (its crc32c and every chunk's BLAKE3) and checks
/// that it holds chunk `hash` where `loc` says: a record is checked by its
/// own hashes only, not against the chunk asked for.
fn decode_holding(
    rec: &[u8],
    loc: &ChunkLoc,
    hash: &pack::Hash,
    digest: &Digest,
) -> Result<pack::DecodedBlock> {
    let what = || {
        format!(
            "block at pack {} offset {} (holding chunks of {digest})",
            loc.pack, loc.block_offset
        )
    };
    let d = pack::decode_block(rec, &what)?;
    let mut at = 0u32;
    let found = d.entries.iter().any(|(h, l)| {
        let here = at;
        at = at.saturating_add(*l);
        here == loc.offset_in_block && h == hash && *l == loc.len
    });
    if !found {
        return Err(Error::DataLoss(format!(
            "{}: chunk {} is not at offset {} of the block",
            what(),
            hex::encode(hash),
            loc.offset_in_block
        )));
    }
    if (loc.offset_in_block + loc.len) as usize > d.plain.len() {
        return Err(Error::DataLoss(format!(
            "{}: chunk lies outside the block",
            what()
        )));
    }
    Ok(d)
}
