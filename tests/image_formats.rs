//! strata::image against images built here: OCI layouts (plain and gzip
//! layers, a multi-platform index), OCI archives, docker-archives (legacy and
//! docker ≥ 25 layouts) and lone layer files; digest checking; export round
//! trips, checked by skopeo and umoci as well as by reading them back.

use serde_json::{json, Value};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use strata::image::{self, BlobRef, BlobSource, Format, Image, Platform};
use strata::Error;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn sha(b: &[u8]) -> String {
    strata::Digest::of(b).to_string()
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

/// A layer tar holding `files` (name, content), deterministic.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Tars a directory's files (sorted) with their relative names: an OCI
/// archive or a docker-archive, as the directory holds.
fn tar_dir(dir: &Path, out: &Path) {
    let mut files = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out)
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    walk(dir, dir, &mut files);
    files.sort();
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    for f in files {
        b.append_path_with_name(dir.join(&f), &f).unwrap();
    }
    b.finish().unwrap();
}

/// An OCI layout being written by hand.
struct Layout {
    dir: PathBuf,
}

/// What was written for one image: digests to compare against.
#[derive(Clone, Debug)]
struct Built {
    manifest: String,
    manifest_size: u64,
    config: String,
    layers: Vec<String>,
    layer_bytes: Vec<Vec<u8>>,
    diff_ids: Vec<String>,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        fs::write(self.dir.join("blobs/sha256").join(hex(&d)), data).unwrap();
        d
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex(digest))
    }

    /// Writes an image of `tars` (gzipped if `gz`) for `arch`.
    fn image(&self, tars: &[Vec<u8>], gz: bool, arch: &str) -> Built {
        let diff_ids: Vec<String> = tars.iter().map(|t| sha(t)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_d = self.blob(&config);
        let layer_bytes: Vec<Vec<u8>> = tars
            .iter()
            .map(|t| if gz { gzip(t) } else { t.clone() })
            .collect();
        let layers: Vec<String> = layer_bytes.iter().map(|l| self.blob(l)).collect();
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_d, "size": config.len()},
            "layers": layer_bytes.iter().zip(&layers).map(|(b, d)| json!({
                "mediaType": if gz { LAYER_GZIP } else { LAYER_TAR },
                "digest": d, "size": b.len(),
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        Built {
            manifest: self.blob(&manifest),
            manifest_size: manifest.len() as u64,
            config: config_d,
            layers,
            layer_bytes,
            diff_ids,
        }
    }

    fn index(&self, entries: Vec<Value>) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

fn entry(b: &Built, name: Option<&str>, arch: Option<&str>) -> Value {
    let mut e = json!({"mediaType": OCI_MANIFEST, "digest": b.manifest, "size": b.manifest_size});
    if let Some(n) = name {
        e["annotations"] = json!({ REF_NAME: n });
    }
    if let Some(a) = arch {
        e["platform"] = json!({"os": "linux", "architecture": a});
    }
    e
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn read_blob(src: &dyn BlobSource, b: &BlobRef) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    src.open(b)?.read_to_end(&mut out)?;
    Ok(out)
}

fn layer_digests(img: &Image) -> Vec<String> {
    img.layers.iter().map(|l| l.digest.clone()).collect()
}

/// Checks an opened image is `built`, layer bytes included.
fn assert_image(o: &image::Opened, img: &Image, built: &Built) {
    assert_eq!(img.manifest.as_ref().unwrap().digest, built.manifest);
    assert_eq!(img.config.as_ref().unwrap().digest, built.config);
    assert_eq!(layer_digests(img), built.layers);
    for (l, bytes) in img.layers.iter().zip(&built.layer_bytes) {
        assert_eq!(&read_blob(&*o.source, l).unwrap(), bytes);
    }
}

fn two_images(dir: &Path) -> (Layout, Built, Built) {
    let l = Layout::new(dir.to_path_buf());
    let base = layer_tar(&[("etc/os-release", b"ID=test\n"), ("bin/sh", &[7u8; 3000])]);
    let app = layer_tar(&[("app/main", b"#!/bin/sh\necho hi\n")]);
    let plain = l.image(&[base.clone(), app.clone()], false, "amd64");
    let gz = l.image(&[base, app], true, "amd64");
    l.index(vec![
        entry(&plain, Some("plain"), None),
        entry(&gz, Some("gz"), None),
    ]);
    (l, plain, gz)
}

#[test]
fn oci_layout_with_plain_and_gzip_layers() {
    let t = tempfile::tempdir().unwrap();
    let (l, plain, gz) = two_images(&t.path().join("layout"));
    let o = image::open(&l.dir, &amd64()).unwrap();
    assert_eq!(o.format, Format::OciLayout);
    let names: Vec<&str> = o.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["plain", "gz"]);
    assert_image(&o, &o.images[0], &plain);
    assert_image(&o, &o.images[1], &gz);
    assert_eq!(o.images[1].layers[0].media_type, LAYER_GZIP);
    assert_eq!(o.images[0].platform.as_deref(), Some("linux/amd64"));
    // Another platform does not matter for an entry without one.
    let arm = Platform::parse("linux/arm64").unwrap();
    assert_eq!(image::open(&l.dir, &arm).unwrap().images.len(), 2);
}

/// A layout whose one named entry is an index of amd64 and arm64 images
/// (and a buildx-style attestation manifest, which is never picked).
fn multi_platform(dir: &Path) -> (Layout, Built, Built) {
    let l = Layout::new(dir.to_path_buf());
    let a = l.image(&[layer_tar(&[("arch", b"amd64")])], true, "amd64");
    let b = l.image(&[layer_tar(&[("arch", b"arm64")])], true, "arm64");
    let att = l.image(&[layer_tar(&[("att", b"x")])], false, "unknown");
    let mut att_e = entry(&att, None, None);
    att_e["platform"] = json!({"os": "unknown", "architecture": "unknown"});
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [entry(&a, None, Some("amd64")), entry(&b, None, Some("arm64")), att_e],
    }))
    .unwrap();
    let index_d = l.blob(&index);
    l.index(vec![json!({
        "mediaType": OCI_INDEX, "digest": index_d, "size": index.len(),
        "annotations": {REF_NAME: "multi"},
    })]);
    (l, a, b)
}

