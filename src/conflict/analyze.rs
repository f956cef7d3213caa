//! The pure analysis of one record: its change history (an automerge
//! document), the verdicts and decisions about it → the visible record and its
//! conflict entries. No IO: everything it needs comes in a [`Context`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{ActorId, Automerge, ChangeHash, ObjId};

use super::mark::{Mark, WriteKind};
use super::{ChangeRef, Entry, EntryState, Kind, ResolvedBy, Side, entry_id};
use crate::doc::{self, ShapeError};
use crate::hlc::HlcTime;
use crate::schema::{Collection, Granularity, Policy, Violation};
use crate::value::{Fields, Value};

/// An authority's verdict on one change of the record (a `_verdict` document).
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub(crate) change: ChangeHash,
    pub(crate) accepted: bool,
    pub(crate) violations: Vec<Violation>,
    pub(crate) by: String,
}

/// What people decided about an entry (its `_entry` document).
#[derive(Debug, Clone, Default)]
pub(crate) struct Human {
    pub(crate) queue: Option<String>,
    pub(crate) assignee: Option<String>,
    /// Set once a person resolved it.
    pub(crate) decision: Option<(String, String, i64)>,
}

impl Human {
    /// `ResolvedBy::Person` if a person decided.
    pub(crate) fn person(&self) -> Option<ResolvedBy> {
        self.decision
            .as_ref()
            .map(|(decision, by, at)| ResolvedBy::Person {
                decision: decision.clone(),
                by: by.clone(),
                at: *at,
            })
    }
}

/// What the analysis needs besides the document.
pub(crate) struct Context<'a> {
    pub(crate) collection: &'a Collection,
    pub(crate) record: &'a str,
    pub(crate) is_authority: &'a dyn Fn(&ActorId) -> bool,
    pub(crate) verdicts: &'a [Verdict],
    pub(crate) human: &'a dyn Fn(&str) -> Option<Human>,
    /// Whether the history is one line of changes (see [`linear`]).
    pub(crate) linear: bool,
    /// A change's save time in the reference clock: its HLC time corrected
    /// by its author's measured clock offset (see `docs/conflicts.md`,
    /// "Clocks"); the time itself when no offset is known.
    pub(crate) corrected: &'a dyn Fn(&ActorId, HlcTime) -> HlcTime,
}

/// The visible record and its entries.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    pub(crate) fields: Fields,
    pub(crate) deleted: bool,
    /// The rejection entry that hides the whole record (its insert was refused).
    pub(crate) hidden: Option<String>,
    pub(crate) entries: Vec<Entry>,
}

/// The HLC time automerge stores in a change.
pub(crate) fn change_time(t: i64) -> HlcTime {
    HlcTime::from_change_time(t)
}

struct Ch {
    hash: ChangeHash,
    actor: usize,
    seq: u64,
    start_op: u64,
    max_op: u64,
    time: HlcTime,
    deps: Vec<ChangeHash>,
    mark: Mark,
    /// Per actor, the highest seq this change has seen (itself included).
    clock: Vec<u64>,
}

struct History {
    actors: Vec<ActorId>,
    changes: Vec<Ch>,
    by_hash: HashMap<ChangeHash, usize>,
}

