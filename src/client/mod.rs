//! The client side: the daemon's unix socket, or its TCP listener (plain on
//! loopback, TLS elsewhere). Used by the CLI and by tests.

pub mod blob_source;

use crate::config::{MAX_MESSAGE_BYTES, WINDOW_BYTES};
use crate::proto::strata::v1::store_client::StoreClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// Where the daemon is.
#[derive(Debug, Clone)]
pub enum Target {
    Socket(PathBuf),
    /// `http://HOST:PORT` (loopback listeners) or `https://HOST:PORT`.
    Tcp {
        url: String,
        tls: ClientTls,
    },
}

/// PEM files for a TLS connection.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The CA that signed the daemon's certificate.
    pub ca: Option<PathBuf>,
    /// This client's certificate and key, for daemons that require one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::try_from(url.to_string())?
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(WINDOW_BYTES * 2)))
}

fn read(what: &str, p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", p.display()))
}

/// Connects to a daemon's unix socket.
pub async fn connect_channel(socket: &Path) -> anyhow::Result<Channel> {
    let path: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: the connector below picks the socket.
    let channel = endpoint("http://strata.sock")?
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

/// Connects to a daemon's TCP listener.
pub async fn connect_tcp(url: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    let mut ep = endpoint(url)?;
    if url.starts_with("https://") {
        let Some(ca) = &tls.ca else {
            anyhow::bail!(
                "--addr {url}: pass --tls-ca with the CA that signed the daemon's certificate"
            );
        };
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("CA", ca)?));
        match (&tls.cert, &tls.key) {
            (Some(c), Some(k)) => {
                cfg = cfg.identity(Identity::from_pem(
                    read("client certificate", c)?,
                    read("client key", k)?,
                ));
            }
            (None, None) => {}
            _ => anyhow::bail!("--client-cert and --client-key go together"),
        }
        ep = ep.tls_config(cfg)?;
    } else if !url.starts_with("http://") {
        anyhow::bail!("--addr {url}: expected http://HOST:PORT or https://HOST:PORT");
    }
    ep.connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the strata daemon at {url}: {e:?}"))
}

/// Connects to the daemon wherever it is.
pub async fn connect_to(target: &Target) -> anyhow::Result<StoreClient<Channel>> {
    let ch = match target {
        Target::Socket(p) => connect_channel(p).await?,
        Target::Tcp { url, tls } => connect_tcp(url, tls).await?,
    };
    Ok(StoreClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

pub async fn connect(socket: &Path) -> anyhow::Result<StoreClient<Channel>> {
    connect_to(&Target::Socket(socket.to_path_buf())).await
}
