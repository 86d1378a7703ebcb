//! Cluster mode: the coordinator, replica, hint and gossip state machines
//! (`coordinator`, `replication`, `membership`) driven by the real server.
//!
//! A node is in cluster mode when `cluster.seeds` is set. Then every key has
//! `cluster.replication_factor` replicas on the ring, and a client request is
//! coordinated on the core that stores the key on a replica node
//! ([`ClusterCmd`], executed by [`execute`]). The coordinator
//!
//! 1. makes the key's next version from its own replica's record, under the
//!    key's lock, and writes it durably (a replica must hold every dot it
//!    issued before it issues the next, docs/versions.md);
//! 2. sends it to the other replicas' owning cores (node-to-node MUTATE), and
//!    answers the client after the level's number of durable acks;
//! 3. keeps a durable hint ([`hints`]) for each replica that did not ack
//!    by the deadline, replayed when gossip sees the replica up.
//!
//! A read asks every live replica, merges (siblings survive), answers after
//! the level's number of answers, and writes the merge back to replicas whose
//! answer differed (read repair).
//!
//! Membership runs on core 0 ([`gossip`]): the gossiper's view of the ring
//! is published to every core through [`SharedView`], an `Arc` swap read once
//! per request. Nothing else is shared between cores.
//!
//! Compare-and-set on the value (CAS_VALUE) and serial reads are Paxos
//! rounds among the key's replicas ([`paxos`]).
//!
//! INCR is a Paxos add on the same register.
//!
//! What cluster mode does not do yet: the version CAS, EXPIRE/TTL,
//! NX/XX, SCAN and LIST answer with an error naming the limitation.

pub mod admin;
pub mod drain;
pub mod elastic;
pub mod forward;
pub mod gossip;
pub mod hints;
pub mod inbound;
pub mod paxos;
pub mod repair;
pub mod restore;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use corekv_net::msg::peer::{PeerOp, PeerRequest};
use corekv_net::msg::ErrorCode;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use crate::config::{Config, ConflictModeSetting};
use crate::coordinator::{
    Consistency, Mutation, ReadOp, ReadOutput, ReadRequest, ReplicaPlan, WriteOp, WriteOutput, WriteRequest,
};
use crate::error::{Error, Result};
use crate::membership::ShardPorts;
use crate::runtime::Shard;
use crate::server::peer::{PeerAnswer, PeerPool, PeerPoolOptions};
use crate::store::{now_ms, Cmd, Failure, FailureKind, Key, Reply};
use crate::topology::{core_of_vnode, Node, NodeId, Ring, Token};
use crate::versioning::{self, Actor, Context, Dvv, Hlc, LwwRegister, Record, Value};

pub use inbound::handle_peer_request;

/// A coordinated request, executed on the key's owning core of a replica node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterCmd {
    /// Read the key. Reply: [`Reply::Versions`].
    Get {
        /// The key.
        key: Key,
        /// Answers required.
        consistency: Consistency,
        /// Deadline from now.
        timeout_ms: u64,
    },
    /// Write (`value: Some`) or delete (`None`) the key. Reply: [`Reply::Ok`].
    Write {
        /// The key.
        key: Key,
        /// The new value; `None` deletes.
        value: Option<Vec<u8>>,
        /// Absolute expiry (ms since the epoch), 0 = none.
        expiry_ms: u64,
        /// The causal context the client read (`None`: the server picks the
        /// coordinator's replica's context, so one client's successive writes
        /// replace each other rather than piling up siblings).
        context: Option<Vec<u8>>,
        /// Acks required.
        consistency: Consistency,
        /// Deadline from now.
        timeout_ms: u64,
        /// Handed on by a node that is not a replica: never forwarded again
        /// (two nodes disagreeing about the ring must not bounce a write).
        forwarded: bool,
        /// Sloppy quorum allowed: a replica believed down gets its copy sent
        /// to a fallback node, which keeps it as a durable hint, and the
        /// fallback's ack counts toward the level.
        sloppy: bool,
    },
    /// An encoded gossip message for core 0's gossiper. Reply: [`Reply::Ok`].
    Gossip(Vec<u8>),
    /// Core 0: announce this node's new status. Reply: [`Reply::Ok`].
    Announce(crate::membership::MemberStatus),
    /// Core 0: remove a dead node from the ring. Reply: [`Reply::Bool`]
    /// (false: not a node believed down).
    Remove(NodeId),
    /// Core 0: tell the live peers this node is shutting down
    /// ([`drain::announce`]). Reply: [`Reply::Counts`] (`answered`, `told`).
    Shutdown,
    /// This core's hints pending, per target node. Reply: [`Reply::Counts`].
    PendingHints,
    /// Core 0: an operator added this waiting node
    /// (`cluster.auto_bootstrap = false`): start gossip and the bootstrap.
    /// Reply: [`Reply::Bool`] (false: the node was not waiting).
    Join,
    /// The acceptor's side of one Paxos message, on the key's owning core.
    /// Reply: [`Reply::Paxos`].
    Paxos {
        /// The key.
        key: Key,
        /// The proposer's message.
        msg: crate::coordinator::PaxosMsg,
    },
    /// Set the expiry of the key's value: a read at `consistency`, then a
    /// write of the same bytes with the new expiry and the read's context,
    /// at `consistency`. Reply: [`Reply::Bool`] (false: no live value).
    /// Refused when the key holds concurrent siblings: one write would
    /// collapse them, and which bytes to keep is the client's decision.
    Expire {
        /// The key.
        key: Key,
        /// The new absolute expiry (ms since the epoch); 0 removes it.
        expiry_ms: u64,
        /// Answers and acks required.
        consistency: Consistency,
        /// Deadline from now, for both steps.
        timeout_ms: u64,
    },
    /// Coordinate a compare-and-set or serial read (any core). Reply:
    /// [`Reply::Cas`].
    Cas {
        /// The key.
        key: Key,
        /// What to do with the register.
        command: crate::coordinator::CasCommand,
        /// Deadline from now.
        timeout_ms: u64,
    },
}

/// One live version of a key, as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    /// The value.
    pub value: Vec<u8>,
    /// Absolute expiry (ms since the epoch), 0 = none.
    pub expiry_ms: u64,
}

