//! The gossiper: Cassandra-style anti-entropy gossip plus SWIM-style indirect
//! probes, as a state machine without I/O.
//!
//! The driver (the server's core 0, or the simulator) calls [`Gossiper::tick`]
//! no later than [`Gossiper::next_deadline`] and [`Gossiper::on_message`] for
//! each message received, and carries out the returned [`Output`]s: messages to
//! send (by address) and membership events.
//!
//! ## A round (every `interval_ms`, default 1 s)
//!
//! 1. Bump our heartbeat.
//! 2. SYN (our digests) to `fanout` random live peers; each SYN is also a
//!    direct probe of that peer.
//! 3. With probability `down / (live + 1)`, a SYN to a random node believed
//!    down (how a healed partition is noticed); and a SYN to a random seed when
//!    nobody is live, or with probability `seeds / (live + down)` when no seed
//!    was picked (Cassandra's rule: seeds keep the cluster from splitting into
//!    islands that never hear of each other).
//!
//! The peer answers ACK (the deltas we lack, and digests of what it lacks);
//! we answer ACK2 with those. One exchange thus reconciles both sides fully
//! (push-pull), which is what spreads a heartbeat to N nodes in about log N
//! rounds.
//!
//! ## Heartbeats
//!
//! Our heartbeat grows once per round and, with `beat_on_answer` (default),
//! on every SYN or PING we answer: an answer proves we are alive at that
//! moment and carries the new value. The detector judges silence against the
//! rhythm it observes (with the exponential model, threshold 8 is about 18.4
//! mean gaps), so fresher evidence arriving more often convicts a dead node
//! sooner without more false convictions: the rhythm it learns is the real
//! one. How often evidence reaches a node is set by how many exchanges it takes
//! part in per round, hence `fanout`: `ring-sim` in the bench crate measures
//! both (bench/RESULTS-ring.md).
//!
//! ## Indirect probes
//!
//! A SYN not ACKed within `probe_timeout_ms` makes us ask `indirect_probes`
//! other live peers to PING the target for us (PING-REQ); an answer comes back
//! as an INDIRECT-ACK with the target's fresh heartbeat. A lossy or broken link
//! between two live nodes then delays nobody's view of the target.
//!
//! ## Up and down
//!
//! Every growth of a peer's heartbeat, from whatever source, is a heartbeat
//! arrival for the [phi-accrual detector](super::phi). A live peer whose phi
//! passes the threshold is convicted: [`Output::NodeDown`]. A node comes up
//! only when it answers an *echo* (a PING we send it directly) as Cassandra
//! does: gossip about its heartbeat may be old news relayed by others, so it
//! only triggers the echo. New nodes start this way too. Convictions are local,
//! never gossiped (see [`MemberStatus`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::Rng;

use super::phi::{ArrivalWindow, PhiAccrual, PhiConfig};
use super::state::{ClusterState, Deltas, Digest, MemberStatus, Merged, NodeState, ShardPorts, Versioned};
use crate::topology::{Node, NodeId, NodeStatus, Token};

/// Relayed probes held at once (PING-REQs we act on): a limit, so a flood of
/// requests cannot grow memory.
const MAX_RELAYS: usize = 64;
/// Direct probes awaiting an answer at once.
const MAX_PROBES: usize = 64;

/// Gossip settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    /// Time between rounds (default 1000 ms).
    pub interval_ms: u64,
    /// The failure detector (threshold 8 by default).
    pub phi: PhiConfig,
    /// Seed addresses (`host:port`), from the configuration.
    pub seeds: Vec<String>,
    /// Live peers asked to probe an unresponsive one (default 3).
    pub indirect_probes: usize,
    /// How long a SYN may go un-ACKed before indirect probes (default 500 ms).
    pub probe_timeout_ms: u64,
    /// Live peers sent a SYN each round (default 3, as memberlist's
    /// `GossipNodes`; Cassandra uses 1). Each node then takes part in about
    /// six exchanges a round, so heartbeat evidence reaches it every ~0.65 s
    /// instead of every ~0.95 s, and phi 8 convicts a crashed node everywhere
    /// in ~17 rounds at 1000 nodes instead of ~28 (bench/RESULTS-ring.md).
    /// The price: three times the gossip messages.
    pub fanout: usize,
    /// The most nodes the cluster state accepts (default 10 000): a bound on
    /// what gossip from a confused or hostile peer can make us hold.
    pub max_nodes: usize,
    /// Also bump the heartbeat when answering a SYN or a PING, not only once
    /// per round (default on; see the module docs).
    pub beat_on_answer: bool,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval_ms: 1000,
            phi: PhiConfig::default(),
            seeds: Vec::new(),
            indirect_probes: 3,
            probe_timeout_ms: 500,
            fanout: 3,
            max_nodes: 10_000,
            beat_on_answer: true,
        }
    }
}

/// This node's own announced state, at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// Stable identity.
    pub id: NodeId,
    /// Where peers reach it (`host:port`); also where gossip is sent to it.
    pub address: String,
    /// Data center.
    pub dc: String,
    /// Rack, when racks are configured.
    pub rack: Option<String>,
    /// Vnode tokens; empty until chosen (not announced then).
    pub tokens: Vec<Token>,
    /// Life-cycle status.
    pub status: MemberStatus,
    /// Shard-aware ports, if any.
    pub shard: Option<ShardPorts>,
}

