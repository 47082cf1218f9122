//! `--store s3://` on a real three-node Garage 2.5.0 cluster (replication
//! factor 3, consistent mode): several daemons sharing the bucket, an empty
//! data directory rebuilt from it, nodes failing under pushes and reads, and
//! a daemon SIGKILLed mid-upload. Needs Garage (`bash .ci/garage`).

mod common;

use common::garage::Garage;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata::proto::strata::v1 as pb;
use strata::store::remote::RemoteConfig;
use strata::store::StoreConfig;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A blob another daemon just pushed: the miss looks in the bucket at once,
/// but a listing may lag the write a little under load.
async fn read_soon(c: &mut Client, digest: &str) -> Vec<u8> {
    let t = Instant::now();
    loop {
        match read_range(c, "", digest, 0, 0).await {
            Ok(b) => return b,
            Err(e) if e.code() == tonic::Code::NotFound && t.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("reading {digest}: {e:?}"),
        }
    }
}

fn remote(g: &Garage) -> RemoteConfig {
    let mut r = RemoteConfig::new(&format!("s3://{}/farm", g.bucket()));
    r.endpoint = Some(g.endpoint());
    r.region = g.region().to_string();
    r.access_key_id = Some(g.access_key().to_string());
    r.secret_access_key = Some(g.secret_key().to_string());
    r.timeout = Duration::from_secs(5);
    r.retries = 2;
    r.sync_interval = Duration::from_secs(2);
    r
}

/// Daemons that collect with a short grace period and look for each
/// other's segments every second.
fn collecting(g: &Garage, grace: Duration) -> StoreConfig {
    let mut c = config(g);
    let r = c.remote.as_mut().unwrap();
    r.gc_grace = grace;
    r.sync_interval = Duration::from_secs(1);
    c
}

/// How many content objects of `digest` the bucket holds (under the
/// daemons' prefix, `farm/`).
async fn content_objects(g: &Garage, digest: &str) -> usize {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(g.endpoint())
        .with_allow_http(true)
        .with_bucket_name(g.bucket())
        .with_region(g.region())
        .with_access_key_id(g.access_key())
        .with_secret_access_key(g.secret_key())
        .build()
        .unwrap();
    let dir = format!("farm/contents/{}", digest.trim_start_matches("sha256:"));
    let v: Vec<_> = s3
        .list(Some(&dir.as_str().into()))
        .try_collect()
        .await
        .unwrap();
    v.len()
}

fn config(g: &Garage) -> StoreConfig {
    StoreConfig {
        remote: Some(remote(g)),
        ..StoreConfig::default()
    }
}

