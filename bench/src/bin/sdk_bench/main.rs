//! sdk-bench: a redis-benchmark-style load generator that speaks corekv's
//! binary protocol through the client SDK (token-aware, to per-core ports).
//!
//! Flags follow redis-benchmark (`-h -p -c -n -d -r -t -P --csv -q`), and
//! `--csv` prints redis-benchmark 7's columns, so one parser reads both
//! tools' output:
//!
//! ```text
//! "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
//! "SET","81234.57","0.601","0.101","0.583","0.871","1.103","4.223"
//! ```
//!
//! Two modes:
//!
//! - Closed loop (the default, `--rate 0`): each of the `-c` clients is a tokio
//!   task that keeps `-P` requests in flight and sends the next as soon as one
//!   completes, until `-n` requests of the test have been issued in total (or
//!   `--duration-s` has passed, whichever comes first). Latency is measured
//!   per request, from issue to answer. This finds the maximum throughput, but
//!   its latencies hide server stalls (see [`open_loop`]).
//! - Open loop (`--rate R`): requests are due at a fixed rate R over all
//!   connections for `--warmup-s` (default 2, unmeasured) plus `--duration-s`
//!   (default 10) seconds; `-n`, `-c` and `-P` are ignored. Each is sent when
//!   due, whatever is outstanding (up to `--max-inflight`), and its latency is
//!   counted from when it was due, so a stall shows up in every request that
//!   should have been sent during it (module [`open_loop`]). Reports p50, p90,
//!   p99, p99.9, p99.99 and max, the achieved rate, errors by kind, and how
//!   many requests were held back by the in-flight bound or never sent.
//!
//! All requests share one `Client`, which pipelines them over one connection
//! per (node, core). Keys are `key:<12-digit number>` drawn uniformly from `-r`
//! keys (a fixed key with `-r 0`), values `-d` bytes of `x`, as
//! redis-benchmark does. `--json FILE` writes every test's figures (both
//! modes) as one JSON object. `--wait-ring N` first waits until the node at
//! `-h:-p` lists N members in its ring (`-t ''` then only waits).

mod open_loop;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser};
use corekv_net::client::{Client, ClientError, ClientOptions, Consistency};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use corekv_bench::latency::{error_kind, histogram};
use report::Report;

/// Keys per MSET / MGET request, as redis-benchmark's `MSET (10 keys)`.
const MULTI_KEYS: usize = 10;
/// Open loop's default measured time, s.
const OPEN_DURATION_S: f64 = 10.0;
/// Open loop's default warm-up, s.
const OPEN_WARMUP_S: f64 = 2.0;
/// Upper bound of `--max-inflight` (a limit on memory and sockets).
const MAX_INFLIGHT_LIMIT: usize = 1 << 20;

