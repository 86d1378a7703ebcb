//! From measured figures to the node's settings.
//!
//! Pure arithmetic over an [`IoProperties`], so it is tested without a disk
//! and the node and `corekv tune` show the same values. Each value carries a
//! sentence saying which figure it came from, which the node prints beside it
//! in its effective configuration.

use crate::props::IoProperties;

/// Share of the measured sequential write bandwidth a memtable flush may use.
/// A flush is on the write path (a full memtable stalls writers), so it gets
/// the larger share; what neither flush nor compaction uses is left for the
/// WAL's writes and fdatasyncs and for reads, which wait behind a full queue.
pub const FLUSH_SHARE: (u64, u64) = (1, 2);

/// Share of the measured sequential write bandwidth compaction may use.
/// Compaction is background work: falling behind costs read amplification,
/// not stalls, until level 0 fills.
pub const COMPACTION_SHARE: (u64, u64) = (1, 4);

/// glommio's own default ring depth, the floor of the derived depth: the node
/// is tested with it, and a shallower ring only adds submission syscalls.
pub const MIN_IO_DEPTH: u64 = 128;

/// The ceiling of the derived depth (a limit on everything: ring memory is
/// allocated per core whether used or not).
pub const MAX_IO_DEPTH: u64 = 1024;

/// Ring entries per I/O the device can usefully keep in flight. The ring
/// also carries every socket operation of the core, so the disk's share is
/// kept small.
pub const RING_ENTRIES_PER_DISK_SLOT: u64 = 16;

/// How many fdatasync-times of data a forced WAL sync in periodic mode may
/// carry: writing `n` times what the disk writes during one fdatasync keeps
/// the sync's fixed cost under 1/(n+1) of the time, while a writer stalled
/// behind it waits about (n+1) fdatasyncs.
pub const GROUP_COMMIT_SYNCS: u64 = 4;

/// Bounds of the derived WAL batch.
pub const MIN_GROUP_COMMIT_BYTES: u64 = 256 << 10;
/// Upper bound of the derived WAL batch (the engine's own default is 8 MiB).
pub const MAX_GROUP_COMMIT_BYTES: u64 = 64 << 20;

/// One derived value and why it is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// The value, in the unit of the setting it sizes.
    pub value: u64,
    /// Which measured figure it came from and how.
    pub reason: String,
}

/// The node settings derived from one io-properties file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// Memtable flush write rate per node, bytes per second (`storage.flush_bytes_per_sec`).
    pub flush_bytes_per_sec: Figure,
    /// Compaction write rate per node, bytes per second (`storage.compaction_bytes_per_sec`).
    pub compaction_bytes_per_sec: Figure,
    /// io_uring submission ring depth per core (`node.io_depth`).
    pub io_depth: Figure,
    /// WAL bytes buffered before a sync is forced in periodic durability
    /// mode, bytes (`storage.wal_max_unsynced_bytes`).
    pub wal_max_unsynced_bytes: Figure,
}

/// Bytes per second, rounded down to whole MiB, at least 1 MiB.
fn mib_floor(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec >> 20).max(1) << 20
}

/// A human figure for a byte rate or size: `2.30 GB/s`-style decimal units
/// for rates, as fio and the anchors print them.
pub fn human_rate(bytes_per_sec: u64) -> String {
    let b = bytes_per_sec as f64;
    if b >= 1e9 {
        format!("{:.2} GB/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB/s", b / 1e6)
    } else {
        format!("{:.1} kB/s", b / 1e3)
    }
}

/// A human figure for a size in binary units.
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The device's useful concurrency: how many reads it completes in the time
/// one read takes alone (Little's law with the depth-1 latency as the
/// unloaded service time), between 1 and the 32 measured.
pub fn device_concurrency(p: &IoProperties) -> u64 {
    let qd1 = p.random_read.qd1.iops.max(1);
    let qd32 = p.random_read.qd32.iops;
    qd32.div_ceil(qd1).clamp(1, 32)
}

/// Derives the node's settings from measured figures.
pub fn derive(p: &IoProperties) -> Derived {
    let write = p.sequential.write_bytes_per_sec;
    let flush = mib_floor(write / FLUSH_SHARE.1 * FLUSH_SHARE.0);
    let compaction = mib_floor(write / COMPACTION_SHARE.1 * COMPACTION_SHARE.0);

    let c = device_concurrency(p);
    let depth = (c.next_power_of_two() * RING_ENTRIES_PER_DISK_SLOT).clamp(MIN_IO_DEPTH, MAX_IO_DEPTH);

    // Bytes the disk writes sequentially during one fdatasync at p99.
    let per_sync = (write as f64 * p.fdatasync.p99_us / 1e6) as u64;
    let batch = per_sync
        .saturating_mul(GROUP_COMMIT_SYNCS)
        .next_power_of_two()
        .clamp(MIN_GROUP_COMMIT_BYTES, MAX_GROUP_COMMIT_BYTES);

    Derived {
        flush_bytes_per_sec: Figure {
            value: flush,
            reason: format!(
                "{}/{} of measured sequential write {}",
                FLUSH_SHARE.0,
                FLUSH_SHARE.1,
                human_rate(write)
            ),
        },
        compaction_bytes_per_sec: Figure {
            value: compaction,
            reason: format!(
                "{}/{} of measured sequential write {}",
                COMPACTION_SHARE.0,
                COMPACTION_SHARE.1,
                human_rate(write)
            ),
        },
        io_depth: Figure {
            value: depth,
            reason: format!(
                "disk keeps ~{c} reads busy ({} IOPS at depth 32 / {} at depth 1), {RING_ENTRIES_PER_DISK_SLOT} ring \
                 entries each rounded to a power of two, within {MIN_IO_DEPTH}..={MAX_IO_DEPTH}",
                p.random_read.qd32.iops, p.random_read.qd1.iops
            ),
        },
        wal_max_unsynced_bytes: Figure {
            value: batch,
            reason: format!(
                "{GROUP_COMMIT_SYNCS} x the {} written during one fdatasync (p99 {:.0} us at {}), \
                 rounded to a power of two, within {}..={}; used in periodic durability mode",
                human_bytes(per_sync),
                p.fdatasync.p99_us,
                human_rate(write),
                human_bytes(MIN_GROUP_COMMIT_BYTES),
                human_bytes(MAX_GROUP_COMMIT_BYTES)
            ),
        },
    }
}
