//! The cluster state: what every node believes about every node, merged by
//! gossip into the same answer everywhere without a coordinator.
//!
//! ## Model (Cassandra's `EndpointState`)
//!
//! Per node: a *generation* (set once per process start, e.g. the start time
//! in ms, so it grows across restarts), a *heartbeat* (a counter the node
//! bumps every gossip round) and application-state entries (address, dc, rack,
//! tokens, status, shard ports), each a [`Versioned`] value. Only the node
//! itself writes its entries, taking versions from one counter, so within a
//! generation a higher version is a later write.
//!
//! ## Merge (a join-semilattice, hence a CRDT)
//!
//! Per node: the higher generation wins whole (a restart starts afresh and the
//! old process's entries mean nothing). At equal generations the heartbeat is
//! the maximum and each entry the larger `(version, value)` pair; the value
//! only breaks ties no real node produces (two values under one version), so
//! that the merge is commutative even then. A lexicographic product of a chain
//! (generation) and a product of max-registers is a lattice: the merge is
//! commutative, associative and idempotent (proptested below).
//!
//! The heartbeat is kept apart from the entry versions, unlike Cassandra where
//! both come from one counter: a probe answer carries a fresher heartbeat alone,
//! and merging it must not make a digest claim entries the node does not have.
//!
//! ## Exchange
//!
//! A [`Digest`] `(id, generation, heartbeat, version)` summarises one node's
//! state in a few bytes. Because a delta always carries *every* entry newer
//! than the version asked for, and is merged whole, what a node knows of another
//! within a generation is always "everything up to my max version": the digest
//! is enough to compute exactly what the other side lacks.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::topology::{NodeId, Token};

/// A node's place in the cluster's life cycle, as the node itself announces
/// it. Liveness (up or down) is not here: each node judges it locally with its
/// failure detector, as Cassandra does, so a partitioned minority cannot
/// gossip the majority down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Streaming its future ranges in; takes writes, not reads.
    Joining,
    /// Owns its ranges and serves them.
    Normal,
    /// Streaming its ranges out before it goes.
    Leaving,
    /// Gone for good: its entry stays as a tombstone so that older gossip
    /// about it cannot bring it back.
    Left,
}

/// A node's shard-aware ports, as the RING response reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardPorts {
    /// Port of core 0; core `c` answers on `base + c`.
    pub base: u16,
    /// Number of cores (shards).
    pub cores: u16,
}

/// A value with the version its node wrote it at.
///
/// Ordered by version, then value: the merge keeps the larger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Versioned<T> {
    /// The node's version counter when it wrote the value.
    pub version: u64,
    /// The value.
    pub value: T,
}

impl<T> Versioned<T> {
    /// `value` at `version`.
    pub fn new(version: u64, value: T) -> Self {
        Versioned { version, value }
    }
}

/// What is known of one node. A field is `None` until the node has announced it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// Process start of the node (grows across restarts).
    pub generation: u64,
    /// Heartbeat counter within the generation.
    pub heartbeat: u64,
    /// Where peers and clients reach it (`host:port`).
    pub address: Option<Versioned<String>>,
    /// Data center.
    pub dc: Option<Versioned<String>>,
    /// Rack; absent when racks are not configured.
    pub rack: Option<Versioned<String>>,
    /// Vnode tokens in vnode-index order. Shared (`Arc`): the same list is
    /// copied into every delta and every peer's state.
    pub tokens: Option<Versioned<Arc<[Token]>>>,
    /// Life-cycle status.
    pub status: Option<Versioned<MemberStatus>>,
    /// Shard-aware ports.
    pub shard: Option<Versioned<ShardPorts>>,
}

/// What a merge changed in one node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Merged {
    /// The node was unknown, or restarted: a new generation replaced the state.
    pub generation: bool,
    /// The heartbeat grew.
    pub heartbeat: bool,
    /// At least one entry changed.
    pub entries: bool,
}

