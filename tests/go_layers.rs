//! Layers made by Go's gzip writers, pushed end to end: Go's compress/gzip
//! and klauspost's pgzip and compress/gzip (built from tests/go/), and the
//! real producers built on them (umoci, skopeo). Each must be kept by replay
//! under the encoder that made it and read back byte-exact; streams that only
//! look Go-made must fall through to another strategy, still exact.

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use strata::proto::strata::v1 as pb;

/// Rebuild data a replayed layer may need: headers and the plan, not bytes.
const MAX_EXTRA: u64 = 300;

struct GoTools {
    kpgzip: PathBuf,
    gogzip: PathBuf,
}

/// Builds tests/go/{kpgzip,gogzip} once per test process.
fn go_tools() -> &'static GoTools {
    static TOOLS: OnceLock<GoTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        // Under the target dir (cargo clean removes it), one per process.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("go-layers-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
        let build = |name: &str, gopath: Option<&str>| {
            let bin = out.join(name);
            let mut cmd = Command::new("go");
            cmd.args(["build", "-o"])
                .arg(&bin)
                .arg(".")
                .current_dir(src.join(name))
                .env("GO111MODULE", "off");
            if let Some(p) = gopath {
                cmd.env("GOPATH", p);
            }
            if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
                cmd.env("GOCACHE", out.join("gocache"));
            }
            let o = cmd
                .output()
                .unwrap_or_else(|e| panic!("go (install it: .ci/deps): {e}"));
            assert!(
                o.status.success(),
                "building tests/go/{name} failed (Go sources: .ci/deps): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            bin
        };
        GoTools {
            kpgzip: build("kpgzip", Some("/usr/share/gocode")),
            gogzip: build("gogzip", None),
        }
    })
}

/// Runs `cmd args` with `input` on stdin and returns its stdout.
fn run(cmd: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (install it: .ci/deps): {e}", cmd.display()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Write from another thread: the child may fill its stdout before reading all input.
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "{} {args:?} failed", cmd.display());
    out.stdout
}

fn gogzip(data: &[u8], level: i32) -> Vec<u8> {
    run(
        &go_tools().gogzip,
        &["-mode", "gzip", "-level", &level.to_string()],
        data,
    )
}

/// pgzip; `block` 0 is pgzip's default (1 MiB).
fn pgzip(data: &[u8], level: i32, block: u32) -> Vec<u8> {
    run(
        &go_tools().kpgzip,
        &[
            "-mode",
            "pgzip",
            "-level",
            &level.to_string(),
            "-block",
            &block.to_string(),
        ],
        data,
    )
}

/// klauspost/compress/gzip: one flate stream.
fn kgzip(data: &[u8], level: i32) -> Vec<u8> {
    run(
        &go_tools().kpgzip,
        &["-mode", "gzip", "-level", &level.to_string()],
        data,
    )
}

/// Words with some structure, so files compress like real text and code.
fn text(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "layer", "image", "the ", "chunk", "store ", "fn ", "return", "{\n", "}\n", "let ",
        "0x1f8b", "static", "const ", "impl ", "pub ", "//",
    ];
    let r = noise(n / 3 + 8, seed);
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(WORDS[(r[i % r.len()] & 15) as usize].as_bytes());
        if r[(i + 1) % r.len()] < 40 {
            out.extend_from_slice(format!("{}", r[(i + 2) % r.len()]).as_bytes());
        }
        i += 1;
    }
    out.truncate(n);
    out
}

