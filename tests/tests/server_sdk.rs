//! End to end through the client SDK (async from tokio, and blocking) and the
//! `corekv` command's client subcommands, against a spawned node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use corekv_net::client::{blocking, Client, ClientOptions, PutOptions, Ttl};
use corekv_net::msg::Condition;
use corekv_tests::node::{test_dir, TestNode};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");

fn node(name: &str) -> TestNode {
    TestNode::start(BIN, &test_dir(env!("CARGO_TARGET_TMPDIR"), name), 2, &[])
}

#[test]
fn async_sdk_every_operation_and_token_aware_routing() {
    let n = node("sdk-async");
    let addr = format!("127.0.0.1:{}", n.client);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Client::connect(&[addr.as_str()], ClientOptions::default())
            .await
            .unwrap();
        // The SDK routes every key to the core the node stores it on.
        let routing = c.routing();
        for i in 0..500 {
            let k = format!("route{i}");
            let o = routing.owner(k.as_bytes());
            assert_eq!(o.core as usize, n.core_of(k.as_bytes()), "{k}");
            assert_eq!(
                routing.endpoint(k.as_bytes()),
                format!("127.0.0.1:{}", n.shard_base + o.core)
            );
        }
        c.ping().await.unwrap();
        c.put("a", "1").await.unwrap();
        assert_eq!(c.get("a").await.unwrap().unwrap().value, b"1");
        assert!(c.exists("a").await.unwrap());
        c.delete("a").await.unwrap();
        assert!(c.get("a").await.unwrap().is_none());
        assert!(!c.exists("a").await.unwrap());

        let nx = PutOptions {
            ttl_ms: 0,
            condition: Condition::IfAbsent,
        };
        let xx = PutOptions {
            ttl_ms: 0,
            condition: Condition::IfPresent,
        };
        assert!(!c.put_with("c", "v", xx).await.unwrap());
        assert!(c.put_with("c", "v", nx).await.unwrap());
        assert!(!c.put_with("c", "w", nx).await.unwrap());
        assert!(c.put_with("c", "w", xx).await.unwrap());

        assert_eq!(c.incr("n", 10).await.unwrap(), 10);
        assert_eq!(c.incr("n", -3).await.unwrap(), 7);
        assert!(c.incr("c", 1).await.is_err());

        let v = c.get("c").await.unwrap().unwrap();
        assert!(c.cas("c", &v.meta, "x", 0).await.unwrap());
        assert!(!c.cas("c", &v.meta, "y", 0).await.unwrap(), "stale version refused");
        assert_eq!(c.get("c").await.unwrap().unwrap().value, b"x");

        // Compare-and-set on the value, and the serial read.
        let r = c.cas_value("c", Some(b"nope"), Some(b"z")).await.unwrap();
        assert_eq!((r.applied, r.value.as_deref()), (false, Some(&b"x"[..])));
        let r = c.cas_value("c", Some(b"x"), Some(b"z")).await.unwrap();
        assert_eq!((r.applied, r.value.as_deref()), (true, Some(&b"z"[..])));
        assert_eq!(c.get_serial("c").await.unwrap().as_deref(), Some(&b"z"[..]));
        assert!(
            c.cas_value("c", Some(b"z"), None).await.unwrap().applied,
            "delete by CAS"
        );
        assert_eq!(c.get("c").await.unwrap(), None);
        assert!(!c.cas_value("c", Some(b"z"), Some(b"w")).await.unwrap().applied);
        assert!(
            c.cas_value("c", None, Some(b"x")).await.unwrap().applied,
            "create by CAS"
        );

        assert_eq!(c.ttl("c").await.unwrap(), Ttl::NoExpiry);
        assert_eq!(c.ttl("none").await.unwrap(), Ttl::Missing);
        assert!(c.expire("c", 30_000).await.unwrap());
        match c.ttl("c").await.unwrap() {
            Ttl::Millis(ms) => assert!((29_000..=30_000).contains(&ms), "{ms}"),
            other => panic!("{other:?}"),
        }
        c.put_with(
            "short",
            "v",
            PutOptions {
                ttl_ms: 150,
                condition: Condition::Always,
            },
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        while c.get("short").await.unwrap().is_some() {
            assert!(t0.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let pairs: Vec<(String, String)> = (0..300).map(|i| (format!("bulk:{i:03}"), format!("v{i}"))).collect();
        c.mput(&pairs, 0).await.unwrap();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).chain(["bulk:none"]).collect();
        let got = c.mget(&keys).await.unwrap();
        assert_eq!(got.len(), 301);
        for (i, v) in got[..300].iter().enumerate() {
            assert_eq!(v.as_ref().unwrap().value, pairs[i].1.as_bytes());
        }
        assert!(got[300].is_none());
        let mut listed: Vec<Vec<u8>> = c
            .list_all("bulk:", 37)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        listed.sort();
        let want: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone().into_bytes()).collect();
        let missing: Vec<_> = want
            .iter()
            .filter(|k| !listed.contains(k))
            .map(|k| String::from_utf8_lossy(k))
            .collect();
        assert_eq!(listed.len(), want.len(), "missing {missing:?}");
        assert_eq!(listed, want);
        let all = c.scan_all(0, 0, 64).await.unwrap();
        assert_eq!(all.len(), 300 + 2, "bulk:*, c, n (a deleted, short expired)");

        // Many requests in flight at once, from many tasks.
        let mut tasks = Vec::new();
        for t in 0..20 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100 {
                    let k = format!("conc:{t}:{i}");
                    c.put(&k, &k).await.unwrap();
                    assert_eq!(c.get(&k).await.unwrap().unwrap().value, k.as_bytes());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let counted = c.list_all("conc:", 500).await.unwrap().len();
        assert_eq!(counted, 2000);
    });
}