/// Command-line flags, named as redis-benchmark names them.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "sdk-bench",
    disable_help_flag = true,
    about = "redis-benchmark-style load on a corekv cluster through the client SDK"
)]
struct Args {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Seed host (a node's shared client port is on it).
    #[arg(short = 'h', default_value = "127.0.0.1")]
    host: String,
    /// Seed port (the node's shared client port).
    #[arg(short = 'p', default_value_t = 7380)]
    port: u16,
    /// Concurrent clients (tokio tasks).
    #[arg(short = 'c', default_value_t = 50)]
    clients: usize,
    /// Total requests of each test.
    #[arg(short = 'n', default_value_t = 500_000)]
    requests: u64,
    /// Value size in bytes.
    #[arg(short = 'd', default_value_t = 1024)]
    data_size: usize,
    /// Keyspace: keys are drawn uniformly from this many (0 = one fixed key).
    #[arg(short = 'r', default_value_t = 1_000_000)]
    keyspace: u64,
    /// Comma-separated tests, run in order: ping, set, get, incr, exists, mset, mget.
    #[arg(short = 't', default_value = "set,get")]
    tests: String,
    /// Requests in flight per client.
    #[arg(short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Print redis-benchmark-compatible CSV.
    #[arg(long)]
    csv: bool,
    /// Quiet: only the result line of each test (the default output is
    /// already one line per test; kept for redis-benchmark compatibility).
    #[arg(short = 'q')]
    quiet: bool,
    /// Tokio worker threads of the load generator (default 1: the generator
    /// and the server usually share a small machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Consistency level: one, quorum, all.
    #[arg(long, default_value = "one")]
    consistency: String,
    /// Per-request timeout in ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Retries of idempotent requests (0 = report every failure).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Random seed of the key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Open loop: requests per second over all connections, sent on a fixed
    /// schedule and timed from their intended start; 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured seconds of each test. Open loop: the schedule's length after
    /// the warm-up (default 10; -n is ignored). Closed loop: stop after this
    /// long or after -n requests, whichever comes first (default: -n only).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Seconds at the start of each test whose requests are sent but not
    /// measured (default 2 in open loop, 0 in closed loop).
    #[arg(long)]
    warmup_s: Option<f64>,
    /// Open loop: most requests outstanding at once. When it is reached the
    /// generator waits for a slot; the requests due meanwhile are sent late and
    /// counted as held back (their latency still runs from the intended start).
    #[arg(long, default_value_t = 4096)]
    max_inflight: usize,
    /// Also write every test's figures to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Before testing, wait until the node at -h:-p lists at least this many
    /// members in its ring (0 = do not wait); fails after --wait-ring-s.
    #[arg(long, default_value_t = 0)]
    wait_ring: usize,
    /// Seconds --wait-ring waits before failing.
    #[arg(long, default_value_t = 30.0)]
    wait_ring_s: f64,
    /// Open loop: also write one line per measured request to this file
    /// (`<test> <intended start, us after the first measured one> <latency us>
    /// <ok 1|0>`), to see when slow requests happened, not only how many.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// How each test is driven, from the flags.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `-c` clients with `-P` in flight each, until `-n` requests or `duration`
    /// (after `warmup`, whose requests are not measured).
    Closed {
        duration: Option<Duration>,
        warmup: Duration,
    },
    Open(open_loop::Plan),
}

fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{flag} must be a non-negative number of seconds, not {s}"))
}

impl Args {
    fn mode(&self) -> Result<Mode, String> {
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(format!("--rate must be >= 0, not {}", self.rate));
        }
        let duration = self.duration_s.map(|s| seconds("--duration-s", s)).transpose()?;
        if self.rate == 0.0 {
            return Ok(Mode::Closed {
                duration,
                warmup: seconds("--warmup-s", self.warmup_s.unwrap_or(0.0))?,
            });
        }
        if !(1..=MAX_INFLIGHT_LIMIT).contains(&self.max_inflight) {
            return Err(format!("--max-inflight must be in 1..={MAX_INFLIGHT_LIMIT}"));
        }
        let plan = open_loop::Plan {
            rate: self.rate,
            warmup: seconds("--warmup-s", self.warmup_s.unwrap_or(OPEN_WARMUP_S))?,
            duration: duration.unwrap_or(Duration::from_secs_f64(OPEN_DURATION_S)),
            max_inflight: self.max_inflight,
        };
        if (plan.duration.as_secs_f64() * plan.rate).round() < 1.0 {
            return Err("--rate x --duration-s must schedule at least one request".to_owned());
        }
        Ok(Mode::Open(plan))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Ping,
    Set,
    Get,
    Incr,
    Exists,
    MSet,
    MGet,
}

impl Test {
    fn parse(s: &str) -> Result<Test, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "ping" => Test::Ping,
            "set" => Test::Set,
            "get" => Test::Get,
            "incr" => Test::Incr,
            "exists" => Test::Exists,
            "mset" => Test::MSet,
            "mget" => Test::MGet,
            other => {
                return Err(format!(
                    "unknown test {other:?} (ping, set, get, incr, exists, mset, mget)"
                ))
            }
        })
    }

    /// The name redis-benchmark prints for the same test.
    fn name(self) -> &'static str {
        match self {
            Test::Ping => "PING_MBULK",
            Test::Set => "SET",
            Test::Get => "GET",
            Test::Incr => "INCR",
            Test::Exists => "EXISTS",
            Test::MSet => "MSET (10 keys)",
            Test::MGet => "MGET (10 keys)",
        }
    }
}

fn key(rng: &mut SmallRng, keyspace: u64) -> String {
    if keyspace == 0 {
        "key:__rand_int__".to_owned()
    } else {
        format!("key:{:012}", rng.gen_range(0..keyspace))
    }
}

