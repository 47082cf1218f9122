//! The RocksDB index: column families, keys and value records.
//!
//! | cf        | key                         | value                                  |
//! |-----------|-----------------------------|----------------------------------------|
//! | blobs     | namespace \0 sha256[32]     | BlobMeta (JSON: media type, labels, times) |
//! | recipes   | sha256[32]                  | Content (size, holders, page starts)   |
//! | recipes   | sha256[32] page u32 BE      | one recipe page (plain pages, then raw) |
//! | recipes   | sha256[32] ff ff ff ff      | rebuild plan of a compressed blob      |
//! | chunks    | blake3[32]                  | ChunkEntry: ChunkLoc, recipe references (chunk_entry.rs) |
//! | refcounts | (empty since strata-2; the counts moved into `chunks`) |                      |
//! | packs     | pack id u32 BE              | u64: committed (durable) length        |
//! | meta      | name                        | format, chunk sizes, counters          |
//! | meta      | "convert" \0 sha256[32]    | empty: content kept as received, to convert |
//! | prefixes  | prefix name[32] sha256[32]  | empty: contents whose plain stream begins so (follow.rs) |
//! | ingests   | (reserved for resumable uploads) |                                   |

use crate::digest::Digest;
use crate::encoding::{put_varint, Reader};
use crate::error::{Error, Result};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, DB};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const CF_BLOBS: &str = "blobs";
pub const CF_RECIPES: &str = "recipes";
pub const CF_CHUNKS: &str = "chunks";
pub const CF_REFCOUNTS: &str = "refcounts";
pub const CF_PACKS: &str = "packs";
pub const CF_META: &str = "meta";
pub const CF_INGESTS: &str = "ingests";
pub const CF_PREFIXES: &str = "prefixes";
const ALL_CFS: [&str; 8] = [
    CF_BLOBS,
    CF_RECIPES,
    CF_CHUNKS,
    CF_REFCOUNTS,
    CF_PACKS,
    CF_META,
    CF_INGESTS,
    CF_PREFIXES,
];

pub const META_FORMAT: &[u8] = b"format";
pub const META_CHUNK_SIZES: &[u8] = b"chunk_sizes";
pub const META_COUNTERS: &[u8] = b"counters";
pub const FORMAT_VERSION: &str = "strata-2";
/// The format before chunk records carried their counts (migrated on open).
pub const FORMAT_V1: &str = "strata-1";
/// Conversion marks in `meta` (convert.rs): this, then the digest.
pub const MARK: &[u8] = b"convert\0";

/// The `meta` key marking a content for conversion.
pub fn mark_key(d: &Digest) -> Vec<u8> {
    let mut k = MARK.to_vec();
    k.extend_from_slice(&d.0);
    k
}

const MEMTABLE_BUDGET: usize = 32 << 20;
const BLOCK_CACHE_BYTES: usize = 16 << 20;
const MAX_WAL_BYTES: u64 = 64 << 20;

pub fn open(path: &Path) -> Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(3);
    // RocksDB's info log repeats every option of every family at each start
    // (about 100 KB a time, more than a small store's data); strata logs its
    // own events, so RocksDB's log keeps only warnings and errors.
    opts.set_log_level(rocksdb::LogLevel::Warn);
    // Bounded memory: all column families share one block cache and one memtable
    // budget (RocksDB's defaults are 64 MiB of memtable per family).
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
    // A family written once and then left (prefixes, packs) would otherwise
    // keep every log since alive: past this, its memtable is flushed.
    opts.set_max_total_wal_size(MAX_WAL_BYTES);
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut o = Options::default();
        o.set_write_buffer_size(MEMTABLE_BUDGET / 4);
        // Recipe pages carry tar headers as literals, blob records JSON:
        // zstd takes them to a fraction (snappy, the default, to about half).
        o.set_compression_type(DBCompressionType::Zstd);
        o.set_bottommost_compression_type(DBCompressionType::Zstd);
        // The index grows by appends of new keys and rarely rewrites them:
        // levels sized from the last one keep space amplification near 1.1.
        o.set_level_compaction_dynamic_level_bytes(true);
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&cache);
        // Most chunk lookups during ingest are for new chunks: a bloom filter
        // answers "absent" without touching disk.
        t.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&t);
        if *name == CF_CHUNKS {
            o.set_merge_operator_associative(
                super::chunk_entry::MERGE_NAME,
                super::chunk_entry::merge,
            );
        }
        ColumnFamilyDescriptor::new(*name, o)
    });
    DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
        if e.to_string().contains("lock") {
            Error::Unavailable(format!(
                "the index at {} is in use by another strata process ({e})",
                path.display()
            ))
        } else {
            Error::Index(e)
        }
    })
}

