//! Local write throughput: fieldsync against the raw baseline (automerge documents
//! saved whole and written to sled by hand, same durability), in the same run.
//!
//! `cargo bench --bench local`. Figures and the command are in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fieldsync::bench::{self, baseline::Baseline};
use fieldsync::{Config, Replica};

const BATCH: usize = 100;

fn writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("write");
    g.sample_size(20).measurement_time(Duration::from_secs(6));

    // Single durable inserts.
    g.throughput(Throughput::Elements(1));
    let r = bench::open(&dir.path().join("fs1"), true).expect("open");
    let mut next = 0usize;
    g.bench_function(BenchmarkId::new("insert_1", "fieldsync"), |b| {
        b.iter(|| {
            bench::insert_batched(&r, next..next + 1, 1).expect("insert");
            next += 1;
        })
    });
    let mut base = Baseline::open(&dir.path().join("base1")).expect("open");
    let mut next = 0usize;
    g.bench_function(BenchmarkId::new("insert_1", "baseline"), |b| {
        b.iter(|| {
            base.insert_batched(next..next + 1, 1).expect("insert");
            next += 1;
        })
    });

    // Batched inserts: BATCH records per durable transaction. fieldsync caches
    // every document here, as the baseline keeps them all (the "hot" updates
    // below compare like with like).
    g.throughput(Throughput::Elements(BATCH as u64));
    let r = Replica::open(
        dir.path().join("fsb"),
        Config::default().with_cache_docs(1 << 20),
    )
    .expect("open");
    r.define_collection(bench::collection().expect("valid"))
        .expect("collection");
    let mut next = 0usize;
    g.bench_function(BenchmarkId::new("insert_batch_100", "fieldsync"), |b| {
        b.iter(|| {
            bench::insert_batched(&r, next..next + BATCH, BATCH).expect("insert");
            next += BATCH;
        })
    });
    let inserted = next;
    let mut base = Baseline::open(&dir.path().join("baseb")).expect("open");
    let mut next = 0usize;
    g.bench_function(BenchmarkId::new("insert_batch_100", "baseline"), |b| {
        b.iter(|| {
            base.insert_batched(next..next + BATCH, BATCH)
                .expect("insert");
            next += BATCH;
        })
    });
    let base_inserted = next;

    // Batched updates of 2 fields over the records inserted above, documents
    // loaded on both sides ("hot").
    let span = inserted.min(base_inserted) / BATCH * BATCH;
    let mut round = 0usize;
    g.bench_function(BenchmarkId::new("update_batch_100_hot", "fieldsync"), |b| {
        b.iter(|| {
            let start = (round * BATCH) % span.max(BATCH);
            bench::update_batched(&r, start..start + BATCH, BATCH, round).expect("update");
            round += 1;
        })
    });
    let mut round = 0usize;
    g.bench_function(BenchmarkId::new("update_batch_100_hot", "baseline"), |b| {
        b.iter(|| {
            let start = (round * BATCH) % span.max(BATCH);
            base.update_batched(start..start + BATCH, BATCH, round)
                .expect("update");
            round += 1;
        })
    });

    // The same updates loading each document from disk ("cold"): fieldsync
    // reopened with its default cache of 1024 documents (fewer than the records
    // it cycles through); the baseline forgets its documents before each batch.
    drop(r);
    let r = Replica::open(dir.path().join("fsb"), Config::default()).expect("reopen");
    let mut round = 0usize;
    g.bench_function(
        BenchmarkId::new("update_batch_100_cold", "fieldsync"),
        |b| {
            b.iter(|| {
                let start = (round * BATCH) % span.max(BATCH);
                bench::update_batched(&r, start..start + BATCH, BATCH, round).expect("update");
                round += 1;
            })
        },
    );
    let mut round = 0usize;
    g.bench_function(BenchmarkId::new("update_batch_100_cold", "baseline"), |b| {
        b.iter(|| {
            let start = (round * BATCH) % span.max(BATCH);
            base.forget();
            base.update_batched(start..start + BATCH, BATCH, round)
                .expect("update");
            round += 1;
        })
    });
    g.finish();
    black_box(());
}

criterion_group!(benches, writes);
criterion_main!(benches);
