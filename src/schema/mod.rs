//! Schema: collections and their typed fields.
//!
//! A [`Schema`] is a set of [`Collection`]s; a collection has a name and typed
//! [`Field`]s, each optionally required or with a default. It is declared in Rust
//! with [`Collection::builder`] or read from a TOML file ([`Schema::from_toml`], the
//! format is in `docs/schema.md`). Every write is checked against it before
//! anything is written: an unknown collection or field, a wrong type or a missing
//! required field is a [`SchemaError`] that names the collection, the field, the
//! expected and the given type.
//!
//! `Collection` is `#[non_exhaustive]` and built through its builder so that the
//! later per-collection settings (status lifecycle, reference rules, validation
//! rules, resolution policy, access rights) are added as new builder methods and
//! TOML keys without breaking existing code or files.
//!
//! ```
//! use fieldsync::schema::{Collection, FieldType, Schema};
//!
//! let customer = Collection::builder("customer")
//!     .required("name", FieldType::String)
//!     .field("tax_id", FieldType::String)
//!     .build()?;
//! let invoice = Collection::builder("invoice")
//!     .required("customer", FieldType::Reference("customer".into()))
//!     .default("total", FieldType::Float, 0.0)
//!     .field("notes", FieldType::Text)
//!     .build()?;
//! let schema = Schema::new().with(customer)?.with(invoice)?;
//! assert!(schema.collection("invoice").is_ok());
//! # Ok::<(), fieldsync::schema::SchemaError>(())
//! ```

mod file;
mod rules;

pub use rules::{Check, Granularity, Lifecycle, Policy, Rule, Settings, Violation};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::{Fields, Value};

/// A schema problem: a bad declaration, or a value that does not fit it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The collection is not declared. Declare it (API or schema file) first.
    #[error("unknown collection `{collection}`")]
    UnknownCollection {
        /// The name given.
        collection: String,
    },
    /// The field is not declared in its collection.
    #[error("unknown field `{field}` in collection `{collection}`")]
    UnknownField {
        /// The collection.
        collection: String,
        /// The name given.
        field: String,
    },
    /// The value's type does not match the field's declared type.
    #[error("field `{collection}.{field}` expects {expected}, given {given}")]
    WrongType {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
        /// The declared type.
        expected: String,
        /// The type of the value given.
        given: String,
    },
    /// A required field was left out of an insert (or removed by an update).
    #[error("field `{collection}.{field}` is required ({expected}), given nothing")]
    MissingRequired {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
        /// The declared type.
        expected: String,
    },
    /// A collection or field name is not allowed.
    #[error("invalid {what} name `{name}`: {reason}")]
    InvalidName {
        /// "collection" or "field".
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A field is declared twice in one collection.
    #[error("field `{field}` is declared twice in collection `{collection}`")]
    DuplicateField {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
    },
    /// A reference field points to a collection the schema does not declare.
    #[error("field `{collection}.{field}` references unknown collection `{target}`")]
    UnknownReference {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
        /// The referenced collection.
        target: String,
    },
    /// A collection is declared again with a definition that cannot replace the
    /// stored one (a field changed type, or a new field is required).
    #[error("collection `{collection}` cannot be redefined: {reason}")]
    Incompatible {
        /// The collection.
        collection: String,
        /// What differs.
        reason: String,
    },
    /// A conflict setting (lifecycle, rule, queue) is not valid.
    #[error("collection `{collection}`: {reason}")]
    InvalidSetting {
        /// The collection.
        collection: String,
        /// What is wrong.
        reason: String,
    },
    /// A status field was given a value that is not one of its states.
    #[error(
        "field `{collection}.{field}` is a status: `{given}` is not one of its states ({states})"
    )]
    NotAState {
        /// The collection.
        collection: String,
        /// The status field.
        field: String,
        /// The value given.
        given: String,
        /// The states, comma-separated.
        states: String,
    },
    /// An ordinary write tried a status move the lifecycle does not allow (a
    /// deliberate move back is a conflict resolution's `reopen`).
    #[error("field `{collection}.{field}` cannot move from `{from}` to `{to}`")]
    Transition {
        /// The collection.
        collection: String,
        /// The status field.
        field: String,
        /// The current state.
        from: String,
        /// The state asked for.
        to: String,
    },
    /// The schema file is not valid TOML or does not follow the format.
    #[error("schema file: {message}")]
    File {
        /// The parser's message, with the location when known.
        message: String,
    },
}

