//! Writing images out as an OCI image layout or a docker-archive. Blobs are
//! copied byte for byte from their source (verified as they are read), so
//! every digest is unchanged; only the images that never had a manifest
//! (legacy docker-archive, lone layer) or config (lone layer) get new ones.
//! Output is written under a temporary name and renamed into place, so a
//! failed export leaves nothing behind.

use super::spec::{self, Descriptor, DockerManifestItem, Index, Manifest, PlatformJson};
use super::tar_write::TarWriter;
use super::{read_json_blob, BlobRef, BlobSource, Image, Platform};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes `images` as an OCI image layout at `dir`, which must not exist or
/// be empty. index.json names each image by its name
/// (`org.opencontainers.image.ref.name`).
pub fn write_oci_layout(dir: &Path, images: &[Image], source: &dyn BlobSource) -> Result<()> {
    if let Ok(mut entries) = fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(Error::AlreadyExists(format!(
                "{}: exists and is not empty",
                dir.display()
            )));
        }
    }
    let tmp = temp_sibling(dir)?;
    let result = write_layout_into(&tmp, images, source);
    let result = result.and_then(|()| {
        fs::rename(&tmp, dir).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", tmp.display(), dir.display()),
                e,
            )
        })
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result?;
    sync_parent(dir)
}

fn write_layout_into(tmp: &Path, images: &[Image], source: &dyn BlobSource) -> Result<()> {
    let blobs = tmp.join("blobs/sha256");
    fs::create_dir_all(&blobs)
        .map_err(|e| Error::io(format!("creating {}", blobs.display()), e))?;
    let mut sink = DirSink {
        dir: blobs,
        written: HashSet::new(),
    };
    let mut manifests = Vec::new();
    for image in images {
        let m = put_image(&mut sink, image, source)?;
        manifests.push(index_entry(&m, image, false));
    }
    write_file(&tmp.join("oci-layout"), OCI_LAYOUT)?;
    write_file(&tmp.join("index.json"), &index_json(manifests)?)
}

