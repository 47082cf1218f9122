//! Spare content objects (`--store s3://`, repository format
//! `strata-bucket-3`): two daemons that push one layer at once, before
//! either sees the other's segment, each store its chunks and write a
//! content object of the digest. Both are complete; keeping both keeps
//! every chunk twice for ever. The collection (`bucket_gc.rs`) goes through
//! a digest's content objects, best first: complete ones (every piece they
//! name is in the bucket), oldest first. The order depends on nothing but
//! the objects (not on which record names which), so a later duplicate
//! never displaces the one daemons follow and two runs agree on it. One
//! whose every placed chunk an object kept before it also places is a
//! spare: no longer live, so it and the pieces only it names are marked and
//! deleted a grace period later.
//! Objects of other recipes (a blob as received and converted) place other
//! chunks, so both stay: a daemon can find chunk places through another
//! object (`Store::relocate`), not a recipe.
//!
//! A daemon whose index follows a spare reads the mark like any other: its
//! pushes stop reusing the marked pieces (an already-stored push records
//! the chunks it stored anew: `commit.rs`), its next record of the blob
//! names the oldest object that places its chunks (`ensure_content_object`),
//! and a read of a chunk whose piece is gone finds it through the object
//! kept. A segment naming a deleted spare is applied through the digest's
//! oldest readable object (`sync.rs`). Daemons of `strata-bucket-2` cannot do the last, so a
//! bucket is upgraded (with a fence) before any spare is collected.

use super::pack::Hash;
use super::remote::format::ContentObject;
use std::collections::HashSet;

/// One content object of a live digest, as the collection sees it.
pub(super) struct Candidate {
    pub name: String,
    /// The time in its name (None: not named by strata; always kept).
    pub written_ms: Option<u64>,
    /// The chunks it places.
    pub placed: HashSet<Hash>,
    /// Every piece it names (through the moves) is in the bucket's listing.
    pub complete: bool,
}

impl Candidate {
    pub fn new(name: String, written_ms: Option<u64>, obj: &ContentObject, complete: bool) -> Self {
        Candidate {
            name,
            written_ms,
            placed: obj.locs.iter().map(|(h, _, _)| *h).collect(),
            complete,
        }
    }

    /// May stand in for others: complete, and named by strata.
    fn covers(&self) -> bool {
        self.complete && self.written_ms.is_some()
    }
}

/// The indices of the spares among one digest's content objects (see the
/// module doc).
pub(super) fn spares(cands: &[Candidate]) -> HashSet<usize> {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    // Best first: complete, oldest, then by name (every collector orders
    // alike).
    order.sort_by_key(|&i| {
        let c = &cands[i];
        (!c.covers(), c.written_ms, c.name.clone())
    });
    let mut kept: Vec<usize> = Vec::new();
    let mut spare = HashSet::new();
    for i in order {
        let c = &cands[i];
        if c.written_ms.is_some() && kept.iter().any(|&k| c.placed.is_subset(&cands[k].placed)) {
            spare.insert(i);
        } else if c.covers() {
            kept.push(i);
        }
    }
    spare
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, ms: Option<u64>, chunks: &[u8], complete: bool) -> Candidate {
        Candidate {
            name: name.to_string(),
            written_ms: ms,
            placed: chunks.iter().map(|&c| [c; 32]).collect(),
            complete,
        }
    }

    #[test]
    fn the_oldest_complete_copy_is_kept_and_the_others_are_spares() {
        let v = [
            cand("a", Some(2), &[1, 2], true),
            cand("b", Some(1), &[1, 2], true),
            cand("c", Some(3), &[1, 2], true),
        ];
        assert_eq!(spares(&v), HashSet::from([0, 2]));
        // The oldest names a piece the listing lacks: the next one is kept
        // (and stands in for it).
        let v = [
            cand("a", Some(1), &[1, 2], false),
            cand("b", Some(2), &[1, 2], true),
            cand("c", Some(3), &[1, 2], true),
        ];
        assert_eq!(spares(&v), HashSet::from([0, 2]));
        // None complete: all kept.
        let v = [
            cand("a", Some(1), &[1], false),
            cand("b", Some(3), &[1], false),
        ];
        assert!(spares(&v).is_empty());
    }

    #[test]
    fn other_recipes_partial_copies_and_foreign_names_are_kept() {
        // As received and converted: other chunks, both kept; a second
        // conversion is a spare of the first.
        let v = [
            cand("raw", Some(1), &[1, 2], true),
            cand("conv", Some(2), &[7, 8, 9], true),
            cand("conv2", Some(3), &[7, 8, 9], true),
        ];
        assert_eq!(spares(&v), HashSet::from([2]));
        // The kept one does not place every chunk the later one does.
        let v = [
            cand("c", Some(1), &[1, 2], true),
            cand("d", Some(2), &[1, 2, 3], true),
        ];
        assert!(spares(&v).is_empty());
        // ...but places all of a smaller one's.
        let v = [
            cand("c", Some(1), &[1, 2, 3], true),
            cand("d", Some(2), &[1, 2], true),
        ];
        assert_eq!(spares(&v), HashSet::from([1]));
        // Not named by strata (no time): never a spare, never kept for others.
        let v = [
            cand("x", None, &[1, 2], true),
            cand("b", Some(3), &[1, 2], true),
        ];
        assert!(spares(&v).is_empty());
        // A tie in time: the lesser name is kept, whoever collects.
        let v = [
            cand("n", Some(5), &[1], true),
            cand("m", Some(5), &[1], true),
        ];
        assert_eq!(spares(&v), HashSet::from([0]));
    }
}
