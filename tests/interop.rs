//! Interop: records export as plain automerge bytes and import from them.

mod common;

use fieldsync::automerge::transaction::Transactable;
use fieldsync::automerge::{AutoCommit, ObjType, ROOT, ReadDoc, ScalarValue};
use fieldsync::{Config, Error, Replica, Value, fields};

fn replica() -> Replica {
    Replica::in_memory(Config::default().with_schema(common::schema())).unwrap()
}

#[test]
fn export_then_import_round_trips_every_field_and_the_history() {
    let a = replica();
    a.insert("thing", "t", common::full_thing()).unwrap();
    a.update_with("thing", "t", |e| e.increment("visits", 1))
        .unwrap();
    let bytes = a.export("thing", "t").unwrap();

    let b = replica();
    let w = b.import("thing", "t", &bytes).unwrap();
    let (ra, rb) = (
        a.get("thing", "t").unwrap().unwrap(),
        b.get("thing", "t").unwrap().unwrap(),
    );
    assert_eq!(rb.fields, ra.fields);
    assert_eq!(rb.meta.heads, ra.meta.heads);
    assert_eq!(rb.meta.modified, ra.meta.modified);
    assert_eq!(
        rb.meta.author,
        *a.actor(),
        "author comes from the change, not the importer"
    );
    assert_eq!(w.heads, ra.meta.heads);
    // Importing the same bytes again is harmless.
    b.import("thing", "t", &bytes).unwrap();
    assert_eq!(
        b.get("thing", "t").unwrap().unwrap().meta.heads,
        ra.meta.heads
    );
    // New edits on b build on the imported history, by b's own actor.
    b.update_with("thing", "t", |e| e.increment("visits", 1))
        .unwrap();
    let rb = b.get("thing", "t").unwrap().unwrap();
    assert_eq!(rb.fields["visits"], Value::Counter(9));
    assert_eq!(rb.meta.author, *b.actor());
}

#[test]
fn a_document_made_by_plain_automerge_imports_and_merges_with_concurrent_edits() {
    // What another automerge implementation (automerge JS, say) would produce.
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "name", "from outside").unwrap();
    doc.put(ROOT, "qty", 5_i64).unwrap();
    doc.put(ROOT, "visits", ScalarValue::counter(1)).unwrap();
    let notes = doc.put_object(ROOT, "notes", ObjType::Text).unwrap();
    doc.splice_text(&notes, 0, 0, "hello").unwrap();
    let base = doc.save();

    let r = replica();
    r.import("thing", "x", &base).unwrap();
    // Concurrently: fieldsync edits one field, the outside tool another.
    r.update_with("thing", "x", |e| {
        e.increment("visits", 2)?;
        e.splice_text("notes", 5, 0, " world")
    })
    .unwrap();
    doc.put(ROOT, "qty", 6_i64).unwrap();
    doc.increment(ROOT, "visits", 10).unwrap();
    r.import("thing", "x", &doc.save()).unwrap();
    let f = r.get("thing", "x").unwrap().unwrap().fields;
    assert_eq!(f["qty"], Value::Int(6));
    assert_eq!(f["visits"], Value::Counter(13));
    assert_eq!(f["notes"], Value::Text("hello world".into()));

    // And the outside tool reads fieldsync's export.
    let mut back = AutoCommit::load(&r.export("thing", "x").unwrap()).unwrap();
    let (_, notes) = back.get(ROOT, "notes").unwrap().unwrap();
    assert_eq!(back.text(&notes).unwrap(), "hello world");
    assert_eq!(
        back.get_heads(),
        r.get("thing", "x").unwrap().unwrap().meta.heads
    );
}

#[test]
fn bad_bytes_or_a_wrong_shape_are_refused_with_nothing_written() {
    let r = replica();
    let e = r
        .import("thing", "x", b"definitely not automerge")
        .unwrap_err();
    assert!(
        matches!(&e, Error::Import { reason, .. } if reason.contains("not an automerge document")),
        "{e:?}"
    );

    let mut wrong_type = AutoCommit::new();
    wrong_type.put(ROOT, "name", "ok").unwrap();
    wrong_type.put(ROOT, "qty", "five").unwrap();
    let e = r.import("thing", "x", &wrong_type.save()).unwrap_err();
    assert!(
        matches!(&e, Error::Import { reason, .. } if reason.contains("qty")),
        "{e:?}"
    );

    let mut unknown = AutoCommit::new();
    unknown.put(ROOT, "name", "ok").unwrap();
    unknown.put(ROOT, "colour", "red").unwrap();
    let e = r.import("thing", "x", &unknown.save()).unwrap_err();
    assert!(
        matches!(&e, Error::Import { reason, .. } if reason.contains("colour")),
        "{e:?}"
    );

    let mut missing = AutoCommit::new();
    missing.put(ROOT, "qty", 1_i64).unwrap();
    let e = r.import("thing", "x", &missing.save()).unwrap_err();
    assert!(
        matches!(&e, Error::Import { reason, .. } if reason.contains("name")),
        "{e:?}"
    );

    assert!(matches!(
        r.import("nope", "x", &unknown.save()),
        Err(Error::Schema(_))
    ));
    assert!(r.get("thing", "x").unwrap().is_none());
    assert!(matches!(
        r.export("thing", "x"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_tombstone_travels_through_export_and_import() {
    let a = replica();
    a.insert("person", "p", fields([("name", Value::from("P"))]))
        .unwrap();
    a.delete("person", "p").unwrap();
    let b = replica();
    b.import("person", "p", &a.export("person", "p").unwrap())
        .unwrap();
    assert!(b.get("person", "p").unwrap().unwrap().meta.deleted);
}
