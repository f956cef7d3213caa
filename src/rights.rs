//! Rights: who may read and write what, from the group's replicated
//! membership (pure: no IO).
//!
//! A group with a *root* (the founding admin's actor, configured on every
//! replica with [`Replica::join_group`](crate::Replica::join_group)) enforces
//! rights; a replica without one is an open group (everyone reads and writes
//! everything, as before rights existed).
//!
//! - Members are records of the system collection `_member` (id: the member's
//!   actor in hex; fields `role`, `team`, `revoked_at`), roles records of
//!   `_role` (id: the role's name; `read` and `write`: collection names or
//!   `*`; `scope`: a field that narrows both to records whose value equals
//!   the member's `team`; `authority`: whether its members are authorities).
//!   Only admins (the root, and members of role `admin`) may write either;
//!   every peer checks that before applying.
//! - Three roles exist without being defined: `admin` (changes members and
//!   roles, reads and writes everything), `authority` (reads and writes
//!   everything; its members' verdicts, acknowledgements and values count as
//!   the authority's, see `docs/conflicts.md`) and `device` (reads and writes
//!   everything). A `_role` record of the same name replaces `authority` or
//!   `device`.
//! - A member reads the records of the collections its role reads or writes
//!   (within its scope) and every system record; it writes the collections its
//!   role writes (within its scope). Admins read and write everything.
//! - A revoked member reads nothing, and its changes made after the
//!   revocation (by their time) are refused; earlier ones stay.
//! - An actor that is not a member reads nothing and its changes are refused.

use std::collections::HashMap;

use crate::sign::hex;
use crate::value::{Fields, Value};

/// The system collection of members.
pub const MEMBERS: &str = "_member";
/// The system collection of roles.
pub const ROLES: &str = "_role";
/// The role whose members may change members and roles, and read and write
/// everything.
pub const ADMIN: &str = "admin";

/// What a role may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRights {
    /// Collections it reads (`*`: all).
    pub read: Vec<String>,
    /// Collections it writes (`*`: all); writing implies reading.
    pub write: Vec<String>,
    /// A field narrowing reads and writes to records whose value equals the
    /// member's team.
    pub scope: Option<String>,
    /// Whether its members are authorities (their verdicts and
    /// acknowledgements count, and conflicts are decided between them and
    /// the devices).
    pub authority: bool,
}

/// The role whose members are authorities unless a `_role` record says
/// otherwise.
pub const AUTHORITY: &str = "authority";
/// The role of devices: reads and writes everything, unless a `_role` record
/// says otherwise.
pub const DEVICE: &str = "device";

impl RoleRights {
    /// Everything: every collection read and written.
    pub fn everything() -> Self {
        RoleRights {
            read: vec!["*".into()],
            write: vec!["*".into()],
            scope: None,
            authority: false,
        }
    }

    /// The rights of a role that exists without being defined (`authority`,
    /// `device`).
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            AUTHORITY => Some(RoleRights {
                authority: true,
                ..Self::everything()
            }),
            DEVICE | ADMIN => Some(Self::everything()),
            _ => None,
        }
    }
}

impl RoleRights {
    /// Rights from a `_role` record's fields.
    pub fn from_fields(f: &Fields) -> Self {
        let list = |k: &str| match f.get(k) {
            Some(Value::List(v)) => v
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        RoleRights {
            read: list("read"),
            write: list("write"),
            scope: f.get("scope").and_then(|v| v.as_str()).map(str::to_owned),
            authority: matches!(f.get("authority"), Some(Value::Bool(true))),
        }
    }
}

/// A member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Its role's name.
    pub role: String,
    /// Its team (the value a role's scope field must have).
    pub team: Option<String>,
    /// When it was revoked (an HLC time as u64), if it was.
    pub revoked_at: Option<u64>,
}

impl Member {
    /// A member from a `_member` record's fields.
    pub fn from_fields(f: &Fields) -> Self {
        Member {
            role: f
                .get("role")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            team: f.get("team").and_then(|v| v.as_str()).map(str::to_owned),
            revoked_at: match f.get("revoked_at") {
                Some(Value::Int(t)) => u64::try_from(*t).ok(),
                _ => None,
            },
        }
    }
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Its author is not a member of the group.
    #[error("its author {0} is not a member of the group")]
    NotAMember(String),
    /// Its author was revoked before making it.
    #[error("its author {0} was revoked before making it")]
    Revoked(String),
    /// Only admins may change members and roles.
    #[error("its author {0} is not an admin; only admins change members and roles")]
    NotAdmin(String),
}

