//! `--registry-mirror-of`: a strata registry as the pull-through cache of
//! another registry (here a second strata daemon, over real HTTP). skopeo
//! pulls through the mirror; every digest is the upstream's; once pulled,
//! the image is served with the upstream gone; what the upstream does not
//! have is a 404 here.

mod common;

use common::Daemon;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::net::SocketAddr;
use strata::registry::RegistryOptions;

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn push_blob(http: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> String {
    let d = sha(data);
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    d
}

fn skopeo(args: Vec<String>) -> std::process::Output {
    std::process::Command::new("skopeo")
        .args(&args)
        .output()
        .expect("skopeo is installed (.ci/deps)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_the_mirror_keep_digests_and_are_served_locally_after() {
    let tmp = tempfile::tempdir().unwrap();
    let (up_addr, mirror_addr) = (free_port(), free_port());
    let upstream = Daemon::start_custom(&tmp.path().join("up"), |o| {
        o.registry = Some(RegistryOptions::new(up_addr))
    })
    .await;
    let mut mo = RegistryOptions::new(mirror_addr);
    mo.mirror_of = vec![format!("http://{up_addr}")];
    let mirror = Daemon::start_custom(&tmp.path().join("mirror"), |o| o.registry = Some(mo)).await;

    // An image in the upstream: a config and a gzip layer.
    let http = reqwest::Client::new();
    let up = format!("http://{up_addr}");
    let mut tar = tar::Builder::new(Vec::new());
    let file: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
    let mut h = tar::Header::new_gnu();
    h.set_size(file.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "f", file.as_slice()).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]}}))
    .unwrap();
    let cd = push_blob(&http, &up, "lib/app", &config).await;
    let ld = push_blob(&http, &up, "lib/app", &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
    }))
    .unwrap();
    let md = sha(&manifest);
    let r = http
        .put(format!("{up}/v2/lib/app/manifests/1"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);

    let pull = |dest: std::path::PathBuf| {
        let src = format!("docker://{mirror_addr}/lib/app:1");
        tokio::task::spawn_blocking(move || {
            skopeo(vec![
                "copy".into(),
                "--src-tls-verify=false".into(),
                src,
                format!("oci:{}:1", dest.display()),
            ])
        })
    };
    let first = tmp.path().join("first");
    let out = pull(first.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(first.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], md.as_str());
    for (d, bytes) in [(&md, &manifest), (&cd, &config), (&ld, &layer)] {
        let got = std::fs::read(first.join("blobs/sha256").join(&d[7..])).unwrap();
        assert_eq!(&got, bytes, "{d}");
    }

    // The upstream goes away: the mirror serves what it stored.
    upstream.stop().await;
    let second = tmp.path().join("second");
    let out = pull(second.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(second.join("blobs/sha256").join(&ld[7..])).unwrap();
    assert_eq!(got, layer);
    // Something never pulled is not there; with the upstream gone that is an error.
    let r = http
        .get(format!("http://{mirror_addr}/v2/lib/app/manifests/2"))
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success());
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_404_is_a_404_here() {
    let tmp = tempfile::tempdir().unwrap();
    let (up_addr, mirror_addr) = (free_port(), free_port());
    let upstream = Daemon::start_custom(&tmp.path().join("up"), |o| {
        o.registry = Some(RegistryOptions::new(up_addr))
    })
    .await;
    let mut mo = RegistryOptions::new(mirror_addr);
    mo.mirror_of = vec![format!("http://{up_addr}")];
    let mirror = Daemon::start_custom(&tmp.path().join("mirror"), |o| o.registry = Some(mo)).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{mirror_addr}/v2/none/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let r = http
        .get(format!("http://{mirror_addr}/v2/none/blobs/{}", sha(b"x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    upstream.stop().await;
    mirror.stop().await;
}
