//! The group's members as the rest of fieldsync reads them: the replicated
//! `_member` records an admin writes (see `crate::rights` and
//! `docs/security.md`), named by member id; the addresses this node
//! remembers for its peers (local); and the migration of the local member
//! list of earlier releases.

use super::Replica;
use crate::error::{Error, Result};
use crate::store::keys;

/// A built-in role (custom roles, defined with
/// [`Replica::define_role`], are named by text in [`Replica::grant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Changes members and roles; reads and writes everything.
    Admin,
    /// An authority (an office hub, a server peer): its rules, verdicts and
    /// acknowledgements count, and conflicts are decided between it and the
    /// devices.
    Authority,
    /// A device in the field: reads and writes everything.
    Device,
}

impl Role {
    /// The role's name (`admin`, `authority`, `device`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => crate::rights::ADMIN,
            Role::Authority => crate::rights::AUTHORITY,
            Role::Device => crate::rights::DEVICE,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "authority" => Ok(Role::Authority),
            "device" => Ok(Role::Device),
            other => Err(format!(
                "unknown role `{other}` (admin, authority, device, or a role defined with `fieldsync group role`)"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A member of the group, as this replica knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MemberInfo {
    /// Its member id (peer id).
    pub member: String,
    /// Its role's name.
    pub role: String,
    /// Its team, if its role is scoped.
    pub team: Option<String>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Whether it is an authority.
    pub authority: bool,
    /// Whether it is an admin (the root, or role `admin`).
    pub admin: bool,
    /// Whether it is the group's root (its founding admin).
    pub root: bool,
    /// Whether it is this replica.
    pub this: bool,
}

impl Replica {
    /// Add a member with a built-in role (or change its role): the same as
    /// [`Replica::grant`] with the role's name. Admins only; replicated.
    pub fn add_member(&self, member: &str, role: Role) -> Result<()> {
        self.grant(member, role.name(), None)
    }

    /// Revoke a member ([`Replica::revoke`]). Returns whether it was one.
    pub fn remove_member(&self, member: &str) -> Result<bool> {
        match self.revoke(member) {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The group's members as this replica knows them (the root first, then
    /// by member id). Empty for an open group.
    pub fn members(&self) -> Result<Vec<MemberInfo>> {
        let rights = self.inner.rights()?;
        let me = self.inner.actor.to_bytes();
        let id = |a: &[u8]| crate::member::member_id(a).unwrap_or_else(|| crate::sign::hex(a));
        let mut out: Vec<MemberInfo> = rights
            .members()
            .map(|(a, m)| MemberInfo {
                member: id(a),
                role: m.role.clone(),
                team: m.team.clone(),
                revoked: m.revoked_at.is_some(),
                authority: rights.is_authority(a),
                admin: rights.is_admin(a),
                root: rights.root() == Some(a),
                this: a == me,
            })
            .collect();
        if let Some(root) = rights.root()
            && !out.iter().any(|m| m.root)
        {
            out.push(MemberInfo {
                member: id(root),
                role: crate::rights::ADMIN.to_owned(),
                team: None,
                revoked: false,
                authority: false,
                admin: true,
                root: true,
                this: root == me,
            });
        }
        out.sort_by(|a, b| (!a.root, &a.member).cmp(&(!b.root, &b.member)));
        Ok(out)
    }

    /// The entries of the local member list of earlier releases (`g:m:`,
    /// member id and role) that are not migrated yet: they are not used. An
    /// admin's replica migrates them into replicated members when it opens.
    pub fn legacy_members(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::MEMBERS, &mut |k, v| {
                let peer = String::from_utf8_lossy(&k[keys::MEMBERS.len()..]).into_owned();
                let role = match v.first() {
                    Some(b'a') => "authority",
                    _ => "device",
                };
                out.push((peer, role.to_owned()));
                true
            })?;
        Ok(out)
    }

    /// Migrate the local member list of earlier releases: on an admin of a
    /// group, each entry becomes a replicated member and the list is removed;
    /// elsewhere it is left, unused, with a warning saying what to do.
    pub(crate) fn migrate_legacy_members(&self) -> Result<()> {
        let legacy = self.legacy_members()?;
        if legacy.is_empty() {
            return Ok(());
        }
        let rights = self.inner.rights()?;
        if !(rights.enforced() && rights.is_admin(self.inner.actor.to_bytes())) {
            tracing::warn!(
                entries = legacy.len(),
                "this store's local member list (from an earlier release) is not used any more: membership and authorities are replicated records an admin writes; found a group on the hub (`fieldsync group found`) and add the members there (`fieldsync members add ID --role authority|device`)"
            );
            return Ok(());
        }
        for (peer, role) in &legacy {
            match self.grant(peer, role, None) {
                Ok(()) => tracing::info!(%peer, %role, "migrated a member of the local list"),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "could not migrate a member of the local list")
                }
            }
            self.inner.storage.delete(&keys::member(peer))?;
        }
        self.inner.storage.flush()?;
        Ok(())
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

/// The automerge actor of a member: its member id's key (a peer id), or the
/// key itself written in hex.
pub(crate) fn actor_of_member(peer: &str) -> Option<automerge::ActorId> {
    crate::member::parse_member_id(peer)
        .ok()
        .map(|k| automerge::ActorId::from(&k[..]))
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
