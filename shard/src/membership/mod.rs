//! Cluster membership: who is in the cluster, with which tokens and status,
//! and who is up.
//!
//! - [`state`]: the cluster state, a CRDT (per-node generation, heartbeat and
//!   versioned entries) merged by gossip; digests keep messages small.
//! - [`phi`]: the phi-accrual failure detector.
//! - [`gossip`]: the gossiper state machine (rounds, SYN/ACK/ACK2, indirect
//!   probes, echoes, up/down events).
//! - [`sim`]: a seeded, deterministic network of gossipers (loss, latency,
//!   crashes) that tests and the `ring-sim` bench drive.
//!
//! Everything is sans-IO: time comes in as milliseconds and randomness as an
//! `Rng`, messages go out as values. Encoding them for the wire is the
//! server's job, later.

pub mod gossip;
pub mod phi;
pub mod sim;
pub mod state;
pub mod wire;

pub use gossip::{Body, GossipConfig, Gossiper, LocalNode, Message, Output};
pub use phi::{ArrivalWindow, Distribution, PhiAccrual, PhiConfig};
pub use state::{ClusterState, Deltas, Digest, MemberStatus, Merged, NodeState, ShardPorts, Versioned};
