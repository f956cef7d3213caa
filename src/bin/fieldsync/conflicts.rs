//! `fieldsync conflicts ...`: the conflict list from the command line.

use std::collections::BTreeMap;

use clap::Subcommand;
use fieldsync::conflict::{
    Choice, ConflictFilter, Entry, EntryDetail, EntryState, Kind, Resolution, Side,
};
use fieldsync::{Fields, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Value as J, json};

use super::output::{outln, time_json, when};
use super::{Ctx, Failure, parse};

#[derive(Subcommand, Serialize, Deserialize)]
pub(crate) enum Conflicts {
    /// List entries (all filters must hold).
    List {
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Only this kind (status_regression, concurrent_edit, rejected,
        /// rejected_fk, edit_of_deleted).
        #[arg(long)]
        kind: Option<String>,
        /// Only open entries.
        #[arg(long, conflicts_with = "resolved")]
        open: bool,
        /// Only resolved entries.
        #[arg(long)]
        resolved: bool,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only entries assigned to this person.
        #[arg(long)]
        assignee: Option<String>,
    },
    /// Show an entry with the base and both sides' versions side by side.
    Show {
        /// The entry id (or a unique prefix of it).
        id: String,
    },
    /// Resolve an entry: keep one side, pick per field, or set values.
    Resolve {
        /// The entry id (or a unique prefix of it).
        id: String,
        /// The side to keep: `authority` or `device` when one side is an
        /// authority, otherwise a member id of one side's author (as
        /// `conflicts show` names them).
        #[arg(long, value_name = "SIDE")]
        keep: Option<String>,
        /// Per field: `FIELD=SIDE`, a side named as for `--keep`.
        #[arg(long = "field", value_name = "FIELD=SIDE")]
        fields: Vec<String>,
        /// Custom values: `FIELD=VALUE`.
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        /// Move the status back to this state (a deliberate reopen).
        #[arg(long, value_name = "STATE")]
        reopen: Option<String>,
        /// A note kept with the decision.
        #[arg(long)]
        note: Option<String>,
    },
    /// Route an entry to a queue, and optionally assign it to a person.
    Assign {
        /// The entry id (or a unique prefix of it).
        id: String,
        /// The queue.
        queue: String,
        /// The person.
        #[arg(long = "to")]
        assignee: Option<String>,
    },
}

/// The side of `e` a person names (`authority`, `device`, or a member id).
fn side(e: &Entry, s: &str) -> Result<Side, Failure> {
    e.side_named(s).ok_or_else(|| {
        Failure(format!(
            "no side of this conflict is named `{s}`: its sides are `{}` and `{}`",
            e.side_name(Side::Subject),
            e.side_name(Side::Other)
        ))
    })
}

/// A side's name as a column heading (member ids shortened).
fn short_side(name: &str) -> String {
    name.split(',')
        .map(fieldsync::member::short_member_id)
        .collect::<Vec<_>>()
        .join(",")
}

/// The full id of the entry named by `id` or a unique prefix of it.
fn find(r: &fieldsync::Replica, id: &str) -> Result<String, Failure> {
    if r.conflict_entry(id)?.is_some() {
        return Ok(id.to_owned());
    }
    let all = r.conflicts(&ConflictFilter::all())?;
    let matching: Vec<&Entry> = all.iter().filter(|e| e.id.starts_with(id)).collect();
    match matching.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(Failure(format!("no conflict entry `{id}`"))),
        _ => Err(Failure(format!(
            "`{id}` names {} entries; give more of the id",
            matching.len()
        ))),
    }
}

