//! Inputs made of files: an OCI layout directory, and tar-based inputs (OCI
//! archive, docker-archive) whose members are indexed and read in place.
//! Also docker's own manifest.json format, in a tar or an unpacked directory.

use super::oci_layout::{config_platform, read_layout};
use super::source::{Backing, FileSource};
use super::spec::{self, ConfigJson, DockerManifestItem};
use super::tar_index::{normalize, TarIndex};
use super::{default_name, layer_file, parse_json, read_json_blob, BlobRef, Format, Image, Opened};
use super::{Platform, MAX_JSON};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// A directory: an OCI layout (index.json), else an unpacked docker-archive.
pub(crate) fn open_dir(path: &Path, platform: &Platform) -> Result<Opened> {
    let src = FileSource::new(Backing::Dir(path.to_path_buf()));
    let name = default_name(path);
    if src.backing.exists("index.json") {
        let images = read_layout(&src, platform, &name)?;
        return Ok(opened(images, src, Format::OciLayout));
    }
    if src.backing.exists("manifest.json") {
        return open_docker(src, &name);
    }
    Err(Error::InvalidArgument(format!(
        "{}: a directory without index.json or manifest.json is not an OCI image layout",
        path.display()
    )))
}

/// A tar file: an OCI archive when it holds index.json (docker ≥ 25 writes
/// one beside manifest.json, and the index is preferred), a docker-archive
/// when it holds manifest.json, else a single uncompressed layer.
pub(crate) fn open_tar(path: &Path, platform: &Platform) -> Result<Opened> {
    let index = TarIndex::build(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            Error::InvalidArgument(format!(
                "{}: not an OCI layout, OCI archive, docker-archive or layer (tar, tar.gz, tar.zst): {e}",
                path.display()
            ))
        }
        _ => Error::io(format!("reading {}", path.display()), e),
    })?;
    let has_index = index.contains("index.json");
    let has_docker = index.contains("manifest.json");
    let src = FileSource::new(Backing::Tar {
        path: path.to_path_buf(),
        index,
    });
    let name = default_name(path);
    if has_index {
        let images = read_layout(&src, platform, &name)?;
        let format = if has_docker {
            Format::DockerArchive
        } else {
            Format::OciArchive
        };
        return Ok(opened(images, src, format));
    }
    if has_docker {
        return open_docker(src, &name);
    }
    layer_file::open(path, spec::OCI_LAYER)
}

fn opened(images: Vec<Image>, src: FileSource, format: Format) -> Opened {
    Opened {
        images,
        source: Arc::new(src),
        format,
    }
}

/// A docker-archive's manifest.json: one image per entry, no manifest blob.
fn open_docker(mut src: FileSource, default: &str) -> Result<Opened> {
    let loc = src.backing.location().display().to_string();
    let file = format!("manifest.json in {loc}");
    let bytes = src
        .backing
        .read_small("manifest.json", MAX_JSON)
        .map_err(|e| Error::InvalidArgument(format!("{file}: {e}")))?;
    let items: Vec<DockerManifestItem> = parse_json(&bytes, &file)?;
    let unnamed = items.iter().filter(|i| first_tag(i).is_none()).count();
    let mut images = Vec::new();
    let mut n = 0;
    for item in &items {
        let name = first_tag(item).unwrap_or_else(|| {
            n += 1;
            if unnamed == 1 {
                default.to_string()
            } else {
                format!("{default}-{n}")
            }
        });
        images.push(docker_image(&mut src, item, name, &loc)?);
    }
    Ok(opened(images, src, Format::DockerArchive))
}

fn first_tag(item: &DockerManifestItem) -> Option<String> {
    item.repo_tags.as_ref()?.first().cloned()
}

fn docker_image(
    src: &mut FileSource,
    item: &DockerManifestItem,
    name: String,
    loc: &str,
) -> Result<Image> {
    let missing = |what: &str, path: &str| {
        Error::NotFound(format!(
            "image {name}: {what} {path:?} is missing from {loc}"
        ))
    };
    let cfg_path = normalize(&item.config);
    let (_, cfg_size) = src
        .backing
        .open(&cfg_path)
        .map_err(|_| missing("config", &cfg_path))?;
    // The config's name is its digest ("<hex>.json" or "blobs/sha256/<hex>");
    // a config named otherwise is hashed to find it.
    let cfg_digest = match digest_from_path(&cfg_path, true) {
        Some(d) => d,
        None => {
            let (r, _) = src
                .backing
                .open(&cfg_path)
                .map_err(|e| Error::io(format!("reading {cfg_path} in {loc}"), e))?;
            super::verify::hash_reader(r.take(MAX_JSON))
                .map_err(|e| Error::io(format!("reading {cfg_path} in {loc}"), e))?
                .0
        }
    };
    src.paths.insert(cfg_digest.clone(), cfg_path.clone());
    let config = BlobRef {
        digest: cfg_digest,
        size: cfg_size,
        media_type: spec::DOCKER_CONFIG.to_string(),
    };
    let cfg_bytes = read_json_blob(src, &config, "config", &name)?;
    let cfg: ConfigJson = parse_json(
        &cfg_bytes,
        &format!("config {cfg_path} of image {name} in {loc}"),
    )?;
    let diff_ids = cfg.rootfs.as_ref().map(|r| &r.diff_ids[..]).unwrap_or(&[]);

    let mut layers = Vec::new();
    for (i, path) in item.layers.iter().enumerate() {
        let path = normalize(path);
        let (mut r, size) = src
            .backing
            .open(&path)
            .map_err(|_| missing("layer", &path))?;
        // "blobs/sha256/<hex>" names the digest; legacy "<id>/layer.tar" does
        // not, and is the uncompressed layer whose digest is its diff_id.
        let digest = match digest_from_path(&path, false) {
            Some(d) => d,
            None => {
                let d = diff_ids.get(i).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "image {name} in {loc}: layer {path} has no diff_id in its config"
                    ))
                })?;
                crate::Digest::parse(d).map_err(|e| {
                    Error::InvalidArgument(format!("image {name}: config diff_id: {e}"))
                })?;
                d.clone()
            }
        };
        let mut magic = [0u8; 4];
        let got = super::read_up_to(&mut r, &mut magic)
            .map_err(|e| Error::io(format!("reading {path} in {loc}"), e))?;
        let media_type = match layer_file::compressed_media_type(&magic[..got]) {
            Some(spec::OCI_LAYER_GZIP) => spec::DOCKER_LAYER_GZIP,
            Some(m) => m,
            None => spec::DOCKER_LAYER,
        };
        src.paths.insert(digest.clone(), path);
        layers.push(BlobRef {
            digest,
            size,
            media_type: media_type.to_string(),
        });
    }
    Ok(Image {
        name,
        manifest: None,
        config: Some(config),
        layers,
        platform: config_platform(&cfg),
    })
}

/// "sha256:<hex>" from "blobs/sha256/<hex>" (or, for a config, "<hex>.json").
fn digest_from_path(path: &str, config: bool) -> Option<String> {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    let hex = if dir.ends_with("sha256") {
        base
    } else if config && dir.is_empty() {
        base.strip_suffix(".json")?
    } else {
        return None;
    };
    let d = format!("sha256:{hex}");
    crate::Digest::parse(&d).ok()?;
    Some(d)
}
