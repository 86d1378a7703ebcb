//! A scrape's figures in the Prometheus text format (version 0.0.4) or
//! OpenMetrics, written by the `prometheus-client` crate's encoders from an
//! owned [`Snapshot`] (a collector run once per scrape), and the process's
//! resources read from procfs.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{CoreSample, BUCKETS_US};

/// The process's resources (procfs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The file descriptor limit (soft).
    pub max_fds: u64,
    /// Threads.
    pub threads: u64,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: f64,
}

impl ProcessSample {
    /// Reads this process's figures from /proc/self. Blocking (procfs
    /// reads): the caller runs it off the executor.
    pub fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may hold spaces: fields
        // are counted after the last ')'. Field 3 (state) is index 0 here.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        // SAFETY: sysconf reads a constant of the running system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit into the struct we own.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur
        } else {
            0
        };
        Some(ProcessSample {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            start_time_seconds: boot.map_or(0.0, |b| b as f64 + field(22).unwrap_or(0) as f64 / ticks),
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(page),
            open_fds,
            max_fds,
        })
    }
}

/// The cluster as this node sees it (cluster mode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GossipSample {
    /// Members per status (`normal`, `joining`, `leaving`, `down`).
    pub nodes: Vec<(&'static str, u64)>,
    /// The view's epoch.
    pub epoch: u64,
    /// Whether nodes are joining or leaving (a pending ring).
    pub changing: bool,
}

/// Node-wide figures of a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// `node.id`.
    pub node_id: String,
    /// `single` or `cluster`.
    pub mode: &'static str,
    /// Replicas per key (1 on a single node).
    pub replication_factor: u64,
    /// Seconds since the node started.
    pub uptime_seconds: f64,
    /// The gossip view (cluster mode).
    pub gossip: Option<GossipSample>,
    /// The process (when procfs could be read).
    pub process: Option<ProcessSample>,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Node-wide figures.
    pub node: NodeSample,
    /// One sample per core.
    pub cores: Vec<CoreSample>,
}

/// The text of a scrape: OpenMetrics when `openmetrics`, else the
/// Prometheus text format 0.0.4. Returns the text and its content type.
pub fn render(snapshot: Snapshot, openmetrics: bool) -> (String, &'static str) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    let r = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    if r.is_err() {
        // Only a failed write into a String fails, which cannot happen;
        // say so in the body rather than serve half a page silently.
        out.clear();
        let _ = writeln!(out, "# corekv: the metrics could not be encoded");
    }
    let ct = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    (out, ct)
}

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: `kind` counter or gauge, one sample per entry.
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    let samples: Vec<(Labels, V)> = samples.into_iter().collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in &samples {
        let e = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(e)?,
            _ => ConstGauge::new(*v).encode(e)?,
        }
    }
    Ok(())
}

fn core(c: &CoreSample) -> Labels {
    vec![("core", c.core.to_string())]
}

