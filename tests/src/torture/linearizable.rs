//! A linearizability checker for one compare-and-set register (Wing & Gong's
//! search with memoization, as in Lowe's and Knossos' checkers).
//!
//! An op has an invocation time and, if the client got an answer, a response
//! time and a result. An op without an answer (timed out: outcome unknown)
//! may take effect at any point after its invocation, or never. The history
//! is linearizable when some order of the answered ops (plus any subset of
//! the unanswered ones) respects real time (an op that answered before
//! another was invoked comes first) and replays on a sequential register with
//! the results the clients saw. The search tries ops in every order the real
//! time allows, skipping states (set of ops done, register value) already
//! found to fail; histories per key are small (tens of ops), so that is fast.

use std::collections::HashSet;

/// A register value (`None`: empty).
pub type Val = Option<u64>;

/// What an op did and what its client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A read that returned `result`.
    Read {
        /// The value read.
        result: Val,
    },
    /// Set `new` if the register holds `expected`.
    Cas {
        /// The condition.
        expected: Val,
        /// The value to set.
        new: Val,
        /// `Some((applied, value after))` if answered, `None` if unknown.
        result: Option<(bool, Val)>,
    },
}

/// One op of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// When the client sent it.
    pub invoke: u64,
    /// When the client got the answer (`None`: never).
    pub ret: Option<u64>,
    /// What it was.
    pub kind: Kind,
}

impl Op {
    fn answered(&self) -> bool {
        self.ret.is_some()
    }
}

/// Checks `history` against a register that starts empty. `Err` explains.
pub fn check(history: &[Op]) -> Result<(), String> {
    if history.len() > 64 {
        return Err(format!("{} ops: the checker handles at most 64 per key", history.len()));
    }
    let all_answered: u64 = history
        .iter()
        .enumerate()
        .filter(|(_, op)| op.answered())
        .fold(0, |m, (i, _)| m | 1 << i);
    let mut failed = HashSet::new();
    if search(history, 0, None, all_answered, &mut failed) {
        Ok(())
    } else {
        let ops: Vec<String> = history
            .iter()
            .map(|op| {
                let ret = op.ret.map_or("?".to_owned(), |r| r.to_string());
                format!("  [{}, {ret}] {:?}", op.invoke, op.kind)
            })
            .collect();
        Err(format!(
            "not linearizable (ms [invoked, answered] op):\n{}",
            ops.join("\n")
        ))
    }
}

fn search(ops: &[Op], done: u64, state: Val, must: u64, failed: &mut HashSet<(u64, Val)>) -> bool {
    if done & must == must {
        return true;
    }
    if failed.contains(&(done, state)) {
        return false;
    }
    // The earliest answer among the ops not done: no op invoked after it may
    // go before the op that gave it.
    let horizon = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .filter_map(|(_, op)| op.ret)
        .min()
        .unwrap_or(u64::MAX);
    for (i, op) in ops.iter().enumerate() {
        if done & (1 << i) != 0 || op.invoke > horizon {
            continue;
        }
        let next = match &op.kind {
            Kind::Read { result } => (*result == state).then_some(state),
            Kind::Cas { expected, new, result } => match result {
                Some((true, after)) => (*expected == state && after == new).then_some(*new),
                Some((false, seen)) => (*expected != state && *seen == state).then_some(state),
                // Unknown: as an effect here (or, by never being picked, none).
                None => (*expected == state).then_some(*new),
            },
        };
        if let Some(next) = next {
            if search(ops, done | 1 << i, next, must, failed) {
                return true;
            }
        }
    }
    failed.insert((done, state));
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(invoke: u64, ret: u64, result: Val) -> Op {
        Op {
            invoke,
            ret: Some(ret),
            kind: Kind::Read { result },
        }
    }

    fn cas(invoke: u64, ret: Option<u64>, expected: Val, new: Val, result: Option<(bool, Val)>) -> Op {
        Op {
            invoke,
            ret,
            kind: Kind::Cas { expected, new, result },
        }
    }

    #[test]
    fn sequential_history() {
        let h = [
            cas(0, Some(1), None, Some(1), Some((true, Some(1)))),
            read(2, 3, Some(1)),
            cas(4, Some(5), None, Some(2), Some((false, Some(1)))),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn stale_read_after_a_completed_write_fails() {
        let h = [cas(0, Some(1), None, Some(1), Some((true, Some(1)))), read(2, 3, None)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn concurrent_ops_may_go_either_way() {
        // The read overlaps the write: it may see either value.
        for seen in [None, Some(1)] {
            let h = [cas(0, Some(10), None, Some(1), Some((true, Some(1)))), read(1, 5, seen)];
            assert!(check(&h).is_ok(), "{seen:?}");
        }
        // But two reads in sequence cannot see the write and then not see it.
        let h = [
            cas(0, Some(10), None, Some(1), Some((true, Some(1)))),
            read(1, 2, Some(1)),
            read(3, 4, None),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_happen() {
        let write = cas(0, None, None, Some(1), None);
        assert!(check(&[write.clone(), read(5, 6, Some(1))]).is_ok());
        assert!(check(&[write.clone(), read(5, 6, None)]).is_ok());
        // It happens at most once: seen, then gone, is not allowed.
        assert!(check(&[write, read(5, 6, Some(1)), read(7, 8, None)]).is_err());
    }

    #[test]
    fn both_cas_winning_the_same_condition_fails() {
        let h = [
            cas(0, Some(5), None, Some(1), Some((true, Some(1)))),
            cas(0, Some(5), None, Some(2), Some((true, Some(2)))),
        ];
        assert!(check(&h).is_err());
    }
}
