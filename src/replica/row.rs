//! A record's row: its metadata, its materialized fields, and its change log.
//!
//! Stored under one `r:` key as `[header][crc32(header)][log][crc32(log)]`: a
//! codec-encoded header, then the log: the automerge chunks that, concatenated
//! (after the external snapshot, if any), load the record's document. Each frame
//! is a 4-byte big-endian length and the chunk. Both checksums are big-endian
//! CRC-32s, so damage is reported rather than read as other data. A write appends one frame (its change) and rewrites this one key; the
//! document itself is never re-saved until compaction. Reads and scans decode
//! only the header, never the log or the automerge document.

use automerge::{ActorId, Automerge, ChangeHash};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::hlc::HlcTime;
use crate::value::Fields;

const TAG: u8 = b'R';
/// Version 2 added the conflict state (`hidden`, `unresolved`, `entries`);
/// version 1 rows are still read.
const VERSION: u8 = 2;

/// A version 1 row header.
#[derive(Deserialize)]
struct RowV1 {
    heads: Vec<[u8; 32]>,
    modified: HlcTime,
    author: Vec<u8>,
    deleted: bool,
    fields: Fields,
    external_snapshot: bool,
    frames: u32,
    snapshot_bytes: u32,
}

impl From<RowV1> for Row {
    fn from(v: RowV1) -> Self {
        Row {
            heads: v.heads,
            modified: v.modified,
            author: v.author,
            deleted: v.deleted,
            fields: v.fields,
            external_snapshot: v.external_snapshot,
            frames: v.frames,
            snapshot_bytes: v.snapshot_bytes,
            ..Row::default()
        }
    }
}

/// The stored form of a row (`r:` keys).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) heads: Vec<[u8; 32]>,
    pub(crate) modified: HlcTime,
    pub(crate) author: Vec<u8>,
    pub(crate) deleted: bool,
    pub(crate) fields: Fields,
    /// Whether the snapshot lives under the record's own `s:` key (documents too
    /// large to rewrite with every change); otherwise it is the log's first frame.
    pub(crate) external_snapshot: bool,
    /// How many frames the log holds.
    pub(crate) frames: u32,
    /// The size of the last snapshot (inline or external), in bytes.
    pub(crate) snapshot_bytes: u32,
    /// Why the record is not visible: the id of the rejection (or RejectedFk)
    /// entry that hides it.
    pub(crate) hidden: Option<String>,
    /// Reference fields whose record is not here (yet).
    pub(crate) unresolved: Vec<String>,
    /// How many conflict entries the record has (stored under `c:` keys).
    pub(crate) entries: u32,
    /// How many of them are open.
    pub(crate) open: u32,
    /// The rejection entry of the record's insert, standing or lifted (its
    /// children's RejectedFk entries follow it).
    pub(crate) insert_rejection: Option<String>,
    /// Whether the history is known to be one line of changes (no
    /// concurrency), so conflict analysis can be skipped without reading it.
    pub(crate) linear: bool,
    /// The framed log (not part of the header; see the module docs).
    #[serde(skip)]
    pub(crate) log: Vec<u8>,
}

