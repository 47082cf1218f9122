//! The bucket format on `object_store`'s in-memory backend: two daemons with
//! their own data directories share one bucket; a third starts empty and
//! rebuilds its index from the bucket alone. (Garage runs the same flows in
//! tests/bucket_garage.rs; this one checks the format without a cluster.)

mod common;

use common::*;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use std::sync::Arc;
use strata::proto::strata::v1 as pb;
use strata::store::remote::RemoteConfig;
use strata::store::StoreConfig;

fn config(bucket: &Arc<InMemory>) -> StoreConfig {
    let mut r = RemoteConfig::new("s3://test/some/prefix");
    r.backend = Some(bucket.clone());
    r.cache_bytes = 64 << 20;
    StoreConfig {
        remote: Some(r),
        ..StoreConfig::default()
    }
}

fn layers() -> Vec<Vec<u8>> {
    let a = text(1, 300_000);
    let b = text(2, 500_000);
    let c = noise(200_000, 3);
    let tar1 = tar_of(&[("a.txt", &a), ("b.txt", &b)], 1_700_000_000);
    let tar2 = tar_of(&[("b.txt", &b), ("c.bin", &c)], 1_700_000_100);
    let gz = python_gzip(&tar2, 6);
    vec![tar1, tar2, gz, b"{\"schemaVersion\": 2}".to_vec()]
}

