//! Shared test harness: a daemon started in-process on a temporary data
//! directory and socket, and a client for it.
#![allow(dead_code)]

pub mod containerd;
pub mod docker_registry;
pub mod garage;
pub mod serve_child;

use std::path::{Path, PathBuf};
use std::time::Duration;
use strata::proto::strata::v1 as pb;
use strata::server::{self, ServeOptions};
use strata::store::StoreConfig;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub type Client = pb::store_client::StoreClient<Channel>;

pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<strata::Result<()>>>,
}

impl Daemon {
    pub async fn start(dir: &Path) -> Daemon {
        Self::start_with(dir, StoreConfig::default()).await
    }

    pub async fn start_with(dir: &Path, store: StoreConfig) -> Daemon {
        Self::start_opts(dir, store, server::Limits::default()).await
    }

    pub async fn start_opts(dir: &Path, store: StoreConfig, limits: server::Limits) -> Daemon {
        Self::start_custom(dir, |o| {
            o.store = store;
            o.limits = limits;
        })
        .await
    }

    /// A daemon with options set by `f` (socket and data dir already set).
    pub async fn start_custom(dir: &Path, f: impl FnOnce(&mut ServeOptions)) -> Daemon {
        let socket = dir.join("strata.sock");
        let (tx, rx) = oneshot::channel::<()>();
        let mut opts = ServeOptions {
            socket: socket.clone(),
            shutdown_grace: Duration::from_secs(10),
            ..ServeOptions::new(dir.to_path_buf())
        };
        f(&mut opts);
        let task = tokio::spawn(server::serve(opts, async {
            let _ = rx.await;
        }));
        for _ in 0..500 {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            if task.is_finished() {
                panic!("daemon exited: {:?}", task.await);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Daemon {
            dir: dir.to_path_buf(),
            socket,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        strata::client::connect(&self.socket)
            .await
            .expect("connect")
    }

    /// Shuts the daemon down cleanly, as SIGTERM would.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn start_msg(ns: &str, expected: &str) -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(pb::push_request::Msg::Start(pb::PushStart {
            namespace: ns.into(),
            expected_digest: expected.into(),
            ..Default::default()
        })),
    }
}

/// Pushes `data` in pieces of `piece` bytes.
pub async fn push_as(
    c: &mut Client,
    ns: &str,
    expected: &str,
    data: &[u8],
    piece: usize,
) -> Result<pb::PushResponse, tonic::Status> {
    let mut msgs = vec![start_msg(ns, expected)];
    for p in data.chunks(piece.max(1)) {
        msgs.push(pb::PushRequest {
            msg: Some(pb::push_request::Msg::Data(p.to_vec().into())),
        });
    }
    c.push(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

pub async fn push(c: &mut Client, data: &[u8]) -> pb::PushResponse {
    push_as(c, "", "", data, 64 * 1024).await.expect("push")
}

pub async fn read_range(
    c: &mut Client,
    ns: &str,
    digest: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, tonic::Status> {
    let req = pb::ReadRequest {
        namespace: ns.into(),
        digest: digest.into(),
        offset,
        length,
        ..Default::default()
    };
    read_req(c, req).await
}

/// Everything one read returns.
pub async fn read_req(c: &mut Client, req: pb::ReadRequest) -> Result<Vec<u8>, tonic::Status> {
    let mut s = c.read(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend_from_slice(&m.data);
    }
    Ok(out)
}

pub async fn read_all(c: &mut Client, digest: &str) -> Vec<u8> {
    read_range(c, "", digest, 0, 0).await.expect("read")
}

pub async fn stats(c: &mut Client) -> pb::StatsResponse {
    c.stats(pb::StatsRequest {}).await.unwrap().into_inner()
}

/// A deep verify (every block read back, from a bucket where it lives
/// there) finds nothing wrong.
pub async fn verify_deep(c: &mut Client) {
    verify_clean(c, true).await;
}

/// A verification (deep or not) that found nothing wrong; its report.
pub async fn verify_clean(c: &mut Client, deep: bool) -> pb::VerifyResponse {
    let v = c
        .verify(pb::VerifyRequest { deep })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");
    v
}

pub fn sha256_digest(data: &[u8]) -> String {
    strata::Digest::of(data).to_string()
}

/// Deterministic text that compresses like real files do (words, not noise).
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "layer", "image", "store", "blob", "chunk", "digest", "config", "tar", "gzip", "root",
        "usr", "lib",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(WORDS[(x >> 33) as usize % WORDS.len()].as_bytes());
        out.push(if (x >> 20).is_multiple_of(9) {
            b'\n'
        } else {
            b' '
        });
    }
    out.truncate(len);
    out
}

/// Deterministic incompressible bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tar of regular files, with the given mtime on every header.
pub fn tar_of(files: &[(&str, &[u8])], mtime: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mtime(mtime);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *body).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn pack_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Runs `cmd` with `input` on its stdin; its stdout.
pub fn filter(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} {args:?} failed");
    out.stdout
}

/// Python's gzip module (the system zlib): a blob strata keeps by replay.
pub fn python_gzip(data: &[u8], level: u32) -> Vec<u8> {
    let code = format!(
        "import sys,gzip; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read(), {level}, mtime=0))"
    );
    filter("/usr/bin/python3", &["-c", &code], data)
}

/// Waits until a `strata serve` child process answers on `sock`; panics
/// with its log if it exits first or takes over 30 s.
pub fn wait_for_serve(child: &mut std::process::Child, sock: &Path, log: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "strata serve exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strata serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tar of real files from this machine (documentation and programs), up to
/// about `limit` bytes: real data is what preflate's predictions are made for.
pub fn real_files_tar(limit: usize) -> Vec<u8> {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in [
        "/usr/share/common-licenses",
        "/usr/share/doc/bash",
        "/usr/bin",
    ] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut v: Vec<_> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        files.extend(v);
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut total = 0;
    for f in files {
        let Ok(data) = std::fs::read(&f) else {
            continue;
        };
        if total + data.len() > limit {
            continue;
        }
        total += data.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, f.strip_prefix("/").unwrap(), &data[..])
            .unwrap();
    }
    assert!(
        total > limit / 2,
        "not enough files on this machine for the test"
    );
    b.into_inner().unwrap()
}

/// Polls `cond` until it holds or `within` passes.
pub fn eventually(within: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cond()
}

/// A whole content read through the store's API (no daemon).
pub fn store_read(store: &strata::store::Store, d: &strata::Digest) -> Vec<u8> {
    let c = store.content(d).unwrap().expect("stored");
    let mut got = Vec::new();
    store
        .read_range(d, &c, 0, 0, &mut |b: &[u8]| {
            got.extend_from_slice(b);
            Ok(true)
        })
        .unwrap();
    got
}

/// The daemon's record of a blob in the default namespace.
pub async fn stat(c: &mut Client, digest: &str) -> pb::BlobInfo {
    c.stat(pb::StatRequest {
        namespace: String::new(),
        digest: digest.into(),
    })
    .await
    .unwrap()
    .into_inner()
}
