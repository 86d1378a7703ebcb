//! Dotted version vector sets (Almeida, Gonçalves et al.; Riak's `dvvset`).
//!
//! A state is a clock (per actor, the highest counter seen) and the live
//! siblings, each named by its dot. The clock stands for every dot at or
//! below it: a dot in the clock but not among the siblings was superseded.
//! That one rule gives both operations:
//!
//! - [`Dvv::update`] (the coordinator's put): drop the siblings the client's
//!   context covers, then add the new value under a fresh dot of the
//!   coordinator. Siblings the context did not cover survive beside it.
//! - [`Dvv::sync`] (merging two replicas): a sibling survives if the other side
//!   holds it too or has not seen its dot. This is the join of a lattice, so it
//!   is commutative, associative and idempotent: replicas converge whatever
//!   order repairs run in.
//!
//! Unlike Riak's dvvset, which names a sibling by its position below the
//! counter, each sibling stores its dot (as a small delta): dots need not be
//! consecutive, which lets counters jump to the coordinator's HLC time (see
//! [`Dvv::update`]).
//!
//! ## Format (inside a [`super::Record`])
//!
//! ```text
//! count varint (<= 65535)
//! count x ( actor u64 LE | counter varint >= 1 | n varint (<= counter)
//!           | n x ( delta varint | value ) )
//! ```
//!
//! Entries are sorted by actor, strictly; siblings by dot, newest first. The
//! first sibling's dot is `counter - delta`, each next one `previous - 1 -
//! delta`, and every dot is at least 1. Values are laid out as in
//! [`super::Value`].

use super::actor::{Actor, Dot};
use super::codec::{put_varint, Reader};
use super::context::Context;
use super::hlc::Timestamp;
use super::value::{self, Value};
use crate::error::{Error, Result};

/// Bounds on one key's versions, and what happens at them.
///
/// - Siblings: a put that would leave more than `max_siblings` siblings is
///   refused with [`Error::TooManySiblings`] and changes nothing; the client
///   resolves by reading the siblings and writing back with their context.
///   Merging replicas never refuses and never drops a sibling (both sides
///   hold acknowledged writes), so a merged state may briefly hold more.
/// - Clock entries: after a put, entries beyond `max_entries` are pruned,
///   oldest counter first, and only entries holding no sibling. Forgetting an
///   entry can only make a later merge or put treat a superseded version as
///   concurrent (an extra sibling), never drop one. Since an accepted put
///   leaves at most `max_siblings` entries that hold siblings, and
///   `max_entries >= max_siblings`, the bound is always reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_siblings: usize,
    max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_siblings: Self::DEFAULT_MAX_SIBLINGS,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }
}

impl Limits {
    /// Default bound on siblings: far above what healthy clients make (a
    /// handful per replica during a partition), low enough that a client that
    /// never resolves is stopped before reads of the key grow unbounded.
    pub const DEFAULT_MAX_SIBLINGS: usize = 64;
    /// Default bound on clock entries: one per node that ever coordinated a
    /// write of the key, per data epoch; 64 outlasts many replacements of a
    /// 3-replica set before pruning starts.
    pub const DEFAULT_MAX_ENTRIES: usize = 64;

    /// Limits of `max_siblings` siblings and `max_entries` clock entries.
    ///
    /// Requires `1 <= max_siblings <= max_entries <= Context::MAX_ENTRIES`
    /// (see the type's documentation for why).
    pub fn new(max_siblings: usize, max_entries: usize) -> Result<Limits> {
        let reason = if max_siblings == 0 {
            Some("max_siblings must be at least 1")
        } else if max_entries < max_siblings {
            Some("max_entries must be at least max_siblings, or pruning could not reach it")
        } else if max_entries > Context::MAX_ENTRIES {
            Some("max_entries must be at most 65535")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidVersionLimits {
                max_siblings,
                max_entries,
                reason,
            }),
            None => Ok(Limits {
                max_siblings,
                max_entries,
            }),
        }
    }

    /// The most siblings a put may leave.
    pub fn max_siblings(&self) -> usize {
        self.max_siblings
    }

    /// The most clock entries a put leaves.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }
}

