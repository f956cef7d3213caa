//! Signed changes (issue 7, part 2): every change is listed in a seal signed
//! by its author's ed25519 key; seals travel through relays and restarts, and
//! a peer refuses a change that was altered in transit, that names another
//! member's actor, or that is unsigned.

use std::collections::VecDeque;
use std::sync::Arc;

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use fieldsync::automerge::transaction::Transactable;
use fieldsync::automerge::{ActorId, AutoCommit, ROOT};
use fieldsync::sign::Seal;
use fieldsync::sync::msg::{self, Frame, Part};
use fieldsync::sync::{Incoming, Input, Key, Notification, Output, Session};
use fieldsync::{Config, Replica, Value, fields, sim};

const NOW: u64 = 1_000;

fn memory() -> Replica {
    Replica::in_memory(Config::default().with_schema(sim::default_schema())).expect("opens")
}

fn item(title: &str) -> fieldsync::Fields {
    fields([("title", Value::from(title))])
}

/// Run a sync from `a` to `b`, passing every message `a` sends through
/// `tamper`. Returns `a`'s and `b`'s notifications.
fn sync_via(
    a: &Replica,
    b: &Replica,
    tamper: impl FnMut(Vec<u8>) -> Vec<u8>,
) -> (Vec<Notification>, Vec<Notification>) {
    run_sync(a, b, true, tamper)
}

/// Run a sync between `a` and `b`, started by `a` if `a_starts` else by `b`,
/// passing every message `a` sends through `tamper`. Returns `a`'s and
/// `b`'s notifications.
fn run_sync(
    a: &Replica,
    b: &Replica,
    a_starts: bool,
    mut tamper: impl FnMut(Vec<u8>) -> Vec<u8>,
) -> (Vec<Notification>, Vec<Notification>) {
    let (mut sa, mut sb) = (Session::new(), Session::new());
    let mut to_b: VecDeque<Vec<u8>> = VecDeque::new();
    let mut to_a: VecDeque<Vec<u8>> = VecDeque::new();
    let (mut na, mut nb) = (Vec::new(), Vec::new());
    let split = |outs: Vec<Output>, q: &mut VecDeque<Vec<u8>>, n: &mut Vec<Notification>| {
        for o in outs {
            match o {
                Output::Send(m) => q.push_back(m),
                Output::Notify(x) => n.push(x),
                _ => {}
            }
        }
    };
    if a_starts {
        split(
            a.drive(&mut sa, NOW, Input::Start).unwrap(),
            &mut to_b,
            &mut na,
        );
    } else {
        split(
            b.drive(&mut sb, NOW, Input::Start).unwrap(),
            &mut to_a,
            &mut nb,
        );
    }
    for _ in 0..10_000 {
        if let Some(m) = to_b.pop_front() {
            let outs = b.drive(&mut sb, NOW, Input::Received(tamper(m))).unwrap();
            split(outs, &mut to_a, &mut nb);
        } else if let Some(m) = to_a.pop_front() {
            let outs = a.drive(&mut sa, NOW, Input::Received(m)).unwrap();
            split(outs, &mut to_b, &mut na);
        } else {
            break;
        }
    }
    (na, nb)
}

/// Sync `a` to `b` untouched; `b` must see no protocol error.
fn sync_clean(a: &Replica, b: &Replica) {
    let (_, nb) = sync_via(a, b, |m| m);
    assert!(
        nb.iter()
            .all(|n| !matches!(n, Notification::ProtocolError { .. })),
        "{nb:?}"
    );
}

/// Rewrite the record data of every `Records` part of a message.
fn rewrite_records(
    m: Vec<u8>,
    mut f: impl FnMut(&mut fieldsync::sync::msg::RecordData),
) -> Vec<u8> {
    let Ok(Frame::Msg(mut msg)) = msg::decode(&m) else {
        return m;
    };
    for p in &mut msg.parts {
        if let Part::Records { records, .. } = p {
            records.iter_mut().for_each(&mut f);
        }
    }
    msg::encode(&msg).expect("re-encodes")
}