impl Row {
    /// The header and the log, each followed by its checksum.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let tail = 4 + self.log.len() + 4;
        let mut out = codec::encode_reserving("record row", TAG, VERSION, self, tail)?;
        let header_crc = crc32fast::hash(&out);
        out.reserve_exact(tail);
        out.extend_from_slice(&header_crc.to_be_bytes());
        out.extend_from_slice(&self.log);
        out.extend_from_slice(&crc32fast::hash(&self.log).to_be_bytes());
        Ok(out)
    }

    /// Decode and check the header; returns it and the checked-header remainder
    /// (`[log][crc32(log)]`).
    fn decode_header(bytes: &[u8]) -> Result<(Self, &[u8]), CodecError> {
        let malformed = |message: String| CodecError::Malformed {
            what: "record row",
            message,
        };
        let (row, rest): (Row, _) = if bytes.get(1) == Some(&1) {
            let (v1, rest): (RowV1, _) = codec::decode_prefix("record row", TAG, 1, bytes)?;
            (v1.into(), rest)
        } else {
            codec::decode_prefix("record row", TAG, VERSION, bytes)?
        };
        let header_len = bytes.len() - rest.len();
        let (crc, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("the header checksum is missing".into()))?;
        if u32::from_be_bytes(*crc) != crc32fast::hash(&bytes[..header_len]) {
            return Err(malformed("the header checksum does not match".into()));
        }
        Ok((row, rest))
    }

    /// The heads alone (the header's first field), without the header's
    /// checksum or fields: what the sync index needs from every row.
    pub(crate) fn decode_heads(bytes: &[u8]) -> Result<Vec<[u8; 32]>, CodecError> {
        #[derive(Deserialize)]
        struct HeadsOnly {
            heads: Vec<[u8; 32]>,
        }
        let version = if bytes.get(1) == Some(&1) { 1 } else { VERSION };
        let (h, _): (HeadsOnly, _) = codec::decode_prefix("record row", TAG, version, bytes)?;
        Ok(h.heads)
    }

    /// The header only (the log stays empty): what reads and scans need.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(Self::decode_header(bytes)?.0)
    }

    /// The header and the log, both checked.
    pub(crate) fn decode_with_log(bytes: &[u8]) -> Result<Self, CodecError> {
        let (mut row, rest) = Self::decode_header(bytes)?;
        let (log, crc) = rest
            .split_last_chunk::<4>()
            .ok_or_else(|| CodecError::Malformed {
                what: "record row",
                message: "the change log checksum is missing".into(),
            })?;
        if u32::from_be_bytes(*crc) != crc32fast::hash(log) {
            return Err(CodecError::Malformed {
                what: "record row",
                message: "the change log checksum does not match".into(),
            });
        }
        row.log = log.to_vec();
        Ok(row)
    }

    /// Append one automerge chunk to the log.
    pub(crate) fn push_frame(&mut self, chunk: &[u8]) {
        // Chunks are far below 4 GiB (writes are bounded long before that).
        let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        self.log.extend_from_slice(&len.to_be_bytes());
        self.log.extend_from_slice(chunk);
        self.frames += 1;
    }

    /// Replace the log with one chunk (a compacted snapshot).
    pub(crate) fn reset_log(&mut self, chunk: Option<&[u8]>) {
        self.log.clear();
        self.frames = 0;
        if let Some(c) = chunk {
            self.push_frame(c);
        }
    }

    /// Append the log's chunks to `out` (what automerge loads, after the external
    /// snapshot if any), checking the framing.
    pub(crate) fn append_unframed_log(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.reserve(self.log.len());
        let mut rest = self.log.as_slice();
        let mut frames = 0u32;
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| "the change log ends inside a frame header".to_string())?;
            let len = u32::from_be_bytes(*len) as usize;
            let chunk = tail
                .get(..len)
                .ok_or_else(|| format!("a change log frame of {len} bytes is cut short"))?;
            out.extend_from_slice(chunk);
            rest = &tail[len..];
            frames += 1;
        }
        if frames != self.frames {
            return Err(format!(
                "the change log holds {frames} frames, its header records {}",
                self.frames
            ));
        }
        Ok(())
    }

    /// Set heads, time and author from the document's current heads: the latest
    /// (by HLC time, then actor) of the head changes. Deterministic for any
    /// replica holding the same changes.
    pub(crate) fn set_meta_from(&mut self, doc: &Automerge) {
        self.set_meta_corrected(doc, &|_, t| t);
    }

    /// [`Row::set_meta_from`], choosing the latest head change by its save
    /// time corrected by its author's clock offset (`corrected`), as last
    /// writer wins does; the time kept is the change's own.
    pub(crate) fn set_meta_corrected(
        &mut self,
        doc: &Automerge,
        corrected: &dyn Fn(&automerge::ActorId, HlcTime) -> HlcTime,
    ) {
        let heads = doc.get_heads();
        let best = latest_head(doc, &heads, corrected);
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
                rejected: self.hidden,
                unresolved: self.unresolved,
                open_conflicts: self.open,
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
    /// If the record is not visible because it was rejected (or its parent
    /// was): the id of that conflict entry. Scans leave such records out.
    pub rejected: Option<String>,
    /// Reference fields whose record has not arrived (yet): the record waits,
    /// readable, with this marker.
    pub unresolved: Vec<String>,
    /// How many open conflict entries the record has.
    pub open_conflicts: u32,
}

/// Of `heads`, the change saved last by corrected time (ties: actor): its own
/// time and its actor.
pub(crate) fn latest_head(
    doc: &Automerge,
    heads: &[ChangeHash],
    corrected: &dyn Fn(&automerge::ActorId, HlcTime) -> HlcTime,
) -> Option<(HlcTime, Vec<u8>)> {
    let mut best: Option<(HlcTime, HlcTime, Vec<u8>)> = None;
    for h in heads {
        // The metadata alone: `get_change_by_hash` would rebuild the change.
        if let Some(c) = doc.get_change_meta_by_hash(h) {
            let t = HlcTime::from_change_time(c.timestamp);
            let cand = (
                corrected(c.actor.as_ref(), t),
                t,
                c.actor.to_bytes().to_vec(),
            );
            if best.as_ref().is_none_or(|b| cand > *b) {
                best = Some(cand);
            }
        }
    }
    best.map(|(_, t, a)| (t, a))
}