/// The memtable entries of `name`'s family (deletes count too).
fn memtable_entries(db: &DB, name: &str) -> Result<u64> {
    Ok(db
        .property_int_value_cf(cf(db, name), "rocksdb.num-entries-active-mem-table")?
        .unwrap_or(0))
}

/// Writes not yet flushed from memtables to tables, over every family.
pub fn unflushed_entries(db: &DB) -> Result<u64> {
    let mut n = 0;
    for name in ALL_CFS {
        n += memtable_entries(db, name)?;
    }
    Ok(n)
}

/// Flushes every column family whose memtable holds writes, so the log
/// they were written to can be deleted: a data directory at rest then holds
/// compressed tables, not a log the size of the burst that wrote it.
/// Durability does not depend on it (every commit's batch is already in a
/// synced log). Returns how many families it flushed.
pub fn flush_dirty(db: &DB) -> Result<usize> {
    let mut flushed = 0;
    for name in ALL_CFS {
        if memtable_entries(db, name)? > 0 {
            db.flush_cf(cf(db, name))?;
            flushed += 1;
        }
    }
    Ok(flushed)
}

/// A `meta` entry: its key without the prefix asked for, and its value.
pub type MetaEntry = (Box<[u8]>, Box<[u8]>);

/// The `meta` entries whose keys start with `prefix`, in key order: the key
/// without the prefix, and the value.
pub fn meta_prefixed<'a>(
    db: &'a DB,
    prefix: &'a [u8],
) -> impl Iterator<Item = Result<MetaEntry>> + 'a {
    db.iterator_cf(
        cf(db, CF_META),
        rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
    )
    .map(|item| item.map_err(Error::from))
    .take_while(move |item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
    .map(move |item| item.map(|(k, v)| (k[prefix.len()..].into(), v)))
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column family created at open")
}

pub fn blob_key(ns: &str, d: &Digest) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 33);
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(&d.0);
    k
}

pub fn ns_prefix(ns: &str) -> Vec<u8> {
    let mut k = ns.as_bytes().to_vec();
    k.push(0);
    k
}

/// Where a compressed blob's rebuild plan is kept: after every page.
pub fn plan_key(d: &Digest) -> [u8; 36] {
    page_key(d, u32::MAX)
}

pub fn page_key(d: &Digest, page: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&d.0);
    k[32..].copy_from_slice(&page.to_be_bytes());
    k
}

/// A `packs` entry: pack id and committed (durable) length.
pub fn decode_pack_entry(k: &[u8], v: &[u8]) -> Result<(u32, u64)> {
    let id = k
        .try_into()
        .map_err(|_| Error::DataLoss("bad pack key".into()))?;
    let len = v
        .try_into()
        .map_err(|_| Error::DataLoss("bad pack length".into()))?;
    Ok((u32::from_be_bytes(id), u64::from_le_bytes(len)))
}

/// Per-namespace facts about a blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BlobMeta {
    pub media_type: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl BlobMeta {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("BlobMeta serialises")
    }
    pub fn decode(b: &[u8]) -> Result<Self> {
        serde_json::from_slice(b)
            .map_err(|e| Error::DataLoss(format!("blob record is malformed: {e}")))
    }
}

