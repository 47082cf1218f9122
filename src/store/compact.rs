//! Compaction in the bucket (`--store s3://`), run by the collecting daemon
//! under its lease (`bucket_gc.rs`) once `--s3-compact-after` small objects
//! of a kind have piled up, so small pushes do not leave one small object
//! each for ever:
//!
//! - **Segments** smaller than 1 MiB are merged: the newest records of each
//!   blob among them (every record tied at that time too), each with its own
//!   time, in version 2 segments of at most 65,536 records named with the
//!   time of the merge. The merged segments are written before the old ones
//!   are deleted; a daemon that finds one gone when it reads it lists again
//!   (`sync.rs`). Dropping a record some other record of the same blob
//!   supersedes changes no daemon's view: records apply by their own times.
//!   Delete records stay (a daemon that has not applied one needs it).
//! - **Pieces** smaller than 4 MiB that a live object needs are copied,
//!   byte for byte after their blocks are checked, into pieces of about
//!   64 MiB with one footer, and a `moves/` object says where each went.
//!   Content objects are immutable and keep naming the old pieces: every
//!   daemon resolves those names through the moves (`moves.rs`). The old
//!   pieces are then named by no live object and are marked and deleted
//!   like any other, a grace period later: a daemon reads the marks, then
//!   the moves, so one that knows a mark knows every move made before it.
//! - **Moves objects** are merged into one the same way (moves are never
//!   dropped: an old content object may name a moved piece for ever).

