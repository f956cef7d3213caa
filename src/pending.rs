//! Pending events: every local insert, update and delete, with its status
//! until an authority (or, without one, every remembered member) has it.
//!
//! This module is the pure part: the event and status types, the ranges an
//! authority acknowledges, and [`derive`], which computes an event's status
//! from what the replica knows (acknowledgements, verdicts held by an
//! authority, local conflict entries, which peers hold it). The replica
//! stores events under `e:` keys in the same batch as the change they
//! describe and keeps their statuses current (`src/replica/pending.rs`); the
//! rules are in `docs/pending.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hlc::HlcTime;
pub use crate::schema::Violation;

/// What a local write did to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// Created the record.
    Insert,
    /// Changed some of its fields (also a person's resolution of a conflict).
    Update,
    /// Deleted it.
    Delete,
}

impl EventKind {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Insert => "insert",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Where a pending event stands (GeneXus's `EventStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventStatus {
    /// No other peer is known to hold the change yet.
    Pending,
    /// It left this device (a peer holds it); an authority's verdict (or,
    /// without authorities, the other members) is awaited.
    Processing,
    /// An authority holds it and accepted it (without authorities: every
    /// remembered member holds it). Confirmed events leave the list.
    Confirmed,
    /// An authority's rules refused it; the errors say why.
    Rejected,
    /// Its record's parent was rejected (or deleted); linked to the parent's
    /// event when that is one of this device's.
    RejectedFk,
    /// The user cancelled it before confirmation; a compensating change
    /// restored what it changed.
    Cancelled,
}

impl EventStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [EventStatus; 6] = [
        EventStatus::Pending,
        EventStatus::Processing,
        EventStatus::Confirmed,
        EventStatus::Rejected,
        EventStatus::RejectedFk,
        EventStatus::Cancelled,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Processing => "processing",
            EventStatus::Confirmed => "confirmed",
            EventStatus::Rejected => "rejected",
            EventStatus::RejectedFk => "rejected_fk",
            EventStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the user may still cancel an event in this status.
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            EventStatus::Pending
                | EventStatus::Processing
                | EventStatus::Rejected
                | EventStatus::RejectedFk
        )
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for EventStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventStatus::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown event status `{s}` (one of: {})",
                    EventStatus::ALL.map(EventStatus::name).join(", ")
                )
            })
    }
}

/// One local write and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingEvent {
    /// Its id: this replica's event number (increasing, never reused).
    pub id: u64,
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    pub record: String,
    /// What the write did.
    pub kind: EventKind,
    /// The automerge change it made (hex hash).
    pub change: String,
    /// When (the change's HLC time).
    pub time: HlcTime,
    /// Where it stands.
    pub status: EventStatus,
    /// Error codes and messages (rejected events).
    pub errors: Vec<Violation>,
    /// For a rejected_fk event: the parent record.
    pub parent: Option<(String, String)>,
    /// For a rejected_fk event: the parent's event, when it is one of this
    /// device's (GeneXus links the invoice's event to the customer's).
    pub linked: Option<u64>,
    /// Who decided its status: the authority (actor hex) whose verdict or
    /// acknowledgement it is, if one.
    pub decided_by: Option<String>,
}

/// Which events [`Replica::pending`](crate::Replica::pending) lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingFilter {
    /// Only this status.
    pub status: Option<EventStatus>,
    /// Only this collection.
    pub collection: Option<String>,
    /// Only this record (with `collection`).
    pub record: Option<String>,
}

impl PendingFilter {
    /// Every event still listed.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only events in `status`.
    pub fn status(mut self, status: EventStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only events of `collection`.
    pub fn collection(mut self, collection: &str) -> Self {
        self.collection = Some(collection.to_owned());
        self
    }

    /// Only events of one record.
    pub fn record(mut self, collection: &str, id: &str) -> Self {
        self.collection = Some(collection.to_owned());
        self.record = Some(id.to_owned());
        self
    }

    pub(crate) fn matches(&self, e: &PendingEvent) -> bool {
        self.status.is_none_or(|s| s == e.status)
            && self.collection.as_ref().is_none_or(|c| *c == e.collection)
            && self.record.as_ref().is_none_or(|r| *r == e.record)
    }
}

/// A status change, published to [`Replica::watch_pending`](crate::Replica::watch_pending)
/// subscribers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StatusChange {
    /// The event with its new status (and errors, links).
    pub event: PendingEvent,
    /// Its status before (`None` for a new event).
    pub from: Option<EventStatus>,
}

