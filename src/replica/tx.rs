//! Write transactions: every write goes through a [`Tx`], which stages new
//! automerge changes on documents taken out of the cache and, on commit, writes
//! them with one atomic storage batch.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::transaction::CommitOptions;
use automerge::{Automerge, ReadDoc};

use super::Inner;
use super::row::Row;
use super::watch::{ChangeEvent, ChangeKind};
use crate::conflict::mark::{Mark, WriteKind};
use crate::doc::{self, Edit};
use crate::error::{Error, Result};
use crate::hlc::HlcTime;
use crate::schema::{Collection, Schema};
use crate::sign::Seal;
use crate::store::{Batch, keys};
use crate::value::{Fields, Value};

pub(crate) mod ack;
mod cancel;
pub(crate) mod evaluate;
mod react;

/// The replica's mutable state, behind one mutex (writers serialize on it; the
/// flush that makes their writes durable happens outside it, see `durability`).
pub(crate) struct State {
    /// Cached documents, boxed: an `Automerge` is 3.5 KiB, and a hot write
    /// moves its document out of the cache, into the transaction and back.
    pub(crate) cache: lru::LruCache<(String, String), (Box<Automerge>, Row)>,
    pub(crate) hlc: crate::hlc::Hlc,
    /// The clock's high-water mark stored under `m:hlc`: the last time a
    /// commit used (after a restart the clock starts above it).
    pub(crate) hlc_stored: HlcTime,
    /// The sync index (built on first use, then kept up to date by commits).
    pub(crate) index: Option<crate::sync::SyncIndex>,
    /// The next pending-event number (stored under `m:evseq` by each commit
    /// that creates events).
    pub(crate) next_event: u64,
    /// Sync indexes narrowed to what both this replica and one peer (by
    /// actor) may read (built on first use; kept up to date by commits;
    /// dropped when the rights change).
    pub(crate) scoped: HashMap<Vec<u8>, crate::sync::SyncIndex>,
    /// Buffers the last transaction emptied, kept for the next one.
    pub(crate) spare: Spare,
}

/// What one transaction leaves for the next: its emptied staging buffers, and
/// how many pending events it made. Batches of the same size follow each
/// other, and allocating these afresh (a staged entry is ~0.5 KiB, an event
/// ~0.2 KiB) cost a hot batched update about 2% (`cargo bench --bench
/// hot_update_costs`).
#[derive(Default)]
pub(crate) struct Spare {
    staged: Vec<Staged>,
    index: HashMap<(String, String), usize>,
    events: usize,
}

/// What a write did, returned by each write call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Written {
    /// The record's collection.
    pub collection: String,
    /// The record's id (generated for [`Tx::create`]).
    pub id: String,
    /// The record's heads after the write.
    pub heads: Vec<automerge::ChangeHash>,
    /// The HLC time of the write's change.
    pub time: HlcTime,
}

struct Staged {
    collection: String,
    id: String,
    doc: Box<Automerge>,
    row: Row,
    /// The document's heads when staged: what this transaction's changes follow.
    base_heads: Vec<automerge::ChangeHash>,
    /// Replace the stored log with one snapshot (new records and imports: saving
    /// a fresh document is cheaper than extracting its change).
    rewrite: bool,
    /// Whether this transaction changed the record.
    dirty: bool,
    /// How many changes this transaction made to the record.
    changes: u32,
    /// How many of them this replica wrote (not received from a peer).
    local: u32,
    kind: ChangeKind,
    /// Data merged into the document was refused: write nothing for this
    /// record and drop the document rather than caching it.
    discard: bool,
    /// Bytes that load this (new) document exactly, stored instead of a fresh
    /// `save` (a complete document received from a peer).
    verbatim: Option<Vec<u8>>,
    /// Not kept in the cache after commit (records arriving in bulk from a peer
    /// would evict the application's working set).
    uncached: bool,
    /// Whether the record was deleted when staged (a commit that deletes it
    /// records when, for purging).
    was_deleted: bool,
    /// Staged only to recompute its visible state (its parent changed, or a
    /// verdict or decision about it arrived): the log is not touched.
    reeval: bool,
    /// What the conflict step compares against: the stored state of a record
    /// that existed when staged.
    before: Option<evaluate::Before>,
    /// The visible fields when staged, kept only for collections with
    /// reactions (which fire on a change of a watched field).
    before_fields: Option<Fields>,
    /// Hashes of this transaction's own changes to the record (listed as
    /// not sealed yet at commit).
    own: Vec<[u8; 32]>,
    /// Verified changes from peers: which seal signs each, and the seals.
    sealed: Sealed,
}

impl Staged {
    fn written(&self) -> Written {
        Written {
            collection: self.collection.clone(),
            id: self.id.clone(),
            heads: self.row.heads(),
            time: self.row.modified,
        }
    }
}

/// A write transaction over several records: all its writes become durable
/// together or none do. Made by [`Replica::transaction`](crate::Replica::transaction).
///
/// If the closure returns an error (or a write in it fails), nothing is written
/// and the in-memory state is as before.
pub struct Tx<'r> {
    pub(crate) inner: &'r Inner,
    state: &'r mut State,
    schema: Arc<Schema>,
    staged: Vec<Staged>,
    index: HashMap<(String, String), usize>,
    /// Records whose unreadable stored data an import replaces.
    purge_on_commit: Vec<(String, String)>,
    /// Whether fieldsync itself is writing (system collections are writable
    /// only then).
    pub(crate) system: bool,
    /// Whether a verdict record is staged.
    staged_verdicts: bool,
    /// The entry a resolution change resolves and the decision (set by
    /// `Replica::resolve`; both go into the change's mark).
    pub(crate) resolving: Option<(String, String)>,
    /// Keys the conflict evaluation writes (`None` deletes) with the batch.
    pub(crate) extra: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Conflict list changes to publish after commit.
    pub(crate) conflict_events: Vec<crate::conflict::ConflictEvent>,
    /// Per staged record, the writes and events of its latest evaluation.
    #[allow(clippy::type_complexity)]
    record_ops: HashMap<
        usize,
        (
            Vec<(Vec<u8>, Option<Vec<u8>>)>,
            Vec<crate::conflict::ConflictEvent>,
        ),
    >,
    /// Per staged record, the entries of its latest evaluation (non-empty only).
    pub(crate) entries_of: HashMap<usize, Vec<crate::conflict::Entry>>,
    /// The pending events this transaction's changes create.
    pub(crate) new_events: Vec<crate::pending::PendingEvent>,
    /// Set while writing a compensating change: the event it cancels (such a
    /// change creates no event of its own and may move a status back).
    pub(crate) cancels: Option<u64>,
    /// The peer (its key) whose sync session brought the changes this
    /// transaction applies, when known (for change events).
    pub(crate) from_peer: Option<Vec<u8>>,
    /// Whether the reaction step queued jobs for programs.
    pub(crate) queued_jobs: bool,
}

