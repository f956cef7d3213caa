//! One peer's sync session: a state machine that takes [`Input`]s and returns
//! [`Output`]s. It reads the replica's [`SyncIndex`] but does no IO: loading and
//! applying records, sending bytes and telling time are the caller's (see
//! `docs/protocol.md` for the protocol and why it converges).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::sign::Seal;

use super::index::{Key, MAX_LEVEL, Node, SyncIndex};
use super::msg::{self, CHUNK_BYTES, Frame, MAX_MESSAGE, Msg, MsgError, Part, RecordData};

/// A node with at most this many items is answered with its items rather than
/// its children's sums.
pub const ITEM_MAX: u64 = 8;

/// How many record loads one [`Output::Load`] asks for at most.
pub const LOAD_BATCH: usize = 256;

/// Rounds in a row that may leave this side unchanged while it refuses records
/// before the sync ends `Incomplete` (more rounds cannot help: the peer keeps
/// offering what this side refuses).
const STALLED_ROUNDS: u32 = 2;

/// How long a request may go unanswered before the syncing side starts over
/// (milliseconds of the caller's clock).
pub const RETRY_AFTER_MS: u64 = 10_000;

/// How many times a sync starts over after unanswered requests before it gives up.
pub const MAX_RESTARTS: u32 = 8;

/// How many confirmation rounds a sync runs before it reports that it could not
/// converge (for example because some records failed to apply).
pub const MAX_ROUNDS: u32 = 16;

/// What the caller feeds a session.
#[derive(Debug, Clone)]
pub enum Input {
    /// Sync with the peer until both hold the same records (or restart a sync
    /// that is under way).
    Start,
    /// Bytes received from the peer.
    Received(Vec<u8>),
    /// The results of the last [`Output::Load`], one per request, in order.
    Loaded(Vec<Loaded>),
    /// The last [`Output::Apply`] is done (and durable); these records failed.
    Applied(Vec<ApplyFailure>),
    /// A record changed locally (in live mode the change is offered at once).
    LocalChange(Key),
    /// Time passed (the caller's clock is passed to every call).
    Tick,
    /// A connection to the peer is up: say hello (this side's clock, and
    /// whether it is live) even if there is nothing else to send.
    Hello,
}

/// A record that could not be applied, reported back in [`Input::Applied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyFailure {
    /// The record.
    pub key: Key,
    /// Why.
    pub reason: String,
    /// Refused because this replica purged the record (the peer is told to
    /// purge it too).
    pub purged: bool,
}

/// What the caller must do for the session.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send these bytes to the peer.
    Send(Vec<u8>),
    /// Read these records and answer with [`Input::Loaded`].
    Load(Vec<LoadRequest>),
    /// Apply these records' data (one atomic write), then answer with
    /// [`Input::Applied`].
    Apply(Vec<Incoming>),
    /// Purge these records (the peer purged them), then answer with
    /// [`Input::Applied`] (no failures).
    Purge(Vec<Key>),
    /// Tell the application.
    Notify(Notification),
    /// Close the connection: the session is over (refused or misbehaving peer).
    Close,
}

/// A read the session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadRequest {
    /// The whole record: its saved form or its stored changes, whichever is
    /// smaller. Answer `data`.
    Full(Key),
    /// The record's changes that a peer with `heads` (and recent changes
    /// `recent`, as hash prefixes) lacks. Answer `data` (none if it lacks
    /// nothing) and, if `ask_back`, `heads` and `recent` of this replica when it
    /// lacks some of the peer's heads (or the whole record).
    Since {
        /// The record.
        key: Key,
        /// The peer's heads.
        heads: Vec<[u8; 32]>,
        /// Prefixes of the peer's recent changes.
        recent: Vec<u64>,
        /// Whether to ask for what this replica lacks.
        ask_back: bool,
    },
    /// The record's heads and recent changes. Answer `heads` (empty if it has
    /// gone) and `recent`.
    Heads(Key),
}

impl LoadRequest {
    /// The record the request is about.
    pub fn key(&self) -> &Key {
        match self {
            LoadRequest::Full(k) | LoadRequest::Heads(k) | LoadRequest::Since { key: k, .. } => k,
        }
    }
}

/// The answer to one [`LoadRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Automerge bytes to send (a saved document or changes).
    pub data: Option<Vec<u8>>,
    /// Heads to send in a `Have`.
    pub heads: Option<Vec<[u8; 32]>>,
    /// With `heads`: prefixes of the record's recent changes behind them.
    pub recent: Vec<u64>,
    /// The record is purged here: tell the peer, whatever was asked.
    pub purged: bool,
    /// Some of the record's changes were held back (the sync gate: this
    /// replica's own changes to a collection with unresolved conflicts).
    pub withheld: bool,
    /// With `data`: the seals that sign its changes (see [`crate::sign`]).
    pub seals: Vec<Arc<Seal>>,
}

/// A record's data received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The record.
    pub key: Key,
    /// A saved document or changes.
    pub bytes: Vec<u8>,
    /// The seals that came for its changes (see [`crate::sign`]): every
    /// seal the record named that this session has received.
    pub seals: Vec<Arc<Seal>>,
}

