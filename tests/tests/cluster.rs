//! Replication guarantees of a real cluster (`corekv serve` processes on
//! their own loopback IPs, see `corekv_tests::cluster`): quorum operations
//! survive a killed node, hints reach a node that comes back, a read at ALL
//! repairs a stale replica, and writes at ONE on both sides of a partition
//! all survive the heal (as siblings when they were concurrent).
//!
//! Every cluster: replication factor 3, one core per node, gossip every
//! 200 ms, 1 KiB values on keys spread over the ring. What a replica holds is
//! checked with a node-to-node READ of its own record, which consults no
//! other replica and repairs nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use corekv_net::msg::peer::{PeerOp, PeerOpcode, PeerRequest, PeerResponse};
use corekv_net::msg::{Condition, Consistency, ErrorCode, Limits, List, Op};
use corekv_net::token::token_of;
use corekv_tests::cluster::{live_values, TestCluster};
use corekv_tests::wire::{Reply, Wire};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Every value is this long.
const VALUE_LEN: usize = 1024;

/// How long a convergence (hint replay, read repair, failure detection) may take.
const CONVERGE: Duration = Duration::from_secs(30);

/// The node the failure tests kill: not a seed, so the others keep gossiping
/// through their seeds.
const VICTIM: usize = 3;

fn start(name: &str, n: usize, extra: &[&str]) -> TestCluster {
    TestCluster::start(BIN, TMP, name, n, extra)
}

/// Keys `prefix:i` for `i` in `range`, checked to cover the whole ring
/// (a key in each eighth of the token space), so every replica set has some.
fn keys(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let keys: Vec<String> = range.map(|i| format!("{prefix}:{i:05}")).collect();
    let mut per_eighth = [0usize; 8];
    for k in &keys {
        per_eighth[(token_of(k.as_bytes()) >> 61) as usize] += 1;
    }
    assert!(
        per_eighth.iter().all(|&n| n > 0),
        "keys {prefix}:* do not cover the ring: {per_eighth:?}"
    );
    keys
}

/// A 1 KiB value that starts with the write's tag and key, so a wrong answer
/// shows whose value it is; the rest is filler derived from both.
fn value(tag: &str, key: &str) -> Vec<u8> {
    let mut v = format!("{tag}|{key}|").into_bytes();
    let mut x = token_of(key.as_bytes()) ^ token_of(tag.as_bytes());
    while v.len() < VALUE_LEN {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        v.push(b'a' + ((x >> 59) as u8 % 26));
    }
    v
}

fn pairs(tag: &str, keys: &[String]) -> Vec<(String, Vec<u8>)> {
    keys.iter().map(|k| (k.clone(), value(tag, k))).collect()
}

/// The readable head of a value (tag and key).
fn show(v: &[u8]) -> String {
    let head = v.iter().position(|&b| b == b'|').map_or(v.len(), |i| i + 1);
    let end = v[head..].iter().position(|&b| b == b'|').map_or(v.len(), |i| head + i);
    String::from_utf8_lossy(&v[..end.min(60)]).into_owned()
}

/// Writes pair `j` through node `via[j % via.len()]` at `c`, pipelined; one
/// result per pair (`Err` names the key, the node and the answer).
fn try_put_through(
    c: &TestCluster,
    via: &[usize],
    level: Consistency,
    pairs: &[(String, Vec<u8>)],
) -> Vec<Result<(), String>> {
    let mut out: Vec<Result<(), String>> = vec![Ok(()); pairs.len()];
    for (turn, &node) in via.iter().enumerate() {
        let idxs: Vec<usize> = (turn..pairs.len()).step_by(via.len()).collect();
        let ops: Vec<Op<'_>> = idxs
            .iter()
            .map(|&j| Op::Put {
                key: pairs[j].0.as_bytes(),
                value: &pairs[j].1,
                ttl_ms: 0,
                condition: Condition::Always,
            })
            .collect();
        let mut w = c.coordinator(node, level);
        match w.call_many(&ops) {
            Ok(replies) => {
                for (&j, reply) in idxs.iter().zip(replies) {
                    if reply != Reply::Ok {
                        out[j] = Err(format!(
                            "PUT {} at {level:?} through node {node}: {reply:?}",
                            pairs[j].0
                        ));
                    }
                }
            }
            Err(e) => {
                for &j in &idxs {
                    out[j] = Err(format!("PUT {} at {level:?} through node {node}: {e}", pairs[j].0));
                }
            }
        }
    }
    out
}

/// Like [`try_put_through`], failing the test on any refused write.
fn put_through(c: &TestCluster, via: &[usize], level: Consistency, pairs: &[(String, Vec<u8>)]) {
    let refused: Vec<String> = try_put_through(c, via, level, pairs)
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} writes refused, first: {:?}\n{}",
        refused.len(),
        pairs.len(),
        &refused[..refused.len().min(5)],
        c.log_tails()
    );
}

