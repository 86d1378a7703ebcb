//! The token ring: vnodes, owners, preference lists, and vnode -> core.
//!
//! A node's vnode tokens are either its own list ([`Node::tokens`], chosen by
//! [`allocate_tokens`](super::allocate_tokens) when it joined and carried in the
//! gossiped cluster state) or, without one, `V` tokens that are xxh3 of (node
//! id, vnode index). Hashed tokens need no agreement at all but leave the most
//! loaded of 1000 nodes x 256 vnodes at about 1.2 x the mean; allocated tokens
//! bring that to about 1.0. Either way a joining node takes its keys from the
//! others only: old tokens never move, so nothing moves between old nodes.
//!
//! Vnode `i` (in ring order) owns the tokens `(token[i-1], token[i]]`, the
//! first one wrapping around from the last. Only one data center is modelled so
//! far; per-DC replication factors come with the coordinator.

use std::num::NonZeroUsize;

use xxhash_rust::xxh3::Xxh3;

use super::node::{Node, NodeId};
use super::token::{token_of, Token};
use crate::error::{Error, Result};

/// One virtual node: a token owned by a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vnode {
    /// Its token: the upper (inclusive) end of the range it owns.
    pub token: Token,
    /// Index of its node in [`Ring::nodes`].
    pub node: u32,
    /// Its index among its node's vnodes (`0..V`); stable while the node
    /// exists, which is why it (not the ring position) picks the core.
    pub index: u32,
}

/// Where one key goes, seen from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The key's token.
    pub token: Token,
    /// The vnode that owns the token.
    pub vnode: &'a Vnode,
    /// The vnode's node (the first replica).
    pub node: &'a Node,
    /// The core that stores this vnode's range on the routing node.
    pub core: usize,
}

/// The core (of `cores`) that stores vnode `vnode_index`'s range.
///
/// The index is the vnode's index on its owner (`0..V`), so every replica puts
/// the range on the same-numbered core when core counts agree, and the split is
/// exact (`V / cores` vnodes each, up to one) whatever the tokens are.
pub fn core_of_vnode(vnode_index: u32, cores: NonZeroUsize) -> usize {
    // u32 -> usize is lossless on every target glommio runs on (64-bit Linux).
    vnode_index as usize % cores.get()
}

/// The ring of all nodes' vnodes.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Sorted by id, so node indices do not depend on input order.
    nodes: Vec<Node>,
    /// Sorted by (token, node, index): the order is total even if two tokens collide.
    vnodes: Vec<Vnode>,
    vnodes_per_node: u32,
    /// Number of distinct racks (a node without a rack counts as one rack "none").
    racks: usize,
}

impl Ring {
    /// The default number of vnodes per node.
    pub const DEFAULT_VNODES: u32 = 256;

    /// The token of vnode `index` of node `id`.
    pub fn vnode_token(id: &NodeId, index: u32) -> Token {
        let mut h = Xxh3::new();
        h.update(id.0.as_bytes());
        // The index is a fixed 4 bytes at the end, so (id, index) pairs cannot alias.
        h.update(&index.to_le_bytes());
        h.digest()
    }

    /// The most tokens one node may carry (the configuration's `cluster.vnodes`
    /// allows as many): a bound on what a gossiped token list can make us build.
    pub const MAX_TOKENS_PER_NODE: usize = 4096;

    /// Builds the ring of `nodes`. A node with its own [`Node::tokens`] gets
    /// exactly those vnodes; the others get `vnodes_per_node` hashed ones.
    pub fn new(mut nodes: Vec<Node>, vnodes_per_node: u32) -> Result<Self> {
        if nodes.is_empty() {
            return Err(Error::EmptyRing);
        }
        if vnodes_per_node == 0 {
            return Err(Error::ZeroVnodes);
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(w) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(Error::DuplicateNode { id: w[0].id.0.clone() });
        }
        let mut vnodes = Vec::with_capacity(nodes.len() * vnodes_per_node as usize);
        for (n, node) in (0u32..).zip(&nodes) {
            let tokens = node_tokens(node, vnodes_per_node)?;
            vnodes.extend(
                (0u32..)
                    .zip(tokens)
                    .map(|(index, token)| Vnode { token, node: n, index }),
            );
        }
        vnodes.sort_unstable_by_key(vnode_order);
        let racks = count_racks(&nodes);
        debug_assert!(vnodes.windows(2).all(|w| w[0].token <= w[1].token));
        Ok(Ring {
            nodes,
            vnodes,
            vnodes_per_node,
            racks,
        })
    }

