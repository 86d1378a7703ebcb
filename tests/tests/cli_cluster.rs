//! `corekv cluster up` / `cluster down` and `corekv ring`, end to end: the
//! command starts real nodes on consecutive loopback addresses, they form
//! one cluster, data written through one node reads back through another,
//! `ring` shows every node holding a full replica (RF 3 on 3 nodes), a
//! second `up` on the same directory is refused, and `down` (or Ctrl-C in
//! the foreground) stops every node cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corekv_tests::cluster::next_subnet;

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// A client port `p` with `p - 1000` (RESP) and `p + 20`, `p + 21`
/// (shard-aware) free on every address.
fn free_port() -> u16 {
    let free = |p: u16| TcpListener::bind(("0.0.0.0", p)).is_ok();
    let start = 30_000 + (std::process::id() % 15_000) as u16;
    (start..start + 5_000)
        .find(|&p| free(p) && free(p - 1000) && free(p + 20) && free(p + 21))
        .expect("a free port block")
}

fn corekv(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("corekv runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cluster.pids"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); /proc tells a finished process apart.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn cluster_up_forms_a_cluster_that_ring_describes_and_down_stops() {
    let dir = Path::new(TMP).join("cli-cluster-detached");
    let _ = std::fs::remove_dir_all(&dir);
    let ip1 = format!("127.0.{}.1", next_subnet());
    let port = free_port();
    let port_s = port.to_string();
    let dir_s = dir.to_str().unwrap();
    let up = [
        "cluster",
        "up",
        "--nodes",
        "3",
        "--dir",
        dir_s,
        "--ip",
        &ip1,
        "--port",
        &port_s,
        "--detach",
        "--set",
        "cluster.gossip_interval_ms=200",
    ];
    let o = corekv(&up);
    assert!(o.status.success(), "cluster up failed: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("a 3-node cluster is up"), "{}", text(&o));
    let started = pids(&dir);
    assert_eq!(started.len(), 3);
    assert!(started.iter().all(|p| alive(*p)));

    // Every node holds every key at RF 3 on 3 nodes; primaries split the ring.
    let node1 = format!("{ip1}:{port}");
    let o = corekv(&["ring", "--node", &node1]);
    assert!(o.status.success(), "ring failed: {}", text(&o));
    let ring = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows: Vec<&str> = ring
        .lines()
        .filter(|l| l.starts_with('n') && l.contains("NORMAL"))
        .collect();
    assert_eq!(rows.len(), 3, "{ring}");
    let mut primary = 0.0;
    for r in &rows {
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(cols[3], "256", "vnodes of {r}");
        primary += cols[4].trim_end_matches('%').parse::<f64>().unwrap();
        assert_eq!(cols[5], "100.00%", "replicated share of {r}");
    }
    assert!(
        (primary - 100.0).abs() < 0.05,
        "primary shares sum to {primary}: {ring}"
    );
    let o = corekv(&["ring", "--tokens", "--node", &node1]);
    assert!(o.status.success(), "{}", text(&o));
    let tokens = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("0x"))
        .count();
    assert_eq!(tokens, 3 * 256);

    // Written through node 2 at QUORUM (the CLI's default), read through node 3.
    let ip = |i: u8| {
        let mut a: Vec<&str> = ip1.split('.').collect();
        let last = i.to_string();
        a[3] = &last;
        format!("{}:{port}", a.join("."))
    };
    let (node2, node3) = (ip(2), ip(3));
    let o = corekv(&["put", "greeting", "hello", "--node", &node2]);
    assert!(o.status.success(), "put: {}", text(&o));
    let o = corekv(&["get", "greeting", "--node", &node3]);
    assert!(o.status.success(), "get: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello");

    // A second cluster on the same directory would fight over the data.
    let o = corekv(&up);
    assert!(!o.status.success(), "a second `up` was accepted: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("still running"),
        "{}",
        text(&o)
    );

    let o = corekv(&["cluster", "down", "--dir", dir_s]);
    assert!(o.status.success(), "cluster down: {}", text(&o));
    assert!(started.iter().all(|p| !alive(*p)), "a node outlived `down`");
    assert!(!dir.join("cluster.pids").exists());
    let o = corekv(&["cluster", "down", "--dir", dir_s]);
    assert!(!o.status.success(), "down with nothing running succeeded");
}

#[test]
fn cluster_up_in_the_foreground_stops_every_node_on_sigint() {
    let dir = Path::new(TMP).join("cli-cluster-foreground");
    let _ = std::fs::remove_dir_all(&dir);
    let ip1 = format!("127.0.{}.1", next_subnet());
    let port = free_port().to_string();
    let mut child = Command::new(BIN)
        .args(["cluster", "up", "--nodes", "2", "--replication-factor", "2"])
        .args(["--dir", dir.to_str().unwrap(), "--ip", &ip1, "--port", &port])
        .args(["--set", "cluster.gossip_interval_ms=200"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let t0 = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("`cluster up` ended before the cluster was up")
            .unwrap();
        if line.contains("Ctrl-C stops every node") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(180), "no cluster after 180 s");
    }
    let started = pids(&dir);
    assert_eq!(started.len(), 2);
    assert!(started.iter().all(|p| alive(*p)));
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "`cluster up` exited {status} after SIGINT");
    assert!(started.iter().all(|p| !alive(*p)), "a node outlived its `cluster up`");
}