/// One stored content (shared by every namespace that holds its digest).
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub size: u64,
    /// 0 raw, 1 tar, 2 tar then raw (see `split::Layout`).
    pub layout: u8,
    /// Namespaces holding a blob record for this digest.
    pub holders: u32,
    /// Compressed contents whose plain recipe is this one's (a plain tar
    /// stored once however many compressions of it are held): the content
    /// stays while `holders + variants > 0`, and with no holder it is no
    /// blob of any namespace, only their plain recipe.
    pub variants: u32,
    pub chunk_refs: u64,
    pub literal_bytes: u64,
    /// Bytes of the recipe pages in the index.
    pub recipe_bytes: u64,
    /// Where each page of the plain recipe starts (pages 0..n; the base's
    /// pages when the wrap is `based`, repeated here so a read needs no
    /// second record).
    pub page_starts: Vec<u64>,
    /// Compressed blobs: how they are kept (see `codec`).
    pub wrap: Option<Wrap>,
}

/// What a compressed blob keeps besides its plain recipe: its rebuild plan
/// (under `plan_key`) and a raw recipe (pages n..n+m) of the bytes kept as
/// received and of preflate corrections.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wrap {
    /// 1 gzip, 2 zstd.
    pub codec: u8,
    /// `codec::plan::Strategy` as a number.
    pub strategy: u8,
    /// Size of the plain recipe's stream.
    pub recipe_size: u64,
    /// The decoded tar's size and sha256, when every member decoded.
    pub plain_size: Option<u64>,
    pub diff_id: Option<[u8; 32]>,
    pub raw_size: u64,
    pub raw_page_starts: Vec<u64>,
    /// Bytes kept only to rebuild the compressed form: the plan and the raw
    /// stream (before chunk compression).
    pub extra_bytes: u64,
    /// The plain recipe is the content stored under `diff_id` (its pages,
    /// its chunk references), not pages of this digest: this content keeps
    /// only its plan and raw pages (numbered after the base's pages).
    pub based: bool,
}

impl Content {
    /// The content whose pages hold this one's plain recipe, when it is
    /// another's: a `based` compressed content's diff_id.
    pub fn base(&self) -> Option<Digest> {
        match &self.wrap {
            Some(Wrap {
                based: true,
                diff_id: Some(base),
                ..
            }) => Some(Digest(*base)),
            _ => None,
        }
    }

    /// The digest whose pages hold the plain recipe.
    pub fn plain_pages_of(&self, digest: &Digest) -> Digest {
        self.base().unwrap_or(*digest)
    }

    /// Its plain recipe's pages are another content's.
    pub fn is_based(&self) -> bool {
        self.base().is_some()
    }

    /// Both records describe the same recipe (holders aside).
    pub fn same_recipe(&self, other: &Content) -> bool {
        self.size == other.size
            && self.layout == other.layout
            && self.page_starts == other.page_starts
            && self.wrap == other.wrap
    }

    /// Pages of both recipes.
    pub fn page_count(&self) -> u32 {
        (self.page_starts.len() + self.wrap.as_ref().map_or(0, |w| w.raw_page_starts.len())) as u32
    }

    pub fn strategy(&self) -> crate::codec::plan::Strategy {
        use crate::codec::plan::Strategy;
        self.wrap
            .as_ref()
            .map_or(Strategy::None, |w| Strategy::from_index(w.strategy))
    }

    /// Bytes this content stands for in chunked streams: its plain stream
    /// (the tar inside a compressed blob) and whatever is kept raw. What dedup
    /// is measured against.
    pub fn stream_bytes(&self) -> u64 {
        self.recipe_size() + self.wrap.as_ref().map_or(0, |w| w.raw_size)
    }

    /// Length of the stream the plain recipe holds.
    pub fn recipe_size(&self) -> u64 {
        self.wrap.as_ref().map_or(self.size, |w| w.recipe_size)
    }

