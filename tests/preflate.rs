//! preflate splitter and rebuilder: every stream either rebuilds to exactly
//! its bytes, with plain bytes equal to an inflater's, or is refused with an
//! error (never a panic, never other bytes). Stored corrections are not
//! self-checking: corrupting them is only required not to panic.

mod common;

use flate2::{Decompress, FlushDecompress, Status};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::codec::preflate::{Piece, PreflateRebuilder, PreflateSplitter, MAX_PIECE_PLAIN};

/// Plain bytes with the mix a layer has: text-like runs, random bytes (as in
/// compressed files) and zeros.
fn layer_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let words: Vec<String> = (0..512)
        .map(|_| {
            let n = rng.random_range(2..10);
            (0..n)
                .map(|_| rng.random_range(b'a'..=b'z') as char)
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match rng.random_range(0..10) {
            0 => {
                let n = rng.random_range(1..64 << 10);
                out.extend((0..n).map(|_| rng.random::<u8>()));
            }
            1 => {
                let n = rng.random_range(1..32 << 10);
                out.resize(out.len() + n, 0);
            }
            _ => {
                for _ in 0..rng.random_range(100..4000) {
                    out.extend_from_slice(words[rng.random_range(0..words.len())].as_bytes());
                    out.push(if rng.random_range(0..12) == 0 {
                        b'\n'
                    } else {
                        b' '
                    });
                }
            }
        }
    }
    out.truncate(len);
    out
}

fn gnu_gzip(plain: &[u8], level: u32) -> Vec<u8> {
    common::filter("gzip", &["-n", "-c", &format!("-{level}")], plain)
}

/// Raw deflate from Python's zlib (the system zlib).
fn python_zlib(plain: &[u8], level: u32) -> Vec<u8> {
    let script = format!(
        "import sys, zlib\n\
         c = zlib.compressobj({level}, zlib.DEFLATED, -15)\n\
         d = sys.stdin.buffer.read()\n\
         sys.stdout.buffer.write(c.compress(d) + c.flush())\n"
    );
    common::filter("python3", &["-c", &script], plain)
}

/// Raw deflate from miniz_oxide (flate2's default backend).
fn miniz(plain: &[u8], level: u32) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(plain, level as u8)
}

/// Where a gzip member's deflate body starts.
fn gzip_body_start(gz: &[u8]) -> usize {
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    let flags = gz[3];
    let mut p = 10;
    if flags & 4 != 0 {
        p += 2 + u16::from_le_bytes([gz[p], gz[p + 1]]) as usize;
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            p += gz[p..].iter().position(|&b| b == 0).unwrap() + 1;
        }
    }
    if flags & 2 != 0 {
        p += 2;
    }
    p
}

