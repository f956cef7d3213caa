//! Bad bytes on disk: a corrupt record gives a clear error for that record, the
//! rest of the store stays usable, and a good copy can replace it.

mod common;

use std::sync::Arc;

use fieldsync::store::{MemoryStore, Storage};
use fieldsync::{Config, Error, Replica, Value, fields};

fn replica(store: &MemoryStore) -> Replica {
    Replica::with_storage(
        Arc::new(store.clone()),
        Config::default().with_schema(common::schema()),
    )
    .unwrap()
}

fn seeded() -> (MemoryStore, Vec<u8>) {
    let store = MemoryStore::new();
    let r = replica(&store);
    for id in ["a", "b", "c"] {
        r.insert("person", id, fields([("name", Value::from(id))]))
            .unwrap();
    }
    let good_b = r.export("person", "b").unwrap();
    (store, good_b)
}

/// Every stored key that belongs to record `id` of `person`, with its value.
fn record_keys(store: &MemoryStore, tag: &str, id: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let prefix = format!("{tag}:person\0{id}");
    store
        .scan_prefix(prefix.as_bytes())
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.len() == prefix.len() || k[prefix.len()] == 0)
        .collect()
}

fn assert_others_fine(r: &Replica) {
    assert_eq!(
        r.get("person", "a").unwrap().unwrap().fields["name"],
        Value::from("a")
    );
    r.update("person", "c", fields([("name", Value::from("c2"))]))
        .unwrap();
    assert_eq!(
        r.get("person", "c").unwrap().unwrap().fields["name"],
        Value::from("c2")
    );
    r.insert("person", "d", fields([("name", Value::from("d"))]))
        .unwrap();
}

#[test]
fn a_corrupt_row_fails_only_that_record() {
    let (store, good_b) = seeded();
    for (k, mut v) in record_keys(&store, "r", "b") {
        // Damage the header: a length prefix that claims far more than is there.
        for byte in &mut v[3..12] {
            *byte = 0xff;
        }
        store.put(&k, &v).unwrap();
    }
    let r = replica(&store);
    let e = r.get("person", "b").unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { collection, id, .. } if collection == "person" && id == "b"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("record `b` in collection `person` is corrupt"),
        "{e}"
    );
    assert!(matches!(
        r.update("person", "b", fieldsync::Fields::new()),
        Err(Error::Corrupt { .. })
    ));
    // Scans skip it and go on; verify names it.
    let names: Vec<String> = r
        .list("person")
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(names, ["a", "c"]);
    let problems = r.verify("person").unwrap();
    assert_eq!(problems.len(), 1);
    assert_others_fine(&r);
    // A good copy repairs a record whose row was corrupt, too.
    r.import("person", "b", &good_b).unwrap();
    assert_eq!(
        r.get("person", "b").unwrap().unwrap().fields["name"],
        Value::from("b")
    );
    assert!(r.verify("person").unwrap().is_empty());
}

#[test]
fn corrupt_automerge_bytes_fail_only_that_record_and_a_good_copy_repairs_it() {
    let (store, good_b) = seeded();
    let rows = record_keys(&store, "r", "b");
    assert_eq!(rows.len(), 1);
    for (k, mut v) in rows {
        // Damage the automerge bytes at the end of the row (its change log),
        // leaving the header (metadata and fields) intact.
        let n = v.len();
        for byte in &mut v[n - 40..n - 10] {
            *byte ^= 0x5a;
        }
        store.put(&k, &v).unwrap();
    }
    let r = replica(&store);
    // The row is intact, so reads work; loading the document fails clearly.
    assert_eq!(
        r.get("person", "b").unwrap().unwrap().fields["name"],
        Value::from("b")
    );
    let e = r
        .update("person", "b", fields([("name", Value::from("x"))]))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { id, .. } if id == "b"),
        "{e:?}"
    );
    assert!(matches!(
        r.export("person", "b"),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(r.verify("person").unwrap().len(), 1);
    assert_others_fine(&r);

    // A truncated change log is caught as well.
    for (k, mut v) in record_keys(&store, "r", "a") {
        v.truncate(v.len() - 5);
        store.put(&k, &v).unwrap();
    }
    let r = replica(&store);
    assert!(matches!(
        r.update("person", "a", fieldsync::Fields::new()),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(r.verify("person").unwrap().len(), 2);

    // Importing a good copy (from a backup, or later from a peer) repairs `b`.
    r.import("person", "b", &good_b).unwrap();
    assert_eq!(
        r.verify("person").unwrap().len(),
        1,
        "only `a` is still broken"
    );
    r.update("person", "b", fields([("name", Value::from("b2"))]))
        .unwrap();
    let r = replica(&store);
    assert_eq!(
        r.get("person", "b").unwrap().unwrap().fields["name"],
        Value::from("b2")
    );
    assert!(
        r.verify("person")
            .unwrap()
            .iter()
            .all(|e| !e.to_string().contains("`b`"))
    );
}

#[test]
fn corrupt_replica_metadata_is_a_clear_error_at_open() {
    let (store, _) = seeded();
    store.put(b"m:schema", b"\x53\x01garbage").unwrap();
    let e = Replica::with_storage(Arc::new(store.clone()), Config::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Metadata {
                key: "m:schema",
                ..
            }
        ),
        "{e:?}"
    );
    store.put(b"m:hlc", b"short").unwrap();
    let e = Replica::with_storage(Arc::new(store), Config::default()).unwrap_err();
    assert!(matches!(e, Error::Metadata { key: "m:hlc", .. }), "{e:?}");
}

#[test]
fn a_garbage_store_directory_is_refused_at_open_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = common::open(dir.path());
        r.insert("person", "a", fields([("name", Value::from("a"))]))
            .unwrap();
    }
    // Overwrite sled's config file with garbage.
    let conf = dir.path().join("db").join("conf");
    assert!(conf.exists());
    std::fs::write(&conf, b"\xff\xfe not a sled config").unwrap();
    let result = std::panic::catch_unwind(|| Replica::open(dir.path(), Config::default()));
    let result = result.expect("opening a corrupt store must not panic");
    let e = result.unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");
}

/// A store's identity key is never replaced: missing, empty, garbage or
/// another store's, the store does not open, and the error says what
/// happened and what to do.
#[test]
fn a_missing_or_broken_identity_key_is_never_replaced_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    drop(Replica::open(other.path(), Config::default()).unwrap());
    drop(Replica::open(dir.path(), Config::default()).unwrap());
    let key = dir.path().join("identity.key");
    let good = std::fs::read(&key).unwrap();
    let cases: [(&str, Option<Vec<u8>>, &str); 4] = [
        ("missing", None, "restore it from a backup"),
        ("empty", Some(Vec::new()), "the file is empty"),
        (
            "garbage",
            Some(b"not a key at all".to_vec()),
            "not an identity key",
        ),
        (
            "another store's",
            Some(std::fs::read(other.path().join("identity.key")).unwrap()),
            "belongs to member",
        ),
    ];
    for (what, contents, says) in cases {
        match &contents {
            None => std::fs::remove_file(&key).unwrap(),
            Some(b) => std::fs::write(&key, b).unwrap(),
        }
        let e = Replica::open(dir.path(), Config::default()).unwrap_err();
        assert!(matches!(e, Error::Identity { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains(says), "{what}: {e}");
        assert!(!e.to_string().contains("rsa"), "{what}: {e}");
        // Nothing replaced it.
        assert_eq!(std::fs::read(&key).ok(), contents, "{what}");
    }
    std::fs::write(&key, &good).unwrap();
    Replica::open(dir.path(), Config::default()).unwrap();
}
