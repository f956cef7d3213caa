//! The storage side of sync: the replica builds and maintains the sync index,
//! loads what a [`Session`] asks for, and applies what a peer sent, each as
//! plain calls that a shell (the simulator, the network node) makes.

use std::collections::VecDeque;

use automerge::{Automerge, ChangeHash};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::row::Row;
use super::tx::State;
use super::{Inner, Replica};
use crate::error::{Error, Result};
use crate::hlc::HlcTime;
use crate::store::{Batch, keys};
use crate::sync::Summary;

/// Fewer new records than this in one message are decoded on the calling
/// thread (threads cost more than they save).
const PARALLEL_DECODE_MIN: usize = 32;
use crate::sync::index::PURGED_HEAD;
use crate::sync::{
    ApplyFailure, Incoming, Input, Key, LoadRequest, Loaded, Notification, Output, Session,
    SyncIndex,
};

/// Changes to send larger than this are compared with the whole saved document,
/// and the smaller one is sent.
const COMPARE_WITH_SAVE_ABOVE: usize = 4 << 10;

impl Inner {
    /// Scan every row into a new sync index.
    fn build_index(&self) -> Result<SyncIndex> {
        let mut index = SyncIndex::new();
        let mut bad = 0usize;
        self.storage.for_each_prefix(keys::ROWS, &mut |k, v| {
            let Some((c, id)) = keys::split_row(k) else {
                return true;
            };
            match Row::decode_heads(v) {
                Ok(heads) => index.upsert(c, id, &heads),
                Err(e) => {
                    bad += 1;
                    tracing::warn!(collection = c, id, error = %e, "unreadable record left out of the sync index");
                }
            }
            true
        })?;
        if bad > 0 {
            tracing::warn!(records = bad, "records left out of the sync index");
        }
        self.storage.for_each_prefix(keys::PURGED, &mut |k, _| {
            if let Some((c, id)) = keys::split_purged(k) {
                index.upsert(c, id, &[PURGED_HEAD]);
            }
            true
        })?;
        Ok(index)
    }

    /// Whether both this replica and `peer` may read the record `key` (a
    /// purged or absent record: whether both read its collection unscoped).
    fn both_read(&self, peer: &[u8], rights: &crate::rights::Rights, key: &Key) -> Result<bool> {
        let fields = match self.read_row(&key.collection, &key.id) {
            Ok(Some(row)) => row.fields,
            Ok(None) => crate::Fields::new(),
            Err(_) => return Ok(false),
        };
        let me = self.actor.to_bytes();
        Ok(rights.offers(me, &key.collection, &fields)
            && rights.can_read(peer, &key.collection, &fields))
    }

    /// Scan every row into a sync index of the records both this replica and
    /// `peer` may read.
    fn build_scoped_index(&self, peer: &[u8], rights: &crate::rights::Rights) -> Result<SyncIndex> {
        let mut index = SyncIndex::new();
        let me = self.actor.to_bytes();
        self.storage.for_each_prefix(keys::ROWS, &mut |k, v| {
            let Some((c, id)) = keys::split_row(k) else {
                return true;
            };
            if let Ok(row) = Row::decode(v)
                && rights.offers(me, c, &row.fields)
                && rights.can_read(peer, c, &row.fields)
            {
                index.upsert(c, id, &row.heads);
            }
            true
        })?;
        let none = crate::Fields::new();
        self.storage.for_each_prefix(keys::PURGED, &mut |k, _| {
            if let Some((c, id)) = keys::split_purged(k)
                && rights.offers(me, c, &none)
                && rights.can_read(peer, c, &none)
            {
                index.upsert(c, id, &[PURGED_HEAD]);
            }
            true
        })?;
        Ok(index)
    }

    pub(crate) fn is_purged(&self, key: &Key) -> Result<bool> {
        Ok(self.has_purged.load(Ordering::Relaxed)
            && self
                .storage
                .get(&keys::purged(&key.collection, &key.id))?
                .is_some())
    }

