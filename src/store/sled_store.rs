//! The default, durable [`Storage`]: one sled database in a directory.

use std::path::Path;
use std::time::Duration;

use super::{Batch, Storage, StoreError};

/// A [`Storage`] backed by a sled 0.34 database.
///
/// sled stays behind this type: nothing else in fieldsync names it, so it can be
/// replaced without touching the rest (see `docs/architecture.md` for why).
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
}

/// How many times [`SledStore::open`] retries a lock held by a handle of this
/// process that is still closing (a known sled 0.34 race, see STACK-NOTES).
const LOCK_RETRIES: u32 = 40;

impl SledStore {
    /// Open (or create) the database in `dir` with sled's page cache bounded to
    /// `cache_bytes`.
    ///
    /// A lock held by another process fails with [`StoreError::Locked`] after a
    /// short retry (about 2 s), since sled releases its lock asynchronously when a
    /// handle of this same process has just been dropped.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput);
        let mut attempt = 0;
        loop {
            match config.open() {
                Ok(db) => return Ok(Self { db }),
                Err(sled::Error::Io(e)) if is_lock_error(&e) && attempt < LOCK_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                    return Err(StoreError::Locked {
                        path: dir.display().to_string(),
                        message: e.to_string(),
                    });
                }
                Err(e) => return Err(backend(e)),
            }
        }
    }
}

/// sled reports a held lock as an `io::Error` of kind `Other` wrapping the
/// `WouldBlock` error, so both forms are recognised.
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl Storage for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn for_each_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.db.scan_prefix(prefix) {
            let (k, v) = item.map_err(backend)?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db.insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.db.remove(key).map_err(backend)?;
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(backend)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }
}
