//! Replays frames written by Debian's `zstd` CLI and the `zstd` crate, in
//! every mode they have, and checks the bytes come back identical.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};
use strata::codec::zstd_replay::*;

const K: usize = 1 << 10;

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-zstd-replay-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the CLI on `input`: from a file (size known) or from a pipe.
fn cli(args: &[&str], input: &[u8], from_file: bool) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut cmd = Command::new("zstd");
    cmd.arg("-q").arg("-c").args(args);
    if from_file {
        let path = scratch_dir().join(format!("in-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, input).unwrap();
        let out = cmd.arg(&path).output().expect("zstd CLI");
        std::fs::remove_file(&path).unwrap();
        assert!(out.status.success(), "zstd {args:?} failed");
        out.stdout
    } else {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("zstd CLI");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success(), "zstd {args:?} failed");
        out.stdout
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// Re-encodes `plain` with `p`, in pieces of random sizes, stopping at the
/// first byte that differs from `want`: the output, or where it differed.
fn reencode(p: &ZstdParams, plain: &[u8], want: &[u8], seed: u64) -> Result<Vec<u8>, usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut re = p.reencoder().expect("reencoder");
    let mut out = Vec::new();
    let mut rest = plain;
    while !rest.is_empty() {
        let n = match rng.random_range(0..4) {
            0 => rng.random_range(0..=16),
            1 => rng.random_range(0..=4 * K),
            2 => rng.random_range(0..=200 * K),
            _ => rng.random_range(0..=1 << 20),
        }
        .min(rest.len());
        re.feed(&rest[..n], &mut out).map_err(|_| out.len())?;
        rest = &rest[n..];
        if out.len() > want.len() || out[..] != want[..out.len()] {
            return Err(first_diff(&out, want));
        }
    }
    re.finish(&mut out).map_err(|_| out.len())?;
    if out != want {
        return Err(first_diff(&out, want));
    }
    Ok(out)
}

/// Finds the first candidate that rebuilds `frame` from `plain`; panics with
/// what each one got wrong when none does.
fn replay(what: &str, frame: &[u8], plain: &[u8]) -> ZstdParams {
    let h = parse_frame_header(frame)
        .expect("complete header")
        .expect("valid header");
    let cands = candidates(&h, None);
    let mut errs = Vec::new();
    for (i, p) in cands.iter().enumerate() {
        match reencode(p, plain, frame, i as u64) {
            Ok(out) => {
                assert_eq!(out, frame, "{what}");
                // The record round-trips.
                let mut rec = Vec::new();
                p.encode(&mut rec);
                assert_eq!(ZstdParams::decode(&rec).unwrap(), (*p, rec.len()));
                return *p;
            }
            Err(at) => errs.push(format!("{} at {at}", p.name())),
        }
    }
    panic!(
        "{what}: no candidate rebuilds the frame ({} bytes, header {h:?}); tried: {}",
        frame.len(),
        errs.join(", ")
    );
}

fn check_cli(what: &str, plain: &[u8], args: &[&str], from_file: bool) -> ZstdParams {
    let frame = cli(args, plain, from_file);
    let how = if from_file { "file" } else { "pipe" };
    replay(&format!("{what} zstd {args:?} {how}"), &frame, plain)
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Text-like bytes: words from a small vocabulary, compressible but not trivially.
fn text(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "layer", "content", "store", "zstd", "frame", "block", "window", "the", "of", "and",
        "replay", "encoder", "digest", "sha256:", "usr/lib/", "0123", "\n", " ", "tar", "blob",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
        if rng.random_range(0..50) == 0 {
            let extra = rng.random_range(0..64);
            v.extend((0..extra).map(|_| rng.random::<u8>()));
        }
    }
    v.truncate(n);
    v
}

/// A ustar archive of generated files: headers, text, zero padding.
fn tar(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::new();
    let mut i = 0;
    while v.len() + 1024 < n {
        let size = rng.random_range(0..40 * K).min(n - v.len() - 1024);
        let mut h = [0u8; 512];
        let name = format!("usr/share/strata/file-{i:05}.txt");
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"14712345670");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        v.extend_from_slice(&h);
        v.extend_from_slice(&text(size, seed ^ i));
        v.resize(v.len().div_ceil(512) * 512, 0);
        i += 1;
    }
    v.resize(n, 0);
    v
}

/// About `n` bytes of the machine's documentation, in a fixed order.
fn docs(n: usize) -> Vec<u8> {
    fn walk(d: &Path, files: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, files),
                Ok(t) if t.is_file() => files.push(p),
                _ => {}
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("/usr/share/doc"), &mut files);
    files.sort();
    let mut v = Vec::new();
    for f in files {
        if v.len() >= n {
            break;
        }
        if let Ok(b) = std::fs::read(&f) {
            v.extend_from_slice(&b);
        }
    }
    v.truncate(n);
    v
}

