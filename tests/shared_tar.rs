//! One content per tar: a layer's plain tar and its compressions (GNU gzip,
//! Python's zlib, pigz, Go's compress/gzip, klauspost's pgzip, zstd) share
//! one plain recipe whatever order they arrive in, through pushes,
//! containerd uploads and background conversion alike; each compression
//! adds only its plan. Deleting them one by one keeps the others exact, and
//! the shared content goes only with the last.

mod common;
use bytes::Bytes;
use common::{filter, noise, python_gzip, store_read, tar_of};
use std::collections::BTreeMap;
use strata::digest::Digest;
use strata::store::gc::GcOptions;
use strata::store::{IngestOptions, Store, StoreConfig};

fn layer() -> Vec<u8> {
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("config line {i} of a package\n").into_bytes())
        .take(1_500_000)
        .collect();
    tar_of(
        &[
            ("usr/bin/tool", &noise(900_000, 7)),
            ("etc/tool.conf", &text),
            ("usr/lib/libx.so", &noise(600_000, 8)),
        ],
        5,
    )
}

/// The tar and its compressions by the producers strata replays.
fn variants(tar: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let go = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        go_oracle::run(go_oracle::gogzip(), &args, tar)
    };
    let kp = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        go_oracle::run(go_oracle::kpgzip(), &args, tar)
    };
    vec![
        ("plain", tar.to_vec()),
        ("gnu-gzip-6", filter("gzip", &["-n", "-6", "-c"], tar)),
        ("python-zlib-9", python_gzip(tar, 9)),
        ("pigz-6", filter("pigz", &["-n", "-6", "-c"], tar)),
        ("go-6", go(&["-mode=gzip", "-level=6"])),
        ("pgzip-5", kp(&["-mode=pgzip", "-level=5", "-block=0"])),
        ("zstd-3", filter("zstd", &["-q", "-c", "-3"], tar)),
    ]
}

fn store(dir: &std::path::Path, defer: bool) -> Store {
    Store::open(
        dir,
        StoreConfig {
            defer_uploads: defer,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

fn push(store: &Store, data: &[u8]) -> strata::store::PushOutcome {
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "build".into(),
            ..Default::default()
        })
        .unwrap();
    ing.write(data).unwrap();
    ing.commit().unwrap()
}

/// As containerd writes: an upload in 1 MiB pieces, committed.
fn upload(store: &Store, data: &[u8]) -> Digest {
    let mut up = store
        .open_upload("containerd", "layer", data.len() as i64)
        .unwrap();
    for piece in data.chunks(1 << 20) {
        up.append(Bytes::copy_from_slice(piece)).unwrap();
    }
    let out = up.commit(data.len() as i64, None, BTreeMap::new()).unwrap();
    out.digest.unwrap()
}

fn sha(data: &[u8]) -> Digest {
    Digest::parse(&common::sha256_digest(data)).unwrap()
}

fn assert_verified(store: &Store) {
    let r = store.verify(false).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
}

/// Every variant reads back exact; every compressed one shares the tar's
/// recipe, and keeps only a small plan when replayed.
fn assert_shared(store: &Store, all: &[(&str, Vec<u8>)], held: &[usize]) {
    let tar = sha(&all[0].1);
    let base = store.content(&tar).unwrap().expect("the tar's content");
    assert!(base.wrap.is_none());
    let compressed = held.iter().filter(|&&i| i != 0).count() as u32;
    assert_eq!(base.variants, compressed, "variants of the tar");
    for &i in held {
        let (name, data) = &all[i];
        let d = sha(data);
        assert!(
            store_read(store, &d) == *data,
            "{name} reads back other bytes"
        );
        if i == 0 {
            continue;
        }
        let c = store.content(&d).unwrap().unwrap();
        assert_eq!(c.base(), Some(tar), "{name} shares the tar's recipe");
        // Its plan only (every producer here is replayed, GNU gzip too):
        // 0.1 % of its size at most.
        assert!(
            c.recipe_bytes * 1000 <= c.size,
            "{name} keeps {} index bytes for {} bytes",
            c.recipe_bytes,
            c.size
        );
    }
}

/// Pushes (or uploads and converts) `order` into a new store; checks the
/// sharing after each and returns the store.
fn arrive(
    dir: &std::path::Path,
    all: &[(&str, Vec<u8>)],
    order: &[usize],
    upload_at: Option<usize>,
) -> Store {
    let s = store(dir, upload_at.is_some());
    let mut held = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let data = &all[i].1;
        if upload_at == Some(k) {
            let d = upload(&s, data);
            assert_eq!(d, sha(data));
            assert!(s.convert_pending().unwrap() <= 1);
        } else {
            let out = push(&s, data);
            assert_eq!(out.digest, Some(sha(data)));
            // The tar after one of its compressions: stored already.
            if i == 0 && !held.is_empty() {
                assert!(out.already_stored, "the plain tar after {:?}", order);
                assert_eq!(out.bytes_added, 0);
            }
        }
        held.push(i);
        if held.iter().any(|&i| i != 0) {
            assert_shared(&s, all, &held);
        }
    }
    assert_verified(&s);
    s
}

