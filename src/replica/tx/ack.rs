//! The acknowledgement step of a commit, on an authority: for every pending
//! event of a device that this transaction received (each change fieldsync
//! makes carries its author's event number in its mark), record in the
//! `_ack` record for that device that this authority holds and has judged it,
//! and whether it refuses it (rejected, or rejected_fk when the record's
//! parent is refused). The outcome travels in the same change as the
//! acknowledgement, so a device never sees one without the other.
//!
//! Refusals are checked again whenever the entries that caused them change
//! (a fix lifts a rejection, a parent stands again), so a lifted refusal
//! leaves the record and the device's event becomes confirmed.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ActorId;

use super::Tx;
use crate::conflict::mark::Mark;
use crate::conflict::{ConflictEvent, Entry, EntryState, Kind, ResolvedBy, Side};
use crate::error::Result;
use crate::pending::{EventStatus, Held, Ranges, format_held, parse_held};
use crate::replica::tx::evaluate::decode_entry;
use crate::replica::watch::ChangeKind;
use crate::schema::ACKS;
use crate::store::keys;
use crate::value::Value;

/// The id of authority `a`'s acknowledgement record for device `origin`.
pub(crate) fn ack_id(a: &ActorId, origin: &ActorId) -> String {
    format!("{}.{}", a.to_hex_string(), origin.to_hex_string())
}

/// A device change this transaction brought in: its event number, hash, and
/// the staged record it belongs to.
struct Received {
    n: u64,
    change: String,
    staged: usize,
}

fn actor_from_hex(hex: &str) -> Option<ActorId> {
    crate::replica::members::actor_of_member(hex)
}

