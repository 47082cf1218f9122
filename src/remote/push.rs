//! Writing a held image to a registry: each blob is checked first (HEAD),
//! mounted from the repository it was imported from when that is on the
//! same registry, else uploaded — in one PUT when small, in PATCH chunks
//! when large — and the manifest goes last, its exact stored bytes, so every
//! digest is unchanged and the tag appears only once its blobs are there.

use super::reference::Reference;
use super::session::{scope, Session};
use crate::image::{record, BlobRef, BlobSource, Image};
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use reqwest::{header, StatusCode, Url};
use std::io::Read;
use std::sync::Arc;

/// Blobs up to this size go in one PUT; larger ones in PATCH chunks of it.
pub const CHUNK: usize = 16 << 20;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PushStats {
    pub uploaded: u64,
    pub mounted: u64,
    pub already_there: u64,
    pub bytes_uploaded: u64,
    pub manifest: String,
}

/// Reads up to `n` bytes of `r` off the runtime (the store's readers block).
async fn read_piece(
    r: Box<dyn Read + Send>,
    n: usize,
) -> anyhow::Result<(Box<dyn Read + Send>, Bytes)> {
    tokio::task::spawn_blocking(move || {
        let mut r = r;
        let mut buf = Vec::with_capacity(n);
        (&mut r).take(n as u64).read_to_end(&mut buf)?;
        Ok::<_, std::io::Error>((r, Bytes::from(buf)))
    })
    .await?
    .map_err(Into::into)
}

struct Target<'a> {
    s: &'a Session,
    repo: &'a str,
    scopes: Vec<String>,
}