/// flate2's inflate of a raw deflate stream, and the stream's length.
fn inflate(deflate: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(deflate.len() * 4 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.len() + 1024);
        }
        let before = (d.total_in(), d.total_out());
        let input = &deflate[d.total_in() as usize..];
        match d.decompress_vec(input, &mut out, FlushDecompress::None) {
            Ok(Status::StreamEnd) => return Some((out, d.total_in() as usize)),
            Ok(_) if (d.total_in(), d.total_out()) == before && out.len() < out.capacity() => {
                return None
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

struct Split {
    pieces: Vec<Piece>,
    rest: Vec<u8>,
}

/// Feeds `comp` in parts of the given sizes (cycled); the pieces and the
/// bytes past the stream's end.
fn split(comp: &[u8], sizes: &[usize]) -> strata::error::Result<Split> {
    let mut s = PreflateSplitter::new();
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < comp.len() {
        let n = sizes[i % sizes.len()].max(1).min(comp.len() - at);
        pieces.extend(s.feed(&comp[at..at + n])?);
        at += n;
        i += 1;
    }
    let rest = s.finish_with(&mut |p| {
        pieces.push(p);
        Ok(())
    })?;
    Ok(Split { pieces, rest })
}

fn rebuild(pieces: &[Piece]) -> strata::error::Result<Vec<u8>> {
    let mut r = PreflateRebuilder::new();
    let mut out = Vec::new();
    for p in pieces {
        let before = out.len();
        r.piece(&p.plain, &p.corrections, &mut out)?;
        assert_eq!((out.len() - before) as u64, p.comp_len, "piece length");
    }
    Ok(out)
}

/// `deflate` (a whole raw stream, maybe followed by `tail`) must split and
/// rebuild exactly; returns the pieces.
fn roundtrip(deflate: &[u8], tail: &[u8], sizes: &[usize]) -> Vec<Piece> {
    let mut input = deflate.to_vec();
    input.extend_from_slice(tail);
    let s = split(&input, sizes).expect("split");
    assert_eq!(s.rest, tail, "bytes past the end");
    let comp: u64 = s.pieces.iter().map(|p| p.comp_len).sum();
    assert_eq!(comp, deflate.len() as u64);
    for p in &s.pieces {
        assert!(p.plain.len() <= MAX_PIECE_PLAIN);
    }
    let plain: Vec<u8> = s.pieces.iter().flat_map(|p| p.plain.clone()).collect();
    let (want, used) = inflate(deflate).expect("inflate");
    assert_eq!(used, deflate.len());
    assert!(plain == want, "plain bytes differ from inflate's");
    let rebuilt = rebuild(&s.pieces).expect("rebuild");
    assert!(rebuilt == deflate, "rebuilt bytes differ");
    s.pieces
}

/// A gzip file: fed from the body on, with the trailer past the end.
fn roundtrip_gzip(gz: &[u8], sizes: &[usize]) -> Vec<Piece> {
    let body = &gz[gzip_body_start(gz)..];
    let (deflate, trailer) = body.split_at(body.len() - 8);
    roundtrip(deflate, trailer, sizes)
}

#[test]
fn gnu_gzip_levels() {
    let plain = layer_like(3 << 20, 1);
    for level in [1, 6, 9] {
        let gz = gnu_gzip(&plain, level);
        roundtrip_gzip(&gz, &[64 << 10]);
    }
}

#[test]
fn python_zlib_levels() {
    let plain = layer_like(2 << 20, 2);
    for level in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] {
        roundtrip(&python_zlib(&plain, level), &[], &[100_000]);
    }
}

#[test]
fn miniz_levels() {
    let plain = layer_like(1 << 20, 3);
    for level in [0, 1, 6, 9] {
        roundtrip(&miniz(&plain, level), &[], &[1 << 20]);
    }
}

#[test]
fn stored_blocks() {
    // Random bytes do not compress: every block is stored, even at level 6.
    let mut rng = StdRng::seed_from_u64(4);
    let plain: Vec<u8> = (0..300_000).map(|_| rng.random()).collect();
    roundtrip(&python_zlib(&plain, 0), &[], &[7_000]);
    roundtrip(&python_zlib(&plain, 6), &[], &[7_000]);
    roundtrip_gzip(&gnu_gzip(&plain, 6), &[7_000]);
}

#[test]
fn empty_and_tiny_streams() {
    for plain in [&b""[..], b"a", b"ab", b"hello, hello, hello, hello"] {
        roundtrip_gzip(&gnu_gzip(plain, 6), &[1]);
        roundtrip_gzip(&gnu_gzip(plain, 6), &[1 << 20]);
        for level in [0, 1, 9] {
            roundtrip(&python_zlib(plain, level), &[], &[1]);
            roundtrip(&miniz(plain, level), &[], &[3]);
        }
    }
    // The smallest stream there is: one final static block holding only its end.
    roundtrip(&[0x03, 0x00], &[], &[1]);
    roundtrip(&[0x03, 0x00], b"trailer!", &[1]);
}

#[test]
fn many_pieces_in_random_feeds() {
    // Over 4 MiB compressed: the stream is cut into several pieces.
    let plain = layer_like(20 << 20, 5);
    let gz = gnu_gzip(&plain, 6);
    let mut rng = StdRng::seed_from_u64(6);
    let sizes: Vec<usize> = (0..1000).map(|_| rng.random_range(1..300_000)).collect();
    let pieces = roundtrip_gzip(&gz, &sizes);
    assert!(pieces.len() > 2, "{} pieces", pieces.len());
    // Cuts depend only on the stream, not on how it was fed.
    let body = &gz[gzip_body_start(&gz)..];
    let whole = split(body, &[body.len()]).unwrap();
    assert!(whole.pieces == pieces, "pieces depend on feeding");
}

#[test]
fn long_runs_of_zeros_stay_within_piece_limit() {
    // GNU gzip's blocks of 258-byte matches hold 8.4 MB each; a MiB of such
    // compressed input is gigabytes of plain bytes.
    let plain = vec![0u8; 48 << 20];
    let gz = gnu_gzip(&plain, 6);
    let body = &gz[gzip_body_start(&gz)..];
    let mut s = PreflateSplitter::new();
    // (plain length, corrections): the plain bytes are all zeros.
    let mut kept: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut take = |p: Piece| {
        assert!(p.plain.len() <= MAX_PIECE_PLAIN);
        assert!(p.plain.iter().all(|&b| b == 0));
        kept.push((p.plain.len(), p.corrections));
        Ok(())
    };
    for part in body.chunks(4096) {
        s.feed_with(part, &mut take).unwrap();
    }
    let rest = s.finish_with(&mut take).unwrap();
    assert_eq!(rest.len(), 8);
    assert_eq!(kept.iter().map(|k| k.0).sum::<usize>(), plain.len());
    assert!(kept.len() >= 4, "{} pieces", kept.len());
    let mut r = PreflateRebuilder::new();
    let mut out = Vec::new();
    for (len, corrections) in &kept {
        r.piece(&plain[..*len], corrections, &mut out).unwrap();
    }
    assert!(out == body[..body.len() - 8]);
}

#[test]
fn truncated_streams_are_refused() {
    let plain = layer_like(1 << 20, 7);
    let gz = gnu_gzip(&plain, 6);
    let body = &gz[gzip_body_start(&gz)..gz.len() - 8];
    let mut rng = StdRng::seed_from_u64(8);
    let mut cuts: Vec<usize> = (0..12).map(|_| rng.random_range(0..body.len())).collect();
    cuts.extend([0, 1, body.len() - 1]);
    for cut in cuts {
        assert!(
            split(&body[..cut], &[50_000]).is_err(),
            "cut at {cut} accepted"
        );
    }
    assert!(PreflateSplitter::new().finish().is_err(), "nothing fed");
}

#[test]
fn corrupt_streams_are_refused_or_exact() {
    let plain = layer_like(256 << 10, 9);
    let deflate = python_zlib(&plain, 6);
    let mut rng = StdRng::seed_from_u64(10);
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..40 {
        let mut bad = deflate.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bad.len());
            bad[at] ^= 1 << rng.random_range(0..8);
        }
        match split(&bad, &[30_000]) {
            Err(_) => refused += 1,
            Ok(s) => {
                // Whatever it took must be a valid stream that rebuilds exactly.
                accepted += 1;
                let len = s.pieces.iter().map(|p| p.comp_len).sum::<u64>() as usize;
                let (want, used) = inflate(&bad).expect("accepted, but inflate refuses");
                assert_eq!(used, len);
                let plain: Vec<u8> = s.pieces.iter().flat_map(|p| p.plain.clone()).collect();
                assert!(plain == want);
                assert!(rebuild(&s.pieces).unwrap() == bad[..len]);
            }
        }
    }
    assert!(refused > 0, "{refused} refused, {accepted} accepted");
    // Garbage from the first byte on.
    let junk: Vec<u8> = (0..100_000).map(|_| rng.random()).collect();
    assert!(split(&junk, &[4096]).is_err());
}

