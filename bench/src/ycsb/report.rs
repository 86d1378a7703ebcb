//! The run report: one JSON document (format below), the text summary
//! printed at the end, and the ratios of each target to the baseline.
//!
//! ## JSON format (version 1)
//!
//! ```text
//! { "tool": "corekv-bench", "format_version": 1, "started_unix_s", "command",
//!   "machine": { "cpus", "hostname", "kernel" },
//!   "settings": { "records", "value_size", "mean_value_bytes", "mode", "clients",
//!                 "rate", "max_inflight", "warmup_s", "duration_s", "seed",
//!                 "consistency", "timeout_ms" },
//!   "targets": [ { "label", "url", "protocol", "nodes",
//!                  "load": { "records", "seconds", "ops_per_s", "errors", "first_error" },
//!                  "workloads": [ { "workload", "description", "distribution", "mode",
//!                                   "latency_from": "send" | "intended_start",
//!                                   "warmup_s", "duration_s", "ops", "ops_per_s", "errors",
//!                                   "target_rate", "never_issued", "held_back",
//!                                   "latency": LATENCY, "service": LATENCY | null,
//!                                   "spectrum": [ { "percentile", "ms" } ],
//!                                   "ops_by_kind": [ { "op", "count", "ops_per_s", "errors",
//!                                                      "errors_by_kind", "latency", "spectrum" } ],
//!                                   "timeline": [ { "t_s", "ops_per_s", "errors", "p50_ms", "p99_ms", "max_ms" } ],
//!                                   "scan_method", "first_error" } ] } ],
//!   "baseline": LABEL,
//!   "ratios": [ { "workload", "target", "baseline", "throughput_ratio", "p99_ratio" } ] }
//! LATENCY = { "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "p9999_ms", "max_ms" }
//! ```
//!
//! Latencies are milliseconds. `latency_from` says where they start: the
//! send (closed loop) or the intended start on the schedule (open loop, where
//! `service` is the closed-loop view: answer minus actual send).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles of a histogram, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// 99.99th percentile.
    pub p9999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Latency {
    /// The percentiles of `h` (µs samples).
    pub fn of(h: &Histogram<u64>) -> Latency {
        let q = |x| ms(h.value_at_quantile(x));
        Latency {
            mean_ms: h.mean() / 1000.0,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            p9999_ms: q(0.9999),
            max_ms: ms(h.max()),
        }
    }
}

/// One point of a percentile spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    /// Percentile (0-100).
    pub percentile: f64,
    /// Latency at it, ms.
    pub ms: f64,
}

/// The percentiles a spectrum is sampled at: halving the distance to 100%
/// each step (as HdrHistogram's percentile distribution), out to 99.999, then
/// the maximum.
pub const SPECTRUM_PERCENTILES: [f64; 19] = [
    0.0, 50.0, 75.0, 87.5, 93.75, 96.875, 98.4375, 99.0, 99.21875, 99.6094, 99.8047, 99.9, 99.9512, 99.9756, 99.99,
    99.9939, 99.9969, 99.999, 100.0,
];

/// The latency spectrum of `h`.
pub fn spectrum(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    SPECTRUM_PERCENTILES
        .iter()
        .map(|&p| SpectrumPoint {
            percentile: p,
            ms: ms(h.value_at_percentile(p)),
        })
        .collect()
}

/// One second of a run (by completion time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// End of the second, s after the warm-up.
    pub t_s: f64,
    /// Operations completed in it.
    pub ops_per_s: f64,
    /// Of those, failed.
    pub errors: u64,
    /// Median latency in it.
    pub p50_ms: f64,
    /// p99 in it.
    pub p99_ms: f64,
    /// Largest latency in it.
    pub max_ms: f64,
}

/// One operation kind in a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// READ, UPDATE, INSERT, SCAN, READ-MODIFY-WRITE.
    pub op: String,
    /// Measured operations.
    pub count: u64,
    /// Per second over the measured window.
    pub ops_per_s: f64,
    /// Failed ones.
    pub errors: u64,
    /// Failed ones by kind (timeout, server_..., ...).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Latency.
    pub latency: Latency,
    /// Latency spectrum.
    pub spectrum: Vec<SpectrumPoint>,
}

/// The load phase of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Records inserted.
    pub records: u64,
    /// How long it took.
    pub seconds: f64,
    /// Inserts per second.
    pub ops_per_s: f64,
    /// Failed inserts.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