impl Merged {
    /// Whether anything changed.
    pub fn any(self) -> bool {
        self.generation || self.heartbeat || self.entries
    }
}

/// Keeps the larger of two versioned entries; whether `mine` changed.
fn join<T: Ord + Clone>(mine: &mut Option<Versioned<T>>, theirs: &Option<Versioned<T>>) -> bool {
    if *theirs > *mine {
        mine.clone_from(theirs);
        true
    } else {
        false
    }
}

/// `entry` if it is newer than `version`.
fn newer<T: Clone>(entry: &Option<Versioned<T>>, version: u64) -> Option<Versioned<T>> {
    entry.as_ref().filter(|e| e.version > version).cloned()
}

impl NodeState {
    /// An empty state of `generation`.
    pub fn new(generation: u64) -> Self {
        NodeState {
            generation,
            ..NodeState::default()
        }
    }

    /// The highest entry version (0 without entries).
    pub fn max_version(&self) -> u64 {
        [
            self.address.as_ref().map(|e| e.version),
            self.dc.as_ref().map(|e| e.version),
            self.rack.as_ref().map(|e| e.version),
            self.tokens.as_ref().map(|e| e.version),
            self.status.as_ref().map(|e| e.version),
            self.shard.as_ref().map(|e| e.version),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    /// Whether any entry is set.
    fn has_entries(&self) -> bool {
        self.address.is_some()
            || self.dc.is_some()
            || self.rack.is_some()
            || self.tokens.is_some()
            || self.status.is_some()
            || self.shard.is_some()
    }

    /// The announced status, if any.
    pub fn status(&self) -> Option<MemberStatus> {
        self.status.as_ref().map(|e| e.value)
    }

    /// Merges `other` into `self` (the lattice join; see the module docs).
    pub fn merge(&mut self, other: &NodeState) -> Merged {
        if other.generation > self.generation {
            *self = other.clone();
            return Merged {
                generation: true,
                heartbeat: true,
                entries: self.has_entries(),
            };
        }
        if other.generation < self.generation {
            return Merged::default();
        }
        let heartbeat = other.heartbeat > self.heartbeat;
        if heartbeat {
            self.heartbeat = other.heartbeat;
        }
        // `|` rather than `||`: every field must be merged.
        let entries = join(&mut self.address, &other.address)
            | join(&mut self.dc, &other.dc)
            | join(&mut self.rack, &other.rack)
            | join(&mut self.tokens, &other.tokens)
            | join(&mut self.status, &other.status)
            | join(&mut self.shard, &other.shard);
        Merged {
            generation: false,
            heartbeat,
            entries,
        }
    }

    /// What a peer whose digest says `(generation, heartbeat, version)` lacks:
    /// the whole state if the peer is on an older generation, else the
    /// entries newer than `version` plus the heartbeat; `None` if nothing.
    pub fn delta(&self, generation: u64, heartbeat: u64, version: u64) -> Option<NodeState> {
        if self.generation > generation {
            return Some(self.clone());
        }
        if self.generation < generation {
            return None;
        }
        let d = NodeState {
            generation: self.generation,
            heartbeat: self.heartbeat,
            address: newer(&self.address, version),
            dc: newer(&self.dc, version),
            rack: newer(&self.rack, version),
            tokens: newer(&self.tokens, version),
            status: newer(&self.status, version),
            shard: newer(&self.shard, version),
        };
        (d.has_entries() || self.heartbeat > heartbeat).then_some(d)
    }
}

/// One node's state in brief, as a SYN carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The node.
    pub id: NodeId,
    /// Its generation.
    pub generation: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// Its highest entry version.
    pub version: u64,
}

impl Digest {
    /// "I know nothing of `id`": asks for its whole state.
    pub fn nothing(id: NodeId) -> Self {
        Digest {
            id,
            generation: 0,
            heartbeat: 0,
            version: 0,
        }
    }
}

/// The deltas a node sends: states (whole or partial) keyed by node.
pub type Deltas = Vec<(NodeId, NodeState)>;

/// Every node's state, as one node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterState {
    nodes: BTreeMap<NodeId, NodeState>,
}

