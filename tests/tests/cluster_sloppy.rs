//! Sloppy quorum on a real cluster (`corekv serve` processes on their own
//! loopback IPs, see `corekv_tests::cluster`): 4 nodes, replication factor 2,
//! one core each, gossip every 200 ms.
//!
//! Node 3 is killed and waited for until every survivor has convicted it
//! (their RING answers leave it out). Then, for keys whose replicas are
//! nodes 1 and 3:
//!
//! - a write at ALL without a sloppy quorum is refused at once with
//!   UNAVAILABLE, naming how many replicas are alive and required;
//! - the same write allowing a sloppy quorum is acknowledged: node 1 holds it,
//!   and its other copy is a hint on a fallback (node 2 or 4), which does not
//!   merge it into its own data;
//! - both fallbacks are killed with SIGKILL and restarted, so a hint can only
//!   have survived on disk; then node 3 comes back and must receive every
//!   value (no client read runs meanwhile, so neither read repair nor any
//!   coordinator hint can deliver them: only the fallbacks' hints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use corekv_net::client::ClientError;
use corekv_net::msg::{Condition, Consistency, ErrorCode, Op};
use corekv_net::token::token_of;
use corekv_shard::topology::{Node, NodeId, Ring};
use corekv_tests::cluster::{live_values, TestCluster};
use corekv_tests::wire::Reply;

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Nodes in the cluster.
const NODES: usize = 4;
/// Replicas per key.
const RF: usize = 2;
/// The node killed: not a seed, so the others keep gossiping through theirs.
const VICTIM: usize = 3;
/// The live replica of every key the test writes (the other is [`VICTIM`]).
const LIVE: usize = 1;
/// The nodes that are neither: the fallbacks a sloppy quorum may pick.
const FALLBACKS: [usize; 2] = [2, 4];
/// Keys written.
const KEYS: usize = 16;

/// How long failure detection, a restart being seen, and hint replay may take.
const CONVERGE: Duration = Duration::from_secs(30);

/// The ring the nodes build: ids `n1`..`n4`, the default 256 vnodes each,
/// tokens hashed from the id (`cluster::local_tokens`).
fn ring() -> Ring {
    let nodes = (1..=NODES)
        .map(|i| {
            let id = NodeId(format!("n{i}"));
            let tokens = (0..Ring::DEFAULT_VNODES).map(|v| Ring::vnode_token(&id, v)).collect();
            Node::new(id.0, format!("x:{i}")).with_tokens(tokens)
        })
        .collect();
    Ring::new(nodes, Ring::DEFAULT_VNODES).expect("a ring of four nodes")
}

/// The node numbers replicating `key`, in preference order.
fn replicas(ring: &Ring, key: &str) -> Vec<usize> {
    ring.preference_list_rack_aware(token_of(key.as_bytes()), RF)
        .iter()
        .map(|n| n.id.0[1..].parse().expect("node ids are n<number>"))
        .collect()
}

/// [`KEYS`] keys whose replicas are exactly [`LIVE`] and [`VICTIM`].
fn keys(ring: &Ring) -> Vec<String> {
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("sloppy:{i:05}"))
        .filter(|k| {
            let mut r = replicas(ring, k);
            r.sort_unstable();
            r == [LIVE, VICTIM]
        })
        .take(KEYS)
        .collect();
    assert_eq!(keys.len(), KEYS, "too few keys replicated on nodes {LIVE} and {VICTIM}");
    keys
}

/// The value a write tagged `tag` (`strict` or `sloppy`) puts at `key`.
fn value(tag: &str, key: &str) -> Vec<u8> {
    format!("{tag} value of {key}").into_bytes()
}

/// Whether node `i`'s RING lists node `j` (a node convicted DOWN is left out).
fn lists(c: &TestCluster, i: usize, j: usize) -> Result<bool, String> {
    Ok(c.ring_view(i)?.contains(&c.addr(j)))
}

/// Waits until every running node other than `j` lists node `j` (`up`) or
/// has convicted it (`!up`).
fn await_seen(c: &TestCluster, j: usize, up: bool) {
    let what = format!("every running node sees node {j} {}", if up { "up" } else { "DOWN" });
    c.await_until(CONVERGE, &what, || {
        for i in c.running().into_iter().filter(|&i| i != j) {
            if lists(c, i, j)? != up {
                return Err(format!("node {i} does not yet"));
            }
        }
        Ok(())
    });
}

