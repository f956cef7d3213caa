//! `fieldsync group` (found or join a group, define roles, show it) and
//! `fieldsync members` (add, remove, list): one membership, replicated
//! records written by admins (see docs/security.md). Members are named by
//! their member id (the peer id `fieldsync id` prints; the key in hex is
//! accepted too).

use clap::Subcommand;
use fieldsync::rights::RoleRights;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::output::outln;
use super::{Ctx, Failure};

#[derive(Subcommand, Serialize, Deserialize)]
pub(crate) enum Group {
    /// Found a group with this store as its root (its first admin). With
    /// `--role`, this store is also a member of that role (a hub is usually
    /// `--role authority`).
    Found {
        /// This store's own role in the group.
        #[arg(long)]
        role: Option<String>,
    },
    /// Join the group whose root is ROOT (its member id, as `fieldsync id`
    /// prints it on the root's store). An admin then adds this store with
    /// `fieldsync members add`.
    Join {
        /// The root's member id.
        root: String,
    },
    /// Define (or redefine) a role (admins only).
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
        /// Its members are authorities (their rules and values count).
        #[arg(long)]
        authority: bool,
    },
    /// Show the group: its root, its members and its roles.
    Show,
}

#[derive(Subcommand, Serialize, Deserialize)]
pub(crate) enum Members {
    /// Add a member, or change its role or team (admins only; replicated).
    Add {
        /// Its member id (as `fieldsync id` prints it on its store).
        member: String,
        /// Its role: `authority`, `device`, `admin`, or one defined with
        /// `fieldsync group role`.
        #[arg(long, default_value = "device")]
        role: String,
        /// Its team (for roles scoped to a team).
        #[arg(long)]
        team: Option<String>,
    },
    /// Revoke a member (admins only; replicated): peers that learn of it send
    /// it nothing more and refuse its changes made from now on.
    Remove {
        /// Its member id.
        member: String,
    },
    /// List the members and their roles.
    List,
}

fn short(id: &str) -> String {
    fieldsync::member::short_member_id(id)
}

/// This store's member id.
fn my_id(r: &fieldsync::Replica) -> String {
    fieldsync::member::member_id(r.actor().to_bytes()).unwrap_or_else(|| r.actor().to_hex_string())
}

/// A member id given on the command line, as the canonical member id (or a
/// clear error).
fn member_arg(text: &str) -> Result<String, Failure> {
    let key = fieldsync::member::parse_member_id(text).map_err(|e| Failure(e.to_string()))?;
    Ok(fieldsync::member::member_id(&key).unwrap_or_else(|| text.to_owned()))
}

pub(crate) fn run(ctx: &Ctx, action: &Group, out: &mut Vec<u8>) -> Result<(), Failure> {
    let r = ctx.replica()?;
    match action {
        Group::Found { role } => {
            r.found_group()?;
            let me = my_id(&r);
            if let Some(role) = role {
                r.grant(&me, role, None)?;
            }
            if ctx.json {
                outln!(
                    out,
                    "{}",
                    json!({ "founded": true, "root": me, "role": role })
                );
            } else {
                outln!(
                    out,
                    "founded a group: this store ({me}) is its root and first admin"
                );
                if let Some(role) = role {
                    outln!(out, "this store is a member of role `{role}`");
                }
                outln!(
                    out,
                    "next: on each other store run `fieldsync group join {me}`, then add it here with `fieldsync members add ITS_ID --role device`"
                );
            }
        }
        Group::Join { root } => {
            let root = member_arg(root)?;
            r.join_group(&root)?;
            let me = my_id(&r);
            if ctx.json {
                outln!(out, "{}", json!({ "joined": root, "member": me }));
            } else {
                outln!(out, "joined the group of root {root}");
                outln!(
                    out,
                    "next: an admin adds this store with `fieldsync members add {me} --role device`; until it syncs with one, this store takes only the root's changes"
                );
            }
        }
        Group::Role {
            name,
            read,
            write,
            scope,
            authority,
        } => {
            let rights = RoleRights {
                read: read.clone(),
                write: write.clone(),
                scope: scope.clone(),
                authority: *authority,
            };
            r.define_role(name, &rights)?;
            if ctx.json {
                outln!(
                    out,
                    "{}",
                    json!({ "role": name, "read": read, "write": write, "scope": scope, "authority": authority })
                );
            } else {
                let list = |v: &[String]| {
                    if v.is_empty() {
                        "nothing".to_owned()
                    } else {
                        v.join(", ")
                    }
                };
                outln!(
                    out,
                    "defined role `{name}`: reads {}, writes {}{}{}",
                    list(read),
                    list(write),
                    scope
                        .as_ref()
                        .map(|s| format!(", only records whose `{s}` is the member's team"))
                        .unwrap_or_default(),
                    if *authority {
                        "; its members are authorities"
                    } else {
                        ""
                    }
                );
            }
        }
        Group::Show => show(ctx, &r, out, true)?,
    }
    Ok(())
}

