//! The commit: one synced WriteBatch that makes a blob visible (invariant 2),
//! written under the commit lock so refcounts and counters stay exact.
//! Shared by pushes (`ingest.rs`), deletes (`delete.rs`) and conversions
//! (`convert.rs`), which all move chunk references.
//!
//! One content per tar: a compressed content whose whole plain stream
//! decoded (its diff_id is known) keeps only its plan and raw pages; its
//! plain recipe is the content stored under the diff_id, its *base*, made
//! by the first variant to arrive when no plain push made it first. The
//! base stays while a namespace holds it or a variant uses it.

use super::chunk_entry;
use super::follow::{prefix_entry, PrefixKey};
use super::index::{
    self, cf, page_key, BlobMeta, Content, Counters, Wrap, CF_BLOBS, CF_CHUNKS, CF_META, CF_PACKS,
    CF_PREFIXES, CF_RECIPES,
};
use super::ingest::{Committing, IngestOptions, PushOutcome, Recipes};
use super::pack::Hash;
use super::recipe::{decode_page, Segment};
use super::remote::format::Record;
use super::{now_secs, Store};
use crate::codec::plan::Plan;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::split::Layout;
use rocksdb::{WriteBatch, DB};
use std::collections::HashMap;

/// What `put_content` wrote.
pub(super) struct Put {
    pub content: Content,
    /// Index bytes of the recipes and plan it wrote (a base's too).
    pub recipe_bytes: u64,
    /// The chunk references its pages hold (a new base's too), for
    /// `move_refs`.
    pub refs: HashMap<Hash, i64>,
}

/// Base contents changed by one batch: later steps of the same batch read
/// them through this, and `write` puts them in the batch once.
#[derive(Default)]
pub(super) struct Bases(HashMap<Digest, Option<Content>>);

impl Bases {
    fn get(&self, store: &Store, d: &Digest) -> Result<Option<Content>> {
        match self.0.get(d) {
            Some(c) => Ok(c.clone()),
            None => store.content(d),
        }
    }

    /// Puts the changed records in `batch`; returns the bases it deletes,
    /// whose cached pages the caller forgets once the batch is written.
    pub(super) fn write(self, db: &DB, batch: &mut WriteBatch) -> Vec<Digest> {
        let mut gone = Vec::new();
        for (d, c) in self.0 {
            match c {
                Some(c) => batch.put_cf(cf(db, CF_RECIPES), d.0, c.encode()),
                None => {
                    batch.delete_cf(cf(db, CF_RECIPES), d.0);
                    gone.push(d);
                }
            }
        }
        gone
    }
}

/// The base a new compressed content's plain recipe can be: its diff_id,
/// when every member decoded and the plain recipe is the whole plain stream.
fn base_digest(
    digest: &Digest,
    recipe: &super::recipe::Recipe,
    plan: &Option<Plan>,
) -> Option<Digest> {
    let p = plan.as_ref()?;
    let d = Digest(p.diff_id?);
    (p.plain_size == Some(recipe.size) && d != *digest).then_some(d)
}

/// Chunk references a recipe's encoded pages hold.
fn page_refs(pages: &[Vec<u8>], refs: &mut HashMap<Hash, i64>) -> Result<()> {
    for page in pages {
        for seg in decode_page(page)? {
            if let Segment::Chunk { hash, .. } = seg {
                *refs.entry(hash).or_default() += 1;
            }
        }
    }
    Ok(())
}

/// Writes a commit's batch with a synced log.
pub(super) fn write_synced(db: &DB, batch: WriteBatch) -> Result<()> {
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo)?;
    Ok(())
}