#[test]
fn every_arrival_order_stores_one_tar() {
    let tar = layer();
    let all = variants(&tar);
    let n = all.len();
    let tmp = tempfile::tempdir().unwrap();
    let plain_first: Vec<usize> = (0..n).collect();
    let plain_last: Vec<usize> = (1..n).chain([0]).collect();
    let two_then_plain: Vec<usize> = [3, 6, 0, 1, 2, 4, 5].to_vec();
    let reversed: Vec<usize> = (0..n).rev().collect();
    let mut counters = Vec::new();
    for (name, order, upload_at) in [
        ("plain first", &plain_first, None),
        ("plain last", &plain_last, None),
        ("two compressions, then plain", &two_then_plain, None),
        ("reversed", &reversed, None),
        // containerd writes a gzip layer first: stored as received, then
        // converted in the background into a variant of a new base.
        ("uploaded first", &plain_last, Some(0)),
        // ... and after the tar: converted into a variant of it.
        ("uploaded after the tar", &plain_first, Some(3)),
    ] {
        let s = arrive(
            &tmp.path().join(name.replace(' ', "-")),
            &all,
            order,
            upload_at,
        );
        s.gc(GcOptions::default()).unwrap();
        let c = s.stats_counters().unwrap();
        // One content for the tar, one (its plan) per compression.
        assert_eq!(c.contents, n as u64, "{name}");
        assert_eq!(c.unreferenced_chunks, 0, "{name}");
        counters.push((name, c));
        s.settle(std::time::Duration::from_secs(30));
    }
    // The same chunks and literals whatever the order.
    let key = |c: &strata::store::Counters| {
        (
            c.contents,
            c.chunks,
            c.chunk_plain_bytes,
            c.literal_bytes,
            c.rebuild_bytes,
        )
    };
    for (name, c) in &counters[1..] {
        assert_eq!(key(c), key(&counters[0].1), "{name} against plain first");
    }
}

