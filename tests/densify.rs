//! Dense packs: what pushes wrote is rewritten smaller once they pause (and
//! by `strata gc`), every blob stays exact, ingest never appends to a dense
//! pack, and a daemon killed in the middle of it loses nothing.

mod common;
use common::serve_child::ServeChild;
use common::{eventually, noise, sha256_digest, store_read, tar_of, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use strata::store::gc::GcOptions;
use strata::store::{IngestOptions, Store, StoreConfig};
use strata::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A layer of text files and a little noise: compresses, and compresses
/// better at a higher level.
fn layer(seed: u64, files: usize) -> Vec<u8> {
    let bodies: Vec<(String, Vec<u8>)> = (0..files)
        .map(|i| {
            let mut b = text(seed * 100 + i as u64, 40_000 + i * 3_000);
            b.extend_from_slice(&noise(500, seed * 100 + i as u64));
            (format!("usr/share/doc/p{seed}/f{i}.txt"), b)
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = bodies.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    tar_of(&refs, seed)
}

fn push(store: &Store, data: &[u8]) -> Digest {
    let mut ing = store
        .begin_ingest(IngestOptions {
            namespace: "default".into(),
            ..Default::default()
        })
        .unwrap();
    ing.write(data).unwrap();
    ing.commit().unwrap().digest.expect("a digest")
}

/// Pack files by id, with their lengths.
fn packs(data: &Path) -> BTreeMap<u32, u64> {
    std::fs::read_dir(data.join("packs"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let id = name.strip_suffix(".pack")?.parse().ok()?;
            Some((id, e.metadata().unwrap().len()))
        })
        .collect()
}

fn densify() -> GcOptions {
    GcOptions {
        densify: true,
        ..Default::default()
    }
}

#[test]
fn gc_densifies_smaller_and_ingest_never_appends_to_a_dense_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layers: Vec<Vec<u8>> = (1..=4).map(|s| layer(s, 40)).collect();
    let mut digests = Vec::new();
    let dense_id;
    {
        let store = Store::open(dir, StoreConfig::default()).unwrap();
        for l in &layers[..3] {
            digests.push(push(&store, l));
        }
        let hot = packs(dir);
        assert_eq!(hot.len(), 1, "{hot:?}");
        let r = store.gc(densify()).unwrap();
        assert_eq!(r.packs_densified, 1, "{r:?}");
        assert_eq!(r.densified_bytes_before, *hot.values().next().unwrap());
        assert!(
            r.densified_bytes_after < r.densified_bytes_before,
            "dense pack not smaller: {r:?}"
        );
        let after = packs(dir);
        assert_eq!(after.len(), 1, "the hot pack stays: {after:?}");
        dense_id = *after.keys().next().unwrap();
        assert!(!hot.contains_key(&dense_id));
        assert_eq!(after[&dense_id], r.densified_bytes_after);
        for (l, d) in layers.iter().zip(&digests) {
            assert!(store_read(&store, d) == *l, "{d} reads back other bytes");
        }
        // Nothing left to densify.
        assert_eq!(store.gc(densify()).unwrap().packs_densified, 0);
        let v = store.verify(true).unwrap();
        assert!(v.ok(), "{:?}", v.problems);
    }
    // After a restart, a push goes to a new pack; the dense one is only
    // appended to by the next densify.
    let store = Store::open(dir, StoreConfig::default()).unwrap();
    let before = packs(dir);
    digests.push(push(&store, &layers[3]));
    let now = packs(dir);
    assert_eq!(
        now[&dense_id], before[&dense_id],
        "ingest appended to a dense pack"
    );
    assert_eq!(now.len(), 2, "{now:?}");
    let r = store.gc(densify()).unwrap();
    assert_eq!(r.packs_densified, 1, "{r:?}");
    let last = packs(dir);
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(
        last[&dense_id] > before[&dense_id],
        "the dense pack took the new chunks"
    );
    for (l, d) in layers.iter().zip(&digests) {
        assert!(store_read(&store, d) == *l, "{d} reads back other bytes");
    }
    // Deleting a layer and collecting rewrites into the dense pool too.
    store.delete("default", &digests[0]).unwrap();
    let r = store.gc(GcOptions::default()).unwrap();
    assert!(r.chunks_freed > 0, "{r:?}");
    for (l, d) in layers.iter().zip(&digests).skip(1) {
        assert!(store_read(&store, d) == *l, "{d} reads back other bytes");
    }
    let v = store.verify(true).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn dense_level_zero_leaves_packs_as_ingest_wrote_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        dense_level: 0,
        ..Default::default()
    };
    let store = Store::open(tmp.path(), cfg).unwrap();
    let d = push(&store, &layer(9, 20));
    let before = packs(tmp.path());
    let r = store.gc(densify()).unwrap();
    assert_eq!(r.packs_densified, 0, "{r:?}");
    assert_eq!(packs(tmp.path()), before);
    assert!(store_read(&store, &d) == layer(9, 20));
    let bad = StoreConfig {
        dense_level: 23,
        ..Default::default()
    };
    let e = Store::open(&tmp.path().join("other"), bad)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("dense"), "{e}");
}

