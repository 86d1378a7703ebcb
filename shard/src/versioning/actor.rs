//! Who makes versions: actors and their dots.

use std::fmt;

use xxhash_rust::xxh3::Xxh3;

use crate::topology::NodeId;

/// A writer of versions: one node's incarnation of its data.
///
/// An 8-byte hash rather than the node id string, because every clock entry
/// and every sibling's dot carries one. Two actors collide with probability
/// about `n² / 2⁶⁵` for `n` actors (3·10⁻¹⁴ for a thousand); a collision would
/// make two nodes share counters, which is the failure DVVs cannot absorb, so
/// the number is worth knowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor(pub u64);

impl Actor {
    /// The actor of node `node` while it keeps the data of `data_epoch`.
    ///
    /// The epoch is a number fixed when the node's data directory is created
    /// and bumped whenever the node may have lost versions it made (a wiped or
    /// restored disk): a dotted version vector trusts an actor to remember
    /// every dot it issued for a key, and a node that forgot some must write as
    /// someone new, or its next writes would claim to have seen, and so
    /// silently supersede, versions it never saw.
    pub fn derive(node: &NodeId, data_epoch: u64) -> Actor {
        let mut h = Xxh3::new();
        // A domain tag, so an actor never equals a vnode token of the same id.
        h.update(b"corekv-actor\0");
        h.update(node.0.as_bytes());
        // The epoch is a fixed 8 bytes at the end, so (id, epoch) pairs cannot alias.
        h.update(&data_epoch.to_le_bytes());
        Actor(h.digest())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One event of one actor: the name of exactly one write.
///
/// Counters of one actor only grow, so a dot is never reused; `(actor, n)` in
/// a clock means "every dot of `actor` up to `n` is in my past".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Who wrote.
    pub actor: Actor,
    /// Its counter (at least 1).
    pub counter: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_separates_nodes_and_epochs() {
        let a = NodeId::from("node-a");
        assert_eq!(Actor::derive(&a, 0), Actor::derive(&a, 0));
        assert_ne!(Actor::derive(&a, 0), Actor::derive(&a, 1));
        assert_ne!(Actor::derive(&a, 0), Actor::derive(&NodeId::from("node-b"), 0));
        assert_eq!(Actor(0xab).to_string(), "00000000000000ab");
    }
}
