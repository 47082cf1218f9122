//! `strata import`, `strata images` and `strata export` through the real
//! binary against a `strata serve` child: images built here by hand (OCI
//! layouts with plain and gzip layers, a legacy docker-archive, a lone layer
//! file), every figure the commands print checked against one computed here
//! from the bytes written, exports read back blob by blob and handed to
//! skopeo and umoci.

mod common;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const RECORD_TYPE: &str = "application/vnd.strata.image.v1+json";

// ---------------------------------------------------------------------------
// Building inputs

/// sha256 with the `sha2` crate, not strata's own hasher.
fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex_str(&Sha256::digest(b)))
}

fn hex_str(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

use common::text;

/// One layer: its files, and whether it is stored gzipped.
struct LayerSpec {
    files: Vec<(String, Vec<u8>)>,
    gz: bool,
}

fn layer(files: &[(&str, Vec<u8>)], gz: bool) -> LayerSpec {
    LayerSpec {
        files: files
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect(),
        gz,
    }
}

/// A layer tar of `files`, deterministic.
fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
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

/// gzip by flate2 (zlib-rs): strata may or may not replay it; either is fine here.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// One layer as written: its blob digest and size, and its tar.
#[derive(Clone, Debug)]
struct BuiltLayer {
    digest: String,
    size: u64,
    tar_size: u64,
    diff_id: String,
}

/// What was written for one image: everything the checks compare against.
#[derive(Clone, Debug)]
struct Built {
    manifest: String,
    manifest_size: u64,
    config: String,
    config_size: u64,
    layers: Vec<BuiltLayer>,
    /// Files of the unpacked image (later layers win).
    files: BTreeMap<String, Vec<u8>>,
}

impl Built {
    /// Distinct blobs (digest → size): manifest, config, layers.
    fn blobs(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        m.insert(self.manifest.clone(), self.manifest_size);
        m.insert(self.config.clone(), self.config_size);
        for l in &self.layers {
            m.insert(l.digest.clone(), l.size);
        }
        m
    }

    fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }

    fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
}

/// An OCI image layout of one image, written by hand.
struct Layout {
    dir: PathBuf,
    built: Built,
}

impl Layout {
    /// `ref_name`: the index entry's `org.opencontainers.image.ref.name`.
    fn new(dir: PathBuf, layers: &[LayerSpec], ref_name: Option<&str>) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let blob = |data: &[u8]| {
            let d = sha(data);
            fs::write(dir.join("blobs/sha256").join(hex(&d)), data).unwrap();
            d
        };
        let mut built_layers = Vec::new();
        let mut files = BTreeMap::new();
        let mut descs = Vec::new();
        for l in layers {
            let tar = tar_of(&l.files);
            let bytes = if l.gz { gzip(&tar) } else { tar.clone() };
            let d = blob(&bytes);
            descs.push(json!({
                "mediaType": if l.gz { LAYER_GZIP } else { LAYER_TAR },
                "digest": d, "size": bytes.len(),
            }));
            built_layers.push(BuiltLayer {
                digest: d,
                size: bytes.len() as u64,
                tar_size: tar.len() as u64,
                diff_id: sha(&tar),
            });
            for (n, c) in &l.files {
                files.insert(n.clone(), c.clone());
            }
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers",
                "diff_ids": built_layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_d = blob(&config);
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_d, "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        let manifest_d = blob(&manifest);
        let mut e =
            json!({"mediaType": OCI_MANIFEST, "digest": manifest_d, "size": manifest.len()});
        if let Some(n) = ref_name {
            e["annotations"] = json!({ REF_NAME: n });
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e]});
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        Layout {
            built: Built {
                manifest: manifest_d,
                manifest_size: manifest.len() as u64,
                config: config_d,
                config_size: config.len() as u64,
                layers: built_layers,
                files,
            },
            dir,
        }
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex(digest))
    }
}

/// The layers two images share and the ones they do not.
fn base() -> LayerSpec {
    layer(
        &[
            ("etc/os-release", b"ID=test\nVERSION_ID=1\n".to_vec()),
            ("bin/sh", text(1, 6000)),
        ],
        false,
    )
}

fn libs() -> LayerSpec {
    layer(&[("usr/lib/libx.so", text(2, 20_000))], true)
}

// ---------------------------------------------------------------------------
// The daemon and the CLI

