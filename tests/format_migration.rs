//! A data directory written by an older strata opens in this one: the
//! fixture is a real `strata-1` store (made by the release of e431ace: two
//! tars sharing a file, a GNU gzip of the first, the second tar removed so
//! one chunk had a count of zero), migrated to `strata-2` on open.

use sha2::{Digest as _, Sha256};
use std::path::Path;
use strata::digest::Digest;
use strata::store::gc::GcOptions;
use strata::store::{Store, StoreConfig};

const TAR_A: &str = "sha256:a1630b46e2d1a735fd1967b59630c0791d24028063cc56bfcaa7eabfb94bcc71";
const TAR_A_GZ: &str = "sha256:bd042302cc7f02cac6fcfcecec34bbd04e25da31e63cfe112c2912690a425b42";
const TAR_B: &str = "sha256:eab233fd2070cf887a418b82153489d53d2d62b2745929271e0c577dcd07890f";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn read_back(store: &Store, digest: &str) -> String {
    let d = Digest::parse(digest).unwrap();
    let c = store.content(&d).unwrap().expect("stored");
    let mut h = Sha256::new();
    store
        .read_range(&d, &c, 0, 0, &mut |b: &[u8]| {
            h.update(b);
            Ok(true)
        })
        .unwrap();
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn format_of(dir: &Path) -> String {
    // Read the raw index, as an operator's tool would, after the store closed.
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, dir.join("index")).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, dir.join("index"), &cfs, false).unwrap();
    let meta = db.cf_handle("meta").unwrap();
    String::from_utf8(db.get_cf(meta, b"format").unwrap().unwrap()).unwrap()
}

#[test]
fn a_strata_1_store_migrates_and_keeps_every_blob_and_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/strata-1"),
        &dir,
    );
    assert_eq!(format_of(&dir), "strata-1");
    {
        let store = Store::open(&dir, StoreConfig::default()).unwrap();
        let s = store.stats().unwrap();
        assert_eq!(s.counters.chunks, 11);
        assert_eq!(s.counters.unreferenced_chunks, 1);
        let report = store.verify(true).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.chunks, 11);
        for d in [TAR_A, TAR_A_GZ] {
            assert_eq!(read_back(&store, d), d);
        }
        assert!(store
            .content(&Digest::parse(TAR_B).unwrap())
            .unwrap()
            .is_none());
        // The counts came along: collection frees exactly the one chunk only
        // the removed tar used, and keeps every other.
        let r = store.gc(GcOptions::default()).unwrap();
        assert_eq!(r.chunks_freed, 1);
        let report = store.verify(true).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.chunks, 10);
        // Removing the plain tar keeps its gzip exact (it shares the content).
        store
            .delete("default", &Digest::parse(TAR_A).unwrap())
            .unwrap();
        assert_eq!(read_back(&store, TAR_A_GZ), TAR_A_GZ);
    }
    assert_eq!(format_of(&dir), "strata-2");
    // A second open finds the new format and migrates nothing.
    let store = Store::open(&dir, StoreConfig::default()).unwrap();
    assert_eq!(read_back(&store, TAR_A_GZ), TAR_A_GZ);
    let report = store.verify(true).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
