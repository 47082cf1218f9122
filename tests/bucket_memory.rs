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
    // X deleted: its content object and its piece (X shares no chunk with
    // Y) go too.
    ca.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: sha256_digest(&x),
    })
    .await
    .unwrap();
    tokio::time::sleep(grace).await;
    // First run marks the two old strays and X's two objects, deletes nothing.
    let g1 = ca.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    assert!(g1.bucket_collected, "{g1:?}");
    assert_eq!((g1.bucket_marked, g1.bucket_deleted), (4, 0), "{g1:?}");
    tokio::time::sleep(grace).await;
    // A grace period later: deleted.
    let g2 = ca.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    assert_eq!((g2.bucket_marked, g2.bucket_deleted), (0, 4), "{g2:?}");
    let pieces = names(&bucket, "packs").await;
    assert_eq!(pieces.len(), 2, "Y's and the young stray: {pieces:?}");
    let dx = sha256_digest(&x);
    let x_contents = format!("contents/{}/", dx.trim_start_matches("sha256:"));
    assert!(
        !names(&bucket, "contents")
            .await
            .iter()
            .any(|n| n.contains(&x_contents)),
        "X's content object is collected"
    );
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

/// Daemons that collect with a short grace period and look in the bucket
/// only at open and on a miss (so the test decides what each has seen).
fn collecting(bucket: &Arc<InMemory>, grace: std::time::Duration) -> StoreConfig {
    let mut c = config(bucket);
    let r = c.remote.as_mut().unwrap();
    r.gc_grace = grace;
    r.sync_interval = std::time::Duration::from_secs(3600);
    c
}

async fn delete(c: &mut Client, digest: &str) {
    c.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: digest.to_string(),
    })
    .await
    .unwrap();
}

async fn gc(c: &mut Client) -> pb::GcResponse {
    let r = c.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    assert!(r.bucket_collected, "{r:?}");
    r
}

