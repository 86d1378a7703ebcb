//! TLS end to end (README "Security", docs/protocol.md "TLS"), against real
//! node processes: `redis-cli --tls`, the SDK (async and blocking) on the
//! shared and shard-aware ports, the `corekv` CLI, plain-text clients on a
//! TLS port, mutual TLS, bad files at start, and a three-node cluster whose
//! nodes authenticate each other with certificates.
//!
//! Certificates are made at test time with rcgen, under target/tmp: a CA,
//! node certificates listing the node's IP address, client certificates,
//! and a second CA standing for anyone else.
//!
//! Wall time: about 12 s in a debug build (the four tests run in parallel;
//! the longest waits out the 10 s handshake limit on a silent connection
//! while it checks everything else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corekv_net::client::{blocking, Client, ClientError, ClientOptions, Consistency, Tls};
use corekv_net::msg::{ErrorCode, Op};
use corekv_tests::cluster::{await_until, next_subnet};
use corekv_tests::node::{test_dir, TestNode};
use corekv_tests::wire::{Reply, Wire};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// A certificate authority made for the test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Its certificate, PEM, on disk.
    file: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, cert.pem()).unwrap();
        Ca { cert, key, file }
    }

    /// A certificate for `names` (IP addresses or DNS names) signed by this
    /// CA, good for a server (`server`) and/or a client; returns the
    /// certificate and key files.
    fn issue(&self, dir: &Path, file: &str, names: &[&str], server: bool, client: bool) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, file);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = [
            (server, ExtendedKeyUsagePurpose::ServerAuth),
            (client, ExtendedKeyUsagePurpose::ClientAuth),
        ]
        .into_iter()
        .filter_map(|(on, u)| on.then_some(u))
        .collect();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// The certificates of a single-node test.
