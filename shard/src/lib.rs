//! One corekv node.
//!
//! So far: `topology` (key -> token -> vnode -> node -> core, replica placement
//! with rack awareness, token allocation), `versioning` (dotted version
//! vectors, HLC timestamps, the stored record format), `coordinator` (quorum
//! write, read and CAS state machines), `replication` (hinted handoff,
//! Merkle-tree anti-entropy), `membership` (gossip, cluster-state CRDT,
//! phi-accrual failure detection) and `config` (the node's configuration).
//! They are pure code without I/O beyond reading the configuration file, so
//! the server and the deterministic simulator share them.

pub mod backup;
pub mod cluster;
mod codec;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod formats;
pub mod membership;
pub mod metrics;
pub mod replication;
pub mod runtime;
pub mod security;
pub mod server;
pub mod store;
pub mod tls;
pub mod topology;
pub mod versioning;

pub use config::Config;

pub use error::{ConfigOrigin, Error, Result};
pub use topology::{
    allocate_tokens, core_of_vnode, evenly_spaced_tokens, token_of, Node, NodeId, NodeStatus, Ring, Route, Token, Vnode,
};