/// A coordinated read's answer: the live siblings, newest first, and the
/// context to write back with. No siblings: the key was deleted (the
/// context still supersedes the deletes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// The encoded causal context (empty in `lww` keyspaces).
    pub context: Vec<u8>,
    /// Live values, newest first.
    pub siblings: Vec<Sibling>,
}

/// The cluster as one core sees it.
#[derive(Debug, Clone)]
pub struct View {
    /// Members that own their ranges (NORMAL, LEAVING, DOWN), with their
    /// tokens; status `Down` where gossip convicted them. Reads go here.
    pub ring: Arc<Ring>,
    /// While nodes join or leave: the ring once they have (joiners in,
    /// leavers out). Writes go to both rings' replicas (the pending ones
    /// count extra, `coordinator::write`).
    pub next: Option<Arc<Ring>>,
    /// Shard-aware ports of the members that announced them.
    pub ports: HashMap<NodeId, ShardPorts>,
    /// Grows with every change.
    pub epoch: u64,
}

/// The view every core reads: written by core 0's gossiper, read once per
/// request (an atomic load, and a lock only when the epoch moved).
#[derive(Debug)]
pub struct SharedView {
    view: RwLock<Arc<View>>,
    epoch: AtomicU64,
    /// The node waits to be added ([`elastic::must_wait`]): it refuses
    /// client requests until an operator's `join` clears this.
    waiting: AtomicBool,
}

impl SharedView {
    /// A shared view starting at `view`.
    pub fn new(view: View) -> SharedView {
        SharedView {
            epoch: AtomicU64::new(view.epoch),
            view: RwLock::new(Arc::new(view)),
            waiting: AtomicBool::new(false),
        }
    }

