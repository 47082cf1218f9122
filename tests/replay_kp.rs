//! strata's replay of klauspost's encoders (`codec::kp_replay`) against the
//! real thing (tests/go/kpgzip, Debian's klauspost/compress v1.15.12 and
//! pgzip v1.2.5): both re-encoders a plan can name (ingest's and the
//! parallel rebuild's) must give the oracle's bytes from any split of the
//! plain input. The port under it is checked on its own by
//! crates/kpflate/tests/oracle.rs.

use go_oracle::*;
use proptest::prelude::*;
use rand::Rng;
use strata::codec::kp_replay::{KpFraming, KpParams};
use strata::codec::Reencoder;

/// Every level klauspost accepts; -1 is its default (5).
const LEVELS: [i32; 12] = [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const MIB: usize = 1 << 20;
/// pgzip's dictionary: the previous block's last 16 KiB.
const TAIL: usize = 16 * 1024;

/// KpParams levels: Go's -1 is stored as 5.
fn kp_level(level: i32) -> i8 {
    if level == -1 {
        5
    } else {
        level as i8
    }
}

/// A reencoder fed `input` in irregular pieces (empty ones included).
fn reencode(mut r: Box<dyn Reencoder>, input: &[u8], seed: u64) -> Vec<u8> {
    let mut g = rng(seed);
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = match g.random_range(0..4) {
            0 => 0,
            1 => g.random_range(1..100),
            _ => g.random_range(1..150_000),
        }
        .min(rest.len());
        r.feed(&rest[..n], &mut out).unwrap();
        rest = &rest[n..];
    }
    r.finish(&mut out).unwrap();
    out
}

/// klauspost/compress/gzip's body for `input` (one flate stream, closed).
fn go_gzip_body(input: &[u8], level: i32) -> Vec<u8> {
    let args = ["-mode=gzip".to_string(), format!("-level={level}")];
    gzip_body(&run(kpgzip(), &args, input)).to_vec()
}

/// The single-stream replay, ingest and rebuild re-encoders alike.
fn check_single(what: &str, input: &[u8], level: i32) {
    let want = go_gzip_body(input, level);
    let p = KpParams::single(kp_level(level));
    assert_eq!(p.framing, KpFraming::Single);
    let what = format!("{} {what} len={} level={level}", p.name(), input.len());
    let seed = (input.len() as u64).wrapping_add(level as u64);
    let got = reencode(p.reencoder().unwrap(), input, seed);
    assert_same(&format!("{what} reencoder"), &got, &want);
    let got = reencode(p.rebuild_reencoder().unwrap(), input, seed.wrapping_add(1));
    assert_same(&format!("{what} rebuild_reencoder"), &got, &want);
}

/// The oracle's pgzip body (block 0: pgzip's default, SetConcurrency not
/// called) against both pgzip replay re-encoders.
fn check_pgzip(what: &str, input: &[u8], level: i32, block: usize) {
    let args = [
        "-mode=pgzip".to_string(),
        format!("-level={level}"),
        format!("-block={}", if block == MIB { 0 } else { block }),
    ];
    let want = gzip_body(&run(kpgzip(), &args, input)).to_vec();
    let p = KpParams::pgzip(kp_level(level), block as u32);
    let what = format!(
        "{} {what} len={} level={level} block={block}",
        p.name(),
        input.len()
    );
    let seed = (input.len() + block) as u64;
    let got = reencode(p.reencoder().unwrap(), input, seed);
    assert_same(&format!("{what} reencoder"), &got, &want);
    let got = reencode(p.rebuild_reencoder().unwrap(), input, seed.wrapping_add(1));
    assert_same(&format!("{what} rebuild_reencoder"), &got, &want);
}

/// Empty, one byte, a tar and mixed data at every level.
#[test]
fn single_stream_replay() {
    let inputs = [
        Vec::new(),
        b"x".to_vec(),
        tar_archive(200_000, 12),
        mixed(70_000, 13),
    ];
    for level in LEVELS {
        for input in &inputs {
            check_single("input", input, level);
        }
    }
}

/// Incompressible data, runs, text, a tar and alternations at every level.
#[test]
fn single_stream_data_kinds() {
    // Zeros kept under 64 KiB: klauspost's level 9 spends ~3 s on any longer
    // run of one byte.
    data_kinds(60_000, |what, input| {
        for level in LEVELS {
            check_single(what, input, level);
        }
    });
}

/// Small blocks at every level: exact multiples (an empty last block) and
/// last blocks around the 16 KiB dictionary, more blocks than the parallel
/// rebuild keeps in flight.
#[test]
fn pgzip_replay_small_blocks() {
    let tar = tar_archive(3 * (256 << 10) + 20_000, 16);
    for level in LEVELS {
        for block in [16385, 256 << 10] {
            check_pgzip("empty", &[], level, block);
            for n in [block - 1, 2 * block, 2 * block + TAIL + 1] {
                check_pgzip("tar", &tar[..n], level, block);
            }
        }
    }
}

/// pgzip's default 1 MiB blocks on a real binary and a tar.
#[test]
fn pgzip_replay_default_block() {
    let tar = tar_archive(2 * MIB, 18);
    let go = file_prefix("/usr/bin/go", MIB + TAIL + 1).expect("the go tool");
    for level in [-1, 1, 5, 6, 9] {
        check_pgzip("go", &go, level, MIB);
        check_pgzip("tar", &tar[..2 * MIB], level, MIB);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]
    #[test]
    fn prop_replay_matches_oracle(
        n in 0usize..200_000,
        seed in any::<u64>(),
        li in 0usize..LEVELS.len(),
        block in 16385usize..120_000,
    ) {
        let input = mixed(n, seed);
        check_single("prop", &input, LEVELS[li]);
        check_pgzip("prop", &input, LEVELS[li], block);
    }
}