/// One request of `test`.
async fn one(client: &Client, test: Test, rng: &mut SmallRng, args: &Args, value: &[u8]) -> Result<(), ClientError> {
    match test {
        Test::Ping => client.ping().await,
        Test::Set => client.put(key(rng, args.keyspace), value).await,
        Test::Get => client.get(key(rng, args.keyspace)).await.map(drop),
        Test::Incr => {
            // redis-benchmark's INCR uses the counter:__rand_int__ keys.
            let k = if args.keyspace == 0 {
                "counter:__rand_int__".to_owned()
            } else {
                format!("counter:{:012}", rng.gen_range(0..args.keyspace))
            };
            client.incr(k, 1).await.map(drop)
        }
        Test::Exists => client.exists(key(rng, args.keyspace)).await.map(drop),
        Test::MSet => {
            let pairs: Vec<(String, &[u8])> = (0..MULTI_KEYS).map(|_| (key(rng, args.keyspace), value)).collect();
            client.mput(&pairs, 0).await
        }
        Test::MGet => {
            let keys: Vec<String> = (0..MULTI_KEYS).map(|_| key(rng, args.keyspace)).collect();
            client.mget(&keys).await.map(drop)
        }
    }
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<ClientError>,
}

/// When a closed-loop test stops issuing and which requests it measures.
#[derive(Clone, Copy)]
struct Window {
    /// Requests issued before this are not recorded.
    measure_from: Instant,
    /// No request is issued after this.
    stop_at: Option<Instant>,
}

/// One client: keeps `pipeline` requests in flight until the shared budget of
/// requests is spent (or the window's end passed).
async fn run_client(
    client: Client,
    test: Test,
    args: Arc<Args>,
    issued: Arc<AtomicU64>,
    value: Arc<Vec<u8>>,
    seed: u64,
    window: Window,
) -> Result<ClientResult, String> {
    let mut hist = histogram()?;
    let mut errors = BTreeMap::new();
    let mut first_error = None;
    let mut in_flight = FuturesUnordered::new();
    let take =
        || window.stop_at.is_none_or(|t| Instant::now() < t) && issued.fetch_add(1, Ordering::Relaxed) < args.requests;
    let issue = |mut rng: SmallRng| {
        let (client, args, value) = (&client, &args, &value);
        async move {
            let start = Instant::now();
            let r = one(client, test, &mut rng, args, value).await;
            (start, start.elapsed(), r, rng)
        }
    };
    // Each in-flight slot carries its own generator, so slots are independent.
    for slot in 0..args.pipeline.max(1) {
        if !take() {
            break;
        }
        in_flight.push(issue(SmallRng::seed_from_u64(
            seed.wrapping_mul(1000).wrapping_add(slot as u64),
        )));
    }
    while let Some((start, elapsed, result, rng)) = in_flight.next().await {
        if start >= window.measure_from {
            corekv_bench::latency::record(&mut hist, elapsed);
            if let Err(e) = result {
                *errors.entry(error_kind(&e)).or_default() += 1;
                first_error.get_or_insert(e);
            }
        }
        if take() {
            in_flight.push(issue(rng));
        }
    }
    Ok(ClientResult {
        hist,
        errors,
        first_error,
    })
}

/// One closed-loop test.
async fn run_test(
    client: &Client,
    test: Test,
    args: &Arc<Args>,
    duration: Option<Duration>,
    warmup: Duration,
) -> Result<Report, String> {
    let issued = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'x'; args.data_size]);
    let start = Instant::now();
    let window = Window {
        measure_from: start + warmup,
        stop_at: duration.map(|d| start + warmup + d),
    };
    let tasks: Vec<_> = (0..args.clients.max(1))
        .map(|c| {
            let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(c as u64);
            tokio::spawn(run_client(
                client.clone(),
                test,
                args.clone(),
                issued.clone(),
                value.clone(),
                seed,
                window,
            ))
        })
        .collect();
    let mut hist = histogram()?;
    let mut errors = BTreeMap::<String, u64>::new();
    let mut first_error = None;
    for t in tasks {
        let r = t.await.map_err(|e| format!("client task failed: {e}"))??;
        hist.add(&r.hist).map_err(|e| e.to_string())?;
        for (kind, n) in r.errors {
            *errors.entry(kind).or_default() += n;
        }
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    // Requests issued in the warm-up and answered after it are not counted,
    // so the rate is slightly low for a warm-up much shorter than the run.
    let secs = start.elapsed().saturating_sub(warmup).as_secs_f64().max(1e-9);
    if let Some(e) = first_error {
        eprintln!(
            "{}: {} request(s) failed; first error: {e}",
            test.name(),
            errors.values().sum::<u64>()
        );
    }
    Ok(Report {
        test,
        rps: hist.len() as f64 / secs,
        hist,
        errors,
        open: None,
    })
}