/// A document whose only change names `actor` and sets `title`.
fn change_as(actor: &ActorId, title: &str) -> (Vec<u8>, [u8; 32]) {
    let mut doc = AutoCommit::new().with_actor(actor.clone());
    doc.put(ROOT, "title", title).unwrap();
    let heads = doc.get_heads();
    (doc.save(), heads[0].0)
}

/// A seal naming `actor`, over `hashes`, signed with `key`.
fn seal_by(key: &SigningKey, actor: &ActorId, hashes: &[[u8; 32]]) -> Vec<Arc<Seal>> {
    let actor: [u8; 32] = actor.to_bytes().try_into().expect("32-byte actor");
    vec![Arc::new(
        Seal::assemble(actor, hashes.to_vec(), |m| key.sign(m).to_bytes()).expect("a seal"),
    )]
}

/// Check a seal with ed25519-dalek and sha2 alone, from its documented
/// layout: `actor | signature | n (u16 LE) | hashes`, id = SHA-256(domain ||
/// actor || n || hashes), signed: domain || id. Returns the hashes it lists.
fn check_seal_by_hand(bytes: &[u8]) -> Vec<[u8; 32]> {
    use sha2::Digest as _;
    let key = ed25519_dalek::VerifyingKey::from_bytes(bytes[..32].try_into().unwrap())
        .expect("the actor is an ed25519 key");
    let n = u16::from_le_bytes([bytes[96], bytes[97]]) as usize;
    assert_eq!(bytes.len(), 98 + 32 * n);
    let mut h = sha2::Sha256::new();
    h.update(fieldsync::sign::SEAL_DOMAIN);
    h.update(&bytes[..32]);
    h.update(&bytes[96..]);
    let id: [u8; 32] = h.finalize().into();
    let mut m = fieldsync::sign::SEAL_DOMAIN.to_vec();
    m.extend_from_slice(&id);
    let sig = ed25519_dalek::Signature::from_slice(&bytes[32..96]).unwrap();
    key.verify(&m, &sig).expect("a valid signature");
    bytes[98..]
        .chunks(32)
        .map(|c| c.try_into().unwrap())
        .collect()
}

fn change_hashes(r: &Replica, id: &str) -> Vec<[u8; 32]> {
    let doc = fieldsync::automerge::Automerge::load(&r.export("item", id).unwrap()).unwrap();
    let mut hashes: Vec<[u8; 32]> = doc.get_changes_meta(&[]).iter().map(|m| m.hash.0).collect();
    hashes.sort();
    hashes
}

#[test]
fn every_local_change_is_stored_with_its_authors_verifiable_signature() {
    let a = memory();
    a.insert("item", "x", item("pump")).unwrap();
    a.update("item", "x", fields([("note", Value::from("oil"))]))
        .unwrap();
    a.delete("item", "x").unwrap();
    let seals = a.seals("item", "x").unwrap();
    // Three transactions, sealed together when they first leave the replica.
    assert_eq!(seals.len(), 1, "{seals:?}");
    assert_eq!(seals[0].len(), 3);
    // Checked with ed25519-dalek alone: the actor id is the public key.
    let mut signed = Vec::new();
    for seal in &seals {
        assert_eq!(seal.actor().as_slice(), a.actor().to_bytes());
        signed.extend(check_seal_by_hand(seal.as_bytes()));
    }
    signed.sort();
    assert_eq!(signed, change_hashes(&a, "x"));
}

#[test]
fn one_transaction_is_sealed_once_per_256_changes_and_each_change_is_listed() {
    let a = memory();
    a.transaction(|tx| {
        for i in 0..600 {
            tx.insert("item", &format!("r{i:03}"), item("bulk"))?;
        }
        Ok(())
    })
    .unwrap();
    let mut seals: Vec<Arc<Seal>> = Vec::new();
    for i in 0..600 {
        let id = format!("r{i:03}");
        let of = a.seals("item", &id).unwrap();
        assert_eq!(of.len(), 1, "{id}: one seal signs its one change");
        assert!(of[0].contains(&change_hashes(&a, &id)[0]));
        if !seals.iter().any(|s| s.id() == of[0].id()) {
            seals.push(of[0].clone());
        }
    }
    let mut sizes: Vec<usize> = seals.iter().map(|s| s.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [88, 256, 256], "600 changes, three signatures");
    for s in &seals {
        assert_eq!(check_seal_by_hand(s.as_bytes()).len(), s.len());
    }
    // A peer accepts them all, and keeps the same three seals.
    let b = memory();
    sync_clean(&a, &b);
    assert_eq!(b.list("item").unwrap().len(), 600);
    for i in [0, 299, 599] {
        let id = format!("r{i:03}");
        assert_eq!(b.seals("item", &id).unwrap(), a.seals("item", &id).unwrap());
    }
}