impl ClusterState {
    /// An empty state.
    pub fn new() -> Self {
        ClusterState::default()
    }

    /// The state of `id`.
    pub fn get(&self, id: &NodeId) -> Option<&NodeState> {
        self.nodes.get(id)
    }

    /// Mutable access for the gossiper's own node (only a node writes its own
    /// entries, which is what keeps versions meaningful).
    pub(super) fn get_mut(&mut self, id: &NodeId) -> Option<&mut NodeState> {
        self.nodes.get_mut(id)
    }

    /// Every node, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &NodeState)> {
        self.nodes.iter()
    }

    /// Number of nodes known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Merges one node's (possibly partial) state.
    pub fn merge_node(&mut self, id: &NodeId, state: &NodeState) -> Merged {
        match self.nodes.get_mut(id) {
            Some(mine) => mine.merge(state),
            None => {
                self.nodes.insert(id.clone(), state.clone());
                Merged {
                    generation: true,
                    heartbeat: true,
                    entries: state.has_entries(),
                }
            }
        }
    }

    /// Merges all of `other` (the lattice join); what changed, per node.
    pub fn merge(&mut self, other: &ClusterState) -> Vec<(NodeId, Merged)> {
        other
            .nodes
            .iter()
            .map(|(id, s)| (id.clone(), self.merge_node(id, s)))
            .filter(|(_, m)| m.any())
            .collect()
    }

    /// One digest per known node, in id order.
    pub fn digests(&self) -> Vec<Digest> {
        self.nodes
            .iter()
            .map(|(id, s)| Digest {
                id: id.clone(),
                generation: s.generation,
                heartbeat: s.heartbeat,
                version: s.max_version(),
            })
            .collect()
    }

    /// The answer to a SYN carrying `digests`: the deltas the sender lacks
    /// (including whole states of nodes it did not mention) and digests of
    /// what this side lacks, for the sender to fill in its ACK2.
    ///
    /// A merge join of the two id-sorted lists (a SYN's digests come sorted;
    /// any other order is sorted here first): one pass, no lookups.
    pub fn answer_syn(&self, digests: &[Digest]) -> (Deltas, Vec<Digest>) {
        let mut sorted: Vec<&Digest> = digests.iter().collect();
        if !sorted.windows(2).all(|w| w[0].id < w[1].id) {
            sorted.sort_by(|a, b| a.id.cmp(&b.id));
            sorted.dedup_by(|a, b| a.id == b.id);
        }
        let mut deltas = Vec::new();
        let mut requests = Vec::new();
        let mut mine = self.nodes.iter().peekable();
        for d in sorted {
            // One comparison per step: this runs for every node on every SYN.
            let mine = loop {
                match mine.peek().map(|(id, _)| (*id).cmp(&d.id)) {
                    // Ours that sort before `d`: the sender did not mention them.
                    Some(Ordering::Less) => {
                        if let Some((id, s)) = mine.next() {
                            deltas.push((id.clone(), s.clone()));
                        }
                    }
                    Some(Ordering::Equal) => break mine.next().map(|(_, s)| s),
                    Some(Ordering::Greater) | None => break None,
                }
            };
            let Some(mine) = mine else {
                requests.push(Digest::nothing(d.id.clone()));
                continue;
            };
            if let Some(delta) = mine.delta(d.generation, d.heartbeat, d.version) {
                deltas.push((d.id.clone(), delta));
            }
            let version = mine.max_version();
            // Both directions can hold at once: their heartbeat newer (via a
            // probe answer), our entries newer.
            if d.generation > mine.generation
                || (d.generation == mine.generation && (d.heartbeat > mine.heartbeat || d.version > version))
            {
                requests.push(Digest {
                    id: d.id.clone(),
                    generation: mine.generation,
                    heartbeat: mine.heartbeat,
                    version,
                });
            }
        }
        deltas.extend(mine.map(|(id, s)| (id.clone(), s.clone())));
        (deltas, requests)
    }

    /// The deltas asked for by `requests` (an ACK's digests), for the ACK2.
    pub fn deltas_for(&self, requests: &[Digest]) -> Deltas {
        requests
            .iter()
            .filter_map(|r| {
                let s = self.nodes.get(&r.id)?;
                Some((r.id.clone(), s.delta(r.generation, r.heartbeat, r.version)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry<T: std::fmt::Debug + Clone + 'static>(
        value: impl Strategy<Value = T> + 'static,
    ) -> impl Strategy<Value = Option<Versioned<T>>> {
        proptest::option::of((0u64..4, value).prop_map(|(version, value)| Versioned { version, value }))
    }

    /// Small domains on purpose: equal generations, versions and even equal
    /// versions with different values all occur often.
    fn node_state() -> impl Strategy<Value = NodeState> {
        (
            (0u64..3, 0u64..4),
            entry(prop_oneof![Just("a:1".to_owned()), Just("b:1".to_owned())]),
            entry(Just("dc1".to_owned())),
            entry(prop_oneof![Just("r1".to_owned()), Just("r2".to_owned())]),
            entry(proptest::collection::vec(0u64..8, 0..3).prop_map(Arc::from)),
            entry(prop_oneof![
                Just(MemberStatus::Joining),
                Just(MemberStatus::Normal),
                Just(MemberStatus::Leaving),
                Just(MemberStatus::Left)
            ]),
            entry((0u16..2, 1u16..3).prop_map(|(base, cores)| ShardPorts { base, cores })),
        )
            .prop_map(
                |((generation, heartbeat), address, dc, rack, tokens, status, shard)| NodeState {
                    generation,
                    heartbeat,
                    address,
                    dc,
                    rack,
                    tokens,
                    status,
                    shard,
                },
            )
    }

    fn cluster() -> impl Strategy<Value = ClusterState> {
        proptest::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(NodeId::from),
            node_state(),
            0..4,
        )
        .prop_map(|nodes| ClusterState { nodes })
    }

    fn merged(a: &ClusterState, b: &ClusterState) -> ClusterState {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    /// A cluster state that obeys the protocol's invariant: every node's
    /// entries were written by the node under distinct versions, and a
    /// replica holds a prefix of them (everything up to some version).
    fn honest_pair() -> impl Strategy<Value = (ClusterState, ClusterState)> {
        let node = (1u64..3, proptest::collection::vec(0usize..6, 0..8), 0u64..10);
        proptest::collection::vec((node.clone(), node, 0usize..9, 0usize..9), 0..5).prop_map(|specs| {
            let (mut a, mut b) = (ClusterState::new(), ClusterState::new());
            for (i, ((gen_a, writes_a, hb_a), (gen_b, writes_b, hb_b), cut_a, cut_b)) in specs.into_iter().enumerate() {
                let id = NodeId(format!("n{i}"));
                // The "truth" for each generation: apply writes in version order.
                let history = |generation: u64, writes: &[usize], hb: u64, cut: usize| {
                    let mut s = NodeState::new(generation);
                    s.heartbeat = hb;
                    for (v, &w) in (1u64..).zip(writes.iter().take(cut)) {
                        let addr = Some(Versioned::new(v, format!("h{v}:1")));
                        match w {
                            0 => s.address = addr,
                            1 => s.dc = Some(Versioned::new(v, "dc1".into())),
                            2 => s.rack = Some(Versioned::new(v, format!("r{v}"))),
                            3 => s.tokens = Some(Versioned::new(v, Arc::from(vec![v]))),
                            4 => s.status = Some(Versioned::new(v, MemberStatus::Normal)),
                            _ => s.shard = Some(Versioned::new(v, ShardPorts { base: 1, cores: 2 })),
                        }
                    }
                    s
                };
                // Both sides' views of one node share its history when their
                // generations agree (the node wrote one sequence).
                let writes_b = if gen_a == gen_b { &writes_a } else { &writes_b };
                if cut_a != 8 {
                    a.nodes.insert(id.clone(), history(gen_a, &writes_a, hb_a, cut_a));
                }
                if cut_b != 8 {
                    b.nodes.insert(id, history(gen_b, writes_b, hb_b, cut_b));
                }
            }
            (a, b)
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in cluster(), b in cluster()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in cluster(), b in cluster(), c in cluster()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in cluster(), b in cluster()) {
            prop_assert_eq!(merged(&a, &a), a.clone());
            let ab = merged(&a, &b);
            prop_assert_eq!(merged(&ab, &b), ab.clone());
            // And the change report is honest: merging again changes nothing.
            prop_assert!(ab.clone().merge(&b).is_empty());
        }

        /// SYN -> ACK -> ACK2 leaves both sides with exactly the merge of the
        /// two states, when the states obey the protocol's invariant.
        #[test]
        fn digest_exchange_equals_merge((a, b) in honest_pair()) {
            let want = merged(&a, &b);
            let (mut a2, mut b2) = (a.clone(), b.clone());
            // a sends SYN(digests); b answers ACK(deltas, requests); a answers ACK2.
            let (deltas, requests) = b2.answer_syn(&a2.digests());
            for (id, s) in &deltas {
                a2.merge_node(id, s);
            }
            for (id, s) in &a2.deltas_for(&requests) {
                b2.merge_node(id, s);
            }
            prop_assert_eq!(&a2, &want);
            prop_assert_eq!(&b2, &want);
            // Converged sides have nothing to say to each other.
            let (deltas, requests) = b2.answer_syn(&a2.digests());
            prop_assert!(deltas.is_empty() && requests.is_empty());
        }

        /// Digests out of order or repeated (a peer we do not control) get
        /// the same answer as the sorted list.
        #[test]
        fn answer_syn_any_order((a, b) in honest_pair(), dup in 0usize..4) {
            let sorted = a.digests();
            let mut shuffled = sorted.clone();
            shuffled.reverse();
            if let Some(d) = sorted.get(dup) {
                shuffled.push(d.clone());
            }
            prop_assert_eq!(b.answer_syn(&shuffled), b.answer_syn(&sorted));
        }
    }

    #[test]
    fn generations() {
        let mut old = NodeState::new(5);
        old.heartbeat = 90;
        old.status = Some(Versioned::new(7, MemberStatus::Normal));
        let mut restarted = NodeState::new(6);
        restarted.heartbeat = 1;
        let m = old.merge(&restarted);
        assert!(m.generation && !m.entries);
        assert_eq!(old, restarted, "a new generation replaces the old state whole");
        let mut stale = NodeState::new(5);
        stale.heartbeat = 1000;
        assert_eq!(old.merge(&stale), Merged::default(), "an older generation is ignored");
        assert_eq!(old.delta(7, 0, 0), None, "the peer is ahead");
        assert_eq!(old.delta(5, 0, 0), Some(old.clone()), "the peer is behind: all of it");
    }

    #[test]
    fn delta_carries_only_newer() {
        let mut s = NodeState::new(1);
        s.heartbeat = 10;
        s.address = Some(Versioned::new(1, "a:1".into()));
        s.status = Some(Versioned::new(3, MemberStatus::Leaving));
        assert_eq!(s.max_version(), 3);
        let d = s.delta(1, 4, 1).unwrap();
        assert_eq!(
            (d.heartbeat, d.address, d.status.map(|e| e.value)),
            (10, None, Some(MemberStatus::Leaving))
        );
        let d = s.delta(1, 4, 3).unwrap();
        assert!(!d.has_entries() && d.heartbeat == 10, "heartbeat only");
        assert_eq!(s.delta(1, 10, 3), None, "nothing newer");
    }
}
