//! The causal context: what a client saw, handed back with its next write.
//!
//! ## Format
//!
//! Opaque to clients, who return it unchanged.
//!
//! ```text
//! version u8 = 1 | count varint (<= 65535) | count x ( actor u64 LE | counter varint >= 1 )
//! ```
//!
//! Actors are strictly ascending, so equal contexts encode equally.

use super::actor::{Actor, Dot};
use super::codec::{put_varint, reader};
use crate::error::Result;

/// A version vector: for each actor, the highest counter seen.
///
/// It stands for every dot at or below those counters; a write carrying it
/// supersedes exactly those dots. Entries are sorted by actor and have counters
/// of at least 1, so equal contexts are equal values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Context {
    entries: Vec<(Actor, u64)>,
}

impl Context {
    /// The format version byte.
    pub const FORMAT_VERSION: u8 = 1;
    /// The most entries a decoded context may have. Clocks are pruned to
    /// [`super::Limits::max_entries`] (at most this) on every write, so only
    /// a forged context comes near it.
    pub const MAX_ENTRIES: usize = 65_535;
    /// Bytes of the smallest entry: an 8-byte actor and a 1-byte counter.
    const MIN_ENTRY_BYTES: usize = 9;

    /// The empty context: a write that saw nothing and supersedes nothing.
    pub fn new() -> Context {
        Context::default()
    }

    /// The highest counter of `actor` seen (0: none).
    pub fn get(&self, actor: Actor) -> u64 {
        match self.entries.binary_search_by_key(&actor, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Whether `dot` is in this context's past.
    pub fn covers(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.actor)
    }

    /// Whether this context has seen everything `other` has.
    pub fn descends(&self, other: &Context) -> bool {
        other.entries.iter().all(|&(a, n)| self.get(a) >= n)
    }

    /// The `(actor, counter)` entries, sorted by actor.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (Actor, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the context saw nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Everything either context saw (the pointwise maximum): what a client
    /// that read two versions saw.
    pub fn join(&self, other: &Context) -> Context {
        let mut entries = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut i, mut j) = (0, 0);
        while i < self.entries.len() || j < other.entries.len() {
            match (self.entries.get(i), other.entries.get(j)) {
                (Some(&a), Some(&b)) if a.0 == b.0 => {
                    entries.push((a.0, a.1.max(b.1)));
                    i += 1;
                    j += 1;
                }
                (Some(&a), Some(&b)) if a.0 < b.0 => {
                    entries.push(a);
                    i += 1;
                }
                (Some(&a), None) => {
                    entries.push(a);
                    i += 1;
                }
                (_, Some(&b)) => {
                    entries.push(b);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Context { entries }
    }

    /// Builds a context from entries already sorted by actor, without zero
    /// counters (what a clock holds).
    pub(crate) fn from_sorted(entries: Vec<(Actor, u64)>) -> Context {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(entries.iter().all(|e| e.1 > 0));
        Context { entries }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::FORMAT_VERSION);
        put_varint(out, self.entries.len() as u64);
        for &(actor, counter) in &self.entries {
            out.extend_from_slice(&actor.0.to_le_bytes());
            put_varint(out, counter);
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.entries.len() * 12);
        self.encode(&mut out);
        out
    }

    /// Decodes a context from untrusted bytes (all of `buf`).
    pub fn decode(buf: &[u8]) -> Result<Context> {
        let mut r = reader(buf, "context");
        r.version(Self::FORMAT_VERSION)?;
        let n = r.count(Self::MIN_ENTRY_BYTES, Self::MAX_ENTRIES)?;
        let mut entries: Vec<(Actor, u64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let actor = Actor(r.u64()?);
            if entries.last().is_some_and(|&(prev, _)| prev >= actor) {
                return Err(r.error("actors not strictly ascending"));
            }
            let counter = r.varint()?;
            if counter == 0 {
                return Err(r.error("zero counter"));
            }
            entries.push((actor, counter));
        }
        r.finish()?;
        Ok(Context { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx(entries: &[(u64, u64)]) -> Context {
        Context::from_sorted(entries.iter().map(|&(a, n)| (Actor(a), n)).collect())
    }

    #[test]
    fn covers_and_descends() {
        let c = ctx(&[(1, 3), (5, 1)]);
        assert!(c.covers(Dot {
            actor: Actor(1),
            counter: 3
        }));
        assert!(!c.covers(Dot {
            actor: Actor(1),
            counter: 4
        }));
        assert!(!c.covers(Dot {
            actor: Actor(2),
            counter: 1
        }));
        assert!(c.descends(&ctx(&[(1, 2)])));
        assert!(!c.descends(&ctx(&[(1, 2), (2, 1)])));
        assert!(c.descends(&Context::new()));
    }

    #[test]
    fn join_is_the_pointwise_maximum() {
        let a = ctx(&[(1, 3), (5, 1)]);
        let b = ctx(&[(0, 9), (1, 2), (7, 4)]);
        assert_eq!(a.join(&b), ctx(&[(0, 9), (1, 3), (5, 1), (7, 4)]));
        assert_eq!(a.join(&b), b.join(&a));
    }

    #[test]
    fn rejects_non_canonical_bytes() {
        let good = ctx(&[(1, 3), (2, 1)]).to_bytes();
        assert_eq!(Context::decode(&good).unwrap(), ctx(&[(1, 3), (2, 1)]));
        // Unknown version, trailing byte, truncation.
        let mut bad = good.clone();
        bad[0] = 2;
        assert!(Context::decode(&bad).is_err());
        let mut bad = good.clone();
        bad.push(0);
        assert!(Context::decode(&bad).is_err());
        assert!(Context::decode(&good[..good.len() - 1]).is_err());
        // Actors out of order.
        let mut bad = vec![1, 2];
        bad.extend_from_slice(&2u64.to_le_bytes());
        bad.push(1);
        bad.extend_from_slice(&1u64.to_le_bytes());
        bad.push(1);
        assert!(Context::decode(&bad).is_err());
        // A count that promises more than the bytes hold is refused before allocating.
        assert!(Context::decode(&[1, 0xff, 0xff, 0x03]).is_err());
        // A zero counter, and a counter in a longer form than needed.
        let mut bad = vec![1, 1];
        bad.extend_from_slice(&1u64.to_le_bytes());
        assert!(Context::decode(&[bad.as_slice(), &[0]].concat()).is_err());
        assert!(Context::decode(&[bad.as_slice(), &[0x81, 0x00]].concat()).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(raw in proptest::collection::btree_map(any::<u64>(), 1u64.., 0..20)) {
            let c = Context::from_sorted(raw.into_iter().map(|(a, n)| (Actor(a), n)).collect());
            let bytes = c.to_bytes();
            prop_assert_eq!(Context::decode(&bytes).unwrap(), c);
        }

        /// Random bytes never panic, and whatever decodes is canonical.
        #[test]
        fn random_bytes_never_panic(versioned: bool, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Half the inputs start with the right version byte, to get past it.
            let bytes = if versioned { [&[Context::FORMAT_VERSION][..], &tail].concat() } else { tail };
            if let Ok(c) = Context::decode(&bytes) {
                prop_assert_eq!(c.to_bytes(), bytes);
            }
        }
    }
}
