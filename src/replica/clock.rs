//! Clock offsets: what each sync measured of its peer's clock (kept locally,
//! shown in `status`), the corrections an authority writes for its devices
//! (replicated in its acknowledgement records), and corrected times. The
//! rules are in `crate::clock` and `docs/conflicts.md` ("Clocks").

use automerge::ActorId;

use super::{Inner, Replica};
use crate::clock::{self, ClockEntry};
use crate::error::Result;
use crate::hlc::HlcTime;
use crate::schema::ACKS;
use crate::store::keys;
use crate::sync::ClockSample;
use crate::value::Value;

/// What the last sync with a peer measured of its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerClock {
    /// The peer's clock minus this replica's, in milliseconds.
    pub offset_ms: i64,
    /// The round trip of the measurement, in milliseconds.
    pub rtt_ms: u64,
    /// When it was measured (this replica's clock, ms since the epoch).
    pub measured_at: u64,
    /// The peer's clock at that moment (ms since the epoch).
    pub peer_clock: u64,
}

fn encode(c: &PeerClock) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(&c.offset_ms.to_be_bytes());
    v.extend_from_slice(&c.rtt_ms.to_be_bytes());
    v.extend_from_slice(&c.measured_at.to_be_bytes());
    v.extend_from_slice(&c.peer_clock.to_be_bytes());
    v
}

fn decode(b: &[u8]) -> Option<PeerClock> {
    let word = |i: usize| -> Option<[u8; 8]> { b.get(i * 8..i * 8 + 8)?.try_into().ok() };
    Some(PeerClock {
        offset_ms: i64::from_be_bytes(word(0)?),
        rtt_ms: u64::from_be_bytes(word(1)?),
        measured_at: u64::from_be_bytes(word(2)?),
        peer_clock: u64::from_be_bytes(word(3)?),
    })
}

impl Inner {
    /// This replica's clock as a change stamped now would carry it.
    pub(crate) fn clock_now(&self) -> u64 {
        let wall = (self.config.clock)();
        wall.max(self.state().hlc.last().millis())
    }

    /// The clock entries an authority wrote for `actor` (the first authority,
    /// in actor order, that wrote any), read through `row`.
    pub(crate) fn clock_entries_with(
        &self,
        actor: &ActorId,
        row: &mut dyn FnMut(&str) -> Result<Option<crate::value::Fields>>,
    ) -> Result<Vec<ClockEntry>> {
        let mut authorities: Vec<ActorId> = self.authorities().iter().cloned().collect();
        authorities.sort();
        for a in authorities {
            if a == *actor {
                // An authority's own clock is the reference.
                return Ok(Vec::new());
            }
            let id = super::tx::ack::ack_id(&a, actor);
            if let Some(f) = row(&id)? {
                let e = clock::parse_entries(f.get("clock").and_then(Value::as_str).unwrap_or(""));
                if !e.is_empty() {
                    return Ok(e);
                }
            }
        }
        Ok(Vec::new())
    }
}

impl Replica {
    /// Record what a sync measured of `peer`'s clock (its key): kept locally,
    /// logged when it is more than a second off, and, on an authority, written
    /// for a device into its acknowledgement record when the offset moved, so
    /// every peer corrects that device's save times the same way.
    pub(crate) fn note_clock(&self, peer: &[u8], sample: ClockSample) -> Result<()> {
        let key = keys::peer_clock(peer);
        let previous = self.inner.storage.get(&key)?.and_then(|b| decode(&b));
        let now = PeerClock {
            offset_ms: sample.offset_ms,
            rtt_ms: sample.rtt_ms,
            measured_at: (self.inner.config.clock)(),
            peer_clock: sample.peer_clock,
        };
        self.inner.storage.put(&key, &encode(&now))?;
        let member = crate::member::member_id(peer).unwrap_or_else(|| crate::sign::hex(peer));
        if sample.offset_ms.abs() > clock::REPORT_OFFSET_MS {
            tracing::warn!(peer = %member, offset_ms = sample.offset_ms, rtt_ms = sample.rtt_ms, "the peer's clock is more than a second off this one");
        }
        let me = self.inner.actor.clone();
        let peer_actor = ActorId::from(peer);
        if sample.rtt_ms > clock::MAX_RTT_MS
            || !self.inner.is_authority(&me)
            || self.inner.is_authority(&peer_actor)
        {
            return Ok(());
        }
        let previous = previous.map(|p| p.peer_clock);
        self.transaction(|tx| tx.note_device_clock(&peer_actor, sample.offset_ms, previous))
    }