    /// Marks the node as waiting to be added (at start).
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Release);
    }

    /// Whether the node waits to be added.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Ends the wait; true if the node was waiting (once).
    pub(crate) fn take_waiting(&self) -> bool {
        self.waiting.swap(false, Ordering::AcqRel)
    }

    /// Publishes a new view.
    pub fn publish(&self, view: View) {
        let epoch = view.epoch;
        // A poisoned lock only means a reader panicked; the Arc inside is whole.
        let mut w = self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *w = Arc::new(view);
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The current view.
    pub fn load(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// This node's tokens: `cluster.vnodes` hashed from the node id. Every node
/// can compute any node's tokens from its id, and they never change for a
/// node id. (Allocated tokens, `topology::allocate`, come with join.)
pub fn local_tokens(config: &Config) -> Vec<Token> {
    let id = NodeId(config.node.id.clone());
    (0..u32::try_from(config.cluster.vnodes).unwrap_or(256))
        .map(|i| Ring::vnode_token(&id, i))
        .collect()
}

/// The ring node describing this node.
pub fn local_ring_node(config: &Config) -> Node {
    let mut n = Node::new(config.node.id.clone(), client_address(config)).with_tokens(local_tokens(config));
    n.dc = config.cluster.dc.clone();
    if !config.cluster.rack.is_empty() {
        n.rack = Some(config.cluster.rack.clone());
    }
    n
}

/// The address peers and clients reach this node's client port at.
pub fn client_address(config: &Config) -> String {
    format!("{}:{}", config.node.listen, config.ports.client)
}

/// The status a starting node announces: JOINING while it must still
/// bootstrap into a running cluster, else NORMAL.
fn start_status(config: &Config) -> crate::membership::MemberStatus {
    if elastic::must_bootstrap(config) {
        crate::membership::MemberStatus::Joining
    } else {
        crate::membership::MemberStatus::Normal
    }
}

/// The first view of a starting node: the ring its last run saved (peers
/// down until they answer: a restarted node must not take itself for the
/// whole ring and coordinate QUORUM among replicas of one), or itself alone.
pub fn initial_view(config: &Config) -> Result<View> {
    if !config.cluster.seeds.is_empty() {
        if let Some(view) = gossip::GossipState::new(config, 0, start_status(config))?.first_view()? {
            return Ok(view);
        }
    }
    let ring = Ring::new(
        vec![local_ring_node(config)],
        u32::try_from(config.cluster.vnodes).unwrap_or(256),
    )?;
    let mut ports = HashMap::new();
    ports.insert(
        NodeId(config.node.id.clone()),
        ShardPorts {
            base: config.ports.shard_base,
            cores: u16::try_from(config.node.cores).unwrap_or(1),
        },
    );
    Ok(View {
        ring: Arc::new(ring),
        next: None,
        ports,
        epoch: 1,
    })
}

/// This node's data epoch (docs/versions.md, `Actor::derive`): a random
/// number kept in the data directory. A wiped directory gets a new one, so
/// the node then writes as a new actor and cannot reuse dots it forgot.
pub fn data_epoch(dir: &std::path::Path) -> Result<u64> {
    let path = dir.join("node-epoch");
    let io = |what: &str, e: std::io::Error| Error::Runtime {
        what: format!("{what} {}", path.display()),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| Error::Runtime {
            what: format!("reading {}", path.display()),
            reason: format!("not a number ({e}); remove the file only if the node's data is gone too"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
            let epoch = epoch_seed();
            write_durably(dir, "node-epoch", &format!("{epoch}\n")).map_err(|(what, e)| io(what, e))?;
            Ok(epoch)
        }
        Err(e) => Err(io("reading", e)),
    }
}

/// The number this node's actor is derived from ([`Actor::derive`]): its
/// data epoch ([`data_epoch`]) and its incarnation, a counter in the data
/// directory bumped (and synced) at every start. A coordinator sends a write
/// to the other replicas while its own copy is still syncing, so a crash can
/// lose a dot it issued that other replicas keep; restarting as a new actor
/// means it never issues a dot from a state that lacks one of its own
/// (docs/versions.md). Each start adds at most one clock entry to the keys it
/// writes afterwards; the clock bound prunes old ones.
pub fn actor_epoch(dir: &std::path::Path) -> Result<u64> {
    let epoch = data_epoch(dir)?;
    let path = dir.join("node-incarnation");
    let io = |what: &str, e: std::io::Error| Error::Runtime {
        what: format!("{what} {}", path.display()),
        reason: e.to_string(),
    };
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| Error::Runtime {
            what: format!("reading {}", path.display()),
            reason: format!("not a number ({e})"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io("reading", e)),
    };
    let incarnation = last.checked_add(1).ok_or_else(|| Error::Runtime {
        what: format!("reading {}", path.display()),
        reason: "the incarnation counter is at its maximum".into(),
    })?;
    write_durably(dir, "node-incarnation", &format!("{incarnation}\n")).map_err(|(what, e)| io(what, e))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&epoch.to_le_bytes());
    h.update(&incarnation.to_le_bytes());
    Ok(h.digest())
}

/// Replaces `dir/name` by `text` so that a crash leaves the old file or the
/// new one, durably: a temporary file, synced, renamed over it, then the
/// directory synced. On failure, the step that failed and why.
fn write_durably(
    dir: &std::path::Path,
    name: &str,
    text: &str,
) -> std::result::Result<(), (&'static str, std::io::Error)> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| ("writing", e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| ("syncing", e))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| ("renaming", e))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| ("syncing", e))
}

fn epoch_seed() -> u64 {
    rand::random::<u64>()
}

/// One core's cluster state.
#[derive(Debug)]
pub struct Cluster {
    /// This node.
    pub me: NodeId,
    core: usize,
    cores: usize,
    shared: Arc<SharedView>,
    cached: RefCell<Arc<View>>,
    /// Outbound node-to-node connections of this core.
    pub pool: Rc<PeerPool>,
    causal: bool,
    actor: Actor,
    hlc: RefCell<Hlc>,
    rf: usize,
    dc: String,
    timeout: Duration,
    next_id: Cell<u64>,
    /// This core's hints for other nodes.
    pub hints: hints::Hints,
    /// This core's Paxos acceptor state.
    pub paxos: paxos::PaxosStore,
    ballots: RefCell<crate::coordinator::BallotClock>,
    /// Core 0 only: membership.
    pub gossip: Option<gossip::GossipState>,
    /// Replicas per key.
    pub rf_config: usize,
    /// Where the node keeps its data (the join marker lives there).
    pub data_dir: std::path::PathBuf,
}

impl Cluster {
    /// Opens core `core`'s cluster state (its hint store included);
    /// `secret` is the cluster secret its peer pool proves (see
    /// `server::peer::handshake`), `tls` how it reaches other nodes over TLS.
    #[allow(clippy::too_many_arguments)] // one caller, the runtime's core start
    pub async fn open(
        config: &Config,
        core: usize,
        cores: usize,
        shared: Arc<SharedView>,
        epoch: u64,
        fg: glommio::TaskQueueHandle,
        secret: Option<crate::security::ClusterSecret>,
        tls: Option<crate::tls::PeerTls>,
    ) -> Result<Cluster> {
        let me = NodeId(config.node.id.clone());
        let source_ip = config
            .node
            .listen
            .parse::<std::net::IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified());
        let pool = Rc::new(PeerPool::new(
            PeerPoolOptions {
                source_ip,
                connect_timeout: Duration::from_millis(config.cluster.request_timeout_ms.min(1000)),
                limits: corekv_net::msg::Limits {
                    max_frame: u32::try_from(config.limits.max_frame_bytes).unwrap_or(u32::MAX),
                    ..corekv_net::msg::Limits::default()
                },
                max_inflight: 4096,
                reconnect_backoff: Duration::from_millis(200),
                secret,
                node_id: config.node.id.clone(),
                tls,
            },
            fg,
        ));
        let hints = hints::Hints::open(config, core).await?;
        let paxos = paxos::PaxosStore::open(config, core).await?;
        let gossip = if core == 0 {
            Some(gossip::GossipState::new(config, epoch_seed(), start_status(config))?)
        } else {
            None
        };
        let cached = RefCell::new(shared.load());
        Ok(Cluster {
            ballots: paxos::ballot_clock(&me, core),
            paxos,
            actor: Actor::derive(&me, epoch),
            me,
            core,
            cores,
            shared,
            cached,
            pool,
            causal: config.cluster.conflict_mode == ConflictModeSetting::Causal,
            hlc: RefCell::new(Hlc::new(Hlc::DEFAULT_MAX_DRIFT_MS)),
            rf: usize::try_from(config.cluster.replication_factor).unwrap_or(3),
            dc: config.cluster.dc.clone(),
            timeout: Duration::from_millis(config.cluster.request_timeout_ms),
            next_id: Cell::new(1),
            hints,
            gossip,
            rf_config: usize::try_from(config.cluster.replication_factor).unwrap_or(3),
            data_dir: config.node.data_dir.clone(),
        })
    }

    /// The current view (refreshed when core 0 published a newer one).
    pub fn view(&self) -> Arc<View> {
        let epoch = self.shared.epoch();
        if self.cached.borrow().epoch != epoch {
            *self.cached.borrow_mut() = self.shared.load();
        }
        self.cached.borrow().clone()
    }

    /// The shared view (core 0 publishes into it).
    pub fn shared(&self) -> &Arc<SharedView> {
        &self.shared
    }

    /// The core of this node that stores `token`.
    pub fn local_core(&self, token: Token) -> usize {
        let view = self.view();
        local_core_in(view.ring_with(&self.me), &self.me, token, self.cores)
    }

    /// The key's replicas (preference list, rack-aware).
    pub fn replicas(&self, view: &View, token: Token) -> Vec<NodeId> {
        view.ring
            .preference_list_rack_aware(token, self.rf)
            .into_iter()
            .map(|n| n.id.clone())
            .collect()
    }

    /// Where node `id`'s core storing `token` listens.
    pub(crate) fn address_for(&self, view: &View, id: &NodeId, token: Token) -> Option<String> {
        let ring = view.ring_with(id);
        let node = ring.node(id)?;
        match view.ports.get(id) {
            Some(p) if p.cores > 0 && p.base > 0 => {
                let cores = std::num::NonZeroUsize::new(usize::from(p.cores))?;
                let idx = ring.index_of(id)?;
                let v = ring.local_vnode(token, idx)?;
                let core = u16::try_from(core_of_vnode(v.index, cores)).ok()?;
                let (host, _) = node.address.rsplit_once(':')?;
                Some(format!("{host}:{}", p.base.checked_add(core)?))
            }
            // Without its shard ports the node's client port forwards internally.
            _ => Some(node.address.clone()),
        }
    }

    fn fresh_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        (id << 8) | (self.core as u64 & 0xFF)
    }

    fn deadline(&self, timeout_ms: u64) -> (u64, Duration) {
        let t = if timeout_ms == 0 {
            self.timeout
        } else {
            Duration::from_millis(timeout_ms)
        };
        (
            now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            t,
        )
    }
}

