//! Signed changes (issue 7, part 2): every change carries its author's ed25519
//! signature through relays and restarts, and a peer refuses a change that was
//! altered in transit, that names another member's actor, or that is unsigned.

use std::collections::VecDeque;

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use fieldsync::automerge::transaction::Transactable;
use fieldsync::automerge::{ActorId, AutoCommit, ROOT};
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
    split(
        a.drive(&mut sa, NOW, Input::Start).unwrap(),
        &mut to_b,
        &mut na,
    );
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

fn signature_entry(key: &SigningKey, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = fieldsync::sign::DOMAIN.to_vec();
    m.extend_from_slice(hash);
    let mut e = hash.to_vec();
    e.extend_from_slice(&key.sign(&m).to_bytes());
    e
}

#[test]
fn every_local_change_is_stored_with_its_authors_verifiable_signature() {
    let a = memory();
    a.insert("item", "x", item("pump")).unwrap();
    a.update("item", "x", fields([("note", Value::from("oil"))]))
        .unwrap();
    a.delete("item", "x").unwrap();
    let list = a.signatures("item", "x").unwrap();
    assert_eq!(list.len(), 3 * fieldsync::sign::ENTRY, "one per change");
    // Checked here with ed25519-dalek alone: the actor id is the public key.
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        a.actor().to_bytes().try_into().expect("32-byte actor"),
    )
    .expect("the actor is an ed25519 key");
    let doc = fieldsync::automerge::Automerge::load(&a.export("item", "x").unwrap()).unwrap();
    let mut hashes: Vec<[u8; 32]> = doc.get_changes_meta(&[]).iter().map(|m| m.hash.0).collect();
    hashes.sort();
    let mut signed = Vec::new();
    for e in list.chunks_exact(fieldsync::sign::ENTRY) {
        let (h, s) = e.split_at(32);
        let mut m = fieldsync::sign::DOMAIN.to_vec();
        m.extend_from_slice(h);
        let sig = ed25519_dalek::Signature::from_slice(s).unwrap();
        key.verify(&m, &sig).expect("a valid signature");
        signed.push(<[u8; 32]>::try_from(h).unwrap());
    }
    signed.sort();
    assert_eq!(signed, hashes);
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
        assert_eq!(relay.signatures("item", "x").unwrap().len(), 2 * 96);
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
    let mut a_sigs: Vec<_> = a
        .signatures("item", "x")
        .unwrap()
        .chunks(96)
        .map(<[u8]>::to_vec)
        .collect();
    let c_sigs: Vec<_> = c
        .signatures("item", "x")
        .unwrap()
        .chunks(96)
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(c_sigs.len(), 3);
    a_sigs.retain(|s| !c_sigs.contains(s));
    assert!(a_sigs.is_empty(), "a's own signatures reached c unchanged");
}

#[test]
fn a_relay_that_alters_a_change_in_transit_is_detected_and_the_change_refused() {
    let (a, b) = (memory(), memory());
    a.insert("item", "x", item("pump")).unwrap();
    a.insert("item", "y", item("valve")).unwrap();
    // The relay swaps x's content for a change it made up in a's name, and
    // keeps (1) a's signature list or (2) relabels a's signature for it.
    for relabel in [false, true] {
        let b = if relabel { memory() } else { b.clone() };
        let (forged, forged_hash) = change_as(a.actor(), "forged");
        let (na, nb) = sync_via(&a, &b, |m| {
            rewrite_records(m, |r| {
                if r.id == "x" {
                    r.bytes = forged.clone();
                    if relabel {
                        r.sigs[..32].copy_from_slice(&forged_hash);
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
    let apply = |id: &str, bytes: Vec<u8>, sigs: Vec<u8>| {
        b.sync_apply(vec![Incoming {
            key: Key::new("item", id),
            bytes,
            sigs,
        }])
        .unwrap()
    };
    // Mallory writes in a's name and signs with her own key.
    let (bytes, h) = change_as(a.actor(), "as a");
    let f = apply("forged", bytes, signature_entry(&mallory, &h));
    assert_eq!(f.len(), 1);
    assert!(f[0].reason.contains("does not verify"), "{}", f[0].reason);
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
    let f = apply("random", bytes, signature_entry(&mallory, &h));
    assert!(f[0].reason.contains("not a signing key"), "{}", f[0].reason);
    for id in ["forged", "unsigned", "random"] {
        assert!(b.get("item", id).unwrap().is_none(), "{id} refused");
    }
    // The same change in her own name, signed by her, is accepted: the check
    // is on the binding, not on who she is.
    let (bytes, h) = change_as(&mallory_actor, "own");
    let f = apply("own", bytes, signature_entry(&mallory, &h));
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
        a.signatures("item", "z").unwrap(),
    );
    assert!(f.is_empty(), "{f:?}");
    let mut doc = AutoCommit::load(&a.export("item", "z").unwrap()).unwrap();
    doc.set_actor(a.actor().clone());
    doc.put(ROOT, "title", "hijacked").unwrap();
    let h = doc.get_heads()[0].0;
    let f = apply("z", doc.save(), signature_entry(&mallory, &h));
    assert!(f[0].reason.contains("does not verify"), "{}", f[0].reason);
    assert_eq!(
        b.get("item", "z").unwrap().unwrap().fields["title"],
        Value::from("pump")
    );
    b.update("item", "z", item("still editable"))
        .expect("the record is intact");
}
