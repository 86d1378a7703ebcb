//! Backups with real processes (issue 7, acceptance item 4): a snapshot of a
//! 3-node cluster, copied by `corekv backup`, restored by `corekv restore`
//! into a fresh 5-node cluster and into a fresh 3-node one; every key reads
//! back at ALL with the same live values (siblings and expiry times
//! included), deleted and expired keys stay gone, each record lands on RF
//! nodes of the new ring, a second restore changes nothing, and a damaged
//! backup file is refused by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corekv_net::client::{blocking, PutOptions};
use corekv_net::msg::Consistency;
use corekv_tests::cluster::TestCluster;

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const KEYS: usize = 4000;
const WRITERS: usize = 4;
const RF: usize = 3;

/// What a key gets written, by `i % 10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Written three times; the last value stays.
    Overwritten,
    /// Written, then deleted.
    Deleted,
    /// Written with a TTL of an hour.
    LongTtl,
    /// A plain write and two blind writes (empty context): three siblings.
    Siblings,
    /// Written with a TTL that ends before the snapshot.
    Expired,
    /// Written once.
    Plain,
}

fn kind(i: usize) -> Kind {
    match i % 10 {
        0 => Kind::Overwritten,
        1 => Kind::Deleted,
        2 => Kind::LongTtl,
        3 => Kind::Siblings,
        4 => Kind::Expired,
        _ => Kind::Plain,
    }
}

fn key(i: usize) -> String {
    format!("bk:{i:05}")
}

fn value(i: usize, tag: &str) -> Vec<u8> {
    let mut v = format!("{tag} of {}|", key(i)).into_bytes();
    v.resize(64 + (i % 7) * 50, b'.');
    v
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A key's live values as a read at ALL returns them: (value, expiry ms),
/// sorted; empty when deleted, expired or never written.
type Live = Vec<(Vec<u8>, u64)>;

fn client(c: &TestCluster) -> blocking::Client {
    c.client(&[1, 2], Consistency::All)
}

/// Writes every key (in `WRITERS` threads); returns when the short TTLs
/// have run out.
fn write_all(c: &TestCluster) {
    let short_ttl = Duration::from_millis(1500);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let sdk = client(c);
            s.spawn(move || {
                for i in (w..KEYS).step_by(WRITERS) {
                    let k = key(i);
                    let put = |v: &[u8], ttl_ms| {
                        sdk.put_with(
                            &k,
                            v,
                            PutOptions {
                                ttl_ms,
                                ..PutOptions::default()
                            },
                        )
                        .unwrap_or_else(|e| panic!("put {k}: {e}"));
                    };
                    match kind(i) {
                        Kind::Overwritten => {
                            for tag in ["v1", "v2", "v3"] {
                                put(&value(i, tag), 0);
                            }
                        }
                        Kind::Deleted => {
                            put(&value(i, "doomed"), 0);
                            sdk.delete(&k).unwrap_or_else(|e| panic!("delete {k}: {e}"));
                        }
                        Kind::LongTtl => put(&value(i, "ttl"), 3_600_000),
                        Kind::Siblings => {
                            put(&value(i, "first"), 0);
                            for tag in ["blind-a", "blind-b"] {
                                sdk.put_with_context(&k, value(i, tag), &[], 0)
                                    .unwrap_or_else(|e| panic!("blind put {k}: {e}"));
                            }
                        }
                        Kind::Expired => put(&value(i, "short"), short_ttl.as_millis() as u64),
                        Kind::Plain => put(&value(i, "plain"), 0),
                    }
                }
            });
        }
    });
    // Every short TTL started before now (the server's clock, this machine's).
    std::thread::sleep(short_ttl + Duration::from_millis(200));
}

/// Every key's live values at ALL.
fn read_all(c: &TestCluster) -> BTreeMap<String, Live> {
    let mut out = BTreeMap::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let sdk = client(c);
                s.spawn(move || {
                    (w..KEYS)
                        .step_by(WRITERS)
                        .map(|i| {
                            let k = key(i);
                            let v = sdk.get_versions(&k).unwrap_or_else(|e| panic!("read {k} at ALL: {e}"));
                            let mut live: Live = v
                                .map(|v| v.siblings.into_iter().map(|s| (s.value, s.expiry_ms)).collect())
                                .unwrap_or_default();
                            live.sort();
                            (k, live)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().unwrap());
        }
    });
    out
}

/// The source's read-back is what was written.
fn check_written(read: &BTreeMap<String, Live>) {
    for i in 0..KEYS {
        let live = &read[&key(i)];
        let values: Vec<&[u8]> = live.iter().map(|(v, _)| v.as_slice()).collect();
        match kind(i) {
            Kind::Overwritten => assert_eq!(values, [value(i, "v3").as_slice()], "{}", key(i)),
            Kind::Deleted | Kind::Expired => assert!(values.is_empty(), "{}: {live:?}", key(i)),
            Kind::LongTtl => {
                assert_eq!(values, [value(i, "ttl").as_slice()], "{}", key(i));
                assert!(live[0].1 > now_ms(), "{} keeps its expiry", key(i));
            }
            Kind::Siblings => {
                let mut want = [value(i, "first"), value(i, "blind-a"), value(i, "blind-b")];
                want.sort();
                assert_eq!(values, want.iter().map(Vec::as_slice).collect::<Vec<_>>(), "{}", key(i));
            }
            Kind::Plain => assert_eq!(values, [value(i, "plain").as_slice()], "{}", key(i)),
        }
    }
}

