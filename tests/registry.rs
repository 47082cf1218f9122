//! The OCI distribution API (`strata serve --registry-listen`) against a
//! real HTTP client (reqwest) and raw TCP for what clients normally do not
//! send: wrong digests, chunk gaps, oversized manifests, bad names, a client
//! that vanishes mid-upload, auth, read-only mode, restarts, delete + GC.

mod common;

use common::Daemon;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use strata::registry::RegistryOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Reg {
    daemon: Daemon,
    base: String,
    addr: SocketAddr,
    http: Client,
}

async fn start_with(dir: &Path, addr: SocketAddr, f: impl FnOnce(&mut RegistryOptions)) -> Reg {
    let mut r = RegistryOptions::new(addr);
    f(&mut r);
    let daemon = Daemon::start_custom(dir, |o| o.registry = Some(r)).await;
    // The registry binds before the store opens: it is up with the socket.
    Reg {
        daemon,
        base: format!("http://{addr}"),
        addr,
        http: Client::new(),
    }
}

async fn start(dir: &Path) -> Reg {
    start_with(dir, free_port(), |_| {}).await
}

impl Reg {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn req(&self, m: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(m, self.url(path))
    }

    /// A monolithic upload (POST ?digest=).
    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha(data);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn status(&self, m: Method, path: &str) -> StatusCode {
        self.req(m, path).await.send().await.unwrap().status()
    }
}

/// The error code of a spec error body.
async fn code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("an OCI error body");
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn manifest(config: &(String, usize), layers: &[(String, usize)], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&m).unwrap()
}