#[test]
fn errors_stick() {
    let mut s = PreflateSplitter::new();
    // Block type 3 does not exist.
    let r = s.feed(&[0x07; 8 << 20]);
    let r = r.and_then(|_| s.feed(b"more"));
    assert!(r.is_err());
    assert!(s.feed(b"more").is_err());
    assert!(s.finish().is_err());
}

#[test]
fn failure_reason_survives_until_finish() {
    // The worker fails on its own time; `finish` still reports why.
    let mut s = PreflateSplitter::new();
    let _ = s.feed(&[0x07; 5 << 20]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let e = s.finish().unwrap_err().to_string();
    assert!(e.contains("InvalidDeflate"), "{e}");
}

#[test]
fn corrupt_corrections_do_not_panic() {
    // Corrections carry no checksum of their own: a flipped bit may rebuild to
    // other bytes (the store's checksums have to catch that), but it must not
    // bring the process down.
    let plain = layer_like(512 << 10, 11);
    let deflate = python_zlib(&plain, 6);
    let s = split(&deflate, &[1 << 20]).unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    let (mut refused, mut other, mut same) = (0, 0, 0);
    for _ in 0..20 {
        let mut pieces = s.pieces.clone();
        let c = &mut pieces[0].corrections;
        let at = rng.random_range(0..c.len());
        c[at] ^= 1 << rng.random_range(0..8);
        let mut r = PreflateRebuilder::new();
        let mut out = Vec::new();
        let ok = pieces
            .iter()
            .try_for_each(|p| r.piece(&p.plain, &p.corrections, &mut out));
        match ok {
            Err(_) => refused += 1,
            Ok(()) if out == deflate => same += 1,
            Ok(()) => other += 1,
        }
    }
    eprintln!("corrupt corrections: {refused} refused, {other} other bytes, {same} same bytes");
    let mut r = PreflateRebuilder::new();
    let mut out = Vec::new();
    assert!(r.piece(&plain, b"not corrections", &mut out).is_err());
    // An error sticks.
    assert!(r.piece(&plain, &s.pieces[0].corrections, &mut out).is_err());
}

#[test]
fn incomplete_huffman_codes_are_refused_not_mangled() {
    // miniz_oxide (flate2's default backend) may send a tree with a single
    // distance code, which deflate allows and preflate-rs 0.7.6 refuses:
    // such streams must come back as an error, never as other bytes.
    let mut refused = 0;
    for seed in 0..200u64 {
        let plain = layer_like(48, seed);
        let deflate = miniz(&plain, 1);
        match split(&deflate, &[deflate.len()]) {
            Err(_) => refused += 1,
            Ok(s) => assert!(rebuild(&s.pieces).unwrap() == deflate),
        }
    }
    assert!(refused > 0, "no incomplete code among the samples");
}

#[test]
fn both_sides_are_send() {
    fn send<T: Send>() {}
    send::<PreflateSplitter>();
    send::<PreflateRebuilder>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// zlib output of any size, fed in any parts, rebuilds exactly.
    #[test]
    fn any_feeding_roundtrips(
        seed in any::<u64>(),
        len in 0usize..200_000,
        level in 0u32..10,
        sizes in prop::collection::vec(1usize..20_000, 1..8),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let plain = layer_like(len, seed);
        roundtrip(&python_zlib(&plain, level), &tail, &sizes);
    }

    /// Any encoder: refused, or rebuilt exactly.
    #[test]
    fn miniz_refused_or_exact(
        seed in any::<u64>(),
        len in 0usize..100_000,
        level in 0u32..10,
        sizes in prop::collection::vec(1usize..20_000, 1..8),
    ) {
        let plain = layer_like(len, seed);
        let deflate = miniz(&plain, level);
        if let Ok(s) = split(&deflate, &sizes) {
            prop_assert!(s.rest.is_empty());
            let got: Vec<u8> = s.pieces.iter().flat_map(|p| p.plain.clone()).collect();
            prop_assert!(got == plain);
            prop_assert!(rebuild(&s.pieces).unwrap() == deflate);
        }
    }
}
