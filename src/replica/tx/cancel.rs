//! The compensating change that cancels a pending event (see
//! [`Replica::cancel_event`](crate::Replica::cancel_event)).

use automerge::ChangeHash;

use super::Tx;
use crate::conflict::mark::{Mark, WriteKind};
use crate::error::{Error, Result};
use crate::pending::{EventKind, PendingEvent};
use crate::value::{Fields, Value};

impl Tx<'_> {
    /// Write the change that undoes event `e` (see [`Replica::cancel_event`]).
    pub(crate) fn compensate(&mut self, e: &PendingEvent) -> Result<()> {
        let schema = self.schema.clone();
        let c = schema.collection(&e.collection)?;
        let Some(i) = self.entry(&e.collection, &e.record)? else {
            return Ok(());
        };
        let deleted = self.staged[i].row.deleted;
        match e.kind {
            EventKind::Insert => {
                if !deleted {
                    self.resolution_change(&e.collection, &e.record, WriteKind::Delete, |ed| {
                        crate::doc::write_tombstone(ed.tx, ed.collection)
                    })?;
                }
            }
            EventKind::Delete => {
                if deleted {
                    self.resolution_change(&e.collection, &e.record, WriteKind::Update, |ed| {
                        crate::doc::write_undelete(ed.tx, ed.collection)
                    })?;
                }
            }
            EventKind::Update => {
                if deleted {
                    return Ok(());
                }
                let s = &self.staged[i];
                let hash: ChangeHash = e.change.parse().map_err(|_| Error::Cancel {
                    id: e.id,
                    reason: format!("its change `{}` is not a change hash", e.change),
                })?;
                let Some(meta) = s.doc.get_change_meta_by_hash(&hash) else {
                    return Err(Error::Cancel {
                        id: e.id,
                        reason: "its change is not in the record".into(),
                    });
                };
                let mark = Mark::parse(meta.message.as_deref()).unwrap_or_else(|| {
                    let mut m = Mark::new(WriteKind::Update);
                    m.assigned = c.fields.iter().map(|f| f.name.clone()).collect();
                    m
                });
                let at = |heads: &[ChangeHash]| -> Fields {
                    s.doc
                        .fork_at(heads)
                        .ok()
                        .and_then(|d| crate::doc::read_fields(&d, c).ok())
                        .map(|(f, _)| f)
                        .unwrap_or_default()
                };
                let before = at(&meta.deps);
                let after = at(&[hash]);
                let current = s.row.fields.clone();
                let mut patch = Fields::new();
                let mut increments = Vec::new();
                for f in mark.assigned.iter().chain(&mark.merged) {
                    let Ok(field) = c.field(f) else { continue };
                    if field.ty == crate::schema::FieldType::Counter {
                        let n = |x: &Fields| x.get(f).and_then(Value::as_i64).unwrap_or(0);
                        let delta = n(&after) - n(&before);
                        if delta != 0 {
                            increments.push((f.clone(), -delta));
                        }
                    } else if current.get(f) == after.get(f) && before.get(f) != after.get(f) {
                        patch.insert(f.clone(), before.get(f).cloned().unwrap_or(Value::Null));
                    }
                }
                if patch.is_empty() && increments.is_empty() {
                    return Ok(());
                }
                let patch = c.check_patch(&patch)?;
                self.resolution_change(&e.collection, &e.record, WriteKind::Update, |ed| {
                    ed.write_checked(&patch)?;
                    for (f, by) in &increments {
                        ed.increment(f, *by)?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}
