//! The store stage: chunks in pack files, recipes and blobs in the RocksDB index.
//!
//! Commit order (invariant 1): pack bytes are fsynced before the one WriteBatch
//! that makes them reachable; the batch is written with a synced WAL. All
//! commits and deletes take one lock, so refcounts and counters are
//! read-modify-write without races; the heavy work (splitting, hashing,
//! compressing) happens before it, in parallel.

pub mod bucket_gc;
pub mod cache;
pub mod chunk_entry;
mod commit;
mod compact;
pub mod convert;
mod delete;
pub mod densify;
mod follow;
pub mod gc;
mod hasher;
pub mod index;
mod ingest;
mod meta;
mod moves;
pub mod pack;
pub mod packset;
mod publish;
mod read;
mod readahead;
pub mod recipe;
pub mod remote;
mod spares;
mod sync;
pub mod uploads;
pub mod verify;

pub use index::{BlobMeta, Content, Counters};
pub use ingest::{Ingest, IngestOptions, PushOutcome};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::split::{ChunkSizes, Cutter};
use cache::Lru;
use index::{cf, CF_BLOBS, CF_META, CF_PACKS, CF_RECIPES};
use packset::PackSet;
use parking_lot::Mutex;
use recipe::Segment;
use rocksdb::DB;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Used when the store is created; an existing store keeps its own.
    pub chunk_sizes: ChunkSizes,
    pub zstd_level: i32,
    /// New chunks are compressed together in blocks of about this many plain bytes.
    pub block_bytes: usize,
    pub max_pack_bytes: u64,
    /// zstd level of dense packs (densify.rs), which pushes leave behind
    /// once they pause; 0 leaves packs as ingest wrote them.
    pub dense_level: i32,
    /// Plain bytes per block in dense packs.
    pub dense_block_bytes: usize,
    pub cache_bytes: usize,
    /// How compressed blobs are decoded and proven (bomb ratio, preflate).
    pub unwrap: crate::codec::unwrap::UnwrapConfig,
    /// Free space kept on the data directory's disk: a push or upload write
    /// that would go below it fails with ResourceExhausted, so RocksDB's log
    /// and memtable flushes (up to 32 MiB) never meet ENOSPC, which stops the
    /// index until a restart. Deletes and GC ignore it. 0 keeps none.
    pub min_free_bytes: u64,
    /// containerd uploads of gzip and zstd blobs are stored as received and
    /// marked for a background conversion (`convert.rs`).
    pub defer_uploads: bool,
    /// Packs and records also in an S3-compatible bucket (`--store s3://`).
    pub remote: Option<remote::RemoteConfig>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            chunk_sizes: ChunkSizes::default(),
            zstd_level: 3,
            block_bytes: 2 << 20,
            max_pack_bytes: 1 << 30,
            dense_level: 9,
            dense_block_bytes: 2 << 20,
            cache_bytes: 32 << 20,
            unwrap: Default::default(),
            min_free_bytes: 64 << 20,
            defer_uploads: false,
            remote: None,
        }
    }
}