#[test]
fn signatures_travel_through_a_relay_and_survive_its_restart() {
    let (a, c) = (memory(), memory());
    let dir = tempfile::tempdir().unwrap();
    a.insert("item", "x", item("pump")).unwrap();
    a.update("item", "x", fields([("qty", Value::Int(3))]))
        .unwrap();
    {
        let relay = Replica::open(
            dir.path(),
            Config::default().with_schema(sim::default_schema()),
        )
        .unwrap();
        let (_, nr) = sync_via(&a, &relay, |m| m);
        assert!(
            nr.iter()
                .all(|n| !matches!(n, Notification::ProtocolError { .. })),
            "{nr:?}"
        );
        assert_eq!(relay.seals("item", "x").unwrap().len(), 1);
    }
    // Reopened (sled can refuse a reopen in the same process for a moment).
    let relay = (0..50)
        .find_map(|_| {
            Replica::open(
                dir.path(),
                Config::default().with_schema(sim::default_schema()),
            )
            .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
            .ok()
        })
        .expect("the relay's store reopens");
    // The relay edits too: its change is signed with its own key.
    relay
        .update("item", "x", fields([("note", Value::from("relay"))]))
        .unwrap();
    let (_, nc) = sync_via(&relay, &c, |m| m);
    assert!(
        nc.iter()
            .all(|n| !matches!(n, Notification::Incomplete { .. })),
        "{nc:?}"
    );
    let got = c.get("item", "x").unwrap().expect("relayed");
    assert_eq!(got.fields["qty"], Value::Int(3));
    assert_eq!(got.fields["note"], Value::from("relay"));
    let mut a_seals = a.seals("item", "x").unwrap();
    let c_seals = c.seals("item", "x").unwrap();
    assert_eq!(c_seals.len(), 2, "a's seal and the relay's");
    a_seals.retain(|s| !c_seals.contains(s));
    assert!(a_seals.is_empty(), "a's own seals reached c byte for byte");
    let relay_seal = c_seals
        .iter()
        .find(|s| s.actor() != a.seals("item", "x").unwrap()[0].actor())
        .expect("the relay's own seal");
    check_seal_by_hand(relay_seal.as_bytes());
}

#[test]
fn a_relay_that_alters_a_change_in_transit_is_detected_and_the_change_refused() {
    let (a, b) = (memory(), memory());
    a.insert("item", "x", item("pump")).unwrap();
    // x alone in its seal (so that the seal rides with x).
    assert_eq!(a.seal_pending().unwrap(), 1);
    a.insert("item", "y", item("valve")).unwrap();
    // The relay swaps x's content for a change it made up in a's name, and
    // keeps (1) a's seal or (2) rewrites a's seal to list its change instead
    // (and renames it in the record: the signature then covers another id).
    for relabel in [false, true] {
        let b = if relabel { memory() } else { b.clone() };
        let (forged, forged_hash) = change_as(a.actor(), "forged");
        let (na, nb) = sync_via(&a, &b, |m| {
            rewrite_records(m, |r| {
                if r.id == "x" {
                    r.bytes = forged.clone();
                    if relabel {
                        assert_eq!(r.new_seals.len(), 98 + 32, "x's seal rides with x");
                        r.new_seals[98..].copy_from_slice(&forged_hash);
                        let (altered, _) = Seal::parse(&r.new_seals).expect("well formed");
                        r.seals = altered.id().to_vec();
                    }
                }
            })
        });
        assert!(
            b.get("item", "x").unwrap().is_none(),
            "the forgery is refused"
        );
        assert_eq!(
            b.get("item", "y")
                .unwrap()
                .expect("the rest applies")
                .fields["title"],
            Value::from("valve")
        );
        // The sync does not end equal: a still holds what b refused.
        assert!(
            !na.iter().any(|n| matches!(n, Notification::Synced(_))),
            "{na:?} / {nb:?}"
        );
    }
    // Refused data is not stored: a later honest sync delivers the record.
    let (_, _) = sync_via(&a, &b, |m| m);
    assert_eq!(
        b.get("item", "x").unwrap().expect("honest copy").fields["title"],
        Value::from("pump")
    );
}

