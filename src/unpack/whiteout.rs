//! Whiteout entries: `.wh.NAME` hides NAME, `.wh..wh..opq` hides everything
//! the lower layers put in its directory.

use super::entry::{lchown, lstat, mknod, remove_all, setxattr};
use super::io_err;
use super::rootpath::{as_path, dir_base, join};
use crate::error::{Error, Result};
use std::collections::HashSet;

const PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// A `.wh.` name must hide something inside its own directory (not `..`,
/// `.` or nothing).
pub(super) fn validate(path: &[u8]) -> Result<()> {
    let (dir, base) = dir_base(path);
    if base == OPAQUE {
        return Ok(());
    }
    if let Some(hidden) = base.strip_prefix(PREFIX) {
        let target = join(&dir, hidden);
        let mut dir = dir;
        if !dir.ends_with(b"/") {
            dir.push(b'/');
        }
        if !target.starts_with(&dir) {
            return Err(Error::InvalidArgument(format!(
                "invalid layer archive: invalid whiteout name: {}",
                String::from_utf8_lossy(base)
            )));
        }
    }
    Ok(())
}

fn failed(path: &[u8], e: Error) -> Error {
    let name = as_path(path).display().to_string();
    match e {
        Error::Io { context, source } => Error::Io {
            context: format!("whiteout {name}: {context}"),
            source,
        },
        e => e,
    }
}

/// Applies a whiteout to a full view of the filesystem by removing what it
/// hides. Returns whether `path` is an ordinary entry to write.
///
/// An opaque marker removes everything under its directory that this apply
/// did not unpack (`unpacked`), descending into unpacked directories; a
/// second marker for the same directory does nothing.
pub(super) fn remove(
    path: &[u8],
    unpacked: &HashSet<Vec<u8>>,
    opaque_done: &mut HashSet<Vec<u8>>,
) -> Result<bool> {
    let (dir, base) = dir_base(path);
    if base == OPAQUE {
        if !opaque_done.insert(dir.clone()) {
            return Ok(false);
        }
        if lstat(&dir).map_err(|e| failed(path, e))?.is_none() {
            return Err(io_err(
                format!("whiteout {}", as_path(path).display()),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        clear_dir(&dir, unpacked).map_err(|e| failed(path, e))?;
        return Ok(false);
    }
    if let Some(hidden) = base.strip_prefix(PREFIX) {
        remove_all(&join(&dir, hidden)).map_err(|e| failed(path, e))?;
        return Ok(false);
    }
    Ok(true)
}

/// Removes every child of `dir` (in name order) not in `keep`; a kept
/// directory is cleared the same way. Something already gone is skipped.
fn clear_dir(dir: &[u8], keep: &HashSet<Vec<u8>>) -> Result<()> {
    let entries = match std::fs::read_dir(as_path(dir)) {
        Ok(rd) => rd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(io_err(format!("reading {}", as_path(dir).display()), e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| io_err(format!("reading {}", as_path(dir).display()), e))?;
        names.push(std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec());
    }
    names.sort();
    for name in names {
        let child = join(dir, &name);
        let Some(meta) = lstat(&child)? else { continue };
        if !keep.contains(&child) {
            remove_all(&child)?;
        } else if meta.is_dir() {
            clear_dir(&child, keep)?;
        }
    }
    Ok(())
}

/// Applies a whiteout to an overlayfs upper dir: `.wh.NAME` becomes a 0/0
/// character device owned by the entry's ids, an opaque marker becomes
/// `trusted.overlay.opaque=y` on its directory. Returns whether `path` is an
/// ordinary entry to write.
pub(super) fn overlay(path: &[u8], uid: u32, gid: u32) -> Result<bool> {
    let (dir, base) = dir_base(path);
    if base == OPAQUE {
        setxattr(&dir, b"trusted.overlay.opaque", b"y").map_err(|e| {
            io_err(
                format!(
                    "setting trusted.overlay.opaque on {}",
                    as_path(&dir).display()
                ),
                e,
            )
        })?;
        return Ok(false);
    }
    if let Some(hidden) = base.strip_prefix(PREFIX) {
        let target = join(&dir, hidden);
        mknod(&target, libc::S_IFCHR, 0).map_err(|e| failed(path, e))?;
        lchown(&target, uid, gid).map_err(|e| failed(path, e))?;
        return Ok(false);
    }
    Ok(true)
}
