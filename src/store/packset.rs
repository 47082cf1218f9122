//! The set of pack files: a pool of writers (one ingest appends to a pack at a
//! time), cached read handles, and recovery of pack tails left by a crash.
//!
//! Dense packs (`densify.rs`) are a pool of their own: only rewrites append
//! to them, at the dense zstd level, so ingest never mixes fresh blocks in.

use super::pack::{self, PackWriter};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct PackSet {
    dir: PathBuf,
    max_pack_bytes: u64,
    /// One lock over every pool, so that `retire` and `release` decide
    /// atomically whether a pack is in use (two locks let a released writer
    /// slip back into `free` after `retire` looked there: a rewritten,
    /// deleted pack then took appends).
    pools: Mutex<Pools>,
    next_id: Mutex<u32>,
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// Bytes being written right now under a [`Claim`]: not yet in the
    /// filesystem's free-space figure.
    claimed: Mutex<u64>,
}

#[derive(Default)]
struct Pools {
    free: Vec<PackWriter>,
    /// Dense packs not yet full, for rewrites to append to.
    dense_free: Vec<PackWriter>,
    /// Every dense pack (committed as such in the index).
    dense: HashSet<u32>,
    /// Packs taken out of the pool by garbage collection: never leased again.
    retired: HashSet<u32>,
    /// Packs an ingest (or a rewrite) is appending to.
    leased: HashSet<u32>,
}

/// Room set aside on the data directory's disk for one write in progress
/// (see [`PackSet::claim`]); given back when dropped.
pub struct Claim<'a> {
    set: &'a PackSet,
    bytes: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        *self.set.claimed.lock() -= self.bytes;
    }
}

