//! Where a layer is applied: the mounts a snapshotter hands the differ,
//! treated as containerd's own differ treats them. One overlay mount with an
//! `upperdir` is applied straight into that directory, whiteouts in overlay
//! form, with the lower dirs as parents; anything else (a bind mount of a
//! `native` snapshot, an overlay snapshot's first layer) is mounted on a
//! private temporary directory, applied there with whiteouts removing what
//! they hide, and unmounted on every path out. mount(2) is called through libc
//! (the options table below is mount(8)'s); no crate wraps these few calls.

use crate::error::{Error, Result};
use crate::proto::containerd::types::Mount;
use crate::unpack::Whiteouts;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Names the temporary mount points of one daemon.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The directory a layer is applied to, mounted for as long as this lives.
pub struct Root {
    pub path: PathBuf,
    pub whiteouts: Whiteouts,
    pub parents: Vec<PathBuf>,
    /// Mount points to undo (innermost last) and the directory to remove.
    mounted: Vec<PathBuf>,
    temp: Option<PathBuf>,
}

impl Root {
    /// Prepares the root for `mounts`, mounting under `tmp` when needed.
    pub fn prepare(mounts: &[Mount], tmp: &Path) -> Result<Root> {
        if let [m] = mounts {
            // A `userxattr` overlay (rootless) keeps whiteouts in `user.*`
            // xattrs: applied through the mounted overlay, as containerd does.
            if m.r#type == "overlay" && !m.options.iter().any(|o| o == "userxattr") {
                if let Some(upper) = option(&m.options, "upperdir=") {
                    let parents = option(&m.options, "lowerdir=")
                        .map(|l| l.split(':').map(PathBuf::from).collect())
                        .unwrap_or_default();
                    return Ok(Root {
                        path: PathBuf::from(upper),
                        whiteouts: Whiteouts::Overlay,
                        parents,
                        mounted: Vec::new(),
                        temp: None,
                    });
                }
            }
        }
        if mounts.is_empty() {
            return Err(Error::InvalidArgument(
                "no mounts to apply the layer to".into(),
            ));
        }
        // Only root may walk into a snapshot being written (setuid files
        // exist before their owner is set).
        private_dir(tmp, true)?;
        let dir = tmp.join(format!(
            "apply-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        private_dir(&dir, false)?;
        let mut root = Root {
            path: dir.clone(),
            whiteouts: Whiteouts::Remove,
            parents: Vec::new(),
            mounted: Vec::new(),
            temp: Some(dir.clone()),
        };
        for m in mounts {
            // A target never leads out of the temporary root.
            let at = crate::unpack::resolve_in(&dir, Path::new(&m.target))?;
            // `root` unmounts what was mounted so far when this fails.
            mount(m, &at)?;
            root.mounted.push(at);
        }
        Ok(root)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for at in self.mounted.drain(..).rev() {
            unmount(&at);
        }
        if let Some(dir) = self.temp.take() {
            if let Err(e) = std::fs::remove_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a temporary mount point");
            }
        }
    }
}

/// The last value of an option, as mount(8) and containerd take it.
fn option<'a>(options: &'a [String], prefix: &str) -> Option<&'a str> {
    options.iter().rev().find_map(|o| o.strip_prefix(prefix))
}

/// Creates `dir` (and, with `parents`, its ancestors) mode 0700; an existing
/// one is made 0700.
fn private_dir(dir: &Path, parents: bool) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let made = std::fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o700)
        .create(dir);
    made.and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{s:?} contains a NUL byte")))
}

/// mount(8)'s flag options: (name, flag, set it or clear it).
const FLAGS: &[(&str, libc::c_ulong, bool)] = &[
    ("async", libc::MS_SYNCHRONOUS, false),
    ("atime", libc::MS_NOATIME, false),
    ("bind", libc::MS_BIND, true),
    ("defaults", 0, false),
    ("dev", libc::MS_NODEV, false),
    ("diratime", libc::MS_NODIRATIME, false),
    ("dirsync", libc::MS_DIRSYNC, true),
    ("exec", libc::MS_NOEXEC, false),
    ("mand", libc::MS_MANDLOCK, true),
    ("noatime", libc::MS_NOATIME, true),
    ("nodev", libc::MS_NODEV, true),
    ("nodiratime", libc::MS_NODIRATIME, true),
    ("noexec", libc::MS_NOEXEC, true),
    ("nomand", libc::MS_MANDLOCK, false),
    ("norelatime", libc::MS_RELATIME, false),
    ("nostrictatime", libc::MS_STRICTATIME, false),
    ("nosuid", libc::MS_NOSUID, true),
    ("rbind", libc::MS_BIND | libc::MS_REC, true),
    ("relatime", libc::MS_RELATIME, true),
    ("remount", libc::MS_REMOUNT, true),
    ("ro", libc::MS_RDONLY, true),
    ("rw", libc::MS_RDONLY, false),
    ("strictatime", libc::MS_STRICTATIME, true),
    ("suid", libc::MS_NOSUID, false),
    ("sync", libc::MS_SYNCHRONOUS, true),
];

