//! Clusters of real `corekv` processes on one machine, for tests of the
//! guarantees replication makes: a killed node, hints, read repair, a network
//! partition.
//!
//! ## Why each node has its own loopback IP
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so node `i` of
//! a cluster listens on `127.0.K.i` without any setup. A node binds its
//! outbound peer connections to its own `--node.listen` address, so traffic
//! between two nodes is traffic between two distinct IPs, and an iptables
//! rule on source and destination ([`Partition`]) cuts exactly one pair of
//! nodes while the test process (which connects from 127.0.0.1) still reaches
//! every node. `K` comes from a process-wide counter started at a pid-derived
//! value ([`next_subnet`]), so the tests of one binary run in parallel, and
//! each process locks the subnets it uses, so two test processes running at
//! once (several checkouts on one machine) never share one. Each node also
//! gets its own free ports: the nodes could share port numbers (each binds
//! its own IP), but distinct ports keep a node's start-up check for busy
//! ports meaningful.
//!
//! ## Why replicas are inspected with a node-to-node READ
//!
//! A client read is coordinated: it asks several replicas and merges, and a
//! read at ALL even repairs the stale ones. A test that checks what a given
//! replica holds (did the hint arrive? did read repair write back?) must not
//! disturb it, so [`TestCluster::local_record`] sends the replica the READ a
//! coordinator would send (`PeerOp::Read`) on its client port: the answer is
//! that node's own stored record, and nothing else is consulted or repaired.
//!
//! ## Conventions
//!
//! Nodes are numbered from 1 (`n1`, `n2`, ...), as in the tests' prose. Node
//! 1 and node 2 are the seeds of every node. Waits poll with a deadline
//! ([`await_until`]) and fail naming what was still missing; nothing sleeps
//! for a fixed time to let something happen. Processes are killed and data
//! directories removed on drop (the data is kept when the test failed, for a
//! post-mortem, like [`TestNode`]).
// Test support: a failure here is a failed test, and a panic with the
// message is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corekv_net::client::{blocking, ClientOptions};
use corekv_net::msg::peer::{PeerOp, PeerOpcode, PeerRequest, PeerResponse};
use corekv_net::msg::{Consistency, Limits, Op, Response, ResponseOpcode};
use corekv_net::token::token_of;
use corekv_shard::versioning::Record;

use crate::node::TestNode;
use crate::wire::{Reply, Wire};

/// How long a cluster may take to form (every node's RING lists every node).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`await_until`] checks again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Lines of each node's log a failure message shows.
const LOG_TAIL_LINES: usize = 40;

/// The `COREKV_LOG` of cluster nodes: membership and replication events,
/// without per-request debug lines (two cores run several clusters at once).
const CLUSTER_LOG: &str = "warn,corekv_shard=info";

/// Harness defaults, each applied unless the test's flags set the key.
const DEFAULT_FLAGS: &[(&str, &str)] = &[
    ("--cluster.replication_factor", "3"),
    // Fast gossip: failure detection and hint replay within a second or two.
    ("--cluster.gossip_interval_ms", "200"),
];

