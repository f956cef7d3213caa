//! A deterministic simulator of N replicas syncing over an unreliable network
//! (test support, also used by the benchmarks).
//!
//! Every replica keeps its records in a [`MemoryStore`] and runs real automerge
//! documents and real [`Session`]s; only the network is simulated. A seed fixes
//! everything: the edits (inserts, updates of the same and of different fields,
//! counters, text, deletes, status moves, references to folders that may not
//! exist yet or be deleted, and people resolving, assigning and routing
//! conflict entries), which replicas start syncing with which, partitions
//! and heals, lost, duplicated and reordered messages, replicas restarted from
//! their stores, and the clock. Replica 0 is the group's authority, with a
//! validation closure the others do not have, so some of their changes are
//! rejected; the seed also picks the items' policy and granularity. [`run`]
//! plays one seeded schedule, then heals the network and syncs to quiescence,
//! and returns an error naming the seed if any two replicas differ in their
//! visible records or their conflict lists (ids, states, everything).
//!
//! ```
//! let stats = fieldsync::sim::run(&fieldsync::sim::SimConfig::new(42, 3))?;
//! assert!(stats.messages > 0);
//! # Ok::<(), fieldsync::sim::SimError>(())
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::schema::{Collection, FieldType, Granularity, Policy, Schema};
use crate::store::MemoryStore;
use crate::sync::{Input, Node, Notification, Output, Session};
use crate::value::{Value, fields};
use crate::{Config, Replica, Scan};

/// SplitMix64: a tiny generator whose output is fixed forever for a seed, so a
/// printed seed replays the same schedule on any build (a crate's generator may
/// change its stream between versions).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1.0 < p
    }
}

/// One schedule's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// How many replicas (2 to 6 in the property test).
    pub replicas: usize,
    /// How many random steps before the network heals.
    pub steps: usize,
    /// Probability that a delivered message is lost.
    pub loss: f64,
    /// Probability that a delivered message is delivered twice.
    pub duplicate: f64,
    /// How many distinct record ids the edits draw from (small: more collisions).
    pub ids: usize,
    /// The items' resolution policy.
    pub policy: Policy,
    /// The items' conflict granularity.
    pub granularity: Granularity,
}

impl SimConfig {
    /// A schedule with the default mix (80 steps, 5% loss, 5% duplicates).
    pub fn new(seed: u64, replicas: usize) -> Self {
        Self {
            seed,
            replicas,
            steps: 80,
            loss: 0.05,
            duplicate: 0.05,
            ids: 12,
            policy: Policy::ALL[(seed / 5 % 5) as usize],
            granularity: if (seed / 25).is_multiple_of(2) {
                Granularity::Field
            } else {
                Granularity::Record
            },
        }
    }
}

/// What a schedule did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Edits made.
    pub edits: u64,
    /// Messages delivered (including duplicates).
    pub messages: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Messages lost on purpose.
    pub lost: u64,
    /// Replica restarts.
    pub restarts: u64,
    /// Syncs that reported convergence.
    pub synced: u64,
    /// Records on each replica at the end.
    pub records: usize,
    /// Tombstones purged.
    pub purged: u64,
    /// Conflict entries on each replica at the end.
    pub conflicts: usize,
    /// Of which open.
    pub open_conflicts: usize,
    /// Entries resolved, assigned or routed by a simulated person.
    pub decisions: u64,
    /// Entries at the end by kind: status regression, concurrent edit,
    /// rejected, rejected FK, edit of deleted.
    pub by_kind: [usize; 5],
    /// Pending events still listed at the end, over the devices: rejected,
    /// rejected FK, cancelled, held by an open conflict (none may be pending,
    /// or processing for another reason, once the authority's
    /// acknowledgements have reached everyone).
    pub events_left: [usize; 4],
    /// Pending events cancelled by a simulated person.
    pub cancels: u64,
}

/// A schedule that did not converge, or failed.
#[derive(Debug, thiserror::Error)]
#[error("seed {seed}: {message} (replay: FIELDSYNC_SIM_SEED={seed})")]
pub struct SimError {
    /// The seed that fails.
    pub seed: u64,
    /// What went wrong.
    pub message: String,
}

/// The collection the simulator edits: one field of each mergeable kind, a
/// status and a reference to a folder (default policy and granularity).
pub fn collection() -> Collection {
    item_collection(Policy::ServerWins, Granularity::Field)
}

