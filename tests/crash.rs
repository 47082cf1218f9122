//! Crash consistency, with the daemon as a real process killed by SIGKILL.
//!
//! A seeded random workload (tar layers sharing file bodies, raw blobs, cut-off
//! tars, pushes through gRPC and through the CLI, deletes, reads, abandoned
//! pushes, garbage collection) runs against `strata serve`, which is killed at random moments: idle,
//! while pushes, deletes and reads are in flight, around the moment a push
//! should commit (timed from the pushes before it), while it is still starting. After every kill the daemon restarts on the
//! same data directory and:
//! - every acknowledged blob (push answered OK, no acknowledged delete since)
//!   reads back byte for byte and hashes to its digest;
//! - every acknowledged delete stays deleted;
//! - a push or delete cut off by the kill happened entirely or not at all: the
//!   blob is absent, or it reads back complete and exact;
//! - no blob the workload did not push is listed (a partial blob would be one),
//!   and the store's counts agree with the model;
//! - `strata verify --deep` (the CLI, online) exits 0 and finds no problem.
//!
//! `STRATA_CRASH_SEED` replays a run (the seed is printed; it fixes the workload
//! and where each kill is aimed, not the exact instant it lands), and
//! `STRATA_CRASH_KILLS` sets the number of kills (default 40);
//! `STRATA_CRASH_DIR` (empty or new) keeps the store and the daemon's log;
//! `STRATA_CRASH_GC=0` leaves garbage collection out (by default `strata gc`
//! runs in the workload, is killed part way, and a background collector races
//! the rest).
//! `benches/crash.sh` runs the long version.

mod common;

use common::{noise, read_range, sha256_digest, tar_of, Client};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::proto::strata::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const NAMESPACES: [&str; 2] = ["default", "crash-b"];
/// Longest any single step may take before the test calls it a hang.
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The daemon as a child process.

struct ChildDaemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl ChildDaemon {
    /// Starts `strata serve` without waiting for it to listen.
    fn spawn(data: &Path, socket: &Path, log: &Path, extra: &[String]) -> ChildDaemon {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(f, "=== strata serve {extra:?}").unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawning strata serve");
        ChildDaemon {
            child: Some(child),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        }
    }

    /// Waits until the daemon answers on its socket.
    async fn ready(&mut self) -> Client {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the daemon exited with {st} before serving; log:\n{}",
                    log_tail(&self.log)
                );
            }
            if let Ok(mut c) = strata::client::connect(&self.socket).await {
                if c.stats(pb::StatsRequest {}).await.is_ok() {
                    return c;
                }
            }
            if t0.elapsed() > Duration::from_secs(30) {
                panic!(
                    "the daemon did not answer within 30 s; log:\n{}",
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL, then reaps the process.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// SIGTERM: a clean shutdown, which must exit 0.
    fn terminate(mut self) {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "daemon exited with {st} after SIGTERM");
                return;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("daemon still running 30 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs the CLI binary against a socket (or offline), off the async threads.
async fn cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("running strata")
    })
    .await
    .unwrap()
}

