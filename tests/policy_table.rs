//! The conflict policy table: an executable specification.
//!
//! `expected` below is the table, written from the seeds (Resco's page for the
//! four policies and record granularity, Pega's for status conflicts,
//! OutSystems' for update vs delete, Creatio's "last saved wins"), not from
//! the implementation. The test runs **every cell** over real sled stores with
//! three peers, in both orders of arrival and both sync directions, and fails
//! on any difference; a second test renders the same table into
//! `docs/conflicts.md` and fails if the page differs (run with
//! `FIELDSYNC_BLESS=1` to rewrite it).
//!
//! In every cell two writers change one record concurrently from the same
//! base: **X**, a device, and **Y**, the authority (or, in the
//! device-vs-device cells, a second device). Field `a` is written by X only,
//! `b` by both, `c` by Y only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fieldsync::conflict::{Choice, ConflictFilter, Entry, EntryState, Resolution};
use fieldsync::schema::{Collection, FieldType, Granularity, Policy, Schema};
use fieldsync::sim::sync_pair;
use fieldsync::{Config, Replica, Value, fields};

const T0: u64 = 1_800_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// X sets a, b; Y sets b, c.
    Edit,
    /// X sets a, b at status `submitted`; Y moves it to `approved` and sets b, c.
    StatusXStale,
    /// X moves it to `approved` and sets a, b; Y sets b, c at `submitted`.
    StatusYStale,
    /// X deletes the record; Y sets b, c.
    XDeletes,
    /// Y deletes the record; X sets a, b.
    YDeletes,
}

const KINDS: [Kind; 5] = [
    Kind::Edit,
    Kind::StatusXStale,
    Kind::StatusYStale,
    Kind::XDeletes,
    Kind::YDeletes,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sides {
    /// X is a device, Y the authority.
    AuthorityDevice,
    /// X and Y are both devices (an authority relays).
    DeviceDevice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Writer {
    X,
    Y,
}

/// A field's final value: the base, or the version of X or Y.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    Base,
    X,
    Y,
}

/// A record's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Final {
    Deleted,
    Live([V; 3]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    shown: Final,
    state: EntryState,
    keep_x: Final,
    keep_y: Final,
}

const POLICIES: [Policy; 5] = [
    Policy::ServerWins,
    Policy::PartialDeviceWins,
    Policy::FullDeviceWins,
    Policy::UserAction,
    Policy::LastWriterWins,
];

const GRANULARITIES: [Granularity; 2] = [Granularity::Field, Granularity::Record];

const FIELDS: [&str; 3] = ["a", "b", "c"];

/// Which fields each writer writes (the status aside).
fn writes(kind: Kind, w: Writer) -> &'static [usize] {
    match (kind, w) {
        (Kind::XDeletes, Writer::X) | (Kind::YDeletes, Writer::Y) => &[],
        (_, Writer::X) => &[0, 1],
        (_, Writer::Y) => &[1, 2],
    }
}

/// A writer's version of the record: what it wrote, the base elsewhere.
fn version(kind: Kind, w: Writer) -> Final {
    match (kind, w) {
        (Kind::XDeletes, Writer::X) | (Kind::YDeletes, Writer::Y) => Final::Deleted,
        _ => {
            let mut v = [V::Base; 3];
            for &f in writes(kind, w) {
                v[f] = if w == Writer::X { V::X } else { V::Y };
            }
            Final::Live(v)
        }
    }
}

