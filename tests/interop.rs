//! Interop: records export as plain automerge bytes and import from them.

mod common;

use fieldsync::automerge::transaction::Transactable;
use fieldsync::automerge::{AutoCommit, ObjType, ROOT, ReadDoc, ScalarValue};
use fieldsync::{Config, Error, Replica, Value, fields};

fn replica() -> Replica {
    Replica::in_memory(Config::default().with_schema(common::schema())).unwrap()
}

#[test]
fn export_then_import_round_trips_every_field_as_the_importers_signed_change() {
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
    // The content, not the history: a's changes carry no signature b could
    // pass on, so b writes the content as its own (signed) change.
    assert_ne!(rb.meta.heads, ra.meta.heads);
    assert_eq!(rb.meta.author, *b.actor(), "the importer signs the import");
    assert_eq!(w.heads, rb.meta.heads);
    assert!(!b.seals("thing", "t").unwrap().is_empty());
    // Importing the same bytes again changes nothing.
    b.import("thing", "t", &bytes).unwrap();
    assert_eq!(
        b.get("thing", "t").unwrap().unwrap().meta.heads,
        rb.meta.heads
    );
    // New edits on b build on the import.
    b.update_with("thing", "t", |e| e.increment("visits", 1))
        .unwrap();
    let rb = b.get("thing", "t").unwrap().unwrap();
    assert_eq!(rb.fields["visits"], Value::Counter(9));
    // And a peer accepts b's import (it is signed by b).
    let c = replica();
    let failures = c
        .sync_apply(vec![fieldsync::sync::Incoming {
            key: fieldsync::sync::Key::new("thing", "t"),
            bytes: b.export("thing", "t").unwrap(),
            seals: b.seals("thing", "t").unwrap(),
        }])
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(c.get("thing", "t").unwrap().unwrap().fields, rb.fields);
}

#[test]
fn a_document_made_by_plain_automerge_imports_and_a_later_version_updates_the_record() {
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
    r.update_with("thing", "x", |e| e.increment("visits", 2))
        .unwrap();
    // The outside tool's next version: its values win where they differ.
    doc.put(ROOT, "qty", 6_i64).unwrap();
    doc.increment(ROOT, "visits", 10).unwrap();
    doc.splice_text(&notes, 5, 0, " world").unwrap();
    r.import("thing", "x", &doc.save()).unwrap();
    let f = r.get("thing", "x").unwrap().unwrap().fields;
    assert_eq!(f["qty"], Value::Int(6));
    assert_eq!(f["visits"], Value::Counter(11));
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
