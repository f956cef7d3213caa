//! Reactions (Creatio's business processes on the main node): when a record
//! of a collection changes a watched field and a predicate holds, a closure
//! writes other records, in the same transaction as the change that
//! triggered it. Each written record's id derives from the reaction, the
//! record, the operation that set the watched field and a key the closure
//! chooses, so two peers that run the same reaction for the same triggering
//! change write the same record, which merges into one.

use std::sync::Arc;

use super::Replica;
use crate::error::Result;
use crate::value::{Fields, Value};

/// What a reaction is shown: the record whose watched field changed.
#[derive(Debug)]
#[non_exhaustive]
pub struct Trigger<'a> {
    /// The record's collection.
    pub collection: &'a str,
    /// The record's id.
    pub id: &'a str,
    /// Its visible fields before the change (`None` for a new record).
    pub before: Option<&'a Fields>,
    /// Its visible fields after.
    pub after: &'a Fields,
    /// The operation that set the watched field's value (`counter@actor`), the
    /// same on every peer: written records' ids derive from it.
    pub cause: &'a str,
}

/// A record a reaction writes: inserted into `collection` with an id derived
/// from the trigger and `key` (unless it exists already).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReactionWrite {
    /// The collection.
    pub collection: String,
    /// Distinguishes the records one trigger writes (any short text).
    pub key: String,
    /// The fields.
    pub fields: Fields,
}

impl ReactionWrite {
    /// A record to insert.
    pub fn insert(collection: &str, key: &str, fields: Fields) -> Self {
        Self {
            collection: collection.to_owned(),
            key: key.to_owned(),
            fields,
        }
    }
}