/// A collection whose local changes the sync gate holds back (see
/// [`Replica::sync_gate`](crate::Replica::sync_gate)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Blocked {
    /// The collection (it has `block_sync_on_conflict`).
    pub collection: String,
    /// Its open conflict entries on this replica: resolving them all opens
    /// the gate.
    pub conflicts: Vec<String>,
}

/// Sets of event numbers as sorted, disjoint, inclusive ranges; written as
/// `1-40,42,45-50` in an authority's acknowledgement record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Parse the written form; malformed parts are skipped (a peer's record is
    /// untrusted input, and a skipped part only leaves events unconfirmed).
    pub(crate) fn parse(s: &str) -> Self {
        let mut r = Ranges::default();
        for part in s.split(',').filter(|p| !p.is_empty()).take(1 << 16) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<u64>(), b.parse::<u64>()),
                None => (part.parse::<u64>(), part.parse::<u64>()),
            };
            if let (Ok(a), Ok(b)) = (a, b)
                && a <= b
            {
                r.insert_range(a, b);
            }
        }
        r
    }

    pub(crate) fn contains(&self, n: u64) -> bool {
        let i = self.0.partition_point(|&(_, b)| b < n);
        self.0.get(i).is_some_and(|&(a, _)| a <= n)
    }

    pub(crate) fn insert(&mut self, n: u64) {
        self.insert_range(n, n);
    }

    fn insert_range(&mut self, a: u64, b: u64) {
        // Ranges that overlap or touch [a, b] merge with it.
        let start = self.0.partition_point(|&(_, y)| y.saturating_add(1) < a);
        let mut end = start;
        let (mut lo, mut hi) = (a, b);
        while end < self.0.len() && self.0[end].0 <= b.saturating_add(1) {
            lo = lo.min(self.0[end].0);
            hi = hi.max(self.0[end].1);
            end += 1;
        }
        self.0.splice(start..end, [(lo, hi)]);
    }
}

impl std::fmt::Display for Ranges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// An authority's outcome for one event it refused, kept in its
/// acknowledgement record (JSON under `held`) so a device learns the outcome
/// in the same change that acknowledges the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    /// `rejected` or `rejected_fk`.
    #[serde(rename = "s")]
    pub(crate) status: EventStatus,
    #[serde(rename = "c")]
    pub(crate) collection: String,
    #[serde(rename = "r")]
    pub(crate) record: String,
    /// The change (hex).
    #[serde(rename = "h")]
    pub(crate) change: String,
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) violations: Vec<(String, String, String)>,
    /// The parent (rejected_fk).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<(String, String)>,
}

impl Held {
    pub(crate) fn errors(&self) -> Vec<Violation> {
        self.violations
            .iter()
            .map(|(code, message, field)| {
                let v = Violation::new(code, message);
                if field.is_empty() { v } else { v.on(field) }
            })
            .collect()
    }
}

/// What one authority's acknowledgement record says to this device.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Ack {
    /// The authority (actor hex).
    pub(crate) by: String,
    /// The events it holds and has judged.
    pub(crate) seen: Ranges,
    /// The ones it refuses or holds, by event number.
    pub(crate) held: BTreeMap<u64, Held>,
    /// Whether some outcome the authority lists for this device is not here
    /// yet (its outcome records travel apart from the acknowledgement; until
    /// they are all in, an acknowledged event without one is not confirmed).
    pub(crate) incomplete: bool,
}

/// An acknowledgement record's `held` field: a JSON object (at most 1 MiB is
/// read; a malformed one counts as empty).
pub(crate) fn parse_held(s: &str) -> BTreeMap<u64, Held> {
    if s.len() > 1 << 20 {
        return BTreeMap::new();
    }
    serde_json::from_str::<BTreeMap<String, Held>>(s)
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect()
        })
        .unwrap_or_default()
}

/// The written form of `held`.
pub(crate) fn format_held(held: &BTreeMap<u64, Held>) -> String {
    let m: BTreeMap<String, &Held> = held.iter().map(|(k, v)| (k.to_string(), v)).collect();
    serde_json::to_string(&m).unwrap_or_default()
}

