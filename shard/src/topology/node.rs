//! Nodes as the topology sees them.

use std::fmt;

use super::token::Token;

/// A node's stable identity (kept across restarts; the address may change).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_owned())
    }
}

/// A node's place in the cluster's life cycle (driven by membership later).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// Owns its ranges and serves them.
    Normal,
    /// Streaming its future ranges in; takes writes, not reads.
    Joining,
    /// Streaming its ranges out before it goes.
    Leaving,
    /// Believed down by the failure detector; its ranges are still its own.
    Down,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Stable identity; the vnode tokens derive from it unless `tokens` is set.
    pub id: NodeId,
    /// Where peers and clients reach it (`host:port`).
    pub address: String,
    /// Data center.
    pub dc: String,
    /// Rack inside the data center; `None` when racks are not configured.
    pub rack: Option<String>,
    /// Life-cycle status.
    pub status: NodeStatus,
    /// The node's own vnode tokens (chosen by the token allocator when it
    /// joined and carried in the gossiped cluster state); vnode `i` of the node
    /// is `tokens[i]`. `None`: the ring derives them by hashing the id.
    pub tokens: Option<Vec<Token>>,
}

impl Node {
    /// A `Normal` node in data center `dc1` without a rack.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        Node {
            id: NodeId(id.into()),
            address: address.into(),
            dc: "dc1".to_owned(),
            rack: None,
            status: NodeStatus::Normal,
            tokens: None,
        }
    }

    /// The same node placed in `rack`.
    pub fn with_rack(mut self, rack: impl Into<String>) -> Self {
        self.rack = Some(rack.into());
        self
    }

    /// The same node with explicit vnode tokens (see [`Node::tokens`]).
    pub fn with_tokens(mut self, tokens: Vec<Token>) -> Self {
        self.tokens = Some(tokens);
        self
    }
}
