//! The `chunks` family's records: where a chunk is and how many recipe
//! references it has, in one value (format `strata-2`; `strata-1` kept the
//! count in a family of its own, which repeated every 32-byte key).
//!
//! Value: `[ChunkLoc, 24 bytes]` (absent when no location is known) then the
//! count as a zigzag varint. A value shorter than a location is a count only.
//!
//! Writers never read-modify-write a value: they merge operands of the same
//! shape (a location, or a count delta), and RocksDB folds them in sequence
//! order. The fold keeps the last location and sums the counts, which is
//! associative, so RocksDB may combine operands ahead of a base value. That
//! lets a commit add references while garbage collection moves the chunk's
//! location, without either one's write undoing the other's.

use super::index::{cf, CF_CHUNKS, CF_META, CF_REFCOUNTS};
use super::pack::{ChunkLoc, Hash};
use crate::encoding::{put_varint, Reader};
use crate::error::{Error, Result};
use rocksdb::{MergeOperands, WriteBatch, DB};

/// The merge operator's name: RocksDB refuses to open a family written with
/// another operator's name.
pub const MERGE_NAME: &str = "strata-chunk-entry-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkEntry {
    pub loc: Option<ChunkLoc>,
    /// Recipe references; negative only through a bug, which `verify` reports.
    pub refs: i64,
}

