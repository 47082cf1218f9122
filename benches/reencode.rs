//! Rebuild speed of the Go-family re-encoders against Go's own encoders, in
//! one run on one input, so the ratio means something on a noisy machine.
//!
//! ```sh
//! cargo bench --bench reencode -- [FILE] [--rounds 3]
//! ```
//!
//! FILE defaults to about 48 MB of the machine's libraries and documentation
//! (a mix of binary and text, like a layer). For each encoder it times the
//! Rust port (best of `--rounds`, in process) and the Go program from
//! `tests/go/` (best of `--rounds`, a process reading the file from a pipe),
//! checks the two outputs are the same bytes, and prints MB/s of input and of
//! compressed output and the Rust/Go speed ratio.
//!
//! Go's pgzip compresses on every core; the Rust side is shown both on one
//! thread (the ingest path) and on the rebuild pool (the read path).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs each case
//! on 2 MB once and only checks the bytes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use strata::codec::go_replay::GoParams;
use strata::codec::kp_replay::KpParams;
use strata::codec::Reencoder;

struct Case {
    name: &'static str,
    /// The Go program (gogzip or kpgzip) and its flags.
    go: (&'static str, &'static [&'static str]),
    /// Whether the Go output has a 10-byte gzip header and 8-byte trailer.
    gzip: bool,
    rust: fn() -> Box<dyn Reencoder>,
}

const CASES: &[Case] = &[
    Case {
        name: "go-1",
        go: ("gogzip", &["-mode", "flate", "-level", "1"]),
        gzip: false,
        rust: || GoParams { level: 1 }.reencoder().unwrap(),
    },
    Case {
        name: "go-6",
        go: ("gogzip", &["-mode", "flate", "-level", "6"]),
        gzip: false,
        rust: || GoParams { level: 6 }.reencoder().unwrap(),
    },
    Case {
        name: "go-9",
        go: ("gogzip", &["-mode", "flate", "-level", "9"]),
        gzip: false,
        rust: || GoParams { level: 9 }.reencoder().unwrap(),
    },
    Case {
        name: "klauspost-5 (one stream)",
        go: ("kpgzip", &["-mode", "flate", "-level", "5"]),
        gzip: false,
        rust: || KpParams::single(5).reencoder().unwrap(),
    },
    Case {
        name: "pgzip-5-1024k, Rust on one thread",
        go: ("kpgzip", &["-mode", "pgzip", "-level", "5"]),
        gzip: true,
        rust: || KpParams::pgzip(5, 1 << 20).reencoder().unwrap(),
    },
    Case {
        name: "pgzip-5-1024k, Rust on the rebuild pool",
        go: ("kpgzip", &["-mode", "pgzip", "-level", "5"]),
        gzip: true,
        rust: || KpParams::pgzip(5, 1 << 20).rebuild_reencoder().unwrap(),
    },
    Case {
        name: "pgzip-9-1024k, Rust on the rebuild pool",
        go: ("kpgzip", &["-mode", "pgzip", "-level", "9"]),
        gzip: true,
        rust: || KpParams::pgzip(9, 1 << 20).rebuild_reencoder().unwrap(),
    },
];

fn build_go(out_dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
    std::fs::create_dir_all(out_dir).unwrap();
    for (prog, gopath) in [("gogzip", None), ("kpgzip", Some("/usr/share/gocode"))] {
        let mut c = Command::new("go");
        c.args(["build", "-o"])
            .arg(out_dir.join(prog))
            .arg(".")
            .current_dir(root.join(prog))
            .env("GO111MODULE", "off");
        if let Some(p) = gopath {
            c.env("GOPATH", p);
        }
        let st = c.status().expect("run go (install it with: bash .ci/deps)");
        assert!(st.success(), "building tests/go/{prog} failed");
    }
    out_dir.to_path_buf()
}

/// About `limit` bytes of the machine's libraries and docs, in a fixed order.
fn default_input(limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit);
    let mut stack = vec![
        PathBuf::from("/usr/lib/x86_64-linux-gnu"),
        PathBuf::from("/usr/share/doc"),
    ];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if out.len() >= limit {
                return out;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                if let Ok(b) = std::fs::read(&p) {
                    let take = b.len().min(limit - out.len());
                    out.extend_from_slice(&b[..take]);
                }
            }
        }
    }
    out
}

fn run_rust(case: &Case, input: &[u8]) -> (Vec<u8>, f64) {
    let t = Instant::now();
    let mut re = (case.rust)();
    let mut out = Vec::with_capacity(input.len() / 2);
    // Reads feed 256 KiB at a time.
    for piece in input.chunks(256 << 10) {
        re.feed(piece, &mut out).unwrap();
    }
    re.finish(&mut out).unwrap();
    (out, t.elapsed().as_secs_f64())
}

fn run_go(bin: &Path, case: &Case, file: &Path) -> (Vec<u8>, f64) {
    let t = Instant::now();
    let mut child = Command::new(bin.join(case.go.0))
        .args(case.go.1)
        .stdin(std::fs::File::open(file).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    let secs = t.elapsed().as_secs_f64();
    if case.gzip {
        out = out[10..out.len() - 8].to_vec();
    }
    (out, secs)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let bench = argv.iter().any(|a| a == "--bench");
    let rounds: usize = argv
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| argv.get(i + 1))
        .map_or(3, |r| r.parse().expect("--rounds N"));
    let file_arg = argv
        .iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with("--") && (*i == 0 || argv[i - 1] != "--rounds") && Path::new(a).is_file()
        })
        .map(|(_, a)| PathBuf::from(a));
    let work = std::env::temp_dir().join(format!("strata-reencode-{}", std::process::id()));
    let bin = build_go(&work.join("bin"));
    let (input, file) = match file_arg {
        Some(f) => (std::fs::read(&f).unwrap(), f),
        None => {
            let input = default_input(if bench { 48 << 20 } else { 2 << 20 });
            let f = work.join("input");
            std::fs::File::create(&f)
                .unwrap()
                .write_all(&input)
                .unwrap();
            (input, f)
        }
    };
    let rounds = if bench { rounds.max(1) } else { 1 };
    println!(
        "input: {} ({:.1} MB), best of {rounds}",
        file.display(),
        input.len() as f64 / 1e6
    );
    println!("| encoder | output MB | Rust MB/s in (out) | Go MB/s in (out) | Rust / Go |");
    println!("|---|---|---|---|---|");
    for case in CASES {
        let (mut rust_best, mut go_best) = (f64::MAX, f64::MAX);
        let (mut rust_out, mut go_out) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (o, s) = run_rust(case, &input);
            rust_best = rust_best.min(s);
            rust_out = o;
            let (o, s) = run_go(&bin, case, &file);
            go_best = go_best.min(s);
            go_out = o;
        }
        if rust_out != go_out {
            let at = rust_out
                .iter()
                .zip(&go_out)
                .take_while(|(a, b)| a == b)
                .count();
            panic!("{}: Rust and Go outputs differ at byte {at}", case.name);
        }
        let mb = input.len() as f64 / 1e6;
        let out_mb = rust_out.len() as f64 / 1e6;
        println!(
            "| {} | {out_mb:.1} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} |",
            case.name,
            mb / rust_best,
            out_mb / rust_best,
            mb / go_best,
            out_mb / go_best,
            go_best / rust_best
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
