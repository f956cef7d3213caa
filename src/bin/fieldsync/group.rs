//! `fieldsync group`: the group's root, roles, members and revocation
//! (see docs/security.md).

use clap::Subcommand;
use fieldsync::rights::RoleRights;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::output::outln;
use super::{Ctx, Failure};

#[derive(Subcommand, Serialize, Deserialize)]
pub(crate) enum Group {
    /// Found a group with this store as its root (first admin).
    Found,
    /// Join the group whose root is ROOT (a peer id or an actor in hex).
    Join {
        /// The root's peer id (as printed by `fieldsync id`) or actor.
        root: String,
    },
    /// Define a role (admins only).
    Role {
        /// Its name.
        name: String,
        /// Collections it reads (comma-separated; `*` for all).
        #[arg(long, value_delimiter = ',')]
        read: Vec<String>,
        /// Collections it writes (comma-separated; `*` for all).
        #[arg(long, value_delimiter = ',')]
        write: Vec<String>,
        /// A field narrowing both to records whose value is the member's team.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Grant MEMBER (a peer id or actor) a role, optionally in a team
    /// (admins only).
    Grant {
        /// The member.
        member: String,
        /// The role.
        role: String,
        /// Its team.
        #[arg(long)]
        team: Option<String>,
    },
    /// Revoke MEMBER (admins only).
    Revoke {
        /// The member.
        member: String,
    },
    /// Show the root and the members this store knows.
    Show,
}

pub(crate) fn run(ctx: &Ctx, action: &Group, out: &mut Vec<u8>) -> Result<(), Failure> {
    let r = ctx.replica()?;
    match action {
        Group::Found => r.found_group()?,
        Group::Join { root } => r.join_group(root)?,
        Group::Role {
            name,
            read,
            write,
            scope,
        } => r.define_role(
            name,
            &RoleRights {
                read: read.clone(),
                write: write.clone(),
                scope: scope.clone(),
            },
        )?,
        Group::Grant { member, role, team } => r.grant(member, role, team.as_deref())?,
        Group::Revoke { member } => r.revoke(member)?,
        Group::Show => {
            let root = r.group_root()?.map(|a| a.to_hex_string());
            let rights = r.rights()?;
            let mut members: Vec<_> = r
                .list(fieldsync::rights::MEMBERS)?
                .into_iter()
                .map(|rec| {
                    let m = fieldsync::rights::Member::from_fields(&rec.fields);
                    (rec.id, m)
                })
                .collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            if ctx.json {
                let list: Vec<_> = members
                    .iter()
                    .map(|(id, m)| {
                        json!({ "actor": id, "role": m.role, "team": m.team, "revoked_at": m.revoked_at })
                    })
                    .collect();
                outln!(
                    out,
                    "{}",
                    json!({ "root": root, "enforced": rights.enforced(), "members": list })
                );
            } else {
                outln!(
                    out,
                    "root {}",
                    root.as_deref().unwrap_or("(none: an open group)")
                );
                for (id, m) in members {
                    let team = m.team.as_deref().unwrap_or("-");
                    let revoked = if m.revoked_at.is_some() {
                        " revoked"
                    } else {
                        ""
                    };
                    outln!(out, "{id} {} {team}{revoked}", m.role);
                }
            }
        }
    }
    Ok(())
}