/// The files of a layer of about 3.5 MB: text, real licenses and a real
/// program, random bytes, zeros, small and empty files.
fn layer_files(seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        ("usr/share/doc/a.txt".to_string(), text(1_200_000, seed)),
        ("usr/bin/tool".to_string(), noise(400_000, seed + 1)),
        ("etc/empty".to_string(), Vec::new()),
        ("var/lib/zeros".to_string(), vec![0; 300_000]),
        ("usr/lib/c.py".to_string(), text(900_000, seed + 2)),
        ("etc/d.conf".to_string(), text(700, seed + 3)),
        (
            "usr/bin/ls".to_string(),
            std::fs::read("/usr/bin/ls").unwrap(),
        ),
    ];
    let mut licenses: Vec<_> = std::fs::read_dir("/usr/share/common-licenses")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    licenses.sort();
    for p in licenses {
        files.push((
            format!(
                "usr/share/common-licenses/{}",
                p.file_name().unwrap().to_string_lossy()
            ),
            std::fs::read(&p).unwrap(),
        ));
    }
    files
}

fn layer(seed: u64) -> Vec<u8> {
    let files = layer_files(seed);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let tar = tar_of(&refs, 1_700_000_000 + seed);
    assert!(tar.len() > 3 << 20, "layer of {} bytes", tar.len());
    tar
}

async fn read_plain(c: &mut Client, digest: &str, offset: u64, length: u64) -> Vec<u8> {
    let req = pb::ReadRequest {
        digest: digest.into(),
        offset,
        length,
        plain: true,
        ..Default::default()
    };
    read_req(c, req).await.expect("plain read")
}

/// Offsets just past each pgzip block's sync flush (the aligned empty stored
/// block `00 00 ff ff`); random data may add a few false ones, harmless here.
fn sync_marks(gz: &[u8]) -> Vec<usize> {
    gz.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 0xff, 0xff])
        .map(|(i, _)| i + 4)
        .collect()
}

/// Pushes `gz`, checks what any push must give (digest, exact bytes, the tar
/// inside when known) and returns its stat.
async fn push_exact(c: &mut Client, gz: &[u8], tar: Option<&[u8]>, what: &str) -> pb::BlobInfo {
    let r = push(c, gz).await;
    assert_eq!(r.digest, sha256_digest(gz), "{what}");
    let back = read_all(c, &r.digest).await;
    assert!(
        sha256_digest(&back) == r.digest,
        "{what}: read back differs (len {} vs {})",
        back.len(),
        gz.len()
    );
    let info = stat(c, &r.digest).await;
    assert_eq!(info.kept, r.kept, "{what}: stat and push disagree");
    assert_eq!(info.codec, "gzip", "{what}");
    if let Some(tar) = tar {
        assert_eq!(info.diff_id, sha256_digest(tar), "{what}: diff_id");
        assert_eq!(info.plain_size, tar.len() as u64, "{what}: plain_size");
        let plain = read_plain(c, &r.digest, 0, 0).await;
        assert!(plain == tar, "{what}: plain read differs");
    }
    info
}

/// A Go-made layer: kept by replay as `want`, with few extra bytes, and
/// exact over ranges: the head, block boundaries of the compressed and the
/// plain stream, the middle and the last bytes.
async fn check_replayed(c: &mut Client, gz: &[u8], tar: &[u8], want: &str, block: Option<u32>) {
    let info = push_exact(c, gz, Some(tar), want).await;
    assert_eq!(
        info.strategy, "replay",
        "{want}: kept as {} ({} extra bytes)",
        info.kept, info.extra_bytes
    );
    assert_eq!(info.kept, want);
    assert!(
        info.extra_bytes <= MAX_EXTRA,
        "{want}: {} extra bytes",
        info.extra_bytes
    );
    let d = &info.digest;
    let n = gz.len();
    // The last range runs past the end: the read is cut to the blob.
    let mut ranges = vec![(0, 100), (n / 2 - 5000, 10_000), (n - 100, 1000)];
    if let Some(block) = block {
        // pgzip: a range across the first and the last block boundary.
        let marks = sync_marks(gz);
        let blocks = tar.len().div_ceil(block as usize);
        assert!(
            marks.len() >= blocks - 1,
            "{want}: {} sync flushes for {blocks} blocks",
            marks.len()
        );
        for m in [marks[0], marks[marks.len() - 1]] {
            ranges.push((m.saturating_sub(3000), 6000));
        }
        // The plain stream across a block boundary.
        let at = block as usize;
        let got = read_plain(c, d, at as u64 - 10, 20).await;
        assert_eq!(got, tar[at - 10..at + 10], "{want}: plain range at {at}");
    }
    for (off, len) in ranges {
        let got = read_range(c, "", d, off as u64, len as u64).await.unwrap();
        let end = (off + len).min(n);
        assert!(got == gz[off..end], "{want}: range {off}+{len}");
    }
}