/// Raw HTTP/1.1: the exact bytes, no client normalising the path.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_round_trip_with_ranges_and_exact_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start(tmp.path()).await;
    let r = reg.req(Method::GET, "/v2/").await.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["Docker-Distribution-API-Version"],
        "registry/2.0"
    );

    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let d = reg.push_blob("a/b", &data).await;
    let r = reg
        .http
        .get(reg.url(&format!("/v2/a/b/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["Docker-Content-Digest"], d.as_str());
    assert_eq!(
        r.headers()["Content-Length"],
        data.len().to_string().as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    let r = reg
        .http
        .head(reg.url(&format!("/v2/a/b/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["Content-Length"],
        data.len().to_string().as_str()
    );

    let r = reg
        .http
        .get(reg.url(&format!("/v2/a/b/blobs/{d}")))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["Content-Range"],
        format!("bytes 1000-1999/{}", data.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[1000..2000]);

    let r = reg
        .http
        .get(reg.url(&format!("/v2/a/b/blobs/{d}")))
        .header("Range", format!("bytes={}-", data.len() + 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let missing = sha(b"not stored");
    let r = reg
        .http
        .get(reg.url(&format!("/v2/a/b/blobs/{missing}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(code(r).await, "BLOB_UNKNOWN");
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_at_the_closing_put_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start(tmp.path()).await;
    let data = b"the real bytes of a blob".repeat(1000);
    let r = reg
        .http
        .post(reg.url("/v2/x/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["Location"].to_str().unwrap().to_string();
    let r = reg
        .http
        .patch(reg.url(&loc))
        .header("Content-Range", format!("0-{}", data.len() - 1))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["Range"],
        format!("0-{}", data.len() - 1).as_str()
    );
    let claimed = sha(b"something else");
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = reg
        .http
        .put(reg.url(&format!("{loc}{sep}digest={claimed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(r).await, "DIGEST_INVALID");
    for d in [claimed, sha(&data)] {
        assert_eq!(
            reg.status(Method::HEAD, &format!("/v2/x/blobs/{d}")).await,
            StatusCode::NOT_FOUND,
            "{d} must not be stored"
        );
    }
    // The session is over.
    let r = reg.http.get(reg.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // Monolithic, too.
    let r = reg
        .http
        .post(reg.url(&format!("/v2/x/blobs/uploads/?digest={}", sha(b"other"))))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(r).await, "DIGEST_INVALID");
    assert_eq!(
        reg.status(Method::HEAD, &format!("/v2/x/blobs/{}", sha(&data)))
            .await,
        StatusCode::NOT_FOUND
    );
    let mut c = reg.daemon.client().await;
    let stats = c
        .stats(strata::proto::strata::v1::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.blobs, 0, "nothing stored: {stats:?}");
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_must_follow_each_other_and_resume_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port();
    let reg = start_with(tmp.path(), addr, |_| {}).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let (a, b) = data.split_at(120_000);
    let r = reg
        .http
        .post(reg.url("/v2/r/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["Location"].to_str().unwrap().to_string();
    // A gap: the chunk does not start at 0.
    let r = reg
        .http
        .patch(reg.url(&loc))
        .header("Content-Range", "10-19")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = reg
        .http
        .patch(reg.url(&loc))
        .header("Content-Range", format!("0-{}", a.len() - 1))
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The same chunk again is out of order too.
    let r = reg
        .http
        .patch(reg.url(&loc))
        .header("Content-Range", format!("0-{}", a.len() - 1))
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    reg.daemon.stop().await;

    // The daemon restarts: the session goes on where it stood.
    let reg = start_with(tmp.path(), addr, |_| {}).await;
    let r = reg.http.get(reg.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["Range"], format!("0-{}", a.len() - 1).as_str());
    let d = sha(&data);
    let r = reg
        .http
        .put(reg.url(&format!("{loc}?digest={d}")))
        .header("Content-Range", format!("{}-{}", a.len(), data.len() - 1))
        .body(b.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["Docker-Content-Digest"], d.as_str());
    let got = reg
        .http
        .get(reg.url(&format!("/v2/r/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_upload_leaves_no_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start_with(tmp.path(), free_port(), |o| {
        o.body_timeout = Duration::from_secs(2)
    })
    .await;
    let data = vec![7u8; 100_000];
    let r = reg
        .http
        .post(reg.url("/v2/v/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["Location"].to_str().unwrap().to_string();
    let d = sha(&data);
    // Says 100000 bytes, sends 30000, goes away.
    let mut s = tokio::net::TcpStream::connect(reg.addr).await.unwrap();
    let head = format!(
        "PUT {loc}?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&data[..30_000]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        reg.status(Method::HEAD, &format!("/v2/v/blobs/{d}")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.status(
            Method::HEAD,
            &format!("/v2/v/blobs/{}", sha(&data[..30_000]))
        )
        .await,
        StatusCode::NOT_FOUND
    );
    // What arrived is kept for a resume, not as a blob.
    let r = reg.http.get(reg.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let range = r.headers()["Range"].to_str().unwrap().to_string();
    let have: usize = range.split('-').nth(1).unwrap().parse::<usize>().unwrap() + 1;
    assert!(have <= 30_000, "{range}");
    let r = reg
        .http
        .put(reg.url(&format!("{loc}?digest={d}")))
        .header("Content-Range", format!("{have}-{}", data.len() - 1))
        .body(data[have..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        reg.status(Method::HEAD, &format!("/v2/v/blobs/{d}")).await,
        StatusCode::OK
    );
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_checked_against_the_grammar() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start(tmp.path()).await;
    for name in ["Upper/case", &"a".repeat(300), "a//b", "a_"] {
        let r = reg
            .http
            .get(reg.url(&format!("/v2/{name}/tags/list")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(code(r).await, "NAME_INVALID", "{name}");
    }
    for path in [
        "/v2/../x/tags/list",
        "/v2/a/../../x/manifests/latest",
        "/v2/%2e%2e/x/blobs/uploads/",
    ] {
        let (status, text) = raw(
            reg.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(status == 400 || status == 404, "{path}: {text}");
        assert!(text.contains("NAME_INVALID"), "{path}: {text}");
    }
    // A malformed tag: nothing can be stored under it (404 on GET, as the
    // conformance suite wants), and a PUT is refused.
    let r = reg
        .http
        .get(reg.url("/v2/ok/manifests/-bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(code(r).await, "MANIFEST_UNKNOWN");
    let r = reg.put_manifest("ok", "-bad", b"{}").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(r).await, "TAG_INVALID");
    let r = reg
        .http
        .get(reg.url("/v2/ok/blobs/sha256:short"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(r).await, "DIGEST_INVALID");
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_tags_referrers_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start_with(tmp.path(), free_port(), |o| o.max_manifest_bytes = 64 << 10).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = b"layer bytes ".repeat(5000);
    let cd = reg.push_blob("app", &config).await;
    let ld = reg.push_blob("app", &layer).await;
    let m = manifest(
        &(cd.clone(), config.len()),
        &[(ld.clone(), layer.len())],
        json!({}),
    );
    let md = sha(&m);
    let r = reg.put_manifest("app", "v1", &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["Docker-Content-Digest"], md.as_str());
    for reference in ["v1", md.as_str()] {
        let r = reg
            .http
            .get(reg.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["Content-Type"], OCI_MANIFEST);
        assert_eq!(r.headers()["Docker-Content-Digest"], md.as_str());
        assert_eq!(r.headers()["Content-Length"], m.len().to_string().as_str());
        assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..]);
    }
    // Wrong digest in the URL, unknown blobs, oversized.
    let r = reg.put_manifest("app", &sha(b"x"), &m).await;
    assert_eq!(code(r).await, "DIGEST_INVALID");
    let bad = manifest(&(sha(b"nope"), 4), &[], json!({}));
    let r = reg.put_manifest("app", "bad", &bad).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let r = reg.put_manifest("app", "bad", b"{not json").await;
    assert_eq!(code(r).await, "MANIFEST_INVALID");
    let huge = manifest(
        &(cd.clone(), config.len()),
        &[],
        json!({"annotations": {"x": "y".repeat(100_000)}}),
    );
    let r = reg.put_manifest("app", "huge", &huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(r).await, "SIZE_INVALID");
    assert_eq!(
        reg.status(Method::GET, "/v2/app/manifests/huge").await,
        StatusCode::NOT_FOUND
    );

    // Tags with paging.
    for t in ["v2", "v3", "a0"] {
        assert_eq!(
            reg.put_manifest("app", t, &m).await.status(),
            StatusCode::CREATED
        );
    }
    let v: Value = reg
        .http
        .get(reg.url("/v2/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"name": "app", "tags": ["a0", "v1", "v2", "v3"]}));
    let r = reg
        .http
        .get(reg.url("/v2/app/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["Link"].to_str().unwrap().contains("last=v1"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["a0", "v1"]));
    let v: Value = reg
        .http
        .get(reg.url("/v2/app/tags/list?n=2&last=v1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["v2", "v3"]));
    let r = reg
        .http
        .get(reg.url("/v2/nothing/here/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, "NAME_UNKNOWN");
    let v: Value = reg
        .http
        .get(reg.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["repositories"], json!(["app"]));

    // Referrers, filtered by artifact type.
    let empty = reg.push_blob("app", b"{}").await;
    let sig = |t: &str, n: u32| {
        let body = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": t,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len()},
            "annotations": {"n": n.to_string()},
        });
        serde_json::to_vec(&body).unwrap()
    };
    let (s1, s2) = (sig("application/x-sig", 1), sig("application/x-sbom", 2));
    for s in [&s1, &s2] {
        let r = reg.put_manifest("app", &sha(s), s).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["OCI-Subject"], md.as_str());
    }
    let r = reg
        .http
        .get(reg.url(&format!("/v2/app/referrers/{md}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["Content-Type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let r = reg
        .http
        .get(reg.url(&format!(
            "/v2/app/referrers/{md}?artifactType=application/x-sbom"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["OCI-Filters-Applied"], "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sha(&s2));
    assert_eq!(v["manifests"][0]["annotations"]["n"], "2");
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_manifest_then_gc_frees_its_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start(tmp.path()).await;
    let mut c = reg.daemon.client().await;
    let config = br#"{"os":"linux"}"#.to_vec();
    let layer: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cd = reg.push_blob("del", &config).await;
    let ld = reg.push_blob("del", &layer).await;
    let m = manifest(
        &(cd.clone(), config.len()),
        &[(ld.clone(), layer.len())],
        json!({}),
    );
    let md = sha(&m);
    assert_eq!(
        reg.put_manifest("del", "t", &m).await.status(),
        StatusCode::CREATED
    );
    let before = c
        .stats(strata::proto::strata::v1::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(before.chunks > 0);
    let r = reg
        .http
        .delete(reg.url(&format!("/v2/del/manifests/{md}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for p in [
        format!("/v2/del/manifests/{md}"),
        "/v2/del/manifests/t".into(),
        format!("/v2/del/blobs/{ld}"),
        format!("/v2/del/blobs/{cd}"),
    ] {
        assert_eq!(
            reg.status(Method::GET, &p).await,
            StatusCode::NOT_FOUND,
            "{p}"
        );
    }
    c.gc(strata::proto::strata::v1::GcRequest::default())
        .await
        .unwrap();
    let after = c
        .stats(strata::proto::strata::v1::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.blobs, 0, "{after:?}");
    assert_eq!(after.chunks, 0, "{after:?}");
    // Deleting a tag that is gone is MANIFEST_UNKNOWN.
    let r = reg
        .http
        .delete(reg.url("/v2/del/manifests/t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(code(r).await, "MANIFEST_UNKNOWN");
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_auth_and_read_only_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("htpasswd");
    std::fs::write(
        &pw,
        format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
    )
    .unwrap();
    let reg = start_with(&tmp.path().join("d"), free_port(), |o| {
        o.htpasswd = Some(pw.clone());
        o.read_only = true;
    })
    .await;
    let r = reg.http.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["WWW-Authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm="));
    assert_eq!(code(r).await, "UNAUTHORIZED");
    for (user, pass, want) in [
        ("alice", "wrong", StatusCode::UNAUTHORIZED),
        ("mallory", "s3cret", StatusCode::UNAUTHORIZED),
        ("alice", "s3cret", StatusCode::OK),
    ] {
        let r = reg
            .http
            .get(reg.url("/v2/"))
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{user}:{pass}");
    }
    // Read-only: writes are refused, before anything is stored.
    let r = reg
        .http
        .post(reg.url(&format!("/v2/x/blobs/uploads/?digest={}", sha(b"abc"))))
        .basic_auth("alice", Some("s3cret"))
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(r).await, "DENIED");
    let r = reg
        .http
        .get(reg.url(&format!("/v2/x/blobs/{}", sha(b"abc"))))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_refused_off_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = strata::server::ServeOptions {
        registry: Some(RegistryOptions::new("0.0.0.0:0".parse().unwrap())),
        socket: tmp.path().join("s.sock"),
        ..strata::server::ServeOptions::new(tmp.path().to_path_buf())
    };
    let e = strata::server::serve(opts, async {}).await.unwrap_err();
    assert!(e.to_string().contains("without TLS"), "{e}");
}

/// A tar of text files, gzipped by the system's gzip (a replayable encoder).
fn gzip_layer() -> (Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..8u32 {
        let mut x = u64::from(i) + 1;
        let data: Vec<u8> = (0..40_000u32)
            .flat_map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("{} ", x >> 50).into_bytes()
            })
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, format!("f{i}"), data.as_slice())
            .unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut child = std::process::Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let t = tar.clone();
    let w = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &t).unwrap());
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(out.status.success());
    (tar, out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_gzip_layer_is_rebuilt_exactly_for_ranged_gets() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start_with(tmp.path(), free_port(), |o| {
        o.rebuilt_cache_bytes = 64 << 20
    })
    .await;
    let (_tar, gz) = gzip_layer();
    // Chunked, as docker pushes.
    let r = reg
        .http
        .post(reg.url("/v2/gz/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["Location"].to_str().unwrap().to_string();
    let mut at = 0;
    for piece in gz.chunks(100_000) {
        let r = reg
            .http
            .patch(reg.url(&loc))
            .header("Content-Range", format!("{at}-{}", at + piece.len() - 1))
            .body(piece.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        at += piece.len();
    }
    let d = sha(&gz);
    let r = reg
        .http
        .put(reg.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Stored as received, then converted in the background like a containerd upload.
    let mut c = reg.daemon.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = c
            .stats(strata::proto::strata::v1::StatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if s.pending_conversions == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never converted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let info = c
        .stat(strata::proto::strata::v1::StatRequest {
            namespace: "registry".into(),
            digest: d.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.codec, "gzip", "{info:?}");
    // Rebuilt on read (a replay or preflate), not kept as received.
    assert!(
        info.strategy == "replay" || info.strategy == "preflate",
        "{info:?}"
    );
    let n = gz.len();
    assert!(n > 200_000, "{n}");
    let cached = tmp.path().join("rebuilt-cache").join(&d[7..]);
    let ranges = [(0, 99), (n / 3, n / 2), (n - 10, n - 1)];
    // Ranged GETs rebuild (and do not fill the cache); the first whole GET
    // fills it; then every GET reads the cached file.
    for round in 0..2 {
        for (a, b) in ranges {
            let r = reg
                .http
                .get(reg.url(&format!("/v2/gz/blobs/{d}")))
                .header("Range", format!("bytes={a}-{b}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(r.bytes().await.unwrap().as_ref(), &gz[a..=b], "{a}-{b}");
        }
        assert_eq!(cached.exists(), round == 1, "round {round}");
        let whole = reg
            .http
            .get(reg.url(&format!("/v2/gz/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha(&whole), d);
        // Put in place just after the last byte went out.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cached.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::read(&cached).unwrap(),
            gz,
            "the cache holds the exact blob"
        );
    }
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_deletes_leave_containerds_namespace_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start(tmp.path()).await;
    let data = b"shared between containerd and the registry ".repeat(3000);
    let d = reg.push_blob("shared", &data).await;
    let mut c = reg.daemon.client().await;
    common::push_as(&mut c, "containerd", &d, &data, 64 << 10)
        .await
        .unwrap();
    let r = reg
        .http
        .delete(reg.url(&format!("/v2/shared/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        reg.status(Method::GET, &format!("/v2/shared/blobs/{d}"))
            .await,
        StatusCode::NOT_FOUND
    );
    c.gc(strata::proto::strata::v1::GcRequest::default())
        .await
        .unwrap();
    let got = common::read_range(&mut c, "containerd", &d, 0, 0)
        .await
        .unwrap();
    assert_eq!(got, data, "containerd's copy is untouched");
    reg.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_bounded_in_number_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = start_with(tmp.path(), free_port(), |o| {
        o.max_uploads = 2;
        o.max_blob_bytes = 100_000;
    })
    .await;
    let big = vec![1u8; 150_000];
    let r = reg
        .http
        .post(reg.url(&format!("/v2/b/blobs/uploads/?digest={}", sha(&big))))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(r).await, "SIZE_INVALID");
    assert_eq!(
        reg.status(Method::HEAD, &format!("/v2/b/blobs/{}", sha(&big)))
            .await,
        StatusCode::NOT_FOUND
    );
    for _ in 0..2 {
        let r = reg
            .http
            .post(reg.url("/v2/b/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let r = reg
        .http
        .post(reg.url("/v2/b/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(r).await, "TOO_MANY_REQUESTS");
    reg.daemon.stop().await;
}
