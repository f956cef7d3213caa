//! Records: every field type round-trips through a real sled store, closure
//! edits, tombstones, scans, watch, metadata, compaction and the document cache.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fieldsync::automerge::{Automerge, ReadDoc};
use fieldsync::{
    ChangeKind, Config, Error, HlcTime, Replica, Scan, Value, WatchError, WatchFilter, fields,
};

#[test]
fn every_field_type_round_trips_through_a_reopened_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let r = common::open(dir.path());
        r.insert("thing", "t1", common::full_thing()).unwrap()
    };
    let r = common::open(dir.path());
    let rec = r.get("thing", "t1").unwrap().unwrap();
    assert_eq!(rec.fields, common::full_thing());
    assert_eq!(rec.meta.heads, written.heads);
    assert_eq!(rec.meta.author, *r.actor());
    assert!(!rec.meta.deleted);
    // The automerge document itself holds the typed values (not just our row).
    let doc = Automerge::load(&r.export("thing", "t1").unwrap()).unwrap();
    let (v, _) = doc
        .get(fieldsync::automerge::ROOT, "visits")
        .unwrap()
        .unwrap();
    assert!(matches!(
        v.as_scalar(),
        Some(fieldsync::automerge::ScalarValue::Counter(_))
    ));
    let (v, notes) = doc
        .get(fieldsync::automerge::ROOT, "notes")
        .unwrap()
        .unwrap();
    assert!(matches!(
        v,
        fieldsync::automerge::Value::Object(fieldsync::automerge::ObjType::Text)
    ));
    assert_eq!(doc.text(&notes).unwrap(), "héllo wörld ✓");
}

#[test]
fn each_write_is_one_change_by_this_actor_carrying_an_hlc_time() {
    let now = Arc::new(AtomicU64::new(1_790_000_000_000));
    let clock = now.clone();
    let r = Replica::in_memory(
        Config::default()
            .with_schema(common::schema())
            .with_clock(move || clock.load(Ordering::SeqCst)),
    )
    .unwrap();
    let a = r
        .insert("person", "p", fields([("name", Value::from("A"))]))
        .unwrap();
    now.store(1_789_999_999_000, Ordering::SeqCst); // the wall clock jumps back
    let b = r
        .update(
            "person",
            "p",
            fields([("name", Value::from("B")), ("status", Value::from("x"))]),
        )
        .unwrap();
    assert!(
        b.time > a.time,
        "HLC never goes back: {} then {}",
        a.time,
        b.time
    );
    assert_eq!(a.time, HlcTime::from_parts(1_790_000_000_000, 0));
    let doc = Automerge::load(&r.export("person", "p").unwrap()).unwrap();
    let changes = doc.get_changes(&[]);
    assert_eq!(changes.len(), 2, "one change per write, even with 2 fields");
    assert!(changes.iter().all(|c| c.actor_id() == r.actor()));
    assert_eq!(changes[1].timestamp() as u64, b.time.as_u64());
    let rec = r.get("person", "p").unwrap().unwrap();
    assert_eq!(rec.meta.modified, b.time);
}

#[test]
fn the_hlc_survives_a_restart_with_a_clock_that_went_back() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let r = Replica::open(
            dir.path(),
            Config::default()
                .with_schema(common::schema())
                .with_clock(|| 2_000_000_000_000),
        )
        .unwrap();
        r.insert("person", "p", fields([("name", Value::from("A"))]))
            .unwrap()
            .time
    };
    let r = Replica::open(dir.path(), Config::default().with_clock(|| 1_000)).unwrap();
    let second = r
        .update("person", "p", fields([("name", Value::from("B"))]))
        .unwrap()
        .time;
    assert!(second > first);
}

#[test]
fn closure_edits_merge_counters_text_and_lists() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    r.insert("thing", "t", common::full_thing()).unwrap();
    r.update_with("thing", "t", |e| {
        e.increment("visits", 5)?;
        e.increment("visits", -2)?;
        e.splice_text("notes", 0, 1, "H")?;
        e.list_push("tags", "c")?;
        e.list_insert("tags", 0, "z")?;
        e.list_delete("tags", 1)?;
        e.set("qty", 3)?;
        assert_eq!(e.get("qty")?, Some(Value::Int(3)));
        Ok(())
    })
    .unwrap();
    let f = r.get("thing", "t").unwrap().unwrap().fields;
    assert_eq!(f["visits"], Value::Counter(10));
    assert_eq!(f["notes"], Value::Text("Héllo wörld ✓".into()));
    assert_eq!(
        f["tags"],
        Value::List(vec!["z".into(), "b".into(), "c".into()])
    );
    assert_eq!(f["qty"], Value::Int(3));
    // Edits on unset fields start from empty.
    r.insert("thing", "u", fields([("name", Value::from("u"))]))
        .unwrap();
    r.update_with("thing", "u", |e| {
        e.increment("visits", 2)?;
        e.splice_text("notes", 0, 0, "new")?;
        e.list_push("scores", 9)
    })
    .unwrap();
    let f = r.get("thing", "u").unwrap().unwrap().fields;
    assert_eq!(f["visits"], Value::Counter(2));
    assert_eq!(f["notes"], Value::Text("new".into()));
    assert_eq!(f["scores"], Value::List(vec![Value::Int(9)]));
}

