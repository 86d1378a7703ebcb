//! Security end to end (README, "Security"): the cluster secret between real
//! node processes, and client accounts with per-prefix permissions on the
//! native and RESP ports and through the SDK.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use corekv_net::msg::auth::{peer_mac, PeerChallenge, PeerHello, PeerProof, Role, PEER_HELLO, PEER_PROOF};
use corekv_net::msg::peer::{PeerOp, PeerOpcode, PeerRequest, PeerResponse};
use corekv_net::msg::{Consistency, ErrorCode, Limits, Response, ResponseOpcode};
use corekv_shard::token_of;
use corekv_tests::cluster::TestCluster;
use corekv_tests::wire::Wire;

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

const SECRET: &str = "correct-horse-battery-staple";
const WRONG: &str = "not-the-cluster-secret!";

/// The ERROR body of an answer, if it is one.
fn error_of(flags_error: bool, body: &[u8]) -> Option<(ErrorCode, String)> {
    if !flags_error {
        return None;
    }
    match Response::decode_body(ResponseOpcode::Error as u8, body, &Limits::default()) {
        Ok(Response::Error { code, message }) => Some((code, message.to_owned())),
        other => panic!("an ERROR answer that does not decode: {other:?}"),
    }
}

/// Runs the node-to-node handshake on `w` with `secret`, from `from` with
/// the client nonce `nonce`; returns the proof sent and the final answer's
/// error, if any.
fn handshake(
    w: &mut Wire,
    secret: &[u8],
    nonce: [u8; 32],
    proof: Option<[u8; 32]>,
) -> ([u8; 32], Option<(ErrorCode, String)>) {
    let from = "security-test";
    let mut b = Vec::new();
    PeerHello {
        from,
        client_nonce: nonce,
    }
    .encode_frame(1, &mut b)
    .unwrap();
    w.send_raw(&b).unwrap();
    let (h, body) = w.recv_frame().unwrap().expect("an answer to PEER_HELLO");
    assert_eq!(h.opcode, PEER_HELLO);
    assert!(error_of(h.flags.is_error(), &body).is_none(), "PEER_HELLO refused");
    let ch = PeerChallenge::decode_body(&body).unwrap();
    assert_eq!(
        ch.server_mac,
        peer_mac(secret, Role::Server, from, &nonce, &ch.server_nonce),
        "the node proves the same secret"
    );
    let mac = proof.unwrap_or_else(|| peer_mac(secret, Role::Client, from, &nonce, &ch.server_nonce));
    b.clear();
    PeerProof { client_mac: mac }.encode_frame(2, &mut b).unwrap();
    w.send_raw(&b).unwrap();
    let (h, body) = w.recv_frame().unwrap().expect("an answer to PEER_PROOF");
    assert_eq!(h.opcode, PEER_PROOF);
    (mac, error_of(h.flags.is_error(), &body))
}

/// Sends one node-to-node request; its answer's header flags error bit and body.
fn peer_call(w: &mut Wire, op: PeerOp<'_>) -> (bool, Vec<u8>) {
    let id = w.next_request_id();
    let mut b = Vec::new();
    PeerRequest {
        from: "security-test",
        op,
    }
    .encode_frame(id, &mut b)
    .unwrap();
    w.send_raw(&b).unwrap();
    let (h, body) = w.recv_frame().unwrap().expect("an answer");
    assert_eq!(h.request_id, id);
    (h.flags.is_error(), body)
}

fn read_record(w: &mut Wire, key: &[u8]) -> Option<Vec<u8>> {
    let (err, body) = peer_call(
        w,
        PeerOp::Read {
            token: token_of(key),
            key,
            digest_only: false,
        },
    );
    assert!(!err, "READ refused: {:?}", error_of(err, &body));
    match PeerResponse::decode_body(PeerOpcode::Read, &body, &Limits::default()).unwrap() {
        PeerResponse::Record { record, .. } => record.map(<[u8]>::to_vec),
        other => panic!("READ answered {other:?}"),
    }
}

