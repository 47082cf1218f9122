//! Resumable uploads: containerd's "ingests". The bytes written so far are kept
//! in `ingest/<hash of namespace and ref>.part` (refs are opaque client text,
//! never file names) and described by a record in the `ingests` column family,
//! so a partial upload survives a broken stream and a daemon restart and
//! resumes from its length. While the stream is open the same bytes also feed a
//! live [`Ingest`], so COMMIT does not read them again: they are chunked and
//! deduplicated exactly like a `strata.v1` push. The live ingest runs on its
//! own thread, so a WRITE's reply does not wait for its chunking; if it fails,
//! COMMIT chunks the file instead.
//!
//! On a full disk (or below the store's `min_free_bytes`) a WRITE fails with
//! `ResourceExhausted` and none of its bytes are kept: the upload stays at the
//! offset it had, to be resumed once space returns.

use super::index::{cf, CF_INGESTS};
use super::ingest::{Ingest, IngestOptions, PushOutcome};
use super::{validate_namespace, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What is known of an upload besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadRecord {
    pub namespace: String,
    pub reference: String,
    /// Expected total size, 0 when unknown.
    pub total: i64,
    /// Expected digest, empty when unknown.
    pub expected: String,
    /// Nanoseconds since the Unix epoch.
    pub started_at: i64,
    pub updated_at: i64,
}

/// An upload's record with its current length.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    pub record: UploadRecord,
    pub offset: u64,
}

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn key(ns: &str, reference: &str) -> Vec<u8> {
    let mut k = super::index::ns_prefix(ns);
    k.extend_from_slice(reference.as_bytes());
    k
}

/// An upload opened by one stream; the ref stays locked until it is dropped.
pub struct Upload {
    store: Store,
    key: Vec<u8>,
    pub record: UploadRecord,
    file: File,
    path: PathBuf,
    offset: u64,
    sha: Sha256,
    live: Option<LiveFeed>,
    last_saved: i64,
}

/// The live ingest, fed on its own thread: a WRITE is answered once its
/// bytes are in the upload file, and chunking them overlaps with containerd
/// sending the next one (it waits for each reply). A few messages queue at
/// most, so memory stays bounded.
struct LiveFeed {
    tx: Option<SyncSender<Bytes>>,
    handle: Option<JoinHandle<Result<Ingest>>>,
}

impl LiveFeed {
    fn start(mut ingest: Ingest) -> Result<LiveFeed> {
        let (tx, rx) = sync_channel::<Bytes>(4);
        let handle = std::thread::Builder::new()
            .name("strata-upload".into())
            .spawn(move || {
                for b in rx {
                    ingest.write_bytes(b)?;
                }
                Ok(ingest)
            })
            .map_err(|e| Error::io("starting an upload's ingest thread", e))?;
        Ok(LiveFeed {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// False when the ingest stopped on an error (`finish` returns it).
    fn send(&mut self, b: Bytes) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(b).is_ok())
    }

    /// Waits for every byte sent to be ingested.
    fn finish(mut self) -> Result<Ingest> {
        drop(self.tx.take());
        self.handle
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| Error::Internal("an upload's ingest thread panicked".into()))?
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Store {
    fn upload_path(&self, key: &[u8]) -> PathBuf {
        self.inner
            .dir
            .join("ingest")
            .join(format!("{}.part", blake3::hash(key).to_hex()))
    }

    fn load_upload(&self, key: &[u8]) -> Result<Option<UploadRecord>> {
        match self.db().get_cf(cf(self.db(), CF_INGESTS), key)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| Error::DataLoss(format!("upload record is malformed: {e}"))),
            None => Ok(None),
        }
    }

    fn save_upload(&self, key: &[u8], rec: &UploadRecord) -> Result<()> {
        let v = serde_json::to_vec(rec).expect("UploadRecord serialises");
        Ok(self.db().put_cf(cf(self.db(), CF_INGESTS), key, v)?)
    }

