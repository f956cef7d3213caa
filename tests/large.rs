//! Large records: refused at write time with a typed error naming the limit,
//! import checked before anything is stored, and a record that cannot travel
//! whole (a merge of concurrent large writes) named on both sides of every
//! sync that cannot send it, never skipped in silence.

use fieldsync::schema::{Collection, FieldType, Schema};
use fieldsync::sim::sync_pair;
use fieldsync::{Config, Error, MAX_DOCUMENT_BYTES, MAX_RECORD_BYTES, Replica, Value, fields};

fn schema() -> Schema {
    Schema::new()
        .with(
            Collection::builder("doc")
                .required("title", FieldType::String)
                .field("a", FieldType::String)
                .field("b", FieldType::String)
                .field("c", FieldType::String)
                .field("notes", FieldType::Text)
                .build()
                .unwrap(),
        )
        .unwrap()
}

fn replica() -> Replica {
    Replica::in_memory(Config::default().with_schema(schema())).unwrap()
}

/// Text that compresses poorly (automerge deflates large columns).
fn noise(bytes: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 94) as u8)
        })
        .collect()
}

#[test]
fn a_record_over_the_limit_is_refused_at_write_with_a_typed_error_and_nothing_is_written() {
    let r = replica();
    for size in [20 << 20, 100 << 20] {
        let big = "x".repeat(size);
        let e = r
            .insert(
                "doc",
                "big",
                fields([("title", Value::from("t")), ("a", Value::from(big))]),
            )
            .unwrap_err();
        match &e {
            Error::TooLarge {
                bytes,
                limit,
                collection,
                id,
            } => {
                assert!(*bytes > size);
                assert_eq!(*limit, MAX_RECORD_BYTES);
                assert_eq!((collection.as_str(), id.as_str()), ("doc", "big"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("over the 4194304-byte limit"), "{e}");
        assert!(
            r.get("doc", "big").unwrap().is_none(),
            "nothing was written"
        );
    }
    // Updates, and records that grow by edits in place, too.
    r.insert("doc", "k", fields([("title", Value::from("t"))]))
        .unwrap();
    let e = r
        .update(
            "doc",
            "k",
            fields([("a", Value::from("y".repeat(5 << 20)))]),
        )
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    r.update("doc", "k", fields([("a", Value::from(noise(3 << 20, 1)))]))
        .unwrap();
    let e = r
        .update_with("doc", "k", |e| {
            e.splice_text("notes", 0, 0, &noise(2 << 20, 2))
        })
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    let rec = r.get("doc", "k").unwrap().unwrap();
    assert!(
        rec.fields
            .get("notes")
            .is_none_or(|v| *v == Value::Text(String::new()))
    );
    // The record stays readable and writable within the limit.
    r.update("doc", "k", fields([("b", Value::from("small"))]))
        .unwrap();
}

#[test]
fn an_import_is_checked_against_the_same_limit_before_anything_is_stored() {
    // 100 MiB of one letter saves to a few hundred kilobytes.
    let mut doc = automerge::AutoCommit::new();
    use automerge::transaction::Transactable;
    doc.put(automerge::ROOT, "title", "bomb").unwrap();
    doc.put(automerge::ROOT, "a", "z".repeat(100 << 20))
        .unwrap();
    let bytes = doc.save();
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    drop(doc);
    let r = replica();
    let e = r.import("doc", "bomb", &bytes).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    assert!(r.get("doc", "bomb").unwrap().is_none());
    // The store is still fine: other writes and reads work.
    r.insert("doc", "fine", fields([("title", Value::from("t"))]))
        .unwrap();
    assert_eq!(r.list("doc").unwrap().len(), 1);
}

#[test]
fn a_record_too_large_for_a_message_is_named_on_both_sides_and_the_sync_does_not_report_success() {
    let [a, b, c, d] = [replica(), replica(), replica(), replica()];
    a.insert("doc", "big", fields([("title", Value::from("t"))]))
        .unwrap();
    a.insert("doc", "small", fields([("title", Value::from("s"))]))
        .unwrap();
    for r in [&b, &c] {
        assert!(sync_pair(r, &a, 0, None).unwrap().synced);
    }
    // Three concurrent writes, each within the limit.
    let size = MAX_RECORD_BYTES - (200 << 10);
    a.update("doc", "big", fields([("a", Value::from(noise(size, 3)))]))
        .unwrap();
    b.update("doc", "big", fields([("b", Value::from(noise(size, 4)))]))
        .unwrap();
    c.update("doc", "big", fields([("c", Value::from(noise(size, 5)))]))
        .unwrap();
    assert!(sync_pair(&b, &a, 0, None).unwrap().synced);
    assert!(sync_pair(&c, &b, 0, None).unwrap().synced);
    // c holds the merge: readable, larger than a message.
    let merged = c.get("doc", "big").unwrap().unwrap();
    assert_eq!(merged.fields.len(), 4);
    let saved = c.export("doc", "big").unwrap().len();
    assert!(saved > MAX_DOCUMENT_BYTES, "{saved} bytes");
    // A fresh peer gets everything else, and both sides name the record.
    for (pull, r) in [
        (true, sync_pair(&d, &c, 0, None).unwrap()),
        (false, sync_pair(&c, &d, 0, None).unwrap()),
    ] {
        assert!(
            !r.synced,
            "a sync that left a record behind is not a success"
        );
        let why = r.incomplete.clone().unwrap_or_default();
        assert!(
            why.contains("doc/big") && why.contains("8388608-byte limit"),
            "{why}"
        );
        let (receiver, sender) = if pull {
            (&r.issues, &r.peer_issues)
        } else {
            (&r.peer_issues, &r.issues)
        };
        assert!(
            sender
                .iter()
                .any(|i| i.key.id == "big" && i.too_large && !i.by_peer),
            "the sending side names it: {sender:?}"
        );
        assert!(
            receiver
                .iter()
                .any(|i| i.key.id == "big" && i.too_large && i.by_peer),
            "the receiving side names it: {receiver:?}"
        );
    }
    assert!(d.get("doc", "small").unwrap().is_some());
    assert!(d.get("doc", "big").unwrap().is_none());
}
