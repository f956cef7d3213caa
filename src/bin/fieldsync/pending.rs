//! `fieldsync pending ...` and `fieldsync status`: pending events and the
//! sync state from the command line.

use clap::Subcommand;
use fieldsync::pending::{EventStatus, PendingEvent, PendingFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value as J, json};

use super::output::outln;
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
    json!({
        "id": e.id,
        "collection": e.collection,
        "record": e.record,
        "kind": e.kind.name(),
        "change": e.change,
        "time": e.time.as_u64(),
        "status": e.status.name(),
        "errors": e.errors.iter().map(|v| json!({"code": v.code, "message": v.message, "field": v.field})).collect::<Vec<_>>(),
        "parent": e.parent.as_ref().map(|(c, id)| format!("{c}/{id}")),
        "linked": e.linked,
        "decided_by": e.decided_by,
    })
}

fn event_line(out: &mut Vec<u8>, e: &PendingEvent) {
    let mut line = format!(
        "{:>5}  {:<11}  {:<6}  {}/{}",
        e.id,
        e.status.name(),
        e.kind.name(),
        e.collection,
        e.record
    );
    for v in &e.errors {
        line.push_str(&format!("  [{}] {}", v.code, v.message));
    }
    if let Some((c, id)) = &e.parent {
        line.push_str(&format!("  parent {c}/{id}"));
    }
    if let Some(l) = e.linked {
        line.push_str(&format!(" (event {l})"));
    }
    outln!(out, "{line}");
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
    if ctx.json {
        let peers: Vec<J> = match &node {
            Some(n) => n
                .peers
                .iter()
                .map(|p| {
                    json!({
                        "peer": p.peer.to_string(),
                        "connected": p.connected,
                        "syncing": p.syncing,
                        "last_synced": p.last_synced.map(|t| t.millis()),
                        "last_outcome": p.last_outcome,
                        "records_out": p.records_out,
                        "bytes_out": p.bytes_out,
                        "records_in": p.records_in,
                        "progress": p.progress.map(|g| json!({"records_done": g.records_done, "records_total": g.records_total, "bytes": g.bytes})),
                    })
                })
                .collect(),
            None => remembered
                .iter()
                .map(|(p, t)| json!({"peer": p, "connected": false, "last_synced": t.millis()}))
                .collect(),
        };
        outln!(
            out,
            "{}",
            json!({
                "served": node.is_some(),
                "mode": node.as_ref().map(|n| if n.live { "live" } else { "manual" }),
                "pending": counts.iter().map(|(s, n)| (s.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "open_conflicts": open,
                "blocked": blocked.iter().map(|b| json!({"collection": b.collection, "conflicts": b.conflicts})).collect::<Vec<_>>(),
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
            "not served (start `fieldsync serve` for live peer state)"
        ),
    }
    let total: usize = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    outln!(
        out,
        "pending events: {}{}",
        total,
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    );
    outln!(out, "open conflicts: {open}");
    for b in &blocked {
        outln!(
            out,
            "blocked: `{}` is not sent until its {} conflict(s) are resolved ({})",
            b.collection,
            b.conflicts.len(),
            b.conflicts
                .iter()
                .map(|c| &c[..c.len().min(8)])
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match &node {
        Some(n) => {
            for p in &n.peers {
                outln!(
                    out,
                    "peer {}: {}{}; last equal sync: {}; waiting: {} record(s), {} byte(s) out, {} record(s) in{}",
                    p.peer,
                    if p.connected {
                        "connected"
                    } else {
                        "not connected"
                    },
                    if p.syncing { ", syncing" } else { "" },
                    p.last_synced
                        .map_or("never".to_owned(), |t| format!("{} ms", t.millis())),
                    p.records_out,
                    p.bytes_out,
                    p.records_in,
                    p.last_outcome
                        .as_ref()
                        .map_or(String::new(), |o| format!("; last sync: {o}"))
                );
            }
        }
        None => {
            for (p, t) in &remembered {
                outln!(out, "peer {p}: last equal sync at {} ms", t.millis());
            }
        }
    }
    Ok(())
}
