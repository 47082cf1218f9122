//! Uploads stored as received and converted later (store/convert.rs): the
//! blob reads back exactly before, during and after its conversion, ends up
//! stored exactly as a push would have stored it, and its mark follows the
//! blob through restarts and deletes.

mod common;
use bytes::Bytes;
use common::{noise, python_gzip, store_read, tar_of};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use strata::digest::Digest;
use strata::store::gc::GcOptions;
use strata::store::{IngestOptions, Store, StoreConfig};

fn layer(seed: u64) -> Vec<u8> {
    let text: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("line {i} of file {seed}\n").into_bytes())
        .take(2_000_000)
        .collect();
    tar_of(
        &[
            ("a", &noise(1_500_000, seed)),
            ("b.txt", &text),
            ("c", &noise(700_000, seed + 1)),
        ],
        3,
    )
}

fn deferring() -> StoreConfig {
    StoreConfig {
        defer_uploads: true,
        ..StoreConfig::default()
    }
}

/// A deferring store with small chunks: recipes of several pages, so a
/// reader loads pages after a conversion or a delete could change them.
fn small_chunk_store(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreConfig {
            chunk_sizes: strata::split::ChunkSizes::parse("64/256/1K").unwrap(),
            ..deferring()
        },
    )
    .unwrap()
}

/// Writes a blob as containerd does (an upload, in 1 MiB pieces) and commits it.
fn upload(store: &Store, ns: &str, data: &[u8]) -> Digest {
    let mut up = store
        .open_upload(ns, "layer-ref", data.len() as i64)
        .unwrap();
    for piece in data.chunks(1 << 20) {
        up.append(Bytes::copy_from_slice(piece)).unwrap();
    }
    let out = up.commit(data.len() as i64, None, BTreeMap::new()).unwrap();
    out.digest.unwrap()
}

fn kept(store: &Store, d: &Digest) -> String {
    let c = store.content(d).unwrap().unwrap();
    store.kept(d, &c).unwrap()
}

/// `a` holds what `b` holds, chunk for chunk, with no garbage left.
fn assert_same_counters(a: &Store, b: &Store) {
    let (a, b) = (a.stats_counters().unwrap(), b.stats_counters().unwrap());
    assert_eq!(a.unreferenced_chunks, 0);
    assert_eq!(
        (
            a.blobs,
            a.contents,
            a.chunks,
            a.chunk_plain_bytes,
            a.literal_bytes
        ),
        (
            b.blobs,
            b.contents,
            b.chunks,
            b.chunk_plain_bytes,
            b.literal_bytes
        )
    );
    assert_eq!(
        (
            a.logical_bytes,
            a.logical_stream_bytes,
            a.rebuild_bytes,
            a.by_strategy
        ),
        (
            b.logical_bytes,
            b.logical_stream_bytes,
            b.rebuild_bytes,
            b.by_strategy
        )
    );
}

fn assert_verified(store: &Store) {
    let r = store.verify(true).unwrap();
    assert!(r.ok(), "verify found problems: {:?}", r.problems);
}

#[test]
fn an_upload_is_kept_as_received_then_converted_like_a_push() {
    let tmp = tempfile::tempdir().unwrap();
    let gz = python_gzip(&layer(1), 6);
    let store = Store::open(&tmp.path().join("deferred"), deferring()).unwrap();
    let d = upload(&store, "containerd", &gz);

    // Stored as received: plain data, no rebuild plan, marked.
    assert_eq!(kept(&store, &d), "");
    let c = store.content(&d).unwrap().unwrap();
    assert!(c.wrap.is_none());
    assert_eq!(store.pending_conversions().unwrap(), vec![d]);
    assert_eq!(store.stats().unwrap().pending_conversions, 1);
    assert!(store_read(&store, &d) == gz);
    assert_verified(&store);

    // A push (strata.v1) is never deferred.
    let gz2 = python_gzip(&layer(7), 6);
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "build".into(),
            ..Default::default()
        })
        .unwrap();
    ing.write(&gz2).unwrap();
    let pushed = ing.commit().unwrap();
    assert!(pushed.kept.starts_with("zlib-6"), "kept as {}", pushed.kept);
    assert_eq!(store.pending_conversions().unwrap(), vec![d]);

    assert_eq!(store.convert_pending().unwrap(), 1);
    assert!(store.pending_conversions().unwrap().is_empty());
    assert!(
        kept(&store, &d).starts_with("zlib-6"),
        "{}",
        kept(&store, &d)
    );
    assert!(store_read(&store, &d) == gz);
    let mut plain = Vec::new();
    let c = store.content(&d).unwrap().unwrap();
    store
        .read_plain(&d, &c, 0, 0, &mut |b: &[u8]| {
            plain.extend_from_slice(b);
            Ok(true)
        })
        .unwrap();
    assert!(plain == layer(1));
    assert_verified(&store);
    // The bytes first stored are garbage now; collected, the store holds
    // what two pushes would have stored.
    assert!(store.stats_counters().unwrap().unreferenced_chunks > 0);
    store.gc(GcOptions::default()).unwrap();
    assert_verified(&store);

    let other = Store::open(&tmp.path().join("pushed"), StoreConfig::default()).unwrap();
    for (ns, blob) in [("containerd", &gz), ("build", &gz2)] {
        let mut ing = other
            .begin_ingest(IngestOptions {
                namespace: ns.into(),
                ..Default::default()
            })
            .unwrap();
        ing.write(blob).unwrap();
        ing.commit().unwrap();
    }
    assert_same_counters(&store, &other);
    settle(&store);
}

