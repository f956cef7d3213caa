//! Printing results, as text or JSON.

use std::path::Path;

/// `println!` into the command's output buffer (a `Vec<u8>` cannot fail to grow).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}
pub(crate) use outln;

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
            "rejected": r.meta.rejected,
            "unresolved": r.meta.unresolved,
            "open_conflicts": r.meta.open_conflicts,
        },
    })
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

pub(crate) fn record(out: &mut Vec<u8>, json: bool, r: &Record) {
    if json {
        outln!(out, "{}", record_json(r));
        return;
    }
    let deleted = if r.meta.deleted { "  (deleted)" } else { "" };
    let rejected = match &r.meta.rejected {
        Some(e) => format!("  (rejected: see conflict {})", short(e)),
        None => String::new(),
    };
    outln!(out, "{}/{}{deleted}{rejected}", r.collection, r.id);
    if !r.meta.unresolved.is_empty() {
        outln!(out, "  -- waiting for: {}", r.meta.unresolved.join(", "));
    }
    if r.meta.open_conflicts > 0 {
        outln!(
            out,
            "  -- open conflicts: {} (fieldsync conflicts list)",
            r.meta.open_conflicts
        );
    }
    for (k, v) in &r.fields {
        outln!(out, "  {k}: {v}");
    }
    let heads: Vec<String> = r
        .meta
        .heads
        .iter()
        .map(|h| short(&h.to_string()).to_owned())
        .collect();
    let author = r.meta.author.to_hex_string();
    outln!(
        out,
        "  -- modified {} by {} heads {}",
        r.meta.modified,
        short(&author),
        heads.join(",")
    );
}

pub(crate) fn records(out: &mut Vec<u8>, json: bool, rs: &[Record]) {
    if json {
        outln!(out, "{}", J::Array(rs.iter().map(record_json).collect()));
        return;
    }
    for r in rs {
        let fields: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let deleted = if r.meta.deleted { " (deleted)" } else { "" };
        outln!(out, "{}{deleted}  {}", r.id, fields.join("  "));
    }
    outln!(out, "{} record(s)", rs.len());
}

pub(crate) fn written(out: &mut Vec<u8>, json: bool, what: &str, w: &Written) {
    if json {
        outln!(
            out,
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
        outln!(out, "{what} {}/{}", w.collection, w.id);
    }
}

pub(crate) fn init(out: &mut Vec<u8>, json: bool, dir: &Path, r: &Replica) {
    let collections: Vec<String> = r.schema().collections().map(|c| c.name.clone()).collect();
    if json {
        outln!(
            out,
            "{}",
            json!({ "store": dir.display().to_string(), "actor": r.actor().to_hex_string(), "collections": collections })
        );
    } else {
        outln!(
            out,
            "store ready at {} (actor {})",
            dir.display(),
            r.actor().to_hex_string()
        );
        outln!(
            out,
            "collections: {}",
            if collections.is_empty() {
                "none".into()
            } else {
                collections.join(", ")
            }
        );
    }
}

pub(crate) fn schema(out: &mut Vec<u8>, json: bool, s: &Schema) {
    if json {
        let cs: Vec<J> = s
            .collections()
            .map(|c| {
                json!({
                    "name": c.name,
                    "policy": c.settings.policy.name(),
                    "granularity": format!("{:?}", c.settings.granularity).to_lowercase(),
                    "queue": c.queue_name(),
                    "block_sync_on_conflict": c.settings.block_sync_on_conflict,
                    "status": c.settings.lifecycle.as_ref().map(|l| json!({
                        "field": l.field, "states": l.states, "transitions": l.transitions,
                    })),
                    "rules": c.settings.rules.iter().map(|r| json!({
                        "field": r.field, "check": format!("{:?}", r.check), "code": r.code, "message": r.message,
                    })).collect::<Vec<_>>(),
                    "fields": c.fields.iter().map(|f| json!({
                        "name": f.name,
                        "type": f.ty.to_string(),
                        "required": f.required,
                        "default": f.default.as_ref().map(|d| d.to_json()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!(out, "{}", J::Array(cs));
        return;
    }
    for c in s.collections() {
        outln!(
            out,
            "{}  (policy {}, {:?} granularity, queue {})",
            c.name,
            c.settings.policy,
            c.settings.granularity,
            c.queue_name()
        );
        if let Some(l) = &c.settings.lifecycle {
            outln!(out, "  status {}: {}", l.field, l.states.join(" < "));
        }
        for r in &c.settings.rules {
            outln!(out, "  rule {}: {:?} ({})", r.field, r.check, r.code);
        }
        for f in &c.fields {
            let req = if f.required { " required" } else { "" };
            let def = f
                .default
                .as_ref()
                .map(|d| format!(" default {d}"))
                .unwrap_or_default();
            outln!(out, "  {}: {}{req}{def}", f.name, f.ty);
        }
    }
}

pub(crate) fn exported(out: &mut Vec<u8>, json: bool, path: &Path, bytes: usize) {
    if json {
        outln!(
            out,
            "{}",
            json!({ "file": path.display().to_string(), "bytes": bytes })
        );
    } else {
        outln!(out, "wrote {bytes} bytes to {}", path.display());
    }
}
