//! Every kind of tar entry a layer can hold, pushed through the gRPC API of an
//! in-process daemon: the blob must come back byte for byte under its sha256,
//! file bodies must be chunked (and so deduplicated) whatever headers precede
//! them, and damaged or padded archives must still round-trip exactly.

mod common;
use common::*;
use proptest::prelude::*;
use strata::proto::strata::v1 as pb;

const BLOCK: usize = 512;

// ---------------------------------------------------------------------------
// Archive generator
// ---------------------------------------------------------------------------

/// The entry kinds the generator can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// ustar regular file ('0').
    File,
    /// Regular file with no body.
    Empty,
    /// GNU regular file whose name holds raw non-UTF-8 bytes (0xff 0xfe ...).
    NonUtf8,
    /// GNU regular file whose size field is GNU base-256 rather than octal.
    Base256Size,
    /// ustar regular file whose path is split over the prefix and name fields.
    UstarPrefix,
    /// GNU long name ('L') then a regular file.
    LongName,
    /// PAX extended header ('x') with a long `path=` and an `mtime=`, then a file.
    Pax,
    /// PAX extended header with a `size=` record; the ustar size field says 0.
    PaxSizeOverride,
    /// PAX extended header with a `size=` record, then a GNU long name, then the
    /// file (ustar size field 0): the size applies to the file, not the long name.
    PaxThenLongName,
    /// PAX extended header with a long `linkpath=`, then a symlink.
    PaxLinkpath,
    /// PAX global header ('g').
    PaxGlobal,
    /// Old GNU sparse file ('S'), map in the header only.
    Sparse,
    /// Old GNU sparse file with the isextended flag and extension blocks.
    SparseExtended,
    /// Hard link ('1').
    HardLink,
    /// GNU long link name ('K') then a hard link.
    LongHardLink,
    /// Symbolic link ('2').
    Symlink,
    /// GNU long link name ('K') then a symlink.
    LongSymlink,
    /// Character device ('3').
    CharDev,
    /// Block device ('4').
    BlockDev,
    /// Directory ('5').
    Dir,
    /// FIFO ('6').
    Fifo,
}

const ALL_KINDS: [Kind; 21] = [
    Kind::File,
    Kind::Empty,
    Kind::NonUtf8,
    Kind::Base256Size,
    Kind::UstarPrefix,
    Kind::LongName,
    Kind::Pax,
    Kind::PaxSizeOverride,
    Kind::PaxThenLongName,
    Kind::PaxLinkpath,
    Kind::PaxGlobal,
    Kind::Sparse,
    Kind::SparseExtended,
    Kind::HardLink,
    Kind::LongHardLink,
    Kind::Symlink,
    Kind::LongSymlink,
    Kind::CharDev,
    Kind::BlockDev,
    Kind::Dir,
    Kind::Fifo,
];

impl Kind {
    /// Kinds whose entry carries a file body taken from the body pool.
    fn has_body(self) -> bool {
        matches!(
            self,
            Kind::File
                | Kind::NonUtf8
                | Kind::Base256Size
                | Kind::UstarPrefix
                | Kind::LongName
                | Kind::Pax
                | Kind::PaxSizeOverride
                | Kind::PaxThenLongName
                | Kind::Sparse
                | Kind::SparseExtended
        )
    }
}

/// One entry: its kind, which body of the pool it carries (if any), and a tag
/// that varies its names and numbers.
#[derive(Debug, Clone, Copy)]
struct Ent {
    kind: Kind,
    body: usize,
    tag: u32,
}

/// What a tar reader should see for one entry (after long names and PAX
/// records are applied, sparse files expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Visible {
    typeflag: u8,
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    content: Vec<u8>,
}

/// A generated archive and what the splitter should make of it.
struct Built {
    data: Vec<u8>,
    /// Bytes the splitter should keep as literals: every header block, sparse
    /// extension block, metadata body (long names, PAX records) and padding.
    literal: u64,
    /// Offsets of the real header blocks (for corrupting one).
    headers: Vec<usize>,
    visible: Vec<Visible>,
}

struct Writer {
    out: Vec<u8>,
    literal: u64,
    headers: Vec<usize>,
}

impl Writer {
    fn header(&mut self, mut b: [u8; BLOCK]) {
        set_cksum(&mut b);
        self.headers.push(self.out.len());
        self.out.extend_from_slice(&b);
        self.literal += BLOCK as u64;
    }

    /// A header block written as it is (its checksum already set, or broken on purpose).
    fn raw_header(&mut self, b: &[u8; BLOCK]) {
        self.headers.push(self.out.len());
        self.out.extend_from_slice(b);
        self.literal += BLOCK as u64;
    }

    /// A block that is not itself a header (sparse extension), kept literal.
    fn ext_block(&mut self, b: &[u8; BLOCK]) {
        self.out.extend_from_slice(b);
        self.literal += BLOCK as u64;
    }

    fn pad(&mut self, len: usize) -> u64 {
        let pad = (BLOCK - len % BLOCK) % BLOCK;
        self.out.resize(self.out.len() + pad, 0);
        pad as u64
    }

    /// Body of a metadata entry (long name, PAX records): literal.
    fn meta_body(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
        let pad = self.pad(b.len());
        self.literal += b.len() as u64 + pad;
    }

    /// File content: chunked; only its padding is literal.
    fn data_body(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
        let pad = self.pad(b.len());
        self.literal += pad;
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = field.len() - 1);
    assert_eq!(
        s.len(),
        field.len() - 1,
        "{v} does not fit an octal field of {}",
        field.len()
    );
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn set_cksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| x as u32).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[derive(Clone, Copy)]
struct Hdr<'a> {
    name: &'a [u8],
    typeflag: u8,
    size: u64,
    mode: u64,
    mtime: u64,
    link: &'a [u8],
    /// GNU magic ("ustar  \0") instead of POSIX ustar ("ustar\0" "00").
    gnu: bool,
    prefix: &'a [u8],
    dev: (u64, u64),
    uname: &'a str,
}