/// The element type of a list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ScalarType {
    /// UTF-8 strings.
    String,
    /// 64-bit signed integers.
    Integer,
    /// 64-bit floats.
    Float,
    /// Booleans.
    Boolean,
    /// Milliseconds since the Unix epoch.
    Timestamp,
}

/// The type of a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FieldType {
    /// A string; concurrent writes pick one winner.
    String,
    /// A 64-bit signed integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// A boolean.
    Boolean,
    /// Milliseconds since the Unix epoch.
    Timestamp,
    /// A counter: concurrent increments add up.
    Counter,
    /// Collaborative text: concurrent edits merge character by character.
    Text,
    /// A list of scalars: concurrent inserts merge.
    List(ScalarType),
    /// The id of a record in the named collection.
    Reference(String),
}

impl std::fmt::Display for ScalarType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScalarType::String => "string",
            ScalarType::Integer => "integer",
            ScalarType::Float => "float",
            ScalarType::Boolean => "boolean",
            ScalarType::Timestamp => "timestamp",
        })
    }
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldType::String => f.write_str("string"),
            FieldType::Integer => f.write_str("integer"),
            FieldType::Float => f.write_str("float"),
            FieldType::Boolean => f.write_str("boolean"),
            FieldType::Timestamp => f.write_str("timestamp"),
            FieldType::Counter => f.write_str("counter"),
            FieldType::Text => f.write_str("text"),
            FieldType::List(s) => write!(f, "list of {s}"),
            FieldType::Reference(c) => write!(f, "reference to {c}"),
        }
    }
}

impl From<ScalarType> for FieldType {
    fn from(s: ScalarType) -> Self {
        match s {
            ScalarType::String => FieldType::String,
            ScalarType::Integer => FieldType::Integer,
            ScalarType::Float => FieldType::Float,
            ScalarType::Boolean => FieldType::Boolean,
            ScalarType::Timestamp => FieldType::Timestamp,
        }
    }
}

impl ScalarType {
    /// Coerce `v` to this element type, or `None` if it does not fit (the same
    /// rules as the field type of the same name).
    pub fn coerce(self, v: &Value) -> Option<Value> {
        FieldType::from(self).coerce(v)
    }
}

impl FieldType {
    /// Coerce `v` to this type (see [`Value`] for the accepted conversions), or
    /// `None` if it does not fit. `Null` never fits here (it means "remove").
    pub fn coerce(&self, v: &Value) -> Option<Value> {
        Some(match (self, v) {
            (FieldType::String, Value::String(s)) => Value::String(s.clone()),
            (FieldType::Integer, Value::Int(i)) => Value::Int(*i),
            (FieldType::Float, Value::Float(x)) => Value::Float(*x),
            (FieldType::Float, Value::Int(i)) => Value::Float(*i as f64),
            (FieldType::Boolean, Value::Bool(b)) => Value::Bool(*b),
            (FieldType::Timestamp, Value::Timestamp(t)) => Value::Timestamp(*t),
            (FieldType::Counter, Value::Counter(c) | Value::Int(c)) => Value::Counter(*c),
            (FieldType::Text, Value::Text(s) | Value::String(s)) => Value::Text(s.clone()),
            (FieldType::Reference(_), Value::Ref(s) | Value::String(s)) => Value::Ref(s.clone()),
            (FieldType::List(elem), Value::List(items)) => Value::List(
                items
                    .iter()
                    .map(|i| elem.coerce(i))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        })
    }
}

/// One declared field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Field {
    /// The field's name (a key of the record document's root map).
    pub name: String,
    /// Its type.
    pub ty: FieldType,
    /// Whether an insert must give it (or a default supplies it).
    pub required: bool,
    /// The value an insert uses when the field is not given.
    pub default: Option<Value>,
}

/// A declared collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Collection {
    /// The collection's name.
    pub name: String,
    /// Its fields, in declaration order.
    pub fields: Vec<Field>,
    /// Its conflict settings: lifecycle, rules, policy, granularity, queue.
    pub settings: Settings,
}

/// Builds a [`Collection`]; see the [module docs](self) for an example.
#[derive(Debug, Clone)]
#[must_use]
pub struct CollectionBuilder {
    name: String,
    fields: Vec<Field>,
    settings: Settings,
    error: Option<SchemaError>,
}

