//! A peer can never crash another: well-formed messages with arbitrary content
//! (nodes, hashes, heads, automerge bytes, names) are answered or refused, and
//! never make a replica panic or store something invalid.

use fieldsync::sim;
use fieldsync::sync::msg::{Msg, Part, RecordData, encode};
use fieldsync::sync::{Input, Node, Output, Session};
use fieldsync::{Config, Replica, Scan, Value, fields};
use proptest::prelude::*;

fn node() -> impl Strategy<Value = Node> {
    (0u8..=16, any::<u64>()).prop_map(|(level, p)| Node {
        level,
        prefix: if level == 16 {
            p
        } else {
            p >> (64 - 4 * u32::from(level)).min(63) >> u32::from(level == 0)
        },
    })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![Just("item".to_string()), "[a-z]{1,8}", "r[0-9]{1,2}"]
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        (node(), any::<u64>(), 0u64..100).prop_map(|(node, fp, count)| Part::Summary {
            node,
            fp,
            count
        }),
        (node(), any::<[u64; 16]>()).prop_map(|(node, fps)| Part::Children { node, fps }),
        (
            node(),
            proptest::collection::vec(any::<(u64, u64)>(), 0..20)
        )
            .prop_map(|(node, items)| Part::Items { node, items }),
        proptest::collection::vec(any::<u64>(), 0..10).prop_map(Part::NeedHashes),
        (
            name(),
            name(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..3),
            proptest::collection::vec(any::<u64>(), 0..4),
            any::<bool>()
        )
            .prop_map(|(collection, id, heads, recent, reply)| Part::Have {
                collection,
                id,
                heads,
                recent,
                reply
            }),
        (name(), name()).prop_map(|(collection, id)| Part::Purged { collection, id }),
        (
            name(),
            name(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..2).prop_map(|n| vec![7u8; 32 * n.len()]),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(collection, id, bytes, seals, new_seals)| Part::Records {
                collection,
                records: vec![RecordData {
                    id,
                    bytes,
                    seals,
                    new_seals
                }]
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_messages_never_crash_a_replica(
        parts in proptest::collection::vec(part(), 0..12),
        id in any::<u64>(),
        acks in proptest::collection::vec(any::<u64>(), 0..4),
    ) {
        let schema = sim::default_schema();
        let r = Replica::in_memory(Config::default().with_schema(schema)).expect("opens");
        for i in 0..20 {
            r.insert("item", &format!("r{i}"), fields([("title", Value::from("t"))])).expect("insert");
        }
        r.delete("item", "r3").expect("delete");
        let bytes = encode(&Msg { id, acks, parts }).expect("encodes");
        let mut s = Session::new();
        let outs = r.drive(&mut s, 0, Input::Received(bytes)).expect("no storage error");
        // Whatever was asked, answers are well-formed messages.
        for o in &outs {
            if let Output::Send(b) = o {
                prop_assert!(fieldsync::sync::msg::decode(b).is_ok());
            }
        }
        // Every stored record still reads back and fits the schema.
        prop_assert!(r.verify("item").expect("verify").is_empty());
        let live = r.scan(&Scan::new("item").with_deleted()).expect("scan");
        prop_assert!(live.iter().all(|rec| rec.fields.contains_key("title")));
        // Time passing does not crash it either.
        r.drive(&mut s, 60_000, Input::Tick).expect("tick");
    }
}
