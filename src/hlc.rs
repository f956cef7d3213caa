//! Hybrid logical clock: timestamps that follow wall time but never go backwards
//! and order causally related events, whatever the skew between devices.
//!
//! A time is 48 bits of milliseconds since the Unix epoch and a 16-bit logical
//! counter, packed into one `u64` so it orders as an integer. It is stored in the
//! `time` field of every automerge change fieldsync makes, so any peer can read the
//! writer's clock from the change itself (needed for last-writer-wins).
//!
//! The clock does no IO: wall time is a parameter.
//!
//! ```
//! use fieldsync::{Hlc, HlcTime};
//! let mut clock = Hlc::default();
//! let a = clock.tick(1_000);
//! let b = clock.tick(999); // the wall clock went back: the HLC does not
//! assert!(b > a);
//! clock.observe(HlcTime::from_parts(5_000, 3)); // a peer ahead of us
//! assert!(clock.tick(1_002) > HlcTime::from_parts(5_000, 3));
//! ```

use serde::{Deserialize, Serialize};

/// One hybrid-logical-clock reading (ordered; see the module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct HlcTime(u64);

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
const MAX_MILLIS: u64 = (1 << 48) - 1;

impl HlcTime {
    /// Build a time from milliseconds and a logical counter.
    pub fn from_parts(millis: u64, logical: u16) -> Self {
        Self((millis.min(MAX_MILLIS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// The packed representation.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// From the packed representation.
    pub fn from_u64(v: u64) -> Self {
        Self(v)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The value stored in an automerge change's `time` field.
    pub(crate) fn to_change_time(self) -> i64 {
        // 64 bits of HLC do not fit a positive i64 only past year 10889; saturate.
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Read an automerge change's `time` field (negative values read as zero).
    pub(crate) fn from_change_time(t: i64) -> Self {
        Self(u64::try_from(t).unwrap_or(0))
    }
}

impl std::fmt::Display for HlcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:05}", self.millis(), self.logical())
    }
}

/// A hybrid logical clock: issues strictly increasing [`HlcTime`]s.
#[derive(Debug, Clone, Default)]
pub struct Hlc {
    last: HlcTime,
}

impl Hlc {
    /// A clock that will never issue a time at or before `last`.
    pub fn starting_after(last: HlcTime) -> Self {
        Self { last }
    }

    /// The last time issued or observed.
    pub fn last(&self) -> HlcTime {
        self.last
    }

    /// A new time for a local event, given the wall clock in milliseconds.
    pub fn tick(&mut self, wall_millis: u64) -> HlcTime {
        let wall = HlcTime::from_parts(wall_millis, 0);
        self.last = if wall > self.last {
            wall
        } else {
            // Same or earlier wall time: advance the logical part (it carries into
            // the milliseconds on overflow, which keeps the order).
            HlcTime(self.last.0.saturating_add(1))
        };
        self.last
    }

    /// Take a remote time into account so later local times order after it.
    ///
    /// Times more than `max_drift_millis` ahead of the local wall clock are ignored
    /// (a peer with a broken clock must not drag everyone into the future); returns
    /// whether the time was accepted.
    pub fn observe_bounded(
        &mut self,
        remote: HlcTime,
        wall_millis: u64,
        max_drift_millis: u64,
    ) -> bool {
        if remote.millis() > wall_millis.saturating_add(max_drift_millis) {
            return false;
        }
        self.observe(remote);
        true
    }

    /// Take a remote time into account so later local times order after it.
    pub fn observe(&mut self, remote: HlcTime) {
        if remote > self.last {
            self.last = remote;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ticks_strictly_increase_whatever_the_wall_clock_does(walls in proptest::collection::vec(0u64..10_000, 1..200)) {
            let mut c = Hlc::default();
            let mut prev = HlcTime::default();
            for w in walls {
                let t = c.tick(w);
                prop_assert!(t > prev);
                prop_assert!(t.millis() >= w);
                prev = t;
            }
        }
    }

    #[test]
    fn logical_overflow_carries_into_millis() {
        let mut c = Hlc::starting_after(HlcTime::from_parts(10, u16::MAX));
        let t = c.tick(5);
        assert_eq!((t.millis(), t.logical()), (11, 0));
    }

    #[test]
    fn a_far_future_remote_time_is_ignored() {
        let mut c = Hlc::default();
        assert!(!c.observe_bounded(HlcTime::from_parts(1_000_000, 0), 1_000, 60_000));
        assert!(c.tick(1_001).millis() < 2_000);
    }

    #[test]
    fn change_time_round_trip() {
        let t = HlcTime::from_parts(1_790_000_000_000, 42);
        assert_eq!(HlcTime::from_change_time(t.to_change_time()), t);
        assert_eq!(HlcTime::from_change_time(-5), HlcTime::default());
    }
}
