//! `--registry-mirror-of URL`: a pull-through cache. A manifest or blob the
//! store does not hold is asked of each upstream in turn; the first that has
//! it gives it, it is stored through the same paths as a push (a manifest as
//! a manifest blob and, for a tag, an image record; a blob through a
//! resumable upload, so it is chunked, deduplicated and converted), and it is
//! served from the store from then on. An upstream 404 everywhere is a 404
//! here. Tags held locally are not revalidated. Upstreams are asked through a
//! `remote::Session`, as `strata import docker://` asks registries: the
//! credentials the daemon's auth files hold for the upstream's HOST:PORT
//! (`$REGISTRY_AUTH_FILE`, ...), Basic or Bearer tokens, the system's roots
//! and `/etc/containers/certs.d`, timeouts and retries with backoff.

use super::errors::{ApiError, ApiResult, Code};
use super::manifests;
use super::names::Reference;
use super::State;
use crate::digest::Digest;
use crate::error::Error;
use crate::remote::pull::ACCEPT;
use crate::remote::session::{scope, Options, Session};
use futures::StreamExt;
use std::sync::Arc;

/// One `--registry-mirror-of` upstream; its session is made at first use
/// (and again after a failure), so a daemon starts whatever the upstream's state.
pub(crate) struct Upstream {
    pub url: String,
    session: tokio::sync::OnceCell<Arc<Session>>,
}

impl Upstream {
    pub fn new(url: &str) -> Upstream {
        Upstream {
            url: url.trim_end_matches('/').to_string(),
            session: Default::default(),
        }
    }

    async fn session(&self) -> ApiResult<&Arc<Session>> {
        self.session
            .get_or_try_init(|| async {
                Session::connect_url(&self.url, &Options::default())
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|e| upstream_err(&self.url, format!("{e:#}")))
    }
}

fn upstream_err(u: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::Unknown, format!("upstream {u}: {e}"))
        .with_status(axum::http::StatusCode::BAD_GATEWAY)
}

