//! Signed changes: every automerge change is signed by its author's ed25519
//! key, and every peer verifies a change before applying it.
//!
//! A replica's automerge actor id *is* its ed25519 public key (32 bytes), so
//! the key that must have signed a change is named by the change itself: a
//! change whose actor is not a valid key, whose signature is missing, or whose
//! signature does not verify under its actor's key is refused. A relay cannot
//! alter a change (its hash, which the signature covers, commits to every byte
//! of it and of its history), nor write in another member's name.
//!
//! What is signed: `DOMAIN || change hash` (the hash is SHA-256 over the
//! change's bytes, computed by automerge when it decodes them). No IO here;
//! the replica stores signatures beside the records and the sync protocol
//! carries them with the changes.

use std::collections::HashMap;
use std::sync::RwLock;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// What a signature covers, before the change hash: signatures made for other
/// purposes with the same key can never pass for a change's.
pub const DOMAIN: &[u8] = b"fieldsync change v1\0";

/// Bytes of one signature entry on the wire and in the store: the change hash
/// (32) then the signature (64).
pub const ENTRY: usize = 96;

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// No signature came with the change.
    #[error("change {hash} by {actor} carries no signature")]
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
    /// The signature does not verify under the actor's key: the change was
    /// altered, or written in another member's name.
    #[error("change {hash}: its signature does not verify under its actor {actor}")]
    Invalid {
        /// The change hash (hex).
        hash: String,
        /// Its actor (hex).
        actor: String,
    },
    /// A signature list whose length is not a whole number of entries.
    #[error("malformed signature list of {0} bytes")]
    Malformed(usize),
}

/// Signs this replica's changes.
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

    /// A new random key.
    pub(crate) fn generate() -> Self {
        Self::from_keypair(&libp2p::identity::ed25519::Keypair::generate())
    }

    /// The signer of a node identity's ed25519 key pair.
    pub(crate) fn from_keypair(key: &libp2p::identity::ed25519::Keypair) -> Self {
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&key.to_bytes()[..32]);
        Self::from_secret(&secret)
    }

    /// The secret key's bytes (for storing it).
    pub(crate) fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key: this replica's actor id.
    pub(crate) fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The signature of the change with this hash.
    pub(crate) fn sign(&self, hash: &[u8; 32]) -> [u8; 64] {
        self.key.sign(&message(hash)).to_bytes()
    }
}

/// What is signed for the change `hash`.
fn message(hash: &[u8; 32]) -> [u8; DOMAIN.len() + 32] {
    let mut msg = [0u8; DOMAIN.len() + 32];
    msg[..DOMAIN.len()].copy_from_slice(DOMAIN);
    msg[DOMAIN.len()..].copy_from_slice(hash);
    msg
}

/// One signature to check.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// The change's actor (its author's public key).
    pub(crate) actor: Vec<u8>,
    /// The change hash.
    pub(crate) hash: [u8; 32],
    /// The signature that came with it.
    pub(crate) sig: [u8; 64],
}

/// Verifies changes, keeping each actor's decoded key (decoding a point costs
/// about as much as a verification; a group has few actors).
#[derive(Default)]
pub(crate) struct Verifier {
    keys: RwLock<HashMap<Vec<u8>, Option<VerifyingKey>>>,
}

impl Verifier {
    fn key(&self, actor: &[u8]) -> Option<VerifyingKey> {
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(actor)
        {
            return *k;
        }
        let key = <&[u8; 32]>::try_from(actor)
            .ok()
            .and_then(|b| VerifyingKey::from_bytes(b).ok());
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.len() > 100_000 {
            keys.clear();
        }
        keys.insert(actor.to_vec(), key);
        key
    }

    /// Check, in one batch, that every signature is its actor's of its
    /// change (about twice as fast per signature as one by one). `false` if
    /// any is not (or an actor is not a key): check them one by one to learn
    /// which.
    pub(crate) fn verify_batch(&self, checks: &[Check]) -> bool {
        let mut keys = Vec::with_capacity(checks.len());
        for c in checks {
            match self.key(&c.actor) {
                Some(k) => keys.push(k),
                None => return false,
            }
        }
        let msgs: Vec<[u8; DOMAIN.len() + 32]> = checks.iter().map(|c| message(&c.hash)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        let sigs: Vec<Signature> = checks
            .iter()
            .map(|c| Signature::from_bytes(&c.sig))
            .collect();
        ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok()
    }

    /// Check that `sig` is `actor`'s signature of the change `hash`.
    pub(crate) fn verify(
        &self,
        actor: &[u8],
        hash: &[u8; 32],
        sig: Option<&[u8; 64]>,
    ) -> Result<(), SignError> {
        let names = || (hex(hash), hex(actor));
        let Some(key) = self.key(actor) else {
            let (hash, actor) = names();
            return Err(SignError::NotAKey { hash, actor });
        };
        let Some(sig) = sig else {
            let (hash, actor) = names();
            return Err(SignError::Missing { hash, actor });
        };
        key.verify(&message(hash), &Signature::from_bytes(sig))
            .map_err(|_| {
                let (hash, actor) = names();
                SignError::Invalid { hash, actor }
            })
    }
}

/// Parse a signature list (`ENTRY`-byte entries) into a map by change hash.
pub(crate) fn parse(bytes: &[u8]) -> Result<HashMap<[u8; 32], [u8; 64]>, SignError> {
    if !bytes.len().is_multiple_of(ENTRY) {
        return Err(SignError::Malformed(bytes.len()));
    }
    let mut out = HashMap::with_capacity(bytes.len() / ENTRY);
    for e in bytes.chunks_exact(ENTRY) {
        let mut h = [0u8; 32];
        let mut s = [0u8; 64];
        h.copy_from_slice(&e[..32]);
        s.copy_from_slice(&e[32..]);
        out.insert(h, s);
    }
    Ok(out)
}

/// Append one entry to a signature list.
pub(crate) fn push(list: &mut Vec<u8>, hash: &[u8; 32], sig: &[u8; 64]) {
    list.extend_from_slice(hash);
    list.extend_from_slice(sig);
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_hash_and_key() {
        let a = Signer::generate();
        let b = Signer::generate();
        let v = Verifier::default();
        let h = [7u8; 32];
        let sig = a.sign(&h);
        assert_eq!(v.verify(&a.public(), &h, Some(&sig)), Ok(()));
        let mut other = h;
        other[0] ^= 1;
        assert!(matches!(
            v.verify(&a.public(), &other, Some(&sig)),
            Err(SignError::Invalid { .. })
        ));
        assert!(matches!(
            v.verify(&b.public(), &h, Some(&sig)),
            Err(SignError::Invalid { .. })
        ));
        assert!(matches!(
            v.verify(&a.public(), &h, None),
            Err(SignError::Missing { .. })
        ));
        assert!(matches!(
            v.verify(&[1u8; 16], &h, Some(&sig)),
            Err(SignError::NotAKey { .. })
        ));
        let restored = Signer::from_secret(&a.secret());
        assert_eq!(restored.public(), a.public());
        assert_eq!(restored.sign(&h), sig);
    }

    #[test]
    fn signature_lists_round_trip_and_reject_partial_entries() {
        let mut list = Vec::new();
        push(&mut list, &[1; 32], &[2; 64]);
        push(&mut list, &[3; 32], &[4; 64]);
        let m = parse(&list).expect("whole entries");
        assert_eq!(m.get(&[3; 32]), Some(&[4; 64]));
        assert_eq!(parse(&list[..95]), Err(SignError::Malformed(95)));
    }
}
