//! Conflict detection: a merge of 10k records, 10% of them edited on both
//! sides, with detection against the same merge with detection off
//! (`Config::with_conflicts(false)`), in the same run (see
//! `docs/benchmarks.md`; `fieldsync bench conflicts` prints the same
//! comparison as JSON).
//!
//! `cargo bench --bench conflicts`.

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use fieldsync::bench::conflicts::{fresh, merge, prepare};

const N: usize = 10_000;
const CONCURRENT: usize = N / 10;

fn conflicts(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge_10k_10pct_concurrent");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let p = prepare(N, CONCURRENT).expect("prepare");
    for (name, detect) in [("with_detection", true), ("merge_alone", false)] {
        g.bench_function(BenchmarkId::new("sync", name), |b| {
            b.iter_batched(
                || fresh(&p, detect).expect("fresh"),
                |(a, d)| {
                    let entries = merge(&a, &d).expect("merge");
                    assert_eq!(entries, if detect { CONCURRENT } else { 0 });
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, conflicts);
criterion_main!(benches);
