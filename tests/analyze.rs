//! `strata analyze` against images built here (an OCI layout written by hand:
//! plain and gzip layers, a base layer shared by two images, the same base
//! gzipped in a third, a file present in two different layers, a layer
//! identical in two images), every figure checked against a computation of
//! its own (tar crate, sha256, fastcdc directly), the outputs of the real
//! binary against each other, and the predicted store size against what an
//! in-process daemon stores after a push of every blob.

mod common;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use strata::analyze::{self, Input, Report, Settings};
use strata::image::{self, Platform};
use strata::split::ChunkSizes;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn sha(b: &[u8]) -> String {
    strata::Digest::of(b).to_string()
}

fn layer_tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Text that compresses (so packs are not just the plain bytes).
fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "layer", "chunk", "strata", "image", "blob", "tar", "zstd", "pack",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 8) as usize].as_bytes());
        out.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out.truncate(n);
    out
}

/// A layer as pushed: its blob bytes, the tar inside, and its media type.
#[derive(Clone)]
struct Layer {
    blob: Vec<u8>,
    tar: Vec<u8>,
}

impl Layer {
    fn plain(tar: Vec<u8>) -> Layer {
        Layer {
            blob: tar.clone(),
            tar,
        }
    }
    fn gz(tar: Vec<u8>) -> Layer {
        Layer {
            blob: gzip(&tar),
            tar,
        }
    }
    fn is_gz(&self) -> bool {
        self.blob != self.tar
    }
}

/// What was written for one image, in push order: layers, config, manifest.
struct Built {
    name: String,
    layers: Vec<Layer>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl Built {
    fn blobs(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = self.layers.iter().map(|l| l.blob.clone()).collect();
        v.push(self.config.clone());
        v.push(self.manifest.clone());
        v
    }
}

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let d = sha(data);
    let p = dir
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    fs::write(p, data).unwrap();
    d
}

/// Writes an OCI layout of `images` (name, layers) and returns what it holds.
fn write_layout(dir: &Path, images: Vec<(&str, Vec<Layer>)>) -> Vec<Built> {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut built = Vec::new();
    let mut entries = Vec::new();
    for (name, layers) in images {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": [format!("IMAGE={name}")]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha(&l.tar)).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_d = write_blob(dir, &config);
        let descs: Vec<Value> = layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": if l.is_gz() { LAYER_GZIP } else { LAYER_TAR },
                    "digest": write_blob(dir, &l.blob), "size": l.blob.len(),
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_d, "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        let md = write_blob(dir, &manifest);
        entries.push(json!({
            "mediaType": OCI_MANIFEST, "digest": md, "size": manifest.len(),
            "annotations": {REF_NAME: name},
        }));
        built.push(Built {
            name: name.to_string(),
            layers,
            config,
            manifest,
        });
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    built
}

/// Three images: `one` = base + app, `two` = base + extra (gzip), `three` =
/// base gzipped (another digest, the same files) + app (the same blob as one's).
/// `app` holds a copy of a base file; `extra` a near copy of base's big file.
fn corpus(dir: &Path) -> Vec<Built> {
    let noise = |n, s| common::noise(n, s);
    let big = noise(700_000, 9);
    let mut near = big.clone();
    near[650_000] ^= 1;
    let base = layer_tar(&[
        ("etc/os-release", text(300, 1)),
        ("bin/tool", noise(9_000, 2)),
        ("usr/share/doc", text(200_000, 3)),
        ("usr/lib/big.so", big),
        ("etc/empty", Vec::new()),
    ]);
    let app = layer_tar(&[
        ("app/main", noise(12_000, 4)),
        ("app/tool-copy", noise(9_000, 2)),
        ("app/data", noise(400_000, 5)),
    ]);
    let extra = layer_tar(&[
        ("opt/notes", text(150_000, 6)),
        ("opt/big-patched.so", near),
        ("opt/small", noise(5_000, 7)),
    ]);
    write_layout(
        dir,
        vec![
            (
                "one",
                vec![Layer::plain(base.clone()), Layer::plain(app.clone())],
            ),
            ("two", vec![Layer::plain(base.clone()), Layer::gz(extra)]),
            ("three", vec![Layer::gz(base), Layer::plain(app)]),
        ],
    )
}

fn open_inputs(dir: &Path) -> Vec<Input> {
    let o = image::open(dir, &Platform::parse("linux/amd64").unwrap()).unwrap();
    o.images
        .into_iter()
        .map(|image| Input {
            image,
            source: o.source.clone(),
            origin: dir.display().to_string(),
        })
        .collect()
}

fn settings(sizes: &[&str], threads: usize) -> Settings {
    Settings {
        chunk_sizes: sizes
            .iter()
            .map(|s| ChunkSizes::parse(s).unwrap())
            .collect(),
        threads,
        ..Settings::default()
    }
}

/// The content units of one tar, found with the tar crate: every non-empty
/// file body, and the end-of-archive bytes (the splitter chunks them as data).
struct TarUnits {
    bodies: Vec<Vec<u8>>,
    trailer: Vec<u8>,
    literal: u64,
}

fn tar_units(t: &[u8]) -> TarUnits {
    let mut a = tar::Archive::new(t);
    let mut bodies = Vec::new();
    let mut end = 0u64;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let pos = e.raw_file_position();
        let size = e.size();
        end = pos + size.div_ceil(512) * 512;
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        if !body.is_empty() {
            bodies.push(body);
        }
    }
    let trailer = t[end as usize..].to_vec();
    let body_bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    TarUnits {
        literal: t.len() as u64 - body_bytes - trailer.len() as u64,
        bodies,
        trailer,
    }
}