/// What the device itself sees about an event's record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Local {
    /// An open rejection entry whose refused change is this event's.
    pub(crate) rejected: Option<(Vec<Violation>, String)>,
    /// An open RejectedFk entry on the record: its parent.
    pub(crate) rejected_fk: Option<(String, String)>,
    /// The record was purged here (deleted and purged everywhere before this
    /// change reached an authority or every member): the change can never
    /// be applied.
    pub(crate) purged: bool,
    /// This replica knows its rights, and they do not let it write the
    /// record as it stands (see `docs/security.md`): with no authority's
    /// decision, the event is refused here.
    pub(crate) forbidden: bool,
}

/// Everything [`derive`] weighs, besides the event.
pub(crate) struct Knowledge<'a> {
    /// Whether the group has authorities (their acknowledgements decide).
    pub(crate) authorities: bool,
    /// The acknowledgement records addressed to this device, one per authority.
    pub(crate) acks: &'a [Ack],
    /// Without authorities: the local time up to which each confirmer (a
    /// remembered member, or a remembered peer if there are no members) is
    /// known to hold everything this replica held (`None`: never synced).
    pub(crate) confirmers: &'a [Option<HlcTime>],
    /// The latest such time over every remembered peer (any peer holding the
    /// change makes it `processing`).
    pub(crate) delivered_until: Option<HlcTime>,
}

/// What [`derive`] finds: status, errors, parent, and who decided.
pub(crate) type Derived = (
    EventStatus,
    Vec<Violation>,
    Option<(String, String)>,
    Option<String>,
);

/// An event's status, errors and parent, from what the replica knows
/// (cancelled events stay cancelled; the caller links rejected_fk events to
/// their parent's event).
pub(crate) fn derive(e: &PendingEvent, local: &Local, k: &Knowledge<'_>) -> Derived {
    if e.status == EventStatus::Cancelled {
        return (
            EventStatus::Cancelled,
            Vec::new(),
            None,
            e.decided_by.clone(),
        );
    }
    if k.authorities {
        // An authority that has judged it decides; a refusal by any wins.
        let mut seen_by = None;
        let mut waiting = None;
        for a in k.acks {
            if let Some(h) = a.held.get(&e.id).filter(|h| h.change == e.change) {
                let parent = (h.status == EventStatus::RejectedFk)
                    .then(|| h.parent.clone())
                    .flatten();
                return (h.status, h.errors(), parent, Some(a.by.clone()));
            }
            if seen_by.is_none() && a.seen.contains(e.id) {
                if a.incomplete {
                    waiting = Some(a.by.clone());
                } else {
                    seen_by = Some(a.by.clone());
                }
            }
        }
        if let Some(by) = seen_by {
            return (EventStatus::Confirmed, Vec::new(), None, Some(by));
        }
        if let Some(by) = waiting {
            // Acknowledged, but an outcome the authority lists for this
            // device has not arrived yet: it may be this event's.
            return (EventStatus::Processing, Vec::new(), None, Some(by));
        }
    }
    if local.purged {
        return (
            EventStatus::Rejected,
            vec![Violation::new(
                "purged",
                "the record was deleted and purged on every peer before this change reached them; the change cannot be applied",
            )],
            None,
            None,
        );
    }
    if local.forbidden {
        return (
            EventStatus::Rejected,
            vec![Violation::new(
                "forbidden",
                "this member's role does not let it write this record (learned after the write); peers refuse it",
            )],
            None,
            None,
        );
    }
    if let Some((errors, by)) = &local.rejected {
        return (
            EventStatus::Rejected,
            errors.clone(),
            None,
            Some(by.clone()),
        );
    }
    if let Some(parent) = &local.rejected_fk {
        return (
            EventStatus::RejectedFk,
            Vec::new(),
            Some(parent.clone()),
            None,
        );
    }
    if !k.authorities
        && !k.confirmers.is_empty()
        && k.confirmers.iter().all(|t| t.is_some_and(|t| t >= e.time))
    {
        return (EventStatus::Confirmed, Vec::new(), None, None);
    }
    if k.delivered_until.is_some_and(|t| t >= e.time) {
        return (EventStatus::Processing, Vec::new(), None, None);
    }
    (EventStatus::Pending, Vec::new(), None, None)
}

