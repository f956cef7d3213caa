//! Signed changes: every automerge change is signed by its author's ed25519
//! key, and every peer verifies a change before applying it.
//!
//! A replica's automerge actor id *is* its ed25519 public key (32 bytes), so
//! the key that must have signed a change is named by the change itself: a
//! change whose actor is not a valid key, that no seal of its actor covers, or
//! whose seal's signature does not verify under that key is refused. A relay
//! cannot alter a change (its hash, which the seal lists, commits to every
//! byte of it and of its history), nor write in another member's name.
//!
//! **Seals.** A replica does not sign each change alone: when a transaction
//! commits, the hashes of the changes it made (at most [`SEAL_MAX`] per seal;
//! a larger transaction makes several) are listed in a [`Seal`] and the seal is
//! signed once. A change is authentic when a seal whose actor is the change's
//! actor lists its hash and that seal's signature verifies. So a bulk write of
//! a thousand records costs four signatures to make and four to check, not a
//! thousand; a transaction of one change costs what a signature per change
//! would. Seals travel with the records whose changes they cover (once per
//! round of a sync session) and every peer stores them, so relays forward them.
//!
//! A seal's bytes: `actor (32) | signature (64) | n (u16 LE) | n change hashes
//! (32 each, strictly ascending)`. Its id is `SHA-256(SEAL_DOMAIN || actor || n
//! || hashes)`; the signature is the actor's over `SEAL_DOMAIN || id`. No IO
//! here; the replica stores seals and the sync protocol carries them.

use std::collections::HashMap;
use std::sync::RwLock;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::Digest as _;

/// What a seal's id and signature cover first: a signature made for another
/// purpose with the same key can never pass for a seal's.
pub const SEAL_DOMAIN: &[u8] = b"fieldsync seal v1\0";

/// The most change hashes one seal lists (a seal is then at most 8 KiB: a
/// record sent alone never drags a large seal along).
pub const SEAL_MAX: usize = 256;

/// Bytes of a seal before its hashes: actor, signature, count.
const HEAD: usize = 32 + 64 + 2;

/// Why a change or a seal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// No seal of the change's actor that came with it (or is stored here)
    /// lists the change.
    #[error("change {hash} by {actor} carries no signature: no seal of its actor lists it")]
    Missing {
        /// The change hash (hex).
        hash: String,
        /// Its actor (hex).
        actor: String,
    },
    /// The change's actor is not an ed25519 public key, so no member can
    /// have signed it.
    #[error("change {hash} names actor {actor}, which is not a signing key")]
    NotAKey {
        /// The change hash (hex).
        hash: String,
        /// Its actor (hex).
        actor: String,
    },
    /// The seal listing the change does not verify under the actor's key: the
    /// seal was altered, or made in another member's name.
    #[error("change {hash}: its seal's signature does not verify under its actor {actor}")]
    Invalid {
        /// The change hash (hex).
        hash: String,
        /// Its actor (hex).
        actor: String,
    },
    /// Bytes that are not a seal (or a list of seal ids).
    #[error("malformed seal: {0}")]
    Malformed(String),
}

/// A signed list of change hashes by one actor (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Seal {
    id: [u8; 32],
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Seal({} by {}, {} changes)",
            hex(&self.id[..8]),
            hex(&self.actor()[..8]),
            self.len()
        )
    }
}

