//! The zlib replay encoder against the real encoders: Python's zlib/gzip
//! modules (/usr/bin/python3) and Debian's pigz, both on the system zlib.
//! Every comparison is byte for byte on the raw deflate body.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use strata::codec::zlib::*;
use strata::codec::Reencoder;

const PYTHON: &str = "/usr/bin/python3";

/// Reads the input on stdin; for each spec on the command line writes an
/// 8-byte length and the compressed bytes.
const PY_SCRIPT: &str = r#"
import gzip, io, struct, sys, zlib
data = sys.stdin.buffer.read()
out = sys.stdout.buffer
for spec in sys.argv[1:]:
    kind, *a = spec.split(':')
    a = [int(x) for x in a]
    if kind == 'raw':
        c = zlib.compressobj(a[0], zlib.DEFLATED, -a[1], a[2], a[3])
        r = c.compress(data) + c.flush()
    elif kind == 'gz':
        r = gzip.compress(data, compresslevel=a[0], mtime=1)
    elif kind == 'gz0':
        r = gzip.compress(data, compresslevel=a[0], mtime=0)
    elif kind == 'file':
        b = io.BytesIO()
        with gzip.GzipFile(fileobj=b, mode='wb', compresslevel=a[0], mtime=1) as f:
            for i in range(0, len(data), a[1]):
                f.write(data[i:i + a[1]])
        r = b.getvalue()
    else:
        raise SystemExit('bad spec ' + spec)
    out.write(struct.pack('<Q', len(r)))
    out.write(r)
"#;

/// Runs `program args` with `input` on stdin; returns stdout.
fn run(program: &str, args: &[String], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let output = std::thread::scope(|s| {
        // Write from another thread: the child may fill its stdout before reading all input.
        s.spawn(move || stdin.write_all(input).unwrap());
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "{program} {args:?} failed: {status}");
    output
}

/// Python's outputs for each spec (see PY_SCRIPT).
fn python(specs: &[String], data: &[u8]) -> Vec<Vec<u8>> {
    let mut args = vec!["-c".to_string(), PY_SCRIPT.to_string()];
    args.extend(specs.iter().cloned());
    let raw = run(PYTHON, &args, data);
    let mut outs = Vec::new();
    let mut rest = &raw[..];
    while !rest.is_empty() {
        let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
        outs.push(rest[8..8 + len].to_vec());
        rest = &rest[8 + len..];
    }
    assert_eq!(outs.len(), specs.len());
    outs
}

/// `pigz -n -c ARGS` of `data`.
fn pigz(args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut a = vec!["-n".to_string(), "-c".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    run("pigz", &a, data)
}

/// Parsed gzip member: (XFL, OS, deflate body).
fn gzip_parts(gz: &[u8]) -> (u8, u8, &[u8]) {
    assert!(gz.len() >= 18, "gzip member too short: {}", gz.len());
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "not a gzip deflate member");
    let flags = gz[3];
    let mut at = 10;
    if flags & 4 != 0 {
        let xlen = u16::from_le_bytes([gz[at], gz[at + 1]]) as usize;
        at += 2 + xlen;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            at += gz[at..].iter().position(|&b| b == 0).unwrap() + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    (gz[8], gz[9], &gz[at..gz.len() - 8])
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: output differs at byte {first} (replay {} bytes, original {} bytes)",
        got.len(),
        want.len()
    );
}

/// Replays `data` fed in one piece.
fn replay(p: ZlibParams, data: &[u8]) -> Vec<u8> {
    let mut r: Box<dyn Reencoder> = p.reencoder().unwrap();
    let mut out = Vec::new();
    r.feed(data, &mut out).unwrap();
    r.finish(&mut out).unwrap();
    out
}

/// Replays `data` fed in random pieces, from single bytes to whole blocks.
fn replay_split(p: ZlibParams, data: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut r = p.reencoder().unwrap();
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let max = match rng.random_range(0..4) {
            0 => 16,
            1 => 4096,
            2 => 70_000,
            _ => 300_000,
        };
        let n = rng.random_range(0..=max).min(rest.len());
        r.feed(&rest[..n], &mut out).unwrap();
        rest = &rest[n..];
    }
    r.finish(&mut out).unwrap();
    out
}