/// Waits until the node at `seed` lists at least `want` members in its ring.
async fn wait_ring(seed: &str, want: usize, within: Duration) -> Result<(), String> {
    let start = Instant::now();
    let line = corekv_bench::ring::wait_ring(seed, want, within).await?;
    println!("# ring at {seed}: {line} (after {} ms)", start.elapsed().as_millis());
    Ok(())
}

/// The `--json` file: the run's settings and one object per test.
fn json_document(args: &Args, mode: Mode, reports: &[Report]) -> String {
    let (mode_name, rate) = match mode {
        Mode::Closed { .. } => ("closed", 0.0),
        Mode::Open(p) => ("open", p.rate),
    };
    let tests: Vec<String> = reports.iter().map(Report::json).collect();
    format!(
        "{{\"tool\":\"sdk-bench\",\"mode\":\"{mode_name}\",\"seed_node\":{},\"consistency\":{},\"clients\":{},\"pipeline\":{},\"data_size\":{},\"keyspace\":{},\"rate\":{rate},\"threads\":{},\"tests\":[{}]}}\n",
        report::json_str(&format!("{}:{}", args.host, args.port)),
        report::json_str(&args.consistency.to_ascii_lowercase()),
        args.clients,
        args.pipeline,
        args.data_size,
        args.keyspace,
        args.threads,
        tests.join(","),
    )
}