    /// This ring plus `node`: the same ring [`Ring::new`] would build from all
    /// the nodes, in one merge pass instead of a sort (building a 1000-node ring
    /// by 1000 successive joins stays cheap).
    pub fn with_node(&self, node: Node) -> Result<Ring> {
        let at = match self.nodes.binary_search_by(|n| n.id.cmp(&node.id)) {
            Ok(_) => return Err(Error::DuplicateNode { id: node.id.0 }),
            Err(at) => at,
        };
        // Node indices are u32 throughout (Vnode::node); no ring comes near 2^32 nodes.
        let at = at as u32;
        let mut fresh: Vec<Vnode> = (0u32..)
            .zip(node_tokens(&node, self.vnodes_per_node)?)
            .map(|(index, token)| Vnode { token, node: at, index })
            .collect();
        fresh.sort_unstable_by_key(vnode_order);
        // Indices at or past the new node's shift up by one; the shift keeps
        // the old vnodes' relative order, so a merge gives the sorted whole.
        let shift = |v: &Vnode| Vnode {
            node: if v.node >= at { v.node + 1 } else { v.node },
            ..*v
        };
        let mut vnodes = Vec::with_capacity(self.vnodes.len() + fresh.len());
        let (mut old, mut new) = (self.vnodes.iter().map(shift).peekable(), fresh.into_iter().peekable());
        loop {
            let take_old = match (old.peek(), new.peek()) {
                (Some(o), Some(n)) => vnode_order(o) <= vnode_order(n),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            vnodes.extend(if take_old { old.next() } else { new.next() });
        }
        let mut nodes = self.nodes.clone();
        nodes.insert(at as usize, node);
        let racks = count_racks(&nodes);
        debug_assert!(vnodes.windows(2).all(|w| vnode_order(&w[0]) <= vnode_order(&w[1])));
        Ok(Ring {
            nodes,
            vnodes,
            vnodes_per_node: self.vnodes_per_node,
            racks,
        })
    }

    /// The tokens of node `node` (an index into [`Ring::nodes`]) in vnode-index
    /// order: what the RING response sends, since a client takes a vnode's
    /// index (hence its core) from its position in that list. Panics if
    /// `node` is out of range, like a slice index.
    pub fn tokens_of(&self, node: usize) -> Vec<Token> {
        let n = &self.nodes[node];
        match &n.tokens {
            Some(tokens) => tokens.clone(),
            None => (0..self.vnodes_per_node).map(|i| Self::vnode_token(&n.id, i)).collect(),
        }
    }

    /// The nodes, sorted by id ([`Vnode::node`] indexes this).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The vnodes in ring (token) order.
    pub fn vnodes(&self) -> &[Vnode] {
        &self.vnodes
    }

    /// Vnodes per node for nodes without their own tokens.
    pub fn vnodes_per_node(&self) -> u32 {
        self.vnodes_per_node
    }

    /// The node with this id.
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.id.cmp(id))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The node that owns `vnode`.
    pub fn node_of(&self, vnode: &Vnode) -> &Node {
        &self.nodes[vnode.node as usize]
    }

    /// Ring position of the vnode owning `token`: the first vnode clockwise
    /// whose token is `>= token`, wrapping to the first vnode past the last.
    pub fn owner_position(&self, token: Token) -> usize {
        let pos = self.vnodes.partition_point(|v| v.token < token);
        if pos == self.vnodes.len() {
            0
        } else {
            pos
        }
    }

    /// The vnode owning `token`.
    pub fn owner_vnode(&self, token: Token) -> &Vnode {
        &self.vnodes[self.owner_position(token)]
    }

    /// The first vnode of node `node` (an index in [`Ring::nodes`]) at or
    /// clockwise after `token`: on that node, the vnode whose core stores the
    /// key. For the key's owner it is the owning vnode. For any other replica
    /// it depends only on that replica's own tokens, so a key stays on the same
    /// core of a replica when other nodes join or leave (the owner's vnode
    /// index would move it). `None` if the node has no vnode.
    pub fn local_vnode(&self, token: Token, node: usize) -> Option<&Vnode> {
        let node = u32::try_from(node).ok()?;
        self.clockwise(token).find(|v| v.node == node)
    }

