//! Compressed layers: pushed as gzip or zstd made by real tools, read back
//! byte-exact, kept by the strategy expected, with the tar inside shared.

mod common;

use common::*;
use strata::proto::strata::v1 as pb;

/// Python's GzipFile writing in 8 KiB pieces, with a file name in the header.
fn python_gzipfile(data: &[u8], level: u32) -> Vec<u8> {
    let code = format!(
        "import sys,gzip,io\nb=io.BytesIO()\nf=gzip.GzipFile('layer.tar','wb',{level},b,mtime=1700000000)\nd=sys.stdin.buffer.read()\nfor i in range(0,len(d),8192): f.write(d[i:i+8192])\nf.close()\nsys.stdout.buffer.write(b.getvalue())"
    );
    filter("/usr/bin/python3", &["-c", &code], data)
}

/// Words with some structure, so files compress like real text and code.
fn text(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "layer", "image", "the ", "chunk", "store ", "fn ", "return", "{\n", "}\n", "let ",
        "0x1f8b", "static", "const ", "impl ", "pub ", "//",
    ];
    let r = noise(n / 3 + 8, seed);
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(WORDS[(r[i % r.len()] & 15) as usize].as_bytes());
        if r[(i + 1) % r.len()] < 40 {
            out.extend_from_slice(format!("{}", r[(i + 2) % r.len()]).as_bytes());
        }
        i += 1;
    }
    out.truncate(n);
    out
}

/// A layer-like tar of about 3 MB: text files, a binary, an empty file.
fn layer(seed: u64) -> Vec<u8> {
    let a = text(1_200_000, seed);
    let b = noise(300_000, seed + 1);
    let c = text(900_000, seed + 2);
    let d = text(700, seed + 3);
    tar_of(
        &[
            ("usr/share/doc/a.txt", &a),
            ("usr/bin/tool", &b),
            ("etc/empty", b""),
            ("usr/lib/c.py", &c),
            ("etc/d.conf", &d),
        ],
        1_700_000_000 + seed,
    )
}

async fn read_plain(
    c: &mut Client,
    digest: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, tonic::Status> {
    let req = pb::ReadRequest {
        digest: digest.into(),
        offset,
        length,
        plain: true,
        ..Default::default()
    };
    read_req(c, req).await
}

/// Pushes a compressed blob and checks what every push of one must give:
/// the digest of the bytes, the bytes back, and the tar inside. Returns stat.
async fn push_checked(c: &mut Client, blob: &[u8], tar: Option<&[u8]>) -> pb::BlobInfo {
    let r = push(c, blob).await;
    assert_eq!(r.digest, sha256_digest(blob));
    let back = read_all(c, &r.digest).await;
    assert!(
        back == blob,
        "read back differs (len {} vs {})",
        back.len(),
        blob.len()
    );
    let info = stat(c, &r.digest).await;
    assert_eq!(info.kept, r.kept);
    if let Some(tar) = tar {
        assert_eq!(info.diff_id, sha256_digest(tar), "diff_id");
        assert_eq!(info.plain_size, tar.len() as u64);
        let plain = read_plain(c, &r.digest, 0, 0).await.unwrap();
        assert!(plain == tar, "plain read differs");
    }
    info
}

#[tokio::test]
async fn python_gzip_replays_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(1);
    for level in 1..=9 {
        let gz = python_gzip(&tar, level);
        let info = push_checked(&mut c, &gz, Some(&tar)).await;
        assert_eq!(info.codec, "gzip");
        assert_eq!(
            info.strategy, "replay",
            "level {level}: kept as {}",
            info.kept
        );
        assert_eq!(info.kept, format!("zlib-{level}"));
        // Replay keeps the headers and the plan, not the compressed bytes.
        assert!(
            info.extra_bytes < 200,
            "level {level}: {} extra bytes",
            info.extra_bytes
        );
    }
    let gz = python_gzipfile(&tar, 6);
    let info = push_checked(&mut c, &gz, Some(&tar)).await;
    assert_eq!(info.kept, "zlib-6");
    // Every push held the same tar: its file bodies are stored once.
    let s = stats(&mut c).await;
    assert!(
        s.chunk_plain_bytes < tar.len() as u64,
        "chunks hold {} plain bytes for a {}-byte tar",
        s.chunk_plain_bytes,
        tar.len()
    );
    assert_eq!(s.contents_by_strategy["replay"], 10);
    d.stop().await;
}

