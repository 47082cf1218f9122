//! Reading a replayed (re-encoded) blob in small windows, as containerd does:
//! a thread rebuilds ahead of the reader (readahead.rs) and later windows are
//! copied from what it made. Whatever the timing, every window must be the
//! blob's own bytes.

mod common;
use common::{noise, python_gzip, tar_of};
use strata::digest::Digest;
use strata::store::{Content, IngestOptions, Store, StoreConfig};

fn layer() -> Vec<u8> {
    let text: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| format!("line {i} of a text file\n").into_bytes())
        .take(3_000_000)
        .collect();
    tar_of(
        &[
            ("a", &noise(2_000_000, 5)),
            ("b.txt", &text),
            ("c", &noise(1_500_000, 6)),
        ],
        3,
    )
}

fn stored_gzip(dir: &std::path::Path) -> (Store, Digest, Content, Vec<u8>) {
    let store = Store::open(dir, StoreConfig::default()).unwrap();
    let gz = python_gzip(&layer(), 6);
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "default".into(),
            ..Default::default()
        })
        .unwrap();
    ing.write(&gz).unwrap();
    let out = ing.commit().unwrap();
    assert!(out.kept.starts_with("zlib-6"), "kept as {}", out.kept);
    let digest = out.digest.unwrap();
    let content = store.content(&digest).unwrap().unwrap();
    (store, digest, content, gz)
}

/// One window: from what was made ahead when it is there (as the daemon
/// answers containerd), else through a rebuild. True when it came inline.
fn window(store: &Store, d: &Digest, c: &Content, off: u64, len: u64, got: &mut Vec<u8>) -> bool {
    let mut buf = Vec::new();
    let inline = store
        .read_range_cached(d, c, off, len, &mut |b: &[u8]| {
            buf.extend_from_slice(b);
            Ok(true)
        })
        .unwrap();
    if !inline {
        assert!(buf.is_empty(), "a refused inline read wrote bytes");
        store
            .read_range(d, c, off, len, &mut |b: &[u8]| {
                buf.extend_from_slice(b);
                Ok(true)
            })
            .unwrap();
    }
    got.extend_from_slice(&buf);
    inline
}

#[test]
fn windows_of_a_replayed_blob_are_exact_while_it_is_rebuilt_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, d, c, gz) = stored_gzip(tmp.path());
    // After one window through a rebuild, the next ones get made ahead and
    // come inline (waited for here; below, timing decides).
    let win = 32 * 1024u64;
    let mut got = Vec::new();
    assert!(
        !window(&store, &d, &c, 0, win, &mut got),
        "nothing was made yet"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut off = win;
    while off < 20 * win {
        let mut buf = Vec::new();
        let inline = store
            .read_range_cached(&d, &c, off, win, &mut |b: &[u8]| {
                buf.extend_from_slice(b);
                Ok(true)
            })
            .unwrap();
        if inline {
            assert_eq!(&buf[..], &gz[off as usize..(off + win) as usize]);
            off += win;
        } else {
            assert!(buf.is_empty());
            assert!(
                std::time::Instant::now() < deadline,
                "the readahead never caught up"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    for (win, pause) in [(32 * 1024u64, 1u64), (32 * 1024 + 7, 0), (300_000, 2)] {
        let mut got = Vec::new();
        let mut off = 0;
        while off < c.size {
            window(&store, &d, &c, off, win, &mut got);
            off += win;
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
        assert!(
            got == gz,
            "window {win}: the bytes read differ from the blob"
        );
    }
    settle(&store);
}

#[test]
fn readers_that_interleave_or_jump_back_get_exact_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, d, c, gz) = stored_gzip(tmp.path());
    let win = 32 * 1024u64;
    let half = (c.size / 2) / win * win;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut oa, mut ob) = (0, half);
    while oa < half || ob < c.size {
        if oa < half {
            window(&store, &d, &c, oa, win.min(half - oa), &mut a);
            oa += win;
        }
        if ob < c.size {
            window(&store, &d, &c, ob, win, &mut b);
            ob += win;
        }
    }
    a.extend_from_slice(&b);
    assert!(a == gz, "interleaved readers got other bytes");
    // Back to an earlier offset after reading ahead of it.
    let mut again = Vec::new();
    window(&store, &d, &c, 100_000, 50_000, &mut again);
    assert_eq!(&again[..], &gz[100_000..150_000]);
    // Threads reading the whole blob at once.
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (store, d, c, gz) = (&store, &d, &c, &gz);
            s.spawn(move || {
                let mut got = Vec::new();
                let mut off = 0;
                while off < c.size {
                    window(store, d, c, off, win + t, &mut got);
                    off += win + t;
                }
                assert!(&got == gz, "thread {t} got other bytes");
            });
        }
    });
    settle(&store);
}

/// Fillers still rebuilding ahead would use the index while the test
/// process exits (RocksDB aborts then): stop them first.
fn settle(store: &Store) {
    assert!(store.settle(std::time::Duration::from_secs(30)));
}
