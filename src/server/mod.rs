//! The daemon: opens the store and serves `strata.v1` on a unix socket until told
//! to stop, then lets requests in flight finish (or abandons them after a grace
//! period: uncommitted pushes leave nothing visible and are trimmed at restart).

pub mod strata_api;

use crate::config::{FRAME_BYTES, MAX_MESSAGE_BYTES, WINDOW_BYTES};
use crate::error::{Error, Result};
use crate::proto::strata::v1::store_server::StoreServer;
use crate::store::{Store, StoreConfig};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub store: StoreConfig,
    /// How long requests in flight may run on after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// Binds the socket (mode 0660), replacing a stale one no daemon answers on.
pub async fn bind_socket(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(Error::Unavailable(format!("another daemon is already listening on {}", path.display())));
        }
        std::fs::remove_file(path).map_err(|e| Error::io(format!("removing stale socket {}", path.display()), e))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    let l = UnixListener::bind(path).map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
    Ok(l)
}

/// Runs the daemon until `shutdown` completes.
pub async fn serve(opts: ServeOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let store = {
        let (dir, cfg) = (opts.data_dir.clone(), opts.store.clone());
        tokio::task::spawn_blocking(move || Store::open(&dir, cfg))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    let listener = bind_socket(&opts.socket).await?;
    tracing::info!(socket = %opts.socket.display(), data_dir = %opts.data_dir.display(), "strata serving");
    let svc = StoreServer::new(strata_api::StrataService::new(store.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            // Large windows and frames: a push streams hundreds of MB over a local
            // socket, and 64 KiB windows cost a round trip (and a wakeup) each.
            .initial_stream_window_size(Some(WINDOW_BYTES))
            .initial_connection_window_size(Some(WINDOW_BYTES * 2))
            .max_frame_size(Some(FRAME_BYTES))
            .add_service(svc)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    shutdown.await;
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop_tx.send(());
    match tokio::time::timeout(opts.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("requests still running after the grace period were abandoned"),
    }
    let _ = std::fs::remove_file(&opts.socket);
    drop(store);
    tracing::info!("stopped");
    Ok(())
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
