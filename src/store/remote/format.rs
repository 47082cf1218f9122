//! The bucket's object formats. Every object is written once under a name no
//! other write uses (writer id, time, random suffix), so the repository needs
//! no conditional write from the object store (Garage ignores them).
//!
//! - **Pack piece** `packs/<name>`: the block records one ingest appended to
//!   its local pack (`src/store/pack.rs` format, unchanged), then a footer
//!   naming every chunk and where it is, so the chunk index can be rebuilt
//!   from the packs alone:
//!   `n × (blake3[32] | block offset u64 | block len u32 | offset in block u32 | len u32)`
//!   then the trailer `n u32 | crc32c u32 (of the entries and n) | "STRF" | version u8 = 1 | 3 reserved`.
//! - **Content** `contents/<sha256 hex>/<name>`: what a reader needs to
//!   rebuild one blob: its recipes, plan, prefix name, and the location of
//!   every chunk they name. `"STRC" | version u8 = 1 | 3 reserved | crc32c u32`,
//!   then one zstd frame of the body (see `ContentObject::encode`).
//! - **Segment** `segments/<time ms, 13 digits>-<writer>-<random>`: blob
//!   records put and deleted by one commit. The last write of a commit: a
//!   blob is in the repository once its segment is. `"STRS" | version u8 = 1 |
//!   3 reserved | crc32c u32`, then the body (see `Segment::encode`).
//!   Version 2 (written by compaction only: the newest records of many
//!   segments, `src/store/compact.rs`) carries each record's own time.
//! - **Moves** `moves/<writer>-<time ms>-<random>`: where compaction copied
//!   small pieces: `(from piece, to piece, base, len)`, the from piece's
//!   block records being bytes `base..base + len` of the to piece. Never
//!   dropped: content objects keep naming the from pieces. `"STRM" |
//!   version u8 = 1 | 3 reserved | crc32c u32`, then the body.

use crate::digest::Digest;
use crate::encoding::{put_varint, Reader};
use crate::error::{Error, Result};
use crate::split::Hash;

const PIECE_MAGIC: &[u8; 4] = b"STRF";
const CONTENT_MAGIC: &[u8; 4] = b"STRC";
const SEGMENT_MAGIC: &[u8; 4] = b"STRS";
const MOVES_MAGIC: &[u8; 4] = b"STRM";
const VERSION: u8 = 1;
/// A segment whose records carry their own times (compaction's).
const SEGMENT_TIMED: u8 = 2;
pub const FOOTER_ENTRY_LEN: usize = 52;
pub const TRAILER_LEN: usize = 16;
/// A recipe page, a plan or a name this long is damage, not data.
const MAX_FIELD: u64 = 1 << 30;

/// A chunk's place in one bucket object (offsets from the object's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjLoc {
    pub block_offset: u64,
    pub block_len: u32,
    pub offset_in_block: u32,
    pub len: u32,
}