fn corekv(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run corekv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_cluster_secret_keeps_out_nodes_and_connections_without_it() {
    let secret_flag = format!("security.cluster_secret={SECRET}");
    let mut c = TestCluster::start(
        BIN,
        TMP,
        "sec-secret",
        2,
        &["--set", &secret_flag, "--cluster.replication_factor", "2"],
    );
    // The cluster forms and serves with the secret.
    let sdk = c.client(&[1], Consistency::All);
    sdk.put("k1", "v1").unwrap();
    assert_eq!(sdk.get("k1").unwrap().map(|v| v.value), Some(b"v1".to_vec()));

    // A connection that did not prove the secret is refused node-to-node
    // opcodes, and a MUTATE on it is not applied.
    let n1 = c.node(1);
    let mut anon = Wire::connect_to(&n1.listen, n1.client).unwrap();
    let (err, body) = peer_call(
        &mut anon,
        PeerOp::Read {
            token: token_of(b"k1"),
            key: b"k1",
            digest_only: false,
        },
    );
    let (code, message) = error_of(err, &body).expect("READ without the handshake is refused");
    assert_eq!(code, ErrorCode::AUTH_REQUIRED, "{message}");
    assert!(message.contains("cluster secret"), "{message}");

    let mut authed = Wire::connect_to(&n1.listen, n1.client).unwrap();
    let (_, refused) = handshake(&mut authed, SECRET.as_bytes(), [7; 32], None);
    assert!(refused.is_none(), "{refused:?}");
    let record = read_record(&mut authed, b"k1").expect("node 1 holds k1");
    let (err, body) = peer_call(
        &mut anon,
        PeerOp::Mutate {
            token: token_of(b"evil"),
            key: b"evil",
            record: &record,
            hint_for: "",
        },
    );
    assert_eq!(error_of(err, &body).map(|e| e.0), Some(ErrorCode::AUTH_REQUIRED));
    assert_eq!(read_record(&mut authed, b"evil"), None, "the MUTATE was not applied");
    assert_eq!(sdk.get("evil").unwrap(), None);

    // A handshake with the wrong secret fails and closes the connection.
    let mut wrong = Wire::connect_to(&n1.listen, n1.client).unwrap();
    let mut b = Vec::new();
    PeerHello {
        from: "security-test",
        client_nonce: [1; 32],
    }
    .encode_frame(1, &mut b)
    .unwrap();
    wrong.send_raw(&b).unwrap();
    let (_, body) = wrong.recv_frame().unwrap().unwrap();
    let ch = PeerChallenge::decode_body(&body).unwrap();
    b.clear();
    PeerProof {
        client_mac: peer_mac(
            WRONG.as_bytes(),
            Role::Client,
            "security-test",
            &[1; 32],
            &ch.server_nonce,
        ),
    }
    .encode_frame(2, &mut b)
    .unwrap();
    wrong.send_raw(&b).unwrap();
    let (h, body) = wrong.recv_frame().unwrap().unwrap();
    assert_eq!(
        error_of(h.flags.is_error(), &body).map(|e| e.0),
        Some(ErrorCode::AUTH_FAILED)
    );
    assert!(wrong.recv_frame().unwrap().is_none(), "the node closed the connection");

    // A recorded handshake replayed on a new connection fails: the node's
    // nonce differs.
    let mut first = Wire::connect_to(&n1.listen, n1.client).unwrap();
    let (proof, refused) = handshake(&mut first, SECRET.as_bytes(), [9; 32], None);
    assert!(refused.is_none());
    let mut replay = Wire::connect_to(&n1.listen, n1.client).unwrap();
    let (_, refused) = handshake(&mut replay, SECRET.as_bytes(), [9; 32], Some(proof));
    assert_eq!(
        refused.map(|e| e.0),
        Some(ErrorCode::AUTH_FAILED),
        "a replayed proof is refused"
    );

    // The admin CLI needs the secret too.
    let addr1 = c.addr(1);
    let (ok, text) = corekv(&["status", "--node", &addr1]);
    assert!(!ok && text.contains("cluster handshake"), "{text}");
    let (ok, text) = corekv(&["status", "--node", &addr1, "--cluster-secret", WRONG]);
    assert!(!ok && text.contains("handshake failed"), "{text}");
    let (ok, text) = corekv(&["status", "--node", &addr1, "--cluster-secret", SECRET]);
    assert!(ok && text.contains("n2"), "{text}");

    // A node with the wrong secret never joins.
    let bad = c.add_node_unformed(&["--security.cluster_secret", WRONG]);
    let bad_addr = c.addr(bad);
    c.await_until(Duration::from_secs(30), "the bad node's handshake fails", || {
        if c.node(bad).log_text().contains("handshake failed") {
            Ok(())
        } else {
            Err("no handshake failure logged yet".to_owned())
        }
    });
    // Watch several gossip rounds (200 ms each): it stays out of every view.
    // A RING that times out on a loaded machine is skipped, not failed:
    // what matters is that no view that answers lists the bad node.
    let watch = Instant::now();
    let mut seen = [0usize; 2];
    while watch.elapsed() < Duration::from_secs(3) || seen.contains(&0) {
        assert!(watch.elapsed() < Duration::from_secs(60), "no RING answered: {seen:?}");
        for i in 1..=2 {
            let Ok(view) = c.ring_view(i) else { continue };
            seen[i - 1] += 1;
            // (A good node briefly believed down under load drops out of
            // RING too; only the bad node's absence is the point here.)
            assert!(!view.contains(&bad_addr), "node {i} lists the bad node: {view:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, text) = corekv(&["status", "--node", &addr1, "--cluster-secret", SECRET]);
    assert!(ok && !text.contains(&format!("n{bad}")), "{text}");
    assert_eq!(sdk.get("k1").unwrap().map(|v| v.value), Some(b"v1".to_vec()));
}

mod accounts {
    use super::*;
    use corekv_net::client::{blocking, ClientError, ClientOptions, Credentials};
    use corekv_net::msg::auth::AuthRequest;
    use corekv_net::msg::{Condition, Op};
    use corekv_shard::security::hash_password;
    use corekv_tests::node::{test_dir, TestNode};
    use corekv_tests::wire::Reply;

    const PW: &str = "s3cret-pw";

    fn users_file(name: &str) -> String {
        let h = hash_password(PW.as_bytes()).unwrap();
        let text = format!(
            r#"
[[users]]
name = "root"
password_hash = "{h}"
permissions = [{{ prefix = "", read = true, write = true, admin = true }}]

[[users]]
name = "ro"
password_hash = "{h}"
permissions = [{{ prefix = "", read = true }}]

[[users]]
name = "app1"
password_hash = "{h}"
permissions = [{{ prefix = "app1:", read = true, write = true }}]
"#
        );
        let path = test_dir(TMP, name).with_extension("users.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// AUTH on a raw connection; the answer's error code, if any.
    fn auth(w: &mut Wire, user: &str, password: &str) -> Option<ErrorCode> {
        let id = w.next_request_id();
        let mut b = Vec::new();
        AuthRequest {
            user,
            password: password.as_bytes(),
        }
        .encode_frame(id, &mut b)
        .unwrap();
        w.send_raw(&b).unwrap();
        let (h, body) = w.recv_frame().unwrap().expect("an answer to AUTH");
        assert_eq!(h.request_id, id);
        error_of(h.flags.is_error(), &body).map(|e| e.0)
    }

    fn code_of(r: &Reply) -> Option<ErrorCode> {
        match r {
            Reply::Error(c, _) => Some(*c),
            _ => None,
        }
    }

    fn options() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(10),
            refresh_interval: None,
            ..ClientOptions::default()
        }
    }

    #[test]
    fn users_and_permissions_on_the_native_port_the_sdk_and_the_cli() {
        let users = users_file("sec-native");
        let node = TestNode::start(BIN, &test_dir(TMP, "sec-native"), 1, &["--security.users_file", &users]);
        let put = |k: &'static [u8]| Op::Put {
            key: k,
            value: b"v",
            ttl_ms: 0,
            condition: Condition::Always,
        };

        // Unauthenticated: PING only.
        let mut w = Wire::connect(node.client).unwrap();
        assert_eq!(w.call(Op::Ping), Reply::Ok);
        assert_eq!(code_of(&w.call(Op::Get { key: b"k" })), Some(ErrorCode::AUTH_REQUIRED));
        assert_eq!(code_of(&w.call(Op::Ring)), Some(ErrorCode::AUTH_REQUIRED));
        assert_eq!(auth(&mut w, "ro", "wrong"), Some(ErrorCode::AUTH_FAILED));
        assert_eq!(auth(&mut w, "nobody", PW), Some(ErrorCode::AUTH_FAILED));
        assert_eq!(code_of(&w.call(Op::Get { key: b"k" })), Some(ErrorCode::AUTH_REQUIRED));

        // Read-only: reads, not writes.
        assert_eq!(auth(&mut w, "ro", PW), None);
        assert_eq!(w.call(Op::Get { key: b"k" }), Reply::NotFound);
        assert_eq!(code_of(&w.call(put(b"k"))), Some(ErrorCode::FORBIDDEN));
        assert_eq!(code_of(&w.call(Op::Delete { key: b"k" })), Some(ErrorCode::FORBIDDEN));

        // Prefix-limited: its prefix only.
        let mut a = Wire::connect(node.client).unwrap();
        assert_eq!(auth(&mut a, "app1", PW), None);
        assert_eq!(a.call(put(b"app1:k")), Reply::Ok);
        assert!(matches!(a.call(Op::Get { key: b"app1:k" }), Reply::Value(v, ..) if v == b"v"));
        assert_eq!(code_of(&a.call(put(b"app2:k"))), Some(ErrorCode::FORBIDDEN));
        assert_eq!(code_of(&a.call(Op::Get { key: b"other" })), Some(ErrorCode::FORBIDDEN));
        assert_eq!(w.call(Op::Get { key: b"app1:k" }), a.call(Op::Get { key: b"app1:k" }));

        // Node-to-node and operator opcodes: an admin user only (no secret here).
        let mut b = Vec::new();
        PeerRequest {
            from: "x",
            op: PeerOp::Admin { command: b"status" },
        }
        .encode_frame(99, &mut b)
        .unwrap();
        a.send_raw(&b).unwrap();
        let (h, body) = a.recv_frame().unwrap().unwrap();
        assert_eq!(
            error_of(h.flags.is_error(), &body).map(|e| e.0),
            Some(ErrorCode::AUTH_REQUIRED)
        );

        // The SDK: refused without credentials or with wrong ones, served with good ones.
        let addr = format!("127.0.0.1:{}", node.client);
        let err = blocking::Client::connect(&[&addr], options()).unwrap_err();
        assert!(err.to_string().contains("authentication required"), "{err}");
        let err = blocking::Client::connect_as(&[&addr], options(), Credentials::new("app1", "nope")).unwrap_err();
        assert!(err.to_string().contains("invalid username-password"), "{err}");
        let sdk = blocking::Client::connect_as(&[&addr], options(), Credentials::new("app1", PW)).unwrap();
        sdk.put("app1:sdk", "1").unwrap();
        assert_eq!(sdk.get("app1:sdk").unwrap().map(|v| v.value), Some(b"1".to_vec()));
        assert_eq!(sdk.list_all("app1:", 100).unwrap().len(), 2);
        let e = sdk.put("app2:sdk", "1").unwrap_err();
        assert!(
            matches!(&e, ClientError::Server { code, .. } if *code == ErrorCode::FORBIDDEN),
            "{e}"
        );
        assert!(
            sdk.list_all("", 100).is_err(),
            "listing every key needs a grant on \"\""
        );

        // The CLI takes --user/--password (or COREKV_USER/COREKV_PASSWORD).
        let (ok, text) = corekv(&["put", "--node", &addr, "app1:cli", "x"]);
        assert!(!ok && text.contains("authentication required"), "{text}");
        let (ok, text) = corekv(&[
            "put",
            "--node",
            &addr,
            "--user",
            "app1",
            "--password",
            PW,
            "app1:cli",
            "x",
        ]);
        assert!(ok, "{text}");
        let out = Command::new(BIN)
            .args(["get", "--node", &addr, "app1:cli"])
            .env("COREKV_USER", "ro")
            .env("COREKV_PASSWORD", PW)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x");
        // An admin user passes the check (a single node then says it has no cluster).
        let (_, text) = corekv(&["status", "--node", &addr, "--user", "root", "--password", PW]);
        assert!(text.contains("not in cluster mode"), "{text}");
        let (ok, text) = corekv(&["status", "--node", &addr, "--user", "app1", "--password", PW]);
        assert!(!ok && text.contains("admin"), "{text}");
        assert!(node.log_text().contains("failed authentication"), "failures are logged");
    }

    #[test]
    fn users_and_permissions_on_the_resp_port() {
        let users = users_file("sec-resp");
        let node = TestNode::start(BIN, &test_dir(TMP, "sec-resp"), 1, &["--security.users_file", &users]);
        let code = |r: redis::RedisResult<redis::Value>| r.unwrap_err().code().map(str::to_owned);
        let mut c = redis::Client::open(node.redis_url()).unwrap().get_connection().unwrap();
        assert_eq!(
            code(redis::cmd("GET").arg("k").query(&mut c)).as_deref(),
            Some("NOAUTH")
        );
        let e = redis::cmd("GET").arg("k").query::<redis::Value>(&mut c).unwrap_err();
        assert!(e.to_string().contains("Authentication required"), "{e}");
        assert_eq!(
            code(redis::cmd("AUTH").arg("ro").arg("wrong").query(&mut c)).as_deref(),
            Some("WRONGPASS")
        );
        redis::cmd("AUTH").arg("ro").arg(PW).query::<()>(&mut c).unwrap();
        assert_eq!(
            redis::cmd("GET").arg("k").query::<Option<String>>(&mut c).unwrap(),
            None
        );
        assert_eq!(
            code(redis::cmd("SET").arg("k").arg("v").query(&mut c)).as_deref(),
            Some("NOPERM")
        );

        // Credentials in the URL: the client sends AUTH user pass itself.
        let url = format!("redis://app1:{PW}@{}:{}/", node.listen, node.resp);
        let mut a = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("SET").arg("app1:k").arg("v").query::<()>(&mut a).unwrap();
        assert_eq!(
            redis::cmd("GET")
                .arg("app1:k")
                .query::<Option<String>>(&mut a)
                .unwrap()
                .as_deref(),
            Some("v")
        );
        assert_eq!(
            code(redis::cmd("GET").arg("app2:k").query(&mut a)).as_deref(),
            Some("NOPERM")
        );
        assert_eq!(
            code(
                redis::cmd("MSET")
                    .arg("app1:a")
                    .arg("1")
                    .arg("app2:b")
                    .arg("2")
                    .query(&mut a)
            )
            .as_deref(),
            Some("NOPERM")
        );
        assert_eq!(code(redis::cmd("SCAN").arg(0).query(&mut a)).as_deref(), Some("NOPERM"));
        redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg("app1:*")
            .query::<redis::Value>(&mut a)
            .unwrap();

        // HELLO with AUTH, as Redis 6+ clients do.
        let mut h = redis::Client::open(node.redis_url()).unwrap().get_connection().unwrap();
        assert_eq!(
            code(redis::cmd("HELLO").arg(2).query(&mut h)).as_deref(),
            Some("NOAUTH")
        );
        assert_eq!(
            code(
                redis::cmd("HELLO")
                    .arg(2)
                    .arg("AUTH")
                    .arg("app1")
                    .arg("bad")
                    .query(&mut h)
            )
            .as_deref(),
            Some("WRONGPASS")
        );
        redis::cmd("HELLO")
            .arg(2)
            .arg("AUTH")
            .arg("app1")
            .arg(PW)
            .query::<redis::Value>(&mut h)
            .unwrap();
        assert_eq!(
            redis::cmd("GET")
                .arg("app1:k")
                .query::<Option<String>>(&mut h)
                .unwrap()
                .as_deref(),
            Some("v")
        );
    }
}