impl LocalNode {
    /// A `Normal` node in `dc1`, no rack, no tokens, no shard ports.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        LocalNode {
            id: NodeId(id.into()),
            address: address.into(),
            dc: "dc1".to_owned(),
            rack: None,
            tokens: Vec::new(),
            status: MemberStatus::Normal,
            shard: None,
        }
    }
}

/// A gossip message with its sender. The sender's address rides along so a
/// node can answer one it has never heard of (a seed's first contact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's id.
    pub from: NodeId,
    /// The sender's gossip address.
    pub from_address: String,
    /// What it says.
    pub body: Body,
}

/// The gossip messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Round opener: the sender's digests; `seq` matches the ACK to the probe.
    Syn {
        /// Probe number, echoed in the ACK.
        seq: u64,
        /// One per node the sender knows.
        digests: Vec<Digest>,
    },
    /// Answer to a SYN: what the SYN's sender lacks, and what we lack.
    Ack {
        /// The SYN's `seq`.
        seq: u64,
        /// States (whole or partial) the SYN's sender lacks.
        deltas: Deltas,
        /// What we lack, as digests of what we have.
        requests: Vec<Digest>,
    },
    /// Answer to an ACK's requests.
    Ack2 {
        /// The states asked for.
        deltas: Deltas,
    },
    /// Are you there? (an echo, or a probe on someone's behalf)
    Ping {
        /// Echoed in the answer.
        seq: u64,
    },
    /// Yes: the answerer's current generation and heartbeat.
    PingAck {
        /// The PING's `seq`.
        seq: u64,
        /// The answerer's generation.
        generation: u64,
        /// The answerer's heartbeat.
        heartbeat: u64,
    },
    /// Please PING `target` for me (it did not answer my SYN).
    PingReq {
        /// Echoed in the INDIRECT-ACK.
        seq: u64,
        /// The node to probe.
        target: NodeId,
    },
    /// `target` answered the PING made on your behalf.
    IndirectAck {
        /// The PING-REQ's `seq`.
        seq: u64,
        /// The node that answered.
        target: NodeId,
        /// Its generation.
        generation: u64,
        /// Its heartbeat.
        heartbeat: u64,
    },
    /// The sender is shutting down (a drain): take it for down now, in this
    /// generation, instead of waiting for the failure detector.
    Shutdown {
        /// The sender's generation (a restart brings a larger one, which
        /// brings the node back up through the usual echo).
        generation: u64,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to the gossip address `to`.
    Send {
        /// `host:port`.
        to: String,
        /// The message.
        msg: Message,
    },
    /// The node answered an echo: it is up.
    NodeUp(NodeId),
    /// The failure detector convicted the node.
    NodeDown(NodeId),
    /// The node's announced state (address, tokens, status...) changed.
    StateChanged(NodeId),
}

/// A SYN awaiting its ACK.
#[derive(Debug, Clone)]
struct Probe {
    target: NodeId,
    seq: u64,
    deadline_ms: u64,
}

/// A PING we sent for someone else's PING-REQ.
#[derive(Debug, Clone)]
struct Relay {
    /// Our PING's seq.
    seq: u64,
    target: NodeId,
    origin: String,
    origin_seq: u64,
    deadline_ms: u64,
}

/// One node's gossip and failure detection.
#[derive(Debug, Clone)]
pub struct Gossiper {
    config: GossipConfig,
    id: NodeId,
    address: String,
    generation: u64,
    state: ClusterState,
    /// Our last entry version.
    version: u64,
    detector: PhiAccrual,
    /// Peers that answered an echo and are not convicted since.
    live: BTreeSet<NodeId>,
    /// Peers convicted, or heard of but not yet answering an echo. Nodes that
    /// left are in neither set.
    down: BTreeSet<NodeId>,
    /// Outstanding echo per node (its seq).
    echoes: BTreeMap<NodeId, u64>,
    next_gossip_ms: Option<u64>,
    seq: u64,
    probes: Vec<Probe>,
    relays: Vec<Relay>,
    /// Set by [`Gossiper::shut_down`]: no more rounds, no more answers.
    shut_down: bool,
}

impl Gossiper {
    /// A gossiper for `local`, started at `generation`. The generation must
    /// grow across restarts of the node (the start time in ms does, given a
    /// sane clock; the server should also persist the last one and take the
    /// larger of it + 1 and the clock).
    pub fn new(config: GossipConfig, local: LocalNode, generation: u64) -> Self {
        let mut own = NodeState::new(generation);
        let mut version = 0;
        let mut next = || {
            version += 1;
            version
        };
        own.address = Some(Versioned::new(next(), local.address.clone()));
        own.dc = Some(Versioned::new(next(), local.dc));
        own.rack = local.rack.map(|r| Versioned::new(next(), r));
        if !local.tokens.is_empty() {
            own.tokens = Some(Versioned::new(next(), Arc::from(local.tokens)));
        }
        own.status = Some(Versioned::new(next(), local.status));
        own.shard = local.shard.map(|s| Versioned::new(next(), s));
        let version = own.max_version();
        let mut state = ClusterState::new();
        state.merge_node(&local.id, &own);
        Gossiper {
            detector: PhiAccrual::new(config.phi.clone()),
            config,
            id: local.id,
            address: local.address,
            generation,
            state,
            version,
            live: BTreeSet::new(),
            down: BTreeSet::new(),
            echoes: BTreeMap::new(),
            next_gossip_ms: None,
            seq: 0,
            probes: Vec::new(),
            relays: Vec::new(),
            shut_down: false,
        }
    }

