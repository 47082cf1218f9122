//! The port against Go's standard library itself (the oracle program
//! tests/go/gogzip at the repository root, built with the system `go`).
//! Every comparison is byte for byte; a difference reports the first
//! differing offset. strata's tests/replay_go.rs checks its replay adapter.

use go_oracle::*;
use goflate::Writer;
use proptest::prelude::*;

/// Every level Go accepts; -1 is its default (6).
const LEVELS: [i32; 12] = [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// The oracle's raw deflate for `input` written `write` bytes at a time,
/// with a sync flush every `flush` bytes (0: none).
fn go_flate(input: &[u8], level: i32, write: usize, flush: usize) -> Vec<u8> {
    let args = [
        "-mode=flate".to_string(),
        format!("-level={level}"),
        format!("-write={write}"),
        format!("-flush-every={flush}"),
    ];
    run(gogzip(), &args, input)
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

fn rust_flate(input: &[u8], level: i32, write: usize, flush: usize) -> Vec<u8> {
    rust_flate_with(&mut Writer::new(level).unwrap(), input, write, flush)
}

fn check(what: &str, input: &[u8], level: i32, write: usize, flush: usize) {
    let want = go_flate(input, level, write, flush);
    let got = rust_flate(input, level, write, flush);
    let what = format!(
        "flate {what} len={} level={level} write={write} flush={flush}",
        input.len()
    );
    assert_same(&what, &got, &want);
}

fn check_levels(what: &str, input: &[u8]) {
    for level in LEVELS {
        check(what, input, level, 32 << 10, 0);
    }
}

/// Tiny inputs, including level 1's special cases (nothing matched below
/// 17 bytes, no skipping below 128) and sizes around the bit writer's
/// 240/248-byte buffer.
#[test]
fn small_inputs_every_level() {
    for n in [
        0, 1, 2, 3, 4, 15, 16, 17, 31, 32, 33, 127, 128, 129, 239, 240, 248, 249, 4000,
    ] {
        check_levels("random", &random(n, n as u64));
        check_levels("text", &text(n, n as u64));
        check_levels("run", &vec![b'a'; n]);
    }
}

/// Sizes straddling the window (32 KiB), the shift point 2*window-262
/// (65274), maxStoreBlockSize (65535), the 1<<14-token block cut, 64 KiB and
/// 128 KiB.
#[test]
fn buffer_boundaries() {
    let sizes = [
        16383, 16384, 16385, 32767, 32768, 32769, 65273, 65274, 65275, 65534, 65535, 65536, 65537,
        65798, 98304, 131071, 131072, 131073,
    ];
    boundary_inputs(&sizes, check_levels);
}

/// Incompressible data (stored and Huffman-only decisions), long runs,
/// text, a generated tar, and random/text alternation.
#[test]
fn data_kinds() {
    go_oracle::data_kinds(300_000, check_levels);
}

/// Prefixes of the go tool, bash and a shared library.
#[test]
fn real_files_every_level() {
    for (path, data) in real_files(600_000) {
        check_levels(&path, &data);
    }
}

/// Sync flushes at assorted intervals and write sizes (after every byte on
/// a small input: level 1's stored blocks and matcher resets).
#[test]
fn sync_flushes() {
    let tar = tar_archive(250_000, 8);
    for level in LEVELS {
        check("tar", &tar[..3000], level, 1, 1);
        for (flush, write) in [
            (16, 5),
            (17, 17),
            (100, 7),
            (4096, 1000),
            (65535, 4096),
            (65536, 32 << 10),
            (70_000, 65535),
        ] {
            let data = if flush < 100 {
                &tar[..20_000]
            } else {
                &tar[..]
            };
            check("tar", data, level, write, flush);
        }
    }
}

/// compress/flate's output does not depend on the write sizes (the oracle
/// is run with several), and the Rust writer gives it for any of them.
#[test]
fn write_split_independence() {
    let mut data = text(150_000, 9);
    data.extend(random(40_000, 10));
    data.extend(file_prefix("/usr/bin/go", 100_000).expect("the go tool"));
    for level in LEVELS {
        let want = go_flate(&data, level, 32 << 10, 0);
        for write in [1, 1000, 65535, 65536, data.len()] {
            let what = format!("level {level} oracle -write={write}");
            assert_same(&what, &go_flate(&data, level, write, 0), &want);
        }
        for write in [1, 13, 4096, 65535, 65536, 100_000, data.len()] {
            let what = format!("level {level} rust write {write}");
            assert_same(&what, &rust_flate(&data, level, write, 0), &want);
        }
    }
}

/// `reset` makes a used writer (closed, or stopped mid-stream) give the
/// oracle's output for the next stream.
#[test]
fn reset_reuses_writer() {
    let a = mixed(150_000, 13);
    let b = tar_archive(120_000, 14);
    for level in LEVELS {
        let want = go_flate(&b, level, 32 << 10, 0);
        let mut w = Writer::new(level).unwrap();
        rust_flate_with(&mut w, &a, 32 << 10, 0);
        w.reset();
        let got = rust_flate_with(&mut w, &b, 32 << 10, 0);
        assert_same(&format!("reset after close level={level}"), &got, &want);
        let mut junk = Vec::new();
        w.reset();
        w.write(&a[..100_000], &mut junk);
        w.flush(&mut junk);
        w.write(&a[100_000..], &mut junk);
        w.reset();
        let got = rust_flate_with(&mut w, &b, 32 << 10, 0);
        assert_same(&format!("reset mid-stream level={level}"), &got, &want);
    }
}

/// Past 16 MiB the lazy levels rebase their hash positions
/// (hashOffset > maxHashOffset); level 2 is the cheapest that does.
#[test]
fn hash_offset_rebase() {
    let mut data = Vec::with_capacity(17 << 20);
    let base = tar_archive(1 << 20, 15);
    let mut i = 0u64;
    while data.len() < 17 << 20 {
        // Varied enough that the matcher keeps searching, not just copying.
        data.extend_from_slice(&base[(i as usize * 4099) % 4096..]);
        data.extend(random(50_000, i));
        i += 1;
    }
    check("rebase", &data, 2, 1 << 20, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 64, ..ProptestConfig::default() })]
    #[test]
    fn prop_matches_go(
        input in arb_input(),
        li in 0usize..LEVELS.len(),
        write in prop_oneof![Just(32usize << 10), 1usize..100_000],
        flush in prop_oneof![3 => Just(0usize), 1 => 1usize..100_000],
    ) {
        check("prop", &input, LEVELS[li], write, flush);
    }
}