/// A handle to an open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: DB,
    packs: PackSet,
    /// Decoded blocks by (pack, offset).
    blocks: Lru<(u32, u64), Vec<u8>>,
    /// Decoded recipe pages by (content digest, page).
    pages: Lru<(Digest, u32), Vec<Segment>>,
    /// Rebuild plans of compressed blobs.
    plans: Lru<Digest, crate::codec::plan::Plan>,
    /// Rebuilds paused where a read stopped, for the reader's next range.
    cursors: Mutex<Vec<readahead::Slot>>,
    cutter: Cutter,
    cfg: StoreConfig,
    /// The commit lock, and the figures it keeps exact.
    counters: Mutex<Counters>,
    /// Chunks that ingests in progress reuse: garbage collection skips them.
    pins: Mutex<HashMap<pack::Hash, u32>>,
    /// One garbage collection at a time.
    gc_lock: Mutex<()>,
    /// Set at shutdown: a pack rewrite in progress gives up (densify.rs).
    stop_rewrites: std::sync::atomic::AtomicBool,
    /// Garbage collections that dropped chunks (see `follow::Follow::epoch`).
    chunk_drops: std::sync::atomic::AtomicU64,
    /// Upload refs being written by a stream (namespace \0 ref).
    upload_locks: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// Reads hold their digest's shard shared; a conversion's swap, exclusively.
    swap_locks: [parking_lot::RwLock<()>; 64],
    /// Held around loading and caching one page or plan (see `forget_recipe`).
    page_locks: [parking_lot::RwLock<()>; 16],
    convert: convert::Signal,
    /// The bucket (`--store s3://`), this index's writer id there, the
    /// object names of foreign pack ids, and the sync rounds' state.
    remote: Option<remote::Remote>,
    writer: [u8; 8],
    foreign: Mutex<HashMap<u32, String>>,
    object_sizes: Mutex<HashMap<String, u64>>,
    /// Bucket mode: one reader or writer of the moves at a time
    /// (`moves.rs`); a leaf. And how many moves were applied since open.
    moves_lock: Mutex<()>,
    moves_applied: std::sync::atomic::AtomicU64,
    /// Pieces the bucket's collection marked (`bucket_gc.rs`).
    condemned: parking_lot::RwLock<bucket_gc::Condemned>,
    sync: Mutex<sync::SyncState>,
}

/// What a client sees of one blob.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub namespace: String,
    pub digest: Digest,
    pub content: Content,
    pub meta: BlobMeta,
}

impl BlobInfo {
    pub fn codec(&self) -> &'static str {
        match self.content.wrap.as_ref().map(|w| w.codec) {
            Some(1) => "gzip",
            Some(2) => "zstd",
            Some(_) => "unknown",
            None => "",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub counters: Counters,
    pub bytes_on_disk: u64,
    pub index_bytes: u64,
    pub pack_file_bytes: u64,
    /// Blobs stored as received, waiting for conversion (`convert.rs`).
    pub pending_conversions: u64,
    /// With a bucket: what it holds.
    pub bucket: Option<BucketStats>,
}

#[derive(Debug, Clone, Default)]
pub struct BucketStats {
    pub url: String,
    pub objects: u64,
    pub bytes: u64,
    pub pack_bytes: u64,
    pub cache_bytes: u64,
}

impl Stats {
    pub fn unique_plain_bytes(&self) -> u64 {
        self.counters.chunk_plain_bytes + self.counters.literal_bytes
    }
    pub fn dedup_ratio(&self) -> f64 {
        ratio(
            self.counters.logical_stream_bytes,
            self.unique_plain_bytes(),
        )
    }
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.counters.chunk_plain_bytes, self.counters.pack_bytes)
    }
}

/// a / b, or 0 when b is 0.
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Decoded recipe pages kept for ranged reads (weighed by their literal bytes and segments).
const PAGE_CACHE_BYTES: usize = 8 << 20;
const PLAN_CACHE_BYTES: usize = 1 << 20;
/// Free space below which the store refuses to open (see `Store::open`).
const MIN_FREE_TO_OPEN: u64 = 1 << 20;

/// Bucket mode: the largest local pack (then dropped: the bucket holds it).
const BUCKET_MODE_PACK_BYTES: u64 = 256 << 20;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Namespaces follow containerd's rules: letters, digits and `._-`, at most 76.
pub fn validate_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        && ns.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "namespace {ns:?}: use 1-76 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

impl Inner {
    fn pin(&self, h: &pack::Hash) {
        *self.pins.lock().entry(*h).or_default() += 1;
    }

