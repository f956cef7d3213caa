//! GeneXus's pending-events table, peer to peer, on three sled stores.
//!
//! - A field **device** works offline: it inserts two customers (one without
//!   a tax id), updates one, and deletes an old one — then regrets the delete
//!   and cancels it (a compensating change brings the record back).
//! - It lists its pending events: all `pending`.
//! - It syncs with a **colleague**'s device (no authority): its events become
//!   `processing` (they left the device; the verdict is awaited).
//! - The colleague later syncs with the **hub**, the group's authority, whose
//!   rule requires a tax id; the hub's acknowledgement (and its one refusal)
//!   travels back through the colleague.
//! - The device sees its events confirmed (they leave the list) and one
//!   `rejected`, with the hub's error code and message.
//!
//! `cargo run --example offline_outbox` exits 0 only if every step holds.

mod common;

use std::error::Error;

use common::{check, sync};
use fieldsync::pending::{EventStatus, PendingFilter};
use fieldsync::schema::{Collection, FieldType, Schema, Violation};
use fieldsync::{Replica, Value, fields};

fn schema() -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new().with(
        Collection::builder("customer")
            .required("name", FieldType::String)
            .field("tax_id", FieldType::String)
            .field("phone", FieldType::String)
            .build()?,
    )
}

fn show(device: &Replica, when: &str) -> Result<(), Box<dyn Error>> {
    println!("-- pending events {when}:");
    for e in device.pending(&PendingFilter::all())? {
        let errors: Vec<String> = e
            .errors
            .iter()
            .map(|v| format!("[{}] {}", v.code, v.message))
            .collect();
        println!(
            "   {:>3}  {:<10}  {:<6}  {}/{}  {}",
            e.id,
            e.status,
            e.kind,
            e.collection,
            e.record,
            errors.join("; ")
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let peers = common::group(dir.path(), &schema()?, &["hub", "device", "colleague"])?;
    let [hub, device, colleague] = peers.as_slice() else {
        return Err("expected 3 peers".into());
    };
    hub.add_validator("customer", |f| {
        match f.get("tax_id").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => Vec::new(),
            _ => vec![Violation::new("missing_tax_id", "a customer needs a tax id").on("tax_id")],
        }
    })?;
    // Known to everyone before the device goes offline.
    hub.insert(
        "customer",
        "old",
        fields([("name", "Old Co".into()), ("tax_id", "T0".into())]),
    )?;
    sync(hub, device)?;

    // Offline.
    device.insert(
        "customer",
        "acme",
        fields([("name", "Acme".into()), ("tax_id", "T1".into())]),
    )?;
    device.insert("customer", "bolt", fields([("name", "Bolt".into())]))?;
    device.update("customer", "acme", fields([("phone", "555-0101".into())]))?;
    device.delete("customer", "old")?;
    show(device, "offline")?;
    let list = device.pending(&PendingFilter::all())?;
    check(
        list.len() == 4 && list.iter().all(|e| e.status == EventStatus::Pending),
        "four pending events while offline",
    )?;
    let delete = list
        .iter()
        .find(|e| e.record == "old")
        .ok_or("the delete's event")?
        .id;
    device.cancel_event(delete)?;
    check(
        device
            .get("customer", "old")?
            .is_some_and(|r| !r.meta.deleted),
        "cancelling the delete brought `old` back",
    )?;

    sync(device, colleague)?;
    show(device, "after syncing with the colleague")?;
    check(
        device
            .pending(&PendingFilter::all().status(EventStatus::Processing))?
            .len()
            == 3,
        "three events processing (they left the device)",
    )?;

    sync(colleague, hub)?;
    sync(colleague, device)?;
    show(
        device,
        "after the hub's answer came back through the colleague",
    )?;
    let list = device.pending(&PendingFilter::all())?;
    let rejected: Vec<_> = list
        .iter()
        .filter(|e| e.status == EventStatus::Rejected)
        .collect();
    check(
        rejected.len() == 1 && rejected[0].record == "bolt",
        "bolt's insert was rejected by the hub",
    )?;
    check(
        rejected[0]
            .errors
            .first()
            .map(|v| (v.code.as_str(), v.message.as_str()))
            == Some(("missing_tax_id", "a customer needs a tax id")),
        "its error code and message are readable on the device",
    )?;
    check(
        list.iter().all(|e| e.record != "acme"),
        "acme's insert and update were confirmed (and left the list)",
    )?;
    check(
        list.iter()
            .any(|e| e.id == delete && e.status == EventStatus::Cancelled),
        "the cancelled delete stays listed as cancelled",
    )?;
    check(
        hub.get("customer", "old")?.is_some_and(|r| !r.meta.deleted),
        "the hub never saw `old` deleted for good",
    )?;
    println!("offline_outbox: done");
    Ok(())
}
