//! Cluster-wide compare-and-set on real processes: CAS_VALUE and SERIAL_GET
//! are Paxos rounds among the key's replicas (`shard::cluster::paxos`).
//!
//! - Concurrent CAS and serial reads through every node of a 3-node cluster
//!   (RF 3) form linearizable histories per key, checked by the same
//!   Wing-Gong checker the simulation uses; a plain QUORUM GET afterwards
//!   returns each register's final value.
//! - With one node killed, CAS still works (a majority of 2 of 3 replicas),
//!   no increment is lost, and the restarted node coordinates CAS that see
//!   every earlier one.
//! - The first CAS on a key compares against the value plain writes left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use corekv_net::msg::{Consistency, ErrorCode, Op};
use corekv_tests::cluster::TestCluster;
use corekv_tests::torture::linearizable::{self, Kind, Op as LinOp, Val};
use corekv_tests::wire::Reply;

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

fn enc(v: Val) -> Option<Vec<u8>> {
    v.map(|n| n.to_string().into_bytes())
}

fn dec(b: &Option<Vec<u8>>) -> Val {
    b.as_ref().map(|b| {
        std::str::from_utf8(b)
            .unwrap()
            .parse::<u64>()
            .expect("a register holds a decimal")
    })
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap()
}

/// One client's ops on one key through node `via`: alternately a serial
/// read and a CAS from the value read to a value unique to this client.
fn client_history(
    c: &TestCluster,
    via: usize,
    key: &str,
    client: u64,
    ops: u64,
    start: Instant,
    barrier: &Barrier,
) -> Vec<LinOp> {
    let mut w = c.coordinator(via, Consistency::Quorum);
    let mut history = Vec::new();
    let mut last: Val = None;
    barrier.wait();
    for j in 0..ops {
        let invoke = micros(start);
        if j % 2 == 0 {
            match w.call(Op::SerialGet { key: key.as_bytes() }) {
                Reply::Cas(true, v) => {
                    last = dec(&v);
                    history.push(LinOp {
                        invoke,
                        ret: Some(micros(start)),
                        kind: Kind::Read { result: last },
                    });
                }
                // A read without an answer had no effect on the register.
                Reply::Error(..) => {}
                other => panic!("SERIAL_GET answered {other:?}"),
            }
        } else {
            let new = Some(client * 1000 + j);
            let (e, n) = (enc(last), enc(new));
            let op = Op::CasValue {
                key: key.as_bytes(),
                expected: e.as_deref(),
                new: n.as_deref(),
            };
            let (ret, result) = match w.call(op) {
                Reply::Cas(applied, v) => (Some(micros(start)), Some((applied, dec(&v)))),
                // Timed out or unavailable: the outcome is unknown.
                Reply::Error(..) => (None, None),
                other => panic!("CAS_VALUE answered {other:?}"),
            };
            history.push(LinOp {
                invoke,
                ret,
                kind: Kind::Cas {
                    expected: last,
                    new,
                    result,
                },
            });
        }
    }
    history
}

#[test]
fn concurrent_cas_through_every_node_is_linearizable() {
    let c = TestCluster::start(BIN, TMP, "cas-lin", 3, &[]);
    let keys: [&'static str; 3] = ["reg:a", "reg:b", "reg:c"];
    // 3 coordinators x 3 keys, 16 ops each: 48 ops per key (the checker's
    // bound is 64).
    let start = Instant::now();
    let barrier = Arc::new(Barrier::new(keys.len() * 3));
    let c = Arc::new(c);
    let mut threads = Vec::new();
    for (ki, &key) in keys.iter().enumerate() {
        for via in 1..=3usize {
            let (c, b) = (c.clone(), barrier.clone());
            let client = (ki * 10 + via) as u64;
            threads.push((
                ki,
                std::thread::spawn(move || client_history(&c, via, key, client, 16, start, &b)),
            ));
        }
    }
    let mut per_key: Vec<Vec<LinOp>> = vec![Vec::new(); keys.len()];
    for (ki, t) in threads {
        per_key[ki].extend(t.join().unwrap());
    }
    for (key, history) in keys.iter().zip(&per_key) {
        let applied = history
            .iter()
            .filter(|o| {
                matches!(
                    o.kind,
                    Kind::Cas {
                        result: Some((true, _)),
                        ..
                    }
                )
            })
            .count();
        let answered = history.iter().filter(|o| o.ret.is_some()).count();
        assert!(
            answered * 2 >= history.len(),
            "{key}: only {answered} of {} ops answered\n{}",
            history.len(),
            c.log_tails()
        );
        assert!(applied > 0, "{key}: no CAS applied in {history:?}");
        if let Err(e) = linearizable::check(history) {
            panic!("{key}: not linearizable: {e}\nhistory: {history:#?}");
        }
    }
    // Each register's final value, by serial read through every node, and by
    // a plain QUORUM read of the data (the CAS copied it there).
    for key in keys {
        let mut seen = Vec::new();
        for via in 1..=3 {
            let mut w = c.coordinator(via, Consistency::Quorum);
            match w.call(Op::SerialGet { key: key.as_bytes() }) {
                Reply::Cas(true, v) => seen.push(v),
                other => panic!("{key}: SERIAL_GET via node {via}: {other:?}"),
            }
        }
        assert!(
            seen.windows(2).all(|p| p[0] == p[1]),
            "{key}: serial reads differ: {seen:?}"
        );
        let mut w = c.coordinator(1, Consistency::Quorum);
        let plain = match w.call(Op::Get { key: key.as_bytes() }) {
            Reply::Value(v, ..) => Some(v),
            Reply::NotFound => None,
            other => panic!("{key}: GET {other:?}"),
        };
        assert_eq!(plain, seen[0], "{key}: a QUORUM GET disagrees with the register");
    }
}

/// What a run of increments did: applied for sure, and outcome unknown
/// (a CAS whose proposal lost to a concurrent one before a majority
/// accepted it: it may still be chosen, so the server cannot say).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    applied: u64,
    unknown: u64,
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            applied: self.applied + o.applied,
            unknown: self.unknown + o.unknown,
        }
    }
}

