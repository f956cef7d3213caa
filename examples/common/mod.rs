//! What the conflict examples share: checking a step, syncing two peers.

// Not every example uses every helper.
#![allow(dead_code)]

use std::error::Error;

use fieldsync::Replica;

/// Print `ok: what`, or fail the example with `FAILED: what`.
pub fn check(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("FAILED: {what}").into())
    }
}

/// Sync two peers with fieldsync's sync protocol, in process, until both
/// hold the same records.
pub fn sync(a: &Replica, b: &Replica) -> Result<(), Box<dyn Error>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    if !fieldsync::sim::sync_pair(a, b, now, None)?.synced {
        return Err("a sync did not finish".into());
    }
    Ok(())
}
