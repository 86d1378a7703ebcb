//! Token-aware routing: which node, core and port own a key, computed from the
//! ring a node sent (`RING`). Pure code, no I/O.
//!
//! ## The rule (it must match the server's `shard::topology::Ring` exactly)
//!
//! - A key's token is [`token_of`] (xxh3_64 of its Redis-style hash part).
//! - Every node contributes one vnode per entry of its `tokens`; vnode `i` of a
//!   node is the `i`-th token in that list.
//! - All vnodes are sorted by `(token, node index, vnode index)`, where the node
//!   index is the node's position in the RING response's node list. The order is
//!   total even when two tokens collide.
//! - The owner of a token is the first vnode in that order whose token is
//!   `>= token`, wrapping to the first vnode overall past the largest token.
//! - The owning core is `vnode index % cores` of the owning node.
//! - The endpoint is `host:(shard_port + core)` where `host` is the host part of
//!   the node's `address`; a node with `shard_port == 0` has no shard-aware
//!   ports, so every core's endpoint is its shared `address`.

use std::collections::HashMap;

use crate::msg::Response;
use crate::token::{token_of, Token};

/// A member of the ring, owned (the client keeps it after the response buffer
/// is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingNode {
    /// `host:port` of the node's shared client port.
    pub address: String,
    /// Cores (shards) on the node.
    pub cores: u16,
    /// Port of core 0's shard-aware listener (core `c` listens on
    /// `shard_port + c`); 0 when the node has none.
    pub shard_port: u16,
    /// The node's vnode tokens, in vnode-index order.
    pub tokens: Vec<Token>,
}

impl From<&crate::msg::Node<'_>> for RingNode {
    fn from(n: &crate::msg::Node<'_>) -> RingNode {
        RingNode {
            address: n.address.to_owned(),
            cores: n.cores,
            shard_port: n.shard_port,
            tokens: n.tokens.iter().collect(),
        }
    }
}

/// Why a ring cannot be routed on. A node sent it, so none of these panics.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The response to RING was not a ring.
    #[error("expected a RING response")]
    NotARing,
    /// No node has any token, so nothing owns any key.
    #[error("the ring has no vnodes")]
    NoVnodes,
    /// A node announces zero cores: its vnodes would map to no core.
    #[error("node {address} announces zero cores")]
    ZeroCores {
        /// The node's address.
        address: String,
    },
    /// A node's address is not `host:port`.
    #[error("node address {address:?} is not host:port")]
    BadAddress {
        /// The address as sent.
        address: String,
    },
    /// `shard_port + core` does not fit a port number.
    #[error("node {address}: shard port {shard_port} + core {core} exceeds 65535")]
    PortOutOfRange {
        /// The node's address.
        address: String,
        /// Its shard-aware base port.
        shard_port: u16,
        /// The core whose port overflows.
        core: u16,
    },
    /// The ring holds more vnodes than a `u32` can index.
    #[error("the ring holds {count} vnodes, more than this client indexes")]
    TooManyVnodes {
        /// How many.
        count: usize,
    },
}

/// Where a token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The token routed.
    pub token: Token,
    /// Index of the owning node in [`Routing::nodes`].
    pub node: usize,
    /// The owning vnode's index on its node (its position in the node's tokens).
    pub vnode_index: u32,
    /// The core of the owning node that stores the vnode: `vnode_index % cores`.
    pub core: u16,
    /// Index of the endpoint to send the request to, in [`Routing::targets`].
    pub target: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vnode {
    token: Token,
    node: u32,
    index: u32,
    /// Endpoint of the owning core, in `Routing::targets`.
    target: u32,
}

/// A routing table built from one ring. Immutable: a newer ring builds a new one.
#[derive(Debug, Clone)]
pub struct Routing {
    epoch: u64,
    nodes: Vec<RingNode>,
    /// Sorted by (token, node, index).
    vnodes: Vec<Vnode>,
    /// Distinct endpoint addresses (per-core ports and shared ports).
    targets: Vec<String>,
    /// The shared-port endpoint of each node, in `targets`.
    node_targets: Vec<usize>,
}

