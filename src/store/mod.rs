//! Storage: a small fallible key-value trait and its two implementations.
//!
//! Everything fieldsync keeps on disk goes through [`Storage`]: a flat, ordered byte
//! keyspace with point reads, prefix scans, puts, deletes and atomic batches. The
//! default implementation is [`SledStore`] (durable files); [`MemoryStore`] keeps the
//! same semantics in memory for deterministic tests and simulations.
//!
//! The key layout is described in `docs/architecture.md` ("Storage layout").
//!
//! ```
//! use fieldsync::store::{Batch, MemoryStore, Storage};
//!
//! let store = MemoryStore::new();
//! let mut batch = Batch::new();
//! batch.put(b"a:1".to_vec(), b"one".to_vec());
//! batch.put(b"a:2".to_vec(), b"two".to_vec());
//! store.apply(batch)?;
//! assert_eq!(store.get(b"a:1")?, Some(b"one".to_vec()));
//! assert_eq!(store.scan_prefix(b"a:")?.len(), 2);
//! # Ok::<(), fieldsync::store::StoreError>(())
//! ```

mod memory;
mod sled_store;

pub(crate) mod keys;

pub use memory::MemoryStore;
pub use sled_store::SledStore;

/// An error from a storage backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed to read or write (I/O error, corrupt file, lock held by
    /// another process). The operation did not take effect; the caller may retry or
    /// report it. The message is the backend's own.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The store directory is locked by another process (or, briefly, by a handle
    /// of this process that is still closing). Close the other user first.
    #[error("store at {path} is in use by another process: {message}")]
    Locked {
        /// The directory that could not be opened.
        path: String,
        /// The backend's message.
        message: String,
    },
}

/// One key-value pair read from a store.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A set of puts and deletes applied atomically by [`Storage::apply`].
///
/// Operations apply in order, so a put after a delete of the same key wins.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stage a write of `value` under `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    /// Stage the removal of `key` (a no-op if it is absent).
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    /// Stage a write of `key`: `Some` puts the value, `None` removes it.
    pub fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.ops.push((key, value));
    }

    /// A batch of these writes (`Some` puts, `None` removes).
    pub fn of_writes(writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>) -> Self {
        let mut b = Self::new();
        b.ops.extend(writes);
        b
    }

    /// How many operations are staged.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A durable, ordered key-value store.
///
/// Every method can fail and reports why; none panics on bad data. Implementations
/// must be safe to share between threads. Writes become durable only after
/// [`Storage::flush`] returns: callers batch several writes and flush once (group
/// commit, see `replica::durability`).
pub trait Storage: Send + Sync + 'static {
    /// Read one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// All pairs whose key starts with `prefix`, in key order (collected from
    /// [`Storage::for_each_prefix`]).
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        self.for_each_prefix(prefix, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// Visit the pairs whose key starts with `prefix`, in key order, until `visit`
    /// returns `false`. Backends stream this without collecting the whole range.
    fn for_each_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// Write one key.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Remove one key (a no-op if it is absent).
    fn delete(&self, key: &[u8]) -> Result<(), StoreError>;

    /// Apply every operation of `batch` atomically: after a crash either all of it
    /// or none of it is visible.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Make every write applied so far durable (fsync). Returns once it is.
    fn flush(&self) -> Result<(), StoreError>;

    /// Approximate size of the store on disk in bytes (0 for memory stores).
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}
