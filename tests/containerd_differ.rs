//! strata as containerd's proxy differ (`strata serve --containerd-diff-socket`)
//! against containerd's own walking differ, with real containerd 1.7 and 2.x
//! (`/opt/strata-ci`, installed by `bash .ci/containerd-versions install`):
//! the same OCI image archive is imported with unpack into a containerd with
//! its own content store and differ ("local") and into one using strata as
//! its proxy content store and differ ("strata"), and every snapshot's tree
//! is compared file by file (type, mode, owner, size, content, link target,
//! device numbers, xattrs, mtime, hard links), for the overlayfs and native
//! snapshotters. Layers: a corpus-like gzip layer, a zstd layer of whiteouts,
//! an opaque dir and type changes, a plain layer with more whiteouts; then
//! layers that try to write outside the snapshot (`..`, absolute names,
//! symlinked parents, hard links to host files), and a layer applied both as
//! received and after strata's background conversion.
//!
//! Needs root (containerd, mounts); skipped with a message otherwise.

mod common;

use common::containerd::{Config, Containerd, Version};
use common::serve_child::ServeChild;
use common::{noise, text};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tar::{EntryType, Header};

const T0: u64 = 1_600_000_000;
const SNAPSHOTTERS: [&str; 2] = ["overlayfs", "native"];

fn is_root() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: this test starts containerd and mounts snapshots; it must run as root");
        return false;
    }
    true
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

// ---------------------------------------------------------------- tar writing

/// A tar written entry by entry, with raw headers where the tar crate
/// refuses a name.
struct Tb {
    b: tar::Builder<Vec<u8>>,
}