    /// Our id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Our gossip address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Our generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The settings.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Everything we know.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Whether `id` is us or a live peer.
    pub fn is_alive(&self, id: &NodeId) -> bool {
        *id == self.id || self.live.contains(id)
    }

    /// Live peers (not us).
    pub fn live(&self) -> impl Iterator<Item = &NodeId> {
        self.live.iter()
    }

    /// Peers convicted or not yet confirmed up (not us, not nodes that left).
    pub fn down(&self) -> impl Iterator<Item = &NodeId> {
        self.down.iter()
    }

    /// The failure detector's phi for `id` at `now_ms`.
    pub fn phi(&self, id: &NodeId, now_ms: u64) -> f64 {
        self.detector.phi(id, now_ms)
    }

    /// The failure detector's inter-arrival statistics for `id`.
    pub fn arrivals(&self, id: &NodeId) -> Option<&ArrivalWindow> {
        self.detector.window(id)
    }

    /// When the next [`Gossiper::tick`] is due: the next round, or an earlier
    /// probe or relay deadline. Ticking more often is harmless.
    pub fn next_deadline(&self) -> u64 {
        let mut t = self.next_gossip_ms.unwrap_or(0);
        for p in &self.probes {
            t = t.min(p.deadline_ms);
        }
        for r in &self.relays {
            t = t.min(r.deadline_ms);
        }
        t
    }

    /// Begins this node's shutdown (a drain): returns a SHUTDOWN message to
    /// every live peer, which then takes us for down at once. From now on
    /// the gossiper sends nothing and answers nothing: an answer (a PING
    /// echo) would bring us back up in a peer's view while we stop.
    pub fn shut_down(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.shut_down {
            return out;
        }
        self.shut_down = true;
        let peers: Vec<String> = self.live.iter().filter_map(|id| self.address_of(id)).collect();
        for to in peers {
            self.send(
                to,
                Body::Shutdown {
                    generation: self.generation,
                },
                &mut out,
            );
        }
        out
    }

    /// Whether [`Gossiper::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// Announces a new status (a version bump; gossip spreads it).
    pub fn set_status(&mut self, status: MemberStatus) {
        let version = self.bump_version();
        if let Some(own) = self.state.get_mut(&self.id) {
            own.status = Some(Versioned::new(version, status));
        }
    }

    /// Removes a dead node from the ring on its behalf (`corekv removenode`):
    /// its status becomes `Left` at a version above any it announced, in its
    /// current generation, so gossip spreads the removal as if the node had
    /// said it. If the node comes back, its new generation replaces this.
    /// Refused (false) for ourselves, an unknown node, or one we believe up.
    pub fn remove_node(&mut self, id: &NodeId) -> bool {
        if *id == self.id || self.is_alive(id) {
            return false;
        }
        let Some(s) = self.state.get_mut(id) else {
            return false;
        };
        let version = s.max_version() + 1;
        s.status = Some(Versioned::new(version, MemberStatus::Left));
        true
    }

    /// Takes in what an earlier run of this node knew of its peers (see
    /// [`Gossiper::peer_states`]), each believed down until it answers an
    /// echo. Without it a restarted node's ring would hold only itself until
    /// gossip caught up, and it would coordinate QUORUM and CAS requests
    /// against a replica set of one. Entries merge as gossip does, so
    /// anything fresher heard later wins. Returns how many peers it added or
    /// changed.
    pub fn restore(&mut self, saved: &[(NodeId, NodeState)]) -> usize {
        let mut changed = 0;
        for (id, s) in saved {
            if *id == self.id || !self.state.merge_node(id, s).any() {
                continue;
            }
            changed += 1;
            let left = self.state.get(id).and_then(NodeState::status) == Some(MemberStatus::Left);
            if !left && !self.live.contains(id) {
                self.down.insert(id.clone());
            }
        }
        changed
    }

    /// Every peer's state as we know it (not ours: a restart announces a new
    /// generation), for [`Gossiper::restore`] after a restart.
    pub fn peer_states(&self) -> Deltas {
        self.state
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect()
    }

    /// Announces our tokens (chosen when joining).
    pub fn set_tokens(&mut self, tokens: Vec<Token>) {
        let version = self.bump_version();
        if let Some(own) = self.state.get_mut(&self.id) {
            own.tokens = Some(Versioned::new(version, Arc::from(tokens)));
        }
    }

    fn bump_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The ring's input: every node that announced an address and tokens and
    /// has not left, with its tokens, and status `Down` where we believe so.
    pub fn ring_nodes(&self) -> Vec<Node> {
        self.state
            .iter()
            .filter_map(|(id, s)| {
                let status = match s.status()? {
                    MemberStatus::Left => return None,
                    _ if !self.is_alive(id) => NodeStatus::Down,
                    MemberStatus::Joining => NodeStatus::Joining,
                    MemberStatus::Normal => NodeStatus::Normal,
                    MemberStatus::Leaving => NodeStatus::Leaving,
                };
                Some(Node {
                    id: id.clone(),
                    address: s.address.as_ref()?.value.clone(),
                    dc: s.dc.as_ref().map_or_else(|| "dc1".to_owned(), |e| e.value.clone()),
                    rack: s.rack.as_ref().map(|e| e.value.clone()),
                    status,
                    tokens: Some(s.tokens.as_ref()?.value.to_vec()),
                })
            })
            .collect()
    }

    fn address_of(&self, id: &NodeId) -> Option<String> {
        Some(self.state.get(id)?.address.as_ref()?.value.clone())
    }

