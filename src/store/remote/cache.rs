//! The bounded on-disk cache of block records read from the bucket
//! (`--cache-gib`). A file per record, named by the local pack id and
//! offset; the oldest go first when the cache is over its size. Nothing in
//! it is trusted: every block read is checked (crc32c, BLAKE3) by
//! `pack::decode_block`, and a bad file is dropped and fetched again. Not
//! fsynced: a crash loses cache, never data.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub struct BlockCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: u64,
    /// Insertion order (a counter) → file, for eviction.
    order: BTreeMap<u64, ((u32, u64), u64)>,
    /// File → its order key.
    files: HashMap<(u32, u64), u64>,
    next: u64,
}

fn name(key: (u32, u64)) -> String {
    format!("{:08x}-{:016x}", key.0, key.1)
}

impl BlockCache {
    /// Opens `dir`, forgetting what an earlier run left in it: local pack
    /// ids of the bucket's pieces are reassigned when the index is rebuilt,
    /// so old files could name other bytes (they would fail their checks,
    /// but need not take room).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| Error::io(format!("clearing {}", dir.display()), e))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(BlockCache {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Default::default(),
        })
    }

    pub fn get(&self, key: (u32, u64)) -> Option<Vec<u8>> {
        if !self.state.lock().files.contains_key(&key) {
            return None;
        }
        std::fs::read(self.dir.join(name(key))).ok()
    }

    /// Drops a file that failed its checks.
    pub fn remove(&self, key: (u32, u64)) {
        let mut s = self.state.lock();
        if let Some(o) = s.files.remove(&key) {
            if let Some((_, n)) = s.order.remove(&o) {
                s.used -= n;
            }
            let _ = std::fs::remove_file(self.dir.join(name(key)));
        }
    }

    pub fn put(&self, key: (u32, u64), data: &[u8]) {
        if self.max_bytes == 0 || data.len() as u64 > self.max_bytes / 4 {
            return;
        }
        let tmp = self
            .dir
            .join(format!("{}.tmp{}", name(key), super::random_u32()));
        if std::fs::write(&tmp, data).is_err()
            || std::fs::rename(&tmp, self.dir.join(name(key))).is_err()
        {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        let mut s = self.state.lock();
        if s.files.contains_key(&key) {
            return;
        }
        let o = s.next;
        s.next += 1;
        s.order.insert(o, (key, data.len() as u64));
        s.files.insert(key, o);
        s.used += data.len() as u64;
        while s.used > self.max_bytes {
            let Some((_, (k, n))) = s.order.pop_first() else {
                break;
            };
            s.files.remove(&k);
            s.used -= n;
            let _ = std::fs::remove_file(self.dir.join(name(k)));
        }
    }

    pub fn used(&self) -> u64 {
        self.state.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_its_size_and_drops_the_oldest() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(&d.path().join("c"), 4000).unwrap();
        for i in 0..10u64 {
            c.put((1, i), &vec![i as u8; 900]);
        }
        assert!(c.used() <= 4000);
        assert!(c.get((1, 0)).is_none());
        assert_eq!(c.get((1, 9)).unwrap(), vec![9u8; 900]);
        c.remove((1, 9));
        assert!(c.get((1, 9)).is_none());
        let files = std::fs::read_dir(d.path().join("c")).unwrap().count();
        assert_eq!(files as u64 * 900, c.used());
    }
}
