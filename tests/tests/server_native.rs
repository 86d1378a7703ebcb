//! End to end through the binary protocol of a spawned node, with raw frames
//! so each test chooses the port (shared or shard-aware) and the bytes: every
//! operation, cross-core forwarding, and bad input answered with an error
//! while other clients keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::time::{Duration, Instant};

use corekv_engine::{Engine, Fs, Options};
use corekv_net::frame::{encode_frame, Flags};
use corekv_net::msg::{Condition, ErrorCode, KeyValue, List, Op};
use corekv_tests::node::{test_dir, TestNode};
use corekv_tests::wire::{Reply, Wire};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");

fn node(name: &str) -> TestNode {
    TestNode::start(BIN, &test_dir(env!("CARGO_TARGET_TMPDIR"), name), 2, &[])
}

fn put(w: &mut Wire, k: &[u8], v: &[u8]) {
    let r = w.call(Op::Put {
        key: k,
        value: v,
        ttl_ms: 0,
        condition: Condition::Always,
    });
    assert_eq!(r, Reply::Ok, "put {}", String::from_utf8_lossy(k));
}

fn get(w: &mut Wire, k: &[u8]) -> Option<Vec<u8>> {
    match w.call(Op::Get { key: k }) {
        Reply::Value(v, _, _) => Some(v),
        Reply::NotFound => None,
        other => panic!("get: {other:?}"),
    }
}

/// A key owned by `core`.
fn key_on(n: &TestNode, core: usize, prefix: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("{prefix}{i}").into_bytes())
        .find(|k| n.core_of(k) == core)
        .unwrap()
}

