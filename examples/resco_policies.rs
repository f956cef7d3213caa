//! The same concurrent edit under each of the five policies (Resco's four,
//! plus Creatio's last-saved-wins), each on a fresh pair of sled stores: the
//! **hub** (the authority) and a **device**.
//!
//! Both start from account `acme` {phone 111, city Porto, credit 100}. Offline,
//! the hub sets phone 333 and credit 500; a moment later the device sets phone
//! 222 and city Braga. They sync; the table shows what both peers then hold.
//!
//! `cargo run --example resco_policies` exits 0 only if every row is as
//! `docs/conflicts.md` specifies and both peers agree.

mod common;

use std::error::Error;

use common::sync;
use fieldsync::conflict::{ConflictFilter, EntryState};
use fieldsync::schema::{Collection, FieldType, Policy, Schema};
use fieldsync::{Config, Replica, Value, fields};

fn schema(policy: Policy) -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new().with(
        Collection::builder("account")
            .required("name", FieldType::String)
            .field("phone", FieldType::String)
            .field("city", FieldType::String)
            .field("credit", FieldType::Integer)
            .policy(policy)
            .build()?,
    )
}

/// The fields an entry is about: the one both changed, and under full device
/// wins also the hub's `credit`, which the device's version sets back.
fn entry_fields(policy: Policy) -> Vec<String> {
    match policy {
        Policy::FullDeviceWins => vec!["credit".to_owned(), "phone".to_owned()],
        _ => vec!["phone".to_owned()],
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // policy, expected phone, city, credit, entry state
    let expected = [
        (
            Policy::ServerWins,
            "333",
            "Braga",
            500,
            EntryState::Resolved,
        ),
        (
            Policy::PartialDeviceWins,
            "222",
            "Braga",
            500,
            EntryState::Resolved,
        ),
        (
            Policy::FullDeviceWins,
            "222",
            "Braga",
            100,
            EntryState::Resolved,
        ),
        (Policy::UserAction, "333", "Braga", 500, EntryState::Open),
        (
            Policy::LastWriterWins,
            "222",
            "Braga",
            500,
            EntryState::Resolved,
        ),
    ];
    let dir = tempfile::tempdir()?;
    println!(
        "{:<20} {:<6} {:<6} {:<7} {:<9} conflict",
        "policy", "phone", "city", "credit", "entry"
    );
    let mut failures = Vec::new();
    for (policy, phone, city, credit, state) in expected {
        let open = |name: &str| {
            Replica::open(
                dir.path().join(format!("{policy}-{name}")),
                Config::default().with_schema(schema(policy)?),
            )
        };
        let (hub, device) = (open("hub")?, open("device")?);
        fieldsync::sim::authority_group(&hub, &[&device], 0)?;
        hub.insert(
            "account",
            "acme",
            fields([
                ("name", Value::from("Acme")),
                ("phone", Value::from("111")),
                ("city", Value::from("Porto")),
                ("credit", Value::Int(100)),
            ]),
        )?;
        sync(&hub, &device)?;
        hub.update(
            "account",
            "acme",
            fields([("phone", Value::from("333")), ("credit", Value::Int(500))]),
        )?;
        std::thread::sleep(std::time::Duration::from_millis(5));
        device.update(
            "account",
            "acme",
            fields([
                ("phone", Value::from("222")),
                ("city", Value::from("Braga")),
            ]),
        )?;
        sync(&device, &hub)?;
        let (h, d) = (
            hub.get("account", "acme")?.ok_or("lost")?,
            device.get("account", "acme")?.ok_or("lost")?,
        );
        let (eh, ed) = (
            hub.conflicts(&ConflictFilter::all())?,
            device.conflicts(&ConflictFilter::all())?,
        );
        let f = |k: &str| h.fields.get(k).cloned().unwrap_or(Value::Null);
        let show = |v: Value| match v {
            Value::String(s) => s,
            Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        let entry = eh.first();
        println!(
            "{:<20} {:<6} {:<6} {:<7} {:<9} {}",
            policy.to_string(),
            show(f("phone")),
            show(f("city")),
            show(f("credit")),
            entry.map_or("none", |e| if e.state == EntryState::Open {
                "open"
            } else {
                "resolved"
            }),
            entry.map_or(String::new(), |e| e.message.clone()),
        );
        let ok = h.fields == d.fields
            && eh == ed
            && eh.len() == 1
            && eh[0].state == state
            && eh[0].fields == entry_fields(policy)
            && f("phone") == Value::from(phone)
            && f("city") == Value::from(city)
            && f("credit") == Value::Int(credit);
        if !ok {
            failures.push(policy);
        }
    }
    if !failures.is_empty() {
        return Err(format!("FAILED: unexpected outcome under {failures:?}").into());
    }
    println!("resco_policies: every policy as specified, both peers equal");
    Ok(())
}
