//! End to end through the RESP port of a spawned node, driven by the `redis`
//! crate (a client nobody here wrote): every supported command, TTL expiry,
//! SIGKILL and restart, and errors that keep the connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use corekv_tests::node::{test_dir, TestNode};
use redis::{cmd, Connection, RedisResult, Value};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");

fn node(name: &str) -> TestNode {
    TestNode::start(BIN, &test_dir(env!("CARGO_TARGET_TMPDIR"), name), 2, &[])
}

fn conn(n: &TestNode) -> Connection {
    let c = redis::Client::open(n.redis_url()).unwrap();
    c.get_connection_with_timeout(Duration::from_secs(10)).unwrap()
}

fn err_text<T: std::fmt::Debug>(r: RedisResult<T>) -> String {
    let e = r.expect_err("an error reply");
    format!("{e}")
}

#[test]
fn strings_counters_and_conditions() {
    let n = node("resp-strings");
    let mut c = conn(&n);
    let pong: String = cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = cmd("ECHO").arg("hi there").query(&mut c).unwrap();
    assert_eq!(echo, "hi there");

    let _: () = cmd("SET").arg("k1").arg("v1").query(&mut c).unwrap();
    let v: Option<String> = cmd("GET").arg("k1").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("v1"));
    let v: Option<String> = cmd("GET").arg("missing").query(&mut c).unwrap();
    assert_eq!(v, None);

    // NX / XX
    let r: Option<String> = cmd("SET").arg("k1").arg("other").arg("NX").query(&mut c).unwrap();
    assert_eq!(r, None, "NX on an existing key is refused with nil");
    let r: Option<String> = cmd("SET").arg("k2").arg("x").arg("XX").query(&mut c).unwrap();
    assert_eq!(r, None, "XX on a missing key is refused with nil");
    let r: Option<String> = cmd("SET").arg("k2").arg("new").arg("NX").query(&mut c).unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = cmd("SET").arg("k2").arg("newer").arg("XX").query(&mut c).unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let v: String = cmd("GET").arg("k2").query(&mut c).unwrap();
    assert_eq!(v, "newer");

    // Binary-safe values, 1 KiB and 1 MiB.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 256) as u8).collect();
    let _: () = cmd("SET").arg(b"bin\x00key").arg(&big).query(&mut c).unwrap();
    let got: Vec<u8> = cmd("GET").arg(b"bin\x00key").query(&mut c).unwrap();
    assert_eq!(got, big);

    // Counters.
    let x: i64 = cmd("INCR").arg("ctr").query(&mut c).unwrap();
    assert_eq!(x, 1);
    let x: i64 = cmd("INCRBY").arg("ctr").arg(41).query(&mut c).unwrap();
    assert_eq!(x, 42);
    let x: i64 = cmd("DECR").arg("ctr").query(&mut c).unwrap();
    assert_eq!(x, 41);
    let e = err_text(cmd("INCR").arg("k1").query::<i64>(&mut c));
    assert!(e.contains("not an integer"), "{e}");
    let _: () = cmd("SET").arg("max").arg(i64::MAX.to_string()).query(&mut c).unwrap();
    let e = err_text(cmd("INCR").arg("max").query::<i64>(&mut c));
    assert!(e.contains("overflow"), "{e}");

    // Multi-key commands spanning both cores.
    let keys: Vec<String> = (0..40).map(|i| format!("mk{i}")).collect();
    assert!(keys.iter().any(|k| n.core_of(k.as_bytes()) == 0) && keys.iter().any(|k| n.core_of(k.as_bytes()) == 1));
    let mut mset = cmd("MSET");
    for (i, k) in keys.iter().enumerate() {
        mset.arg(k).arg(format!("val{i}"));
    }
    let _: () = mset.query(&mut c).unwrap();
    let mut mget = cmd("MGET");
    for k in &keys {
        mget.arg(k);
    }
    mget.arg("nope");
    let vals: Vec<Option<String>> = mget.query(&mut c).unwrap();
    assert_eq!(vals.len(), 41);
    for (i, v) in vals[..40].iter().enumerate() {
        assert_eq!(v.as_deref(), Some(format!("val{i}").as_str()));
    }
    assert_eq!(vals[40], None);
    let e: i64 = cmd("EXISTS")
        .arg(&keys[0])
        .arg(&keys[1])
        .arg(&keys[0])
        .arg("nope")
        .query(&mut c)
        .unwrap();
    assert_eq!(e, 3, "EXISTS counts repeated keys, as Redis does");
    let d: i64 = cmd("DEL")
        .arg(&keys[..10])
        .arg("nope")
        .arg(&keys[0])
        .query(&mut c)
        .unwrap();
    assert_eq!(d, 10);
    let e: i64 = cmd("EXISTS").arg(&keys[..10]).query(&mut c).unwrap();
    assert_eq!(e, 0);

    // Pipelined: a read after a write on the same connection sees it.
    let mut p = redis::pipe();
    for i in 0..200 {
        p.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        p.cmd("GET").arg(format!("p{i}"));
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(got, (0..200).collect::<Vec<i64>>());
}