#[test]
fn every_operation_on_the_shared_port() {
    let n = node("native-ops");
    let mut w = Wire::connect(n.client).unwrap();
    assert_eq!(w.call(Op::Ping), Reply::Ok);
    put(&mut w, b"a", b"1");
    assert_eq!(get(&mut w, b"a"), Some(b"1".to_vec()));
    assert_eq!(w.call(Op::Exists { key: b"a" }), Reply::Int(1));
    assert_eq!(w.call(Op::Exists { key: b"zz" }), Reply::Int(0));
    assert_eq!(w.call(Op::Delete { key: b"a" }), Reply::Ok);
    assert_eq!(get(&mut w, b"a"), None);

    // NX / XX
    let nx = |w: &mut Wire, k: &[u8], c| {
        w.call(Op::Put {
            key: k,
            value: b"v",
            ttl_ms: 0,
            condition: c,
        })
    };
    assert_eq!(
        nx(&mut w, b"c", Condition::IfPresent).clone(),
        Reply::Error(ErrorCode::CONDITION_FAILED, "condition not met".into())
    );
    assert_eq!(nx(&mut w, b"c", Condition::IfAbsent), Reply::Ok);
    assert!(matches!(
        nx(&mut w, b"c", Condition::IfAbsent),
        Reply::Error(ErrorCode::CONDITION_FAILED, _)
    ));
    assert_eq!(nx(&mut w, b"c", Condition::IfPresent), Reply::Ok);

    // INCR
    assert_eq!(w.call(Op::Incr { key: b"n", delta: 5 }), Reply::Int(5));
    assert_eq!(w.call(Op::Incr { key: b"n", delta: -7 }), Reply::Int(-2));
    assert!(matches!(
        w.call(Op::Incr { key: b"c", delta: 1 }),
        Reply::Error(ErrorCode::NOT_AN_INTEGER, _)
    ));

    // CAS on the version a read returned.
    put(&mut w, b"cas", b"v1");
    let Reply::Value(_, meta, _) = w.call(Op::Get { key: b"cas" }) else {
        panic!()
    };
    assert!(!meta.is_empty());
    let cas = |w: &mut Wire, expected: &[u8], value: &[u8]| {
        w.call(Op::Cas {
            key: b"cas",
            expected,
            value,
            ttl_ms: 0,
        })
    };
    assert_eq!(cas(&mut w, &meta, b"v2"), Reply::Ok);
    assert!(
        matches!(cas(&mut w, &meta, b"v3"), Reply::Error(ErrorCode::CONDITION_FAILED, _)),
        "stale version"
    );
    assert_eq!(get(&mut w, b"cas"), Some(b"v2".to_vec()));
    assert!(
        matches!(cas(&mut w, b"", b"v4"), Reply::Error(ErrorCode::CONDITION_FAILED, _)),
        "exists"
    );
    assert_eq!(
        w.call(Op::Cas {
            key: b"fresh",
            expected: b"",
            value: b"new",
            ttl_ms: 0
        }),
        Reply::Ok,
        "empty expected = create"
    );

    // TTL / EXPIRE
    assert_eq!(w.call(Op::Ttl { key: b"cas" }), Reply::Int(-1));
    assert_eq!(w.call(Op::Ttl { key: b"nope" }), Reply::Int(-2));
    assert_eq!(
        w.call(Op::Expire {
            key: b"cas",
            ttl_ms: 60_000
        }),
        Reply::Int(1)
    );
    let Reply::Int(t) = w.call(Op::Ttl { key: b"cas" }) else {
        panic!()
    };
    assert!((59_000..=60_000).contains(&t), "{t}");
    assert_eq!(w.call(Op::Expire { key: b"cas", ttl_ms: 0 }), Reply::Int(1), "persist");
    assert_eq!(w.call(Op::Ttl { key: b"cas" }), Reply::Int(-1));
    assert_eq!(
        w.call(Op::Expire {
            key: b"nope",
            ttl_ms: 5
        }),
        Reply::Int(0)
    );
    let r = w.call(Op::Put {
        key: b"short",
        value: b"x",
        ttl_ms: 200,
        condition: Condition::Always,
    });
    assert_eq!(r, Reply::Ok);
    let t0 = Instant::now();
    while get(&mut w, b"short").is_some() {
        assert!(t0.elapsed() < Duration::from_secs(10), "did not expire");
        std::thread::sleep(Duration::from_millis(20));
    }

    // MPUT / MGET across both cores.
    let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
    assert!(keys.iter().any(|k| n.core_of(k) == 0) && keys.iter().any(|k| n.core_of(k) == 1));
    let vals: Vec<Vec<u8>> = (0..50).map(|i| format!("val{i}").into_bytes()).collect();
    let kvs: Vec<KeyValue<'_>> = keys
        .iter()
        .zip(&vals)
        .map(|(k, v)| KeyValue { key: k, value: v })
        .collect();
    assert_eq!(
        w.call(Op::MPut {
            entries: List::Slice(&kvs),
            ttl_ms: 0
        }),
        Reply::Ok
    );
    let mut ask: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    ask.push(b"missing");
    let Reply::Values(got) = w.call(Op::MGet {
        keys: List::Slice(&ask),
    }) else {
        panic!()
    };
    assert_eq!(got.len(), 51);
    for (i, v) in got[..50].iter().enumerate() {
        assert_eq!(v.as_deref(), Some(vals[i].as_slice()));
    }
    assert_eq!(got[50], None);

    // LIST by prefix, paged with the cursor; SCAN over all tokens.
    let mut seen = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let Reply::Page(entries, next) = w.call(Op::List {
            prefix: b"m",
            cursor: &cursor,
            limit: 7,
        }) else {
            panic!()
        };
        assert!(entries.len() <= 7);
        seen.extend(entries.into_iter().map(|(k, _)| k));
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    seen.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(seen, want, "every m* key exactly once");

    let mut all = 0;
    let mut cursor = Vec::new();
    loop {
        let Reply::Page(entries, next) = w.call(Op::Scan {
            start: 0,
            end: 0,
            cursor: &cursor,
            limit: 16,
        }) else {
            panic!()
        };
        all += entries.len();
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    // m0..m49, c, n, cas, fresh
    assert_eq!(all, 54);

    // A hash-tagged prefix is answered by one core, in key order.
    for i in 0..20 {
        put(&mut w, format!("{{u1}}:{i:02}").as_bytes(), b"x");
    }
    let Reply::Page(entries, next) = w.call(Op::List {
        prefix: b"{u1}:",
        cursor: b"",
        limit: 100,
    }) else {
        panic!()
    };
    assert!(next.is_empty());
    let ks: Vec<String> = entries
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("{{u1}}:{i:02}")).collect();
    assert_eq!(ks, want);

    // RING: one node, 256 tokens, two cores, the shard-aware base port.
    let Reply::Ring(epoch, nodes) = w.call(Op::Ring) else {
        panic!()
    };
    assert!(epoch >= 1);
    assert_eq!(nodes, vec![(format!("127.0.0.1:{}", n.client), 2, n.shard_base, 256)]);
}

