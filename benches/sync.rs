//! Sync: fieldsync's reconciliation against automerge's own per-document sync
//! protocol run over every document, in the same run (see `docs/benchmarks.md`;
//! `fieldsync bench sync` runs the large cases and also reports bytes and round
//! trips).
//!
//! `cargo bench --bench sync`.

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use fieldsync::bench::sync::{change_some, copy_of, filled, naive, replica};
use fieldsync::sim::sync_pair;
use fieldsync::store::MemoryStore;

const NOW: u64 = 1_800_000_000_000;
const N: usize = 10_000;

fn sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync");
    g.sample_size(10).measurement_time(Duration::from_secs(10));

    // (a) Equal stores of N records.
    let store = filled(N).expect("fill");
    let (a, b) = (
        replica(store.clone()).expect("open"),
        replica(copy_of(&store).expect("copy")).expect("open"),
    );
    assert!(sync_pair(&a, &b, NOW, None).expect("sync").synced);
    g.bench_function(BenchmarkId::new("unchanged_10k", "fieldsync"), |bn| {
        bn.iter(|| sync_pair(&a, &b, NOW, None).expect("sync"))
    });
    g.bench_function(BenchmarkId::new("unchanged_10k", "baseline"), |bn| {
        bn.iter(|| naive(&a, &b, N).expect("naive"))
    });

    // (b) 100 records changed on one side of equal stores of N records.
    let pair = || {
        let (sa, sb) = (
            copy_of(&store).expect("copy"),
            copy_of(&store).expect("copy"),
        );
        let (a, b) = (replica(sa).expect("open"), replica(sb).expect("open"));
        change_some(&a, N, 100).expect("change");
        (a, b)
    };
    g.bench_function(BenchmarkId::new("changed_100_of_10k", "fieldsync"), |bn| {
        bn.iter_batched(
            || {
                let (a, b) = pair();
                // The index is built once per process in real use.
                a.with_sync_index(|_| ()).expect("index");
                b.with_sync_index(|_| ()).expect("index");
                (a, b)
            },
            |(a, b)| sync_pair(&a, &b, NOW, None).expect("sync"),
            BatchSize::PerIteration,
        )
    });
    g.bench_function(BenchmarkId::new("changed_100_of_10k", "baseline"), |bn| {
        bn.iter_batched(
            pair,
            |(a, b)| naive(&a, &b, N).expect("naive"),
            BatchSize::PerIteration,
        )
    });

    // (c) Initial sync of 2,000 records into an empty replica.
    let small = filled(2_000).expect("fill");
    let source = replica(small).expect("open");
    source.with_sync_index(|_| ()).expect("index");
    g.bench_function(BenchmarkId::new("initial_2k", "fieldsync"), |bn| {
        bn.iter_batched(
            || replica(MemoryStore::new()).expect("open"),
            |empty| sync_pair(&source, &empty, NOW, None).expect("sync"),
            BatchSize::PerIteration,
        )
    });
    g.bench_function(BenchmarkId::new("initial_2k", "baseline"), |bn| {
        bn.iter_batched(
            || replica(MemoryStore::new()).expect("open"),
            |empty| naive(&source, &empty, 2_000).expect("naive"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
