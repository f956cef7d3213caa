//! The sync gate (OutSystems' "no sync while conflicts are unresolved"), per
//! collection: while this replica has open conflict entries in a collection
//! with `block_sync_on_conflict`, its own changes to that collection are held
//! back from every peer (see `Replica::sync_load`); everything else still
//! syncs, and a sync this replica starts ends `Blocked`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::tx::evaluate::decode_entry;
use super::{Inner, Replica};
use crate::conflict::EntryState;
use crate::error::Result;
use crate::pending::Blocked;
use crate::store::keys;

pub(crate) type Gate = Arc<BTreeMap<String, Vec<String>>>;

impl Inner {
    /// Compute the gate again at its next use (entries or the schema changed).
    pub(crate) fn invalidate_gate(&self) {
        *self.gate.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn gate_map(&self) -> Result<Gate> {
        if let Some(g) = self.gate.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(g);
        }
        let schema = self.schema();
        let mut map = BTreeMap::new();
        for c in schema
            .collections()
            .filter(|c| c.settings.block_sync_on_conflict)
        {
            let mut prefix = keys::CONFLICTS.to_vec();
            prefix.extend_from_slice(c.name.as_bytes());
            prefix.push(0);
            let mut open = Vec::new();
            self.storage.for_each_prefix(&prefix, &mut |_, v| {
                if let Some(e) = decode_entry(v)
                    && e.state == EntryState::Open
                    && e.collection == c.name
                {
                    open.push(e.id);
                }
                true
            })?;
            if !open.is_empty() {
                open.sort();
                map.insert(c.name.clone(), open);
            }
        }
        let g = Arc::new(map);
        *self.gate.write().unwrap_or_else(|p| p.into_inner()) = Some(g.clone());
        Ok(g)
    }

    /// The collections whose own changes this replica holds back now. An
    /// authority holds nothing back (the gate is the devices' rule, as in
    /// OutSystems, where the server keeps serving while clients wait).
    pub(crate) fn gated_collections(&self) -> std::collections::BTreeSet<String> {
        if self.is_authority(&self.actor) {
            return std::collections::BTreeSet::new();
        }
        match self.gate_map() {
            Ok(g) => g.keys().cloned().collect(),
            Err(e) => {
                // Unknown: hold back every collection that may be blocked.
                tracing::warn!(error = %e, "could not read the sync gate");
                self.schema()
                    .collections()
                    .filter(|c| c.settings.block_sync_on_conflict)
                    .map(|c| c.name.clone())
                    .collect()
            }
        }
    }
}

impl Replica {
    /// The collections whose local changes this replica holds back from its
    /// peers now (the sync gate), each with the open conflict entries that
    /// hold it; empty when nothing is blocked (always, on an authority).
    pub fn sync_gate(&self) -> Result<Vec<Blocked>> {
        if self.inner.is_authority(&self.inner.actor) {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .gate_map()?
            .iter()
            .map(|(c, ids)| Blocked {
                collection: c.clone(),
                conflicts: ids.clone(),
            })
            .collect())
    }
}
