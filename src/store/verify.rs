//! `strata verify`: checks the invariants of DESIGN.md against one consistent
//! snapshot of the index, and says exactly what is wrong and which blobs it
//! touches.
//!
//! 1. every pack record up to its committed length has a good checksum, and
//!    every chunk in it hashes to its name;
//! 2. every chunk location in the index holds that chunk;
//! 3. every recipe's chunks exist, and its pages add up to its size;
//!    prefix entries (follow.rs) name contents that begin as they say;
//!    conversion marks (convert.rs) name contents kept as plain data;
//! 4. every chunk's refcount equals the recipe references to it;
//! 5. blob records, holders and the store's counters agree;
//! 6. with `deep`, every content rebuilt hashes to its digest.

use super::chunk_entry::ChunkEntry;
use super::follow::PrefixKey;
use super::index::{cf, Content, Counters, CF_BLOBS, CF_CHUNKS, CF_PACKS, CF_PREFIXES, CF_RECIPES};
use super::pack::{self, Hash, RecordHeader, HEADER_LEN};
use super::recipe::{decode_page, Segment};
use super::remote::FOREIGN_BASE;
use super::Store;
use crate::digest::Digest;
use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Problem {
    /// What kind of fault: pack, chunk, recipe, refcount, blob, counters, digest.
    pub kind: String,
    pub detail: String,
    /// Blobs whose bytes the fault touches, as "namespace/digest".
    pub blobs: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub packs: u64,
    pub records: u64,
    pub pack_bytes: u64,
    pub chunks: u64,
    pub contents: u64,
    pub blobs: u64,
    pub deep_checked: u64,
    /// Chunks whose bucket piece was gone, found again through a content
    /// object (`Store::relocate`, which repaired the index).
    pub relocated: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Blocks read and checked: (pack, offset) → chunk → (offset in block, length).
type GoodBlocks = HashMap<(u32, u64), HashMap<Hash, (u32, u32)>>;
/// Problems found: kind, detail, chunks and blobs touched.
type Problems = Vec<(String, String, Vec<Hash>, Vec<Digest>)>;

impl Store {
    /// Bucket mode: whether the piece holding `loc` is missing from the
    /// bucket (a collection deleted it), rather than damaged.
    fn piece_missing(&self, loc: &pack::ChunkLoc) -> bool {
        let (Some(r), Ok((name, _))) = (self.remote(), self.object_of(loc)) else {
            return false;
        };
        matches!(r.size_of(&name), Err(Error::NotFound(_)))
    }

    pub fn verify(&self, deep: bool) -> Result<VerifyReport> {
        // A pack rewritten while it is scanned would read as damaged: garbage
        // collection waits until verification ends (pushes and reads go on).
        let _no_gc = self.inner.gc_lock.lock();
        let db = self.db();
        // Under the commit lock, the snapshot and the counters agree.
        let (snap, kept) = {
            let c = self.inner.counters.lock();
            (db.snapshot(), *c)
        };
        let mut r = VerifyReport::default();
        let mut problems: Problems = Vec::new();

        // 1. Pack records, scanned without the index's help.
        let mut good: GoodBlocks = HashMap::new();
        // Bucket mode: foreign packs, and this daemon's packs dropped from
        // the data directory once the bucket held them.
        let in_bucket =
            |id: u32| id >= FOREIGN_BASE || (self.remote().is_some() && !self.inner.packs.has(id));
        for item in snap.iterator_cf(cf(db, CF_PACKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let (id, committed) = super::index::decode_pack_entry(&k, &v)?;
            r.packs += 1;
            r.pack_bytes += committed;
            if in_bucket(id) {
                continue; // its blocks are checked below, read from the bucket
            }
            let mut off = 0u64;
            while off < committed {
                let what = || format!("pack {id} record at offset {off}");
                let head = match self.inner.packs.read_at(id, off, HEADER_LEN) {
                    Ok(h) => h,
                    Err(e) => {
                        problems.push(("pack".into(), format!("{}: {e}", what()), vec![], vec![]));
                        break;
                    }
                };
                let Some(h) = RecordHeader::parse(&head) else {
                    problems.push((
                        "pack".into(),
                        format!(
                            "{}: not a record header; the rest of the pack is unreadable",
                            what()
                        ),
                        vec![],
                        vec![],
                    ));
                    break;
                };
                let len = h.record_len();
                if off + len > committed {
                    problems.push((
                        "pack".into(),
                        format!(
                            "{}: record runs past the committed length {committed}",
                            what()
                        ),
                        vec![],
                        vec![],
                    ));
                    break;
                }
                r.records += 1;
                match self
                    .inner
                    .packs
                    .read_at(id, off, len as usize)
                    .and_then(|rec| pack::decode_block(&rec, &what))
                {
                    Ok(b) => {
                        let mut at = 0u32;
                        let entries = good.entry((id, off)).or_default();
                        for (hash, clen) in b.entries {
                            entries.insert(hash, (at, clen));
                            at += clen;
                        }
                    }
                    Err(e) => problems.push(("pack".into(), e.to_string(), vec![], vec![])),
                }
                off += len;
            }
        }

        // 2. Chunk locations.
        let mut chunk_len: HashMap<Hash, u32> = HashMap::new();
        let mut unreferenced_in_bucket: Vec<(Hash, pack::ChunkLoc)> = Vec::new();
        // Chunks whose piece a collection deleted (a blob's spare, or a
        // deleted blob's piece this index kept its own copy in): reads find
        // them through a content object (`Store::relocate`), and so does
        // the check after the recipes, repairing the index as a read would.
        let mut gone_blocks: HashSet<(u32, u64)> = HashSet::new();
        let mut relocatable: Vec<(Hash, pack::ChunkLoc)> = Vec::new();
        // Whether the block at `loc` holds chunk `hash` there (a block in
        // the bucket is read, through the cache, and checked once).
        let mut check_chunk = |hash: Hash,
                               loc: &pack::ChunkLoc,
                               good: &mut GoodBlocks,
                               problems: &mut Problems| {
            if gone_blocks.contains(&loc.block_key()) {
                relocatable.push((hash, *loc));
                return;
            }
            if in_bucket(loc.pack) && !good.contains_key(&loc.block_key()) {
                let what = || format!("block at pack {} offset {}", loc.pack, loc.block_offset);
                let entries = good.entry(loc.block_key()).or_default();
                match self
                    .read_record(loc.pack, loc.block_offset, loc.block_len)
                    .and_then(|rec| pack::decode_block(&rec, &what))
                {
                    Ok(b) => {
                        let mut at = 0u32;
                        for (h, clen) in b.entries {
                            entries.insert(h, (at, clen));
                            at += clen;
                        }
                    }
                    Err(_) if self.piece_missing(loc) => {
                        gone_blocks.insert(loc.block_key());
                        relocatable.push((hash, *loc));
                        return;
                    }
                    Err(e) => problems.push(("pack".into(), e.to_string(), vec![], vec![])),
                }
            }
            let held = good
                .get(&(loc.pack, loc.block_offset))
                .and_then(|b| b.get(&hash));
            if held != Some(&(loc.offset_in_block, loc.len)) {
                problems.push((
                    "chunk".into(),
                    format!(
                        "chunk {} is not readable at pack {} offset {} (damaged record, or wrong location)",
                        hex::encode(hash),
                        loc.pack,
                        loc.block_offset
                    ),
                    vec![hash],
                    vec![],
                ));
            }
        };
        // Every chunk record's reference count, checked in step 4.
        let mut counts: BTreeMap<Hash, i64> = BTreeMap::new();
        for item in snap.iterator_cf(cf(db, CF_CHUNKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let hash: Hash = k[..]
                .try_into()
                .map_err(|_| Error::DataLoss("bad chunk key".into()))?;
            let e = ChunkEntry::decode(&v)?;
            counts.insert(hash, e.refs);
            let Some(loc) = e.loc else {
                continue;
            };
            r.chunks += 1;
            chunk_len.insert(hash, loc.len);
            // A chunk with no references, in the bucket: its piece may be
            // collected already (a deleted blob's, another daemon's
            // collection; the next local gc drops the record). Checked
            // after the recipes only if one names it (a count that drifted).
            if in_bucket(loc.pack) && e.refs <= 0 {
                unreferenced_in_bucket.push((hash, loc));
                continue;
            }
            check_chunk(hash, &loc, &mut good, &mut problems);
        }

        // 3. Recipes, counting references.
        let mut refs: HashMap<Hash, u64> = HashMap::new();
        let mut contents: BTreeMap<Digest, Content> = BTreeMap::new();
        let mut prefixes: HashMap<Digest, Option<Hash>> = HashMap::new();
        let mut users: HashMap<Hash, Vec<Digest>> = HashMap::new();
        for item in snap.iterator_cf(cf(db, CF_RECIPES), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            if k.len() != 32 {
                continue; // a page; read through its content below
            }
            let digest = Digest(k[..].try_into().expect("32 bytes"));
            let content = Content::decode(&v)?;
            let plain_pages = content.page_starts.len() as u32;
            // A variant's plain pages are its base's, checked with the base.
            let first = if content.is_based() { plain_pages } else { 0 };
            let raw_starts: &[u64] = content.wrap.as_ref().map_or(&[], |w| &w.raw_page_starts);
            let (mut total, mut raw_total) = (0u64, 0u64);
            if content.is_based() {
                total = content.recipe_size();
            }
            let mut prefix = PrefixKey::default();
            for page in first..content.page_count() {
                let segs = snap
                    .get_pinned_cf(cf(db, CF_RECIPES), super::index::page_key(&digest, page))?
                    .ok_or_else(|| {
                        Error::DataLoss(format!("recipe page {page} of {digest} is missing"))
                    })
                    .and_then(|p| decode_page(&p));
                let segs = match segs {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push((
                            "recipe".into(),
                            format!("{digest}: {e}"),
                            vec![],
                            vec![digest],
                        ));
                        continue;
                    }
                };
                let (start, at) = if page < plain_pages {
                    (content.page_starts[page as usize], &mut total)
                } else {
                    (raw_starts[(page - plain_pages) as usize], &mut raw_total)
                };
                if start != *at {
                    problems.push((
                        "recipe".into(),
                        format!("{digest}: page {page} starts at the wrong offset"),
                        vec![],
                        vec![digest],
                    ));
                }
                for s in segs {
                    *at += s.len();
                    if page < plain_pages {
                        prefix.segment(&s);
                    }
                    if let Segment::Chunk { hash, len } = s {
                        *refs.entry(hash).or_default() += 1;
                        let u = users.entry(hash).or_default();
                        if u.last() != Some(&digest) {
                            u.push(digest);
                        }
                        match chunk_len.get(&hash) {
                            None => problems.push(("recipe".into(), format!("{digest} refers to chunk {} which is not in the index", hex::encode(hash)), vec![hash], vec![digest])),
                            Some(&l) if l != len => problems.push(("recipe".into(), format!("{digest} refers to chunk {} with length {len}, the index says {l}", hex::encode(hash)), vec![hash], vec![digest])),
                            _ => {}
                        }
                    }
                }
            }
            if total != content.recipe_size() {
                problems.push((
                    "recipe".into(),
                    format!(
                        "{digest}: the recipe rebuilds {total} bytes, its record says {}",
                        content.recipe_size()
                    ),
                    vec![],
                    vec![digest],
                ));
            }
            if let Some(w) = &content.wrap {
                if let Some(e) = check_plan(&snap, db, &digest, &content, w, raw_total) {
                    problems.push((
                        "recipe".into(),
                        format!("{digest}: {e}"),
                        vec![],
                        vec![digest],
                    ));
                }
            }
            contents.insert(digest, content);
            prefixes.insert(digest, prefix.key());
        }
        r.contents = contents.len() as u64;

        // 3a. Shared plain recipes: a variant's base is a plain content with
        // the same pages, counting its variants; no content is held by
        // nothing.
        let mut variants: HashMap<Digest, u32> = HashMap::new();
        for (d, c) in &contents {
            let Some(base) = c.base() else { continue };
            *variants.entry(base).or_default() += 1;
            let fault = match contents.get(&base) {
                None => Some("its base is not stored".to_string()),
                Some(b) if b.wrap.is_some() => Some("its base is itself compressed".into()),
                Some(b) if b.page_starts != c.page_starts || b.size != c.recipe_size() => {
                    Some("its recipe record does not match its base's".into())
                }
                Some(_) => None,
            };
            if let Some(f) = fault {
                problems.push((
                    "recipe".into(),
                    format!("{d} shares the plain recipe of {base}: {f}"),
                    vec![],
                    vec![*d],
                ));
            }
        }
        for (d, c) in &contents {
            let n = variants.get(d).copied().unwrap_or(0);
            if n != c.variants {
                problems.push((
                    "recipe".into(),
                    format!(
                        "{d}: {n} compressed blobs share its recipe, its record says {}",
                        c.variants
                    ),
                    vec![],
                    vec![*d],
                ));
            }
        }

        // 3b. Prefix entries name contents that begin so (stores written
        // before prefix entries existed have none for older contents).
        for item in snap.iterator_cf(cf(db, CF_PREFIXES), rocksdb::IteratorMode::Start) {
            let (k, _) = item?;
            let (key, digest) = match (<[u8; 32]>::try_from(&k[..k.len().min(32)]), k.get(32..)) {
                (Ok(key), Some(d)) if d.len() == 32 => {
                    (key, Digest(d.try_into().expect("32 bytes")))
                }
                _ => {
                    problems.push((
                        "prefix".into(),
                        format!("malformed prefix entry {}", hex::encode(&k)),
                        vec![],
                        vec![],
                    ));
                    continue;
                }
            };
            match prefixes.get(&digest) {
                None => problems.push((
                    "prefix".into(),
                    format!("prefix entry for {digest}, which has no recipe"),
                    vec![],
                    vec![digest],
                )),
                Some(k) if *k != Some(key) => problems.push((
                    "prefix".into(),
                    format!("prefix entry for {digest} does not match how its recipe begins"),
                    vec![],
                    vec![digest],
                )),
                _ => {}
            }
        }

        // 3c. Conversion marks name contents still kept as received.
        let marks = snap.iterator_cf(
            cf(db, super::index::CF_META),
            rocksdb::IteratorMode::From(super::index::MARK, rocksdb::Direction::Forward),
        );
        for item in marks {
            let (k, _) = item?;
            let Some(d) = k.strip_prefix(super::index::MARK) else {
                break;
            };
            let Ok(d) = <[u8; 32]>::try_from(d) else {
                problems.push((
                    "recipe".into(),
                    format!("malformed conversion mark {}", hex::encode(&k)),
                    vec![],
                    vec![],
                ));
                continue;
            };
            let digest = Digest(d);
            let plain = contents
                .get(&digest)
                .map(|c| c.wrap.is_none() && c.layout == 0);
            if plain != Some(true) {
                problems.push((
                    "recipe".into(),
                    format!(
                        "conversion mark for {digest}, which {}",
                        if plain.is_none() {
                            "has no recipe"
                        } else {
                            "is not kept as received"
                        }
                    ),
                    vec![],
                    vec![digest],
                ));
            }
        }

        for (hash, loc) in unreferenced_in_bucket {
            if refs.get(&hash).is_some_and(|&n| n > 0) {
                check_chunk(hash, &loc, &mut good, &mut problems);
            }
        }
        // A base's chunks are placed by its variants' objects too (a base
        // made for a compressed blob has none of its own).
        let mut variants: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for (d, c) in &contents {
            if let Some(b) = c.base() {
                variants.entry(b).or_default().push(*d);
            }
        }
        for (hash, loc) in std::mem::take(&mut relocatable) {
            // Unreferenced: its piece may well be collected (see above).
            let Some(us) = users.get(&hash) else {
                continue;
            };
            // Placed anew meanwhile (a relocation moves the other chunks of
            // the block it reads too).
            if super::chunk_entry::location(db, &hash)? != Some(loc) {
                r.relocated += 1;
                continue;
            }
            let mut found = Ok(false);
            for d in us.iter().chain(
                us.iter()
                    .flat_map(|u| variants.get(u).into_iter().flatten()),
            ) {
                found = self.relocate(&hash, loc.len, d, &loc).map(|p| p.is_some());
                if !matches!(found, Ok(false)) {
                    break;
                }
            }
            match found {
                Ok(true) => r.relocated += 1,
                Ok(false) => problems.push((
                    "chunk".into(),
                    format!(
                        "chunk {} is in a piece gone from the bucket, and no content object places it elsewhere",
                        hex::encode(hash)
                    ),
                    vec![hash],
                    vec![],
                )),
                Err(e) => problems.push(("chunk".into(), e.to_string(), vec![hash], vec![])),
            }
        }

        // 4. Refcounts against the references counted.
        let mut seen_rc = HashSet::new();
        let mut unreferenced = 0u64;
        for (&hash, &n) in &counts {
            seen_rc.insert(hash);
            if n == 0 {
                unreferenced += 1;
            }
            let want = refs.get(&hash).copied().unwrap_or(0);
            if n != want as i64 {
                problems.push((
                    "refcount".into(),
                    format!(
                        "chunk {} has refcount {n}, recipes reference it {want} times",
                        hex::encode(hash)
                    ),
                    vec![hash],
                    vec![],
                ));
            }
            if !chunk_len.contains_key(&hash) {
                problems.push((
                    "refcount".into(),
                    format!(
                        "refcount for chunk {} which is not in the index",
                        hex::encode(hash)
                    ),
                    vec![],
                    vec![],
                ));
            }
        }
        for (hash, n) in &refs {
            if !seen_rc.contains(hash) {
                problems.push((
                    "refcount".into(),
                    format!(
                        "chunk {} is referenced {n} times but has no refcount",
                        hex::encode(hash)
                    ),
                    vec![*hash],
                    vec![],
                ));
            }
        }

        // 5. Blob records, holders, counters.
        let mut holders: HashMap<Digest, u32> = HashMap::new();
        let mut names: HashMap<Digest, Vec<String>> = HashMap::new();
        let mut logical = 0u64;
        let mut logical_stream = 0u64;
        for item in snap.iterator_cf(cf(db, CF_BLOBS), rocksdb::IteratorMode::Start) {
            let (k, _) = item?;
            r.blobs += 1;
            let split = k.len().saturating_sub(33);
            let (ns, d) = (
                String::from_utf8_lossy(&k[..split]).to_string(),
                &k[split + 1..],
            );
            let digest = Digest(
                d.try_into()
                    .map_err(|_| Error::DataLoss("bad blob key".into()))?,
            );
            *holders.entry(digest).or_default() += 1;
            names
                .entry(digest)
                .or_default()
                .push(format!("{ns}/{digest}"));
            match contents.get(&digest) {
                Some(c) => {
                    logical += c.size;
                    logical_stream += c.stream_bytes();
                }
                None => problems.push((
                    "blob".into(),
                    format!("{ns}/{digest} has no recipe"),
                    vec![],
                    vec![],
                )),
            }
        }
        for (d, c) in &contents {
            let h = holders.get(d).copied().unwrap_or(0);
            if h == 0 && c.variants == 0 {
                problems.push((
                    "blob".into(),
                    format!("{d}: no namespace holds it and no compressed blob shares it"),
                    vec![],
                    vec![*d],
                ));
            }
            if h != c.holders {
                problems.push((
                    "blob".into(),
                    format!("{d}: {h} namespaces hold it, its record says {}", c.holders),
                    vec![],
                    vec![*d],
                ));
            }
        }
        let counted = Counters {
            blobs: r.blobs,
            logical_bytes: logical,
            logical_stream_bytes: logical_stream,
            contents: r.contents,
            chunks: r.chunks,
            chunk_plain_bytes: chunk_len.values().map(|&l| l as u64).sum(),
            literal_bytes: contents.values().map(|c| c.literal_bytes).sum(),
            unreferenced_chunks: unreferenced,
            pack_bytes: kept.pack_bytes,
            rebuild_bytes: contents
                .values()
                .map(|c| c.wrap.as_ref().map_or(0, |w| w.extra_bytes))
                .sum(),
            by_strategy: {
                let mut b = [0u64; 5];
                for c in contents.values() {
                    b[c.strategy() as usize] += 1;
                }
                b
            },
        };
        if counted != kept {
            problems.push((
                "counters".into(),
                format!("store counters {kept:?} differ from the index {counted:?}"),
                vec![],
                vec![],
            ));
        }

        // 6. Deep: rebuild every content and hash it.
        if deep {
            for (d, c) in &contents {
                let mut sha = Sha256::new();
                let res = self.read_range(d, c, 0, 0, &mut |p| {
                    sha.update(p);
                    Ok(true)
                });
                r.deep_checked += 1;
                match res {
                    Ok(()) if Digest(sha.finalize().into()) == *d => {}
                    Ok(()) => problems.push((
                        "digest".into(),
                        format!("{d} rebuilds to different bytes"),
                        vec![],
                        vec![*d],
                    )),
                    Err(e) => problems.push((
                        "digest".into(),
                        format!("{d} cannot be rebuilt: {e}"),
                        vec![],
                        vec![*d],
                    )),
                }
            }
        }

        // Name the blobs each fault touches.
        for (kind, detail, hashes, digests) in problems {
            let mut ds: Vec<Digest> = digests;
            for h in &hashes {
                ds.extend(users.get(h).into_iter().flatten().copied());
            }
            ds.sort();
            ds.dedup();
            let blobs = ds
                .iter()
                .flat_map(|d| {
                    names
                        .get(d)
                        .cloned()
                        .unwrap_or_else(|| vec![format!("(no namespace)/{d}")])
                })
                .collect();
            r.problems.push(Problem {
                kind,
                detail,
                blobs,
            });
        }
        Ok(r)
    }
}

/// A compressed blob's plan: present, decodable, and consistent with its
/// recipes and size. Returns what is wrong.
fn check_plan(
    snap: &rocksdb::Snapshot,
    db: &rocksdb::DB,
    digest: &Digest,
    content: &Content,
    w: &super::index::Wrap,
    raw_total: u64,
) -> Option<String> {
    let rec = match snap.get_pinned_cf(cf(db, CF_RECIPES), super::index::plan_key(digest)) {
        Ok(Some(r)) => r,
        Ok(None) => return Some("its rebuild plan is missing".into()),
        Err(e) => return Some(format!("reading its rebuild plan: {e}")),
    };
    let plan = match crate::codec::plan::Plan::decode(&rec) {
        Ok(p) => p,
        Err(e) => return Some(e.to_string()),
    };
    let plain: u64 = plan.parts.iter().map(|p| p.plain_consumed()).sum();
    let raw: u64 = plan.parts.iter().map(|p| p.raw_consumed()).sum();
    if plan.out_len() != content.size {
        return Some(format!(
            "its plan rebuilds {} bytes, the blob has {}",
            plan.out_len(),
            content.size
        ));
    }
    if plain != w.recipe_size || raw != w.raw_size || raw_total != w.raw_size {
        return Some(format!(
            "its plan reads {plain} plain and {raw} raw bytes; the recipes hold {} and {raw_total}",
            w.recipe_size
        ));
    }
    None
}