/// What a side engine holds and how big it may get.
pub(crate) struct SideEngine<'a> {
    /// Directory name prefix: the engine lives in `<data_dir>/<name>-<core>`.
    pub name: &'a str,
    /// For errors: "the hint store", "the Paxos state".
    pub what: &'a str,
    /// Memtable and WAL segment size.
    pub budget: usize,
    /// Block cache size.
    pub cache: usize,
    /// Longest key.
    pub max_key: usize,
    /// Longest value.
    pub max_value: usize,
}

impl SideEngine<'_> {
    /// Opens core `core`'s engine. Per-core cluster state (hints, Paxos
    /// acceptors) lives in small engines of its own, so scans, streaming and
    /// Merkle trees of the key space never see it.
    pub(crate) async fn open(&self, config: &Config, core: usize) -> Result<corekv_engine::Engine> {
        let dir = config.node.data_dir.join(format!("{}-{core}", self.name));
        let mut o = corekv_engine::Options::new(corekv_engine::Fs::real(), dir);
        o.memtable_bytes = self.budget;
        o.block_cache_bytes = self.cache;
        // Small bookkeeping engines: their reads are not worth a row cache.
        o.row_cache_bytes = 0;
        o.retain_flushed_bytes = 0;
        o.wal.segment_bytes = self.budget as u64;
        o.limits.max_key = self.max_key;
        o.limits.max_value = self.max_value;
        corekv_engine::Engine::open(o).await.map_err(|e| Error::Runtime {
            what: format!("opening {} of core {core}", self.what),
            reason: e.to_string(),
        })
    }
}

/// Closes a side engine (syncing its WAL); `what` names it in the error.
pub(crate) async fn close_side_engine(engine: &corekv_engine::Engine, what: &str) -> Result<()> {
    engine.clone().close().await.map_err(|e| Error::Runtime {
        what: format!("closing {what}"),
        reason: e.to_string(),
    })
}

/// Runs `fut` as a task of its own on this core's foreground queue. Only
/// fails when the executor is shutting down, and then the work is moot.
pub(crate) fn spawn_detached(shard: &Shard, fut: impl std::future::Future<Output = ()> + 'static) {
    if let Ok(t) = glommio::spawn_local_into(fut, shard.fg) {
        t.detach();
    }
}

/// The next event from `events`, or `None` once `deadline` (ms) passed or
/// every sender is gone.
async fn next_before<T>(events: &mut mpsc::UnboundedReceiver<T>, deadline: u64) -> Option<T> {
    let timer = glommio::timer::sleep(Duration::from_millis(deadline.saturating_sub(now_ms())));
    futures::pin_mut!(timer);
    match futures::future::select(events.next(), timer).await {
        futures::future::Either::Left((event, _)) => event,
        futures::future::Either::Right(_) => None,
    }
}

/// The core of node `me` storing `token` (see [`Ring::local_vnode`]). It
/// depends only on `me`'s own tokens, so any ring holding `me` gives it.
pub fn local_core_in(ring: &Ring, me: &NodeId, token: Token, cores: usize) -> usize {
    let cores = std::num::NonZeroUsize::new(cores).unwrap_or(std::num::NonZeroUsize::MIN);
    ring.index_of(me)
        .and_then(|i| ring.local_vnode(token, i))
        .map_or(0, |v| core_of_vnode(v.index, cores))
}

impl View {
    /// A ring that holds `me` (the current one, or the next while `me` joins).
    pub fn ring_with(&self, me: &NodeId) -> &Ring {
        match &self.next {
            Some(next) if self.ring.index_of(me).is_none() => next,
            _ => &self.ring,
        }
    }
}

fn failure(e: &Error) -> Failure {
    let kind = match e {
        Error::Unavailable { .. } => FailureKind::Unavailable,
        // Refused: too many replicas refused for the level, but the others
        // may have applied it: an unknown outcome, as after a timeout.
        Error::Timeout { .. } | Error::Refused { .. } => FailureKind::Timeout,
        Error::TooLarge { .. } => FailureKind::TooLarge,
        _ => FailureKind::Internal,
    };
    Failure::new(kind, e.to_string())
}

fn versioning_failure(e: &Error) -> Failure {
    Failure::new(FailureKind::Invalid, e.to_string())
}

/// Refuses a key over `limits.max_key_bytes` before it is coordinated.
/// Every replica's engine refuses it too, but a coordinator counts a refusal
/// as a replica that did not answer, so without this check the client was
/// told TIMEOUT ("0 replica(s) answered"), which means "may have applied,
/// retry", instead of TOO_LARGE.
fn check_key_size(shard: &Shard, cmd: &ClusterCmd) -> std::result::Result<(), Failure> {
    let key = match cmd {
        ClusterCmd::Get { key, .. }
        | ClusterCmd::Write { key, .. }
        | ClusterCmd::Paxos { key, .. }
        | ClusterCmd::Expire { key, .. }
        | ClusterCmd::Cas { key, .. } => key,
        ClusterCmd::Gossip(_)
        | ClusterCmd::Announce(_)
        | ClusterCmd::Remove(_)
        | ClusterCmd::Shutdown
        | ClusterCmd::PendingHints
        | ClusterCmd::Join => return Ok(()),
    };
    let max = shard.config.limits.max_key_bytes;
    if u64::try_from(key.bytes.len()).map_or(true, |n| n > max) {
        return Err(Failure::new(
            FailureKind::TooLarge,
            format!("key of {} bytes is over limits.max_key_bytes ({max})", key.bytes.len()),
        ));
    }
    Ok(())
}

