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
    SideVersion,
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
        // The set follows the rights (rebuilt when members or roles change).
        if let Err(e) = self.rights() {
            tracing::warn!(error = %e, "cannot read the group's members; no authorities known");
        }
        self.authorities
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn is_authority(&self, actor: &ActorId) -> bool {
        self.authorities().contains(actor)
    }
}

/// A document's fields and deleted flag as of `heads` (empty if they are
/// not all in it).
fn fields_at(
    doc: &Automerge,
    c: &crate::schema::Collection,
    heads: &[ChangeHash],
) -> (Fields, bool) {
    doc.fork_at(heads)
        .ok()
        .and_then(|d| crate::doc::read_fields(&d, c).ok())
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
    /// subject change), the subject's version, the other side's, what the
    /// record shows, and a per-field diff. Each side is named as people name
    /// it ([`Entry::side_name`]). The losing values are read from the
    /// record's history, so they stay readable after any resolution.
    pub fn conflict(&self, id: &str) -> Result<Option<EntryDetail>> {
        let Some(entry) = self.conflict_entry(id)? else {
            return Ok(None);
        };
        let schema = self.schema();
        let c = schema.collection(&entry.collection)?;
        let (visible, visible_deleted) = self
            .get(&entry.collection, &entry.record)?
            .map(|r| (r.fields, r.meta.deleted))
            .unwrap_or_default();
        let subject: Vec<ChangeHash> = entry.subject.hash.parse().into_iter().collect();
        let others = hashes(&entry.others);
        let (base, mine, theirs) = self.with_doc(&entry.collection, &entry.record, |doc| {
            let deps: Vec<ChangeHash> = subject
                .first()
                .and_then(|h| doc.get_change_meta_by_hash(h))
                .map(|m| m.deps)
                .unwrap_or_default();
            let base = if deps.is_empty() {
                Fields::new()
            } else {
                fields_at(doc, c, &deps).0
            };
            let mine = fields_at(doc, c, &subject);
            let theirs = if others.is_empty() {
                (visible.clone(), visible_deleted)
            } else {
                fields_at(doc, c, &others)
            };
            Ok((base, mine, theirs))
        })?;
        let version = |side: Side, (fields, deleted): (Fields, bool)| SideVersion {
            name: entry.side_name(side),
            members: entry.side_members(side),
            authority: entry.authority_side() == Some(side),
            fields,
            deleted,
        };
        let subject = version(Side::Subject, mine);
        let other = version(Side::Other, theirs);
        let mut names: Vec<&String> = base
            .keys()
            .chain(subject.fields.keys())
            .chain(other.fields.keys())
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
                    subject: subject.fields.get(f).cloned(),
                    other: other.fields.get(f).cloned(),
                    visible: visible.get(f).cloned(),
                };
                let same = d.base == d.subject && d.subject == d.other && d.other == d.visible;
                (!same).then_some(d)
            })
            .collect();
        Ok(Some(EntryDetail {
            entry,
            base,
            subject,
            other,
            visible,
            visible_deleted,
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

    /// Resolve an entry. The chosen side's values of the entry's fields (and
    /// a `reopen` status) are written to the record as one ordinary change
    /// that follows both sides and carries the decision, and the decision is
    /// recorded in the entry's replicated `_entry` record (with the note), in
    /// one transaction. For an edit of a deleted record, keeping the deleting
    /// side deletes the record and keeping the editing side brings it back
    /// with the edit. If two people resolve one entry concurrently, both
    /// changes replicate and every replica shows the same outcome
    /// (automerge's deterministic winner for each field written by both).
    ///
    /// [`Choice::KeepAuthority`] and [`Choice::KeepDevice`] need exactly one
    /// side to be an authority; between equals, name the side with
    /// [`Choice::Keep`] (a member id of its author). Anything else is
    /// [`Error::Resolve`], saying which names the entry's sides have.
    pub fn resolve(&self, id: &str, resolution: Resolution) -> Result<Written> {
        let detail = self
            .conflict(id)?
            .ok_or_else(|| Error::NoEntry { id: id.to_owned() })?;
        let e = &detail.entry;
        let bad = |reason: String| Error::Resolve {
            id: id.to_owned(),
            reason,
        };
        let names = || {
            format!(
                "its sides are `{}` and `{}`",
                e.side_name(Side::Subject),
                e.side_name(Side::Other)
            )
        };
        let schema = self.schema();
        let c = schema.collection(&e.collection)?;
        let roles = e.authority_side().is_some();
        let keep = |side: Side| -> String {
            if roles {
                if e.authority_side() == Some(side) {
                    "keep_authority".to_owned()
                } else {
                    "keep_device".to_owned()
                }
            } else {
                format!(
                    "keep:{}",
                    e.side_members(side).first().cloned().unwrap_or_default()
                )
            }
        };
        let chosen: Option<Side> = match &resolution.choice {
            Choice::KeepAuthority | Choice::KeepDevice if !roles => {
                return Err(bad(format!(
                    "neither side of this conflict is an authority, so there is no {} side: {}",
                    if matches!(resolution.choice, Choice::KeepAuthority) {
                        "authority"
                    } else {
                        "device"
                    },
                    names()
                )));
            }
            Choice::KeepAuthority => e.authority_side(),
            Choice::KeepDevice => e.authority_side().map(|a| match a {
                Side::Subject => Side::Other,
                Side::Other => Side::Subject,
            }),
            Choice::Keep(name) if !roles && (name == "authority" || name == "device") => {
                return Err(bad(format!(
                    "neither side of this conflict is an authority, so there is no {name} side: {}",
                    names()
                )));
            }
            Choice::Keep(name) => Some(
                e.side_named(name)
                    .ok_or_else(|| bad(format!("no side is named `{name}`: {}", names())))?,
            ),
            Choice::KeepSide(side) => Some(*side),
            Choice::Fields(_) | Choice::Custom(_) => None,
        };
        let pick = |side: Side, f: &str| -> Value {
            detail
                .side(side)
                .fields
                .get(f)
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (decision, mut patch): (String, Fields) = match (&resolution.choice, chosen) {
            (Choice::Fields(map), _) => {
                if let Some(f) = map.keys().find(|f| !e.fields.contains(f)) {
                    return Err(bad(format!("`{f}` is not a field of this conflict")));
                }
                (
                    "fields".to_owned(),
                    map.iter().map(|(f, s)| (f.clone(), pick(*s, f))).collect(),
                )
            }
            (Choice::Custom(values), _) => ("custom".to_owned(), c.check_patch(values)?),
            (_, Some(side)) => (
                keep(side),
                e.fields
                    .iter()
                    .map(|f| (f.clone(), pick(side, f)))
                    .collect(),
            ),
            (_, None) => return Err(bad(names())),
        };
        let authority_kept = chosen.is_some() && chosen == e.authority_side();
        match e.kind {
            Kind::Rejected if !authority_kept => {
                return Err(bad(
                    "a rejection is lifted only by a fix that the authority accepts; resolve it with keep_authority to dismiss it".to_owned(),
                ));
            }
            Kind::Rejected | Kind::RejectedFk => patch.clear(),
            _ => {}
        }
        // Required fields cannot be removed; a side that lacks one keeps the
        // current value.
        patch.retain(|k, v| !(matches!(v, Value::Null) && c.field(k).is_ok_and(|f| f.required)));
        if let Some(state) = &resolution.reopen {
            let Some(l) = &c.settings.lifecycle else {
                return Err(bad("the collection has no status to reopen".to_owned()));
            };
            patch.insert(
                l.field.clone(),
                c.check_value(&l.field, &Value::from(state.as_str()))?,
            );
        }
        // An edit of a deleted record: the subject is the edit, the other
        // side the delete.
        // Once decided, the policy no longer takes the delete (or the edit)
        // out, so the resolution writes the kept side's standing explicitly.
        let (undelete, delete) = match (e.kind, chosen) {
            (Kind::EditOfDeleted, Some(Side::Subject)) => (true, false),
            (Kind::EditOfDeleted, Some(Side::Other)) => (false, true),
            _ => (false, false),
        };
        if delete {
            patch.clear();
        }
        let delete_child = e.kind == Kind::RejectedFk && authority_kept;
        let decision = if resolution.reopen.is_some() {
            format!("reopen+{decision}")
        } else {
            decision
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
            tx.resolving = Some((entry_id.clone(), decision.clone()));
            let written = if delete_child {
                tx.delete(&coll, &rec)
            } else {
                tx.resolve_record(&coll, &rec, &patch, undelete, delete)
            };
            tx.resolving = None;
            let written = written?;
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
        delete: bool,
    ) -> Result<Written> {
        self.resolution_change(collection, id, WriteKind::Resolve, |e| {
            if undelete {
                crate::doc::write_undelete(e.tx, e.collection)?;
            }
            if delete {
                crate::doc::write_tombstone(e.tx, e.collection)?;
            }
            e.write_checked(patch)
        })
    }
}
