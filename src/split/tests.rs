use super::*;

/// Records segments; literal runs are merged so piece boundaries do not show.
#[derive(Default, PartialEq, Debug)]
struct Rec {
    segs: Vec<(bool, Vec<u8>)>,
}

impl Sink for Rec {
    type Error = ();
    fn literal(&mut self, b: &[u8]) -> Result<(), ()> {
        if b.is_empty() {
            return Ok(());
        }
        match self.segs.last_mut() {
            Some((false, v)) => v.extend_from_slice(b),
            _ => self.segs.push((false, b.to_vec())),
        }
        Ok(())
    }
    fn chunk(&mut self, b: &[u8]) -> Result<(), ()> {
        assert!(!b.is_empty());
        self.segs.push((true, b.to_vec()));
        Ok(())
    }
}

fn split(data: &[u8], piece: usize) -> (Rec, Layout) {
    let mut s = Splitter::new(Cutter::new(ChunkSizes {
        min: 256,
        avg: 1024,
        max: 4096,
    }));
    let mut r = Rec::default();
    for p in data.chunks(piece.max(1)) {
        s.feed(p, &mut r).unwrap();
    }
    let layout = s.finish(&mut r).unwrap();
    (r, layout)
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tar_of(files: &[(&str, Vec<u8>)], mtime: u64) -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut h = ::tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mtime(mtime);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &body[..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn segments_rebuild_the_stream_for_any_piece_size() {
    let data = tar_of(
        &[("a", noise(10_000, 1)), ("b", vec![]), ("c", noise(513, 2))],
        7,
    );
    let (whole, layout) = split(&data, data.len());
    assert_eq!(layout, Layout::Tar);
    let joined: Vec<u8> = whole.segs.iter().flat_map(|(_, v)| v.clone()).collect();
    assert_eq!(joined, data);
    for piece in [1, 7, 511, 512, 513, 4096] {
        assert_eq!(split(&data, piece).0, whole, "piece size {piece}");
    }
}

#[test]
fn file_bodies_are_chunked_and_headers_are_literal() {
    let body = noise(20_000, 3);
    let (r, _) = split(&tar_of(&[("f", body.clone())], 1), 1000);
    let chunked: Vec<u8> = r
        .segs
        .iter()
        .filter(|s| s.0)
        .flat_map(|(_, v)| v.clone())
        .collect();
    // Only the body and the end-of-archive zeros are chunked.
    assert_eq!(&chunked[..body.len()], &body[..]);
    assert!(chunked[body.len()..].iter().all(|&b| b == 0));
    assert!(!r.segs[0].0);
    assert_eq!(r.segs[0].1.len(), 512);
}

#[test]
fn same_body_gives_same_chunks_whatever_the_headers() {
    let body = noise(50_000, 4);
    let chunks = |mtime| {
        let (r, _) = split(
            &tar_of(&[("x", noise(777, 9)), ("f", body.clone())], mtime),
            333,
        );
        r.segs
            .into_iter()
            .filter(|s| s.0)
            .map(|s| s.1)
            .collect::<Vec<_>>()
    };
    let (a, b) = (chunks(1), chunks(2_000_000));
    assert_eq!(a, b);
}

#[test]
fn not_a_tar_is_raw_and_a_broken_tar_turns_raw() {
    let junk = noise(9000, 5);
    let (r, layout) = split(&junk, 100);
    assert_eq!(layout, Layout::Raw);
    assert!(r.segs.iter().all(|s| s.0));
    let mut data = tar_of(&[("a", noise(600, 6))], 1);
    data.truncate(1536); // header, body, padding
    data.extend_from_slice(&junk);
    let (r, layout) = split(&data, 64);
    assert_eq!(layout, Layout::TarThenRaw);
    let joined: Vec<u8> = r.segs.iter().flat_map(|(_, v)| v.clone()).collect();
    assert_eq!(joined, data);
}

#[test]
fn pax_size_record_sets_the_body_length() {
    // A PAX header whose size record (1000) overrides the ustar size field (0).
    let records = b"13 size=1000\n";
    let mut b = ::tar::Builder::new(Vec::new());
    let mut h = ::tar::Header::new_ustar();
    h.set_entry_type(::tar::EntryType::XHeader);
    h.set_size(records.len() as u64);
    h.set_cksum();
    b.append(&h, &records[..]).unwrap();
    let mut data = b.into_inner().unwrap();
    data.truncate(1024); // drop the end-of-archive blocks the builder added
    let mut h = ::tar::Header::new_ustar();
    h.set_size(0);
    h.set_path("big").unwrap();
    h.set_cksum();
    data.extend_from_slice(h.as_bytes());
    let body = noise(1000, 8);
    data.extend_from_slice(&body);
    data.extend_from_slice(&[0u8; 24 + 1024]);
    let (r, layout) = split(&data, 100);
    assert_eq!(layout, Layout::Tar);
    let first_chunk = r.segs.iter().find(|s| s.0).unwrap();
    assert_eq!(&first_chunk.1[..], &body[..first_chunk.1.len()]);
}

/// FastCDC's cuts of a whole stream, as (offset, length).
fn cuts(c: &Cutter, data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < data.len() {
        let n = c.first_cut(&data[p..]);
        out.push((p, n));
        p += n;
    }
    out
}

/// Streams with random stretches, long runs (cut at max) and short tails.
fn stream(seed: u64, n: usize) -> Vec<u8> {
    let mut v = noise(n, seed);
    let runs = noise(8, seed ^ 77);
    for (i, &r) in runs.iter().enumerate() {
        if r % 3 == 0 {
            let at = (i * n / 8).min(n);
            let end = (at + (r as usize) * 40).min(n);
            v[at..end].fill(r);
        }
    }
    v
}

/// `confirms` must agree with FastCDC itself whenever its premise holds: the
/// chunk's bytes were cut at that length in some stream. Checked for every
/// chunk of random streams, followed by every kind of different tail.
#[test]
fn confirms_agrees_with_fastcdc_after_any_tail() {
    for sizes in [
        ChunkSizes {
            min: 256,
            avg: 1024,
            max: 4096,
        },
        ChunkSizes {
            min: 333,
            avg: 1000,
            max: 3001,
        },
        ChunkSizes {
            min: 64,
            avg: 256,
            max: 1024,
        },
    ] {
        let c = Cutter::new(sizes);
        let max = sizes.max as usize;
        let mut agreed_true = 0;
        for seed in 1..40u64 {
            let a = stream(seed, 3 * max + (seed as usize * 97) % max);
            // Premises: chunks of the stream, and first chunks of the stream
            // cut off just before, at and after each of its cuts.
            let mut premises = Vec::new();
            for (p, len) in cuts(&c, &a) {
                for k in [len - 1, len, len + 1, len + 2] {
                    if k >= 1 && p + k <= a.len() {
                        premises.push((p, c.first_cut(&a[p..p + k])));
                    }
                }
            }
            for (p, len) in premises {
                let chunk = &a[p..p + len];
                let mut tails: Vec<Vec<u8>> = vec![a[p + len..].to_vec(), Vec::new()];
                for t in 0..12u64 {
                    let n = (noise(1, seed * 1000 + t + p as u64)[0] as usize * 13) % (2 * max);
                    tails.push(stream(seed * 7919 + t, n));
                }
                if let Some(&b0) = a.get(p + len) {
                    let mut t = a[p + len..].to_vec();
                    t[0] = b0.wrapping_add(1);
                    tails.push(t);
                }
                tails.push(vec![0; 1]);
                tails.push(vec![chunk[0]; max]);
                for tail in tails {
                    let mut b = chunk.to_vec();
                    b.extend_from_slice(&tail);
                    let real = c.first_cut(&b);
                    let got = c.confirms(&b, len, b.len().min(max));
                    assert_eq!(
                        got,
                        real == len,
                        "sizes {sizes}, seed {seed}, chunk at {p} of {len}, tail {}",
                        tail.len()
                    );
                    agreed_true += got as usize;
                }
            }
        }
        assert!(
            agreed_true > 100,
            "the premise held only {agreed_true} times"
        );
        // Short streams (cut whole, below `min`) followed by more bytes: the
        // positions below `min` must stay unchecked. Many tries, since a
        // spurious hit there is a one-in-`avg` event.
        for t in 0..20_000u64 {
            let k = 1 + (t as usize * 7) % (sizes.min as usize + 8);
            let mut b = noise(k + 1 + (t as usize % 3) * max, t + 5);
            let len = c.first_cut(&b[..k]);
            let tail = noise(b.len() - len, t ^ 0xabc);
            b[len..].copy_from_slice(&tail);
            let real = c.first_cut(&b);
            assert_eq!(
                c.confirms(&b, len, b.len().min(max)),
                real == len,
                "sizes {sizes}, short stream {k}, try {t}"
            );
        }
    }
}

/// Records segments like `Rec`, offers hints from an earlier split of some
/// stream by offset, and counts the chunks taken from them.
struct Hinted {
    rec: Rec,
    offset: u64,
    hints: std::collections::HashMap<u64, (Hash, u32)>,
    taken: usize,
}

impl Sink for Hinted {
    type Error = ();
    fn literal(&mut self, b: &[u8]) -> Result<(), ()> {
        self.offset += b.len() as u64;
        self.rec.literal(b)
    }
    fn chunk(&mut self, b: &[u8]) -> Result<(), ()> {
        self.offset += b.len() as u64;
        self.rec.chunk(b)
    }
    fn expected_chunk(&mut self) -> Option<(Hash, u32)> {
        self.hints.get(&self.offset).copied()
    }
    fn known_chunk(&mut self, b: &[u8], h: &Hash) -> Result<(), ()> {
        assert_eq!(blake3::hash(b).as_bytes(), h);
        self.taken += 1;
        self.chunk(b)
    }
}

fn split_hinted(data: &[u8], hints_from: &Rec, piece: usize) -> (Rec, usize) {
    let mut hints = std::collections::HashMap::new();
    let mut off = 0u64;
    for (is_chunk, v) in &hints_from.segs {
        if *is_chunk {
            hints.insert(off, (*blake3::hash(v).as_bytes(), v.len() as u32));
        }
        off += v.len() as u64;
    }
    let mut s = Splitter::new(Cutter::new(ChunkSizes {
        min: 256,
        avg: 1024,
        max: 4096,
    }));
    let mut h = Hinted {
        rec: Rec::default(),
        offset: 0,
        hints,
        taken: 0,
    };
    for p in data.chunks(piece) {
        s.feed(p, &mut h).unwrap();
    }
    s.finish(&mut h).unwrap();
    (h.rec, h.taken)
}

#[test]
fn hints_from_a_stored_recipe_never_change_the_chunks() {
    let files: Vec<(String, Vec<u8>)> = (0..12u64)
        .map(|i| {
            (
                format!("f{i}"),
                stream(i + 100, 300 + (i as usize * 3001) % 20_000),
            )
        })
        .collect();
    let tar = |files: &[(String, Vec<u8>)]| {
        let v: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        tar_of(&v, 5)
    };
    let original = tar(&files);
    let (first, _) = split(&original, original.len());
    // The same stream again: every chunk comes from the hints.
    let chunks = first.segs.iter().filter(|s| s.0).count();
    for piece in [1, 500, 4096, 100_000] {
        let (again, taken) = split_hinted(&original, &first, piece);
        assert_eq!(again, first, "piece {piece}");
        assert_eq!(taken, chunks, "piece {piece}");
    }
    // Changed bodies (a byte flipped mid-file, a file cut short, one grown by a
    // byte, a stream cut off): the chunks are those of a split without hints.
    let mut variants = Vec::new();
    let mut f = files.clone();
    let at = 5000 % f[3].1.len();
    f[3].1[at] ^= 1;
    variants.push(tar(&f));
    let mut f = files.clone();
    let n = f[7].1.len();
    f[7].1.truncate(n - 1);
    variants.push(tar(&f));
    let mut f = files.clone();
    f[2].1.push(9);
    variants.push(tar(&f));
    variants.push(original[..original.len() / 2 + 77].to_vec());
    let mut raw = noise(30_000, 42);
    raw[1000] = 0;
    variants.push(raw);
    for (i, v) in variants.iter().enumerate() {
        let (plain, _) = split(v, v.len());
        for piece in [1, 777, 100_000] {
            let (hinted, _) = split_hinted(v, &first, piece);
            assert_eq!(hinted, plain, "variant {i}, piece {piece}");
        }
    }
    // Raw data hinted by an earlier split of its own prefix.
    let long = noise(60_000, 43);
    let (prefix, _) = split(&long[..40_000], 40_000);
    let (hinted, taken) = split_hinted(&long, &prefix, 3000);
    assert_eq!(hinted, split(&long, long.len()).0);
    assert!(taken > 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// `confirms` against FastCDC for any valid chunk sizes (the masks
    /// differ with `avg`, the parity edges with `min` and `max`).
    #[test]
    fn confirms_agrees_with_fastcdc_for_any_sizes(
        min in 64u32..3000,
        avg_extra in 0u32..6000,
        max_extra in 0u32..20000,
        seed in 1u64..u64::MAX,
    ) {
        let avg = (min + avg_extra).max(256);
        let max = (avg + max_extra).max(1024);
        let sizes = ChunkSizes { min, avg, max };
        proptest::prop_assume!(sizes.validate().is_ok());
        let c = Cutter::new(sizes);
        let max = max as usize;
        let a = stream(seed, 3 * max);
        for (p, len) in cuts(&c, &a) {
            for k in [len - 1, len, len + 1] {
                if k == 0 || p + k > a.len() {
                    continue;
                }
                let l = c.first_cut(&a[p..p + k]);
                for tail in [a[p + l..].to_vec(), noise(max, seed ^ p as u64), vec![]] {
                    let mut b = a[p..p + l].to_vec();
                    b.extend_from_slice(&tail);
                    let real = c.first_cut(&b);
                    proptest::prop_assert_eq!(c.confirms(&b, l, b.len().min(max)), real == l);
                }
            }
        }
    }
}
