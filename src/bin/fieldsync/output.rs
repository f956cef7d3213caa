//! Printing results, as text or JSON.

use std::path::Path;

use fieldsync::schema::Schema;
use fieldsync::{Record, Replica, Written};
use serde_json::{Value as J, json};

fn record_json(r: &Record) -> J {
    json!({
        "collection": r.collection,
        "id": r.id,
        "fields": r.fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
        "meta": {
            "heads": r.meta.heads.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "modified": r.meta.modified.to_string(),
            "modified_ms": r.meta.modified.millis(),
            "author": r.meta.author.to_hex_string(),
            "deleted": r.meta.deleted,
        },
    })
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

pub(crate) fn record(json: bool, r: &Record) {
    if json {
        println!("{}", record_json(r));
        return;
    }
    let deleted = if r.meta.deleted { "  (deleted)" } else { "" };
    println!("{}/{}{deleted}", r.collection, r.id);
    for (k, v) in &r.fields {
        println!("  {k}: {v}");
    }
    let heads: Vec<String> = r
        .meta
        .heads
        .iter()
        .map(|h| short(&h.to_string()).to_owned())
        .collect();
    let author = r.meta.author.to_hex_string();
    println!(
        "  -- modified {} by {} heads {}",
        r.meta.modified,
        short(&author),
        heads.join(",")
    );
}

pub(crate) fn records(json: bool, rs: &[Record]) {
    if json {
        println!("{}", J::Array(rs.iter().map(record_json).collect()));
        return;
    }
    for r in rs {
        let fields: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let deleted = if r.meta.deleted { " (deleted)" } else { "" };
        println!("{}{deleted}  {}", r.id, fields.join("  "));
    }
    println!("{} record(s)", rs.len());
}

pub(crate) fn written(json: bool, what: &str, w: &Written) {
    if json {
        println!(
            "{}",
            json!({
                "result": what,
                "collection": w.collection,
                "id": w.id,
                "heads": w.heads.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                "time": w.time.to_string(),
            })
        );
    } else {
        println!("{what} {}/{}", w.collection, w.id);
    }
}

pub(crate) fn init(json: bool, dir: &Path, r: &Replica) {
    let collections: Vec<String> = r.schema().collections().map(|c| c.name.clone()).collect();
    if json {
        println!(
            "{}",
            json!({ "store": dir.display().to_string(), "actor": r.actor().to_hex_string(), "collections": collections })
        );
    } else {
        println!(
            "store ready at {} (actor {})",
            dir.display(),
            r.actor().to_hex_string()
        );
        println!(
            "collections: {}",
            if collections.is_empty() {
                "none".into()
            } else {
                collections.join(", ")
            }
        );
    }
}

pub(crate) fn schema(json: bool, s: &Schema) {
    if json {
        let cs: Vec<J> = s
            .collections()
            .map(|c| {
                json!({
                    "name": c.name,
                    "fields": c.fields.iter().map(|f| json!({
                        "name": f.name,
                        "type": f.ty.to_string(),
                        "required": f.required,
                        "default": f.default.as_ref().map(|d| d.to_json()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", J::Array(cs));
        return;
    }
    for c in s.collections() {
        println!("{}", c.name);
        for f in &c.fields {
            let req = if f.required { " required" } else { "" };
            let def = f
                .default
                .as_ref()
                .map(|d| format!(" default {d}"))
                .unwrap_or_default();
            println!("  {}: {}{req}{def}", f.name, f.ty);
        }
    }
}

pub(crate) fn exported(json: bool, path: &Path, bytes: usize) {
    if json {
        println!(
            "{}",
            json!({ "file": path.display().to_string(), "bytes": bytes })
        );
    } else {
        println!("wrote {bytes} bytes to {}", path.display());
    }
}