use common::serve_child::ServeChild as Daemon;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One import result: from a text line or a --json entry.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    name: String,
    manifest: String,
    pushed: u64,
    already: u64,
    new_bytes: u64,
}

/// Parses `NAME  MANIFEST  N pushed, M already stored  NEW-BYTES` lines.
fn text_rows(out: &str) -> Vec<Row> {
    out.lines()
        .map(|line| {
            let f: Vec<&str> = line.split("  ").collect();
            assert_eq!(f.len(), 4, "{line:?}");
            let counts: Vec<&str> = f[2].split(' ').collect();
            assert!(
                counts.len() == 5
                    && counts[1] == "pushed,"
                    && counts[3] == "already"
                    && counts[4] == "stored",
                "{line:?}"
            );
            Row {
                name: f[0].into(),
                manifest: f[1].into(),
                pushed: counts[0].parse().unwrap(),
                already: counts[2].parse().unwrap(),
                new_bytes: f[3].parse().unwrap(),
            }
        })
        .collect()
}

fn json_rows(v: &Value) -> Vec<Row> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| Row {
            name: e["name"].as_str().unwrap().into(),
            manifest: e["manifest"].as_str().unwrap_or("-").into(),
            pushed: e["pushed"].as_u64().unwrap(),
            already: e["already_stored"].as_u64().unwrap(),
            new_bytes: e["new_bytes"].as_u64().unwrap(),
        })
        .collect()
}

fn import(d: &Daemon, ns: &str, input: &Path, extra: &[&str]) -> Vec<Row> {
    let mut args = vec!["import".to_string(), "-n".into(), ns.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(input.to_str().unwrap().into());
    text_rows(&d.ok(&args))
}

fn import_json(d: &Daemon, ns: &str, input: &Path) -> Vec<Row> {
    json_rows(&d.json(&["import", "--json", "-n", ns, input.to_str().unwrap()]))
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
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Layers"]
        .as_array()
        .unwrap_or_else(|| panic!("{v:#}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// `umoci unpack`: as root (CI) as for a runtime, else `--rootless`.
fn umoci_unpack(layout: &Path, name: &str, bundle: &Path) {
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
        stderr(&out)
    );
}

/// Reads an exported OCI layout by hand: every blob file hashes to its
/// name; index.json's entry for `name`, its manifest's config and layers.
/// Returns (manifest digest, config digest, layer digests, blob digests).
fn read_export(dir: &Path, name: &str) -> (String, String, Vec<String>, BTreeSet<String>) {
    let mut blobs = BTreeSet::new();
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let d = format!("sha256:{}", p.file_name().unwrap().to_str().unwrap());
        assert_eq!(sha(&fs::read(&p).unwrap()), d, "{}", p.display());
        blobs.insert(d);
    }
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index:#}");
    assert_eq!(
        entries[0]["annotations"][REF_NAME],
        json!(name),
        "{index:#}"
    );
    let manifest = entries[0]["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| fs::read(dir.join("blobs/sha256").join(hex(d))).unwrap();
    let m: Value = serde_json::from_slice(&blob(&manifest)).unwrap();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    let layers = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (manifest, config, layers, blobs)
}

fn listing(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let content = if p.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                content,
            )
        })
        .collect()
}

/// The names in a directory (contents not compared: the daemon's log is there).
fn names(dir: &Path) -> BTreeSet<String> {
    listing(dir).into_keys().collect()
}

// ---------------------------------------------------------------------------
// Tests