async fn bucket_bytes(bucket: &Arc<InMemory>, under: &str) -> u64 {
    use futures::TryStreamExt;
    let p = object_store::path::Path::from(format!("some/prefix/{under}"));
    let v: Vec<_> = bucket.list(Some(&p)).try_collect().await.unwrap();
    v.iter().map(|m| m.size).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_a_bucket_and_an_empty_one_rebuilds_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let blobs = layers();

    // A pushes; every blob reads back exact.
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket)).await;
    let mut ca = a.client().await;
    let mut digests = Vec::new();
    for b in &blobs {
        let r = push(&mut ca, b).await;
        assert_eq!(r.digest, sha256_digest(b));
        digests.push(r.digest);
    }
    for (b, d) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut ca, d).await, b);
    }
    // The bucket holds the packs, about what A keeps locally.
    let local = pack_bytes(&tmp.path().join("a"));
    let packs = bucket_bytes(&bucket, "packs").await;
    assert!(packs >= local, "bucket packs {packs} < local {local}");
    assert!(
        (packs as f64) <= 1.02 * local as f64,
        "bucket packs {packs} > 1.02 x local {local}"
    );

    // B, its own data dir, same bucket: a read of A's blob looks there at once.
    let b = Daemon::start_with(&tmp.path().join("b"), config(&bucket)).await;
    let mut cb = b.client().await;
    for (blob, d) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut cb, d).await, blob, "B reads {d}");
    }
    // B pushing the same layers stores no chunk again.
    for blob in &blobs {
        let r = push(&mut cb, blob).await;
        assert!(r.already_stored, "B already has {}", r.digest);
        assert_eq!(r.new_chunks, 0);
    }
    // A new layer through B, sharing a file with A's: only the new file's chunks.
    let tar3 = tar_of(
        &[("a.txt", &text(1, 300_000)), ("d.txt", &text(9, 100_000))],
        1_700_000_200,
    );
    let r3 = push(&mut cb, &tar3).await;
    assert!(r3.reused_chunks > 0, "{r3:?}");
    // ...which A reads exact.
    assert_eq!(read_all(&mut ca, &r3.digest).await, tar3);

    // A deletes a blob: B no longer lists it after its next look.
    ca.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: digests[3].clone(),
    })
    .await
    .unwrap();
    b.stop().await;
    let b = Daemon::start_with(&tmp.path().join("b"), config(&bucket)).await;
    let mut cb = b.client().await;
    let st = cb
        .stat(pb::StatRequest {
            namespace: String::new(),
            digest: digests[3].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);

    // C starts from an empty data dir: every blob is served, and a deep
    // verify (reading every block from the bucket) is clean.
    let c = Daemon::start_with(&tmp.path().join("c"), config(&bucket)).await;
    let mut cc = c.client().await;
    for (blob, d) in blobs.iter().zip(&digests).take(3) {
        assert_eq!(&read_all(&mut cc, d).await, blob);
    }
    assert_eq!(read_all(&mut cc, &r3.digest).await, tar3);
    let s = stats(&mut cc).await;
    assert_eq!(s.blobs, 4, "{s:?}");
    verify_deep(&mut cc).await;
    for d in [a, b, c] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_belongs_to_one_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let dir = tmp.path().join("a");
    let d = Daemon::start_with(&dir, config(&bucket)).await;
    d.stop().await;
    // Without --store, or with another bucket, the store refuses to open.
    let e = strata::store::Store::open(&dir, StoreConfig::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("--store"), "{e}");
    let mut other = config(&bucket);
    other.remote.as_mut().unwrap().url = "s3://other".into();
    let e = strata::store::Store::open(&dir, other)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("s3://other"), "{e}");
    // A local store cannot be pointed at a bucket.
    let local = tmp.path().join("local");
    let d = Daemon::start(&local).await;
    push(&mut d.client().await, b"x").await;
    d.stop().await;
    let e = strata::store::Store::open(&local, config(&bucket))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("local store"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tar_first_stored_as_a_compressed_blobs_base_reaches_other_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let tar = tar_of(&[("x.txt", &text(5, 400_000))], 1);
    let gz = python_gzip(&tar, 6);
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket)).await;
    let mut ca = a.client().await;
    // The gzip first: its plain tar becomes a base held by no namespace...
    push(&mut ca, &gz).await;
    // ...then the tar itself: stored already, only its blob record is new.
    let r = push(&mut ca, &tar).await;
    assert!(r.already_stored, "{r:?}");
    // Another daemon, and an empty data dir, serve both exact.
    for dir in ["b", "c"] {
        let d = Daemon::start_with(&tmp.path().join(dir), config(&bucket)).await;
        let mut c = d.client().await;
        assert_eq!(read_all(&mut c, &sha256_digest(&tar)).await, tar, "{dir}");
        assert_eq!(read_all(&mut c, &sha256_digest(&gz)).await, gz, "{dir}");
        d.stop().await;
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_put_or_delete_of_a_blob_wins_whatever_the_listing_order() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let x = tar_of(&[("x.txt", &text(6, 100_000))], 1);
    let dx = sha256_digest(&x);
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket)).await;
    let mut ca = a.client().await;
    push(&mut ca, &x).await;
    let b = Daemon::start_with(&tmp.path().join("b"), config(&bucket)).await;
    let mut cb = b.client().await;
    // B deletes it, then A pushes it again: the push is newer.
    assert_eq!(read_all(&mut cb, &dx).await, x);
    cb.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: dx.clone(),
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    push(&mut ca, &x).await;
    // A fresh data dir applies all three segments: the blob is there.
    let c = Daemon::start_with(&tmp.path().join("c"), config(&bucket)).await;
    let mut cc = c.client().await;
    assert_eq!(read_all(&mut cc, &dx).await, x);
    // A deletes it last: a fresh data dir does not hold it.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ca.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: dx.clone(),
    })
    .await
    .unwrap();
    let e = Daemon::start_with(&tmp.path().join("e"), config(&bucket)).await;
    let mut ce = e.client().await;
    let st = ce
        .stat(pb::StatRequest {
            namespace: String::new(),
            digest: dx.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);
    for d in [a, b, c, e] {
        d.stop().await;
    }
}

