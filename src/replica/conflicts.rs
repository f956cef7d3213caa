//! The conflict list API of a [`Replica`]: list, show side by side, assign,
//! route, resolve, watch; and validation closures.

use std::collections::HashSet;
use std::sync::Arc;

use automerge::{ActorId, Automerge, ChangeHash};
use tokio::sync::broadcast;

use super::tx::evaluate::decode_entry;
use super::{Inner, Replica, Written};
use crate::conflict::mark::WriteKind;
use crate::conflict::{
    Choice, ConflictEvent, ConflictFilter, Entry, EntryDetail, FieldDiff, Kind, Resolution, Side,
};
use crate::error::{Error, Result};
use crate::schema::{DECISIONS, Violation};
use crate::store::keys;
use crate::value::{Fields, Value};

/// A validation closure: the violations of a record's fields (empty when
/// valid). See [`Replica::add_validator`].
pub type Validator = Arc<dyn Fn(&Fields) -> Vec<Violation> + Send + Sync>;

impl Inner {
    pub(crate) fn validators_of(&self, collection: &str) -> Vec<Validator> {
        self.validators
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn authorities(&self) -> Arc<HashSet<ActorId>> {
        self.authorities
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn is_authority(&self, actor: &ActorId) -> bool {
        self.authorities().contains(actor)
    }
}

/// A document's fields as of `heads` (empty if they are not all in it).
fn fields_at(doc: &Automerge, c: &crate::schema::Collection, heads: &[ChangeHash]) -> Fields {
    doc.fork_at(heads)
        .ok()
        .and_then(|d| crate::doc::read_fields(&d, c).ok())
        .map(|(f, _)| f)
        .unwrap_or_default()
}

fn hashes(refs: &[crate::conflict::ChangeRef]) -> Vec<ChangeHash> {
    refs.iter().filter_map(|r| r.hash.parse().ok()).collect()
}

impl Replica {
    /// Register a validation closure for a collection. It runs on this
    /// replica's own writes (a write it refuses fails with
    /// [`Error::Invalid`]) and, when this replica is an authority, on every
    /// change a peer sends: a refused change gets a replicated rejection, and
    /// every replica then hides it and lists a [`Kind::Rejected`] entry.
    pub fn add_validator(
        &self,
        collection: &str,
        f: impl Fn(&Fields) -> Vec<Violation> + Send + Sync + 'static,
    ) -> Result<()> {
        self.schema().collection(collection)?;
        self.inner
            .validators
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(collection.to_owned())
            .or_default()
            .push(Arc::new(f));
        Ok(())
    }

    /// Check a record against its collection's rules and this replica's
    /// validators; the violations (empty when valid).
    pub fn validate(&self, collection: &str, id: &str) -> Result<Vec<Violation>> {
        let schema = self.schema();
        let c = schema.collection(collection)?;
        let rec = self.get(collection, id)?.ok_or_else(|| Error::NotFound {
            collection: collection.to_owned(),
            id: id.to_owned(),
        })?;
        let mut out = c.violations(&rec.fields);
        for v in self.inner.validators_of(collection) {
            out.extend(v(&rec.fields));
        }
        Ok(out)
    }

    /// The conflict entries that pass `filter`, oldest subject change first.
    pub fn conflicts(&self, filter: &ConflictFilter) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::CONFLICTS, &mut |_, v| {
                match decode_entry(v) {
                    Some(e) if filter.matches(&e) => out.push(e),
                    Some(_) => {}
                    None => tracing::warn!("skipping an unreadable conflict entry"),
                }
                true
            })?;
        out.sort_by(|a, b| (a.subject.time, &a.id).cmp(&(b.subject.time, &b.id)));
        Ok(out)
    }

    /// One entry, or `None`.
    pub fn conflict_entry(&self, id: &str) -> Result<Option<Entry>> {
        let Some(at) = self.inner.storage.get(&keys::conflict_index(id))? else {
            return Ok(None);
        };
        let Some(nul) = at.iter().position(|b| *b == 0) else {
            return Ok(None);
        };
        let c = String::from_utf8_lossy(&at[..nul]).into_owned();
        let r = String::from_utf8_lossy(&at[nul + 1..]).into_owned();
        Ok(self
            .inner
            .storage
            .get(&keys::conflict(&c, &r, id))?
            .and_then(|b| decode_entry(&b)))
    }

