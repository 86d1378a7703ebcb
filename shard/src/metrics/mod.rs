//! The node's metrics (docs/metrics.md): per-core request counters and
//! latency histograms, filled on the request paths of the three protocols,
//! and the scrape that gathers them with the engines', hints', repair's and
//! the process's figures into the Prometheus text format (`render`).
//!
//! ## Nothing shared between cores
//!
//! Every core keeps its own [`CoreMetrics`] in its [`Shard`], plain
//! `Cell`s that only that core touches: recording a request costs a few
//! integer additions, with no atomic, lock or allocation. A scrape asks each
//! core over the mesh for a [`CoreSample`] (`Cmd::Sample`), which the core
//! builds from its own cells and its own engine, so the figures of one core
//! are consistent with each other and nothing crosses cores but the owned
//! snapshot.
//!
//! Histograms keep one counter per bucket (not cumulative) and the sum in
//! microseconds; the scrape turns them into Prometheus' cumulative buckets.

mod render;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_net::msg::{Consistency as WireConsistency, Opcode};

use crate::runtime::Shard;
use crate::store::{Cmd, Reply};

pub use render::{render, GossipSample, NodeSample, ProcessSample, Snapshot};

/// Every core's sample (over the mesh), in core order; a core that could
/// not answer (shutting down) is left out.
pub async fn core_samples(shard: &Rc<Shard>) -> Vec<CoreSample> {
    let replies = futures::future::join_all((0..shard.cores).map(|c| shard.exec(c, Cmd::Sample))).await;
    replies
        .into_iter()
        .filter_map(|r| match r {
            Reply::Sample(s) => Some(*s),
            _ => None,
        })
        .collect()
}

/// The process's figures, read off the executor (procfs reads block).
pub async fn process_sample() -> Option<ProcessSample> {
    glommio::executor().spawn_blocking(ProcessSample::read).await
}

/// A scrape: every core's sample and the node's figures.
pub async fn collect(shard: &Rc<Shard>) -> Snapshot {
    let cores = core_samples(shard).await;
    let process = process_sample().await;
    let gossip = shard.cluster.as_ref().map(|c| {
        let view = c.view();
        let mut nodes: Vec<(&'static str, u64)> = ["normal", "joining", "leaving", "down"].map(|s| (s, 0)).to_vec();
        let mut count = |s: &'static str, by: u64| {
            if let Some(e) = nodes.iter_mut().find(|(n, _)| *n == s) {
                e.1 += by;
            }
        };
        for n in view.ring.nodes() {
            count(status_name(n.status), 1);
        }
        // Joiners are in the pending ring only.
        if let Some(next) = &view.next {
            let joining = next
                .nodes()
                .iter()
                .filter(|n| view.ring.index_of(&n.id).is_none())
                .count();
            count("joining", joining as u64);
        }
        GossipSample {
            nodes,
            epoch: view.epoch,
            changing: view.next.is_some(),
        }
    });
    Snapshot {
        node: NodeSample {
            node_id: shard.config.node.id.clone(),
            mode: if shard.cluster.is_some() { "cluster" } else { "single" },
            replication_factor: if shard.cluster.is_some() {
                shard.config.cluster.replication_factor
            } else {
                1
            },
            uptime_seconds: shard.started.elapsed().as_secs_f64(),
            gossip,
            process,
        },
        cores,
    }
}

/// A ring status as the metrics and the HTTP status route name it.
pub fn status_name(s: crate::topology::NodeStatus) -> &'static str {
    use crate::topology::NodeStatus;
    match s {
        NodeStatus::Normal => "normal",
        NodeStatus::Joining => "joining",
        NodeStatus::Leaving => "leaving",
        NodeStatus::Down => "down",
    }
}

/// What the cluster status reports of one node, the `stats` operator
/// command's line (docs/protocol.md, "ADMIN").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Bytes of live SSTables on disk (every core).
    pub load_bytes: u64,
    /// The engines' estimate of live keys (every core).
    pub keys: u64,
    /// Resident memory of the process.
    pub memory_bytes: u64,
    /// The figures the dashboard plots; `None` from a node of a version
    /// that did not send them.
    pub detail: Option<NodeDetail>,
}