/// Increments `key` by CAS through node `via` until `n` increments applied.
fn increment(c: &TestCluster, via: usize, key: &str, n: u64) -> Tally {
    let mut w = c.coordinator(via, Consistency::Quorum);
    let mut t = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.applied < n {
        assert!(
            Instant::now() < deadline,
            "{t:?} of {n} increments via node {via} in 60 s\n{}",
            c.log_tails()
        );
        let cur = match w.call(Op::SerialGet { key: key.as_bytes() }) {
            Reply::Cas(true, v) => dec(&v),
            Reply::Error(..) => continue,
            other => panic!("SERIAL_GET {other:?}"),
        };
        let (e, n) = (enc(cur), enc(Some(cur.unwrap_or(0) + 1)));
        let op = Op::CasValue {
            key: key.as_bytes(),
            expected: e.as_deref(),
            new: n.as_deref(),
        };
        match w.call(op) {
            Reply::Cas(true, _) => t.applied += 1,
            Reply::Cas(false, _) => {}
            Reply::Error(code, _) if code == ErrorCode::TIMEOUT => t.unknown += 1,
            Reply::Error(code, msg) => panic!("CAS via node {via}: {code:?} {msg}\n{}", c.log_tails()),
            other => panic!("CAS_VALUE {other:?}"),
        }
    }
    t
}

