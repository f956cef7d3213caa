//! Semantic conflicts: detection, automatic resolution by policy, and the
//! conflict list.
//!
//! automerge merges every concurrent edit; this module decides, as a pure
//! function of a record's change history plus the replicated verdicts and
//! decisions about it, which merges make no business sense and what the
//! record shows meanwhile (`analyze`). Four kinds come from one record's
//! history — [`Kind::StatusRegression`], [`Kind::ConcurrentEdit`],
//! [`Kind::Rejected`], [`Kind::EditOfDeleted`] — and one from a record and its
//! parent ([`Kind::RejectedFk`], computed by the replica).
//!
//! Any two replicas holding the same changes compute the same entries with the
//! same ids (an entry id hashes the kind, the record and the change the entry
//! is about), in any order of arrival. The exact rules are in
//! `docs/conflicts.md`.

mod analyze;
pub(crate) mod mark;

use serde::{Deserialize, Serialize};

use crate::hlc::HlcTime;
pub use crate::schema::{Granularity, Policy, Violation};
use crate::value::{Fields, Value};

pub(crate) use analyze::{Context, Human, Verdict, analyze, change_time, linear};

/// What kind of conflict an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// A change made while the record was at an earlier status, concurrent with
    /// a change that advanced it (Pega's case status conflict).
    StatusRegression,
    /// The same field (or, at record granularity, the same record) changed
    /// concurrently by an authority and a device, or by anyone under
    /// `user_action`.
    ConcurrentEdit,
    /// An authority's validation refused a change (GeneXus RejectedServer).
    Rejected,
    /// The record's parent was rejected or is deleted (GeneXus RejectedFK).
    RejectedFk,
    /// A record deleted on one side and edited concurrently on the other
    /// (OutSystems).
    EditOfDeleted,
}

impl Kind {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::StatusRegression => "status_regression",
            Kind::ConcurrentEdit => "concurrent_edit",
            Kind::Rejected => "rejected",
            Kind::RejectedFk => "rejected_fk",
            Kind::EditOfDeleted => "edit_of_deleted",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Kind::StatusRegression,
            Kind::ConcurrentEdit,
            Kind::Rejected,
            Kind::RejectedFk,
            Kind::EditOfDeleted,
        ]
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| format!("unknown conflict kind `{s}`"))
    }
}

/// Whether an entry still waits for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryState {
    /// Waiting for a person (or, for rejections, for a fix).
    Open,
    /// Decided (see [`Entry::resolved_by`]).
    Resolved,
}

/// Who or what resolved an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResolvedBy {
    /// The collection's policy decided automatically (the effective policy:
    /// server/device policies fall back to last-writer-wins when neither side
    /// is an authority).
    Policy(Policy),
    /// A later change of the record was accepted by an authority (a rejection
    /// lifted by a fix).
    Accepted,
    /// The parent stands again (a RejectedFk entry whose parent was accepted
    /// or restored).
    ParentStands,
    /// A person, with [`Replica::resolve`](crate::Replica::resolve).
    Person {
        /// The decision (`keep_authority`, `keep_device`, `fields`, `custom`,
        /// `reopen`).
        decision: String,
        /// Who resolved (the resolving replica's actor, hex).
        by: String,
        /// When (ms since the epoch, the resolver's clock).
        at: i64,
    },
}

/// Which side of an entry stands in the visible record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Side {
    /// The entry's subject (usually the device's change).
    Subject,
    /// The other side (usually the authority's change, or the delete).
    Other,
}

/// One change an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangeRef {
    /// The automerge change hash (hex).
    pub hash: String,
    /// The actor that made it (hex): the origin peer.
    pub actor: String,
    /// Its HLC time.
    pub time: HlcTime,
    /// Whether that actor is an authority.
    pub authority: bool,
}

/// One entry of the conflict list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// Its id: derived from its kind, record and subject change, the same on
    /// every replica.
    pub id: String,
    /// What kind of conflict.
    pub kind: Kind,
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    pub record: String,
    /// Open or resolved.
    pub state: EntryState,
    /// How it was resolved, once resolved.
    pub resolved_by: Option<ResolvedBy>,
    /// The collection's policy.
    pub policy: Policy,
    /// The queue it is routed to.
    pub queue: String,
    /// The person it is assigned to.
    pub assignee: Option<String>,
    /// The change the entry is about: the device's change (status regression,
    /// concurrent edit), the refused change (rejected), the edit (edit of
    /// deleted), the child's latest change (rejected FK).
    pub subject: ChangeRef,
    /// The changes it conflicts with: the authority's or the advancing change,
    /// the delete.
    pub others: Vec<ChangeRef>,
    /// The fields in conflict.
    pub fields: Vec<String>,
    /// Which side's values the record shows (for open entries, provisionally).
    pub winner: Option<Side>,
    /// What happened, for people (Pega's sync error messages).
    pub message: String,
    /// Error codes and messages (rejections).
    pub violations: Vec<Violation>,
    /// The entry this one follows from (a RejectedFk's parent entry).
    pub linked: Option<String>,
    /// The referenced parent (RejectedFk): collection and id.
    pub parent: Option<(String, String)>,
}