#[test]
fn multi_platform_index_and_oci_archive() {
    let t = tempfile::tempdir().unwrap();
    let (l, a, b) = multi_platform(&t.path().join("layout"));
    let archive = t.path().join("multi.tar");
    tar_dir(&l.dir, &archive);
    for (path, format) in [(&l.dir, Format::OciLayout), (&archive, Format::OciArchive)] {
        let o = image::open(path, &amd64()).unwrap();
        assert_eq!(o.format, format);
        assert_eq!(o.images.len(), 1);
        assert_eq!(o.images[0].name, "multi");
        assert_eq!(o.images[0].platform.as_deref(), Some("linux/amd64"));
        assert_image(&o, &o.images[0], &a);

        for p in ["linux/arm64", "linux/arm64/v8"] {
            let o = image::open(path, &Platform::parse(p).unwrap()).unwrap();
            assert_eq!(o.images[0].platform.as_deref(), Some("linux/arm64"));
            assert_image(&o, &o.images[0], &b);
        }
        match image::open(path, &Platform::parse("linux/s390x").unwrap()) {
            Err(Error::NotFound(m)) => {
                assert!(m.contains("multi") && m.contains("linux/arm64"), "{m}")
            }
            other => panic!("{:?}", other.map(|o| o.images)),
        }
    }
}

