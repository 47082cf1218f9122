//! `strata import docker://...` against registries that misbehave: a small
//! HTTP server here plays them (no real registry serves a wrong digest on
//! purpose). Each failure is one line naming the reference and the cause,
//! and leaves no image recorded and the bad blob unstored; 503s and a
//! connection dropped mid-blob are retried and resumed.

mod common;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use common::docker_registry::free_port;
use common::serve_child::{failure, ServeChild};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// One image's documents and layer.
struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

/// An image whose one gzip layer is `size` bytes of text; the manifest
/// states the layer's size as `size + announce_delta`.
fn image(seed: u64, announce_delta: i64) -> Image {
    let mut body = Vec::new();
    let mut x = seed | 1;
    while body.len() < 600_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        writeln!(body, "line {} of a file {}", x >> 40, seed).unwrap();
    }
    let tar = common::tar_of(&[("a.txt", &body)], 1_700_000_000);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(&tar).unwrap();
    let layer = e.finish().unwrap();
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]}}))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&layer),
                    "size": (layer.len() as i64 + announce_delta) as u64}]}))
    .unwrap();
    Image {
        manifest,
        config,
        layer,
    }
}

/// What the fake registry serves, and what it was asked.
struct Fake {
    images: HashMap<String, Image>,
    hits: Mutex<Vec<String>>,
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(body).unwrap()
}

async fn handle(State(f): State<Arc<Fake>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    f.hits.lock().unwrap().push(format!(
        "{} {path} {}",
        req.method(),
        range.clone().unwrap_or_default()
    ));
    if path == "/v2/" {
        return respond(StatusCode::OK, &[], Body::empty());
    }
    let parts: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
    let [repo, kind, reference] = parts[..] else {
        return respond(StatusCode::NOT_FOUND, &[], Body::empty());
    };
    match (repo, kind) {
        ("loop", _) => {
            return respond(
                StatusCode::FOUND,
                &[("Location", path.clone())],
                Body::empty(),
            )
        }
        // Moved elsewhere, as registries send blobs to object storage.
        ("moved", _) => {
            let to = path.replacen("/v2/moved/", "/v2/plain/", 1);
            return respond(
                StatusCode::TEMPORARY_REDIRECT,
                &[("Location", to)],
                Body::empty(),
            );
        }
        ("forbidden", _) => return respond(StatusCode::FORBIDDEN, &[], Body::empty()),
        ("slow", _) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return respond(StatusCode::OK, &[], Body::empty());
        }
        ("garbled", "manifests") => {
            return respond(
                StatusCode::OK,
                &[("Content-Type", MANIFEST.into())],
                Body::from("{not json"),
            )
        }
        ("schema1", "manifests") => {
            let ct = "application/vnd.docker.distribution.manifest.v1+prettyjws".to_string();
            return respond(
                StatusCode::OK,
                &[("Content-Type", ct)],
                Body::from(r#"{"schemaVersion":1}"#),
            );
        }
        _ => {}
    }
    let Some(img) = f.images.get(repo) else {
        return respond(StatusCode::NOT_FOUND, &[], Body::empty());
    };
    if kind == "manifests" {
        return respond(
            StatusCode::OK,
            &[("Content-Type", MANIFEST.into())],
            Body::from(img.manifest.clone()),
        );
    }
    if reference == sha(&img.config) {
        return respond(StatusCode::OK, &[], Body::from(img.config.clone()));
    }
    if reference != sha(&img.layer) {
        return respond(StatusCode::NOT_FOUND, &[], Body::empty());
    }
    let layer = img.layer.clone();
    let gets = f
        .hits
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.contains(reference))
        .count();
    match repo {
        "flaky" if gets <= 2 => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            &[("Retry-After", "0".into())],
            Body::empty(),
        ),
        "baddigest" => {
            let mut l = layer;
            let n = l.len();
            l[n / 2] ^= 0xff;
            respond(StatusCode::OK, &[], Body::from(l))
        }
        "broken" if range.is_none() => {
            // Half the body, then (once it is surely sent) the connection drops.
            let half = bytes::Bytes::from(layer[..layer.len() / 2].to_vec());
            let s = futures::stream::unfold(0, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Some((Err(std::io::Error::other("dropped")), 2))
                        }
                        _ => None,
                    }
                }
            });
            respond(
                StatusCode::OK,
                &[("Content-Length", layer.len().to_string())],
                Body::from_stream(s),
            )
        }
        "trickle" => {
            // Ten pieces, 400 ms apart: slower than the body timeout in all,
            // never silent for that long.
            let n = layer.len();
            let pieces: Vec<bytes::Bytes> = (0..10)
                .map(|i| bytes::Bytes::from(layer[i * n / 10..(i + 1) * n / 10].to_vec()))
                .collect();
            let s = futures::stream::unfold(pieces.into_iter(), |mut it| async move {
                let p = it.next()?;
                tokio::time::sleep(Duration::from_millis(400)).await;
                Some((Ok::<_, std::io::Error>(p), it))
            });
            respond(
                StatusCode::OK,
                &[("Content-Length", n.to_string())],
                Body::from_stream(s),
            )
        }
        "broken" => {
            let from: usize = range.unwrap()["bytes=".len()..]
                .trim_end_matches('-')
                .parse()
                .unwrap();
            let rest = layer[from..].to_vec();
            let cr = format!("bytes {from}-{}/{}", layer.len() - 1, layer.len());
            respond(
                StatusCode::PARTIAL_CONTENT,
                &[("Content-Range", cr)],
                Body::from(rest),
            )
        }
        _ => respond(StatusCode::OK, &[], Body::from(layer)),
    }
}