impl CollectionBuilder {
    fn push(mut self, name: &str, ty: FieldType, required: bool, default: Option<Value>) -> Self {
        self.fields.push(Field {
            name: name.to_owned(),
            ty,
            required,
            default,
        });
        self
    }

    /// An optional field.
    pub fn field(self, name: &str, ty: FieldType) -> Self {
        self.push(name, ty, false, None)
    }

    /// A required field: every insert must give it.
    pub fn required(self, name: &str, ty: FieldType) -> Self {
        self.push(name, ty, true, None)
    }

    /// A required field whose value, when an insert leaves it out, is `default`.
    pub fn default(self, name: &str, ty: FieldType, default: impl Into<Value>) -> Self {
        let default = default.into();
        match ty.coerce(&default) {
            Some(d) => self.push(name, ty, true, Some(d)),
            None => {
                let err = SchemaError::WrongType {
                    collection: self.name.clone(),
                    field: name.to_owned(),
                    expected: ty.to_string(),
                    given: default.type_name().to_owned(),
                };
                Self {
                    error: self.error.or(Some(err)),
                    ..self
                }
            }
        }
    }

    /// Make `field` (a string field) a status with the ordered `states`, least
    /// advanced first. A merge never moves it backwards.
    pub fn status(mut self, field: &str, states: &[&str]) -> Self {
        self.settings.lifecycle = Some(Lifecycle {
            field: field.to_owned(),
            states: states.iter().map(|s| (*s).to_owned()).collect(),
            transitions: Vec::new(),
        });
        self
    }

    /// Restrict the status to these moves `(from, to)` (declare the status first).
    pub fn transitions(mut self, moves: &[(&str, &str)]) -> Self {
        match self.settings.lifecycle.as_mut() {
            Some(l) => {
                l.transitions = moves
                    .iter()
                    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                    .collect();
            }
            None => {
                self.error = self.error.or(Some(SchemaError::InvalidSetting {
                    collection: self.name.clone(),
                    reason: "transitions need a status (call `status` first)".into(),
                }));
            }
        }
        self
    }

    /// Add a declarative validation rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.settings.rules.push(rule);
        self
    }

    /// The resolution policy (default [`Policy::ServerWins`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// The granularity (default [`Granularity::Field`]).
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.settings.granularity = granularity;
        self
    }

    /// The queue this collection's conflicts are routed to.
    pub fn queue(mut self, queue: &str) -> Self {
        self.settings.queue = Some(queue.to_owned());
        self
    }

    /// Stop sending this collection's changes while it has unresolved conflicts
    /// here.
    pub fn block_sync_on_conflict(mut self, block: bool) -> Self {
        self.settings.block_sync_on_conflict = block;
        self
    }

    fn check_settings(&self) -> Result<(), SchemaError> {
        let bad = |reason: String| SchemaError::InvalidSetting {
            collection: self.name.clone(),
            reason,
        };
        let field = |name: &str| self.fields.iter().find(|f| f.name == name);
        if let Some(l) = &self.settings.lifecycle {
            match field(&l.field) {
                Some(f) if f.ty == FieldType::String => {
                    if let Some(Value::String(d)) = &f.default
                        && l.rank(d).is_none()
                    {
                        return Err(bad(format!(
                            "the default status `{d}` is not one of its states"
                        )));
                    }
                }
                Some(f) => {
                    return Err(bad(format!(
                        "status field `{}` must be a string, it is {}",
                        l.field, f.ty
                    )));
                }
                None => return Err(bad(format!("status field `{}` is not declared", l.field))),
            }
            if l.states.is_empty() {
                return Err(bad("a status needs at least one state".into()));
            }
            let mut seen = std::collections::BTreeSet::new();
            for s in &l.states {
                if !seen.insert(s) {
                    return Err(bad(format!("state `{s}` is listed twice")));
                }
            }
            for (a, b) in &l.transitions {
                for s in [a, b] {
                    if l.rank(s).is_none() {
                        return Err(bad(format!("transition names unknown state `{s}`")));
                    }
                }
            }
        }
        for r in &self.settings.rules {
            if field(&r.field).is_none() {
                return Err(bad(format!("a rule checks undeclared field `{}`", r.field)));
            }
            if let Check::Pattern(p) = &r.check
                && let Err(e) = regex_lite::Regex::new(p)
            {
                return Err(bad(format!("pattern for `{}`: {e}", r.field)));
            }
        }
        if let Some(q) = &self.settings.queue
            && (q.is_empty() || q.len() > 64 || q.chars().any(char::is_control))
        {
            return Err(bad(format!(
                "queue name {q:?} must be 1 to 64 printable characters"
            )));
        }
        Ok(())
    }

    /// Check the names and defaults and build the collection.
    pub fn build(self) -> Result<Collection, SchemaError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        validate_name("collection", &self.name)?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.fields {
            validate_name("field", &f.name)?;
            if !seen.insert(f.name.as_str()) {
                return Err(SchemaError::DuplicateField {
                    collection: self.name.clone(),
                    field: f.name.clone(),
                });
            }
            if let FieldType::Reference(target) = &f.ty {
                validate_name("collection", target)?;
            }
        }
        self.check_settings()?;
        Ok(Collection {
            name: self.name,
            fields: self.fields,
            settings: self.settings,
        })
    }
}

