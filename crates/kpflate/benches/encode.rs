//! Encoding speed of the port on 8 MB of a generated layer-like mix (a tar
//! of text and random files): one flate stream level by level, and pgzip's
//! 1 MiB blocks on one thread. `cargo bench -p kpflate`;
//! benches/reencode.rs at the repository root sets it against Go itself.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpflate::deflate::Writer;
use kpflate::pgzip::{PgzipEncoder, PgzipParams};

fn encode(c: &mut Criterion) {
    let data = go_oracle::tar_archive(8 << 20, 1);
    let mut g = c.benchmark_group("kpflate");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for level in [1, 5, 9] {
        g.bench_with_input(BenchmarkId::new("flate", level), &level, |b, &level| {
            let mut w = Writer::new(level).unwrap();
            let mut out = Vec::with_capacity(data.len());
            b.iter(|| {
                w.reset();
                out.clear();
                w.write(&data, &mut out);
                w.close(&mut out);
                out.len()
            });
        });
    }
    g.bench_function("pgzip-5 1MiB blocks", |b| {
        let mut out = Vec::with_capacity(data.len());
        b.iter(|| {
            let params = PgzipParams {
                level: 5,
                block_size: 1 << 20,
            };
            let mut e = PgzipEncoder::new(params).unwrap();
            out.clear();
            e.feed(&data, &mut out);
            e.finish(&mut out);
            out.len()
        });
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