#[test]
fn a_change_in_another_members_name_or_unsigned_or_by_a_non_key_actor_is_refused() {
    let (a, b) = (memory(), memory());
    let mallory = SigningKey::from_bytes(&[42u8; 32]);
    let mallory_actor = ActorId::from(mallory.verifying_key().to_bytes().as_slice());
    let apply = |id: &str, bytes: Vec<u8>, seals: Vec<Arc<Seal>>| {
        b.sync_apply(vec![Incoming {
            key: Key::new("item", id),
            bytes,
            seals,
        }])
        .unwrap()
    };
    // Mallory writes in a's name and signs a seal in a's name with her key.
    let (bytes, h) = change_as(a.actor(), "as a");
    let f = apply("forged", bytes.clone(), seal_by(&mallory, a.actor(), &[h]));
    assert_eq!(f.len(), 1);
    assert!(f[0].reason.contains("does not verify"), "{}", f[0].reason);
    // Or lists it in a seal of her own: no seal of a's lists the change.
    let f = apply("forged", bytes, seal_by(&mallory, &mallory_actor, &[h]));
    assert!(
        f[0].reason.contains("carries no signature"),
        "{}",
        f[0].reason
    );
    // No signature at all.
    let (bytes, _) = change_as(&mallory_actor, "unsigned");
    let f = apply("unsigned", bytes, Vec::new());
    assert!(
        f[0].reason.contains("carries no signature"),
        "{}",
        f[0].reason
    );
    // An actor id that is no key (a plain random automerge actor).
    let (bytes, h) = change_as(&ActorId::random(), "random");
    let f = apply("random", bytes, seal_by(&mallory, &mallory_actor, &[h]));
    assert!(f[0].reason.contains("not a signing key"), "{}", f[0].reason);
    for id in ["forged", "unsigned", "random"] {
        assert!(b.get("item", id).unwrap().is_none(), "{id} refused");
    }
    // The same change in her own name, signed by her, is accepted: the check
    // is on the binding, not on who she is.
    let (bytes, h) = change_as(&mallory_actor, "own");
    let f = apply("own", bytes, seal_by(&mallory, &mallory_actor, &[h]));
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(
        b.get("item", "own").unwrap().unwrap().meta.author,
        mallory_actor
    );
    // A forged change merged into an existing record is refused and the
    // record keeps what it had.
    a.insert("item", "z", item("pump")).unwrap();
    let f = apply(
        "z",
        a.export("item", "z").unwrap(),
        a.seals("item", "z").unwrap(),
    );
    assert!(f.is_empty(), "{f:?}");
    let mut doc = AutoCommit::load(&a.export("item", "z").unwrap()).unwrap();
    doc.set_actor(a.actor().clone());
    doc.put(ROOT, "title", "hijacked").unwrap();
    let h = doc.get_heads()[0].0;
    let f = apply("z", doc.save(), seal_by(&mallory, a.actor(), &[h]));
    assert!(f[0].reason.contains("does not verify"), "{}", f[0].reason);
    assert_eq!(
        b.get("item", "z").unwrap().unwrap().fields["title"],
        Value::from("pump")
    );
    b.update("item", "z", item("still editable"))
        .expect("the record is intact");
}

