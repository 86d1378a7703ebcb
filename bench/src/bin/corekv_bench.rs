//! corekv-bench: YCSB workloads against corekv (through the SDK) and any
//! Redis-protocol server side by side, with text, JSON and HTML reports, and
//! a capacity planner fed by the measured figures.
//!
//! ```text
//! corekv-bench run --spawn-node --spawn-cluster 3 --spawn-redis --workloads A,B,C,D,E,F \
//!     --records 100000 --duration-s 10 --json run.json --html run.html
//! corekv-bench run --target corekv://10.0.0.1:7380 --target redis=redis://10.0.0.9:6379 --rate 20000
//! corekv-bench plan --from-json run.json --reads-per-s 500000 --writes-per-s 100000 \
//!     --value-bytes 1024 --total 100TB --rf 3 --p99-ms 10
//! corekv-bench report --json run.json --html run.html
//! ```
//!
//! Flags, workloads, the JSON format and the plan's arithmetic are described
//! in bench/README-bench.md.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use corekv_bench::plan::{self, Assumptions, Demand, NodeFigures};
use corekv_bench::ycsb::driver::{self, Mode, Phase, Records};
use corekv_bench::ycsb::generator::{Distribution, ValueSize, ZIPFIAN_THETA};
use corekv_bench::ycsb::report::{self, Machine, RunReport, Settings, TargetReport};
use corekv_bench::ycsb::spawn::{self, Server};
use corekv_bench::ycsb::target::{OpConsistency, Protocol, Target, TargetSpec};
use corekv_bench::ycsb::workload::parse_workloads;
use corekv_bench::ycsb::{html, Error, Result};

#[derive(Parser, Debug)]
#[command(
    name = "corekv-bench",
    about = "YCSB workloads on corekv and Redis-protocol servers, reports and capacity planning"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Load records and run workloads against every target, one after another.
    Run(RunArgs),
    /// Size a cluster for a target load from measured per-node figures.
    Plan(PlanArgs),
    /// Re-render the text summary and HTML page of a JSON report.
    Report(ReportArgs),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// A server to measure: `[LABEL=]corekv://HOST:PORT` (SDK, seed node) or
    /// `[LABEL=]redis://HOST:PORT` (any RESP server, corekv's RESP port too).
    /// Repeatable.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Start a single corekv node (label `corekv-node`) for the run.
    #[arg(long)]
    spawn_node: bool,
    /// Start an N-node local corekv cluster (label `corekv-clusterN`,
    /// replication factor min(3, N), on 127.0.25x.1..N).
    #[arg(long, value_name = "N")]
    spawn_cluster: Option<usize>,
    /// Start redis-server (label `redis`) for the run.
    #[arg(long)]
    spawn_redis: bool,
    /// Cores of each spawned corekv node.
    #[arg(long, default_value_t = 1)]
    node_cores: u16,
    /// Extra settings for spawned corekv nodes, `section.key=value`
    /// (passed as `--set`), e.g. `storage.memtable_bytes=16777216`. Repeatable.
    #[arg(long = "node-set", value_name = "KEY=VALUE")]
    node_set: Vec<String>,
    /// The corekv binary (default: beside corekv-bench, else on the PATH).
    #[arg(long)]
    corekv: Option<PathBuf>,
    /// The redis-server binary (default: on the PATH).
    #[arg(long)]
    redis_server: Option<PathBuf>,
    /// Spawned redis-server's AOF fsync policy: always (every acknowledged
    /// write on disk, as corekv's default), everysec, no, or off (no AOF).
    #[arg(long, default_value = "always")]
    redis_appendfsync: String,
    /// Data directory of spawned servers (must be on a real disk, not tmpfs).
    #[arg(long, default_value = "corekv-bench-data")]
    data_dir: PathBuf,
    /// Keep spawned servers' data after the run.
    #[arg(long)]
    keep_data: bool,
    /// Workloads, run in order: A-F and/or @FILE (YCSB property files).
    #[arg(long, default_value = "A,B,C,D,E,F")]
    workloads: String,
    /// Override every workload's request distribution: uniform,
    /// zipfian[:THETA], latest[:THETA], hotspot[:DATA:OPS].
    #[arg(long)]
    distribution: Option<String>,
    /// Zipfian theta of the core workloads.
    #[arg(long, default_value_t = ZIPFIAN_THETA)]
    theta: f64,
    /// Records loaded before the workloads.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Value size: N, uniform:MIN:MAX or zipfian:MIN:MAX.
    #[arg(long, default_value = "1024")]
    value_size: String,
    /// Longest scan of scanning workloads (overrides the workload's).
    #[arg(long)]
    max_scan: Option<u32>,
    /// Closed loop: client tasks, one operation outstanding each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Open loop: operations per second, latency counted from each
    /// operation's intended start (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Open loop: most operations outstanding.
    #[arg(long, default_value_t = 4096)]
    max_inflight: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Unmeasured seconds at the start of each workload.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Concurrent writers in the load phase.
    #[arg(long, default_value_t = 32)]
    load_clients: usize,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    no_load: bool,
    /// corekv consistency level of every operation: one, two, three, quorum, all, local_quorum.
    #[arg(long, default_value = "quorum")]
    consistency: String,
    /// Per-operation overrides: `read=one,update=all,insert=quorum,scan=one,rmw=all`.
    #[arg(long, default_value = "")]
    op_consistency: String,
    /// Per-operation timeout, ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tokio worker threads of the generator (it shares the machine with the servers).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The target the ratios compare against (default: `redis` if there is
    /// one, else the first target).
    #[arg(long)]
    baseline: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Debug)]
