//! `--metrics-addr`: Prometheus text on GET /metrics with what the daemon took
//! in and stored, requests by method, and garbage collection.

mod common;

use common::*;
use std::io::{Read, Write};
use strata::proto::strata::v1 as pb;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of one sample line (`name` with its labels, exactly).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_pushes_requests_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = Daemon::start_custom(dir.path(), |o| {
        o.metrics_addr = Some(([127, 0, 0, 1], port).into());
    })
    .await;
    let mut c = d.client().await;
    let a = noise(300_000, 1);
    let mut b = a.clone();
    b.extend_from_slice(&noise(100_000, 2));
    let ra = push(&mut c, &a).await;
    let rb = push(&mut c, &b).await;
    let _ = read_all(&mut c, &ra.digest).await;
    let missing = read_range(&mut c, "", &sha256_digest(b"nope"), 0, 0).await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    c.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: ra.digest.clone(),
    })
    .await
    .unwrap();
    c.delete(pb::DeleteRequest {
        namespace: String::new(),
        digest: rb.digest.clone(),
    })
    .await
    .unwrap();
    let gc = c.gc(pb::GcRequest::default()).await.unwrap().into_inner();

    let port2 = port;
    let text = tokio::task::spawn_blocking(move || get(port2, "/metrics"))
        .await
        .unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(
        sample(&text, "strata_bytes_received_total"),
        (a.len() + b.len()) as f64
    );
    assert_eq!(
        sample(&text, "strata_bytes_stored_total"),
        (ra.bytes_added + rb.bytes_added) as f64
    );
    assert_eq!(
        sample(&text, "strata_chunks_new_total"),
        (ra.new_chunks + rb.new_chunks) as f64
    );
    assert_eq!(
        sample(&text, "strata_chunks_reused_total"),
        rb.reused_chunks as f64
    );
    assert!(rb.reused_chunks > 0);
    assert_eq!(sample(&text, "strata_blobs"), 0.0);
    assert_eq!(sample(&text, "strata_gc_runs_total"), 1.0);
    assert_eq!(
        sample(&text, "strata_gc_chunks_freed_total"),
        gc.chunks_freed as f64
    );
    assert_eq!(
        sample(
            &text,
            "strata_requests_total{method=\"/strata.v1.Store/Push\",code=\"0\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "strata_requests_total{method=\"/strata.v1.Store/Read\",code=\"5\"}"
        ),
        1.0,
        "the NotFound read is counted with its code"
    );
    assert_eq!(
        sample(
            &text,
            "strata_request_duration_seconds_count{method=\"/strata.v1.Store/Push\"}"
        ),
        2.0
    );
    let other = tokio::task::spawn_blocking(move || get(port, "/other"))
        .await
        .unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    d.stop().await;
}