/// THE TABLE: what every peer shows, the entry's state, and what keeping
/// each side gives.
fn expected(kind: Kind, policy: Policy, g: Granularity, sides: Sides, later: Writer) -> Outcome {
    // Server and device policies need an authority on one side and a device
    // on the other; between two devices the last saved change wins
    // (Creatio).
    let effective = match (sides, policy) {
        (
            Sides::DeviceDevice,
            Policy::ServerWins | Policy::PartialDeviceWins | Policy::FullDeviceWins,
        ) => Policy::LastWriterWins,
        (_, p) => p,
    };
    let advancing = match kind {
        Kind::StatusXStale => Some(Writer::Y),
        Kind::StatusYStale => Some(Writer::X),
        _ => None,
    };
    // Who stands (for user action: what shows until a person decides).
    let winner = match effective {
        Policy::ServerWins => Writer::Y,
        Policy::PartialDeviceWins | Policy::FullDeviceWins => Writer::X,
        Policy::LastWriterWins => later,
        _ => match (advancing, sides) {
            // Pega: the advanced case shows; the stale data waits.
            (Some(a), _) => a,
            // OutSystems: the server's record until the conflict is resolved.
            (None, Sides::AuthorityDevice) => Writer::Y,
            (None, Sides::DeviceDevice) => later,
        },
    };
    let of = |w: Writer| if w == Writer::X { V::X } else { V::Y };
    let deletes = matches!(kind, Kind::XDeletes | Kind::YDeletes);
    // The fields in conflict: at record granularity the record; at field
    // granularity the fields both wrote, or for a status conflict every field
    // the stale change wrote (Pega keeps the client's whole case data).
    let contested: Vec<usize> = match (kind, g) {
        (_, Granularity::Record) => vec![0, 1, 2],
        (Kind::Edit, _) => vec![1],
        (Kind::StatusXStale, _) => vec![0, 1],
        (Kind::StatusYStale, _) => vec![1, 2],
        _ => vec![],
    };
    let merged = |f: usize| -> V {
        let (x, y) = (writes(kind, Writer::X), writes(kind, Writer::Y));
        match (x.contains(&f), y.contains(&f)) {
            (true, false) => V::X,
            (false, true) => V::Y,
            _ => V::Base,
        }
    };
    let shown = if deletes {
        version(kind, winner)
    } else {
        let wv = match version(kind, winner) {
            Final::Live(v) => v,
            Final::Deleted => unreachable!(),
        };
        let mut v = [V::Base; 3];
        for f in 0..3 {
            v[f] = match effective {
                // Resco: "all the fields of the modified record will be changed
                // on the server according to the app".
                Policy::FullDeviceWins => wv[f],
                // "only the fields modified through the app will be changed".
                Policy::PartialDeviceWins => {
                    if writes(kind, winner).contains(&f) {
                        of(winner)
                    } else {
                        merged(f)
                    }
                }
                // The winner's version of what is in conflict; the rest merges.
                _ if contested.contains(&f) => wv[f],
                _ => merged(f),
            };
        }
        Final::Live(v)
    };
    // Keeping a side writes that side's version of the entry's fields: the
    // contested ones, and under full device wins every field the device's
    // version set back.
    let keep = |w: Writer| -> Final {
        if deletes {
            return version(kind, w);
        }
        let Final::Live(wv) = version(kind, w) else {
            unreachable!()
        };
        let mut fields = contested.clone();
        if effective == Policy::FullDeviceWins {
            fields.extend(writes(kind, Writer::Y).iter().copied());
        }
        let mut v = [V::Base; 3];
        for f in 0..3 {
            v[f] = if fields.contains(&f) {
                wv[f]
            } else {
                merged(f)
            };
        }
        Final::Live(v)
    };
    Outcome {
        shown,
        state: if effective == Policy::UserAction {
            EntryState::Open
        } else {
            EntryState::Resolved
        },
        keep_x: keep(Writer::X),
        keep_y: keep(Writer::Y),
    }
}

// ---------------------------------------------------------------- the run

fn coll_name(p: Policy, g: Granularity) -> String {
    let g = if g == Granularity::Field { "f" } else { "r" };
    format!("{p}_{g}")
}

fn schema() -> Schema {
    let mut s = Schema::new();
    for p in POLICIES {
        for g in GRANULARITIES {
            s = s
                .with(
                    Collection::builder(&coll_name(p, g))
                        .required("title", FieldType::String)
                        .field("a", FieldType::String)
                        .field("b", FieldType::String)
                        .field("c", FieldType::String)
                        .default("status", FieldType::String, "draft")
                        .status("status", &["draft", "submitted", "approved"])
                        .policy(p)
                        .granularity(g)
                        .build()
                        .unwrap(),
                )
                .unwrap();
        }
    }
    s
}