    /// Purge records in one batch: delete their data and tombstone entry, keep a
    /// marker with their heads, and file them in the index as purged. The
    /// caller holds the state lock.
    fn purge_locked(&self, state: &mut State, records: &[(Key, Option<Vec<u8>>)]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        state.scoped.clear();
        let mut batch = Batch::new();
        let schema = self.schema();
        for (key, tombstone) in records {
            let (c, id) = (&key.collection, &key.id);
            let row = self.read_row(c, id).ok().flatten();
            let heads = row.as_ref().map(|r| r.heads.concat()).unwrap_or_default();
            // Its conflict entries and the references it made go with it.
            if let (Some(r), Ok(coll)) = (&row, schema.collection(c)) {
                for (_, t, p) in super::tx::evaluate::refs_of(coll, &r.fields) {
                    batch.delete(keys::referrer(&t, &p, c, id));
                }
            }
            self.storage
                .for_each_prefix(&keys::conflicts_of(c, id), &mut |k, _| {
                    let entry = &k[keys::conflicts_of(c, id).len()..];
                    batch.delete(k.to_vec());
                    let mut ci = b"ci:".to_vec();
                    ci.extend_from_slice(entry);
                    batch.delete(ci);
                    true
                })?;
            batch.delete(keys::row(c, id));
            batch.delete(keys::snapshot(c, id));
            self.storage
                .for_each_prefix(&keys::signatures_of(c, id), &mut |k, _| {
                    batch.delete(k.to_vec());
                    true
                })?;
            if let Some(t) = tombstone {
                batch.delete(t.clone());
            }
            batch.put(keys::purged(c, id), heads);
        }
        self.has_purged.store(true, Ordering::Relaxed);
        // Events on purged records can never be applied anywhere.
        self.pending_stale.store(true, Ordering::Relaxed);
        self.storage.apply(batch)?;
        self.storage.flush()?;
        for (key, _) in records {
            state.cache.pop(&(key.collection.clone(), key.id.clone()));
            if let Some(index) = state.index.as_mut() {
                index.upsert(&key.collection, &key.id, &[PURGED_HEAD]);
            }
        }
        // Records that referred to a purged one now wait for it as missing.
        let mut tx = super::Tx::new(self, state);
        for (key, _) in records {
            tx.reevaluate_referrers(&key.collection, &key.id)?;
        }
        if tx.commit()?.is_some() {
            self.storage.flush()?;
        }
        Ok(())
    }

