//! Elasticity with real processes (issue 4, acceptance item 2): a node joins
//! under a write load and gets its fair share without losing an acknowledged
//! write; decommission and removenode leave RF copies of every key.
//!
//! The harness (tests/src/cluster.rs) gives each cluster its own loopback
//! addresses and reads a replica's own records with node-to-node READs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corekv_net::msg::{Condition, Consistency, Op};
use corekv_tests::cluster::TestCluster;
use corekv_tests::wire::Reply;

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const RF: usize = 3;
const CONVERGE: Duration = Duration::from_secs(60);

fn value(key: &str) -> Vec<u8> {
    let mut v = format!("value of {key}|").into_bytes();
    v.resize(200, b'.');
    v
}

/// Writes `keys` at ALL through node `via`; fails the test on any refusal.
fn write_all(c: &TestCluster, via: usize, keys: &[String]) {
    let ops: Vec<(String, Vec<u8>)> = keys.iter().map(|k| (k.clone(), value(k))).collect();
    let req: Vec<Op<'_>> = ops
        .iter()
        .map(|(k, v)| Op::Put {
            key: k.as_bytes(),
            value: v,
            ttl_ms: 0,
            condition: Condition::Always,
        })
        .collect();
    let mut w = c.coordinator(via, Consistency::All);
    let replies = w.call_many(&req).unwrap();
    let bad: Vec<String> = keys
        .iter()
        .zip(&replies)
        .filter(|(_, r)| **r != Reply::Ok)
        .map(|(k, r)| format!("{k}: {r:?}"))
        .take(5)
        .collect();
    assert!(bad.is_empty(), "writes at ALL refused: {bad:?}\n{}", c.log_tails());
}

/// How many of `nodes` hold `key`'s value locally.
fn copies(c: &TestCluster, nodes: &[usize], keys: &[String]) -> Vec<usize> {
    let mut count = vec![0; keys.len()];
    for &i in nodes {
        let ks: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let recs = c.try_local_records(i, &ks).unwrap_or_else(|e| panic!("{e}"));
        for ((n, k), r) in count.iter_mut().zip(keys).zip(recs) {
            if r.as_ref()
                .is_some_and(|r| corekv_tests::cluster::live_values(r).contains(&value(k)))
            {
                *n += 1;
            }
        }
    }
    count
}

fn admin(c: &TestCluster, node: usize, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--node", &c.addr(node), "--timeout", "300"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "corekv {args:?} on node {node} failed: {}{}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr),
        c.log_tails()
    );
    text
}

#[test]
fn a_fourth_node_joins_under_write_load() {
    let mut c = TestCluster::start(BIN, TMP, "join", 3, &[]);
    let before: Vec<String> = (0..1500).map(|i| format!("before:{i:05}")).collect();
    write_all(&c, 1, &before);

    // A writer at QUORUM through nodes 1-3 in turn for the whole join; it
    // records every write acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut wires: Vec<_> = (1..=3).map(|i| c.coordinator(i, Consistency::Quorum)).collect();
    let s = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut refused = 0usize;
        let mut i = 0usize;
        while !s.load(Ordering::Relaxed) {
            let key = format!("during:{i:06}");
            let v = value(&key);
            let r = wires[i % 3].call(Op::Put {
                key: key.as_bytes(),
                value: &v,
                ttl_ms: 0,
                condition: Condition::Always,
            });
            if r == Reply::Ok {
                acked.push(key);
            } else {
                refused += 1;
            }
            i += 1;
        }
        (acked, refused)
    });
    let n4 = c.add_node();
    // Keep writing a little after node 4 is NORMAL everywhere.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (during, refused) = writer.join().unwrap();
    assert!(!during.is_empty(), "no write was acknowledged during the join");

    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    // No acknowledged write lost: every one reads back at QUORUM.
    let mut w = c.coordinator(1, Consistency::Quorum);
    let ops: Vec<Op<'_>> = all.iter().map(|k| Op::Get { key: k.as_bytes() }).collect();
    let replies = w.call_many(&ops).unwrap();
    let lost: Vec<&String> = all
        .iter()
        .zip(&replies)
        .filter(|(k, r)| !matches!(r, Reply::Value(v, ..) if *v == value(k)))
        .map(|(k, _)| k)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes do not read back after the join, e.g. {:?}",
        lost.len(),
        all.len(),
        &lost[..lost.len().min(5)]
    );

    // Node 4's share: RF x K / N keys, within 10%.
    let held = copies(&c, &[n4], &all).iter().filter(|&&n| n == 1).count();
    let fair = (RF * all.len()) as f64 / 4.0;
    let ratio = held as f64 / fair;
    println!(
        "join: {} keys ({} written during the join, {refused} refused), node 4 holds {held}, fair share {fair:.0}, ratio {ratio:.3}",
        all.len(),
        during.len()
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "node 4 holds {held} keys, fair share {fair:.0} (ratio {ratio:.3})"
    );
    // Every key still has RF copies on the new replica sets.
    let n = copies(&c, &[1, 2, 3, 4], &all);
    let short = n.iter().filter(|&&x| x < RF).count();
    assert_eq!(short, 0, "{short} keys have fewer than {RF} copies after the join");
}

#[test]
fn decommission_keeps_rf_copies() {
    let c = TestCluster::start(BIN, TMP, "decommission", 4, &[]);
    let keys: Vec<String> = (0..1000).map(|i| format!("d:{i:05}")).collect();
    write_all(&c, 1, &keys);
    let report = admin(&c, 4, &["decommission"]);
    assert!(report.contains("decommissioned"), "report: {report}");
    c.await_until(CONVERGE, "node 4 has left every ring", || {
        for i in 1..=3 {
            let view = c.ring_view(i)?;
            if view.contains(&c.addr(4)) {
                return Err(format!("node {i} still lists node 4: {view:?}"));
            }
        }
        Ok(())
    });
    let n = copies(&c, &[1, 2, 3], &keys);
    let short: Vec<(&String, usize)> = keys.iter().zip(n).filter(|(_, x)| *x < RF).collect();
    assert!(
        short.is_empty(),
        "{} keys have fewer than {RF} copies on the remaining nodes after decommission, e.g. {:?}",
        short.len(),
        &short[..short.len().min(5)]
    );
}

