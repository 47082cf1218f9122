//! skopeo against `strata serve --registry-listen` (the real binary): an OCI
//! layout copied in and back out keeps every digest; the pushed tag is an
//! image `strata images` lists and `strata export` writes; an image put in
//! by `strata import` is pullable by its name.

mod common;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn words(seed: u64, len: usize) -> Vec<u8> {
    let w = ["layer ", "image ", "store ", "blob\n", "chunk ", "digest "];
    let mut x = seed;
    let mut out = Vec::new();
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(w[(x >> 33) as usize % w.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// An OCI layout of one image (two gzip layers: skopeo would compress a
/// plain tar layer on its way to a registry); its manifest digest.
fn layout(dir: &Path) -> String {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let blob = |data: &[u8]| {
        let d = sha(data);
        fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    };
    let t1 = tar_of(&[
        ("etc/os-release", b"ID=test\n".to_vec()),
        ("bin/sh", words(1, 50_000)),
    ]);
    let t2 = tar_of(&[("usr/lib/libx.so", words(2, 300_000))]);
    let g2 = gzip(&t2);
    let g1 = gzip(&t1);
    let (l1, l2) = (blob(&g1), blob(&g2));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(&t1), sha(&t2)]},
    }))
    .unwrap();
    let cd = blob(&config);
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l1, "size": g1.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l2, "size": g2.len()},
        ],
    }))
    .unwrap();
    let md = blob(&manifest);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": md, "size": manifest.len(),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    md
}

/// Every blob file of a layout: digest → bytes.
fn blobs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                format!("sha256:{}", e.file_name().to_string_lossy()),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The manifest digest(s) index.json names.
fn index_manifests(dir: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

struct Serve {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    _tmp: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start() -> Serve {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s.sock");
        let log = tmp.path().join("serve.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .arg("--socket")
            .arg(&sock)
            .args([
                "--metrics-addr",
                "off",
                "--registry-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env_remove("STRATA_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        common::wait_for_serve(&mut child, &sock, &log);
        Serve {
            child,
            sock,
            log,
            port,
            _tmp: tmp,
        }
    }

    fn strata(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .env_remove("STRATA_CONFIG")
            .output()
            .unwrap();
        self.ok(&out, &format!("strata {args:?}"));
        String::from_utf8(out.stdout).unwrap()
    }

    fn ok(&self, out: &Output, what: &str) {
        assert!(
            out.status.success(),
            "{what} failed: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn skopeo(&self, args: &[&str]) {
        let out = Command::new("skopeo")
            .args(args)
            .output()
            .expect("skopeo is installed (.ci/deps)");
        self.ok(&out, &format!("skopeo {args:?}"));
    }
}

#[test]
fn skopeo_round_trip_keeps_every_digest_and_strata_lists_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let md = layout(&src);
    let s = Serve::start();
    let reg = format!("127.0.0.1:{}", s.port);
    s.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", src.display()),
        &format!("docker://{reg}/x:1"),
    ]);
    let back = tmp.path().join("back");
    s.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reg}/x:1"),
        &format!("oci:{}:1", back.display()),
    ]);
    assert_eq!(index_manifests(&back), vec![md.clone()]);
    assert_eq!(
        blobs(&back),
        blobs(&src),
        "every blob comes back byte for byte"
    );

    // The tag is an image of the registry's namespace.
    let images: Value =
        serde_json::from_str(&s.strata(&["images", "--json", "-n", "registry"])).unwrap();
    let names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["x:1"], "{images:#}");
    let exported = tmp.path().join("exported");
    s.strata(&[
        "export",
        "-n",
        "registry",
        "x:1",
        exported.to_str().unwrap(),
    ]);
    assert_eq!(index_manifests(&exported), vec![md.clone()]);
    assert_eq!(blobs(&exported), blobs(&src));

    // An image imported by `strata import` is pullable by its name.
    s.strata(&[
        "import",
        "-n",
        "registry",
        "--name",
        "imported/app:2",
        src.to_str().unwrap(),
    ]);
    let pulled = tmp.path().join("pulled");
    s.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reg}/imported/app:2"),
        &format!("oci:{}:2", pulled.display()),
    ]);
    assert_eq!(index_manifests(&pulled), vec![md]);
    assert_eq!(blobs(&pulled), blobs(&src));
}