/// Checks both feeding patterns against the original deflate body.
fn check(what: &str, p: ZlibParams, data: &[u8], want: &[u8]) {
    assert_same(&format!("{what} {}", p.name()), &replay(p, data), want);
    let seed = data.len() as u64 ^ u64::from(p.level) << 40;
    assert_same(
        &format!("{what} {} (split feed)", p.name()),
        &replay_split(p, data, seed),
        want,
    );
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; n];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A tar of real files, random data and long zero runs, about 1.5 MB.
fn generated_tar() -> &'static [u8] {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    TAR.get_or_init(|| {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        let mut licenses: Vec<_> = std::fs::read_dir("/usr/share/common-licenses")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        licenses.sort();
        for p in &licenses {
            add(
                &format!("licenses/{}", p.file_name().unwrap().to_string_lossy()),
                &std::fs::read(p).unwrap(),
            );
        }
        add("random.bin", &random_bytes(200_000, 7));
        add("zeros.bin", &vec![0; 300_000]);
        let text: String = (0..20_000)
            .map(|i| format!("line {i} of {}\n", i % 97))
            .collect();
        add("text.txt", text.as_bytes());
        add("ls", &std::fs::read("/usr/bin/ls").unwrap());
        b.into_inner().unwrap()
    })
}

/// Named inputs: edge sizes around the window and pigz block sizes, and real data.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let tar = generated_tar();
    let mut c = vec![
        ("empty".to_string(), Vec::new()),
        ("one byte".to_string(), vec![b'x']),
    ];
    for base in [32 << 10, 64 << 10, 128 << 10, 256 << 10] {
        for n in [base - 1, base, base + 1] {
            c.push((format!("tar[..{n}]"), tar[..n].to_vec()));
        }
    }
    c.push(("random 300000".into(), random_bytes(300_000, 1)));
    c.push(("zeros 1MiB".into(), vec![0; 1 << 20]));
    c.push(("generated tar".into(), tar.to_vec()));
    c.push(("/usr/bin/ls".into(), std::fs::read("/usr/bin/ls").unwrap()));
    c.push((
        "GPL-3".into(),
        std::fs::read("/usr/share/common-licenses/GPL-3").unwrap(),
    ));
    c
}

#[test]
fn python_zlib_and_gzip_all_levels() {
    for (name, data) in corpus() {
        let mut specs = Vec::new();
        for level in 1..=9 {
            specs.push(format!("raw:{level}:15:8:0"));
            specs.push(format!("gz:{level}"));
        }
        // GzipFile fed in odd-sized writes, and zlib's own gzip writer.
        specs.push("file:6:7000".to_string());
        specs.push("file:9:65537".to_string());
        specs.push("gz0:6".to_string());
        let outs = python(&specs, &data);
        for (spec, out) in specs.iter().zip(&outs) {
            let mut parts = spec.split(':');
            let kind = parts.next().unwrap();
            let level: u8 = parts.next().unwrap().parse().unwrap();
            let body = if kind == "raw" {
                &out[..]
            } else {
                gzip_parts(out).2
            };
            check(
                &format!("{name} python {spec}"),
                ZlibParams::single(level),
                &data,
                body,
            );
        }
    }
}

#[test]
fn python_strategies_windows_and_memory_levels() {
    let tar = generated_tar();
    let inputs: [(&str, &[u8]); 2] = [("tar[..400000]", &tar[..400_000]), ("zeros", &[0; 200_000])];
    for (name, data) in inputs {
        let mut cases = Vec::new();
        for level in [1u8, 6, 9] {
            for strategy in 1..=4u8 {
                cases.push((level, 15u8, 8u8, strategy));
            }
        }
        cases.extend([(6, 9, 1, 0), (9, 12, 9, 0), (1, 10, 3, 0), (4, 15, 9, 1)]);
        let specs: Vec<String> = cases
            .iter()
            .map(|(l, w, m, s)| format!("raw:{l}:{w}:{m}:{s}"))
            .collect();
        let outs = python(&specs, data);
        for (&(level, window_bits, mem_level, strategy), out) in cases.iter().zip(&outs) {
            let p = ZlibParams {
                level,
                window_bits,
                mem_level,
                strategy,
                framing: Framing::Single,
            };
            check(&format!("{name} python"), p, data, out);
        }
    }
}

#[test]
fn python_headers_rank_their_producer_first() {
    let data = &generated_tar()[..1000];
    let specs: Vec<String> = [1, 6, 9]
        .iter()
        .flat_map(|l| [format!("gz:{l}"), format!("gz0:{l}")])
        .collect();
    let outs = python(&specs, data);
    for (spec, out) in specs.iter().zip(&outs) {
        let level: u8 = spec.split(':').nth(1).unwrap().parse().unwrap();
        let (xfl, os, _) = gzip_parts(out);
        let c = candidates(xfl, os);
        let at = c
            .iter()
            .position(|p| *p == ZlibParams::single(level))
            .unwrap();
        // zlib's writer says OS 3 like pigz, so it may come second, after pigz.
        let want = if spec.starts_with("gz0") { 1 } else { 0 };
        assert!(
            at <= want,
            "{spec}: xfl {xfl} os {os}: zlib-{level} is candidate {at}"
        );
    }
}