    fn send(&self, to: String, body: Body, out: &mut Vec<Output>) {
        out.push(Output::Send {
            to,
            msg: Message {
                from: self.id.clone(),
                from_address: self.address.clone(),
                body,
            },
        });
    }

    /// Advances time: a gossip round when one is due, indirect probes for
    /// SYNs past their timeout, and convictions (checked on every tick, so at
    /// least once a round, as Cassandra's status check).
    pub fn tick<R: Rng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> Vec<Output> {
        let mut out = Vec::new();
        if self.shut_down {
            return out;
        }
        self.expire_probes(now_ms, rng, &mut out);
        self.relays.retain(|r| r.deadline_ms > now_ms);
        if self.next_gossip_ms.is_none_or(|t| now_ms >= t) {
            // Fixed delay, as Cassandra: a late tick delays the next round
            // rather than bunching two together.
            self.next_gossip_ms = Some(now_ms + self.config.interval_ms);
            self.round(now_ms, rng, &mut out);
        }
        let mut convicted: Vec<NodeId> = self
            .detector
            .convicted(now_ms)
            .filter(|id| self.live.contains(*id))
            .cloned()
            .collect();
        // The detector's order is a hash map's: sort, so runs replay exactly.
        convicted.sort_unstable();
        for id in convicted {
            self.live.remove(&id);
            self.down.insert(id.clone());
            out.push(Output::NodeDown(id));
        }
        out
    }

    /// Bumps our heartbeat: we are demonstrably alive now.
    fn beat(&mut self) {
        if let Some(own) = self.state.get_mut(&self.id) {
            own.heartbeat += 1;
        }
    }

    fn round<R: Rng + ?Sized>(&mut self, now_ms: u64, rng: &mut R, out: &mut Vec<Output>) {
        self.beat();
        let digests = self.state.digests();
        let live: Vec<&NodeId> = self.live.iter().collect();
        let targets: Vec<NodeId> = live
            .choose_multiple(rng, self.config.fanout)
            .map(|id| (*id).clone())
            .collect();
        let mut seed_contacted = false;
        for target in &targets {
            let Some(to) = self.address_of(target) else { continue };
            seed_contacted |= self.config.seeds.contains(&to);
            let seq = self.next_seq();
            if self.probes.len() < MAX_PROBES {
                self.probes.push(Probe {
                    target: target.clone(),
                    seq,
                    deadline_ms: now_ms + self.config.probe_timeout_ms,
                });
            }
            self.send(
                to,
                Body::Syn {
                    seq,
                    digests: digests.clone(),
                },
                out,
            );
        }
        let (n_live, n_down) = (self.live.len() as f64, self.down.len() as f64);
        if !self.down.is_empty() && rng.gen::<f64>() < n_down / (n_live + 1.0) {
            let down: Vec<&NodeId> = self.down.iter().collect();
            if let Some(to) = down.choose(rng).and_then(|id| self.address_of(id)) {
                let seq = self.next_seq();
                self.send(
                    to,
                    Body::Syn {
                        seq,
                        digests: digests.clone(),
                    },
                    out,
                );
            }
        }
        let seeds: Vec<&String> = self.config.seeds.iter().filter(|s| **s != self.address).collect();
        let to_seed = if self.live.is_empty() {
            true
        } else {
            !seed_contacted && rng.gen::<f64>() < seeds.len() as f64 / (n_live + n_down)
        };
        if to_seed {
            if let Some(to) = seeds.choose(rng).map(|s| (*s).clone()) {
                let seq = self.next_seq();
                self.send(to, Body::Syn { seq, digests }, out);
            }
        }
    }

    /// SYNs past their timeout: ask others to probe the silent peer.
    fn expire_probes<R: Rng + ?Sized>(&mut self, now_ms: u64, rng: &mut R, out: &mut Vec<Output>) {
        let (expired, pending): (Vec<Probe>, Vec<Probe>) = self.probes.drain(..).partition(|p| p.deadline_ms <= now_ms);
        self.probes = pending;
        for p in expired {
            // Only a peer still believed live is worth the trouble.
            if !self.live.contains(&p.target) {
                continue;
            }
            let others: Vec<&NodeId> = self.live.iter().filter(|id| **id != p.target).collect();
            let helpers: Vec<String> = others
                .choose_multiple(rng, self.config.indirect_probes)
                .filter_map(|id| self.address_of(id))
                .collect();
            for to in helpers {
                self.send(
                    to,
                    Body::PingReq {
                        seq: p.seq,
                        target: p.target.clone(),
                    },
                    out,
                );
            }
        }
    }