impl<'a> Hdr<'a> {
    fn new(name: &'a [u8], typeflag: u8, size: u64, mtime: u64) -> Self {
        Hdr {
            name,
            typeflag,
            size,
            mode: 0o644,
            mtime,
            link: b"",
            gnu: false,
            prefix: b"",
            dev: (0, 0),
            uname: "root",
        }
    }

    /// The block, without its checksum (`Writer::header` sets it).
    fn block(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let n = self.name.len().min(100);
        b[..n].copy_from_slice(&self.name[..n]);
        octal(&mut b[100..108], self.mode);
        octal(&mut b[108..116], 1000);
        octal(&mut b[116..124], 1000);
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = self.typeflag;
        let n = self.link.len().min(100);
        b[157..157 + n].copy_from_slice(&self.link[..n]);
        if self.gnu {
            b[257..265].copy_from_slice(b"ustar  \0");
        } else {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
            assert!(self.prefix.len() <= 155);
            b[345..345 + self.prefix.len()].copy_from_slice(self.prefix);
        }
        let u = self.uname.as_bytes();
        b[265..265 + u.len()].copy_from_slice(u);
        b[297..297 + u.len()].copy_from_slice(u);
        octal(&mut b[329..337], self.dev.0);
        octal(&mut b[337..345], self.dev.1);
        b
    }
}

/// One PAX record: "<len> key=value\n", where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

/// A GNU 'L' or 'K' entry holding `long` (NUL-terminated) for the next header.
fn gnu_long(w: &mut Writer, typeflag: u8, long: &[u8]) {
    let mut body = long.to_vec();
    body.push(0);
    let mut h = Hdr::new(b"././@LongLink", typeflag, body.len() as u64, 0);
    h.gnu = true;
    w.header(h.block());
    w.meta_body(&body);
}

fn pax_header(w: &mut Writer, typeflag: u8, name: &[u8], records: &[u8], mtime: u64) {
    w.header(Hdr::new(name, typeflag, records.len() as u64, mtime).block());
    w.meta_body(records);
}

/// An old GNU sparse entry storing `body` as segments separated by holes.
/// Every segment but the last is a multiple of 512 bytes, as GNU tar writes them.
fn sparse_entry(
    w: &mut Writer,
    name: &[u8],
    body: &[u8],
    want_segments: usize,
    tag: u32,
    mtime: u64,
) -> Vec<u8> {
    let mut segs: Vec<(u64, u64)> = Vec::new(); // (offset in the file, length)
    let mut off = if tag.is_multiple_of(2) { 0 } else { 4096 };
    if body.is_empty() {
        segs.push((off, 0));
    } else {
        let per = body.len().div_ceil(want_segments.max(1));
        let step = per.div_ceil(BLOCK).max(1) * BLOCK;
        let mut at = 0;
        let mut i = 0u64;
        while at < body.len() {
            let len = step.min(body.len() - at);
            segs.push((off, len as u64));
            off += len as u64 + BLOCK as u64 * ((tag as u64 + i) % 7 + 1);
            at += len;
            i += 1;
        }
    }
    let real = segs.last().map(|&(o, l)| o + l).unwrap();
    let mut h = Hdr::new(name, b'S', body.len() as u64, mtime);
    h.gnu = true;
    let mut b = h.block();
    let put = |b: &mut [u8], at: usize, (o, l): (u64, u64)| {
        octal(&mut b[at..at + 12], o);
        octal(&mut b[at + 12..at + 24], l);
    };
    for (i, s) in segs.iter().take(4).enumerate() {
        put(&mut b, 386 + 24 * i, *s);
    }
    let rest: Vec<_> = segs.iter().skip(4).copied().collect();
    b[482] = (!rest.is_empty()) as u8;
    octal(&mut b[483..495], real);
    w.header(b);
    let groups: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
    for (g, group) in groups.iter().enumerate() {
        let mut e = [0u8; BLOCK];
        for (i, s) in group.iter().enumerate() {
            put(&mut e, 24 * i, *s);
        }
        e[504] = (g + 1 < groups.len()) as u8;
        w.ext_block(&e);
    }
    w.data_body(body);
    // What a reader extracts: the segments at their offsets, zeros between.
    let mut expanded = vec![0u8; real as usize];
    let mut at = 0;
    for (o, l) in segs {
        expanded[o as usize..(o + l) as usize].copy_from_slice(&body[at..at + l as usize]);
        at += l as usize;
    }
    expanded
}

