//! Pega's case status conflict, on four peers with their own sled stores.
//!
//! - An **employee** submits an expense report (status `pending_approval`)
//!   and it reaches the office **hub** (the group's authority) and the
//!   **manager**'s device.
//! - Offline on a flight, the employee changes the amount and the note.
//! - Meanwhile the manager approves the report (status `resolved`).
//! - The employee lands and syncs. The hub shows the report resolved (a merge
//!   never moves a status back) with the approved amount, and a
//!   `status_regression` entry, open in the `sync_errors` queue, that holds the
//!   employee's data and says what happened.
//! - An **admin** on a third device finds it in the queue, compares the
//!   versions side by side, reopens the report (back to `pending_approval`,
//!   a deliberate act) and applies the employee's changes.
//! - Everyone syncs: all four show the reopened report with the employee's
//!   amount, and the same entry, resolved.
//!
//! Peers exchange changes with fieldsync's sync protocol in process
//! (`sim::sync_pair`); `field_team` shows the same over libp2p.
//!
//! `cargo run --example expense_approval` exits 0 only if every step holds.

mod common;

use std::error::Error;

use common::{check, sync};
use fieldsync::conflict::{Choice, ConflictFilter, EntryState, Kind, Resolution};
use fieldsync::schema::{Collection, FieldType, Policy, Schema};
use fieldsync::{Value, fields};

fn schema() -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new().with(
        Collection::builder("expense")
            .required("title", FieldType::String)
            .required("amount", FieldType::Float)
            .field("note", FieldType::String)
            .default("status", FieldType::String, "draft")
            .status(
                "status",
                &["draft", "pending_approval", "resolved", "closed"],
            )
            .policy(Policy::UserAction)
            .queue("sync_errors")
            .build()?,
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    // The hub is the authority, and every peer knows it.
    let group = common::group(
        dir.path(),
        &schema()?,
        &["hub", "employee", "manager", "admin"],
    )?;
    let [hub, employee, manager, admin] = group.as_slice() else {
        return Err("expected 4 peers".into());
    };
    let peers = [hub, employee, manager, admin];

    employee.insert(
        "expense",
        "exp-17",
        fields([
            ("title", Value::from("Flight to Lisbon")),
            ("amount", Value::Float(420.0)),
        ]),
    )?;
    employee.update(
        "expense",
        "exp-17",
        fields([("status", Value::from("pending_approval"))]),
    )?;
    sync(employee, hub)?;
    sync(manager, hub)?;

    // Offline: the employee edits; the manager approves.
    employee.update(
        "expense",
        "exp-17",
        fields([
            ("amount", Value::Float(465.5)),
            ("note", Value::from("seat upgrade for the back")),
        ]),
    )?;
    manager.update(
        "expense",
        "exp-17",
        fields([("status", Value::from("resolved"))]),
    )?;
    sync(manager, hub)?;
    sync(employee, hub)?;

    let rec = hub
        .get("expense", "exp-17")?
        .ok_or("the hub lost the expense")?;
    println!(
        "hub: status {}, amount {}, note {}",
        rec.fields["status"],
        rec.fields["amount"],
        common::show(rec.fields.get("note"))
    );
    check(
        rec.fields["status"] == Value::from("resolved"),
        "the hub shows it resolved",
    )?;
    check(
        rec.fields["amount"] == Value::Float(420.0),
        "the employee's offline edit is not applied",
    )?;
    let queue = hub.conflicts(&ConflictFilter::open().queue("sync_errors"))?;
    check(
        queue.len() == 1 && queue[0].kind == Kind::StatusRegression,
        "one open status conflict waits in the sync_errors queue",
    )?;
    println!("hub's entry {}: {}", queue[0].id, queue[0].message);

    // The admin, on a third device, finds and decides it.
    sync(admin, hub)?;
    let open_here = admin.conflicts(&ConflictFilter::open().queue("sync_errors"))?;
    check(open_here == queue, "the admin sees the same entry, same id")?;
    let detail = admin.conflict(&open_here[0].id)?.ok_or("entry vanished")?;
    // The employee and the manager are both devices: the sides are named by
    // their member ids, the same on every peer.
    let employee_id = fieldsync::member::member_id(employee.actor().to_bytes()).ok_or("no id")?;
    let manager_id = fieldsync::member::member_id(manager.actor().to_bytes()).ok_or("no id")?;
    let mine = detail
        .version(&employee_id)
        .ok_or("no side is the employee's")?;
    let theirs = detail
        .version(&manager_id)
        .ok_or("no side is the manager's")?;
    for d in &detail.diff {
        println!(
            "  {:<7} base {} | employee {} | manager {} | shown {}",
            d.field,
            common::show(d.base.as_ref()),
            common::show(d.subject.as_ref()),
            common::show(d.other.as_ref()),
            common::show(d.visible.as_ref())
        );
    }
    check(
        mine.fields.get("amount") == Some(&Value::Float(465.5))
            && theirs.fields.get("status") == Some(&Value::from("resolved")),
        "the entry holds the employee's data beside the manager's approval",
    )?;
    check(
        admin
            .resolve(&detail.entry.id, Resolution::new(Choice::KeepDevice))
            .is_err(),
        "neither side is the authority, so there is no `device` side to keep",
    )?;
    admin.resolve(
        &detail.entry.id,
        Resolution::new(Choice::Keep(employee_id.clone()))
            .reopen("pending_approval")
            .note("reopened with the employee's changes; back to the manager"),
    )?;

    for _ in 0..2 {
        for p in [&employee, &manager, &admin] {
            sync(p, hub)?;
        }
    }
    let first = hub.get("expense", "exp-17")?.ok_or("lost")?;
    for (name, p) in ["hub", "employee", "manager", "admin"].iter().zip(peers) {
        let r = p.get("expense", "exp-17")?.ok_or("lost")?;
        let entries = p.conflicts(&ConflictFilter::all())?;
        println!(
            "{name:<8} status {} amount {} entries {}",
            r.fields["status"],
            r.fields["amount"],
            entries
                .iter()
                .map(|e| format!(
                    "{} {}",
                    &e.id[..8],
                    if e.state == EntryState::Open {
                        "open"
                    } else {
                        "resolved"
                    }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        check(
            r.fields == first.fields,
            &format!("{name} shows the same record"),
        )?;
        check(
            entries.len() == 1
                && entries[0].id == queue[0].id
                && entries[0].state == EntryState::Resolved,
            &format!("{name} holds the entry, resolved"),
        )?;
    }
    check(
        first.fields["status"] == Value::from("pending_approval")
            && first.fields["amount"] == Value::Float(465.5)
            && first.fields["note"] == Value::from("seat upgrade for the back"),
        "reopened with the employee's changes",
    )?;
    println!("expense_approval: all peers converged");
    Ok(())
}