fn hdr(kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

/// PAX extended header records ("LEN key=value\n").
fn pax_records(recs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in recs {
        let rest = 1 + k.len() + 1 + v.len() + 1;
        let mut n = rest + 1;
        while n != rest + n.to_string().len() {
            n = rest + n.to_string().len();
        }
        out.extend_from_slice(format!("{n} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

impl Tb {
    fn new() -> Tb {
        Tb {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn dir(&mut self, p: &str, mode: u32, uid: u64, gid: u64, mtime: u64) {
        let mut h = hdr(EntryType::Directory, mode, uid, gid, mtime);
        self.b.append_data(&mut h, p, std::io::empty()).unwrap();
    }

    fn file_o(&mut self, p: &str, data: &[u8], mode: u32, uid: u64, gid: u64, mtime: u64) {
        let mut h = hdr(EntryType::Regular, mode, uid, gid, mtime);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, p, data).unwrap();
    }

    fn file(&mut self, p: &str, data: &[u8]) {
        self.file_o(p, data, 0o644, 0, 0, T0 + 7);
    }

    fn symlink(&mut self, p: &str, target: &str) {
        let mut h = hdr(EntryType::Symlink, 0o777, 0, 0, T0 + 3);
        self.b.append_link(&mut h, p, target).unwrap();
    }

    fn hardlink(&mut self, p: &str, target: &str) {
        let mut h = hdr(EntryType::Link, 0o644, 0, 0, T0 + 4);
        self.b.append_link(&mut h, p, target).unwrap();
    }

    fn node(&mut self, p: &str, kind: EntryType, major: u32, minor: u32, mode: u32, gid: u64) {
        let mut h = hdr(kind, mode, 0, gid, T0 + 5);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, p, std::io::empty()).unwrap();
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, recs: &[(&str, &[u8])]) {
        let data = pax_records(recs);
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_path("PaxHeaders.0/next").unwrap();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(T0);
        h.set_cksum();
        self.b.append(&h, &data[..]).unwrap();
    }

    /// An entry whose name (and link name) bytes go into the header as they
    /// are: `..` and absolute names the tar crate refuses.
    fn raw(&mut self, name: &[u8], kind: EntryType, data: &[u8], link: &[u8]) {
        let mut h = hdr(kind, 0o644, 0, 0, T0 + 9);
        h.set_size(data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

// ---------------------------------------------------------------- images

#[derive(Clone, Copy)]
enum Comp {
    Plain,
    Gzip,
    Zstd,
}

/// An OCI image layout (oci-layout, index.json, blobs) as a tar, for `ctr
/// images import`; the image is named docker.io/library/NAME:1.
fn image_archive(name: &str, layers: &[(Vec<u8>, Comp)]) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, comp) in layers {
        diff_ids.push(format!("sha256:{}", sha_hex(tar)));
        let (blob, mt) = match comp {
            Comp::Plain => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(tar).unwrap();
                (
                    e.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Comp::Zstd => (
                zstd::encode_all(&tar[..], 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        let d = sha_hex(&blob);
        descs.push(serde_json::json!({"mediaType": mt, "digest": format!("sha256:{d}"), "size": blob.len()}));
        blobs.push((d, blob));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = sha_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cd}"), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = sha_hex(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{md}"), "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": format!("docker.io/library/{name}:1"),
                "org.opencontainers.image.ref.name": "1",
            },
        }],
    }))
    .unwrap();
    blobs.push((cd, config));
    blobs.push((md, manifest));
    let mut t = Tb::new();
    t.file_o(
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
        0,
        0,
        T0,
    );
    t.file_o("index.json", &index, 0o644, 0, 0, T0);
    t.dir("blobs", 0o755, 0, 0, T0);
    t.dir("blobs/sha256", 0o755, 0, 0, T0);
    let mut seen = BTreeSet::new();
    for (d, b) in &blobs {
        if seen.insert(d.clone()) {
            t.file_o(&format!("blobs/sha256/{d}"), b, 0o644, 0, 0, T0);
        }
    }
    t.finish()
}

/// A v2 file capability: cap_net_raw, effective.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0, 0, 0x02, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Layer 1: a corpus-like tree.
fn layer1() -> Vec<u8> {
    let mut t = Tb::new();
    for (d, mode, uid, gid) in [
        ("etc", 0o755, 0, 0),
        ("usr", 0o755, 0, 0),
        ("usr/bin", 0o755, 0, 0),
        ("usr/lib", 0o755, 0, 0),
        ("usr/share", 0o755, 0, 0),
        ("usr/share/doc", 0o755, 0, 0),
        ("var", 0o755, 0, 0),
        ("var/cache", 0o755, 0, 0),
        ("var/cache/apt", 0o700, 100, 101),
        ("srv", 0o755, 0, 0),
        ("srv/opq", 0o755, 0, 0),
        ("srv/opq/sub", 0o755, 0, 0),
        ("opt", 0o755, 0, 0),
        ("opt/replace-dir", 0o755, 0, 0),
        ("data", 0o755, 0, 0),
        ("devs", 0o755, 0, 0),
        ("tmp", 0o1777, 0, 0),
        ("shared", 0o2775, 0, 50),
    ] {
        t.dir(d, mode, uid, gid, T0 + 100);
    }
    // A directory with an odd mode, owner and an xattr: layer 2 creates a
    // file in it without listing it (containerd copies its info up).
    t.pax(&[("SCHILY.xattr.user.dirnote", b"pkg docs")]);
    t.dir("usr/share/doc/pkg", 0o750, 1000, 1001, T0 + 101);
    // A directory with a nanosecond mtime.
    t.pax(&[("mtime", b"1600000001.5")]);
    t.dir("nanodir", 0o755, 0, 0, T0 + 1);

    let dirs = [
        "usr/lib",
        "usr/share/doc/pkg",
        "data",
        "etc",
        "var/cache/apt",
        "srv/opq/sub",
        "shared",
        "nanodir",
    ];
    let sizes = [0usize, 17, 512, 4096, 9000, 30000];
    for i in 0..300u64 {
        let dir = dirs[i as usize % dirs.len()];
        let size = sizes[i as usize % sizes.len()];
        let body = if i % 13 == 0 {
            noise(size, i)
        } else {
            text(i, size)
        };
        let (uid, gid) = if i % 11 == 0 {
            (65534, 65534)
        } else if i % 5 == 0 {
            (1000, 1000)
        } else {
            (0, 0)
        };
        let mode = [0o644, 0o755, 0o600][i as usize % 3];
        t.file_o(
            &format!("{dir}/file-{i:03}.dat"),
            &body,
            mode,
            uid,
            gid,
            T0 + i,
        );
    }
    // A few MB.
    t.file("data/big-text", &text(9001, 1_500_000));
    t.file("data/big-noise", &noise(1_000_000, 9002));

    // Symlinks: absolute, relative, long target, one with a user xattr
    // (refused by the kernel on a symlink; containerd warns and goes on).
    t.pax(&[("SCHILY.xattr.user.note", b"on a symlink")]);
    t.symlink("usr/bin/sh", "/bin/busybox");
    t.symlink("lib", "usr/lib");
    t.symlink("data/longlink", &"a-long-target/".repeat(12));
    // setuid / setgid binaries, a capability.
    t.file_o("usr/bin/su", b"#!/bin/true su\n", 0o4755, 0, 0, T0 + 20);
    t.file_o("usr/bin/wall", b"#!/bin/true wall\n", 0o2755, 0, 5, T0 + 21);
    t.pax(&[("SCHILY.xattr.security.capability", &CAP_NET_RAW)]);
    t.file_o("usr/bin/ping", b"#!/bin/true ping\n", 0o755, 0, 0, T0 + 22);
    // xattrs: user (kept), trusted (containerd refuses to set it from an archive).
    t.pax(&[("SCHILY.xattr.user.note", b"a note")]);
    t.file("etc/noted", b"noted\n");
    t.pax(&[
        ("SCHILY.xattr.trusted.evil", b"x"),
        ("SCHILY.xattr.user.other", b"kept"),
    ]);
    t.file("etc/trusted-try", b"trusted\n");
    // Long names: PAX path and GNU long name.
    let pax_long = format!("data/pax-long-name-{}", "x".repeat(110));
    t.pax(&[("path", pax_long.as_bytes())]);
    t.file("data/pax-placeholder", b"pax long name\n");
    t.file(
        &format!("data/gnu-long-name-{}", "y".repeat(110)),
        b"gnu long name\n",
    );
    // Special files.
    t.node("var/fifo", EntryType::Fifo, 0, 0, 0o644, 0);
    t.node("devs/null", EntryType::Char, 1, 3, 0o666, 0);
    t.node("devs/loop0", EntryType::Block, 7, 0, 0o660, 6);
    // Hard links across directories.
    t.file_o(
        "usr/lib/libfoo.so.1",
        &text(77, 20000),
        0o755,
        0,
        0,
        T0 + 30,
    );
    t.hardlink("usr/bin/foo-link", "usr/lib/libfoo.so.1");
    t.hardlink("data/foo-link2", "usr/lib/libfoo.so.1");
    t.symlink("usr/lib/libfoo.so", "libfoo.so.1");
    t.file("etc/hl-a", b"hard linked pair\n");
    t.hardlink("var/hl-b", "etc/hl-a");
    // A nanosecond mtime on a file.
    t.pax(&[("mtime", b"1600000000.123456789")]);
    t.file("etc/nanotime", b"ns\n");
    // What layer 2 deletes or replaces.
    t.file("etc/removed.conf", b"gone in layer 2\n");
    t.file("var/cache/apt/pkgcache.bin", &text(5, 5000));
    t.file("opt/replace-dir/c1", b"child of a dir replaced by a file\n");
    t.file("opt/replace-file", b"a file replaced by a dir\n");
    t.file("srv/opq/old1", b"old1\n");
    t.file("srv/opq/old2", b"old2\n");
    t.file("srv/opq/a-before", b"layer 1 version of a-before\n");
    t.finish()
}

/// Layer 2: whiteouts, type changes, an opaque dir, implicit parents.
fn layer2() -> Vec<u8> {
    let mut t = Tb::new();
    // Whiteouts of a file (owned by 1000: the overlay whiteout keeps the
    // owner) and of a directory with children.
    t.file_o("etc/.wh.removed.conf", b"", 0o644, 1000, 1000, T0 + 200);
    t.file("var/.wh.cache", b"");
    // A dir replaced by a file, a file by a dir.
    t.file_o("opt/replace-dir", b"now a file\n", 0o600, 7, 8, T0 + 201);
    t.dir("opt/replace-file", 0o710, 0, 0, T0 + 202);
    t.file("opt/replace-file/child", b"child\n");
    // An opaque dir: children before and after the marker.
    t.dir("srv/opq", 0o700, 0, 0, T0 + 203);
    t.file("srv/opq/a-before", b"layer 2 version of a-before\n");
    t.file("srv/.wh.opq-never-existed", b"");
    t.file("srv/opq/.wh..wh..opq", b"");
    t.file("srv/opq/z-after", b"after the marker\n");
    t.dir("srv/opq/newdir", 0o755, 0, 0, T0 + 204);
    t.file("srv/opq/newdir/f", b"f\n");
    // Files in dirs only layer 1 has (no entry for them here), and in dirs
    // no layer has.
    t.file("usr/share/doc/pkg/NEWS", b"news\n");
    t.file("newtop/sub/file", b"implicit parents\n");
    // Overwrite a layer-1 file with another owner and mode.
    t.file_o(
        "data/file-002.dat",
        b"overwritten\n",
        0o640,
        33,
        33,
        T0 + 205,
    );
    // Re-list a dir with another mode.
    t.dir("shared", 0o3777, 0, 50, T0 + 206);
    t.finish()
}

/// Layer 3 (plain): more whiteouts, hard links within the layer.
fn layer3() -> Vec<u8> {
    let mut t = Tb::new();
    t.file("srv/opq/.wh.z-after", b"");
    t.file("usr/lib/.wh.libfoo.so.1", b"");
    t.file("etc/.wh.never-existed", b"");
    t.file("data/.wh.file-010.dat", b"");
    t.file("data/.wh.big-noise", b"");
    t.dir("l3", 0o755, 0, 0, T0 + 300);
    t.file_o("l3/orig", &text(33, 3000), 0o644, 0, 0, T0 + 301);
    t.hardlink("l3/link", "l3/orig");
    t.hardlink("other/l3-link", "l3/orig");
    t.pax(&[("SCHILY.xattr.user.note", b"a new note")]);
    t.file("etc/noted", b"noted again\n");
    t.pax(&[("SCHILY.xattr.user.dirnote", b"changed")]);
    t.dir("usr/share/doc/pkg", 0o755, 1000, 1001, T0 + 302);
    t.finish()
}

fn main_image() -> Vec<u8> {
    image_archive(
        "differ-main",
        &[
            (layer1(), Comp::Gzip),
            (layer2(), Comp::Zstd),
            (layer3(), Comp::Plain),
        ],
    )
}

/// A hard link in layer 2 to a file of layer 1.
fn xlink_image() -> Vec<u8> {
    let mut a = Tb::new();
    a.dir("base", 0o755, 0, 0, T0);
    a.file("base/target", b"target of a link from the next layer\n");
    a.file("base/other", b"other\n");
    let mut b = Tb::new();
    b.file("x/plain", b"plain\n");
    b.hardlink("x/link", "base/target");
    image_archive(
        "differ-xlink",
        &[(a.finish(), Comp::Gzip), (b.finish(), Comp::Plain)],
    )
}

/// Names that try to leave the snapshot, tagged `tag` and `unique`.
fn escape_layer(tag: &str, unique: &str) -> Vec<u8> {
    let mut t = Tb::new();
    t.dir(&format!("in-{tag}"), 0o755, 0, 0, T0);
    t.raw(
        format!("../../escaped-dotdot-{tag}-{unique}").as_bytes(),
        EntryType::Regular,
        b"dotdot\n",
        b"",
    );
    t.raw(
        format!("/escaped-abs-{tag}-{unique}").as_bytes(),
        EntryType::Regular,
        b"absolute\n",
        b"",
    );
    t.symlink("evil", "/");
    t.file(
        &format!("evil/tmp/escaped-symlink-{tag}-{unique}"),
        b"through a symlink to /\n",
    );
    t.symlink("up", "../../../..");
    t.file(&format!("up/escaped-up-{tag}-{unique}"), b"through ../..\n");
    // Whiteouts through a symlink to the host (a canary dir the test made):
    // a file's, and an opaque marker; a whiteout through `evil` (to /).
    let canary = canary_dir(unique);
    t.symlink(&format!("cn-{tag}"), canary.to_str().unwrap());
    t.file(&format!("cn-{tag}/.wh.file"), b"");
    t.file(&format!("cn-{tag}/.wh..wh..opq"), b"");
    t.file(&format!("evil/.wh.never-{tag}"), b"");
    // A file entry replacing a symlink to a host file (must not write through).
    t.symlink(
        &format!("through-{tag}"),
        canary.join("victim").to_str().unwrap(),
    );
    t.file(&format!("through-{tag}"), b"overwritten\n");
    t.finish()
}

/// A host directory escape layers aim at.
fn canary_dir(unique: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/canary-{unique}"))
}

/// The canary's files, by name.
fn canary_files(unique: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(canary_dir(unique))
        .map(|r| {
            r.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn escape_image(unique: &str) -> Vec<u8> {
    image_archive(
        "differ-escape",
        &[
            (escape_layer("a", unique), Comp::Gzip),
            (escape_layer("b", unique), Comp::Plain),
        ],
    )
}

/// Layer 2 hard-links `lnk` to `target` (a host file, by absolute or
/// relative name).
fn hardlink_escape_image(name: &str, target: &str) -> Vec<u8> {
    let mut a = Tb::new();
    a.dir("base", 0o755, 0, 0, T0);
    a.file("base/f", b"f\n");
    let mut b = Tb::new();
    b.file("x", b"x\n");
    b.raw(b"lnk", EntryType::Link, b"", target.as_bytes());
    image_archive(name, &[(a.finish(), Comp::Gzip), (b.finish(), Comp::Plain)])
}

// ---------------------------------------------------------------- trees

#[derive(Clone, Debug)]
struct Node {
    kind: &'static str,
    perm: u32,
    uid: u32,
    gid: u32,
    size: u64,
    sha: String,
    target: String,
    rdev: (u32, u32),
    xattrs: BTreeMap<String, String>,
    mtime: (i64, i64),
    nlink: u64,
    ino: (u64, u64),
}

fn xattrs(p: &Path) -> BTreeMap<String, String> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut out = BTreeMap::new();
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return out;
    }
    let mut buf = vec![0u8; n as usize + 256];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    for name in buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        let shown = if m < 0 {
            format!("<error {}>", std::io::Error::last_os_error())
        } else {
            let v = &v[..m as usize];
            match std::str::from_utf8(v) {
                Ok(s) if !s.contains('\0') => format!("{s:?}"),
                _ => format!("0x{}", hex::encode(v)),
            }
        };
        out.insert(String::from_utf8_lossy(name).into_owned(), shown);
    }
    out
}

/// Every path under `root` (relative, "." for the root), not following symlinks.
fn scan(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), ".".to_string())];
    while let Some((p, rel)) = stack.pop() {
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let (size, sha) = if ft.is_file() {
            (m.len(), sha_hex(&std::fs::read(&p).unwrap()))
        } else {
            (0, String::new())
        };
        let target = if ft.is_symlink() {
            std::fs::read_link(&p)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let rdev = if ft.is_char_device() || ft.is_block_device() {
            let r = m.rdev();
            (libc::major(r), libc::minor(r))
        } else {
            (0, 0)
        };
        out.insert(
            rel.clone(),
            Node {
                kind,
                perm: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size,
                sha,
                target,
                rdev,
                xattrs: xattrs(&p),
                mtime: (m.mtime(), m.mtime_nsec()),
                nlink: if ft.is_dir() { 0 } else { m.nlink() },
                ino: (m.dev(), m.ino()),
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                let r = if rel == "." {
                    n.to_string_lossy().into_owned()
                } else {
                    format!("{rel}/{}", n.to_string_lossy())
                };
                stack.push((p.join(&n), r));
            }
        }
    }
    out
}

/// Sets of paths sharing an inode (non-directories, two or more paths).
fn link_groups(t: &BTreeMap<String, Node>) -> BTreeSet<Vec<String>> {
    let mut by: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for (p, n) in t {
        if n.kind != "dir" {
            by.entry(n.ino).or_default().push(p.clone());
        }
    }
    by.into_values().filter(|v| v.len() > 1).collect()
}

fn short(p: &str) -> String {
    if p.len() > 70 {
        format!("{}...{}", &p[..40], &p[p.len() - 20..])
    } else {
        p.to_string()
    }
}

/// Differences between two trees, one line each ("local" is a, "strata" is b).
fn compare_trees(a: &Path, b: &Path, start: i64) -> (Vec<String>, usize) {
    let ta = scan(a);
    let tb = scan(b);
    let mut d = Vec::new();
    let keys: BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
    for k in keys {
        let (x, y) = match (ta.get(k), tb.get(k)) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => {
                d.push(format!("{}: only in local ({})", short(k), x.kind));
                continue;
            }
            (None, Some(y)) => {
                d.push(format!("{}: only in strata ({})", short(k), y.kind));
                continue;
            }
            (None, None) => unreachable!(),
        };
        let mut f = |what: &str, l: String, s: String| {
            if l != s {
                d.push(format!("{}: {what}: local {l}, strata {s}", short(k)));
            }
        };
        f("type", x.kind.into(), y.kind.into());
        if x.kind != y.kind {
            continue;
        }
        f("mode", format!("{:04o}", x.perm), format!("{:04o}", y.perm));
        f("uid", x.uid.to_string(), y.uid.to_string());
        f("gid", x.gid.to_string(), y.gid.to_string());
        if x.kind == "file" {
            f("size", x.size.to_string(), y.size.to_string());
            f("sha256", x.sha.clone(), y.sha.clone());
        }
        f("symlink target", x.target.clone(), y.target.clone());
        f("rdev", format!("{:?}", x.rdev), format!("{:?}", y.rdev));
        f(
            "xattrs",
            format!("{:?}", x.xattrs),
            format!("{:?}", y.xattrs),
        );
        f("nlink", x.nlink.to_string(), y.nlink.to_string());
        // Made at apply time: directories created or changed by the apply,
        // overlay whiteouts.
        let applied_dir = x.kind == "dir" && (x.mtime.0 >= start || y.mtime.0 >= start);
        let whiteout = x.kind == "char" && x.rdev == (0, 0);
        if !applied_dir && !whiteout {
            f(
                "mtime",
                format!("{}.{:09}", x.mtime.0, x.mtime.1),
                format!("{}.{:09}", y.mtime.0, y.mtime.1),
            );
        }
    }
    let (la, lb) = (link_groups(&ta), link_groups(&tb));
    for g in la.difference(&lb) {
        d.push(format!("hard links {g:?}: only in local"));
    }
    for g in lb.difference(&la) {
        d.push(format!("hard links {g:?}: only in strata"));
    }
    (d, ta.len())
}

