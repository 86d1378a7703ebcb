//! `corekv tune`: measure the data directory's disk and the machine, print
//! the figures, and write the io-properties file the node reads at start
//! (`<data_dir>/io-properties.toml` by default; docs/io-properties.md).

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use corekv_tuning::derive::{human_bytes, human_rate};
use corekv_tuning::system::MIN_MEMLOCK;
use corekv_tuning::{derive, IoProperties, MeasureOptions, FILE_NAME};

/// The `tune` subcommand.
pub fn command() -> Command {
    Command::new("tune")
        .about("Measure the disk under the data directory and write its io-properties file")
        .long_about(
            "Measures O_DIRECT sequential bandwidth, 4 KiB random-read IOPS at depth 1 and 32, \
             fdatasync latency and the O_DIRECT alignment with a scratch file in the data directory \
             (removed afterwards), probes io_uring, locked memory, cores and NUMA, and writes \
             <data-dir>/io-properties.toml. `corekv serve` reads it at start to size flush and \
             compaction bandwidth, the io_uring depth and the WAL batch. Run it on an idle machine, \
             not while a node uses the disk.",
        )
        .arg(
            Arg::new("data-dir")
                .long("data-dir")
                .value_name("DIR")
                .env("COREKV_NODE_DATA_DIR")
                .default_value("./corekv-data")
                .value_parser(clap::value_parser!(PathBuf))
                .help("The node's data directory (node.data_dir); measured there, and the file is written there"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Write the file here instead of <data-dir>/io-properties.toml"),
        )
        .arg(
            Arg::new("size-mib")
                .long("size-mib")
                .value_name("MIB")
                .value_parser(clap::value_parser!(u64).range(4..=65_536))
                .help("Scratch file size in MiB (default 256; 16 with --quick)"),
        )
        .arg(
            Arg::new("quick")
                .long("quick")
                .action(ArgAction::SetTrue)
                .help("A short, rough run (16 MiB, 0.2 s per random-read depth, 100 fdatasyncs), for tests"),
        )
}

/// Measures, prints, writes. An unusable directory (tmpfs, no O_DIRECT) is
/// an error that says why, so the process exits non-zero.
pub fn run(m: &ArgMatches) -> Result<(), String> {
    let quick = m.get_flag("quick");
    let mut opts = if quick {
        MeasureOptions::quick()
    } else {
        MeasureOptions::full()
    };
    if let Some(mib) = m.get_one::<u64>("size-mib") {
        opts.scratch_bytes = mib << 20;
    }
    let dir = m
        .get_one::<PathBuf>("data-dir")
        .cloned()
        .unwrap_or_else(|| PathBuf::from("./corekv-data"));
    let out = m
        .get_one::<PathBuf>("out")
        .cloned()
        .unwrap_or_else(|| dir.join(FILE_NAME));
    eprintln!(
        "corekv tune: measuring {} with a {} scratch file{}",
        dir.display(),
        human_bytes(opts.scratch_bytes),
        if quick { " (quick mode: rough figures)" } else { "" }
    );
    let props = corekv_tuning::measure(&dir, &opts, |step| eprintln!("  {step} ...")).map_err(|e| e.to_string())?;
    print!("{}", report(&props));
    props.write(&out).map_err(|e| e.to_string())?;
    println!("\nwrote {}", out.display());
    if out != dir.join(FILE_NAME) {
        println!("(the node reads it with --storage.io_properties {})", out.display());
    }
    Ok(())
}

/// The figures and the settings the node will derive, as a table.
fn report(p: &IoProperties) -> String {
    use std::fmt::Write;
    let mut s = String::from("\n");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(s, "  {name:<34} {value}");
    };
    let d = &p.disk;
    let opt = |v: Option<u32>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    row(
        "data directory",
        format!(
            "{} ({} on {} {})",
            p.measured.data_dir.display(),
            d.fs_type,
            d.device_name.as_deref().unwrap_or("device"),
            d.device
        ),
    );
    row(
        "O_DIRECT alignment",
        format!(
            "{} bytes accepted (logical block {}, statx dio offset {}); engine writes 4096",
            d.direct_io_align,
            opt(d.logical_block_size),
            opt(d.dio_offset_align)
        ),
    );
    row(
        "device queue",
        format!(
            "scheduler {}, read-ahead {} KiB, rotational {}",
            d.scheduler.as_deref().unwrap_or("unknown"),
            opt(d.read_ahead_kb),
            d.rotational.map_or_else(|| "unknown".to_owned(), |r| r.to_string())
        ),
    );
    let q = &p.sequential;
    row("sequential write (1 MiB, depth 8)", human_rate(q.write_bytes_per_sec));
    row("sequential read (1 MiB, depth 8)", human_rate(q.read_bytes_per_sec));
    for f in [&p.random_read.qd1, &p.random_read.qd32] {
        row(
            &format!("4 KiB random read, depth {}", f.depth),
            format!("{} IOPS, p50 {:.0} us, p99 {:.0} us", f.iops, f.p50_us, f.p99_us),
        );
    }
    let f = &p.fdatasync;
    row(
        "4 KiB write + fdatasync",
        format!(
            "{}/s, p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} samples)",
            f.per_sec, f.p50_us, f.p99_us, f.max_us, f.samples
        ),
    );
    let u = &p.io_uring;
    row(
        "io_uring opcodes",
        if u.missing_opcodes.is_empty() {
            format!("all {} probed supported", u.supported_opcodes.len())
        } else {
            format!("missing: {}", u.missing_opcodes.join(", "))
        },
    );
    row(
        "io_uring setup flags",
        format!(
            "sqpoll {}, coop_taskrun {}, single_issuer {}, defer_taskrun {}, iopoll on data dir {}",
            u.setup_sqpoll, u.setup_coop_taskrun, u.setup_single_issuer, u.setup_defer_taskrun, u.iopoll_data_dir
        ),
    );
    row("io_uring features", u.features.join(" "));
    let y = &p.system;
    let limit = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), human_bytes);
    row(
        "locked memory (RLIMIT_MEMLOCK)",
        format!(
            "soft {}, hard {}{}",
            limit(y.memlock_soft_bytes),
            limit(y.memlock_hard_bytes),
            if y.memlock_exempt { " (root: not enforced)" } else { "" }
        ),
    );
    row(
        "cores",
        format!(
            "{} usable, {} online, {} NUMA node(s) [{}]",
            y.cores,
            y.online_cpus,
            y.numa_nodes,
            y.numa_cpus.join("; ")
        ),
    );
    row(
        "kernel, THP, CPU governor",
        format!(
            "{}, {}, {}",
            y.kernel,
            y.transparent_hugepages.as_deref().unwrap_or("unknown"),
            y.cpu_governor.as_deref().unwrap_or("no cpufreq")
        ),
    );
    let d = derive(p);
    let _ = writeln!(s, "\n  the node will derive (unless set explicitly):");
    for (key, f) in [
        ("storage.flush_bytes_per_sec", &d.flush_bytes_per_sec),
        ("storage.compaction_bytes_per_sec", &d.compaction_bytes_per_sec),
        ("node.io_depth", &d.io_depth),
        ("storage.wal_max_unsynced_bytes", &d.wal_max_unsynced_bytes),
    ] {
        let _ = writeln!(s, "  {key:<34} {:<12} {}", f.value, f.reason);
    }
    if p.system.memlock_soft_bytes.is_some_and(|b| b < MIN_MEMLOCK) && !p.system.memlock_exempt {
        let _ = writeln!(
            s,
            "\n  warning: RLIMIT_MEMLOCK is below the {} the node needs; see tuning/os/corekv.service.d/limits.conf",
            human_bytes(MIN_MEMLOCK)
        );
    }
    s
}