fn zero_runs(n: usize) -> Vec<u8> {
    let mut v = text(n, 7);
    let mut at = 1000;
    while at < n {
        let len = (300 * K).min(n - at);
        v[at..at + len].fill(0);
        at += len + 100 * K;
    }
    v
}

#[test]
fn header_parse() {
    let f = cli(&["-3"], b"hello hello hello", true);
    let h = parse_frame_header(&f).unwrap().unwrap();
    assert_eq!(h.content_size, Some(17));
    assert!(h.single_segment && h.checksum);
    assert_eq!(h.dict_id, None);
    assert_eq!(h.header_len, 6);
    let f = cli(&["-3", "--no-check"], &vec![b'x'; 300 * K], false);
    let h = parse_frame_header(&f).unwrap().unwrap();
    assert_eq!(h.content_size, None);
    assert!(!h.single_segment && !h.checksum);
    assert_eq!(h.window_size, 1 << 21);
    for n in 0..h.header_len {
        assert_eq!(parse_frame_header(&f[..n]), None, "prefix of {n}");
    }
    assert_eq!(parse_frame_header(b"PK\x03\x04rest"), Some(Err(())));
    assert_eq!(
        parse_frame_header(&[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]),
        Some(Err(()))
    );
    assert_eq!(parse_frame_header(&[0x28]), None);
    // Two-byte content size counts from 256.
    let f = cli(&["-1"], &vec![1u8; 300], true);
    assert_eq!(
        parse_frame_header(&f).unwrap().unwrap().content_size,
        Some(300)
    );
}

#[test]
fn params_record() {
    let h = FrameHeader {
        header_len: 6,
        single_segment: false,
        checksum: true,
        dict_id: None,
        content_size: None,
        window_size: 1 << 21,
    };
    for p in candidates(&h, None) {
        let mut b = vec![9, 9];
        p.encode(&mut b);
        assert_eq!(ZstdParams::decode(&b[2..]).unwrap(), (p, b.len() - 2));
        for n in 0..b.len() - 2 {
            assert!(ZstdParams::decode(&b[2..2 + n]).is_err());
        }
    }
    assert!(matches!(
        ZstdParams::decode(&[7, 0, 0]),
        Err(strata::error::Error::DataLoss(_))
    ));
}

#[test]
fn library_is_the_systems() {
    assert_eq!(
        zstd_safe::version_number(),
        10504,
        "Debian 12's libzstd 1.5.4"
    );
}

#[test]
fn small_inputs_every_mode() {
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("1 byte", vec![b'a']),
        ("text 1000", text(1000, 1)),
        ("text 128K-1", text(128 * K - 1, 2)),
        ("text 128K", text(128 * K, 3)),
        ("text 128K+1", text(128 * K + 1, 4)),
        ("random 300K", random(300 * K, 5)),
        ("/usr/bin/ls", std::fs::read("/usr/bin/ls").unwrap()),
    ];
    for (what, plain) in &inputs {
        for from_file in [true, false] {
            for args in [
                &["-3"][..],
                &["-1"],
                &["-3", "--no-check"],
                &["-3", "--no-content-size"],
                &["-3", "--single-thread"],
            ] {
                check_cli(what, plain, args, from_file);
            }
            // (Long mode and level 19 take large contexts: fewer inputs.)
            if plain.len() > 128 * K {
                check_cli(what, plain, &["-3", "--long"], from_file);
                check_cli(what, plain, &["-19"], from_file);
            }
        }
    }
}

#[test]
fn every_level() {
    let plain = std::fs::read("/usr/bin/ls").unwrap();
    for level in 1..=19 {
        let p = check_cli("ls", &plain, &[&format!("-{level}")], true);
        assert_eq!(p.level, level);
        check_cli("ls", &plain, &[&format!("-{level}")], false);
    }
    for level in 20..=22 {
        check_cli(
            "ls",
            &plain[..64 * K],
            &["--ultra", &format!("-{level}")],
            true,
        );
        check_cli(
            "ls",
            &plain[..64 * K],
            &["--ultra", &format!("-{level}")],
            false,
        );
    }
    for n in [1, 5, 10, 100, 1000] {
        let p = check_cli("ls", &plain, &[&format!("--fast={n}")], false);
        assert_eq!(p.level, -n);
    }
}

