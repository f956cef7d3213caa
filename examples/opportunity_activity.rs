//! Creatio's business process on the main node, with two main nodes.
//!
//! - Two **hubs** (both authorities) register the same reaction: when an
//!   opportunity's stage moves to `negotiation`, write an activity ("call the
//!   customer").
//! - A **sales rep**'s device moves an opportunity to `negotiation` offline,
//!   then syncs with each hub in turn: each runs the reaction on its own.
//! - The written activity's id derives from the triggering change, so when
//!   the hubs sync with each other and the device syncs again, every peer
//!   holds **one** activity, not two.
//!
//! `cargo run --example opportunity_activity` exits 0 only if every step holds.

mod common;

use std::error::Error;

use common::{check, sync};
use fieldsync::schema::{Collection, FieldType, Schema};
use fieldsync::{Reaction, ReactionWrite, Role, Value, fields};

fn schema() -> Result<Schema, fieldsync::schema::SchemaError> {
    Schema::new()
        .with(
            Collection::builder("opportunity")
                .required("title", FieldType::String)
                .default("stage", FieldType::String, "lead")
                .status(
                    "stage",
                    &["lead", "qualified", "negotiation", "won", "lost"],
                )
                .build()?,
        )?
        .with(
            Collection::builder("activity")
                .required("opportunity", FieldType::Reference("opportunity".into()))
                .required("title", FieldType::String)
                .build()?,
        )
}

fn call_reaction() -> Reaction {
    Reaction::new("negotiation_call", "opportunity", "stage")
        .when(|t| t.after.get("stage").and_then(Value::as_str) == Some("negotiation"))
        .then(|t| {
            let title = t.after.get("title").and_then(Value::as_str).unwrap_or("?");
            vec![ReactionWrite::insert(
                "activity",
                "call",
                fields([
                    ("opportunity", Value::from(t.id)),
                    (
                        "title",
                        Value::from(format!("Call the customer about {title}")),
                    ),
                ]),
            )]
        })
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let peers = common::group(dir.path(), &schema()?, &["hub1", "hub2", "rep"])?;
    let [hub1, hub2, rep] = peers.as_slice() else {
        return Err("expected 3 peers".into());
    };
    // The second hub is an authority too.
    let hub2_id = hub2.actor().to_hex_string();
    hub1.add_member(&hub2_id, Role::Authority)?;
    for p in [hub2, rep] {
        sync(p, hub1)?;
    }
    hub1.add_reaction(call_reaction())?;
    hub2.add_reaction(call_reaction())?;

    rep.insert(
        "opportunity",
        "pumps",
        fields([("title", "Pumps for the mill".into())]),
    )?;
    sync(rep, hub1)?;
    sync(rep, hub2)?;
    check(hub1.list("activity")?.is_empty(), "no activity for a lead")?;

    // Offline: the rep qualifies the opportunity and moves it to negotiation.
    rep.update(
        "opportunity",
        "pumps",
        fields([("stage", "qualified".into())]),
    )?;
    rep.update(
        "opportunity",
        "pumps",
        fields([("stage", "negotiation".into())]),
    )?;
    sync(rep, hub1)?;
    sync(rep, hub2)?;
    check(
        hub1.list("activity")?.len() == 1 && hub2.list("activity")?.len() == 1,
        "each hub ran the reaction",
    )?;
    sync(hub1, hub2)?;
    sync(rep, hub1)?;
    sync(rep, hub2)?;
    for (name, p) in [("hub1", hub1), ("hub2", hub2), ("rep", rep)] {
        let acts = p.list("activity")?;
        println!(
            "{name}: {} activity: {}",
            acts.len(),
            acts.iter()
                .map(|a| format!("{} `{}`", a.id, a.fields["title"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        check(acts.len() == 1, &format!("one activity on {name}"))?;
        check(
            acts[0].fields["opportunity"].as_str() == Some("pumps"),
            &format!("it belongs to the opportunity on {name}"),
        )?;
    }
    check(
        rep.pending(&fieldsync::pending::PendingFilter::all())?
            .is_empty(),
        "the rep's changes are all confirmed",
    )?;
    println!("opportunity_activity: one activity on every peer");
    Ok(())
}
