//! Table tests on both I/O backends, against a sorted-vector oracle, plus
//! damaged-file loops on the simulated disk.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::meta::{Footer, MetaHandle, FOOTER_LEN};
use super::*;
use crate::cache::BlockCache;
use crate::error::Error;
use crate::format::{cmp_internal, cmp_user, encode_body, Kind, SeqNo, Token};
use crate::io::Fs;

type Ent = (Token, Vec<u8>, SeqNo, Vec<u8>);

pub(crate) fn run<F: std::future::Future<Output = ()> + 'static>(f: F) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(f);
}

/// A directory on the real disk (tmpfs has no O_DIRECT), unique per test and
/// process, removed when dropped (also when the test panics).
pub(crate) struct RealDir(pub(crate) PathBuf);

impl RealDir {
    pub(crate) fn new(name: &str) -> RealDir {
        let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-data"))
            .join(format!("sst-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        RealDir(d)
    }
}

impl Drop for RealDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Random entries in table order: shared tokens (hash tags), several versions
/// per key, tombstones, expiry times, compressible and random values.
fn gen_entries(rng: &mut SmallRng, keys: usize) -> Vec<Ent> {
    let tokens: Vec<Token> = (0..40)
        .map(|i| match i {
            0 => 0,
            1 => u64::MAX,
            _ => rng.gen(),
        })
        .collect();
    let mut users = BTreeSet::new();
    while users.len() < keys {
        let t = if rng.gen_bool(0.7) {
            tokens[rng.gen_range(0..tokens.len())]
        } else {
            rng.gen()
        };
        let len = rng.gen_range(1..24);
        let k: Vec<u8> = (0..len)
            .map(|_| {
                if rng.gen_bool(0.9) {
                    b"abcxyz0189:"[rng.gen_range(0..11)]
                } else {
                    rng.gen()
                }
            })
            .collect();
        users.insert((t, k));
    }
    let mut seq: SeqNo = rng.gen_range(1..1000);
    let mut out = Vec::new();
    let mut users: Vec<_> = users.into_iter().collect();
    // Assign sequence numbers in random key order, as writes would arrive.
    for i in (1..users.len()).rev() {
        users.swap(i, rng.gen_range(0..=i));
    }
    for (t, k) in users {
        for _ in 0..rng.gen_range(1..=4) {
            seq += rng.gen_range(1..5);
            let mut body = Vec::new();
            let meta: Vec<u8> = (0..rng.gen_range(0..8)).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.15) {
                encode_body(Kind::Delete, rng.gen_range(1..2_000_000_000_000), &meta, &[], &mut body);
            } else {
                let vlen = rng.gen_range(0..300);
                let value: Vec<u8> = if rng.gen_bool(0.5) {
                    (0..vlen).map(|i| b"value-"[i % 6]).collect()
                } else {
                    (0..vlen).map(|_| rng.gen()).collect()
                };
                let exp = if rng.gen_bool(0.3) {
                    rng.gen_range(1..2_000_000_000_000)
                } else {
                    0
                };
                encode_body(Kind::Put, exp, &meta, &value, &mut body);
            }
            out.push((t, k.clone(), seq, body));
        }
    }
    out.sort_by(|a, b| cmp_internal(a.0, &a.1, a.2, b.0, &b.1, b.2));
    out
}

async fn build(fs: &Fs, path: &Path, entries: &[Ent], opts: TableOptions, file_no: u64) -> TableMeta {
    let f = fs.create(path).await.unwrap();
    let mut b = TableBuilder::new(f, opts, file_no);
    for (t, k, s, body) in entries {
        b.add(*t, k, *s, body).await.unwrap();
    }
    let est = b.estimated_size();
    let meta = b.finish().await.unwrap();
    assert!(
        est.abs_diff(meta.size) < meta.size / 10 + 8192,
        "estimate {est} vs {}",
        meta.size
    );
    meta
}

fn expected_meta(entries: &[Ent], file_no: u64, size: u64, created_ms: u64) -> TableMeta {
    let first = &entries[0];
    let last = &entries[entries.len() - 1];
    TableMeta {
        file_no,
        size,
        entries: entries.len() as u64,
        tombstones: entries.iter().filter(|e| e.3[0] == Kind::Delete as u8).count() as u64,
        smallest: (first.0, first.1.clone(), first.2),
        largest: (last.0, last.1.clone(), last.2),
        min_seq: entries.iter().map(|e| e.2).min().unwrap(),
        max_seq: entries.iter().map(|e| e.2).max().unwrap(),
        max_time: entries
            .iter()
            .map(|e| crate::format::decode_body(&e.3).unwrap().time)
            .max()
            .unwrap(),
        created_ms,
    }
}

/// Position of the first entry at or after the internal key target.
fn lower_bound(entries: &[Ent], t: Token, k: &[u8], s: SeqNo) -> usize {
    entries.partition_point(|e| cmp_internal(e.0, &e.1, e.2, t, k, s) == std::cmp::Ordering::Less)
}

async fn check_table(fs: &Fs, path: &Path, entries: &[Ent], meta: &TableMeta, rng: &mut SmallRng) {
    let file = fs.open(path, false).await.unwrap();
    // A small cache, so reads miss, evict and hit.
    let cache = Rc::new(BlockCache::new(64 * 1024));
    let t = Table::open(file, meta.file_no, cache.clone()).await.unwrap();
    assert_eq!(&t.meta(), meta);

    // Newest version of every key.
    let mut newest: BTreeMap<(Token, Vec<u8>), (SeqNo, Vec<u8>)> = BTreeMap::new();
    for e in entries {
        newest.entry((e.0, e.1.clone())).or_insert((e.2, e.3.clone()));
    }
    for ((tok, k), v) in &newest {
        assert!(t.may_contain(*tok, k));
        assert_eq!(t.get(*tok, k).await.unwrap().as_ref(), Some(v), "get {tok:x} {k:?}");
    }
    // Snapshot reads: the newest version at or below a random seq.
    for _ in 0..500 {
        let e = &entries[rng.gen_range(0..entries.len())];
        let snap = e.2 - rng.gen_range(0..3).min(e.2);
        let i = lower_bound(entries, e.0, &e.1, snap);
        let want = entries
            .get(i)
            .filter(|x| x.0 == e.0 && x.1 == e.1)
            .map(|x| (x.2, x.3.clone()));
        let got = t
            .get_ref_at(e.0, &e.1, snap)
            .await
            .unwrap()
            .map(|f| (f.seq, f.body().to_vec()));
        assert_eq!(got, want);
    }
    // Absent keys.
    let before = t.stats();
    let mut absent = 0;
    for i in 0..2000 {
        let e = &entries[rng.gen_range(0..entries.len())];
        let (tok, mut k) = (if i % 2 == 0 { e.0 } else { rng.gen() }, e.1.clone());
        k.push(rng.gen());
        if newest.contains_key(&(tok, k.clone())) {
            continue;
        }
        absent += 1;
        assert_eq!(t.get(tok, &k).await.unwrap(), None);
    }
    let s = t.stats();
    assert_eq!(s.bloom_checks - before.bloom_checks, absent);
    assert!(s.bloom_negatives - before.bloom_negatives >= absent * 95 / 100, "{s:?}");

    // Full iteration equals the input.
    let mut it = TableIter::new(t.clone());
    it.seek_to_first().await.unwrap();
    let mut i = 0;
    while it.valid() {
        let e = &entries[i];
        assert_eq!(
            (it.token(), it.key(), it.seq(), it.body()),
            (e.0, e.1.as_slice(), e.2, e.3.as_slice())
        );
        i += 1;
        it.advance().await.unwrap();
    }
    assert_eq!(i, entries.len());
    it.advance().await.unwrap();
    assert!(!it.valid());

    // Seeks to existing and random targets, then a few steps on.
    let mut it = TableIter::new(t.clone());
    it.set_fill_cache(false);
    for n in 0..600 {
        let (tok, key) = match n % 3 {
            0 => {
                let e = &entries[rng.gen_range(0..entries.len())];
                (e.0, e.1.clone())
            }
            1 => {
                let e = &entries[rng.gen_range(0..entries.len())];
                let mut k = e.1.clone();
                if rng.gen_bool(0.5) {
                    k.pop();
                } else {
                    k.push(rng.gen());
                }
                (e.0, k)
            }
            _ => (rng.gen(), vec![rng.gen()]),
        };
        it.seek(tok, &key).await.unwrap();
        let first = entries.partition_point(|e| cmp_user(e.0, &e.1, tok, &key) == std::cmp::Ordering::Less);
        for want in first..first + 3 {
            match entries.get(want) {
                Some(e) => {
                    assert!(it.valid());
                    assert_eq!((it.token(), it.key(), it.seq()), (e.0, e.1.as_slice(), e.2));
                    assert_eq!(it.body(), e.3.as_slice());
                }
                None => assert!(!it.valid()),
            }
            it.advance().await.unwrap();
        }
    }
    it.seek(u64::MAX, &[0xff; 40]).await.unwrap();
    assert!(!it.valid());
    let cs = cache.stats();
    assert!(cs.hits > 0 && cs.misses > 0 && cs.evictions > 0, "{cs:?}");
    assert!(cs.bytes_used <= cs.capacity);
}

async fn matrix(fs: Fs, dir: PathBuf, seed: u64) {
    fs.prepare_dir(&dir).await.unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut file_no = 0;
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
        for block_size in [4 * 1024, 16 * 1024] {
            file_no += 1;
            let entries = gen_entries(&mut rng, 3000);
            let opts = TableOptions {
                block_size,
                compression,
                created_ms: 1_700_000_000_000 + file_no,
                ..TableOptions::default()
            };
            opts.validate().unwrap();
            let path = dir.join(format!("{file_no:06}.sst"));
            let meta = build(&fs, &path, &entries, opts.clone(), file_no).await;
            assert_eq!(meta, expected_meta(&entries, file_no, meta.size, opts.created_ms));
            assert_eq!(fs.open(&path, false).await.unwrap().size().await.unwrap(), meta.size);
            check_table(&fs, &path, &entries, &meta, &mut rng).await;
        }
    }
}

