//! A full disk: the push in progress fails with RESOURCE_EXHAUSTED and leaves
//! nothing half-visible, reads go on, and pushes are accepted again once space
//! returns. Runs the daemon on a 64 MiB tmpfs, so it needs root (it says so
//! and passes without root; CI runs as root). RocksDB preallocates about
//! 36 MiB of it at open (its log and manifest), the rest is for packs.

mod common;
use common::*;

use bytes::Bytes;
use cpb::content_client::ContentClient;
use cpb::WriteAction;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use strata::proto::containerd::services::content::v1 as cpb;
use strata::proto::strata::v1 as pb;
use strata::store::StoreConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Free space strata keeps in this test.
const RESERVE: u64 = 4 << 20;
/// Each blob pushed to fill the disk: several block records.
const BLOB: usize = 1 << 20;
/// Blobs deleted to make room: the first two packs' worth.
const DELETED: usize = 6;

/// A tmpfs mounted for the test, lazily unmounted when dropped (a panic too).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (root without CAP_SYS_ADMIN?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    strata::store::packset::free_bytes(dir).expect("statvfs")
}

/// Writes `n` bytes to `path` (0: until the disk is full); returns the error
/// that stopped it, if any.
fn fill(path: &Path, n: u64) -> Option<std::io::Error> {
    let mut f = std::fs::File::create(path).expect("creating the filler");
    let buf = vec![0xa5u8; 64 << 10];
    let mut left = if n == 0 { u64::MAX } else { n };
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        if let Err(e) = f.write_all(&buf[..k]) {
            return Some(e);
        }
        left -= k as u64;
    }
    None
}

/// The counters a push changes.
fn counters(s: &pb::StatsResponse) -> [u64; 9] {
    [
        s.blobs,
        s.logical_bytes,
        s.unique_plain_bytes,
        s.chunks,
        s.contents,
        s.pack_bytes,
        s.chunk_plain_bytes,
        s.literal_bytes,
        s.unreferenced_chunks,
    ]
}

