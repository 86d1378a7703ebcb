//! The gossiper's driver on core 0: rounds on a timer, messages over the
//! node-to-node GOSSIP frame (one-way: the frame's answer carries nothing),
//! and the resulting view published to every core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use corekv_net::msg::peer::{PeerOp, PeerRequest};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{client_address, local_tokens, Cluster, View};
use crate::config::Config;
use crate::membership::{
    wire, Body, Deltas, GossipConfig, Gossiper, LocalNode, MemberStatus, Message, Output, PhiConfig, ShardPorts,
};
use crate::runtime::Shard;
use crate::store::{now_ms, Failure, FailureKind};
use crate::topology::{Node, NodeId, NodeStatus, Ring};

/// Core 0's membership state.
#[derive(Debug)]
pub struct GossipState {
    gossiper: RefCell<Gossiper>,
    rng: RefCell<SmallRng>,
    epoch: Cell<u64>,
    /// [`fingerprint`] of the membership last saved.
    saved: Cell<u64>,
    vnodes: u32,
    timeout: Duration,
}

impl GossipState {
    /// A gossiper for this node, announcing itself with `status` (NORMAL,
    /// or JOINING for a node bootstrapping into a running cluster), knowing
    /// the peers an earlier run saved ([`load_saved`]).
    pub fn new(config: &Config, seed: u64, status: MemberStatus) -> crate::error::Result<GossipState> {
        let interval = config.cluster.gossip_interval_ms;
        let interval32 = u32::try_from(interval).unwrap_or(u32::MAX);
        let gc = GossipConfig {
            interval_ms: interval,
            phi: PhiConfig {
                // Phi needs a threshold in the same units whatever the interval:
                // its priors are two rounds, as at the default interval.
                threshold: config.cluster.phi_threshold as f64,
                initial_interval_ms: interval32.saturating_mul(2),
                max_interval_ms: interval32.saturating_mul(2),
                ..PhiConfig::default()
            },
            seeds: config.cluster.seeds.clone(),
            probe_timeout_ms: (interval / 2).max(5),
            ..GossipConfig::default()
        };
        let mut local = LocalNode::new(config.node.id.clone(), client_address(config));
        local.dc = config.cluster.dc.clone();
        local.rack = (!config.cluster.rack.is_empty()).then(|| config.cluster.rack.clone());
        local.tokens = local_tokens(config);
        local.status = status;
        local.shard = Some(ShardPorts {
            base: config.ports.shard_base,
            cores: u16::try_from(config.node.cores).unwrap_or(1),
        });
        // The generation must grow across restarts: the start time in ms does.
        let generation = now_ms();
        let mut gossiper = Gossiper::new(gc, local, generation);
        let restored = gossiper.restore(&load_saved(&config.node.data_dir)?);
        if restored > 0 {
            tracing::info!(
                peers = restored,
                "membership restored from the last run; peers are down until they answer"
            );
        }
        Ok(GossipState {
            saved: Cell::new(fingerprint(&gossiper)),
            gossiper: RefCell::new(gossiper),
            rng: RefCell::new(SmallRng::seed_from_u64(seed)),
            epoch: Cell::new(1),
            vnodes: u32::try_from(config.cluster.vnodes).unwrap_or(256),
            timeout: Duration::from_millis(config.cluster.gossip_interval_ms.clamp(100, 2000)),
        })
    }

    /// The view this node starts with: its ring as the last run saved it
    /// (every peer down until it answers), or `None` without a saved one.
    pub fn first_view(&self) -> crate::error::Result<Option<View>> {
        let gossiper = self.gossiper.borrow();
        if gossiper.state().len() <= 1 {
            return Ok(None);
        }
        view_of(&gossiper, self.vnodes, self.epoch.get()).map(Some)
    }
}

