//! Pending events (every status transition, cancel, restarts, relays), the
//! sync gate, and reactions; in-memory replicas synced with the real sync
//! protocol (`sim::sync_pair`). The same over libp2p is in tests/node.rs.

mod common;

use common::run_example;
use std::sync::Arc;

use fieldsync::conflict::{Choice, ConflictFilter, Resolution};
use fieldsync::pending::{EventKind, EventStatus, PendingFilter};
use fieldsync::schema::{Collection, FieldType, Policy, Schema, Violation};
use fieldsync::sim::sync_pair;
use fieldsync::store::MemoryStore;
use fieldsync::{Config, Reaction, ReactionWrite, Replica, Role, Value, fields};

const NOW: u64 = 1_800_000_000_000;

#[test]
fn the_offline_outbox_story_confirms_rejects_and_cancels() {
    run_example("offline_outbox", "offline_outbox: done");
}

#[test]
fn the_opportunity_story_writes_one_activity_on_every_peer() {
    run_example(
        "opportunity_activity",
        "opportunity_activity: one activity on every peer",
    );
}

fn schema() -> Schema {
    Schema::new()
        .with(
            Collection::builder("customer")
                .required("name", FieldType::String)
                .field("tax_id", FieldType::String)
                .default("visits", FieldType::Counter, Value::Counter(0))
                .build()
                .unwrap(),
        )
        .unwrap()
        .with(
            Collection::builder("invoice")
                .required("customer", FieldType::Reference("customer".into()))
                .required("total", FieldType::Integer)
                .build()
                .unwrap(),
        )
        .unwrap()
}

fn open(store: &MemoryStore, schema: &Schema) -> Replica {
    Replica::with_storage(
        Arc::new(store.clone()),
        Config::default().with_schema(schema.clone()),
    )
    .unwrap()
}

/// The authority's closure: a customer needs a tax id (devices do not know
/// this rule, so only the authority refuses).
fn tax_rule(r: &Replica) {
    r.add_validator("customer", |f: &fieldsync::Fields| {
        if f.get("tax_id").is_none() {
            vec![Violation::new("missing_tax_id", "a customer needs a tax id").on("tax_id")]
        } else {
            Vec::new()
        }
    })
    .unwrap();
}

/// Device, relay, authority: every peer knows the authority.
struct Trio {
    device: Replica,
    relay: Replica,
    authority: Replica,
    stores: [MemoryStore; 3],
}

fn trio(schema: &Schema) -> Trio {
    let stores = [MemoryStore::new(), MemoryStore::new(), MemoryStore::new()];
    let [d, r, a] = &stores;
    let (device, relay, authority) = (open(d, schema), open(r, schema), open(a, schema));
    fieldsync::sim::authority_group(&authority, &[&device, &relay], NOW).unwrap();
    tax_rule(&authority);
    Trio {
        device,
        relay,
        authority,
        stores,
    }
}

fn sync(a: &Replica, b: &Replica) {
    let s = sync_pair(a, b, NOW, None).unwrap();
    assert!(s.synced, "sync did not finish: {s:?}");
}

fn statuses(r: &Replica) -> Vec<(u64, EventKind, EventStatus)> {
    r.pending(&PendingFilter::all())
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.kind, e.status))
        .collect()
}

