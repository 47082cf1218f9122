//! `docker://` references in `strata import`, `strata analyze` and
//! `strata export`, against Debian's docker-registry started here: plain
//! HTTP, and TLS with a test CA and htpasswd Basic auth. Images are put
//! there with skopeo from OCI layouts built here, and every digest that
//! comes back is compared with what skopeo pushed. Registries that misbehave
//! (bad digests, long bodies, loops, stalls, 503s, dropped connections) are a
//! small server in this file: no real registry does those on purpose.

mod common;
use common::docker_registry::{Config, DockerRegistry};
use common::serve_child::{failure, ServeChild};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn layer_tar(seed: u64, size: usize) -> Vec<u8> {
    let body = common::text(seed, size);
    common::tar_of(&[(&format!("f{seed}.txt"), &body)], 1_700_000_000)
}

/// An OCI layout written by hand: its manifest digest, and every blob by digest.
struct Layout {
    dir: PathBuf,
    manifest: String,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    /// `layers` are plain tars, stored gzipped.
    fn new(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> Layout {
        let mut blobs = BTreeMap::new();
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for t in layers {
            let gz = gzip(t);
            diff_ids.push(sha(t));
            descs.push(
                json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                              "digest": sha(&gz), "size": gz.len()}),
            );
            blobs.insert(sha(&gz), gz);
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": [format!("TAG={tag}")]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(&config), "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        let m = sha(&manifest);
        blobs.insert(sha(&config), config);
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        blobs.insert(m.clone(), manifest);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        for (d, b) in &blobs {
            std::fs::write(dir.join("blobs/sha256").join(&d[7..]), b).unwrap();
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            manifest: m,
            blobs,
        }
    }

    /// `skopeo copy oci:DIR:TAG DEST` to a plain-HTTP registry.
    fn push(&self, tag: &str, dest: &str) {
        let src = format!("oci:{}:{tag}", self.dir.display());
        skopeo(&["copy", "-q", "--dest-tls-verify=false", &src, dest]);
    }

    fn blob_set(&self) -> BTreeSet<String> {
        self.blobs.keys().cloned().collect()
    }
}

fn skopeo(args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("skopeo is not installed: run `bash .ci/deps`");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The blobs of an OCI layout skopeo wrote, each checked against its name.
fn layout_blobs(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let name = format!("sha256:{}", e.file_name().to_string_lossy());
        assert_eq!(
            sha(&std::fs::read(e.path()).unwrap()),
            name,
            "{}",
            e.path().display()
        );
        out.insert(name);
    }
    out
}