/// Starts the fake registry on its own thread and runtime; its address.
fn start_fake(f: Arc<Fake>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            let app = axum::Router::new().fallback(handle).with_state(f);
            axum::serve(l, app).await.unwrap();
        });
    });
    addr
}

fn import(d: &ServeChild, args: &[&str]) -> Output {
    let mut a = vec!["import"];
    a.extend_from_slice(args);
    d.run_clean(d.dir(), &[], &a)
}

fn stored(d: &ServeChild, digest: &str) -> bool {
    d.ls("default").contains_key(digest)
}

#[test]
fn misbehaving_registries_fail_clearly_and_store_nothing() {
    let mut images = HashMap::new();
    for (repo, seed, delta) in [
        ("baddigest", 1, 0),
        ("longer", 2, -10),
        ("flaky", 3, 0),
        ("broken", 4, 0),
        ("plain", 5, 0),
    ] {
        images.insert(repo.to_string(), image(seed, delta));
    }
    let layer_of = |repo: &str| sha(&images[repo].layer);
    let (bad_layer, long_layer) = (layer_of("baddigest"), layer_of("longer"));
    let (flaky_layer, broken_layer) = (layer_of("flaky"), layer_of("broken"));
    let fake = Arc::new(Fake {
        images,
        hits: Mutex::new(Vec::new()),
    });
    let addr = start_fake(fake.clone());
    let d = ServeChild::start();
    let r = |repo: &str| format!("docker://{addr}/{repo}:1");
    let fails = |repo: &str, extra: &[&str], causes: &[&str]| {
        let reference = r(repo);
        let mut args = vec!["--tls-verify=false"];
        args.extend_from_slice(extra);
        args.push(&reference);
        let e = failure(&import(&d, &args));
        assert!(e.contains(&reference), "{e}");
        for c in causes {
            assert!(e.contains(c), "{repo}: {c:?} not in {e}");
        }
        assert!(
            d.images("default").is_empty(),
            "{repo}: an image was recorded"
        );
    };
    fails("baddigest", &[], &[&bad_layer, "does not match its digest"]);
    assert!(!stored(&d, &bad_layer));
    fails("longer", &[], &[&long_layer, "announces"]);
    assert!(!stored(&d, &long_layer));
    fails("garbled", &[], &["malformed JSON"]);
    fails("schema1", &[], &["schema 1"]);
    fails("loop", &[], &["redirect"]);
    fails("forbidden", &[], &["403"]);
    fails("nothing", &[], &["404"]);
    fails(
        "slow",
        &["--registry-timeout", "2", "--registry-retries", "0"],
        &["timed out"],
    );
    // A host that does not resolve, a port nobody listens on.
    let e = failure(&import(&d, &["docker://nonexistent.invalid/x:1"]));
    assert!(
        e.contains("docker://nonexistent.invalid/x:1") && e.contains("dns"),
        "{e}"
    );
    let refused = format!("docker://127.0.0.1:{}/x:1", free_port());
    let e = failure(&import(&d, &[&refused]));
    assert!(e.contains(&refused) && e.contains("refused"), "{e}");
    assert!(
        d.ls("default")
            .values()
            .all(|b| b["size"].as_u64() < Some(4096)),
        "only small documents"
    );

    // 503 twice, then the blob: retried, stored exact.
    let o = import(&d, &["--tls-verify=false", &r("flaky")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stored(&d, &flaky_layer));
    let hits = fake.hits.lock().unwrap().clone();
    assert_eq!(
        hits.iter()
            .filter(|h| h.starts_with("GET") && h.contains(&flaky_layer))
            .count(),
        3,
        "{hits:#?}"
    );
    // The connection drops half way: resumed with a Range request.
    let o = import(&d, &["--tls-verify=false", &r("broken")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stored(&d, &broken_layer));
    let hits = fake.hits.lock().unwrap().clone();
    assert!(
        hits.iter()
            .any(|h| h.contains(&broken_layer) && h.contains("bytes=")),
        "{hits:#?}"
    );
    // Redirects are followed (manifest and blobs alike).
    let o = import(&d, &["--tls-verify=false", &r("moved")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&sha(&fake.images["plain"].manifest)));
    let names: Vec<String> = d.images("default").into_keys().collect();
    assert_eq!(
        names,
        vec![
            format!("{addr}/broken:1"),
            format!("{addr}/flaky:1"),
            format!("{addr}/moved:1")
        ]
    );
}

/// GET of a blob through strata's mirror: (status, the body if it came whole).
fn mirror_get(base: &str, path: &str) -> (u16, Option<Vec<u8>>) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        let st = r.status().as_u16();
        (st, r.bytes().await.ok().map(|b| b.to_vec()))
    })
}