#[test]
fn every_local_write_is_a_pending_event_until_an_authority_confirms_it() {
    let t = trio(&schema());
    let w = t
        .device
        .insert(
            "customer",
            "c1",
            fields([("name", "Ana".into()), ("tax_id", "T1".into())]),
        )
        .unwrap();
    t.device
        .update("customer", "c1", fields([("name", "Ana B".into())]))
        .unwrap();
    t.device
        .insert(
            "customer",
            "c2",
            fields([("name", "Bo".into()), ("tax_id", "T2".into())]),
        )
        .unwrap();
    t.device.delete("customer", "c2").unwrap();
    let list = t.device.pending(&PendingFilter::all()).unwrap();
    assert_eq!(
        list.iter().map(|e| (e.kind, e.status)).collect::<Vec<_>>(),
        vec![
            (EventKind::Insert, EventStatus::Pending),
            (EventKind::Update, EventStatus::Pending),
            (EventKind::Insert, EventStatus::Pending),
            (EventKind::Delete, EventStatus::Pending),
        ]
    );
    assert_eq!(list[0].change, w.heads[0].to_string());
    assert!(list.windows(2).all(|p| p[0].id < p[1].id));
    // pending -> processing: a relay holds them (no verdict yet).
    sync(&t.device, &t.relay);
    assert!(
        statuses(&t.device)
            .iter()
            .all(|(_, _, s)| *s == EventStatus::Processing)
    );
    // The authority gets them through the relay; its acknowledgement comes
    // back the same way; confirmed events leave the list.
    sync(&t.relay, &t.authority);
    assert!(
        statuses(&t.device)
            .iter()
            .all(|(_, _, s)| *s == EventStatus::Processing)
    );
    sync(&t.device, &t.relay);
    assert_eq!(statuses(&t.device), vec![]);
    // The authority keeps no events of its own writes.
    t.authority
        .insert(
            "customer",
            "c9",
            fields([("name", "Cy".into()), ("tax_id", "T9".into())]),
        )
        .unwrap();
    assert!(
        t.authority
            .pending(&PendingFilter::all())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_rejection_and_its_rejected_fk_child_reach_the_origin_through_a_relay() {
    let t = trio(&schema());
    t.device
        .insert("customer", "c1", fields([("name", "Ana".into())]))
        .unwrap();
    t.device
        .insert(
            "invoice",
            "i1",
            fields([("customer", "c1".into()), ("total", 40.into())]),
        )
        .unwrap();
    t.device
        .insert(
            "customer",
            "ok",
            fields([("name", "Ok".into()), ("tax_id", "T".into())]),
        )
        .unwrap();
    let mut watch = t.device.watch_pending();
    sync(&t.device, &t.relay);
    sync(&t.relay, &t.authority);
    sync(&t.relay, &t.device);
    let list = t.device.pending(&PendingFilter::all()).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let (cust, inv) = (&list[0], &list[1]);
    assert_eq!(
        (cust.record.as_str(), cust.status),
        ("c1", EventStatus::Rejected)
    );
    assert_eq!(cust.errors[0].code, "missing_tax_id");
    assert_eq!(cust.errors[0].message, "a customer needs a tax id");
    assert_eq!(
        cust.decided_by.as_deref(),
        Some(t.authority.actor().to_hex_string().as_str())
    );
    assert_eq!(
        (inv.record.as_str(), inv.status),
        ("i1", EventStatus::RejectedFk)
    );
    assert_eq!(inv.linked, Some(cust.id));
    assert_eq!(inv.parent, Some(("customer".into(), "c1".into())));
    // Subscribers saw the moves.
    let mut seen = Vec::new();
    while let Ok(c) = watch.try_recv() {
        seen.push((c.event.id, c.from, c.event.status));
    }
    assert!(
        seen.contains(&(
            cust.id,
            Some(EventStatus::Processing),
            EventStatus::Rejected
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(id, _, s)| *id != cust.id && *id != inv.id && *s == EventStatus::Confirmed),
        "{seen:?}"
    );
    // Filter by status.
    assert_eq!(
        t.device
            .pending(&PendingFilter::all().status(EventStatus::RejectedFk))
            .unwrap()
            .len(),
        1
    );
    // The device fixes the customer: the rejection is lifted, both accepted.
    t.device
        .update("customer", "c1", fields([("tax_id", "T1".into())]))
        .unwrap();
    sync(&t.device, &t.relay);
    sync(&t.relay, &t.authority);
    sync(&t.relay, &t.device);
    assert_eq!(
        statuses(&t.device),
        vec![],
        "everything confirmed after the fix"
    );
}

#[test]
fn statuses_survive_restarts_on_both_sides() {
    let s = schema();
    let t = trio(&s);
    t.device
        .insert("customer", "c1", fields([("name", "Ana".into())]))
        .unwrap();
    t.device
        .insert(
            "customer",
            "c2",
            fields([("name", "Bo".into()), ("tax_id", "T".into())]),
        )
        .unwrap();
    let Trio {
        device,
        relay,
        authority,
        stores,
    } = t;
    drop(device);
    let device = open(&stores[0], &s);
    assert_eq!(
        statuses(&device).len(),
        2,
        "pending events survive a restart"
    );
    sync(&device, &relay);
    drop(device);
    let device = open(&stores[0], &s);
    assert!(
        statuses(&device)
            .iter()
            .all(|(_, _, s)| *s == EventStatus::Processing)
    );
    sync(&relay, &authority);
    // The authority restarts (its validator is registered again at open).
    drop(authority);
    let authority = open(&stores[2], &s);
    tax_rule(&authority);
    sync(&authority, &relay);
    sync(&relay, &device);
    drop(device);
    let device = open(&stores[0], &s);
    let list = device.pending(&PendingFilter::all()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].record.as_str(), list[0].status),
        ("c1", EventStatus::Rejected)
    );
    assert_eq!(list[0].errors[0].code, "missing_tax_id");
    // Dismissed, it leaves the list for good.
    device.dismiss_event(list[0].id).unwrap();
    assert!(statuses(&device).is_empty());
    drop(device);
    assert!(statuses(&open(&stores[0], &s)).is_empty());
}

#[test]
fn cancel_undoes_a_pending_insert_update_and_delete() {
    let s = schema();
    let t = trio(&s);
    // Settled state first: c1 and c2 confirmed everywhere.
    t.device
        .insert(
            "customer",
            "c1",
            fields([("name", "Ana".into()), ("tax_id", "T1".into())]),
        )
        .unwrap();
    t.device
        .insert(
            "customer",
            "c2",
            fields([("name", "Bo".into()), ("tax_id", "T2".into())]),
        )
        .unwrap();
    sync(&t.device, &t.authority);
    assert!(statuses(&t.device).is_empty());
    // Offline: an insert (then an update of it), an update, a counter, a delete.
    t.device
        .insert(
            "customer",
            "c3",
            fields([("name", "Cy".into()), ("tax_id", "T3".into())]),
        )
        .unwrap();
    t.device
        .update("customer", "c3", fields([("name", "Cyd".into())]))
        .unwrap();
    t.device
        .update(
            "customer",
            "c1",
            fields([("name", "Ana Z".into()), ("tax_id", "T9".into())]),
        )
        .unwrap();
    t.device
        .update("customer", "c1", fields([("tax_id", "T10".into())]))
        .unwrap();
    t.device
        .update_with("customer", "c1", |e| e.increment("visits", 5))
        .unwrap();
    t.device.delete("customer", "c2").unwrap();
    let list = t.device.pending(&PendingFilter::all()).unwrap();
    assert_eq!(list.len(), 6);
    let id = |rec: &str, k: EventKind, nth: usize| {
        list.iter()
            .filter(|e| e.record == rec && e.kind == k)
            .nth(nth)
            .unwrap()
            .id
    };
    // Cancel the insert: the record is deleted, its later update cancelled too.
    let ins = id("c3", EventKind::Insert, 0);
    assert_eq!(
        t.device.cancel_event(ins).unwrap().status,
        EventStatus::Cancelled
    );
    assert!(
        t.device
            .get("customer", "c3")
            .unwrap()
            .unwrap()
            .meta
            .deleted
    );
    assert_eq!(
        t.device
            .pending_event(id("c3", EventKind::Update, 0))
            .unwrap()
            .unwrap()
            .status,
        EventStatus::Cancelled
    );
    // Cancel the first c1 update: `name` goes back; `tax_id` was changed
    // again since, so the later value stays.
    t.device
        .cancel_event(id("c1", EventKind::Update, 0))
        .unwrap();
    let c1 = t.device.get("customer", "c1").unwrap().unwrap();
    assert_eq!(c1.fields["name"], Value::from("Ana"));
    assert_eq!(c1.fields["tax_id"], Value::from("T10"));
    // Cancel the increment: the counter goes back.
    t.device
        .cancel_event(id("c1", EventKind::Update, 2))
        .unwrap();
    assert_eq!(
        t.device.get("customer", "c1").unwrap().unwrap().fields["visits"],
        Value::Counter(0)
    );
    // Cancel the delete: the record is back.
    t.device
        .cancel_event(id("c2", EventKind::Delete, 0))
        .unwrap();
    assert!(
        !t.device
            .get("customer", "c2")
            .unwrap()
            .unwrap()
            .meta
            .deleted
    );
    // A cancelled event cannot be cancelled again; an unknown one is NoEvent.
    assert!(matches!(
        t.device.cancel_event(ins),
        Err(fieldsync::Error::Cancel { .. })
    ));
    assert!(matches!(
        t.device.cancel_event(9999),
        Err(fieldsync::Error::NoEvent { .. })
    ));
    // The compensations replicate: the authority ends as if nothing happened
    // except the one update that was not cancelled.
    sync(&t.device, &t.authority);
    let a1 = t.authority.get("customer", "c1").unwrap().unwrap();
    assert_eq!(
        (
            a1.fields["name"].clone(),
            a1.fields["tax_id"].clone(),
            a1.fields["visits"].clone()
        ),
        (Value::from("Ana"), Value::from("T10"), Value::Counter(0))
    );
    assert!(
        !t.authority
            .get("customer", "c2")
            .unwrap()
            .unwrap()
            .meta
            .deleted
    );
    assert!(
        t.authority
            .get("customer", "c3")
            .unwrap()
            .unwrap()
            .meta
            .deleted
    );
    let left = statuses(&t.device);
    assert_eq!(
        left.iter()
            .filter(|(_, _, s)| *s == EventStatus::Cancelled)
            .count(),
        5,
        "{left:?}"
    );
    assert!(
        left.iter().all(|(_, _, s)| *s == EventStatus::Cancelled),
        "the uncancelled update is confirmed: {left:?}"
    );
    // Confirmed events cannot be cancelled.
    let confirmed = id("c1", EventKind::Update, 1);
    assert!(matches!(
        t.device.cancel_event(confirmed),
        Err(fieldsync::Error::NoEvent { .. })
    ));
}

#[test]
fn without_authorities_events_are_confirmed_once_every_member_holds_them() {
    let s = schema();
    let [a, b, c] = [
        open(&MemoryStore::new(), &s),
        open(&MemoryStore::new(), &s),
        open(&MemoryStore::new(), &s),
    ];
    // A group without an authority: a founds it, all three are devices.
    a.found_group().unwrap();
    for m in [&a, &b, &c] {
        a.add_member(&m.actor().to_hex_string(), Role::Device)
            .unwrap();
    }
    for r in [&b, &c] {
        r.join_group(&a.actor().to_hex_string()).unwrap();
        assert!(fieldsync::sim::sync_pair(r, &a, NOW, None).unwrap().synced);
    }
    a.insert("customer", "x", fields([("name", "X".into())]))
        .unwrap();
    assert_eq!(statuses(&a)[0].2, EventStatus::Pending);
    sync(&a, &b);
    assert_eq!(
        statuses(&a)[0].2,
        EventStatus::Processing,
        "c does not have it yet"
    );
    // c gets it through b: a only knows from its own equal syncs.
    sync(&b, &c);
    assert_eq!(statuses(&a)[0].2, EventStatus::Processing);
    sync(&a, &c);
    assert!(statuses(&a).is_empty(), "every member holds it");
    // With no members at all, the peers synced with confirm.
    let (p, q) = (open(&MemoryStore::new(), &s), open(&MemoryStore::new(), &s));
    p.insert("customer", "y", fields([("name", "Y".into())]))
        .unwrap();
    assert_eq!(statuses(&p)[0].2, EventStatus::Pending);
    sync(&p, &q);
    assert!(statuses(&p).is_empty());
}

fn gated_schema() -> Schema {
    Schema::new()
        .with(
            Collection::builder("company")
                .required("name", FieldType::String)
                .field("phone", FieldType::String)
                .policy(Policy::UserAction)
                .block_sync_on_conflict(true)
                .build()
                .unwrap(),
        )
        .unwrap()
        .with(
            Collection::builder("note")
                .required("text", FieldType::String)
                .build()
                .unwrap(),
        )
        .unwrap()
}

#[test]
fn the_sync_gate_holds_back_a_conflicted_collection_and_lets_others_through() {
    let s = gated_schema();
    let (device, auth) = (open(&MemoryStore::new(), &s), open(&MemoryStore::new(), &s));
    fieldsync::sim::authority_group(&auth, &[&device], NOW).unwrap();
    device
        .insert("company", "k1", fields([("name", "Kay".into())]))
        .unwrap();
    device
        .insert("company", "k2", fields([("name", "Two".into())]))
        .unwrap();
    sync(&device, &auth);
    assert!(device.sync_gate().unwrap().is_empty());
    // A concurrent edit under user_action: an open conflict on the device.
    device
        .update("company", "k1", fields([("phone", "111".into())]))
        .unwrap();
    auth.update("company", "k1", fields([("phone", "222".into())]))
        .unwrap();
    sync(&device, &auth);
    let open_ids: Vec<String> = device
        .conflicts(&ConflictFilter::open())
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(open_ids.len(), 1);
    let gate = device.sync_gate().unwrap();
    assert_eq!(gate.len(), 1);
    assert_eq!(
        (gate[0].collection.as_str(), gate[0].conflicts.clone()),
        ("company", open_ids.clone())
    );
    // Offline work in both collections.
    device
        .update("company", "k2", fields([("name", "Two B".into())]))
        .unwrap();
    device
        .insert("company", "k3", fields([("name", "Three".into())]))
        .unwrap();
    device
        .insert("note", "n1", fields([("text", "hello".into())]))
        .unwrap();
    auth.insert("company", "k4", fields([("name", "From HQ".into())]))
        .unwrap();
    let s1 = sync_pair(&device, &auth, NOW, None).unwrap();
    let blocked = s1.blocked.expect("the sync reports blocked");
    assert!(!s1.synced);
    let mut ids: Vec<String> = blocked
        .iter()
        .map(|k| format!("{}/{}", k.collection, k.id))
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["company/k2", "company/k3"]);
    // Held back: not sent. Other collections and incoming data: through.
    assert_eq!(
        auth.get("company", "k2").unwrap().unwrap().fields["name"],
        Value::from("Two")
    );
    assert!(auth.get("company", "k3").unwrap().is_none());
    assert!(auth.get("note", "n1").unwrap().is_some());
    assert!(device.get("company", "k4").unwrap().is_some());
    // Resolve: the gate opens and everything goes.
    device
        .resolve(&open_ids[0], Resolution::new(Choice::KeepDevice))
        .unwrap();
    assert!(device.sync_gate().unwrap().is_empty());
    sync(&device, &auth);
    assert_eq!(
        auth.get("company", "k2").unwrap().unwrap().fields["name"],
        Value::from("Two B")
    );
    assert!(auth.get("company", "k3").unwrap().is_some());
}

