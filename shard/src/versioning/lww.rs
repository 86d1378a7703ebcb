//! Last-write-wins registers for `lww` keyspaces.
//!
//! The newest timestamp wins; of two concurrent writes one is lost, and which
//! one depends on the coordinators' clocks. That is the price of a version
//! that is 16 bytes whatever happens, for data where it is acceptable
//! (metrics, caches, idempotent overwrites).

use super::actor::Actor;
use super::hlc::Timestamp;
use super::value::Value;

/// One key's version in an `lww` keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LwwRegister {
    /// When the coordinator took the write (its HLC).
    pub ts: Timestamp,
    /// The coordinator's actor: breaks ties between equal timestamps.
    pub actor: Actor,
    /// What was written.
    pub value: Value,
}

impl LwwRegister {
    /// A write of `value` by `actor` at `ts`.
    pub fn new(ts: Timestamp, actor: Actor, value: Value) -> LwwRegister {
        LwwRegister { ts, actor, value }
    }

    /// Whether `self` wins against `other`: newer timestamp, then higher
    /// actor, then the value's order (tombstones after puts, so a delete wins
    /// an exact tie). The order is total, so merging is deterministic.
    pub fn wins_over(&self, other: &LwwRegister) -> bool {
        (self.ts, self.actor, &self.value) > (other.ts, other.actor, &other.value)
    }

    /// The newer of two registers. Commutative, associative, idempotent.
    pub fn merge(&self, other: &LwwRegister) -> LwwRegister {
        if other.wins_over(self) {
            other.clone()
        } else {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reg(ts: u64, actor: u64, v: &str) -> LwwRegister {
        LwwRegister::new(Timestamp::from_u64(ts), Actor(actor), Value::put(v))
    }

    #[test]
    fn newest_wins_and_ties_break_by_actor() {
        assert_eq!(reg(2, 1, "b").merge(&reg(1, 9, "a")), reg(2, 1, "b"));
        assert_eq!(reg(1, 9, "a").merge(&reg(2, 1, "b")), reg(2, 1, "b"));
        assert_eq!(reg(1, 1, "a").merge(&reg(1, 2, "b")), reg(1, 2, "b"));
        // The concurrent write that loses is gone: that is what lww means.
        let del = LwwRegister::new(Timestamp::from_u64(1), Actor(1), Value::tombstone(0));
        assert_eq!(reg(1, 1, "a").merge(&del), del);
    }

    fn arb() -> impl Strategy<Value = LwwRegister> {
        (0u64..4, 0u64..3, prop_oneof![Just(None), (0u8..3).prop_map(Some)]).prop_map(|(ts, a, v)| {
            let value = match v {
                Some(b) => Value::put(vec![b]),
                None => Value::tombstone(0),
            };
            LwwRegister::new(Timestamp::from_u64(ts), Actor(a), value)
        })
    }

    proptest! {
        #[test]
        fn merge_is_a_join(a in arb(), b in arb(), c in arb()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
        }
    }
}
