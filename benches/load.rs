//! Load test: many concurrent clients pushing and reading for a while, each on
//! its own connection to a running daemon, with latency percentiles, throughput
//! and an error count (which must be 0).
//!
//! ```sh
//! cargo bench --bench load -- [--clients 64] [--seconds 60] [--socket PATH]
//! cargo bench --bench load -- --strata target/release/strata --data-dir /var/tmp/d
//! ```
//!
//! `--socket` (or STRATA_SOCKET) reaches a running daemon; `--strata BIN
//! --data-dir DIR` starts `BIN serve` on DIR for the run and stops it after.
//! Without either it does nothing, so a plain `cargo bench` skips it.
//! `benches/load.sh` starts a daemon, runs this twice and samples the daemon's
//! RSS every second.
//!
//! Every client loops until the time is up: it pushes a layer-like tar (200 KB
//! to 2 MB, mostly files drawn from a pool every client shares, so pushes dedup
//! against each other, plus a few files of fresh random bytes), reads a random
//! earlier blob (of any client) in full and checks its sha256, reads a random
//! range of one and checks the bytes, and stats one. A non-OK status, a wrong
//! digest, size or byte, or an operation taking over two minutes is an error.
//! Blobs are remembered as (digest, seed, size) in a bounded list and rebuilt
//! from the seed when their bytes are needed, so the generator's memory stays
//! flat however long it runs.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a short
//! smoke test against a daemon started in-process instead.

use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::proto::strata::v1 as pb;
use tonic::transport::Channel;

type Client = pb::store_client::StoreClient<Channel>;

const NAMESPACE: &str = "load";
/// Data messages of a push, as the CLI sends them.
const PIECE: usize = 1 << 20;
/// Blobs remembered for reads, over all clients.
const HISTORY: usize = 4096;
/// Longest a single operation may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
const LAYER_MIN: usize = 200_000;
const LAYER_MAX: usize = 2_000_000;

struct Args {
    clients: usize,
    seconds: f64,
    socket: Option<PathBuf>,
    strata: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    seed: u64,
    pool_seed: u64,
    pool_files: usize,
}

const USAGE: &str = "usage: cargo bench --bench load -- [--clients N] [--seconds S] \
[--socket PATH | --strata BIN --data-dir DIR] [--seed N] [--pool-seed N] [--pool-files N]";

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        clients: 64,
        seconds: 60.0,
        socket: std::env::var_os("STRATA_SOCKET")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        strata: None,
        data_dir: None,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        pool_seed: 0,
        pool_files: 384,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let bad = |v: &str| format!("{flag} {v:?}: not a number\n{USAGE}");
        match flag.as_str() {
            "--clients" => {
                let v = value()?;
                a.clients = v.parse().map_err(|_| bad(&v))?;
            }
            "--seconds" => {
                let v = value()?;
                a.seconds = v.parse().map_err(|_| bad(&v))?;
            }
            "--seed" => {
                let v = value()?;
                a.seed = v.parse().map_err(|_| bad(&v))?;
            }
            "--pool-seed" => {
                let v = value()?;
                a.pool_seed = v.parse().map_err(|_| bad(&v))?;
            }
            "--pool-files" => {
                let v = value()?;
                a.pool_files = v.parse().map_err(|_| bad(&v))?;
            }
            "--socket" => a.socket = Some(value()?.into()),
            "--strata" => a.strata = Some(value()?.into()),
            "--data-dir" => a.data_dir = Some(value()?.into()),
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    if a.clients == 0 || a.pool_files == 0 || a.seconds.is_nan() || a.seconds <= 0.0 {
        return Err(format!(
            "--clients, --pool-files and --seconds must be positive\n{USAGE}"
        ));
    }
    if a.strata.is_some() != a.data_dir.is_some() {
        return Err(format!("--strata and --data-dir go together\n{USAGE}"));
    }
    Ok(a)
}

// ------------------------------------------------------------------ content

const WORDS: &[&str] = &[
    "the",
    "layer",
    "package",
    "library",
    "config",
    "usr",
    "lib",
    "share",
    "doc",
    "bin",
    "return",
    "function",
    "static",
    "const",
    "struct",
    "include",
    "define",
    "if",
    "else",
    "while",
    "for",
    "int",
    "char",
    "void",
    "error",
    "value",
    "version",
    "license",
    "copyright",
    "debian",
    "python3",
    "module",
    "import",
    "from",
    "class",
    "self",
    "data",
    "file",
    "path",
    "0",
    "1",
    "42",
    "255",
    "4096",
    "{",
    "}",
    "(",
    ")",
    ";",
    "=",
    "\n",
    "\t",
    "  ",
    "#",
];