/// The lifecycle of the simulator's items.
pub const STATES: [&str; 4] = ["open", "active", "done", "closed"];

fn item_collection(policy: Policy, granularity: Granularity) -> Collection {
    let built = Collection::builder("item")
        .required("title", FieldType::String)
        .field("note", FieldType::String)
        .field("qty", FieldType::Integer)
        .default("visits", FieldType::Counter, Value::Counter(0))
        .field("body", FieldType::Text)
        .default("status", FieldType::String, "open")
        .status("status", &STATES)
        .field("folder", FieldType::Reference("folder".into()))
        .policy(policy)
        .granularity(granularity)
        .build();
    match built {
        Ok(c) => c,
        // The definition above is valid; a failure here is a bug in the builder.
        Err(e) => panic!("the simulator's collection is invalid: {e}"),
    }
}

/// The folders items refer to.
pub fn folder_collection() -> Collection {
    match Collection::builder("folder")
        .required("name", FieldType::String)
        .build()
    {
        Ok(c) => c,
        Err(e) => panic!("the simulator's folder collection is invalid: {e}"),
    }
}

/// The simulator's schema with the default policy and granularity (the
/// folders and the items).
pub fn default_schema() -> Schema {
    schema(Policy::ServerWins, Granularity::Field)
}

/// The schema of the simulator's replicas.
pub fn schema(policy: Policy, granularity: Granularity) -> Schema {
    let s = Schema::new()
        .with(folder_collection())
        .and_then(|s| s.with(item_collection(policy, granularity)));
    match s {
        Ok(s) => s,
        Err(e) => panic!("the simulator's schema is invalid: {e}"),
    }
}

/// The authority's rule the devices do not know: a note must not end in 9.
fn authority_rule(f: &crate::Fields) -> Vec<crate::schema::Violation> {
    match f.get("note").and_then(Value::as_str) {
        Some(n) if n.ends_with('9') => vec![
            crate::schema::Violation::new("note_ends_in_9", "a note may not end in 9").on("note"),
        ],
        _ => Vec::new(),
    }
}

struct Peer {
    store: MemoryStore,
    replica: Replica,
    sessions: BTreeMap<usize, Session>,
}

/// A simulated message in flight.
struct Packet {
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

/// N replicas and the network between them.
pub struct Sim {
    rng: Rng,
    clock: Arc<AtomicU64>,
    peers: Vec<Peer>,
    links: Vec<Vec<bool>>,
    net: VecDeque<Packet>,
    stats: SimStats,
    seed: u64,
    cfg: SimConfig,
    /// Whether the network is healed (no more faults): a sync that ends
    /// incomplete then is a liveness bug.
    healed: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("replicas", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Replicas in memory, all linked, the clock at a fixed start.
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let clock = Arc::new(AtomicU64::new(1_800_000_000_000));
        let mut sim = Self {
            rng: Rng::new(cfg.seed),
            clock,
            peers: Vec::new(),
            links: vec![vec![true; cfg.replicas]; cfg.replicas],
            net: VecDeque::new(),
            stats: SimStats::default(),
            seed: cfg.seed,
            cfg: cfg.clone(),
            healed: false,
        };
        for at in 0..cfg.replicas {
            let store = MemoryStore::new();
            // Actor ids from the seed too, so that a seed replays exactly
            // (hashes, ties broken by actor, entry ids).
            // The actor is the public key of a signing key made from the seed.
            let mut secret = [0u8; 32];
            for chunk in secret.chunks_mut(8) {
                chunk.copy_from_slice(&sim.rng.next_u64().to_be_bytes());
            }
            let signer = crate::sign::Signer::from_secret(&secret);
            crate::store::Storage::put(&store, crate::store::keys::SIGNING_KEY, &secret)
                .and_then(|()| {
                    crate::store::Storage::put(&store, crate::store::keys::ACTOR, &signer.public())
                })
                .map_err(|e| sim.fail(format!("store: {e}")))?;
            let replica = sim.open(&store, at)?;
            sim.peers.push(Peer {
                store,
                replica,
                sessions: BTreeMap::new(),
            });
        }
        // Replica 0 founds the group and is its authority; every other
        // replica joins and is a device. Each syncs with it once before the
        // schedule, so every replica knows the members from the start.
        let root = sim.peers[0].replica.actor().to_hex_string();
        let setup = |e: crate::Error| sim.fail(format!("group setup: {e}"));
        sim.peers[0].replica.found_group().map_err(setup)?;
        sim.peers[0]
            .replica
            .add_member(&root, crate::Role::Authority)
            .map_err(setup)?;
        for p in &sim.peers[1..] {
            let id = p.replica.actor().to_hex_string();
            sim.peers[0]
                .replica
                .add_member(&id, crate::Role::Device)
                .map_err(setup)?;
            p.replica.join_group(&root).map_err(setup)?;
        }
        let now = sim.clock.load(Ordering::Relaxed);
        for p in &sim.peers[1..] {
            sync_pair(&p.replica, &sim.peers[0].replica, now, None).map_err(setup)?;
        }
        Ok(sim)
    }