/// The cumulative request figures and the engine state of one node (every
/// core summed), which the dashboard differences between two polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeDetail {
    /// Microseconds since the process started: the clock the counters are
    /// read against (a smaller value than last time means a restart).
    pub uptime_us: u64,
    /// Client requests answered (every protocol; operator routes, scrapes
    /// and unrouted HTTP requests excepted).
    pub requests: u64,
    /// Of those, the ones answered with an error.
    pub errors: u64,
    /// Their durations: requests per bucket of [`BUCKETS_US`] (not
    /// cumulative), the last counting the slower ones.
    pub latency_buckets: [u64; SLOTS],
    /// Sum of their durations, microseconds.
    pub latency_sum_us: u64,
    /// Bytes the compactions have yet to rewrite (every core).
    pub compaction_debt_bytes: u64,
    /// Bytes in memtables (every core).
    pub memtable_bytes: u64,
    /// Live SSTables (every core).
    pub sstables: u64,
    /// The worst storage state of the node's cores.
    pub storage: StorageState,
}

/// Whether a node's engines take writes, worst first when cores differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum StorageState {
    /// Writes are taken.
    #[default]
    Ok = 0,
    /// Compactions keep failing; writes stop once level 0 is full.
    CompactionFailing = 1,
    /// The disk is full; writes fail once the memtables are.
    DiskFull = 2,
    /// A write or sync failed: writes are refused until a restart.
    Fenced = 3,
}

impl StorageState {
    const ALL: [StorageState; 4] = [
        StorageState::Ok,
        StorageState::CompactionFailing,
        StorageState::DiskFull,
        StorageState::Fenced,
    ];

    /// The state of one engine.
    pub fn of(h: &corekv_engine::Health) -> StorageState {
        use corekv_engine::Health;
        match h {
            Health::Ok => StorageState::Ok,
            Health::CompactionFailing { .. } => StorageState::CompactionFailing,
            Health::DiskFull { .. } => StorageState::DiskFull,
            // Fenced, and whatever a later engine adds: refuse to call it ok.
            _ => StorageState::Fenced,
        }
    }

    /// The name the status route answers.
    pub fn name(self) -> &'static str {
        match self {
            StorageState::Ok => "ok",
            StorageState::CompactionFailing => "compaction_failing",
            StorageState::DiskFull => "disk_full",
            StorageState::Fenced => "fenced",
        }
    }
}

/// The `stats` line's name of latency bucket `i` ([`BUCKETS_US`], then the
/// overflow bucket).
fn bucket_word(i: usize) -> String {
    match BUCKETS_US.get(i) {
        Some(b) => format!("latency_le_{b}us"),
        None => "latency_over".to_owned(),
    }
}

impl NodeStats {
    /// As one line of `name=value` words (the `stats` operator command).
    /// Every value is an unsigned integer, as the first version's reader
    /// requires, and that reader skips the names it does not know: a node
    /// of that version still reads this line during a rolling upgrade.
    pub fn to_line(self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "load_bytes={} keys={} memory_bytes={}",
            self.load_bytes, self.keys, self.memory_bytes
        );
        if let Some(d) = self.detail {
            let _ = write!(
                out,
                " uptime_us={} requests={} errors={} latency_sum_us={} compaction_debt_bytes={} \
                 memtable_bytes={} sstables={} storage={}",
                d.uptime_us,
                d.requests,
                d.errors,
                d.latency_sum_us,
                d.compaction_debt_bytes,
                d.memtable_bytes,
                d.sstables,
                d.storage as u64
            );
            for (i, n) in d.latency_buckets.iter().enumerate() {
                let _ = write!(out, " {}={n}", bucket_word(i));
            }
        }
        out.push('\n');
        out
    }

    /// Reads a line [`NodeStats::to_line`] wrote; `None` if it is not one.
    /// The detail is `None` unless every one of its words is there (a node
    /// of the first version sends only the first three).
    pub fn parse(line: &str) -> Option<NodeStats> {
        let mut words: Vec<(&str, u64)> = Vec::new();
        for w in line.split_whitespace() {
            let (k, v) = w.split_once('=')?;
            words.push((k, v.parse().ok()?));
        }
        let get = |k: &str| words.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let detail = (|| {
            let mut latency_buckets = [0u64; SLOTS];
            for (i, b) in latency_buckets.iter_mut().enumerate() {
                *b = get(&bucket_word(i))?;
            }
            let storage = get("storage")?;
            Some(NodeDetail {
                uptime_us: get("uptime_us")?,
                requests: get("requests")?,
                errors: get("errors")?,
                latency_buckets,
                latency_sum_us: get("latency_sum_us")?,
                compaction_debt_bytes: get("compaction_debt_bytes")?,
                memtable_bytes: get("memtable_bytes")?,
                sstables: get("sstables")?,
                storage: *StorageState::ALL.iter().find(|s| **s as u64 == storage)?,
            })
        })();
        Some(NodeStats {
            load_bytes: get("load_bytes")?,
            keys: get("keys")?,
            memory_bytes: get("memory_bytes")?,
            detail,
        })
    }
}

