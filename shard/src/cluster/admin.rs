//! Operator commands a node runs when the `corekv` CLI asks (node-to-node
//! ADMIN): `status`, `repair` ([`super::repair::repair_node`]),
//! `decommission` and `removenode <id>` ([`super::elastic`]). Each answers a
//! report for a human once the work is done.

use std::fmt::Write as _;
use std::rc::Rc;

use super::Cluster;
use crate::runtime::Shard;
use crate::store::{Cmd, Failure, FailureKind, Reply};

/// Runs `command` and returns its report.
pub async fn run(shard: &Rc<Shard>, cluster: &Rc<Cluster>, command: &str) -> Result<String, Failure> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => Ok(status(cluster) + &storage_status(shard).await),
        ["repair"] => super::repair::repair_node(shard, cluster).await,
        ["decommission"] => super::elastic::decommission(shard, cluster).await,
        ["removenode", id] => super::elastic::removenode(shard, cluster, id).await,
        _ => Err(Failure::new(
            FailureKind::Invalid,
            format!("unknown admin command `{command}` (known: status, repair, decommission, removenode ID)"),
        )),
    }
}

/// This node's storage, per core: `ok`, or why writes fail there (disk
/// full, fenced after a failed sync, compaction failing).
pub async fn storage_status(shard: &Rc<Shard>) -> String {
    let calls = (0..shard.cores).map(|c| shard.exec(c, Cmd::Info));
    let mut out = String::new();
    for (c, r) in futures::future::join_all(calls).await.into_iter().enumerate() {
        let state = match r {
            Reply::Info(i) => i.health.to_string(),
            Reply::Failed(f) => format!("unknown ({})", f.message),
            other => format!("unknown ({other:?})"),
        };
        let _ = writeln!(out, "storage core {c}: {state}");
    }
    out
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
