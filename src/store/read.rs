//! Reads: a byte range of a blob, rebuilt from its recipe. Only the recipe pages
//! the range touches are decoded; chunks come from decoded blocks, cached.

use super::index::{cf, page_key, Content, CF_CHUNKS, CF_RECIPES};
use super::pack::{self, ChunkLoc};
use super::recipe::{decode_page, Segment};
use super::Store;
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::sync::Arc;

impl Store {
    /// Streams `[offset, offset+length)` of a stored content to `out` (length 0:
    /// to the end). `out` returns false to stop early (the reader went away).
    pub fn read_range(
        &self,
        digest: &Digest,
        content: &Content,
        offset: u64,
        length: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.read_range_with(digest, content, offset, length, false, out)
            .map(|_| ())
    }

    /// Like `read_range`, but only from the caches: returns false, having
    /// written some prefix or nothing, when a page or block would have to come
    /// from disk. Lets a caller serve small reads without a thread hand-off.
    pub fn read_range_cached(
        &self,
        digest: &Digest,
        content: &Content,
        offset: u64,
        length: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<bool> {
        self.read_range_with(digest, content, offset, length, true, out)
    }

    fn read_range_with(
        &self,
        digest: &Digest,
        content: &Content,
        offset: u64,
        length: u64,
        cached_only: bool,
        out: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<bool> {
        if offset > content.size {
            return Err(Error::OutOfRange(format!(
                "offset {offset} is past the end of {digest} ({} bytes)",
                content.size
            )));
        }
        let end = if length == 0 {
            content.size
        } else {
            offset.saturating_add(length).min(content.size)
        };
        if offset == end {
            return Ok(true);
        }
        let first_page = content
            .page_starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        for page in first_page..content.page_starts.len() {
            let mut pos = content.page_starts[page];
            if pos >= end {
                break;
            }
            let Some(segs) = self.page(digest, page as u32, cached_only)? else {
                return Ok(false);
            };
            for seg in segs.iter() {
                let seg_end = pos + seg.len();
                if seg_end > offset && pos < end {
                    let from = offset.saturating_sub(pos) as usize;
                    let to = (end.min(seg_end) - pos) as usize;
                    let keep_going = match seg {
                        Segment::Literal(b) => out(&b[from..to])?,
                        Segment::Chunk { hash, len } => {
                            let Some((block, loc)) =
                                self.chunk_block(hash, *len, digest, cached_only)?
                            else {
                                return Ok(false);
                            };
                            let base = loc.offset_in_block as usize;
                            out(&block[base + from..base + to])?
                        }
                    };
                    if !keep_going {
                        return Ok(true);
                    }
                }
                pos = seg_end;
                if pos >= end {
                    return Ok(true);
                }
            }
        }
        // Pages ended before the range did: the recipe is shorter than its size.
        Err(Error::DataLoss(format!(
            "the recipe of {digest} ends before its recorded size"
        )))
    }

    /// A decoded recipe page, from the cache when it is there.
    fn page(
        &self,
        digest: &Digest,
        page: u32,
        cached_only: bool,
    ) -> Result<Option<Arc<Vec<Segment>>>> {
        if let Some(p) = self.inner.pages.get(&(*digest, page)) {
            return Ok(Some(p));
        }
        if cached_only {
            return Ok(None);
        }
        let stored = self
            .db()
            .get_pinned_cf(cf(self.db(), CF_RECIPES), page_key(digest, page))?
            .ok_or_else(|| Error::DataLoss(format!("recipe page {page} of {digest} is missing")))?;
        let segs = Arc::new(decode_page(&stored)?);
        self.inner.pages.insert((*digest, page), segs.clone());
        Ok(Some(segs))
    }

    /// The decoded block that holds a chunk, and the chunk's place in it.
    fn chunk_block(
        &self,
        hash: &pack::Hash,
        len: u32,
        digest: &Digest,
        cached_only: bool,
    ) -> Result<Option<(Arc<Vec<u8>>, ChunkLoc)>> {
        match self.chunk_block_once(hash, len, digest, cached_only) {
            // Garbage collection moved the chunk between lookup and read: look again.
            Err(Error::Unavailable(_)) => self.chunk_block_once(hash, len, digest, cached_only),
            other => other,
        }
    }

    fn chunk_block_once(
        &self,
        hash: &pack::Hash,
        len: u32,
        digest: &Digest,
        cached_only: bool,
    ) -> Result<Option<(Arc<Vec<u8>>, ChunkLoc)>> {
        let loc = self
            .db()
            .get_pinned_cf(cf(self.db(), CF_CHUNKS), hash)?
            .ok_or_else(|| {
                Error::DataLoss(format!(
                    "chunk {} of {digest} is missing from the index",
                    hex::encode(hash)
                ))
            })
            .and_then(|v| ChunkLoc::decode(&v))?;
        if loc.len != len || loc.offset_in_block.checked_add(len).is_none() {
            return Err(Error::DataLoss(format!(
                "chunk {} has a different length in the index",
                hex::encode(hash)
            )));
        }
        let inner = &self.inner;
        if let Some(b) = inner.blocks.get(&loc.block_key()) {
            return Ok(Some((b, loc)));
        }
        if cached_only {
            return Ok(None);
        }
        let rec = inner
            .packs
            .read_at(loc.pack, loc.block_offset, loc.block_len as usize)?;
        let what = || {
            format!(
                "block at pack {} offset {} (holding chunks of {digest})",
                loc.pack, loc.block_offset
            )
        };
        let decoded = pack::decode_block(&rec, &what)?;
        if (loc.offset_in_block + len) as usize > decoded.plain.len() {
            return Err(Error::DataLoss(format!(
                "{}: chunk lies outside the block",
                what()
            )));
        }
        let block = Arc::new(decoded.plain);
        inner.blocks.insert(loc.block_key(), block.clone());
        Ok(Some((block, loc)))
    }
}
