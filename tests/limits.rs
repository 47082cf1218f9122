//! Configured limits are enforced with the right status, store nothing
//! half-way, and leave the daemon serving: streams at once, blob size,
//! message size, idle streams, decompression ratio.

mod common;

use common::*;
use std::time::Duration;
use strata::proto::containerd::services::content::v1 as cpb;
use strata::proto::strata::v1 as pb;
use strata::server::Limits;
use strata::store::StoreConfig;
use tonic::Code;

async fn start(dir: &std::path::Path, limits: Limits) -> Daemon {
    Daemon::start_opts(dir, StoreConfig::default(), limits).await
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_then_served_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        Limits {
            max_streams: 2,
            ..Limits::default()
        },
    )
    .await;
    let mut c = d.client().await;
    let blob = noise(8 << 20, 1);
    let digest = push(&mut c, &blob).await.digest;
    // Two reads opened and not consumed hold both places.
    let mut held = Vec::new();
    for _ in 0..2 {
        let req = pb::ReadRequest {
            digest: digest.clone(),
            ..Default::default()
        };
        held.push(c.read(req).await.unwrap().into_inner());
    }
    let e = push_as(&mut c, "", "", b"more", 4).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    let e = read_range(&mut c, "", &digest, 0, 10).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    // Reading them to the end gives the places back.
    for mut s in held {
        let mut n = 0;
        while let Some(m) = s.message().await.unwrap() {
            n += m.data.len();
        }
        assert_eq!(n, blob.len());
    }
    let mut ok = false;
    for _ in 0..100 {
        if push_as(&mut c, "", "", b"more", 4).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the daemon did not take pushes again");
    d.stop().await;
}

#[tokio::test]
async fn blobs_past_the_size_limit_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        Limits {
            max_blob_bytes: 1 << 20,
            ..Limits::default()
        },
    )
    .await;
    let mut c = d.client().await;
    let e = push_as(&mut c, "", "", &noise(3 << 20, 2), 64 << 10)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    let s = stats(&mut c).await;
    assert_eq!((s.blobs, s.chunks), (0, 0), "a refused push left {s:?}");
    // A blob under the limit is fine.
    let small = noise(1 << 20, 3);
    assert_eq!(push(&mut c, &small).await.digest, sha256_digest(&small));

    // containerd's Write: a declared total, and bytes written past the limit.
    let ch = strata::client::connect_channel(&d.socket).await.unwrap();
    let mut cc = cpb::content_client::ContentClient::new(ch);
    let big = noise((1 << 20) + 10, 4);
    for total in [big.len() as i64, 0] {
        let req = cpb::WriteContentRequest {
            action: cpb::WriteAction::Write as i32,
            r#ref: format!("big-{total}"),
            total,
            data: big.clone().into(),
            ..Default::default()
        };
        let mut replies = cc
            .write(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let e = replies.message().await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "total {total}: {e}");
    }
    d.stop().await;
}

#[tokio::test]
async fn a_silent_push_is_ended_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        Limits {
            idle_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    )
    .await;
    let mut c = d.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(start_msg("", "")).await.unwrap();
    tx.send(pb::PushRequest {
        msg: Some(pb::push_request::Msg::Data(noise(1000, 5).into())),
    })
    .await
    .unwrap();
    // The client keeps the stream open and says nothing more.
    let e = c
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    drop(tx);
    assert_eq!(stats(&mut c).await.blobs, 0);
    let blob = noise(5000, 6);
    assert_eq!(push(&mut c, &blob).await.digest, sha256_digest(&blob));
    d.stop().await;
}

#[tokio::test]
async fn messages_past_the_size_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        Limits {
            max_message_bytes: 1 << 20,
            ..Limits::default()
        },
    )
    .await;
    let mut c = d.client().await;
    let e = push_as(&mut c, "", "", &noise(2 << 20, 7), 2 << 20)
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert_eq!(stats(&mut c).await.blobs, 0);
    let blob = noise(2 << 20, 8);
    assert_eq!(
        push_as(&mut c, "", "", &blob, 512 << 10)
            .await
            .unwrap()
            .digest,
        sha256_digest(&blob)
    );
    d.stop().await;
}

#[tokio::test]
async fn the_decompression_ratio_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StoreConfig::default();
    store.unwrap.max_ratio = 2;
    let d = Daemon::start_with(dir.path(), store).await;
    let mut c = d.client().await;
    // 4 MiB of text gzipped by flate2 well past 2:1 (and past the 1 MiB slack).
    let plain: Vec<u8> = (0..4u32 << 20)
        .map(|i| b"layer "[(i % 6) as usize])
        .collect();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    std::io::Write::write_all(&mut e, &plain).unwrap();
    let gz = e.finish().unwrap();
    let r = push(&mut c, &gz).await;
    assert_eq!(
        r.kept, "stored",
        "a stream past the ratio is kept as received"
    );
    assert_eq!(read_all(&mut c, &r.digest).await, gz);
    d.stop().await;
}