type EditFn = dyn Fn(&mut fieldsync::Edit<'_, '_>) -> fieldsync::Result<()>;

#[test]
fn a_failing_closure_edit_leaves_the_record_unchanged() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    r.insert("thing", "t", common::full_thing()).unwrap();
    let before = r.get("thing", "t").unwrap().unwrap();
    let cases: Vec<(&str, Box<EditFn>)> = vec![
        (
            "past end",
            Box::new(|e| {
                e.increment("visits", 1)?;
                e.splice_text("notes", 999, 0, "x")
            }),
        ),
        (
            "counter on text",
            Box::new(|e| {
                e.set("qty", 1)?;
                e.increment("notes", 1)
            }),
        ),
        (
            "wrong element",
            Box::new(|e| e.list_push("scores", "not an int")),
        ),
        ("delete past end", Box::new(|e| e.list_delete("tags", 5))),
        ("unknown", Box::new(|e| e.increment("nope", 1))),
    ];
    for (name, f) in cases {
        assert!(r.update_with("thing", "t", f).is_err(), "{name}");
        assert_eq!(r.get("thing", "t").unwrap().unwrap(), before, "{name}");
    }
    // And the document is still writable afterwards.
    r.update_with("thing", "t", |e| e.increment("visits", 1))
        .unwrap();
    assert_eq!(
        r.get("thing", "t").unwrap().unwrap().fields["visits"],
        Value::Counter(8)
    );
}

#[test]
fn patches_replace_text_and_lists_and_null_removes_optional_fields() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    r.insert("thing", "t", common::full_thing()).unwrap();
    r.update(
        "thing",
        "t",
        fields([
            ("notes", Value::from("rewritten")),
            ("tags", Value::List(vec!["only".into()])),
            ("qty", Value::Null),
        ]),
    )
    .unwrap();
    let f = r.get("thing", "t").unwrap().unwrap().fields;
    assert_eq!(f["notes"], Value::Text("rewritten".into()));
    assert_eq!(f["tags"], Value::List(vec!["only".into()]));
    assert!(!f.contains_key("qty"));
    let doc = Automerge::load(&r.export("thing", "t").unwrap()).unwrap();
    assert!(
        doc.get(fieldsync::automerge::ROOT, "qty")
            .unwrap()
            .is_none()
    );
}