#[tokio::test]
async fn go_stdlib_gzip_replays_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(1);
    // Every level go_replay::candidates lists, and Go's default (-1 is 6).
    for level in [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9] {
        let gz = gogzip(&tar, level);
        let want = format!("go-{}", if level == -1 { 6 } else { level });
        check_replayed(&mut c, &gz, &tar, &want, None).await;
    }
    d.stop().await;
}

#[tokio::test]
async fn pgzip_replays_levels_and_block_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(2);
    // pgzip's defaults: level -1 (5), 1 MiB blocks.
    let gz = pgzip(&tar, -1, 0);
    check_replayed(&mut c, &gz, &tar, "pgzip-5-1024k", Some(1 << 20)).await;
    // Every other level kp_replay::candidates lists, at the default block.
    for level in [-2, 0, 1, 2, 3, 4, 6, 7, 8, 9] {
        let gz = pgzip(&tar, level, 1 << 20);
        let want = format!("pgzip-{level}-1024k");
        check_replayed(&mut c, &gz, &tar, &want, Some(1 << 20)).await;
    }
    // The other block sizes tried (umoci's 256 KiB among them).
    for (level, kib) in [(5, 256), (1, 256), (9, 512), (5, 512), (5, 128), (6, 128)] {
        let gz = pgzip(&tar, level, kib << 10);
        let want = format!("pgzip-{level}-{kib}k");
        check_replayed(&mut c, &gz, &tar, &want, Some(kib << 10)).await;
    }
    d.stop().await;
}

#[tokio::test]
async fn klauspost_single_stream_gzip_replays() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(3);
    for level in [-1, 1, 2, 6, 9, -2, 0] {
        let gz = kgzip(&tar, level);
        let want = format!("klauspost-{}", if level == -1 { 5 } else { level });
        check_replayed(&mut c, &gz, &tar, &want, None).await;
    }
    d.stop().await;
}

#[tokio::test]
async fn a_tar_and_its_go_gzips_share_their_file_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(4);
    let first = push(&mut c, &tar).await;
    assert!(first.kept.is_empty());
    assert!(first.new_chunks > 0);
    let plain_packs = pack_bytes(dir.path());
    let mut packs = plain_packs;
    for (what, gz) in [
        ("pgzip", pgzip(&tar, -1, 0)),
        ("go", gogzip(&tar, -1)),
        ("pgzip 128k", pgzip(&tar, 9, 128 << 10)),
    ] {
        let r = push(&mut c, &gz).await;
        assert_eq!(r.plain_bytes, tar.len() as u64, "{what}");
        assert_eq!(
            r.new_chunks, 0,
            "{what}: the gzip of a stored tar added chunks"
        );
        assert!(r.reused_chunks > 0, "{what}");
        // The recipe and the rebuild plan only (about 2.8 KB), not the layer again.
        assert!(
            r.bytes_added < 6 << 10,
            "{what}: the gzip of a stored tar added {} bytes",
            r.bytes_added
        );
        let now = pack_bytes(dir.path());
        assert!(
            now - packs < 4 << 10,
            "{what}: pack files grew by {} bytes",
            now - packs
        );
        packs = now;
        let back = read_all(&mut c, &r.digest).await;
        assert!(back == gz, "{what}: read back differs");
    }
    assert!(
        packs - plain_packs < 8 << 10,
        "three gzips of a stored tar grew the packs by {} bytes",
        packs - plain_packs
    );
    d.stop().await;
}

/// Fails, naming .ci/deps, when a producer CI installs is missing.
fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{tool} is not installed: .ci/deps installs it");
}

