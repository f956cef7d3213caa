//! The error type of the [`Replica`](crate::Replica) API.

use crate::codec::CodecError;
use crate::schema::SchemaError;
use crate::store::StoreError;

/// What a [`Replica`](crate::Replica) call can fail with. Nothing was written when
/// a write call returns an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The write or query does not fit the schema (unknown collection or field,
    /// wrong type, missing required field). Fix the input.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The storage backend failed; the operation did not take effect.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A change from a peer is not signed by its author (missing or wrong
    /// signature, or an actor that is not a signing key): nothing of that
    /// record's data was applied.
    #[error("refused a peer's change: {0}")]
    Unsigned(#[from] crate::sign::SignError),
    /// A change from a peer was refused by the group's membership (its
    /// author is not a member, was revoked before making it, or changed
    /// members or roles without being an admin).
    #[error("refused a peer's change: {0}")]
    Refused(#[from] crate::rights::Refusal),
    /// This replica's member may not make this write (see [`crate::rights`]).
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why.
        reason: String,
    },
    /// No record with this id exists in the collection.
    #[error("no record `{id}` in collection `{collection}`")]
    NotFound {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// An insert named an id that is already taken (also by a deleted record, whose
    /// tombstone keeps the id).
    #[error("record `{id}` already exists in collection `{collection}`")]
    AlreadyExists {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// The record is deleted; it can be read (with `deleted` set) but not edited.
    #[error("record `{id}` in collection `{collection}` is deleted")]
    Deleted {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// The record was purged (its tombstone removed once every remembered peer had
    /// it): its id can never be used again, and peers' copies are refused.
    #[error("record `{id}` of collection `{collection}` was purged")]
    Purged {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
    /// A record id is empty, longer than 256 bytes, or contains a control character.
    #[error("invalid record id {id:?}: {reason}")]
    InvalidId {
        /// The id given.
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// This record's stored data is unreadable. Other records are unaffected; the
    /// record can be replaced by importing a good copy (or, later, by a peer's).
    #[error("record `{id}` in collection `{collection}` is corrupt: {reason}")]
    Corrupt {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Replica-level metadata (actor id, clock, schema) is unreadable.
    #[error("store metadata `{key}` is unreadable: {source}")]
    Metadata {
        /// The metadata key.
        key: &'static str,
        /// The decoding error.
        #[source]
        source: CodecError,
    },
    /// The bytes given to [`Replica::import`](crate::Replica::import) are not an
    /// automerge document, or its content does not fit the collection's schema.
    #[error("cannot import into `{collection}`: {reason}")]
    Import {
        /// The collection.
        collection: String,
        /// What is wrong with the bytes.
        reason: String,
    },
    /// An edit in an [`Edit`](crate::Edit) closure could not be applied (for example
    /// an index past the end of a list or text).
    #[error("cannot edit `{collection}.{field}`: {reason}")]
    Edit {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
        /// What went wrong.
        reason: String,
    },
    /// The write breaks validation rules (the schema's, or closures registered
    /// with [`Replica::add_validator`](crate::Replica::add_validator)).
    #[error("record `{id}` in collection `{collection}` is invalid: {}", violations.iter().map(|v| format!("{} ({})", v.message, v.code)).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The collection.
        collection: String,
        /// The record.
        id: String,
        /// The rules it breaks.
        violations: Vec<crate::schema::Violation>,
    },
    /// The store's identity key (`identity.key`) is missing, empty,
    /// unreadable or another store's; it is never replaced, since a new key
    /// would make the store another member.
    #[error("the identity key {path} cannot be used: {reason}")]
    Identity {
        /// The key file.
        path: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A record would exceed a size limit ([`crate::MAX_RECORD_BYTES`] for its
    /// fields, [`crate::MAX_DOCUMENT_BYTES`] for its document with its
    /// history; from a peer, four times the first): refused before anything
    /// is written.
    #[error(
        "record `{id}` in collection `{collection}` would take {bytes} bytes, over the {limit}-byte limit of one record"
    )]
    TooLarge {
        /// The collection.
        collection: String,
        /// The record.
        id: String,
        /// Its size (the saved document, or the data given).
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A role that is neither built in (`admin`, `authority`, `device`) nor
    /// defined with [`Replica::define_role`](crate::Replica::define_role).
    #[error(
        "no role `{role}`: the built-in roles are admin, authority and device; define others with `define_role` (`fieldsync group role`)"
    )]
    NoRole {
        /// The role named.
        role: String,
    },
    /// No conflict entry has this id.
    #[error("no conflict entry `{id}`")]
    NoEntry {
        /// The id given.
        id: String,
    },
    /// A resolution does not fit its entry.
    #[error("cannot resolve conflict `{id}`: {reason}")]
    Resolve {
        /// The entry.
        id: String,
        /// Why.
        reason: String,
    },
    /// No listed pending event has this id (it was confirmed, dismissed, or
    /// never existed).
    #[error("no pending event {id}")]
    NoEvent {
        /// The id given.
        id: u64,
    },
    /// A pending event cannot be cancelled (or dismissed) in its status.
    #[error("cannot cancel or dismiss pending event {id}: {reason}")]
    Cancel {
        /// The event.
        id: u64,
        /// Why.
        reason: String,
    },
}

/// Shorthand for results of the replica API.
pub type Result<T, E = Error> = std::result::Result<T, E>;
