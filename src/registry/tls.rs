//! TLS for the registry listener: rustls (the same one tonic's TCP listener
//! uses), from the `--tls-cert`/`--tls-key`/`--tls-client-ca` PEM files. The
//! handshake runs in its own task, so a slow client never holds up accepts.

use crate::error::{Error, Result};
use crate::server::tcp::TlsFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

fn bad(files: &TlsFiles, what: &str) -> Error {
    Error::InvalidArgument(format!(
        "TLS certificate {} and key {}: {what}",
        files.cert.display(),
        files.key.display()
    ))
}

pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|i| i.collect())
        .map_err(|e| bad(files, &format!("reading the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            files,
            "no PEM CERTIFICATE block in the certificate file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad(files, &format!("reading the key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(files, &e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| Error::InvalidArgument(format!("client CA {}: {e}", ca.display())))?
            {
                let c = c.map_err(|e| {
                    Error::InvalidArgument(format!("client CA {}: {e}", ca.display()))
                })?;
                roots.add(c).map_err(|e| {
                    Error::InvalidArgument(format!("client CA {}: {e}", ca.display()))
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::InvalidArgument(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad(files, &e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts TCP connections and hands axum those whose handshake succeeded.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(l: TcpListener, cfg: Arc<rustls::ServerConfig>) -> Self {
        let addr = l.local_addr().expect("a bound listener has an address");
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(cfg);
        let task = tokio::spawn(async move {
            loop {
                let (s, peer) = match l.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "registry accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(s),
                    )
                    .await;
                    match hs {
                        Ok(Ok(t)) => {
                            let _ = tx.send((t, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "registry TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "registry TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, addr, task }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