    /// A replica's member id, as the node names peers.
    fn member_name(&self, at: usize) -> String {
        let a = self.peers[at].replica.actor();
        crate::member::member_id(a.to_bytes()).unwrap_or_else(|| a.to_hex_string())
    }

    fn fail(&self, message: impl Into<String>) -> SimError {
        SimError {
            seed: self.seed,
            message: message.into(),
        }
    }

    fn open(&self, store: &MemoryStore, at: usize) -> Result<Replica, SimError> {
        let clock = self.clock.clone();
        let schema = schema(self.cfg.policy, self.cfg.granularity);
        let replica = Replica::with_storage(
            Arc::new(store.clone()),
            Config::default()
                .with_schema(schema)
                .with_cache_docs(8)
                .with_clock(move || clock.load(Ordering::Relaxed)),
        )
        .map_err(|e| self.fail(format!("open: {e}")))?;
        if at == 0 {
            replica
                .add_validator("item", authority_rule)
                .map_err(|e| self.fail(format!("validator: {e}")))?;
        }
        Ok(replica)
    }

    /// The replicas.
    pub fn replicas(&self) -> Vec<Replica> {
        self.peers.iter().map(|p| p.replica.clone()).collect()
    }

    fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Feed an input to `at`'s session with `peer`, queueing what it sends.
    fn drive(&mut self, at: usize, peer: usize, input: Input) -> Result<(), SimError> {
        let now = self.now();
        let p = &mut self.peers[at];
        let session = p.sessions.entry(peer).or_default();
        let outs = p
            .replica
            .drive(session, now, input)
            .map_err(|e| self.fail(format!("replica {at}: {e}")))?;
        for o in outs {
            match o {
                Output::Send(bytes) => self.net.push_back(Packet {
                    from: at,
                    to: peer,
                    bytes,
                }),
                Output::Notify(Notification::Incomplete { reason, .. }) if self.healed => {
                    return Err(self.fail(format!(
                        "replica {at}'s sync with {peer} ended incomplete on a healed network: {reason}"
                    )));
                }
                Output::Notify(Notification::Synced(report)) => {
                    self.stats.synced += 1;
                    let name = self.member_name(peer);
                    self.peers[at]
                        .replica
                        .note_synced(&name, report.root)
                        .map_err(|e| self.fail(format!("replica {at}: {e}")))?;
                }
                Output::Notify(Notification::InSync { root }) => {
                    let name = self.member_name(peer);
                    self.peers[at]
                        .replica
                        .note_synced(&name, root)
                        .map_err(|e| self.fail(format!("replica {at}: {e}")))?;
                }
                Output::Notify(Notification::ProtocolError { reason }) => {
                    return Err(self.fail(format!("replica {at} refused {peer}: {reason}")));
                }
                Output::Close => {
                    self.peers[at].sessions.remove(&peer);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Make one random edit on replica `at`. Edits that the record's state refuses
    /// (an update of a deleted or missing record) are skipped.
    fn edit(&mut self, at: usize) {
        let id = format!("r{}", self.rng.below(self.cfg.ids));
        let r = self.peers[at].replica.clone();
        let v = self.rng.below(1000);
        let exists = matches!(r.get("item", &id), Ok(Some(_)));
        let op = if exists { 1 + self.rng.below(12) } else { 0 };
        if op >= 7 {
            self.conflict_edit(at, &id, op, v);
            return;
        }
        let result = match op {
            0 => r.insert(
                "item",
                &id,
                fields([("title", Value::from(format!("t{v}")))]),
            ),
            1 => r.update(
                "item",
                &id,
                fields([("title", Value::from(format!("t{v}")))]),
            ),
            2 => r.update(
                "item",
                &id,
                fields([("note", Value::from(format!("n{v}")))]),
            ),
            3 => r.update("item", &id, fields([("qty", Value::Int(v as i64))])),
            4 => r.update_with("item", &id, |e| e.increment("visits", 1)),
            5 => r.update_with("item", &id, |e| {
                let len = match e.get("body")? {
                    Some(Value::Text(t)) => t.chars().count(),
                    _ => 0,
                };
                e.splice_text("body", v % (len + 1), 0, "x")
            }),
            _ => r.delete("item", &id),
        };
        if result.is_ok() {
            self.stats.edits += 1;
        }
    }

    /// The edits about statuses, folders and conflict entries.
    fn conflict_edit(&mut self, at: usize, id: &str, op: usize, v: usize) {
        let r = self.peers[at].replica.clone();
        let folder = format!("f{}", v % 4);
        let done = match op {
            7 | 8 => {
                let state = STATES[self.rng.below(STATES.len())];
                r.update("item", id, fields([("status", Value::from(state))]))
                    .is_ok()
            }
            9 => r
                .update("item", id, fields([("folder", Value::Ref(folder))]))
                .is_ok(),
            10 => match r.get("folder", &folder) {
                Ok(Some(f)) if !f.meta.deleted => r.delete("folder", &folder).is_ok(),
                Ok(None) => r
                    .insert("folder", &folder, fields([("name", Value::from("box"))]))
                    .is_ok(),
                _ => false,
            },
            _ => {
                let Ok(entries) = r.conflicts(&crate::conflict::ConflictFilter::all()) else {
                    return;
                };
                if entries.is_empty() {
                    // Nothing to decide: the person cancels one of their
                    // pending events instead (picked without the generator,
                    // so schedules without events replay as before).
                    let Ok(events) = r.pending(&crate::pending::PendingFilter::all()) else {
                        return;
                    };
                    let open: Vec<u64> = events
                        .iter()
                        .filter(|e| e.status.cancellable())
                        .map(|e| e.id)
                        .collect();
                    if !open.is_empty() && r.cancel_event(open[v % open.len()]).is_ok() {
                        self.stats.cancels += 1;
                        self.stats.edits += 1;
                    }
                    return;
                }
                let e = &entries[self.rng.below(entries.len())];
                use crate::conflict::{Choice, Resolution, Side};
                let ok = match self.rng.below(6) {
                    0 => r.assign(&e.id, &format!("p{}", v % 3)).is_ok(),
                    1 => r.route(&e.id, "second_line").is_ok(),
                    2 => r
                        .resolve(&e.id, Resolution::new(Choice::KeepSide(Side::Other)))
                        .is_ok(),
                    3 => r
                        .resolve(&e.id, Resolution::new(Choice::KeepSide(Side::Subject)))
                        .is_ok(),
                    4 => {
                        let pick = e
                            .fields
                            .iter()
                            .map(|f| {
                                let side = if self.rng.chance(0.5) {
                                    Side::Subject
                                } else {
                                    Side::Other
                                };
                                (f.clone(), side)
                            })
                            .collect();
                        r.resolve(&e.id, Resolution::new(Choice::Fields(pick)))
                            .is_ok()
                    }
                    _ => r
                        .resolve(
                            &e.id,
                            Resolution::new(Choice::KeepSide(Side::Subject)).reopen(STATES[v % 2]),
                        )
                        .is_ok(),
                };
                if ok {
                    self.stats.decisions += 1;
                }
                ok
            }
        };
        if done {
            self.stats.edits += 1;
        }
    }

    /// Deliver the message at position `i` of the network queue.
    fn deliver(&mut self, i: usize, faults: bool) -> Result<(), SimError> {
        let Some(p) = self.net.remove(i) else {
            return Ok(());
        };
        if faults && self.rng.chance(self.cfg.loss) {
            self.stats.lost += 1;
            return Ok(());
        }
        if !self.links[p.from][p.to] {
            self.stats.lost += 1;
            return Ok(());
        }
        let times = if faults && self.rng.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..times {
            self.stats.messages += 1;
            self.stats.bytes += p.bytes.len() as u64;
            self.drive(p.to, p.from, Input::Received(p.bytes.clone()))?;
        }
        Ok(())
    }

    fn restart(&mut self, at: usize) -> Result<(), SimError> {
        let store = self.peers[at].store.clone();
        let replica = self.open(&store, at)?;
        self.peers[at].replica = replica;
        self.peers[at].sessions.clear();
        self.stats.restarts += 1;
        Ok(())
    }

    fn tick_all(&mut self) -> Result<(), SimError> {
        for at in 0..self.peers.len() {
            let peers: Vec<usize> = self.peers[at].sessions.keys().copied().collect();
            for peer in peers {
                self.drive(at, peer, Input::Tick)?;
            }
        }
        Ok(())
    }

    /// One random step of the schedule.
    pub fn step(&mut self) -> Result<(), SimError> {
        let n = self.peers.len();
        self.clock
            .fetch_add(self.rng.below(200) as u64, Ordering::Relaxed);
        match self.rng.below(100) {
            0..=34 => {
                let at = self.rng.below(n);
                self.edit(at);
            }
            35..=49 => {
                let a = self.rng.below(n);
                let b = (a + 1 + self.rng.below(n - 1)) % n;
                if self.links[a][b] {
                    self.drive(a, b, Input::Start)?;
                }
            }
            50..=84 => {
                for _ in 0..=self.rng.below(4) {
                    if !self.net.is_empty() {
                        let i = self.rng.below(self.net.len());
                        self.deliver(i, true)?;
                    }
                }
            }
            85..=91 => {
                let a = self.rng.below(n);
                let b = (a + 1 + self.rng.below(n - 1)) % n;
                let up = !self.links[a][b];
                self.links[a][b] = up;
                self.links[b][a] = up;
            }
            92..=94 => {
                let at = self.rng.below(n);
                self.restart(at)?;
            }
            95..=96 => {
                let at = self.rng.below(n);
                let purged = self.peers[at]
                    .replica
                    .purge_tombstones()
                    .map_err(|e| self.fail(format!("replica {at}: purge: {e}")))?;
                self.stats.purged += purged as u64;
            }
            _ => {
                self.clock
                    .fetch_add(crate::sync::session::RETRY_AFTER_MS, Ordering::Relaxed);
                self.tick_all()?;
            }
        }
        Ok(())
    }

    /// Deliver everything in flight (in random order, without faults) until the
    /// network is empty; then let timers fire once and repeat, up to a bound.
    fn settle(&mut self) -> Result<(), SimError> {
        for _ in 0..50 {
            let mut budget = 1_000_000u32;
            while !self.net.is_empty() {
                budget = budget.saturating_sub(1);
                if budget == 0 {
                    return Err(self.fail("the network never went quiet"));
                }
                let i = self.rng.below(self.net.len());
                self.deliver(i, false)?;
            }
            let busy = self
                .peers
                .iter()
                .any(|p| p.sessions.values().any(Session::is_syncing));
            if !busy {
                return Ok(());
            }
            self.clock
                .fetch_add(crate::sync::session::RETRY_AFTER_MS, Ordering::Relaxed);
            self.tick_all()?;
        }
        Err(self.fail("sessions never finished"))
    }

    /// Heal every link and sync every pair until all replicas hold the same
    /// records, then check that they do.
    pub fn heal_and_check(&mut self) -> Result<(), SimError> {
        let n = self.peers.len();
        for row in &mut self.links {
            row.iter_mut().for_each(|l| *l = true);
        }
        self.settle()?;
        self.healed = true;
        for _round in 0..3 {
            for a in 0..n {
                for b in (a + 1)..n {
                    // Both sides start at once (as two live peers do).
                    self.drive(a, b, Input::Start)?;
                    self.drive(b, a, Input::Start)?;
                    self.settle()?;
                }
            }
            if self.roots_equal()? {
                break;
            }
        }
        self.check_identical()
    }

    fn roots_equal(&self) -> Result<bool, SimError> {
        let mut roots = Vec::new();
        for p in &self.peers {
            roots.push(
                p.replica
                    .with_sync_index(|i| i.summary(Node::ROOT))
                    .map_err(|e| self.fail(e.to_string()))?,
            );
        }
        Ok(roots.windows(2).all(|w| w[0] == w[1]))
    }

    /// Check that every replica holds the same records: ids, values, deleted
    /// flags and heads.
    pub fn check_identical(&mut self) -> Result<(), SimError> {
        // At quiescence the authority (replica 0) holds every change and its
        // acknowledgements reached every device: no event is still waiting.
        self.stats.events_left = [0; 4];
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            let events = p
                .replica
                .pending(&crate::pending::PendingFilter::all())
                .map_err(|e| self.fail(e.to_string()))?;
            for e in events {
                use crate::pending::EventStatus as S;
                // An edit waiting in an open conflict for a person waits
                // at quiescence too; its entry must be open here.
                let held = e.status == S::Processing
                    && e.errors.first().is_some_and(|x| x.code == "held")
                    && p.replica
                        .conflicts(&crate::conflict::ConflictFilter::open())
                        .map_err(|x| self.fail(x.to_string()))?
                        .iter()
                        .any(|x| {
                            x.subject.hash == e.change
                                || x.others.iter().any(|o| o.hash == e.change)
                        });
                let slot = match e.status {
                    S::Rejected => 0,
                    S::RejectedFk => 1,
                    S::Cancelled => 2,
                    S::Processing if held => 3,
                    other => {
                        let auth = &self.peers[0].replica;
                        let has = e.change.parse::<automerge::ChangeHash>().ok().map(|h| {
                            auth.with_doc(&e.collection, &e.record, |d| {
                                Ok(d.get_change_meta_by_hash(&h)
                                    .map(|m| m.message.map(|x| x.into_owned())))
                            })
                        });
                        let outcomes = auth.list(crate::schema::HELD).map(|v| {
                            v.into_iter()
                                .filter(|r| {
                                    r.fields.get("record").and_then(crate::Value::as_str)
                                        == Some(e.record.as_str())
                                })
                                .map(|r| r.fields.get("held").cloned())
                                .collect::<Vec<_>>()
                        });
                        let acks = auth.list(crate::schema::ACKS).map(|v| {
                            v.into_iter()
                                .map(|r| {
                                    (
                                        r.id.get(..6).map(str::to_owned),
                                        r.fields.get("seen").cloned(),
                                        r.fields.get("held").cloned(),
                                    )
                                })
                                .collect::<Vec<_>>()
                        });
                        return Err(self.fail(format!(
                            "replica {i}'s event {} on {}/{} is still {other} at quiescence (authority holds it: {has:?}; purged there: {:?}; acks {acks:?}; outcomes {outcomes:?}; device actor {})",
                            e.id, e.collection, e.record,
                            auth.is_purged(&e.collection, &e.record),
                            p.replica.actor().to_hex_string().get(..6).unwrap_or("")
                        )));
                    }
                };
                self.stats.events_left[slot] += 1;
            }
        }
        let mut first_entries: Option<Vec<crate::conflict::Entry>> = None;
        for (i, p) in self.peers.iter().enumerate() {
            let entries = p
                .replica
                .conflicts(&crate::conflict::ConflictFilter::all())
                .map_err(|e| self.fail(e.to_string()))?;
            match &first_entries {
                None => {
                    self.stats.conflicts = entries.len();
                    self.stats.open_conflicts = entries
                        .iter()
                        .filter(|e| e.state == crate::conflict::EntryState::Open)
                        .count();
                    for e in &entries {
                        let k = match e.kind {
                            crate::conflict::Kind::StatusRegression => 0,
                            crate::conflict::Kind::ConcurrentEdit => 1,
                            crate::conflict::Kind::Rejected => 2,
                            crate::conflict::Kind::RejectedFk => 3,
                            _ => 4,
                        };
                        self.stats.by_kind[k] += 1;
                    }
                    first_entries = Some(entries);
                }
                Some(f) if *f != entries => {
                    let a: Vec<_> = f
                        .iter()
                        .map(|e| (e.id.get(..8).unwrap_or(&e.id), e.kind, e.state, &e.record))
                        .collect();
                    let b: Vec<_> = entries
                        .iter()
                        .map(|e| (e.id.get(..8).unwrap_or(&e.id), e.kind, e.state, &e.record))
                        .collect();
                    let detail = f
                        .iter()
                        .zip(&entries)
                        .find(|(x, y)| x != y)
                        .map(|(x, y)| format!("\n  replica 0: {x:?}\n  replica {i}: {y:?}"))
                        .unwrap_or_default();
                    return Err(self.fail(format!(
                        "conflict lists differ: replica 0 {a:?} / replica {i} {b:?}{detail}"
                    )));
                }
                Some(_) => {}
            }
        }
        let mut first: Option<Vec<crate::Record>> = None;
        for (i, p) in self.peers.iter().enumerate() {
            let mut records = Vec::new();
            for c in ["folder", "item"] {
                records.extend(
                    p.replica
                        .scan(&Scan::new(c).with_deleted().with_rejected())
                        .map_err(|e| self.fail(e.to_string()))?,
                );
            }
            let records: Vec<crate::Record> = records
                .into_iter()
                .map(|mut r| {
                    r.meta.heads.sort();
                    r
                })
                .collect();
            match &first {
                None => {
                    self.stats.records = records.len();
                    first = Some(records);
                }
                Some(f) => {
                    if f.len() != records.len() {
                        return Err(self.fail(format!(
                            "replica 0 has {} records, replica {i} has {}",
                            f.len(),
                            records.len()
                        )));
                    }
                    for (a, b) in f.iter().zip(&records) {
                        if a.id != b.id || a.fields != b.fields || a.meta != b.meta {
                            return Err(self.fail(format!(
                                "record {} differs: replica 0 {:?} / replica {i} {:?}",
                                a.id, a, b
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// What happened so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }
}

/// Play one seeded schedule, heal, sync to quiescence, and check convergence.
pub fn run(cfg: &SimConfig) -> Result<SimStats, SimError> {
    let mut sim = Sim::new(cfg)?;
    for _ in 0..cfg.steps {
        sim.step()?;
    }
    sim.heal_and_check()?;
    Ok(sim.stats.clone())
}

/// What a lock-step sync between two replicas moved (see [`sync_pair`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairSync {
    /// Round trips: batches of messages from the side that started, each
    /// answered by the other side before the next.
    pub round_trips: u32,
    /// Bytes from the side that started to the other.
    pub bytes_out: u64,
    /// Bytes back.
    pub bytes_in: u64,
    /// Messages both ways.
    pub messages: u64,
    /// Whether the starting side reported that both hold the same records.
    pub synced: bool,
    /// Whether the link was cut before the end.
    pub cut: bool,
    /// The starting side's report, when it finished.
    pub report: Option<crate::sync::Report>,
    /// When the starting side's sync ended blocked by its sync gate: the
    /// records whose changes it held back.
    pub blocked: Option<Vec<crate::sync::Key>>,
    /// Why the starting side's sync stopped short, when it did.
    pub incomplete: Option<String>,
    /// The records the starting side could not sync (its own and those the
    /// peer named), as it reported them.
    pub issues: Vec<crate::sync::RecordIssue>,
    /// The records the other side could not sync.
    pub peer_issues: Vec<crate::sync::RecordIssue>,
}

/// One side of [`sync_pair`]: its replica, its session, and what it was told.
struct Side<'r> {
    replica: &'r Replica,
    session: Session,
    /// The report of a sync this side started and finished.
    done: Option<crate::sync::Report>,
    /// The root it found equal to the peer's.
    equal: Option<crate::sync::Summary>,
    /// Records it held back (a blocked sync).
    blocked: Option<Vec<crate::sync::Key>>,
    /// Why its sync stopped short.
    incomplete: Option<String>,
    /// The records it could not sync.
    issues: Vec<crate::sync::RecordIssue>,
}

impl<'r> Side<'r> {
    fn new(replica: &'r Replica) -> Self {
        Self {
            replica,
            session: Session::new(),
            done: None,
            equal: None,
            blocked: None,
            incomplete: None,
            issues: Vec::new(),
        }
    }

    /// Feed one input; returns the messages it sends.
    fn feed(&mut self, now: u64, input: Input) -> crate::Result<Vec<Vec<u8>>> {
        let outs = self.replica.drive(&mut self.session, now, input)?;
        for o in &outs {
            match o {
                Output::Notify(Notification::Issue(i)) => self.issues.push(i.clone()),
                Output::Notify(Notification::Incomplete { reason, .. }) => {
                    self.incomplete = Some(reason.clone());
                }
                _ => {}
            }
        }
        Ok(sends(
            outs,
            &mut self.done,
            &mut self.equal,
            &mut self.blocked,
        ))
    }
}

/// Deliver `msgs` to `to`, counting them as outbound or returning traffic;
/// `None` if the link is cut first.
fn carry(
    stats: &mut PairSync,
    to: &mut Side<'_>,
    msgs: Vec<Vec<u8>>,
    now: u64,
    cut_after: Option<u64>,
    outbound: bool,
) -> crate::Result<Option<Vec<Vec<u8>>>> {
    let mut answers = Vec::new();
    for m in msgs {
        let len = m.len() as u64;
        if cut_after.is_some_and(|c| stats.bytes_out + stats.bytes_in + len > c) {
            stats.cut = true;
            return Ok(None);
        }
        if outbound {
            stats.bytes_out += len;
        } else {
            stats.bytes_in += len;
        }
        stats.messages += 1;
        answers.extend(to.feed(now, Input::Received(m))?);
    }
    Ok(Some(answers))
}

fn sends(
    outs: Vec<Output>,
    done: &mut Option<crate::sync::Report>,
    in_sync: &mut Option<crate::sync::Summary>,
    blocked: &mut Option<Vec<crate::sync::Key>>,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for o in outs {
        match o {
            Output::Send(b) => out.push(b),
            Output::Notify(Notification::Synced(r)) => *done = Some(r),
            Output::Notify(Notification::InSync { root }) => *in_sync = Some(root),
            Output::Notify(Notification::Blocked { withheld, report }) => {
                *blocked = Some(withheld);
                *done = None;
                let _ = report;
            }
            _ => {}
        }
    }
    out
}

/// Set up a group in process: `hub` founds it and is its authority, every
/// replica of `others` joins it as a device, and each syncs once with the hub
/// so that all know the members (what a real setup does with `fieldsync group
/// found`, `group join`, `members add` and a first sync).
pub fn authority_group(hub: &Replica, others: &[&Replica], now: u64) -> crate::Result<()> {
    let root = hub.actor().to_hex_string();
    hub.found_group()?;
    hub.add_member(&root, crate::Role::Authority)?;
    for r in others {
        hub.add_member(&r.actor().to_hex_string(), crate::Role::Device)?;
        r.join_group(&root)?;
    }
    for r in others {
        sync_pair(r, hub, now, None)?;
    }
    Ok(())
}

/// Sync `a` with `b` over a perfect in-memory link, in lock step: `a` starts,
/// every message `a` sends is delivered, then every answer, and so on until
/// nothing moves. With `cut_after` bytes (both ways together), the link drops
/// once that many have been delivered: the message that would cross the limit
/// is lost, and both sessions are discarded.
pub fn sync_pair(
    a: &Replica,
    b: &Replica,
    now: u64,
    cut_after: Option<u64>,
) -> crate::Result<PairSync> {
    sync_sides(a, b, now, cut_after, false)
}

/// [`sync_pair`] with each session naming the other side's actor (as the
/// network node does from the peer id), so that a group's rights narrow what
/// is reconciled to what both may read (see `docs/security.md`).
pub fn sync_named(a: &Replica, b: &Replica, now: u64) -> crate::Result<PairSync> {
    sync_sides(a, b, now, None, true)
}

fn sync_sides(
    a: &Replica,
    b: &Replica,
    now: u64,
    cut_after: Option<u64>,
    named: bool,
) -> crate::Result<PairSync> {
    let mut stats = PairSync::default();
    let (mut a_side, mut b_side) = (Side::new(a), Side::new(b));
    // Each session knows its peer, as the node's do (for clock offsets and
    // change events; rights narrow what is reconciled only when enforced).
    let _ = named;
    {
        a_side
            .session
            .set_remote(Some(b.actor().to_bytes().to_vec()));
        b_side
            .session
            .set_remote(Some(a.actor().to_bytes().to_vec()));
    }
    let mut to_b = a_side.feed(now, Input::Start)?;
    while !to_b.is_empty() {
        // A batch that waits for an answer (a message with an id: the first
        // varint after the tag and version) is a round trip; one that only
        // answers the other side's hello is not.
        if to_b.iter().any(|m| m.get(2).is_some_and(|b| *b != 0)) {
            stats.round_trips += 1;
        }
        let Some(to_a) = carry(&mut stats, &mut b_side, to_b, now, cut_after, true)? else {
            return Ok(stats);
        };
        let Some(next) = carry(&mut stats, &mut a_side, to_a, now, cut_after, false)? else {
            return Ok(stats);
        };
        to_b = next;
    }
    let (report, b_equal) = (a_side.done, b_side.equal);
    stats.synced = report.is_some();
    // Each side remembers the other as holding what it held (for purging).
    let name = |r: &Replica| {
        crate::member::member_id(r.actor().to_bytes()).unwrap_or_else(|| r.actor().to_hex_string())
    };
    if let Some(r) = &report {
        a.note_synced(&name(b), r.root)?;
    }
    if let Some(root) = b_equal {
        b.note_synced(&name(a), root)?;
    }
    stats.report = report;
    stats.blocked = a_side.blocked;
    stats.incomplete = a_side.incomplete;
    stats.issues = a_side.issues;
    stats.peer_issues = b_side.issues;
    Ok(stats)
}