/// Layers like a corpus's: text files shared between layers, some noise,
/// and a gzip variant.
fn layers() -> Vec<Vec<u8>> {
    let files: Vec<Vec<u8>> = (0..8)
        .map(|i| text(100 + i, 150_000 + 40_000 * i as usize))
        .collect();
    let bin = noise(400_000, 7);
    let mut out = Vec::new();
    for k in 0..3 {
        let mut v: Vec<(String, &[u8])> = files[k..k + 5]
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("usr/share/doc/f{}.txt", k + i), &f[..]))
            .collect();
        v.push((format!("usr/bin/tool{k}"), &bin[..]));
        let refs: Vec<(&str, &[u8])> = v.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        out.push(tar_of(&refs, 1_700_000_000 + k as u64));
    }
    out.push(python_gzip(&out[1], 6));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_share_the_bucket_and_an_empty_data_dir_rebuilds_from_it() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = layers();

    let a = Daemon::start_with(&tmp.path().join("a"), config(&g)).await;
    let mut ca = a.client().await;
    let mut digests = Vec::new();
    for b in &blobs {
        digests.push(push(&mut ca, b).await.digest);
    }
    for (b, d) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut ca, d).await, b, "A reads {d}");
    }
    let sa = stats(&mut ca).await;
    assert!(sa.store.starts_with("s3://"), "{sa:?}");
    assert!(
        sa.bucket_pack_bytes as f64 <= 1.02 * sa.pack_bytes as f64,
        "bucket packs {} > 1.02 x local packs {}",
        sa.bucket_pack_bytes,
        sa.pack_bytes
    );
    assert!(sa.bucket_pack_bytes >= sa.pack_bytes / 2, "{sa:?}");

    // B: its own data dir; reads A's blobs (a miss looks in the bucket).
    let b = Daemon::start_with(&tmp.path().join("b"), config(&g)).await;
    let mut cb = b.client().await;
    for (blob, d) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut cb, d).await, blob, "B reads {d}");
    }
    let before = stats(&mut cb).await;
    for blob in &blobs {
        let r = push(&mut cb, blob).await;
        assert_eq!(r.new_chunks, 0, "B stores no chunk again: {r:?}");
    }
    let after = stats(&mut cb).await;
    assert_eq!(after.bucket_pack_bytes, before.bucket_pack_bytes);

    // B pushes a new layer; A lists B's segment within its sync interval.
    let fresh = tar_of(&[("new.txt", &text(999, 200_000))], 1_700_000_999);
    let d_new = push(&mut cb, &fresh).await.digest;
    let t = Instant::now();
    loop {
        let l = ca
            .list(pb::ListRequest::default())
            .await
            .unwrap()
            .into_inner();
        if l.blobs.iter().any(|x| x.digest == d_new) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "A never listed B's blob"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(read_all(&mut ca, &d_new).await, fresh);

    // C: an empty data dir against the bucket serves every blob, and a deep
    // verify (every block read back from the bucket) is clean.
    let c = Daemon::start_with(&tmp.path().join("c"), config(&g)).await;
    let mut cc = c.client().await;
    for (blob, d) in blobs.iter().zip(&digests) {
        assert_eq!(&read_all(&mut cc, d).await, blob, "C reads {d}");
    }
    assert_eq!(read_all(&mut cc, &d_new).await, fresh);
    let out = Command::new(BIN)
        .args(["--socket"])
        .arg(&c.socket)
        .args(["verify", "--deep", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["ok"], true, "{v:#}");
    for d in [a, b, c] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_changes_nothing_two_down_fail_pushes_with_unavailable() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start_with(&tmp.path().join("a"), config(&g)).await;
    let mut ca = a.client().await;
    let mut held = Vec::new();
    let first = tar_of(&[("one.txt", &text(1, 300_000))], 1);
    held.push((push(&mut ca, &first).await.digest, first));

    // One node of three down: pushes and reads go on.
    g.kill_node(3);
    for i in 0..3u64 {
        let l = tar_of(
            &[("f.txt", &text(10 + i, 250_000)), ("n", &noise(50_000, i))],
            i,
        );
        held.push((push(&mut ca, &l).await.digest, l));
    }
    for (d, b) in &held {
        assert_eq!(&read_all(&mut ca, d).await, b);
    }

    // Two down: no quorum. A push fails with UNAVAILABLE naming the
    // endpoint, within the configured timeouts; nothing half-stored.
    g.kill_node(2);
    let l = tar_of(&[("lost.txt", &text(77, 250_000))], 77);
    let t = Instant::now();
    let e = push_as(&mut ca, "", "", &l, 1 << 16).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&g.endpoint()), "{}", e.message());
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    let st = ca
        .stat(pb::StatRequest {
            namespace: String::new(),
            digest: sha256_digest(&l),
        })
        .await
        .unwrap_err();
    // Not held here, and the bucket cannot say: UNAVAILABLE, not a false NOT_FOUND.
    assert!(
        matches!(st.code(), tonic::Code::NotFound | tonic::Code::Unavailable),
        "{st:?}"
    );
    // Reads of what this daemon holds keep working.
    for (d, b) in &held {
        assert_eq!(&read_all(&mut ca, d).await, b);
    }

    // The nodes return: pushes succeed again, and every acknowledged blob
    // is in the bucket (an empty data dir serves it).
    g.start_node(2);
    g.start_node(3);
    let t = Instant::now();
    let d = loop {
        match push_as(&mut ca, "", "", &l, 1 << 16).await {
            Ok(r) => break r.digest,
            Err(e) if t.elapsed() < Duration::from_secs(60) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("pushes never came back: {e:?}"),
        }
    };
    held.push((d, l));
    let b = Daemon::start_with(&tmp.path().join("b"), config(&g)).await;
    let mut cb = b.client().await;
    for (d, blob) in &held {
        assert_eq!(&read_all(&mut cb, d).await, blob, "empty dir reads {d}");
    }
    a.stop().await;
    b.stop().await;
}

struct Child9 {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
}