#[tokio::test]
async fn gnu_gzip_and_pigz_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    // GNU gzip has its own deflate (no zlib): its port (crates/gnuflate)
    // replays it, so only the plan is kept.
    let tar = real_files_tar(3 << 20);
    for level in [1, 6, 9] {
        let gz = filter("gzip", &["-n", &format!("-{level}"), "-c"], &tar);
        let info = push_checked(&mut c, &gz, Some(&tar)).await;
        assert_eq!(
            (info.strategy.as_str(), info.kept.as_str()),
            ("replay", format!("gnu-{level}").as_str()),
            "gzip -{level}"
        );
        assert!(
            (info.extra_bytes as usize) < 200,
            "gzip -{level}: {} extra bytes for {} compressed",
            info.extra_bytes,
            gz.len(),
        );
    }
    let tar = layer(2);
    for args in [
        &["-6"][..],
        &["-9", "-b", "64"],
        &["-1", "-p", "1"],
        &["-6", "-i"],
    ] {
        let mut a = vec!["-n", "-c"];
        a.extend_from_slice(args);
        let gz = filter("pigz", &a, &tar);
        let info = push_checked(&mut c, &gz, Some(&tar)).await;
        assert_eq!(
            info.strategy, "replay",
            "pigz {args:?}: kept as {}",
            info.kept
        );
        assert!(
            info.kept.starts_with("pigz-"),
            "pigz {args:?}: {}",
            info.kept
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn a_tar_and_its_gzip_share_their_file_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(3);
    let first = push(&mut c, &tar).await;
    assert!(first.kept.is_empty());
    let gz = python_gzip(&tar, 6);
    let r = push(&mut c, &gz).await;
    assert_eq!(r.new_chunks, 0, "the gzip's tar added chunks");
    assert!(r.reused_chunks > 0);
    assert!(
        r.bytes_added < 20_000,
        "the gzip of a stored tar added {} bytes",
        r.bytes_added
    );
    assert_eq!(read_all(&mut c, &r.digest).await, gz);
    // Dedup is measured over what is chunked: the tar, twice, stored once.
    let s = stats(&mut c).await;
    assert_eq!(s.logical_stream_bytes, 2 * tar.len() as u64);
    assert_eq!(s.logical_bytes, (tar.len() + gz.len()) as u64);
    assert!(s.dedup_ratio > 1.9, "dedup ratio {}", s.dedup_ratio);
    d.stop().await;
}

#[tokio::test]
async fn members_padding_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let (t1, t2) = (layer(4), layer(5));
    let mut blob = python_gzip(&t1, 6);
    blob.extend_from_slice(&python_gzip(&t2, 9));
    let mut tars = t1.clone();
    tars.extend_from_slice(&t2);
    let info = push_checked(&mut c, &blob, Some(&tars)).await;
    assert_eq!(info.strategy, "replay");
    assert_eq!(info.kept, "zlib-6+zlib-9");

    // Zero padding after the last member is kept as it is.
    let mut padded = python_gzip(&t1, 6);
    padded.extend_from_slice(&[0u8; 1000]);
    let info = push_checked(&mut c, &padded, Some(&t1)).await;
    assert_eq!(info.strategy, "replay");

    // Ranged reads: random ranges, then containerd's 32 KiB windows in order.
    let digest = sha256_digest(&blob);
    let r = noise(128, 9);
    for i in 0..16 {
        let off = u64::from_le_bytes(r[i * 4..i * 4 + 8].try_into().unwrap()) % blob.len() as u64;
        let len = (r[i] as u64 + 1) * 997;
        let got = read_range(&mut c, "", &digest, off, len).await.unwrap();
        let end = (off + len).min(blob.len() as u64) as usize;
        assert!(got == blob[off as usize..end], "range {off}+{len}");
    }
    let mut windows = Vec::new();
    for off in (0..blob.len()).step_by(32 << 10) {
        windows.extend(
            read_range(&mut c, "", &digest, off as u64, 32 << 10)
                .await
                .unwrap(),
        );
    }
    assert!(windows == blob, "32 KiB windows differ");
    let got = read_plain(&mut c, &digest, t1.len() as u64 - 10, 20)
        .await
        .unwrap();
    assert_eq!(got, tars[t1.len() - 10..t1.len() + 10]);
    d.stop().await;
}

