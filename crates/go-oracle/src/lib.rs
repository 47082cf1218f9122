//! Test support, not published: builds the Go oracle programs in the
//! repository's tests/go/ (once per test process, into
//! `<target>/go-oracles/`), runs them stdin to stdout, compares outputs
//! without dumping them, and makes inputs. Used by the `goflate` and
//! `kpflate` crates' tests and by strata's replay tests.
//!
//! The oracles are not optional: a missing `go` or missing klauspost sources
//! fail the tests, naming `.ci/deps`, which installs both.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Debian's GOPATH holding klauspost/compress and klauspost/pgzip.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// Where the built oracles go: `$CARGO_TARGET_DIR/go-oracles`, else the
/// system temp dir.
fn oracle_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join("go-oracles")
}

/// Builds tests/go/<name> to `<oracle_dir>/<name>`: to a name unique to this
/// process first, then renamed into place, so concurrent test processes
/// never run (or exec) a half-written binary.
fn build(name: &str, gopath: Option<&str>) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/go")
        .join(name);
    // The path is fixed at compile time: a test binary built from another
    // checkout of this repository (sharing the target directory) points at it.
    assert!(
        src.is_dir(),
        "the Go oracle sources {} are not there: this test binary was built \
         from another checkout sharing the target directory; rebuild it here",
        src.display()
    );
    let dir = oracle_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut cmd = Command::new("go");
    cmd.args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0");
    if let Some(p) = gopath {
        cmd.env("GOPATH", p);
    }
    // Go needs a build cache; CI may run without HOME.
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", dir.join("gocache"));
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`go` is not on PATH. These tests compare strata's encoders with Go \
             oracle programs (tests/go/); run .ci/deps, which installs golang-go, \
             golang-github-klauspost-compress-dev and golang-github-klauspost-pgzip-dev"
        ),
        Err(e) => panic!("cannot run `go build`: {e}"),
    };
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "building the Go oracle tests/go/{name} failed ({}); run .ci/deps to \
             install golang-go and Debian's klauspost sources under {DEBIAN_GOPATH}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bin = dir.join(name);
    std::fs::rename(&tmp, &bin)
        .unwrap_or_else(|e| panic!("cannot move the oracle into {}: {e}", bin.display()));
    bin
}

/// klauspost/compress flate, gzip and pgzip (tests/go/kpgzip).
pub fn kpgzip() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("kpgzip", Some(DEBIAN_GOPATH)))
}

/// Go's compress/flate and compress/gzip (tests/go/gogzip).
pub fn gogzip() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("gogzip", None))
}

/// Runs `bin args` with `input` on stdin; returns stdout. Panics with the
/// program's stderr if it fails.
pub fn run(bin: &Path, args: &[String], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (out, err) = std::thread::scope(|s| {
        // Feed from another thread: the program may fill stdout before it
        // has read all its input.
        s.spawn(move || stdin.write_all(input).unwrap());
        let e = s.spawn(move || {
            let mut v = Vec::new();
            stderr.read_to_end(&mut v).unwrap();
            v
        });
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        (v, e.join().unwrap())
    });
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{} {args:?} failed ({status}): {}",
        bin.display(),
        String::from_utf8_lossy(&err)
    );
    out
}

/// The raw deflate between a gzip member's 10-byte header and 8-byte
/// trailer (the oracles write no optional header fields).
pub fn gzip_body(gz: &[u8]) -> &[u8] {
    assert!(gz.len() >= 18, "gzip output too short: {} bytes", gz.len());
    assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0], "gzip magic, method, flags");
    &gz[10..gz.len() - 8]
}

/// Fails with the lengths and the first differing offset (and a few bytes
/// around it), never the whole outputs.
#[track_caller]
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |v: &[u8]| -> String {
        v[at.saturating_sub(4).min(v.len())..(at + 8).min(v.len())]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    panic!(
        "{what}: rust {} bytes, go {} bytes, first difference at offset {at}\n  \
         rust[{}..]: {}\n    go[{}..]: {}",
        got.len(),
        want.len(),
        at.saturating_sub(4),
        around(got),
        at.saturating_sub(4),
        around(want),
    );
}