impl History {
    fn build(doc: &Automerge, c: &Collection) -> History {
        let metas = doc.get_changes_meta(&[]);
        let mut actors: Vec<ActorId> = Vec::new();
        let mut actor_ix: HashMap<ActorId, usize> = HashMap::new();
        for m in &metas {
            if !actor_ix.contains_key(m.actor.as_ref()) {
                actor_ix.insert(m.actor.as_ref().clone(), actors.len());
                actors.push(m.actor.as_ref().clone());
            }
        }
        // Causal order: automerge keeps changes in an order where deps come
        // first; sort defensively if not.
        let mut order: Vec<usize> = Vec::with_capacity(metas.len());
        let mut placed: HashMap<ChangeHash, usize> = HashMap::new();
        let mut pending: Vec<usize> = (0..metas.len()).collect();
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|&i| {
                let ready = metas[i].deps.iter().all(|d| placed.contains_key(d));
                if ready {
                    placed.insert(metas[i].hash, order.len());
                    order.push(i);
                }
                !ready
            });
            if pending.len() == before {
                // Missing dependencies: treat the rest as roots.
                for i in pending.drain(..) {
                    placed.insert(metas[i].hash, order.len());
                    order.push(i);
                }
            }
        }
        let n_actors = actors.len();
        let mut changes: Vec<Ch> = Vec::with_capacity(metas.len());
        let mut by_hash = HashMap::with_capacity(metas.len());
        for &i in &order {
            let m = &metas[i];
            let actor = actor_ix[m.actor.as_ref()];
            let mut clock = vec![0u64; n_actors];
            for d in &m.deps {
                if let Some(&j) = by_hash.get(d) {
                    let dc: &Ch = &changes[j];
                    for (a, s) in clock.iter_mut().zip(&dc.clock) {
                        *a = (*a).max(*s);
                    }
                }
            }
            clock[actor] = clock[actor].max(m.seq);
            let mark = Mark::parse(m.message.as_deref()).unwrap_or_else(|| foreign_mark(c));
            by_hash.insert(m.hash, changes.len());
            changes.push(Ch {
                hash: m.hash,
                actor,
                seq: m.seq,
                start_op: m.start_op,
                max_op: m.max_op,
                time: change_time(m.timestamp),
                deps: m.deps.clone(),
                mark,
                clock,
            });
        }
        History {
            actors,
            changes,
            by_hash,
        }
    }

    /// Whether change `a` is an ancestor of change `b`.
    fn before(&self, a: usize, b: usize) -> bool {
        a != b && self.changes[b].clock[self.changes[a].actor] >= self.changes[a].seq
    }

    fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b && !self.before(a, b) && !self.before(b, a)
    }

    /// Whether every earlier change is an ancestor of change `i`.
    fn full_cut(&self, i: usize) -> bool {
        self.changes[i].clock.iter().sum::<u64>() == i as u64 + 1
    }

    /// The change that wrote the operation `op`.
    fn change_of(&self, op: &ObjId) -> Option<usize> {
        let automerge::ObjId::Id(counter, actor, _) = op else {
            return None;
        };
        self.changes.iter().position(|c| {
            &self.actors[c.actor] == actor && c.start_op <= *counter && *counter <= c.max_op
        })
    }

    fn change_ref(&self, i: usize, is_authority: &dyn Fn(&ActorId) -> bool) -> ChangeRef {
        let c = &self.changes[i];
        ChangeRef {
            hash: c.hash.to_string(),
            actor: self.actors[c.actor].to_hex_string(),
            time: c.time,
            authority: is_authority(&self.actors[c.actor]),
        }
    }
}

/// A change without a mark (made by another automerge program): it counts as
/// assigning every field.
fn foreign_mark(c: &Collection) -> Mark {
    let mut m = Mark::new(WriteKind::Update);
    m.assigned = c.fields.iter().map(|f| f.name.clone()).collect();
    m
}

/// Whether changes `i` and `j` both wrote field `f` with the same value
/// (`cache` keeps each change's value of a field).
fn same_value(
    doc: &Automerge,
    h: &History,
    c: &Collection,
    f: &str,
    i: usize,
    j: usize,
    cache: &mut HashMap<(usize, String), Option<Value>>,
) -> bool {
    let Ok(fd) = c.field(f) else {
        return false;
    };
    let mut value = |k: usize| {
        cache
            .entry((k, f.to_owned()))
            .or_insert_with(|| doc::read_scalar_at(doc, fd, &[h.changes[k].hash]))
            .clone()
    };
    let (a, b) = (value(i), value(j));
    a.is_some() && a == b
}

/// Whether the history is one line of changes (no concurrency at all).
pub(crate) fn linear(doc: &Automerge) -> bool {
    if doc.get_heads().len() > 1 {
        return false;
    }
    doc.get_changes_meta(&[]).iter().all(|m| m.deps.len() <= 1)
}

