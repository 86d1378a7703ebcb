//! Elasticity: a node joining a running cluster streams its future ranges
//! in before it serves them; a decommissioned node streams its ranges out
//! before it leaves; `removenode` takes a dead node out of the ring and has
//! the survivors re-replicate what it held.

use std::rc::Rc;
use std::time::Duration;

use corekv_net::msg::peer::{PeerOp, PeerRequest};

use super::repair::{self, RangeStats};
use super::{gossip, Cluster, ClusterCmd};
use crate::config::Config;
use crate::membership::MemberStatus;
use crate::replication::merkle::TokenRange;
use crate::runtime::Shard;
use crate::server::peer::PeerAnswer;
use crate::store::{Cmd, Failure, FailureKind, Reply};
use crate::topology::{NodeId, NodeStatus, Ring, Token};

/// Name of the file that records that this node finished joining.
const JOINED: &str = "joined";

/// Whether this node must bootstrap (stream its ranges in before serving):
/// it has never finished joining and it is not one of the seeds. Seeds
/// start a cluster (like Cassandra's seeds, they do not bootstrap), and a
/// node that joined once keeps its data across restarts.
pub fn must_bootstrap(config: &Config) -> bool {
    let me = super::client_address(config);
    !config.cluster.seeds.contains(&me) && !config.node.data_dir.join(JOINED).exists()
}

/// Name of the file that records that an operator added this node (it no
/// longer waits at start, see [`must_wait`]).
const JOIN_REQUESTED: &str = "join-requested";

/// Whether this node waits for an operator to add it before it
/// bootstraps: it must bootstrap, `cluster.auto_bootstrap` is off, and it
/// was never added (an added node that restarts mid-bootstrap resumes).
pub fn must_wait(config: &Config) -> bool {
    !config.cluster.auto_bootstrap && must_bootstrap(config) && !config.node.data_dir.join(JOIN_REQUESTED).exists()
}

/// Core 0 of a waiting node: starts gossip and the bootstrap. False if the
/// node was not waiting (a member, or added already).
pub fn start_join(shard: &Rc<Shard>, cluster: &Rc<Cluster>) -> bool {
    if !cluster.shared().take_waiting() {
        return false;
    }
    if let Err(e) = mark_file(&cluster.data_dir, JOIN_REQUESTED) {
        // Only a restart before the bootstrap ends is affected: it waits again.
        tracing::warn!(error = %e, "cannot record that the node was added");
    }
    tracing::info!("added by an operator: gossip starts, bootstrapping");
    super::spawn_detached(shard, gossip::gossip_loop(shard.clone(), cluster.clone()));
    super::spawn_detached(shard, bootstrap(shard.clone(), cluster.clone()));
    true
}

/// The `join` operator command, on a waiting node: see [`start_join`].
pub async fn join(shard: &Rc<Shard>, cluster: &Rc<Cluster>) -> Result<String, Failure> {
    match shard.exec(0, Cmd::Cluster(ClusterCmd::Join)).await {
        Reply::Bool(true) => Ok(format!(
            "{} added: it gossips and bootstraps (JOINING, then NORMAL once its ranges are streamed in)\n",
            cluster.me
        )),
        Reply::Bool(false) => Err(Failure::new(
            FailureKind::Invalid,
            format!(
                "{} is not waiting to be added: it is a member or joins already (only a node started with \
                 cluster.auto_bootstrap = false waits)",
                cluster.me
            ),
        )),
        Reply::Failed(f) => Err(f),
        other => Err(Failure::new(
            FailureKind::Internal,
            format!("unexpected reply {other:?}"),
        )),
    }
}