use super::moves::{MOVES_DIR, MOVES_PER_BATCH};
use super::pack::{decode_block, Hash};
use super::remote::format::{
    encode_moves, parse_piece_footer, piece_footer, piece_footer_len, segment_name, segment_time,
    Move, ObjLoc, Record, Segment, TRAILER_LEN,
};
use super::remote::{random_u32, unique_suffix, Listed};
use super::{now_ms, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Pieces smaller than this are compacted together.
const SMALL_PIECE: u64 = 4 << 20;
/// Compaction writes pieces of about this size.
const TARGET_PIECE: u64 = 64 << 20;
/// Segments smaller than this are merged.
const SMALL_SEGMENT: u64 = 1 << 20;
/// Records per merged segment.
const MERGED_RECORDS: usize = 65_536;
/// Segments one run merges at most (the rest wait for the next run).
const MERGE_AT_MOST: usize = 20_000;
/// Deletes between two renewals of the lease.
pub(super) const DELETES_PER_RENEWAL: usize = 1000;

/// The newest records of each blob among the small segments a collection
/// read (ties: all of them, in name order).
#[derive(Default)]
pub(super) struct SmallSegments {
    /// Whether this run merges (enough small segments are listed).
    pub merging: bool,
    /// The newest segment name time listed: a merged segment is named no
    /// earlier, so every daemon's next listing includes it.
    pub newest_name_ms: u64,
    pub names: Vec<String>,
    pub newest: BTreeMap<(String, Digest), (u64, Vec<Record>)>,
}

impl SmallSegments {
    /// Ready for a collection's listing `all`, merging only if at least
    /// `after` small segments are there.
    pub(super) fn new(all: &[Listed], after: usize) -> Self {
        let segments = || all.iter().filter(|l| l.name.starts_with("segments/"));
        SmallSegments {
            merging: segments().filter(|l| l.size < SMALL_SEGMENT).count() >= after,
            newest_name_ms: segments()
                .filter_map(|l| segment_time(&l.name))
                .max()
                .unwrap_or(0),
            ..Default::default()
        }
    }

    /// Whether segment `l` is one to merge.
    pub(super) fn takes(&self, l: &Listed) -> bool {
        self.merging && l.size < SMALL_SEGMENT && self.names.len() < MERGE_AT_MOST
    }

    /// Adds the records of small segment `name` (segments in name order).
    pub(super) fn add(&mut self, name: &str, seg: &Segment) {
        self.names.push(name.to_string());
        for (i, rec) in seg.records.iter().enumerate() {
            let t = seg.time_of(i);
            let (Record::Put { ns, digest, .. } | Record::Delete { ns, digest }) = rec;
            let e = self
                .newest
                .entry((ns.clone(), *digest))
                .or_insert((t, Vec::new()));
            if t > e.0 {
                *e = (t, Vec::new());
            }
            // Ties stay (some daemon may have applied either last), once
            // each: a merge left beside its originals by a crash must not
            // copy them twice.
            if t == e.0 && !e.1.contains(rec) {
                e.1.push(rec.clone());
            }
        }
    }
}

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CompactReport {
    /// Small pieces copied into bigger ones (deleted a grace period later).
    pub pieces: u64,
    pub pieces_written: u64,
    /// Small segments merged (and deleted).
    pub segments: u64,
    pub segments_written: u64,
    /// Moves objects merged (and deleted).
    pub moves_objects: u64,
}

impl Store {
    /// Small objects of a kind that start a compaction (0: never).
    pub(super) fn compact_after(&self) -> usize {
        match self.remote().map(|r| r.cfg.compact_after) {
            None | Some(0) => usize::MAX,
            Some(n) => n.max(2),
        }
    }

    /// Merges the small segments read by this collection, if enough.
    pub(super) fn compact_segments(
        &self,
        renew: &dyn Fn() -> Result<()>,
        small: SmallSegments,
        rep: &mut CompactReport,
    ) -> Result<()> {
        if !small.merging || small.names.len() < 2 {
            return Ok(());
        }
        let r = self.remote().expect("bucket mode");
        let writer = self.writer_id();
        let mut timed: Vec<(u64, Record)> = Vec::new();
        for (_, (t, recs)) in small.newest {
            timed.extend(recs.into_iter().map(|rec| (t, rec)));
        }
        for part in timed.chunks(MERGED_RECORDS) {
            let time_ms = now_ms().max(small.newest_name_ms);
            let seg = Segment {
                time_ms,
                writer,
                times: part.iter().map(|(t, _)| *t).collect(),
                records: part.iter().map(|(_, rec)| rec.clone()).collect(),
            };
            r.put(&segment_name(time_ms, &writer, random_u32()), seg.encode())?;
            rep.segments_written += 1;
        }
        // Written before any is deleted: a daemon missing one finds the
        // merged one when it lists again.
        for part in small.names.chunks(DELETES_PER_RENEWAL) {
            renew()?;
            r.delete_many(part)?;
            rep.segments += part.len() as u64;
        }
        Ok(())
    }

    /// Copies the small live pieces into bigger ones, if enough (`all`:
    /// the bucket's listing; `live`: piece names resolved through moves;
    /// `marked`: objects in marks not carried out yet).
    pub(super) fn compact_pieces(
        &self,
        renew: &dyn Fn() -> Result<()>,
        all: &[Listed],
        live: &HashSet<String>,
        marked: &HashSet<String>,
        rep: &mut CompactReport,
    ) -> Result<()> {
        // Not a marked piece (named again since): its mark, made before the
        // move, is carried out without the daemons having read the move.
        let mut small: Vec<&Listed> = all
            .iter()
            .filter(|l| l.name.starts_with("packs/") && l.size < SMALL_PIECE)
            .filter(|l| live.contains(&l.name) && !marked.contains(&l.name))
            .collect();
        if small.len() < self.compact_after() {
            return Ok(());
        }
        small.sort_by_key(|l| (super::bucket_gc::written_ms(&l.name), l.name.as_str()));
        // What earlier compactions moved into each piece: moved along with
        // it, so every name resolves in one hop.
        let mut inside: HashMap<String, Vec<Move>> = HashMap::new();
        for m in self.known_moves()? {
            inside.entry(m.to.clone()).or_default().push(m);
        }
        let mut group: Vec<&Listed> = Vec::new();
        let mut bytes = 0;
        for (i, l) in small.iter().enumerate() {
            group.push(l);
            bytes += l.size;
            if bytes >= TARGET_PIECE || i + 1 == small.len() {
                if group.len() >= 2 {
                    self.compact_group(renew, &group, &inside, rep)?;
                }
                group.clear();
                bytes = 0;
            }
        }
        Ok(())
    }

    /// One output piece from `group`, then its moves object.
    fn compact_group(
        &self,
        renew: &dyn Fn() -> Result<()>,
        group: &[&Listed],
        inside: &HashMap<String, Vec<Move>>,
        rep: &mut CompactReport,
    ) -> Result<()> {
        let r = self.remote().expect("bucket mode");
        let writer = self.writer_id();
        let to = format!("packs/{}.pack", unique_suffix(&writer));
        let mut body = Vec::new();
        let mut locs: Vec<(Hash, ObjLoc)> = Vec::new();
        let mut moves = Vec::new();
        let mut copied = 0;
        for l in group {
            let b = match r.get(&l.name) {
                Ok(b) => b,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let (records, piece_locs) = match checked_piece(&l.name, &b) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(piece = %l.name, error = %e, "a piece of the bucket is damaged; not compacted");
                    continue;
                }
            };
            let base = body.len() as u64;
            body.extend_from_slice(records);
            locs.extend(piece_locs.into_iter().map(|(h, p)| {
                (
                    h,
                    ObjLoc {
                        block_offset: p.block_offset + base,
                        ..p
                    },
                )
            }));
            moves.push(Move {
                from: l.name.clone(),
                to: to.clone(),
                base,
                len: records.len() as u64,
            });
            for m in inside.get(&l.name).into_iter().flatten() {
                moves.push(Move {
                    from: m.from.clone(),
                    to: to.clone(),
                    base: base + m.base,
                    len: m.len,
                });
            }
            copied += 1;
        }
        if copied < 2 {
            return Ok(());
        }
        body.extend_from_slice(&piece_footer(&locs));
        r.put(&to, body)?;
        renew()?;
        let name = format!("{MOVES_DIR}{}", unique_suffix(&writer));
        r.put(&name, encode_moves(&moves))?;
        self.apply_moves(&moves, Some(&name))?;
        rep.pieces += copied;
        rep.pieces_written += 1;
        Ok(())
    }

    /// Merges the moves objects (`all`: the listing) into one, if enough.
    /// Only those this index applied are deleted: one another collector
    /// wrote after the lease passed on is read first, or kept.
    pub(super) fn compact_moves(
        &self,
        renew: &dyn Fn() -> Result<()>,
        all: &[Listed],
        rep: &mut CompactReport,
    ) -> Result<()> {
        let listed = all.iter().filter(|l| l.name.starts_with(MOVES_DIR)).count();
        if listed < self.compact_after() {
            return Ok(());
        }
        self.read_moves()?;
        let r = self.remote().expect("bucket mode");
        let db = self.db();
        let mut old = Vec::new();
        for l in r.list(MOVES_DIR, None)? {
            let k = super::publish::key(super::moves::MOVES_READ, l.name.as_bytes());
            if db
                .get_pinned_cf(super::index::cf(db, super::index::CF_META), k)?
                .is_some()
            {
                old.push(l);
            }
        }
        // In parts, so that no object grows past what one read applies in
        // bounded batches (and `decode_moves` accepts).
        for part in self.known_moves()?.chunks(MOVES_PER_BATCH) {
            let name = format!("{MOVES_DIR}{}", unique_suffix(&self.writer_id()));
            r.put(&name, encode_moves(part))?;
            self.apply_moves(&[], Some(&name))?;
        }
        let old: Vec<String> = old.into_iter().map(|l| l.name).collect();
        for part in old.chunks(DELETES_PER_RENEWAL) {
            renew()?;
            r.delete_many(part)?;
            rep.moves_objects += part.len() as u64;
        }
        Ok(())
    }
}

