//! The schema: declarations, the TOML file, and a typed error for each kind of bad
//! input, with nothing written.

mod common;

use fieldsync::schema::{Collection, FieldType, Schema, SchemaError};
use fieldsync::{Config, Error, Replica, Value, fields};

fn replica() -> Replica {
    Replica::in_memory(Config::default().with_schema(common::schema())).unwrap()
}

fn assert_nothing_written(r: &Replica) {
    assert!(r.list("thing").unwrap().is_empty());
    assert!(r.list("person").unwrap().is_empty());
}

#[test]
fn unknown_collection_is_a_typed_error_naming_it() {
    let r = replica();
    let e = r
        .insert("nope", "1", fields([("name", Value::from("x"))]))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Schema(SchemaError::UnknownCollection { collection }) if collection == "nope"),
        "{e:?}"
    );
    assert!(matches!(
        r.get("nope", "1"),
        Err(Error::Schema(SchemaError::UnknownCollection { .. }))
    ));
    assert!(matches!(
        r.list("nope"),
        Err(Error::Schema(SchemaError::UnknownCollection { .. }))
    ));
    assert_nothing_written(&r);
}

#[test]
fn unknown_field_is_a_typed_error_naming_collection_and_field() {
    let r = replica();
    let e = r
        .insert(
            "thing",
            "1",
            fields([("name", Value::from("x")), ("colour", Value::from("red"))]),
        )
        .unwrap_err();
    match e {
        Error::Schema(SchemaError::UnknownField { collection, field }) => {
            assert_eq!((collection.as_str(), field.as_str()), ("thing", "colour"));
        }
        other => panic!("{other:?}"),
    }
    assert_nothing_written(&r);
}

#[test]
fn wrong_type_names_collection_field_expected_and_given() {
    let r = replica();
    let cases = [
        ("qty", Value::from("ten"), "integer", "string"),
        ("price", Value::Bool(true), "float", "boolean"),
        ("active", Value::Int(1), "boolean", "integer"),
        ("due", Value::from("tomorrow"), "timestamp", "string"),
        ("visits", Value::Float(1.5), "counter", "float"),
        ("notes", Value::Int(3), "text", "integer"),
        (
            "tags",
            Value::List(vec![Value::Int(1)]),
            "list of string",
            "list",
        ),
        ("owner", Value::Int(5), "reference to person", "integer"),
        ("name", Value::List(vec![]), "string", "list"),
    ];
    for (field, value, expected, given) in cases {
        let e = r
            .insert(
                "thing",
                "1",
                fields([("name", Value::from("x")), (field, value)]),
            )
            .unwrap_err();
        match e {
            Error::Schema(SchemaError::WrongType {
                collection,
                field: f,
                expected: exp,
                given: giv,
            }) => {
                assert_eq!(collection, "thing");
                assert_eq!(f, field);
                assert_eq!(exp, expected, "{field}");
                assert_eq!(giv, given, "{field}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_nothing_written(&r);
    // The message is readable on its own.
    let e = r
        .insert(
            "thing",
            "1",
            fields([("name", Value::from("x")), ("qty", Value::from("ten"))]),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "field `thing.qty` expects integer, given string"
    );
}

#[test]
fn missing_required_field_is_a_typed_error_and_defaults_fill_in() {
    let r = replica();
    let e = r
        .insert("thing", "1", fields([("qty", Value::Int(1))]))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Schema(SchemaError::MissingRequired { collection, field, expected })
            if collection == "thing" && field == "name" && expected == "string"),
        "{e:?}"
    );
    assert_nothing_written(&r);
    // A default supplies a required field; removing a required field is refused.
    r.insert("person", "p1", fields([("name", Value::from("Ana"))]))
        .unwrap();
    assert_eq!(
        r.get("person", "p1").unwrap().unwrap().fields["status"],
        Value::from("active")
    );
    let e = r
        .update("person", "p1", fields([("name", Value::Null)]))
        .unwrap_err();
    assert!(
        matches!(e, Error::Schema(SchemaError::MissingRequired { .. })),
        "{e:?}"
    );
    assert_eq!(
        r.get("person", "p1").unwrap().unwrap().fields["name"],
        Value::from("Ana")
    );
}

#[test]
fn bad_updates_change_nothing() {
    let r = replica();
    r.insert("thing", "1", common::full_thing()).unwrap();
    let before = r.get("thing", "1").unwrap().unwrap();
    for patch in [
        fields([("qty", Value::from("x"))]),
        fields([("nope", Value::Int(1))]),
        fields([("price", Value::Float(1.0)), ("active", Value::Int(2))]),
    ] {
        assert!(matches!(
            r.update("thing", "1", patch),
            Err(Error::Schema(_))
        ));
    }
    assert_eq!(r.get("thing", "1").unwrap().unwrap(), before);
}

#[test]
fn invalid_ids_and_names_are_refused() {
    let r = replica();
    for id in ["", "a\0b", "line\nbreak", &"x".repeat(257)] {
        let e = r
            .insert("person", id, fields([("name", Value::from("x"))]))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidId { .. }), "{id:?}: {e:?}");
    }
    for name in ["", "Upper", "9lives", "has-dash", "_private"] {
        let e = Collection::builder(name).build().unwrap_err();
        assert!(
            matches!(e, SchemaError::InvalidName { .. }),
            "{name:?}: {e:?}"
        );
    }
    let e = Collection::builder("c")
        .field("a", FieldType::String)
        .field("a", FieldType::Integer)
        .build()
        .unwrap_err();
    assert!(matches!(e, SchemaError::DuplicateField { .. }));
    let e = Collection::builder("c")
        .default("n", FieldType::Integer, "not a number")
        .build()
        .unwrap_err();
    assert!(matches!(e, SchemaError::WrongType { .. }));
}

