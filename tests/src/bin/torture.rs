//! `corekv-torture`: runs a cluster of real `corekv` processes under client
//! workloads and injected faults, then checks what the clients saw
//! (`corekv_tests::torture`; results in docs/guarantees.md).
//!
//! ```text
//! corekv-torture run --duration-s 3600 --faults kill,pause,partition --history h.jsonl
//! corekv-torture run --mode lww --faults skew,kill --skew-ms 2000
//! corekv-torture kill-loop --kills 200
//! ```
//! Runs as root (partitions are iptables rules). Exits 1 when a guarantee
//! failed (an acknowledged write lost, a non-linearizable register, a
//! counter out of bounds).
// A command-line test tool: a harness failure ends it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corekv_tests::torture::{self, Fault, Mode, Options};

/// Fault injection and history checking against a real corekv cluster.
#[derive(Parser, Debug)]
#[command(name = "corekv-torture", version)]
struct Cli {
    /// The `corekv` executable (default: `corekv` beside this one).
    #[arg(long, global = true)]
    bin: Option<PathBuf>,
    /// Directory for the nodes' data (a real disk, not tmpfs).
    #[arg(long, global = true, default_value = "torture-data")]
    data: PathBuf,
    /// Nodes in the cluster.
    #[arg(long, global = true, default_value_t = 3)]
    nodes: usize,
    /// Seed of the fault schedule.
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Conflict mode: causal or lww.
    #[arg(long, global = true, default_value = "causal")]
    mode: String,
    /// Shortest and longest fault (or node downtime), ms.
    #[arg(long, global = true, default_value_t = 500)]
    hold_min_ms: u64,
    /// Longest fault, ms.
    #[arg(long, global = true, default_value_t = 3000)]
    hold_max_ms: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Workloads (register, set, counter, session) under a fault schedule.
    Run {
        /// How long the workloads run.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Faults, comma-separated: kill, pause, partition, delay, lossy, disk-full, skew (lww).
        #[arg(long, default_value = "kill,pause,partition,delay,lossy,disk-full")]
        faults: String,
        /// Calm between two faults, ms.
        #[arg(long, default_value_t = 1000)]
        calm_ms: u64,
        /// Clock shift of the skewed node, ms.
        #[arg(long, default_value_t = 2000)]
        skew_ms: i64,
        /// Clients: register,set,counter,session.
        #[arg(long, default_value = "3,2,2,2")]
        clients: String,
        /// Write the history here (JSON lines).
        #[arg(long)]
        history: Option<PathBuf>,
        /// With disk-full: each node's file system, MiB (an hour of the
        /// default workload needs gigabytes: every acknowledged add is kept).
        #[arg(long, default_value_t = torture::DISK_MIB)]
        disk_mib: u64,
        /// With disk-full: the set values' size, bytes.
        #[arg(long, default_value_t = torture::DISK_FULL_VALUE_BYTES)]
        disk_value_bytes: usize,
    },
    /// SIGKILL random nodes under a QUORUM write load, verifying every
    /// acknowledged write after each restart.
    KillLoop {
        /// Number of kills.
        #[arg(long, default_value_t = 200)]
        kills: u64,
        /// Writer clients.
        #[arg(long, default_value_t = 2)]
        writers: usize,
        /// Adds per second per writer (0: as fast as the cluster answers).
        /// Every acknowledged add is re-read after every restart, so the
        /// rate bounds how long a loop of hundreds of kills takes.
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let bin = cli.bin.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().expect("the path of this executable");
        me.with_file_name("corekv")
    });
    if !bin.exists() {
        eprintln!("corekv-torture: {} not found (build it, or pass --bin)", bin.display());
        std::process::exit(2);
    }
    std::fs::create_dir_all(&cli.data).expect("create the data directory");
    let data = std::fs::canonicalize(&cli.data).expect("the data directory");
    let mode = match cli.mode.as_str() {
        "causal" => Mode::Causal,
        "lww" => Mode::Lww,
        other => {
            eprintln!("corekv-torture: --mode {other}: expected causal or lww");
            std::process::exit(2);
        }
    };
    let mut o = Options::new(&bin.to_string_lossy(), &data.to_string_lossy(), "torture");
    o.nodes = cli.nodes;
    o.seed = cli.seed;
    o.mode = mode;
    o.hold = (
        Duration::from_millis(cli.hold_min_ms),
        Duration::from_millis(cli.hold_max_ms.max(cli.hold_min_ms)),
    );
    match cli.cmd {
        Cmd::Run {
            duration_s,
            faults,
            calm_ms,
            skew_ms,
            clients,
            history,
            disk_mib,
            disk_value_bytes,
        } => {
            o.duration = Duration::from_secs(duration_s);
            o.calm = Duration::from_millis(calm_ms);
            o.skew_ms = skew_ms;
            o.history = history;
            o.disk_mib = disk_mib;
            o.disk_value_bytes = disk_value_bytes;
            o.faults = Vec::new();
            for f in faults.split(',').filter(|f| !f.is_empty()) {
                match Fault::parse(f.trim()) {
                    Some(f) => o.faults.push(f),
                    None => {
                        eprintln!("corekv-torture: unknown fault {f:?} (kill, pause, partition, delay, lossy, disk-full, skew)");
                        std::process::exit(2);
                    }
                }
            }
            let counts: Vec<usize> = clients.split(',').filter_map(|n| n.trim().parse().ok()).collect();
            let [reg, set, ctr, sess] = counts[..] else {
                eprintln!("corekv-torture: --clients wants four numbers: register,set,counter,session");
                std::process::exit(2);
            };
            o.clients = [reg, set, ctr, sess];
            let report = torture::run(&o);
            print!("{report}");
            if !report.guarantees_held() {
                std::process::exit(1);
            }
        }
        Cmd::KillLoop { kills, writers, rate } => {
            let report = torture::kill_loop(&o, kills, writers, rate);
            print!("{report}");
            if !report.lost.is_empty() {
                std::process::exit(1);
            }
        }
    }
}
