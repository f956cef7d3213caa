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

pub use analyze::decision_text;
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

impl ChangeRef {
    /// The author's member id (its peer id, `12D3KooW…`).
    pub fn member(&self) -> String {
        crate::member::member_id_of_hex(&self.actor)
    }
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

impl Entry {
    /// Which side is the authority's, when exactly one side is (for a
    /// rejection, the refusing authority's: [`Side::Other`]).
    pub fn authority_side(&self) -> Option<Side> {
        if matches!(self.kind, Kind::Rejected | Kind::RejectedFk) {
            return Some(Side::Other);
        }
        let other = self.others.iter().any(|c| c.authority);
        match (self.subject.authority, other) {
            (true, false) => Some(Side::Subject),
            (false, true) => Some(Side::Other),
            _ => None,
        }
    }

    /// The member ids of a side's authors (one for the subject; for the
    /// other side, each distinct author in order).
    pub fn side_members(&self, side: Side) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let refs: Vec<&ChangeRef> = match side {
            Side::Subject => vec![&self.subject],
            Side::Other => self.others.iter().collect(),
        };
        for r in refs {
            let m = r.member();
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// A side's name, the same on every peer: `authority` or `device` when
    /// exactly one side is an authority; otherwise its authors' member ids
    /// (comma-separated).
    pub fn side_name(&self, side: Side) -> String {
        match self.authority_side() {
            Some(a) if a == side => "authority".to_owned(),
            Some(_) => "device".to_owned(),
            None => self.side_members(side).join(","),
        }
    }

    /// The side a person names: `authority` or `device` when one side is an
    /// authority, otherwise the member id of one of its authors (or a prefix
    /// of it of at least 12 characters that only one side's authors have).
    pub fn side_named(&self, name: &str) -> Option<Side> {
        let name = name.trim();
        if self.authority_side().is_some() {
            return match name {
                "authority" => self.authority_side(),
                "device" => self.authority_side().map(|a| match a {
                    Side::Subject => Side::Other,
                    Side::Other => Side::Subject,
                }),
                _ => None,
            };
        }
        let matches = |side: Side| {
            self.side_members(side)
                .iter()
                .any(|m| m == name || (name.len() >= 12 && m.starts_with(name)))
        };
        match (matches(Side::Subject), matches(Side::Other)) {
            (true, false) => Some(Side::Subject),
            (false, true) => Some(Side::Other),
            _ => None,
        }
    }
}

/// An entry with the record's versions side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EntryDetail {
    /// The entry.
    pub entry: Entry,
    /// The record as it was before the subject change (what its author saw).
    pub base: Fields,
    /// The subject's version: the record as the subject change left it.
    pub subject: SideVersion,
    /// The other side's version: the record as the changes it conflicts with
    /// left it.
    pub other: SideVersion,
    /// What the record shows now.
    pub visible: Fields,
    /// Whether the record shows as deleted now.
    pub visible_deleted: bool,
    /// Per field, the values that differ between the versions.
    pub diff: Vec<FieldDiff>,
}

impl EntryDetail {
    /// The version of the side with this name (see [`Entry::side_named`]).
    pub fn version(&self, name: &str) -> Option<&SideVersion> {
        match self.entry.side_named(name)? {
            Side::Subject => Some(&self.subject),
            Side::Other => Some(&self.other),
        }
    }

    /// The version of `side`.
    pub fn side(&self, side: Side) -> &SideVersion {
        match side {
            Side::Subject => &self.subject,
            Side::Other => &self.other,
        }
    }
}

/// One side of an entry, as a version of the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SideVersion {
    /// The side's name (`authority`, `device`, or its authors' member ids;
    /// see [`Entry::side_name`]).
    pub name: String,
    /// Its authors' member ids.
    pub members: Vec<String>,
    /// Whether an authority made it.
    pub authority: bool,
    /// The record's fields as this side left them.
    pub fields: Fields,
    /// Whether this side deleted the record.
    pub deleted: bool,
}

/// One field's values in each version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FieldDiff {
    /// The field.
    pub field: String,
    /// Before the subject change.
    pub base: Option<Value>,
    /// The subject's value.
    pub subject: Option<Value>,
    /// The other side's value.
    pub other: Option<Value>,
    /// What the record shows.
    pub visible: Option<Value>,
}

/// How a person resolves an entry ([`Replica::resolve`](crate::Replica::resolve)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Choice {
    /// The authority's side: its values of the entry's fields, and its delete
    /// or its edit for an edit of a deleted record. Only when exactly one
    /// side is an authority ([`Entry::authority_side`]).
    KeepAuthority,
    /// The device's side (the side that is not the authority's); only when
    /// exactly one side is an authority.
    KeepDevice,
    /// The side with this name ([`Entry::side_name`]: `authority`, `device`,
    /// or, between equals, a member id of one of its authors).
    Keep(String),
    /// This side.
    KeepSide(Side),
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