/// Writes marker `name` in `dir`, synced.
fn mark_file(dir: &std::path::Path, name: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{name}\n"))?;
    std::fs::File::open(&path)?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Records that this node finished joining (synced, so a crash right after
/// does not make it bootstrap again over data it already serves).
fn mark_joined(dir: &std::path::Path) -> std::io::Result<()> {
    mark_file(dir, JOINED)
}

/// The ranges an interrupted bootstrap or decommission already streamed, so
/// that running it again resumes instead of starting over.
///
/// One line per finished (peer, range): `peer start end` in decimal, appended
/// after the range's last merge was acknowledged durably by its receiver.
/// The file is not synced: after a power loss a few finished ranges are
/// streamed again, which is harmless (merges are idempotent). A line torn by
/// a crash does not parse and is ignored. Ranges are matched by their bounds,
/// so a ring that changed in between only makes more of them stream again.
/// The file is removed when the stream completes.
#[derive(Debug)]
pub struct StreamProgress {
    path: std::path::PathBuf,
    done: std::collections::HashSet<(String, Token, Token)>,
}

impl StreamProgress {
    /// Progress file `name` in `dir` (empty if there is none).
    pub fn open(dir: &std::path::Path, name: &str) -> StreamProgress {
        let path = dir.join(name);
        let done = std::fs::read_to_string(&path)
            .map(|text| {
                text.lines()
                    .filter_map(|l| {
                        let mut it = l.split(' ');
                        let peer = it.next()?.to_owned();
                        let start = it.next()?.parse().ok()?;
                        let end = it.next()?.parse().ok()?;
                        it.next().is_none().then_some((peer, start, end))
                    })
                    .collect()
            })
            .unwrap_or_default();
        StreamProgress { path, done }
    }

    /// How many ranges an earlier run finished.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether no range is recorded.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Whether range `r` with `peer` was finished before.
    pub fn is_done(&self, peer: &NodeId, r: &TokenRange) -> bool {
        self.done.contains(&(peer.0.clone(), r.start, r.end))
    }

    /// Records range `r` with `peer` as finished. A failure to record only
    /// costs streaming it again after a restart, so it is logged, not fatal.
    pub fn record(&mut self, peer: &NodeId, r: &TokenRange) {
        use std::io::Write;
        let line = format!("{} {} {}\n", peer.0, r.start, r.end);
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            tracing::warn!(path = %self.path.display(), error = %e, "stream progress not recorded");
        }
        self.done.insert((peer.0.clone(), r.start, r.end));
    }

    /// The stream completed: forget the progress.
    pub fn finish(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "stream progress not removed");
            }
        }
    }
}

/// Progress file of a bootstrap.
const BOOTSTRAP_PROGRESS: &str = "bootstrap-progress";
/// Progress file of a decommission.
const DECOMMISSION_PROGRESS: &str = "decommission-progress";

/// Waits `rounds` gossip intervals: long enough for a status change to
/// reach every node before data moves (Cassandra's ring delay).
async fn settle(cluster: &Cluster, rounds: u32) {
    glommio::timer::sleep(gossip::interval(cluster) * rounds).await;
}

/// Ring ranges `(start, end]` of `ring`, in ring order.
fn ranges(ring: &Ring) -> Vec<TokenRange> {
    (0..ring.vnodes().len())
        .map(|p| TokenRange::of_vnode(ring, p))
        .collect()
}

fn replicas_of(ring: &Ring, token: Token, rf: usize) -> Vec<NodeId> {
    ring.preference_list_rack_aware(token, rf)
        .into_iter()
        .map(|n| n.id.clone())
        .collect()
}

fn is_up(ring: &Ring, id: &NodeId) -> bool {
    ring.node(id).is_some_and(|n| n.status != NodeStatus::Down)
}