async fn names(bucket: &Arc<InMemory>, under: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let p = object_store::path::Path::from(format!("some/prefix/{under}"));
    let v: Vec<_> = bucket.list(Some(&p)).try_collect().await.unwrap();
    v.iter().map(|m| m.location.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_deletes_what_no_record_names_once_the_grace_period_has_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let grace = std::time::Duration::from_millis(1500);
    let cfg = || {
        let mut c = config(&bucket);
        c.remote.as_mut().unwrap().gc_grace = grace;
        c
    };
    let a = Daemon::start_with(&tmp.path().join("a"), cfg()).await;
    let mut ca = a.client().await;
    let x = tar_of(&[("x.bin", &noise(300_000, 1))], 1);
    let y = tar_of(&[("y.bin", &noise(300_000, 2))], 1);
    push(&mut ca, &y).await;
    push(&mut ca, &x).await;
    // What a daemon killed mid-commit leaves: a piece and a content object
    // no segment names (old enough to mark), and a young stray (not yet).
    let old_ms = strata::store::now_ms() - 10 * 60 * 1000;
    let stray = format!("some/prefix/packs/00000000000000aa-{old_ms:013}-00000001.pack");
    let stray_c = format!(
        "some/prefix/contents/{}/00000000000000aa-{old_ms:013}-00000002",
        "ab".repeat(32)
    );
    let young_ms = strata::store::now_ms() + 60 * 60 * 1000;
    let young = format!("some/prefix/packs/00000000000000aa-{young_ms:013}-00000003.pack");
    for n in [&stray, &stray_c, &young] {
        bucket
            .put(&n.as_str().into(), vec![7u8; 4096].into())
            .await
            .unwrap();
    }
    // X deleted: its objects stay (a daemon's index may still use them).
    ca.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: sha256_digest(&x),
    })
    .await
    .unwrap();
    tokio::time::sleep(grace).await;
    // First run marks the two old strays, deletes nothing.
    let g1 = ca.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    assert!(g1.bucket_collected, "{g1:?}");
    assert_eq!((g1.bucket_marked, g1.bucket_deleted), (2, 0), "{g1:?}");
    tokio::time::sleep(grace).await;
    // A grace period later: deleted.
    let g2 = ca.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    assert_eq!((g2.bucket_marked, g2.bucket_deleted), (0, 2), "{g2:?}");
    let pieces = names(&bucket, "packs").await;
    assert_eq!(pieces.len(), 3, "Y's, X's and the young stray: {pieces:?}");
    assert!(!pieces.contains(&stray) && pieces.contains(&young));
    assert!(!names(&bucket, "contents").await.contains(&stray_c));
    // Y from an empty data dir; X is not held; pushed again, it reads exact.
    let c = Daemon::start_with(&tmp.path().join("c"), cfg()).await;
    let mut cc = c.client().await;
    assert_eq!(read_all(&mut cc, &sha256_digest(&y)).await, y);
    verify_deep(&mut cc).await;
    push(&mut ca, &x).await;
    assert_eq!(read_all(&mut cc, &sha256_digest(&x)).await, x);
    a.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_packs_leave_the_data_directory_and_are_read_from_the_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let mut cfg = config(&bucket);
    cfg.max_pack_bytes = 300_000;
    let dir = tmp.path().join("a");
    let a = Daemon::start_with(&dir, cfg.clone()).await;
    let mut ca = a.client().await;
    let blobs: Vec<Vec<u8>> = (0..6)
        .map(|i| tar_of(&[("f", &noise(400_000, 50 + i))], i))
        .collect();
    for b in &blobs {
        push(&mut ca, b).await;
    }
    // Each push filled its pack: all but none are gone from the data dir.
    let local = pack_bytes(&dir);
    let s = stats(&mut ca).await;
    assert!(
        local < 400_000,
        "{local} bytes of packs stay in the data dir"
    );
    assert!(s.bucket_pack_bytes > 6 * 400_000, "{s:?}");
    for b in &blobs {
        assert_eq!(&read_all(&mut ca, &sha256_digest(b)).await, b);
    }
    verify_deep(&mut ca).await;
    // And after a restart.
    a.stop().await;
    let a = Daemon::start_with(&dir, cfg).await;
    let mut ca = a.client().await;
    for b in &blobs {
        assert_eq!(&read_all(&mut ca, &sha256_digest(b)).await, b);
    }
    a.stop().await;
}
