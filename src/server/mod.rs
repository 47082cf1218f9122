//! The daemon: opens the store and serves `strata.v1` on a unix socket until told
//! to stop, then lets requests in flight finish (or abandons them after a grace
//! period: uncommitted pushes leave nothing visible and are trimmed at restart).

pub mod containerd;
pub mod differ;
pub mod limits;
pub mod metrics;
pub mod strata_api;
mod stream;
pub mod tcp;

use crate::config::{DEFAULT_NAMESPACE, FRAME_BYTES, WINDOW_BYTES};
use crate::error::{Error, Result};
use crate::proto::containerd::services::content::v1::content_server::ContentServer;
use crate::proto::containerd::services::diff::v1::diff_server::DiffServer;
use crate::proto::strata::v1::store_server::StoreServer;
use crate::store::{Store, StoreConfig};
pub use limits::{Gate, Limits};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    /// Serves `strata.v1`, and containerd's content API for direct clients
    /// (namespace from the `containerd-namespace` header, else `default`).
    pub socket: PathBuf,
    /// Serves containerd's content API for a containerd proxy plugin; calls
    /// without a namespace header use `containerd_namespace`.
    pub containerd_socket: Option<PathBuf>,
    pub containerd_namespace: String,
    /// Serves containerd's diff service for a proxy plugin of type "diff".
    pub containerd_diff_socket: Option<PathBuf>,
    pub store: StoreConfig,
    /// How long requests in flight may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Partial uploads untouched this long are removed.
    pub upload_expiry: Duration,
    /// Background garbage collection: at least this often while there is garbage...
    pub gc_interval: Duration,
    /// ...and sooner once this many chunks are unreferenced.
    pub gc_unreferenced: u64,
    /// Blobs stored as received for later conversion (`StoreConfig::defer_uploads`)
    /// are converted once no push or upload has written for this long; None:
    /// uploads are converted as they are written.
    pub convert_after: Option<Duration>,
    pub limits: Limits,
    /// Serve Prometheus metrics over HTTP here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Group to own the sockets (else the daemon's).
    pub socket_group: Option<String>,
    /// Also serve `strata.v1` and the content API on TCP.
    pub tcp: Option<tcp::TcpOptions>,
    /// Also serve the OCI distribution API (`src/registry/`).
    pub registry: Option<crate::registry::RegistryOptions>,
}

impl ServeOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        ServeOptions {
            socket: crate::config::default_socket(&data_dir),
            data_dir,
            containerd_socket: None,
            containerd_namespace: "containerd".into(),
            containerd_diff_socket: None,
            store: StoreConfig::default(),
            shutdown_grace: Duration::from_secs(30),
            upload_expiry: Duration::from_secs(24 * 3600),
            gc_interval: Duration::from_secs(600),
            gc_unreferenced: 10_000,
            convert_after: Some(CONVERT_AFTER),
            limits: Limits::default(),
            metrics_addr: None,
            socket_group: None,
            tcp: None,
            registry: None,
        }
    }
}

/// The default `convert_after`; also how long a daemon with deferral off
/// waits to convert blobs marked while it was on.
const CONVERT_AFTER: Duration = Duration::from_secs(2);

/// Binds the socket (mode 0660, owned by `group` when given), replacing a
/// stale one no daemon answers on.
pub async fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(Error::Unavailable(format!(
                "another daemon is already listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("removing stale socket {}", path.display()), e))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
    if let Some(g) = group {
        let gid = group_id(g)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| Error::io(format!("giving {} to group {g}", path.display()), e))?;
    }
    Ok(l)
}

/// A group's id, by name or number.
fn group_id(name: &str) -> Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let c = std::ffi::CString::new(name)
        .map_err(|_| Error::InvalidArgument(format!("group name {name:?}")))?;
    // getgrnam's record is static: read it at once.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        return Err(Error::InvalidArgument(format!(
            "no group named {name:?} (--socket-group)"
        )));
    }
    Ok(unsafe { (*g).gr_gid })
}

