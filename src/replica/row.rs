//! A record's row: its metadata and materialized fields, stored beside its
//! automerge data so reads and scans never load the automerge document.

use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::hlc::HlcTime;
use crate::value::Fields;

const TAG: u8 = b'R';
const VERSION: u8 = 1;

/// The stored form of a row (`r:` keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) heads: Vec<[u8; 32]>,
    pub(crate) modified: HlcTime,
    pub(crate) author: Vec<u8>,
    pub(crate) deleted: bool,
    /// How many `c:` change keys follow the snapshot.
    pub(crate) changes: u32,
    pub(crate) fields: Fields,
}

impl Row {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode("record row", TAG, VERSION, self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode("record row", TAG, VERSION, bytes)
    }

    /// Set heads, time and author from the document's current heads: the latest
    /// (by HLC time, then actor) of the head changes. Deterministic for any
    /// replica holding the same changes.
    pub(crate) fn set_meta_from(&mut self, doc: &Automerge) {
        let heads = doc.get_heads();
        let mut best: Option<(HlcTime, Vec<u8>)> = None;
        for h in &heads {
            if let Some(c) = doc.get_change_by_hash(h) {
                let cand = (
                    HlcTime::from_change_time(c.timestamp()),
                    c.actor_id().to_bytes().to_vec(),
                );
                if best.as_ref().is_none_or(|b| cand > *b) {
                    best = Some(cand);
                }
            }
        }
        self.heads = heads.iter().map(|h| h.0).collect();
        if let Some((t, a)) = best {
            self.modified = t;
            self.author = a;
        }
    }

    pub(crate) fn heads(&self) -> Vec<ChangeHash> {
        self.heads.iter().map(|h| ChangeHash(*h)).collect()
    }

    pub(crate) fn into_record(self, collection: &str, id: &str) -> Record {
        Record {
            collection: collection.to_owned(),
            id: id.to_owned(),
            meta: Meta {
                heads: self.heads(),
                modified: self.modified,
                author: ActorId::from(self.author.as_slice()),
                deleted: self.deleted,
            },
            fields: self.fields,
        }
    }
}

/// A record as read: its typed fields and its metadata.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// The collection it belongs to.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// Its fields (absent optional fields are not in the map).
    pub fields: Fields,
    /// Heads, last-modified time, author, deleted flag.
    pub meta: Meta,
}

/// A record's metadata.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Meta {
    /// The heads of its automerge document (the hashes of its latest changes).
    pub heads: Vec<ChangeHash>,
    /// The HLC time of its latest change (the latest head, if concurrent).
    pub modified: HlcTime,
    /// The actor that made that change.
    pub author: ActorId,
    /// Whether it is deleted (a tombstone; its fields stay readable).
    pub deleted: bool,
}
