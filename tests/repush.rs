//! Pushing a stored blob again follows its recipe (follow.rs): hinted chunks
//! skip FastCDC and index lookups, but what is stored must be exactly what
//! a push without hints stores, and must survive garbage collection racing
//! the push.

mod common;
use common::noise;
use common::tar_of;
use strata::digest::Digest;
use strata::store::gc::GcOptions;
use strata::store::{IngestOptions, PushOutcome, Store, StoreConfig};

fn layer(seed: u64, tweak: Option<(usize, usize)>) -> Vec<u8> {
    // Eight files of 300 KB to 1.2 MB: a few hundred chunks.
    let mut files: Vec<(String, Vec<u8>)> = (0..8u64)
        .map(|i| {
            (
                format!("usr/lib/f{i}"),
                noise(300_000 + i as usize * 130_000, seed * 100 + i),
            )
        })
        .collect();
    if let Some((file, at)) = tweak {
        files[file].1[at] ^= 0x5a;
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    tar_of(&refs, 7)
}

/// A fresh store with `blobs` pushed in order; their outcomes.
fn store_with(dir: &std::path::Path, blobs: &[&[u8]]) -> (Store, Vec<PushOutcome>) {
    let store = Store::open(dir, config()).unwrap();
    let outs = blobs
        .iter()
        .map(|b| push_out(&store, &[b], |_| {}))
        .collect();
    (store, outs)
}

#[test]
fn a_blob_pushed_again_is_cut_from_its_stored_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let a = layer(1, None);
    let (store, outs) = store_with(tmp.path(), &[&a, &a]);
    let (first, again) = (&outs[0], &outs[1]);
    assert_eq!(
        first.followed_chunks, 0,
        "nothing to follow in an empty store"
    );
    assert!(again.already_stored);
    assert_eq!(again.digest, first.digest);
    assert_eq!(again.new_chunks, 0);
    assert_eq!(again.reused_chunks, first.new_chunks + first.reused_chunks);
    // All but the chunks that name the stream's first 64 KiB.
    assert!(
        again.followed_chunks + 3 >= again.reused_chunks && again.followed_chunks > 50,
        "followed {} of {} chunks",
        again.followed_chunks,
        again.reused_chunks
    );
    assert_eq!(read_store(&store, &first.digest.unwrap()), a);
    // The prefix entry is on disk: a restarted store follows too.
    drop(store);
    let (_, outs) = store_with(tmp.path(), &[&a]);
    assert_eq!(outs[0].followed_chunks, again.followed_chunks);
}

/// Stats that depend on every chunk boundary.
fn chunk_figures(store: &Store) -> (u64, u64, u64, u64) {
    let c = store.stats_counters().unwrap();
    (
        c.chunks,
        c.chunk_plain_bytes,
        c.literal_bytes,
        c.unreferenced_chunks,
    )
}

#[test]
fn a_blob_that_departs_from_the_followed_recipe_is_chunked_as_without_hints() {
    // Same first files, then a flipped byte mid-file, a flipped first byte of
    // the last file, bytes appended after the archive, or the archive cut
    // short: pushed after the original (hints taken until they stop
    // matching) and before it (no hints), the store must end up with the
    // same chunks either way.
    let a = layer(2, None);
    let mut variants = vec![layer(2, Some((5, 200_000))), layer(2, Some((7, 0)))];
    let mut longer = a.clone();
    longer.extend_from_slice(&noise(700_000, 99));
    variants.push(longer);
    variants.push(a[..a.len() - 333_333].to_vec());
    for (i, b) in variants.iter().enumerate() {
        let mut figures = Vec::new();
        for order in [[&a[..], &b[..]], [&b[..], &a[..]]] {
            let tmp = tempfile::tempdir().unwrap();
            let (store, outs) = store_with(tmp.path(), &order);
            assert!(
                outs[1].followed_chunks > 0,
                "variant {i}: the second push followed nothing"
            );
            for (blob, out) in order.iter().zip(&outs) {
                assert_eq!(
                    &read_store(&store, &out.digest.unwrap()),
                    blob,
                    "variant {i}"
                );
            }
            figures.push(chunk_figures(&store));
        }
        assert_eq!(figures[0], figures[1], "variant {i}");
    }
}

fn config() -> StoreConfig {
    StoreConfig::default()
}

fn push_store(store: &Store, pieces: &[&[u8]], between: impl FnMut(usize)) -> Digest {
    push_out(store, pieces, between).digest.unwrap()
}

fn push_out(store: &Store, pieces: &[&[u8]], mut between: impl FnMut(usize)) -> PushOutcome {
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "default".into(),
            ..Default::default()
        })
        .unwrap();
    for (i, p) in pieces.iter().enumerate() {
        ing.write(p).unwrap();
        between(i);
    }
    ing.commit().unwrap()
}

fn read_store(store: &Store, digest: &Digest) -> Vec<u8> {
    let content = store.content(digest).unwrap().unwrap();
    let mut got = Vec::new();
    store
        .read_range(digest, &content, 0, content.size, &mut |b: &[u8]| {
            got.extend_from_slice(b);
            Ok(true)
        })
        .unwrap();
    got
}

#[test]
fn chunks_collected_while_a_push_follows_their_recipe_are_stored_again() {
    // B begins like A and then departs near its end. While B is pushed (and
    // follows A's recipe), A is deleted and garbage collected: the chunks B
    // has not reached yet are gone from the index, so B must store them
    // again rather than trust the recipe it follows.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), config()).unwrap();
    let a = layer(3, None);
    let b = layer(3, Some((7, 1_000_000)));
    let da = push_store(&store, &[&a], |_| {});
    let (head, tail) = b.split_at(400_000);
    let db = push_store(&store, &[head, tail], |i| {
        if i == 0 {
            assert!(store.delete("default", &da).unwrap());
            let r = store.gc(GcOptions::default()).unwrap();
            assert!(r.chunks_freed > 0, "{r:?}");
        }
    });
    assert_eq!(read_store(&store, &db), b);
    let v = store.verify(true).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    // And after a restart, from disk.
    drop(store);
    let store = Store::open(tmp.path(), config()).unwrap();
    assert_eq!(read_store(&store, &db), b);
}

#[test]
fn deleting_a_blob_drops_its_prefix_entry() {
    // A deleted blob is not followed: pushing its bytes again after garbage
    // collection stores every chunk anew, and nothing points at the old recipe.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), config()).unwrap();
    let a = layer(4, None);
    let d = push_store(&store, &[&a], |_| {});
    assert!(store.delete("default", &d).unwrap());
    store.gc(GcOptions::default()).unwrap();
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "default".into(),
            ..Default::default()
        })
        .unwrap();
    ing.write(&a).unwrap();
    let out = ing.commit().unwrap();
    assert_eq!(out.followed_chunks, 0);
    assert_eq!(out.reused_chunks, 0);
    assert_eq!(read_store(&store, &d), a);
    let v = store.verify(true).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}