/// One workload's run phase on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// A..F or the custom name.
    pub workload: String,
    /// The mix in words.
    pub description: String,
    /// The request distribution.
    pub distribution: String,
    /// `closed, N clients` or `open`.
    pub mode: String,
    /// `send` or `intended_start`.
    pub latency_from: String,
    /// Unmeasured seconds.
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Measured operations.
    pub ops: u64,
    /// Throughput.
    pub ops_per_s: f64,
    /// Failed operations.
    pub errors: u64,
    /// Open loop: the schedule's rate.
    pub target_rate: Option<f64>,
    /// Open loop: measured operations never sent (the rate was not sustained).
    pub never_issued: u64,
    /// Open loop: sent late because the in-flight bound was reached.
    pub held_back: u64,
    /// Latency of every measured operation.
    pub latency: Latency,
    /// Open loop: answer minus actual send.
    pub service: Option<Latency>,
    /// Latency spectrum of every measured operation.
    pub spectrum: Vec<SpectrumPoint>,
    /// Per operation kind.
    pub ops_by_kind: Vec<OpReport>,
    /// Per second.
    pub timeline: Vec<Interval>,
    /// How scans were served, when the workload scans.
    pub scan_method: Option<String>,
    /// The first failure.
    pub first_error: Option<String>,
}

/// One target's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// Name in reports.
    pub label: String,
    /// `corekv://...` or `redis://...`.
    pub url: String,
    /// `corekv-sdk` or `resp`.
    pub protocol: String,
    /// Nodes behind it.
    pub nodes: u32,
    /// The load phase.
    pub load: LoadReport,
    /// The run phases, in order.
    pub workloads: Vec<WorkloadReport>,
}

/// The machine the run was on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs (shared by the generator and the servers it spawned).
    pub cpus: usize,
    /// Host name.
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
        }
    }
}

/// The settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Records loaded.
    pub records: u64,
    /// Value sizes (`fixed:N`, ...).
    pub value_size: String,
    /// Mean value size, bytes.
    pub mean_value_bytes: f64,
    /// `closed` or `open`.
    pub mode: String,
    /// Closed loop: client tasks.
    pub clients: usize,
    /// Open loop: operations per second.
    pub rate: f64,
    /// Open loop: bound on outstanding operations.
    pub max_inflight: usize,
    /// Warm-up per workload, s.
    pub warmup_s: f64,
    /// Measured time per workload, s.
    pub duration_s: f64,
    /// Random seed.
    pub seed: u64,
    /// Consistency per operation (corekv targets).
    pub consistency: String,
    /// Per-operation timeout, ms.
    pub timeout_ms: u64,
}

/// A target's figures relative to the baseline's, for one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// The workload.
    pub workload: String,
    /// The target.
    pub target: String,
    /// The baseline target.
    pub baseline: String,
    /// target ops/s / baseline ops/s.
    pub throughput_ratio: f64,
    /// target p99 / baseline p99 (lower is better).
    pub p99_ratio: f64,
}

/// The whole run: what `--json` writes and `plan` and `report` read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `corekv-bench`.
    pub tool: String,
    /// 1.
    pub format_version: u32,
    /// Start, s since the Unix epoch.
    pub started_unix_s: u64,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub settings: Settings,
    /// Per target, in the order given.
    pub targets: Vec<TargetReport>,
    /// The label the ratios compare against.
    pub baseline: String,
    /// Each other target against the baseline, per workload.
    pub ratios: Vec<Ratio>,
}

/// The ratios of every target to `baseline` (a label), workload by workload.
pub fn ratios(targets: &[TargetReport], baseline: &str) -> Vec<Ratio> {
    let Some(base) = targets.iter().find(|t| t.label == baseline) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in &base.workloads {
        for t in targets.iter().filter(|t| t.label != baseline) {
            if let Some(w) = t.workloads.iter().find(|w| w.workload == b.workload) {
                out.push(Ratio {
                    workload: b.workload.clone(),
                    target: t.label.clone(),
                    baseline: baseline.to_owned(),
                    throughput_ratio: w.ops_per_s / b.ops_per_s.max(1e-9),
                    p99_ratio: w.latency.p99_ms / b.latency.p99_ms.max(1e-6),
                });
            }
        }
    }
    out
}

impl RunReport {
    /// `target`'s ratio to the baseline in `workload` (`None` for the baseline).
    pub fn ratio(&self, workload: &str, target: &str) -> Option<&Ratio> {
        self.ratios
            .iter()
            .find(|r| r.workload == workload && r.target == target)
    }

