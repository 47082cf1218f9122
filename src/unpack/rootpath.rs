//! Lexical path helpers with Go's `path/filepath` semantics, and `root_path`,
//! which resolves a path inside a root as if the root were `/`.
//!
//! Paths are bytes: layer names need not be UTF-8, and the string comparisons
//! containerd makes (`path == root`, prefix checks) must see the same bytes.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// More symlinks than this in one resolution is an error (a cycle, or an attack).
const MAX_LINKS: usize = 255;

pub(super) fn as_path(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// Go's `filepath.Clean`: collapse `//` and `.`, resolve `..` lexically (never
/// above `/` for an absolute path), `""` becomes `"."`.
pub(super) fn clean(p: &[u8]) -> Vec<u8> {
    let rooted = p.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    // Leading `..` that a relative path keeps.
    let mut ups = 0usize;
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !rooted {
                    ups += 1;
                }
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    if rooted {
        out.push(b'/');
    }
    for i in 0..ups {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(b"..");
    }
    for (i, c) in parts.iter().enumerate() {
        if i > 0 || ups > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// Go's `filepath.Split`: the directory part keeps its trailing slash.
pub(super) fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..=i], &p[i + 1..]),
        None => (&p[..0], p),
    }
}

/// Go's `filepath.Join` of two elements: empty ones are dropped, the result cleaned.
pub(super) fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Vec::new(),
        (true, false) => clean(b),
        (false, true) => clean(a),
        (false, false) => {
            let mut s = a.to_vec();
            s.push(b'/');
            s.extend_from_slice(b);
            clean(&s)
        }
    }
}

/// Go's `filepath.Dir` and `filepath.Base` of a cleaned, non-root path.
pub(super) fn dir_base(p: &[u8]) -> (Vec<u8>, &[u8]) {
    let (dir, base) = split(p);
    (clean(dir), base)
}

/// Resolves `p` inside `root` as if `root` were `/` (continuity's
/// `fs.RootPath`): `..` stops at the root, a symlink is replaced by its target
/// (absolute targets restart at the root), a missing component is taken as it
/// is. Any other lstat error (such as ENOTDIR under a file) is returned, as
/// continuity does. The result is `root` joined with the resolved path.
pub(super) fn root_path(root: &[u8], p: &[u8]) -> io::Result<Vec<u8>> {
    if p.is_empty() {
        return Ok(root.to_vec());
    }
    // Components still to resolve, next one last.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    push_components(&mut pending, p);
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut links = 0usize;
    while let Some(c) = pending.pop() {
        if c == b".." {
            resolved.pop();
            continue;
        }
        let mut real = root.to_vec();
        for r in resolved.iter().chain(std::iter::once(&c)) {
            real.push(b'/');
            real.extend_from_slice(r);
        }
        let meta = match std::fs::symlink_metadata(as_path(&real)) {
            Ok(m) => m,
            // Not there yet: a plain name; what follows cannot be a link either
            // (until a `..` climbs back into what exists).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                resolved.push(c);
                continue;
            }
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            resolved.push(c);
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::other(format!(
                "too many links resolving {}",
                String::from_utf8_lossy(p)
            )));
        }
        let target = std::fs::read_link(as_path(&real))?;
        let target = target.as_os_str().as_bytes();
        if target.first() == Some(&b'/') {
            resolved.clear();
        }
        push_components(&mut pending, target);
    }
    let mut rel = Vec::new();
    for r in &resolved {
        rel.push(b'/');
        rel.extend_from_slice(r);
    }
    if rel.is_empty() {
        rel.push(b'/');
    }
    Ok(join(root, &rel))
}

/// Pushes the components of `p` so that its first one is popped next.
fn push_components(pending: &mut Vec<Vec<u8>>, p: &[u8]) {
    for c in p.split(|&b| b == b'/').rev() {
        if !c.is_empty() && c != b"." {
            pending.push(c.to_vec());
        }
    }
}

/// Where a hardlink's target is, the way containerd finds it: the directory
/// part resolved inside the root, the base joined lexically; anything that
/// lands outside the root (by string prefix) becomes the root itself.
pub(super) fn hardlink_target(root: &[u8], linkname: &[u8]) -> io::Result<Vec<u8>> {
    let (dir, base) = split(linkname);
    let dir = root_path(root, dir)?;
    let target = join(&dir, base);
    Ok(if target.starts_with(root) {
        target
    } else {
        root.to_vec()
    })
}
