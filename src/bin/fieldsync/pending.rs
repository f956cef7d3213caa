//! `fieldsync pending ...` and `fieldsync status`: pending events and the
//! sync state from the command line.

use clap::Subcommand;
use fieldsync::pending::{EventStatus, PendingEvent, PendingFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value as J, json};

use super::output::{member_id, outln, time_json, when};
use super::{Ctx, Failure};

#[derive(Subcommand, Serialize, Deserialize)]
pub(crate) enum Pending {
    /// List the pending events (the default).
    List {
        /// Only this status (pending, processing, rejected, rejected_fk,
        /// cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
    },
    /// Cancel an event: a compensating change undoes it.
    Cancel {
        /// The event id.
        id: u64,
    },
    /// Take a rejected or cancelled event off the list.
    Dismiss {
        /// The event id.
        id: u64,
    },
}

fn event_json(e: &PendingEvent) -> J {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(e.id));
    m.insert("collection".into(), json!(e.collection));
    m.insert("record".into(), json!(e.record));
    m.insert("kind".into(), json!(e.kind.name()));
    m.insert("change".into(), json!(e.change));
    time_json(&mut m, "time", e.time.millis(), Some(e.time));
    m.insert("status".into(), json!(e.status.name()));
    m.insert("held".into(), json!(held(e)));
    m.insert(
        "errors".into(),
        e.errors
            .iter()
            .map(|v| json!({"code": v.code, "message": v.message, "field": v.field}))
            .collect(),
    );
    m.insert(
        "parent".into(),
        json!(e.parent.as_ref().map(|(c, id)| format!("{c}/{id}"))),
    );
    m.insert("linked".into(), json!(e.linked));
    m.insert(
        "decided_by".into(),
        json!(
            e.decided_by
                .as_deref()
                .map(fieldsync::member::member_id_of_hex)
        ),
    );
    J::Object(m)
}

/// Whether the event waits in an open conflict for a person.
fn held(e: &PendingEvent) -> bool {
    e.status == EventStatus::Processing && e.errors.first().is_some_and(|v| v.code == "held")
}

fn event_line(out: &mut Vec<u8>, e: &PendingEvent) {
    let status = if held(e) {
        "held".to_owned()
    } else {
        e.status.name().to_owned()
    };
    let mut line = format!(
        "{:>5}  {:<11}  {:<6}  {}/{}  saved {}",
        e.id,
        status,
        e.kind.name(),
        e.collection,
        e.record,
        when(e.time.millis())
    );
    if let Some((c, id)) = &e.parent {
        line.push_str(&format!("  parent {c}/{id}"));
        if let Some(l) = e.linked {
            line.push_str(&format!(" (event {l})"));
        }
    }
    outln!(out, "{line}");
    for v in &e.errors {
        outln!(out, "         {}: {}", v.code, v.message);
    }
    let next = match e.status {
        EventStatus::Rejected | EventStatus::RejectedFk => Some(format!(
            "`fieldsync pending cancel {}` undoes it; `fieldsync pending dismiss {}` takes it off the list",
            e.id, e.id
        )),
        _ if held(e) => Some("a person decides with `fieldsync conflicts resolve`".to_owned()),
        _ => None,
    };
    if let Some(n) = next {
        outln!(out, "         next: {n}");
    }
}

pub(crate) fn run(ctx: &Ctx, action: Option<&Pending>, out: &mut Vec<u8>) -> Result<(), Failure> {
    let r = ctx.replica()?;
    match action.unwrap_or(&Pending::List {
        status: None,
        collection: None,
    }) {
        Pending::List { status, collection } => {
            let mut filter = PendingFilter::all();
            if let Some(s) = status {
                filter = filter.status(s.parse::<EventStatus>().map_err(Failure)?);
            }
            if let Some(c) = collection {
                filter = filter.collection(c);
            }
            let events = r.pending(&filter)?;
            if ctx.json {
                outln!(out, "{}", J::Array(events.iter().map(event_json).collect()));
            } else if events.is_empty() {
                outln!(out, "no pending events");
            } else {
                for e in &events {
                    event_line(out, e);
                }
            }
        }
        Pending::Cancel { id } => {
            let e = r.cancel_event(*id)?;
            if ctx.json {
                outln!(out, "{}", event_json(&e));
            } else {
                outln!(
                    out,
                    "cancelled event {} ({} of {}/{})",
                    e.id,
                    e.kind,
                    e.collection,
                    e.record
                );
            }
        }
        Pending::Dismiss { id } => {
            r.dismiss_event(*id)?;
            if ctx.json {
                outln!(out, "{}", json!({"dismissed": id}));
            } else {
                outln!(out, "dismissed event {id}");
            }
        }
    }
    Ok(())
}