/// GET of key `j` through node `via[j % via.len()]` at `level`, pipelined.
fn get_through(
    c: &TestCluster,
    via: &[usize],
    level: Consistency,
    keys: &[&str],
) -> Vec<Result<Option<Vec<u8>>, String>> {
    let mut out: Vec<Result<Option<Vec<u8>>, String>> = vec![Ok(None); keys.len()];
    for (turn, &node) in via.iter().enumerate() {
        let idxs: Vec<usize> = (turn..keys.len()).step_by(via.len()).collect();
        let ops: Vec<Op<'_>> = idxs
            .iter()
            .map(|&j| Op::Get {
                key: keys[j].as_bytes(),
            })
            .collect();
        let mut w = c.coordinator(node, level);
        match w.call_many(&ops) {
            Ok(replies) => {
                for (&j, reply) in idxs.iter().zip(replies) {
                    out[j] = match reply {
                        Reply::Value(v, ..) => Ok(Some(v)),
                        Reply::NotFound => Ok(None),
                        other => Err(format!("GET {} at {level:?} through node {node}: {other:?}", keys[j])),
                    };
                }
            }
            Err(e) => {
                for &j in &idxs {
                    out[j] = Err(format!("GET {} at {level:?} through node {node}: {e}", keys[j]));
                }
            }
        }
    }
    out
}

/// MGET of `keys` through node `node` at `level`, 50 keys a request.
fn mget_through(
    c: &TestCluster,
    node: usize,
    level: Consistency,
    keys: &[&str],
) -> Vec<Result<Option<Vec<u8>>, String>> {
    let mut w = c.coordinator(node, level);
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(50) {
        let ks: Vec<&[u8]> = chunk.iter().map(|k| k.as_bytes()).collect();
        match w.call(Op::MGet { keys: List::Slice(&ks) }) {
            Reply::Values(slots) if slots.len() == ks.len() => out.extend(slots.into_iter().map(Ok)),
            other => out.extend(chunk.iter().map(|k| {
                Err(format!(
                    "MGET ({k} among {}) through node {node}: {other:?}",
                    chunk.len()
                ))
            })),
        }
    }
    out
}

/// Fails the test unless every read returned the value written for its key.
fn assert_read_back(c: &TestCluster, what: &str, want: &[(String, Vec<u8>)], got: &[Result<Option<Vec<u8>>, String>]) {
    assert_eq!(want.len(), got.len());
    let wrong: Vec<String> = want
        .iter()
        .zip(got)
        .filter_map(|((k, v), r)| match r {
            Ok(Some(g)) if g == v => None,
            Ok(Some(g)) => Some(format!("{k}: read {} instead of {}", show(g), show(v))),
            Ok(None) => Some(format!("{k}: not found")),
            Err(e) => Some(e.clone()),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} reads wrong, first: {:?}\n{}",
        wrong.len(),
        want.len(),
        &wrong[..wrong.len().min(5)],
        c.log_tails()
    );
}

/// `Ok` when node `i`'s own records hold every `(key, value)` (as the value
/// or one of the siblings); else says how many are missing and shows some.
fn held_by(c: &TestCluster, i: usize, want: &[(String, Vec<u8>)]) -> Result<(), String> {
    let keys: Vec<&[u8]> = want.iter().map(|(k, _)| k.as_bytes()).collect();
    let records = c.try_local_records(i, &keys)?;
    let mut missing = Vec::new();
    for ((k, v), record) in want.iter().zip(&records) {
        let held = record.as_ref().map(live_values).unwrap_or_default();
        if !held.contains(v) {
            let shown: Vec<String> = held.iter().map(|h| show(h)).collect();
            missing.push(format!("{k} lacks {} (holds {shown:?})", show(v)));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "node {i} lacks {} of {} values, e.g. {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)]
        ))
    }
}

/// How many of `want` node `i` already holds locally.
fn count_held(c: &TestCluster, i: usize, want: &[(String, Vec<u8>)]) -> usize {
    want.iter()
        .filter(|(k, v)| c.local_values(i, k.as_bytes()).is_some_and(|held| held.contains(v)))
        .count()
}