/// What is not applied: per change, the fields whose writes are ignored and
/// whether its delete is ignored.
#[derive(Default)]
struct Suppressed {
    fields: HashMap<ChangeHash, BTreeSet<String>>,
    deletes: BTreeSet<ChangeHash>,
}

impl Suppressed {
    fn field(&mut self, h: ChangeHash, f: &str) {
        self.fields.entry(h).or_default().insert(f.to_owned());
    }
    fn has_field(&self, h: &ChangeHash, f: &str) -> bool {
        self.fields.get(h).is_some_and(|s| s.contains(f))
    }
}

struct Candidate {
    kind: Kind,
    subject: usize,
    others: BTreeSet<usize>,
    /// `others`, by time then hash.
    order: Vec<usize>,
    fields: BTreeSet<String>,
}

/// Analyze a record. `Ok(None)` when there is nothing to analyze (a linear
/// history with no verdicts): the automerge fields are the visible record.
pub(crate) fn analyze(doc: &Automerge, cx: &Context<'_>) -> Result<Option<Analysis>, ShapeError> {
    if cx.verdicts.is_empty() && cx.linear {
        return Ok(None);
    }
    let c = cx.collection;
    let h = History::build(doc, c);
    let n = h.changes.len();
    let status = c.settings.lifecycle.as_ref();
    let status_field = status.map(|l| l.field.as_str());
    let auth = |i: usize| (cx.is_authority)(&h.actors[h.changes[i].actor]);

    // Rejections, and the accepted changes that lift them.
    let mut rejected: BTreeMap<usize, &Verdict> = BTreeMap::new();
    let mut lifted: BTreeSet<usize> = BTreeSet::new();
    for v in cx.verdicts.iter().filter(|v| !v.accepted) {
        let Some(&r) = h.by_hash.get(&v.change) else {
            continue;
        };
        let lift = cx.verdicts.iter().filter(|a| a.accepted).any(|a| {
            h.by_hash
                .get(&a.change)
                .is_some_and(|&k| k == r || h.before(r, k))
        });
        if lift {
            lifted.insert(r);
        }
        rejected.entry(r).or_insert(v);
    }
    let standing_rejected = |i: usize| rejected.contains_key(&i) && !lifted.contains(&i);

    // Concurrent pairs → candidate entries, grouped by (kind, subject).
    let mut cands: BTreeMap<(Kind, usize), Candidate> = BTreeMap::new();
    let mut add = |kind: Kind, subject: usize, other: usize, fields: BTreeSet<String>| {
        let e = cands.entry((kind, subject)).or_insert_with(|| Candidate {
            kind,
            subject,
            others: BTreeSet::new(),
            order: Vec::new(),
            fields: BTreeSet::new(),
        });
        e.others.insert(other);
        e.fields.extend(fields);
    };
    let mut written: HashMap<(usize, String), Option<Value>> = HashMap::new();
    let without_status = |s: BTreeSet<String>| -> BTreeSet<String> {
        s.into_iter()
            .filter(|f| Some(f.as_str()) != status_field)
            .collect()
    };
    for i in 0..n {
        if h.full_cut(i) {
            continue;
        }
        for j in (0..i).rev() {
            if h.before(j, i) {
                if h.full_cut(j) {
                    break;
                }
                continue;
            }
            if !h.concurrent(i, j) || standing_rejected(i) || standing_rejected(j) {
                continue;
            }
            let (a, b) = (&h.changes[j], &h.changes[i]);
            if a.mark.kind == WriteKind::Resolve || b.mark.kind == WriteKind::Resolve {
                continue;
            }
            let (da, db) = (
                a.mark.kind == WriteKind::Delete,
                b.mark.kind == WriteKind::Delete,
            );
            if da && db {
                continue;
            }
            if da != db {
                let (edit, del) = if da { (i, j) } else { (j, i) };
                let touched: BTreeSet<String> = h.changes[edit].mark.touched().cloned().collect();
                if !touched.is_empty() {
                    add(Kind::EditOfDeleted, edit, del, touched);
                }
                continue;
            }
            let mut regression = false;
            if let Some(l) = status {
                for (stale, adv) in [(j, i), (i, j)] {
                    let (s, t) = (&h.changes[stale].mark, &h.changes[adv].mark);
                    let (Some(base), Some(new)) = (
                        s.base_status.as_deref().and_then(|x| l.rank(x)),
                        t.new_status.as_deref().and_then(|x| l.rank(x)),
                    ) else {
                        continue;
                    };
                    let own = s.new_status.as_deref().and_then(|x| l.rank(x));
                    if new > base && own.is_none_or(|o| o < new) {
                        regression = true;
                        // Field granularity: every field the stale change
                        // touched (Pega keeps the client's whole case data);
                        // record granularity: the record, so every field
                        // either side touched.
                        let mut fields: BTreeSet<String> = s.touched().cloned().collect();
                        if c.settings.granularity == Granularity::Record {
                            fields.extend(t.touched().cloned());
                        }
                        add(Kind::StatusRegression, stale, adv, without_status(fields));
                    }
                }
            }
            if regression {
                continue;
            }
            let contested: BTreeSet<String> = match c.settings.granularity {
                Granularity::Field => a
                    .mark
                    .assigned
                    .intersection(&b.mark.assigned)
                    .cloned()
                    .collect(),
                Granularity::Record => {
                    if a.mark.touched().next().is_some() && b.mark.touched().next().is_some() {
                        a.mark.touched().chain(b.mark.touched()).cloned().collect()
                    } else {
                        BTreeSet::new()
                    }
                }
            };
            // Fields both wrote with the same value are no conflict (two
            // main nodes whose reactions wrote one record, two devices that
            // both closed a job).
            let contested: BTreeSet<String> = without_status(contested)
                .into_iter()
                .filter(|f| !same_value(doc, &h, c, f, i, j, &mut written))
                .collect();
            if contested.is_empty() {
                continue;
            }
            // Between an authority and a device the entry is about the
            // device's change; between equals (two devices, or two
            // authorities), about the earlier one.
            let (aa, ab) = (auth(j), auth(i));
            let subject = if aa != ab {
                if aa { i } else { j }
            } else if (a.time, a.hash) < (b.time, b.hash) {
                j
            } else {
                i
            };
            let other = if subject == i { j } else { i };
            add(Kind::ConcurrentEdit, subject, other, contested);
        }
    }

    // People's decisions: the resolution changes in the history, by the entry
    // they name (of two concurrent ones, the later by time and hash).
    let mut resolutions: HashMap<String, usize> = HashMap::new();
    for (i, ch) in h.changes.iter().enumerate() {
        if ch.mark.kind != WriteKind::Resolve {
            continue;
        }
        if let Some(e) = &ch.mark.entry {
            let slot = resolutions.entry(e.clone()).or_insert(i);
            let cur = &h.changes[*slot];
            if (ch.time, ch.hash) > (cur.time, cur.hash) {
                *slot = i;
            }
        }
    }
    // Last writer wins compares save times, each corrected by its author's
    // clock offset as measured by an authority (the same on every peer).
    let lww_key = |x: usize| {
        let ch = &h.changes[x];
        ((cx.corrected)(&h.actors[ch.actor], ch.time), ch.hash)
    };

    // Decide each entry; collect what is not applied.
    let mut sup = Suppressed::default();
    let mut entries = Vec::new();
    let mut hidden = None;
    let queue = c.queue_name().to_owned();
    let policy = c.settings.policy;
    for (&r, v) in &rejected {
        let ch = &h.changes[r];
        let id = entry_id(Kind::Rejected, &c.name, cx.record, &ch.hash.0);
        let human = (cx.human)(&id).unwrap_or_default();
        let lifted_now = lifted.contains(&r);
        if !lifted_now {
            for f in &ch.mark.assigned {
                sup.field(ch.hash, f);
            }
            if ch.mark.kind == WriteKind::Delete {
                sup.deletes.insert(ch.hash);
            }
            if ch.deps.is_empty() && hidden.as_ref().is_none_or(|h: &String| id < *h) {
                hidden = Some(id.clone());
            }
        }
        let (state, resolved_by) = if lifted_now {
            (EntryState::Resolved, Some(ResolvedBy::Accepted))
        } else if let Some(p) = human.person() {
            (EntryState::Resolved, Some(p))
        } else {
            (EntryState::Open, None)
        };
        let messages: Vec<&str> = v.violations.iter().map(|x| x.message.as_str()).collect();
        entries.push(Entry {
            id,
            kind: Kind::Rejected,
            collection: c.name.clone(),
            record: cx.record.to_owned(),
            state,
            resolved_by,
            policy,
            queue: human.queue.clone().unwrap_or_else(|| queue.clone()),
            assignee: human.assignee.clone(),
            subject: h.change_ref(r, cx.is_authority),
            others: Vec::new(),
            fields: ch.mark.assigned.iter().cloned().collect(),
            winner: Some(Side::Other),
            message: format!(
                "refused by authority {}: {}{}",
                short(&v.by),
                messages.join("; "),
                if lifted_now {
                    " (a later change was accepted)"
                } else {
                    ""
                }
            ),
            violations: v.violations.clone(),
            linked: None,
            parent: None,
        });
    }
    for mut cand in cands.into_values() {
        // Changes in causal order differ between replicas; order the other
        // side by time and hash, the same everywhere.
        let mut ordered: Vec<usize> = cand.others.iter().copied().collect();
        ordered.sort_by_key(|&o| (h.changes[o].time, h.changes[o].hash));
        cand.order = ordered;
        let s = cand.subject;
        let sch = &h.changes[s];
        let id = entry_id(cand.kind, &c.name, cx.record, &sch.hash.0);
        let human = (cx.human)(&id).unwrap_or_default();
        // A person decided when a resolution change naming the entry is in
        // the history: its data and the decision arrive together (the
        // `_entry` record only adds the note, queue and assignee).
        let person = resolutions.get(&id).map(|&r| {
            let rc = &h.changes[r];
            ResolvedBy::Person {
                decision: rc
                    .mark
                    .decision
                    .clone()
                    .or_else(|| human.decision.as_ref().map(|d| d.0.clone()))
                    .unwrap_or_else(|| "resolved".to_owned()),
                by: h.actors[rc.actor].to_hex_string(),
                at: i64::try_from(rc.time.millis()).unwrap_or(i64::MAX),
            }
        });
        let subj_auth = auth(s);
        let other_auth = cand.others.iter().any(|&o| auth(o));
        let sides_differ = subj_auth != other_auth;
        let subject_later = cand.others.iter().all(|&o| lww_key(s) > lww_key(o));
        let lww = if subject_later {
            Side::Subject
        } else {
            Side::Other
        };
        let (authority_side, device_side) = if subj_auth {
            (Side::Subject, Side::Other)
        } else {
            (Side::Other, Side::Subject)
        };
        // The server and device policies need an authority on one side and a
        // device on the other; between equals the last writer wins.
        let effective = match policy {
            Policy::UserAction | Policy::LastWriterWins => policy,
            p if sides_differ => p,
            _ => Policy::LastWriterWins,
        };
        let winner = match effective {
            Policy::ServerWins => authority_side,
            Policy::PartialDeviceWins | Policy::FullDeviceWins => device_side,
            Policy::LastWriterWins => lww,
            _ => {
                // user_action: provisional until a person decides.
                if cand.kind == Kind::StatusRegression {
                    Side::Other
                } else if sides_differ {
                    authority_side
                } else {
                    lww
                }
            }
        };
        let (losers, winners): (Vec<usize>, Vec<usize>) = match winner {
            Side::Subject => (cand.order.clone(), vec![s]),
            Side::Other => (vec![s], cand.order.clone()),
        };
        // What the winner's standing takes out of the losing side, and so the
        // fields the entry is about (both versions of each are kept in it).
        let mut drop: Vec<(ChangeHash, String)> = Vec::new();
        let mut drop_deletes: Vec<ChangeHash> = Vec::new();
        if cand.kind == Kind::EditOfDeleted {
            // The subject is the edit, the others the delete(s).
            match winner {
                Side::Subject => drop_deletes.extend(cand.order.iter().map(|&o| h.changes[o].hash)),
                Side::Other => drop.extend(cand.fields.iter().map(|f| (sch.hash, f.clone()))),
            }
        } else {
            let winner_touched: BTreeSet<&String> = winners
                .iter()
                .flat_map(|&w| h.changes[w].mark.touched())
                .collect();
            for &l in &losers {
                let lch = &h.changes[l];
                for f in &lch.mark.assigned {
                    let out = match effective {
                        // Every field as the device had it.
                        Policy::FullDeviceWins => true,
                        // Only the fields the device changed override.
                        Policy::PartialDeviceWins => {
                            cand.fields.contains(f) && winner_touched.contains(f)
                        }
                        _ => cand.fields.contains(f),
                    };
                    if out && Some(f.as_str()) != status_field {
                        drop.push((lch.hash, f.clone()));
                    }
                }
            }
        }
        let contested: Vec<String> = cand.fields.iter().cloned().collect();
        for (_, f) in &drop {
            cand.fields.insert(f.clone());
        }
        let also: Vec<String> = cand
            .fields
            .iter()
            .filter(|f| !contested.contains(f))
            .cloned()
            .collect();
        if person.is_none() {
            for (hash, f) in &drop {
                sup.field(*hash, f);
            }
            sup.deletes.extend(drop_deletes);
        }
        let state = if person.is_some() || effective != Policy::UserAction {
            EntryState::Resolved
        } else {
            EntryState::Open
        };
        let resolved_by = match (&person, state) {
            (Some(p), _) => Some(p.clone()),
            (None, EntryState::Resolved) => Some(ResolvedBy::Policy(effective)),
            _ => None,
        };
        let fields: Vec<String> = cand.fields.iter().cloned().collect();
        let others: Vec<ChangeRef> = cand
            .order
            .iter()
            .map(|&o| h.change_ref(o, cx.is_authority))
            .collect();
        let subject = h.change_ref(s, cx.is_authority);
        let message = describe(&Description {
            kind: cand.kind,
            subject: &subject,
            others: &others,
            contested: &contested,
            also: &also,
            winner,
            resolved_by: resolved_by.as_ref(),
            base_status: sch.mark.base_status.as_deref(),
            advanced: cand
                .order
                .iter()
                .filter_map(|&o| h.changes[o].mark.new_status.clone())
                .collect(),
        });
        entries.push(Entry {
            id,
            kind: cand.kind,
            collection: c.name.clone(),
            record: cx.record.to_owned(),
            state,
            resolved_by,
            policy,
            queue: human.queue.clone().unwrap_or_else(|| queue.clone()),
            assignee: human.assignee.clone(),
            subject,
            others,
            fields,
            winner: Some(winner),
            message,
            violations: Vec::new(),
            linked: None,
            parent: None,
        });
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));

    // The visible record: automerge's fields with what is not applied taken out.
    let (mut fields, mut deleted) = doc::read_fields(doc, c)?;
    let mut affected: BTreeSet<&str> = sup
        .fields
        .values()
        .flat_map(|s| s.iter().map(String::as_str))
        .collect();
    if let Some(sf) = status_field {
        affected.insert(sf);
    }
    for name in affected {
        let Ok(f) = c.field(name) else { continue };
        match visible_value(doc, &h, c, f, &sup, 0)? {
            Some(v) => fields.insert(name.to_owned(), v),
            None => fields.remove(name),
        };
    }
    if !sup.deletes.is_empty() {
        deleted = visible_deleted(doc, &h, &sup, 0);
    }
    Ok(Some(Analysis {
        fields,
        deleted,
        hidden,
        entries,
    }))
}