/// Check a collection or field name: 1 to 64 characters, a lowercase ASCII letter
/// then lowercase letters, digits or `_`. (Names starting with `_` are reserved for
/// fieldsync's own keys in a record document.)
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<(), SchemaError> {
    let bad = |reason| {
        Err(SchemaError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        })
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("it is empty"),
        Some(c) if !c.is_ascii_lowercase() => return bad("it must start with a lowercase letter"),
        _ => {}
    }
    if name.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return bad("only lowercase letters, digits and `_` are allowed");
    }
    Ok(())
}

impl Collection {
    /// Start declaring a collection.
    pub fn builder(name: &str) -> CollectionBuilder {
        CollectionBuilder {
            name: name.to_owned(),
            fields: Vec::new(),
            settings: Settings::default(),
            error: None,
        }
    }

    /// The declared field named `name`.
    pub fn field(&self, name: &str) -> Result<&Field, SchemaError> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| SchemaError::UnknownField {
                collection: self.name.clone(),
                field: name.to_owned(),
            })
    }

    /// Check one value for `field` and return it in its canonical variant.
    pub fn check_value(&self, field: &str, value: &Value) -> Result<Value, SchemaError> {
        let f = self.field(field)?;
        if matches!(value, Value::Null) {
            if f.required {
                return Err(SchemaError::MissingRequired {
                    collection: self.name.clone(),
                    field: field.to_owned(),
                    expected: f.ty.to_string(),
                });
            }
            return Ok(Value::Null);
        }
        let v = f.ty.coerce(value).ok_or_else(|| SchemaError::WrongType {
            collection: self.name.clone(),
            field: field.to_owned(),
            expected: f.ty.to_string(),
            given: value.type_name().to_owned(),
        })?;
        if let (Some(l), Value::String(s)) = (self.lifecycle_of(field), &v)
            && l.rank(s).is_none()
        {
            return Err(SchemaError::NotAState {
                collection: self.name.clone(),
                field: field.to_owned(),
                given: s.clone(),
                states: l.states.join(", "),
            });
        }
        Ok(v)
    }

    /// The lifecycle, if `field` is this collection's status field.
    pub fn lifecycle_of(&self, field: &str) -> Option<&Lifecycle> {
        self.settings
            .lifecycle
            .as_ref()
            .filter(|l| l.field == field)
    }

    /// Check an ordinary write's status move (`from` the current value) against
    /// the lifecycle.
    pub fn check_transition(&self, from: Option<&Value>, to: &Value) -> Result<(), SchemaError> {
        let Some(l) = &self.settings.lifecycle else {
            return Ok(());
        };
        let (Some(from), Some(to)) = (from.and_then(Value::as_str), to.as_str()) else {
            return Ok(());
        };
        if l.allows(from, to) {
            return Ok(());
        }
        Err(SchemaError::Transition {
            collection: self.name.clone(),
            field: l.field.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
        })
    }

    /// The declarative rules' violations for `fields` (empty when valid).
    pub fn violations(&self, fields: &Fields) -> Vec<Violation> {
        self.settings
            .rules
            .iter()
            .filter_map(|r| r.violation(fields))
            .collect()
    }

    /// The queue its conflicts go to (`conflicts` unless declared).
    pub fn queue_name(&self) -> &str {
        self.settings.queue.as_deref().unwrap_or("conflicts")
    }

    /// Check the fields of an insert: every given field known and well typed,
    /// defaults filled in, every required field present. Returns the canonical
    /// fields (without `Null`s).
    pub fn check_insert(&self, given: &Fields) -> Result<Fields, SchemaError> {
        let mut out = self.check_patch(given)?;
        out.retain(|_, v| !matches!(v, Value::Null));
        for f in &self.fields {
            if out.contains_key(&f.name) {
                continue;
            }
            match (&f.default, f.required) {
                (Some(d), _) => {
                    out.insert(f.name.clone(), d.clone());
                }
                (None, true) => {
                    return Err(SchemaError::MissingRequired {
                        collection: self.name.clone(),
                        field: f.name.clone(),
                        expected: f.ty.to_string(),
                    });
                }
                (None, false) => {}
            }
        }
        Ok(out)
    }

    /// Check the fields of an update (a patch): every given field known and well
    /// typed; `Null` allowed only for optional fields.
    pub fn check_patch(&self, given: &Fields) -> Result<Fields, SchemaError> {
        given
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.check_value(k, v)?)))
            .collect()
    }

    /// Whether `newer` can replace this definition: same fields with the same types
    /// and flags, plus optional (or defaulted) new fields.
    fn check_compatible(&self, newer: &Collection) -> Result<(), SchemaError> {
        let incompatible = |reason: String| SchemaError::Incompatible {
            collection: self.name.clone(),
            reason,
        };
        for old in &self.fields {
            match newer.fields.iter().find(|f| f.name == old.name) {
                None => return Err(incompatible(format!("field `{}` was removed", old.name))),
                Some(f) if f != old => {
                    return Err(incompatible(format!(
                        "field `{}` changed its declaration",
                        old.name
                    )));
                }
                _ => {}
            }
        }
        for f in &newer.fields {
            if self.field(&f.name).is_err() && f.required && f.default.is_none() {
                return Err(incompatible(format!(
                    "new field `{}` is required without a default, but existing records lack it",
                    f.name
                )));
            }
        }
        Ok(())
    }
}

