//! GeneXus's RejectedServer and RejectedFK, on two peers with sled stores.
//!
//! - Offline, a **device** inserts a customer without a tax id and an invoice
//!   for that customer.
//! - It syncs with the **hub**, the group's authority, whose rule (a Rust
//!   closure registered on the hub only) requires a tax id. The hub rejects
//!   the customer (code `missing_tax_id`); the invoice becomes `rejected_fk`,
//!   linked to the customer's entry. Both are hidden from lists everywhere,
//!   and their data stays readable.
//! - The device syncs again and reads the error code and message.
//! - The device fixes the customer; at the next sync the hub accepts the fix,
//!   the customer's entry is resolved, the invoice is re-evaluated on its own
//!   and accepted too. Both peers end equal.
//!
//! `cargo run --example customer_invoice` exits 0 only if every step holds.

mod common;

use std::error::Error;

use common::{check, sync};
use fieldsync::conflict::{ConflictFilter, EntryState, Kind, ResolvedBy};
use fieldsync::schema::{Collection, FieldType, Schema, Violation};
use fieldsync::{Scan, Value, fields};

fn schema() -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new()
        .with(
            Collection::builder("customer")
                .required("name", FieldType::String)
                .field("tax_id", FieldType::String)
                .build()?,
        )?
        .with(
            Collection::builder("invoice")
                .required("customer", FieldType::Reference("customer".into()))
                .required("total", FieldType::Float)
                .build()?,
        )
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let peers = common::group(dir.path(), &schema()?, &["hub", "device"])?;
    let [hub, device] = peers.as_slice() else {
        return Err("expected 2 peers".into());
    };
    // The hub's business rule (the device does not know it).
    hub.add_validator("customer", |f| {
        match f.get("tax_id").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => Vec::new(),
            _ => vec![
                Violation::new("missing_tax_id", "a customer needs a tax id to be invoiced")
                    .on("tax_id"),
            ],
        }
    })?;

    device.insert(
        "customer",
        "c-1",
        fields([("name", Value::from("Quinta do Lago"))]),
    )?;
    device.insert(
        "invoice",
        "inv-1",
        fields([
            ("customer", Value::Ref("c-1".into())),
            ("total", Value::Float(1250.0)),
        ]),
    )?;
    sync(device, hub)?;

    let customers = hub.scan(&Scan::new("customer"))?;
    check(
        customers.is_empty(),
        "the hub does not list the rejected customer",
    )?;
    let rejected = hub.conflicts(&ConflictFilter::all().kind(Kind::Rejected))?;
    check(rejected.len() == 1, "the hub has one rejection entry")?;
    let fk = hub.conflicts(&ConflictFilter::all().kind(Kind::RejectedFk))?;
    check(
        fk.len() == 1
            && fk[0].linked.as_ref() == Some(&rejected[0].id)
            && fk[0].state == EntryState::Open,
        "the invoice is rejected_fk, linked to the customer's entry",
    )?;

    sync(device, hub)?;
    let mine = device.conflicts(&ConflictFilter::open())?;
    for e in &mine {
        println!(
            "device: {} {} {}/{}: {}",
            &e.id[..8],
            e.kind,
            e.collection,
            e.record,
            e.message
        );
    }
    let rej = mine
        .iter()
        .find(|e| e.kind == Kind::Rejected)
        .ok_or("no rejection on the device")?;
    check(
        rej.violations.len() == 1
            && rej.violations[0].code == "missing_tax_id"
            && rej.violations[0].message == "a customer needs a tax id to be invoiced",
        "the device reads the error code and message",
    )?;
    let c1 = device.get("customer", "c-1")?.ok_or("lost")?;
    check(
        c1.meta.rejected.is_some(),
        "the device marks its customer rejected",
    )?;
    let detail = device.conflict(&rej.id)?.ok_or("no detail")?;
    check(
        detail.subject.fields.get("name") == Some(&Value::from("Quinta do Lago")),
        "the rejected data stays readable in the entry",
    )?;
    let inv = device.get("invoice", "inv-1")?.ok_or("lost")?;
    check(
        inv.meta.rejected.is_some(),
        "the device marks its invoice rejected_fk",
    )?;

    // The fix.
    device.update(
        "customer",
        "c-1",
        fields([("tax_id", Value::from("PT509999990"))]),
    )?;
    sync(device, hub)?;
    sync(device, hub)?;
    for (name, r) in [("hub", &hub), ("device", &device)] {
        let cs = r.scan(&Scan::new("customer"))?;
        let is = r.scan(&Scan::new("invoice"))?;
        check(
            cs.len() == 1 && cs[0].fields["name"] == Value::from("Quinta do Lago") && is.len() == 1,
            &format!("{name}: customer and invoice both accepted"),
        )?;
        let all = r.conflicts(&ConflictFilter::all())?;
        for e in &all {
            println!("{name}: {} {}: {}", &e.id[..8], e.kind, e.message);
        }
        check(
            all.len() == 2
                && all.iter().all(|e| e.state == EntryState::Resolved)
                && all
                    .iter()
                    .any(|e| e.resolved_by == Some(ResolvedBy::Accepted))
                && all
                    .iter()
                    .any(|e| e.resolved_by == Some(ResolvedBy::ParentStands)),
            &format!("{name}: both entries resolved (accepted, parent stands)"),
        )?;
    }
    check(
        hub.conflicts(&ConflictFilter::all())? == device.conflicts(&ConflictFilter::all())?,
        "both peers list the same entries",
    )?;
    println!("customer_invoice: done");
    Ok(())
}