/// The host part of `host:port` (brackets of an IPv6 literal kept, so
/// `host:port` can be formed again by appending `:port`).
fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    Some(host)
}

impl Routing {
    /// Builds the table of ring `epoch` with `nodes` (in the order the RING
    /// response lists them: that order breaks token ties).
    pub fn new(epoch: u64, nodes: Vec<RingNode>) -> Result<Routing, RingError> {
        let mut targets: Vec<String> = Vec::new();
        let mut by_address: HashMap<String, usize> = HashMap::new();
        let mut intern = |address: String| -> usize {
            *by_address.entry(address).or_insert_with_key(|a| {
                targets.push(a.clone());
                targets.len() - 1
            })
        };
        let total: usize = nodes.iter().map(|n| n.tokens.len()).sum();
        if total == 0 {
            return Err(RingError::NoVnodes);
        }
        if u32::try_from(total).is_err() || u32::try_from(nodes.len()).is_err() {
            return Err(RingError::TooManyVnodes { count: total });
        }
        let mut node_targets = Vec::with_capacity(nodes.len());
        let mut vnodes = Vec::with_capacity(total);
        for (n, node) in (0u32..).zip(&nodes) {
            let host = host_of(&node.address).ok_or_else(|| RingError::BadAddress {
                address: node.address.clone(),
            })?;
            if node.cores == 0 {
                return Err(RingError::ZeroCores {
                    address: node.address.clone(),
                });
            }
            node_targets.push(intern(node.address.clone()));
            // One endpoint per core that owns a vnode, so a ring claiming many
            // cores but few tokens allocates nothing per claimed core.
            let mut core_targets: HashMap<u16, u32> = HashMap::new();
            for (index, &token) in (0u32..).zip(&node.tokens) {
                // `cores > 0` was checked and the result is below `cores`, a u16.
                let core = (index % u32::from(node.cores)) as u16;
                let target = match core_targets.get(&core) {
                    Some(&t) => t,
                    None => {
                        let address = if node.shard_port == 0 {
                            node.address.clone()
                        } else {
                            let port = node
                                .shard_port
                                .checked_add(core)
                                .ok_or_else(|| RingError::PortOutOfRange {
                                    address: node.address.clone(),
                                    shard_port: node.shard_port,
                                    core,
                                })?;
                            format!("{host}:{port}")
                        };
                        // Fewer targets than vnodes + nodes, which fit a u32 (checked above).
                        let t = intern(address) as u32;
                        core_targets.insert(core, t);
                        t
                    }
                };
                vnodes.push(Vnode {
                    token,
                    node: n,
                    index,
                    target,
                });
            }
        }
        vnodes.sort_unstable_by_key(|v| (v.token, v.node, v.index));
        debug_assert!(vnodes.windows(2).all(|w| w[0].token <= w[1].token));
        debug_assert_eq!(vnodes.len(), total);
        Ok(Routing {
            epoch,
            nodes,
            vnodes,
            targets,
            node_targets,
        })
    }

    /// Builds the table from a RING response.
    pub fn from_response(resp: &Response<'_>) -> Result<Routing, RingError> {
        let Response::Ring { epoch, nodes } = resp else {
            return Err(RingError::NotARing);
        };
        let nodes = nodes.iter().map(|n| RingNode::from(&n)).collect();
        Routing::new(*epoch, nodes)
    }

    /// The ring's epoch (grows with every membership change).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The nodes, in the RING response's order.
    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    /// The distinct endpoint addresses requests go to.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The endpoint (in [`Routing::targets`]) of node `node`'s shared port.
    /// `None` if there is no such node.
    pub fn node_target(&self, node: usize) -> Option<usize> {
        self.node_targets.get(node).copied()
    }

