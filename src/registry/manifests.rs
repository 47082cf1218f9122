//! Manifests, tags, the referrers API and the catalog.
//!
//! A manifest is a blob of the registry's namespace, labelled
//! `strata.registry.manifest`, `strata.registry.repo/<name>` for each
//! repository that holds it, and `strata.registry.subject=<digest>` when it
//! has a subject (the referrers API is a label-filtered list). A tag is an
//! image record named `<name>:<tag>` (`image::record`), as `strata import`
//! writes one.

use super::errors::{ApiError, ApiResult, Code};
use super::names::{parse_digest, parse_reference, valid_name, valid_tag, Reference};
use super::routes::{empty, param};
use super::{blobs, mirror, State};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{record, BlobRef, Image};
use crate::store::{BlobInfo, IngestOptions, Store};
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

pub const MANIFEST_LABEL: &str = "strata.registry.manifest";
pub const SUBJECT_LABEL: &str = "strata.registry.subject";
pub const REPO_LABEL_PREFIX: &str = "strata.registry.repo/";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn repo_label(name: &str) -> String {
    format!("{REPO_LABEL_PREFIX}{name}")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> ApiResult<Result<T>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()).into())
}

/// A small blob read whole (manifests, records).
pub fn read_all(store: &Store, info: &BlobInfo) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(info.content.size as usize);
    store.read_range(&info.digest, &info.content, 0, 0, &mut |b| {
        out.extend_from_slice(b);
        Ok(true)
    })?;
    Ok(out)
}

/// Image records of the namespace: (name, record blob, image).
fn records(store: &Store, ns: &str, name: Option<&str>) -> Result<Vec<(BlobInfo, Image)>> {
    let filter = match name {
        Some(n) => format!("{}={n}", record::NAME_LABEL),
        None => record::NAME_LABEL.to_string(),
    };
    let mut out = Vec::new();
    let mut blobs = store.list(ns, &[filter])?;
    blobs.retain(|b| b.meta.media_type == record::MEDIA_TYPE);
    blobs.sort_by_key(|b| (b.meta.updated_at, b.digest));
    for b in blobs {
        let img = record::decode(&read_all(store, &b)?)?;
        out.push((b, img));
    }
    Ok(out)
}

/// `name:tag` → (repository, tag), when both are valid.
fn split_image_name(n: &str) -> Option<(&str, &str)> {
    let (repo, tag) = n.rsplit_once(':')?;
    (valid_name(repo) && valid_tag(tag)).then_some((repo, tag))
}

fn manifest_digest(img: &Image) -> Option<Digest> {
    img.manifest
        .as_ref()
        .and_then(|m| Digest::parse(&m.digest).ok())
}

/// The manifest a tag or digest names in repository `name`, if it holds one.
fn resolve(store: &Store, ns: &str, name: &str, reference: &Reference) -> Result<Option<BlobInfo>> {
    let d = match reference {
        Reference::Tag(t) => {
            let recs = records(store, ns, Some(&format!("{name}:{t}")))?;
            match recs.last().and_then(|(_, img)| manifest_digest(img)) {
                Some(d) => d,
                None => return Ok(None),
            }
        }
        Reference::Digest(d) => *d,
    };
    let info = match store.stat(ns, &d) {
        Ok(i) => i,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if matches!(reference, Reference::Tag(_)) || info.meta.labels.contains_key(&repo_label(name)) {
        return Ok(Some(info));
    }
    // An imported image: its record, not a label, puts it in the repository.
    let held = records(store, ns, None)?.iter().any(|(_, img)| {
        split_image_name(&img.name).is_some_and(|(r, _)| r == name)
            && manifest_digest(img) == Some(d)
    });
    Ok(held.then_some(info))
}

fn media_type_of(info: &BlobInfo, bytes: &[u8]) -> String {
    if !info.meta.media_type.is_empty() {
        return info.meta.media_type.clone();
    }
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| OCI_MANIFEST.into())
}

/// The manifest a reference names in a repository, and its bytes.
async fn lookup(
    state: &Arc<State>,
    name: &str,
    r: Reference,
) -> ApiResult<Option<(BlobInfo, Vec<u8>)>> {
    let (s, ns, n) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        name.to_string(),
    );
    Ok(blocking(move || {
        Ok(match resolve(&s, &ns, &n, &r)? {
            Some(info) => {
                let bytes = read_all(&s, &info)?;
                Some((info, bytes))
            }
            None => None,
        })
    })
    .await??)
}

