//! The store's packs and records on an S3-compatible object store
//! (`serve --store s3://BUCKET[/PREFIX]`). The `object_store` crate does the
//! protocol (SigV4, timeouts, retries with backoff, multipart); this module
//! names the objects, runs the requests on a small runtime of its own, and
//! counts what they cost. What the objects hold is in `format.rs`; how the
//! store writes and reads them is in `src/store/publish.rs` and
//! `src/store/sync.rs`.

pub mod cache;
pub mod format;

use crate::error::{Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Local pack ids at or above this name pack pieces in the bucket that this
/// data directory did not write (or no longer holds): `meta` maps them to
/// object names. Local packs never get near it (a new pack every GiB).
pub const FOREIGN_BASE: u32 = 0x8000_0000;

/// The object naming the repository's format and chunk sizes: daemons
/// sharing a bucket must cut chunks alike, or nothing deduplicates.
pub const REPO_MARKER: &str = "strata-repository.json";
/// Version 2 adds compaction (`src/store/compact.rs`): timed segments and
/// `moves/`, which version 1 daemons do not read. Version 3 collects spare
/// content objects (`src/store/spares.rs`): a record may name a deleted
/// one, which version 2 daemons cannot apply.
pub const REPO_FORMAT: &str = "strata-bucket-3";
/// Repositories this strata upgrades at open (it wrote nothing version 3
/// has not).
pub const REPO_FORMAT_V2: &str = "strata-bucket-2";
pub const REPO_FORMAT_V1: &str = "strata-bucket-1";

#[derive(serde::Serialize, serde::Deserialize)]
pub struct RepoMarker {
    pub format: String,
    pub chunk_sizes: String,
}

/// Pieces larger than this go up as a multipart upload of parts this size,
/// so memory stays bounded whatever the layer.
const PART_BYTES: usize = 16 << 20;
/// Deletes sent at once.
const DELETE_BATCH: usize = 8;
/// Multipart parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:3900`); AWS's when absent.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// On-disk cache of blocks read from the bucket.
    pub cache_bytes: u64,
    /// How often other daemons' new segments are looked for.
    pub sync_interval: Duration,
    /// Each request's timeout.
    pub timeout: Duration,
    /// Retries of a failed request, with exponential backoff.
    pub retries: usize,
    /// A collection deletes what it marked no sooner than this; pushes must
    /// commit within half of it (`src/store/bucket_gc.rs`).
    pub gc_grace: Duration,
    /// A collection compacts small pieces, segments and moves objects once
    /// this many of a kind are in the bucket (`src/store/compact.rs`; 0:
    /// never).
    pub compact_after: usize,
    /// Another backend instead of S3 (unit tests: `object_store::memory`).
    pub backend: Option<Arc<dyn ObjectStore>>,
}

impl RemoteConfig {
    pub fn new(url: &str) -> Self {
        RemoteConfig {
            url: url.to_string(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            cache_bytes: 4 << 30,
            sync_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            retries: 4,
            gc_grace: Duration::from_secs(3600),
            compact_after: 32,
            backend: None,
        }
    }

    /// The bucket and the prefix (empty, or ending with '/').
    pub fn bucket_and_prefix(&self) -> Result<(String, String)> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--store {:?}: expected s3://BUCKET[/PREFIX]",
                self.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "--store {:?} names no bucket",
                self.url
            )));
        }
        let prefix = prefix.trim_matches('/');
        Ok((
            bucket.to_string(),
            if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        ))
    }
}

/// What the bucket traffic cost, for `/metrics` and `strata stats`.
#[derive(Default)]
pub struct RemoteMetrics {
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    /// Sum of request latencies, microseconds, and how many.
    pub latency_us: AtomicU64,
    pub requests: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
}

pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// For messages: the bucket URL and the endpoint.
    pub where_: String,
    /// Taken only by `Drop` (a runtime dropped inside another's async
    /// context would panic; it is shut down in the background instead).
    rt: Option<tokio::runtime::Runtime>,
    pub metrics: RemoteMetrics,
    pub cache: cache::BlockCache,
    pub cfg: RemoteConfig,
    /// The bucket is `strata-bucket-3` (at open): its collection may drop
    /// spare content objects.
    spares: std::sync::atomic::AtomicBool,
}

/// One listed object: its name under the store's prefix, and size.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub size: u64,
}

impl Remote {
    /// Connects (lazily: nothing is sent yet) to the bucket `cfg` names.
    pub fn open(cfg: RemoteConfig, cache_dir: &std::path::Path) -> Result<Remote> {
        let (bucket, prefix) = cfg.bucket_and_prefix()?;
        if let Some(b) = cfg.backend.clone() {
            let where_ = format!("{} ({b})", cfg.url);
            return Self::with_store(b, prefix, where_, cfg, cache_dir);
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_region(&cfg.region)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(cfg.timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(true),
            )
            // strata retries (and counts) itself: see `run`.
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            });
        if let Some(e) = &cfg.endpoint {
            // Path-style requests: Garage, MinIO and most self-hosted stores
            // serve them without DNS names per bucket.
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let endpoint_from_env = b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint);
        let store = b
            .build()
            .map_err(|e| Error::InvalidArgument(format!("--store {}: {e}", cfg.url)))?;
        // Errors name where the requests went: the flag, else what the
        // builder took from the environment, else AWS for the region.
        let endpoint = cfg
            .endpoint
            .clone()
            .or_else(|| endpoint_from_env.clone())
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        let where_ = format!("{} at {endpoint}", cfg.url);
        Self::with_store(Arc::new(store), prefix, where_, cfg, cache_dir)
    }

    /// Over any `ObjectStore` (unit tests use the in-memory one).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: String,
        where_: String,
        cfg: RemoteConfig,
        cache_dir: &std::path::Path,
    ) -> Result<Remote> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the object store runtime", e))?;
        Ok(Remote {
            store,
            prefix,
            where_,
            rt: Some(rt),
            metrics: Default::default(),
            cache: cache::BlockCache::open(cache_dir, cfg.cache_bytes)?,
            cfg,
            spares: Default::default(),
        })
    }

    /// Whether collections may drop spare content objects (`spares.rs`):
    /// only once every daemon of the bucket reads `strata-bucket-3`.
    pub fn spares_on(&self) -> bool {
        self.spares.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_spares_on(&self) {
        self.spares
            .store(true, std::sync::atomic::Ordering::Relaxed)
    }

    fn path(&self, name: &str) -> ObjPath {
        ObjPath::from(format!("{}{name}", self.prefix))
    }

    /// Runs the request `f` makes on the runtime and waits, from any
    /// thread; retries it with exponential backoff (counted) while the
    /// failure may pass and the time allowed is not spent; counts it.
    fn run<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let t = Instant::now();
        // Each attempt has the request timeout; retries may start until
        // twice that has passed, so a store that stays down fails the
        // operation within about three timeouts whatever --s3-retries says.
        let (retries, limit) = (self.cfg.retries, self.cfg.timeout * 2);
        let m = &self.metrics;
        let rt = self.rt.as_ref().expect("the runtime lives until drop");
        let mut attempt = 0;
        let r = loop {
            let r = futures::executor::block_on(rt.spawn(f()))
                .map_err(|e| Error::Internal(format!("object store task failed: {e}")))?;
            match r {
                Err(e) if retryable(&e) && attempt < retries && t.elapsed() < limit => {
                    attempt += 1;
                    m.retries.fetch_add(1, Ordering::Relaxed);
                    let pause =
                        Duration::from_millis(100 << attempt.min(6)).min(Duration::from_secs(5));
                    tracing::debug!(%what, attempt, error = %e, "retrying a bucket request");
                    std::thread::sleep(pause);
                }
                r => break r,
            }
        };
        m.latency_us
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        m.requests.fetch_add(1, Ordering::Relaxed);
        r.map_err(|e| {
            m.errors.fetch_add(1, Ordering::Relaxed);
            self.error(what, e)
        })
    }

    fn error(&self, what: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => {
                Error::NotFound(format!("{what}: not in the bucket {}", self.where_))
            }
            e => Error::Unavailable(format!(
                "object store {} unreachable or failing: {what}: {e}",
                self.where_
            )),
        }
    }

    pub fn put(&self, name: &str, data: Vec<u8>) -> Result<()> {
        let (store, path, n) = (self.store.clone(), self.path(name), data.len() as u64);
        let data = Bytes::from(data);
        self.run(&format!("writing {name}"), move || {
            let (store, path, data) = (store.clone(), path.clone(), data.clone());
            async move { store.put(&path, PutPayload::from(data)).await }
        })?;
        self.metrics.puts.fetch_add(1, Ordering::Relaxed);
        self.metrics.put_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// A create-only write: false when the store refused it because the
    /// object exists. Stores that ignore the condition (Garage) say true.
    pub fn put_if_absent(&self, name: &str, data: Vec<u8>) -> Result<bool> {
        let (store, path) = (self.store.clone(), self.path(name));
        let data = Bytes::from(data);
        let r = self.run(&format!("writing {name}"), move || {
            let (store, path, data) = (store.clone(), path.clone(), data.clone());
            async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match store.put_opts(&path, PutPayload::from(data), opts).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })?;
        self.metrics.puts.fetch_add(1, Ordering::Relaxed);
        Ok(r)
    }

    /// Writes the same new object twice with a create-only condition and
    /// says what the store did. strata never relies on the condition (every
    /// name is written once); the answer is logged so an operator knows.
    pub fn probe_conditional_put(&self, writer: &[u8; 8]) -> Result<bool> {
        let name = format!("probe/{}", unique_suffix(writer));
        self.put_if_absent(&name, b"1".to_vec())?;
        let honoured = !self.put_if_absent(&name, b"2".to_vec())?;
        if honoured {
            tracing::info!(store = %self.where_, "the object store honours create-only writes (If-None-Match); strata does not need them");
        } else {
            tracing::info!(store = %self.where_, "the object store ignores create-only writes (If-None-Match): strata relies on writing every name once");
        }
        self.delete(&name)?;
        Ok(honoured)
    }

    /// Uploads `file[start..end)` followed by `tail` as one object.
    pub fn put_file_range(
        &self,
        name: &str,
        file: Arc<File>,
        start: u64,
        end: u64,
        tail: Vec<u8>,
    ) -> Result<()> {
        let total = end - start + tail.len() as u64;
        if total <= PART_BYTES as u64 {
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| Error::io(format!("reading pack bytes for {name}"), e))?;
            buf.extend_from_slice(&tail);
            return self.put(name, buf);
        }
        let (store, path) = (self.store.clone(), self.path(name));
        let what = format!("writing {name}");
        self.run(&what, move || {
            let (store, path, file, tail) =
                (store.clone(), path.clone(), file.clone(), tail.clone());
            async move {
                let up = store.put_multipart(&path).await?;
                let mut w = WriteMultipart::new_with_chunk_size(up, PART_BYTES);
                let mut off = start;
                let mut buf = vec![0u8; PART_BYTES];
                while off < end {
                    let n = ((end - off) as usize).min(PART_BYTES);
                    // A blocking read of the page cache: the pack was just written.
                    if let Err(e) = file.read_exact_at(&mut buf[..n], off) {
                        w.abort().await.ok();
                        return Err(object_store::Error::Generic {
                            store: "strata",
                            source: Box::new(e),
                        });
                    }
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        w.abort().await.ok();
                        return Err(e);
                    }
                    w.write(&buf[..n]);
                    off += n as u64;
                }
                w.write(&tail);
                // A failed finish aborts the upload itself.
                w.finish().await
            }
        })?;
        self.metrics.puts.fetch_add(1, Ordering::Relaxed);
        self.metrics.put_bytes.fetch_add(total, Ordering::Relaxed);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Bytes> {
        let (store, path) = (self.store.clone(), self.path(name));
        let b = self.run(&format!("reading {name}"), move || {
            let (store, path) = (store.clone(), path.clone());
            async move { store.get(&path).await?.bytes().await }
        })?;
        self.metrics.gets.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .get_bytes
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    pub fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let (store, path, r) = (self.store.clone(), self.path(name), range.clone());
        let b = self.run(&format!("reading {name} bytes {range:?}"), move || {
            let (store, path, r) = (store.clone(), path.clone(), r.clone());
            async move { store.get_range(&path, r).await }
        })?;
        if b.len() as u64 != range.end - range.start {
            return Err(Error::DataLoss(format!(
                "{name} in {} is shorter than the range {range:?}",
                self.where_
            )));
        }
        self.metrics.gets.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .get_bytes
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    pub fn size_of(&self, name: &str) -> Result<u64> {
        let (store, path) = (self.store.clone(), self.path(name));
        let m = self.run(&format!("looking up {name}"), move || {
            let (store, path) = (store.clone(), path.clone());
            async move { store.head(&path).await }
        })?;
        Ok(m.size)
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(name));
        self.run(&format!("deleting {name}"), move || {
            let (store, path) = (store.clone(), path.clone());
            async move { store.delete(&path).await }
        })?;
        self.metrics.deletes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes `names` (those already gone count as deleted), `DELETE_BATCH`
    /// at a time, each batch sent at once under one request timeout and its
    /// retries: a collection deletes hundreds of objects, and one at a time
    /// they cost a round trip each. (Not S3's DeleteObjects: Garage carries
    /// its keys out one after another, so a large one outlives the timeout.)
    pub fn delete_many(&self, names: &[String]) -> Result<()> {
        for batch in names.chunks(DELETE_BATCH) {
            let store = self.store.clone();
            let paths: Vec<ObjPath> = batch.iter().map(|n| self.path(n)).collect();
            let what = format!("deleting {} objects ({}...)", batch.len(), batch[0]);
            self.run(&what, move || {
                let (store, paths) = (store.clone(), paths.clone());
                async move {
                    let deletes = paths.iter().map(|p| store.delete(p));
                    for r in futures::future::join_all(deletes).await {
                        match r {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                }
            })?;
            self.metrics
                .deletes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Objects under `dir` (a name prefix ending with '/'), after `offset`
    /// (a full name) when given, in name order.
    pub fn list(&self, dir: &str, offset: Option<&str>) -> Result<Vec<Listed>> {
        let store = self.store.clone();
        let p = self.path(dir.trim_end_matches('/'));
        let off = offset.map(|o| self.path(o));
        let skip = self.prefix.len();
        let mut v: Vec<Listed> = self.run(&format!("listing {dir}"), move || {
            let (store, p, off) = (store.clone(), p.clone(), off.clone());
            async move {
                let s = match &off {
                    Some(o) => store.list_with_offset(Some(&p), o),
                    None => store.list(Some(&p)),
                };
                s.map_ok(|m| Listed {
                    name: m.location.as_ref()[skip..].to_string(),
                    size: m.size,
                })
                .try_collect()
                .await
            }
        })?;
        self.metrics.lists.fetch_add(1, Ordering::Relaxed);
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Failures worth another try: not a missing object, a refused condition,
/// a bad path or a feature the store lacks.
fn retryable(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented
            | E::NotSupported { .. }
            | E::InvalidPath { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

/// A name no other writer uses: `<writer hex>-<ms>-<random>`.
pub fn unique_suffix(writer: &[u8; 8]) -> String {
    format!(
        "{}-{:013}-{:08x}",
        hex::encode(writer),
        crate::store::now_ms(),
        random_u32()
    )
}

pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random source works");
    u32::from_le_bytes(b)
}
