//! The port against the real thing: the oracle program tests/go/kpgzip at
//! the repository root, built from Debian's klauspost/compress v1.15.12 and
//! pgzip v1.2.5. Every comparison is byte for byte; a difference reports the
//! first differing offset. strata's tests/replay_kp.rs checks its replay
//! adapter.

use go_oracle::*;
use kpflate::deflate::Writer;
use kpflate::pgzip::{compress_block, compress_block_with, tail_of, PgzipEncoder, PgzipParams};
use proptest::prelude::*;

/// Every level klauspost accepts; -1 is its default (5).
const LEVELS: [i32; 12] = [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const MIB: usize = 1 << 20;
/// pgzip's dictionary: the previous block's last 16 KiB.
const TAIL: usize = 16 * 1024;

fn s(v: impl ToString) -> String {
    v.to_string()
}

// ---- flate mode ----

/// The oracle's raw deflate for `input` written `write` bytes at a time,
/// with a sync flush every `flush` bytes (0: none) and a preset dictionary.
fn go_flate(input: &[u8], level: i32, dict: Option<&[u8]>, write: usize, flush: usize) -> Vec<u8> {
    let mut args = vec![
        s("-mode=flate"),
        format!("-level={level}"),
        format!("-write={write}"),
        format!("-flush-every={flush}"),
    ];
    // Kept until the oracle has run.
    let mut file = None;
    if let Some(d) = dict {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, d).unwrap();
        args.push(format!("-dict={}", f.path().display()));
        file = Some(f);
    }
    let out = run(kpgzip(), &args, input);
    drop(file);
    out
}

/// The oracle's Write/Flush schedule, on the Rust writer.
fn rust_flate_with(w: &mut Writer, input: &[u8], write: usize, flush: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut since = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let mut n = write.min(rest.len());
        if flush > 0 {
            n = n.min(flush - since);
        }
        w.write(&rest[..n], &mut out);
        rest = &rest[n..];
        since += n;
        if flush > 0 && since == flush {
            w.flush(&mut out);
            since = 0;
        }
    }
    w.close(&mut out);
    out
}

fn rust_flate(
    input: &[u8],
    level: i32,
    dict: Option<&[u8]>,
    write: usize,
    flush: usize,
) -> Vec<u8> {
    let mut w = match dict {
        Some(d) => Writer::new_dict(level, d).unwrap(),
        None => Writer::new(level).unwrap(),
    };
    rust_flate_with(&mut w, input, write, flush)
}

fn check_flate(
    what: &str,
    input: &[u8],
    level: i32,
    dict: Option<&[u8]>,
    write: usize,
    flush: usize,
) {
    let want = go_flate(input, level, dict, write, flush);
    let got = rust_flate(input, level, dict, write, flush);
    let dl = dict.map(|d| d.len());
    assert_same(
        &format!(
            "flate {what} len={} level={level} dict={dl:?} write={write} flush={flush}",
            input.len()
        ),
        &got,
        &want,
    );
}

fn check_flate_levels(what: &str, input: &[u8]) {
    for level in LEVELS {
        check_flate(what, input, level, None, 32 << 10, 0);
    }
}

// ---- pgzip mode ----

/// The oracle's pgzip body (block 0: pgzip's default, SetConcurrency not
/// called).
fn go_pgzip(input: &[u8], level: i32, block: usize) -> Vec<u8> {
    let args = [
        s("-mode=pgzip"),
        format!("-level={level}"),
        format!("-block={}", if block == MIB { 0 } else { block }),
    ];
    gzip_body(&run(kpgzip(), &args, input)).to_vec()
}

fn rust_pgzip(level: i32, block: usize, input: &[u8], feed: usize) -> Vec<u8> {
    let mut e = PgzipEncoder::new(PgzipParams {
        level,
        block_size: block,
    })
    .unwrap();
    let mut out = Vec::new();
    for c in input.chunks(feed) {
        e.feed(c, &mut out);
    }
    e.finish(&mut out);
    out
}

/// Block by block with `compress_block`, as a parallel rebuild would.
fn rust_pgzip_blocks(level: i32, block: usize, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dict: &[u8] = &[];
    let mut rest = input;
    while rest.len() >= block {
        let (b, r) = rest.split_at(block);
        compress_block(level, dict, b, false, &mut out);
        dict = tail_of(b);
        rest = r;
    }
    compress_block(level, dict, rest, true, &mut out);
    out
}

/// The oracle's pgzip body against the streaming encoder and per-block
/// compression.
fn check_pgzip(what: &str, input: &[u8], level: i32, block: usize) {
    let want = go_pgzip(input, level, block);
    let what = format!(
        "pgzip {what} len={} level={level} block={block}",
        input.len()
    );
    assert_same(&what, &rust_pgzip(level, block, input, 32 << 10), &want);
    assert_same(
        &format!("{what} (compress_block)"),
        &rust_pgzip_blocks(level, block, input),
        &want,
    );
}