    /// The record's stored automerge data (snapshot and appended changes), or
    /// its saved form if that is smaller.
    /// The stored seals that sign a record's changes (only those in `only`,
    /// if given). A seal missing from the store is left out (and logged): the
    /// peer then refuses the changes it would have signed.
    pub(crate) fn seals_of(
        &self,
        collection: &str,
        id: &str,
        only: Option<&[[u8; 32]]>,
    ) -> Result<Vec<Arc<crate::sign::Seal>>> {
        let prefix = keys::signatures_of(collection, id);
        let wanted: Option<std::collections::HashSet<&[u8; 32]>> = only.map(|o| o.iter().collect());
        let mut ids: Vec<[u8; 32]> = Vec::new();
        self.storage.for_each_prefix(&prefix, &mut |k, v| {
            if let (Ok(h), Ok(seal)) = (
                <&[u8; 32]>::try_from(&k[prefix.len()..]),
                <[u8; 32]>::try_from(v),
            ) && wanted.as_ref().is_none_or(|w| w.contains(h))
                && !ids.contains(&seal)
            {
                ids.push(seal);
            }
            true
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for sid in ids {
            match self.seal(&sid)? {
                Some(seal) => out.push(seal),
                None => {
                    tracing::warn!(collection, id, seal = %crate::sign::hex(&sid), "a record's seal is not stored")
                }
            }
        }
        Ok(out)
    }

    /// Seal this replica's own changes listed under `u:` (see
    /// [`Replica::seal_pending`]): [`crate::sign::SEAL_MAX`] to a seal, each
    /// change's seal id stored under `x:` and its `u:` entry removed in one
    /// batch. Returns how many changes it sealed.
    pub(crate) fn seal_pending(&self) -> Result<usize> {
        if !self.config.signed || !self.unsealed.load(Ordering::Acquire) {
            return Ok(0);
        }
        let _one = self.sealing.lock().unwrap_or_else(|p| p.into_inner());
        // Cleared before reading: a commit listing more after this read sets
        // it again (it sets it after its batch is applied).
        if !self.unsealed.swap(false, Ordering::AcqRel) {
            return Ok(0);
        }
        let result = self.seal_listed();
        if result.is_err() {
            self.unsealed.store(true, Ordering::Release);
        }
        result
    }

    fn seal_listed(&self) -> Result<usize> {
        // (change hash, its `x:` key, the `u:` key listing it)
        let mut listed: Vec<([u8; 32], Vec<u8>, usize)> = Vec::new();
        let mut lists: Vec<Vec<u8>> = Vec::new();
        self.storage.for_each_prefix(keys::UNSEALED, &mut |k, v| {
            let at = lists.len();
            match unsealed_entries(k, v) {
                Some(entries) => {
                    lists.push(k.to_vec());
                    listed.extend(entries.into_iter().map(|(h, x)| (h, x, at)));
                }
                None => tracing::warn!("an unreadable list of unsealed changes is skipped"),
            }
            true
        })?;
        let mut batch = Batch::new();
        let mut made = Vec::new();
        let mut unsealed = std::collections::HashSet::new();
        for chunk in listed.chunks(crate::sign::SEAL_MAX) {
            let hashes = chunk.iter().map(|(h, _, _)| *h).collect();
            let Some(seal) = self.signer.seal_one(hashes) else {
                unsealed.extend(chunk.iter().map(|(_, _, at)| *at));
                continue;
            };
            batch.put(keys::seal(seal.id()), seal.as_bytes().to_vec());
            for (_, x, _) in chunk {
                batch.put(x.clone(), seal.id().to_vec());
            }
            made.push(Arc::new(seal));
        }
        // A list goes once every change it names is sealed.
        for (at, k) in lists.into_iter().enumerate() {
            if !unsealed.contains(&at) {
                batch.delete(k);
            }
        }
        self.storage.apply(batch)?;
        self.cache_seals(made);
        Ok(listed.len())
    }

    /// Whether the seal is in the cache (so it is stored).
    pub(crate) fn seal_cached(&self, sid: &[u8; 32]) -> bool {
        self.seals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(sid)
    }

    /// Keep stored seals in the cache (only seals that are stored: a cached
    /// seal is not written again).
    pub(crate) fn cache_seals(&self, seals: impl IntoIterator<Item = Arc<crate::sign::Seal>>) {
        let mut cache = self.seals.lock().unwrap_or_else(|p| p.into_inner());
        for seal in seals {
            cache.put(*seal.id(), seal);
        }
    }

    /// A stored seal, from the cache or the store.
    pub(crate) fn seal(&self, sid: &[u8; 32]) -> Result<Option<Arc<crate::sign::Seal>>> {
        let mut cache = self.seals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(sid) {
            return Ok(Some(s.clone()));
        }
        drop(cache);
        let Some(bytes) = self.storage.get(&keys::seal(sid))? else {
            return Ok(None);
        };
        // A damaged seal is as good as none: the changes it signed are not
        // sent signed, and peers refuse them (nothing here is lost).
        let seal = match crate::sign::Seal::parse(&bytes) {
            Ok((seal, used)) if used == bytes.len() && seal.id() == sid => Arc::new(seal),
            Ok(_) => {
                tracing::warn!(seal = %crate::sign::hex(sid), "a stored seal does not match its key");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(seal = %crate::sign::hex(sid), error = %e, "a stored seal is unreadable");
                return Ok(None);
            }
        };
        self.cache_seals([seal.clone()]);
        Ok(Some(seal))
    }

    fn full_data(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let (c, id) = (&key.collection, &key.id);
        let Some(bytes) = self.storage.get(&keys::row(c, id))? else {
            return Ok(None);
        };
        let row = Row::decode_with_log(&bytes).map_err(|e| Self::corrupt(c, id, e.to_string()))?;
        if !row.external_snapshot && row.frames == 1 {
            // One inline snapshot: exactly the saved form.
            let mut out = Vec::with_capacity(row.log.len());
            row.append_unframed_log(&mut out)
                .map_err(|e| Self::corrupt(c, id, e))?;
            return Ok(Some(out));
        }
        let Some((doc, _)) = self.load(c, id)? else {
            return Ok(None);
        };
        let saved = doc.save();
        let mut stored = Vec::new();
        if row.external_snapshot {
            stored = self
                .storage
                .get(&keys::snapshot(c, id))?
                .unwrap_or_default();
        }
        row.append_unframed_log(&mut stored)
            .map_err(|e| Self::corrupt(c, id, e))?;
        Ok(Some(if stored.len() < saved.len() {
            stored
        } else {
            saved
        }))
    }
}

type Unverified = std::result::Result<super::tx::Decoded, String>;

/// A received record to decode: its index, collection, bytes and seals.
type DecodeWork<'a> = (
    usize,
    &'a crate::schema::Collection,
    &'a [u8],
    &'a [Arc<crate::sign::Seal>],
);

/// Verify the seals of decoded records: all in one batch (each seal once), and
/// one by one only when the batch fails (to refuse just the records at fault).
fn verify_decoded(
    verifier: Option<&crate::sign::Verifier>,
    decoded: Vec<(usize, Unverified)>,
) -> Vec<(usize, Unverified)> {
    let Some(v) = verifier else {
        return decoded;
    };
    let mut all: Vec<&crate::sign::Seal> = Vec::new();
    for d in decoded.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        for seal in &d.sealed.seals {
            if !all.iter().any(|s| s.id() == seal.id()) {
                all.push(seal);
            }
        }
    }
    if all.is_empty() || v.verify_batch(&all) {
        return decoded;
    }
    decoded
        .into_iter()
        .map(|(i, r)| {
            let r = r.and_then(|d| {
                d.sealed.verify_each(v).map_err(|e| e.to_string())?;
                Ok(d)
            });
            (i, r)
        })
        .collect()
}

