//! Rights (issue 7, parts 1 and 3): roles with read and write rights per
//! collection narrowed by a team field, membership replicated as admins'
//! signed changes, revocation.

use std::collections::VecDeque;

use fieldsync::pending::{EventStatus, PendingFilter};
use fieldsync::rights::RoleRights;
use fieldsync::schema::{Collection, FieldType};
use fieldsync::sync::{Input, Notification, Output, Session};
use fieldsync::{Config, Error, Replica, Role, Value, fields};

const NOW: u64 = 1_000;

fn schema() -> fieldsync::schema::Schema {
    let mut s = fieldsync::schema::Schema::new();
    s.define(
        Collection::builder("job")
            .required("title", FieldType::String)
            .field("team", FieldType::String)
            .build()
            .unwrap(),
    )
    .unwrap();
    s.define(
        Collection::builder("site")
            .required("title", FieldType::String)
            .build()
            .unwrap(),
    )
    .unwrap();
    s
}

fn memory() -> Replica {
    Replica::in_memory(Config::default().with_schema(schema())).unwrap()
}

fn hex(r: &Replica) -> String {
    r.actor().to_hex_string()
}

fn job(title: &str, team: &str) -> fieldsync::Fields {
    fields([("title", Value::from(title)), ("team", Value::from(team))])
}

/// Sync `a` with `b`, each session naming the other's actor (as the node
/// does). Returns `a`'s notifications.
fn sync(a: &Replica, b: &Replica) -> Vec<Notification> {
    let (mut sa, mut sb) = (Session::new(), Session::new());
    sa.set_remote(Some(a_bytes(b)));
    sb.set_remote(Some(a_bytes(a)));
    let (mut to_b, mut to_a) = (VecDeque::new(), VecDeque::new());
    let mut notes = Vec::new();
    let split =
        |outs: Vec<Output>, q: &mut VecDeque<Vec<u8>>, n: Option<&mut Vec<Notification>>| {
            let mut n = n;
            for o in outs {
                match o {
                    Output::Send(m) => q.push_back(m),
                    Output::Notify(x) => {
                        if let Some(n) = n.as_deref_mut() {
                            n.push(x);
                        }
                    }
                    _ => {}
                }
            }
        };
    split(
        a.drive(&mut sa, NOW, Input::Start).unwrap(),
        &mut to_b,
        Some(&mut notes),
    );
    for _ in 0..10_000 {
        if let Some(m) = to_b.pop_front() {
            split(
                b.drive(&mut sb, NOW, Input::Received(m)).unwrap(),
                &mut to_a,
                None,
            );
        } else if let Some(m) = to_a.pop_front() {
            split(
                a.drive(&mut sa, NOW, Input::Received(m)).unwrap(),
                &mut to_b,
                Some(&mut notes),
            );
        } else {
            break;
        }
    }
    notes
}

fn a_bytes(r: &Replica) -> Vec<u8> {
    r.actor().to_bytes().to_vec()
}

fn synced(notes: &[Notification]) -> bool {
    notes.iter().any(|n| matches!(n, Notification::Synced(_)))
}

/// A hub that founds the group and is its authority, with roles `viewer`
/// (reads jobs) and `field` (reads and writes its team's jobs).
fn hub() -> Replica {
    let hub = memory();
    hub.found_group().unwrap();
    hub.add_member(&hex(&hub), Role::Authority).unwrap();
    hub.define_role(
        "viewer",
        &RoleRights {
            read: vec!["job".into()],
            write: vec![],
            scope: None,
            authority: false,
        },
    )
    .unwrap();
    hub.define_role(
        "field",
        &RoleRights {
            read: vec![],
            write: vec!["job".into()],
            scope: Some("team".into()),
            authority: false,
        },
    )
    .unwrap();
    hub
}

/// A device of the hub's group (told the root; it learns the members,
/// the authority among them, when it syncs).
fn device(hub: &Replica) -> Replica {
    let d = memory();
    d.join_group(&hex(hub)).unwrap();
    d
}

