//! Printing results, as text for people or as JSON.
//!
//! Text: times as dates (UTC; in the authority's clock when the store knows
//! it), members by their member id, no Rust debug output; heads and logical
//! clock counters only with `-v`. JSON: every time as an ISO 8601 string
//! beside its milliseconds, HLC times as strings, and no integer beyond
//! 2^53 (JavaScript and jq read them exactly).

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
use fieldsync::{HlcTime, Record, Replica, Written};
use serde_json::{Value as J, json};

/// The largest integer JavaScript reads exactly.
const JS_SAFE: u64 = (1 << 53) - 1;

/// Integers beyond 2^53 become strings (hashes and sums that happen to be
/// numbers; times are already given as strings and milliseconds).
fn js_safe(v: &mut J) {
    match v {
        J::Number(n) => {
            let big = n.as_u64().is_some_and(|x| x > JS_SAFE)
                || n.as_i64().is_some_and(|x| x.unsigned_abs() > JS_SAFE);
            if big {
                *v = J::String(n.to_string());
            }
        }
        J::Array(items) => items.iter_mut().for_each(js_safe),
        J::Object(map) => map.values_mut().for_each(js_safe),
        _ => {}
    }
}

/// Every JSON line of `out` with its large integers made strings.
pub(crate) fn js_safe_lines(out: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(out);
    let mut fixed = Vec::with_capacity(out.len());
    for line in text.lines() {
        match serde_json::from_str::<J>(line) {
            Ok(mut v) => {
                js_safe(&mut v);
                outln!(fixed, "{v}");
            }
            Err(_) => outln!(fixed, "{line}"),
        }
    }
    fixed
}

/// A time for people: `2026-12-03 08:37:07 UTC`.
pub(crate) fn when(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let iso = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", iso.trim_end_matches('Z').replace('T', " "))
}

/// A time for JSON: `2026-12-03T08:37:07.406Z`.
pub(crate) fn iso(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The JSON of one time: `{"<name>": ISO, "<name>_ms": ms}`, plus
/// `"<name>_hlc"` for an HLC time.
pub(crate) fn time_json(
    map: &mut serde_json::Map<String, J>,
    name: &str,
    ms: u64,
    hlc: Option<HlcTime>,
) {
    map.insert(name.to_owned(), J::String(iso(ms)));
    map.insert(format!("{name}_ms"), J::from(ms));
    if let Some(t) = hlc {
        map.insert(format!("{name}_hlc"), J::String(t.to_string()));
    }
}

/// A field's value for people (timestamps as dates).
pub(crate) fn value_text(v: &fieldsync::Value) -> String {
    match v {
        fieldsync::Value::Timestamp(ms) => u64::try_from(*ms).map_or_else(|_| ms.to_string(), when),
        other => other.to_string(),
    }
}

/// A member id for running text (`12D3KooWAbCdEfGh…`), or `this store`.
pub(crate) fn member_text(r: &Replica, actor: &fieldsync::automerge::ActorId) -> String {
    if actor == r.actor() {
        return "this store".into();
    }
    let id =
        fieldsync::member::member_id(actor.to_bytes()).unwrap_or_else(|| actor.to_hex_string());
    fieldsync::member::short_member_id(&id)
}

/// A member id in full.
pub(crate) fn member_id(actor: &fieldsync::automerge::ActorId) -> String {
    fieldsync::member::member_id(actor.to_bytes()).unwrap_or_else(|| actor.to_hex_string())
}

/// How a command prints: JSON or text, verbose or not, and the replica it
/// reads extra context from (corrected times, rejection reasons).
pub(crate) struct View<'a> {
    pub(crate) json: bool,
    pub(crate) verbose: bool,
    pub(crate) replica: &'a Replica,
}

