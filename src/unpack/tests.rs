//! Crafted layer tars applied into temp dirs. These run as root: ownership,
//! devices and `trusted.*` xattrs are checked for real.

use super::entry::{lgetxattr, lsetxattr, utimes};
use super::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use tar::{Builder, EntryType};

const MTIME: u64 = 1_600_000_000;

struct Tar(Builder<Vec<u8>>);

fn header(name: &[u8], ty: u8, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Raw bytes: `set_path` refuses the `..` and absolute names tested here.
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(EntryType::new(ty));
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

impl Tar {
    fn new() -> Tar {
        Tar(Builder::new(Vec::new()))
    }
    fn add(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Tar {
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn entry(
        &mut self,
        name: &str,
        ty: u8,
        mode: u32,
        f: impl FnOnce(&mut tar::Header),
    ) -> &mut Tar {
        let mut h = header(name.as_bytes(), ty, mode, 0);
        f(&mut h);
        self.add(h, &[])
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Tar {
        let h = header(name.as_bytes(), b'0', mode, data.len() as u64);
        self.add(h, data)
    }
    fn dir(&mut self, name: &str, mode: u32) -> &mut Tar {
        self.entry(name, b'5', mode, |_| {})
    }
    fn link(&mut self, name: &str, ty: u8, target: &str) -> &mut Tar {
        // A hardlink's mode is set on the inode it shares: give the target's.
        let mode = if ty == b'1' { 0o640 } else { 0o777 };
        self.entry(name, ty, mode, |h| {
            h.set_link_name_literal(target).unwrap();
        })
    }
    fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Tar {
        self.0.append_pax_extensions(recs.iter().copied()).unwrap();
        self
    }
    fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn opts(whiteouts: Whiteouts) -> ApplyOptions {
    ApplyOptions {
        cancel: None,
        whiteouts,
        parents: Vec::new(),
    }
}

fn run(root: &Path, tar: &mut Tar) -> Result<u64> {
    apply(root, &mut tar.bytes().as_slice(), &opts(Whiteouts::Remove))
}

fn meta(p: impl AsRef<Path>) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap()
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A root inside a scratch dir, so anything escaping it would show up beside it.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    fs::create_dir(&root).unwrap();
    (outer, root)
}

#[test]
fn every_entry_type_with_owner_mode_and_times() {
    let (_o, root) = sandbox();
    let mut t = Tar::new();
    t.entry("d/", b'5', 0o750, |h| {
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_000_000);
    });
    t.file("d/f", 0o640, b"hello");
    t.entry("d/s", b'2', 0o777, |h| {
        h.set_link_name_literal("f").unwrap();
        h.set_mtime(1_234_567);
        h.set_uid(3);
    });
    // Across directories, into a parent the tar never names.
    t.link("e/h", b'1', "d/f");
    t.entry("p", b'6', 0o600, |_| {});
    t.entry("c", b'3', 0o666, |h| {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    });
    t.entry("b", b'4', 0o660, |h| {
        h.set_device_major(7).unwrap();
        h.set_device_minor(5).unwrap();
    });
    // chown clears setuid: the mode must be set after it.
    let mut h = header(b"suid", b'0', 0o4755, 2);
    h.set_uid(1000);
    h.set_gid(1000);
    t.add(h, b"#!");
    let size = run(&root, &mut t).unwrap();
    assert_eq!(size, 7);

    let d = meta(root.join("d"));
    assert!(d.is_dir());
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 1000, 1001));
    // Set again after its children were created.
    assert_eq!((d.mtime(), d.mtime_nsec()), (1_000_000, 0));

    let f = meta(root.join("d/f"));
    assert_eq!(fs::read(root.join("d/f")).unwrap(), b"hello");
    assert_eq!((f.mode() & 0o7777, f.mtime()), (0o640, MTIME as i64));

    let s = meta(root.join("d/s"));
    assert!(s.file_type().is_symlink());
    assert_eq!(fs::read_link(root.join("d/s")).unwrap(), Path::new("f"));
    assert_eq!((s.mtime(), s.uid()), (1_234_567, 3));

    let h = meta(root.join("e/h"));
    assert_eq!(h.ino(), f.ino());
    assert_eq!(h.nlink(), 2);
    let e = meta(root.join("e"));
    assert_eq!((e.mode() & 0o7777, e.uid()), (0o755, 0));

    let p = meta(root.join("p"));
    assert!(p.file_type().is_fifo());
    assert_eq!(p.mode() & 0o7777, 0o600);
    let c = meta(root.join("c"));
    assert!(c.file_type().is_char_device());
    assert_eq!((libc::major(c.rdev()), libc::minor(c.rdev())), (1, 3));
    assert_eq!(c.mode() & 0o7777, 0o666);
    let b = meta(root.join("b"));
    assert!(b.file_type().is_block_device());
    assert_eq!((libc::major(b.rdev()), libc::minor(b.rdev())), (7, 5));

    let su = meta(root.join("suid"));
    assert_eq!(
        (su.mode() & 0o7777, su.uid(), su.gid()),
        (0o4755, 1000, 1000)
    );
}

#[test]
fn pax_records_set_times_ids_and_xattrs() {
    let (_o, root) = sandbox();
    let mut t = Tar::new();
    t.pax(&[
        ("mtime", b"1700000000.123456789"),
        ("atime", b"1600000000.5"),
        ("uid", b"4242"),
        ("SCHILY.xattr.user.x", b"val"),
        // Never taken from a layer (containerd refuses admin attributes).
        ("SCHILY.xattr.trusted.t", b"no"),
    ]);
    t.file("f", 0o644, b"x");
    // A later atime is kept; a time before the epoch becomes the epoch.
    t.pax(&[("mtime", b"-5.25"), ("atime", b"1650000000.000000001")]);
    t.file("g", 0o644, b"");
    t.pax(&[("mtime", b"-5.25")]);
    t.file("h", 0o644, b"");
    run(&root, &mut t).unwrap();

    let f = meta(root.join("f"));
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_700_000_000, 123_456_789));
    // The earlier atime gives way to mtime.
    assert_eq!((f.atime(), f.atime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!(f.uid(), 4242);
    let fp = bytes(&root)
        .iter()
        .chain(b"/f")
        .copied()
        .collect::<Vec<_>>();
    assert_eq!(lgetxattr(&fp, b"user.x").unwrap(), b"val");
    assert!(lgetxattr(&fp, b"trusted.t").is_err());

    let g = meta(root.join("g"));
    assert_eq!((g.mtime(), g.mtime_nsec()), (0, 0));
    assert_eq!((g.atime(), g.atime_nsec()), (1_650_000_000, 1));
    let h = meta(root.join("h"));
    assert_eq!((h.mtime(), h.atime()), (0, 0));
}

#[test]
fn long_names_from_gnu_and_pax() {
    let (_o, root) = sandbox();
    let gnu = format!("{}/{}", "a".repeat(90), "b".repeat(60));
    let pax = format!("{}/{}", "c".repeat(120), "d".repeat(100));
    let mut t = Tar::new();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(3);
    t.0.append_data(&mut h, &gnu, &b"gnu"[..]).unwrap();
    t.pax(&[("path", pax.as_bytes())]);
    t.file("short-name-ignored", 0o644, b"pax");
    run(&root, &mut t).unwrap();
    assert_eq!(fs::read(root.join(&gnu)).unwrap(), b"gnu");
    assert_eq!(fs::read(root.join(&pax)).unwrap(), b"pax");
    assert!(!root.join("short-name-ignored").exists());
}

#[test]
fn root_entry_is_not_applied() {
    let (_o, root) = sandbox();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o711)).unwrap();
    let mut t = Tar::new();
    t.dir("./", 0o777)
        .dir("/", 0o777)
        .dir(".", 0o777)
        .dir("a/..", 0o777);
    t.file("./x", 0o600, b"");
    run(&root, &mut t).unwrap();
    assert_eq!(meta(&root).mode() & 0o7777, 0o711);
    assert_eq!(names(&root), ["x"]);
}

