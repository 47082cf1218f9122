//! Blob sources backed by files: a directory (OCI layout, a layer file) or the
//! members of a tar (OCI archive, docker-archive), read in place.

use super::tar_index::{normalize, TarIndex};
use super::verify::VerifyingReader;
use super::{BlobRef, BlobSource};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where the files of an image input are.
#[derive(Debug)]
pub(crate) enum Backing {
    Dir(PathBuf),
    Tar { path: PathBuf, index: TarIndex },
}

impl Backing {
    pub fn location(&self) -> &Path {
        match self {
            Backing::Dir(p) | Backing::Tar { path: p, .. } => p,
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            Backing::Dir(root) => root.join(normalize(name)).is_file(),
            Backing::Tar { index, .. } => index.contains(name),
        }
    }

    /// The bytes of file `name` (relative, '/'-separated) and their length.
    pub fn open(&self, name: &str) -> io::Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Backing::Dir(root) => {
                // normalize() drops "..": a name from a manifest stays inside root.
                let f = File::open(root.join(normalize(name)))?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            Backing::Tar { path, index } => {
                let (offset, size) = index.find(name).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no member {name:?}"))
                })?;
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// Reads a small file (index.json, manifest.json) whole, up to `limit` bytes.
    pub fn read_small(&self, name: &str, limit: u64) -> io::Result<Vec<u8>> {
        let (r, len) = self.open(name)?;
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} is {len} bytes, more than the {limit} allowed"),
            ));
        }
        let mut buf = Vec::with_capacity(len as usize);
        r.take(limit).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Blobs by digest: at `blobs/<alg>/<hex>` unless `paths` names another file
/// (docker-archive's `<id>/layer.tar`, a lone layer file).
pub(crate) struct FileSource {
    pub backing: Backing,
    pub paths: HashMap<String, String>,
}

impl FileSource {
    pub fn new(backing: Backing) -> Self {
        FileSource {
            backing,
            paths: HashMap::new(),
        }
    }

    pub fn path_of(&self, digest: &str) -> Option<String> {
        if let Some(p) = self.paths.get(digest) {
            return Some(p.clone());
        }
        crate::Digest::parse(digest).ok()?;
        let (alg, hex) = digest.split_once(':')?;
        Some(format!("blobs/{alg}/{hex}"))
    }
}

impl super::ManifestSource for FileSource {
    fn has(&self, digest: &str) -> bool {
        self.path_of(digest)
            .is_some_and(|p| self.backing.exists(&p))
    }
}

impl BlobSource for FileSource {
    fn open(&self, blob: &BlobRef) -> io::Result<Box<dyn Read + Send>> {
        let path = self.path_of(&blob.digest).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("blob {:?}: not a sha256 digest", blob.digest),
            )
        })?;
        let (r, _) = self.backing.open(&path).map_err(|e| {
            let kind = e.kind();
            io::Error::new(
                kind,
                format!(
                    "blob {} ({path} in {}): {e}",
                    blob.digest,
                    self.backing.location().display()
                ),
            )
        })?;
        Ok(Box::new(VerifyingReader::new(r, &blob.digest, blob.size)))
    }
}
