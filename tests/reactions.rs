//! Reactions a person attaches with a reactions file: a program runs on the
//! main node when synced data matches, its output is written back as records,
//! from a durable queue, and two main nodes write one record between them.

use std::sync::Arc;

use fieldsync::conflict::ConflictFilter;
use fieldsync::schema::{Collection, FieldType, Schema};
use fieldsync::sim::{authority_group, sync_pair};
use fieldsync::store::MemoryStore;
use fieldsync::{Config, Replica, Value, fields, reactions_from_toml};

fn schema() -> Schema {
    Schema::new()
        .with(
            Collection::builder("opportunity")
                .required("title", FieldType::String)
                .default("stage", FieldType::String, "qualify")
                .build()
                .unwrap(),
        )
        .unwrap()
        .with(
            Collection::builder("activity")
                .required("title", FieldType::String)
                .field("opportunity", FieldType::Reference("opportunity".into()))
                .build()
                .unwrap(),
        )
        .unwrap()
}

fn open(store: &MemoryStore) -> Replica {
    Replica::with_storage(
        Arc::new(store.clone()),
        Config::default().with_schema(schema()),
    )
    .unwrap()
}

/// A program that writes a call activity for the opportunity it is given.
fn script(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("make_call.sh");
    std::fs::write(
        &path,
        r#"#!/bin/sh
id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
printf '[{"collection":"activity","key":"call","fields":{"title":"Call the customer","opportunity":"%s"}}]' "$id"
"#,
    )
    .unwrap();
    path
}

fn reactions(program: &std::path::Path) -> String {
    format!(
        r#"
[[reaction]]
name = "negotiation_call"
collection = "opportunity"
field = "stage"
equals = "negotiation"
run = ["sh", "{}"]
timeout = 20
"#,
        program.display()
    )
}

#[test]
fn a_program_reacts_on_two_main_nodes_and_one_activity_results_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let file = reactions(&script(dir.path()));
    let stores = [MemoryStore::new(), MemoryStore::new(), MemoryStore::new()];
    let [d, a1, a2] = [0, 1, 2].map(|i| open(&stores[i]));
    authority_group(&a1, &[&d, &a2], 0).unwrap();
    a1.add_member(&a2.actor().to_hex_string(), fieldsync::Role::Authority)
        .unwrap();
    for r in [&d, &a2] {
        assert!(sync_pair(r, &a1, 0, None).unwrap().synced);
    }
    for main in [&a1, &a2] {
        for r in reactions_from_toml(&file, &main.schema()).unwrap() {
            main.add_reaction(r).unwrap();
        }
    }
    d.insert(
        "opportunity",
        "o1",
        fields([("title", Value::from("Pumps"))]),
    )
    .unwrap();
    d.update(
        "opportunity",
        "o1",
        fields([("stage", Value::from("negotiation"))]),
    )
    .unwrap();
    // Each main node receives the move and queues the reaction in the same
    // transaction; nothing runs yet.
    for main in [&a1, &a2] {
        assert!(sync_pair(&d, main, 0, None).unwrap().synced);
        let jobs = main.reaction_jobs().unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(
            (jobs[0].collection.as_str(), jobs[0].id.as_str()),
            ("opportunity", "o1")
        );
    }
    // A main node that stops before running it: the job is still queued
    // when it opens again.
    drop(a1);
    let a1 = open(&stores[1]);
    for r in reactions_from_toml(&file, &a1.schema()).unwrap() {
        a1.add_reaction(r).unwrap();
    }
    assert_eq!(a1.reaction_jobs().unwrap().len(), 1);
    for main in [&a1, &a2] {
        assert_eq!(main.run_reaction_jobs().unwrap(), 1);
        assert!(main.reaction_jobs().unwrap().is_empty());
        assert_eq!(main.run_reaction_jobs().unwrap(), 0, "run once");
    }
    for _ in 0..2 {
        for r in [&d, &a2] {
            assert!(sync_pair(r, &a1, 0, None).unwrap().synced);
        }
    }
    for r in [&d, &a1, &a2] {
        let acts = r.list("activity").unwrap();
        assert_eq!(acts.len(), 1, "one activity on every peer");
        assert_eq!(acts[0].fields["opportunity"], Value::Ref("o1".into()));
        assert!(r.conflicts(&ConflictFilter::all()).unwrap().is_empty());
    }
}

#[test]
fn a_failing_program_is_kept_with_its_error_and_a_bad_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("fails.sh");
    std::fs::write(&bad, "#!/bin/sh\necho 'no such customer' >&2\nexit 3\n").unwrap();
    let r = open(&MemoryStore::new());
    for x in reactions_from_toml(&reactions(&bad), &r.schema()).unwrap() {
        r.add_reaction(x).unwrap();
    }
    r.insert(
        "opportunity",
        "o1",
        fields([("title", Value::from("Pumps"))]),
    )
    .unwrap();
    r.update(
        "opportunity",
        "o1",
        fields([("stage", Value::from("negotiation"))]),
    )
    .unwrap();
    assert_eq!(r.run_reaction_jobs().unwrap(), 0);
    let jobs = r.reaction_jobs().unwrap();
    assert_eq!(jobs[0].attempts, 1);
    let err = jobs[0].last_error.clone().unwrap();
    assert!(
        err.contains("exited with") && err.contains("no such customer"),
        "{err}"
    );
    assert!(r.list("activity").unwrap().is_empty());
    // Files that do not fit the schema are refused, naming the reaction.
    let e = reactions_from_toml(
        "[[reaction]]\nname = \"x\"\ncollection = \"nope\"\nfield = \"stage\"\nrun = [\"true\"]\n",
        &r.schema(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("reaction `x`") && e.to_string().contains("nope"),
        "{e}"
    );
    let e = reactions_from_toml("[[reaction]]\nname = 3\n", &r.schema()).unwrap_err();
    assert!(e.to_string().contains("not a reactions file"), "{e}");
}
