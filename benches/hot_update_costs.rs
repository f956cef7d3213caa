//! Where the time of a hot batched update goes: the same 20,000 updates of
//! 2 fields (100 per durable transaction, every document cached) with each
//! fieldsync feature switched off in turn, against the raw automerge + sled
//! baseline measured in the same round; then automerge alone, a commit with
//! and without a change message the size of fieldsync's mark.
//!
//! `cargo bench --bench hot_update_costs` (figures in docs/benchmarks.md).

use std::time::Instant;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ROOT, ScalarValue};
use fieldsync::{Config, Replica, bench};

const N: usize = 20_000;
const ROUNDS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let variants: [(&str, Config); 5] = [
        ("everything on", Config::default()),
        (
            "pending events off",
            Config::default().with_pending_events(false),
        ),
        (
            "conflict detection off",
            Config::default().with_conflicts(false),
        ),
        ("signing off", Config::default().with_signed_changes(false)),
        (
            "all three off",
            Config::default()
                .with_pending_events(false)
                .with_conflicts(false)
                .with_signed_changes(false),
        ),
    ];
    println!("µs per record (ratio to the baseline of the same round)");
    for round in 0..ROUNDS {
        let d = dir.path().join(format!("base{round}"));
        let mut b = bench::baseline::Baseline::open(&d)?;
        b.insert_batched(0..N, 100)?;
        let t = Instant::now();
        b.update_batched(0..N, 100, 1)?;
        let base = t.elapsed().as_secs_f64();
        print!("round {round}: baseline {:.1}", base * 1e6 / N as f64);
        for (i, (name, config)) in variants.iter().enumerate() {
            let d = dir.path().join(format!("fs{round}-{i}"));
            let r = Replica::open(&d, config.clone().with_cache_docs(N))?;
            r.define_collection(bench::collection()?)?;
            bench::insert_batched(&r, 0..N, 100)?;
            let t = Instant::now();
            bench::update_batched(&r, 0..N, 100, 1)?;
            let e = t.elapsed().as_secs_f64();
            print!(" | {name} {:.1} ({:.2}×)", e * 1e6 / N as f64, e / base);
        }
        println!();
    }
    // automerge alone: 2 puts and a commit, with and without an 83-byte
    // message (fieldsync's change mark is about that long).
    let actor = ActorId::from(&[7u8; 32][..]);
    let message = format!("fs1{}", "x".repeat(80));
    for round in 0..ROUNDS {
        for with_message in [false, true] {
            let mut docs: Vec<Automerge> = (0..N)
                .map(|i| {
                    let mut d = Automerge::new().with_actor(actor.clone());
                    let mut tx = d.transaction();
                    let _ = tx.put(ROOT, "qty", ScalarValue::Int(i as i64));
                    let _ = tx.put(ROOT, "site", ScalarValue::Str("a".into()));
                    tx.commit();
                    d
                })
                .collect();
            let (mut puts, mut commits) = (0f64, 0f64);
            for (i, d) in docs.iter_mut().enumerate() {
                let t = Instant::now();
                let mut tx = d.transaction();
                tx.put(ROOT, "qty", ScalarValue::Int(i as i64 + 1))?;
                tx.put(ROOT, "site", ScalarValue::Str("b".into()))?;
                puts += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let o = CommitOptions::default().with_time(1_800_000_000_000);
                let o = if with_message {
                    o.with_message(message.clone())
                } else {
                    o
                };
                tx.commit_with(o);
                commits += t.elapsed().as_secs_f64();
            }
            println!(
                "round {round}: automerge alone, message {with_message}: 2 puts {:.2}, commit {:.2}",
                puts * 1e6 / N as f64,
                commits * 1e6 / N as f64
            );
        }
    }
    Ok(())
}
