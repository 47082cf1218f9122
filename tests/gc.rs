//! Garbage collection: what deletes release is reclaimed, what is still used
//! never is, even with pushes racing the collector.

mod common;
use common::*;
use strata::proto::strata::v1 as pb;

/// Collection alone: densifying (tests/densify.rs) would rewrite packs with
/// no garbage too, which these tests count.
async fn gc(c: &mut Client) -> pb::GcResponse {
    c.gc(pb::GcRequest { skip_densify: true })
        .await
        .unwrap()
        .into_inner()
}

async fn verify_deep(c: &mut Client) {
    let v = c
        .verify(pb::VerifyRequest { deep: true })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "verify found problems: {:?}", v.problems);
}

async fn delete(c: &mut Client, digest: &str) {
    c.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: digest.into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_content_is_reclaimed_and_shared_content_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let shared = noise(1_500_000, 1);
    let a = tar_of(&[("shared", &shared), ("only-a", &noise(2_000_000, 2))], 1);
    let b = tar_of(&[("shared", &shared), ("only-b", &noise(300_000, 3))], 2);
    let ra = push(&mut c, &a).await;
    let rb = push(&mut c, &b).await;
    // Nothing is garbage yet.
    let r = gc(&mut c).await;
    assert_eq!(
        (r.chunks_freed, r.packs_rewritten, r.packs_removed),
        (0, 0, 0)
    );
    let before = stats(&mut c).await;
    delete(&mut c, &ra.digest).await;
    let r = gc(&mut c).await;
    assert!(r.chunks_freed > 0);
    assert!(
        r.chunk_bytes_freed >= 2_000_000 && r.chunk_bytes_freed < 2_100_000,
        "freed {}",
        r.chunk_bytes_freed
    );
    assert!(
        r.pack_bytes_after < r.pack_bytes_before - 1_900_000,
        "{r:?}"
    );
    let after = stats(&mut c).await;
    assert_eq!(after.unreferenced_chunks, 0);
    assert!(after.bytes_on_disk < before.bytes_on_disk);
    // The shared body and b's own file are intact.
    assert_eq!(read_all(&mut c, &rb.digest).await, b);
    verify_deep(&mut c).await;
    // Pushing a again works and reads back exactly (its chunks are stored anew).
    let ra2 = push(&mut c, &a).await;
    assert!(ra2.bytes_added > 1_900_000);
    assert_eq!(read_all(&mut c, &ra2.digest).await, a);
    verify_deep(&mut c).await;
    drop(c);
    d.stop().await;
    // Everything survives a restart after a rewrite.
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    assert_eq!(read_all(&mut c, &rb.digest).await, b);
    verify_deep(&mut c).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_the_collector_never_lose_a_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    // A pool of bodies; every blob mixes a few, so pushes keep reusing chunks
    // that deletes have just released.
    let bodies: Vec<Vec<u8>> = (0..6)
        .map(|i| noise(200_000 + i * 50_000, 100 + i as u64))
        .collect();
    let mut workers = Vec::new();
    for w in 0..3u64 {
        let mut c = d.client().await;
        let bodies = bodies.clone();
        workers.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            for i in 0..12u64 {
                let pick = |k: u64| &bodies[((w * 7 + i * 3 + k) % 6) as usize][..];
                let blob = tar_of(&[("x", pick(0)), ("y", pick(1))], w * 100 + i);
                let r = push_as(&mut c, "", "", &blob, 100_000).await.unwrap();
                if i % 3 == 2 {
                    delete(&mut c, &r.digest).await;
                } else {
                    kept.push((r.digest, blob));
                }
            }
            kept
        }));
    }
    let mut gcc = d.client().await;
    let collector = tokio::spawn(async move {
        let mut runs = 0;
        for _ in 0..40 {
            gc(&mut gcc).await;
            runs += 1;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        runs
    });
    let mut kept = Vec::new();
    for w in workers {
        kept.extend(w.await.unwrap());
    }
    assert!(collector.await.unwrap() > 0);
    let mut c = d.client().await;
    gc(&mut c).await;
    for (digest, blob) in &kept {
        assert_eq!(&read_all(&mut c, digest).await, blob, "{digest}");
    }
    verify_deep(&mut c).await;
    d.stop().await;
}

/// Regression: one collection rewriting two packs must not append the first
/// pack's live chunks to the second and then drop the second with a stale
/// length (found by the crash test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_several_packs_in_one_run_keeps_every_live_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    // Hold a push open so its ingest keeps pack 1 leased...
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PushRequest>(4);
    tx.send(start_msg("", "")).await.unwrap();
    let x2 = noise(3_000_000, 11);
    tx.send(pb::PushRequest {
        msg: Some(pb::push_request::Msg::Data(x2[..1000].to_vec().into())),
    })
    .await
    .unwrap();
    let mut held = d.client().await;
    let held = tokio::spawn(async move {
        held.push(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // ...while y1 and y2 go to pack 2.
    let (y1, y2) = (noise(3_000_000, 12), noise(3_000_000, 13));
    let _ry1 = push_as(&mut c, "", "", &y1, 1 << 20).await.unwrap();
    let ry2 = push_as(&mut c, "", "", &y2, 1 << 20).await.unwrap();
    tx.send(pb::PushRequest {
        msg: Some(pb::push_request::Msg::Data(x2[1000..].to_vec().into())),
    })
    .await
    .unwrap();
    drop(tx);
    let rx2 = held.await.unwrap().unwrap().into_inner();
    let x1 = noise(3_000_000, 14);
    let rx1 = push_as(&mut c, "", "", &x1, 1 << 20).await.unwrap();
    // Half of each pack becomes garbage; both are rewritten in one run.
    delete(&mut c, &rx2.digest).await;
    delete(&mut c, &ry2.digest).await;
    let r = gc(&mut c).await;
    assert!(r.packs_rewritten + r.packs_removed >= 2, "{r:?}");
    assert_eq!(read_all(&mut c, &rx1.digest).await, x1);
    assert_eq!(read_all(&mut c, &sha256_digest(&y1)).await, y1);
    verify_deep(&mut c).await;
    let s = stats(&mut c).await;
    assert!(
        s.pack_bytes >= 6_000_000,
        "live data is 6 MB, packs hold {}",
        s.pack_bytes
    );
    d.stop().await;
}
