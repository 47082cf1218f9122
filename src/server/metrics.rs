//! Prometheus metrics: what the daemon took in and stored, the store's
//! figures, requests by method with their latencies, and garbage collection.
//! Served as text on `GET /metrics` over plain HTTP (`--metrics-addr`).

use crate::store::Store;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    pub bytes_received: AtomicU64,
    pub bytes_stored: AtomicU64,
    pub chunks_new: AtomicU64,
    pub chunks_reused: AtomicU64,
    pub chunks_followed: AtomicU64,
    pub blobs_committed: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_chunks_freed: AtomicU64,
    pub gc_pack_bytes_freed: AtomicU64,
    requests: Mutex<BTreeMap<(String, i32), Histogram>>,
}

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// One push or write that stored a blob.
    pub fn committed(&self, received: u64, o: &crate::store::PushOutcome) {
        self.bytes_received.fetch_add(received, Relaxed);
        self.bytes_stored.fetch_add(o.bytes_added, Relaxed);
        self.chunks_new.fetch_add(o.new_chunks, Relaxed);
        self.chunks_reused.fetch_add(o.reused_chunks, Relaxed);
        self.chunks_followed.fetch_add(o.followed_chunks, Relaxed);
        self.blobs_committed.fetch_add(1, Relaxed);
    }

    pub fn collected(&self, r: &crate::store::gc::GcReport) {
        self.gc_runs.fetch_add(1, Relaxed);
        self.gc_chunks_freed.fetch_add(r.chunks_freed, Relaxed);
        self.gc_pack_bytes_freed.fetch_add(
            r.pack_bytes_before.saturating_sub(r.pack_bytes_after),
            Relaxed,
        );
    }

    fn request(&self, path: &str, code: i32, took: Duration) {
        // Only the services' own methods: a client's made-up paths must not
        // grow the table.
        let method = if path.starts_with("/strata.v1.Store/")
            || path.starts_with("/containerd.services.content.v1.Content/")
        {
            path
        } else {
            "other"
        };
        let mut reqs = self.requests.lock();
        let h = reqs.entry((method.to_string(), code)).or_default();
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, store: &Store) -> String {
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                o,
                "# HELP strata_{name} {help}\n# TYPE strata_{name} counter\nstrata_{name} {v}"
            );
        };
        counter(
            "bytes_received_total",
            "Blob bytes received by pushes and writes that committed.",
            self.bytes_received.load(Relaxed),
        );
        counter(
            "bytes_stored_total",
            "Bytes those commits added to the data directory.",
            self.bytes_stored.load(Relaxed),
        );
        counter(
            "chunks_new_total",
            "Chunks stored for the first time.",
            self.chunks_new.load(Relaxed),
        );
        counter(
            "chunks_reused_total",
            "Chunk references served by chunks already stored.",
            self.chunks_reused.load(Relaxed),
        );
        counter(
            "chunks_followed_total",
            "Reused chunks found by following the recipe of a stored blob that began the same way, without chunking or index lookups.",
            self.chunks_followed.load(Relaxed),
        );
        counter(
            "blobs_committed_total",
            "Pushes and writes that committed a blob.",
            self.blobs_committed.load(Relaxed),
        );
        counter(
            "gc_runs_total",
            "Garbage collections run (on demand and in the background).",
            self.gc_runs.load(Relaxed),
        );
        counter(
            "gc_chunks_freed_total",
            "Chunks garbage collection dropped.",
            self.gc_chunks_freed.load(Relaxed),
        );
        counter(
            "gc_pack_bytes_freed_total",
            "Pack bytes garbage collection freed.",
            self.gc_pack_bytes_freed.load(Relaxed),
        );
        if let Some(r) = store.remote_metrics() {
            use std::sync::atomic::Ordering::Relaxed as R;
            for (name, help, v) in [
                (
                    "bucket_puts_total",
                    "Objects written to the bucket.",
                    r.puts.load(R),
                ),
                (
                    "bucket_put_bytes_total",
                    "Bytes written to the bucket.",
                    r.put_bytes.load(R),
                ),
                (
                    "bucket_gets_total",
                    "Object reads (whole or ranged) from the bucket.",
                    r.gets.load(R),
                ),
                (
                    "bucket_get_bytes_total",
                    "Bytes read from the bucket.",
                    r.get_bytes.load(R),
                ),
                (
                    "bucket_lists_total",
                    "Listings of the bucket.",
                    r.lists.load(R),
                ),
                (
                    "bucket_deletes_total",
                    "Objects deleted from the bucket.",
                    r.deletes.load(R),
                ),
                (
                    "bucket_errors_total",
                    "Bucket operations that failed after their retries.",
                    r.errors.load(R),
                ),
                (
                    "bucket_retries_total",
                    "Bucket requests retried after a failure.",
                    r.retries.load(R),
                ),
                (
                    "bucket_requests_total",
                    "Bucket operations (each with its retries).",
                    r.requests.load(R),
                ),
                (
                    "bucket_request_microseconds_total",
                    "Time spent in bucket requests, retries and backoff included.",
                    r.latency_us.load(R),
                ),
                (
                    "bucket_cache_hits_total",
                    "Block reads served by the bucket read cache.",
                    r.cache_hits.load(R),
                ),
                (
                    "bucket_cache_misses_total",
                    "Block reads that went to the bucket.",
                    r.cache_misses.load(R),
                ),
            ] {
                let _ = writeln!(
                    o,
                    "# HELP strata_{name} {help}\n# TYPE strata_{name} counter\nstrata_{name} {v}"
                );
            }
        }
        if let Ok(p) = store.pending_conversions() {
            let _ = writeln!(
                o,
                "# HELP strata_pending_conversions Blobs stored as received, waiting for their background conversion.\n# TYPE strata_pending_conversions gauge\nstrata_pending_conversions {}",
                p.len()
            );
        }
        if let Ok(c) = store.stats_counters() {
            let unique = c.chunk_plain_bytes + c.literal_bytes;
            let dedup = if unique == 0 {
                0.0
            } else {
                c.logical_stream_bytes as f64 / unique as f64
            };
            for (name, help, v) in [
                ("blobs", "Blobs held, over all namespaces.", c.blobs as f64),
                (
                    "logical_bytes",
                    "Sum of the sizes of the blobs held.",
                    c.logical_bytes as f64,
                ),
                (
                    "unique_plain_bytes",
                    "Plain bytes of distinct chunks plus recipe literals.",
                    unique as f64,
                ),
                (
                    "pack_bytes",
                    "Committed bytes in pack files.",
                    c.pack_bytes as f64,
                ),
                (
                    "rebuild_bytes",
                    "Bytes kept only to rebuild compressed blobs exactly.",
                    c.rebuild_bytes as f64,
                ),
                ("chunks", "Distinct chunks stored.", c.chunks as f64),
                (
                    "unreferenced_chunks",
                    "Chunks no blob references (garbage until collected).",
                    c.unreferenced_chunks as f64,
                ),
                (
                    "dedup_ratio",
                    "Logical bytes over unique plain bytes.",
                    dedup,
                ),
            ] {
                let _ = writeln!(
                    o,
                    "# HELP strata_{name} {help}\n# TYPE strata_{name} gauge\nstrata_{name} {v}"
                );
            }
        }
        let reqs = self.requests.lock().clone();
        let _ = writeln!(o, "# HELP strata_requests_total gRPC calls by method and status code.\n# TYPE strata_requests_total counter");
        for ((m, code), h) in &reqs {
            let _ = writeln!(
                o,
                "strata_requests_total{{method=\"{m}\",code=\"{code}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(o, "# HELP strata_request_duration_seconds Time to a call's response (its headers, for streams).\n# TYPE strata_request_duration_seconds histogram");
        let mut by_method: BTreeMap<&str, Histogram> = BTreeMap::new();
        for ((m, _), h) in &reqs {
            let t = by_method.entry(m).or_default();
            for i in 0..BUCKETS.len() {
                t.counts[i] += h.counts[i];
            }
            t.count += h.count;
            t.sum += h.sum;
        }
        for (m, h) in by_method {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "strata_request_duration_seconds_bucket{{method=\"{m}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "strata_request_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "strata_request_duration_seconds_sum{{method=\"{m}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                o,
                "strata_request_duration_seconds_count{{method=\"{m}\"}} {}",
                h.count
            );
        }
        o
    }
}

/// Serves `GET /metrics` on `addr` until the task is aborted.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: Store,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let (metrics, store) = (metrics.clone(), store.clone());
        tokio::spawn(async move {
            // One request per connection, head only (at most 8 KiB, 5 s).
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
                ("200 OK", metrics.render(&store))
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

/// A tower layer that counts every gRPC call and times it.
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let r = fut.await;
            // An error answered at once carries its status in the headers.
            let code = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                Err(_) => 2,
            };
            metrics.request(&path, code, start.elapsed());
            r
        })
    }
}
