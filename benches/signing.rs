//! Signed changes: an initial sync of 10k records into an empty replica, every
//! change's signature sent, verified (in batches) and stored, against the same
//! sync with signing off (`Config::with_signed_changes(false)`), in the same
//! run (see `docs/benchmarks.md`; `fieldsync bench signing` prints the same
//! comparison at 100k records, plus writes, as JSON).
//!
//! `cargo bench --bench signing`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fieldsync::bench::signing::{fill, initial};

const N: usize = 10_000;

fn signing(c: &mut Criterion) {
    let mut g = c.benchmark_group("initial_sync_10k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, on) in [("signed", true), ("unsigned", false)] {
        let (source, _) = fill(N, on).expect("fill");
        g.bench_function(BenchmarkId::new("sync", name), |b| {
            b.iter(|| {
                let (_, received) = initial(&source, on).expect("sync");
                assert_eq!(received, N);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
