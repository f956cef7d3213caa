//! The quick-start demo: create a store, write records of every kind, read them
//! back, close and reopen the store, and check that everything is still there.
//!
//! Run it with `cargo run --release --example quickstart` (add a directory as the
//! first argument to keep the store; by default a temporary one is used). It exits
//! non-zero if anything read back differs from what was written.

use fieldsync::schema::{Collection, FieldType, ScalarType, Schema};
use fieldsync::{Config, Replica, Scan, Value, WatchFilter, fields};

fn schema() -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new()
        .with(
            Collection::builder("customer")
                .required("name", FieldType::String)
                .field("tax_id", FieldType::String)
                .build()?,
        )?
        .with(
            Collection::builder("job")
                .required("customer", FieldType::Reference("customer".into()))
                .required("title", FieldType::String)
                .default("status", FieldType::String, "open")
                .default("visits", FieldType::Counter, Value::Counter(0))
                .field("notes", FieldType::Text)
                .field("tags", FieldType::List(ScalarType::String))
                .field("due", FieldType::Timestamp)
                .field("hours", FieldType::Float)
                .build()?,
        )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);
    println!("store: {}", dir.display());

    let heads = {
        let replica = Replica::open(&dir, Config::default().with_schema(schema()?))?;
        let mut watch = replica.watch(WatchFilter::Collection("job".into()));

        // Several records in one atomic, durable transaction.
        let job_id = replica.transaction(|tx| {
            tx.insert(
                "customer",
                "acme",
                fields([("name", Value::from("Acme Water"))]),
            )?;
            let job = tx.create(
                "job",
                fields([
                    ("customer", Value::Ref("acme".into())),
                    ("title", Value::from("Replace pump seal")),
                    ("notes", Value::Text("Gate code 4411.".into())),
                    ("tags", Value::from(vec!["pump", "urgent"])),
                    ("due", Value::Timestamp(1_795_000_000_000)),
                ]),
            )?;
            Ok(job.id)
        })?;
        println!("created job {job_id}");

        // Edits that merge with concurrent ones: a counter, text, a list.
        replica.update_with("job", &job_id, |e| {
            e.increment("visits", 1)?;
            e.splice_text("notes", 0, 0, "Dog on site. ")?;
            e.list_push("tags", "north")
        })?;
        // A plain patch.
        replica.update(
            "job",
            &job_id,
            fields([
                ("status", Value::from("done")),
                ("hours", Value::Float(2.5)),
            ]),
        )?;
        replica.insert(
            "job",
            "j-old",
            fields([
                ("customer", Value::Ref("acme".into())),
                ("title", Value::from("Old job")),
            ]),
        )?;
        replica.delete("job", "j-old")?;

        // A wrong type is refused and nothing is written.
        let err = replica
            .update("job", &job_id, fields([("hours", Value::from("two"))]))
            .expect_err("a string is not a float");
        println!("refused as expected: {err}");

        let mut events = 0;
        while watch.try_recv().is_ok() {
            events += 1;
        }
        println!("watch saw {events} change events");

        let job = replica.get("job", &job_id)?.ok_or("job missing")?;
        for (k, v) in &job.fields {
            println!("  {k} = {v}");
        }
        (job_id, job.meta.heads, events)
    };

    // Reopen: everything written is still there, and deleted records stay tombstones.
    let (job_id, heads, events) = heads;
    let replica = Replica::open(&dir, Config::default())?;
    let job = replica
        .get("job", &job_id)?
        .ok_or("job lost after reopen")?;
    let expect = [
        ("status", Value::from("done")),
        ("visits", Value::Counter(1)),
        ("notes", Value::Text("Dog on site. Gate code 4411.".into())),
        ("tags", Value::from(vec!["pump", "urgent", "north"])),
        ("hours", Value::Float(2.5)),
    ];
    for (field, value) in expect {
        if job.fields.get(field) != Some(&value) {
            return Err(format!(
                "after reopen, {field} is {}, expected {value}",
                job.fields
                    .get(field)
                    .map_or("missing".to_owned(), ToString::to_string)
            )
            .into());
        }
    }
    if job.meta.heads != heads {
        return Err("heads changed across reopen".into());
    }
    let live = replica.scan(&Scan::new("job"))?;
    let old = replica.get("job", "j-old")?.ok_or("tombstone lost")?;
    if live.len() != 1 || !old.meta.deleted || events != 5 {
        return Err(format!(
            "expected 1 live job, a tombstone and 5 events; got {} live, {events} events",
            live.len()
        )
        .into());
    }
    println!("reopened: job intact, 1 live job, j-old deleted; OK");
    Ok(())
}
