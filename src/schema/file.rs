//! The TOML schema file.
//!
//! ```toml
//! [collections.customer.fields]
//! name   = { type = "string", required = true }
//! tax_id = "string"
//!
//! [collections.invoice.fields]
//! customer = { type = "reference", to = "customer", required = true }
//! total    = { type = "float", default = 0.0 }
//! tags     = { type = "list", of = "string" }
//! notes    = "text"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Check, Collection, FieldType, Granularity, Policy, Rule, ScalarType, Schema, SchemaError,
};
use crate::value::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    collections: BTreeMap<String, FileCollection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCollection {
    #[serde(default)]
    fields: toml::Table,
    status: Option<FileStatus>,
    #[serde(default)]
    rules: Vec<FileRule>,
    policy: Option<String>,
    granularity: Option<String>,
    queue: Option<String>,
    #[serde(default)]
    block_sync_on_conflict: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStatus {
    field: String,
    states: Vec<String>,
    #[serde(default)]
    transitions: Vec<(String, String)>,
}

/// One rule: the field and exactly one check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    field: String,
    #[serde(default)]
    required: bool,
    min: Option<f64>,
    max: Option<f64>,
    one_of: Option<Vec<toml::Value>>,
    pattern: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

fn rule(place: &str, r: &FileRule) -> Result<Rule, SchemaError> {
    let mut checks = Vec::new();
    if r.required {
        checks.push(Check::Required);
    }
    if let Some(m) = r.min {
        checks.push(Check::Min(m));
    }
    if let Some(m) = r.max {
        checks.push(Check::Max(m));
    }
    if let Some(vs) = &r.one_of {
        checks.push(Check::OneOf(
            vs.iter().map(value).collect::<Result<_, _>>()?,
        ));
    }
    if let Some(p) = &r.pattern {
        checks.push(Check::Pattern(p.clone()));
    }
    if checks.len() != 1 {
        return Err(err(format!(
            "{place}: a rule needs exactly one of `required`, `min`, `max`, `one_of`, `pattern` (write one rule per check)"
        )));
    }
    let mut out = Rule::new(&r.field, checks.remove(0));
    if let Some(c) = &r.code {
        out = out.code(c);
    }
    if let Some(m) = &r.message {
        out = out.message(m);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileField {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    default: Option<toml::Value>,
    /// The referenced collection, for `reference`.
    to: Option<String>,
    /// The element type, for `list`.
    of: Option<String>,
}

fn err(message: impl Into<String>) -> SchemaError {
    SchemaError::File {
        message: message.into(),
    }
}

fn scalar(name: &str) -> Option<ScalarType> {
    Some(match name {
        "string" => ScalarType::String,
        "integer" | "int" => ScalarType::Integer,
        "float" => ScalarType::Float,
        "boolean" | "bool" => ScalarType::Boolean,
        "timestamp" => ScalarType::Timestamp,
        _ => return None,
    })
}

fn field_type(place: &str, f: &FileField) -> Result<FieldType, SchemaError> {
    let ty = match f.ty.as_str() {
        "counter" => FieldType::Counter,
        "text" => FieldType::Text,
        "list" => {
            let of = f
                .of
                .as_deref()
                .ok_or_else(|| err(format!("{place}: a list needs `of = \"<scalar type>\"`")))?;
            FieldType::List(
                scalar(of)
                    .ok_or_else(|| err(format!("{place}: unknown list element type `{of}`")))?,
            )
        }
        "reference" | "ref" => FieldType::Reference(f.to.clone().ok_or_else(|| {
            err(format!(
                "{place}: a reference needs `to = \"<collection>\"`"
            ))
        })?),
        other => match scalar(other) {
            Some(ScalarType::String) => FieldType::String,
            Some(ScalarType::Integer) => FieldType::Integer,
            Some(ScalarType::Float) => FieldType::Float,
            Some(ScalarType::Boolean) => FieldType::Boolean,
            Some(ScalarType::Timestamp) => FieldType::Timestamp,
            None => return Err(err(format!("{place}: unknown type `{other}`"))),
        },
    };
    if f.of.is_some() && !matches!(ty, FieldType::List(_)) {
        return Err(err(format!("{place}: `of` only applies to lists")));
    }
    if f.to.is_some() && !matches!(ty, FieldType::Reference(_)) {
        return Err(err(format!("{place}: `to` only applies to references")));
    }
    Ok(ty)
}

fn value(v: &toml::Value) -> Result<Value, SchemaError> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(x) => Value::Float(*x),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(items) => {
            Value::List(items.iter().map(value).collect::<Result<_, _>>()?)
        }
        other => return Err(err(format!("unsupported default value `{other}`"))),
    })
}

pub(super) fn parse(text: &str) -> Result<Schema, SchemaError> {
    let file: FileSchema = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut declared = Schema::new();
    for (cname, c) in &file.collections {
        let mut b = Collection::builder(cname);
        for (fname, spec) in &c.fields {
            let place = format!("collections.{cname}.fields.{fname}");
            let f: FileField = match spec {
                toml::Value::String(ty) => FileField {
                    ty: ty.clone(),
                    required: false,
                    default: None,
                    to: None,
                    of: None,
                },
                toml::Value::Table(t) => t
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| err(format!("{place}: {}", e.message())))?,
                _ => return Err(err(format!("{place}: expected a type name or a table"))),
            };
            let ty = field_type(&place, &f)?;
            b = match (&f.default, f.required) {
                (Some(d), _) => {
                    let d = match (&ty, value(d)?) {
                        (FieldType::Timestamp, Value::Int(t)) => Value::Timestamp(t),
                        (_, d) => d,
                    };
                    b.default(fname, ty, d)
                }
                (None, true) => b.required(fname, ty),
                (None, false) => b.field(fname, ty),
            };
        }
        if let Some(st) = &c.status {
            let states: Vec<&str> = st.states.iter().map(String::as_str).collect();
            b = b.status(&st.field, &states);
            if !st.transitions.is_empty() {
                let moves: Vec<(&str, &str)> = st
                    .transitions
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                b = b.transitions(&moves);
            }
        }
        for (i, r) in c.rules.iter().enumerate() {
            b = b.rule(rule(&format!("collections.{cname}.rules[{i}]"), r)?);
        }
        if let Some(p) = &c.policy {
            b = b.policy(
                p.parse::<Policy>()
                    .map_err(|e| err(format!("collections.{cname}.policy: {e}")))?,
            );
        }
        if let Some(g) = &c.granularity {
            b = b.granularity(
                g.parse::<Granularity>()
                    .map_err(|e| err(format!("collections.{cname}.granularity: {e}")))?,
            );
        }
        if let Some(q) = &c.queue {
            b = b.queue(q);
        }
        b = b.block_sync_on_conflict(c.block_sync_on_conflict);
        declared.collections.insert(cname.clone(), b.build()?);
    }
    // Define in dependency order so references are checked against the whole file.
    let mut schema = Schema::new();
    schema.merge(&declared)?;
    Ok(schema)
}