#[test]
fn deleting_each_in_turn_keeps_the_others_exact() {
    let tar = layer();
    let all = variants(&tar);
    let n = all.len();
    let tmp = tempfile::tempdir().unwrap();
    // Plain deleted second: the tar's content stays for the compressions.
    for (k, order) in [[2usize, 0, 5, 1, 6, 3, 4], [6, 5, 4, 3, 2, 1, 0]]
        .iter()
        .enumerate()
    {
        let s = arrive(
            &tmp.path().join(k.to_string()),
            &all,
            &(0..n).collect::<Vec<_>>(),
            None,
        );
        let mut held: Vec<usize> = (0..n).collect();
        for &i in order {
            assert!(s.delete("build", &sha(&all[i].1)).unwrap() || i == 0 || held.len() > 1);
            held.retain(|&h| h != i);
            s.gc(GcOptions::default()).unwrap();
            assert_verified(&s);
            let tar_content = s.content(&sha(&tar)).unwrap();
            if held.is_empty() {
                assert!(
                    tar_content.is_none(),
                    "the tar's content outlived every blob"
                );
                break;
            }
            // The tar's recipe stays while any variant shares it, held by no
            // namespace once the plain blob is gone.
            let t = tar_content.expect("the tar's content is still needed");
            assert_eq!(t.holders, held.contains(&0) as u32);
            for &h in &held {
                let (name, data) = &all[h];
                assert!(
                    store_read(&s, &sha(data)) == *data,
                    "{name} after deleting {}",
                    all[i].0
                );
            }
            if !held.contains(&0) {
                // No namespace holds the tar itself.
                assert!(s.stat("build", &sha(&tar)).is_err());
            }
        }
        let c = s.stats_counters().unwrap();
        assert_eq!(
            (c.blobs, c.contents, c.chunks, c.literal_bytes),
            (0, 0, 0, 0)
        );
        assert_eq!(c.unreferenced_chunks, 0);
        s.settle(std::time::Duration::from_secs(30));
    }
}

/// The shared content survives a restart, and what stat reports.
#[test]
fn sharing_survives_a_restart() {
    let tar = layer();
    let all = variants(&tar);
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = arrive(tmp.path(), &all, &[4, 0, 1], None);
        s.settle(std::time::Duration::from_secs(30));
    }
    let s = store(tmp.path(), false);
    assert_shared(&s, &all, &[4, 0, 1]);
    let info = s.stat("build", &sha(&all[4].1)).unwrap();
    assert_eq!(info.content.base(), Some(sha(&tar)));
    let plain = s.stat("build", &sha(&tar)).unwrap();
    assert_eq!(plain.content.variants, 2);
    assert_verified(&s);
    let deep = s.verify(true).unwrap();
    assert!(deep.ok(), "{:#?}", deep.problems);
    s.settle(std::time::Duration::from_secs(30));
}

/// The tar's recipe pages fall where its bytes were cut as they were fed
/// (literal runs split at a write's end); a compression decoded in other
/// pieces still shares it: the base is the content under its diff_id,
/// whatever its pages.
#[test]
fn a_tar_paged_otherwise_is_shared_all_the_same() {
    // Many small files: several pages of segments.
    let files: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| {
            (
                format!("usr/share/doc/f{i}"),
                noise(300 + i % 1700, i as u64),
            )
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    let tar = tar_of(&refs, 9);
    let gz = python_gzip(&tar, 6);
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), false);
    let mut ing = s
        .begin_ingest(IngestOptions {
            namespace: "build".into(),
            ..Default::default()
        })
        .unwrap();
    for piece in tar.chunks(777) {
        ing.write(piece).unwrap();
    }
    ing.commit().unwrap();
    push(&s, &gz);
    let v = s.content(&sha(&gz)).unwrap().unwrap();
    let t = s.content(&sha(&tar)).unwrap().unwrap();
    assert_eq!(v.base(), Some(sha(&tar)));
    assert_eq!(v.page_starts, t.page_starts);
    // The compression alone pages its tar otherwise: this test is about
    // recipes that differ.
    let other = store(&tmp.path().join("other"), false);
    push(&other, &gz);
    let alone = other.content(&sha(&tar)).unwrap().unwrap();
    assert_ne!(
        alone.page_starts, t.page_starts,
        "pages fell alike; the test shows nothing"
    );
    other.settle(std::time::Duration::from_secs(30));
    assert_eq!(t.variants, 1);
    assert!(store_read(&s, &sha(&gz)) == gz);
    let mut plain = Vec::new();
    s.read_plain(&sha(&gz), &v, 0, 0, &mut |b: &[u8]| {
        plain.extend_from_slice(b);
        Ok(true)
    })
    .unwrap();
    assert!(plain == tar, "the plain read of the compression is the tar");
    assert_verified(&s);
    s.gc(GcOptions::default()).unwrap();
    assert_eq!(s.stats_counters().unwrap().unreferenced_chunks, 0);
    s.settle(std::time::Duration::from_secs(30));
}
