//! The storage layout: how records, their changes and replica metadata map to keys.
//!
//! ```text
//! m:actor                          this replica's automerge actor id: its ed25519
//!                                  public key (32 bytes)
//! m:hlc                            the clock's high-water mark: the last time a commit used (u64 BE)
//! m:schema                         the schema (codec-encoded)
//! g:root                           the group's founding admin (its actor)
//! m:sign                           the ed25519 secret key (stores without an
//!                                  identity file only)
//! x:<collection>\0<id>\0<hash>     the id of the seal that signs the change (32
//!                                  bytes; see `sign`)
//! y:<seal id>                      a seal: a signed list of one actor's change
//!                                  hashes (see `sign::Seal`)
//! u:<change hash>                 one of this replica's own changes not sealed
//!                                  yet; the value is its `x:` key (sealed, and
//!                                  removed, before any change leaves the replica)
//! r:<collection>\0<id>             the record's row: a header (metadata and
//!                                  materialized fields) followed by its change
//!                                  log (see `replica::row`)
//! s:<collection>\0<id>             the record's snapshot, only for documents too
//!                                  large to keep inline in the log (> 4 KiB)
//! t:<time u64 BE><collection>\0<id> a tombstone: when (local HLC) the record
//!                                  became deleted here; ordered by that time
//! p:<collection>\0<id>             a purged record: its heads at the purge
//! g:m:<peer>                       a member of the group and its role
//! k:<peer>                         the local HLC time at which a sync with this
//!                                  peer last ended with both sides equal
//! c:<collection>\0<id>\0<entry>     a conflict entry of the record (derived,
//!                                  local: every replica computes the same)
//! ci:<entry>                       the record an entry belongs to
//! f:<pc>\0<pid>\0<cc>\0<cid>       a reference: record cc/cid refers to pc/pid
//! a:<peer>                         addresses at which this node reaches the
//!                                  peer (newline-separated multiaddrs); local
//! q:<reaction id>                  a reaction job waiting to run its program
//!                                  (JSON: the trigger, attempts); local
//! o:<peer key>                     what the last sync measured of the peer's
//!                                  clock (offset, round trip, when, its clock);
//!                                  local
//! ```
//!
//! Collection names are `[a-z][a-z0-9_]*` and ids contain no NUL or control
//! character (see `schema::validate_name` and `replica::validate_id`), so `\0`
//! separates the parts unambiguously and a prefix scan of `r:<collection>\0` lists
//! exactly one collection.

pub(crate) const ACTOR: &[u8] = b"m:actor";

/// `q:`: reaction jobs waiting to run a program (local; see `replica::jobs`).
pub(crate) const JOBS: &[u8] = b"q:";

/// `o:`: what the last sync with each peer measured of its clock.
pub(crate) const PEER_CLOCKS: &[u8] = b"o:";

/// `o:<peer key>`: what the last sync with the peer measured of its clock.
pub(crate) fn peer_clock(peer: &[u8]) -> Vec<u8> {
    let mut k = PEER_CLOCKS.to_vec();
    k.extend_from_slice(peer);
    k
}
pub(crate) const HLC: &[u8] = b"m:hlc";
pub(crate) const SCHEMA: &[u8] = b"m:schema";
/// This replica's ed25519 secret key, for stores without an identity file
/// (in memory, or opened with `Replica::with_storage`).
pub(crate) const SIGNING_KEY: &[u8] = b"m:sign";
/// The group's root: the founding admin's actor (local configuration: every
/// replica of a group is told it; none: an open group).
pub(crate) const GROUP_ROOT: &[u8] = b"g:root";

/// `x:`: every change's seal id.
pub(crate) const SIGNATURES: &[u8] = b"x:";

/// `x:<collection>\0<id>\0`: the seal ids of one record's changes.
pub(crate) fn signatures_of(collection: &str, id: &str) -> Vec<u8> {
    let mut k = record_key(SIGNATURES, collection, id);
    k.push(0);
    k
}

