//! Elasticity: a node joining a running cluster streams its future ranges
//! in before it serves them; a decommissioned node streams its ranges out
//! before it leaves; `removenode` takes a dead node out of the ring and has
//! the survivors re-replicate what it held.

use crate::config::Config;

/// Name of the file that records that this node finished joining.
const JOINED: &str = "joined";

/// Whether this node must bootstrap (stream its ranges in before serving):
/// it has never finished joining and it is not one of the seeds. Seeds
/// start a cluster (like Cassandra's seeds, they do not bootstrap), and a
/// node that joined once keeps its data across restarts.
pub fn must_bootstrap(config: &Config) -> bool {
    let me = super::client_address(config);
    !config.cluster.seeds.iter().any(|s| *s == me) && !config.node.data_dir.join(JOINED).exists()
}
