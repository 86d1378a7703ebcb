//! Damaged files give typed errors naming the file; the engine never panics on
//! bytes from disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod common;

use std::path::{Path, PathBuf};

use corekv_engine::io::SimFs;
use corekv_engine::{Engine, Error, Fs, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn opts(fs: &Fs) -> Options {
    let mut o = Options::new(fs.clone(), PathBuf::from("/db"));
    o.background = false;
    o.memtable_bytes = 64 << 10;
    o
}

/// Writes 2,000 keys and closes: tables, a manifest and a WAL on the disk.
async fn build(seed: u64) -> (Fs, SimFs) {
    let fs = Fs::sim(seed);
    let Fs::Sim(sim) = &fs else { unreachable!() };
    let sim = sim.clone();
    let e = Engine::open(opts(&fs)).await.unwrap();
    for i in 0..2000u32 {
        let k = format!("key{i:05}").into_bytes();
        e.put(common::token(&k), &k, &[i as u8; 100], b"", 0).await.unwrap();
    }
    e.close().await.unwrap();
    (fs, sim)
}

fn files(sim: &SimFs, fs: &Fs, suffix: &str) -> Vec<PathBuf> {
    let _ = sim;
    let dir = Path::new("/db");
    let names = futures_list(fs, dir);
    names
        .into_iter()
        .filter(|n| n.ends_with(suffix) || n.starts_with(suffix))
        .map(|n| dir.join(n))
        .collect()
}

fn futures_list(fs: &Fs, dir: &Path) -> Vec<String> {
    futures::executor::block_on(fs.list(dir)).unwrap()
}

/// Opens and reads everything; returns the first error, checking that every
/// successful read is correct.
async fn open_and_read(fs: &Fs) -> Result<(), Error> {
    let e = Engine::open(opts(fs)).await?;
    for i in 0..2000u32 {
        let k = format!("key{i:05}").into_bytes();
        if let Some(r) = e.get(common::token(&k), &k).await? {
            assert_eq!(r.value, vec![i as u8; 100], "a damaged byte was returned as data");
        }
    }
    e.close().await
}

#[test]
fn flipped_bits_in_tables_are_detected() {
    common::run(|| async {
        let mut detected = 0;
        for seed in 0..60u64 {
            let (fs, sim) = build(seed).await;
            let ssts = files(&sim, &fs, ".sst");
            assert!(!ssts.is_empty());
            let mut rng = SmallRng::seed_from_u64(seed);
            let victim = &ssts[rng.gen_range(0..ssts.len())];
            let len = sim.read_file(victim).unwrap().len() as u64;
            sim.flip_bit(victim, rng.gen_range(0..len), rng.gen_range(0..8))
                .unwrap();
            match open_and_read(&fs).await {
                Ok(()) => {}
                Err(e) => {
                    assert!(e.is_corruption(), "seed {seed}: {e}");
                    assert!(e.to_string().contains(".sst"), "error must name the file: {e}");
                    detected += 1;
                }
            }
        }
        // Every table byte is covered by a checksum, so each flip is caught
        // (a flip in padding-free tables always lands in a checked block).
        assert_eq!(detected, 60, "every flipped bit must be reported");
    });
}

#[test]
fn truncated_table_and_garbage_manifest_name_the_file() {
    common::run(|| async {
        let (fs, sim) = build(1).await;
        let sst = files(&sim, &fs, ".sst")[0].clone();
        let len = sim.read_file(&sst).unwrap().len() as u64;
        sim.truncate_file(&sst, len / 2).unwrap();
        let e = Engine::open(opts(&fs)).await.unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(e.to_string().contains(&sst.display().to_string()), "{e}");

        let (fs, sim) = build(2).await;
        let m = files(&sim, &fs, "MANIFEST-")[0].clone();
        let mut rng = SmallRng::seed_from_u64(9);
        let garbage: Vec<u8> = (0..5000).map(|_| rng.gen()).collect();
        sim.overwrite_file(&m, &garbage).unwrap();
        let e = Engine::open(opts(&fs)).await.unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(e.to_string().contains("MANIFEST"), "{e}");
    });
}

#[test]
fn damaged_wal_in_the_middle_is_an_error_not_silent_loss() {
    common::run(|| async {
        let fs = Fs::sim(3);
        let Fs::Sim(sim) = &fs else { unreachable!() };
        let sim = sim.clone();
        let mut o = opts(&fs);
        o.memtable_bytes = 64 << 20; // everything stays in the WAL
        let e = Engine::open(o.clone()).await.unwrap();
        for i in 0..500u32 {
            let k = format!("key{i:05}").into_bytes();
            e.put(common::token(&k), &k, &[7u8; 200], b"", 0).await.unwrap();
        }
        e.close().await.unwrap();
        let wal = files(&sim, &fs, "wal-")
            .into_iter()
            .find(|p| sim.read_file(p).unwrap().iter().take(16).any(|b| *b != 0))
            .unwrap();
        sim.flip_bit(&wal, 20_000, 3).unwrap();
        let err = Engine::open(o).await.unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains("wal-"), "{err}");
    });
}

#[test]
fn random_garbage_files_never_panic() {
    common::run(|| async {
        for seed in 0..40u64 {
            let (fs, sim) = build(100 + seed).await;
            let mut rng = SmallRng::seed_from_u64(seed);
            let all: Vec<PathBuf> = futures_list(&fs, Path::new("/db"))
                .into_iter()
                .filter(|n| n != "SENTINEL")
                .map(|n| Path::new("/db").join(n))
                .collect();
            let victim = &all[rng.gen_range(0..all.len())];
            let mut bytes = sim.read_file(victim).unwrap();
            if bytes.is_empty() {
                continue;
            }
            let start = rng.gen_range(0..bytes.len());
            let end = (start + rng.gen_range(1..300)).min(bytes.len());
            for b in &mut bytes[start..end] {
                *b = rng.gen();
            }
            sim.overwrite_file(victim, &bytes).unwrap();
            // Ok (the damage hit bytes past the end of a log) or a typed error; never a panic.
            if let Err(e) = open_and_read(&fs).await {
                assert!(e.is_corruption() || matches!(e, Error::Io { .. }), "seed {seed}: {e}");
            }
        }
    });
}
