//! The conflict benchmark: a merge with conflict detection against the same
//! merge with detection off (`Config::with_conflicts(false)`), in the same run,
//! over the same stores.
//!
//! Two in-memory replicas share `n` benchmark records; the first is the
//! authority. The device then changes every record (2 fields), and the
//! authority changes `concurrent` of them (the same 2 fields: each is a
//! concurrent edit). The timed step is one sync between them, which merges
//! `n` records on the authority and `concurrent` on the device, and (with
//! detection) analyzes every merged record and lists `concurrent` entries on
//! each side.

use std::time::Instant;

use serde::Serialize;

use super::sync::{copy_of, filled};
use super::{COLLECTION, collection, id, patch};
use crate::store::MemoryStore;
use crate::{Config, Replica, Result};

/// Two prepared stores: the authority's and the device's, not yet synced.
#[derive(Debug, Clone)]
pub struct Prepared {
    authority: MemoryStore,
    device: MemoryStore,
    /// Records in each store.
    pub records: usize,
    /// Records edited on both sides.
    pub concurrent: usize,
}

fn open(store: MemoryStore, conflicts: bool) -> Result<Replica> {
    super::memory_replica(
        store,
        Config::default()
            .with_cache_docs(256)
            .with_conflicts(conflicts),
    )
}

/// Fill, copy and edit the two stores (not timed).
pub fn prepare(n: usize, concurrent: usize) -> Result<Prepared> {
    let base = filled(n)?;
    let (a, d) = (base.deep_copy()?, copy_of(&base)?);
    let (ra, rd) = (open(a.clone(), true)?, open(d.clone(), true)?);
    crate::sim::authority_group(&ra, &[&rd], 0)?;
    rd.transaction(|tx| {
        for i in 0..n {
            tx.update(COLLECTION, &id(i), patch(i, 1))?;
        }
        Ok(())
    })?;
    let step = (n / concurrent.max(1)).max(1);
    ra.transaction(|tx| {
        for k in 0..concurrent.min(n) {
            let i = k * step;
            tx.update(COLLECTION, &id(i), patch(i, 2))?;
        }
        Ok(())
    })?;
    Ok(Prepared {
        authority: a,
        device: d,
        records: n,
        concurrent: concurrent.min(n),
    })
}

/// Fresh replicas on copies of the prepared stores, with their sync indexes
/// built (once per process in real use, so not part of the merge).
pub fn fresh(p: &Prepared, conflicts: bool) -> Result<(Replica, Replica)> {
    super::fresh_pair(&p.authority, &p.device, |s| open(s, conflicts))
}

/// Sync the device with the authority; returns the entries listed on the
/// authority afterwards.
pub fn merge(a: &Replica, d: &Replica) -> Result<usize> {
    super::sync_to_end(d, a)?;
    Ok(a.conflicts(&crate::conflict::ConflictFilter::all())?.len())
}

/// What `fieldsync bench conflicts` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records in each store.
    pub records: usize,
    /// Records edited on both sides.
    pub concurrent: usize,
    /// Samples of each variant (alternated).
    pub samples: usize,
    /// Median milliseconds of the merge with detection.
    pub detection_ms: f64,
    /// Median milliseconds of the merge alone.
    pub merge_alone_ms: f64,
    /// `detection_ms / merge_alone_ms - 1`, in percent.
    pub overhead_pct: f64,
    /// Entries listed on the authority after the merge with detection.
    pub entries: usize,
    /// Median milliseconds of `records` local updates (2 fields, 100 per
    /// transaction, documents cached) with the conflict step.
    pub local_updates_detection_ms: f64,
    /// The same updates with detection off.
    pub local_updates_alone_ms: f64,
    /// Their ratio minus one, in percent: what the marks and the conflict
    /// step add to a local write.
    pub local_overhead_pct: f64,
}

/// Milliseconds for `n` local updates of cached documents (2 fields, 100 per
/// transaction), on a fresh in-memory replica.
fn local_updates(n: usize, conflicts: bool) -> Result<f64> {
    let r = Replica::with_storage(
        std::sync::Arc::new(MemoryStore::new()),
        Config::default()
            .with_durable_writes(false)
            .with_cache_docs(n.max(1))
            .with_conflicts(conflicts),
    )?;
    r.define_collection(collection()?)?;
    super::insert_batched(&r, 0..n, 100)?;
    let t = Instant::now();
    super::update_batched(&r, 0..n, 100, 1)?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Run `samples` merges of each variant, alternating, and report medians.
pub fn run(n: usize, concurrent: usize, samples: usize) -> Result<Report> {
    let p = prepare(n, concurrent)?;
    let (w, wo, entries) = super::alternate(samples, |detect| {
        let (a, d) = fresh(&p, detect)?;
        let t = Instant::now();
        let listed = merge(&a, &d)?;
        Ok((t.elapsed().as_secs_f64() * 1000.0, listed))
    })?;
    let (lw, lwo, _) = super::alternate(samples, |detect| Ok((local_updates(n, detect)?, 0)))?;
    Ok(Report {
        records: n,
        concurrent: p.concurrent,
        samples: samples.max(1),
        detection_ms: w,
        merge_alone_ms: wo,
        overhead_pct: (w / wo - 1.0) * 100.0,
        entries,
        local_updates_detection_ms: lw,
        local_updates_alone_ms: lwo,
        local_overhead_pct: (lw / lwo - 1.0) * 100.0,
    })
}