    /// The text summary: per workload, a line per target, then the ratios.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "corekv-bench: {} records, values {}, {}, {} s measured after {} s warm-up per workload; {} CPU(s) shared by generator and servers",
            self.settings.records,
            self.settings.value_size,
            if self.settings.mode == "open" {
                format!("open loop at {}/s (latency from the intended start)", self.settings.rate)
            } else {
                format!("closed loop, {} clients", self.settings.clients)
            },
            self.settings.duration_s,
            self.settings.warmup_s,
            self.machine.cpus,
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "load {:<16} {} records in {:.2} s ({:.0} inserts/s, {} errors)",
                t.label, t.load.records, t.load.seconds, t.load.ops_per_s, t.load.errors
            );
        }
        let workloads: Vec<&str> = self
            .targets
            .first()
            .map(|t| t.workloads.iter().map(|w| w.workload.as_str()).collect())
            .unwrap_or_default();
        for name in workloads {
            let desc = self.targets[0]
                .workloads
                .iter()
                .find(|w| w.workload == name)
                .map_or("", |w| w.description.as_str());
            let _ = writeln!(s, "\nworkload {name} ({desc})");
            let _ = writeln!(
                s,
                "  {:<16} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
                "target", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "x tput"
            );
            for t in &self.targets {
                let Some(w) = t.workloads.iter().find(|w| w.workload == name) else {
                    continue;
                };
                let ratio = self
                    .ratio(name, &t.label)
                    .map_or_else(|| "base".to_owned(), |r| format!("{:.2}", r.throughput_ratio));
                let _ = writeln!(
                    s,
                    "  {:<16} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>7}",
                    t.label,
                    w.ops_per_s,
                    w.latency.p50_ms,
                    w.latency.p99_ms,
                    w.latency.p999_ms,
                    w.latency.max_ms,
                    w.errors,
                    ratio
                );
                for o in &w.ops_by_kind {
                    let _ = writeln!(
                        s,
                        "    {:<18} {:>9.0} ops/s p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms{}",
                        o.op,
                        o.ops_per_s,
                        o.latency.p50_ms,
                        o.latency.p99_ms,
                        o.latency.p999_ms,
                        o.latency.max_ms,
                        if o.errors > 0 {
                            format!(", {} errors {:?}", o.errors, o.errors_by_kind)
                        } else {
                            String::new()
                        }
                    );
                }
                if let Some(m) = &w.scan_method {
                    let _ = writeln!(s, "    scans: {m}");
                }
                if let Some(svc) = &w.service {
                    let _ = writeln!(
                        s,
                        "    service time (from the actual send, the closed-loop view): p99 {:.3} p99.9 {:.3} max {:.3} ms; {} never sent, {} held back",
                        svc.p99_ms, svc.p999_ms, svc.max_ms, w.never_issued, w.held_back
                    );
                }
                if let Some(e) = &w.first_error {
                    let _ = writeln!(s, "    first error: {e}");
                }
            }
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(
                s,
                "\nratios to {} (throughput: higher is better; p99: lower is better)",
                self.baseline
            );
            for r in &self.ratios {
                let _ = writeln!(
                    s,
                    "  {:<4} {:<16} throughput x{:.2}  p99 x{:.2}",
                    r.workload, r.target, r.throughput_ratio, r.p99_ratio
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(name: &str, ops_per_s: f64, p99: f64) -> WorkloadReport {
        let lat = Latency {
            mean_ms: 1.0,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: p99,
            p999_ms: p99,
            p9999_ms: p99,
            max_ms: p99,
        };
        WorkloadReport {
            workload: name.into(),
            description: String::new(),
            distribution: "zipfian:0.99".into(),
            mode: "closed".into(),
            latency_from: "send".into(),
            warmup_s: 0.0,
            duration_s: 1.0,
            ops: ops_per_s as u64,
            ops_per_s,
            errors: 0,
            target_rate: None,
            never_issued: 0,
            held_back: 0,
            latency: lat,
            service: None,
            spectrum: Vec::new(),
            ops_by_kind: Vec::new(),
            timeline: Vec::new(),
            scan_method: None,
            first_error: None,
        }
    }

    fn target(label: &str, w: Vec<WorkloadReport>) -> TargetReport {
        TargetReport {
            label: label.into(),
            url: String::new(),
            protocol: "resp".into(),
            nodes: 1,
            load: LoadReport {
                records: 0,
                seconds: 1.0,
                ops_per_s: 0.0,
                errors: 0,
                first_error: None,
            },
            workloads: w,
        }
    }

    #[test]
    fn ratios_compare_each_target_to_the_baseline() {
        let t = vec![
            target("a", vec![wl("A", 1000.0, 2.0), wl("B", 500.0, 1.0)]),
            target("b", vec![wl("A", 2000.0, 1.0), wl("B", 250.0, 4.0)]),
        ];
        let r = ratios(&t, "a");
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].workload.as_str(), r[0].target.as_str()), ("A", "b"));
        assert!((r[0].throughput_ratio - 2.0).abs() < 1e-9 && (r[0].p99_ratio - 0.5).abs() < 1e-9);
        assert!((r[1].throughput_ratio - 0.5).abs() < 1e-9 && (r[1].p99_ratio - 4.0).abs() < 1e-9);
        assert!(ratios(&t, "nobody").is_empty());
    }

    #[test]
    fn spectrum_is_monotonic_and_ends_at_the_max() {
        let mut h = crate::latency::histogram().unwrap();
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let s = spectrum(&h);
        assert_eq!(s.len(), SPECTRUM_PERCENTILES.len());
        assert!(s
            .windows(2)
            .all(|w| w[0].ms <= w[1].ms && w[0].percentile < w[1].percentile));
        assert!((s[s.len() - 1].ms - 10.0).abs() < 0.02);
        assert!(spectrum(&crate::latency::histogram().unwrap()).is_empty());
    }
}
