//! GNU gzip layers (`gzip -N`, what `tar -z` runs) are kept by replaying
//! GNU gzip's own deflate (crates/gnuflate), not by preflate: pushed after
//! their plain tar, each adds only its plan, reads back byte-exact (whole
//! and ranged) and shares the tar's recipe. pigz, which writes the same
//! header, still finds its own replay. The port itself is checked against
//! /usr/bin/gzip by crates/gnuflate/tests/oracle.rs.

mod common;

use common::*;

/// Pushes a gzip of `tar` (already stored) and checks it is kept by the
/// replay `want_kept`, adds no chunks and reads back exactly.
async fn push_variant(c: &mut Client, gz: &[u8], tar: &[u8], what: &str, want_kept: &str) {
    let r = push(c, gz).await;
    assert_eq!(r.digest, sha256_digest(gz), "{what}: digest");
    assert_eq!(r.kept, want_kept, "{what}: kept as");
    assert_eq!(r.new_chunks, 0, "{what}: the tar inside added chunks");
    let back = read_all(c, &r.digest).await;
    assert!(
        back == gz,
        "{what}: read back differs (len {} vs {})",
        back.len(),
        gz.len()
    );
    assert_eq!(sha256_digest(&back), r.digest);
    let info = stat(c, &r.digest).await;
    assert_eq!(info.codec, "gzip", "{what}");
    assert_eq!(info.strategy, "replay", "{what}: kept as {}", info.kept);
    assert_eq!(info.kept, want_kept, "{what}");
    assert_eq!(info.diff_id, sha256_digest(tar), "{what}: diff_id");
    assert_eq!(info.plain_size, tar.len() as u64, "{what}");
    assert_eq!(info.shares_plain_of, sha256_digest(tar), "{what}");
    // A replay keeps the header, the trailer and its plan: no corrections.
    assert!(
        info.extra_bytes < 200,
        "{what}: {} extra bytes for {} compressed",
        info.extra_bytes,
        gz.len()
    );
    // A range from the middle re-encodes from the member start, exactly.
    let (off, len) = (gz.len() as u64 / 3, 100_000);
    let got = read_range(c, "", &r.digest, off, len).await.unwrap();
    assert!(
        got == gz[off as usize..(off + len).min(gz.len() as u64) as usize],
        "{what}: ranged read differs"
    );
}

#[tokio::test]
async fn gnu_gzip_layers_replay_after_their_tar() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let tar = real_files_tar(4 << 20);
    let first = push(&mut c, &tar).await;
    assert!(first.kept.is_empty());

    // From a pipe, as `tar -z` runs it: no name, MTIME 0, OS 3.
    for level in [1, 2, 3, 4, 6, 9] {
        let gz = filter("gzip", &["-n", &format!("-{level}"), "-c"], &tar);
        assert_eq!(gz[9], 3, "gzip -{level}: OS byte");
        push_variant(
            &mut c,
            &gz,
            &tar,
            &format!("gzip -{level}"),
            &format!("gnu-{level}"),
        )
        .await;
    }
    // A named file: the name and its mtime in the header (FNAME set).
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("layer.tar");
    std::fs::write(&path, &tar).unwrap();
    let gz = filter("gzip", &["-6", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(gz[3] & 8, 8, "FNAME");
    push_variant(&mut c, &gz, &tar, "gzip -6 layer.tar", "gnu-6").await;
    // pigz writes GNU gzip's header too: its own replay still wins.
    let gz = filter("pigz", &["-n", "-6", "-c"], &tar);
    let r = push(&mut c, &gz).await;
    assert!(r.kept.starts_with("pigz-"), "pigz kept as {}", r.kept);
    assert!(read_all(&mut c, &r.digest).await == gz);

    // All of them hold one tar: its chunks are stored once.
    let s = stats(&mut c).await;
    assert!(
        s.chunk_plain_bytes <= tar.len() as u64,
        "chunks hold {} plain bytes for a {}-byte tar",
        s.chunk_plain_bytes,
        tar.len()
    );
    assert_eq!(s.contents_by_strategy["replay"], 8);
    verify_deep(&mut c).await;
    d.stop().await;
}

/// Two members, each a GNU gzip stream (`gzip -c a; gzip -c b` appended):
/// each is replayed on its own.
#[tokio::test]
async fn concatenated_gnu_members_replay_each() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path()).await;
    let mut c = d.client().await;
    let a = tar_of(&[("etc/a.txt", &text(1, 700_000))], 1_600_000_000);
    let b = tar_of(&[("usr/bin/b", &noise(200_000, 2))], 1_600_000_000);
    let mut blob = filter("gzip", &["-n", "-9", "-c"], &a);
    blob.extend_from_slice(&filter("gzip", &["-n", "-5", "-c"], &b));
    let r = push(&mut c, &blob).await;
    assert_eq!(r.kept, "gnu-9+gnu-5");
    assert!(read_all(&mut c, &r.digest).await == blob);
    d.stop().await;
}