    /// The owner of `token`.
    pub fn owner_of_token(&self, token: Token) -> Owner {
        let pos = self.vnodes.partition_point(|v| v.token < token);
        // `new` refuses a ring without vnodes, so index 0 exists; `get` keeps
        // this free of panics all the same.
        let v = match self.vnodes.get(pos).or_else(|| self.vnodes.first()) {
            Some(v) => *v,
            None => Vnode {
                token,
                node: 0,
                index: 0,
                target: 0,
            },
        };
        let cores = self.nodes.get(v.node as usize).map_or(1, |n| n.cores.max(1));
        // Below `cores`, a u16.
        let core = (v.index % u32::from(cores)) as u16;
        Owner {
            token,
            node: v.node as usize,
            vnode_index: v.index,
            core,
            target: v.target as usize,
        }
    }

    /// The endpoints (in [`Routing::targets`]) of up to `n` distinct nodes
    /// for `token`, in ring order from its owner: the owner's first, then
    /// each next node clockwise, on that node's core for its first vnode
    /// past the token (the core that stores the key there, if it is one of
    /// the key's replicas; any node coordinates a request either way). A
    /// client retries on them when the owner does not answer.
    pub fn failover_targets(&self, token: Token, n: usize) -> Vec<usize> {
        let len = self.vnodes.len();
        let start = self.vnodes.partition_point(|v| v.token < token);
        let mut nodes: Vec<u32> = Vec::new();
        let mut out = Vec::new();
        let distinct = n.min(self.nodes.len());
        for i in 0..len {
            // Every node found: a ring of one node is not walked whole.
            if out.len() >= distinct {
                break;
            }
            let Some(v) = self.vnodes.get((start + i) % len) else {
                break;
            };
            if !nodes.contains(&v.node) {
                nodes.push(v.node);
                out.push(v.target as usize);
            }
        }
        out
    }

    /// The owner of `key`'s token.
    pub fn owner(&self, key: &[u8]) -> Owner {
        self.owner_of_token(token_of(key))
    }

    /// The endpoint address for `key`.
    pub fn endpoint(&self, key: &[u8]) -> &str {
        let t = self.owner(key).target;
        self.targets.get(t).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    fn node(address: &str, cores: u16, shard_port: u16, tokens: &[u64]) -> RingNode {
        RingNode {
            address: address.to_owned(),
            cores,
            shard_port,
            tokens: tokens.to_vec(),
        }
    }

    /// The rule written as plainly as possible: every vnode, the smallest
    /// (token, node, index) with token >= t, else the smallest overall.
    fn oracle(nodes: &[RingNode], t: u64) -> (usize, u32) {
        let all: Vec<(u64, usize, u32)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(n, node)| node.tokens.iter().enumerate().map(move |(i, &tok)| (tok, n, i as u32)))
            .collect();
        let pick = all
            .iter()
            .filter(|v| v.0 >= t)
            .min()
            .or_else(|| all.iter().min())
            .unwrap();
        (pick.1, pick.2)
    }

    #[test]
    fn failover_walks_distinct_nodes_clockwise_from_the_owner() {
        let r = Routing::new(
            1,
            vec![
                node("10.0.0.1:7380", 2, 7400, &[100, 200]),
                node("10.0.0.2:7380", 1, 0, &[150, 210]),
                node("10.0.0.3:7380", 4, 7400, &[160, 900]),
            ],
        )
        .unwrap();
        let names = |ts: Vec<usize>| -> Vec<String> { ts.into_iter().map(|t| r.targets()[t].clone()).collect() };
        // 120 -> 150 (node 2), then 160 (node 3, vnode 0: core 0), then 200 (node 1, vnode 1: core 1).
        assert_eq!(
            names(r.failover_targets(120, 5)),
            ["10.0.0.2:7380", "10.0.0.3:7400", "10.0.0.1:7401"]
        );
        assert_eq!(r.failover_targets(120, 1), vec![r.owner_of_token(120).target]);
        // Past the largest token it wraps: 100 (node 1, core 0), 150 (node 2), 160 (node 3).
        assert_eq!(
            names(r.failover_targets(901, 3)),
            ["10.0.0.1:7400", "10.0.0.2:7380", "10.0.0.3:7400"]
        );
        assert!(r.failover_targets(5, 0).is_empty());
    }

