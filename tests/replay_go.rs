//! strata's replay of Go's compress/gzip (`codec::go_replay`) against the
//! standard library itself (tests/go/gogzip): the re-encoder a plan names
//! must give Go's bytes from any split of the plain input. The port under
//! it is checked on its own by crates/goflate/tests/oracle.rs.

use go_oracle::*;
use proptest::prelude::*;
use rand::Rng;
use strata::codec::go_replay::GoParams;
use strata::codec::Reencoder;

/// Every level Go accepts; -1 is its default (6).
const LEVELS: [i32; 12] = [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// The oracle's raw deflate for `input`, written 32 KiB at a time, no flush
/// (compress/gzip never flushes on its own).
fn go_flate(input: &[u8], level: i32) -> Vec<u8> {
    let args = [
        "-mode=flate".to_string(),
        format!("-level={level}"),
        "-write=32768".to_string(),
        "-flush-every=0".to_string(),
    ];
    run(gogzip(), &args, input)
}

/// GoParams levels: Go's -1 is stored as 6.
fn go_level(level: i32) -> i8 {
    if level == -1 {
        6
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

fn check_replay(what: &str, input: &[u8], level: i32, seed: u64) {
    let want = go_flate(input, level);
    let p = GoParams {
        level: go_level(level),
    };
    let got = reencode(p.reencoder().unwrap(), input, seed);
    let what = format!("{what} len={} level={level} ({})", input.len(), p.name());
    assert_same(&what, &got, &want);
}

fn check_levels(what: &str, input: &[u8]) {
    for level in LEVELS {
        check_replay(what, input, level, input.len() as u64);
    }
}

/// Incompressible data, long runs, text, a generated tar, and random/text
/// alternation, fed in irregular pieces at every level.
#[test]
fn replay_data_kinds() {
    go_oracle::data_kinds(300_000, check_levels);
}

/// Prefixes of the go tool, bash and a shared library.
#[test]
fn replay_real_files() {
    for (path, data) in real_files(600_000) {
        check_levels(&path, &data);
    }
}

/// compress/gzip is one flate stream, closed at the end: its body is what
/// the replay gives.
#[test]
fn gzip_mode_replay() {
    let inputs = [
        Vec::new(),
        b"x".to_vec(),
        tar_archive(200_000, 11),
        mixed(70_000, 12),
    ];
    for level in LEVELS {
        for input in &inputs {
            let args = ["-mode=gzip".to_string(), format!("-level={level}")];
            let gz = run(gogzip(), &args, input);
            let p = GoParams {
                level: go_level(level),
            };
            let got = reencode(p.reencoder().unwrap(), input, level as u64);
            let what = format!("gzip len={} level={level} ({})", input.len(), p.name());
            assert_same(&what, &got, gzip_body(&gz));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]
    #[test]
    fn prop_replay_matches_go(
        n in 0usize..200_000,
        seed in any::<u64>(),
        li in 0usize..LEVELS.len(),
    ) {
        check_replay("prop", &mixed(n, seed), LEVELS[li], seed);
    }
}
