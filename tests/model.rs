//! A model test: random inserts, updates, counter edits, deletes, transactions and
//! reopens, checked after every step against a `BTreeMap` model (as sled's own
//! tree tests do). Runs on the memory store and on real sled files.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use fieldsync::store::MemoryStore;
use fieldsync::{Config, Error, Fields, Replica, Scan, Value, fields};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, i64),
    /// Set qty (or remove it with `None`).
    Update(u8, Option<i64>),
    Increment(u8, i64),
    Delete(u8),
    /// A transaction of inserts; `poison` makes its last insert invalid.
    Batch(Vec<(u8, i64)>, bool),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..8;
    prop_oneof![
        3 => (id.clone(), any::<i64>()).prop_map(|(i, q)| Op::Insert(i, q)),
        3 => (id.clone(), proptest::option::of(-50i64..50)).prop_map(|(i, q)| Op::Update(i, q)),
        2 => (id.clone(), -5i64..5).prop_map(|(i, d)| Op::Increment(i, d)),
        1 => id.clone().prop_map(Op::Delete),
        1 => (proptest::collection::vec((id, any::<i64>()), 1..4), any::<bool>()).prop_map(|(v, p)| Op::Batch(v, p)),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    fields: Fields,
    deleted: bool,
}

fn key(i: u8) -> String {
    format!("k{i}")
}

/// Records with an incompressible 2,500-letter text, so their snapshots pass
/// 1 KiB and writes append to the change log (smaller documents are re-saved
/// whole; odd ids stay small to cover that path too).
fn insert_fields(i: u8, qty: i64) -> Fields {
    let mut f = fields([
        ("name", Value::String(format!("n{i}"))),
        ("qty", Value::Int(qty)),
        ("visits", Value::Counter(0)),
    ]);
    if i.is_multiple_of(2) {
        let mut x = u32::from(i) + 1;
        let text: String = (0..2500)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                char::from(b'a' + ((x >> 16) % 26) as u8)
            })
            .collect();
        f.insert("notes".into(), Value::Text(text));
    }
    f
}

/// Apply `op` to the model; `Err(())` where the replica must refuse it.
fn model_apply(m: &mut BTreeMap<String, Rec>, op: &Op) -> Result<(), ()> {
    match op {
        Op::Insert(i, q) => {
            if m.contains_key(&key(*i)) {
                return Err(());
            }
            m.insert(
                key(*i),
                Rec {
                    fields: insert_fields(*i, *q),
                    deleted: false,
                },
            );
        }
        Op::Update(i, q) => {
            let r = m.get_mut(&key(*i)).filter(|r| !r.deleted).ok_or(())?;
            match q {
                Some(q) => r.fields.insert("qty".into(), Value::Int(*q)),
                None => r.fields.remove("qty"),
            };
        }
        Op::Increment(i, d) => {
            let r = m.get_mut(&key(*i)).filter(|r| !r.deleted).ok_or(())?;
            let Some(Value::Counter(c)) = r.fields.get_mut("visits") else {
                return Err(());
            };
            *c += d;
        }
        Op::Delete(i) => {
            m.get_mut(&key(*i)).ok_or(())?.deleted = true;
        }
        Op::Batch(items, poison) => {
            let mut next = m.clone();
            for (i, q) in items {
                if next.contains_key(&key(*i)) {
                    return Err(());
                }
                next.insert(
                    key(*i),
                    Rec {
                        fields: insert_fields(*i, *q),
                        deleted: false,
                    },
                );
            }
            if *poison {
                return Err(());
            }
            *m = next;
        }
        Op::Reopen => {}
    }
    Ok(())
}

fn replica_apply(r: &Replica, op: &Op) -> Result<(), Error> {
    match op {
        Op::Insert(i, q) => r.insert("thing", &key(*i), insert_fields(*i, *q)).map(drop),
        Op::Update(i, q) => r
            .update(
                "thing",
                &key(*i),
                fields([("qty", q.map_or(Value::Null, Value::Int))]),
            )
            .map(drop),
        Op::Increment(i, d) => r
            .update_with("thing", &key(*i), |e| e.increment("visits", *d))
            .map(drop),
        Op::Delete(i) => r.delete("thing", &key(*i)).map(drop),
        Op::Batch(items, poison) => r.transaction(|tx| {
            for (i, q) in items {
                tx.insert("thing", &key(*i), insert_fields(*i, *q))?;
            }
            if *poison {
                tx.insert(
                    "thing",
                    "poisoned",
                    fields([("qty", Value::from("not an int"))]),
                )?;
            }
            Ok(())
        }),
        Op::Reopen => Ok(()),
    }
}

fn state(r: &Replica) -> BTreeMap<String, Rec> {
    r.scan(&Scan::new("thing").with_deleted())
        .unwrap()
        .into_iter()
        .map(|x| {
            (
                x.id,
                Rec {
                    fields: x.fields,
                    deleted: x.meta.deleted,
                },
            )
        })
        .collect()
}

fn config() -> Config {
    // Small cache and threshold so eviction, reload and compaction all happen.
    Config::default()
        .with_schema(common::schema())
        .with_cache_docs(2)
        .with_compact_after(3)
}

fn run(ops: &[Op], mut open: impl FnMut() -> Replica) -> Result<(), TestCaseError> {
    let mut model = BTreeMap::new();
    let mut r = open();
    for (step, op) in ops.iter().enumerate() {
        if let Op::Reopen = op {
            drop(r);
            r = open();
        }
        let expected = model_apply(&mut model, op);
        let got = replica_apply(&r, op);
        prop_assert_eq!(
            expected.is_ok(),
            got.is_ok(),
            "step {} {:?}: {:?}",
            step,
            op,
            got
        );
        prop_assert_eq!(&state(&r), &model, "step {} {:?}", step, op);
    }
    drop(r);
    let r = open();
    prop_assert_eq!(&state(&r), &model, "after the final reopen");
    prop_assert!(
        r.verify("thing").unwrap().is_empty(),
        "every document loads and matches its row"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let store = MemoryStore::new();
        run(&ops, || Replica::with_storage(Arc::new(store.clone()), config()).unwrap())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sled_store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        run(&ops, || Replica::open(dir.path(), config()).unwrap())?;
    }
}