/// Runs the daemon until `shutdown` completes.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Settings that can be wrong are checked before the store is opened.
    let tcp = match &opts.tcp {
        Some(t) => {
            tcp::check(t)?;
            let tls = t.tls.as_ref().map(tcp::tls_config).transpose()?;
            let l = tokio::net::TcpListener::bind(t.addr)
                .await
                .map_err(|e| Error::InvalidArgument(format!("cannot listen on {}: {e}", t.addr)))?;
            Some((l, tls))
        }
        None => None,
    };
    let registry = match &opts.registry {
        Some(r) => Some(crate::registry::bind(r).await?),
        None => None,
    };
    let store = {
        let (dir, mut cfg) = (opts.data_dir.clone(), opts.store.clone());
        cfg.defer_uploads |= opts.convert_after.is_some();
        tokio::task::spawn_blocking(move || Store::open(&dir, cfg))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    differ::clean_stale(&opts.data_dir.join(differ::MOUNT_DIR));
    // Runs even with deferral off: blobs marked before still get converted.
    let converter = store.start_converter(opts.convert_after.unwrap_or(CONVERT_AFTER))?;
    let stop = new_stop();
    let mut servers = Vec::new();
    let listener = bind_socket(&opts.socket, opts.socket_group.as_deref()).await?;
    tracing::info!(socket = %opts.socket.display(), data_dir = %opts.data_dir.display(), "strata serving strata.v1 and the containerd content API");
    let gate = Gate::new(opts.limits.clone());
    let max_msg = opts.limits.max_message_bytes;
    let router = both_apis(builder(&gate), &store, &gate, max_msg);
    servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
        UnixListenerStream::new(listener),
        stop.wait(),
    )));
    if let Some(path) = &opts.containerd_socket {
        let listener = bind_socket(path, opts.socket_group.as_deref()).await?;
        tracing::info!(socket = %path.display(), namespace = %opts.containerd_namespace, "serving containerd's content API for a proxy plugin");
        let router = builder(&gate).add_service(
            ContentServer::new(containerd::ContentService::new(
                store.clone(),
                opts.containerd_namespace.clone(),
                gate.clone(),
            ))
            .with_limits(max_msg),
        );
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            stop.wait(),
        )));
    }
    if let Some(path) = &opts.containerd_diff_socket {
        // Applying mounts and writes anywhere as root: the socket is root's
        // alone (mode 0600, never --socket-group's).
        let listener = bind_socket(path, None).await?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("restricting {}", path.display()), e))?;
        tracing::info!(socket = %path.display(), "serving containerd's diff service for a proxy differ");
        let service = differ::DiffService::new(
            store.clone(),
            gate.clone(),
            opts.containerd_namespace.clone(),
            opts.data_dir.join(differ::MOUNT_DIR),
        );
        let router = builder(&gate).add_service(DiffServer::new(service).with_limits(max_msg));
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            stop.wait(),
        )));
    }
    if let Some((listener, tls)) = tcp {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("TCP listener", e))?;
        tracing::info!(%addr, tls = tls.is_some(), "serving strata.v1 and the containerd content API on TCP");
        let mut b = builder(&gate);
        if let Some(cfg) = tls {
            b = b
                .tls_config(cfg)
                .map_err(|e| Error::InvalidArgument(format!("TLS settings: {}", tcp::chain(&e))))?;
        }
        let router = both_apis(b, &store, &gate, max_msg);
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop.wait(),
        )));
    }
    let registry = registry.map(|r| tokio::spawn(r.serve(store.clone(), stop.wait())));
    let expiry = opts.upload_expiry;
    let janitor = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600).min(expiry));
            loop {
                tick.tick().await;
                let store = store.clone();
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || store.expire_uploads(expiry)).await
                {
                    tracing::error!(error = %e, "expiring stale uploads failed");
                }
            }
        })
    };
    let collector = tokio::spawn(collect_garbage(
        store.clone(),
        opts.gc_interval,
        opts.gc_unreferenced,
        gate.metrics.clone(),
    ));
    let flusher = tokio::spawn(flush_when_quiet(store.clone()));
    let densifier = tokio::spawn(densify_when_quiet(store.clone()));
    let syncer = store
        .sync_interval()
        .map(|every| tokio::spawn(sync_from_bucket(store.clone(), every)));
    let metrics_http = opts.metrics_addr.map(|addr| {
        let (m, s) = (gate.metrics.clone(), store.clone());
        tokio::spawn(async move {
            if let Err(e) = metrics::serve_http(addr, m, s).await {
                tracing::error!(%addr, error = %e, "cannot serve metrics (--metrics-addr); going on without them");
            }
        })
    });
    shutdown.await;
    tracing::info!("shutting down: finishing requests in flight");
    stop.fire();
    janitor.abort();
    collector.abort();
    flusher.abort();
    densifier.abort();
    // A densify or collection in progress gives up at its next record (its
    // copy is cut off, as after a crash) rather than hold up the stop.
    store.stop_rewrites();
    if let Some(s) = syncer {
        s.abort();
    }
    if let Some(m) = metrics_http {
        m.abort();
    }
    let all = futures::future::join_all(servers);
    match tokio::time::timeout(opts.shutdown_grace, all).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "server error"),
                    Err(e) => tracing::error!(error = %e, "server task failed"),
                }
            }
        }
        Err(_) => tracing::warn!("requests still running after the grace period were abandoned"),
    }
    if let Some(r) = registry {
        if tokio::time::timeout(opts.shutdown_grace, r).await.is_err() {
            tracing::warn!("registry requests still running after the grace period were abandoned");
        }
    }
    // A conversion stops at its next piece; a collection it started runs
    // to its end, within the grace period.
    let _ = tokio::time::timeout(
        opts.shutdown_grace,
        tokio::task::spawn_blocking(move || drop(converter)),
    )
    .await;
    // Workers of finished requests may still hold the store for a moment (a
    // write stream saving its upload record); the index must be closed before
    // this returns, so a restart in the same process can open it again.
    store.drop_cursors();
    let deadline = tokio::time::Instant::now() + opts.shutdown_grace;
    while store.handles() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A store at rest keeps its index in tables, not in a log to replay.
    if let Err(e) = store.flush_index() {
        tracing::warn!(error = %e, "flushing the index at shutdown failed; it is replayed from its log at the next start");
    }
    let _ = std::fs::remove_file(&opts.socket);
    for p in [&opts.containerd_socket, &opts.containerd_diff_socket]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(p);
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// Applies other daemons' segments from the bucket every `every`.
async fn sync_from_bucket(store: Store, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.sync_from_bucket(false)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the bucket's new segments failed; retried next round")
            }
            Err(e) => tracing::error!(error = %e, "reading the bucket's segments panicked"),
        }
    }
}