// ---------------------------------------------------------------- fixture facts

/// What the walking differ's trees must show, so that "equal" is not
/// vacuous: every feature of the fixture reached the snapshot.
fn fact(
    errs: &mut Vec<String>,
    t: &BTreeMap<String, Node>,
    label: &str,
    path: &str,
    what: &str,
    ok: impl Fn(Option<&Node>) -> bool,
) {
    if !ok(t.get(path)) {
        errs.push(format!(
            "{label}: {path}: expected {what}, found {:?}",
            t.get(path)
        ));
    }
}

fn is_whiteout(n: Option<&Node>) -> bool {
    n.is_some_and(|n| n.kind == "char" && n.rdev == (0, 0))
}

fn main_image_facts(sn: &str, trees: &[BTreeMap<String, Node>]) -> Vec<String> {
    let mut e = Vec::new();
    let l1 = &trees[0];
    let pax_long = format!("data/pax-long-name-{}", "x".repeat(110));
    let gnu_long = format!("data/gnu-long-name-{}", "y".repeat(110));
    for t in if sn == "native" { trees } else { &trees[..1] } {
        let e = &mut e;
        fact(
            e,
            t,
            "layer 1",
            "usr/bin/ping",
            "security.capability",
            |n| n.is_some_and(|n| n.xattrs.contains_key("security.capability")),
        );
        fact(
            e,
            t,
            "layer 1",
            "etc/trusted-try",
            "user.other, no trusted.evil",
            |n| {
                n.is_some_and(|n| {
                    n.xattrs.contains_key("user.other") && !n.xattrs.contains_key("trusted.evil")
                })
            },
        );
        fact(
            e,
            t,
            "layer 1",
            "etc/nanotime",
            "mtime 1600000000.123456789",
            |n| n.is_some_and(|n| n.mtime == (1_600_000_000, 123_456_789)),
        );
        fact(e, t, "layer 1", "devs/null", "char 1:3", |n| {
            n.is_some_and(|n| n.kind == "char" && n.rdev == (1, 3))
        });
        fact(e, t, "layer 1", "devs/loop0", "block 7:0", |n| {
            n.is_some_and(|n| n.kind == "block" && n.rdev == (7, 0) && n.gid == 6)
        });
        fact(e, t, "layer 1", "var/fifo", "fifo", |n| {
            n.is_some_and(|n| n.kind == "fifo")
        });
        fact(e, t, "layer 1", "usr/bin/su", "mode 4755", |n| {
            n.is_some_and(|n| n.perm == 0o4755)
        });
        fact(e, t, "layer 1", "usr/bin/wall", "mode 2755", |n| {
            n.is_some_and(|n| n.perm == 0o2755)
        });
        fact(e, t, "layer 1", "tmp", "mode 1777", |n| {
            n.is_some_and(|n| n.perm == 0o1777)
        });
        fact(e, t, "layer 1", &pax_long, "a file", |n| {
            n.is_some_and(|n| n.kind == "file")
        });
        fact(e, t, "layer 1", &gnu_long, "a file", |n| {
            n.is_some_and(|n| n.kind == "file")
        });
        fact(e, t, "layer 1", "data/pax-placeholder", "nothing", |n| {
            n.is_none()
        });
        fact(
            e,
            t,
            "layer 1",
            "data/longlink",
            "a long symlink target",
            |n| n.is_some_and(|n| n.target.len() > 100),
        );
        fact(e, t, "layer 1", "usr/bin/foo-link", "a hard link", |n| {
            n.is_some_and(|n| n.nlink >= 2)
        });
        fact(e, t, "layer 1", "var/hl-b", "a hard link", |n| {
            n.is_some_and(|n| n.nlink == 2)
        });
        fact(e, t, "layer 1", "data/file-050.dat", "uid 1000", |n| {
            n.is_some_and(|n| n.uid == 1000)
        });
        fact(e, t, "layer 1", "data/big-text", "1.5 MB", |n| {
            n.is_some_and(|n| n.size == 1_500_000)
        });
    }
    // (native copies of layer 1 do not keep directory mtimes)
    fact(
        &mut e,
        l1,
        "layer 1",
        "nanodir",
        "mtime 1600000001.5",
        |n| n.is_some_and(|n| n.mtime == (1_600_000_001, 500_000_000)),
    );
    fact(
        &mut e,
        l1,
        "layer 1",
        "usr/lib/libfoo.so.1",
        "3 links",
        |n| n.is_some_and(|n| n.nlink == 3),
    );
    if sn == "overlayfs" {
        let (l2, l3) = (&trees[1], &trees[2]);
        let e = &mut e;
        fact(
            e,
            l2,
            "layer 2",
            "etc/removed.conf",
            "a whiteout owned by 1000",
            |n| is_whiteout(n) && n.unwrap().uid == 1000,
        );
        fact(e, l2, "layer 2", "var/cache", "a whiteout", is_whiteout);
        fact(e, l2, "layer 2", "srv/opq", "trusted.overlay.opaque", |n| {
            n.is_some_and(|n| {
                n.xattrs.get("trusted.overlay.opaque").map(String::as_str) == Some("\"y\"")
            })
        });
        fact(e, l2, "layer 2", "srv/opq/a-before", "a file", |n| {
            n.is_some_and(|n| n.kind == "file")
        });
        fact(e, l2, "layer 2", "srv/opq/z-after", "a file", |n| {
            n.is_some_and(|n| n.kind == "file")
        });
        fact(
            e,
            l2,
            "layer 2",
            "usr/share/doc/pkg",
            "copied up: 0750, uid 1000, user.dirnote",
            |n| {
                n.is_some_and(|n| {
                    n.perm == 0o750 && n.uid == 1000 && n.xattrs.contains_key("user.dirnote")
                })
            },
        );
        fact(e, l2, "layer 2", "newtop/sub/file", "a file", |n| {
            n.is_some_and(|n| n.kind == "file")
        });
        fact(
            e,
            l3,
            "layer 3",
            "usr/lib/libfoo.so.1",
            "a whiteout",
            is_whiteout,
        );
        fact(
            e,
            l3,
            "layer 3",
            "etc/never-existed",
            "a whiteout",
            is_whiteout,
        );
        fact(e, l3, "layer 3", "other/l3-link", "3 links", |n| {
            n.is_some_and(|n| n.nlink == 3)
        });
    } else {
        let (l2, l3) = (&trees[1], &trees[2]);
        let e = &mut e;
        for t in [l2, l3] {
            fact(e, t, "layers 1+2", "etc/removed.conf", "nothing", |n| {
                n.is_none()
            });
            fact(e, t, "layers 1+2", "var/cache", "nothing", |n| n.is_none());
            fact(
                e,
                t,
                "layers 1+2",
                "srv/opq/old1",
                "nothing (opaque)",
                |n| n.is_none(),
            );
            fact(e, t, "layers 1+2", "srv/opq/sub", "nothing (opaque)", |n| {
                n.is_none()
            });
            fact(e, t, "layers 1+2", "opt/replace-dir", "a file", |n| {
                n.is_some_and(|n| n.kind == "file")
            });
            fact(
                e,
                t,
                "layers 1+2",
                "opt/replace-file/child",
                "a file",
                |n| n.is_some_and(|n| n.kind == "file"),
            );
            fact(
                e,
                t,
                "layers 1+2",
                "usr/share/doc/pkg/NEWS",
                "a file",
                |n| n.is_some_and(|n| n.kind == "file"),
            );
        }
        fact(
            e,
            l2,
            "layers 1+2",
            "srv/opq/a-before",
            "layer 2's file",
            |n| n.is_some_and(|n| n.sha == sha_hex(b"layer 2 version of a-before\n")),
        );
        fact(e, l2, "layers 1+2", "srv/opq/z-after", "a file", |n| {
            n.is_some_and(|n| n.kind == "file")
        });
        fact(e, l3, "layers 1-3", "srv/opq/z-after", "nothing", |n| {
            n.is_none()
        });
        fact(e, l3, "layers 1-3", "usr/lib/libfoo.so.1", "nothing", |n| {
            n.is_none()
        });
        fact(e, l3, "layers 1-3", "usr/bin/foo-link", "2 links", |n| {
            n.is_some_and(|n| n.nlink == 2)
        });
        fact(e, l3, "layers 1-3", "data/big-noise", "nothing", |n| {
            n.is_none()
        });
        fact(e, l3, "layers 1-3", "other/l3-link", "3 links", |n| {
            n.is_some_and(|n| n.nlink == 3)
        });
        fact(e, l3, "layers 1-3", "etc/noted", "the new note", |n| {
            n.is_some_and(|n| {
                n.xattrs.get("user.note").map(String::as_str) == Some("\"a new note\"")
            })
        });
    }
    e
}

