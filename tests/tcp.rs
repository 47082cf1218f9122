//! `strata serve --listen`: the gRPC API on TCP. Plain HTTP/2 on loopback only,
//! TLS anywhere, client certificates when a client CA is set; and the client
//! side (`--addr`, `--tls-ca`, `--client-cert`/`--client-key`).

mod common;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata::client::{ClientTls, Target};
use strata::server::tcp::{TcpOptions, TlsFiles};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Long enough for a debug build on a busy machine; a hang is a failure.
const PATIENCE: Duration = Duration::from_secs(20);

/// A port nothing listens on right now (bound and released).
fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------
// Certificates

/// PEM files in a temporary directory: a CA, a server certificate it signed
/// (localhost, 127.0.0.1), a client certificate it signed, a second CA with
/// a client certificate of its own, and a self-signed client certificate.
struct Pki {
    dir: tempfile::TempDir,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate and its key, as PEM; self-signed without an issuer.
fn new_leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: Option<&Issuer<'_, KeyPair>>,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names.clone()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, names.first().map_or("client", |n| n));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = issuer.is_some();
    let key = KeyPair::generate().unwrap();
    let cert = match issuer {
        Some(i) => p.signed_by(&key, i).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = new_ca("strata test CA");
        let other = new_ca("some other CA");
        write("ca.pem", &ca.pem());
        write("other-ca.pem", &other.pem());
        let (c, k) = new_leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Some(&ca),
        );
        write("server.pem", &c);
        write("server.key", &k);
        for (name, issuer) in [("client", Some(&*ca)), ("other-client", Some(&*other))] {
            let (c, k) = new_leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth, issuer);
            write(&format!("{name}.pem"), &c);
            write(&format!("{name}.key"), &k);
        }
        let (c, k) = new_leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth, None);
        write("self-signed.pem", &c);
        write("self-signed.key", &k);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The daemon's side: its certificate, and optionally a client CA.
    fn server(&self, client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }

    /// A client trusting `ca` (a file name here), with the named client
    /// certificate (`NAME.pem` and `NAME.key`) if any.
    fn client(&self, ca: Option<&str>, cert: Option<&str>) -> ClientTls {
        ClientTls {
            ca: ca.map(|c| self.path(c)),
            cert: cert.map(|c| self.path(&format!("{c}.pem"))),
            key: cert.map(|c| self.path(&format!("{c}.key"))),
        }
    }
}

// ---------------------------------------------------------------------------
// In-process daemons and clients

async fn daemon_on(dir: &Path, addr: SocketAddr, tls: Option<TlsFiles>) -> Daemon {
    Daemon::start_custom(dir, move |o| o.tcp = Some(TcpOptions { addr, tls })).await
}

fn tcp(url: String, tls: ClientTls) -> Target {
    Target::Tcp { url, tls }
}

/// Pushes `data` through `target`, checks the digest and reads it back
/// exactly there; returns the digest.
async fn roundtrip(target: &Target, data: &[u8]) -> anyhow::Result<String> {
    let work = async {
        let mut c = strata::client::connect_to(target).await?;
        let r = push_as(&mut c, "", "", data, 64 * 1024).await?;
        anyhow::ensure!(r.digest == sha256_digest(data), "digest {}", r.digest);
        let back = read_range(&mut c, "", &r.digest, 0, 0).await?;
        anyhow::ensure!(
            back == data,
            "read back {} bytes, not the pushed ones",
            back.len()
        );
        Ok(r.digest)
    };
    tokio::time::timeout(PATIENCE, work)
        .await
        .map_err(|_| anyhow::anyhow!("no answer in {PATIENCE:?}"))?
}

/// The error of a round trip that must fail (and not by hanging).
async fn refused(target: &Target) -> String {
    match roundtrip(target, b"must not be stored").await {
        Ok(d) => panic!("{target:?} stored {d}"),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(!e.starts_with("no answer in"), "{target:?} hung: {e}");
            e
        }
    }
}

