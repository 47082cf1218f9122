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
//! `meta` keys: `remote-moved\0<from>` → base u64 BE | len u64 BE | to (a
//! read through it never caches past `base + len`: what follows in `to` is
//! other pieces', and the cache is keyed by the moved piece's pack id and
//! offsets); `remote-moves\0<moves object>`: read and applied.

use super::commit::write_synced;
use super::index::{cf, CF_META};
use super::publish::key;
use super::remote::format::{decode_moves, Move, ObjLoc};
use super::Store;
use crate::error::{Error, Result};
use rocksdb::WriteBatch;
use std::collections::HashMap;

pub(super) const MOVED: &[u8] = b"remote-moved\0";
pub(super) const MOVES_READ: &[u8] = b"remote-moves\0";
pub(super) const MOVES_DIR: &str = "moves/";
/// Moves per local write batch, and per merged moves object.
pub(super) const MOVES_PER_BATCH: usize = 50_000;

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

    /// `name` and `place` resolved through the moves this index knows, and
    /// where the moved piece ends in its copy (None: not moved). (An index
    /// read error keeps the name: the read of the old piece then fails on
    /// its own, with the error that says what is missing.)
    pub(super) fn moved(&self, name: String, place: ObjLoc) -> (String, ObjLoc, Option<u64>) {
        match self.piece_home(&name) {
            Ok(Some(m)) => (
                m.to,
                ObjLoc {
                    block_offset: place.block_offset + m.base,
                    ..place
                },
                Some(m.base + m.len),
            ),
            Ok(None) => (name, place, None),
            Err(e) => {
                tracing::error!(piece = %name, error = %e, "reading where a piece moved failed");
                (name, place, None)
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

    /// Records moves in this index (with `read`, the moves object they
    /// came from, in the last batch: a crash applies them again). A move
    /// replaces the one known for the same `from` when its copy was written
    /// later, or when the known copy was itself moved to it (a chain,
    /// whatever the clocks of the collectors that wrote them).
    pub(super) fn apply_moves(&self, moves: &[Move], read: Option<&str>) -> Result<usize> {
        let _one = self.inner.moves_lock.lock();
        self.apply_moves_locked(moves, read)
    }

    fn apply_moves_locked(&self, moves: &[Move], read: Option<&str>) -> Result<usize> {
        let db = self.db();
        let mut n = 0;
        // The homes this call wrote (the index has those of earlier batches
        // too, but a lookup here is cheaper).
        let mut here: HashMap<&str, &str> = HashMap::new();
        // A move skipped because the known copy was written later: a chain
        // if that copy moves to this one further on; looked at again last.
        let mut skipped: Vec<&Move> = Vec::new();
        let mut parts: Vec<&[Move]> = moves.chunks(MOVES_PER_BATCH).collect();
        parts.push(&[]); // the skipped ones, and `read`
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            let mut batch = WriteBatch::default();
            let retry: Vec<&Move> = match i == last {
                true => std::mem::take(&mut skipped),
                false => Vec::new(),
            };
            for m in part.iter().chain(retry.iter().copied()) {
                if !m.from.starts_with("packs/") || !m.to.starts_with("packs/") || m.from == m.to {
                    return Err(Error::DataLoss(format!(
                        "a moves object moves {:?} to {:?}",
                        m.from, m.to
                    )));
                }
                let home_of = |p: &str| -> Result<Option<String>> {
                    match here.get(p) {
                        Some(t) => Ok(Some(t.to_string())),
                        None => Ok(self.piece_home(p)?.map(|h| h.to)),
                    }
                };
                if let Some(old) = home_of(&m.from)? {
                    let chain = home_of(&old)?.as_deref() == Some(m.to.as_str());
                    if old == m.to || !(later(&m.to, &old) || chain) {
                        if old != m.to && i != last {
                            skipped.push(m);
                        }
                        continue;
                    }
                }
                batch.put_cf(
                    cf(db, CF_META),
                    key(MOVED, m.from.as_bytes()),
                    encode_home(m),
                );
                here.insert(&m.from, &m.to);
                n += 1;
            }
            if i == last {
                if let Some(name) = read {
                    batch.put_cf(cf(db, CF_META), key(MOVES_READ, name.as_bytes()), []);
                }
            }
            write_synced(db, batch)?;
        }
        if n > 0 {
            self.inner
                .moves_applied
                .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(n)
    }

    /// How many moves this index has applied since it opened: a read that
    /// found no copy of a chunk looks again once this changes.
    pub(super) fn moves_applied(&self) -> u64 {
        self.inner
            .moves_applied
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reads the bucket's moves objects this index has not applied yet,
    /// one reader at a time (two could each apply an older move last).
    /// One that vanishes between the listing and its GET was merged into
    /// another, written before it was deleted: list again.
    pub(super) fn read_moves(&self) -> Result<usize> {
        let Some(r) = self.remote() else {
            return Ok(0);
        };
        let _one = self.inner.moves_lock.lock();
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
                            .and_then(|m| self.apply_moves_locked(&m, Some(&l.name)))
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