fn run_ok(cmd: &mut Command) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} (install it: .ci/deps): {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The blob `digest` ("sha256:...") of an OCI layout.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

/// The manifest tagged `tag` in an OCI layout.
fn manifest(layout: &Path, tag: &str) -> serde_json::Value {
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()));
    json(&blob(layout, m["digest"].as_str().unwrap()))
}

/// The last layer of `tag` and the diff_id its config gives it.
fn last_layer(layout: &Path, tag: &str) -> (Vec<u8>, String) {
    let m = manifest(layout, tag);
    let layers = m["layers"].as_array().unwrap();
    let l = layers.last().unwrap();
    assert_eq!(
        l["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "{}",
        layout.display()
    );
    let config = json(&blob(layout, m["config"]["digest"].as_str().unwrap()));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    (
        blob(layout, l["digest"].as_str().unwrap()),
        diff_ids.last().unwrap().as_str().unwrap().to_string(),
    )
}

/// Pushes a real producer's layer: replayed by a pgzip encoder, exact.
async fn check_producer_layer(c: &mut Client, gz: &[u8], diff_id: &str, what: &str) {
    assert_eq!(gz[9], 255, "{what}: not a Go-written header");
    let info = push_exact(c, gz, None, what).await;
    assert_eq!(info.diff_id, diff_id, "{what}: diff_id");
    assert_eq!(
        info.strategy, "replay",
        "{what}: kept as {} ({} extra bytes)",
        info.kept, info.extra_bytes
    );
    assert!(info.kept.starts_with("pgzip-"), "{what}: {}", info.kept);
    assert!(
        info.extra_bytes <= MAX_EXTRA,
        "{what}: {} extra bytes",
        info.extra_bytes
    );
    let n = gz.len();
    for (off, len) in [(0, 4096), (n / 3, 70_000), (n - 50, 50)] {
        let got = read_range(c, "", &info.digest, off as u64, len as u64)
            .await
            .unwrap();
        assert!(got == gz[off..off + len], "{what}: range {off}+{len}");
    }
}

#[tokio::test]
async fn umoci_repack_layer_replays() {
    require("umoci");
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    let bundle = work.path().join("bundle");
    // Unprivileged runs need --rootless to unpack and repack.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let rootless = unsafe { libc::geteuid() } != 0;
    let umoci = |args: &[&str]| {
        let mut cmd = Command::new("umoci");
        cmd.args(args);
        if rootless && matches!(args[0], "unpack" | "repack") {
            cmd.arg("--rootless");
        }
        cmd
    };
    let img_s = img.to_str().unwrap();
    run_ok(&mut umoci(&["init", "--layout", img_s]));
    run_ok(&mut umoci(&["new", "--image", &format!("{img_s}:base")]));
    run_ok(umoci(&["unpack", "--image", &format!("{img_s}:base")]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for (name, body) in layer_files(5) {
        let p = rootfs.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    run_ok(umoci(&["repack", "--image", &format!("{img_s}:new")]).arg(&bundle));
    let (gz, diff_id) = last_layer(&img, "new");
    assert!(gz.len() > 1 << 20, "umoci layer of {} bytes", gz.len());

    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    check_producer_layer(&mut c, &gz, &diff_id, "umoci repack").await;
    d.stop().await;
}

/// Writes a one-layer OCI layout with `tar` as an uncompressed layer.
fn write_layout(dir: &Path, tag: &str, tar: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha256_digest(b);
        std::fs::write(blobs.join(d.strip_prefix("sha256:").unwrap()), b).unwrap();
        (d, b.len())
    };
    let (layer, layer_size) = put(tar);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (config, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer,
            "size": layer_size,
        }],
    });
    let (m, m_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m,
            "size": m_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[tokio::test]
async fn skopeo_compressed_layer_replays() {
    require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let (src, dst) = (work.path().join("src"), work.path().join("dst"));
    let tar = layer(6);
    write_layout(&src, "t", &tar);
    // No policy file needed: local layouts, nothing signed.
    run_ok(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--dest-compress-format",
        "gzip",
        &format!("oci:{}:t", src.display()),
        &format!("oci:{}:t", dst.display()),
    ]));
    let (gz, diff_id) = last_layer(&dst, "t");
    assert_eq!(diff_id, sha256_digest(&tar));

    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    check_producer_layer(&mut c, &gz, &diff_id, "skopeo copy").await;
    // The layer holds this tar, byte for byte.
    let plain = read_plain(&mut c, &sha256_digest(&gz), 0, 0).await;
    assert!(plain == tar, "skopeo layer: plain read differs");
    d.stop().await;
}