/// A fresh `K` for a cluster's addresses `127.0.K.i`, in 50..=249: a
/// process-wide counter, started at `50 + pid % 100` so that test binaries
/// running side by side begin at different places, skipping the `K`s that
/// another running process holds.
///
/// Several test processes share one machine (one binary's tests run in
/// parallel, CI runs one binary at a time, but engineers run several
/// checkouts' tests at once), and two clusters on one subnet meet in the
/// iptables rules: a partition or a degraded link of one cuts or slows the
/// other's nodes. So each process claims its subnets with an exclusive
/// `flock` on a file per subnet under the temporary directory, held until
/// it exits (the kernel drops the lock of a process that died). When every
/// subnet is held elsewhere, subnets are shared as before.
pub fn next_subnet() -> u8 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HELD: Mutex<Vec<(u8, std::fs::File)>> = Mutex::new(Vec::new());
    let start = std::process::id() % 100;
    // (start + k) % 200 < 200, so the sum is at most 249.
    let subnet = |k: u32| (50 + (start + k) % 200) as u8;
    let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..200 {
        let k = subnet(NEXT.fetch_add(1, Ordering::Relaxed));
        // After a wrap, this process's own subnets come round again.
        if held.iter().any(|(h, _)| *h == k) {
            return k;
        }
        match claim_subnet(k) {
            Claim::Held(lock) => {
                held.push((k, lock));
                return k;
            }
            Claim::Unlockable => return k,
            Claim::Taken => {}
        }
    }
    subnet(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What [`claim_subnet`] found.
enum Claim {
    /// Locked for this process while the file stays open.
    Held(std::fs::File),
    /// Another process holds it.
    Taken,
    /// No lock file could be made: nothing to coordinate with, use it.
    Unlockable,
}

/// Tries to lock subnet `k` for this process.
fn claim_subnet(k: u8) -> Claim {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("corekv-test-subnets");
    let _ = std::fs::create_dir_all(&dir);
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(k.to_string()))
    {
        Ok(f) => f,
        Err(_) => return Claim::Unlockable,
    };
    // SAFETY: flock on a descriptor this function owns, open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Claim::Held(file)
    } else {
        Claim::Taken
    }
}

/// Polls `check` every 100 ms until it returns `Ok`, for at most `deadline`;
/// returns how long it took. Fails the test with `what` and the last error
/// `check` returned, which should name what was still missing.
pub fn await_until(deadline: Duration, what: &str, check: impl FnMut() -> Result<(), String>) -> Duration {
    match poll_until(deadline, check) {
        Ok(took) => took,
        Err(last) => panic!("{what}: not reached within {deadline:?}; still: {last}"),
    }
}

