//! Clocks people can trust: stamps follow the wall clock, every sync measures
//! the peer's clock offset, an authority's measurements travel with its
//! acknowledgements, and last writer wins compares the corrected save times,
//! the same on every peer. Clocks are injected (`Config::with_clock`), one per
//! replica, an hour fast, an hour slow, or right.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fieldsync::conflict::ConflictFilter;
use fieldsync::schema::{Collection, FieldType, Policy, Schema};
use fieldsync::sim::sync_pair;
use fieldsync::{Config, Replica, Role, Value, fields};

const T: u64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;

/// Real time, shared by every replica of a test; each replica reads it
/// through its own skew.
struct World {
    real: Arc<AtomicU64>,
}

impl World {
    fn new() -> Self {
        World {
            real: Arc::new(AtomicU64::new(T)),
        }
    }

    fn at(&self, ms: u64) {
        self.real.store(ms, Ordering::SeqCst);
    }

    fn replica(&self, skew: i64) -> Replica {
        let real = self.real.clone();
        let schema = Schema::new()
            .with(
                Collection::builder("note")
                    .required("title", FieldType::String)
                    .field("text", FieldType::String)
                    .policy(Policy::LastWriterWins)
                    .build()
                    .unwrap(),
            )
            .unwrap();
        Replica::in_memory(
            Config::default()
                .with_schema(schema)
                .with_clock(move || (real.load(Ordering::SeqCst) as i64 + skew) as u64),
        )
        .unwrap()
    }
}

fn sync(a: &Replica, b: &Replica, now: u64) {
    let r = sync_pair(a, b, now, None).unwrap();
    assert!(r.synced, "{:?} {:?}", r.incomplete, r.peer_issues);
}

fn text(r: &Replica, id: &str) -> Value {
    r.get("note", id).unwrap().unwrap().fields["text"].clone()
}

#[test]
fn the_later_real_save_wins_on_every_peer_whatever_the_device_clocks_say() {
    let w = World::new();
    let hub = w.replica(0);
    let fast = w.replica(HOUR);
    let slow = w.replica(-HOUR);
    fieldsync::sim::authority_group(&hub, &[&fast, &slow], T).unwrap();
    w.at(T);
    for id in ["a", "b", "c"] {
        hub.insert(
            "note",
            id,
            fields([("title", Value::from(id)), ("text", Value::from("base"))]),
        )
        .unwrap();
    }
    // First syncs: the hub measures both devices' clocks.
    w.at(T + 1_000);
    sync(&fast, &hub, T + 1_000);
    sync(&slow, &hub, T + 1_000);
    let offsets = hub.peer_clocks().unwrap();
    assert_eq!(offsets.len(), 2);
    let mut seen: Vec<i64> = offsets.iter().map(|(_, c)| c.offset_ms).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![-HOUR, HOUR],
        "each device's offset, measured over the round trip"
    );

    // a: the fast device saves, the hub saves 10 s later (real time).
    w.at(T + 10_000);
    fast.update("note", "a", fields([("text", Value::from("fast device"))]))
        .unwrap();
    w.at(T + 20_000);
    hub.update("note", "a", fields([("text", Value::from("hub, later"))]))
        .unwrap();
    // b: the hub saves, the slow device saves 10 s later.
    w.at(T + 30_000);
    hub.update("note", "b", fields([("text", Value::from("hub"))]))
        .unwrap();
    w.at(T + 40_000);
    slow.update(
        "note",
        "b",
        fields([("text", Value::from("slow device, later"))]),
    )
    .unwrap();
    // c: between the devices: the fast one saves, the slow one 10 s later.
    w.at(T + 50_000);
    fast.update("note", "c", fields([("text", Value::from("fast device"))]))
        .unwrap();
    w.at(T + 60_000);
    slow.update(
        "note",
        "c",
        fields([("text", Value::from("slow device, later"))]),
    )
    .unwrap();

    w.at(T + 70_000);
    for _ in 0..2 {
        sync(&fast, &hub, T + 70_000);
        sync(&slow, &hub, T + 70_000);
    }
    for (name, r) in [("hub", &hub), ("fast", &fast), ("slow", &slow)] {
        assert_eq!(text(r, "a"), Value::from("hub, later"), "{name}: a");
        assert_eq!(text(r, "b"), Value::from("slow device, later"), "{name}: b");
        assert_eq!(text(r, "c"), Value::from("slow device, later"), "{name}: c");
        assert_eq!(
            r.conflicts(&ConflictFilter::all()).unwrap(),
            hub.conflicts(&ConflictFilter::all()).unwrap(),
            "{name}: the same entries"
        );
    }
    // Times shown to people are in the authority's clock.
    let a = fast.get("note", "c").unwrap().unwrap();
    let shown_fast = fast
        .corrected_time(&a.meta.author, a.meta.modified)
        .unwrap();
    assert_eq!(
        shown_fast.millis(),
        T + 60_000,
        "the slow device's save, in the hub's clock"
    );
    assert_eq!(
        fast.authority_offset().unwrap(),
        Some(-HOUR),
        "the hub is an hour behind this device"
    );
}

#[test]
fn a_device_first_measured_at_the_sync_that_brings_its_save_is_corrected_too() {
    // The fast device got the record through another device and never met
    // the hub before it saved: the offset measured when it first syncs with
    // the hub corrects that save (its offset was the same at save and at
    // sync).
    let w = World::new();
    let hub = w.replica(0);
    let other = w.replica(0);
    let fast = w.replica(HOUR);
    // The fast device learns the group through the other device: it never
    // meets the hub before it saves.
    fieldsync::sim::authority_group(&hub, &[&other], T).unwrap();
    hub.add_member(&fast.actor().to_hex_string(), Role::Device)
        .unwrap();
    fast.join_group(&hub.actor().to_hex_string()).unwrap();
    w.at(T);
    hub.insert(
        "note",
        "a",
        fields([("title", Value::from("a")), ("text", Value::from("base"))]),
    )
    .unwrap();
    sync(&other, &hub, T);
    sync(&fast, &other, T);
    assert!(
        hub.peer_clocks()
            .unwrap()
            .iter()
            .all(|(m, _)| { *m != fieldsync::member::member_id(fast.actor().to_bytes()).unwrap() })
    );
    w.at(T + 10_000);
    fast.update("note", "a", fields([("text", Value::from("fast device"))]))
        .unwrap();
    w.at(T + 20_000);
    hub.update("note", "a", fields([("text", Value::from("hub, later"))]))
        .unwrap();
    w.at(T + 30_000);
    sync(&fast, &hub, T + 30_000);
    sync(&other, &hub, T + 30_000);
    for r in [&hub, &fast, &other] {
        assert_eq!(text(r, "a"), Value::from("hub, later"));
    }
}