/// `x:<collection>\0<id>\0<change hash>`: the id of the seal that signs one
/// change.
pub(crate) fn signature(collection: &str, id: &str, hash: &[u8; 32]) -> Vec<u8> {
    let mut k = signatures_of(collection, id);
    k.extend_from_slice(hash);
    k
}

/// `u:`: this replica's own changes not sealed yet.
pub(crate) const UNSEALED: &[u8] = b"u:";

/// The first byte of a `u:` value listing several changes: then, for each,
/// its hash (32 bytes), the length of its `x:` key (u32, big-endian) and
/// the key. (A value not starting with it is one change's `x:` key, the
/// hash being the key's; `x:` keys start with `x`.)
pub(crate) const UNSEALED_LIST: u8 = 0xff;

/// `u:<change hash>`: this replica's own changes not sealed yet: one, or
/// the list of one transaction (keyed by its first change).
pub(crate) fn unsealed(hash: &[u8; 32]) -> Vec<u8> {
    let mut k = UNSEALED.to_vec();
    k.extend_from_slice(hash);
    k
}

/// `y:<seal id>`: a stored seal.
pub(crate) fn seal(id: &[u8; 32]) -> Vec<u8> {
    let mut k = b"y:".to_vec();
    k.extend_from_slice(id);
    k
}
/// The next pending-event number (u64 BE).
pub(crate) const EVENT_SEQ: &[u8] = b"m:evseq";

/// `e:`: every listed pending event.
pub(crate) const EVENTS: &[u8] = b"e:";

/// `e:<event number, u64 BE>`: a pending event (so they list oldest first).
pub(crate) fn event(n: u64) -> Vec<u8> {
    let mut k = EVENTS.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn record_key(tag: &[u8], collection: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tag.len() + collection.len() + id.len() + 1);
    k.extend_from_slice(tag);
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `r:<collection>\0<id>`
pub(crate) fn row(collection: &str, id: &str) -> Vec<u8> {
    record_key(b"r:", collection, id)
}

/// `r:<collection>\0`: every row of one collection.
pub(crate) fn rows_of(collection: &str) -> Vec<u8> {
    record_key(b"r:", collection, "")
}

/// The id part of a row key of `collection`, if `key` is one.
pub(crate) fn id_of_row<'k>(collection: &str, key: &'k [u8]) -> Option<&'k str> {
    let prefix_len = 2 + collection.len() + 1;
    key.get(prefix_len..)
        .and_then(|id| std::str::from_utf8(id).ok())
}

/// `r:`: every row of every collection.
pub(crate) const ROWS: &[u8] = b"r:";

/// The collection and id of a row key, if `key` is one.
pub(crate) fn split_row(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(ROWS)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let c = std::str::from_utf8(&rest[..nul]).ok()?;
    let id = std::str::from_utf8(&rest[nul + 1..]).ok()?;
    Some((c, id))
}

/// `t:`: every tombstone, oldest first.
pub(crate) const TOMBSTONES: &[u8] = b"t:";

/// `t:<time><collection>\0<id>`
pub(crate) fn tombstone(time: u64, collection: &str, id: &str) -> Vec<u8> {
    let mut k = b"t:".to_vec();
    k.extend_from_slice(&time.to_be_bytes());
    k.extend_from_slice(&record_key(b"", collection, id));
    k
}

/// The time, collection and id of a tombstone key.
pub(crate) fn split_tombstone(key: &[u8]) -> Option<(u64, &str, &str)> {
    let rest = key.strip_prefix(TOMBSTONES)?;
    let (time, rest) = rest.split_first_chunk::<8>()?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let c = std::str::from_utf8(&rest[..nul]).ok()?;
    let id = std::str::from_utf8(&rest[nul + 1..]).ok()?;
    Some((u64::from_be_bytes(*time), c, id))
}

/// `p:`: every purged record.
pub(crate) const PURGED: &[u8] = b"p:";

/// `p:<collection>\0<id>`
pub(crate) fn purged(collection: &str, id: &str) -> Vec<u8> {
    record_key(b"p:", collection, id)
}