fn poll_until(deadline: Duration, mut check: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        let last = match check() {
            Ok(()) => return Ok(t0.elapsed()),
            Err(e) => e,
        };
        if t0.elapsed() >= deadline {
            return Err(last);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// The live values of a record: each sibling's bytes (one value for an lww
/// record); empty when every sibling is a deletion.
pub fn live_values(record: &Record) -> Vec<Vec<u8>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let live =
        |v: &corekv_shard::versioning::Value| v.is_live_at(now_ms).then(|| v.bytes().map(<[u8]>::to_vec)).flatten();
    match record {
        Record::Causal(d) => d.values().filter_map(live).collect(),
        Record::Lww(r) => live(&r.value).into_iter().collect(),
    }
}

/// A cluster of node processes, numbered from 1.
#[derive(Debug)]
pub struct TestCluster {
    bin: String,
    /// Parent of the nodes' data directories.
    root: PathBuf,
    /// The `K` of `127.0.K.i`.
    subnet: u8,
    /// Flags every node gets (cluster settings and the test's own), without
    /// the per-node ones (id, seeds); empty for standalone nodes.
    flags: Vec<String>,
    /// Whether the nodes run in cluster mode (seeds set).
    clustered: bool,
    nodes: Vec<TestNode>,
}

impl TestCluster {
    /// Starts `n` nodes in cluster mode (node ids `n1`..`nn`, one core each,
    /// seeds nodes 1 and 2, replication factor 3, gossip every 200 ms unless
    /// `extra` sets them) and waits until every node's RING lists all `n`.
    ///
    /// `bin` is the `corekv` executable (`env!("CARGO_BIN_EXE_corekv-node")`)
    /// and `tmp` the directory for data (`env!("CARGO_TARGET_TMPDIR")`, on the
    /// real disk under target/).
    pub fn start(bin: &str, tmp: &str, name: &str, n: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_with_dirs(bin, tmp, name, n, extra, &[])
    }

    /// [`TestCluster::start`], with node `i`'s data directory at `dir` for
    /// each `(i, dir)` of `dirs` (a file system of its own, for a disk
    /// fault) instead of under `tmp`.
    pub fn start_with_dirs(
        bin: &str,
        tmp: &str,
        name: &str,
        n: usize,
        extra: &[&str],
        dirs: &[(usize, PathBuf)],
    ) -> TestCluster {
        let mut flags: Vec<String> = Vec::new();
        for (key, value) in DEFAULT_FLAGS {
            if !extra.contains(key) {
                flags.extend([key.to_string(), value.to_string()]);
            }
        }
        flags.extend(extra.iter().map(|s| s.to_string()));
        let c = TestCluster::launch(bin, tmp, name, n, flags, true, dirs);
        c.await_formed();
        c
    }

    /// Starts `n` independent single nodes (no cluster flags) on the addresses
    /// a cluster would use: for checking the harness itself.
    pub fn start_standalone(bin: &str, tmp: &str, name: &str, n: usize) -> TestCluster {
        TestCluster::launch(bin, tmp, name, n, Vec::new(), false, &[])
    }

    fn launch(
        bin: &str,
        tmp: &str,
        name: &str,
        n: usize,
        flags: Vec<String>,
        clustered: bool,
        dirs: &[(usize, PathBuf)],
    ) -> TestCluster {
        assert!((1..=250).contains(&n), "a cluster of {n} nodes");
        let root = PathBuf::from(tmp).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut c = TestCluster {
            bin: bin.to_owned(),
            root,
            subnet: next_subnet(),
            flags,
            clustered,
            nodes: Vec::new(),
        };
        // Every node is created (its ports chosen) before any starts, because
        // each node's flags name the seeds' ports.
        for i in 1..=n {
            let dir = dirs.iter().find(|(j, _)| *j == i).map(|(_, d)| d.clone());
            c.create_node(dir);
        }
        let seeds = c.seeds();
        for i in 1..=n {
            c.configure(i, &seeds);
            c.spawn(i);
        }
        c
    }

    /// The seed list: the client addresses of nodes 1 and 2 (1 alone in a
    /// one-node cluster).
    fn seeds(&self) -> String {
        (1..=self.nodes.len().min(2))
            .map(|i| self.addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Creates node `len + 1` (not started), its data in `dir` or under
    /// the cluster's root; returns its number.
    fn create_node(&mut self, dir: Option<PathBuf>) -> usize {
        let i = self.nodes.len() + 1;
        let dir = dir.unwrap_or_else(|| self.root.join(format!("n{i}")));
        let ip = format!("127.0.{}.{i}", self.subnet);
        let mut node = TestNode::new(&self.bin, &dir, &ip, 1, &[]);
        node.set_log_filter(CLUSTER_LOG);
        self.nodes.push(node);
        i
    }

    /// Gives node `i` its id, the seeds and the cluster's flags.
    fn configure(&mut self, i: usize, seeds: &str) {
        let mut flags = vec!["--node.id".to_owned(), format!("n{i}")];
        if self.clustered {
            flags.extend(["--cluster.seeds".to_owned(), seeds.to_owned()]);
        }
        flags.extend(self.flags.iter().cloned());
        let node = self.node_mut(i);
        node.add_flags(&flags);
    }

    fn spawn(&mut self, i: usize) {
        if let Err(e) = self.node_mut(i).spawn() {
            panic!("node {i} did not start: {e}");
        }
    }

    /// Starts one more node with the same flags and seeds and waits until
    /// every running node's RING lists it; returns its number.
    pub fn add_node(&mut self) -> usize {
        let i = self.create_node(None);
        let seeds = self.seeds();
        self.configure(i, &seeds);
        self.spawn(i);
        if self.clustered {
            self.await_formed();
        }
        i
    }

    /// Starts one more node with the cluster's flags plus `extra` and does
    /// not wait for it to join (a non-seed bootstraps: JOINING, streaming,
    /// then NORMAL); returns its number.
    pub fn add_node_unformed(&mut self, extra: &[&str]) -> usize {
        let i = self.create_node(None);
        let seeds = self.seeds();
        self.configure(i, &seeds);
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        self.node_mut(i).add_flags(&extra);
        self.spawn(i);
        i
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: it starts with at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (from 1).
    pub fn node(&self, i: usize) -> &TestNode {
        match self.nodes.get(i.wrapping_sub(1)) {
            Some(n) => n,
            None => panic!("no node {i} in a cluster of {}", self.nodes.len()),
        }
    }

    fn node_mut(&mut self, i: usize) -> &mut TestNode {
        let len = self.nodes.len();
        match self.nodes.get_mut(i.wrapping_sub(1)) {
            Some(n) => n,
            None => panic!("no node {i} in a cluster of {len}"),
        }
    }

    /// Node `i`'s IP (`127.0.K.i`).
    pub fn ip(&self, i: usize) -> &str {
        &self.node(i).listen
    }

    /// Node `i`'s client address, `ip:port`, as RING lists it.
    pub fn addr(&self, i: usize) -> String {
        let n = self.node(i);
        format!("{}:{}", n.listen, n.client)
    }

    /// The numbers of the nodes whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (1..=self.nodes.len()).filter(|&i| self.node(i).is_running()).collect()
    }

    /// Sets an environment variable of node `i`'s process from its next
    /// start on.
    pub fn set_env(&mut self, i: usize, key: &str, value: &str) {
        self.node_mut(i).set_env(key, value);
    }

    /// SIGSTOPs node `i` (it holds its connections but answers nothing).
    pub fn pause(&self, i: usize) {
        self.node(i).pause();
    }

    /// SIGCONTs node `i` after [`TestCluster::pause`].
    pub fn resume(&self, i: usize) {
        self.node(i).signal(libc::SIGCONT);
    }

    /// SIGKILLs node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.node_mut(i).kill9();
    }

    /// SIGTERMs node `i` (a drain: announce, finish, flush) and waits for
    /// its exit (at most 60 s); its status.
    pub fn sigterm(&mut self, i: usize) -> std::process::ExitStatus {
        self.node_mut(i).sigterm()
    }

    /// Waits (at most 60 s) for node `i`'s process to exit by itself (after
    /// `corekv drain`, say); its status.
    pub fn await_exit(&mut self, i: usize) -> std::process::ExitStatus {
        self.node_mut(i).await_exit(Duration::from_secs(60))
    }

    /// Runs the `corekv` command with `args` against node `i`'s client
    /// port (`--node` added); its exit status, stdout and stderr.
    pub fn cli(&self, i: usize, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .args(args)
            .args(["--node", &self.addr(i)])
            .output()
            .unwrap_or_else(|e| panic!("run corekv {args:?}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`TestCluster::cli`], failing the test (with the nodes' logs)
    /// unless the command succeeds; its stdout.
    pub fn cli_ok(&self, i: usize, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(i, args);
        assert!(
            ok,
            "corekv {args:?} via node {i} failed:\n{out}{err}\n{}",
            self.log_tails()
        );
        out
    }

    /// How node `viewer` sees node `target` (`corekv status`): `NORMAL`,
    /// `DOWN`, `JOINING`, `LEAVING`, or `None` when it does not list it.
    pub fn status_seen(&self, viewer: usize, target: usize) -> Result<Option<String>, String> {
        let (ok, out, err) = self.cli(viewer, &["status", "--timeout", "10"]);
        if !ok {
            return Err(format!("status via node {viewer}: {out}{err}"));
        }
        let id = format!("n{target}");
        Ok(out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&id.as_str()))
            .and_then(|w| w.get(1).map(|s| (*s).to_owned())))
    }

    /// Hints node `holder` keeps for node `target` (`corekv hints`).
    pub fn hints_for(&self, holder: usize, target: usize) -> Result<u64, String> {
        let (ok, out, err) = self.cli(holder, &["hints", "--timeout", "10"]);
        if !ok {
            return Err(format!("hints via node {holder}: {out}{err}"));
        }
        let prefix = format!("for n{target}: ");
        Ok(out
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0))
    }

    /// Restarts node `i` on its data (killing it first if it runs) and waits
    /// until it is ready; does not wait for the cluster to see it (see
    /// [`TestCluster::await_formed`]).
    pub fn restart(&mut self, i: usize) {
        self.node_mut(i).restart();
    }

    /// SIGKILLs node `i` and removes its data: a restart then starts it empty
    /// (same id, address and ports), as a replaced disk would.
    pub fn wipe_data(&mut self, i: usize) {
        let node = self.node_mut(i);
        node.kill9();
        let dir = node.dir.clone();
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            panic!("remove {}: {e}", dir.display());
        }
        std::fs::create_dir_all(&dir).expect("recreate the data dir");
    }

    /// The client addresses node `i`'s RING lists, sorted.
    pub fn ring_view(&self, i: usize) -> Result<Vec<String>, String> {
        let n = self.node(i);
        let mut w = Wire::connect_to(&n.listen, n.client).map_err(|e| format!("node {i}: connect: {e}"))?;
        let id = w.send(Op::Ring).map_err(|e| format!("node {i}: send RING: {e}"))?;
        match w.recv() {
            Ok(Some((rid, Reply::Ring(_, nodes)))) if rid == id => {
                let mut addrs: Vec<String> = nodes.into_iter().map(|(a, ..)| a).collect();
                addrs.sort();
                Ok(addrs)
            }
            Ok(Some((_, other))) => Err(format!("node {i}: RING answered {other:?}")),
            Ok(None) => Err(format!("node {i}: closed the connection")),
            Err(e) => Err(format!("node {i}: {e}")),
        }
    }

    /// Waits (at most [`FORM_TIMEOUT`]) until the RING of every running node
    /// lists every node of the cluster, running or not (a stopped node stays
    /// a member). Fails with each node's view and log tail.
    pub fn await_formed(&self) {
        let want: BTreeSet<String> = (1..=self.len()).map(|i| self.addr(i)).collect();
        let check = || {
            let mut missing = Vec::new();
            for i in self.running() {
                match self.ring_view(i) {
                    Ok(view) => {
                        let seen: BTreeSet<String> = view.into_iter().collect();
                        let lacks: Vec<&String> = want.difference(&seen).collect();
                        if !lacks.is_empty() {
                            missing.push(format!("node {i} does not list {lacks:?}"));
                        }
                    }
                    Err(e) => missing.push(e),
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join("; "))
            }
        };
        if let Err(last) = poll_until(FORM_TIMEOUT, check) {
            let views: Vec<String> = self
                .running()
                .into_iter()
                .map(|i| format!("node {i} ({}) lists {:?}", self.addr(i), self.ring_view(i)))
                .collect();
            panic!(
                "the cluster did not form within {FORM_TIMEOUT:?} (every node's RING listing all {}): {last}\n{}\n{}",
                self.len(),
                views.join("\n"),
                self.log_tails()
            );
        }
    }

    /// Like [`await_until`], but a failure also shows every node's log tail.
    pub fn await_until(&self, deadline: Duration, what: &str, check: impl FnMut() -> Result<(), String>) -> Duration {
        match poll_until(deadline, check) {
            Ok(took) => took,
            Err(last) => panic!(
                "{what}: not reached within {deadline:?}; still: {last}\n{}",
                self.log_tails()
            ),
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn log_tails(&self) -> String {
        (1..=self.len())
            .map(|i| {
                format!(
                    "--- node {i} ({}, {}) log tail:\n{}",
                    self.addr(i),
                    if self.node(i).is_running() {
                        "running"
                    } else {
                        "stopped"
                    },
                    self.node(i).log_tail(LOG_TAIL_LINES)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A blocking SDK client that fetches the ring from nodes `via` and sends
    /// requests at consistency `c`. The SDK routes each key to its owner by
    /// token, so `via` chooses who is asked for the ring, not who coordinates:
    /// use [`TestCluster::coordinator`] to pin the coordinator.
    pub fn client(&self, via: &[usize], c: Consistency) -> blocking::Client {
        let seeds: Vec<String> = via.iter().map(|&i| self.addr(i)).collect();
        let options = ClientOptions {
            consistency: c,
            timeout: Duration::from_secs(5),
            refresh_interval: None,
            ..ClientOptions::default()
        };
        match blocking::Client::connect(&seeds, options) {
            Ok(client) => client,
            Err(e) => panic!("SDK client via {seeds:?}: {e}\n{}", self.log_tails()),
        }
    }

    /// A raw connection to node `i`'s client port whose requests carry
    /// consistency `c`: node `i` coordinates every request sent on it.
    pub fn coordinator(&self, i: usize, c: Consistency) -> Wire {
        let n = self.node(i);
        match Wire::connect_to(&n.listen, n.client) {
            Ok(w) => w.with_consistency(c),
            Err(e) => panic!("connect to node {i} ({}): {e}", self.addr(i)),
        }
    }

    /// Node `i`'s own records of `keys`, in order (`None`: it has none), by
    /// node-to-node READs on one connection; no other replica is consulted.
    pub fn try_local_records(&self, i: usize, keys: &[&[u8]]) -> Result<Vec<Option<Record>>, String> {
        let n = self.node(i);
        let mut w = Wire::connect_to(&n.listen, n.client).map_err(|e| format!("node {i}: connect: {e}"))?;
        keys.iter().map(|key| peer_read(&mut w, i, key)).collect()
    }

    /// Node `i`'s own record of `key` (see [`TestCluster::try_local_records`]).
    pub fn try_local_record(&self, i: usize, key: &[u8]) -> Result<Option<Record>, String> {
        Ok(self.try_local_records(i, &[key])?.pop().flatten())
    }

    /// Node `i`'s own record of `key`; fails the test if it cannot be read.
    pub fn local_record(&self, i: usize, key: &[u8]) -> Option<Record> {
        match self.try_local_record(i, key) {
            Ok(r) => r,
            Err(e) => panic!("local record of {:?} on node {i}: {e}", String::from_utf8_lossy(key)),
        }
    }

    /// The live values node `i` holds for `key` (every sibling's; `None`: no
    /// record; `Some(empty)`: deleted). Fails the test if it cannot be read.
    pub fn local_values(&self, i: usize, key: &[u8]) -> Option<Vec<Vec<u8>>> {
        self.local_record(i, key).as_ref().map(live_values)
    }

    /// Degrades the links between nodes `side_a` and nodes `side_b` (both
    /// directions: dropped and delayed packets, [`crate::netfault`]) until
    /// the guard is healed or dropped. Fails the test if that cannot be set up.
    pub fn degrade(
        &self,
        side_a: &[usize],
        side_b: &[usize],
        spec: crate::netfault::LinkSpec,
    ) -> crate::netfault::LinkFault {
        let a: Vec<&str> = side_a.iter().map(|&i| self.ip(i)).collect();
        let b: Vec<&str> = side_b.iter().map(|&i| self.ip(i)).collect();
        match crate::netfault::LinkFault::new(&a, &b, spec) {
            Ok(f) => f,
            Err(e) => panic!("degrading the links {side_a:?} <-> {side_b:?}: {e}"),
        }
    }

    /// Cuts nodes `side_a` from nodes `side_b` (both directions) until the
    /// guard is healed or dropped.
    pub fn partition(&self, side_a: &[usize], side_b: &[usize]) -> Partition {
        let a: Vec<&str> = side_a.iter().map(|&i| self.ip(i)).collect();
        let b: Vec<&str> = side_b.iter().map(|&i| self.ip(i)).collect();
        Partition::new(&a, &b)
    }
}

/// One node-to-node READ of `key` on `w` (a connection to node `i`).
fn peer_read(w: &mut Wire, i: usize, key: &[u8]) -> Result<Option<Record>, String> {
    let show = || String::from_utf8_lossy(key).into_owned();
    let id = w.next_request_id();
    let mut frame = Vec::new();
    PeerRequest {
        from: "test",
        op: PeerOp::Read {
            token: token_of(key),
            key,
            digest_only: false,
        },
    }
    .encode_frame(id, &mut frame)
    .map_err(|e| format!("encode READ {}: {e}", show()))?;
    w.send_raw(&frame).map_err(|e| format!("node {i}: send READ: {e}"))?;
    let (header, body) = w
        .recv_frame()
        .map_err(|e| format!("node {i}: READ {}: {e}", show()))?
        .ok_or_else(|| format!("node {i}: closed the connection before answering READ {}", show()))?;
    if header.request_id != id {
        return Err(format!(
            "node {i}: answer to request {} for READ {id}",
            header.request_id
        ));
    }
    if !header.flags.is_response() {
        return Err(format!(
            "node {i}: a request frame (opcode {:#x}) instead of an answer",
            header.opcode
        ));
    }
    if header.flags.is_error() {
        let why = match Response::decode_body(ResponseOpcode::Error as u8, &body, &Limits::default()) {
            Ok(Response::Error { code, message }) => format!("{code:?}: {message}"),
            _ => format!("an undecodable error body {body:?}"),
        };
        return Err(format!("node {i}: READ {} refused: {why}", show()));
    }
    if header.opcode != PeerOpcode::Read as u8 {
        return Err(format!("node {i}: READ answered with opcode {:#x}", header.opcode));
    }
    match PeerResponse::decode_body(PeerOpcode::Read, &body, &Limits::default()) {
        Ok(PeerResponse::Record { record: None, .. }) => Ok(None),
        Ok(PeerResponse::Record {
            record: Some(bytes), ..
        }) => Record::decode(bytes)
            .map(Some)
            .map_err(|e| format!("node {i}: record of {}: {e}", show())),
        Ok(other) => Err(format!("node {i}: READ answered {other:?}")),
        Err(e) => Err(format!("node {i}: READ answer: {e}")),
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Each node kills its process (and removes its data unless the test failed).
        self.nodes.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// What the harness says when iptables is missing: a partition test cannot
/// run without it, and skipping would pass a test that checked nothing.
pub const IPTABLES_MISSING: &str =
    "iptables is not installed: the partition tests need it and root (Debian: apt-get install -y iptables)";

/// Runs `iptables -w <args>` (waiting for the xtables lock: parallel tests
/// may change rules at the same time).
pub(crate) fn iptables(args: &[&str]) -> Result<String, String> {
    let out = match Command::new("iptables").args(["-w", "10"]).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(IPTABLES_MISSING.to_owned()),
        Err(e) => return Err(format!("run iptables {args:?}: {e}")),
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "iptables {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Prefix of the chains the harness creates: `ckv-part-<pid>-<n>`.
pub(crate) const CHAIN_PREFIX: &str = "ckv-part-";

/// A network partition between two sets of IPs: DROP rules in both
/// directions (INPUT chain, which loopback traffic also crosses), in a
/// dedicated chain named from the pid. Removed by [`Partition::heal`] or on
/// drop, also when the test panics.
#[derive(Debug)]
pub struct Partition {
    chain: String,
    side_a: Vec<String>,
    side_b: Vec<String>,
    active: bool,
}

impl Partition {
    /// Cuts every IP of `side_a` from every IP of `side_b` and checks that a
    /// datagram no longer passes between any pair. Fails the test if
    /// iptables is missing ([`IPTABLES_MISSING`]) or refuses.
    pub fn new(side_a: &[&str], side_b: &[&str]) -> Partition {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(!side_a.is_empty() && !side_b.is_empty(), "a partition needs two sides");
        if let Err(e) = iptables(&["--version"]) {
            panic!("{e}");
        }
        remove_stale_chains();
        let chain = format!(
            "{CHAIN_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut p = Partition {
            chain,
            side_a: side_a.iter().map(|s| s.to_string()).collect(),
            side_b: side_b.iter().map(|s| s.to_string()).collect(),
            active: true,
        };
        if let Err(e) = p.install() {
            // Drop removes whatever part was installed.
            panic!("installing the partition: {e}");
        }
        for a in side_a {
            for b in side_b {
                for (from, to) in [(a, b), (b, a)] {
                    if udp_passes(from, to, Duration::from_millis(200)) {
                        panic!("partition installed in chain {} but {from} still reaches {to}", p.chain);
                    }
                }
            }
        }
        p
    }

    fn install(&mut self) -> Result<(), String> {
        let chain = self.chain.as_str();
        iptables(&["-N", chain])?;
        for a in &self.side_a {
            for b in &self.side_b {
                iptables(&["-A", chain, "-s", a, "-d", b, "-j", "DROP"])?;
                iptables(&["-A", chain, "-s", b, "-d", a, "-j", "DROP"])?;
            }
        }
        // First in INPUT, so no earlier ACCEPT (of established traffic, say)
        // lets packets of connections opened before the cut through.
        iptables(&["-I", "INPUT", "1", "-j", chain])?;
        Ok(())
    }

    /// The chain holding the rules (for checks with `iptables -S`).
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Removes the rules and checks that datagrams pass again between every
    /// pair. Healing twice does nothing.
    pub fn heal(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        if let Err(e) = remove_chain(&self.chain) {
            panic!("healing the partition: {e}");
        }
        for a in &self.side_a {
            for b in &self.side_b {
                for (from, to) in [(a, b), (b, a)] {
                    if !udp_passes(from, to, Duration::from_secs(2)) {
                        panic!(
                            "partition healed (chain {} removed) but {from} does not reach {to}",
                            self.chain
                        );
                    }
                }
            }
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if self.active {
            self.active = false;
            if let Err(e) = remove_chain(&self.chain) {
                eprintln!("could not remove partition chain {}: {e}", self.chain);
            }
        }
    }
}

/// Unhooks `chain` from INPUT and deletes it; tolerates a half-installed chain.
pub(crate) fn remove_chain(chain: &str) -> Result<(), String> {
    // The jump may be missing (install failed before it, or it was removed).
    while iptables(&["-D", "INPUT", "-j", chain]).is_ok() {}
    let listed = iptables(&["-S"])?;
    if listed.lines().any(|l| l == format!("-N {chain}")) {
        iptables(&["-F", chain])?;
        iptables(&["-X", chain])?;
    }
    Ok(())
}

/// Removes the chains of test processes that died without healing (SIGKILL,
/// abort), so their rules do not cut a later test that reuses the IPs.
pub(crate) fn remove_stale_chains() {
    let Ok(listed) = iptables(&["-S"]) else { return };
    for line in listed.lines() {
        let Some(chain) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(rest) = chain.strip_prefix(CHAIN_PREFIX) else {
            continue;
        };
        // `<pid>-<n>` for partitions, `<pid>-link<n>` for degraded links.
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove_chain(chain);
        }
    }
}

/// Whether a UDP datagram from `from` reaches `to` within `wait` (the
/// partition's rules match addresses, not protocols, so UDP shows what TCP
/// between the nodes gets).
pub fn udp_passes(from: &str, to: &str, wait: Duration) -> bool {
    let rx = match UdpSocket::bind((to, 0)) {
        Ok(s) => s,
        Err(e) => panic!("bind UDP on {to}: {e}"),
    };
    let tx = match UdpSocket::bind((from, 0)) {
        Ok(s) => s,
        Err(e) => panic!("bind UDP on {from}: {e}"),
    };
    let dest = rx.local_addr().expect("local address");
    rx.set_read_timeout(Some(wait)).expect("set timeout");
    tx.send_to(b"probe", dest).expect("send a probe");
    let mut buf = [0u8; 16];
    // Only the probe is sent to this fresh socket, so any datagram is ours.
    rx.recv_from(&mut buf).is_ok()
}
