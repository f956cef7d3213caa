//! The [`Replica`] handle: the application's way into a store.

mod clock;
mod conflicts;
mod durability;
mod gate;
mod group;
mod jobs;
pub(crate) mod members;
mod pending;
mod reactions;
mod row;
mod scan;
mod sync;
mod tx;
mod watch;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use automerge::{ActorId, Automerge};
use tokio::sync::broadcast;

pub use clock::PeerClock;
pub use conflicts::Validator;
pub use jobs::{MAX_ATTEMPTS as MAX_REACTION_ATTEMPTS, ReactionJob, ReactionRunner};
pub use members::{MemberInfo, Role};
pub use reactions::{Reaction, ReactionWrite, ReactionsFileError, Trigger, reactions_from_toml};
pub use row::{Meta, Record};
pub use scan::Scan;
pub use tx::{MAX_DOCUMENT_BYTES, MAX_RECORD_BYTES, Tx, Written};
pub use watch::{ChangeEvent, ChangeKind, Watch, WatchError, WatchFilter};

use crate::codec;
use crate::doc::Edit;
use crate::error::{Error, Result};
use crate::hlc::{Hlc, HlcTime};
use crate::schema::{Collection, Schema};
use crate::sign::Signer;
use crate::store::{MemoryStore, SledStore, Storage, keys};
use crate::value::{Fields, Value};
use durability::GroupCommit;
use row::Row;
use tx::{State, validate_id};

/// Remote times further ahead of the local wall clock than this are not taken
/// into the local HLC (one second): a peer whose clock runs ahead must not
/// push this replica's stamps ahead of real time. Causality between changes
/// of a record is in automerge's change graph, not in the times, and clock
/// offsets between peers are measured and corrected separately (see
/// `docs/conflicts.md`, "Clocks").
pub(crate) const MAX_CLOCK_DRIFT_MS: u64 = 1000;

const SCHEMA_TAG: u8 = b'S';

/// Seals kept in memory (at most 8 KiB each).
const SEAL_CACHE: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(1024) {
    Some(n) => n,
    None => unreachable!(),
};
/// Version 2 added the collections' conflict settings (version 1 is still read).
const SCHEMA_VERSION: u8 = 2;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Settings of a [`Replica`]; `Config::default()` suits most apps.
#[derive(Clone)]
#[must_use]
pub struct Config {
    schema: Option<Schema>,
    cache_docs: NonZeroUsize,
    compact_after: u32,
    durable_writes: bool,
    store_cache_bytes: u64,
    watch_capacity: usize,
    clock: Clock,
    conflicts: bool,
    pending: bool,
    signed: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("schema", &self.schema)
            .field("cache_docs", &self.cache_docs)
            .field("compact_after", &self.compact_after)
            .field("durable_writes", &self.durable_writes)
            .field("store_cache_bytes", &self.store_cache_bytes)
            .field("watch_capacity", &self.watch_capacity)
            .field("conflicts", &self.conflicts)
            .field("pending", &self.pending)
            .field("signed", &self.signed)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            schema: None,
            cache_docs: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            compact_after: 16,
            durable_writes: true,
            store_cache_bytes: 64 << 20,
            watch_capacity: 1024,
            clock: Arc::new(system_clock),
            conflicts: true,
            pending: true,
            signed: true,
        }
    }
}

impl Config {
    /// Collections to declare at open (merged with the stored schema; see
    /// [`Schema::define`] for what may change).
    pub fn with_schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// How many automerge documents to keep loaded (default 1024; at least 1).
    pub fn with_cache_docs(mut self, n: usize) -> Self {
        self.cache_docs = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        self
    }

    /// After how many appended changes a record is compacted into one snapshot
    /// (default 16; 0 or 1 means a snapshot on every write). Shorter logs load faster
    /// from disk; longer ones save less often.
    pub fn with_compact_after(mut self, n: u32) -> Self {
        self.compact_after = n;
        self
    }

    /// Whether a write call waits until its write is on disk (default `true`).
    /// With `false`, writes are flushed by the store in the background (sled: every
    /// 500 ms) or by [`Replica::flush`], and a crash can lose the last ones: only
    /// for bulk loads that can be redone.
    pub fn with_durable_writes(mut self, durable: bool) -> Self {
        self.durable_writes = durable;
        self
    }