/// Executes a coordinated request on this core.
pub async fn execute(shard: &Rc<Shard>, cmd: ClusterCmd) -> Reply {
    let Some(cluster) = shard.cluster.clone() else {
        return Reply::Failed(Failure::new(FailureKind::Invalid, "this node is not in cluster mode"));
    };
    if let Err(f) = check_key_size(shard, &cmd) {
        return Reply::Failed(f);
    }
    let client = matches!(
        cmd,
        ClusterCmd::Get { .. } | ClusterCmd::Write { .. } | ClusterCmd::Expire { .. } | ClusterCmd::Cas { .. }
    );
    if client && cluster.shared.waiting() {
        // Its view is itself alone: coordinating now would take writes no
        // replica of the cluster sees.
        return Reply::Failed(Failure::new(
            FailureKind::Unavailable,
            format!(
                "node {} waits to be added to the cluster (cluster.auto_bootstrap = false): add it with \
                 POST /api/v1/admin/cluster/nodes on a member, then send requests to it once it is NORMAL",
                cluster.me
            ),
        ));
    }
    let r = match cmd {
        ClusterCmd::Get {
            key,
            consistency,
            timeout_ms,
        } => coordinate_read(shard, &cluster, key, consistency, timeout_ms)
            .await
            .map(Reply::Versions),
        ClusterCmd::Write {
            key,
            value,
            expiry_ms,
            context,
            consistency,
            timeout_ms,
            forwarded,
            sloppy,
        } => {
            let w = forward::Forwarded {
                key,
                value,
                expiry_ms,
                context,
                consistency,
                timeout_ms,
                sloppy,
            };
            coordinate_write(shard, &cluster, w, forwarded)
                .await
                .map(|()| Reply::Ok)
        }
        ClusterCmd::Gossip(payload) => gossip::on_payload(shard, &cluster, &payload).map(|()| Reply::Ok),
        ClusterCmd::Announce(status) if cluster.gossip.is_some() => {
            gossip::announce(&cluster, status);
            Ok(Reply::Ok)
        }
        ClusterCmd::Remove(id) if cluster.gossip.is_some() => Ok(Reply::Bool(gossip::remove(&cluster, &id))),
        ClusterCmd::Shutdown if cluster.gossip.is_some() => {
            let (answered, told) = drain::announce(shard, &cluster).await;
            Ok(Reply::Counts(vec![
                ("answered".to_owned(), answered as u64),
                ("told".to_owned(), told as u64),
            ]))
        }
        ClusterCmd::PendingHints => Ok(Reply::Counts(cluster.hints.pending_by_target())),
        ClusterCmd::Join if cluster.gossip.is_some() => Ok(Reply::Bool(elastic::start_join(shard, &cluster))),
        ClusterCmd::Announce(_) | ClusterCmd::Remove(_) | ClusterCmd::Shutdown | ClusterCmd::Join => {
            Err(Failure::new(FailureKind::Internal, "membership commands run on core 0"))
        }
        ClusterCmd::Paxos { key, msg } => paxos::accept(shard, &cluster, &key, msg).await.map(Reply::Paxos),
        ClusterCmd::Expire {
            key,
            expiry_ms,
            consistency,
            timeout_ms,
        } => expire(shard, &cluster, key, expiry_ms, consistency, timeout_ms)
            .await
            .map(Reply::Bool),
        ClusterCmd::Cas {
            key,
            command,
            timeout_ms,
        } => paxos::coordinate_cas(shard, &cluster, key, command, timeout_ms)
            .await
            .map(|o| Reply::Cas {
                applied: o.applied,
                value: o.value,
            }),
    };
    r.unwrap_or_else(Reply::Failed)
}

/// See [`ClusterCmd::Expire`]. Not atomic: a write that lands between the
/// read and the write stays beside it as a sibling (its context did not
/// cover the expiry's write), so nothing is lost, but that write keeps its
/// own expiry.
async fn expire(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    key: Key,
    expiry_ms: u64,
    consistency: Consistency,
    timeout_ms: u64,
) -> std::result::Result<bool, Failure> {
    // The read and the write share one deadline. `timeout_ms` 0 means the
    // node's default (every RESP command and any client that sets none), so
    // it is resolved first: "now + 0" left the write 1 ms, and it timed out
    // unless a remote replica synced and acked within that millisecond.
    let (deadline, _) = cluster.deadline(timeout_ms);
    let read_ms = deadline.saturating_sub(now_ms()).max(1);
    let Some(v) = coordinate_read(shard, cluster, key.clone(), consistency, read_ms).await? else {
        return Ok(false);
    };
    let value = match v.siblings.as_slice() {
        [] => return Ok(false),
        [one] => one.value.clone(),
        many => {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!(
                    "the key holds {} concurrent values (siblings); write the one to keep with its \
                     context (GET_VERSIONS, PUT_VERSIONED), then set its expiry",
                    many.len()
                ),
            ))
        }
    };
    let w = forward::Forwarded {
        key,
        value: Some(value),
        expiry_ms,
        context: Some(v.context).filter(|c| !c.is_empty()),
        consistency,
        timeout_ms: deadline.saturating_sub(now_ms()).max(1),
        sloppy: false,
    };
    coordinate_write(shard, cluster, w, false).await.map(|()| true)
}

/// Refuses a key this node holds no replica of, naming the replicas.
fn not_a_replica(view: &View, replicas: &[NodeId]) -> Failure {
    let addrs: Vec<String> = replicas
        .iter()
        .filter_map(|id| view.ring.node(id).map(|n| format!("{id}@{}", n.address)))
        .collect();
    Failure::new(
        FailureKind::Unavailable,
        format!(
            "this node is not a replica of the key; send it to one of: {}",
            addrs.join(", ")
        ),
    )
}