/// Writes a tar of `entries` (bodies from `bodies`), then `eoa_blocks` zero
/// blocks, then `trailer`. `variant` changes every entry's metadata (mtimes,
/// owner names, PAX times) but no name and no body.
fn build(
    bodies: &[Vec<u8>],
    entries: &[Ent],
    eoa_blocks: usize,
    trailer: &[u8],
    variant: u64,
) -> Built {
    let mut w = Writer {
        out: Vec::new(),
        literal: 0,
        headers: Vec::new(),
    };
    let mut visible = Vec::new();
    let uname = format!("user{variant}");
    for (i, e) in entries.iter().enumerate() {
        let t = e.tag;
        let body: &[u8] = if e.kind.has_body() {
            &bodies[e.body % bodies.len()]
        } else {
            b""
        };
        let mtime = 1_600_000_000 + variant * 1_000_003 + i as u64;
        let mut vis = |typeflag: u8, path: &[u8], link: Option<&[u8]>, content: &[u8]| {
            visible.push(Visible {
                typeflag,
                path: path.to_vec(),
                link: link.map(|l| l.to_vec()),
                content: content.to_vec(),
            })
        };
        match e.kind {
            Kind::File | Kind::Empty => {
                let name = format!("dir{}/file-{i}-{t}.bin", t % 5).into_bytes();
                let mut h = Hdr::new(&name, b'0', body.len() as u64, mtime);
                h.uname = &uname;
                w.header(h.block());
                w.data_body(body);
                vis(b'0', &name, None, body);
            }
            Kind::NonUtf8 => {
                let mut name = b"bin/\xff\xfe".to_vec();
                name.extend_from_slice(format!("-{i}-{t}-").as_bytes());
                name.extend_from_slice(b"\x80\xc3(\xfe");
                let mut h = Hdr::new(&name, b'0', body.len() as u64, mtime);
                h.gnu = true;
                h.uname = &uname;
                w.header(h.block());
                w.data_body(body);
                vis(b'0', &name, None, body);
            }
            Kind::Base256Size => {
                let name = format!("b256/file-{i}-{t}").into_bytes();
                let mut h = Hdr::new(&name, b'0', 0, mtime);
                h.gnu = true;
                h.uname = &uname;
                let mut b = h.block();
                b[124] = 0x80;
                b[125..128].fill(0);
                b[128..136].copy_from_slice(&(body.len() as u64).to_be_bytes());
                w.header(b);
                w.data_body(body);
                vis(b'0', &name, None, body);
            }
            Kind::UstarPrefix => {
                let prefix =
                    format!("usr/share/{}/{i}", "p".repeat(60 + (t % 60) as usize)).into_bytes();
                let name = format!("{}-{i}.dat", "n".repeat(50 + (t % 40) as usize)).into_bytes();
                let mut h = Hdr::new(&name, b'0', body.len() as u64, mtime);
                h.prefix = &prefix;
                h.uname = &uname;
                w.header(h.block());
                w.data_body(body);
                let path = [&prefix[..], b"/", &name[..]].concat();
                vis(b'0', &path, None, body);
            }
            Kind::LongName => {
                let name = format!(
                    "very/long/{}/file-{i}-{t}.bin",
                    "d".repeat(100 + (t % 200) as usize)
                )
                .into_bytes();
                gnu_long(&mut w, b'L', &name);
                let mut h = Hdr::new(&name, b'0', body.len() as u64, mtime);
                h.gnu = true;
                h.uname = &uname;
                w.header(h.block());
                w.data_body(body);
                vis(b'0', &name, None, body);
            }
            Kind::Pax | Kind::PaxSizeOverride => {
                let path = format!(
                    "pax/{}/file-{i}-{t}.bin",
                    "q".repeat(120 + (t % 250) as usize)
                )
                .into_bytes();
                let mut records =
                    pax_record("mtime", format!("{mtime}.{:09}", variant * 7).as_bytes());
                records.extend(pax_record("path", &path));
                let size_field = if e.kind == Kind::PaxSizeOverride {
                    records.extend(pax_record("size", body.len().to_string().as_bytes()));
                    0
                } else {
                    body.len() as u64
                };
                records.extend(pax_record(
                    "comment",
                    format!("variant {variant}").as_bytes(),
                ));
                pax_header(
                    &mut w,
                    b'x',
                    format!("PaxHeaders.0/file-{i}").as_bytes(),
                    &records,
                    mtime,
                );
                let mut h = Hdr::new(&path, b'0', size_field, mtime);
                h.uname = &uname;
                w.header(h.block());
                w.data_body(body);
                vis(b'0', &path, None, body);
            }
            Kind::PaxThenLongName => {
                let name = format!(
                    "gnu+pax/{}/file-{i}-{t}.bin",
                    "m".repeat(100 + (t % 100) as usize)
                )
                .into_bytes();
                let mut records = pax_record("size", body.len().to_string().as_bytes());
                records.extend(pax_record("mtime", mtime.to_string().as_bytes()));
                pax_header(
                    &mut w,
                    b'x',
                    format!("PaxHeaders.0/gnu-{i}").as_bytes(),
                    &records,
                    mtime,
                );
                gnu_long(&mut w, b'L', &name);
                let mut h = Hdr::new(&name, b'0', 0, mtime);
                h.gnu = true;
                h.uname = &uname;
                w.header(h.block());
                w.data_body(body);
                vis(b'0', &name, None, body);
            }
            Kind::PaxLinkpath => {
                let name = format!("paxlink-{i}-{t}").into_bytes();
                let target = format!("../targets/{}/t-{i}", "l".repeat(110 + (t % 100) as usize))
                    .into_bytes();
                let mut records = pax_record("linkpath", &target);
                records.extend(pax_record("mtime", mtime.to_string().as_bytes()));
                pax_header(
                    &mut w,
                    b'x',
                    format!("PaxHeaders.0/paxlink-{i}").as_bytes(),
                    &records,
                    mtime,
                );
                let mut h = Hdr::new(&name, b'2', 0, mtime);
                h.link = &target;
                h.mode = 0o777;
                w.header(h.block());
                vis(b'2', &name, Some(&target), b"");
            }
            Kind::PaxGlobal => {
                let name = format!("pax_global_header-{i}").into_bytes();
                let mut records = pax_record(
                    "comment",
                    format!("global {t} variant {variant}").as_bytes(),
                );
                records.extend(pax_record("mtime", mtime.to_string().as_bytes()));
                pax_header(&mut w, b'g', &name, &records, mtime);
                vis(b'g', &name, None, &records);
            }
            Kind::Sparse | Kind::SparseExtended => {
                let name = format!("sparse/file-{i}-{t}.img").into_bytes();
                let want = if e.kind == Kind::Sparse {
                    1 + (t % 4) as usize
                } else {
                    5 + (t % 60) as usize
                };
                let expanded = sparse_entry(&mut w, &name, body, want, t, mtime);
                vis(b'S', &name, None, &expanded);
            }
            Kind::HardLink | Kind::LongHardLink | Kind::Symlink | Kind::LongSymlink => {
                let (typeflag, long) = match e.kind {
                    Kind::HardLink => (b'1', false),
                    Kind::LongHardLink => (b'1', true),
                    Kind::Symlink => (b'2', false),
                    _ => (b'2', true),
                };
                let name = format!("link-{i}-{t}").into_bytes();
                let target = if long {
                    format!("target/{}/file-{t}", "k".repeat(100 + (t % 150) as usize)).into_bytes()
                } else {
                    format!("dir{}/file-0-{t}.bin", t % 5).into_bytes()
                };
                if long {
                    gnu_long(&mut w, b'K', &target);
                }
                let mut h = Hdr::new(&name, typeflag, 0, mtime);
                h.link = &target;
                h.gnu = long;
                h.uname = &uname;
                w.header(h.block());
                vis(typeflag, &name, Some(&target), b"");
            }
            Kind::CharDev | Kind::BlockDev | Kind::Dir | Kind::Fifo => {
                let (typeflag, name, dev) = match e.kind {
                    Kind::CharDev => (b'3', format!("dev/tty{i}-{t}"), (4, (t % 64) as u64)),
                    Kind::BlockDev => (b'4', format!("dev/sd{i}-{t}"), (8, (t % 16) as u64)),
                    Kind::Dir => (b'5', format!("dir-{i}-{t}/"), (0, 0)),
                    _ => (b'6', format!("run/fifo-{i}-{t}"), (0, 0)),
                };
                let mut h = Hdr::new(name.as_bytes(), typeflag, 0, mtime);
                h.dev = dev;
                h.mode = if typeflag == b'5' { 0o755 } else { 0o600 };
                h.uname = &uname;
                w.header(h.block());
                vis(typeflag, name.as_bytes(), None, b"");
            }
        }
    }
    w.out.resize(w.out.len() + eoa_blocks * BLOCK, 0);
    w.out.extend_from_slice(trailer);
    Built {
        data: w.out,
        literal: w.literal,
        headers: w.headers,
        visible,
    }
}