/// `status`: the replica's side, and with `serve` running, the node's peers.
pub(crate) fn status(ctx: &Ctx, out: &mut Vec<u8>) -> Result<(), Failure> {
    let r = ctx.replica()?;
    let node = match ctx.served {
        Some(s) => Some(s.rt.block_on(s.node.status())?),
        None => None,
    };
    let counts = match &node {
        Some(n) => n.pending.clone(),
        None => r.pending_counts()?,
    };
    let open = r
        .conflicts(&fieldsync::conflict::ConflictFilter::open())?
        .len();
    let blocked = r.sync_gate()?;
    let remembered = r.remembered_peers()?;
    let clocks = r.peer_clocks()?;
    let jobs = r.reaction_jobs()?;
    // Sync times in the authority's clock when this store has measured it.
    let offset = r.authority_offset()?;
    let shown = |t: fieldsync::HlcTime| -> u64 {
        let ms = i128::from(t.millis()) + i128::from(offset.unwrap_or(0));
        u64::try_from(ms.max(0)).unwrap_or(0)
    };
    let clock_of = |peer: &str| clocks.iter().find(|(m, _)| m == peer).map(|(_, c)| *c);
    let peer_rows: Vec<(String, bool, Option<fieldsync::HlcTime>)> = match &node {
        Some(n) => n
            .peers
            .iter()
            .map(|p| (p.peer.to_string(), p.connected, p.last_synced))
            .collect(),
        None => remembered
            .iter()
            .map(|(p, t)| (p.clone(), false, Some(*t)))
            .collect(),
    };
    if ctx.json {
        let peers: Vec<J> = peer_rows
            .iter()
            .map(|(p, connected, last)| {
                let mut m = serde_json::Map::new();
                m.insert("peer".into(), json!(p));
                m.insert("connected".into(), json!(connected));
                match last {
                    Some(t) => time_json(&mut m, "last_synced", shown(*t), Some(*t)),
                    None => {
                        m.insert("last_synced".into(), J::Null);
                    }
                }
                if let Some(c) = clock_of(p) {
                    m.insert("clock_offset_ms".into(), json!(c.offset_ms));
                    m.insert("clock_rtt_ms".into(), json!(c.rtt_ms));
                }
                if let Some(st) = node.as_ref().and_then(|n| n.peers.iter().find(|x| x.peer.to_string() == *p)) {
                    m.insert("syncing".into(), json!(st.syncing));
                    m.insert("last_outcome".into(), json!(st.last_outcome));
                    m.insert("records_out".into(), json!(st.records_out));
                    m.insert("bytes_out".into(), json!(st.bytes_out));
                    m.insert("records_in".into(), json!(st.records_in));
                    m.insert(
                        "progress".into(),
                        json!(st.progress.map(|g| json!({"records_done": g.records_done, "records_total": g.records_total, "bytes": g.bytes}))),
                    );
                }
                J::Object(m)
            })
            .collect();
        outln!(
            out,
            "{}",
            json!({
                "served": node.is_some(),
                "member": member_id(r.actor()),
                "mode": node.as_ref().map(|n| if n.live { "live" } else { "manual" }),
                "pending": counts.iter().map(|(s, n)| (s.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "open_conflicts": open,
                "blocked": blocked.iter().map(|b| json!({"collection": b.collection, "conflicts": b.conflicts})).collect::<Vec<_>>(),
                "times_in": if offset.is_some() { "authority" } else { "this store" },
                "authority_offset_ms": offset,
                "reaction_jobs": jobs.iter().map(|j| json!({"reaction": j.reaction, "collection": j.collection, "id": j.id, "attempts": j.attempts, "last_error": j.last_error, "failed": j.failed})).collect::<Vec<_>>(),
                "peers": peers,
            })
        );
        return Ok(());
    }
    match &node {
        Some(n) => outln!(
            out,
            "served as {} ({} mode)",
            n.peer_id,
            if n.live { "live" } else { "manual" }
        ),
        None => outln!(
            out,
            "not served: peers below are the ones this store remembers (`fieldsync serve` shows live connections)"
        ),
    }
    let total: usize = counts.values().sum();
    // Edits a conflict holds are counted apart from the other processing ones.
    let held_n = r
        .pending(&PendingFilter::all().status(EventStatus::Processing))?
        .iter()
        .filter(|e| held(e))
        .count();
    let parts: Vec<String> = counts
        .iter()
        .filter_map(|(s, n)| {
            match (
                s,
                *n - if *s == EventStatus::Processing {
                    held_n
                } else {
                    0
                },
            ) {
                (_, 0) => None,
                (s, n) => Some(format!("{n} {s}")),
            }
        })
        .chain((held_n > 0).then(|| format!("{held_n} held by a conflict")))
        .collect();
    outln!(
        out,
        "pending events: {}{}",
        total,
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({}; `fieldsync pending`)", parts.join(", "))
        }
    );
    outln!(
        out,
        "open conflicts: {open}{}",
        if open > 0 {
            " (`fieldsync conflicts list --open`)"
        } else {
            ""
        }
    );
    for b in &blocked {
        outln!(
            out,
            "blocked: `{}` is not sent until its {} conflict(s) are resolved ({}): `fieldsync conflicts resolve ID --keep SIDE`",
            b.collection,
            b.conflicts.len(),
            b.conflicts
                .iter()
                .map(|c| &c[..c.len().min(8)])
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for j in &jobs {
        outln!(
            out,
            "reaction {} for {}/{}: {}{}",
            j.reaction,
            j.collection,
            j.id,
            if j.failed {
                format!("failed {} times, left alone", j.attempts)
            } else if j.attempts > 0 {
                format!("failed {} time(s), tried again", j.attempts)
            } else {
                "waiting to run".to_owned()
            },
            j.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let clock_note = if offset.is_some() {
        "the authority's clock"
    } else {
        "this store's clock"
    };
    for (p, connected, last) in &peer_rows {
        let mut line = format!(
            "peer {p}: {}",
            if *connected {
                "connected"
            } else {
                "not connected"
            }
        );
        if let Some(st) = node
            .as_ref()
            .and_then(|n| n.peers.iter().find(|x| x.peer.to_string() == *p))
        {
            if st.syncing {
                line.push_str(", syncing");
            }
            line.push_str(&format!(
                "; waiting: {} record(s) out, {} byte(s) queued, {} record(s) in",
                st.records_out, st.bytes_out, st.records_in
            ));
            if let Some(o) = &st.last_outcome {
                line.push_str(&format!("; last sync: {o}"));
            }
        }
        line.push_str(&match last {
            Some(t) => format!("; last equal sync {} ({clock_note})", when(shown(*t))),
            None => "; never synced to the end".to_owned(),
        });
        if let Some(c) = clock_of(p) {
            let off = c.offset_ms;
            if off.abs() > 1000 {
                line.push_str(&format!(
                    "; its clock is {} {} than this store's (measured {})",
                    human_ms(off.unsigned_abs()),
                    if off > 0 { "ahead" } else { "behind" },
                    when(c.measured_at)
                ));
            }
        }
        outln!(out, "{line}");
    }
    Ok(())
}

/// A duration for people: `850 ms`, `4.2 s`, `3 min`, `1.0 h`.
fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}
