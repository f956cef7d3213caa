//! Change notifications.

use automerge::ChangeHash;
use tokio::sync::broadcast;

use crate::hlc::HlcTime;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// It was created.
    Insert,
    /// Its fields changed.
    Update,
    /// It was deleted (tombstoned).
    Delete,
    /// Automerge bytes were imported into it.
    Import,
    /// Changes from a peer were merged into it (sync); [`ChangeEvent::peer`]
    /// names the peer when the sync knows it.
    Remote,
    /// No change of its own: what it shows was computed again because
    /// something it depends on arrived or changed (an authority's verdict, a
    /// person's decision, its parent's standing, a clock correction, the
    /// group's membership).
    Reevaluated,
}

/// One durable change to one record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChangeEvent {
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The record's heads after the change.
    pub heads: Vec<ChangeHash>,
    /// The record's last-modified time after the change.
    pub modified: HlcTime,
    /// For [`ChangeKind::Remote`]: the member id of the peer the changes came
    /// from (the peer of the sync session, which may have relayed them), when
    /// known.
    pub peer: Option<String>,
}

/// Which changes a [`Watch`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchFilter {
    /// Every change.
    All,
    /// Changes to any record of one collection.
    Collection(String),
    /// Changes to one record.
    Record {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
}

impl WatchFilter {
    fn matches(&self, e: &ChangeEvent) -> bool {
        match self {
            WatchFilter::All => true,
            WatchFilter::Collection(c) => *c == e.collection,
            WatchFilter::Record { collection, id } => *collection == e.collection && *id == e.id,
        }
    }
}

/// Why a [`Watch`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The watcher fell behind and `0` events were dropped for it (the channel is
    /// bounded). Re-read the state you display, then keep receiving.
    #[error("watcher lagged: {0} change events were dropped")]
    Lagged(u64),
    /// Every handle of the replica was dropped; no more events will come.
    #[error("the replica is closed")]
    Closed,
    /// No event is waiting (only from [`Watch::try_recv`]).
    #[error("no event is waiting")]
    Empty,
}

/// A stream of [`ChangeEvent`]s matching a [`WatchFilter`], from
/// [`Replica::watch`](crate::Replica::watch). Events arrive after the change is
/// durable, in commit order.
#[derive(Debug)]
pub struct Watch {
    pub(crate) rx: broadcast::Receiver<ChangeEvent>,
    pub(crate) filter: WatchFilter,
}

impl Watch {
    /// Wait for the next matching event (async).
    pub async fn recv(&mut self) -> Result<ChangeEvent, WatchError> {
        loop {
            match self.rx.recv().await {
                Ok(e) if self.filter.matches(&e) => return Ok(e),
                Ok(_) => continue,
                Err(e) => return Err(map_recv(e)),
            }
        }
    }

    /// Block the thread until the next matching event (do not call from async code).
    pub fn blocking_recv(&mut self) -> Result<ChangeEvent, WatchError> {
        loop {
            match self.rx.blocking_recv() {
                Ok(e) if self.filter.matches(&e) => return Ok(e),
                Ok(_) => continue,
                Err(e) => return Err(map_recv(e)),
            }
        }
    }

    /// The next matching event if one is waiting.
    pub fn try_recv(&mut self) -> Result<ChangeEvent, WatchError> {
        loop {
            match self.rx.try_recv() {
                Ok(e) if self.filter.matches(&e) => return Ok(e),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Empty) => return Err(WatchError::Empty),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    return Err(WatchError::Lagged(n));
                }
                Err(broadcast::error::TryRecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }
}

fn map_recv(e: broadcast::error::RecvError) -> WatchError {
    match e {
        broadcast::error::RecvError::Lagged(n) => WatchError::Lagged(n),
        broadcast::error::RecvError::Closed => WatchError::Closed,
    }
}