async fn stat(c: &mut Client, digest: &str) -> Result<pb::BlobInfo, tonic::Status> {
    c.stat(pb::StatRequest {
        namespace: String::new(),
        digest: digest.into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn listed(c: &mut Client) -> Vec<String> {
    let r = c
        .list(pb::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    r.blobs.into_iter().map(|b| b.digest).collect()
}

async fn verify_deep(c: &mut Client) {
    let v = c
        .verify(pb::VerifyRequest { deep: true })
        .await
        .expect("verify")
        .into_inner();
    assert!(v.ok, "verify found problems: {:?}", v.problems);
}

/// A push that must fail because the disk is full, storing nothing.
async fn assert_push_refused(c: &mut Client, data: &[u8], data_dir: &Path, when: &str) {
    let before = stats(c).await;
    let err = push_as(c, "", "", data, 1 << 20)
        .await
        .expect_err(&format!("{when}: a push must fail"));
    assert_eq!(err.code(), Code::ResourceExhausted, "{when}: {err:?}");
    let msg = err.message();
    eprintln!("{when}: push refused: {msg}");
    assert!(
        msg.contains("is full") && msg.contains("nothing was stored"),
        "{when}: {msg}"
    );
    assert!(
        msg.contains(&data_dir.display().to_string()),
        "{when}: the message names the data directory: {msg}"
    );
    let digest = sha256_digest(data);
    let e = stat(c, &digest)
        .await
        .expect_err("the refused blob is absent");
    assert_eq!(e.code(), Code::NotFound, "{when}: {e:?}");
    assert!(!listed(c).await.contains(&digest), "{when}: listed");
    let e = read_range(c, "", &digest, 0, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{when}: {e:?}");
    let after = stats(c).await;
    assert_eq!(
        counters(&before),
        counters(&after),
        "{when}: the refused push changed the counters"
    );
    assert_eq!(
        pack_bytes(data_dir),
        after.pack_bytes,
        "{when}: the refused push's bytes were cut off its pack"
    );
}

async fn content_client(d: &Daemon) -> ContentClient<tonic::transport::Channel> {
    let ch = strata::client::connect_channel(&d.socket)
        .await
        .expect("connect");
    ContentClient::new(ch)
        .max_decoding_message_size(32 << 20)
        .max_encoding_message_size(32 << 20)
}

/// One containerd Write stream: a request, then its one reply.
struct Writer {
    tx: Option<mpsc::Sender<cpb::WriteContentRequest>>,
    rx: tonic::Streaming<cpb::WriteContentResponse>,
}

impl Writer {
    async fn open(c: &mut ContentClient<tonic::transport::Channel>) -> Writer {
        let (tx, rx) = mpsc::channel(4);
        let rx = c
            .write(ReceiverStream::new(rx))
            .await
            .expect("open Write")
            .into_inner();
        Writer { tx: Some(tx), rx }
    }

    async fn call(
        &mut self,
        req: cpb::WriteContentRequest,
    ) -> Result<cpb::WriteContentResponse, tonic::Status> {
        self.tx
            .as_ref()
            .expect("open")
            .send(req)
            .await
            .expect("request stream open");
        match tokio::time::timeout(Duration::from_secs(30), self.rx.message())
            .await
            .expect("a reply within 30 s")
        {
            Ok(Some(r)) => Ok(r),
            Ok(None) => panic!("the Write stream ended without a reply"),
            Err(e) => {
                self.tx = None;
                Err(e)
            }
        }
    }
}

fn wreq(action: WriteAction, r: &str, offset: i64, data: &[u8]) -> cpb::WriteContentRequest {
    cpb::WriteContentRequest {
        action: action as i32,
        r#ref: r.into(),
        offset,
        data: Bytes::copy_from_slice(data),
        ..Default::default()
    }
}

/// A Write stream on `r`, retrying while the ref is still locked by a stream
/// that is ending; returns it with the STAT reply.
async fn open_ref(
    c: &mut ContentClient<tonic::transport::Channel>,
    r: &str,
) -> (Writer, cpb::WriteContentResponse) {
    for _ in 0..500 {
        let mut w = Writer::open(c).await;
        match w.call(wreq(WriteAction::Stat, r, 0, &[])).await {
            Ok(rep) => return (w, rep),
            Err(e) if e.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("STAT {r}: {e:?}"),
        }
    }
    panic!("ref {r} stayed locked");
}

/// A containerd Write of `data` on ref `r` that the full disk refuses: the
/// upload stays, at offset 0, and the content is not there.
async fn assert_write_refused(
    cc: &mut ContentClient<tonic::transport::Channel>,
    r: &str,
    data: &[u8],
    when: &str,
) {
    let (mut w, first) = open_ref(cc, r).await;
    assert_eq!(first.offset, 0, "{when}");
    let e = w
        .call(wreq(WriteAction::Write, r, 0, data))
        .await
        .expect_err("a Write on a full disk fails");
    eprintln!("{when}: containerd Write refused: {}", e.message());
    assert_eq!(e.code(), Code::ResourceExhausted, "{when}: {e:?}");
    assert!(
        e.message().contains("is full") && e.message().contains("stays at offset 0"),
        "{when}: {}",
        e.message()
    );
    drop(w);
    let st = cc
        .status(cpb::StatusRequest { r#ref: r.into() })
        .await
        .expect("the upload stays")
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.offset, 0, "{when}: none of the refused Write was kept");
    let e = cc
        .info(cpb::InfoRequest {
            digest: sha256_digest(data),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{when}");
}

/// A 64 MiB tmpfs with an empty data directory in it, or None (and why,
/// printed) when not root.
fn small_disk(test: &str) -> Option<(tempfile::TempDir, Tmpfs, PathBuf)> {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: mounting a tmpfs needs root (CI runs this as root)");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let tmpfs = Tmpfs::mount(&mnt, "64m");
    let dir = mnt.join("data");
    std::fs::create_dir(&dir).unwrap();
    Some((tmp, tmpfs, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_fails_the_push_and_pushes_resume_once_space_returns() {
    let Some((_tmp, tmpfs, dir)) = small_disk("full_disk_fails_the_push") else {
        return;
    };
    let filler = tmpfs.dir.join("filler");
    // Small packs (three blobs each): deleting the first blobs empties whole
    // packs, which garbage collection removes without copying anything.
    let cfg = StoreConfig {
        min_free_bytes: RESERVE,
        block_bytes: 256 << 10,
        max_pack_bytes: 3 << 20,
        // The idle densify would move bytes between the figures these
        // steps compare (tests/densify.rs covers it).
        dense_level: 0,
        ..StoreConfig::default()
    };
    let d = Daemon::start_with(&dir, cfg.clone()).await;
    let mut c = d.client().await;

    // 1. Push incompressible blobs until the disk (its reserve) is full.
    let mut stored: Vec<(String, u64)> = Vec::new(); // digest, noise seed
    let refused = loop {
        let seed = stored.len() as u64 + 1;
        assert!(seed < 100, "64 MiB never filled up");
        let data = noise(BLOB, seed);
        let before = stats(&mut c).await;
        match push_as(&mut c, "", "", &data, 1 << 20).await {
            Ok(r) => {
                assert_eq!(r.digest, sha256_digest(&data));
                stored.push((r.digest, seed));
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                let msg = e.message();
                assert!(msg.contains("nothing was stored"), "{msg}");
                assert!(msg.contains(&dir.display().to_string()), "{msg}");
                assert_eq!(
                    counters(&before),
                    counters(&stats(&mut c).await),
                    "the failed push changed the counters"
                );
                break data;
            }
        }
    };
    eprintln!(
        "{} blobs of {BLOB} bytes stored before the reserve was reached; {} bytes free",
        stored.len(),
        free_bytes(&dir)
    );
    assert!(stored.len() > DELETED, "only {} blobs fit", stored.len());
    // The refused blob is nowhere, its bytes are off the pack, and it is
    // refused the same way when pushed again.
    assert_push_refused(&mut c, &refused, &dir, "reserve reached").await;
    for (digest, seed) in &stored {
        assert_eq!(
            read_all(&mut c, digest).await,
            noise(BLOB, *seed),
            "{digest}"
        );
    }

    // 2. The disk truly full (ENOSPC), by a file outside the data directory:
    // pushes and a containerd Write are refused (its upload stays resumable
    // at offset 0), reads go on.
    let e = fill(&filler, 0).expect("the filler fills the disk");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert!(free_bytes(&dir) < 64 << 10, "free: {}", free_bytes(&dir));
    assert_push_refused(&mut c, &refused, &dir, "disk full").await;
    assert_push_refused(&mut c, b"a small blob", &dir, "disk full, small blob").await;
    // A compressed layer: its members are spooled while their rebuild is proven.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_of(&[("f", &noise(2 << 20, 77))], 1))
        .unwrap();
    let gz = gz.finish().unwrap();
    assert_push_refused(&mut c, &gz, &dir, "disk full, gzip layer").await;
    // Reads, stat, list and verify go on.
    for (digest, seed) in &stored {
        assert_eq!(
            read_all(&mut c, digest).await,
            noise(BLOB, *seed),
            "{digest}"
        );
        assert_eq!(stat(&mut c, digest).await.unwrap().size, BLOB as u64);
    }
    assert_eq!(listed(&mut c).await.len(), stored.len());
    verify_deep(&mut c).await;
    let mut cc = content_client(&d).await;
    let cdata = noise(BLOB, 1000);
    let cdigest = sha256_digest(&cdata);
    assert_write_refused(&mut cc, "full-disk-ref", &cdata, "disk full").await;

    // 3. Space below the reserve but the disk not full: pushes and containerd
    // Writes are still refused.
    std::fs::remove_file(&filler).unwrap();
    let free = free_bytes(&dir);
    if free > RESERVE - (1 << 20) {
        assert!(fill(&filler, free - (RESERVE - (1 << 20))).is_none());
    }
    assert!(free_bytes(&dir) < RESERVE, "free: {}", free_bytes(&dir));
    assert_push_refused(&mut c, b"another small blob", &dir, "below the reserve").await;
    assert_write_refused(&mut cc, "full-disk-ref", &cdata, "below the reserve").await;

    // 4. Deletes and garbage collection work at the reserve, and free space.
    let before_gc = stats(&mut c).await;
    let deleted: Vec<(String, u64)> = stored.drain(..DELETED).collect();
    for (digest, _) in &deleted {
        c.delete(pb::DeleteRequest {
            namespace: String::new(),
            digest: digest.clone(),
        })
        .await
        .expect("delete at the reserve");
    }
    let gc = c
        .gc(pb::GcRequest::default())
        .await
        .expect("gc")
        .into_inner();
    assert!(gc.packs_removed >= 2, "{gc:?}");
    assert!(
        gc.pack_bytes_after + (DELETED * BLOB) as u64 <= gc.pack_bytes_before,
        "{gc:?}"
    );
    assert_eq!(stats(&mut c).await.blobs, before_gc.blobs - DELETED as u64);
    assert!(
        free_bytes(&dir) > RESERVE + (4 << 20),
        "free: {}",
        free_bytes(&dir)
    );

    // 5. Pushes are accepted again, through both APIs.
    let seed = 500;
    let data = noise(BLOB, seed);
    let r = push_as(&mut c, "", "", &data, 1 << 20)
        .await
        .expect("a push once space returned");
    assert_eq!(read_all(&mut c, &r.digest).await, data);
    stored.push((r.digest, seed));
    let (mut w, first) = open_ref(&mut cc, "full-disk-ref").await;
    assert_eq!(first.offset, 0, "the upload resumes where it stood");
    let rep = w
        .call(wreq(WriteAction::Write, "full-disk-ref", 0, &cdata))
        .await
        .expect("a Write once space returned");
    assert_eq!(rep.offset, cdata.len() as i64);
    let mut commit = wreq(
        WriteAction::Commit,
        "full-disk-ref",
        cdata.len() as i64,
        &[],
    );
    commit.total = cdata.len() as i64;
    commit.expected = cdigest.clone();
    let rep = w.call(commit).await.expect("commit");
    assert_eq!(rep.digest, cdigest);
    drop(w);
    assert_eq!(read_all(&mut c, &cdigest).await, cdata);
    std::fs::remove_file(&filler).unwrap();
    verify_deep(&mut c).await;
    let final_stats = stats(&mut c).await;
    assert_eq!(final_stats.blobs, stored.len() as u64 + 1);
    drop(cc);
    drop(c);
    d.stop().await;

    // 6. A restart on the same directory finds everything acknowledged.
    let d = Daemon::start_with(&dir, cfg).await;
    let mut c = d.client().await;
    for (digest, seed) in &stored {
        assert_eq!(
            read_all(&mut c, digest).await,
            noise(BLOB, *seed),
            "{digest}"
        );
    }
    assert_eq!(read_all(&mut c, &cdigest).await, cdata);
    for (digest, _) in &deleted {
        assert_eq!(
            stat(&mut c, digest).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    assert_eq!(
        stat(&mut c, &sha256_digest(&refused))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(counters(&stats(&mut c).await), counters(&final_stats));
    verify_deep(&mut c).await;
    drop(c);
    d.stop().await;
}

/// Without a reserve the pack append itself meets ENOSPC: the same clean
/// failure, from the error the kernel gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enospc_on_a_pack_append_fails_the_push_cleanly() {
    let Some((_tmp, _tmpfs, dir)) = small_disk("enospc_on_a_pack_append") else {
        return;
    };
    let cfg = StoreConfig {
        min_free_bytes: 0,
        block_bytes: 256 << 10,
        max_pack_bytes: 3 << 20,
        // The idle densify would move bytes between the figures these
        // steps compare (tests/densify.rs covers it).
        dense_level: 0,
        ..StoreConfig::default()
    };
    let d = Daemon::start_with(&dir, cfg.clone()).await;
    let mut c = d.client().await;
    let mut stored: Vec<(String, u64)> = Vec::new();
    let refused = loop {
        let seed = stored.len() as u64 + 1;
        assert!(seed < 100, "64 MiB never filled up");
        let data = noise(BLOB, seed);
        let before = stats(&mut c).await;
        match push_as(&mut c, "", "", &data, 1 << 20).await {
            Ok(r) => stored.push((r.digest, seed)),
            Err(e) => {
                eprintln!("ENOSPC: push refused: {}", e.message());
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("No space left"), "{}", e.message());
                assert!(
                    e.message().contains("nothing was stored"),
                    "{}",
                    e.message()
                );
                assert_eq!(counters(&before), counters(&stats(&mut c).await));
                break data;
            }
        }
    };
    let digest = sha256_digest(&refused);
    assert_eq!(
        stat(&mut c, &digest).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(pack_bytes(&dir), stats(&mut c).await.pack_bytes);
    for (digest, seed) in &stored {
        assert_eq!(
            read_all(&mut c, digest).await,
            noise(BLOB, *seed),
            "{digest}"
        );
    }
    // Room made by deleting and collecting: the same blob goes in.
    for (digest, _) in stored.drain(..DELETED) {
        c.delete(pb::DeleteRequest {
            namespace: String::new(),
            digest,
        })
        .await
        .expect("delete on a full disk");
    }
    c.gc(pb::GcRequest::default())
        .await
        .expect("gc on a full disk");
    let r = push_as(&mut c, "", "", &refused, 1 << 20)
        .await
        .expect("a push once space returned");
    assert_eq!(read_all(&mut c, &r.digest).await, refused);
    verify_deep(&mut c).await;
    drop(c);
    d.stop().await;
}