impl Child9 {
    fn spawn(g: &Garage, dir: &Path, round: usize) -> Child9 {
        let sock = dir.join("s.sock");
        let log = dir.join(format!("serve-{round}.log"));
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--socket")
            .arg(&sock)
            .args([
                "--metrics-addr",
                "off",
                "--s3-timeout",
                "5s",
                "--s3-gc-grace",
                "4s",
            ])
            .arg("--store")
            .arg(format!("s3://{}/crash", g.bucket()))
            .arg("--s3-endpoint")
            .arg(g.endpoint())
            .args(["--s3-region", g.region()])
            .env("AWS_ACCESS_KEY_ID", g.access_key())
            .env("AWS_SECRET_ACCESS_KEY", g.secret_key())
            .env_remove("STRATA_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_serve(&mut child, &sock, &log);
        Child9 { child, sock, log }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_loses_no_acknowledged_blob() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..10usize {
        let d = Child9::spawn(&g, tmp.path(), round);
        let mut c = strata::client::connect(&d.sock).await.expect("connect");
        // Everything acknowledged before is there, exact.
        for (dg, b) in &acked {
            let got = read_all(&mut c, dg).await;
            assert!(
                got == *b,
                "round {round}: {dg} differs after a SIGKILL; log:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
        }
        // Pushes run; the daemon is killed while some are in flight.
        let mut tasks = Vec::new();
        for k in 0..4u64 {
            let seed = round as u64 * 10 + k;
            let body = tar_of(
                &[
                    ("shared.txt", &text(5, 200_000)),
                    (
                        "own.txt",
                        &text(1000 + seed, 300_000 + 100_000 * k as usize),
                    ),
                    ("bin", &noise(200_000, seed)),
                ],
                seed,
            );
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let r = push_as(&mut c, "", "", &body, 1 << 16).await;
                (r, body)
            }));
        }
        tokio::time::sleep(Duration::from_millis(20 + 45 * round as u64)).await;
        d.kill();
        for t in tasks {
            if let (Ok(r), body) = t.await.unwrap() {
                assert_eq!(r.digest, sha256_digest(&body));
                acked.push((r.digest, body));
            }
        }
    }
    assert!(!acked.is_empty(), "no push was ever acknowledged");
    eprintln!("{} pushes acknowledged over 10 rounds of 4", acked.len());
    // Last: the survivor's data dir, then an empty one, serve every blob.
    let d = Child9::spawn(&g, tmp.path(), 99);
    let mut c = strata::client::connect(&d.sock).await.expect("connect");
    for (dg, b) in &acked {
        assert_eq!(&read_all(&mut c, dg).await, b);
    }
    verify_deep(&mut c).await;
    // What the killed uploads left is collected: a grace period after a
    // run marks it, the next deletes it, and then nothing is left to mark.
    // (The first run also compacts the small pieces: the next marks the
    // pieces it copied, one more deletes them.)
    let grace = Duration::from_secs(4);
    tokio::time::sleep(grace).await;
    let (mut marked, mut deleted, mut runs) = (0, 0, 0);
    loop {
        let r = c.gc(pb::GcRequest::default()).await.unwrap().into_inner();
        assert!(r.bucket_collected, "{r:?}");
        (marked, deleted) = (marked + r.bucket_marked, deleted + r.bucket_deleted);
        runs += 1;
        eprintln!("collection {runs}: {r:?}");
        if r.bucket_marked == 0 && marked == deleted && runs > 1 {
            break;
        }
        assert!(
            runs < 4,
            "unreferenced objects left after {runs} runs: {marked} marked, {deleted} deleted"
        );
        tokio::time::sleep(grace).await;
    }
    eprintln!("collected the leftovers: {marked} marked, {deleted} deleted");
    d.kill();
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let e = Child9::spawn(&g, &fresh, 0);
    let mut c = strata::client::connect(&e.sock).await.expect("connect");
    for (dg, b) in &acked {
        assert_eq!(&read_all(&mut c, dg).await, b, "empty data dir reads {dg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_on_one_daemon_racing_pushes_on_another_loses_no_blob() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(3);
    // Compaction too, at every few small objects: its copies, moves and
    // merged segments race B's pushes and reads as well.
    let cfg = || {
        let mut c = collecting(&g, grace);
        c.remote.as_mut().unwrap().compact_after = 4;
        c
    };
    let a = Daemon::start_with(&tmp.path().join("a"), cfg()).await;
    let b = Daemon::start_with(&tmp.path().join("b"), cfg()).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // A collects over and over while the pushes below run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (mut c, stop) = (a.client().await, stop.clone());
        tokio::spawn(async move {
            let (mut runs, mut deleted, mut compacted) = (0u32, 0u64, (0u64, 0u64));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c.gc(pb::GcRequest::default()).await.unwrap().into_inner();
                runs += r.bucket_collected as u32;
                deleted += r.bucket_deleted;
                compacted.0 += r.bucket_pieces_compacted;
                compacted.1 += r.bucket_segments_compacted;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            (runs, deleted, compacted)
        })
    };
    let shared = text(42, 300_000);
    let own = |i: u64| text(1000 + i, 250_000);
    let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
    let mut twins: Vec<String> = Vec::new();
    let mut doubled = 0;
    let mut previous: Option<(String, Vec<u8>)> = None;
    for i in 0..24u64 {
        // Now and then one layer through A and B at once: neither has seen
        // the other's, so both store it; the collection removes the spare.
        if i % 4 == 3 {
            let t = tar_of(
                &[
                    ("twin.txt", &text(7000 + i, 200_000)),
                    ("twin.bin", &noise(150_000, i)),
                ],
                i,
            );
            let (mut a2, mut b2) = (ca.clone(), cb.clone());
            let (ra, rb) = tokio::join!(
                push_as(&mut a2, "", "", &t, 64 * 1024),
                push_as(&mut b2, "", "", &t, 64 * 1024)
            );
            let (ra, rb) = (ra.expect("A's push"), rb.expect("B's push"));
            assert_eq!(ra.digest, rb.digest);
            doubled += (content_objects(&g, &ra.digest).await == 2) as usize;
            twins.push(ra.digest.clone());
            kept.push((ra.digest, t));
        }
        // A: a layer with the shared file and one of its own.
        let l = tar_of(&[("shared.txt", &shared), ("own.txt", &own(i))], i);
        let dl = push(&mut ca, &l).await.digest;
        // B reads it (its index learns the chunks)...
        assert_eq!(read_soon(&mut cb, &dl).await, l);
        // ...A deletes the one before: its own file's chunks are garbage
        // now, in pieces the collector marks and deletes...
        if let Some((d, _)) = previous.take() {
            ca.delete(pb::DeleteRequest {
                namespace: String::new(),
                digest: d,
            })
            .await
            .unwrap();
        }
        // ...while B pushes layers reusing those very files.
        if i >= 2 {
            let m = tar_of(
                &[
                    ("again.txt", &own(i - 2)),
                    ("mine.txt", &text(5000 + i, 60_000)),
                ],
                i,
            );
            // A commit that would name a piece marked too long ago is
            // refused (nothing stored); pushed again, it stores the chunks.
            // Bounded: a refusal that repeats would be a push that can
            // never succeed (its chunks in a gone piece, found nowhere else).
            let mut tries = 0;
            let r = loop {
                match push_as(&mut cb, "", "", &m, 64 * 1024).await {
                    Err(e) if e.code() == tonic::Code::Unavailable && tries < 5 => {
                        tries += 1;
                        eprintln!("B's push {i} refused, pushed again: {}", e.message());
                    }
                    Err(e) if e.code() == tonic::Code::Unavailable => panic!(
                        "B's push of layer {i} was refused {} times in a row, the last: {e:?}",
                        tries + 1
                    ),
                    r => break r.expect("push"),
                }
            };
            kept.push((r.digest, m));
        }
        previous = Some((dl, l));
        tokio::time::sleep(Duration::from_millis(150 * (i % 5))).await;
    }
    kept.push(previous.unwrap());
    // The last marks carried out: two grace periods of collection.
    tokio::time::sleep(grace * 2).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, deleted, compacted) = collector.await.unwrap();
    assert!(runs > 5, "the collector ran {runs} times");
    eprintln!(
        "{runs} collections deleted {deleted} objects during the pushes; compacted \
         {} pieces and {} segments",
        compacted.0, compacted.1
    );
    assert!(compacted.0 > 0 && compacted.1 > 0, "{compacted:?}");
    // Deleted layers' objects are collected, during the pushes and after.
    let mut deleted = deleted;
    for _ in 0..2 {
        let r = ca.gc(pb::GcRequest::default()).await.unwrap().into_inner();
        assert!(r.bucket_collected, "{r:?}");
        deleted += r.bucket_deleted;
        tokio::time::sleep(grace).await;
    }
    let r = ca.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    deleted += r.bucket_deleted;
    // The deleted layers' objects are collectable: at least their content
    // objects went (their pieces too, unless B's layers reuse them).
    assert!(deleted >= 10, "only {deleted} objects deleted");
    let s = stats(&mut ca).await;
    eprintln!(
        "last collection {r:?}; bucket {} objects, {} bytes",
        s.bucket_objects, s.bucket_bytes
    );
    // One content object is left of each layer pushed through both at once
    // (if both stored it: B may have seen A's segment first).
    assert!(doubled > 0, "no layer pushed at once was stored twice");
    for d in &twins {
        assert_eq!(
            content_objects(&g, d).await,
            1,
            "{d}: the spare is collected"
        );
    }
    // Every blob not deleted, exact, from B and from an empty data dir.
    let c = Daemon::start_with(&tmp.path().join("c"), cfg()).await;
    let mut cc = c.client().await;
    for (d, blob) in &kept {
        assert_eq!(&read_all(&mut ca, d).await, blob, "A reads {d}");
        assert_eq!(&read_all(&mut cb, d).await, blob, "B reads {d}");
        assert_eq!(
            &read_all(&mut cc, d).await,
            blob,
            "an empty data dir reads {d}"
        );
    }
    for client in [&mut ca, &mut cb, &mut cc] {
        verify_deep(client).await;
    }
    assert!(r.bucket_collected);
    for d in [a, b, c] {
        d.stop().await;
    }
}
