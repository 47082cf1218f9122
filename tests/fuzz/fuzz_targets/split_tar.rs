//! The tar-aware splitter: whatever the bytes and however they arrive, its
//! literal and chunk segments are the stream exactly, and the segments (chunk
//! boundaries are part of the on-disk format) do not depend on the pieces.
//!
//! Input: 1 byte chunk-size choice, 4 bytes piece seed, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::convert::Infallible;
use strata::split::{ChunkSizes, Cutter, Layout, Sink, Splitter};
use strata_fuzz::{pieces, Control};

const MAX_INPUT: usize = 256 << 10;

#[derive(Debug, PartialEq, Eq)]
enum Seg {
    Literal(Vec<u8>),
    Chunk(Vec<u8>),
}

#[derive(Default)]
struct Collect {
    segs: Vec<Seg>,
    max: usize,
}

impl Sink for Collect {
    type Error = Infallible;
    fn literal(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        // Literals may arrive in pieces (padding, PAX bodies): merge them.
        match self.segs.last_mut() {
            Some(Seg::Literal(l)) => l.extend_from_slice(bytes),
            _ if bytes.is_empty() => {}
            _ => self.segs.push(Seg::Literal(bytes.to_vec())),
        }
        Ok(())
    }
    fn chunk(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        assert!(!bytes.is_empty(), "an empty chunk");
        assert!(
            bytes.len() <= self.max,
            "a chunk of {} bytes, over the maximum {}",
            bytes.len(),
            self.max
        );
        self.segs.push(Seg::Chunk(bytes.to_vec()));
        Ok(())
    }
}

fn split(sizes: ChunkSizes, parts: &[&[u8]]) -> (Vec<Seg>, Layout, u64) {
    let mut s = Splitter::new(Cutter::new(sizes));
    let mut sink = Collect {
        segs: Vec::new(),
        max: sizes.max as usize,
    };
    for p in parts {
        s.feed(p, &mut sink).unwrap();
    }
    let layout = s.finish(&mut sink).unwrap();
    (sink.segs, layout, s.entries())
}

fuzz_target!(|input: &[u8]| {
    if input.len() > MAX_INPUT {
        return;
    }
    let mut c = Control::new(input);
    let choice = c.u8();
    let seed = c.u32();
    let data = c.rest();
    let sizes = match choice % 4 {
        0 => ChunkSizes { min: 64, avg: 256, max: 1024 },
        1 => ChunkSizes { min: 256, avg: 1024, max: 4096 },
        2 => ChunkSizes { min: 2048, avg: 8192, max: 32768 },
        _ => ChunkSizes::default(),
    };
    sizes.validate().unwrap();

    let parts = pieces(data, seed);
    let (segs, layout, entries) = split(sizes, &parts);

    // The segments are the stream, exactly.
    let mut joined = Vec::with_capacity(data.len());
    for s in &segs {
        match s {
            Seg::Literal(b) | Seg::Chunk(b) => joined.extend_from_slice(b),
        }
    }
    assert!(joined == data, "segments do not rebuild the stream ({} bytes vs {})", joined.len(), data.len());

    // Fed whole, the same segments, layout and entry count.
    if parts.len() > 1 {
        let (whole, layout2, entries2) = split(sizes, &[data]);
        assert_eq!(layout, layout2, "layout depends on how the stream was cut");
        assert_eq!(entries, entries2, "entry count depends on how the stream was cut");
        assert!(segs == whole, "segments depend on how the stream was cut");
    }
    if data.len() < 512 {
        assert_eq!(layout, Layout::Raw, "less than a block is not a tar");
    }
});
