//! A rolling restart under load with real processes (issue 7, acceptance
//! item 5): a 3-node cluster, RF 3, under a continuous QUORUM write and read
//! load from SDK clients; each node in turn is drained (node 1 by `corekv
//! drain`, the others by SIGTERM), exits 0, starts again on its data, and the
//! test waits until the others see it NORMAL and hold no hints for it before
//! the next. Every request the load made either succeeded or was retried by
//! the SDK until it did (zero failures reach the load), every read saw the
//! latest acknowledged value of its key, and at the end every acknowledged
//! write reads back with its latest value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_net::client::{blocking, ClientOptions};
use corekv_net::msg::Consistency;
use corekv_tests::cluster::TestCluster;

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const LOADERS: usize = 4;
const KEYS_PER_LOADER: usize = 200;
const SETTLE: Duration = Duration::from_secs(60);

fn key(loader: usize, k: usize) -> String {
    format!("rr:{loader}:{k:04}")
}

fn value(loader: usize, k: usize, seq: u64) -> Vec<u8> {
    format!("{seq}|{}", key(loader, k)).into_bytes()
}

/// What one loader did.
#[derive(Debug, Default)]
struct Tally {
    writes: u64,
    reads: u64,
    /// Requests that returned an error to the load (after the SDK's retries).
    failures: Vec<String>,
    /// Reads that did not return the key's latest acknowledged value.
    stale: Vec<String>,
    /// The latest acknowledged sequence number of each key (0: never written).
    acked: Vec<u64>,
    /// Retries the SDK made (each one a failed attempt that was sent again).
    retries: u64,
}

/// Writes its keys in turn at QUORUM, each with a growing sequence number,
/// and reads a key after each write; it is the only writer of its keys, so
/// each read must return the key's latest acknowledged value.
fn load(loader: usize, sdk: blocking::Client, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally {
        acked: vec![0; KEYS_PER_LOADER],
        ..Tally::default()
    };
    let mut seq = 0u64;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let k = i % KEYS_PER_LOADER;
        seq += 1;
        match sdk.put(key(loader, k), value(loader, k, seq)) {
            Ok(()) => {
                t.writes += 1;
                t.acked[k] = seq;
            }
            Err(e) => t.failures.push(format!("PUT {}: {e}", key(loader, k))),
        }
        // A key written a moment ago, or many writes ago.
        let r = (i * 7 + 3) % KEYS_PER_LOADER;
        match sdk.get(key(loader, r)) {
            Ok(got) => {
                t.reads += 1;
                let want = (t.acked[r] > 0).then(|| value(loader, r, t.acked[r]));
                if got.map(|v| v.value) != want {
                    t.stale
                        .push(format!("GET {} did not return seq {}", key(loader, r), t.acked[r]));
                }
            }
            Err(e) => t.failures.push(format!("GET {}: {e}", key(loader, r))),
        }
        i += 1;
    }
    t.retries = sdk.as_async().retries_made();
    t
}

/// Waits until every other node sees node `i` NORMAL and holds no hint for it.
fn await_rejoined(c: &TestCluster, i: usize) -> Duration {
    let others: Vec<usize> = (1..=c.len()).filter(|&j| j != i).collect();
    c.await_until(SETTLE, &format!("node {i} back NORMAL, its hints delivered"), || {
        for &j in &others {
            match c.status_seen(j, i)? {
                Some(s) if s == "NORMAL" => {}
                other => return Err(format!("node {j} sees node {i} as {other:?}")),
            }
            let pending = c.hints_for(j, i)?;
            if pending > 0 {
                return Err(format!("node {j} still holds {pending} hints for node {i}"));
            }
        }
        Ok(())
    })
}

#[test]
fn a_rolling_restart_under_quorum_load_loses_nothing() {
    let t0 = Instant::now();
    let mut c = TestCluster::start(BIN, TMP, "rolling", 3, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..LOADERS)
        .map(|l| {
            let seeds: Vec<String> = (1..=3).map(|i| c.addr(i)).collect();
            let options = ClientOptions {
                consistency: Consistency::Quorum,
                timeout: Duration::from_secs(5),
                ..ClientOptions::default()
            };
            let sdk = blocking::Client::connect(&seeds, options).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || load(l, sdk, stop))
        })
        .collect();
    // Some load before the first restart.
    std::thread::sleep(Duration::from_secs(2));

    for i in 1..=3 {
        let t = Instant::now();
        if i == 1 {
            let out = c.cli_ok(i, &["drain"]);
            assert!(out.contains("draining"), "{out}");
            let status = c.await_exit(i);
            assert!(status.success(), "node {i} exited {status} after `corekv drain`");
        } else {
            let status = c.sigterm(i);
            assert!(status.success(), "node {i} exited {status} after SIGTERM");
        }
        let drained = t.elapsed();
        // The peers took it for down from its announcement.
        let seen_down = c.await_until(SETTLE, &format!("the others see node {i} DOWN"), || {
            for j in (1..=3).filter(|&j| j != i) {
                match c.status_seen(j, i)? {
                    Some(s) if s == "DOWN" => {}
                    other => return Err(format!("node {j} sees node {i} as {other:?}")),
                }
            }
            Ok(())
        });
        // Some load while it is down: writes for it become hints.
        std::thread::sleep(Duration::from_secs(1));
        c.restart(i);
        let back = await_rejoined(&c, i);
        eprintln!(
            "node {i}: drained and exited in {drained:?}, seen DOWN {seen_down:?} later, \
             back NORMAL with hints delivered {back:?} after restarting"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = loaders.into_iter().map(|h| h.join().unwrap()).collect();

    let writes: u64 = tallies.iter().map(|t| t.writes).sum();
    let reads: u64 = tallies.iter().map(|t| t.reads).sum();
    let retries: u64 = tallies.iter().map(|t| t.retries).sum();
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    let stale: Vec<&String> = tallies.iter().flat_map(|t| &t.stale).collect();
    eprintln!(
        "load: {writes} writes and {reads} reads acknowledged at QUORUM, {retries} retries by the SDK, \
         {} unrecovered failures, {} stale reads",
        failures.len(),
        stale.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed after the SDK's retries: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        c.log_tails()
    );
    assert!(
        stale.is_empty(),
        "{} reads missed an acknowledged write: {:?}",
        stale.len(),
        &stale[..stale.len().min(10)]
    );
    assert!(writes > 0 && reads > 0, "the load made progress");

    // Every acknowledged write, at ALL.
    let all = c.client(&[1, 2, 3], Consistency::All);
    let mut lost = Vec::new();
    for (l, t) in tallies.iter().enumerate() {
        for (k, &seq) in t.acked.iter().enumerate() {
            if seq == 0 {
                continue;
            }
            let got = all
                .get(key(l, k))
                .unwrap_or_else(|e| panic!("read {} at ALL: {e}", key(l, k)));
            if got.map(|v| v.value) != Some(value(l, k, seq)) {
                lost.push(key(l, k));
            }
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    eprintln!("rolling restart test took {:?}", t0.elapsed());
}