/// Encodes a pack piece's footer and trailer for `locs`.
pub fn piece_footer(locs: &[(Hash, ObjLoc)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(locs.len() * FOOTER_ENTRY_LEN + TRAILER_LEN);
    for (h, l) in locs {
        out.extend_from_slice(h);
        out.extend_from_slice(&l.block_offset.to_le_bytes());
        out.extend_from_slice(&l.block_len.to_le_bytes());
        out.extend_from_slice(&l.offset_in_block.to_le_bytes());
        out.extend_from_slice(&l.len.to_le_bytes());
    }
    out.extend_from_slice(&(locs.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(PIECE_MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out
}

/// How many footer bytes precede a piece's trailer (read the last
/// `TRAILER_LEN` bytes first).
pub fn piece_footer_len(trailer: &[u8]) -> Result<usize> {
    if trailer.len() != TRAILER_LEN
        || &trailer[8..12] != PIECE_MAGIC
        || trailer[12..16] != [VERSION, 0, 0, 0]
    {
        return Err(Error::DataLoss(
            "pack piece has no strata footer (wrong magic or version)".into(),
        ));
    }
    let n = u32::from_le_bytes(trailer[0..4].try_into().unwrap()) as usize;
    Ok(n * FOOTER_ENTRY_LEN)
}

/// Decodes a piece's footer (`footer` = the entries followed by the trailer).
pub fn parse_piece_footer(footer: &[u8]) -> Result<Vec<(Hash, ObjLoc)>> {
    if footer.len() < TRAILER_LEN {
        return Err(Error::DataLoss("pack piece footer is cut short".into()));
    }
    let (body, trailer) = footer.split_at(footer.len() - TRAILER_LEN);
    if piece_footer_len(trailer)? != body.len() {
        return Err(Error::DataLoss(
            "pack piece footer has the wrong length".into(),
        ));
    }
    let mut crc_in = body.to_vec();
    crc_in.extend_from_slice(&trailer[0..4]);
    if crc32c::crc32c(&crc_in) != u32::from_le_bytes(trailer[4..8].try_into().unwrap()) {
        return Err(Error::DataLoss(
            "pack piece footer fails its checksum".into(),
        ));
    }
    Ok(body
        .chunks_exact(FOOTER_ENTRY_LEN)
        .map(|e| {
            let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().unwrap());
            (
                e[0..32].try_into().unwrap(),
                ObjLoc {
                    block_offset: u64::from_le_bytes(e[32..40].try_into().unwrap()),
                    block_len: u32_at(40),
                    offset_in_block: u32_at(44),
                    len: u32_at(48),
                },
            )
        })
        .collect())
}

/// One recipe (plain or raw) as the content object carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipeParts {
    pub size: u64,
    pub chunk_refs: u64,
    pub literal_bytes: u64,
    pub page_starts: Vec<u64>,
    pub pages: Vec<Vec<u8>>,
}

/// Everything a daemon needs to serve one content it did not store itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentObject {
    pub digest: Digest,
    pub size: u64,
    /// 0 raw, 1 tar, 2 tar then raw (as in the index's `Content`).
    pub layout: u8,
    pub recipe: RecipeParts,
    pub raw: RecipeParts,
    /// An encoded `codec::plan::Plan`, for a compressed blob.
    pub plan: Option<Vec<u8>>,
    pub prefix: Option<Hash>,
    /// Pack pieces the locations point into.
    pub objects: Vec<String>,
    /// Every chunk the recipes name: (hash, index in `objects`, place).
    pub locs: Vec<(Hash, u32, ObjLoc)>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn get_bytes<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    let n = r.varint()?;
    if n > MAX_FIELD {
        return Err(Error::DataLoss(format!("bucket record field of {n} bytes")));
    }
    r.bytes(n as usize)
}

fn get_count(r: &mut Reader<'_>, max: u64) -> Result<usize> {
    let n = r.varint()?;
    if n > max {
        return Err(Error::DataLoss(format!(
            "bucket record count {n} is out of bounds"
        )));
    }
    Ok(n as usize)
}

fn put_recipe(out: &mut Vec<u8>, r: &RecipeParts) {
    put_varint(out, r.size);
    put_varint(out, r.chunk_refs);
    put_varint(out, r.literal_bytes);
    put_varint(out, r.pages.len() as u64);
    for (s, p) in r.page_starts.iter().zip(&r.pages) {
        put_varint(out, *s);
        put_bytes(out, p);
    }
}

fn get_recipe(r: &mut Reader<'_>) -> Result<RecipeParts> {
    let size = r.varint()?;
    let chunk_refs = r.varint()?;
    let literal_bytes = r.varint()?;
    let n = get_count(r, 1 << 24)?;
    let mut out = RecipeParts {
        size,
        chunk_refs,
        literal_bytes,
        page_starts: Vec::with_capacity(n.min(4096)),
        pages: Vec::with_capacity(n.min(4096)),
    };
    for _ in 0..n {
        out.page_starts.push(r.varint()?);
        out.pages.push(get_bytes(r)?.to_vec());
    }
    Ok(out)
}

/// Frames a body: magic, version, reserved, crc32c of the body, the body.
fn frame(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    frame_version(magic, VERSION, body)
}

fn frame_version(magic: &[u8; 4], version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(magic);
    out.extend_from_slice(&[version, 0, 0, 0]);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn unframe<'a>(magic: &[u8; 4], b: &'a [u8], what: &str) -> Result<&'a [u8]> {
    unframe_versions(magic, &[VERSION], b, what).map(|(_, body)| body)
}

/// The version and body of a framed object of one of `versions`.
fn unframe_versions<'a>(
    magic: &[u8; 4],
    versions: &[u8],
    b: &'a [u8],
    what: &str,
) -> Result<(u8, &'a [u8])> {
    if b.len() < 12 || &b[0..4] != magic {
        return Err(Error::DataLoss(format!("{what} has the wrong magic")));
    }
    if !versions.contains(&b[4]) {
        return Err(Error::FailedPrecondition(format!(
            "{what} has format version {}; this strata reads {versions:?}",
            b[4]
        )));
    }
    let body = &b[12..];
    if crc32c::crc32c(body) != u32::from_le_bytes(b[8..12].try_into().unwrap()) {
        return Err(Error::DataLoss(format!("{what} fails its checksum")));
    }
    Ok((b[4], body))
}

