//! The core promises of strata.v1, checked through the gRPC API of a daemon
//! started in-process.

mod common;
use common::*;
use strata::proto::strata::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_read_gives_back_the_same_bytes_and_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let big = noise(700_000, 1);
    let data = tar_of(
        &[("a/b.bin", &big), ("empty", b""), ("small.txt", b"hello\n")],
        1_700_000_000,
    );
    let r = push(&mut c, &data).await;
    assert_eq!(r.digest, sha256_digest(&data));
    assert_eq!(r.size, data.len() as u64);
    assert!(r.new_chunks > 0 && r.bytes_added > 0);
    assert_eq!(read_all(&mut c, &r.digest).await, data);
    let info = c
        .stat(pb::StatRequest {
            namespace: String::new(),
            digest: r.digest.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.size, info.layout.as_str()),
        (data.len() as u64, "tar")
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_are_exact_at_random_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let bodies: Vec<Vec<u8>> = (0..40).map(|i| noise(1000 + i * 7919, i as u64)).collect();
    let files: Vec<(String, &[u8])> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("f{i}"), &b[..]))
        .collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let data = tar_of(&files, 5);
    let r = push(&mut c, &data).await;
    let mut x: u64 = 12345;
    for _ in 0..60 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 11) % data.len() as u64;
        let len = (x >> 40) % 100_000 + 1;
        let got = read_range(&mut c, "", &r.digest, off, len).await.unwrap();
        let end = (off + len).min(data.len() as u64) as usize;
        assert_eq!(got, &data[off as usize..end], "offset {off} length {len}");
    }
    // At the end: empty. Past it: OutOfRange.
    assert!(read_range(&mut c, "", &r.digest, data.len() as u64, 0)
        .await
        .unwrap()
        .is_empty());
    let e = read_range(&mut c, "", &r.digest, data.len() as u64 + 1, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shared_by_two_layers_with_different_headers_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let shared = noise(3_000_000, 7);
    let a = tar_of(&[("usr/lib/libbig.so", &shared), ("etc/a", b"aaa")], 1_000);
    let b = tar_of(
        &[("opt/other/name.so", &shared), ("etc/b", b"bbbb")],
        2_000_000,
    );
    let ra = push(&mut c, &a).await;
    let s1 = stats(&mut c).await;
    let rb = push(&mut c, &b).await;
    let s2 = stats(&mut c).await;
    assert_ne!(ra.digest, rb.digest);
    // The second layer adds its headers and the small file, not the 3 MB body.
    assert!(
        s2.chunk_plain_bytes - s1.chunk_plain_bytes < 10_000,
        "{} -> {}",
        s1.chunk_plain_bytes,
        s2.chunk_plain_bytes
    );
    assert!(
        rb.bytes_added < 20_000,
        "second push added {}",
        rb.bytes_added
    );
    assert!(rb.reused_chunks > 0);
    assert_eq!(read_all(&mut c, &ra.digest).await, a);
    assert_eq!(read_all(&mut c, &rb.digest).await, b);
    assert!(s2.dedup_ratio > 1.9, "dedup ratio {}", s2.dedup_ratio);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_is_refused_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let data = tar_of(&[("x", &noise(500_000, 3))], 1);
    let wrong = sha256_digest(b"something else");
    let e = push_as(&mut c, "", &wrong, &data, 100_000)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("digest mismatch"), "{}", e.message());
    let s = stats(&mut c).await;
    assert_eq!(
        (s.blobs, s.contents, s.chunks, s.chunk_plain_bytes),
        (0, 0, 0, 0)
    );
    assert_eq!(
        pack_bytes(tmp.path()),
        0,
        "rejected bytes were cut off the pack"
    );
    let e = c
        .stat(pb::StatRequest {
            namespace: String::new(),
            digest: sha256_digest(&data),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The right digest goes through.
    let r = push_as(&mut c, "", &sha256_digest(&data), &data, 100_000)
        .await
        .unwrap();
    assert_eq!(r.digest, sha256_digest(&data));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_readable_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let blobs: Vec<Vec<u8>> = (0..5)
        .map(|i| tar_of(&[("f", &noise(200_000 * (i + 1), i as u64))], i as u64))
        .collect();
    let mut digests = Vec::new();
    for b in &blobs {
        digests.push(push(&mut c, b).await.digest);
    }
    let before = stats(&mut c).await;
    drop(c);
    d.stop().await;
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    for (b, dg) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut c, dg).await, b);
    }
    let after = stats(&mut c).await;
    assert_eq!(
        (before.blobs, before.chunks, before.logical_bytes),
        (after.blobs, after.chunks, after.logical_bytes)
    );
    // Pushing again after the restart dedups against what was stored before it.
    let r = push(&mut c, &blobs[4]).await;
    assert!(r.already_stored && r.bytes_added == 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_a_tar_is_stored_and_read_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    for data in [
        Vec::new(),
        b"x".to_vec(),
        noise(1_234_567, 9),
        br#"{"schemaVersion":2}"#.to_vec(),
    ] {
        let r = push_as(&mut c, "", "", &data, 4097).await.unwrap();
        assert_eq!(r.digest, sha256_digest(&data));
        assert_eq!(read_all(&mut c, &r.digest).await, data);
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_list_labels_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let data = tar_of(&[("f", &noise(300_000, 11))], 1);
    let mut msgs = vec![pb::PushRequest {
        msg: Some(pb::push_request::Msg::Start(pb::PushStart {
            namespace: "build".into(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            labels: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        })),
    }];
    msgs.push(pb::PushRequest {
        msg: Some(pb::push_request::Msg::Data(data.clone().into())),
    });
    let r = c.push(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    // Another namespace holding the same content shares it.
    let r2 = push_as(&mut c, "other", "", &data, 1 << 20).await.unwrap();
    assert!(r2.already_stored && r2.bytes_added == 0);
    let list = |ns: &str, f: &[&str]| pb::ListRequest {
        namespace: ns.into(),
        label_filters: f.iter().map(|s| s.to_string()).collect(),
    };
    let l = c
        .list(list("build", &["team=a"]))
        .await
        .unwrap()
        .into_inner()
        .blobs;
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].media_type, "application/vnd.oci.image.layer.v1.tar");
    assert!(c
        .list(list("build", &["team=b"]))
        .await
        .unwrap()
        .into_inner()
        .blobs
        .is_empty());
    assert!(c
        .list(list("default", &[]))
        .await
        .unwrap()
        .into_inner()
        .blobs
        .is_empty());
    // Deleting from one namespace keeps the other's copy readable.
    let del = |ns: &str| pb::DeleteRequest {
        namespace: ns.into(),
        digest: r.digest.clone(),
    };
    assert!(
        !c.delete(del("build"))
            .await
            .unwrap()
            .into_inner()
            .content_released
    );
    assert_eq!(
        c.delete(del("build")).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        read_range(&mut c, "other", &r.digest, 0, 0).await.unwrap(),
        data
    );
    assert!(
        c.delete(del("other"))
            .await
            .unwrap()
            .into_inner()
            .content_released
    );
    let s = stats(&mut c).await;
    assert_eq!((s.blobs, s.contents, s.logical_bytes), (0, 0, 0));
    assert_eq!(s.unreferenced_chunks, s.chunks);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let stat = |dg: &str, ns: &str| pb::StatRequest {
        namespace: ns.into(),
        digest: dg.into(),
    };
    assert_eq!(
        c.stat(stat("md5:abc", "")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.stat(stat(&sha256_digest(b"nope"), ""))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.stat(stat(&sha256_digest(b"nope"), "bad/ns"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // A push with no start message, or data first.
    let e = c
        .push(tokio_stream::iter(Vec::<pb::PushRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let data_first = vec![pb::PushRequest {
        msg: Some(pb::push_request::Msg::Data(vec![1u8].into())),
    }];
    assert_eq!(
        c.push(tokio_stream::iter(data_first))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let e = push_as(&mut c, "", "sha256:xyz", b"abc", 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_the_same_blob_all_succeed_and_store_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let data = tar_of(&[("f", &noise(2_000_000, 21))], 1);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = d.client().await;
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            push_as(&mut c, "", "", &data, 65536).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().digest, sha256_digest(&data));
    }
    let mut c = d.client().await;
    let s = stats(&mut c).await;
    assert_eq!((s.blobs, s.contents), (1, 1));
    assert!(
        s.chunk_plain_bytes < 2_100_000,
        "stored once: {}",
        s.chunk_plain_bytes
    );
    assert_eq!(read_all(&mut c, &sha256_digest(&data)).await, data);
    d.stop().await;
}

#[tokio::test]
async fn the_socket_is_0660_and_owned_by_the_group_asked_for() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    // Giving a file to a group one is not in needs root (CI runs as root).
    let as_root = unsafe { libc::geteuid() } == 0;
    let d = Daemon::start_custom(dir.path(), |o| {
        if as_root {
            o.socket_group = Some("nogroup".into());
        }
    })
    .await;
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    if as_root {
        assert_eq!(m.gid(), 65534, "nogroup's gid on Debian");
    } else {
        eprintln!("not root: the group half of this test did not run");
    }
    d.stop().await;
}
