//! `strata verify` finds damage and names the blobs it touches; damaged bytes
//! are never served; a healthy store verifies clean, online and offline, with
//! counts that agree with `Stats`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use strata::proto::strata::v1 as pb;
use strata::store::StoreConfig;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Runs the CLI off the async threads (the daemon under test shares them).
async fn strata(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("STRATA_SOCKET")
            .output()
            .expect("running strata")
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn online(socket: &Path, a: &[&str]) -> Vec<String> {
    let mut v = args(&["--socket", socket.to_str().unwrap(), "verify"]);
    v.extend(args(a));
    v
}

fn offline(dir: &Path, a: &[&str]) -> Vec<String> {
    let mut v = args(&["verify", "--data-dir", dir.to_str().unwrap()]);
    v.extend(args(a));
    v
}

fn show(o: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

/// The only pack file of a store.
fn the_pack(dir: &Path) -> PathBuf {
    let packs: Vec<PathBuf> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs[0].clone()
}

/// A pack record: its offset, its length and where its zstd payload starts.
#[derive(Debug, Clone, Copy)]
struct Rec {
    off: usize,
    len: usize,
    payload: usize,
}

/// Walks a pack's records by their headers (magic, version, 3 reserved,
/// entries u32, plain length u32, compressed length u32, crc32c u32; then
/// 36 bytes per entry, then the payload).
fn records(pack: &[u8]) -> Vec<Rec> {
    let u32_at = |i: usize| u32::from_le_bytes(pack[i..i + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut off = 0;
    while off < pack.len() {
        assert_eq!(&pack[off..off + 4], b"STRB", "record at {off}");
        let payload = off + 24 + u32_at(off + 8) * 36;
        let len = payload + u32_at(off + 16) - off;
        out.push(Rec { off, len, payload });
        off += len;
    }
    assert_eq!(off, pack.len());
    out
}

/// Where a record's first chunk lies in `blob`: the record's plain bytes are
/// chunks of file bodies, and blocks may land in the pack in any order.
fn first_chunk_at(pack: &[u8], r: Rec, blob: &[u8]) -> usize {
    let plain_len = u32::from_le_bytes(pack[r.off + 12..r.off + 16].try_into().unwrap());
    let plain =
        zstd::bulk::decompress(&pack[r.payload..r.off + r.len], plain_len as usize).unwrap();
    let probe = &plain[..64];
    let at: Vec<usize> = blob
        .windows(64)
        .enumerate()
        .filter(|(_, w)| *w == probe)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the record's first bytes are in the blob once");
    at[0]
}

/// Reads until the stream ends or fails: the bytes received, and the error.
async fn read_until_error(
    c: &mut Client,
    digest: &str,
    offset: u64,
    length: u64,
) -> (Vec<u8>, Option<tonic::Status>) {
    let req = pb::ReadRequest {
        namespace: String::new(),
        digest: digest.into(),
        offset,
        length,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut s = match c.read(req).await {
        Ok(s) => s.into_inner(),
        Err(e) => return (out, Some(e)),
    };
    loop {
        match s.message().await {
            Ok(Some(m)) => out.extend_from_slice(&m.data),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Problems named in a `--json` report, and the blobs each names.
fn problems(v: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["blobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// A faulty report: exit 1, `ok: false`, every blob in `bad` named, and
/// nothing else (in particular not `good`); returns the kinds of problem.
fn assert_names_only(o: &Output, bad: &[&str], good: &str) -> Vec<String> {
    assert_eq!(o.status.code(), Some(1), "{}", show(o));
    let text = String::from_utf8_lossy(&o.stdout);
    let good_hex = good.strip_prefix("sha256:").unwrap();
    assert!(
        !text.contains(good_hex),
        "the healthy blob is named: {text}"
    );
    let v = json(o);
    assert_eq!(v["ok"], false, "{v}");
    let ps = problems(&v);
    assert!(!ps.is_empty(), "{v}");
    let named: Vec<String> = bad.iter().map(|d| format!("default/{d}")).collect();
    for n in &named {
        assert!(
            ps.iter().any(|(_, blobs)| blobs.contains(n)),
            "no problem names {n}: {v}"
        );
    }
    for (kind, blobs) in &ps {
        assert!(
            blobs.iter().all(|b| named.contains(b)),
            "a {kind} problem names {blobs:?}: {v}"
        );
    }
    ps.into_iter().map(|(k, _)| k).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_is_found_named_and_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A spans several block records (blocks close at 256 KiB here); B has its
    // own and shares no chunk with A (two tars would share their zero trailer);
    // C stores nothing of its own: its one file is A's second, deduplicated.
    let more = noise(600_000, 2);
    let a = tar_of(&[("big", &noise(1_300_000, 1)), ("more", &more)], 1);
    let b = noise(500_000, 3);
    let cc = tar_of(&[("copy/of/more", &more)], 3);
    let (da, db, dc) = (sha256_digest(&a), sha256_digest(&b), sha256_digest(&cc));
    let cfg = StoreConfig {
        block_bytes: 256 << 10,
        ..StoreConfig::default()
    };
    let d = Daemon::start_with(dir, cfg.clone()).await;
    let mut c = d.client().await;
    assert_eq!(push(&mut c, &a).await.digest, da);
    let a_end = pack_bytes(dir) as usize;
    assert_eq!(push(&mut c, &cc).await.digest, dc);
    assert_eq!(pack_bytes(dir) as usize, a_end, "C is all A's chunks");
    assert_eq!(push(&mut c, &b).await.digest, db);
    drop(c);
    d.stop().await;

    // Flip one bit in the middle of the compressed payload of one of A's
    // records: the one holding the later part of A.
    let path = the_pack(dir);
    let mut pack = std::fs::read(&path).unwrap();
    let recs = records(&pack);
    let mut of_a: Vec<(usize, Rec)> = recs
        .iter()
        .filter(|r| r.off < a_end)
        .map(|&r| (first_chunk_at(&pack, r, &a), r))
        .collect();
    assert!(of_a.len() >= 2 && of_a.len() < recs.len(), "{recs:?}");
    of_a.sort_by_key(|(at, _)| *at);
    let (sound_at, _) = of_a[0];
    let (bad_at, r) = *of_a.last().unwrap();
    assert!(
        bad_at > 1_300_000,
        "the damaged record holds chunks of `more`"
    );
    let at = (r.payload + r.off + r.len) / 2;
    pack[at] ^= 0x04;
    std::fs::write(&path, &pack).unwrap();

    // Offline: exit 1, A and C named, B not.
    let text = strata(offline(dir, &[])).await;
    assert_eq!(text.status.code(), Some(1), "{}", show(&text));
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains(&format!("affects default/{da}")), "{out}");
    assert!(out.contains(&format!("affects default/{dc}")), "{out}");
    assert!(!out.contains(db.strip_prefix("sha256:").unwrap()), "{out}");
    assert_eq!(out.lines().last(), Some("FAULTY"), "{out}");
    let kinds = assert_names_only(&strata(offline(dir, &["--json"])).await, &[&da, &dc], &db);
    assert!(
        kinds.contains(&"pack".to_string()) && kinds.contains(&"chunk".to_string()),
        "{kinds:?}"
    );
    let kinds = assert_names_only(
        &strata(offline(dir, &["--json", "--deep"])).await,
        &[&da, &dc],
        &db,
    );
    assert!(kinds.contains(&"digest".to_string()), "{kinds:?}");

    // Through the daemon: DataLoss, and never a wrong byte.
    let d = Daemon::start_with(dir, cfg).await;
    let mut c = d.client().await;
    let (got, err) = read_until_error(&mut c, &da, 0, 0).await;
    let err =
        err.unwrap_or_else(|| panic!("the damaged blob read to the end ({} bytes)", got.len()));
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(got.len() < a.len());
    assert!(
        got == a[..got.len()],
        "bytes before the error differ from the blob"
    );
    // A byte held by the damaged record fails too; one held by a sound record
    // still reads.
    let (got, err) = read_until_error(&mut c, &da, bad_at as u64, 1).await;
    assert_eq!(err.map(|e| e.code()), Some(Code::DataLoss));
    assert!(got.is_empty());
    assert_eq!(
        read_range(&mut c, "", &da, sound_at as u64, 1)
            .await
            .unwrap(),
        &a[sound_at..sound_at + 1]
    );
    assert_eq!(read_all(&mut c, &db).await, b);
    let (got, err) = read_until_error(&mut c, &dc, 0, 0).await;
    assert_eq!(err.map(|e| e.code()), Some(Code::DataLoss));
    assert!(got == cc[..got.len()]);
    // `strata cat` fails the same way, having written only a true prefix.
    let cat = strata(args(&["--socket", d.socket.to_str().unwrap(), "cat", &da])).await;
    assert_eq!(cat.status.code(), Some(1), "{}", show(&cat));
    assert!(cat.stdout.len() < a.len() && cat.stdout == a[..cat.stdout.len()]);
    assert!(
        String::from_utf8_lossy(&cat.stderr).contains("DataLoss"),
        "{}",
        show(&cat)
    );
    // Online verify sees it too.
    assert_names_only(
        &strata(online(&d.socket, &["--json"])).await,
        &[&da, &dc],
        &db,
    );
    drop(c);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_cut_short_is_found_and_names_the_blob_it_held() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = tar_of(&[("a", &noise(300_000, 4))], 1);
    let b = noise(400_000, 5);
    let (da, db) = (sha256_digest(&a), sha256_digest(&b));
    let d = Daemon::start(dir).await;
    let mut c = d.client().await;
    push(&mut c, &a).await;
    let a_end = pack_bytes(dir);
    push(&mut c, &b).await;
    drop(c);
    d.stop().await;
    let path = the_pack(dir);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(a_end + 100)
        .unwrap();
    assert_names_only(&strata(offline(dir, &["--json"])).await, &[&db], &da);
    let d = Daemon::start(dir).await;
    let mut c = d.client().await;
    let (got, err) = read_until_error(&mut c, &db, 0, 0).await;
    assert_eq!(err.map(|e| e.code()), Some(Code::DataLoss));
    assert!(got == b[..got.len()]);
    assert_eq!(read_all(&mut c, &da).await, a);
    drop(c);
    d.stop().await;
}

/// A clean report whose counts agree with `Stats` and the pack directory.
fn assert_clean(o: &Output, s: &pb::StatsResponse, deep: bool, dir: &Path) {
    assert_eq!(o.status.code(), Some(0), "{}", show(o));
    let v = json(o);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(
        (n("blobs"), n("contents"), n("chunks"), n("pack_bytes")),
        (s.blobs, s.contents, s.chunks, s.pack_bytes),
        "verify vs stats: {v}"
    );
    let packs = std::fs::read_dir(dir.join("packs")).unwrap().count() as u64;
    assert_eq!(n("packs"), packs, "{v}");
    assert!(n("records") >= packs, "{v}");
    assert_eq!(n("deep_checked"), if deep { s.contents } else { 0 }, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_store_verifies_clean_online_and_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = Daemon::start(dir).await;
    let mut c = d.client().await;
    let shared = noise(900_000, 6);
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {}\n", i % 977).into_bytes())
        .collect();
    let blobs = [
        tar_of(&[("a", &shared), ("t", &text)], 1),
        tar_of(&[("a-again", &shared), ("small", b"x")], 2),
        noise(1_500_000, 7),
        Vec::new(),
        b"{\"schemaVersion\": 2}".to_vec(),
    ];
    for blob in &blobs {
        push(&mut c, blob).await;
    }
    // Another namespace holds one of them too; a third is removed again.
    push_as(&mut c, "other", "", &blobs[0], 1 << 16)
        .await
        .unwrap();
    push_as(&mut c, "other", "", &blobs[2], 1 << 16)
        .await
        .unwrap();
    c.delete(pb::DeleteRequest {
        namespace: "other".into(),
        digest: sha256_digest(&blobs[2]),
    })
    .await
    .unwrap();
    let s = stats(&mut c).await;
    assert_eq!((s.blobs, s.contents), (6, 5));

    assert_clean(
        &strata(online(&d.socket, &["--json"])).await,
        &s,
        false,
        dir,
    );
    assert_clean(
        &strata(online(&d.socket, &["--json", "--deep"])).await,
        &s,
        true,
        dir,
    );
    let t = strata(online(&d.socket, &["--deep"])).await;
    assert!(t.status.success(), "{}", show(&t));
    let out = String::from_utf8_lossy(&t.stdout);
    assert!(!out.contains("FAULT"), "{out}");
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
    drop(c);
    d.stop().await;

    assert_clean(&strata(offline(dir, &["--json"])).await, &s, false, dir);
    assert_clean(
        &strata(offline(dir, &["--json", "--deep"])).await,
        &s,
        true,
        dir,
    );
    let t = strata(offline(dir, &[])).await;
    assert!(t.status.success(), "{}", show(&t));
    assert_eq!(
        String::from_utf8_lossy(&t.stdout).lines().last(),
        Some("ok"),
        "{}",
        show(&t)
    );
}