impl PackSet {
    /// Opens the pack directory. `committed` gives each pack's durable length as
    /// the index knows it; anything past it was written by an ingest that never
    /// committed, and is cut off here.
    pub fn open(
        dir: &Path,
        max_pack_bytes: u64,
        committed: &HashMap<u32, u64>,
        dense: HashSet<u32>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut max_id = 0u32;
        let mut writers = Vec::new();
        let mut dense_writers = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing packs", e))?;
            let Some(id) = entry.file_name().to_str().and_then(pack::parse_pack_name) else {
                continue;
            };
            max_id = max_id.max(id);
            let len = entry
                .metadata()
                .map_err(|e| Error::io("reading pack size", e))?
                .len();
            let keep = committed.get(&id).copied().unwrap_or(0);
            if len < keep {
                // The index says more is durable than the file holds: verify reports it.
                tracing::error!(
                    pack = id,
                    len,
                    committed = keep,
                    "pack is shorter than its committed length"
                );
                continue;
            }
            if keep == 0 {
                std::fs::remove_file(entry.path())
                    .map_err(|e| Error::io("removing an uncommitted pack", e))?;
                tracing::info!(pack = id, bytes = len, "removed a pack no commit refers to");
                continue;
            }
            let mut w = PackWriter::open(dir, id, len)?;
            if len > keep {
                tracing::info!(
                    pack = id,
                    bytes = len - keep,
                    "trimmed uncommitted bytes from a pack"
                );
                w.truncate(keep)?;
            }
            if keep < max_pack_bytes {
                if dense.contains(&id) {
                    dense_writers.push(w);
                } else {
                    writers.push(w);
                }
            }
        }
        for &id in committed.keys() {
            max_id = max_id.max(id);
        }
        Ok(PackSet {
            dir: dir.to_path_buf(),
            max_pack_bytes,
            pools: Mutex::new(Pools {
                free: writers,
                dense_free: dense_writers,
                dense,
                ..Pools::default()
            }),
            next_id: Mutex::new(max_id + 1),
            readers: Mutex::new(HashMap::new()),
            claimed: Mutex::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets `need` bytes aside for a write to the disk holding `dir` (the data
    /// directory), unless that would leave less than `reserve` free counting
    /// the writes other pushes have in progress: then `ResourceExhausted`.
    /// The reserve keeps room for what must not fail on a full disk: RocksDB's
    /// log and memtable flushes (Debian's librocksdb aborts the process when a
    /// log write past its preallocated block hits ENOSPC), deletes and
    /// garbage collection. A reserve of 0 checks nothing.
    pub fn claim(&self, dir: &Path, need: u64, reserve: u64) -> Result<Claim<'_>> {
        if reserve == 0 {
            return Ok(Claim {
                set: self,
                bytes: 0,
            });
        }
        // Files grow by whole pages: count the rounding.
        let need = need.div_ceil(4096) * 4096;
        let mut claimed = self.claimed.lock();
        let free = free_bytes(dir)?;
        let wanted = reserve.saturating_add(*claimed).saturating_add(need);
        if free < wanted {
            let mut why = format!("{free} bytes free");
            if *claimed > 0 {
                why += &format!(", {} of them set aside for writes in progress", *claimed);
            }
            if need > 0 {
                why += &format!(", this write needs {need}");
            }
            return Err(Error::disk_full(
                Some(dir),
                format!(
                    "{why}, and strata keeps {reserve} bytes free (min_free_bytes) so that its \
                     index stays writable (delete blobs and collect garbage, or free space on \
                     that disk)"
                ),
            ));
        }
        *claimed += need;
        Ok(Claim {
            set: self,
            bytes: need,
        })
    }

    /// Takes a writer for one ingest's exclusive use.
    pub fn lease(&self) -> Result<PackWriter> {
        self.lease_from(false)
    }

    /// Takes a dense pack's writer for a rewrite: the last one not full, or
    /// a new pack (dense once the rewrite's batch says so: `mark_dense`).
    pub fn lease_dense(&self) -> Result<PackWriter> {
        self.lease_from(true)
    }

    /// A writer from the plain or the dense pool, or a new pack.
    fn lease_from(&self, dense: bool) -> Result<PackWriter> {
        {
            let mut p = self.pools.lock();
            let pool = if dense {
                &mut p.dense_free
            } else {
                &mut p.free
            };
            if let Some(w) = pool.pop() {
                p.leased.insert(w.id);
                return Ok(w);
            }
        }
        let id = {
            let mut n = self.next_id.lock();
            let id = *n;
            *n += 1;
            id
        };
        let w = PackWriter::create(&self.dir, id)?;
        let mut p = self.pools.lock();
        p.leased.insert(id);
        if dense {
            // Its records will be dense; should the rewrite leave it empty,
            // it goes back to the dense pool, not to ingest's.
            p.dense.insert(id);
        }
        Ok(w)
    }

    /// Returns a writer; a full or retired pack is not appended to again.
    pub fn release(&self, w: PackWriter) {
        let mut p = self.pools.lock();
        p.leased.remove(&w.id);
        if w.len < self.max_pack_bytes && !p.retired.contains(&w.id) {
            if p.dense.contains(&w.id) {
                p.dense_free.push(w);
            } else {
                p.free.push(w);
            }
        }
    }

    /// Returns a writer that must not take appends again (a rewrite that
    /// failed midway may have left bytes past its committed length: they
    /// are cut at the next open).
    pub fn release_spent(&self, w: PackWriter) {
        self.pools.lock().leased.remove(&w.id);
    }

    /// Records that pack `id` holds dense blocks only (its rewrite committed).
    pub fn mark_dense(&self, id: u32) {
        self.pools.lock().dense.insert(id);
    }

    pub fn is_dense(&self, id: u32) -> bool {
        self.pools.lock().dense.contains(&id)
    }

    /// Takes a pack out of use for appending, for a rewrite. False when an
    /// ingest holds it right now.
    pub fn retire(&self, id: u32) -> bool {
        let mut p = self.pools.lock();
        if p.leased.contains(&id) {
            return false;
        }
        // In a pool, or full (never leased again): either way no writer
        // can take it once it is retired under this lock.
        p.free.retain(|w| w.id != id);
        p.dense_free.retain(|w| w.id != id);
        p.retired.insert(id);
        true
    }

    /// Undoes `retire` after a failed rewrite.
    pub fn unretire(&self, id: u32) {
        self.pools.lock().retired.remove(&id);
    }

    /// Whether pack `id`'s file is in the data directory.
    pub fn has(&self, id: u32) -> bool {
        pack::pack_path(&self.dir, id).exists()
    }

    /// Full packs no ingest holds: never appended to again (bucket mode
    /// drops their files once the bucket has every byte).
    pub fn full_packs(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
        let (leased, free) = {
            let p = self.pools.lock();
            let free: HashSet<u32> = (p.free.iter().chain(p.dense_free.iter()))
                .map(|w| w.id)
                .collect();
            (p.leased.clone(), free)
        };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(pack::parse_pack_name) else {
                continue;
            };
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if len >= self.max_pack_bytes && !leased.contains(&id) && !free.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Removes a rewritten pack's file.
    pub fn remove(&self, id: u32) -> Result<()> {
        self.readers.lock().remove(&id);
        self.pools.lock().dense.remove(&id);
        let path = pack::pack_path(&self.dir, id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        pack::sync_dir(&self.dir)
    }

    pub fn file(&self, id: u32) -> Result<Arc<File>> {
        if let Some(f) = self.readers.lock().get(&id) {
            return Ok(f.clone());
        }
        let path = pack::pack_path(&self.dir, id);
        let f = match File::open(&path) {
            Ok(f) => Arc::new(f),
            // Garbage collection removed it after moving its chunks: the
            // caller looks the chunk up again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Unavailable(format!("pack {id} was rewritten")));
            }
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        self.readers.lock().insert(id, f.clone());
        Ok(f)
    }

    pub fn read_at(&self, id: u32, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.file(id)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::DataLoss(format!(
                    "pack {id} ends before the record at offset {offset}"
                ))
            } else {
                Error::io(format!("reading pack {id}"), e)
            }
        })?;
        Ok(buf)
    }
}

/// Bytes the filesystem holding `dir` has free for new data (`statvfs`'s
/// blocks available to unprivileged users: root's reserved blocks, where a
/// filesystem has them, are left alone).
pub fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{} contains a NUL byte", dir.display())))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by the call.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(Error::io(
            format!("reading the free space of {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // Both are u32 on some targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