    /// An entry with the record's versions side by side: the base (before the
    /// subject change), the authority's (the other side's), the device's (the
    /// subject's), what the record shows, and a per-field diff. The losing
    /// values are read from the record's history, so they stay readable after
    /// any resolution.
    pub fn conflict(&self, id: &str) -> Result<Option<EntryDetail>> {
        let Some(entry) = self.conflict_entry(id)? else {
            return Ok(None);
        };
        let schema = self.schema();
        let c = schema.collection(&entry.collection)?;
        let visible = self
            .get(&entry.collection, &entry.record)?
            .map(|r| r.fields)
            .unwrap_or_default();
        let subject: Vec<ChangeHash> = entry.subject.hash.parse().into_iter().collect();
        let others = hashes(&entry.others);
        let (base, device, authority) = self.with_doc(&entry.collection, &entry.record, |doc| {
            let deps: Vec<ChangeHash> = subject
                .first()
                .and_then(|h| doc.get_change_meta_by_hash(h))
                .map(|m| m.deps)
                .unwrap_or_default();
            let base = if deps.is_empty() {
                Fields::new()
            } else {
                fields_at(doc, c, &deps)
            };
            let device = fields_at(doc, c, &subject);
            let authority = if others.is_empty() {
                visible.clone()
            } else {
                fields_at(doc, c, &others)
            };
            Ok((base, device, authority))
        })?;
        let mut names: Vec<&String> = base
            .keys()
            .chain(device.keys())
            .chain(authority.keys())
            .chain(visible.keys())
            .collect();
        names.sort();
        names.dedup();
        let diff = names
            .into_iter()
            .filter_map(|f| {
                let d = FieldDiff {
                    field: f.clone(),
                    base: base.get(f).cloned(),
                    authority: authority.get(f).cloned(),
                    device: device.get(f).cloned(),
                    visible: visible.get(f).cloned(),
                };
                let same =
                    d.base == d.authority && d.authority == d.device && d.device == d.visible;
                (!same).then_some(d)
            })
            .collect();
        Ok(Some(EntryDetail {
            entry,
            base,
            authority,
            device,
            visible,
            diff,
        }))
    }

    fn entry_or_err(&self, id: &str) -> Result<Entry> {
        self.conflict_entry(id)?
            .ok_or_else(|| Error::NoEntry { id: id.to_owned() })
    }

    /// Write fields of an entry's `_entry` record (created on first use).
    fn set_decision_fields(tx: &mut super::Tx<'_>, e: &Entry, set: Fields) -> Result<()> {
        tx.system = true;
        let done = match tx.update(DECISIONS, &e.id, set.clone()) {
            Err(Error::NotFound { .. }) => {
                let mut all = set;
                all.insert("collection".into(), Value::from(e.collection.as_str()));
                all.insert("record".into(), Value::from(e.record.as_str()));
                tx.insert(DECISIONS, &e.id, all).map(|_| ())
            }
            other => other.map(|_| ()),
        };
        tx.system = false;
        done
    }

    /// Assign an entry to a person (replicated like any change).
    pub fn assign(&self, id: &str, assignee: &str) -> Result<()> {
        let e = self.entry_or_err(id)?;
        self.transaction(|tx| {
            Self::set_decision_fields(tx, &e, crate::fields([("assignee", Value::from(assignee))]))
        })
    }

    /// Route an entry to another queue (replicated like any change).
    pub fn route(&self, id: &str, queue: &str) -> Result<()> {
        if queue.is_empty() || queue.len() > 64 || queue.chars().any(char::is_control) {
            return Err(Error::Resolve {
                id: id.to_owned(),
                reason: format!("queue name {queue:?} must be 1 to 64 printable characters"),
            });
        }
        let e = self.entry_or_err(id)?;
        self.transaction(|tx| {
            Self::set_decision_fields(tx, &e, crate::fields([("queue", Value::from(queue))]))
        })
    }