/// Checks a generated archive with an independent reader (the `tar` crate), so
/// the tests below exercise real tar kinds rather than bytes that merely look
/// like them.
fn assert_tar_crate_reads(built: &Built) {
    let mut ar = tar::Archive::new(&built.data[..]);
    let mut got = Vec::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("a valid entry");
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut content).expect("entry body");
        got.push(Visible {
            typeflag: e.header().entry_type().as_byte(),
            path: e.path_bytes().into_owned(),
            link: e.link_name_bytes().map(|l| l.into_owned()),
            content,
        });
    }
    assert_eq!(
        got.len(),
        built.visible.len(),
        "entry count as the tar crate reads it"
    );
    for (i, (g, w)) in got.iter().zip(&built.visible).enumerate() {
        assert_eq!(
            (g.typeflag, &g.path, &g.link),
            (w.typeflag, &w.path, &w.link),
            "entry {i} as the tar crate reads it"
        );
        assert!(
            g.content == w.content,
            "entry {i}: content differs ({} vs {} bytes)",
            g.content.len(),
            w.content.len()
        );
    }
}

/// Pushes `data`, checks the digest and size the daemon reports and that the
/// blob reads back identically; returns the push response and the blob info.
async fn round_trip(
    c: &mut Client,
    data: &[u8],
    piece: usize,
    what: &str,
) -> (pb::PushResponse, pb::BlobInfo) {
    let r = push_as(c, "", "", data, piece)
        .await
        .unwrap_or_else(|e| panic!("{what}: push failed: {e}"));
    assert_eq!(r.digest, sha256_digest(data), "{what}: digest");
    assert_eq!(r.size, data.len() as u64, "{what}: size");
    let back = read_all(c, &r.digest).await;
    assert!(
        back == data,
        "{what}: read back {} bytes differ from the {} pushed",
        back.len(),
        data.len()
    );
    let info = stat(c, &r.digest).await;
    assert_eq!(info.size, data.len() as u64, "{what}: stat size");
    (r, info)
}

fn one(kind: Kind, tag: u32) -> Ent {
    Ent { kind, body: 0, tag }
}

// ---------------------------------------------------------------------------
// Property test
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut the archive at this many thousandths of its length.
    Truncate(u32),
    /// Break the checksum of one header.
    Corrupt(prop::sample::Index),
}

#[derive(Debug, Clone)]
struct Case {
    /// (length, seed) of each body in the pool; entries pick from it, so bodies repeat.
    bodies: Vec<(usize, u64)>,
    entries: Vec<Ent>,
    eoa_blocks: usize,
    /// 0: noise, 1: zeros, 2: another tar appended.
    trailer_kind: u8,
    trailer_len: usize,
    damage: Damage,
    piece: usize,
    piece2: usize,
    range: (u64, u64),
}

fn body_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..3000,
        1 => (0usize..8).prop_map(|k| k * BLOCK),
        2 => 0usize..300_000,
    ]
}