/// Runs garbage collection in the background: every `interval` while there is
/// garbage, and within a minute once `threshold` chunks are unreferenced.
async fn collect_garbage(
    store: Store,
    interval: Duration,
    threshold: u64,
    metrics: std::sync::Arc<metrics::Metrics>,
) {
    let mut last = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(60).min(interval));
    loop {
        tick.tick().await;
        let Ok(stats) = store.stats_counters() else {
            continue;
        };
        let due = last.elapsed() >= interval && stats.unreferenced_chunks > 0;
        if !(due || stats.unreferenced_chunks >= threshold) {
            continue;
        }
        last = tokio::time::Instant::now();
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.gc(crate::store::gc::GcOptions::default()))
            .await
        {
            Ok(Ok(r)) => metrics.collected(&r),
            Ok(Err(e)) => tracing::error!(error = %e, "background garbage collection failed"),
            Err(e) => tracing::error!(error = %e, "background garbage collection panicked"),
        }
    }
}

/// Pushes and uploads quiet this long: the index's memtables are flushed.
const FLUSH_AFTER: Duration = Duration::from_secs(5);

/// Flushes the index once pushes and uploads have paused for `FLUSH_AFTER`
/// and no other writer (GC, the converter) has added to its memtables for
/// a second, so a burst of pushes leaves compressed tables behind rather
/// than a write-ahead log as large as the burst. Crash safety does not
/// depend on it: every commit is in the synced log before it is answered.
async fn flush_when_quiet(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0;
    loop {
        tick.tick().await;
        let Ok(entries) = store.unflushed_index_entries() else {
            continue;
        };
        let settled = entries > 0 && entries == last && store.quiet_for() >= FLUSH_AFTER;
        last = entries;
        if !settled {
            continue;
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.flush_index()).await {
            Ok(Ok(n)) => tracing::debug!(families = n, "index flushed: pushes paused"),
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the index failed"),
            Err(e) => tracing::error!(error = %e, "flushing the index panicked"),
        }
        last = 0;
    }
}