    /// Resolve an entry. The chosen values (and a `reopen` status) are written
    /// to the record as one ordinary change that follows both sides, and the
    /// decision is recorded in the entry's replicated `_entry` record, in one
    /// transaction. If two people resolve one entry concurrently, both changes
    /// replicate and every replica shows the same outcome (automerge's
    /// deterministic winner for each field written by both).
    pub fn resolve(&self, id: &str, resolution: Resolution) -> Result<Written> {
        let detail = self
            .conflict(id)?
            .ok_or_else(|| Error::NoEntry { id: id.to_owned() })?;
        let e = &detail.entry;
        let bad = |reason: &str| Error::Resolve {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        let schema = self.schema();
        let c = schema.collection(&e.collection)?;
        let pick = |side: Side, f: &str| -> Value {
            let from = match side {
                Side::Subject => &detail.device,
                Side::Other => &detail.authority,
            };
            from.get(f).cloned().unwrap_or(Value::Null)
        };
        let (decision, mut patch): (&str, Fields) = match &resolution.choice {
            Choice::KeepAuthority => (
                "keep_authority",
                e.fields
                    .iter()
                    .map(|f| (f.clone(), pick(Side::Other, f)))
                    .collect(),
            ),
            Choice::KeepDevice => (
                "keep_device",
                e.fields
                    .iter()
                    .map(|f| (f.clone(), pick(Side::Subject, f)))
                    .collect(),
            ),
            Choice::Fields(map) => {
                if let Some(f) = map.keys().find(|f| !e.fields.contains(f)) {
                    return Err(bad(&format!("`{f}` is not a field of this conflict")));
                }
                (
                    "fields",
                    map.iter().map(|(f, s)| (f.clone(), pick(*s, f))).collect(),
                )
            }
            Choice::Custom(values) => ("custom", c.check_patch(values)?),
        };
        match e.kind {
            Kind::Rejected if !matches!(resolution.choice, Choice::KeepAuthority) => {
                return Err(bad(
                    "a rejection is lifted only by a fix that the authority accepts; resolve it with keep_authority to dismiss it",
                ));
            }
            Kind::Rejected => patch.clear(),
            Kind::RejectedFk => patch.clear(),
            _ => {}
        }
        // Required fields cannot be removed; a side that lacks one keeps the
        // current value.
        patch.retain(|k, v| !(matches!(v, Value::Null) && c.field(k).is_ok_and(|f| f.required)));
        if let Some(state) = &resolution.reopen {
            let Some(l) = &c.settings.lifecycle else {
                return Err(bad("the collection has no status to reopen"));
            };
            patch.insert(
                l.field.clone(),
                c.check_value(&l.field, &Value::from(state.as_str()))?,
            );
        }
        let undelete = e.kind == Kind::EditOfDeleted
            && (matches!(resolution.choice, Choice::KeepDevice) || e.subject.authority);
        let delete_child =
            e.kind == Kind::RejectedFk && matches!(resolution.choice, Choice::KeepAuthority);
        let decision = if resolution.reopen.is_some() {
            format!("reopen+{decision}")
        } else {
            decision.to_owned()
        };
        let me = self.actor().to_hex_string();
        let now = (self.inner.config.clock)() as i64;
        let mut set = crate::fields([
            ("decision", Value::from(decision.as_str())),
            ("by", Value::from(me.as_str())),
            ("at", Value::Timestamp(now)),
        ]);
        if let Some(n) = &resolution.note {
            set.insert("note".into(), Value::from(n.as_str()));
        }
        let entry_id = e.id.clone();
        let (coll, rec) = (e.collection.clone(), e.record.clone());
        self.transaction(|tx| {
            tx.resolving = Some(entry_id.clone());
            let written = if delete_child {
                tx.delete(&coll, &rec)?
            } else {
                tx.resolve_record(
                    &coll,
                    &rec,
                    &patch,
                    undelete && !matches!(resolution.choice, Choice::KeepAuthority),
                )?
            };
            tx.resolving = None;
            Self::set_decision_fields(tx, e, set)?;
            Ok(written)
        })
    }

    /// Subscribe to the conflict list: new entries and changes of state,
    /// queue or assignee, as they become durable.
    pub fn watch_conflicts(&self) -> broadcast::Receiver<ConflictEvent> {
        self.inner.conflict_events.subscribe()
    }
}

impl super::Tx<'_> {
    /// A person's resolution of a record: one change marked as a resolution
    /// (never itself in conflict, no lifecycle check: a reopen is intended).
    pub(crate) fn resolve_record(
        &mut self,
        collection: &str,
        id: &str,
        patch: &Fields,
        undelete: bool,
    ) -> Result<Written> {
        self.resolution_change(collection, id, WriteKind::Resolve, |e| {
            if undelete {
                crate::doc::write_undelete(e.tx, e.collection)?;
            }
            e.write_checked(patch)
        })
    }
}
