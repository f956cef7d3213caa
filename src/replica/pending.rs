//! Pending events of a [`Replica`]: stored under `e:` keys with the change
//! they describe, their statuses derived again whenever what they depend on
//! changes (an authority's acknowledgement record arrives, conflict entries
//! change, a sync ends with a peer holding everything, members change), and
//! cancelled with a compensating change. Rules: `docs/pending.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use tokio::sync::broadcast;

use super::tx::evaluate::decode_entry;
use super::{Inner, Replica};
use crate::codec;
use crate::conflict::{EntryState, Kind};
use crate::error::{Error, Result};
use crate::hlc::HlcTime;
use crate::pending::{
    Ack, EventKind, EventStatus, Knowledge, Local, PendingEvent, PendingFilter, Ranges,
    StatusChange, derive, parse_held,
};
use crate::schema::{ACKS, HELD};
use crate::store::{Batch, keys};
use crate::value::Value;

const EVENT_TAG: u8 = b'E';
/// Version 2: the events one transaction made, in one value under the key
/// of the first (version 1, one event per key, is still read).
const EVENT_VERSION: u8 = 2;

/// Encode a group of events (one `e:` value).
pub(crate) fn encode_events(events: &[PendingEvent]) -> Result<Vec<u8>> {
    codec::encode("pending events", EVENT_TAG, EVENT_VERSION, &events)
        .map_err(|source| Error::Metadata { key: "e:", source })
}

fn decode_events(bytes: &[u8]) -> Option<Vec<PendingEvent>> {
    let out = match codec::decode("pending events", EVENT_TAG, EVENT_VERSION, bytes) {
        Err(codec::CodecError::UnsupportedVersion { found: 1, .. }) => {
            codec::decode::<PendingEvent>("pending event", EVENT_TAG, 1, bytes).map(|e| vec![e])
        }
        other => other,
    };
    match out {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable pending events are skipped");
            None
        }
    }
}

/// One stored `e:` value: its key and the events it holds.
pub(crate) type Group = (Vec<u8>, Vec<PendingEvent>);

/// A write of one key: its new value, or `None` to delete it.
pub(crate) type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

impl Inner {
    /// Whether this replica's local writes become pending events (an
    /// authority's are confirmed as they are made).
    pub(crate) fn events_on(&self) -> bool {
        self.config.pending && !self.is_authority(&self.actor)
    }

    /// Every stored group of events, oldest first. A commit stores the
    /// events it makes as one group (one key per transaction, not per
    /// write: a key per event was half the cost of a batched update).
    pub(crate) fn stored_groups(&self) -> Result<Vec<Group>> {
        let mut out = Vec::new();
        self.storage.for_each_prefix(keys::EVENTS, &mut |k, v| {
            if let Some(e) = decode_events(v) {
                out.push((k.to_vec(), e));
            }
            true
        })?;
        Ok(out)
    }

    fn stored_events(&self) -> Result<Vec<PendingEvent>> {
        Ok(self
            .stored_groups()?
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect())
    }

    /// The group that holds event `id`, if it is listed: the last group
    /// keyed at or before it (keys are a group's first event number).
    fn group_of(&self, id: u64) -> Result<Option<Group>> {
        let target = keys::event(id);
        let mut found: Option<Vec<u8>> = None;
        self.storage.for_each_prefix(keys::EVENTS, &mut |k, _| {
            if k > target.as_slice() {
                return false;
            }
            found = Some(k.to_vec());
            true
        })?;
        let Some(key) = found else {
            return Ok(None);
        };
        let events = self
            .storage
            .get(&key)?
            .as_deref()
            .and_then(decode_events)
            .unwrap_or_default();
        Ok(events.iter().any(|e| e.id == id).then_some((key, events)))
    }

    fn stored_event(&self, id: u64) -> Result<Option<PendingEvent>> {
        Ok(self
            .group_of(id)?
            .and_then(|(_, events)| events.into_iter().find(|e| e.id == id)))
    }

    /// The writes that store `updates` (an event's new state, or `None` to
    /// take it off the list) into `groups`: each touched group rewritten,
    /// or deleted once empty.
    pub(crate) fn event_writes(
        groups: &[Group],
        updates: &HashMap<u64, Option<PendingEvent>>,
    ) -> Result<Vec<KeyWrite>> {
        let mut out = Vec::new();
        for (key, events) in groups {
            if !events.iter().any(|e| updates.contains_key(&e.id)) {
                continue;
            }
            let kept: Vec<PendingEvent> = events
                .iter()
                .filter_map(|e| match updates.get(&e.id) {
                    None => Some(e.clone()),
                    Some(new) => new.clone(),
                })
                .collect();
            out.push((
                key.clone(),
                (!kept.is_empty())
                    .then(|| encode_events(&kept))
                    .transpose()?,
            ));
        }
        Ok(out)
    }