/// Hands a write to a replica of its key that gossip believes up, trying
/// the next one when a replica cannot be reached (a node killed a moment ago
/// is not convicted yet). A write sent to a replica that then died may have
/// applied there too; trying the next replica can then leave the value twice,
/// as two siblings, which loses nothing.
async fn forward_write(
    cluster: &Cluster,
    view: &View,
    replicas: &[NodeId],
    w: &forward::Forwarded,
) -> std::result::Result<(), Failure> {
    let up = |id: &NodeId| {
        view.ring
            .node(id)
            .is_some_and(|n| n.status != crate::topology::NodeStatus::Down)
    };
    let mut payload = Vec::new();
    w.encode(&mut payload);
    let req = PeerRequest {
        from: &cluster.me.0,
        op: PeerOp::Coordinate { payload: &payload },
    };
    let (deadline, _) = cluster.deadline(w.timeout_ms);
    let mut tried = Vec::new();
    for to in replicas.iter().filter(|id| up(id)) {
        let Some(addr) = cluster.address_for(view, to, w.key.token) else {
            continue;
        };
        let left = Duration::from_millis(deadline.saturating_sub(now_ms()));
        if left.is_zero() {
            break;
        }
        match cluster.pool.call(&addr, &req, left).await {
            Ok(PeerAnswer::Coordinated { payload }) => {
                return forward::decode_outcome(&payload)
                    .map_err(|e| Failure::new(FailureKind::Internal, format!("{to} answered: {e}")))?
            }
            Ok(PeerAnswer::Failed { code, message }) => {
                let kind = match code {
                    ErrorCode::DISK_FULL => FailureKind::DiskFull,
                    ErrorCode::FENCED => FailureKind::Fenced,
                    _ => FailureKind::Unavailable,
                };
                return Err(Failure::new(kind, format!("{to}: {message}")));
            }
            Ok(other) => return Err(Failure::new(FailureKind::Internal, format!("{to} answered {other:?}"))),
            Err(e @ Error::PeerTimeout { .. }) => {
                return Err(Failure::new(
                    FailureKind::Unavailable,
                    format!("forwarding to replica {to}: {e} (the write may still apply)"),
                ))
            }
            Err(e) => tried.push(format!("{to}: {e}")),
        }
    }
    Err(Failure::new(
        FailureKind::Unavailable,
        format!("no replica of the key could take the write ({})", tried.join("; ")),
    ))
}

async fn coordinate_write(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    w: forward::Forwarded,
    forwarded: bool,
) -> std::result::Result<(), Failure> {
    let view = cluster.view();
    let replicas = cluster.replicas(&view, w.key.token);
    if !replicas.contains(&cluster.me) {
        if forwarded {
            return Err(not_a_replica(&view, &replicas));
        }
        return forward_write(cluster, &view, &replicas, &w).await;
    }
    let forward::Forwarded {
        key,
        value,
        expiry_ms,
        context,
        consistency,
        timeout_ms,
        sloppy,
    } = w;
    let core = local_core_in(&view.ring, &cluster.me, key.token, cluster.cores);
    if core != shard.id {
        // The coordinator must be the core holding this replica's record.
        let cmd = ClusterCmd::Write {
            key,
            value,
            expiry_ms,
            context,
            consistency,
            timeout_ms,
            forwarded,
            sloppy,
        };
        return match shard.exec(core, Cmd::Cluster(cmd)).await {
            Reply::Ok => Ok(()),
            Reply::Failed(f) => Err(f),
            other => Err(Failure::new(
                FailureKind::Internal,
                format!("unexpected reply {other:?}"),
            )),
        };
    }
    let v = match value {
        Some(bytes) if expiry_ms > 0 => Value::put_expiring(bytes, expiry_ms),
        Some(bytes) => Value::put(bytes),
        None => Value::tombstone(now_ms()),
    };
    let ctx = match &context {
        // No bytes: the empty context (a blind write that supersedes
        // nothing), as docs/client.md promises.
        Some(c) if c.is_empty() => Some(Context::new()),
        Some(c) => Some(Context::decode(c).map_err(|e| versioning_failure(&e))?),
        None => None,
    };
    let ts = cluster.hlc.borrow_mut().now(now_ms());
    let (actor, causal) = (cluster.actor, cluster.causal);
    // The coordinator's own replica takes the new version first: its next
    // update of the key must see this dot. Its WAL sync runs while the other
    // replicas get the write (`drive_write` counts the local copy once it is
    // durable), so a slow sync here is one slow replica, which a quorum does
    // not wait for. A crash before that sync may lose the local copy of a dot
    // that other replicas hold; the node then restarts as a new actor (its
    // incarnation, `actor_epoch`), so it never issues a dot from a state that
    // lacks one it issued before.
    let (record, local) = shard
        .store
        .update_record_staged(&key, |cur| {
            if causal {
                let current = match cur {
                    Some(Record::Causal(d)) => d.clone(),
                    Some(Record::Lww(_)) => {
                        return Err(Failure::new(
                            FailureKind::Invalid,
                            "the key holds an lww record but the node runs in causal mode",
                        ))
                    }
                    None => Dvv::new(),
                };
                let ctx = ctx.clone().unwrap_or_else(|| current.context());
                current
                    .update(&ctx, actor, ts, v, &versioning::Limits::default())
                    .map(Record::Causal)
                    .map_err(|e| versioning_failure(&e))
            } else {
                // A client that writes again after an acknowledged write
                // expects the later write to win, even when the earlier one
                // came through a node whose clock runs ahead. This replica
                // holds the key lock and its latest version, so the new
                // version takes a timestamp past it (HLC causality): a
                // sequential write through a replica that saw the earlier one
                // is never lost to clock skew (docs/guarantees.md).
                let ts = match cur {
                    Some(Record::Lww(r)) if r.ts >= ts => r.ts.successor(),
                    _ => ts,
                };
                let mine = Record::Lww(LwwRegister::new(ts, actor, v));
                match cur {
                    Some(c) => c.merge(&mine).map_err(|e| versioning_failure(&e)),
                    None => Ok(mine),
                }
            }
        })
        .await?;
    let (deadline, _) = cluster.deadline(timeout_ms);
    let plan = ReplicaPlan::new(
        &view.ring,
        view.next.as_deref(),
        key.token,
        cluster.rf,
        believed_down(&view),
    );
    let (op, outputs) = WriteOp::start(WriteRequest {
        id: cluster.fresh_id(),
        mutation: Mutation {
            key: key.bytes,
            token: key.token,
            record,
        },
        consistency,
        local_dc: cluster.dc.clone(),
        plan,
        sloppy,
        deadline,
    });
    let (reply_tx, reply_rx) = oneshot::channel();
    let driver = drive_write(shard.clone(), cluster.clone(), op, outputs, Some(local), reply_tx);
    glommio::spawn_local_into(driver, shard.fg)
        .map_err(|e| Failure::new(FailureKind::Internal, format!("cannot spawn a write: {e}")))?
        .detach();
    match reply_rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Failure::new(
            FailureKind::Internal,
            "the write's driver ended without an answer",
        )),
    }
}