    /// Handles one received message.
    pub fn on_message(&mut self, msg: Message, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if msg.from == self.id || self.shut_down {
            return out;
        }
        let Message {
            from,
            from_address,
            body,
        } = msg;
        match body {
            Body::Syn { seq, mut digests } => {
                if self.config.beat_on_answer {
                    self.beat();
                }
                digests.truncate(self.config.max_nodes);
                let (deltas, mut requests) = self.state.answer_syn(&digests);
                // We are the only authority on our own state.
                requests.retain(|d| d.id != self.id);
                self.send(from_address, Body::Ack { seq, deltas, requests }, &mut out);
            }
            Body::Ack {
                seq,
                deltas,
                mut requests,
            } => {
                self.probes.retain(|p| !(p.seq == seq && p.target == from));
                self.apply(deltas, now_ms, &mut out);
                requests.truncate(self.config.max_nodes);
                let deltas = self.state.deltas_for(&requests);
                if !deltas.is_empty() {
                    self.send(from_address, Body::Ack2 { deltas }, &mut out);
                }
            }
            Body::Ack2 { deltas } => self.apply(deltas, now_ms, &mut out),
            Body::Ping { seq } => {
                if self.config.beat_on_answer {
                    self.beat();
                }
                let heartbeat = self.state.get(&self.id).map_or(0, |s| s.heartbeat);
                let generation = self.generation;
                self.send(
                    from_address,
                    Body::PingAck {
                        seq,
                        generation,
                        heartbeat,
                    },
                    &mut out,
                );
            }
            Body::PingAck {
                seq,
                generation,
                heartbeat,
            } => {
                if let Some(i) = self.relays.iter().position(|r| r.seq == seq && r.target == from) {
                    let r = self.relays.swap_remove(i);
                    self.heartbeat_of(&from, generation, heartbeat, now_ms, &mut out);
                    self.send(
                        r.origin,
                        Body::IndirectAck {
                            seq: r.origin_seq,
                            target: from,
                            generation,
                            heartbeat,
                        },
                        &mut out,
                    );
                } else if self.echoes.get(&from) == Some(&seq) {
                    self.echoes.remove(&from);
                    self.heartbeat_of(&from, generation, heartbeat, now_ms, &mut out);
                    if self.down.remove(&from) {
                        self.live.insert(from.clone());
                        out.push(Output::NodeUp(from));
                    }
                }
            }
            Body::PingReq { seq, target } => {
                if target == self.id {
                    // The requester cannot reach us directly, but this got here.
                    let heartbeat = self.state.get(&self.id).map_or(0, |s| s.heartbeat);
                    let generation = self.generation;
                    self.send(
                        from_address,
                        Body::IndirectAck {
                            seq,
                            target,
                            generation,
                            heartbeat,
                        },
                        &mut out,
                    );
                } else if self.relays.len() < MAX_RELAYS {
                    if let Some(to) = self.address_of(&target) {
                        let my_seq = self.next_seq();
                        self.relays.push(Relay {
                            seq: my_seq,
                            target,
                            origin: from_address,
                            origin_seq: seq,
                            deadline_ms: now_ms + self.config.probe_timeout_ms,
                        });
                        self.send(to, Body::Ping { seq: my_seq }, &mut out);
                    }
                }
            }
            Body::IndirectAck {
                seq,
                target,
                generation,
                heartbeat,
            } => {
                self.probes.retain(|p| !(p.seq == seq && p.target == target));
                self.heartbeat_of(&target, generation, heartbeat, now_ms, &mut out);
            }
            Body::Shutdown { generation } => {
                // Only the generation we know: a late SHUTDOWN of an earlier
                // run must not take down the node that restarted since.
                let known = self.state.get(&from).map(|s| s.generation) == Some(generation);
                if known && self.live.remove(&from) {
                    self.down.insert(from.clone());
                    self.echoes.remove(&from);
                    self.probes.retain(|p| p.target != from);
                    out.push(Output::NodeDown(from));
                }
            }
        }
        out
    }

    /// A heartbeat learned outside the digest exchange (a probe answer).
    /// Merged only within the generation we know: a new generation must come
    /// with its whole state, through gossip.
    fn heartbeat_of(&mut self, id: &NodeId, generation: u64, heartbeat: u64, now_ms: u64, out: &mut Vec<Output>) {
        if *id == self.id || self.state.get(id).map(|s| s.generation) != Some(generation) {
            return;
        }
        let only = NodeState {
            heartbeat,
            ..NodeState::new(generation)
        };
        let m = self.state.merge_node(id, &only);
        self.observe(id, m, now_ms, out);
    }

    fn apply(&mut self, mut deltas: Deltas, now_ms: u64, out: &mut Vec<Output>) {
        deltas.truncate(self.config.max_nodes);
        for (id, s) in deltas {
            if id == self.id {
                continue;
            }
            // (Length first: the lookup is only needed at the limit.)
            if self.state.len() >= self.config.max_nodes && self.state.get(&id).is_none() {
                continue;
            }
            let m = self.state.merge_node(&id, &s);
            self.observe(&id, m, now_ms, out);
        }
    }

    /// Reacts to a merge that changed `id`'s state.
    fn observe(&mut self, id: &NodeId, m: Merged, now_ms: u64, out: &mut Vec<Output>) {
        if !m.any() {
            return;
        }
        // Status only changes with the entries (or a new generation).
        let left =
            (m.entries || m.generation) && self.state.get(id).and_then(NodeState::status) == Some(MemberStatus::Left);
        if left {
            // Gone for good: stop watching it (no NodeDown: it did not fail).
            self.live.remove(id);
            self.down.remove(id);
            self.echoes.remove(id);
            self.detector.remove(id);
        } else if m.generation {
            // New, or restarted: its old rhythm means nothing.
            self.detector.remove(id);
            self.detector.heartbeat(id, now_ms);
            if !self.live.contains(id) {
                self.down.insert(id.clone());
                self.echo(id, out);
            }
        } else if m.heartbeat {
            self.detector.heartbeat(id, now_ms);
            if self.down.contains(id) {
                self.echo(id, out);
            }
        }
        if m.entries {
            out.push(Output::StateChanged(id.clone()));
        }
    }