fn text_of(o: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `strata verify --deep --json` through the daemon: must exit 0 with no problem.
async fn verify_online(socket: &Path, ctx: &str) -> serde_json::Value {
    let out = cli(vec![
        "--socket".into(),
        socket.display().to_string(),
        "verify".into(),
        "--deep".into(),
        "--json".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{ctx}: strata verify --deep failed: {}",
        text_of(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{ctx}: verify --json output: {e}: {}", text_of(&out)));
    assert_eq!(v["ok"], true, "{ctx}: {v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{ctx}: {v}");
    v
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn assert_exact(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: got {} bytes, want {}, first difference at byte {}",
        got.len(),
        want.len(),
        first_difference(got, want)
    );
}

// ---------------------------------------------------------------------------
// Workload data: a pool of file bodies shared between layers, and fresh bytes.

struct Gen {
    rng: StdRng,
    bodies: Vec<Arc<Vec<u8>>>,
    files: u64,
}

fn text(rng: &mut StdRng, n: usize) -> Vec<u8> {
    const WORDS: [&str; 14] = [
        "layer ",
        "usr/lib/",
        "libc.so.6",
        "\n",
        "{\"a\": ",
        "}",
        "strata ",
        "0x",
        " = ",
        "ELF",
        "\t",
        "chunk",
        "/etc/",
        "; ",
    ];
    let mut out = Vec::with_capacity(n + 32);
    while out.len() < n {
        out.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
        if rng.random_bool(0.15) {
            out.extend_from_slice(rng.random::<u32>().to_string().as_bytes());
        }
    }
    out.truncate(n);
    out
}

impl Gen {
    fn new(rng: &mut StdRng) -> Gen {
        let mut rng = StdRng::seed_from_u64(rng.random());
        let bodies = (0..24)
            .map(|_| {
                let n = if rng.random_bool(0.5) {
                    rng.random_range(0..120_000)
                } else {
                    rng.random_range(120_000..1_000_000)
                };
                Arc::new(if rng.random_bool(0.3) {
                    text(&mut rng, n)
                } else {
                    noise(n, rng.random())
                })
            })
            .collect();
        Gen {
            rng,
            bodies,
            files: 0,
        }
    }

    fn body(&mut self) -> Arc<Vec<u8>> {
        self.bodies[self.rng.random_range(0..self.bodies.len())].clone()
    }

    fn fresh(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = self.rng.random_range(lo..hi);
        if self.rng.random_bool(0.25) {
            text(&mut self.rng, n)
        } else {
            noise(n, self.rng.random())
        }
    }

    /// A tar of pool bodies (shared with other layers), maybe with fresh files.
    fn layer(&mut self, fresh: usize) -> Vec<u8> {
        let mut bodies: Vec<Arc<Vec<u8>>> = (0..self.rng.random_range(1..=6))
            .map(|_| self.body())
            .collect();
        for _ in 0..fresh {
            bodies.push(Arc::new(self.fresh(1_000, 900_000)));
        }
        let names: Vec<String> = bodies
            .iter()
            .map(|_| {
                self.files += 1;
                format!(
                    "usr/share/f{}/{}.bin",
                    self.rng.random_range(0..50),
                    self.files
                )
            })
            .collect();
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .zip(&bodies)
            .map(|(n, b)| (n.as_str(), &b[..]))
            .collect();
        tar_of(&files, self.rng.random_range(0..2_000_000_000))
    }

    /// A new blob of one of several kinds.
    fn blob(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..100) {
            0..=29 => self.layer(0),
            30..=39 => {
                // A compressed layer: decoded, replayed or kept, spooled while
                // it is proven, so kills land in the codec stage too.
                let fresh = self.rng.random_range(0..2);
                let t = self.layer(fresh);
                if self.rng.random_bool(0.5) {
                    let level = self.rng.random_range(1..=9);
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                    std::io::Write::write_all(&mut e, &t).unwrap();
                    e.finish().unwrap()
                } else {
                    zstd::bulk::compress(&t, self.rng.random_range(1..=5)).unwrap()
                }
            }
            40..=54 => self.layer(1),
            55..=61 => {
                // A tar cut off part way: stored as tar, then raw.
                let fresh = self.rng.random_range(0..2);
                let t = self.layer(fresh);
                let cut = self.rng.random_range(0..t.len());
                t[..cut].to_vec()
            }
            62..=71 => {
                let mut b = self.body().to_vec();
                if self.rng.random_bool(0.6) {
                    b.extend_from_slice(&self.body());
                }
                b.extend_from_slice(&self.rng.random::<u64>().to_le_bytes());
                b
            }
            72..=87 => self.fresh(64_000, 2_500_000),
            _ => {
                if self.rng.random_bool(0.1) {
                    Vec::new()
                } else {
                    self.fresh(1, 5_000)
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// What the store must hold.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// Acknowledged: must read back exactly.
    Present,
    /// Cut off by a kill: absent, or complete and exact.
    Maybe,
    /// Never acknowledged, or deleted with an acknowledged delete: must be absent.
    Absent,
}

struct Entry {
    data: Arc<Vec<u8>>,
    st: St,
}

/// (namespace, digest)
type Key = (String, String);

#[derive(Default)]
struct Counts {
    kills: u64,
    startup_kills: u64,
    idle_kills: u64,
    stream_kills: u64,
    commit_kills: u64,
    /// Kills aimed at a commit that came after its answer.
    commit_kills_late: u64,
    acked_pushes: u64,
    cut_pushes: u64,
    cut_pushes_present: u64,
    cut_pushes_absent: u64,
    cut_deletes: u64,
    refused_pushes: u64,
    abandoned_pushes: u64,
    gcs: u64,
    cut_gcs: u64,
    packs_rewritten: u64,
    deletes: u64,
    reads: u64,
    cli_pushes: u64,
}

struct Run {
    seed: u64,
    rng: StdRng,
    gen: Gen,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    files: PathBuf,
    model: BTreeMap<Key, Entry>,
    /// Keys whose push or delete was cut off by the last kill.
    cut: BTreeSet<Key>,
    n: Counts,
    round: u64,
    timing: Timing,
    /// Garbage collection takes part (`STRATA_CRASH_GC=0` leaves it out).
    gc: bool,
}

/// How long a push of n bytes takes, fitted (least squares) to the recent
/// pushes that ran to completion.
#[derive(Default)]
struct Timing {
    samples: std::collections::VecDeque<(f64, f64)>,
}

impl Timing {
    fn record(&mut self, bytes: usize, took: Duration) {
        self.samples.push_back((bytes as f64, took.as_secs_f64()));
        if self.samples.len() > 32 {
            self.samples.pop_front();
        }
    }

    fn predict(&self, bytes: usize) -> Duration {
        let n = self.samples.len() as f64;
        let (mut a, mut b) = (0.005, 1.0 / 50e6);
        if n >= 4.0 {
            let mx = self.samples.iter().map(|s| s.0).sum::<f64>() / n;
            let my = self.samples.iter().map(|s| s.1).sum::<f64>() / n;
            let sxx: f64 = self.samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
            let sxy: f64 = self.samples.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum();
            if sxx > 0.0 && sxy > 0.0 {
                b = sxy / sxx;
                a = (my - b * mx).max(0.0005);
            }
        }
        Duration::from_secs_f64(a + b * bytes as f64)
    }
}

/// One operation left running when the daemon is killed.
enum InFlight {
    Push(
        Key,
        Arc<Vec<u8>>,
        JoinHandle<Result<pb::PushResponse, tonic::Status>>,
    ),
    Delete(Key, JoinHandle<Result<pb::DeleteResponse, tonic::Status>>),
    Read(Key, JoinHandle<Result<Vec<u8>, tonic::Status>>),
    Gc(JoinHandle<Result<pb::GcResponse, tonic::Status>>),
    Cli(Vec<(Key, Arc<Vec<u8>>)>, PathBuf, Child),
}

/// Pushes in pieces, streamed from a task of its own.
fn spawn_push(
    c: &Client,
    ns: &str,
    expected: &str,
    data: Arc<Vec<u8>>,
    piece: usize,
) -> JoinHandle<Result<pb::PushResponse, tonic::Status>> {
    let mut c = c.clone();
    let start = common::start_msg(ns, expected);
    tokio::spawn(async move {
        let (tx, rx) = mpsc::channel::<pb::PushRequest>(2);
        tokio::spawn(async move {
            if tx.send(start).await.is_err() {
                return;
            }
            for p in data.chunks(piece.max(1)) {
                let msg = pb::PushRequest {
                    msg: Some(pb::push_request::Msg::Data(p.to_vec().into())),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        c.push(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    })
}

fn key(ns: &str, data: &[u8]) -> Key {
    (ns.to_string(), sha256_digest(data))
}

impl Run {
    fn ctx(&self) -> String {
        format!(
            "seed {} (STRATA_CRASH_SEED={}), round {}, after {} kills",
            self.seed, self.seed, self.round, self.n.kills
        )
    }

    fn ns(&mut self) -> &'static str {
        NAMESPACES[usize::from(self.rng.random_bool(0.3))]
    }

    fn daemon_args(&mut self) -> Vec<String> {
        let block = [64, 256, 1024][self.rng.random_range(0..3)];
        let level = [1, 3][self.rng.random_range(0..2)];
        // Sometimes a background collector that runs every second, or as soon
        // as a few chunks are unreferenced, racing everything else.
        let (every, unref) = [
            ("10m", "10000"),
            ("1s", "10000"),
            ("10m", "20"),
            ("1s", "1"),
        ][self.rng.random_range(0..4)];
        let (every, unref) = if self.gc {
            (every, unref)
        } else {
            ("1000d", "1000000000000")
        };
        vec![
            "--block-kib".into(),
            block.to_string(),
            "--zstd-level".into(),
            level.to_string(),
            "--shutdown-grace".into(),
            "5".into(),
            "--gc-interval".into(),
            every.into(),
            "--gc-unreferenced".into(),
            unref.into(),
        ]
    }

    fn spawn(&mut self) -> ChildDaemon {
        let args = self.daemon_args();
        ChildDaemon::spawn(&self.data, &self.socket, &self.log, &args)
    }

    fn present(&self) -> Vec<Key> {
        self.model
            .iter()
            .filter(|(_, e)| e.st == St::Present)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn pick_present(&mut self, avoid: &BTreeSet<Key>) -> Option<Key> {
        let p: Vec<Key> = self
            .present()
            .into_iter()
            .filter(|k| !avoid.contains(k))
            .collect();
        (!p.is_empty()).then(|| p[self.rng.random_range(0..p.len())].clone())
    }

    /// Records the outcome of a push: acknowledged, or cut off by a kill.
    fn pushed(&mut self, k: Key, data: Arc<Vec<u8>>, acked: bool) {
        let e = self.model.entry(k.clone()).or_insert(Entry {
            data,
            st: St::Absent,
        });
        if acked {
            e.st = St::Present;
        } else if e.st != St::Present {
            e.st = St::Maybe;
            self.cut.insert(k);
        }
    }

    fn check_push(&self, k: &Key, data: &[u8], r: &pb::PushResponse) {
        assert_eq!(
            (&r.digest, r.size),
            (&k.1, data.len() as u64),
            "{}: push answer",
            self.ctx()
        );
    }

    /// After a (re)start: everything the model promises, then `verify --deep`.
    async fn check(&mut self, c: &mut Client) {
        let ctx = self.ctx();
        let keys: Vec<Key> = self.model.keys().cloned().collect();
        for k in keys {
            let (st, data) = {
                let e = &self.model[&k];
                (e.st, e.data.clone())
            };
            let what = format!("{ctx}: {}/{} ({:?})", k.0, k.1, st);
            let got = tokio::time::timeout(STEP, read_range(c, &k.0, &k.1, 0, 0))
                .await
                .unwrap_or_else(|_| panic!("{what}: read timed out"));
            let new_st = match (st, got) {
                (St::Present | St::Maybe, Ok(got)) => {
                    assert_exact(&got, &data, &what);
                    assert_eq!(sha256_digest(&got), k.1, "{what}");
                    St::Present
                }
                (St::Maybe | St::Absent, Err(e)) if e.code() == Code::NotFound => St::Absent,
                (St::Absent, Ok(got)) => panic!(
                    "{what}: must be absent (never acknowledged, or deleted), yet reads {} bytes",
                    got.len()
                ),
                (_, Err(e)) => panic!("{what}: read failed: {e:?}"),
            };
            if st == St::Maybe {
                if self.cut.contains(&k) {
                    match new_st {
                        St::Present => self.n.cut_pushes_present += 1,
                        _ => self.n.cut_pushes_absent += 1,
                    }
                }
                self.model.get_mut(&k).unwrap().st = new_st;
            }
        }
        self.cut.clear();
        // Nothing but the model's blobs is listed: a partial blob would show up here.
        let mut total = 0u64;
        let mut contents = BTreeSet::new();
        for ns in NAMESPACES {
            let listed = tokio::time::timeout(
                STEP,
                c.list(pb::ListRequest {
                    namespace: ns.into(),
                    label_filters: vec![],
                }),
            )
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{ctx}: list {ns}: {e:?}"))
            .into_inner()
            .blobs;
            let got: BTreeMap<String, u64> =
                listed.iter().map(|b| (b.digest.clone(), b.size)).collect();
            let want: BTreeMap<String, u64> = self
                .model
                .iter()
                .filter(|((n, _), e)| n == ns && e.st == St::Present)
                .map(|((_, d), e)| (d.clone(), e.data.len() as u64))
                .collect();
            for (d, size) in &got {
                assert_eq!(
                    want.get(d),
                    Some(size),
                    "{ctx}: namespace {ns} lists {d} ({size} bytes), which the workload never had acknowledged or saw cut off; the model holds {:?}",
                    self.model.get(&(ns.to_string(), d.clone())).map(|e| (e.st, e.data.len()))
                );
            }
            assert_eq!(got, want, "{ctx}: namespace {ns}: listed vs expected");
            total += got.len() as u64;
            // A compressed blob's tar is a content of its own, shared with
            // the tar's other wraps, when no namespace holds the tar itself.
            for b in &listed {
                if !b.shares_plain_of.is_empty() {
                    contents.insert(b.shares_plain_of.clone());
                }
            }
            contents.extend(got.into_keys());
        }
        let s = c.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        assert_eq!(
            (s.blobs, s.contents),
            (total, contents.len() as u64),
            "{ctx}: stats blobs/contents"
        );
        let v = verify_online(&self.socket, &ctx).await;
        assert_eq!(
            (
                v["blobs"].as_u64(),
                v["contents"].as_u64(),
                v["deep_checked"].as_u64()
            ),
            (
                Some(total),
                Some(contents.len() as u64),
                Some(contents.len() as u64)
            ),
            "{ctx}: verify counts: {v}"
        );
        assert_eq!(v["chunks"].as_u64(), Some(s.chunks), "{ctx}: {v}");
        // Keys shown absent after a restart have done their job.
        self.model.retain(|_, e| e.st != St::Absent);
    }

    /// One operation that runs to completion: its answer is binding.
    async fn op(&mut self, c: &mut Client) {
        let ctx = self.ctx();
        let present = self.present().len();
        let roll = self.rng.random_range(0..100);
        match roll {
            // A new blob through gRPC.
            0..=34 => {
                let ns = self.ns();
                let data = Arc::new(self.gen.blob());
                let k = key(ns, &data);
                let piece = [1 << 10, 64 << 10, 1 << 20, 8 << 20][self.rng.random_range(0..4)];
                let expected = if self.rng.random_bool(0.3) {
                    k.1.clone()
                } else {
                    String::new()
                };
                let t0 = Instant::now();
                let h = spawn_push(c, ns, &expected, data.clone(), piece);
                let r = tokio::time::timeout(STEP, h)
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{ctx}: push of {} bytes: {e:?}", data.len()));
                self.timing.record(data.len(), t0.elapsed());
                self.check_push(&k, &data, &r);
                self.n.acked_pushes += 1;
                self.pushed(k, data, true);
            }
            // New blobs through the CLI.
            35..=44 => {
                let ns = self.ns();
                let mut items = Vec::new();
                let mut args = vec![
                    "--socket".to_string(),
                    self.socket.display().to_string(),
                    "push".into(),
                    "-n".into(),
                    ns.into(),
                ];
                for _ in 0..self.rng.random_range(1..=2) {
                    let data = Arc::new(self.gen.blob());
                    let path = self.files.join(format!("{}.bin", self.gen.files));
                    self.gen.files += 1;
                    std::fs::write(&path, &*data).unwrap();
                    args.push(path.display().to_string());
                    items.push((key(ns, &data), data));
                }
                let out = cli(args.clone()).await;
                for a in &args[5..] {
                    std::fs::remove_file(a).unwrap();
                }
                assert!(
                    out.status.success(),
                    "{ctx}: strata push: {}",
                    text_of(&out)
                );
                let stdout = String::from_utf8(out.stdout).unwrap();
                let lines: Vec<&str> = stdout.lines().collect();
                assert_eq!(lines.len(), items.len(), "{ctx}: {stdout}");
                for (line, (k, data)) in lines.iter().zip(items) {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    assert_eq!(
                        (f[0], f[1]),
                        (k.1.as_str(), data.len().to_string().as_str()),
                        "{ctx}: strata push printed {line:?}"
                    );
                    self.n.cli_pushes += 1;
                    self.n.acked_pushes += 1;
                    self.pushed(k, data, true);
                }
            }
            // A blob already stored, again (same or other namespace): dedup paths.
            45..=52 => {
                let Some(old) = self.pick_present(&BTreeSet::new()) else {
                    return;
                };
                let data = self.model[&old].data.clone();
                let ns = self.ns();
                let k = key(ns, &data);
                let r = common::push_as(c, ns, "", &data, 256 << 10)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: re-push: {e:?}"));
                self.check_push(&k, &data, &r);
                assert!(r.already_stored, "{ctx}: {} was stored already", k.1);
                self.n.acked_pushes += 1;
                self.pushed(k, data, true);
            }
            // Deletes: more of them as the store fills up.
            53..=66 => {
                let n = if present > 24 { present - 16 } else { 1 };
                for _ in 0..n {
                    let Some(k) = self.pick_present(&BTreeSet::new()) else {
                        return;
                    };
                    c.delete(pb::DeleteRequest {
                        namespace: k.0.clone(),
                        digest: k.1.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: delete {k:?}: {e:?}"));
                    self.n.deletes += 1;
                    self.model.get_mut(&k).unwrap().st = St::Absent;
                    let e = common::read_range(c, &k.0, &k.1, 0, 0).await.unwrap_err();
                    assert_eq!(e.code(), Code::NotFound, "{ctx}: read after delete");
                }
            }
            // Reads: whole, ranged, or through `strata cat`.
            67..=84 => {
                let Some(k) = self.pick_present(&BTreeSet::new()) else {
                    return;
                };
                let data = self.model[&k].data.clone();
                self.n.reads += 1;
                match self.rng.random_range(0..4) {
                    0 => {
                        let out = cli(vec![
                            "--socket".into(),
                            self.socket.display().to_string(),
                            "cat".into(),
                            "-n".into(),
                            k.0.clone(),
                            k.1.clone(),
                        ])
                        .await;
                        assert!(out.status.success(), "{ctx}: strata cat: {}", text_of(&out));
                        assert_exact(&out.stdout, &data, &format!("{ctx}: strata cat {k:?}"));
                    }
                    1 => {
                        let got = read_range(c, &k.0, &k.1, 0, 0).await.unwrap();
                        assert_exact(&got, &data, &format!("{ctx}: read {k:?}"));
                    }
                    _ => {
                        let off = self.rng.random_range(0..=data.len());
                        let len = self.rng.random_range(1..=300_000);
                        let got = read_range(c, &k.0, &k.1, off as u64, len as u64)
                            .await
                            .unwrap();
                        let end = (off + len).min(data.len());
                        assert_exact(
                            &got,
                            &data[off..end],
                            &format!("{ctx}: read {k:?} at {off} length {len}"),
                        );
                    }
                }
            }
            // Garbage collection (what deletes released), with nothing else
            // running: afterwards no chunk is left unreferenced.
            85..=88 => {
                if !self.gc {
                    return;
                }
                let r = tokio::time::timeout(STEP, c.gc(pb::GcRequest::default()))
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{ctx}: gc: {e:?}"))
                    .into_inner();
                self.n.gcs += 1;
                self.n.packs_rewritten += r.packs_rewritten + r.packs_removed;
                let s = c.stats(pb::StatsRequest {}).await.unwrap().into_inner();
                assert_eq!(s.unreferenced_chunks, 0, "{ctx}: after gc {r:?}");
            }
            // A push whose expected digest is wrong: refused, nothing stored.
            89..=92 => {
                let ns = self.ns();
                let data = Arc::new(self.gen.blob());
                let k = key(ns, &data);
                let wrong = sha256_digest(b"not this");
                let e = common::push_as(c, ns, &wrong, &data, 1 << 20)
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::FailedPrecondition, "{ctx}: {e:?}");
                self.n.refused_pushes += 1;
                self.model.entry(k).or_insert(Entry {
                    data,
                    st: St::Absent,
                });
            }
            // A client that dies part way (`strata push -` killed while streaming):
            // nothing is stored, not even the part it sent.
            _ => {
                let ns = self.ns();
                let data = Arc::new(self.gen.fresh(2_200_000, 4_000_000));
                let part = self.rng.random_range(1_100_000..data.len());
                let mut child = Command::new(BIN)
                    .arg("--socket")
                    .arg(&self.socket)
                    .args(["push", "-n", ns, "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let d2 = data.clone();
                // Keep stdin open: the push must not end, the client must die.
                let stdin = tokio::task::spawn_blocking(move || {
                    stdin.write_all(&d2[..part]).unwrap();
                    stdin
                })
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(self.rng.random_range(20..200))).await;
                child.kill().unwrap();
                let out = child.wait_with_output().unwrap();
                drop(stdin);
                assert!(out.stdout.is_empty(), "{ctx}: {}", text_of(&out));
                self.n.abandoned_pushes += 1;
                // Whatever prefix reached the daemon (the CLI sends 1 MiB pieces)
                // must not become a blob.
                let mut ends: Vec<usize> = (1..=part / (1 << 20)).map(|i| i << 20).collect();
                ends.push(part);
                ends.push(data.len());
                for end in ends {
                    let k = key(ns, &data[..end]);
                    self.model.entry(k).or_insert_with(|| Entry {
                        data: Arc::new(data[..end].to_vec()),
                        st: St::Absent,
                    });
                }
            }
        }
    }

    /// Starts operations that are still running when the daemon is killed, kills
    /// it, and records what was and was not acknowledged.
    async fn kill_phase(&mut self, d: ChildDaemon, c: &Client) {
        let ctx = self.ctx();
        let mode = self.rng.random_range(0..100);
        self.n.kills += 1;
        if mode < 10 {
            self.n.idle_kills += 1;
            d.kill();
            return;
        }
        // Aimed at a commit: one push, the kill placed around the time it
        // should take (the pack fsync, the index write, the answer). Otherwise
        // up to three pushes, killed at any point while they stream.
        let aimed = mode < 40;
        let mut flights = Vec::new();
        let mut busy = BTreeSet::new();
        let mut bytes = 0;
        let pushes = if aimed {
            1
        } else {
            self.rng.random_range(1..=3)
        };
        let t0 = Instant::now();
        for _ in 0..pushes {
            let ns = self.ns();
            let data = match self.pick_present(&busy) {
                Some(old) if self.rng.random_bool(0.15) => self.model[&old].data.clone(),
                _ => Arc::new(self.gen.blob()),
            };
            let k = key(ns, &data);
            busy.insert(k.clone());
            bytes += data.len();
            let piece = [16 << 10, 64 << 10, 256 << 10, 1 << 20][self.rng.random_range(0..4)];
            let h = spawn_push(c, ns, "", data.clone(), piece);
            flights.push(InFlight::Push(k, data, h));
        }
        if self.rng.random_bool(0.4) {
            if let Some(k) = self.pick_present(&busy) {
                busy.insert(k.clone());
                let mut cc = c.clone();
                let req = pb::DeleteRequest {
                    namespace: k.0.clone(),
                    digest: k.1.clone(),
                };
                flights.push(InFlight::Delete(
                    k,
                    tokio::spawn(async move { cc.delete(req).await.map(|r| r.into_inner()) }),
                ));
            }
        }
        if self.rng.random_bool(0.4) {
            if let Some(k) = self.pick_present(&busy) {
                let mut cc = c.clone();
                let k2 = k.clone();
                flights.push(InFlight::Read(
                    k,
                    tokio::spawn(async move { read_range(&mut cc, &k2.0, &k2.1, 0, 0).await }),
                ));
            }
        }
        // (The draw comes first: a seed gives the same workload with gc off.)
        if self.rng.random_bool(0.3) && self.gc {
            let mut cc = c.clone();
            flights.push(InFlight::Gc(tokio::spawn(async move {
                cc.gc(pb::GcRequest::default())
                    .await
                    .map(|r| r.into_inner())
            })));
        }
        if self.rng.random_bool(0.2) {
            let ns = self.ns();
            let data = Arc::new(self.gen.blob());
            let k = key(ns, &data);
            if !busy.contains(&k) {
                busy.insert(k.clone());
                let path = self.files.join(format!("{}.bin", self.gen.files));
                self.gen.files += 1;
                std::fs::write(&path, &*data).unwrap();
                let child = Command::new(BIN)
                    .arg("--socket")
                    .arg(&self.socket)
                    .args(["push", "-n", ns])
                    .arg(&path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                flights.push(InFlight::Cli(vec![(k, data)], path, child));
            }
        }
        let expect = self.timing.predict(bytes).as_secs_f64();
        let at = if aimed {
            self.n.commit_kills += 1;
            expect * self.rng.random_range(0.5..1.3)
        } else {
            self.n.stream_kills += 1;
            expect * self.rng.random_range(0.0..1.2)
        };
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(at)).into()).await;
        d.kill();
        for (i, f) in flights.into_iter().enumerate() {
            match f {
                InFlight::Push(k, data, h) => {
                    let r = tokio::time::timeout(STEP, h)
                        .await
                        .unwrap_or_else(|_| panic!("{ctx}: a push hung after the kill"))
                        .unwrap();
                    match r {
                        Ok(r) => {
                            self.check_push(&k, &data, &r);
                            self.n.acked_pushes += 1;
                            if i == 0 && aimed {
                                self.n.commit_kills_late += 1;
                            }
                            self.pushed(k, data, true);
                        }
                        Err(_) => {
                            self.n.cut_pushes += 1;
                            self.pushed(k, data, false);
                        }
                    }
                }
                InFlight::Delete(k, h) => {
                    let r = tokio::time::timeout(STEP, h)
                        .await
                        .unwrap_or_else(|_| panic!("{ctx}: a delete hung after the kill"))
                        .unwrap();
                    let e = self.model.get_mut(&k).unwrap();
                    match r {
                        Ok(_) => {
                            self.n.deletes += 1;
                            e.st = St::Absent;
                        }
                        Err(s) => {
                            assert_ne!(s.code(), Code::NotFound, "{ctx}: delete of {k:?}");
                            self.n.cut_deletes += 1;
                            e.st = St::Maybe;
                        }
                    }
                }
                InFlight::Gc(h) => {
                    let r = tokio::time::timeout(STEP, h)
                        .await
                        .unwrap_or_else(|_| panic!("{ctx}: gc hung after the kill"))
                        .unwrap();
                    match r {
                        Ok(r) => {
                            self.n.gcs += 1;
                            self.n.packs_rewritten += r.packs_rewritten + r.packs_removed;
                        }
                        Err(_) => self.n.cut_gcs += 1,
                    }
                }
                InFlight::Read(k, h) => {
                    let r = tokio::time::timeout(STEP, h)
                        .await
                        .unwrap_or_else(|_| panic!("{ctx}: a read hung after the kill"))
                        .unwrap();
                    if let Ok(got) = r {
                        // A read that ends without an error must have everything.
                        assert_exact(
                            &got,
                            &self.model[&k].data,
                            &format!("{ctx}: read of {k:?} across the kill"),
                        );
                    }
                }
                InFlight::Cli(items, path, child) => {
                    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
                        .await
                        .unwrap()
                        .unwrap();
                    std::fs::remove_file(path).unwrap();
                    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                    let printed: Vec<&str> = stdout
                        .lines()
                        .filter_map(|l| l.split_whitespace().next())
                        .collect();
                    assert_eq!(
                        out.status.success(),
                        printed.len() == items.len(),
                        "{ctx}: strata push across the kill: {}",
                        text_of(&out)
                    );
                    for (k, data) in items {
                        let acked = printed.contains(&k.1.as_str());
                        if acked {
                            self.n.acked_pushes += 1;
                            self.n.cli_pushes += 1;
                        } else {
                            self.n.cut_pushes += 1;
                        }
                        self.pushed(k, data, acked);
                    }
                }
            }
        }
    }

    async fn round(&mut self) {
        self.round += 1;
        let mut d = self.spawn();
        if self.rng.random_bool(0.08) {
            // Killed while it opens the store (recovering the index, trimming packs).
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..60))).await;
            d.kill();
            self.n.kills += 1;
            self.n.startup_kills += 1;
            d = self.spawn();
        }
        let mut c = d.ready().await;
        self.check(&mut c).await;
        for _ in 0..self.rng.random_range(2..=6) {
            self.op(&mut c).await;
        }
        self.kill_phase(d, &c).await;
    }

    fn log_count(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(what)
            .count()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    Some(
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => v.parse(),
        }
        .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_blobs_survive_sigkill_at_random_moments() {
    let seed = env_u64("STRATA_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let kills = env_u64("STRATA_CRASH_KILLS").unwrap_or(40);
    let gc = env_u64("STRATA_CRASH_GC") != Some(0);
    println!(
        "crash test: seed {seed}, {kills} kills, gc {} (replay: STRATA_CRASH_SEED={seed} STRATA_CRASH_KILLS={kills}{})",
        if gc { "on" } else { "off" },
        if gc { "" } else { " STRATA_CRASH_GC=0" }
    );
    // STRATA_CRASH_DIR keeps the data directory and the daemon's log for a
    // post-mortem; by default both go with a temporary directory.
    let tmp = tempfile::tempdir().unwrap();
    let root = match std::env::var_os("STRATA_CRASH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            assert!(
                std::fs::read_dir(&d).unwrap().next().is_none(),
                "STRATA_CRASH_DIR={} is not empty",
                d.display()
            );
            println!("crash test: keeping the store and log in {}", d.display());
            d
        }
        None => tmp.path().to_path_buf(),
    };
    let files = root.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let gen = Gen::new(&mut rng);
    let mut run = Run {
        seed,
        rng,
        gen,
        data: root.join("data"),
        socket: root.join("strata.sock"),
        log: root.join("daemon.log"),
        files,
        model: BTreeMap::new(),
        cut: BTreeSet::new(),
        n: Counts::default(),
        round: 0,
        timing: Timing::default(),
        gc,
    };
    let t0 = Instant::now();
    while run.n.kills < kills {
        run.round().await;
        if run.round.is_multiple_of(50) {
            println!(
                "  round {}: {} kills, {} blobs held, {:.0} s",
                run.round,
                run.n.kills,
                run.present().len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    // Last restart: check everything, stop cleanly, verify offline too.
    run.round += 1;
    let mut d = run.spawn();
    let mut c = d.ready().await;
    run.check(&mut c).await;
    drop(c);
    d.terminate();
    let out = cli(vec![
        "verify".into(),
        "--deep".into(),
        "--data-dir".into(),
        run.data.display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}: offline verify: {}",
        run.ctx(),
        text_of(&out)
    );
    let n = &run.n;
    let trimmed = run.log_count("trimmed uncommitted bytes from a pack");
    let removed = run.log_count("removed a pack no commit refers to");
    println!(
        "crash test: seed {seed}: {} kills in {} rounds, {:.1} s: OK\n  kills: {} while pushes streamed, {} aimed at a push's commit ({} landed after its answer), {} idle, {} during start-up\n  pushes: {} acknowledged ({} through the CLI), {} cut off by a kill (afterwards {} complete, {} absent), {} refused, {} abandoned by the client\n  deletes: {} acknowledged, {} cut off; reads: {}\n  garbage collections: {} answered (rewriting or removing {} packs), {} cut off, {} logged as collecting (background ones too)\n  restarts that trimmed a pack tail: {trimmed}, that removed an uncommitted pack: {removed}; blobs held at the end: {}",
        n.kills,
        run.round,
        t0.elapsed().as_secs_f64(),
        n.stream_kills,
        n.commit_kills,
        n.commit_kills_late,
        n.idle_kills,
        n.startup_kills,
        n.acked_pushes,
        n.cli_pushes,
        n.cut_pushes,
        n.cut_pushes_present,
        n.cut_pushes_absent,
        n.refused_pushes,
        n.abandoned_pushes,
        n.deletes,
        n.cut_deletes,
        n.reads,
        n.gcs,
        n.packs_rewritten,
        n.cut_gcs,
        run.log_count("garbage collected"),
        run.present().len(),
    );
    let log = std::fs::read_to_string(&run.log).unwrap_or_default();
    for bad in [
        "panicked",
        "shorter than its committed length",
        "garbage collection failed",
    ] {
        assert!(
            !log.contains(bad),
            "{}: the daemon log says {bad:?}:\n{}",
            run.ctx(),
            log_tail(&run.log)
        );
    }
    // The kills must have landed where it matters, or the test proved little.
    if kills >= 20 {
        assert!(
            n.cut_pushes > 0 && trimmed + removed > 0,
            "seed {seed}: no kill cut a push off ({} cut, {trimmed} trims)",
            n.cut_pushes
        );
    }
}

/// The packs of a store, by id.
fn packs(data: &Path) -> BTreeMap<u32, PathBuf> {
    std::fs::read_dir(data.join("packs"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let id = name.strip_suffix(".pack")?.parse().ok()?;
            Some((id, e.path()))
        })
        .collect()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_pack_tail_is_trimmed_at_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let socket = tmp.path().join("strata.sock");
    let log = tmp.path().join("daemon.log");
    let shared = noise(400_000, 7);
    let mut blobs: Vec<Vec<u8>> = vec![
        tar_of(&[("a", &shared), ("b", &noise(300_000, 8))], 1),
        tar_of(&[("a2", &shared), ("t.txt", b"hello\n")], 2),
        noise(700_000, 9),
        b"small".to_vec(),
    ];
    let mut d = ChildDaemon::spawn(&data, &socket, &log, &[]);
    let mut c = d.ready().await;
    for b in &blobs {
        let r = common::push_as(&mut c, "", "", b, 100_000).await.unwrap();
        assert_eq!(r.digest, sha256_digest(b));
    }
    drop(c);
    d.terminate();

    // One pack, written by every push in turn; give it a torn record as tail,
    // as a push killed while writing would, and add a pack nobody committed.
    let p = packs(&data);
    assert_eq!(p.len(), 1, "{p:?}");
    let (&id, last) = p.iter().next_back().unwrap();
    let committed = file_len(last);
    let mut garbage = b"STRB\x01\0\0\0".to_vec();
    garbage.extend_from_slice(&3u32.to_le_bytes());
    garbage.extend_from_slice(&200_000u32.to_le_bytes());
    garbage.extend_from_slice(&150_000u32.to_le_bytes());
    garbage.extend_from_slice(&noise(60_000, 10));
    OpenOptions::new()
        .append(true)
        .open(last)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    assert_eq!(file_len(last), committed + garbage.len() as u64);
    let stray = data.join("packs").join(format!("{:08}.pack", id + 1));
    std::fs::write(&stray, noise(10_000, 11)).unwrap();

    let mut d = ChildDaemon::spawn(&data, &socket, &log, &[]);
    let mut c = d.ready().await;
    assert_eq!(
        file_len(last),
        committed,
        "the uncommitted tail was not trimmed"
    );
    assert!(!stray.exists(), "a pack no commit refers to was kept");
    let check = |c: Client, blobs: Vec<Vec<u8>>, socket: PathBuf, what: &'static str| async move {
        let mut c = c;
        for b in &blobs {
            let got = read_range(&mut c, "", &sha256_digest(b), 0, 0)
                .await
                .unwrap();
            assert_exact(&got, b, what);
        }
        let v = verify_online(&socket, what).await;
        assert_eq!(v["blobs"].as_u64(), Some(blobs.len() as u64), "{v}");
    };
    check(c.clone(), blobs.clone(), socket.clone(), "after the trim").await;

    // New pushes append right where the committed bytes end.
    for b in [tar_of(&[("c", &noise(500_000, 12))], 3), noise(90_000, 13)] {
        let r = common::push_as(&mut c, "", "", &b, 1 << 20).await.unwrap();
        assert_eq!(r.digest, sha256_digest(&b));
        blobs.push(b);
    }
    assert!(file_len(last) > committed);
    let head = std::fs::read(last).unwrap()[committed as usize..committed as usize + 4].to_vec();
    assert_eq!(
        &head, b"STRB",
        "the next record starts at the committed length"
    );
    check(
        c.clone(),
        blobs.clone(),
        socket.clone(),
        "after pushing on the trimmed pack",
    )
    .await;

    // And again after a kill.
    drop(c);
    d.kill();
    let mut d = ChildDaemon::spawn(&data, &socket, &log, &[]);
    let c = d.ready().await;
    check(c, blobs.clone(), socket.clone(), "after a kill").await;
    d.terminate();
    let out = cli(vec![
        "verify".into(),
        "--deep".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "offline verify: {}", text_of(&out));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("trimmed uncommitted bytes from a pack"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