/// Chunks of one stream by the fastcdc crate itself (sha256 → length).
fn cdc(data: &[u8], cs: ChunkSizes, out: &mut BTreeMap<String, u64>) {
    for c in fastcdc::v2020::FastCDC::new(data, cs.min, cs.avg, cs.max) {
        out.insert(sha(&data[c.offset..c.offset + c.length]), c.length as u64);
    }
}

/// Everything the report should say, computed independently.
struct Expected {
    compressed_total: u64,
    plain_total: u64,
    distinct_plain: u64,
    file_level: u64,
    chunk_level: u64,
    distinct_chunks: u64,
    image_compressed: Vec<u64>,
    image_plain: Vec<u64>,
    unique: Vec<u64>,
    shared: Vec<u64>,
    matrix: Vec<Vec<u64>>,
}

fn expected(built: &[Built], cs: ChunkSizes) -> Expected {
    let mut distinct: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for b in built {
        for blob in b.blobs() {
            distinct.insert(sha(&blob), blob);
        }
    }
    // The totals count each image's blobs (repeats included).
    let compressed_total = built
        .iter()
        .map(|b| b.blobs().iter().map(|x| x.len() as u64).sum::<u64>())
        .sum();
    // Distinct layers by digest; their tars, and the non-layer blobs as they are.
    let mut layers: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for b in built {
        for l in &b.layers {
            layers.insert(sha(&l.blob), l.tar.clone());
        }
    }
    let others: Vec<&Vec<u8>> = distinct
        .iter()
        .filter(|(d, _)| !layers.contains_key(*d))
        .map(|(_, b)| b)
        .collect();
    let other_bytes: u64 = others.iter().map(|b| b.len() as u64).sum();
    let distinct_plain = layers.values().map(|t| t.len() as u64).sum::<u64>() + other_bytes;
    let plain_total = built
        .iter()
        .map(|b| {
            let tars: u64 = b.layers.iter().map(|l| l.tar.len() as u64).sum();
            let layer_blobs: Vec<String> = b.layers.iter().map(|l| sha(&l.blob)).collect();
            let rest: u64 = b
                .blobs()
                .iter()
                .filter(|x| !layer_blobs.contains(&sha(x)))
                .map(|x| x.len() as u64)
                .sum();
            tars + rest
        })
        .sum();

    let mut files: BTreeMap<String, u64> = BTreeMap::new();
    let mut chunks: BTreeMap<String, u64> = BTreeMap::new();
    let mut literal = 0;
    for t in layers.values() {
        let u = tar_units(t);
        literal += u.literal;
        for body in u.bodies.iter().chain(std::iter::once(&u.trailer)) {
            files.insert(sha(body), body.len() as u64);
            cdc(body, cs, &mut chunks);
        }
    }
    for o in &others {
        files.insert(sha(o), o.len() as u64);
        cdc(o, cs, &mut chunks);
    }
    let file_level = files.values().sum::<u64>() + literal;
    let chunk_level = chunks.values().sum::<u64>() + literal;

    // Per image: the distinct chunks of its layers.
    let per_image: Vec<BTreeMap<String, u64>> = built
        .iter()
        .map(|b| {
            let mut m = BTreeMap::new();
            for l in &b.layers {
                let u = tar_units(&l.tar);
                for body in u.bodies.iter().chain(std::iter::once(&u.trailer)) {
                    cdc(body, cs, &mut m);
                }
            }
            m
        })
        .collect();
    let n = built.len();
    let matrix: Vec<Vec<u64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    per_image[i]
                        .iter()
                        .filter(|(h, _)| per_image[j].contains_key(*h))
                        .map(|(_, l)| l)
                        .sum()
                })
                .collect()
        })
        .collect();
    let in_others = |i: usize, h: &String| (0..n).any(|j| j != i && per_image[j].contains_key(h));
    let unique = (0..n)
        .map(|i| {
            per_image[i]
                .iter()
                .filter(|(h, _)| !in_others(i, h))
                .map(|(_, l)| l)
                .sum()
        })
        .collect();
    let shared = (0..n)
        .map(|i| {
            per_image[i]
                .iter()
                .filter(|(h, _)| in_others(i, h))
                .map(|(_, l)| l)
                .sum()
        })
        .collect();
    Expected {
        compressed_total,
        plain_total,
        distinct_plain,
        file_level,
        chunk_level,
        distinct_chunks: chunks.len() as u64,
        image_compressed: built
            .iter()
            .map(|b| b.blobs().iter().map(|x| x.len() as u64).sum())
            .collect(),
        image_plain: built
            .iter()
            .map(|b| b.layers.iter().map(|l| l.tar.len() as u64).sum())
            .collect(),
        unique,
        shared,
        matrix,
    }
}