/// How many recent changes (behind the heads) a `Have` names.
const RECENT: usize = 8;

/// How far back a replica looks for the recent changes a peer named.
const RECENT_SEARCH: usize = 64;

fn prefix(h: &ChangeHash) -> u64 {
    u64::from_be_bytes([
        h.0[0], h.0[1], h.0[2], h.0[3], h.0[4], h.0[5], h.0[6], h.0[7],
    ])
}

/// Up to `n` changes behind the heads, nearest first (breadth-first over deps).
fn ancestors(doc: &Automerge, n: usize) -> Vec<ChangeHash> {
    let mut out = Vec::new();
    let mut seen: std::collections::HashSet<ChangeHash> = doc.get_heads().into_iter().collect();
    let mut queue: VecDeque<ChangeHash> = doc.get_heads().into();
    while let Some(h) = queue.pop_front() {
        let Some(meta) = doc.get_change_meta_by_hash(&h) else {
            continue;
        };
        for d in meta.deps {
            if seen.insert(d) {
                out.push(d);
                if out.len() >= n {
                    return out;
                }
                queue.push_back(d);
            }
        }
    }
    out
}

/// What a `Have` of this document says: its heads and recent change prefixes.
fn have(doc: &Automerge) -> (Vec<[u8; 32]>, Vec<u64>) {
    (
        doc.get_heads().iter().map(|h| h.0).collect(),
        ancestors(doc, RECENT).iter().map(prefix).collect(),
    )
}

/// The changes a peer with `theirs` heads and `recent` change prefixes lacks,
/// and (if `ask_back` and this replica lacks some of its heads) this replica's
/// own `Have`.
///
/// The peer holds every ancestor of the heads and recent changes it named that
/// this replica also holds, so only the changes after those are sent. When it
/// named nothing this replica holds (histories that share nothing recent), all
/// changes are sent.
///
/// With `hold` (the sync gate), changes by that actor, and every change after
/// one of them, are held back (and the answer says so).
fn since(
    doc: &Automerge,
    theirs: &[[u8; 32]],
    recent: &[u64],
    ask_back: bool,
    hold: Option<&automerge::ActorId>,
) -> (Loaded, Option<Vec<[u8; 32]>>) {
    let theirs: Vec<ChangeHash> = theirs.iter().map(|h| ChangeHash(*h)).collect();
    let mut known: Vec<ChangeHash> = theirs
        .iter()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .copied()
        .collect();
    let lacks = known.len() < theirs.len();
    if lacks && !recent.is_empty() {
        let named: std::collections::HashSet<u64> = recent.iter().copied().collect();
        let mine = doc
            .get_heads()
            .into_iter()
            .chain(ancestors(doc, RECENT_SEARCH));
        known.extend(mine.filter(|h| named.contains(&prefix(h))));
    }
    let mut data = None;
    let mut changes = doc.get_changes(&known);
    let mut withheld = false;
    if let Some(me) = hold {
        // Changes come in causal order: a change after a held one is held.
        let mut held: std::collections::HashSet<ChangeHash> = std::collections::HashSet::new();
        changes.retain(|c| {
            let hold_it = c.actor_id() == me || c.deps().iter().any(|d| held.contains(d));
            if hold_it {
                held.insert(c.hash());
            }
            !hold_it
        });
        withheld = !held.is_empty();
    }
    // The hashes of the changes sent (`None`: all of the document's).
    let mut sent = None;
    if !changes.is_empty() {
        let mut bytes: Vec<u8> = Vec::new();
        for c in &changes {
            bytes.extend_from_slice(c.raw_bytes());
        }
        sent = Some(changes.iter().map(|c| c.hash().0).collect());
        if bytes.len() > COMPARE_WITH_SAVE_ABOVE && !withheld {
            let saved = doc.save();
            if saved.len() < bytes.len() {
                bytes = saved;
                sent = None;
            }
        }
        data = Some(bytes);
    }
    let (heads, recent) = if ask_back && lacks {
        let (h, r) = have(doc);
        (Some(h), r)
    } else {
        (None, Vec::new())
    };
    (
        Loaded {
            data,
            heads,
            recent,
            purged: false,
            withheld,
            seals: Vec::new(),
        },
        sent,
    )
}

