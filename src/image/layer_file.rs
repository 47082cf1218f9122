//! A lone layer file (tar, tar.gz or tar.zst): one image of one layer, no
//! manifest or config. Its digest is found by hashing it once at open.

use super::source::{Backing, FileSource};
use super::spec;
use super::verify::hash_reader;
use super::{BlobRef, Format, Image, Opened};
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// The layer media type the first bytes of a compressed layer say.
pub(crate) fn compressed_media_type(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some(spec::OCI_LAYER_GZIP)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(spec::OCI_LAYER_ZSTD)
    } else {
        None
    }
}

pub(crate) fn open(path: &Path, media_type: &str) -> Result<Opened> {
    let ctx = || format!("reading {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| Error::io(ctx(), e))?;
    let (digest, size) = hash_reader(file).map_err(|e| Error::io(ctx(), e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{}: not a file", path.display())))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => ".".into(),
    };
    let mut src = FileSource::new(Backing::Dir(dir));
    src.paths.insert(digest.clone(), file_name.clone());
    Ok(Opened {
        images: vec![Image {
            name: file_name,
            manifest: None,
            config: None,
            layers: vec![BlobRef {
                digest,
                size,
                media_type: media_type.to_string(),
            }],
            platform: None,
        }],
        source: Arc::new(src),
        format: Format::LayerFile,
    })
}
