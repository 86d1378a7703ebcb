//! The simulated cluster: nodes running the shard's coordinator, hint and
//! Paxos state machines over a faulty network, with crashing disks, clients,
//! topology changes, and the final heal, repair and invariant checks.
//!
//! Everything is driven by one seeded RNG and a virtual clock, and every
//! collection is ordered (no `HashMap` iteration), so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};

use corekv_shard::coordinator::{
    Acceptor, BallotClock, CasCommand, CasOp, CasOutcome, CasOutput, CasRequest, Consistency, Mutation, PaxosMsg,
    PaxosReply, ReadOp, ReadOutput, ReadRequest, ReplicaPlan, RequestId, Versioned, WriteOp, WriteOutput, WriteRequest,
};
use corekv_shard::replication::{
    reconcile, Hint, HintConfig, HintId, HintStore, MerkleBuilder, MerkleTree, TokenRange,
};
use corekv_shard::versioning::{Actor, Context, Dot, Dvv, Hlc, Limits, Record, Value};
use corekv_shard::{token_of, Error, Node as RingNode, NodeId, Ring};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use corekv_tests::torture::linearizable::{self, Kind as LinKind, Op as LinOp};

/// Replication factor.
pub const RF: usize = 3;
/// Vnodes per node: few, so vnode ranges (and Merkle trees) stay cheap.
const VNODES: u32 = 8;
/// Nodes at the start; two spares may join.
const INITIAL_NODES: usize = 6;
const SPARE_NODES: usize = 2;
/// Milliseconds between ticks of the state machines.
const TICK: u64 = 5;
/// Milliseconds between fault rolls and hint passes.
const SLOW_TICK: u64 = 50;
/// A request's deadline, from its start at the coordinator.
const REQUEST_TIMEOUT: u64 = 200;
/// A CAS's deadline (it may need several prepare rounds).
const CAS_TIMEOUT: u64 = 400;
/// How long a client waits before it calls the outcome unknown.
const CLIENT_TIMEOUT: u64 = 600;
/// How long a move waits between its start and its streaming (longer than
/// any request started before it can live, so no write of the old plan is
/// still in flight when the new owners are filled).
const MOVE_STREAM_DELAY: u64 = 2 * REQUEST_TIMEOUT + 50;
/// Virtual time the network runs fault-free before the final repair.
const DRAIN: u64 = 1_500;
/// Merkle depth in the simulation (64 leaves per vnode range).
const MERKLE_DEPTH: u32 = 6;
/// A physical clock origin, so HLC timestamps look like real ones.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Deliberate bugs, to show the checker catches them. All off in real runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// The coordinator answers a write before any replica acknowledged (W = 0).
    pub zero_w: bool,
    /// Replicas acknowledge writes before they are durable.
    pub ack_before_sync: bool,
    /// A node keeps its actor after a crash that lost unsynced versions.
    pub keep_actor_after_crash: bool,
    /// Hints are stored but never replayed, and no Merkle repair runs.
    pub no_hints_no_repair: bool,
    /// Paxos acceptors reply before their state is durable.
    pub volatile_acceptors: bool,
}

/// One simulation run's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: the whole run follows from it.
    pub seed: u64,
    /// Client operations in the run.
    pub ops: usize,
    /// Deliberate bugs.
    pub bugs: Bugs,
}

impl SimConfig {
    /// The standard run of `seed`.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            ops: 200,
            bugs: Bugs::default(),
        }
    }
}

/// What a run did, to show the faults and mechanisms were exercised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client ops answered successfully.
    pub ops_ok: u64,
    /// Client ops answered with an error.
    pub ops_err: u64,
    /// Client ops without an answer.
    pub ops_unknown: u64,
    /// Acknowledged causal writes (puts and deletes).
    pub writes_acked: u64,
    /// CAS ops answered with `applied`.
    pub cas_applied: u64,
    /// Messages sent between endpoints (not counting local delivery).
    pub messages: u64,
    /// Messages the network dropped.
    pub dropped: u64,
    /// Messages the network duplicated.
    pub duplicated: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Completed joins.
    pub joins: u64,
    /// Completed leaves.
    pub leaves: u64,
    /// Hints stored.
    pub hints_stored: u64,
    /// Hints acknowledged by their target.
    pub hints_delivered: u64,
    /// Read repairs applied.
    pub read_repairs: u64,
    /// Key states changed by the final Merkle repair.
    pub merkle_repairs: u64,
    /// Virtual milliseconds simulated.
    pub virtual_ms: u64,
}

impl Stats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &Stats) {
        self.ops_ok += o.ops_ok;
        self.ops_err += o.ops_err;
        self.ops_unknown += o.ops_unknown;
        self.writes_acked += o.writes_acked;
        self.cas_applied += o.cas_applied;
        self.messages += o.messages;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.joins += o.joins;
        self.leaves += o.leaves;
        self.hints_stored += o.hints_stored;
        self.hints_delivered += o.hints_delivered;
        self.read_repairs += o.read_repairs;
        self.merkle_repairs += o.merkle_repairs;
        self.virtual_ms += o.virtual_ms;
    }
}

/// A disk: what was synced survives a crash; what was not is lost.
#[derive(Debug, Clone)]
struct Disk<K: Ord, V> {
    synced: BTreeMap<K, V>,
    /// Writes since the last sync (`None`: a deletion).
    unsynced: BTreeMap<K, Option<V>>,
}

