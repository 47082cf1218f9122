//! Where compaction copied small pieces (`compact.rs`), as this index knows
//! it. Content objects are immutable and keep naming the pieces they were
//! written with; a `moves/` object of the bucket says that piece `from`'s
//! block records are now bytes `base..base + len` of piece `to`, and every
//! daemon resolves names through it before it reads, checks or names a
//! piece. Moves are never forgotten (a content object may name `from` for
//! ever); `from` itself is collected like any piece no live object needs.
//!
//! One hop only: compacting a piece that is itself a compaction's output
//! writes a move for it and for each piece moved into it. When two moves
//! name one `from` (a collection that lost its lease mid-run, and the next
//! one), the `to` written later (by the time in its name) wins, in every
//! daemon alike, and the other copy is collected.
//!
//! `meta` keys: `remote-moved\0<from>` → base u64 BE | len u64 BE | to;
//! `remote-movedin\0<to>\0` base u64 BE → len u64 BE (the extent of one
//! moved piece inside `to`, the shortest of those starting there: a read
//! never caches past it under the moved piece's ids); `remote-moves\0<moves
//! object>`: read and applied.

use super::commit::write_synced;
use super::index::{cf, CF_META};
use super::publish::key;
use super::remote::format::{decode_moves, Move, ObjLoc};
use super::Store;
use crate::error::{Error, Result};
use rocksdb::WriteBatch;

pub(super) const MOVED: &[u8] = b"remote-moved\0";
pub(super) const MOVED_IN: &[u8] = b"remote-movedin\0";
pub(super) const MOVES_READ: &[u8] = b"remote-moves\0";
pub(super) const MOVES_DIR: &str = "moves/";

fn moved_in_key(to: &str, base: u64) -> Vec<u8> {
    let mut k = key(MOVED_IN, to.as_bytes());
    k.push(0);
    k.extend_from_slice(&base.to_be_bytes());
    k
}

fn encode_home(m: &Move) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + m.to.len());
    v.extend_from_slice(&m.base.to_be_bytes());
    v.extend_from_slice(&m.len.to_be_bytes());
    v.extend_from_slice(m.to.as_bytes());
    v
}

fn decode_home(from: &str, v: &[u8]) -> Option<Move> {
    if v.len() < 16 {
        return None;
    }
    Some(Move {
        from: from.to_string(),
        base: u64::from_be_bytes(v[0..8].try_into().unwrap()),
        len: u64::from_be_bytes(v[8..16].try_into().unwrap()),
        to: String::from_utf8_lossy(&v[16..]).into_owned(),
    })
}

/// Whether piece `a` was written after piece `b` (by the time in their
/// names, then the names): the move to it wins.
pub(super) fn later(a: &str, b: &str) -> bool {
    use super::bucket_gc::written_ms;
    (written_ms(a), a) > (written_ms(b), b)
}

impl Store {
    /// Where piece `name`'s records are now, if a compaction moved them.
    pub(super) fn piece_home(&self, name: &str) -> Result<Option<Move>> {
        if !name.starts_with("packs/") {
            return Ok(None);
        }
        let db = self.db();
        Ok(db
            .get_pinned_cf(cf(db, CF_META), key(MOVED, name.as_bytes()))?
            .and_then(|v| decode_home(name, &v)))
    }

    /// `name` and `place` resolved through the moves this index knows.
    /// (An index read error keeps the name: the read of the old piece then
    /// fails on its own, with the error that says what is missing.)
    pub(super) fn moved(&self, name: String, place: ObjLoc) -> (String, ObjLoc) {
        match self.piece_home(&name) {
            Ok(Some(m)) => (
                m.to,
                ObjLoc {
                    block_offset: place.block_offset + m.base,
                    ..place
                },
            ),
            Ok(None) => (name, place),
            Err(e) => {
                tracing::error!(piece = %name, error = %e, "reading where a piece moved failed");
                (name, place)
            }
        }
    }

    /// A piece name resolved through the moves this index knows; failing
    /// when the index cannot be read (the liveness and deadline checks must
    /// not go on with a name left unresolved: a collection could delete a
    /// copy something needs).
    pub(super) fn resolved(&self, name: &str) -> Result<String> {
        Ok(self
            .piece_home(name)?
            .map_or_else(|| name.to_string(), |m| m.to))
    }