#[test]
fn blocking_sdk_and_cli() {
    let n = node("sdk-blocking");
    let addr = format!("127.0.0.1:{}", n.client);
    let c = blocking::Client::connect(&[addr.as_str()], ClientOptions::default()).unwrap();
    c.put("from-sdk", "hello").unwrap();
    assert_eq!(c.get("from-sdk").unwrap().unwrap().value, b"hello");

    let cli = |args: &[&str]| {
        let out = Command::new(BIN).args(args).args(["--node", &addr]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(cli(&["get", "from-sdk"]), (Some(0), "hello\n".into()));
    assert_eq!(cli(&["put", "cli:1", "one"]), (Some(0), "OK\n".into()));
    assert_eq!(cli(&["put", "cli:2", "two", "--ttl", "100"]), (Some(0), "OK\n".into()));
    assert_eq!(
        cli(&["put", "cli:1", "again", "--nx"]).0,
        Some(1),
        "condition not met exits 1"
    );
    assert_eq!(c.get("cli:1").unwrap().unwrap().value, b"one");
    let ttl = c.ttl("cli:2").unwrap();
    assert!(matches!(ttl, Ttl::Millis(ms) if ms > 90_000), "{ttl:?}");
    // Scans come in token order, not key order.
    let sorted = |(code, out): (Option<i32>, String)| {
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        (code, lines)
    };
    assert_eq!(
        sorted(cli(&["scan", "cli:"])),
        (Some(0), vec!["cli:1\tone".into(), "cli:2\ttwo".into()])
    );
    assert_eq!(
        sorted(cli(&["scan", "cli:", "--keys-only"])),
        (Some(0), vec!["cli:1".into(), "cli:2".into()])
    );
    assert_eq!(cli(&["del", "cli:1", "cli:2"]), (Some(0), "OK\n".into()));
    assert_eq!(cli(&["get", "cli:1"]).0, Some(1), "missing key exits 1");
    let out = Command::new(BIN)
        .args(["get", "x", "--node", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "a clear error when no node answers"
    );
}