fn fields_json(f: &Fields) -> J {
    J::Object(f.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

fn opt_json(v: &Option<Value>) -> J {
    v.as_ref().map_or(J::Null, Value::to_json)
}

fn change_json(c: &fieldsync::conflict::ChangeRef) -> J {
    let mut m = serde_json::Map::new();
    m.insert("hash".into(), json!(c.hash));
    m.insert("member".into(), json!(c.member()));
    m.insert("authority".into(), json!(c.authority));
    time_json(&mut m, "time", c.time.millis(), Some(c.time));
    J::Object(m)
}

fn entry_json(e: &Entry) -> J {
    let resolved_by = match &e.resolved_by {
        None => J::Null,
        Some(fieldsync::conflict::ResolvedBy::Policy(p)) => json!({"policy": p.name()}),
        Some(fieldsync::conflict::ResolvedBy::Person { decision, by, at }) => {
            let mut m = serde_json::Map::new();
            m.insert("decision".into(), json!(decision));
            m.insert("by".into(), json!(fieldsync::member::member_id_of_hex(by)));
            time_json(&mut m, "at", u64::try_from(*at).unwrap_or(0), None);
            json!({ "person": m })
        }
        Some(fieldsync::conflict::ResolvedBy::Accepted) => json!("accepted"),
        Some(fieldsync::conflict::ResolvedBy::ParentStands) => json!("parent_stands"),
        Some(_) => json!("resolved"),
    };
    json!({
        "id": e.id,
        "kind": e.kind.name(),
        "collection": e.collection,
        "record": e.record,
        "state": if e.state == EntryState::Open { "open" } else { "resolved" },
        "resolved_by": resolved_by,
        "policy": e.policy.name(),
        "queue": e.queue,
        "assignee": e.assignee,
        "sides": [e.side_name(Side::Subject), e.side_name(Side::Other)],
        "subject": change_json(&e.subject),
        "others": e.others.iter().map(change_json).collect::<Vec<_>>(),
        "fields": e.fields,
        "winner": e.winner.map(|w| e.side_name(w)),
        "message": e.message,
        "violations": e.violations.iter().map(|v| json!({"code": v.code, "message": v.message, "field": v.field})).collect::<Vec<_>>(),
        "linked": e.linked,
        "parent": e.parent.as_ref().map(|(c, id)| format!("{c}/{id}")),
    })
}

fn detail_json(d: &EntryDetail) -> J {
    json!({
        "entry": entry_json(&d.entry),
        "base": fields_json(&d.base),
        "sides": [side_json(&d.subject), side_json(&d.other)],
        "versions": {
            d.subject.name.clone(): fields_json(&d.subject.fields),
            d.other.name.clone(): fields_json(&d.other.fields),
        },
        "visible": fields_json(&d.visible),
        "visible_deleted": d.visible_deleted,
        "diff": d.diff.iter().map(|f| json!({
            "field": f.field,
            "base": opt_json(&f.base),
            d.subject.name.clone(): opt_json(&f.subject),
            d.other.name.clone(): opt_json(&f.other),
            "visible": opt_json(&f.visible),
        })).collect::<Vec<_>>(),
    })
}

fn side_json(v: &fieldsync::conflict::SideVersion) -> J {
    json!({
        "name": v.name,
        "members": v.members,
        "authority": v.authority,
        "deleted": v.deleted,
        "fields": fields_json(&v.fields),
    })
}

fn state(e: &Entry) -> String {
    match (&e.state, &e.resolved_by) {
        (EntryState::Open, _) => "open".into(),
        (_, Some(fieldsync::conflict::ResolvedBy::Policy(p))) => format!("resolved by policy {p}"),
        (_, Some(fieldsync::conflict::ResolvedBy::Person { decision, by, at })) => {
            format!(
                "resolved by {} at {}: {}",
                fieldsync::member::short_member_id(&fieldsync::member::member_id_of_hex(by)),
                when(u64::try_from(*at).unwrap_or(0)),
                fieldsync::conflict::decision_text(decision)
            )
        }
        (_, Some(fieldsync::conflict::ResolvedBy::Accepted)) => "resolved (accepted)".into(),
        (_, Some(fieldsync::conflict::ResolvedBy::ParentStands)) => {
            "resolved (parent stands)".into()
        }
        _ => "resolved".into(),
    }
}

fn show_value(v: &Option<Value>) -> String {
    match v {
        None => "-".into(),
        Some(v) => super::output::value_text(v),
    }
}

pub(crate) fn run(ctx: &Ctx, action: &Conflicts, out: &mut Vec<u8>) -> Result<(), Failure> {
    let r = ctx.replica()?;
    match action {
        Conflicts::List {
            collection,
            kind,
            open,
            resolved,
            queue,
            assignee,
        } => {
            let mut f = ConflictFilter::all();
            f.collection = collection.clone();
            f.kind = kind
                .as_deref()
                .map(str::parse::<Kind>)
                .transpose()
                .map_err(Failure)?;
            f.state = match (open, resolved) {
                (true, _) => Some(EntryState::Open),
                (_, true) => Some(EntryState::Resolved),
                _ => None,
            };
            f.queue = queue.clone();
            f.assignee = assignee.clone();
            let entries = r.conflicts(&f)?;
            if ctx.json {
                outln!(
                    out,
                    "{}",
                    J::Array(entries.iter().map(entry_json).collect())
                );
                return Ok(());
            }
            if entries.is_empty() {
                outln!(out, "no conflict entries");
            }
            let open_ones = entries
                .iter()
                .filter(|e| e.state == EntryState::Open)
                .count();
            for e in &entries {
                outln!(
                    out,
                    "{}  {:<17} {}/{}  {}  queue {}{}",
                    e.id.get(..12).unwrap_or(&e.id),
                    e.kind.name(),
                    e.collection,
                    e.record,
                    state(e),
                    e.queue,
                    e.assignee
                        .as_ref()
                        .map(|a| format!(", assigned to {a}"))
                        .unwrap_or_default()
                );
                outln!(out, "    {}", e.message);
            }
            if open_ones > 0 {
                outln!(
                    out,
                    "next: `fieldsync conflicts show ID` compares the versions; `fieldsync conflicts resolve ID --keep SIDE` decides"
                );
            }
        }
        Conflicts::Show { id } => {
            let id = find(&r, id)?;
            let d = r
                .conflict(&id)?
                .ok_or_else(|| Failure(format!("no conflict entry `{id}`")))?;
            if ctx.json {
                outln!(out, "{}", detail_json(&d));
                return Ok(());
            }
            let e = &d.entry;
            outln!(
                out,
                "{} {} {}/{}",
                e.id,
                e.kind.name(),
                e.collection,
                e.record
            );
            outln!(out, "  state:   {}", state(e));
            outln!(out, "  policy:  {}   queue: {}", e.policy, e.queue);
            if let Some(a) = &e.assignee {
                outln!(out, "  assigned to {a}");
            }
            outln!(out, "  sides:   {} and {}", d.subject.name, d.other.name);
            outln!(
                out,
                "  change:  by {} saved {}",
                fieldsync::member::short_member_id(&e.subject.member()),
                when(
                    r.corrected_time(
                        &fieldsync::automerge::ActorId::from(
                            fieldsync::member::parse_member_id(&e.subject.actor)
                                .map(|k| k.to_vec())
                                .unwrap_or_default()
                        ),
                        e.subject.time
                    )
                    .map_or(e.subject.time.millis(), |t| t.millis())
                )
            );
            if ctx.verbose {
                outln!(
                    out,
                    "  hlc:     {} change {}",
                    e.subject.time,
                    e.subject.hash
                );
            }
            outln!(out, "  message: {}", e.message);
            for v in &e.violations {
                outln!(out, "  error:   {} ({})", v.message, v.code);
            }
            if let Some(l) = &e.linked {
                outln!(out, "  follows: {l}");
            }
            if d.visible_deleted {
                outln!(out, "  shown:   deleted");
            }
            outln!(
                out,
                "  {:<14} {:<22} {:<22} {:<22} {:<22}",
                "field",
                "base",
                short_side(&d.subject.name),
                short_side(&d.other.name),
                "shown"
            );
            for f in &d.diff {
                outln!(
                    out,
                    "  {:<14} {:<22} {:<22} {:<22} {:<22}",
                    f.field,
                    show_value(&f.base),
                    show_value(&f.subject),
                    show_value(&f.other),
                    show_value(&f.visible)
                );
            }
            if e.state == EntryState::Open {
                let keep = |s: &str| {
                    if s.contains(',') {
                        s.split(',').next().unwrap_or(s).to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                outln!(
                    out,
                    "next: `fieldsync conflicts resolve {} --keep {}` or `--keep {}`",
                    &e.id[..e.id.len().min(8)],
                    keep(&d.subject.name),
                    keep(&d.other.name)
                );
            }
        }
        Conflicts::Resolve {
            id,
            keep,
            fields,
            set,
            reopen,
            note,
        } => {
            let id = find(&r, id)?;
            let given = usize::from(keep.is_some())
                + usize::from(!fields.is_empty())
                + usize::from(!set.is_empty());
            if given != 1 {
                return Err(Failure(
                    "give exactly one of --keep SIDE, --field FIELD=SIDE..., --set FIELD=VALUE..."
                        .into(),
                ));
            }
            let choice = if let Some(k) = keep {
                Choice::Keep(k.clone())
            } else if !fields.is_empty() {
                let entry = r
                    .conflict_entry(&id)?
                    .ok_or_else(|| Failure(format!("no conflict entry `{id}`")))?;
                let mut map = BTreeMap::new();
                for kv in fields {
                    let (f, s) = kv
                        .split_once('=')
                        .ok_or_else(|| Failure(format!("expected FIELD=SIDE, given `{kv}`")))?;
                    map.insert(f.to_owned(), side(&entry, s)?);
                }
                Choice::Fields(map)
            } else {
                let entry = r
                    .conflict_entry(&id)?
                    .ok_or_else(|| Failure(format!("no conflict entry `{id}`")))?;
                let schema = r.schema();
                let c = schema.collection(&entry.collection)?;
                let values: Fields = set
                    .iter()
                    .map(|kv| parse::assignment(c, kv))
                    .collect::<Result<_, _>>()?;
                Choice::Custom(values)
            };
            let mut res = Resolution::new(choice);
            if let Some(s) = reopen {
                res = res.reopen(s);
            }
            if let Some(n) = note {
                res = res.note(n);
            }
            let w = r.resolve(&id, res)?;
            let after = r.conflict_entry(&id)?;
            if ctx.json {
                outln!(
                    out,
                    "{}",
                    json!({ "resolved": id, "collection": w.collection, "id": w.id, "message": after.as_ref().map(|e| e.message.clone()) })
                );
            } else {
                outln!(
                    out,
                    "resolved {} ({}/{})",
                    &id[..id.len().min(8)],
                    w.collection,
                    w.id
                );
                if let Some(e) = after {
                    outln!(out, "  {}", e.message);
                }
            }
        }
        Conflicts::Assign {
            id,
            queue,
            assignee,
        } => {
            let id = find(&r, id)?;
            r.route(&id, queue)?;
            if let Some(a) = assignee {
                r.assign(&id, a)?;
            }
            if ctx.json {
                outln!(
                    out,
                    "{}",
                    json!({ "id": id, "queue": queue, "assignee": assignee })
                );
            } else {
                outln!(
                    out,
                    "{id} routed to {queue}{}",
                    assignee
                        .as_ref()
                        .map(|a| format!(", assigned to {a}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