impl ChunkEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ChunkLoc::ENCODED_LEN + 2);
        if let Some(l) = &self.loc {
            out.extend_from_slice(&l.encode());
        }
        put_varint(&mut out, zigzag(self.refs));
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let (loc, rest) = if b.len() > ChunkLoc::ENCODED_LEN {
            let (l, rest) = b.split_at(ChunkLoc::ENCODED_LEN);
            (Some(ChunkLoc::decode(l)?), rest)
        } else {
            (None, b)
        };
        let mut r = Reader::new(rest, "chunk entry");
        let refs = unzigzag(r.varint()?);
        if !r.is_empty() {
            return Err(Error::DataLoss("chunk entry has trailing bytes".into()));
        }
        Ok(ChunkEntry { loc, refs })
    }

    /// The operand that sets the location and leaves the count.
    pub fn set_loc(loc: &ChunkLoc) -> Vec<u8> {
        ChunkEntry {
            loc: Some(*loc),
            refs: 0,
        }
        .encode()
    }

    /// The operand that adds `delta` references and leaves the location.
    pub fn add_refs(delta: i64) -> Vec<u8> {
        ChunkEntry {
            loc: None,
            refs: delta,
        }
        .encode()
    }

    /// `self` followed by `later`.
    fn then(self, later: ChunkEntry) -> ChunkEntry {
        ChunkEntry {
            loc: later.loc.or(self.loc),
            refs: self.refs.saturating_add(later.refs),
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The fold of a base value and operands, for full and partial merges alike.
/// A piece that does not decode is logged and left out rather than failing
/// the merge: RocksDB would take a failed merge in a flush or compaction as
/// corruption and refuse every write after it. What is lost shows in
/// `verify` (a chunk without a location, or a count that disagrees).
pub fn merge(key: &[u8], base: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
    let mut acc = ChunkEntry::default();
    for piece in base.into_iter().chain(ops) {
        match ChunkEntry::decode(piece) {
            Ok(e) => acc = acc.then(e),
            Err(e) => tracing::error!(
                chunk = %hex::encode(key),
                error = %e,
                "a chunk record piece does not decode; left out of its merge"
            ),
        }
    }
    Some(acc.encode())
}

/// The chunk's record, if the index has one.
pub fn entry(db: &DB, hash: &Hash) -> Result<Option<ChunkEntry>> {
    db.get_pinned_cf(cf(db, CF_CHUNKS), hash)?
        .map(|v| ChunkEntry::decode(&v))
        .transpose()
}

/// Where the chunk is, if the index knows.
pub fn location(db: &DB, hash: &Hash) -> Result<Option<ChunkLoc>> {
    Ok(entry(db, hash)?.and_then(|e| e.loc))
}

pub fn merge_loc(db: &DB, batch: &mut WriteBatch, hash: &Hash, loc: &ChunkLoc) {
    batch.merge_cf(cf(db, CF_CHUNKS), hash, ChunkEntry::set_loc(loc));
}

pub fn merge_refs(db: &DB, batch: &mut WriteBatch, hash: &Hash, delta: i64) {
    batch.merge_cf(cf(db, CF_CHUNKS), hash, ChunkEntry::add_refs(delta));
}

/// `strata-1` → `strata-2`: each count moves from `refcounts` into its
/// chunk's record, then the old family is emptied and the format written.
/// Idempotent: every step writes whole values computed from both families,
/// so a crash anywhere in it and a rerun give the same index.
pub fn migrate_from_v1(db: &DB) -> Result<u64> {
    const BATCH: usize = 10_000;
    let rc = cf(db, CF_REFCOUNTS);
    let mut moved = 0u64;
    let mut batch = WriteBatch::default();
    let mut first: Option<Vec<u8>> = None;
    let mut last: Option<Vec<u8>> = None;
    for item in db.iterator_cf(rc, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let hash: Hash = k[..]
            .try_into()
            .map_err(|_| Error::DataLoss("bad refcount key in a strata-1 index".into()))?;
        let n = u64::from_le_bytes(
            v[..]
                .try_into()
                .map_err(|_| Error::DataLoss("bad refcount in a strata-1 index".into()))?,
        );
        // The old value is a bare location, or already this format if an
        // earlier run of the migration got this far.
        let loc = match db.get_pinned_cf(cf(db, CF_CHUNKS), hash)? {
            Some(v) if v.len() == ChunkLoc::ENCODED_LEN => Some(ChunkLoc::decode(&v)?),
            Some(v) => ChunkEntry::decode(&v)?.loc,
            None => None,
        };
        let e = ChunkEntry {
            loc,
            refs: n as i64,
        };
        batch.put_cf(cf(db, CF_CHUNKS), hash, e.encode());
        first.get_or_insert_with(|| k.to_vec());
        last = Some(k.to_vec());
        moved += 1;
        if batch.len() >= BATCH {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    // Chunks with a location but no count were only possible as a bug.
    // A count of 0 would let the next collection delete them while a recipe
    // may still name them, so they get 1: kept, and `verify` reports the
    // count that disagrees with the recipes.
    let mut batch = WriteBatch::default();
    let mut uncounted = 0u64;
    for item in db.iterator_cf(cf(db, CF_CHUNKS), rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        if v.len() == ChunkLoc::ENCODED_LEN {
            let e = ChunkEntry {
                loc: Some(ChunkLoc::decode(&v)?),
                refs: 1,
            };
            batch.put_cf(cf(db, CF_CHUNKS), &k, e.encode());
            uncounted += 1;
            if batch.len() >= BATCH {
                db.write(std::mem::take(&mut batch))?;
            }
        }
    }
    db.write(batch)?;
    if uncounted > 0 {
        tracing::warn!(
            chunks = uncounted,
            "strata-1 index: chunks with a location but no count kept with a count of 1; \
             run `strata verify` to see which recipes name them"
        );
    }
    let mut finish = WriteBatch::default();
    if let (Some(a), Some(mut b)) = (first, last) {
        b.push(0);
        finish.delete_range_cf(rc, a, b);
    }
    finish.put_cf(
        cf(db, CF_META),
        super::index::META_FORMAT,
        super::index::FORMAT_VERSION,
    );
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(finish, &wo)?;
    db.flush_cf(rc)?;
    db.compact_range_cf(rc, None::<&[u8]>, None::<&[u8]>);
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(pack: u32) -> ChunkLoc {
        ChunkLoc {
            pack,
            block_offset: 1 << 33,
            block_len: 4000,
            offset_in_block: 77,
            len: 9000,
        }
    }

    #[test]
    fn entries_round_trip_and_a_count_alone_has_no_location() {
        for e in [
            ChunkEntry {
                loc: Some(loc(3)),
                refs: 0,
            },
            ChunkEntry {
                loc: Some(loc(u32::MAX)),
                refs: i64::MAX,
            },
            ChunkEntry {
                loc: None,
                refs: -5,
            },
            ChunkEntry {
                loc: None,
                refs: 1 << 40,
            },
        ] {
            assert_eq!(ChunkEntry::decode(&e.encode()).unwrap(), e);
        }
        assert!(ChunkEntry::decode(&[]).is_err());
        let mut long = ChunkEntry::set_loc(&loc(1));
        long.push(0);
        assert!(ChunkEntry::decode(&long).is_err());
    }

    /// On-disk format: these bytes must keep decoding to these values.
    #[test]
    fn golden_encoding() {
        let e = ChunkEntry {
            loc: Some(loc(2)),
            refs: 3,
        };
        assert_eq!(
            hex::encode(e.encode()),
            "020000000000000002000000a00f00004d00000028230000".to_string() + "06"
        );
        assert_eq!(ChunkEntry::add_refs(-1), vec![1]);
        assert_eq!(ChunkEntry::add_refs(1), vec![2]);
    }

    #[test]
    fn folding_keeps_the_last_location_and_sums_counts_in_any_grouping() {
        let ops = [
            ChunkEntry::add_refs(2),
            ChunkEntry::set_loc(&loc(1)),
            ChunkEntry::add_refs(-1),
            ChunkEntry::set_loc(&loc(9)),
            ChunkEntry::add_refs(4),
        ];
        let d = |b: &Vec<u8>| ChunkEntry::decode(b).unwrap();
        let all = ops.iter().fold(ChunkEntry::default(), |a, o| a.then(d(o)));
        assert_eq!(
            all,
            ChunkEntry {
                loc: Some(loc(9)),
                refs: 5
            }
        );
        // Partial merges group operands before the base: same result.
        let left = d(&ops[0]).then(d(&ops[1]));
        let right = d(&ops[2]).then(d(&ops[3])).then(d(&ops[4]));
        assert_eq!(left.then(right), all);
    }

    /// A garbled piece is left out of the fold; writes go on after the
    /// flush that met it (a failed merge would stop every write).
    #[test]
    fn a_piece_that_does_not_decode_is_left_out_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.set_merge_operator_associative("strata-chunk-entry-v1", merge);
        let db = DB::open(&o, dir.path()).unwrap();
        let k = [7u8; 32];
        db.merge(k, ChunkEntry::add_refs(2)).unwrap();
        db.merge(k, [0xffu8; 40]).unwrap();
        db.merge(k, ChunkEntry::set_loc(&loc(4))).unwrap();
        db.flush().unwrap();
        db.merge(k, ChunkEntry::add_refs(1)).unwrap();
        db.flush().unwrap();
        db.compact_range(None::<&[u8]>, None::<&[u8]>);
        let got = ChunkEntry::decode(&db.get(k).unwrap().unwrap()).unwrap();
        assert_eq!(
            got,
            ChunkEntry {
                loc: Some(loc(4)),
                refs: 3
            }
        );
        db.put(b"after", b"x").unwrap();
    }
}
