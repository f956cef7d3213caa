//! The reconciliation index: every record of a replica as an item
//! `(key hash, key, fingerprint)`, arranged in a 16-ary trie over the key hash, with
//! the fingerprint sum and count of every trie node.
//!
//! * An item's **key hash** is the first 8 bytes of SHA-256 over
//!   `collection \0 id`: the same on every peer, so every peer files a record under
//!   the same trie node.
//! * An item's **fingerprint** is the first 8 bytes of SHA-256 over the key hash and
//!   the record's sorted heads: two peers' fingerprints of a record are equal
//!   exactly when they hold the same changes of it (up to a 2⁻⁶⁴ collision).
//! * A node's **summary** is the wrapping sum of its items' fingerprints and their
//!   count. Sums are updated in O(depth) when an item changes, so the summary of the
//!   whole store costs nothing to produce.
//!
//! Nodes at levels 0 to [`CACHED_LEVELS`] keep their sums in arrays (69,905 nodes);
//! deeper nodes are summed from the items on demand, which at a million records is
//! about 15 items per level-4 node. This module does no IO.

use std::collections::BTreeMap;
use std::ops::Bound;

use sha2::{Digest, Sha256};

/// Levels whose node sums are kept up to date (0 = the root).
pub const CACHED_LEVELS: u8 = 4;

/// The head a purged record is filed under (no change hash is all ones), so
/// replicas that purged a record hold the same item for it.
pub const PURGED_HEAD: [u8; 32] = [0xff; 32];

/// The deepest level: a node at level 16 holds the items of one key hash.
pub const MAX_LEVEL: u8 = 16;

/// A node of the trie: the key hashes whose top `4 × level` bits equal `prefix`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Node {
    /// Depth in the trie: 0 is the root (every item), 16 one key hash.
    pub level: u8,
    /// The top `4 × level` bits of the key hashes under this node.
    pub prefix: u64,
}

impl Node {
    /// The root: every item.
    pub const ROOT: Node = Node {
        level: 0,
        prefix: 0,
    };

    /// Whether `level` and `prefix` describe a node (level ≤ 16, prefix within it).
    pub fn is_valid(&self) -> bool {
        self.level <= MAX_LEVEL && (self.level == MAX_LEVEL || self.prefix >> (4 * self.level) == 0)
    }

    /// The `nibble`th child (0–15). Only for nodes above [`MAX_LEVEL`].
    pub fn child(&self, nibble: u8) -> Node {
        Node {
            level: self.level + 1,
            prefix: (self.prefix << 4) | u64::from(nibble & 0xf),
        }
    }

    /// The inclusive range of key hashes under this node.
    pub fn range(&self) -> (u64, u64) {
        if self.level == 0 {
            return (0, u64::MAX);
        }
        if self.level >= MAX_LEVEL {
            return (self.prefix, self.prefix);
        }
        let shift = 64 - 4 * u32::from(self.level);
        let lo = self.prefix << shift;
        (lo, lo | ((1u64 << shift) - 1))
    }

    /// The node at `level` that holds key hash `h`.
    fn of(h: u64, level: u8) -> Node {
        let prefix = if level == 0 {
            0
        } else if level >= MAX_LEVEL {
            h
        } else {
            h >> (64 - 4 * u32::from(level))
        };
        Node { level, prefix }
    }
}

/// The fingerprint sum and item count of a trie node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Wrapping sum of the items' fingerprints (0 for an empty node).
    pub fp: u64,
    /// How many items the node holds.
    pub count: u64,
}

impl Summary {
    fn add(&mut self, fp: u64) {
        self.fp = self.fp.wrapping_add(fp);
        self.count += 1;
    }

    fn remove(&mut self, fp: u64) {
        self.fp = self.fp.wrapping_sub(fp);
        self.count = self.count.saturating_sub(1);
    }
}

/// A record's key: its collection and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The collection.
    pub collection: String,
    /// The record id.
    pub id: String,
}

impl Key {
    /// A key.
    pub fn new(collection: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            id: id.into(),
        }
    }
}

