//! The acknowledgement step of a commit, on an authority: for every pending
//! event of a device that this transaction received (each change fieldsync
//! makes carries its author's event number in its mark), record in the
//! `_ack` record for that device that this authority holds and has judged it,
//! and, in the `_held` record for that device and record, the outcomes it
//! holds the event to (refused: rejected, rejected_fk when the record's parent
//! is refused, a lost conflict; or held while a person decides). Both are
//! written in the same transaction, so a device never sees one without the
//! other. One outcome record per device and record keeps every write small:
//! an earlier release kept every outcome of a device in its one `_ack`
//! record, which grew with each conflict and was saved again whole at every
//! sync message.
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
use crate::schema::{ACKS, HELD};
use crate::store::keys;
use crate::value::Value;

/// The id of authority `a`'s acknowledgement record for device `origin`.
pub(crate) fn ack_id(a: &ActorId, origin: &ActorId) -> String {
    format!("{}.{}", a.to_hex_string(), origin.to_hex_string())
}

/// The common start of the ids of authority `a`'s outcome records for
/// device `origin`.
pub(crate) fn held_prefix(a: &ActorId, origin: &ActorId) -> String {
    format!("{}.", ack_id(a, origin))
}

/// The id of authority `a`'s outcome record for device `origin`'s events on
/// one record: the prefix, then 16 hex digits of a hash of the record's key
/// (record ids may be up to 256 bytes; this id stays short).
pub(crate) fn held_id(a: &ActorId, origin: &ActorId, collection: &str, id: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(collection.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let digest = h.finalize();
    format!(
        "{}{}",
        held_prefix(a, origin),
        crate::sign::hex(&digest[..8])
    )
}

/// A device change this transaction brought in: its event number, hash, and
/// the staged record it belongs to.
struct Received {
    n: u64,
    change: String,
    staged: usize,
}

/// An origin's acknowledgement record as this transaction found it.
struct AckState {
    exists: bool,
    before: (String, String),
    seen: Ranges,
    sum: u64,
    clear_legacy: bool,
}

/// The checksum of a set of outcomes: the XOR of one hash per outcome, so
/// it can be updated one record at a time and compared in any order.
pub(crate) fn held_sum(held: &BTreeMap<u64, Held>) -> u64 {
    use sha2::Digest;
    held.iter().fold(0, |acc, (n, h)| {
        let mut d = sha2::Sha256::new();
        d.update(n.to_be_bytes());
        d.update(serde_json::to_vec(h).unwrap_or_default());
        let out = d.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&out[..8]);
        acc ^ u64::from_be_bytes(b)
    })
}

/// The written form of a checksum (16 hex digits).
pub(crate) fn format_sum(sum: u64) -> String {
    format!("{sum:016x}")
}

