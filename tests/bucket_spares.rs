//! Two daemons pushing one layer at once into one bucket store its chunks
//! twice and never lose one; the collection removes the spare copy
//! (`src/store/spares.rs`), and every daemon, and one starting empty,
//! still reads the layer exact. On `object_store`'s in-memory backend; the
//! same race on Garage is in tests/bucket_garage.rs.

mod common;

use common::*;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use strata::proto::strata::v1 as pb;
use strata::store::remote::RemoteConfig;
use strata::store::StoreConfig;

/// Collects with a short grace period; looks in the bucket only at open
/// and on a miss; packs fill at once and leave the data directory, so
/// reads go to the bucket.
fn config(bucket: &Arc<InMemory>, grace: Duration, compact_after: usize) -> StoreConfig {
    let mut r = RemoteConfig::new("s3://test/spares");
    r.backend = Some(bucket.clone());
    r.cache_bytes = 64 << 20;
    r.gc_grace = grace;
    r.sync_interval = Duration::from_secs(3600);
    r.compact_after = compact_after;
    StoreConfig {
        remote: Some(r),
        max_pack_bytes: 100_000,
        ..StoreConfig::default()
    }
}

async fn objects(bucket: &Arc<InMemory>, under: &str) -> BTreeMap<String, u64> {
    use futures::TryStreamExt;
    let p = object_store::path::Path::from(format!("spares/{under}"));
    let v: Vec<_> = bucket.list(Some(&p)).try_collect().await.unwrap();
    v.into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .collect()
}

/// `layer` read back whole from namespace `ns`.
async fn read_in(c: &mut Client, ns: &str, d: &str) -> Vec<u8> {
    read_range(c, ns, d, 0, 0).await.expect("read")
}

async fn gc(c: &mut Client) -> pb::GcResponse {
    let r = c.gc(pb::GcRequest::default()).await.unwrap().into_inner();
    assert!(r.bucket_collected, "{r:?}");
    r
}

/// Two daemons on a fresh bucket, both past their first look at it, and a
/// layer of text and `noise` incompressible bytes neither has pushed.
struct Two {
    tmp: tempfile::TempDir,
    bucket: Arc<InMemory>,
    grace: Duration,
    /// `--s3-compact-after` of every daemon.
    compact_after: usize,
    layer: Vec<u8>,
    digest: String,
    /// Where the layer's content objects are.
    dir: String,
}

impl Two {
    /// The pair, and daemons A and B.
    async fn start(seed: u64, noise_len: usize, compact_after: usize) -> (Two, Daemon, Daemon) {
        let tmp = tempfile::tempdir().unwrap();
        let bucket = Arc::new(InMemory::new());
        let grace = Duration::from_millis(1500);
        let layer = tar_of(
            &[
                ("t.txt", &text(seed, 300_000)),
                ("n.bin", &noise(noise_len, seed + 1)),
            ],
            1_700_000_000,
        );
        let digest = sha256_digest(&layer);
        let dir = format!("contents/{}/", digest.trim_start_matches("sha256:"));
        let t = Two {
            tmp,
            bucket,
            grace,
            compact_after,
            layer,
            digest,
            dir,
        };
        let a = t.daemon("a").await;
        let b = t.daemon("b").await;
        // Both daemons' first look at the bucket (at start) is over.
        tokio::time::sleep(Duration::from_millis(500)).await;
        (t, a, b)
    }

