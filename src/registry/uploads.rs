//! Blob uploads: POST (a session, a monolithic `?digest=` upload, or a
//! cross-repository mount), PATCH chunks, PUT to close, GET status, DELETE.
//!
//! A session is one of the store's resumable uploads (`Store::open_upload`,
//! ref `registry-upload/<id>` in the registry's namespace): its bytes go to
//! `ingest/<hash>.part` and feed a live ingest as they arrive, so closing it
//! commits a chunked, deduplicated blob without reading the bytes again. The
//! open `Upload` is kept between requests (the live ingest with it); a
//! session idle for `session_idle`, or any session after a daemon restart,
//! is reopened from its record and file. Nothing is visible as a blob before
//! the closing PUT's digest matches what strata computed.

use super::errors::{ApiError, ApiResult, Code};
use super::names::parse_digest;
use super::routes::{empty, param, query};
use super::{blobs, State};
use crate::digest::Digest;
use crate::error::Error;
use crate::store::uploads::Upload;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upload refs of the registry, in its namespace's `ingests`.
const REF_PREFIX: &str = "registry-upload/";

/// One open session; the `Option` is empty while a request streams into it.
pub(super) struct Slot {
    upload: Option<Upload>,
    used: Instant,
}

type Shared = Arc<tokio::sync::Mutex<Slot>>;

#[derive(Default)]
pub(crate) struct Sessions(parking_lot::Mutex<HashMap<String, Shared>>);

impl Sessions {
    pub(super) fn drain(&self) -> Vec<Shared> {
        self.0.lock().drain().map(|(_, v)| v).collect()
    }
    fn remove(&self, id: &str) {
        self.0.lock().remove(id);
    }
    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = ApiResult<T>> {
    let h = tokio::task::spawn_blocking(f);
    async move { h.await.map_err(|e| Error::Internal(e.to_string()).into()) }
}

fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source");
    hex::encode(b)
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, format!("no upload session {id:?}"))
}

/// `Range: 0-<last byte>` (the spec's form, not an HTTP byte range).
fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn accepted(name: &str, id: &str, offset: u64) -> Response {
    empty(
        StatusCode::ACCEPTED,
        &[
            ("Location", location(name, id)),
            ("Range", range_header(offset)),
            ("Docker-Upload-UUID", id.to_string()),
            ("Content-Length", "0".into()),
        ],
    )
}

fn created(name: &str, d: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{d}")),
            ("Docker-Content-Digest", d.to_string()),
            ("Content-Length", "0".into()),
        ],
    )
}

/// Opens a session's upload in the store (creating it when `create`).
async fn open(state: &Arc<State>, id: &str, create: bool) -> ApiResult<Shared> {
    if let Some(s) = state.sessions.0.lock().get(id) {
        return Ok(s.clone());
    }
    if !create && !valid_id(id) {
        return Err(unknown(id));
    }
    let (store, ns, reference) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        format!("{REF_PREFIX}{id}"),
    );
    let up = blocking(move || {
        if !create {
            store.upload_status(&ns, &reference)?;
        }
        store.open_upload(&ns, &reference, 0)
    })
    .await?
    .map_err(|e| match e {
        Error::NotFound(_) => unknown(id),
        Error::Unavailable(_) => ApiError::new(
            Code::BlobUploadInvalid,
            format!("upload {id} is being written by another request"),
        )
        .with_status(StatusCode::CONFLICT),
        e => e.into(),
    })?;
    let slot = Arc::new(tokio::sync::Mutex::new(Slot {
        upload: Some(up),
        used: Instant::now(),
    }));
    // A racing request may have opened it first: keep that one (ours is dropped).
    let mut map = state.sessions.0.lock();
    Ok(map.entry(id.to_string()).or_insert(slot).clone())
}

