//! # fieldsync
//!
//! Peer-to-peer replication of records for teams that work offline. Every record
//! is an [automerge](https://docs.rs/automerge) document stored durably in a local
//! store (sled by default); peers exchange automerge changes, so edits that commute
//! (different fields, counters, text, list items) merge on their own, and only
//! semantic conflicts will reach people.
//!
//! This release holds the foundation (the [`schema`], the durable record
//! store and the [`Replica`] handle), the [`sync`] protocol core with its
//! deterministic simulator ([`sim`]), the libp2p network ([`node`]) and
//! semantic [`conflict`]s: status lifecycles, references, validation by
//! authorities, five resolution policies and a conflict list every peer
//! computes identically (`docs/conflicts.md`), and [`pending`] events:
//! every local write with its status until an authority acknowledges it,
//! cancel, the sync gate and reactions ([`Reaction`]; `docs/pending.md`).
//! Access rights and signed changes build on it (see
//! `docs/architecture.md`).
//!
//! ## Tour
//!
//! ```
//! use fieldsync::{Config, Replica, Scan, Value, WatchFilter, fields};
//! use fieldsync::schema::{Collection, FieldType, Schema};
//!
//! let schema = Schema::new().with(
//!     Collection::builder("job")
//!         .required("title", FieldType::String)
//!         .default("status", FieldType::String, "open")
//!         .default("visits", FieldType::Counter, Value::Counter(0))
//!         .field("notes", FieldType::Text)
//!         .build()?,
//! )?;
//! let dir = tempfile::tempdir()?;
//! let replica = Replica::open(dir.path(), Config::default().with_schema(schema))?;
//! let mut watch = replica.watch(WatchFilter::Collection("job".into()));
//!
//! // Each write is one automerge change, durable when the call returns.
//! replica.insert("job", "j1", fields([("title", Value::from("Fix pump"))]))?;
//! replica.update("job", "j1", fields([("status", Value::from("done"))]))?;
//! replica.update_with("job", "j1", |e| e.increment("visits", 1))?;
//!
//! // Several records atomically.
//! replica.transaction(|tx| {
//!     tx.insert("job", "j2", fields([("title", Value::from("Paint gate"))]))?;
//!     tx.delete("job", "j1")?;
//!     Ok(())
//! })?;
//!
//! let open = replica.scan(&Scan::new("job").with_eq("status", "open"))?;
//! assert_eq!(open.len(), 1);
//! let j1 = replica.get("job", "j1")?.expect("tombstones stay readable");
//! assert!(j1.meta.deleted);
//! assert_eq!(watch.try_recv()?.id, "j1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs, rustdoc::broken_intra_doc_links)]
#![warn(unreachable_pub)]

pub mod bench;
mod clock;
mod codec;
pub mod conflict;
mod doc;
mod error;
mod hlc;
pub mod member;
pub mod node;
pub mod pending;
mod replica;
pub mod rights;
pub mod schema;
pub mod sign;
pub mod sim;
pub mod store;
pub mod sync;
mod value;

pub use automerge;
pub use codec::CodecError;
pub use doc::Edit;
pub use error::{Error, Result};
pub use hlc::{Hlc, HlcTime};
pub use replica::{
    ChangeEvent, ChangeKind, Clock, Config, MAX_DOCUMENT_BYTES, MAX_REACTION_ATTEMPTS,
    MAX_RECORD_BYTES, MemberInfo, Meta, PeerClock, Reaction, ReactionJob, ReactionRunner,
    ReactionWrite, ReactionsFileError, Record, Replica, Role, Scan, StorageInfo, Trigger, Tx,
    Validator, Watch, WatchError, WatchFilter, Written, reactions_from_toml,
};
pub use value::{Fields, Value, fields};

/// The README's code, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