impl Store {
    /// Commits a pushed blob: a new blob record for a content already stored,
    /// or the content itself. `deferred`: it was stored as received, and is
    /// marked for conversion.
    /// Also returns whether `new`'s chunks were stored (false: the content
    /// was there, and the caller cuts them off the pack; true for a stored
    /// content too when chunks its index placed in pieces a bucket
    /// collection is taking were stored anew: `fresh_places`).
    pub(super) fn commit_content(
        &self,
        opts: &IngestOptions,
        new: Committing,
        deferred: bool,
    ) -> Result<(PushOutcome, bool)> {
        let db = self.db();
        let mut counters = self.inner.counters.lock();
        let mut c = *counters;
        let mut batch = WriteBatch::default();
        let now = now_secs();
        let digest = new.digest;
        let bkey = index::blob_key(&opts.namespace, &digest);
        let old_meta = db
            .get_cf(cf(db, CF_BLOBS), &bkey)?
            .map(|v| BlobMeta::decode(&v))
            .transpose()?;
        let meta = BlobMeta {
            media_type: opts.media_type.clone(),
            labels: opts.labels.clone(),
            created_at: old_meta.as_ref().map_or(now, |m| m.created_at),
            updated_at: now,
        };
        batch.put_cf(cf(db, CF_BLOBS), &bkey, meta.encode());
        let mut outcome = PushOutcome {
            digest: Some(digest),
            size: new.size,
            plain_bytes: new.size,
            kept: new
                .recipes
                .plan
                .as_ref()
                .map(Plan::describe)
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut stored_new = false;
        // Bases the batch deletes: their cached pages go after it is written.
        let mut forget = Vec::new();
        // A blob kept as received, pushed: this push's recipe is its
        // conversion, swapped in this batch unless a reader holds it now.
        let mut swap = None;
        let content = match self.content(&digest)? {
            Some(mut content) => {
                outcome.already_stored = true;
                let holders = content.holders + old_meta.is_none() as u32;
                if !deferred && self.is_marked(&digest)? {
                    swap = self.inner.swap_lock(&digest).try_write();
                }
                if swap.is_some() {
                    let (fresh, recipe_bytes, gone) =
                        self.replace_recipe(&mut batch, &mut c, &content, &new, holders)?;
                    forget.extend(gone);
                    outcome.bytes_added = new.chunks.appended() + recipe_bytes;
                    stored_new = true;
                    if let Some(p) = &new.recipes.plan {
                        outcome.plain_bytes = p.plain_size.unwrap_or(new.recipes.recipe.size);
                    }
                    fresh
                } else {
                    if old_meta.is_none() {
                        content.holders = holders;
                        batch.put_cf(cf(db, CF_RECIPES), digest.0, content.encode());
                    }
                    content
                }
            }
            None => {
                let mut bases = Bases::default();
                let put = self.put_content(&mut batch, &mut c, &mut bases, &new, 1)?;
                self.move_refs(&mut batch, &mut c, &put.refs)?;
                bases.write(db, &mut batch);
                let (content, recipe_bytes) = (put.content, put.recipe_bytes);
                if let Some(p) = &new.recipes.plan {
                    outcome.plain_bytes = p.plain_size.unwrap_or(new.recipes.recipe.size);
                }
                if deferred {
                    batch.put_cf(cf(db, CF_META), index::mark_key(&digest), []);
                }
                c.contents += 1;
                outcome.bytes_added = new.chunks.appended() + recipe_bytes;
                stored_new = true;
                content
            }
        };
        if old_meta.is_none() {
            c.blobs += 1;
            c.logical_bytes += new.size;
            c.logical_stream_bytes += content.stream_bytes();
        }
        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
        // The ingest's appended bytes are kept (not cut off the pack) when
        // the content is new, or when a stored one's chunks had to be
        // stored anew (`fresh_places`).
        let mut keep_bytes = stored_new;
        if self.remote().is_some() {
            let content = match stored_new {
                true => self.publish_content(&mut batch, &new)?.unwrap_or_default(),
                false => {
                    let fresh = self.fresh_places(&new)?;
                    let (name, uses) = self.ensure_content_object(&mut batch, &digest, &fresh)?;
                    if uses {
                        self.keep_fresh(&mut batch, &mut c, &new, &fresh);
                        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
                        keep_bytes = true;
                        outcome.bytes_added = new.chunks.appended();
                    }
                    name
                }
            };
            self.publish_records(
                &mut batch,
                vec![Record::Put {
                    ns: opts.namespace.clone(),
                    digest,
                    meta: meta.encode(),
                    content,
                }],
            )?;
        }
        write_synced(db, batch)?;
        *counters = c;
        drop(counters);
        if swap.is_some() {
            self.forget_recipe(&digest);
        }
        for d in forget {
            self.forget_recipe(&d);
        }
        if deferred && !outcome.already_stored {
            self.inner.convert.wake();
        }
        Ok((outcome, keep_bytes))
    }

    /// Puts a new content's chunk locations, recipe pages, plan and prefix
    /// entry and its record in `batch`, and counts them (not `contents` for
    /// `new` itself, not refcounts: see `Put::refs`). A compressed content
    /// with a base (see the module doc) writes only its plan and raw pages
    /// and counts itself a variant of the base, which it makes, and counts
    /// as a content, when none is stored.
    pub(super) fn put_content(
        &self,
        batch: &mut WriteBatch,
        c: &mut Counters,
        bases: &mut Bases,
        new: &Committing,
        holders: u32,
    ) -> Result<Put> {
        let db = self.db();
        let digest = &new.digest;
        let Recipes {
            recipe,
            raw,
            plan,
            prefix,
        } = &new.recipes;
        let layout = match new.layout {
            Layout::Raw => 0,
            Layout::Tar => 1,
            Layout::TarThenRaw => 2,
        };
        // The base, and whether this commit makes it.
        let mut base = None;
        if let Some(d) = base_digest(digest, recipe, plan) {
            match bases.get(self, &d)? {
                // A plain content under the diff_id rebuilds exactly the
                // bytes whose sha256 that is: any such recipe is this plain
                // stream's, however its pages fell (they follow how the
                // stream was fed to the splitter). Not one kept as received
                // and marked: its conversion would change what its pages
                // hold (a tar that is itself compressed).
                Some(b) if b.wrap.is_none() && b.size == recipe.size && !self.is_marked(&d)? => {
                    base = Some((d, b, false))
                }
                Some(_) => {}
                None => {
                    let b = Content {
                        size: recipe.size,
                        layout,
                        holders: 0,
                        variants: 0,
                        chunk_refs: recipe.chunk_refs,
                        literal_bytes: recipe.literal_bytes,
                        recipe_bytes: recipe.stored_bytes(),
                        page_starts: recipe.page_starts.clone(),
                        wrap: None,
                    };
                    base = Some((d, b, true));
                }
            }
        }
        let mut refs: HashMap<Hash, i64> = HashMap::new();
        match &base {
            Some((_, _, false)) => page_refs(&raw.pages, &mut refs)?,
            _ => {
                for (h, s) in new.seen {
                    refs.insert(*h, s.refs as i64);
                }
            }
        }
        for (hash, loc) in new.chunks.locs {
            // A concurrent push may have committed the same chunk meanwhile;
            // its copy wins and ours is left for garbage collection. Unless
            // that copy is in a piece the bucket's collection marked: then
            // this one takes its place (counted once).
            if let Some(held) = chunk_entry::location(db, hash)? {
                if self.condemned(&held) {
                    chunk_entry::merge_loc(db, batch, hash, loc);
                }
                continue;
            }
            // A new record starts at zero references; `move_refs` below adds
            // this push's own.
            chunk_entry::merge_loc(db, batch, hash, loc);
            c.chunks += 1;
            c.chunk_plain_bytes += loc.len as u64;
            // Only the base's pages use it, and they were stored already:
            // garbage from the start, for collection to take.
            if !refs.contains_key(hash) {
                c.unreferenced_chunks += 1;
            }
        }
        let mut recipe_bytes = 0;
        let own_plain = match &mut base {
            None => true,
            Some((d, b, made)) => {
                if *made {
                    for (i, page) in recipe.pages.iter().enumerate() {
                        batch.put_cf(cf(db, CF_RECIPES), page_key(d, i as u32), page);
                    }
                    if let Some(key) = prefix {
                        batch.put_cf(cf(db, CF_PREFIXES), prefix_entry(key, d), []);
                    }
                    recipe_bytes += b.recipe_bytes;
                    c.contents += 1;
                    c.by_strategy[0] += 1;
                    c.literal_bytes += b.literal_bytes;
                }
                b.variants += 1;
                bases.0.insert(*d, Some(b.clone()));
                false
            }
        };
        if own_plain {
            recipe_bytes += recipe.stored_bytes();
            for (i, page) in recipe.pages.iter().enumerate() {
                batch.put_cf(cf(db, CF_RECIPES), page_key(digest, i as u32), page);
            }
            if let Some(key) = prefix {
                batch.put_cf(cf(db, CF_PREFIXES), prefix_entry(key, digest), []);
            }
        }
        // Raw pages come after the plain ones: the base's, when shared.
        let n = match &base {
            Some((_, b, _)) => b.page_starts.len(),
            None => recipe.pages.len(),
        };
        for (i, page) in raw.pages.iter().enumerate() {
            batch.put_cf(cf(db, CF_RECIPES), page_key(digest, (n + i) as u32), page);
        }
        let wrap = match plan {
            None => None,
            Some(plan) => {
                let rec = plan.encode();
                recipe_bytes += raw.stored_bytes() + rec.len() as u64;
                batch.put_cf(cf(db, CF_RECIPES), index::plan_key(digest), &rec);
                Some(Wrap {
                    codec: plan.codec.tag(),
                    strategy: plan.strategy() as u8,
                    recipe_size: recipe.size,
                    plain_size: plan.plain_size,
                    diff_id: plan.diff_id,
                    raw_size: raw.size,
                    raw_page_starts: raw.page_starts.clone(),
                    extra_bytes: raw.size + rec.len() as u64,
                    based: !own_plain,
                })
            }
        };
        let (chunk_refs, literal_bytes, own_recipe_bytes) = if own_plain {
            (
                recipe.chunk_refs + raw.chunk_refs,
                recipe.literal_bytes + raw.literal_bytes,
                recipe_bytes,
            )
        } else {
            let b = base
                .as_ref()
                .map_or(0, |(_, b, made)| if *made { b.recipe_bytes } else { 0 });
            (raw.chunk_refs, raw.literal_bytes, recipe_bytes - b)
        };
        let (layout, page_starts) = match &base {
            Some((_, b, _)) => (b.layout, b.page_starts.clone()),
            None => (layout, recipe.page_starts.clone()),
        };
        let content = Content {
            size: new.size,
            layout,
            holders,
            variants: 0,
            chunk_refs,
            literal_bytes,
            recipe_bytes: own_recipe_bytes,
            page_starts,
            wrap,
        };
        batch.put_cf(cf(db, CF_RECIPES), digest.0, content.encode());
        c.rebuild_bytes += content.wrap.as_ref().map_or(0, |w| w.extra_bytes);
        c.by_strategy[content.strategy() as usize] += 1;
        if let Some((id, start, end)) = new.chunks.pack {
            batch.put_cf(cf(db, CF_PACKS), id.to_be_bytes(), end.to_le_bytes());
            c.pack_bytes += end - start;
        }
        c.literal_bytes += content.literal_bytes;
        Ok(Put {
            content,
            recipe_bytes,
            refs,
        })
    }

    /// Deletes a content's recipe pages, plan and prefix entry in `batch`,
    /// uncounts them (not `contents`), and returns the chunk references its
    /// recipes held, as negative deltas for `move_refs`. A variant lets go of
    /// its base, which goes too (counted) when nothing else holds it.
    pub(super) fn drop_content(
        &self,
        batch: &mut WriteBatch,
        c: &mut Counters,
        bases: &mut Bases,
        digest: &Digest,
        content: &Content,
    ) -> Result<HashMap<Hash, i64>> {
        let db = self.db();
        let mut refs: HashMap<Hash, i64> = HashMap::new();
        // The plain recipe's pages come first; they name its prefix entry.
        // A variant's are its base's: only its raw pages are its own.
        let plain_pages = content.page_starts.len() as u32;
        let first = if content.is_based() { plain_pages } else { 0 };
        let mut prefix = PrefixKey::default();
        for page in first..content.page_count() {
            let key = page_key(digest, page);
            let stored = db.get_pinned_cf(cf(db, CF_RECIPES), key)?.ok_or_else(|| {
                Error::DataLoss(format!("recipe page {page} of {digest} is missing"))
            })?;
            for seg in decode_page(&stored)? {
                if page < plain_pages {
                    if let Some(k) = prefix.segment(&seg) {
                        batch.delete_cf(cf(db, CF_PREFIXES), prefix_entry(&k, digest));
                    }
                }
                if let Segment::Chunk { hash, .. } = seg {
                    *refs.entry(hash).or_default() -= 1;
                }
            }
            batch.delete_cf(cf(db, CF_RECIPES), key);
        }
        if content.wrap.is_some() {
            batch.delete_cf(cf(db, CF_RECIPES), index::plan_key(digest));
        }
        c.rebuild_bytes -= content.wrap.as_ref().map_or(0, |w| w.extra_bytes);
        let s = &mut c.by_strategy[content.strategy() as usize];
        *s = s.saturating_sub(1);
        c.literal_bytes -= content.literal_bytes;
        if content.is_based() {
            let base = content.plain_pages_of(digest);
            match bases.get(self, &base)? {
                Some(mut b) => {
                    b.variants = b.variants.saturating_sub(1);
                    if b.holders == 0 && b.variants == 0 {
                        for (h, d) in self.drop_content(batch, c, bases, &base, &b)? {
                            *refs.entry(h).or_default() += d;
                        }
                        bases.0.insert(base, None);
                        c.contents -= 1;
                    } else {
                        bases.0.insert(base, Some(b));
                    }
                }
                None => {
                    tracing::error!(%digest, %base, "the plain recipe a compressed blob shares is missing")
                }
            }
        }
        Ok(refs)
    }

    /// Adds `deltas` to chunk refcounts in `batch`, keeping the count of
    /// unreferenced chunks.
    pub(super) fn move_refs(
        &self,
        batch: &mut WriteBatch,
        c: &mut Counters,
        deltas: &HashMap<Hash, i64>,
    ) -> Result<()> {
        let db = self.db();
        let chunks_cf = cf(db, CF_CHUNKS);
        let hashes: Vec<&Hash> = deltas.keys().filter(|h| deltas[*h] != 0).collect();
        let olds = db.multi_get_cf(hashes.iter().map(|h| (chunks_cf, h.as_slice())));
        for (h, old) in hashes.iter().zip(olds) {
            let old = old?
                .map(|v| chunk_entry::ChunkEntry::decode(&v))
                .transpose()?
                .map(|e| e.refs.max(0) as u64);
            let delta = deltas[*h];
            let before = old.unwrap_or(0);
            if (before as i64) < -delta {
                tracing::error!(
                    chunk = hex::encode(h),
                    old = before,
                    delta,
                    "refcount lower than the references being released"
                );
            }
            let after = (before as i64 + delta).max(0) as u64;
            if old == Some(0) && after > 0 {
                c.unreferenced_chunks -= 1;
            }
            if before > 0 && after == 0 {
                c.unreferenced_chunks += 1;
            }
            // A delta, not the new value: collection may move the chunk's
            // location concurrently, and merges keep both writes.
            chunk_entry::merge_refs(db, batch, h, after as i64 - before as i64);
        }
        Ok(())
    }
}