#[tokio::test]
async fn broken_streams_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(6);
    let gz = python_gzip(&tar, 6);

    // A flipped bit: where it breaks the deflate stream, and where it only
    // changes the data (a stored block) so that the trailer's CRC disagrees.
    for at in [1000, gz.len() / 2] {
        let mut flipped = gz.clone();
        flipped[at] ^= 0x55;
        let info = push_checked(&mut c, &flipped, None).await;
        assert_eq!(info.codec, "gzip");
        assert_eq!(
            info.diff_id, "",
            "flip at {at}: a corrupt stream has no diff_id"
        );
        let e = read_plain(&mut c, &info.digest, 0, 0).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }

    let cut = &gz[..gz.len() * 2 / 3];
    let info = push_checked(&mut c, cut, None).await;
    assert_eq!(info.strategy, "stored");
    assert_eq!(info.diff_id, "");

    // A header and nothing else; a lone magic number; a gzip cut in its header.
    for blob in [&gz[..10], &gz[..2], &gz[..5]] {
        push_checked(&mut c, blob, None).await;
    }
    // Not gzip although it starts like one: chunked as plain data.
    let mut fake = vec![0x1f, 0x8b, 8, 0xe0];
    fake.extend_from_slice(&tar);
    let info = push_checked(&mut c, &fake, None).await;
    assert_eq!(info.codec, "");
    d.stop().await;
}

#[tokio::test]
async fn a_gzip_bomb_is_stored_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    // 1 GiB of zeros, gzipped by zlib in a stream: about 1 MB.
    let code = "import sys,zlib\nc=zlib.compressobj(9,zlib.DEFLATED,31)\nz=bytes(1<<20)\nfor _ in range(1024): sys.stdout.buffer.write(c.compress(z))\nsys.stdout.buffer.write(c.flush())";
    let bomb = filter("/usr/bin/python3", &["-c", code], b"");
    assert!(bomb.len() < 2 << 20);
    let r = push(&mut c, &bomb).await;
    assert!(
        r.bytes_added < 2 * bomb.len() as u64 + (1 << 20),
        "a {}-byte bomb added {} bytes",
        bomb.len(),
        r.bytes_added
    );
    let info = push_checked(&mut c, &bomb, None).await;
    assert_eq!(info.strategy, "stored");
    assert_eq!(info.diff_id, "", "a bomb is not decoded to its end");
    d.stop().await;
}

