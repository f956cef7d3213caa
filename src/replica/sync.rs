//! The storage side of sync: the replica builds and maintains the sync index,
//! loads what a [`Session`] asks for, and applies what a peer sent, each as
//! plain calls that a shell (the simulator, the network node) makes.

use std::collections::VecDeque;

use automerge::{Automerge, ChangeHash};

use super::row::Row;
use super::{Inner, Replica};
use crate::error::{Error, Result};
use crate::store::keys;
use crate::sync::{
    ApplyFailure, Incoming, Input, Key, LoadRequest, Loaded, Output, Session, SyncIndex,
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
        Ok(index)
    }

    /// The record's stored automerge data (snapshot and appended changes), or
    /// its saved form if that is smaller.
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

fn since(doc: &Automerge, theirs: &[[u8; 32]], ask_back: bool) -> Loaded {
    let theirs: Vec<ChangeHash> = theirs.iter().map(|h| ChangeHash(*h)).collect();
    let known: Vec<ChangeHash> = theirs
        .iter()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .copied()
        .collect();
    let lacks = known.len() < theirs.len();
    let mut data = None;
    let changes = doc.get_changes(&known);
    if !changes.is_empty() {
        let mut bytes: Vec<u8> = Vec::new();
        for c in &changes {
            bytes.extend_from_slice(c.raw_bytes());
        }
        if bytes.len() > COMPARE_WITH_SAVE_ABOVE {
            let saved = doc.save();
            if saved.len() < bytes.len() {
                bytes = saved;
            }
        }
        data = Some(bytes);
    }
    let heads = (ask_back && lacks).then(|| doc.get_heads().iter().map(|h| h.0).collect());
    Loaded { data, heads }
}

impl Replica {
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

    /// Answer a session's [`LoadRequest`]s, one [`Loaded`] per request, in order.
    /// A record that cannot be read is logged and answered with nothing.
    pub fn sync_load(&self, requests: &[LoadRequest]) -> Vec<Loaded> {
        requests
            .iter()
            .map(|r| {
                self.load_one(r).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not read a record for a peer");
                    Loaded::default()
                })
            })
            .collect()
    }

    fn load_one(&self, request: &LoadRequest) -> Result<Loaded> {
        match request {
            LoadRequest::Full(key) => Ok(Loaded {
                data: self.inner.full_data(key)?,
                heads: None,
            }),
            LoadRequest::Heads(key) => {
                let heads = self
                    .inner
                    .read_row(&key.collection, &key.id)?
                    .map(|r| r.heads)
                    .unwrap_or_default();
                Ok(Loaded {
                    data: None,
                    heads: Some(heads),
                })
            }
            LoadRequest::Since {
                key,
                heads,
                ask_back,
            } => {
                if heads.is_empty() {
                    return Ok(Loaded {
                        data: self.inner.full_data(key)?,
                        heads: None,
                    });
                }
                let cache_key = (key.collection.clone(), key.id.clone());
                let mut state = self.inner.state();
                if let Some((doc, _)) = state.cache.get(&cache_key) {
                    return Ok(since(doc, heads, *ask_back));
                }
                match self.inner.load(&key.collection, &key.id)? {
                    Some((doc, row)) => {
                        let out = since(&doc, heads, *ask_back);
                        state.cache.put(cache_key, (doc, row));
                        Ok(out)
                    }
                    None => Ok(Loaded {
                        data: None,
                        heads: ask_back.then(Vec::new),
                    }),
                }
            }
        }
    }

    /// Apply records received from a peer in one atomic, durable write. Returns
    /// the records that were refused (unknown collection, bad id, not automerge
    /// data, fields that do not fit the schema); the others are applied.
    /// Receiving data already held changes nothing.
    pub fn sync_apply(&self, incoming: Vec<Incoming>) -> Result<Vec<ApplyFailure>> {
        let schema = self.schema();
        self.transaction(|tx| {
            let mut failures = Vec::new();
            for item in incoming {
                let result = schema
                    .collection(&item.key.collection)
                    .map_err(Error::from)
                    .and_then(|c| {
                        super::tx::validate_id(&item.key.id)?;
                        tx.apply_remote(c, &item.key.id, &item.bytes)
                    });
                if let Err(e) = result {
                    tracing::warn!(collection = %item.key.collection, id = %item.key.id, error = %e, "refused a record from a peer");
                    failures.push(ApplyFailure {
                        key: item.key,
                        reason: e.to_string(),
                    });
                }
            }
            Ok(failures)
        })
    }

    /// Feed `input` to `session` and carry out its storage work (loads and
    /// applies) at once, until it needs the network or the application. Returns
    /// the remaining outputs: [`Output::Send`], [`Output::Notify`],
    /// [`Output::Close`].
    pub fn drive(&self, session: &mut Session, now: u64, input: Input) -> Result<Vec<Output>> {
        let mut inputs = VecDeque::from([input]);
        let mut outputs = Vec::new();
        while let Some(input) = inputs.pop_front() {
            for o in self.with_sync_index(|index| session.handle(index, now, input))? {
                match o {
                    Output::Load(requests) => {
                        inputs.push_back(Input::Loaded(self.sync_load(&requests)));
                    }
                    Output::Apply(items) => {
                        let keys: Vec<Key> = items.iter().map(|i| i.key.clone()).collect();
                        let failures = match self.sync_apply(items) {
                            Ok(f) => f,
                            Err(e) => {
                                tracing::error!(error = %e, "could not apply records from a peer");
                                keys.into_iter()
                                    .map(|key| ApplyFailure {
                                        key,
                                        reason: e.to_string(),
                                    })
                                    .collect()
                            }
                        };
                        inputs.push_back(Input::Applied(failures));
                    }
                    other => outputs.push(other),
                }
            }
        }
        Ok(outputs)
    }
}
