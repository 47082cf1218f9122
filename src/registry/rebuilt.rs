//! A bounded cache of rebuilt compressed blobs, for the registry's blob GETs.
//!
//! A converted gzip layer is re-encoded on every read: CPU-bound work that
//! makes a pull through the registry several times slower than serving
//! stored bytes. A whole GET writes what it streams into
//! `<data dir>/rebuilt-cache/<hex>` as well; once every byte is there and
//! hashes to the digest, the file is synced and renamed into place, and
//! later GETs (whole or ranged) read it instead of rebuilding. Blobs are
//! content-addressed, so a cached file never goes stale; the oldest files
//! (by last use) are removed to stay under the bound. It is a cache: losing
//! it (a crash, `rm -r`) only costs a rebuild.

use crate::digest::Digest;
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct RebuiltCache {
    dir: PathBuf,
    limit: u64,
    /// Bytes of the files in place.
    used: Mutex<u64>,
}

impl RebuiltCache {
    /// Opens (or creates) the cache in `dir`, dropping writes a crash left.
    pub fn open(dir: &Path, limit: u64) -> Result<Arc<RebuiltCache>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut used = 0;
        for e in std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(&p);
            } else if let Ok(m) = e.metadata() {
                used += m.len();
            }
        }
        let c = Arc::new(RebuiltCache {
            dir: dir.to_path_buf(),
            limit,
            used: Mutex::new(used),
        });
        c.evict(0);
        Ok(c)
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(hex::encode(d.0))
    }

    /// The cached bytes of `d`, if any (marked as just used).
    pub fn get(&self, d: &Digest) -> Option<File> {
        let f = File::open(self.path(d)).ok()?;
        let _ = f.set_modified(std::time::SystemTime::now());
        Some(f)
    }

    /// A writer for `d`'s `size` bytes, unless the blob would take more than
    /// half the cache.
    pub fn writer(self: &Arc<Self>, d: &Digest, size: u64) -> Option<CacheWriter> {
        if size == 0 || size > self.limit / 2 {
            return None;
        }
        let tmp = self
            .dir
            .join(format!("{}.{}.tmp", hex::encode(d.0), std::process::id()));
        let file = File::create(&tmp).ok()?;
        Some(CacheWriter {
            cache: self.clone(),
            digest: *d,
            size,
            file: Some(file),
            tmp,
            written: 0,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
        })
    }

    /// Removes the least recently used files until `more` bytes fit.
    fn evict(&self, more: u64) {
        let mut used = self.used.lock();
        if *used + more <= self.limit {
            return;
        }
        let mut files: Vec<(std::time::SystemTime, PathBuf, u64)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_none_or(|x| x != "tmp"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, e.path(), m.len()))
            })
            .collect();
        files.sort();
        for (_, p, n) in files {
            if *used + more <= self.limit {
                break;
            }
            if std::fs::remove_file(&p).is_ok() {
                *used = used.saturating_sub(n);
            }
        }
    }
}

/// One blob being written into the cache as it is streamed.
pub struct CacheWriter {
    cache: Arc<RebuiltCache>,
    digest: Digest,
    size: u64,
    file: Option<File>,
    tmp: PathBuf,
    written: u64,
    hasher: ring::digest::Context,
}

impl CacheWriter {
    /// Appends; a failed write (a full disk) abandons the entry quietly.
    pub fn write(&mut self, b: &[u8]) {
        if let Some(f) = &mut self.file {
            if self.written + b.len() as u64 > self.size || f.write_all(b).is_err() {
                self.file = None;
                return;
            }
            self.hasher.update(b);
            self.written += b.len() as u64;
        }
    }

    /// Puts the file in place if it holds exactly the blob.
    pub fn finish(mut self) {
        let Some(f) = self.file.take() else { return };
        let whole =
            self.written == self.size && self.hasher.clone().finish().as_ref() == self.digest.0;
        if !whole || f.sync_all().is_err() {
            return;
        }
        drop(f);
        let dest = self.cache.path(&self.digest);
        if dest.exists() {
            return; // another GET put the same bytes there first
        }
        self.cache.evict(self.size);
        if std::fs::rename(&self.tmp, &dest).is_ok() {
            *self.cache.used.lock() += self.size;
        }
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_whole_blobs_only_and_stays_under_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let c = RebuiltCache::open(dir.path(), 250).unwrap();
        let blob = |n: u8| vec![n; 100];
        let put = |b: &[u8]| {
            let d = Digest::of(b);
            let mut w = c.writer(&d, b.len() as u64).unwrap();
            w.write(&b[..40]);
            w.write(&b[40..]);
            w.finish();
            d
        };
        let (a, b) = (put(&blob(1)), put(&blob(2)));
        assert!(c.get(&a).is_some() && c.get(&b).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.get(&a); // a used last: b goes first
        std::thread::sleep(std::time::Duration::from_millis(20));
        let third = put(&blob(3));
        assert!(c.get(&b).is_none() && c.get(&a).is_some() && c.get(&third).is_some());
        // Short, or not the digest's bytes: not kept.
        let d = Digest::of(&blob(4));
        let mut w = c.writer(&d, 100).unwrap();
        w.write(&blob(4)[..50]);
        w.finish();
        let mut w = c.writer(&d, 100).unwrap();
        w.write(&blob(5));
        w.finish();
        assert!(c.get(&d).is_none());
        assert!(c.writer(&d, 200).is_none(), "over half the bound");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        // Two GETs of one blob fill the cache at once: one file, counted once.
        let b6 = blob(6);
        let d6 = Digest::of(&b6);
        let (mut w1, mut w2) = (c.writer(&d6, 100).unwrap(), c.writer(&d6, 100).unwrap());
        w1.write(&b6[..60]);
        w2.write(&b6);
        w1.write(&b6[60..]);
        let before = *c.used.lock();
        w2.finish();
        w1.finish();
        assert_eq!(std::fs::read(c.path(&d6)).unwrap(), b6);
        assert!(*c.used.lock() <= before + 100 && *c.used.lock() <= 250);
        c.get(&a);
        c.get(&third);
        // Reopened: the accounting is rebuilt from the files.
        let again = RebuiltCache::open(dir.path(), 250).unwrap();
        assert_eq!(*again.used.lock(), 200);
    }
}
