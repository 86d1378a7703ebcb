//! A deterministic simulated network of [`Gossiper`]s: a virtual clock, a
//! seeded random number generator, message loss and latency, crashes.
//!
//! The same seed replays the same run event for event (ties in time break by
//! the order events were scheduled), so a failing seed is a regression test.
//! The gossipers are the real state machines; only the network is simulated.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::gossip::{GossipConfig, Gossiper, LocalNode, Message, Output};
use crate::topology::NodeId;

/// Simulation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The first `seeds` nodes are the seeds every node is configured with.
    pub seeds: usize,
    /// Probability that a message is lost (each message independently).
    pub loss: f64,
    /// One-way latency, drawn uniformly from `min..=max` ms.
    pub latency_ms: (u64, u64),
    /// Every node's gossip settings (the seeds are filled in).
    pub gossip: GossipConfig,
    /// The seed of the whole run.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 10,
            seeds: 3,
            loss: 0.01,
            latency_ms: (1, 5),
            gossip: GossipConfig::default(),
            seed: 0,
        }
    }
}

/// What one simulation step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Virtual time, ms.
    pub time_ms: u64,
    /// The node that acted.
    pub node: usize,
    /// Its membership events (its messages are already in flight).
    pub events: Vec<Output>,
}

#[derive(Debug, Clone)]
enum Event {
    Tick(usize),
    Deliver(usize, Message),
}

/// The simulated cluster.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    nodes: Vec<Gossiper>,
    running: Vec<bool>,
    /// The time of each node's pending tick event; others in the queue are stale.
    scheduled: Vec<Option<u64>>,
    by_address: HashMap<String, usize>,
    /// Keyed by (time, scheduling order): a total, reproducible order.
    queue: BTreeMap<(u64, u64), Event>,
    order: u64,
    now: u64,
    rng: SmallRng,
    sent: u64,
    lost: u64,
}

impl Sim {
    /// Node `i`'s id.
    pub fn id(i: usize) -> NodeId {
        NodeId(format!("n{i:04}"))
    }

    /// Node `i`'s gossip address.
    pub fn address(i: usize) -> String {
        format!("10.{}.{}.{}:7000", i >> 16, (i >> 8) & 0xff, i & 0xff)
    }

    /// A cluster where every node starts at time 0, knowing only the seeds,
    /// and first ticks at a random point of its first interval.
    pub fn new(config: SimConfig) -> Sim {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let gossip = GossipConfig {
            seeds: (0..config.seeds.min(config.nodes)).map(Sim::address).collect(),
            ..config.gossip.clone()
        };
        let nodes: Vec<Gossiper> = (0..config.nodes)
            .map(|i| {
                let local = LocalNode::new(Sim::id(i).0, Sim::address(i));
                // Start times in ms, a few apart, as real generations would be.
                Gossiper::new(gossip.clone(), local, 1_700_000_000_000 + 7 * i as u64)
            })
            .collect();
        let by_address = (0..config.nodes).map(|i| (Sim::address(i), i)).collect();
        let mut sim = Sim {
            nodes,
            running: vec![true; config.nodes],
            scheduled: vec![None; config.nodes],
            by_address,
            queue: BTreeMap::new(),
            order: 0,
            now: 0,
            sent: 0,
            lost: 0,
            rng: SmallRng::seed_from_u64(0),
            config,
        };
        for i in 0..sim.nodes.len() {
            let first = rng.gen_range(0..sim.config.gossip.interval_ms.max(1));
            sim.schedule_tick(i, first);
        }
        sim.rng = rng;
        sim
    }

    fn push(&mut self, at: u64, event: Event) {
        self.order += 1;
        self.queue.insert((at, self.order), event);
    }

    fn schedule_tick(&mut self, i: usize, at: u64) {
        if self.scheduled[i].is_none_or(|s| at < s) {
            self.scheduled[i] = Some(at);
            self.push(at, Event::Tick(i));
        }
    }

    /// Virtual time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s gossiper.
    pub fn node(&self, i: usize) -> &Gossiper {
        &self.nodes[i]
    }

    /// Whether node `i`'s process runs.
    pub fn running(&self, i: usize) -> bool {
        self.running[i]
    }

    /// Crashes node `i` now: it stops ticking; messages to it are lost.
    pub fn kill(&mut self, i: usize) {
        self.running[i] = false;
    }

    /// Messages sent and lost so far.
    pub fn messages(&self) -> (u64, u64) {
        (self.sent, self.lost)
    }