#[test]
fn tables_roundtrip_on_sim_disk() {
    run(matrix(Fs::sim(11), PathBuf::from("/db"), 11));
}

#[test]
fn tables_roundtrip_on_real_disk() {
    let dir = RealDir::new("roundtrip");
    let d = dir.0.clone();
    run(async move {
        matrix(Fs::real(), d.clone(), 12).await;
        // A damaged footer on the real disk is a typed error too.
        let path = d.join("000001.sst");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let f = Fs::real().open(&path, false).await.unwrap();
        let e = Table::open(f, 1, Rc::new(BlockCache::new(1 << 20))).await.unwrap_err();
        assert!(matches!(e, Error::Corruption { .. }), "{e}");
        assert!(e.to_string().contains("000001.sst"), "{e}");
    });
}

#[test]
fn options_are_checked_and_empty_tables_refused() {
    let bad = TableOptions {
        block_size: 1024,
        ..TableOptions::default()
    };
    assert!(bad.validate().is_err());
    assert!(TableOptions {
        compression: Compression::Zstd(40),
        ..TableOptions::default()
    }
    .validate()
    .is_err());
    run(async {
        let fs = Fs::sim(1);
        let dir = Path::new("/db");
        fs.prepare_dir(dir).await.unwrap();
        let f = fs.create(&dir.join("1.sst")).await.unwrap();
        let e = TableBuilder::new(f, TableOptions::default(), 1)
            .finish()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)));
    });
}