#[test]
fn keys_of_another_core_are_forwarded_on_every_port() {
    let mut n = node("native-forward");
    let k0 = key_on(&n, 0, "zero");
    let k1 = key_on(&n, 1, "one");
    // Write each key through the other core's shard-aware port, and through the shared port.
    let mut p0 = Wire::connect(n.shard_base).unwrap();
    let mut p1 = Wire::connect(n.shard_base + 1).unwrap();
    let mut shared = Wire::connect(n.client).unwrap();
    put(&mut p0, &k1, b"written-via-core-0");
    put(&mut p1, &k0, b"written-via-core-1");
    put(&mut shared, b"via-shared", b"s");
    for w in [&mut p0, &mut p1, &mut shared] {
        assert_eq!(get(w, &k1), Some(b"written-via-core-0".to_vec()));
        assert_eq!(get(w, &k0), Some(b"written-via-core-1".to_vec()));
        assert_eq!(get(w, b"via-shared"), Some(b"s".to_vec()));
    }
    assert_eq!(
        p0.call(Op::Incr { key: &k1, delta: 1 }),
        Reply::Error(
            ErrorCode::NOT_AN_INTEGER,
            "value is not an integer or out of range".into()
        )
    );

    // Each key is stored only by its owning core's engine.
    let status = n.sigterm();
    assert!(status.success());
    let dir = n.dir.clone();
    let found = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let mut out = Vec::new();
            for core in 0..2 {
                let e = Engine::open(Options::new(Fs::real(), dir.join(format!("core-{core}"))))
                    .await
                    .unwrap();
                let t = |k: &[u8]| corekv_shard::token_of(k);
                out.push((
                    e.get(t(&k0), &k0).await.unwrap().is_some(),
                    e.get(t(&k1), &k1).await.unwrap().is_some(),
                ));
                e.close().await.unwrap();
            }
            out
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        found,
        vec![(true, false), (false, true)],
        "(core holds k0, core holds k1) per core"
    );
}

fn frame(opcode: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    encode_frame(&mut b, opcode, Flags::default(), id, |o| o.extend_from_slice(body)).unwrap();
    b
}

/// A second client keeps working while the first misbehaves.
fn other_client_works(n: &TestNode) {
    let mut w = Wire::connect(n.client).unwrap();
    put(&mut w, b"bystander", b"fine");
    assert_eq!(get(&mut w, b"bystander"), Some(b"fine".to_vec()));
}