impl Target<'_> {
    /// A registry's Location: absolute, or a path on the registry.
    fn resolve(&self, loc: &str) -> anyhow::Result<Url> {
        let base = Url::parse(&self.s.url("/")).context("registry URL")?;
        let u = base
            .join(loc)
            .with_context(|| format!("the registry's upload Location {loc:?}"))?;
        // Credentials go with every upload request: never over plain HTTP
        // when the registry itself was reached over TLS.
        if base.scheme() == "https" && u.scheme() != "https" {
            anyhow::bail!("the registry's upload Location {loc:?} leaves HTTPS");
        }
        Ok(u)
    }

    fn location(&self, resp: &reqwest::Response) -> anyhow::Result<Url> {
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("the registry answered {} without a Location", resp.status()))?;
        self.resolve(loc)
    }

    async fn exists(&self, b: &BlobRef) -> anyhow::Result<bool> {
        let url = self.s.url(&format!("/v2/{}/blobs/{}", self.repo, b.digest));
        let r = self.s.send(&self.scopes, false, |c| c.head(&url)).await?;
        Ok(r.status().is_success())
    }

    /// Starts an upload; with `mount`, asks for the blob from `from` first.
    /// Ok(None) when the mount was done.
    async fn start(&self, mount: Option<(&BlobRef, &str)>) -> anyhow::Result<Option<Url>> {
        let mut url = Url::parse(&self.s.url(&format!("/v2/{}/blobs/uploads/", self.repo)))?;
        if let Some((b, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &b.digest)
                .append_pair("from", from);
        }
        let r = self
            .s
            .send(&self.scopes, false, |c| {
                c.post(url.clone()).header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        match r.status() {
            StatusCode::CREATED if mount.is_some() => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(self.location(&r)?)),
            st => bail!("starting an upload: {st}{}", body_line(r).await),
        }
    }

    /// Uploads `b`'s bytes from `reader` to the session at `at`.
    async fn upload(
        &self,
        b: &BlobRef,
        mut reader: Box<dyn Read + Send>,
        mut at: Url,
    ) -> anyhow::Result<()> {
        let mut offset = 0u64;
        let mut last = Bytes::new();
        // Small blobs: the bytes go with the closing PUT.
        if b.size as usize > CHUNK {
            while offset < b.size {
                let (r, piece) = read_piece(reader, CHUNK).await?;
                reader = r;
                if piece.is_empty() {
                    bail!("the store gave {offset} bytes, the blob has {}", b.size);
                }
                let end = offset + piece.len() as u64 - 1;
                let u = at.clone();
                let resp = self
                    .s
                    .send(&self.scopes, true, |c| {
                        c.patch(u.clone())
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
                            .body(piece.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    bail!(
                        "PATCH {offset}-{end}: {}{}",
                        resp.status(),
                        body_line(resp).await
                    );
                }
                at = self.location(&resp)?;
                offset = end + 1;
            }
        } else {
            let (r, piece) = read_piece(reader, CHUNK).await?;
            reader = r;
            last = piece;
        }
        // The store's reader checks size and digest at its end: drain it.
        let (_, rest) = read_piece(reader, 1).await?;
        if !rest.is_empty() {
            bail!("the store gave more than the blob's {} bytes", b.size);
        }
        at.query_pairs_mut().append_pair("digest", &b.digest);
        let resp = self
            .s
            .send(&self.scopes, true, |c| {
                c.put(at.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(last.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            bail!(
                "closing the upload: {}{}",
                resp.status(),
                body_line(resp).await
            );
        }
        Ok(())
    }
}

/// The registry's error body, on one line, for messages.
async fn body_line(r: reqwest::Response) -> String {
    match r.text().await {
        Ok(t) if !t.trim().is_empty() => {
            let t: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
            format!(": {}", t.chars().take(300).collect::<String>())
        }
        _ => String::new(),
    }
}

/// Where `img` came from, when it was imported from `dest`'s registry.
fn mount_from(img: &Image, dest: &Reference) -> Option<String> {
    let name = img.name.split('#').next()?;
    let src = Reference::parse(name).ok()?;
    (src.registry == dest.registry && src.repository != dest.repository).then_some(src.repository)
}

/// Pushes `img` (its blobs read from `source`, the store) to `dest`, tagged
/// with `dest`'s tag (or by digest). `progress` is told the bytes sent.
pub async fn push_image(
    img: &Image,
    source: Arc<dyn BlobSource>,
    session: &Session,
    dest: &Reference,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> anyhow::Result<PushStats> {
    let manifest = img.manifest.clone().ok_or_else(|| {
        anyhow!("image {} has no manifest (imported from a legacy docker-archive or a layer file): nothing a registry can serve", img.name)
    })?;
    let from = mount_from(img, dest);
    let mut scopes = vec![scope(&dest.repository, true)];
    if let Some(f) = &from {
        scopes.push(scope(f, false));
    }
    let t = Target {
        s: session,
        repo: &dest.repository,
        scopes,
    };
    let mut stats = PushStats::default();
    let blobs: Vec<BlobRef> = record::blobs(img)
        .into_iter()
        .filter(|b| b.digest != manifest.digest)
        .collect();
    for b in &blobs {
        if t.exists(b)
            .await
            .with_context(|| format!("blob {}", b.digest))?
        {
            stats.already_there += 1;
            progress(b.size);
            continue;
        }
        let at = match t
            .start(from.as_deref().map(|f| (b, f)))
            .await
            .with_context(|| format!("blob {}", b.digest))?
        {
            None => {
                stats.mounted += 1;
                progress(b.size);
                continue;
            }
            Some(at) => at,
        };
        let (src, blob) = (source.clone(), b.clone());
        let reader = tokio::task::spawn_blocking(move || src.open(&blob))
            .await?
            .with_context(|| format!("reading {} from the store", b.digest))?;
        t.upload(b, reader, at)
            .await
            .with_context(|| format!("uploading blob {}", b.digest))?;
        stats.uploaded += 1;
        stats.bytes_uploaded += b.size;
        progress(b.size);
    }
    // The manifest: its stored bytes, whole (bounded like any manifest).
    let (src, m) = (source.clone(), manifest.clone());
    let bytes = tokio::task::spawn_blocking(move || {
        crate::image::read_json_blob(src.as_ref(), &m, "manifest", "")
    })
    .await??;
    let url = t.s.url(&format!(
        "/v2/{}/manifests/{}",
        dest.repository,
        dest.reference()
    ));
    let body = Bytes::from(bytes);
    let resp =
        t.s.send(&t.scopes, false, |c| {
            c.put(&url)
                .header(header::CONTENT_TYPE, &manifest.media_type)
                .body(body.clone())
        })
        .await?;
    if resp.status() != StatusCode::CREATED {
        bail!(
            "PUT the manifest {}: {}{}",
            manifest.digest,
            resp.status(),
            body_line(resp).await
        );
    }
    stats.manifest = manifest.digest.clone();
    Ok(stats)
}