fn escape_facts(unique: &str, trees: &[BTreeMap<String, Node>]) -> Vec<String> {
    let mut e = Vec::new();
    for (t, tag) in trees.iter().zip(["a", "b"]) {
        for p in [
            format!("escaped-dotdot-{tag}-{unique}"),
            format!("escaped-abs-{tag}-{unique}"),
            format!("tmp/escaped-symlink-{tag}-{unique}"),
            format!("escaped-up-{tag}-{unique}"),
            format!("through-{tag}"),
        ] {
            fact(
                &mut e,
                t,
                "escape layer",
                &p,
                "a file inside the snapshot",
                |n| n.is_some_and(|n| n.kind == "file"),
            );
        }
    }
    e
}

// ---------------------------------------------------------------- set-up

/// One strata daemon (content and diff sockets) and two containerds of one
/// version: "local" (own content store, walking differ) and "strata".
struct Pair {
    // Dropped first: containerds before strata.
    local: Option<Containerd>,
    proxy: Containerd,
    strata: ServeChild,
    work: tempfile::TempDir,
}

impl Pair {
    fn start(version: Version, with_local: bool, serve_args: &[&str]) -> Pair {
        version.require();
        let work = tempfile::Builder::new()
            .prefix("sd.")
            .tempdir_in("/tmp")
            .unwrap();
        let csock = work.path().join("c.sock");
        let dsock = work.path().join("d.sock");
        let mut args = vec![
            "--containerd-socket",
            csock.to_str().unwrap(),
            "--containerd-diff-socket",
            dsock.to_str().unwrap(),
        ];
        args.extend_from_slice(serve_args);
        let strata = ServeChild::start_with(&args, &[]);
        let t = Instant::now();
        while !(csock.exists() && dsock.exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "strata serve made no containerd sockets:\n{}",
                std::fs::read_to_string(&strata.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sns: Vec<String> = SNAPSHOTTERS.iter().map(|s| s.to_string()).collect();
        let local = with_local.then(|| {
            Containerd::start(
                version,
                "cdl.",
                &Config {
                    snapshotters: sns.clone(),
                    ..Default::default()
                },
            )
        });
        let proxy = Containerd::start(
            version,
            "cds.",
            &Config {
                content_proxy: Some(csock),
                diff_proxy: Some(dsock),
                snapshotters: sns,
            },
        );
        Pair {
            local,
            proxy,
            strata,
            work,
        }
    }

    fn local(&self) -> &Containerd {
        self.local.as_ref().unwrap()
    }

    fn strata_log(&self) -> String {
        std::fs::read_to_string(&self.strata.log).unwrap_or_default()
    }

    fn applied(&self) -> usize {
        self.strata_log().matches("applied a layer").count()
    }

    /// Writes an image archive into the work dir.
    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.work.path().join(format!("{name}.tar"));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Log excerpts for a failure message.
    fn logs(&self) -> String {
        let s = self.strata_log();
        let tail: Vec<&str> = s.lines().rev().take(30).collect::<Vec<_>>();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- strata log (tail) ---\n{}\n--- containerd (strata) errors ---\n{}\n--- containerd (local) errors ---\n{}",
            tail.join("\n"),
            self.proxy.log_errors(),
            self.local.as_ref().map(|l| l.log_errors()).unwrap_or_default()
        )
    }
}

fn import(c: &Containerd, ns: &str, sn: &str, archive: &Path) -> std::process::Output {
    let a = archive.to_str().unwrap();
    let mut args = vec!["images", "import", "--snapshotter", sn];
    if c.version == Version::V2 {
        args.extend(["--platform", "linux/amd64"]);
    }
    args.push(a);
    c.ctr(&args, ns)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// Snapshot ids a snapshotter holds on disk.
fn snapshot_ids(c: &Containerd, sn: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(c.snapshots_dir(sn))
        .map(|r| {
            r.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn snapshot_tree(c: &Containerd, sn: &str, id: u64) -> PathBuf {
    let d = c.snapshots_dir(sn).join(id.to_string());
    if sn == "overlayfs" {
        d.join("fs")
    } else {
        d
    }
}

/// The image is listed and unpacked: `layers` committed snapshots in `ns`.
fn check_unpacked(
    c: &Containerd,
    ns: &str,
    sn: &str,
    image: &str,
    layers: usize,
) -> Result<(), String> {
    let imgs = c.ctr_ok(&["images", "ls", "-q"], ns);
    if !imgs.lines().any(|l| l.contains(image)) {
        return Err(format!("image {image} not in `ctr images ls`: {imgs:?}"));
    }
    let snaps = c.ctr_ok(&["snapshots", "--snapshotter", sn, "ls"], ns);
    let committed = snaps.lines().filter(|l| l.contains("Committed")).count();
    if committed != layers {
        return Err(format!(
            "{committed} committed snapshots in `ctr snapshots ls`, not {layers}:\n{snaps}"
        ));
    }
    Ok(())
}

/// Compares the snapshots `ids` of both containerds; the report's lines.
fn compare_ids(p: &Pair, sn: &str, ids: &[u64], start: i64) -> Result<String, String> {
    let mut bad = Vec::new();
    let mut paths = 0;
    for id in ids {
        let (d, n) = compare_trees(
            &snapshot_tree(p.local(), sn, *id),
            &snapshot_tree(&p.proxy, sn, *id),
            start,
        );
        paths += n;
        if !d.is_empty() {
            let more = d.len().saturating_sub(80);
            bad.push(format!(
                "snapshot {id}: {} difference(s):\n  {}{}",
                d.len(),
                d.into_iter().take(80).collect::<Vec<_>>().join("\n  "),
                if more > 0 {
                    format!("\n  ... {more} more")
                } else {
                    String::new()
                }
            ));
        }
    }
    if bad.is_empty() {
        Ok(format!("{} snapshot(s), {paths} paths, equal", ids.len()))
    } else {
        Err(bad.join("\n"))
    }
}

/// Checks of the local containerd's trees of one image, one line per miss.
type Facts<'a> = &'a dyn Fn(&[BTreeMap<String, Node>]) -> Vec<String>;

/// Imports `archive` into both containerds (namespace `ns`, snapshotter
/// `sn`), both must succeed and strata must apply every layer; then every
/// new snapshot is compared (`facts`: what the local trees must show).
#[allow(clippy::too_many_arguments)]
fn import_and_compare(
    p: &Pair,
    ns: &str,
    sn: &str,
    archive: &Path,
    image: &str,
    layers: usize,
    start: i64,
    facts: Facts,
) -> Result<String, String> {
    let before_l = snapshot_ids(p.local(), sn);
    let before_s = snapshot_ids(&p.proxy, sn);
    let applied0 = p.applied();
    let ol = import(p.local(), ns, sn, archive);
    if !ol.status.success() {
        return Err(format!(
            "local containerd's import failed: {}\n{}",
            stderr(&ol),
            p.logs()
        ));
    }
    let applied1 = p.applied();
    let os = import(&p.proxy, ns, sn, archive);
    let applied2 = p.applied();
    if !os.status.success() {
        return Err(format!(
            "import through strata's differ failed: {}\n{}",
            stderr(&os),
            p.logs()
        ));
    }
    let mut errs = Vec::new();
    if applied1 != applied0 {
        errs.push(format!(
            "strata applied {} layer(s) during the local import",
            applied1 - applied0
        ));
    }
    if applied2 - applied1 != layers {
        errs.push(format!(
            "strata's log has {} `applied a layer` line(s) for the import, not {layers} (containerd's fallback differ applied the rest?)",
            applied2 - applied1
        ));
    }
    for c in [p.local(), &p.proxy] {
        if let Err(e) = check_unpacked(c, ns, sn, image, layers) {
            errs.push(e);
        }
    }
    let new_l: Vec<u64> = snapshot_ids(p.local(), sn)
        .into_iter()
        .filter(|i| !before_l.contains(i))
        .collect();
    let new_s: Vec<u64> = snapshot_ids(&p.proxy, sn)
        .into_iter()
        .filter(|i| !before_s.contains(i))
        .collect();
    if new_l != new_s || new_l.len() != layers {
        errs.push(format!(
            "new snapshot ids: local {new_l:?}, strata {new_s:?} ({layers} layers)"
        ));
    }
    let ids: Vec<u64> = new_l
        .iter()
        .copied()
        .filter(|i| new_s.contains(i))
        .collect();
    let local_trees: Vec<_> = new_l
        .iter()
        .map(|id| scan(&snapshot_tree(p.local(), sn, *id)))
        .collect();
    for f in facts(&local_trees) {
        errs.push(format!(
            "fixture not as expected in local containerd's snapshots: {f}"
        ));
    }
    match compare_ids(p, sn, &ids, start) {
        Ok(s) if errs.is_empty() => Ok(s),
        Ok(_) => Err(errs.join("\n")),
        Err(e) => {
            errs.push(e);
            Err(errs.join("\n"))
        }
    }
}

/// Both containerds' outcome on an image whose unpack may fail: the same
/// (both fail, or both succeed with equal trees).
fn same_outcome(
    p: &Pair,
    ns: &str,
    sn: &str,
    archive: &Path,
    start: i64,
) -> Result<String, String> {
    let before_l = snapshot_ids(p.local(), sn);
    let before_s = snapshot_ids(&p.proxy, sn);
    let ol = import(p.local(), ns, sn, archive);
    let os = import(&p.proxy, ns, sn, archive);
    match (ol.status.success(), os.status.success()) {
        (false, false) => Ok(format!(
            "both failed; local: {}; strata: {}",
            stderr(&ol),
            stderr(&os)
        )),
        (true, true) => {
            let new: Vec<u64> = snapshot_ids(p.local(), sn)
                .into_iter()
                .filter(|i| !before_l.contains(i))
                .collect();
            let new_s: Vec<u64> = snapshot_ids(&p.proxy, sn)
                .into_iter()
                .filter(|i| !before_s.contains(i))
                .collect();
            if new != new_s {
                return Err(format!("new snapshot ids: local {new:?}, strata {new_s:?}"));
            }
            compare_ids(p, sn, &new, start).map(|s| format!("both succeeded: {s}"))
        }
        (true, false) => Err(format!(
            "local containerd unpacked it, strata's differ failed: {}\n{}",
            stderr(&os),
            p.logs()
        )),
        (false, true) => {
            let new_s: Vec<u64> = snapshot_ids(&p.proxy, sn)
                .into_iter()
                .filter(|i| !before_s.contains(i))
                .collect();
            let trees: Vec<String> = new_s
                .iter()
                .map(|id| {
                    let t = scan(&snapshot_tree(&p.proxy, sn, *id));
                    format!("snapshot {id}: {:?}", t.keys().collect::<Vec<_>>())
                })
                .collect();
            Err(format!(
                "local containerd refused it ({}), strata's differ applied it:\n{}",
                stderr(&ol),
                trees.join("\n")
            ))
        }
    }
}

fn finish(version: Version, what: &str, results: Vec<(String, Result<String, String>)>) {
    let mut failed = Vec::new();
    for (case, r) in &results {
        match r {
            Ok(s) => eprintln!("containerd {} {what} {case}: ok: {s}", version.name()),
            Err(e) => {
                eprintln!("containerd {} {what} {case}: FAILED:\n{e}", version.name());
                failed.push(case.clone());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "containerd {} {what}: failed: {failed:?} (details above)",
        version.name()
    );
}

// ---------------------------------------------------------------- 1. trees

fn trees_equal(version: Version) {
    if !is_root() {
        return;
    }
    let start = now_secs();
    let p = Pair::start(version, true, &[]);
    let main = p.archive("main", &main_image());
    let xlink = p.archive("xlink", &xlink_image());
    let mut results = Vec::new();
    for sn in SNAPSHOTTERS {
        results.push((
            format!("{sn} main image"),
            import_and_compare(
                &p,
                &format!("main-{sn}"),
                sn,
                &main,
                "differ-main",
                3,
                start,
                &|t| main_image_facts(sn, t),
            ),
        ));
    }
    // A hard link to a file of a lower layer: the walking differ applies an
    // overlay layer into its upper dir, where the target is not.
    for sn in SNAPSHOTTERS {
        results.push((
            format!("{sn} cross-layer hard link"),
            same_outcome(&p, &format!("xlink-{sn}"), sn, &xlink, start),
        ));
    }
    finish(version, "trees", results);
}

#[test]
fn trees_equal_walking_differ_containerd_1_7() {
    trees_equal(Version::V1_7);
}

#[test]
fn trees_equal_walking_differ_containerd_2() {
    trees_equal(Version::V2);
}

// ---------------------------------------------------------------- 2. escapes

fn is_escaped(name: &str, unique: &str) -> bool {
    name.starts_with("escaped-") && name.contains(unique)
}

/// Paths under `dir` (not following symlinks, not entering `skip`) whose
/// name contains `unique`.
fn find_named(dir: &Path, unique: &str, skip: &BTreeSet<PathBuf>, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if is_escaped(&e.file_name().to_string_lossy(), unique) {
            out.push(p.clone());
        }
        if skip.contains(&p) {
            continue;
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_named(&p, unique, skip, out);
        }
    }
}

fn escapes(version: Version) {
    if !is_root() {
        return;
    }
    let start = now_secs();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let canary = canary_dir(&unique);
    std::fs::create_dir(&canary).unwrap();
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(canary.clone());
    for f in ["file", "victim", "keep"] {
        std::fs::write(canary.join(f), format!("canary {f}\n")).unwrap();
    }
    let canary_before = canary_files(&unique);
    let p = Pair::start(version, true, &[]);
    let esc = p.archive("escape", &escape_image(&unique));
    let mut results = Vec::new();
    for sn in SNAPSHOTTERS {
        results.push((
            format!("{sn} escaping names"),
            import_and_compare(
                &p,
                &format!("esc-{sn}"),
                sn,
                &esc,
                "differ-escape",
                2,
                start,
                &|t| escape_facts(&unique, t),
            ),
        ));
    }
    // Nothing landed outside the snapshots.
    let mut skip = BTreeSet::new();
    for c in [p.local(), &p.proxy] {
        for sn in SNAPSHOTTERS {
            for id in snapshot_ids(c, sn) {
                skip.insert(c.snapshots_dir(sn).join(id.to_string()));
            }
        }
    }
    let mut found = Vec::new();
    for d in [
        p.local().dir(),
        p.proxy.dir(),
        p.strata.dir(),
        p.work.path(),
    ] {
        find_named(d, &unique, &skip, &mut found);
    }
    for d in ["/", "/tmp", "/var/tmp", "/root"] {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if is_escaped(&e.file_name().to_string_lossy(), &unique) {
                found.push(e.path());
            }
        }
    }
    for tag in ["a", "b"] {
        let p = PathBuf::from(format!("/tmp/escaped-symlink-{tag}-{unique}"));
        if p.exists() && !found.contains(&p) {
            found.push(p);
        }
    }
    let canary_after = canary_files(&unique);
    results.push((
        "host dir behind a symlink untouched".into(),
        if canary_after == canary_before {
            Ok(format!("{} intact", canary.display()))
        } else {
            Err(format!(
                "{} changed: before {canary_before:?}, after {canary_after:?}",
                canary.display()
            ))
        },
    ));
    results.push((
        "nothing written outside the snapshots".into(),
        if found.is_empty() {
            Ok("no escaped-* file outside".into())
        } else {
            Err(format!("written outside the snapshots: {found:?}"))
        },
    ));
    // Hard links to a host file.
    let nlink = || std::fs::metadata("/etc/passwd").unwrap().nlink();
    let n0 = nlink();
    for (name, target) in [
        ("differ-hl-abs", "/etc/passwd"),
        ("differ-hl-rel", "../../../../etc/passwd"),
    ] {
        let a = p.archive(name, &hardlink_escape_image(name, target));
        for sn in SNAPSHOTTERS {
            let r = same_outcome(&p, &format!("{name}-{sn}"), sn, &a, start);
            let n = nlink();
            let r = if n != n0 {
                Err(format!("/etc/passwd has {n} links, had {n0}"))
            } else {
                r
            };
            results.push((format!("{sn} hard link to {target}"), r));
        }
    }
    finish(version, "escapes", results);
}

#[test]
fn escapes_stay_inside_containerd_1_7() {
    escapes(Version::V1_7);
}

#[test]
fn escapes_stay_inside_containerd_2() {
    escapes(Version::V2);
}

// ---------------------------------------------------------------- 3. converted

fn pending_conversions(s: &ServeChild) -> u64 {
    s.json(&["stats", "--json"])["pending_conversions"]
        .as_u64()
        .unwrap()
}

/// containerd 2.x, overlayfs: a layer applied while strata still holds it
/// as received, and again (another namespace: fresh snapshots) once it is
/// converted; both unpacks give the same trees.
#[test]
fn as_received_and_converted_layers_apply_alike() {
    if !is_root() {
        return;
    }
    let start = now_secs();
    let sn = "overlayfs";
    let p = Pair::start(Version::V2, false, &["--convert-after", "10s"]);
    let main = p.archive("main", &main_image());
    let a0 = p.applied();
    let o = import(&p.proxy, "received", sn, &main);
    assert!(
        o.status.success(),
        "import failed: {}\n{}",
        stderr(&o),
        p.logs()
    );
    let pending = pending_conversions(&p.strata);
    let log = p.strata_log();
    assert_eq!(
        log.matches("applied a layer").count() - a0,
        3,
        "strata did not apply every layer:\n{}",
        p.logs()
    );
    assert!(
        pending >= 2 && !log.contains("blob converted"),
        "the gzip and zstd layers should still be as received right after the import \
         (pending conversions {pending}):\n{log}"
    );
    check_unpacked(&p.proxy, "received", sn, "differ-main", 3).unwrap();
    let first = snapshot_ids(&p.proxy, sn);
    assert_eq!(first.len(), 3, "{first:?}");

    let t = Instant::now();
    while pending_conversions(&p.strata) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "conversions not done after 180 s:\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let converted = p.strata_log().matches("blob converted").count();
    assert!(
        converted >= 2,
        "{converted} `blob converted` lines:\n{}",
        p.logs()
    );
    eprintln!(
        "conversions done {:.1} s after the first import ({converted} blobs)",
        t.elapsed().as_secs_f64()
    );

    let a1 = p.applied();
    let o = import(&p.proxy, "converted", sn, &main);
    assert!(
        o.status.success(),
        "second import failed: {}\n{}",
        stderr(&o),
        p.logs()
    );
    assert_eq!(p.applied() - a1, 3, "second import:\n{}", p.logs());
    check_unpacked(&p.proxy, "converted", sn, "differ-main", 3).unwrap();
    let all = snapshot_ids(&p.proxy, sn);
    let second: Vec<u64> = all.into_iter().filter(|i| !first.contains(i)).collect();
    assert_eq!(second.len(), 3, "{second:?}");
    let mut bad = Vec::new();
    for (a, b) in first.iter().zip(&second) {
        let (d, n) = compare_trees(
            &snapshot_tree(&p.proxy, sn, *a),
            &snapshot_tree(&p.proxy, sn, *b),
            start,
        );
        eprintln!(
            "snapshot {a} (as received) against {b} (converted): {n} paths, {} difference(s)",
            d.len()
        );
        if !d.is_empty() {
            bad.push(format!(
                "snapshot {a} (as received; \"local\" below) against {b} (converted; \"strata\"):\n  {}",
                d.join("\n  ")
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------- the comparison itself

/// The tree comparison reports each kind of difference (no containerd).
#[test]
fn tree_comparison_sees_differences() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (ra, rb) = (a.path().join("t"), b.path().join("t"));
    std::fs::create_dir(&ra).unwrap();
    for f in ["mode", "content", "mtime", "xattr", "linked", "gone"] {
        std::fs::write(ra.join(f), f).unwrap();
    }
    std::fs::hard_link(ra.join("linked"), ra.join("linked2")).unwrap();
    std::os::unix::fs::symlink("target-a", ra.join("sym")).unwrap();
    let old = UNIX_EPOCH + Duration::from_secs(T0);
    for e in std::fs::read_dir(&ra).unwrap() {
        let p = e.unwrap().path();
        if !p.is_symlink() {
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&ra)
        .arg(&rb)
        .status()
        .unwrap();
    assert!(st.success());
    let (d, _) = compare_trees(&ra, &rb, now_secs());
    assert!(d.is_empty(), "a copy differs: {d:?}");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rb.join("mode"), std::fs::Permissions::from_mode(0o4600)).unwrap();
    std::fs::write(rb.join("content"), "other").unwrap();
    std::fs::File::options()
        .write(true)
        .open(rb.join("content"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(rb.join("mtime"))
        .unwrap()
        .set_modified(old + Duration::from_nanos(1))
        .unwrap();
    let c = CString::new(rb.join("xattr").as_os_str().as_encoded_bytes()).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            c"user.test".as_ptr(),
            b"v".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, 0, "lsetxattr: {}", std::io::Error::last_os_error());
    std::fs::remove_file(rb.join("linked2")).unwrap();
    std::fs::copy(rb.join("linked"), rb.join("linked2")).unwrap();
    std::fs::remove_file(rb.join("gone")).unwrap();
    std::fs::remove_file(rb.join("sym")).unwrap();
    std::os::unix::fs::symlink("target-b", rb.join("sym")).unwrap();
    let (d, _) = compare_trees(&ra, &rb, now_secs());
    let all = d.join("\n");
    for want in [
        "mode: mode: local 0644, strata 4600",
        "content: sha256",
        "mtime: mtime: local 1600000000.000000000, strata 1600000000.000000001",
        "xattr: xattrs",
        "linked: nlink: local 2, strata 1",
        "hard links [\"linked\", \"linked2\"]: only in local",
        "gone: only in local",
        "sym: symlink target: local target-a, strata target-b",
    ] {
        assert!(all.contains(want), "{want:?} not reported:\n{all}");
    }
}

// ------------------------------------------------------- 4. a real image

fn run_ok(cmd: &str, args: &[&str]) {
    let o = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A two-layer image made by a real producer: umoci (pgzip layers, its own
/// tar writer and whiteouts) over real files of this machine: /etc, Perl's
/// library and the time zones (owners, modes, symlinks, hard links as
/// Debian installed them), then a second layer that deletes a directory and
/// files, changes modes and adds files.
fn umoci_image(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let (l, b) = (layout.to_str().unwrap(), bundle.to_str().unwrap());
    let image = format!("{l}:real");
    run_ok("umoci", &["init", "--layout", l]);
    run_ok("umoci", &["new", "--image", &image]);
    run_ok("umoci", &["unpack", "--image", &image, b]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/share")).unwrap();
    for src in ["/etc", "/usr/share/perl5", "/usr/share/zoneinfo"] {
        let to = rootfs.join(src.trim_start_matches('/'));
        run_ok("cp", &["-a", src, to.to_str().unwrap()]);
    }
    run_ok("umoci", &["repack", "--image", &image, b]);
    // A repack diffs against the bundle's own base: the second layer needs
    // a bundle unpacked from the first.
    let bundle2 = dir.join("bundle2");
    let b = bundle2.to_str().unwrap();
    run_ok("umoci", &["unpack", "--image", &image, b]);
    let rootfs = bundle2.join("rootfs");
    let r = |p: &str| rootfs.join(p);
    std::fs::remove_dir_all(r("usr/share/zoneinfo/America")).unwrap();
    std::fs::remove_file(r("etc/hostname")).ok();
    std::fs::remove_file(r("etc/passwd")).unwrap();
    std::fs::write(r("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::create_dir_all(r("srv/app/data")).unwrap();
    std::fs::write(r("srv/app/data/blob"), noise(300_000, 19)).unwrap();
    // chown clears setuid: it goes first.
    run_ok(
        "chown",
        &["-R", "1234:5678", r("srv/app").to_str().unwrap()],
    );
    run_ok("chmod", &["4750", r("srv/app/data/blob").to_str().unwrap()]);
    run_ok("umoci", &["repack", "--image", &image, b]);
    // Named for ctr, as `ctr images import` reads an OCI layout's index.
    let ip = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ip).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] =
        "docker.io/library/differ-real:1".into();
    std::fs::write(&ip, serde_json::to_vec(&index).unwrap()).unwrap();
    let archive = dir.join("real.tar");
    run_ok(
        "tar",
        &[
            "-C",
            l,
            "-cf",
            archive.to_str().unwrap(),
            "oci-layout",
            "index.json",
            "blobs",
        ],
    );
    archive
}

fn real_image_facts(sn: &str, trees: &[BTreeMap<String, Node>]) -> Vec<String> {
    let mut e = Vec::new();
    if trees.len() != 2 {
        return vec![format!("{} snapshots, not 2", trees.len())];
    }
    if trees[0].len() < 1000 {
        e.push(format!(
            "the first layer holds only {} paths",
            trees[0].len()
        ));
    }
    fact(&mut e, &trees[0], "layer 1", "etc/passwd", "a file", |n| {
        n.is_some_and(|n| n.kind == "file")
    });
    let l2 = &trees[1];
    fact(
        &mut e,
        l2,
        "layer 2",
        "srv/app/data/blob",
        "setuid, 1234:5678",
        |n| n.is_some_and(|n| n.perm == 0o4750 && n.uid == 1234 && n.gid == 5678),
    );
    let gone = "usr/share/zoneinfo/America";
    if sn == "overlayfs" {
        fact(&mut e, l2, "layer 2", gone, "a whiteout", is_whiteout);
    } else {
        fact(&mut e, l2, "layer 2", gone, "removed", |n| n.is_none());
        fact(
            &mut e,
            l2,
            "layer 2",
            "usr/share/zoneinfo/Europe",
            "kept",
            |n| n.is_some(),
        );
    }
    e
}

fn real_image(version: Version) {
    if !is_root() {
        return;
    }
    let start = now_secs();
    let p = Pair::start(version, true, &[]);
    let archive = umoci_image(p.work.path());
    let mut results = Vec::new();
    for sn in SNAPSHOTTERS {
        results.push((
            format!("{sn} umoci image of real files"),
            import_and_compare(
                &p,
                &format!("real-{sn}"),
                sn,
                &archive,
                "differ-real",
                2,
                start,
                &|t| real_image_facts(sn, t),
            ),
        ));
    }
    let sparse = p.archive("sparse", &sparse_image(p.work.path()));
    for sn in SNAPSHOTTERS {
        results.push((
            format!("{sn} GNU tar sparse files (PAX 0.0, 0.1, 1.0)"),
            import_and_compare(
                &p,
                &format!("sparse-{sn}"),
                sn,
                &sparse,
                "differ-sparse",
                3,
                start,
                &|t| sparse_facts(sn, t),
            ),
        ));
    }
    finish(version, "real image", results);
}

/// The bytes of the sparse files in `sparse_image`.
fn sparse_content(version: &str) -> Vec<u8> {
    let mut v = vec![0u8; 2 << 20];
    v[300_000..370_000].fill(0x5a);
    v[(1 << 20)..(1 << 20) + version.len()].copy_from_slice(version.as_bytes());
    v
}

/// Three layers made by GNU tar with `--sparse --format=pax`, one per sparse
/// version, each holding one sparse file.
fn sparse_image(dir: &Path) -> Vec<u8> {
    let mut layers = Vec::new();
    for version in ["0.0", "0.1", "1.0"] {
        let d = dir.join(format!("sparse-{version}"));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("sparse-{version}.bin"));
        let content = sparse_content(version);
        {
            use std::io::{Seek, SeekFrom};
            let mut file = std::fs::File::create(&f).unwrap();
            file.set_len(content.len() as u64).unwrap();
            file.seek(SeekFrom::Start(300_000)).unwrap();
            file.write_all(&content[300_000..370_000]).unwrap();
            file.seek(SeekFrom::Start(1 << 20)).unwrap();
            file.write_all(version.as_bytes()).unwrap();
        }
        let out = std::process::Command::new("tar")
            .args([
                "--sparse",
                "--format=pax",
                &format!("--sparse-version={version}"),
            ])
            .args([
                "--numeric-owner",
                "-C",
                d.to_str().unwrap(),
                "-cf",
                "-",
                ".",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        layers.push((out.stdout, Comp::Plain));
    }
    image_archive("differ-sparse", &layers)
}

fn sparse_facts(_sn: &str, trees: &[BTreeMap<String, Node>]) -> Vec<String> {
    let mut e = Vec::new();
    for (i, version) in ["0.0", "0.1", "1.0"].iter().enumerate() {
        let Some(t) = trees.get(i) else {
            e.push(format!("no snapshot for sparse version {version}"));
            continue;
        };
        let want = sha_hex(&sparse_content(version));
        fact(
            &mut e,
            t,
            version,
            &format!("sparse-{version}.bin"),
            "the expanded bytes",
            |n| n.is_some_and(|n| n.size == 2 << 20 && n.sha == want),
        );
    }
    e
}

#[test]
fn real_image_unpacks_alike_containerd_1_7() {
    real_image(Version::V1_7);
}

#[test]
fn real_image_unpacks_alike_containerd_2() {
    real_image(Version::V2);
}