    /// Versions: 1 plain, 2 compressed, 3 plain with variants (1 then a
    /// varint), 4 compressed and `based` (2, base digest = diff_id). A store
    /// written before sharing holds only 1 and 2, which stay as they are.
    pub fn encode(&self) -> Vec<u8> {
        let version = match &self.wrap {
            None if self.variants > 0 => 3u8,
            None => 1,
            Some(w) if w.based => 4,
            Some(_) => 2,
        };
        let mut b = vec![version, self.layout];
        for v in [
            self.size,
            self.holders as u64,
            self.chunk_refs,
            self.literal_bytes,
            self.recipe_bytes,
        ] {
            put_varint(&mut b, v);
        }
        put_varint(&mut b, self.page_starts.len() as u64);
        let mut prev = 0;
        for &s in &self.page_starts {
            put_varint(&mut b, s - prev);
            prev = s;
        }
        if let Some(w) = &self.wrap {
            b.push(w.codec);
            b.push(w.strategy);
            for v in [
                w.recipe_size,
                w.plain_size.map_or(0, |s| s + 1),
                w.raw_size,
                w.extra_bytes,
            ] {
                put_varint(&mut b, v);
            }
            match &w.diff_id {
                Some(d) => {
                    b.push(1);
                    b.extend_from_slice(d);
                }
                None => b.push(0),
            }
            put_varint(&mut b, w.raw_page_starts.len() as u64);
            let mut prev = 0;
            for &s in &w.raw_page_starts {
                put_varint(&mut b, s - prev);
                prev = s;
            }
        } else if self.variants > 0 {
            put_varint(&mut b, self.variants as u64);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "content");
        let version = r.u8()?;
        if !(1..=4).contains(&version) {
            return Err(Error::DataLoss(
                "content record has an unknown version".into(),
            ));
        }
        let layout = r.u8()?;
        let size = r.varint()?;
        let holders = r.varint()? as u32;
        let chunk_refs = r.varint()?;
        let literal_bytes = r.varint()?;
        let recipe_bytes = r.varint()?;
        let n = r.varint()? as usize;
        let mut page_starts = Vec::with_capacity(n.min(1 << 20));
        let mut prev = 0u64;
        for _ in 0..n {
            prev = prev
                .checked_add(r.varint()?)
                .ok_or_else(|| Error::DataLoss("content record: page offsets overflow".into()))?;
            page_starts.push(prev);
        }
        let wrap = if version == 2 || version == 4 {
            let codec = r.u8()?;
            let strategy = r.u8()?;
            let recipe_size = r.varint()?;
            let plain_size = r.varint()?.checked_sub(1);
            let raw_size = r.varint()?;
            let extra_bytes = r.varint()?;
            let diff_id = match r.u8()? {
                0 => None,
                _ => Some(r.array::<32>()?),
            };
            let n = r.varint()? as usize;
            let mut raw_page_starts = Vec::with_capacity(n.min(1 << 20));
            let mut prev = 0u64;
            for _ in 0..n {
                prev = prev.checked_add(r.varint()?).ok_or_else(|| {
                    Error::DataLoss("content record: page offsets overflow".into())
                })?;
                raw_page_starts.push(prev);
            }
            let based = version == 4;
            if based && diff_id.is_none() {
                return Err(Error::DataLoss(
                    "content record: shares a plain recipe but names none".into(),
                ));
            }
            Some(Wrap {
                codec,
                strategy,
                recipe_size,
                plain_size,
                diff_id,
                raw_size,
                raw_page_starts,
                extra_bytes,
                based,
            })
        } else {
            None
        };
        let variants = if version == 3 { r.varint()? as u32 } else { 0 };
        Ok(Content {
            size,
            layout,
            holders,
            variants,
            chunk_refs,
            literal_bytes,
            recipe_bytes,
            page_starts,
            wrap,
        })
    }

    pub fn layout_name(&self) -> &'static str {
        match self.layout {
            1 => "tar",
            2 => "tar+raw",
            _ => "raw",
        }
    }
}

/// Store-wide figures, kept exact by updating them in every commit's batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub blobs: u64,
    pub logical_bytes: u64,
    pub contents: u64,
    pub chunks: u64,
    pub chunk_plain_bytes: u64,
    pub literal_bytes: u64,
    pub unreferenced_chunks: u64,
    /// Committed pack bytes (compressed chunk data and record headers).
    pub pack_bytes: u64,
    /// Bytes kept only to rebuild compressed blobs exactly (`Wrap::extra_bytes`).
    pub rebuild_bytes: u64,
    /// Contents by how they are kept (`codec::plan::Strategy` order).
    pub by_strategy: [u64; 5],
    /// Like `logical_bytes`, but counting each blob's chunked streams
    /// (`Content::stream_bytes`): the tar inside a compressed blob.
    pub logical_stream_bytes: u64,
}

impl Counters {
    const N: usize = 15;

