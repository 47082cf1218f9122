//! Reading images from a registry: the manifest a reference names (an index
//! resolved to the wanted platform as for files), and every blob streamed,
//! checked against its digest and size as it arrives, resumed with a
//! `Range` request where a connection breaks part way.

use super::reference::Reference;
use super::session::{chain, is_reset, scope, Options, Session};
use crate::digest::Digest;
use crate::image::spec::{self, Descriptor};
use crate::image::{
    self, BlobRef, BlobSource, Format, ManifestSource, Opened, Platform, StreamReader,
    VerifyingReader,
};
use anyhow::{anyhow, bail};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{header, StatusCode};
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// Every manifest media type a pull accepts (schema 1 is refused).
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or index read (the spec suggests registries accept 4 MiB).
const MAX_MANIFEST: u64 = 8 << 20;

fn is_manifest(media_type: &str) -> bool {
    matches!(
        media_type,
        spec::OCI_INDEX | spec::OCI_MANIFEST | spec::DOCKER_LIST | spec::DOCKER_MANIFEST
    ) || media_type.contains("manifest")
}

/// One repository's blobs, as an `image::BlobSource`.
pub struct RegistrySource {
    session: Arc<Session>,
    repository: String,
    rt: tokio::runtime::Handle,
    /// Manifests and configs already read whole.
    cache: Mutex<HashMap<String, Bytes>>,
}

impl RegistrySource {
    fn scopes(&self) -> Vec<String> {
        vec![scope(&self.repository, false)]
    }
}

impl ManifestSource for RegistrySource {
    fn has(&self, _digest: &str) -> bool {
        true // the GET finds out, with the registry's own message
    }
}

impl BlobSource for RegistrySource {
    fn open(&self, blob: &BlobRef) -> io::Result<Box<dyn Read + Send>> {
        if let Some(b) = self.cache.lock().expect("cache").get(&blob.digest) {
            let r = io::Cursor::new(b.clone());
            return Ok(Box::new(VerifyingReader::new(r, &blob.digest, blob.size)));
        }
        let r = self.stream(blob);
        // Manifests and configs are read to resolve an image and again to
        // store or analyze it: kept (they are small), so each is fetched once.
        if !blob.media_type.contains("layer") && blob.size <= MAX_MANIFEST {
            let mut buf = Vec::with_capacity(blob.size as usize);
            let mut r = r;
            r.read_to_end(&mut buf)?;
            let b = Bytes::from(buf);
            self.cache
                .lock()
                .expect("cache")
                .insert(blob.digest.clone(), b.clone());
            return Ok(Box::new(io::Cursor::new(b)));
        }
        Ok(r)
    }
}

impl RegistrySource {
    /// The blob's bytes as they arrive, verified at the end.
    fn stream(&self, blob: &BlobRef) -> Box<dyn Read + Send> {
        let kind = if is_manifest(&blob.media_type) {
            "manifests"
        } else {
            "blobs"
        };
        let url = self
            .session
            .url(&format!("/v2/{}/{kind}/{}", self.repository, blob.digest));
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
        let (session, scopes, b) = (self.session.clone(), self.scopes(), blob.clone());
        self.rt.spawn(async move {
            if let Err(e) = stream_blob(&session, &scopes, &url, &b, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::new(VerifyingReader::new(
            StreamReader::new(rx),
            &blob.digest,
            blob.size,
        ))
    }
}

fn io_err(kind: io::ErrorKind, m: String) -> io::Error {
    io::Error::new(kind, m)
}

/// Sends the blob's bytes to `tx`; a connection broken part way is resumed
/// from where it broke (`Range`), as often as the session retries.
async fn stream_blob(
    session: &Session,
    scopes: &[String],
    url: &str,
    b: &BlobRef,
    tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let mut sent = 0u64;
    let mut breaks = 0u32;
    loop {
        let resp = session
            .send(scopes, true, |c| {
                let r = c.get(url).header(header::ACCEPT, ACCEPT);
                if sent > 0 {
                    r.header(header::RANGE, format!("bytes={sent}-"))
                } else {
                    r
                }
            })
            .await
            .map_err(|e| io_err(io::ErrorKind::Other, format!("blob {}: {e:#}", b.digest)))?;
        let st = resp.status();
        if st == StatusCode::NOT_FOUND {
            return Err(io_err(
                io::ErrorKind::NotFound,
                format!("blob {}: the registry does not have it (404)", b.digest),
            ));
        }
        if !st.is_success() {
            return Err(io_err(
                io::ErrorKind::Other,
                format!("blob {}: GET answered {st}", b.digest),
            ));
        }
        // Resumed: a 206 starts where asked; a 200 starts over, skip what was sent.
        let partial = sent > 0 && st == StatusCode::PARTIAL_CONTENT;
        if partial {
            // `bytes FROM-TO/SIZE`: it must start where the download broke.
            let from = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if from != Some(sent) {
                return Err(io_err(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {}: asked to resume at byte {sent}, the registry answered range {from:?}",
                        b.digest
                    ),
                ));
            }
        }
        let mut skip = if partial { 0 } else { sent };
        let expect = if partial { b.size - sent } else { b.size };
        if let Some(n) = resp.content_length().filter(|&n| n > expect) {
            return Err(io_err(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {}: the registry announces {n} bytes, its descriptor says {}",
                    b.digest, b.size
                ),
            ));
        }
        let mut body = resp.bytes_stream();
        let mut broke = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(mut chunk) => {
                    if skip > 0 {
                        let k = skip.min(chunk.len() as u64) as usize;
                        chunk = chunk.slice(k..);
                        skip -= k as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    sent += chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Ok(()); // the reader went away
                    }
                }
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
        }
        match broke {
            None => return Ok(()),
            Some(e) if (is_reset(&e) || e.is_timeout()) && breaks < 4 && sent < b.size => {
                breaks += 1;
                tracing::info!(digest = %b.digest, sent, error = %chain(&e), "resuming a broken blob download");
            }
            Some(e) => {
                return Err(io_err(
                    io::ErrorKind::Other,
                    format!(
                        "blob {}: the download broke after {sent} bytes: {}",
                        b.digest,
                        chain(&e)
                    ),
                ))
            }
        }
    }
}