// ---- Tests: flate ----

/// Tiny inputs: empty, 1 byte, and level 1..6's small-window special cases
/// (stored up to 32 bytes, Huffman only below 128).
#[test]
fn flate_small_inputs_every_level() {
    for n in [
        0, 1, 2, 3, 4, 15, 16, 17, 31, 32, 33, 127, 128, 129, 257, 4000,
    ] {
        check_flate_levels("random", &random(n, n as u64));
        check_flate_levels("text", &text(n, n as u64));
        check_flate_levels("run", &vec![b'z'; n]);
    }
}

/// Sizes straddling the internal buffers: 16 KiB, the 32 KiB window,
/// 2*window-262 (65274, where the lazy levels slide), the 65535-byte
/// blocks of the fast levels and stored blocks, 64 KiB and 128 KiB.
#[test]
fn flate_buffer_boundaries() {
    let sizes = [
        16383, 16384, 16385, 32767, 32768, 32769, 65273, 65274, 65275, 65535, 65536, 65537, 98304,
        131071, 131072, 131073,
    ];
    boundary_inputs(&sizes, check_flate_levels);
}

/// Incompressible data (stored and Huffman-only decisions), long runs,
/// text, a generated tar, and random/text alternation.
#[test]
fn flate_data_kinds() {
    // Zeros kept under 64 KiB: klauspost's level 9 spends ~3 s on any longer
    // run of one byte (the two runs cover that once).
    data_kinds(60_000, check_flate_levels);
}

/// Prefixes of the go tool, bash and a shared library.
#[test]
fn flate_real_files() {
    for (path, data) in real_files(600_000) {
        check_flate_levels(&path, &data);
    }
}

/// Preset dictionaries: empty, shorter than a match, short, pgzip's 16 KiB
/// tail, and longer than the 32 KiB window; with data, with a few bytes,
/// with none, and with sync flushes.
#[test]
fn flate_dictionaries() {
    let data = mixed(160_000, 8);
    let long = text(40_000, 9);
    let dicts: [(&str, &[u8]); 5] = [
        ("empty", &[]),
        ("3 bytes", &data[..3]),
        ("1000", &data[..1000]),
        ("16K tail", &data[60_000..60_000 + TAIL]),
        ("40K text", &long),
    ];
    for level in LEVELS {
        for (name, dict) in dicts {
            let d = Some(dict);
            check_flate(name, &data[60_000 + TAIL..], level, d, 32 << 10, 0);
            check_flate(name, &data[100_000..100_100], level, d, 32 << 10, 0);
            check_flate(name, &[], level, d, 32 << 10, 0);
            check_flate(name, &data[..90_000], level, d, 32 << 10, 40_000);
        }
    }
}

/// Sync flushes at intervals around the buffer sizes (and after every
/// byte on a small input).
#[test]
fn flate_sync_flushes() {
    let tar = tar_archive(250_000, 10);
    for level in LEVELS {
        check_flate("tar", &tar[..3000], level, None, 32 << 10, 1);
        for (flush, write) in [(100, 7), (5000, 32 << 10), (65535, 4096), (70_000, 65536)] {
            check_flate("tar", &tar, level, None, write, flush);
        }
    }
}

/// klauspost's output does not depend on the write sizes (the oracle is
/// run with several), and the Rust writer gives it for any of them.
#[test]
fn flate_write_sizes() {
    let mut data = mixed(150_000, 11);
    data.extend(file_prefix("/usr/bin/go", 100_000).expect("the go tool"));
    for level in LEVELS {
        let want = go_flate(&data, level, None, 32 << 10, 0);
        for write in [1, 1000, 65535, 65536, data.len()] {
            let what = format!("level {level} oracle -write={write}");
            assert_same(&what, &go_flate(&data, level, None, write, 0), &want);
        }
        for write in [1, 13, 4096, 65535, 65536, 100_000, data.len()] {
            let what = format!("level {level} rust write {write}");
            assert_same(&what, &rust_flate(&data, level, None, write, 0), &want);
        }
    }
}

/// A writer reused through reset_dict / reset (as pgzip pools them) gives
/// the oracle's output for the new dictionary: no history leaks through.
#[test]
fn writer_reuse_matches_oracle() {
    let a = mixed(150_000, 14);
    let b = tar_archive(120_000, 15);
    let dict = &a[..20_000];
    for level in LEVELS {
        let want = go_flate(&b, level, Some(dict), 32 << 10, 0);
        let mut w = Writer::new(level).unwrap();
        let mut junk = Vec::new();
        w.write(&a, &mut junk);
        w.flush(&mut junk);
        w.write(&b[..5000], &mut junk);
        w.reset_dict(dict);
        let got = rust_flate_with(&mut w, &b, 32 << 10, 0);
        assert_same(&format!("reset_dict level={level}"), &got, &want);
        // Go's Reset keeps the dictionary of the last ResetDict.
        w.write(&a[..3000], &mut junk);
        w.reset();
        let got = rust_flate_with(&mut w, &b, 32 << 10, 0);
        assert_same(&format!("reset level={level}"), &got, &want);
        // compress_block_with on a used writer is compress_block.
        let mut fresh = Vec::new();
        compress_block(level, dict, &b, true, &mut fresh);
        let mut reused = Vec::new();
        compress_block_with(&mut w, dict, &b, true, &mut reused);
        assert_same(
            &format!("compress_block_with level={level}"),
            &reused,
            &fresh,
        );
    }
}