    /// Index in [`Ring::nodes`] of the node `id`.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.id.cmp(id)).ok()
    }

    /// The vnodes clockwise from the owner of `token`, once around the ring.
    fn clockwise(&self, token: Token) -> impl Iterator<Item = &Vnode> {
        let start = self.owner_position(token);
        self.vnodes[start..].iter().chain(self.vnodes[..start].iter())
    }

    /// The first `n` distinct nodes clockwise from `token` (fewer if the ring
    /// has fewer nodes). The first is the owner of the token's vnode.
    pub fn preference_list(&self, token: Token, n: usize) -> Vec<&Node> {
        let want = n.min(self.nodes.len());
        let mut out = Vec::with_capacity(want);
        let mut seen = vec![false; self.nodes.len()];
        for v in self.clockwise(token) {
            if out.len() == want {
                break;
            }
            let i = v.node as usize;
            if !seen[i] {
                seen[i] = true;
                out.push(&self.nodes[i]);
            }
        }
        debug_assert_eq!(out.len(), want);
        out
    }

    /// Like [`Ring::preference_list`], but distinct racks first, as Cassandra's
    /// NetworkTopologyStrategy: walk clockwise taking nodes from racks not yet
    /// used; nodes from used racks are skipped until every rack is used, then
    /// the skipped nodes fill the list in ring order, then later nodes.
    ///
    /// Without racks (or with one) this is exactly [`Ring::preference_list`].
    pub fn preference_list_rack_aware(&self, token: Token, n: usize) -> Vec<&Node> {
        let want = n.min(self.nodes.len());
        let mut out = Vec::with_capacity(want);
        let mut skipped = Vec::new();
        let mut racks_used: Vec<Option<&str>> = Vec::with_capacity(self.racks);
        let mut seen = vec![false; self.nodes.len()];
        for v in self.clockwise(token) {
            if out.len() == want {
                break;
            }
            let i = v.node as usize;
            if seen[i] {
                continue;
            }
            seen[i] = true;
            let node = &self.nodes[i];
            if racks_used.len() == self.racks {
                out.push(node);
                continue;
            }
            let rack = node.rack.as_deref();
            if racks_used.contains(&rack) {
                skipped.push(node);
                continue;
            }
            racks_used.push(rack);
            out.push(node);
            if racks_used.len() == self.racks {
                let room = want - out.len();
                out.extend(skipped.drain(..).take(room));
            }
        }
        debug_assert_eq!(out.len(), want);
        out
    }

    /// Routes `key` on a node with `cores` cores: token, owning vnode, its
    /// node, and the local core that stores the vnode's range.
    pub fn route(&self, key: &[u8], cores: NonZeroUsize) -> Route<'_> {
        let token = token_of(key);
        let vnode = self.owner_vnode(token);
        Route {
            token,
            vnode,
            node: self.node_of(vnode),
            core: core_of_vnode(vnode.index, cores),
        }
    }

    /// The fraction of the token space each node owns (as primary), indexed
    /// like [`Ring::nodes`]; the fractions sum to 1.
    pub fn ownership(&self) -> Vec<f64> {
        let mut owned = vec![0u128; self.nodes.len()];
        let Some(last) = self.vnodes.last() else {
            return Vec::new();
        };
        let mut prev = last.token;
        for v in &self.vnodes {
            // One vnode alone owns the whole ring: 2^64, which does not fit a u64 difference.
            let len = if self.vnodes.len() == 1 {
                1u128 << 64
            } else {
                u128::from(v.token.wrapping_sub(prev))
            };
            owned[v.node as usize] += len;
            prev = v.token;
        }
        let total = (1u128 << 64) as f64;
        owned.into_iter().map(|o| o as f64 / total).collect()
    }
}

/// The ring's total order on vnodes: by token, ties (two nodes hashing to the
/// same token) broken by node then index so every node sorts alike.
fn vnode_order(v: &Vnode) -> (Token, u32, u32) {
    (v.token, v.node, v.index)
}

/// Node `node`'s tokens in vnode-index order: its own list, checked, or
/// `vnodes_per_node` hashed ones.
fn node_tokens(node: &Node, vnodes_per_node: u32) -> Result<Vec<Token>> {
    let Some(tokens) = &node.tokens else {
        return Ok((0..vnodes_per_node).map(|i| Ring::vnode_token(&node.id, i)).collect());
    };
    if tokens.is_empty() || tokens.len() > Ring::MAX_TOKENS_PER_NODE {
        return Err(Error::TokenCount {
            id: node.id.0.clone(),
            count: tokens.len(),
            max: Ring::MAX_TOKENS_PER_NODE,
        });
    }
    let mut sorted = tokens.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::DuplicateToken {
            id: node.id.0.clone(),
            token: w[0],
        });
    }
    Ok(tokens.clone())
}

