//! Signed changes: an initial sync of 10k records into an empty replica, every
//! change's seal sent, verified (in batches) and stored, against the same
//! sync with signing off (`Config::with_signed_changes(false)`), in the same
//! run, for records written 1,000 per transaction (4 seals per 1,000 changes)
//! and one per transaction (a seal per change) (see `docs/benchmarks.md`;
//! `fieldsync bench signing` prints the same comparison at 100k records, plus
//! writes, as JSON).
//!
//! `cargo bench --bench signing` (`-- primitives` for the curve arithmetic
//! alone: sign, verify, and batch verification per signature).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fieldsync::bench::signing::{fill, initial};

const N: usize = 10_000;

fn signing(c: &mut Criterion) {
    let mut g = c.benchmark_group("initial_sync_10k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, per_tx, on) in [
        ("signed_1000_per_tx", 1000, true),
        ("unsigned_1000_per_tx", 1000, false),
        ("signed_1_per_tx", 1, true),
        ("unsigned_1_per_tx", 1, false),
    ] {
        let (source, _) = fill(N, per_tx, on).expect("fill");
        g.bench_function(BenchmarkId::new("sync", name), |b| {
            b.iter(|| {
                let (_, received) = initial(&source, on).expect("sync");
                assert_eq!(received, N);
            })
        });
    }
    g.finish();
}

/// The curve arithmetic alone, with ed25519-dalek as `fieldsync::sign` uses
/// it (the same message: `SEAL_DOMAIN || seal id`): one signature, one
/// verification, and batch verification per signature at the batch sizes a
/// sync message gives.
fn primitives(c: &mut Criterion) {
    use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = key.verifying_key();
    let message = |i: usize| {
        let mut m = fieldsync::sign::SEAL_DOMAIN.to_vec();
        m.extend_from_slice(&[(i % 251) as u8; 32]);
        m
    };
    let mut g = c.benchmark_group("primitives");
    let m = message(0);
    let sig = key.sign(&m);
    g.bench_function("sign", |b| b.iter(|| key.sign(&m)));
    g.bench_function("verify", |b| {
        b.iter(|| public.verify(&m, &sig).expect("valid"))
    });
    for n in [16usize, 90, 256] {
        let msgs: Vec<Vec<u8>> = (0..n).map(message).collect();
        let sigs: Vec<_> = msgs.iter().map(|m| key.sign(m)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let keys = vec![public; n];
        g.throughput(criterion::Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("verify_batch", n), |b| {
            b.iter(|| ed25519_dalek::verify_batch(&refs, &sigs, &keys).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, signing, primitives);
criterion_main!(benches);