/// A piece's block records, and its footer's entries.
type PieceParts<'a> = (&'a [u8], Vec<(Hash, ObjLoc)>);

/// A piece's block records and footer, once every block the footer names
/// decodes (crc32c and each chunk's BLAKE3) and holds its chunks there.
fn checked_piece<'a>(name: &str, b: &'a [u8]) -> Result<PieceParts<'a>> {
    let bad = |why: &str| Error::DataLoss(format!("{name}: {why}"));
    if b.len() < TRAILER_LEN {
        return Err(bad("shorter than a footer"));
    }
    let footer_len = piece_footer_len(&b[b.len() - TRAILER_LEN..])?;
    let records_len = b
        .len()
        .checked_sub(TRAILER_LEN + footer_len)
        .ok_or_else(|| bad("footer longer than the piece"))?;
    let locs = parse_piece_footer(&b[records_len..])?;
    let mut blocks: HashMap<u64, HashMap<u32, (Hash, u32)>> = HashMap::new();
    for (h, p) in &locs {
        let end = p.block_offset + p.block_len as u64;
        if end > records_len as u64 {
            return Err(bad("a footer entry points past the records"));
        }
        if let std::collections::hash_map::Entry::Vacant(v) = blocks.entry(p.block_offset) {
            let rec = &b[p.block_offset as usize..end as usize];
            let what = || format!("block at {} of {name}", p.block_offset);
            v.insert(decode_block(rec, &what)?.chunks_by_offset());
        }
        if blocks[&p.block_offset].get(&p.offset_in_block) != Some(&(*h, p.len)) {
            return Err(bad("a footer entry names a chunk its block does not hold"));
        }
    }
    Ok((&b[..records_len], locs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(d: u8, content: &str) -> Record {
        Record::Put {
            ns: "default".into(),
            digest: Digest([d; 32]),
            meta: b"{}".to_vec(),
            content: content.into(),
        }
    }

    fn del(d: u8) -> Record {
        Record::Delete {
            ns: "default".into(),
            digest: Digest([d; 32]),
        }
    }

    fn seg(time_ms: u64, records: Vec<Record>) -> Segment {
        Segment {
            time_ms,
            writer: [1; 8],
            records,
            times: Vec::new(),
        }
    }

    #[test]
    fn a_merge_keeps_each_blobs_newest_records_once_with_their_times() {
        let mut s = SmallSegments::default();
        s.add("segments/1", &seg(10, vec![put(1, "c/1a"), put(2, "c/2")]));
        s.add("segments/2", &seg(20, vec![del(1), put(3, "c/3")]));
        // A tie with the Put of blob 3, and a merged segment left beside
        // its originals (blob 2's record again, with its own time).
        s.add("segments/3", &seg(20, vec![del(3)]));
        let left = Segment {
            times: vec![10],
            ..seg(99, vec![put(2, "c/2")])
        };
        s.add("segments/4", &left);
        let got: Vec<(u8, u64, Vec<Record>)> = s
            .newest
            .iter()
            .map(|((_, d), (t, r))| (d.0[0], *t, r.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 20, vec![del(1)]),
                (2, 10, vec![put(2, "c/2")]),
                (3, 20, vec![put(3, "c/3"), del(3)]),
            ]
        );
        assert_eq!(s.names.len(), 4);
    }
}
