//! Semantic conflicts: the four seed stories (the examples, run as programs)
//! and the rules behind them, one test per rule.

mod common;

use common::run_example;

use fieldsync::conflict::{
    Choice, ConflictEvent, ConflictFilter, EntryState, Kind, Resolution, ResolvedBy,
};
use fieldsync::schema::{Check, Collection, FieldType, Granularity, Policy, Rule, Schema};
use fieldsync::sim::sync_pair;
use fieldsync::{Config, Error, Replica, Role, Scan, Value, fields};

const NOW: u64 = 1_800_000_000_000;

#[test]
fn the_pega_expense_story_converges_after_a_reopen() {
    run_example("expense_approval", "expense_approval: all peers converged");
}

#[test]
fn the_genexus_customer_invoice_story_accepts_both_after_the_fix() {
    run_example("customer_invoice", "customer_invoice: done");
}

#[test]
fn the_resco_policies_table_is_as_specified() {
    run_example(
        "resco_policies",
        "resco_policies: every policy as specified, both peers equal",
    );
}

#[test]
fn the_outsystems_company_story_resolves_side_by_side() {
    run_example("company_conflicts", "company_conflicts: done");
}

fn case(policy: Policy) -> Collection {
    Collection::builder("case")
        .required("title", FieldType::String)
        .field("amount", FieldType::Integer)
        .field("note", FieldType::String)
        .default("visits", FieldType::Counter, Value::Counter(0))
        .default("status", FieldType::String, "draft")
        .status("status", &["draft", "submitted", "approved", "closed"])
        .policy(policy)
        .build()
        .unwrap()
}

/// Replicas in memory: `n` of them, the first an authority (if `authority`).
fn group(n: usize, c: Collection, authority: bool) -> Vec<Replica> {
    let schema = Schema::new().with(c).unwrap();
    let rs: Vec<Replica> = (0..n)
        .map(|_| Replica::in_memory(Config::default().with_schema(schema.clone())).unwrap())
        .collect();
    if authority {
        let others: Vec<&Replica> = rs[1..].iter().collect();
        fieldsync::sim::authority_group(&rs[0], &others, NOW).unwrap();
    }
    rs
}

#[track_caller]
fn sync(a: &Replica, b: &Replica) {
    let r = sync_pair(a, b, NOW, None).unwrap();
    assert!(
        r.synced,
        "{:?}; {:?}; {:?}",
        r.incomplete, r.issues, r.peer_issues
    );
}

fn title(t: &str) -> fieldsync::Fields {
    fields([("title", Value::from(t))])
}

#[test]
fn commuting_edits_merge_silently() {
    let rs = group(2, case(Policy::UserAction), true);
    let (hub, dev) = (&rs[0], &rs[1]);
    hub.insert("case", "k", title("pump")).unwrap();
    sync(hub, dev);
    hub.update("case", "k", fields([("amount", Value::Int(5))]))
        .unwrap();
    hub.update_with("case", "k", |e| e.increment("visits", 1))
        .unwrap();
    dev.update("case", "k", fields([("note", Value::from("gate"))]))
        .unwrap();
    dev.update_with("case", "k", |e| e.increment("visits", 2))
        .unwrap();
    sync(dev, hub);
    for r in [hub, dev] {
        assert!(r.conflicts(&ConflictFilter::all()).unwrap().is_empty());
        let rec = r.get("case", "k").unwrap().unwrap();
        assert_eq!(rec.fields["visits"], Value::Counter(3));
        assert_eq!(rec.fields["amount"], Value::Int(5));
        assert_eq!(rec.fields["note"], Value::from("gate"));
    }
}

#[test]
fn a_merge_never_moves_a_status_back_and_flags_the_stale_edit() {
    let rs = group(2, case(Policy::ServerWins), false);
    let (a, b) = (&rs[0], &rs[1]);
    a.insert("case", "k", title("pump")).unwrap();
    a.update("case", "k", fields([("status", Value::from("submitted"))]))
        .unwrap();
    sync(a, b);
    a.update("case", "k", fields([("status", Value::from("approved"))]))
        .unwrap();
    b.update("case", "k", fields([("note", Value::from("late edit"))]))
        .unwrap();
    sync(b, a);
    for r in [a, b] {
        let rec = r.get("case", "k").unwrap().unwrap();
        assert_eq!(rec.fields["status"], Value::from("approved"));
        let e = r.conflicts(&ConflictFilter::all()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, Kind::StatusRegression);
        assert_eq!(e[0].fields, vec!["note".to_owned()]);
    }
}

