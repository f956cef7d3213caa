//! The signing benchmark: what signing every change and verifying every
//! received one costs, against the same work with
//! `Config::with_signed_changes(false)`, in the same run.
//!
//! - **Initial sync**: an empty replica receives `n` records (one change
//!   each) from a filled one over the in-memory link: every change's seal is
//!   sent, verified and stored. The source stores are filled before timing
//!   (one signed, one not), `per_tx` records per transaction, and sealed:
//!   the receiver checks `n / 256` signatures whatever `per_tx` is.
//! - **Writes**: the same `n` inserts, `per_tx` per transaction, then
//!   [`Replica::seal_pending`] (changes are sealed when they first leave a
//!   replica, 256 to a seal whatever transactions made them).

use std::time::Instant;

use serde::Serialize;

use crate::store::MemoryStore;
use crate::{Config, Replica, Result};

fn open(store: MemoryStore, signed: bool) -> Result<Replica> {
    super::memory_replica(
        store,
        Config::default()
            .with_cache_docs(256)
            .with_signed_changes(signed),
    )
}

/// A store of `n` records written with signing on or off, and the
/// milliseconds the writes took.
pub fn fill(n: usize, per_tx: usize, signed: bool) -> Result<(MemoryStore, f64)> {
    let store = MemoryStore::new();
    let r = open(store.clone(), signed)?;
    let t = Instant::now();
    super::insert_batched(&r, 0..n, per_tx)?;
    // Signing happens when changes first leave; counted with the writes.
    r.seal_pending()?;
    Ok((store, t.elapsed().as_secs_f64() * 1000.0))
}

/// Sync an empty replica from `source`; returns the milliseconds and the
/// records received.
pub fn initial(source: &MemoryStore, signed: bool) -> Result<(f64, usize)> {
    let from = open(source.clone(), signed)?;
    from.with_sync_index(|_| ())?;
    let to = open(MemoryStore::new(), signed)?;
    let t = Instant::now();
    super::sync_to_end(&to, &from)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let received = to.with_sync_index(|i| i.len())?;
    Ok((ms, received))
}

/// What `fieldsync bench signing` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records synced and written.
    pub records: usize,
    /// Records written per transaction.
    pub per_tx: usize,
    /// Samples of each variant (alternated).
    pub samples: usize,
    /// Median ms of the initial sync with signatures sent and verified.
    pub sync_signed_ms: f64,
    /// Median ms of the same sync with signing off.
    pub sync_unsigned_ms: f64,
    /// Their ratio minus one, in percent.
    pub sync_overhead_pct: f64,
    /// Records the receiver held after the signed sync.
    pub received: usize,
    /// Median ms of `records` inserts with signing.
    pub write_signed_ms: f64,
    /// The same with signing off.
    pub write_unsigned_ms: f64,
    /// Their ratio minus one, in percent.
    pub write_overhead_pct: f64,
}

/// Run `samples` of each variant, alternating, and report medians.
pub fn run(n: usize, per_tx: usize, samples: usize) -> Result<Report> {
    let per_tx = per_tx.max(1);
    let (signed_src, _) = fill(n, per_tx, true)?;
    let (unsigned_src, _) = fill(n, per_tx, false)?;
    let (s, u, received) = super::alternate(samples, |on| {
        initial(if on { &signed_src } else { &unsigned_src }, on)
    })?;
    let (ws, wu, _) = super::alternate(samples, |on| Ok((fill(n, per_tx, on)?.1, 0)))?;
    Ok(Report {
        records: n,
        per_tx,
        samples: samples.max(1),
        sync_signed_ms: s,
        sync_unsigned_ms: u,
        sync_overhead_pct: (s / u - 1.0) * 100.0,
        received,
        write_signed_ms: ws,
        write_unsigned_ms: wu,
        write_overhead_pct: (ws / wu - 1.0) * 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_variants_sync_every_record() {
        let r = run(50, 10, 1).expect("runs");
        assert_eq!(r.received, 50);
        assert!(r.sync_signed_ms > 0.0 && r.sync_unsigned_ms > 0.0);
    }
}