/// The first 12 characters (of an actor in hex; `by` fields come from
/// peers, so cut on a character boundary).
fn short(actor_hex: &str) -> &str {
    match actor_hex.char_indices().nth(12) {
        Some((i, _)) => &actor_hex[..i],
        None => actor_hex,
    }
}

/// What an entry's message says.
struct Description<'a> {
    kind: Kind,
    subject: &'a ChangeRef,
    others: &'a [ChangeRef],
    /// The fields in conflict.
    contested: &'a [String],
    /// Fields the decision also takes out of the losing side (full device
    /// wins).
    also: &'a [String],
    winner: Side,
    resolved_by: Option<&'a ResolvedBy>,
    base_status: Option<&'a str>,
    advanced: Vec<String>,
}

/// A side of an entry as a message names it: `the authority 12D3KooW…`,
/// `the device 12D3KooW…`, or, between equals, `member 12D3KooW…`.
fn side_text(refs: &[&ChangeRef], roles: bool) -> String {
    let mut ids: Vec<String> = Vec::new();
    for r in refs {
        let m = crate::member::short_member_id(&r.member());
        if !ids.contains(&m) {
            ids.push(m);
        }
    }
    let ids = ids.join(", ");
    if !roles {
        return format!("member {ids}");
    }
    if refs.iter().any(|r| r.authority) {
        format!("the authority {ids}")
    } else {
        format!("the device {ids}")
    }
}

