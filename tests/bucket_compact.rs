//! Compaction of the bucket's small objects (`src/store/compact.rs`) on
//! `object_store`'s in-memory backend: small pushes leave one piece and one
//! segment each; the collecting daemon copies the pieces into one and
//! merges the segments, and every daemon (one that read the old pieces,
//! one down meanwhile, one starting empty) still reads every blob exact,
//! through the moves, after the old pieces are deleted.

mod common;

use common::*;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use std::sync::Arc;
use std::time::Duration;
use strata::proto::strata::v1 as pb;
use strata::store::remote::RemoteConfig;
use strata::store::StoreConfig;

const GRACE: Duration = Duration::from_millis(1500);

/// A daemon on `bucket` that compacts once 4 small objects of a kind are
/// there, collects with a short grace period, and looks in the bucket only
/// at open, on a miss and at collections (the test decides what it saw).
fn config(bucket: &Arc<InMemory>, max_pack_bytes: u64) -> StoreConfig {
    let mut r = RemoteConfig::new("s3://test/pre");
    r.backend = Some(bucket.clone());
    r.cache_bytes = 64 << 20;
    r.gc_grace = GRACE;
    r.sync_interval = Duration::from_secs(3600);
    r.compact_after = 4;
    StoreConfig {
        remote: Some(r),
        max_pack_bytes,
        ..StoreConfig::default()
    }
}

async fn names(bucket: &Arc<InMemory>, under: &str) -> Vec<String> {
    let p = object_store::path::Path::from(format!("pre/{under}"));
    let v: Vec<_> = bucket.list(Some(&p)).try_collect().await.unwrap();
    let mut out: Vec<String> = v
        .into_iter()
        .map(|m| m.location.to_string()["pre/".len()..].to_string())
        .collect();
    out.sort();
    out
}

async fn get(bucket: &Arc<InMemory>, name: &str) -> bytes::Bytes {
    let p = object_store::path::Path::from(format!("pre/{name}"));
    bucket.get(&p).await.unwrap().bytes().await.unwrap()
}

/// Makes `bucket` one a version 1 strata created; returns its marker.
async fn version_1_bucket(bucket: &Arc<InMemory>) -> bytes::Bytes {
    let v1 = format!(
        "{{\"format\": \"strata-bucket-1\", \"chunk_sizes\": \"{}\"}}",
        strata::split::ChunkSizes::default()
    );
    let b = bytes::Bytes::from(v1.into_bytes());
    bucket
        .put(&"pre/strata-repository.json".into(), b.clone().into())
        .await
        .unwrap();
    b
}

async fn gc(c: &mut Client) -> pb::GcResponse {
    let r = c.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    assert!(r.bucket_collected, "{r:?}");
    r
}