#[test]
fn sloppy_quorum_writes_survive_a_down_replica_through_fallback_hints() {
    let ring = ring();
    let keys = keys(&ring);
    let mut c = TestCluster::start(
        BIN,
        TMP,
        "sloppy",
        NODES,
        &["--cluster.replication_factor", &RF.to_string()],
    );

    c.kill9(VICTIM);
    await_seen(&c, VICTIM, false);

    // Half the keys through the SDK (routed to node 1, a replica), half
    // through node 4, which is not a replica and forwards (COORDINATE).
    let (direct, forwarded) = keys.split_at(KEYS / 2);
    let sdk = c.client(&[1, 2], Consistency::All);
    assert!(!sdk.sloppy_quorum(), "the SDK's default is a strict quorum");

    // Strict: ALL needs both replicas, and one is convicted down.
    for k in direct {
        match sdk.put(k, value("strict", k)) {
            Err(ClientError::Server { code, message }) => {
                assert_eq!(code, ErrorCode::UNAVAILABLE, "PUT {k} at ALL: {message}");
                assert!(
                    message.contains("write at ALL unavailable: 1 replica(s) believed alive, 2 required"),
                    "PUT {k} at ALL without sloppy quorum: unclear message {message:?}"
                );
            }
            other => panic!(
                "PUT {k} at ALL with node {VICTIM} down was not refused: {other:?}\n{}",
                c.log_tails()
            ),
        }
    }
    let mut strict = c.coordinator(4, Consistency::All);
    for k in forwarded {
        let v = value("strict", k);
        match strict.call(put(k, &v)) {
            Reply::Error(code, message) => {
                assert_eq!(code, ErrorCode::UNAVAILABLE, "PUT {k} at ALL via node 4: {message}");
                assert!(
                    message.contains("write at ALL unavailable"),
                    "PUT {k} at ALL via node 4: unclear message {message:?}"
                );
            }
            other => panic!(
                "PUT {k} at ALL via node 4 with node {VICTIM} down: {other:?}\n{}",
                c.log_tails()
            ),
        }
    }

    // Sloppy: the down replica's copy goes to a fallback as a hint.
    let sloppy = sdk.with_sloppy_quorum(true);
    assert!(sloppy.sloppy_quorum());
    for k in direct {
        if let Err(e) = sloppy.put(k, value("sloppy", k)) {
            panic!("PUT {k} at ALL with sloppy quorum: {e}\n{}", c.log_tails());
        }
    }
    let mut via4 = c.coordinator(4, Consistency::All).with_sloppy_quorum(true);
    for k in forwarded {
        let v = value("sloppy", k);
        let r = via4.call(put(k, &v));
        assert_eq!(
            r,
            Reply::Ok,
            "PUT {k} at ALL with sloppy quorum via node 4\n{}",
            c.log_tails()
        );
    }
    drop((sdk, sloppy, strict, via4));

    for k in &keys {
        let live = c.local_values(LIVE, k.as_bytes()).unwrap_or_default();
        // The refused strict write reached the coordinator's own replica
        // (it writes first); the sloppy one, made from that record, replaced it.
        assert_eq!(
            live,
            [value("sloppy", k)],
            "node {LIVE} (a replica) should hold the sloppy write of {k}"
        );
        for f in FALLBACKS {
            // A fallback keeps a hint; it must not take the key into its own data.
            assert_eq!(
                c.local_record(f, k.as_bytes()),
                None,
                "fallback node {f} merged {k} instead of keeping a hint"
            );
        }
    }

    // Only a hint that reached the fallback's disk survives this.
    for f in FALLBACKS {
        c.restart(f);
    }
    for f in FALLBACKS {
        await_seen(&c, f, true);
    }
    c.restart(VICTIM);
    let took = c.await_until(
        CONVERGE,
        &format!("node {VICTIM} holds every sloppy write (replayed from the fallbacks' hints)"),
        || {
            let missing: Vec<&String> = keys
                .iter()
                .filter(|k| {
                    let held = c.try_local_record(VICTIM, k.as_bytes()).ok().flatten();
                    held.is_none_or(|r| live_values(&r) != [value("sloppy", k)])
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {KEYS} missing, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(3)]
                ))
            }
        },
    );
    eprintln!("hints replayed to node {VICTIM} within {took:?} of its restart");
    for k in &keys {
        for f in FALLBACKS {
            assert_eq!(
                c.local_record(f, k.as_bytes()),
                None,
                "fallback node {f} holds {k} as data after replaying its hint"
            );
        }
    }
}

fn put<'a>(key: &'a str, value: &'a [u8]) -> Op<'a> {
    Op::Put {
        key: key.as_bytes(),
        value,
        ttl_ms: 0,
        condition: Condition::Always,
    }
}

/// The harness's choice of keys depends on the ring the nodes build; this
/// pins the two facts the cluster test relies on without starting it.
#[test]
fn chosen_keys_live_on_the_live_node_and_the_victim() {
    let ring = ring();
    let keys = keys(&ring);
    for k in &keys {
        let r = replicas(&ring, k);
        assert!(r.contains(&LIVE) && r.contains(&VICTIM), "{k}: {r:?}");
        assert!(FALLBACKS.iter().all(|f| !r.contains(f)));
    }
}
