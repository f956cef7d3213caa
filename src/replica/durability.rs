//! Group commit: writers that finish applying at about the same time share one
//! flush (fsync) instead of paying one each.
//!
//! Each write takes a ticket after it is applied to the store. To become durable
//! it waits for the flush lock; whoever holds it flushes everything applied so far
//! and records that ticket as flushed, so writers queued behind it find their
//! ticket already covered and return without flushing again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{Storage, StoreError};

#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    applied: AtomicU64,
    flushed: Mutex<u64>,
}

impl GroupCommit {
    /// Record one more applied write; returns its ticket.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Return once the write with `ticket` is durable.
    pub(crate) fn wait(&self, storage: &dyn Storage, ticket: u64) -> Result<(), StoreError> {
        let mut flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        if *flushed >= ticket {
            return Ok(());
        }
        let target = self.applied.load(Ordering::SeqCst);
        storage.flush()?;
        *flushed = target;
        Ok(())
    }

    /// Flush everything applied so far.
    pub(crate) fn flush_all(&self, storage: &dyn Storage) -> Result<(), StoreError> {
        let ticket = self.applied.load(Ordering::SeqCst);
        self.wait(storage, ticket.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// A store that counts flushes and makes each one slow, so writers pile up.
    #[derive(Default)]
    struct CountingStore {
        flushes: AtomicUsize,
    }

    impl Storage for CountingStore {
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn for_each_prefix(
            &self,
            _: &[u8],
            _: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        fn put(&self, _: &[u8], _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
        fn delete(&self, _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
        fn apply(&self, _: Batch) -> Result<(), StoreError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        }
        fn size_on_disk(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    #[test]
    fn concurrent_writers_share_flushes() {
        let store = Arc::new(CountingStore::default());
        let gc = Arc::new(GroupCommit::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, gc) = (store.clone(), gc.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let t = gc.applied();
                        gc.wait(&*store, t).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let flushes = store.flushes.load(Ordering::SeqCst);
        // 80 durable writes; with 8 writers queued behind each slow flush, far fewer flushes.
        assert!(flushes < 80, "{flushes} flushes for 80 writes");
        assert!(
            flushes >= 10,
            "each writer's last write still needed a flush: {flushes}"
        );
    }

    #[test]
    fn a_ticket_already_flushed_does_not_flush_again() {
        let store = CountingStore::default();
        let gc = GroupCommit::default();
        let a = gc.applied();
        let b = gc.applied();
        gc.wait(&store, b).unwrap();
        gc.wait(&store, a).unwrap();
        assert_eq!(store.flushes.load(Ordering::SeqCst), 1);
    }
}