    fn chunk_drops(&self) -> u64 {
        self.chunk_drops.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn unpin(&self, h: &pack::Hash) {
        let mut p = self.pins.lock();
        if let Some(n) = p.get_mut(h) {
            *n -= 1;
            if *n == 0 {
                p.remove(h);
            }
        }
    }
}

impl Store {
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<Store> {
        cfg.chunk_sizes.validate().map_err(Error::InvalidArgument)?;
        if !(1..=22).contains(&cfg.zstd_level) {
            return Err(Error::InvalidArgument(format!(
                "zstd level {} is outside 1..=22",
                cfg.zstd_level
            )));
        }
        if !(0..=22).contains(&cfg.dense_level) {
            return Err(Error::InvalidArgument(format!(
                "dense zstd level {} is outside 0..=22 (0: off)",
                cfg.dense_level
            )));
        }
        if !(64 << 10..=pack::MAX_BLOCK_PLAIN as usize).contains(&cfg.dense_block_bytes) {
            return Err(Error::InvalidArgument(format!(
                "dense block size {} is outside 64 KiB..=64 MiB",
                cfg.dense_block_bytes
            )));
        }
        for sub in ["", "index", "packs", "ingest"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        }
        // RocksDB aborts the process when it cannot write its log at open:
        // refuse to start instead, saying why.
        let free = packset::free_bytes(dir)?;
        if free < MIN_FREE_TO_OPEN {
            return Err(Error::ResourceExhausted(format!(
                "the disk holding {} has {free} bytes free; strata needs at least {MIN_FREE_TO_OPEN} to open its index",
                dir.display()
            )));
        }
        let db = index::open(&dir.join("index"))?;
        let meta = cf(&db, CF_META);
        let mut cfg = cfg;
        let (remote, writer) = remote_open(&db, dir, &mut cfg)?;
        if remote.is_some() {
            // Full packs leave the data directory (the bucket holds them):
            // smaller ones leave sooner.
            cfg.max_pack_bytes = cfg.max_pack_bytes.min(BUCKET_MODE_PACK_BYTES);
        }
        let chunk_sizes = match db.get_cf(meta, index::META_CHUNK_SIZES)? {
            Some(v) => {
                let s = String::from_utf8_lossy(&v).to_string();
                let stored = ChunkSizes::parse(&s).map_err(Error::DataLoss)?;
                if stored != cfg.chunk_sizes {
                    tracing::warn!(%stored, requested = %cfg.chunk_sizes, "the store keeps the chunk sizes it was created with");
                }
                stored
            }
            None => {
                db.put_cf(meta, index::META_FORMAT, index::FORMAT_VERSION)?;
                db.put_cf(meta, index::META_CHUNK_SIZES, cfg.chunk_sizes.to_string())?;
                cfg.chunk_sizes
            }
        };
        if let Some(f) = db.get_cf(meta, index::META_FORMAT)? {
            if f == index::FORMAT_V1.as_bytes() {
                let n = chunk_entry::migrate_from_v1(&db)?;
                tracing::info!(dir = %dir.display(), refcounts = n, "index migrated from strata-1 to strata-2: chunk records carry their counts");
            } else if f != index::FORMAT_VERSION.as_bytes() {
                return Err(Error::FailedPrecondition(format!(
                    "{} holds a store of format {:?}; this strata reads {}",
                    dir.display(),
                    String::from_utf8_lossy(&f),
                    index::FORMAT_VERSION
                )));
            }
        }
        let counters = match db.get_cf(meta, index::META_COUNTERS)? {
            Some(v) => Counters::decode(&v)?,
            None => Counters::default(),
        };
        let mut committed = HashMap::new();
        for item in db.iterator_cf(cf(&db, CF_PACKS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let (id, len) = index::decode_pack_entry(&k, &v)?;
            committed.insert(id, len);
        }
        let dense = densify::load_dense(&db)?;
        let packs = PackSet::open(&dir.join("packs"), cfg.max_pack_bytes, &committed, dense)?;
        tracing::info!(dir = %dir.display(), blobs = counters.blobs, chunks = counters.chunks, %chunk_sizes, "store open");
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                packs,
                blocks: Lru::new(cfg.cache_bytes, |b| b.len()),
                pages: Lru::new(PAGE_CACHE_BYTES, |p| {
                    p.iter()
                        .map(|s| match s {
                            Segment::Literal(b) => b.len() + 48,
                            Segment::Chunk { .. } => 48,
                        })
                        .sum()
                }),
                plans: Lru::new(PLAN_CACHE_BYTES, |p| {
                    p.parts.len() * 64
                        + p.parts
                            .iter()
                            .map(|x| match x {
                                crate::codec::plan::Part::Literal(b) => b.len(),
                                _ => 0,
                            })
                            .sum::<usize>()
                }),
                cursors: Mutex::new(Vec::new()),
                cutter: Cutter::new(chunk_sizes),
                cfg,
                counters: Mutex::new(counters),
                upload_locks: Mutex::new(Default::default()),
                pins: Mutex::new(HashMap::new()),
                chunk_drops: Default::default(),
                gc_lock: Mutex::new(()),
                stop_rewrites: Default::default(),
                swap_locks: std::array::from_fn(|_| Default::default()),
                page_locks: std::array::from_fn(|_| Default::default()),
                convert: Default::default(),
                remote,
                writer,
                foreign: Default::default(),
                object_sizes: Default::default(),
                moves_lock: Default::default(),
                moves_applied: Default::default(),
                condemned: Default::default(),
                sync: Default::default(),
            }),
        };
        if store.remote().is_some() {
            store.load_gone()?;
            store.evict_full_packs();
            // Rebuild what the bucket holds that this index lacks (all of it
            // for an empty data directory) before serving.
            match store.sync_from_bucket(true) {
                Ok(r) => tracing::info!(?r, "index brought up to date with the bucket"),
                Err(e) => {
                    tracing::warn!(error = %e, "the bucket could not be read at start; serving what the index holds")
                }
            }
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Live handles to this store (this one included).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    pub fn chunk_sizes(&self) -> ChunkSizes {
        self.inner.cutter.sizes()
    }

    fn db(&self) -> &DB {
        &self.inner.db
    }

    pub fn content(&self, digest: &Digest) -> Result<Option<Content>> {
        match self.db().get_cf(cf(self.db(), CF_RECIPES), digest.0)? {
            Some(v) => Ok(Some(Content::decode(&v)?)),
            None => Ok(None),
        }
    }

    pub fn stat(&self, ns: &str, digest: &Digest) -> Result<BlobInfo> {
        match self.stat_local(ns, digest) {
            // With a bucket, another daemon may have pushed it: look there
            // (at most once a second), then here again.
            Err(Error::NotFound(m)) if self.remote().is_some() => match self.sync_on_miss() {
                Ok(true) => self.stat_local(ns, digest),
                Ok(false) => Err(Error::NotFound(m)),
                Err(e) => Err(Error::Unavailable(format!(
                    "{m}, and the bucket could not be asked: {e}"
                ))),
            },
            other => other,
        }
    }

    fn stat_local(&self, ns: &str, digest: &Digest) -> Result<BlobInfo> {
        validate_namespace(ns)?;
        let not_found = || Error::NotFound(format!("blob {digest} not found in namespace {ns:?}"));
        let meta = self
            .db()
            .get_cf(cf(self.db(), CF_BLOBS), index::blob_key(ns, digest))?
            .ok_or_else(not_found)?;
        let content = self.content(digest)?.ok_or_else(|| {
            Error::DataLoss(format!(
                "blob {digest} is recorded but its recipe is missing"
            ))
        })?;
        Ok(BlobInfo {
            namespace: ns.to_string(),
            digest: *digest,
            content,
            meta: BlobMeta::decode(&meta)?,
        })
    }

    /// Blobs of a namespace whose labels pass every filter ("key" or "key=value").
    pub fn list(&self, ns: &str, label_filters: &[String]) -> Result<Vec<BlobInfo>> {
        validate_namespace(ns)?;
        let prefix = index::ns_prefix(ns);
        let mut out = Vec::new();
        let iter = self.db().iterator_cf(
            cf(self.db(), CF_BLOBS),
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let meta = BlobMeta::decode(&v)?;
            if !label_filters.iter().all(|f| label_matches(&meta.labels, f)) {
                continue;
            }
            let digest = Digest(
                k[prefix.len()..]
                    .try_into()
                    .map_err(|_| Error::DataLoss("bad blob key".into()))?,
            );
            let content = self
                .content(&digest)?
                .ok_or_else(|| Error::DataLoss(format!("recipe of {digest} missing")))?;
            out.push(BlobInfo {
                namespace: ns.to_string(),
                digest,
                content,
                meta,
            });
        }
        Ok(out)
    }

    /// How a compressed blob's exact bytes are kept ("zlib-6", "stored", ...);
    /// empty for an uncompressed one. Loads the plan: not for hot paths.
    pub fn kept(&self, digest: &Digest, content: &Content) -> Result<String> {
        Ok(match content.wrap {
            Some(_) => self.plan(digest)?.describe(),
            None => String::new(),
        })
    }

    /// How long since a push or upload last wrote a byte.
    pub fn quiet_for(&self) -> std::time::Duration {
        self.inner.convert.quiet_for()
    }

    /// Writes in the index's memtables, not yet in its tables (deletes
    /// included): the log cannot be let go while any are there.
    pub fn unflushed_index_entries(&self) -> Result<u64> {
        index::unflushed_entries(self.db())
    }

    /// Flushes the index's memtables that hold writes, so its write-ahead
    /// log can be deleted (`index::flush_dirty`). Returns how many column
    /// families it flushed.
    pub fn flush_index(&self) -> Result<usize> {
        index::flush_dirty(self.db())
    }

    /// The store's counters alone (no disk walk): cheap.
    pub fn stats_counters(&self) -> Result<Counters> {
        Ok(*self.inner.counters.lock())
    }

    pub fn stats(&self) -> Result<Stats> {
        let counters = *self.inner.counters.lock();
        let index_bytes = dir_bytes(&self.inner.dir.join("index"));
        let pack_file_bytes = dir_bytes(&self.inner.dir.join("packs"));
        let bytes_on_disk = dir_bytes(&self.inner.dir);
        let pending_conversions = self.pending_conversions()?.len() as u64;
        let bucket = match self.remote() {
            None => None,
            Some(r) => {
                // Stats still answer when the bucket does not.
                let all = r.list("", None).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "listing the bucket for stats failed");
                    Vec::new()
                });
                Some(BucketStats {
                    url: r.cfg.url.clone(),
                    objects: all.len() as u64,
                    bytes: all.iter().map(|l| l.size).sum(),
                    pack_bytes: all
                        .iter()
                        .filter(|l| l.name.starts_with("packs/"))
                        .map(|l| l.size)
                        .sum(),
                    cache_bytes: r.cache.used(),
                })
            }
        };
        Ok(Stats {
            bucket,
            pending_conversions,
            counters,
            bytes_on_disk,
            index_bytes,
            pack_file_bytes,
        })
    }
}

fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// Bytes of regular files under a directory (the socket and such count nothing).
pub fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Opens the bucket for a store in bucket mode, checking that this data
/// directory indexes that bucket (or is new), that the bucket's chunk sizes
/// are this store's, and what the object store does with a create-only
/// write. Returns the remote and this index's writer id.
fn remote_open(
    db: &DB,
    dir: &Path,
    cfg: &mut StoreConfig,
) -> Result<(Option<remote::Remote>, [u8; 8])> {
    let meta = cf(db, CF_META);
    let url = db.get_cf(meta, publish::URL)?;
    let Some(rc) = cfg.remote.clone() else {
        if let Some(u) = url {
            return Err(Error::FailedPrecondition(format!(
                "{} indexes the bucket {}: start it with --store {0}",
                dir.display(),
                String::from_utf8_lossy(&u)
            )));
        }
        return Ok((None, [0; 8]));
    };
    let fresh = db.get_cf(meta, index::META_COUNTERS)?.is_none();
    match &url {
        Some(u) if u[..] != *rc.url.as_bytes() => {
            return Err(Error::FailedPrecondition(format!(
                "{} indexes the bucket {}, not {}",
                dir.display(),
                String::from_utf8_lossy(u),
                rc.url
            )))
        }
        None if !fresh => {
            return Err(Error::FailedPrecondition(format!(
                "{} holds a local store; a bucket store starts from an empty data directory",
                dir.display()
            )))
        }
        _ => {}
    }
    let writer = match db.get_cf(meta, publish::WRITER)? {
        Some(v) if v.len() == 8 => v[..].try_into().unwrap(),
        _ => {
            let mut w = [0u8; 8];
            w[..4].copy_from_slice(&remote::random_u32().to_le_bytes());
            w[4..].copy_from_slice(&remote::random_u32().to_le_bytes());
            w
        }
    };
    let r = remote::Remote::open(rc.clone(), &dir.join("remote-cache"))?;
    match r.get(remote::REPO_MARKER) {
        Ok(b) => {
            // What the store does with create-only writes, in the log at
            // every start (strata never relies on it).
            if let Err(e) = r.probe_conditional_put(&writer) {
                tracing::warn!(error = %e, "probing the object store's conditional writes failed");
            }
            let m: remote::RepoMarker = serde_json::from_slice(&b).map_err(|e| {
                Error::DataLoss(format!(
                    "{} in {} is not strata's: {e}",
                    remote::REPO_MARKER,
                    r.where_
                ))
            })?;
            let older =
                [remote::REPO_FORMAT_V1, remote::REPO_FORMAT_V2].contains(&m.format.as_str());
            if older && rc.compact_after == 0 {
                tracing::info!(bucket = %r.where_, format = %m.format, "the bucket stays as it is (compaction is off): nothing is compacted and no spare content object collected");
            } else if older {
                // Every older object reads the same in version 3; older
                // daemons refuse the bucket at their next start, and the
                // fences stop those running now (their commits and
                // collections fail on a mark they cannot parse) before any
                // compaction or spare is collected.
                if m.format == remote::REPO_FORMAT_V1 {
                    r.put(
                        bucket_gc::FENCE,
                        b"not a mark: this bucket is strata-bucket-2 or later (compaction); \
                          stop the strata-bucket-1 daemons that use it"
                            .to_vec(),
                    )?;
                }
                r.put(
                    bucket_gc::FENCE_3,
                    b"not a mark: this bucket is strata-bucket-3 (spare content objects are \
                      collected); stop the strata-bucket-2 daemons that use it"
                        .to_vec(),
                )?;
                write_marker(&r, &m.chunk_sizes)?;
                r.set_spares_on();
                tracing::info!(bucket = %r.where_, from = %m.format, "repository format upgraded to {}", remote::REPO_FORMAT);
            } else if m.format != remote::REPO_FORMAT {
                return Err(Error::FailedPrecondition(format!(
                    "the bucket {} holds repository format {:?}; this strata reads {}",
                    r.where_,
                    m.format,
                    remote::REPO_FORMAT
                )));
            } else {
                r.set_spares_on();
            }
            let sizes = ChunkSizes::parse(&m.chunk_sizes).map_err(Error::DataLoss)?;
            if fresh {
                cfg.chunk_sizes = sizes;
            } else if let Some(v) = db.get_cf(meta, index::META_CHUNK_SIZES)? {
                if v[..] != *m.chunk_sizes.as_bytes() {
                    return Err(Error::FailedPrecondition(format!(
                        "the bucket {} chunks with {}; this index with {}",
                        r.where_,
                        m.chunk_sizes,
                        String::from_utf8_lossy(&v)
                    )));
                }
            }
        }
        Err(Error::NotFound(_)) => {
            r.probe_conditional_put(&writer)?;
            write_marker(&r, &cfg.chunk_sizes.to_string())?;
            r.set_spares_on();
        }
        Err(e) if !fresh => {
            tracing::warn!(error = %e, "the bucket is unreachable; serving what the index holds");
        }
        Err(e) => return Err(e),
    }
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.put_cf_opt(meta, publish::URL, rc.url.as_bytes(), &wo)?;
    db.put_cf_opt(meta, publish::WRITER, writer, &wo)?;
    Ok((Some(r), writer))
}

/// Writes the bucket's repository marker: this format, these chunk sizes.
fn write_marker(r: &remote::Remote, chunk_sizes: &str) -> Result<()> {
    let m = remote::RepoMarker {
        format: remote::REPO_FORMAT.into(),
        chunk_sizes: chunk_sizes.to_string(),
    };
    r.put(
        remote::REPO_MARKER,
        serde_json::to_vec_pretty(&m).expect("serializes"),
    )
}