fn check(r: &Report, k: usize, built: &[Built], e: &Expected) {
    let s = &r.settings[k];
    assert_eq!(s.compressed_total, e.compressed_total, "compressed total");
    assert_eq!(s.plain_total, e.plain_total, "plain total");
    assert_eq!(s.layer_level.bytes, e.distinct_plain, "layer level");
    assert_eq!(s.file_level.bytes, e.file_level, "file level");
    assert_eq!(s.chunk_level.bytes, e.chunk_level, "chunk level");
    assert_eq!(s.distinct_chunks, e.distinct_chunks, "distinct chunks");
    let ratio = |b: u64, t: u64| b as f64 / t as f64;
    assert_eq!(s.chunk_level.vs_plain, ratio(e.chunk_level, e.plain_total));
    assert_eq!(
        s.chunk_level.vs_compressed,
        ratio(e.chunk_level, e.compressed_total)
    );
    assert!(s.chunk_level.bytes < s.file_level.bytes);
    assert!(s.file_level.bytes < s.layer_level.bytes);
    if k == 0 {
        let names: Vec<&str> = r.images.iter().map(|i| i.name.as_str()).collect();
        let want: Vec<&str> = built.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, want);
        for (i, img) in r.images.iter().enumerate() {
            assert_eq!(img.compressed_bytes, e.image_compressed[i], "{}", img.name);
            assert_eq!(img.plain_bytes, e.image_plain[i], "{}", img.name);
            assert_eq!(img.unique_bytes, e.unique[i], "{}", img.name);
            assert_eq!(img.shared_bytes, e.shared[i], "{}", img.name);
            assert_eq!(img.layers, built[i].layers.len());
            assert_eq!(img.platform.as_deref(), Some("linux/amd64"));
        }
        assert_eq!(r.matrix, e.matrix);
    }
}