impl ContentObject {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.digest.0);
        put_varint(&mut b, self.size);
        b.push(self.layout);
        put_recipe(&mut b, &self.recipe);
        put_recipe(&mut b, &self.raw);
        match &self.plan {
            None => put_varint(&mut b, 0),
            Some(p) => {
                put_varint(&mut b, p.len() as u64 + 1);
                b.extend_from_slice(p);
            }
        }
        match &self.prefix {
            None => b.push(0),
            Some(h) => {
                b.push(1);
                b.extend_from_slice(h);
            }
        }
        put_varint(&mut b, self.objects.len() as u64);
        for o in &self.objects {
            put_bytes(&mut b, o.as_bytes());
        }
        put_varint(&mut b, self.locs.len() as u64);
        for (h, obj, l) in &self.locs {
            b.extend_from_slice(h);
            put_varint(&mut b, *obj as u64);
            put_varint(&mut b, l.block_offset);
            put_varint(&mut b, l.block_len as u64);
            put_varint(&mut b, l.offset_in_block as u64);
            put_varint(&mut b, l.len as u64);
        }
        // Pages are zstd already; the locations and hashes barely compress,
        // but one frame keeps the format simple and costs nothing on read.
        let z = zstd::bulk::compress(&b, 3)
            .map_err(|e| Error::Internal(format!("compressing a content object: {e}")))?;
        Ok(frame(CONTENT_MAGIC, &z))
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let z = unframe(CONTENT_MAGIC, b, "content object")?;
        let body = zstd::stream::decode_all(z)
            .map_err(|e| Error::DataLoss(format!("content object does not decompress: {e}")))?;
        let mut r = Reader::new(&body, "content object");
        let digest = Digest(r.array()?);
        let size = r.varint()?;
        let layout = r.u8()?;
        let recipe = get_recipe(&mut r)?;
        let raw = get_recipe(&mut r)?;
        let plan = match r.varint()? {
            0 => None,
            n if n > MAX_FIELD => {
                return Err(Error::DataLoss("content object plan too long".into()))
            }
            n => Some(r.bytes(n as usize - 1)?.to_vec()),
        };
        let prefix = match r.u8()? {
            0 => None,
            _ => Some(r.array()?),
        };
        let n = get_count(&mut r, 1 << 24)?;
        let mut objects = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let name = std::str::from_utf8(get_bytes(&mut r)?)
                .map_err(|_| Error::DataLoss("content object names a non-UTF-8 object".into()))?;
            objects.push(name.to_string());
        }
        let n = get_count(&mut r, 1 << 32)?;
        let mut locs = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let h: Hash = r.array()?;
            let obj = r.varint()?;
            if obj >= objects.len() as u64 {
                return Err(Error::DataLoss(
                    "content object location names no object".into(),
                ));
            }
            let small = |v: u64| {
                u32::try_from(v)
                    .map_err(|_| Error::DataLoss("content object location overflows".into()))
            };
            let block_offset = r.varint()?;
            let block_len = small(r.varint()?)?;
            let offset_in_block = small(r.varint()?)?;
            let len = small(r.varint()?)?;
            locs.push((
                h,
                obj as u32,
                ObjLoc {
                    block_offset,
                    block_len,
                    offset_in_block,
                    len,
                },
            ));
        }
        if !r.is_empty() {
            return Err(Error::DataLoss("content object has trailing bytes".into()));
        }
        Ok(ContentObject {
            digest,
            size,
            layout,
            recipe,
            raw,
            plan,
            prefix,
            objects,
            locs,
        })
    }
}

/// One blob record change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The blob is held by the namespace, with this `BlobMeta` (JSON); its
    /// content is the content object `content` (read by name: a GET after
    /// a PUT is consistent where a listing may lag).
    Put {
        ns: String,
        digest: Digest,
        meta: Vec<u8>,
        content: String,
    },
    Delete {
        ns: String,
        digest: Digest,
    },
}

/// The blob record changes of one commit (or, compacted, the newest
/// records of many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Milliseconds since the epoch when written: segments apply in this order.
    pub time_ms: u64,
    pub writer: [u8; 8],
    pub records: Vec<Record>,
    /// Each record's own time (a compacted segment); empty: all `time_ms`.
    pub times: Vec<u64>,
}