    /// The sled page cache bound in bytes (default 64 MiB).
    pub fn with_store_cache_bytes(mut self, bytes: u64) -> Self {
        self.store_cache_bytes = bytes;
        self
    }

    /// How many change events a slow watcher may fall behind before it is told it
    /// lagged (default 1024).
    pub fn with_watch_capacity(mut self, n: usize) -> Self {
        self.watch_capacity = n.max(1);
        self
    }

    /// Whether conflict detection runs (default `true`). With `false`, records
    /// show automerge's merge as is, no entry is listed and no authority
    /// judges anything: plain CRDT semantics, and the baseline of the conflict
    /// benchmark. Every replica of a group must use the same setting.
    pub fn with_conflicts(mut self, on: bool) -> Self {
        self.conflicts = on;
        self
    }

    /// Whether local writes are tracked as pending events and, on an
    /// authority, acknowledged to their devices (default on; see
    /// [`Replica::pending`]).
    pub fn with_pending_events(mut self, on: bool) -> Self {
        self.pending = on;
        self
    }

    /// Whether changes are signed and peers' changes verified (default on;
    /// see [`crate::sign`]). Off exists only to measure what signing costs
    /// (the baseline of `fieldsync bench signing`): such a replica signs
    /// nothing, so every signing peer refuses its changes, and it accepts
    /// anything, forged changes included.
    pub fn with_signed_changes(mut self, on: bool) -> Self {
        self.signed = on;
        self
    }

    /// The wall clock used for HLC times (default: the system clock). Tests pass a
    /// fixed or stepped clock.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

pub(crate) struct Inner {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) config: Config,
    pub(crate) actor: ActorId,
    schema: RwLock<Arc<Schema>>,
    state: Mutex<State>,
    commits: GroupCommit,
    events: broadcast::Sender<ChangeEvent>,
    conflict_events: broadcast::Sender<crate::conflict::ConflictEvent>,
    /// The actors of the group's authorities (from the replicated members;
    /// recomputed with the rights).
    authorities: RwLock<Arc<std::collections::HashSet<ActorId>>>,
    /// Validation closures by collection.
    validators: RwLock<std::collections::HashMap<String, Vec<Validator>>>,
    /// Whether the store holds any purge marker (inserts check for one only then).
    pub(crate) has_purged: std::sync::atomic::AtomicBool,
    /// Whether the store holds any verdict (records are looked up for theirs
    /// only then).
    pub(crate) has_verdicts: std::sync::atomic::AtomicBool,
    /// Whether pending events' statuses may have moved since they were last
    /// derived.
    pub(crate) pending_stale: std::sync::atomic::AtomicBool,
    /// When the last derivation of pending statuses ended and how long it
    /// took (derivations after a commit are spaced by that, see
    /// [`Replica::refresh_pending_soon`]).
    pub(crate) pending_pace: std::sync::Mutex<Option<(std::time::Instant, std::time::Duration)>>,
    pending_events: broadcast::Sender<crate::pending::StatusChange>,
    /// Reactions by collection.
    reactions: RwLock<std::collections::HashMap<String, Vec<reactions::Registered>>>,
    /// Wakes the reaction runner when a commit queues jobs.
    pub(crate) jobs_waiting: jobs::Signal,
    /// The sync gate: collections whose local changes are held back, with
    /// the open entries that hold them (`None`: to be computed again).
    gate: RwLock<Option<gate::Gate>>,
    /// Signs this replica's changes (its public key is `actor`).
    pub(crate) signer: Signer,
    /// Verifies peers' changes.
    pub(crate) verifier: crate::sign::Verifier,
    /// Stored seals recently read or written (a seal covers up to
    /// [`crate::sign::SEAL_MAX`] changes, so it is wanted again and again
    /// while their records are sent or received).
    pub(crate) seals: std::sync::Mutex<lru::LruCache<[u8; 32], Arc<crate::sign::Seal>>>,
    /// Whether this replica may have own changes not sealed yet (`u:`).
    pub(crate) unsealed: std::sync::atomic::AtomicBool,
    /// Held while sealing them (one sealer at a time).
    pub(crate) sealing: std::sync::Mutex<()>,
    /// The group's rights (`None`: to be read again).
    rights: RwLock<Option<Arc<crate::rights::Rights>>>,
}

impl Inner {
    /// The verifier, unless signatures are off (the benchmark's baseline).
    pub(crate) fn verifier(&self) -> Option<&crate::sign::Verifier> {
        self.config.signed.then_some(&self.verifier)
    }
}

