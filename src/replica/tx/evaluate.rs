//! The conflict step of a commit: for every record the transaction changed,
//! compute its visible state and conflict entries (`conflict::analyze`), its
//! parents' standing (RejectedFk, unresolved references), and, on an
//! authority, judge the changes peers sent against the validation rules.
//! Records whose standing changes re-evaluate the records that refer to them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use automerge::{ActorId, ChangeHash};

use super::{Staged, Tx};
use crate::codec;
use crate::conflict::{
    self, ChangeRef, ConflictEvent, Entry, EntryState, Human, Kind, ResolvedBy, Side, Verdict,
    entry_id,
};
use crate::error::{Error, Result};
use crate::replica::row::Row;
use crate::replica::watch::ChangeKind;
use crate::schema::{Collection, DECISIONS, FieldType, VERDICTS, Violation};
use crate::store::keys;
use crate::value::{Fields, Value};

const ENTRY_TAG: u8 = b'C';
const ENTRY_VERSION: u8 = 1;

pub(crate) fn encode_entry(e: &Entry) -> Result<Vec<u8>> {
    codec::encode("conflict entry", ENTRY_TAG, ENTRY_VERSION, e)
        .map_err(|source| Error::Metadata { key: "c:", source })
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    codec::decode("conflict entry", ENTRY_TAG, ENTRY_VERSION, bytes).ok()
}