/// Fetches and stores a manifest; false when no upstream has it.
pub(super) async fn fetch_manifest(
    state: &Arc<State>,
    name: &str,
    reference: &Reference,
) -> ApiResult<bool> {
    let r = match reference {
        Reference::Tag(t) => t.clone(),
        Reference::Digest(d) => d.to_string(),
    };
    for up in &state.upstreams {
        let u = &up.url;
        let s = up.session().await?;
        let url = s.url(&format!("/v2/{name}/manifests/{r}"));
        let resp = s
            .send(&[scope(name, false)], false, |c| {
                c.get(&url).header("Accept", ACCEPT)
            })
            .await
            .map_err(|e| upstream_err(u, format!("{e:#}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        if !resp.status().is_success() {
            return Err(upstream_err(u, format!("{url}: {}", resp.status())));
        }
        let ct = resp
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let max = state.opts.max_manifest_bytes;
        if resp.content_length().is_some_and(|n| n as usize > max) {
            return Err(upstream_err(
                u,
                "manifest larger than --registry-max-manifest",
            ));
        }
        // Bounded as it arrives: an upstream that sends no length is cut off too.
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(c) = stream.next().await {
            body.extend_from_slice(&c.map_err(|e| upstream_err(u, e))?);
            if body.len() > max {
                return Err(upstream_err(
                    u,
                    "manifest larger than --registry-max-manifest",
                ));
            }
        }
        let body = bytes::Bytes::from(body);
        if body.len() > max {
            return Err(upstream_err(
                u,
                "manifest larger than --registry-max-manifest",
            ));
        }
        let d = Digest::of(&body);
        if let Reference::Digest(want) = reference {
            if *want != d {
                return Err(upstream_err(u, format!("gave {d} for {want}")));
            }
        }
        let p = manifests::parse_manifest(&body, ct.as_deref())?;
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        let _g = state.manifest_lock.lock().await;
        let (s, ns, n) = (
            state.store.clone(),
            state.opts.namespace.clone(),
            name.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            manifests::store_manifest(&s, &ns, &n, tag.as_deref(), d, body.to_vec(), &p)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        tracing::info!(upstream = %u, %name, reference = %r, digest = %d, "mirrored a manifest");
        return Ok(true);
    }
    Ok(false)
}

/// Starts fetching a blob the store does not hold from the first upstream
/// that has it, through a resumable upload of its own (as a push: the digest
/// is computed here and a mismatch stores nothing). Its bytes are also
/// offered to a client (`Fetch::Started::body`) *while* they are stored: the
/// last piece is held back until the store has committed the blob under its
/// digest, so a blob that does not match ends that body with an error, and
/// no client gets a complete body with the wrong digest. A client that goes
/// away (or stalls past the body timeout) does not stop the fetch.
pub(super) async fn start_fetch(state: &Arc<State>, name: &str, d: &Digest) -> ApiResult<Fetch> {
    let (store, ns, reference) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        format!("registry-mirror/{d}"),
    );
    let (s2, ns2, r2) = (store.clone(), ns.clone(), reference.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let mut up = s2.open_upload(&ns2, &r2, 0)?;
        up.truncate()?;
        Ok::<_, Error>(up)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    let upload = match opened {
        Ok(u) => u,
        Err(Error::Unavailable(_)) => return Ok(Fetch::Busy),
        Err(e) => return Err(e.into()),
    };
    let abort = |store: crate::store::Store, ns: String, reference: String| async move {
        let _ = tokio::task::spawn_blocking(move || store.abort_upload(&ns, &reference)).await;
    };
    for up in &state.upstreams {
        let u = up.url.clone();
        let got = async {
            let s = up.session().await?;
            let url = s.url(&format!("/v2/{name}/blobs/{d}"));
            s.send(&[scope(name, false)], true, |c| c.get(&url))
                .await
                .map_err(|e| upstream_err(&u, format!("{e:#}")))
        }
        .await;
        let resp = match got {
            Ok(r) => r,
            Err(e) => {
                drop(upload);
                abort(store, ns, reference).await;
                return Err(e);
            }
        };
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        if !resp.status().is_success() {
            drop(upload);
            abort(store, ns, reference).await;
            return Err(upstream_err(&u, format!("blob {d}: {}", resp.status())));
        }
        let len = resp.content_length();
        let (to_store, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let want = *d;
        let (s3, ns3, r3) = (store.clone(), ns.clone(), reference.clone());
        let mut upload = upload;
        let worker = tokio::task::spawn_blocking(move || -> crate::error::Result<()> {
            while let Some(b) = rx.blocking_recv() {
                upload.append(b)?;
            }
            match upload.commit(0, Some(want), Default::default()) {
                Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
                Err(e) => {
                    drop(upload);
                    let _ = s3.abort_upload(&ns3, &r3);
                    Err(e)
                }
            }
        });
        let (to_client, client_rx) =
            tokio::sync::mpsc::channel::<std::result::Result<bytes::Bytes, std::io::Error>>(8);
        let name = name.to_string();
        let patience = state.opts.body_timeout;
        let done = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut client = Some(to_client);
            let mut held: Option<bytes::Bytes> = None;
            let mut failed = None;
            while let Some(b) = body.next().await {
                let b = match b {
                    Ok(b) => b,
                    Err(e) => {
                        failed = Some(format!("upstream {u}: {e}"));
                        break;
                    }
                };
                if to_store.send(b.clone()).await.is_err() {
                    break; // the store refused: the worker says why
                }
                if let Some(prev) = held.replace(b) {
                    if let Some(c) = &client {
                        // A client gone, or stalled past the body timeout, is
                        // left behind: the blob is stored all the same.
                        match tokio::time::timeout(patience, c.send(Ok(prev))).await {
                            Ok(Ok(())) => {}
                            _ => client = None,
                        }
                    }
                }
            }
            drop(to_store);
            let stored = worker
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match (failed, stored) {
                (None, Ok(())) => {
                    if let (Some(c), Some(last)) = (&client, held) {
                        let _ = c.send(Ok(last)).await;
                    }
                    tracing::info!(upstream = %u, %name, digest = %want, "mirrored a blob");
                    Ok(())
                }
                (f, r) => {
                    let why = f.or(r.err()).unwrap_or_default();
                    tracing::warn!(upstream = %u, %name, digest = %want, error = %why, "a mirrored blob was not stored");
                    if let Some(c) = &client {
                        let _ = c.send(Err(std::io::Error::other(why.clone()))).await;
                    }
                    Err(why)
                }
            }
        });
        return Ok(Fetch::Started {
            len,
            body: client_rx,
            done,
        });
    }
    drop(upload);
    abort(store, ns, reference).await;
    Ok(Fetch::Missing)
}

type Pieces = tokio::sync::mpsc::Receiver<std::result::Result<bytes::Bytes, std::io::Error>>;

pub(super) enum Fetch {
    Started {
        /// What the upstream announced.
        len: Option<u64>,
        /// The bytes as they are stored (see [`start_fetch`]).
        body: Pieces,
        /// Ends once the blob is stored, or with why it was not.
        done: tokio::task::JoinHandle<std::result::Result<(), String>>,
    },
    /// No upstream has it.
    Missing,
    /// Another request is fetching it: wait for that one ([`wait_for_fetch`]).
    Busy,
}

/// The response that streams a fetch's `body` to a client.
pub(super) fn streamed(d: &Digest, len: Option<u64>, body: Pieces) -> axum::response::Response {
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Docker-Content-Digest", d.to_string()),
    ];
    if let Some(n) = len {
        headers.push(("Content-Length", n.to_string()));
    }
    let mut r = super::routes::empty(axum::http::StatusCode::OK, &headers);
    *r.body_mut() =
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body));
    r
}