/// The message of an entry: what happened, and what was decided (written
/// again whenever the entry is evaluated, so it follows a resolution).
fn describe(d: &Description<'_>) -> String {
    let roles = d.subject.authority != d.others.iter().any(|o| o.authority);
    let subject = side_text(&[d.subject], roles);
    let others: Vec<&ChangeRef> = d.others.iter().collect();
    let other = side_text(&others, roles);
    let list = if d.contested.is_empty() {
        "no other field".to_owned()
    } else {
        d.contested.join(", ")
    };
    let happened = match d.kind {
        Kind::StatusRegression => format!(
            "{subject} edited this record at status `{}` while {other} advanced it to `{}`",
            d.base_status.unwrap_or("?"),
            d.advanced.join(", ")
        ),
        Kind::ConcurrentEdit => format!("{subject} and {other} changed {list} concurrently"),
        Kind::EditOfDeleted => format!("{subject} edited {list} while {other} deleted the record"),
        Kind::Rejected | Kind::RejectedFk => String::new(),
    };
    // Once named, a side is "the authority" or "the device" (between
    // equals, its member again).
    let brief = |refs: &[&ChangeRef]| -> String {
        if !roles {
            side_text(refs, false)
        } else if refs.iter().any(|r| r.authority) {
            "the authority".to_owned()
        } else {
            "the device".to_owned()
        }
    };
    let (win, lose) = match d.winner {
        Side::Subject => (brief(&[d.subject]), brief(&others)),
        Side::Other => (brief(&others), brief(&[d.subject])),
    };
    let shows = if d.kind != Kind::EditOfDeleted {
        let also = if d.also.is_empty() {
            String::new()
        } else {
            format!(
                " ({win}'s version also sets {} back to the value before {lose}'s change)",
                d.also.join(", ")
            )
        };
        format!("{win}'s values show and {lose}'s are kept here{also}")
    } else if d.winner == Side::Subject {
        format!("the record stands with the edit; {lose}'s delete is not applied")
    } else {
        "the record stays deleted and the edit is kept here".to_owned()
    };
    let outcome = match d.resolved_by {
        None => format!("waiting for a person to decide; meanwhile {shows}"),
        Some(ResolvedBy::Policy(p)) => format!("decided by policy {p}: {shows}"),
        Some(ResolvedBy::Person { decision, by, .. }) => {
            let by = crate::member::short_member_id(&crate::member::member_id_of_hex(by));
            format!("decided by {by}: {}", decision_text(decision))
        }
        Some(ResolvedBy::Accepted | ResolvedBy::ParentStands) => shows,
    };
    format!("{happened}; {outcome}")
}