/// Propagation options, applied by a second call.
const PROPAGATION: &[(&str, libc::c_ulong)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | libc::MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | libc::MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | libc::MS_REC),
];

/// Mount flags, propagation flags and the data string of an option list.
fn parse(options: &[String]) -> (libc::c_ulong, libc::c_ulong, String) {
    let (mut flags, mut prop, mut data) = (0, 0, Vec::new());
    for o in options {
        if let Some(&(_, f, set)) = FLAGS.iter().find(|(n, _, _)| n == o) {
            if set {
                flags |= f;
            } else {
                flags &= !f;
            }
        } else if let Some(&(_, f)) = PROPAGATION.iter().find(|(n, _)| n == o) {
            prop |= f;
        } else {
            data.push(o.as_str());
        }
    }
    (flags, prop, data.join(","))
}

fn sys_mount(src: &str, at: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<()> {
    let (src_c, at_c) = (cstr(src)?, cstr(&at.to_string_lossy())?);
    let (ty_c, data_c) = (cstr(fstype)?, cstr(data)?);
    // SAFETY: every pointer is a live NUL-terminated string for the call.
    let rc = unsafe {
        libc::mount(
            src_c.as_ptr(),
            at_c.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                ty_c.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                data_c.as_ptr().cast()
            },
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("mounting {src} ({fstype}) on {}", at.display()),
            e,
        ));
    }
    Ok(())
}

fn mount(m: &Mount, at: &Path) -> Result<()> {
    let (flags, prop, data) = parse(&m.options);
    if flags & libc::MS_REMOUNT == 0 || !data.is_empty() {
        sys_mount(&m.source, at, &m.r#type, flags, &data)?;
    }
    let undo = |e: Error| {
        unmount(at);
        e
    };
    if prop != 0 {
        sys_mount("", at, "", prop, "").map_err(undo)?;
    }
    // A read-only bind mount takes a remount to become read-only.
    let bind_ro = libc::MS_BIND | libc::MS_RDONLY;
    if flags & bind_ro == bind_ro {
        sys_mount("", at, "", flags | libc::MS_REMOUNT, "").map_err(undo)?;
    }
    Ok(())
}

/// Unmounts `at` and whatever is stacked on it; a busy mount is detached.
fn unmount(at: &Path) {
    let Ok(c) = cstr(&at.to_string_lossy()) else {
        return;
    };
    for _ in 0..64 {
        // SAFETY: `c` is a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            continue; // something may be mounted beneath: go again
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => return, // not (or no longer) a mount point
            Some(libc::EBUSY) => {
                // SAFETY: as above.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                return;
            }
            _ => {
                let e = std::io::Error::last_os_error();
                tracing::warn!(at = %at.display(), error = %e, "unmount failed");
                return;
            }
        }
    }
}

/// Undoes what a daemon killed mid-apply left under `tmp`: its mounts, then
/// the empty mount points.
pub fn clean_stale(tmp: &Path) {
    // /proc/self/mounts names mount points by their real path.
    let tmp = &std::fs::canonicalize(tmp).unwrap_or_else(|_| tmp.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = format!("{}/", tmp.display());
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(unescape)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    // Innermost first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &points {
        tracing::warn!(at = %p, "unmounting a mount left by an interrupted apply");
        unmount(Path::new(p));
    }
    if let Ok(dir) = std::fs::read_dir(tmp) {
        for e in dir.flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// /proc/self/mounts writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o: Vec<String> = ["rbind", "ro", "rprivate", "index=off", "rw", "nosuid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, prop, data) = parse(&o);
        assert_eq!(flags, libc::MS_BIND | libc::MS_REC | libc::MS_NOSUID);
        assert_eq!(prop, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(data, "index=off");
    }

    #[test]
    fn mount_table_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape(r"/plain\04"), r"/plain\04");
    }

    #[test]
    fn overlay_with_upperdir_is_applied_in_place() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/s/2/work".into(),
                "upperdir=/s/2/fs".into(),
                "lowerdir=/s/1/fs:/s/0/fs".into(),
            ],
        };
        let r = Root::prepare(&[m], Path::new("/nonexistent")).unwrap();
        assert_eq!(r.path, Path::new("/s/2/fs"));
        assert!(matches!(r.whiteouts, Whiteouts::Overlay));
        assert_eq!(
            r.parents,
            vec![PathBuf::from("/s/1/fs"), PathBuf::from("/s/0/fs")]
        );
    }
}
