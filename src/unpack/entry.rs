//! One tar entry: its header read the way Go's `archive/tar` presents it,
//! creating it on disk, and the few syscalls the module makes.

use super::io_err;
use super::rootpath::{as_path, hardlink_target};
use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

/// Nanoseconds since the Unix epoch.
pub(super) type Nanos = i128;

/// containerd bounds times to what a Go `time.Time` holds in `UnixNano`.
const MAX_NANOS: Nanos = i64::MAX as Nanos;
const NANOS: Nanos = 1_000_000_000;
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Reg,
    Dir,
    Link,
    Symlink,
    Char,
    Block,
    Fifo,
    /// A PAX global header: it goes through the path steps, then creates nothing.
    Global,
    Other(u8),
}

/// What apply needs from one header, PAX records merged as Go merges them.
pub(super) struct Header {
    pub kind: Kind,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    /// The size containerd adds up (0 for a global header, as Go reports it).
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Bounded times to set: later of atime and mtime, and mtime.
    pub atime: Nanos,
    pub mtime: Nanos,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A GNU sparse file in PAX form: expanded as it is written.
    pub sparse: Option<super::sparse::Sparse>,
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument(format!("invalid layer archive: {msg}"))
}

impl Header {
    pub(super) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Header> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| bad(e.to_string()))? {
            for ext in exts {
                let ext = ext.map_err(|e| bad(format!("PAX record: {e}")))?;
                pax.push((ext.key_bytes().to_vec(), ext.value_bytes().to_vec()));
            }
        }
        // Go ignores an empty PAX value for the fields it merges; the last record wins.
        let rec = |k: &[u8]| -> Option<&[u8]> {
            pax.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_slice())
                .filter(|v| !v.is_empty())
        };
        let h = entry.header();
        let flag = h.entry_type().as_byte();

        let name = if flag == b'g' {
            // Go names a global header from its own records.
            rec(b"path").map_or_else(|| h.path_bytes().into_owned(), <[u8]>::to_vec)
        } else {
            let mut n = entry.path_bytes().into_owned();
            if n.is_empty() && rec(b"path").is_none() {
                n = h.path_bytes().into_owned();
            }
            n
        };
        let sparse = super::sparse::from_pax(&pax).map_err(|e| bad(e.to_string()))?;
        let name = match &sparse {
            Some((_, Some(real))) => real.clone(),
            _ => name,
        };
        let name = cut_nul(name);
        let mut link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        if link.is_empty() && rec(b"linkpath").is_none() {
            link = h
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
        }
        let link = cut_nul(link);

        let kind = match flag {
            b'0' => Kind::Reg,
            // Legacy archives mark a directory with a trailing slash.
            0 if name.ends_with(b"/") => Kind::Dir,
            0 => Kind::Reg,
            b'1' => Kind::Link,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'g' => Kind::Global,
            // Includes GNU sparse 'S': Go reports it as 'S' and containerd refuses it.
            t => Kind::Other(t),
        };

        // Numeric fields are parsed as Go does (an all-NUL field is 0).
        let old = h.as_old();
        let num = |what: &str, field: &[u8]| {
            go_numeric(field).ok_or_else(|| bad(format!("{what} field of {}", lossy(&name))))
        };
        let id = |k: &[u8], field: &[u8], what: &str| -> Result<u32> {
            let v = match rec(k) {
                Some(v) => parse_i64(v).ok_or_else(|| bad(format!("PAX {what}")))?,
                None => num(what, field)?,
            };
            // Go keeps the low bits of an id that does not fit; so does chown.
            Ok(v as u32)
        };
        let uid = id(b"uid", &old.uid, "uid")?;
        let gid = id(b"gid", &old.gid, "gid")?;
        let mode = num("mode", &old.mode)? as u32 & 0o7777;

        // A V7 header has no device fields: Go reads them as 0.
        let (dev_major, dev_minor) = match (h.as_ustar(), h.as_gnu()) {
            _ if !matches!(kind, Kind::Char | Kind::Block) => (0, 0),
            (Some(u), _) => (
                num("devmajor", &u.dev_major)?,
                num("devminor", &u.dev_minor)?,
            ),
            (_, Some(g)) => (
                num("devmajor", &g.dev_major)?,
                num("devminor", &g.dev_minor)?,
            ),
            _ => (0, 0),
        };
        let dev = |v: i64| {
            u32::try_from(v).map_err(|_| {
                bad(format!(
                    "device number {v} out of range for {}",
                    lossy(&name)
                ))
            })
        };
        let (dev_major, dev_minor) = (dev(dev_major)?, dev(dev_minor)?);

        let mtime = match rec(b"mtime") {
            Some(v) => parse_pax_time(v).ok_or_else(|| bad("PAX mtime".into()))?,
            None => num("mtime", &old.mtime)? as Nanos * NANOS,
        };
        let atime = match rec(b"atime") {
            Some(v) => Some(parse_pax_time(v).ok_or_else(|| bad("PAX atime".into()))?),
            // Go reads a GNU header's atime field when it is set.
            None => h
                .as_gnu()
                .filter(|g| g.atime[0] != 0)
                .and_then(|g| go_numeric(&g.atime))
                .map(|s| s as Nanos * NANOS),
        };
        let atime = bound(atime.map_or(mtime, |a| a.max(mtime)));
        let mtime = bound(mtime);

        // Go keeps one value per key: the last.
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in &pax {
            if let Some(key) = k.strip_prefix(XATTR_PREFIX) {
                match xattrs.iter_mut().find(|(x, _)| x == key) {
                    Some(slot) => slot.1 = v.clone(),
                    None => xattrs.push((key.to_vec(), v.clone())),
                }
            }
        }

        let sparse = match sparse {
            Some((s, _)) if kind == Kind::Reg => Some(s),
            Some(_) => return Err(bad(format!("{} is sparse but no file", lossy(&name)))),
            None => None,
        };
        let size = match (&sparse, kind) {
            (_, Kind::Global) => 0,
            (Some(s), _) => s.real_size,
            _ => entry.size(),
        };
        Ok(Header {
            kind,
            name,
            link,
            size,
            mode,
            uid,
            gid,
            dev_major,
            dev_minor,
            atime,
            mtime,
            xattrs,
            sparse,
        })
    }
}

