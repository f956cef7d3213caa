//! The replica group's members: which peers may exchange data with this
//! replica, and their role. Kept in the store under `g:m:<peer id>`.

use super::Replica;
use crate::error::{Error, Result};
use crate::store::keys;

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// An authority (an office hub, a server peer): its rules and verdicts count
    /// (used by the conflict and pending-event issues).
    Authority,
    /// A device in the field.
    Device,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Authority => b'a',
            Role::Device => b'd',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'a' => Some(Role::Authority),
            b'd' => Some(Role::Device),
            _ => None,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "authority" => Ok(Role::Authority),
            "device" => Ok(Role::Device),
            other => Err(format!("unknown role `{other}` (authority or device)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Authority => "authority",
            Role::Device => "device",
        })
    }
}

impl Replica {
    /// Add (or change the role of) a member, by peer id. Once a replica has any
    /// member, its node exchanges data with members only.
    pub fn add_member(&self, peer: &str, role: Role) -> Result<()> {
        if peer.is_empty() || peer.len() > 128 || peer.chars().any(char::is_control) {
            return Err(Error::InvalidId {
                id: peer.to_owned(),
                reason: "not a peer id",
            });
        }
        self.inner
            .storage
            .put(&keys::member(peer), &[role.byte()])?;
        self.inner.storage.flush()?;
        self.inner.refresh_authorities()?;
        self.inner
            .pending_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Remove a member. Returns whether it was one.
    pub fn remove_member(&self, peer: &str) -> Result<bool> {
        let key = keys::member(peer);
        let was = self.inner.storage.get(&key)?.is_some();
        self.inner.storage.delete(&key)?;
        self.inner.storage.flush()?;
        self.inner.refresh_authorities()?;
        self.inner
            .pending_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(was)
    }

    /// The members and their roles, by peer id. Empty: the group is open (any
    /// peer may sync).
    pub fn members(&self) -> Result<Vec<(String, Role)>> {
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::MEMBERS, &mut |k, v| {
                let peer = String::from_utf8_lossy(&k[keys::MEMBERS.len()..]).into_owned();
                match v.first().copied().and_then(Role::from_byte) {
                    Some(role) => out.push((peer, role)),
                    None => tracing::warn!(%peer, "a member entry with an unknown role is ignored"),
                }
                true
            })?;
        Ok(out)
    }

    /// Remember `addr` as an address of `peer`, so that a node on this store
    /// dials it at start and after the connection drops (kept locally, never
    /// replicated). Returns whether it was new.
    pub fn remember_address(&self, peer: &str, addr: &str) -> Result<bool> {
        if addr.is_empty() || addr.len() > 1024 || addr.chars().any(char::is_control) {
            return Err(Error::InvalidId {
                id: addr.to_owned(),
                reason: "not an address",
            });
        }
        let key = keys::address(peer);
        let mut addrs = self.addresses_at(&key)?;
        if addrs.iter().any(|a| a == addr) {
            return Ok(false);
        }
        addrs.push(addr.to_owned());
        self.inner.storage.put(&key, addrs.join("\n").as_bytes())?;
        self.inner.storage.flush()?;
        Ok(true)
    }

    /// Forget every address of `peer`. Returns whether there was one.
    pub fn forget_addresses(&self, peer: &str) -> Result<bool> {
        let key = keys::address(peer);
        let was = self.inner.storage.get(&key)?.is_some();
        self.inner.storage.delete(&key)?;
        self.inner.storage.flush()?;
        Ok(was)
    }

    /// Every remembered peer address: (peer id, addresses).
    pub fn addresses(&self) -> Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::ADDRESSES, &mut |k, v| {
                let peer = String::from_utf8_lossy(&k[keys::ADDRESSES.len()..]).into_owned();
                out.push((peer, parse_addresses(v)));
                true
            })?;
        Ok(out)
    }

    fn addresses_at(&self, key: &[u8]) -> Result<Vec<String>> {
        Ok(self
            .inner
            .storage
            .get(key)?
            .map(|v| parse_addresses(&v))
            .unwrap_or_default())
    }
}

/// An `a:` value: newline-separated addresses.
fn parse_addresses(v: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(v)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The automerge actor of a member: its peer id's key (a libp2p peer id), or
/// the actor id itself written in hex (replicas without a network identity,
/// such as in-memory ones).
pub(crate) fn actor_of_member(peer: &str) -> Option<automerge::ActorId> {
    if let Ok(id) = peer.parse::<libp2p::PeerId>() {
        return crate::node::identity::actor_of(&id);
    }
    hex_bytes(peer).map(|b| automerge::ActorId::from(b.as_slice()))
}

/// Bytes written in hex (an even, non-zero number of hex digits).
pub(crate) fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The actors of every member with the authority role.
pub(crate) fn authorities(
    storage: &dyn crate::store::Storage,
) -> Result<std::collections::HashSet<automerge::ActorId>> {
    let mut out = std::collections::HashSet::new();
    storage.for_each_prefix(keys::MEMBERS, &mut |k, v| {
        let peer = String::from_utf8_lossy(&k[keys::MEMBERS.len()..]);
        if v.first().copied().and_then(Role::from_byte) == Some(Role::Authority)
            && let Some(a) = actor_of_member(&peer)
        {
            out.insert(a);
        }
        true
    })?;
    Ok(out)
}

impl super::Inner {
    pub(crate) fn refresh_authorities(&self) -> Result<()> {
        let set = authorities(&*self.storage)?;
        *self.authorities.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(set);
        Ok(())
    }
}