    #[test]
    fn wraps_to_the_smallest_token() {
        let r = Routing::new(
            7,
            vec![
                node("10.0.0.1:7380", 2, 7400, &[100, 200]),
                node("10.0.0.2:7380", 1, 0, &[150]),
            ],
        )
        .unwrap();
        assert_eq!(r.epoch(), 7);
        let o = r.owner_of_token(201);
        assert_eq!((o.node, o.vnode_index, o.core), (0, 0, 0));
        let o = r.owner_of_token(u64::MAX);
        assert_eq!((o.node, o.vnode_index), (0, 0));
        let o = r.owner_of_token(0);
        assert_eq!((o.node, o.vnode_index), (0, 0));
        // Inclusive upper end: token 150 belongs to the vnode whose token is 150.
        let o = r.owner_of_token(150);
        assert_eq!((o.node, o.vnode_index, o.core), (1, 0, 0));
        assert_eq!(r.targets()[o.target], "10.0.0.2:7380");
        let o = r.owner_of_token(151);
        assert_eq!((o.node, o.vnode_index, o.core), (0, 1, 1));
        assert_eq!(r.targets()[o.target], "10.0.0.1:7401");
    }

    #[test]
    fn ties_go_to_the_earlier_node_then_the_lower_vnode_index() {
        let r = Routing::new(
            1,
            vec![node("a:1", 4, 100, &[50, 9, 50]), node("b:1", 4, 200, &[50, 50])],
        )
        .unwrap();
        let o = r.owner_of_token(50);
        assert_eq!((o.node, o.vnode_index, o.core), (0, 0, 0));
        assert_eq!(r.targets()[o.target], "a:100");
        let r = Routing::new(
            1,
            vec![node("b:1", 4, 200, &[50, 50]), node("a:1", 4, 100, &[50, 9, 50])],
        )
        .unwrap();
        let o = r.owner_of_token(10);
        assert_eq!((o.node, o.vnode_index, o.core), (0, 0, 0));
        assert_eq!(r.targets()[o.target], "b:200");
    }

    #[test]
    fn endpoints() {
        let r = Routing::new(
            1,
            vec![
                node("[::1]:7380", 3, 7500, &[1, 2, 3, 4]),
                node("host.example:9000", 8, 0, &[10, 11]),
            ],
        )
        .unwrap();
        assert_eq!(r.targets()[r.owner_of_token(1).target], "[::1]:7500");
        assert_eq!(r.targets()[r.owner_of_token(3).target], "[::1]:7502");
        // Vnode 3 is on core 0 again.
        assert_eq!(r.owner_of_token(4).core, 0);
        assert_eq!(r.targets()[r.owner_of_token(4).target], "[::1]:7500");
        assert_eq!(r.targets()[r.owner_of_token(11).target], "host.example:9000");
        assert_eq!(r.owner_of_token(11).core, 1);
        assert_eq!(r.targets()[r.node_target(0).unwrap()], "[::1]:7380");
        assert_eq!(r.targets()[r.node_target(1).unwrap()], "host.example:9000");
        assert_eq!(r.node_target(2), None);
        // Shared addresses, three core ports of node 0; node 1 has none of its own.
        assert_eq!(r.targets().len(), 5);
    }

    #[test]
    fn keys_route_by_their_token() {
        let ta = token_of(b"alpha");
        let tb = token_of(b"beta");
        let r = Routing::new(1, vec![node("127.0.0.1:1000", 2, 2000, &[ta, tb])]).unwrap();
        assert_eq!(r.endpoint(b"alpha"), "127.0.0.1:2000");
        assert_eq!(r.endpoint(b"beta"), "127.0.0.1:2001");
        // Hash tags co-locate.
        assert_eq!(r.endpoint(b"{alpha}.x"), "127.0.0.1:2000");
    }