impl Segment {
    /// The time of record `i`: last writer wins, per blob.
    pub fn time_of(&self, i: usize) -> u64 {
        self.times.get(i).copied().unwrap_or(self.time_ms)
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.times.is_empty() || self.times.len() == self.records.len(),
            "a time for every record"
        );
        let mut b = Vec::new();
        put_varint(&mut b, self.time_ms);
        b.extend_from_slice(&self.writer);
        put_varint(&mut b, self.records.len() as u64);
        for (i, r) in self.records.iter().enumerate() {
            if !self.times.is_empty() {
                put_varint(&mut b, self.times[i]);
            }
            match r {
                Record::Put {
                    ns,
                    digest,
                    meta,
                    content,
                } => {
                    b.push(1);
                    put_bytes(&mut b, ns.as_bytes());
                    b.extend_from_slice(&digest.0);
                    put_bytes(&mut b, meta);
                    put_bytes(&mut b, content.as_bytes());
                }
                Record::Delete { ns, digest } => {
                    b.push(2);
                    put_bytes(&mut b, ns.as_bytes());
                    b.extend_from_slice(&digest.0);
                }
            }
        }
        match self.times.is_empty() {
            true => frame(SEGMENT_MAGIC, &b),
            false => frame_version(SEGMENT_MAGIC, SEGMENT_TIMED, &b),
        }
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let (version, body) =
            unframe_versions(SEGMENT_MAGIC, &[VERSION, SEGMENT_TIMED], b, "segment")?;
        let mut r = Reader::new(body, "segment");
        let time_ms = r.varint()?;
        let writer = r.array()?;
        let n = get_count(&mut r, MAX_SEGMENT_RECORDS as u64)?;
        let mut records = Vec::with_capacity(n.min(1024));
        let mut times = Vec::new();
        for _ in 0..n {
            if version == SEGMENT_TIMED {
                times.push(r.varint()?);
            }
            let tag = r.u8()?;
            let ns = String::from_utf8(get_bytes(&mut r)?.to_vec())
                .map_err(|_| Error::DataLoss("segment names a non-UTF-8 namespace".into()))?;
            let digest = Digest(r.array()?);
            records.push(match tag {
                1 => Record::Put {
                    ns,
                    digest,
                    meta: get_bytes(&mut r)?.to_vec(),
                    content: String::from_utf8(get_bytes(&mut r)?.to_vec()).map_err(|_| {
                        Error::DataLoss("segment names a non-UTF-8 content object".into())
                    })?,
                },
                2 => Record::Delete { ns, digest },
                t => {
                    return Err(Error::DataLoss(format!(
                        "segment record of unknown kind {t}"
                    )))
                }
            });
        }
        if !r.is_empty() {
            return Err(Error::DataLoss("segment has trailing bytes".into()));
        }
        Ok(Segment {
            time_ms,
            writer,
            records,
            times,
        })
    }
}

/// Most records a segment holds (compaction writes several past this).
pub const MAX_SEGMENT_RECORDS: usize = 1 << 20;

/// Where compaction copied one small piece: its block records are bytes
/// `base..base + len` of piece `to`, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub base: u64,
    pub len: u64,
}

pub fn encode_moves(moves: &[Move]) -> Vec<u8> {
    let mut b = Vec::new();
    put_varint(&mut b, moves.len() as u64);
    for m in moves {
        put_bytes(&mut b, m.from.as_bytes());
        put_bytes(&mut b, m.to.as_bytes());
        put_varint(&mut b, m.base);
        put_varint(&mut b, m.len);
    }
    frame(MOVES_MAGIC, &b)
}

pub fn decode_moves(b: &[u8]) -> Result<Vec<Move>> {
    let body = unframe(MOVES_MAGIC, b, "moves object")?;
    let mut r = Reader::new(body, "moves object");
    let n = get_count(&mut r, 1 << 24)?;
    let name = |r: &mut Reader<'_>| -> Result<String> {
        String::from_utf8(get_bytes(r)?.to_vec())
            .map_err(|_| Error::DataLoss("moves object names a non-UTF-8 piece".into()))
    };
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        out.push(Move {
            from: name(&mut r)?,
            to: name(&mut r)?,
            base: r.varint()?,
            len: r.varint()?,
        });
    }
    if !r.is_empty() {
        return Err(Error::DataLoss("moves object has trailing bytes".into()));
    }
    Ok(out)
}