// ---- Tests: pgzip ----

/// Small block sizes at every level: the smallest pgzip accepts (16385),
/// 100000 and umoci's 256 KiB; empty and 1-byte input, block size +-1,
/// exact multiples (an empty last block), and last blocks of 16383..16385
/// bytes (whether the next block gets a dictionary).
#[test]
fn pgzip_small_blocks_every_level() {
    let tar = tar_archive(3 * (256 << 10) + 20_000, 16);
    let rnd = random(150_000, 17);
    for level in LEVELS {
        for block in [16385, 100_000, 256 << 10] {
            check_pgzip("empty", &[], level, block);
            check_pgzip("one", b"x", level, block);
            for n in [block - 1, block, block + 1, 2 * block, 3 * block] {
                check_pgzip("tar", &tar[..n], level, block);
            }
            for last in [TAIL - 1, TAIL, TAIL + 1] {
                check_pgzip("tar tail", &tar[..2 * block + last], level, block);
            }
        }
        check_pgzip("random", &rnd, level, 16385);
        check_pgzip("random", &rnd, level, 100_000);
    }
}

/// pgzip's default 1 MiB blocks at every level: block size +-1, an exact
/// block (empty last block), a last block of 16 KiB (a real binary); at a
/// few levels also 16 KiB +-1 and two exact blocks.
#[test]
fn pgzip_default_block_every_level() {
    let tar = tar_archive(2 * MIB, 18);
    let go = file_prefix("/usr/bin/go", MIB + TAIL + 1).expect("the go tool");
    assert_eq!(go.len(), MIB + TAIL + 1, "/usr/bin/go too short");
    for level in LEVELS {
        for n in [MIB - 1, MIB, MIB + 1] {
            check_pgzip("tar", &tar[..n], level, MIB);
        }
        check_pgzip("go", &go[..MIB + TAIL], level, MIB);
    }
    for level in [-1, 1, 6, 9] {
        check_pgzip("go", &go[..MIB + TAIL - 1], level, MIB);
        check_pgzip("go", &go, level, MIB);
        check_pgzip("tar", &tar[..2 * MIB], level, MIB);
    }
    check_pgzip("empty", &[], -1, MIB);
}

/// Real files through pgzip with small blocks: many blocks, each with the
/// previous one's tail as dictionary, more than the parallel rebuild keeps
/// in flight.
#[test]
fn pgzip_real_files() {
    for (path, data) in real_files(400_000) {
        for level in LEVELS {
            let block = if level % 2 == 0 { 16385 } else { 100_000 };
            check_pgzip(&path, &data, level, block);
        }
    }
}

/// pgzip's output does not depend on its Write sizes (the oracle is run
/// with several), and the encoder gives it for any feed sizes.
#[test]
fn pgzip_write_sizes() {
    let data = tar_archive(350_000, 19);
    let block = 100_000;
    for level in LEVELS {
        let want = go_pgzip(&data, level, block);
        for write in [1, 1000, 65536, 100_001, data.len()] {
            let args = [
                s("-mode=pgzip"),
                format!("-level={level}"),
                format!("-block={block}"),
                format!("-write={write}"),
            ];
            let got = run(kpgzip(), &args, &data);
            let what = format!("pgzip level {level} oracle -write={write}");
            assert_same(&what, gzip_body(&got), &want);
        }
        for feed in [1, 13, 99_999, 100_000, 100_001, data.len()] {
            let what = format!("pgzip level {level} rust feed {feed}");
            assert_same(&what, &rust_pgzip(level, block, &data, feed), &want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 64, ..ProptestConfig::default() })]
    #[test]
    fn prop_flate_and_pgzip(
        input in arb_input(),
        li in 0usize..LEVELS.len(),
        write in prop_oneof![Just(32usize << 10), 1usize..100_000],
        flush in prop_oneof![3 => Just(0usize), 1 => 1usize..100_000],
        block in prop_oneof![Just(16385usize), 16385usize..120_000],
        dict_len in prop_oneof![2 => Just(0usize), 1 => 1usize..40_000],
    ) {
        let level = LEVELS[li];
        check_flate("prop", &input, level, None, write, flush);
        if dict_len > 0 {
            let dict = mixed(dict_len, input.len() as u64);
            check_flate("prop", &input, level, Some(&dict), write, flush);
        }
        check_pgzip("prop", &input, level, block);
    }
}