fn piece_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        2usize..600,
        Just(512),
        600usize..70_000,
        60_000usize..1_200_000
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let ent = (
        prop::sample::select(ALL_KINDS.to_vec()),
        0usize..4,
        0u32..1000,
    )
        .prop_map(|(kind, body, tag)| Ent { kind, body, tag });
    let damage = prop_oneof![
        4 => Just(Damage::None),
        1 => (0u32..1000).prop_map(Damage::Truncate),
        1 => any::<prop::sample::Index>().prop_map(Damage::Corrupt),
    ];
    (
        prop::collection::vec((body_len(), any::<u64>()), 1..4),
        prop_oneof![1 => prop::collection::vec(ent.clone(), 0..1), 9 => prop::collection::vec(ent, 1..12)],
        prop_oneof![Just(2usize), 1usize..21],
        (0u8..3, prop_oneof![Just(0usize), 1usize..3000, 10_000usize..200_000]),
        damage,
        (piece_size(), piece_size()),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(|(bodies, entries, eoa_blocks, (trailer_kind, trailer_len), damage, (piece, piece2), range)| Case {
            bodies,
            entries,
            eoa_blocks,
            trailer_kind,
            trailer_len,
            damage,
            piece,
            piece2,
            range,
        })
}

fn trailer(kind: u8, len: usize, seed: u64) -> Vec<u8> {
    match kind {
        0 => noise(len, seed),
        1 => vec![0u8; len],
        _ => {
            let body = noise(len, seed ^ 0x55);
            tar_of(&[("appended/after/eoa", &body), ("x", b"y")], 42)
        }
    }
}

async fn run_case(case: Case) -> Result<(), TestCaseError> {
    let bodies: Vec<Vec<u8>> = case
        .bodies
        .iter()
        .map(|&(len, seed)| noise(len, seed))
        .collect();
    let tr = trailer(case.trailer_kind, case.trailer_len, case.bodies[0].1);
    let built = build(&bodies, &case.entries, case.eoa_blocks, &tr, 0);
    let mut data = built.data.clone();
    match &case.damage {
        Damage::None => assert_tar_crate_reads(&built),
        Damage::Truncate(k) => data.truncate((data.len() as u64 * *k as u64 / 1000) as usize),
        Damage::Corrupt(ix) => {
            if !built.headers.is_empty() {
                let at = built.headers[ix.index(built.headers.len())];
                let b = &mut data[at + 148..at + 156];
                // A stored checksum one off the real sum.
                let stored = u64::from_str_radix(std::str::from_utf8(&b[..6]).unwrap(), 8).unwrap();
                b[..6].copy_from_slice(format!("{:06o}", stored + 1).as_bytes());
            }
        }
    }
    let undamaged = matches!(case.damage, Damage::None);
    // At most ~2000 messages per push, whatever the piece size drawn.
    let piece = case.piece.max(data.len() / 2000 + 1);

    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let r = push_as(&mut c, "", "", &data, piece).await;
    let r = r.map_err(|e| TestCaseError::fail(format!("push failed: {e}")))?;
    prop_assert_eq!(&r.digest, &sha256_digest(&data));
    prop_assert_eq!(r.size, data.len() as u64);
    let back = read_all(&mut c, &r.digest).await;
    prop_assert!(
        back == data,
        "read back {} bytes differ from the {} pushed",
        back.len(),
        data.len()
    );
    let (off, len) = (
        case.range.0 % (data.len() as u64 + 1),
        case.range.1 % 400_000,
    );
    let part = read_range(&mut c, "", &r.digest, off, len).await.unwrap();
    let end = if len == 0 {
        data.len()
    } else {
        (off + len).min(data.len() as u64) as usize
    };
    prop_assert!(part == data[off as usize..end], "range {off}+{len} differs");
    let info = stat(&mut c, &r.digest).await;
    prop_assert_eq!(info.size, data.len() as u64);

    if undamaged && !case.entries.is_empty() {
        // Parsed as a tar to its end-of-archive marker; everything after it and
        // every file body is chunked, every header and padding byte is literal.
        prop_assert_eq!(info.layout.as_str(), "tar");
        prop_assert_eq!(info.literal_bytes, built.literal, "literal bytes");

        // The same files with other metadata: no new chunk, whatever the kinds.
        let other = build(&bodies, &case.entries, case.eoa_blocks, &tr, 1).data;
        if other != data {
            let piece2 = case.piece2.max(other.len() / 2000 + 1);
            let r2 = push_as(&mut c, "", "", &other, piece2).await.unwrap();
            prop_assert_eq!(&r2.digest, &sha256_digest(&other));
            prop_assert_eq!(r2.size, other.len() as u64);
            prop_assert_eq!(
                r2.new_chunks,
                0,
                "re-pushing the same bodies under new metadata stored new chunks"
            );
            prop_assert!(
                read_all(&mut c, &r2.digest).await == other,
                "second archive read back differs"
            );
            prop_assert!(
                read_all(&mut c, &r.digest).await == data,
                "first archive read back differs after the second push"
            );
        }
    }
    drop(c);
    d.stop().await;
    Ok(())
}

proptest! {
    // 32 cases by default; PROPTEST_CASES=N runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_archives_of_every_kind_round_trip(case in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(case))?;
    }
}

// ---------------------------------------------------------------------------
// Deterministic tests
// ---------------------------------------------------------------------------