/// A segment's name sorts by time: `segments/<ms, 13 digits>-<writer>-<random>`.
pub fn segment_name(time_ms: u64, writer: &[u8; 8], random: u32) -> String {
    format!(
        "segments/{time_ms:013}-{}-{random:08x}",
        hex::encode(writer)
    )
}

/// The time a segment name starts with.
pub fn segment_time(name: &str) -> Option<u64> {
    name.rsplit('/').next()?.get(0..13)?.parse().ok()
}

/// Where the content objects of one digest live (list this prefix).
pub fn content_dir(d: &Digest) -> String {
    format!("contents/{}/", hex::encode(d.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(i: u64) -> ObjLoc {
        ObjLoc {
            block_offset: i * 1000,
            block_len: 900 + i as u32,
            offset_in_block: 7 * i as u32,
            len: 33 + i as u32,
        }
    }

    #[test]
    fn piece_footers_round_trip_and_refuse_damage() {
        let locs: Vec<_> = (0..5u8).map(|i| ([i; 32], loc(i as u64))).collect();
        let f = piece_footer(&locs);
        assert_eq!(f.len(), 5 * FOOTER_ENTRY_LEN + TRAILER_LEN);
        assert_eq!(
            piece_footer_len(&f[f.len() - TRAILER_LEN..]).unwrap(),
            5 * FOOTER_ENTRY_LEN
        );
        assert_eq!(parse_piece_footer(&f).unwrap(), locs);
        for i in 0..f.len() {
            let mut d = f.clone();
            d[i] ^= 0x10;
            assert!(parse_piece_footer(&d).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn content_objects_round_trip_and_refuse_damage() {
        let c = ContentObject {
            digest: Digest([9; 32]),
            size: 12345,
            layout: 1,
            recipe: RecipeParts {
                size: 12345,
                chunk_refs: 2,
                literal_bytes: 512,
                page_starts: vec![0, 6000],
                pages: vec![vec![1, 2, 3], vec![4, 5]],
            },
            raw: RecipeParts::default(),
            plan: Some(vec![1, 1, 0, 0]),
            prefix: Some([3; 32]),
            objects: vec!["packs/a".into(), "packs/b".into()],
            locs: vec![([1; 32], 0, loc(1)), ([2; 32], 1, loc(2))],
        };
        let b = c.encode().unwrap();
        assert_eq!(ContentObject::decode(&b).unwrap(), c);
        for i in [0, 4, 9, 12, b.len() - 1] {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(ContentObject::decode(&d).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn segments_round_trip_and_names_sort_by_time() {
        let s = Segment {
            time_ms: 1_765_000_000_123,
            writer: [0xab; 8],
            records: vec![
                Record::Put {
                    ns: "default".into(),
                    digest: Digest([1; 32]),
                    meta: b"{}".to_vec(),
                    content: "contents/01/x".into(),
                },
                Record::Delete {
                    ns: "k8s.io".into(),
                    digest: Digest([2; 32]),
                },
            ],
            times: Vec::new(),
        };
        let b = s.encode();
        assert_eq!(b[4], 1, "a commit's segment stays version 1");
        assert_eq!(Segment::decode(&b).unwrap(), s);
        assert_eq!(s.time_of(1), 1_765_000_000_123);
        let timed = Segment {
            times: vec![5, 7],
            ..s.clone()
        };
        let t = timed.encode();
        assert_eq!(t[4], 2);
        assert_eq!(Segment::decode(&t).unwrap(), timed);
        assert_eq!(Segment::decode(&t).unwrap().time_of(1), 7);
        let mut d = b.clone();
        *d.last_mut().unwrap() ^= 1;
        assert!(Segment::decode(&d).is_err());
        let a = segment_name(999, &[1; 8], 5);
        let z = segment_name(1000, &[0; 8], 0);
        assert!(a < z);
        assert_eq!(segment_time(&a), Some(999));
    }

    #[test]
    fn moves_round_trip_and_refuse_damage() {
        let m = vec![
            Move {
                from: "packs/a.pack".into(),
                to: "packs/c.pack".into(),
                base: 0,
                len: 4096,
            },
            Move {
                from: "packs/b.pack".into(),
                to: "packs/c.pack".into(),
                base: 4096,
                len: 1 << 33,
            },
        ];
        let b = encode_moves(&m);
        assert_eq!(&b[0..5], b"STRM\x01");
        assert_eq!(decode_moves(&b).unwrap(), m);
        for i in [8, 20, b.len() - 1] {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(decode_moves(&d).is_err(), "byte {i} flipped");
        }
        assert!(decode_moves(&b[..b.len() - 1]).is_err());
    }
}