/// What a commit wrote, to publish once durable.
#[derive(Default)]
pub(crate) struct Committed {
    pub(crate) changes: Vec<ChangeEvent>,
    pub(crate) conflicts: Vec<crate::conflict::ConflictEvent>,
    pub(crate) new_events: Vec<crate::pending::PendingEvent>,
    /// The set of authorities changed: every record judged against it is
    /// evaluated again.
    pub(crate) authorities_changed: bool,
}

/// A snapshot at most this large stays inline in the record's row (4 KiB);
/// larger documents keep theirs under an `s:` key so a write does not rewrite it.
pub(crate) const INLINE_SNAPSHOT_MAX: usize = 4 << 10;

/// A document whose snapshot is at most this large is saved whole on every
/// write (1 KiB): for small documents `save` costs less than extracting the
/// change, and a snapshot loads several times faster than a snapshot plus
/// appended changes (figures in docs/benchmarks.md).
pub(crate) const REWRITE_BELOW: u32 = 1 << 10;

/// A log larger than this is compacted whatever its frame count (64 KiB).
pub(crate) const MAX_LOG_BYTES: usize = 64 << 10;

/// Whether the next write to `row` compacts its log into a snapshot rather than
/// appending: always for small documents ([`REWRITE_BELOW`]); otherwise once the
/// log would pass `compact_after` frames, [`MAX_LOG_BYTES`], or half the
/// snapshot's size in appended changes (which bounds how much slower a load
/// gets than loading the snapshot alone).
fn compacts(row: &Row, compact_after: u32) -> bool {
    let inline_snapshot = if row.external_snapshot {
        0
    } else {
        row.snapshot_bytes as usize + 4
    };
    let appended = row.log.len().saturating_sub(inline_snapshot);
    row.snapshot_bytes <= REWRITE_BELOW
        || row.frames + 1 > compact_after
        || row.log.len() > MAX_LOG_BYTES
        || appended * 2 >= row.snapshot_bytes as usize
}

/// The most a record's fields may hold: 4 MiB (text and list contents; a
/// number counts 8 bytes). A write or import that would make a record larger
/// fails with [`Error::TooLarge`] and writes nothing. Databases of the same
/// kind have such a limit too (CouchDB 8 MB, Couchbase 20 MB, Ditto 5 MB,
/// Firestore 1 MiB): keep large files outside records and store a reference.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// The most a record's saved automerge document, history included, may take:
/// 7 MiB, so that it always travels whole in one sync message (8 MiB, with
/// room for its seals). A write that would pass it fails with
/// [`Error::TooLarge`]. Only a merge of concurrent large writes can pass it;
/// such a record is kept and readable, and every sync that cannot send it
/// names it (`sync::RecordIssue`).
pub const MAX_DOCUMENT_BYTES: usize = 7 << 20;

/// Records received from peers are refused when their fields take more than
/// this (16 MiB): a peer that does not keep the write limit cannot make a
/// record here that is too large to read back. Merges of two versions each
/// within [`MAX_RECORD_BYTES`] may pass it a little and are kept.
pub(crate) const MAX_RECEIVED_FIELDS: usize = 4 * MAX_RECORD_BYTES;

