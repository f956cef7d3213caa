//! Transactions: several records written atomically; one invalid record aborts all.

mod common;

use fieldsync::{Config, Error, Replica, Value, WatchFilter, fields};

#[test]
fn one_invalid_record_aborts_the_whole_transaction_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = common::open(dir.path());
        r.insert("person", "keep", fields([("name", Value::from("before"))]))
            .unwrap();
        let mut watch = r.watch(WatchFilter::All);
        let e = r
            .transaction(|tx| {
                tx.insert("person", "p1", fields([("name", Value::from("one"))]))?;
                tx.update("person", "keep", fields([("name", Value::from("changed"))]))?;
                tx.insert("thing", "t1", fields([("name", Value::from("t"))]))?;
                tx.insert(
                    "thing",
                    "t2",
                    fields([("qty", Value::from("not a number"))]),
                )?; // invalid
                tx.insert("person", "p2", fields([("name", Value::from("two"))]))?;
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(e, Error::Schema(_)), "{e:?}");
        // Nothing is visible in this process...
        assert!(r.get("person", "p1").unwrap().is_none());
        assert!(r.get("thing", "t1").unwrap().is_none());
        assert_eq!(
            r.get("person", "keep").unwrap().unwrap().fields["name"],
            Value::from("before")
        );
        assert!(
            watch.try_recv().is_err(),
            "no event for an aborted transaction"
        );
        // ...and the in-memory documents were rolled back too: a later write to the
        // same record starts from the stored state.
        r.update("person", "keep", fields([("status", Value::from("x"))]))
            .unwrap();
        assert_eq!(
            r.get("person", "keep").unwrap().unwrap().fields["name"],
            Value::from("before")
        );
        assert!(r.verify("person").unwrap().is_empty());
    }
    // ...nor after reopening the files.
    let r = common::open(dir.path());
    assert!(r.get("person", "p1").unwrap().is_none());
    assert!(r.get("thing", "t1").unwrap().is_none());
    assert_eq!(r.list("person").unwrap().len(), 1);
    assert_eq!(
        r.get("person", "keep").unwrap().unwrap().fields["status"],
        Value::from("x")
    );
}

#[test]
fn an_error_returned_by_the_closure_aborts_too() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    let e = r
        .transaction(|tx| {
            tx.insert("person", "a", fields([("name", Value::from("a"))]))?;
            Err::<(), _>(Error::NotFound {
                collection: "app".into(),
                id: "business rule".into(),
            })
        })
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }));
    assert!(r.get("person", "a").unwrap().is_none());
}

#[test]
fn a_transaction_commits_every_record_and_returns_the_closure_value() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    r.insert(
        "thing",
        "t",
        fields([("name", Value::from("t")), ("visits", Value::Counter(0))]),
    )
    .unwrap();
    let n = r
        .transaction(|tx| {
            let p = tx.create("person", fields([("name", Value::from("gen"))]))?;
            tx.insert(
                "thing",
                "t2",
                fields([
                    ("name", Value::from("t2")),
                    ("owner", Value::Ref(p.id.clone())),
                ]),
            )?;
            tx.update_with("thing", "t", |e| e.increment("visits", 2))?;
            tx.update_with("thing", "t", |e| e.increment("visits", 3))?;
            tx.delete("thing", "t2")?;
            Ok(42)
        })
        .unwrap();
    assert_eq!(n, 42);
    assert_eq!(r.list("person").unwrap().len(), 1);
    assert_eq!(
        r.get("thing", "t").unwrap().unwrap().fields["visits"],
        Value::Counter(5)
    );
    assert!(r.get("thing", "t2").unwrap().unwrap().meta.deleted);
}

#[test]
fn a_panicking_closure_poisons_nothing() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    let r2 = r.clone();
    let joined = std::thread::spawn(move || {
        let _ = r2.transaction(|tx| -> fieldsync::Result<()> {
            tx.insert("person", "a", fields([("name", Value::from("a"))]))?;
            panic!("application bug inside a transaction");
        });
    })
    .join();
    assert!(joined.is_err());
    assert!(r.get("person", "a").unwrap().is_none());
    r.insert("person", "a", fields([("name", Value::from("a"))]))
        .unwrap();
    assert!(r.get("person", "a").unwrap().is_some());
}

#[test]
fn a_write_error_swallowed_inside_a_transaction_leaves_no_trace() {
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    r.transaction(|tx| {
        // The application ignores a failed insert and goes on.
        let bad = tx.insert("thing", "t", fields([("qty", Value::from("x"))]));
        assert!(bad.is_err());
        tx.insert("person", "p", fields([("name", Value::from("p"))]))?;
        Ok(())
    })
    .unwrap();
    assert!(r.get("thing", "t").unwrap().is_none());
    assert!(matches!(
        r.update("thing", "t", fields([("qty", Value::Int(1))])),
        Err(Error::NotFound { .. })
    ));
    r.insert("thing", "t", fields([("name", Value::from("now"))]))
        .unwrap();
    assert_eq!(
        r.get("person", "p").unwrap().unwrap().fields["name"],
        Value::from("p")
    );
}