#[test]
fn an_ordinary_write_cannot_move_a_status_back_or_out_of_its_states() {
    let rs = group(1, case(Policy::ServerWins), false);
    let r = &rs[0];
    r.insert("case", "k", title("pump")).unwrap();
    r.update("case", "k", fields([("status", Value::from("approved"))]))
        .unwrap();
    let err = r
        .update("case", "k", fields([("status", Value::from("draft"))]))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Schema(fieldsync::schema::SchemaError::Transition { .. })
    ));
    let err = r
        .update("case", "k", fields([("status", Value::from("lost"))]))
        .unwrap_err();
    assert!(err.to_string().contains("not one of its states"), "{err}");
}

#[test]
fn server_wins_keeps_the_authority_value_and_the_device_value_in_the_entry() {
    let rs = group(2, case(Policy::ServerWins), true);
    let (hub, dev) = (&rs[0], &rs[1]);
    hub.insert("case", "k", title("pump")).unwrap();
    sync(hub, dev);
    dev.update("case", "k", fields([("amount", Value::Int(7))]))
        .unwrap();
    hub.update("case", "k", fields([("amount", Value::Int(9))]))
        .unwrap();
    sync(dev, hub);
    for r in [hub, dev] {
        assert_eq!(
            r.get("case", "k").unwrap().unwrap().fields["amount"],
            Value::Int(9)
        );
        let e = r.conflicts(&ConflictFilter::all()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, Kind::ConcurrentEdit);
        assert_eq!(
            e[0].resolved_by,
            Some(ResolvedBy::Policy(Policy::ServerWins))
        );
        let d = r.conflict(&e[0].id).unwrap().unwrap();
        let (device, authority) = (
            d.version("device").unwrap(),
            d.version("authority").unwrap(),
        );
        assert_eq!(
            device.fields["amount"],
            Value::Int(7),
            "the loser stays readable"
        );
        assert_eq!(authority.fields["amount"], Value::Int(9));
        assert!(authority.authority && !device.authority);
    }
}

#[test]
fn record_granularity_conflicts_on_different_fields_field_granularity_does_not() {
    for (g, conflicts) in [(Granularity::Field, 0), (Granularity::Record, 1)] {
        let c = Collection::builder("case")
            .required("title", FieldType::String)
            .field("a", FieldType::Integer)
            .field("b", FieldType::Integer)
            .granularity(g)
            .build()
            .unwrap();
        let rs = group(2, c, true);
        let (hub, dev) = (&rs[0], &rs[1]);
        hub.insert("case", "k", title("x")).unwrap();
        sync(hub, dev);
        hub.update("case", "k", fields([("a", Value::Int(1))]))
            .unwrap();
        dev.update("case", "k", fields([("b", Value::Int(2))]))
            .unwrap();
        sync(dev, hub);
        let e = hub.conflicts(&ConflictFilter::all()).unwrap();
        assert_eq!(e.len(), conflicts, "{g:?}");
        let rec = hub.get("case", "k").unwrap().unwrap();
        assert_eq!(rec.fields["a"], Value::Int(1));
        // Server wins at record granularity: the device's change is not applied.
        let b = if conflicts == 0 {
            Some(Value::Int(2))
        } else {
            None
        };
        assert_eq!(rec.fields.get("b").cloned(), b, "{g:?}");
    }
}