pub(super) async fn start(state: &Arc<State>, name: &str, req: Request) -> ApiResult<Response> {
    let q = query(&req);
    if let (Some(m), Some(_from)) = (param(&q, "mount"), param(&q, "from")) {
        // Blobs are shared by every repository of the namespace: a mount is
        // a lookup. A blob not stored starts an ordinary session.
        let d = parse_digest(m)?;
        if blobs::stat(&state.store, &state.opts.namespace, &d)
            .await?
            .is_some()
        {
            return Ok(created(name, &d));
        }
    }
    if state.sessions.len() >= state.opts.max_uploads {
        return Err(ApiError::new(
            Code::TooManyRequests,
            format!(
                "{} uploads are open (--registry-max-uploads); retry later",
                state.opts.max_uploads
            ),
        )
        .with_header(header::RETRY_AFTER, "5"));
    }
    let digest = param(&q, "digest").map(parse_digest).transpose()?;
    let id = new_id();
    let slot = open(state, &id, true).await?;
    match digest {
        None => Ok(accepted(name, &id, 0)),
        Some(d) => {
            // Monolithic: the body is the whole blob.
            let mut guard = slot.lock_owned().await;
            if let Err(e) = write_body(state, &mut guard, &id, req.into_body()).await {
                // Nobody knows this session's URL: it ends with its request.
                let up = guard.upload.take();
                discard(state, &id, up).await;
                return Err(e);
            }
            close(state, name, &id, guard, d).await
        }
    }
}

pub(super) async fn status(state: &Arc<State>, name: &str, id: &str) -> ApiResult<Response> {
    let slot = open(state, id, false).await?;
    let mut g = slot.lock().await;
    g.used = Instant::now();
    let up = g.upload.as_ref().ok_or_else(|| unknown(id))?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        &[
            ("Location", location(name, id)),
            ("Range", range_header(up.offset())),
            ("Docker-Upload-UUID", id.to_string()),
        ],
    ))
}

/// `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`).
fn content_range(req: &Request) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(Code::BlobUploadInvalid, "malformed Content-Range")
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<u64>().map_err(|_| bad())?,
        b.trim().parse::<u64>().map_err(|_| bad())?,
    );
    if b < a {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A chunk must start where the upload stands, and say as much as it sends.
fn check_chunk(req: &Request, name: &str, id: &str, offset: u64) -> ApiResult<()> {
    if let Some((a, b)) = content_range(req)? {
        let not_next = || {
            ApiError::new(
                Code::BlobUploadInvalid,
                format!("chunk {a}-{b} does not start at the upload's offset {offset}"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(header::LOCATION, &location(name, id))
            .with_header(header::RANGE, &range_header(offset))
        };
        if a != offset {
            return Err(not_next());
        }
        if let Some(n) = content_length(req) {
            if n != b - a + 1 {
                return Err(ApiError::new(
                    Code::SizeInvalid,
                    format!("Content-Range {a}-{b} but Content-Length {n}"),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
            }
        }
    }
    Ok(())
}

pub(super) async fn patch(
    state: &Arc<State>,
    name: &str,
    id: &str,
    req: Request,
) -> ApiResult<Response> {
    let slot = open(state, id, false).await?;
    let mut g = slot.lock_owned().await;
    let offset = g.upload.as_ref().ok_or_else(|| unknown(id))?.offset();
    check_chunk(&req, name, id, offset)?;
    write_body(state, &mut g, id, req.into_body()).await?;
    let offset = g.upload.as_ref().map_or(0, |u| u.offset());
    Ok(accepted(name, id, offset))
}

pub(super) async fn put(
    state: &Arc<State>,
    name: &str,
    id: &str,
    req: Request,
) -> ApiResult<Response> {
    let q = query(&req);
    let d =
        parse_digest(param(&q, "digest").ok_or_else(|| {
            ApiError::new(Code::DigestInvalid, "closing an upload needs ?digest=")
        })?)?;
    let slot = open(state, id, false).await?;
    let mut g = slot.lock_owned().await;
    let offset = g.upload.as_ref().ok_or_else(|| unknown(id))?.offset();
    check_chunk(&req, name, id, offset)?;
    write_body(state, &mut g, id, req.into_body()).await?;
    close(state, name, id, g, d).await
}

/// Ends a session and removes its bytes.
async fn discard(state: &Arc<State>, id: &str, up: Option<Upload>) {
    state.sessions.remove(id);
    let (store, ns, reference) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        format!("{REF_PREFIX}{id}"),
    );
    let r = blocking(move || {
        drop(up);
        store.abort_upload(&ns, &reference)
    })
    .await;
    if let Ok(Err(e)) = r {
        tracing::warn!(id, error = %e, "removing a failed registry upload");
    }
}

pub(super) async fn cancel(state: &Arc<State>, _name: &str, id: &str) -> ApiResult<Response> {
    let slot = open(state, id, false).await?;
    let mut g = slot.lock_owned().await;
    let up = g.upload.take().ok_or_else(|| unknown(id))?;
    state.sessions.remove(id);
    let (store, ns, reference) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        format!("{REF_PREFIX}{id}"),
    );
    blocking(move || {
        drop(up);
        store.abort_upload(&ns, &reference)
    })
    .await?
    .map_err(|e| ApiError::store(e, Code::BlobUploadUnknown))?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

/// Streams a request body into the session's upload. A body that stops
/// sending for `body_timeout`, or breaks off, keeps what arrived whole (the
/// upload stays resumable from its offset) and answers an error.
async fn write_body(
    state: &Arc<State>,
    g: &mut tokio::sync::OwnedMutexGuard<Slot>,
    id: &str,
    body: Body,
) -> ApiResult<()> {
    g.used = Instant::now();
    let mut up = g.upload.take().ok_or_else(|| unknown(id))?;
    let mut size = up.offset();
    let max = state.opts.max_blob_bytes;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let worker = tokio::task::spawn_blocking(move || {
        let mut r = Ok(());
        while let Some(b) = rx.blocking_recv() {
            if let Err(e) = up.append(b) {
                r = Err(e);
                break;
            }
        }
        (up, r)
    });
    let mut stream = body.into_data_stream();
    let timeout = state.opts.body_timeout;
    let mut failed: Option<ApiError> = None;
    loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(b))) => {
                size += b.len() as u64;
                if max > 0 && size > max {
                    failed = Some(
                        ApiError::new(
                            Code::SizeInvalid,
                            format!("blobs are limited to {max} bytes (--max-blob-size)"),
                        )
                        .with_status(StatusCode::PAYLOAD_TOO_LARGE),
                    );
                    break;
                }
                if tx.send(b).await.is_err() {
                    break; // the writer failed: its error is below
                }
            }
            Ok(Some(Err(e))) => {
                failed = Some(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("the request body broke off: {e}"),
                ));
                break;
            }
            Err(_) => {
                failed = Some(
                    ApiError::new(
                        Code::BlobUploadInvalid,
                        format!("the request body sent nothing for {timeout:?}"),
                    )
                    .with_status(StatusCode::REQUEST_TIMEOUT),
                );
                break;
            }
        }
    }
    drop(tx);
    let (up, r) = worker
        .await
        .map_err(|e| Error::Internal(format!("upload writer: {e}")))?;
    g.upload = Some(up);
    g.used = Instant::now();
    r.map_err(|e| ApiError::store(e, Code::BlobUploadUnknown))?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Commits the session as a blob if its bytes hash to `d`. A mismatch