/// An entry with the record's versions side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EntryDetail {
    /// The entry.
    pub entry: Entry,
    /// The record as it was before the subject change (what the device saw).
    pub base: Fields,
    /// The other side's version (the authority's, or the advancing change's).
    pub authority: Fields,
    /// The subject's version (the device's record as it made the change).
    pub device: Fields,
    /// What the record shows now.
    pub visible: Fields,
    /// Per field, the values that differ between the versions.
    pub diff: Vec<FieldDiff>,
}

/// One field's values in each version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FieldDiff {
    /// The field.
    pub field: String,
    /// Before the subject change.
    pub base: Option<Value>,
    /// The other side's value.
    pub authority: Option<Value>,
    /// The subject's value.
    pub device: Option<Value>,
    /// What the record shows.
    pub visible: Option<Value>,
}

/// How a person resolves an entry ([`Replica::resolve`](crate::Replica::resolve)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Choice {
    /// The other side's (the authority's) values for the entry's fields.
    KeepAuthority,
    /// The subject's (the device's) values for the entry's fields; for an edit
    /// of a deleted record, the record comes back with the edit.
    KeepDevice,
    /// Per field, which side's value.
    Fields(std::collections::BTreeMap<String, Side>),
    /// These values (checked against the schema).
    Custom(Fields),
}

/// A resolution: a choice, and optionally a deliberate move of the status back
/// (Pega's "reopen").
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resolution {
    /// Whose values.
    pub choice: Choice,
    /// Move the status to this (earlier) state: an intended act, not a merge.
    pub reopen: Option<String>,
    /// A note kept with the decision.
    pub note: Option<String>,
}

impl Resolution {
    /// Resolve with `choice`.
    pub fn new(choice: Choice) -> Self {
        Self {
            choice,
            reopen: None,
            note: None,
        }
    }

    /// Also move the status back to `state`.
    pub fn reopen(mut self, state: &str) -> Self {
        self.reopen = Some(state.to_owned());
        self
    }

    /// Keep a note with the decision.
    pub fn note(mut self, note: &str) -> Self {
        self.note = Some(note.to_owned());
        self
    }
}

/// Which entries [`Replica::conflicts`](crate::Replica::conflicts) lists (all
/// filters must hold; an unset one holds for every entry).
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct ConflictFilter {
    /// Only this collection.
    pub collection: Option<String>,
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only open (`Some(EntryState::Open)`) or resolved entries.
    pub state: Option<EntryState>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only entries assigned to this person.
    pub assignee: Option<String>,
}

impl ConflictFilter {
    /// Every entry.
    pub fn all() -> Self {
        Self::default()
    }

    /// Open entries only.
    pub fn open() -> Self {
        Self {
            state: Some(EntryState::Open),
            ..Self::default()
        }
    }

    /// Only this collection.
    pub fn collection(mut self, c: &str) -> Self {
        self.collection = Some(c.to_owned());
        self
    }

    /// Only this kind.
    pub fn kind(mut self, k: Kind) -> Self {
        self.kind = Some(k);
        self
    }

    /// Only this queue.
    pub fn queue(mut self, q: &str) -> Self {
        self.queue = Some(q.to_owned());
        self
    }

    /// Only entries assigned to `who`.
    pub fn assignee(mut self, who: &str) -> Self {
        self.assignee = Some(who.to_owned());
        self
    }

    /// Whether `e` passes.
    pub fn matches(&self, e: &Entry) -> bool {
        self.collection.as_ref().is_none_or(|c| *c == e.collection)
            && self.kind.is_none_or(|k| k == e.kind)
            && self.state.is_none_or(|s| s == e.state)
            && self.queue.as_ref().is_none_or(|q| *q == e.queue)
            && self
                .assignee
                .as_ref()
                .is_none_or(|a| e.assignee.as_ref() == Some(a))
    }
}

/// A change of the conflict list, from [`Replica::watch_conflicts`](crate::Replica::watch_conflicts).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConflictEvent {
    /// An entry appeared (open or already resolved by policy).
    New(Entry),
    /// An entry was resolved (or changed state, queue or assignee).
    Updated(Entry),
}

/// An entry's id: 32 hex digits of SHA-256 over its kind, the record and the
/// change (or cause) it is about.
pub(crate) fn entry_id(kind: Kind, collection: &str, record: &str, about: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kind.name().as_bytes());
    h.update([0]);
    h.update(collection.as_bytes());
    h.update([0]);
    h.update(record.as_bytes());
    h.update([0]);
    h.update(about);
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}
