//! The group's replicated membership and rights (see [`crate::rights`]):
//! the root, roles, members, revocation.

use std::sync::Arc;

use automerge::ActorId;

use super::{Inner, Replica};
use crate::error::{Error, Result};
use crate::rights::{MEMBERS, Member, ROLES, Rights, RoleRights};
use crate::store::keys;
use crate::value::{Fields, Value};

/// The actor a member is named by: a libp2p peer id or an actor in hex.
fn actor_named(member: &str) -> Result<ActorId> {
    super::members::actor_of_member(member).ok_or_else(|| Error::InvalidId {
        id: member.to_owned(),
        reason: "not a member id (a peer id as `fieldsync id` prints it, or the key in hex)",
    })
}

impl Inner {
    /// The group's rights as stored (cached until members, roles or the
    /// root change).
    pub(crate) fn rights(&self) -> Result<Arc<Rights>> {
        if let Some(r) = self
            .rights
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(r);
        }
        let root = self.storage.get(keys::GROUP_ROOT)?;
        let mut members = std::collections::HashMap::new();
        let mut roles = std::collections::HashMap::new();
        if root.is_some() {
            for (collection, is_member) in [(MEMBERS, true), (ROLES, false)] {
                let mut bad = None;
                self.storage
                    .for_each_prefix(&keys::rows_of(collection), &mut |k, v| {
                        let Some(id) = keys::id_of_row(collection, k) else {
                            return true;
                        };
                        match super::row::Row::decode(v) {
                            Ok(row) if row.deleted => {}
                            Ok(row) if is_member => {
                                if let Some(a) = super::members::hex_bytes(id) {
                                    members.insert(a, Member::from_fields(&row.fields));
                                }
                            }
                            Ok(row) => {
                                roles.insert(id.to_owned(), RoleRights::from_fields(&row.fields));
                            }
                            Err(e) => bad = Some(Self::corrupt(collection, id, e.to_string())),
                        }
                        true
                    })?;
                if let Some(e) = bad {
                    return Err(e);
                }
            }
        }
        let rights = Arc::new(Rights::new(root, members, roles));
        let authorities: std::collections::HashSet<ActorId> = rights
            .authorities()
            .iter()
            .map(|a| ActorId::from(a.as_slice()))
            .collect();
        *self.authorities.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authorities);
        *self.rights.write().unwrap_or_else(|p| p.into_inner()) = Some(rights.clone());
        Ok(rights)
    }

    /// Forget the cached rights (members, roles or the root changed).
    pub(crate) fn invalidate_rights(&self) {
        *self.rights.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Replica {
    /// Found a group with this replica as its root (its first admin): from
    /// now on this replica enforces rights. Every other replica of the group
    /// is told the root with [`Replica::join_group`].
    pub fn found_group(&self) -> Result<()> {
        self.set_root(&self.inner.actor)?;
        self.migrate_legacy_members()
    }

    /// Join the group whose root (founding admin) is `root` (a peer id or an
    /// actor in hex): from now on this replica enforces the rights that
    /// group's admins write. Local configuration, like a trust anchor.
    pub fn join_group(&self, root: &str) -> Result<()> {
        self.set_root(&actor_named(root)?)
    }

    fn set_root(&self, root: &ActorId) -> Result<()> {
        self.inner.storage.put(keys::GROUP_ROOT, root.to_bytes())?;
        self.inner.storage.flush()?;
        self.inner.invalidate_rights();
        self.inner.state().scoped.clear();
        Ok(())
    }

    /// The group's root, if this replica belongs to a group with rights.
    pub fn group_root(&self) -> Result<Option<ActorId>> {
        Ok(self
            .inner
            .storage
            .get(keys::GROUP_ROOT)?
            .map(|b| ActorId::from(b.as_slice())))
    }

    /// The group's rights as this replica knows them.
    pub fn rights(&self) -> Result<Arc<Rights>> {
        self.inner.rights()
    }

    fn require_admin(&self, what: &str) -> Result<()> {
        let rights = self.inner.rights()?;
        if !rights.enforced() {
            return Err(Error::Forbidden {
                reason: format!("{what}: this replica belongs to no group (found or join one)"),
            });
        }
        if !rights.is_admin(self.inner.actor.to_bytes()) {
            return Err(Error::Forbidden {
                reason: format!("{what}: only the group's admins may"),
            });
        }
        Ok(())
    }

    /// Write (or replace) a system record.
    fn put_system(&self, collection: &str, id: &str, f: Fields) -> Result<()> {
        self.transaction(|tx| {
            tx.system = true;
            let done = match tx.update(collection, id, f.clone()) {
                Err(Error::NotFound { .. }) => tx.insert(collection, id, f).map(|_| ()),
                other => other.map(|_| ()),
            };
            tx.system = false;
            done
        })
    }

    /// Define (or redefine) a role (admins only; replicated).
    pub fn define_role(&self, name: &str, rights: &RoleRights) -> Result<()> {
        self.require_admin("defining a role")?;
        let list = |v: &[String]| Value::List(v.iter().map(|s| Value::from(s.as_str())).collect());
        let mut f = crate::fields([
            ("read", list(&rights.read)),
            ("write", list(&rights.write)),
            ("authority", Value::Bool(rights.authority)),
        ]);
        f.insert(
            "scope".into(),
            rights.scope.as_deref().map_or(Value::Null, Value::from),
        );
        self.put_system(ROLES, name, f)
    }

    /// Make `member` (a peer id or an actor in hex) a member with `role`,
    /// in `team` (admins only; replicated). Granting again changes the role
    /// or team, and lifts a revocation.
    pub fn grant(&self, member: &str, role: &str, team: Option<&str>) -> Result<()> {
        self.require_admin("adding or changing a member")?;
        let actor = actor_named(member)?;
        if self.inner.rights()?.role(role).is_none() {
            return Err(Error::NoRole {
                role: role.to_owned(),
            });
        }
        let f = crate::fields([
            ("role", Value::from(role)),
            ("team", team.map_or(Value::Null, Value::from)),
            ("revoked_at", Value::Null),
        ]);
        self.put_system(MEMBERS, &actor.to_hex_string(), f)
    }

    /// Revoke `member` (admins only; replicated): peers that learn of it send
    /// it nothing more and refuse its changes made after now; its earlier
    /// changes stay.
    pub fn revoke(&self, member: &str) -> Result<()> {
        self.require_admin("revoking a member")?;
        let actor = actor_named(member)?;
        let id = actor.to_hex_string();
        if self.inner.read_row(MEMBERS, &id)?.is_none() {
            return Err(Error::NotFound {
                collection: MEMBERS.to_owned(),
                id,
            });
        }
        let now = {
            let wall = (self.inner.config.clock)();
            self.inner.state().hlc.tick(wall)
        };
        let t = i64::try_from(now.as_u64()).unwrap_or(i64::MAX);
        self.put_system(MEMBERS, &id, crate::fields([("revoked_at", Value::Int(t))]))
    }
}
