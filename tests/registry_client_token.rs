//! The Bearer token flow against a real docker-registry configured for
//! token auth: the test runs the token service (ES256 JWTs signed with a
//! key whose certificate the registry trusts), as Docker Hub, ghcr.io and
//! quay.io run theirs. Anonymous callers get pull tokens, `bob` push ones.

mod common;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use base64::Engine as _;
use common::docker_registry::{free_port, Config, DockerRegistry};
use common::serve_child::ServeChild;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const SERVICE: &str = "strata-test-registry";
const ISSUER: &str = "strata-test-token-issuer";

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    /// (user or "-", scopes) of every token asked for.
    asked: Mutex<Vec<(String, String)>>,
}

/// A token for the scopes asked, with the actions the caller may have:
/// pull for anyone, push too for bob (password "pw").
async fn token(State(iss): State<Arc<Issuer>>, req: Request) -> Result<String, StatusCode> {
    let url = reqwest::Url::parse(&format!("http://x{}", req.uri())).unwrap();
    let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let user = match req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(a) => {
            let raw = a.strip_prefix("Basic ").ok_or(StatusCode::UNAUTHORIZED)?;
            let dec = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|_| StatusCode::UNAUTHORIZED)?;
            if dec != b"bob:pw" {
                return Err(StatusCode::UNAUTHORIZED);
            }
            Some("bob")
        }
    };
    let scopes: Vec<&String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v)
        .collect();
    iss.asked.lock().unwrap().push((
        user.unwrap_or("-").to_string(),
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut p = s.splitn(3, ':');
            let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|a| *a == "pull" || (*a == "push" && user.is_some()))
                .collect();
            Some(json!({"type": t, "name": name, "actions": granted}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&iss.cert_der)]});
    let claims = json!({"iss": ISSUER, "sub": user.unwrap_or(""), "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", scopes.len()),
        "access": access});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = iss
        .key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    let t = format!("{signing_input}.{}", b64url(sig.as_ref()));
    Ok(json!({"token": t, "expires_in": 300}).to_string())
}

/// A token signer (its certificate in a bundle file the registry trusts).
fn issuer(dir: &std::path::Path) -> (Arc<Issuer>, std::path::PathBuf) {
    let kp = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "token signer");
    let cert = p.self_signed(&kp).unwrap();
    let bundle = dir.join("token-signer.pem");
    std::fs::write(&bundle, cert.pem()).unwrap();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &kp.serialize_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let iss = Arc::new(Issuer {
        key,
        cert_der: cert.der().to_vec(),
        asked: Mutex::new(Vec::new()),
    });
    (iss, bundle)
}

fn start_issuer(iss: Arc<Issuer>, port: u16) {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                let app = axum::Router::new()
                    .route("/token", axum::routing::get(token))
                    .with_state(iss);
                axum::serve(l, app).await.unwrap();
            });
    });
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A one-layer OCI layout tagged `1`; its manifest digest.
fn layout(dir: &std::path::Path) -> String {
    let tar = common::tar_of(&[("etc/hello", &common::noise(50_000, 9))], 1_700_000_000);
    let layer = gzip(&tar);
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]}}))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&layer), "size": layer.len()}]}))
    .unwrap();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    for b in [&layer, &config, &manifest] {
        std::fs::write(dir.join("blobs/sha256").join(&sha(b)[7..]), b).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(&manifest), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    sha(&manifest)
}

fn run(d: &ServeChild, args: &[&str]) -> Output {
    d.run_clean(d.dir(), &[], args)
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let o = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        o.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A docker-registry in token mode, its token service, and an image
/// `team/app:1` pushed by bob: (issuer, registry, manifest digest).
fn token_registry(dir: &std::path::Path) -> (Arc<Issuer>, DockerRegistry, String) {
    let (iss, bundle) = issuer(dir);
    let port = free_port();
    start_issuer(iss.clone(), port);
    let realm = format!("http://127.0.0.1:{port}/token");
    let reg = DockerRegistry::start(
        &dir.join("reg"),
        Config {
            token: Some((&realm, SERVICE, ISSUER, &bundle)),
            ..Default::default()
        },
    );
    let layout_dir = dir.join("layout");
    let manifest = layout(&layout_dir);
    skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "bob:pw",
        &format!("oci:{}:1", layout_dir.display()),
        &format!("docker://{}/team/app:1", reg.addr),
    ]);
    (iss, reg, manifest)
}

#[test]
fn bearer_tokens_per_scope_from_the_registrys_token_service() {
    let tmp = tempfile::tempdir().unwrap();
    let (iss, reg, manifest) = token_registry(tmp.path());
    let src = format!("docker://{}/team/app:1", reg.addr);
    let d = ServeChild::start();

    // Anonymous pull: a pull token for the repository, asked once.
    iss.asked.lock().unwrap().clear();
    let o = run(&d, &["import", "--tls-verify=false", &src]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&manifest));
    let asked = iss.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![("-".to_string(), "repository:team/app:pull".to_string())]
    );

    // Anonymous push: the token lacks push, the registry says 401 twice.
    let dst = format!("docker://{}/copies/app:1", reg.addr);
    let name = format!("{}/team/app:1", reg.addr);
    let o = run(&d, &["export", "--tls-verify=false", &name, &dst]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(&dst) && e.contains("401") && e.contains("no credentials"),
        "{e}"
    );

    // bob may push: one token covering the destination and the mount source.
    iss.asked.lock().unwrap().clear();
    let o = run(
        &d,
        &[
            "export",
            "--tls-verify=false",
            "--creds",
            "bob:pw",
            &name,
            &dst,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 uploaded, 2 mounted"));
    let asked = iss.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![(
            "bob".to_string(),
            "repository:copies/app:pull,push repository:team/app:pull".to_string()
        )]
    );
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "bob:pw",
        &dst,
    ]);
    assert_eq!(sha(&raw), manifest);
    // A wrong password is refused by the token service, and said so.
    let o = run(
        &d,
        &["import", "--tls-verify=false", "--creds", "bob:no", &src],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("token service") && e.contains("bob"),
        "{e}"
    );
}

#[test]
fn the_mirror_asks_a_token_upstream_with_the_daemons_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let (iss, reg, manifest) = token_registry(tmp.path());
    let auth = tmp.path().join("auth.json");
    let b64 = base64::engine::general_purpose::STANDARD.encode("bob:pw");
    std::fs::write(
        &auth,
        json!({"auths": {reg.addr.clone(): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let upstream = format!("http://{}", reg.addr);
    let _d = ServeChild::start_with(
        &[
            "--registry-listen",
            &listen,
            "--registry-mirror-of",
            &upstream,
        ],
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
    );
    iss.asked.lock().unwrap().clear();
    let out = tmp.path().join("pulled");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{listen}/team/app:1"),
        &format!("oci:{}:x", out.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], manifest.as_str());
    let asked = iss.asked.lock().unwrap().clone();
    assert!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|(u, s)| u == "bob" && s == "repository:team/app:pull"),
        "{asked:?}"
    );
}