#[test]
fn entries_replace_what_is_there_and_dirs_merge() {
    let (_o, root) = sandbox();
    fs::write(root.join("a"), "file").unwrap();
    fs::create_dir_all(root.join("b/sub")).unwrap();
    fs::create_dir(root.join("c")).unwrap();
    fs::write(root.join("c/old"), "").unwrap();
    let mut t = Tar::new();
    t.dir("a/", 0o755).file("a/x", 0o644, b"x");
    t.file("b", 0o600, b"now a file");
    t.dir("c/", 0o700).file("c/new", 0o644, b"");
    run(&root, &mut t).unwrap();
    assert!(meta(root.join("a")).is_dir());
    assert_eq!(names(&root.join("a")), ["x"]);
    assert_eq!(fs::read(root.join("b")).unwrap(), b"now a file");
    assert_eq!(names(&root.join("c")), ["new", "old"]);
    assert_eq!(meta(root.join("c")).mode() & 0o7777, 0o700);
}

#[test]
fn whiteouts_remove_what_they_hide() {
    let (_o, root) = sandbox();
    fs::write(root.join("x"), "").unwrap();
    fs::create_dir_all(root.join("t/deep/er")).unwrap();
    fs::write(root.join("t/deep/er/f"), "").unwrap();
    fs::write(root.join("keep"), "").unwrap();
    let mut t = Tar::new();
    t.file(".wh.x", 0o644, b"").file(".wh.t", 0o644, b"");
    t.file(".wh.missing", 0o644, b"");
    run(&root, &mut t).unwrap();
    assert_eq!(names(&root), ["keep"]);
}