/// Legacy `docker save`: <id>/layer.tar, <config hex>.json, manifest.json;
/// a repeated layer is a symlink to the first copy.
#[test]
fn docker_archive_legacy() {
    let t = tempfile::tempdir().unwrap();
    let l1 = layer_tar(&[("etc/hostname", b"box\n")]);
    let l2 = layer_tar(&[("usr/bin/tool", &[1u8; 5000])]);
    let diff_ids = [sha(&l1), sha(&l2), sha(&l1)];
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_d = sha(&config);
    let archive = t.path().join("legacy.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&archive).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("aaaa/layer.tar", &l1);
        add("bbbb/layer.tar", &l2);
        add(&format!("{}.json", hex(&config_d)), &config);
        let manifest = json!([{
            "Config": format!("{}.json", hex(&config_d)),
            "RepoTags": ["example.com/legacy:1.0"],
            "Layers": ["aaaa/layer.tar", "bbbb/layer.tar", "cccc/layer.tar"],
        }]);
        add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "cccc/layer.tar", "../aaaa/layer.tar")
            .unwrap();
        b.finish().unwrap();
    }
    let o = image::open(&archive, &amd64()).unwrap();
    assert_eq!(o.format, Format::DockerArchive);
    assert_eq!(o.images.len(), 1);
    let img = &o.images[0];
    assert_eq!(img.name, "example.com/legacy:1.0");
    assert!(img.manifest.is_none());
    assert_eq!(img.config.as_ref().unwrap().digest, config_d);
    assert_eq!(layer_digests(img), diff_ids);
    assert_eq!(read_blob(&*o.source, &img.layers[1]).unwrap(), l2);
    assert_eq!(read_blob(&*o.source, &img.layers[2]).unwrap(), l1);
    assert_eq!(img.platform.as_deref(), Some("linux/amd64"));

    // Exported, it gets a manifest; the config and layers are the same bytes.
    let oci = t.path().join("legacy-oci");
    image::write_oci_layout(&oci, &o.images, &*o.source).unwrap();
    let back = image::open(&oci, &amd64()).unwrap();
    let digest = |i: &Image| i.config.as_ref().unwrap().digest.clone();
    assert_eq!(digest(&back.images[0]), digest(img));
    assert_eq!(layer_digests(&back.images[0]), diff_ids);
    let reference = format!("oci:{}:example.com/legacy:1.0", oci.display());
    assert_eq!(skopeo_layers(&reference), diff_ids);
    umoci_unpack(&oci, "example.com/legacy:1.0", &t.path().join("bundle"));
    let tool = fs::read(t.path().join("bundle/rootfs/usr/bin/tool")).unwrap();
    assert_eq!(tool, [1u8; 5000]);
    let docker = t.path().join("again.tar");
    image::write_docker_archive(&docker, &o.images, &*o.source).unwrap();
    let reference = format!("docker-archive:{}:example.com/legacy:1.0", docker.display());
    assert_eq!(skopeo_layers(&reference), diff_ids);
}

