//! The torture harness: a cluster of real `corekv` processes under client
//! workloads while faults are injected on a seeded schedule, then checkers
//! over what the clients saw (issue 6; results in docs/guarantees.md).
//!
//! ## Workloads (each a few client threads; all at QUORUM)
//! - **register**: serial reads and compare-and-set (Paxos) on registers;
//!   each key's history is checked for linearizability
//!   ([`linearizable::check`]). A key takes at most 16 ops per client, then
//!   the client moves to the next key, so every history stays within the
//!   checker's 64-op bound.
//! - **set**: an add-only set: each client PUTs keys of its own
//!   (`set:<client>:<i>`); at the end every acknowledged add must read back
//!   with its value. A missing one is a lost acknowledged write.
//! - **counter**: INCR by 1 on one key; at the end the count must lie
//!   between the acknowledged increments and those plus the ones whose
//!   outcome is unknown, and no two acknowledged increments may have returned
//!   the same total.
//! - **session**: one connection per client writes increasing numbers to its
//!   own key and reads the key back after each write: a read below the
//!   client's last acknowledged write breaks read-your-writes, a read below
//!   an earlier read breaks monotonic reads. In `lww` mode a second kind of
//!   session client sends each write through the next node in turn, so that
//!   writes carry timestamps from differently skewed clocks: a read below the
//!   last acknowledged write is then a lost update.
//!
//! ## Faults
//! One at a time, for a random hold, with calm between them: SIGKILL and
//! restart, SIGSTOP and SIGCONT, a partition (one node isolated; with 5 or
//! more nodes also halves and a bridge), all cut with iptables between the
//! nodes' own loopback IPs; a delayed link (every packet between one node
//! and the others held 20-300 ms) and a lossy one (10-50% of them dropped),
//! made with NFQUEUE and iptables ([`crate::netfault`]). Clock skew (lww mode): one node runs with its
//! wall clock shifted ([`corekv_shard::store::CLOCK_OFFSET_ENV`]) for the
//! whole run.
//!
//! Every client operation is recorded ([`history`]), so a history file can
//! be checked again by other tools.
// Test support: a failure is reported by panicking with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod history;
pub mod linearizable;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_net::msg::{Condition, Consistency, ErrorCode, Op};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::TestCluster;
use crate::loopfs::LoopFs;
use crate::netfault::LinkSpec;

/// Default size of each node's file system when disk-full faults are on:
/// room for the test-sized WAL segments, memtable flushes and compactions
/// of a CI-sized run ([`Options::disk_mib`]).
pub const DISK_MIB: u64 = 256;

/// Default size of set values when disk-full faults are on: with the
/// smallest WAL segments (1 MiB), the set clients alone then fill a node's
/// active and spare segments within a few seconds of its disk filling up
/// ([`Options::disk_value_bytes`]).
pub const DISK_FULL_VALUE_BYTES: usize = 4096;

/// Free bytes a disk-full fault leaves: less than a WAL segment, so writes
/// fail at once.
const DISK_LEFT: u64 = 64 << 10;
use crate::wire::{Reply, Wire};
use history::{Event, Outcome};

/// How a keyspace resolves concurrent writes (the node's
/// `cluster.conflict_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dotted version vectors: concurrent writes become siblings.
    Causal,
    /// Last write wins on hybrid logical clock timestamps.
    Lww,
}

impl Mode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Causal => "causal",
            Mode::Lww => "lww",
        }
    }
}

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL a node, then restart it on its data.
    Kill,
    /// SIGSTOP a node, then SIGCONT it.
    Pause,
    /// Cut the network between groups of nodes, then heal it.
    Partition,
    /// Run one node with a shifted wall clock (lww mode; whole run).
    Skew,
    /// Hold every packet between one node and the others for 20-300 ms.
    Delay,
    /// Drop 10-50% of the packets between one node and the others (TCP
    /// turns the losses into retransmission stalls).
    Lossy,
    /// Fill one node's file system (each node's data then lives on its own
    /// small loop-mounted ext4), then free the space again.
    DiskFull,
}