/// The pieces and content objects in the bucket, by name, with sizes.
async fn objects(bucket: &Arc<InMemory>) -> std::collections::BTreeMap<String, u64> {
    use futures::TryStreamExt;
    let mut out = std::collections::BTreeMap::new();
    for under in ["packs", "contents"] {
        let p = object_store::path::Path::from(format!("some/prefix/{under}"));
        let v: Vec<_> = bucket.list(Some(&p)).try_collect().await.unwrap();
        for m in v {
            out.insert(m.location.to_string(), m.size);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_reclaims_deleted_blobs_and_every_daemon_still_reads_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let grace = std::time::Duration::from_millis(1500);
    let cfg = || collecting(&bucket, grace);
    // B's packs fill at once and leave its data dir: its reads go to the bucket.
    let b_cfg = || {
        let mut c = cfg();
        c.max_pack_bytes = 100_000;
        c
    };
    let shared = text(11, 300_000);
    let y = tar_of(&[("s.txt", &shared), ("y.bin", &noise(200_000, 12))], 1);
    let x = tar_of(&[("s.txt", &shared), ("x.bin", &noise(200_000, 13))], 2);
    let (dy, dx) = (sha256_digest(&y), sha256_digest(&x));
    let a = Daemon::start_with(&tmp.path().join("a"), cfg()).await;
    let b = Daemon::start_with(&tmp.path().join("b"), b_cfg()).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // Both daemons' first look at the bucket (at start) is over.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // B stores X; A, not having looked, stores Y with its own copy of the
    // shared file, then X (its own piece holds X's file only).
    push(&mut cb, &x).await;
    push(&mut ca, &y).await;
    push(&mut ca, &x).await;
    // B learns Y: its index keeps its own copy of the shared file, in the
    // piece only X's objects name (Y's name A's). B pushes Y too.
    assert_eq!(read_all(&mut cb, &dy).await, y);
    assert!(push(&mut cb, &y).await.already_stored);
    let before = objects(&bucket).await;
    // B is down while X is deleted and collected.
    b.stop().await;
    delete(&mut ca, &dx).await;
    tokio::time::sleep(grace).await;
    let g1 = gc(&mut ca).await;
    // X's two content objects and two pieces (B's, A's).
    assert_eq!((g1.bucket_marked, g1.bucket_deleted), (4, 0), "{g1:?}");
    tokio::time::sleep(grace).await;
    let g2 = gc(&mut ca).await;
    assert_eq!((g2.bucket_marked, g2.bucket_deleted), (0, 4), "{g2:?}");
    let after = objects(&bucket).await;
    let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let freed: u64 = gone.iter().map(|k| before[*k]).sum();
    eprintln!(
        "deleted {} objects, {freed} bytes: {gone:?}; {} objects left",
        gone.len(),
        after.len()
    );
    assert_eq!(gone.len(), 4, "{gone:?}");
    assert!(after.keys().all(|k| before.contains_key(k)));
    let x_dir = format!("contents/{}/", dx.trim_start_matches("sha256:"));
    assert!(gone.iter().filter(|k| k.contains(&x_dir)).count() == 2);
    assert!(gone.iter().filter(|k| k.contains("/packs/")).count() == 2);
    // X's noise went with its pieces.
    assert!(freed > 2 * 200_000, "{freed}");
    assert_eq!(read_all(&mut ca, &dy).await, y);
    // B restarts: its reads of Y find the shared file through Y's content
    // object...
    let b = Daemon::start_with(&tmp.path().join("b"), b_cfg()).await;
    let mut cb = b.client().await;
    let head = read_range(&mut cb, "", &dy, 0, 100_000).await.unwrap();
    assert_eq!(head, y[..100_000]);
    // ...a push following Y's recipe stores the rest of that file anew...
    let y2 = tar_of(&[("s.txt", &shared), ("y2.bin", &noise(50_000, 14))], 1);
    let r = push(&mut cb, &y2).await;
    eprintln!("y2: {r:?}");
    assert_eq!(read_all(&mut cb, &dy).await, y);
    assert_eq!(read_all(&mut cb, &sha256_digest(&y2)).await, y2);
    // ...whose content object names no deleted piece (B's index had the
    // shared file in one).
    let named = named_objects(&bucket, &sha256_digest(&y2)).await;
    let present = objects(&bucket).await;
    assert!(!named.is_empty());
    for o in &named {
        assert!(
            present.contains_key(&format!("some/prefix/{o}")),
            "y2's content object names {o}, not in the bucket"
        );
    }
    // ...and its push of X stores what only the deleted piece held: X's
    // own 200 KB of noise (without the collection, B's index would reuse it).
    let r = push(&mut cb, &x).await;
    assert!(r.bytes_added > 200_000, "B stores X's file again: {r:?}");
    assert_eq!(read_all(&mut cb, &dx).await, x);
    assert_eq!(read_all(&mut ca, &dx).await, x);
    // An empty data dir reads both exact; every index verifies.
    let c = Daemon::start_with(&tmp.path().join("c"), cfg()).await;
    let mut cc = c.client().await;
    assert_eq!(read_all(&mut cc, &dy).await, y);
    assert_eq!(read_all(&mut cc, &dx).await, x);
    assert_eq!(read_all(&mut cc, &sha256_digest(&y2)).await, y2);
    for client in [&mut ca, &mut cb, &mut cc] {
        verify_deep(client).await;
    }
    for d in [a, b, c] {
        d.stop().await;
    }
}

/// The objects the content objects of `digest` name.
async fn named_objects(bucket: &Arc<InMemory>, digest: &str) -> Vec<String> {
    use strata::store::remote::format::ContentObject;
    let dir = format!("contents/{}", digest.trim_start_matches("sha256:"));
    let mut out = Vec::new();
    for n in names(bucket, &dir).await {
        let b = bucket
            .get(&n.as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.extend(ContentObject::decode(&b).unwrap().objects);
    }
    out
}

/// A push whose messages the test sends when it wants.
struct OpenPush {
    tx: futures::channel::mpsc::Sender<pb::PushRequest>,
    done: tokio::task::JoinHandle<Result<pb::PushResponse, tonic::Status>>,
}

impl OpenPush {
    /// Starts pushing `data`, sending its first `first` bytes now.
    async fn start(c: &Client, data: &[u8], first: usize) -> OpenPush {
        use futures::SinkExt;
        let (mut tx, rx) = futures::channel::mpsc::channel(64);
        let mut c = c.clone();
        let done = tokio::spawn(async move { c.push(rx).await.map(|r| r.into_inner()) });
        tx.send(start_msg("", "")).await.unwrap();
        for p in data[..first].chunks(64 * 1024) {
            tx.send(pb::PushRequest {
                msg: Some(pb::push_request::Msg::Data(p.to_vec().into())),
            })
            .await
            .unwrap();
        }
        // The ingest has looked its chunks up (and pinned them).
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        OpenPush { tx, done }
    }

    async fn finish(mut self, rest: &[u8]) -> Result<pb::PushResponse, tonic::Status> {
        use futures::SinkExt;
        for p in rest.chunks(64 * 1024) {
            self.tx
                .send(pb::PushRequest {
                    msg: Some(pb::push_request::Msg::Data(p.to_vec().into())),
                })
                .await
                .unwrap();
        }
        drop(self.tx);
        self.done.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_open_across_a_mark_keeps_what_it_reuses_and_one_past_the_carry_out_stores_anew() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    // Z's push spans its start, a collection run and its end (about 1.5 s,
    // within half the grace period even 10 times slower); so does W's.
    let grace = std::time::Duration::from_secs(30);
    let cfg = || collecting(&bucket, grace);
    let (s1, s2) = (noise(300_000, 21), noise(300_000, 22));
    let x1 = tar_of(&[("s1", &s1), ("x1", &noise(100_000, 23))], 1);
    let x2 = tar_of(&[("s2", &s2), ("x2", &noise(100_000, 24))], 2);
    // Z and W reuse X1's and X2's first files; their own come last.
    let z = tar_of(&[("s1", &s1), ("z", &noise(100_000, 25))], 3);
    let w = tar_of(&[("s2", &s2), ("w", &noise(100_000, 26))], 4);
    let a = Daemon::start_with(&tmp.path().join("a"), cfg()).await;
    let mut ca = a.client().await;
    push(&mut ca, &x1).await;
    push(&mut ca, &x2).await;
    // B learns both at open, then looks at the bucket no more.
    let b = Daemon::start_with(&tmp.path().join("b"), cfg()).await;
    let mut cb = b.client().await;
    delete(&mut ca, &sha256_digest(&x1)).await;
    delete(&mut ca, &sha256_digest(&x2)).await;
    tokio::time::sleep(grace).await;
    let before = objects(&bucket).await;
    // Z begins on A: its first file is found in X1's piece.
    let open = OpenPush::start(&ca, &z, 310_000).await;
    let g1 = gc(&mut ca).await;
    // The mark's time is before this.
    let marked_at = std::time::Instant::now();
    assert_eq!(g1.bucket_marked, 4, "X1's and X2's objects: {g1:?}");
    // ...and commits after the mark, long before it is carried out.
    let rz = open.finish(&z[310_000..]).await.expect("Z commits");
    assert!(rz.reused_chunks > 0, "{rz:?}");
    // W begins on B, which has not seen the mark, just before the mark is
    // carried out, and commits after: X2's piece is gone by then.
    tokio::time::sleep(
        (grace + std::time::Duration::from_millis(300)).saturating_sub(marked_at.elapsed()),
    )
    .await;
    let open = OpenPush::start(&cb, &w, 310_000).await;
    let g2 = gc(&mut ca).await;
    // X1's piece is Z's now: kept.
    assert_eq!(g2.bucket_deleted, 3, "{g2:?}");
    let e = open.finish(&w[310_000..]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    // Pushed again, W stores X2's file anew: its 300 KB of noise, which B's
    // index had in the deleted piece, besides W's own 100 KB.
    let rw = push(&mut cb, &w).await;
    assert!(rw.bytes_added > 380_000, "{rw:?}");
    let after = objects(&bucket).await;
    let lost: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    eprintln!("deleted {lost:?}");
    assert_eq!(lost.iter().filter(|k| k.contains("/packs/")).count(), 1);
    // Every daemon, and an empty data dir, reads Z and W exact.
    let c = Daemon::start_with(&tmp.path().join("c"), cfg()).await;
    let mut cc = c.client().await;
    for client in [&mut ca, &mut cb, &mut cc] {
        assert_eq!(read_all(client, &sha256_digest(&z)).await, z);
        assert_eq!(read_all(client, &sha256_digest(&w)).await, w);
    }
    verify_deep(&mut cc).await;
    for d in [a, b, c] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_blob_keeps_its_new_objects_though_no_record_names_them() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let grace = std::time::Duration::from_millis(1500);
    // Full packs leave the data dir: reads of the converted recipe go to
    // the bucket.
    let cfg = || {
        let mut c = collecting(&bucket, grace);
        c.max_pack_bytes = 100_000;
        c
    };
    let tar = tar_of(
        &[
            ("a.txt", &text(31, 400_000)),
            ("b.bin", &noise(150_000, 32)),
        ],
        1,
    );
    let gz = python_gzip(&tar, 6);
    let dg = sha256_digest(&gz);
    let dir = tmp.path().join("a");
    let a = Daemon::start_with(&dir, cfg()).await;
    let mut ca = a.client().await;
    // Kept as received: the Put names that content object; the background
    // conversion's object is named by no record.
    let mut msgs = vec![pb::PushRequest {
        msg: Some(pb::push_request::Msg::Start(pb::PushStart {
            defer_conversion: true,
            ..Default::default()
        })),
    }];
    for p in gz.chunks(64 * 1024) {
        msgs.push(pb::PushRequest {
            msg: Some(pb::push_request::Msg::Data(p.to_vec().into())),
        });
    }
    ca.push(tokio_stream::iter(msgs)).await.unwrap();
    // The converter waits for a quiet store, and other tests load the CPU.
    let began = std::time::Instant::now();
    let mut converted = false;
    for _ in 0..1200 {
        if stats(&mut ca).await.pending_conversions == 0 {
            converted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("converted after {:?}", began.elapsed());
    assert!(converted, "the conversion did not run within two minutes");
    let dir_of = format!("contents/{}/", dg.trim_start_matches("sha256:"));
    let objects_of = |o: &std::collections::BTreeMap<String, u64>| {
        o.keys().filter(|k| k.contains(&dir_of)).count()
    };
    assert_eq!(
        objects_of(&objects(&bucket).await),
        2,
        "received and converted"
    );
    tokio::time::sleep(grace).await;
    gc(&mut ca).await;
    tokio::time::sleep(grace).await;
    let g = gc(&mut ca).await;
    assert_eq!(g.bucket_deleted, 0, "{g:?}");
    assert_eq!(objects_of(&objects(&bucket).await), 2);
    // After a restart (its full packs leave the data dir), A reads the
    // converted recipe from the bucket; an empty data dir, the one received.
    a.stop().await;
    let a = Daemon::start_with(&dir, cfg()).await;
    let mut ca = a.client().await;
    assert_eq!(read_all(&mut ca, &dg).await, gz);
    verify_deep(&mut ca).await;
    let c = Daemon::start_with(&tmp.path().join("c"), cfg()).await;
    let mut cc = c.client().await;
    assert_eq!(read_all(&mut cc, &dg).await, gz);
    a.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_after_a_delete_from_a_clock_ahead_is_newer_than_it() {
    use strata::store::remote::format::{segment_name, Record, Segment};
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let grace = std::time::Duration::from_millis(1500);
    let cfg = || collecting(&bucket, grace);
    let q = tar_of(&[("q.txt", &text(71, 200_000))], 1);
    let dq = sha256_digest(&q);
    let a = Daemon::start_with(&tmp.path().join("a"), cfg()).await;
    let mut ca = a.client().await;
    push(&mut ca, &q).await;
    // A daemon whose clock is ten minutes ahead deletes Q.
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 600_000;
    let seg = Segment {
        time_ms: ahead,
        writer: [0xee; 8],
        records: vec![Record::Delete {
            ns: "default".into(),
            digest: strata::digest::Digest::parse(&dq).unwrap(),
        }],
        times: Vec::new(),
    };
    let name = format!("some/prefix/{}", segment_name(ahead, &[0xee; 8], 1));
    bucket
        .put(&name.as_str().into(), seg.encode().into())
        .await
        .unwrap();
    // B applies it at open, then pushes Q again: its Put must come after
    // the Delete it applied, whatever B's clock says.
    let b = Daemon::start_with(&tmp.path().join("b"), cfg()).await;
    let mut cb = b.client().await;
    let st = cb
        .stat(pb::StatRequest {
            namespace: String::new(),
            digest: dq.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);
    push(&mut cb, &q).await;
    let newest = names(&bucket, "segments").await.into_iter().max().unwrap();
    assert!(!newest.contains("eeeeeeeeeeeeeeee"), "B's Put is newest");
    // The collection keeps Q's objects (B's stands in for A's: the one
    // spare marked, carried out a grace period later); a fresh data dir
    // holds Q.
    tokio::time::sleep(grace).await;
    let g = gc(&mut ca).await;
    assert_eq!((g.bucket_marked, g.bucket_spare_contents), (1, 1), "{g:?}");
    tokio::time::sleep(grace).await;
    let g = gc(&mut ca).await;
    assert_eq!((g.bucket_deleted, g.bucket_marked), (1, 0), "{g:?}");
    assert_eq!(read_all(&mut ca, &dq).await, q);
    let c = Daemon::start_with(&tmp.path().join("c"), cfg()).await;
    let mut cc = c.client().await;
    assert_eq!(read_all(&mut cc, &dq).await, q);
    for d in [a, b, c] {
        d.stop().await;
    }
}