impl Replica {
    /// Run `f` on the sync index narrowed to what this replica and `peer`
    /// may both read (built on first use, then kept up to date by commits).
    fn with_scoped_index<R>(
        &self,
        peer: &[u8],
        rights: &crate::rights::Rights,
        f: impl FnOnce(&SyncIndex) -> R,
    ) -> Result<R> {
        let mut state = self.inner.state();
        if !state.scoped.contains_key(peer) {
            let index = self.inner.build_scoped_index(peer, rights)?;
            state.scoped.insert(peer.to_vec(), index);
        }
        match state.scoped.get(peer) {
            Some(index) => Ok(f(index)),
            None => Err(Error::Import {
                collection: String::new(),
                reason: "the scoped sync index is missing".into(),
            }),
        }
    }

    /// Run `f` on the sync index, building it first if this is its first use
    /// (one scan of every record's row header; later commits keep it current).
    pub fn with_sync_index<R>(&self, f: impl FnOnce(&SyncIndex) -> R) -> Result<R> {
        let mut state = self.inner.state();
        if state.index.is_none() {
            state.index = Some(self.inner.build_index()?);
        }
        match state.index.as_ref() {
            Some(index) => Ok(f(index)),
            None => Err(Error::Import {
                collection: String::new(),
                reason: "the sync index is missing".into(),
            }),
        }
    }

    /// Record that a sync with `peer` ended with both sides equal at `root` (the
    /// root summary of [`Report::root`](crate::sync::Report::root)). Kept only
    /// if this replica's root is still `root` (nothing changed since), so the peer
    /// is known to hold every tombstone this replica holds now. Returns whether
    /// it was kept.
    pub fn note_synced(&self, peer: &str, root: Summary) -> Result<bool> {
        let peer = &canonical_peer(peer);
        let mut state = self.inner.state();
        if state.index.is_none() {
            state.index = Some(self.inner.build_index()?);
        }
        let current = state
            .index
            .as_ref()
            .map(|i| i.summary(crate::sync::Node::ROOT));
        if current != Some(root) {
            return Ok(false);
        }
        let at = state.hlc.last();
        self.inner
            .storage
            .put(&keys::peer(peer), &at.as_u64().to_be_bytes())?;
        self.inner.storage.flush()?;
        drop(state);
        // The peer holds every event made until now.
        self.inner.pending_stale.store(true, Ordering::Relaxed);
        self.refresh_pending_if_stale();
        Ok(true)
    }

    /// Forget a peer (it left the group): tombstones no longer wait for it. If it
    /// comes back holding records purged meanwhile, they are not taken back.
    pub fn forget_peer(&self, peer: &str) -> Result<()> {
        self.inner
            .storage
            .delete(&keys::peer(&canonical_peer(peer)))?;
        self.inner.storage.flush()?;
        Ok(())
    }