#[test]
fn two_devices_without_an_authority_fall_back_to_the_last_saved_change() {
    let rs = group(2, case(Policy::ServerWins), false);
    let (a, b) = (&rs[0], &rs[1]);
    a.insert("case", "k", title("pump")).unwrap();
    sync(a, b);
    b.update("case", "k", fields([("amount", Value::Int(2))]))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.update("case", "k", fields([("amount", Value::Int(1))]))
        .unwrap();
    sync(a, b);
    for r in [a, b] {
        // Creatio: the change saved last is kept, whichever device made more
        // writes; the entry is listed, decided by the policy.
        assert_eq!(
            r.get("case", "k").unwrap().unwrap().fields["amount"],
            Value::Int(1)
        );
        let e = r.conflicts(&ConflictFilter::all()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].state, EntryState::Resolved);
        assert_eq!(
            e[0].resolved_by,
            Some(ResolvedBy::Policy(Policy::LastWriterWins))
        );
        assert_eq!(e[0].authority_side(), None, "neither side is an authority");
    }
    let e = &a.conflicts(&ConflictFilter::all()).unwrap()[0];
    let err = a
        .resolve(&e.id, Resolution::new(Choice::KeepAuthority))
        .unwrap_err();
    assert!(err.to_string().contains("neither side"), "{err}");
}

#[test]
fn a_child_that_arrives_before_its_parent_waits_with_a_marker() {
    let schema = Schema::new()
        .with(
            Collection::builder("customer")
                .required("name", FieldType::String)
                .build()
                .unwrap(),
        )
        .unwrap()
        .with(
            Collection::builder("invoice")
                .required("customer", FieldType::Reference("customer".into()))
                .build()
                .unwrap(),
        )
        .unwrap();
    let r = Replica::in_memory(Config::default().with_schema(schema)).unwrap();
    r.insert(
        "invoice",
        "i1",
        fields([("customer", Value::Ref("c1".into()))]),
    )
    .unwrap();
    let inv = r.get("invoice", "i1").unwrap().unwrap();
    assert_eq!(inv.meta.unresolved, vec!["customer".to_owned()]);
    assert_eq!(r.list("invoice").unwrap().len(), 1, "readable, listed");
    assert!(r.conflicts(&ConflictFilter::all()).unwrap().is_empty());
    r.insert("customer", "c1", fields([("name", Value::from("Acme"))]))
        .unwrap();
    let inv = r.get("invoice", "i1").unwrap().unwrap();
    assert!(inv.meta.unresolved.is_empty(), "the parent arrived");
    // A deleted parent makes its live child RejectedFk, hidden until it stands.
    r.delete("customer", "c1").unwrap();
    let e = r.conflicts(&ConflictFilter::open()).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind, Kind::RejectedFk);
    assert!(r.list("invoice").unwrap().is_empty());
    assert_eq!(
        r.scan(&Scan::new("invoice").with_rejected()).unwrap().len(),
        1
    );
}

#[test]
fn declarative_rules_refuse_local_writes_and_authorities_reject_peer_writes() {
    let c = Collection::builder("item")
        .required("title", FieldType::String)
        .field("qty", FieldType::Integer)
        .rule(
            Rule::new("qty", Check::Max(10.0))
                .code("too_many")
                .message("at most 10"),
        )
        .build()
        .unwrap();
    let rs = group(2, c, true);
    let (hub, dev) = (&rs[0], &rs[1]);
    let err = hub
        .insert(
            "item",
            "a",
            fields([("title", Value::from("x")), ("qty", Value::Int(11))]),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { violations, .. } if violations[0].code == "too_many"),
        "{err}"
    );
    // A device running an older schema without the rule: simulated by a
    // device whose write predates the rule (imported raw data).
    let loose = Replica::in_memory(
        Config::default().with_schema(
            Schema::new()
                .with(
                    Collection::builder("item")
                        .required("title", FieldType::String)
                        .field("qty", FieldType::Integer)
                        .build()
                        .unwrap(),
                )
                .unwrap(),
        ),
    )
    .unwrap();
    hub.add_member(&loose.actor().to_hex_string(), Role::Device)
        .unwrap();
    loose.join_group(&hub.actor().to_hex_string()).unwrap();
    loose
        .insert(
            "item",
            "b",
            fields([("title", Value::from("y")), ("qty", Value::Int(50))]),
        )
        .unwrap();
    sync(&loose, hub);
    let e = hub.conflicts(&ConflictFilter::all()).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind, Kind::Rejected);
    assert_eq!(e[0].violations[0].code, "too_many");
    assert!(hub.list("item").unwrap().is_empty());
    // A person cannot override an authority's rules.
    let err = hub
        .resolve(&e[0].id, Resolution::new(Choice::KeepDevice))
        .unwrap_err();
    assert!(matches!(err, Error::Resolve { .. }), "{err}");
    sync(&loose, hub);
    sync(dev, hub);
    for r in [&loose, dev] {
        assert_eq!(r.conflicts(&ConflictFilter::all()).unwrap(), e);
        let rec = r.get("item", "b").unwrap().unwrap();
        assert!(rec.meta.rejected.is_some());
    }
}

