//! engine-bench: db_bench-style workloads against one corekv engine on one core.
//!
//! Flags follow RocksDB's db_bench so `scripts/vs_rocksdb.sh` can pass the
//! same parameters to both. Workloads run in order on one database. As in
//! db_bench, `--threads` concurrent workers each do the full `--num` (writes)
//! or `--reads` (reads) operations; here they are glommio tasks on the one
//! pinned core, not OS threads.
//!
//! Keys are db_bench's (the index big-endian, padded with '0' to `--key_size`)
//! and values come from db_bench's generator (see `corekv_bench`), so both
//! stores hold the same bytes. The token passed with each key is xxh3_64 of the
//! key, as the layer above computes it; the engine sorts by (token, key), so a
//! "sequential" scan here walks the keys in token order, not key order.

use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use corekv_bench::{make_key, token_of, ValueGenerator};
use corekv_engine::sstable::Compression;
use corekv_engine::{Durability, Engine, Fs, Options, ScanOptions, Stats};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

type BenchResult<T> = std::result::Result<T, String>;

fn parse_flag(s: &str) -> BenchResult<bool> {
    match s {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("expected 0/1/true/false, got {s:?}")),
    }
}

/// Command-line flags, named as db_bench names them where db_bench has one.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "engine-bench",
    rename_all = "snake_case",
    about = "db_bench-style workloads on one corekv engine pinned to one core"
)]
struct Args {
    /// Comma-separated workloads, run in order on one database: fillseq,
    /// fillrandom, overwrite, readrandom, readmissing, seekrandom, scan (alias
    /// readseq), waitforcompaction, flush, stats.
    #[arg(
        long,
        default_value = "fillseq,fillrandom,overwrite,readrandom,readmissing,seekrandom,scan"
    )]
    benchmarks: String,
    /// Keys in the key space; also the write count of each worker.
    #[arg(long, default_value_t = 2_000_000)]
    num: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Reads per worker (default: --num).
    #[arg(long)]
    reads: Option<u64>,
    /// Block cache size in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    cache_size: usize,
    /// Acknowledge writes after fdatasync (Durability::Sync, group commit);
    /// otherwise the WAL is synced every --sync_interval_ms.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag)]
    sync: bool,
    /// WAL sync interval when --sync is off (Durability::Periodic).
    #[arg(long, default_value_t = 1000)]
    sync_interval_ms: u64,
    /// Concurrent workers (glommio tasks on the one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Data directory (must be on a disk with O_DIRECT: not tmpfs).
    #[arg(long, default_value = "target/engine-bench-db")]
    db: PathBuf,
    /// Keep the database: fills do not start from an empty one.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag)]
    use_existing_db: bool,
    /// Data block compression: none, lz4, zstd.
    #[arg(long, default_value = "lz4")]
    compression: String,
    /// Fraction of each generated value that is random (db_bench's default 0.5).
    #[arg(long, default_value_t = 0.5)]
    compression_ratio: f64,
    /// Memtable size in bytes (db_bench's write_buffer_size).
    #[arg(long, default_value_t = 64 << 20)]
    write_buffer_size: usize,
    /// Target data block size in bytes.
    #[arg(long, default_value_t = 4096)]
    block_size: usize,
    /// Bloom filter bits per key.
    #[arg(long, default_value_t = 10)]
    bloom_bits: u32,
    /// Entries read after each seek in seekrandom.
    #[arg(long, default_value_t = 0)]
    seek_nexts: usize,
    /// Entries per page in scan.
    #[arg(long, default_value_t = 1000)]
    scan_page: usize,
    /// Dump the engine's full statistics after each workload.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag)]
    stats: bool,
    /// After each fill, run the engine's compaction to quiescence and report
    /// it as a separate line (like db_bench's waitforcompaction).
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag)]
    wait_for_compaction: bool,
    /// The CPU to pin the executor to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Let the executor spin this many microseconds before it sleeps in
    /// io_uring_enter (glommio's spin_before_park; 0 = off): trades CPU for
    /// the wake-up latency of one-at-a-time disk reads.
    #[arg(long, default_value_t = 0)]
    spin_before_park_us: u64,
    /// Seed for the key generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Read table blocks with O_DIRECT (true, the engine's default) or through
    /// the OS page cache (false), like db_bench's flag of the same name.
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag)]
    use_direct_reads: bool,
}

