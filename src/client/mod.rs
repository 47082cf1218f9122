//! The client side of the socket, used by the CLI and by tests.

use crate::config::{MAX_MESSAGE_BYTES, WINDOW_BYTES};
use crate::proto::strata::v1::store_client::StoreClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to a daemon's unix socket.
pub async fn connect_channel(socket: &Path) -> anyhow::Result<Channel> {
    let path: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: the connector below picks the socket.
    let channel = Endpoint::try_from("http://strata.sock")?
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(WINDOW_BYTES * 2))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the strata daemon at {}: {e} (start it with `strata serve`, or pass --socket / STRATA_SOCKET)",
                socket.display()
            )
        })?;
    Ok(channel)
}

pub async fn connect(socket: &Path) -> anyhow::Result<StoreClient<Channel>> {
    Ok(StoreClient::new(connect_channel(socket).await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