/// Rewrites the packs pushes filled as dense packs (densify.rs) once pushes
/// have paused; it stops before the next pack when they resume. Its own
/// writes to the index are flushed by `flush_when_quiet` afterwards.
async fn densify_when_quiet(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.quiet_for() < crate::store::densify::QUIET
            || !store.has_packs_to_densify().unwrap_or(false)
        {
            continue;
        }
        let s = store.clone();
        let failed = match tokio::task::spawn_blocking(move || s.densify_when_quiet()).await {
            Ok(Ok(_)) => false,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "densifying packs failed; trying again in a minute");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "densifying packs panicked; trying again in a minute");
                true
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

type Builder = tonic::transport::Server<
    tower::layer::util::Stack<metrics::MetricsLayer, tower::layer::util::Identity>,
>;

fn builder(gate: &Gate) -> Builder {
    tonic::transport::Server::builder()
        // Large windows and frames: a push streams hundreds of MB over a local
        // socket, and 64 KiB windows cost a round trip (and a wakeup) each.
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(WINDOW_BYTES * 2))
        .max_frame_size(Some(FRAME_BYTES))
        .layer(metrics::MetricsLayer(gate.metrics.clone()))
}

/// `strata.v1` and containerd's content API (namespace from the
/// `containerd-namespace` header, else `default`), as the main socket and the
/// TCP listener serve them.
fn both_apis(
    b: Builder,
    store: &Store,
    gate: &Gate,
    max_msg: usize,
) -> tonic::transport::server::Router<
    tower::layer::util::Stack<metrics::MetricsLayer, tower::layer::util::Identity>,
> {
    let mut b = b;
    b.add_service(
        StoreServer::new(strata_api::StrataService::new(store.clone(), gate.clone()))
            .with_limits(max_msg),
    )
    .add_service(
        ContentServer::new(containerd::ContentService::new(
            store.clone(),
            DEFAULT_NAMESPACE.into(),
            gate.clone(),
        ))
        .with_limits(max_msg),
    )
}

/// The largest message a service accepts and sends.
pub trait MessageLimits {
    fn with_limits(self, n: usize) -> Self;
}

impl<T> MessageLimits for StoreServer<T> {
    fn with_limits(self, n: usize) -> Self {
        self.max_decoding_message_size(n)
            .max_encoding_message_size(n)
    }
}

impl<T> MessageLimits for ContentServer<T> {
    fn with_limits(self, n: usize) -> Self {
        self.max_decoding_message_size(n)
            .max_encoding_message_size(n)
    }
}

impl<T> MessageLimits for DiffServer<T> {
    fn with_limits(self, n: usize) -> Self {
        self.max_decoding_message_size(n)
            .max_encoding_message_size(n)
    }
}

/// A shutdown signal every listener can wait on.
#[derive(Clone)]
struct Stop(tokio::sync::watch::Sender<bool>);

fn new_stop() -> Stop {
    Stop(tokio::sync::watch::channel(false).0)
}

impl Stop {
    fn fire(&self) {
        let _ = self.0.send(true);
    }
    fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