/// Runs gossip rounds until the node stops (core 0 only).
pub async fn gossip_loop(shard: Rc<Shard>, cluster: Rc<Cluster>) {
    let Some(g) = cluster.gossip.as_ref() else { return };
    loop {
        let now = now_ms();
        let out = {
            let mut rng = g.rng.borrow_mut();
            g.gossiper.borrow_mut().tick(now, &mut *rng)
        };
        handle(&shard, &cluster, out);
        let next = g.gossiper.borrow().next_deadline();
        let wait = Duration::from_millis(next.saturating_sub(now_ms()).clamp(5, 1000));
        let stop = shard.stop.clone();
        let tick = glommio::timer::sleep(wait);
        futures::pin_mut!(tick);
        if let futures::future::Either::Left(_) = futures::future::select(stop, tick).await {
            return;
        }
    }
}

/// An encoded gossip message from a peer (core 0).
pub fn on_payload(shard: &Rc<Shard>, cluster: &Rc<Cluster>, payload: &[u8]) -> Result<(), Failure> {
    let Some(g) = cluster.gossip.as_ref() else {
        return Err(Failure::new(
            FailureKind::Internal,
            "gossip reached a core without the gossiper",
        ));
    };
    let msg = wire::decode(payload).map_err(|e| Failure::new(FailureKind::Invalid, e.to_string()))?;
    let out = g.gossiper.borrow_mut().on_message(msg, now_ms());
    handle(shard, cluster, out);
    Ok(())
}

fn handle(shard: &Rc<Shard>, cluster: &Rc<Cluster>, out: Vec<Output>) {
    let Some(g) = cluster.gossip.as_ref() else { return };
    let mut changed = false;
    for o in out {
        match o {
            Output::Send { to, msg } => send(shard, cluster, g, to, &msg),
            Output::NodeUp(id) => {
                tracing::info!(node = %id, "node up");
                changed = true;
            }
            Output::NodeDown(id) => {
                tracing::warn!(node = %id, "node down");
                changed = true;
            }
            Output::StateChanged(_) => changed = true,
        }
    }
    if changed {
        publish(cluster, g);
    }
}

fn send(shard: &Rc<Shard>, cluster: &Rc<Cluster>, g: &GossipState, to: String, msg: &Message) {
    let mut payload = Vec::new();
    if let Err(e) = wire::encode(msg, &mut payload) {
        // Over the wire format's bounds (thousands of nodes in one message).
        tracing::warn!(to = %to, error = %e, "gossip message not sent");
        return;
    }
    let (c, timeout) = (cluster.clone(), g.timeout);
    super::spawn_detached(shard, async move {
        let req = PeerRequest {
            from: &c.me.0,
            op: PeerOp::Gossip { payload: &payload },
        };
        // One-way: a lost message is what gossip is built to survive.
        let _ = c.pool.call(&to, &req, timeout).await;
    });
}

/// Tells every live peer that this node is shutting down (core 0), and
/// waits (each at most a gossip timeout) for their answers: they then take
/// it for down at once, hinting its writes and sending it no reads, instead
/// of timing out on it until the failure detector convicts it. Returns
/// (peers that answered, peers told). From now on the gossiper is silent.
pub async fn announce_shutdown(cluster: &Rc<Cluster>) -> (usize, usize) {
    let Some(g) = cluster.gossip.as_ref() else {
        return (0, 0);
    };
    let out = g.gossiper.borrow_mut().shut_down();
    let timeout = g.timeout;
    let sends: Vec<_> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((to, msg)),
            _ => None,
        })
        .map(|(to, msg)| {
            let c = cluster.clone();
            async move {
                let mut payload = Vec::new();
                if wire::encode(&msg, &mut payload).is_err() {
                    return false;
                }
                let req = PeerRequest {
                    from: &c.me.0,
                    op: PeerOp::Gossip { payload: &payload },
                };
                matches!(
                    c.pool.call(&to, &req, timeout).await,
                    Ok(crate::server::peer::PeerAnswer::Gossip { .. })
                )
            }
        })
        .collect();
    let told = sends.len();
    let answered = futures::future::join_all(sends)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    (answered, told)
}

/// Announces a new status for this node (core 0) and publishes the view.
pub fn announce(cluster: &Cluster, status: MemberStatus) {
    if let Some(g) = cluster.gossip.as_ref() {
        g.gossiper.borrow_mut().set_status(status);
        publish(cluster, g);
    }
}

