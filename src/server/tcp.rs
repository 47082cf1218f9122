//! The TCP listener: for clients on other machines (build farms, a registry
//! cache). Plain HTTP/2 is allowed on loopback only; any other address needs
//! TLS, and with a client CA only clients holding a certificate it signed get
//! in. The unix socket stays the way local clients and containerd connect.

use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

#[derive(Debug, Clone)]
pub struct TcpOptions {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// PEM files for the TCP listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// Refuses a listener that would expose the store unencrypted.
pub fn check(opts: &TcpOptions) -> Result<()> {
    if opts.tls.is_none() && !opts.addr.ip().is_loopback() {
        return Err(Error::InvalidArgument(format!(
            "refusing to listen on {} without TLS: pass --tls-cert and --tls-key, or listen on loopback",
            opts.addr
        )));
    }
    Ok(())
}

fn read(what: &str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot read {what} {}: {e}", path.display())))
}

/// Reads a PEM file that must hold a block of the given kind.
fn read_pem(what: &str, path: &PathBuf, kind: &str) -> Result<Vec<u8>> {
    let b = read(what, path)?;
    let text = String::from_utf8_lossy(&b);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !found {
        return Err(Error::InvalidArgument(format!(
            "{what} {}: no PEM {kind} block in it",
            path.display()
        )));
    }
    Ok(b)
}

/// An error and its causes, which tonic keeps out of its own message.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The TLS settings, with the files read and checked at start-up (before
/// the store is opened): a key that does not match its certificate is found
/// here, not at the first client.
pub fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig> {
    let cert = read_pem("TLS certificate", &files.cert, "CERTIFICATE")?;
    let key = read_pem("TLS key", &files.key, "PRIVATE KEY")?;
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &files.client_ca {
        let ca = read_pem("client CA", ca, "CERTIFICATE")?;
        cfg = cfg.client_ca_root(Certificate::from_pem(ca));
    }
    tonic::transport::Server::builder()
        .tls_config(cfg.clone())
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "TLS certificate {} and key {}: {}",
                files.cert.display(),
                files.key.display(),
                chain(&e)
            ))
        })?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback() {
        let plain = |a: &str| TcpOptions {
            addr: a.parse().unwrap(),
            tls: None,
        };
        assert!(check(&plain("127.0.0.1:7000")).is_ok());
        assert!(check(&plain("[::1]:7000")).is_ok());
        assert!(check(&plain("0.0.0.0:7000")).is_err());
        assert!(check(&plain("192.168.1.2:7000")).is_err());
        assert!(check(&plain("[::]:7000")).is_err());
        let tls = TcpOptions {
            addr: "0.0.0.0:7000".parse().unwrap(),
            tls: Some(TlsFiles {
                cert: "c".into(),
                key: "k".into(),
                client_ca: None,
            }),
        };
        assert!(check(&tls).is_ok());
    }
}