#[test]
fn opaque_dir_keeps_only_what_this_layer_unpacked() {
    for marker_first in [true, false] {
        let (_o, root) = sandbox();
        fs::create_dir_all(root.join("o/olddir/x")).unwrap();
        fs::write(root.join("o/old"), "").unwrap();
        fs::create_dir(root.join("o/sub")).unwrap();
        fs::write(root.join("o/sub/stale"), "").unwrap();
        fs::write(root.join("sibling"), "").unwrap();
        let mut t = Tar::new();
        t.dir("o/", 0o755);
        if marker_first {
            t.file("o/.wh..wh..opq", 0o644, b"");
        }
        t.file("o/new", 0o644, b"n").dir("o/sub/", 0o755);
        t.file("o/sub/n", 0o644, b"");
        if !marker_first {
            t.file("o/.wh..wh..opq", 0o644, b"");
            // A second marker for the same dir does nothing.
            t.file("o/.wh..wh..opq", 0o644, b"");
        }
        run(&root, &mut t).unwrap();
        assert_eq!(
            names(&root),
            ["o", "sibling"],
            "marker first: {marker_first}"
        );
        assert_eq!(
            names(&root.join("o")),
            ["new", "sub"],
            "marker first: {marker_first}"
        );
        // `o/sub` was unpacked: kept, but its stale child is gone either way
        // (removed with `o` first, or by descending into it after).
        assert_eq!(
            names(&root.join("o/sub")),
            ["n"],
            "marker first: {marker_first}"
        );
    }
}

#[test]
fn overlay_whiteouts_become_devices_and_xattrs() {
    let (_o, root) = sandbox();
    let mut t = Tar::new();
    t.entry(".wh.x", b'0', 0o644, |h| {
        h.set_uid(7);
        h.set_gid(8);
    });
    t.dir("d/", 0o755).file("d/.wh..wh..opq", 0o644, b"");
    apply(&root, &mut t.bytes().as_slice(), &opts(Whiteouts::Overlay)).unwrap();
    assert_eq!(names(&root), ["d", "x"]);
    let x = meta(root.join("x"));
    assert!(x.file_type().is_char_device());
    assert_eq!((x.rdev(), x.uid(), x.gid()), (0, 7, 8));
    let d: Vec<u8> = bytes(&root).iter().chain(b"/d").copied().collect();
    assert_eq!(lgetxattr(&d, b"trusted.overlay.opaque").unwrap(), b"y");
    assert!(names(&root.join("d")).is_empty());
}

