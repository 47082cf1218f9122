//! The RocksDB index: column families, keys and value records.
//!
//! | cf        | key                         | value                                  |
//! |-----------|-----------------------------|----------------------------------------|
//! | blobs     | namespace \0 sha256[32]     | BlobMeta (JSON: media type, labels, times) |
//! | recipes   | sha256[32]                  | Content (size, holders, page starts)   |
//! | recipes   | sha256[32] page u32 BE      | one recipe page                        |
//! | chunks    | blake3[32]                  | ChunkLoc                               |
//! | refcounts | blake3[32]                  | u64: recipe references to the chunk    |
//! | packs     | pack id u32 BE              | u64: committed (durable) length        |
//! | meta      | name                        | format, chunk sizes, counters          |
//! | ingests   | (reserved for resumable uploads) |                                   |

use super::codec::{put_varint, Reader};
use crate::digest::Digest;
use crate::error::{Error, Result};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};
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
const ALL_CFS: [&str; 7] = [
    CF_BLOBS,
    CF_RECIPES,
    CF_CHUNKS,
    CF_REFCOUNTS,
    CF_PACKS,
    CF_META,
    CF_INGESTS,
];

pub const META_FORMAT: &[u8] = b"format";
pub const META_CHUNK_SIZES: &[u8] = b"chunk_sizes";
pub const META_COUNTERS: &[u8] = b"counters";
pub const FORMAT_VERSION: &str = "strata-1";

const MEMTABLE_BUDGET: usize = 32 << 20;
const BLOCK_CACHE_BYTES: usize = 16 << 20;

pub fn open(path: &Path) -> Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(3);
    // Bounded memory: all column families share one block cache and one memtable
    // budget (RocksDB's defaults are 64 MiB of memtable per family).
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut o = Options::default();
        o.set_write_buffer_size(MEMTABLE_BUDGET / 4);
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&cache);
        // Most chunk lookups during ingest are for new chunks: a bloom filter
        // answers "absent" without touching disk.
        t.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&t);
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
    pub chunk_refs: u64,
    pub literal_bytes: u64,
    /// Bytes of the recipe pages in the index.
    pub recipe_bytes: u64,
    pub page_starts: Vec<u64>,
}

impl Content {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![1u8, self.layout];
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
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "content");
        if r.u8()? != 1 {
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
            prev += r.varint()?;
            page_starts.push(prev);
        }
        Ok(Content {
            size,
            layout,
            holders,
            chunk_refs,
            literal_bytes,
            recipe_bytes,
            page_starts,
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
}

impl Counters {
    const N: usize = 8;

    fn fields(&mut self) -> [&mut u64; Self::N] {
        [
            &mut self.blobs,
            &mut self.logical_bytes,
            &mut self.contents,
            &mut self.chunks,
            &mut self.chunk_plain_bytes,
            &mut self.literal_bytes,
            &mut self.unreferenced_chunks,
            &mut self.pack_bytes,
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
            chunk_refs: 10,
            literal_bytes: 5,
            recipe_bytes: 77,
            page_starts: vec![0, 100, 1 << 32],
        };
        assert_eq!(Content::decode(&c.encode()).unwrap(), c);
        let n = Counters {
            blobs: 1,
            logical_bytes: 2,
            contents: 3,
            chunks: 4,
            chunk_plain_bytes: 5,
            literal_bytes: 6,
            unreferenced_chunks: 7,
            pack_bytes: 8,
        };
        assert_eq!(Counters::decode(&n.encode()).unwrap(), n);
    }
}
