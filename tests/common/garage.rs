//! A real three-node Garage 2.5.0 cluster (an S3-compatible object store) on
//! 127.0.0.1, started by `tests/garage/cluster.sh` on a free port range in a
//! temporary directory: replication factor 3, consistent mode, bucket
//! `strata` and one key allowed read/write/owner on it. Stopped and removed
//! when dropped, also when a test panics (then the node logs' tails are
//! printed); a watcher stops it should the test process die without
//! unwinding. Needs the Garage binary `.ci/garage` installs: without it
//! `start` panics (never skips).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/garage/cluster.sh");
/// Where `.ci/garage` installs Garage 2.5.0.
pub const CI_BIN: &str = "/opt/strata-ci/garage-2.5.0/bin/garage";

/// Base ports are taken from [BASE_MIN, BASE_MIN + 40 * SLOTS): below the
/// kernel's ephemeral range (32768+), so outgoing connections do not take them.
const BASE_MIN: u32 = 20000;
const SLOTS: u32 = 300;
/// Offsets from a base a node listens on: RPC +0, S3 +1, admin +3, node N at +10*N.
const OFFSETS: [u32; 3] = [0, 1, 3];

pub struct Garage {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    base: u16,
    endpoints: Vec<String>,
    bucket: String,
    access_key: String,
    secret_key: String,
    region: String,
}

/// The Garage binary the script will run (same order as the script's):
/// `$GARAGE`, the `.ci/garage` install, `garage` on PATH. Panics, naming
/// `.ci/garage`, when there is none.
pub fn binary() -> PathBuf {
    const HOW: &str =
        "run `bash .ci/garage` (builds and installs Garage 2.5.0 into /opt/strata-ci)";
    if let Some(g) = std::env::var_os("GARAGE").filter(|g| !g.is_empty()) {
        return which(Path::new(&g)).unwrap_or_else(|| {
            panic!(
                "GARAGE={} is not an executable: unset it and {HOW}",
                g.to_string_lossy()
            )
        });
    }
    if is_executable(Path::new(CI_BIN)) {
        return PathBuf::from(CI_BIN);
    }
    which(Path::new("garage")).unwrap_or_else(|| {
        panic!("no Garage binary ({CI_BIN} missing, GARAGE unset, no `garage` on PATH): {HOW}")
    })
}

/// `p` itself if it names a path, else the first `p` on PATH; if executable.
fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return is_executable(p).then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(p))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A base port whose nine ports are all free now. Successive calls (from
/// parallel tests) get different bases; different test processes start at
/// different slots.
fn free_base() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SLOTS,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SLOTS {
        let slot = NEXT.fetch_add(1, Ordering::SeqCst) % SLOTS;
        let base = BASE_MIN + 40 * slot;
        let all_free = (1..=3).all(|n| {
            OFFSETS
                .iter()
                .all(|o| TcpListener::bind(("127.0.0.1", (base + 10 * n + o) as u16)).is_ok())
        });
        if all_free {
            return base as u16;
        }
    }
    panic!(
        "garage: no free range of ports between {BASE_MIN} and {}",
        BASE_MIN + 40 * SLOTS
    );
}