#[test]
fn overlay_implicit_parent_copies_the_lower_dir() {
    let (_o, root) = sandbox();
    let lower = tempfile::tempdir().unwrap();
    let lq = lower.path().join("p/q");
    fs::create_dir_all(&lq).unwrap();
    fs::set_permissions(&lq, fs::Permissions::from_mode(0o710)).unwrap();
    std::os::unix::fs::lchown(&lq, Some(5), Some(6)).unwrap();
    lsetxattr(bytes(&lq), b"user.a", b"1", 0).unwrap();
    lsetxattr(bytes(&lq), b"trusted.overlay.opaque", b"y", 0).unwrap();
    utimes(
        bytes(&lq),
        1_000_000_000_500_000_000,
        1_100_000_000_000_000_007,
    )
    .unwrap();
    // An emptier lower dir further down is not looked at.
    let below = tempfile::tempdir().unwrap();
    fs::create_dir_all(below.path().join("p/q")).unwrap();

    let mut t = Tar::new();
    t.file("p/q/f", 0o644, b"");
    let o = ApplyOptions {
        cancel: None,
        whiteouts: Whiteouts::Overlay,
        parents: vec![lower.path().to_path_buf(), below.path().to_path_buf()],
    };
    apply(&root, &mut t.bytes().as_slice(), &o).unwrap();

    let q = meta(root.join("p/q"));
    assert_eq!((q.mode() & 0o7777, q.uid(), q.gid()), (0o710, 5, 6));
    // Its mtime changed when `f` was made in it (containerd does not restore
    // the times of implicit parents); its atime did not.
    assert_eq!((q.atime(), q.atime_nsec()), (1_000_000_000, 500_000_000));
    let rq: Vec<u8> = bytes(&root).iter().chain(b"/p/q").copied().collect();
    assert_eq!(lgetxattr(&rq, b"user.a").unwrap(), b"1");
    assert!(lgetxattr(&rq, b"trusted.overlay.opaque").is_err());
    // Without a lower dir holding it, an implicit parent is a plain 0755 dir.
    let mut t = Tar::new();
    t.file("z/f", 0o644, b"");
    apply(&root, &mut t.bytes().as_slice(), &o).unwrap();
    let z = meta(root.join("z"));
    assert_eq!((z.mode() & 0o7777, z.uid()), (0o755, 0));
}

#[test]
fn dotdot_and_absolute_names_stay_inside() {
    let (outer, root) = sandbox();
    let mut t = Tar::new();
    t.file("../../x", 0o644, b"1").file("/etc/x", 0o644, b"2");
    t.file("a/../../../y", 0o644, b"3");
    run(&root, &mut t).unwrap();
    assert_eq!(fs::read(root.join("x")).unwrap(), b"1");
    assert_eq!(fs::read(root.join("etc/x")).unwrap(), b"2");
    assert_eq!(fs::read(root.join("y")).unwrap(), b"3");
    assert_eq!(names(outer.path()), ["root"]);
}

#[test]
fn symlinked_parents_resolve_inside_the_root() {
    let (outer, root) = sandbox();
    let mut t = Tar::new();
    t.link("evil", b'2', "/");
    t.file("evil/tmp/strata-unpack-pwned", 0o644, b"1");
    t.link("evil2", b'2', "../../..");
    t.file("evil2/pwned2", 0o644, b"2");
    t.dir("real/", 0o755).link("rel", b'2', "real/../real");
    t.file("rel/in", 0o644, b"3");
    run(&root, &mut t).unwrap();
    assert_eq!(
        fs::read(root.join("tmp/strata-unpack-pwned")).unwrap(),
        b"1"
    );
    assert!(!Path::new("/tmp/strata-unpack-pwned").exists());
    assert_eq!(fs::read(root.join("pwned2")).unwrap(), b"2");
    assert_eq!(fs::read(root.join("real/in")).unwrap(), b"3");
    assert_eq!(names(outer.path()), ["root"]);
}

