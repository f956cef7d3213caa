//! [`Scan`]: queries over one collection's rows.

use std::ops::Bound;

use crate::schema::{Collection, FieldType, SchemaError};
use crate::value::{Fields, Value};

/// A query over one collection: equality and range filters on fields, a limit and
/// an offset. Built with `with_*` setters and run by [`Replica::scan`](crate::Replica::scan).
///
/// ```
/// use fieldsync::{Scan, Value};
/// let open_big = Scan::new("invoice")
///     .with_eq("status", "open")
///     .with_range("total", Some(Value::from(100.0)), None)
///     .with_limit(50);
/// # let _ = open_big;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Scan {
    pub(super) collection: String,
    pub(super) filters: Vec<Filter>,
    pub(super) include_deleted: bool,
    pub(super) include_rejected: bool,
    pub(super) limit: Option<usize>,
    pub(super) offset: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Filter {
    Eq(String, Value),
    Range(String, Bound<Value>, Bound<Value>),
}

impl Filter {
    fn field(&self) -> &str {
        match self {
            Filter::Eq(f, _) | Filter::Range(f, ..) => f,
        }
    }

    /// Check that the field exists and the bounds have its type; a range needs an
    /// ordered (non-list) type.
    pub(super) fn check(&self, c: &Collection) -> Result<(), SchemaError> {
        let field = c.field(self.field())?;
        let values: Vec<&Value> = match self {
            Filter::Eq(_, v) => vec![v],
            Filter::Range(_, lo, hi) => {
                if matches!(field.ty, FieldType::List(_)) {
                    return Err(SchemaError::WrongType {
                        collection: c.name.clone(),
                        field: field.name.clone(),
                        expected: "an ordered type for a range filter".into(),
                        given: field.ty.to_string(),
                    });
                }
                [lo, hi]
                    .into_iter()
                    .filter_map(|b| match b {
                        Bound::Included(v) | Bound::Excluded(v) => Some(v),
                        Bound::Unbounded => None,
                    })
                    .collect()
            }
        };
        for v in values {
            c.check_value(&field.name, v)?;
        }
        Ok(())
    }

    pub(super) fn matches(&self, fields: &Fields) -> bool {
        match self {
            Filter::Eq(f, v) => fields
                .get(f)
                .is_some_and(|x| x.compare(v) == Some(std::cmp::Ordering::Equal) || x == v),
            Filter::Range(f, lo, hi) => {
                let Some(x) = fields.get(f) else { return false };
                let above = match lo {
                    Bound::Included(v) => x.compare(v).is_some_and(|o| o.is_ge()),
                    Bound::Excluded(v) => x.compare(v).is_some_and(|o| o.is_gt()),
                    Bound::Unbounded => true,
                };
                let below = match hi {
                    Bound::Included(v) => x.compare(v).is_some_and(|o| o.is_le()),
                    Bound::Excluded(v) => x.compare(v).is_some_and(|o| o.is_lt()),
                    Bound::Unbounded => true,
                };
                above && below
            }
        }
    }
}

impl Scan {
    /// Every live record of `collection`.
    pub fn new(collection: &str) -> Self {
        Self {
            collection: collection.to_owned(),
            filters: Vec::new(),
            include_deleted: false,
            include_rejected: false,
            limit: None,
            offset: 0,
        }
    }

    /// Only records whose `field` equals `value`.
    pub fn with_eq(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.filters
            .push(Filter::Eq(field.to_owned(), value.into()));
        self
    }

    /// Only records whose `field` lies in `[min, max]` (either bound optional,
    /// both inclusive).
    pub fn with_range(self, field: &str, min: Option<Value>, max: Option<Value>) -> Self {
        let b = |v: Option<Value>| v.map_or(Bound::Unbounded, Bound::Included);
        self.with_bounds(field, b(min), b(max))
    }

    /// Only records whose `field` lies within the given bounds.
    pub fn with_bounds(mut self, field: &str, lo: Bound<Value>, hi: Bound<Value>) -> Self {
        self.filters.push(Filter::Range(field.to_owned(), lo, hi));
        self
    }

    /// Also return deleted records (tombstones).
    pub fn with_deleted(mut self) -> Self {
        self.include_deleted = true;
        self
    }

    /// Also list records hidden because they (or their parents) were rejected
    /// (`meta.rejected` names the entry).
    pub fn with_rejected(mut self) -> Self {
        self.include_rejected = true;
        self
    }

    /// At most `n` records.
    pub fn with_limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Skip the first `n` matching records.
    pub fn with_offset(mut self, n: usize) -> Self {
        self.offset = n;
        self
    }
}
