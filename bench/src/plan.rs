//! `corekv-bench plan`: sizes a cluster for a target load from measured
//! per-node figures, and shows its arithmetic.
//!
//! ## The arithmetic
//!
//! Inputs: client reads/s `R` and writes/s `W`, key bytes `K`, value bytes
//! `V`, total data `D` (the users' keys and values, one copy), replication
//! factor `RF`, a p99 objective; per-node figures measured on one node
//! (replication factor 1, so one client operation is one node operation):
//! node reads/s `r` and writes/s `w`, and the p99 seen at that load.
//! Assumptions (flags with defaults): `u` the utilization a node is planned
//! at (0.5: headroom for tails, compaction, repair and a failed node's
//! share), `f` replicas a read touches (default `RF`: a corekv read asks
//! every live replica), per-record overhead `o` (version and framing bytes,
//! 32), space amplification `a` (1.1, leveled compaction), usable disk per
//! node `S` and its fill limit `m` (0.7), and per-message wire overhead `h`.
//!
//! 1. Node operations per second: reads `R * f`, writes `W * RF`.
//! 2. Busy nodes: `R*f / r + W*RF / w` (a node's time is shared by both);
//!    nodes for throughput `= ceil(busy / u)`.
//! 3. Records `N = D / (K + V)`; stored bytes `B = N * (K + V + o) * RF * a`;
//!    nodes for disk `= ceil(B / (S * m))`.
//! 4. Nodes `n = max(throughput, disk, RF)`.
//! 5. Per node: disk `B / n` (provision `B / n / m`); memory = bloom filters
//!    (`N * RF / n * bits/8`) + block index (`B / n / block * (K + 16)`) +
//!    memtables (twice the budget: one filling, one flushing) + block cache
//!    (`cache fraction * B / n`).
//! 6. Network (bytes/s, `x8` for bits): client in `R*(K+h) + W*(K+V+h)`, out
//!    `R*(K+V+h) + W*h`; between nodes `W*(RF-1)*(K+V+2h)` (replica writes and
//!    acks, the coordinator being a replica) plus `R*(f-1)*(2K+V+2h)` (the
//!    other replicas' reads); per node: (client + between nodes) / `n`, each
//!    way.
//! 7. The p99 objective is met by the measured figures if the measured p99 at
//!    the measured (saturating) load is within it; planning at `u < 1`
//!    lowers queueing, so this is a conservative check.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ycsb::report::RunReport;

/// The load to plan for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Demand {
    /// Client reads per second.
    pub reads_per_s: f64,
    /// Client writes per second.
    pub writes_per_s: f64,
    /// Key bytes.
    pub key_bytes: f64,
    /// Value bytes.
    pub value_bytes: f64,
    /// Users' data, one copy, bytes.
    pub total_bytes: f64,
    /// Replication factor.
    pub rf: u32,
    /// p99 objective, ms.
    pub p99_ms: f64,
}

/// What one node sustains (measured at replication factor 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFigures {
    /// Reads per second.
    pub reads_per_s: f64,
    /// Writes per second.
    pub writes_per_s: f64,
    /// p99 at that load, ms.
    pub p99_ms: f64,
    /// Where the figures come from.
    pub source: String,
}

/// Planning assumptions (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assumptions {
    /// Fraction of a node's measured maximum it is planned at.
    pub utilization: f64,
    /// Replicas a read touches.
    pub read_fanout: f64,
    /// Bytes stored per record beyond key and value.
    pub record_overhead: f64,
    /// Space amplification of compaction.
    pub space_amp: f64,
    /// Usable disk per node, bytes.
    pub disk_per_node: f64,
    /// Highest fill of a node's disk.
    pub disk_fill: f64,
    /// Bloom filter bits per key.
    pub bloom_bits: f64,
    /// Data block bytes.
    pub block_bytes: f64,
    /// Memtable budget per node, bytes.
    pub memtable_bytes: f64,
    /// Share of a node's stored bytes kept in the block cache.
    pub cache_fraction: f64,
    /// Per-message wire overhead (frame header, TCP/IP), bytes.
    pub wire_overhead: f64,
}

impl Assumptions {
    /// The defaults for replication factor `rf`.
    pub fn defaults(rf: u32) -> Assumptions {
        Assumptions {
            utilization: 0.5,
            read_fanout: f64::from(rf),
            record_overhead: 32.0,
            space_amp: 1.1,
            disk_per_node: 8e12,
            disk_fill: 0.7,
            bloom_bits: 10.0,
            block_bytes: 4096.0,
            memtable_bytes: 256.0 * 1024.0 * 1024.0,
            cache_fraction: 0.01,
            wire_overhead: 80.0,
        }
    }
}