    /// PINGs a node we do not believe up; its answer brings it up.
    fn echo(&mut self, id: &NodeId, out: &mut Vec<Output>) {
        let Some(to) = self.address_of(id) else { return };
        let seq = self.next_seq();
        self.echoes.insert(id.clone(), seq);
        self.send(to, Body::Ping { seq }, out);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::SmallRng {
        rand::rngs::SmallRng::seed_from_u64(1)
    }

    fn node(i: usize, seeds: &[&str]) -> Gossiper {
        let config = GossipConfig {
            seeds: seeds.iter().map(|s| s.to_string()).collect(),
            ..GossipConfig::default()
        };
        let mut local = LocalNode::new(format!("n{i}"), format!("a{i}"));
        local.tokens = vec![i as u64 * 100, i as u64 * 100 + 50];
        Gossiper::new(config, local, 1000 + i as u64)
    }

    /// Delivers every Send at once (no loss, no delay) until quiet; returns
    /// the events, tagged with the node that emitted them.
    fn deliver(
        nodes: &mut [Gossiper],
        mut out: Vec<(usize, Output)>,
        now: u64,
        drop: &dyn Fn(usize, usize) -> bool,
    ) -> Vec<(usize, Output)> {
        let mut events = Vec::new();
        while let Some((from, o)) = out.pop() {
            match o {
                Output::Send { to, msg } => {
                    let Some(i) = nodes.iter().position(|n| n.address() == to) else {
                        continue;
                    };
                    if drop(from, i) {
                        continue;
                    }
                    out.extend(nodes[i].on_message(msg, now).into_iter().map(|o| (i, o)));
                }
                e => events.push((from, e)),
            }
        }
        events
    }

    fn tick_all(
        nodes: &mut [Gossiper],
        now: u64,
        rng: &mut rand::rngs::SmallRng,
        drop: &dyn Fn(usize, usize) -> bool,
    ) -> Vec<(usize, Output)> {
        let mut out = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            out.extend(n.tick(now, rng).into_iter().map(|o| (i, o)));
        }
        deliver(nodes, out, now, drop)
    }

    #[test]
    fn first_round_goes_to_a_seed() {
        let mut n = node(1, &["a0", "a1"]);
        let out = n.tick(0, &mut rng());
        assert_eq!(out.len(), 1, "{out:?}");
        let Output::Send { to, msg } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(to, "a0", "never itself");
        let Body::Syn { digests, .. } = &msg.body else { panic!() };
        assert_eq!(digests.len(), 1);
        assert_eq!((digests[0].generation, digests[0].heartbeat), (1001, 1));
        assert_eq!(n.next_deadline(), 1000);
        assert!(n.tick(999, &mut rng()).is_empty(), "not due yet");
    }

    #[test]
    fn a_shutdown_announcement_takes_the_node_down_at_once_until_it_restarts() {
        let mut rng = rng();
        let keep = |_: usize, _: usize| false;
        let mut nodes: Vec<Gossiper> = (0..3).map(|i| node(i, &["a0"])).collect();
        for r in 0..10 {
            tick_all(&mut nodes, r * 1000, &mut rng, &keep);
        }
        assert!(nodes[0].is_alive(&NodeId::from("n2")) && nodes[1].is_alive(&NodeId::from("n2")));
        let out: Vec<(usize, Output)> = nodes[2].shut_down().into_iter().map(|o| (2, o)).collect();
        assert_eq!(out.len(), 2, "one SHUTDOWN per live peer: {out:?}");
        assert!(nodes[2].shut_down().is_empty(), "announced once");
        let events = deliver(&mut nodes, out, 10_000, &keep);
        let downs: Vec<usize> = events
            .iter()
            .filter_map(|(at, e)| matches!(e, Output::NodeDown(id) if id.0 == "n2").then_some(*at))
            .collect();
        assert_eq!(downs, vec![1, 0], "both peers convict n2 without waiting for phi");
        // A few more rounds: the draining node sends and answers nothing, so
        // no echo brings it back.
        for r in 11..14 {
            let events = tick_all(&mut nodes, r * 1000, &mut rng, &keep);
            assert!(
                !events
                    .iter()
                    .any(|(_, e)| matches!(e, Output::NodeUp(id) if id.0 == "n2")),
                "{events:?}"
            );
            assert!(!nodes[0].is_alive(&NodeId::from("n2")));
        }
        // A stale SHUTDOWN of an older generation does not take a node down.
        let stale = Message {
            from: NodeId::from("n1"),
            from_address: "a1".into(),
            body: Body::Shutdown { generation: 1 },
        };
        assert!(nodes[0].on_message(stale, 14_000).is_empty());
        assert!(nodes[0].is_alive(&NodeId::from("n1")));
        // The restart: a new generation comes up through the echo.
        let mut local = LocalNode::new("n2", "a2");
        local.tokens = vec![200, 250];
        nodes[2] = Gossiper::new(
            GossipConfig {
                seeds: vec!["a0".into()],
                ..GossipConfig::default()
            },
            local,
            50_000,
        );
        let mut up = false;
        for r in 15..25 {
            let events = tick_all(&mut nodes, r * 1000, &mut rng, &keep);
            up |= events
                .iter()
                .any(|(at, e)| *at == 0 && matches!(e, Output::NodeUp(id) if id.0 == "n2"));
        }
        assert!(
            up && nodes[0].is_alive(&NodeId::from("n2")),
            "the restarted node is up again"
        );
    }