    /// The acknowledgement records the group's authorities keep for this
    /// replica, with the outcomes they list for its events.
    fn acks(&self) -> Result<Vec<Ack>> {
        let me = self.actor.clone();
        let mut out = Vec::new();
        for a in self.authorities().iter().filter(|a| **a != me) {
            let id = super::tx::ack::ack_id(a, &me);
            let Some(row) = self.read_row(ACKS, &id).ok().flatten() else {
                continue;
            };
            let text = |k: &str| {
                row.fields
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            // Outcomes an earlier release kept in the acknowledgement itself.
            let mut held = parse_held(&text("held"));
            let mut in_records = BTreeMap::new();
            let prefix = keys::row(HELD, &super::tx::ack::held_prefix(a, &me));
            self.storage.for_each_prefix(&prefix, &mut |_, v| {
                match super::row::Row::decode(v) {
                    Ok(r) => {
                        let h = r.fields.get("held").and_then(Value::as_str).unwrap_or("");
                        let h = parse_held(h);
                        in_records.extend(h);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable outcome record is skipped");
                    }
                }
                true
            })?;
            let incomplete = super::tx::ack::parse_sum_opt(&text("held_sum"))
                .is_some_and(|sum| sum != super::tx::ack::held_sum(&in_records));
            held.extend(in_records);
            out.push(Ack {
                by: a.to_hex_string(),
                seen: Ranges::parse(&text("seen")),
                held,
                incomplete,
            });
        }
        Ok(out)
    }

    /// What this replica's own conflict entries say about a record.
    fn local_signals(&self, collection: &str, id: &str) -> Result<Vec<crate::conflict::Entry>> {
        let mut out = Vec::new();
        self.storage
            .for_each_prefix(&keys::conflicts_of(collection, id), &mut |_, v| {
                if let Some(e) = decode_entry(v)
                    && e.state == EntryState::Open
                    && matches!(e.kind, Kind::Rejected | Kind::RejectedFk)
                {
                    out.push(e);
                }
                true
            })?;
        Ok(out)
    }
}

impl Replica {
    /// Derive every listed event's status again if something it depends on
    /// changed; errors are logged (statuses are derived again next time).
    pub(crate) fn refresh_pending_if_stale(&self) {
        if self.inner.config.pending
            && self.inner.pending_stale.swap(false, Ordering::Relaxed)
            && let Err(e) = self.refresh_pending()
        {
            self.inner.pending_stale.store(true, Ordering::Relaxed);
            tracing::warn!(error = %e, "could not update pending events");
        }
    }

    /// [`Replica::refresh_pending_if_stale`] after a commit: at once unless
    /// the last derivation ended less than 8 times its own duration ago (a
    /// sync applying many messages to a device with many events would
    /// otherwise derive them all again after each message). A skipped
    /// derivation stays due: the next read of the events, the end of the
    /// sync, the node's next tick or a later commit runs it.
    pub(crate) fn refresh_pending_soon(&self) {
        if !self.inner.pending_stale.load(Ordering::Relaxed) {
            return;
        }
        let recent = self
            .inner
            .pending_pace
            .lock()
            .ok()
            .and_then(|p| *p)
            .is_some_and(|(ended, took)| ended.elapsed() < took * 8);
        if !recent {
            self.refresh_pending_if_stale();
        }
    }

    /// Derive every listed event's status again, store the changes, drop the
    /// confirmed ones and tell subscribers.
    fn refresh_pending(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let out = self.derive_pending();
        if let Ok(mut pace) = self.inner.pending_pace.lock() {
            *pace = Some((std::time::Instant::now(), started.elapsed()));
        }
        out
    }