/// What one worker measured.
struct Worker {
    ops: u64,
    bytes: u64,
    found: u64,
    hist: Histogram<u64>,
}

impl Worker {
    fn new() -> BenchResult<Worker> {
        Ok(Worker {
            ops: 0,
            bytes: 0,
            found: 0,
            // 1 ns .. 100 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 100_000_000_000, 3).map_err(|e| e.to_string())?,
        })
    }

    fn record(&mut self, start: Instant) {
        self.hist.saturating_record(start.elapsed().as_nanos() as u64);
        self.ops += 1;
    }
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the buffer we own; zeroed is a
    // valid rusage, so reading it is sound even if the call fails.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Bench {
    args: Args,
    engine: RefCell<Option<Engine>>,
}

impl Bench {
    fn options(&self) -> BenchResult<Options> {
        let a = &self.args;
        let mut o = Options::new(Fs::real(), a.db.clone());
        o.memtable_bytes = a.write_buffer_size;
        o.block_cache_bytes = a.cache_size;
        o.table_reads = if a.use_direct_reads {
            corekv_engine::TableReads::Direct
        } else {
            corekv_engine::TableReads::Buffered
        };
        o.wal.durability = if a.sync {
            Durability::Sync
        } else {
            Durability::Periodic(Duration::from_millis(a.sync_interval_ms.max(1)))
        };
        o.table.block_size = a.block_size;
        o.table.bloom_bits_per_key = a.bloom_bits;
        o.table.compression = match a.compression.as_str() {
            "none" => Compression::None,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd(0),
            c => return Err(format!("unknown --compression {c} (none, lz4, zstd)")),
        };
        o.table.validate().map_err(|e| e.to_string())?;
        Ok(o)
    }

    /// Flushes, then closes. `Engine::close` cancels the periodic-sync task;
    /// cancelled in the middle of a WAL sync it leaves the WAL's "sync
    /// running" flag set, and close's own sync then waits forever (seen here
    /// with --sync=0). A flush first leaves nothing unsynced, so the periodic
    /// task is asleep when it is cancelled and close's sync returns at once.
    async fn close(&self) -> BenchResult<()> {
        let taken = self.engine.borrow_mut().take();
        if let Some(e) = taken {
            e.flush().await.map_err(|e| format!("flush before close: {e}"))?;
            e.close().await.map_err(|e| format!("close: {e}"))?;
        }
        Ok(())
    }

    async fn open(&self, fresh: bool) -> BenchResult<()> {
        self.close().await?;
        if fresh && self.args.db.exists() {
            // Blocking, but nothing else runs on the executor between workloads.
            std::fs::remove_dir_all(&self.args.db).map_err(|e| format!("remove {}: {e}", self.args.db.display()))?;
        }
        let e = Engine::open(self.options()?)
            .await
            .map_err(|e| format!("open {}: {e}", self.args.db.display()))?;
        *self.engine.borrow_mut() = Some(e);
        Ok(())
    }

    fn engine(&self) -> BenchResult<Engine> {
        self.engine
            .borrow()
            .clone()
            .ok_or_else(|| "engine not open".to_string())
    }

    /// Runs `threads` workers made by `make` and reports them under `name`.
    async fn run<F, Fut>(&self, name: &str, threads: usize, make: F) -> BenchResult<()>
    where
        F: Fn(usize, Engine) -> Fut,
        Fut: Future<Output = BenchResult<Worker>> + 'static,
    {
        let engine = self.engine()?;
        let before = engine.stats();
        let cpu0 = cpu_time();
        let start = Instant::now();
        let tasks: Vec<_> = (0..threads.max(1))
            .map(|i| glommio::spawn_local(make(i, engine.clone())))
            .collect();
        let mut total = Worker::new()?;
        let mut err = None;
        for t in tasks {
            match t.await {
                Ok(w) => {
                    total.ops += w.ops;
                    total.bytes += w.bytes;
                    total.found += w.found;
                    total.hist.add(&w.hist).map_err(|e| e.to_string())?;
                }
                Err(e) => err = Some(e),
            }
        }
        let elapsed = start.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        if let Some(e) = err {
            return Err(format!("{name}: {e}"));
        }
        self.report(name, &total, elapsed, cpu, &before, &engine.stats());
        Ok(())
    }