    /// The remembered peers and the local time of their last equal sync.
    pub fn remembered_peers(&self) -> Result<Vec<(String, HlcTime)>> {
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::PEERS, &mut |k, v| {
                let name = String::from_utf8_lossy(&k[keys::PEERS.len()..]).into_owned();
                if let Ok(b) = <[u8; 8]>::try_from(v) {
                    out.push((name, HlcTime::from_u64(u64::from_be_bytes(b))));
                }
                true
            })?;
        Ok(out)
    }

    /// Purge the tombstones that every remembered peer is known to hold (each
    /// became deleted here before that peer's last equal sync; see
    /// [`Replica::note_synced`]). A purged record's data is removed; a marker
    /// keeps its id taken, refuses any peer's copy of it, and tells peers that
    /// still hold it to purge it too. Returns how many records were purged.
    pub fn purge_tombstones(&self) -> Result<usize> {
        let peers = self.remembered_peers()?;
        let mut state = self.inner.state();
        let horizon = peers
            .iter()
            .map(|(_, t)| *t)
            .min()
            .unwrap_or_else(|| state.hlc.last());
        let mut due = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::TOMBSTONES, &mut |k, _| {
                let Some((t, c, id)) = keys::split_tombstone(k) else {
                    return true;
                };
                if t > horizon.as_u64() {
                    return false;
                }
                due.push((Key::new(c, id), Some(k.to_vec())));
                true
            })?;
        // Only records still deleted (a tombstone is never undone, but check).
        due.retain(|(key, _)| {
            matches!(self.inner.read_row(&key.collection, &key.id), Ok(Some(r)) if r.deleted)
        });
        self.inner.purge_locked(&mut state, &due)?;
        Ok(due.len())
    }

    /// Whether a record was purged.
    pub fn is_purged(&self, collection: &str, id: &str) -> Result<bool> {
        self.inner.is_purged(&Key::new(collection, id))
    }

    /// Purge records a peer reports purged (a purge is final and spreads to every
    /// replica that syncs with one that purged).
    pub fn sync_purge(&self, keys: &[Key]) -> Result<()> {
        let mut state = self.inner.state();
        let todo: Vec<(Key, Option<Vec<u8>>)> = keys
            .iter()
            .filter(|k| !matches!(self.inner.is_purged(k), Ok(true)))
            .map(|k| (k.clone(), None))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        // Remove each record's tombstone entry too, if it has one (one pass over
        // the tombstones; purges are rare).
        let mut entries = std::collections::HashMap::new();
        self.inner
            .storage
            .for_each_prefix(keys::TOMBSTONES, &mut |k, _| {
                if let Some((_, c, id)) = keys::split_tombstone(k) {
                    entries.insert(Key::new(c, id), k.to_vec());
                }
                true
            })?;
        let todo: Vec<_> = todo
            .into_iter()
            .map(|(key, _)| {
                let t = entries.remove(&key);
                (key, t)
            })
            .collect();
        self.inner.purge_locked(&mut state, &todo)
    }

    /// Answer a session's [`LoadRequest`]s, one [`Loaded`] per request, in order.
    /// A record that cannot be read is logged and answered with nothing.
    pub fn sync_load(&self, requests: &[LoadRequest]) -> Vec<Loaded> {
        self.sync_load_held(requests, &std::collections::BTreeSet::new())
    }

    /// [`Replica::sync_load`], holding back this replica's own changes to the
    /// `held` collections (the sync gate; see [`Replica::sync_gate`]).
    pub fn sync_load_held(
        &self,
        requests: &[LoadRequest],
        held: &std::collections::BTreeSet<String>,
    ) -> Vec<Loaded> {
        self.load_each(requests, held, None)
    }

    /// Answer each request; with a scope (a peer and the rights), requests
    /// for records the peer may not read are answered with nothing, unloaded.
    fn load_each(
        &self,
        requests: &[LoadRequest],
        held: &std::collections::BTreeSet<String>,
        scope: Option<(&[u8], &crate::rights::Rights)>,
    ) -> Vec<Loaded> {
        requests
            .iter()
            .map(|r| {
                let readable = match scope {
                    None => Ok(true),
                    Some((peer, rights)) => self.inner.both_read(peer, rights, r.key()),
                };
                readable
                    .and_then(|ok| {
                        if ok {
                            self.load_one(r, held)
                        } else {
                            Ok(Loaded::default())
                        }
                    })
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "could not read a record for a peer");
                        Loaded::default()
                    })
            })
            .collect()
    }

    /// [`Self::load_inner`], with the signatures of the changes it sends.
    fn load_one(
        &self,
        request: &LoadRequest,
        held: &std::collections::BTreeSet<String>,
    ) -> Result<Loaded> {
        let (mut loaded, sent) = self.load_inner(request, held)?;
        if loaded.data.is_some() {
            let key = request.key();
            // Nothing of this replica's leaves it unsealed.
            self.inner.seal_pending()?;
            loaded.seals = self
                .inner
                .seals_of(&key.collection, &key.id, sent.as_deref())?;
        }
        Ok(loaded)
    }

    /// Answer one request; with the hashes of the changes `data` holds when
    /// it is not the whole record.
    fn load_inner(
        &self,
        request: &LoadRequest,
        held: &std::collections::BTreeSet<String>,
    ) -> Result<(Loaded, Option<Vec<[u8; 32]>>)> {
        let key = request.key();
        if self.inner.is_purged(key)? {
            let purged = Loaded {
                purged: true,
                ..Loaded::default()
            };
            return Ok((purged, None));
        }
        // What the peer holds: its heads and recent changes (nothing: send
        // the whole record).
        let (theirs, recent, ask_back) = match request {
            LoadRequest::Heads(_) => {
                let found = self.with_doc(&key.collection, &key.id, |doc| Ok(have(doc)));
                let (heads, recent) = match found {
                    Err(Error::NotFound { .. }) => (Vec::new(), Vec::new()),
                    other => other?,
                };
                let loaded = Loaded {
                    heads: Some(heads),
                    recent,
                    ..Loaded::default()
                };
                return Ok((loaded, None));
            }
            LoadRequest::Full(_) => (&[][..], &[][..], false),
            LoadRequest::Since {
                heads,
                recent,
                ask_back,
                ..
            } => (heads.as_slice(), recent.as_slice(), *ask_back),
        };
        // The sync gate: this replica's own changes to a collection with
        // unresolved conflicts here are held back.
        let hold = held
            .contains(&key.collection)
            .then(|| self.inner.actor.clone());
        if hold.is_none() && theirs.is_empty() {
            let whole = Loaded {
                data: self.inner.full_data(key)?,
                ..Loaded::default()
            };
            return Ok((whole, None));
        }
        let found = self.with_doc(&key.collection, &key.id, |doc| {
            Ok(since(doc, theirs, recent, ask_back, hold.as_ref()))
        });
        match found {
            Err(Error::NotFound { .. }) => {
                let missing = Loaded {
                    heads: ask_back.then(Vec::new),
                    ..Loaded::default()
                };
                Ok((missing, None))
            }
            other => other,
        }
    }

    /// Apply records received from a peer in one atomic, durable write. Returns
    /// the records that were refused (unknown collection, bad id, not automerge
    /// data, fields that do not fit the schema); the others are applied.
    /// Receiving data already held changes nothing.
    pub fn sync_apply(&self, incoming: Vec<Incoming>) -> Result<Vec<ApplyFailure>> {
        self.sync_apply_from(incoming, None)
    }

    /// [`Replica::sync_apply`] for the session of `peer` (its key), which
    /// change events name.
    pub(crate) fn sync_apply_from(
        &self,
        incoming: Vec<Incoming>,
        peer: Option<&[u8]>,
    ) -> Result<Vec<ApplyFailure>> {
        let schema = self.schema();
        let mut decoded = self.decode_new_records(&schema, &incoming)?;
        self.transaction(|tx| {
            tx.from_peer = peer.map(<[u8]>::to_vec);
            let mut failures = Vec::new();
            for (i, item) in incoming.into_iter().enumerate() {
                let pre = decoded.get_mut(i).and_then(Option::take);
                let result = schema
                    .collection(&item.key.collection)
                    .map_err(Error::from)
                    .and_then(|c| {
                        super::tx::validate_id(&item.key.id)?;
                        tx.apply_remote(c, &item.key.id, &item.bytes, &item.seals, pre)
                    });
                match result {
                    Ok(_) => {}
                    Err(e @ Error::Purged { .. }) => failures.push(ApplyFailure {
                        key: item.key,
                        reason: e.to_string(),
                        purged: true,
                    }),
                    Err(e) => {
                        tracing::warn!(collection = %item.key.collection, id = %item.key.id, error = %e, "refused a record from a peer");
                        failures.push(ApplyFailure {
                            key: item.key,
                            reason: e.to_string(),
                            purged: false,
                        });
                    }
                }
            }
            Ok(failures)
        })
    }

    /// Decode, on several threads, the received records that do not exist here
    /// yet (an initial sync is mostly those; automerge's load is the largest
    /// cost of applying them). One entry per item; `None` for the others,
    /// which the transaction merges as usual.
    fn decode_new_records(
        &self,
        schema: &crate::schema::Schema,
        incoming: &[Incoming],
    ) -> Result<Vec<Option<std::result::Result<super::tx::Decoded, String>>>> {
        let mut work: Vec<DecodeWork<'_>> = Vec::new();
        for (i, item) in incoming.iter().enumerate() {
            let Ok(c) = schema.collection(&item.key.collection) else {
                continue;
            };
            // A point read (the transaction reads the row again): about a
            // microsecond, against ~42 µs for a decode done for nothing.
            let row = keys::row(&item.key.collection, &item.key.id);
            if self.inner.storage.get(&row)?.is_none() {
                work.push((i, c, &item.bytes, &item.seals));
            }
        }
        let mut out: Vec<Option<_>> = (0..incoming.len()).map(|_| None).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        if work.len() < PARALLEL_DECODE_MIN || threads < 2 {
            return Ok(out);
        }
        let per = work.len().div_ceil(threads);
        let verifier = self.inner.verifier();
        let rights = &*self.inner.rights()?;
        let results: Vec<Vec<(usize, _)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks(per)
                .map(|chunk| {
                    scope.spawn(move || {
                        let decoded: Vec<_> = chunk
                            .iter()
                            .map(|&(i, c, bytes, seals)| {
                                (
                                    i,
                                    super::tx::decode_unverified(c, bytes, seals, verifier, rights),
                                )
                            })
                            .collect();
                        verify_decoded(verifier, decoded)
                    })
                })
                .collect();
            // A decoding thread that panicked leaves its records to the
            // transaction, which decodes them itself.
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, r) in results.into_iter().flatten() {
            out[i] = Some(r);
        }
        Ok(out)
    }

    /// Feed `input` to `session` and carry out its storage work (loads and
    /// applies) at once, until it needs the network or the application. Returns
    /// the remaining outputs: [`Output::Send`], [`Output::Notify`],
    /// [`Output::Close`].
    pub fn drive(&self, session: &mut Session, now: u64, input: Input) -> Result<Vec<Output>> {
        // The sync gate as it stands when this side starts a sync (or, for a
        // peer's sync, now).
        if matches!(input, Input::Start) || !session.is_syncing() {
            session.set_held(self.inner.gated_collections());
        }
        let mut inputs = VecDeque::from([input]);
        let mut outputs = Vec::new();
        while let Some(input) = inputs.pop_front() {
            // With rights, a named peer sees only what both sides may read.
            // Read for every input: records applied by the last one may have
            // changed the membership (and dropped the scoped indexes).
            let rights = self.inner.rights()?;
            let scope = session
                .remote()
                .filter(|_| rights.enforced())
                .map(<[u8]>::to_vec);
            session.set_clock(self.inner.clock_now());
            let outs = match &scope {
                None => self.with_sync_index(|index| session.handle(index, now, input))?,
                Some(peer) => self
                    .with_scoped_index(peer, &rights, |index| session.handle(index, now, input))?,
            };
            for o in outs {
                match o {
                    Output::Load(requests) => {
                        let scope = scope.as_deref().map(|peer| (peer, &*rights));
                        let loaded = self.load_each(&requests, session.held(), scope);
                        inputs.push_back(Input::Loaded(loaded));
                    }
                    Output::Apply(items) => {
                        let keys: Vec<Key> = items.iter().map(|i| i.key.clone()).collect();
                        let failures = match self.sync_apply_from(items, session.remote()) {
                            Ok(f) => f,
                            Err(e) => {
                                tracing::error!(error = %e, "could not apply records from a peer");
                                keys.into_iter()
                                    .map(|key| ApplyFailure {
                                        key,
                                        reason: e.to_string(),
                                        purged: false,
                                    })
                                    .collect()
                            }
                        };
                        inputs.push_back(Input::Applied(failures));
                    }
                    Output::Purge(keys) => {
                        if let Err(e) = self.sync_purge(&keys) {
                            tracing::error!(error = %e, "could not purge records a peer purged");
                        }
                        inputs.push_back(Input::Applied(Vec::new()));
                    }
                    Output::Notify(Notification::Clock(sample)) => {
                        if let Some(peer) = session.remote()
                            && let Err(e) = self.note_clock(peer, sample)
                        {
                            tracing::warn!(error = %e, "could not record the peer's clock offset");
                        }
                        outputs.push(Output::Notify(Notification::Clock(sample)));
                    }
                    other => outputs.push(other),
                }
            }
        }
        Ok(outputs)
    }
}

/// A peer's name as this replica keeps it: its member id when the text names
/// a member (a peer id, or the key in hex), else the text itself.
fn canonical_peer(text: &str) -> String {
    crate::member::parse_member_id(text)
        .ok()
        .and_then(|k| crate::member::member_id(&k))
        .unwrap_or_else(|| text.to_owned())
}

/// The changes one `u:` entry lists: (hash, `x:` key) pairs; `None` if the
/// entry is unreadable.
fn unsealed_entries(key: &[u8], value: &[u8]) -> Option<Vec<([u8; 32], Vec<u8>)>> {
    if value.first() != Some(&keys::UNSEALED_LIST) {
        let h = <[u8; 32]>::try_from(key.get(keys::UNSEALED.len()..)?).ok()?;
        return Some(vec![(h, value.to_vec())]);
    }
    let mut out = Vec::new();
    let mut rest = &value[1..];
    while !rest.is_empty() {
        let h = <[u8; 32]>::try_from(rest.get(..32)?).ok()?;
        let len = u32::from_be_bytes(rest.get(32..36)?.try_into().ok()?) as usize;
        let x = rest.get(36..36usize.checked_add(len)?)?.to_vec();
        rest = &rest[36 + len..];
        out.push((h, x));
    }
    Some(out)
}