#[test]
fn assign_route_and_watch_replicate_and_notify() {
    let rs = group(2, case(Policy::UserAction), true);
    let (hub, dev) = (&rs[0], &rs[1]);
    hub.insert("case", "k", title("pump")).unwrap();
    sync(hub, dev);
    let mut watch = hub.watch_conflicts();
    hub.update("case", "k", fields([("note", Value::from("h"))]))
        .unwrap();
    dev.update("case", "k", fields([("note", Value::from("d"))]))
        .unwrap();
    sync(dev, hub);
    let new = watch.try_recv().unwrap();
    let ConflictEvent::New(e) = new else {
        panic!("expected a new entry, got {new:?}")
    };
    assert_eq!(e.state, EntryState::Open);
    hub.assign(&e.id, "ana").unwrap();
    hub.route(&e.id, "back_office").unwrap();
    assert!(matches!(
        watch.try_recv().unwrap(),
        ConflictEvent::Updated(_)
    ));
    sync(hub, dev);
    let mine = dev
        .conflicts(&ConflictFilter::open().assignee("ana").queue("back_office"))
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, e.id);
    dev.resolve(&e.id, Resolution::new(Choice::KeepDevice))
        .unwrap();
    sync(dev, hub);
    for r in [hub, dev] {
        let rec = r.get("case", "k").unwrap().unwrap();
        assert_eq!(rec.fields["note"], Value::from("d"));
        let all = r.conflicts(&ConflictFilter::all()).unwrap();
        assert_eq!(all[0].state, EntryState::Resolved);
        assert!(matches!(
            &all[0].resolved_by,
            Some(ResolvedBy::Person { decision, .. }) if decision == "keep_device"
        ));
    }
}

#[test]
fn two_concurrent_resolutions_end_as_one_outcome_without_a_loop() {
    let rs = group(3, case(Policy::UserAction), true);
    let (hub, a, b) = (&rs[0], &rs[1], &rs[2]);
    hub.insert("case", "k", title("pump")).unwrap();
    sync(hub, a);
    sync(hub, b);
    hub.update("case", "k", fields([("note", Value::from("hub"))]))
        .unwrap();
    a.update("case", "k", fields([("note", Value::from("dev"))]))
        .unwrap();
    sync(a, hub);
    sync(b, hub);
    let id = hub.conflicts(&ConflictFilter::open()).unwrap()[0]
        .id
        .clone();
    a.resolve(&id, Resolution::new(Choice::KeepDevice)).unwrap();
    b.resolve(&id, Resolution::new(Choice::KeepAuthority))
        .unwrap();
    for _ in 0..3 {
        sync(a, hub);
        sync(b, hub);
    }
    let rec = hub.get("case", "k").unwrap().unwrap();
    let entries = hub.conflicts(&ConflictFilter::all()).unwrap();
    assert_eq!(entries.len(), 1, "no new entry from the two resolutions");
    assert_eq!(entries[0].state, EntryState::Resolved);
    for r in [a, b] {
        assert_eq!(r.get("case", "k").unwrap().unwrap().fields, rec.fields);
        assert_eq!(r.conflicts(&ConflictFilter::all()).unwrap(), entries);
    }
    // A sync that moves nothing more: quiescent.
    let again = sync_pair(a, hub, NOW, None).unwrap();
    assert!(again.synced);
    assert_eq!(again.report.unwrap().records_received, 0);
}

#[test]
fn resolving_an_unknown_entry_is_a_clear_error() {
    let rs = group(1, case(Policy::UserAction), false);
    let err = rs[0]
        .resolve("nope", Resolution::new(Choice::KeepDevice))
        .unwrap_err();
    assert!(matches!(err, Error::NoEntry { .. }));
}

