//! Property tests across the module: random histories of puts, reads and
//! replica merges, checked against a model of which write saw which.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::error::Error;
use crate::topology::NodeId;

#[derive(Debug, Clone)]
enum Op {
    /// A coordinator reads replicas `a` and `b`, merges them and hands the
    /// client the context.
    Read { a: Index, b: Index },
    /// A client puts (or deletes) through replica `at`, carrying the context
    /// of an earlier read (`None`: a blind write), at physical time `clock_ms`.
    Put {
        at: Index,
        ctx: Option<Index>,
        tombstone: bool,
        clock_ms: u64,
    },
    /// Replica `to` merges replica `from`'s state (replication, hints, read
    /// repair, anti-entropy: all the same merge).
    Sync { from: Index, to: Index },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Op::Read { a, b }),
        4 => (
            any::<Index>(),
            proptest::option::weighted(0.8, any::<Index>()),
            proptest::bool::weighted(0.15),
            // Small and unordered: physical time repeats and goes backwards.
            0u64..50,
        )
            .prop_map(|(at, ctx, tombstone, clock_ms)| Op::Put { at, ctx, tombstone, clock_ms }),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 0..60)
}

struct Replica {
    actor: Actor,
    hlc: Hlc,
    state: Dvv,
    /// Model: the puts this replica's state has seen (held or superseded).
    seen: BTreeSet<usize>,
}

/// An acknowledged put, as the model remembers it.
struct Acked {
    dot: Dot,
    value: Value,
    /// Model: the puts the client had seen when it wrote (what its read saw).
    saw: BTreeSet<usize>,
    /// The context it carried.
    ctx: Context,
}

struct Sim {
    replicas: Vec<Replica>,
    limits: Limits,
    /// Whether replicas prune after merging (what a replica storing a merge may do).
    prune_on_sync: bool,
    reads: Vec<(Context, BTreeSet<usize>)>,
    acked: Vec<Acked>,
    /// Every state any replica held, for the algebra and encoding tests.
    pool: Vec<Dvv>,
}

impl Sim {
    fn new(replicas: usize, limits: Limits, prune_on_sync: bool) -> Sim {
        Sim {
            replicas: (0..replicas)
                .map(|i| Replica {
                    // Real derived actors, so their order has nothing to do with the index.
                    actor: Actor::derive(&NodeId(format!("node-{i}")), 0),
                    hlc: Hlc::default(),
                    state: Dvv::new(),
                    seen: BTreeSet::new(),
                })
                .collect(),
            limits,
            prune_on_sync,
            reads: Vec::new(),
            acked: Vec::new(),
            pool: vec![Dvv::new()],
        }
    }