/// Go's C-string parse of a name: it ends at the first NUL.
fn cut_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Go's tar `parseNumeric`: base-256 (two's complement) when the high bit
/// is set, else octal padded with spaces and NULs, where nothing means 0.
fn go_numeric(b: &[u8]) -> Option<i64> {
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        let inv = if b[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let c = if i == 0 { (c ^ inv) & 0x7f } else { c ^ inv };
            if x >> 56 > 0 {
                return None;
            }
            x = x << 8 | u64::from(c);
        }
        if x >> 63 > 0 {
            return None;
        }
        return Some(if inv == 0xff { !(x as i64) } else { x as i64 });
    }
    let start = b.iter().position(|&c| c != b' ' && c != 0);
    let Some(start) = start else { return Some(0) };
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |e| e + 1);
    let s = &b[start..end];
    let s = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
    let s = std::str::from_utf8(s).ok()?;
    // ParseUint: digits only (a sign is an error).
    if s.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(s, 8)
        .ok()
        .and_then(|v| i64::try_from(v).ok())
}

/// Go's `strconv.ParseInt(s, 10, 64)`.
fn parse_i64(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time, `[-]seconds[.fraction]`, to nanoseconds (digits past nine dropped).
pub(super) fn parse_pax_time(v: &[u8]) -> Option<Nanos> {
    let (secs, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let s = parse_i64(secs)? as Nanos;
    let Some(frac) = frac.filter(|f| !f.is_empty()) else {
        return Some(s * NANOS);
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: Nanos = 0;
    for i in 0..9 {
        n = n * 10 + frac.get(i).map_or(0, |d| Nanos::from(d - b'0'));
    }
    Some(if secs.first() == Some(&b'-') {
        s * NANOS - n
    } else {
        s * NANOS + n
    })
}

/// containerd's `boundTime`: a time Go cannot hold as `UnixNano`, or one
/// before the epoch, becomes the epoch.
fn bound(t: Nanos) -> Nanos {
    if !(0..=MAX_NANOS).contains(&t) {
        0
    } else {
        t
    }
}

/// Creates the entry at `path` (which does not exist, or is a directory when
/// the entry is one), then sets owner, xattrs, mode and times.
pub(super) fn create<R: Read>(path: &[u8], root: &[u8], h: &Header, data: &mut R) -> Result<()> {
    let p = as_path(path);
    let ctx = |what: &str| format!("{what} {}", p.display());
    match h.kind {
        Kind::Dir => {
            if !lstat(path)?.is_some_and(|m| m.is_dir()) {
                std::fs::create_dir(p).map_err(|e| io_err(ctx("creating directory"), e))?;
                chmod(path, h.mode)?;
            }
        }
        Kind::Reg => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(h.mode)
                .open(p)
                .map_err(|e| io_err(ctx("creating"), e))?;
            // The umask must not narrow the mode.
            f.set_permissions(std::fs::Permissions::from_mode(h.mode))
                .map_err(|e| io_err(ctx("chmod"), e))?;
            let n = match &h.sparse {
                Some(s) => super::sparse::Expanded::new(data, s)
                    .and_then(|mut ex| copy_body(&mut ex, &mut f)),
                None => copy_body(data, &mut f),
            }
            .map_err(|e| super::read_err(e, &ctx("writing")))?;
            if n != h.size {
                return Err(bad(format!(
                    "file {} incomplete: expected {} bytes, wrote {n}",
                    p.display(),
                    h.size
                )));
            }
        }
        Kind::Char | Kind::Block | Kind::Fifo => {
            let ty = match h.kind {
                Kind::Char => libc::S_IFCHR,
                Kind::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let dev = libc::makedev(h.dev_major, h.dev_minor);
            mknod(path, h.mode | ty, dev)?;
        }
        Kind::Link => {
            let target = hardlink_target(root, &h.link)
                .map_err(|e| io_err(ctx("resolving the hardlink target of"), e))?;
            let (t, n) = (cstr(&target)?, cstr(path)?);
            // flags 0: a link to a symlink links the symlink itself.
            let rc =
                unsafe { libc::linkat(libc::AT_FDCWD, t.as_ptr(), libc::AT_FDCWD, n.as_ptr(), 0) };
            check(rc, || {
                format!("linking {} to {}", p.display(), as_path(&target).display())
            })?;
        }
        Kind::Symlink => std::os::unix::fs::symlink(as_path(&h.link), p)
            .map_err(|e| io_err(ctx("creating symlink"), e))?,
        Kind::Global => return Ok(()),
        Kind::Other(t) => {
            return Err(bad(format!(
                "unhandled tar header type {t} ({:?}) for {}",
                t as char,
                String::from_utf8_lossy(&h.name)
            )))
        }
    }

    lchown(path, h.uid, h.gid)?;
    for (k, v) in &h.xattrs {
        set_archive_xattr(path, k, v)?;
    }
    // After lchown, which clears setuid and setgid. A symlink has no mode of
    // its own (nor has a hardlink to one).
    if !lstat(path)?.is_some_and(|m| m.file_type().is_symlink()) {
        chmod(path, h.mode)?;
    }
    utimes(path, h.atime, h.mtime)
}

/// An xattr from the archive. Like containerd: `trusted.*` is never taken
/// from a layer, ENOTSUP is skipped, and so is EPERM for `user.*` on what is
/// neither a file nor a directory (the kernel allows it only on those).
fn set_archive_xattr(path: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
    let name = String::from_utf8_lossy(key);
    let p = as_path(path).display();
    if key.starts_with(b"trusted.") {
        tracing::warn!("ignored xattr {name} on {p}: admin attributes from a layer are not set");
        return Ok(());
    }
    let Err(e) = lsetxattr(path, key, value, 0) else {
        return Ok(());
    };
    if e.raw_os_error() == Some(libc::EPERM) && key.starts_with(b"user.") {
        if let Ok(Some(m)) = lstat(path) {
            if !m.is_file() && !m.is_dir() {
                tracing::warn!("ignored xattr {name} on {p}: {e}");
                return Ok(());
            }
        }
    }
    if e.raw_os_error() == Some(libc::ENOTSUP) {
        tracing::warn!("ignored xattr {name} on {p}: {e}");
        return Ok(());
    }
    Err(io_err(format!("setting xattr {name} on {p}"), e))
}

/// Copies a lower directory's owner, mode, times and xattrs (but no
/// `trusted.*` one) onto a directory just created as an implicit parent.
pub(super) fn copy_dir_info(lower: &[u8], meta: &Metadata, path: &[u8]) -> Result<()> {
    if let Err(e) = lchown(path, meta.uid(), meta.gid()) {
        // Some filesystems (NFS) refuse even a chown that changes nothing.
        let same = lstat(path)?.is_some_and(|m| m.uid() == meta.uid() && m.gid() == meta.gid());
        if !same {
            return Err(e);
        }
    }
    chmod(path, meta.mode() & 0o7777)?;
    let at = meta.atime() as Nanos * NANOS + meta.atime_nsec() as Nanos;
    let mt = meta.mtime() as Nanos * NANOS + meta.mtime_nsec() as Nanos;
    utimes(path, at, mt)?;

    let ignorable =
        |e: &io::Error| matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA));
    let keys = match llistxattr(lower) {
        Ok(k) => k,
        Err(e) if ignorable(&e) => return Ok(()),
        Err(e) => {
            return Err(io_err(
                format!("listing xattrs of {}", as_path(lower).display()),
                e,
            ))
        }
    };
    for key in keys.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if key.starts_with(b"trusted.") {
            continue;
        }
        let value = match lgetxattr(lower, key) {
            Ok(v) => v,
            Err(e) if ignorable(&e) => continue,
            Err(e) => {
                return Err(io_err(
                    format!("reading xattr of {}", as_path(lower).display()),
                    e,
                ))
            }
        };
        match lsetxattr(path, key, &value, libc::XATTR_CREATE) {
            Err(e) if !ignorable(&e) && e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(io_err(
                    format!(
                        "copying xattr {} to {}",
                        String::from_utf8_lossy(key),
                        as_path(path).display()
                    ),
                    e,
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

// The syscalls, on byte paths.

pub(super) fn cstr(p: &[u8]) -> Result<CString> {
    CString::new(p).map_err(|_| {
        bad(format!(
            "path with a NUL byte: {}",
            String::from_utf8_lossy(p)
        ))
    })
}

fn check(rc: libc::c_int, ctx: impl FnOnce() -> String) -> Result<()> {
    if rc < 0 {
        return Err(io_err(ctx(), io::Error::last_os_error()));
    }
    Ok(())
}

/// lstat; `None` when the path does not exist (ENOENT only, as Go's IsNotExist).
pub(super) fn lstat(path: &[u8]) -> Result<Option<Metadata>> {
    match std::fs::symlink_metadata(as_path(path)) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(io_err(format!("lstat {}", as_path(path).display()), e)),
    }
}

pub(super) fn lchown(path: &[u8], uid: u32, gid: u32) -> Result<()> {
    let c = cstr(path)?;
    let rc = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
    check(rc, || {
        format!("lchown {} to {uid}:{gid}", as_path(path).display())
    })
}

pub(super) fn chmod(path: &[u8], mode: u32) -> Result<()> {
    let c = cstr(path)?;
    let rc = unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) };
    check(rc, || {
        format!("chmod {:o} {}", mode, as_path(path).display())
    })
}

pub(super) fn mknod(path: &[u8], mode: u32, dev: libc::dev_t) -> Result<()> {
    let c = cstr(path)?;
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    check(rc, || format!("mknod {}", as_path(path).display()))
}

/// Sets atime and mtime of the path itself (a symlink is not followed).
pub(super) fn utimes(path: &[u8], atime: Nanos, mtime: Nanos) -> Result<()> {
    let ts = |t: Nanos| libc::timespec {
        tv_sec: t.div_euclid(NANOS) as libc::time_t,
        tv_nsec: t.rem_euclid(NANOS) as _,
    };
    let times = [ts(atime), ts(mtime)];
    let c = cstr(path)?;
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(rc, || {
        format!("setting the times of {}", as_path(path).display())
    })
}

fn xattr_name(key: &[u8]) -> io::Result<CString> {
    CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(super) fn lsetxattr(path: &[u8], key: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let p = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let k = xattr_name(key)?;
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// setxattr, following a symlink (overlay's opaque marker is set this way).
pub(super) fn setxattr(path: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    let p = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let k = xattr_name(key)?;
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Calls a size-then-fill xattr syscall until the buffer is big enough.
fn read_sized(mut call: impl FnMut(*mut libc::c_char, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        let m = call(buf.as_mut_ptr().cast(), buf.len());
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        // Grew between the two calls: ask again.
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

pub(super) fn llistxattr(path: &[u8]) -> io::Result<Vec<u8>> {
    let p = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    read_sized(|buf, len| unsafe { libc::llistxattr(p.as_ptr(), buf, len) })
}

pub(super) fn lgetxattr(path: &[u8], key: &[u8]) -> io::Result<Vec<u8>> {
    let p = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let k = xattr_name(key)?;
    read_sized(|buf, len| unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.cast(), len) })
}

/// Go's `os.RemoveAll` without following symlinks: a missing path is fine.
pub(super) fn remove_all(path: &[u8]) -> Result<()> {
    let p = as_path(path);
    let r = match lstat(path)? {
        None => return Ok(()),
        Some(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Some(_) => std::fs::remove_file(p),
    };
    match r {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
            Err(io_err(format!("removing {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

/// Copies a file's body in large writes (io::copy's 8 KiB buffer makes a
/// syscall per 8 KiB, a good part of an unpack's time on big layers).
fn copy_body<R: Read>(data: &mut R, f: &mut std::fs::File) -> io::Result<u64> {
    use std::io::Write;
    const BUF: usize = 256 * 1024;
    thread_local!(static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    BUFFER.with(|b| {
        let mut buf = b.borrow_mut();
        buf.resize(BUF, 0);
        let mut total = 0u64;
        loop {
            // Fill the buffer as far as the reader goes before writing.
            let mut filled = 0;
            while filled < BUF {
                match data.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            f.write_all(&buf[..filled])?;
            total += filled as u64;
        }
    })
}
