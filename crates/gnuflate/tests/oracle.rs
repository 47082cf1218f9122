//! gnuflate against GNU gzip itself (`/usr/bin/gzip`, 1.12 on Debian 12):
//! `gzip -N -n < file` (a regular file on stdin, as gzip reads it in the
//! port's model), header and trailer stripped, must equal the port's output
//! at every level, however the input is cut into writes.

use gnuflate::Writer;
use go_oracle::{assert_same, mixed, random, rng, tar_archive, text};
use rand::Rng;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

const GZIP: &str = "/usr/bin/gzip";

/// A scratch file removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch(data: &[u8]) -> Scratch {
    static N: AtomicU64 = AtomicU64::new(0);
    let p = std::env::temp_dir().join(format!(
        "gnuflate-oracle-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, data).unwrap();
    Scratch(p)
}

/// gzip's raw deflate for `input` at `level`, read from a regular file.
fn gzip_body(input: &Scratch, level: u32) -> Vec<u8> {
    let out = Command::new(GZIP)
        .arg(format!("-{level}"))
        .arg("-n")
        .stdin(Stdio::from(std::fs::File::open(&input.0).unwrap()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {GZIP}: {e}"));
    assert!(out.status.success(), "gzip failed: {:?}", out.status);
    let gz = out.stdout;
    assert!(gz.len() >= 18);
    assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
    gz[10..gz.len() - 8].to_vec()
}

/// The port's output with `input` written in irregular pieces (empty ones
/// too), or whole when `seed` is None.
fn port(input: &[u8], level: u32, seed: Option<u64>) -> Vec<u8> {
    let mut w = Writer::new(level as i32).unwrap();
    let mut out = Vec::new();
    match seed {
        None => w.write(input, &mut out),
        Some(seed) => {
            let mut g = rng(seed);
            let mut rest = input;
            while !rest.is_empty() {
                let n = match g.random_range(0..5) {
                    0 => 0,
                    1 => g.random_range(1..64),
                    2 => g.random_range(1..70_000),
                    3 => 65_536,
                    _ => g.random_range(1..1_000_000),
                }
                .min(rest.len());
                w.write(&rest[..n], &mut out);
                rest = &rest[n..];
            }
        }
    }
    w.finish(&mut out);
    out
}

fn check(what: &str, input: &[u8], levels: &[u32]) {
    let f = scratch(input);
    for &level in levels {
        let want = gzip_body(&f, level);
        let seeds = [None, Some(input.len() as u64 ^ u64::from(level))];
        for seed in seeds {
            let got = port(input, level, seed);
            let what = format!("{what} len={} level={level} split={seed:?}", input.len());
            assert_same(&what, &got, &want);
        }
    }
}

const ALL: [u32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

#[test]
fn tiny_inputs() {
    for n in [0usize, 1, 2, 3, 4, 5, 7, 100, 261, 262, 263] {
        check("text", &text(n, 1), &ALL);
        check("zeros", &vec![0u8; n], &ALL);
        check("random", &random(n, 2), &ALL);
    }
    check("one byte", b"a", &ALL);
}

/// Sizes around the window (64 KiB first read, 32 KiB slides, the 262
/// bytes of lookahead) and the symbol buffer.
#[test]
fn window_edges() {
    let mix = mixed(200_000, 3);
    let txt = text(200_000, 4);
    let rnd = random(200_000, 5);
    for n in [
        32_767, 32_768, 32_769, 65_273, 65_274, 65_275, 65_535, 65_536, 65_537, 65_798, 98_042,
        98_304, 131_072, 131_073,
    ] {
        check("mixed", &mix[..n], &ALL);
        check("text", &txt[..n], &[1, 6, 9]);
        check("random", &rnd[..n], &[3, 6]);
    }
}

#[test]
fn data_kinds() {
    go_oracle::data_kinds(3_000_000, |name, data| check(name, data, &ALL));
}

#[test]
fn generated_tar() {
    check("tar", &tar_archive(4_000_000, 9), &ALL);
}

/// A real tar of this machine's files: documentation and binaries.
#[test]
fn real_tar() {
    let mut tar = Vec::new();
    for dir in ["/usr/share/doc", "/usr/lib/x86_64-linux-gnu"] {
        let out = Command::new("tar")
            .args(["-cf", "-", "--ignore-failed-read", dir])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let mut t = out.stdout;
        t.truncate(6 << 20);
        tar.extend_from_slice(&t);
    }
    assert!(tar.len() > 4 << 20, "too little tar: {} bytes", tar.len());
    check("real tar", &tar, &ALL);
}

/// Random mixtures (runs, copies near and beyond the window, text, noise)
/// of random sizes, at random levels.
#[test]
fn random_mixtures() {
    let mut g = rng(10);
    for case in 0..40u64 {
        let n = match case % 4 {
            0 => g.random_range(0..5_000),
            1 => g.random_range(60_000..140_000),
            _ => g.random_range(0..600_000),
        };
        let level = g.random_range(1..=9);
        check("mixed", &mixed(n, 100 + case), &[level]);
    }
}

#[test]
fn writer_rejects_bad_levels() {
    for level in [-1, 0, 10] {
        assert!(Writer::new(level).is_err());
    }
}