/// Whether requests of `op` count in a node's figures ([`NodeDetail`]):
/// what clients ask, not what operators and scrapers do (the dashboard's
/// own polls would otherwise show as traffic).
fn counts_as_client(op: OpKind) -> bool {
    !matches!(op, OpKind::Admin | OpKind::Metrics | OpKind::Other)
}

/// This node's load, keys, memory, request counters and engine state.
pub async fn node_stats(shard: &Rc<Shard>) -> NodeStats {
    let cores = core_samples(shard).await;
    let process = process_sample().await;
    let mut d = NodeDetail {
        uptime_us: u64::try_from(shard.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        ..NodeDetail::default()
    };
    for c in &cores {
        for s in c.series.iter().filter(|s| counts_as_client(s.op)) {
            d.requests = d.requests.wrapping_add(s.count());
            d.errors = d.errors.wrapping_add(s.errors);
            d.latency_sum_us = d.latency_sum_us.wrapping_add(s.sum_us);
            for (sum, n) in d.latency_buckets.iter_mut().zip(s.buckets) {
                *sum = sum.wrapping_add(n);
            }
        }
        d.compaction_debt_bytes += c.compaction_debt;
        d.memtable_bytes += c.engine.memtable_bytes;
        d.sstables += c.engine.levels.iter().map(|l| l.0 as u64).sum::<u64>();
        d.storage = d.storage.max(StorageState::of(&c.health));
    }
    NodeStats {
        load_bytes: cores.iter().flat_map(|c| c.engine.levels.iter().map(|l| l.1)).sum(),
        keys: cores.iter().map(|c| c.keys_estimate).sum(),
        memory_bytes: process.map_or(0, |p| p.resident_bytes),
        detail: Some(d),
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// The binary protocol (docs/protocol.md).
    Native = 0,
    /// RESP (docs/resp.md).
    Resp = 1,
    /// HTTP (docs/http.md).
    Http = 2,
}

impl Proto {
    const ALL: [Proto; 3] = [Proto::Native, Proto::Resp, Proto::Http];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Native => "native",
            Proto::Resp => "resp",
            Proto::Http => "http",
        }
    }
}

/// The operation label of a request, shared by the three protocols (a RESP
/// SET is a `put`, an HTTP PUT on a key too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is the operation its label names
pub enum OpKind {
    Get,
    Put,
    Delete,
    Exists,
    MGet,
    MPut,
    Scan,
    List,
    Expire,
    Ttl,
    Incr,
    Cas,
    CasValue,
    SerialGet,
    GetVersions,
    PutVersioned,
    DeleteVersioned,
    Ping,
    Ring,
    Info,
    Admin,
    Metrics,
    Other,
}

const OPS: usize = 23;