/// One actor's part of the state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Entry {
    actor: Actor,
    /// The highest counter of `actor` seen; at least 1.
    counter: u64,
    /// The live siblings `actor` wrote: (dot counter, value), strictly
    /// descending, each in `1..=counter`.
    siblings: Vec<(u64, Value)>,
}

impl Entry {
    /// Bytes of the smallest encoded entry: actor, 1-byte counter, 1-byte count.
    const MIN_ENCODED_BYTES: usize = 10;

    /// The merge of two replicas' entries for the same actor.
    fn sync(a: &Entry, b: &Entry) -> Entry {
        debug_assert_eq!(a.actor, b.actor);
        let mut siblings = Vec::with_capacity(a.siblings.len().max(b.siblings.len()));
        let (mut i, mut j) = (0, 0);
        // Both lists are sorted newest first, so one walk finds the dots both
        // sides hold (they survive) and those only one side holds (they survive
        // if the other side has not seen them).
        loop {
            let from_a = match (a.siblings.get(i), b.siblings.get(j)) {
                (None, None) => break,
                (Some((da, va)), Some((db, vb))) if da == db => {
                    // A dot names one write, so the values are equal; picking the
                    // smaller keeps sync commutative even if that were violated.
                    debug_assert_eq!(va, vb, "dot {da} of {} names two values", a.actor);
                    siblings.push((*da, va.min(vb).clone()));
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some((da, _)), Some((db, _))) => da > db,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            // A dot only one side holds survives if the other side has not seen it.
            let (list, k, other_counter) = if from_a {
                (&a.siblings, &mut i, b.counter)
            } else {
                (&b.siblings, &mut j, a.counter)
            };
            if let Some((dot, v)) = list.get(*k) {
                if *dot > other_counter {
                    siblings.push((*dot, v.clone()));
                }
            }
            *k += 1;
        }
        Entry {
            actor: a.actor,
            counter: a.counter.max(b.counter),
            siblings,
        }
    }
}

/// A dotted version vector set: one key's versions in a causal keyspace.
///
/// Equal states are equal values (entries sorted, no empty counters), which is
/// what makes the encoding canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Dvv {
    /// Sorted by actor, strictly.
    entries: Vec<Entry>,
}

impl Dvv {
    /// The state of a key never written.
    pub fn new() -> Dvv {
        Dvv::default()
    }