impl<K: Ord + Clone, V: Clone> Disk<K, V> {
    fn new() -> Self {
        Disk {
            synced: BTreeMap::new(),
            unsynced: BTreeMap::new(),
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        match self.unsynced.get(k) {
            Some(v) => v.as_ref(),
            None => self.synced.get(k),
        }
    }

    fn put(&mut self, k: K, v: V) {
        self.unsynced.insert(k, Some(v));
    }

    fn delete(&mut self, k: K) {
        self.unsynced.insert(k, None);
    }

    /// Writes `v` and syncs this key at once (streamed data is durable
    /// before the stream completes).
    fn put_synced(&mut self, k: K, v: V) {
        self.unsynced.remove(&k);
        self.synced.insert(k, v);
    }

    fn sync(&mut self) {
        for (k, v) in std::mem::take(&mut self.unsynced) {
            match v {
                Some(v) => self.synced.insert(k, v),
                None => self.synced.remove(&k),
            };
        }
    }

    fn crash(&mut self) {
        self.unsynced.clear();
    }

    fn entries(&self) -> BTreeMap<K, V> {
        let mut out = self.synced.clone();
        for (k, v) in &self.unsynced {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        out
    }
}

/// Who sends and receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ep {
    Node(usize),
    Client(usize),
}

/// A client's answer.
#[derive(Debug, Clone)]
enum ClientResult {
    Put(Result<(), String>),
    Get(Result<Option<Record>, String>),
    /// `Err(true)`: definitely not applied (unavailable); `Err(false)`: unknown.
    Cas(Result<CasOutcome, bool>),
}

#[derive(Debug, Clone)]
enum Msg {
    Put {
        client: usize,
        op: u64,
        /// The checker's record of this write.
        write: usize,
        key: Vec<u8>,
        value: Value,
        ctx: Context,
        consistency: Consistency,
        sloppy: bool,
        forwarded: bool,
    },
    Get {
        client: usize,
        op: u64,
        key: Vec<u8>,
        consistency: Consistency,
    },
    Cas {
        client: usize,
        op: u64,
        key: Vec<u8>,
        command: CasCommand,
    },
    Reply {
        op: u64,
        result: ClientResult,
    },
    Write {
        req: RequestId,
        mutation: Mutation<Record>,
        hint_for: Option<NodeId>,
    },
    WriteAck {
        req: RequestId,
    },
    Read {
        req: RequestId,
        key: Vec<u8>,
    },
    ReadResp {
        req: RequestId,
        record: Option<Record>,
    },
    Repair {
        mutation: Mutation<Record>,
    },
    HintReplay {
        id: HintId,
        mutation: Mutation<Record>,
    },
    HintAck {
        id: HintId,
    },
    Paxos {
        req: RequestId,
        key: Vec<u8>,
        msg: PaxosMsg,
    },
    PaxosResp {
        req: RequestId,
        reply: PaxosReply,
    },
}

#[derive(Debug)]
enum Event {
    Deliver { from: Ep, to: Ep, msg: Msg },
    Sync { node: usize, incarnation: u64 },
    Tick,
    ClientNext { client: usize },
    ClientTimeout { client: usize, op: u64 },
    Restart { node: usize },
    Crash { node: usize },
    Heal,
}

struct WriteCtx {
    op: WriteOp<Record>,
    client: usize,
    client_op: u64,
    /// The zero-W bug already answered the client.
    answered: bool,
}

struct ReadCtx {
    op: ReadOp<Record>,
    client: usize,
    client_op: u64,
}

struct CasCtx {
    op: CasOp,
    client: usize,
    client_op: u64,
}

struct SimNode {
    id: NodeId,
    dc: String,
    up: bool,
    /// In the ring, or joining it.
    member: bool,
    /// Bumped at every restart: timers of a previous life are ignored.
    incarnation: u64,
    /// The data epoch: bumped when unsynced versions may have been lost,
    /// so the node writes as a new actor.
    epoch: u64,
    /// Physical clock offset from the virtual clock.
    skew: u64,
    hlc: Hlc,
    ballots: BallotClock,
    data: Disk<Vec<u8>, Record>,
    hint_disk: Disk<u64, Vec<u8>>,
    paxos_disk: Disk<Vec<u8>, Vec<u8>>,
    hints: HintStore<Record>,
    acceptors: BTreeMap<Vec<u8>, Acceptor>,
    writes: BTreeMap<RequestId, WriteCtx>,
    reads: BTreeMap<RequestId, ReadCtx>,
    cas: BTreeMap<RequestId, CasCtx>,
    /// Messages to send once the next sync completes (durable acks).
    after_sync: Vec<(Ep, Msg)>,
    sync_scheduled: bool,
}

fn hint_config() -> HintConfig {
    HintConfig {
        retry: 300,
        max_pending: 10_000,
        ..HintConfig::default()
    }
}

impl SimNode {
    fn new(i: usize, skew: u64) -> Self {
        SimNode {
            id: node_id(i),
            dc: if i.is_multiple_of(2) { "dc1" } else { "dc2" }.to_owned(),
            up: false,
            member: false,
            incarnation: 0,
            epoch: 0,
            skew,
            hlc: Hlc::new(Hlc::DEFAULT_MAX_DRIFT_MS),
            ballots: BallotClock::new(ballot_tag(i, 0)),
            data: Disk::new(),
            hint_disk: Disk::new(),
            paxos_disk: Disk::new(),
            hints: HintStore::new(hint_config()),
            acceptors: BTreeMap::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            cas: BTreeMap::new(),
            after_sync: Vec::new(),
            sync_scheduled: false,
        }
    }