async fn run(args: Args) -> Result<bool, String> {
    let tests: Vec<Test> = args
        .tests
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Test::parse)
        .collect::<Result<_, _>>()?;
    let consistency = match args.consistency.to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        other => return Err(format!("unknown consistency {other:?} (one, quorum, all)")),
    };
    let mode = args.mode()?;
    let seed = format!("{}:{}", args.host, args.port);
    if args.wait_ring > 0 {
        wait_ring(&seed, args.wait_ring, seconds("--wait-ring-s", args.wait_ring_s)?).await?;
    }
    if tests.is_empty() {
        return Ok(true);
    }
    // Everything the load keeps outstanding fits on one connection without
    // queueing in the SDK (the server reads at its own pace).
    let outstanding = match mode {
        Mode::Closed { .. } => args.clients.max(1) * args.pipeline.max(1),
        Mode::Open(p) => p.max_inflight,
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        retries: args.retries,
        consistency,
        max_in_flight: outstanding.max(128),
        ..ClientOptions::default()
    };
    let client = Client::connect(&[seed.as_str()], options)
        .await
        .map_err(|e| format!("cannot connect to {seed}: {e}"))?;
    client
        .connect_all()
        .await
        .map_err(|e| format!("cannot open connections: {e}"))?;
    if !args.quiet && !args.csv {
        let r = client.routing();
        let endpoints = r.targets().len();
        let load = match mode {
            Mode::Closed { .. } => format!("{} clients, pipeline {}", args.clients, args.pipeline),
            Mode::Open(p) => format!(
                "open loop at {}/s for {} s after {} s of warm-up, at most {} in flight",
                p.rate,
                p.duration.as_secs_f64(),
                p.warmup.as_secs_f64(),
                p.max_inflight
            ),
        };
        println!(
            "# ring epoch {}, {} node(s), {endpoints} endpoint(s); {load}, {} bytes, keyspace {}, consistency {}, {} thread(s)",
            r.epoch(),
            r.nodes().len(),
            args.data_size,
            args.keyspace,
            args.consistency.to_ascii_lowercase(),
            args.threads
        );
    }
    if args.csv {
        println!(
            "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\""
        );
    }
    let args = Arc::new(args);
    let mut all_ok = true;
    let mut reports = Vec::with_capacity(tests.len());
    for test in tests {
        let report = match mode {
            Mode::Closed { duration, warmup } => run_test(&client, test, &args, duration, warmup).await?,
            Mode::Open(plan) => open_loop::run_test(&client, test, &args, plan).await?,
        };
        all_ok &= report.error_count() < report.hist.len();
        if args.csv {
            println!("{}", report.csv_line());
        } else {
            println!("{}", report.text());
        }
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, json_document(&args, mode, &reports))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdk-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sdk-bench: every request of a test failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sdk-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn flags_parse_like_redis_benchmark() {
        let a = Args::try_parse_from([
            "sdk-bench",
            "-h",
            "10.1.1.1",
            "-p",
            "7000",
            "-c",
            "8",
            "-n",
            "100",
            "-d",
            "16",
            "-r",
            "50",
            "-t",
            "set,get,incr",
            "-P",
            "4",
            "--csv",
            "--threads",
            "2",
        ])
        .unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.clients, a.requests),
            ("10.1.1.1", 7000, 8, 100)
        );
        assert_eq!((a.data_size, a.keyspace, a.pipeline, a.threads), (16, 50, 4, 2));
        assert!(a.csv);
        let tests: Vec<Test> = a.tests.split(',').map(|t| Test::parse(t).unwrap()).collect();
        assert_eq!(tests, [Test::Set, Test::Get, Test::Incr]);
        assert!(Test::parse("flushall").is_err());
    }

    #[test]
    fn csv_has_redis_benchmark_columns() {
        let mut hist = histogram().unwrap();
        for us in [100, 200, 300, 400, 5000] {
            hist.record(us).unwrap();
        }
        let r = Report {
            test: Test::Set,
            rps: 1234.5,
            hist,
            errors: BTreeMap::new(),
            open: None,
        };
        let line = r.csv_line();
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 8);
        assert_eq!(cols[0], "\"SET\"");
        assert_eq!(cols[1], "\"1234.50\"");
        assert_eq!(cols[3], "\"0.100\"");
        assert!(cols.iter().all(|c| c.starts_with('"') && c.ends_with('"')));
        assert!(r.text().starts_with("SET: 1234.50 requests per second"));
    }

    #[test]
    fn rate_selects_open_loop_with_its_defaults() {
        let a = Args::try_parse_from(["sdk-bench", "--rate", "20000"]).unwrap();
        let Mode::Open(p) = a.mode().unwrap() else {
            unreachable!("--rate 20000 is open loop")
        };
        assert_eq!((p.rate, p.max_inflight), (20_000.0, 4096));
        assert_eq!(
            (p.warmup, p.duration),
            (Duration::from_secs(2), Duration::from_secs(10))
        );
        let a = Args::try_parse_from(["sdk-bench", "--duration-s", "3"]).unwrap();
        let Mode::Closed { duration, warmup } = a.mode().unwrap() else {
            unreachable!("no --rate is closed loop")
        };
        assert_eq!((duration, warmup), (Some(Duration::from_secs(3)), Duration::ZERO));
        for bad in [
            &["sdk-bench", "--rate=-1"][..],
            &["sdk-bench", "--rate", "10", "--max-inflight", "0"],
            &["sdk-bench", "--rate", "10", "--duration-s", "0.01"],
            &["sdk-bench", "--rate", "10", "--warmup-s=-2"],
        ] {
            assert!(Args::try_parse_from(bad).unwrap().mode().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_has_the_open_loop_fields() {
        let a = Args::try_parse_from(["sdk-bench", "--rate", "100", "--consistency", "quorum"]).unwrap();
        let mode = a.mode().unwrap();
        let mut hist = histogram().unwrap();
        hist.record(1500).unwrap();
        let mut errors = BTreeMap::new();
        errors.insert("timeout".to_owned(), 2u64);
        let r = Report {
            test: Test::Get,
            rps: 99.5,
            hist,
            errors,
            open: Some(report::OpenStats {
                target_rps: 100.0,
                ok_rps: 98.0,
                duration_s: 10.0,
                warmup_s: 2.0,
                max_inflight: 4096,
                planned: 1000,
                issued: 1000,
                held_back: 0,
                never_issued: 0,
                late_1ms: 0,
                service: histogram().unwrap(),
                lag: histogram().unwrap(),
            }),
        };
        let doc = json_document(&a, mode, &[r]);
        for field in [
            "\"mode\":\"open\"",
            "\"consistency\":\"quorum\"",
            "\"test\":\"GET\"",
            "\"achieved_rps\":99.50",
            "\"latency_from\":\"intended_start\"",
            "\"p99_9\":1.500",
            "\"p99_99\":1.500",
            "\"errors_by_kind\":{\"timeout\":2}",
            "\"target_rps\":100.00",
            "\"held_back_by_max_inflight\":0",
            "\"never_issued\":0",
        ] {
            assert!(doc.contains(field), "{field} missing from {doc}");
        }
    }
}