/// A person's decision in words (`reopen+keep_device` → `kept the device's
/// version and reopened the record`).
pub fn decision_text(decision: &str) -> String {
    let (reopen, rest) = match decision.strip_prefix("reopen+") {
        Some(r) => (true, r),
        None => (false, decision),
    };
    let what = match rest {
        "keep_authority" => "kept the authority's version".to_owned(),
        "keep_device" => "kept the device's version".to_owned(),
        "keep_subject" | "keep_other" | "keep_side" => "kept one side's version".to_owned(),
        "fields" => "chose a side per field".to_owned(),
        "custom" => "wrote new values".to_owned(),
        other => match other.strip_prefix("keep:") {
            Some(m) => format!(
                "kept the version of member {}",
                crate::member::short_member_id(m)
            ),
            None => other.replace('_', " "),
        },
    };
    if reopen {
        format!("{what} and reopened the record")
    } else {
        what
    }
}

/// A field's visible value: its concurrent values minus the writes not
/// applied; the status takes its most advanced value; if every value is a
/// write not applied, the value before those writes.
fn visible_value(
    doc: &Automerge,
    h: &History,
    c: &Collection,
    f: &crate::schema::Field,
    sup: &Suppressed,
    depth: u32,
) -> Result<Option<Value>, ShapeError> {
    let frontier = doc::read_frontier(doc, f)?;
    if frontier.is_empty() {
        return Ok(None);
    }
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (v, op) in frontier {
        match h.change_of(&op) {
            Some(i) if sup.has_field(&h.changes[i].hash, &f.name) => dropped.push(i),
            _ => kept.push(v),
        }
    }
    if kept.is_empty() {
        // Every value is a write not applied: what the field held before the
        // first of them (bounded: histories nest only so deep here).
        if depth >= 8 {
            return Ok(None);
        }
        let Some(&first) = dropped.first() else {
            return Ok(None);
        };
        let deps = h.changes[first].deps.clone();
        if deps.is_empty() {
            return Ok(None);
        }
        let Ok(before) = doc.fork_at(&deps) else {
            return Ok(None);
        };
        let hb = History::build(&before, c);
        return visible_value(&before, &hb, c, f, sup, depth + 1);
    }
    if let Some(l) = c.lifecycle_of(&f.name) {
        let best = kept
            .iter()
            .max_by_key(|v| v.as_str().and_then(|s| l.rank(s)))
            .cloned();
        return Ok(best);
    }
    Ok(kept.into_iter().next())
}

