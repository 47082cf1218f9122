//! The `strata` command line: the daemon (`serve`) and a client for it.

mod analyze;
mod blobs;
pub mod config_file;
mod images;
mod push;
mod remote_args;
mod serve;
mod verify;

use crate::client;
use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "A content store for container image layers: stores every file's content once, gives every blob back byte for byte",
    long_about = "strata stores container image blobs (layer tars, manifests, configs, anything). \
It splits layer tars into file bodies, cuts bodies into content-defined chunks, keeps each distinct chunk \
once (zstd-compressed) and rebuilds every blob exactly on read. Compressed layers (tar+gzip, tar+zstd) \
are decoded, their tar deduplicated, and their exact compressed bytes rebuilt on read.\n\n\
Run the daemon with `strata serve`; the other commands talk to it over its unix socket \
(or over TCP with --addr, when the daemon was started with --listen)."
)]
pub struct Cli {
    /// The daemon's unix socket [default: <default data dir>/strata.sock]
    #[arg(long, global = true, env = "STRATA_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Reach the daemon over TCP instead: http://HOST:PORT for a loopback
    /// listener, https://HOST:PORT for a TLS one (`strata serve --listen`)
    #[arg(long, global = true, env = "STRATA_ADDR", value_name = "URL")]
    pub addr: Option<String>,
    /// PEM CA that signed the daemon's certificate (https:// addresses)
    #[arg(long, global = true, env = "STRATA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for daemons started with --tls-client-ca
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: open (or create) the store and serve it on a unix socket
    #[command(args_override_self = true)]
    Serve(Box<serve::ServeArgs>),
    /// Store blobs; prints `DIGEST  SIZE  NEW-BYTES` for each file
    Push(push::PushArgs),
    /// Write a blob (or a byte range of it) to standard output, exactly as pushed
    Cat(blobs::CatArgs),
    /// Show what is stored for one blob
    Stat(blobs::StatArgs),
    /// List the blobs of a namespace
    Ls(blobs::LsArgs),
    /// Remove blobs from a namespace (content shared with others stays)
    Rm(blobs::RmArgs),
    /// Store-wide figures: blobs, bytes, dedup and compression ratios
    Stats(blobs::StatsArgs),
    /// Check every invariant of the store; exits 1 and names the affected blobs on any fault
    Verify(verify::VerifyArgs),
    /// Reclaim chunks no blob uses any more and rewrite packs with much garbage
    Gc(blobs::GcArgs),
    /// How much of a set of images is unique, and what a shared strata store
    /// would keep of it: images read from files (no daemon needed), or, with
    /// --socket or --addr, the images a daemon holds
    Analyze(Box<analyze::AnalyzeArgs>),
    /// Store whole images (from registries, OCI layouts and archives,
    /// docker-archives, layer files): every blob not yet stored, and the
    /// image's name; prints
    /// `NAME  MANIFEST  N pushed, M already stored  NEW-BYTES`
    Import(images::ImportArgs),
    /// List the images held in a namespace, with their sizes and what they share
    Images(images::ImagesArgs),
    /// Write a held image to a registry, an OCI layout or a docker-archive, every digest unchanged
    Export(images::ExportArgs),
}

pub fn socket_path(cli_socket: &Option<PathBuf>) -> PathBuf {
    cli_socket
        .clone()
        .unwrap_or_else(|| config::default_socket(&config::default_data_dir()))
}

/// Where the client commands reach the daemon: TCP when an address is
/// given, else the socket (the default one when none is given).
fn target(
    addr: Option<String>,
    socket: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> client::Target {
    match addr {
        Some(url) => client::Target::Tcp {
            url,
            tls: client::ClientTls { ca, cert, key },
        },
        None => client::Target::Socket(socket_path(&socket)),
    }
}

/// Client commands move data in 1 MiB buffers. glibc maps each one fresh
/// (its threshold starts at 128 KiB) and trims the heap as soon as 128 KiB at
/// its top are free, so every buffer costs page faults: a pushed corpus took
/// about 10 % longer that way. Keeping them on a heap that is not trimmed
/// reuses the same pages. Called before any thread exists.
fn reuse_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args, cli.socket),
        Command::Verify(args) if args.data_dir.is_some() => verify::offline(args),
        Command::Analyze(args) => {
            // Given --socket or --addr on the command line (not merely in
            // the environment, which a shell may carry for other commands),
            // analyze what that daemon holds.
            let flagged =
                |f: &str| std::env::args().any(|a| a == f || a.starts_with(&format!("{f}=")));
            let (addr, socket) = (
                cli.addr.filter(|_| flagged("--addr")),
                cli.socket.filter(|_| flagged("--socket")),
            );
            let daemon = match (addr, socket) {
                (None, None) => None,
                (addr, socket) => Some(target(
                    addr,
                    socket,
                    cli.tls_ca,
                    cli.client_cert,
                    cli.client_key,
                )),
            };
            analyze::run(*args, daemon)
        }
        other => {
            reuse_buffers();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let over_tcp = cli.addr.clone();
            let t = target(
                cli.addr,
                cli.socket,
                cli.tls_ca,
                cli.client_cert,
                cli.client_key,
            );
            rt.block_on(async move {
                match other {
                    Command::Push(a) => push::run(a, &t).await,
                    Command::Cat(a) => blobs::cat(a, &t).await,
                    Command::Stat(a) => blobs::stat(a, &t).await,
                    Command::Ls(a) => blobs::ls(a, &t).await,
                    Command::Rm(a) => blobs::rm(a, &t).await,
                    Command::Stats(a) => blobs::stats(a, &t).await,
                    Command::Verify(a) => verify::online(a, &t).await,
                    Command::Gc(a) => blobs::gc(a, &t).await,
                    Command::Import(a) => images::import(a, &t).await,
                    Command::Images(a) => images::images(a, &t).await,
                    Command::Export(a) => images::export(a, &t).await,
                    Command::Serve(_) | Command::Analyze(_) => unreachable!(),
                }
            })
            .map_err(|e| match over_tcp {
                // Over TCP, a refused certificate or a plaintext client on a
                // TLS port only shows at the first call: say where it went.
                Some(url) if !format!("{e:#}").contains(&url) => e.context(format!(
                    "the strata daemon at {url} (an https:// daemon needs --tls-ca, and a client certificate, --client-cert and --client-key, if it asks for one)"
                )),
                _ => e,
            })
        }
    }
}

/// Turns a gRPC status into an error a person can act on.
/// Transport failures (a refused TLS handshake, a closed connection) keep
/// their cause out of the status message: it is appended.
pub fn status_err(s: tonic::Status) -> anyhow::Error {
    match std::error::Error::source(&s) {
        Some(cause) => anyhow::anyhow!(
            "{} ({:?}): {}",
            s.message(),
            s.code(),
            crate::server::tcp::chain(cause)
        ),
        None => anyhow::anyhow!("{} ({:?})", s.message(), s.code()),
    }
}

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}
