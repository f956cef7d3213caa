//! The sync protocol core: reconciliation index, wire messages and the
//! per-peer [`Session`] state machine.
//!
//! This module does no IO: it imports no tokio, libp2p or sled, and takes time as
//! a parameter. A session reads the replica's [`SyncIndex`] and returns
//! [`Output`]s (send bytes, load records, apply records, notify); the caller (the
//! in-memory harness in [`crate::sim`], the network node) carries them out.
//! [`crate::Replica`] provides the storage side: [`crate::Replica::sync_load`],
//! [`crate::Replica::sync_apply`] and [`crate::Replica::with_sync_index`], and
//! [`crate::Replica::drive`] runs all three for one input.
//!
//! How it works, in short (details in `docs/protocol.md`): every record is an
//! item `(key hash, fingerprint of its heads)` in a 16-ary trie over key hashes
//! whose node sums are maintained incrementally. Peers compare the root sum; where
//! sums differ they descend (children's sums, or the items of small nodes) until
//! they know which records differ, then exchange only those records' missing
//! automerge changes, batched into few messages. Equal stores cost one round trip
//! of two ~40-byte messages whatever their size.

pub mod index;
pub mod msg;
pub mod session;

pub use index::{Key, Node, Summary, SyncIndex};
pub use msg::{MsgError, PROTOCOL_VERSION};
pub use session::{
    ApplyFailure, ClockSample, Incoming, Input, LoadRequest, Loaded, MAX_ISSUES, Notification,
    Output, Progress, RecordIssue, Report, Session,
};