/// Two images sharing a plain base layer and a gzip layer: what import says
/// it pushed, and every figure `strata images` gives for them.
#[test]
fn import_counts_and_images_figures() {
    let d = Daemon::start();
    let alpha = Layout::new(
        d.dir().join("alpha"),
        &[base(), libs(), layer(&[("app/alpha", text(3, 9000))], true)],
        Some("latest"),
    );
    let beta = Layout::new(
        d.dir().join("beta"),
        &[base(), libs(), layer(&[("app/beta", text(4, 4000))], false)],
        Some("example.com/beta:1"),
    );
    let (a, b) = (&alpha.built, &beta.built);
    assert_eq!(a.layers[0].digest, b.layers[0].digest);
    assert_eq!(a.layers[1].digest, b.layers[1].digest);

    // First image: all 5 blobs new. A tag-only ref name gets the dir's name.
    let r = import(&d, "t", &alpha.dir, &[]);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].name.as_str(),
            r[0].manifest.as_str(),
            r[0].pushed,
            r[0].already
        ),
        ("alpha:latest", a.manifest.as_str(), 5, 0)
    );
    // Bytes the store added: something, at most the input (plus the record's
    // few bytes): the layers are text and strata compresses what it keeps.
    let input: u64 = a.blobs().values().sum();
    assert!(
        r[0].new_bytes > 0 && r[0].new_bytes <= input + 4096,
        "{r:?} for {input} bytes"
    );

    // Second: the two shared layers are already stored.
    let r = import_json(&d, "t", &beta.dir);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].name.as_str(),
            r[0].manifest.as_str(),
            r[0].pushed,
            r[0].already
        ),
        ("example.com/beta:1", b.manifest.as_str(), 3, 2)
    );
    assert!(r[0].new_bytes > 0, "{r:?}");

    // Again: nothing pushed, nothing added; text and --json agree.
    let again = Row {
        name: "alpha:latest".into(),
        manifest: a.manifest.clone(),
        pushed: 0,
        already: 5,
        new_bytes: 0,
    };
    assert_eq!(import(&d, "t", &alpha.dir, &[]), [again]);
    let again = Row {
        name: "alpha:latest".into(),
        manifest: a.manifest.clone(),
        pushed: 0,
        already: 5,
        new_bytes: 0,
    };
    assert_eq!(import_json(&d, "t", &alpha.dir), [again]);

    // `strata images --json`: one entry per image, figures computed here from
    // the bytes written, extra bytes from `ls`.
    let imgs = d.images("t");
    assert_eq!(
        imgs.keys().collect::<Vec<_>>(),
        ["alpha:latest", "example.com/beta:1"]
    );
    let ls = d.ls("t");
    let shared_plain = a.layers[0].tar_size + a.layers[1].tar_size;
    for (name, built) in [("alpha:latest", a), ("example.com/beta:1", b)] {
        let e = &imgs[name];
        let blobs = built.blobs();
        let size: u64 = blobs.values().sum();
        let plain: u64 = built.layers.iter().map(|l| l.tar_size).sum();
        let extra: u64 = blobs
            .keys()
            .map(|dg| ls[dg]["extra_bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(e["manifest"], json!(built.manifest), "{name}: {e:#}");
        assert_eq!(e["layers"], json!(built.layers.len()), "{name}: {e:#}");
        assert_eq!(e["size"], json!(size), "{name}: {e:#}");
        assert_eq!(e["plain_size"], json!(plain), "{name}: {e:#}");
        assert_eq!(
            e["shared_layer_bytes"],
            json!(shared_plain),
            "{name}: {e:#}"
        );
        assert_eq!(e["extra_bytes"], json!(extra), "{name}: {e:#}");
        assert_eq!(e["missing_blobs"], json!(0), "{name}: {e:#}");
        assert_eq!(e["platform"], json!("linux/amd64"), "{name}: {e:#}");
        // The record it names is the one blob of the record type for it.
        let rec = &ls[e["record"].as_str().unwrap()];
        assert_eq!(rec["media_type"], json!(RECORD_TYPE), "{rec:#}");
        assert_eq!(rec["labels"]["strata.image.name"], json!(name), "{rec:#}");
    }
    // Every blob of both images is stored, plus one record each, no more.
    let mut want: BTreeSet<String> = a.blobs().into_keys().chain(b.blobs().into_keys()).collect();
    for e in imgs.values() {
        want.insert(e["record"].as_str().unwrap().to_string());
    }
    assert_eq!(ls.keys().cloned().collect::<BTreeSet<_>>(), want);

    // The table names both, under a header.
    let table = d.ok(&["images", "-n", "t"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    for name in ["alpha:latest", "example.com/beta:1"] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.split_whitespace().next() == Some(name))
                .count(),
            1,
            "{table}"
        );
    }

    // --name overrides the name (in another namespace: no sharing there, so
    // everything is pushed again).
    let r = import(&d, "named", &alpha.dir, &["--name", "mine/alpha:v2"]);
    assert_eq!(
        (r[0].name.as_str(), r[0].pushed, r[0].already),
        ("mine/alpha:v2", 5, 0)
    );
    let named = d.images("named");
    assert_eq!(named.keys().collect::<Vec<_>>(), ["mine/alpha:v2"]);
    assert_eq!(named["mine/alpha:v2"]["shared_layer_bytes"], json!(0));
    // The other namespace did not change.
    assert_eq!(d.images("t").len(), 2);
}

/// Importing another image under an existing name replaces the old one.
#[test]
fn reimport_under_a_name_replaces_the_image() {
    let d = Daemon::start();
    let one = Layout::new(d.dir().join("one"), &[base()], Some("app:1"));
    let two = Layout::new(
        d.dir().join("two"),
        &[base(), layer(&[("app/two", text(5, 3000))], true)],
        Some("other"),
    );
    import(&d, "ns", &one.dir, &[]);
    let r = import(&d, "ns", &two.dir, &["--name", "app:1"]);
    assert_eq!(
        (
            r[0].name.as_str(),
            r[0].manifest.as_str(),
            r[0].pushed,
            r[0].already
        ),
        ("app:1", two.built.manifest.as_str(), 3, 1)
    );
    let imgs = d.images("ns");
    assert_eq!(imgs.keys().collect::<Vec<_>>(), ["app:1"], "{imgs:#?}");
    let e = &imgs["app:1"];
    assert_eq!(e["manifest"], json!(two.built.manifest));
    assert_eq!(e["layers"], json!(2));
    // The old record is gone: one record blob in the namespace.
    let records: Vec<_> = d
        .ls("ns")
        .into_values()
        .filter(|b| b["media_type"] == json!(RECORD_TYPE))
        .collect();
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["digest"], e["record"]);
    // Back to the first image under its own name: replaced again, although
    // its old record blob was deleted and is now pushed anew.
    let r = import(&d, "ns", &one.dir, &[]);
    assert_eq!((r[0].name.as_str(), r[0].pushed), ("app:1", 0));
    let imgs = d.images("ns");
    assert_eq!(imgs.keys().collect::<Vec<_>>(), ["app:1"], "{imgs:#?}");
    assert_eq!(imgs["app:1"]["manifest"], json!(one.built.manifest));
    assert_eq!(imgs["app:1"]["layers"], json!(1));

    // Once more the second, then export: what export gives is the new image.
    import(&d, "ns", &two.dir, &["--name", "app:1"]);
    let imgs = d.images("ns");
    assert_eq!(imgs.keys().collect::<Vec<_>>(), ["app:1"], "{imgs:#?}");
    assert_eq!(imgs["app:1"]["manifest"], json!(two.built.manifest));
    let out = d.dir().join("out");
    d.ok(&["export", "-n", "ns", "app:1", out.to_str().unwrap()]);
    let (m, _, layers, _) = read_export(&out, "app:1");
    assert_eq!(m, two.built.manifest);
    assert_eq!(layers, two.built.layer_digests());
}