/// One GET on `w`; an I/O error or an ERROR answer is an `Err`.
fn get_once(w: &mut Wire, key: &str) -> Result<Option<Vec<u8>>, String> {
    let id = w.send(Op::Get { key: key.as_bytes() }).map_err(|e| e.to_string())?;
    match w.recv() {
        Ok(Some((rid, Reply::Value(v, ..)))) if rid == id => Ok(Some(v)),
        Ok(Some((rid, Reply::NotFound))) if rid == id => Ok(None),
        Ok(Some((_, other))) => Err(format!("{other:?}")),
        Ok(None) => Err("connection closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads every key of `want` at ALL through node `node` until each has
/// answered once, and checks each answer is one of the key's acknowledged
/// values. A read at ALL is refused while the coordinator still thinks a
/// replica is down, so a refused read is retried (until [`CONVERGE`]); each
/// poll stops at its first refusal, so a slow refusal cannot stretch a poll
/// past the deadline.
fn read_all_at_all(c: &TestCluster, node: usize, want: &BTreeMap<String, Vec<Vec<u8>>>) {
    let mut pending: Vec<&String> = want.keys().rev().collect();
    let mut w = c.coordinator(node, Consistency::All);
    c.await_until(CONVERGE, &format!("every key read at ALL through node {node}"), || {
        while let Some(k) = pending.pop() {
            match get_once(&mut w, k) {
                Ok(Some(v)) => assert!(
                    want[k].contains(&v),
                    "GET {k} at ALL through node {node} read {}, which was never acknowledged for it ({:?})",
                    show(&v),
                    want[k].iter().map(|v| show(v)).collect::<Vec<_>>()
                ),
                Ok(None) => panic!("GET {k} at ALL through node {node}: not found, though acknowledged"),
                Err(e) => {
                    pending.push(k);
                    // The connection may be mid-frame after an I/O error: start afresh.
                    w = c.coordinator(node, Consistency::All);
                    return Err(format!(
                        "{} of {} keys not read yet; {k}: {e}",
                        pending.len(),
                        want.len()
                    ));
                }
            }
        }
        Ok(())
    });
}

#[test]
fn key_sets_cover_the_ring() {
    // The key sets below are fixed; `keys` asserts each covers the ring.
    for (prefix, range) in [
        ("k", 0..300),
        ("k", 300..600),
        ("hint", 0..300),
        ("repair", 0..200),
        ("both", 0..100),
        ("left", 0..100),
        ("right", 0..100),
        ("wiped", 0..300),
        ("ways-a", 0..100),
        ("ways-b", 0..100),
        ("range", 0..200),
    ] {
        assert_eq!(keys(prefix, range.clone()).len(), range.len());
    }
    assert_eq!(value("t", "k:00001").len(), VALUE_LEN);
    assert_ne!(value("left", "both:00001"), value("right", "both:00001"));
}

/// Writes 300 keys at QUORUM with every node up (through the SDK), kills
/// node 3, writes 300 more at QUORUM through the survivors, then reads all
/// 600 at QUORUM through the survivors (each key through a node other than
/// the one that wrote it). `batched`: MPUT and MGET instead of PUT and GET.
fn quorum_survives_a_killed_node(name: &str, n: usize, batched: bool) {
    let mut c = start(name, n, &[]);
    let before = pairs("before", &keys("k", 0..300));
    let sdk = c.client(&[1, 2], Consistency::Quorum);
    if batched {
        if let Err(e) = sdk.mput(&before, 0) {
            panic!("MPUT of 300 keys at QUORUM, all nodes up: {e}\n{}", c.log_tails());
        }
    } else {
        for (k, v) in &before {
            if let Err(e) = sdk.put(k, v) {
                panic!("PUT {k} at QUORUM, all nodes up: {e}\n{}", c.log_tails());
            }
        }
    }
    drop(sdk);

    c.kill9(VICTIM);
    let survivors: Vec<usize> = (1..=n).filter(|&i| i != VICTIM).collect();
    let after = pairs("after", &keys("k", 300..600));
    put_through(&c, &survivors, Consistency::Quorum, &after);

    let all: Vec<(String, Vec<u8>)> = before.into_iter().chain(after).collect();
    let ks: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    // Rotated by one, so (with GET) the second 300 keys are each read through
    // another survivor than the one that wrote them.
    let readers: Vec<usize> = survivors
        .iter()
        .cycle()
        .skip(1)
        .take(survivors.len())
        .copied()
        .collect();
    let got = if batched {
        let per = ks.len().div_ceil(readers.len());
        ks.chunks(per)
            .zip(&readers)
            .flat_map(|(chunk, &node)| mget_through(&c, node, Consistency::Quorum, chunk))
            .collect()
    } else {
        get_through(&c, &readers, Consistency::Quorum, &ks)
    };
    assert_read_back(
        &c,
        &format!("QUORUM reads with node {VICTIM} of {n} killed"),
        &all,
        &got,
    );
}

#[test]
fn quorum_survives_a_killed_node_3() {
    quorum_survives_a_killed_node("quorum-3", 3, false);
}

#[test]
fn quorum_survives_a_killed_node_5() {
    quorum_survives_a_killed_node("quorum-5", 5, true);
}

#[test]
fn hints_reach_a_returning_node() {
    let mut c = start("hints", 3, &[]);
    c.kill9(VICTIM);
    let written = pairs("while-down", &keys("hint", 0..300));
    put_through(&c, &[1, 2], Consistency::Quorum, &written);
    c.restart(VICTIM);
    // No client read from here on: only the coordinators' hints can bring
    // these values to node 3.
    c.await_until(
        CONVERGE,
        "node 3 holds every value written while it was down (hints replayed)",
        || held_by(&c, VICTIM, &written),
    );
}

/// A delete is kept as a tombstone on every replica for the grace period
/// (so a replica that missed it can still learn it), then purged everywhere;
/// keys that were not deleted stay.
#[test]
fn deleted_keys_are_purged_after_the_grace_period() {
    const GRACE_MS: u64 = 3000;
    let c = start("purge", 3, &["--cluster.tombstone_grace_ms", &GRACE_MS.to_string()]);
    let written = pairs("v", &keys("purge", 0..120));
    put_through(&c, &[1, 2, 3], Consistency::All, &written);
    let (doomed, kept) = written.split_at(60);
    let deleted_at = Instant::now();
    let mut w = c.coordinator(1, Consistency::All);
    let ops: Vec<Op<'_>> = doomed.iter().map(|(k, _)| Op::Delete { key: k.as_bytes() }).collect();
    for (reply, (k, _)) in w.call_many(&ops).unwrap().into_iter().zip(doomed) {
        assert!(matches!(reply, Reply::Ok | Reply::Int(_)), "DELETE {k}: {reply:?}");
    }
    let tombstones_on = |i: usize| {
        doomed
            .iter()
            .filter(|(k, _)| c.local_values(i, k.as_bytes()).is_some_and(|v| v.is_empty()))
            .count()
    };
    let counts: Vec<usize> = (1..=3).map(tombstones_on).collect();
    // Only meaningful if the check ran inside the grace period (it takes
    // milliseconds; a stalled machine could overrun 3 s).
    if deleted_at.elapsed() < Duration::from_millis(GRACE_MS) {
        assert_eq!(
            counts,
            vec![doomed.len(); 3],
            "every replica keeps the tombstones during the grace period"
        );
    }
    c.await_until(
        CONVERGE,
        "every replica purged the deleted keys after the grace period",
        || {
            for i in 1..=3 {
                let left = doomed
                    .iter()
                    .filter(|(k, _)| c.local_record(i, k.as_bytes()).is_some())
                    .count();
                if left > 0 {
                    return Err(format!("node {i} still holds {left} deleted records"));
                }
            }
            Ok(())
        },
    );
    assert!(deleted_at.elapsed() >= Duration::from_millis(GRACE_MS));
    for i in 1..=3 {
        held_by(&c, i, kept).unwrap();
    }
}

/// TTL and EXPIRE in cluster mode, native and RESP: TTL reads the value a
/// GET returns; EXPIRE rewrites it with the new expiry (superseding what it
/// read), refuses to collapse siblings, and a key past its expiry is gone.
#[test]
fn ttl_and_expire_work_across_the_cluster() {
    use std::io::{BufRead, BufReader, Write};
    let c = start("ttl", 3, &[]);
    // Every operation here is idempotent: one that timed out on a loaded
    // machine (CI starts several clusters at once) is sent again. (The
    // EXPIRE timeouts CI saw were a product bug, not load: EXPIRE gave its
    // write 1 ms; expire_without_a_client_deadline_has_the_node_default
    // guards that without retries.)
    let call = |w: &mut Wire, op: Op<'_>| {
        let retry = |r: &Reply| matches!(r, Reply::Error(code, _) if [ErrorCode::TIMEOUT, ErrorCode::UNAVAILABLE].contains(code));
        let mut r = w.call(op);
        for _ in 0..5 {
            if !retry(&r) {
                break;
            }
            r = w.call(op);
        }
        r
    };
    let mut w = c.coordinator(1, Consistency::Quorum);
    let int = |r: Reply| match r {
        Reply::Int(n) => n,
        other => panic!("expected an integer, got {other:?}"),
    };
    let put = |w: &mut Wire, k: &str, ttl_ms: u64| {
        let r = call(
            w,
            Op::Put {
                key: k.as_bytes(),
                value: b"v",
                ttl_ms,
                condition: Condition::Always,
            },
        );
        assert_eq!(r, Reply::Ok, "PUT {k}");
    };
    put(&mut w, "t:lives", 60_000);
    put(&mut w, "t:plain", 0);
    let t = int(call(&mut w, Op::Ttl { key: b"t:lives" }));
    assert!((1..=60_000).contains(&t), "TTL of a 60 s key: {t}");
    assert_eq!(int(call(&mut w, Op::Ttl { key: b"t:plain" })), -1);
    assert_eq!(int(call(&mut w, Op::Ttl { key: b"t:missing" })), -2);
    // EXPIRE through another coordinator; TTL read back through a third.
    let mut w2 = c.coordinator(2, Consistency::Quorum);
    assert_eq!(
        int(call(
            &mut w2,
            Op::Expire {
                key: b"t:plain",
                ttl_ms: 30_000
            }
        )),
        1
    );
    assert_eq!(
        int(call(
            &mut w2,
            Op::Expire {
                key: b"t:missing",
                ttl_ms: 30_000
            }
        )),
        0
    );
    let mut w3 = c.coordinator(3, Consistency::Quorum);
    let t = int(call(&mut w3, Op::Ttl { key: b"t:plain" }));
    assert!((1..=30_000).contains(&t), "TTL after EXPIRE 30 s: {t}");
    // EXPIRE 0 removes the expiry.
    assert_eq!(
        int(call(
            &mut w3,
            Op::Expire {
                key: b"t:lives",
                ttl_ms: 0
            }
        )),
        1
    );
    assert_eq!(int(call(&mut w, Op::Ttl { key: b"t:lives" })), -1);
    // A short expiry: the key goes.
    assert_eq!(
        int(call(
            &mut w,
            Op::Expire {
                key: b"t:plain",
                ttl_ms: 300
            }
        )),
        1
    );
    c.await_until(CONVERGE, "the key expired", || match get_once(&mut w, "t:plain")? {
        None => Ok(()),
        Some(v) => Err(format!("still reads {}", show(&v))),
    });
    assert_eq!(int(call(&mut w, Op::Ttl { key: b"t:plain" })), -2);
    // Two blind writes with an empty context through two coordinators are
    // concurrent: siblings. EXPIRE will not pick one of them.
    let empty = corekv_shard::versioning::Context::new().to_bytes();
    for (w, v) in [(&mut w, b"a"), (&mut w2, b"b")] {
        let r = call(
            w,
            Op::PutVersioned {
                key: b"t:sibs",
                value: v,
                ttl_ms: 0,
                context: &empty,
            },
        );
        assert_eq!(r, Reply::Ok);
    }
    match call(
        &mut w3,
        Op::Expire {
            key: b"t:sibs",
            ttl_ms: 1000,
        },
    ) {
        Reply::Error(_, m) => assert!(m.contains("siblings"), "{m}"),
        other => panic!("EXPIRE of a key with siblings answered {other:?}"),
    }
    // RESP, through node 2.
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
    assert_eq!(resp(&["SET", "r:k", "v", "EX", "100"]), "+OK");
    let ttl: i64 = resp(&["TTL", "r:k"])[1..].parse().unwrap();
    assert!((1..=100).contains(&ttl), "TTL after SET EX 100: {ttl}");
    assert_eq!(resp(&["EXPIRE", "r:k", "50"]), ":1");
    let pttl: i64 = resp(&["PTTL", "r:k"])[1..].parse().unwrap();
    assert!((1..=50_000).contains(&pttl), "PTTL after EXPIRE 50: {pttl}");
    assert_eq!(resp(&["EXPIRE", "r:none", "50"]), ":0");
    assert_eq!(resp(&["TTL", "r:none"]), ":-2");
    assert!(
        resp(&["EXPIRE", "r:k", "50", "NX"]).starts_with("-ERR"),
        "EXPIRE NX is refused in cluster mode"
    );
    // A time in the past deletes, as in Redis.
    assert_eq!(resp(&["EXPIRE", "r:k", "-1"]), ":1");
    assert_eq!(resp(&["GET", "r:k"]), "$-1");
}

/// EXPIRE is a read, then a write, within one request deadline. A request
/// without a client deadline (timeout 0: the node's
/// `cluster.request_timeout_ms`, as every RESP command and this harness's
/// `Wire` send) once gave the write the time left until "now + 0 ms", that
/// is 1 ms: the write timed out ("1 replica(s) answered, 2 required")
/// unless a remote replica synced and acked within a millisecond, which a
/// loaded CI machine rarely does. Links from the coordinator that hold each
/// packet 20 ms make every remote ack take at least 40 ms, so that failed
/// every time; the node's default deadline (2 s) covers them easily.
#[test]
fn expire_without_a_client_deadline_has_the_node_default() {
    use std::io::{BufRead, BufReader, Write};
    let c = start("expire-deadline", 3, &[]);
    let mut w = c.coordinator(1, Consistency::Quorum);
    for k in ["d:native", "d:resp"] {
        let r = w.call(Op::Put {
            key: k.as_bytes(),
            value: b"v",
            ttl_ms: 0,
            condition: Condition::Always,
        });
        assert_eq!(r, Reply::Ok, "PUT {k}");
    }
    let delay = Duration::from_millis(20);
    let _slow = c.degrade(&[1], &[2, 3], corekv_tests::netfault::LinkSpec { drop: 0.0, delay });
    let t0 = Instant::now();
    let r = w.call(Op::Expire {
        key: b"d:native",
        ttl_ms: 60_000,
    });
    assert_eq!(
        r,
        Reply::Int(1),
        "EXPIRE through node 1, its links delayed {delay:?}\n{}",
        c.log_tails()
    );
    // A QUORUM read and a QUORUM write, each waiting for a remote replica.
    assert!(
        t0.elapsed() >= 4 * delay,
        "EXPIRE took {:?}: the links were not delayed",
        t0.elapsed()
    );
    let n = c.node(1);
    let s = std::net::TcpStream::connect((n.listen.as_str(), n.resp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut lines = BufReader::new(s.try_clone().unwrap());
    (&s).write_all(b"*3\r\n$6\r\nEXPIRE\r\n$6\r\nd:resp\r\n$2\r\n60\r\n")
        .unwrap();
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), ":1", "RESP EXPIRE through node 1\n{}", c.log_tails());
    // Both expiries reached a quorum: a QUORUM read through another
    // coordinator sees them.
    let mut w2 = c.coordinator(2, Consistency::Quorum);
    for k in ["d:native", "d:resp"] {
        match w2.call(Op::Ttl { key: k.as_bytes() }) {
            Reply::Int(t) => assert!((1..=60_000).contains(&t), "TTL of {k} after EXPIRE 60 s: {t}"),
            other => panic!("TTL of {k}: {other:?}"),
        }
    }
}

#[test]
fn read_repair_fixes_a_stale_replica() {
    let mut c = start("read-repair", 3, &["--cluster.hinted_handoff", "false"]);
    c.kill9(VICTIM);
    let written = pairs("while-down", &keys("repair", 0..200));
    put_through(&c, &[1, 2], Consistency::Quorum, &written);
    c.restart(VICTIM);
    c.await_formed();
    // Without hints node 3 missed the writes; anything it holds already came
    // from somewhere else and would not show read repair.
    let held = count_held(&c, VICTIM, &written);
    assert!(
        held <= written.len() / 10,
        "node 3 already holds {held} of {} values before any read, with hinted handoff off",
        written.len()
    );
    let want: BTreeMap<String, Vec<Vec<u8>>> = written.iter().map(|(k, v)| (k.clone(), vec![v.clone()])).collect();
    read_all_at_all(&c, 1, &want);
    c.await_until(
        CONVERGE,
        "node 3 holds every value after the reads at ALL (read repair)",
        || held_by(&c, VICTIM, &written),
    );
}

#[test]
fn partition_keeps_one_writes_on_both_sides() {
    let c = start("partition", 3, &["--cluster.conflict_mode", "causal"]);
    let both = keys("both", 0..100);
    let mut left = pairs("left", &both);
    left.extend(pairs("left", &keys("left", 0..100)));
    let mut right = pairs("right", &both);
    right.extend(pairs("right", &keys("right", 0..100)));

    let mut cut = c.partition(&[1, 2], &[3]);
    // Each side coordinates its own writes: node 1 for {1, 2}, node 3 alone.
    // Every node is a replica of every key (3 nodes, RF 3), so a write at ONE
    // has its replica on the coordinator and must be acknowledged.
    let mut acked: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut refused = Vec::new();
    for (node, writes) in [(1, &left), (3, &right)] {
        for ((k, v), r) in writes
            .iter()
            .zip(try_put_through(&c, &[node], Consistency::One, writes))
        {
            match r {
                Ok(()) => acked.entry(k.clone()).or_default().push(v.clone()),
                Err(e) => refused.push(e),
            }
        }
    }
    cut.heal();
    assert!(
        refused.is_empty(),
        "{} writes at ONE refused during the partition, first: {:?}\n{}",
        refused.len(),
        &refused[..refused.len().min(5)],
        c.log_tails()
    );
    assert_eq!(acked.len(), 300);
    assert!(both.iter().all(|k| acked[k].len() == 2));

    // Reads at ALL merge the replicas' records and repair the stale ones.
    read_all_at_all(&c, 1, &acked);
    let want: Vec<(String, Vec<u8>)> = acked
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
        .collect();
    assert_eq!(want.len(), 400);
    c.await_until(
        CONVERGE,
        "every replica holds every acknowledged value (as the value or a sibling)",
        || (1..=3).try_for_each(|i| held_by(&c, i, &want)),
    );
}

/// Runs `corekv repair --node <node i>` and returns its report and how long
/// the command took; fails the test unless it exits 0.
fn run_repair(c: &TestCluster, i: usize) -> (String, Duration) {
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(["repair", "--node", &c.addr(i), "--timeout", "300"])
        .output()
        .expect("run corekv repair");
    let took = t0.elapsed();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "corekv repair --node {} exited with {}; stdout:\n{report}\nstderr:\n{}\n{}",
        c.addr(i),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        c.log_tails()
    );
    (report, took)
}

/// Waits until `corekv status` on node `i` shows no member DOWN: repair
/// skips replicas its node believes down.
fn await_none_down(c: &TestCluster, i: usize) {
    c.await_until(CONVERGE, &format!("node {i} sees every member up"), || {
        let out = Command::new(BIN)
            .args(["status", "--node", &c.addr(i), "--timeout", "10"])
            .output()
            .map_err(|e| format!("run corekv status: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !text.contains(" DOWN ") {
            Ok(())
        } else {
            Err(format!(
                "status ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
}

/// The number right after `label` on the report line that starts with
/// `line` (`"pulled:"`, then `""` for the first word).
fn report_number(report: &str, line: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            // `label` follows its number ("768 replicated"), or is empty for the first word.
            if label.is_empty() {
                words.first().copied()
            } else {
                words
                    .windows(2)
                    .find(|w| w[1].trim_end_matches(',') == label)
                    .map(|w| w[0])
            }
        })
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no `{line} .. {label}` number in the repair report:\n{report}"))
}

/// Ranges a report says were replicated, compared and differing; records
/// pulled and pushed.
fn repair_counts(report: &str) -> (u64, u64, u64, u64, u64) {
    (
        report_number(report, "ranges:", "replicated"),
        report_number(report, "ranges:", "compared"),
        report_number(report, "ranges:", "differing"),
        report_number(report, "pulled:", ""),
        report_number(report, "pushed:", ""),
    )
}

/// The node whose data `repair_restores_a_wiped_replica` wipes: a seed,
/// because a non-seed that lost its data bootstraps again when it restarts
/// (`cluster::elastic::must_bootstrap`: it streams its ranges in), which
/// would leave repair nothing to restore.
const WIPED: usize = 2;

#[test]
fn repair_restores_a_wiped_replica() {
    let mut c = start("repair-wiped", 3, &["--cluster.hinted_handoff", "false"]);
    let written = pairs("before-wipe", &keys("wiped", 0..300));
    put_through(&c, &[1, 2, 3], Consistency::All, &written);
    c.wipe_data(WIPED);
    c.restart(WIPED);
    // Repair compares the ranges of the ring the node sees: all of it.
    c.await_formed();
    await_none_down(&c, WIPED);
    let held = count_held(&c, WIPED, &written);
    assert!(
        held <= written.len() / 10,
        "node {WIPED} holds {held} of {} values right after its data was wiped, with hinted handoff off",
        written.len()
    );

    // No client read from here on: only repair can bring the values back.
    let (report, took) = run_repair(&c, WIPED);
    eprintln!("first repair, {took:?} for the command:\n{report}");
    let (ranges, compared, differing, pulled, pushed) = repair_counts(&report);
    // 3 nodes, RF 3: every node replicates every range, with 2 peers each.
    assert!(ranges > 0 && compared == 2 * ranges, "{report}");
    assert!(differing > 0, "{report}");
    assert!(
        pulled >= (written.len() - held) as u64,
        "pulled {pulled} records for {} missing values:\n{report}",
        written.len() - held
    );
    // Node 3 only lacked records: after the pull it equals its peers, and
    // nothing goes back.
    assert_eq!(pushed, 0, "{report}");
    // The report comes back when every merge is durable: no wait.
    if let Err(e) = held_by(&c, WIPED, &written) {
        panic!("after `corekv repair`: {e}\n{report}\n{}", c.log_tails());
    }

    // Equal replicas: the Merkle comparison finds nothing, nothing streams.
    for node in [WIPED, 3] {
        let (report, took) = run_repair(&c, node);
        eprintln!("repair of equal replicas through node {node}, {took:?}:\n{report}");
        let (ranges, compared, differing, pulled, pushed) = repair_counts(&report);
        assert!(ranges > 0 && compared == 2 * ranges, "{report}");
        assert_eq!((differing, pulled, pushed), (0, 0, 0), "{report}");
    }
}

#[test]
fn repair_exchanges_both_ways() {
    let mut c = start("repair-both", 3, &["--cluster.hinted_handoff", "false"]);
    // Node 3 misses `a` and node 2 misses `b`; node 1 has both.
    c.kill9(3);
    let a = pairs("a", &keys("ways-a", 0..100));
    put_through(&c, &[1, 2], Consistency::Quorum, &a);
    c.restart(3);
    c.await_formed();
    c.kill9(2);
    // With node 2 down, a write at QUORUM through node 1 needs node 3's ack:
    // wait until node 1 reaches the restarted node 3 again (its first
    // mutations there may time out while its connection is re-established).
    let probe = vec![("ways-probe".to_owned(), b"probe".to_vec())];
    c.await_until(CONVERGE, "a write at QUORUM through node 1 with node 2 down", || {
        try_put_through(&c, &[1], Consistency::Quorum, &probe).remove(0)
    });
    let b = pairs("b", &keys("ways-b", 0..100));
    put_through(&c, &[1, 3], Consistency::Quorum, &b);
    c.restart(2);
    c.await_formed();
    await_none_down(&c, 2);
    for (node, missed) in [(2, &b), (3, &a)] {
        let held = count_held(&c, node, missed);
        assert!(
            held <= missed.len() / 10,
            "node {node} already holds {held} of the values it missed"
        );
    }

    // Repair through node 2: it pulls `b` (from node 1 or 3) and, as node 3
    // lacks `a`, pushes `a` there.
    let (report, took) = run_repair(&c, 2);
    eprintln!("repair through node 2, {took:?}:\n{report}");
    let (_, _, differing, pulled, pushed) = repair_counts(&report);
    assert!(differing > 0, "{report}");
    assert!(pulled >= b.len() as u64 * 9 / 10, "pulled {pulled} records:\n{report}");
    assert!(pushed >= a.len() as u64 * 9 / 10, "pushed {pushed} records:\n{report}");
    let all: Vec<(String, Vec<u8>)> = a.iter().chain(&b).cloned().collect();
    for node in 1..=3 {
        if let Err(e) = held_by(&c, node, &all) {
            panic!("after `corekv repair` through node 2: {e}\n{report}\n{}", c.log_tails());
        }
    }
    let (report, _) = run_repair(&c, 2);
    let (_, _, differing, pulled, pushed) = repair_counts(&report);
    assert_eq!((differing, pulled, pushed), (0, 0, 0), "{report}");
}

/// Pages through node `i`'s node-to-node RANGE over `(start, end]`,
/// `limit` entries a page: every (token, key) in the order received.
fn range_keys(c: &TestCluster, i: usize, start: u64, end: u64, limit: u32) -> Vec<(u64, Vec<u8>)> {
    let n = c.node(i);
    let mut w = Wire::connect_to(&n.listen, n.client).expect("connect");
    let mut cursor: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let id = w.next_request_id();
        let mut frame = Vec::new();
        PeerRequest {
            from: "test",
            op: PeerOp::Range {
                start,
                end,
                cursor: &cursor,
                limit,
            },
        }
        .encode_frame(id, &mut frame)
        .unwrap();
        w.send_raw(&frame).unwrap();
        let (header, body) = w.recv_frame().unwrap().expect("an answer to RANGE");
        assert_eq!(header.request_id, id);
        assert!(!header.flags.is_error(), "RANGE refused: {body:?}");
        let PeerResponse::RangePage { entries, next_cursor } =
            PeerResponse::decode_body(PeerOpcode::Range, &body, &Limits::default()).unwrap()
        else {
            panic!("RANGE answered with another response")
        };
        assert!(
            entries.len() <= limit as usize,
            "{} entries for a limit of {limit}",
            entries.len()
        );
        for e in entries.iter() {
            corekv_shard::versioning::Record::decode(e.record).unwrap();
            got.push((e.token, e.key.to_vec()));
        }
        if next_cursor.is_empty() {
            return got;
        }
        cursor = next_cursor.to_vec();
    }
    panic!("RANGE over ({start:#x}, {end:#x}] did not end in 10000 pages");
}

#[test]
fn range_pages_through_wrapping_ranges() {
    let c = start("range-pages", 3, &[]);
    let written = pairs("range", &keys("range", 0..200));
    put_through(&c, &[1], Consistency::All, &written);
    let mid = 1u64 << 63;
    // The whole ring, a range wrapping past the largest token, one that does not.
    for (start, end) in [(mid, mid), (mid + (mid >> 1), mid >> 1), (mid >> 1, mid)] {
        let offset = |t: u64| t.wrapping_sub(start).wrapping_sub(1);
        let width = if start == end {
            u64::MAX
        } else {
            end.wrapping_sub(start) - 1
        };
        let mut want: Vec<(u64, Vec<u8>)> = written
            .iter()
            .map(|(k, _)| (token_of(k.as_bytes()), k.clone().into_bytes()))
            .filter(|(t, _)| offset(*t) <= width)
            .collect();
        // Ring order from `start`: by token offset, then key.
        want.sort_by(|a, b| (offset(a.0), &a.1).cmp(&(offset(b.0), &b.1)));
        assert!(!want.is_empty());
        for limit in [7, 1000] {
            let got = range_keys(&c, 1, start, end, limit);
            assert_eq!(
                got.len(),
                want.len(),
                "RANGE ({start:#x}, {end:#x}] limit {limit}: {} keys for {}",
                got.len(),
                want.len()
            );
            assert!(
                got == want,
                "RANGE ({start:#x}, {end:#x}] limit {limit}: keys differ or out of order"
            );
        }
    }
}