    /// What the last sync with each peer measured of its clock, by member id.
    pub fn peer_clocks(&self) -> Result<Vec<(String, PeerClock)>> {
        let mut out = Vec::new();
        self.inner
            .storage
            .for_each_prefix(keys::PEER_CLOCKS, &mut |k, v| {
                let peer = &k[keys::PEER_CLOCKS.len()..];
                if let Some(c) = decode(v) {
                    let member =
                        crate::member::member_id(peer).unwrap_or_else(|| crate::sign::hex(peer));
                    out.push((member, c));
                }
                true
            })?;
        Ok(out)
    }

    /// The authority's clock minus this replica's, as last measured in a sync
    /// with an authority (0 on an authority; `None` if never measured).
    pub fn authority_offset(&self) -> Result<Option<i64>> {
        if self.inner.is_authority(&self.inner.actor) {
            return Ok(Some(0));
        }
        let authorities = self.inner.authorities();
        let mut best: Option<PeerClock> = None;
        self.inner
            .storage
            .for_each_prefix(keys::PEER_CLOCKS, &mut |k, v| {
                let peer = ActorId::from(&k[keys::PEER_CLOCKS.len()..]);
                if authorities.contains(&peer)
                    && let Some(c) = decode(v)
                    && best.is_none_or(|b| c.measured_at > b.measured_at)
                {
                    best = Some(c);
                }
                true
            })?;
        Ok(best.map(|b| b.offset_ms))
    }

    /// A change time in the authority's clock: `t`, stamped by `author`,
    /// corrected by the offset an authority measured for it (as every peer
    /// corrects it for last writer wins); `t` itself when none is known.
    pub fn corrected_time(&self, author: &ActorId, t: HlcTime) -> Result<HlcTime> {
        let entries = self.inner.clock_entries_with(author, &mut |id| {
            Ok(self.inner.read_row(ACKS, id)?.map(|r| r.fields))
        })?;
        Ok(match clock::offset_at(&entries, t.millis()) {
            Some(o) => clock::correct(t, o),
            None => t,
        })
    }
}

impl super::Tx<'_> {
    /// On an authority: write a device's measured clock offset into its
    /// acknowledgement record when it moved (see [`clock::with_measurement`]).
    pub(crate) fn note_device_clock(
        &mut self,
        device: &ActorId,
        offset: i64,
        previous: Option<u64>,
    ) -> Result<()> {
        let me = self.inner.actor.clone();
        let id = super::tx::ack::ack_id(&me, device);
        let existing = self.row_of(ACKS, &id)?.map(|r| r.fields);
        let entries = existing
            .as_ref()
            .and_then(|f| f.get("clock"))
            .and_then(Value::as_str)
            .map(clock::parse_entries)
            .unwrap_or_default();
        let Some(new) = clock::with_measurement(&entries, offset, previous) else {
            return Ok(());
        };
        let clock_text = Value::from(clock::format_entries(&new));
        self.system = true;
        let written = if existing.is_some() {
            self.update(ACKS, &id, crate::value::fields([("clock", clock_text)]))
        } else {
            self.insert(
                ACKS,
                &id,
                crate::value::fields([
                    ("authority", Value::from(me.to_hex_string())),
                    ("origin", Value::from(device.to_hex_string())),
                    ("clock", clock_text),
                ]),
            )
        };
        self.system = false;
        written.map(|_| ())
    }
}