    /// One more daemon of the bucket, on data directory `name`.
    async fn daemon(&self, name: &str) -> Daemon {
        let c = config(&self.bucket, self.grace, self.compact_after);
        Daemon::start_with(&self.tmp.path().join(name), c).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_layer_pushed_through_two_daemons_at_once_keeps_one_copy_after_collection() {
    let (t, a, b) = Two::start(31, 400_000, 32).await;
    let (grace, layer, d, dir) = (t.grace, t.layer.clone(), t.digest.clone(), t.dir.clone());
    let (mut ca, mut cb) = (a.client().await, b.client().await);

    // At once, neither having seen the other's: both store every chunk.
    // Each in a namespace of its own, so the only record of the blob in
    // one of them names the spare.
    let (ra, rb) = tokio::join!(
        push_as(&mut ca, "a", "", &layer, 64 << 10),
        push_as(&mut cb, "b", "", &layer, 64 << 10)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        (ra.digest.as_str(), rb.digest.as_str()),
        (d.as_str(), d.as_str())
    );
    assert!(
        ra.bytes_added > 400_000 && rb.bytes_added > 400_000,
        "{ra:?} {rb:?}"
    );
    let contents = objects(&t.bucket, &dir).await;
    assert_eq!(contents.len(), 2, "{contents:?}");
    let packs_before: u64 = objects(&t.bucket, "packs").await.values().sum();
    assert_eq!(read_in(&mut ca, "a", &d).await, layer);
    assert_eq!(read_in(&mut cb, "b", &d).await, layer);

    // The newer content object is the spare: marked with the pieces only
    // it names, deleted a grace period later.
    tokio::time::sleep(grace).await;
    let g1 = gc(&mut ca).await;
    assert_eq!(g1.bucket_spare_contents, 1, "{g1:?}");
    assert!(g1.bucket_marked >= 2, "the spare and its piece: {g1:?}");
    tokio::time::sleep(grace).await;
    let g2 = gc(&mut ca).await;
    assert!(g2.bucket_deleted >= 2, "{g2:?}");
    let left = objects(&t.bucket, &dir).await;
    assert_eq!(left.len(), 1, "{left:?}");
    // Names are <writer>-<ms>-<random>: the oldest is kept.
    let time = |n: &String| n.rsplit('/').next().unwrap()[17..30].to_string();
    let kept = left.keys().next().unwrap();
    assert_eq!(time(kept), contents.keys().map(time).min().unwrap());
    let packs_after: u64 = objects(&t.bucket, "packs").await.values().sum();
    eprintln!("pack bytes {packs_before} -> {packs_after}");
    // The second copy of the noise (incompressible) is gone.
    assert!(
        packs_before - packs_after > 400_000,
        "{packs_before} -> {packs_after}"
    );

    // Restarted (their block caches start empty), both verify clean before
    // any read: the chunks the spare's daemon placed in its deleted piece
    // are found through the kept object.
    a.stop().await;
    b.stop().await;
    let a = t.daemon("a").await;
    let b = t.daemon("b").await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut relocated = 0;
    for c in [&mut ca, &mut cb] {
        relocated += verify_clean(c, false).await.relocated;
    }
    assert!(relocated > 0, "no chunk was placed in the spare's piece");
    // Both read it exact: the spare's daemon through the kept object.
    assert_eq!(read_in(&mut ca, "a", &d).await, layer);
    assert_eq!(read_in(&mut cb, "b", &d).await, layer);
    // An empty data dir too, in both namespaces: one's record names the
    // spare, deleted.
    let c = t.daemon("c").await;
    let mut cc = c.client().await;
    for ns in ["a", "b"] {
        assert_eq!(read_in(&mut cc, ns, &d).await, layer);
    }

    // Pushed again through both: each record names the kept object (the
    // spare's daemon follows it now), so no content object is written
    // and the next collections find no spare.
    for (c, ns) in [(&mut ca, "a"), (&mut cb, "b")] {
        let r = push_as(c, ns, "", &layer, 64 << 10).await.unwrap();
        assert!(r.already_stored, "{r:?}");
    }
    assert_eq!(objects(&t.bucket, &dir).await, left);
    tokio::time::sleep(grace).await;
    let g3 = gc(&mut ca).await;
    assert_eq!(g3.bucket_spare_contents, 0, "{g3:?}");
    tokio::time::sleep(grace).await;
    gc(&mut ca).await;
    assert_eq!(objects(&t.bucket, &dir).await, left);
    // A fourth daemon, empty, after all of it.
    let e = t.daemon("e").await;
    let mut ce = e.client().await;
    for client in [&mut ca, &mut cb, &mut cc, &mut ce] {
        for ns in ["a", "b"] {
            assert_eq!(read_in(client, ns, &d).await, layer);
        }
        verify_deep(client).await;
    }
    for daemon in [a, b, c, e] {
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_naming_a_deleted_spare_is_applied_through_the_kept_object() {
    let (t, a, b) = Two::start(41, 300_000, 2).await;
    let (grace, layer, d, dir) = (t.grace, t.layer.clone(), t.digest.clone(), t.dir.clone());
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // A first, then B, which has not looked: B's object is the newer, so
    // the spare; once A deletes its blob, the only record holding the
    // layer (B's, in namespace "b") names the deleted spare.
    push_as(&mut ca, "a", "", &layer, 64 << 10).await.unwrap();
    let rb = push_as(&mut cb, "b", "", &layer, 64 << 10).await.unwrap();
    assert!(rb.bytes_added > 300_000, "{rb:?}");
    assert_eq!(objects(&t.bucket, &dir).await.len(), 2);
    tokio::time::sleep(grace).await;
    assert_eq!(gc(&mut ca).await.bucket_spare_contents, 1);
    tokio::time::sleep(grace).await;
    gc(&mut ca).await;
    let left: Vec<String> = objects(&t.bucket, &dir).await.into_keys().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    ca.delete(pb::DeleteRequest {
        namespace: "a".into(),
        digest: d.clone(),
    })
    .await
    .unwrap();
    // The object A wrote stays: the digest is still held, in "b".
    tokio::time::sleep(grace).await;
    gc(&mut ca).await;
    tokio::time::sleep(grace).await;
    let g = gc(&mut ca).await;
    assert_eq!(
        objects(&t.bucket, &dir)
            .await
            .into_keys()
            .collect::<Vec<_>>(),
        left,
        "{g:?}"
    );
    // B reads through A's object; an empty data dir applies B's record
    // through it (the object the record names is gone).
    assert_eq!(read_in(&mut cb, "b", &d).await, layer);
    let c = t.daemon("c").await;
    let mut cc = c.client().await;
    assert_eq!(read_in(&mut cc, "b", &d).await, layer);
    let gone = read_range(&mut cc, "a", &d, 0, 0).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    for client in [&mut cb, &mut cc] {
        verify_deep(client).await;
    }
    for daemon in [a, b, c] {
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_tar_whose_chunks_only_a_spare_placed_is_pushed_again() {
    let (t, a, b) = Two::start(51, 300_000, 32).await;
    let (grace, layer) = (t.grace, t.layer.clone());
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // A gzip layer: each daemon keeps the tar it decodes to as the base of
    // the gzip's recipe, in its own piece, named only by its own object of
    // the gzip. B's is the newer, so the spare: its piece is marked.
    let gz = python_gzip(&layer, 6);
    let dg = sha256_digest(&gz);
    push_as(&mut ca, "", "", &gz, 64 << 10).await.unwrap();
    assert!(
        push_as(&mut cb, "", "", &gz, 64 << 10)
            .await
            .unwrap()
            .bytes_added
            > 300_000
    );
    tokio::time::sleep(grace).await;
    let g1 = gc(&mut ca).await;
    assert_eq!(g1.bucket_spare_contents, 1, "{g1:?}");
    // Past half a grace period from the mark, no commit may name that
    // piece: B's push of the tar itself (stored already, as the base)
    // stores its chunks anew and names those. The first try may be refused
    // (B learns of the mark only when it commits: "push again"); a retry
    // must not be.
    tokio::time::sleep(grace * 2 / 3).await;
    let r = match push_as(&mut cb, "", "", &layer, 64 << 10).await {
        Err(e) if e.code() == tonic::Code::Unavailable => {
            eprintln!("the tar's first push refused: {}", e.message());
            push_as(&mut cb, "", "", &layer, 64 << 10).await
        }
        r => r,
    }
    .expect("the tar's push, again");
    assert!(r.already_stored, "{r:?}");
    // The chunks it stored anew stay where it put them, across a restart
    // (which trims a pack to what commits kept).
    b.stop().await;
    let b = t.daemon("b").await;
    let mut cb = b.client().await;
    assert_eq!(read_in(&mut cb, "", &sha256_digest(&layer)).await, layer);
    tokio::time::sleep(grace).await;
    gc(&mut ca).await;
    tokio::time::sleep(grace).await;
    gc(&mut ca).await;
    let dl = sha256_digest(&layer);
    let c = t.daemon("c").await;
    let mut cc = c.client().await;
    for client in [&mut ca, &mut cb, &mut cc] {
        assert_eq!(read_in(client, "", &dl).await, layer);
        assert_eq!(read_in(client, "", &dg).await, gz);
        verify_deep(client).await;
    }
    for daemon in [a, b, c] {
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_bucket_keeps_its_spares_until_a_fence_upgrades_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let grace = Duration::from_millis(1500);
    let v2 = format!(
        "{{\"format\": \"strata-bucket-2\", \"chunk_sizes\": \"{}\"}}",
        strata::split::ChunkSizes::default()
    );
    bucket
        .put(&"spares/strata-repository.json".into(), v2.clone().into())
        .await
        .unwrap();
    let layer = tar_of(&[("v.bin", &noise(300_000, 61))], 1);
    let d = sha256_digest(&layer);
    let dir = format!("contents/{}/", d.trim_start_matches("sha256:"));
    // Compaction off: the bucket stays version 2 (a version 2 daemon may
    // share it), so no spare is collected.
    let a = Daemon::start_with(&tmp.path().join("a"), config(&bucket, grace, 0)).await;
    let b = Daemon::start_with(&tmp.path().join("b"), config(&bucket, grace, 0)).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    push(&mut ca, &layer).await;
    assert!(push(&mut cb, &layer).await.bytes_added > 300_000);
    for _ in 0..2 {
        tokio::time::sleep(grace).await;
        assert_eq!(gc(&mut ca).await.bucket_spare_contents, 0);
    }
    assert_eq!(objects(&bucket, &dir).await.len(), 2);
    // A daemon with compaction on upgrades it, fence first; its
    // collections then drop the spare.
    let c = Daemon::start_with(&tmp.path().join("c"), config(&bucket, grace, 32)).await;
    let mut cc = c.client().await;
    let marker = bucket
        .get(&"spares/strata-repository.json".into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&marker).contains("\"strata-bucket-3\""));
    let fences: Vec<String> = objects(&bucket, "gc/marks").await.into_keys().collect();
    assert_eq!(
        fences,
        vec!["spares/gc/marks/0000000000000-strata-bucket-3-fence.json".to_string()]
    );
    assert_eq!(gc(&mut cc).await.bucket_spare_contents, 1);
    tokio::time::sleep(grace).await;
    gc(&mut cc).await;
    assert_eq!(objects(&bucket, &dir).await.len(), 1);
    for client in [&mut ca, &mut cb, &mut cc] {
        assert_eq!(read_all(client, &d).await, layer);
    }
    for daemon in [a, b, c] {
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_layers_spare_daemon_verifies_clean_before_any_read() {
    let (t, a, b) = Two::start(71, 300_000, 32).await;
    let (grace, layer) = (t.grace, t.layer.clone());
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // B's copy is the newer, so the spare; its base tar (never pushed as a
    // blob, so with no content object of its own) is placed only by the
    // gzip's objects.
    let gz = python_gzip(&layer, 6);
    let dg = sha256_digest(&gz);
    push(&mut ca, &gz).await;
    assert!(push(&mut cb, &gz).await.bytes_added > 300_000);
    tokio::time::sleep(grace).await;
    assert_eq!(gc(&mut ca).await.bucket_spare_contents, 1);
    tokio::time::sleep(grace).await;
    assert!(gc(&mut ca).await.bucket_deleted >= 2);
    // Restarted, so its block cache is empty: B's index places the base's
    // chunks in its deleted piece; verify finds them through A's object.
    b.stop().await;
    let b = t.daemon("b").await;
    let mut cb = b.client().await;
    let v = verify_clean(&mut cb, false).await;
    assert!(v.relocated > 0, "{v:?}");
    assert_eq!(read_all(&mut cb, &dg).await, gz);
    verify_deep(&mut cb).await;
    assert_eq!(read_all(&mut ca, &dg).await, gz);
    a.stop().await;
    b.stop().await;
}