/// The system collection of authorities' verdicts on changes (one record per
/// judged change).
pub(crate) const VERDICTS: &str = "_verdict";
/// The system collection of people's decisions about conflict entries (queue,
/// assignee, resolution), one record per entry, keyed by the entry id.
pub(crate) const DECISIONS: &str = "_entry";
/// The system collection of authorities' acknowledgements: one record per
/// authority and origin device (`<authority actor>.<origin actor>`), listing the
/// origin's pending events the authority holds and the ones it refuses.
pub(crate) const ACKS: &str = "_ack";
/// The system collection of authorities' outcomes for a device's events on
/// one record (held while a person decides, or refused): one record per
/// authority, origin device and record
/// (`<authority actor>.<origin actor>.<16 hex digits of the record's key>`).
pub(crate) const HELD: &str = "_held";

/// fieldsync's own collections: replicated like any other, declared by every
/// replica, never by the application.
pub(crate) fn system_collections() -> &'static [Collection] {
    static SYSTEM: std::sync::LazyLock<Vec<Collection>> = std::sync::LazyLock::new(|| {
        let f = |name: &str, ty: FieldType, required: bool| Field {
            name: name.to_owned(),
            ty,
            required,
            default: None,
        };
        let s = || FieldType::List(ScalarType::String);
        vec![
            Collection {
                name: VERDICTS.to_owned(),
                fields: vec![
                    f("collection", FieldType::String, true),
                    f("record", FieldType::String, true),
                    f("change", FieldType::String, true),
                    f("accepted", FieldType::Boolean, true),
                    f("codes", s(), false),
                    f("messages", s(), false),
                    f("fields", s(), false),
                    f("by", FieldType::String, true),
                ],
                settings: Settings::default(),
            },
            Collection {
                name: DECISIONS.to_owned(),
                fields: vec![
                    f("collection", FieldType::String, true),
                    f("record", FieldType::String, true),
                    f("queue", FieldType::String, false),
                    f("assignee", FieldType::String, false),
                    f("decision", FieldType::String, false),
                    f("by", FieldType::String, false),
                    f("at", FieldType::Timestamp, false),
                    f("note", FieldType::String, false),
                ],
                settings: Settings::default(),
            },
            Collection {
                name: crate::rights::MEMBERS.to_owned(),
                fields: vec![
                    f("role", FieldType::String, true),
                    f("team", FieldType::String, false),
                    f("revoked_at", FieldType::Integer, false),
                ],
                settings: Settings::default(),
            },
            Collection {
                name: crate::rights::ROLES.to_owned(),
                fields: vec![
                    f("read", s(), false),
                    f("write", s(), false),
                    f("scope", FieldType::String, false),
                    f("authority", FieldType::Boolean, false),
                ],
                settings: Settings::default(),
            },
            Collection {
                name: ACKS.to_owned(),
                fields: vec![
                    f("authority", FieldType::String, true),
                    f("origin", FieldType::String, true),
                    f("seen", FieldType::String, false),
                    f("held", FieldType::String, false),
                    f("held_sum", FieldType::String, false),
                    f("clock", FieldType::String, false),
                ],
                settings: Settings::default(),
            },
            Collection {
                name: HELD.to_owned(),
                fields: vec![
                    f("authority", FieldType::String, true),
                    f("origin", FieldType::String, true),
                    f("collection", FieldType::String, true),
                    f("record", FieldType::String, true),
                    f("held", FieldType::String, false),
                ],
                settings: Settings::default(),
            },
        ]
    });
    &SYSTEM
}

