//! The registry off loopback: TLS from `--tls-cert`/`--tls-key`, and with
//! `--tls-client-ca` only clients holding a certificate that CA signed get
//! an answer.

mod common;

use common::Daemon;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::path::Path;
use strata::registry::RegistryOptions;
use strata::server::tcp::TlsFiles;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    name: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> (String, String) {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Pki {
    ca_pem: String,
    client: String,
    stranger: String,
}

fn pki(dir: &Path) -> Pki {
    let (ca1, ca2) = (ca("registry test CA"), ca("another CA"));
    let (c, k) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth, &ca1);
    std::fs::write(dir.join("server.pem"), c).unwrap();
    std::fs::write(dir.join("server.key"), k).unwrap();
    std::fs::write(dir.join("ca.pem"), ca1.pem()).unwrap();
    let (c, k) = leaf("client", ExtendedKeyUsagePurpose::ClientAuth, &ca1);
    let (sc, sk) = leaf("client", ExtendedKeyUsagePurpose::ClientAuth, &ca2);
    Pki {
        ca_pem: ca1.pem(),
        client: format!("{c}{k}"),
        stranger: format!("{sc}{sk}"),
    }
}

fn client(addr: SocketAddr, p: &Pki, identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", addr);
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_off_loopback_and_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    // Any address: TLS is required, so this one listens on all of them.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let any: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut opts = RegistryOptions::new(any);
    opts.tls = Some(TlsFiles {
        cert: tmp.path().join("server.pem"),
        key: tmp.path().join("server.key"),
        client_ca: Some(tmp.path().join("ca.pem")),
    });
    let daemon = Daemon::start_custom(&tmp.path().join("d"), |o| o.registry = Some(opts)).await;
    let url = format!("https://localhost:{port}/v2/");
    let r = client(local, &p, Some(&p.client))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(
        client(local, &p, None).get(&url).send().await.is_err(),
        "no client certificate"
    );
    assert!(
        client(local, &p, Some(&p.stranger))
            .get(&url)
            .send()
            .await
            .is_err(),
        "a certificate another CA signed"
    );
    // Plain HTTP on the TLS port gets no registry answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v2/"))
        .send()
        .await;
    assert!(plain
        .map(|r| r.status() != reqwest::StatusCode::OK)
        .unwrap_or(true));
    daemon.stop().await;
}