#[test]
fn the_daemon_densifies_once_pushes_pause() {
    let d = ServeChild::start();
    let files: Vec<PathBuf> = (1..=3)
        .map(|s| {
            let p = d.dir().join(format!("l{s}.tar"));
            std::fs::write(&p, layer(s + 20, 30)).unwrap();
            p
        })
        .collect();
    let mut args = vec!["push".to_string()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    d.ok(&args);
    let hot = d.json(&["stats", "--json"])["pack_bytes"].as_u64().unwrap();
    // The log line comes once the densify has finished (index compacted).
    assert!(
        eventually(Duration::from_secs(60), || {
            std::fs::read_to_string(&d.log)
                .unwrap()
                .contains("packs densified")
        }),
        "packs not densified within a minute of the pushes; log:\n{}",
        std::fs::read_to_string(&d.log).unwrap()
    );
    let dense = d.json(&["stats", "--json"])["pack_bytes"].as_u64().unwrap();
    assert!(
        dense < hot,
        "{dense} bytes of packs after densifying, {hot} before"
    );
    for f in &files {
        let want = std::fs::read(f).unwrap();
        let out = d.run(&["cat", &sha256_digest(&want)]);
        assert!(out.status.success() && out.stdout == want, "{f:?}");
    }
    let v = d.json(&["verify", "--deep", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    // Nothing left for `strata gc` to densify.
    let g = d.json(&["gc", "--json"]);
    assert_eq!(g["packs_densified"], 0, "{g}");
}

fn serve(data: &Path, sock: &Path, log: &Path) -> Child {
    let _ = std::fs::remove_file(sock);
    let mut child = Command::new(BIN)
        .args(["serve", "--metrics-addr", "off", "--data-dir"])
        .arg(data)
        .arg("--socket")
        .arg(sock)
        .env_remove("STRATA_CONFIG")
        .env("HOME", data.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for_serve(&mut child, sock, log);
    child
}

fn cli(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(sock)
        .args(args)
        .env_remove("STRATA_CONFIG")
        .env_remove("STRATA_ADDR")
        .output()
        .unwrap()
}

/// SIGKILL at moments spread over the idle densify of each round's pushes:
/// after a restart every acknowledged blob reads back exact and the store
/// verifies. A kill that lands before or after the rewrite checks the same.
#[test]
fn a_daemon_killed_while_densifying_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sock = tmp.path().join("s.sock");
    let mut pushed: Vec<PathBuf> = Vec::new();
    let mut cut_short = 0;
    for round in 0..4u64 {
        let log = tmp.path().join(format!("serve-{round}.log"));
        let mut child = serve(&data, &sock, &log);
        // Everything acknowledged so far is there, exact.
        for f in &pushed {
            let want = std::fs::read(f).unwrap();
            let out = cli(&sock, &["cat", &sha256_digest(&want)]);
            assert!(
                out.status.success() && out.stdout == want,
                "round {round}: {f:?} lost or changed; log:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        let v = cli(&sock, &["verify", "--json"]);
        assert!(
            v.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
        let log_text = std::fs::read_to_string(&log).unwrap();
        if log_text.contains("trimmed uncommitted bytes")
            || log_text.contains("no commit refers to")
        {
            cut_short += 1;
        }
        let files: Vec<PathBuf> = (0..3)
            .map(|i| {
                let p = tmp.path().join(format!("r{round}-{i}.tar"));
                std::fs::write(&p, layer(100 + round * 10 + i, 60)).unwrap();
                p
            })
            .collect();
        let mut args = vec!["push".to_string()];
        args.extend(files.iter().map(|p| p.display().to_string()));
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = cli(&sock, &refs);
        assert!(out.status.success(), "{out:?}");
        pushed.extend(files);
        // The idle densify starts about 5 s after the last push: kill it
        // soon after it has begun a pack (rewriting one takes seconds).
        let began = log_lines(&log, "densifying a pack");
        let started = eventually(Duration::from_secs(30), || {
            log_lines(&log, "densifying a pack") > began
        });
        assert!(
            started,
            "round {round}: no densify began; log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50 + 80 * round));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let log = tmp.path().join("serve-last.log");
    let mut child = serve(&data, &sock, &log);
    let log_text = std::fs::read_to_string(&log).unwrap();
    if log_text.contains("trimmed uncommitted bytes") || log_text.contains("no commit refers to") {
        cut_short += 1;
    }
    for f in &pushed {
        let want = std::fs::read(f).unwrap();
        let out = cli(&sock, &["cat", &sha256_digest(&want)]);
        assert!(out.status.success() && out.stdout == want, "{f:?}");
    }
    let v = cli(&sock, &["verify", "--deep", "--json"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("restarts that found a rewrite cut short: {cut_short} of 4");
    assert!(cut_short > 0, "no kill landed inside a rewrite");
}

fn log_lines(log: &Path, what: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(what)
        .count()
}
