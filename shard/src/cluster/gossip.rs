//! The gossiper's driver on core 0: rounds on a timer, messages over the
//! node-to-node GOSSIP frame (one-way: the frame's answer carries nothing),
//! and the resulting view published to every core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use corekv_net::msg::peer::{PeerOp, PeerRequest};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{client_address, local_tokens, Cluster, View};
use crate::config::Config;
use crate::membership::{
    wire, GossipConfig, Gossiper, LocalNode, MemberStatus, Message, Output, PhiConfig, ShardPorts,
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
    vnodes: u32,
    timeout: Duration,
}

impl GossipState {
    /// A gossiper for this node, announcing itself with `status` (NORMAL,
    /// or JOINING for a node bootstrapping into a running cluster).
    pub fn new(config: &Config, seed: u64, status: MemberStatus) -> GossipState {
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
        GossipState {
            gossiper: RefCell::new(Gossiper::new(gc, local, generation)),
            rng: RefCell::new(SmallRng::seed_from_u64(seed)),
            epoch: Cell::new(1),
            vnodes: u32::try_from(config.cluster.vnodes).unwrap_or(256),
            timeout: Duration::from_millis(config.cluster.gossip_interval_ms.clamp(100, 2000)),
        }
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

/// Rebuilds the view from the gossiper's state and publishes it.
fn publish(cluster: &Cluster, g: &GossipState) {
    let gossiper = g.gossiper.borrow();
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
        match Ring::new(next, g.vnodes) {
            Ok(r) => Some(std::sync::Arc::new(r)),
            Err(e) => {
                tracing::warn!(error = %e, "the ring after the moves is not a ring; keeping the previous view");
                return;
            }
        }
    } else {
        None
    };
    match Ring::new(current, g.vnodes) {
        Ok(ring) => {
            g.epoch.set(g.epoch.get() + 1);
            cluster.shared().publish(View {
                ring: std::sync::Arc::new(ring),
                next,
                ports,
                epoch: g.epoch.get(),
            });
        }
        Err(e) => tracing::warn!(error = %e, "gossip state does not make a ring; keeping the previous view"),
    }
}