#[test]
fn a_read_only_member_cannot_write_and_its_offline_write_comes_back_forbidden() {
    let hub = hub();
    let d = device(&hub);
    hub.grant(&hex(&d), "viewer", None).unwrap();
    hub.insert("job", "j0", job("inspect", "a")).unwrap();
    // Offline, before it has learned its role: the write is taken, pending.
    d.insert("job", "mine", job("my own job", "a")).unwrap();
    assert_eq!(d.pending(&PendingFilter::all()).unwrap().len(), 1);
    let notes = sync(&d, &hub);
    // One more round brings the hub's verdict and acknowledgement back.
    let notes2 = sync(&d, &hub);
    assert!(synced(&notes2), "{notes:?} {notes2:?}");
    let events = d.pending(&PendingFilter::all()).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.status, EventStatus::Rejected, "{e:?}");
    assert_eq!(e.errors[0].code, "forbidden", "{e:?}");
    assert!(e.errors[0].message.contains("viewer"), "{e:?}");
    // Never applied anywhere: neither the hub nor the device shows it.
    assert!(hub.list("job").unwrap().iter().all(|r| r.id != "mine"));
    assert!(d.list("job").unwrap().iter().all(|r| r.id != "mine"));
    // It reads what it may.
    assert_eq!(
        d.get("job", "j0").unwrap().unwrap().fields["title"],
        Value::from("inspect")
    );
    // Now that it knows its role, a write is refused at once.
    assert!(matches!(
        d.insert("job", "again", job("x", "a")),
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        d.update("job", "j0", fields([("title", Value::from("changed"))])),
        Err(Error::Forbidden { .. })
    ));
    // And a member may not change members or roles.
    assert!(matches!(
        d.grant(&hex(&d), "field", Some("a")),
        Err(Error::Forbidden { .. })
    ));
}

/// Every file under `dir`, concatenated.
fn store_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(b) = std::fs::read(&path) {
                out.extend_from_slice(&b);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_device_of_team_a_never_receives_team_b_records_not_even_through_a_relay() {
    let hub = hub();
    let dir_a = tempfile::tempdir().unwrap();
    let da = Replica::open(dir_a.path(), Config::default().with_schema(schema())).unwrap();
    da.join_group(&hex(&hub)).unwrap();
    let db = device(&hub);
    hub.grant(&hex(&da), "field", Some("a")).unwrap();
    hub.grant(&hex(&db), "field", Some("b")).unwrap();
    hub.insert("job", "ja", job("MARKER-TEAM-A-7f3", "a"))
        .unwrap();
    hub.insert("job", "jb", job("MARKER-TEAM-B-9c1", "b"))
        .unwrap();
    hub.insert(
        "site",
        "s1",
        fields([("title", Value::from("MARKER-SITE-5d2"))]),
    )
    .unwrap();
    assert!(
        synced(&sync(&da, &hub)),
        "both sides end equal on what both read"
    );
    assert!(synced(&sync(&db, &hub)));
    // Team b's device writes a job of its team; team a's meets it directly.
    db.insert("job", "jb2", job("MARKER-TEAM-B-4e8", "b"))
        .unwrap();
    assert!(synced(&sync(&da, &db)));
    assert!(synced(&sync(&da, &hub)));
    let ids: Vec<String> = da.list("job").unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["ja"]);
    assert!(da.list("site").unwrap().is_empty(), "no right to sites");
    assert!(da.rights().unwrap().member(da.actor().to_bytes()).is_some());
    // Checked in its store files, not only through the API.
    drop(da);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let bytes = store_bytes(dir_a.path());
    assert!(
        contains(&bytes, "MARKER-TEAM-A-7f3"),
        "the check can see records"
    );
    for absent in ["MARKER-TEAM-B-9c1", "MARKER-TEAM-B-4e8", "MARKER-SITE-5d2"] {
        assert!(!contains(&bytes, absent), "{absent} reached team a's store");
    }
    // Team b's job reaches the hub from db itself.
    assert!(synced(&sync(&db, &hub)));
    assert!(hub.get("job", "jb2").unwrap().is_some());
}

#[test]
fn a_revoked_member_is_cut_off_and_its_earlier_accepted_changes_stay() {
    let hub = hub();
    let d = device(&hub);
    let other = device(&hub);
    hub.grant(&hex(&d), "field", Some("a")).unwrap();
    hub.grant(&hex(&other), "field", Some("a")).unwrap();
    d.insert("job", "before", job("accepted", "a")).unwrap();
    sync(&d, &hub);
    assert!(hub.get("job", "before").unwrap().is_some());
    hub.revoke(&hex(&d)).unwrap();
    // Written after the revocation (d does not know yet). Revocation compares
    // HLC times: let the wall clock pass the revocation's millisecond, or d's
    // change could carry the same millisecond and a lower counter.
    std::thread::sleep(std::time::Duration::from_millis(5));
    d.insert("job", "after", job("too late", "a")).unwrap();
    d.update(
        "job",
        "before",
        fields([("title", Value::from("edited late"))]),
    )
    .unwrap();
    hub.insert("job", "news", job("not for d", "a")).unwrap();
    sync(&d, &hub);
    sync(&hub, &d);
    assert!(
        hub.get("job", "after").unwrap().is_none(),
        "its new changes are refused"
    );
    assert_eq!(
        hub.get("job", "before").unwrap().unwrap().fields["title"],
        Value::from("accepted"),
        "its earlier change stays; the later edit does not"
    );
    assert!(
        d.get("job", "news").unwrap().is_none(),
        "it is sent nothing more"
    );
    // A member that learns of the revocation refuses d's later changes too,
    // and still takes its earlier ones (from the hub).
    sync(&other, &hub);
    sync(&other, &d);
    assert!(other.get("job", "after").unwrap().is_none());
    assert_eq!(
        other.get("job", "before").unwrap().unwrap().fields["title"],
        Value::from("accepted")
    );
    assert!(other.get("job", "news").unwrap().is_some());
    let member = hub
        .rights()
        .unwrap()
        .member(d.actor().to_bytes())
        .cloned()
        .unwrap();
    assert!(member.revoked_at.is_some());
}

