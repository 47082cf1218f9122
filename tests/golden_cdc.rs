//! Chunk boundaries are part of the on-disk format: a new fastcdc version or a
//! changed constant would silently stop new pushes from deduplicating against
//! what is stored. These golden cut points must never change.

use strata::split::{ChunkSizes, Cutter, StreamChunker};

/// Deterministic bytes: a 64-bit LCG's high bytes, with runs of text mixed in so
/// both random and repetitive regions are covered.
fn corpus(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x5eed;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if (x >> 60) == 0 {
            out.extend_from_slice(b"the quick brown fox jumps over the lazy dog; ");
        } else {
            out.push((x >> 56) as u8);
        }
    }
    out.truncate(n);
    out
}

fn cut_lengths(data: &[u8], sizes: ChunkSizes, piece: usize) -> Vec<usize> {
    let mut c = StreamChunker::new(Cutter::new(sizes));
    let mut lens = Vec::new();
    for p in data.chunks(piece) {
        c.push::<()>(p, &mut |ch| {
            lens.push(ch.len());
            Ok(())
        })
        .unwrap();
    }
    c.finish::<()>(&mut |ch| {
        lens.push(ch.len());
        Ok(())
    })
    .unwrap();
    lens
}

const GOLDEN_DEFAULT: &[usize] = &[
    28627, 86138, 72890, 191960, 152046, 219788, 154544, 226918, 104239, 106730, 187651, 134466,
    105399, 121732, 118381, 85643,
];
const GOLDEN_SMALL: &[usize] = &[
    7236, 4531, 5256, 1746, 4198, 4534, 1126, 5340, 5007, 4451, 11195, 7761, 3155,
];

#[test]
fn default_sizes_cut_at_the_golden_points() {
    let data = corpus(2 << 20);
    let sizes = ChunkSizes::default();
    assert_eq!(sizes, ChunkSizes::parse("16K/64K/256K").unwrap());
    let lens = cut_lengths(&data, sizes, 1 << 20);
    assert_eq!(lens, GOLDEN_DEFAULT);
}

#[test]
fn small_sizes_cut_at_the_golden_points() {
    let data = corpus(64 << 10);
    let lens = cut_lengths(&data, ChunkSizes::parse("1K/4K/16K").unwrap(), 1000);
    assert_eq!(lens, GOLDEN_SMALL);
}

#[test]
fn boundaries_do_not_depend_on_how_the_stream_is_split() {
    let data = corpus(3 << 20);
    let whole = cut_lengths(&data, ChunkSizes::default(), data.len());
    for piece in [1usize << 10, 65_537, 300_000] {
        assert_eq!(
            cut_lengths(&data, ChunkSizes::default(), piece),
            whole,
            "piece {piece}"
        );
    }
    assert_eq!(whole.iter().sum::<usize>(), data.len());
}

#[test]
fn streaming_cuts_match_the_crates_own_v2020_iterator() {
    let data = corpus(3 << 20);
    let ours = cut_lengths(&data, ChunkSizes::default(), 70_000);
    let theirs: Vec<usize> = fastcdc::v2020::FastCDC::new(&data, 16 << 10, 64 << 10, 256 << 10)
        .map(|c| c.length)
        .collect();
    assert_eq!(ours, theirs);
}