#[test]
fn reads_during_a_conversion_get_the_blobs_own_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let gz = python_gzip(&layer(2), 6);
    let store = small_chunk_store(tmp.path());
    let d = upload(&store, "containerd", &gz);
    let before = store.content(&d).unwrap().unwrap();
    assert!(
        before.page_starts.len() > 3,
        "{} pages",
        before.page_starts.len()
    );

    // A whole-blob read that pauses after its first piece while the
    // conversion runs: the swap waits for it, and it reads the old recipe
    // to its end.
    let mut got = Vec::new();
    let converted = std::thread::scope(|s| {
        let mut conv = None;
        store
            .read_range(&d, &before, 0, 0, &mut |b: &[u8]| {
                if conv.is_none() {
                    conv = Some(s.spawn(|| store.convert(&d, &AtomicBool::new(false))));
                    std::thread::sleep(Duration::from_millis(800));
                }
                got.extend_from_slice(b);
                Ok(true)
            })
            .unwrap();
        conv.unwrap().join().unwrap()
    });
    assert!(got == gz);
    assert!(converted.unwrap(), "the conversion gave up waiting");
    assert!(kept(&store, &d).starts_with("zlib-6"));

    // Windows read with the record loaded before the conversion get the
    // converted recipe's bytes, from the first window on.
    let mut windows = Vec::new();
    let mut off = 0u64;
    while off < before.size {
        store
            .read_range(&d, &before, off, 32 << 10, &mut |b: &[u8]| {
                windows.extend_from_slice(b);
                Ok(true)
            })
            .unwrap();
        off += 32 << 10;
    }
    assert!(windows == gz);

    // Windows read while another blob converts, with the old record.
    let gz3 = python_gzip(&layer(3), 6);
    let d3 = upload(&store, "containerd", &gz3);
    let old3 = store.content(&d3).unwrap().unwrap();
    let mut windows = Vec::new();
    std::thread::scope(|s| {
        let conv = s.spawn(|| store.convert_pending().unwrap());
        let mut off = 0u64;
        while off < old3.size {
            let mut w = Vec::new();
            let inline = store
                .read_range_cached(&d3, &old3, off, 32 << 10, &mut |b: &[u8]| {
                    w.extend_from_slice(b);
                    Ok(true)
                })
                .unwrap();
            if !inline {
                w.clear();
                store
                    .read_range(&d3, &old3, off, 32 << 10, &mut |b: &[u8]| {
                        w.extend_from_slice(b);
                        Ok(true)
                    })
                    .unwrap();
            }
            windows.extend_from_slice(&w);
            off += 32 << 10;
        }
        assert_eq!(conv.join().unwrap(), 1);
    });
    assert!(windows == gz3);
    assert!(store_read(&store, &d3) == gz3);
    assert_verified(&store);
    settle(&store);
}

#[test]
fn marks_survive_a_restart_and_go_with_a_deleted_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let (gz1, gz2) = (python_gzip(&layer(4), 6), python_gzip(&layer(5), 6));
    let (d1, d2) = {
        let store = Store::open(tmp.path(), deferring()).unwrap();
        (
            upload(&store, "containerd", &gz1),
            upload(&store, "containerd", &gz2),
        )
    };
    let store = Store::open(tmp.path(), deferring()).unwrap();
    let mut want = vec![d1, d2];
    want.sort_by_key(|d| d.0);
    assert_eq!(store.pending_conversions().unwrap(), want);
    assert!(store.delete("containerd", &d1).unwrap());
    assert_eq!(store.pending_conversions().unwrap(), vec![d2]);
    assert_verified(&store);
    // A conversion cut short (the daemon stopping) changes nothing.
    assert!(!store.convert(&d2, &AtomicBool::new(true)).unwrap());
    assert_eq!(store.pending_conversions().unwrap(), vec![d2]);
    assert!(store_read(&store, &d2) == gz2);
    assert_verified(&store);
    // The same blob written again while its first copy waits: one content,
    // converted once, still held by both namespaces.
    assert_eq!(upload(&store, "k8s.io", &gz2), d2);
    assert_eq!(store.convert_pending().unwrap(), 1);
    for ns in ["containerd", "k8s.io"] {
        assert!(store.stat(ns, &d2).is_ok());
    }
    // The blob, and its tar's content that its conversion made and shares.
    assert_eq!(store.stats_counters().unwrap().contents, 2);
    assert!(store_read(&store, &d2) == gz2);
    assert_verified(&store);
    // Deleted after its conversion, and written again: kept as received
    // again, and its reads do not come from what was cached of the
    // converted recipe.
    assert!(!store.delete("containerd", &d2).unwrap());
    assert!(store.delete("k8s.io", &d2).unwrap());
    assert_eq!(upload(&store, "containerd", &gz2), d2);
    assert_eq!(kept(&store, &d2), "");
    assert!(store_read(&store, &d2) == gz2);
    assert_verified(&store);
    // Its plain form (the tar inside) is asked for before its conversion:
    // it is converted then.
    let c = store.content(&d2).unwrap().unwrap();
    let mut plain = Vec::new();
    store
        .read_plain(&d2, &c, 0, 0, &mut |b: &[u8]| {
            plain.extend_from_slice(b);
            Ok(true)
        })
        .unwrap();
    assert!(plain == layer(5));
    assert!(store.pending_conversions().unwrap().is_empty());
    assert_verified(&store);
    settle(&store);
}