/// `size` bytes of random bytes (like a binary) or, one time in two, of
/// random words (like source or text: zstd makes them 3-4 times smaller).
fn body(rng: &mut StdRng, size: usize, text: bool, out: &mut Vec<u8>) {
    out.clear();
    if text {
        while out.len() < size {
            out.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
            out.push(b' ');
        }
        out.truncate(size);
    } else {
        out.resize(size, 0);
        rng.fill_bytes(out);
    }
}

/// The shared pool of file bodies: half text-like, half random bytes, sizes
/// spread log-uniformly from 1 KiB to 512 KiB.
fn make_pool(seed: u64, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let size = (1024.0 * 512f64.powf(rng.random::<f64>())) as usize;
            let mut b = Vec::with_capacity(size + 16);
            body(&mut rng, size, i % 2 == 1, &mut b);
            Bytes::from(b)
        })
        .collect()
}

/// The layer named by `seed`: the same bytes every time. Files from the pool,
/// with one to three fresh files (1-64 KiB, random bytes or words) among them, and mtimes of
/// its own so no two layers share their headers.
fn make_layer(pool: &[Bytes], seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let target = rng.random_range(LAYER_MIN..=LAYER_MAX);
    let mtime = rng.random_range(1_500_000_000u64..1_800_000_000);
    let mut fresh_left = rng.random_range(1..=3u32);
    let mut b = tar::Builder::new(Vec::with_capacity(target + (768 << 10)));
    let append = |b: &mut tar::Builder<Vec<u8>>, name: &str, body: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mtime(mtime);
        h.set_mode(0o644);
        b.append_data(&mut h, name, body).expect("tar in memory");
    };
    let mut fresh = Vec::new();
    let mut n = 0u32;
    while b.get_ref().len() < target || fresh_left > 0 {
        if fresh_left > 0 && (b.get_ref().len() >= target || rng.random_bool(0.2)) {
            let (size, text) = (rng.random_range(1024..=65536), rng.random_bool(0.5));
            body(&mut rng, size, text, &mut fresh);
            append(&mut b, &format!("var/lib/fresh/{seed:016x}-{n}"), &fresh);
            fresh_left -= 1;
        } else {
            let k = rng.random_range(0..pool.len());
            append(&mut b, &format!("usr/share/pool/{k:04}-{n}"), &pool[k]);
        }
        n += 1;
    }
    b.into_inner().expect("tar in memory")
}

fn sha256_hex(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
    )
}

// ------------------------------------------------------------------ the run

#[derive(Clone)]
struct Blob {
    digest: String,
    seed: u64,
    size: u64,
}

struct Shared {
    pool: Vec<Bytes>,
    history: Mutex<VecDeque<Blob>>,
    socket: PathBuf,
    seed: u64,
}

impl Shared {
    fn pick(&self, rng: &mut StdRng) -> Option<Blob> {
        let h = self.history.lock();
        if h.is_empty() {
            return None;
        }
        Some(h[rng.random_range(0..h.len())].clone())
    }

    fn remember(&self, b: Blob) {
        let mut h = self.history.lock();
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(b);
    }

    /// The bytes of a remembered blob, rebuilt off the async threads.
    async fn rebuild(self: &Arc<Self>, seed: u64) -> Vec<u8> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || make_layer(&me.pool, seed))
            .await
            .expect("layer builder")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    Push,
    Read,
    Range,
    Stat,
}

const OPS: [(Op, &str); 4] = [
    (Op::Push, "push"),
    (Op::Read, "read (whole blob, sha256 checked)"),
    (Op::Range, "ranged read (bytes checked)"),
    (Op::Stat, "stat"),
];

#[derive(Default)]
struct Tally {
    /// Latency of each operation, in microseconds.
    micros: BTreeMap<Op, Vec<u64>>,
    errors: BTreeMap<Op, u64>,
    messages: Vec<String>,
    pushed: u64,
    read_whole: u64,
    read_range: u64,
    bytes_added: u64,
    already_stored: u64,
}

impl Tally {
    fn record(&mut self, op: Op, t: Instant) {
        self.micros
            .entry(op)
            .or_default()
            .push(t.elapsed().as_micros() as u64);
    }

    fn error(&mut self, op: Op, msg: String) {
        *self.errors.entry(op).or_default() += 1;
        if self.messages.len() < 8 {
            self.messages.push(msg);
        }
    }

