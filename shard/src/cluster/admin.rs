//! Operator commands a node runs when the `corekv` CLI asks (node-to-node
//! ADMIN): `status`, `ring` / `ring tokens`, `repair` ([`super::repair::repair_node`]),
//! `decommission` and `removenode <id>` ([`super::elastic`]). Each answers a
//! report for a human once the work is done.

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
        ["ring"] => Ok(ring(cluster, false)),
        ["ring", "tokens"] => Ok(ring(cluster, true)),
        ["repair"] => super::repair::repair_node(shard, cluster).await,
        ["decommission"] => super::elastic::decommission(shard, cluster).await,
        ["removenode", id] => super::elastic::removenode(shard, cluster, id).await,
        _ => Err(Failure::new(
            FailureKind::Invalid,
            format!("unknown admin command `{command}` (known: status, ring, ring tokens, repair, decommission, removenode ID)"),
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

/// The ring as this node sees it: per node its vnodes, the share of the
/// token space it owns as primary, and the share it holds as one of the
/// `replication_factor` replicas (rack-aware, as writes place them); with
/// `tokens`, then every vnode token in ring order with its node. A pending
/// ring (nodes joining or leaving) is shown the same way after it.
pub fn ring(cluster: &Cluster, tokens: bool) -> String {
    let view = cluster.view();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ring epoch {} as seen by {}: replication factor {}",
        view.epoch, cluster.me, cluster.rf_config
    );
    describe_ring(&mut out, &view.ring, cluster.rf_config, tokens);
    if let Some(next) = &view.next {
        let _ = writeln!(out, "pending ring (after the joins and departures in progress):");
        describe_ring(&mut out, next, cluster.rf_config, tokens);
    }
    out
}

fn describe_ring(out: &mut String, ring: &crate::Ring, rf: usize, tokens: bool) {
    let primary = ring.ownership();
    let replicated = replica_ownership(ring, rf);
    let _ = writeln!(
        out,
        "{} nodes, {} vnodes\n{:<12} {:<8} {:<24} {:>7} {:>9} {:>10}",
        ring.nodes().len(),
        ring.vnodes().len(),
        "node",
        "status",
        "address",
        "vnodes",
        "primary",
        "replicas"
    );
    for (i, n) in ring.nodes().iter().enumerate() {
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:<24} {:>7} {:>8.2}% {:>9.2}%",
            n.id.0,
            format!("{:?}", n.status).to_uppercase(),
            n.address,
            ring.vnodes().iter().filter(|v| v.node as usize == i).count(),
            primary.get(i).copied().unwrap_or(0.0) * 100.0,
            replicated.get(i).copied().unwrap_or(0.0) * 100.0,
        );
    }
    if tokens {
        let _ = writeln!(out, "{:<20} {:<12} vnode", "token", "node");
        for v in ring.vnodes() {
            let _ = writeln!(out, "{:#018x}   {:<12} {}", v.token, ring.node_of(v).id.0, v.index);
        }
    }
}

/// The fraction of the token space of which each node holds a copy, with
/// `rf` replicas per key placed as [`crate::Ring::preference_list_rack_aware`]
/// places them: each vnode's range `(previous token, token]` counts for
/// every node of that token's preference list. Sums to `min(rf, nodes)`.
pub fn replica_ownership(ring: &crate::Ring, rf: usize) -> Vec<f64> {
    let vnodes = ring.vnodes();
    let mut held = vec![0u128; ring.nodes().len()];
    let Some(last) = vnodes.last() else {
        return Vec::new();
    };
    let mut prev = last.token;
    for v in vnodes {
        let len = if vnodes.len() == 1 {
            1u128 << 64
        } else {
            u128::from(v.token.wrapping_sub(prev))
        };
        prev = v.token;
        for n in ring.preference_list_rack_aware(v.token, rf) {
            if let Some(i) = ring.index_of(&n.id) {
                held[i] += len;
            }
        }
    }
    let whole = (1u128 << 64) as f64;
    held.into_iter().map(|h| h as f64 / whole).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Node, Ring};

    fn ring_of(n: usize) -> Ring {
        let nodes = (1..=n)
            .map(|i| Node::new(format!("n{i}"), format!("127.0.0.{i}:7380")))
            .collect();
        Ring::new(nodes, 64).unwrap()
    }

    #[test]
    fn replica_ownership_sums_to_the_copies_kept() {
        for (n, rf) in [(1, 3), (3, 3), (5, 3), (5, 1)] {
            let r = ring_of(n);
            let owned = replica_ownership(&r, rf);
            let sum: f64 = owned.iter().sum();
            assert!((sum - rf.min(n) as f64).abs() < 1e-9, "{n} nodes rf {rf}: {sum}");
            // With RF = nodes every node holds everything.
            if rf >= n {
                assert!(owned.iter().all(|o| (o - 1.0).abs() < 1e-9), "{owned:?}");
            }
        }
    }

    #[test]
    fn primary_equals_replica_ownership_at_rf_1() {
        let r = ring_of(4);
        let a = r.ownership();
        let b = replica_ownership(&r, 1);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-9);
        }
    }
}