fn script(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .env("GARAGE_CLUSTER_OWNER_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("bash {SCRIPT}: {e}"))
}

/// The last `n` lines of `path`.
fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Garage {
    /// Starts a fresh cluster; returns once every node serves S3.
    pub fn start() -> Garage {
        let bin = binary();
        let dir = tempfile::Builder::new()
            .prefix("strata-garage-")
            .tempdir()
            .unwrap();
        let path = dir.path().to_path_buf();
        let d = path.to_str().unwrap();
        // Another process may grab a probed port before the nodes bind it:
        // then start again on another range.
        let mut attempt = 0;
        let base = loop {
            attempt += 1;
            let base = free_base();
            let out = script(&["start", d, &base.to_string()]);
            if out.status.success() {
                break base;
            }
            let logs = Self::log_tails(&path, 30);
            if attempt < 3 && logs.contains("Address already in use") {
                eprintln!("garage: ports at {base} taken meanwhile, trying another range");
                continue;
            }
            panic!(
                "garage cluster did not start ({}, base port {base}, binary {}): {}\n{logs}",
                out.status,
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let out = script(&["env", d]);
        assert!(
            out.status.success(),
            "garage env: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = parse_env(&String::from_utf8_lossy(&out.stdout));
        let var = |k: &str| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("garage env has no {k}: {vars:?}"))
        };
        let endpoints: Vec<String> = var("STRATA_S3_ENDPOINTS")
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(endpoints.len(), 3, "garage env: {endpoints:?}");
        Garage {
            dir: Some(dir),
            path,
            base,
            endpoints,
            bucket: var("STRATA_S3_BUCKET"),
            access_key: var("AWS_ACCESS_KEY_ID"),
            secret_key: var("AWS_SECRET_ACCESS_KEY"),
            region: var("AWS_REGION"),
        }
    }

    /// Node 1's S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoints[0].clone()
    }

    /// The three nodes' S3 endpoints, node 1 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION for a client.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), self.region.clone()),
        ]
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Node `n`'s S3 port.
    pub fn s3_port(&self, n: u32) -> u16 {
        assert!((1..=3).contains(&n), "garage node {n}: nodes are 1..3");
        self.base + 10 * n as u16 + 1
    }

    /// Node `n`'s full id (hex public key), as `garage status` abbreviates it
    /// to its first 16 characters.
    pub fn node_id(&self, n: u32) -> String {
        let ids = std::fs::read_to_string(self.path.join("ids")).unwrap();
        ids.lines()
            .find_map(|l| l.strip_prefix(&format!("{n} ")))
            .and_then(|l| l.split('@').next())
            .unwrap_or_else(|| panic!("garage: no node {n} in {ids}"))
            .to_string()
    }

    /// SIGKILLs node `n` (1..3) and waits until it is gone.
    pub fn kill_node(&self, n: u32) {
        self.script_ok(&["kill-node", self.dir_str(), &n.to_string()]);
    }

    /// Starts node `n` again on its data; returns once its S3 port answers
    /// and, another node being up, it is connected both ways to the running
    /// nodes and sees a quorum again.
    pub fn start_node(&self, n: u32) {
        self.script_ok(&["start-node", self.dir_str(), &n.to_string()]);
        let addr = ("127.0.0.1", self.s3_port(n));
        let t = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "garage node {n}: S3 port {} does not answer:\n{}",
                addr.1,
                Self::log_tails(&self.path, 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `garage -c DIR/nN.toml ARGS` (the CLI, talking to node `n`).
    pub fn cli_output(&self, n: u32, args: &[&str]) -> Output {
        let bin = std::fs::read_to_string(self.path.join("bin")).unwrap();
        Command::new(bin.trim())
            .arg("-c")
            .arg(self.path.join(format!("n{n}.toml")))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `garage ARGS` against node `n` that must succeed; its stdout.
    pub fn cli(&self, n: u32, args: &[&str]) -> String {
        let o = self.cli_output(n, args);
        assert!(
            o.status.success(),
            "garage -c n{n}.toml {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The last `n` lines of every node's log.
    pub fn logs(&self, n: usize) -> String {
        Self::log_tails(&self.path, n)
    }

    fn log_tails(dir: &Path, n: usize) -> String {
        (1..=3)
            .map(|i| {
                let log = dir.join(format!("n{i}.log"));
                format!(
                    "--- {} (last {n} lines) ---\n{}\n",
                    log.display(),
                    tail(&log, n)
                )
            })
            .collect()
    }

    fn dir_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn script_ok(&self, args: &[&str]) {
        let out = script(args);
        assert!(
            out.status.success(),
            "garage cluster.sh {args:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            Self::log_tails(&self.path, 30)
        );
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("garage cluster logs:\n{}", Self::log_tails(&self.path, 20));
        }
        let out = script(&["stop", self.dir_str()]);
        if !out.status.success() {
            eprintln!(
                "garage cluster.sh stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        drop(self.dir.take());
    }
}

/// `NAME=VALUE` lines, single quotes around a value removed.
fn parse_env(s: &str) -> Vec<(String, String)> {
    s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}
