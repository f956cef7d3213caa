//! The reaction step of a commit: run the reactions registered for the
//! records this transaction changed (see `replica/reactions.rs`), staging the
//! records they write in the same transaction.

use super::Tx;
use crate::error::Result;
use crate::replica::reactions::{Trigger, written_id};
use crate::value::Value;

/// Passes over records written by reactions (a reaction's write can trigger
/// another reaction); more would suggest reactions that trigger each other.
const MAX_PASSES: usize = 4;

impl Tx<'_> {
    /// The operation that wrote the visible value of `field` (the same on
    /// every replica holding the same changes).
    fn cause_of(
        doc: &automerge::Automerge,
        c: &crate::schema::Collection,
        field: &str,
        visible: Option<&Value>,
    ) -> String {
        let Ok(f) = c.field(field) else {
            return String::new();
        };
        let Ok(all) = crate::doc::read_frontier(doc, f) else {
            return String::new();
        };
        let mut ops: Vec<String> = all
            .iter()
            .filter(|(v, _)| Some(v) == visible)
            .map(|(_, id)| id.to_string())
            .collect();
        if ops.is_empty() {
            ops = all.iter().map(|(_, id)| id.to_string()).collect();
        }
        ops.sort();
        ops.pop().unwrap_or_default()
    }

    /// Run reactions for the records staged from `from` on; returns the first
    /// index of the records they staged.
    fn react_once(&mut self, from: usize) -> Result<usize> {
        let end = self.staged.len();
        let schema = self.schema.clone();
        let mut writes = Vec::new();
        for i in from..end {
            let s = &self.staged[i];
            if !s.dirty
                || s.discard
                || s.collection.starts_with('_')
                || s.row.deleted
                || s.row.hidden.is_some()
            {
                continue;
            }
            let reactions = self.inner.reactions_of(&s.collection);
            if reactions.is_empty() {
                continue;
            }
            let Ok(c) = schema.collection(&s.collection) else {
                continue;
            };
            for r in reactions {
                let after = s.row.fields.get(&r.field);
                let before = s.before_fields.as_ref();
                match before {
                    Some(b) if b.get(&r.field) == after => continue,
                    None if after.is_none() => continue,
                    _ => {}
                }
                let cause = Self::cause_of(&s.doc, c, &r.field, after);
                let t = Trigger {
                    collection: &s.collection,
                    id: &s.id,
                    before,
                    after: &s.row.fields,
                    cause: &cause,
                };
                if !(r.when)(&t) {
                    continue;
                }
                if r.command.is_some() {
                    // A program runs later, from the durable queue written
                    // in this transaction.
                    let job = crate::replica::jobs::Job::new(&r, &t);
                    match job.encode() {
                        Ok(v) => self.extra.push((job.key(), Some(v))),
                        Err(e) => {
                            tracing::warn!(reaction = %r.name, error = %e, "could not queue a reaction")
                        }
                    }
                    self.queued_jobs = true;
                    continue;
                }
                for w in (r.then)(&t) {
                    let id = written_id(&r, &t, &w.key);
                    writes.push((r.name.clone(), w, id));
                }
            }
        }
        for (name, w, id) in writes {
            if self.entry(&w.collection, &id)?.is_some() {
                continue;
            }
            if let Err(e) = self.insert(&w.collection, &id, w.fields) {
                tracing::warn!(reaction = %name, collection = %w.collection, id, error = %e, "a reaction's write was refused");
            }
        }
        Ok(end)
    }

    /// Run reactions until they write nothing more (at most [`MAX_PASSES`]).
    /// Returns the index of the first record they staged (the records the
    /// conflict step has not evaluated yet), or `None` if none.
    pub(super) fn react(&mut self) -> Result<Option<usize>> {
        let start = self.staged.len();
        let mut from = 0;
        for _ in 0..MAX_PASSES {
            let end = self.react_once(from)?;
            if self.staged.len() == end {
                break;
            }
            from = end;
        }
        Ok((self.staged.len() > start).then_some(start))
    }
}