/// What a session tells the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// Both sides held the same records at the end of the sync.
    Synced(Report),
    /// The sync stopped before both sides held the same records.
    Incomplete {
        /// What moved.
        report: Report,
        /// Why it stopped.
        reason: String,
    },
    /// The peer refused the session.
    Refused {
        /// The peer's reason.
        reason: String,
    },
    /// The peer sent something this session refused; the session is closed.
    ProtocolError {
        /// What was wrong.
        reason: String,
    },
    /// The peer's root summary equalled this side's (both held the same
    /// records at that moment). The passive side of a sync learns it this way;
    /// see `Replica::note_synced`.
    InSync {
        /// The equal root.
        root: super::Summary,
    },
    /// The sync stopped with records still different because this side holds
    /// back its own changes to them (the sync gate: collections with
    /// `block_sync_on_conflict` and unresolved conflicts here); everything
    /// else was exchanged.
    Blocked {
        /// What moved.
        report: Report,
        /// The records whose changes were held back.
        withheld: Vec<Key>,
    },
    /// How far a sync this side started has come (sent after each message
    /// received while syncing).
    Progress(Progress),
    /// A record could not be synced: this side could not send it (too large)
    /// or refused it, or the peer said so. Every such record is also in the
    /// report, and a sync this side started with one does not end `Synced`.
    Issue(RecordIssue),
    /// The peer said hello: whether it is live.
    PeerHello {
        /// Whether the peer is in live mode.
        live: bool,
    },
    /// The peer's clock offset, measured over one round trip (NTP-style:
    /// the peer's clock minus this side's, assuming the way there and back
    /// take equally long).
    Clock(ClockSample),
}

/// A measurement of the peer's clock against this side's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The peer's clock minus this side's, in milliseconds.
    pub offset_ms: i64,
    /// The round trip, in milliseconds (the measurement's uncertainty is at
    /// most half of it).
    pub rtt_ms: u64,
    /// The peer's clock when it answered (milliseconds since the epoch).
    pub peer_clock: u64,
}

/// A record a sync did not move, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIssue {
    /// The record.
    pub key: Key,
    /// Whether the peer reported it (it refused what this side sent, or
    /// could not send it); otherwise this side did.
    pub by_peer: bool,
    /// Whether it is too large for a sync message (otherwise it was refused).
    pub too_large: bool,
    /// Why, for people.
    pub reason: String,
}

impl std::fmt::Display for RecordIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (self.too_large, self.by_peer) {
            (true, false) => "not sent",
            (true, true) => "not sent by the peer",
            (false, false) => "refused here",
            (false, true) => "refused by the peer",
        };
        write!(
            f,
            "{}/{} ({what}: {})",
            self.key.collection, self.key.id, self.reason
        )
    }
}

/// At most this many record issues are kept in a report (the count goes on).
pub const MAX_ISSUES: usize = 1000;

/// A sync's progress: records moved so far and records known to be still
/// to move (reconciliation discovers differences as it goes, so the total
/// can grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Record data items sent and received so far.
    pub records_done: u64,
    /// `records_done` plus the records this side has asked for or still has
    /// to load and send.
    pub records_total: u64,
    /// Bytes sent and received so far.
    pub bytes: u64,
}

/// What a sync moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Record data items sent.
    pub records_sent: u64,
    /// Record data items received.
    pub records_received: u64,
    /// This side's root summary at the last confirmation; on `Synced`, the
    /// peer's root was equal to it (see `Replica::note_synced`).
    pub root: super::Summary,
    /// Confirmation rounds (1 when the stores were already equal).
    pub rounds: u32,
    /// Restarts after unanswered requests.
    pub restarts: u32,
    /// Records that failed to apply.
    pub apply_failures: u64,
    /// Records refused because their seal had not arrived (a message lost or
    /// overtaken): asked for again in the next round, not counted as
    /// failures.
    pub unsealed: u64,
    /// Milliseconds from start to end, on the caller's clock.
    pub elapsed_ms: u64,
    /// The records this sync did not move, and why (at most [`MAX_ISSUES`]).
    pub issues: Vec<RecordIssue>,
    /// How many records it did not move (also beyond [`MAX_ISSUES`]).
    pub issues_total: u64,
    /// The peer's clock offset as measured during this sync, if it was.
    pub clock: Option<ClockSample>,
}

#[derive(Debug)]
enum Work {
    Load(LoadRequest),
    Ack(u64),
}

/// A sync session with one peer (see the module docs).
#[derive(Debug, Default)]
pub struct Session {
    /// Whether this side is running a sync to completion.
    syncing: bool,
    live: bool,
    started_at: u64,
    report: Report,
    /// The last record this side refused to apply, and why (for the report).
    last_refused: Option<String>,
    /// Consecutive rounds that left this side unchanged while it refused records.
    stalled_rounds: u32,
    /// Whether anything but acknowledgements moved since the last confirmation.
    activity: bool,
    confirm_id: Option<u64>,
    next_id: u64,
    /// Ids of our messages awaiting an acknowledgement, with when they were sent.
    outstanding: BTreeMap<u64, u64>,
    queue: VecDeque<Work>,
    inflight: Option<Vec<LoadRequest>>,
    applying: u32,
    out_parts: Vec<Part>,
    out_bytes: usize,
    out_acks: Vec<u64>,
    closed: bool,
    in_sync: Option<super::Summary>,
    /// Records whose changes this side held back during this sync.
    withheld: BTreeSet<Key>,
    /// Collections whose own changes this side holds back (the sync gate as
    /// it stood when this side's sync started; see [`Session::set_held`]).
    held: BTreeSet<String>,
    /// The peer's actor (its public key), when the shell knows it: a replica
    /// with rights offers it only what both may read.
    remote: Option<Vec<u8>>,
    /// Records asked of the peer and not received yet (for progress).
    awaited: u64,
    /// Seals sent in this round (a seal goes once per round, with the first
    /// record that needs it; a new round sends them again, so a message lost
    /// or overtaken costs one round, not the records).
    sent_seals: HashSet<[u8; 32]>,
    /// Seals received in this session, by id, and their total size.
    seals_in: HashMap<[u8; 32], Arc<Seal>>,
    seals_in_bytes: usize,
    /// Records being applied that named a seal this session never received
    /// (the message that brought it was lost or overtaken): if one is
    /// refused, another round brings it with its seals (it is not a refusal
    /// that more rounds cannot help).
    unsealed: HashSet<Key>,
    /// This side's clock as it would stamp a change now (set by the shell
    /// before each input; see [`Session::set_clock`]).
    clock: u64,
    /// The clock value of the hello this side sent, once sent.
    hello_sent: Option<u64>,
    /// Hellos to answer: their clock and when they arrived.
    echoes: Vec<(u64, u64)>,
    /// Whether the peer said it is live (unknown until its hello).
    peer_live: Option<bool>,
    /// Records this side's live mode offers (their `Have` goes as an offer).
    offering: HashSet<Key>,
    /// Offers from the peer left for this side's next sync (manual mode).
    offered: BTreeSet<Key>,
    /// Issues told to the shell in this sync (each once).
    issues_told: HashSet<(Key, bool, bool)>,
    /// Records received before their seals (which travel with the first
    /// record of the round that needs them, in a message this one overtook):
    /// applied when the seals arrive; at the round's end, asked for again.
    waiting: Vec<(Key, Vec<u8>, Vec<u8>)>,
    waiting_bytes: usize,
}