fn cli(d: &ServeChild, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    d.run_clean(home, env, args)
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn nothing_stored(d: &ServeChild) {
    assert!(d.images("default").is_empty(), "an image was recorded");
}

#[test]
fn import_export_and_a_new_version_through_a_plain_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = DockerRegistry::start(&tmp.path().join("reg"), Config::default());
    let (a, b, c) = (
        layer_tar(1, 300_000),
        layer_tar(2, 200_000),
        layer_tar(3, 100_000),
    );
    let v1 = Layout::new(&tmp.path().join("v1"), "1", &[a.clone(), b.clone()]);
    let v2 = Layout::new(&tmp.path().join("v2"), "2", &[a, b, c]);
    for (l, tag) in [(&v1, "1"), (&v2, "2")] {
        l.push(tag, &format!("docker://{}/app:{tag}", reg.addr));
    }
    let d = ServeChild::start();
    let home = tmp.path();
    let r1 = format!("docker://{}/app:1", reg.addr);

    // Import: the name is the full reference, every blob fetched once.
    let o = cli(&d, home, &[], &["import", "--tls-verify=false", &r1]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("plain HTTP"),
        "the fallback must be said"
    );
    let line = ok(o);
    assert!(
        line.starts_with(&format!(
            "{}/app:1  {}  4 pushed, 0 already stored  ",
            reg.addr, v1.manifest
        )),
        "{line}"
    );
    assert_eq!(
        reg.blob_gets("app"),
        2 + 1,
        "config and two layers, once each"
    );
    let imgs = d.images("default");
    assert_eq!(
        imgs[&format!("{}/app:1", reg.addr)]["manifest"],
        v1.manifest
    );

    // A new version fetches only what is new: its config and one layer.
    let r2 = format!("docker://{}/app:2", reg.addr);
    let v: Value = serde_json::from_str(&ok(cli(
        &d,
        home,
        &[],
        &["import", "--json", "--tls-verify=false", &r2],
    )))
    .unwrap();
    assert_eq!(
        (v[0]["pushed"].as_u64(), v[0]["already_stored"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
    assert_eq!(
        reg.blob_gets("app"),
        3 + 2,
        "only the new config and layer were downloaded"
    );

    // Export to a layout: the exact blobs skopeo pushed.
    let out = tmp.path().join("out");
    let name1 = format!("{}/app:1", reg.addr);
    ok(cli(
        &d,
        home,
        &[],
        &["export", &name1, &format!("oci:{}", out.display())],
    ));
    assert_eq!(layout_blobs(&out), v1.blob_set());

    // Export back to another repository of the same registry: mounted.
    let copy = format!("docker://{}/copy/app:9", reg.addr);
    let line = ok(cli(
        &d,
        home,
        &[],
        &["export", "--tls-verify=false", &name1, &copy],
    ));
    assert!(
        line.contains(&v1.manifest) && line.contains("0 uploaded, 3 mounted"),
        "{line}"
    );
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &copy]).stdout;
    assert_eq!(sha(&raw), v1.manifest);
    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &copy,
        &format!("oci:{}:x", back.display()),
    ]);
    assert_eq!(layout_blobs(&back), v1.blob_set());

    // An image from files, pushed to a repository with nothing: uploaded,
    // its large layer in PATCH chunks (over 16 MiB), digests unchanged.
    let big = common::tar_of(&[("big.bin", &common::noise(17 << 20, 5))], 1);
    let local = Layout::new(&tmp.path().join("local"), "7", &[big, layer_tar(6, 1000)]);
    ok(cli(
        &d,
        home,
        &[],
        &["import", "--name", "local:7", local.dir.to_str().unwrap()],
    ));
    let fresh = format!("docker://{}/fresh:7", reg.addr);
    let v: Value = serde_json::from_str(&ok(cli(
        &d,
        home,
        &[],
        &["export", "--json", "--tls-verify=false", "local:7", &fresh],
    )))
    .unwrap();
    assert_eq!(
        (v["uploaded"].as_u64(), v["mounted"].as_u64()),
        (Some(3), Some(0)),
        "{v}"
    );
    assert!(
        reg.log().contains("\"PATCH /v2/fresh/blobs/uploads/"),
        "a chunked upload"
    );
    let back = tmp.path().join("back2");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &fresh,
        &format!("oci:{}:x", back.display()),
    ]);
    assert_eq!(layout_blobs(&back), local.blob_set());
    assert_eq!(
        sha(&skopeo(&["inspect", "--raw", "--tls-verify=false", &fresh]).stdout),
        local.manifest
    );
    // Again: every blob is already there, only the manifest is put.
    let line = ok(cli(
        &d,
        home,
        &[],
        &["export", "--tls-verify=false", "local:7", &fresh],
    ));
    assert!(
        line.contains("0 uploaded, 0 mounted, 3 already there"),
        "{line}"
    );
}

#[test]
fn analyze_from_the_registry_equals_analyze_of_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = DockerRegistry::start(&tmp.path().join("reg"), Config::default());
    let shared = layer_tar(11, 400_000);
    let one = Layout::new(
        &tmp.path().join("one"),
        "1",
        &[shared.clone(), layer_tar(12, 50_000)],
    );
    let two = Layout::new(
        &tmp.path().join("two"),
        "1",
        &[shared, layer_tar(13, 70_000)],
    );
    for (l, repo) in [(&one, "one"), (&two, "two")] {
        l.push("1", &format!("docker://{}/{repo}:1", reg.addr));
    }
    let analyze = |inputs: &[String]| -> Value {
        let mut c = Command::new(BIN);
        c.args(["analyze", "--json", "--tls-verify=false"])
            .args(inputs)
            .env("HOME", tmp.path());
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let from_reg = analyze(&[
        format!("docker://{}/one:1", reg.addr),
        format!("docker://{}/two:1", reg.addr),
    ]);
    // Five distinct blobs (two configs, three layers): each fetched once.
    assert_eq!(reg.blob_gets("one") + reg.blob_gets("two"), 5);
    let from_files = analyze(&[
        format!("oci:{}:1", one.dir.display()),
        format!("oci:{}:1", two.dir.display()),
    ]);
    let figures = |v: &Value| -> Vec<Value> {
        v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let mut i = i.clone();
                let o = i.as_object_mut().unwrap();
                o.remove("name");
                o.remove("origin");
                i
            })
            .collect()
    };
    assert_eq!(figures(&from_reg), figures(&from_files));
    for k in ["blobs", "distinct_layers", "matrix"] {
        assert_eq!(from_reg[k], from_files[k], "{k}");
    }
    assert_eq!(from_reg["images"][0]["name"], format!("{}/one:1", reg.addr));
}

