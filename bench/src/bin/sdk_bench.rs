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
//! Each of the `-c` clients is a tokio task issuing requests closed-loop: it
//! keeps `-P` requests in flight and sends the next as soon as one completes,
//! until `-n` requests of the test have been issued in total. All clients share
//! one `Client`, which pipelines them over one connection per (node, core).
//! Latency is measured per request, from issue to answer. Keys are
//! `key:<12-digit number>` drawn uniformly from `-r` keys (a fixed key with
//! `-r 0`), values `-d` bytes of `x`, as redis-benchmark does.

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

/// Keys per MSET / MGET request, as redis-benchmark's `MSET (10 keys)`.
const MULTI_KEYS: usize = 10;
/// Longest latency the histogram tracks (µs); longer samples are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

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
    errors: u64,
    first_error: Option<ClientError>,
}

/// One client: keeps `pipeline` requests in flight until the shared budget of
/// requests is spent.
async fn run_client(
    client: Client,
    test: Test,
    args: Arc<Args>,
    issued: Arc<AtomicU64>,
    value: Arc<Vec<u8>>,
    seed: u64,
) -> Result<ClientResult, String> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())?;
    let mut errors = 0u64;
    let mut first_error = None;
    let mut in_flight = FuturesUnordered::new();
    let take = || issued.fetch_add(1, Ordering::Relaxed) < args.requests;
    let issue = |mut rng: SmallRng| {
        let (client, args, value) = (&client, &args, &value);
        async move {
            let start = Instant::now();
            let r = one(client, test, &mut rng, args, value).await;
            (start.elapsed(), r, rng)
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
    while let Some((elapsed, result, rng)) = in_flight.next().await {
        let us = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        hist.record(us).map_err(|e| e.to_string())?;
        if let Err(e) = result {
            errors += 1;
            first_error.get_or_insert(e);
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

struct Report {
    test: Test,
    rps: f64,
    hist: Histogram<u64>,
    errors: u64,
}

impl Report {
    fn ms(us: f64) -> f64 {
        us / 1000.0
    }

    fn csv_line(&self) -> String {
        let h = &self.hist;
        format!(
            "\"{}\",\"{:.2}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\"",
            self.test.name(),
            self.rps,
            Self::ms(h.mean()),
            Self::ms(h.min() as f64),
            Self::ms(h.value_at_quantile(0.50) as f64),
            Self::ms(h.value_at_quantile(0.95) as f64),
            Self::ms(h.value_at_quantile(0.99) as f64),
            Self::ms(h.max() as f64),
        )
    }

    fn text_line(&self) -> String {
        let h = &self.hist;
        let mut s = format!(
            "{}: {:.2} requests per second, avg={:.3} p50={:.3} p99={:.3} p999={:.3} max={:.3} msec",
            self.test.name(),
            self.rps,
            Self::ms(h.mean()),
            Self::ms(h.value_at_quantile(0.50) as f64),
            Self::ms(h.value_at_quantile(0.99) as f64),
            Self::ms(h.value_at_quantile(0.999) as f64),
            Self::ms(h.max() as f64),
        );
        if self.errors > 0 {
            s.push_str(&format!(" ({} errors)", self.errors));
        }
        s
    }
}

async fn run_test(client: &Client, test: Test, args: &Arc<Args>) -> Result<Report, String> {
    let issued = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'x'; args.data_size]);
    let start = Instant::now();
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
            ))
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())?;
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let r = t.await.map_err(|e| format!("client task failed: {e}"))??;
        hist.add(&r.hist).map_err(|e| e.to_string())?;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    if let Some(e) = first_error {
        eprintln!("{}: {errors} request(s) failed; first error: {e}", test.name());
    }
    Ok(Report {
        test,
        rps: hist.len() as f64 / secs,
        hist,
        errors,
    })
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
    let options = ClientOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        retries: args.retries,
        consistency,
        // Every client's pipeline fits on one connection without queueing
        // in the SDK.
        max_in_flight: (args.clients.max(1) * args.pipeline.max(1)).max(128),
        ..ClientOptions::default()
    };
    let seed = format!("{}:{}", args.host, args.port);
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
        println!(
            "# ring epoch {}, {} node(s), {endpoints} endpoint(s); {} clients, pipeline {}, {} bytes, keyspace {}, {} thread(s)",
            r.epoch(),
            r.nodes().len(),
            args.clients,
            args.pipeline,
            args.data_size,
            args.keyspace,
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
    for test in tests {
        let report = run_test(&client, test, &args).await?;
        all_ok &= report.errors < report.hist.len();
        if args.csv {
            println!("{}", report.csv_line());
        } else {
            println!("{}", report.text_line());
        }
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
        let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        for us in [100, 200, 300, 400, 5000] {
            hist.record(us).unwrap();
        }
        let r = Report {
            test: Test::Set,
            rps: 1234.5,
            hist,
            errors: 0,
        };
        let line = r.csv_line();
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 8);
        assert_eq!(cols[0], "\"SET\"");
        assert_eq!(cols[1], "\"1234.50\"");
        assert_eq!(cols[3], "\"0.100\"");
        assert!(cols.iter().all(|c| c.starts_with('"') && c.ends_with('"')));
        assert!(r.text_line().starts_with("SET: 1234.50 requests per second"));
    }
}