struct PlanArgs {
    /// Client reads per second to serve.
    #[arg(long)]
    reads_per_s: f64,
    /// Client writes per second to serve.
    #[arg(long)]
    writes_per_s: f64,
    /// Key bytes.
    #[arg(long, default_value_t = 16.0)]
    key_bytes: f64,
    /// Value bytes.
    #[arg(long, default_value_t = 1024.0)]
    value_bytes: f64,
    /// Users' data, one copy: bytes, or with a unit (100TB, 5TiB, 800GB).
    #[arg(long)]
    total: String,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    rf: u32,
    /// p99 objective, ms.
    #[arg(long, default_value_t = 10.0)]
    p99_ms: f64,
    /// Take the per-node figures from this `corekv-bench run --json` report
    /// (a single-node corekv target's workloads A and C).
    #[arg(long)]
    from_json: Option<PathBuf>,
    /// The report's target to use (default: its first single-node corekv target).
    #[arg(long)]
    label: Option<String>,
    /// Per-node reads/s (instead of, or overriding, the report).
    #[arg(long)]
    node_reads: Option<f64>,
    /// Per-node writes/s (instead of, or overriding, the report).
    #[arg(long)]
    node_writes: Option<f64>,
    /// Per-node p99 at those rates, ms (instead of, or overriding, the report).
    #[arg(long)]
    node_p99_ms: Option<f64>,
    /// Fraction of a node's measured maximum to plan at.
    #[arg(long)]
    utilization: Option<f64>,
    /// Replicas a read touches (default: the replication factor).
    #[arg(long)]
    read_fanout: Option<f64>,
    /// Usable disk per node: bytes or with a unit (default 8TB).
    #[arg(long)]
    disk_per_node: Option<String>,
    /// Highest fill of a node's disk (default 0.7).
    #[arg(long)]
    disk_fill: Option<f64>,
    /// Space amplification of compaction (default 1.1).
    #[arg(long)]
    space_amp: Option<f64>,
    /// Share of a node's stored data kept in its block cache (default 0.01).
    #[arg(long)]
    cache_fraction: Option<f64>,
    /// Also print the sizing as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// The JSON report of a run.
    #[arg(long)]
    json: PathBuf,
    /// Write the HTML page here.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// A target to run: given, or to be spawned just before its turn (so idle
/// servers do not share the CPUs with the measured one).
enum Planned {
    Given(TargetSpec),
    Node,
    Cluster(usize),
    Redis,
}

impl Planned {
    fn label(&self) -> String {
        match self {
            Planned::Given(s) => s.label.clone(),
            Planned::Node => "corekv-node".to_owned(),
            Planned::Cluster(n) => format!("corekv-cluster{n}"),
            Planned::Redis => "redis".to_owned(),
        }
    }
}

/// `--node-set` as corekv flags.
fn node_flags(a: &RunArgs) -> Vec<String> {
    a.node_set
        .iter()
        .flat_map(|kv| ["--set".to_owned(), kv.clone()])
        .collect()
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Starts a planned target's servers; returns its spec and the processes
/// (stopped when dropped).
async fn start_target(p: &Planned, a: &RunArgs) -> Result<(TargetSpec, Vec<Server>)> {
    let label = p.label();
    let dir = a.data_dir.join(&label);
    match p {
        Planned::Given(s) => Ok((s.clone(), Vec::new())),
        Planned::Node => {
            let bin = spawn::find_corekv(a.corekv.as_deref())?;
            let bin_dir = bin.clone();
            let dir2 = dir.clone();
            let (cores, keep, extra) = (a.node_cores, a.keep_data, node_flags(a));
            let node = tokio::task::spawn_blocking(move || {
                spawn::spawn_node(&bin_dir, &dir2, "127.0.0.1", cores, &extra, keep)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
            println!(
                "# started {} ({}), data in {}",
                node.server.name,
                bin.display(),
                dir.display()
            );
            let spec = TargetSpec {
                label,
                protocol: Protocol::Corekv,
                addr: node.client_addr.clone(),
                nodes: 1,
            };
            Ok((spec, vec![node.server]))
        }
        Planned::Cluster(n) => {
            let bin = spawn::find_corekv(a.corekv.as_deref())?;
            let nodes = spawn::spawn_cluster(&bin, &dir, *n, a.node_cores, &node_flags(a), a.keep_data).await?;
            let seed = nodes.first().map(|n| n.client_addr.clone()).unwrap_or_default();
            println!(
                "# started a {n}-node cluster ({}), seed {seed}, data in {}",
                bin.display(),
                dir.display()
            );
            let spec = TargetSpec {
                label,
                protocol: Protocol::Corekv,
                addr: seed,
                nodes: *n as u32,
            };
            Ok((spec, nodes.into_iter().map(|n| n.server).collect()))
        }
        Planned::Redis => {
            let bin = match &a.redis_server {
                Some(b) => b.clone(),
                None => spawn::find_on_path("redis-server").ok_or_else(|| {
                    Error::Spawn(
                        "redis-server is not on the PATH (apt-get install redis-server, or --redis-server PATH)".into(),
                    )
                })?,
            };
            let (server, addr) = spawn::spawn_redis(&bin, &dir, &a.redis_appendfsync, a.keep_data)?;
            println!(
                "# started redis-server ({}) at {addr}, appendfsync {}, data in {}",
                bin.display(),
                a.redis_appendfsync,
                dir.display()
            );
            let spec = TargetSpec {
                label,
                protocol: Protocol::Resp,
                addr,
                nodes: 1,
            };
            Ok((spec, vec![server]))
        }
    }
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| Error::Config(format!("{flag} must be >= 0 seconds, not {s}")))
}

async fn run(a: RunArgs, command: String) -> Result<bool> {
    let mut workloads = parse_workloads(&a.workloads, a.theta).map_err(Error::Config)?;
    if workloads.is_empty() {
        return Err(Error::Config("--workloads is empty".into()));
    }
    if let Some(d) = &a.distribution {
        let d = Distribution::parse(d).map_err(Error::Config)?;
        for w in &mut workloads {
            w.request = d;
        }
    }
    if let Some(m) = a.max_scan {
        for w in &mut workloads {
            w.max_scan = m.max(1);
        }
    }
    let value_size = ValueSize::parse(&a.value_size).map_err(Error::Config)?;
    let consistency = OpConsistency::parse(&a.consistency, &a.op_consistency)?;
    if !a.rate.is_finite() || a.rate < 0.0 {
        return Err(Error::Config(format!("--rate must be >= 0, not {}", a.rate)));
    }
    let mode = if a.rate > 0.0 {
        if !(1..=1 << 20).contains(&a.max_inflight) {
            return Err(Error::Config("--max-inflight must be in 1..=1048576".into()));
        }
        Mode::Open {
            rate: a.rate,
            max_inflight: a.max_inflight,
        }
    } else {
        Mode::Closed {
            clients: a.clients.max(1),
        }
    };
    let phase = Phase {
        mode,
        warmup: seconds("--warmup-s", a.warmup_s)?,
        duration: seconds("--duration-s", a.duration_s)?,
        records: a.records.max(1),
        value_size,
        seed: a.seed,
        progress: !a.no_progress && std::io::stderr().is_terminal(),
    };
    if phase.duration.is_zero() {
        return Err(Error::Config("--duration-s must be > 0".into()));
    }
    let mut planned: Vec<Planned> = a
        .targets
        .iter()
        .map(|t| TargetSpec::parse(t).map(Planned::Given))
        .collect::<Result<_>>()?;
    if a.spawn_node {
        planned.push(Planned::Node);
    }
    if let Some(n) = a.spawn_cluster {
        planned.push(Planned::Cluster(n));
    }
    if a.spawn_redis {
        planned.push(Planned::Redis);
    }
    if planned.is_empty() {
        return Err(Error::Config(
            "no target: give --target URL, --spawn-node, --spawn-cluster N or --spawn-redis".into(),
        ));
    }
    let labels: Vec<String> = planned.iter().map(Planned::label).collect();
    for (i, l) in labels.iter().enumerate() {
        if labels[..i].contains(l) {
            return Err(Error::Config(format!(
                "two targets are labelled {l:?}: give them labels (LABEL=URL)"
            )));
        }
    }
    let baseline = match &a.baseline {
        Some(b) if labels.contains(b) => b.clone(),
        Some(b) => {
            return Err(Error::Config(format!(
                "--baseline {b:?} is not a target ({})",
                labels.join(", ")
            )))
        }
        None if labels.iter().any(|l| l == "redis") => "redis".to_owned(),
        None => labels[0].clone(),
    };
    if planned.iter().any(|p| !matches!(p, Planned::Given(_))) {
        std::fs::create_dir_all(&a.data_dir).map_err(io(format!("create {}", a.data_dir.display())))?;
    }
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut targets = Vec::new();
    let mut all_ok = true;
    for p in &planned {
        let (spec, servers) = start_target(p, &a).await?;
        let in_flight = match mode {
            Mode::Closed { clients } => clients,
            Mode::Open { max_inflight, .. } => max_inflight,
        };
        let target = Arc::new(Target::connect(spec.clone(), consistency, timeout, in_flight).await?);
        let load = if a.no_load {
            report::LoadReport {
                records: 0,
                seconds: 0.0,
                ops_per_s: 0.0,
                errors: 0,
                first_error: None,
            }
        } else {
            let l = driver::load(&target, &phase, a.load_clients).await?;
            println!(
                "# load {}: {} records in {:.2} s ({:.0}/s), {} errors{}",
                spec.label,
                l.records,
                l.seconds,
                l.ops_per_s,
                l.errors,
                l.first_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!("; first: {e}"))
            );
            l
        };
        let records = Arc::new(Records::new(phase.records));
        let mut reports = Vec::new();
        for w in &workloads {
            println!("# run {} on {} ({})", w.name, spec.label, w.description);
            let _ = std::io::stdout().flush();
            let r = driver::run(&target, w, &records, &phase).await?;
            println!(
                "{} {}: {:.0} ops/s, p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms, {} errors",
                spec.label,
                w.name,
                r.ops_per_s,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.p999_ms,
                r.latency.max_ms,
                r.errors
            );
            all_ok &= r.ops > 0 && r.errors < r.ops;
            reports.push(r);
        }
        targets.push(TargetReport {
            label: spec.label.clone(),
            url: spec.url(),
            protocol: match spec.protocol {
                Protocol::Corekv => "corekv-sdk",
                Protocol::Resp => "resp",
            }
            .to_owned(),
            nodes: spec.nodes,
            load,
            workloads: reports,
        });
        drop(target);
        // Stop this target's servers before the next one runs.
        drop(servers);
    }
    let ratios = report::ratios(&targets, &baseline);
    let r = RunReport {
        tool: "corekv-bench".into(),
        format_version: 1,
        started_unix_s,
        command,
        machine: Machine::this(),
        settings: Settings {
            records: phase.records,
            value_size: value_size.describe(),
            mean_value_bytes: value_size.mean(),
            mode: if a.rate > 0.0 { "open" } else { "closed" }.into(),
            clients: a.clients,
            rate: a.rate,
            max_inflight: a.max_inflight,
            warmup_s: a.warmup_s,
            duration_s: a.duration_s,
            seed: a.seed,
            consistency: consistency.describe(),
            timeout_ms: a.timeout_ms,
        },
        targets,
        baseline,
        ratios,
    };
    println!("\n{}", r.text());
    write_outputs(&r, a.json.as_ref(), a.html.as_ref())?;
    Ok(all_ok)
}

fn write_outputs(r: &RunReport, json: Option<&PathBuf>, html_path: Option<&PathBuf>) -> Result<()> {
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(r)?;
        std::fs::write(p, text + "\n").map_err(io(format!("write {}", p.display())))?;
        println!("# JSON report: {}", p.display());
    }
    if let Some(p) = html_path {
        std::fs::write(p, html::page(r)).map_err(io(format!("write {}", p.display())))?;
        println!("# HTML report: {}", p.display());
    }
    Ok(())
}

/// Parses a byte count with an optional unit: B, kB/KB, MB, GB, TB, PB
/// (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024).
fn parse_bytes(s: &str) -> Result<f64> {
    let t = s.trim();
    // The unit is the alphabetic suffix (so `1e12` is a number).
    let num = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[num.len()..];
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("bad size {s:?} (e.g. 100TB, 5TiB, 1e12)")))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "pb" => 1e15,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        "pib" => 1024f64.powi(5),
        other => return Err(Error::Config(format!("unknown unit {other:?} in {s:?}"))),
    };
    Ok(n * scale)
}