    #[test]
    fn a_restarted_node_starts_with_the_peers_it_knew_down_until_they_answer() {
        let mut rng = rng();
        let keep = |_: usize, _: usize| false;
        let mut nodes: Vec<Gossiper> = (0..3).map(|i| node(i, &["a0"])).collect();
        for r in 0..10 {
            tick_all(&mut nodes, r * 1000, &mut rng, &keep);
        }
        let saved = nodes[1].peer_states();
        assert_eq!(saved.len(), 2, "both peers, not itself");
        assert!(saved.iter().all(|(id, _)| id.0 != "n1"));

        // Node 1 restarts: a new generation, and without the saved state its
        // ring is itself alone (the bug: QUORUM among replicas of one).
        let fresh = |generation| {
            let mut local = LocalNode::new("n1", "a1");
            local.tokens = vec![100, 150];
            Gossiper::new(
                GossipConfig {
                    seeds: vec!["a0".into()],
                    ..GossipConfig::default()
                },
                local,
                generation,
            )
        };
        assert_eq!(fresh(5000).ring_nodes().len(), 1);
        let mut back = fresh(5000);
        assert_eq!(back.restore(&saved), 2);
        let ring = back.ring_nodes();
        assert_eq!(ring.len(), 3, "{ring:?}");
        for n in ring.iter().filter(|n| n.id.0 != "n1") {
            assert_eq!(n.status, NodeStatus::Down, "{} is down until it answers", n.id);
        }
        assert_eq!(back.down().count(), 2);
        assert_eq!(back.restore(&saved), 0, "restoring twice changes nothing");

        // Gossip brings the peers up.
        nodes[1] = back;
        for r in 10..20 {
            tick_all(&mut nodes, 5000 + r * 1000, &mut rng, &keep);
        }
        assert_eq!(nodes[1].live().count(), 2);
        assert!(nodes[1].ring_nodes().iter().all(|n| n.status == NodeStatus::Normal));
    }

    #[test]
    fn a_saved_peer_that_left_stays_out_of_the_ring() {
        let mut a = node(0, &[]);
        let mut gone = NodeState::new(7);
        gone.address = Some(Versioned::new(1, "a9".to_owned()));
        gone.tokens = Some(Versioned::new(2, Arc::from(vec![900u64])));
        gone.status = Some(Versioned::new(3, MemberStatus::Left));
        assert_eq!(a.restore(&[(NodeId::from("n9"), gone)]), 1);
        assert_eq!(a.down().count(), 0);
        assert_eq!(a.ring_nodes().len(), 1);
    }

    #[test]
    fn three_nodes_converge_then_detect_a_death() {
        let mut rng = rng();
        let mut nodes: Vec<Gossiper> = (0..3).map(|i| node(i, &["a0"])).collect();
        let keep = |_: usize, _: usize| false;
        let mut ups = 0;
        for r in 0..10 {
            for (_, e) in tick_all(&mut nodes, r * 1000, &mut rng, &keep) {
                ups += usize::from(matches!(e, Output::NodeUp(_)));
            }
        }
        assert_eq!(ups, 6, "each node saw the two others come up once");
        for n in &nodes {
            assert_eq!(n.live().count(), 2);
            // Same entries everywhere (heartbeats differ by a round or so).
            for (id, s) in nodes[0].state().iter() {
                let mine = n.state().get(id).unwrap();
                assert_eq!(
                    (mine.generation, mine.max_version(), &mine.tokens),
                    (s.generation, s.max_version(), &s.tokens)
                );
            }
            let ring = crate::topology::Ring::new(n.ring_nodes(), 1).unwrap();
            assert_eq!(ring.vnodes().len(), 6, "everyone's tokens");
        }
        // n2 dies at 10 s: the others convict it by phi alone, once the
        // silence since its last heartbeat passes 8 ln 10 x the mean
        // inter-arrival (checked on the next tick, 1 s later at most).
        let n2 = NodeId::from("n2");
        let dead = |from: usize, to: usize| from == 2 || to == 2;
        let mut down_at = Vec::new();
        for r in 10..60 {
            let mut out = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate().take(2) {
                out.extend(n.tick(r * 1000, &mut rng).into_iter().map(|o| (i, o)));
            }
            for (i, e) in deliver(&mut nodes, out, r * 1000, &dead) {
                if let Output::NodeDown(id) = e {
                    assert_eq!(id, n2);
                    down_at.push((i, r * 1000));
                }
            }
        }
        assert_eq!(down_at.len(), 2, "{down_at:?}");
        for &(i, t) in &down_at {
            let w = nodes[i].arrivals(&n2).unwrap();
            let silence = (t - w.last_ms()) as f64;
            let needed = 8.0 * std::f64::consts::LN_10 * w.mean();
            assert!(silence > needed && silence <= needed + 1000.0, "{silence} vs {needed}");
        }
        assert!(nodes[0]
            .ring_nodes()
            .iter()
            .any(|n| n.id.0 == "n2" && n.status == NodeStatus::Down));

        // It restarts with a new generation: back up after its first round.
        let mut reborn = LocalNode::new("n2", "a2");
        reborn.status = MemberStatus::Joining;
        nodes[2] = Gossiper::new(
            GossipConfig {
                seeds: vec!["a0".into()],
                ..GossipConfig::default()
            },
            reborn,
            99_999,
        );
        let mut changed = Vec::new();
        for r in 60..63 {
            for (i, e) in tick_all(&mut nodes, r * 1000, &mut rng, &keep) {
                match e {
                    Output::NodeUp(id) | Output::StateChanged(id) if id.0 == "n2" => changed.push(i),
                    _ => {}
                }
            }
        }
        assert!(changed.contains(&0) && changed.contains(&1), "{changed:?}");
        assert!(nodes[0].is_alive(&NodeId::from("n2")) && nodes[1].is_alive(&NodeId::from("n2")));
        let s = nodes[1].state().get(&NodeId::from("n2")).unwrap();
        assert_eq!((s.generation, s.status()), (99_999, Some(MemberStatus::Joining)));
        assert!(s.tokens.is_none(), "the old generation's tokens are gone");
    }

