//! The costs behind fieldsync's storage layout and compaction policy
//! (docs/architecture.md): for a small 8-field record, is saving the whole
//! automerge document cheaper than extracting the new change, how much slower is
//! loading a snapshot plus appended changes than one snapshot, what does creating
//! the document cost; and does sled charge per key or per byte?
//!
//! `cargo bench --bench costs`; figures in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ScalarValue};
use criterion::{Criterion, criterion_group, criterion_main};

fn small_record() -> Automerge {
    let mut d = Automerge::new();
    let mut tx = d.transaction();
    for (k, v) in [
        ("name", ScalarValue::Str("item 1".into())),
        ("code", ScalarValue::Str("C-000001".into())),
        ("qty", ScalarValue::Int(3)),
        ("price", ScalarValue::F64(1.5)),
        ("active", ScalarValue::Boolean(true)),
        ("due", ScalarValue::Timestamp(1_790_000_000_000)),
        ("visits", ScalarValue::counter(0)),
        ("site", ScalarValue::Str("site-1".into())),
    ] {
        tx.put(ROOT, k, v).expect("put");
    }
    tx.commit();
    d
}

fn with_update(mut d: Automerge) -> Automerge {
    let mut tx = d.transaction();
    tx.put(ROOT, "qty", 4).expect("put");
    tx.put(ROOT, "site", "site-2").expect("put");
    tx.commit();
    d
}

fn costs(c: &mut Criterion) {
    let mut g = c.benchmark_group("automerge_small_record");
    g.measurement_time(Duration::from_secs(4));

    let updated = with_update(small_record());
    let before = small_record().get_heads();
    g.bench_function("save_whole_document", |b| {
        b.iter(|| black_box(updated.save()))
    });
    g.bench_function("extract_last_change", |b| {
        b.iter(|| black_box(updated.get_last_local_change().map(|mut c| c.bytes().len())))
    });
    g.bench_function("save_after_heads", |b| {
        b.iter(|| black_box(updated.save_after(&before)))
    });

    let snapshot_only = updated.save();
    let mut snapshot_plus_change = small_record().save();
    snapshot_plus_change.extend_from_slice(&updated.save_after(&before));
    g.bench_function("load_snapshot", |b| {
        b.iter(|| black_box(Automerge::load(&snapshot_only).map(|d| d.get_heads())))
    });
    g.bench_function("load_snapshot_plus_one_change", |b| {
        b.iter(|| black_box(Automerge::load(&snapshot_plus_change).map(|d| d.get_heads())))
    });
    g.bench_function("drop_loaded_document", |b| {
        b.iter_batched(
            || Automerge::load(&snapshot_only).expect("load"),
            drop,
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("create_8_field_document", |b| {
        b.iter(|| black_box(small_record().get_heads()))
    });
    g.finish();
}

/// 100 records written to sled in one batch and flushed, as one key per record
/// or as two (the layout fieldsync had before rows carried their change log).
fn sled_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("sled_batch_of_100_records");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, keys_per_record, bytes) in [
        ("1_key_218_bytes", 1, 218),
        ("1_key_370_bytes", 1, 370),
        ("2_keys_150_bytes", 2, 150),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(64 << 20)
            .mode(sled::Mode::HighThroughput)
            .open()
            .expect("open sled");
        let mut next = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut batch = sled::Batch::default();
                for i in next..next + 100 {
                    for k in 0..keys_per_record {
                        batch.insert(format!("{k}:item\0rec{i:08}").as_bytes(), vec![7u8; bytes]);
                    }
                }
                next += 100;
                db.apply_batch(batch).expect("batch");
                db.flush().expect("flush");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, costs, sled_keys);
criterion_main!(benches);