fn compare(want: &BTreeMap<String, Live>, got: &BTreeMap<String, Live>, what: &str) {
    let diffs: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .take(5)
        .map(|(k, v)| format!("{k}: backed up {v:?}, read {:?}", got.get(k)))
        .collect();
    assert!(diffs.is_empty(), "{what}: keys differ: {diffs:?}");
    assert_eq!(want.len(), got.len());
}

/// Every node's own record of every key, by node.
fn local_records(c: &TestCluster) -> Vec<Vec<Option<corekv_shard::versioning::Record>>> {
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let ks: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    (1..=c.len())
        .map(|i| c.try_local_records(i, &ks).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn restore(c: &TestCluster, dir: &Path) -> String {
    let t0 = Instant::now();
    let out = c.cli_ok(1, &["restore", "--from", dir.to_str().unwrap(), "--timeout", "300"]);
    let summary = out.lines().last().unwrap_or_default().to_owned();
    assert!(
        summary.starts_with("restore complete:"),
        "restore did not end with its summary:\n{out}"
    );
    eprintln!("restore into {} nodes took {:?}: {summary}", c.len(), t0.elapsed());
    summary
}

fn largest_table(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    for node in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(subs) = std::fs::read_dir(node.path()) else {
            continue;
        };
        for sub in subs.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                let size = f.metadata().unwrap().len();
                if p.extension().is_some_and(|e| e == "sst") && best.as_ref().is_none_or(|(s, _)| size > *s) {
                    best = Some((size, p));
                }
            }
        }
    }
    best.expect("the backup holds tables").1
}

#[test]
fn a_backup_of_three_nodes_restores_into_five_and_into_three() {
    let t0 = Instant::now();
    let root = PathBuf::from(TMP).join(format!("backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join("bk");

    // The source: 3 nodes, RF 3, causal.
    let src = TestCluster::start(BIN, TMP, "backup-src", 3, &[]);
    write_all(&src);
    let before = read_all(&src);
    check_written(&before);
    let out = src.cli_ok(1, &["snapshot", "--name", "snap1"]);
    assert!(out.contains("taken on 3 of 3 nodes"), "{out}");
    let listed = src.cli_ok(2, &["snapshot", "--list"]);
    assert_eq!(
        listed.matches(" snap1 ").count(),
        3,
        "every node lists snap1:\n{listed}"
    );
    let out = src.cli_ok(2, &["backup", "--name", "snap1", "--to", dir.to_str().unwrap()]);
    let done = out.lines().last().unwrap_or_default();
    assert!(done.contains("complete: 3 nodes") && done.contains("verified"), "{out}");
    eprintln!("{done}");
    // A second snapshot of the same name is refused; deleting frees it.
    let (ok, _, err) = src.cli(1, &["snapshot", "--name", "snap1"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let out = src.cli_ok(3, &["snapshot", "--delete", "snap1"]);
    assert_eq!(out.matches("snapshot snap1 deleted").count(), 3, "{out}");
    drop(src);

    // Into 5 nodes: every key reads back the same, each record on RF nodes.
    let five = TestCluster::start(BIN, TMP, "backup-five", 5, &[]);
    let summary = restore(&five, &dir);
    // Each node's copy is sent and merged: a write acknowledged by a quorum
    // may be on only some of the backed-up nodes.
    assert!(
        summary.contains(&format!("{} records", KEYS * RF)),
        "every key's record from each of its {RF} replicas: {summary}"
    );
    compare(&before, &read_all(&five), "restored into 5 nodes");
    let first = local_records(&five);
    for (i, k) in (0..KEYS).map(key).enumerate() {
        let holders = first.iter().filter(|node| node[i].is_some()).count();
        assert_eq!(holders, RF, "{k} is on {holders} of the 5 nodes, not RF = {RF}");
    }
    // Twice: the same state on every node.
    restore(&five, &dir);
    let second = local_records(&five);
    assert!(first == second, "a second restore changed some node's records");
    drop(five);

    // A damaged file is refused by name, before anything is written.
    let damaged = root.join("damaged");
    let status = std::process::Command::new("cp")
        .args(["-r", dir.to_str().unwrap(), damaged.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let victim = largest_table(&damaged);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();

    // Into 3 fresh nodes.
    let three = TestCluster::start(BIN, TMP, "backup-three", 3, &[]);
    let (ok, out, err) = three.cli(1, &["restore", "--from", damaged.to_str().unwrap()]);
    assert!(!ok, "a damaged backup restored: {out}");
    assert!(
        err.contains("is damaged") && err.contains(victim.to_str().unwrap()),
        "the error does not name the damaged file {}: {err}",
        victim.display()
    );
    restore(&three, &dir);
    compare(&before, &read_all(&three), "restored into 3 nodes");
    drop(three);

    let _ = std::fs::remove_dir_all(&root);
    eprintln!("backup test: {KEYS} keys, took {:?}", t0.elapsed());
}