pub(super) async fn get(
    state: &Arc<State>,
    name: &str,
    reference: &str,
    head: bool,
) -> ApiResult<Response> {
    let unknown = || {
        ApiError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is not in repository {name}"),
        )
    };
    // A malformed tag names nothing that could be stored: 404, as for any
    // unknown tag (a malformed digest stays 400 DIGEST_INVALID).
    let r = match parse_reference(reference) {
        Err(e) if e.code == Code::TagInvalid => return Err(unknown()),
        r => r?,
    };
    let mut found = lookup(state, name, r.clone()).await?;
    if found.is_none()
        && !state.opts.mirror_of.is_empty()
        && mirror::fetch_manifest(state, name, &r).await?
    {
        found = lookup(state, name, r).await?;
    }
    let Some((info, bytes)) = found else {
        return Err(unknown());
    };
    let mut r = empty(
        StatusCode::OK,
        &[
            ("Content-Type", media_type_of(&info, &bytes)),
            ("Docker-Content-Digest", info.digest.to_string()),
            ("Content-Length", bytes.len().to_string()),
        ],
    );
    if !head {
        *r.body_mut() = Body::from(bytes);
    }
    Ok(r)
}

/// What a manifest says of the blobs it names.
pub(super) struct Parsed {
    media_type: String,
    config: Option<BlobRef>,
    layers: Vec<BlobRef>,
    children: Vec<BlobRef>,
    subject: Option<String>,
}

fn desc(v: &Value) -> Option<BlobRef> {
    Some(BlobRef {
        digest: v.get("digest")?.as_str()?.to_string(),
        size: v.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
        media_type: v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_string(),
    })
}

pub(super) fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> ApiResult<Parsed> {
    let invalid = |m: String| ApiError::new(Code::ManifestInvalid, m);
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("a manifest is a JSON object".into()));
    }
    let field = v.get("mediaType").and_then(|m| m.as_str());
    let ct = content_type.filter(|c| !c.is_empty() && *c != "application/octet-stream");
    if let (Some(f), Some(c)) = (field, ct) {
        if f != c {
            return Err(invalid(format!(
                "mediaType {f:?} differs from Content-Type {c:?}"
            )));
        }
    }
    let media_type = ct.or(field).map(String::from).unwrap_or_else(|| {
        if v.get("manifests").is_some() {
            OCI_INDEX.into()
        } else {
            OCI_MANIFEST.into()
        }
    });
    let list = |k: &str| -> ApiResult<Vec<BlobRef>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    desc(d).ok_or_else(|| invalid(format!("a descriptor in {k} has no digest")))
                })
                .collect(),
            Some(_) => Err(invalid(format!("{k} is not a list"))),
        }
    };
    let config = match v.get("config") {
        None | Some(Value::Null) => None,
        Some(c) => Some(desc(c).ok_or_else(|| invalid("config has no digest".into()))?),
    };
    let subject = v.get("subject").and_then(desc).map(|d| d.digest);
    if let Some(s) = &subject {
        parse_digest(s).map_err(|_| invalid(format!("subject digest {s:?}")))?;
    }
    let p = Parsed {
        media_type,
        config,
        layers: list("layers")?,
        children: list("manifests")?,
        subject,
    };
    for b in p.config.iter().chain(&p.layers).chain(&p.children) {
        parse_digest(&b.digest)
            .map_err(|_| invalid(format!("descriptor digest {:?}", b.digest)))?;
    }
    Ok(p)
}