    fn merge(&mut self, o: Tally) {
        for (op, v) in o.micros {
            self.micros.entry(op).or_default().extend(v);
        }
        for (op, n) in o.errors {
            *self.errors.entry(op).or_default() += n;
        }
        for m in o.messages {
            if self.messages.len() < 20 && !self.messages.contains(&m) {
                self.messages.push(m);
            }
        }
        self.pushed += o.pushed;
        self.read_whole += o.read_whole;
        self.read_range += o.read_range;
        self.bytes_added += o.bytes_added;
        self.already_stored += o.already_stored;
    }
}

fn status_msg(what: &str, s: &tonic::Status) -> String {
    format!("{what}: {:?}: {}", s.code(), s.message())
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {OP_TIMEOUT:?} (the load generator's timeout)"
        ))),
    }
}

async fn push(c: &mut Client, data: Bytes) -> Result<pb::PushResponse, tonic::Status> {
    let mut msgs = vec![pb::PushRequest {
        msg: Some(pb::push_request::Msg::Start(pb::PushStart {
            namespace: NAMESPACE.into(),
            ..Default::default()
        })),
    }];
    let mut off = 0;
    while off < data.len() {
        let end = (off + PIECE).min(data.len());
        msgs.push(pb::PushRequest {
            msg: Some(pb::push_request::Msg::Data(data.slice(off..end))),
        });
        off = end;
    }
    Ok(c.push(tokio_stream::iter(msgs)).await?.into_inner())
}

fn read_req(digest: &str, offset: u64, length: u64) -> pb::ReadRequest {
    pb::ReadRequest {
        namespace: NAMESPACE.into(),
        digest: digest.into(),
        offset,
        length,
        ..Default::default()
    }
}

/// A whole read: its sha256 and length, without keeping the bytes.
async fn read_hash(c: &mut Client, digest: &str) -> Result<(String, u64), tonic::Status> {
    let mut s = c.read(read_req(digest, 0, 0)).await?.into_inner();
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0u64;
    while let Some(m) = s.message().await? {
        h.update(&m.data);
        n += m.data.len() as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finish())), n))
}

async fn read_bytes(c: &mut Client, req: pb::ReadRequest) -> Result<Vec<u8>, tonic::Status> {
    let mut s = c.read(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend_from_slice(&m.data);
    }
    Ok(out)
}