/// Distinct racks; nodes without a rack count as one rack "none".
fn count_racks(nodes: &[Node]) -> usize {
    let mut racks: Vec<Option<&str>> = nodes.iter().map(|n| n.rack.as_deref()).collect();
    racks.sort_unstable();
    racks.dedup();
    racks.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node::new(format!("node-{i}"), format!("10.0.{}.{}:7380", i / 256, i % 256)))
            .collect()
    }

    fn racked(n: usize, racks: usize) -> Vec<Node> {
        nodes(n)
            .into_iter()
            .enumerate()
            .map(|(i, node)| node.with_rack(format!("r{}", i % racks)))
            .collect()
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(Ring::new(Vec::new(), 8), Err(Error::EmptyRing)));
        assert!(matches!(Ring::new(nodes(2), 0), Err(Error::ZeroVnodes)));
        let mut dup = nodes(2);
        dup.push(Node::new("node-1", "x:1"));
        assert!(matches!(Ring::new(dup, 8), Err(Error::DuplicateNode { id }) if id == "node-1"));
    }

    #[test]
    fn deterministic_whatever_the_input_order() {
        let a = Ring::new(nodes(20), 64).unwrap();
        let mut shuffled = nodes(20);
        shuffled.reverse();
        shuffled.swap(3, 11);
        let b = Ring::new(shuffled, 64).unwrap();
        assert_eq!(a.vnodes(), b.vnodes());
        assert_eq!(a.nodes(), b.nodes());
        // The token function is fixed: a change would silently move every key
        // of a running cluster, so pin one value.
        assert_eq!(Ring::vnode_token(&NodeId::from("node-0"), 0), {
            let mut buf = b"node-0".to_vec();
            buf.extend_from_slice(&0u32.to_le_bytes());
            xxhash_rust::xxh3::xxh3_64(&buf)
        });
    }

    #[test]
    fn owner_wraps_around() {
        let ring = Ring::new(nodes(3), 4).unwrap();
        let first = ring.vnodes()[0];
        let second = ring.vnodes()[1];
        let last = *ring.vnodes().last().unwrap();
        // True for these ids (pinned by the determinism test); the wrap needs room past the last token.
        assert!(last.token < u64::MAX);
        assert_eq!(
            *ring.owner_vnode(last.token + 1),
            first,
            "past the last token wraps to the first vnode"
        );
        assert_eq!(*ring.owner_vnode(u64::MAX), first);
        assert_eq!(*ring.owner_vnode(0), first);
        assert_eq!(*ring.owner_vnode(first.token), first, "a vnode owns its own token");
        assert_eq!(*ring.owner_vnode(first.token + 1), second);
        assert_eq!(*ring.owner_vnode(last.token), last);
        // A preference list starting past the last vnode continues at the first.
        let wrapped: Vec<_> = ring.preference_list(u64::MAX, 3).iter().map(|n| n.id.clone()).collect();
        let from_zero: Vec<_> = ring.preference_list(0, 3).iter().map(|n| n.id.clone()).collect();
        assert_eq!(wrapped, from_zero);
        assert_eq!(wrapped[0], ring.node_of(&first).id);
    }

    #[test]
    fn preference_list_caps_at_node_count() {
        let ring = Ring::new(nodes(2), 8).unwrap();
        assert_eq!(ring.preference_list(42, 5).len(), 2);
        assert_eq!(ring.preference_list_rack_aware(42, 5).len(), 2);
        assert!(ring.preference_list(42, 0).is_empty());
    }

    #[test]
    fn rack_aware_spreads_racks_and_fills() {
        // 9 nodes on 3 racks, N = 3: always one per rack; N = 5: every node distinct,
        // every rack present.
        let ring = Ring::new(racked(9, 3), 16).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..1000 {
            let t: u64 = rng.gen();
            let three = ring.preference_list_rack_aware(t, 3);
            let mut r: Vec<_> = three.iter().map(|n| n.rack.clone()).collect();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3);
            assert_eq!(
                three[0].id,
                ring.node_of(ring.owner_vnode(t)).id,
                "the owner stays first"
            );
            let five = ring.preference_list_rack_aware(t, 5);
            assert_eq!(&five[..3], &three[..]);
        }
        // Unbalanced racks: 1 node in rack "a", 5 in "b". Every list of 2 has both.
        let mut nodes = racked(5, 1);
        nodes.iter_mut().for_each(|n| n.rack = Some("b".into()));
        nodes.push(Node::new("lonely", "x:1").with_rack("a"));
        let ring = Ring::new(nodes, 16).unwrap();
        for _ in 0..200 {
            let list = ring.preference_list_rack_aware(rng.gen(), 2);
            assert!(list.iter().any(|n| n.id.0 == "lonely"));
        }
    }

    proptest! {
        #[test]
        fn preference_lists_are_distinct(n_nodes in 1usize..30, racks in 1usize..5, n in 0usize..8, token: u64) {
            let ring = Ring::new(racked(n_nodes, racks), 8).unwrap();
            for list in [ring.preference_list(token, n), ring.preference_list_rack_aware(token, n)] {
                prop_assert_eq!(list.len(), n.min(n_nodes));
                let mut ids: Vec<_> = list.iter().map(|n| &n.id).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), n.min(n_nodes));
            }
        }

        /// The rack-aware list covers min(n, racks) racks, and the plain one is
        /// its answer when there are no racks.
        #[test]
        fn rack_diversity(n_nodes in 1usize..30, racks in 1usize..6, n in 1usize..8, token: u64) {
            let ring = Ring::new(racked(n_nodes, racks), 8).unwrap();
            let list = ring.preference_list_rack_aware(token, n);
            let mut r: Vec<_> = list.iter().map(|n| n.rack.clone()).collect();
            r.sort();
            r.dedup();
            prop_assert_eq!(r.len(), n.min(racks.min(n_nodes)).min(list.len()));
            let plain = Ring::new(nodes(n_nodes), 8).unwrap();
            prop_assert_eq!(plain.preference_list_rack_aware(token, n), plain.preference_list(token, n));
        }

        #[test]
        fn route_agrees_with_parts(key in proptest::collection::vec(any::<u8>(), 0..32), cores in 1usize..16) {
            let ring = Ring::new(nodes(5), 16).unwrap();
            let cores = NonZeroUsize::new(cores).unwrap();
            let r = ring.route(&key, cores);
            prop_assert_eq!(r.token, token_of(&key));
            prop_assert_eq!(r.vnode, ring.owner_vnode(r.token));
            prop_assert_eq!(&r.node.id, &ring.preference_list(r.token, 1)[0].id);
            prop_assert!(r.core < cores.get());
            prop_assert_eq!(r.core, r.vnode.index as usize % cores.get());
        }
    }

    #[test]
    fn explicit_tokens() {
        let a = Node::new("a", "x:1").with_tokens(vec![30, 10]);
        let ring = Ring::new(vec![Node::new("b", "x:2"), a.clone()], 4).unwrap();
        assert_eq!(ring.vnodes().len(), 6, "2 own tokens + 4 hashed");
        assert_eq!(ring.tokens_of(0), vec![30, 10], "vnode-index order, as given");
        let hashed: Vec<_> = (0..4).map(|i| Ring::vnode_token(&NodeId::from("b"), i)).collect();
        assert_eq!(ring.tokens_of(1), hashed);
        // Vnode index = position in the node's list, whatever the ring order.
        let v = ring.vnodes().iter().find(|v| v.token == 10).unwrap();
        assert_eq!((v.node, v.index), (0, 1));
        let bad = |tokens: Vec<u64>| Ring::new(vec![a.clone().with_tokens(tokens)], 4);
        assert!(matches!(bad(Vec::new()), Err(Error::TokenCount { count: 0, .. })));
        assert!(matches!(
            bad((0..=Ring::MAX_TOKENS_PER_NODE as u64).collect()),
            Err(Error::TokenCount { count: 4097, .. })
        ));
        assert!(matches!(
            bad(vec![5, 9, 5]),
            Err(Error::DuplicateToken { token: 5, .. })
        ));
        assert!(matches!(
            ring.with_node(Node::new("a", "y:1")),
            Err(Error::DuplicateNode { id }) if id == "a"
        ));
    }

    proptest! {
        /// `with_node` builds exactly the ring `new` builds from all the nodes,
        /// wherever the new id sorts and whether tokens are hashed or given
        /// (colliding tokens included, to exercise the tie order).
        #[test]
        fn with_node_equals_new(
            n_nodes in 1usize..12,
            explicit in proptest::collection::vec(proptest::option::of(proptest::collection::btree_set(0u64..64, 1..6)), 13),
            new_name in "[a-z]{1,3}",
        ) {
            let mut all: Vec<Node> = nodes(n_nodes)
                .into_iter()
                .zip(&explicit)
                .map(|(n, t)| match t {
                    Some(t) => n.with_tokens(t.iter().copied().collect()),
                    None => n,
                })
                .collect();
            let mut new = Node::new(new_name, "n:1").with_rack("r9");
            if let Some(t) = &explicit[12] {
                new = new.with_tokens(t.iter().rev().copied().collect());
            }
            let before = Ring::new(all.clone(), 3).unwrap();
            all.push(new.clone());
            let after = before.with_node(new).unwrap();
            let whole = Ring::new(all, 3).unwrap();
            prop_assert_eq!(after.nodes(), whole.nodes());
            prop_assert_eq!(after.vnodes(), whole.vnodes());
            prop_assert_eq!(after.racks, whole.racks);
        }
    }

    #[test]
    fn cores_split_vnodes_evenly() {
        let cores = NonZeroUsize::new(3).unwrap();
        let mut per_core = [0usize; 3];
        for i in 0..256 {
            per_core[core_of_vnode(i, cores)] += 1;
        }
        assert_eq!(per_core, [86, 85, 85]);
    }

    #[test]
    fn ownership_sums_to_one() {
        for (n, v) in [(1, 1), (1, 4), (7, 16)] {
            let sum: f64 = Ring::new(nodes(n), v).unwrap().ownership().iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{n} nodes x {v}: {sum}");
        }
    }

    /// Balance with 1000 nodes x 256 vnodes: max / mean of the owned token range.
    #[test]
    fn balance_1000_nodes() {
        let ring = Ring::new(nodes(1000), Ring::DEFAULT_VNODES).unwrap();
        let owned = ring.ownership();
        let mean = 1.0 / owned.len() as f64;
        let max = owned.iter().cloned().fold(0.0, f64::max);
        let min = owned.iter().cloned().fold(1.0, f64::min);
        let ratio = max / mean;
        println!(
            "balance: 1000 nodes x 256 vnodes: max/mean = {ratio:.4}, min/mean = {:.4}",
            min / mean
        );
        assert!(ratio <= BALANCE_BOUND, "max/mean {ratio:.4} over {BALANCE_BOUND}");
    }

    /// Adding one node to 100 moves about 1/N of 100k random keys, all to the new node.
    #[test]
    fn movement_on_join() {
        let before = Ring::new(nodes(100), Ring::DEFAULT_VNODES).unwrap();
        let after = Ring::new(nodes(101), Ring::DEFAULT_VNODES).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let keys = 100_000;
        let mut moved = 0usize;
        let mut moved_replicas = 0usize;
        for _ in 0..keys {
            let key: [u8; 16] = rng.gen();
            let t = token_of(&key);
            let (a, b) = (
                before.node_of(before.owner_vnode(t)),
                after.node_of(after.owner_vnode(t)),
            );
            if a.id != b.id {
                assert_eq!(b.id.0, "node-100", "a key moved between two old nodes");
                moved += 1;
            }
            let ra: Vec<_> = before.preference_list(t, 3).into_iter().map(|n| &n.id).collect();
            moved_replicas += after
                .preference_list(t, 3)
                .iter()
                .filter(|n| !ra.contains(&&n.id))
                .count();
        }
        let fraction = moved as f64 / keys as f64;
        let ideal = 1.0 / 101.0;
        println!(
            "movement: 100 -> 101 nodes, {keys} keys: moved {moved} ({fraction:.5}), ideal 1/101 = {ideal:.5}, \
             ratio {:.4}; replica placements moved (N=3): {:.5} of 3 x keys",
            fraction / ideal,
            moved_replicas as f64 / (3 * keys) as f64
        );
        assert!(fraction <= 1.10 * ideal, "moved {fraction:.5} > 1.10 x {ideal:.5}");
        assert!(fraction >= 0.90 * ideal / 1.10, "moved too little: {fraction:.5}");
    }

    /// The bound the balance test enforces for *hashed* tokens: a regression
    /// guard at the measured 1.2057 plus margin. The 1.10 target of issue 4 is
    /// met with allocated tokens (`allocate.rs` tests that).
    const BALANCE_BOUND: f64 = 1.22;
}