impl Fault {
    /// Its name in reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Skew => "skew",
            Fault::Delay => "delay",
            Fault::Lossy => "lossy",
            Fault::DiskFull => "disk-full",
        }
    }

    /// Parses a name [`Fault::as_str`] gives.
    pub fn parse(s: &str) -> Option<Fault> {
        [
            Fault::Kill,
            Fault::Pause,
            Fault::Partition,
            Fault::Skew,
            Fault::Delay,
            Fault::Lossy,
            Fault::DiskFull,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `corekv` executable.
    pub bin: String,
    /// Where the nodes' data directories go (a real disk: O_DIRECT).
    pub tmp: String,
    /// Name of the run (the data directory's prefix).
    pub name: String,
    /// Nodes in the cluster (replication factor 3).
    pub nodes: usize,
    /// How long the workloads run under faults.
    pub duration: Duration,
    /// Seeds the fault schedule.
    pub seed: u64,
    /// The conflict mode of the cluster.
    pub mode: Mode,
    /// The faults to inject (empty: none).
    pub faults: Vec<Fault>,
    /// Shortest and longest time a fault lasts.
    pub hold: (Duration, Duration),
    /// Time between the end of a fault and the next one.
    pub calm: Duration,
    /// The clock shift of the skewed node (ms) when [`Fault::Skew`] is on.
    pub skew_ms: i64,
    /// Client threads per workload: register (at most 4, so that a key's
    /// history fits the checker), set, counter, session.
    pub clients: [usize; 4],
    /// Where to write the history (JSON lines), if anywhere.
    pub history: Option<PathBuf>,
    /// With disk-full faults: each node's file system, MiB. The add-only
    /// set keeps every value, so a run needs about `set adds x value bytes`
    /// per node (every node replicates every key at RF 3 on 3 nodes) plus
    /// compaction room: an hour needs gigabytes, not the CI default.
    pub disk_mib: u64,
    /// With disk-full faults: the set values' size (bytes, incompressible).
    pub disk_value_bytes: usize,
}

impl Options {
    /// A small run with every fault but skew: 3 nodes, causal mode.
    pub fn new(bin: &str, tmp: &str, name: &str) -> Options {
        Options {
            bin: bin.to_owned(),
            tmp: tmp.to_owned(),
            name: name.to_owned(),
            nodes: 3,
            duration: Duration::from_secs(60),
            seed: 1,
            mode: Mode::Causal,
            faults: vec![
                Fault::Kill,
                Fault::Pause,
                Fault::Partition,
                Fault::Delay,
                Fault::Lossy,
                Fault::DiskFull,
            ],
            hold: (Duration::from_millis(500), Duration::from_secs(3)),
            calm: Duration::from_secs(1),
            skew_ms: 2_000,
            clients: [3, 2, 2, 2],
            disk_mib: DISK_MIB,
            disk_value_bytes: DISK_FULL_VALUE_BYTES,
            history: None,
        }
    }
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Wall time of the workload phase.
    pub ran_for: Duration,
    /// Client operations, by workload.
    pub ops: BTreeMap<&'static str, u64>,
    /// Operations whose outcome stayed unknown, by workload.
    pub unknown: BTreeMap<&'static str, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Error answers the clients got, by code (`DISK_FULL` shows that a
    /// disk-full fault reached them).
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged adds of the set workload.
    pub set_acked: u64,
    /// Acknowledged adds that did not read back (must be 0).
    pub set_lost: Vec<String>,
    /// Register keys checked.
    pub register_keys: u64,
    /// Register keys whose history is not linearizable, with the checker's
    /// explanation (must be empty).
    pub register_anomalies: Vec<String>,
    /// Acknowledged increments, increments of unknown outcome, final count.
    pub counter: (u64, u64, u64),
    /// Counter anomalies (a count out of bounds, a total returned twice).
    pub counter_anomalies: Vec<String>,
    /// Reads below the session's own last acknowledged write.
    pub ryw_violations: u64,
    /// Reads below an earlier read of the same session.
    pub monotonic_violations: u64,
    /// lww mode: reads (through rotating coordinators) below the last
    /// acknowledged write, and keys whose final value is below it.
    pub lww_lost_updates: u64,
    /// The history file written, if any.
    pub history: Option<PathBuf>,
}

impl Report {
    /// Total client operations.
    pub fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    /// Whether every hard guarantee held: no acknowledged add lost, every
    /// register linearizable, the counter within bounds.
    pub fn guarantees_held(&self) -> bool {
        self.set_lost.is_empty() && self.register_anomalies.is_empty() && self.counter_anomalies.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ran for {:.1} s: {} client operations",
            self.ran_for.as_secs_f64(),
            self.total_ops()
        )?;
        for (w, n) in &self.ops {
            writeln!(
                f,
                "  {w:<10} {n:>8} ops, {:>6} of unknown outcome",
                self.unknown.get(w).copied().unwrap_or(0)
            )?;
        }
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            f,
            "faults: {}",
            if faults.is_empty() {
                "none".to_owned()
            } else {
                faults.join(", ")
            }
        )?;
        let errors: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            f,
            "error answers: {}",
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(", ")
            }
        )?;
        writeln!(
            f,
            "set: {} acknowledged adds, {} lost",
            self.set_acked,
            self.set_lost.len()
        )?;
        writeln!(
            f,
            "register: {} keys checked, {} not linearizable",
            self.register_keys,
            self.register_anomalies.len()
        )?;
        let (acked, unknown, count) = self.counter;
        writeln!(
            f,
            "counter: {acked} acknowledged + {unknown} unknown increments, final {count}, {} anomalies",
            self.counter_anomalies.len()
        )?;
        writeln!(
            f,
            "session: {} read-your-writes violations, {} monotonic-read violations",
            self.ryw_violations, self.monotonic_violations
        )?;
        writeln!(f, "lww lost updates: {}", self.lww_lost_updates)?;
        for a in self.set_lost.iter().take(10) {
            writeln!(f, "  LOST {a}")?;
        }
        for a in self.register_anomalies.iter().chain(&self.counter_anomalies).take(5) {
            writeln!(f, "  ANOMALY {a}")?;
        }
        if let Some(h) = &self.history {
            writeln!(f, "history: {}", h.display())?;
        }
        Ok(())
    }
}