fn crm() -> Schema {
    Schema::new()
        .with(
            Collection::builder("opportunity")
                .required("title", FieldType::String)
                .default("stage", FieldType::String, "lead")
                .status("stage", &["lead", "qualified", "negotiation", "won"])
                .build()
                .unwrap(),
        )
        .unwrap()
        .with(
            Collection::builder("activity")
                .required("opportunity", FieldType::Reference("opportunity".into()))
                .required("title", FieldType::String)
                .build()
                .unwrap(),
        )
        .unwrap()
}

fn negotiation_call() -> Reaction {
    Reaction::new("negotiation_call", "opportunity", "stage")
        .when(|t| t.after.get("stage") == Some(&Value::from("negotiation")))
        .then(|t| {
            vec![ReactionWrite::insert(
                "activity",
                "call",
                fields([
                    ("opportunity", Value::from(t.id)),
                    ("title", Value::from("Call about the offer")),
                ]),
            )]
        })
}

#[test]
fn a_reaction_run_by_two_authorities_writes_one_record() {
    let s = crm();
    let [d, a1, a2] = [
        open(&MemoryStore::new(), &s),
        open(&MemoryStore::new(), &s),
        open(&MemoryStore::new(), &s),
    ];
    fieldsync::sim::authority_group(&a1, &[&d, &a2], NOW).unwrap();
    a1.add_member(&a2.actor().to_hex_string(), Role::Authority)
        .unwrap();
    for r in [&d, &a2] {
        assert!(fieldsync::sim::sync_pair(r, &a1, NOW, None).unwrap().synced);
    }
    a1.add_reaction(negotiation_call()).unwrap();
    a2.add_reaction(negotiation_call()).unwrap();
    d.insert("opportunity", "o1", fields([("title", "Pumps".into())]))
        .unwrap();
    sync(&d, &a1);
    sync(&d, &a2);
    assert!(
        a1.list("activity").unwrap().is_empty(),
        "the predicate does not hold yet"
    );
    d.update("opportunity", "o1", fields([("stage", "qualified".into())]))
        .unwrap();
    d.update(
        "opportunity",
        "o1",
        fields([("stage", "negotiation".into())]),
    )
    .unwrap();
    // Each authority gets the change separately and runs the reaction.
    sync(&d, &a1);
    sync(&d, &a2);
    assert_eq!(a1.list("activity").unwrap().len(), 1);
    assert_eq!(a2.list("activity").unwrap().len(), 1);
    sync(&a1, &a2);
    sync(&d, &a1);
    for r in [&d, &a1, &a2] {
        let acts = r.list("activity").unwrap();
        assert_eq!(acts.len(), 1, "one activity on every peer");
        assert_eq!(acts[0].fields["opportunity"].as_str(), Some("o1"));
        assert!(r.conflicts(&ConflictFilter::default()).unwrap().is_empty());
    }
    // The device's events are confirmed by an authority.
    assert!(statuses(&d).is_empty());
    // Moving the stage again later does not fire (the predicate holds only
    // for negotiation), and a local write on an authority runs it too.
    a1.insert(
        "opportunity",
        "o2",
        fields([("title", "Valves".into()), ("stage", "negotiation".into())]),
    )
    .unwrap();
    assert_eq!(a1.list("activity").unwrap().len(), 2);
}

