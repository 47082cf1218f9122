//! Throughput of the ingest stages on one core: tar-aware splitting with CDC,
//! BLAKE3 naming of chunks, block compression and decoding. The corpus script
//! (benches/corpus.sh) measures the whole daemon against its peers.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata::split::{ChunkSizes, Cutter, Sink, Splitter};
use strata::store::pack::{decode_block, encode_block, BlockBuilder};

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tar of files with half random, half text bodies: roughly a layer's mix.
fn layer(total: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut i = 0u64;
    let mut size = 0;
    while size < total {
        let n = 1000 + (i as usize * 7919) % 300_000;
        let body = if i.is_multiple_of(2) {
            noise(n, i)
        } else {
            b"line of text in a config file\n".repeat(n / 30)
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("usr/share/f{i}"), &body[..])
            .unwrap();
        size += body.len() + 512;
        i += 1;
    }
    b.into_inner().unwrap()
}

struct Count(u64);
impl Sink for Count {
    type Error = ();
    fn literal(&mut self, b: &[u8]) -> Result<(), ()> {
        self.0 += b.len() as u64;
        Ok(())
    }
    fn chunk(&mut self, b: &[u8]) -> Result<(), ()> {
        self.0 += blake3::hash(b).as_bytes()[0] as u64;
        Ok(())
    }
}

fn split(c: &mut Criterion) {
    let data = layer(32 << 20);
    let mut g = c.benchmark_group("split");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for cs in ["16K/64K/256K", "32K/128K/512K"] {
        g.bench_with_input(BenchmarkId::new("tar+cdc+blake3", cs), &cs, |b, cs| {
            let cutter = Cutter::new(ChunkSizes::parse(cs).unwrap());
            b.iter(|| {
                let mut s = Splitter::new(cutter.clone());
                let mut sink = Count(0);
                for piece in data.chunks(1 << 20) {
                    s.feed(piece, &mut sink).unwrap();
                }
                s.finish(&mut sink).unwrap();
                sink.0
            })
        });
    }
    g.bench_function("sha256", |b| b.iter(|| strata::Digest::of(&data)));
    g.finish();
}

fn blocks(c: &mut Criterion) {
    let data = layer(1 << 20);
    let mut block = BlockBuilder::default();
    for piece in data.chunks(64 << 10) {
        block.push(*blake3::hash(piece).as_bytes(), piece);
    }
    let mut comp = zstd::bulk::Compressor::new(3).unwrap();
    let rec = encode_block(&block, &mut comp).unwrap();
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Bytes(block.plain.len() as u64));
    g.bench_function("encode zstd3", |b| {
        b.iter(|| encode_block(&block, &mut comp).unwrap().len())
    });
    g.bench_function("decode+verify", |b| {
        b.iter(|| decode_block(&rec, &|| "bench".into()).unwrap().plain.len())
    });
    g.finish();
}

criterion_group!(benches, split, blocks);
criterion_main!(benches);