/// Microseconds since `t0`.
fn micros(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// What a request came to.
enum Call {
    /// The node answered.
    Reply(Reply),
    /// Sent, but no answer (connection lost, timeout): effect unknown.
    Lost,
    /// Not sent (no node reachable): no effect.
    NotSent,
}

/// A client connection that moves to the next node when its node fails.
struct Conn {
    addrs: Arc<Vec<(String, u16)>>,
    /// Error answers by code, for the report.
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
    at: usize,
    wire: Option<Wire>,
    /// Move to the next node after every request (lww rotating writers).
    rotate: bool,
}

/// How long a client waits for an answer before calling it unknown.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client waits after an error answer before its next request.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

impl Conn {
    fn new(s: &Shared, at: usize) -> Conn {
        let addrs = s.addrs.clone();
        let at = at % addrs.len();
        Conn {
            errors: s.errors.clone(),
            addrs,
            at,
            wire: None,
            rotate: false,
        }
    }

    fn next_node(&mut self) {
        self.wire = None;
        self.at = (self.at + 1) % self.addrs.len();
    }

    fn call(&mut self, op: Op<'_>) -> Call {
        if self.wire.is_none() {
            let (ip, port) = &self.addrs[self.at];
            match Wire::connect_to(ip, *port) {
                Ok(w) => {
                    let _ = w.set_read_timeout(READ_TIMEOUT);
                    self.wire = Some(w.with_consistency(Consistency::Quorum));
                }
                Err(_) => {
                    self.next_node();
                    // Not a busy loop when every node is unreachable.
                    std::thread::sleep(Duration::from_millis(20));
                    return Call::NotSent;
                }
            }
        }
        let Some(w) = self.wire.as_mut() else {
            return Call::NotSent;
        };
        let out = match w.try_call(op) {
            Ok(r) => r,
            Err(_) => {
                self.next_node();
                return Call::Lost;
            }
        };
        if let Reply::Error(code, _) = &out {
            if let Ok(mut e) = self.errors.lock() {
                *e.entry(code.to_string()).or_insert(0) += 1;
            }
            // As a client would: back off, then try another coordinator
            // (this one may be cut off from the replicas).
            std::thread::sleep(ERROR_BACKOFF);
            self.next_node();
        } else if self.rotate {
            self.next_node();
        }
        Call::Reply(out)
    }
}

/// Whether an error answer leaves the write's effect open (it may have
/// reached some replicas) rather than saying it did nothing.
fn effect_unknown(code: ErrorCode) -> bool {
    // A full disk or a fenced node refuses a write it did not apply itself,
    // but as a coordinator it may already have sent the write to replicas
    // that stored it: counted as unknown, which never makes a checker wrong.
    [
        ErrorCode::TIMEOUT,
        ErrorCode::UNAVAILABLE,
        ErrorCode::INTERNAL,
        ErrorCode::DISK_FULL,
        ErrorCode::FENCED,
    ]
    .contains(&code)
}

fn dec(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Session results: read-your-writes, monotonic and lww-lost counts, and per
/// key (name, last acknowledged value, whether a write of unknown outcome
/// followed it, whether it rotated coordinators).
type SessionTally = (u64, u64, u64, Vec<(String, u64, bool, bool)>);

/// What the workload threads share.
struct Shared {
    addrs: Arc<Vec<(String, u16)>>,
    stop: AtomicBool,
    t0: Instant,
    events: Mutex<Vec<Event>>,
    /// Acknowledged set adds: key -> value.
    set_acked: Mutex<Vec<(String, String)>>,
    /// Register histories by key.
    registers: Mutex<HashMap<String, Vec<linearizable::Op>>>,
    /// Counter: acknowledged totals returned, unknown increments.
    counter: Mutex<(Vec<i64>, u64)>,
    /// Session results: ryw, monotonic, lww lost, and per key the last
    /// acknowledged value and whether an unknown write followed it.
    session: Mutex<SessionTally>,
    /// Error answers by code.
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Least time between two adds of one set client (none: as fast as the
    /// cluster answers). The kill loop caps it so that re-reading every
    /// acknowledged add after each of hundreds of restarts stays bounded.
    pace: Option<Duration>,
    /// Set values are padded to this many bytes (0: as they are).
    set_value_bytes: usize,
}

impl Shared {
    /// Empty tallies for clients of `c`'s nodes; the run's clock starts now.
    fn new(c: &TestCluster) -> Shared {
        let addrs: Vec<(String, u16)> = (1..=c.len()).map(|i| (c.ip(i).to_owned(), c.node(i).client)).collect();
        Shared {
            addrs: Arc::new(addrs),
            stop: AtomicBool::new(false),
            t0: Instant::now(),
            events: Mutex::new(Vec::new()),
            set_acked: Mutex::new(Vec::new()),
            registers: Mutex::new(HashMap::new()),
            counter: Mutex::new((Vec::new(), 0)),
            session: Mutex::new((0, 0, 0, Vec::new())),
            errors: Arc::new(Mutex::new(BTreeMap::new())),
            pace: None,
            set_value_bytes: 0,
        }
    }

    fn record(&self, client: &str, op: &'static str, key: &str, value: String, start_us: u64, outcome: Outcome) {
        let end_us = (outcome != Outcome::Unknown).then(|| micros(self.t0));
        let e = Event {
            client: client.to_owned(),
            op,
            key: key.to_owned(),
            value,
            start_us,
            end_us,
            outcome,
        };
        self.events.lock().unwrap().push(e);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

const COUNTER_KEY: &str = "ctr:0";

fn register_client(s: &Shared, client: usize) {
    let name = format!("reg-{client}");
    let mut conn = Conn::new(s, client);
    let mut round = 0u64;
    let mut history: Vec<linearizable::Op> = Vec::new();
    let mut last: Option<u64> = None;
    let mut j = 0u64;
    let flush = |round: u64, history: &mut Vec<linearizable::Op>| {
        let key = format!("reg:{round}");
        s.registers.lock().unwrap().entry(key).or_default().append(history);
    };
    while !s.stopped() {
        if j == 16 {
            flush(round, &mut history);
            round += 1;
            j = 0;
            last = None;
        }
        let key = format!("reg:{round}");
        let invoke = micros(s.t0);
        if j.is_multiple_of(2) {
            match conn.call(Op::SerialGet { key: key.as_bytes() }) {
                Call::Reply(Reply::Cas(true, v)) => {
                    last = v.as_deref().and_then(dec);
                    history.push(linearizable::Op {
                        invoke,
                        ret: Some(micros(s.t0)),
                        kind: linearizable::Kind::Read { result: last },
                    });
                    s.record(
                        &name,
                        "serial_get",
                        &key,
                        String::new(),
                        invoke,
                        Outcome::Read(last.map(|v| v.to_string())),
                    );
                }
                // A read without an answer had no effect.
                _ => s.record(&name, "serial_get", &key, String::new(), invoke, Outcome::Unknown),
            }
        } else {
            let new = Some(client as u64 * 1_000_000 + round * 100 + j);
            let (e, n) = (last.map(|v| v.to_string()), new.map(|v| v.to_string()));
            let op = Op::CasValue {
                key: key.as_bytes(),
                expected: e.as_deref().map(str::as_bytes),
                new: n.as_deref().map(str::as_bytes),
            };
            let arg = format!("{}:{}", e.as_deref().unwrap_or("nil"), n.as_deref().unwrap_or("nil"));
            let (ret, result, outcome) = match conn.call(op) {
                Call::Reply(Reply::Cas(applied, v)) => (
                    Some(micros(s.t0)),
                    Some((applied, v.as_deref().and_then(dec))),
                    if applied { Outcome::Ok } else { Outcome::Fail },
                ),
                // Not sent: no effect, and nothing to check.
                Call::NotSent => {
                    j += 1;
                    continue;
                }
                _ => (None, None, Outcome::Unknown),
            };
            history.push(linearizable::Op {
                invoke,
                ret,
                kind: linearizable::Kind::Cas {
                    expected: last,
                    new,
                    result,
                },
            });
            s.record(&name, "cas", &key, arg, invoke, outcome);
        }
        j += 1;
    }
    flush(round, &mut history);
}

/// `value`, then `.`, then letters that depend on `value`, up to `len`
/// bytes (unchanged if already longer). Not compressible, so the tables a
/// node writes take the space the values do.
fn padded(value: &str, len: usize) -> String {
    let mut v = value.to_owned();
    if v.len() < len {
        v.push('.');
        let mut x = xxhash_rust::xxh3::xxh3_64(value.as_bytes()) | 1;
        while v.len() < len {
            // xorshift64: cheap, deterministic, and no compressor finds a pattern.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(char::from(b'a' + (x % 26) as u8));
        }
    }
    v
}

fn set_client(s: &Shared, client: usize) {
    let name = format!("set-{client}");
    let mut conn = Conn::new(s, client);
    let mut i = 0u64;
    let mut next = Instant::now();
    while !s.stopped() {
        if let Some(pace) = s.pace {
            // A schedule, not a sleep per add: a slow answer is made up for.
            next += pace;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let key = format!("set:{client}:{i}");
        let value = format!("v{i}-{client}");
        // The stored value: the history keeps the short form.
        let stored = padded(&value, s.set_value_bytes);
        let start = micros(s.t0);
        let op = Op::Put {
            key: key.as_bytes(),
            value: stored.as_bytes(),
            ttl_ms: 0,
            condition: Condition::Always,
        };
        let outcome = match conn.call(op) {
            Call::Reply(Reply::Ok) => {
                s.set_acked.lock().unwrap().push((key.clone(), stored));
                Outcome::Ok
            }
            Call::Reply(Reply::Error(code, _)) if !effect_unknown(code) => Outcome::Fail,
            Call::NotSent => continue,
            _ => Outcome::Unknown,
        };
        s.record(&name, "put", &key, value, start, outcome);
        i += 1;
    }
}

fn counter_client(s: &Shared, client: usize) {
    let name = format!("ctr-{client}");
    let mut conn = Conn::new(s, client);
    while !s.stopped() {
        let start = micros(s.t0);
        let outcome = match conn.call(Op::Incr {
            key: COUNTER_KEY.as_bytes(),
            delta: 1,
        }) {
            Call::Reply(Reply::Int(total)) => {
                s.counter.lock().unwrap().0.push(total);
                Outcome::Read(Some(total.to_string()))
            }
            Call::Reply(Reply::Error(code, _)) if !effect_unknown(code) => Outcome::Fail,
            Call::NotSent => continue,
            _ => {
                s.counter.lock().unwrap().1 += 1;
                Outcome::Unknown
            }
        };
        s.record(&name, "incr", COUNTER_KEY, "1".to_owned(), start, outcome);
    }
}

/// A session client; `rotate`: every request through the next node (lww
/// lost-update probe).
fn session_client(s: &Shared, client: usize, rotate: bool) {
    let prefix = if rotate { "lww" } else { "sess" };
    let name = format!("{prefix}-{client}");
    let key = format!("{prefix}:{client}");
    let mut conn = Conn::new(s, client);
    conn.rotate = rotate;
    let (mut seq, mut acked, mut last_read) = (0u64, 0u64, 0u64);
    let mut unknown_after_ack = false;
    let (mut ryw, mut mono, mut lost) = (0u64, 0u64, 0u64);
    while !s.stopped() {
        seq += 1;
        let value = seq.to_string();
        let start = micros(s.t0);
        let op = Op::Put {
            key: key.as_bytes(),
            value: value.as_bytes(),
            ttl_ms: 0,
            condition: Condition::Always,
        };
        let outcome = match conn.call(op) {
            Call::Reply(Reply::Ok) => {
                acked = seq;
                unknown_after_ack = false;
                Outcome::Ok
            }
            Call::Reply(Reply::Error(code, _)) if !effect_unknown(code) => Outcome::Fail,
            Call::NotSent => Outcome::Fail,
            _ => {
                unknown_after_ack = true;
                Outcome::Unknown
            }
        };
        s.record(&name, "put", &key, value, start, outcome);
        let start = micros(s.t0);
        let got = match conn.call(Op::Get { key: key.as_bytes() }) {
            Call::Reply(Reply::Value(v, ..)) => Some(dec(&v).unwrap_or(0)),
            Call::Reply(Reply::NotFound) => Some(0),
            _ => None,
        };
        let Some(got) = got else {
            s.record(&name, "get", &key, String::new(), start, Outcome::Unknown);
            continue;
        };
        s.record(
            &name,
            "get",
            &key,
            String::new(),
            start,
            Outcome::Read(Some(got.to_string())),
        );
        if got < acked {
            if rotate {
                lost += 1;
            } else {
                ryw += 1;
            }
        }
        if !rotate && got < last_read {
            mono += 1;
        }
        last_read = last_read.max(got);
    }
    let mut sess = s.session.lock().unwrap();
    sess.0 += ryw;
    sess.1 += mono;
    sess.2 += lost;
    sess.3.push((key, acked, unknown_after_ack, rotate));
}

/// Injects faults until `until`, one at a time, kinds in a shuffled round;
/// leaves every node running
/// and the network whole. Returns the count per kind.
fn inject_faults(c: &mut TestCluster, disks: &[LoopFs], o: &Options, until: Instant) -> BTreeMap<&'static str, u64> {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut counts = BTreeMap::new();
    let kinds: Vec<Fault> = o.faults.iter().copied().filter(|f| *f != Fault::Skew).collect();
    let mut bag: Vec<Fault> = Vec::new();
    let n = c.len();
    let wait = |d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end.min(until + Duration::from_secs(5)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    while Instant::now() < until && !kinds.is_empty() {
        wait(o.calm);
        if Instant::now() >= until {
            break;
        }
        // Kinds come from a shuffled bag, refilled when empty: every kind
        // comes once in each round of `kinds.len()` faults, so a short run
        // still sees all of them.
        if bag.is_empty() {
            bag = kinds.clone();
            bag.shuffle(&mut rng);
        }
        let Some(kind) = bag.pop() else { break };
        let hold = rng.gen_range(o.hold.0..=o.hold.1);
        let victim = rng.gen_range(1..=n);
        match kind {
            Fault::Kill => {
                c.kill9(victim);
                wait(hold);
                c.restart(victim);
            }
            Fault::Pause => {
                c.pause(victim);
                wait(hold);
                c.resume(victim);
            }
            Fault::Partition => {
                let all: Vec<usize> = (1..=n).collect();
                // One node alone; with 5+ nodes also halves, or a bridge
                // node that sees both sides while they do not see each other.
                let shape = if n >= 5 { rng.gen_range(0..3) } else { 0 };
                let (a, b): (Vec<usize>, Vec<usize>) = match shape {
                    1 => all.iter().partition(|&&i| i <= n / 2),
                    2 => {
                        // The victim bridges two halves of the others.
                        let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
                        let half = others.len() / 2;
                        (others[..half].to_vec(), others[half..].to_vec())
                    }
                    _ => all.iter().partition(|&&i| i == victim),
                };
                let mut p = c.partition(&a, &b);
                wait(hold);
                p.heal();
            }
            Fault::Delay | Fault::Lossy => {
                let others: Vec<usize> = (1..=n).filter(|&i| i != victim).collect();
                let spec = if kind == Fault::Delay {
                    LinkSpec {
                        drop: 0.0,
                        delay: Duration::from_millis(rng.gen_range(20..=300)),
                    }
                } else {
                    LinkSpec {
                        drop: rng.gen_range(0.1..=0.5),
                        delay: Duration::ZERO,
                    }
                };
                let mut link = c.degrade(&[victim], &others, spec);
                wait(hold);
                if let Err(e) = link.heal() {
                    panic!("restoring the links of node {victim}: {e}");
                }
            }
            Fault::DiskFull => {
                let Some(disk) = disks.get(victim - 1) else {
                    panic!("a disk-full fault without a file system for node {victim}");
                };
                let ballast = disk.fill("ballast", DISK_LEFT);
                // Held three times longer: a node feels it only once it
                // needs fresh space (see `run`).
                wait(hold * 3);
                if let Err(e) = std::fs::remove_file(&ballast) {
                    panic!("removing the ballast of node {victim}: {e}");
                }
            }
            Fault::Skew => {}
        }
        *counts.entry(kind.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Reads every key of `pairs` at QUORUM through node `via` and returns the
/// ones that are missing or hold another value; retries errors for 60 s.
pub fn verify_acked(c: &TestCluster, via: usize, pairs: &[(String, String)]) -> Vec<String> {
    let mut lost = Vec::new();
    for chunk in pairs.chunks(512) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut w = c.coordinator(via, Consistency::Quorum);
            let _ = w.set_read_timeout(Duration::from_secs(10));
            let ops: Vec<Op<'_>> = chunk.iter().map(|(k, _)| Op::Get { key: k.as_bytes() }).collect();
            let replies = match w.call_many(&ops) {
                Ok(r) => r,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    continue;
                }
                Err(e) => panic!("reading back acknowledged writes through node {via}: {e}"),
            };
            if replies.iter().any(|r| matches!(r, Reply::Error(..))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            for ((k, v), r) in chunk.iter().zip(replies) {
                match r {
                    Reply::Value(got, ..) if got == v.as_bytes() => {}
                    other => lost.push(format!("{k} = {v}: read {other:?}")),
                }
            }
            break;
        }
    }
    lost
}

/// Starts a cluster and runs the workloads under faults, then heals,
/// waits for the cluster, and checks. Panics only on harness failures; what
/// the checkers find is in the report.
pub fn run(o: &Options) -> Report {
    let mut extra = vec!["--cluster.conflict_mode", o.mode.as_str()];
    if o.faults.contains(&Fault::DiskFull) {
        // The workloads' records are small: with the smallest memtable and
        // WAL segments, a node needs fresh space (a flush, a new segment)
        // every few seconds, so a full disk is felt while it lasts.
        extra.extend([
            "--storage.memtable_bytes",
            "1048576",
            "--storage.wal_segment_bytes",
            "1048576",
        ]);
    }
    // With disk-full faults, each node's data lives on a file system of its
    // own that the fault can fill without starving the others (or the host).
    let disks: Vec<LoopFs> = if o.faults.contains(&Fault::DiskFull) {
        let root = crate::node::test_dir(&o.tmp, &format!("{}-disks", o.name));
        (1..=o.nodes)
            .map(|i| LoopFs::create(&root.join(format!("n{i}-{}", std::process::id())), o.disk_mib))
            .collect()
    } else {
        Vec::new()
    };
    let dirs: Vec<(usize, PathBuf)> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| (i + 1, d.mnt.join("node")))
        .collect();
    let mut c = TestCluster::start_with_dirs(&o.bin, &o.tmp, &o.name, o.nodes, &extra, &dirs);
    let mut report = Report::default();
    if o.mode == Mode::Lww && o.faults.contains(&Fault::Skew) {
        // The last node's clock runs ahead for the whole run.
        let last = c.len();
        c.set_env(last, corekv_shard::store::CLOCK_OFFSET_ENV, &o.skew_ms.to_string());
        c.restart(last);
        c.await_formed();
        report.faults.insert(Fault::Skew.as_str(), 1);
    }
    let mut shared = Shared::new(&c);
    if o.faults.contains(&Fault::DiskFull) {
        // Volume: the nodes must need fresh space while a disk is full.
        shared.set_value_bytes = o.disk_value_bytes;
    }
    let shared = Arc::new(shared);
    let [reg, set, ctr, sess] = o.clients;
    let mut threads = Vec::new();
    let spawn = |f: Box<dyn FnOnce() + Send>| std::thread::spawn(f);
    for i in 0..reg.min(4) {
        let s = shared.clone();
        threads.push(spawn(Box::new(move || register_client(&s, i + 1))));
    }
    for i in 0..set {
        let s = shared.clone();
        threads.push(spawn(Box::new(move || set_client(&s, i))));
    }
    for i in 0..ctr {
        let s = shared.clone();
        threads.push(spawn(Box::new(move || counter_client(&s, i))));
    }
    for i in 0..sess {
        let s = shared.clone();
        threads.push(spawn(Box::new(move || session_client(&s, i, false))));
        if o.mode == Mode::Lww {
            let s = shared.clone();
            threads.push(spawn(Box::new(move || session_client(&s, i, true))));
        }
    }
    let until = Instant::now() + o.duration;
    let faults = inject_faults(&mut c, &disks, o, until);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a workload thread panicked");
    }
    report.ran_for = shared.t0.elapsed();
    report.faults.extend(faults);
    report.errors = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    c.await_formed();

    // Tally the operations.
    let mut events = std::mem::take(&mut *shared.events.lock().unwrap());
    for e in &events {
        let w = match e.client.split('-').next().unwrap_or("") {
            "reg" => "register",
            "set" => "set",
            "ctr" => "counter",
            "sess" => "session",
            _ => "lww",
        };
        *report.ops.entry(w).or_insert(0) += 1;
        if e.outcome == Outcome::Unknown {
            *report.unknown.entry(w).or_insert(0) += 1;
        }
    }

    // Set: every acknowledged add reads back.
    let acked = std::mem::take(&mut *shared.set_acked.lock().unwrap());
    report.set_acked = acked.len() as u64;
    report.set_lost = verify_acked(&c, 1, &acked);

    // Registers: linearizable per key.
    let registers = std::mem::take(&mut *shared.registers.lock().unwrap());
    let mut keys: Vec<&String> = registers.keys().collect();
    keys.sort();
    for key in keys {
        let h = &registers[key];
        if h.is_empty() {
            continue;
        }
        report.register_keys += 1;
        if let Err(e) = linearizable::check(h) {
            report.register_anomalies.push(format!("{key}: {e}"));
        }
    }

    // Counter: within bounds, no total returned twice.
    let (totals, unknown) = std::mem::take(&mut *shared.counter.lock().unwrap());
    let final_count = serial_count(&c, 1, COUNTER_KEY);
    let acked_n = totals.len() as u64;
    report.counter = (acked_n, unknown, final_count);
    if !(acked_n <= final_count && final_count <= acked_n + unknown) {
        report.counter_anomalies.push(format!(
            "{COUNTER_KEY}: final {final_count} outside [{acked_n}, {}]",
            acked_n + unknown
        ));
    }
    let mut seen = HashSet::new();
    for t in &totals {
        if !seen.insert(*t) {
            report
                .counter_anomalies
                .push(format!("{COUNTER_KEY}: total {t} returned to two increments"));
        }
    }

    // Sessions.
    let sess = std::mem::take(&mut *shared.session.lock().unwrap());
    report.ryw_violations = sess.0;
    report.monotonic_violations = sess.1;
    report.lww_lost_updates = sess.2;
    for (key, acked, unknown_after, _rotate) in sess.3 {
        if acked == 0 || unknown_after {
            continue;
        }
        let mut w = c.coordinator(1, Consistency::Quorum);
        let got = match w.call(Op::Get { key: key.as_bytes() }) {
            Reply::Value(v, ..) => dec(&v).unwrap_or(0),
            _ => 0,
        };
        if got < acked {
            report.lww_lost_updates += 1;
        }
    }

    if let Some(path) = &o.history {
        history::write(path, &mut events).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        report.history = Some(path.clone());
    }
    report
}

/// The counter's value by a serial (Paxos) read through node `via`, retried
/// for 60 s.
fn serial_count(c: &TestCluster, via: usize, key: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut w = c.coordinator(via, Consistency::Quorum);
        match w.try_call(Op::SerialGet { key: key.as_bytes() }) {
            Ok(Reply::Cas(true, v)) => return v.as_deref().and_then(dec).unwrap_or(0),
            other if Instant::now() >= deadline => panic!("SERIAL_GET {key} via node {via}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What a kill loop found.
#[derive(Debug, Default, Clone)]
pub struct KillLoopReport {
    /// Nodes SIGKILLed (and restarted).
    pub kills: u64,
    /// Acknowledged writes at the end (each verified after every recovery
    /// that followed it).
    pub acked: u64,
    /// Reads of acknowledged writes made (over all verifications).
    pub verified_reads: u64,
    /// Writes of unknown outcome.
    pub unknown: u64,
    /// Acknowledged writes that did not read back (must be empty).
    pub lost: Vec<String>,
    /// Wall time.
    pub took: Duration,
}

impl fmt::Display for KillLoopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kill loop: {} kills in {:.0} s; {} acknowledged QUORUM writes ({} unknown), {} reads of them verified, {} lost",
            self.kills,
            self.took.as_secs_f64(),
            self.acked,
            self.unknown,
            self.verified_reads,
            self.lost.len()
        )?;
        for l in self.lost.iter().take(10) {
            writeln!(f, "  LOST {l}")?;
        }
        Ok(())
    }
}

/// SIGKILLs a random node `kills` times under a QUORUM write load
/// (`writers` clients adding keys); after each restart, every write
/// acknowledged so far is read back at QUORUM. `rate` caps each writer's adds
/// per second (0: no cap).
pub fn kill_loop(o: &Options, kills: u64, writers: usize, rate: u64) -> KillLoopReport {
    let extra = ["--cluster.conflict_mode", o.mode.as_str()];
    let mut c = TestCluster::start(&o.bin, &o.tmp, &o.name, o.nodes, &extra);
    let mut shared = Shared::new(&c);
    shared.pace = (rate > 0).then(|| Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX));
    let shared = Arc::new(shared);
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || set_client(&s, i))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut r = KillLoopReport::default();
    let n = c.len();
    for _ in 0..kills {
        let victim = rng.gen_range(1..=n);
        c.kill9(victim);
        let down = rng.gen_range(o.hold.0..=o.hold.1);
        std::thread::sleep(down);
        c.restart(victim);
        r.kills += 1;
        let acked: Vec<(String, String)> = shared.set_acked.lock().unwrap().clone();
        // Read through a node that stayed up.
        let via = if victim == 1 { 2 } else { 1 };
        let lost = verify_acked(&c, via, &acked);
        r.verified_reads += acked.len() as u64;
        for l in lost {
            if !r.lost.contains(&l) {
                r.lost.push(l);
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a writer panicked");
    }
    let events = shared.events.lock().unwrap();
    r.unknown = events.iter().filter(|e| e.outcome == Outcome::Unknown).count() as u64;
    r.acked = shared.set_acked.lock().unwrap().len() as u64;
    r.took = shared.t0.elapsed();
    r
}