/// docker ≥ 25: blobs/sha256 + manifest.json + index.json: the index wins
/// (the manifest blob is known); without it manifest.json's blob paths serve.
#[test]
fn docker_archive_with_blobs_and_index() {
    let t = tempfile::tempdir().unwrap();
    let l = Layout::new(t.path().join("d"));
    let built = l.image(
        &[layer_tar(&[("x", b"1")]), layer_tar(&[("y", b"2")])],
        false,
        "amd64",
    );
    let manifest = json!([{
        "Config": format!("blobs/sha256/{}", hex(&built.config)),
        "RepoTags": ["app:2"],
        "Layers": built.layers.iter().map(|d| format!("blobs/sha256/{}", hex(d))).collect::<Vec<_>>(),
    }]);
    fs::write(
        l.dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let archive = t.path().join("no-index.tar");
    tar_dir(&l.dir, &archive);
    let o = image::open(&archive, &amd64()).unwrap();
    assert_eq!(o.images[0].name, "app:2");
    assert!(o.images[0].manifest.is_none());
    assert_eq!(o.images[0].config.as_ref().unwrap().digest, built.config);
    assert_eq!(layer_digests(&o.images[0]), built.layers);

    let mut e = entry(&built, Some("2"), None);
    e["annotations"]["io.containerd.image.name"] = json!("docker.io/library/app:2");
    l.index(vec![e]);
    let archive = t.path().join("with-index.tar");
    tar_dir(&l.dir, &archive);
    let o = image::open(&archive, &amd64()).unwrap();
    assert_eq!(o.format, Format::DockerArchive);
    assert_eq!(o.images[0].name, "docker.io/library/app:2");
    assert_image(&o, &o.images[0], &built);
}

#[test]
fn single_layer_files() {
    let t = tempfile::tempdir().unwrap();
    let tar = layer_tar(&[("hello", b"world")]);
    let zst = zstd::bulk::compress(&tar, 3).unwrap();
    for (name, bytes, mt) in [
        ("layer.tar", tar.clone(), LAYER_TAR),
        ("layer.tar.gz", gzip(&tar), LAYER_GZIP),
        (
            "layer.tar.zst",
            zst,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    ] {
        let p = t.path().join(name);
        fs::write(&p, &bytes).unwrap();
        let o = image::open(&p, &amd64()).unwrap();
        assert_eq!(o.format, Format::LayerFile);
        let img = &o.images[0];
        assert_eq!(img.name, name);
        assert!(img.manifest.is_none() && img.config.is_none());
        assert_eq!(img.layers.len(), 1);
        assert_eq!(img.layers[0].digest, sha(&bytes));
        assert_eq!(img.layers[0].media_type, mt);
        assert_eq!(read_blob(&*o.source, &img.layers[0]).unwrap(), bytes);
    }
    let junk = t.path().join("junk");
    fs::write(&junk, [0x42u8; 700]).unwrap();
    assert!(matches!(
        image::open(&junk, &amd64()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn corruption_is_caught() {
    let t = tempfile::tempdir().unwrap();
    let (l, plain, gz) = two_images(&t.path().join("layout"));

    // A flipped layer byte: open is fine (layers are checked as read), the
    // reader fails at EOF naming the digest.
    let victim = &plain.layers[1];
    let mut bytes = fs::read(l.blob_path(victim)).unwrap();
    bytes[700] ^= 0x20;
    fs::write(l.blob_path(victim), &bytes).unwrap();
    let archive = t.path().join("bad.tar");
    tar_dir(&l.dir, &archive);
    for p in [&l.dir, &archive] {
        let o = image::open(p, &amd64()).unwrap();
        let e = read_blob(&*o.source, &o.images[0].layers[1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(e.to_string().contains(victim), "{e}");
        // An export of it fails and leaves nothing behind.
        let out = t.path().join("out");
        assert!(matches!(
            image::write_oci_layout(&out, &o.images, &*o.source),
            Err(Error::DataLoss(_))
        ));
        let tarball = t.path().join("out.tar");
        assert!(matches!(
            image::write_docker_archive(&tarball, &o.images, &*o.source),
            Err(Error::DataLoss(_))
        ));
        let left: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !left
                .iter()
                .any(|n| n.starts_with("out") || n.starts_with(".out")),
            "{left:?}"
        );
    }

    // A corrupted manifest: open fails naming it and the image.
    let mut m = fs::read(l.blob_path(&gz.manifest)).unwrap();
    let at = m.iter().position(|&c| c == b'2').unwrap();
    m[at] = b'3';
    fs::write(l.blob_path(&gz.manifest), &m).unwrap();
    match image::open(&l.dir, &amd64()) {
        Err(Error::DataLoss(msg)) => {
            assert!(msg.contains(&gz.manifest) && msg.contains("gz"), "{msg}")
        }
        other => panic!("{:?}", other.map(|o| o.images)),
    }

    // Malformed JSON is InvalidArgument naming the file.
    fs::write(l.dir.join("index.json"), b"{\"manifests\": [").unwrap();
    match image::open(&l.dir, &amd64()) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("index.json"), "{msg}"),
        other => panic!("{:?}", other.map(|o| o.images)),
    }
    let bad = b"{\"schemaVersion\": 2, \"config\": ";
    let d = l.blob(bad);
    l.index(vec![
        json!({"mediaType": OCI_MANIFEST, "digest": d, "size": bad.len(),
        "annotations": {REF_NAME: "broken"}}),
    ]);
    match image::open(&l.dir, &amd64()) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains(&d), "{msg}"),
        other => panic!("{:?}", other.map(|o| o.images)),
    }
    // A missing layer is NotFound.
    let (l2, p2, _) = two_images(&t.path().join("layout2"));
    fs::remove_file(l2.blob_path(&p2.layers[0])).unwrap();
    assert!(matches!(
        image::open(&l2.dir, &amd64()),
        Err(Error::NotFound(_))
    ));
}

/// The tool, or a failure naming the script that installs it.
fn tool(name: &str) -> &str {
    let ok = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{name} is not installed: run `bash .ci/deps` (it installs skopeo and umoci)"
    );
    name
}

fn skopeo_layers(reference: &str) -> Vec<String> {
    let out = Command::new(tool("skopeo"))
        .args(["inspect", reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn umoci_unpack(layout: &Path, name: &str, bundle: &Path) {
    // As root (CI) umoci unpacks as it would for a runtime; else rootless.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut cmd = Command::new(tool("umoci"));
    cmd.arg("unpack");
    if !root {
        cmd.arg("--rootless");
    }
    let out = cmd
        .arg("--image")
        .arg(format!("{}:{name}", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Same images, digests and bytes.
fn assert_same(a: &image::Opened, b: &image::Opened, manifests: bool) {
    assert_eq!(a.images.len(), b.images.len());
    for (x, y) in a.images.iter().zip(&b.images) {
        assert_eq!(x.name, y.name);
        if manifests {
            assert_eq!(x.manifest, y.manifest);
        }
        assert_eq!(x.config, y.config);
        assert_eq!(layer_digests(x), layer_digests(y));
        for (lx, ly) in x.layers.iter().zip(&y.layers) {
            assert_eq!(lx.size, ly.size);
            assert_eq!(
                read_blob(&*a.source, lx).unwrap(),
                read_blob(&*b.source, ly).unwrap()
            );
        }
    }
}

#[test]
fn export_round_trips_and_real_tools_accept_it() {
    let t = tempfile::tempdir().unwrap();
    let (l, plain, gz) = two_images(&t.path().join("layout"));
    let o = image::open(&l.dir, &amd64()).unwrap();

    let oci = t.path().join("oci-out");
    image::write_oci_layout(&oci, &o.images, &*o.source).unwrap();
    let back = image::open(&oci, &amd64()).unwrap();
    assert_same(&o, &back, true);
    assert!(matches!(
        image::write_oci_layout(&oci, &o.images, &*o.source),
        Err(Error::AlreadyExists(_))
    ));

    let docker = t.path().join("docker-out.tar");
    image::write_docker_archive(&docker, &o.images, &*o.source).unwrap();
    let back = image::open(&docker, &amd64()).unwrap();
    assert_eq!(back.format, Format::DockerArchive);
    assert_same(&o, &back, true);

    // skopeo: the OCI export by name; the docker-archive by index (docker
    // reports uncompressed layers, i.e. the config's diff_ids).
    assert_eq!(
        skopeo_layers(&format!("oci:{}:plain", oci.display())),
        plain.layers
    );
    assert_eq!(
        skopeo_layers(&format!("oci:{}:gz", oci.display())),
        gz.layers
    );
    assert_eq!(
        skopeo_layers(&format!("docker-archive:{}:@0", docker.display())),
        plain.diff_ids
    );
    assert_eq!(
        skopeo_layers(&format!("docker-archive:{}:@1", docker.display())),
        gz.diff_ids
    );

    for name in ["plain", "gz"] {
        let bundle = t.path().join(format!("bundle-{name}"));
        umoci_unpack(&oci, name, &bundle);
        assert_eq!(
            fs::read(bundle.join("rootfs/app/main")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
    }

    // A multi-platform input exports the chosen platform only.
    let (ml, _, b) = multi_platform(&t.path().join("multi"));
    let arm = Platform::parse("linux/arm64").unwrap();
    let m = image::open(&ml.dir, &arm).unwrap();
    let out = t.path().join("multi-out");
    fs::create_dir(&out).unwrap(); // an empty directory is replaced
    image::write_oci_layout(&out, &m.images, &*m.source).unwrap();
    assert_eq!(
        skopeo_layers(&format!("oci:{}:multi", out.display())),
        b.layers
    );
    let back = image::open(&out, &amd64());
    assert!(
        matches!(back, Err(Error::NotFound(_))),
        "only arm64 was exported"
    );
    assert_same(&m, &image::open(&out, &arm).unwrap(), true);
}

/// Images that had no manifest (legacy docker-archive) or no config (a lone
/// layer) get new ones on export, their blobs unchanged.
#[test]
fn export_of_manifestless_images() {
    let t = tempfile::tempdir().unwrap();
    let tar = layer_tar(&[("etc/motd", b"hi\n")]);
    let layer = t.path().join("one.tar.gz");
    fs::write(&layer, gzip(&tar)).unwrap();
    let o = image::open(&layer, &amd64()).unwrap();

    let oci = t.path().join("from-layer");
    image::write_oci_layout(&oci, &o.images, &*o.source).unwrap();
    let back = image::open(&oci, &amd64()).unwrap();
    assert_eq!(layer_digests(&back.images[0]), layer_digests(&o.images[0]));
    assert_eq!(back.images[0].name, "one.tar.gz");
    let cfg = image::read_json_blob(
        &*back.source,
        back.images[0].config.as_ref().unwrap(),
        "config",
        "x",
    )
    .unwrap();
    let cfg: Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"][0], json!(sha(&tar)));
    assert_eq!(
        skopeo_layers(&format!("oci:{}:one.tar.gz", oci.display())),
        layer_digests(&o.images[0])
    );
    umoci_unpack(&oci, "one.tar.gz", &t.path().join("bundle"));
    assert_eq!(
        fs::read(t.path().join("bundle/rootfs/etc/motd")).unwrap(),
        b"hi\n"
    );

    // Legacy docker-archive → docker-archive and OCI layout.
    let docker = t.path().join("from-layer.tar");
    image::write_docker_archive(&docker, &o.images, &*o.source).unwrap();
    let d = image::open(&docker, &amd64()).unwrap();
    assert_eq!(layer_digests(&d.images[0]), layer_digests(&o.images[0]));
    assert_eq!(
        skopeo_layers(&format!("docker-archive:{}", docker.display())),
        [sha(&tar)]
    );
}

/// A real image made by umoci, when the corpus is on this machine.
#[test]
fn corpus_debian_if_present() {
    let dir = Path::new("/var/tmp/strata-corpus/images/debian");
    if !dir.join("index.json").exists() {
        println!(
            "note: {} is absent (no corpus here): skipping this test",
            dir.display()
        );
        return;
    }
    let o = image::open(dir, &amd64()).unwrap();
    assert_eq!(o.format, Format::OciLayout);
    assert_eq!(o.images.len(), 1);
    let img = &o.images[0];
    assert!(img.manifest.is_some() && img.config.is_some());
    assert!(!img.layers.is_empty());
    for l in &img.layers {
        let n = std::io::copy(&mut o.source.open(l).unwrap(), &mut std::io::sink()).unwrap();
        assert_eq!(n, l.size, "{}", l.digest);
    }
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("debian");
    image::write_oci_layout(&out, &o.images, &*o.source).unwrap();
    let back = image::open(&out, &amd64()).unwrap();
    assert_eq!(back.images, o.images);
    assert_eq!(
        skopeo_layers(&format!("oci:{}:{}", out.display(), img.name)),
        layer_digests(img)
    );
}