fn record_id(kind: Kind, later: Writer, keep: Option<Writer>) -> String {
    format!(
        "{kind:?}-{later:?}-{}",
        keep.map_or("none".into(), |k| format!("{k:?}"))
    )
}

fn value_text(v: V, f: &str) -> Value {
    Value::from(match v {
        V::Base => format!("{f}0"),
        V::X => format!("{f}-x"),
        V::Y => format!("{f}-y"),
    })
}

struct Trio {
    _dir: tempfile::TempDir,
    hub: Replica,
    dev: Replica,
    other: Replica,
    clock: Arc<AtomicU64>,
}

impl Trio {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicU64::new(T0));
        let open = |name: &str| {
            let c = clock.clone();
            Replica::open(
                dir.path().join(name),
                Config::default()
                    .with_schema(schema())
                    .with_clock(move || c.load(Ordering::SeqCst)),
            )
            .unwrap()
        };
        let (hub, dev, other) = (open("hub"), open("dev"), open("other"));
        fieldsync::sim::authority_group(&hub, &[&dev, &other], T0).unwrap();
        Trio {
            _dir: dir,
            hub,
            dev,
            other,
            clock,
        }
    }

    fn at(&self, t: u64) {
        self.clock.store(t, Ordering::SeqCst);
    }
}

fn sync(a: &Replica, b: &Replica, forward: bool, now: u64) {
    let (x, y) = if forward { (a, b) } else { (b, a) };
    let r = sync_pair(x, y, now, None).unwrap();
    assert!(r.synced, "sync did not end equal");
}

fn member(r: &Replica) -> String {
    fieldsync::member::member_id(r.actor().to_bytes()).unwrap()
}

/// What a peer shows of a record, in the table's terms.
fn shown(r: &Replica, coll: &str, id: &str) -> Final {
    let rec = r.get(coll, id).unwrap().expect("record present");
    if rec.meta.deleted {
        return Final::Deleted;
    }
    let mut v = [V::Base; 3];
    for (i, f) in FIELDS.iter().enumerate() {
        let got = rec.fields.get(*f).cloned().unwrap_or(Value::Null);
        v[i] = [V::Base, V::X, V::Y]
            .into_iter()
            .find(|c| value_text(*c, f) == got)
            .unwrap_or_else(|| panic!("{coll}/{id}: field {f} holds {got:?}"));
    }
    Final::Live(v)
}

fn entries_of(r: &Replica, coll: &str, id: &str) -> Vec<Entry> {
    let mut e: Vec<Entry> = r
        .conflicts(&ConflictFilter::all().collection(coll))
        .unwrap()
        .into_iter()
        .filter(|e| e.record == id)
        .collect();
    e.sort_by(|a, b| a.id.cmp(&b.id));
    e
}