impl View<'_> {
    /// When a record was saved, in the authority's clock when known.
    fn saved_ms(&self, r: &Record) -> u64 {
        self.replica
            .corrected_time(&r.meta.author, r.meta.modified)
            .map_or(r.meta.modified.millis(), |t| t.millis())
    }

    /// Why a record is hidden as rejected, from its entry on this store.
    fn rejection(&self, entry: &str) -> String {
        match self.replica.conflict_entry(entry) {
            Ok(Some(e)) if !e.violations.is_empty() => e
                .violations
                .iter()
                .map(|v| format!("{} ({})", v.message, v.code))
                .collect::<Vec<_>>()
                .join("; "),
            Ok(Some(e)) => e.message,
            _ => "see its conflict entry".into(),
        }
    }

    /// The fields a record shows, or, for a record hidden because its
    /// insert was rejected, the values its author wrote (from its entry).
    fn shown_fields(&self, r: &Record) -> fieldsync::Fields {
        match &r.meta.rejected {
            Some(e) if r.fields.is_empty() => self
                .replica
                .conflict(e)
                .ok()
                .flatten()
                .map(|d| d.subject.fields)
                .unwrap_or_default(),
            _ => r.fields.clone(),
        }
    }

    fn record_json(&self, r: &Record) -> J {
        let mut meta = serde_json::Map::new();
        meta.insert(
            "heads".into(),
            J::Array(
                r.meta
                    .heads
                    .iter()
                    .map(|h| J::String(h.to_string()))
                    .collect(),
            ),
        );
        time_json(
            &mut meta,
            "modified",
            self.saved_ms(r),
            Some(r.meta.modified),
        );
        meta.insert("author".into(), J::String(member_id(&r.meta.author)));
        meta.insert("deleted".into(), J::Bool(r.meta.deleted));
        meta.insert(
            "rejected".into(),
            match &r.meta.rejected {
                Some(e) => json!({ "entry": e, "reasons": self.rejection(e) }),
                None => J::Null,
            },
        );
        meta.insert("unresolved".into(), json!(r.meta.unresolved));
        meta.insert("open_conflicts".into(), json!(r.meta.open_conflicts));
        json!({
            "collection": r.collection,
            "id": r.id,
            "fields": self.shown_fields(r).iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
            "meta": meta,
        })
    }

    pub(crate) fn record(&self, out: &mut Vec<u8>, r: &Record) {
        if self.json {
            outln!(out, "{}", self.record_json(r));
            return;
        }
        let deleted = if r.meta.deleted { "  (deleted)" } else { "" };
        outln!(out, "{}/{}{deleted}", r.collection, r.id);
        if let Some(e) = &r.meta.rejected {
            outln!(
                out,
                "  -- rejected: {} (hidden from lists; the values below are what was refused; `fieldsync conflicts show {}`)",
                self.rejection(e),
                &e[..e.len().min(8)]
            );
        }
        if !r.meta.unresolved.is_empty() {
            outln!(
                out,
                "  -- waiting for: {} (the record it names has not arrived yet)",
                r.meta.unresolved.join(", ")
            );
        }
        if r.meta.open_conflicts > 0 {
            outln!(
                out,
                "  -- open conflicts: {} (`fieldsync conflicts list --open`)",
                r.meta.open_conflicts
            );
        }
        for (k, v) in &self.shown_fields(r) {
            outln!(out, "  {k}: {}", value_text(v));
        }
        outln!(
            out,
            "  -- saved {} by {}",
            when(self.saved_ms(r)),
            member_text(self.replica, &r.meta.author)
        );
        if self.verbose {
            let heads: Vec<String> = r.meta.heads.iter().map(|h| h.to_string()).collect();
            outln!(
                out,
                "  -- hlc {} heads {}",
                r.meta.modified,
                heads.join(",")
            );
        }
    }

    pub(crate) fn records(&self, out: &mut Vec<u8>, rs: &[Record]) {
        if self.json {
            outln!(
                out,
                "{}",
                J::Array(rs.iter().map(|r| self.record_json(r)).collect())
            );
            return;
        }
        for r in rs {
            let fields: Vec<String> = self
                .shown_fields(r)
                .iter()
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect();
            let mut notes = Vec::new();
            if r.meta.deleted {
                notes.push("deleted".to_owned());
            }
            if let Some(e) = &r.meta.rejected {
                notes.push(format!("rejected: {}", self.rejection(e)));
            }
            if r.meta.open_conflicts > 0 {
                notes.push(format!("{} open conflict(s)", r.meta.open_conflicts));
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            outln!(out, "{}{notes}  {}", r.id, fields.join("  "));
        }
        outln!(out, "{} record(s)", rs.len());
    }

    pub(crate) fn written(&self, out: &mut Vec<u8>, what: &str, w: &Written) {
        if self.json {
            let mut m = serde_json::Map::new();
            m.insert("result".into(), J::String(what.into()));
            m.insert("collection".into(), J::String(w.collection.clone()));
            m.insert("id".into(), J::String(w.id.clone()));
            m.insert(
                "heads".into(),
                J::Array(w.heads.iter().map(|h| J::String(h.to_string())).collect()),
            );
            time_json(&mut m, "time", w.time.millis(), Some(w.time));
            outln!(out, "{}", J::Object(m));
        } else {
            outln!(out, "{what} {}/{}", w.collection, w.id);
        }
    }
}

pub(crate) fn init(out: &mut Vec<u8>, json: bool, dir: &Path, r: &Replica) {
    let collections: Vec<String> = r.schema().collections().map(|c| c.name.clone()).collect();
    let id = member_id(r.actor());
    if json {
        outln!(
            out,
            "{}",
            json!({ "store": dir.display().to_string(), "member": id, "collections": collections })
        );
    } else {
        outln!(out, "store ready at {}", dir.display());
        outln!(out, "member id {id}");
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
                    "granularity": c.settings.granularity.name(),
                    "queue": c.queue_name(),
                    "block_sync_on_conflict": c.settings.block_sync_on_conflict,
                    "status": c.settings.lifecycle.as_ref().map(|l| json!({
                        "field": l.field, "states": l.states, "transitions": l.transitions,
                    })),
                    "rules": c.settings.rules.iter().map(|r| json!({
                        "field": r.field, "check": r.check.to_string(), "code": r.code, "message": r.message,
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
        let gate = if c.settings.block_sync_on_conflict {
            ", sync held back while it has open conflicts"
        } else {
            ""
        };
        outln!(
            out,
            "{}  (policy {}, {} granularity, queue {}{gate})",
            c.name,
            c.settings.policy,
            c.settings.granularity,
            c.queue_name()
        );
        if let Some(l) = &c.settings.lifecycle {
            outln!(out, "  lifecycle of {}: {}", l.field, l.states.join(" < "));
        }
        for r in &c.settings.rules {
            outln!(
                out,
                "  rule: {} {} (error {}: {})",
                r.field,
                r.check,
                r.code,
                r.message
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dates_and_json_stays_exact() {
        assert_eq!(when(1_796_292_722_406), "2026-12-03 10:12:02 UTC");
        assert_eq!(iso(1_796_292_722_406), "2026-12-03T10:12:02.406Z");
        let fixed =
            js_safe_lines(b"{\"a\":117721839855599616,\"b\":[9007199254740993],\"c\":12}\n");
        let v: J = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(v["a"], "117721839855599616");
        assert_eq!(v["b"][0], "9007199254740993");
        assert_eq!(v["c"], 12);
    }
}