impl Seal {
    /// Assemble a seal of `actor` over `hashes` (sorted and deduplicated here;
    /// at most [`SEAL_MAX`] distinct), signed by `sign`, which is given the
    /// message to sign (`SEAL_DOMAIN || id`). `None` for no hashes or too many.
    pub fn assemble(
        actor: [u8; 32],
        mut hashes: Vec<[u8; 32]>,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Option<Seal> {
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.is_empty() || hashes.len() > SEAL_MAX {
            return None;
        }
        let mut bytes = Vec::with_capacity(HEAD + 32 * hashes.len());
        bytes.extend_from_slice(&actor);
        bytes.extend_from_slice(&[0u8; 64]);
        bytes.extend_from_slice(&(hashes.len() as u16).to_le_bytes());
        for h in &hashes {
            bytes.extend_from_slice(h);
        }
        let id = seal_id(&bytes);
        let sig = sign(&message(&id));
        bytes[32..96].copy_from_slice(&sig);
        Some(Seal { id, bytes })
    }

    /// Read one seal from the front of `bytes`; returns it and the bytes it
    /// took. Checks the layout only (the signature is checked when a replica
    /// receives the seal).
    pub fn parse(bytes: &[u8]) -> Result<(Seal, usize), SignError> {
        if bytes.len() < HEAD {
            return Err(SignError::Malformed(format!(
                "{} bytes, shorter than a seal's header",
                bytes.len()
            )));
        }
        let n = u16::from_le_bytes([bytes[96], bytes[97]]) as usize;
        if n == 0 || n > SEAL_MAX {
            return Err(SignError::Malformed(format!(
                "{n} change hashes (1 to {SEAL_MAX})"
            )));
        }
        let len = HEAD + 32 * n;
        if bytes.len() < len {
            return Err(SignError::Malformed(format!(
                "{n} hashes announced in {} bytes",
                bytes.len()
            )));
        }
        let body = &bytes[HEAD..len];
        if body
            .chunks_exact(32)
            .zip(body.chunks_exact(32).skip(1))
            .any(|(a, b)| a >= b)
        {
            return Err(SignError::Malformed(
                "change hashes not strictly ascending".into(),
            ));
        }
        let bytes = bytes[..len].to_vec();
        Ok((
            Seal {
                id: seal_id(&bytes),
                bytes,
            },
            len,
        ))
    }

    /// Read a concatenation of seals.
    pub fn parse_all(mut bytes: &[u8]) -> Result<Vec<Seal>, SignError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (s, used) = Seal::parse(bytes)?;
            out.push(s);
            bytes = &bytes[used..];
        }
        Ok(out)
    }

    /// The seal's id (what its signature covers, after [`SEAL_DOMAIN`]).
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    /// The actor (public key) that made it.
    pub fn actor(&self) -> &[u8; 32] {
        self.bytes[..32].try_into().unwrap_or(&[0; 32])
    }

    /// Its signature.
    pub fn signature(&self) -> &[u8; 64] {
        self.bytes[32..96].try_into().unwrap_or(&[0; 64])
    }

    /// How many change hashes it lists.
    pub fn len(&self) -> usize {
        (self.bytes.len() - HEAD) / 32
    }

    /// Whether it lists none (never, for a parsed or assembled seal).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The change hashes it lists, ascending.
    pub fn hashes(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.bytes[HEAD..]
            .chunks_exact(32)
            .filter_map(|c| <&[u8; 32]>::try_from(c).ok())
    }

    /// Whether it lists the change `hash`.
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = &self.bytes[HEAD + 32 * mid..HEAD + 32 * mid + 32];
            match at.cmp(hash.as_slice()) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        false
    }

    /// Its bytes (see the module docs).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A seal's id from its bytes (the signature's place is skipped).
fn seal_id(bytes: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(SEAL_DOMAIN);
    h.update(&bytes[..32]);
    h.update(&bytes[96..]);
    h.finalize().into()
}

/// What is signed for the seal `id`.
fn message(id: &[u8; 32]) -> [u8; SEAL_DOMAIN.len() + 32] {
    let mut msg = [0u8; SEAL_DOMAIN.len() + 32];
    msg[..SEAL_DOMAIN.len()].copy_from_slice(SEAL_DOMAIN);
    msg[SEAL_DOMAIN.len()..].copy_from_slice(id);
    msg
}

/// Signs this replica's seals.
pub(crate) struct Signer {
    key: SigningKey,
}

