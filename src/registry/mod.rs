//! `strata serve --registry-listen HOST:PORT`: the OCI distribution-spec v1.1
//! API over the daemon's own store, in the same process.
//!
//! How it maps onto strata (see README "Registry"):
//! - All registry content lives in one strata namespace (`--registry-namespace`,
//!   default `registry`), apart from containerd's (`containerd`, `default`), so
//!   neither side's deletes take the other's blobs: each namespace holds its
//!   own blob records (`holders`), and chunks are only freed when no record of
//!   any namespace is left.
//! - Blobs are ordinary blobs of that namespace, pushed through the store's
//!   resumable uploads (`Store::open_upload`, the containerd Write path), so
//!   they are chunked, deduplicated and converted like every other push.
//! - A manifest is a blob of the namespace, labelled with the repositories
//!   that hold it (`strata.registry.repo/<name>`) and its subject.
//! - A tag is an image record (`image::record`) named `<repository>:<tag>`,
//!   exactly what `strata import --name` writes, so `strata images` lists it,
//!   `strata export` writes it, and an imported image named `repo:tag` is
//!   pullable.

// HTTP: axum 0.8 on hyper 1 and tower 0.5. tonic 0.14 already links that
// hyper and tower, so the registry adds one maintained, widely used router on
// the same stack (same runtime, same TLS library) instead of a second HTTP
// implementation.
mod auth;
mod blobs;
mod errors;
mod manifests;
mod mirror;
mod names;
mod rebuilt;
mod routes;
mod tls;
mod uploads;

pub use names::{valid_name, valid_tag};

use crate::error::{Error, Result};
use crate::server::tcp::{self, TlsFiles};
use crate::store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The default bound on a manifest's size (the spec suggests 4 MiB).
pub const DEFAULT_MAX_MANIFEST: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// The strata namespace that holds every repository.
    pub namespace: String,
    pub htpasswd: Option<PathBuf>,
    pub read_only: bool,
    pub max_manifest_bytes: usize,
    /// Upload sessions open at once; more get TOO_MANY_REQUESTS.
    pub max_uploads: usize,
    /// Largest blob an upload may grow to (0: no limit), as `--max-blob-size`.
    pub max_blob_bytes: u64,
    /// A request body that sends nothing for this long is cut off.
    pub body_timeout: Duration,
    /// Upload sessions untouched this long are dropped from memory (their
    /// bytes and record stay until `--upload-expiry`).
    pub session_idle: Duration,
    /// Pull-through: what the store does not hold is asked of these
    /// registries (base URLs, in order) once, stored, then served locally.
    pub mirror_of: Vec<String>,
    /// Bound of the rebuilt-blob cache (`rebuilt.rs`); 0: none.
    pub rebuilt_cache_bytes: u64,
}

impl RegistryOptions {
    pub fn new(addr: SocketAddr) -> Self {
        RegistryOptions {
            addr,
            tls: None,
            namespace: "registry".into(),
            htpasswd: None,
            read_only: false,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST,
            max_uploads: 256,
            max_blob_bytes: 0,
            body_timeout: Duration::from_secs(60),
            session_idle: Duration::from_secs(300),
            mirror_of: Vec::new(),
            rebuilt_cache_bytes: 0,
        }
    }
}

/// What every handler shares.
pub(crate) struct State {
    pub store: Store,
    pub opts: RegistryOptions,
    pub auth: Option<auth::Htpasswd>,
    pub sessions: uploads::Sessions,
    /// Manifest pushes and deletes, one at a time: tags and repository labels
    /// are read-modify-write.
    pub manifest_lock: tokio::sync::Mutex<()>,
    /// `--registry-mirror-of`, in order.
    pub upstreams: Vec<mirror::Upstream>,
    pub rebuilt: Option<Arc<rebuilt::RebuiltCache>>,
}

/// A bound listener, checked before the store is opened.
pub struct Bound {
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<auth::Htpasswd>,
    opts: RegistryOptions,
}

/// Checks the settings and binds the port: plain HTTP only on loopback.
pub async fn bind(opts: &RegistryOptions) -> Result<Bound> {
    crate::store::validate_namespace(&opts.namespace)?;
    for u in &opts.mirror_of {
        let ok = reqwest::Url::parse(u)
            .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some());
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "--registry-mirror-of {u:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
            )));
        }
    }
    tcp::check(&tcp::TcpOptions {
        addr: opts.addr,
        tls: opts.tls.clone(),
    })?;
    let tls = opts.tls.as_ref().map(tls::server_config).transpose()?;
    let auth = opts
        .htpasswd
        .as_ref()
        .map(|p| auth::Htpasswd::load(p))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on {}: {e}", opts.addr)))?;
    Ok(Bound {
        listener,
        tls,
        auth,
        opts: opts.clone(),
    })
}

impl Bound {
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("registry listener", e))
    }

    /// Serves until `stop` completes, then lets requests in flight finish and
    /// closes the open upload sessions (their records stay, resumable).
    pub async fn serve(self, store: Store, stop: impl Future<Output = ()> + Send + 'static) {
        let addr = self.local_addr().ok();
        tracing::info!(?addr, tls = self.tls.is_some(), namespace = %self.opts.namespace, auth = self.auth.is_some(), read_only = self.opts.read_only, "serving the OCI distribution API");
        let rebuilt = match self.opts.rebuilt_cache_bytes {
            0 => None,
            n => match rebuilt::RebuiltCache::open(&store.dir().join("rebuilt-cache"), n) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "no rebuilt-blob cache");
                    None
                }
            },
        };
        let state = Arc::new(State {
            rebuilt,
            store,
            auth: self.auth,
            sessions: uploads::Sessions::default(),
            manifest_lock: Default::default(),
            upstreams: self
                .opts
                .mirror_of
                .iter()
                .map(|u| mirror::Upstream::new(u))
                .collect(),
            opts: self.opts,
        });
        let janitor = tokio::spawn(uploads::close_idle(state.clone()));
        let app = routes::router(state.clone());
        let r = match self.tls {
            Some(cfg) => {
                let l = tls::TlsListener::new(self.listener, cfg);
                axum::serve(l, app).with_graceful_shutdown(stop).await
            }
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "registry server error");
        }
        janitor.abort();
        let _ = janitor.await;
        let sessions = state.sessions.drain();
        let _ = tokio::task::spawn_blocking(move || drop(sessions)).await;
    }
}