/// Opens, reads every key and walks the whole table; returns the errors met.
/// Every read that succeeds must return what was written.
async fn exercise(fs: &Fs, path: &Path, entries: &[Ent]) -> Vec<Error> {
    let mut errs = Vec::new();
    let file = fs.open(path, false).await.unwrap();
    let t = match Table::open(file, 1, Rc::new(BlockCache::new(1 << 20))).await {
        Ok(t) => t,
        Err(e) => {
            errs.push(e);
            return errs;
        }
    };
    let mut seen = BTreeSet::new();
    for e in entries {
        if !seen.insert((e.0, e.1.clone())) {
            continue;
        }
        match t.get(e.0, &e.1).await {
            Ok(r) => assert_eq!(r, Some((e.2, e.3.clone()))),
            Err(err) => errs.push(err),
        }
    }
    let mut it = TableIter::new(t);
    let mut i = 0;
    let mut r = it.seek_to_first().await;
    loop {
        if let Err(e) = r {
            errs.push(e);
            break;
        }
        if !it.valid() {
            assert_eq!(i, entries.len());
            break;
        }
        let e = &entries[i];
        assert_eq!(
            (it.token(), it.key(), it.seq(), it.body()),
            (e.0, e.1.as_slice(), e.2, e.3.as_slice())
        );
        i += 1;
        r = it.advance().await;
    }
    errs
}

fn assert_typed(errs: &[Error], path: &Path) {
    for e in errs {
        assert!(e.is_corruption(), "untyped error: {e:?}");
        assert!(
            e.to_string().contains(&*path.to_string_lossy()),
            "error does not name the file: {e}"
        );
    }
}