#[test]
fn a_schema_file_declares_every_conflict_setting() {
    let text = r#"
[collections.expense]
policy = "user_action"
granularity = "record"
queue = "sync_errors"
block_sync_on_conflict = true
status = { field = "status", states = ["draft", "pending", "resolved"], transitions = [["draft", "pending"], ["pending", "resolved"]] }

[[collections.expense.rules]]
field = "amount"
min = 0.0
code = "negative"
message = "no negative amounts"

[[collections.expense.rules]]
field = "code"
pattern = "[A-Z]{3}-[0-9]+"

[collections.expense.fields]
amount = { type = "float", required = true }
code = "string"
status = { type = "string", default = "draft" }
"#;
    let s = Schema::from_toml(text).unwrap();
    let c = s.collection("expense").unwrap();
    assert_eq!(c.settings.policy, Policy::UserAction);
    assert_eq!(c.settings.granularity, Granularity::Record);
    assert_eq!(c.queue_name(), "sync_errors");
    assert!(c.settings.block_sync_on_conflict);
    assert_eq!(c.settings.rules.len(), 2);
    let l = c.settings.lifecycle.as_ref().unwrap();
    assert!(l.allows("draft", "pending"));
    assert!(!l.allows("draft", "resolved"), "only the listed moves");
    let bad = fields([("amount", Value::Float(-1.0)), ("code", Value::from("x1"))]);
    let v = c.violations(&bad);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].code, "negative");
    for wrong in [
        text.replace("user_action", "server_rules"),
        text.replace("min = 0.0", "min = 0.0\nmax = 1.0"),
        text.replace("[A-Z]{3}-[0-9]+", "[unclosed"),
        text.replace("states = [\"draft\"", "states = [\"drafty\""),
    ] {
        assert!(Schema::from_toml(&wrong).is_err(), "{wrong}");
    }
}