impl OpKind {
    const ALL: [OpKind; OPS] = [
        OpKind::Get,
        OpKind::Put,
        OpKind::Delete,
        OpKind::Exists,
        OpKind::MGet,
        OpKind::MPut,
        OpKind::Scan,
        OpKind::List,
        OpKind::Expire,
        OpKind::Ttl,
        OpKind::Incr,
        OpKind::Cas,
        OpKind::CasValue,
        OpKind::SerialGet,
        OpKind::GetVersions,
        OpKind::PutVersioned,
        OpKind::DeleteVersioned,
        OpKind::Ping,
        OpKind::Ring,
        OpKind::Info,
        OpKind::Admin,
        OpKind::Metrics,
        OpKind::Other,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Delete => "delete",
            OpKind::Exists => "exists",
            OpKind::MGet => "mget",
            OpKind::MPut => "mput",
            OpKind::Scan => "scan",
            OpKind::List => "list",
            OpKind::Expire => "expire",
            OpKind::Ttl => "ttl",
            OpKind::Incr => "incr",
            OpKind::Cas => "cas",
            OpKind::CasValue => "cas_value",
            OpKind::SerialGet => "serial_get",
            OpKind::GetVersions => "get_versions",
            OpKind::PutVersioned => "put_versioned",
            OpKind::DeleteVersioned => "delete_versioned",
            OpKind::Ping => "ping",
            OpKind::Ring => "ring",
            OpKind::Info => "info",
            OpKind::Admin => "admin",
            OpKind::Metrics => "metrics",
            OpKind::Other => "other",
        }
    }

    /// The label of a binary-protocol request.
    pub fn of_opcode(op: Opcode) -> OpKind {
        match op {
            Opcode::Get => OpKind::Get,
            Opcode::Put => OpKind::Put,
            Opcode::Delete => OpKind::Delete,
            Opcode::Exists => OpKind::Exists,
            Opcode::MGet => OpKind::MGet,
            Opcode::MPut => OpKind::MPut,
            Opcode::Scan => OpKind::Scan,
            Opcode::List => OpKind::List,
            Opcode::Expire => OpKind::Expire,
            Opcode::Ttl => OpKind::Ttl,
            Opcode::Incr => OpKind::Incr,
            Opcode::Cas => OpKind::Cas,
            Opcode::Ping => OpKind::Ping,
            Opcode::Ring => OpKind::Ring,
            Opcode::GetVersions => OpKind::GetVersions,
            Opcode::PutVersioned => OpKind::PutVersioned,
            Opcode::DeleteVersioned => OpKind::DeleteVersioned,
            Opcode::CasValue => OpKind::CasValue,
            Opcode::SerialGet => OpKind::SerialGet,
        }
    }
}

/// The consistency label: the level a request asked for in cluster mode,
/// `serial` for Paxos rounds (CAS on the value, serial reads, INCR in a
/// cluster), `none` on a single node (where every level is the one copy)
/// and for requests without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is the level its label names
pub enum Level {
    None,
    One,
    Two,
    Quorum,
    All,
    LocalQuorum,
    Serial,
}

const LEVELS: usize = 7;

impl Level {
    const ALL: [Level; LEVELS] = [
        Level::None,
        Level::One,
        Level::Two,
        Level::Quorum,
        Level::All,
        Level::LocalQuorum,
        Level::Serial,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::One => "one",
            Level::Two => "two",
            Level::Quorum => "quorum",
            Level::All => "all",
            Level::LocalQuorum => "local_quorum",
            Level::Serial => "serial",
        }
    }

    /// The label of a coordinator level.
    pub fn of(c: crate::coordinator::Consistency) -> Level {
        use crate::coordinator::Consistency as C;
        match c {
            C::One => Level::One,
            C::Two => Level::Two,
            C::Quorum => Level::Quorum,
            C::All => Level::All,
            C::LocalQuorum => Level::LocalQuorum,
        }
    }

    /// The label of a binary-protocol request on a node in cluster mode
    /// (`clustered`) or not.
    pub fn of_request(clustered: bool, op: Opcode, c: WireConsistency) -> Level {
        if !clustered {
            return Level::None;
        }
        match op {
            Opcode::CasValue | Opcode::SerialGet | Opcode::Incr => return Level::Serial,
            Opcode::Ping | Opcode::Ring => return Level::None,
            _ => {}
        }
        match c {
            WireConsistency::One | WireConsistency::Count(1) => Level::One,
            WireConsistency::Count(2) => Level::Two,
            WireConsistency::Quorum => Level::Quorum,
            WireConsistency::All => Level::All,
            WireConsistency::LocalQuorum => Level::LocalQuorum,
            WireConsistency::Count(_) => Level::None,
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds (100 us to 10 s;
/// a last bucket counts what is slower).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

const SLOTS: usize = BUCKETS_US.len() + 1;

/// One (protocol, operation, level)'s counters on one core.
#[derive(Debug, Default)]
struct Series {
    /// Requests per bucket (not cumulative); the last is over every bound.
    buckets: [Cell<u64>; SLOTS],
    /// Sum of the durations, microseconds.
    sum_us: Cell<u64>,
    /// Requests answered with an error.
    errors: Cell<u64>,
}

/// A series' figures, as a scrape reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSample {
    /// The listener.
    pub proto: Proto,
    /// The operation.
    pub op: OpKind,
    /// The level.
    pub level: Level,
    /// Requests per bucket, not cumulative ([`BUCKETS_US`], then the rest).
    pub buckets: [u64; SLOTS],
    /// Sum of the durations, microseconds.
    pub sum_us: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

impl SeriesSample {
    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Counters of one core's activity other than requests.
#[derive(Debug, Default)]
struct Activity {
    slow_requests: Cell<u64>,
    connections_open: Cell<u64>,
    connections_accepted: Cell<u64>,
    http_rejected: Cell<u64>,
    stream_in_bytes: Cell<u64>,
    stream_in_records: Cell<u64>,
    stream_out_bytes: Cell<u64>,
    stream_out_records: Cell<u64>,
    repair_ranges_total: Cell<u64>,
    repair_ranges_done: Cell<u64>,
    repairs_running: Cell<u64>,
    repairs_ok: Cell<u64>,
    repairs_failed: Cell<u64>,
}

/// One core's metrics. Only its core touches it.
#[derive(Debug)]
pub struct CoreMetrics {
    series: Box<[Series]>,
    activity: Activity,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            series: (0..Proto::ALL.len() * OPS * LEVELS)
                .map(|_| Series::default())
                .collect(),
            activity: Activity::default(),
        }
    }
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

/// The bucket a duration falls in.
fn slot(us: u64) -> usize {
    BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len())
}

fn index(proto: Proto, op: OpKind, level: Level) -> usize {
    (proto as usize * OPS + op as usize) * LEVELS + level as usize
}

/// A connection's share of the per-core gauges: counted open while it
/// lives.
#[derive(Debug)]
pub struct ConnectionGuard<'a>(&'a CoreMetrics);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        let c = &self.0.activity.connections_open;
        c.set(c.get().saturating_sub(1));
    }
}