#[test]
fn hardlinks_resolve_inside_the_root() {
    for target in ["/etc/passwd", "../../../etc/passwd"] {
        // No etc/passwd in the root: the link fails rather than reach the host's.
        let (outer, root) = sandbox();
        let mut t = Tar::new();
        t.link("h", b'1', target);
        assert!(run(&root, &mut t).is_err(), "{target}");
        assert!(names(&root).is_empty());
        assert_eq!(names(outer.path()), ["root"]);

        let (_outer, root) = sandbox();
        let mut t = Tar::new();
        t.file("etc/passwd", 0o644, b"root's own");
        t.link("h", b'1', target);
        run(&root, &mut t).unwrap();
        let h = meta(root.join("h"));
        assert_eq!(h.ino(), meta(root.join("etc/passwd")).ino(), "{target}");
        assert_ne!(h.ino(), meta("/etc/passwd").ino());
    }
}

#[test]
fn symlink_cycle_is_an_error() {
    let (outer, root) = sandbox();
    let mut t = Tar::new();
    t.link("a", b'2', "b").link("b", b'2', "a");
    t.file("a/x", 0o644, b"");
    let e = run(&root, &mut t).unwrap_err();
    assert!(e.to_string().contains("too many links"), "{e}");
    assert_eq!(names(&root), ["a", "b"]);
    assert_eq!(names(outer.path()), ["root"]);
}

#[test]
fn invalid_whiteouts_are_rejected() {
    for name in [".wh..", "d/.wh...", ".wh."] {
        let (outer, root) = sandbox();
        let mut t = Tar::new();
        t.file(name, 0o644, b"");
        let e = run(&root, &mut t).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{name}: {e}");
        assert!(e.to_string().contains("invalid whiteout name"), "{e}");
        assert_eq!(names(outer.path()), ["root"]);
    }
}

#[test]
fn unhandled_types_are_invalid_and_global_headers_are_skipped() {
    let (_o, root) = sandbox();
    let mut t = Tar::new();
    t.entry("vol", b'V', 0o644, |_| {});
    let e = run(&root, &mut t).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("unhandled tar header type"), "{e}");

    let (_o, root) = sandbox();
    let mut t = Tar::new();
    let rec = b"26 comment=made by a test\n";
    t.add(
        header(b"pax_global_header", b'g', 0o644, rec.len() as u64),
        rec,
    );
    t.file("f", 0o644, b"abc");
    assert_eq!(run(&root, &mut t).unwrap(), 3);
    assert_eq!(names(&root), ["f"]);
}

#[test]
fn lexical_helpers_match_go() {
    use super::entry::parse_pax_time;
    use super::rootpath::{clean, split};
    for (p, want) in [
        ("", "."),
        ("./", "."),
        ("a//b/./c/", "a/b/c"),
        ("/../a/..", "/"),
        ("../../x", "../../x"),
        ("a/../../b", "../b"),
        ("//etc/x", "/etc/x"),
    ] {
        assert_eq!(clean(p.as_bytes()), want.as_bytes(), "{p}");
    }
    assert_eq!(split(b"a/b/c"), (&b"a/b/"[..], &b"c"[..]));
    assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    assert_eq!(parse_pax_time(b"1.5"), Some(1_500_000_000));
    assert_eq!(parse_pax_time(b"-1.5"), Some(-1_500_000_000));
    assert_eq!(parse_pax_time(b"2.1234567899"), Some(2_123_456_789));
    assert_eq!(parse_pax_time(b"2.x"), None);
}

// ------------------------------------------------ framing as Go reads it

fn refused(mut tar: Vec<u8>, what: &str) {
    let (_outer, root) = sandbox();
    tar.extend_from_slice(&[0u8; 1024]);
    let e = apply(&root, &mut tar.as_slice(), &opts(Whiteouts::Remove)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(_)),
        "{what}: expected InvalidArgument, got {e:?}"
    );
}