/// stores nothing and ends the session (DIGEST_INVALID).
async fn close(
    state: &Arc<State>,
    name: &str,
    id: &str,
    mut g: tokio::sync::OwnedMutexGuard<Slot>,
    d: Digest,
) -> ApiResult<Response> {
    let mut up = g.upload.take().ok_or_else(|| unknown(id))?;
    let (store, ns, reference) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        format!("{REF_PREFIX}{id}"),
    );
    let (up, r) = blocking(move || {
        let r = up.commit(0, Some(d), Default::default());
        match r {
            Ok(_) | Err(Error::AlreadyExists(_)) => (None, Ok(())),
            Err(Error::FailedPrecondition(m)) => {
                // The bytes are not the blob the client named: nothing stored,
                // and the session ends.
                drop(up);
                let _ = store.abort_upload(&ns, &reference);
                (None, Err(ApiError::new(Code::DigestInvalid, m)))
            }
            Err(e) => (Some(up), Err(ApiError::store(e, Code::BlobUploadUnknown))),
        }
    })
    .await?;
    match up {
        Some(up) => g.upload = Some(up),
        None => state.sessions.remove(id),
    }
    r?;
    Ok(created(name, &d))
}

/// Drops sessions idle for `session_idle` from memory: their upload record
/// and file stay (resumable, and expired by `--upload-expiry`).
pub(super) async fn close_idle(state: Arc<State>) {
    let idle = state.opts.session_idle;
    let mut tick = tokio::time::interval(Duration::from_secs(30).min(idle));
    loop {
        tick.tick().await;
        let old: Vec<Shared> = {
            let mut map = state.sessions.0.lock();
            let stale: Vec<String> = map
                .iter()
                .filter(|(_, s)| s.try_lock().is_ok_and(|g| g.used.elapsed() >= idle))
                .map(|(k, _)| k.clone())
                .collect();
            stale.iter().filter_map(|k| map.remove(k)).collect()
        };
        if !old.is_empty() {
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        }
    }
}
