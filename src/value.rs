//! Field values as the application sees them.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A record's fields by name.
pub type Fields = BTreeMap<String, Value>;

/// One field value.
///
/// Each variant corresponds to a [`FieldType`](crate::schema::FieldType); writing a
/// value to a field of another type is refused with
/// [`SchemaError::WrongType`](crate::schema::SchemaError::WrongType). A few natural
/// conversions are accepted on write: a `String` for a text or reference field, an
/// `Int` for a counter or float field. `Null` in an update removes an optional field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// No value (removes an optional field in an update).
    Null,
    /// A UTF-8 string (last writer wins as a whole).
    String(String),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    /// A counter: concurrent increments add up.
    Counter(i64),
    /// Collaborative text: concurrent edits to different places merge.
    Text(String),
    /// A list of scalar values: concurrent inserts merge.
    List(Vec<Value>),
    /// The id of a record of another collection.
    Ref(String),
}

/// About how many bytes `fields` take (their text and list contents; a
/// number counts 8 bytes): what the record size limit counts.
pub(crate) fn fields_size(fields: &Fields) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.approx_size()).sum()
}

impl Value {
    /// About how many bytes the value takes (see [`fields_size`]).
    pub(crate) fn approx_size(&self) -> usize {
        match self {
            Value::String(s) | Value::Text(s) | Value::Ref(s) => s.len(),
            Value::List(items) => items.iter().map(|v| v.approx_size() + 1).sum(),
            _ => 8,
        }
    }

    /// A value of type `ty` from JSON, as [`Value::to_json`] writes it
    /// (timestamps in milliseconds since the epoch; `null` is
    /// [`Value::Null`]).
    pub fn from_json(
        ty: &crate::schema::FieldType,
        j: &serde_json::Value,
    ) -> std::result::Result<Value, String> {
        use crate::schema::{FieldType as T, ScalarType as S};
        use serde_json::Value as J;
        let int =
            |n: &serde_json::Number| n.as_i64().ok_or_else(|| format!("{n} is not an integer"));
        let scalar = |s: &S, j: &J| -> std::result::Result<Value, String> {
            match (s, j) {
                (S::String, J::String(x)) => Ok(Value::String(x.clone())),
                (S::Integer, J::Number(n)) => int(n).map(Value::Int),
                (S::Float, J::Number(n)) => n
                    .as_f64()
                    .map(Value::Float)
                    .ok_or_else(|| format!("{n} is not a number")),
                (S::Boolean, J::Bool(b)) => Ok(Value::Bool(*b)),
                (S::Timestamp, J::Number(n)) => int(n).map(Value::Timestamp),
                (s, j) => Err(format!("expected {s}, given {j}")),
            }
        };
        if j.is_null() {
            return Ok(Value::Null);
        }
        match (ty, j) {
            (T::String, _) => scalar(&S::String, j),
            (T::Integer, _) => scalar(&S::Integer, j),
            (T::Float, _) => scalar(&S::Float, j),
            (T::Boolean, _) => scalar(&S::Boolean, j),
            (T::Timestamp, _) => scalar(&S::Timestamp, j),
            (T::Counter, J::Number(n)) => int(n).map(Value::Counter),
            (T::Text, J::String(x)) => Ok(Value::Text(x.clone())),
            (T::Reference(_), J::String(x)) => Ok(Value::Ref(x.clone())),
            (T::List(s), J::Array(items)) => items
                .iter()
                .map(|i| scalar(s, i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Value::List),
            (ty, j) => Err(format!("expected {ty}, given {j}")),
        }
    }

    /// The name of this value's type, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::String(_) => "string",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Timestamp(_) => "timestamp",
            Value::Counter(_) => "counter",
            Value::Text(_) => "text",
            Value::List(_) => "list",
            Value::Ref(_) => "reference",
        }
    }

    /// The string inside a `String`, `Text` or `Ref`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Text(s) | Value::Ref(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside an `Int`, `Counter` or `Timestamp`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) | Value::Counter(v) | Value::Timestamp(v) => Some(*v),
            _ => None,
        }
    }

    /// The number inside a `Float` (or an `Int`, converted).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The boolean inside a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Order two values for range filters: numbers compare numerically, strings,
    /// booleans and timestamps by their natural order; other pairs do not compare.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Int(a) | Counter(a), Int(b) | Counter(b)) => Some(a.cmp(b)),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            (Float(_) | Int(_), Float(_) | Int(_)) => self.as_f64()?.partial_cmp(&other.as_f64()?),
            (String(a) | Text(a) | Ref(a), String(b) | Text(b) | Ref(b)) => Some(a.cmp(b)),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A JSON rendering (used by the CLI's `--json`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::String(s) | Value::Text(s) | Value::Ref(s) => J::String(s.clone()),
            Value::Int(v) | Value::Counter(v) | Value::Timestamp(v) => J::from(*v),
            Value::Float(v) => serde_json::Number::from_f64(*v).map_or(J::Null, J::Number),
            Value::Bool(b) => J::Bool(*b),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::String(s) | Value::Text(s) | Value::Ref(s) => f.write_str(s),
            Value::Int(v) | Value::Counter(v) | Value::Timestamp(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

/// Build a [`Fields`] map from `(name, value)` pairs.
///
/// ```
/// use fieldsync::{fields, Value};
/// let f = fields([("name", Value::from("Acme")), ("visits", Value::Counter(0))]);
/// assert_eq!(f["name"], Value::from("Acme"));
/// ```
pub fn fields<K: Into<String>, I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.into(), v)).collect()
}