/// Writes `images` as a docker-archive tar at `file` (replaced if it
/// exists), laid out as docker ≥ 25 saves: manifest.json (Config, RepoTags,
/// Layers) with every blob under blobs/sha256/, plus index.json and oci-layout.
pub fn write_docker_archive(file: &Path, images: &[Image], source: &dyn BlobSource) -> Result<()> {
    let tmp = temp_sibling(file)?;
    let result = write_archive_into(&tmp, images, source).and_then(|()| {
        fs::rename(&tmp, file).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", tmp.display(), file.display()),
                e,
            )
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_parent(file)
}

fn write_archive_into(tmp: &Path, images: &[Image], source: &dyn BlobSource) -> Result<()> {
    let ctx = || format!("writing {}", tmp.display());
    let f = File::create(tmp).map_err(|e| Error::io(ctx(), e))?;
    let mut tar = TarWriter::new(BufWriter::with_capacity(1 << 20, f));
    tar.dir("blobs/").map_err(|e| Error::io(ctx(), e))?;
    tar.dir("blobs/sha256/").map_err(|e| Error::io(ctx(), e))?;
    let mut sink = TarSink {
        tar,
        written: HashSet::new(),
        path: tmp.to_path_buf(),
    };
    let mut items = Vec::new();
    let mut manifests = Vec::new();
    for image in images {
        let m = put_image(&mut sink, image, source)?;
        manifests.push(index_entry(&m, image, true));
        items.push(DockerManifestItem {
            config: blob_path(&m.config.digest),
            repo_tags: Some(docker_tag(&image.name).into_iter().collect()),
            layers: image.layers.iter().map(|l| blob_path(&l.digest)).collect(),
        });
    }
    let mut tar = sink.tar;
    let manifest_json = serde_json::to_vec(&items)
        .map_err(|e| Error::Internal(format!("encoding manifest.json: {e}")))?;
    (|| {
        tar.file(
            "index.json",
            &index_json(manifests).map_err(io::Error::other)?,
        )?;
        tar.file("manifest.json", &manifest_json)?;
        tar.file("oci-layout", OCI_LAYOUT)?;
        let w = tar.finish()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })()
    .map_err(|e| Error::io(ctx(), e))
}

/// Where blobs go: a directory or a tar being written.
trait Sink {
    /// Copies a blob from `source` unless already written.
    fn copy(&mut self, blob: &BlobRef, source: &dyn BlobSource) -> Result<()>;
    /// Writes a blob made here (a new manifest or config).
    fn put(&mut self, digest: &str, bytes: &[u8]) -> Result<()>;
}

struct DirSink {
    dir: PathBuf,
    written: HashSet<String>,
}

impl Sink for DirSink {
    fn copy(&mut self, blob: &BlobRef, source: &dyn BlobSource) -> Result<()> {
        if !self.written.insert(blob.digest.clone()) {
            return Ok(());
        }
        let path = self.dir.join(hex_of(&blob.digest)?);
        let ctx = || format!("writing {}", path.display());
        let mut r = open_blob(source, blob)?;
        let mut f = BufWriter::with_capacity(
            1 << 20,
            File::create(&path).map_err(|e| Error::io(ctx(), e))?,
        );
        io::copy(&mut r, &mut f).map_err(|e| blob_error(blob, e, &path))?;
        let f = f
            .into_inner()
            .map_err(|e| Error::io(ctx(), e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(ctx(), e))
    }

    fn put(&mut self, digest: &str, bytes: &[u8]) -> Result<()> {
        if self.written.insert(digest.to_string()) {
            write_file(&self.dir.join(hex_of(digest)?), bytes)?;
        }
        Ok(())
    }
}

struct TarSink<W: Write> {
    tar: TarWriter<W>,
    written: HashSet<String>,
    path: PathBuf,
}

impl<W: Write> Sink for TarSink<W> {
    fn copy(&mut self, blob: &BlobRef, source: &dyn BlobSource) -> Result<()> {
        if !self.written.insert(blob.digest.clone()) {
            return Ok(());
        }
        let mut r = open_blob(source, blob)?;
        let name = blob_path(&blob.digest);
        let ctx = |e| Error::io(format!("writing {}", self.path.display()), e);
        self.tar.file_header(&name, blob.size).map_err(ctx)?;
        // The verifying reader stops at the declared size and fails on a
        // short or wrong blob, so the header's size always holds.
        io::copy(&mut r, self.tar.writer()).map_err(|e| blob_error(blob, e, &self.path))?;
        self.tar
            .pad(blob.size)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    fn put(&mut self, digest: &str, bytes: &[u8]) -> Result<()> {
        if self.written.insert(digest.to_string()) {
            self.tar
                .file(&blob_path(digest), bytes)
                .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        }
        Ok(())
    }
}

/// The manifest and config as written for one image.
struct Written {
    manifest: BlobRef,
    config: BlobRef,
}

/// Copies an image's blobs, making a manifest (and config) if it has none.
fn put_image(sink: &mut dyn Sink, image: &Image, source: &dyn BlobSource) -> Result<Written> {
    for l in &image.layers {
        sink.copy(l, source)?;
    }
    let config = match &image.config {
        Some(c) => {
            sink.copy(c, source)?;
            c.clone()
        }
        None => {
            let bytes = new_config(image, source)?;
            let c = made_blob(&bytes, spec::OCI_CONFIG);
            sink.put(&c.digest, &bytes)?;
            c
        }
    };
    let manifest = match &image.manifest {
        Some(m) => {
            // Checked (read whole and hashed) before it is copied.
            read_json_blob(source, m, "manifest", &image.name)?;
            sink.copy(m, source)?;
            m.clone()
        }
        None => {
            let bytes = new_manifest(&config, &image.layers)?;
            let m = made_blob(&bytes, spec::OCI_MANIFEST);
            sink.put(&m.digest, &bytes)?;
            m
        }
    };
    Ok(Written { manifest, config })
}

fn made_blob(bytes: &[u8], media_type: &str) -> BlobRef {
    BlobRef {
        digest: crate::Digest::of(bytes).to_string(),
        size: bytes.len() as u64,
        media_type: media_type.to_string(),
    }
}

/// An OCI manifest for an image that had none; docker media types become
/// their OCI equivalents (the blobs are the same formats).
fn new_manifest(config: &BlobRef, layers: &[BlobRef]) -> Result<Vec<u8>> {
    let desc = |b: &BlobRef, media_type: &str| Descriptor {
        media_type: media_type.to_string(),
        digest: b.digest.clone(),
        size: b.size,
        ..Default::default()
    };
    let m = Manifest {
        schema_version: 2,
        media_type: spec::OCI_MANIFEST.to_string(),
        config: desc(config, spec::OCI_CONFIG),
        layers: layers
            .iter()
            .map(|l| {
                let mt = match l.media_type.as_str() {
                    spec::DOCKER_LAYER => spec::OCI_LAYER,
                    spec::DOCKER_LAYER_GZIP => spec::OCI_LAYER_GZIP,
                    other => other,
                };
                desc(l, mt)
            })
            .collect(),
    };
    serde_json::to_vec(&m).map_err(|e| Error::Internal(format!("encoding a manifest: {e}")))
}

/// A minimal config for a lone layer: the platform and the layers' diff_ids
/// (the sha256 of each layer uncompressed).
fn new_config(image: &Image, source: &dyn BlobSource) -> Result<Vec<u8>> {
    let platform = image
        .platform
        .as_deref()
        .and_then(|p| Platform::parse(p).ok())
        .unwrap_or_else(Platform::host);
    let mut diff_ids = Vec::new();
    for l in &image.layers {
        let r = open_blob(source, l)?;
        let r: Box<dyn Read> = match l.media_type.as_str() {
            spec::OCI_LAYER_GZIP | spec::DOCKER_LAYER_GZIP => {
                Box::new(flate2::read::MultiGzDecoder::new(r))
            }
            spec::OCI_LAYER_ZSTD => Box::new(
                zstd::stream::read::Decoder::new(r)
                    .map_err(|e| Error::io(format!("layer {}", l.digest), e))?,
            ),
            _ => Box::new(r),
        };
        let (d, _) = super::verify::hash_reader(r).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => Error::DataLoss(format!("image {}: {e}", image.name)),
            _ => Error::io(
                format!("image {}: reading layer {}", image.name, l.digest),
                e,
            ),
        })?;
        diff_ids.push(d);
    }
    let mut cfg = serde_json::json!({
        "architecture": platform.arch,
        "os": platform.os,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    if let Some(v) = platform.variant {
        cfg["variant"] = v.into();
    }
    serde_json::to_vec(&cfg).map_err(|e| Error::Internal(format!("encoding a config: {e}")))
}

fn index_entry(w: &Written, image: &Image, docker: bool) -> Descriptor {
    let mut annotations = BTreeMap::new();
    annotations.insert(spec::REF_NAME.to_string(), image.name.clone());
    if docker {
        // Where docker and containerd look for the full name.
        annotations.insert(spec::CONTAINERD_NAME.to_string(), image.name.clone());
    }
    let platform = image
        .platform
        .as_deref()
        .and_then(|p| Platform::parse(p).ok());
    Descriptor {
        media_type: w.manifest.media_type.clone(),
        digest: w.manifest.digest.clone(),
        size: w.manifest.size,
        platform: platform.map(|p| PlatformJson {
            architecture: p.arch,
            os: p.os,
            variant: p.variant,
        }),
        annotations,
    }
}

fn index_json(manifests: Vec<Descriptor>) -> Result<Vec<u8>> {
    serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: Some(spec::OCI_INDEX.to_string()),
        manifests,
    })
    .map_err(|e| Error::Internal(format!("encoding index.json: {e}")))
}

/// docker's RepoTags want "repo:tag": a name without a tag gets ":latest",
/// and one that is no docker reference at all is left untagged.
fn docker_tag(name: &str) -> Option<String> {
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repo, tag) = match last.rsplit_once(':') {
        Some((_, tag)) => (&name[..name.len() - tag.len() - 1], tag),
        None => (name, "latest"),
    };
    let repo_ok = !repo.is_empty()
        && repo.split('/').all(|c| !c.is_empty())
        && repo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
        && repo
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    (repo_ok && tag_ok).then(|| format!("{repo}:{tag}"))
}