/// 16 hex digits of SHA-256 over a record's key: the prefix of its verdicts' ids.
pub(crate) fn record_hash(collection: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(collection.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id of the verdict on `change` of a record.
pub(crate) fn verdict_id(collection: &str, id: &str, change: &ChangeHash) -> String {
    format!("{}:{change}", record_hash(collection, id))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn text(f: &Fields, k: &str) -> Option<String> {
    f.get(k).and_then(|v| v.as_str()).map(str::to_owned)
}

/// A verdict read from a `_verdict` record's fields.
fn verdict_of(f: &Fields) -> Option<Verdict> {
    let change: ChangeHash = text(f, "change")?.parse().ok()?;
    let accepted = matches!(f.get("accepted"), Some(Value::Bool(true)));
    let codes = strings(f.get("codes"));
    let messages = strings(f.get("messages"));
    let on = strings(f.get("fields"));
    let violations = codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            let mut v = Violation::new(code, messages.get(i).map_or("", String::as_str));
            if let Some(field) = on.get(i).filter(|x| !x.is_empty()) {
                v = v.on(field);
            }
            v
        })
        .collect();
    Some(Verdict {
        change,
        accepted,
        violations,
        by: text(f, "by").unwrap_or_default(),
    })
}

/// People's decisions about an entry, from its `_entry` record's fields.
pub(crate) fn human_of(f: &Fields) -> Human {
    let at = match f.get("at") {
        Some(Value::Timestamp(t) | Value::Int(t)) => *t,
        _ => 0,
    };
    Human {
        queue: text(f, "queue"),
        assignee: text(f, "assignee"),
        decision: text(f, "decision").map(|d| (d, text(f, "by").unwrap_or_default(), at)),
    }
}

/// What children look at in a parent: whether it exists, is hidden, is
/// deleted, and its insert's rejection.
type Standing = Option<(bool, bool, Option<String>)>;

fn standing(row: Option<&Row>) -> Standing {
    row.map(|r| (r.hidden.is_some(), r.deleted, r.insert_rejection.clone()))
}

/// The stored state of a staged record, as the conflict step needs it.
#[derive(Debug, Clone)]
pub(crate) struct Before {
    standing: Standing,
    entries: u32,
    refs: Vec<(String, String, String)>,
}

impl Before {
    pub(crate) fn of(schema: &crate::schema::Schema, collection: &str, row: &Row) -> Self {
        Before {
            standing: standing(Some(row)),
            entries: row.entries,
            refs: schema
                .collection(collection)
                .map(|c| refs_of(c, &row.fields))
                .unwrap_or_default(),
        }
    }
}

/// Whether any collection has a reference to `collection`.
fn referenced(schema: &crate::schema::Schema, collection: &str) -> bool {
    schema.collections().any(|c| {
        c.fields
            .iter()
            .any(|f| matches!(&f.ty, FieldType::Reference(t) if t == collection))
    })
}

pub(crate) fn refs_of(c: &Collection, f: &Fields) -> Vec<(String, String, String)> {
    c.fields
        .iter()
        .filter_map(|fd| match (&fd.ty, f.get(&fd.name)) {
            (FieldType::Reference(target), Some(Value::Ref(pid) | Value::String(pid))) => {
                Some((fd.name.clone(), target.clone(), pid.clone()))
            }
            _ => None,
        })
        .collect()
}

impl Tx<'_> {
    /// The staged record, or the stored row, of a record (for lookups that
    /// must see this transaction's writes).
    pub(crate) fn row_of(&self, collection: &str, id: &str) -> Result<Option<Row>> {
        if let Some(&i) = self.index.get(&(collection.to_owned(), id.to_owned())) {
            let s = &self.staged[i];
            // A discarded entry (data from a peer refused in this
            // transaction) leaves the stored record as it was: read that.
            if !s.discard {
                return Ok(Some(s.row.clone()));
            }
        }
        match self.inner.read_row(collection, id) {
            Err(Error::Corrupt { .. }) => Ok(None),
            other => other,
        }
    }

    fn verdicts_for(&self, collection: &str, id: &str) -> Result<Vec<Verdict>> {
        if !self.staged_verdicts
            && !self
                .inner
                .has_verdicts
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(Vec::new());
        }
        let prefix_id = format!("{}:", record_hash(collection, id));
        let mut found: BTreeMap<String, (Fields, Vec<u8>)> = BTreeMap::new();
        self.inner
            .storage
            .for_each_prefix(&keys::row(VERDICTS, &prefix_id), &mut |k, v| {
                if let (Some(vid), Ok(row)) = (keys::id_of_row(VERDICTS, k), Row::decode(v)) {
                    found.insert(vid.to_owned(), (row.fields, row.author));
                }
                true
            })?;
        for s in &self.staged {
            if s.collection == VERDICTS && s.id.starts_with(&prefix_id) && !s.discard {
                found.insert(s.id.clone(), (s.row.fields.clone(), s.row.author.clone()));
            }
        }
        // Only an authority's verdicts count (the last writer of the record).
        let authorities = self.inner.authorities();
        Ok(found
            .values()
            .filter(|(_, author)| authorities.contains(&ActorId::from(author.as_slice())))
            .map(|(f, _)| f)
            .filter(|f| text(f, "collection").as_deref() == Some(collection))
            .filter(|f| text(f, "record").as_deref() == Some(id))
            .filter_map(verdict_of)
            .collect())
    }

    fn human(&self, entry: &str) -> Option<Human> {
        let row = self.row_of(DECISIONS, entry).ok().flatten()?;
        Some(human_of(&row.fields))
    }

    pub(crate) fn mark_reeval(&mut self, i: usize) {
        let s = &mut self.staged[i];
        if !s.dirty {
            s.dirty = true;
            s.reeval = true;
        }
    }

    /// Run the conflict step over every changed record (see the module docs).
    pub(super) fn evaluate(&mut self, from: usize) -> Result<()> {
        if !self.inner.config.conflicts {
            return Ok(());
        }
        let schema = self.schema.clone();
        let mut queue: VecDeque<usize> = (from..self.staged.len())
            .filter(|&i| self.staged[i].dirty && !self.staged[i].discard)
            .collect();
        let mut budget = self.staged.len() * 8 + 10_000;
        while let Some(i) = queue.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                tracing::warn!("conflict evaluation stopped: too many dependent records");
                break;
            }
            if self.staged[i].discard {
                continue;
            }
            let cname = self.staged[i].collection.clone();
            let id = self.staged[i].id.clone();
            if cname == VERDICTS || cname == DECISIONS {
                let f = &self.staged[i].row.fields;
                if let (Some(tc), Some(tid)) = (text(f, "collection"), text(f, "record"))
                    && !tc.starts_with('_')
                    && schema.collection(&tc).is_ok()
                    && crate::replica::tx::validate_id(&tid).is_ok()
                    && let Ok(Some(j)) = self.entry(&tc, &tid)
                {
                    self.mark_reeval(j);
                    queue.push_back(j);
                }
                continue;
            }
            if cname == crate::schema::ACKS {
                // New clock entries for a device: the records whose last
                // writer it may have been are decided again.
                for j in self.clock_dependents(i)? {
                    self.mark_reeval(j);
                    queue.push_back(j);
                }
                continue;
            }
            if cname.starts_with('_') {
                continue;
            }
            let Ok(c) = schema.collection(&cname) else {
                continue;
            };
            if matches!(self.staged[i].kind, ChangeKind::Remote | ChangeKind::Import)
                && let Some(v) = self.judge(i, c)?
            {
                queue.push_back(v);
            }
            let old = self.staged[i].before.clone();
            // Children compare against the stored state, and those evaluated
            // earlier in this transaction read this record's staged state.
            let before = old.as_ref().and_then(|b| b.standing.clone());
            let staged_before = standing(Some(&self.staged[i].row));
            self.evaluate_one(i, c, old.as_ref())?;
            let after = standing(Some(&self.staged[i].row));
            if before != after || staged_before != after {
                for j in self.referrers(&cname, &id)? {
                    if j != i {
                        self.mark_reeval(j);
                        queue.push_back(j);
                    }
                }
            }
        }
        // Each record's last evaluation is what the batch writes.
        let mut done: Vec<_> = std::mem::take(&mut self.record_ops).into_iter().collect();
        done.sort_by_key(|(i, _)| *i);
        for (_, (ops, events)) in done {
            self.extra.extend(ops);
            self.conflict_events.extend(events);
        }
        Ok(())
    }

    /// For a staged acknowledgement record whose clock entries changed: the
    /// staged records with an entry that compares save times (last writer
    /// wins, or what a user action entry shows between equals) and that the
    /// acknowledged device took part in.
    fn clock_dependents(&mut self, i: usize) -> Result<Vec<usize>> {
        let s = &self.staged[i];
        let clock = |f: &Fields| f.get("clock").and_then(Value::as_str).map(str::to_owned);
        let now = clock(&s.row.fields);
        let stored = match self.inner.read_row(&s.collection, &s.id) {
            Ok(r) => r.and_then(|r| clock(&r.fields)),
            Err(_) => None,
        };
        let Some(origin) = s.row.fields.get("origin").and_then(Value::as_str) else {
            return Ok(Vec::new());
        };
        if now == stored {
            return Ok(Vec::new());
        }
        let origin = origin.to_owned();
        let mut records: Vec<(String, String)> = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::CONFLICTS, &mut |_, v| {
                if let Some(e) = decode_entry(v) {
                    let timed = matches!(
                        e.resolved_by,
                        Some(ResolvedBy::Policy(crate::schema::Policy::LastWriterWins))
                    ) || (e.state == EntryState::Open
                        && e.policy == crate::schema::Policy::UserAction);
                    let involved =
                        e.subject.actor == origin || e.others.iter().any(|o| o.actor == origin);
                    if timed && involved {
                        records.push((e.collection, e.record));
                    }
                }
                true
            })?;
        records.sort();
        records.dedup();
        let mut out = Vec::new();
        for (c, id) in records {
            if let Ok(Some(j)) = self.entry(&c, &id) {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// Stage a record to be evaluated again (if it exists).
    pub(crate) fn reevaluate(&mut self, collection: &str, id: &str) -> Result<()> {
        if let Ok(Some(j)) = self.entry(collection, id) {
            self.mark_reeval(j);
        }
        Ok(())
    }

    /// Stage the records that refer to `collection/id` to be evaluated again.
    pub(crate) fn reevaluate_referrers(&mut self, collection: &str, id: &str) -> Result<()> {
        for j in self.referrers(collection, id)? {
            self.mark_reeval(j);
        }
        Ok(())
    }

    /// The staged entries of the records that refer to `collection/id`.
    fn referrers(&mut self, collection: &str, id: &str) -> Result<Vec<usize>> {
        if !referenced(&self.schema, collection) {
            return Ok(Vec::new());
        }
        let prefix = keys::referrers_of(collection, id);
        let mut kids: Vec<(String, String)> = Vec::new();
        self.inner.storage.for_each_prefix(&prefix, &mut |k, _| {
            if let Some((cc, cid)) = keys::split_referrer(&prefix, k) {
                kids.push((cc.to_owned(), cid.to_owned()));
            }
            true
        })?;
        let schema = self.schema.clone();
        for s in &self.staged {
            let Ok(c) = schema.collection(&s.collection) else {
                continue;
            };
            if refs_of(c, &s.row.fields)
                .iter()
                .any(|(_, t, p)| t == collection && p == id)
            {
                kids.push((s.collection.clone(), s.id.clone()));
            }
        }
        kids.sort();
        kids.dedup();
        let mut out = Vec::new();
        for (cc, cid) in kids {
            if let Ok(Some(j)) = self.entry(&cc, &cid) {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// On an authority: check the latest change a peer made to record `i`
    /// against the rules, and record a verdict if it breaks them (or if it
    /// fixes an earlier rejection). Returns the staged verdict, if any.
    fn judge(&mut self, i: usize, c: &Collection) -> Result<Option<usize>> {
        let me = self.inner.actor.clone();
        if !self.inner.is_authority(&me) {
            return Ok(None);
        }
        let validators = self.inner.validators_of(&c.name);
        let rights = self.inner.rights()?;
        if c.settings.rules.is_empty() && validators.is_empty() && !rights.enforced() {
            return Ok(None);
        }
        let s: &Staged = &self.staged[i];
        let Ok((fields, deleted)) = crate::doc::read_fields(&*s.doc, c) else {
            return Ok(None);
        };
        let mut latest: Option<(crate::hlc::HlcTime, ChangeHash, automerge::ActorId)> = None;
        for h in s.doc.get_heads() {
            if let Some(m) = s.doc.get_change_meta_by_hash(&h)
                && !self.inner.is_authority(m.actor.as_ref())
            {
                let cand = (
                    conflict::change_time(m.timestamp),
                    h,
                    m.actor.clone().into_owned(),
                );
                if latest
                    .as_ref()
                    .is_none_or(|l| (cand.0, cand.1) > (l.0, l.1))
                {
                    latest = Some(cand);
                }
            }
        }
        let Some((_, change, author)) = latest else {
            return Ok(None);
        };
        // A member's write beyond its rights is refused (also a delete).
        let forbidden = rights.enforced() && !rights.can_write(author.to_bytes(), &c.name, &fields);
        if deleted && !forbidden {
            return Ok(None);
        }
        let (cname, id) = (s.collection.clone(), s.id.clone());
        let vid = verdict_id(&cname, &id, &change);
        if self.row_of(VERDICTS, &vid)?.is_some() {
            return Ok(None);
        }
        let mut violations = if deleted {
            Vec::new()
        } else {
            c.violations(&fields)
        };
        if !deleted {
            for v in &validators {
                violations.extend(v(&fields));
            }
        }
        if forbidden {
            let role = rights
                .member(author.to_bytes())
                .map_or_else(|| "no role".to_owned(), |m| format!("role `{}`", m.role));
            violations.push(Violation::new(
                "forbidden",
                &format!(
                    "member {} ({role}) may not write this record of `{}`",
                    &author.to_hex_string()[..12.min(author.to_hex_string().len())],
                    c.name
                ),
            ));
        }
        let rejected_before = self.verdicts_for(&cname, &id)?.iter().any(|v| !v.accepted);
        if violations.is_empty() && !rejected_before {
            return Ok(None);
        }
        let list = |f: &dyn Fn(&Violation) -> String| {
            Value::List(violations.iter().map(|v| Value::String(f(v))).collect())
        };
        let verdict = crate::value::fields([
            ("collection", Value::from(cname.as_str())),
            ("record", Value::from(id.as_str())),
            ("change", Value::from(change.to_string())),
            ("accepted", Value::Bool(violations.is_empty())),
            ("codes", list(&|v| v.code.clone())),
            ("messages", list(&|v| v.message.clone())),
            ("fields", list(&|v| v.field.clone().unwrap_or_default())),
            ("by", Value::from(me.to_hex_string())),
        ]);
        tracing::info!(collection = %cname, id, accepted = violations.is_empty(), "authority verdict");
        self.system = true;
        let written = self.insert(VERDICTS, &vid, verdict);
        self.system = false;
        written?;
        Ok(self.index.get(&(VERDICTS.to_owned(), vid)).copied())
    }

    /// Recompute record `i`'s visible state and entries; queue the keys to
    /// write and the events to publish.
    fn evaluate_one(&mut self, i: usize, c: &Collection, old: Option<&Before>) -> Result<()> {
        let (cname, id) = (self.staged[i].collection.clone(), self.staged[i].id.clone());
        let verdicts = self.verdicts_for(&cname, &id)?;
        let authorities = self.inner.authorities();
        let is_auth = |a: &ActorId| authorities.contains(a);
        let human = |e: &str| self.human(e);
        // A local change on top of a one-line history keeps it one line: no
        // need to read the whole history again (it grows with every write).
        let st = &self.staged[i];
        let linear = (st.row.linear
            && matches!(
                st.kind,
                ChangeKind::Insert | ChangeKind::Update | ChangeKind::Delete
            )
            && st.doc.get_heads().len() == 1)
            || conflict::linear(&st.doc);
        // Save times corrected by the authors' measured clock offsets (one
        // lookup per author).
        let offsets: std::cell::RefCell<HashMap<ActorId, Vec<crate::clock::ClockEntry>>> =
            Default::default();
        let corrected = |a: &ActorId, t: crate::hlc::HlcTime| {
            let mut cache = offsets.borrow_mut();
            let entries = cache.entry(a.clone()).or_insert_with(|| {
                self.inner
                    .clock_entries_with(a, &mut |id| {
                        Ok(self.row_of(crate::schema::ACKS, id)?.map(|r| r.fields))
                    })
                    .unwrap_or_default()
            });
            match crate::clock::offset_at(entries, t.millis()) {
                Some(o) => crate::clock::correct(t, o),
                None => t,
            }
        };
        let cx = conflict::Context {
            linear,
            collection: c,
            record: &id,
            is_authority: &is_auth,
            verdicts: &verdicts,
            human: &human,
            corrected: &corrected,
        };
        let s = &self.staged[i];
        let analysis = conflict::analyze(&s.doc, &cx).unwrap_or_else(|e| {
            // The record was checked when it was applied; if its history
            // cannot be analyzed, it shows automerge's merge as is.
            tracing::warn!(collection = %cname, id, reason = %e.0, "conflict analysis failed");
            None
        });
        let (mut fields, mut deleted) = (s.row.fields.clone(), s.row.deleted);
        let (mut hidden, mut entries) = (None, Vec::new());
        let mut insert_rejection = None;
        // Concurrent heads: the record was last saved by the head change
        // saved last in corrected time.
        let heads = s.doc.get_heads();
        let corrected_meta = (analysis.is_some() && heads.len() > 1)
            .then(|| crate::replica::row::latest_head(&s.doc, &heads, &corrected))
            .flatten();
        if let Some(a) = analysis {
            fields = a.fields;
            deleted = a.deleted;
            insert_rejection = entries_insert_rejection(&a.entries, &s.doc);
            hidden = a.hidden;
            entries = a.entries;
        }
        // Parents: missing (the record waits), rejected or deleted (RejectedFk).
        let mut unresolved = Vec::new();
        let refs = refs_of(c, &fields);
        for (field, target, pid) in &refs {
            let parent = if crate::replica::tx::validate_id(pid).is_ok() {
                self.row_of(target, pid)?
            } else {
                None
            };
            let Some(p) = parent else {
                unresolved.push(field.clone());
                continue;
            };
            let (cause, open, linked) = match (&p.insert_rejection, p.deleted) {
                (Some(rej), _) => (rej.clone(), p.hidden.is_some(), Some(rej.clone())),
                (None, true) => ("deleted".to_owned(), true, None),
                (None, false) => continue,
            };
            if deleted {
                continue;
            }
            let about = format!("{field}\0{target}\0{pid}\0{cause}");
            let eid = entry_id(Kind::RejectedFk, &cname, &id, about.as_bytes());
            let h = human(&eid).unwrap_or_default();
            let (state, resolved_by) = match (h.person(), open) {
                (Some(p), _) => (EntryState::Resolved, Some(p)),
                (None, true) => (EntryState::Open, None),
                (None, false) => (EntryState::Resolved, Some(ResolvedBy::ParentStands)),
            };
            let kept = matches!(&h.decision, Some((d, _, _)) if d == "keep_device");
            if state == EntryState::Open && !kept && hidden.is_none() {
                hidden = Some(eid.clone());
            }
            let s = &self.staged[i];
            let head = s.row.heads().into_iter().next();
            let subject = ChangeRef {
                hash: head.map(|h| h.to_string()).unwrap_or_default(),
                actor: ActorId::from(s.row.author.as_slice()).to_hex_string(),
                time: s.row.modified,
                authority: is_auth(&ActorId::from(s.row.author.as_slice())),
            };
            let why = if linked.is_some() {
                format!("its {field} `{target}/{pid}` was rejected")
            } else {
                format!("its {field} `{target}/{pid}` is deleted")
            };
            entries.push(Entry {
                id: eid,
                kind: Kind::RejectedFk,
                collection: cname.clone(),
                record: id.clone(),
                state,
                resolved_by,
                policy: c.settings.policy,
                queue: h.queue.clone().unwrap_or_else(|| c.queue_name().to_owned()),
                assignee: h.assignee.clone(),
                subject,
                others: Vec::new(),
                fields: vec![field.clone()],
                winner: Some(Side::Other),
                message: if open {
                    format!("{why}; this record waits until it stands")
                } else {
                    format!("{why}; it stands again, so this record is accepted")
                },
                violations: Vec::new(),
                linked,
                parent: Some((target.clone(), pid.clone())),
            });
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));

        // What this evaluation writes, relative to the stored state; a later
        // evaluation of the same record in this transaction replaces it.
        let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut events = Vec::new();
        // Reference index: which records refer to which.
        let old_refs = old.map(|b| b.refs.clone()).unwrap_or_default();
        for (_, t, p) in &old_refs {
            if !refs.iter().any(|(_, t2, p2)| t2 == t && p2 == p) {
                ops.push((keys::referrer(t, p, &cname, &id), None));
            }
        }
        for (_, t, p) in &refs {
            if !old_refs.iter().any(|(_, t2, p2)| t2 == t && p2 == p) {
                ops.push((keys::referrer(t, p, &cname, &id), Some(Vec::new())));
            }
        }

        // Entries: replace the stored ones, publish what changed.
        let had = old.map_or(0, |b| b.entries) > 0 || self.staged[i].row.entries > 0;
        if had || !entries.is_empty() {
            let mut before: BTreeMap<String, Entry> = BTreeMap::new();
            self.inner
                .storage
                .for_each_prefix(&keys::conflicts_of(&cname, &id), &mut |_, v| {
                    if let Some(e) = decode_entry(v) {
                        before.insert(e.id.clone(), e);
                    }
                    true
                })?;
            for e in &entries {
                match before.remove(&e.id) {
                    Some(prev) if prev == *e => {}
                    Some(_) => {
                        put_entry(&mut ops, e)?;
                        events.push(ConflictEvent::Updated(e.clone()));
                    }
                    None => {
                        put_entry(&mut ops, e)?;
                        events.push(ConflictEvent::New(e.clone()));
                    }
                }
            }
            for gone in before.keys() {
                ops.push((keys::conflict(&cname, &id, gone), None));
                ops.push((keys::conflict_index(gone), None));
            }
        }
        self.record_ops.insert(i, (ops, events));
        if entries.is_empty() {
            self.entries_of.remove(&i);
        } else {
            self.entries_of.insert(i, entries.clone());
        }
        let s = &mut self.staged[i];
        if let Some((modified, author)) = corrected_meta {
            s.row.modified = modified;
            s.row.author = author;
        }
        s.row.fields = fields;
        s.row.deleted = deleted;
        s.row.hidden = hidden;
        s.row.unresolved = unresolved;
        s.row.insert_rejection = insert_rejection;
        s.row.linear = linear;
        s.row.entries = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        s.row.open = u32::try_from(
            entries
                .iter()
                .filter(|e| e.state == EntryState::Open)
                .count(),
        )
        .unwrap_or(u32::MAX);
        Ok(())
    }
}

/// The writes that store entry `e` (and its index key).
fn put_entry(ops: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>, e: &Entry) -> Result<()> {
    ops.push((
        keys::conflict(&e.collection, &e.record, &e.id),
        Some(encode_entry(e)?),
    ));
    let mut at = e.collection.as_bytes().to_vec();
    at.push(0);
    at.extend_from_slice(e.record.as_bytes());
    ops.push((keys::conflict_index(&e.id), Some(at)));
    Ok(())
}

/// The rejection entry of the record's first change (its insert), if any.
fn entries_insert_rejection(entries: &[Entry], doc: &automerge::Automerge) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.kind == Kind::Rejected)
        .find(|e| {
            e.subject
                .hash
                .parse::<ChangeHash>()
                .ok()
                .and_then(|h| doc.get_change_meta_by_hash(&h))
                .is_some_and(|m| m.deps.is_empty())
        })
        .map(|e| e.id.clone())
}
