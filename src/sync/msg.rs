//! The wire messages of the sync protocol and their limits.
//!
//! A message on the wire is `[tag 'Y'][protocol version][bincode body]` (see
//! `codec`), or, when deflating the body saves at least a tenth of it,
//! `[tag 'X'][protocol version][body length: u32 big-endian][raw deflate of
//! the body]` (inflated to at most [`MAX_MESSAGE`] bytes, and exactly the
//! length given, before it is decoded). A peer that receives another version answers with a [`Refusal`],
//! whose encoding (`[tag 'Z'][1][reason]`) never changes, so every version can
//! read why it was refused. Every length in a message is bounded ([`Limits`]):
//! input longer than [`MAX_MESSAGE`] is refused before it is decoded, and the
//! decoder allocates at most that much for its containers.

use serde::{Deserialize, Serialize};

use super::index::Node;
use crate::codec::{self, CodecError};

/// The sync protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 4;

const MSG_TAG: u8 = b'Y';
const DEFLATED_TAG: u8 = b'X';
/// Bodies shorter than this are sent as they are.
const DEFLATE_MIN: usize = 512;
const REFUSAL_TAG: u8 = b'Z';
const REFUSAL_VERSION: u8 = 1;

/// The largest message accepted or sent, in bytes (8 MiB).
pub const MAX_MESSAGE: usize = 8 << 20;

/// A message's data parts are cut into messages of about this many bytes
/// (64 KiB), so a receiver applies and checkpoints a large transfer piece by
/// piece: a cut loses at most one message's worth.
pub const CHUNK_BYTES: usize = 64 << 10;

/// Bounds checked on every decoded message (beyond [`MAX_MESSAGE`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    /// Parts in one message.
    pub const PARTS: usize = 100_000;
    /// Acknowledged message ids in one message.
    pub const ACKS: usize = 4096;
    /// Items in one `Items` part.
    pub const ITEMS: usize = 65_536;
    /// Key hashes in one `NeedHashes` part.
    pub const HASHES: usize = 65_536;
    /// Heads in one `Have` part.
    pub const HEADS: usize = 1024;
    /// Recent change prefixes in one `Have` part.
    pub const RECENT: usize = 64;
    /// Bytes of a collection name.
    pub const COLLECTION: usize = 64;
    /// Bytes of a record id.
    pub const ID: usize = 256;
    /// Records in one `Records` part.
    pub const RECORDS: usize = 100_000;
    /// Bytes of a reason in a `Skipped` or `Refused` part.
    pub const REASON: usize = 1024;
}