/// Python's gzip module with a nonzero mtime writes its own header, OS 255.
fn python_gzip_os255(data: &[u8], level: u32) -> Vec<u8> {
    let code = format!(
        "import sys,gzip; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read(), {level}, mtime=1700000000))"
    );
    run(Path::new("/usr/bin/python3"), &["-c", &code], data)
}

/// Not a replay by one of the Go encoders: a wrong one would rebuild other bytes.
fn not_go(kept: &str) -> bool {
    !kept
        .split('+')
        .any(|k| k.starts_with("go-") || k.starts_with("pgzip-") || k.starts_with("klauspost-"))
}

#[tokio::test]
async fn go_looking_streams_from_elsewhere_fall_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(7);

    // Python (zlib) says OS 255 like Go: zlib's replay still finds it.
    for level in [6, 9, 1] {
        let gz = python_gzip_os255(&tar, level);
        assert_eq!(gz[9], 255);
        let what = format!("python gzip -{level}");
        let info = push_exact(&mut c, &gz, Some(&tar), &what).await;
        assert_eq!(info.strategy, "replay", "{what}: kept as {}", info.kept);
        assert_eq!(info.kept, format!("zlib-{level}"), "{what}");
    }

    // pgzip at block sizes the usual list lacks: found from the stream's
    // own sync-flush markers, then proven like any candidate.
    for (level, block, name) in [
        (5, 300 << 10, "pgzip-5-300k"),
        (6, 200_000, "pgzip-6-200000b"),
    ] {
        let gz = pgzip(&tar, level, block);
        let info = push_exact(&mut c, &gz, Some(&tar), name).await;
        assert_eq!(info.strategy, "replay", "{name}: kept as {}", info.kept);
        assert_eq!(info.kept, name);
        assert!(
            info.extra_bytes <= MAX_EXTRA,
            "{name}: {} extra bytes",
            info.extra_bytes
        );
    }

    // klauspost's stream cut at two thirds: no end, kept as received.
    let gz = kgzip(&tar, 5);
    let cut = &gz[..gz.len() * 2 / 3];
    let info = push_exact(&mut c, cut, None, "klauspost cut").await;
    assert_eq!(info.strategy, "stored", "cut stream kept as {}", info.kept);
    assert_eq!(info.diff_id, "");

    // A byte flipped early in the compressed text: the stream breaks there.
    let mut bad = gz.clone();
    bad[5000] ^= 0x55;
    let info = push_exact(&mut c, &bad, None, "klauspost corrupt").await;
    assert_eq!(info.diff_id, "", "a corrupt stream has no diff_id");
    assert_ne!(
        info.strategy, "replay",
        "corrupt stream kept as {}",
        info.kept
    );
    assert!(not_go(&info.kept), "corrupt stream kept as {}", info.kept);

    // A pgzip stream whose middle block was made at another level: the
    // single-level candidates fail part way, yet the bytes come back.
    let a = pgzip(&tar, 5, 0);
    let b = pgzip(&tar, 9, 0);
    let marks_a = sync_marks(&a);
    let marks_b = sync_marks(&b);
    let mut spliced = a[..marks_a[0]].to_vec();
    spliced.extend_from_slice(&b[marks_b[0]..marks_b[1]]);
    spliced.extend_from_slice(&a[marks_a[1]..]);
    let info = push_exact(&mut c, &spliced, Some(&tar), "spliced pgzip").await;
    assert!(
        not_go(&info.kept),
        "spliced pgzip kept as {} ({})",
        info.kept,
        info.strategy
    );
    d.stop().await;
}