#[test]
fn the_background_converter_converts_once_uploads_are_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let gz = python_gzip(&layer(6), 6);
    let store = Store::open(tmp.path(), deferring()).unwrap();
    let converter = store.start_converter(Duration::from_millis(300)).unwrap();
    let d = upload(&store, "containerd", &gz);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Converted, and the copy kept as received collected.
    while !store.pending_conversions().unwrap().is_empty()
        || store.stats_counters().unwrap().unreferenced_chunks > 0
    {
        assert!(Instant::now() < deadline, "not converted within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(converter);
    assert!(kept(&store, &d).starts_with("zlib-6"));
    assert!(store_read(&store, &d) == gz);
    assert_verified(&store);
    settle(&store);
}

#[test]
fn a_read_fails_rather_than_mix_two_recipes_of_its_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let gz = python_gzip(&layer(8), 6);
    let store = small_chunk_store(tmp.path());
    let d = upload(&store, "containerd", &gz);
    assert_eq!(store.convert_pending().unwrap(), 1);
    let converted = store.content(&d).unwrap().unwrap();
    assert!(converted.page_starts.len() > 3);
    // While the converted blob is read, it is deleted and written again,
    // kept as received this time: the read stops with UNAVAILABLE, and what
    // it gave before is the blob's own bytes.
    let mut got = Vec::new();
    let mut replaced = false;
    let r = store.read_range(&d, &converted, 0, 0, &mut |b: &[u8]| {
        if !replaced {
            replaced = true;
            assert!(store.delete("containerd", &d).unwrap());
            upload(&store, "containerd", &gz);
        }
        got.extend_from_slice(b);
        Ok(true)
    });
    assert!(replaced);
    match r {
        Err(strata::Error::Unavailable(_)) => {}
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert!(got.len() < gz.len() && gz.starts_with(&got));
    assert_eq!(kept(&store, &d), "");
    assert!(store_read(&store, &d) == gz);
    assert_verified(&store);
    settle(&store);
}

#[test]
fn pushing_a_blob_kept_as_received_converts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let gz = python_gzip(&layer(9), 6);
    let store = Store::open(tmp.path(), deferring()).unwrap();
    let d = upload(&store, "containerd", &gz);
    assert_eq!(store.pending_conversions().unwrap(), vec![d]);
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "build".into(),
            ..Default::default()
        })
        .unwrap();
    ing.write(&gz).unwrap();
    let out = ing.commit().unwrap();
    assert!(out.already_stored);
    assert!(out.new_chunks > 0);
    assert!(out.kept.starts_with("zlib-6"), "kept as {}", out.kept);
    assert_eq!(out.plain_bytes, layer(9).len() as u64);
    // Converted by the push itself, held by both namespaces.
    assert!(store.pending_conversions().unwrap().is_empty());
    assert_eq!(kept(&store, &d), out.kept);
    assert_eq!(store.content(&d).unwrap().unwrap().holders, 2);
    assert!(store_read(&store, &d) == gz);
    assert_verified(&store);
    store.gc(GcOptions::default()).unwrap();

    // The same counters as when the background conversion does it.
    let other = Store::open(&tmp.path().join("other"), deferring()).unwrap();
    upload(&other, "containerd", &gz);
    upload(&other, "build", &gz);
    assert_eq!(other.convert_pending().unwrap(), 1);
    other.gc(GcOptions::default()).unwrap();
    assert_same_counters(&store, &other);
    settle(&store);
}

/// Fillers still rebuilding ahead would use the index while the test
/// process exits (RocksDB aborts then): stop them first.
fn settle(store: &Store) {
    assert!(store.settle(std::time::Duration::from_secs(30)));
}
