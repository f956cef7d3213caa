//! Helpers shared by the integration tests.
#![allow(dead_code)]

use fieldsync::schema::{Collection, FieldType, ScalarType, Schema};
use fieldsync::{Fields, Value, fields};

/// A collection with one field of every type.
pub fn all_types() -> Collection {
    Collection::builder("thing")
        .required("name", FieldType::String)
        .field("qty", FieldType::Integer)
        .field("price", FieldType::Float)
        .field("active", FieldType::Boolean)
        .field("due", FieldType::Timestamp)
        .field("visits", FieldType::Counter)
        .field("notes", FieldType::Text)
        .field("tags", FieldType::List(ScalarType::String))
        .field("scores", FieldType::List(ScalarType::Integer))
        .field("owner", FieldType::Reference("person".into()))
        .build()
        .expect("valid collection")
}

pub fn person() -> Collection {
    Collection::builder("person")
        .required("name", FieldType::String)
        .default("status", FieldType::String, "active")
        .build()
        .expect("valid collection")
}

pub fn schema() -> Schema {
    Schema::new()
        .with(person())
        .and_then(|s| s.with(all_types()))
        .expect("valid schema")
}

/// A value of every type.
pub fn full_thing() -> Fields {
    fields([
        ("name", Value::from("pump")),
        ("qty", Value::Int(-42)),
        ("price", Value::Float(19.75)),
        ("active", Value::Bool(true)),
        ("due", Value::Timestamp(1_790_000_000_123)),
        ("visits", Value::Counter(7)),
        ("notes", Value::Text("héllo wörld ✓".into())),
        ("tags", Value::List(vec!["a".into(), "b".into()])),
        ("scores", Value::List(vec![Value::Int(1), Value::Int(-2)])),
        ("owner", Value::Ref("p1".into())),
    ])
}

/// Open a sled replica, retrying sled's in-process lock release race.
pub fn open(dir: &std::path::Path) -> fieldsync::Replica {
    fieldsync::Replica::open(dir, fieldsync::Config::default().with_schema(schema()))
        .expect("open replica")
}

/// Run a built example program and check it succeeded and printed `expect`.
pub fn run_example(name: &str, expect: &str) {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run the whole suite with `cargo test`",
        path.display()
    );
    let out = std::process::Command::new(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(expect), "{stdout}");
}