/// A stored schema of format version 1 (before conflict settings), read
/// when opening an older store.
#[derive(Deserialize)]
pub(crate) struct SchemaV1 {
    collections: BTreeMap<String, CollectionV1>,
}

#[derive(Deserialize)]
struct CollectionV1 {
    name: String,
    fields: Vec<Field>,
}

impl From<SchemaV1> for Schema {
    fn from(v1: SchemaV1) -> Self {
        Schema {
            collections: v1
                .collections
                .into_iter()
                .map(|(k, c)| {
                    (
                        k,
                        Collection {
                            name: c.name,
                            fields: c.fields,
                            settings: Settings::default(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A set of collections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    collections: BTreeMap<String, Collection>,
}

impl Schema {
    /// An empty schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// This schema with `collection` added (see [`Schema::define`]).
    pub fn with(mut self, collection: Collection) -> Result<Self, SchemaError> {
        self.define(collection)?;
        Ok(self)
    }

    /// Add `collection`, or replace its earlier definition if the new one is
    /// compatible (the same fields, plus optional or defaulted new ones).
    /// Returns whether anything changed.
    pub fn define(&mut self, collection: Collection) -> Result<bool, SchemaError> {
        for f in &collection.fields {
            if let FieldType::Reference(target) = &f.ty
                && *target != collection.name
                && !self.collections.contains_key(target)
            {
                return Err(SchemaError::UnknownReference {
                    collection: collection.name.clone(),
                    field: f.name.clone(),
                    target: target.clone(),
                });
            }
        }
        if let Some(old) = self.collections.get(&collection.name) {
            if *old == collection {
                return Ok(false);
            }
            old.check_compatible(&collection)?;
        }
        self.collections.insert(collection.name.clone(), collection);
        Ok(true)
    }

    /// Merge every collection of `other` into this schema (see [`Schema::define`]).
    pub fn merge(&mut self, other: &Schema) -> Result<bool, SchemaError> {
        let mut changed = false;
        for c in other.ordered_for_definition() {
            changed |= self.define(c.clone())?;
        }
        Ok(changed)
    }

    /// Collections in an order where referenced collections come first (cycles,
    /// which are allowed, fall back to name order).
    fn ordered_for_definition(&self) -> Vec<&Collection> {
        let mut out: Vec<&Collection> = Vec::new();
        let mut pending: Vec<&Collection> = self.collections.values().collect();
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|c| {
                let ready = c.fields.iter().all(|f| match &f.ty {
                    FieldType::Reference(t) => t == &c.name || out.iter().any(|o| &o.name == t),
                    _ => true,
                });
                if ready {
                    out.push(c);
                }
                !ready
            });
            if pending.len() == before {
                out.append(&mut pending);
            }
        }
        out
    }

    /// The collection named `name` (also fieldsync's own system collections,
    /// whose names start with `_`).
    pub fn collection(&self, name: &str) -> Result<&Collection, SchemaError> {
        if name.starts_with('_')
            && let Some(c) = system_collections().iter().find(|c| c.name == name)
        {
            return Ok(c);
        }
        self.collections
            .get(name)
            .ok_or_else(|| SchemaError::UnknownCollection {
                collection: name.to_owned(),
            })
    }

    /// Every collection, by name.
    pub fn collections(&self) -> impl Iterator<Item = &Collection> {
        self.collections.values()
    }

    /// Parse a schema file (TOML; format in `docs/schema.md`).
    pub fn from_toml(text: &str) -> Result<Self, SchemaError> {
        file::parse(text)
    }
}