/// Run every cell with one kind of sides, one order of arrival and one sync
/// direction; returns the differences found.
fn run(sides: Sides, order: u8, forward: bool) -> Vec<String> {
    let t = Trio::new();
    let (x, y) = match sides {
        Sides::AuthorityDevice => (&t.dev, &t.hub),
        Sides::DeviceDevice => (&t.dev, &t.other),
    };
    let mut cells = Vec::new();
    for p in POLICIES {
        for g in GRANULARITIES {
            for kind in KINDS {
                for later in [Writer::X, Writer::Y] {
                    cells.push((p, g, kind, later));
                }
            }
        }
    }
    let keeps = [None, Some(Writer::X), Some(Writer::Y)];
    // The base, everywhere.
    t.at(T0);
    t.hub
        .transaction(|tx| {
            for &(p, g, kind, later) in &cells {
                for keep in keeps {
                    let mut f = fields([
                        ("title", Value::from("base")),
                        ("status", Value::from("submitted")),
                    ]);
                    for name in FIELDS {
                        f.insert(name.into(), value_text(V::Base, name));
                    }
                    tx.insert(&coll_name(p, g), &record_id(kind, later, keep), f)?;
                }
            }
            Ok(())
        })
        .unwrap();
    sync(&t.hub, &t.dev, forward, T0);
    sync(&t.hub, &t.other, forward, T0);
    // The concurrent writes: the earlier writer at T0 + 10 s, the later at
    // T0 + 20 s.
    for first in [true, false] {
        for &(p, g, kind, later) in &cells {
            let w = match (first, later) {
                (true, Writer::X) | (false, Writer::Y) => Writer::Y,
                _ => Writer::X,
            };
            t.at(if first { T0 + 10_000 } else { T0 + 20_000 });
            let r = if w == Writer::X { x } else { y };
            let coll = coll_name(p, g);
            for keep in keeps {
                let id = record_id(kind, later, keep);
                let deletes = matches!(
                    (kind, w),
                    (Kind::XDeletes, Writer::X) | (Kind::YDeletes, Writer::Y)
                );
                if deletes {
                    r.delete(&coll, &id).unwrap();
                    continue;
                }
                let mut patch = fieldsync::Fields::new();
                for &f in writes(kind, w) {
                    let v = if w == Writer::X { V::X } else { V::Y };
                    patch.insert(FIELDS[f].into(), value_text(v, FIELDS[f]));
                }
                let advances = matches!(
                    (kind, w),
                    (Kind::StatusXStale, Writer::Y) | (Kind::StatusYStale, Writer::X)
                );
                if advances {
                    patch.insert("status".into(), Value::from("approved"));
                }
                r.update(&coll, &id, patch).unwrap();
            }
        }
    }
    // Arrival: the writers' changes meet at the hub first, or at the third
    // peer first; then everyone syncs until all are equal.
    let now = T0 + 30_000;
    t.at(now);
    let peers = [&t.hub, &t.dev, &t.other];
    let settle = || {
        for _ in 0..2 {
            sync(&t.dev, &t.hub, forward, now);
            sync(&t.other, &t.hub, forward, now);
        }
    };
    match order {
        0 => settle(),
        _ => {
            sync(&t.dev, &t.other, forward, now);
            settle();
        }
    }
    let mut diffs = Vec::new();
    let label = format!("{sides:?}, arrival {order}, forward {forward}");
    let names = |w: Writer| -> String {
        match (sides, w) {
            (Sides::AuthorityDevice, Writer::X) => "device".into(),
            (Sides::AuthorityDevice, Writer::Y) => "authority".into(),
            (Sides::DeviceDevice, Writer::X) => member(x),
            (Sides::DeviceDevice, Writer::Y) => member(y),
        }
    };
    for &(p, g, kind, later) in &cells {
        let want = expected(kind, p, g, sides, later);
        let coll = coll_name(p, g);
        for keep in keeps {
            let id = record_id(kind, later, keep);
            let cell = format!("{label}: {coll}/{id}");
            let first = entries_of(&t.hub, &coll, &id);
            for r in peers {
                let got = shown(r, &coll, &id);
                if got != want.shown {
                    diffs.push(format!("{cell}: shows {got:?}, want {:?}", want.shown));
                }
                if entries_of(r, &coll, &id) != first {
                    diffs.push(format!("{cell}: peers hold different entries"));
                }
            }
            match first.as_slice() {
                [e] if e.state == want.state => {}
                [e] => diffs.push(format!(
                    "{cell}: entry {:?}, want {:?}",
                    e.state, want.state
                )),
                other => diffs.push(format!("{cell}: {} entries, want one", other.len())),
            }
            // A person keeps one side (on the third peer, or on the hub).
            if let (Some(w), [e]) = (keep, first.as_slice()) {
                let on = if order == 0 { &t.other } else { &t.hub };
                let name = names(w);
                if let Err(err) = on.resolve(&e.id, Resolution::new(Choice::Keep(name.clone()))) {
                    diffs.push(format!("{cell}: resolve --keep {name}: {err}"));
                }
            }
        }
    }
    settle();
    for &(p, g, kind, later) in &cells {
        let want = expected(kind, p, g, sides, later);
        let coll = coll_name(p, g);
        for keep in [Writer::X, Writer::Y] {
            let id = record_id(kind, later, Some(keep));
            let cell = format!("{label}: {coll}/{id}");
            let want = if keep == Writer::X {
                want.keep_x
            } else {
                want.keep_y
            };
            let first = entries_of(&t.hub, &coll, &id);
            for r in peers {
                let got = shown(r, &coll, &id);
                if got != want {
                    diffs.push(format!("{cell}: after keep shows {got:?}, want {want:?}"));
                }
                if entries_of(r, &coll, &id) != first {
                    diffs.push(format!("{cell}: after keep, peers hold different entries"));
                }
                let status = r.get(&coll, &id).unwrap().unwrap().fields["status"].clone();
                let advanced = matches!(kind, Kind::StatusXStale | Kind::StatusYStale);
                if !matches!(want, Final::Deleted) && advanced && status != Value::from("approved")
                {
                    diffs.push(format!("{cell}: status moved back to {status:?}"));
                }
            }
            if !first.iter().all(|e| e.state == EntryState::Resolved) {
                diffs.push(format!("{cell}: an entry is still open after the decision"));
            }
        }
    }
    diffs
}