/// A session per registry, shared by every image read from it.
#[derive(Default)]
pub struct Sessions {
    by_registry: tokio::sync::Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    pub async fn get(&self, r: &Reference, opts: &Options) -> anyhow::Result<Arc<Session>> {
        let mut m = self.by_registry.lock().await;
        if let Some(s) = m.get(&r.registry) {
            return Ok(s.clone());
        }
        let s = Arc::new(Session::connect(r, opts).await?);
        m.insert(r.registry.clone(), s.clone());
        Ok(s)
    }
}

/// The images `r` names: the one for `platform`, or one per platform with
/// `all`. Each is named by the full reference (`docker.io/library/x:1`).
pub async fn open(
    r: &Reference,
    platform: &Platform,
    all: bool,
    opts: &Options,
    sessions: &Sessions,
) -> anyhow::Result<(Opened, Arc<RegistrySource>)> {
    let session = sessions.get(r, opts).await?;
    let scopes = vec![scope(&r.repository, false)];
    let url = session.url(&format!("/v2/{}/manifests/{}", r.repository, r.reference()));
    let resp = session
        .send(&scopes, false, |c| {
            c.get(&url).header(header::ACCEPT, ACCEPT)
        })
        .await?;
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => bail!(
            "manifest unknown: the registry has no {} (404)",
            r.reference()
        ),
        StatusCode::FORBIDDEN => bail!(
            "access denied (403): the credentials may not pull {}",
            r.repository
        ),
        st => bail!("GET the manifest: {st}"),
    }
    let media_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        bail!("a docker schema 1 manifest ({media_type}), which strata does not support (push the image again with a current client)");
    }
    if resp.content_length().is_some_and(|n| n > MAX_MANIFEST) {
        bail!("the manifest is larger than {MAX_MANIFEST} bytes");
    }
    let mut bytes = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(c) = body.next().await {
        let c = c.map_err(|e| anyhow!("reading the manifest: {}", chain(&e)))?;
        bytes.extend_from_slice(&c);
        if bytes.len() as u64 > MAX_MANIFEST {
            bail!("the manifest is larger than {MAX_MANIFEST} bytes");
        }
    }
    // Computed, never taken from Docker-Content-Digest.
    let digest = Digest::of(&bytes);
    if let Some(want) = &r.digest {
        if *want != digest {
            bail!("the registry gave a manifest hashing to {digest}, not the {want} asked for");
        }
    }
    let root = Descriptor {
        media_type: media_type.clone(),
        digest: digest.to_string(),
        size: bytes.len() as u64,
        ..Default::default()
    };
    let source = Arc::new(RegistrySource {
        session,
        repository: r.repository.clone(),
        rt: tokio::runtime::Handle::current(),
        cache: Mutex::new(HashMap::from([(digest.to_string(), Bytes::from(bytes))])),
    });
    let (src, p, name, loc) = (
        source.clone(),
        platform.clone(),
        r.to_string(),
        format!("docker://{r}"),
    );
    // The resolver reads synchronously (blocking on the runtime for each
    // manifest and config): off the runtime's threads.
    let images = tokio::task::spawn_blocking(move || {
        image::resolve_root(src.as_ref(), &root, &name, &p, all, &loc)
    })
    .await??;
    Ok((
        Opened {
            images,
            source: source.clone(),
            format: Format::Registry,
        },
        source,
    ))
}
