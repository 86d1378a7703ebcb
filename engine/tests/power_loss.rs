//! Power-loss test on the simulated disk.
//!
//! Concurrent writers run until the power goes off at a random I/O operation;
//! the disk then loses every unsynced byte except a random prefix of the
//! writes in flight, the last of them torn. After recovery:
//! - every acknowledged write (sync mode) reads back, unless a later write to
//!   the same key (acknowledged or in flight) replaced it;
//! - nothing unacknowledged appears half-written (every value read is one that
//!   some writer wrote, whole);
//! - a batch is all there or not at all;
//! - recovery never fails and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use corekv_engine::compaction::policy::{CompactionStyle, LeveledOptions};
use corekv_engine::io::{CrashMode, SimFs};
use corekv_engine::{Engine, Fs, Options, WriteBatch};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Default)]
struct History {
    /// Per key: every value written (None = delete), with the sequence number
    /// it was acknowledged at, if it was.
    writes: BTreeMap<Vec<u8>, Vec<(Option<Vec<u8>>, Option<u64>)>>,
    /// Batches: (key a, key b, value, acknowledged).
    batches: Vec<(Vec<u8>, Vec<u8>, Vec<u8>, bool)>,
}

fn options(fs: Fs, seed: u64) -> Options {
    let mut o = Options::new(fs, PathBuf::from("/db"));
    o.memtable_bytes = 16 << 10;
    o.wal.segment_bytes = 64 << 10;
    o.table.block_size = 4096;
    o.background = seed.is_multiple_of(2);
    o.compaction = CompactionStyle::Leveled(LeveledOptions {
        l0_trigger: 2,
        level_base_bytes: 32 << 10,
        target_file_size_base: 16 << 10,
        ..LeveledOptions::default()
    });
    o
}

fn value_for(key: &[u8], n: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{}:{n}:", String::from_utf8_lossy(key)).into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

async fn one_run(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = Fs::sim(seed);
    let Fs::Sim(sim) = &fs else { unreachable!() };
    let sim: SimFs = sim.clone();
    // Some history before the cut, so recovery covers tables, manifest and WAL.
    let e = Engine::open(options(fs.clone(), seed)).await.unwrap();
    sim.power_off_after(rng.gen_range(20..3_000));
    let hist = Rc::new(RefCell::new(History::default()));
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let e = e.clone();
        let hist = hist.clone();
        let mut r = SmallRng::seed_from_u64(seed * 31 + w);
        tasks.push(glommio::spawn_local(async move {
            for n in 0..100_000u64 {
                let key = format!("k{}", r.gen_range(0..60)).into_bytes();
                let t = common::token(&key);
                match r.gen_range(0..10) {
                    0 => {
                        hist.borrow_mut()
                            .writes
                            .entry(key.clone())
                            .or_default()
                            .push((None, None));
                        let i = hist.borrow().writes[&key].len() - 1;
                        let Ok(seq) = e.delete(t, &key, &[]).await else { return };
                        hist.borrow_mut().writes.get_mut(&key).unwrap()[i].1 = Some(seq);
                    }
                    1 => {
                        let a = format!("ba-{w}-{n}").into_bytes();
                        let b = format!("bb-{w}-{n}").into_bytes();
                        let v = value_for(&a, n, 200);
                        let mut wb = WriteBatch::new();
                        wb.put(common::token(&a), &a, &v, &[], 0);
                        wb.put(common::token(&b), &b, &v, &[], 0);
                        hist.borrow_mut().batches.push((a, b, v, false));
                        let i = hist.borrow().batches.len() - 1;
                        if e.write(wb).await.is_err() {
                            return;
                        }
                        hist.borrow_mut().batches[i].3 = true;
                    }
                    _ => {
                        let v = value_for(&key, seed * 1_000_000 + w * 100_000 + n, r.gen_range(10..900));
                        hist.borrow_mut()
                            .writes
                            .entry(key.clone())
                            .or_default()
                            .push((Some(v.clone()), None));
                        let i = hist.borrow().writes[&key].len() - 1;
                        let Ok(seq) = e.put(t, &key, &v, &[], 0).await else {
                            return;
                        };
                        hist.borrow_mut().writes.get_mut(&key).unwrap()[i].1 = Some(seq);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    // Stop the background tasks (their I/O fails now) before the disk "reboots".
    let _ = e.close().await;
    sim.crash(CrashMode::Random);
    let e = match Engine::open(options(fs.clone(), seed)).await {
        Ok(e) => e,
        Err(err) => panic!("seed {seed}: recovery failed: {err}"),
    };
    let h = std::mem::take(&mut *hist.borrow_mut());
    for (key, writes) in &h.writes {
        let got = e.get(common::token(key), key).await.unwrap().map(|r| r.value);
        // Candidates: the acknowledged write with the highest sequence number,
        // and any write never acknowledged (in flight at the cut: its sequence
        // number is unknown, so it may be newer).
        let last_ack = writes
            .iter()
            .filter_map(|(v, s)| s.map(|s| (s, v.clone())))
            .max_by_key(|(s, _)| *s);
        let mut ok: Vec<Option<Vec<u8>>> = writes
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(v, _)| v.clone())
            .collect();
        match &last_ack {
            Some((_, v)) => ok.push(v.clone()),
            None => ok.push(None), // nothing acknowledged: absent is fine too
        }
        assert!(
            ok.contains(&got),
            "seed {seed}: key {} reads {:?}, last acknowledged write {:?} of {}",
            String::from_utf8_lossy(key),
            got.as_ref()
                .map(|v| String::from_utf8_lossy(&v[..v.len().min(30)]).to_string()),
            last_ack.as_ref().map(|(s, _)| *s),
            writes.len()
        );
        let _ = last_ack;
    }
    for (a, b, v, acked) in &h.batches {
        let ga = e.get(common::token(a), a).await.unwrap().map(|r| r.value);
        let gb = e.get(common::token(b), b).await.unwrap().map(|r| r.value);
        assert_eq!(ga, gb, "seed {seed}: batch half applied");
        if *acked {
            assert!(ga.is_some(), "seed {seed}: acknowledged batch lost");
        }
        if let Some(g) = ga {
            assert_eq!(&g, v, "seed {seed}: batch value damaged");
        }
    }
    e.close().await.unwrap();
}

/// Seeds to run: `COREKV_POWER_SEEDS=START..END` for long runs (CI runs 0..500).
fn seed_range() -> std::ops::Range<u64> {
    std::env::var("COREKV_POWER_SEEDS")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(0..500)
}

#[test]
fn power_loss_500_seeds() {
    common::run(|| async {
        for seed in seed_range() {
            one_run(seed).await;
        }
    });
}