/// The group's rights, as this replica knows them.
#[derive(Debug, Clone, Default)]
pub struct Rights {
    root: Option<Vec<u8>>,
    members: HashMap<Vec<u8>, Member>,
    roles: HashMap<String, RoleRights>,
}

fn names(list: &[String], collection: &str) -> bool {
    list.iter().any(|c| c == "*" || c == collection)
}

impl Rights {
    /// Rights with this root (none: an open group), members and roles.
    pub fn new(
        root: Option<Vec<u8>>,
        members: HashMap<Vec<u8>, Member>,
        roles: HashMap<String, RoleRights>,
    ) -> Self {
        Rights {
            root,
            members,
            roles,
        }
    }

    /// Whether rights are enforced (the group has a root).
    pub fn enforced(&self) -> bool {
        self.root.is_some()
    }

    /// The member record of `actor`, if it is one.
    pub fn member(&self, actor: &[u8]) -> Option<&Member> {
        self.members.get(actor)
    }

    /// The group's root (its founding admin), if it has one.
    pub fn root(&self) -> Option<&[u8]> {
        self.root.as_deref()
    }

    /// Every member (revoked ones too), by actor.
    pub fn members(&self) -> impl Iterator<Item = (&[u8], &Member)> {
        self.members.iter().map(|(a, m)| (a.as_slice(), m))
    }

    /// The rights of role `name`: its `_role` record, or the built-in role.
    pub fn role(&self, name: &str) -> Option<RoleRights> {
        self.roles
            .get(name)
            .cloned()
            .or_else(|| RoleRights::builtin(name))
    }

    /// The defined roles (not the built-in ones), by name.
    pub fn roles(&self) -> impl Iterator<Item = (&str, &RoleRights)> {
        self.roles.iter().map(|(n, r)| (n.as_str(), r))
    }

    /// Whether `actor` is an authority: an unrevoked member whose role says
    /// so (the built-in `authority` role, or a role defined with
    /// `authority`).
    pub fn is_authority(&self, actor: &[u8]) -> bool {
        self.active(actor)
            .and_then(|m| self.role(&m.role))
            .is_some_and(|r| r.authority)
    }

    /// Every authority, by actor.
    pub fn authorities(&self) -> Vec<Vec<u8>> {
        self.members
            .keys()
            .filter(|a| self.is_authority(a))
            .cloned()
            .collect()
    }

    /// Whether `actor` may take part in the group: in a group with a root,
    /// the root or an unrevoked member; in an open group, anyone.
    pub fn in_good_standing(&self, actor: &[u8]) -> bool {
        match &self.root {
            None => true,
            Some(root) if root.as_slice() == actor => true,
            Some(_) => self.active(actor).is_some(),
        }
    }

    fn active(&self, actor: &[u8]) -> Option<&Member> {
        self.members.get(actor).filter(|m| m.revoked_at.is_none())
    }

    /// Whether `actor` is an admin: the root, or an unrevoked member of role
    /// `admin`. In an open group everyone is.
    pub fn is_admin(&self, actor: &[u8]) -> bool {
        match &self.root {
            None => true,
            Some(root) if root.as_slice() == actor => true,
            Some(_) => self.active(actor).is_some_and(|m| m.role == ADMIN),
        }
    }

    fn scoped(&self, m: &Member, role: &RoleRights, fields: &Fields) -> bool {
        match &role.scope {
            None => true,
            Some(field) => match (&m.team, fields.get(field)) {
                (Some(team), Some(v)) => v.as_str() == Some(team.as_str()),
                _ => false,
            },
        }
    }

    /// Whether `actor` may read the record `collection` with `fields`.
    pub fn can_read(&self, actor: &[u8], collection: &str, fields: &Fields) -> bool {
        self.allows(actor, collection, fields, |role| {
            names(&role.read, collection) || names(&role.write, collection)
        })
    }

    /// Whether `actor` offers the record to peers: whether it may read it,
    /// once it knows its own membership (before that, everything it holds:
    /// it holds only what it was sent and what it wrote).
    pub fn offers(&self, actor: &[u8], collection: &str, fields: &Fields) -> bool {
        if self.is_admin(actor) || self.members.contains_key(actor) {
            self.can_read(actor, collection, fields)
        } else {
            true
        }
    }