/// Bootstraps this node (core 0, at start, when [`must_bootstrap`]): waits
/// to learn the ring, lets every node see it JOINING (so writes reach it
/// from then on), pulls every range it will replicate from every current
/// replica that is up (a write acknowledged by W of them is on at least one),
/// then announces NORMAL.
pub async fn bootstrap(shard: Rc<Shard>, cluster: Rc<Cluster>) {
    // Learn the ring: at least one member, and a view stable for a few rounds.
    let mut stable = 0;
    let mut last = 0;
    while stable < 3 {
        if shard.stopping() {
            return;
        }
        settle(&cluster, 1).await;
        let view = cluster.view();
        let members = view.ring.nodes().iter().filter(|n| n.id != cluster.me).count();
        if members > 0 && view.epoch == last {
            stable += 1;
        } else {
            stable = 0;
        }
        last = view.epoch;
    }
    settle(&cluster, 3).await;
    let started = std::time::Instant::now();
    let mut total = RangeStats::default();
    let mut progress = StreamProgress::open(&cluster.data_dir, BOOTSTRAP_PROGRESS);
    if !progress.is_empty() {
        tracing::info!(ranges = progress.len(), "bootstrap: resuming an interrupted bootstrap");
    }
    let mut skipped = 0usize;
    loop {
        let view = cluster.view();
        let Some(next) = view.next.clone() else {
            tracing::warn!("bootstrap: the view has no pending ring; waiting");
            settle(&cluster, 1).await;
            continue;
        };
        let mut failed = 0;
        for r in ranges(&next) {
            if !replicas_of(&next, r.end, cluster.rf_config).contains(&cluster.me) {
                continue;
            }
            for from in replicas_of(&view.ring, r.end, cluster.rf_config) {
                if from == cluster.me || !is_up(&view.ring, &from) {
                    continue;
                }
                if progress.is_done(&from, &r) {
                    skipped += 1;
                    continue;
                }
                match repair::pull_range(&shard, &cluster, &from, r.start, r.end).await {
                    Ok(s) => {
                        total += s;
                        progress.record(&from, &r);
                    }
                    Err(f) => {
                        failed += 1;
                        tracing::warn!(%from, error = %f.message, "bootstrap: a range could not be pulled");
                    }
                }
            }
            if shard.stopping() {
                return;
            }
        }
        if failed == 0 {
            break;
        }
        // Merges are idempotent: pulling everything again is safe.
        tracing::warn!(failed, "bootstrap: retrying");
        settle(&cluster, 2).await;
    }
    if let Err(e) = mark_joined(&cluster.data_dir) {
        tracing::error!(error = %e, "bootstrap: cannot record that the node joined; staying JOINING");
        return;
    }
    progress.finish();
    gossip::announce(&cluster, MemberStatus::Normal);
    tracing::info!(
        records = total.records,
        bytes = total.bytes,
        skipped,
        secs = started.elapsed().as_secs_f64(),
        "bootstrap done: NORMAL"
    );
}

/// Decommissions this node: LEAVING, push every range it replicates to the
/// nodes that replicate it once it is gone, then LEFT. The process keeps
/// running (serving nothing it owns) until the operator stops it.
pub async fn decommission(shard: &Rc<Shard>, cluster: &Rc<Cluster>) -> Result<String, Failure> {
    let view = cluster.view();
    if view.ring.index_of(&cluster.me).is_none() {
        return Err(Failure::new(
            FailureKind::Invalid,
            "this node is not a member of the ring",
        ));
    }
    if view.ring.nodes().len() <= cluster.rf_config {
        return Err(Failure::new(
            FailureKind::Invalid,
            format!(
                "{} nodes cannot lose one and keep {} replicas of every key",
                view.ring.nodes().len(),
                cluster.rf_config
            ),
        ));
    }
    let started = std::time::Instant::now();
    announce(shard, MemberStatus::Leaving).await?;
    settle(cluster, 3).await;
    let view = cluster.view();
    let Some(next) = view.next.clone() else {
        return Err(Failure::new(
            FailureKind::Internal,
            "no pending ring after announcing LEAVING",
        ));
    };
    let mut total = RangeStats::default();
    let mut ranges_moved = 0;
    let mut progress = StreamProgress::open(&cluster.data_dir, DECOMMISSION_PROGRESS);
    let resumed = progress.len();
    for r in ranges(&view.ring) {
        let now = replicas_of(&view.ring, r.end, cluster.rf_config);
        if !now.contains(&cluster.me) {
            continue;
        }
        for to in replicas_of(&next, r.end, cluster.rf_config) {
            if now.contains(&to) || progress.is_done(&to, &r) {
                continue;
            }
            let s = repair::push_range(shard, cluster, &to, r.start, r.end)
                .await
                .map_err(|f| {
                    Failure::new(
                        f.kind,
                        format!(
                            "decommission stopped (still LEAVING; run it again): pushing to {to}: {}",
                            f.message
                        ),
                    )
                })?;
            total += s;
            ranges_moved += 1;
            progress.record(&to, &r);
        }
    }
    announce(shard, MemberStatus::Left).await?;
    progress.finish();
    settle(cluster, 3).await;
    Ok(format!(
        "decommissioned {}: {} range copies streamed ({} already streamed by an earlier run), {} records, {} bytes in {:.1} s; the node has LEFT the ring and can be stopped\n",
        cluster.me,
        ranges_moved,
        resumed,
        total.records,
        total.bytes,
        started.elapsed().as_secs_f64()
    ))
}