#[test]
fn delete_is_a_replicating_tombstone_not_a_removal() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    r.insert("person", "p", fields([("name", Value::from("A"))]))
        .unwrap();
    let w = r.delete("person", "p").unwrap();
    let rec = r.get("person", "p").unwrap().unwrap();
    assert!(rec.meta.deleted);
    assert_eq!(rec.fields["name"], Value::from("A"), "data stays readable");
    assert_eq!(rec.meta.heads, w.heads);
    // The tombstone is an automerge change (it will replicate).
    let doc = Automerge::load(&r.export("person", "p").unwrap()).unwrap();
    assert_eq!(doc.get_changes(&[]).len(), 2);
    assert!(r.list("person").unwrap().is_empty());
    assert_eq!(
        r.scan(&Scan::new("person").with_deleted()).unwrap().len(),
        1
    );
    assert!(matches!(
        r.update("person", "p", fieldsync::Fields::new()),
        Err(Error::Deleted { .. })
    ));
    assert!(matches!(
        r.insert("person", "p", fields([("name", Value::from("B"))])),
        Err(Error::AlreadyExists { .. })
    ));
    // Deleting again changes nothing.
    assert_eq!(r.delete("person", "p").unwrap().heads, w.heads);
    assert!(matches!(
        r.delete("person", "nobody"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        r.update("person", "nobody", fieldsync::Fields::new()),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn scans_filter_by_equality_and_range_in_id_order() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    for i in 0..20 {
        r.insert(
            "thing",
            &format!("t{i:02}"),
            fields([
                ("name", Value::from(if i % 2 == 0 { "even" } else { "odd" })),
                ("qty", Value::Int(i)),
                ("price", Value::Float(i as f64 / 2.0)),
            ]),
        )
        .unwrap();
    }
    r.insert("thing", "none", fields([("name", Value::from("even"))]))
        .unwrap();
    let ids = |s: &Scan| {
        r.scan(s)
            .unwrap()
            .into_iter()
            .map(|x| x.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&Scan::new("thing").with_eq("name", "odd")).len(), 10);
    assert_eq!(
        ids(&Scan::new("thing").with_range("qty", Some(Value::Int(5)), Some(Value::Int(8)))),
        ["t05", "t06", "t07", "t08"]
    );
    assert_eq!(
        ids(&Scan::new("thing").with_eq("name", "even").with_range(
            "price",
            Some(Value::Float(8.0)),
            None
        )),
        ["t16", "t18"]
    );
    assert_eq!(
        ids(&Scan::new("thing").with_bounds(
            "qty",
            std::ops::Bound::Excluded(Value::Int(17)),
            std::ops::Bound::Unbounded
        )),
        ["t18", "t19"]
    );
    assert_eq!(
        ids(&Scan::new("thing").with_offset(19).with_limit(5)),
        ["t18", "t19"]
    );
    assert_eq!(ids(&Scan::new("thing").with_limit(2)), ["none", "t00"]);
    assert!(ids(&Scan::new("thing").with_limit(0)).is_empty());
    // Filters are checked against the schema.
    assert!(matches!(
        r.scan(&Scan::new("thing").with_eq("qty", "x")),
        Err(Error::Schema(_))
    ));
    assert!(matches!(
        r.scan(&Scan::new("thing").with_eq("nope", 1)),
        Err(Error::Schema(_))
    ));
    assert!(matches!(
        r.scan(&Scan::new("thing").with_range("tags", None, None)),
        Err(Error::Schema(_))
    ));
}

#[test]
fn generated_ids_are_unique_and_time_ordered() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    let ids: Vec<String> = (0..200)
        .map(|_| {
            r.create("person", fields([("name", Value::from("x"))]))
                .unwrap()
                .id
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "strictly increasing, no duplicates");
    let other = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    let theirs = other
        .create("person", fields([("name", Value::from("y"))]))
        .unwrap()
        .id;
    assert!(!ids.contains(&theirs));
}

#[tokio::test]
async fn watch_streams_durable_changes_for_a_collection_or_a_record() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    let mut all = r.watch(WatchFilter::Collection("person".into()));
    let mut one = r.watch(WatchFilter::Record {
        collection: "person".into(),
        id: "b".into(),
    });
    let writer = r.clone();
    tokio::task::spawn_blocking(move || {
        writer
            .insert("person", "a", fields([("name", Value::from("A"))]))
            .unwrap();
        writer
            .insert("thing", "t", fields([("name", Value::from("T"))]))
            .unwrap();
        writer
            .insert("person", "b", fields([("name", Value::from("B"))]))
            .unwrap();
        writer
            .update("person", "b", fields([("name", Value::from("B2"))]))
            .unwrap();
        writer.delete("person", "a").unwrap();
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = all.recv().await.unwrap();
        seen.push((e.id, e.kind));
    }
    assert_eq!(
        seen,
        [
            ("a".to_string(), ChangeKind::Insert),
            ("b".to_string(), ChangeKind::Insert),
            ("b".to_string(), ChangeKind::Update),
            ("a".to_string(), ChangeKind::Delete)
        ]
    );
    assert_eq!(one.recv().await.unwrap().kind, ChangeKind::Insert);
    let e = one.recv().await.unwrap();
    assert_eq!(e.kind, ChangeKind::Update);
    assert_eq!(e.heads, r.get("person", "b").unwrap().unwrap().meta.heads);
    assert_eq!(one.try_recv(), Err(WatchError::Empty));
    // A failed write publishes nothing.
    let _ = r.insert("person", "a", fields([("name", Value::from("dup"))]));
    assert_eq!(all.try_recv(), Err(WatchError::Empty));
}

#[test]
fn a_slow_watcher_is_told_it_lagged() {
    let r = Replica::in_memory(
        Config::default()
            .with_schema(common::schema())
            .with_watch_capacity(4),
    )
    .unwrap();
    let mut w = r.watch(WatchFilter::All);
    for i in 0..10 {
        r.insert(
            "person",
            &format!("p{i}"),
            fields([("name", Value::from("x"))]),
        )
        .unwrap();
    }
    assert!(matches!(w.try_recv(), Err(WatchError::Lagged(6))));
    assert_eq!(w.try_recv().unwrap().id, "p6");
    drop(r);
    while w.try_recv().is_ok() {}
    assert_eq!(w.try_recv(), Err(WatchError::Closed));
}

/// Incompressible text of `n` letters, so saved documents have a known size.
fn noise(n: usize, seed: u32) -> String {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            char::from(b'a' + ((x >> 16) % 26) as u8)
        })
        .collect()
}