/// The pieces the content objects of `digest` name.
async fn pieces_named(bucket: &Arc<InMemory>, digest: &str) -> Vec<String> {
    use strata::store::remote::format::ContentObject;
    let dir = format!("contents/{}", digest.trim_start_matches("sha256:"));
    let mut out = Vec::new();
    for n in names(bucket, &dir).await {
        out.extend(
            ContentObject::decode(&get(bucket, &n).await)
                .unwrap()
                .objects,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_pushes_are_compacted_and_every_daemon_reads_through_the_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    // A bucket a version 1 strata made: upgraded at open.
    version_1_bucket(&bucket).await;
    // A's packs fill at once and leave its data dir: its own reads go to the
    // bucket too, through the moves.
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket, 100_000)).await;
    let mut ca = a.client().await;
    let marker = String::from_utf8(get(&bucket, "strata-repository.json").await.to_vec()).unwrap();
    assert!(marker.contains("\"strata-bucket-3\""), "{marker}");
    // The fences running version 1 and 2 daemons cannot parse as marks.
    assert_eq!(names(&bucket, "gc/marks").await.len(), 2);

    // Eight small layers, one push each; the last shares a file with the first.
    let shared = text(40, 150_000);
    let mut blobs: Vec<Vec<u8>> = (0..7u64)
        .map(|i| {
            tar_of(
                &[
                    ("s.txt", &shared[..if i == 0 { 150_000 } else { 10 }]),
                    ("n.bin", &noise(60_000, 50 + i)),
                ],
                1_700_000_000 + i,
            )
        })
        .collect();
    blobs.push(b"{\"schemaVersion\": 2, \"small\": true}".to_vec());
    let mut digests = Vec::new();
    for b in &blobs {
        digests.push(push(&mut ca, b).await.digest);
    }
    let pieces_before = names(&bucket, "packs").await;
    assert!(pieces_before.len() >= 7, "{pieces_before:?}");
    assert!(names(&bucket, "segments").await.len() >= 8);

    // B reads them all (its index now points into A's small pieces), then is
    // down while A deletes a blob and compacts.
    let b = Daemon::start_with(&tmp.path().join("b"), config(&bucket, 1 << 30)).await;
    let mut cb = b.client().await;
    for (blob, d) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut cb, d).await, blob);
    }
    b.stop().await;
    ca.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: digests[6].clone(),
    })
    .await
    .unwrap();

    let g = gc(&mut ca).await;
    eprintln!("compaction: {g:?}");
    // Every live small piece went into one; the deleted blob's piece is not
    // live and is left to the collection.
    assert_eq!(g.bucket_pieces_written, 1, "{g:?}");
    assert!(g.bucket_pieces_compacted >= 6, "{g:?}");
    assert_eq!(g.bucket_segments_written, 1, "{g:?}");
    assert!(g.bucket_segments_compacted >= 9, "{g:?}");
    let segments = names(&bucket, "segments").await;
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(names(&bucket, "moves").await.len(), 1);
    let pieces_now = names(&bucket, "packs").await;
    let new: Vec<&String> = pieces_now
        .iter()
        .filter(|p| !pieces_before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "{pieces_now:?}");

    // The old pieces are marked by the next collection and deleted by the
    // one after the grace period: only the compacted piece and the deleted
    // blob's are collected, nothing a live blob needs.
    tokio::time::sleep(GRACE).await;
    let g1 = gc(&mut ca).await;
    assert!(g1.bucket_marked >= 7, "{g1:?}");
    tokio::time::sleep(GRACE).await;
    let g2 = gc(&mut ca).await;
    assert_eq!(g2.bucket_deleted, g1.bucket_marked, "{g2:?}");
    let pieces_left = names(&bucket, "packs").await;
    assert_eq!(
        pieces_left,
        vec![new[0].clone()],
        "only the compacted piece is left"
    );

    // A reads every live blob exact: its own packs left its data dir, so
    // every read goes to the bucket, where its pieces were moved.
    for (i, (blob, d)) in blobs.iter().zip(&digests).enumerate() {
        if i != 6 {
            assert_eq!(&read_all(&mut ca, d).await, blob, "A reads blob {i}");
        }
    }
    // B, back (its block cache emptied at start), learns the delete from the
    // merged segment and reads the rest through the moves.
    let b = Daemon::start_with(&tmp.path().join("b"), config(&bucket, 1 << 30)).await;
    let mut cb = b.client().await;
    let st = cb
        .stat(pb::StatRequest {
            namespace: String::new(),
            digest: digests[6].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);
    for (i, (blob, d)) in blobs.iter().zip(&digests).enumerate() {
        if i != 6 {
            assert_eq!(&read_all(&mut cb, d).await, blob, "B reads blob {i}");
        }
    }
    // A push through B that shares the first layer's file stores only its
    // new file, and its content object names no deleted piece.
    let more = tar_of(
        &[("s.txt", &shared[..]), ("m.bin", &noise(30_000, 99))],
        1_700_000_100,
    );
    let r = push(&mut cb, &more).await;
    assert!(r.reused_chunks > 0, "{r:?}");
    assert!(r.bytes_added < 100_000, "{r:?}");
    let present = names(&bucket, "packs").await;
    for p in pieces_named(&bucket, &r.digest).await {
        assert!(
            present.contains(&p),
            "the new blob's content object names {p}"
        );
    }
    // An empty data dir rebuilds from the merged segment and the moves.
    let c = Daemon::start_with(&tmp.path().join("c"), config(&bucket, 1 << 30)).await;
    let mut cc = c.client().await;
    for (i, (blob, d)) in blobs.iter().zip(&digests).enumerate() {
        if i != 6 {
            assert_eq!(&read_all(&mut cc, d).await, blob, "C reads blob {i}");
        }
    }
    assert_eq!(read_all(&mut cc, &r.digest).await, more);
    assert_eq!(stats(&mut cc).await.blobs, 8);
    for client in [&mut ca, &mut cb, &mut cc] {
        verify_deep(client).await;
    }
    for d in [a, b, c] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_piece_is_compacted_again_and_old_names_resolve_in_one_hop() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket, 100_000)).await;
    let mut ca = a.client().await;
    let mut blobs = Vec::new();
    let mut digests = Vec::new();
    // Two rounds of four small pushes, each compacted; the second
    // compaction takes the first one's output too.
    for round in 0..2u64 {
        for i in 0..4u64 {
            let b = tar_of(
                &[("f.bin", &noise(40_000, 100 + round * 10 + i))],
                1_700_000_000 + i,
            );
            digests.push(push(&mut ca, &b).await.digest);
            blobs.push(b);
        }
        let g = gc(&mut ca).await;
        assert_eq!(g.bucket_pieces_written, 1, "round {round}: {g:?}");
    }
    // Old pieces go a grace period after their mark.
    for _ in 0..2 {
        tokio::time::sleep(GRACE).await;
        gc(&mut ca).await;
    }
    let pieces = names(&bucket, "packs").await;
    assert_eq!(pieces.len(), 1, "{pieces:?}");
    // The first round's content objects name pieces two compactions ago.
    let first = pieces_named(&bucket, &digests[0]).await;
    assert!(!pieces.contains(&first[0]));
    let c = Daemon::start_with(&tmp.path().join("c"), config(&bucket, 1 << 30)).await;
    let mut cc = c.client().await;
    for (blob, d) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut cc, d).await, blob);
        assert_eq!(&read_all(&mut ca, d).await, blob);
    }
    verify_deep(&mut cc).await;
    verify_deep(&mut ca).await;
    for d in [a, c] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_compaction_off_a_version_1_bucket_stays_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let v1 = version_1_bucket(&bucket).await;
    let mut cfg = config(&bucket, 1 << 30);
    cfg.remote.as_mut().unwrap().compact_after = 0;
    let a = Daemon::start_with(&tmp.path().join("a"), cfg).await;
    let mut ca = a.client().await;
    for i in 0..6u64 {
        push(&mut ca, &noise(20_000, 300 + i)).await;
    }
    let g = gc(&mut ca).await;
    assert_eq!(
        (g.bucket_pieces_written, g.bucket_segments_written),
        (0, 0),
        "{g:?}"
    );
    assert_eq!(get(&bucket, "strata-repository.json").await, v1);
    assert!(names(&bucket, "gc/marks").await.is_empty());
    assert!(names(&bucket, "moves").await.is_empty());
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_tied_with_a_delete_wins_in_every_order_records_are_read() {
    use strata::store::remote::format::{segment_name, segment_time, Record, Segment};
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket, 1 << 30)).await;
    let mut ca = a.client().await;
    let blob = noise(50_000, 400);
    let d = push(&mut ca, &blob).await.digest;
    a.stop().await;
    // A delete of the blob at the very time of its put, in a segment listed
    // before the put's (writer 00..): a daemon reading it first must still
    // hold the blob, as the collection's liveness counts it.
    let put = names(&bucket, "segments").await;
    assert_eq!(put.len(), 1);
    let t = segment_time(&put[0]).unwrap();
    let seg = Segment {
        time_ms: t,
        writer: [0; 8],
        records: vec![Record::Delete {
            ns: "default".into(),
            digest: strata::digest::Digest::parse(&d).unwrap(),
        }],
        times: Vec::new(),
    };
    let name = segment_name(t, &[0; 8], 0);
    assert!(name < put[0]);
    bucket
        .put(&format!("pre/{name}").as_str().into(), seg.encode().into())
        .await
        .unwrap();
    let c = Daemon::start_with(&tmp.path().join("c"), config(&bucket, 1 << 30)).await;
    let mut cc = c.client().await;
    assert_eq!(read_all(&mut cc, &d).await, blob);
    // Merged (both records kept, the put now after the delete or not),
    // an empty data dir holds it too.
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket, 1 << 30)).await;
    let mut ca = a.client().await;
    for i in 0..4u64 {
        push(&mut ca, &noise(10_000, 500 + i)).await;
    }
    let g = gc(&mut ca).await;
    assert_eq!(g.bucket_segments_written, 1, "{g:?}");
    let e = Daemon::start_with(&tmp.path().join("e"), config(&bucket, 1 << 30)).await;
    let mut ce = e.client().await;
    assert_eq!(read_all(&mut ce, &d).await, blob);
    for x in [a, c, e] {
        x.stop().await;
    }
}
