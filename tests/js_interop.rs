//! Interop with automerge JS (`@automerge/automerge`, pinned in tests/js): it
//! reads fieldsync's exports with every field type, edits them, and creates
//! records that fieldsync imports.
//!
//! Needs Node.js and the npm package. The test installs the package itself
//! (`npm ci` in tests/js) when it is missing. Without node or npm it skips with a
//! message, except under CI (`CI` set), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use fieldsync::{Config, Replica, Value};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Make sure automerge JS is installed; `false` (skip) where it cannot be.
fn ready() -> bool {
    let fail_or_skip = |why: String| {
        if std::env::var_os("CI").is_some() {
            panic!("automerge JS interop cannot run under CI: {why}");
        }
        eprintln!("SKIPPED: automerge JS interop: {why}");
        false
    };
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return fail_or_skip("node is not installed".into()),
    }
    if js_dir().join("node_modules/@automerge/automerge").exists() {
        return true;
    }
    match Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(js_dir())
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => fail_or_skip(format!(
            "npm ci failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail_or_skip(format!("npm is not available: {e}")),
    }
}

fn node(args: &[&str]) -> String {
    let out = Command::new("node")
        .arg(js_dir().join("interop.mjs"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn automerge_js_reads_edits_and_creates_fieldsync_records() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = Replica::in_memory(Config::default().with_schema(common::schema())).unwrap();
    r.insert("thing", "t", common::full_thing()).unwrap();

    // JS reads every field type of fieldsync's export.
    let exported = dir.path().join("t.automerge");
    std::fs::write(&exported, r.export("thing", "t").unwrap()).unwrap();
    let seen: serde_json::Value =
        serde_json::from_str(&node(&["read", exported.to_str().unwrap()])).unwrap();
    assert_eq!(seen["name"]["string"], "pump");
    assert_eq!(seen["qty"]["int"], -42);
    assert_eq!(seen["price"]["float"], 19.75);
    assert_eq!(seen["active"]["bool"], true);
    assert_eq!(seen["due"]["timestamp"], 1_790_000_000_123_i64);
    assert_eq!(seen["visits"]["counter"], 7);
    assert_eq!(seen["notes"]["text"], "héllo wörld ✓");
    assert_eq!(seen["tags"]["list"][1]["string"], "b");
    assert_eq!(seen["owner"]["string"], "p1");
    let heads: Vec<String> = r
        .get("thing", "t")
        .unwrap()
        .unwrap()
        .meta
        .heads
        .iter()
        .map(|h| h.to_string())
        .collect();
    assert_eq!(seen["$heads"], serde_json::json!(heads));

    // JS edits while fieldsync edits too; importing JS's version merges both.
    let edited = dir.path().join("t-js.automerge");
    node(&["edit", exported.to_str().unwrap(), edited.to_str().unwrap()]);
    r.update_with("thing", "t", |e| {
        e.increment("visits", 1)?;
        e.list_push("tags", "rust")
    })
    .unwrap();
    r.import("thing", "t", &std::fs::read(&edited).unwrap())
        .unwrap();
    let f = r.get("thing", "t").unwrap().unwrap().fields;
    assert_eq!(f["qty"], Value::Int(99));
    assert_eq!(
        f["visits"],
        Value::Counter(13),
        "7 + 1 (fieldsync) + 5 (JS)"
    );
    assert_eq!(f["notes"], Value::Text("JS: héllo wörld ✓".into()));
    let Value::List(tags) = &f["tags"] else {
        panic!("{f:?}")
    };
    assert_eq!(tags.len(), 4);
    assert!(tags.contains(&Value::from("js")) && tags.contains(&Value::from("rust")));

    // A plain JS string is collaborative text in automerge 3: a list of strings
    // refuses it, clearly, and nothing is written.
    let before = r.get("thing", "t").unwrap().unwrap();
    let plain = dir.path().join("plain.automerge");
    node(&[
        "plain-string",
        exported.to_str().unwrap(),
        plain.to_str().unwrap(),
    ]);
    let e = r
        .import("thing", "t", &std::fs::read(&plain).unwrap())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("field `tags` expects list of string"),
        "{e}"
    );
    assert_eq!(r.get("thing", "t").unwrap().unwrap(), before);

    // A record made entirely by automerge JS imports with its types.
    let created = dir.path().join("new.automerge");
    node(&["create", created.to_str().unwrap()]);
    r.import("thing", "from-js", &std::fs::read(&created).unwrap())
        .unwrap();
    let f = r.get("thing", "from-js").unwrap().unwrap().fields;
    assert_eq!(f["name"], Value::from("made in JS"));
    assert_eq!(f["qty"], Value::Int(7));
    assert_eq!(f["price"], Value::Float(2.5));
    assert_eq!(f["due"], Value::Timestamp(1_790_000_000_000));
    assert_eq!(f["visits"], Value::Counter(3));
    assert_eq!(f["notes"], Value::Text("collaborative text".into()));
    assert_eq!(f["owner"], Value::Ref("p1".into()));
}