type When = Arc<dyn Fn(&Trigger<'_>) -> bool + Send + Sync>;
type Then = Arc<dyn Fn(&Trigger<'_>) -> Vec<ReactionWrite> + Send + Sync>;

/// A reaction: a name (part of every written id, so keep it stable), the
/// collection and field it watches, a predicate and an action.
///
/// ```
/// use fieldsync::{Reaction, ReactionWrite, Value, fields};
/// let r = Reaction::new("negotiation_call", "opportunity", "stage")
///     .when(|t| t.after.get("stage") == Some(&Value::from("negotiation")))
///     .then(|t| {
///         vec![ReactionWrite::insert(
///             "activity",
///             "call",
///             fields([("opportunity", Value::from(t.id)), ("title", Value::from("Call the customer"))]),
///         )]
///     });
/// # let _ = r;
/// ```
#[derive(Clone)]
pub struct Reaction {
    pub(crate) name: String,
    pub(crate) collection: String,
    pub(crate) field: String,
    pub(crate) when: When,
    pub(crate) then: Then,
    /// A command to run instead of `then` (see [`Reaction::run`]).
    pub(crate) command: Option<Arc<super::jobs::Command>>,
}

impl std::fmt::Debug for Reaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaction")
            .field("name", &self.name)
            .field("collection", &self.collection)
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

impl Reaction {
    /// A reaction named `name` to changes of `collection.field` (it fires on
    /// every change of the field until [`when`](Self::when) narrows it, and
    /// writes nothing until [`then`](Self::then) says what).
    pub fn new(name: &str, collection: &str, field: &str) -> Self {
        Self {
            name: name.to_owned(),
            collection: collection.to_owned(),
            field: field.to_owned(),
            when: Arc::new(|_| true),
            then: Arc::new(|_| Vec::new()),
            command: None,
        }
    }

    /// Fire only when the watched field's new value is `value`.
    pub fn when_equals(self, value: Value) -> Self {
        let field = self.field.clone();
        self.when(move |t| t.after.get(&field) == Some(&value))
    }

    /// Run a program when it fires, instead of a closure: `argv[0]` with the
    /// other arguments, the trigger as JSON on its standard input
    /// (`{"reaction", "collection", "id", "before", "after"}`), for at most
    /// `timeout`. What it prints on its standard output, a JSON array of
    /// `{"collection", "key", "fields"}` (or one such object, or nothing),
    /// are the records to write, with ids derived like a closure's writes.
    ///
    /// The program runs outside the triggering transaction, from a durable
    /// queue kept in the store (the trigger is queued in that transaction,
    /// so a crash loses none; its writes and its removal from the queue are
    /// one transaction): call [`Replica::run_reaction_jobs`] or start
    /// [`Replica::spawn_reaction_runner`]. A run that fails is tried again
    /// later, up to 5 times (see [`Replica::reaction_jobs`]). Two main nodes
    /// that run the same reaction write the same record ids, which merge into
    /// one record when the program's output is the same for the same trigger.
    pub fn run(mut self, argv: Vec<String>, timeout: std::time::Duration) -> Self {
        self.command = Some(Arc::new(super::jobs::Command {
            argv,
            timeout,
            dir: None,
        }));
        self
    }

    /// Run its program (see [`Reaction::run`]) in directory `dir` (relative
    /// paths in its arguments are read from there).
    pub fn in_dir(mut self, dir: &std::path::Path) -> Self {
        if let Some(c) = &self.command {
            self.command = Some(Arc::new(super::jobs::Command {
                argv: c.argv.clone(),
                timeout: c.timeout,
                dir: Some(dir.to_path_buf()),
            }));
        }
        self
    }

    /// Fire only when `f` holds for the changed record.
    pub fn when(mut self, f: impl Fn(&Trigger<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.when = Arc::new(f);
        self
    }

    /// The records to write when it fires.
    pub fn then(
        mut self,
        f: impl Fn(&Trigger<'_>) -> Vec<ReactionWrite> + Send + Sync + 'static,
    ) -> Self {
        self.then = Arc::new(f);
        self
    }
}

pub(crate) type Registered = Reaction;

/// The id of the record a reaction writes for a trigger.
pub(crate) fn written_id(r: &Reaction, t: &Trigger<'_>, key: &str) -> String {
    written_id_of(&r.name, t.collection, t.id, t.cause, key)
}

/// [`written_id`] from its parts.
pub(crate) fn written_id_of(
    name: &str,
    collection: &str,
    id: &str,
    cause: &str,
    key: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [name, collection, id, cause, key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("rx{hex}")
}

impl super::Inner {
    pub(crate) fn reactions_of(&self, collection: &str) -> Vec<Reaction> {
        self.reactions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn has_reactions(&self, collection: &str) -> bool {
        self.reactions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(collection)
    }
}

impl Replica {
    /// Register a reaction on this replica (typically an authority's): from
    /// now on, every transaction that changes the watched field of a record
    /// (a local write or changes received from a peer) runs it, and its
    /// writes commit with that transaction and replicate like any change. Not
    /// stored: register reactions each time the replica opens. Fails if the
    /// collection or field is unknown.
    pub fn add_reaction(&self, reaction: Reaction) -> Result<()> {
        let schema = self.schema();
        schema
            .collection(&reaction.collection)?
            .field(&reaction.field)?;
        self.inner
            .reactions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reaction.collection.clone())
            .or_default()
            .push(reaction);
        Ok(())
    }
}

/// Why a reactions file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReactionsFileError {
    /// The text is not TOML of the expected shape.
    #[error("not a reactions file: {0}")]
    Format(String),
    /// A reaction does not fit the schema, or is incomplete.
    #[error("reaction `{name}`: {reason}")]
    Reaction {
        /// The reaction.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReactions {
    #[serde(default)]
    reaction: Vec<FileReaction>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReaction {
    name: String,
    collection: String,
    field: String,
    #[serde(default)]
    equals: Option<toml::Value>,
    run: Vec<String>,
    #[serde(default)]
    timeout: Option<u64>,
}

/// The reactions a reactions file declares (format in `docs/pending.md`):
/// `[[reaction]]` tables with `name`, `collection`, `field`, an optional
/// `equals` (the field's new value it fires on), `run` (the program and its
/// arguments, see [`Reaction::run`]) and an optional `timeout` in seconds
/// (default 10). Checked against `schema`; nothing is registered.
pub fn reactions_from_toml(
    text: &str,
    schema: &crate::schema::Schema,
) -> std::result::Result<Vec<Reaction>, ReactionsFileError> {
    let file: FileReactions =
        toml::from_str(text).map_err(|e| ReactionsFileError::Format(e.to_string()))?;
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for r in file.reaction {
        let bad = |reason: String| ReactionsFileError::Reaction {
            name: r.name.clone(),
            reason,
        };
        if r.name.is_empty() || !names.insert(r.name.clone()) {
            return Err(bad("a reaction needs a name of its own".into()));
        }
        let c = schema
            .collection(&r.collection)
            .map_err(|e| bad(e.to_string()))?;
        let f = c.field(&r.field).map_err(|e| bad(e.to_string()))?;
        if r.run.is_empty() || r.run[0].is_empty() {
            return Err(bad("`run` names no program".into()));
        }
        let timeout = std::time::Duration::from_secs(r.timeout.unwrap_or(10).clamp(1, 3600));
        let mut reaction = Reaction::new(&r.name, &r.collection, &r.field).run(r.run, timeout);
        if let Some(v) = r.equals {
            let j = serde_json::to_value(&v).map_err(|e| bad(e.to_string()))?;
            let value = Value::from_json(&f.ty, &j).map_err(|e| bad(format!("`equals`: {e}")))?;
            reaction = reaction.when_equals(value);
        }
        out.push(reaction);
    }
    Ok(out)
}

impl Reaction {
    /// The reaction's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it watches and does, for people: `opportunity.stage -> ./script`.
    pub fn describe(&self) -> String {
        match &self.command {
            Some(c) => format!("{}.{} -> {}", self.collection, self.field, c.argv.join(" ")),
            None => format!("{}.{} -> (Rust closure)", self.collection, self.field),
        }
    }
}
