//! Operator commands a node runs when the `corekv` CLI asks (node-to-node
//! ADMIN): `status`, `ring` / `ring tokens`, `repair` ([`super::repair::repair_node`]),
//! `decommission` and `removenode <id>` ([`super::elastic`]), the snapshot
//! commands (`crate::backup`, docs/backup.md), `drain`
//! ([`super::drain`]) and `hints`. Each answers a report for a human once
//! the work is done. Two more serve the HTTP operator routes of other
//! nodes: `stats` (this node's load, keys and memory, one line of
//! `name=value` words) and `join` (a node waiting to be added starts its
//! bootstrap, [`super::elastic::join`]).
//!
//! | command | where | what |
//! |---|---|---|
//! | `snapshot NAME` | every member | a snapshot on every node of the ring (this one included) |
//! | `snapshots` | every member | each node's snapshots |
//! | `snapshot-delete NAME` | every member | deletes the snapshot on every node |
//! | `local-snapshot NAME`, `local-snapshots`, `local-snapshot-delete NAME` | this node | the same on this node alone (what the cluster-wide forms send to each member) |
//! | `drain` | this node | announce the shutdown, stop, flush, exit 0 |
//! | `hints` | this node | hints pending here, per target node |
//!
//! On a single node (no `cluster.seeds`) the snapshot commands and `drain`
//! work too, on the node alone; the others need cluster mode.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use corekv_net::msg::peer::{PeerOp, PeerRequest};

use super::Cluster;
use crate::backup::{self, human_bytes, SnapshotMeta};
use crate::runtime::Shard;
use crate::server::peer::PeerAnswer;
use crate::store::{Cmd, Failure, FailureKind, Reply};
use crate::topology::NodeId;

/// How long a member may take over its part of a cluster-wide command
/// (a snapshot checksums every file it links).
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3600);

const KNOWN: &str = "status, ring, ring tokens, repair, decommission, removenode ID, stats, join, snapshot NAME, snapshots, snapshot-delete NAME, \
                     local-snapshot NAME, local-snapshots, local-snapshot-delete NAME, drain, hints";

/// Runs `command` (cluster mode) and returns its report.
pub async fn run(shard: &Rc<Shard>, cluster: &Rc<Cluster>, command: &str) -> Result<String, Failure> {
    run_with(shard, Some(cluster), command).await
}

/// Runs `command` on this node, in cluster mode or alone, and returns its
/// report.
pub async fn run_node(shard: &Rc<Shard>, command: &str) -> Result<String, Failure> {
    let cluster = shard.cluster.clone();
    run_with(shard, cluster.as_ref(), command).await
}

async fn run_with(shard: &Rc<Shard>, cluster: Option<&Rc<Cluster>>, command: &str) -> Result<String, Failure> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let data_dir = &shard.config.node.data_dir;
    match (words.as_slice(), cluster) {
        (["snapshot", name], Some(c)) => snapshot_cluster(shard, c, name).await,
        (["snapshot" | "local-snapshot", name], None) | (["local-snapshot", name], Some(_)) => {
            backup::take_local(shard, name).await.map(|m| snapshot_line(&m))
        }
        (["snapshots"], Some(c)) => fan_out(shard, c, "local-snapshots").await.map(|(text, _)| text),
        (["snapshots" | "local-snapshots"], None) | (["local-snapshots"], Some(_)) => list_local(shard).await,
        (["snapshot-delete", name], Some(c)) => {
            backup::check_name(name)?;
            let (text, failed) = fan_out(shard, c, &format!("local-snapshot-delete {name}")).await?;
            if failed > 0 {
                return Err(Failure::new(FailureKind::Unavailable, text));
            }
            Ok(text)
        }
        (["snapshot-delete" | "local-snapshot-delete", name], None) | (["local-snapshot-delete", name], Some(_)) => {
            let removed = backup::delete_local(data_dir, name).await?;
            Ok(format!(
                "{}: snapshot {name} deleted ({removed} files)\n",
                shard.config.node.id
            ))
        }
        (["drain"], _) => drain(shard, cluster).await,
        (["status"], Some(c)) => Ok(status(c) + &storage_status(shard).await),
        (["ring"], Some(c)) => Ok(ring(c, false)),
        (["ring", "tokens"], Some(c)) => Ok(ring(c, true)),
        (["repair"], Some(c)) => super::repair::repair_node(shard, c).await,
        (["decommission"], Some(c)) => super::elastic::decommission(shard, c).await,
        (["removenode", id], Some(c)) => super::elastic::removenode(shard, c, id).await,
        (["hints"], Some(_)) => hints(shard).await,
        (["stats"], _) => Ok(crate::metrics::node_stats(shard).await.to_line()),
        (["join"], Some(c)) => super::elastic::join(shard, c).await,
        (
            ["status" | "ring" | "repair" | "decommission" | "hints" | "join"] | ["ring", "tokens"] | ["removenode", _],
            None,
        ) => Err(Failure::new(
            FailureKind::Invalid,
            format!("this node is not in cluster mode (cluster.seeds is empty): `{command}` needs a cluster"),
        )),
        _ => Err(Failure::new(
            FailureKind::Invalid,
            format!("unknown admin command `{command}` (known: {KNOWN})"),
        )),
    }
}

/// One line about a node's snapshot.
fn snapshot_line(m: &SnapshotMeta) -> String {
    let bytes: u64 = m.files.iter().map(|f| f.size).sum();
    format!(
        "{} {}: snapshot {}: {} cores, {} files, {}\n",
        m.node_id,
        m.address,
        m.name,
        m.cores,
        m.files.len(),
        human_bytes(bytes)
    )
}