/// Runs `per` increments through each node of `via` at once; returns the sum.
fn increments(c: &TestCluster, via: &[usize], key: &str, per: u64) -> Tally {
    std::thread::scope(|s| {
        let runs: Vec<_> = via
            .iter()
            .map(|&i| s.spawn(move || increment(c, i, key, per)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap())
            .fold(Tally::default(), |a, b| a + b)
    })
}

/// Every increment that answered "applied" is in the count, and nothing
/// beyond those whose outcome was unknown.
fn assert_count(got: Val, t: Tally, what: &str) {
    let got = got.unwrap_or(0);
    assert!(
        t.applied <= got && got <= t.applied + t.unknown,
        "{what}: counter {got}, but {} increments applied and {} unknown",
        t.applied,
        t.unknown
    );
}

fn serial_get(c: &TestCluster, via: usize, key: &str) -> Val {
    let mut w = c.coordinator(via, Consistency::Quorum);
    match w.call(Op::SerialGet { key: key.as_bytes() }) {
        Reply::Cas(true, v) => dec(&v),
        other => panic!("SERIAL_GET via node {via}: {other:?}\n{}", c.log_tails()),
    }
}

#[test]
fn cas_counter_survives_a_killed_node() {
    let mut c = TestCluster::start(BIN, TMP, "cas-kill", 3, &[]);
    let key = "counter";
    let mut total = increments(&c, &[1, 2], key, 20);
    assert_count(serial_get(&c, 3, key), total, "all nodes up");

    // Node 3 holds a third of every key's acceptors; 2 of 3 remain a majority.
    c.kill9(3);
    let t = increments(&c, &[1, 2], key, 15);
    total = total + t;
    let after_kill = serial_get(&c, 1, key);
    assert_count(after_kill, total, "node 3 killed");

    // Back, node 3 coordinates CAS that see everything decided without it:
    // alone, none of its increments can be unknown, so the count is exact.
    c.restart(3);
    c.await_formed();
    let t = increment(&c, 3, key, 5);
    assert_eq!(t.unknown, 0, "a lone proposer lost a round: {t:?}");
    let want = after_kill.map(|n| n + 5);
    assert_eq!(serial_get(&c, 2, key), want);
    assert_eq!(serial_get(&c, 3, key), want);
}

#[test]
fn first_cas_sees_plain_writes_and_deletes_through_cas() {
    let c = TestCluster::start(BIN, TMP, "cas-plain", 3, &[]);
    let mut w = c.coordinator(2, Consistency::Quorum);
    assert_eq!(
        w.call(Op::Put {
            key: b"plain",
            value: b"v1",
            ttl_ms: 0,
            condition: corekv_net::msg::Condition::Always,
        }),
        Reply::Ok
    );
    let cas = |w: &mut corekv_tests::wire::Wire, e: Option<&[u8]>, n: Option<&[u8]>| {
        w.call(Op::CasValue {
            key: b"plain",
            expected: e,
            new: n,
        })
    };
    // A wrong expectation fails and shows the value the plain PUT wrote.
    assert_eq!(cas(&mut w, None, Some(b"x")), Reply::Cas(false, Some(b"v1".to_vec())));
    assert_eq!(
        cas(&mut w, Some(b"v1"), Some(b"v2")),
        Reply::Cas(true, Some(b"v2".to_vec()))
    );
    let mut w1 = c.coordinator(1, Consistency::Quorum);
    assert_eq!(
        cas(&mut w1, Some(b"v1"), Some(b"v3")),
        Reply::Cas(false, Some(b"v2".to_vec()))
    );
    // Delete through CAS: the register is empty and the key gone from the data.
    assert_eq!(cas(&mut w1, Some(b"v2"), None), Reply::Cas(true, None));
    assert_eq!(w1.call(Op::SerialGet { key: b"plain" }), Reply::Cas(true, None));
    assert_eq!(w1.call(Op::Get { key: b"plain" }), Reply::NotFound);
    // And created again from empty.
    assert_eq!(cas(&mut w, None, Some(b"v4")), Reply::Cas(true, Some(b"v4".to_vec())));
    match c.coordinator(3, Consistency::Quorum).call(Op::Get { key: b"plain" }) {
        Reply::Value(v, ..) => assert_eq!(v, b"v4"),
        other => panic!("GET after the CAS: {other:?}"),
    }
    // The version CAS is refused in cluster mode with a pointer to CAS_VALUE.
    match w.call(Op::Cas {
        key: b"plain",
        expected: b"",
        value: b"v",
        ttl_ms: 0,
    }) {
        Reply::Error(_, msg) => assert!(msg.contains("CAS_VALUE"), "{msg}"),
        other => panic!("version CAS in cluster mode answered {other:?}"),
    }
}

/// INCR in cluster mode is a Paxos add: concurrent increments through every
/// node, on the native and the Redis port, lose none; a value that is not an
/// integer is refused.
#[test]
fn incr_is_a_linearizable_counter() {
    use std::io::{BufRead, BufReader, Write};
    let c = TestCluster::start(BIN, TMP, "cas-incr", 3, &[]);
    let t = std::thread::scope(|s| {
        let runs: Vec<_> = (1..=3usize)
            .map(|via| {
                let c = &c;
                s.spawn(move || {
                    let mut w = c.coordinator(via, Consistency::Quorum);
                    let mut t = Tally::default();
                    for _ in 0..20 {
                        match w.call(Op::Incr { key: b"hits", delta: 2 }) {
                            Reply::Int(_) => t.applied += 1,
                            Reply::Error(code, _) if code == ErrorCode::TIMEOUT => t.unknown += 1,
                            other => panic!("INCR via node {via}: {other:?}\n{}", c.log_tails()),
                        }
                    }
                    t
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap())
            .fold(Tally::default(), |a, b| a + b)
    });
    let got = serial_get(&c, 1, "hits").map(|n| n / 2);
    assert_count(got, t, "INCR by 2 from 3 nodes");

    // Redis clients: INCRBY through node 2's RESP port.
    let n = c.node(2);
    let s = std::net::TcpStream::connect((n.listen.as_str(), n.resp)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut resp = |cmd: &[&str]| {
        let mut out = format!("*{}\r\n", cmd.len());
        for a in cmd {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        (&s).write_all(out.as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    };
    let before = serial_get(&c, 3, "hits").unwrap();
    assert_eq!(resp(&["INCRBY", "hits", "10"]), format!(":{}", before + 10));
    assert_eq!(resp(&["DECR", "fresh"]), ":-1");
    assert_eq!(resp(&["SET", "text", "abc"]), "+OK");
    assert!(resp(&["INCR", "text"]).starts_with("-ERR value is not an integer"));
    let mut w = c.coordinator(3, Consistency::Quorum);
    match w.call(Op::Incr { key: b"text", delta: 1 }) {
        Reply::Error(code, _) => assert_eq!(code, ErrorCode::NOT_AN_INTEGER),
        other => panic!("INCR of a non-integer answered {other:?}"),
    }
}