#[test]
fn the_mirror_streams_a_blob_while_storing_it_and_never_completes_a_bad_one() {
    let mut images = HashMap::new();
    images.insert("good".to_string(), image(7, 0));
    images.insert("baddigest".to_string(), image(8, 0));
    images.insert("trickle".to_string(), image(9, 0));
    let (good, bad) = (sha(&images["good"].layer), sha(&images["baddigest"].layer));
    let good_bytes = images["good"].layer.clone();
    let (slow, slow_bytes) = (
        sha(&images["trickle"].layer),
        images["trickle"].layer.clone(),
    );
    let fake = Arc::new(Fake {
        images,
        hits: Mutex::new(Vec::new()),
    });
    let upstream = format!("http://{}", start_fake(fake.clone()));
    let listen = format!("127.0.0.1:{}", free_port());
    let d = ServeChild::start_with(
        &[
            "--registry-listen",
            &listen,
            "--registry-mirror-of",
            &upstream,
            "--registry-body-timeout",
            "1s",
        ],
        &[],
    );
    let base = format!("http://{listen}");

    // Two GETs and a HEAD of a blob that takes 4 s to arrive (the body
    // timeout is 1 s): one upstream fetch, everyone gets it whole.
    let path = format!("/v2/trickle/blobs/{slow}");
    let got: Vec<(u16, Option<Vec<u8>>)> = std::thread::scope(|sc| {
        let h: Vec<_> = (0..2)
            .map(|i| {
                let (base, path) = (&base, &path);
                sc.spawn(move || {
                    std::thread::sleep(Duration::from_millis(300 * i));
                    mirror_get(base, path)
                })
            })
            .collect();
        let head = sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(600));
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let r = reqwest::Client::new()
                    .head(format!("{base}{path}"))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), None)
            })
        });
        let mut v: Vec<_> = h.into_iter().map(|t| t.join().unwrap()).collect();
        v.push(head.join().unwrap());
        v
    });
    assert_eq!(got[0], (200, Some(slow_bytes.clone())));
    assert_eq!(got[1], (200, Some(slow_bytes)));
    assert_eq!(got[2].0, 200, "HEAD");
    let gets = fake
        .hits
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("GET") && h.contains(&slow))
        .count();
    assert_eq!(gets, 1, "one upstream fetch");

    let (st, body) = mirror_get(&base, &format!("/v2/good/blobs/{good}"));
    assert_eq!((st, body.as_deref()), (200, Some(&good_bytes[..])));
    // Stored as it went: the upstream is not asked again.
    let asked = |d: &str| {
        fake.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.contains(d))
            .count()
    };
    assert_eq!(asked(&good), 1);
    let (st, body) = mirror_get(&base, &format!("/v2/good/blobs/{good}"));
    assert_eq!((st, body.as_deref()), (200, Some(&good_bytes[..])));
    assert_eq!(asked(&good), 1);
    assert!(d.ls("registry").contains_key(&good));

    // Bytes that do not match: the body breaks off, nothing is stored.
    let (st, body) = mirror_get(&base, &format!("/v2/baddigest/blobs/{bad}"));
    assert_eq!(st, 200);
    assert!(
        body.is_none(),
        "a complete body for a blob that does not match its digest"
    );
    assert!(!d.ls("registry").contains_key(&bad));
}