/// A CA (`ca.crt` in `certs`, as a `--cert-dir`), and a certificate for
/// 127.0.0.1 it signed (cert and key files in `server`).
fn pki(certs: &Path, server: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "strata client test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca).unwrap();
    std::fs::create_dir_all(certs).unwrap();
    std::fs::create_dir_all(server).unwrap();
    std::fs::write(certs.join("ca.crt"), ca.pem()).unwrap();
    let files = (server.join("server.pem"), server.join("server.key"));
    std::fs::write(&files.0, cert.pem()).unwrap();
    std::fs::write(&files.1, key.serialize_pem()).unwrap();
    files
}

#[test]
fn tls_with_a_private_ca_and_basic_auth_from_flags_and_auth_files() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let (cert, key) = pki(&certs, &tmp.path().join("pki"));
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("s3cret", 5).unwrap()),
    )
    .unwrap();
    let reg = DockerRegistry::start(
        &tmp.path().join("reg"),
        Config {
            tls: Some((&cert, &key)),
            htpasswd: Some(&htpasswd),
            ..Default::default()
        },
    );
    let l = Layout::new(&tmp.path().join("l"), "1", &[layer_tar(21, 100_000)]);
    let certs_s = certs.to_str().unwrap();
    let r = format!("docker://{}/team/app:1", reg.addr);
    skopeo(&[
        "copy",
        "-q",
        "--dest-cert-dir",
        certs_s,
        "--dest-creds",
        "alice:s3cret",
        &format!("oci:{}:1", l.dir.display()),
        &r,
    ]);
    let d = ServeChild::start();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();

    // The CA is not trusted without --cert-dir: said, with the way out.
    let e = failure(&cli(
        &d,
        &home,
        &[],
        &["import", "--creds", "alice:s3cret", &r],
    ));
    assert!(e.contains(&r) && e.contains("--cert-dir"), "{e}");
    // No credentials, wrong credentials.
    let e = failure(&cli(&d, &home, &[], &["import", "--cert-dir", certs_s, &r]));
    assert!(
        e.contains(&r) && e.contains("401") && e.contains("no credentials"),
        "{e}"
    );
    let e = failure(&cli(
        &d,
        &home,
        &[],
        &["import", "--cert-dir", certs_s, "--creds", "alice:nope", &r],
    ));
    assert!(e.contains("401") && e.contains("refused"), "{e}");
    // A credential helper for this registry is named, not silently skipped.
    std::fs::write(
        home.join(".docker/config.json"),
        json!({"credHelpers": {reg.addr.clone(): "secretservice"}}).to_string(),
    )
    .unwrap();
    let e = failure(&cli(&d, &home, &[], &["import", "--cert-dir", certs_s, &r]));
    assert!(
        e.contains("docker-credential-secretservice") && e.contains("--creds"),
        "{e}"
    );
    nothing_stored(&d);
    assert!(d.ls("default").is_empty(), "nothing stored after refusals");

    // Credentials from $REGISTRY_AUTH_FILE (containers' auth.json, keyed by host/repo).
    let auth = tmp.path().join("auth.json");
    let b64 = base64_of("alice:s3cret");
    std::fs::write(
        &auth,
        json!({"auths": {format!("{}/team", reg.addr): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    let line = ok(cli(
        &d,
        &home,
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
        &["import", "--cert-dir", certs_s, &r],
    ));
    assert!(
        line.contains(&l.manifest) && line.contains("3 pushed"),
        "{line}"
    );
    // ... and from ~/.docker/config.json, pushing to a second repository.
    std::fs::write(
        home.join(".docker/config.json"),
        json!({"auths": {reg.addr.clone(): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    let copy = format!("docker://{}/other:2", reg.addr);
    let name = format!("{}/team/app:1", reg.addr);
    let line = ok(cli(
        &d,
        &home,
        &[],
        &["export", "--cert-dir", certs_s, &name, &copy],
    ));
    assert!(line.contains("0 uploaded, 2 mounted"), "{line}");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        certs_s,
        "--creds",
        "alice:s3cret",
        &copy,
    ])
    .stdout;
    assert_eq!(sha(&raw), l.manifest);
    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "-q",
        "--src-cert-dir",
        certs_s,
        "--src-creds",
        "alice:s3cret",
        &copy,
        &format!("oci:{}:x", back.display()),
    ]);
    assert_eq!(layout_blobs(&back), l.blob_set());
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// An image index over two single-layer images (amd64, arm64) in `dir`,
/// tagged `multi`: the two manifests' digests.
fn multi_arch_layout(dir: &Path) -> (String, String) {
    let amd = Layout::new(&dir.join("amd"), "x", &[layer_tar(31, 10_000)]);
    let arm_dir = dir.join("arm");
    let arm = Layout::new(&arm_dir, "x", &[layer_tar(32, 10_000)]);
    // The arm64 image's config says so (Layout writes amd64).
    let cfg_digest = arm
        .blobs
        .iter()
        .find(|(_, b)| b.starts_with(b"{\"architecture\""))
        .map(|(d, _)| d.clone())
        .unwrap();
    let cfg = String::from_utf8(arm.blobs[&cfg_digest].clone())
        .unwrap()
        .replace("amd64", "arm64");
    let m = String::from_utf8(arm.blobs[&arm.manifest].clone())
        .unwrap()
        .replace(&cfg_digest, &sha(cfg.as_bytes()));
    let mut blobs = amd.blobs.clone();
    blobs.extend(arm.blobs.clone());
    blobs.remove(&cfg_digest);
    blobs.remove(&arm.manifest);
    blobs.insert(sha(cfg.as_bytes()), cfg.into_bytes());
    let arm_manifest = sha(m.as_bytes());
    blobs.insert(arm_manifest.clone(), m.into_bytes());
    let entry = |d: &str, arch: &str| {
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d,
               "size": blobs[d].len(), "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&amd.manifest, "amd64"), entry(&arm_manifest, "arm64")]}))
    .unwrap();
    let out = dir.join("multi");
    std::fs::create_dir_all(out.join("blobs/sha256")).unwrap();
    for (d, b) in blobs.iter().chain([(&sha(&index), &index)]) {
        std::fs::write(out.join("blobs/sha256").join(&d[7..]), b).unwrap();
    }
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha(&index), "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(out.join("index.json"), top.to_string()).unwrap();
    (amd.manifest, arm_manifest)
}

#[test]
fn platforms_of_an_index_one_or_all() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = DockerRegistry::start(&tmp.path().join("reg"), Config::default());
    let (amd, arm) = multi_arch_layout(&tmp.path().join("l"));
    let r = format!("docker://{}/multi:1", reg.addr);
    let src = format!("oci:{}:multi", tmp.path().join("l/multi").display());
    skopeo(&["copy", "-q", "--all", "--dest-tls-verify=false", &src, &r]);
    let d = ServeChild::start();
    let home = tmp.path();
    let name = format!("{}/multi:1", reg.addr);

    let one = ok(cli(
        &d,
        home,
        &[],
        &[
            "import",
            "--tls-verify=false",
            "--platform",
            "linux/arm64",
            &r,
        ],
    ));
    assert!(one.starts_with(&format!("{name}  {arm}  ")), "{one}");
    let e = failure(&cli(
        &d,
        home,
        &[],
        &[
            "import",
            "--tls-verify=false",
            "--platform",
            "linux/s390x",
            &r,
        ],
    ));
    assert!(
        e.contains("linux/amd64") && e.contains("linux/arm64") && e.contains("--all-platforms"),
        "{e}"
    );

    let v: Value = serde_json::from_str(&ok(cli(
        &d,
        home,
        &[],
        &[
            "import",
            "--json",
            "--tls-verify=false",
            "--all-platforms",
            &r,
        ],
    )))
    .unwrap();
    let got: BTreeMap<String, String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["manifest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = BTreeMap::from([
        (format!("{name}#linux/amd64"), amd.clone()),
        (format!("{name}#linux/arm64"), arm.clone()),
    ]);
    assert_eq!(got, want);
    let held: BTreeSet<String> = d.images("default").into_keys().collect();
    assert_eq!(
        held,
        BTreeSet::from([
            name.clone(),
            format!("{name}#linux/amd64"),
            format!("{name}#linux/arm64")
        ])
    );
    // Each platform's image goes back out with its own manifest.
    let back = format!("docker://{}/arm-only:1", reg.addr);
    ok(cli(
        &d,
        home,
        &[],
        &[
            "export",
            "--tls-verify=false",
            &format!("{name}#linux/arm64"),
            &back,
        ],
    ));
    assert_eq!(
        sha(&skopeo(&["inspect", "--raw", "--tls-verify=false", &back]).stdout),
        arm
    );
}

#[test]
fn transports_name_files_as_skopeo_does() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::new(&tmp.path().join("l"), "v1", &[layer_tar(41, 20_000)]);
    let d = ServeChild::start();
    let home = tmp.path();
    let dir = l.dir.display().to_string();
    let line = ok(cli(&d, home, &[], &["import", &format!("oci:{dir}:v1")]));
    assert!(line.contains(&l.manifest), "{line}");
    let e = failure(&cli(&d, home, &[], &["import", &format!("oci:{dir}:v2")]));
    assert!(
        e.contains("no image named \"v2\"") && e.contains("v1"),
        "{e}"
    );
    let e = failure(&cli(
        &d,
        home,
        &[],
        &["import", &format!("docker-archive:{dir}")],
    ));
    assert!(e.contains("transport"), "{e}");
    let e = failure(&cli(&d, home, &[], &["import", "dir:/x"]));
    assert!(e.contains("unsupported transport"), "{e}");
    let e = failure(&cli(&d, home, &[], &["import", "docker://Bad/Name"]));
    assert!(e.contains("invalid repository name"), "{e}");
    // Export to oci:DIR and docker-archive:FILE by prefix.
    let name = "l:v1".to_string();
    let out = tmp.path().join("out");
    ok(cli(
        &d,
        home,
        &[],
        &["export", &name, &format!("oci:{}", out.display())],
    ));
    assert_eq!(layout_blobs(&out), l.blob_set());
    let tarball = tmp.path().join("x.tar");
    ok(cli(
        &d,
        home,
        &[],
        &[
            "export",
            &name,
            &format!("docker-archive:{}", tarball.display()),
        ],
    ));
    let o = skopeo(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{}", tarball.display()),
    ]);
    assert!(!o.stdout.is_empty());
}

#[test]
fn a_deferred_import_is_converted_in_the_background_and_stays_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = DockerRegistry::start(&tmp.path().join("reg"), Config::default());
    let l = Layout::new(
        &tmp.path().join("l"),
        "1",
        &[layer_tar(51, 300_000), layer_tar(52, 200_000)],
    );
    let r = format!("docker://{}/lazy:1", reg.addr);
    l.push("1", &r);
    let d = ServeChild::start();
    let home = tmp.path();
    let line = ok(cli(
        &d,
        home,
        &[],
        &["import", "--defer", "--tls-verify=false", &r],
    ));
    assert!(line.contains(&l.manifest), "{line}");
    let layers: Vec<String> = l
        .blobs
        .iter()
        .filter(|(_, b)| b.starts_with(&[0x1f, 0x8b]))
        .map(|(d, _)| d.clone())
        .collect();
    assert_eq!(layers.len(), 2);
    // Stored as received: the converter waits for the daemon to be quiet.
    let s = d.json(&["stats", "--json"]);
    assert_eq!(s["pending_conversions"], 2, "{s}");
    // Converted once the daemon is quiet: decoded, deduplicated, proven.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let s = d.json(&["stats", "--json"]);
        if s["pending_conversions"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not converted: {s}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    for layer in &layers {
        let s = d.json(&["stat", "--json", layer]);
        assert!(s["plain_size"].as_u64().unwrap() > 0, "{s}");
        assert_ne!(s["strategy"], "stored", "{s}");
    }
    let out = tmp.path().join("out");
    let name = format!("{}/lazy:1", reg.addr);
    ok(cli(
        &d,
        home,
        &[],
        &["export", &name, &format!("oci:{}", out.display())],
    ));
    assert_eq!(layout_blobs(&out), l.blob_set());
}
