//! The pending-events benchmark: what tracking local writes as pending
//! events, and acknowledging them on an authority, costs — against the same
//! work with `Config::with_pending_events(false)`, in the same run.
//!
//! - **Local writes**: `n` updates of cached records on a device (2 fields,
//!   100 per transaction): each also writes its event.
//! - **Sync with acknowledgement**: a device that changed `n` records offline
//!   (so it holds `n` pending events) syncs once with the authority, which
//!   merges them, records its acknowledgement, and sends it back; the device
//!   derives every status again (all confirmed). The baseline is the same sync
//!   with events off on both sides.

use std::time::Instant;

use serde::Serialize;

use super::sync::{copy_of, filled};
use super::{COLLECTION, id, patch};
use crate::store::MemoryStore;
use crate::{Config, Replica, Result, Role};

fn open(store: MemoryStore, pending: bool, cache: usize) -> Result<Replica> {
    super::memory_replica(
        store,
        Config::default()
            .with_cache_docs(cache.max(1))
            .with_pending_events(pending),
    )
}

/// The two stores before the timed sync: the authority's, and the device's
/// with `n` offline updates (and their events).
#[derive(Debug, Clone)]
pub struct Prepared {
    authority: MemoryStore,
    device: MemoryStore,
    /// Records in each store (all changed by the device).
    pub records: usize,
}

/// Fill, copy and edit the two stores (not timed).
pub fn prepare(n: usize) -> Result<Prepared> {
    let base = filled(n)?;
    let (a, d) = (base.deep_copy()?, copy_of(&base)?);
    let (ra, rd) = (open(a.clone(), true, 256)?, open(d.clone(), true, 256)?);
    crate::sim::authority_group(&ra, &[&rd], 0)?;
    rd.transaction(|tx| {
        for i in 0..n {
            tx.update(COLLECTION, &id(i), patch(i, 1))?;
        }
        Ok(())
    })?;
    Ok(Prepared {
        authority: a,
        device: d,
        records: n,
    })
}

/// Fresh replicas on copies of the prepared stores (sync indexes built).
pub fn fresh(p: &Prepared, pending: bool) -> Result<(Replica, Replica)> {
    super::fresh_pair(&p.authority, &p.device, |s| open(s, pending, 256))
}

/// Sync the device with the authority; returns the device's listed events
/// afterwards.
pub fn sync(a: &Replica, d: &Replica) -> Result<usize> {
    super::sync_to_end(d, a)?;
    Ok(d.pending(&crate::pending::PendingFilter::all())?.len())
}

/// Milliseconds for `n` local updates of cached records on a device.
fn local_updates(n: usize, pending: bool) -> Result<f64> {
    let r = open(MemoryStore::new(), pending, n)?;
    // An authority elsewhere: this replica's writes are events.
    r.found_group()?;
    let elsewhere = crate::sign::hex(&crate::replica::new_signer().public());
    r.add_member(&elsewhere, Role::Authority)?;
    super::insert_batched(&r, 0..n, 100)?;
    let t = Instant::now();
    super::update_batched(&r, 0..n, 100, 1)?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// What `fieldsync bench pending` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records changed offline on the device.
    pub records: usize,
    /// Samples of each variant (alternated).
    pub samples: usize,
    /// Median ms of the sync with events and acknowledgement.
    pub sync_with_events_ms: f64,
    /// Median ms of the same sync with events off.
    pub sync_without_ms: f64,
    /// Their ratio minus one, in percent.
    pub sync_overhead_pct: f64,
    /// Events still listed on the device after the sync with events (0:
    /// all confirmed by the acknowledgement).
    pub events_left: usize,
    /// Median ms of `records` local updates with events.
    pub local_with_events_ms: f64,
    /// The same with events off.
    pub local_without_ms: f64,
    /// Their ratio minus one, in percent.
    pub local_overhead_pct: f64,
}

/// Run `samples` of each variant, alternating, and report medians.
pub fn run(n: usize, samples: usize) -> Result<Report> {
    let p = prepare(n)?;
    let (w, wo, left) = super::alternate(samples, |on| {
        let (a, d) = fresh(&p, on)?;
        let t = Instant::now();
        let listed = sync(&a, &d)?;
        Ok((t.elapsed().as_secs_f64() * 1000.0, listed))
    })?;
    let (lw, lwo, _) = super::alternate(samples, |on| Ok((local_updates(n, on)?, 0)))?;
    Ok(Report {
        records: n,
        samples: samples.max(1),
        sync_with_events_ms: w,
        sync_without_ms: wo,
        sync_overhead_pct: (w / wo - 1.0) * 100.0,
        events_left: left,
        local_with_events_ms: lw,
        local_without_ms: lwo,
        local_overhead_pct: (lw / lwo - 1.0) * 100.0,
    })
}