async fn client_loop(id: usize, sh: Arc<Shared>, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    let mut c = match strata::client::connect(&sh.socket).await {
        Ok(c) => c,
        Err(e) => {
            t.error(Op::Push, format!("client {id}: connect: {e}"));
            return t;
        }
    };
    let mut rng =
        StdRng::seed_from_u64(sh.seed ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    while Instant::now() < deadline {
        // Push a new layer (built and hashed before the clock starts).
        let seed: u64 = rng.random();
        let me = sh.clone();
        let (data, want) = tokio::task::spawn_blocking(move || {
            let d = make_layer(&me.pool, seed);
            let w = sha256_hex(&d);
            (Bytes::from(d), w)
        })
        .await
        .expect("layer builder");
        let size = data.len() as u64;
        let t0 = Instant::now();
        let r = timed(push(&mut c, data)).await;
        t.record(Op::Push, t0);
        match r {
            Ok(r) if r.digest == want && r.size == size => {
                t.pushed += size;
                t.bytes_added += r.bytes_added;
                t.already_stored += r.already_stored as u64;
                sh.remember(Blob {
                    digest: want,
                    seed,
                    size,
                });
            }
            Ok(r) => t.error(
                Op::Push,
                format!(
                    "push: answered {} ({} bytes) for {want} ({size} bytes)",
                    r.digest, r.size
                ),
            ),
            Err(s) => t.error(Op::Push, status_msg("push", &s)),
        }

        // Read a random earlier blob in full.
        if let Some(b) = sh.pick(&mut rng) {
            let t0 = Instant::now();
            let r = timed(read_hash(&mut c, &b.digest)).await;
            t.record(Op::Read, t0);
            match r {
                Ok((d, n)) if d == b.digest && n == b.size => t.read_whole += n,
                Ok((d, n)) => t.error(
                    Op::Read,
                    format!(
                        "read {}: got {n} bytes hashing to {d}, expected {} bytes",
                        b.digest, b.size
                    ),
                ),
                Err(s) => t.error(Op::Read, status_msg(&format!("read {}", b.digest), &s)),
            }
        }

        // A random range of a random earlier blob; one in ten to its end.
        if let Some(b) = sh.pick(&mut rng) {
            let offset = rng.random_range(0..b.size);
            let length = if rng.random_bool(0.1) {
                0
            } else {
                rng.random_range(1..=(b.size - offset).min(1 << 20))
            };
            let t0 = Instant::now();
            let r = timed(read_bytes(&mut c, read_req(&b.digest, offset, length))).await;
            t.record(Op::Range, t0);
            match r {
                Ok(got) => {
                    let full = sh.rebuild(b.seed).await;
                    let end = if length == 0 {
                        full.len()
                    } else {
                        (offset + length) as usize
                    };
                    if full.len() as u64 != b.size {
                        t.error(
                            Op::Range,
                            format!("load generator: layer {} did not rebuild", b.seed),
                        );
                    } else if got != full[offset as usize..end] {
                        t.error(
                            Op::Range,
                            format!(
                                "read {} at {offset} length {length}: {} bytes back, not the bytes pushed",
                                b.digest,
                                got.len()
                            ),
                        );
                    } else {
                        t.read_range += got.len() as u64;
                    }
                }
                Err(s) => t.error(
                    Op::Range,
                    status_msg(
                        &format!("read {} at {offset} length {length}", b.digest),
                        &s,
                    ),
                ),
            }
        }

        // Stat one.
        if let Some(b) = sh.pick(&mut rng) {
            let t0 = Instant::now();
            let r = timed(async {
                Ok(c.stat(pb::StatRequest {
                    namespace: NAMESPACE.into(),
                    digest: b.digest.clone(),
                })
                .await?
                .into_inner())
            })
            .await;
            t.record(Op::Stat, t0);
            match r {
                Ok(i) if i.digest == b.digest && i.size == b.size => {}
                Ok(i) => t.error(
                    Op::Stat,
                    format!(
                        "stat {}: answered {} of {} bytes, expected {}",
                        b.digest, i.digest, i.size, b.size
                    ),
                ),
                Err(s) => t.error(Op::Stat, status_msg(&format!("stat {}", b.digest), &s)),
            }
        }
    }
    t
}

struct Outcome {
    tally: Tally,
    elapsed: Duration,
}

async fn run(a: &Args, socket: &Path, pool: Vec<Bytes>) -> Outcome {
    let sh = Arc::new(Shared {
        pool,
        history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        socket: socket.to_path_buf(),
        seed: a.seed,
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.seconds);
    let tasks: Vec<_> = (0..a.clients)
        .map(|id| tokio::spawn(client_loop(id, sh.clone(), deadline)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(Op::Push, format!("client task failed: {e}")),
        }
    }
    Outcome {
        tally,
        elapsed: start.elapsed(),
    }
}

// ------------------------------------------------------------------ report

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> String {
    let m = us as f64 / 1000.0;
    if m < 10.0 {
        format!("{m:.2}")
    } else if m < 100.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.0}")
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn report(a: &Args, o: &mut Outcome, pool_bytes: u64) -> String {
    let secs = o.elapsed.as_secs_f64();
    let t = &mut o.tally;
    let errors: u64 = t.errors.values().sum();
    let mbps = |b: u64| b as f64 / 1e6 / secs;
    let mut s = String::new();
    s += &format!(
        "{} clients for {} s ({secs:.1} s until the last finished its operation), seed {}; \
         layers {}-{} KB from a pool of {} files ({:.1} MB) plus 1-3 fresh files each\n\n",
        a.clients,
        a.seconds,
        a.seed,
        LAYER_MIN / 1000,
        LAYER_MAX / 1000,
        a.pool_files,
        pool_bytes as f64 / 1e6
    );
    s += "| operation | count | per s | p50 ms | p99 ms | max ms | errors |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|\n";
    for (op, name) in OPS {
        let v = t.micros.entry(op).or_default();
        v.sort_unstable();
        s += &format!(
            "| {name} | {} | {:.1} | {} | {} | {} | {} |\n",
            group(v.len() as u64),
            v.len() as f64 / secs,
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(v.last().copied().unwrap_or(0)),
            t.errors.get(&op).copied().unwrap_or(0)
        );
    }
    s += &format!(
        "\nerrors: **{errors}**; pushed {} bytes (**{:.0} MB/s**, {} of them added to disk, {} pushes \
         already stored); read {} bytes (**{:.0} MB/s**: {} whole, {} ranged)\n",
        group(t.pushed),
        mbps(t.pushed),
        group(t.bytes_added),
        t.already_stored,
        group(t.read_whole + t.read_range),
        mbps(t.read_whole + t.read_range),
        group(t.read_whole),
        group(t.read_range),
    );
    if let Some(hwm) = proc_kib("self", "VmHWM") {
        s += &format!("\nload generator peak RSS {} MiB\n", hwm / 1024);
    }
    if !t.messages.is_empty() {
        s += "\nfirst errors:\n\n";
        for m in &t.messages {
            s += &format!("- `{}`\n", m.replace('`', "'"));
        }
    }
    s
}

fn proc_kib(pid: &str, field: &str) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ------------------------------------------------------------------ daemons

/// A daemon started from a binary for the run, stopped with SIGTERM on drop.
struct Child {
    child: std::process::Child,
}

impl Child {
    fn start(bin: &Path, dir: &Path) -> Result<(Child, PathBuf), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("strata.sock");
        let log_path = dir.with_extension("log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = std::process::Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--socket")
            .arg(&socket)
            .args(["--metrics-addr", "off"])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut c = Child { child };
        for _ in 0..400 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok((c, socket));
            }
            if let Ok(Some(st)) = c.child.try_wait() {
                return Err(format!(
                    "the daemon exited ({st}); see {}",
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "the daemon did not open {} in 10 s; see {}",
            socket.display(),
            log_path.display()
        ))
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn bench(a: Args) -> i32 {
    let mut child = None;
    let socket = match (&a.strata, &a.data_dir, &a.socket) {
        (Some(bin), Some(dir), _) => match Child::start(bin, dir) {
            Ok((c, s)) => {
                child = Some(c);
                s
            }
            Err(e) => {
                eprintln!("load: {e}");
                return 2;
            }
        },
        (_, _, Some(s)) => s.clone(),
        _ => {
            eprintln!(
                "load: no daemon given (--socket PATH, STRATA_SOCKET, or --strata BIN --data-dir DIR); \
                 skipped. benches/load.sh runs it on a fresh daemon."
            );
            return 0;
        }
    };
    let rss_before = child.as_ref().and_then(|c| proc_kib(&c.pid(), "VmRSS"));
    let pool = make_pool(a.pool_seed, a.pool_files);
    let pool_bytes = pool.iter().map(|b| b.len() as u64).sum();
    eprintln!(
        "load: {} clients for {} s against {}",
        a.clients,
        a.seconds,
        socket.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut o = rt.block_on(run(&a, &socket, pool));
    let mut text = report(&a, &mut o, pool_bytes);
    if let Some(c) = &child {
        let pid = c.pid();
        text += &format!(
            "\ndaemon RSS {} MiB before, {} MiB after; peak {} MiB\n",
            rss_before.unwrap_or(0) / 1024,
            proc_kib(&pid, "VmRSS").unwrap_or(0) / 1024,
            proc_kib(&pid, "VmHWM").unwrap_or(0) / 1024
        );
    }
    print!("{text}");
    drop(child);
    let errors: u64 = o.tally.errors.values().sum();
    if errors > 0 {
        eprintln!("load: {errors} errors");
        1
    } else {
        0
    }
}

/// `cargo test --all-targets`: a few clients for two seconds against a daemon
/// started in this process, so the load generator itself stays working.
fn smoke() -> i32 {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let a = Args {
        clients: 4,
        seconds: 2.0,
        socket: None,
        strata: None,
        data_dir: None,
        seed: 7,
        pool_seed: 0,
        pool_files: 64,
    };
    let pool = make_pool(a.pool_seed, a.pool_files);
    assert_eq!(make_layer(&pool, 1), make_layer(&pool, 1), "layers rebuild");
    let pool_bytes = pool.iter().map(|b| b.len() as u64).sum();
    let socket = dir.path().join("strata.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut o = rt.block_on(async {
        let mut opts = strata::server::ServeOptions::new(dir.path().to_path_buf());
        opts.socket = socket.clone();
        let daemon = tokio::spawn(strata::server::serve(opts, async {
            let _ = rx.await;
        }));
        for _ in 0..500 {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let o = run(&a, &socket, pool).await;
        let _ = tx.send(());
        daemon.await.expect("daemon task").expect("daemon");
        o
    });
    print!("{}", report(&a, &mut o, pool_bytes));
    let errors: u64 = o.tally.errors.values().sum();
    let pushes = o.tally.micros.get(&Op::Push).map_or(0, |v| v.len());
    if errors > 0 || pushes == 0 || o.tally.read_whole == 0 {
        eprintln!("load smoke test failed: {errors} errors, {pushes} pushes");
        return 1;
    }
    println!("load smoke test: ok");
    0
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench") {
        std::process::exit(smoke());
    }
    match parse_args(&argv) {
        Ok(a) => std::process::exit(bench(a)),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}
