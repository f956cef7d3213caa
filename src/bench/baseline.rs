//! The raw baseline: automerge documents saved whole and written to sled by hand,
//! with the same durability as fieldsync (a flush before each call returns).

use std::collections::HashMap;
use std::path::Path;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ScalarValue};

use crate::Value;
use crate::store::StoreError;

/// An application's hand-written store: one saved automerge document per key.
pub struct Baseline {
    db: sled::Db,
    docs: HashMap<String, AutoCommit>,
}

fn err(e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Store(StoreError::Backend(e.to_string()))
}

fn put(doc: &mut AutoCommit, fields: &crate::Fields) -> crate::Result<()> {
    for (k, v) in fields {
        let s = match v {
            Value::String(s) => ScalarValue::Str(s.as_str().into()),
            Value::Int(i) => ScalarValue::Int(*i),
            Value::Float(x) => ScalarValue::F64(*x),
            Value::Bool(b) => ScalarValue::Boolean(*b),
            Value::Timestamp(t) => ScalarValue::Timestamp(*t),
            Value::Counter(c) => ScalarValue::counter(*c),
            other => {
                return Err(err(format!(
                    "baseline writes scalars only, not {}",
                    other.type_name()
                )));
            }
        };
        doc.put(ROOT, k.as_str(), s).map_err(err)?;
    }
    Ok(())
}

impl Baseline {
    /// A fresh baseline store in `dir`.
    pub fn open(dir: &Path) -> crate::Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(err)?;
        Ok(Self {
            db,
            docs: HashMap::new(),
        })
    }

    fn write(&mut self, ids: &[usize]) -> crate::Result<()> {
        let mut batch = sled::Batch::default();
        for &i in ids {
            let key = super::id(i);
            if let Some(doc) = self.docs.get_mut(&key) {
                batch.insert(key.as_bytes(), doc.save());
            }
        }
        self.db.apply_batch(batch).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    /// Create records `range`, saving and flushing every `batch` records.
    pub fn insert_batched(
        &mut self,
        range: std::ops::Range<usize>,
        batch: usize,
    ) -> crate::Result<()> {
        let ids: Vec<usize> = range.collect();
        for chunk in ids.chunks(batch.max(1)) {
            for &i in chunk {
                let mut doc = AutoCommit::new();
                put(&mut doc, &super::record(i))?;
                doc.commit();
                self.docs.insert(super::id(i), doc);
            }
            self.write(chunk)?;
        }
        Ok(())
    }

    /// Drop every loaded document, so the next updates load them from sled.
    pub fn forget(&mut self) {
        self.docs.clear();
    }

    /// Update 2 fields of records `range`, saving and flushing every `batch`
    /// records. A document not loaded is first loaded from sled (and kept).
    pub fn update_batched(
        &mut self,
        range: std::ops::Range<usize>,
        batch: usize,
        round: usize,
    ) -> crate::Result<()> {
        let ids: Vec<usize> = range.collect();
        for chunk in ids.chunks(batch.max(1)) {
            for &i in chunk {
                let key = super::id(i);
                let doc = match self.docs.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let bytes =
                            self.db
                                .get(e.key().as_bytes())
                                .map_err(err)?
                                .ok_or_else(|| {
                                    err(format!("baseline record {i} was never inserted"))
                                })?;
                        e.insert(AutoCommit::load(&bytes).map_err(err)?)
                    }
                };
                put(doc, &super::patch(i, round))?;
                doc.commit();
            }
            self.write(chunk)?;
        }
        Ok(())
    }
}