/// pgzip members record restart points (about one per MiB of plain input),
/// so a ranged read starts re-encoding at the last block start before it:
/// reads anywhere, in any order, on one connection (the daemon keeps the
/// paused rebuild between them and jumps ahead over restart points) and on
/// fresh ones, must still give the exact bytes; the plan stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_of_pgzip_start_at_restart_points() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let mut tar = layer(7);
    tar.extend_from_slice(&layer(8));
    tar.extend_from_slice(&layer(9));
    let gz = pgzip(&tar, 5, 128 << 10);
    let info = push_exact(&mut c, &gz, Some(&tar), "pgzip-5-128k").await;
    assert_eq!(info.kept, "pgzip-5-128k");
    // About 10 MB of input: ten restart points, a few bytes each.
    assert!(
        info.extra_bytes <= MAX_EXTRA,
        "{} extra bytes",
        info.extra_bytes
    );
    let marks = sync_marks(&gz);
    let n = gz.len() as u64;
    let mut offsets: Vec<u64> = vec![n - 1, n / 2, 1, n - 100_000, n / 3, 0];
    for m in marks.iter().step_by(7) {
        offsets.extend([*m as u64 - 1, *m as u64, *m as u64 + 1]);
    }
    offsets.extend([n / 5, n / 4, 3 * n / 4, n / 7]);
    for (i, &off) in offsets.iter().enumerate() {
        let len = [1u64, 5000, 70_000, 1 << 20][i % 4];
        let end = (off + len).min(n);
        let got = read_range(&mut c, "", &info.digest, off, len)
            .await
            .unwrap();
        assert!(
            got == gz[off as usize..end as usize],
            "range {off}+{len} of {n} differs"
        );
    }
    // Forward jumps on one cursor: containerd-like 32 KiB windows at spread offsets.
    let mut off = 10_000;
    while off < n {
        let got = read_range(&mut c, "", &info.digest, off, 32 << 10)
            .await
            .unwrap();
        let end = (off + (32 << 10)).min(n);
        assert!(got == gz[off as usize..end as usize], "window at {off}");
        off += 900_000;
    }
}

/// `strata analyze` trusts a replay that passes the probe (decoding speed);
/// `--prove` re-encodes whole layers as the daemon does. On Go-made layers
/// both predict the same store, and both name the encoder found.
#[test]
fn analyze_trusts_the_probe_and_proves_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let tar = layer(11);
    let (a, b) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
    std::fs::write(&a, pgzip(&tar, 5, 1 << 20)).unwrap();
    std::fs::write(&b, gogzip(&tar, 6)).unwrap();
    let analyze = |extra: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("analyze")
            .arg("--json")
            .args(extra)
            .arg(&a)
            .arg(&b)
            .env_remove("STRATA_SOCKET")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (fast, proved) = (analyze(&[]), analyze(&["--prove"]));
    for r in [&fast, &proved] {
        let backend = r["inflate_backend"].as_str().unwrap();
        assert!(
            backend.contains("pgzip-5-1024k") && backend.contains("go-6"),
            "{backend}"
        );
    }
    let total = |r: &serde_json::Value| {
        r["settings"][0]["strata"]["total"]["bytes"]
            .as_u64()
            .unwrap()
    };
    // Only the restart points a proof records (a few bytes per MiB) differ.
    let (f, p) = (total(&fast), total(&proved));
    assert!(f <= p && p - f <= 100, "trusted {f}, proved {p}");
    // Two layers of the same tar: together no more than the tar once.
    let chunk = fast["settings"][0]["chunk_level"]["bytes"]
        .as_u64()
        .unwrap();
    assert!(chunk <= tar.len() as u64, "{chunk} of {}", tar.len());
}