    fn report(&self, name: &str, w: &Worker, elapsed: Duration, cpu: Duration, before: &Stats, after: &Stats) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ops_s = w.ops as f64 / secs;
        let mb_s = w.bytes as f64 / secs / (1024.0 * 1024.0);
        let us = |q: f64| w.hist.value_at_quantile(q) as f64 / 1000.0;
        let found = if w.found > 0 || name.starts_with("read") || name.starts_with("seek") {
            format!(" ({} of {} found)", w.found, w.ops)
        } else {
            String::new()
        };
        println!(
            "{name:<18}: {:>10.3} micros/op {:>9.0} ops/sec {:>8.3} seconds {:>9} operations; {:>7.1} MB/s{found}",
            1e6 / ops_s.max(1e-9),
            ops_s,
            secs,
            w.ops,
            mb_s
        );
        println!(
            "  latency us: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (per {})",
            us(0.5),
            us(0.99),
            us(0.999),
            w.hist.max() as f64 / 1000.0,
            if name == "scan" { "page" } else { "op" }
        );
        let cache_h = after.cache.hits.saturating_sub(before.cache.hits);
        let cache_m = after.cache.misses.saturating_sub(before.cache.misses);
        let neg = after.bloom_negatives.saturating_sub(before.bloom_negatives);
        let fp = after.bloom_false_positives.saturating_sub(before.bloom_false_positives);
        let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
        println!(
            "  engine: write-amp {:.2} (cumulative), flushes +{}, compactions +{}, stalls +{} ({:.1} ms), \
             wal syncs +{}, cache hit {:.1}% ({} of {}), bloom FP {:.2}% ({} of {} absent), read-amp {:.2}, \
             cpu {:.2} cores",
            after.write_amplification,
            after.flushes.saturating_sub(before.flushes),
            after.compactions.saturating_sub(before.compactions),
            after.stalls.saturating_sub(before.stalls),
            after.stall_micros.saturating_sub(before.stall_micros) as f64 / 1000.0,
            after.wal.syncs.saturating_sub(before.wal.syncs),
            pct(cache_h, cache_h + cache_m),
            cache_h,
            cache_h + cache_m,
            pct(fp, fp + neg),
            fp,
            fp + neg,
            after.read_amplification,
            cpu.as_secs_f64() / secs,
        );
        println!(
            "  levels (tables, MiB): {}",
            after
                .levels
                .iter()
                .enumerate()
                .map(|(i, (n, b))| format!("L{i} {n}/{:.0}", *b as f64 / (1 << 20) as f64))
                .collect::<Vec<_>>()
                .join("  ")
        );
        // One machine-readable line per workload for scripts.
        println!(
            "RESULT name={name} ops={} secs={secs:.3} ops_per_sec={ops_s:.0} mb_per_sec={mb_s:.1} p50_us={:.2} \
             p99_us={:.2} p999_us={:.2} found={} cpu_cores={:.2} write_amp={:.2} stalls={} cache_hit_pct={:.1} \
             bloom_fp_pct={:.2}",
            w.ops,
            us(0.5),
            us(0.99),
            us(0.999),
            w.found,
            cpu.as_secs_f64() / secs,
            after.write_amplification,
            after.stalls.saturating_sub(before.stalls),
            pct(cache_h, cache_h + cache_m),
            pct(fp, fp + neg),
        );
        if self.args.stats {
            println!("{after:#?}");
        }
    }

    async fn fill(&self, name: &str, sequential: bool) -> BenchResult<()> {
        let a = Rc::new(self.args.clone());
        self.run(name, a.threads, |i, engine| {
            let a = a.clone();
            async move {
                let mut w = Worker::new()?;
                let mut rng = SmallRng::seed_from_u64(a.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
                let mut gen = ValueGenerator::new(a.compression_ratio, a.value_size);
                let mut key = Vec::with_capacity(a.key_size);
                for n in 0..a.num {
                    let idx = if sequential { n } else { rng.next_u64() % a.num.max(1) };
                    make_key(idx, a.key_size, &mut key);
                    let value = gen.generate(a.value_size);
                    let t = Instant::now();
                    engine
                        .put(token_of(&key), &key, value, &[], 0)
                        .await
                        .map_err(|e| format!("put: {e}"))?;
                    w.record(t);
                    w.bytes += (key.len() + value.len()) as u64;
                }
                Ok(w)
            }
        })
        .await?;
        if self.args.wait_for_compaction {
            self.wait_for_compaction(&format!("{name}.compact")).await?;
        }
        Ok(())
    }

    /// Flushes the memtables, then compacts until the policy has nothing to
    /// do. (db_bench's waitforcompaction does not flush, but RocksDB flushes
    /// the recovered WAL into L0 when a later run reopens the database, so the
    /// tables a read run starts from are comparable.)
    async fn wait_for_compaction(&self, name: &str) -> BenchResult<()> {
        self.run(name, 1, |_, engine| async move {
            let mut w = Worker::new()?;
            let t = Instant::now();
            engine.flush().await.map_err(|e| format!("flush: {e}"))?;
            engine.compact().await.map_err(|e| format!("compact: {e}"))?;
            w.record(t);
            Ok(w)
        })
        .await
    }

    async fn flush(&self) -> BenchResult<()> {
        self.run("flush", 1, |_, engine| async move {
            let mut w = Worker::new()?;
            let t = Instant::now();
            engine.flush().await.map_err(|e| format!("flush: {e}"))?;
            w.record(t);
            Ok(w)
        })
        .await
    }

    async fn read_random(&self, name: &str, missing: bool) -> BenchResult<()> {
        let a = Rc::new(self.args.clone());
        // db_bench's readmissing lengthens the key by one byte: same index, never stored.
        let key_size = if missing { a.key_size + 1 } else { a.key_size };
        self.run(name, a.threads, |i, engine| {
            let a = a.clone();
            async move {
                let mut w = Worker::new()?;
                let mut rng = SmallRng::seed_from_u64(a.seed.wrapping_mul(7_000_003).wrapping_add(i as u64 + 17));
                let mut key = Vec::with_capacity(key_size);
                for _ in 0..a.reads.unwrap_or(a.num) {
                    make_key(rng.next_u64() % a.num.max(1), key_size, &mut key);
                    let t = Instant::now();
                    let r = engine
                        .get(token_of(&key), &key)
                        .await
                        .map_err(|e| format!("get: {e}"))?;
                    w.record(t);
                    if let Some(r) = r {
                        w.found += 1;
                        w.bytes += (key.len() + r.value.len()) as u64;
                    }
                }
                Ok(w)
            }
        })
        .await
    }

    async fn seek_random(&self) -> BenchResult<()> {
        let a = Rc::new(self.args.clone());
        self.run("seekrandom", a.threads, |i, engine| {
            let a = a.clone();
            async move {
                let mut w = Worker::new()?;
                let mut rng = SmallRng::seed_from_u64(a.seed.wrapping_mul(9_000_011).wrapping_add(i as u64 + 29));
                let mut key = Vec::with_capacity(a.key_size);
                for _ in 0..a.reads.unwrap_or(a.num) {
                    make_key(rng.next_u64() % a.num.max(1), a.key_size, &mut key);
                    let token = token_of(&key);
                    // A seek positions at the first key at or after (token, key);
                    // starting the range at the token does that (tokens are
                    // 64-bit hashes: two keys sharing one is vanishingly rare).
                    let o = ScanOptions {
                        start_token: token,
                        limit: 1 + a.seek_nexts,
                        // db_bench's iterators fill the block cache (ReadOptions default).
                        fill_cache: true,
                        ..ScanOptions::default()
                    };
                    let t = Instant::now();
                    let page = engine.scan(&o).await.map_err(|e| format!("scan: {e}"))?;
                    w.record(t);
                    if page.entries.first().is_some_and(|e| e.token == token && e.key == key) {
                        w.found += 1;
                    }
                    w.bytes += page
                        .entries
                        .iter()
                        .map(|e| (e.key.len() + e.value.len()) as u64)
                        .sum::<u64>();
                }
                Ok(w)
            }
        })
        .await
    }

    async fn scan(&self) -> BenchResult<()> {
        let a = Rc::new(self.args.clone());
        self.run("scan", a.threads, |_, engine| {
            let a = a.clone();
            async move {
                let mut w = Worker::new()?;
                let mut o = ScanOptions {
                    limit: a.scan_page.max(1),
                    // As db_bench's readseq: the scan fills the block cache.
                    fill_cache: true,
                    ..ScanOptions::default()
                };
                let mut entries = 0u64;
                loop {
                    let t = Instant::now();
                    let page = engine.scan(&o).await.map_err(|e| format!("scan: {e}"))?;
                    w.record(t);
                    entries += page.entries.len() as u64;
                    w.bytes += page
                        .entries
                        .iter()
                        .map(|e| (e.key.len() + e.value.len()) as u64)
                        .sum::<u64>();
                    match page.cursor {
                        Some(c) => o.after = Some(c),
                        None => break,
                    }
                }
                // Report entries, not pages, as operations (db_bench counts
                // each Next); the histogram stays per page.
                w.ops = entries;
                w.found = entries;
                Ok(w)
            }
        })
        .await
    }

    async fn run_all(&self) -> BenchResult<()> {
        let a = &self.args;
        println!(
            "engine-bench: corekv engine on ONE core (glommio LocalExecutor, Placement::Fixed({})), {} worker task(s)",
            a.cpu, a.threads
        );
        println!(
            "Keys: {} bytes, values: {} bytes (db_bench generator, compression_ratio {}), num {}, reads {}",
            a.key_size,
            a.value_size,
            a.compression_ratio,
            a.num,
            a.reads.unwrap_or(a.num)
        );
        println!(
            "Durability: {}, compression {}, block {} B, bloom {} bits/key, cache {} MiB, memtable {} MiB, db {}",
            if a.sync {
                "Sync (fdatasync before ack)".to_string()
            } else {
                format!("Periodic({} ms)", a.sync_interval_ms)
            },
            a.compression,
            a.block_size,
            a.bloom_bits,
            a.cache_size >> 20,
            a.write_buffer_size >> 20,
            a.db.display()
        );
        self.open(!a.use_existing_db).await?;
        for name in a.benchmarks.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let fresh_fill = matches!(name, "fillseq" | "fillrandom");
            if fresh_fill {
                if a.use_existing_db {
                    println!("{name:<18}: skipped (--use_existing_db keeps the database)");
                    continue;
                }
                self.open(true).await?;
            }
            match name {
                "fillseq" => self.fill(name, true).await?,
                "fillrandom" | "overwrite" => self.fill(name, false).await?,
                "readrandom" => self.read_random(name, false).await?,
                "readmissing" => self.read_random(name, true).await?,
                "seekrandom" => self.seek_random().await?,
                "scan" | "readseq" => self.scan().await?,
                "waitforcompaction" | "compact" => self.wait_for_compaction("waitforcompaction").await?,
                "flush" => self.flush().await?,
                "stats" => println!("{:#?}", self.engine()?.stats()),
                other => return Err(format!("unknown benchmark {other:?}")),
            }
        }
        self.close().await
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cpu = args.cpu;
    let mut builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu)).name("engine-bench");
    if args.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(args.spin_before_park_us));
    }
    let ex = match builder.make() {
        Ok(ex) => ex,
        Err(e) => {
            eprintln!("engine-bench: cannot start a glommio executor on CPU {cpu}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = ex.run(async move {
        let b = Bench {
            args,
            engine: RefCell::new(None),
        };
        b.run_all().await
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