#[test]
fn a_seal_lost_in_transit_costs_a_round_not_the_records() {
    let (a, b) = (memory(), memory());
    // One transaction: both records' changes are in one seal, which rides
    // with the first of them only.
    a.transaction(|tx| {
        tx.insert("item", "x", item("pump"))?;
        tx.insert("item", "y", item("valve"))
    })
    .unwrap();
    assert_eq!(a.seals("item", "x").unwrap(), a.seals("item", "y").unwrap());
    // b pulls: b is the side that refuses the records and must not count
    // that as a refusal more rounds cannot mend.
    let mut stripped = 0;
    let (_, nb) = run_sync(&a, &b, false, |m| {
        rewrite_records(m, |r| {
            if !r.new_seals.is_empty() && stripped == 0 {
                r.new_seals.clear();
                stripped += 1;
            }
        })
    });
    assert_eq!(stripped, 1, "the seal was sent once, and lost");
    let report = nb
        .iter()
        .find_map(|n| match n {
            Notification::Synced(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the sync ends equal: {nb:?}"));
    assert!(report.rounds >= 2, "{report:?}");
    assert_eq!(
        (report.unsealed, report.apply_failures),
        (2, 0),
        "{report:?}"
    );
    for id in ["x", "y"] {
        assert!(b.get("item", id).unwrap().is_some(), "{id} arrived");
    }
    assert_eq!(b.seals("item", "y").unwrap(), a.seals("item", "y").unwrap());
}

#[test]
fn changes_are_sealed_when_they_first_leave_and_a_restart_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_schema(sim::default_schema());
    {
        let a = Replica::open(dir.path(), config()).unwrap();
        for i in 0..5 {
            a.insert("item", &format!("w{i}"), item("one per transaction"))
                .unwrap();
        }
    }
    // Reopened (sled can refuse a reopen in the same process for a moment):
    // the five changes are still listed as unsealed, and sealed by the sync.
    let a = (0..50)
        .find_map(|_| {
            Replica::open(dir.path(), config())
                .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                .ok()
        })
        .expect("reopens");
    let b = memory();
    sync_clean(&a, &b);
    let first = a.seals("item", "w0").unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].len(), 5, "five transactions, one signature");
    for i in 0..5 {
        let id = format!("w{i}");
        assert!(b.get("item", &id).unwrap().is_some(), "{id} arrived");
        assert_eq!(b.seals("item", &id).unwrap(), first);
    }
    assert_eq!(a.seal_pending().unwrap(), 0, "nothing left unsealed");
    // A later write gets a seal of its own when it leaves.
    a.update("item", "w0", fields([("note", Value::from("later"))]))
        .unwrap();
    assert_eq!(a.seal_pending().unwrap(), 1);
    let seals = a.seals("item", "w0").unwrap();
    assert_eq!(seals.len(), 2);
    let (_, _) = sync_via(&a, &b, |m| m);
    assert_eq!(
        b.get("item", "w0").unwrap().unwrap().fields["note"],
        Value::from("later")
    );
}

#[test]
fn a_parent_refused_in_the_same_batch_does_not_leave_its_child_waiting() {
    let (a, b) = (memory(), memory());
    a.insert("folder", "f", fields([("name", Value::from("box"))]))
        .unwrap();
    let _ = sync_via(&a, &b, |m| m);
    assert!(b.get("folder", "f").unwrap().is_some());
    a.update("folder", "f", fields([("name", Value::from("crate"))]))
        .unwrap();
    a.insert(
        "item",
        "r",
        fields([
            ("title", Value::from("t")),
            ("folder", Value::Ref("f".into())),
        ]),
    )
    .unwrap();
    // One batch: the folder's new data comes without its seal (refused), the
    // item that refers to it with its own. The folder is still stored, so
    // the item does not wait for it.
    let failures = b
        .sync_apply(vec![
            Incoming {
                key: Key::new("folder", "f"),
                bytes: a.export("folder", "f").unwrap(),
                seals: Vec::new(),
            },
            Incoming {
                key: Key::new("item", "r"),
                bytes: a.export("item", "r").unwrap(),
                seals: a.seals("item", "r").unwrap(),
            },
        ])
        .unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].key, Key::new("folder", "f"));
    let r = b.get("item", "r").unwrap().expect("applied");
    assert!(r.meta.unresolved.is_empty(), "{:?}", r.meta);
    assert_eq!(
        b.get("folder", "f").unwrap().unwrap().fields["name"],
        Value::from("box")
    );
}