#[test]
fn only_an_authority_s_verdicts_count_and_apps_cannot_write_system_records() {
    let c = Collection::builder("item")
        .required("title", FieldType::String)
        .build()
        .unwrap();
    let rs = group(3, c, true);
    let (hub, rogue, dev) = (&rs[0], &rs[1], &rs[2]);
    let id = |r: &Replica| r.actor().to_hex_string();
    // A device cannot make itself an authority of the group...
    let err = rogue.add_member(&id(rogue), Role::Authority).unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    // ...so the rogue founds a group of its own in which it is one, with a
    // rule that refuses everything.
    rogue.found_group().unwrap();
    for (r, role) in [
        (rogue, Role::Authority),
        (dev, Role::Device),
        (hub, Role::Device),
    ] {
        rogue.add_member(&id(r), role).unwrap();
    }
    rogue
        .add_validator("item", |_| {
            vec![fieldsync::schema::Violation::new("no", "rogue says no")]
        })
        .unwrap();
    dev.insert("item", "a", title("fine")).unwrap();
    // Its membership records are refused by the others (it is no admin of
    // their group), its verdict is taken but does not count.
    let _ = sync_pair(dev, rogue, NOW, None).unwrap();
    assert_eq!(
        rogue
            .conflicts(&ConflictFilter::all().kind(Kind::Rejected))
            .unwrap()
            .len(),
        1,
        "the rogue wrote a verdict"
    );
    let _ = sync_pair(rogue, hub, NOW, None).unwrap();
    sync(dev, hub);
    for r in [hub, dev] {
        assert!(r.conflicts(&ConflictFilter::all()).unwrap().is_empty());
        assert!(!r.members().unwrap().iter().any(|m| m.authority
            && m.member != fieldsync::member::member_id(hub.actor().to_bytes()).unwrap()));
        assert_eq!(r.list("item").unwrap().len(), 1, "the record stands");
    }
    let err = dev
        .insert(
            "_verdict",
            "x",
            fields([("collection", Value::from("item"))]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("system collection"), "{err}");
}

#[test]
fn concurrent_status_writes_show_the_most_advanced_state_whatever_automerge_picks() {
    let rs = group(2, case(Policy::LastWriterWins), false);
    let (a, b) = (&rs[0], &rs[1]);
    a.insert("case", "k", title("pump")).unwrap();
    sync(a, b);
    // b writes more operations first, so automerge's own winner for the
    // status (highest op counter) is b's less advanced state.
    for i in 0..5 {
        b.update(
            "case",
            "k",
            fields([("note", Value::from(format!("n{i}")))]),
        )
        .unwrap();
    }
    b.update("case", "k", fields([("status", Value::from("submitted"))]))
        .unwrap();
    a.update("case", "k", fields([("status", Value::from("approved"))]))
        .unwrap();
    sync(a, b);
    let raw = a.concurrent_values("case", "k", "status").unwrap();
    assert_eq!(raw.len(), 2, "both values are kept: {raw:?}");
    assert_eq!(
        raw[0],
        Value::from("submitted"),
        "automerge's winner is the older state"
    );
    for r in [a, b] {
        assert_eq!(
            r.get("case", "k").unwrap().unwrap().fields["status"],
            Value::from("approved")
        );
    }
}

/// A resolution reaches a third peer in pieces (the sync is cut after ever
/// more bytes): whatever has arrived, the record shows either what it
/// showed before the decision or what it shows after, never a mix (the
/// resolution change carries the decision; the `_entry` record only adds the
/// note).
#[test]
fn a_resolution_arriving_in_pieces_shows_the_record_before_or_after_never_between() {
    let c = Collection::builder("case")
        .required("title", FieldType::String)
        .field("a", FieldType::String)
        .field("b", FieldType::String)
        .field("c", FieldType::String)
        .policy(Policy::UserAction)
        .granularity(Granularity::Record)
        .build()
        .unwrap();
    let filler = Collection::builder("filler")
        .required("blob", FieldType::String)
        .build()
        .unwrap();
    let schema = Schema::new().with(c).unwrap().with(filler).unwrap();
    let mut cuts_between = 0;
    // Where the record and its decision record fall on the wire depends on
    // their key hashes (new actors every run): sweep again until a cut
    // falls between them.
    let mut sweeps_done = 0;
    'sweeps: for _ in 0..6 {
        if cuts_between > 0 {
            break;
        }
        sweeps_done += 1;
        for cut in (1..=100u64).map(|k| k * 3000) {
            let rs: Vec<Replica> = (0..3)
                .map(|_| Replica::in_memory(Config::default().with_schema(schema.clone())).unwrap())
                .collect();
            fieldsync::sim::authority_group(&rs[0], &[&rs[1], &rs[2]], NOW).unwrap();
            let (hub, dev, other) = (&rs[0], &rs[1], &rs[2]);
            let v = |s: &str| Value::from(s);
            hub.insert(
                "case",
                "k",
                fields([
                    ("title", v("t")),
                    ("a", v("a0")),
                    ("b", v("b0")),
                    ("c", v("c0")),
                ]),
            )
            .unwrap();
            sync(hub, dev);
            sync(hub, other);
            dev.update("case", "k", fields([("a", v("a-dev")), ("b", v("b-dev"))]))
                .unwrap();
            hub.update("case", "k", fields([("b", v("b-hub")), ("c", v("c-hub"))]))
                .unwrap();
            sync(dev, hub);
            sync(other, hub);
            let before = other.get("case", "k").unwrap().unwrap().fields;
            let e = &hub.conflicts(&ConflictFilter::open()).unwrap()[0];
            hub.resolve(
                &e.id,
                Resolution::new(Choice::KeepDevice).note("the device was right"),
            )
            .unwrap();
            // Records between them on the wire, so that the record and its
            // decision travel in different messages.
            hub.transaction(|tx| {
                // Text that does not compress, so the messages are full.
                for i in 0..120u64 {
                    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let blob: String = (0..1500)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            char::from(b'a' + (x % 26) as u8)
                        })
                        .collect();
                    tx.insert("filler", &format!("f{i}"), fields([("blob", v(&blob))]))?;
                }
                Ok(())
            })
            .unwrap();
            let after = hub.get("case", "k").unwrap().unwrap().fields;
            assert_ne!(before, after);
            let cut_sync = sync_pair(other, hub, NOW, Some(cut)).unwrap();
            let now = other.get("case", "k").unwrap().unwrap().fields;
            assert!(
                now == before || now == after,
                "cut after {cut} bytes: the record shows {now:?}; before the decision it showed {before:?}, after it shows {after:?}"
            );
            let heads = |r: &Replica| r.get("case", "k").unwrap().unwrap().meta.heads;
            let record_here = heads(other) == heads(hub);
            let decision_here = other.get("_entry", &e.id).unwrap().is_some();
            eprintln!(
                "cut {cut}: record {record_here} decision {decision_here} cut {}",
                cut_sync.cut
            );
            if record_here != decision_here {
                cuts_between += 1;
            }
            sync(other, hub);
            assert_eq!(other.get("case", "k").unwrap().unwrap().fields, after);
            let resolved = other.conflict_entry(&e.id).unwrap().unwrap();
            assert_eq!(resolved.state, EntryState::Resolved);
            if !cut_sync.cut {
                // This sweep reached a whole sync; the next one starts over.
                continue 'sweeps;
            }
        }
    }
    assert!(
        cuts_between > 0,
        "no cut fell between the record's resolution and its decision record in {sweeps_done} sweeps"
    );
}