struct Pki {
    dir: PathBuf,
    ca: Ca,
    node: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    /// Another CA and a client certificate it signed: not trusted by the node.
    other_ca: Ca,
    other_client: (PathBuf, PathBuf),
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = test_dir(TMP, &format!("{name}-pki"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new(&dir, "ca");
        let node = ca.issue(&dir, "node", &["127.0.0.1", "localhost"], true, false);
        let client = ca.issue(&dir, "client", &["app"], false, true);
        let other_ca = Ca::new(&dir, "other-ca");
        let other_client = other_ca.issue(&dir, "other-client", &["intruder"], false, true);
        Pki {
            dir,
            ca,
            node,
            client,
            other_ca,
            other_client,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        refresh_interval: None,
        ..ClientOptions::default()
    }
}

fn tls(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> Tls {
    Tls::from_pem_files(ca, cert.map(|(c, k)| (c.as_path(), k.as_path()))).unwrap()
}

/// Runs a command; (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn redis_cli(port: u16, tls_args: &[&str], cmd: &[&str]) -> (bool, String) {
    run(Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(tls_args)
        .args(cmd))
}

fn corekv(args: &[&str]) -> (bool, String) {
    run(Command::new(BIN).args(args))
}

/// A single node with TLS on every client-facing port, no client
/// certificates: every client kind works over TLS, plain-text clients are
/// refused without harm, and a silent connection is cut.
#[test]
fn tls_on_every_port_serves_redis_cli_the_sdk_and_the_cli() {
    let pki = Pki::new("tls-single");
    let (cert, key) = (&pki.node.0, &pki.node.1);
    let n = TestNode::start(
        BIN,
        &test_dir(TMP, "tls-single"),
        2,
        &["--tls.cert_file", s(cert), "--tls.key_file", s(key)],
    );
    let log = n.log_text();
    assert!(
        log.contains("[tls]") && log.contains("listeners = \"client,shard,resp,http\""),
        "{log}"
    );

    // A connection that never finishes its handshake (one byte of a
    // handshake record, then silence) is cut after the handshake timeout.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", n.client)).unwrap();
    std::io::Write::write_all(&mut silent, &[0x16]).unwrap();
    let silent_since = Instant::now();

    // redis-cli over TLS on the RESP port.
    let ca = s(&pki.ca.file);
    let (ok, out) = redis_cli(n.resp, &["--tls", "--cacert", ca], &["SET", "rk", "rv"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = redis_cli(n.resp, &["--tls", "--cacert", ca], &["GET", "rk"]);
    assert!(ok && out.trim() == "rv", "{out}");
    // Plain redis-cli on the TLS port: told why, in RESP.
    let (_, out) = redis_cli(n.resp, &[], &["GET", "rk"]);
    assert!(out.contains("requires TLS"), "{out}");

    // HTTPS on the HTTP port (curl checks the certificate against the CA and
    // the address); plain HTTP there is told why in an HTTP answer.
    let url = format!("https://127.0.0.1:{}/api/v1/keys/rk", n.http);
    let (ok, out) = run(Command::new("curl").args(["-sS", "--fail", "--cacert", ca, &url]));
    assert!(ok && out.trim() == "rv", "{out}");
    let url = format!("http://127.0.0.1:{}/api/v1/keys/rk", n.http);
    let (_, out) = run(Command::new("curl").args(["-sS", "-i", &url]));
    assert!(out.contains("400") && out.contains("requires TLS"), "{out}");

    // The blocking SDK: RING on the shared port, data on the shard-aware ports.
    let c = blocking::Client::connect_tls(&[format!("127.0.0.1:{}", n.client)], options(), tls(&pki.ca.file, None))
        .unwrap();
    let targets = c.routing().targets().to_vec();
    assert!(
        targets.contains(&format!("127.0.0.1:{}", n.shard_base))
            && targets.contains(&format!("127.0.0.1:{}", n.shard_base + 1)),
        "{targets:?}"
    );
    for i in 0..20 {
        c.put(format!("b{i}"), format!("v{i}")).unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            c.get(format!("b{i}")).unwrap().map(|v| v.value),
            Some(format!("v{i}").into_bytes())
        );
    }
    c.delete("b0").unwrap();
    assert_eq!(c.get("b0").unwrap(), None);
    assert_eq!(c.get("rk").unwrap().map(|v| v.value), Some(b"rv".to_vec()));
    // A listing goes through the shared port.
    let page = c.list_all("b1", 100).unwrap();
    assert!(page.iter().any(|(k, _)| k == b"b1"), "{page:?}");

    // The async SDK.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = Client::connect_tls(&[format!("127.0.0.1:{}", n.client)], options(), tls(&pki.ca.file, None))
            .await
            .unwrap();
        a.put("async", "yes").await.unwrap();
        assert_eq!(a.get("async").await.unwrap().map(|v| v.value), Some(b"yes".to_vec()));
        a.delete("async").await.unwrap();
        assert_eq!(a.get("async").await.unwrap(), None);
        // An explicit server name must be one the certificate lists.
        let named = tls(&pki.ca.file, None).with_server_name("localhost").unwrap();
        let a = Client::connect_tls(&[format!("127.0.0.1:{}", n.client)], options(), named)
            .await
            .unwrap();
        assert_eq!(a.get("b1").await.unwrap().map(|v| v.value), Some(b"v1".to_vec()));
        let wrong = tls(&pki.ca.file, None).with_server_name("db.example").unwrap();
        let r = Client::connect_tls(&[format!("127.0.0.1:{}", n.client)], options(), wrong).await;
        assert!(
            matches!(&r, Err(ClientError::Unavailable { last, .. }) if matches!(**last, ClientError::Tls { .. })),
            "{r:?}"
        );
    });

    // The corekv CLI.
    let node = format!("127.0.0.1:{}", n.client);
    let (ok, out) = corekv(&["put", "--node", &node, "--tls-ca", ca, "cli", "hello"]);
    assert!(ok, "{out}");
    let (ok, out) = corekv(&["get", "--node", &node, "--tls-ca", ca, "cli"]);
    assert!(ok && out.trim() == "hello", "{out}");
    let (ok, out) = run(Command::new(BIN)
        .args(["get", "--node", &node, "cli"])
        .env("COREKV_TLS_CA", ca));
    assert!(ok && out.trim() == "hello", "COREKV_TLS_CA: {out}");
    // Without --tls-ca, the CLI is refused, saying why.
    let (ok, out) = corekv(&["get", "--node", &node, "cli"]);
    assert!(!ok && out.contains("requires TLS"), "{out}");
    // A CA that did not sign the node's certificate.
    let (ok, out) = corekv(&["get", "--node", &node, "--tls-ca", s(&pki.other_ca.file), "cli"]);
    assert!(!ok && out.contains("TLS handshake"), "{out}");

    // A plain native client on the shared and a shard-aware port: one
    // connection-level ERROR saying the port needs TLS, then EOF.
    for port in [n.client, n.shard_base] {
        let mut w = Wire::connect(port).unwrap();
        w.set_read_timeout(Duration::from_secs(30)).unwrap();
        w.send(Op::Ping).unwrap();
        match w.recv().unwrap() {
            Some((0, Reply::Error(code, message))) => {
                assert_eq!(code, ErrorCode::BAD_FRAME);
                assert!(message.contains("requires TLS"), "{message}");
            }
            other => panic!("port {port}: {other:?}"),
        }
        assert_eq!(w.recv().unwrap(), None, "closed after the refusal");
    }
    // The plain SDK fails cleanly too.
    let r = blocking::Client::connect(&[node.as_str()], options());
    assert!(r.is_err(), "a plain SDK client on a TLS port");

    // The node kept serving throughout.
    assert_eq!(c.get("cli").unwrap().map(|v| v.value), Some(b"hello".to_vec()));

    // The silent connection is cut (10 s handshake timeout), not held.
    silent.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut b = [0u8; 16];
    let r = std::io::Read::read(&mut silent, &mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let held = silent_since.elapsed();
    assert!(held >= Duration::from_secs(9), "cut after {held:?}, before the timeout");
    assert_eq!(c.get("rk").unwrap().map(|v| v.value), Some(b"rv".to_vec()));
}

/// With `tls.ca_file`, a client must present a certificate the CA signed.
#[test]
fn mutual_tls_requires_a_certificate_from_the_ca() {
    let pki = Pki::new("tls-mutual");
    let n = TestNode::start(
        BIN,
        &test_dir(TMP, "tls-mutual"),
        1,
        &[
            "--tls.cert_file",
            s(&pki.node.0),
            "--tls.key_file",
            s(&pki.node.1),
            "--tls.ca_file",
            s(&pki.ca.file),
            "--tls.listeners",
            "client,shard",
        ],
    );
    let node = format!("127.0.0.1:{}", n.client);
    // No certificate: refused.
    let r = blocking::Client::connect_tls(&[node.as_str()], options(), tls(&pki.ca.file, None));
    assert!(r.is_err(), "a client without a certificate was served");
    // A certificate from another CA: refused.
    let r = blocking::Client::connect_tls(&[node.as_str()], options(), tls(&pki.ca.file, Some(&pki.other_client)));
    assert!(r.is_err(), "a client with another CA's certificate was served");
    let log = n.log_text();
    assert!(log.contains("TLS client refused"), "{log}");
    // A good certificate: served.
    let c = blocking::Client::connect_tls(&[node.as_str()], options(), tls(&pki.ca.file, Some(&pki.client))).unwrap();
    c.put("m", "tls").unwrap();
    assert_eq!(c.get("m").unwrap().map(|v| v.value), Some(b"tls".to_vec()));

    // The CLI, with and without its certificate.
    let ca = s(&pki.ca.file);
    let (ok, out) = corekv(&[
        "get",
        "--node",
        &node,
        "--tls-ca",
        ca,
        "--tls-cert",
        s(&pki.client.0),
        "--tls-key",
        s(&pki.client.1),
        "m",
    ]);
    assert!(ok && out.trim() == "tls", "{out}");
    let (ok, out) = corekv(&["get", "--node", &node, "--tls-ca", ca, "m"]);
    assert!(!ok, "{out}");
    // `tls.listeners` left the RESP port plain.
    let (ok, out) = redis_cli(n.resp, &[], &["GET", "m"]);
    assert!(ok && out.trim() == "tls", "{out}");
    // (redis-cli with a client certificate on a mutual-TLS RESP port: the
    // cluster test.)
}

/// Bad TLS settings stop the start with a message naming the file or key.
#[test]
fn bad_tls_files_stop_the_start() {
    let pki = Pki::new("tls-bad");
    let junk = pki.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = pki.dir.join("missing.pem");
    let (cert, key) = (s(&pki.node.0), s(&pki.node.1));
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["--tls.cert_file", s(&missing), "--tls.key_file", key],
            vec!["tls.cert_file".into(), s(&missing).into()],
        ),
        (
            vec!["--tls.cert_file", s(&junk), "--tls.key_file", key],
            vec![s(&junk).into(), "no certificate".into()],
        ),
        (
            vec!["--tls.cert_file", cert, "--tls.key_file", s(&junk)],
            vec!["tls.key_file".into(), s(&junk).into(), "no private key".into()],
        ),
        (
            // The client's key is not the node certificate's.
            vec!["--tls.cert_file", cert, "--tls.key_file", s(&pki.client.1)],
            vec![s(&pki.client.1).into(), "does not match".into(), cert.into()],
        ),
        (
            vec![
                "--tls.cert_file",
                cert,
                "--tls.key_file",
                key,
                "--tls.ca_file",
                s(&junk),
            ],
            vec!["tls.ca_file".into(), s(&junk).into()],
        ),
        (vec!["--tls.cert_file", cert], vec!["tls.key_file".into()]),
        (
            vec!["--tls.ca_file", s(&pki.ca.file)],
            vec!["tls.ca_file".into(), "need TLS".into()],
        ),
        (
            vec![
                "--tls.cert_file",
                cert,
                "--tls.key_file",
                key,
                "--tls.listeners",
                "client,gopher",
            ],
            vec!["tls.listeners".into(), "gopher".into()],
        ),
        (
            // Cluster mode needs mutual TLS between nodes.
            vec![
                "--tls.cert_file",
                cert,
                "--tls.key_file",
                key,
                "--cluster.seeds",
                "127.0.0.1:1",
            ],
            vec!["tls.ca_file".into(), "cluster mode".into()],
        ),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let mut n = TestNode::new(BIN, &test_dir(TMP, &format!("tls-bad-{i}")), "127.0.0.1", 1, &[]);
        n.add_flags(&flags.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>());
        let r = n.spawn();
        let log = match r {
            Ok(_) => panic!("case {i} ({flags:?}) started"),
            Err(log) => log,
        };
        for w in want {
            assert!(log.contains(w.as_str()), "case {i} ({flags:?}): no `{w}` in:\n{log}");
        }
        assert!(!log.contains("panicked"), "case {i}: {log}");
    }
}

