//! Blob GET (whole or one `Range`), HEAD and DELETE. Bytes come from the
//! store's read path (`Store::read_range`) on the blocking pool and are
//! streamed as they are rebuilt: a converted gzip layer is re-encoded while
//! the client reads it, never assembled in memory first.

use super::errors::{ApiError, ApiResult, Code};
use super::names::parse_digest;
use super::rebuilt::RebuiltCache;
use super::routes::empty;
use super::State;
use crate::digest::Digest;
use crate::store::{BlobInfo, Store};
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use std::sync::Arc;

/// Pieces of at most this many bytes go to the client.
const PIECE: usize = 256 << 10;

pub(super) async fn stat(store: &Store, ns: &str, d: &Digest) -> ApiResult<Option<BlobInfo>> {
    let (s, ns, d) = (store.clone(), ns.to_string(), *d);
    match tokio::task::spawn_blocking(move || s.stat(&ns, &d))
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?
    {
        Ok(i) => Ok(Some(i)),
        Err(crate::error::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The bytes `[from, to)` of a blob as a streamed body. A compressed blob
/// is read from the rebuilt-blob cache when it is there, and a whole read of
/// one fills the cache as it goes.
pub(super) fn stream(
    store: &Store,
    cache: Option<Arc<RebuiltCache>>,
    info: BlobInfo,
    from: u64,
    to: u64,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let rebuilt = info.content.wrap.is_some();
        let cache = cache.filter(|_| rebuilt);
        if let Some(f) = cache.as_ref().and_then(|c| c.get(&info.digest)) {
            return send_file(f, from, to, &tx);
        }
        let mut fill = cache
            .as_ref()
            .filter(|_| from == 0 && to == info.content.size)
            .and_then(|c| c.writer(&info.digest, info.content.size));
        let mut buf = Vec::with_capacity(PIECE);
        let r = store.read_range(&info.digest, &info.content, from, to - from, &mut |b| {
            if let Some(w) = &mut fill {
                w.write(b);
            }
            let mut b = b;
            while !b.is_empty() {
                let n = (PIECE - buf.len()).min(b.len());
                buf.extend_from_slice(&b[..n]);
                b = &b[n..];
                if buf.len() == PIECE {
                    let piece = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(PIECE)));
                    if tx.blocking_send(Ok(piece)).is_err() {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        });
        match r {
            Ok(()) => {
                if !buf.is_empty() {
                    let _ = tx.blocking_send(Ok(Bytes::from(buf)));
                }
                drop(tx); // the client has it all: the cache's fsync is not its wait
                if let Some(w) = fill {
                    w.finish();
                }
            }
            Err(e) => {
                tracing::error!(digest = %info.digest, error = %e, "registry blob read failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// `[from, to)` of a cached file, in pieces.
fn send_file(
    mut f: std::fs::File,
    from: u64,
    to: u64,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    use std::io::{Read, Seek, SeekFrom};
    if let Err(e) = f.seek(SeekFrom::Start(from)) {
        let _ = tx.blocking_send(Err(e));
        return;
    }
    let mut left = to - from;
    while left > 0 {
        let mut buf = vec![0u8; PIECE.min(left as usize)];
        match f.read_exact(&mut buf) {
            Ok(()) => {
                left -= buf.len() as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → `[from, to)`; None: not satisfiable.
fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size));
    }
    let from: u64 = a.parse().ok()?;
    let to = if b.is_empty() {
        size
    } else {
        b.parse::<u64>().ok()?.saturating_add(1).min(size)
    };
    (from < to).then_some((from, to))
}

pub(super) async fn get(
    state: &Arc<State>,
    name: &str,
    digest: &str,
    range: Option<&str>,
    head: bool,
) -> ApiResult<Response> {
    let d = parse_digest(digest)?;
    let ns = &state.opts.namespace;
    let mut info = stat(&state.store, ns, &d).await?;
    if info.is_none() && !state.opts.mirror_of.is_empty() {
        // A whole GET is served as it is fetched; HEAD and ranges wait for
        // the blob to be stored, then are answered from the store.
        use super::mirror::{settle, start_fetch, streamed, Fetch};
        match start_fetch(state, name, &d).await? {
            Fetch::Started { len, body, .. } if !head && range.is_none() => {
                return Ok(streamed(&d, len, body))
            }
            f => {
                if settle(state, &d, f).await? {
                    info = stat(&state.store, ns, &d).await?;
                }
            }
        }
    }
    let info =
        info.ok_or_else(|| ApiError::new(Code::BlobUnknown, format!("blob {d} is not stored")))?;
    let size = info.content.size;
    let (status, from, to) = match range {
        Some(r) => match parse_range(r, size) {
            Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
            None => {
                return Err(ApiError::new(
                    Code::BlobUnknown,
                    format!("range {r:?} is outside blob {d} of {size} bytes"),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .with_header(header::CONTENT_RANGE, &format!("bytes */{size}")))
            }
        },
        None => (StatusCode::OK, 0, size),
    };
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Docker-Content-Digest", d.to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        ("Content-Length", (to - from).to_string()),
    ];
    if status == StatusCode::PARTIAL_CONTENT {
        headers.push(("Content-Range", format!("bytes {from}-{}/{size}", to - 1)));
    }
    let mut r = empty(status, &headers);
    if !head && to > from {
        *r.body_mut() = stream(&state.store, state.rebuilt.clone(), info, from, to);
        r.headers_mut().insert(
            header::CONTENT_LENGTH,
            HeaderValue::from_str(&(to - from).to_string()).expect("a number"),
        );
    }
    Ok(r)
}

/// Removes a blob from the registry's namespace (every repository: blobs
/// are shared by digest). Its chunks are freed by the next GC once no other
/// namespace holds the content.
pub(super) async fn delete(state: &Arc<State>, _name: &str, digest: &str) -> ApiResult<Response> {
    let d = parse_digest(digest)?;
    let (s, ns) = (state.store.clone(), state.opts.namespace.clone());
    tokio::task::spawn_blocking(move || s.delete(&ns, &d))
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?
        .map_err(|e| ApiError::store(e, Code::BlobUnknown))?;
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