impl Signer {
    /// A signer from a 32-byte ed25519 secret key.
    pub(crate) fn from_secret(secret: &[u8; 32]) -> Self {
        Signer {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The secret key's bytes (for storing it).
    pub(crate) fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key: this replica's actor id.
    pub(crate) fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// A seal over `hashes` (this replica's new changes; 1 to [`SEAL_MAX`]).
    pub(crate) fn seal_one(&self, hashes: Vec<[u8; 32]>) -> Option<Seal> {
        Seal::assemble(self.public(), hashes, |m| self.key.sign(m).to_bytes())
    }

    /// Seals over `hashes`, [`SEAL_MAX`] to a seal.
    #[cfg(test)]
    pub(crate) fn seal(&self, hashes: &[[u8; 32]]) -> Vec<Seal> {
        hashes
            .chunks(SEAL_MAX)
            .filter_map(|chunk| self.seal_one(chunk.to_vec()))
            .collect()
    }
}

/// Verifies seals, keeping each actor's decoded key (decoding a point costs
/// about as much as a verification; a group has few actors) and the seals it
/// verified (a seal covers many changes, which arrive in many messages).
#[derive(Default)]
pub(crate) struct Verifier {
    keys: RwLock<HashMap<[u8; 32], Option<VerifyingKey>>>,
    /// Verified seals: id → the signature that verified.
    verified: RwLock<HashMap<[u8; 32], [u8; 64]>>,
}

/// Entries the verifier's caches hold before they start over.
const CACHE_MAX: usize = 100_000;

impl Verifier {
    /// The key of `actor`, `None` if it is not a valid ed25519 public key.
    pub(crate) fn key(&self, actor: &[u8]) -> Option<VerifyingKey> {
        let actor = <[u8; 32]>::try_from(actor).ok()?;
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&actor)
        {
            return *k;
        }
        let key = VerifyingKey::from_bytes(&actor).ok();
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.len() > CACHE_MAX {
            keys.clear();
        }
        keys.insert(actor, key);
        key
    }

    fn known(&self, seal: &Seal) -> bool {
        self.verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&seal.id)
            == Some(seal.signature())
    }

    fn remember<'a>(&self, seals: impl Iterator<Item = &'a Seal>) {
        let mut v = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if v.len() > CACHE_MAX {
            v.clear();
        }
        for s in seals {
            v.insert(s.id, *s.signature());
        }
    }

    /// Whether `seal`'s signature is its actor's.
    pub(crate) fn verify(&self, seal: &Seal) -> bool {
        if self.known(seal) {
            return true;
        }
        let ok = self.key(seal.actor()).is_some_and(|k| {
            k.verify(&message(&seal.id), &Signature::from_bytes(seal.signature()))
                .is_ok()
        });
        if ok {
            self.remember(std::iter::once(seal));
        }
        ok
    }

    /// Check several seals in one batch (about twice as fast per signature
    /// as one by one; seals verified before are skipped). `false` if any
    /// fails: check them one by one with [`Self::verify`] to learn which.
    pub(crate) fn verify_batch(&self, seals: &[&Seal]) -> bool {
        let todo: Vec<&Seal> = seals.iter().copied().filter(|s| !self.known(s)).collect();
        if todo.is_empty() {
            return true;
        }
        let mut keys = Vec::with_capacity(todo.len());
        for s in &todo {
            match self.key(s.actor()) {
                Some(k) => keys.push(k),
                None => return false,
            }
        }
        let msgs: Vec<[u8; SEAL_DOMAIN.len() + 32]> = todo.iter().map(|s| message(&s.id)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        let sigs: Vec<Signature> = todo
            .iter()
            .map(|s| Signature::from_bytes(s.signature()))
            .collect();
        let ok = ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok();
        if ok {
            self.remember(todo.into_iter());
        }
        ok
    }
}