// ---- Inputs ----

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Incompressible bytes.
pub fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; n];
    rng(seed).fill_bytes(&mut v);
    v
}

/// Word salad with the odd binary run: short and medium matches at many
/// distances.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the ",
        "layer ",
        "content ",
        "store ",
        "rebuilds ",
        "compressed ",
        "gzip ",
        "tar ",
        "deflate ",
        "block ",
        "huffman ",
        "window ",
        "match\n",
        "offset, ",
        "literal. ",
        "{\"key\": 12345}\n",
        "\t",
        "0xdeadbeef ",
    ];
    let mut r = rng(seed);
    let mut v = Vec::with_capacity(n + 32);
    while v.len() < n {
        if r.random_range(0..40) == 0 {
            let k = r.random_range(1..20);
            v.extend((0..k).map(|_| r.random::<u8>()));
        } else {
            v.extend_from_slice(WORDS[r.random_range(0..WORDS.len())].as_bytes());
        }
    }
    v.truncate(n);
    v
}

/// Random stretches, byte runs, text, and copies of earlier data at short,
/// window-edge (32 KiB) and beyond-window distances.
pub fn mixed(n: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let mut v: Vec<u8> = Vec::with_capacity(n + 5000);
    while v.len() < n {
        match r.random_range(0..5) {
            0 => {
                let k = r.random_range(1..3000);
                v.extend(random(k, r.random()));
            }
            1 => {
                let k = r.random_range(1..5000);
                let b: u8 = r.random();
                v.extend(std::iter::repeat_n(b, k));
            }
            2 if v.len() > 8 => {
                let dist = match r.random_range(0..3) {
                    0 => r.random_range(1..4096),
                    1 => r.random_range(32000..33500),
                    _ => r.random_range(1..70_000),
                }
                .min(v.len());
                let k = r.random_range(3..2000);
                let start = v.len() - dist;
                for i in 0..k {
                    let b = v[start + i];
                    v.push(b);
                }
            }
            _ => {
                let k = r.random_range(1..4000);
                v.extend(text(k, r.random()));
            }
        }
    }
    v.truncate(n);
    v
}

/// A real tar archive (the `tar` crate, ustar headers) of about `n` bytes:
/// text, random, zero-filled and repeated files, and directories.
pub fn tar_archive(n: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let mut b = tar::Builder::new(Vec::new());
    let mut i = 0u32;
    let mut last = Vec::new();
    while b.get_ref().len() < n {
        let size = r.random_range(0..12_000usize);
        let body = match i % 5 {
            0 => text(size, r.random()),
            1 => random(size / 3, r.random()),
            2 => vec![0u8; size],
            3 => last.clone(),
            _ => mixed(size, r.random()),
        };
        let mut h = tar::Header::new_ustar();
        h.set_mode(if i.is_multiple_of(7) { 0o755 } else { 0o644 });
        h.set_mtime(1_700_000_000 + u64::from(i));
        h.set_uid(0);
        h.set_gid(0);
        if i % 11 == 10 {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            let path = format!("usr/share/dir{i}/");
            b.append_data(&mut h, path, &[][..]).unwrap();
        } else {
            h.set_size(body.len() as u64);
            let path = format!("usr/share/pkg{}/file-{i:05}.txt", i / 9);
            b.append_data(&mut h, path, &body[..]).unwrap();
        }
        last = body;
        i += 1;
    }
    b.into_inner().unwrap()
}

/// Up to `max` bytes from the start of `path`, if it can be read.
pub fn file_prefix(path: &str, max: usize) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut v = Vec::new();
    f.take(max as u64).read_to_end(&mut v).ok()?;
    (!v.is_empty()).then_some(v)
}

