use crate::config;
use crate::server::{self, ServeOptions};
use crate::split::ChunkSizes;
use crate::store::StoreConfig;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("tcp_listener").args(["listen", "registry_listen"]).multiple(true)))]
pub struct ServeArgs {
    /// Read settings from this TOML file: keys are the long names of these
    /// flags (`data-dir = "/srv/strata"`, `no-preflate = true`); flags given
    /// here win over the file
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Group that owns the sockets (mode 0660), so its members may connect
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Where the store lives (index/, packs/, ingest/) [default: /var/lib/strata as root, else ~/.local/share/strata]
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the packs, and every record needed to rebuild the index, in an
    /// S3-compatible bucket; the data directory then holds a rebuildable
    /// index, the pack being filled and a read cache. Several daemons may
    /// share one bucket. Credentials: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, or --s3-credentials
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]")]
    pub store: Option<String>,
    /// The bucket's S3 endpoint (e.g. http://127.0.0.1:3900 for Garage or
    /// MinIO) [default: AWS's, or AWS_ENDPOINT]
    #[arg(long, value_name = "URL", requires = "store")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region (Garage's default is "garage")
    #[arg(
        long,
        env = "AWS_REGION",
        default_value = "us-east-1",
        value_name = "REGION"
    )]
    pub s3_region: String,
    /// A TOML file with access_key_id and secret_access_key, instead of the
    /// AWS_* variables (keep keys out of command lines)
    #[arg(long, value_name = "FILE", requires = "store")]
    pub s3_credentials: Option<PathBuf>,
    /// Disk cache of blocks read from the bucket, in GiB (--store)
    #[arg(long, default_value_t = 4.0, value_name = "GIB")]
    pub cache_gib: f64,
    /// How often other daemons' commits are looked for in the bucket (a read
    /// of a blob not held looks at once)
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub s3_sync_interval: Duration,
    /// Timeout of each request to the bucket
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub s3_timeout: Duration,
    /// Retries of a failed request to the bucket, with exponential backoff;
    /// then the push fails with UNAVAILABLE naming the endpoint
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub s3_retries: usize,
    /// The bucket's collection deletes what it marked unreferenced no
    /// sooner than this; a push must commit within half of it (longer ones
    /// fail with UNAVAILABLE). Every daemon sharing the bucket should use
    /// the same value, at least 16 x --s3-timeout: a commit's segment must
    /// land within half of it of a mark even when a request takes 2 x
    /// --s3-timeout, and clocks must agree to well within it
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub s3_gc_grace: Duration,
    /// The collecting daemon compacts the bucket's small objects once this
    /// many of a kind are there: pieces under 4 MiB are copied into pieces
    /// of about 64 MiB (the old ones collected a grace period later), and
    /// segments under 1 MiB are merged, keeping each blob's newest record.
    /// 0 never compacts (while daemons of an older strata share the bucket)
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub s3_compact_after: u32,
    /// zstd level for new chunk data (1-22)
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Content-defined chunk sizes MIN/AVG/MAX, used when the store is created
    #[arg(long, default_value = "16K/64K/256K", value_parser = ChunkSizes::parse)]
    pub chunk_sizes: ChunkSizes,
    /// New chunks are compressed together in blocks of about this many KiB
    #[arg(long, default_value_t = 2048, value_name = "KIB")]
    pub block_kib: usize,
    /// zstd level at which packs are rewritten once pushes pause, and by
    /// `strata gc` (dense packs: about 7 % smaller than ingest's level 3,
    /// read as fast); 0 leaves packs as ingest wrote them
    #[arg(long, default_value_t = 9, value_name = "LEVEL")]
    pub dense_level: i32,
    /// Blocks of dense packs hold about this many KiB of plain chunk data
    #[arg(long, default_value_t = 2048, value_name = "KIB")]
    pub dense_block_kib: usize,
    /// Decoded-block cache for reads, in MiB
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub cache_mib: usize,
    /// Seconds requests in flight may run on after SIGTERM/SIGINT
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub shutdown_grace: u64,
    /// Also serve containerd's content API here, for containerd's proxy plugin
    #[arg(long, value_name = "PATH")]
    pub containerd_socket: Option<PathBuf>,
    /// Namespace for containerd calls on --containerd-socket that carry no
    /// containerd-namespace header (Debian's containerd sends none)
    #[arg(long, default_value = "containerd", value_name = "NS")]
    pub containerd_namespace: String,
    /// Also serve containerd's diff service here, for a proxy plugin of type
    /// "diff" (containerd 1.7, 2.x): layers are unpacked from the stored tar,
    /// with no gzip rebuild or decompression. Needs root (mounts)
    #[arg(long, value_name = "PATH")]
    pub containerd_diff_socket: Option<PathBuf>,
    /// Remove partial uploads untouched for this long (e.g. 24h, 90m, 3600s)
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub upload_expiry: Duration,
    /// Collect garbage in the background at least this often while there is some
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub gc_interval: Duration,
    /// ...and within a minute once this many chunks are unreferenced
    #[arg(long, default_value_t = 10_000, value_name = "CHUNKS")]
    pub gc_unreferenced: u64,
    /// A gzip member or zstd frame that decodes to more than this many times
    /// its compressed size (plus 1 MiB) is treated as a decompression bomb and
    /// kept as received, undecoded
    #[arg(long, default_value_t = 250, value_name = "RATIO")]
    pub max_decompression_ratio: u64,
    /// Push, read and write streams allowed at once, over every socket; more
    /// are refused with RESOURCE_EXHAUSTED
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_streams: usize,
    /// Largest gRPC message accepted, in MiB (containerd sends up to 16)
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub max_message_mib: usize,
    /// Largest blob a push or write may store (e.g. 20G, 512M; 0: no limit);
    /// larger ones fail with RESOURCE_EXHAUSTED and store nothing
    #[arg(long, default_value = "0", value_parser = parse_size, value_name = "BYTES")]
    pub max_blob_size: u64,
    /// Keep this many MiB free on the data directory's disk: pushes and
    /// writes that would go below fail with RESOURCE_EXHAUSTED (the index
    /// needs the room to keep working)
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub min_free_mib: u64,
    /// End a push or write stream that sends nothing for this long
    /// (DEADLINE_EXCEEDED; a containerd upload stays resumable)
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Serve Prometheus metrics (HTTP, GET /metrics) on this address; "off"
    /// to serve none
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR|off")]
    pub metrics_addr: String,
    /// Do not try the general deflate rebuilder (preflate) on gzip layers no
    /// encoder replay fits: keep them as received. Saves ingest CPU (preflate
    /// runs at a few to 30 MB/s) at the cost of their dedup
    #[arg(long)]
    pub no_preflate: bool,
    /// gzip and zstd layers written through containerd's content API are
    /// stored as received, so containerd's import does not wait for their
    /// decoding and rebuild proof; they are converted (decoded, deduplicated,
    /// proven) in the background, at low priority, once no upload has written
    /// for this long. "off": convert during the write, as `strata push` does
    #[arg(long, default_value = "2s", value_parser = parse_convert_after, value_name = "DURATION|off")]
    pub convert_after: ConvertAfter,
    /// Also serve on TCP at HOST:PORT (strata.v1 and the content API, for
    /// clients on other machines: `strata --addr`). Any address but loopback
    /// needs --tls-cert and --tls-key
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for the TCP listener and the registry (TLS)
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        requires = "tcp_listener"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require TCP clients to present a certificate signed by this PEM CA
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Also serve the OCI distribution API (a registry: docker, podman,
    /// skopeo, containerd) at HOST:PORT. Any address but loopback needs
    /// --tls-cert and --tls-key (the same files as --listen)
    #[arg(long, value_name = "HOST:PORT")]
    pub registry_listen: Option<std::net::SocketAddr>,
    /// The strata namespace holding every registry repository (kept apart
    /// from containerd's)
    #[arg(long, default_value = "registry", value_name = "NS")]
    pub registry_namespace: String,
    /// Require HTTP Basic auth on the registry against this htpasswd file
    /// (bcrypt entries, `htpasswd -B`)
    #[arg(long, value_name = "FILE", requires = "registry_listen")]
    pub registry_htpasswd: Option<PathBuf>,
    /// Serve pulls only: pushes and deletes get 405 DENIED
    #[arg(long, requires = "registry_listen")]
    pub registry_read_only: bool,
    /// Largest manifest the registry accepts (e.g. 4M)
    #[arg(long, default_value = "4M", value_parser = parse_size, value_name = "BYTES")]
    pub registry_max_manifest: u64,
    /// Registry upload sessions open at once; more get 429 TOO_MANY_REQUESTS
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub registry_max_uploads: usize,
    /// Keep up to this many bytes of rebuilt compressed layers (re-encoded
    /// gzip, in <data dir>/rebuilt-cache) so that pulling a layer again reads
    /// a file instead of re-encoding it; least recently used files go first;
    /// 0 turns the cache off
    #[arg(long, default_value = "2G", value_parser = parse_size, value_name = "BYTES")]
    pub registry_rebuilt_cache: u64,
    /// Cut off a registry request body that sends nothing for this long
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub registry_body_timeout: Duration,
    /// Pull-through mirror: what the registry does not hold is fetched from
    /// this upstream registry (base URL, e.g. http://127.0.0.1:5000;
    /// repeatable, asked in order), stored, and served locally afterwards.
    /// Upstreams are asked with the credentials the daemon's auth files hold
    /// for their HOST:PORT ($REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
    /// ~/.docker/config.json), Basic or Bearer tokens as they ask
    #[arg(long, value_name = "URL", requires = "registry_listen")]
    pub registry_mirror_of: Vec<String>,
}