    /// Opens (creating or resuming) the upload `reference` in `ns`, locking it.
    /// A ref already held by another stream is `Unavailable`: containerd retries.
    pub fn open_upload(&self, ns: &str, reference: &str, total: i64) -> Result<Upload> {
        validate_namespace(ns)?;
        if reference.is_empty() {
            return Err(Error::InvalidArgument(
                "first message must have a reference".into(),
            ));
        }
        let k = key(ns, reference);
        if !self.inner.upload_locks.lock().insert(k.clone()) {
            return Err(Error::Unavailable(format!(
                "ref {reference} locked: another stream is writing it"
            )));
        }
        let mut up = match self.open_upload_locked(ns, reference, &k) {
            Ok(up) => up,
            Err(e) => {
                self.inner.upload_locks.lock().remove(&k);
                return Err(e);
            }
        };
        if total > 0 && up.record.total > 0 && total != up.record.total {
            // A different total means a different upload: start over.
            up.truncate()?;
        }
        if total > 0 {
            up.set_total(total)?;
        }
        Ok(up)
    }

    fn open_upload_locked(&self, ns: &str, reference: &str, k: &[u8]) -> Result<Upload> {
        let path = self.upload_path(k);
        let now = now_nanos();
        let record = match self.load_upload(k)? {
            Some(r) => r,
            None => {
                let r = UploadRecord {
                    namespace: ns.to_string(),
                    reference: reference.to_string(),
                    total: 0,
                    expected: String::new(),
                    started_at: now,
                    updated_at: now,
                };
                self.save_upload(k, &r)?;
                r
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening upload file {}", path.display()), e))?;
        let mut up = Upload {
            store: self.clone(),
            key: k.to_vec(),
            record,
            file,
            path,
            offset: 0,
            sha: Sha256::new(),
            live: None,
            last_saved: now,
        };
        up.catch_up()?;
        Ok(up)
    }

    pub fn upload_status(&self, ns: &str, reference: &str) -> Result<UploadStatus> {
        validate_namespace(ns)?;
        let k = key(ns, reference);
        let record = self
            .load_upload(&k)?
            .ok_or_else(|| Error::NotFound(format!("no upload with ref {reference:?}")))?;
        let offset = std::fs::metadata(self.upload_path(&k))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(UploadStatus { record, offset })
    }

    pub fn list_uploads(&self, ns: &str) -> Result<Vec<UploadStatus>> {
        validate_namespace(ns)?;
        let prefix = super::index::ns_prefix(ns);
        let mut out = Vec::new();
        let iter = self.db().iterator_cf(
            cf(self.db(), CF_INGESTS),
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let record: UploadRecord = serde_json::from_slice(&v)
                .map_err(|e| Error::DataLoss(format!("upload record is malformed: {e}")))?;
            let offset = std::fs::metadata(self.upload_path(&k))
                .map(|m| m.len())
                .unwrap_or(0);
            out.push(UploadStatus { record, offset });
        }
        Ok(out)
    }

    /// Removes an upload and its bytes. A ref being written is `Unavailable`.
    pub fn abort_upload(&self, ns: &str, reference: &str) -> Result<()> {
        validate_namespace(ns)?;
        let k = key(ns, reference);
        if self.inner.upload_locks.lock().contains(&k) {
            return Err(Error::Unavailable(format!(
                "ref {reference} locked: another stream is writing it"
            )));
        }
        if self.load_upload(&k)?.is_none() {
            return Err(Error::NotFound(format!("no upload with ref {reference:?}")));
        }
        self.remove_upload(&k)
    }

    fn remove_upload(&self, k: &[u8]) -> Result<()> {
        self.db().delete_cf(cf(self.db(), CF_INGESTS), k)?;
        match std::fs::remove_file(self.upload_path(k)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing an upload file", e)),
        }
    }

    /// Removes uploads untouched for longer than `max_age` (and not being written).
    pub fn expire_uploads(&self, max_age: Duration) -> Result<usize> {
        let cutoff = now_nanos() - max_age.as_nanos() as i64;
        let mut stale = Vec::new();
        for item in self
            .db()
            .iterator_cf(cf(self.db(), CF_INGESTS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let updated = serde_json::from_slice::<UploadRecord>(&v)
                .map(|r| r.updated_at)
                .unwrap_or(0);
            if updated < cutoff && !self.inner.upload_locks.lock().contains(&k[..]) {
                stale.push(k.to_vec());
            }
        }
        for k in &stale {
            self.remove_upload(k)?;
        }
        if !stale.is_empty() {
            tracing::info!(count = stale.len(), "expired stale uploads");
        }
        Ok(stale.len())
    }
}

impl Upload {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// sha256 of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest(self.sha.clone().finalize().into())
    }

    fn new_ingest(&self) -> Result<Ingest> {
        self.store.begin_ingest(IngestOptions {
            namespace: self.record.namespace.clone(),
            defer_compressed: self.store.inner.cfg.defer_uploads,
            ..Default::default()
        })
    }

    /// Reads the bytes already on disk (a resumed upload) into the running
    /// hash and a live ingest; a torn tail left by a crash is kept, the client
    /// resumes from whatever length is reported. A live ingest that cannot be
    /// had (a full disk) is left out: commit reads the file again.
    fn catch_up(&mut self) -> Result<()> {
        let mut ingest = match self.new_ingest() {
            Ok(i) => Some(i),
            Err(e) if e.is_disk_full() => None,
            Err(e) => return Err(e),
        };
        let mut sha = Sha256::new();
        let n_total = feed(&self.file, &mut ingest, Some(&mut sha))?;
        self.sha = sha;
        self.offset = n_total;
        self.live = ingest.map(LiveFeed::start).transpose()?;
        Ok(())
    }

    pub fn set_total(&mut self, total: i64) -> Result<()> {
        if self.record.total != total {
            self.record.total = total;
            self.touch(true)?;
        }
        Ok(())
    }

    pub fn set_expected(&mut self, expected: &str) -> Result<()> {
        if self.record.expected != expected {
            self.record.expected = expected.to_string();
            self.touch(true)?;
        }
        Ok(())
    }

    fn touch(&mut self, save: bool) -> Result<()> {
        let now = now_nanos();
        self.record.updated_at = now;
        // Saved on changes and every few seconds while writing: it drives expiry.
        if save || now - self.last_saved > 5_000_000_000 {
            self.store.save_upload(&self.key, &self.record)?;
            self.last_saved = now;
        }
        Ok(())
    }

    /// Drops every byte written so far.
    pub fn truncate(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(|e| Error::io("truncating an upload file", e))?;
        self.offset = 0;
        self.sha = Sha256::new();
        self.live = None;
        self.live = Some(LiveFeed::start(self.new_ingest()?)?);
        self.touch(true)
    }

    /// Appends bytes at the current offset. On a full disk (or below the
    /// free-space reserve) nothing of `data` is kept and the upload stays at
    /// its offset, resumable.
    pub fn append(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let inner = &self.store.inner;
        let claim = inner
            .packs
            .claim(&inner.dir, data.len() as u64, inner.cfg.min_free_bytes)
            .map_err(|e| self.kept_at_offset(e))?;
        let written = self.file.write_all_at(&data, self.offset);
        drop(claim);
        if let Err(e) = written {
            self.cut_back();
            let e = Error::io(format!("writing {}", self.path.display()), e);
            return Err(self.kept_at_offset(e));
        }
        let sent = self.live.as_mut().is_none_or(|l| l.send(data.clone()));
        if !sent {
            // The live ingest stopped on an error (about earlier bytes, which
            // the file keeps); commit re-reads the file.
            if let Some(Err(e)) = self.live.take().map(LiveFeed::finish) {
                if e.is_disk_full() {
                    // The disk is full now: these bytes are refused like a
                    // failed file write.
                    self.cut_back();
                    return Err(self.kept_at_offset(e));
                }
                tracing::warn!(error = %e, "live chunking of an upload failed; it will be redone at commit");
            }
        }
        self.sha.update(&data);
        self.offset += data.len() as u64;
        self.touch(false)
    }

    /// Drops whatever a failed append left past the offset.
    fn cut_back(&self) {
        if let Err(e) = self.file.set_len(self.offset) {
            tracing::error!(error = %e, path = %self.path.display(), "could not cut a failed write off an upload file");
        }
    }

    /// A disk-full error of a WRITE: says where the upload stands.
    fn kept_at_offset(&self, e: Error) -> Error {
        if !e.is_disk_full() {
            return e;
        }
        let msg = e.nothing_stored(&self.store.inner.dir).to_string();
        let msg = msg.strip_suffix("nothing was stored").unwrap_or(&msg);
        Error::ResourceExhausted(format!(
            "{msg}this write was not stored; upload {:?} stays at offset {}, to resume when space returns",
            self.record.reference, self.offset
        ))
    }

    /// Commits the upload as a blob of its namespace. Size and digest mismatches
    /// leave the upload in place to be resumed; a blob already present in the
    /// namespace is `AlreadyExists` and the upload is removed.
    pub fn commit(
        &mut self,
        total: i64,
        expected: Option<Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<PushOutcome> {
        if total > 0 && total as u64 != self.offset {
            return Err(Error::FailedPrecondition(format!(
                "unexpected commit size {}, expected {total}",
                self.offset
            )));
        }
        let digest = self.digest();
        if let Some(want) = expected {
            if want != digest {
                return Err(Error::FailedPrecondition(format!(
                    "unexpected commit digest {digest}, expected {want}"
                )));
            }
        }
        let ns = self.record.namespace.clone();
        if self.store.stat(&ns, &digest).is_ok() {
            self.store.remove_upload(&self.key)?;
            self.live = None;
            return Err(Error::AlreadyExists(format!(
                "content {digest} already exists"
            )));
        }
        let live = self.live.take().map(LiveFeed::finish).transpose();
        let live = live.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "live chunking of an upload failed; it is redone from the file");
            None
        });
        let mut ingest = match live {
            Some(i) => i,
            None => {
                self.file.sync_data().ok();
                let f =
                    File::open(&self.path).map_err(|e| Error::io("reopening an upload file", e))?;
                let mut ingest = Some(self.new_ingest()?);
                feed(&f, &mut ingest, None)?;
                ingest.expect("feed keeps the ingest without a live ingest failure")
            }
        };
        ingest.set_expected(Some(digest), Some(self.offset), labels);
        let outcome = ingest.commit()?;
        self.store.remove_upload(&self.key)?;
        Ok(outcome)
    }
}

/// Reads an upload file from its start into an ingest (and a running hash).
/// With a hash to keep, an ingest failing on a full disk is dropped and the
/// hashing goes on; without, its error is returned.
fn feed(mut f: &File, ingest: &mut Option<Ingest>, mut sha: Option<&mut Sha256>) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading an upload file", e))?;
        if n == 0 {
            return Ok(total);
        }
        if let Some(sha) = sha.as_deref_mut() {
            sha.update(&buf[..n]);
        }
        if let Some(i) = ingest.as_mut() {
            if let Err(e) = i.write(&buf[..n]) {
                if sha.is_none() || !e.is_disk_full() {
                    return Err(e);
                }
                *ingest = None;
            }
        }
        total += n as u64;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.store.load_upload(&self.key).ok().flatten().is_some() {
            let _ = self.store.save_upload(&self.key, &self.record);
        }
        self.store.inner.upload_locks.lock().remove(&self.key);
    }
}
