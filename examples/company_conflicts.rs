//! OutSystems's "read/write data with conflict detection", peer to peer: the
//! **hub** (authority) and a **device**, sled stores, `user_action` policy at
//! record granularity (any concurrent modification of a company conflicts).
//!
//! - Offline, the hub renames company `c1` while the device changes its phone
//!   (update vs update), and the hub deletes company `c2` while the device
//!   corrects its address (update vs delete).
//! - After the sync both peers list the same two open entries; nothing was
//!   decided: `c1` shows the hub's version, `c2` stays deleted.
//! - A person compares each side by side and decides: for `c1`, the hub's name
//!   and the device's phone; for `c2`, the device's version (the company comes
//!   back with the corrected address).
//! - After the next sync both peers hold the same companies and the same
//!   entries, resolved.
//!
//! `cargo run --example company_conflicts` exits 0 only if every step holds.

mod common;

use std::collections::BTreeMap;
use std::error::Error;

use common::{check, sync};
use fieldsync::conflict::{Choice, ConflictFilter, EntryState, Kind, Resolution, Side};
use fieldsync::schema::{Collection, FieldType, Granularity, Policy, Schema};
use fieldsync::{Value, fields};

fn schema() -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new().with(
        Collection::builder("company")
            .required("name", FieldType::String)
            .field("phone", FieldType::String)
            .field("address", FieldType::String)
            .policy(Policy::UserAction)
            .granularity(Granularity::Record)
            .build()?,
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let peers = common::group(dir.path(), &schema()?, &["hub", "device"])?;
    let [hub, device] = peers.as_slice() else {
        return Err("expected 2 peers".into());
    };
    for (id, name) in [("c1", "Outsys Lda"), ("c2", "Braga Tiles")] {
        hub.insert(
            "company",
            id,
            fields([
                ("name", Value::from(name)),
                ("phone", Value::from("+351 200 000 000")),
                ("address", Value::from("Rua Velha 1")),
            ]),
        )?;
    }
    sync(hub, device)?;

    hub.update(
        "company",
        "c1",
        fields([("name", Value::from("OutSystems SA"))]),
    )?;
    device.update(
        "company",
        "c1",
        fields([("phone", Value::from("+351 211 111 111"))]),
    )?;
    hub.delete("company", "c2")?;
    device.update(
        "company",
        "c2",
        fields([("address", Value::from("Rua Nova 9"))]),
    )?;
    sync(device, hub)?;

    let open_h = hub.conflicts(&ConflictFilter::open())?;
    let open_d = device.conflicts(&ConflictFilter::open())?;
    check(
        open_h.len() == 2 && open_h == open_d,
        "two open entries, the same on both peers",
    )?;
    let update_vs_update = open_h
        .iter()
        .find(|e| e.kind == Kind::ConcurrentEdit)
        .ok_or("no update-vs-update entry")?;
    let update_vs_delete = open_h
        .iter()
        .find(|e| e.kind == Kind::EditOfDeleted)
        .ok_or("no update-vs-delete entry")?;
    let c1 = hub.get("company", "c1")?.ok_or("lost")?;
    check(
        c1.fields["name"] == Value::from("OutSystems SA")
            && c1.fields["phone"] == Value::from("+351 200 000 000"),
        "c1 shows the hub's version until someone decides",
    )?;
    check(
        hub.get("company", "c2")?.ok_or("lost")?.meta.deleted,
        "c2 stays deleted meanwhile",
    )?;

    for e in [update_vs_update, update_vs_delete] {
        let d = device.conflict(&e.id)?.ok_or("no detail")?;
        println!("{} {} {}: {}", &e.id[..8], e.kind, e.record, e.message);
        println!(
            "  {:<8} {:<20} {:<20} {:<20}",
            "field", d.other.name, d.subject.name, "shown"
        );
        for f in &d.diff {
            let s = |v: &Option<Value>| match v {
                Some(Value::String(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => "-".into(),
            };
            println!(
                "  {:<8} {:<20} {:<20} {:<20}",
                f.field,
                s(&f.other),
                s(&f.subject),
                s(&f.visible)
            );
        }
    }
    let choice: BTreeMap<String, Side> = [
        ("name".to_owned(), Side::Other),
        ("phone".to_owned(), Side::Subject),
    ]
    .into();
    device.resolve(
        &update_vs_update.id,
        Resolution::new(Choice::Fields(choice)),
    )?;
    device.resolve(&update_vs_delete.id, Resolution::new(Choice::KeepDevice))?;
    sync(device, hub)?;

    for (name, r) in [("hub", &hub), ("device", &device)] {
        let c1 = r.get("company", "c1")?.ok_or("lost")?;
        let c2 = r.get("company", "c2")?.ok_or("lost")?;
        check(
            c1.fields["name"] == Value::from("OutSystems SA")
                && c1.fields["phone"] == Value::from("+351 211 111 111"),
            &format!("{name}: c1 has the hub's name and the device's phone"),
        )?;
        check(
            !c2.meta.deleted && c2.fields["address"] == Value::from("Rua Nova 9"),
            &format!("{name}: c2 is back with the corrected address"),
        )?;
        let all = r.conflicts(&ConflictFilter::all())?;
        check(
            all.len() == 2 && all.iter().all(|e| e.state == EntryState::Resolved),
            &format!("{name}: both entries resolved"),
        )?;
    }
    check(
        hub.conflicts(&ConflictFilter::all())? == device.conflicts(&ConflictFilter::all())?,
        "both peers list the same entries",
    )?;
    println!("company_conflicts: done");
    Ok(())
}