/// Change events say where a change came from: a local write, a peer's sync
/// (naming the peer when the session knows it), or a re-evaluation that
/// changed only what the record shows.
#[test]
fn change_events_carry_their_origin() {
    let rs = group(2, case(Policy::UserAction), true);
    let (hub, dev) = (&rs[0], &rs[1]);
    let mut watch = dev.watch(fieldsync::WatchFilter::All);
    dev.insert("case", "k", title("pump")).unwrap();
    let e = watch.try_recv().unwrap();
    assert_eq!(
        (e.kind, e.peer.clone()),
        (fieldsync::ChangeKind::Insert, None)
    );
    hub.insert("case", "h", title("from the hub")).unwrap();
    assert!(fieldsync::sim::sync_named(dev, hub, NOW).unwrap().synced);
    let mut remote = Vec::new();
    while let Ok(e) = watch.try_recv() {
        remote.push(e);
    }
    let h = remote
        .iter()
        .find(|e| e.id == "h")
        .expect("the hub's record arrived");
    assert_eq!(h.kind, fieldsync::ChangeKind::Remote);
    assert_eq!(
        h.peer.as_deref(),
        fieldsync::member::member_id(hub.actor().to_bytes()).as_deref()
    );
    // A person's decision elsewhere: the record's change and, for a parent,
    // a child whose standing is only recomputed.
    dev.update("case", "k", fields([("amount", Value::Int(1))]))
        .unwrap();
    assert!(sync_pair(dev, hub, NOW, None).unwrap().synced);
    hub.update("case", "k", fields([("amount", Value::Int(2))]))
        .unwrap();
    dev.update("case", "k", fields([("amount", Value::Int(3))]))
        .unwrap();
    sync(dev, hub);
    let open = hub.conflicts(&ConflictFilter::open()).unwrap();
    assert_eq!(open.len(), 1);
    while watch.try_recv().is_ok() {}
    // Routing an entry writes its decision record only: the case itself is
    // evaluated again and announced as such.
    hub.route(&open[0].id, "second_line").unwrap();
    sync(dev, hub);
    let mut kinds = Vec::new();
    while let Ok(e) = watch.try_recv() {
        kinds.push((e.collection.clone(), e.id.clone(), e.kind));
    }
    assert!(
        kinds.contains(&(
            "case".into(),
            "k".into(),
            fieldsync::ChangeKind::Reevaluated
        )),
        "{kinds:?}"
    );
}

/// Two peers that write the same value concurrently do not conflict.
#[test]
fn the_same_value_written_on_both_sides_is_no_conflict() {
    let rs = group(2, case(Policy::UserAction), true);
    let (hub, dev) = (&rs[0], &rs[1]);
    hub.insert("case", "k", title("pump")).unwrap();
    sync(hub, dev);
    hub.update("case", "k", fields([("note", Value::from("same"))]))
        .unwrap();
    dev.update("case", "k", fields([("note", Value::from("same"))]))
        .unwrap();
    sync(dev, hub);
    for r in [hub, dev] {
        assert!(r.conflicts(&ConflictFilter::all()).unwrap().is_empty());
        assert_eq!(
            r.get("case", "k").unwrap().unwrap().fields["note"],
            Value::from("same")
        );
    }
    // Different values still do.
    hub.update("case", "k", fields([("note", Value::from("hub"))]))
        .unwrap();
    dev.update("case", "k", fields([("note", Value::from("dev"))]))
        .unwrap();
    sync(dev, hub);
    assert_eq!(hub.conflicts(&ConflictFilter::open()).unwrap().len(), 1);
}