#[test]
fn appended_changes_are_compacted_into_a_snapshot_past_the_threshold() {
    let store = fieldsync::store::MemoryStore::new();
    let open = || {
        Replica::with_storage(
            Arc::new(store.clone()),
            Config::default()
                .with_schema(common::schema())
                .with_compact_after(5)
                .with_cache_docs(1),
        )
        .unwrap()
    };
    let r = open();
    // A mid-sized document (snapshot between 1 and 4 KiB): appends, inline.
    r.insert(
        "thing",
        "p",
        fields([
            ("name", Value::from("v0")),
            ("notes", Value::Text(noise(2500, 7))),
        ]),
    )
    .unwrap();
    let info = |r: &Replica, id: &str| r.storage_info("thing", id).unwrap().unwrap();
    assert_eq!(
        info(&r, "p").log_frames,
        1,
        "a new record is one saved snapshot"
    );
    let mut frames = Vec::new();
    for i in 1..=12 {
        r.update(
            "thing",
            "p",
            fields([("name", Value::from(format!("v{i}")))]),
        )
        .unwrap();
        frames.push(info(&r, "p").log_frames);
    }
    // Each write appends one frame; past the threshold the log folds into one
    // snapshot again.
    assert_eq!(frames, [2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3]);
    assert_eq!(
        info(&r, "p").external_snapshot_bytes,
        None,
        "it stays inline"
    );

    // A small document (snapshot under 1 KiB) is saved whole on every write.
    r.insert("thing", "small", fields([("name", Value::from("s0"))]))
        .unwrap();
    for i in 1..=4 {
        r.update(
            "thing",
            "small",
            fields([("name", Value::from(format!("s{i}")))]),
        )
        .unwrap();
        assert_eq!(info(&r, "small").log_frames, 1);
    }

    drop(r);
    let r = open();
    let rec = r.get("thing", "p").unwrap().unwrap();
    assert_eq!(rec.fields["name"], Value::from("v12"));
    let doc = Automerge::load(&r.export("thing", "p").unwrap()).unwrap();
    assert_eq!(
        doc.get_changes(&[]).len(),
        13,
        "compaction keeps the whole history"
    );
    let doc = Automerge::load(&r.export("thing", "small").unwrap()).unwrap();
    assert_eq!(doc.get_changes(&[]).len(), 5, "so does re-saving");
    assert!(r.verify("thing").unwrap().is_empty());
}

#[test]
fn a_large_document_keeps_its_snapshot_apart_and_appends_small_changes() {
    let store = fieldsync::store::MemoryStore::new();
    let r = Replica::with_storage(
        Arc::new(store.clone()),
        Config::default()
            .with_schema(common::schema())
            .with_compact_after(8),
    )
    .unwrap();
    // Incompressible text, so the saved document really exceeds the inline limit.
    let big = noise(20_000, 12345);
    r.insert(
        "thing",
        "t",
        fields([("name", Value::from("t")), ("notes", Value::Text(big))]),
    )
    .unwrap();
    let info = r.storage_info("thing", "t").unwrap().unwrap();
    let snapshot = info
        .external_snapshot_bytes
        .expect("a large document keeps its snapshot apart");
    assert!(snapshot > 4096, "{snapshot}");
    assert_eq!(info.log_frames, 0);
    r.update_with("thing", "t", |e| e.splice_text("notes", 0, 0, "x"))
        .unwrap();
    let info = r.storage_info("thing", "t").unwrap().unwrap();
    assert_eq!(info.log_frames, 1);
    // The write appended its change (a few bytes) and left the saved document
    // (history included) alone; the row also holds the current values.
    assert!(
        info.log_bytes < 256,
        "a write appends a small change: {info:?}"
    );
    assert_eq!(
        info.external_snapshot_bytes,
        Some(snapshot),
        "the snapshot is not rewritten"
    );
    assert!(info.row_bytes < 20_000 + 1024, "{info:?}");
    for _ in 0..9 {
        r.update_with("thing", "t", |e| e.splice_text("notes", 0, 0, "y"))
            .unwrap();
    }
    let r2 = Replica::with_storage(Arc::new(store), Config::default()).unwrap();
    let notes = r2.get("thing", "t").unwrap().unwrap().fields["notes"].clone();
    assert!(notes.as_str().unwrap().starts_with("yyyyyyyyyx"));
    assert!(r2.verify("thing").unwrap().is_empty());
}