/// Sizes around 512 KiB (where the CLI starts using its worker), window and
/// block multiples, and more than one job at level 1 (2 MiB jobs).
#[test]
fn medium_inputs() {
    let t = tar(5 << 20, 11);
    for n in [
        512 * K,
        512 * K + 1,
        640 * K,
        (2 << 20) - 1,
        2 << 20,
        (2 << 20) + 1,
        (4 << 20) + 128 * K,
    ] {
        for from_file in [true, false] {
            for args in [
                &["-1"][..],
                &["-1", "--single-thread"],
                &["-1", "--no-content-size"],
            ] {
                check_cli(&format!("tar {n}"), &t[..n], args, from_file);
            }
        }
    }
}

#[test]
fn large_inputs() {
    let docs = docs(5 << 20);
    let zeros = zero_runs(3 << 20);
    let rnd = random((2 << 20) + 3, 9);
    let t = tar(9 << 20, 12);
    for (what, plain) in [
        ("docs", &docs),
        ("zeros", &zeros),
        ("random", &rnd),
        ("tar", &t),
    ] {
        for from_file in [true, false] {
            for args in [
                &["-3"][..],
                &["-3", "--single-thread"],
                &["-3", "--no-content-size"],
                &["-3", "-T0"],
            ] {
                check_cli(what, plain, args, from_file);
            }
        }
    }
    check_cli("docs", &docs, &["-19"], true);
    check_cli("docs", &docs, &["-9"], false);
    check_cli("tar", &t, &["--fast=1"], true);
    check_cli("tar", &t, &["-3", "--long"], false);
}

#[test]
fn zstd_crate_writers() {
    let t = tar(3 << 20, 13);
    for n in [0, 1, 1000, 128 * K, 700 * K, 3 << 20] {
        let plain = &t[..n];
        for level in [0, 1, 9, 19] {
            if level == 19 && n > 1 << 20 {
                continue;
            }
            let frame = zstd::bulk::compress(plain, level).unwrap();
            let p = replay(&format!("bulk {n} {level}"), &frame, plain);
            if n >= 128 * K {
                // (Short inputs come out the same at several levels.)
                assert_eq!(p.level, if level == 0 { 3 } else { level });
            }
            let mut enc = zstd::stream::Encoder::new(Vec::new(), level).unwrap();
            for piece in plain.chunks(10_000) {
                enc.write_all(piece).unwrap();
            }
            let frame = enc.finish().unwrap();
            replay(&format!("Encoder {n} {level}"), &frame, plain);
            if n <= 128 * K {
                let frame = zstd::stream::encode_all(plain, level).unwrap();
                replay(&format!("encode_all {n} {level}"), &frame, plain);
            }
        }
    }
}

#[test]
fn frames_of_other_encoders_find_no_candidate_or_fail() {
    // A dictionary frame: no candidates at all.
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x23, 1, 2, 3, 4, 0];
    f.extend_from_slice(&[0; 8]);
    let h = parse_frame_header(&f).unwrap().unwrap();
    assert_eq!(h.dict_id, Some(0x0403_0201));
    assert!(candidates(&h, None).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn random_inputs_and_levels(
        seed in any::<u64>(),
        n in 0usize..400_000,
        level in -5i32..=12,
        mode in 0u8..4,
    ) {
        let plain = match seed % 3 {
            0 => text(n, seed),
            1 => random(n, seed),
            _ => tar(n, seed),
        };
        let lv = if level <= 0 { format!("--fast={}", 1 - level) } else { format!("-{level}") };
        match mode {
            0 => { check_cli("prop", &plain, &[&lv], true); }
            1 => { check_cli("prop", &plain, &[&lv], false); }
            2 => { check_cli("prop", &plain, &[&lv, "--single-thread", "--no-check"], false); }
            _ => {
                let frame = zstd::bulk::compress(&plain, level).unwrap();
                replay("prop bulk", &frame, &plain);
            }
        }
    }
}

/// What strata's ingest does (codec::unwrap): hold the first 256 KiB of the
/// frame and what they decode to, re-encode that plain prefix with each
/// candidate in 64 KiB steps, and keep the first whose output is a prefix of
/// the frame (trailing by at most 1 MiB). Returns the indexes of all that
/// pass, the first being the one the caller keeps.
fn probe_passers(frame: &[u8], plain_all: &[u8]) -> Vec<usize> {
    const PROBE_COMP: usize = 256 * K;
    const MAX_LAG: usize = 1 << 20;
    let comp = &frame[..frame.len().min(PROBE_COMP)];
    let ended = comp.len() == frame.len();
    let mut dec = zstd::stream::raw::Decoder::new().unwrap();
    let mut plain = vec![0u8; plain_all.len() + 1];
    let plain_len = if ended {
        plain_all.len()
    } else {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut i = InBuffer::around(comp);
        let mut o = OutBuffer::around(&mut plain[..]);
        while i.pos() < comp.len() {
            dec.run(&mut i, &mut o).unwrap();
        }
        o.pos()
    };
    let plain = &plain_all[..plain_len];
    let h = parse_frame_header(frame).unwrap().unwrap();
    let mut passed = Vec::new();
    'cands: for (i, p) in candidates(&h, h.content_size).iter().enumerate() {
        let mut re = p.reencoder().unwrap();
        let mut produced = 0;
        for piece in plain.chunks(64 * K) {
            let mut out = Vec::new();
            if re.feed(piece, &mut out).is_err() {
                continue 'cands;
            }
            if comp.get(produced..produced + out.len()) != Some(&out[..]) {
                continue 'cands;
            }
            produced += out.len();
        }
        if ended {
            let mut out = Vec::new();
            if re.finish(&mut out).is_err() || comp.get(produced..) != Some(&out[..]) {
                continue;
            }
            passed.push(i);
        } else if comp.len() - produced <= MAX_LAG {
            passed.push(i);
        }
    }
    passed
}

