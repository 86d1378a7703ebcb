//! The multi-process harness itself (`corekv_tests::cluster`): nodes on
//! distinct loopback IPs, pinned coordinators, polling that fails with a
//! message, and the iptables partition guard (which needs root and iptables,
//! like the partition test in `cluster.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use corekv_net::msg::{Condition, Consistency, Op};
use corekv_tests::cluster::{await_until, next_subnet, udp_passes, Partition, TestCluster};
use corekv_tests::wire::{Reply, Wire};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

#[test]
fn standalone_nodes_run_on_distinct_ips_as_separate_processes() {
    let c = TestCluster::start_standalone(BIN, TMP, "harness-ips", 3);
    let k = c.ip(1).split('.').nth(2).unwrap().to_owned();
    let ips: BTreeSet<&str> = (1..=3).map(|i| c.ip(i)).collect();
    assert_eq!(ips.len(), 3, "{ips:?}");
    let pids: BTreeSet<u32> = (1..=3).map(|i| c.node(i).pid()).collect();
    assert_eq!(pids.len(), 3, "one process per node: {pids:?}");
    for i in 1..=3 {
        assert_eq!(c.ip(i), format!("127.0.{k}.{i}"));
        // Single-node mode: each node's ring is itself alone.
        assert_eq!(c.ring_view(i).unwrap(), vec![c.addr(i)]);
        // It binds its own IP only, not 127.0.0.1.
        assert!(
            Wire::connect(c.node(i).client).is_err(),
            "node {i} also answers on 127.0.0.1"
        );
    }
    // A coordinator connection reaches exactly its node: each node keeps the
    // value written through it.
    for i in 1..=3 {
        let mut w = c.coordinator(i, Consistency::One);
        let value = format!("written through n{i}");
        let put = Op::Put {
            key: b"who",
            value: value.as_bytes(),
            ttl_ms: 0,
            condition: Condition::Always,
        };
        assert_eq!(w.call(put), Reply::Ok);
    }
    for i in 1..=3 {
        let mut w = c.coordinator(i, Consistency::One);
        match w.call(Op::Get { key: b"who" }) {
            Reply::Value(v, ..) => assert_eq!(v, format!("written through n{i}").as_bytes()),
            other => panic!("node {i}: {other:?}"),
        }
    }
    // Another cluster of the same process gets another subnet.
    let d = TestCluster::start_standalone(BIN, TMP, "harness-ips-2", 1);
    assert_ne!(d.ip(1).split('.').nth(2).unwrap(), k);
}

#[test]
#[should_panic(expected = "the impossible: not reached within 300ms; still: key k7 missing")]
fn await_until_fails_naming_what_is_missing() {
    await_until(Duration::from_millis(300), "the impossible", || {
        Err("key k7 missing".into())
    });
}

#[test]
fn await_until_returns_once_the_condition_holds() {
    let mut calls = 0;
    let took = await_until(Duration::from_secs(5), "the third poll", || {
        calls += 1;
        if calls >= 3 {
            Ok(())
        } else {
            Err(format!("{calls} polls"))
        }
    });
    assert_eq!(calls, 3);
    assert!(took < Duration::from_secs(5));
}

/// A subnet this process uses is locked against other processes (here the
/// `flock` tool), so two test processes never put clusters on one subnet.
#[test]
fn a_subnet_in_use_is_locked_against_other_processes() {
    let k = next_subnet();
    let file = std::env::temp_dir().join("corekv-test-subnets").join(k.to_string());
    let other = |path: &std::path::Path| {
        Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "7"])
            .arg(path)
            .arg("true")
            .status()
            .expect("run flock (util-linux)")
            .code()
    };
    assert_eq!(other(&file), Some(7), "another process could lock subnet {k}");
    // A file no process holds: the tool gets its lock.
    let free = std::env::temp_dir().join(format!("corekv-test-subnets/unused-{}", std::process::id()));
    std::fs::write(&free, b"").unwrap();
    assert_eq!(other(&free), Some(0));
    let _ = std::fs::remove_file(&free);
}

fn chains() -> String {
    let out = Command::new("iptables")
        .args(["-w", "10", "-S"])
        .output()
        .expect("iptables (install it: apt-get install -y iptables)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_chain(chain: &str) -> bool {
    chains().lines().any(|l| l == format!("-N {chain}"))
}

#[test]
fn partition_guard_cuts_both_ways_and_heals() {
    let k = next_subnet();
    let ip = |i: u8| format!("127.0.{k}.{i}");
    let (a1, a2, b) = (ip(1), ip(2), ip(3));
    let wait = Duration::from_secs(2);
    for (from, to) in [(&a1, &b), (&b, &a1), (&a2, &b), (&a1, &a2)] {
        assert!(udp_passes(from, to, wait), "{from} -> {to} before the partition");
    }
    let mut p = Partition::new(&[&a1, &a2], &[&b]);
    let chain = p.chain().to_owned();
    let listed = chains();
    assert!(has_chain(&chain), "{listed}");
    assert!(listed.lines().any(|l| l == format!("-A INPUT -j {chain}")), "{listed}");
    let short = Duration::from_millis(200);
    for (from, to) in [(&a1, &b), (&b, &a1), (&a2, &b), (&b, &a2)] {
        assert!(!udp_passes(from, to, short), "{from} -> {to} during the partition");
    }
    // One side keeps talking, and so does the test process (from 127.0.0.1).
    assert!(udp_passes(&a1, &a2, wait));
    assert!(udp_passes("127.0.0.1", &b, wait));
    p.heal();
    assert!(!has_chain(&chain), "chain {chain} left after heal");
    for (from, to) in [(&a1, &b), (&b, &a2)] {
        assert!(udp_passes(from, to, wait), "{from} -> {to} after heal");
    }
}

#[test]
fn partition_guard_heals_when_the_test_panics() {
    let k = next_subnet();
    let (a, b) = (format!("127.0.{k}.1"), format!("127.0.{k}.2"));
    let (tx, rx) = std::sync::mpsc::channel();
    let (a2, b2) = (a.clone(), b.clone());
    let panicked = std::thread::spawn(move || {
        let p = Partition::new(&[&a2], &[&b2]);
        tx.send(p.chain().to_owned()).unwrap();
        panic!("a test failing during a partition");
    })
    .join();
    assert!(panicked.is_err());
    let chain = rx.recv().unwrap();
    assert!(!has_chain(&chain), "chain {chain} left after a panic");
    assert!(udp_passes(&a, &b, Duration::from_secs(2)));
}