    /// Whether `actor` may write the record `collection` so that it has
    /// `fields`.
    pub fn can_write(&self, actor: &[u8], collection: &str, fields: &Fields) -> bool {
        if collection == MEMBERS || collection == ROLES {
            return self.is_admin(actor);
        }
        self.allows(actor, collection, fields, |role| {
            names(&role.write, collection)
        })
    }

    /// The rule both rights share: admins may; otherwise an unrevoked member
    /// may touch system records, and application records its role `lists`,
    /// within its scope.
    fn allows(
        &self,
        actor: &[u8],
        collection: &str,
        fields: &Fields,
        lists: impl Fn(&RoleRights) -> bool,
    ) -> bool {
        if self.is_admin(actor) {
            return true;
        }
        let Some(m) = self.active(actor) else {
            return false;
        };
        if collection.starts_with('_') {
            return true;
        }
        self.role(&m.role)
            .is_some_and(|role| lists(&role) && self.scoped(m, &role, fields))
    }

    /// Whether a change by `actor` made at `time` (HLC, as u64) to
    /// `collection` may be applied at all (membership and revocation; what
    /// a member may write is judged by authorities, see `docs/security.md`).
    pub fn admit(&self, actor: &[u8], collection: &str, time: u64) -> Result<(), Refusal> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        if root.as_slice() == actor {
            return Ok(());
        }
        let Some(m) = self.members.get(actor) else {
            return Err(Refusal::NotAMember(hex(actor)));
        };
        if m.revoked_at.is_some_and(|r| time > r) {
            return Err(Refusal::Revoked(hex(actor)));
        }
        if (collection == MEMBERS || collection == ROLES) && m.role != ADMIN {
            return Err(Refusal::NotAdmin(hex(actor)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::fields;

    fn rights() -> Rights {
        let mut members = HashMap::new();
        let m = |role: &str, team: Option<&str>, revoked_at| Member {
            role: role.into(),
            team: team.map(str::to_owned),
            revoked_at,
        };
        members.insert(vec![2], m("field", Some("a"), None));
        members.insert(vec![3], m("viewer", None, None));
        members.insert(vec![4], m("field", Some("a"), Some(100)));
        members.insert(vec![5], m(ADMIN, None, None));
        let mut roles = HashMap::new();
        roles.insert(
            "field".into(),
            RoleRights {
                read: vec![],
                write: vec!["job".into()],
                scope: Some("team".into()),
                authority: false,
            },
        );
        roles.insert(
            "viewer".into(),
            RoleRights {
                read: vec!["*".into()],
                write: vec![],
                scope: None,
                authority: false,
            },
        );
        Rights::new(Some(vec![1]), members, roles)
    }

    #[test]
    fn roles_scope_and_revocation_decide_reads_and_writes() {
        let r = rights();
        let a = fields([("team", Value::from("a"))]);
        let b = fields([("team", Value::from("b"))]);
        assert!(r.can_read(&[2], "job", &a) && !r.can_read(&[2], "job", &b));
        assert!(r.can_write(&[2], "job", &a) && !r.can_write(&[2], "job", &b));
        assert!(!r.can_read(&[2], "site", &a));
        assert!(r.can_read(&[2], MEMBERS, &Fields::new()));
        assert!(r.can_read(&[3], "job", &b) && !r.can_write(&[3], "job", &b));
        assert!(!r.can_read(&[4], "job", &a), "revoked reads nothing");
        assert!(!r.can_read(&[9], "job", &a), "strangers read nothing");
        assert!(r.is_admin(&[1]) && r.is_admin(&[5]) && !r.is_admin(&[2]));
        assert!(r.can_write(&[5], MEMBERS, &Fields::new()));
        assert!(!r.can_write(&[2], MEMBERS, &Fields::new()));
        assert_eq!(r.admit(&[4], "job", 100), Ok(()));
        assert!(matches!(
            r.admit(&[4], "job", 101),
            Err(Refusal::Revoked(_))
        ));
        assert!(matches!(
            r.admit(&[9], "job", 1),
            Err(Refusal::NotAMember(_))
        ));
        assert!(matches!(r.admit(&[2], ROLES, 1), Err(Refusal::NotAdmin(_))));
        assert_eq!(r.admit(&[1], ROLES, 1), Ok(()));
        assert!(!r.is_authority(&[2]) && !r.is_authority(&[1]));
        let open = Rights::default();
        assert!(open.can_write(&[9], MEMBERS, &Fields::new()) && open.admit(&[9], "x", 1).is_ok());
    }
}