/// The most record bytes kept waiting for their seals (beyond, a record is
/// refused as unsealed and comes again in the next round).
const WAITING_MAX: usize = 32 << 20;

/// How long after its last hello a side says hello again when the peer
/// starts a sync (milliseconds of its clock).
const HELLO_AGAIN_MS: u64 = 5_000;

/// A reason, cut to what a `Refused` part carries.
fn cut_reason(reason: &str) -> String {
    if reason.len() <= msg::Limits::REASON {
        return reason.to_owned();
    }
    let mut end = msg::Limits::REASON - 3;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

/// Offers kept for the next sync in manual mode (beyond it, the next sync
/// finds them by reconciliation anyway).
const OFFERED_MAX: usize = 100_000;

/// The most seal bytes a session keeps from its peer (beyond it, it starts
/// over; records whose seal it dropped are refused and come again, with their
/// seals, in the next round).
const SEALS_IN_MAX: usize = 32 << 20;

/// The encoded size of a record part entry, roughly (for chunking).
fn record_size(r: &RecordData) -> usize {
    r.id.len() + r.bytes.len() + r.seals.len() + r.new_seals.len() + 18
}

/// The encoded size of a part, roughly (an upper bound for all but records,
/// whose entries are measured one by one).
fn part_size(part: &Part) -> usize {
    match part {
        Part::Summary { .. } => 40,
        Part::Purged { collection, id } => 8 + collection.len() + id.len(),
        Part::Children { .. } => 160,
        Part::Items { items, .. } => 24 + items.len() * 18,
        Part::NeedHashes(h) => 8 + h.len() * 9,
        Part::Have {
            id, heads, recent, ..
        } => 80 + id.len() + heads.len() * 33 + recent.len() * 9,
        Part::Records {
            collection,
            records,
        } => 8 + collection.len() + records.iter().map(record_size).sum::<usize>(),
        Part::Skipped {
            collection,
            id,
            reason,
        }
        | Part::Refused {
            collection,
            id,
            reason,
        } => 12 + collection.len() + id.len() + reason.len(),
        Part::Hello { .. } | Part::HelloEcho { .. } => 32,
        Part::Offer {
            collection,
            id,
            heads,
            recent,
        } => 80 + collection.len() + id.len() + heads.len() * 33 + recent.len() * 9,
    }
}

/// Cut parts into messages of about [`CHUNK_BYTES`], splitting record parts
/// between records. Always returns at least one (possibly empty) message.
fn chunk(parts: Vec<Part>) -> Vec<Vec<Part>> {
    let mut chunks: Vec<Vec<Part>> = vec![Vec::new()];
    let mut size = 0usize;
    let open_new = |chunks: &mut Vec<Vec<Part>>, size: &mut usize, next: usize| {
        if *size > 0 && *size + next > CHUNK_BYTES {
            chunks.push(Vec::new());
            *size = 0;
        }
        *size += next;
    };
    for part in parts {
        if let Part::Records {
            collection,
            records,
        } = part
        {
            let mut group = Vec::new();
            for r in records {
                let s = record_size(&r);
                if size > 0 && size + s > CHUNK_BYTES && !group.is_empty() {
                    let records = std::mem::take(&mut group);
                    if let Some(c) = chunks.last_mut() {
                        c.push(Part::Records {
                            collection: collection.clone(),
                            records,
                        });
                    }
                }
                open_new(&mut chunks, &mut size, s);
                group.push(r);
            }
            if !group.is_empty()
                && let Some(c) = chunks.last_mut()
            {
                c.push(Part::Records {
                    collection,
                    records: group,
                });
            }
        } else {
            open_new(&mut chunks, &mut size, part_size(&part));
            if let Some(c) = chunks.last_mut() {
                c.push(part);
            }
        }
    }
    chunks
}

impl Session {
    /// A new session (passive until [`Input::Start`] or a message arrives).
    pub fn new() -> Self {
        Self::default()
    }

    /// Live mode: local changes are offered to the peer as they happen. A
    /// change of mode is told to the peer with the next message (feed
    /// [`Input::Hello`] to send it at once).
    pub fn set_live(&mut self, live: bool) {
        if live != self.live {
            self.hello_sent = None;
        }
        self.live = live;
    }

    /// Set the collections whose own changes this side holds back (the sync
    /// gate). The shell sets it when a sync starts, so a conflict that
    /// appears during a sync holds back changes from the next one on.
    pub fn set_held(&mut self, collections: BTreeSet<String>) {
        self.held = collections;
    }

    /// The collections whose own changes this side holds back.
    pub fn held(&self) -> &BTreeSet<String> {
        &self.held
    }

    /// Name the peer's actor (its public key). A replica whose group has
    /// rights then reconciles only the records both it and the peer may read
    /// (see `docs/security.md`); without it, everything.
    pub fn set_remote(&mut self, actor: Option<Vec<u8>>) {
        self.remote = actor;
    }

    /// The peer's actor, if named.
    pub fn remote(&self) -> Option<&[u8]> {
        self.remote.as_deref()
    }

    /// Whether a sync started by this side is under way.
    pub fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// Set this side's clock: milliseconds since the epoch, as this replica
    /// would stamp a change now. The shell sets it before each input; it goes
    /// in this side's hello and answers the peer's (the timers use `now`).
    pub fn set_clock(&mut self, ms: u64) {
        self.clock = ms;
    }

    /// Whether the peer said it is live (`None` until its hello arrives).
    pub fn peer_live(&self) -> Option<bool> {
        self.peer_live
    }

    /// How many of the peer's live offers wait for this side's next sync
    /// (manual mode takes none in between).
    pub fn offers_waiting(&self) -> usize {
        self.offered.len()
    }

    /// Note a record this round did not move (once per record and kind). The
    /// report keeps the last round's: a record refused because something it
    /// needs came later in the same round (its author's membership, a seal)
    /// moves in the next round and is no issue.
    fn issue(&mut self, issue: RecordIssue, out: &mut Vec<Output>) {
        let same = |i: &RecordIssue| {
            i.key == issue.key && i.by_peer == issue.by_peer && i.too_large == issue.too_large
        };
        if self.report.issues.iter().any(same) {
            return;
        }
        self.report.issues_total += 1;
        if self.report.issues.len() < MAX_ISSUES {
            self.report.issues.push(issue.clone());
        }
        // Told (and logged) once per sync.
        let told = (issue.key.clone(), issue.by_peer, issue.too_large);
        if self.issues_told.len() < MAX_ISSUES && self.issues_told.insert(told) {
            tracing::warn!(record = %format!("{}/{}", issue.key.collection, issue.key.id), by_peer = issue.by_peer, reason = %issue.reason, "a record was not synced");
            out.push(Output::Notify(Notification::Issue(issue)));
        }
    }

    /// Whether the session was closed (refusal or protocol error).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Feed one input; returns what to do, in order. `now` is the caller's clock
    /// in milliseconds.
    pub fn handle(&mut self, index: &SyncIndex, now: u64, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        match input {
            Input::Start => self.start(index, now, &mut out),
            Input::Received(bytes) => self.received(index, now, &bytes, &mut out),
            Input::Loaded(results) => self.loaded(results, &mut out),
            Input::Applied(failures) => {
                self.applying = self.applying.saturating_sub(1);
                let settled = self.applying == 0;
                for f in failures {
                    if f.purged {
                        self.push_part(Part::Purged {
                            collection: f.key.collection,
                            id: f.key.id,
                        });
                    } else if self.unsealed.remove(&f.key) {
                        // Its seal went astray: the next round sends it again.
                        self.report.unsealed += 1;
                        self.activity = true;
                    } else {
                        self.report.apply_failures += 1;
                        self.last_refused =
                            Some(format!("{}/{}: {}", f.key.collection, f.key.id, f.reason));
                        // The peer learns which record was refused, and why.
                        let reason = cut_reason(&f.reason);
                        self.push_part(Part::Refused {
                            collection: f.key.collection.clone(),
                            id: f.key.id.clone(),
                            reason: reason.clone(),
                        });
                        let too_large = f.reason.contains("over the");
                        self.issue(
                            RecordIssue {
                                key: f.key,
                                by_peer: false,
                                too_large,
                                reason,
                            },
                            &mut out,
                        );
                    }
                }
                if settled {
                    self.unsealed.clear();
                }
            }
            Input::LocalChange(key) => {
                if self.syncing {
                    self.activity = true;
                } else if self.live && self.peer_live != Some(false) {
                    // Offered to a live peer (a peer in manual mode fetches
                    // it when it syncs).
                    self.offering.insert(key.clone());
                    self.queue.push_back(Work::Load(LoadRequest::Heads(key)));
                }
            }
            Input::Tick => self.tick(index, now, &mut out),
            Input::Hello => {
                if self.hello_sent.is_none() {
                    self.flush(now, &mut out);
                }
            }
        }
        if self.closed {
            return out;
        }
        self.pump(&mut out);
        // Send what is complete: everything once no load is pending, and full
        // chunks while a long transfer is still loading.
        if self.inflight.is_none() || self.out_bytes >= CHUNK_BYTES {
            self.flush(now, &mut out);
        }
        self.check_idle(index, now, &mut out);
        out
    }

    fn start(&mut self, index: &SyncIndex, now: u64, out: &mut Vec<Output>) {
        if !self.syncing {
            self.syncing = true;
            self.started_at = now;
            self.report = Report::default();
            self.last_refused = None;
            self.stalled_rounds = 0;
            self.withheld.clear();
            self.awaited = 0;
            // Every sync measures the clocks again, and reconciles what the
            // peer offered meanwhile.
            self.hello_sent = None;
            self.offered.clear();
            self.issues_told.clear();
        }
        self.confirm(index, now, out);
    }

    /// Send our root summary as a request; the sync is over when the peer
    /// acknowledges it with nothing else having moved.
    fn confirm(&mut self, index: &SyncIndex, now: u64, out: &mut Vec<Output>) {
        let root = index.summary(Node::ROOT);
        // A round after which this side's store is unchanged while it refused
        // records gained nothing here; two in a row and the sync gives up
        // (the peer got everything it could in the first of them).
        if self.report.rounds > 0
            && root == self.report.root
            && (self.last_refused.is_some()
                || !self.withheld.is_empty()
                || self.report.issues_total > 0)
        {
            self.stalled_rounds += 1;
        } else {
            self.stalled_rounds = 0;
        }
        // Records still waiting for seals that never came: the new round asks
        // for them again.
        if !self.waiting.is_empty() {
            self.report.unsealed += self.waiting.len() as u64;
            self.waiting.clear();
            self.waiting_bytes = 0;
        }
        self.report.rounds += 1;
        self.report.root = root;
        // A new round: the issues are the ones it meets.
        self.report.issues.clear();
        self.report.issues_total = 0;
        self.sent_seals.clear();
        self.activity = false;
        self.out_parts.push(Part::Summary {
            node: Node::ROOT,
            fp: root.fp,
            count: root.count,
        });
        self.confirm_id = self.flush(now, out);
    }

    fn tick(&mut self, index: &SyncIndex, now: u64, out: &mut Vec<Output>) {
        let stale = self
            .outstanding
            .values()
            .any(|sent| now.saturating_sub(*sent) >= RETRY_AFTER_MS);
        if !stale {
            return;
        }
        self.outstanding.clear();
        if self.syncing {
            self.report.restarts += 1;
            if self.report.restarts > MAX_RESTARTS {
                self.finish_incomplete(now, "the peer stopped answering", out);
            } else {
                self.activity = true;
                self.confirm(index, now, out);
            }
        }
    }

    fn finish_incomplete(&mut self, now: u64, reason: &str, out: &mut Vec<Output>) {
        self.syncing = false;
        self.confirm_id = None;
        self.report.elapsed_ms = now.saturating_sub(self.started_at);
        if !self.withheld.is_empty() && self.last_refused.is_none() {
            out.push(Output::Notify(Notification::Blocked {
                report: self.report.clone(),
                withheld: std::mem::take(&mut self.withheld).into_iter().collect(),
            }));
            return;
        }
        let reason = if self.report.issues_total > 0 {
            let shown: Vec<String> = self
                .report
                .issues
                .iter()
                .take(5)
                .map(ToString::to_string)
                .collect();
            let more = self.report.issues_total.saturating_sub(shown.len() as u64);
            format!(
                "{} record(s) could not be synced: {}{}",
                self.report.issues_total,
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            )
        } else {
            match &self.last_refused {
                Some(last) => format!(
                    "{reason}; records were refused here {} times (the last: {last})",
                    self.report.apply_failures
                ),
                None => reason.to_owned(),
            }
        };
        out.push(Output::Notify(Notification::Incomplete {
            report: self.report.clone(),
            reason,
        }));
    }

    fn refuse(&mut self, reason: String, out: &mut Vec<Output>) {
        tracing::warn!(%reason, "refusing a sync peer");
        out.push(Output::Send(msg::encode_refusal(&reason)));
        out.push(Output::Notify(Notification::ProtocolError { reason }));
        out.push(Output::Close);
        self.closed = true;
        self.syncing = false;
    }

    fn received(&mut self, index: &SyncIndex, now: u64, bytes: &[u8], out: &mut Vec<Output>) {
        self.report.messages_received += 1;
        self.report.bytes_received += bytes.len() as u64;
        let m = match msg::decode(bytes) {
            Ok(Frame::Msg(m)) => m,
            Ok(Frame::Refusal(r)) => {
                out.push(Output::Notify(Notification::Refused { reason: r.reason }));
                out.push(Output::Close);
                self.closed = true;
                self.syncing = false;
                return;
            }
            Err(e @ MsgError::Version { .. }) => {
                return self.refuse(e.to_string(), out);
            }
            Err(e) => return self.refuse(format!("refused a message from the peer: {e}"), out),
        };
        for a in &m.acks {
            self.outstanding.remove(a);
        }
        // Anything but the peer's own confirmation of an equal root is activity
        // (two peers that both sync must not keep each other confirming).
        // (Clock parts are not activity either.)
        let root = index.summary(Node::ROOT);
        let mut content = m
            .parts
            .iter()
            .filter(|p| !matches!(p, Part::Hello { .. } | Part::HelloEcho { .. }));
        let first = content.next();
        let equal_confirmation = content.next().is_none()
            && matches!(
                first,
                Some(Part::Summary { node, fp, count })
                    if *node == Node::ROOT && *fp == root.fp && *count == root.count
            );
        if first.is_some() && !equal_confirmation {
            self.activity = true;
        }
        let mut incoming = Vec::new();
        let mut purged = Vec::new();
        let mut need = Vec::new();
        for part in m.parts {
            match part {
                Part::Summary { node, fp, count } => self.on_summary(index, node, fp, count),
                Part::Children { node, fps } => self.on_children(index, node, &fps),
                Part::Items { node, items } => self.on_items(index, node, &items, &mut need),
                Part::NeedHashes(hashes) => {
                    for h in hashes {
                        for key in index.keys_with_hash(h) {
                            self.queue.push_back(Work::Load(LoadRequest::Full(key)));
                        }
                    }
                }
                Part::Have {
                    collection,
                    id,
                    heads,
                    recent,
                    reply,
                } => self.queue.push_back(Work::Load(LoadRequest::Since {
                    key: Key::new(collection, id),
                    heads,
                    recent,
                    ask_back: !reply,
                })),
                Part::Purged { collection, id } => purged.push(Key::new(collection, id)),
                Part::Offer {
                    collection,
                    id,
                    heads,
                    recent,
                } => {
                    let key = Key::new(collection, id);
                    if self.live || self.syncing {
                        self.queue.push_back(Work::Load(LoadRequest::Since {
                            key,
                            heads,
                            recent,
                            ask_back: true,
                        }));
                    } else if self.offered.len() < OFFERED_MAX {
                        // Manual mode: nothing moves until this side syncs.
                        self.offered.insert(key);
                    }
                }
                Part::Skipped {
                    collection,
                    id,
                    reason,
                } => self.issue(
                    RecordIssue {
                        key: Key::new(collection, id),
                        by_peer: true,
                        too_large: true,
                        reason,
                    },
                    out,
                ),
                Part::Refused {
                    collection,
                    id,
                    reason,
                } => self.issue(
                    RecordIssue {
                        key: Key::new(collection, id),
                        by_peer: true,
                        too_large: reason.contains("over the"),
                        reason,
                    },
                    out,
                ),
                Part::Hello { clock, live } => {
                    self.peer_live = Some(live);
                    self.echoes.push((clock, self.clock));
                    // The peer starts a sync: measure from this side too
                    // (at most once in 5 s, so two sides never ping-pong).
                    if self
                        .hello_sent
                        .is_some_and(|t| self.clock.saturating_sub(t) >= HELLO_AGAIN_MS)
                    {
                        self.hello_sent = None;
                    }
                    out.push(Output::Notify(Notification::PeerHello { live }));
                }
                Part::HelloEcho {
                    sent,
                    received,
                    replied,
                } => {
                    if self.hello_sent == Some(sent) {
                        let t3 = i128::from(self.clock);
                        let (t0, t1, t2) =
                            (i128::from(sent), i128::from(received), i128::from(replied));
                        let rtt = (t3 - t0) - (t2 - t1);
                        if rtt >= 0 {
                            let offset = ((t1 - t0) + (t2 - t3)) / 2;
                            let sample = ClockSample {
                                offset_ms: i64::try_from(offset).unwrap_or(0),
                                rtt_ms: u64::try_from(rtt).unwrap_or(0),
                                peer_clock: replied,
                            };
                            if self.syncing {
                                self.report.clock = Some(sample);
                            }
                            out.push(Output::Notify(Notification::Clock(sample)));
                        }
                    }
                }
                Part::Records {
                    collection,
                    records,
                } => {
                    self.report.records_received += records.len() as u64;
                    self.awaited = self.awaited.saturating_sub(records.len() as u64);
                    for r in &records {
                        if let Err(e) = self.keep_seals(&r.new_seals) {
                            return self
                                .refuse(format!("refused a message from the peer: {e}"), out);
                        }
                    }
                    for r in records {
                        let key = Key::new(collection.clone(), r.id);
                        match self.sealed(&r.seals) {
                            Some(seals) => incoming.push(Incoming {
                                key,
                                bytes: r.bytes,
                                seals,
                            }),
                            // Its seal travels in another message of this
                            // round (messages may overtake each other): it
                            // waits for it, within bounds.
                            None if self.waiting_bytes + r.bytes.len() <= WAITING_MAX => {
                                self.waiting_bytes += r.bytes.len() + r.seals.len();
                                self.waiting.push((key, r.bytes, r.seals));
                            }
                            None => {
                                self.unsealed.insert(key.clone());
                                let seals = self.sealed_partly(&r.seals);
                                incoming.push(Incoming {
                                    key,
                                    bytes: r.bytes,
                                    seals,
                                });
                            }
                        }
                    }
                }
            }
        }
        if !need.is_empty() {
            self.awaited += need.len() as u64;
            self.push_part(Part::NeedHashes(need));
        }
        // Records whose seals have now all arrived go with this message's.
        if !self.waiting.is_empty() {
            for (key, bytes, ids) in std::mem::take(&mut self.waiting) {
                match self.sealed(&ids) {
                    Some(seals) => {
                        self.waiting_bytes =
                            self.waiting_bytes.saturating_sub(bytes.len() + ids.len());
                        incoming.push(Incoming { key, bytes, seals });
                    }
                    None => self.waiting.push((key, bytes, ids)),
                }
            }
        }
        if !incoming.is_empty() {
            self.applying += 1;
            out.push(Output::Apply(incoming));
        }
        if !purged.is_empty() {
            self.applying += 1;
            out.push(Output::Purge(purged));
        }
        if let Some(root) = self.in_sync.take() {
            out.push(Output::Notify(Notification::InSync { root }));
        }
        if m.id != 0 {
            self.queue.push_back(Work::Ack(m.id));
        }
        if self.syncing {
            out.push(Output::Notify(Notification::Progress(self.progress())));
        }
        let _ = now;
    }

    /// How far the sync has come (see [`Progress`]).
    pub fn progress(&self) -> Progress {
        let done = self.report.records_sent + self.report.records_received;
        let loads = self
            .queue
            .iter()
            .filter(|w| {
                matches!(
                    w,
                    Work::Load(LoadRequest::Full(_) | LoadRequest::Since { .. })
                )
            })
            .count() as u64;
        Progress {
            records_done: done,
            records_total: done + loads + self.awaited,
            bytes: self.report.bytes_sent + self.report.bytes_received,
        }
    }

    /// Answer a node whose sums differ: its items if few, else its children.
    fn split(&mut self, index: &SyncIndex, node: Node, mine: u64) {
        if mine <= ITEM_MAX || node.level >= MAX_LEVEL {
            let items = index
                .items(node)
                .into_iter()
                .map(|(kh, _, fp)| (kh, fp))
                .collect();
            self.push_part(Part::Items { node, items });
        } else {
            self.push_part(Part::Children {
                node,
                fps: index.children(node),
            });
        }
    }

    fn send_all(&mut self, index: &SyncIndex, node: Node) {
        for key in index.keys(node) {
            self.queue.push_back(Work::Load(LoadRequest::Full(key)));
        }
    }

    fn on_summary(&mut self, index: &SyncIndex, node: Node, fp: u64, count: u64) {
        if node == Node::ROOT {
            // The peer starts a round: what it asks for next gets its seals
            // again (a message of ours may have been lost).
            self.sent_seals.clear();
        }
        let mine = index.summary(node);
        if mine.fp == fp && mine.count == count {
            if node == Node::ROOT {
                self.in_sync = Some(mine);
            }
            return;
        }
        if count == 0 {
            self.send_all(index, node);
        } else if mine.count == 0 {
            self.push_part(Part::Summary {
                node,
                fp: 0,
                count: 0,
            });
        } else {
            self.split(index, node, mine.count);
        }
    }

    fn on_children(&mut self, index: &SyncIndex, node: Node, theirs: &[u64; 16]) {
        if node.level >= MAX_LEVEL {
            return;
        }
        let mine = index.children(node);
        for n in 0..16u8 {
            let (m, t) = (mine[usize::from(n)], theirs[usize::from(n)]);
            if m == t {
                continue;
            }
            let child = node.child(n);
            if t == 0 {
                self.send_all(index, child);
            } else if m == 0 {
                self.push_part(Part::Summary {
                    node: child,
                    fp: 0,
                    count: 0,
                });
            } else {
                let count = index.summary(child).count;
                self.split(index, child, count);
            }
        }
    }

    fn on_items(
        &mut self,
        index: &SyncIndex,
        node: Node,
        theirs: &[(u64, u64)],
        need: &mut Vec<u64>,
    ) {
        type Side = (Vec<(Key, u64)>, BTreeSet<u64>);
        let mut by_hash: BTreeMap<u64, Side> = BTreeMap::new();
        for (kh, key, fp) in index.items(node) {
            by_hash.entry(kh).or_default().0.push((key, fp));
        }
        let (lo, hi) = node.range();
        for (kh, fp) in theirs {
            if (lo..=hi).contains(kh) {
                by_hash.entry(*kh).or_default().1.insert(*fp);
            }
        }
        for (kh, (mine, theirs)) in by_hash {
            if theirs.is_empty() {
                for (key, _) in mine {
                    self.queue.push_back(Work::Load(LoadRequest::Full(key)));
                }
                continue;
            }
            if theirs.len() > mine.len() {
                need.push(kh);
            }
            for (key, fp) in mine {
                if !theirs.contains(&fp) {
                    self.queue.push_back(Work::Load(LoadRequest::Heads(key)));
                }
            }
        }
    }

    fn push_part(&mut self, part: Part) {
        self.out_bytes += part_size(&part);
        self.out_parts.push(part);
    }

    /// The seals that `ids` (32 bytes each) name, if this session holds them
    /// all.
    fn sealed(&self, ids: &[u8]) -> Option<Vec<Arc<Seal>>> {
        ids.chunks_exact(32)
            .map(|id| {
                <&[u8; 32]>::try_from(id)
                    .ok()
                    .and_then(|id| self.seals_in.get(id))
                    .cloned()
            })
            .collect()
    }

    /// The seals of `ids` this session holds.
    fn sealed_partly(&self, ids: &[u8]) -> Vec<Arc<Seal>> {
        ids.chunks_exact(32)
            .filter_map(|id| {
                <&[u8; 32]>::try_from(id)
                    .ok()
                    .and_then(|id| self.seals_in.get(id))
                    .cloned()
            })
            .collect()
    }

    /// Keep the seals a record brought (see [`Session::seals_in`]).
    fn keep_seals(&mut self, bytes: &[u8]) -> Result<(), crate::sign::SignError> {
        if bytes.is_empty() {
            return Ok(());
        }
        for seal in Seal::parse_all(bytes)? {
            if self.seals_in_bytes + seal.as_bytes().len() > SEALS_IN_MAX {
                self.seals_in.clear();
                self.seals_in_bytes = 0;
            }
            self.seals_in_bytes += seal.as_bytes().len();
            self.seals_in.insert(*seal.id(), Arc::new(seal));
        }
        Ok(())
    }

    fn push_record(
        &mut self,
        key: Key,
        bytes: Vec<u8>,
        seals: Vec<Arc<Seal>>,
        out: &mut Vec<Output>,
    ) {
        let mut record = RecordData {
            id: key.id.clone(),
            bytes,
            seals: Vec::with_capacity(32 * seals.len()),
            new_seals: Vec::new(),
        };
        for seal in &seals {
            record.seals.extend_from_slice(seal.id());
            if !self.sent_seals.contains(seal.id()) {
                record.new_seals.extend_from_slice(seal.as_bytes());
            }
        }
        let size = record_size(&record);
        if size + 1024 > MAX_MESSAGE {
            let reason = format!(
                "its data and seals take {size} bytes, over the {MAX_MESSAGE}-byte limit of one sync message"
            );
            self.push_part(Part::Skipped {
                collection: key.collection.clone(),
                id: key.id.clone(),
                reason: reason.clone(),
            });
            self.issue(
                RecordIssue {
                    key,
                    by_peer: false,
                    too_large: true,
                    reason,
                },
                out,
            );
            return;
        }
        self.sent_seals.extend(seals.iter().map(|s| *s.id()));
        self.report.records_sent += 1;
        self.out_bytes += size;
        if let Some(Part::Records {
            collection,
            records,
        }) = self.out_parts.last_mut()
            && *collection == key.collection
        {
            records.push(record);
            return;
        }
        self.out_parts.push(Part::Records {
            collection: key.collection,
            records: vec![record],
        });
    }

    fn loaded(&mut self, results: Vec<Loaded>, out: &mut Vec<Output>) {
        let Some(requests) = self.inflight.take() else {
            return;
        };
        for (req, res) in requests.into_iter().zip(results) {
            if res.withheld {
                self.withheld.insert(req.key().clone());
            }
            if res.purged {
                let (LoadRequest::Full(key)
                | LoadRequest::Heads(key)
                | LoadRequest::Since { key, .. }) = req;
                self.push_part(Part::Purged {
                    collection: key.collection,
                    id: key.id,
                });
                continue;
            }
            match req {
                LoadRequest::Full(key) => {
                    if let Some(data) = res.data {
                        self.push_record(key, data, res.seals, out);
                    }
                }
                LoadRequest::Since { key, .. } => {
                    if let Some(heads) = res.heads {
                        self.push_part(Part::Have {
                            collection: key.collection.clone(),
                            id: key.id.clone(),
                            heads,
                            recent: res.recent,
                            reply: true,
                        });
                    }
                    if let Some(data) = res.data {
                        self.push_record(key, data, res.seals, out);
                    }
                }
                LoadRequest::Heads(key) => {
                    let offer = self.offering.remove(&key);
                    if let Some(heads) = res.heads {
                        if offer {
                            self.push_part(Part::Offer {
                                collection: key.collection,
                                id: key.id,
                                heads,
                                recent: res.recent,
                            });
                        } else {
                            self.push_part(Part::Have {
                                collection: key.collection,
                                id: key.id,
                                heads,
                                recent: res.recent,
                                reply: false,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Start the next load, moving acknowledgements that precede it into the
    /// outgoing message (their answers are all buffered by then).
    fn pump(&mut self, out: &mut Vec<Output>) {
        if self.inflight.is_some() {
            return;
        }
        let mut batch = Vec::new();
        while let Some(w) = self.queue.front() {
            match w {
                Work::Ack(id) if batch.is_empty() => {
                    self.out_acks.push(*id);
                    self.queue.pop_front();
                }
                Work::Ack(_) => break,
                Work::Load(_) if batch.len() >= LOAD_BATCH => break,
                Work::Load(_) => {
                    if let Some(Work::Load(r)) = self.queue.pop_front() {
                        batch.push(r);
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.inflight = Some(batch.clone());
            out.push(Output::Load(batch));
        }
    }

    /// Send what is buffered, cut into messages of about [`CHUNK_BYTES`]. Returns
    /// the id of the last message if it asks for an answer.
    fn flush(&mut self, now: u64, out: &mut Vec<Output>) -> Option<u64> {
        if self.out_parts.is_empty()
            && self.out_acks.is_empty()
            && self.echoes.is_empty()
            && self.hello_sent.is_some()
        {
            return None;
        }
        // The clock parts go first, stamped as late as possible.
        let mut parts = Vec::with_capacity(self.out_parts.len() + 2);
        if self.hello_sent.is_none() {
            self.hello_sent = Some(self.clock);
            parts.push(Part::Hello {
                clock: self.clock,
                live: self.live,
            });
        }
        for (sent, received) in std::mem::take(&mut self.echoes) {
            parts.push(Part::HelloEcho {
                sent,
                received,
                replied: self.clock,
            });
        }
        parts.append(&mut self.out_parts);
        self.out_bytes = 0;
        let chunks = chunk(parts);
        let last = chunks.len() - 1;
        let mut last_id = None;
        for (i, parts) in chunks.into_iter().enumerate() {
            if parts.is_empty() && (i != last || self.out_acks.is_empty()) {
                continue;
            }
            let id = if parts.iter().any(Part::is_request) {
                // Ids start at 1: 0 means "no answer needed".
                self.next_id += 1;
                let id = self.next_id;
                self.outstanding.insert(id, now);
                Some(id)
            } else {
                None
            };
            // Acknowledgements ride on the last message, after all the data.
            let acks = if i == last {
                std::mem::take(&mut self.out_acks)
            } else {
                Vec::new()
            };
            let m = Msg {
                id: id.unwrap_or(0),
                acks,
                parts,
            };
            if i == last {
                last_id = id;
            }
            match msg::encode(&m) {
                Ok(bytes) => {
                    self.report.messages_sent += 1;
                    self.report.bytes_sent += bytes.len() as u64;
                    out.push(Output::Send(bytes));
                }
                Err(e) => tracing::error!(error = %e, "could not encode a sync message"),
            }
        }
        last_id
    }

    fn check_idle(&mut self, index: &SyncIndex, now: u64, out: &mut Vec<Output>) {
        if !self.syncing
            || !self.outstanding.is_empty()
            || !self.queue.is_empty()
            || self.inflight.is_some()
            || self.applying > 0
        {
            return;
        }
        if self.confirm_id.is_some() && !self.activity && self.report.issues_total > 0 {
            // Equal roots cannot hide a record that did not move.
            self.finish_incomplete(now, "records were not synced", out);
        } else if self.confirm_id.is_some() && !self.activity {
            self.syncing = false;
            self.confirm_id = None;
            self.report.elapsed_ms = now.saturating_sub(self.started_at);
            out.push(Output::Notify(Notification::Synced(self.report.clone())));
        } else if self.report.rounds >= MAX_ROUNDS || self.stalled_rounds >= STALLED_ROUNDS {
            self.finish_incomplete(now, "records still differ after the last round", out);
        } else {
            self.confirm(index, now, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Vec<u8> {
        let m = Msg {
            id: 1,
            acks: Vec::new(),
            parts: vec![Part::Offer {
                collection: "item".into(),
                id: "x".into(),
                heads: vec![[7; 32]],
                recent: Vec::new(),
            }],
        };
        msg::encode(&m).expect("encodes")
    }

    fn loads(outs: &[Output]) -> usize {
        outs.iter().filter(|o| matches!(o, Output::Load(_))).count()
    }

    #[test]
    fn a_manual_session_leaves_a_peers_offers_for_its_own_sync() {
        let index = SyncIndex::new();
        let mut manual = Session::new();
        let outs = manual.handle(&index, 0, Input::Received(offer()));
        assert_eq!(loads(&outs), 0, "nothing is fetched in manual mode");
        assert_eq!(manual.offers_waiting(), 1);
        // Its own sync takes them (reconciliation finds them anyway).
        manual.handle(&index, 1, Input::Start);
        assert_eq!(manual.offers_waiting(), 0);

        let mut live = Session::new();
        live.set_live(true);
        let outs = live.handle(&index, 0, Input::Received(offer()));
        assert_eq!(loads(&outs), 1, "a live session answers the offer");
    }

    #[test]
    fn a_hello_is_answered_and_the_offset_measured_over_the_round_trip() {
        let index = SyncIndex::new();
        let (mut a, mut b) = (Session::new(), Session::new());
        a.set_clock(1_000);
        let first = a.handle(&index, 0, Input::Hello);
        let Some(Output::Send(hello)) = first.into_iter().next() else {
            panic!("no hello sent");
        };
        // b's clock is 5 s ahead; the message takes 10 ms each way.
        b.set_clock(6_010);
        let answer = b.handle(&index, 0, Input::Received(hello));
        let bytes: Vec<Vec<u8>> = answer
            .into_iter()
            .filter_map(|o| match o {
                Output::Send(b) => Some(b),
                _ => None,
            })
            .collect();
        a.set_clock(1_020);
        let mut sample = None;
        for m in bytes {
            for o in a.handle(&index, 0, Input::Received(m)) {
                if let Output::Notify(Notification::Clock(s)) = o {
                    sample = Some(s);
                }
            }
        }
        let s = sample.expect("measured");
        assert_eq!((s.offset_ms, s.rtt_ms), (5_000, 20));
    }
}