/// Waits for what [`start_fetch`] began: true once the blob is stored,
/// false when no upstream has it.
pub(super) async fn settle(state: &Arc<State>, d: &Digest, f: Fetch) -> ApiResult<bool> {
    match f {
        Fetch::Missing => Ok(false),
        Fetch::Busy => wait_for_fetch(state, d).await,
        Fetch::Started { body, done, .. } => {
            drop(body); // nobody reads along: the fetch only stores
            done.await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|why| {
                    ApiError::new(Code::Unknown, why)
                        .with_status(axum::http::StatusCode::BAD_GATEWAY)
                })?;
            Ok(true)
        }
    }
}

/// Waits for another request's fetch of `d` to be stored: true once it is,
/// false when that fetch ended without it. Waits as long as its upload
/// grows (a large layer may take minutes), giving up only after
/// `--registry-body-timeout` without progress.
pub(super) async fn wait_for_fetch(state: &Arc<State>, d: &Digest) -> ApiResult<bool> {
    let (ns, reference) = (state.opts.namespace.clone(), format!("registry-mirror/{d}"));
    let mut last = None;
    let mut since = tokio::time::Instant::now();
    loop {
        if super::blobs::stat(&state.store, &ns, d).await?.is_some() {
            return Ok(true);
        }
        let (s, n, r) = (state.store.clone(), ns.clone(), reference.clone());
        let offset = tokio::task::spawn_blocking(move || s.upload_status(&n, &r).map(|u| u.offset))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        match offset {
            Err(Error::NotFound(_)) => {
                // Committed just now, or given up: one last look.
                return Ok(super::blobs::stat(&state.store, &ns, d).await?.is_some());
            }
            Err(e) => return Err(e.into()),
            Ok(o) if Some(o) != last => {
                last = Some(o);
                since = tokio::time::Instant::now();
            }
            Ok(_) if since.elapsed() > state.opts.body_timeout => return Ok(false),
            Ok(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