    fn actor(&self) -> Actor {
        Actor::derive(&self.id, self.epoch)
    }
}

fn node_id(i: usize) -> NodeId {
    NodeId(format!("n{i}"))
}

fn idx(id: &NodeId) -> usize {
    id.0[1..]
        .parse()
        .unwrap_or_else(|_| panic!("not a simulated node id: {id}"))
}

fn ballot_tag(node: usize, incarnation: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{node}/{incarnation}").as_bytes())
}

fn value_bytes(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn value_id(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The siblings' dots of a record.
fn sibling_dots(record: Option<&Record>) -> BTreeSet<Dot> {
    match record {
        Some(Record::Causal(d)) => d.siblings().map(|(dot, _)| dot).collect(),
        _ => BTreeSet::new(),
    }
}

/// The replicas a level waits for with N = RF, for the levels whose count
/// does not depend on where the coordinator is.
fn strict(c: Consistency) -> Option<usize> {
    match c {
        Consistency::LocalQuorum => None,
        c => Some(c.required(RF, RF)),
    }
}

fn cas_val(v: &Option<Vec<u8>>) -> Option<u64> {
    v.as_deref().and_then(value_id)
}

#[derive(Debug, Clone, Copy)]
enum MoveKind {
    Join(usize),
    Leave(usize),
}

#[derive(Debug, Clone, Copy)]
struct Move {
    kind: MoveKind,
    stream_at: u64,
}

/// A causal write as the checker sees it.
#[derive(Debug, Clone)]
struct WriteRecord {
    key: Vec<u8>,
    /// The dot its coordinator gave it (`None`: it never reached one).
    dot: Option<Dot>,
    /// The siblings (dots) of the read whose context it carried.
    saw: BTreeSet<Dot>,
    consistency: Consistency,
    sloppy: bool,
    /// When the client got the acknowledgement.
    acked: Option<u64>,
}

/// A successful causal read as the checker sees it.
#[derive(Debug, Clone)]
struct ReadRecord {
    key: Vec<u8>,
    consistency: Consistency,
    invoke: u64,
    /// The siblings it returned.
    dots: BTreeSet<Dot>,
}

#[derive(Debug, Clone)]
enum Pending {
    Get {
        key: Vec<u8>,
        consistency: Consistency,
        invoke: u64,
    },
    Put {
        write: usize,
    },
    Cas {
        key: Vec<u8>,
        history: usize,
    },
}

#[derive(Debug, Clone)]
struct Client {
    busy: Option<(u64, Pending)>,
    /// Per key: the context of the last read, and the siblings it held.
    seen: BTreeMap<Vec<u8>, (Context, BTreeSet<Dot>)>,
    /// Per CAS key: the last value this client saw.
    cas_seen: BTreeMap<Vec<u8>, Option<u64>>,
}

/// The simulated world.
pub struct World {
    cfg: SimConfig,
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    ring: Ring,
    next: Option<Ring>,
    moving: Option<Move>,
    planned: Vec<(u64, MoveKind)>,
    partition: Option<BTreeSet<usize>>,
    faults: bool,
    clients: Vec<Client>,
    ops_left: usize,
    next_id: u64,
    kv_keys: Vec<Vec<u8>>,
    cas_keys: Vec<Vec<u8>>,
    writes: Vec<WriteRecord>,
    /// Which write each dot names.
    dots: BTreeMap<Dot, usize>,
    reads: Vec<ReadRecord>,
    /// Per CAS key, its ops (`None`: an op known to have done nothing).
    cas_history: BTreeMap<Vec<u8>, Vec<Option<LinOp>>>,
    stats: Stats,
}

fn ring_of(members: &BTreeSet<usize>, nodes: &[SimNode]) -> Ring {
    let ring_nodes = members
        .iter()
        .map(|&i| {
            let mut n = RingNode::new(nodes[i].id.0.clone(), format!("10.0.0.{i}:7380"));
            n.dc = nodes[i].dc.clone();
            n
        })
        .collect();
    Ring::new(ring_nodes, VNODES).expect("a simulated ring has nodes")
}

fn pref(ring: &Ring, token: u64) -> Vec<usize> {
    ring.preference_list(token, RF).iter().map(|n| idx(&n.id)).collect()
}

/// Runs one seed: the workload with faults, then heal, hint replay and
/// Merkle repair, then the invariant checks. `Err` describes a violation.
pub fn run(cfg: SimConfig) -> Result<Stats, String> {
    let mut w = World::new(cfg);
    w.run_workload()?;
    w.heal_and_drain()?;
    if !w.cfg.bugs.no_hints_no_repair {
        w.merkle_repair()?;
    }
    w.check()?;
    w.stats.virtual_ms = w.now;
    Ok(w.stats)
}

impl World {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let total = INITIAL_NODES + SPARE_NODES;
        let mut nodes: Vec<SimNode> = (0..total).map(|i| SimNode::new(i, rng.gen_range(0..40))).collect();
        let mut members: BTreeSet<usize> = (0..INITIAL_NODES).collect();
        for &i in &members {
            nodes[i].up = true;
            nodes[i].member = true;
        }
        let ring = ring_of(&members, &nodes);

        // The topology changes of this run, planned now so the CAS keys can
        // be chosen among keys whose replicas every ring of the run agrees on.
        let mut planned = Vec::new();
        let mut rings = vec![ring.clone()];
        let mut spare = INITIAL_NODES;
        let mut times: Vec<u64> = (0..rng.gen_range(0..=2)).map(|_| rng.gen_range(100..900)).collect();
        times.sort_unstable();
        for at in times {
            // Never below 5 nodes.
            let kind = if (rng.gen_bool(0.5) || members.len() <= 5) && spare < total {
                spare += 1;
                members.insert(spare - 1);
                MoveKind::Join(spare - 1)
            } else {
                let leaving = *members.iter().nth(rng.gen_range(0..members.len())).expect("members");
                members.remove(&leaving);
                MoveKind::Leave(leaving)
            };
            planned.push((at, kind));
            rings.push(ring_of(&members, &nodes));
        }

        let kv_keys: Vec<Vec<u8>> = (0..6).map(|i| format!("key-{i}").into_bytes()).collect();
        let cas_keys: Vec<Vec<u8>> = (0..)
            .map(|i| format!("cas-{i}").into_bytes())
            .filter(|k| {
                let t = token_of(k);
                rings.windows(2).all(|w| pref(&w[0], t) == pref(&w[1], t))
            })
            .take(2)
            .collect();
        let clients = (0..4)
            .map(|_| Client {
                busy: None,
                seen: BTreeMap::new(),
                cas_seen: BTreeMap::new(),
            })
            .collect();
        let ops_left = cfg.ops;
        let mut w = World {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            ring,
            next: None,
            moving: None,
            planned,
            partition: None,
            faults: true,
            clients,
            ops_left,
            next_id: 1,
            kv_keys,
            cas_keys,
            writes: Vec::new(),
            dots: BTreeMap::new(),
            reads: Vec::new(),
            cas_history: BTreeMap::new(),
            stats: Stats::default(),
        };
        w.schedule(0, Event::Tick);
        for c in 0..w.clients.len() {
            let at = w.rng.gen_range(0..20);
            w.schedule(at, Event::ClientNext { client: c });
        }
        w
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn schedule(&mut self, delay: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), e);
    }

    fn step(&mut self) -> bool {
        let Some(((at, _), e)) = self.queue.pop_first() else {
            return false;
        };
        debug_assert!(at >= self.now);
        self.now = at;
        self.handle(e);
        true
    }

    fn run_workload(&mut self) -> Result<(), String> {
        while !(self.ops_left == 0 && self.clients.iter().all(|c| c.busy.is_none())) {
            if !self.step() {
                return Err("the event queue ran dry during the workload".into());
            }
            if self.now > 120_000 {
                return Err("the workload did not finish in 120 virtual seconds".into());
            }
        }
        Ok(())
    }

    fn heal_and_drain(&mut self) -> Result<(), String> {
        self.faults = false;
        self.partition = None;
        for i in 0..self.nodes.len() {
            if self.nodes[i].member && !self.nodes[i].up {
                self.restart(i);
            }
        }
        let until = self.now + DRAIN;
        while self.now < until || self.moving.is_some() || !self.planned.is_empty() {
            if !self.step() {
                return Err("the event queue ran dry while draining".into());
            }
            if self.now > until + 20_000 {
                return Err("topology changes did not complete after the heal".into());
            }
        }
        Ok(())
    }

    // ---- the network ----

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|side| side.contains(&a) != side.contains(&b))
    }

    fn send(&mut self, from: Ep, to: Ep, msg: Msg) {
        if from == to {
            // Local delivery: no network, no loss, but still a separate event
            // so it interleaves like everything else.
            self.schedule(0, Event::Deliver { from, to, msg });
            return;
        }
        self.stats.messages += 1;
        if self.faults && self.rng.gen_bool(0.03) {
            self.stats.dropped += 1;
            return;
        }
        // Client connections are TCP: lossy when a node goes away, never
        // duplicating. The replication protocol is at-least-once.
        let between_nodes = matches!((from, to), (Ep::Node(_), Ep::Node(_)));
        let copies = if self.faults && between_nodes && self.rng.gen_bool(0.03) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.rng.gen_range(1..=6);
            if self.faults && self.rng.gen_bool(0.05) {
                // A slow path: reorders this message behind later ones.
                delay += self.rng.gen_range(20..250);
            }
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    /// The failure detector: true state (down, left, or cut off by a
    /// partition), wrong now and then while faults are on.
    fn beliefs(&mut self, observer: usize) -> Vec<bool> {
        (0..self.nodes.len())
            .map(|t| {
                if t == observer {
                    return false;
                }
                let truth = !self.nodes[t].up || !self.nodes[t].member || self.partitioned(observer, t);
                if self.faults && self.rng.gen_bool(0.05) {
                    !truth
                } else {
                    truth
                }
            })
            .collect()
    }

    fn schedule_sync(&mut self, n: usize) {
        if !self.nodes[n].sync_scheduled {
            self.nodes[n].sync_scheduled = true;
            let delay = self.rng.gen_range(1..=4);
            let incarnation = self.nodes[n].incarnation;
            self.schedule(delay, Event::Sync { node: n, incarnation });
        }
    }

    /// Sends `msg` once `n`'s writes so far are durable (or at once, with
    /// the matching bug).
    fn send_durable(&mut self, n: usize, to: Ep, msg: Msg, early: bool) {
        if early {
            self.send(Ep::Node(n), to, msg);
        } else {
            self.nodes[n].after_sync.push((to, msg));
            self.schedule_sync(n);
        }
    }

    // ---- events ----

    fn handle(&mut self, e: Event) {
        match e {
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::Sync { node, incarnation } => {
                let n = &mut self.nodes[node];
                if !n.up || n.incarnation != incarnation {
                    return;
                }
                n.sync_scheduled = false;
                n.data.sync();
                n.hint_disk.sync();
                n.paxos_disk.sync();
                for (to, msg) in std::mem::take(&mut n.after_sync) {
                    self.send(Ep::Node(node), to, msg);
                }
            }
            Event::Tick => self.tick(),
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientTimeout { client, op } => {
                if matches!(&self.clients[client].busy, Some((o, _)) if *o == op) {
                    self.client_done(client, op, None);
                }
            }
            Event::Restart { node } => {
                if self.nodes[node].member && !self.nodes[node].up {
                    self.restart(node);
                }
            }
            Event::Heal => self.partition = None,
            Event::Crash { node } => {
                let n = &self.nodes[node];
                if self.faults && n.up && n.member {
                    self.crash(node);
                    let downtime = self.rng.gen_range(50..600);
                    self.schedule(downtime, Event::Restart { node });
                }
            }
        }
    }

    fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        let n = &mut self.nodes[i];
        n.up = false;
        n.incarnation += 1;
        n.data.crash();
        n.hint_disk.crash();
        n.paxos_disk.crash();
        n.writes.clear();
        n.reads.clear();
        n.cas.clear();
        n.after_sync.clear();
        n.sync_scheduled = false;
    }

    fn restart(&mut self, i: usize) {
        let keep_actor = self.cfg.bugs.keep_actor_after_crash;
        let n = &mut self.nodes[i];
        n.up = true;
        n.incarnation += 1;
        if !keep_actor {
            // Unsynced versions may be gone: write as a new actor.
            n.epoch += 1;
        }
        n.hlc = Hlc::new(Hlc::DEFAULT_MAX_DRIFT_MS);
        n.ballots = BallotClock::new(ballot_tag(i, n.incarnation));
        let hints = n
            .hint_disk
            .entries()
            .values()
            .map(|b| Hint::decode(b).expect("a synced hint decodes"))
            .collect::<Vec<Hint<Record>>>();
        n.hints = HintStore::restore(hint_config(), hints);
        n.acceptors = n
            .paxos_disk
            .entries()
            .into_iter()
            .map(|(k, b)| (k, Acceptor::decode(&b).expect("synced Paxos state decodes")))
            .collect();
    }

    fn tick(&mut self) {
        let slow = self.now.is_multiple_of(SLOW_TICK);
        if slow && self.faults {
            self.roll_faults();
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].up {
                self.tick_node(n, slow);
            }
        }
        self.advance_moves();
        self.schedule(TICK, Event::Tick);
    }

    fn roll_faults(&mut self) {
        let members: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].member).collect();
        let down = members.iter().filter(|&&i| !self.nodes[i].up).count();
        if down < 2 && self.rng.gen_bool(0.06) {
            let up: Vec<usize> = members.iter().copied().filter(|&i| self.nodes[i].up).collect();
            let victim = up[self.rng.gen_range(0..up.len())];
            self.crash(victim);
            let downtime = self.rng.gen_range(50..600);
            self.schedule(downtime, Event::Restart { node: victim });
        }
        if self.partition.is_none() && self.rng.gen_bool(0.04) {
            let size = self.rng.gen_range(1..=members.len() / 2);
            let mut side = BTreeSet::new();
            while side.len() < size {
                side.insert(members[self.rng.gen_range(0..members.len())]);
            }
            self.partition = Some(side);
            self.stats.partitions += 1;
            let length = self.rng.gen_range(100..800);
            self.schedule(length, Event::Heal);
        }
    }

    fn tick_node(&mut self, n: usize, slow: bool) {
        let now = self.now;
        let ids: Vec<RequestId> = self.nodes[n].writes.keys().copied().collect();
        for req in ids {
            let out = match self.nodes[n].writes.get_mut(&req) {
                Some(w) => w.op.on_tick(now),
                None => continue,
            };
            self.write_outputs(n, req, out);
        }
        let ids: Vec<RequestId> = self.nodes[n].reads.keys().copied().collect();
        for req in ids {
            let out = match self.nodes[n].reads.get_mut(&req) {
                Some(r) => r.op.on_tick(now),
                None => continue,
            };
            self.read_outputs(n, req, out);
        }
        let ids: Vec<RequestId> = self.nodes[n].cas.keys().copied().collect();
        for req in ids {
            let node = &mut self.nodes[n];
            let out = match node.cas.get_mut(&req) {
                Some(c) => c.op.on_tick(now, &mut node.ballots),
                None => continue,
            };
            self.cas_outputs(n, req, out);
        }
        if slow && !self.cfg.bugs.no_hints_no_repair {
            self.hint_pass(n);
        }
    }

    /// What gossip would trigger: replay hints to targets seen up, re-address
    /// hints whose target is no longer a replica of their key, expire old ones.
    fn hint_pass(&mut self, n: usize) {
        let now = self.now;
        let (ring, next) = (self.ring.clone(), self.next.clone());
        let misaddressed = self.nodes[n].hints.take_where(|h| {
            let t = idx(&h.target);
            let mut owners = pref(&ring, h.mutation.token);
            if let Some(next) = &next {
                owners.extend(pref(next, h.mutation.token));
            }
            !owners.contains(&t)
        });
        for h in misaddressed {
            self.nodes[n].hint_disk.delete(h.id.0);
            self.store_hint(n, h.target, h.mutation);
        }
        let tick = self.nodes[n].hints.on_tick(now);
        for id in tick.expired {
            self.nodes[n].hint_disk.delete(id.0);
        }
        let mut replays = tick.resend;
        let beliefs = self.beliefs(n);
        for target in self.nodes[n].hints.targets() {
            if beliefs[idx(&target)] {
                self.nodes[n].hints.on_node_down(&target);
            } else {
                replays.extend(self.nodes[n].hints.on_node_up(&target, now));
            }
        }
        for h in replays {
            let to = Ep::Node(idx(&h.target));
            self.send(
                Ep::Node(n),
                to,
                Msg::HintReplay {
                    id: h.id,
                    mutation: h.mutation,
                },
            );
        }
    }

    /// Keeps a hint on `n` for `target`; a target that is no longer an
    /// owner of the key is replaced by the key's current owners.
    fn store_hint(&mut self, n: usize, target: NodeId, mutation: Mutation<Record>) -> bool {
        let t = idx(&target);
        let mut owners = pref(&self.ring, mutation.token);
        if let Some(next) = &self.next {
            owners.extend(pref(next, mutation.token));
        }
        let targets = if owners.contains(&t) { vec![t] } else { owners };
        let mut all = true;
        for t in targets {
            if t == n {
                self.apply_local(n, &mutation);
                continue;
            }
            let now = self.now;
            match self.nodes[n].hints.add(node_id(t), mutation.clone(), now) {
                Ok(hint) => {
                    let mut bytes = Vec::new();
                    hint.encode(&mut bytes).expect("simulated hints are small");
                    let id = hint.id.0;
                    self.nodes[n].hint_disk.put(id, bytes);
                    self.stats.hints_stored += 1;
                    self.schedule_sync(n);
                }
                Err(Error::HintsFull { .. }) => all = false,
                Err(e) => panic!("unexpected hint error: {e}"),
            }
        }
        all
    }

    /// Now and then a node dies right after a write, inside the window where
    /// the write is not yet durable: where durability bugs hide.
    fn crash_point(&mut self, n: usize) {
        if self.faults && self.rng.gen_bool(0.01) {
            let at = self.rng.gen_range(0..4);
            self.schedule(at, Event::Crash { node: n });
        }
    }

    fn apply_local(&mut self, n: usize, m: &Mutation<Record>) {
        let node = &mut self.nodes[n];
        let merged = match node.data.get(&m.key) {
            Some(have) => have.merge(&m.record).expect("causal records merge"),
            None => m.record.clone(),
        };
        node.data.put(m.key.clone(), merged);
        self.schedule_sync(n);
    }

    // ---- messages ----

    fn deliver(&mut self, from: Ep, to: Ep, msg: Msg) {
        let n = match to {
            Ep::Client(c) => {
                if let Msg::Reply { op, result } = msg {
                    self.client_done(c, op, Some(result));
                }
                return;
            }
            Ep::Node(n) => n,
        };
        if !self.nodes[n].up {
            return;
        }
        if let Ep::Node(f) = from {
            if self.partitioned(f, n) {
                return;
            }
        }
        let now = self.now;
        match msg {
            Msg::Put {
                client,
                op,
                write,
                key,
                value,
                ctx,
                consistency,
                sloppy,
                forwarded,
            } => self.coordinate_put(n, client, op, write, key, value, ctx, consistency, sloppy, forwarded),
            Msg::Get {
                client,
                op,
                key,
                consistency,
            } => self.coordinate_get(n, client, op, key, consistency),
            Msg::Cas {
                client,
                op,
                key,
                command,
            } => self.coordinate_cas(n, client, op, key, command),
            Msg::Reply { .. } => {}
            Msg::Write {
                req,
                mutation,
                hint_for,
            } => {
                let stored = match hint_for {
                    Some(target) => self.store_hint(n, target, mutation),
                    None => {
                        self.apply_local(n, &mutation);
                        true
                    }
                };
                if stored {
                    let early = self.cfg.bugs.ack_before_sync;
                    self.send_durable(n, from, Msg::WriteAck { req }, early);
                }
                self.crash_point(n);
            }
            Msg::WriteAck { req } => {
                let Ep::Node(f) = from else { return };
                let out = match self.nodes[n].writes.get_mut(&req) {
                    Some(w) => w.op.on_ack(&node_id(f)),
                    None => return,
                };
                self.write_outputs(n, req, out);
            }
            Msg::Read { req, key } => {
                let record = self.nodes[n].data.get(&key).cloned();
                self.send(Ep::Node(n), from, Msg::ReadResp { req, record });
            }
            Msg::ReadResp { req, record } => {
                let Ep::Node(f) = from else { return };
                let out = match self.nodes[n].reads.get_mut(&req) {
                    Some(r) => r.op.on_response(&node_id(f), record),
                    None => return,
                };
                self.read_outputs(n, req, out);
            }
            Msg::Repair { mutation } => {
                self.stats.read_repairs += 1;
                self.apply_local(n, &mutation);
            }
            Msg::HintReplay { id, mutation } => {
                self.apply_local(n, &mutation);
                self.send_durable(n, from, Msg::HintAck { id }, false);
            }
            Msg::HintAck { id } => {
                if self.nodes[n].hints.on_ack(id).is_some() {
                    self.nodes[n].hint_disk.delete(id.0);
                    self.stats.hints_delivered += 1;
                    self.schedule_sync(n);
                }
            }
            Msg::Paxos { req, key, msg } => {
                let node = &mut self.nodes[n];
                let acceptor = node.acceptors.entry(key.clone()).or_default();
                let reply = acceptor.handle(msg);
                let mut bytes = Vec::new();
                acceptor.encode(&mut bytes);
                node.paxos_disk.put(key, bytes);
                self.schedule_sync(n);
                if let Some(reply) = reply {
                    let early = self.cfg.bugs.volatile_acceptors;
                    self.send_durable(n, from, Msg::PaxosResp { req, reply }, early);
                }
                self.crash_point(n);
            }
            Msg::PaxosResp { req, reply } => {
                let Ep::Node(f) = from else { return };
                let node = &mut self.nodes[n];
                let out = match node.cas.get_mut(&req) {
                    Some(c) => c.op.on_reply(&node_id(f), reply, now),
                    None => return,
                };
                self.cas_outputs(n, req, out);
            }
        }
    }

    fn reply(&mut self, n: usize, client: usize, op: u64, result: ClientResult) {
        self.send(Ep::Node(n), Ep::Client(client), Msg::Reply { op, result });
    }

    #[allow(clippy::too_many_arguments)]
    fn coordinate_put(
        &mut self,
        n: usize,
        client: usize,
        op: u64,
        write: usize,
        key: Vec<u8>,
        value: Value,
        ctx: Context,
        consistency: Consistency,
        sloppy: bool,
        forwarded: bool,
    ) {
        let token = token_of(&key);
        let owners = pref(&self.ring, token);
        let beliefs = self.beliefs(n);
        if !owners.contains(&n) {
            // Only a replica may make the key's next version: forward once.
            let to = owners.iter().copied().find(|&o| !beliefs[o]);
            match to {
                Some(to) if !forwarded => {
                    let msg = Msg::Put {
                        client,
                        op,
                        write,
                        key,
                        value,
                        ctx,
                        consistency,
                        sloppy,
                        forwarded: true,
                    };
                    self.send(Ep::Node(n), Ep::Node(to), msg);
                }
                _ => self.reply(n, client, op, ClientResult::Put(Err("no replica to forward to".into()))),
            }
            return;
        }
        let physical = EPOCH_MS + self.now + self.nodes[n].skew;
        let node = &mut self.nodes[n];
        let ts = node.hlc.now(physical);
        let actor = node.actor();
        let current = match node.data.get(&key) {
            Some(Record::Causal(d)) => d.clone(),
            Some(Record::Lww(_)) => panic!("the simulation only writes causal records"),
            None => Dvv::new(),
        };
        let updated = match current.update(&ctx, actor, ts, value, &Limits::default()) {
            Ok(d) => Record::Causal(d),
            Err(e) => {
                self.reply(n, client, op, ClientResult::Put(Err(e.to_string())));
                return;
            }
        };
        if let Record::Causal(d) = &updated {
            let dot = d.siblings().map(|(dot, _)| dot).filter(|d| d.actor == actor).max();
            self.writes[write].dot = dot;
            if let Some(dot) = dot {
                self.dots.insert(dot, write);
            }
        }
        // The coordinator's own replica holds the new version before anyone
        // else: its next update of the key must see this dot.
        self.nodes[n].data.put(key.clone(), updated.clone());
        self.schedule_sync(n);
        self.crash_point(n);
        let plan = ReplicaPlan::new(&self.ring, self.next.as_ref(), token, RF, |id| beliefs[idx(id)]);
        let req = self.fresh_id();
        let (wop, out) = WriteOp::start(WriteRequest {
            id: req,
            mutation: Mutation {
                key,
                token,
                record: updated,
            },
            consistency,
            local_dc: self.nodes[n].dc.clone(),
            plan,
            sloppy,
            deadline: self.now + REQUEST_TIMEOUT,
        });
        let answered = self.cfg.bugs.zero_w;
        if answered {
            self.reply(n, client, op, ClientResult::Put(Ok(())));
        }
        self.nodes[n].writes.insert(
            req,
            WriteCtx {
                op: wop,
                client,
                client_op: op,
                answered,
            },
        );
        self.write_outputs(n, req, out);
    }

    fn write_outputs(&mut self, n: usize, req: RequestId, out: Vec<WriteOutput<Record>>) {
        for o in out {
            match o {
                WriteOutput::Send { to, mutation, hint_for } => {
                    let msg = Msg::Write {
                        req,
                        mutation,
                        hint_for,
                    };
                    self.send(Ep::Node(n), Ep::Node(idx(&to)), msg);
                }
                WriteOutput::Reply(r) => {
                    let Some(w) = self.nodes[n].writes.get(&req) else {
                        continue;
                    };
                    let (client, op, answered) = (w.client, w.client_op, w.answered);
                    if !answered {
                        let r = r.map(|_| ()).map_err(|e| e.to_string());
                        self.reply(n, client, op, ClientResult::Put(r));
                    }
                }
                WriteOutput::StoreHint { target, mutation } => {
                    self.store_hint(n, target, mutation);
                }
            }
        }
        if self.nodes[n].writes.get(&req).is_some_and(|w| w.op.is_done()) {
            self.nodes[n].writes.remove(&req);
        }
    }

    fn coordinate_get(&mut self, n: usize, client: usize, op: u64, key: Vec<u8>, consistency: Consistency) {
        let token = token_of(&key);
        let beliefs = self.beliefs(n);
        let plan = ReplicaPlan::new(&self.ring, None, token, RF, |id| beliefs[idx(id)]);
        let req = self.fresh_id();
        let (rop, out) = ReadOp::start(ReadRequest {
            id: req,
            key,
            token,
            consistency,
            local_dc: self.nodes[n].dc.clone(),
            plan,
            deadline: self.now + REQUEST_TIMEOUT,
        });
        self.nodes[n].reads.insert(
            req,
            ReadCtx {
                op: rop,
                client,
                client_op: op,
            },
        );
        self.read_outputs(n, req, out);
    }

    fn read_outputs(&mut self, n: usize, req: RequestId, out: Vec<ReadOutput<Record>>) {
        for o in out {
            match o {
                ReadOutput::Send { to } => {
                    let Some(r) = self.nodes[n].reads.get(&req) else {
                        continue;
                    };
                    let key = r.op.key().to_vec();
                    self.send(Ep::Node(n), Ep::Node(idx(&to)), Msg::Read { req, key });
                }
                ReadOutput::Reply(r) => {
                    let Some(ctx) = self.nodes[n].reads.get(&req) else {
                        continue;
                    };
                    let (client, op) = (ctx.client, ctx.client_op);
                    let r = r.map(|r| r.record).map_err(|e| e.to_string());
                    self.reply(n, client, op, ClientResult::Get(r));
                }
                ReadOutput::ReadRepair { to, mutation } => {
                    self.send(Ep::Node(n), Ep::Node(idx(&to)), Msg::Repair { mutation });
                }
            }
        }
        if self.nodes[n].reads.get(&req).is_some_and(|r| r.op.is_done()) {
            self.nodes[n].reads.remove(&req);
        }
    }

    fn coordinate_cas(&mut self, n: usize, client: usize, op: u64, key: Vec<u8>, command: CasCommand) {
        let token = token_of(&key);
        let beliefs = self.beliefs(n);
        let plan = ReplicaPlan::new(&self.ring, None, token, RF, |id| beliefs[idx(id)]);
        let req = self.fresh_id();
        let now = self.now;
        let node = &mut self.nodes[n];
        let (cop, out) = CasOp::start(
            CasRequest {
                id: req,
                key,
                replicas: plan.replicas,
                command,
                round_timeout: 40,
                deadline: now + CAS_TIMEOUT,
            },
            now,
            &mut node.ballots,
        );
        node.cas.insert(
            req,
            CasCtx {
                op: cop,
                client,
                client_op: op,
            },
        );
        self.cas_outputs(n, req, out);
    }

    fn cas_outputs(&mut self, n: usize, req: RequestId, out: Vec<CasOutput>) {
        for o in out {
            match o {
                CasOutput::Send { to, msg } => {
                    let Some(c) = self.nodes[n].cas.get(&req) else { continue };
                    let key = c.op.key().to_vec();
                    self.send(Ep::Node(n), Ep::Node(idx(&to)), Msg::Paxos { req, key, msg });
                }
                CasOutput::Reply(r) => {
                    let Some(c) = self.nodes[n].cas.get(&req) else { continue };
                    let (client, op) = (c.client, c.client_op);
                    let r = r.map_err(|e| matches!(e, Error::Unavailable { .. }));
                    self.reply(n, client, op, ClientResult::Cas(r));
                }
            }
        }
        if self.nodes[n].cas.get(&req).is_some_and(|c| c.op.is_done()) {
            self.nodes[n].cas.remove(&req);
        }
    }

    // ---- clients ----

    fn ring_members(&self) -> Vec<usize> {
        self.ring.nodes().iter().map(|n| idx(&n.id)).collect()
    }

    fn client_next(&mut self, c: usize) {
        if self.ops_left == 0 || self.clients[c].busy.is_some() {
            return;
        }
        self.ops_left -= 1;
        let op = self.fresh_id();
        let consistency = Consistency::ALL_LEVELS[self.rng.gen_range(0..Consistency::ALL_LEVELS.len())];
        let members = self.ring_members();
        let roll: f64 = self.rng.gen();
        let (to, msg, pending) = if roll < 0.82 {
            let key = self.kv_keys[self.rng.gen_range(0..self.kv_keys.len())].clone();
            if roll < 0.40 {
                let to = members[self.rng.gen_range(0..members.len())];
                let msg = Msg::Get {
                    client: c,
                    op,
                    key: key.clone(),
                    consistency,
                };
                let invoke = self.now;
                (
                    to,
                    msg,
                    Pending::Get {
                        key,
                        consistency,
                        invoke,
                    },
                )
            } else {
                // A token-aware client sends writes to a replica.
                let owners = pref(&self.ring, token_of(&key));
                let to = owners[self.rng.gen_range(0..owners.len())];
                let blind = self.rng.gen_bool(0.1);
                let (ctx, saw) = match self.clients[c].seen.get(&key) {
                    Some((ctx, saw)) if !blind => (ctx.clone(), saw.clone()),
                    _ => (Context::new(), BTreeSet::new()),
                };
                let id = self.fresh_id();
                let value = if roll < 0.72 {
                    Value::put(value_bytes(id))
                } else {
                    // The simulated clock starts at 0, and 0 means "unknown".
                    Value::tombstone(self.now.max(1))
                };
                let sloppy = self.rng.gen_bool(0.3);
                self.writes.push(WriteRecord {
                    key: key.clone(),
                    dot: None,
                    saw,
                    consistency,
                    sloppy,
                    acked: None,
                });
                let msg = Msg::Put {
                    client: c,
                    op,
                    write: self.writes.len() - 1,
                    key,
                    value,
                    ctx,
                    consistency,
                    sloppy,
                    forwarded: false,
                };
                (
                    to,
                    msg,
                    Pending::Put {
                        write: self.writes.len() - 1,
                    },
                )
            }
        } else {
            let key = self.cas_keys[self.rng.gen_range(0..self.cas_keys.len())].clone();
            let to = members[self.rng.gen_range(0..members.len())];
            let (command, kind) = if self.rng.gen_bool(0.3) {
                (CasCommand::Read, LinKind::Read { result: None })
            } else {
                let expected = self.clients[c].cas_seen.get(&key).copied().flatten();
                let new = self.fresh_id();
                (
                    CasCommand::Cas {
                        expected: expected.map(value_bytes),
                        new: Some(value_bytes(new)),
                    },
                    LinKind::Cas {
                        expected,
                        new: Some(new),
                        result: None,
                    },
                )
            };
            let history = self.cas_history.entry(key.clone()).or_default();
            history.push(Some(LinOp {
                invoke: self.now,
                ret: None,
                kind,
            }));
            let history = history.len() - 1;
            let msg = Msg::Cas {
                client: c,
                op,
                key: key.clone(),
                command,
            };
            (to, msg, Pending::Cas { key, history })
        };
        self.clients[c].busy = Some((op, pending));
        self.send(Ep::Client(c), Ep::Node(to), msg);
        self.schedule(CLIENT_TIMEOUT, Event::ClientTimeout { client: c, op });
    }

    fn client_done(&mut self, c: usize, op: u64, result: Option<ClientResult>) {
        let pending = match &self.clients[c].busy {
            Some((o, p)) if *o == op => p.clone(),
            _ => return,
        };
        self.clients[c].busy = None;
        let now = self.now;
        match (&pending, &result) {
            (_, None) => self.stats.ops_unknown += 1,
            (_, Some(ClientResult::Put(Err(_)) | ClientResult::Get(Err(_)) | ClientResult::Cas(Err(_)))) => {
                self.stats.ops_err += 1
            }
            _ => self.stats.ops_ok += 1,
        }
        match (pending, result) {
            (
                Pending::Get {
                    key,
                    consistency,
                    invoke,
                },
                Some(ClientResult::Get(Ok(record))),
            ) => {
                let seen = match &record {
                    Some(Record::Causal(d)) => (d.context(), d.siblings().map(|(dot, _)| dot).collect()),
                    _ => (Context::new(), BTreeSet::new()),
                };
                self.reads.push(ReadRecord {
                    key: key.clone(),
                    consistency,
                    invoke,
                    dots: seen.1.clone(),
                });
                self.clients[c].seen.insert(key, seen);
            }
            (Pending::Put { write }, Some(ClientResult::Put(Ok(())))) => {
                self.writes[write].acked = Some(now);
                self.stats.writes_acked += 1;
            }
            (Pending::Cas { key, history }, result) => {
                let slot = &mut self.cas_history.get_mut(&key).expect("history")[history];
                let Some(entry) = slot else { return };
                match result {
                    Some(ClientResult::Cas(Ok(outcome))) => {
                        entry.ret = Some(now);
                        let value = cas_val(&outcome.value);
                        match &mut entry.kind {
                            LinKind::Read { result } => *result = value,
                            LinKind::Cas { result, .. } => {
                                *result = Some((outcome.applied, value));
                                if outcome.applied {
                                    self.stats.cas_applied += 1;
                                }
                            }
                        }
                        self.clients[c].cas_seen.insert(key, value);
                    }
                    // Unavailable: nothing was sent, so nothing happened.
                    Some(ClientResult::Cas(Err(true))) => *slot = None,
                    // Unknown outcome: a read changed nothing either; a CAS
                    // stays in the history as one that may or may not have
                    // taken effect.
                    _ => {
                        if matches!(entry.kind, LinKind::Read { .. }) {
                            *slot = None;
                        }
                    }
                }
            }
            _ => {}
        }
        let think = self.rng.gen_range(0..15);
        self.schedule(think, Event::ClientNext { client: c });
    }

    // ---- topology changes ----

    fn advance_moves(&mut self) {
        if self.moving.is_none() {
            let due = self
                .planned
                .first()
                .is_some_and(|(at, _)| *at <= self.now || !self.faults);
            if due {
                let (_, kind) = self.planned.remove(0);
                self.start_move(kind);
            }
            return;
        }
        let Some(m) = self.moving else { return };
        if self.now < m.stream_at {
            return;
        }
        // Streaming reads every old replica: wait until all are up.
        let all_up = (0..self.nodes.len()).all(|i| !self.nodes[i].member || self.nodes[i].up);
        if all_up {
            self.finish_move(m.kind);
        }
    }

    fn start_move(&mut self, kind: MoveKind) {
        let mut members: BTreeSet<usize> = self.ring_members().into_iter().collect();
        match kind {
            MoveKind::Join(j) => {
                members.insert(j);
                let n = &mut self.nodes[j];
                n.member = true;
                n.up = true;
            }
            MoveKind::Leave(l) => {
                members.remove(&l);
            }
        }
        self.next = Some(ring_of(&members, &self.nodes));
        self.moving = Some(Move {
            kind,
            stream_at: self.now + MOVE_STREAM_DELAY,
        });
    }

    /// Streams each key to the replicas it gains (from every old replica,
    /// durably), hands a leaving node's hints over, and switches the ring.
    fn finish_move(&mut self, kind: MoveKind) {
        let Some(next) = self.next.take() else { return };
        let mut keys = BTreeSet::new();
        for n in &self.nodes {
            keys.extend(n.data.entries().into_keys());
        }
        for key in keys {
            let t = token_of(&key);
            let old = pref(&self.ring, t);
            for gain in pref(&next, t).into_iter().filter(|g| !old.contains(g)) {
                for &src in &old {
                    let Some(record) = self.nodes[src].data.get(&key).cloned() else {
                        continue;
                    };
                    let dst = &mut self.nodes[gain].data;
                    let merged = match dst.get(&key) {
                        Some(have) => have.merge(&record).expect("causal records merge"),
                        None => record,
                    };
                    dst.put_synced(key.clone(), merged);
                }
            }
        }
        self.ring = next;
        match kind {
            MoveKind::Join(_) => self.stats.joins += 1,
            MoveKind::Leave(l) => {
                self.stats.leaves += 1;
                // Hand the leaving node's hints to the keys' first owner, durably.
                let hints: Vec<Hint<Record>> = self.nodes[l].hints.iter().cloned().collect();
                for h in hints {
                    let owner = pref(&self.ring, h.mutation.token)[0];
                    self.store_hint(owner, h.target, h.mutation);
                    let n = &mut self.nodes[owner];
                    n.hint_disk.sync();
                    n.data.sync();
                }
                let n = &mut self.nodes[l];
                n.member = false;
                n.up = false;
                n.incarnation += 1;
                n.hints = HintStore::new(hint_config());
            }
        }
        self.moving = None;
    }

    // ---- the end ----

    /// Anti-entropy over the final ring: per vnode range, each pair of its
    /// replicas compares Merkle trees and exchanges the differing ranges.
    fn merkle_repair(&mut self) -> Result<(), String> {
        let ring = self.ring.clone();
        for pos in 0..ring.vnodes().len() {
            let range = TokenRange::of_vnode(&ring, pos);
            let replicas = pref(&ring, ring.vnodes()[pos].token);
            for a in 0..replicas.len() {
                for b in a + 1..replicas.len() {
                    let (ra, rb) = (replicas[a], replicas[b]);
                    let ta = self.tree(ra, range);
                    let tb = self.tree(rb, range);
                    let diff = MerkleTree::diff(&ta, &tb);
                    if diff.is_empty() {
                        continue;
                    }
                    let pick = |n: &SimNode| -> BTreeMap<Vec<u8>, Record> {
                        n.data
                            .entries()
                            .into_iter()
                            .filter(|(k, _)| {
                                let t = token_of(k);
                                diff.iter().any(|r| r.contains(t))
                            })
                            .collect()
                    };
                    let (ea, eb) = (pick(&self.nodes[ra]), pick(&self.nodes[rb]));
                    let ex = reconcile(&ea, &eb).map_err(|e| e.to_string())?;
                    self.stats.merkle_repairs += (ex.to_ours.len() + ex.to_theirs.len()) as u64;
                    for m in ex.to_ours {
                        self.nodes[ra].data.put_synced(m.key, m.record);
                    }
                    for m in ex.to_theirs {
                        self.nodes[rb].data.put_synced(m.key, m.record);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `dot` is among `dots` or was seen by a write among them, or
    /// by a write one of those saw, and so on.
    fn covers(&self, dots: &BTreeSet<Dot>, dot: Dot) -> bool {
        let mut todo: Vec<Dot> = dots.iter().copied().collect();
        let mut done = BTreeSet::new();
        while let Some(d) = todo.pop() {
            if d == dot {
                return true;
            }
            if done.insert(d) {
                if let Some(&w) = self.dots.get(&d) {
                    todo.extend(self.writes[w].saw.iter().copied());
                }
            }
        }
        false
    }

    fn tree(&self, n: usize, range: TokenRange) -> MerkleTree {
        let mut b = MerkleBuilder::new(range, MERKLE_DEPTH);
        for (k, r) in self.nodes[n].data.entries() {
            b.insert(token_of(&k), &k, r.digest());
        }
        b.finish()
    }

    fn check(&self) -> Result<(), String> {
        // (b) Convergence: every replica of every key holds the same state.
        for key in &self.kv_keys {
            let owners = pref(&self.ring, token_of(key));
            let states: Vec<Option<u64>> = owners
                .iter()
                .map(|&o| self.nodes[o].data.get(key).map(Versioned::digest))
                .collect();
            if states.windows(2).any(|w| w[0] != w[1]) {
                let detail: Vec<String> = owners
                    .iter()
                    .map(|&o| {
                        let r = self.nodes[o].data.get(key);
                        let digest = r.map(Versioned::digest);
                        format!("{}: digest {digest:x?} siblings {:?}", node_id(o), sibling_dots(r))
                    })
                    .collect();
                return Err(format!(
                    "replicas of {} did not converge: {}",
                    String::from_utf8_lossy(key),
                    detail.join(", ")
                ));
            }
        }
        // (a) No acknowledged causal write lost: each is a sibling now, or a
        // write whose context had seen it superseded it.
        for w in self.writes.iter().filter(|w| w.acked.is_some()) {
            let Some(dot) = w.dot else {
                return Err(format!(
                    "write to {} acknowledged without a dot",
                    String::from_utf8_lossy(&w.key)
                ));
            };
            let owner = pref(&self.ring, token_of(&w.key))[0];
            let now = sibling_dots(self.nodes[owner].data.get(&w.key));
            let superseded = self.writes.iter().any(|o| o.saw.contains(&dot));
            if !now.contains(&dot) && !superseded {
                return Err(format!(
                    "acknowledged write {dot:?} of {} lost: the key holds {now:?} and no write saw it",
                    String::from_utf8_lossy(&w.key)
                ));
            }
        }
        // (d) Strict quorums read their writes: a read invoked after a
        // non-sloppy write was acknowledged, with W + R > N, returns it or a
        // write that (transitively) saw it.
        for w in self.writes.iter().filter(|w| !w.sloppy) {
            let (Some(acked), Some(dot), Some(wn)) = (w.acked, w.dot, strict(w.consistency)) else {
                continue;
            };
            for r in self.reads.iter().filter(|r| r.key == w.key && r.invoke > acked) {
                let Some(rn) = strict(r.consistency) else { continue };
                if wn + rn <= RF {
                    continue;
                }
                if !self.covers(&r.dots, dot) {
                    return Err(format!(
                        "a {} read of {} at {} ms missed the {} write {dot:?} acknowledged at {acked} ms (read {:?})",
                        r.consistency,
                        String::from_utf8_lossy(&w.key),
                        r.invoke,
                        w.consistency,
                        r.dots
                    ));
                }
            }
        }
        // Hints all delivered once the network healed.
        if !self.cfg.bugs.no_hints_no_repair {
            for n in self.nodes.iter().filter(|n| n.member) {
                if n.hints.pending() > 0 {
                    return Err(format!(
                        "{} still holds {} hints after the heal",
                        n.id,
                        n.hints.pending()
                    ));
                }
            }
        }
        // (c) CAS histories are linearizable.
        for (key, history) in &self.cas_history {
            let history: Vec<LinOp> = history.iter().flatten().cloned().collect();
            linearizable::check(&history).map_err(|e| format!("CAS register {}: {e}", String::from_utf8_lossy(key)))?;
        }
        Ok(())
    }
}
