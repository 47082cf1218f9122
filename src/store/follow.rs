//! Pushing a known blob again: the chunks a stored recipe expects.
//!
//! A push is hashed and split in full whatever it turns out to be (the
//! digest is known only at the end), so a blob pushed again costs the same
//! FastCDC scan and chunk lookups as the first time, for chunks that are all
//! stored. Instead, once the first `PREFIX_BYTES` of a push's plain stream
//! are split, their segments name it (`PrefixKey`); the `prefixes` column
//! family maps that name to the contents that began the same way, and the
//! push follows one of their recipes (`Follow`): at each chunk start it
//! offers the recipe's chunk at that offset to the splitter, which takes it
//! only when the bytes hash to it and FastCDC would cut there too
//! (`Cutter::confirms`). A taken chunk needs no FastCDC scan and, since the
//! recipe's content holds it, no index lookup. Chunks therefore come out
//! exactly as without hints; a blob that differs just stops matching.

use super::index::{cf, CF_PREFIXES};
use super::pack::Hash;
use super::recipe::Segment;
use super::Store;
use crate::digest::Digest;
use crate::error::Result;
use std::sync::Arc;

/// How much of a stream names it.
pub const PREFIX_BYTES: u64 = 64 * 1024;

/// Hints that fail in a row before a push stops following.
const MAX_MISSES: u32 = 8;

/// Names a stream by its first segments: its literal bytes, and each chunk's
/// offset, hash and length, up to the first chunk that ends at or past
/// `PREFIX_BYTES`. Literal runs may be cut anywhere (recipe pages cut long
/// ones) without changing the name.
#[derive(Default)]
pub struct PrefixKey {
    literals: blake3::Hasher,
    chunks: blake3::Hasher,
    offset: u64,
    key: Option<Hash>,
}

impl PrefixKey {
    pub fn literal(&mut self, b: &[u8]) {
        if self.key.is_none() {
            self.literals.update(b);
            self.offset += b.len() as u64;
        }
    }

    /// Returns the name when this chunk completes it.
    pub fn chunk(&mut self, hash: &Hash, len: u32) -> Option<Hash> {
        if self.key.is_some() {
            return None;
        }
        self.chunks.update(&self.offset.to_le_bytes());
        self.chunks.update(hash);
        self.chunks.update(&len.to_le_bytes());
        self.offset += len as u64;
        if self.offset < PREFIX_BYTES {
            return None;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"strata prefix v1");
        h.update(self.literals.finalize().as_bytes());
        h.update(self.chunks.finalize().as_bytes());
        h.update(&self.offset.to_le_bytes());
        self.key = Some(*h.finalize().as_bytes());
        self.key
    }

    pub fn key(&self) -> Option<Hash> {
        self.key
    }

    /// Feeds a stored recipe's segment; returns the name when it completes it.
    pub fn segment(&mut self, s: &Segment) -> Option<Hash> {
        match s {
            Segment::Literal(b) => {
                self.literal(b);
                None
            }
            Segment::Chunk { hash, len } => self.chunk(hash, *len),
        }
    }
}

/// Key in `prefixes`: the prefix name, then the content's digest.
pub fn prefix_entry(key: &Hash, digest: &Digest) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    k[32..].copy_from_slice(&digest.0);
    k
}

/// A cursor over a stored plain recipe, by offset, fed one page at a time.
pub struct Follow {
    store: Store,
    digest: Digest,
    /// Where each plain page starts.
    page_starts: Vec<u64>,
    page: usize,
    segs: Arc<Vec<Segment>>,
    seg: usize,
    /// Stream offset at which `segs[seg]` starts.
    at: u64,
    misses: u32,
    /// `Inner::chunk_drops` when the content was found to exist: while it
    /// is unchanged, no chunk of the recipe can have been collected.
    pub epoch: u64,
}

impl Store {
    /// A stored recipe to follow for a stream whose prefix name is `key`.
    pub(super) fn follow(&self, key: &Hash) -> Result<Option<Follow>> {
        // Read before checking that the content exists (see `Follow::epoch`).
        let epoch = self.inner.chunk_drops();
        let db = self.db();
        let iter = db.prefix_iterator_cf(cf(db, CF_PREFIXES), key);
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(key) {
                break;
            }
            let Ok(d) = <[u8; 32]>::try_from(&k[32..]) else {
                continue;
            };
            let digest = Digest(d);
            let Some(content) = self.content(&digest)? else {
                continue;
            };
            if content.page_starts.is_empty() {
                continue;
            }
            return Ok(Some(Follow {
                store: self.clone(),
                digest,
                page_starts: content.page_starts,
                page: usize::MAX,
                segs: Arc::new(Vec::new()),
                seg: 0,
                at: 0,
                misses: 0,
                epoch,
            }));
        }
        Ok(None)
    }
}

impl Follow {
    /// The (hash, length) of the recipe's chunk starting at `offset`, if one
    /// does. Offsets only grow between calls.
    pub fn chunk_at(&mut self, offset: u64) -> Option<(Hash, u32)> {
        loop {
            if self.seg >= self.segs.len() {
                if !self.next_page(offset) {
                    return None;
                }
                continue;
            }
            let s = &self.segs[self.seg];
            let end = self.at + s.len();
            if end <= offset {
                self.at = end;
                self.seg += 1;
                continue;
            }
            return match s {
                Segment::Chunk { hash, len } if self.at == offset => Some((*hash, *len)),
                _ => None,
            };
        }
    }

    /// Loads the page holding `offset`; false at the recipe's end (or when
    /// the content went away meanwhile).
    fn next_page(&mut self, offset: u64) -> bool {
        let next = if self.page == usize::MAX {
            self.page_starts.partition_point(|&s| s <= offset).max(1) - 1
        } else {
            self.page + 1
        };
        if next >= self.page_starts.len() {
            return false;
        }
        match self.store.page(&self.digest, next as u32, false) {
            Ok(Some(segs)) => {
                self.page = next;
                self.segs = segs;
                self.seg = 0;
                self.at = self.page_starts[next];
                true
            }
            _ => false,
        }
    }

    /// Counts a hint that did not hold; true when it is time to give up.
    pub fn missed(&mut self) -> bool {
        self.misses += 1;
        self.misses >= MAX_MISSES
    }

    pub fn hit(&mut self) {
        self.misses = 0;
    }
}