/// The sized cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sizing {
    /// Node read operations per second.
    pub node_reads: f64,
    /// Node write operations per second.
    pub node_writes: f64,
    /// Nodes fully busy at the measured maxima.
    pub busy_nodes: f64,
    /// Nodes needed for throughput at the planned utilization.
    pub nodes_for_throughput: u64,
    /// Records.
    pub records: f64,
    /// Bytes stored over all nodes.
    pub stored_bytes: f64,
    /// Nodes needed for disk.
    pub nodes_for_disk: u64,
    /// The node count.
    pub nodes: u64,
    /// Stored bytes per node.
    pub disk_per_node: f64,
    /// Disk to provision per node (stored / fill limit).
    pub disk_provisioned_per_node: f64,
    /// Bloom filter bytes per node.
    pub bloom_per_node: f64,
    /// Block index bytes per node.
    pub index_per_node: f64,
    /// Memtable bytes per node.
    pub memtables_per_node: f64,
    /// Block cache bytes per node.
    pub cache_per_node: f64,
    /// Memory per node.
    pub memory_per_node: f64,
    /// Client bytes/s into the cluster.
    pub client_in: f64,
    /// Client bytes/s out of the cluster.
    pub client_out: f64,
    /// Bytes/s between nodes.
    pub internal: f64,
    /// Bytes/s into one node.
    pub per_node_in: f64,
    /// Bytes/s out of one node.
    pub per_node_out: f64,
    /// Whether the measured p99 is within the objective.
    pub p99_met: bool,
}

/// Sizes the cluster.
pub fn plan(d: &Demand, n: &NodeFigures, a: &Assumptions) -> Result<Sizing, String> {
    let positive = |name: &str, x: f64| {
        if x.is_finite() && x > 0.0 {
            Ok(())
        } else {
            Err(format!("{name} must be > 0, not {x}"))
        }
    };
    positive("node reads/s", n.reads_per_s)?;
    positive("node writes/s", n.writes_per_s)?;
    positive("utilization", a.utilization)?;
    positive("value bytes", d.value_bytes)?;
    positive("disk per node", a.disk_per_node)?;
    positive("disk fill", a.disk_fill)?;
    positive("block bytes", a.block_bytes)?;
    if d.rf == 0 {
        return Err("the replication factor must be >= 1".into());
    }
    let rf = f64::from(d.rf);
    let node_reads = d.reads_per_s * a.read_fanout;
    let node_writes = d.writes_per_s * rf;
    let busy = node_reads / n.reads_per_s + node_writes / n.writes_per_s;
    let nodes_for_throughput = (busy / a.utilization - 1e-9).ceil().max(0.0) as u64;
    let records = d.total_bytes / (d.key_bytes + d.value_bytes);
    let stored = records * (d.key_bytes + d.value_bytes + a.record_overhead) * rf * a.space_amp;
    let nodes_for_disk = (stored / (a.disk_per_node * a.disk_fill) - 1e-9).ceil().max(0.0) as u64;
    let nodes = nodes_for_throughput.max(nodes_for_disk).max(u64::from(d.rf));
    let nf = nodes as f64;
    let disk_per_node = stored / nf;
    let bloom = records * rf / nf * a.bloom_bits / 8.0;
    let index = disk_per_node / a.block_bytes * (d.key_bytes + 16.0);
    let memtables = 2.0 * a.memtable_bytes;
    let cache = a.cache_fraction * disk_per_node;
    let (k, v, h) = (d.key_bytes, d.value_bytes, a.wire_overhead);
    let client_in = d.reads_per_s * (k + h) + d.writes_per_s * (k + v + h);
    let client_out = d.reads_per_s * (k + v + h) + d.writes_per_s * h;
    let internal = d.writes_per_s * (rf - 1.0) * (k + v + 2.0 * h)
        + d.reads_per_s * (a.read_fanout - 1.0).max(0.0) * (2.0 * k + v + 2.0 * h);
    Ok(Sizing {
        node_reads,
        node_writes,
        busy_nodes: busy,
        nodes_for_throughput,
        records,
        stored_bytes: stored,
        nodes_for_disk,
        nodes,
        disk_per_node,
        disk_provisioned_per_node: disk_per_node / a.disk_fill,
        bloom_per_node: bloom,
        index_per_node: index,
        memtables_per_node: memtables,
        cache_per_node: cache,
        memory_per_node: bloom + index + memtables + cache,
        client_in,
        client_out,
        internal,
        per_node_in: (client_in + internal) / nf,
        per_node_out: (client_out + internal) / nf,
        p99_met: n.p99_ms <= d.p99_ms,
    })
}

