//! Parsing `field=value` arguments by the field's declared type.

use fieldsync::Value;
use fieldsync::schema::{Collection, FieldType, ScalarType};

use super::Failure;

fn scalar(ty: ScalarType, field: &str, raw: &str) -> Result<Value, Failure> {
    let bad = |what: &str| Failure(format!("field `{field}` expects {what}, given `{raw}`"));
    Ok(match ty {
        ScalarType::String => Value::String(raw.to_owned()),
        ScalarType::Integer => Value::Int(raw.trim().parse().map_err(|_| bad("an integer"))?),
        ScalarType::Float => Value::Float(raw.trim().parse().map_err(|_| bad("a float"))?),
        ScalarType::Boolean => Value::Bool(match raw.trim() {
            "true" | "yes" | "1" => true,
            "false" | "no" | "0" => false,
            _ => return Err(bad("a boolean (true or false)")),
        }),
        ScalarType::Timestamp => Value::Timestamp(match raw.trim().parse() {
            Ok(ms) => ms,
            Err(_) => humantime::parse_rfc3339_weak(raw.trim())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .ok_or_else(|| {
                    bad("a time (`2026-12-03 08:37:07`, UTC, or milliseconds since 1970)")
                })?,
        }),
        other => {
            return Err(Failure(format!(
                "field `{field}`: the CLI cannot parse {other} values"
            )));
        }
    })
}

fn list_items(raw: &str) -> Result<Vec<String>, Failure> {
    let t = raw.trim();
    if t.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(t).map_err(|e| Failure(format!("bad JSON list `{raw}`: {e}")))?;
        Ok(items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect())
    } else if t.is_empty() {
        Ok(Vec::new())
    } else {
        Ok(t.split(',').map(|s| s.trim().to_owned()).collect())
    }
}

/// Parse one `field=value` for collection `c` (`field@=path`: the value is
/// the file's content).
pub(crate) fn assignment(c: &Collection, kv: &str) -> Result<(String, Value), Failure> {
    let (field, raw) = kv.split_once('=').ok_or_else(|| {
        Failure(format!(
            "expected FIELD=VALUE (or FIELD@=FILE), given `{kv}`"
        ))
    })?;
    let content;
    let (field, raw) = match field.strip_suffix('@') {
        Some(f) => {
            content = std::fs::read_to_string(raw)
                .map_err(|e| Failure(format!("cannot read {raw} for field `{f}`: {e}")))?;
            // A file's text becomes the value as it is (no second copy).
            let fd = c.field(f)?;
            match &fd.ty {
                FieldType::String => return Ok((f.to_owned(), Value::String(content))),
                FieldType::Text => return Ok((f.to_owned(), Value::Text(content))),
                _ => {}
            }
            (f, content.as_str())
        }
        None => (field, raw),
    };
    let f = c.field(field)?;
    let value = match &f.ty {
        FieldType::String => scalar(ScalarType::String, field, raw)?,
        FieldType::Integer => scalar(ScalarType::Integer, field, raw)?,
        FieldType::Float => scalar(ScalarType::Float, field, raw)?,
        FieldType::Boolean => scalar(ScalarType::Boolean, field, raw)?,
        FieldType::Timestamp => scalar(ScalarType::Timestamp, field, raw)?,
        FieldType::Counter => match scalar(ScalarType::Integer, field, raw)? {
            Value::Int(i) => Value::Counter(i),
            other => other,
        },
        FieldType::Text => Value::Text(raw.to_owned()),
        FieldType::Reference(_) => Value::Ref(raw.to_owned()),
        FieldType::List(elem) => Value::List(
            list_items(raw)?
                .iter()
                .map(|item| scalar(*elem, field, item))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(Failure(format!(
                "field `{field}` has type {other}, which the CLI cannot parse"
            )));
        }
    };
    Ok((field.to_owned(), value))
}