/// "20G", "512M", "64K" (powers of 1024), or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: expected a number with K, M, G or T"))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "size {s:?}: unknown unit {unit:?} (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// `--convert-after`: a duration, or None for "off".
#[derive(Debug, Clone, Copy)]
pub struct ConvertAfter(pub Option<Duration>);

fn parse_convert_after(s: &str) -> Result<ConvertAfter, String> {
    match s {
        "off" => Ok(ConvertAfter(None)),
        _ => parse_duration(s).map(|d| ConvertAfter(Some(d))),
    }
}

/// "90s", "30m", "24h", "2d", or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a number with s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(format!(
                "duration {s:?}: unknown unit {unit:?} (use s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// `--s3-credentials FILE`: `access_key_id` and `secret_access_key` in TOML.
fn read_credentials(f: &std::path::Path) -> anyhow::Result<(String, String)> {
    use anyhow::Context;
    let text = std::fs::read_to_string(f)
        .with_context(|| format!("reading --s3-credentials {}", f.display()))?;
    let t: toml::Table = text
        .parse()
        .with_context(|| format!("--s3-credentials {}: not valid TOML", f.display()))?;
    let get = |k: &str| {
        t.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("--s3-credentials {}: no string {k:?}", f.display()))
    };
    Ok((get("access_key_id")?, get("secret_access_key")?))
}