    /// Where the moved piece holding offset `at` of piece `to` ends in it
    /// (None: `at` is in no moved piece). Records after it belong to other
    /// pieces: a read caching what follows a block stops there.
    pub(super) fn moved_extent_end(&self, to: &str, at: u64) -> Result<Option<u64>> {
        let db = self.db();
        let want = moved_in_key(to, at);
        let prefix_len = want.len() - 8;
        let mut it = db.raw_iterator_cf(cf(db, CF_META));
        it.seek_for_prev(&want);
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.len() == want.len() && k[..prefix_len] == want[..prefix_len] && v.len() == 8 {
                let base = u64::from_be_bytes(k[prefix_len..].try_into().unwrap());
                let len = u64::from_be_bytes(v.try_into().unwrap());
                if at < base + len {
                    return Ok(Some(base + len));
                }
            }
        }
        it.status()?;
        Ok(None)
    }

    /// Records moves in this index, in one synced batch with `read` (the
    /// moves object they came from). A later-named `to` replaces an earlier
    /// one for the same `from`.
    pub(super) fn apply_moves(&self, moves: &[Move], read: Option<&str>) -> Result<usize> {
        let db = self.db();
        let mut batch = WriteBatch::default();
        let mut n = 0;
        // Extents starting at one offset of a piece (a compacted piece moved
        // again, and the first piece inside it): the innermost, shortest,
        // bounds a read-ahead.
        let mut extents: std::collections::HashMap<Vec<u8>, u64> = Default::default();
        for m in moves {
            if !m.from.starts_with("packs/") || !m.to.starts_with("packs/") || m.from == m.to {
                return Err(Error::DataLoss(format!(
                    "a moves object moves {:?} to {:?}",
                    m.from, m.to
                )));
            }
            if let Some(old) = self.piece_home(&m.from)? {
                if !later(&m.to, &old.to) {
                    continue;
                }
            }
            batch.put_cf(
                cf(db, CF_META),
                key(MOVED, m.from.as_bytes()),
                encode_home(m),
            );
            let k = moved_in_key(&m.to, m.base);
            let known = match extents.get(&k) {
                Some(&l) => Some(l),
                None => db
                    .get_pinned_cf(cf(db, CF_META), &k)?
                    .filter(|v| v.len() == 8)
                    .map(|v| u64::from_be_bytes(v[..].try_into().unwrap())),
            };
            let len = known.map_or(m.len, |l| l.min(m.len));
            batch.put_cf(cf(db, CF_META), &k, len.to_be_bytes());
            extents.insert(k, len);
            n += 1;
        }
        if let Some(name) = read {
            batch.put_cf(cf(db, CF_META), key(MOVES_READ, name.as_bytes()), []);
        }
        write_synced(db, batch)?;
        Ok(n)
    }

    /// Reads the bucket's moves objects this index has not applied yet.
    /// One that vanishes between the listing and its GET was merged into
    /// another, written before it was deleted: list again.
    pub(super) fn read_moves(&self) -> Result<usize> {
        let Some(r) = self.remote() else {
            return Ok(0);
        };
        let db = self.db();
        let mut applied = 0;
        for _ in 0..4 {
            let mut vanished = false;
            for l in r.list(MOVES_DIR, None)? {
                if db
                    .get_pinned_cf(cf(db, CF_META), key(MOVES_READ, l.name.as_bytes()))?
                    .is_some()
                {
                    continue;
                }
                match r.get(&l.name) {
                    Ok(b) => {
                        // Retryable, for an operator to look at: a move this
                        // index cannot learn must stop collection and commits
                        // (as a mark that does not parse does), not fail reads.
                        let moves = decode_moves(&b)
                            .and_then(|m| self.apply_moves(&m, Some(&l.name)))
                            .map_err(|e| {
                                Error::Unavailable(format!(
                                    "the bucket's moves object {} cannot be applied ({e}); \
                                     collection and commits wait until it can",
                                    l.name
                                ))
                            })?;
                        applied += moves;
                    }
                    Err(Error::NotFound(_)) => vanished = true,
                    Err(e) => return Err(e),
                }
            }
            if !vanished {
                if applied > 0 {
                    tracing::info!(
                        pieces = applied,
                        "pieces compacted in the bucket, now read where they moved"
                    );
                }
                return Ok(applied);
            }
        }
        Err(Error::Unavailable(
            "the bucket's moves objects kept changing while read; try again".into(),
        ))
    }

    /// Every move this index knows (the compaction's view).
    pub(super) fn known_moves(&self) -> Result<Vec<Move>> {
        let mut out = Vec::new();
        for item in super::index::meta_prefixed(self.db(), MOVED) {
            let (from, v) = item?;
            let from = String::from_utf8_lossy(&from).into_owned();
            if let Some(m) = decode_home(&from, &v) {
                out.push(m);
            }
        }
        Ok(out)
    }
}