/// Pega's story from the author's side: an edit made while the case advanced
/// elsewhere waits in an open conflict, and the author's pending list says
/// so (it is not confirmed); once a person keeps the other side, the event
/// is rejected with code `conflict`; keeping the author's side confirms it.
#[test]
fn an_edit_held_by_a_conflict_is_shown_as_held_and_ends_by_the_decision() {
    use fieldsync::conflict::{Choice, ConflictFilter, Resolution};
    use fieldsync::schema::Policy;
    let s = Schema::new()
        .with(
            Collection::builder("expense")
                .required("title", FieldType::String)
                .field("amount", FieldType::Integer)
                .default("status", FieldType::String, "draft")
                .status("status", &["draft", "submitted", "approved"])
                .policy(Policy::UserAction)
                .build()
                .unwrap(),
        )
        .unwrap();
    for keep_device in [false, true] {
        let (dev, hub) = (open(&MemoryStore::new(), &s), open(&MemoryStore::new(), &s));
        fieldsync::sim::authority_group(&hub, &[&dev], NOW).unwrap();
        dev.insert(
            "expense",
            "e1",
            fields([("title", "Flight".into()), ("status", "submitted".into())]),
        )
        .unwrap();
        sync(&dev, &hub);
        sync(&dev, &hub);
        assert!(statuses(&dev).is_empty(), "the insert is confirmed");
        dev.update("expense", "e1", fields([("amount", Value::Int(465))]))
            .unwrap();
        hub.update("expense", "e1", fields([("status", "approved".into())]))
            .unwrap();
        sync(&dev, &hub);
        sync(&dev, &hub);
        let list = dev.pending(&PendingFilter::all()).unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(
            list[0].status,
            EventStatus::Processing,
            "held, not confirmed"
        );
        assert_eq!(list[0].errors[0].code, "held");
        assert!(
            list[0].errors[0].message.contains("waiting for a person"),
            "{:?}",
            list[0].errors
        );
        let entry = &hub.conflicts(&ConflictFilter::open()).unwrap()[0];
        let keep = if keep_device { "device" } else { "authority" };
        hub.resolve(&entry.id, Resolution::new(Choice::Keep(keep.into())))
            .unwrap();
        sync(&dev, &hub);
        sync(&dev, &hub);
        let list = dev.pending(&PendingFilter::all()).unwrap();
        if keep_device {
            assert!(list.is_empty(), "kept: confirmed and gone: {list:?}");
        } else {
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].status, EventStatus::Rejected);
            assert_eq!(list[0].errors[0].code, "conflict");
            assert!(
                list[0].errors[0]
                    .message
                    .contains("kept the authority's version"),
                "{:?}",
                list[0].errors
            );
        }
    }
}

