//! Record documents: how a record's fields live in an automerge document.
//!
//! This module does no IO. Each field is a key of the document's root map:
//! scalars as automerge scalars, counters as automerge counters, text as an
//! automerge text object, lists as automerge lists. A delete writes the reserved
//! key `_deleted = true` (a tombstone that replicates like any change) and keeps
//! the fields, so an edit racing a delete can be detected and nothing is lost.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value as AmValue};

use crate::error::Error;
use crate::schema::{Collection, FieldType, ScalarType};
use crate::value::{Fields, Value};

/// The root key that marks a record deleted.
pub(crate) const DELETED_KEY: &str = "_deleted";

fn scalar_of(v: &Value) -> Option<ScalarValue> {
    Some(match v {
        Value::String(s) | Value::Ref(s) => ScalarValue::Str(s.as_str().into()),
        Value::Int(i) => ScalarValue::Int(*i),
        Value::Float(x) => ScalarValue::F64(*x),
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Timestamp(t) => ScalarValue::Timestamp(*t),
        Value::Counter(c) => ScalarValue::counter(*c),
        _ => return None,
    })
}

fn am_err(collection: &Collection, field: &str, e: automerge::AutomergeError) -> Error {
    Error::Edit {
        collection: collection.name.clone(),
        field: field.to_owned(),
        reason: e.to_string(),
    }
}

/// The object id of `field` if it holds an object of type `ty`.
fn object<D: ReadDoc>(doc: &D, field: &str, ty: ObjType) -> Option<ObjId> {
    match doc.get(ROOT, field) {
        Ok(Some((AmValue::Object(t), id))) if t == ty => Some(id),
        _ => None,
    }
}

fn write_field(
    tx: &mut Transaction<'_>,
    c: &Collection,
    name: &str,
    value: &Value,
) -> Result<(), Error> {
    let e = |err| am_err(c, name, err);
    match value {
        Value::Null => {
            if tx.get(ROOT, name).map_err(e)?.is_some() {
                tx.delete(ROOT, name).map_err(e)?;
            }
        }
        Value::Text(s) => match object(tx, name, ObjType::Text) {
            Some(obj) => tx.update_text(&obj, s).map_err(e)?,
            None => {
                let obj = tx.put_object(ROOT, name, ObjType::Text).map_err(e)?;
                tx.splice_text(&obj, 0, 0, s).map_err(e)?;
            }
        },
        Value::List(items) => {
            let obj = match object(tx, name, ObjType::List) {
                Some(obj) => {
                    for i in (0..tx.length(&obj)).rev() {
                        tx.delete(&obj, i).map_err(e)?;
                    }
                    obj
                }
                None => tx.put_object(ROOT, name, ObjType::List).map_err(e)?,
            };
            for (i, item) in items.iter().enumerate() {
                let s = scalar_of(item).ok_or_else(|| Error::Edit {
                    collection: c.name.clone(),
                    field: name.to_owned(),
                    reason: format!("a list holds scalars, not {}", item.type_name()),
                })?;
                tx.insert(&obj, i, s).map_err(e)?;
            }
        }
        scalar => {
            let s = scalar_of(scalar).ok_or_else(|| Error::Edit {
                collection: c.name.clone(),
                field: name.to_owned(),
                reason: format!("unsupported value {}", scalar.type_name()),
            })?;
            tx.put(ROOT, name, s).map_err(e)?;
        }
    }
    Ok(())
}

/// Mark the record deleted.
pub(crate) fn write_tombstone(tx: &mut Transaction<'_>, c: &Collection) -> Result<(), Error> {
    tx.put(ROOT, DELETED_KEY, true)
        .map_err(|e| am_err(c, DELETED_KEY, e))
}

/// Bring a deleted record back (a resolution that keeps an edit of it).
pub(crate) fn write_undelete(tx: &mut Transaction<'_>, c: &Collection) -> Result<(), Error> {
    tx.put(ROOT, DELETED_KEY, false)
        .map_err(|e| am_err(c, DELETED_KEY, e))
}

/// Why a document does not fit its collection's schema.
#[derive(Debug)]
pub(crate) struct ShapeError(pub(crate) String);

fn convert_scalar(ty: &FieldType, s: &ScalarValue) -> Option<Value> {
    Some(match (ty, s) {
        (FieldType::String, ScalarValue::Str(v)) => Value::String(v.to_string()),
        (FieldType::Reference(_), ScalarValue::Str(v)) => Value::Ref(v.to_string()),
        (FieldType::Integer, ScalarValue::Int(v)) => Value::Int(*v),
        (FieldType::Integer, ScalarValue::Uint(v)) => Value::Int(i64::try_from(*v).ok()?),
        (FieldType::Float, ScalarValue::F64(v)) => Value::Float(*v),
        (FieldType::Float, ScalarValue::Int(v)) => Value::Float(*v as f64),
        (FieldType::Boolean, ScalarValue::Boolean(v)) => Value::Bool(*v),
        (FieldType::Timestamp, ScalarValue::Timestamp(v)) => Value::Timestamp(*v),
        (FieldType::Counter, ScalarValue::Counter(v)) => Value::Counter(i64::from(v)),
        _ => return None,
    })
}

