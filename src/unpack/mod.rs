//! Applying a layer tar to a directory exactly as containerd's `archive.Apply`
//! does, so a snapshot made here matches one containerd would make.
//!
//! Every entry's parent is resolved inside the root (symlinks followed but
//! bounded by it), missing parents are created (copying a lower dir's
//! attributes for overlay), whiteouts are applied, and what the entry replaces
//! is removed first. Directory times are set again at the end, since creating
//! their children changed them. Blocking code: run it off the async runtime.

mod entry;
mod guard;
mod rootpath;
mod sparse;
mod whiteout;

#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use entry::{Header, Kind, Nanos};
use rootpath::{as_path, clean, join, root_path, split};
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// The root is a full view of the filesystem (bind/native snapshotter): remove what they hide.
    Remove,
    /// The root is an overlayfs upper dir: `.wh.NAME` becomes a 0/0 character device NAME (owned by the entry's uid/gid), an opaque marker sets xattr `trusted.overlay.opaque=y` on its directory.
    Overlay,
}

#[derive(Clone, Debug)]
pub struct ApplyOptions {
    pub whiteouts: Whiteouts,
    /// Set when the caller went away: the apply stops at the next entry.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Overlay lower dirs, topmost first: a parent directory created implicitly copies its mode, owner, times and xattrs (except `trusted.*`, as containerd) from the first lower dir holding it.
    pub parents: Vec<PathBuf>,
}

fn resolve_err(e: std::io::Error, what: &[u8]) -> Error {
    io_err(
        format!("resolving {} in the root", String::from_utf8_lossy(what)),
        e,
    )
}

/// `p` resolved inside `root` as a layer's names are (symlinks and `..`
/// never leave it): where a mount target under a temporary root goes.
pub fn resolve_in(root: &Path, p: &Path) -> Result<PathBuf> {
    let r = clean(root.as_os_str().as_bytes());
    let at = root_path(&r, p.as_os_str().as_bytes())
        .map_err(|e| resolve_err(e, p.as_os_str().as_bytes()))?;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&at)))
}

/// Applies the tar stream to `root`. Returns the sum of the entries' sizes (as containerd counts). Does NOT read past the end-of-archive marker necessarily; the caller drains the rest for hashing.
pub fn apply(root: &Path, r: &mut dyn Read, opts: &ApplyOptions) -> Result<u64> {
    let root = clean(root.as_os_str().as_bytes());
    let parents: Vec<Vec<u8>> = opts
        .parents
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let mut guarded = guard::Guard::new(r);
    let mut archive = tar::Archive::new(&mut guarded);
    let mut size = 0u64;
    // Paths written by this apply: an opaque marker keeps them.
    let mut unpacked: HashSet<Vec<u8>> = HashSet::new();
    let mut opaque_done: HashSet<Vec<u8>> = HashSet::new();
    // Directories, by entry name, with the times to set once all is written.
    let mut dirs: Vec<(Vec<u8>, Nanos, Nanos)> = Vec::new();

    let entries = archive
        .entries()
        .map_err(|e| io_err("reading the layer tar", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_err(e, "reading the layer tar"))?;
        if opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(Error::Cancelled("the apply was cancelled".into()));
        }
        let h = Header::read(&mut entry)?;
        size += h.size;

        // Cleaned for safety and so the root entry (`./`) is seen as the root.
        let name = clean(&h.name);
        let (dir, base) = split(&name);
        let ppath = root_path(&root, dir).map_err(|e| resolve_err(e, dir))?;
        let path = join(&ppath, &join(b"/", base));
        if path == root {
            continue;
        }
        if ppath != root {
            mkparent(&ppath, &root, &parents)?;
        }

        whiteout::validate(&path)?;
        let write = match opts.whiteouts {
            Whiteouts::Remove => whiteout::remove(&path, &unpacked, &mut opaque_done)?,
            Whiteouts::Overlay => whiteout::overlay(&path, h.uid, h.gid)?,
        };
        if !write {
            continue;
        }
        // Replace what is there, except that a directory merges into a directory.
        if let Some(m) = entry::lstat(&path)? {
            if !(m.is_dir() && h.kind == Kind::Dir) {
                entry::remove_all(&path)?;
            }
        }
        entry::create(&path, &root, &h, &mut entry)?;
        if h.kind == Kind::Dir {
            dirs.push((name, h.atime, h.mtime));
        }
        unpacked.insert(path);
    }

    guarded
        .check_end()
        .map_err(|e| read_err(e, "reading the layer tar"))?;
    // Like containerd, each directory is found again by its name.
    for (name, atime, mtime) in dirs {
        let path = root_path(&root, &name).map_err(|e| resolve_err(e, &name))?;
        entry::utimes(&path, atime, mtime)?;
    }
    Ok(size)
}

/// An error reading the layer: the store's own error when it came from
/// the store (its code: data loss, not found), a malformed archive as the
/// client's error, anything else as I/O.
fn read_err(e: std::io::Error, ctx: &str) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|i| i as _);
    while let Some(c) = cause {
        if let Some(s) = c.downcast_ref::<Error>() {
            return s.same_kind(format!("{ctx}: {s}"));
        }
        cause = c.source();
    }
    match e.kind() {
        std::io::ErrorKind::Other | std::io::ErrorKind::InvalidData => {
            Error::InvalidArgument(format!("invalid layer archive: {e}"))
        }
        _ => io_err(ctx, e),
    }
}

/// I/O on the snapshot: a full disk there is named as the snapshot's, not
/// the data directory's (`Error::io`'s wording).
fn io_err(ctx: impl Into<String>, e: std::io::Error) -> Error {
    let context = ctx.into();
    if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
        return Error::ResourceExhausted(format!(
            "the filesystem holding the snapshot is full: {context}: {e}"
        ));
    }
    Error::Io { context, source: e }
}

/// Makes sure `path` (under `root`) is a directory, creating it and its
/// missing ancestors with mode 0755. A directory created here takes its
/// owner, mode, times and xattrs from the first lower dir in `parents`
/// holding one at the same place.
fn mkparent(path: &[u8], root: &[u8], parents: &[Vec<u8>]) -> Result<()> {
    if let Some(m) = entry::lstat(path)? {
        if m.is_dir() {
            return Ok(());
        }
        return Err(io_err(
            format!("mkparent {}", as_path(path).display()),
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let mut i = path.len();
    while i > root.len() && path[i - 1] != b'/' {
        i -= 1;
    }
    if i > root.len() + 1 {
        mkparent(&path[..i - 1], root, parents)?;
    }
    let made = std::fs::create_dir(as_path(path))
        .map_err(|e| io_err(format!("creating directory {}", as_path(path).display()), e));
    if let Err(e) = made.and_then(|()| entry::chmod(path, 0o755)) {
        // Someone else made it meanwhile: fine, and nothing to copy.
        if entry::lstat(path)
            .ok()
            .flatten()
            .is_some_and(|m| m.is_dir())
        {
            return Ok(());
        }
        return Err(e);
    }
    let rel = &path[root.len()..];
    for lower in parents {
        let lpath = root_path(lower, rel).map_err(|e| resolve_err(e, rel))?;
        match entry::lstat(&lpath)? {
            Some(m) if m.is_dir() => return entry::copy_dir_info(&lpath, &m, path),
            // Replaced by a non-directory up there: keep the defaults.
            Some(_) => break,
            None => {}
        }
    }
    Ok(())
}