/// Removes dead node `id` from the ring, then has every live node run
/// repair so the ranges it held get their RF copies back from the survivors.
pub async fn removenode(shard: &Rc<Shard>, cluster: &Rc<Cluster>, id: &str) -> Result<String, Failure> {
    let id = NodeId(id.to_owned());
    let removed = match shard.exec(0, Cmd::Cluster(ClusterCmd::Remove(id.clone()))).await {
        Reply::Bool(b) => b,
        Reply::Failed(f) => return Err(f),
        other => {
            return Err(Failure::new(
                FailureKind::Internal,
                format!("unexpected reply {other:?}"),
            ))
        }
    };
    if !removed {
        return Err(Failure::new(
            FailureKind::Invalid,
            format!("{id} is not a node this node believes down (removenode only removes dead nodes)"),
        ));
    }
    settle(cluster, 3).await;
    let mut report = format!("{id} removed from the ring; repairing every live node\n");
    let view = cluster.view();
    for n in view.ring.nodes() {
        if n.status == NodeStatus::Down {
            continue;
        }
        let r = if n.id == cluster.me {
            repair::repair_node(shard, cluster).await
        } else {
            admin_call(cluster, &n.address, "repair").await
        };
        match r {
            Ok(text) => report.push_str(&format!("{}: {}", n.id, text)),
            Err(f) => report.push_str(&format!("{}: repair failed: {}\n", n.id, f.message)),
        }
    }
    Ok(report)
}

/// Sends an ADMIN command to another node and returns its report.
async fn admin_call(cluster: &Cluster, addr: &str, command: &str) -> Result<String, Failure> {
    let req = PeerRequest {
        from: &cluster.me.0,
        op: PeerOp::Admin {
            command: command.as_bytes(),
        },
    };
    match cluster.pool.call(addr, &req, Duration::from_secs(3600)).await {
        Ok(PeerAnswer::Report { text }) => Ok(String::from_utf8_lossy(&text).into_owned()),
        Ok(PeerAnswer::Failed { message, .. }) => Err(Failure::new(FailureKind::Unavailable, message)),
        Ok(other) => Err(Failure::new(
            FailureKind::Internal,
            format!("unexpected answer {other:?}"),
        )),
        Err(e) => Err(Failure::new(FailureKind::Unavailable, e.to_string())),
    }
}

/// Announces a status through core 0, which runs the gossiper.
async fn announce(shard: &Rc<Shard>, status: MemberStatus) -> Result<(), Failure> {
    match shard.exec(0, Cmd::Cluster(ClusterCmd::Announce(status))).await {
        Reply::Ok => Ok(()),
        Reply::Failed(f) => Err(f),
        other => Err(Failure::new(
            FailureKind::Internal,
            format!("unexpected reply {other:?}"),
        )),
    }
}