/// Prefixes of binaries from this machine: the go tool (present wherever
/// these tests run), bash and a shared library. Panics if fewer than two can
/// be read, so the real-file tests never pass vacuously.
pub fn real_files(max: usize) -> Vec<(String, Vec<u8>)> {
    let mut paths = vec!["/usr/bin/go".to_string(), "/bin/bash".to_string()];
    let lib = "/usr/lib/x86_64-linux-gnu";
    let mut libs: Vec<PathBuf> = std::fs::read_dir(lib)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(".so"))
                .filter(|p| p.metadata().is_ok_and(|m| m.len() > 100_000))
                .collect()
        })
        .unwrap_or_default();
    libs.sort();
    if let Some(p) = libs.first() {
        paths.push(p.to_string_lossy().into_owned());
    }
    let files: Vec<_> = paths
        .into_iter()
        .filter_map(|p| file_prefix(&p, max).map(|d| (p, d)))
        .collect();
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert!(names.len() >= 2, "too few real files readable: {names:?}");
    files
}

/// The four kinds of input the buffer-boundary tests cut to each size.
pub fn boundary_inputs(sizes: &[usize], mut check: impl FnMut(&str, &[u8])) {
    let mix = mixed(140_000, 1);
    let txt = text(140_000, 2);
    let tar = tar_archive(140_000, 3);
    let rnd = random(140_000, 4);
    for &n in sizes {
        for (name, data) in [
            ("mixed", &mix),
            ("text", &txt),
            ("tar", &tar),
            ("random", &rnd),
        ] {
            check(name, &data[..n]);
        }
    }
}

/// Incompressible data (stored and Huffman-only decisions), a run of
/// `zeros` zero bytes, two long runs, a short period, text, a generated
/// tar, random/text alternation, and 1.5 MB of mixed data (many window
/// slides).
pub fn data_kinds(zeros: usize, mut check: impl FnMut(&str, &[u8])) {
    check("random", &random(300_000, 5));
    check("zeros", &vec![0u8; zeros]);
    let mut two = vec![b'x'; 100_000];
    two.extend(vec![b'y'; 100_000]);
    check("two runs", &two);
    check("period 3", &b"abc".repeat(60_000));
    check("text", &text(300_000, 6));
    check("tar", &tar_archive(500_000, 7));
    let mut alt = Vec::new();
    for i in 0..12u64 {
        if i % 3 == 0 {
            alt.extend(random(20_000 + i as usize * 777, i));
        } else {
            alt.extend(text(15_000 + i as usize * 555, i));
        }
        alt.extend(std::iter::repeat_n(i as u8, i as usize * 100));
    }
    check("alternating", &alt);
    check("mixed", &mixed(1_500_000, 20));
}

/// Proptest inputs: random mixtures of random bytes, runs, copies of earlier
/// data (beyond a 32 KiB window too), text and mixed data, up to 200 KB.
pub fn arb_input() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    let seg = prop_oneof![
        (1usize..3000, any::<u64>()).prop_map(|(n, s)| (0u8, n, s)),
        (1usize..40_000, any::<u64>()).prop_map(|(n, s)| (1u8, n, s)),
        (1usize..40_000, any::<u64>()).prop_map(|(n, s)| (2u8, n, s)),
        (1usize..50_000, any::<u64>()).prop_map(|(n, s)| (3u8, n, s)),
        (1usize..50_000, any::<u64>()).prop_map(|(n, s)| (4u8, n, s)),
    ];
    prop::collection::vec(seg, 0..8).prop_map(|segs| {
        let mut v: Vec<u8> = Vec::new();
        for (kind, n, seed) in segs {
            let n = n.min(200_000 - v.len().min(200_000));
            match kind {
                0 => v.extend(random(n, seed)),
                1 => v.extend(std::iter::repeat_n(seed as u8, n)),
                2 if !v.is_empty() => {
                    // A copy of earlier data, possibly beyond the window.
                    let start = (seed as usize) % v.len();
                    let end = (start + n).min(v.len());
                    v.extend_from_within(start..end);
                }
                3 => v.extend(text(n, seed)),
                _ => v.extend(mixed(n, seed)),
            }
        }
        v
    })
}