/// Which nodes a request's plan takes as down: the ones gossip convicted
/// (status DOWN in the view, in either ring). Such a replica is not waited
/// on: a write sends its copy to a fallback (sloppy quorum) or keeps a hint
/// for it, and a read does not ask it, so a convicted node costs no
/// timeout. A node killed a moment ago and not convicted yet still is.
fn believed_down(view: &View) -> impl Fn(&NodeId) -> bool + '_ {
    move |id: &NodeId| {
        let down = |ring: &Ring| {
            ring.node(id)
                .is_some_and(|n| n.status == crate::topology::NodeStatus::Down)
        };
        down(&view.ring) || view.next.as_deref().is_some_and(down)
    }
}

/// How a node answered a mutation ([`send_mutation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// It acknowledged a durable copy.
    Acked,
    /// It refused (a full disk, a fenced node) or could not be reached: no
    /// ack will come.
    Failed,
    /// No answer by the deadline (it may still apply it).
    NoAnswer,
}

/// Sends one mutation to `to` and reports how it answered. To this node
/// itself, it is merged on the owning core. With `hint_for`, `to` is a
/// sloppy-quorum fallback: it keeps the mutation as a durable hint for
/// that node instead of merging it, and acks once the hint is synced.
async fn send_mutation(
    shard: &Rc<Shard>,
    cluster: &Cluster,
    to: &NodeId,
    m: &Mutation<Record>,
    hint_for: Option<&NodeId>,
    deadline: u64,
) -> Delivery {
    if *to == cluster.me {
        if let Some(target) = hint_for {
            // The plan never picks the coordinator as a fallback (it is a
            // replica); should it, the hint is kept here just the same.
            return match cluster.hints.store(shard, target.clone(), m.clone()).await {
                Ok(_) => Delivery::Acked,
                Err(_) => Delivery::Failed,
            };
        }
        let core = cluster.local_core(m.token);
        let cmd = Cmd::ReplicaMerge {
            key: Key {
                token: m.token,
                bytes: m.key.clone(),
            },
            record: m.record.to_bytes(),
        };
        return match shard.exec(core, cmd).await {
            Reply::Ok => Delivery::Acked,
            _ => Delivery::Failed,
        };
    }
    let view = cluster.view();
    let Some(addr) = cluster.address_for(&view, to, m.token) else {
        return Delivery::Failed;
    };
    let record = m.record.to_bytes();
    let req = PeerRequest {
        from: &cluster.me.0,
        op: PeerOp::Mutate {
            token: m.token,
            key: &m.key,
            record: &record,
            hint_for: hint_for.map_or("", |t| t.0.as_str()),
        },
    };
    let left = Duration::from_millis(deadline.saturating_sub(now_ms()).max(1));
    match cluster.pool.call(&addr, &req, left).await {
        Ok(PeerAnswer::Ack) => Delivery::Acked,
        Err(Error::PeerTimeout { .. }) => Delivery::NoAnswer,
        Ok(PeerAnswer::Failed { code, message }) => {
            tracing::debug!(node = %to, code = code.0, message = %message, "a replica refused a mutation");
            Delivery::Failed
        }
        Ok(_) | Err(_) => Delivery::Failed,
    }
}

async fn drive_write(
    shard: Rc<Shard>,
    cluster: Rc<Cluster>,
    mut op: WriteOp<Record>,
    outputs: Vec<WriteOutput<Record>>,
    mut local: Option<crate::store::LocalWrite>,
    reply: oneshot::Sender<std::result::Result<(), Failure>>,
) {
    let me = cluster.me.clone();
    // (node, whether it acked): a refusal ends the wait for it at once.
    let (tx, mut acks) = mpsc::unbounded::<(NodeId, bool)>();
    let mut reply = Some(reply);
    let mut pending = outputs;
    loop {
        for o in std::mem::take(&mut pending) {
            match o {
                WriteOutput::Send { to, mutation, hint_for } => {
                    if to == me && hint_for.is_none() {
                        // Applied here before the op started: its ack is the
                        // local WAL sync (already done when `local` is None).
                        if let Some(l) = local.take() {
                            let tx = tx.clone();
                            spawn_detached(&shard, async move {
                                let ok = l.durable().await.is_ok();
                                let _ = tx.unbounded_send((to, ok));
                            });
                        } else {
                            let _ = tx.unbounded_send((to, true));
                        }
                        continue;
                    }
                    let (s, c, tx, deadline) = (shard.clone(), cluster.clone(), tx.clone(), op.deadline());
                    spawn_detached(&shard, async move {
                        match send_mutation(&s, &c, &to, &mutation, hint_for.as_ref(), deadline).await {
                            Delivery::Acked => drop(tx.unbounded_send((to, true))),
                            Delivery::Failed => drop(tx.unbounded_send((to, false))),
                            Delivery::NoAnswer => {}
                        }
                    });
                }
                WriteOutput::Reply(r) => {
                    if let Some(tx) = reply.take() {
                        let _ = tx.send(r.map(|_| ()).map_err(|e| failure(&e)));
                    }
                }
                WriteOutput::StoreHint { target, mutation } => {
                    // A hint that cannot be kept is logged by the store: read
                    // repair or anti-entropy bring the replica back instead.
                    let _ = cluster.hints.store(&shard, target, mutation).await;
                }
            }
        }
        if op.is_done() {
            break;
        }
        pending = match next_before(&mut acks, op.deadline()).await {
            Some((from, true)) => op.on_ack(&from),
            Some((from, false)) => op.on_failure(&from),
            None => op.on_tick(now_ms().max(op.deadline())),
        };
    }
    if let Some(l) = local {
        // The plan sent nothing to this node (it never counted itself): the
        // key stays locked until the local copy is durable all the same.
        let _ = l.durable().await;
    }
}

