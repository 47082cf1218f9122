//! Recipes: how to rebuild a blob. A recipe is an ordered list of segments
//! (literal bytes, or a reference to a chunk by hash and length), cut into pages
//! so a ranged read decodes only the pages it touches. Each page is stored
//! zstd-compressed (tar headers compress well) under its own index key.
//!
//! Page encoding: varint segment count; per segment varint (len << 1 | is_chunk)
//! and, for a chunk, its 32-byte hash; then every literal's bytes, in order.

use super::pack::Hash;
use crate::encoding::{put_varint, Reader};
use crate::error::{Error, Result};

const PAGE_MAX_SEGMENTS: usize = 2048;
const PAGE_MAX_LITERAL: usize = 256 * 1024;
const PAGE_ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(Vec<u8>),
    Chunk { hash: Hash, len: u32 },
}

impl Segment {
    pub fn len(&self) -> u64 {
        match self {
            Segment::Literal(b) => b.len() as u64,
            Segment::Chunk { len, .. } => *len as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds a recipe's pages as segments arrive.
#[derive(Default)]
pub struct RecipeBuilder {
    /// Encoded, compressed pages done so far.
    pages: Vec<Vec<u8>>,
    /// Blob offset at which each page starts.
    page_starts: Vec<u64>,
    cur: Vec<(u64, Option<Hash>)>,
    cur_literal: Vec<u8>,
    cur_start: u64,
    offset: u64,
    chunk_refs: u64,
    literal_bytes: u64,
}

impl RecipeBuilder {
    pub fn literal(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        // Coalesce with the previous literal so headers and padding form one segment.
        match self.cur.last_mut() {
            Some((len, None)) => *len += b.len() as u64,
            _ => self.cur.push((b.len() as u64, None)),
        }
        self.cur_literal.extend_from_slice(b);
        self.offset += b.len() as u64;
        self.literal_bytes += b.len() as u64;
        if self.cur_literal.len() >= PAGE_MAX_LITERAL {
            self.close_page();
        }
    }

    pub fn chunk(&mut self, hash: Hash, len: u32) {
        self.cur.push((len as u64, Some(hash)));
        self.offset += len as u64;
        self.chunk_refs += 1;
        if self.cur.len() >= PAGE_MAX_SEGMENTS {
            self.close_page();
        }
    }

    fn close_page(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        let mut enc = Vec::with_capacity(self.cur.len() * 36 + self.cur_literal.len() + 8);
        put_varint(&mut enc, self.cur.len() as u64);
        for (len, hash) in &self.cur {
            put_varint(&mut enc, len << 1 | hash.is_some() as u64);
            if let Some(h) = hash {
                enc.extend_from_slice(h);
            }
        }
        enc.extend_from_slice(&self.cur_literal);
        let page =
            zstd::bulk::compress(&enc, PAGE_ZSTD_LEVEL).expect("zstd compression of a recipe page");
        self.pages.push(page);
        self.page_starts.push(self.cur_start);
        self.cur.clear();
        self.cur_literal.clear();
        self.cur_start = self.offset;
    }

    pub fn size(&self) -> u64 {
        self.offset
    }

    pub fn finish(mut self) -> Recipe {
        self.close_page();
        Recipe {
            pages: self.pages,
            page_starts: self.page_starts,
            chunk_refs: self.chunk_refs,
            literal_bytes: self.literal_bytes,
            size: self.offset,
        }
    }
}

pub struct Recipe {
    /// Length of the stream the recipe rebuilds.
    pub size: u64,
    pub pages: Vec<Vec<u8>>,
    pub page_starts: Vec<u64>,
    pub chunk_refs: u64,
    pub literal_bytes: u64,
}

impl Recipe {
    pub fn stored_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.len() as u64).sum::<u64>() + self.page_starts.len() as u64 * 8
    }
}

/// Decodes one stored page into its segments.
pub fn decode_page(stored: &[u8]) -> Result<Vec<Segment>> {
    let enc = zstd::stream::decode_all(stored)
        .map_err(|e| Error::DataLoss(format!("recipe page does not decompress: {e}")))?;
    let mut r = Reader::new(&enc, "recipe page");
    let n = r.varint()? as usize;
    if n > PAGE_MAX_SEGMENTS * 4 {
        return Err(Error::DataLoss(
            "recipe page claims too many segments".into(),
        ));
    }
    let mut heads = Vec::with_capacity(n);
    for _ in 0..n {
        let v = r.varint()?;
        let hash = if v & 1 == 1 {
            Some(r.array::<32>()?)
        } else {
            None
        };
        heads.push((v >> 1, hash));
    }
    let mut segs = Vec::with_capacity(n);
    for (len, hash) in heads {
        segs.push(match hash {
            Some(hash) => Segment::Chunk {
                hash,
                len: u32::try_from(len)
                    .map_err(|_| Error::DataLoss("recipe chunk length too large".into()))?,
            },
            None => Segment::Literal(r.bytes(len as usize)?.to_vec()),
        });
    }
    if !r.is_empty() {
        return Err(Error::DataLoss("recipe page has trailing bytes".into()));
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_split_and_decode_to_the_same_segments() {
        let mut b = RecipeBuilder::default();
        let mut expect = Vec::new();
        for i in 0..5000u32 {
            b.literal(&[i as u8; 100]);
            b.literal(&[1, 2, 3]);
            let h = [i as u8; 32];
            b.chunk(h, i + 1);
            let mut lit = vec![i as u8; 100];
            lit.extend_from_slice(&[1, 2, 3]);
            expect.push(Segment::Literal(lit));
            expect.push(Segment::Chunk {
                hash: h,
                len: i + 1,
            });
        }
        let size = b.size();
        let r = b.finish();
        assert!(r.pages.len() > 1);
        let mut got = Vec::new();
        let mut off = 0;
        for (i, p) in r.pages.iter().enumerate() {
            assert_eq!(r.page_starts[i], off);
            for s in decode_page(p).unwrap() {
                off += s.len();
                got.push(s);
            }
        }
        assert_eq!(off, size);
        assert_eq!(got, expect);
        assert!(decode_page(b"garbage").is_err());
    }
}