pub(crate) fn members(ctx: &Ctx, action: &Members, out: &mut Vec<u8>) -> Result<(), Failure> {
    let r = ctx.replica()?;
    match action {
        Members::Add { member, role, team } => {
            let id = member_arg(member)?;
            let known = r.members()?.into_iter().find(|m| m.member == id);
            r.grant(&id, role, team.as_deref())?;
            let team_text = team
                .as_ref()
                .map(|t| format!(" in team `{t}`"))
                .unwrap_or_default();
            if ctx.json {
                outln!(
                    out,
                    "{}",
                    json!({ "member": id, "role": role, "team": team, "new": known.is_none() })
                );
            } else if let Some(k) = known {
                outln!(
                    out,
                    "changed member {id}: role `{}` -> `{role}`{team_text}",
                    k.role
                );
            } else {
                outln!(out, "added member {id} as `{role}`{team_text}");
            }
        }
        Members::Remove { member } => {
            let id = member_arg(member)?;
            if !r.remove_member(&id)? {
                return Err(Failure(format!(
                    "{id} is not a member of this group (see `fieldsync members`)"
                )));
            }
            if ctx.json {
                outln!(out, "{}", json!({ "revoked": id }));
            } else {
                outln!(
                    out,
                    "revoked member {id}: peers that learn of it send it nothing more and refuse its changes made from now on"
                );
            }
        }
        Members::List => show(ctx, &r, out, false)?,
    }
    Ok(())
}

fn show(ctx: &Ctx, r: &fieldsync::Replica, out: &mut Vec<u8>, roles: bool) -> Result<(), Failure> {
    let members = r.members()?;
    let rights = r.rights()?;
    let legacy = r.legacy_members()?;
    if ctx.json {
        let defined: Vec<_> = rights
            .roles()
            .map(|(n, x)| json!({ "name": n, "read": x.read, "write": x.write, "scope": x.scope, "authority": x.authority }))
            .collect();
        outln!(
            out,
            "{}",
            json!({
                "group": rights.enforced(),
                "this": my_id(r),
                "members": members,
                "roles": defined,
                "old_local_members": legacy.iter().map(|(p, role)| json!({"member": p, "role": role})).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    if !rights.enforced() {
        outln!(
            out,
            "no group: this store syncs with any peer and knows no authority (`fieldsync group found` on the hub, `fieldsync group join ROOT` on the others)"
        );
    } else {
        outln!(out, "{:<54} {:<12} {:<10} notes", "member", "role", "team");
        for m in &members {
            let mut notes = Vec::new();
            if m.root {
                notes.push("root");
            }
            if m.authority {
                notes.push("authority");
            }
            if m.revoked {
                notes.push("revoked");
            }
            if m.this {
                notes.push("this store");
            }
            outln!(
                out,
                "{:<54} {:<12} {:<10} {}",
                m.member,
                m.role,
                m.team.as_deref().unwrap_or("-"),
                notes.join(", ")
            );
        }
        if members.iter().all(|m| m.root) {
            outln!(
                out,
                "(no other member yet: `fieldsync members add ID --role device`)"
            );
        }
    }
    if roles {
        let mut defined: Vec<_> = rights.roles().collect();
        defined.sort_by(|a, b| a.0.cmp(b.0));
        outln!(out, "roles: admin, authority, device (built in)");
        for (name, x) in defined {
            outln!(
                out,
                "role `{name}`: reads {}, writes {}{}{}",
                if x.read.is_empty() {
                    "nothing".into()
                } else {
                    x.read.join(", ")
                },
                if x.write.is_empty() {
                    "nothing".into()
                } else {
                    x.write.join(", ")
                },
                x.scope
                    .as_ref()
                    .map(|s| format!(", scoped by `{s}`"))
                    .unwrap_or_default(),
                if x.authority { ", authority" } else { "" }
            );
        }
    }
    for (p, role) in &legacy {
        outln!(
            out,
            "not used: {} ({role}) is in this store's old local member list; add it with `fieldsync members add {p} --role {role}` on an admin",
            short(p)
        );
    }
    Ok(())
}