#[test]
fn bad_input_is_answered_and_isolated() {
    let n = node("native-bad");
    let big_key = vec![b'k'; 1025];
    let big_value = vec![b'v'; (1 << 20) + 1];

    // Oversized key and value: TOO_LARGE, and the connection stays usable.
    let mut w = Wire::connect(n.client).unwrap();
    let r = w.call(Op::Put {
        key: &big_key,
        value: b"x",
        ttl_ms: 0,
        condition: Condition::Always,
    });
    assert!(matches!(r, Reply::Error(ErrorCode::TOO_LARGE, _)), "{r:?}");
    let r = w.call(Op::Put {
        key: b"k",
        value: &big_value,
        ttl_ms: 0,
        condition: Condition::Always,
    });
    assert!(matches!(r, Reply::Error(ErrorCode::TOO_LARGE, _)), "{r:?}");
    let r = w.call(Op::Get { key: b"" });
    assert!(matches!(r, Reply::Error(ErrorCode::MALFORMED, _)), "empty key: {r:?}");
    assert_eq!(get(&mut w, b"k"), None, "nothing was written");
    other_client_works(&n);

    // Unknown opcode: UNKNOWN_OPCODE for that request id, then business as usual.
    w.send_raw(&frame(0x3F, 77, &[])).unwrap();
    let (id, r) = w.recv().unwrap().unwrap();
    assert_eq!(id, 77);
    assert!(matches!(r, Reply::Error(ErrorCode::UNKNOWN_OPCODE, _)), "{r:?}");
    // A body that does not decode: MALFORMED, connection stays.
    w.send_raw(&frame(0x01, 78, &[1, 0, 0xFF])).unwrap();
    let (id, r) = w.recv().unwrap().unwrap();
    assert_eq!(id, 78);
    assert!(matches!(r, Reply::Error(ErrorCode::MALFORMED, _)), "{r:?}");
    put(&mut w, b"still", b"here");

    // Oversized frame: answered with TOO_LARGE, then the connection closes
    // (the stream's framing cannot be trusted past it).
    let mut w2 = Wire::connect(n.client).unwrap();
    let mut hdr = frame(0x02, 5, &[]);
    hdr[14..18].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let crc = crc32c::crc32c(&hdr[..18]);
    hdr[18..22].copy_from_slice(&crc.to_le_bytes());
    w2.send_raw(&hdr).unwrap();
    let (_, r) = w2.recv().unwrap().unwrap();
    assert!(matches!(r, Reply::Error(ErrorCode::TOO_LARGE, _)), "{r:?}");
    assert!(w2.recv().unwrap().is_none(), "closed after a fatal frame error");
    other_client_works(&n);

    // Garbage (bad magic): BAD_FRAME, then closed.
    let mut w3 = Wire::connect(n.client).unwrap();
    w3.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (_, r) = w3.recv().unwrap().unwrap();
    assert!(matches!(r, Reply::Error(ErrorCode::BAD_FRAME, _)), "{r:?}");
    assert!(w3.recv().unwrap().is_none());

    // Half a frame, then the client stops sending: an error naming the cut, then closed.
    let mut w4 = Wire::connect(n.client).unwrap();
    let mut full = Vec::new();
    corekv_net::msg::Request {
        consistency: corekv_net::msg::Consistency::One,
        timeout_ms: 0,
        sloppy_quorum: false,
        op: Op::Put {
            key: b"half",
            value: &[7u8; 300],
            ttl_ms: 0,
            condition: Condition::Always,
        },
    }
    .encode_frame(9, &mut full)
    .unwrap();
    w4.send_raw(&full[..full.len() / 2]).unwrap();
    other_client_works(&n); // meanwhile, others are served
    w4.shutdown_write().unwrap();
    let (_, r) = w4.recv().unwrap().unwrap();
    match r {
        Reply::Error(ErrorCode::MALFORMED, m) => assert!(m.contains("inside a frame"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(w4.recv().unwrap().is_none());
    assert_eq!(get(&mut w, b"half"), None, "a half-sent write is not applied");

    // RESP port: an oversized bulk length is a protocol error for that connection only.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", n.resp)).unwrap();
    std::io::Write::write_all(&mut s, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$99999999999\r\n").unwrap();
    let mut reply = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    // RESP: a value over the limit is refused by the limit, not stored.
    let mut c = redis::Client::open(n.redis_url()).unwrap().get_connection().unwrap();
    let r: redis::RedisResult<()> = redis::cmd("SET").arg("big").arg(&big_value).query(&mut c);
    assert!(r.is_err(), "oversized value refused");
    other_client_works(&n);
}

#[test]
fn connections_over_the_per_core_limit_are_refused_with_an_error() {
    let n = TestNode::start(
        BIN,
        &test_dir(env!("CARGO_TARGET_TMPDIR"), "native-connlimit"),
        1,
        &["--limits.max_connections_per_core", "2"],
    );
    let mut a = Wire::connect(n.client).unwrap();
    let mut b = Wire::connect(n.client).unwrap();
    put(&mut a, b"x", b"1");
    put(&mut b, b"y", b"2");
    let mut c = Wire::connect(n.client).unwrap();
    let (_, r) = c.recv().unwrap().unwrap();
    assert!(
        matches!(r, Reply::Error(ErrorCode::OVERLOADED, ref m) if m.contains("max number of clients")),
        "{r:?}"
    );
    assert!(c.recv().unwrap().is_none(), "closed after the refusal");
    // The two admitted connections keep working; once one closes, a new one is admitted.
    assert_eq!(get(&mut a, b"y"), Some(b"2".to_vec()));
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = Wire::connect(n.client).unwrap();
        let id = d.send(Op::Ping).unwrap();
        match d.recv().unwrap() {
            Some((rid, Reply::Ok)) if rid == id => break,
            // The server may not have seen the close yet: try again.
            _ => assert!(Instant::now() < deadline, "a freed slot was never reused"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pipeline_longer_than_the_in_flight_limit_is_served_in_full() {
    let n = TestNode::start(
        BIN,
        &test_dir(env!("CARGO_TARGET_TMPDIR"), "native-inflight"),
        2,
        &["--limits.max_inflight_per_connection", "4"],
    );
    let mut w = Wire::connect(n.client).unwrap();
    // 300 requests written before reading any answer: the node reads 4 at a
    // time (the rest wait in the socket) and still answers every one.
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..300 {
        let k = format!("pipe{i}");
        ids.insert(
            w.send(Op::Put {
                key: k.as_bytes(),
                value: b"v",
                ttl_ms: 0,
                condition: Condition::Always,
            })
            .unwrap(),
        );
    }
    while !ids.is_empty() {
        let (id, r) = w.recv().unwrap().expect("an answer for every request");
        assert_eq!(r, Reply::Ok);
        assert!(ids.remove(&id), "unexpected or repeated id {id}");
    }
    assert_eq!(get(&mut w, b"pipe299"), Some(b"v".to_vec()));
}