/// Fail with [`Error::TooLarge`] if `fields` alone are over the limit.
fn check_fields_size(collection: &str, id: &str, fields: &Fields) -> Result<()> {
    let bytes = crate::value::fields_size(fields);
    if bytes > MAX_RECORD_BYTES {
        return Err(Error::TooLarge {
            collection: collection.to_owned(),
            id: id.to_owned(),
            bytes,
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(())
}

/// Fail with [`Error::TooLarge`] if a record this transaction wrote is over
/// the limits: its fields ([`MAX_RECORD_BYTES`]), or its stored document
/// ([`MAX_DOCUMENT_BYTES`]: the snapshot and the changes appended since, which
/// a fresh save never exceeds; saved again only when that estimate is over).
fn check_record_size(collection: &str, id: &str, row: &Row, doc: &Automerge) -> Result<()> {
    check_fields_size(collection, id, &row.fields)?;
    let stored = if row.external_snapshot {
        row.snapshot_bytes as usize + row.log.len()
    } else {
        row.log.len()
    };
    if stored > MAX_DOCUMENT_BYTES {
        let bytes = doc.save().len();
        if bytes > MAX_DOCUMENT_BYTES {
            return Err(Error::TooLarge {
                collection: collection.to_owned(),
                id: id.to_owned(),
                bytes,
                limit: MAX_DOCUMENT_BYTES,
            });
        }
    }
    Ok(())
}

/// Check a record id: 1 to 256 bytes, no control characters.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > 256 {
        return bad("it is longer than 256 bytes");
    }
    if id.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

impl<'r> Tx<'r> {
    pub(crate) fn new(inner: &'r Inner, state: &'r mut State) -> Self {
        let schema = inner.schema();
        let spare = std::mem::take(&mut state.spare);
        Self {
            inner,
            state,
            schema,
            staged: spare.staged,
            index: spare.index,
            purge_on_commit: Vec::new(),
            system: false,
            staged_verdicts: false,
            resolving: None,
            extra: Vec::new(),
            conflict_events: Vec::new(),
            record_ops: HashMap::new(),
            entries_of: HashMap::new(),
            new_events: Vec::with_capacity(spare.events),
            cancels: None,
            from_peer: None,
            queued_jobs: false,
        }
    }

    /// Refuse the application's writes to fieldsync's own collections.
    fn writable(&self, collection: &str) -> Result<()> {
        if collection.starts_with('_') && !self.system {
            return Err(crate::schema::SchemaError::InvalidName {
                what: "collection",
                name: collection.to_owned(),
                reason: "it is a system collection, written by fieldsync only",
            }
            .into());
        }
        Ok(())
    }

    /// The staged entry for a record, loading it from cache or store; `None` if the
    /// record does not exist.
    fn entry(&mut self, collection: &str, id: &str) -> Result<Option<usize>> {
        let key = (collection.to_owned(), id.to_owned());
        if let Some(&i) = self.index.get(&key) {
            return Ok(Some(i));
        }
        let loaded = match self.state.cache.pop(&key) {
            Some(hit) => Some(hit),
            None => self
                .inner
                .load(collection, id)?
                .map(|(doc, row)| (Box::new(doc), row)),
        };
        Ok(loaded.map(|(doc, row)| self.stage(key, doc, row, ChangeKind::Update)))
    }

    fn stage(
        &mut self,
        key: (String, String),
        doc: Box<Automerge>,
        row: Row,
        kind: ChangeKind,
    ) -> usize {
        let i = self.staged.len();
        let before =
            (kind == ChangeKind::Update).then(|| evaluate::Before::of(&self.schema, &key.0, &row));
        if key.0 == crate::schema::VERDICTS {
            self.staged_verdicts = true;
        }
        let before_fields = (kind == ChangeKind::Update && self.inner.has_reactions(&key.0))
            .then(|| row.fields.clone());
        self.staged.push(Staged {
            before,
            before_fields,
            collection: key.0.clone(),
            id: key.1.clone(),
            base_heads: row.heads(),
            was_deleted: row.deleted,
            doc,
            row,
            rewrite: false,
            dirty: false,
            changes: 0,
            local: 0,
            kind,
            discard: false,
            verbatim: None,
            uncached: false,
            reeval: false,
            own: Vec::new(),
            sealed: Sealed::default(),
        });
        self.index.insert(key, i);
        i
    }

    fn now(&mut self) -> HlcTime {
        let wall = (self.inner.config.clock)();
        self.state.hlc.tick(wall)
    }

    /// Apply `write` to the staged document `i` as one automerge change.
    fn change(
        &mut self,
        i: usize,
        c: &Collection,
        kind: WriteKind,
        write: impl FnOnce(&mut Edit<'_, '_>) -> Result<()>,
    ) -> Result<Written> {
        let time = self.now();
        let validators = self.inner.validators_of(&c.name);
        let s = &mut self.staged[i];
        let status = c
            .settings
            .lifecycle
            .as_ref()
            .and_then(|l| s.row.fields.get(&l.field).cloned());
        let mut mark = Mark::new(kind);
        mark.base_status = status.as_ref().and_then(|v| v.as_str().map(str::to_owned));
        let compensating = self.cancels.is_some();
        let mut tx = s.doc.transaction();
        let mut edit = Edit {
            tx: &mut tx,
            collection: c,
            mark,
            status_before: match kind {
                WriteKind::Update if !compensating => Some(status),
                _ => None,
            },
        };
        if let Err(e) = write(&mut edit) {
            tx.rollback();
            return Err(e);
        }
        let mut mark = edit.mark;
        if let (WriteKind::Resolve, Some((entry, decision))) = (kind, &self.resolving) {
            mark.entry = Some(entry.clone());
            mark.decision = Some(decision.clone());
        }
        // A member that knows its rights may not write beyond them (one that
        // does not know them yet writes, and an authority judges); rules and
        // validators check application records. Both read the fields once.
        let rights = self.inner.rights()?;
        let me = self.inner.actor.to_bytes();
        let check_rights = !self.system && rights.enforced() && rights.member(me).is_some();
        let check_rules = kind != WriteKind::Delete
            && !c.name.starts_with('_')
            && (!c.settings.rules.is_empty() || !validators.is_empty());
        if check_rights || check_rules {
            let (fields, _) = doc::read_fields(&tx, c).map_err(|e| Error::Corrupt {
                collection: c.name.clone(),
                id: s.id.clone(),
                reason: e.0,
            })?;
            if check_rights && !rights.can_write(me, &c.name, &fields) {
                tx.rollback();
                return Err(Error::Forbidden {
                    reason: format!(
                        "this member may not write this record of collection `{}`",
                        c.name
                    ),
                });
            }
            if check_rules {
                let mut violations = c.violations(&fields);
                for v in &validators {
                    violations.extend(v(&fields));
                }
                if !violations.is_empty() {
                    tx.rollback();
                    return Err(Error::Invalid {
                        collection: c.name.clone(),
                        id: s.id.clone(),
                        violations,
                    });
                }
            }
        }
        // Every local write of an application record is a pending event (an
        // authority's own writes are confirmed as they are made).
        let event =
            (!compensating && !c.name.starts_with('_') && self.inner.events_on()).then(|| {
                let n = self.state.next_event;
                self.state.next_event += 1;
                n
            });
        mark.event = event;
        mark.cancels = self.cancels;
        let message = mark.encode();
        let options = |m: String| {
            CommitOptions::default()
                .with_time(time.to_change_time())
                .with_message(m)
        };
        let (mut hash, _) = tx.commit_with(options(message));
        if hash.is_none() && kind == WriteKind::Resolve {
            // A decision that changes no value (dismissing a rejection,
            // keeping what shows) is still a change of the record: the
            // decision travels in it.
            hash = Some(s.doc.empty_commit(options(mark.encode())));
        }
        if let (Some(h), Some(n)) = (hash, event) {
            self.new_events.push(crate::pending::PendingEvent {
                id: n,
                collection: c.name.clone(),
                record: s.id.clone(),
                kind: match kind {
                    WriteKind::Insert => crate::pending::EventKind::Insert,
                    WriteKind::Delete => crate::pending::EventKind::Delete,
                    WriteKind::Update | WriteKind::Resolve => crate::pending::EventKind::Update,
                },
                change: crate::sign::hex(&h.0),
                time,
                status: crate::pending::EventStatus::Pending,
                errors: Vec::new(),
                parent: None,
                linked: None,
                decided_by: None,
            });
        }
        if let Some(h) = hash {
            if self.inner.config.signed {
                s.own.push(h.0);
            }
            s.dirty = true;
            s.changes += 1;
            s.local += 1;
            s.row.modified = time;
            s.row.author = self.inner.actor.to_bytes().to_vec();
            s.row.heads = s.doc.get_heads().iter().map(|h| h.0).collect();
        }
        Ok(s.written())
    }

    /// Create a record with the id `id`.
    ///
    /// Fails with [`Error::AlreadyExists`] if the id is taken (also by a deleted
    /// record), and with a [`SchemaError`](crate::schema::SchemaError) if the fields
    /// do not fit the collection.
    pub fn insert(&mut self, collection: &str, id: &str, fields: Fields) -> Result<Written> {
        self.writable(collection)?;
        let schema = self.schema.clone();
        let c = schema.collection(collection)?;
        validate_id(id)?;
        check_fields_size(collection, id, &fields)?;
        let fields = c.check_insert(&fields)?;
        if self.entry(collection, id)?.is_some() {
            return Err(Error::AlreadyExists {
                collection: collection.to_owned(),
                id: id.to_owned(),
            });
        }
        self.insert_fresh(c, id, fields)
    }

    /// Insert checked `fields` as a new document, replacing whatever is
    /// stored for the id (nothing, or an unreadable record).
    fn insert_fresh(&mut self, c: &Collection, id: &str, fields: Fields) -> Result<Written> {
        let collection = c.name.as_str();
        self.refuse_purged(collection, id)?;
        let doc = Box::new(Automerge::new().with_actor(self.inner.actor.clone()));
        let row = Row::default();
        let i = self.stage(
            (collection.to_owned(), id.to_owned()),
            doc,
            row,
            ChangeKind::Insert,
        );
        self.staged[i].rewrite = true;
        match self.change(i, c, WriteKind::Insert, |e| e.write_checked(&fields)) {
            Ok(w) => {
                self.staged[i].row.fields = fields;
                Ok(w)
            }
            Err(e) => {
                // The record was never stored: forget it, so a caller that goes on
                // after this error can insert the id again and nothing caches it.
                if let Some(s) = self.staged.pop() {
                    self.index.remove(&(s.collection, s.id));
                }
                Err(e)
            }
        }
    }

    /// Create a record with a generated, time-ordered id (see
    /// [`Replica::create`](crate::Replica::create)); returns the id.
    pub fn create(&mut self, collection: &str, fields: Fields) -> Result<Written> {
        let t = self.now();
        let id = super::generated_id(t, &self.inner.actor);
        self.insert(collection, &id, fields)
    }

    /// Whether a record with this id exists (deleted or not).
    pub(crate) fn exists(&mut self, collection: &str, id: &str) -> Result<bool> {
        Ok(self.entry(collection, id)?.is_some())
    }

    /// The staged entry of an existing record (deleted or not).
    fn existing(&mut self, collection: &str, id: &str) -> Result<usize> {
        validate_id(id)?;
        self.entry(collection, id)?.ok_or_else(|| Error::NotFound {
            collection: collection.to_owned(),
            id: id.to_owned(),
        })
    }

    /// The staged entry of an existing, live record.
    fn live(&mut self, collection: &str, id: &str) -> Result<usize> {
        let i = self.existing(collection, id)?;
        if self.staged[i].row.deleted {
            return Err(Error::Deleted {
                collection: collection.to_owned(),
                id: id.to_owned(),
            });
        }
        Ok(i)
    }

    /// Change some fields of a record (a patch: fields not named keep their
    /// values; `Value::Null` removes an optional field).
    pub fn update(&mut self, collection: &str, id: &str, patch: Fields) -> Result<Written> {
        self.writable(collection)?;
        let schema = self.schema.clone();
        let c = schema.collection(collection)?;
        check_fields_size(collection, id, &patch)?;
        let patch = c.check_patch(&patch)?;
        let i = self.live(collection, id)?;
        let w = self.change(i, c, WriteKind::Update, |e| e.write_checked(&patch))?;
        let row = &mut self.staged[i].row;
        for (k, v) in patch {
            match v {
                Value::Null => row.fields.remove(&k),
                v => row.fields.insert(k, v),
            };
        }
        Ok(w)
    }

    /// Edit a record with a closure (counters, text and list edits that merge with
    /// concurrent ones); see [`Edit`].
    pub fn update_with(
        &mut self,
        collection: &str,
        id: &str,
        f: impl FnOnce(&mut Edit<'_, '_>) -> Result<()>,
    ) -> Result<Written> {
        self.writable(collection)?;
        let schema = self.schema.clone();
        let c = schema.collection(collection)?;
        let i = self.live(collection, id)?;
        let w = self.change(i, c, WriteKind::Update, f)?;
        let s = &mut self.staged[i];
        let (fields, _) = doc::read_fields(&*s.doc, c).map_err(|e| Error::Corrupt {
            collection: collection.to_owned(),
            id: id.to_owned(),
            reason: e.0,
        })?;
        s.row.fields = fields;
        Ok(w)
    }

    /// A change of a kind other than a plain update (a person's resolution),
    /// on a record that exists, deleted or not.
    pub(crate) fn resolution_change(
        &mut self,
        collection: &str,
        id: &str,
        kind: WriteKind,
        f: impl FnOnce(&mut Edit<'_, '_>) -> Result<()>,
    ) -> Result<Written> {
        let schema = self.schema.clone();
        let c = schema.collection(collection)?;
        let i = self.existing(collection, id)?;
        let w = self.change(i, c, kind, f)?;
        let s = &mut self.staged[i];
        let (fields, deleted) = doc::read_fields(&*s.doc, c).map_err(|e| Error::Corrupt {
            collection: collection.to_owned(),
            id: id.to_owned(),
            reason: e.0,
        })?;
        s.row.fields = fields;
        s.row.deleted = deleted;
        Ok(w)
    }

    /// Delete a record: a tombstone change that replicates; the record stays
    /// readable with `meta.deleted` set, and its id stays taken. Deleting a deleted
    /// record changes nothing.
    pub fn delete(&mut self, collection: &str, id: &str) -> Result<Written> {
        self.writable(collection)?;
        let schema = self.schema.clone();
        let c = schema.collection(collection)?;
        let i = self.existing(collection, id)?;
        if self.staged[i].row.deleted {
            return Ok(self.staged[i].written());
        }
        let w = self.change(i, c, WriteKind::Delete, |e| {
            doc::write_tombstone(e.tx, e.collection)
        })?;
        let s = &mut self.staged[i];
        s.row.deleted = true;
        s.kind = ChangeKind::Delete;
        Ok(w)
    }

    /// The staged entry of a record about to receive outside data (an import,
    /// a peer's changes); a record whose stored data is unreadable counts as
    /// absent and is replaced on commit.
    fn entry_or_replace(&mut self, c: &Collection, id: &str) -> Result<Option<usize>> {
        match self.entry(&c.name, id) {
            Err(Error::Corrupt { reason, .. }) => {
                tracing::warn!(collection = %c.name, id, %reason, "replacing a corrupt record with outside data");
                self.purge_on_commit.push((c.name.clone(), id.to_owned()));
                Ok(None)
            }
            other => other,
        }
    }

    /// Import a document made elsewhere (an export, plain automerge, automerge
    /// JS). Its changes are not signed by members, so peers would refuse them:
    /// its content is taken instead, as this replica's own signed change (an
    /// insert, or an update to the values of the record merged with it when
    /// it shares history with the record, else to the document's values; a
    /// deletion if it is deleted). Its history is not kept.
    pub(crate) fn import_doc(
        &mut self,
        c: &Collection,
        id: &str,
        incoming: Automerge,
    ) -> Result<Written> {
        self.writable(&c.name)?;
        let import_err = |reason: String| Error::Import {
            collection: c.name.clone(),
            reason,
        };
        let existing = self.entry_or_replace(c, id)?;
        let mut target = incoming;
        let mut current = None;
        if let Some(i) = existing {
            let s = &self.staged[i];
            current = Some((s.row.fields.clone(), s.row.deleted));
            // A later version of this record (an export edited elsewhere)
            // merges with it; an unrelated document's values win.
            let shares = target
                .get_changes_meta(&[])
                .iter()
                .any(|m| s.doc.get_change_meta_by_hash(&m.hash).is_some());
            if shares {
                let mut merged = s.doc.fork();
                merged
                    .merge(&mut target)
                    .map_err(|e| import_err(e.to_string()))?;
                target = merged;
            }
        }
        let (fields, deleted) = doc::read_fields(&target, c).map_err(|e| import_err(e.0))?;
        // The same limit as any write, checked before anything is staged.
        check_fields_size(&c.name, id, &fields)?;
        match current {
            None => {
                let fields = c.check_insert(&fields)?;
                let w = self.insert_fresh(c, id, fields)?;
                if deleted {
                    self.delete(&c.name, id)
                } else {
                    Ok(w)
                }
            }
            Some((_, true)) if !deleted => Err(Error::Deleted {
                collection: c.name.clone(),
                id: id.to_owned(),
            }),
            Some((_, true)) => self.existing(&c.name, id).map(|i| self.staged[i].written()),
            Some((_, false)) if deleted => self.delete(&c.name, id),
            Some((now, false)) => {
                let mut patch: Fields = fields
                    .iter()
                    .filter(|(k, v)| now.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for k in now.keys().filter(|k| !fields.contains_key(*k)) {
                    patch.insert(k.clone(), Value::Null);
                }
                if patch.is_empty() {
                    let i = self.existing(&c.name, id)?;
                    return Ok(self.staged[i].written());
                }
                self.update(&c.name, id, patch)
            }
        }
    }

    /// Fail with [`Error::Purged`] if the record was purged (checked only when
    /// the store holds purge markers at all).
    fn refuse_purged(&self, collection: &str, id: &str) -> Result<()> {
        if self
            .inner
            .has_purged
            .load(std::sync::atomic::Ordering::Relaxed)
            && self
                .inner
                .storage
                .get(&keys::purged(collection, id))?
                .is_some()
        {
            return Err(Error::Purged {
                collection: collection.to_owned(),
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Merge automerge data received from a peer into a record (creating it if
    /// new). Returns whether the record changed. On error nothing of this record
    /// is written, and the rest of the transaction is unaffected.
    pub(crate) fn apply_remote(
        &mut self,
        c: &Collection,
        id: &str,
        bytes: &[u8],
        seals: &[Arc<Seal>],
        decoded: Option<std::result::Result<Decoded, String>>,
    ) -> Result<bool> {
        let refuse = |reason: String| Error::Import {
            collection: c.name.clone(),
            reason,
        };
        let existing = self.entry_or_replace(c, id)?;
        let i = match existing {
            Some(i) => {
                let s = &mut self.staged[i];
                let before = s.doc.get_heads();
                if let Err(e) = s.doc.load_incremental(bytes) {
                    s.discard = true;
                    return Err(refuse(format!("not automerge data: {e}")));
                }
                if s.doc.get_heads() == before {
                    return Ok(false);
                }
                // Every change new here must come from a member in good
                // standing, and be signed by its author.
                let verifier = self.inner.verifier();
                let checked = incoming_checks(
                    &s.doc,
                    &before,
                    &c.name,
                    &*self.inner.rights()?,
                    verifier,
                    seals,
                )
                .and_then(|sealed| {
                    if let Some(v) = verifier {
                        sealed.verify_each(v)?;
                    }
                    Ok(sealed)
                });
                match checked {
                    Ok(sealed) => s.sealed.extend(sealed),
                    Err(e) => {
                        s.discard = true;
                        return Err(e);
                    }
                }
                s.verbatim = None;
                s.uncached = false;
                // Appended as the changes after the heads the row had.
                s.changes = s.changes.saturating_add(2);
                i
            }
            None => {
                self.refuse_purged(&c.name, id)?;
                let Decoded {
                    mut doc,
                    fields,
                    deleted,
                    complete,
                    sealed,
                } = decoded
                    .unwrap_or_else(|| {
                        let rights = self.inner.rights().map_err(|e| e.to_string())?;
                        decode_new(c, bytes, seals, self.inner.verifier(), &rights)
                    })
                    .map_err(refuse)?;
                doc.set_actor(self.inner.actor.clone());
                // A complete document is stored as received: it loads to the
                // same heads, so saving it again would only cost time.
                let verbatim = complete.then(|| bytes.to_vec());
                let row = Row {
                    fields,
                    deleted,
                    ..Row::default()
                };
                let i = self.stage(
                    (c.name.clone(), id.to_owned()),
                    Box::new(doc),
                    row,
                    ChangeKind::Remote,
                );
                let s = &mut self.staged[i];
                s.rewrite = true;
                s.verbatim = verbatim;
                s.uncached = true;
                s.sealed = sealed;
                // New here: if it arrives deleted, it became deleted here now.
                s.was_deleted = false;
                i
            }
        };
        let wall = (self.inner.config.clock)();
        let s = &mut self.staged[i];
        if !s.uncached {
            match doc::read_fields(&*s.doc, c) {
                Ok((fields, deleted)) => {
                    s.row.fields = fields;
                    s.row.deleted = deleted;
                }
                Err(e) => {
                    s.discard = true;
                    return Err(refuse(e.0));
                }
            }
        }
        // A peer that does not keep the size limit cannot make a record here
        // that could not be read back.
        let bytes = crate::value::fields_size(&s.row.fields);
        if bytes > MAX_RECEIVED_FIELDS {
            s.discard = true;
            return Err(Error::TooLarge {
                collection: c.name.clone(),
                id: id.to_owned(),
                bytes,
                limit: MAX_RECEIVED_FIELDS,
            });
        }
        s.row.set_meta_from(&s.doc);
        s.dirty = true;
        if s.kind == ChangeKind::Update {
            s.kind = ChangeKind::Remote;
        }
        self.state
            .hlc
            .observe_bounded(s.row.modified, wall, super::MAX_CLOCK_DRIFT_MS);
        Ok(true)
    }

    /// Write everything staged with one atomic batch and put the documents back
    /// in the cache.
    ///
    /// Each changed record either appends this transaction's change to its log
    /// as one frame, or is compacted into one snapshot (see [`compacts`]). A
    /// snapshot stays inline when it is at most [`INLINE_SNAPSHOT_MAX`] bytes and
    /// goes under the `s:` key otherwise.
    ///
    /// Returns `None` if the transaction changed nothing (nothing was written, no
    /// durability wait is needed), else the events to publish once durable (empty
    /// when nobody watches).
    pub(crate) fn commit(mut self) -> Result<Option<Committed>> {
        self.evaluate(0)?;
        if let Some(first) = self.react()? {
            self.evaluate(first)?;
        }
        self.acknowledge()?;
        let mut batch = Batch::new();
        let new_events = std::mem::take(&mut self.new_events);
        self.state.spare.events = new_events.len().min(SPARE_MAX);
        // The transaction's events in one value (a key per event cost as
        // much as the rest of a batched update).
        if let Some(first) = new_events.first() {
            batch.put(
                keys::event(first.id),
                super::pending::encode_events(&new_events)?,
            );
        }
        if !new_events.is_empty() {
            batch.put(
                keys::EVENT_SEQ.to_vec(),
                self.state.next_event.to_be_bytes().to_vec(),
            );
        }
        let mut touches_entries = false;
        for (k, v) in std::mem::take(&mut self.extra) {
            touches_entries |= k.starts_with(keys::CONFLICTS);
            batch.write(k, v);
        }
        for (c, id) in &self.purge_on_commit {
            batch.delete(keys::snapshot(c, id));
        }
        let listed_unsealed = self.list_own(&mut batch);
        // Seals to store: those not stored yet (a cached seal is stored).
        let mut stored_seals: Vec<Arc<Seal>> = Vec::new();
        for s in self.staged.iter().filter(|s| s.dirty && !s.discard) {
            for seal in &s.sealed.seals {
                if !self.inner.seal_cached(seal.id()) {
                    push_unique(&mut stored_seals, seal);
                }
            }
        }
        for seal in &stored_seals {
            batch.put(keys::seal(seal.id()), seal.as_bytes().to_vec());
        }
        let threshold = self.inner.config.compact_after;
        let mut touched = false;
        // One local time for every record this commit deletes (see `purge`).
        let mut deleted_at = None;
        for s in self.staged.iter_mut() {
            if !s.dirty || s.discard {
                continue;
            }
            touched = true;
            let (c, id) = (&s.collection, &s.id);
            if s.row.deleted && !s.was_deleted {
                let t = *deleted_at.get_or_insert_with(|| {
                    let wall = (self.inner.config.clock)();
                    self.state.hlc.tick(wall)
                });
                batch.put(keys::tombstone(t.as_u64(), c, id), Vec::new());
            }
            if s.reeval && s.changes == 0 && !s.rewrite {
                // Only the visible state changed: the log stays as it is.
            } else if s.rewrite || compacts(&s.row, threshold) {
                let snapshot = match s.verbatim.take() {
                    Some(bytes) if s.changes == 0 => bytes,
                    _ => s.doc.save(),
                };
                s.row.snapshot_bytes = u32::try_from(snapshot.len()).unwrap_or(u32::MAX);
                if snapshot.len() <= INLINE_SNAPSHOT_MAX {
                    if s.row.external_snapshot {
                        batch.delete(keys::snapshot(c, id));
                    }
                    s.row.external_snapshot = false;
                    s.row.reset_log(Some(&snapshot));
                } else {
                    batch.put(keys::snapshot(c, id), snapshot);
                    s.row.external_snapshot = true;
                    s.row.reset_log(None);
                }
            } else {
                // One change (the usual case) is cheapest to take as it is;
                // several are encoded together after the heads they follow.
                let one = (s.changes == 1)
                    .then(|| s.doc.get_last_local_change())
                    .flatten()
                    .map(|mut c| c.bytes().into_owned());
                let changes = one.unwrap_or_else(|| s.doc.save_after(&s.base_heads));
                s.row.push_frame(&changes);
            }
            if s.local > 0 && !c.starts_with('_') {
                check_record_size(c, id, &s.row, &s.doc)?;
            }
            for (h, sid) in &s.sealed.entries {
                batch.put(keys::signature(c, id, h), sid.to_vec());
            }
            let row = s.row.encode().map_err(|e| Error::Corrupt {
                collection: c.clone(),
                id: id.clone(),
                reason: e.to_string(),
            })?;
            batch.put(keys::row(c, id), row);
        }
        if !touched {
            self.return_to_cache(false);
            return Ok(None);
        }
        let conflict_events = std::mem::take(&mut self.conflict_events);
        // Statuses may have moved: an acknowledgement arrived or entries
        // changed (a new event is pending, nothing to derive).
        let acks = self.staged.iter().any(|s| {
            s.dirty && (s.collection == crate::schema::ACKS || s.collection == crate::schema::HELD)
        });
        if touches_entries {
            self.inner.invalidate_gate();
        }
        if acks || !conflict_events.is_empty() {
            self.inner
                .pending_stale
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // The clock's high-water mark goes in the same batch, so a restart
        // never reissues a time. It is the last time issued, never a time
        // ahead of it: a stamp is max(wall clock, last + 1), so no stamp runs
        // ahead of real time because of this mark (an earlier release stored
        // a lease 10 s ahead, and every new process stamped from there).
        let last = self.state.hlc.last();
        let mark = (last > self.state.hlc_stored).then_some(last);
        if let Some(t) = mark {
            batch.put(keys::HLC.to_vec(), t.as_u64().to_be_bytes().to_vec());
        }
        let membership = self.staged.iter().any(|s| {
            s.dirty
                && !s.discard
                && (s.collection == crate::rights::MEMBERS || s.collection == crate::rights::ROLES)
        });
        self.inner.storage.apply(batch)?;
        if listed_unsealed {
            self.inner
                .unsealed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.inner.cache_seals(stored_seals);
        if self.queued_jobs {
            self.inner.jobs_waiting.notify();
        }
        let mut authorities_changed = false;
        if membership {
            let before = self.inner.authorities();
            self.inner.invalidate_rights();
            authorities_changed = self.inner.authorities() != before;
            self.state.scoped.clear();
            self.inner
                .pending_stale
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if self.staged_verdicts {
            self.inner
                .has_verdicts
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(t) = mark {
            self.state.hlc_stored = t;
        }
        let changes = self.return_to_cache(true);
        Ok(Some(Committed {
            changes,
            conflicts: conflict_events,
            new_events,
            authorities_changed,
        }))
    }

    /// List this transaction's own changes as not sealed yet (`u:`, in the
    /// commit's batch; sealed before they leave the replica, see
    /// [`crate::Replica::seal_pending`]). Returns whether it listed any.
    fn list_own(&mut self, batch: &mut Batch) -> bool {
        // One `u:` entry for the whole transaction (keyed by its first
        // change): one more key per commit, not one per record.
        let mut first = None;
        let mut list = vec![keys::UNSEALED_LIST];
        for s in self.staged.iter_mut().filter(|s| s.dirty && !s.discard) {
            for h in std::mem::take(&mut s.own) {
                first.get_or_insert(h);
                let sig = keys::signature(&s.collection, &s.id, &h);
                list.extend_from_slice(&h);
                list.extend_from_slice(&u32::try_from(sig.len()).unwrap_or(u32::MAX).to_be_bytes());
                list.extend_from_slice(&sig);
            }
        }
        match first {
            Some(h) => {
                batch.put(keys::unsealed(&h), list);
                true
            }
            None => false,
        }
    }

    fn return_to_cache(mut self, committed: bool) -> Vec<ChangeEvent> {
        let mut staged = std::mem::take(&mut self.staged);
        let mut events = Vec::new();
        // Events are only built when someone watches.
        let watched = self.inner.events.receiver_count() > 0;
        let mut unkept = Vec::new();
        // The scoped sync indexes follow the commit (rights read once).
        let scoped_rights = match (committed, self.state.scoped.is_empty()) {
            (true, false) => match self.inner.rights() {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the rights; scoped sync indexes dropped");
                    self.state.scoped.clear();
                    None
                }
            },
            _ => None,
        };
        for s in staged.drain(..) {
            if s.discard {
                continue;
            }
            if committed
                && s.dirty
                && let Some(index) = self.state.index.as_mut()
            {
                index.upsert(&s.collection, &s.id, &s.row.heads);
            }
            if committed
                && s.dirty
                && let Some(rights) = &scoped_rights
            {
                let me = self.inner.actor.to_bytes();
                let mine = rights.offers(me, &s.collection, &s.row.fields);
                for (peer, index) in self.state.scoped.iter_mut() {
                    if mine && rights.can_read(peer, &s.collection, &s.row.fields) {
                        index.upsert(&s.collection, &s.id, &s.row.heads);
                    } else {
                        index.remove(&s.collection, &s.id);
                    }
                }
            }
            if committed && s.dirty && watched {
                let kind = if s.reeval && s.changes == 0 && s.kind == ChangeKind::Update {
                    ChangeKind::Reevaluated
                } else {
                    s.kind
                };
                let peer = (kind == ChangeKind::Remote)
                    .then(|| self.from_peer.as_deref().and_then(crate::member::member_id))
                    .flatten();
                events.push(ChangeEvent {
                    collection: s.collection.clone(),
                    id: s.id.clone(),
                    kind,
                    heads: s.row.heads(),
                    modified: s.row.modified,
                    peer,
                });
            }
            if !(s.uncached && s.changes == 0) {
                self.state.cache.put((s.collection, s.id), (s.doc, s.row));
            } else {
                unkept.push(s.doc);
            }
        }
        // Freeing a loaded document costs 6.4 µs (`cargo bench --bench
        // costs`): the many documents of a received message are freed on
        // another thread, off the path that applies the next message.
        if unkept.len() >= DROP_ELSEWHERE {
            std::thread::spawn(move || drop(unkept));
        }
        // Buffers of ordinary batches are kept; a huge one's are freed.
        // (`commit` has set the events hint.)
        if staged.capacity() <= SPARE_MAX {
            self.index.clear();
            self.state.spare.staged = staged;
            self.state.spare.index = std::mem::take(&mut self.index);
        }
        events
    }
}

/// Check that a document's keys fit a collection, and that required fields are
/// present (unless it is deleted).
pub(crate) fn check_importable(c: &Collection, doc: &Automerge) -> std::result::Result<(), String> {
    importable_fields(c, doc).map(|_| ())
}

/// The most staged records (and pending events) whose buffers a transaction
/// keeps for the next one.
const SPARE_MAX: usize = 1024;

/// From this many documents freed at once, they are freed on another thread.
const DROP_ELSEWHERE: usize = 32;

/// A record received from a peer, decoded and checked before its transaction
/// (so that several can be decoded at once on several threads).
pub(crate) struct Decoded {
    doc: Automerge,
    fields: Fields,
    deleted: bool,
    /// Whether the bytes hold the whole history (no missing dependency).
    complete: bool,
    /// Which seal signs each of its changes, and the seals (verified, once
    /// the checks are made).
    pub(crate) sealed: Sealed,
}

/// The proof that changes received from a peer are signed: the seal of each
/// change, and the distinct seals.
#[derive(Debug, Default)]
pub(crate) struct Sealed {
    /// Change hash → the id of the seal that lists it.
    pub(crate) entries: Vec<([u8; 32], [u8; 32])>,
    /// The seals those ids name (each once).
    pub(crate) seals: Vec<Arc<Seal>>,
}

/// Add `seal` to `seals` unless a seal with its id is there (a record or a
/// commit needs few seals: a scan beats hashing).
fn push_unique(seals: &mut Vec<Arc<Seal>>, seal: &Arc<Seal>) {
    if !seals.iter().any(|s| s.id() == seal.id()) {
        seals.push(seal.clone());
    }
}

impl Sealed {
    fn add(&mut self, hash: [u8; 32], seal: &Arc<Seal>) {
        self.entries.push((hash, *seal.id()));
        push_unique(&mut self.seals, seal);
    }

    fn extend(&mut self, other: Sealed) {
        self.entries.extend(other.entries);
        for seal in &other.seals {
            push_unique(&mut self.seals, seal);
        }
    }

    /// Verify each seal's signature (cached by the verifier); the error names
    /// a change of the first seal that fails.
    pub(crate) fn verify_each(&self, v: &crate::sign::Verifier) -> Result<()> {
        for seal in &self.seals {
            if !v.verify(seal) {
                let hash = self
                    .entries
                    .iter()
                    .find(|(_, sid)| sid == seal.id())
                    .map_or([0; 32], |(h, _)| *h);
                let (hash, actor) = (crate::sign::hex(&hash), crate::sign::hex(seal.actor()));
                return Err(crate::sign::SignError::Invalid { hash, actor }.into());
            }
        }
        Ok(())
    }
}

/// Decode the bytes of a record this replica does not have yet, and verify
/// that each of its changes is signed by its author (`seals`, as received).
pub(crate) fn decode_new(
    c: &Collection,
    bytes: &[u8],
    seals: &[Arc<Seal>],
    verifier: Option<&crate::sign::Verifier>,
    rights: &crate::rights::Rights,
) -> std::result::Result<Decoded, String> {
    let d = decode_unverified(c, bytes, seals, verifier, rights)?;
    if let Some(v) = verifier {
        d.sealed.verify_each(v).map_err(|e| e.to_string())?;
    }
    Ok(d)
}

/// [`decode_new`] without checking the seals' signatures (the membership and
/// which seal signs each change are checked): several records' seals are
/// verified in one batch.
pub(crate) fn decode_unverified(
    c: &Collection,
    bytes: &[u8],
    seals: &[Arc<Seal>],
    verifier: Option<&crate::sign::Verifier>,
    rights: &crate::rights::Rights,
) -> std::result::Result<Decoded, String> {
    let mut doc = Automerge::new();
    doc.load_incremental(bytes)
        .map_err(|e| format!("not automerge data: {e}"))?;
    if doc.get_heads().is_empty() {
        return Err("no complete change (its dependencies are missing)".into());
    }
    let sealed =
        incoming_checks(&doc, &[], &c.name, rights, verifier, seals).map_err(|e| e.to_string())?;
    let (fields, deleted) = importable_fields(c, &doc)?;
    let complete = doc.get_missing_deps(&[]).is_empty();
    Ok(Decoded {
        doc,
        fields,
        deleted,
        complete,
        sealed,
    })
}

/// Check every change of `doc` after `before` in one pass: the group's
/// membership must admit it (see [`crate::rights::Rights::admit`]), and, with
/// a `verifier`, its actor must be a key and a seal of that actor that came
/// with it (`received`) must list it. The seals' signatures are left to check
/// ([`Sealed::verify_each`], or in a batch).
pub(crate) fn incoming_checks(
    doc: &Automerge,
    before: &[automerge::ChangeHash],
    collection: &str,
    rights: &crate::rights::Rights,
    verifier: Option<&crate::sign::Verifier>,
    received: &[Arc<Seal>],
) -> Result<Sealed> {
    let enforced = rights.enforced();
    let mut out = Sealed::default();
    if !enforced && verifier.is_none() {
        return Ok(out);
    }
    for m in doc.get_changes_meta(before) {
        if enforced {
            let t = crate::conflict::change_time(m.timestamp).as_u64();
            rights.admit(m.actor.to_bytes(), collection, t)?;
        }
        let Some(v) = verifier else {
            continue;
        };
        let hash = m.hash.0;
        let actor = m.actor.to_bytes();
        let names = || (m.hash.to_string(), m.actor.to_hex_string());
        if v.key(actor).is_none() {
            let (hash, actor) = names();
            return Err(crate::sign::SignError::NotAKey { hash, actor }.into());
        }
        let seal = received
            .iter()
            .find(|s| s.actor().as_slice() == actor && s.contains(&hash));
        match seal {
            Some(seal) => out.add(hash, seal),
            None => {
                let (hash, actor) = names();
                return Err(crate::sign::SignError::Missing { hash, actor }.into());
            }
        }
    }
    Ok(out)
}

/// [`check_importable`], returning the fields and deleted flag it read.
fn importable_fields(
    c: &Collection,
    doc: &Automerge,
) -> std::result::Result<(Fields, bool), String> {
    let (fields, deleted) = doc::read_fields(doc, c).map_err(|e| e.0)?;
    if !deleted
        && let Some(f) = c
            .fields
            .iter()
            .find(|f| f.required && f.default.is_none() && !fields.contains_key(&f.name))
    {
        return Err(format!("required field `{}` ({}) is missing", f.name, f.ty));
    }
    if doc.get_heads().is_empty() {
        return Err("the document has no changes".into());
    }
    Ok((fields, deleted))
}