#[test]
fn a_header_only_entry_claiming_a_body_is_refused() {
    // Go reads no body after a symlink; the tar crate would skip 1024 bytes,
    // and with them the header of `bin/sh` hidden there.
    let mut t = Tar::new();
    let mut h = header(b"lnk", b'2', 0o777, 0);
    h.set_link_name_literal("target").unwrap();
    h.set_size(1024);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    let hidden = t.file("bin/sh", 0o755, b"#!/bin/sh\n").bytes();
    raw.extend_from_slice(&hidden[..1024]);
    refused(raw, "symlink with a body");
}

#[test]
fn pax_names_given_twice_empty_or_with_nul_are_refused() {
    for recs in [
        vec![("path", &b"a"[..]), ("path", &b"b"[..])],
        vec![("path", &b""[..])],
        vec![("linkpath", &b"x\0y"[..])],
        vec![("size", &b"1"[..]), ("size", &b"1"[..])],
    ] {
        let tar = Tar::new().pax(&recs).file("f", 0o644, b"x").bytes();
        refused(tar, &format!("{recs:?}"));
    }
}

#[test]
fn an_oversized_metadata_header_is_refused_before_it_is_read() {
    // A 2 MiB PAX body: Go refuses it, and it is never held in memory.
    let mut h = header(b"PaxHeaders/f", b'x', 0o644, 2 << 20);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.resize(512 + (2 << 20), b'a');
    refused(raw, "2 MiB PAX header");
}

#[test]
fn a_header_after_one_zero_block_is_refused_and_two_end_the_archive() {
    let first = Tar::new().file("a", 0o644, b"a").bytes();
    // The builder ends with two zero blocks: keep one, then a header.
    let end = first.len() - 1024;
    let mut raw = first[..end + 512].to_vec();
    raw.extend_from_slice(&Tar::new().file("b", 0o644, b"b").bytes());
    refused(raw, "header after one zero block");

    // Two zero blocks end it: what follows is padding, ignored as Go does.
    let (_outer, root) = sandbox();
    let mut ok = first.clone();
    ok.extend_from_slice(&[7u8; 512]);
    apply(&root, &mut ok.as_slice(), &opts(Whiteouts::Remove)).unwrap();
    assert_eq!(names(&root), ["a"]);
}

#[test]
fn a_cancelled_apply_stops_at_the_next_entry() {
    let (_outer, root) = sandbox();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let o = ApplyOptions {
        cancel: Some(flag),
        ..opts(Whiteouts::Remove)
    };
    let tar = Tar::new().file("a", 0o644, b"a").bytes();
    let e = apply(&root, &mut tar.as_slice(), &o).unwrap_err();
    assert!(matches!(e, Error::Cancelled(_)), "{e:?}");
    assert!(names(&root).is_empty());
}

// ------------------------------------------------ GNU sparse files (PAX)

#[test]
fn pax_sparse_files_of_every_version_expand_to_their_bytes() {
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("sp");
    // A 3 MiB file: a hole, 70 KB of data, a hole, 5 bytes, a hole at the end.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = fs::File::create(&f).unwrap();
        file.set_len(3 << 20).unwrap();
        file.seek(SeekFrom::Start(1 << 20)).unwrap();
        file.write_all(&[0x5a; 70_000]).unwrap();
        file.seek(SeekFrom::Start(2 << 20)).unwrap();
        file.write_all(b"tail!").unwrap();
    }
    let want = fs::read(&f).unwrap();
    for version in ["0.0", "0.1", "1.0"] {
        let out = std::process::Command::new("tar")
            .args([
                "--sparse",
                "--format=pax",
                &format!("--sparse-version={version}"),
            ])
            .args(["-C", src.path().to_str().unwrap(), "-cf", "-", "sp"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // GNU tar really wrote a sparse entry (less than the file's size).
        assert!(out.stdout.len() < 1 << 20, "{version}: not sparse");
        let (_outer, root) = sandbox();
        let size = apply(&root, &mut out.stdout.as_slice(), &opts(Whiteouts::Remove)).unwrap();
        assert_eq!(names(&root), ["sp"], "{version}: the real name is used");
        assert_eq!(fs::read(root.join("sp")).unwrap(), want, "{version}");
        assert_eq!(size, 3 << 20, "{version}: the real size is counted");
    }
}
