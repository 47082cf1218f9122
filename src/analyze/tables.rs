//! The in-memory tables an analysis fills: every distinct chunk (length,
//! which images hold it) and every distinct file body. Memory grows with the
//! number of distinct chunks, never with the bytes analyzed. Also the
//! distinct blobs of the pass and what its workers share.

use crate::image::BlobRef;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// One distinct blob and every image that holds it.
pub struct Blob {
    pub blob: BlobRef,
    /// Index into the inputs of the first image holding it (its source).
    pub first: usize,
    pub images: ImageSet,
    pub is_layer: bool,
}

/// The tables every worker fills, per setting.
pub struct Shared {
    pub tables: Vec<ChunkTable>,
    pub files: FileTable,
}

pub type Hash = [u8; 32];

/// Keys are BLAKE3 hashes already: their first bytes are as good a hash as any.
#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 |= (*b as u64) << (i * 8);
        }
    }
}

type Fast = BuildHasherDefault<PrefixHasher>;

/// Shards keep the two workers off each other's lock.
const SHARDS: usize = 16;

fn shard(h: &Hash) -> usize {
    // Not the bytes the map hashes (0..8), so each shard's map stays uniform.
    h[31] as usize % SHARDS
}

/// A set of image indices: bit i for image i.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageSet {
    Small(u64),
    Big(Box<[u64]>),
}

impl ImageSet {
    pub fn empty(images: usize) -> ImageSet {
        if images <= 64 {
            ImageSet::Small(0)
        } else {
            ImageSet::Big(vec![0; images.div_ceil(64)].into_boxed_slice())
        }
    }

    pub fn insert(&mut self, i: usize) {
        match self {
            ImageSet::Small(w) => *w |= 1 << i,
            ImageSet::Big(ws) => ws[i / 64] |= 1 << (i % 64),
        }
    }

    pub fn union_with(&mut self, other: &ImageSet) {
        match (self, other) {
            (ImageSet::Small(a), ImageSet::Small(b)) => *a |= b,
            (ImageSet::Big(a), ImageSet::Big(b)) => {
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    *x |= y;
                }
            }
            _ => unreachable!("image sets of one analysis have one size"),
        }
    }

    fn words(&self) -> &[u64] {
        match self {
            ImageSet::Small(w) => std::slice::from_ref(w),
            ImageSet::Big(ws) => ws,
        }
    }

    pub fn count(&self) -> usize {
        self.words().iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words().iter().enumerate().flat_map(|(wi, &w)| {
            (0..64)
                .filter(move |b| w >> b & 1 == 1)
                .map(move |b| wi * 64 + b)
        })
    }
}

pub struct ChunkEntry {
    pub len: u32,
    /// Images whose layers' plain streams hold the chunk (first setting only).
    pub images: Option<ImageSet>,
    /// In a blob's content (its plain stream), not only in rebuild data.
    pub plain: bool,
    /// Written by the store emulation (a block holds it).
    pub stored: bool,
}

/// Every distinct chunk of one chunk-size setting.
pub struct ChunkTable {
    shards: Vec<Mutex<HashMap<Hash, ChunkEntry, Fast>>>,
}

impl Default for ChunkTable {
    fn default() -> Self {
        ChunkTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }
}

impl ChunkTable {
    /// A chunk the store would be handed: true when no blob before had it,
    /// so the store would write it.
    pub fn claim(&self, hash: &Hash, len: u32) -> bool {
        let mut m = self.shards[shard(hash)].lock();
        let e = m.entry(*hash).or_insert(ChunkEntry {
            len,
            images: None,
            plain: false,
            stored: false,
        });
        !std::mem::replace(&mut e.stored, true)
    }

    /// A chunk of a blob's content, held by `images` (when they are counted).
    pub fn add_content(&self, hash: &Hash, len: u32, images: Option<&ImageSet>) {
        let mut m = self.shards[shard(hash)].lock();
        let e = m.entry(*hash).or_insert(ChunkEntry {
            len,
            images: None,
            plain: false,
            stored: false,
        });
        e.plain = true;
        match (e.images.as_mut(), images) {
            (Some(mine), Some(add)) => mine.union_with(add),
            (None, Some(add)) => e.images = Some(add.clone()),
            _ => {}
        }
    }

    /// Visits every distinct chunk.
    pub fn for_each(&self, mut f: impl FnMut(&ChunkEntry)) {
        for s in &self.shards {
            for e in s.lock().values() {
                f(e);
            }
        }
    }
}

/// Distinct file bodies (by BLAKE3 of their bytes) and their total length.
#[derive(Default)]
pub struct FileTable {
    shards: [Mutex<HashSet<Hash, Fast>>; SHARDS],
    distinct_bytes: AtomicU64,
}

impl FileTable {
    pub fn record(&self, hash: &Hash, len: u64) {
        if self.shards[shard(hash)].lock().insert(*hash) {
            self.distinct_bytes.fetch_add(len, Ordering::Relaxed);
        }
    }

    pub fn distinct_bytes(&self) -> u64 {
        self.distinct_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sets_small_and_big() {
        for n in [3, 64, 130] {
            let mut a = ImageSet::empty(n);
            a.insert(0);
            a.insert(n - 1);
            let mut b = ImageSet::empty(n);
            b.insert(1);
            a.union_with(&b);
            assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 1, n - 1]);
            assert_eq!(a.count(), 3);
        }
    }

    #[test]
    fn chunks_are_new_once() {
        let t = ChunkTable::default();
        let mut s = ImageSet::empty(2);
        s.insert(1);
        assert!(t.claim(&[1; 32], 10));
        assert!(!t.claim(&[1; 32], 10));
        t.add_content(&[1; 32], 10, Some(&s));
        t.add_content(&[2; 32], 10, None);
        // Content seen first (a re-read) is still new to the store.
        assert!(t.claim(&[2; 32], 10));
        let mut n = 0;
        t.for_each(|e| {
            n += 1;
            assert!(e.plain && e.stored);
        });
        assert_eq!(n, 2);
    }
}