    fn derive_pending(&self) -> Result<()> {
        let changes = {
            // Under the writers' lock: a cancel or a commit cannot interleave.
            let _state = self.inner.state();
            let groups = self.inner.stored_groups()?;
            let events: Vec<&PendingEvent> = groups.iter().flat_map(|(_, e)| e).collect();
            if events.is_empty() {
                return Ok(());
            }
            let me = self.inner.actor.clone();
            let authorities = self.inner.authorities();
            let i_am_authority = authorities.contains(&me);
            let acks = self.inner.acks()?;
            let remembered: HashMap<String, HlcTime> =
                self.remembered_peers()?.into_iter().collect();
            let members: Vec<String> = self
                .members()?
                .into_iter()
                .filter(|m| !m.this && !m.revoked)
                .map(|m| m.member)
                .collect();
            let confirmers: Vec<Option<HlcTime>> = if members.is_empty() {
                remembered.values().copied().map(Some).collect()
            } else {
                members.iter().map(|m| remembered.get(m).copied()).collect()
            };
            let knowledge = Knowledge {
                authorities: !authorities.is_empty() && !i_am_authority,
                acks: &acks,
                confirmers: &confirmers,
                delivered_until: remembered.values().copied().max(),
            };
            let mut signals: HashMap<(String, String), Vec<crate::conflict::Entry>> =
                HashMap::new();
            let mut derived = Vec::with_capacity(events.len());
            // Rights this replica knows apply to its own earlier writes too.
            let rights = self.inner.rights()?;
            let knows_rights =
                rights.enforced() && rights.member(self.inner.actor.to_bytes()).is_some();
            for e in &events {
                let key = (e.collection.clone(), e.record.clone());
                if !signals.contains_key(&key) {
                    let s = self.inner.local_signals(&e.collection, &e.record)?;
                    signals.insert(key.clone(), s);
                }
                let entries = signals.get(&key).map(Vec::as_slice).unwrap_or_default();
                let local = Local {
                    rejected: entries
                        .iter()
                        .find(|x| x.kind == Kind::Rejected && x.subject.hash == e.change)
                        .map(|x| {
                            let by = x.others.first().map(|o| o.actor.clone());
                            (x.violations.clone(), by.unwrap_or_default())
                        }),
                    rejected_fk: entries
                        .iter()
                        .find(|x| x.kind == Kind::RejectedFk)
                        .and_then(|x| x.parent.clone()),
                    purged: self
                        .inner
                        .is_purged(&crate::sync::Key::new(&e.collection, &e.record))?,
                    forbidden: knows_rights
                        && !rights.can_write(
                            self.inner.actor.to_bytes(),
                            &e.collection,
                            &self
                                .inner
                                .read_row(&e.collection, &e.record)?
                                .map(|r| r.fields)
                                .unwrap_or_default(),
                        ),
                };
                let mut next = PendingEvent::clone(e);
                if i_am_authority && e.status != EventStatus::Cancelled {
                    next.status = EventStatus::Confirmed;
                } else {
                    let (status, errors, parent, by) = derive(e, &local, &knowledge);
                    next.status = status;
                    next.errors = errors;
                    next.parent = parent;
                    next.decided_by = by;
                }
                derived.push(next);
            }
            // A rejected_fk event links to this device's refused event on its
            // parent (the latest one).
            let mut refused: HashMap<(String, String), u64> = HashMap::new();
            for e in &derived {
                if matches!(e.status, EventStatus::Rejected | EventStatus::RejectedFk) {
                    refused.insert((e.collection.clone(), e.record.clone()), e.id);
                }
            }
            for e in &mut derived {
                e.linked = match (&e.status, &e.parent) {
                    (EventStatus::RejectedFk, Some(p)) => refused.get(p).copied(),
                    _ => None,
                };
            }
            let mut updates = HashMap::new();
            let mut changes = Vec::new();
            for (old, new) in events.iter().zip(derived) {
                if **old == new {
                    continue;
                }
                updates.insert(
                    new.id,
                    (new.status != EventStatus::Confirmed).then(|| new.clone()),
                );
                changes.push(StatusChange {
                    from: Some(old.status),
                    event: new,
                });
            }
            if !changes.is_empty() {
                let batch = Batch::of_writes(Inner::event_writes(&groups, &updates)?);
                self.inner.storage.apply(batch)?;
                self.inner.storage.flush()?;
            }
            changes
        };
        for c in changes {
            let _ = self.inner.pending_events.send(c);
        }
        Ok(())
    }

    /// The listed pending events (oldest first): every local write not yet
    /// confirmed, plus rejected and cancelled ones until dismissed. Statuses
    /// are current (derived again first if anything changed).
    pub fn pending(&self, filter: &PendingFilter) -> Result<Vec<PendingEvent>> {
        self.refresh_pending_if_stale();
        Ok(self
            .inner
            .stored_events()?
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect())
    }

    /// One listed event (`None` once confirmed and gone, or dismissed).
    pub fn pending_event(&self, id: u64) -> Result<Option<PendingEvent>> {
        self.refresh_pending_if_stale();
        self.inner.stored_event(id)
    }