fn plan_cmd(p: PlanArgs) -> Result<()> {
    let demand = Demand {
        reads_per_s: p.reads_per_s,
        writes_per_s: p.writes_per_s,
        key_bytes: p.key_bytes,
        value_bytes: p.value_bytes,
        total_bytes: parse_bytes(&p.total)?,
        rf: p.rf,
        p99_ms: p.p99_ms,
    };
    let mut node = match &p.from_json {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
            let r: RunReport = serde_json::from_str(&text)?;
            plan::node_figures_from_report(&r, p.label.as_deref()).map_err(Error::Config)?
        }
        None => NodeFigures {
            reads_per_s: p
                .node_reads
                .ok_or_else(|| Error::Config("give --from-json REPORT or --node-reads and --node-writes".into()))?,
            writes_per_s: p
                .node_writes
                .ok_or_else(|| Error::Config("give --from-json REPORT or --node-reads and --node-writes".into()))?,
            p99_ms: p.node_p99_ms.unwrap_or(0.0),
            source: "flags".into(),
        },
    };
    if p.from_json.is_some() && (p.node_reads.is_some() || p.node_writes.is_some() || p.node_p99_ms.is_some()) {
        node.source.push_str("; overridden by flags");
    }
    if let Some(x) = p.node_reads {
        node.reads_per_s = x;
    }
    if let Some(x) = p.node_writes {
        node.writes_per_s = x;
    }
    if let Some(x) = p.node_p99_ms {
        node.p99_ms = x;
    }
    let mut a = Assumptions::defaults(p.rf);
    if let Some(x) = p.utilization {
        a.utilization = x;
    }
    if let Some(x) = p.read_fanout {
        a.read_fanout = x;
    }
    if let Some(x) = &p.disk_per_node {
        a.disk_per_node = parse_bytes(x)?;
    }
    if let Some(x) = p.disk_fill {
        a.disk_fill = x;
    }
    if let Some(x) = p.space_amp {
        a.space_amp = x;
    }
    if let Some(x) = p.cache_fraction {
        a.cache_fraction = x;
    }
    let s = plan::plan(&demand, &node, &a).map_err(Error::Config)?;
    print!("{}", plan::render(&demand, &node, &a, &s));
    if p.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    }
    Ok(())
}

fn report_cmd(r: ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&r.json).map_err(io(format!("read {}", r.json.display())))?;
    let rep: RunReport = serde_json::from_str(&text)?;
    println!("{}", rep.text());
    write_outputs(&rep, None, r.html.as_ref())
}

fn main() -> ExitCode {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.threads.max(1))
                .enable_all()
                .build();
            match rt {
                Ok(rt) => rt.block_on(run(a, command)),
                Err(e) => Err(Error::Internal(format!("cannot start the runtime: {e}"))),
            }
        }
        Cmd::Plan(p) => plan_cmd(p).map(|()| true),
        Cmd::Report(r) => report_cmd(r).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("corekv-bench: a workload measured nothing or every operation failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("corekv-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("100TB").ok(), Some(100e12));
        assert_eq!(parse_bytes("2 KiB").ok(), Some(2048.0));
        assert_eq!(parse_bytes("1e12").ok(), Some(1e12));
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("TB").is_err());
    }
}