/// The collection and id of a purge marker key.
pub(crate) fn split_purged(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PURGED)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    Some((
        std::str::from_utf8(&rest[..nul]).ok()?,
        std::str::from_utf8(&rest[nul + 1..]).ok()?,
    ))
}

/// `g:m:`: every member of the replica group.
pub(crate) const MEMBERS: &[u8] = b"g:m:";

/// `g:m:<peer>`
pub(crate) fn member(peer: &str) -> Vec<u8> {
    let mut k = MEMBERS.to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

/// `k:`: every remembered peer.
pub(crate) const PEERS: &[u8] = b"k:";

/// `k:<peer>`
pub(crate) fn peer(name: &str) -> Vec<u8> {
    let mut k = PEERS.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// `a:`: the addresses of every peer this node dials by itself.
pub(crate) const ADDRESSES: &[u8] = b"a:";

/// `a:<peer>`
pub(crate) fn address(peer: &str) -> Vec<u8> {
    let mut k = ADDRESSES.to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

/// `s:<collection>\0<id>`
pub(crate) fn snapshot(collection: &str, id: &str) -> Vec<u8> {
    record_key(b"s:", collection, id)
}

/// `c:`: every conflict entry.
pub(crate) const CONFLICTS: &[u8] = b"c:";

/// `c:<collection>\0<id>\0`: the entries of one record.
pub(crate) fn conflicts_of(collection: &str, id: &str) -> Vec<u8> {
    let mut k = record_key(b"c:", collection, id);
    k.push(0);
    k
}

/// `c:<collection>\0<id>\0<entry>`
pub(crate) fn conflict(collection: &str, id: &str, entry: &str) -> Vec<u8> {
    let mut k = conflicts_of(collection, id);
    k.extend_from_slice(entry.as_bytes());
    k
}

/// `ci:`: the record of every entry.
pub(crate) const CONFLICT_INDEX: &[u8] = b"ci:";

/// `ci:<entry>`
pub(crate) fn conflict_index(entry: &str) -> Vec<u8> {
    let mut k = CONFLICT_INDEX.to_vec();
    k.extend_from_slice(entry.as_bytes());
    k
}

/// `f:<pc>\0<pid>\0`: the records that refer to one record.
pub(crate) fn referrers_of(collection: &str, id: &str) -> Vec<u8> {
    let mut k = record_key(b"f:", collection, id);
    k.push(0);
    k
}

/// `f:<pc>\0<pid>\0<cc>\0<cid>`
pub(crate) fn referrer(pc: &str, pid: &str, cc: &str, cid: &str) -> Vec<u8> {
    let mut k = referrers_of(pc, pid);
    k.extend_from_slice(&record_key(b"", cc, cid));
    k
}

/// The referring record of an `f:` key under `prefix` (from [`referrers_of`]).
pub(crate) fn split_referrer<'k>(prefix: &[u8], key: &'k [u8]) -> Option<(&'k str, &'k str)> {
    let rest = key.strip_prefix(prefix)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    Some((
        std::str::from_utf8(&rest[..nul]).ok()?,
        std::str::from_utf8(&rest[nul + 1..]).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_prefix_lists_one_collection_only() {
        assert!(row("inv", "1").starts_with(&rows_of("inv")));
        assert!(!row("invoice", "1").starts_with(&rows_of("inv")));
        assert_eq!(id_of_row("inv", &row("inv", "a/b")), Some("a/b"));
        assert_eq!(split_row(&row("inv", "a/b")), Some(("inv", "a/b")));
        assert_eq!(split_row(&snapshot("inv", "a")), None);
        assert_eq!(
            split_tombstone(&tombstone(7, "inv", "a\u{1}b")),
            Some((7, "inv", "a\u{1}b"))
        );
        assert!(
            tombstone(1, "z", "z") < tombstone(2, "a", "a"),
            "oldest first"
        );
        assert_eq!(split_purged(&purged("inv", "x")), Some(("inv", "x")));
    }
}
