//! Container images as people have them on disk: OCI image layouts, OCI
//! archives (a tar of a layout), docker-archives (`docker save`), and lone
//! layer files. [`open`] finds the images in one, picking a platform out of
//! image indexes; [`BlobSource`] gives their blobs back, verified against
//! their digests as they are read; [`export`] writes images out again as an
//! OCI layout or a docker-archive with every blob byte for byte unchanged.
//!
//! What an [`Image`] holds for each input:
//! - OCI layout / OCI archive (and a docker-archive that has an index.json,
//!   as docker ≥ 25 writes): the manifest, config and layers its index names.
//! - legacy docker-archive (manifest.json only): `manifest` is `None` (docker's
//!   manifest.json is not a content-addressed manifest); config and layers as
//!   saved, layer digests from the file names or the config's diff_ids.
//! - a single layer file (tar, tar.gz, tar.zst): one image with that one
//!   layer, and `manifest` and `config` both `None`.
//!
//! Tar inputs are never extracted: their member offsets are indexed once and
//! blobs are read in place. Manifests, indexes and configs are read whole
//! (bounded to [`MAX_JSON`] bytes), checked against their digest, then parsed.

mod archive;
pub mod export;
mod layer_file;
mod oci_layout;
pub mod platform;
pub mod record;
mod source;
pub mod spec;
mod stream_reader;
mod tar_index;
mod tar_write;
pub mod verify;

pub use export::{write_docker_archive, write_oci_layout};
pub use platform::Platform;
pub use stream_reader::StreamReader;
pub use verify::VerifyingReader;

use crate::error::{Error, Result};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// The largest manifest, index, config or index.json read (they are read whole).
pub const MAX_JSON: u64 = 32 << 20;

/// A content-addressed blob: what an OCI descriptor says of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// "sha256:<64 hex>"
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// One single-platform image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The ref name: the index entry's `io.containerd.image.name` or
    /// `org.opencontainers.image.ref.name` annotation, docker's RepoTags[0],
    /// or else the input's file name (with "-<n>" when several are unnamed).
    pub name: String,
    /// `None` for a legacy docker-archive and a lone layer file (see the module doc).
    pub manifest: Option<BlobRef>,
    /// `None` only for a lone layer file.
    pub config: Option<BlobRef>,
    pub layers: Vec<BlobRef>,
    /// "os/arch[/variant]" from the index entry or, lacking one, the config.
    pub platform: Option<String>,
}

/// What kind of input [`open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OciLayout,
    OciArchive,
    DockerArchive,
    LayerFile,
    /// A registry (`docker://`), read through `remote`.
    Registry,
}

pub trait BlobSource: Send + Sync {
    /// A reader of the blob's bytes that fails (io::ErrorKind::InvalidData,
    /// message naming the digest) at EOF if they do not hash to `digest` or
    /// have the wrong size. A blob the input does not hold is `NotFound`.
    fn open(&self, blob: &BlobRef) -> io::Result<Box<dyn Read + Send>>;
}

/// A source the manifest resolver reads from: it also says whether it has a
/// blob (a registry answers true and lets the fetch find out).
pub(crate) trait ManifestSource: BlobSource {
    fn has(&self, digest: &str) -> bool;
}

pub(crate) use oci_layout::resolve_root;

pub struct Opened {
    pub images: Vec<Image>,
    pub source: Arc<dyn BlobSource>,
    pub format: Format,
}

/// Detects the format of `path` (see the module doc) and finds its images,
/// taking from each image index the manifest for `platform`.
pub fn open(path: &Path, platform: &Platform) -> Result<Opened> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(format!("{}: no such file", path.display())),
        _ => Error::io(format!("reading {}", path.display()), e),
    })?;
    if meta.is_dir() {
        return archive::open_dir(path, platform);
    }
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut magic))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if let Some(media_type) = layer_file::compressed_media_type(&magic[..n]) {
        return layer_file::open(path, media_type);
    }
    archive::open_tar(path, platform)
}

/// Reads a whole small blob (a manifest, index or config), verified against
/// its digest: `what` and `image` name it in errors.
pub fn read_json_blob(
    source: &dyn BlobSource,
    blob: &BlobRef,
    what: &str,
    image: &str,
) -> Result<Vec<u8>> {
    if blob.size > MAX_JSON {
        return Err(Error::InvalidArgument(format!(
            "image {image}: {what} {} is {} bytes, more than the {MAX_JSON} allowed",
            blob.digest, blob.size
        )));
    }
    let fail = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(format!(
            "image {image}: {what} {} is missing: {e}",
            blob.digest
        )),
        io::ErrorKind::InvalidData => Error::DataLoss(format!("image {image}: {what}: {e}")),
        io::ErrorKind::InvalidInput => {
            Error::InvalidArgument(format!("image {image}: {what}: {e}"))
        }
        _ => Error::io(format!("image {image}: reading {what} {}", blob.digest), e),
    };
    let mut buf = Vec::with_capacity(blob.size as usize);
    source
        .open(blob)
        .map_err(fail)?
        .read_to_end(&mut buf)
        .map_err(fail)?;
    Ok(buf)
}

/// Parses JSON, an error naming `file` (InvalidArgument) if it is malformed.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("{file}: malformed JSON: {e}")))
}

/// Checks a descriptor's digest is one this module can verify.
pub(crate) fn blob_ref(d: &spec::Descriptor, image: &str, what: &str) -> Result<BlobRef> {
    crate::Digest::parse(&d.digest)
        .map_err(|e| Error::InvalidArgument(format!("image {image}: {what}: {e}")))?;
    Ok(BlobRef {
        digest: d.digest.clone(),
        size: d.size,
        media_type: d.media_type.clone(),
    })
}

/// The name an unnamed image takes: the input's file name, less ".tar".
pub fn default_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_string());
    match name.strip_suffix(".tar") {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => name,
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