impl Tx<'_> {
    /// The entries of a record as this transaction leaves them.
    fn current_entries(&self, collection: &str, id: &str) -> Result<Vec<Entry>> {
        if let Some(&i) = self.index.get(&(collection.to_owned(), id.to_owned()))
            && self.staged[i].dirty
        {
            return Ok(self.entries_of.get(&i).cloned().unwrap_or_default());
        }
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(&keys::conflicts_of(collection, id), &mut |_, v| {
                if let Some(e) = decode_entry(v) {
                    out.push(e);
                }
                true
            })?;
        Ok(out)
    }

    /// What this authority refuses about change `change` of a record, given
    /// the record's entries.
    fn refusal(entries: &[Entry], collection: &str, id: &str, change: &str) -> Option<Held> {
        let open = |e: &&Entry| e.state == EntryState::Open;
        if let Some(e) = entries
            .iter()
            .filter(open)
            .find(|e| e.kind == Kind::Rejected && e.subject.hash == change)
        {
            return Some(Held {
                status: EventStatus::Rejected,
                collection: collection.to_owned(),
                record: id.to_owned(),
                change: change.to_owned(),
                violations: e
                    .violations
                    .iter()
                    .map(|v| {
                        (
                            v.code.clone(),
                            v.message.clone(),
                            v.field.clone().unwrap_or_default(),
                        )
                    })
                    .collect(),
                parent: None,
            });
        }
        if let Some(h) = entries
            .iter()
            .filter(open)
            .find(|e| e.kind == Kind::RejectedFk)
            .map(|e| Held {
                status: EventStatus::RejectedFk,
                collection: collection.to_owned(),
                record: id.to_owned(),
                change: change.to_owned(),
                violations: Vec::new(),
                parent: e.parent.clone(),
            })
        {
            return Some(h);
        }
        // A conflict about the change: held while a person has to decide;
        // refused when the other side stood (by policy or by a person).
        let held = |status, code: &str, message: String, fields: &[String]| Held {
            status,
            collection: collection.to_owned(),
            record: id.to_owned(),
            change: change.to_owned(),
            violations: vec![(code.to_owned(), message, fields.join(","))],
            parent: None,
        };
        for e in entries.iter().filter(|e| {
            matches!(
                e.kind,
                Kind::StatusRegression | Kind::ConcurrentEdit | Kind::EditOfDeleted
            )
        }) {
            let side = if e.subject.hash == change {
                Side::Subject
            } else if e.others.iter().any(|o| o.hash == change) {
                Side::Other
            } else {
                continue;
            };
            let short = &e.id[..e.id.len().min(8)];
            if e.state == EntryState::Open {
                return Some(held(
                    EventStatus::Processing,
                    "held",
                    format!(
                        "waiting for a person to decide conflict {short}: {}",
                        e.message
                    ),
                    &e.fields,
                ));
            }
            let stood = match &e.resolved_by {
                Some(ResolvedBy::Policy(_)) => e.winner == Some(side),
                Some(ResolvedBy::Person { decision, .. }) => {
                    let decision = decision.strip_prefix("reopen+").unwrap_or(decision);
                    let kept = match decision {
                        "keep_authority" => e.authority_side(),
                        "keep_device" => e.authority_side().map(|a| match a {
                            Side::Subject => Side::Other,
                            Side::Other => Side::Subject,
                        }),
                        d => d.strip_prefix("keep:").and_then(|m| e.side_named(m)),
                    };
                    kept.is_none_or(|k| k == side)
                }
                _ => true,
            };
            if !stood {
                return Some(held(
                    EventStatus::Rejected,
                    "conflict",
                    format!("not applied: conflict {short}: {}", e.message),
                    &e.fields,
                ));
            }
        }
        None
    }

    /// Run the acknowledgement step (see the module docs).
    pub(super) fn acknowledge(&mut self) -> Result<()> {
        if !self.inner.config.pending {
            return Ok(());
        }
        let me = self.inner.actor.clone();
        let authorities = self.inner.authorities();
        if !authorities.contains(&me) {
            return Ok(());
        }
        let mut received: BTreeMap<Vec<u8>, Vec<Received>> = BTreeMap::new();
        for (i, s) in self.staged.iter().enumerate() {
            if !s.dirty
                || s.discard
                || s.collection.starts_with('_')
                || !matches!(s.kind, ChangeKind::Remote | ChangeKind::Import)
            {
                continue;
            }
            for m in s.doc.get_changes_meta(&s.base_heads) {
                let actor: &ActorId = m.actor.as_ref();
                if *actor == me || authorities.contains(actor) {
                    continue;
                }
                if let Some(n) = Mark::parse(m.message.as_deref()).and_then(|k| k.event) {
                    received
                        .entry(actor.to_bytes().to_vec())
                        .or_default()
                        .push(Received {
                            n,
                            change: m.hash.to_string(),
                            staged: i,
                        });
                }
            }
        }
        // Devices whose refusals may have been lifted (or added) by entries
        // that changed in this transaction.
        let mut recheck: BTreeSet<Vec<u8>> = BTreeSet::new();
        for ev in &self.conflict_events {
            let (ConflictEvent::New(e) | ConflictEvent::Updated(e)) = ev;
            let sides = std::iter::once(&e.subject.actor).chain(e.others.iter().map(|o| &o.actor));
            for actor in sides {
                if let Some(a) = actor_from_hex(actor)
                    && a != me
                    && !authorities.contains(&a)
                {
                    recheck.insert(a.to_bytes().to_vec());
                }
            }
        }
        let origins: BTreeSet<Vec<u8>> = received.keys().cloned().chain(recheck).collect();
        for origin in origins {
            let origin_actor = ActorId::from(origin.as_slice());
            let id = ack_id(&me, &origin_actor);
            let existing = self.entry(ACKS, &id)?;
            let (mut seen, old_held) = match existing {
                Some(i) => {
                    let f = &self.staged[i].row.fields;
                    let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                    (Ranges::parse(&text("seen")), parse_held(&text("held")))
                }
                None => (Ranges::default(), BTreeMap::new()),
            };
            let before = (seen.to_string(), format_held(&old_held));
            let mut held = BTreeMap::new();
            for (n, h) in old_held {
                let entries = self.current_entries(&h.collection, &h.record)?;
                if let Some(now) = Self::refusal(&entries, &h.collection, &h.record, &h.change) {
                    held.insert(n, now);
                }
            }
            for r in received.remove(&origin).unwrap_or_default() {
                seen.insert(r.n);
                let s = &self.staged[r.staged];
                let entries = self.entries_of.get(&r.staged).cloned().unwrap_or_default();
                match Self::refusal(&entries, &s.collection, &s.id, &r.change) {
                    Some(h) => {
                        held.insert(r.n, h);
                    }
                    None => {
                        held.remove(&r.n);
                    }
                }
            }
            let after = (seen.to_string(), format_held(&held));
            if after == before {
                continue;
            }
            let fields = crate::value::fields([
                ("authority", Value::from(me.to_hex_string())),
                ("origin", Value::from(origin_actor.to_hex_string())),
                ("seen", Value::from(after.0)),
                ("held", Value::from(after.1)),
            ]);
            self.system = true;
            let written = if existing.is_some() {
                self.update(ACKS, &id, fields)
            } else {
                self.insert(ACKS, &id, fields)
            };
            self.system = false;
            written?;
        }
        Ok(())
    }
}