#[test]
fn references_must_name_a_declared_collection() {
    let c = Collection::builder("invoice")
        .field("customer", FieldType::Reference("customer".into()))
        .build()
        .unwrap();
    let e = Schema::new().with(c).unwrap_err();
    assert!(matches!(e, SchemaError::UnknownReference { target, .. } if target == "customer"));
}

#[test]
fn collections_evolve_only_compatibly() {
    let r = replica();
    r.insert("person", "p1", fields([("name", Value::from("Ana"))]))
        .unwrap();
    // Adding an optional field is fine; records keep working.
    let v2 = Collection::builder("person")
        .required("name", FieldType::String)
        .default("status", FieldType::String, "active")
        .field("phone", FieldType::String)
        .build()
        .unwrap();
    r.define_collection(v2).unwrap();
    r.update("person", "p1", fields([("phone", Value::from("555"))]))
        .unwrap();
    // Changing a type or adding a required field without default is refused.
    let bad = Collection::builder("person")
        .required("name", FieldType::Integer)
        .default("status", FieldType::String, "active")
        .field("phone", FieldType::String)
        .build()
        .unwrap();
    assert!(matches!(
        r.define_collection(bad),
        Err(Error::Schema(SchemaError::Incompatible { .. }))
    ));
    let bad = Collection::builder("person")
        .required("name", FieldType::String)
        .default("status", FieldType::String, "active")
        .field("phone", FieldType::String)
        .required("age", FieldType::Integer)
        .build()
        .unwrap();
    assert!(matches!(
        r.define_collection(bad),
        Err(Error::Schema(SchemaError::Incompatible { .. }))
    ));
}

#[test]
fn the_schema_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = Replica::open(dir.path(), Config::default()).unwrap();
        r.define_collection(common::person()).unwrap();
    }
    let r = Replica::open(dir.path(), Config::default()).unwrap();
    assert_eq!(r.schema().collection("person").unwrap(), &common::person());
}

const FILE: &str = r#"
[collections.customer.fields]
name   = { type = "string", required = true }
tax_id = "string"

[collections.invoice.fields]
customer = { type = "reference", to = "customer", required = true }
total    = { type = "float", default = 0 }
due      = { type = "timestamp", default = 0 }
tags     = { type = "list", of = "string" }
visits   = "counter"
notes    = "text"
"#;

#[test]
fn a_toml_file_declares_every_type() {
    let s = Schema::from_toml(FILE).unwrap();
    let inv = s.collection("invoice").unwrap();
    assert_eq!(
        inv.field("customer").unwrap().ty,
        FieldType::Reference("customer".into())
    );
    assert!(inv.field("customer").unwrap().required);
    assert_eq!(inv.field("total").unwrap().default, Some(Value::Float(0.0)));
    assert_eq!(inv.field("due").unwrap().default, Some(Value::Timestamp(0)));
    assert_eq!(inv.field("visits").unwrap().ty, FieldType::Counter);
    assert_eq!(inv.field("notes").unwrap().ty, FieldType::Text);
    assert!(
        !s.collection("customer")
            .unwrap()
            .field("tax_id")
            .unwrap()
            .required
    );
    // The file shipped with the examples parses too.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schema.toml"))
            .unwrap();
    Schema::from_toml(&shipped).unwrap();
}

#[test]
fn a_bad_toml_file_gives_a_clear_error() {
    let cases = [
        (
            "[collections.a.fields]\nx = \"strng\"",
            "unknown type `strng`",
        ),
        (
            "[collections.a.fields]\nx = { type = \"list\" }",
            "a list needs `of",
        ),
        (
            "[collections.a.fields]\nx = { type = \"reference\" }",
            "a reference needs `to",
        ),
        (
            "[collections.a.fields]\nx = { type = \"string\", requird = true }",
            "requird",
        ),
        ("[collections.a]\nfeilds = {}", "feilds"),
        (
            "[collections.a.fields]\nx = { type = \"reference\", to = \"b\" }",
            "unknown collection `b`",
        ),
        (
            "[collections.a.fields]\nx = { type = \"integer\", default = \"x\" }",
            "expects integer",
        ),
        ("not toml at all [", ""),
    ];
    for (text, needle) in cases {
        let e = Schema::from_toml(text).unwrap_err();
        assert!(e.to_string().contains(needle), "{text:?} -> {e}");
    }
}