    #[test]
    fn status_changes_spread_and_left_nodes_leave_the_ring() {
        let mut rng = rng();
        let mut nodes: Vec<Gossiper> = (0..4).map(|i| node(i, &["a0"])).collect();
        let keep = |_: usize, _: usize| false;
        for r in 0..8 {
            tick_all(&mut nodes, r * 1000, &mut rng, &keep);
        }
        nodes[3].set_status(MemberStatus::Leaving);
        nodes[3].set_tokens(vec![7]);
        let mut seen = BTreeSet::new();
        for r in 8..16 {
            for (i, e) in tick_all(&mut nodes, r * 1000, &mut rng, &keep) {
                if e == Output::StateChanged(NodeId::from("n3")) {
                    seen.insert(i);
                }
            }
        }
        assert_eq!(seen, BTreeSet::from([0, 1, 2]));
        let ring = nodes[1].ring_nodes();
        let n3 = ring.iter().find(|n| n.id.0 == "n3").unwrap();
        assert_eq!((n3.status, n3.tokens.clone()), (NodeStatus::Leaving, Some(vec![7])));
        nodes[3].set_status(MemberStatus::Left);
        for r in 16..24 {
            tick_all(&mut nodes, r * 1000, &mut rng, &keep);
        }
        for n in &nodes[..3] {
            assert!(n.ring_nodes().iter().all(|n| n.id.0 != "n3"));
            assert!(!n.is_alive(&NodeId::from("n3")) && n.down().all(|d| d.0 != "n3"));
        }
    }

    /// The direct link 0 <-> 1 is cut: 0's SYNs to 1 time out, 0 asks the
    /// others, and the INDIRECT-ACKs carry 1's heartbeat back.
    #[test]
    fn indirect_probes_route_around_a_broken_link() {
        let mut rng = rng();
        let mut nodes: Vec<Gossiper> = (0..5).map(|i| node(i, &["a2"])).collect();
        let keep = |_: usize, _: usize| false;
        for r in 0..10 {
            tick_all(&mut nodes, r * 1000, &mut rng, &keep);
        }
        assert_eq!(nodes[0].live().count(), 4);
        let cut = |a: usize, b: usize| (a, b) == (0, 1) || (a, b) == (1, 0);
        let one = NodeId::from("n1");
        let (mut reqs, mut indirect) = (0, 0);
        for r in 10..40 {
            let now = r * 1000;
            let mut out = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                out.extend(n.tick(now, &mut rng).into_iter().map(|o| (i, o)));
            }
            deliver(&mut nodes, out, now, &cut);
            // The probe timeout, half a round later.
            let before = nodes[0].state().get(&one).unwrap().heartbeat;
            let out: Vec<_> = nodes[0].tick(now + 500, &mut rng).into_iter().map(|o| (0, o)).collect();
            for (_, o) in &out {
                if let Output::Send { msg, .. } = o {
                    reqs += usize::from(matches!(msg.body, Body::PingReq { .. }));
                }
            }
            deliver(&mut nodes, out, now + 500, &cut);
            indirect += usize::from(nodes[0].state().get(&one).unwrap().heartbeat > before);
        }
        assert!(reqs >= 3, "PING-REQs sent: {reqs}");
        assert!(indirect >= 1, "fresh heartbeats through helpers: {indirect}");
        assert!(nodes[0].is_alive(&one), "a cut link is not a dead node");
    }

    /// A peer cannot make us hold more than `max_nodes` nodes, however many
    /// digests or states it sends.
    #[test]
    fn cluster_state_is_bounded() {
        let config = GossipConfig {
            max_nodes: 3,
            ..GossipConfig::default()
        };
        let mut n = Gossiper::new(config, LocalNode::new("n0", "a0"), 1);
        let deltas: Deltas = (1..10)
            .map(|i| {
                let mut s = NodeState::new(5);
                s.address = Some(Versioned::new(1, format!("a{i}")));
                (NodeId(format!("x{i}")), s)
            })
            .collect();
        let digests: Vec<Digest> = deltas.iter().map(|(id, _)| Digest::nothing(id.clone())).collect();
        let from = |body| Message {
            from: NodeId::from("x1"),
            from_address: "a1".into(),
            body,
        };
        let out = n.on_message(from(Body::Syn { seq: 1, digests }), 0);
        let Some(Output::Send {
            msg: Message {
                body: Body::Ack { requests, .. },
                ..
            },
            ..
        }) = out.first()
        else {
            panic!("{out:?}")
        };
        assert_eq!(requests.len(), 3, "digests past the limit are not even read");
        n.on_message(from(Body::Ack2 { deltas }), 0);
        assert_eq!(n.state().len(), 3, "us and two others");
    }

    #[test]
    fn ping_req_for_oneself_answers_directly() {
        let mut n = node(1, &[]);
        let msg = Message {
            from: NodeId::from("n0"),
            from_address: "a0".into(),
            body: Body::PingReq {
                seq: 9,
                target: NodeId::from("n1"),
            },
        };
        let out = n.on_message(msg, 0);
        assert!(
            matches!(&out[..], [Output::Send { to, msg: Message { body: Body::IndirectAck { seq: 9, .. }, .. } }] if to == "a0")
        );
    }
}
