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
        let body = resp.bytes().await.map_err(|e| upstream_err(u, e))?;
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

/// Fetches and stores a blob; false when no upstream has it.
pub(super) async fn fetch_blob(state: &Arc<State>, name: &str, d: &Digest) -> ApiResult<bool> {
    for up in &state.upstreams {
        let u = &up.url;
        let s = up.session().await?;
        let url = s.url(&format!("/v2/{name}/blobs/{d}"));
        let resp = s
            .send(&[scope(name, false)], true, |c| c.get(&url))
            .await
            .map_err(|e| upstream_err(u, format!("{e:#}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        if !resp.status().is_success() {
            return Err(upstream_err(u, format!("{url}: {}", resp.status())));
        }
        // Through a resumable upload of its own, as a push: the digest is
        // computed here and a mismatch stores nothing.
        let (store, ns, reference) = (
            state.store.clone(),
            state.opts.namespace.clone(),
            format!("registry-mirror/{d}"),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let want = *d;
        let worker = tokio::task::spawn_blocking(move || -> crate::error::Result<()> {
            let mut up = store.open_upload(&ns, &reference, 0)?;
            up.truncate()?;
            while let Some(b) = rx.blocking_recv() {
                up.append(b)?;
            }
            match up.commit(0, Some(want), Default::default()) {
                Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
                Err(e) => {
                    drop(up);
                    let _ = store.abort_upload(&ns, &reference);
                    Err(e)
                }
            }
        });
        let mut body = resp.bytes_stream();
        let mut failed = None;
        while let Some(b) = body.next().await {
            match b {
                Ok(b) => {
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(upstream_err(u, e));
                    break;
                }
            }
        }
        drop(tx);
        let r = worker.await.map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(Error::Unavailable(_)) = r {
            // Another request is fetching this blob: wait for its commit.
            let deadline = tokio::time::Instant::now() + state.opts.body_timeout;
            while tokio::time::Instant::now() < deadline {
                if super::blobs::stat(&state.store, &state.opts.namespace, d)
                    .await?
                    .is_some()
                {
                    return Ok(true);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        r.map_err(|e| upstream_err(u, e))?;
        tracing::info!(upstream = %u, %name, digest = %d, "mirrored a blob");
        return Ok(true);
    }
    Ok(false)
}