/// A written checksum (`None` when absent or malformed).
pub(crate) fn parse_sum_opt(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

fn parse_sum(s: &str) -> u64 {
    parse_sum_opt(s).unwrap_or(0)
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
        // Received device changes, by origin and by record.
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
        // Records whose outcomes for a device may have changed: those it
        // sent changes of, and those whose entries changed in this
        // transaction (a fix lifts a rejection, a parent stands again, a
        // person decides).
        let mut records: BTreeMap<(Vec<u8>, String, String), Vec<&Received>> = BTreeMap::new();
        for (origin, list) in &received {
            for r in list {
                let s = &self.staged[r.staged];
                records
                    .entry((origin.clone(), s.collection.clone(), s.id.clone()))
                    .or_default()
                    .push(r);
            }
        }
        for ev in &self.conflict_events {
            let (ConflictEvent::New(e) | ConflictEvent::Updated(e)) = ev;
            let sides = std::iter::once(&e.subject.actor).chain(e.others.iter().map(|o| &o.actor));
            for actor in sides {
                if let Some(a) = actor_from_hex(actor)
                    && a != me
                    && !authorities.contains(&a)
                {
                    records
                        .entry((
                            a.to_bytes().to_vec(),
                            e.collection.clone(),
                            e.record.clone(),
                        ))
                        .or_default();
                }
            }
        }
        // Each origin's acknowledgement record: what it says now, and the
        // outcomes an earlier release kept in it (moved to outcome records).
        let origins: BTreeSet<Vec<u8>> = received
            .keys()
            .cloned()
            .chain(records.keys().map(|(o, _, _)| o.clone()))
            .collect();
        let mut acks: BTreeMap<Vec<u8>, AckState> = BTreeMap::new();
        let mut legacy: BTreeMap<(Vec<u8>, String, String), BTreeMap<u64, Held>> = BTreeMap::new();
        for origin in origins {
            let id = ack_id(&me, &ActorId::from(origin.as_slice()));
            let row = self.row_of(ACKS, &id)?;
            let text = |k: &str| {
                row.as_ref()
                    .and_then(|r| r.fields.get(k).and_then(Value::as_str))
                    .unwrap_or("")
                    .to_owned()
            };
            let old_legacy = parse_held(&text("held"));
            for (n, h) in &old_legacy {
                legacy
                    .entry((origin.clone(), h.collection.clone(), h.record.clone()))
                    .or_default()
                    .insert(*n, h.clone());
            }
            let seen = Ranges::parse(&text("seen"));
            let sum = text("held_sum");
            acks.insert(
                origin,
                AckState {
                    exists: row.is_some(),
                    before: (seen.to_string(), sum.clone()),
                    seen,
                    sum: parse_sum(&sum),
                    clear_legacy: !text("held").is_empty(),
                },
            );
        }
        for key in legacy.keys() {
            records.entry(key.clone()).or_default();
        }
        let mut writes: Vec<(String, crate::value::Fields, bool)> = Vec::new();
        for (key, got) in &records {
            let (origin, collection, record) = key;
            let origin_actor = ActorId::from(origin.as_slice());
            let id = held_id(&me, &origin_actor, collection, record);
            let existing = self.row_of(HELD, &id)?;
            let stored = existing
                .as_ref()
                .and_then(|r| r.fields.get("held").and_then(Value::as_str).map(parse_held))
                .unwrap_or_default();
            let mut old = stored.clone();
            for (n, h) in legacy.remove(key).unwrap_or_default() {
                old.entry(n).or_insert(h);
            }
            let entries = self.current_entries(collection, record)?;
            let mut held = BTreeMap::new();
            for (n, h) in &old {
                if let Some(now) = Self::refusal(&entries, collection, record, &h.change) {
                    held.insert(*n, now);
                }
            }
            for r in got {
                match Self::refusal(&entries, collection, record, &r.change) {
                    Some(h) => held.insert(r.n, h),
                    None => held.remove(&r.n),
                };
            }
            if held == stored {
                continue;
            }
            if let Some(a) = acks.get_mut(origin) {
                a.sum ^= held_sum(&stored) ^ held_sum(&held);
            }
            let fields = crate::value::fields([
                ("authority", Value::from(me.to_hex_string())),
                ("origin", Value::from(origin_actor.to_hex_string())),
                ("collection", Value::from(collection.clone())),
                ("record", Value::from(record.clone())),
                ("held", Value::from(format_held(&held))),
            ]);
            writes.push((id, fields, existing.is_some()));
        }
        // What each device's events this authority now holds, and the
        // checksum of its outcomes (a device that holds other outcomes than
        // these knows some are still on their way).
        for (origin, mut a) in acks {
            for r in received.get(&origin).into_iter().flatten() {
                a.seen.insert(r.n);
            }
            let after = (a.seen.to_string(), format_sum(a.sum));
            if after == a.before && !a.clear_legacy {
                continue;
            }
            let origin_actor = ActorId::from(origin.as_slice());
            let id = ack_id(&me, &origin_actor);
            let mut fields = crate::value::fields([
                ("authority", Value::from(me.to_hex_string())),
                ("origin", Value::from(origin_actor.to_hex_string())),
                ("seen", Value::from(after.0)),
                ("held_sum", Value::from(after.1)),
            ]);
            if a.clear_legacy {
                fields.insert("held".to_owned(), Value::from(String::new()));
            }
            self.system = true;
            let written = if a.exists {
                self.update(ACKS, &id, fields)
            } else {
                self.insert(ACKS, &id, fields)
            };
            self.system = false;
            written?;
        }
        for (id, fields, exists) in writes {
            self.system = true;
            let written = if exists {
                self.update(HELD, &id, fields)
            } else {
                self.insert(HELD, &id, fields)
            };
            self.system = false;
            written?;
        }
        Ok(())
    }
}