#[test]
fn every_cell_of_the_policy_table_holds_on_three_peers_in_both_orders_and_directions() {
    let mut diffs = Vec::new();
    for sides in [Sides::AuthorityDevice, Sides::DeviceDevice] {
        for order in [0, 1] {
            for forward in [true, false] {
                diffs.extend(run(sides, order, forward));
            }
        }
    }
    if !diffs.is_empty() {
        let n = diffs.len();
        diffs.truncate(60);
        panic!(
            "{n} differences from the policy table:\n{}",
            diffs.join("\n")
        );
    }
}

// ------------------------------------------------------------- the docs

fn v_text(v: V, sides: Sides) -> &'static str {
    match (v, sides) {
        (V::Base, _) => "base",
        (V::X, Sides::AuthorityDevice) => "device",
        (V::Y, Sides::AuthorityDevice) => "authority",
        (V::X, Sides::DeviceDevice) => "X",
        (V::Y, Sides::DeviceDevice) => "Y",
    }
}

fn final_text(f: Final, sides: Sides) -> String {
    match f {
        Final::Deleted => "deleted".into(),
        Final::Live(v) => v
            .iter()
            .map(|x| v_text(*x, sides))
            .collect::<Vec<_>>()
            .join(" · "),
    }
}

fn kind_text(k: Kind, sides: Sides) -> &'static str {
    match (k, sides) {
        (Kind::Edit, _) => "concurrent edit",
        (Kind::StatusXStale, Sides::AuthorityDevice) => "status: device edits, authority advances",
        (Kind::StatusYStale, Sides::AuthorityDevice) => "status: authority edits, device advances",
        (Kind::XDeletes, Sides::AuthorityDevice) => "device deletes, authority edits",
        (Kind::YDeletes, Sides::AuthorityDevice) => "authority deletes, device edits",
        (Kind::StatusXStale, Sides::DeviceDevice) => "status: X edits, Y advances",
        (Kind::StatusYStale, Sides::DeviceDevice) => "status: Y edits, X advances",
        (Kind::XDeletes, Sides::DeviceDevice) => "X deletes, Y edits",
        (Kind::YDeletes, Sides::DeviceDevice) => "Y deletes, X edits",
    }
}