fn probe_winner(frame: &[u8], plain: &[u8]) -> Option<usize> {
    probe_passers(frame, plain).first().copied()
}

/// The caller's probe picks the right candidate for the usual producers:
/// those a probe cannot tell from a likelier one are listed in the report.
#[test]
fn probe_picks_the_producer() {
    let t = tar(3 << 20, 21);
    let docs = docs(2 << 20);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>, bool)> = vec![
        ("tar", t.clone(), vec!["-3"], true),
        ("tar", t.clone(), vec!["-3"], false),
        ("tar", t.clone(), vec!["-1"], false),
        ("tar", t.clone(), vec!["-9"], true),
        ("tar", t.clone(), vec!["-1", "--no-content-size"], true),
        ("docs", docs.clone(), vec!["-19"], false),
        ("docs", docs.clone(), vec!["--fast=4"], true),
    ];
    for (what, plain, args, from_file) in &cases {
        let frame = cli(args, plain, *from_file);
        let h = parse_frame_header(&frame).unwrap().unwrap();
        let i = probe_winner(&frame, plain).expect("a candidate passes the probe");
        let p = candidates(&h, h.content_size)[i];
        assert!(
            reencode(&p, plain, &frame, 1).is_ok(),
            "{what} {args:?}: the probe picked {} which fails later",
            p.name()
        );
    }
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.write_all(&t).unwrap();
    let frame = enc.finish().unwrap();
    let h = parse_frame_header(&frame).unwrap().unwrap();
    let p = candidates(&h, None)[probe_winner(&frame, &t).unwrap()];
    assert!(reencode(&p, &t, &frame, 2).is_ok(), "Encoder: {}", p.name());
    let frame = zstd::bulk::compress(&t, 3).unwrap();
    let h = parse_frame_header(&frame).unwrap().unwrap();
    let p = candidates(&h, h.content_size)[probe_winner(&frame, &t).unwrap()];
    assert!(reencode(&p, &t, &frame, 3).is_ok(), "bulk: {}", p.name());

    // Producers that write the same first megabytes as a likelier one: the
    // probe keeps the likelier, and the right one only passes the probe too.
    for (args, from_file) in [
        (&["-3", "--single-thread"][..], true),
        (&["-3", "--single-thread"], false),
        (&["-3", "--no-check"], false),
        (&["-3", "--no-content-size"], true),
    ] {
        let frame = cli(args, &t, from_file);
        let h = parse_frame_header(&frame).unwrap().unwrap();
        let cands = candidates(&h, h.content_size);
        let passers = probe_passers(&frame, &t);
        let right = cands
            .iter()
            .position(|p| reencode(p, &t, &frame, 4).is_ok())
            .expect("some candidate rebuilds it");
        assert!(
            passers.contains(&right),
            "{args:?}: {}",
            cands[right].name()
        );
        eprintln!(
            "zstd {args:?} {}: probe keeps {}, right is {} (#{} of {} that pass)",
            if from_file { "file" } else { "pipe" },
            cands[passers[0]].name(),
            cands[right].name(),
            passers.iter().position(|&i| i == right).unwrap() + 1,
            passers.len()
        );
    }
}

#[test]
fn long_mode_from_a_file_is_a_blind_candidate() {
    let t = tar(3 << 20, 31);
    let frame = cli(&["-3", "--long"], &t, true);
    let h = parse_frame_header(&frame).unwrap().unwrap();
    let blind = blind_candidates(&h, None);
    assert!(blind.iter().all(|p| p.blind() && p.long.is_some()));
    let right = blind
        .iter()
        .find(|p| reencode(p, &t, &frame, 5).is_ok())
        .expect("a blind candidate rebuilds zstd --long FILE");
    assert_eq!(right.level, 3);
    assert!(!candidates(&h, None).contains(right));
}
