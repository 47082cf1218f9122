//! Encoding speed of the port, level by level, on 8 MB of a generated
//! layer-like mix (a tar of text and random files): `cargo bench -p goflate`.
//! benches/reencode.rs at the repository root sets it against Go itself.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use goflate::Writer;

fn encode(c: &mut Criterion) {
    let data = go_oracle::tar_archive(8 << 20, 1);
    let mut g = c.benchmark_group("goflate");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for level in [1, 6, 9] {
        g.bench_with_input(BenchmarkId::new("level", level), &level, |b, &level| {
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
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
