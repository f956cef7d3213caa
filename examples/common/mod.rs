//! What the conflict examples share: checking a step, syncing two peers.

// Not every example uses every helper.
#![allow(dead_code)]

use std::error::Error;

use fieldsync::Replica;

/// A field's value for people (`-` when it has none).
pub fn show(v: Option<&fieldsync::Value>) -> String {
    v.map_or_else(|| "-".to_owned(), ToString::to_string)
}

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

/// Open one sled store per name under `dir`, each with `schema`; the first
/// is the group's authority, and every peer knows it.
pub fn group(
    dir: &std::path::Path,
    schema: &fieldsync::schema::Schema,
    names: &[&str],
) -> Result<Vec<Replica>, Box<dyn Error>> {
    let peers = names
        .iter()
        .map(|n| {
            Replica::open(
                dir.join(n),
                fieldsync::Config::default().with_schema(schema.clone()),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The first founds the group and is its authority; the others join as
    // devices and learn the members in a first sync.
    let (hub, others) = peers.split_first().ok_or("no peers")?;
    let others: Vec<&Replica> = others.iter().collect();
    fieldsync::sim::authority_group(hub, &others, 0)?;
    Ok(peers)
}