fn sample(seed: u64) -> Vec<u8> {
    let body = noise(300_000, seed);
    tar_of(
        &[("bin/tool", &body), ("etc/conf", b"key = 1\n")],
        1_700_000_000,
    )
}

// ---------------------------------------------------------------------------
// 1. Loopback plaintext

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_plaintext_serves_the_same_store_as_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(LOOPBACK);
    let d = daemon_on(tmp.path(), (LOOPBACK, port).into(), None).await;
    let url = format!("http://127.0.0.1:{port}");

    // Through the lower-level connect_tcp too: what the CLI's --addr uses.
    let ch = strata::client::connect_tcp(&url, &ClientTls::default())
        .await
        .unwrap();
    let mut c = strata::proto::strata::v1::store_client::StoreClient::new(ch);
    let data = sample(1);
    let r = push(&mut c, &data).await;
    assert_eq!(r.digest, sha256_digest(&data));
    assert_eq!(read_all(&mut c, &r.digest).await, data);

    // One store behind both listeners, both ways round.
    let mut unix = d.client().await;
    assert_eq!(read_all(&mut unix, &r.digest).await, data);
    let other = sample(2);
    let r2 = push(&mut unix, &other).await;
    assert_eq!(read_all(&mut c, &r2.digest).await, other);

    // localhost resolves (maybe to ::1 first) and still reaches the v4 listener.
    let via_name = tcp(format!("http://localhost:{port}"), ClientTls::default());
    roundtrip(&via_name, &sample(3)).await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_that_are_not_urls_are_named_in_the_error() {
    // No daemon needed: these must fail before connecting.
    for bad in ["127.0.0.1:7000", "ftp://127.0.0.1:7000"] {
        let e = strata::client::connect_tcp(bad, &ClientTls::default())
            .await
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(bad) && e.contains("http://"), "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_gives_an_error_naming_the_address() {
    let port = free_port(LOOPBACK);
    let url = format!("http://127.0.0.1:{port}");
    let e = refused(&tcp(url.clone(), ClientTls::default())).await;
    assert!(
        e.contains("cannot reach the strata daemon") && e.contains(&url),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// 2. TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_loopback_serves_clients_trusting_the_ca_only() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(LOOPBACK);
    let d = daemon_on(tmp.path(), (LOOPBACK, port).into(), Some(pki.server(false))).await;
    let https = |host: &str| format!("https://{host}:{port}");
    let trusting = tcp(https("localhost"), pki.client(Some("ca.pem"), None));

    let data = sample(4);
    let digest = roundtrip(&trusting, &data).await.unwrap();
    let mut unix = d.client().await;
    assert_eq!(read_all(&mut unix, &digest).await, data);
    // The certificate's IP address name works as well as its DNS name.
    roundtrip(
        &tcp(https("127.0.0.1"), pki.client(Some("ca.pem"), None)),
        &sample(5),
    )
    .await
    .unwrap();

    // No CA given: the client says which flag is missing instead of trying.
    let e = refused(&tcp(https("localhost"), ClientTls::default())).await;
    assert!(e.contains("--tls-ca"), "{e}");

    // A CA that did not sign the daemon's certificate: the handshake fails,
    // and the error says it is about the certificate.
    let e = refused(&tcp(
        https("localhost"),
        pki.client(Some("other-ca.pem"), None),
    ))
    .await;
    assert!(e.contains("cannot reach the strata daemon"), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // A CA file that does not exist is named.
    let missing = pki.path("no-such-ca.pem");
    let e = refused(&tcp(
        https("localhost"),
        ClientTls {
            ca: Some(missing.clone()),
            ..Default::default()
        },
    ))
    .await;
    assert!(e.contains(&missing.display().to_string()), "{e}");

    // Plain HTTP/2 on the TLS port fails...
    let _ = refused(&tcp(
        format!("http://127.0.0.1:{port}"),
        ClientTls::default(),
    ))
    .await;
    // ...and the daemon goes on serving TLS clients.
    roundtrip(&trusting, &sample(6)).await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_stalled_connections_do_not_stop_the_tls_listener() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(LOOPBACK);
    let d = daemon_on(tmp.path(), (LOOPBACK, port).into(), Some(pki.server(false))).await;
    let trusting = tcp(
        format!("https://localhost:{port}"),
        pki.client(Some("ca.pem"), None),
    );

    // Garbage instead of a ClientHello, then a hang-up.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 3, 1, 0, 1, 0xff][..],
        b"",
    ] {
        let mut s = tokio::net::TcpStream::connect((LOOPBACK, port))
            .await
            .unwrap();
        s.write_all(junk).await.unwrap();
        drop(s);
    }
    // Connections that never send a byte: a TLS listener that handshakes
    // one connection at a time would wait on them forever.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(
            tokio::net::TcpStream::connect((LOOPBACK, port))
                .await
                .unwrap(),
        );
    }
    roundtrip(&trusting, &sample(7)).await.unwrap();
    drop(stalled);
    roundtrip(&trusting, &sample(8)).await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_every_address_is_allowed_and_serves() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(ANY);
    let d = daemon_on(tmp.path(), (ANY, port).into(), Some(pki.server(false))).await;
    let trusting = tcp(
        format!("https://localhost:{port}"),
        pki.client(Some("ca.pem"), None),
    );
    let data = sample(9);
    let digest = roundtrip(&trusting, &data).await.unwrap();
    assert_eq!(read_all(&mut d.client().await, &digest).await, data);
    // An address the certificate does not name (127.0.0.2 reaches this
    // listener on Linux) is refused by the client.
    let e = refused(&tcp(
        format!("https://127.0.0.2:{port}"),
        pki.client(Some("ca.pem"), None),
    ))
    .await;
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // Still TLS only: plain HTTP/2 is refused on a non-loopback listener.
    let _ = refused(&tcp(
        format!("http://127.0.0.1:{port}"),
        ClientTls::default(),
    ))
    .await;
    roundtrip(&trusting, &sample(10)).await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_plaintext_beyond_loopback_before_opening_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut opts = strata::server::ServeOptions::new(data_dir.clone());
    opts.socket = tmp.path().join("s.sock");
    opts.tcp = Some(TcpOptions {
        addr: (ANY, free_port(ANY)).into(),
        tls: None,
    });
    let e = tokio::time::timeout(PATIENCE, strata::server::serve(opts, async {}))
        .await
        .expect("serve returned")
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    assert!(!data_dir.exists() && !tmp.path().join("s.sock").exists());
}

