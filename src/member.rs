//! Member ids: how people name a peer.
//!
//! A member of a group is an ed25519 key. Its **member id** is the libp2p peer
//! id of that key (`12D3KooW…`, base58), the one form shown wherever a person
//! reads or types one: `fieldsync id`, `members`, conflict entries, `sync`.
//! The key itself, in hex (64 digits), is the automerge actor id of every
//! change the member makes; commands accept it as an alias.
//!
//! No IO: the peer id of an ed25519 key is its protobuf encoding wrapped in an
//! identity multihash, in base58, which this module computes directly.

/// Why a text is not a member id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a member id: {reason} (a member id looks like `12D3KooW…`, as printed by `fieldsync id`)"
)]
pub struct MemberIdError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The identity multihash header and the protobuf header of an ed25519
/// public key (`KeyType::Ed25519 = 1`, 32 bytes of data).
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// The member id (peer id) of a 32-byte ed25519 public key, or `None` for
/// anything else (an actor that is not a key).
pub fn member_id(key: &[u8]) -> Option<String> {
    let key: &[u8; 32] = key.try_into().ok()?;
    let mut bytes = Vec::with_capacity(38);
    bytes.extend_from_slice(&PEER_ID_PREFIX);
    bytes.extend_from_slice(key);
    Some(bs58::encode(bytes).into_string())
}

/// The member id of an actor given in hex, or the hex itself when it is not
/// a key (changes made by other automerge programs).
pub fn member_id_of_hex(actor_hex: &str) -> String {
    unhex32(actor_hex)
        .and_then(|k| member_id(&k))
        .unwrap_or_else(|| actor_hex.to_owned())
}

/// A member id as people read it in running text: `12D3KooW` and the next
/// eight characters, then `…` (the whole id is in `--json` output and lists).
pub fn short_member_id(id: &str) -> String {
    match id.char_indices().nth(16) {
        Some((i, _)) => format!("{}…", &id[..i]),
        None => id.to_owned(),
    }
}

/// 32 bytes written as 64 hex digits.
fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The key (actor) a member id names: a peer id (`12D3KooW…`) or the key in
/// hex (64 digits).
pub fn parse_member_id(text: &str) -> Result<[u8; 32], MemberIdError> {
    let err = |reason| MemberIdError {
        text: text.to_owned(),
        reason,
    };
    let t = text.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return unhex32(t).ok_or_else(|| err("not 64 hex digits"));
    }
    if t.is_empty() {
        return Err(err("it is empty"));
    }
    let bytes = bs58::decode(t)
        .into_vec()
        .map_err(|_| err("it is neither a peer id nor 64 hex digits"))?;
    if bytes.len() != 38 || bytes[..6] != PEER_ID_PREFIX {
        return Err(err("it is not the peer id of an ed25519 key"));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[6..]);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_libp2p_peer_ids_and_parse_back() {
        for seed in 0u8..8 {
            let kp = libp2p::identity::Keypair::ed25519_from_bytes([seed; 32]).unwrap();
            let key = kp.public().try_into_ed25519().unwrap().to_bytes();
            let id = member_id(&key).unwrap();
            assert_eq!(id, kp.public().to_peer_id().to_string());
            assert!(id.starts_with("12D3KooW"));
            assert_eq!(parse_member_id(&id).unwrap(), key);
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(parse_member_id(&hex).unwrap(), key);
            assert_eq!(member_id_of_hex(&hex), id);
        }
        assert!(member_id(&[1, 2, 3]).is_none());
        assert!(parse_member_id("").is_err());
        assert!(parse_member_id("hello world").is_err());
        assert!(parse_member_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N").is_err());
        assert_eq!(short_member_id("12D3KooWAbCdEfGhIjKl"), "12D3KooWAbCdEfGh…");
    }
}
