//! Draining a node for a rolling restart or an upgrade (docs/cluster.md,
//! "Rolling restart").
//!
//! `corekv drain`, SIGTERM and SIGINT all end here, on core 0:
//!
//! 1. Every live peer gets a gossip SHUTDOWN ([`super::gossip::announce_shutdown`]):
//!    it marks this node DOWN at once and publishes its view, so its
//!    coordinators stop sending this node replica traffic (writes become
//!    hints, reads go to the other replicas) and its RING answers leave this
//!    node out, so token-aware clients route around it. Without this they
//!    would time out on it until phi-accrual convicted it, seconds later.
//! 2. The node stops (`StopHandle::stop`): no new connections, no new
//!    requests on open ones; requests in flight finish and are answered.
//! 3. Each core flushes its memtable and syncs (`runtime::core_main`), and
//!    the process exits 0.
//!
//! On restart the node starts from its saved membership (`cluster-state`)
//! with a new gossip generation: peers echo it, see it up, and replay the
//! hints they kept for it.

use std::rc::Rc;

use super::Cluster;
use crate::runtime::Shard;

/// Announces this node's shutdown to the cluster (core 0); logs and returns
/// (peers that acknowledged, peers told).
pub async fn announce(shard: &Rc<Shard>, cluster: &Rc<Cluster>) -> (usize, usize) {
    let (answered, told) = super::gossip::announce_shutdown(cluster).await;
    tracing::info!(
        node = %cluster.me,
        core = shard.id,
        answered,
        told,
        "drain: shutdown announced to the live peers"
    );
    (answered, told)
}