#[test]
fn the_generator_writes_archives_an_independent_reader_accepts() {
    let bodies = vec![noise(70_001, 1), noise(3 * BLOCK, 2), Vec::new()];
    let entries: Vec<Ent> = ALL_KINDS
        .iter()
        .enumerate()
        .map(|(i, &kind)| Ent {
            kind,
            body: i,
            tag: i as u32 * 37,
        })
        .collect();
    let built = build(&bodies, &entries, 2, b"", 0);
    assert_tar_crate_reads(&built);
    // The extended sparse entry really has extension blocks and the PAX
    // override really leaves a 0 in the ustar size field.
    let sparse = build(
        &[noise(60 * BLOCK, 3)],
        &[one(Kind::SparseExtended, 55)],
        2,
        b"",
        0,
    );
    assert_eq!(sparse.data[482], 1, "isextended");
    assert_eq!(
        sparse.data[BLOCK + 504],
        1,
        "a second extension block follows the first"
    );
    assert_eq!(
        sparse.data[2 * BLOCK + 504],
        1,
        "a third extension block follows the second"
    );
    assert_eq!(sparse.data[3 * BLOCK + 504], 0, "the third is the last");
    assert_tar_crate_reads(&sparse);
    let pax = build(
        &[noise(5000, 4)],
        &[one(Kind::PaxSizeOverride, 0)],
        2,
        b"",
        0,
    );
    let h = pax.headers[1];
    assert_eq!(&pax.data[h + 124..h + 136], b"00000000000\0");
    assert_tar_crate_reads(&pax);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_alone_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    for len in [0usize, 1, 70_001] {
        for (i, &kind) in ALL_KINDS.iter().enumerate() {
            let body = noise(len, i as u64 + 100);
            let built = build(&[body], &[one(kind, i as u32 * 11 + 3)], 2, b"", 0);
            assert_tar_crate_reads(&built);
            let what = format!("{kind:?} with a {len}-byte body");
            let (_, info) = round_trip(&mut c, &built.data, 4096, &what).await;
            assert_eq!(info.layout, "tar", "{what}: layout");
            assert_eq!(
                info.literal_bytes, built.literal,
                "{what}: literal bytes (headers, metadata, padding)"
            );
            if kind.has_body() && len > 0 {
                assert!(
                    info.chunks >= 2,
                    "{what}: body and end-of-archive are chunks, got {}",
                    info.chunks
                );
            }
        }
    }
    // Sparse maps spread over one, two and three extension blocks; then a file.
    for (want, len) in [(5usize, 2_600usize), (26, 30_000), (60, 200_000)] {
        let bodies = vec![noise(len, want as u64), noise(5_000, 1)];
        let entries = [
            Ent {
                kind: Kind::SparseExtended,
                body: 0,
                tag: want as u32 - 5,
            },
            Ent {
                kind: Kind::File,
                body: 1,
                tag: 0,
            },
        ];
        let built = build(&bodies, &entries, 2, b"", 0);
        assert_tar_crate_reads(&built);
        let what = format!("sparse file of {want} segments");
        let (_, info) = round_trip(&mut c, &built.data, 1000, &what).await;
        assert_eq!(info.layout, "tar", "{what}: layout");
        assert_eq!(info.literal_bytes, built.literal, "{what}: literal bytes");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_behind_long_names_and_pax_headers_are_chunked_and_deduplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let body = vec![noise(1 << 20, 77)];
    let small = noise(3000, 78);
    // The same 1 MB body under four different header kinds, names and mtimes.
    let layers: Vec<(&str, Built)> = vec![
        (
            "GNU long name",
            build(&body, &[one(Kind::LongName, 1)], 2, b"", 0),
        ),
        ("PAX path", build(&body, &[one(Kind::Pax, 2)], 2, b"", 1)),
        (
            "PAX size override",
            build(&body, &[one(Kind::PaxSizeOverride, 3)], 2, b"", 2),
        ),
        ("ustar", build(&body, &[one(Kind::File, 4)], 2, b"", 3)),
        (
            "mixed",
            build(
                &[small.clone(), body[0].clone()],
                &[
                    Ent {
                        kind: Kind::PaxGlobal,
                        body: 0,
                        tag: 5,
                    },
                    Ent {
                        kind: Kind::Pax,
                        body: 0,
                        tag: 6,
                    },
                    Ent {
                        kind: Kind::Dir,
                        body: 0,
                        tag: 7,
                    },
                    Ent {
                        kind: Kind::LongName,
                        body: 1,
                        tag: 8,
                    },
                    Ent {
                        kind: Kind::LongSymlink,
                        body: 0,
                        tag: 9,
                    },
                    Ent {
                        kind: Kind::PaxSizeOverride,
                        body: 0,
                        tag: 10,
                    },
                    Ent {
                        kind: Kind::File,
                        body: 1,
                        tag: 11,
                    },
                    Ent {
                        kind: Kind::PaxThenLongName,
                        body: 1,
                        tag: 12,
                    },
                ],
                2,
                b"",
                4,
            ),
        ),
    ];
    let mut digests = Vec::new();
    for (i, (what, built)) in layers.iter().enumerate() {
        let before = stats(&mut c).await;
        let (r, info) = round_trip(&mut c, &built.data, 100_000, what).await;
        let after = stats(&mut c).await;
        assert_eq!(info.layout, "tar", "{what}");
        assert_eq!(info.literal_bytes, built.literal, "{what}: literal bytes");
        let grew = after.chunk_plain_bytes - before.chunk_plain_bytes;
        if i == 0 {
            // The body is incompressible noise: storing it the first time costs ~1 MB.
            assert!(
                r.bytes_added > 1_000_000,
                "first push added only {}",
                r.bytes_added
            );
        } else {
            assert!(
                r.bytes_added < 20_000,
                "{what}: second copy of the body added {} bytes",
                r.bytes_added
            );
            assert!(grew < 20_000, "{what}: chunk_plain_bytes grew by {grew}");
            assert!(
                r.reused_chunks >= 4,
                "{what}: reused {} chunks",
                r.reused_chunks
            );
        }
        digests.push(r.digest);
    }
    for ((what, built), dg) in layers.iter().zip(&digests) {
        assert!(
            read_all(&mut c, dg).await == built.data,
            "{what}: read back after all pushes"
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_after_the_end_of_archive_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let bodies = vec![noise(150_000, 5), noise(700, 6)];
    let entries = [
        Ent {
            kind: Kind::File,
            body: 0,
            tag: 1,
        },
        Ent {
            kind: Kind::LongName,
            body: 1,
            tag: 2,
        },
        Ent {
            kind: Kind::Symlink,
            body: 0,
            tag: 3,
        },
    ];
    let plain = build(&bodies, &entries, 2, b"", 0);
    let trailers: Vec<(&str, usize, Vec<u8>)> = vec![
        ("one byte", 2, b"!".to_vec()),
        ("text", 2, b"this is not part of the archive\n".to_vec()),
        ("noise", 2, noise(300_000, 7)),
        ("record padding", 18, Vec::new()),
        ("one zero block then noise", 1, noise(5000, 8)),
        ("many zero blocks then noise", 20, noise(70_000, 9)),
        (
            "another tar",
            2,
            tar_of(&[("second/archive", &noise(90_000, 10))], 1),
        ),
        (
            "a header-like block",
            2,
            build(&bodies, &entries[..1], 0, b"", 1).data[..BLOCK].to_vec(),
        ),
        (
            "zeros then a partial block",
            2,
            [vec![0u8; 1024], vec![7u8; 100]].concat(),
        ),
    ];
    for (what, eoa, tr) in &trailers {
        let built = build(&bodies, &entries, *eoa, tr, 0);
        assert_eq!(
            &built.data[..plain.data.len() - 2 * BLOCK],
            &plain.data[..plain.data.len() - 2 * BLOCK]
        );
        let (_, info) = round_trip(&mut c, &built.data, 65_536, what).await;
        assert_eq!(info.layout, "tar", "{what}");
        // Nothing after the end-of-archive marker is taken for a header.
        assert_eq!(info.literal_bytes, plain.literal, "{what}: literal bytes");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_corrupted_archives_round_trip_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let bodies = vec![
        noise(100_000, 11),
        noise(50_000, 12),
        noise(30_000, 13),
        noise(20_000, 14),
        noise(1000, 15),
    ];
    let entries = [
        Ent {
            kind: Kind::File,
            body: 0,
            tag: 1,
        },
        Ent {
            kind: Kind::LongName,
            body: 1,
            tag: 2,
        },
        Ent {
            kind: Kind::Pax,
            body: 2,
            tag: 3,
        },
        Ent {
            kind: Kind::SparseExtended,
            body: 3,
            tag: 4,
        },
        Ent {
            kind: Kind::Symlink,
            body: 0,
            tag: 5,
        },
        Ent {
            kind: Kind::PaxSizeOverride,
            body: 4,
            tag: 6,
        },
    ];
    let built = build(&bodies, &entries, 2, b"", 0);
    let data = &built.data;
    let h = &built.headers;
    // headers: 0 file, 1 'L', 2 long-name file, 3 'x', 4 PAX file, 5 'S', 6 symlink, 7 'x', 8 file
    assert_eq!(h.len(), 9);
    let cuts: Vec<(&str, usize)> = vec![
        ("inside the first header", 100),
        ("right after the first header", BLOCK),
        ("mid-body of the first file", BLOCK + 50_000),
        ("inside the first body's padding", h[1] - 10),
        ("inside the long-name body", h[1] + BLOCK + 20),
        ("mid-body of the long-name file", h[2] + BLOCK + 25_001),
        ("inside the PAX records", h[3] + BLOCK + 30),
        ("mid-body of the PAX file", h[4] + BLOCK + 12_345),
        ("inside a sparse extension block", h[5] + BLOCK + 200),
        ("mid-body of the sparse file", h[5] + 3 * BLOCK + 7_000),
        ("mid-body of the PAX size-override file", h[8] + BLOCK + 999),
        ("inside the end-of-archive blocks", data.len() - 700),
        ("one byte short", data.len() - 1),
    ];
    for (what, at) in cuts {
        let cut = &data[..at];
        round_trip(&mut c, cut, 8192, &format!("truncated {what}")).await;
    }
    for (i, &at) in h.iter().enumerate() {
        let mut bad = data.clone();
        bad[at + 148..at + 156].copy_from_slice(b"0000000\0");
        round_trip(
            &mut c,
            &bad,
            8192,
            &format!("checksum of header {i} corrupted"),
        )
        .await;
        let mut bad = data.clone();
        bad[at + 5] ^= 0x20; // a name byte changed, checksum left as it was
        round_trip(&mut c, &bad, 8192, &format!("name of header {i} corrupted")).await;
    }
    // A corrupted header mid-archive followed by a valid archive again.
    let mut bad = data.clone();
    bad[h[4] + 148] = b'9';
    bad.extend_from_slice(&build(&bodies, &entries, 2, b"", 1).data);
    round_trip(
        &mut c,
        &bad,
        1 << 20,
        "corrupted mid-archive, then a valid archive",
    )
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reports_tar_for_a_tar_and_raw_for_random_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let bodies = vec![noise(200_000, 21), noise(10, 22)];
    let entries: Vec<Ent> = ALL_KINDS
        .iter()
        .enumerate()
        .map(|(i, &kind)| Ent {
            kind,
            body: i,
            tag: i as u32,
        })
        .collect();
    let built = build(&bodies, &entries, 2, b"", 0);
    let (_, info) = round_trip(&mut c, &built.data, 65_536, "all kinds").await;
    assert_eq!(info.layout, "tar");
    let (_, info) = round_trip(
        &mut c,
        &tar_of(&[("a", &noise(300_000, 23)), ("b", b"")], 9),
        65_536,
        "tar_of",
    )
    .await;
    assert_eq!(info.layout, "tar");
    for (what, data) in [
        ("noise", noise(200_000, 24)),
        ("short noise", noise(300, 25)),
        ("text", b"hello world\n".repeat(100)),
    ] {
        let (_, info) = round_trip(&mut c, &data, 65_536, what).await;
        assert_eq!(info.layout, "raw", "{what}");
        assert_eq!(info.literal_bytes, 0, "{what}: raw data is all chunks");
    }
    d.stop().await;
}

/// Archives written by another writer (the `tar` crate's Builder): GNU long
/// names and link names it emits itself, a PAX header, links, devices,
/// directories and FIFOs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_from_the_tar_crate_builder_round_trip_and_dedup() {
    use tar::{EntryType, Header};
    fn archive(body: &[u8], mtime: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("usr/lib/{}/libbig.so", "x".repeat(150));
        let mut h = Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mtime(mtime);
        h.set_mode(0o755);
        b.append_data(&mut h, &long, body).unwrap();
        for (ty, name) in [
            (EntryType::Directory, "usr/"),
            (EntryType::Char, "dev/null"),
            (EntryType::Block, "dev/sda"),
            (EntryType::Fifo, "run/fifo"),
        ] {
            let mut h = Header::new_gnu();
            h.set_entry_type(ty);
            h.set_size(0);
            h.set_mtime(mtime);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(mtime);
        b.append_link(&mut h, "lib/libbig.so", format!("../{}", "y".repeat(130)))
            .unwrap();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Link);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(mtime);
        b.append_link(&mut h, "hard", &long).unwrap();
        let records = [
            pax_record(
                "path",
                format!("pax/{}/copy.so", "z".repeat(200)).as_bytes(),
            ),
            pax_record("mtime", mtime.to_string().as_bytes()),
        ]
        .concat();
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_size(records.len() as u64);
        h.set_cksum();
        b.append(&h, &records[..]).unwrap();
        let mut h = Header::new_ustar();
        h.set_path("pax-short").unwrap();
        h.set_size(body.len() as u64);
        h.set_mtime(mtime);
        h.set_cksum();
        b.append(&h, body).unwrap();
        b.into_inner().unwrap()
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let body = noise(600_000, 31);
    let a = archive(&body, 1);
    assert_eq!(tar::Archive::new(&a[..]).entries().unwrap().count(), 8);
    let (ra, ia) = round_trip(&mut c, &a, 65_536, "tar crate archive").await;
    assert_eq!(ia.layout, "tar");
    assert!(ra.bytes_added > 500_000);
    let b = archive(&body, 2_000_000);
    let (rb, ib) = round_trip(&mut c, &b, 65_536, "same with other mtimes").await;
    assert_eq!(ib.layout, "tar");
    assert_eq!(rb.new_chunks, 0, "same bodies, new headers: no new chunk");
    assert!(rb.bytes_added < 20_000, "added {}", rb.bytes_added);
    d.stop().await;
}

/// Headers as some writers produce them, which a tar reader (Go's archive/tar,
/// the splitter) still reads: header-only types with a non-zero size field (no
/// data follows them), a blank size field, a checksum summed over signed bytes.
/// Each is followed by a 1 MB file that must still be chunked as a file body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_quirks_of_other_writers_still_parse_as_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = d.client().await;
    let body = noise(1 << 20, 91);
    let reference = build(
        std::slice::from_ref(&body),
        &[one(Kind::File, 1)],
        2,
        b"",
        0,
    );
    let (r0, _) = round_trip(&mut c, &reference.data, 65_536, "reference").await;
    assert!(r0.bytes_added > 1_000_000);
    let quirks: [(&str, u8, u64); 8] = [
        ("hard link with its target's size", b'1', 1 << 20),
        ("symlink with a size", b'2', 40),
        ("char device with a size", b'3', 1000),
        ("block device with a size", b'4', 513),
        ("directory with a size", b'5', 4096),
        ("fifo with a size", b'6', 10),
        ("symlink with a blank size field", b'2', 0),
        ("signed checksum over a non-UTF-8 name", b'0', 0),
    ];
    for (i, (what, typeflag, size)) in quirks.into_iter().enumerate() {
        let mut w = Writer {
            out: Vec::new(),
            literal: 0,
            headers: Vec::new(),
        };
        let name = [&b"q\xff\xff\xfe\xfd\xfc-"[..], what.as_bytes()].concat();
        let mut h = Hdr::new(&name, typeflag, size, 7 + i as u64);
        if typeflag == b'1' || typeflag == b'2' {
            h.link = b"dir1/file-0-1.bin";
        }
        let mut b = h.block();
        if what.contains("blank") {
            b[124..136].fill(0);
        }
        if what.contains("signed") {
            b[148..156].fill(b' ');
            let signed: i64 = b.iter().map(|&x| x as i8 as i64).sum();
            let unsigned: i64 = b.iter().map(|&x| x as i64).sum();
            assert_ne!(signed, unsigned);
            b[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
            w.raw_header(&b);
        } else {
            w.header(b);
        }
        let mut h = Hdr::new(
            b"usr/lib/quirk.so",
            b'0',
            body.len() as u64,
            1000 + i as u64,
        );
        h.uname = "quirk";
        w.header(h.block());
        w.data_body(&body);
        w.out.resize(w.out.len() + 2 * BLOCK, 0);
        let before = stats(&mut c).await;
        let (r, info) = round_trip(&mut c, &w.out, 100_000, what).await;
        let grew = stats(&mut c).await.chunk_plain_bytes - before.chunk_plain_bytes;
        assert_eq!(info.layout, "tar", "{what}");
        assert_eq!(
            info.literal_bytes, w.literal,
            "{what}: literal bytes (two headers)"
        );
        assert!(
            r.bytes_added < 20_000,
            "{what}: the known body added {} bytes",
            r.bytes_added
        );
        assert!(grew < 20_000, "{what}: chunk_plain_bytes grew by {grew}");
    }
    d.stop().await;
}