#[test]
fn a_cache_of_one_document_still_serves_many_records() {
    let r = Replica::in_memory(
        Config::default()
            .with_schema(common::schema())
            .with_cache_docs(1),
    )
    .unwrap();
    for i in 0..50 {
        r.insert(
            "thing",
            &format!("t{i}"),
            fields([("name", Value::from("x")), ("visits", Value::Counter(0))]),
        )
        .unwrap();
    }
    for round in 0..3 {
        for i in 0..50 {
            r.update_with("thing", &format!("t{i}"), |e| e.increment("visits", 1))
                .unwrap();
        }
        assert_eq!(
            r.get("thing", "t7").unwrap().unwrap().fields["visits"],
            Value::Counter(round + 1)
        );
    }
    assert!(r.verify("thing").unwrap().is_empty());
}

#[test]
fn concurrent_writers_on_clones_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let r = common::open(dir.path());
    r.insert(
        "thing",
        "shared",
        fields([("name", Value::from("s")), ("visits", Value::Counter(0))]),
    )
    .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    r.insert(
                        "person",
                        &format!("p{t}-{i}"),
                        fields([("name", Value::from("x"))]),
                    )
                    .unwrap();
                    r.update_with("thing", "shared", |e| e.increment("visits", 1))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(r.list("person").unwrap().len(), 100);
    assert_eq!(
        r.get("thing", "shared").unwrap().unwrap().fields["visits"],
        Value::Counter(100)
    );
}

#[test]
fn a_store_held_by_another_process_is_a_locked_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(common::open(dir.path()));
    // Another process holds sled's lock (sled takes an exclusive `flock` on its
    // `db` file), as a second fieldsync process on the same store would.
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
        ])
        .arg(dir.path().join("db").join("db"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    let e = Replica::open(dir.path(), Config::default()).unwrap_err();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        matches!(e, Error::Store(fieldsync::store::StoreError::Locked { .. })),
        "{e:?}"
    );
}

#[test]
fn stamps_follow_the_wall_clock_and_are_never_reissued_after_a_restart() {
    let store = fieldsync::store::MemoryStore::new();
    let wall = Arc::new(std::sync::atomic::AtomicU64::new(1_790_000_000_000));
    let open = || {
        let w = wall.clone();
        Replica::with_storage(
            Arc::new(store.clone()),
            Config::default()
                .with_schema(common::schema())
                .with_clock(move || w.load(std::sync::atomic::Ordering::SeqCst)),
        )
        .unwrap()
    };
    let mark = || {
        let b = fieldsync::store::Storage::get(&store, b"m:hlc")
            .unwrap()
            .unwrap();
        HlcTime::from_u64(u64::from_be_bytes(b.try_into().unwrap()))
    };
    // Each write in its own process (a reopen), a second apart: stamped a
    // second apart, never ahead of the clock.
    let mut times = Vec::new();
    for i in 0..5u64 {
        wall.store(
            1_790_000_000_000 + i * 1000,
            std::sync::atomic::Ordering::SeqCst,
        );
        let r = open();
        let t = r
            .insert(
                "person",
                &format!("p{i}"),
                fields([("name", Value::from("x"))]),
            )
            .unwrap()
            .time;
        assert_eq!(
            t.millis(),
            1_790_000_000_000 + i * 1000,
            "write {i} is stamped at its wall time"
        );
        assert_eq!(
            mark(),
            t,
            "the stored mark is the last stamp, not a lease ahead of it"
        );
        times.push(t);
    }
    // A clock that went back after a restart: stamps continue after the mark.
    wall.store(1_789_000_000_000, std::sync::atomic::Ordering::SeqCst);
    let r = open();
    let after = r
        .insert("person", "q", fields([("name", Value::from("x"))]))
        .unwrap()
        .time;
    assert!(
        after > times[4],
        "{after} after a restart, mark {}",
        times[4]
    );
    assert_eq!(
        after.millis(),
        times[4].millis(),
        "one logical tick after the mark"
    );
}
