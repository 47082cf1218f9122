//! Hostile and broken input: each gets a clear error or is stored exactly as
//! data, the daemon keeps serving, and nothing is left half-stored.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;
use strata::proto::strata::v1 as pb;
use tokio::io::AsyncWriteExt;

/// The daemon still takes a push and gives it back.
async fn still_serves(c: &mut Client, seed: u64) {
    let b = noise(100_000, seed);
    let r = push(c, &b).await;
    assert_eq!(read_all(c, &r.digest).await, b);
}

#[tokio::test]
async fn garbage_on_the_socket_and_vanishing_clients_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let before = stats(&mut c).await;

    // Bytes that are not HTTP/2, then a half HTTP/2 preface.
    for junk in [
        noise(10_000, 1),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00".to_vec(),
    ] {
        let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
        let _ = s.write_all(&junk).await;
        drop(s);
    }
    // A client killed part way through a push (`strata push -` reading a pipe).
    {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["push", "-"])
            .env("STRATA_SOCKET", &d.socket)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&noise(3_000_000, 2)).unwrap();
        stdin.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        drop(stdin);
    }
    // A client that opens a push and sends nothing at all, then closes.
    let e = c
        .push(tokio_stream::iter(Vec::<pb::PushRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = stats(&mut c).await;
    assert_eq!(
        (after.blobs, after.chunks, after.pack_bytes),
        (before.blobs, before.chunks, before.pack_bytes),
        "nothing of the abandoned push is visible or kept"
    );
    still_serves(&mut c, 3).await;
    d.stop().await;
}

/// A ustar header for `name` claiming `size` bytes (octal, or base-256 when
/// too large), with a valid checksum.
fn header(name: &str, size: u64, typeflag: u8) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    if size < 8u64.pow(11) {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[tokio::test]
async fn absurd_tar_headers_are_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let body = noise(5000, 4);
    let mut blobs = Vec::new();
    // A file claiming an exabyte, followed by a little data.
    let mut b = header("huge", 1 << 60, b'0');
    b.extend_from_slice(&body);
    blobs.push(b);
    // A PAX header whose size record is absurd, then its file.
    let pax = b"30 size=99999999999999999999\n";
    let mut b = header("././@PaxHeader", pax.len() as u64, b'x');
    b.extend_from_slice(pax);
    b.resize(b.len().div_ceil(512) * 512, 0);
    b.extend_from_slice(&header("f", 100, b'0'));
    b.extend_from_slice(&body[..100]);
    blobs.push(b);
    // PAX records with lengths that lie (too long, zero, not numbers).
    for rec in [
        &b"999999 path=x\n"[..],
        b"0 path=x\n",
        b"zz path=x\n",
        b"5 a\n",
    ] {
        let mut b = header("././@PaxHeader", rec.len() as u64, b'x');
        b.extend_from_slice(rec);
        b.resize(b.len().div_ceil(512) * 512, 0);
        b.extend_from_slice(&header("g", 10, b'0'));
        b.extend_from_slice(&body[..10]);
        blobs.push(b);
    }
    // A GNU long name longer than the blob.
    let mut b = header("././@LongLink", 1 << 40, b'L');
    b.extend_from_slice(b"name");
    blobs.push(b);
    for blob in &blobs {
        let r = push(&mut c, blob).await;
        assert_eq!(r.digest, sha256_digest(blob));
        assert_eq!(&read_all(&mut c, &r.digest).await, blob);
    }
    still_serves(&mut c, 5).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_pushing_one_blob_all_succeed_and_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let tar = tar_of(&[("f", &noise(1_500_000, 6)), ("g", b"g")], 1);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    for blob in [tar, gz] {
        let mut tasks = Vec::new();
        for i in 0..32 {
            let mut c = d.client().await;
            let blob = blob.clone();
            tasks.push(tokio::spawn(async move {
                push_as(&mut c, "", "", &blob, 16_384 + i * 1000).await
            }));
        }
        let mut stored = 0;
        for t in tasks {
            let r = t.await.unwrap().expect("every push succeeds");
            assert_eq!(r.digest, sha256_digest(&blob));
            if !r.already_stored {
                stored += 1;
            } else {
                assert_eq!(r.bytes_added, 0);
            }
        }
        assert_eq!(
            stored, 1,
            "one push stores the blob, the others find it stored"
        );
        let mut c = d.client().await;
        assert_eq!(read_all(&mut c, &sha256_digest(&blob)).await, blob);
    }
    let mut c = d.client().await;
    let s = stats(&mut c).await;
    assert_eq!((s.blobs, s.contents), (2, 2));
    let v = c
        .verify(pb::VerifyRequest { deep: true })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{:?}", v.problems);
    d.stop().await;
}