#[test]
fn figures_match_an_independent_count() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layout");
    let built = corpus(&dir);
    let sizes = ["16K/64K/256K", "4K/16K/64K"];
    let r = analyze::run(open_inputs(&dir), &settings(&sizes, 2)).unwrap();
    assert_eq!(r.settings.len(), 2);
    for (k, s) in sizes.iter().enumerate() {
        assert_eq!(r.settings[k].chunk_sizes, *s);
        check(
            &r,
            k,
            &built,
            &expected(&built, ChunkSizes::parse(s).unwrap()),
        );
    }
    // The same base gzipped shares every chunk with the plain one; the
    // near copy of big.so shares all but the chunk around its changed byte.
    assert!(r.matrix[0][2] > r.matrix[0][1]);
    assert_eq!(r.blobs, 12 - 2);
    assert_eq!(r.distinct_layers, 4);
    assert!(r.inflate_mb_per_s.unwrap() > 0.0);
    // Smaller chunks find more of the near copy.
    assert!(r.settings[1].chunk_level.bytes <= r.settings[0].chunk_level.bytes);
    // One worker or two: the same figures.
    let one = analyze::run(open_inputs(&dir), &settings(&sizes, 1)).unwrap();
    assert_eq!(one.matrix, r.matrix);
    for (a, b) in one.settings.iter().zip(&r.settings) {
        assert_eq!(a.chunk_level.bytes, b.chunk_level.bytes);
        assert_eq!(a.file_level.bytes, b.file_level.bytes);
        assert_eq!(a.strata.recipes, b.strata.recipes);
    }
}

/// Pushes every distinct blob (in the order analyze reads them) to an
/// in-process daemon and compares its bytes with the prediction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prediction_matches_a_real_store() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layout");
    let built = corpus(&dir);
    let r = tokio::task::block_in_place(|| {
        analyze::run(open_inputs(&dir), &settings(&["16K/64K/256K"], 1)).unwrap()
    });
    let data = t.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let d = common::Daemon::start(&data).await;
    let mut c = d.client().await;
    let mut pushed = BTreeSet::new();
    for b in &built {
        for blob in b.blobs() {
            if pushed.insert(sha(&blob)) {
                common::push_as(&mut c, "", &sha(&blob), &blob, 1 << 20)
                    .await
                    .unwrap();
            }
        }
    }
    let st = common::stats(&mut c).await;
    d.stop().await;
    let s = &r.settings[0].strata;
    let rel = |a: u64, b: u64| (a as f64 - b as f64).abs() / b as f64;
    eprintln!(
        "predicted: packs {} chunks {} recipes {} rebuild {} index {} total {}",
        s.packs, s.chunks, s.recipes, s.rebuild, s.index, s.total.bytes
    );
    eprintln!(
        "store:     packs {} index {} on disk {} (rebuild counter {})",
        st.pack_bytes, st.index_bytes, st.bytes_on_disk, st.rebuild_bytes
    );
    // One worker reads blobs in push order: the same blocks, byte for byte.
    assert_eq!(s.packs, st.pack_bytes, "pack bytes");
    let total = rel(s.total.bytes, st.bytes_on_disk);
    eprintln!("total off by {:.2}%", total * 100.0);
    assert!(
        total < 0.02,
        "predicted {} vs {}",
        s.total.bytes,
        st.bytes_on_disk
    );
    // The store's unique plain bytes also count rebuild data kept as chunks.
    assert!(st.unique_plain_bytes >= r.settings[0].chunk_level.bytes);
}

