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
const EVENT_VERSION: u8 = 1;

pub(crate) fn encode_event(e: &PendingEvent) -> Result<Vec<u8>> {
    codec::encode("pending event", EVENT_TAG, EVENT_VERSION, e)
        .map_err(|source| Error::Metadata { key: "e:", source })
}

fn decode_event(bytes: &[u8]) -> Option<PendingEvent> {
    match codec::decode("pending event", EVENT_TAG, EVENT_VERSION, bytes) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "an unreadable pending event is skipped");
            None
        }
    }
}

impl Inner {
    /// Whether this replica's local writes become pending events (an
    /// authority's are confirmed as it makes them).
    pub(crate) fn events_on(&self) -> bool {
        self.config.pending && !self.is_authority(&self.actor)
    }

    fn stored_events(&self) -> Result<Vec<PendingEvent>> {
        let mut out = Vec::new();
        self.storage.for_each_prefix(keys::EVENTS, &mut |_, v| {
            if let Some(e) = decode_event(v) {
                out.push(e);
            }
            true
        })?;
        Ok(out)
    }

    fn stored_event(&self, id: u64) -> Result<Option<PendingEvent>> {
        Ok(self
            .storage
            .get(&keys::event(id))?
            .as_deref()
            .and_then(decode_event))
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
            let events = self.inner.stored_events()?;
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
                let mut next = e.clone();
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
            let mut batch = Batch::new();
            let mut changes = Vec::new();
            for (old, new) in events.iter().zip(derived) {
                if *old == new {
                    continue;
                }
                if new.status == EventStatus::Confirmed {
                    batch.delete(keys::event(new.id));
                } else {
                    batch.put(keys::event(new.id), encode_event(&new)?);
                }
                changes.push(StatusChange {
                    from: Some(old.status),
                    event: new,
                });
            }
            if !changes.is_empty() {
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
        let e = self.inner.stored_event(id)?.ok_or(Error::NoEvent { id })?;
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
        self.inner.storage.delete(&keys::event(id))?;
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
        let e = self.inner.stored_event(id)?.ok_or(Error::NoEvent { id })?;
        if !e.status.cancellable() {
            return Err(Error::Cancel {
                id,
                reason: format!("it is {}", e.status),
            });
        }
        let later: Vec<PendingEvent> = if e.kind == EventKind::Insert {
            self.inner
                .stored_events()?
                .into_iter()
                .filter(|x| {
                    x.id > e.id
                        && x.collection == e.collection
                        && x.record == e.record
                        && x.status.cancellable()
                })
                .collect()
        } else {
            Vec::new()
        };
        let cancelled = self.transaction(|tx| {
            tx.cancels = Some(id);
            tx.compensate(&e)?;
            let mut out = Vec::new();
            for x in std::iter::once(&e).chain(&later) {
                let mut c = x.clone();
                c.status = EventStatus::Cancelled;
                c.linked = None;
                tx.extra.push((keys::event(c.id), Some(encode_event(&c)?)));
                out.push((x.status, c));
            }
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
