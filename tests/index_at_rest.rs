//! The index at rest: after a burst of pushes, once they pause, the data
//! directory holds flushed tables rather than a write-ahead log as large as
//! the burst, and what was pushed reads back exact after a restart.

mod common;
use common::{eventually, noise, push, read_all, sha256_digest, store_read, tar_of, Daemon};
use std::path::Path;
use std::time::Duration;
use strata::store::{IngestOptions, Store, StoreConfig};

/// Bytes of RocksDB's write-ahead logs (`*.log`) in a store's index.
fn wal_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("index"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Small files with distinct headers: many chunk and page entries per push.
fn layer(seed: u64) -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("usr/lib/f{seed}-{i}"),
                noise(2000 + i * 37, seed * 1000 + i as u64),
            )
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    tar_of(&refs, seed)
}

#[test]
fn flushing_lets_the_log_go_and_keeps_every_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let layers: Vec<Vec<u8>> = (0..6).map(layer).collect();
    let mut digests = Vec::new();
    {
        let store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
        for l in &layers {
            let mut ing = store
                .begin_ingest(IngestOptions {
                    namespace: "default".into(),
                    ..Default::default()
                })
                .unwrap();
            ing.write(l).unwrap();
            digests.push(ing.commit().unwrap().digest.expect("a digest"));
        }
        let before = wal_bytes(tmp.path());
        assert!(store.unflushed_index_entries().unwrap() > 0);
        assert!(before > 100_000, "the pushes' log holds {before} bytes");
        assert!(store.flush_index().unwrap() > 0);
        assert_eq!(store.unflushed_index_entries().unwrap(), 0);
        // Nothing left to flush: a second call flushes nothing.
        assert_eq!(store.flush_index().unwrap(), 0);
        // RocksDB deletes the obsolete logs in the background.
        assert!(
            eventually(Duration::from_secs(20), || wal_bytes(tmp.path()) < 4096),
            "log still {} bytes after the flush (was {before})",
            wal_bytes(tmp.path())
        );
    }
    let store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    for (l, d) in layers.iter().zip(&digests) {
        assert!(store_read(&store, d) == *l, "{d} reads back other bytes");
    }
    let report = store.verify(false).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_flushes_once_pushes_pause_and_at_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let layers: Vec<Vec<u8>> = (10..16).map(layer).collect();
    for l in &layers {
        let r = push(&mut c, l).await;
        assert_eq!(r.digest, sha256_digest(l));
    }
    let burst = wal_bytes(tmp.path());
    assert!(burst > 100_000, "the pushes' log holds {burst} bytes");
    // Quiet for 5 s, then flushed and the log deleted.
    let dir = tmp.path().to_path_buf();
    let flushed = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(40), || wal_bytes(&dir) < 4096)
    })
    .await
    .unwrap();
    assert!(
        flushed,
        "log still {} bytes 40 s after the pushes",
        wal_bytes(tmp.path())
    );
    for l in &layers {
        assert!(read_all(&mut c, &sha256_digest(l)).await == *l);
    }
    // More writes, then a clean stop: no log left to replay either.
    let extra = layer(99);
    push(&mut c, &extra).await;
    drop(c);
    d.stop().await;
    assert!(
        wal_bytes(tmp.path()) < 4096,
        "a clean stop left {} bytes of log",
        wal_bytes(tmp.path())
    );
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    assert!(read_all(&mut c, &sha256_digest(&extra)).await == extra);
    drop(c);
    d.stop().await;
}