fn with(mut l: Labels, k: &'static str, v: impl Into<String>) -> Labels {
    l.push((k, v.into()));
    l
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let cores = &self.cores;
        let n = &self.node;
        let secs = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);

        family(
            &mut enc,
            "corekv_node_info",
            "The node: its id, mode (single or cluster); always 1",
            None,
            Gauge,
            [(
                vec![
                    ("node_id", n.node_id.clone()),
                    ("mode", n.mode.to_owned()),
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ],
                1u64,
            )],
        )?;
        family(
            &mut enc,
            "corekv_replication_factor",
            "Replicas per key (1 on a single node)",
            None,
            Gauge,
            [(Vec::new(), n.replication_factor)],
        )?;
        family(
            &mut enc,
            "corekv_uptime",
            "Time since the node started",
            secs,
            Gauge,
            [(Vec::new(), n.uptime_seconds)],
        )?;

        // Requests: per core, listener, operation and level.
        let series = || {
            cores.iter().flat_map(|c| {
                c.series.iter().map(move |s| {
                    let l = vec![
                        ("core", c.core.to_string()),
                        ("protocol", s.proto.name().to_owned()),
                        ("op", s.op.name().to_owned()),
                        ("consistency", s.level.name().to_owned()),
                    ];
                    (l, s)
                })
            })
        };
        family(
            &mut enc,
            "corekv_requests",
            "Client requests answered, per core, protocol, operation and consistency level",
            None,
            Counter,
            series().map(|(l, s)| (l, s.count())),
        )?;
        family(
            &mut enc,
            "corekv_request_errors",
            "Client requests answered with an error",
            None,
            Counter,
            series().map(|(l, s)| (l, s.errors)),
        )?;
        let all: Vec<(Labels, &super::SeriesSample)> = series().collect();
        if !all.is_empty() {
            let mut m = enc.encode_descriptor(
                "corekv_request_duration",
                "Time from a request's arrival to its answer",
                secs,
                MetricType::Histogram,
            )?;
            for (labels, s) in &all {
                // Per-bucket counts: the encoders make them cumulative.
                let buckets: Vec<(f64, u64)> = BUCKETS_US
                    .iter()
                    .map(|&b| b as f64 / 1e6)
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(s.buckets.iter().copied())
                    .collect();
                m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                    s.sum_us as f64 / 1e6,
                    s.count(),
                    &buckets,
                    None,
                )?;
            }
        }
        family(
            &mut enc,
            "corekv_slow_requests",
            "Requests slower than log.slow_request_ms (each logged at WARN)",
            None,
            Counter,
            cores.iter().map(|c| (core(c), c.activity.slow_requests)),
        )?;
        family(
            &mut enc,
            "corekv_connections_open",
            "Client connections open (all listeners)",
            None,
            Gauge,
            cores.iter().map(|c| (core(c), c.activity.connections_open)),
        )?;
        family(
            &mut enc,
            "corekv_connections_accepted",
            "Client connections accepted (all listeners)",
            None,
            Counter,
            cores.iter().map(|c| (core(c), c.activity.connections_accepted)),
        )?;
        family(
            &mut enc,
            "corekv_http_rejected",
            "HTTP requests answered 503 at once: limits.http_max_inflight_per_core reached",
            None,
            Counter,
            cores.iter().map(|c| (core(c), c.activity.http_rejected)),
        )?;

        // Hints, repair, streaming (cluster mode).
        let hints = |f: fn(&crate::replication::hints::HintMetrics) -> u64| {
            cores
                .iter()
                .filter_map(move |c| c.hints.as_ref().map(|h| (core(c), f(h))))
        };
        family(
            &mut enc,
            "corekv_hints_pending",
            "Hints kept for replicas that missed writes, not yet delivered",
            None,
            Gauge,
            hints(|h| h.pending as u64),
        )?;
        family(
            &mut enc,
            "corekv_hints_stored",
            "Hints stored",
            None,
            Counter,
            hints(|h| h.stored),
        )?;
        family(
            &mut enc,
            "corekv_hints_delivered",
            "Hints their replica acknowledged",
            None,
            Counter,
            hints(|h| h.delivered),
        )?;
        family(
            &mut enc,
            "corekv_hints_expired",
            "Hints dropped undelivered at the end of cluster.hint_window_ms",
            None,
            Counter,
            hints(|h| h.expired),
        )?;
        family(
            &mut enc,
            "corekv_hints_dropped",
            "Hints refused because the hint store was full",
            None,
            Counter,
            hints(|h| h.dropped),
        )?;
        family(
            &mut enc,
            "corekv_repair_running",
            "Repairs running (corekv repair, POST /api/v1/admin/repair)",
            None,
            Gauge,
            cores.iter().map(|c| (core(c), c.activity.repairs_running)),
        )?;
        family(
            &mut enc,
            "corekv_repair_ranges",
            "Ring ranges of the running or last repair: state=total, or state=done",
            None,
            Gauge,
            cores.iter().flat_map(|c| {
                [
                    (with(core(c), "state", "total"), c.activity.repair_ranges_total),
                    (with(core(c), "state", "done"), c.activity.repair_ranges_done),
                ]
            }),
        )?;
        family(
            &mut enc,
            "corekv_repairs",
            "Repairs finished, by outcome (ok: every replica repaired)",
            None,
            Counter,
            cores.iter().flat_map(|c| {
                [
                    (with(core(c), "outcome", "ok"), c.activity.repairs_ok),
                    (with(core(c), "outcome", "failed"), c.activity.repairs_failed),
                ]
            }),
        )?;
        family(
            &mut enc,
            "corekv_stream",
            "Range streaming between nodes (repair, bootstrap, decommission): direction=in pulled here, out pushed from here",
            bytes,
            Counter,
            cores.iter().flat_map(|c| {
                [
                    (with(core(c), "direction", "in"), c.activity.stream_in_bytes),
                    (with(core(c), "direction", "out"), c.activity.stream_out_bytes),
                ]
            }),
        )?;
        family(
            &mut enc,
            "corekv_stream_records",
            "Records streamed between nodes, by direction",
            None,
            Counter,
            cores.iter().flat_map(|c| {
                [
                    (with(core(c), "direction", "in"), c.activity.stream_in_records),
                    (with(core(c), "direction", "out"), c.activity.stream_out_records),
                ]
            }),
        )?;

        // Engines.
        let eng = |f: fn(&CoreSample) -> u64| cores.iter().map(move |c| (core(c), f(c)));
        let engf = |f: fn(&CoreSample) -> f64| cores.iter().map(move |c| (core(c), f(c)));
        family(
            &mut enc,
            "corekv_compaction_pending",
            "Compaction backlog: bytes the compaction policy says ought to be compacted now",
            bytes,
            Gauge,
            eng(|c| c.compaction_debt),
        )?;
        family(
            &mut enc,
            "corekv_keys_estimate",
            "Live keys the engine holds, estimated from its tables' and memtables' entry counts",
            None,
            Gauge,
            eng(|c| c.keys_estimate),
        )?;
        family(
            &mut enc,
            "corekv_memtables_immutable",
            "Frozen memtables waiting for their flush (flush backlog)",
            None,
            Gauge,
            eng(|c| c.engine.immutable_memtables as u64),
        )?;
        family(
            &mut enc,
            "corekv_memtable",
            "Bytes in memtables (active and frozen)",
            bytes,
            Gauge,
            eng(|c| c.engine.memtable_bytes),
        )?;
        let levels = |f: fn(&(usize, u64)) -> u64| {
            cores.iter().flat_map(move |c| {
                c.engine
                    .levels
                    .iter()
                    .enumerate()
                    .map(move |(i, l)| (with(core(c), "level", i.to_string()), f(l)))
            })
        };
        family(
            &mut enc,
            "corekv_level_tables",
            "Live SSTables per level",
            None,
            Gauge,
            levels(|l| l.0 as u64),
        )?;
        family(
            &mut enc,
            "corekv_level",
            "Bytes of live SSTables per level",
            bytes,
            Gauge,
            levels(|l| l.1),
        )?;
        family(
            &mut enc,
            "corekv_write_amplification",
            "(WAL + flush + compaction bytes written) / bytes written by users",
            None,
            Gauge,
            engf(|c| c.engine.write_amplification),
        )?;
        family(
            &mut enc,
            "corekv_read_amplification",
            "Tables consulted per point read",
            None,
            Gauge,
            engf(|c| c.engine.read_amplification),
        )?;
        family(
            &mut enc,
            "corekv_space_amplification",
            "Bytes of all live tables / bytes of the deepest level",
            None,
            Gauge,
            engf(|c| c.engine.space_amplification),
        )?;
        family(
            &mut enc,
            "corekv_user_written",
            "Bytes of keys, values and metadata written by users",
            bytes,
            Counter,
            eng(|c| c.engine.user_bytes_written),
        )?;
        family(
            &mut enc,
            "corekv_wal_written",
            "Bytes written to the WAL",
            bytes,
            Counter,
            eng(|c| c.engine.wal_bytes_written),
        )?;
        family(
            &mut enc,
            "corekv_wal_syncs",
            "WAL fdatasync calls",
            None,
            Counter,
            eng(|c| c.engine.wal.syncs),
        )?;
        family(
            &mut enc,
            "corekv_flushes",
            "Memtable flushes",
            None,
            Counter,
            eng(|c| c.engine.flushes),
        )?;
        family(
            &mut enc,
            "corekv_compactions",
            "Compactions run",
            None,
            Counter,
            eng(|c| c.engine.compactions),
        )?;
        family(
            &mut enc,
            "corekv_compaction_written",
            "Bytes written by compactions",
            bytes,
            Counter,
            eng(|c| c.engine.compaction_bytes_written),
        )?;
        family(
            &mut enc,
            "corekv_write_stalls",
            "Writes that waited for flush or compaction to catch up",
            None,
            Counter,
            eng(|c| c.engine.stalls),
        )?;
        family(
            &mut enc,
            "corekv_block_cache_hits",
            "Block cache lookups that found the block",
            None,
            Counter,
            eng(|c| c.engine.cache.hits),
        )?;
        family(
            &mut enc,
            "corekv_block_cache_misses",
            "Block cache lookups that did not",
            None,
            Counter,
            eng(|c| c.engine.cache.misses),
        )?;
        family(
            &mut enc,
            "corekv_block_cache_hit_ratio",
            "Block cache hits / lookups since the start (0 before any lookup)",
            None,
            Gauge,
            engf(|c| {
                let (h, m) = (c.engine.cache.hits, c.engine.cache.misses);
                if h + m == 0 {
                    0.0
                } else {
                    h as f64 / (h + m) as f64
                }
            }),
        )?;
        family(
            &mut enc,
            "corekv_block_cache",
            "Bytes held by the block cache",
            bytes,
            Gauge,
            eng(|c| c.engine.cache.bytes_used),
        )?;
        family(
            &mut enc,
            "corekv_row_cache_hits",
            "Point reads answered by the row cache",
            None,
            Counter,
            eng(|c| c.engine.row_cache.hits),
        )?;
        family(
            &mut enc,
            "corekv_row_cache_misses",
            "Point reads that missed the memtables and the row cache",
            None,
            Counter,
            eng(|c| c.engine.row_cache.misses),
        )?;
        family(
            &mut enc,
            "corekv_row_cache",
            "Bytes held by the row cache",
            bytes,
            Gauge,
            eng(|c| c.engine.row_cache.bytes_used),
        )?;
        family(
            &mut enc,
            "corekv_bloom_checks",
            "Bloom filter checks of the live tables",
            None,
            Counter,
            eng(|c| c.engine.bloom_checks),
        )?;
        family(
            &mut enc,
            "corekv_bloom_negatives",
            "Bloom checks that said absent (reads saved)",
            None,
            Counter,
            eng(|c| c.engine.bloom_negatives),
        )?;
        family(
            &mut enc,
            "corekv_bloom_false_positives",
            "Bloom checks that said maybe for a key the table did not hold",
            None,
            Counter,
            eng(|c| c.engine.bloom_false_positives),
        )?;

        // Membership.
        if let Some(g) = &n.gossip {
            family(
                &mut enc,
                "corekv_gossip_nodes",
                "Members of this node's gossip view, per status",
                None,
                Gauge,
                g.nodes.iter().map(|(s, v)| (vec![("status", (*s).to_owned())], *v)),
            )?;
            family(
                &mut enc,
                "corekv_gossip_view_epoch",
                "Epoch of this node's view of the cluster (grows with each change)",
                None,
                Gauge,
                [(Vec::new(), g.epoch)],
            )?;
            family(
                &mut enc,
                "corekv_gossip_ring_changing",
                "1 while nodes join or leave (a pending ring), else 0",
                None,
                Gauge,
                [(Vec::new(), u64::from(g.changing))],
            )?;
        }

        // The process, with the names every Prometheus client library uses.
        if let Some(p) = &n.process {
            family(
                &mut enc,
                "process_cpu",
                "User and system CPU time spent",
                secs,
                Counter,
                [(Vec::new(), p.cpu_seconds)],
            )?;
            family(
                &mut enc,
                "process_resident_memory",
                "Resident memory size",
                bytes,
                Gauge,
                [(Vec::new(), p.resident_bytes)],
            )?;
            family(
                &mut enc,
                "process_virtual_memory",
                "Virtual memory size",
                bytes,
                Gauge,
                [(Vec::new(), p.virtual_bytes)],
            )?;
            family(
                &mut enc,
                "process_open_fds",
                "Open file descriptors",
                None,
                Gauge,
                [(Vec::new(), p.open_fds)],
            )?;
            family(
                &mut enc,
                "process_max_fds",
                "The limit on open file descriptors",
                None,
                Gauge,
                [(Vec::new(), p.max_fds)],
            )?;
            family(
                &mut enc,
                "process_threads",
                "Threads of the process",
                None,
                Gauge,
                [(Vec::new(), p.threads)],
            )?;
            family(
                &mut enc,
                "process_start_time",
                "Start time of the process since the Unix epoch",
                secs,
                Gauge,
                [(Vec::new(), p.start_time_seconds)],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ActivitySample, Level, OpKind, Proto, SeriesSample};

    fn sample() -> Snapshot {
        let mut buckets = [0u64; BUCKETS_US.len() + 1];
        buckets[0] = 2;
        buckets[3] = 1;
        Snapshot {
            node: NodeSample {
                node_id: "n1".into(),
                mode: "single",
                replication_factor: 1,
                uptime_seconds: 1.5,
                gossip: None,
                process: ProcessSample::read(),
            },
            cores: vec![CoreSample {
                core: 0,
                series: vec![SeriesSample {
                    proto: Proto::Http,
                    op: OpKind::Get,
                    level: Level::None,
                    buckets,
                    sum_us: 1200,
                    errors: 1,
                }],
                activity: ActivitySample {
                    connections_open: 2,
                    ..ActivitySample::default()
                },
                engine: corekv_engine::Stats::default(),
                compaction_debt: 7,
                keys_estimate: 3,
                hints: None,
                health: corekv_engine::Health::Ok,
            }],
        }
    }

    #[test]
    fn renders_prometheus_text() {
        let (text, ct) = render(sample(), false);
        assert!(ct.starts_with("text/plain; version=0.0.4"));
        assert!(
            text.contains("corekv_requests_total{core=\"0\",protocol=\"http\",op=\"get\",consistency=\"none\"} 3"),
            "{text}"
        );
        assert!(text
            .contains("corekv_request_errors_total{core=\"0\",protocol=\"http\",op=\"get\",consistency=\"none\"} 1"));
        // Cumulative buckets, in seconds.
        assert!(text.contains("le=\"0.0001\"} 2"), "{text}");
        assert!(text.contains("le=\"0.001\"} 3"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains(
            "corekv_request_duration_seconds_sum{core=\"0\",protocol=\"http\",op=\"get\",consistency=\"none\"} 0.0012"
        ));
        assert!(text.contains("corekv_compaction_pending_bytes{core=\"0\"} 7"));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_open_fds "));
        assert!(!text.contains("corekv_gossip_nodes"), "no gossip on a single node");
        let (om, ct) = render(sample(), true);
        assert!(ct.starts_with("application/openmetrics-text"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn process_figures_are_plausible() {
        let p = ProcessSample::read().expect("procfs");
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.open_fds >= 3 && p.max_fds >= p.open_fds, "{p:?}");
        assert!(p.threads >= 1 && p.start_time_seconds > 1.6e9, "{p:?}");
    }
}