impl Inner {
    pub(crate) fn schema(&self) -> Arc<Schema> {
        self.schema
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a caller's closure poisons the lock, but the state stays
        // consistent: staged documents are only put back into the cache on commit.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn corrupt(collection: &str, id: &str, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            collection: collection.to_owned(),
            id: id.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn read_row(&self, collection: &str, id: &str) -> Result<Option<Row>> {
        match self.storage.get(&keys::row(collection, id))? {
            None => Ok(None),
            Some(bytes) => Row::decode(&bytes)
                .map(Some)
                .map_err(|e| Self::corrupt(collection, id, e.to_string())),
        }
    }

    /// Load a record's document from the store: the snapshot (inline or under its
    /// `s:` key) plus the appended changes, checked against the heads its row
    /// records.
    pub(crate) fn load(&self, collection: &str, id: &str) -> Result<Option<(Automerge, Row)>> {
        let Some(bytes) = self.storage.get(&keys::row(collection, id))? else {
            return Ok(None);
        };
        let corrupt = |reason: String| Self::corrupt(collection, id, reason);
        let row = Row::decode_with_log(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let mut data = if row.external_snapshot {
            self.storage
                .get(&keys::snapshot(collection, id))?
                .ok_or_else(|| corrupt("its snapshot is missing".into()))?
        } else {
            Vec::new()
        };
        row.append_unframed_log(&mut data).map_err(corrupt)?;
        if data.is_empty() {
            return Err(corrupt("no automerge data is stored".into()));
        }
        let mut doc = Automerge::load(&data).map_err(|e| corrupt(e.to_string()))?;
        if doc.get_heads() != row.heads() {
            return Err(corrupt(
                "the stored changes do not end at the heads its row records".into(),
            ));
        }
        doc.set_actor(self.actor.clone());
        Ok(Some((doc, row)))
    }
}

/// A replica: one store of records, and the handle the application uses.
///
/// Cheap to clone (an `Arc`); `Send + Sync`, so clones can be used from any
/// thread. Calls block on storage (and write calls on an fsync): from async code,
/// call them inside `tokio::task::spawn_blocking`.
///
/// ```
/// use fieldsync::{Config, Replica, Value, fields, schema::{Collection, FieldType}};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), Config::default())?;
/// replica.define_collection(
///     Collection::builder("task").required("title", FieldType::String).build()?,
/// )?;
/// let id = replica.create("task", fields([("title", Value::from("Check pump"))]))?.id;
/// let task = replica.get("task", &id)?.expect("just written");
/// assert_eq!(task.fields["title"], Value::from("Check pump"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("actor", &self.inner.actor)
            .finish_non_exhaustive()
    }
}

/// The generated id for a record created at `t` by `actor`: 16 hex digits of the
/// HLC time (so ids sort by creation time) and 12 of the actor id (so replicas
/// never collide).
pub(crate) fn generated_id(t: HlcTime, actor: &ActorId) -> String {
    let a = actor.to_hex_string();
    format!("{:016x}{}", t.as_u64(), &a[..a.len().min(12)])
}