/// An event for unit tests: a pending insert of `c/r` at time `t`.
#[cfg(test)]
pub(crate) fn test_event(id: u64, t: u64) -> PendingEvent {
    PendingEvent {
        id,
        collection: "c".into(),
        record: "r".into(),
        kind: EventKind::Insert,
        change: "ab".into(),
        time: HlcTime::from_u64(t),
        status: EventStatus::Pending,
        errors: Vec::new(),
        parent: None,
        linked: None,
        decided_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_round_trip() {
        let mut r = Ranges::default();
        for n in [5, 1, 2, 3, 9, 4, 11, 10] {
            r.insert(n);
        }
        assert_eq!(r.to_string(), "1-5,9-11");
        assert!(r.contains(4) && r.contains(9) && !r.contains(6) && !r.contains(12));
        assert_eq!(Ranges::parse(&r.to_string()), r);
        r.insert(7);
        r.insert(8);
        r.insert(6);
        assert_eq!(r.to_string(), "1-11");
        // Untrusted input: junk is skipped, never a panic.
        let j = Ranges::parse("3-1,x,7,,-,18446744073709551615,2-4");
        assert_eq!(j.to_string(), "2-4,7,18446744073709551615");
    }

    fn event(id: u64, t: u64) -> PendingEvent {
        test_event(id, t)
    }

    #[test]
    fn statuses_follow_what_is_known() {
        let e = event(3, 100);
        let none = Local::default();
        fn k<'a>(
            acks: &'a [Ack],
            confirmers: &'a [Option<HlcTime>],
            delivered: Option<HlcTime>,
        ) -> Knowledge<'a> {
            Knowledge {
                authorities: true,
                acks,
                confirmers,
                delivered_until: delivered,
            }
        }
        assert_eq!(
            derive(&e, &none, &k(&[], &[], None)).0,
            EventStatus::Pending
        );
        let t = |x| Some(HlcTime::from_u64(x));
        assert_eq!(
            derive(&e, &none, &k(&[], &[], t(99))).0,
            EventStatus::Pending
        );
        assert_eq!(
            derive(&e, &none, &k(&[], &[], t(100))).0,
            EventStatus::Processing
        );
        let mut ack = Ack {
            by: "a1".into(),
            seen: Ranges::parse("1-5"),
            ..Ack::default()
        };
        assert_eq!(
            derive(&e, &none, &k(std::slice::from_ref(&ack), &[], None)).0,
            EventStatus::Confirmed
        );
        // Acknowledged while some outcome the authority lists has not
        // arrived: not confirmed yet (it may be this event's).
        let waiting = Ack {
            incomplete: true,
            ..ack.clone()
        };
        let (s, _, _, by) = derive(&e, &none, &k(std::slice::from_ref(&waiting), &[], None));
        assert_eq!(s, EventStatus::Processing);
        assert_eq!(by.as_deref(), Some("a1"));
        ack.held.insert(
            3,
            Held {
                status: EventStatus::Rejected,
                collection: "c".into(),
                record: "r".into(),
                change: "ab".into(),
                violations: vec![("no_tax".into(), "tax id missing".into(), "tax".into())],
                parent: None,
            },
        );
        let (s, errors, _, by) = derive(&e, &none, &k(std::slice::from_ref(&ack), &[], None));
        assert_eq!(s, EventStatus::Rejected);
        assert_eq!(errors[0].code, "no_tax");
        assert_eq!(by.as_deref(), Some("a1"));
        // Without authorities, every confirmer must hold it.
        let k2 = |c| Knowledge {
            authorities: false,
            acks: &[],
            confirmers: c,
            delivered_until: t(200),
        };
        let both = [t(150), t(100)];
        let one = [t(150), None];
        assert_eq!(derive(&e, &none, &k2(&both)).0, EventStatus::Confirmed);
        assert_eq!(derive(&e, &none, &k2(&one)).0, EventStatus::Processing);
        assert_eq!(derive(&e, &none, &k2(&[])).0, EventStatus::Processing);
        let mut c = e.clone();
        c.status = EventStatus::Cancelled;
        assert_eq!(derive(&c, &none, &k2(&both)).0, EventStatus::Cancelled);
        // Rights this replica knows refuse its own write, unless an
        // authority decided it.
        let forbidden = Local {
            forbidden: true,
            ..Local::default()
        };
        let (s, errors, _, _) = derive(&e, &forbidden, &k(&[], &[], t(100)));
        assert_eq!(
            (s, errors[0].code.as_str()),
            (EventStatus::Rejected, "forbidden")
        );
        ack.held.clear();
        assert_eq!(
            derive(&e, &forbidden, &k(std::slice::from_ref(&ack), &[], None)).0,
            EventStatus::Confirmed
        );
    }
}