impl CoreMetrics {
    /// Counts one request that took `took`.
    pub fn observe(&self, proto: Proto, op: OpKind, level: Level, took: Duration, ok: bool) {
        let s = &self.series[index(proto, op, level)];
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        bump(&s.buckets[slot(us)], 1);
        bump(&s.sum_us, us);
        if !ok {
            bump(&s.errors, 1);
        }
    }

    /// A connection was accepted; it counts as open until the guard drops.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        bump(&self.activity.connections_accepted, 1);
        bump(&self.activity.connections_open, 1);
        ConnectionGuard(self)
    }

    /// An HTTP request was refused at once (too many in flight on the core).
    pub fn http_rejected(&self) {
        bump(&self.activity.http_rejected, 1);
    }

    /// Records pulled from a peer into this node (repair, bootstrap).
    pub fn streamed_in(&self, records: u64, bytes: u64) {
        bump(&self.activity.stream_in_records, records);
        bump(&self.activity.stream_in_bytes, bytes);
    }

    /// Records pushed from this node to a peer (repair, decommission).
    pub fn streamed_out(&self, records: u64, bytes: u64) {
        bump(&self.activity.stream_out_records, records);
        bump(&self.activity.stream_out_bytes, bytes);
    }

    /// A repair of `ranges` ring ranges starts on this core.
    pub fn repair_started(&self, ranges: u64) {
        bump(&self.activity.repairs_running, 1);
        self.activity.repair_ranges_total.set(ranges);
        self.activity.repair_ranges_done.set(0);
    }

    /// The running repair finished one more range.
    pub fn repair_progress(&self) {
        bump(&self.activity.repair_ranges_done, 1);
    }

    /// The running repair ended.
    pub fn repair_finished(&self, ok: bool) {
        let r = &self.activity.repairs_running;
        r.set(r.get().saturating_sub(1));
        bump(
            if ok {
                &self.activity.repairs_ok
            } else {
                &self.activity.repairs_failed
            },
            1,
        );
    }

    fn series_samples(&self) -> Vec<SeriesSample> {
        let mut out = Vec::new();
        for proto in Proto::ALL {
            for op in OpKind::ALL {
                for level in Level::ALL {
                    let s = &self.series[index(proto, op, level)];
                    let buckets: [u64; SLOTS] = std::array::from_fn(|i| s.buckets[i].get());
                    if buckets.iter().all(|&n| n == 0) {
                        continue;
                    }
                    out.push(SeriesSample {
                        proto,
                        op,
                        level,
                        buckets,
                        sum_us: s.sum_us.get(),
                        errors: s.errors.get(),
                    });
                }
            }
        }
        out
    }
}