    /// The siblings with their dots: concurrent writes none of which saw the
    /// others. Ordered by actor, then newest first.
    pub fn siblings(&self) -> impl Iterator<Item = (Dot, &Value)> + '_ {
        self.entries.iter().flat_map(|e| {
            e.siblings.iter().map(move |(counter, v)| {
                (
                    Dot {
                        actor: e.actor,
                        counter: *counter,
                    },
                    v,
                )
            })
        })
    }

    /// The siblings' values (puts and tombstones), in [`Dvv::siblings`] order.
    pub fn values(&self) -> impl Iterator<Item = &Value> + '_ {
        self.siblings().map(|(_, v)| v)
    }

    /// Number of siblings.
    pub fn sibling_count(&self) -> usize {
        self.entries.iter().map(|e| e.siblings.len()).sum()
    }

    /// Number of clock entries (actors remembered).
    pub fn clock_len(&self) -> usize {
        self.entries.len()
    }

    /// Whether this is the state of a key never written (no clock, no siblings).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether no sibling is a put: every sibling is a tombstone, or there is
    /// none. A read of such a key finds nothing, but the state still carries
    /// the causality the deletes need until tombstones are purged.
    pub fn is_deleted(&self) -> bool {
        self.values().all(Value::is_tombstone)
    }

    /// The time after which no put of this state is live (the latest expiry);
    /// `None` when some put never expires or there is no put.
    pub fn expires_at_ms(&self) -> Option<u64> {
        let mut latest = None;
        for v in self.values() {
            if let Value::Put { expires_at_ms, .. } = v {
                let t = (*expires_at_ms)?;
                latest = latest.max(Some(t));
            }
        }
        latest
    }

    /// The causal context a read returns: everything this state has seen.
    pub fn context(&self) -> Context {
        Context::from_sorted(self.entries.iter().map(|e| (e.actor, e.counter)).collect())
    }

    /// The coordinator's put: `value`, written by `actor` at HLC time `now`,
    /// supersedes exactly the versions `ctx` covers; siblings it did not cover
    /// stay beside it. Deletes are puts of [`Value::Tombstone`].
    ///
    /// The new dot's counter is one past the highest counter of `actor` known
    /// here or in `ctx`, raised to `now.as_u64()` if that is larger. Tying
    /// counters to the coordinator's HLC keeps them unique for the actor over
    /// the key's whole life: even after its clock entry was pruned or the key's
    /// state purged (tombstone removal), the actor's next dot is newer than
    /// any it issued before, so a stale copy holding an old dot can neither
    /// hide the new write nor be mistaken for it. It also makes counters
    /// comparable across actors, which is how pruning finds the oldest entry.
    ///
    /// The caller must run this on a state holding every dot `actor` issued for
    /// the key (the actor's own replica, updates of one key serialized), which
    /// is what [`Actor::derive`]'s data epoch protects.
    ///
    /// Fails, changing nothing, with [`Error::TooManySiblings`] when the result
    /// would hold more than [`Limits::max_siblings`] siblings, and with
    /// [`Error::CounterOverflow`] when the counter would pass `u64::MAX` (only a
    /// forged context gets there). Clock entries are pruned to the limit.
    pub fn update(&self, ctx: &Context, actor: Actor, now: Timestamp, value: Value, limits: &Limits) -> Result<Dvv> {
        // The context as a state that holds nothing: syncing with it drops the
        // siblings it covers and raises the clock to what the client saw.
        let seen = Dvv {
            entries: ctx
                .entries()
                .map(|(actor, counter)| Entry {
                    actor,
                    counter,
                    siblings: Vec::new(),
                })
                .collect(),
        };
        let mut next = Dvv::sync(self, &seen);
        let pos = next.entries.binary_search_by_key(&actor, |e| e.actor);
        let prev = pos.map_or(0, |i| next.entries[i].counter);
        let counter = prev
            .checked_add(1)
            .ok_or(Error::CounterOverflow { actor })?
            .max(now.as_u64());
        let i = match pos {
            Ok(i) => i,
            Err(i) => {
                next.entries.insert(
                    i,
                    Entry {
                        actor,
                        counter,
                        siblings: Vec::new(),
                    },
                );
                i
            }
        };
        let entry = &mut next.entries[i];
        debug_assert!(entry.siblings.first().is_none_or(|s| s.0 < counter));
        entry.counter = counter;
        entry.siblings.insert(0, (counter, value));
        let siblings = next.sibling_count();
        if siblings > limits.max_siblings {
            return Err(Error::TooManySiblings {
                siblings,
                max: limits.max_siblings,
            });
        }
        next.prune(limits);
        next.debug_check();
        debug_assert!(next.clock_len() <= limits.max_entries);
        Ok(next)
    }

    /// The merge of two replicas' states: every sibling one side holds that
    /// the other side holds too or has not seen. Commutative, associative and
    /// idempotent; never drops a version neither side superseded, never
    /// refuses (it may exceed [`Limits::max_siblings`]; see [`Limits`]).
    pub fn sync(a: &Dvv, b: &Dvv) -> Dvv {
        let mut entries = Vec::with_capacity(a.entries.len().max(b.entries.len()));
        let (mut i, mut j) = (0, 0);
        loop {
            let from_a = match (a.entries.get(i), b.entries.get(j)) {
                (None, None) => break,
                (Some(x), Some(y)) if x.actor == y.actor => {
                    entries.push(Entry::sync(x, y));
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some(x), Some(y)) => x.actor < y.actor,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            // An actor only one side knows: its entry as it is.
            let (list, k) = if from_a {
                (&a.entries, &mut i)
            } else {
                (&b.entries, &mut j)
            };
            entries.extend(list.get(*k).cloned());
            *k += 1;
        }
        let out = Dvv { entries };
        out.debug_check();
        out
    }

    /// Forgets the oldest clock entries (lowest counter, then lowest actor)
    /// that hold no sibling until at most [`Limits::max_entries`] remain, or
    /// none is left to forget. Never touches a sibling. Returns how many
    /// entries it forgot.
    ///
    /// [`Dvv::update`] calls it; a replica may call it after [`Dvv::sync`]
    /// when it stores the result. It depends only on the state, so replicas
    /// that merge the same states and prune agree.
    pub fn prune(&mut self, limits: &Limits) -> usize {
        let excess = self.entries.len().saturating_sub(limits.max_entries);
        if excess == 0 {
            return 0;
        }
        let mut idle: Vec<(u64, Actor)> = self
            .entries
            .iter()
            .filter(|e| e.siblings.is_empty())
            .map(|e| (e.counter, e.actor))
            .collect();
        idle.sort_unstable();
        idle.truncate(excess);
        let mut forget: Vec<Actor> = idle.into_iter().map(|(_, a)| a).collect();
        forget.sort_unstable();
        let before = self.entries.len();
        self.entries
            .retain(|e| !e.siblings.is_empty() || forget.binary_search(&e.actor).is_err());
        before - self.entries.len()
    }

    /// Appends the encoding (see the module's format).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.entries.len() <= Context::MAX_ENTRIES);
        put_varint(out, self.entries.len() as u64);
        for e in &self.entries {
            out.extend_from_slice(&e.actor.0.to_le_bytes());
            put_varint(out, e.counter);
            put_varint(out, e.siblings.len() as u64);
            let mut above = e.counter;
            for (k, (dot, v)) in e.siblings.iter().enumerate() {
                // The invariants make both subtractions non-negative.
                let delta = if k == 0 { above - dot } else { above - 1 - dot };
                put_varint(out, delta);
                v.encode(out);
                above = *dot;
            }
        }
    }

    /// Decodes the encoding, checking every invariant.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Dvv> {
        /// A sibling is at least a 1-byte delta and a 1-byte value.
        const MIN_SIBLING_BYTES: usize = 1 + value::MIN_ENCODED_BYTES;
        let n = r.count(Entry::MIN_ENCODED_BYTES, Context::MAX_ENTRIES)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(n);
        for _ in 0..n {
            let actor = Actor(r.u64()?);
            if entries.last().is_some_and(|prev| prev.actor >= actor) {
                return Err(r.error("actors not strictly ascending"));
            }
            let counter = r.varint()?;
            if counter == 0 {
                return Err(r.error("zero counter"));
            }
            let count = r.count(MIN_SIBLING_BYTES, usize::MAX)?;
            if count as u64 > counter {
                return Err(r.error("more siblings than dots below the counter"));
            }
            let mut siblings = Vec::with_capacity(count);
            let mut above = counter;
            for k in 0..count {
                let delta = r.varint()?;
                let gap = if k == 0 { Some(delta) } else { delta.checked_add(1) };
                let dot = match gap.and_then(|g| above.checked_sub(g)) {
                    Some(d) if d > 0 => d,
                    _ => return Err(r.error("dot out of range")),
                };
                siblings.push((dot, Value::decode(r)?));
                above = dot;
            }
            entries.push(Entry {
                actor,
                counter,
                siblings,
            });
        }
        let dvv = Dvv { entries };
        dvv.debug_check();
        Ok(dvv)
    }

    /// Asserts the invariants that make states canonical (debug builds).
    fn debug_check(&self) {
        debug_assert!(self.entries.windows(2).all(|w| w[0].actor < w[1].actor));
        debug_assert!(self.entries.iter().all(|e| {
            e.counter > 0
                && e.siblings.first().is_none_or(|s| s.0 <= e.counter)
                && e.siblings.last().is_none_or(|s| s.0 > 0)
                && e.siblings.windows(2).all(|w| w[0].0 > w[1].0)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Actor = Actor(1);
    const B: Actor = Actor(2);
    const C: Actor = Actor(3);

    fn put(d: &Dvv, ctx: &Context, actor: Actor, v: &str) -> Dvv {
        d.update(ctx, actor, Timestamp::ZERO, Value::put(v), &Limits::default())
            .unwrap()
    }

    fn strs(d: &Dvv) -> Vec<String> {
        let mut v: Vec<String> = d
            .values()
            .map(|v| match v.bytes() {
                Some(b) => String::from_utf8_lossy(b).into_owned(),
                None => "<deleted>".to_owned(),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn concurrent_blind_writes_become_siblings_and_a_read_write_resolves_them() {
        let empty = Context::new();
        // Two replicas take a blind write each.
        let ra = put(&Dvv::new(), &empty, A, "x");
        let rb = put(&Dvv::new(), &empty, B, "y");
        let read = Dvv::sync(&ra, &rb);
        assert_eq!(strs(&read), ["x", "y"]);
        // A write with the read's context supersedes both.
        let ra = put(&ra, &read.context(), A, "z");
        assert_eq!(strs(&ra), ["z"]);
        assert_eq!(strs(&Dvv::sync(&ra, &rb)), ["z"]);
        assert_eq!(strs(&Dvv::sync(&rb, &ra)), ["z"]);
    }

    #[test]
    fn a_stale_context_supersedes_only_what_it_saw() {
        let v1 = put(&Dvv::new(), &Context::new(), A, "v1");
        let stale = v1.context();
        let v2 = put(&v1, &stale, A, "v2");
        // Another client, still holding the context of v1, writes v3: it saw
        // v1 (gone) but not v2 (kept as a sibling).
        let v3 = put(&v2, &stale, A, "v3");
        assert_eq!(strs(&v3), ["v2", "v3"]);
        // Same through another coordinator.
        let v3b = put(&v2, &stale, B, "v3");
        assert_eq!(strs(&v3b), ["v2", "v3"]);
        // A blind write supersedes nothing.
        assert_eq!(strs(&put(&v3, &Context::new(), C, "w")), ["v2", "v3", "w"]);
    }

    #[test]
    fn deletes_are_tombstone_siblings() {
        let v1 = put(&Dvv::new(), &Context::new(), A, "v1");
        let limits = Limits::default();
        let del = v1
            .update(&v1.context(), B, Timestamp::ZERO, Value::tombstone(0), &limits)
            .unwrap();
        assert!(del.is_deleted());
        assert_eq!(del.sibling_count(), 1);
        // A concurrent put survives the delete that did not see it.
        let other = put(&Dvv::new(), &Context::new(), C, "v2");
        let merged = Dvv::sync(&del, &other);
        assert!(!merged.is_deleted());
        assert_eq!(strs(&merged), ["<deleted>", "v2"]);
        assert!(Dvv::new().is_deleted() && Dvv::new().is_empty());
    }

    #[test]
    fn too_many_siblings_is_refused_without_change() {
        let limits = Limits::new(2, 2).unwrap();
        let empty = Context::new();
        let d = Dvv::new();
        let d = d.update(&empty, A, Timestamp::ZERO, Value::put("1"), &limits).unwrap();
        let d = d.update(&empty, A, Timestamp::ZERO, Value::put("2"), &limits).unwrap();
        let err = d
            .update(&empty, A, Timestamp::ZERO, Value::put("3"), &limits)
            .unwrap_err();
        assert!(matches!(err, Error::TooManySiblings { siblings: 3, max: 2 }));
        // Reading and writing back with the context resolves.
        let d = d
            .update(&d.context(), A, Timestamp::ZERO, Value::put("3"), &limits)
            .unwrap();
        assert_eq!(strs(&d), ["3"]);
    }

    #[test]
    fn pruning_forgets_idle_entries_oldest_first_and_only_adds_siblings() {
        let limits = Limits::new(1, 2).unwrap();
        let big = Limits::default();
        // Three actors write in turn, each seeing the previous write.
        let mut d = Dvv::new();
        for (t, actor) in [(10, A), (20, B), (30, C)] {
            d = d
                .update(&d.context(), actor, Timestamp::from_u64(t), Value::put("v"), &big)
                .unwrap();
        }
        assert_eq!(d.clock_len(), 3);
        let mut pruned = d.clone();
        assert_eq!(pruned.prune(&limits), 1);
        // A (counter 10, oldest) is forgotten; C holds the sibling.
        assert_eq!(pruned.context().get(A), 0);
        assert_eq!(pruned.context().get(B), 20);
        // A stale copy still holding A's write: the full clock knows it was
        // superseded, the pruned one takes it back as a (false) sibling.
        let stale = put(&Dvv::new(), &Context::new(), A, "old");
        assert_eq!(Dvv::sync(&d, &stale).sibling_count(), 1);
        assert_eq!(Dvv::sync(&pruned, &stale).sibling_count(), 2);
        // An entry holding a sibling is never pruned, even over the limit.
        let mut two = Dvv::sync(
            &put(&Dvv::new(), &Context::new(), A, "a"),
            &put(&Dvv::new(), &Context::new(), B, "b"),
        );
        assert_eq!(two.prune(&Limits::new(1, 1).unwrap()), 0);
        assert_eq!(two.sibling_count(), 2);
    }

    #[test]
    fn counters_follow_the_hlc_so_a_purged_key_cannot_reuse_a_dot() {
        let big = Limits::default();
        let old = Dvv::new()
            .update(&Context::new(), A, Timestamp::from_u64(100), Value::put("old"), &big)
            .unwrap();
        assert_eq!(old.siblings().next().unwrap().0.counter, 100);
        // A stale copy of the old write (say a late hint) outlives the key's purge at A.
        // The next write at A starts from nothing but gets a newer dot, so it
        // supersedes the old write rather than colliding with it.
        let new = Dvv::new()
            .update(&Context::new(), A, Timestamp::from_u64(200), Value::put("new"), &big)
            .unwrap();
        assert_eq!(strs(&Dvv::sync(&old, &new)), ["new"]);
        // Within one state the counter still grows when the clock lags.
        let next = new
            .update(&new.context(), A, Timestamp::from_u64(5), Value::put("next"), &big)
            .unwrap();
        assert_eq!(next.siblings().next().unwrap().0.counter, 201);
    }

    #[test]
    fn counter_overflow_is_an_error() {
        let forged = Context::from_sorted(vec![(A, u64::MAX)]);
        let err = Dvv::new()
            .update(&forged, A, Timestamp::ZERO, Value::put("x"), &Limits::default())
            .unwrap_err();
        assert!(matches!(err, Error::CounterOverflow { actor } if actor == A));
    }

    #[test]
    fn expiry_is_per_write() {
        let big = Limits::default();
        let empty = Context::new();
        let a = Dvv::new()
            .update(&empty, A, Timestamp::ZERO, Value::put_expiring("a", 50), &big)
            .unwrap();
        assert_eq!(a.expires_at_ms(), Some(50));
        let b = Dvv::new()
            .update(&empty, B, Timestamp::ZERO, Value::put_expiring("b", 70), &big)
            .unwrap();
        assert_eq!(Dvv::sync(&a, &b).expires_at_ms(), Some(70));
        let c = Dvv::new()
            .update(&empty, C, Timestamp::ZERO, Value::put("c"), &big)
            .unwrap();
        assert_eq!(Dvv::sync(&a, &c).expires_at_ms(), None);
        // A write that saw `a` replaces its TTL, whatever order replicas merge in.
        let shorter = a
            .update(&a.context(), A, Timestamp::ZERO, Value::put_expiring("a2", 10), &big)
            .unwrap();
        assert_eq!(Dvv::sync(&a, &shorter).expires_at_ms(), Some(10));
        assert!(!Value::put_expiring("x", 10).is_live_at(10));
        assert!(Value::put_expiring("x", 10).is_live_at(9));
    }

    #[test]
    fn limits_are_validated() {
        assert!(Limits::new(0, 4).is_err());
        assert!(Limits::new(8, 4).is_err());
        assert!(Limits::new(1, Context::MAX_ENTRIES + 1).is_err());
        let l = Limits::new(4, 8).unwrap();
        assert_eq!((l.max_siblings(), l.max_entries()), (4, 8));
        assert_eq!(Limits::default(), Limits::new(64, 64).unwrap());
    }
}
