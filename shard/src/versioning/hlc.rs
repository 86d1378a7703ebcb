//! Hybrid logical clocks (Kulkarni et al., 2014): timestamps that follow the
//! wall clock, never go backwards, and order every event after the events it
//! heard of.
//!
//! ## Format
//!
//! A [`Timestamp`] is one `u64`: the high 48 bits are milliseconds since the
//! Unix epoch (enough until the year 10889), the low 16 bits a logical counter
//! that orders events within one millisecond. Comparing the `u64`s compares
//! (physical, logical) pairs, and "the next timestamp" is `+ 1`: a logical
//! counter at 65535 carries into the millisecond, so a burst of more than 65536
//! events in one millisecond runs the clock slightly ahead of the wall clock
//! instead of failing.
//!
//! The clock is pure: the caller passes the physical time in, so the server
//! passes the system clock and the simulator a virtual one.

use std::fmt;

use crate::error::{Error, Result};

/// Bits of a [`Timestamp`] that hold the logical counter.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock timestamp: 48-bit milliseconds, 16-bit counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The earliest timestamp (the epoch, counter 0).
    pub const ZERO: Timestamp = Timestamp(0);
    /// The latest timestamp; the clock stops here rather than wrapping.
    pub const MAX: Timestamp = Timestamp(u64::MAX);
    /// The largest physical time a timestamp holds (ms since the Unix epoch).
    pub const MAX_PHYSICAL_MS: u64 = u64::MAX >> LOGICAL_BITS;
    /// The largest logical counter.
    pub const MAX_LOGICAL: u16 = u16::MAX;

    /// The timestamp (`physical_ms`, `logical`); a physical time past
    /// [`Timestamp::MAX_PHYSICAL_MS`] (year 10889) is clamped to it.
    pub fn new(physical_ms: u64, logical: u16) -> Timestamp {
        let physical = physical_ms.min(Self::MAX_PHYSICAL_MS);
        Timestamp(physical << LOGICAL_BITS | u64::from(logical))
    }

    /// The timestamp whose `u64` form is `bits` (every `u64` is one).
    pub const fn from_u64(bits: u64) -> Timestamp {
        Timestamp(bits)
    }

    /// The `u64` form: what is stored and sent.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter within the millisecond.
    pub const fn logical(self) -> u16 {
        // The mask keeps 16 bits, so the cast is lossless.
        (self.0 & 0xffff) as u16
    }

    /// The next timestamp: the counter plus one, carrying into the millisecond
    /// when it overflows; [`Timestamp::MAX`] stays put.
    pub const fn successor(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// A hybrid logical clock.
///
/// Every timestamp it hands out is greater than every one it handed out or
/// observed before (up to [`Timestamp::MAX`], which it would reach in the year
/// 10889). One clock per core: a key's versions are made on the core that owns
/// it, so per-core clocks order each key's writes without sharing.
#[derive(Debug, Clone)]
pub struct Hlc {
    last: Timestamp,
    max_drift_ms: u64,
}

impl Default for Hlc {
    fn default() -> Self {
        Hlc::new(Hlc::DEFAULT_MAX_DRIFT_MS)
    }
}

impl Hlc {
    /// How far ahead of our physical clock a remote timestamp may be.
    ///
    /// NTP keeps healthy clocks within a few milliseconds; 500 ms tolerates a
    /// poorly synced node while still refusing one whose clock is wrong by
    /// seconds, which would otherwise drag every clock it talks to forward
    /// and win every last-write-wins race until real time caught up.
    pub const DEFAULT_MAX_DRIFT_MS: u64 = 500;

    /// A clock that has seen nothing yet and accepts remote timestamps up to
    /// `max_drift_ms` ahead of the local physical time.
    pub fn new(max_drift_ms: u64) -> Hlc {
        Hlc {
            last: Timestamp::ZERO,
            max_drift_ms,
        }
    }

    /// The latest timestamp handed out or observed. A node persists it (or
    /// waits for its physical clock to pass it) to stay monotonic over restarts.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// The configured maximum drift in milliseconds.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// A timestamp for a local event at physical time `physical_ms`.
    ///
    /// The physical time may go backwards (NTP steps the clock): the clock
    /// then keeps its millisecond and counts logically.
    pub fn now(&mut self, physical_ms: u64) -> Timestamp {
        let wall = Timestamp::new(physical_ms, 0);
        self.last = if wall > self.last { wall } else { self.last.successor() };
        self.last
    }

    /// Takes in `remote` (a timestamp in a message received at physical time
    /// `physical_ms`) and returns a timestamp greater than both it and every
    /// earlier one.
    ///
    /// Fails with [`Error::ClockDrift`] and leaves the clock as it was when the
    /// remote clock is more than the maximum drift ahead: accepting it would
    /// carry the remote node's error into ours.
    pub fn observe(&mut self, remote: Timestamp, physical_ms: u64) -> Result<Timestamp> {
        let local_ms = physical_ms.min(Timestamp::MAX_PHYSICAL_MS);
        if remote.physical_ms() > local_ms.saturating_add(self.max_drift_ms) {
            return Err(Error::ClockDrift {
                remote_ms: remote.physical_ms(),
                local_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let seen = self.last.max(remote);
        let wall = Timestamp::new(local_ms, 0);
        self.last = if wall > seen { wall } else { seen.successor() };
        debug_assert!(self.last > remote || self.last == Timestamp::MAX);
        Ok(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        let t = Timestamp::new(1_700_000_000_000, 7);
        assert_eq!(t.physical_ms(), 1_700_000_000_000);
        assert_eq!(t.logical(), 7);
        assert_eq!(Timestamp::from_u64(t.as_u64()), t);
        assert!(Timestamp::new(5, 0) > Timestamp::new(4, u16::MAX));
        assert_eq!(Timestamp::new(u64::MAX, 0).physical_ms(), Timestamp::MAX_PHYSICAL_MS);
        assert_eq!(t.to_string(), "1700000000000.7");
    }

    #[test]
    fn follows_the_wall_clock_and_counts_within_a_millisecond() {
        let mut c = Hlc::default();
        assert_eq!(c.now(100), Timestamp::new(100, 0));
        assert_eq!(c.now(100), Timestamp::new(100, 1));
        assert_eq!(c.now(101), Timestamp::new(101, 0));
        // The wall clock stepped back: keep the millisecond, count on.
        assert_eq!(c.now(50), Timestamp::new(101, 1));
    }

    #[test]
    fn logical_overflow_carries_into_the_millisecond() {
        let mut c = Hlc::default();
        c.observe(Timestamp::new(10, u16::MAX - 1), 10).unwrap();
        assert_eq!(c.last(), Timestamp::new(10, u16::MAX));
        assert_eq!(c.now(10), Timestamp::new(11, 0));
        assert_eq!(c.now(10), Timestamp::new(11, 1));
    }

    #[test]
    fn saturates_at_the_end_of_time() {
        let mut c = Hlc::new(u64::MAX);
        assert_eq!(c.observe(Timestamp::MAX, 0).unwrap(), Timestamp::MAX);
        assert_eq!(c.now(u64::MAX), Timestamp::MAX);
    }

    #[test]
    fn observe_orders_after_the_remote_event() {
        let mut c = Hlc::default();
        c.now(1_000);
        let t = c.observe(Timestamp::new(1_200, 3), 1_000).unwrap();
        assert_eq!(t, Timestamp::new(1_200, 4));
        // A remote timestamp in our past changes nothing but the counter.
        let t = c.observe(Timestamp::new(900, 0), 1_000).unwrap();
        assert_eq!(t, Timestamp::new(1_200, 5));
        // The wall clock overtakes it.
        assert_eq!(c.now(1_300), Timestamp::new(1_300, 0));
    }

    #[test]
    fn rejects_a_remote_clock_too_far_ahead() {
        let mut c = Hlc::new(500);
        let before = c.now(1_000);
        assert!(c.observe(Timestamp::new(1_500, u16::MAX), 1_000).is_ok());
        let err = c.observe(Timestamp::new(1_501, 0), 1_000).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ClockDrift {
                    remote_ms: 1_501,
                    local_ms: 1_000,
                    max_drift_ms: 500
                }
            ),
            "{err}"
        );
        // A refused timestamp leaves the clock alone.
        assert_eq!(c.last(), Timestamp::new(1_500, u16::MAX).successor());
        assert!(c.last() > before);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Local(u64),
        Remote(u64, u16, u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u64..10_000).prop_map(Event::Local),
            (0u64..10_000, any::<u16>(), 0u64..10_000).prop_map(|(r, l, p)| Event::Remote(r, l, p)),
        ]
    }

    proptest! {
        /// Strictly increasing whatever the physical clock does (including going
        /// backwards), after every accepted remote timestamp, and never behind
        /// the physical clock.
        #[test]
        fn monotonic_under_any_physical_time(events in proptest::collection::vec(event(), 1..200), drift in 0u64..2_000) {
            let mut c = Hlc::new(drift);
            let mut prev = Timestamp::ZERO;
            for e in events {
                match e {
                    Event::Local(p) => {
                        let t = c.now(p);
                        prop_assert!(t > prev);
                        prop_assert!(t.physical_ms() >= p);
                        prev = t;
                    }
                    Event::Remote(r, l, p) => {
                        let remote = Timestamp::new(r, l);
                        match c.observe(remote, p) {
                            Ok(t) => {
                                prop_assert!(t > prev && t > remote);
                                prop_assert!(t.physical_ms() >= p);
                                prev = t;
                            }
                            Err(_) => {
                                prop_assert!(r > p + drift);
                                prop_assert_eq!(c.last(), prev);
                            }
                        }
                    }
                }
            }
        }
    }
}
