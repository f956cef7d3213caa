//! Per-collection conflict settings: the status lifecycle, validation rules,
//! the resolution policy and its granularity, the conflict queue.
//!
//! They are declared with [`CollectionBuilder`](super::CollectionBuilder) methods
//! or TOML keys (see `docs/schema.md` and `docs/conflicts.md`).

use serde::{Deserialize, Serialize};

use crate::value::{Fields, Value};

/// How a conflict between an authority's change and a device's change is
/// decided (see `docs/conflicts.md` for the exact rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Policy {
    /// The authority's values stand; the device's conflicting changes wait,
    /// resolved, in the entry (Resco's default).
    #[default]
    ServerWins,
    /// Only the fields the device changed override the authority's version.
    PartialDeviceWins,
    /// The device's whole version overrides, every field as the device had it.
    FullDeviceWins,
    /// Nothing is decided: an open entry waits for a person.
    UserAction,
    /// The change with the later HLC time wins, whoever made it (Creatio).
    LastWriterWins,
}

impl Policy {
    /// Every policy, in declaration order.
    pub const ALL: [Policy; 5] = [
        Policy::ServerWins,
        Policy::PartialDeviceWins,
        Policy::FullDeviceWins,
        Policy::UserAction,
        Policy::LastWriterWins,
    ];

    /// The snake_case name used in schema files and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Policy::ServerWins => "server_wins",
            Policy::PartialDeviceWins => "partial_device_wins",
            Policy::FullDeviceWins => "full_device_wins",
            Policy::UserAction => "user_action",
            Policy::LastWriterWins => "last_writer_wins",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown policy `{s}` (server_wins, partial_device_wins, full_device_wins, user_action, last_writer_wins)"
                )
            })
    }
}

/// What two concurrent changes must share to conflict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Granularity {
    /// Only the same field assigned concurrently can conflict (the default).
    #[default]
    Field,
    /// Any concurrent modification of the record conflicts (Resco, OutSystems).
    Record,
}

impl Granularity {
    /// The snake_case name (`field`, `record`).
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Field => "field",
            Granularity::Record => "record",
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Check {
    /// What the check asks, for people: `required`, `at least 0`, `one of
    /// a, b`, `matches ^T-`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Required => f.write_str("required"),
            Check::Min(v) => write!(f, "at least {v}"),
            Check::Max(v) => write!(f, "at most {v}"),
            Check::OneOf(values) => {
                let list: Vec<String> = values.iter().map(ToString::to_string).collect();
                write!(f, "one of {}", list.join(", "))
            }
            Check::Pattern(p) => write!(f, "matches {p}"),
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "field" => Ok(Granularity::Field),
            "record" => Ok(Granularity::Record),
            other => Err(format!("unknown granularity `{other}` (field or record)")),
        }
    }
}

/// A status field with an ordered lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lifecycle {
    /// The status field (a string field of the collection).
    pub field: String,
    /// The states, least advanced first.
    pub states: Vec<String>,
    /// The allowed moves `(from, to)`; empty means any forward move (to a more
    /// advanced state) is allowed and backward moves are not.
    pub transitions: Vec<(String, String)>,
}

impl Lifecycle {
    /// The rank of a state (its position), if it is one.
    pub fn rank(&self, state: &str) -> Option<usize> {
        self.states.iter().position(|s| s == state)
    }

    /// Whether an ordinary write may move the status from `from` to `to`.
    pub fn allows(&self, from: &str, to: &str) -> bool {
        if from == to {
            return true;
        }
        if !self.transitions.is_empty() {
            return self.transitions.iter().any(|(f, t)| f == from && t == to);
        }
        matches!((self.rank(from), self.rank(to)), (Some(a), Some(b)) if b > a)
    }
}

/// What a declarative validation rule checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Check {
    /// The field is present (and not an empty string).
    Required,
    /// A number at least this.
    Min(f64),
    /// A number at most this.
    Max(f64),
    /// One of these values.
    OneOf(Vec<Value>),
    /// A string matching this regular expression (whole value).
    Pattern(String),
}