/// Many edits held at once: each record's outcomes live in their own `_held`
/// record (the device's `_ack` record stays a few bytes however many
/// conflicts there are), and the device sees every one of them held.
#[test]
fn held_outcomes_are_kept_per_record_not_in_one_growing_acknowledgement() {
    use fieldsync::schema::Policy;
    let s = Schema::new()
        .with(
            Collection::builder("expense")
                .required("title", FieldType::String)
                .field("amount", FieldType::Integer)
                .policy(Policy::UserAction)
                .build()
                .unwrap(),
        )
        .unwrap();
    let (dev, hub) = (open(&MemoryStore::new(), &s), open(&MemoryStore::new(), &s));
    fieldsync::sim::authority_group(&hub, &[&dev], NOW).unwrap();
    const N: usize = 40;
    for i in 0..N {
        dev.insert(
            "expense",
            &format!("e{i}"),
            fields([("title", "Flight".into())]),
        )
        .unwrap();
    }
    sync(&dev, &hub);
    sync(&dev, &hub);
    assert!(statuses(&dev).is_empty(), "the inserts are confirmed");
    for i in 0..N {
        let id = format!("e{i}");
        dev.update("expense", &id, fields([("amount", Value::Int(1))]))
            .unwrap();
        hub.update("expense", &id, fields([("amount", Value::Int(2))]))
            .unwrap();
    }
    sync(&dev, &hub);
    sync(&dev, &hub);
    assert_eq!(hub.conflicts(&ConflictFilter::open()).unwrap().len(), N);
    let held = hub.list("_held").unwrap();
    assert_eq!(held.len(), N, "one outcome record per record");
    for ack in hub.list("_ack").unwrap() {
        let old = ack.fields.get("held").and_then(Value::as_str).unwrap_or("");
        assert!(old.is_empty(), "no outcomes in the acknowledgement: {old}");
        let seen = ack.fields.get("seen").and_then(Value::as_str).unwrap_or("");
        assert!(seen.len() < 16, "the acknowledgement stays small: {seen}");
    }
    let list = dev.pending(&PendingFilter::all()).unwrap();
    assert_eq!(list.len(), N, "{list:?}");
    assert!(
        list.iter()
            .all(|e| e.status == EventStatus::Processing && e.errors[0].code == "held"),
        "{list:?}"
    );
    // Deciding one releases exactly that one.
    let entry = &hub.conflicts(&ConflictFilter::open()).unwrap()[0];
    hub.resolve(&entry.id, Resolution::new(Choice::Keep("device".into())))
        .unwrap();
    sync(&dev, &hub);
    sync(&dev, &hub);
    assert_eq!(dev.pending(&PendingFilter::all()).unwrap().len(), N - 1);
}