/// A larger pigz input: many blocks of every kind of content.
fn pigz_input() -> Vec<u8> {
    let tar = generated_tar();
    let mut v = tar.to_vec();
    v.extend_from_slice(&random_bytes(150_000, 3));
    v.extend_from_slice(&tar[..500_000]);
    v
}

fn check_pigz(args: &[&str], p: ZlibParams, data: &[u8], what: &str) {
    let gz = pigz(args, data);
    let (_, _, body) = gzip_parts(&gz);
    check(&format!("{what} pigz {}", args.join(" ")), p, data, body);
}

#[test]
fn pigz_levels_and_threads() {
    let data = pigz_input();
    for level in 0..=9u8 {
        let l = format!("-{level}");
        check_pigz(&[&l, "-p", "2"], ZlibParams::pigz(level), &data, "input");
        let serial = ZlibParams::pigz(level).with_framing(Framing::PigzSerial {
            block: PIGZ_DEFAULT_BLOCK,
        });
        check_pigz(&[&l, "-p", "1"], serial, &data, "input");
        // One thread gives the threaded bytes from level 4 up, not below.
        let same = replay(serial, &data) == replay(ZlibParams::pigz(level), &data);
        assert_eq!(
            same,
            level >= 4,
            "level {level}: -p 1 and -p 2 agree: {same}"
        );
    }
}

#[test]
fn pigz_block_sizes_and_independent() {
    let data = pigz_input();
    for level in [1u8, 6, 9] {
        let l = format!("-{level}");
        for kib in [32u32, 512] {
            let b = kib.to_string();
            let block = kib * 1024;
            let p = ZlibParams::pigz(level).with_framing(Framing::Pigz { block });
            check_pigz(&[&l, "-b", &b, "-p", "2"], p, &data, "input");
            let p = p.with_framing(Framing::PigzSerial { block });
            check_pigz(&[&l, "-b", &b, "-p", "1"], p, &data, "input");
        }
        let p = ZlibParams::pigz(level).with_framing(Framing::PigzIndependent {
            block: PIGZ_DEFAULT_BLOCK,
        });
        check_pigz(&[&l, "-i", "-p", "2"], p, &data, "input");
        check_pigz(&[&l, "-i", "-p", "1"], p, &data, "input");
        let p = p.with_framing(Framing::PigzIndependent { block: 32 * 1024 });
        check_pigz(&[&l, "-i", "-b", "32", "-p", "2"], p, &data, "input");
    }
    let p = ZlibParams::pigz(0).with_framing(Framing::PigzIndependent {
        block: PIGZ_DEFAULT_BLOCK,
    });
    check_pigz(&["-0", "-i", "-p", "2"], p, &data, "input");
}

#[test]
fn pigz_edge_sizes() {
    let tar = generated_tar();
    let mut inputs: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("one byte".into(), vec![7]),
        ("zeros 1MiB".into(), vec![0; 1 << 20]),
        ("random 300000".into(), random_bytes(300_000, 5)),
    ];
    // Exactly one and two blocks: a full last block ends the stream itself.
    for n in [131_071, 131_072, 131_073, 262_144, 262_145] {
        inputs.push((format!("tar[..{n}]"), tar[..n].to_vec()));
    }
    for (name, data) in &inputs {
        for level in [1u8, 6, 9] {
            let l = format!("-{level}");
            check_pigz(&[&l, "-p", "2"], ZlibParams::pigz(level), data, name);
            let serial = ZlibParams::pigz(level).with_framing(Framing::PigzSerial {
                block: PIGZ_DEFAULT_BLOCK,
            });
            check_pigz(&[&l, "-p", "1"], serial, data, name);
        }
    }
}

#[test]
fn pigz_headers_rank_pigz_first() {
    for level in [1u8, 6, 9] {
        let gz = pigz(&[&format!("-{level}")], b"hello");
        let (xfl, os, _) = gzip_parts(&gz);
        assert_eq!(
            candidates(xfl, os)[0],
            ZlibParams::pigz(level),
            "pigz -{level}"
        );
    }
}

#[test]
fn candidates_cover_every_level_once() {
    for (xfl, os) in [(0, 3), (0, 255), (2, 255), (4, 3), (2, 3), (0, 0), (7, 11)] {
        let c = candidates(xfl, os);
        for level in 1..=9 {
            assert!(
                c.contains(&ZlibParams::single(level)),
                "{xfl}/{os} zlib-{level}"
            );
            assert!(
                c.contains(&ZlibParams::pigz(level)),
                "{xfl}/{os} pigz-{level}"
            );
        }
        for (i, p) in c.iter().enumerate() {
            assert!(!c[..i].contains(p), "{xfl}/{os}: {} twice", p.name());
            p.reencoder().unwrap();
        }
    }
    assert_eq!(candidates(0, 255)[0], ZlibParams::single(6));
    assert_eq!(candidates(2, 255)[0], ZlibParams::single(9));
    assert_eq!(candidates(4, 255)[0], ZlibParams::single(1));
    assert_eq!(candidates(0, 3)[0], ZlibParams::pigz(6));
    assert_eq!(candidates(0, 3)[1], ZlibParams::single(6));
}