impl Replica {
    /// Open (or create) the replica stored in directory `dir` (sled files in
    /// `dir/db`).
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::store::StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let store = SledStore::open(&dir.join("db"), config.store_cache_bytes)?;
        // The store's automerge actor is its identity's public key, so every
        // change can be traced to (and is signed by) the member that made it.
        // A store that exists keeps its key: a missing or unreadable key file
        // is an error, never replaced (a new key would be another member).
        let path = dir.join(crate::node::identity::FILE);
        let identity = |reason: String| Error::Identity {
            path: path.display().to_string(),
            reason,
        };
        let existing = store.get(keys::ACTOR)?;
        let loaded = crate::node::identity::load(dir).map_err(|e| match e {
            crate::node::NodeError::Identity { reason, .. } => identity(reason),
            other => identity(other.to_string()),
        })?;
        let key = match (loaded, &existing) {
            (Some(k), _) => k,
            (None, None) => {
                crate::node::identity::create(dir).map_err(|e| identity(e.to_string()))?
            }
            (None, Some(_)) => {
                return Err(identity(
                    "the file is missing, but this store was made with it: restore it from a backup of this store (a new key would make the store another member, whose changes its peers would not accept as this store's)".into(),
                ));
            }
        };
        let ed = key
            .try_into_ed25519()
            .map_err(|_| identity("it holds a key that is not ed25519".into()))?;
        let signer = signer_of(&ed);
        match existing {
            None => {
                store.put(keys::ACTOR, &signer.public())?;
                store.flush()?;
            }
            Some(actor) if actor.as_slice() != signer.public().as_slice() => {
                return Err(identity(format!(
                    "it holds the key of member {}, but this store belongs to member {}: put back this store's own identity file",
                    crate::member::member_id(&signer.public()).unwrap_or_default(),
                    crate::member::member_id(&actor).unwrap_or_else(|| crate::sign::hex(&actor)),
                )));
            }
            Some(_) => {}
        }
        let r = Self::open_with(Arc::new(store), config, Some(signer))?;
        r.migrate_legacy_members()?;
        Ok(r)
    }

    /// The libp2p identity of this replica's node: its signing key, so that
    /// its peer id names the member whose key signs its changes.
    pub(crate) fn node_keypair(&self) -> libp2p::identity::Keypair {
        let mut secret = self.inner.signer.secret();
        match libp2p::identity::Keypair::ed25519_from_bytes(&mut secret) {
            Ok(k) => k,
            // 32 bytes are always an ed25519 secret key.
            Err(_) => libp2p::identity::Keypair::generate_ed25519(),
        }
    }

    /// A replica in memory (for tests and simulations).
    pub fn in_memory(config: Config) -> Result<Self> {
        Self::with_storage(Arc::new(MemoryStore::new()), config)
    }

    /// A replica on any [`Storage`] (a clone of a [`MemoryStore`] reopens the same
    /// data). Opening reads only the replica's metadata, never its records.
    ///
    /// Its signing key is kept in the store (`m:sign`), made with the store;
    /// [`Replica::open`] keeps it in the identity file instead.
    pub fn with_storage(storage: Arc<dyn Storage>, config: Config) -> Result<Self> {
        Self::open_with(storage, config, None)
    }

    fn open_with(
        storage: Arc<dyn Storage>,
        config: Config,
        signer: Option<Signer>,
    ) -> Result<Self> {
        let bad_key = |message: String| Error::Metadata {
            key: "m:sign",
            source: codec::CodecError::Malformed {
                what: "signing key",
                message,
            },
        };
        let signer = match signer {
            Some(s) => s,
            None => match (storage.get(keys::SIGNING_KEY)?, storage.get(keys::ACTOR)?) {
                (Some(secret), _) => {
                    let secret: [u8; 32] = secret
                        .as_slice()
                        .try_into()
                        .map_err(|_| bad_key(format!("{} bytes, expected 32", secret.len())))?;
                    Signer::from_secret(&secret)
                }
                (None, None) => {
                    let s = new_signer();
                    storage.put(keys::SIGNING_KEY, &s.secret())?;
                    storage.put(keys::ACTOR, &s.public())?;
                    storage.flush()?;
                    s
                }
                (None, Some(_)) => {
                    return Err(bad_key(
                        "the store has an actor but no signing key (made before changes were signed)"
                            .into(),
                    ));
                }
            },
        };
        let actor = match storage.get(keys::ACTOR)? {
            Some(bytes) if bytes.as_slice() == signer.public().as_slice() => {
                ActorId::from(bytes.as_slice())
            }
            _ => {
                return Err(bad_key(
                    "the store's actor is not its signing key's public key".into(),
                ));
            }
        };
        let last = match storage.get(keys::HLC)? {
            Some(b) => {
                let arr: [u8; 8] = b.as_slice().try_into().map_err(|_| Error::Metadata {
                    key: "m:hlc",
                    source: codec::CodecError::Malformed {
                        what: "clock",
                        message: format!("{} bytes, expected 8", b.len()),
                    },
                })?;
                HlcTime::from_u64(u64::from_be_bytes(arr))
            }
            None => HlcTime::default(),
        };
        let mut schema: Schema = match storage.get(keys::SCHEMA)? {
            Some(b) => match codec::decode("schema", SCHEMA_TAG, SCHEMA_VERSION, &b) {
                Err(codec::CodecError::UnsupportedVersion { found: 1, .. }) => {
                    codec::decode::<crate::schema::SchemaV1>("schema", SCHEMA_TAG, 1, &b)
                        .map(Schema::from)
                }
                other => other,
            }
            .map_err(|source| Error::Metadata {
                key: "m:schema",
                source,
            })?,
            None => Schema::new(),
        };
        if let Some(declared) = &config.schema
            && schema.merge(declared)?
        {
            Self::store_schema(&*storage, &schema)?;
        }
        let (events, _) = broadcast::channel(config.watch_capacity);
        let (conflict_events, _) = broadcast::channel(config.watch_capacity);
        let mut has_verdicts = false;
        storage.for_each_prefix(&keys::rows_of(crate::schema::VERDICTS), &mut |_, _| {
            has_verdicts = true;
            false
        })?;
        let next_event = match storage.get(keys::EVENT_SEQ)? {
            Some(b) => {
                u64::from_be_bytes(b.as_slice().try_into().map_err(|_| Error::Metadata {
                    key: "m:evseq",
                    source: codec::CodecError::Malformed {
                        what: "event number",
                        message: format!("{} bytes, expected 8", b.len()),
                    },
                })?)
            }
            None => 1,
        };
        let (pending_events, _) = broadcast::channel(config.watch_capacity);
        let mut has_purged = false;
        storage.for_each_prefix(keys::PURGED, &mut |_, _| {
            has_purged = true;
            false
        })?;
        let mut unsealed = false;
        storage.for_each_prefix(keys::UNSEALED, &mut |_, _| {
            unsealed = true;
            false
        })?;
        let state = State {
            cache: lru::LruCache::new(config.cache_docs),
            hlc: Hlc::starting_after(last),
            hlc_stored: last,
            index: None,
            next_event,
            scoped: std::collections::HashMap::new(),
            spare: tx::Spare::default(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                actor,
                schema: RwLock::new(Arc::new(schema)),
                state: Mutex::new(state),
                commits: GroupCommit::default(),
                events,
                conflict_events,
                authorities: RwLock::new(Arc::new(std::collections::HashSet::new())),
                validators: RwLock::new(std::collections::HashMap::new()),
                has_purged: std::sync::atomic::AtomicBool::new(has_purged),
                has_verdicts: std::sync::atomic::AtomicBool::new(has_verdicts),
                pending_stale: std::sync::atomic::AtomicBool::new(true),
                pending_pace: std::sync::Mutex::new(None),
                pending_events,
                reactions: RwLock::new(std::collections::HashMap::new()),
                jobs_waiting: jobs::Signal::default(),
                gate: RwLock::new(None),
                signer,
                verifier: crate::sign::Verifier::default(),
                seals: std::sync::Mutex::new(lru::LruCache::new(SEAL_CACHE)),
                unsealed: std::sync::atomic::AtomicBool::new(unsealed),
                sealing: std::sync::Mutex::new(()),
                rights: RwLock::new(None),
                config,
            }),
        })
    }

    fn store_schema(storage: &dyn Storage, schema: &Schema) -> Result<()> {
        let bytes =
            codec::encode("schema", SCHEMA_TAG, SCHEMA_VERSION, schema).map_err(|source| {
                Error::Metadata {
                    key: "m:schema",
                    source,
                }
            })?;
        storage.put(keys::SCHEMA, &bytes)?;
        storage.flush()?;
        Ok(())
    }

    /// This replica's automerge actor id (every change it makes carries it).
    pub fn actor(&self) -> &ActorId {
        &self.inner.actor
    }

    /// This replica's member id: the peer id (`12D3KooW…`) people read and
    /// type in every command, derived from the same ed25519 key as
    /// [`Replica::actor`]. For a replica whose actor is not a key (opened
    /// with a custom actor), the actor's hex.
    pub fn member_id(&self) -> String {
        let actor = self.inner.actor.to_bytes();
        crate::member::member_id(actor).unwrap_or_else(|| crate::sign::hex(actor))
    }

    /// The current schema.
    pub fn schema(&self) -> Arc<Schema> {
        self.inner.schema()
    }

    /// Declare a collection (or a compatible new version of one: the same fields
    /// plus optional or defaulted new ones). Durable when it returns.
    pub fn define_collection(&self, collection: Collection) -> Result<()> {
        let mut guard = self.inner.schema.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**guard).clone();
        if next.define(collection)? {
            Self::store_schema(&*self.inner.storage, &next)?;
            *guard = Arc::new(next);
            self.inner.invalidate_gate();
        }
        Ok(())
    }

    /// Run `f` as one transaction: all its writes become durable together when
    /// this returns `Ok`, or none is written if `f` (or any write) fails.
    ///
    /// Writers serialize on the replica while their closure runs, so keep it short
    /// and free of IO; the flush that makes a transaction durable is shared with
    /// concurrent writers (group commit).
    pub fn transaction<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let (out, events, ticket) = {
            let mut state = self.inner.state();
            let mut tx = Tx::new(&self.inner, &mut state);
            let out = f(&mut tx)?;
            let written = tx.commit()?;
            let ticket = written.is_some().then(|| self.inner.commits.applied());
            (out, written.unwrap_or_default(), ticket)
        };
        if let Some(ticket) = ticket
            && self.inner.config.durable_writes
        {
            self.inner.commits.wait(&*self.inner.storage, ticket)?;
        }
        for e in events.changes {
            // No receiver is not an error: nobody is watching.
            let _ = self.inner.events.send(e);
        }
        for e in events.conflicts {
            let _ = self.inner.conflict_events.send(e);
        }
        for e in events.new_events {
            let _ = self
                .inner
                .pending_events
                .send(crate::pending::StatusChange {
                    event: e,
                    from: None,
                });
        }
        if events.authorities_changed
            && let Err(e) = self.reevaluate_judged()
        {
            tracing::warn!(error = %e, "could not evaluate records again after the authorities changed");
        }
        self.refresh_pending_soon();
        Ok(out)
    }

    /// Evaluate again, in one transaction, every record whose evaluation
    /// depends on who is an authority: those with conflict entries or with
    /// verdicts (entries name their sides by role, and only authorities'
    /// verdicts count).
    fn reevaluate_judged(&self) -> Result<()> {
        let mut records: Vec<(String, String)> = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::CONFLICT_INDEX, &mut |_, v| {
                if let Some(nul) = v.iter().position(|b| *b == 0) {
                    records.push((
                        String::from_utf8_lossy(&v[..nul]).into_owned(),
                        String::from_utf8_lossy(&v[nul + 1..]).into_owned(),
                    ));
                }
                true
            })?;
        for v in self.list(crate::schema::VERDICTS)? {
            let text = |k: &str| v.fields.get(k).and_then(Value::as_str).map(str::to_owned);
            if let (Some(c), Some(id)) = (text("collection"), text("record")) {
                records.push((c, id));
            }
        }
        records.sort();
        records.dedup();
        let schema = self.schema();
        records.retain(|(c, id)| schema.collection(c).is_ok() && validate_id(id).is_ok());
        if records.is_empty() {
            return Ok(());
        }
        self.transaction(|tx| {
            for (c, id) in &records {
                tx.reevaluate(c, id)?;
            }
            Ok(())
        })
    }

    /// Create a record with the id `id`; see [`Tx::insert`].
    pub fn insert(&self, collection: &str, id: &str, fields: Fields) -> Result<Written> {
        self.transaction(|tx| tx.insert(collection, id, fields))
    }

    /// Create a record with a generated, time-ordered id (returned in
    /// [`Written::id`]).
    pub fn create(&self, collection: &str, fields: Fields) -> Result<Written> {
        self.transaction(|tx| tx.create(collection, fields))
    }

    /// Change some fields of a record; see [`Tx::update`].
    pub fn update(&self, collection: &str, id: &str, patch: Fields) -> Result<Written> {
        self.transaction(|tx| tx.update(collection, id, patch))
    }

    /// Edit a record with a closure (counters, text, lists); see [`Edit`].
    pub fn update_with(
        &self,
        collection: &str,
        id: &str,
        f: impl FnOnce(&mut Edit<'_, '_>) -> Result<()>,
    ) -> Result<Written> {
        self.transaction(|tx| tx.update_with(collection, id, f))
    }

    /// Delete (tombstone) a record; see [`Tx::delete`].
    pub fn delete(&self, collection: &str, id: &str) -> Result<Written> {
        self.transaction(|tx| tx.delete(collection, id))
    }

    /// Read a record (also a deleted one: check `meta.deleted`). `Ok(None)` if no
    /// record has this id; [`Error::Corrupt`] if its stored row is unreadable.
    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Record>> {
        self.schema().collection(collection)?;
        validate_id(id)?;
        Ok(self
            .inner
            .read_row(collection, id)?
            .map(|row| row.into_record(collection, id)))
    }

    /// Every live record of a collection, in id order.
    pub fn list(&self, collection: &str) -> Result<Vec<Record>> {
        self.scan(&Scan::new(collection))
    }

    /// The records of a collection that pass the scan's filters, in id order.
    ///
    /// Reads stored rows only (no automerge document is loaded). A record whose
    /// row is unreadable is skipped with a warning in the log; [`Replica::verify`]
    /// lists such records.
    pub fn scan(&self, scan: &Scan) -> Result<Vec<Record>> {
        let schema = self.schema();
        let c = schema.collection(&scan.collection)?;
        for f in &scan.filters {
            f.check(c)?;
        }
        let mut out = Vec::new();
        if scan.limit == Some(0) {
            return Ok(out);
        }
        let mut skipped = 0usize;
        self.inner
            .storage
            .for_each_prefix(&keys::rows_of(&scan.collection), &mut |k, v| {
                let Some(id) = keys::id_of_row(&scan.collection, k) else {
                    return true;
                };
                let row = match Row::decode(v) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(collection = %scan.collection, id, error = %e, "skipping unreadable record");
                        return true;
                    }
                };
                if row.deleted && !scan.include_deleted {
                    return true;
                }
                if row.hidden.is_some() && !scan.include_rejected {
                    return true;
                }
                if !scan.filters.iter().all(|f| f.matches(&row.fields)) {
                    return true;
                }
                if skipped < scan.offset {
                    skipped += 1;
                    return true;
                }
                out.push(row.into_record(&scan.collection, id));
                scan.limit.is_none_or(|l| out.len() < l)
            })?;
        Ok(out)
    }

    /// Load every record of a collection fully (row and automerge data) and return
    /// the errors found, one per unreadable record. Slow: for diagnostics.
    pub fn verify(&self, collection: &str) -> Result<Vec<Error>> {
        self.schema().collection(collection)?;
        let mut ids = Vec::new();
        self.inner
            .storage
            .for_each_prefix(&keys::rows_of(collection), &mut |k, _| {
                if let Some(id) = keys::id_of_row(collection, k) {
                    ids.push(id.to_owned());
                }
                true
            })?;
        Ok(ids
            .iter()
            .filter_map(|id| self.inner.load(collection, id).err())
            .collect())
    }

    /// The record as automerge bytes (`Automerge::save`), readable by automerge's
    /// own tools (automerge JS's `Automerge.load`, for one).
    pub fn export(&self, collection: &str, id: &str) -> Result<Vec<u8>> {
        self.schema().collection(collection)?;
        self.with_doc(collection, id, |doc| Ok(doc.save()))
    }

    /// The seals that sign a record's changes (see [`crate::sign`]): what a
    /// peer needs, beside [`Replica::export`]'s bytes, to accept them
    /// ([`crate::sync::Incoming::seals`]).
    pub fn seals(&self, collection: &str, id: &str) -> Result<Vec<Arc<crate::sign::Seal>>> {
        self.schema().collection(collection)?;
        validate_id(id)?;
        self.inner.seal_pending()?;
        self.inner.seals_of(collection, id, None)
    }

    /// Seal this replica's changes that are not sealed yet; returns how many
    /// changes were sealed.
    ///
    /// A transaction's changes are signed when they first leave the replica
    /// (a sync's first load, [`Replica::seals`]), not when they are written,
    /// so that the writes made between two syncs share seals (one signature
    /// per 256 changes) however many transactions made them. Until then they
    /// are listed under `u:` in the store, written in the same batch as the
    /// change, so a crash loses nothing. Calling this is never needed; it
    /// moves the signing cost to a moment of the application's choosing.
    pub fn seal_pending(&self) -> Result<usize> {
        self.inner.seal_pending()
    }

    /// Run `f` on a record's document, from the cache or loaded into it.
    pub(crate) fn with_doc<R>(
        &self,
        collection: &str,
        id: &str,
        f: impl FnOnce(&Automerge) -> Result<R>,
    ) -> Result<R> {
        validate_id(id)?;
        let key = (collection.to_owned(), id.to_owned());
        let mut state = self.inner.state();
        if let Some((doc, _)) = state.cache.get(&key) {
            return f(doc);
        }
        let (doc, row) = self
            .inner
            .load(collection, id)?
            .ok_or_else(|| Error::NotFound {
                collection: collection.to_owned(),
                id: id.to_owned(),
            })?;
        let out = f(&doc);
        state.cache.put(key, (Box::new(doc), row));
        out
    }

    /// Import automerge bytes (a saved document, or saved changes) as the record
    /// `id`: a new record, or an update of the existing one. Its root keys must be
    /// fields of the collection with the declared types.
    ///
    /// Imported changes carry no member's signature, so the document's
    /// *content* is written as this replica's own signed change: an insert, or
    /// an update to the values of the record merged with the document when it
    /// shares history with the record (an export edited elsewhere), else to the
    /// document's values. Its history is not kept (see docs/security.md).
    pub fn import(&self, collection: &str, id: &str, bytes: &[u8]) -> Result<Written> {
        let schema = self.schema();
        let c = schema.collection(collection)?;
        validate_id(id)?;
        let import_err = |reason: String| Error::Import {
            collection: collection.to_owned(),
            reason,
        };
        let doc = Automerge::load(bytes)
            .map_err(|e| import_err(format!("not an automerge document: {e}")))?;
        tx::check_importable(c, &doc).map_err(import_err)?;
        self.transaction(|tx| tx.import_doc(c, id, doc))
    }

    /// Every value a field of a record holds: the value all replicas read first
    /// (automerge's deterministic winner), then the values written concurrently
    /// with it, until a later write replaces them all. Empty if the field is unset.
    pub fn concurrent_values(&self, collection: &str, id: &str, field: &str) -> Result<Vec<Value>> {
        let schema = self.schema();
        let c = schema.collection(collection)?;
        let f = c.field(field)?;
        self.with_doc(collection, id, |doc| {
            crate::doc::read_concurrent(doc, f).map_err(|e| Inner::corrupt(collection, id, e.0))
        })
    }

    /// Watch changes (after they are durable): all, one collection's, or one
    /// record's.
    pub fn watch(&self, filter: WatchFilter) -> Watch {
        Watch {
            rx: self.inner.events.subscribe(),
            filter,
        }
    }

    /// Make every write so far durable (useful with
    /// [`Config::with_durable_writes`]`(false)`).
    pub fn flush(&self) -> Result<()> {
        self.inner.commits.flush_all(&*self.inner.storage)?;
        Ok(())
    }

    /// How a record is stored: its change log and where its snapshot is. For
    /// diagnostics (compaction, sizes); `Ok(None)` if the record does not exist.
    pub fn storage_info(&self, collection: &str, id: &str) -> Result<Option<StorageInfo>> {
        self.schema().collection(collection)?;
        validate_id(id)?;
        let Some(bytes) = self.inner.storage.get(&keys::row(collection, id))? else {
            return Ok(None);
        };
        let row = Row::decode_with_log(&bytes)
            .map_err(|e| Inner::corrupt(collection, id, e.to_string()))?;
        let snapshot_bytes = if row.external_snapshot {
            self.inner
                .storage
                .get(&keys::snapshot(collection, id))?
                .map_or(0, |s| s.len())
        } else {
            0
        };
        Ok(Some(StorageInfo {
            row_bytes: bytes.len(),
            log_frames: row.frames,
            log_bytes: row.log.len(),
            external_snapshot_bytes: row.external_snapshot.then_some(snapshot_bytes),
        }))
    }

    /// The store's size on disk in bytes.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.storage.size_on_disk()?)
    }
}

/// How one record is stored, from [`Replica::storage_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageInfo {
    /// Size of the record's row (header and change log) in bytes.
    pub row_bytes: usize,
    /// Automerge chunks in the change log: the inline snapshot (if any) and the
    /// changes appended since it.
    pub log_frames: u32,
    /// Size of the change log in bytes.
    pub log_bytes: usize,
    /// The size of the snapshot kept under its own key, if the document is too
    /// large to keep inline.
    pub external_snapshot_bytes: Option<usize>,
}

/// The signer of a node identity's ed25519 key pair (the pure `sign` module
/// knows ed25519 keys, not libp2p's types).
fn signer_of(key: &libp2p::identity::ed25519::Keypair) -> Signer {
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&key.to_bytes()[..32]);
    Signer::from_secret(&secret)
}

/// A signer with a new random key.
pub(crate) fn new_signer() -> Signer {
    signer_of(&libp2p::identity::ed25519::Keypair::generate())
}