/// Figures of one core's activity, as a scrape reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivitySample {
    /// Requests slower than `log.slow_request_ms`.
    pub slow_requests: u64,
    /// Client connections open now (every listener).
    pub connections_open: u64,
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// HTTP requests refused because too many were in flight.
    pub http_rejected: u64,
    /// Bytes pulled from peers (repair, bootstrap).
    pub stream_in_bytes: u64,
    /// Records pulled from peers.
    pub stream_in_records: u64,
    /// Bytes pushed to peers (repair, decommission).
    pub stream_out_bytes: u64,
    /// Records pushed to peers.
    pub stream_out_records: u64,
    /// Ring ranges of the running (or last) repair on this core.
    pub repair_ranges_total: u64,
    /// Of those, the ranges done.
    pub repair_ranges_done: u64,
    /// Repairs running on this core.
    pub repairs_running: u64,
    /// Repairs that finished with every replica repaired.
    pub repairs_ok: u64,
    /// Repairs that finished with a replica not repaired.
    pub repairs_failed: u64,
}

/// Everything a scrape learns from one core.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreSample {
    /// The core.
    pub core: usize,
    /// Request series with at least one request.
    pub series: Vec<SeriesSample>,
    /// Other activity.
    pub activity: ActivitySample,
    /// The core's engine.
    pub engine: corekv_engine::Stats,
    /// The engine's compaction backlog, bytes.
    pub compaction_debt: u64,
    /// The engine's estimate of its live keys.
    pub keys_estimate: u64,
    /// The core's hints (cluster mode).
    pub hints: Option<crate::replication::hints::HintMetrics>,
    /// Whether the core's engine takes writes.
    pub health: corekv_engine::Health,
}

impl Shard {
    /// This core's sample for a scrape (`Cmd::Sample`).
    pub fn sample(&self) -> CoreSample {
        let a = &self.metrics.activity;
        let engine = self.store.engine();
        CoreSample {
            core: self.id,
            series: self.metrics.series_samples(),
            activity: ActivitySample {
                slow_requests: a.slow_requests.get(),
                connections_open: a.connections_open.get(),
                connections_accepted: a.connections_accepted.get(),
                http_rejected: a.http_rejected.get(),
                stream_in_bytes: a.stream_in_bytes.get(),
                stream_in_records: a.stream_in_records.get(),
                stream_out_bytes: a.stream_out_bytes.get(),
                stream_out_records: a.stream_out_records.get(),
                repair_ranges_total: a.repair_ranges_total.get(),
                repair_ranges_done: a.repair_ranges_done.get(),
                repairs_running: a.repairs_running.get(),
                repairs_ok: a.repairs_ok.get(),
                repairs_failed: a.repairs_failed.get(),
            },
            engine: engine.stats(),
            compaction_debt: engine.compaction_debt(),
            keys_estimate: engine.estimated_keys(),
            hints: self.cluster.as_ref().map(|c| c.hints.metrics()),
            health: engine.health(),
        }
    }
}

/// What a request was, for its metrics and the slow-request log.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    /// The listener.
    pub proto: Proto,
    /// The operation.
    pub op: OpKind,
    /// The level.
    pub level: Level,
    /// Length of its (first) key; 0 without one.
    pub key_len: usize,
    /// When it was received.
    pub started: Instant,
}

impl RequestInfo {
    /// A request received now.
    pub fn new(proto: Proto, op: OpKind, level: Level, key_len: usize) -> RequestInfo {
        RequestInfo {
            proto,
            op,
            level,
            key_len,
            started: Instant::now(),
        }
    }
}

