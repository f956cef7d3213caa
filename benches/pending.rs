//! Pending events: a device's sync of 10k offline updates with an authority,
//! with events and acknowledgements against the same sync with events off
//! (`Config::with_pending_events(false)`), in the same run (see
//! `docs/benchmarks.md`; `fieldsync bench pending` prints the same
//! comparison, plus local writes, as JSON).
//!
//! `cargo bench --bench pending`.

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use fieldsync::bench::pending::{fresh, prepare, sync};

const N: usize = 10_000;

fn pending(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync_10k_offline_updates");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let p = prepare(N).expect("prepare");
    for (name, on) in [("with_events", true), ("events_off", false)] {
        g.bench_function(BenchmarkId::new("sync", name), |b| {
            b.iter_batched(
                || fresh(&p, on).expect("fresh"),
                |(a, d)| {
                    let left = sync(&a, &d).expect("sync");
                    if on {
                        assert_eq!(left, 0, "every event confirmed");
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, pending);
criterion_main!(benches);