async fn list_local(shard: &Rc<Shard>) -> Result<String, Failure> {
    let list = backup::list_local(&shard.config.node.data_dir).await?;
    let mut out = String::new();
    if list.is_empty() {
        let _ = writeln!(out, "{}: no snapshots", shard.config.node.id);
    }
    for s in list {
        match s.meta {
            Ok(m) => {
                let bytes: u64 = m.files.iter().map(|f| f.size).sum();
                let _ = writeln!(
                    out,
                    "{}: {} taken_ms={} files={} bytes={} ({})",
                    shard.config.node.id,
                    s.name,
                    m.taken_ms,
                    m.files.len(),
                    bytes,
                    human_bytes(bytes)
                );
            }
            Err(why) => {
                let _ = writeln!(out, "{}: {} ({why})", shard.config.node.id, s.name);
            }
        }
    }
    Ok(out)
}

/// The members a cluster-wide command goes to: every node of the current
/// ring and of the pending one (a joining node holds writes too).
fn members(cluster: &Cluster) -> Vec<(NodeId, String)> {
    let view = cluster.view();
    let mut out: Vec<(NodeId, String)> = Vec::new();
    let rings = std::iter::once(&view.ring).chain(view.next.iter());
    for ring in rings {
        for n in ring.nodes() {
            if !out.iter().any(|(id, _)| *id == n.id) {
                out.push((n.id.clone(), n.address.clone()));
            }
        }
    }
    out.sort();
    out
}

/// Runs a `local-...` command on every member (this node included, without
/// the network); returns the reports, failures named, and how many failed.
async fn fan_out(shard: &Rc<Shard>, cluster: &Rc<Cluster>, command: &str) -> Result<(String, usize), Failure> {
    let calls = members(cluster).into_iter().map(|(id, addr)| {
        let command = command.to_owned();
        async move {
            let r = if id == cluster.me {
                Box::pin(run_with(shard, None, &command)).await
            } else {
                let req = PeerRequest {
                    from: &cluster.me.0,
                    op: PeerOp::Admin {
                        command: command.as_bytes(),
                    },
                };
                match cluster.pool.call(&addr, &req, MEMBER_TIMEOUT).await {
                    Ok(PeerAnswer::Report { text }) => Ok(String::from_utf8_lossy(&text).into_owned()),
                    Ok(PeerAnswer::Failed { message, .. }) => Err(Failure::new(FailureKind::Unavailable, message)),
                    Ok(other) => Err(Failure::new(
                        FailureKind::Internal,
                        format!("answered {other:?} instead of a report"),
                    )),
                    Err(e) => Err(Failure::new(FailureKind::Unavailable, e.to_string())),
                }
            };
            (id, addr, r)
        }
    });
    let mut out = String::new();
    let mut failed = 0;
    for (id, addr, r) in futures::future::join_all(calls).await {
        match r {
            Ok(text) => out.push_str(&text),
            Err(f) => {
                failed += 1;
                let _ = writeln!(out, "{id} {addr}: FAILED: {}", f.message);
            }
        }
    }
    Ok((out, failed))
}

/// `snapshot NAME`: a snapshot on every member. Fails, naming the nodes
/// that did not take it, unless every one did.
async fn snapshot_cluster(shard: &Rc<Shard>, cluster: &Rc<Cluster>, name: &str) -> Result<String, Failure> {
    backup::check_name(name)?;
    let n = members(cluster).len();
    let (text, failed) = fan_out(shard, cluster, &format!("local-snapshot {name}")).await?;
    if failed > 0 {
        return Err(Failure::new(
            FailureKind::Unavailable,
            format!(
                "snapshot {name} is incomplete: {failed} of {n} nodes did not take it; a backup of it would \
                 miss their data. Delete it (corekv snapshot --delete {name}) and take another when every \
                 node is up.\n{text}"
            ),
        ));
    }
    Ok(format!("snapshot {name}: taken on {n} of {n} nodes\n{text}"))
}

/// `drain`: announce the shutdown (cluster mode), then stop the node.
async fn drain(shard: &Rc<Shard>, cluster: Option<&Rc<Cluster>>) -> Result<String, Failure> {
    let mut out = format!("{}: draining", shard.config.node.id);
    if cluster.is_some() {
        match shard.exec(0, Cmd::Cluster(super::ClusterCmd::Shutdown)).await {
            Reply::Counts(c) => {
                let get = |k: &str| c.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
                let _ = write!(
                    out,
                    "; {} of {} live peers acknowledged the shutdown",
                    get("answered"),
                    get("told")
                );
            }
            Reply::Failed(f) => {
                let _ = write!(
                    out,
                    "; the shutdown announcement failed ({}), stopping anyway",
                    f.message
                );
            }
            other => {
                let _ = write!(out, "; unexpected announcement reply {other:?}, stopping anyway");
            }
        }
    }
    shard.stop_handle.stop();
    out.push_str("; requests in flight finish, memtables are flushed, then the process exits 0\n");
    Ok(out)
}

/// `hints`: the hints this node holds, per target, summed over its cores.
async fn hints(shard: &Rc<Shard>) -> Result<String, Failure> {
    let calls = (0..shard.cores).map(|core| shard.exec(core, Cmd::Cluster(super::ClusterCmd::PendingHints)));
    let mut total: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for r in futures::future::join_all(calls).await {
        match r {
            Reply::Counts(c) => {
                for (target, n) in c {
                    *total.entry(target).or_default() += n;
                }
            }
            Reply::Failed(f) => return Err(f),
            other => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                ))
            }
        }
    }
    let mut out = String::new();
    let sum: u64 = total.values().sum();
    let _ = writeln!(out, "{}: {sum} hints pending", shard.config.node.id);
    for (target, n) in total {
        let _ = writeln!(out, "for {target}: {n}");
    }
    Ok(out)
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
