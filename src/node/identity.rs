//! The node's identity: an ed25519 keypair kept in the store directory
//! (`identity.key`, libp2p's protobuf encoding, readable by its owner only), made
//! on first use. Its peer id is how other members name this replica.

use std::path::Path;

use automerge::ActorId;
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::pnet::PreSharedKey;

use super::NodeError;

/// The identity file's name inside a store directory.
pub const FILE: &str = "identity.key";

/// Load the store directory's identity, making and saving one if there is none.
/// A file that exists but does not decode is an error (it is never replaced:
/// replacing it would change the replica's peer id).
pub fn load_or_create(dir: &Path) -> Result<Keypair, NodeError> {
    match load(dir)? {
        Some(k) => Ok(k),
        None => create(dir),
    }
}

/// Load the store directory's identity; `None` if the file does not exist.
/// An empty or unreadable file, or a key that is not ed25519, is an error
/// that says so (never replaced).
pub fn load(dir: &Path) -> Result<Option<Keypair>, NodeError> {
    let path = dir.join(FILE);
    let bad = |reason: String| NodeError::Identity {
        path: path.display().to_string(),
        reason,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("it cannot be read: {e}"))),
    };
    if bytes.is_empty() {
        return Err(bad(
            "the file is empty (it was truncated or overwritten); restore it from a backup of this store"
                .into(),
        ));
    }
    let key = Keypair::from_protobuf_encoding(&bytes).map_err(|_| {
        bad(format!(
            "it is not an identity key ({} bytes that are not a libp2p ed25519 key); restore it from a backup of this store",
            bytes.len()
        ))
    })?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(bad("it holds a key that is not ed25519".into()));
    }
    Ok(Some(key))
}

/// Make a new identity and save it (readable by its owner only).
pub fn create(dir: &Path) -> Result<Keypair, NodeError> {
    let path = dir.join(FILE);
    let bad = |e: &dyn std::fmt::Display| NodeError::Identity {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| bad(&e))?;
    let key = Keypair::generate_ed25519();
    let bytes = key.to_protobuf_encoding().map_err(|e| bad(&e))?;
    write_private(&path, &bytes).map_err(|e| bad(&e))?;
    Ok(key)
}

/// The group secret's file name inside a store directory (libp2p's
/// pre-shared key format: `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
pub const SECRET_FILE: &str = "swarm.key";

/// The store's group secret, if it has one. While a store has one, its node
/// speaks only to peers holding the same secret (libp2p private network: every
/// TCP connection is encrypted with it before anything else is said).
pub fn load_secret(dir: &Path) -> Result<Option<PreSharedKey>, NodeError> {
    let path = dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_secret(&text)
            .map(Some)
            .map_err(|reason| NodeError::Identity {
                path: path.display().to_string(),
                reason,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Identity {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Parse a group secret in libp2p's key-file format.
pub fn parse_secret(text: &str) -> Result<PreSharedKey, String> {
    text.trim()
        .parse::<PreSharedKey>()
        .map_err(|e| format!("not a group secret ({e}); expected libp2p's swarm.key format"))
}

/// Save `secret` as the store's group secret (readable by its owner only),
/// replacing any previous one.
pub fn save_secret(dir: &Path, secret: PreSharedKey) -> Result<(), NodeError> {
    let path = dir.join(SECRET_FILE);
    let bad = |e: &dyn std::fmt::Display| NodeError::Identity {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(&e)),
    }
    write_private(&path, secret.to_key_file().as_bytes()).map_err(|e| bad(&e))
}

/// A new random group secret.
pub fn new_secret() -> PreSharedKey {
    // An ed25519 secret key is 32 bytes from the OS's random source.
    let key = libp2p::identity::ed25519::SecretKey::generate();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(key.as_ref());
    PreSharedKey::new(bytes)
}

/// The automerge actor id of a replica whose identity has this public key: the
/// 32 bytes of its ed25519 key.
pub fn actor_of_key(key: &PublicKey) -> Result<ActorId, NodeError> {
    let ed = key
        .clone()
        .try_into_ed25519()
        .map_err(|e| NodeError::Identity {
            path: String::new(),
            reason: format!("not an ed25519 key: {e}"),
        })?;
    Ok(ActorId::from(&ed.to_bytes()[..]))
}

/// The automerge actor id of the replica with this peer id (ed25519 peer ids
/// embed their public key), or `None` for other kinds of peer id.
pub fn actor_of(peer: &PeerId) -> Option<ActorId> {
    let key = PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    actor_of_key(&key).ok()
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = load_or_create(dir.path()).expect("made");
        let b = load_or_create(dir.path()).expect("loaded");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let peer = a.public().to_peer_id();
        assert_eq!(actor_of(&peer), actor_of_key(&a.public()).ok());
        std::fs::write(dir.path().join(FILE), b"garbage").expect("write");
        let e = load_or_create(dir.path()).expect_err("refused");
        assert!(e.to_string().contains("identity.key"), "{e}");
    }

    #[test]
    fn a_group_secret_is_saved_loaded_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(load_secret(dir.path()).expect("none").is_none());
        let secret = new_secret();
        assert_ne!(
            secret.fingerprint().to_string(),
            new_secret().fingerprint().to_string()
        );
        save_secret(dir.path(), secret).expect("saved");
        let back = load_secret(dir.path()).expect("read").expect("some");
        assert_eq!(
            back.fingerprint().to_string(),
            secret.fingerprint().to_string()
        );
        std::fs::write(
            dir.path().join(SECRET_FILE),
            "/key/swarm/psk/1.0.0/\n/base16/\nzz",
        )
        .expect("write");
        let e = load_secret(dir.path()).expect_err("refused");
        assert!(e.to_string().contains("not a group secret"), "{e}");
    }
}