/// Lower-case hex of `b`.
pub(crate) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(b.len() * 2);
    for x in b {
        out.push(char::from(DIGITS[usize::from(x >> 4)]));
        out.push(char::from(DIGITS[usize::from(x & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_verifies_only_unaltered_and_under_its_actors_key() {
        let a = Signer::from_secret(&[1; 32]);
        let b = Signer::from_secret(&[2; 32]);
        let v = Verifier::default();
        let hashes = [[7u8; 32], [1u8; 32], [7u8; 32]];
        let seals = a.seal(&hashes);
        assert_eq!(seals.len(), 1);
        let s = &seals[0];
        assert_eq!(s.len(), 2, "sorted and deduplicated");
        assert!(s.contains(&[1u8; 32]) && s.contains(&[7u8; 32]));
        assert!(!s.contains(&[2u8; 32]));
        assert_eq!(s.actor(), &a.public());
        assert!(v.verify(s));
        // Parsed back from its bytes, it is the same seal.
        let (p, used) = Seal::parse(s.as_bytes()).expect("parses");
        assert_eq!((&p, used), (s, s.as_bytes().len()));
        // An added hash (kept ascending) changes the id: the signature fails.
        let mut bytes = s.as_bytes().to_vec();
        bytes[96] = 3;
        bytes.extend_from_slice(&[9u8; 32]);
        let (altered, _) = Seal::parse(&bytes).expect("well formed");
        assert!(!Verifier::default().verify(&altered));
        // Relabelled to b's actor: b's key does not verify a's signature.
        let mut bytes = s.as_bytes().to_vec();
        bytes[..32].copy_from_slice(&b.public());
        let (relabelled, _) = Seal::parse(&bytes).expect("well formed");
        assert!(!v.verify(&relabelled));
        // A batch fails if one seal in it does, and passes without it.
        let good = b.seal(&[[5u8; 32]]);
        assert!(!Verifier::default().verify_batch(&[&good[0], &relabelled]));
        assert!(Verifier::default().verify_batch(&[&good[0], s]));
        // An actor that is no curve point.
        let mut bytes = s.as_bytes().to_vec();
        bytes[..32].copy_from_slice(&[0xff; 32]);
        let (junk, _) = Seal::parse(&bytes).expect("well formed");
        assert!(!v.verify(&junk));
        let restored = Signer::from_secret(&a.secret());
        assert_eq!(restored.public(), a.public());
        assert_eq!(restored.seal(&hashes), seals, "deterministic");
    }

    #[test]
    fn large_transactions_make_several_seals_and_bad_bytes_are_refused() {
        let a = Signer::from_secret(&[3; 32]);
        let hashes: Vec<[u8; 32]> = (0..600u32)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..4].copy_from_slice(&i.to_be_bytes());
                h
            })
            .collect();
        let seals = a.seal(&hashes);
        assert_eq!(
            seals.iter().map(Seal::len).collect::<Vec<_>>(),
            [256, 256, 88]
        );
        let all: Vec<u8> = seals.iter().flat_map(|s| s.as_bytes().to_vec()).collect();
        assert_eq!(Seal::parse_all(&all).expect("parses"), seals);
        assert!(matches!(
            Seal::parse_all(&all[..all.len() - 1]),
            Err(SignError::Malformed(_))
        ));
        // Hashes out of order.
        let mut bytes = seals[2].as_bytes().to_vec();
        bytes.swap(HEAD + 3, HEAD + 32 + 3);
        assert!(matches!(Seal::parse(&bytes), Err(SignError::Malformed(_))));
        let mut zero = seals[2].as_bytes()[..HEAD].to_vec();
        zero[96] = 0;
        zero[97] = 0;
        assert!(matches!(Seal::parse(&zero), Err(SignError::Malformed(_))));
        assert!(Seal::assemble([0; 32], Vec::new(), |_| [0; 64]).is_none());
    }
}