    #[test]
    fn bad_rings_are_refused() {
        assert_eq!(Routing::new(1, vec![]).unwrap_err(), RingError::NoVnodes);
        assert_eq!(
            Routing::new(1, vec![node("a:1", 1, 0, &[])]).unwrap_err(),
            RingError::NoVnodes
        );
        assert!(matches!(
            Routing::new(1, vec![node("a:1", 0, 0, &[1])]).unwrap_err(),
            RingError::ZeroCores { .. }
        ));
        for bad in ["nohost", ":80", "a:", "a:99999", "a:b"] {
            assert!(
                matches!(
                    Routing::new(1, vec![node(bad, 1, 0, &[1])]).unwrap_err(),
                    RingError::BadAddress { .. }
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Routing::new(1, vec![node("a:1", 2, 65535, &[1, 2])]).unwrap_err(),
            RingError::PortOutOfRange { core: 1, .. }
        ));
        // 65535 cores claimed but two tokens: only two endpoints exist.
        let r = Routing::new(1, vec![node("a:1", 65535, 2, &[1, 2])]).unwrap();
        assert_eq!(r.targets().len(), 3);
        assert_eq!(Routing::from_response(&Response::Ok).unwrap_err(), RingError::NotARing);
    }

    #[test]
    fn from_a_ring_response() {
        let tokens = [30u64, 10];
        let nodes = [crate::msg::Node {
            address: "h:1",
            cores: 2,
            shard_port: 5,
            tokens: crate::msg::List::Slice(&tokens),
        }];
        let resp = Response::Ring {
            epoch: 9,
            nodes: crate::msg::List::Slice(&nodes),
        };
        let r = Routing::from_response(&resp).unwrap();
        assert_eq!(r.epoch(), 9);
        assert_eq!(r.nodes()[0].tokens, vec![30, 10]);
        let o = r.owner_of_token(11);
        assert_eq!((o.vnode_index, o.core), (0, 0));
        assert_eq!(r.targets()[o.target], "h:5");
        assert_eq!(r.targets()[r.owner_of_token(10).target], "h:6");
    }

    /// Small token values make ties and wrap-around frequent.
    fn ring_strategy() -> impl Strategy<Value = Vec<RingNode>> {
        let token = prop_oneof![0u64..8, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()];
        let node = (1u16..5, prop::bool::ANY, prop::collection::vec(token, 0..6));
        prop::collection::vec(node, 1..5).prop_map(|nodes| {
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, (cores, shard, tokens))| RingNode {
                    address: format!("10.0.0.{i}:7380"),
                    cores,
                    shard_port: if shard { 7400 } else { 0 },
                    tokens,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn matches_the_plain_rule(nodes in ring_strategy(), probes in prop::collection::vec(
            prop_oneof![0u64..10, Just(u64::MAX), any::<u64>()], 1..20)
        ) {
            let Ok(r) = Routing::new(3, nodes.clone()) else {
                prop_assert!(nodes.iter().all(|n| n.tokens.is_empty()));
                return Ok(());
            };
            // Probe every vnode token exactly, one past it, and random points.
            let mut all = probes;
            for n in &nodes {
                for &t in &n.tokens {
                    all.push(t);
                    all.push(t.wrapping_add(1));
                }
            }
            for t in all {
                let o = r.owner_of_token(t);
                let (node, index) = oracle(&nodes, t);
                prop_assert_eq!((o.node, o.vnode_index), (node, index), "token {}", t);
                let n = &nodes[node];
                let core = (index % u32::from(n.cores)) as u16;
                prop_assert_eq!(o.core, core);
                let want = if n.shard_port == 0 {
                    n.address.clone()
                } else {
                    format!("10.0.0.{node}:{}", n.shard_port + core)
                };
                prop_assert_eq!(&r.targets()[o.target], &want);
            }
        }
    }
}