pub(super) async fn put(
    state: &Arc<State>,
    name: &str,
    reference: &str,
    req: Request,
) -> ApiResult<Response> {
    let r = parse_reference(reference)?;
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let max = state.opts.max_manifest_bytes;
    let too_big = || {
        ApiError::new(
            Code::SizeInvalid,
            format!("manifests are limited to {max} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > max)
    {
        return Err(too_big());
    }
    let body = tokio::time::timeout(
        state.opts.body_timeout,
        axum::body::to_bytes(req.into_body(), max),
    )
    .await
    .map_err(|_| {
        ApiError::new(Code::ManifestInvalid, "the manifest body timed out")
            .with_status(StatusCode::REQUEST_TIMEOUT)
    })?
    .map_err(|_| too_big())?;
    let d = Digest::of(&body);
    if let Reference::Digest(want) = &r {
        if *want != d {
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!("the manifest's digest is {d}, not {want}"),
            ));
        }
    }
    let p = parse_manifest(&body, content_type.as_deref())?;
    let ns = state.opts.namespace.clone();
    // Every blob an image manifest names must be stored already.
    for b in p.config.iter().chain(&p.layers) {
        let bd = parse_digest(&b.digest)?;
        if blobs::stat(&state.store, &ns, &bd).await?.is_none() {
            return Err(ApiError::new(
                Code::ManifestBlobUnknown,
                format!("blob {bd} named by the manifest is not stored"),
            ));
        }
    }
    let _g = state.manifest_lock.lock().await;
    let (s, n) = (state.store.clone(), name.to_string());
    let tag = match &r {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    let subject = p.subject.clone();
    blocking(move || store_manifest(&s, &ns, &n, tag.as_deref(), d, body.to_vec(), &p)).await??;
    let mut headers = vec![
        ("Location", format!("/v2/{name}/manifests/{d}")),
        ("Docker-Content-Digest", d.to_string()),
        ("Content-Length", "0".to_string()),
    ];
    if let Some(s) = subject {
        headers.push(("OCI-Subject", s));
    }
    Ok(empty(StatusCode::CREATED, &headers))
}

fn push_blob(
    store: &Store,
    ns: &str,
    d: Digest,
    bytes: &[u8],
    media_type: &str,
    labels: BTreeMap<String, String>,
) -> Result<()> {
    if store.stat(ns, &d).is_ok() {
        store.update_meta(ns, &d, |m| {
            m.media_type = media_type.to_string();
            m.labels.extend(labels);
            Ok(())
        })?;
        return Ok(());
    }
    let mut ing = store.begin_ingest(IngestOptions {
        namespace: ns.to_string(),
        expected_digest: Some(d),
        expected_size: Some(bytes.len() as u64),
        media_type: media_type.to_string(),
        labels,
        ..Default::default()
    })?;
    ing.write(bytes)?;
    match ing.commit() {
        Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn store_manifest(
    store: &Store,
    ns: &str,
    name: &str,
    tag: Option<&str>,
    d: Digest,
    bytes: Vec<u8>,
    p: &Parsed,
) -> Result<()> {
    let mut labels = BTreeMap::new();
    labels.insert(MANIFEST_LABEL.to_string(), String::new());
    labels.insert(repo_label(name), String::new());
    if let Some(s) = &p.subject {
        labels.insert(SUBJECT_LABEL.to_string(), s.clone());
    }
    push_blob(store, ns, d, &bytes, &p.media_type, labels)?;
    let Some(tag) = tag else { return Ok(()) };
    // The tag: an image record, as `strata import --name <name>:<tag>` writes.
    let mut layers = p.layers.clone();
    // An index's record lists its children and their blobs, so that
    // `strata export` writes a complete layout.
    for c in &p.children {
        layers.push(c.clone());
        let Ok(cd) = Digest::parse(&c.digest) else {
            continue;
        };
        let Ok(info) = store.stat(ns, &cd) else {
            continue;
        };
        if let Ok(cp) = parse_manifest(&read_all(store, &info)?, None) {
            layers.extend(cp.config.into_iter().chain(cp.layers));
        }
    }
    let image_name = format!("{name}:{tag}");
    let img = Image {
        name: image_name.clone(),
        manifest: Some(BlobRef {
            digest: d.to_string(),
            size: bytes.len() as u64,
            media_type: p.media_type.clone(),
        }),
        config: p.config.clone(),
        layers,
        platform: None,
    };
    let rec = record::encode(&img);
    let rd = Digest::of(&rec);
    let mut labels = BTreeMap::new();
    labels.insert(record::NAME_LABEL.to_string(), image_name.clone());
    push_blob(store, ns, rd, &rec, record::MEDIA_TYPE, labels)?;
    // One record per name: the tag moves.
    for (old, _) in records(store, ns, Some(&image_name))? {
        if old.digest != rd {
            let _ = store.delete(ns, &old.digest);
        }
    }
    Ok(())
}

pub(super) async fn delete(state: &Arc<State>, name: &str, reference: &str) -> ApiResult<Response> {
    let r = parse_reference(reference)?;
    let _g = state.manifest_lock.lock().await;
    let (s, ns, n) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        name.to_string(),
    );
    let found = blocking(move || match r {
        Reference::Tag(t) => {
            let recs = records(&s, &ns, Some(&format!("{n}:{t}")))?;
            for (rec, _) in &recs {
                s.delete(&ns, &rec.digest)?;
            }
            Ok(!recs.is_empty())
        }
        Reference::Digest(d) => delete_manifest(&s, &ns, &n, d),
    })
    .await??;
    if !found {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is not in repository {name}"),
        ));
    }
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

/// Takes a manifest out of a repository, with the tags that name it. When
/// no repository holds it any more, it is deleted, and so are the blobs it
/// named that no other manifest or image record names: `strata gc` then
/// frees their chunks unless another namespace holds them.
fn delete_manifest(store: &Store, ns: &str, name: &str, d: Digest) -> Result<bool> {
    let Some(info) = resolve(store, ns, name, &Reference::Digest(d))? else {
        return Ok(false);
    };
    for (rec, img) in records(store, ns, None)? {
        if manifest_digest(&img) == Some(d)
            && split_image_name(&img.name).is_some_and(|(r, _)| r == name)
        {
            store.delete(ns, &rec.digest)?;
        }
    }
    let label = repo_label(name);
    let info = store.update_meta(ns, &info.digest, |m| {
        m.labels.remove(&label);
        Ok(())
    })?;
    let still_held = info
        .meta
        .labels
        .keys()
        .any(|k| k.starts_with(REPO_LABEL_PREFIX))
        || records(store, ns, None)?
            .iter()
            .any(|(_, img)| manifest_digest(img) == Some(d));
    if still_held {
        return Ok(true);
    }
    let named = parse_manifest(&read_all(store, &info)?, None)
        .map(|p| p.config.into_iter().chain(p.layers).collect::<Vec<_>>())
        .unwrap_or_default();
    store.delete(ns, &d)?;
    if named.is_empty() {
        return Ok(true);
    }
    let live = referenced(store, ns)?;
    for b in named {
        let Ok(bd) = Digest::parse(&b.digest) else {
            continue;
        };
        if !live.contains(&bd) {
            match store.delete(ns, &bd) {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(true)
}

/// Every blob a stored manifest or image record of the namespace names.
fn referenced(store: &Store, ns: &str) -> Result<HashSet<Digest>> {
    let mut live = HashSet::new();
    for info in store.list(ns, &[MANIFEST_LABEL.to_string()])? {
        live.insert(info.digest);
        if let Ok(p) = parse_manifest(&read_all(store, &info)?, None) {
            for b in p.config.iter().chain(&p.layers).chain(&p.children) {
                if let Ok(x) = Digest::parse(&b.digest) {
                    live.insert(x);
                }
            }
        }
    }
    for (_, img) in records(store, ns, None)? {
        for b in record::blobs(&img) {
            if let Ok(x) = Digest::parse(&b.digest) {
                live.insert(x);
            }
        }
    }
    Ok(live)
}

/// `n` and `last` paging over a sorted list; the Link header when cut.
fn page(
    items: Vec<String>,
    q: &[(String, String)],
    path: &str,
) -> ApiResult<(Vec<String>, Option<String>)> {
    let mut items: Vec<String> = match param(q, "last") {
        Some(l) => items.into_iter().filter(|t| t.as_str() > l).collect(),
        None => items,
    };
    let Some(n) = param(q, "n") else {
        return Ok((items, None));
    };
    let n: usize = n.parse().map_err(|_| {
        ApiError::new(Code::Unsupported, format!("n={n:?} is not a number"))
            .with_status(StatusCode::BAD_REQUEST)
    })?;
    if items.len() <= n {
        return Ok((items, None));
    }
    items.truncate(n);
    let link = items
        .last()
        .map(|l| format!("<{path}?n={n}&last={l}>; rel=\"next\""));
    Ok((items, link))
}

fn json_response(v: &Value, content_type: &str, extra: &[(&str, String)]) -> Response {
    let body = serde_json::to_vec(v).expect("JSON serializes");
    let mut headers = vec![
        ("Content-Type", content_type.to_string()),
        ("Content-Length", body.len().to_string()),
    ];
    headers.extend(extra.iter().cloned());
    let mut r = empty(StatusCode::OK, &headers);
    *r.body_mut() = Body::from(body);
    r
}

pub(super) async fn tags(
    state: &Arc<State>,
    name: &str,
    q: &[(String, String)],
) -> ApiResult<Response> {
    let (s, ns, n) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        name.to_string(),
    );
    let (tags, known) = blocking(move || {
        let mut tags = BTreeSet::new();
        for (_, img) in records(&s, &ns, None)? {
            if let Some((r, t)) = split_image_name(&img.name) {
                if r == n {
                    tags.insert(t.to_string());
                }
            }
        }
        let known = !tags.is_empty() || !s.list(&ns, &[repo_label(&n)])?.is_empty();
        Ok((tags.into_iter().collect::<Vec<_>>(), known))
    })
    .await??;
    if !known {
        return Err(ApiError::new(
            Code::NameUnknown,
            format!("repository {name} is not known"),
        ));
    }
    let (tags, link) = page(tags, q, &format!("/v2/{name}/tags/list"))?;
    let extra: Vec<(&str, String)> = link.into_iter().map(|l| ("Link", l)).collect();
    Ok(json_response(
        &serde_json::json!({ "name": name, "tags": tags }),
        "application/json",
        &extra,
    ))
}

pub(super) async fn catalog(state: &Arc<State>, q: &[(String, String)]) -> ApiResult<Response> {
    let (s, ns) = (state.store.clone(), state.opts.namespace.clone());
    let repos = blocking(move || {
        let mut repos = BTreeSet::new();
        for (_, img) in records(&s, &ns, None)? {
            if let Some((r, _)) = split_image_name(&img.name) {
                repos.insert(r.to_string());
            }
        }
        for info in s.list(&ns, &[MANIFEST_LABEL.to_string()])? {
            for k in info.meta.labels.keys() {
                if let Some(r) = k.strip_prefix(REPO_LABEL_PREFIX) {
                    repos.insert(r.to_string());
                }
            }
        }
        Ok(repos.into_iter().collect::<Vec<_>>())
    })
    .await??;
    let (repos, link) = page(repos, q, "/v2/_catalog")?;
    let extra: Vec<(&str, String)> = link.into_iter().map(|l| ("Link", l)).collect();
    Ok(json_response(
        &serde_json::json!({ "repositories": repos }),
        "application/json",
        &extra,
    ))
}

pub(super) async fn referrers(
    state: &Arc<State>,
    name: &str,
    digest: &str,
    q: &[(String, String)],
) -> ApiResult<Response> {
    let d = parse_digest(digest)?;
    let filter = param(q, "artifactType").map(String::from);
    let (s, ns, n, f) = (
        state.store.clone(),
        state.opts.namespace.clone(),
        name.to_string(),
        filter.clone(),
    );
    let list = blocking(move || {
        let mut out = Vec::new();
        let infos = s.list(&ns, &[format!("{SUBJECT_LABEL}={d}"), repo_label(&n)])?;
        for info in infos {
            let bytes = read_all(&s, &info)?;
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let artifact_type = v
                .get("artifactType")
                .and_then(|a| a.as_str())
                .or_else(|| {
                    v.get("config")
                        .and_then(|c| c.get("mediaType"))
                        .and_then(|m| m.as_str())
                })
                .map(String::from);
            if f.as_ref()
                .is_some_and(|f| artifact_type.as_ref() != Some(f))
            {
                continue;
            }
            let mut desc = serde_json::json!({
                "mediaType": media_type_of(&info, &bytes),
                "digest": info.digest.to_string(),
                "size": bytes.len(),
            });
            if let Some(a) = artifact_type {
                desc["artifactType"] = Value::String(a);
            }
            if let Some(a) = v.get("annotations").filter(|a| a.is_object()) {
                desc["annotations"] = a.clone();
            }
            out.push(desc);
        }
        Ok(out)
    })
    .await??;
    let extra: Vec<(&str, String)> = filter
        .map(|_| ("OCI-Filters-Applied", "artifactType".to_string()))
        .into_iter()
        .collect();
    Ok(json_response(
        &serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list }),
        OCI_INDEX,
        &extra,
    ))
}