/// The key hash of a record (see the module docs).
pub fn key_hash(collection: &str, id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(collection.as_bytes());
    h.update([0u8]);
    h.update(id.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The fingerprint of a record with key hash `kh` and heads `heads` (in any
/// order; they are sorted first).
pub fn fingerprint(kh: u64, heads: &[[u8; 32]]) -> u64 {
    let mut sorted: Vec<&[u8; 32]> = heads.iter().collect();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    h.update(kh.to_be_bytes());
    for head in sorted {
        h.update(head);
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The reconciliation index of one replica (see the module docs).
#[derive(Debug, Clone)]
pub struct SyncIndex {
    /// `(key hash, collection, id)` → fingerprint.
    items: BTreeMap<(u64, String, String), u64>,
    /// Node sums for levels `0..=CACHED_LEVELS`, each level `16^level` long.
    levels: Vec<Vec<Summary>>,
}

impl Default for SyncIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncIndex {
    /// An empty index.
    pub fn new() -> Self {
        let levels = (0..=CACHED_LEVELS)
            .map(|l| vec![Summary::default(); 1usize << (4 * u32::from(l))])
            .collect();
        Self {
            items: BTreeMap::new(),
            levels,
        }
    }

    /// How many records the index holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the index holds no record.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Record that `collection/id` now has `heads` (adding it if new).
    pub fn upsert(&mut self, collection: &str, id: &str, heads: &[[u8; 32]]) {
        let kh = key_hash(collection, id);
        let fp = fingerprint(kh, heads);
        let old = self
            .items
            .insert((kh, collection.to_owned(), id.to_owned()), fp);
        if old == Some(fp) {
            return;
        }
        for (l, level) in self.levels.iter_mut().enumerate() {
            // `l` ≤ CACHED_LEVELS, so the node index fits the level's array.
            let i = Node::of(kh, l as u8).prefix as usize;
            if let Some(old) = old {
                level[i].remove(old);
            }
            level[i].add(fp);
        }
    }

    /// Remove a record (a purge).
    pub fn remove(&mut self, collection: &str, id: &str) {
        let kh = key_hash(collection, id);
        if let Some(old) = self
            .items
            .remove(&(kh, collection.to_owned(), id.to_owned()))
        {
            for (l, level) in self.levels.iter_mut().enumerate() {
                let i = Node::of(kh, l as u8).prefix as usize;
                level[i].remove(old);
            }
        }
    }

    /// The fingerprint this index holds for a record, if any.
    pub fn get(&self, collection: &str, id: &str) -> Option<u64> {
        let kh = key_hash(collection, id);
        self.items
            .get(&(kh, collection.to_owned(), id.to_owned()))
            .copied()
    }

    fn range_iter(&self, node: Node) -> impl Iterator<Item = (&(u64, String, String), &u64)> {
        let (lo, hi) = node.range();
        self.items
            .range((
                Bound::Included((lo, String::new(), String::new())),
                Bound::Unbounded,
            ))
            .take_while(move |((kh, _, _), _)| *kh <= hi)
    }

    /// The summary of a node.
    pub fn summary(&self, node: Node) -> Summary {
        if node.level <= CACHED_LEVELS {
            return self
                .levels
                .get(usize::from(node.level))
                .and_then(|l| l.get(node.prefix as usize))
                .copied()
                .unwrap_or_default();
        }
        let mut s = Summary::default();
        for (_, fp) in self.range_iter(node) {
            s.add(*fp);
        }
        s
    }

    /// The fingerprints of a node's 16 children (0 for an empty child).
    pub fn children(&self, node: Node) -> [u64; 16] {
        let mut out = [0u64; 16];
        if node.level >= MAX_LEVEL {
            return out;
        }
        if node.level < CACHED_LEVELS {
            for (n, slot) in out.iter_mut().enumerate() {
                *slot = self.summary(node.child(n as u8)).fp;
            }
            return out;
        }
        let shift = 64 - 4 * u32::from(node.level + 1);
        for ((kh, _, _), fp) in self.range_iter(node) {
            let n = ((kh >> shift) & 0xf) as usize;
            out[n] = out[n].wrapping_add(*fp);
        }
        out
    }

    /// The items of a node: `(key hash, key, fingerprint)`, in key-hash order.
    pub fn items(&self, node: Node) -> Vec<(u64, Key, u64)> {
        self.range_iter(node)
            .map(|((kh, c, id), fp)| (*kh, Key::new(c.clone(), id.clone()), *fp))
            .collect()
    }

    /// The keys of a node, in key-hash order.
    pub fn keys(&self, node: Node) -> Vec<Key> {
        self.range_iter(node)
            .map(|((_, c, id), _)| Key::new(c.clone(), id.clone()))
            .collect()
    }

    /// The keys whose key hash is `kh`.
    pub fn keys_with_hash(&self, kh: u64) -> Vec<Key> {
        self.keys(Node {
            level: MAX_LEVEL,
            prefix: kh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn node_ranges_nest() {
        let n = Node::ROOT.child(3).child(15);
        assert!(n.is_valid());
        let (lo, hi) = n.range();
        assert_eq!(lo, 0x3f00_0000_0000_0000);
        assert_eq!(hi, 0x3fff_ffff_ffff_ffff);
        assert!(
            !Node {
                level: 1,
                prefix: 16
            }
            .is_valid()
        );
        assert!(
            !Node {
                level: 17,
                prefix: 0
            }
            .is_valid()
        );
        assert_eq!(Node::of(0xabcd, MAX_LEVEL).range(), (0xabcd, 0xabcd));
    }

    #[test]
    fn heads_order_does_not_change_a_fingerprint() {
        assert_eq!(
            fingerprint(7, &[head(1), head(2)]),
            fingerprint(7, &[head(2), head(1)])
        );
        assert_ne!(fingerprint(7, &[head(1)]), fingerprint(7, &[head(2)]));
    }

    proptest! {
        /// Cached sums always equal sums computed from the items, at every level,
        /// whatever the order of upserts and removals.
        #[test]
        fn cached_sums_match_recomputed_ones(ops in proptest::collection::vec((0u8..40, 0u8..4, any::<bool>()), 1..200)) {
            let mut idx = SyncIndex::new();
            for (id, h, remove) in ops {
                let id = format!("r{id}");
                if remove { idx.remove("c", &id) } else { idx.upsert("c", &id, &[head(h)]) }
            }
            let all: Vec<_> = idx.items(Node::ROOT);
            prop_assert_eq!(idx.summary(Node::ROOT).count as usize, all.len());
            for (kh, _, _) in &all {
                for level in 0..=MAX_LEVEL {
                    let node = Node::of(*kh, level);
                    let mut s = Summary::default();
                    for (_, _, fp) in idx.items(node) { s.add(fp); }
                    prop_assert_eq!(idx.summary(node), s);
                    if level < MAX_LEVEL {
                        let children = idx.children(node);
                        let sum = children.iter().fold(0u64, |a, b| a.wrapping_add(*b));
                        prop_assert_eq!(sum, s.fp);
                    }
                }
            }
        }
    }
}
