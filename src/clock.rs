//! Clock offsets between peers, and the corrections that make save times
//! comparable (no IO).
//!
//! Every sync measures the peer's clock (NTP-style, over the round trip of
//! the session's hello: `sync::ClockSample`). An authority writes what it
//! measured for a device into its acknowledgement record for that device, as
//! **clock entries**: "the device's changes stamped at or after device time
//! `from` were stamped by a clock `offset` ms ahead of mine". The entries
//! replicate with the record, so every peer corrects the device's save times
//! the same way: last writer wins compares corrected times, and times shown
//! to people are in the authority's clock. What cannot be corrected is in
//! `docs/conflicts.md` ("Clocks").

use crate::hlc::HlcTime;

/// A new clock entry is written when the measured offset moves by more
/// than this (milliseconds) from the last one: jitter of a measurement does
/// not grow the record.
pub(crate) const CLOCK_STEP_MS: i64 = 250;

/// Measurements whose round trip took longer than this (milliseconds) are
/// too uncertain to correct by (their error can be half the round trip).
pub(crate) const MAX_RTT_MS: u64 = 2_000;

/// A peer whose clock is further off than this (milliseconds) is reported
/// in `status` and the log.
pub(crate) const REPORT_OFFSET_MS: i64 = 1_000;

/// One clock entry: from this device time on (ms), this offset (ms, the
/// device's clock minus the authority's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockEntry {
    pub(crate) from: u64,
    pub(crate) offset: i64,
}

/// Parse the `clock` field of an acknowledgement record: `from:offset`
/// pairs, comma-separated, in increasing `from`. Malformed pairs are left out.
pub(crate) fn parse_entries(text: &str) -> Vec<ClockEntry> {
    let mut out: Vec<ClockEntry> = text
        .split(',')
        .filter_map(|pair| {
            let (from, offset) = pair.trim().split_once(':')?;
            Some(ClockEntry {
                from: from.parse().ok()?,
                offset: offset.parse().ok()?,
            })
        })
        .collect();
    out.sort_by_key(|e| e.from);
    out.dedup_by_key(|e| e.from);
    out
}

/// The `clock` field's text for `entries`.
pub(crate) fn format_entries(entries: &[ClockEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}:{}", e.from, e.offset))
        .collect::<Vec<_>>()
        .join(",")
}

/// The offset for a change stamped at device time `at`: the last entry
/// from at or before it; before the first entry, the first (the clock is
/// assumed to have been off the same way before it was first measured).
pub(crate) fn offset_at(entries: &[ClockEntry], at: u64) -> Option<i64> {
    entries
        .iter()
        .rev()
        .find(|e| e.from <= at)
        .or_else(|| entries.first())
        .map(|e| e.offset)
}

/// The entries after a new measurement `offset`, taken when the device's
/// clock read `now` and its previous measurement (if any) when it read
/// `previous`: a new entry from the previous measurement on (the changes
/// made since were stamped by the clock as it is now), if the offset moved
/// by more than [`CLOCK_STEP_MS`]. `None` if nothing changes.
pub(crate) fn with_measurement(
    entries: &[ClockEntry],
    offset: i64,
    previous: Option<u64>,
) -> Option<Vec<ClockEntry>> {
    let last = entries.last();
    if last.is_some_and(|l| (l.offset - offset).abs() <= CLOCK_STEP_MS) {
        return None;
    }
    let mut out = entries.to_vec();
    let from = match (last, previous) {
        (None, _) => 0,
        (Some(l), Some(p)) => p.max(l.from + 1),
        (Some(l), None) => l.from + 1,
    };
    out.push(ClockEntry { from, offset });
    Some(out)
}

/// A time stamped by a clock `offset` ms ahead, in the reference clock.
pub(crate) fn correct(t: HlcTime, offset: i64) -> HlcTime {
    let ms = i128::from(t.millis()) - i128::from(offset);
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    HlcTime::from_parts(ms, t.logical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_pick_the_offset_in_force() {
        let e = parse_entries("0:3600000, 5000:-20,garbage,7000:x");
        assert_eq!(
            e,
            vec![
                ClockEntry {
                    from: 0,
                    offset: 3_600_000
                },
                ClockEntry {
                    from: 5000,
                    offset: -20
                }
            ]
        );
        assert_eq!(parse_entries(&format_entries(&e)), e);
        assert_eq!(offset_at(&e, 10), Some(3_600_000));
        assert_eq!(offset_at(&e, 5000), Some(-20));
        assert_eq!(offset_at(&[], 5), None);
        let t = HlcTime::from_parts(1_000_000, 7);
        assert_eq!(correct(t, 400), HlcTime::from_parts(999_600, 7));
        assert_eq!(correct(t, -400), HlcTime::from_parts(1_000_400, 7));
    }

    #[test]
    fn a_measurement_adds_an_entry_only_when_the_offset_moved() {
        let first = with_measurement(&[], 3_600_000, None).unwrap();
        assert_eq!(
            first,
            vec![ClockEntry {
                from: 0,
                offset: 3_600_000
            }]
        );
        assert_eq!(
            with_measurement(&first, 3_600_100, Some(10)),
            None,
            "jitter"
        );
        let second = with_measurement(&first, 0, Some(9_000)).unwrap();
        assert_eq!(
            second[1],
            ClockEntry {
                from: 9_000,
                offset: 0
            }
        );
    }
}