    /// How many listed events are in each status.
    pub fn pending_counts(&self) -> Result<BTreeMap<EventStatus, usize>> {
        let mut out = BTreeMap::new();
        for e in self.pending(&PendingFilter::all())? {
            *out.entry(e.status).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Subscribe to status changes of pending events (new events too, with
    /// `from: None`).
    pub fn watch_pending(&self) -> broadcast::Receiver<StatusChange> {
        self.inner.pending_events.subscribe()
    }

    /// Take a rejected or cancelled event off the list (the record stays as
    /// it is; a rejected change can still be fixed or cancelled first).
    pub fn dismiss_event(&self, id: u64) -> Result<()> {
        self.refresh_pending_if_stale();
        let _state = self.inner.state();
        let (key, events) = self.inner.group_of(id)?.ok_or(Error::NoEvent { id })?;
        let e = events
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .ok_or(Error::NoEvent { id })?;
        if !matches!(
            e.status,
            EventStatus::Rejected | EventStatus::RejectedFk | EventStatus::Cancelled
        ) {
            return Err(Error::Cancel {
                id,
                reason: format!(
                    "it is {}; only rejected or cancelled events are dismissed",
                    e.status
                ),
            });
        }
        let gone = HashMap::from([(id, None)]);
        let batch = Batch::of_writes(Inner::event_writes(&[(key, events)], &gone)?);
        self.inner.storage.apply(batch)?;
        self.inner.storage.flush()?;
        Ok(())
    }

    /// Cancel an event that is not confirmed yet: one compensating change
    /// restores what it changed, so nothing half-applied remains — a
    /// cancelled insert deletes the record (and cancels the record's later
    /// events), a cancelled update puts back the previous values of the
    /// fields it set (those nobody changed since; counters are decremented by
    /// what it added), a cancelled delete brings the record back. The
    /// compensating change replicates like any change. Returns the event,
    /// now `cancelled`.
    pub fn cancel_event(&self, id: u64) -> Result<PendingEvent> {
        self.refresh_pending_if_stale();
        let cancelled = self.transaction(|tx| {
            // Read under the writers' lock (this transaction holds it), so
            // no derivation confirms the event, or changes its group, between
            // this check and the write.
            let groups = tx.inner.stored_groups()?;
            let listed: Vec<&PendingEvent> = groups.iter().flat_map(|(_, g)| g).collect();
            let e = listed
                .iter()
                .find(|x| x.id == id)
                .map(|x| (*x).clone())
                .ok_or(Error::NoEvent { id })?;
            if !e.status.cancellable() {
                return Err(Error::Cancel {
                    id,
                    reason: format!("it is {}", e.status),
                });
            }
            let later: Vec<PendingEvent> = if e.kind == EventKind::Insert {
                listed
                    .iter()
                    .filter(|x| {
                        x.id > e.id
                            && x.collection == e.collection
                            && x.record == e.record
                            && x.status.cancellable()
                    })
                    .map(|x| (*x).clone())
                    .collect()
            } else {
                Vec::new()
            };
            tx.cancels = Some(id);
            tx.compensate(&e)?;
            let mut out = Vec::new();
            let mut updates = HashMap::new();
            for x in std::iter::once(&e).chain(&later) {
                let mut c = x.clone();
                c.status = EventStatus::Cancelled;
                c.linked = None;
                updates.insert(c.id, Some(c.clone()));
                out.push((x.status, c));
            }
            tx.extra.extend(Inner::event_writes(&groups, &updates)?);
            tx.cancels = None;
            Ok(out)
        })?;
        let mut first = None;
        for (from, c) in cancelled {
            first.get_or_insert_with(|| c.clone());
            let _ = self.inner.pending_events.send(StatusChange {
                event: c,
                from: Some(from),
            });
        }
        first.ok_or(Error::NoEvent { id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64) -> PendingEvent {
        crate::pending::test_event(id, 7)
    }

    #[test]
    fn groups_round_trip_and_single_events_of_earlier_stores_are_read() {
        let group = vec![event(1), event(2)];
        assert_eq!(decode_events(&encode_events(&group).unwrap()), Some(group));
        let v1 = codec::encode("pending event", EVENT_TAG, 1, &event(5)).unwrap();
        assert_eq!(decode_events(&v1), Some(vec![event(5)]));
        assert_eq!(decode_events(b"E\x09junk"), None);
    }

    #[test]
    fn a_group_is_rewritten_without_what_leaves_and_deleted_when_empty() {
        let groups: Vec<Group> = vec![
            (keys::event(1), vec![event(1), event(2)]),
            (keys::event(3), vec![event(3)]),
        ];
        let mut cancelled = event(2);
        cancelled.status = EventStatus::Cancelled;
        let updates = HashMap::from([(1, None), (2, Some(cancelled.clone()))]);
        let writes = Inner::event_writes(&groups, &updates).unwrap();
        assert_eq!(writes.len(), 1, "the untouched group is not rewritten");
        assert_eq!(writes[0].0, keys::event(1));
        let kept = decode_events(writes[0].1.as_deref().unwrap()).unwrap();
        assert_eq!(kept, vec![cancelled]);
        let gone = Inner::event_writes(&groups, &HashMap::from([(3, None)])).unwrap();
        assert_eq!(gone, vec![(keys::event(3), None)]);
    }
}