#[test]
fn events_of_one_transaction_are_stored_together_and_move_one_by_one() {
    use fieldsync::store::Storage;
    let t = trio(&schema());
    let customer = |name: &str, tax: Option<&str>| {
        let mut f = fields([("name", Value::from(name))]);
        if let Some(tax) = tax {
            f.insert("tax_id".into(), tax.into());
        }
        f
    };
    t.device
        .transaction(|tx| {
            tx.insert("customer", "c1", customer("Ana", Some("T1")))?;
            tx.insert("customer", "c2", customer("Bo", None))?; // the authority refuses it
            tx.insert("customer", "c3", customer("Cy", Some("T3")))?;
            Ok(())
        })
        .unwrap();
    // One stored value for the transaction's three events.
    assert_eq!(t.stores[0].scan_prefix(b"e:").unwrap().len(), 1);
    t.device
        .update("customer", "c3", fields([("name", "Cy B".into())]))
        .unwrap();
    assert_eq!(t.stores[0].scan_prefix(b"e:").unwrap().len(), 2);
    let ids: Vec<u64> = statuses(&t.device).iter().map(|e| e.0).collect();
    assert_eq!(ids.len(), 4);
    for &id in &ids {
        assert_eq!(t.device.pending_event(id).unwrap().unwrap().id, id);
    }
    assert_eq!(t.device.pending_event(ids[3] + 1).unwrap(), None);
    // Cancelling c3's insert (the last of the first group) cancels its
    // later update (the second group) and leaves c1 and c2 pending.
    t.device.cancel_event(ids[2]).unwrap();
    let after_cancel = vec![
        (ids[0], EventKind::Insert, EventStatus::Pending),
        (ids[1], EventKind::Insert, EventStatus::Pending),
        (ids[2], EventKind::Insert, EventStatus::Cancelled),
        (ids[3], EventKind::Update, EventStatus::Cancelled),
    ];
    assert_eq!(statuses(&t.device), after_cancel);
    // A restart reads the same list.
    let reopened = open(&t.stores[0], &schema());
    assert_eq!(statuses(&reopened), after_cancel);
    drop(reopened);
    // The authority confirms c1 (it leaves the list) and rejects c2; the
    // group keeps the others.
    sync(&t.device, &t.authority);
    sync(&t.device, &t.authority);
    assert_eq!(
        statuses(&t.device),
        vec![
            (ids[1], EventKind::Insert, EventStatus::Rejected),
            (ids[2], EventKind::Insert, EventStatus::Cancelled),
            (ids[3], EventKind::Update, EventStatus::Cancelled),
        ]
    );
    assert_eq!(t.device.pending_event(ids[0]).unwrap(), None);
    // Dismissing empties the groups, and then their keys are gone.
    for &id in &ids[1..] {
        t.device.dismiss_event(id).unwrap();
    }
    assert_eq!(statuses(&t.device), vec![]);
    assert!(t.stores[0].scan_prefix(b"e:").unwrap().is_empty());
    assert!(t.device.dismiss_event(ids[1]).is_err());
}