/// Removes dead node `id` from the ring on its behalf (core 0).
pub fn remove(cluster: &Cluster, id: &NodeId) -> bool {
    let Some(g) = cluster.gossip.as_ref() else { return false };
    let done = g.gossiper.borrow_mut().remove_node(id);
    if done {
        publish(cluster, g);
    }
    done
}

/// The gossip interval.
pub fn interval(cluster: &Cluster) -> Duration {
    cluster.gossip.as_ref().map_or(Duration::from_secs(1), |g| {
        Duration::from_millis(g.gossiper.borrow().config().interval_ms)
    })
}

/// Rebuilds the view from the gossiper's state and publishes it; saves the
/// membership when it changed (see [`STATE_FILE`]).
fn publish(cluster: &Cluster, g: &GossipState) {
    let gossiper = g.gossiper.borrow();
    match view_of(&gossiper, g.vnodes, g.epoch.get() + 1) {
        Ok(view) => {
            g.epoch.set(view.epoch);
            cluster.shared().publish(view);
        }
        Err(e) => {
            tracing::warn!(error = %e, "gossip state does not make a ring; keeping the previous view");
            return;
        }
    }
    let print = fingerprint(&gossiper);
    if print != g.saved.get() {
        match save(&cluster.data_dir, &gossiper) {
            Ok(()) => g.saved.set(print),
            // The next change tries again; until then a restart starts from
            // an older membership, which gossip then corrects.
            Err(e) => tracing::warn!(error = %e, "cannot save the cluster membership"),
        }
    }
}

/// The view the gossiper's state makes, numbered `epoch`.
fn view_of(gossiper: &Gossiper, vnodes: u32, epoch: u64) -> crate::error::Result<View> {
    let nodes = gossiper.ring_nodes();
    let moving = nodes
        .iter()
        .any(|n| matches!(n.status, NodeStatus::Joining | NodeStatus::Leaving));
    let current: Vec<Node> = nodes
        .iter()
        .filter(|n| n.status != NodeStatus::Joining)
        .cloned()
        .collect();
    let next: Vec<Node> = nodes.into_iter().filter(|n| n.status != NodeStatus::Leaving).collect();
    let ports: HashMap<NodeId, ShardPorts> = gossiper
        .state()
        .iter()
        .filter_map(|(id, s)| Some((id.clone(), s.shard.as_ref()?.value)))
        .collect();
    let next = if moving {
        Some(std::sync::Arc::new(Ring::new(next, vnodes)?))
    } else {
        None
    };
    Ok(View {
        ring: std::sync::Arc::new(Ring::new(current, vnodes)?),
        next,
        ports,
        epoch,
    })
}

/// The file in the data directory that keeps the membership across
/// restarts (docs/cluster.md, "The saved membership").
pub const STATE_FILE: &str = "cluster-state";

/// `CKVMEMB` and the format version as an ASCII digit.
const STATE_MAGIC: &[u8; 8] = b"CKVMEMB1";

/// What the saved membership depends on: each node's generation and newest
/// entry version (heartbeats alone do not make a save).
fn fingerprint(gossiper: &Gossiper) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (id, s) in gossiper.state().iter() {
        h.update(id.0.as_bytes());
        h.update(&s.generation.to_le_bytes());
        h.update(&s.max_version().to_le_bytes());
    }
    h.digest()
}