/// Bytes in decimal units (TB, GB, MB).
pub fn bytes(x: f64) -> String {
    for (unit, scale) in [("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
        if x.abs() >= scale {
            return format!("{:.2} {unit}", x / scale);
        }
    }
    format!("{x:.0} B")
}

/// Bits per second in decimal units, from bytes per second.
pub fn bits(bytes_per_s: f64) -> String {
    let b = bytes_per_s * 8.0;
    for (unit, scale) in [("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)] {
        if b.abs() >= scale {
            return format!("{:.2} {unit}", b / scale);
        }
    }
    format!("{b:.0} bit/s")
}

/// The plan with its arithmetic, for people.
pub fn render(d: &Demand, n: &NodeFigures, a: &Assumptions, s: &Sizing) -> String {
    let mut o = String::new();
    let rf = d.rf;
    let _ = writeln!(
        o,
        "target: {:.0} reads/s + {:.0} writes/s, keys {:.0} B, values {:.0} B, {} of data, RF {rf}, p99 <= {} ms",
        d.reads_per_s,
        d.writes_per_s,
        d.key_bytes,
        d.value_bytes,
        bytes(d.total_bytes),
        d.p99_ms
    );
    let _ = writeln!(
        o,
        "per node (measured, RF 1): {:.0} reads/s, {:.0} writes/s, p99 {:.3} ms  [{}]",
        n.reads_per_s, n.writes_per_s, n.p99_ms, n.source
    );
    let _ = writeln!(o, "assumptions: utilization {}, read fan-out {} replicas, record overhead {} B, space amplification {}, disk {} per node filled to {}, bloom {} bits/key, blocks {} B, memtables {}, cache {} of stored data, wire overhead {} B/message",
        a.utilization, a.read_fanout, a.record_overhead, a.space_amp, bytes(a.disk_per_node), a.disk_fill, a.bloom_bits, a.block_bytes, bytes(a.memtable_bytes), a.cache_fraction, a.wire_overhead);
    let _ = writeln!(
        o,
        "\n1. node operations: reads {:.0} x {} = {:.0}/s; writes {:.0} x {rf} = {:.0}/s",
        d.reads_per_s, a.read_fanout, s.node_reads, d.writes_per_s, s.node_writes
    );
    let _ = writeln!(
        o,
        "2. busy nodes: {:.0} / {:.0} + {:.0} / {:.0} = {:.2}; at utilization {}: ceil({:.2} / {}) = {} nodes",
        s.node_reads,
        n.reads_per_s,
        s.node_writes,
        n.writes_per_s,
        s.busy_nodes,
        a.utilization,
        s.busy_nodes,
        a.utilization,
        s.nodes_for_throughput
    );
    let _ = writeln!(o, "3. records: {} / ({:.0} + {:.0}) B = {:.4e}; stored: {:.4e} x {:.0} B x {rf} x {} = {}; disk nodes: ceil({} / ({} x {})) = {}",
        bytes(d.total_bytes), d.key_bytes, d.value_bytes, s.records, s.records, d.key_bytes + d.value_bytes + a.record_overhead, a.space_amp, bytes(s.stored_bytes), bytes(s.stored_bytes), bytes(a.disk_per_node), a.disk_fill, s.nodes_for_disk);
    let _ = writeln!(
        o,
        "4. nodes = max({}, {}, RF {rf}) = {}",
        s.nodes_for_throughput, s.nodes_for_disk, s.nodes
    );
    let _ = writeln!(
        o,
        "5. per node: disk {} / {} = {} (provision {} at fill {})",
        bytes(s.stored_bytes),
        s.nodes,
        bytes(s.disk_per_node),
        bytes(s.disk_provisioned_per_node),
        a.disk_fill
    );
    let _ = writeln!(o, "   memory: bloom {:.4e} records x {rf} / {} x {}/8 B = {}; index {} / {} B x ({:.0} + 16) B = {}; memtables 2 x {} = {}; cache {} x {} = {}; total {}",
        s.records, s.nodes, a.bloom_bits, bytes(s.bloom_per_node), bytes(s.disk_per_node), a.block_bytes, d.key_bytes, bytes(s.index_per_node), bytes(a.memtable_bytes), bytes(s.memtables_per_node), a.cache_fraction, bytes(s.disk_per_node), bytes(s.cache_per_node), bytes(s.memory_per_node));
    let _ = writeln!(o, "6. network: client in {} ({}), client out {} ({}), between nodes {} ({}); per node in ({} + {}) / {} = {}, out {}",
        bytes(s.client_in) + "/s", bits(s.client_in), bytes(s.client_out) + "/s", bits(s.client_out), bytes(s.internal) + "/s", bits(s.internal),
        bytes(s.client_in), bytes(s.internal), s.nodes, bits(s.per_node_in), bits(s.per_node_out));
    let _ = writeln!(
        o,
        "7. p99 objective {} ms: {} (measured {:.3} ms at the measured maxima)",
        d.p99_ms,
        if s.p99_met {
            "met"
        } else {
            "NOT met by the measured node: plan lower utilization or faster nodes, and re-measure"
        },
        n.p99_ms
    );
    let _ = writeln!(
        o,
        "\ncluster: {} nodes, {} disk ({} provisioned) and {} memory per node, {} in / {} out per node",
        s.nodes,
        bytes(s.disk_per_node),
        bytes(s.disk_provisioned_per_node),
        bytes(s.memory_per_node),
        bits(s.per_node_in),
        bits(s.per_node_out)
    );
    o
}

/// Per-node figures from a run's JSON report: the single-node corekv
/// target `label` (or the first one). Reads/s are workload C's throughput;
/// writes/s are derived from workload A (50% reads, 50% updates): a node
/// spends `0.5/r + 0.5/w` seconds per A operation, so `1/A = 0.5/C + 0.5/w`
/// and `w = 0.5 / (1/A - 0.5/C)`. The p99 is the larger of A's and C's.
pub fn node_figures_from_report(r: &RunReport, label: Option<&str>) -> Result<NodeFigures, String> {
    let t = r
        .targets
        .iter()
        .find(|t| match label {
            Some(l) => t.label == l,
            None => t.nodes == 1 && t.protocol == "corekv-sdk",
        })
        .ok_or_else(|| match label {
            Some(l) => format!("no target labelled {l:?} in the report"),
            None => "no single-node corekv target in the report (pass --label)".to_owned(),
        })?;
    if t.nodes != 1 {
        return Err(format!(
            "target {:?} has {} nodes: per-node figures come from a single node (replication factor 1)",
            t.label, t.nodes
        ));
    }
    let w = |name: &str| {
        t.workloads.iter().find(|w| w.workload == name).ok_or_else(|| {
            format!(
                "target {:?} has no workload {name} in the report (run A and C)",
                t.label
            )
        })
    };
    let (a, c) = (w("A")?, w("C")?);
    let per_a = 1.0 / a.ops_per_s - 0.5 / c.ops_per_s;
    if !(per_a > 0.0 && per_a.is_finite()) {
        return Err(format!(
            "cannot derive writes/s: A ran at {:.0}/s, faster than half its time at C's {:.0}/s reads allows; pass --node-writes",
            a.ops_per_s, c.ops_per_s
        ));
    }
    Ok(NodeFigures {
        reads_per_s: c.ops_per_s,
        writes_per_s: 0.5 / per_a,
        p99_ms: a.latency.p99_ms.max(c.latency.p99_ms),
        source: format!(
            "{} ({}): C {:.0} ops/s, A {:.0} ops/s -> writes 0.5 / (1/{:.0} - 0.5/{:.0})",
            t.label, t.url, c.ops_per_s, a.ops_per_s, a.ops_per_s, c.ops_per_s
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, what: &str) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    }

    #[test]
    fn seeds_back_of_envelope() {
        // 500k reads/s + 100k writes/s, 16-byte keys, 1 KiB values, 100 TB,
        // RF 3, p99 10 ms; a node does 50k reads/s or 20k writes/s (p99 4 ms).
        let d = Demand {
            reads_per_s: 500_000.0,
            writes_per_s: 100_000.0,
            key_bytes: 16.0,
            value_bytes: 1024.0,
            total_bytes: 100e12,
            rf: 3,
            p99_ms: 10.0,
        };
        let n = NodeFigures {
            reads_per_s: 50_000.0,
            writes_per_s: 20_000.0,
            p99_ms: 4.0,
            source: "test".into(),
        };
        let a = Assumptions::defaults(3);
        let s = plan(&d, &n, &a).unwrap();
        // 1. node reads 500k x 3 = 1.5M/s; node writes 100k x 3 = 300k/s.
        close(s.node_reads, 1.5e6, "node reads");
        close(s.node_writes, 3e5, "node writes");
        // 2. busy 1.5M/50k + 300k/20k = 30 + 15 = 45; / 0.5 = 90 nodes.
        close(s.busy_nodes, 45.0, "busy");
        assert_eq!(s.nodes_for_throughput, 90);
        // 3. records 100e12 / 1040 = 9.615384615e10; stored = records x 1072 x 3 x 1.1
        //    = 100e12 x 1072/1040 x 3.3 = 3.401538462e14 B; / (8e12 x 0.7 = 5.6e12)
        //    = 60.74 -> 61 nodes.
        close(s.records, 100e12 / 1040.0, "records");
        close(s.stored_bytes, 100e12 * 1072.0 / 1040.0 * 3.3, "stored");
        assert_eq!(s.nodes_for_disk, 61);
        // 4. max(90, 61, 3) = 90.
        assert_eq!(s.nodes, 90);
        // 5. disk 3.401538462e14 / 90 = 3.779487179e12 B (3.78 TB), provisioned / 0.7 = 5.399e12.
        close(s.disk_per_node, 3.401538462e14 / 90.0, "disk per node");
        close(s.disk_provisioned_per_node, 3.401538462e14 / 90.0 / 0.7, "provisioned");
        //    bloom 9.615384615e10 x 3 / 90 x 10/8 = 4.006410256e9 B;
        //    index 3.779487179e12 / 4096 x 32 = 2.952724359e10 B;
        //    memtables 2 x 256 MiB = 536870912 B; cache 0.01 x 3.779487179e12 = 3.779487179e10 B;
        //    total 4.006410256e9 + 2.952724359e10 + 5.36870912e8 + 3.779487179e10 = 7.186539655e10 B.
        close(s.bloom_per_node, 100e12 / 1040.0 * 3.0 / 90.0 * 10.0 / 8.0, "bloom");
        close(s.index_per_node, s.disk_per_node / 4096.0 * 32.0, "index");
        close(s.memtables_per_node, 536_870_912.0, "memtables");
        close(s.cache_per_node, 0.01 * s.disk_per_node, "cache");
        assert!(
            (s.memory_per_node - 7.186539655e10).abs() < 1e3,
            "memory {}",
            s.memory_per_node
        );
        // 6. client in 500k x 96 + 100k x 1120 = 48e6 + 112e6 = 160e6 B/s;
        //    client out 500k x 1120 + 100k x 80 = 568e6 B/s;
        //    between nodes 100k x 2 x 1200 + 500k x 2 x 1216 = 240e6 + 1216e6 = 1456e6 B/s;
        //    per node in (160e6 + 1456e6) / 90 = 17.955e6 B/s (143.6 Mbit/s),
        //    out (568e6 + 1456e6) / 90 = 22.489e6 B/s.
        close(s.client_in, 160e6, "client in");
        close(s.client_out, 568e6, "client out");
        close(s.internal, 1456e6, "internal");
        close(s.per_node_in, 1616e6 / 90.0, "per node in");
        close(s.per_node_out, 2024e6 / 90.0, "per node out");
        assert!(s.p99_met);
        let text = render(&d, &n, &a, &s);
        assert!(text.contains("cluster: 90 nodes"), "{text}");
        assert!(
            text.contains("= 45.00; at utilization 0.5: ceil(45.00 / 0.5) = 90 nodes"),
            "{text}"
        );
        assert!(text.contains("143.64 Mbit/s"), "{text}");
        // A slower node: more nodes; a tighter objective: flagged.
        let slow = NodeFigures {
            reads_per_s: 25_000.0,
            p99_ms: 20.0,
            ..n.clone()
        };
        let s2 = plan(&d, &slow, &a).unwrap();
        // busy 1.5M/25k + 15 = 75 -> 150 nodes.
        assert_eq!(s2.nodes, 150);
        assert!(!s2.p99_met);
        // Disk-bound: a tiny load still needs 61 nodes for 100 TB.
        let idle = Demand {
            reads_per_s: 10.0,
            writes_per_s: 10.0,
            ..d
        };
        assert_eq!(plan(&idle, &n, &a).map(|s| s.nodes).ok(), Some(61));
    }

    #[test]
    fn writes_are_derived_from_a_and_c() {
        // C 40k reads/s; A 20k ops/s: 1/20k = 0.5/40k + 0.5/w -> 0.5/w = 5e-5 - 1.25e-5
        // = 3.75e-5 -> w = 13333.3/s.
        let json = include_str!("../tests/data/plan_report.json");
        let r: RunReport = serde_json::from_str(json).unwrap();
        let n = node_figures_from_report(&r, None).unwrap();
        close(n.reads_per_s, 40_000.0, "reads");
        close(n.writes_per_s, 0.5 / (1.0 / 20_000.0 - 0.5 / 40_000.0), "writes");
        close(n.p99_ms, 3.0, "p99");
        assert!(node_figures_from_report(&r, Some("cluster")).is_err());
        assert!(node_figures_from_report(&r, Some("nobody")).is_err());
    }
}