/// `strata export`: an OCI layout with the original digests that skopeo and
/// umoci accept and that imports back to the same image; a docker-archive
/// skopeo reads; refusals for an unknown name and a non-empty directory.
#[test]
fn export_round_trips_and_real_tools_accept_it() {
    let d = Daemon::start();
    let alpha = Layout::new(
        d.dir().join("alpha"),
        &[base(), libs(), layer(&[("app/alpha", text(3, 9000))], true)],
        Some("latest"),
    );
    let a = &alpha.built;
    import(&d, "x", &alpha.dir, &[]);

    let out = d.dir().join("exported");
    let stdout = d.ok(&["export", "-n", "x", "alpha:latest", out.to_str().unwrap()]);
    let (manifest, config, layers, blobs) = read_export(&out, "alpha:latest");
    assert_eq!(manifest, a.manifest, "{stdout}");
    assert_eq!(config, a.config);
    assert_eq!(layers, a.layer_digests());
    assert_eq!(blobs, a.blobs().into_keys().collect::<BTreeSet<_>>());
    // Byte for byte the files written (sha256 above already implies it).
    for dg in a.blobs().keys() {
        assert!(
            fs::read(out.join("blobs/sha256").join(hex(dg))).unwrap()
                == fs::read(alpha.blob_path(dg)).unwrap(),
            "{dg}"
        );
    }

    assert_eq!(
        skopeo_layers(&format!("oci:{}:alpha:latest", out.display())),
        a.layer_digests()
    );
    let bundle = d.dir().join("bundle");
    umoci_unpack(&out, "alpha:latest", &bundle);
    for (name, content) in &a.files {
        let got = fs::read(bundle.join("rootfs").join(name)).unwrap();
        assert!(got == *content, "rootfs/{name}: {} bytes", got.len());
    }

    // Re-imported: the same manifest, nothing to push, nothing added.
    assert_eq!(
        import(&d, "x", &out, &[]),
        [Row {
            name: "alpha:latest".into(),
            manifest: a.manifest.clone(),
            pushed: 0,
            already: 5,
            new_bytes: 0,
        }]
    );
    assert_eq!(d.images("x").len(), 1);

    // docker-archive: skopeo reports the uncompressed layers (diff_ids).
    let tarball = d.dir().join("alpha-docker.tar");
    d.ok(&[
        "export",
        "-n",
        "x",
        "--format",
        "docker-archive",
        "alpha:latest",
        tarball.to_str().unwrap(),
    ]);
    assert_eq!(
        skopeo_layers(&format!("docker-archive:{}", tarball.display())),
        a.diff_ids()
    );

    // An unknown name: exit 1, naming it and where to look.
    let missing = d.dir().join("never");
    let o = d.run(&[
        "export",
        "-n",
        "x",
        "no/such:image",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no/such:image") && stderr(&o).contains("strata images"),
        "{}",
        stderr(&o)
    );
    assert!(!missing.exists());
    // Names are per namespace.
    let o = d.run(&["export", "alpha:latest", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!missing.exists());

    // A non-empty directory: refused, left as it was, nothing beside it.
    let busy = d.dir().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep.txt"), b"mine\n").unwrap();
    let before = (listing(&busy), names(d.dir()));
    let o = d.run(&["export", "-n", "x", "alpha:latest", busy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("busy"), "{}", stderr(&o));
    assert_eq!((listing(&busy), names(d.dir())), before);
}

/// A legacy docker-archive (`<id>/layer.tar`, manifest.json) and a lone gzip
/// layer file: imported, listed, exported to OCI and docker-archive.
#[test]
fn docker_archive_and_layer_file_import_and_export() {
    let d = Daemon::start();
    let l1 = tar_of(&[("etc/hostname".into(), b"box\n".to_vec())]);
    let l2 = tar_of(&[("usr/bin/tool".into(), text(6, 7000))]);
    let diff_ids = [sha(&l1), sha(&l2)];
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_d = sha(&config);
    let archive = d.dir().join("legacy.tar");
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
            "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"],
        }]);
        add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        b.finish().unwrap();
    }
    let tool_tar = tar_of(&[("opt/tool/README".into(), text(7, 5000))]);
    let tool_gz = gzip(&tool_tar);
    let lone = d.dir().join("tool.tar.gz");
    fs::write(&lone, &tool_gz).unwrap();

    // Both in one command: a line each. Legacy archives have no manifest (-).
    let out = d.ok(&[
        "import",
        "-n",
        "d",
        archive.to_str().unwrap(),
        lone.to_str().unwrap(),
    ]);
    let rows = text_rows(&out);
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(
        (
            rows[0].name.as_str(),
            rows[0].manifest.as_str(),
            rows[0].pushed,
            rows[0].already
        ),
        ("example.com/legacy:1.0", "-", 3, 0)
    );
    // (Its name is checked last: the rest holds whatever it is called.)
    assert_eq!(
        (rows[1].manifest.as_str(), rows[1].pushed, rows[1].already),
        ("-", 1, 0)
    );
    let name = rows[1].name.as_str();

    let imgs = d.images("d");
    let legacy = &imgs["example.com/legacy:1.0"];
    assert_eq!(legacy["manifest"], Value::Null);
    assert_eq!(legacy["layers"], json!(2));
    assert_eq!(
        legacy["size"],
        json!(config.len() + l1.len() + l2.len()),
        "{legacy:#}"
    );
    assert_eq!(legacy["plain_size"], json!(l1.len() + l2.len()));
    assert_eq!(legacy["missing_blobs"], json!(0));
    let t = &imgs[name];
    assert_eq!(t["layers"], json!(1), "{t:#}");
    assert_eq!(t["size"], json!(tool_gz.len()), "{t:#}");
    assert_eq!(t["plain_size"], json!(tool_tar.len()), "{t:#}");

    // Legacy → OCI: a new manifest, config and layers unchanged.
    let oci = d.dir().join("legacy-oci");
    d.ok(&[
        "export",
        "-n",
        "d",
        "example.com/legacy:1.0",
        oci.to_str().unwrap(),
    ]);
    let (_, config2, layers, _) = read_export(&oci, "example.com/legacy:1.0");
    assert_eq!(config2, config_d);
    assert_eq!(layers, diff_ids);
    assert_eq!(
        skopeo_layers(&format!("oci:{}:example.com/legacy:1.0", oci.display())),
        diff_ids
    );
    let docker = d.dir().join("legacy-again.tar");
    d.ok(&[
        "export",
        "-n",
        "d",
        "--format",
        "docker-archive",
        "example.com/legacy:1.0",
        docker.to_str().unwrap(),
    ]);
    assert_eq!(
        skopeo_layers(&format!(
            "docker-archive:{}:example.com/legacy:1.0",
            docker.display()
        )),
        diff_ids
    );

    // The lone layer → OCI: its blob unchanged, a config made for it.
    let oci = d.dir().join("tool-oci");
    d.ok(&["export", "-n", "d", name, oci.to_str().unwrap()]);
    let (_, config, layers, _) = read_export(&oci, name);
    assert_eq!(layers, [sha(&tool_gz)]);
    let cfg: Value =
        serde_json::from_slice(&fs::read(oci.join("blobs/sha256").join(hex(&config))).unwrap())
            .unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"], json!([sha(&tool_tar)]));
    assert_eq!(
        skopeo_layers(&format!("oci:{}:{name}", oci.display())),
        [sha(&tool_gz)]
    );
    let bundle = d.dir().join("tool-bundle");
    umoci_unpack(&oci, name, &bundle);
    assert!(fs::read(bundle.join("rootfs/opt/tool/README")).unwrap() == text(7, 5000));
    let docker = d.dir().join("tool-docker.tar");
    d.ok(&[
        "export",
        "-n",
        "d",
        "--format",
        "docker-archive",
        name,
        docker.to_str().unwrap(),
    ]);
    assert_eq!(
        skopeo_layers(&format!("docker-archive:{}", docker.display())),
        [sha(&tool_tar)]
    );

    // A lone layer is named by its file name, as `image::open` names it and
    // the module doc says: "tool.tar.gz" is no tag-only ref name to qualify.
    assert_eq!(name, "tool.tar.gz", "{out}");
}