#[test]
fn damaged_tables_give_typed_errors_never_panics() {
    run(async {
        let mut flips_caught = 0;
        for seed in 0..40u64 {
            let fs = Fs::sim(seed);
            let Fs::Sim(sim) = &fs else { unreachable!() };
            let dir = Path::new("/db");
            fs.prepare_dir(dir).await.unwrap();
            let path = dir.join("000007.sst");
            let mut rng = SmallRng::seed_from_u64(seed);
            let entries = gen_entries(&mut rng, 150);
            let compression = [Compression::None, Compression::Lz4, Compression::Zstd(1)][seed as usize % 3];
            let opts = TableOptions {
                compression,
                ..TableOptions::default()
            };
            build(&fs, &path, &entries, opts, 7).await;
            let orig = sim.read_file(&path).unwrap();
            assert!(exercise(&fs, &path, &entries).await.is_empty());
            let size = orig.len() as u64;

            // Bit flips: CRC32C catches every 1-3 bit error inside one block.
            for _ in 0..15 {
                for _ in 0..rng.gen_range(1..=3) {
                    sim.flip_bit(&path, rng.gen_range(0..size), rng.gen()).unwrap();
                }
                let errs = exercise(&fs, &path, &entries).await;
                assert!(!errs.is_empty(), "seed {seed}: a flipped bit went unnoticed");
                assert_typed(&errs, &path);
                flips_caught += 1;
                sim.overwrite_file(&path, &orig).unwrap();
            }
            // Truncations.
            for _ in 0..5 {
                sim.truncate_file(&path, rng.gen_range(0..size)).unwrap();
                let errs = exercise(&fs, &path, &entries).await;
                assert!(!errs.is_empty());
                assert_typed(&errs, &path);
                sim.overwrite_file(&path, &orig).unwrap();
            }
            // A garbage footer.
            let mut g = orig.clone();
            let n = g.len();
            rng.fill(&mut g[n - FOOTER_LEN..]);
            sim.overwrite_file(&path, &g).unwrap();
            let errs = exercise(&fs, &path, &entries).await;
            assert!(matches!(errs.as_slice(), [Error::Corruption { .. }]), "{errs:?}");
            assert_typed(&errs, &path);
            // A well-formed footer of another version.
            let mut g = orig.clone();
            let mut p = n - FOOTER_LEN;
            let f = Footer::decode(&g[p..]).unwrap();
            let v2 = Footer { version: 2, ..f }.encode();
            g[p..].copy_from_slice(&v2);
            sim.overwrite_file(&path, &g).unwrap();
            let errs = exercise(&fs, &path, &entries).await;
            assert!(
                matches!(
                    errs.as_slice(),
                    [Error::UnsupportedVersion {
                        found: 2,
                        supported: 1,
                        ..
                    }]
                ),
                "{errs:?}"
            );
            // A footer whose handles point outside the file, checksum valid.
            let mut g = orig.clone();
            let bad = Footer {
                index: MetaHandle {
                    offset: u64::MAX - 3,
                    len: 100,
                },
                ..f
            }
            .encode();
            g[p..].copy_from_slice(&bad);
            sim.overwrite_file(&path, &g).unwrap();
            let errs = exercise(&fs, &path, &entries).await;
            assert!(matches!(errs.as_slice(), [Error::Corruption { .. }]), "{errs:?}");
            // Random garbage over a random range (a torn or misdirected write).
            for _ in 0..5 {
                let mut g = orig.clone();
                let a = rng.gen_range(0..n);
                p = (a + rng.gen_range(1..4096)).min(n);
                rng.fill(&mut g[a..p]);
                sim.overwrite_file(&path, &g).unwrap();
                let errs = exercise(&fs, &path, &entries).await;
                assert_typed(&errs, &path);
            }
            sim.overwrite_file(&path, &orig).unwrap();
            assert!(exercise(&fs, &path, &entries).await.is_empty());
        }
        assert_eq!(flips_caught, 40 * 15);
    });
}

#[test]
fn read_path_bit_flips_are_caught_by_checksums() {
    run(async {
        let fs = Fs::sim(99);
        let Fs::Sim(sim) = &fs else { unreachable!() };
        let dir = Path::new("/db");
        fs.prepare_dir(dir).await.unwrap();
        let path = dir.join("000001.sst");
        let mut rng = SmallRng::seed_from_u64(99);
        let entries = gen_entries(&mut rng, 500);
        build(&fs, &path, &entries, TableOptions::default(), 1).await;
        sim.set_faults(crate::io::sim::Faults {
            read_bitflip: 0.3,
            ..Default::default()
        });
        let mut errors = 0;
        for _ in 0..20 {
            let errs = exercise(&fs, &path, &entries).await;
            assert_typed(&errs, &path);
            errors += errs.len();
        }
        assert!(errors > 0);
    });
}