#[test]
fn params_encode_decode_and_names() {
    let all = [
        ZlibParams::single(6),
        ZlibParams::pigz(9),
        ZlibParams::single(1).with_strategy(STRATEGY_RLE),
        ZlibParams::pigz(3).with_framing(Framing::PigzSerial { block: 32768 }),
        ZlibParams::pigz(6).with_framing(Framing::PigzIndependent { block: 1000 }),
        ZlibParams {
            level: 4,
            window_bits: 12,
            mem_level: 9,
            strategy: STRATEGY_FILTERED,
            framing: Framing::Single,
        },
    ];
    let names = [
        "zlib-6",
        "pigz-9-128k",
        "zlib-1-rle",
        "pigz-3-32k-p1",
        "pigz-6-1000b-i",
        "zlib-4-w12-m9-filtered",
    ];
    for (p, name) in all.iter().zip(names) {
        assert_eq!(p.name(), name);
        let mut b = vec![];
        p.encode(&mut b);
        let n = b.len();
        b.extend_from_slice(b"trailing");
        assert_eq!(ZlibParams::decode(&b).unwrap(), (*p, n));
        for cut in 0..n {
            assert!(matches!(
                ZlibParams::decode(&b[..cut]),
                Err(strata::error::Error::DataLoss(_))
            ));
        }
    }
    let mut b = vec![];
    ZlibParams::pigz(6).encode(&mut b);
    for (at, bad) in [(0, 9u8), (1, 10), (2, 8), (3, 0), (4, 5), (5, 4)] {
        let mut c = b.clone();
        c[at] = bad;
        assert!(
            matches!(
                ZlibParams::decode(&c),
                Err(strata::error::Error::DataLoss(_))
            ),
            "byte {at} = {bad} accepted"
        );
    }
    let mut c = b.clone();
    c[6..10].copy_from_slice(&0u32.to_le_bytes());
    assert!(ZlibParams::decode(&c).is_err(), "block 0 accepted");
    // Level 0 without pigz framing depends on the encoder's buffers: refused.
    assert!(ZlibParams::single(0).reencoder().is_err());
}

#[test]
fn reencoder_is_send_and_refuses_misuse() {
    fn send<T: Send>(_: &T) {}
    let mut r = ZlibParams::single(6).reencoder().unwrap();
    send(&r);
    let mut out = vec![];
    r.finish(&mut out).unwrap();
    assert_eq!(out, [3, 0]);
    assert!(r.feed(b"x", &mut out).is_err());
    assert!(r.finish(&mut out).is_err());
}

/// Plain data from runs, random bytes and copies of earlier stretches, so
/// that matches, literals and block ends of every kind occur.
fn plain_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0u8..3, 1usize..40_000, any::<u64>()), 0..24).prop_map(|segs| {
        let mut v: Vec<u8> = Vec::new();
        for (kind, len, seed) in segs {
            match kind {
                0 => v.extend(std::iter::repeat_n(seed as u8, len)),
                1 => v.extend_from_slice(&random_bytes(len / 4, seed)),
                _ if !v.is_empty() => {
                    let from = seed as usize % v.len();
                    let n = len.min(v.len() - from);
                    v.extend_from_within(from..from + n);
                }
                _ => {}
            }
        }
        v
    })
}

fn framing_strategy() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Single),
        Just(Framing::Pigz { block: 32768 }),
        Just(Framing::PigzSerial { block: 32768 }),
        Just(Framing::PigzIndependent { block: 32768 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_match_their_encoder(
        data in plain_strategy(),
        level in 1u8..=9,
        framing in framing_strategy(),
        seed in any::<u64>(),
    ) {
        let p = ZlibParams::single(level).with_framing(framing);
        let want = match framing {
            Framing::Single => python(&[format!("raw:{level}:15:8:0")], &data).remove(0),
            _ => {
                let l = format!("-{level}");
                let mut args = vec![l.as_str(), "-b", "32"];
                args.extend(match framing {
                    Framing::PigzSerial { .. } => &["-p", "1"][..],
                    Framing::PigzIndependent { .. } => &["-i", "-p", "2"][..],
                    _ => &["-p", "2"][..],
                });
                gzip_parts(&pigz(&args, &data)).2.to_vec()
            }
        };
        assert_same(&p.name(), &replay_split(p, &data, seed), &want);
        let mut plain = Vec::new();
        flate2::read::DeflateDecoder::new(&want[..]).read_to_end(&mut plain).unwrap();
        prop_assert_eq!(plain, data);
    }
}