#[test]
fn removenode_restores_rf_copies() {
    let mut c = TestCluster::start(BIN, TMP, "removenode", 4, &["--cluster.hinted_handoff", "false"]);
    let keys: Vec<String> = (0..1000).map(|i| format!("r:{i:05}")).collect();
    write_all(&c, 1, &keys);
    c.kill9(4);
    c.await_until(CONVERGE, "node 1 believes node 4 down", || {
        let view = c.ring_view(1)?;
        if view.contains(&c.addr(4)) {
            Err(format!("node 1 still lists node 4 as up: {view:?}"))
        } else {
            Ok(())
        }
    });
    // Before: the keys node 4 replicated have only 2 copies left.
    let before = copies(&c, &[1, 2, 3], &keys);
    assert!(before.iter().any(|&x| x < RF), "node 4 held no key?");
    let report = admin(&c, 1, &["removenode", "n4"]);
    println!("removenode report:\n{report}");
    let n = copies(&c, &[1, 2, 3], &keys);
    let short = n.iter().filter(|&&x| x < RF).count();
    assert_eq!(
        short, 0,
        "{short} keys have fewer than {RF} copies after removenode:\n{report}"
    );
}

/// A bootstrap killed halfway resumes after the restart: the ranges it had
/// finished are not streamed again, and the node still ends with its share
/// and every key with RF copies.
#[test]
fn an_interrupted_bootstrap_resumes() {
    let mut c = TestCluster::start(BIN, TMP, "join-resume", 3, &[]);
    let keys: Vec<String> = (0..3000).map(|i| format!("resume:{i:05}")).collect();
    write_all(&c, 1, &keys);
    // Slow streaming (200 KB/s for ~600 KB to pull) so there is time to kill it.
    let n4 = c.add_node_unformed(&["--cluster.stream_bytes_per_sec", "200000"]);
    let progress = c.node(n4).dir.join("bootstrap-progress");
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
    c.await_until(CONVERGE, "node 4 records streamed ranges", || {
        let n = lines(&progress);
        if n >= 50 {
            Ok(())
        } else {
            Err(format!("{n} ranges recorded"))
        }
    });
    c.kill9(n4);
    let before = lines(&progress);
    assert!(
        !c.node(n4).dir.join("joined").exists(),
        "node 4 finished joining before it was killed ({before} ranges recorded): streaming too fast for this test"
    );
    c.restart(n4);
    c.await_formed();
    let log = c.node(n4).log_text();
    assert!(
        log.contains("resuming an interrupted bootstrap"),
        "node 4 did not resume its bootstrap:\n{}",
        c.log_tails()
    );
    assert!(!progress.exists(), "the progress file outlived the bootstrap");
    let held = copies(&c, &[n4], &keys).iter().filter(|&&n| n == 1).count();
    let fair = (RF * keys.len()) as f64 / 4.0;
    let ratio = held as f64 / fair;
    println!("resumed bootstrap: {before} ranges done before the kill; node 4 holds {held} keys, ratio {ratio:.3}");
    assert!(
        (0.9..=1.1).contains(&ratio),
        "node 4 holds {held}, fair share {fair:.0}"
    );
    let n = copies(&c, &[1, 2, 3, 4], &keys);
    let short = n.iter().filter(|&&x| x < RF).count();
    assert_eq!(
        short, 0,
        "{short} keys have fewer than {RF} copies after the resumed join"
    );
}

#[test]
fn join_command_adds_a_waiting_node() {
    let mut c = TestCluster::start(BIN, TMP, "join-cmd", 3, &[]);
    let keys: Vec<String> = (0..600).map(|i| format!("j:{i:05}")).collect();
    write_all(&c, 1, &keys);
    let n4 = c.add_node_unformed(&["--cluster.auto_bootstrap", "false"]);
    let four = c.addr(n4);
    // A waiting node is no member: nobody's ring lists it until it is told.
    for i in 1..=3 {
        let view = c.ring_view(i).unwrap();
        assert!(!view.contains(&four), "node {i} lists node 4 before `join`: {view:?}");
    }
    // `join` against a member is refused, with the reason.
    let out = Command::new(BIN)
        .args(["join", "--node", &c.addr(1), "--timeout", "60"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not waiting to be added"),
        "join on a member: {err}"
    );

    let report = admin(&c, n4, &["join"]);
    assert!(report.contains("added"), "report: {report}");
    c.await_until(CONVERGE, "node 4 in every ring", || {
        for i in 1..=n4 {
            let view = c.ring_view(i)?;
            if !view.contains(&four) || view.len() != 4 {
                return Err(format!("node {i}: {view:?}"));
            }
        }
        Ok(())
    });
    // Its ranges were streamed in: every key keeps RF copies on the new
    // replica sets, and node 4 serves a share of them.
    c.await_until(CONVERGE, "every key has RF copies with node 4 in", || {
        let n = copies(&c, &[1, 2, 3, n4], &keys);
        let short = n.iter().filter(|&&x| x < RF).count();
        (short == 0)
            .then_some(())
            .ok_or(format!("{short} keys short of {RF} copies"))
    });
    let held = copies(&c, &[n4], &keys).iter().filter(|&&n| n == 1).count();
    assert!(held > 0, "node 4 holds none of the keys");
}