/// A layer whose bytes do not match its digest fails the import naming the
/// digest; the daemon keeps nothing of it and records no image.
#[test]
fn a_corrupt_layer_fails_the_import_and_is_not_stored() {
    let d = Daemon::start();
    // One layout with the plain layer flipped, one with the gzip layer.
    let mut msgs = Vec::new();
    for (i, victim) in [0usize, 1].into_iter().enumerate() {
        let l = Layout::new(
            d.dir().join(format!("bad{i}")),
            &[base(), layer(&[("app/x", text(8, 8000))], true)],
            Some("bad:1"),
        );
        let dg = l.built.layers[victim].digest.clone();
        let path = l.blob_path(&dg);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        fs::write(&path, &bytes).unwrap();

        let ns = format!("bad{i}");
        let o = d.run(&["import", "-n", &ns, l.dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let ls = d.ls(&ns);
        assert!(!ls.contains_key(&dg), "layer {victim} stored: {ls:#?}");
        // The corrupt bytes under any digest are not there either.
        assert!(!ls.contains_key(&sha(&bytes)), "{ls:#?}");
        assert!(d.images(&ns).is_empty(), "{ns}: an image was recorded");
        msgs.push((dg, stderr(&o)));
    }
    // Naming the digest, and saying what is wrong with it (the reader's
    // error, not the daemon's refusal of the aborted push). Checked after
    // both, so the storage checks above run for both.
    for (dg, msg) in msgs {
        assert!(msg.contains(&dg), "{dg}: {msg}");
        assert!(msg.contains("does not match its digest"), "{dg}: {msg}");
    }
}

/// A layer removed from the store (`strata rm`): `images` counts it missing,
/// and export fails naming it, leaving no directory or file behind.
#[test]
fn a_removed_layer_is_missing_and_export_leaves_nothing() {
    let d = Daemon::start();
    let l = Layout::new(
        d.dir().join("img"),
        &[base(), layer(&[("app/y", text(9, 3000))], true)],
        Some("gone:1"),
    );
    import(&d, "m", &l.dir, &[]);
    let victim = &l.built.layers[1];
    d.ok(&["rm", "-n", "m", &victim.digest]);
    let e = &d.images("m")["gone:1"];
    assert_eq!(e["missing_blobs"], json!(1), "{e:#}");
    // What is left: manifest, config and the base layer.
    let size = l.built.manifest_size + l.built.config_size + l.built.layers[0].size;
    assert_eq!(e["size"], json!(size), "{e:#}");
    assert_eq!(e["plain_size"], json!(l.built.layers[0].tar_size), "{e:#}");
    let table = d.ok(&["images", "-n", "m"]);
    assert!(table.contains("1 blobs missing"), "{table}");

    let before = names(d.dir());
    for format in ["oci", "docker-archive"] {
        let dest = d.dir().join(format!("out-{format}"));
        let o = d.run(&[
            "export",
            "-n",
            "m",
            "--format",
            format,
            "gone:1",
            dest.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(&victim.digest), "{}", stderr(&o));
        assert_eq!(names(d.dir()), before, "{format}: something was left");
    }
}

/// `strata analyze` with --socket reads the images the daemon holds and
/// reports what the same analysis of the files reports; STRATA_SOCKET in
/// the environment alone leaves it reading files.
#[test]
fn analyze_against_the_daemon_matches_the_files() {
    let d = Daemon::start();
    let alpha = Layout::new(
        d.dir().join("alpha"),
        &[base(), libs(), layer(&[("app/alpha", text(3, 9000))], true)],
        Some("latest"),
    );
    let beta = Layout::new(
        d.dir().join("beta"),
        &[base(), layer(&[("app/beta", text(4, 4000))], false)],
        Some("example.com/beta:1"),
    );
    import(&d, "an", &alpha.dir, &[]);
    import(&d, "an", &beta.dir, &[]);
    let json = |o: Output| -> Value {
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let online = json(d.run(&["analyze", "--json", "-n", "an"]));
    let files = json(
        Command::new(BIN)
            .arg("analyze")
            .arg("--json")
            .arg(&alpha.dir)
            .arg(&beta.dir)
            .env("STRATA_SOCKET", &d.sock)
            .output()
            .unwrap(),
    );
    assert_eq!(online["source"], "daemon");
    assert_eq!(files["source"], "files");
    // Per image, by name: the same sizes and the same unique and shared bytes.
    let by_name = |v: &Value| -> BTreeMap<String, Value> {
        v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let mut i = i.clone();
                i.as_object_mut().unwrap().remove("origin");
                (i["name"].as_str().unwrap().to_string(), i)
            })
            .collect()
    };
    let (on, off) = (by_name(&online), by_name(&files));
    assert_eq!(
        on.keys().collect::<Vec<_>>(),
        ["alpha:latest", "example.com/beta:1"]
    );
    for (name, i) in &on {
        // The files' report names the layout's tag-only image "latest".
        let f = off
            .get(name)
            .or_else(|| off.get("latest"))
            .unwrap_or_else(|| panic!("{name} not in {off:?}"));
        for k in [
            "layers",
            "compressed_bytes",
            "plain_bytes",
            "unique_bytes",
            "shared_bytes",
        ] {
            assert_eq!(i[k], f[k], "{name}: {k}");
        }
    }
    assert_eq!(
        online["settings"][0]["strata"]["total"]["bytes"],
        files["settings"][0]["strata"]["total"]["bytes"]
    );
    // `strata images --dedup` gives each held image the same chunk-level figures.
    let listed = json(d.run(&["images", "--dedup", "--json", "-n", "an"]));
    for img in listed.as_array().unwrap() {
        let name = img["name"].as_str().unwrap();
        for k in ["unique_bytes", "shared_bytes"] {
            assert_eq!(img[k], on[name][k], "{name}: {k}");
        }
    }
    let table = d.run(&["images", "--dedup", "-n", "an"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("UNIQUE"));
    // A name the daemon does not hold is refused, naming it.
    let o = d.run(&["analyze", "-n", "an", "nosuch:1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nosuch:1"), "{}", stderr(&o));
}