/// The table as markdown (rows whose outcome does not depend on the
/// granularity or on who saved later are merged).
fn render() -> String {
    let mut out = String::new();
    for sides in [Sides::AuthorityDevice, Sides::DeviceDevice] {
        let (x, y) = match sides {
            Sides::AuthorityDevice => ("device", "authority"),
            Sides::DeviceDevice => ("X", "Y"),
        };
        out.push_str(&format!(
            "\n{}\n\n| conflict | policy | granularity | saved later | shows a · b · c | entry | keep {x} | keep {y} |\n|---|---|---|---|---|---|---|---|\n",
            match sides {
                Sides::AuthorityDevice => "**Authority vs device** (X = the device, Y = the authority):",
                Sides::DeviceDevice => "**Device vs device** (X and Y are two devices; an authority may relay):",
            }
        ));
        for kind in KINDS {
            for p in POLICIES {
                let cell = |g, l| expected(kind, p, g, sides, l);
                let row = |o: Outcome| {
                    format!(
                        "{} | {} | {} | {}",
                        final_text(o.shown, sides),
                        match o.state {
                            EntryState::Open => "open",
                            _ => "resolved",
                        },
                        final_text(o.keep_x, sides),
                        final_text(o.keep_y, sides)
                    )
                };
                let gs = [Granularity::Field, Granularity::Record];
                let ls = [Writer::X, Writer::Y];
                let all_same = gs
                    .iter()
                    .flat_map(|g| ls.iter().map(move |l| (*g, *l)))
                    .all(|(g, l)| cell(g, l) == cell(Granularity::Field, Writer::X));
                let later_same = gs
                    .iter()
                    .all(|g| cell(*g, Writer::X) == cell(*g, Writer::Y));
                let gran_same = ls
                    .iter()
                    .all(|l| cell(Granularity::Field, *l) == cell(Granularity::Record, *l));
                let gname = |g: Granularity| {
                    if g == Granularity::Field {
                        "field"
                    } else {
                        "record"
                    }
                    .to_owned()
                };
                let lname = |l: Writer| if l == Writer::X { x } else { y }.to_owned();
                if all_same {
                    push(
                        &mut out,
                        kind,
                        sides,
                        p,
                        "any",
                        "either",
                        &row(cell(gs[0], ls[0])),
                    );
                } else if later_same {
                    for g in gs {
                        push(
                            &mut out,
                            kind,
                            sides,
                            p,
                            &gname(g),
                            "either",
                            &row(cell(g, ls[0])),
                        );
                    }
                } else if gran_same {
                    for l in ls {
                        push(
                            &mut out,
                            kind,
                            sides,
                            p,
                            "any",
                            &lname(l),
                            &row(cell(gs[0], l)),
                        );
                    }
                } else {
                    for g in gs {
                        for l in ls {
                            push(
                                &mut out,
                                kind,
                                sides,
                                p,
                                &gname(g),
                                &lname(l),
                                &row(cell(g, l)),
                            );
                        }
                    }
                }
            }
        }
    }
    out
}

fn push(out: &mut String, kind: Kind, sides: Sides, p: Policy, g: &str, l: &str, row: &str) {
    out.push_str(&format!(
        "| {} | `{p}` | {g} | {l} | {row} |\n",
        kind_text(kind, sides)
    ));
}

const BEGIN: &str = "<!-- policy-table:begin (generated by tests/policy_table.rs) -->";
const END: &str = "<!-- policy-table:end -->";

#[test]
fn the_policy_table_in_docs_conflicts_md_is_the_tested_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/conflicts.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let table = render();
    let (Some(b), Some(e)) = (page.find(BEGIN), page.find(END)) else {
        panic!("docs/conflicts.md lacks the policy table markers");
    };
    let current = &page[b + BEGIN.len()..e];
    if current != table {
        if std::env::var_os("FIELDSYNC_BLESS").is_some() {
            let new = format!(
                "{}{BEGIN}{table}{END}{}",
                &page[..b],
                &page[e + END.len()..]
            );
            std::fs::write(&path, new).unwrap();
        } else {
            panic!(
                "docs/conflicts.md's policy table differs from tests/policy_table.rs; \
                 run `FIELDSYNC_BLESS=1 cargo test --test policy_table` to rewrite it"
            );
        }
    }
}