fn strata_bin(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Splits the CSV output into its two tables of records (naive: the test's
/// names need no quoting).
fn csv_tables(s: &str) -> Vec<Vec<HashMap<String, String>>> {
    s.split("\n\n")
        .map(|t| {
            let mut lines = t.lines().filter(|l| !l.is_empty());
            let head: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
            lines
                .map(|l| {
                    head.iter()
                        .cloned()
                        .zip(l.split(',').map(String::from))
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[test]
fn binary_outputs_agree() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layout");
    let built = corpus(&dir);
    let d = dir.to_str().unwrap();
    // One worker: blocks group the same way in every run (with two, a chunk
    // two blobs share lands in whichever's block got it first).
    let sizes = "16K/64K/256K,32K/128K/512K";
    let one = ["--threads", "1", "--chunk-sizes", sizes];
    let js: Value = serde_json::from_str(&strata_bin(&[
        "analyze", d, "--json", one[0], one[1], one[2], one[3],
    ]))
    .unwrap();
    let settings = js["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 2);
    assert_eq!(settings[1]["chunk_sizes"], "32K/128K/512K");
    let e = expected(&built, ChunkSizes::parse("16K/64K/256K").unwrap());
    assert_eq!(settings[0]["chunk_level"]["bytes"], e.chunk_level);
    assert_eq!(js["matrix"], json!(e.matrix));
    assert_eq!(js["source"], "files");

    let csv = strata_bin(&[&["analyze", d, "--csv"][..], &one].concat());
    let tables = csv_tables(&csv);
    assert_eq!(tables.len(), 2);
    for (i, row) in tables[0].iter().enumerate() {
        let img = &js["images"][i];
        assert_eq!(row["image"], img["name"].as_str().unwrap());
        for f in [
            "compressed_bytes",
            "plain_bytes",
            "unique_bytes",
            "shared_bytes",
        ] {
            assert_eq!(row[f], img[f].to_string(), "{f}");
        }
        for (j, other) in built.iter().enumerate() {
            assert_eq!(
                row[&format!("shared_with:{}:{}", j + 1, other.name)],
                js["matrix"][i][j].to_string()
            );
        }
    }
    assert_eq!(tables[1].len(), 2);
    for (row, s) in tables[1].iter().zip(settings) {
        assert_eq!(row["chunk_sizes"], s["chunk_sizes"].as_str().unwrap());
        assert_eq!(
            row["chunk_level_bytes"],
            s["chunk_level"]["bytes"].to_string()
        );
        assert_eq!(
            row["file_level_bytes"],
            s["file_level"]["bytes"].to_string()
        );
        assert_eq!(
            row["strata_total_bytes"],
            s["strata"]["total"]["bytes"].to_string()
        );
        assert_eq!(row["strata_index"], s["strata"]["index"].to_string());
    }

    let table = strata_bin(&[&["analyze", d][..], &one].concat());
    let human = |v: &Value| analyze::table::human(v.as_u64().unwrap());
    for img in js["images"].as_array().unwrap() {
        let line = table
            .lines()
            .find(|l| l.starts_with(img["name"].as_str().unwrap()))
            .unwrap();
        for f in [
            "compressed_bytes",
            "plain_bytes",
            "unique_bytes",
            "shared_bytes",
        ] {
            assert!(line.contains(&human(&img[f])), "{f} in {line:?}");
        }
    }
    for s in settings {
        assert!(table.contains(&format!(
            "chunk sizes {}:",
            s["chunk_sizes"].as_str().unwrap()
        )));
        let strata_line = table
            .lines()
            .skip_while(|l| !l.contains(s["chunk_sizes"].as_str().unwrap()))
            .find(|l| l.contains("strata would store"))
            .unwrap();
        assert!(strata_line.contains(&human(&s["strata"]["total"]["bytes"])));
    }
    assert!(table.contains("shared plain bytes"));
}

/// Inputs of other kinds side by side: a lone gzip layer file with the OCI
/// layout; a missing file is an error naming it.
#[test]
fn layer_files_and_errors() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layout");
    let built = corpus(&dir);
    let lone: PathBuf = t.path().join("app.tar.gz");
    fs::write(&lone, gzip(&built[0].layers[1].tar)).unwrap();
    let js: Value = serde_json::from_str(&strata_bin(&[
        "analyze",
        dir.to_str().unwrap(),
        lone.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let images = js["images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    // The lone layer holds app's files: everything it has, `one` has too.
    assert_eq!(images[3]["unique_bytes"], 0);
    assert_eq!(js["matrix"][3][0], js["matrix"][3][3]);

    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["analyze", "/nonexistent/image"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/image"));
}