#[test]
fn ttl_expire_and_expiry() {
    let n = node("resp-ttl");
    let mut c = conn(&n);
    let ttl: i64 = cmd("TTL").arg("none").query(&mut c).unwrap();
    assert_eq!(ttl, -2);
    let _: () = cmd("SET").arg("forever").arg("v").query(&mut c).unwrap();
    let ttl: i64 = cmd("TTL").arg("forever").query(&mut c).unwrap();
    assert_eq!(ttl, -1);

    let _: () = cmd("SET").arg("ex").arg("v").arg("EX").arg(100).query(&mut c).unwrap();
    let ttl: i64 = cmd("TTL").arg("ex").query(&mut c).unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    let pttl: i64 = cmd("PTTL").arg("ex").query(&mut c).unwrap();
    assert!((98_000..=100_000).contains(&pttl), "{pttl}");

    let set: i64 = cmd("EXPIRE").arg("forever").arg(50).query(&mut c).unwrap();
    assert_eq!(set, 1);
    let ttl: i64 = cmd("TTL").arg("forever").query(&mut c).unwrap();
    assert!((49..=50).contains(&ttl), "{ttl}");
    let set: i64 = cmd("EXPIRE").arg("forever").arg(10).arg("GT").query(&mut c).unwrap();
    assert_eq!(set, 0, "GT refuses a shorter TTL");
    let set: i64 = cmd("PEXPIRE")
        .arg("forever")
        .arg(200_000)
        .arg("GT")
        .query(&mut c)
        .unwrap();
    assert_eq!(set, 1);
    let set: i64 = cmd("EXPIRE").arg("missing").arg(10).query(&mut c).unwrap();
    assert_eq!(set, 0);
    let set: i64 = cmd("EXPIRE").arg("forever").arg(-1).query(&mut c).unwrap();
    assert_eq!(set, 1, "a past expiry deletes the key");
    let v: Option<String> = cmd("GET").arg("forever").query(&mut c).unwrap();
    assert_eq!(v, None);

    // Expiry happens: PX 300 is visible, then gone. Poll with a deadline
    // rather than sleeping a fixed time.
    let _: () = cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(300)
        .query(&mut c)
        .unwrap();
    let t0 = Instant::now();
    let v: Option<String> = cmd("GET").arg("short").query(&mut c).unwrap();
    assert!(v.is_some() || t0.elapsed() >= Duration::from_millis(300));
    let _: i64 = cmd("INCR").arg("ctr").query(&mut c).unwrap();
    let _: i64 = cmd("PEXPIRE").arg("ctr").arg(300).query(&mut c).unwrap();
    loop {
        let a: Option<String> = cmd("GET").arg("short").query(&mut c).unwrap();
        let b: i64 = cmd("EXISTS").arg("ctr").query(&mut c).unwrap();
        if a.is_none() && b == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "keys did not expire");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "expired early: {:?}",
        t0.elapsed()
    );
    let ttl: i64 = cmd("TTL").arg("short").query(&mut c).unwrap();
    assert_eq!(ttl, -2);
}

