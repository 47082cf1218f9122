//! The whole push path (codec stage, splitter, chunk store, index commit)
//! and the read path: each input is pushed in pieces into one store; the
//! commit names the blob by its sha256, and reads give back the blob exactly,
//! whole and in ranges (and a valid compressed blob's plain form).
//!
//! Input: 5 bytes wrap/damage (see strata_fuzz::read_wrap), 4 bytes piece
//! seed, 1 byte flags, 4 bytes read range, then the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use strata::split::ChunkSizes;
use strata::store::{IngestOptions, Store, StoreConfig};
use strata::Digest;
use strata_fuzz::{damage, expected_plain, pieces, read_wrap, sha256, wrap, Control, Wrap};

const MAX_INPUT: usize = 256 << 10;

/// One store for the whole run, in a fresh directory removed when the
/// process exits (see strata_fuzz::run_dir).
fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = strata_fuzz::run_dir("strata-fuzz-store-");
        let cfg = StoreConfig {
            // Small chunks and blocks: many chunks and several blocks per push.
            chunk_sizes: ChunkSizes { min: 256, avg: 1024, max: 4096 },
            block_bytes: 64 << 10,
            max_pack_bytes: 64 << 20,
            cache_bytes: 8 << 20,
            ..StoreConfig::default()
        };
        Store::open(&dir, cfg).expect("opening the store")
    })
}

fn read_all(
    store: &Store,
    digest: &Digest,
    content: &strata::store::Content,
    plain: bool,
    offset: u64,
    length: u64,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut out = |b: &[u8]| {
        got.extend_from_slice(b);
        Ok(true)
    };
    let r = if plain {
        store.read_plain(digest, content, offset, length, &mut out)
    } else {
        store.read_range(digest, content, offset, length, &mut out)
    };
    r.unwrap_or_else(|e| panic!("reading {digest} [{offset}, +{length}) (plain: {plain}) failed: {e}"));
    got
}

fn push(store: &Store, blob: &[u8], seed: u32) -> strata::store::PushOutcome {
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "default".into(),
            ..Default::default()
        })
        .expect("begin_ingest");
    for p in pieces(blob, seed) {
        ing.write(p).expect("writing a piece");
    }
    ing.commit().expect("commit")
}

fuzz_target!(|input: &[u8]| {
    if input.len() > MAX_INPUT {
        return;
    }
    let mut c = Control::new(input);
    let (w, d) = read_wrap(&mut c);
    let seed = c.u32();
    let flags = c.u8();
    let r1 = c.u16() as u64;
    let r2 = c.u16() as u64;
    let payload = c.rest();
    let blob = damage(d, wrap(w, payload));
    let len = blob.len() as u64;
    let store = store();

    let outcome = push(store, &blob, seed);
    let digest = Digest(sha256(&blob));
    assert_eq!(outcome.digest, Some(digest), "commit named the blob by another digest");
    assert_eq!(outcome.size, len);
    if flags & 1 != 0 {
        // The same bytes again, cut differently: already stored.
        let again = push(store, &blob, seed.rotate_left(7) ^ 1);
        assert_eq!(again.digest, Some(digest));
        assert!(again.already_stored, "a second push of the same bytes stored them again");
    }

    let content = store
        .content(&digest)
        .expect("reading the content record")
        .expect("a committed blob has a content record");
    if strata_fuzz::debug() {
        eprintln!(
            "push_stream: {w:?} {d:?}, {len} bytes -> kept {:?}, layout {}, new {} reused {}, plain_size {:?}",
            outcome.kept,
            content.layout_name(),
            outcome.new_chunks,
            outcome.reused_chunks,
            content.wrap.as_ref().map(|w| w.plain_size)
        );
    }
    assert_eq!(content.size, len);

    let got = read_all(store, &digest, &content, false, 0, 0);
    assert!(got == blob, "read_range gives other bytes ({} vs {})", got.len(), blob.len());

    if len > 0 {
        let a = r1 % len;
        let n = r2 % (len - a) + 1;
        let got = read_all(store, &digest, &content, false, a, n);
        assert!(got == blob[a as usize..(a + n) as usize], "read_range [{a}, +{n}) differs");
        // On from where that stopped (a paused rebuild is reused), then back.
        let b = (a + n).min(len - 1);
        let got = read_all(store, &digest, &content, false, b, 0);
        assert!(got == blob[b as usize..], "read_range [{b}, end) differs");
        let got = read_all(store, &digest, &content, false, a / 2, n);
        let e = (a / 2 + n).min(len);
        assert!(got == blob[(a / 2) as usize..e as usize], "read_range [{}, +{n}) differs", a / 2);
    }

    match &content.wrap {
        None => {
            let got = read_all(store, &digest, &content, true, 0, 0);
            assert!(got == blob, "read_plain of an uncompressed blob differs from it");
        }
        Some(wr) => {
            if let Some(size) = wr.plain_size {
                let got = read_all(store, &digest, &content, true, 0, 0);
                assert_eq!(got.len() as u64, size, "read_plain length differs from plain_size");
                assert!(wr.diff_id == Some(sha256(&got)), "read_plain does not hash to diff_id");
                if w != Wrap::Raw {
                    if let Some(want) = expected_plain(d, payload) {
                        assert!(got == want, "a valid {w:?} blob reads back as other plain bytes");
                    }
                }
            } else if w != Wrap::Raw {
                assert!(!d.keeps_valid(), "a valid {w:?} ({d:?}) blob has no plain form");
            }
        }
    }
});