/// Whether the record is deleted once deletes not applied are taken out.
fn visible_deleted(doc: &Automerge, h: &History, sup: &Suppressed, depth: u32) -> bool {
    let frontier = doc::deleted_frontier(doc);
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (on, op) in frontier {
        match h.change_of(&op) {
            Some(i) if sup.deletes.contains(&h.changes[i].hash) => dropped.push(i),
            _ => kept.push(on),
        }
    }
    if let Some(first) = kept.first() {
        return *first;
    }
    let Some(&first) = dropped.first() else {
        return false;
    };
    let deps = h.changes[first].deps.clone();
    if deps.is_empty() || depth >= 8 {
        return false;
    }
    match doc.fork_at(&deps) {
        Ok(before) => {
            let hb = history_for_deletes(&before);
            visible_deleted(&before, &hb, sup, depth + 1)
        }
        Err(_) => false,
    }
}

fn history_for_deletes(doc: &Automerge) -> History {
    let c = Collection {
        name: String::new(),
        fields: Vec::new(),
        settings: Default::default(),
    };
    History::build(doc, &c)
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn short_names_cut_on_character_boundaries() {
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
        // A `by` field written by a peer may hold any text.
        assert_eq!(short("ééééééééééééééé"), "éééééééééééé");
    }
}