/// A declarative validation rule, checked by authorities on the changes they
/// receive (and by [`Replica::validate`](crate::Replica::validate)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rule {
    /// The field checked.
    pub field: String,
    /// What is checked.
    pub check: Check,
    /// The error code reported when it fails (default `invalid_<field>`).
    pub code: String,
    /// The message reported when it fails (a default names the field and check).
    pub message: String,
}

impl Rule {
    /// A rule on `field` with the default code and message.
    pub fn new(field: &str, check: Check) -> Self {
        let message = match &check {
            Check::Required => format!("{field} is required"),
            Check::Min(m) => format!("{field} must be at least {m}"),
            Check::Max(m) => format!("{field} must be at most {m}"),
            Check::OneOf(vs) => format!(
                "{field} must be one of {}",
                vs.iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Check::Pattern(p) => format!("{field} must match {p}"),
        };
        Self {
            field: field.to_owned(),
            check,
            code: format!("invalid_{field}"),
            message,
        }
    }

    /// This rule with its own error code.
    pub fn code(mut self, code: &str) -> Self {
        self.code = code.to_owned();
        self
    }

    /// This rule with its own message.
    pub fn message(mut self, message: &str) -> Self {
        self.message = message.to_owned();
        self
    }

    /// Check `fields`; `None` when the rule holds.
    pub fn violation(&self, fields: &Fields) -> Option<Violation> {
        let v = fields.get(&self.field);
        let number = |v: &Value| match v {
            Value::Int(i) | Value::Counter(i) | Value::Timestamp(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        };
        let holds = match (&self.check, v) {
            (Check::Required, None | Some(Value::Null)) => false,
            (Check::Required, Some(v)) => v.as_str().is_none_or(|s| !s.trim().is_empty()),
            // The other checks apply to values that are present.
            (_, None | Some(Value::Null)) => true,
            (Check::Min(m), Some(v)) => number(v).is_none_or(|x| x >= *m),
            (Check::Max(m), Some(v)) => number(v).is_none_or(|x| x <= *m),
            (Check::OneOf(vs), Some(v)) => vs.iter().any(|o| same(o, v)),
            (Check::Pattern(p), Some(v)) => match (v.as_str(), regex_lite::Regex::new(p)) {
                (Some(s), Ok(re)) => re
                    .find(s)
                    .is_some_and(|m| m.start() == 0 && m.end() == s.len()),
                (None, _) => true,
                // Checked when declared; a stored pattern that does not compile fails.
                (Some(_), Err(_)) => false,
            },
        };
        (!holds).then(|| Violation {
            code: self.code.clone(),
            message: self.message.clone(),
            field: Some(self.field.clone()),
        })
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_str(), b.as_str()) {
        (Some(x), Some(y)) => x == y,
        _ => {
            a == b
                || matches!((a, b), (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) if (*x as f64) == *y)
        }
    }
}

/// Why a validation failed: an error code and a message (GeneXus's
/// `EventErrors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Violation {
    /// A stable code for programs (`missing_tax_id`).
    pub code: String,
    /// A message for people.
    pub message: String,
    /// The field concerned, if one.
    pub field: Option<String>,
}

impl Violation {
    /// A violation with a code and a message.
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            code: code.to_owned(),
            message: message.to_owned(),
            field: None,
        }
    }

    /// This violation, about `field`.
    pub fn on(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }
}

/// The conflict settings of a collection (all optional; the defaults are the
/// server-wins policy at field granularity, no lifecycle, no rules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Settings {
    /// The status lifecycle, if the collection has one.
    pub lifecycle: Option<Lifecycle>,
    /// Declarative validation rules.
    pub rules: Vec<Rule>,
    /// The resolution policy.
    pub policy: Policy,
    /// The granularity of concurrent edits.
    pub granularity: Granularity,
    /// The queue its conflicts are routed to (default `conflicts`).
    pub queue: Option<String>,
    /// Whether this device stops sending the collection's changes while it has
    /// unresolved conflicts in it (used by the pending-events issue).
    pub block_sync_on_conflict: bool,
}