/// zstd's CLI from a file (it knows the size) or from a pipe (it does not).
fn zstd_cli(data: &[u8], args: &[&str], from_file: bool) -> Vec<u8> {
    if !from_file {
        return filter("zstd", &[&["-q", "-c"], args].concat(), data);
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layer.tar");
    std::fs::write(&src, data).unwrap();
    let mut a = vec!["-q", "-c"];
    a.extend_from_slice(args);
    a.push(src.to_str().unwrap());
    let out = std::process::Command::new("zstd")
        .args(&a)
        .output()
        .unwrap();
    assert!(out.status.success(), "zstd {a:?}");
    out.stdout
}

#[tokio::test]
async fn zstd_replays_levels_and_frame_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = layer(7);
    // `--single-thread` agrees with the default for a window or a job, so the
    // probe picks the default and the daemon must switch when they part.
    let cases: [(&[&str], bool); 9] = [
        (&["-3", "--single-thread"], true),
        (&["-3", "--single-thread"], false),
        (&["-3"], true),
        (&["-3"], false),
        (&["-1"], true),
        (&["-9", "--no-check"], true),
        (&["-19"], false),
        (&["-3", "--no-content-size"], true),
        (&["-6", "--content-size"], false),
    ];
    for (args, from_file) in cases {
        let z = zstd_cli(&tar, args, from_file);
        let info = push_checked(&mut c, &z, Some(&tar)).await;
        assert_eq!(info.codec, "zstd");
        assert_eq!(
            info.strategy, "replay",
            "zstd {args:?} (from a file: {from_file}): kept as {}",
            info.kept
        );
        assert!(info.kept.starts_with("zstd-"), "{}", info.kept);
        assert!(
            info.extra_bytes < 200,
            "zstd {args:?}: {} extra bytes",
            info.extra_bytes
        );
    }

    // Two frames, and a skippable frame in front (as zstd:chunked writes).
    let t2 = layer(8);
    let mut two = zstd_cli(&tar, &["-3"], false);
    two.extend_from_slice(&zstd_cli(&t2, &["-3"], false));
    let mut both = tar.clone();
    both.extend_from_slice(&t2);
    let info = push_checked(&mut c, &two, Some(&both)).await;
    assert_eq!(info.strategy, "replay");
    let mut skippable = vec![0x5e, 0x2a, 0x4d, 0x18, 100, 0, 0, 0];
    skippable.extend_from_slice(&[7u8; 100]);
    skippable.extend_from_slice(&zstd_cli(&tar, &["-3"], false));
    let info = push_checked(&mut c, &skippable, Some(&tar)).await;
    assert_eq!(info.strategy, "replay");

    // The same tar as .tar.zst and .tar.gz stores its file bodies once.
    let r = push(&mut c, &python_gzip(&tar, 6)).await;
    assert_eq!(
        r.new_chunks, 0,
        "the gzip of a tar already pushed as zstd added chunks"
    );

    // Truncated and corrupt frames are kept exactly.
    let z = zstd_cli(&tar, &["-3"], true);
    push_checked(&mut c, &z[..z.len() / 2], None).await;
    let mut bad = z.clone();
    let at = bad.len() / 3;
    bad[at] ^= 0xff;
    let info = push_checked(&mut c, &bad, None).await;
    assert_eq!(info.diff_id, "");
    d.stop().await;
}

/// pigz's threaded and independent framings start every block from a reset
/// stream: their parts keep restart points, and ranged reads anywhere, in
/// any order, are exact (and start from the last block start before them).
#[tokio::test]
async fn pigz_ranged_reads_start_at_restart_points() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let mut tar = layer(21);
    tar.extend_from_slice(&layer(22));
    tar.extend_from_slice(&layer(23));
    for args in [
        vec!["-6", "-n", "-c"],
        vec!["-6", "-n", "-c", "-i"],
        vec!["-1", "-n", "-c", "-b", "64"],
    ] {
        let gz = filter("pigz", &args, &tar);
        let info = push_checked(&mut c, &gz, Some(&tar)).await;
        assert!(info.kept.starts_with("pigz-"), "{args:?}: {}", info.kept);
        let n = gz.len() as u64;
        let offsets = [
            n - 1,
            n / 2,
            1,
            n - 70_000,
            n / 3,
            0,
            n / 5,
            3 * n / 4,
            n / 7,
            n / 2 + 1,
        ];
        for (i, &off) in offsets.iter().enumerate() {
            let len = [1u64, 5000, 70_000, 1 << 20][i % 4];
            let end = (off + len).min(n);
            let got = read_range(&mut c, "", &info.digest, off, len)
                .await
                .unwrap();
            assert!(
                got == gz[off as usize..end as usize],
                "{args:?}: range {off}+{len} of {n}"
            );
        }
    }
}