/// Three nodes with certificates from one CA (each listing the node's own
/// IP), mutual TLS between them and the cluster secret on top: QUORUM
/// writes and reads through the SDK, `corekv status` over TLS, and a fourth
/// node whose certificate another CA signed never joins.
#[test]
fn a_tls_cluster_serves_quorum_and_keeps_out_a_node_of_another_ca() {
    const SECRET: &str = "tls-cluster-secret-0123456789";
    let pki = Pki::new("tls-cluster");
    let k = next_subnet();
    let root = test_dir(TMP, "tls-cluster");
    let _ = std::fs::remove_dir_all(&root);
    let ip = |i: usize| format!("127.0.{k}.{i}");
    let mut nodes: Vec<TestNode> = (1..=4)
        .map(|i| TestNode::new(BIN, &root.join(format!("n{i}")), &ip(i), 1, &[]))
        .collect();
    let addr = |n: &TestNode| format!("{}:{}", n.listen, n.client);
    let seeds = format!("{},{}", addr(&nodes[0]), addr(&nodes[1]));
    for (i, node) in nodes.iter_mut().enumerate() {
        let i = i + 1;
        // Node 4's certificate comes from the other CA; it still trusts the
        // cluster's CA, so only the others' check keeps it out.
        let (cert, key) = if i == 4 {
            pki.other_ca.issue(&pki.dir, "n4", &[&ip(4)], true, true)
        } else {
            pki.ca.issue(&pki.dir, &format!("n{i}"), &[&ip(i)], true, true)
        };
        node.set_log_filter("warn,corekv_shard=info");
        node.add_flags(
            &[
                "--node.id",
                &format!("n{i}"),
                "--cluster.seeds",
                &seeds,
                "--cluster.replication_factor",
                "3",
                "--cluster.gossip_interval_ms",
                "200",
                "--security.cluster_secret",
                SECRET,
                "--tls.cert_file",
                s(&cert),
                "--tls.key_file",
                s(&key),
                "--tls.ca_file",
                s(&pki.ca.file),
            ]
            .map(str::to_owned),
        );
    }
    for node in nodes.iter_mut().take(3) {
        node.spawn().unwrap();
    }
    let client_tls = || tls(&pki.ca.file, Some(&pki.client));
    let view = |n: &TestNode| -> Result<Vec<String>, String> {
        let c = blocking::Client::connect_tls(&[addr(n)], options(), client_tls()).map_err(|e| e.to_string())?;
        let mut v: Vec<String> = c.routing().nodes().iter().map(|n| n.address.clone()).collect();
        v.sort();
        Ok(v)
    };
    let want: Vec<String> = {
        let mut w: Vec<String> = nodes.iter().take(3).map(addr).collect();
        w.sort();
        w
    };
    let tails = |nodes: &[TestNode]| {
        nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.listen, n.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let formed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        await_until(Duration::from_secs(60), "the TLS cluster forms", || {
            for n in nodes.iter().take(3) {
                let v = view(n)?;
                if v != want {
                    return Err(format!("{} lists {v:?}", n.listen));
                }
            }
            Ok(())
        })
    }));
    if formed.is_err() {
        panic!("the cluster did not form:\n{}", tails(&nodes));
    }

    // QUORUM writes and reads through the SDK, over TLS with a client certificate.
    let c = blocking::Client::connect_tls(&[addr(&nodes[1])], options(), client_tls())
        .unwrap()
        .with_consistency(Consistency::Quorum);
    for i in 0..30 {
        c.put(format!("q{i}"), format!("v{i}")).unwrap();
    }
    for i in 0..30 {
        assert_eq!(
            c.get(format!("q{i}")).unwrap().map(|v| v.value),
            Some(format!("v{i}").into_bytes())
        );
    }
    // ALL: every replica, so every node-to-node link carried a write.
    c.with_consistency(Consistency::All).put("all", "three").unwrap();

    // redis-cli with a client certificate on a mutual-TLS RESP port.
    let n3 = &nodes[2];
    let (ok, out) = run(Command::new("redis-cli")
        .args(["-h", &n3.listen, "-p", &n3.resp.to_string()])
        .args(["--tls", "--cacert", s(&pki.ca.file)])
        .args(["--cert", s(&pki.client.0), "--key", s(&pki.client.1)])
        .args(["GET", "all"]));
    assert!(ok && out.trim() == "three", "{out}");

    // `corekv status` over TLS, with the node's secret, presenting a client certificate.
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--node"];
        let a = addr(&nodes[0]);
        args.push(&a);
        args.extend_from_slice(&["--tls-ca", s(&pki.ca.file), "--cluster-secret", SECRET]);
        args.extend_from_slice(extra);
        corekv(&args)
    };
    let (ok, out) = status(&["--tls-cert", s(&pki.client.0), "--tls-key", s(&pki.client.1)]);
    assert!(
        ok && out.contains("n1") && out.contains("n2") && out.contains("n3"),
        "{out}"
    );
    let (ok, out) = status(&[]);
    assert!(!ok, "status without a client certificate: {out}");

    // Node 4: another CA's certificate. Its connections are refused at the
    // TLS handshake, so its gossip never reaches the cluster.
    nodes[3].spawn().unwrap();
    let bad = addr(&nodes[3]);
    let bad_ip = nodes[3].listen.clone();
    await_until(Duration::from_secs(60), "a node refuses node 4's certificate", || {
        if nodes.iter().take(3).any(|n| {
            n.log_text()
                .lines()
                .any(|l| l.contains("TLS client refused") && l.contains(&bad_ip))
        }) {
            Ok(())
        } else {
            Err("no refusal logged yet".to_owned())
        }
    });
    // Several gossip rounds (200 ms each): node 4 stays out of every view.
    let watch = Instant::now();
    let mut seen = [0usize; 3];
    while watch.elapsed() < Duration::from_secs(3) || seen.contains(&0) {
        assert!(watch.elapsed() < Duration::from_secs(60), "no RING answered: {seen:?}");
        for (i, n) in nodes.iter().take(3).enumerate() {
            let Ok(v) = view(n) else { continue };
            seen[i] += 1;
            assert!(!v.contains(&bad), "{} lists node 4: {v:?}", n.listen);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A client with node 4's kind of certificate cannot write either.
    let r = blocking::Client::connect_tls(
        &[addr(&nodes[0])],
        options(),
        tls(&pki.ca.file, Some(&pki.other_client)),
    );
    assert!(r.is_err(), "a client of another CA was served");
    assert_eq!(c.get("all").unwrap().map(|v| v.value), Some(b"three".to_vec()));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&root);
}