/// One message: parts that each stand alone, an id if the peer must answer it,
/// and the ids of the peer's messages this one answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Msg {
    /// Non-zero if the peer must acknowledge this message (it holds requests).
    pub id: u64,
    /// Ids of the peer's messages whose requests are fully answered (their data
    /// sent in this message or before it).
    pub acks: Vec<u64>,
    /// The content.
    pub parts: Vec<Part>,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Part {
    /// The sender's summary of a trie node; the receiver answers if its own differs.
    Summary {
        /// The node.
        node: Node,
        /// Fingerprint sum.
        fp: u64,
        /// Item count.
        count: u64,
    },
    /// The fingerprint sums of a node's 16 children (`0` for an empty child).
    Children {
        /// The node whose children these are.
        node: Node,
        /// One sum per child.
        fps: [u64; 16],
    },
    /// Every item of a node: `(key hash, fingerprint)`; the receiver works out
    /// which records differ.
    Items {
        /// The node.
        node: Node,
        /// The items, in key-hash order.
        items: Vec<(u64, u64)>,
    },
    /// "Send me these records whole": key hashes the sender lacks.
    NeedHashes(Vec<u64>),
    /// "These are my heads of this record: send me what I lack."
    Have {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// The sender's heads (empty: it has nothing of the record).
        heads: Vec<[u8; 32]>,
        /// The first 8 bytes of the hashes of the sender's most recent changes
        /// behind its heads (nearest first): a receiver that lacks some heads
        /// finds the history they share among them, and sends only what follows.
        recent: Vec<u64>,
        /// Whether this is itself an answer to a `Have` (then the receiver sends
        /// data but asks nothing back, so two peers never bounce requests).
        reply: bool,
    },
    /// "This record is purged here": the receiver purges it too (a purge is
    /// final) and refuses its data from then on.
    Purged {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// Automerge data of records of one collection.
    Records {
        /// The collection.
        collection: String,
        /// The records.
        records: Vec<RecordData>,
    },
    /// "I cannot send you this record" (too large for a message): the
    /// receiver names it in its report instead of waiting for it in silence.
    Skipped {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// Why, for people.
        reason: String,
    },
    /// "I refused this record you sent, and why": the sender names it in its
    /// report.
    Refused {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// Why, for people.
        reason: String,
    },
    /// The first part a session sends: the sender's clock (milliseconds since
    /// the epoch, as it would stamp a change now), which the receiver answers
    /// with a [`Part::HelloEcho`] so both measure their clock offset, and
    /// whether the sender is in live mode (a live peer offers changes to live
    /// peers only, and starts syncs with them on its own).
    Hello {
        /// The sender's clock.
        clock: u64,
        /// Whether the sender is live.
        live: bool,
    },
    /// The answer to a [`Part::Hello`], on the answering side's clock.
    HelloEcho {
        /// The `clock` of the hello answered.
        sent: u64,
        /// When the hello arrived.
        received: u64,
        /// When this answer left.
        replied: u64,
    },
    /// A live offer: "my heads of this record changed", sent outside a sync.
    /// A live receiver answers it like a `Have`; a receiver in manual mode
    /// leaves it until it syncs itself.
    Offer {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// The sender's heads.
        heads: Vec<[u8; 32]>,
        /// Prefixes of the sender's recent changes (as in `Have`).
        recent: Vec<u64>,
    },
}

impl Part {
    /// Whether the part asks the receiver for an answer.
    pub fn is_request(&self) -> bool {
        !matches!(
            self,
            Part::Records { .. }
                | Part::Purged { .. }
                | Part::Skipped { .. }
                | Part::Refused { .. }
                | Part::Hello { .. }
                | Part::HelloEcho { .. }
        )
    }
}

/// One record's automerge data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordData {
    /// The record id.
    pub id: String,
    /// A saved document, or changes, loadable with automerge's `load_incremental`.
    #[serde(with = "serde_bytes_vec")]
    pub bytes: Vec<u8>,
    /// The ids (32 bytes each) of the seals that sign the changes in `bytes`
    /// (see [`crate::sign`]).
    #[serde(with = "serde_bytes_vec")]
    pub seals: Vec<u8>,
    /// Seals this message brings that the session has not sent yet in this
    /// round, concatenated (see [`crate::sign::Seal::parse_all`]): usually only
    /// the first record that needs a seal carries it.
    #[serde(with = "serde_bytes_vec")]
    pub new_seals: Vec<u8>,
}

/// Encode byte vectors as one length-prefixed run (bincode's serde path would
/// otherwise encode a `Vec<u8>` element by element, which is the same on the wire
/// but slower).
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Why a peer refuses to talk (an incompatible version, a malformed message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The reason, for people.
    pub reason: String,
}

/// A decoded frame from a peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A protocol message.
    Msg(Msg),
    /// The peer refused the session.
    Refusal(Refusal),
}

/// Why a peer's bytes could not be taken as a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    /// The message is longer than [`MAX_MESSAGE`]; it was not decoded.
    #[error("message of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer speaks another protocol version.
    #[error("the peer speaks sync protocol version {found}; this build speaks version {supported}")]
    Version {
        /// The peer's version.
        found: u8,
        /// Ours.
        supported: u8,
    },
    /// The bytes do not decode as a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A decoded field is out of its bounds.
    #[error("message out of bounds: {0}")]
    OutOfBounds(String),
}