#[test]
fn only_admins_change_members_and_roles_on_every_peer() {
    use ed25519_dalek::Signer as _;
    use fieldsync::automerge::transaction::Transactable;
    let hub = hub();
    // Mallory's replica, whose secret key the test knows (standing for a
    // modified build that writes what the API would refuse).
    let secret = [7u8; 32];
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    let store = fieldsync::store::MemoryStore::new();
    use fieldsync::store::Storage as _;
    store.put(b"m:sign", &secret).unwrap();
    store
        .put(b"m:actor", &key.verifying_key().to_bytes())
        .unwrap();
    let mallory = Replica::with_storage(
        std::sync::Arc::new(store),
        Config::default().with_schema(schema()),
    )
    .unwrap();
    mallory.join_group(&hex(&hub)).unwrap();
    hub.grant(&hex(&mallory), "field", Some("a")).unwrap();
    sync(&mallory, &hub);
    assert!(matches!(
        mallory.grant(&hex(&mallory), fieldsync::rights::ADMIN, None),
        Err(Error::Forbidden { .. })
    ));
    // She signs a change making herself admin: well signed, but not by an
    // admin, so the hub refuses it.
    let mut doc = fieldsync::automerge::AutoCommit::new().with_actor(mallory.actor().clone());
    doc.put(fieldsync::automerge::ROOT, "role", "admin")
        .unwrap();
    let h = doc.get_heads()[0].0;
    let actor: [u8; 32] = mallory.actor().to_bytes().try_into().unwrap();
    let seals = vec![std::sync::Arc::new(
        fieldsync::sign::Seal::assemble(actor, vec![h], |m| key.sign(m).to_bytes()).unwrap(),
    )];
    let failures = hub
        .sync_apply(vec![fieldsync::sync::Incoming {
            key: fieldsync::sync::Key::new(
                fieldsync::rights::MEMBERS,
                format!("{}x", hex(&mallory)),
            ),
            bytes: doc.save(),
            seals,
        }])
        .unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].reason.contains("not an admin"),
        "{}",
        failures[0].reason
    );
    assert_eq!(
        hub.rights()
            .unwrap()
            .member(mallory.actor().to_bytes())
            .unwrap()
            .role,
        "field"
    );
    // An admin appointed by the root may grant in turn, and every peer
    // accepts it.
    let admin = device(&hub);
    hub.grant(&hex(&admin), fieldsync::rights::ADMIN, None)
        .unwrap();
    sync(&admin, &hub);
    admin.grant(&hex(&mallory), "viewer", None).unwrap();
    sync(&admin, &hub);
    sync(&mallory, &hub);
    for r in [&hub, &mallory, &admin] {
        assert_eq!(
            r.rights()
                .unwrap()
                .member(mallory.actor().to_bytes())
                .unwrap()
                .role,
            "viewer"
        );
    }
}

#[test]
fn a_write_outside_the_team_made_before_learning_it_is_refused_on_the_device() {
    let hub = hub();
    let d = device(&hub);
    hub.grant(&hex(&d), "field", Some("a")).unwrap();
    // Offline, before it knows its team: a job of team b.
    d.insert("job", "theirs", job("not mine", "b")).unwrap();
    d.insert("job", "mine", job("mine", "a")).unwrap();
    sync(&d, &hub);
    sync(&d, &hub);
    // Its team's job went through; the other is refused (by the hub's
    // judgement, or on d itself once it knows its team: either way
    // `forbidden`) and shows nowhere.
    assert!(hub.get("job", "mine").unwrap().is_some());
    assert!(hub.list("job").unwrap().iter().all(|r| r.id != "theirs"));
    let events = d.pending(&PendingFilter::all()).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].record.as_str(), events[0].status),
        ("theirs", EventStatus::Rejected)
    );
    assert_eq!(events[0].errors[0].code, "forbidden");
}