    fn fields(&mut self) -> [&mut u64; Self::N] {
        let [s0, s1, s2, s3, s4] = &mut self.by_strategy;
        [
            &mut self.blobs,
            &mut self.logical_bytes,
            &mut self.contents,
            &mut self.chunks,
            &mut self.chunk_plain_bytes,
            &mut self.literal_bytes,
            &mut self.unreferenced_chunks,
            &mut self.pack_bytes,
            &mut self.rebuild_bytes,
            s0,
            s1,
            s2,
            s3,
            s4,
            &mut self.logical_stream_bytes,
        ]
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut c = *self;
        let mut b = Vec::new();
        for f in c.fields() {
            put_varint(&mut b, *f);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut c = Counters::default();
        let mut r = Reader::new(b, "counters");
        for f in c.fields() {
            // Records written before a field existed end early.
            if r.is_empty() {
                break;
            }
            *f = r.varint()?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let c = Content {
            size: 1 << 33,
            layout: 1,
            holders: 3,
            variants: 0,
            chunk_refs: 10,
            literal_bytes: 5,
            recipe_bytes: 77,
            page_starts: vec![0, 100, 1 << 32],
            wrap: None,
        };
        assert_eq!(Content::decode(&c.encode()).unwrap(), c);
        let mut w = c.clone();
        w.wrap = Some(Wrap {
            codec: 1,
            strategy: 1,
            recipe_size: 5000,
            plain_size: Some(0),
            diff_id: Some([9; 32]),
            raw_size: 12,
            raw_page_starts: vec![0, 7],
            extra_bytes: 40,
            based: false,
        });
        assert_eq!(Content::decode(&w.encode()).unwrap(), w);
        // Sharing: a base with variants, a variant on a base.
        let mut base = c.clone();
        base.variants = 2;
        assert_eq!(base.encode()[0], 3);
        assert_eq!(Content::decode(&base.encode()).unwrap(), base);
        let mut v = w.clone();
        v.wrap.as_mut().unwrap().based = true;
        assert_eq!(v.encode()[0], 4);
        assert_eq!(Content::decode(&v.encode()).unwrap(), v);
        assert_eq!(v.plain_pages_of(&Digest([1; 32])), Digest([9; 32]));
        assert_eq!(w.plain_pages_of(&Digest([1; 32])), Digest([1; 32]));
        // The records are on-disk format: these bytes never change. Records
        // without sharing keep the bytes of versions 1 and 2.
        let golden = [
            (&c, "01018080808020030a054d0300649cffffff0f"),
            (&w, "02018080808020030a054d0300649cffffff0f01018827010c28010909090909090909090909090909090909090909090909090909090909090909020007"),
            (&base, "03018080808020030a054d0300649cffffff0f02"),
            (&v, "04018080808020030a054d0300649cffffff0f01018827010c28010909090909090909090909090909090909090909090909090909090909090909020007"),
        ];
        for (rec, hex) in golden {
            assert_eq!(hex::encode(rec.encode()), hex);
            assert_eq!(&Content::decode(&hex::decode(hex).unwrap()).unwrap(), rec);
        }
        // A variant that names no base is damage, not a variant.
        let mut bad = hex::decode(golden[3].1).unwrap();
        let flag = bad.len() - 3 - 33;
        bad[flag] = 0;
        bad.drain(flag + 1..flag + 33);
        assert!(Content::decode(&bad).is_err());
        // Page offsets that overflow (found by fuzzing) are refused.
        let mut b = vec![1u8, 1];
        for v in [10, 1, 0, 0, 0, 2, u64::MAX, u64::MAX] {
            put_varint(&mut b, v);
        }
        assert!(Content::decode(&b).is_err());
        let n = Counters {
            blobs: 1,
            logical_bytes: 2,
            contents: 3,
            chunks: 4,
            chunk_plain_bytes: 5,
            literal_bytes: 6,
            unreferenced_chunks: 7,
            pack_bytes: 8,
            rebuild_bytes: 9,
            by_strategy: [1, 2, 3, 4, 5],
            logical_stream_bytes: 10,
        };
        assert_eq!(Counters::decode(&n.encode()).unwrap(), n);
    }
}