// ---------------------------------------------------------------------------
// 3. Client certificates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_admits_only_clients_it_signed() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(LOOPBACK);
    let d = daemon_on(tmp.path(), (LOOPBACK, port).into(), Some(pki.server(true))).await;
    let url = format!("https://localhost:{port}");
    let signed = tcp(url.clone(), pki.client(Some("ca.pem"), Some("client")));

    let data = sample(11);
    let digest = roundtrip(&signed, &data).await.unwrap();
    assert_eq!(read_all(&mut d.client().await, &digest).await, data);

    // No certificate, a self-signed one, one another CA signed: each fails
    // (at the handshake or, with TLS 1.3, at the first call), stores
    // nothing, and leaves the daemon serving. What the error says is
    // checked through the CLI, in cli_client_certificates.
    for who in [None, Some("self-signed"), Some("other-client")] {
        refused(&tcp(url.clone(), pki.client(Some("ca.pem"), who))).await;
    }
    let mut unix = d.client().await;
    let before = stats(&mut unix).await.blobs;
    assert_eq!(
        unix.stat(strata::proto::strata::v1::StatRequest {
            namespace: String::new(),
            digest: sha256_digest(b"must not be stored"),
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::NotFound
    );
    roundtrip(&signed, &sample(12)).await.unwrap();
    assert_eq!(stats(&mut unix).await.blobs, before + 1);

    // A certificate without its key (or the reverse) is a usage mistake.
    for (cert, key) in [(Some("client.pem"), None), (None, Some("client.key"))] {
        let t = tcp(
            url.clone(),
            ClientTls {
                ca: Some(pki.path("ca.pem")),
                cert: cert.map(|c| pki.path(c)),
                key: key.map(|k| pki.path(k)),
            },
        );
        let e = refused(&t).await;
        assert!(
            e.contains("--client-cert and --client-key go together"),
            "{e}"
        );
    }
    d.stop().await;
}

// ---------------------------------------------------------------------------
// 4. The real binary

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata serve` child, killed when dropped (also when a test panics).
struct Served {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Runs `strata <args>` and waits until its unix socket answers.
    fn start(args: &[&str], socket: &Path, log: PathBuf) -> Served {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("STRATA_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "strata serve exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "strata serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn strata(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("STRATA_CONFIG")
        .env_remove("STRATA_ADDR")
        .env_remove("STRATA_TLS_CA")
        .env_remove("STRATA_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `strata <client> push FILE` then `cat DIGEST`: the digest comes first on
/// the line and cat gives back the file's bytes.
fn push_and_cat(client: &[&str], dir: &Path, seed: u64) {
    let data = sample(seed);
    let file = dir.join(format!("blob-{seed}"));
    std::fs::write(&file, &data).unwrap();
    let out = strata(&[client, &["push", p(&file)]].concat());
    assert!(out.status.success(), "push: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let digest = stdout.split_whitespace().next().unwrap_or_default();
    assert_eq!(digest, sha256_digest(&data), "{stdout}");
    let out = strata(&[client, &["cat", digest]].concat());
    assert!(out.status.success(), "cat: {}", stderr(&out));
    assert!(out.stdout == data, "cat gave {} bytes", out.stdout.len());
}

#[test]
fn serve_refuses_plaintext_beyond_loopback_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, sock) = (tmp.path().join("data"), tmp.path().join("s.sock"));
    let listen = format!("0.0.0.0:{}", free_port(ANY));
    let out = strata(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        p(&data),
        "--socket",
        p(&sock),
        "--metrics-addr",
        "off",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("TLS") && e.contains(&listen), "{e}");
    assert!(!data.exists() && !sock.exists());
}

#[test]
fn tls_flags_without_their_partners_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cert = tmp.path().join("c.pem");
    let listen = format!("127.0.0.1:{}", free_port(LOOPBACK));
    let base = ["serve", "--data-dir", p(&data), "--metrics-addr", "off"];
    for (extra, needed) in [
        (
            vec!["--listen", &listen, "--tls-cert", p(&cert)],
            "--tls-key",
        ),
        (
            vec!["--listen", &listen, "--tls-key", p(&cert)],
            "--tls-cert",
        ),
        (
            vec!["--listen", &listen, "--tls-client-ca", p(&cert)],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", p(&cert), "--tls-key", p(&cert)],
            "--listen",
        ),
    ] {
        let out = strata(&[&base[..], &extra].concat());
        // clap's usage errors exit 2 and name the missing flag.
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needed), "{extra:?}: {}", stderr(&out));
    }
    assert!(!data.exists());
    // The client's pair too.
    let out = strata(&[
        "--addr",
        "https://localhost:1",
        "--client-cert",
        p(&cert),
        "stats",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--client-key"), "{}", stderr(&out));
}

#[test]
fn unreadable_tls_files_are_named_before_the_store_is_created() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let missing = tmp.path().join("missing.pem");
    let listen = format!("127.0.0.1:{}", free_port(LOOPBACK));
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    for (c, k, client_ca) in [
        (&missing, &key, &ca),
        (&cert, &missing, &ca),
        (&cert, &key, &missing),
    ] {
        let out = strata(&[
            "serve",
            "--listen",
            &listen,
            "--tls-cert",
            p(c),
            "--tls-key",
            p(k),
            "--tls-client-ca",
            p(client_ca),
            "--data-dir",
            p(&data),
            "--socket",
            p(&tmp.path().join("s.sock")),
            "--metrics-addr",
            "off",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(p(&missing)), "{}", stderr(&out));
        assert!(!data.exists());
    }
}

#[test]
fn tls_files_that_are_not_usable_are_named_before_the_store_is_created() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    // (cert, key, client CA, the file the error must name)
    let cases = [
        (&junk, &key, None, &junk),
        (&cert, &junk, None, &junk),
        (&cert, &key, Some(&junk), &junk),
        // A key that is not the certificate's.
        (
            &cert,
            &pki.path("client.key"),
            None,
            &pki.path("client.key"),
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (c, k, ca, named)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        let (data, sock) = (dir.join("data"), dir.join("s.sock"));
        let listen = format!("127.0.0.1:{}", free_port(LOOPBACK));
        let mut args = vec![
            "serve",
            "--listen",
            &listen,
            "--tls-cert",
            p(c),
            "--tls-key",
            p(k),
            "--data-dir",
            p(&data),
            "--socket",
            p(&sock),
            "--metrics-addr",
            "off",
        ];
        if let Some(ca) = ca {
            args.extend(["--tls-client-ca", p(ca)]);
        }
        let out = strata(&args);
        // A daemon that cannot serve what it was asked to must not start.
        assert_eq!(out.status.code(), Some(1), "case {i}: {}", stderr(&out));
        let e = stderr(&out);
        let e = e.lines().last().unwrap_or_default();
        // The file to fix is named, and (as serve() promises for settings
        // that can be wrong) nothing was created before the check.
        if !e.contains(p(named)) {
            wrong.push(format!("case {i}: {named:?} not named in {e:?}"));
        }
        if data.exists() || sock.exists() {
            wrong.push(format!(
                "case {i}: store created before the TLS files were checked \
                 (data dir {}, socket left behind {})",
                data.exists(),
                sock.exists()
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Flags for a `strata serve` child in `dir`; its socket is `dir/s.sock`.
fn serve_args(dir: &Path, listen: &str) -> Vec<String> {
    [
        "serve",
        "--listen",
        listen,
        "--data-dir",
        p(&dir.join("data")),
        "--socket",
        p(&dir.join("s.sock")),
        "--metrics-addr",
        "off",
    ]
    .map(String::from)
    .to_vec()
}

fn start(dir: &Path, args: &[String]) -> Served {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Served::start(&args, &dir.join("s.sock"), dir.join("serve.log"))
}

#[test]
fn cli_push_and_cat_over_loopback_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(LOOPBACK);
    let served = start(
        tmp.path(),
        &serve_args(tmp.path(), &format!("127.0.0.1:{port}")),
    );
    let addr = format!("http://127.0.0.1:{port}");
    push_and_cat(&["--addr", &addr], tmp.path(), 20);
    // The blob is in the store the unix socket serves.
    let out = strata(&["--socket", p(&tmp.path().join("s.sock")), "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&sha256_digest(&sample(20))),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // STRATA_ADDR works like --addr.
    let data = tmp.path().join("blob-20");
    let out = Command::new(BIN)
        .args(["push", p(&data)])
        .env("STRATA_ADDR", &addr)
        .env_remove("STRATA_SOCKET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(served.log().contains("TCP"), "{}", served.log());
}

#[test]
fn cli_push_and_cat_over_tls() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(ANY);
    let mut args = serve_args(tmp.path(), &format!("0.0.0.0:{port}"));
    for a in [
        "--tls-cert",
        p(&pki.path("server.pem")),
        "--tls-key",
        p(&pki.path("server.key")),
    ] {
        args.push(a.into());
    }
    let _served = start(tmp.path(), &args);
    let addr = format!("https://localhost:{port}");
    push_and_cat(
        &["--addr", &addr, "--tls-ca", p(&pki.path("ca.pem"))],
        tmp.path(),
        21,
    );

    // Without --tls-ca: exit 1 and a pointer to the flag.
    let file = tmp.path().join("blob-21");
    let out = strata(&["--addr", &addr, "push", p(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--tls-ca"), "{}", stderr(&out));
    // Plaintext to the TLS port fails, and the daemon survives it.
    let plain = format!("http://127.0.0.1:{port}");
    let out = strata(&["--addr", &plain, "push", p(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    push_and_cat(
        &["--addr", &addr, "--tls-ca", p(&pki.path("ca.pem"))],
        tmp.path(),
        22,
    );
    // Checked last so the checks above run either way: a failure to talk to
    // a TCP daemon says which address it was.
    assert!(stderr(&out).contains(&plain), "{}", stderr(&out));
}

#[test]
fn cli_client_certificates() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(LOOPBACK);
    let mut args = serve_args(tmp.path(), &format!("127.0.0.1:{port}"));
    for a in [
        "--tls-cert",
        p(&pki.path("server.pem")),
        "--tls-key",
        p(&pki.path("server.key")),
        "--tls-client-ca",
        p(&pki.path("ca.pem")),
    ] {
        args.push(a.into());
    }
    let _served = start(tmp.path(), &args);
    let addr = format!("https://localhost:{port}");
    let ca_file = pki.path("ca.pem");
    let ca = p(&ca_file);
    let with = |name: &str| {
        vec![
            "--addr".to_string(),
            addr.clone(),
            "--tls-ca".into(),
            ca.into(),
            "--client-cert".into(),
            p(&pki.path(&format!("{name}.pem"))).into(),
            "--client-key".into(),
            p(&pki.path(&format!("{name}.key"))).into(),
        ]
    };
    let signed = with("client");
    let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
    push_and_cat(&signed, tmp.path(), 23);
    let file = tmp.path().join("blob-23");
    let mut errors = Vec::new();
    for args in [
        vec![
            "--addr".to_string(),
            addr.clone(),
            "--tls-ca".into(),
            ca.into(),
        ],
        with("self-signed"),
    ] {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["push", p(&file)]);
        let out = strata(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        errors.push(stderr(&out));
    }
    push_and_cat(&signed, tmp.path(), 24);
    // Checked last so the checks above run either way: a refused client
    // learns it is about its certificate, and which daemon refused it.
    for e in &errors {
        assert!(
            e.to_lowercase().contains("certificate") && e.contains(&addr),
            "{errors:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 5. The config file

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let f = dir.join("strata.toml");
    let mut w = std::fs::File::create(&f).unwrap();
    w.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn config_file_listen_key() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(LOOPBACK);
    let cfg = write_config(
        tmp.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndata-dir = \"{}\"\nmetrics-addr = \"off\"\n",
            p(&tmp.path().join("data"))
        ),
    );
    // A global flag before `serve`, as people type it.
    let sock = tmp.path().join("s.sock");
    let _served = Served::start(
        &["--socket", p(&sock), "serve", "--config", p(&cfg)],
        &sock,
        tmp.path().join("serve.log"),
    );
    push_and_cat(
        &["--addr", &format!("http://127.0.0.1:{port}")],
        tmp.path(),
        30,
    );
}

#[test]
fn config_file_tls_keys() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port(ANY);
    let sock = tmp.path().join("s.sock");
    // Without TLS keys a non-loopback listen from the file is refused too.
    let plain = write_config(
        tmp.path(),
        &format!(
            "listen = \"0.0.0.0:{port}\"\ndata-dir = \"{}\"\nmetrics-addr = \"off\"\n",
            p(&tmp.path().join("data"))
        ),
    );
    let out = strata(&["--socket", p(&sock), "serve", "--config", p(&plain)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));

    let cfg = write_config(
        tmp.path(),
        &format!(
            "listen = \"0.0.0.0:{port}\"\ntls_cert = \"{}\"\ntls-key = \"{}\"\n\
             data-dir = \"{}\"\nmetrics-addr = \"off\"\n",
            p(&pki.path("server.pem")),
            p(&pki.path("server.key")),
            p(&tmp.path().join("data"))
        ),
    );
    let _served = Served::start(
        &["--socket", p(&sock), "serve", "--config", p(&cfg)],
        &sock,
        tmp.path().join("serve.log"),
    );
    push_and_cat(
        &[
            "--addr",
            &format!("https://localhost:{port}"),
            "--tls-ca",
            p(&pki.path("ca.pem")),
        ],
        tmp.path(),
        31,
    );
}