fn convert_element(ty: ScalarType, s: &ScalarValue) -> Option<Value> {
    convert_scalar(&FieldType::from(ty), s)
}

/// One automerge value of a root key as the value of `field`.
fn convert<D: ReadDoc>(
    doc: &D,
    field: &crate::schema::Field,
    (value, id): (AmValue<'_>, ObjId),
) -> Result<Value, ShapeError> {
    let key = &field.name;
    let wrong =
        |found: &str| ShapeError(format!("field `{key}` expects {}, found {found}", field.ty));
    Ok(match value {
        AmValue::Scalar(s) => {
            convert_scalar(&field.ty, &s).ok_or_else(|| wrong(&format!("{:?}", s.as_ref())))?
        }
        AmValue::Object(ObjType::Text) if field.ty == FieldType::Text => {
            Value::Text(doc.text(&id).map_err(|e| ShapeError(e.to_string()))?)
        }
        AmValue::Object(ObjType::List) => {
            let FieldType::List(elem) = field.ty else {
                return Err(wrong("a list"));
            };
            let items = doc
                .values(&id)
                .map(|(v, _)| match v {
                    AmValue::Scalar(s) => convert_element(elem, &s),
                    AmValue::Object(_) => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| wrong("a list with other elements"))?;
            Value::List(items)
        }
        AmValue::Object(t) => return Err(wrong(&format!("an object ({t})"))),
    })
}

/// Every value a root key holds, the winner first, each with the id of the
/// operation that wrote it (which names the writing change's actor and op
/// counter). For conflict analysis.
pub(crate) fn read_frontier<D: ReadDoc>(
    doc: &D,
    field: &crate::schema::Field,
) -> Result<Vec<(Value, ObjId)>, ShapeError> {
    let key = field.name.as_str();
    let err = |e: automerge::AutomergeError| ShapeError(e.to_string());
    let winner = doc.get(ROOT, key).map_err(err)?.map(|(_, id)| id);
    let mut all = doc.get_all(ROOT, key).map_err(err)?;
    if let Some(w) = winner
        && let Some(i) = all.iter().position(|(_, id)| *id == w)
    {
        let first = all.remove(i);
        all.insert(0, first);
    }
    all.into_iter()
        .map(|(v, id)| Ok((convert(doc, field, (v, id.clone()))?, id)))
        .collect()
}

/// A scalar field's value as of `heads` (the value the change at those heads
/// left); `None` if unset there or not a scalar.
pub(crate) fn read_scalar_at<D: ReadDoc>(
    doc: &D,
    field: &crate::schema::Field,
    heads: &[automerge::ChangeHash],
) -> Option<Value> {
    let (v, id) = doc.get_at(ROOT, field.name.as_str(), heads).ok()??;
    if !matches!(v, AmValue::Scalar(_)) {
        return None;
    }
    convert(doc, field, (v, id)).ok()
}

/// The ids of the operations that hold the `_deleted` key, each with its value.
pub(crate) fn deleted_frontier<D: ReadDoc>(doc: &D) -> Vec<(bool, ObjId)> {
    doc.get_all(ROOT, DELETED_KEY)
        .unwrap_or_default()
        .into_iter()
        .map(|(v, id)| {
            let on =
                matches!(v, AmValue::Scalar(s) if matches!(s.as_ref(), ScalarValue::Boolean(true)));
            (on, id)
        })
        .collect()
}

/// Every value a field holds: the winner first (the one every replica reads),
/// then the values written concurrently with it, which automerge keeps until a
/// later write replaces them all.
pub(crate) fn read_concurrent<D: ReadDoc>(
    doc: &D,
    field: &crate::schema::Field,
) -> Result<Vec<Value>, ShapeError> {
    Ok(read_frontier(doc, field)?
        .into_iter()
        .map(|(v, _)| v)
        .collect())
}

/// Read a record's fields as the schema declares them, and its deleted flag.
///
/// A root key the schema does not declare, or a value of another type, is a
/// [`ShapeError`] (documents from outside, such as imports, can have any shape).
pub(crate) fn read_fields<D: ReadDoc>(
    doc: &D,
    c: &Collection,
) -> Result<(Fields, bool), ShapeError> {
    let mut out = Fields::new();
    let mut deleted = false;
    // One pass over the root map (a `get` per key would seek each one).
    for item in doc.map_range(ROOT, ..) {
        let key = item.key.as_ref();
        if key == DELETED_KEY {
            deleted = matches!(
                &item.value,
                automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(true))
            );
            continue;
        }
        let field = c
            .field(key)
            .map_err(|_| ShapeError(format!("key `{key}` is not a field of `{}`", c.name)))?;
        let id = match item.value {
            automerge::ValueRef::Object(_) => item.id(),
            automerge::ValueRef::Scalar(_) => ROOT,
        };
        let value = convert(doc, field, (item.value.into_value(), id))?;
        let key = key.to_owned();
        out.insert(key, value);
    }
    Ok((out, deleted))
}

/// The closure form of an update: commuting edits of counters, text and lists,
/// plus plain field writes, checked against the schema as they are made.
///
/// Every edit made in one closure becomes one automerge change. If the closure
/// returns an error, none of its edits are kept.
///
/// ```
/// # use fieldsync::{Replica, Config, fields, Value, schema::{Collection, FieldType}};
/// # let replica = Replica::in_memory(Config::default())?;
/// # replica.define_collection(Collection::builder("site")
/// #     .default("visits", FieldType::Counter, Value::Counter(0))
/// #     .field("notes", FieldType::Text)
/// #     .field("tags", FieldType::List(fieldsync::schema::ScalarType::String))
/// #     .build()?)?;
/// # replica.insert("site", "s1", fields([("notes", Value::from("gate code"))]))?;
/// replica.update_with("site", "s1", |edit| {
///     edit.increment("visits", 1)?;
///     edit.splice_text("notes", 0, 0, "Closed Mon: ")?;
///     edit.list_push("tags", "north")?;
///     Ok(())
/// })?;
/// let rec = replica.get("site", "s1")?.unwrap();
/// assert_eq!(rec.fields["visits"], Value::Counter(1));
/// assert_eq!(rec.fields["notes"], Value::Text("Closed Mon: gate code".into()));
/// # Ok::<(), fieldsync::Error>(())
/// ```
pub struct Edit<'a, 'd> {
    pub(crate) tx: &'a mut Transaction<'d>,
    pub(crate) collection: &'a Collection,
    /// What this edit did, for the change's mark.
    pub(crate) mark: crate::conflict::mark::Mark,
    /// The status before the edit, for lifecycle checks (`None`: unchecked, as
    /// for a person's resolution).
    pub(crate) status_before: Option<Option<Value>>,
}

impl Edit<'_, '_> {
    fn wrong_type(&self, field: &str, given: &str) -> Error {
        match self.collection.field(field) {
            Ok(f) => crate::schema::SchemaError::WrongType {
                collection: self.collection.name.clone(),
                field: field.to_owned(),
                expected: f.ty.to_string(),
                given: given.to_owned(),
            }
            .into(),
            Err(e) => e.into(),
        }
    }

    fn typed(&self, field: &str, want: fn(&FieldType) -> bool, what: &str) -> Result<(), Error> {
        if want(&self.collection.field(field)?.ty) {
            Ok(())
        } else {
            Err(self.wrong_type(field, what))
        }
    }

    /// Set a field (same rules as a patch in [`Replica::update`](crate::Replica::update)).
    pub fn set(&mut self, field: &str, value: impl Into<Value>) -> Result<(), Error> {
        let v = self.collection.check_value(field, &value.into())?;
        if let Some(before) = &self.status_before
            && self.collection.lifecycle_of(field).is_some()
        {
            self.collection.check_transition(before.as_ref(), &v)?;
        }
        write_field(self.tx, self.collection, field, &v)?;
        self.assigned(field, &v);
        Ok(())
    }

    /// Write checked, canonical fields (see [`Collection::check_patch`]),
    /// checking status moves and noting each in the mark.
    pub(crate) fn write_checked(&mut self, fields: &Fields) -> Result<(), Error> {
        for (name, v) in fields {
            if let Some(before) = &self.status_before
                && self.collection.lifecycle_of(name).is_some()
            {
                self.collection.check_transition(before.as_ref(), v)?;
            }
            write_field(self.tx, self.collection, name, v)?;
            self.assigned(name, v);
        }
        Ok(())
    }

    /// Note a whole-value write of `field` in the mark.
    pub(crate) fn assigned(&mut self, field: &str, v: &Value) {
        self.mark.assigned.insert(field.to_owned());
        if self.collection.lifecycle_of(field).is_some() {
            self.mark.new_status = v.as_str().map(str::to_owned);
        }
    }

    fn merged(&mut self, field: &str) {
        self.mark.merged.insert(field.to_owned());
    }

    /// The field's current value inside this edit, if set.
    pub fn get(&self, field: &str) -> Result<Option<Value>, Error> {
        self.collection.field(field)?;
        let (fields, _) = read_fields(&*self.tx, self.collection).map_err(|e| Error::Edit {
            collection: self.collection.name.clone(),
            field: field.to_owned(),
            reason: e.0,
        })?;
        Ok(fields.get(field).cloned())
    }

    /// Add `by` to a counter field (concurrent increments add up). An unset
    /// counter starts at 0.
    pub fn increment(&mut self, field: &str, by: i64) -> Result<(), Error> {
        self.typed(field, |t| *t == FieldType::Counter, "an increment")?;
        self.merged(field);
        let c = self.collection;
        match self.tx.get(ROOT, field).map_err(|e| am_err(c, field, e))? {
            Some((AmValue::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Counter(_)) => self
                .tx
                .increment(ROOT, field, by)
                .map_err(|e| am_err(c, field, e)),
            _ => self
                .tx
                .put(ROOT, field, ScalarValue::counter(by))
                .map_err(|e| am_err(c, field, e)),
        }
    }

    /// Delete `delete` characters at `pos` of a text field and insert `insert`
    /// there (positions in Unicode code points). An unset text starts empty.
    pub fn splice_text(
        &mut self,
        field: &str,
        pos: usize,
        delete: usize,
        insert: &str,
    ) -> Result<(), Error> {
        self.typed(field, |t| *t == FieldType::Text, "a text edit")?;
        self.merged(field);
        let c = self.collection;
        let e = |err| am_err(c, field, err);
        let obj = match object(&*self.tx, field, ObjType::Text) {
            Some(o) => o,
            None => self.tx.put_object(ROOT, field, ObjType::Text).map_err(e)?,
        };
        let len = self.tx.length(&obj);
        if pos.saturating_add(delete) > len {
            return Err(Error::Edit {
                collection: c.name.clone(),
                field: field.to_owned(),
                reason: format!("splice {pos}+{delete} past the end of a text of length {len}"),
            });
        }
        let del = isize::try_from(delete).map_err(|_| Error::Edit {
            collection: c.name.clone(),
            field: field.to_owned(),
            reason: "delete count too large".into(),
        })?;
        self.tx.splice_text(&obj, pos, del, insert).map_err(e)
    }

    fn list(&mut self, field: &str) -> Result<(ObjId, ScalarType), Error> {
        let c = self.collection;
        let FieldType::List(elem) = c.field(field)?.ty else {
            return Err(self.wrong_type(field, "a list edit"));
        };
        self.merged(field);
        let obj = match object(&*self.tx, field, ObjType::List) {
            Some(o) => o,
            None => self
                .tx
                .put_object(ROOT, field, ObjType::List)
                .map_err(|e| am_err(c, field, e))?,
        };
        Ok((obj, elem))
    }

    fn element(&self, field: &str, elem: ScalarType, v: Value) -> Result<ScalarValue, Error> {
        elem.coerce(&v).as_ref().and_then(scalar_of).ok_or_else(|| {
            crate::schema::SchemaError::WrongType {
                collection: self.collection.name.clone(),
                field: field.to_owned(),
                expected: elem.to_string(),
                given: v.type_name().to_owned(),
            }
            .into()
        })
    }

    /// Insert `value` at `index` of a list field (concurrent inserts all stay).
    pub fn list_insert(
        &mut self,
        field: &str,
        index: usize,
        value: impl Into<Value>,
    ) -> Result<(), Error> {
        let (obj, elem) = self.list(field)?;
        let s = self.element(field, elem, value.into())?;
        let len = self.tx.length(&obj);
        if index > len {
            return Err(Error::Edit {
                collection: self.collection.name.clone(),
                field: field.to_owned(),
                reason: format!("insert at {index} past the end of a list of length {len}"),
            });
        }
        let c = self.collection;
        self.tx
            .insert(&obj, index, s)
            .map_err(|e| am_err(c, field, e))
    }

    /// Append `value` to a list field.
    pub fn list_push(&mut self, field: &str, value: impl Into<Value>) -> Result<(), Error> {
        let (obj, _) = self.list(field)?;
        let len = self.tx.length(&obj);
        self.list_insert(field, len, value)
    }

    /// Remove the element at `index` of a list field.
    pub fn list_delete(&mut self, field: &str, index: usize) -> Result<(), Error> {
        let (obj, _) = self.list(field)?;
        let len = self.tx.length(&obj);
        if index >= len {
            return Err(Error::Edit {
                collection: self.collection.name.clone(),
                field: field.to_owned(),
                reason: format!("delete at {index} past the end of a list of length {len}"),
            });
        }
        let c = self.collection;
        self.tx.delete(&obj, index).map_err(|e| am_err(c, field, e))
    }
}