/// Encode a message (deflated when that saves a tenth or more: record data
/// compresses about fourfold, actor ids and seal ids repeating across
/// records).
pub fn encode(msg: &Msg) -> Result<Vec<u8>, CodecError> {
    let plain = codec::encode("sync message", MSG_TAG, PROTOCOL_VERSION, msg)?;
    let body = &plain[2..];
    if body.len() < DEFLATE_MIN {
        return Ok(plain);
    }
    let Ok(len) = u32::try_from(body.len()) else {
        return Ok(plain);
    };
    let mut out = Vec::with_capacity(body.len() / 2);
    out.extend_from_slice(&[DEFLATED_TAG, PROTOCOL_VERSION]);
    out.extend_from_slice(&len.to_be_bytes());
    let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    let deflated = std::io::Write::write_all(&mut z, body)
        .and_then(|()| z.finish())
        .ok()
        .filter(|d| d.len() <= plain.len() - plain.len() / 10);
    Ok(deflated.unwrap_or(plain))
}

/// The plain form (`[tag 'Y'][version][body]`) of a deflated frame.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, MsgError> {
    if bytes.get(1) != Some(&PROTOCOL_VERSION) {
        return Err(MsgError::Version {
            found: bytes.get(1).copied().unwrap_or(0),
            supported: PROTOCOL_VERSION,
        });
    }
    let len = bytes
        .get(2..6)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| MsgError::Malformed("a deflated message without its length".into()))?
        as usize;
    if len > MAX_MESSAGE {
        return Err(MsgError::TooLarge {
            len,
            max: MAX_MESSAGE,
        });
    }
    let mut plain = Vec::with_capacity(len + 2);
    plain.extend_from_slice(&[MSG_TAG, PROTOCOL_VERSION]);
    let z = flate2::read::DeflateDecoder::new(&bytes[6..]);
    std::io::Read::read_to_end(&mut std::io::Read::take(z, len as u64 + 1), &mut plain)
        .map_err(|e| MsgError::Malformed(format!("a deflated message does not inflate: {e}")))?;
    if plain.len() != len + 2 {
        return Err(MsgError::Malformed(format!(
            "a deflated message inflates to {} bytes, not the {len} it says",
            plain.len() - 2
        )));
    }
    Ok(plain)
}

/// Encode a refusal (readable by every protocol version).
pub fn encode_refusal(reason: &str) -> Vec<u8> {
    let r = Refusal {
        reason: reason.to_owned(),
    };
    // A struct of one string always encodes.
    codec::encode("sync refusal", REFUSAL_TAG, REFUSAL_VERSION, &r)
        .unwrap_or_else(|_| vec![REFUSAL_TAG, REFUSAL_VERSION, 0])
}

/// Decode and bounds-check a frame from a peer.
pub fn decode(bytes: &[u8]) -> Result<Frame, MsgError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(MsgError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE,
        });
    }
    if bytes.first() == Some(&REFUSAL_TAG) {
        let r: Refusal = codec::decode_limited::<_, MAX_MESSAGE>(
            "sync refusal",
            REFUSAL_TAG,
            REFUSAL_VERSION,
            bytes,
        )
        .map_err(|e| MsgError::Malformed(e.to_string()))?;
        return Ok(Frame::Refusal(r));
    }
    let inflated;
    let bytes = if bytes.first() == Some(&DEFLATED_TAG) {
        inflated = inflate(bytes)?;
        &inflated[..]
    } else {
        bytes
    };
    let msg: Msg =
        codec::decode_limited::<_, MAX_MESSAGE>("sync message", MSG_TAG, PROTOCOL_VERSION, bytes)
            .map_err(|e| match e {
            CodecError::UnsupportedVersion {
                found, supported, ..
            } => MsgError::Version { found, supported },
            e => MsgError::Malformed(e.to_string()),
        })?;
    check(&msg)?;
    Ok(Frame::Msg(msg))
}