async fn coordinate_read(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    key: Key,
    consistency: Consistency,
    timeout_ms: u64,
) -> std::result::Result<Option<Versions>, Failure> {
    let view = cluster.view();
    let (deadline, _) = cluster.deadline(timeout_ms);
    let plan = ReplicaPlan::new(&view.ring, None, key.token, cluster.rf, believed_down(&view));
    let (op, outputs) = ReadOp::<Record>::start(ReadRequest {
        id: cluster.fresh_id(),
        key: key.bytes.clone(),
        token: key.token,
        consistency,
        local_dc: cluster.dc.clone(),
        plan,
        deadline,
    });
    let (reply_tx, reply_rx) = oneshot::channel();
    let driver = drive_read(shard.clone(), cluster.clone(), key.token, op, outputs, reply_tx);
    glommio::spawn_local_into(driver, shard.fg)
        .map_err(|e| Failure::new(FailureKind::Internal, format!("cannot spawn a read: {e}")))?
        .detach();
    match reply_rx.await {
        Ok(Ok(record)) => Ok(record.and_then(|r| versions_of(&r, now_ms()))),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Failure::new(
            FailureKind::Internal,
            "the read's driver ended without an answer",
        )),
    }
}

/// What a client sees of a record at `now`: live siblings newest first and
/// the context, or `None` when nothing was ever written (a record with only
/// tombstones or expired values still returns its context).
pub fn versions_of(record: &Record, now: u64) -> Option<Versions> {
    let live = |v: &Value| match v {
        Value::Put { bytes, expires_at_ms } if v.is_live_at(now) => Some(Sibling {
            value: bytes.clone(),
            expiry_ms: expires_at_ms.unwrap_or(0),
        }),
        _ => None,
    };
    match record {
        Record::Causal(d) => {
            let mut s: Vec<(u64, Sibling)> = d
                .siblings()
                .filter_map(|(dot, v)| live(v).map(|s| (dot.counter, s)))
                .collect();
            // Counters are HLC-raised, so the largest is the newest write.
            s.sort_by_key(|&(counter, _)| std::cmp::Reverse(counter));
            Some(Versions {
                context: d.context().to_bytes(),
                siblings: s.into_iter().map(|(_, s)| s).collect(),
            })
        }
        Record::Lww(r) => Some(Versions {
            context: Vec::new(),
            siblings: live(&r.value).into_iter().collect(),
        }),
    }
}

async fn fetch(
    shard: &Rc<Shard>,
    cluster: &Cluster,
    to: &NodeId,
    token: Token,
    key: &[u8],
    deadline: u64,
) -> Option<Option<Record>> {
    if *to == cluster.me {
        let core = cluster.local_core(token);
        let cmd = Cmd::ReplicaRead(Key {
            token,
            bytes: key.to_vec(),
        });
        return match shard.exec(core, cmd).await {
            Reply::Record(r) => r.map(|b| Record::decode(&b).ok()).map_or(Some(None), |r| r.map(Some)),
            _ => None,
        };
    }
    let view = cluster.view();
    let addr = cluster.address_for(&view, to, token)?;
    let req = PeerRequest {
        from: &cluster.me.0,
        op: PeerOp::Read {
            token,
            key,
            digest_only: false,
        },
    };
    let left = Duration::from_millis(deadline.saturating_sub(now_ms()).max(1));
    match cluster.pool.call(&addr, &req, left).await {
        Ok(PeerAnswer::Record { record: None, .. }) => Some(None),
        Ok(PeerAnswer::Record { record: Some(b), .. }) => Record::decode(&b).ok().map(Some),
        _ => None,
    }
}

type ReadResult = std::result::Result<Option<Record>, Failure>;

async fn drive_read(
    shard: Rc<Shard>,
    cluster: Rc<Cluster>,
    token: Token,
    mut op: ReadOp<Record>,
    outputs: Vec<ReadOutput<Record>>,
    reply: oneshot::Sender<ReadResult>,
) {
    let (tx, mut answers) = mpsc::unbounded::<(NodeId, Option<Record>)>();
    let mut reply = Some(reply);
    let mut pending = outputs;
    loop {
        for o in std::mem::take(&mut pending) {
            match o {
                ReadOutput::Send { to } => {
                    let (s, c, tx, deadline) = (shard.clone(), cluster.clone(), tx.clone(), op.deadline());
                    let key = op.key().to_vec();
                    spawn_detached(&shard, async move {
                        if let Some(r) = fetch(&s, &c, &to, token, &key, deadline).await {
                            let _ = tx.unbounded_send((to, r));
                        }
                    });
                }
                ReadOutput::Reply(r) => {
                    if let Some(tx) = reply.take() {
                        let _ = tx.send(r.map(|rr| rr.record).map_err(|e| failure(&e)));
                    }
                }
                ReadOutput::ReadRepair { to, mutation } => {
                    // Fire and forget: anti-entropy catches a repair lost on the way.
                    let (s, c) = (shard.clone(), cluster.clone());
                    let deadline = now_ms() + u64::try_from(cluster.timeout.as_millis()).unwrap_or(2000);
                    spawn_detached(&shard, async move {
                        send_mutation(&s, &c, &to, &mutation, None, deadline).await;
                    });
                }
            }
        }
        if op.is_done() {
            return;
        }
        pending = match next_before(&mut answers, op.deadline()).await {
            Some((from, record)) => op.on_response(&from, record),
            None => op.on_tick(now_ms().max(op.deadline())),
        };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_start_is_a_new_actor_of_the_same_data_epoch() {
        let dir = std::env::temp_dir().join(format!("corekv-actor-epoch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = actor_epoch(&dir).unwrap();
        let epoch = std::fs::read_to_string(dir.join("node-epoch")).unwrap();
        let second = actor_epoch(&dir).unwrap();
        assert_ne!(first, second, "a restart must not reuse the actor");
        assert_eq!(std::fs::read_to_string(dir.join("node-epoch")).unwrap(), epoch);
        assert_eq!(
            std::fs::read_to_string(dir.join("node-incarnation")).unwrap().trim(),
            "2"
        );
        // A wiped directory starts a new data epoch, so even incarnation 1
        // is a different actor.
        std::fs::remove_dir_all(&dir).unwrap();
        let wiped = actor_epoch(&dir).unwrap();
        assert!(wiped != first && wiped != second);
        std::fs::write(dir.join("node-incarnation"), "garbage").unwrap();
        assert!(actor_epoch(&dir).is_err(), "an unreadable counter stops the start");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
