//! Operator commands a node runs when the `corekv` CLI asks (node-to-node
//! ADMIN): `status`, `repair` ([`super::repair::repair_node`]),
//! `decommission` and `removenode <id>` ([`super::elastic`]). Each answers a
//! report for a human once the work is done. Two more serve the HTTP
//! operator routes of other nodes: `stats` (this node's load, keys and
//! memory, one line of `name=value` words) and `join` (a node waiting to be
//! added starts its bootstrap, [`super::elastic::join`]).

use std::fmt::Write as _;
use std::rc::Rc;

use super::Cluster;
use crate::runtime::Shard;
use crate::store::{Failure, FailureKind};

/// Runs `command` and returns its report.
pub async fn run(shard: &Rc<Shard>, cluster: &Rc<Cluster>, command: &str) -> Result<String, Failure> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => Ok(status(cluster)),
        ["repair"] => super::repair::repair_node(shard, cluster).await,
        ["decommission"] => super::elastic::decommission(shard, cluster).await,
        ["removenode", id] => super::elastic::removenode(shard, cluster, id).await,
        ["stats"] => Ok(crate::metrics::node_stats(shard).await.to_line()),
        ["join"] => super::elastic::join(shard, cluster).await,
        _ => Err(Failure::new(
            FailureKind::Invalid,
            format!(
                "unknown admin command `{command}` (known: status, repair, decommission, removenode ID, stats, join)"
            ),
        )),
    }
}

/// The node's view of the cluster: members, status, tokens, addresses.
pub fn status(cluster: &Cluster) -> String {
    let view = cluster.view();
    let mut out = String::new();
    let _ = writeln!(out, "view epoch {} as seen by {}", view.epoch, cluster.me);
    let own = view.ring.ownership();
    for (i, n) in view.ring.nodes().iter().enumerate() {
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:<24} dc={} rack={} tokens={} owns={:.1}%",
            n.id.0,
            format!("{:?}", n.status).to_uppercase(),
            n.address,
            n.dc,
            n.rack.as_deref().unwrap_or("-"),
            view.ring.tokens_of(i).len(),
            own.get(i).copied().unwrap_or(0.0) * 100.0
        );
    }
    out
}