/// Writes the peers' states to [`STATE_FILE`]: written aside, synced, then
/// renamed over the old one, so a crash leaves one whole file or the other.
fn save(dir: &Path, gossiper: &Gossiper) -> std::io::Result<()> {
    let msg = Message {
        from: gossiper.id().clone(),
        from_address: gossiper.address().to_owned(),
        body: Body::Ack2 {
            deltas: gossiper.peer_states(),
        },
    };
    let mut body = Vec::new();
    wire::encode(&msg, &mut body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "membership over 4 GiB"))?;
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the peers' states saved by an earlier run (none without the file).
/// A file that is there but unreadable is an error: starting without it
/// would let the node coordinate against a ring of one.
pub fn load_saved(dir: &Path) -> crate::error::Result<Deltas> {
    let path = dir.join(STATE_FILE);
    let bad = |reason: String| crate::error::Error::Runtime {
        what: format!("reading the saved cluster membership {}", path.display()),
        reason: format!(
            "{reason}; if the disk is sound, delete the file and the node learns the members from its seeds"
        ),
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(bad(e.to_string())),
    };
    let Some((head, body)) = bytes.split_at_checked(16) else {
        return Err(bad(format!("{} bytes, shorter than its 16-byte header", bytes.len())));
    };
    if head[..7] != STATE_MAGIC[..7] {
        return Err(bad("not a corekv membership file (bad magic)".to_owned()));
    }
    // The magic's last byte is the format version, an ASCII digit.
    if head[7] != STATE_MAGIC[7] {
        return Err(crate::error::Error::UnsupportedFormat {
            what: format!("the saved cluster membership {}", path.display()),
            found: u32::from(head[7].wrapping_sub(b'0')),
            known: (STATE_MAGIC[7] - b'0').to_string(),
        });
    }
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (len, crc) = (word(8), word(12));
    if usize::try_from(len).ok() != Some(body.len()) {
        return Err(bad(format!("header says {len} bytes, {} follow", body.len())));
    }
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch".to_owned()));
    }
    match wire::decode(body).map_err(|e| bad(e.to_string()))?.body {
        Body::Ack2 { deltas } => Ok(deltas),
        _ => Err(bad("holds a gossip message of another kind".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gossiper_knowing(peers: usize) -> Gossiper {
        let mut g = Gossiper::new(GossipConfig::default(), LocalNode::new("me", "127.0.0.1:1"), 10);
        let saved: Deltas = (0..peers)
            .map(|i| {
                let mut s = crate::membership::NodeState::new(100 + i as u64);
                s.address = Some(crate::membership::Versioned::new(1, format!("127.0.0.{}:7380", i + 2)));
                s.tokens = Some(crate::membership::Versioned::new(
                    2,
                    std::sync::Arc::from(vec![i as u64 * 7]),
                ));
                s.status = Some(crate::membership::Versioned::new(3, MemberStatus::Normal));
                (NodeId(format!("n{i}")), s)
            })
            .collect();
        g.restore(&saved);
        g
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        // The working directory is the crate's, on the real disk.
        let dir = std::env::temp_dir().join(format!("corekv-membership-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn saved_membership_loads_back_and_a_missing_file_is_none() {
        let dir = scratch("roundtrip");
        assert!(load_saved(&dir).unwrap().is_empty());
        let g = gossiper_knowing(4);
        save(&dir, &g).unwrap();
        assert_eq!(load_saved(&dir).unwrap(), g.peer_states());
        assert!(!dir.join(format!("{STATE_FILE}.tmp")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_membership_file_is_a_clear_error() {
        let dir = scratch("damaged");
        save(&dir, &gossiper_knowing(2)).unwrap();
        let path = dir.join(STATE_FILE);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        for (bytes, says) in [
            (flipped, "checksum"),
            (good[..good.len() - 3].to_vec(), "bytes"),
            (good[..5].to_vec(), "header"),
            (b"NOTMEMB1\0\0\0\0\0\0\0\0".to_vec(), "magic"),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let e = load_saved(&dir).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("delete the file"), "{e}");
        }
        let mut future = good.clone();
        future[7] = b'2';
        std::fs::write(&path, &future).unwrap();
        let e = load_saved(&dir).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the saved cluster membership {} has format version 2; this build reads version 1",
                path.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_fingerprint_ignores_heartbeats_but_not_entries() {
        let g = gossiper_knowing(2);
        let before = fingerprint(&g);
        let mut beat = g.clone();
        let mut s = beat.peer_states()[0].1.clone();
        s.heartbeat += 5;
        beat.restore(&[(NodeId("n0".into()), s.clone())]);
        assert_eq!(fingerprint(&beat), before);
        s.status = Some(crate::membership::Versioned::new(9, MemberStatus::Leaving));
        beat.restore(&[(NodeId("n0".into()), s)]);
        assert_ne!(fingerprint(&beat), before);
    }
}