    fn run(mut self, ops: &[Op]) -> Result<Sim, TestCaseError> {
        let n = self.replicas.len();
        for op in ops {
            match op {
                Op::Read { a, b } => {
                    let (a, b) = (&self.replicas[a.index(n)], &self.replicas[b.index(n)]);
                    let merged = Dvv::sync(&a.state, &b.state);
                    let seen = a.seen.union(&b.seen).copied().collect();
                    self.reads.push((merged.context(), seen));
                }
                Op::Put {
                    at,
                    ctx,
                    tombstone,
                    clock_ms,
                } => {
                    let id = self.acked.len();
                    let (ctx, saw) = match ctx {
                        Some(i) if !self.reads.is_empty() => self.reads[i.index(self.reads.len())].clone(),
                        _ => (Context::new(), BTreeSet::new()),
                    };
                    let value = if *tombstone {
                        Value::tombstone(*clock_ms)
                    } else {
                        Value::put((id as u64).to_le_bytes())
                    };
                    let r = &mut self.replicas[at.index(n)];
                    let now = r.hlc.now(*clock_ms);
                    match r.state.update(&ctx, r.actor, now, value.clone(), &self.limits) {
                        Ok(next) => {
                            prop_assert!(next.sibling_count() <= self.limits.max_siblings());
                            prop_assert!(next.clock_len() <= self.limits.max_entries());
                            let dot = Dot {
                                actor: r.actor,
                                counter: next.context().get(r.actor),
                            };
                            prop_assert!(next.siblings().any(|(d, v)| d == dot && *v == value));
                            r.state = next;
                            r.seen.extend(saw.iter().copied());
                            r.seen.insert(id);
                            self.pool.push(r.state.clone());
                            self.acked.push(Acked { dot, value, saw, ctx });
                        }
                        Err(Error::TooManySiblings { siblings, max }) => {
                            // Refused, not acknowledged: the state is untouched.
                            prop_assert_eq!(max, self.limits.max_siblings());
                            prop_assert!(siblings > max);
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
                    }
                }
                Op::Sync { from, to } => {
                    let src = &self.replicas[from.index(n)];
                    let (from, from_seen) = (src.state.clone(), src.seen.clone());
                    let r = &mut self.replicas[to.index(n)];
                    let mut next = Dvv::sync(&r.state, &from);
                    if self.prune_on_sync {
                        next.prune(&self.limits);
                        let holding: BTreeSet<Actor> = next.siblings().map(|(d, _)| d.actor).collect();
                        prop_assert!(next.clock_len() <= self.limits.max_entries().max(holding.len()));
                    }
                    r.state = next;
                    r.seen.extend(from_seen);
                    self.pool.push(r.state.clone());
                }
            }
        }
        Ok(self)
    }

    /// Every replica merged with every other: the converged state. Checks that
    /// the merge order does not matter.
    fn converged(&self) -> Result<Dvv, TestCaseError> {
        let forward = self
            .replicas
            .iter()
            .fold(Dvv::new(), |acc, r| Dvv::sync(&acc, &r.state));
        let backward = self
            .replicas
            .iter()
            .rev()
            .fold(Dvv::new(), |acc, r| Dvv::sync(&r.state, &acc));
        prop_assert_eq!(&forward, &backward);
        Ok(forward)
    }
}

/// The converged state's siblings as (dot, value) pairs.
fn siblings(d: &Dvv) -> BTreeSet<(Dot, Value)> {
    d.siblings().map(|(dot, v)| (dot, v.clone())).collect()
}

/// A random history: replicas, whether they prune (with tight limits, so
/// pruning happens), operations.
fn history() -> impl Strategy<Value = (usize, bool, Vec<Op>)> {
    (2usize..6, any::<bool>(), ops())
}

/// Every state the replicas of `history` held.
fn pool((n, prune, ops): &(usize, bool, Vec<Op>)) -> Result<Vec<Dvv>, TestCaseError> {
    let limits = if *prune { Limits::new(2, 3) } else { Limits::new(8, 64) };
    let limits = limits.map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(Sim::new(*n, limits, *prune).run(ops)?.pool)
}

fn config() -> ProptestConfig {
    // The machine is shared: enough cases to find bugs in histories of 60
    // operations, few enough to finish in seconds.
    ProptestConfig::with_cases(256)
}

proptest! {
    #![proptest_config(config())]

    /// The model check without pruning: after every replica merged, the
    /// siblings are exactly the acknowledged puts that no later acknowledged
    /// put saw. Nothing acknowledged is lost, nothing superseded comes back,
    /// and a put with a stale context supersedes only what it saw.
    #[test]
    fn causal_keeps_exactly_the_unsuperseded_puts(n in 1usize..5, max_siblings in 2usize..10, ops in ops()) {
        let limits = Limits::new(max_siblings, 64).unwrap();
        let sim = Sim::new(n, limits, false).run(&ops)?;
        let superseded: BTreeSet<usize> = sim.acked.iter().flat_map(|p| p.saw.iter().copied()).collect();
        let expected: BTreeSet<(Dot, Value)> = sim
            .acked
            .iter()
            .enumerate()
            .filter(|(i, _)| !superseded.contains(i))
            .map(|(_, p)| (p.dot, p.value.clone()))
            .collect();
        prop_assert_eq!(siblings(&sim.converged()?), expected);
    }

    /// The model check with pruning (more actors than clock entries allowed):
    /// every acknowledged put is a sibling, or a later acknowledged put saw it
    /// and its context said so. Pruning may bring a superseded put back, never
    /// lose one.
    #[test]
    fn pruning_never_loses_an_acknowledged_put(n in 4usize..8, ops in ops()) {
        let limits = Limits::new(2, 3).unwrap();
        let sim = Sim::new(n, limits, true).run(&ops)?;
        let present = siblings(&sim.converged()?);
        for (i, p) in sim.acked.iter().enumerate() {
            let kept = present.contains(&(p.dot, p.value.clone()));
            let superseded = sim.acked.iter().any(|q| q.saw.contains(&i) && q.ctx.covers(p.dot));
            prop_assert!(kept || superseded, "put {} ({:?}) lost", i, p.dot);
        }
    }

    /// `sync` is a join: commutative, associative, idempotent, over states of
    /// one history (pruned ones included).
    #[test]
    fn sync_is_a_join(h in history(), i: Index, j: Index, k: Index) {
        let pool = &pool(&h)?;
        let (a, b, c) = (&pool[i.index(pool.len())], &pool[j.index(pool.len())], &pool[k.index(pool.len())]);
        let ab = Dvv::sync(a, b);
        prop_assert_eq!(&ab, &Dvv::sync(b, a));
        prop_assert_eq!(Dvv::sync(&ab, c), Dvv::sync(a, &Dvv::sync(b, c)));
        prop_assert_eq!(&Dvv::sync(a, a), a);
        // The merge has seen both sides.
        prop_assert!(ab.context().descends(&a.context()) && ab.context().descends(&b.context()));
        // Equal states, equal bytes, equal digests.
        let (x, y) = (Record::Causal(ab), Record::Causal(Dvv::sync(b, a)));
        prop_assert_eq!(x.to_bytes(), y.to_bytes());
        prop_assert_eq!(x.digest(), y.digest());
    }

    /// Every state round-trips through its encoding.
    #[test]
    fn records_round_trip(
        h in history(),
        ts: u64,
        actor: u64,
        expiry in proptest::option::of(any::<u64>()),
        bytes in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        for d in &pool(&h)? {
            let r = Record::Causal(d.clone());
            let enc = r.to_bytes();
            prop_assert_eq!(Record::decode(&enc).unwrap(), r);
            let ctx = d.context();
            prop_assert_eq!(Context::decode(&ctx.to_bytes()).unwrap(), ctx);
        }
        let value = match expiry {
            Some(t) => Value::put_expiring(bytes, t),
            None => Value::put(bytes),
        };
        for value in [value, Value::tombstone(0), Value::tombstone(1_700_000_000_000)] {
            let r = Record::Lww(LwwRegister::new(Timestamp::from_u64(ts), Actor(actor), value));
            prop_assert_eq!(Record::decode(&r.to_bytes()).unwrap(), r);
        }
    }

    /// A damaged encoding never panics the decoder, and whatever still
    /// decodes re-encodes to the same bytes (the decoder accepts only
    /// canonical encodings).
    #[test]
    fn damaged_records_never_panic(h in history(), pick: Index, at: Index, byte: u8, cut: Index, how in 0u8..3) {
        let pool = pool(&h)?;
        let d = &pool[pick.index(pool.len())];
        let mut bytes = Record::Causal(d.clone()).to_bytes();
        match how {
            0 => { let i = at.index(bytes.len()); bytes[i] = byte; }
            1 => bytes.truncate(cut.index(bytes.len())),
            _ => bytes.insert(at.index(bytes.len() + 1), byte),
        }
        if let Ok(r) = Record::decode(&bytes) {
            prop_assert_eq!(r.to_bytes(), bytes);
        }
    }

    /// Random bytes never panic the decoder (half of them start with a valid
    /// version and mode, to reach the body).
    #[test]
    fn random_bytes_never_panic(prefix in 0usize..4, tail in proptest::collection::vec(any::<u8>(), 0..128)) {
        let prefix: &[u8] = [&[][..], &[1][..], &[1, 1][..], &[1, 2][..]][prefix];
        let bytes = [prefix, &tail].concat();
        if let Ok(r) = Record::decode(&bytes) {
            prop_assert_eq!(r.to_bytes(), bytes);
        }
    }
}
