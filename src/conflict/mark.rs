//! The mark fieldsync puts in the message of every change it makes: what kind
//! of write it is, which fields it assigned and which it edited in place
//! (counters, text, lists), and the status before and after. Conflict
//! detection reads marks from change metadata, so it never decodes operations.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The prefix of a marked change's message (the format's version).
const PREFIX: &str = "fs1";

/// A mark longer than this is not read (a peer's change is untrusted input).
const MAX_MARK: usize = 16 << 10;

/// What kind of write a change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WriteKind {
    #[serde(rename = "i")]
    Insert,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    /// A person's resolution of a conflict entry (never itself in conflict).
    #[serde(rename = "r")]
    Resolve,
}

/// A change's mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    #[serde(rename = "k")]
    pub(crate) kind: WriteKind,
    /// Fields given a new value as a whole.
    #[serde(rename = "a", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(crate) assigned: BTreeSet<String>,
    /// Fields edited in place: edits that commute (counters, text, lists).
    #[serde(rename = "m", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(crate) merged: BTreeSet<String>,
    /// The status when the change was made.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(crate) base_status: Option<String>,
    /// The status it wrote.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub(crate) new_status: Option<String>,
    /// For a resolution: the entry it resolves.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub(crate) entry: Option<String>,
    /// The author's pending-event number for this change (its authorities
    /// acknowledge events by these numbers).
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<u64>,
    /// For a compensating change: the event it cancels.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub(crate) cancels: Option<u64>,
    /// For a resolution: the decision (`keep_authority`, `keep_device`,
    /// `keep_side`, `fields`, `custom`, with `reopen+` before it for a
    /// reopen). The resolution change carries it, so the record's data and
    /// the decision arrive together (the `_entry` record adds the note,
    /// queue and assignee).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub(crate) decision: Option<String>,
}

impl Mark {
    pub(crate) fn new(kind: WriteKind) -> Self {
        Self {
            kind,
            assigned: BTreeSet::new(),
            merged: BTreeSet::new(),
            base_status: None,
            new_status: None,
            entry: None,
            event: None,
            cancels: None,
            decision: None,
        }
    }

    /// The message text.
    pub(crate) fn encode(&self) -> String {
        // Serializing plain strings and sets cannot fail.
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(PREFIX.as_bytes());
        if serde_json::to_writer(&mut out, self).is_err() {
            out.truncate(PREFIX.len());
        }
        // JSON written by serde_json after an ASCII prefix is UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Read a change's message; `None` for a change without a (valid) mark,
    /// such as one made by another automerge program.
    pub(crate) fn parse(message: Option<&str>) -> Option<Self> {
        let m = message?;
        if m.len() > MAX_MARK {
            return None;
        }
        serde_json::from_str(m.strip_prefix(PREFIX)?).ok()
    }

    /// Every field the change touched.
    pub(crate) fn touched(&self) -> impl Iterator<Item = &String> {
        self.assigned.union(&self.merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_garbage_is_no_mark() {
        let mut m = Mark::new(WriteKind::Update);
        m.assigned.insert("amount".into());
        m.merged.insert("notes".into());
        m.base_status = Some("pending approval".into());
        assert_eq!(Mark::parse(Some(&m.encode())), Some(m));
        assert_eq!(Mark::parse(Some("fs1{not json")), None);
        assert_eq!(Mark::parse(Some("hello")), None);
        assert_eq!(Mark::parse(None), None);
        let huge = format!("fs1{{\"k\":\"u\",\"a\":[\"{}\"]}}", "x".repeat(MAX_MARK));
        assert_eq!(Mark::parse(Some(&huge)), None);
    }
}