#[test]
fn scan_keys_info_command_and_connection_commands() {
    let n = node("resp-scan");
    let mut c = conn(&n);
    let mut mset = cmd("MSET");
    for i in 0..500 {
        mset.arg(format!("user:{i}")).arg(i);
    }
    for i in 0..300 {
        // One hash tag: 300 keys sharing one token.
        mset.arg(format!("{{tag}}:{i}")).arg(i);
    }
    let _: () = mset.query(&mut c).unwrap();
    let _: i64 = cmd("DEL").arg("user:7").query(&mut c).unwrap();

    // Full scan with a small COUNT: every key exactly once (no writes during it).
    let mut seen = std::collections::BTreeMap::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = cmd("SCAN").arg(cursor).arg("COUNT").arg(7).query(&mut c).unwrap();
        for k in keys {
            *seen.entry(k).or_insert(0) += 1;
        }
        calls += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(calls < 10_000);
    }
    assert_eq!(seen.len(), 799, "every live key");
    assert!(
        seen.values().all(|&n| n == 1),
        "no duplicates without concurrent writes"
    );
    assert!(!seen.contains_key("user:7"));

    // MATCH through the crate's iterator.
    let mut users: Vec<String> = redis::Commands::scan_match::<_, String>(&mut c, "user:1*")
        .unwrap()
        .collect();
    users.sort();
    let mut want: Vec<String> = (0..500)
        .map(|i| format!("user:{i}"))
        .filter(|k| k.starts_with("user:1"))
        .collect();
    want.sort();
    assert_eq!(users, want);

    let e = err_text(cmd("KEYS").arg("*").query::<Vec<String>>(&mut c));
    assert!(e.contains("SCAN"), "KEYS points to SCAN: {e}");

    let info: String = cmd("INFO").query(&mut c).unwrap();
    assert!(
        info.contains("redis_version:") && info.contains("total_commands_processed:"),
        "{info}"
    );
    let count: i64 = cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count >= 20);
    let all: Value = cmd("COMMAND").query(&mut c).unwrap();
    match all {
        Value::Array(v) => assert_eq!(v.len() as i64, count),
        other => panic!("COMMAND: {other:?}"),
    }
    let _: () = cmd("CLIENT").arg("SETNAME").arg("tester").query(&mut c).unwrap();
    let name: String = cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "tester");
    let _: () = cmd("SELECT").arg(0).query(&mut c).unwrap();
    let e = err_text(cmd("SELECT").arg(1).query::<()>(&mut c));
    assert!(e.contains("out of range"), "{e}");

    // Unknown commands and arity errors answer and keep the connection.
    let e = err_text(cmd("FLUSHALL").query::<()>(&mut c));
    assert!(e.contains("unknown command"), "{e}");
    let e = err_text(cmd("GET").query::<()>(&mut c));
    assert!(e.contains("wrong number of arguments"), "{e}");
    let v: String = cmd("GET").arg("user:1").query(&mut c).unwrap();
    assert_eq!(v, "1");

    let ok: String = cmd("QUIT").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
}

#[test]
fn resp3_hello() {
    let n = node("resp-hello");
    let url = format!("{}?protocol=resp3", n.redis_url());
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = cmd("SET").arg("a").arg("1").query(&mut c).unwrap();
    let v: String = cmd("GET").arg("a").query(&mut c).unwrap();
    assert_eq!(v, "1");
    let hello: Value = cmd("HELLO").arg(3).query(&mut c).unwrap();
    assert!(matches!(hello, Value::Map(_)), "HELLO 3 answers a RESP3 map: {hello:?}");
    let missing: Value = cmd("GET").arg("nope").query(&mut c).unwrap();
    assert_eq!(missing, Value::Nil);
}

#[test]
fn sigkill_and_restart_keep_acknowledged_writes() {
    let mut n = node("resp-restart");
    let mut c = conn(&n);
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET").arg(format!("r{i}")).arg(format!("value-{i}")).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let _: i64 = cmd("INCRBY").arg("counter").arg(7).query(&mut c).unwrap();
    drop(c);
    n.restart(); // SIGKILL, then start on the same data
    let mut c = conn(&n);
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("GET").arg(format!("r{i}"));
    }
    let got: Vec<Option<String>> = p.query(&mut c).unwrap();
    for (i, v) in got.iter().enumerate() {
        assert_eq!(
            v.as_deref(),
            Some(format!("value-{i}").as_str()),
            "key r{i} lost after SIGKILL"
        );
    }
    let x: i64 = cmd("INCR").arg("counter").query(&mut c).unwrap();
    assert_eq!(x, 8);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut n = node("resp-sigterm");
    let mut c = conn(&n);
    let _: () = cmd("SET").arg("before").arg("stop").query(&mut c).unwrap();
    let status = n.sigterm();
    assert!(status.success(), "exit status {status:?}; log:\n{}", n.log_text());
    assert!(n.log_text().contains("stopped cleanly"));
    n.restart();
    let mut c = conn(&n);
    let v: String = cmd("GET").arg("before").query(&mut c).unwrap();
    assert_eq!(v, "stop");
}
