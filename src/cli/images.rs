//! Whole images in the daemon: `strata import`, `strata images`,
//! `strata export`. An image is its blobs (ordinary blobs of a namespace)
//! plus a record blob labelled with its name (see `image::record`).

use super::push::push_reader;
use super::remote_args::RemoteArgs;
use super::{print_json, status_err};
use crate::client::{self, blob_source::DaemonSource};
use crate::image::{self, record, BlobRef, Image, Platform};
use crate::proto::strata::v1 as pb;
use crate::remote::{self, Location, Transport};
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::transport::Channel;

type Client = pb::store_client::StoreClient<Channel>;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Registry references (`docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`, Docker
    /// Hub short names as `docker://ubuntu:24.04`), OCI image layouts
    /// (`DIR` or `oci:DIR[:REF]`), OCI archives (`oci-archive:FILE[:REF]`),
    /// docker-archives (`docker save`; `docker-archive:FILE`) or single layer files
    #[arg(required = true, value_name = "IMAGE")]
    pub inputs: Vec<String>,
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Platform to pick from multi-platform images (os/arch[/variant]) [default: the host's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Store compressed layers as received and let the daemon decode,
    /// deduplicate and prove them in the background (`strata stats` counts
    /// the pending conversions): the import runs at network and disk speed
    #[arg(long)]
    pub defer: bool,
    /// Every platform of a multi-platform image, each recorded as
    /// `NAME#os/arch[/variant]`
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Record the image under this name instead of its own (one image only)
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Also read every image back and count at the chunk level: the plain
    /// bytes unique to each image and those it shares with the others (as
    /// `strata analyze --socket` does; reads every blob, so it takes a while)
    #[arg(long)]
    pub dedup: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// An OCI image layout directory
    Oci,
    /// A `docker load`-able tarball (with an OCI index too)
    DockerArchive,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The image's name, as `strata images` lists it
    pub name: String,
    /// Where to write: `docker://HOST[:PORT]/REPO[:TAG]` pushes to a registry
    /// (every blob the exact stored bytes); `oci:DIR` or a new (or empty)
    /// directory for an OCI layout; `docker-archive:FILE` or a file (with
    /// `--format docker-archive`) for a docker-archive
    pub dest: String,
    /// The format of a bare path DEST
    #[arg(long, value_enum, default_value = "oci")]
    pub format: ExportFormat,
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub(super) fn platform(p: &Option<String>) -> anyhow::Result<Platform> {
    match p {
        Some(s) => Platform::parse(s).map_err(|e| anyhow::anyhow!("--platform {s:?}: {e}")),
        None => Ok(Platform::host()),
    }
}

async fn stat(c: &mut Client, ns: &str, digest: &str) -> anyhow::Result<Option<pb::BlobInfo>> {
    match c
        .stat(pb::StatRequest {
            namespace: ns.into(),
            digest: digest.into(),
        })
        .await
    {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(status_err(s)),
    }
}

/// The records of images named `name` (or of all images), newest last.
async fn records(
    c: &mut Client,
    ns: &str,
    name: Option<&str>,
) -> anyhow::Result<Vec<pb::BlobInfo>> {
    let filter = match name {
        Some(n) => format!("{}={n}", record::NAME_LABEL),
        None => record::NAME_LABEL.to_string(),
    };
    let mut blobs = c
        .list(pb::ListRequest {
            namespace: ns.into(),
            label_filters: vec![filter],
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .blobs;
    blobs.retain(|b| b.media_type == record::MEDIA_TYPE);
    blobs.sort_by_key(|b| (b.updated_at, b.digest.clone()));
    Ok(blobs)
}

async fn read_record(c: &mut Client, ns: &str, digest: &str) -> anyhow::Result<Image> {
    let mut stream = c
        .read(pb::ReadRequest {
            namespace: ns.into(),
            digest: digest.into(),
            ..Default::default()
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await.map_err(status_err)? {
        bytes.extend_from_slice(&m.data);
    }
    Ok(record::decode(&bytes)?)
}

/// Opens one import input: a registry reference or a file.
async fn open_input(
    input: &str,
    plat: &Platform,
    a: &ImportArgs,
    sessions: &remote::Sessions,
) -> anyhow::Result<image::Opened> {
    match Location::parse(input)? {
        Location::Registry(r) => {
            let opts = a.remote.options()?;
            let (opened, _) = remote::pull::open(&r, plat, a.all_platforms, &opts, sessions)
                .await
                .with_context(|| format!("docker://{r}"))?;
            Ok(opened)
        }
        Location::Path {
            path,
            name,
            transport,
        } => {
            let (p, all) = (plat.clone(), a.all_platforms);
            let path2 = path.clone();
            let opened = tokio::task::spawn_blocking(move || image::open(&path2, &p))
                .await?
                .with_context(|| format!("reading {}", path.display()))?;
            if all {
                anyhow::bail!(
                    "--all-platforms reads docker:// references; for {} pick one with --platform",
                    path.display()
                );
            }
            check_transport(&opened, transport, &path)?;
            Ok(select(opened, name.as_deref(), &path)?)
        }
    }
}

/// `oci:` must name a layout, `docker-archive:` a docker-archive, ...
fn check_transport(
    o: &image::Opened,
    t: Option<Transport>,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use image::Format as F;
    let ok = match t {
        None => true,
        Some(Transport::Oci) => o.format == F::OciLayout,
        Some(Transport::OciArchive) => o.format == F::OciArchive,
        Some(Transport::DockerArchive) => o.format == F::DockerArchive,
    };
    if !ok {
        anyhow::bail!(
            "{} is {:?}, not what its transport prefix says ({t:?})",
            path.display(),
            o.format
        );
    }
    Ok(())
}

/// Keeps only the image named `name` (a `:REF` after the path).
fn select(
    mut o: image::Opened,
    name: Option<&str>,
    path: &std::path::Path,
) -> anyhow::Result<image::Opened> {
    if let Some(n) = name {
        let have: Vec<String> = o.images.iter().map(|i| i.name.clone()).collect();
        o.images.retain(|i| i.name == n);
        if o.images.is_empty() {
            anyhow::bail!(
                "{} holds no image named {n:?} (it has: {})",
                path.display(),
                have.join(", ")
            );
        }
    }
    Ok(o)
}

pub async fn import(a: ImportArgs, target: &client::Target) -> anyhow::Result<()> {
    let plat = platform(&a.platform)?;
    let mut c = client::connect_to(target).await?;
    let sessions = remote::Sessions::default();
    let mut rows = Vec::new();
    for input in &a.inputs {
        let opened = open_input(input, &plat, &a, &sessions).await?;
        if a.name.is_some() && (opened.images.len() != 1 || a.inputs.len() != 1) {
            anyhow::bail!(
                "--name names one image, but {}",
                if a.inputs.len() != 1 {
                    format!("{} inputs are given", a.inputs.len())
                } else {
                    format!("{input} holds {}", opened.images.len())
                }
            );
        }
        for mut img in opened.images {
            if let Some(n) = &a.name {
                img.name = n.clone();
            } else if matches!(
                opened.format,
                image::Format::OciLayout | image::Format::OciArchive
            ) {
                let path = match Location::parse(input)? {
                    Location::Path { path, .. } => path,
                    Location::Registry(_) => unreachable!("a registry is Format::Registry"),
                };
                img.name = qualified_name(&img.name, &path);
            }
            let (mut pushed, mut skipped, mut added) = (0u64, 0u64, 0u64);
            for b in record::blobs(&img) {
                if stat(&mut c, &a.namespace, &b.digest).await?.is_some() {
                    skipped += 1;
                    continue;
                }
                let r = push_blob(&mut c, &opened.source, &b, &a.namespace, &img.name, a.defer)
                    .await
                    .with_context(|| format!("importing {input}"))?;
                pushed += 1;
                added += r.bytes_added;
            }
            // The record last: an image half imported is never listed.
            let rec = record::encode(&img);
            let mut labels = HashMap::new();
            labels.insert(record::NAME_LABEL.to_string(), img.name.clone());
            let start = pb::PushStart {
                namespace: a.namespace.clone(),
                media_type: record::MEDIA_TYPE.into(),
                labels,
                ..Default::default()
            };
            let len = rec.len() as u64;
            let r = push_reader(
                &mut c,
                Box::new(std::io::Cursor::new(rec)),
                Some(len),
                "record",
                start,
            )
            .await
            .with_context(|| format!("recording image {}", img.name))?;
            added += r.bytes_added;
            // One record per name: an earlier image of the same name is replaced.
            for old in records(&mut c, &a.namespace, Some(&img.name)).await? {
                if old.digest != r.digest {
                    c.delete(pb::DeleteRequest {
                        namespace: a.namespace.clone(),
                        digest: old.digest,
                    })
                    .await
                    .map_err(status_err)?;
                }
            }
            let manifest = img
                .manifest
                .as_ref()
                .map_or("-", |m| m.digest.as_str())
                .to_string();
            if !a.json {
                println!(
                    "{}  {manifest}  {pushed} pushed, {skipped} already stored  {added}",
                    img.name
                );
            }
            rows.push(serde_json::json!({
                "name": img.name, "manifest": img.manifest.as_ref().map(|m| &m.digest),
                "platform": img.platform, "input": input, "pushed": pushed,
                "already_stored": skipped, "new_bytes": added, "record": r.digest,
            }));
        }
    }
    if a.json {
        print_json(&serde_json::Value::Array(rows));
    }
    Ok(())
}

/// A ref name that is just a tag ("latest", as skopeo and umoci write
/// them) says little in a store holding many images: it is prefixed with the
/// input's file name ("debian:latest").
fn qualified_name(name: &str, input: &std::path::Path) -> String {
    let stem = image::default_name(input);
    // Names made from the input's own name (unnamed index entries) stay.
    let from_input = name == stem || name.starts_with(&format!("{stem}-"));
    if name.contains([':', '/', '@']) || stem.is_empty() || from_input {
        name.to_string()
    } else {
        format!("{stem}:{name}")
    }
}

async fn push_blob(
    c: &mut Client,
    source: &Arc<dyn image::BlobSource>,
    b: &BlobRef,
    ns: &str,
    image: &str,
    defer: bool,
) -> anyhow::Result<pb::PushResponse> {
    let (src, blob) = (source.clone(), b.clone());
    // Opening reads a tar index or a file: off the runtime's threads.
    let reader = tokio::task::spawn_blocking(move || src.open(&blob))
        .await?
        .with_context(|| format!("opening {} of {image}", b.digest))?;
    let start = pb::PushStart {
        namespace: ns.into(),
        expected_digest: b.digest.clone(),
        expected_size: b.size,
        media_type: b.media_type.clone(),
        defer_conversion: defer,
        ..Default::default()
    };
    let short = b.digest.get(7..19).unwrap_or(&b.digest);
    push_reader(c, reader, Some(b.size), &format!("{image} {short}"), start)
        .await
        .with_context(|| format!("pushing {} of {image}", b.digest))
}

/// Every image the daemon holds in `ns`, by record age.
pub async fn held(c: &mut Client, ns: &str) -> anyhow::Result<Vec<Image>> {
    let mut out = Vec::new();
    for r in records(c, ns, None).await? {
        out.push(read_record(c, ns, &r.digest).await?);
    }
    Ok(out)
}

/// One image's figures from the daemon's Stat of each blob.
struct Figures {
    size: u64,
    plain: u64,
    extra: u64,
}

pub async fn images(a: ImagesArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let mut imgs = Vec::new();
    for r in records(&mut c, &a.namespace, None).await? {
        imgs.push((
            read_record(&mut c, &a.namespace, &r.digest).await?,
            r.digest,
        ));
    }
    // Layers used by more than one image: their plain bytes are shared.
    let mut users: HashMap<String, usize> = HashMap::new();
    for (img, _) in &imgs {
        let mut seen: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
        seen.sort();
        seen.dedup();
        for d in seen {
            *users.entry(d.to_string()).or_default() += 1;
        }
    }
    let mut info: HashMap<String, pb::BlobInfo> = HashMap::new();
    let mut rows = Vec::new();
    for (img, rec) in &imgs {
        let mut f = Figures {
            size: 0,
            plain: 0,
            extra: 0,
        };
        let mut shared = 0u64;
        let mut missing = 0usize;
        for b in record::blobs(img) {
            if !info.contains_key(&b.digest) {
                match stat(&mut c, &a.namespace, &b.digest).await? {
                    Some(i) => {
                        info.insert(b.digest.clone(), i);
                    }
                    None => {
                        missing += 1;
                        continue;
                    }
                }
            }
            let i = &info[&b.digest];
            f.size += i.size;
            f.extra += i.extra_bytes;
            if img.layers.iter().any(|l| l.digest == b.digest) {
                let plain = if i.plain_size > 0 {
                    i.plain_size
                } else {
                    i.size
                };
                f.plain += plain;
                if users.get(&b.digest).copied().unwrap_or(0) > 1 {
                    shared += plain;
                }
            }
        }
        rows.push((img, rec, f, shared, missing));
    }
    // Chunk-level figures: the analysis over what the daemon holds.
    let mut chunks: HashMap<String, (u64, u64)> = HashMap::new();
    if a.dedup && rows.iter().any(|r| r.4 == 0) {
        let source: Arc<dyn image::BlobSource> = Arc::new(DaemonSource::new(
            c.clone(),
            a.namespace.clone(),
            tokio::runtime::Handle::current(),
        ));
        // Images missing a blob cannot be read back whole: left out.
        let whole: Vec<&Image> = rows.iter().filter(|r| r.4 == 0).map(|r| r.0).collect();
        let inputs: Vec<crate::analyze::Input> = whole
            .iter()
            .map(|img| crate::analyze::Input {
                image: (*img).clone(),
                source: source.clone(),
                origin: a.namespace.clone(),
            })
            .collect();
        let mut settings = crate::analyze::Settings {
            source: "daemon".into(),
            ..Default::default()
        };
        settings.unwrap.trust_probe = true;
        let report =
            tokio::task::spawn_blocking(move || crate::analyze::run(inputs, &settings)).await??;
        for i in report.images {
            chunks.insert(i.name, (i.unique_bytes, i.shared_bytes));
        }
    }
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(img, rec, f, shared, missing)| {
                let mut v = serde_json::json!({
                    "name": img.name, "manifest": img.manifest.as_ref().map(|m| &m.digest),
                    "platform": img.platform, "layers": img.layers.len(), "size": f.size,
                    "plain_size": f.plain, "shared_layer_bytes": shared, "extra_bytes": f.extra,
                    "missing_blobs": missing, "record": rec,
                });
                if let Some((u, sh)) = chunks.get(&img.name) {
                    v["unique_bytes"] = (*u).into();
                    v["shared_bytes"] = (*sh).into();
                }
                v
            })
            .collect();
        print_json(&serde_json::Value::Array(v));
        return Ok(());
    }
    let dedup_head = if a.dedup {
        format!(" {:>14} {:>14}", "UNIQUE", "SHARED-CHUNKS")
    } else {
        String::new()
    };
    println!(
        "{:<40} {:>6} {:>14} {:>14} {:>14} {:>10}{dedup_head}",
        "NAME", "LAYERS", "SIZE", "PLAIN", "SHARED-LAYERS", "EXTRA"
    );
    for (img, _, f, shared, missing) in &rows {
        let note = if *missing > 0 {
            format!("  ({missing} blobs missing)")
        } else {
            String::new()
        };
        let dedup = match chunks.get(&img.name) {
            Some((u, sh)) => format!(" {u:>14} {sh:>14}"),
            None => String::new(),
        };
        println!(
            "{:<40} {:>6} {:>14} {:>14} {:>14} {:>10}{dedup}{note}",
            img.name,
            img.layers.len(),
            f.size,
            f.plain,
            shared,
            f.extra
        );
    }
    Ok(())
}

pub async fn export(a: ExportArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let Some(rec) = records(&mut c, &a.namespace, Some(&a.name)).await?.pop() else {
        anyhow::bail!(
            "no image named {:?} in namespace {:?} (see `strata images`)",
            a.name,
            a.namespace
        );
    };
    let img = read_record(&mut c, &a.namespace, &rec.digest).await?;
    let source = DaemonSource::new(c, a.namespace.clone(), tokio::runtime::Handle::current());
    let (dest, format) = match Location::parse(&a.dest)? {
        Location::Registry(r) => return push(a, img, Arc::new(source), r).await,
        Location::Path {
            path,
            name: Some(n),
            ..
        } => {
            anyhow::bail!("{}: a ref name (:{n}) on an export destination is not supported; the image keeps its own name", path.display())
        }
        Location::Path {
            path,
            transport: None,
            ..
        } => (path, a.format),
        Location::Path {
            path,
            transport: Some(Transport::Oci),
            ..
        } => (path, ExportFormat::Oci),
        Location::Path {
            path,
            transport: Some(Transport::DockerArchive),
            ..
        } => (path, ExportFormat::DockerArchive),
        Location::Path {
            transport: Some(Transport::OciArchive),
            ..
        } => {
            anyhow::bail!(
                "export writes oci:DIR, docker-archive:FILE or docker://; not oci-archive:"
            )
        }
    };
    let shown = dest.display().to_string();
    tokio::task::spawn_blocking(move || match format {
        ExportFormat::Oci => image::write_oci_layout(&dest, &[img], &source),
        ExportFormat::DockerArchive => image::write_docker_archive(&dest, &[img], &source),
    })
    .await?
    .with_context(|| format!("exporting {} to {shown}", a.name))?;
    Ok(())
}

/// `strata export NAME docker://...`: the image's blobs, then its manifest.
async fn push(
    a: ExportArgs,
    img: Image,
    source: Arc<dyn image::BlobSource>,
    dest: remote::Reference,
) -> anyhow::Result<()> {
    let opts = a.remote.options()?;
    let total: u64 = record::blobs(&img).iter().map(|b| b.size).sum();
    let bar = super::push::progress_bar(Some(total), &format!("{} -> {dest}", img.name));
    let stats = async {
        let session = remote::Session::connect(&dest, &opts).await?;
        let b2 = bar.clone();
        remote::push::push_image(&img, source, &session, &dest, &move |n| b2.inc(n)).await
    }
    .await
    .with_context(|| format!("exporting {} to docker://{dest}", a.name))?;
    bar.finish_and_clear();
    if a.json {
        print_json(&serde_json::json!({
            "name": img.name, "destination": format!("docker://{dest}"), "manifest": stats.manifest,
            "uploaded": stats.uploaded, "mounted": stats.mounted,
            "already_there": stats.already_there, "bytes_uploaded": stats.bytes_uploaded,
        }));
    } else {
        println!(
            "{}  docker://{dest}  {}  {} uploaded, {} mounted, {} already there  {}",
            img.name,
            stats.manifest,
            stats.uploaded,
            stats.mounted,
            stats.already_there,
            stats.bytes_uploaded
        );
    }
    Ok(())
}