    /// Whether every running node knows every node and holds exactly the
    /// other running nodes live.
    pub fn converged(&self) -> bool {
        let running = self.running.iter().filter(|r| **r).count();
        (0..self.nodes.len()).filter(|&i| self.running[i]).all(|i| {
            let n = &self.nodes[i];
            n.state().len() == self.nodes.len()
                && n.live().count() == running - 1
                && n.live().all(|id| self.index_of(id).is_some_and(|j| self.running[j]))
        })
    }

    /// The index of the node with `id`.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        id.0.strip_prefix('n')?.parse().ok().filter(|&i| i < self.nodes.len())
    }

    /// Runs the next event; `None` when nothing is left to run (never, while
    /// a node runs: ticks reschedule themselves).
    pub fn step(&mut self) -> Option<Step> {
        let ((at, _), event) = self.queue.pop_first()?;
        self.now = at;
        let (i, outputs) = match event {
            Event::Tick(i) => {
                if !self.running[i] || self.scheduled[i] != Some(at) {
                    return Some(Step {
                        time_ms: at,
                        node: i,
                        events: Vec::new(),
                    });
                }
                self.scheduled[i] = None;
                (i, self.nodes[i].tick(at, &mut self.rng))
            }
            Event::Deliver(i, msg) => {
                if !self.running[i] {
                    return Some(Step {
                        time_ms: at,
                        node: i,
                        events: Vec::new(),
                    });
                }
                (i, self.nodes[i].on_message(msg, at))
            }
        };
        let mut events = Vec::new();
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    self.sent += 1;
                    if self.rng.gen::<f64>() < self.config.loss {
                        self.lost += 1;
                        continue;
                    }
                    let Some(&j) = self.by_address.get(&to) else { continue };
                    let (lo, hi) = self.config.latency_ms;
                    let latency = self.rng.gen_range(lo..=hi.max(lo));
                    self.push(at + latency, Event::Deliver(j, msg));
                }
                e => events.push(e),
            }
        }
        // Due now or later; the tick handles everything due, so `at + 1` at
        // the earliest keeps the clock moving.
        let next = self.nodes[i].next_deadline().max(at + 1);
        self.schedule_tick(i, next);
        Some(Step {
            time_ms: at,
            node: i,
            events,
        })
    }

    /// Runs every event up to `until_ms` (inclusive), handing each step with
    /// events to `f`.
    pub fn run_until(&mut self, until_ms: u64, mut f: impl FnMut(&Sim, &Step)) {
        while self.queue.first_key_value().is_some_and(|((t, _), _)| *t <= until_ms) {
            if let Some(step) = self.step() {
                if !step.events.is_empty() {
                    f(self, &step);
                }
            }
        }
        self.now = self.now.max(until_ms);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let mut sim = Sim::new(SimConfig {
                nodes: 20,
                seed,
                ..SimConfig::default()
            });
            let mut log = Vec::new();
            sim.run_until(15_000, |_, s| log.push(s.clone()));
            (log, sim.messages())
        };
        let a = run(3);
        assert!(!a.0.is_empty());
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
    }

    /// 50 nodes, 1% loss: the cluster forms from 3 seeds, then a crash is
    /// noticed by every running node, with no false conviction on the way.
    /// Seeds kept as regressions.
    #[test]
    fn forms_then_detects_a_crash() {
        for seed in [1, 2, 3] {
            let mut sim = Sim::new(SimConfig {
                nodes: 50,
                seed,
                ..SimConfig::default()
            });
            let mut formed = None;
            for r in 1..=30 {
                sim.run_until(r * 1000, |_, _| {});
                if sim.converged() {
                    formed = Some(r);
                    break;
                }
            }
            let formed = formed.unwrap_or_else(|| panic!("seed {seed}: no convergence in 30 rounds"));
            // Let the detectors learn the rhythm, then crash a non-seed node.
            sim.run_until((formed + 30) * 1000, |_, s| {
                assert!(
                    !s.events.iter().any(|e| matches!(e, Output::NodeDown(_))),
                    "seed {seed}: {s:?}"
                );
            });
            let victim = 17;
            let dead = Sim::id(victim);
            let killed_at = sim.now();
            sim.kill(victim);
            let mut down = vec![false; sim.len()];
            sim.run_until(killed_at + 60_000, |_, s| {
                for e in &s.events {
                    match e {
                        Output::NodeDown(id) => {
                            assert_eq!(*id, dead, "seed {seed}: false conviction at {}", s.time_ms);
                            down[s.node] = true;
                        }
                        Output::NodeUp(id) => assert_ne!(*id, dead, "seed {seed}: the dead came back"),
                        _ => {}
                    }
                }
            });
            let missing: Vec<usize> = (0..sim.len()).filter(|&i| i != victim && !down[i]).collect();
            assert!(missing.is_empty(), "seed {seed}: never convicted by {missing:?}");
            assert!(sim.converged(), "seed {seed}");
        }
    }
}