fn check(msg: &Msg) -> Result<(), MsgError> {
    let oob = |what: String| Err(MsgError::OutOfBounds(what));
    if msg.parts.len() > Limits::PARTS {
        return oob(format!(
            "{} parts (limit {})",
            msg.parts.len(),
            Limits::PARTS
        ));
    }
    if msg.acks.len() > Limits::ACKS {
        return oob(format!("{} acks (limit {})", msg.acks.len(), Limits::ACKS));
    }
    let check_name = |c: &str, id: &str| -> Result<(), MsgError> {
        if c.is_empty() || c.len() > Limits::COLLECTION {
            return oob(format!("collection name of {} bytes", c.len()));
        }
        if id.is_empty() || id.len() > Limits::ID {
            return oob(format!("record id of {} bytes", id.len()));
        }
        Ok(())
    };
    for p in &msg.parts {
        match p {
            Part::Summary { node, .. } | Part::Children { node, .. } if !node.is_valid() => {
                return oob(format!("trie node {node:?}"));
            }
            Part::Items { node, items } => {
                if !node.is_valid() {
                    return oob(format!("trie node {node:?}"));
                }
                if items.len() > Limits::ITEMS {
                    return oob(format!("{} items (limit {})", items.len(), Limits::ITEMS));
                }
            }
            Part::NeedHashes(h) if h.len() > Limits::HASHES => {
                return oob(format!("{} key hashes (limit {})", h.len(), Limits::HASHES));
            }
            Part::Purged { collection, id } => check_name(collection, id)?,
            Part::Skipped {
                collection,
                id,
                reason,
            }
            | Part::Refused {
                collection,
                id,
                reason,
            } => {
                check_name(collection, id)?;
                if reason.len() > Limits::REASON {
                    return oob(format!("a reason of {} bytes", reason.len()));
                }
            }
            Part::Offer {
                collection,
                id,
                heads,
                recent,
            } => {
                check_name(collection, id)?;
                if heads.len() > Limits::HEADS || recent.len() > Limits::RECENT {
                    return oob(format!(
                        "an offer of {} heads and {} recent changes",
                        heads.len(),
                        recent.len()
                    ));
                }
            }
            Part::Have {
                collection,
                id,
                heads,
                recent,
                ..
            } => {
                check_name(collection, id)?;
                if heads.len() > Limits::HEADS {
                    return oob(format!("{} heads (limit {})", heads.len(), Limits::HEADS));
                }
                if recent.len() > Limits::RECENT {
                    return oob(format!(
                        "{} recent changes (limit {})",
                        recent.len(),
                        Limits::RECENT
                    ));
                }
            }
            Part::Records {
                collection,
                records,
            } => {
                if records.len() > Limits::RECORDS {
                    return oob(format!(
                        "{} records (limit {})",
                        records.len(),
                        Limits::RECORDS
                    ));
                }
                for r in records {
                    check_name(collection, &r.id)?;
                    if !r.seals.len().is_multiple_of(32) {
                        return oob(format!("a seal id list of {} bytes", r.seals.len()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Msg {
        Msg {
            id: 7,
            acks: vec![3],
            parts: vec![
                Part::Summary {
                    node: Node::ROOT,
                    fp: 99,
                    count: 2,
                },
                Part::Records {
                    collection: "job".into(),
                    records: vec![RecordData {
                        id: "j1".into(),
                        bytes: vec![1, 2, 3],
                        seals: vec![9; 32],
                        new_seals: vec![8; 100],
                    }],
                },
            ],
        }
    }

    #[test]
    fn messages_round_trip() {
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(decode(&bytes).expect("decodes"), Frame::Msg(sample()));
    }

    #[test]
    fn another_version_is_named() {
        let mut bytes = encode(&sample()).expect("encodes");
        bytes[1] = PROTOCOL_VERSION + 1;
        let e = decode(&bytes).expect_err("refused");
        assert!(matches!(e, MsgError::Version { found, .. } if found == PROTOCOL_VERSION + 1));
        assert!(e.to_string().contains("protocol version"), "{e}");
    }

    #[test]
    fn refusals_decode() {
        let bytes = encode_refusal("go away");
        assert_eq!(
            decode(&bytes).expect("decodes"),
            Frame::Refusal(Refusal {
                reason: "go away".into()
            })
        );
    }

    #[test]
    fn oversize_input_is_refused_before_decoding() {
        let bytes = vec![MSG_TAG; MAX_MESSAGE + 1];
        assert!(matches!(decode(&bytes), Err(MsgError::TooLarge { .. })));
    }

    #[test]
    fn a_length_prefix_beyond_the_message_limit_is_refused() {
        // tag, version, id 0, no acks, one part: Records with a collection whose
        // length prefix claims 1 GiB.
        let mut bytes = vec![MSG_TAG, PROTOCOL_VERSION, 0, 0, 1, 5];
        bytes.push(252); // varint: u32 follows
        bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
        assert!(matches!(decode(&bytes), Err(MsgError::Malformed(_))));
    }

    #[test]
    fn out_of_bounds_fields_are_refused() {
        let mut m = sample();
        m.parts.push(Part::Have {
            collection: "job".into(),
            id: "x".repeat(Limits::ID + 1),
            heads: vec![],
            recent: vec![],
            reply: false,
        });
        let bytes = encode(&m).expect("encodes");
        assert!(matches!(decode(&bytes), Err(MsgError::OutOfBounds(_))));
        let mut m = sample();
        m.parts.push(Part::Summary {
            node: Node {
                level: 2,
                prefix: 1 << 20,
            },
            fp: 0,
            count: 0,
        });
        let bytes = encode(&m).expect("encodes");
        assert!(matches!(decode(&bytes), Err(MsgError::OutOfBounds(_))));
    }

    fn large() -> Msg {
        let mut m = sample();
        m.parts.push(Part::Records {
            collection: "job".into(),
            records: (0..200)
                .map(|i| RecordData {
                    id: format!("j{i}"),
                    bytes: vec![7; 200],
                    seals: vec![9; 32],
                    new_seals: Vec::new(),
                })
                .collect(),
        });
        m
    }

    #[test]
    fn large_messages_travel_deflated_and_round_trip() {
        let bytes = encode(&large()).expect("encodes");
        assert_eq!(bytes[0], DEFLATED_TAG);
        let plain = codec::encode("sync message", MSG_TAG, PROTOCOL_VERSION, &large()).unwrap();
        assert!(
            bytes.len() * 4 < plain.len(),
            "{} vs {}",
            bytes.len(),
            plain.len()
        );
        assert_eq!(decode(&bytes).expect("decodes"), Frame::Msg(large()));
        // Small messages go as they are.
        assert_eq!(encode(&sample()).expect("encodes")[0], MSG_TAG);
    }

    #[test]
    fn a_deflated_message_that_lies_about_its_length_is_refused() {
        let mut bytes = encode(&large()).expect("encodes");
        // Says one byte less than it inflates to.
        let len = u32::from_be_bytes(bytes[2..6].try_into().unwrap()) - 1;
        bytes[2..6].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(decode(&bytes), Err(MsgError::Malformed(_))));
        // Claims more than the message limit: refused before inflating.
        bytes[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&bytes), Err(MsgError::TooLarge { .. })));
        // Another version, deflated: named as such.
        let mut other = encode(&large()).expect("encodes");
        other[1] = PROTOCOL_VERSION + 1;
        assert!(matches!(decode(&other), Err(MsgError::Version { .. })));
    }

    #[test]
    fn a_deflate_bomb_inflates_no_further_than_the_limit() {
        // 64 MiB of zeros deflate to about 64 KiB; the frame claims the
        // message limit, so inflating stops one byte past it.
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut z, &zeros).unwrap();
        }
        let body = z.finish().unwrap();
        let mut bytes = vec![DEFLATED_TAG, PROTOCOL_VERSION];
        bytes.extend_from_slice(&(MAX_MESSAGE as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(matches!(decode(&bytes), Err(MsgError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_deflated_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut framed = vec![DEFLATED_TAG, PROTOCOL_VERSION];
            framed.extend_from_slice(&bytes);
            let _ = decode(&framed);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            if bytes.len() > 2 { bytes[0] = MSG_TAG; bytes[1] = PROTOCOL_VERSION; }
            let _ = decode(&bytes);
        }
    }
}
