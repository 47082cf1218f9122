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