fn open_blob(source: &dyn BlobSource, blob: &BlobRef) -> Result<Box<dyn Read + Send>> {
    source.open(blob).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(format!("blob {}: {e}", blob.digest)),
        io::ErrorKind::InvalidInput => Error::InvalidArgument(e.to_string()),
        _ => Error::io(format!("opening blob {}", blob.digest), e),
    })
}

/// A copy failed: a bad blob is DataLoss, anything else the writer's I/O.
fn blob_error(blob: &BlobRef, e: io::Error, out: &Path) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData => Error::DataLoss(e.to_string()),
        _ => Error::io(
            format!("copying blob {} to {}", blob.digest, out.display()),
            e,
        ),
    }
}

fn hex_of(digest: &str) -> Result<String> {
    let d = crate::Digest::parse(digest)?;
    Ok(hex::encode(d.0))
}

fn blob_path(digest: &str) -> String {
    format!(
        "blobs/sha256/{}",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    )
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    let mut f = File::create(path).map_err(|e| Error::io(ctx(), e))?;
    f.write_all(bytes).map_err(|e| Error::io(ctx(), e))?;
    f.sync_all().map_err(|e| Error::io(ctx(), e))
}

/// ".<name>.tmp-<pid>-<n>" beside `target`, so the final rename stays on one
/// file system.
fn temp_sibling(target: &Path) -> Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{}: no file name", target.display())))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = format!(
        ".{}.tmp-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(target.with_file_name(tmp))
}

/// Makes the rename durable.
fn sync_parent(target: &Path) -> Result<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", parent.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_tags() {
        assert_eq!(docker_tag("foo:1").as_deref(), Some("foo:1"));
        assert_eq!(docker_tag("foo").as_deref(), Some("foo:latest"));
        assert_eq!(
            docker_tag("localhost:5000/a/b:v2").as_deref(),
            Some("localhost:5000/a/b:v2")
        );
        assert_eq!(docker_tag("Foo:1"), None);
        assert_eq!(docker_tag("a//b"), None);
        assert_eq!(docker_tag(""), None);
    }
}