pub fn run(args: ServeArgs, socket: Option<PathBuf>) -> anyhow::Result<()> {
    bound_malloc();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let data_dir = args.data_dir.unwrap_or_else(config::default_data_dir);
    let socket = socket.unwrap_or_else(|| config::default_socket(&data_dir));
    if args.block_kib == 0 || args.block_kib > 32 * 1024 {
        anyhow::bail!("--block-kib must be between 1 and 32768");
    }
    crate::store::validate_namespace(&args.containerd_namespace)?;
    let metrics_addr = match args.metrics_addr.as_str() {
        "off" | "" => None,
        a => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
            anyhow::anyhow!(
                "--metrics-addr {a:?}: expected HOST:PORT (e.g. 127.0.0.1:9464) or off: {e}"
            )
        })?),
    };
    let tls = args.tls_cert.map(|cert| server::tcp::TlsFiles {
        cert,
        key: args
            .tls_key
            .expect("clap requires --tls-key with --tls-cert"),
        client_ca: args.tls_client_ca,
    });
    let tcp = args.listen.map(|addr| server::tcp::TcpOptions {
        addr,
        tls: tls.clone(),
    });
    let registry = args
        .registry_listen
        .map(|addr| crate::registry::RegistryOptions {
            tls: tls.clone(),
            namespace: args.registry_namespace.clone(),
            htpasswd: args.registry_htpasswd.clone(),
            read_only: args.registry_read_only,
            max_manifest_bytes: args.registry_max_manifest.clamp(1024, 1 << 30) as usize,
            max_uploads: args.registry_max_uploads.max(1),
            max_blob_bytes: args.max_blob_size,
            mirror_of: args.registry_mirror_of.clone(),
            body_timeout: args.registry_body_timeout.max(Duration::from_secs(1)),
            rebuilt_cache_bytes: args.registry_rebuilt_cache,
            ..crate::registry::RegistryOptions::new(addr)
        });
    if let Some(t) = &tcp {
        server::tcp::check(t)?;
    }
    let remote = args
        .store
        .map(|url| -> anyhow::Result<_> {
            let mut r = crate::store::remote::RemoteConfig::new(&url);
            r.bucket_and_prefix()?;
            r.endpoint = args.s3_endpoint.clone();
            r.region = args.s3_region.clone();
            if let Some(f) = &args.s3_credentials {
                let (id, secret) = read_credentials(f)?;
                r.access_key_id = Some(id);
                r.secret_access_key = Some(secret);
            }
            if !(0.0..=1e6).contains(&args.cache_gib) {
                anyhow::bail!("--cache-gib must be between 0 and 1000000");
            }
            r.cache_bytes = (args.cache_gib * (1u64 << 30) as f64) as u64;
            r.sync_interval = args.s3_sync_interval.max(Duration::from_secs(1));
            r.timeout = args.s3_timeout.max(Duration::from_secs(1));
            r.retries = args.s3_retries;
            r.gc_grace = args.s3_gc_grace.max(Duration::from_secs(1));
            r.compact_after = args.s3_compact_after as usize;
            if r.gc_grace < 16 * r.timeout {
                tracing::warn!(
                    gc_grace = ?r.gc_grace,
                    s3_timeout = ?r.timeout,
                    "--s3-gc-grace is less than 16 x --s3-timeout: a request may take about 3 x \
                     --s3-timeout with its retries, and a commit naming a piece a collection marked must write \
                     its segment within half the grace period of the mark (a quarter, when \
                     it has not read the mark yet) with a request's time to spare; a slow \
                     bucket could then let a collection delete a piece a new blob needs. \
                     Raise --s3-gc-grace (default 1h)"
                );
            }
            Ok(r)
        })
        .transpose()?;
    let opts = ServeOptions {
        tcp,
        registry,
        data_dir,
        socket,
        containerd_socket: args.containerd_socket,
        containerd_diff_socket: args.containerd_diff_socket,
        containerd_namespace: args.containerd_namespace,
        upload_expiry: args.upload_expiry,
        gc_interval: args.gc_interval,
        convert_after: args.convert_after.0,
        gc_unreferenced: args.gc_unreferenced,
        metrics_addr,
        socket_group: args.socket_group,
        limits: server::Limits {
            max_streams: args.max_streams.max(1),
            max_message_bytes: args.max_message_mib.clamp(1, 1024) << 20,
            max_blob_bytes: args.max_blob_size,
            idle_timeout: args.idle_timeout.max(Duration::from_secs(1)),
        },
        store: StoreConfig {
            remote,
            chunk_sizes: args.chunk_sizes,
            zstd_level: args.zstd_level,
            block_bytes: args.block_kib * 1024,
            dense_level: args.dense_level,
            dense_block_bytes: args.dense_block_kib.saturating_mul(1024),
            cache_bytes: args.cache_mib << 20,
            min_free_bytes: args.min_free_mib << 20,
            unwrap: crate::codec::unwrap::UnwrapConfig {
                max_ratio: args.max_decompression_ratio.max(1),
                preflate: !args.no_preflate,
                ..Default::default()
            },
            ..StoreConfig::default()
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    // One async worker: request handling is light (heavy work runs on blocking
    // threads), and containerd's many small Info+Read calls pay for every
    // cross-thread wakeup a second worker would add.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(server::serve(opts, server::signals()))?;
    Ok(())
}

/// Keeps the daemon's RSS near what it really uses. glibc gives each thread that
/// allocates its own arena and keeps freed memory there, and after a large
/// buffer is freed it raises its mmap threshold up to 32 MiB, so buffers land
/// in (and fragment) the heaps. Two arenas and a fixed 4 MiB threshold held the
/// corpus run at 174 MiB instead of 240 (a 512 KiB threshold gave 96 MiB but
/// cost a quarter of the throughput: see BENCHMARKS.md). Called before any
/// thread exists.
fn bound_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    }
}