/// Counts a finished request on `shard`'s core and logs it at WARN when it
/// took longer than `log.slow_request_ms` (operator commands and scrapes
/// excepted: a repair is meant to take minutes).
pub fn finish(shard: &Shard, r: &RequestInfo, ok: bool) {
    let took = r.started.elapsed();
    shard.metrics.observe(r.proto, r.op, r.level, took, ok);
    let slow = shard.config.log.slow_request_ms;
    let client = !matches!(r.op, OpKind::Admin | OpKind::Metrics);
    if client && slow > 0 && took >= Duration::from_millis(slow) {
        bump(&shard.metrics.activity.slow_requests, 1);
        tracing::warn!(
            core = shard.id,
            protocol = r.proto.name(),
            op = r.op.name(),
            key_len = r.key_len,
            consistency = r.level.name(),
            duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            ok,
            "slow request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_series() {
        assert_eq!(slot(0), 0);
        assert_eq!(slot(100), 0);
        assert_eq!(slot(101), 1);
        assert_eq!(slot(10_000_000), BUCKETS_US.len() - 1);
        assert_eq!(slot(10_000_001), BUCKETS_US.len());
        let m = CoreMetrics::default();
        assert!(m.series_samples().is_empty(), "nothing counted yet");
        m.observe(
            Proto::Http,
            OpKind::Get,
            Level::Quorum,
            Duration::from_micros(300),
            true,
        );
        m.observe(Proto::Http, OpKind::Get, Level::Quorum, Duration::from_secs(20), false);
        m.observe(Proto::Native, OpKind::Other, Level::None, Duration::ZERO, true);
        let s = m.series_samples();
        assert_eq!(s.len(), 2);
        let get = s.iter().find(|s| s.op == OpKind::Get).unwrap();
        assert_eq!(
            (get.proto, get.level, get.count(), get.errors),
            (Proto::Http, Level::Quorum, 2, 1)
        );
        assert_eq!(get.buckets[2], 1, "300 us is in the 500 us bucket");
        assert_eq!(get.buckets[SLOTS - 1], 1, "20 s is past every bound");
        assert_eq!(get.sum_us, 20_000_300);
        // Every (proto, op, level) has a series of its own.
        let mut seen = std::collections::HashSet::new();
        for p in Proto::ALL {
            for o in OpKind::ALL {
                for l in Level::ALL {
                    assert!(seen.insert(index(p, o, l)));
                }
            }
        }
        assert_eq!(seen.len(), m.series.len());
    }

    #[test]
    fn stats_lines_round_trip_and_stay_readable() {
        let mut latency_buckets = [0u64; SLOTS];
        latency_buckets[0] = 5;
        latency_buckets[SLOTS - 1] = 1;
        let s = NodeStats {
            load_bytes: 10,
            keys: 2,
            memory_bytes: 3 << 20,
            detail: Some(NodeDetail {
                uptime_us: 1_000_000,
                requests: 6,
                errors: 1,
                latency_buckets,
                latency_sum_us: 20_000_500,
                compaction_debt_bytes: 7,
                memtable_bytes: 8,
                sstables: 9,
                storage: StorageState::DiskFull,
            }),
        };
        let line = s.to_line();
        assert!(line.ends_with('\n') && line.lines().count() == 1, "{line:?}");
        assert!(
            line.contains(" latency_le_100us=5 ") && line.contains(" latency_over=1\n"),
            "{line}"
        );
        assert_eq!(NodeStats::parse(&line), Some(s));
        // The first version's line: no detail.
        let old = NodeStats::parse("load_bytes=1 keys=2 memory_bytes=3\n").unwrap();
        assert_eq!(
            (old.load_bytes, old.keys, old.memory_bytes, old.detail),
            (1, 2, 3, None)
        );
        // A partial detail is no detail; an unknown storage code neither.
        let cut = line.replace(" sstables=9", "");
        assert_eq!(NodeStats::parse(&cut).unwrap().detail, None);
        let odd = line.replace(" storage=2", " storage=9");
        assert_eq!(NodeStats::parse(&odd).unwrap().detail, None);
        assert_eq!(NodeStats::parse("load_bytes=x keys=2 memory_bytes=3"), None);
        assert_eq!(NodeStats::parse("keys=2 memory_bytes=3"), None);
        // What the first version's reader did with a line: every value a
        // number, the three words it knows present.
        let first_reader_ok = line
            .split_whitespace()
            .all(|w| w.split_once('=').is_some_and(|(_, v)| v.parse::<u64>().is_ok()));
        assert!(first_reader_ok, "{line}");
        assert!(StorageState::Fenced > StorageState::DiskFull && StorageState::DiskFull > StorageState::Ok);
        assert!(counts_as_client(OpKind::Get) && !counts_as_client(OpKind::Admin));
    }

    #[test]
    fn levels_of_requests() {
        use corekv_net::msg::Consistency as C;
        assert_eq!(Level::of_request(false, Opcode::Get, C::All), Level::None);
        assert_eq!(Level::of_request(true, Opcode::Get, C::Count(2)), Level::Two);
        assert_eq!(Level::of_request(true, Opcode::Put, C::LocalQuorum), Level::LocalQuorum);
        assert_eq!(Level::of_request(true, Opcode::Incr, C::One), Level::Serial);
        assert_eq!(Level::of_request(true, Opcode::Ping, C::All), Level::None);
    }
}
