//! Engine settings.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::compaction::policy::CompactionStyle;
use crate::format::{BodyRef, Token};
use crate::io::Fs;
use crate::sstable::TableOptions;
use crate::wal::WalOptions;

/// Size limits enforced on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest key in bytes (keys must also be non-empty).
    pub max_key: usize,
    /// Largest value in bytes.
    pub max_value: usize,
    /// Largest version metadata in bytes.
    pub max_meta: usize,
    /// Largest encoded write batch in bytes.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key: 1024,
            max_value: 1 << 20,
            max_meta: 64 << 10,
            max_batch: 16 << 20,
        }
    }
}

/// Milliseconds since the Unix epoch. Injectable so tests control expiry.
pub type Clock = Rc<dyn Fn() -> u64>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Rc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// Lets the layer above decide which versions of a key survive compaction.
///
/// The engine first applies its own rules (an expired value counts as a
/// deletion; tombstones past the grace period go at the bottom level). Then,
/// for each key, it calls `retain` with the remaining versions, newest first,
/// and keeps that many of the newest. Returning 0 drops the key: at the bottom
/// level it vanishes, elsewhere a tombstone is written in its place so an
/// older copy in a deeper level cannot come back.
pub trait CompactionFilter {
    /// How many of the newest `versions` to keep.
    fn retain(&self, token: Token, key: &[u8], versions: &[BodyRef<'_>], now_ms: u64) -> usize;
}

/// How table blocks are read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableReads {
    /// O_DIRECT: every block cache miss is a disk read. Memory use is exactly
    /// the block cache; latency does not depend on what else the machine does.
    #[default]
    Direct,
    /// Through the OS page cache: misses in the block cache may be served from
    /// kernel memory. Faster when the data fits in RAM; memory use is then
    /// the block cache plus whatever the kernel keeps.
    Buffered,
}

/// Everything an engine is opened with.
#[derive(Clone)]
pub struct Options {
    /// The file system (real disk or simulated).
    pub fs: Fs,
    /// The data directory.
    pub dir: PathBuf,
    /// A memtable is frozen and flushed past this many bytes.
    pub memtable_bytes: usize,
    /// Fraction in [0, 0.9] by which each memtable's freeze point falls
    /// short of `memtable_bytes`: drawn uniformly from
    /// `[memtable_bytes * (1 - jitter), memtable_bytes]` anew for every
    /// memtable. Replicas take the same writes, so with one fixed size they
    /// all flush at the same moment and every quorum write waits on a
    /// flushing node; staggered, a quorum can be made of the nodes that are
    /// not flushing. 0 (the default) freezes at exactly `memtable_bytes`.
    pub memtable_jitter: f64,
    /// Seed of the jitter's random draws (distinct per node and core, so
    /// their freeze points differ; fixed, so a test run repeats).
    pub memtable_jitter_seed: u64,
    /// Frozen memtables allowed to wait for flush before writes stall.
    pub max_immutable_memtables: usize,
    /// WAL settings (durability mode, segment size).
    pub wal: WalOptions,
    /// SSTable settings (block size, compression, bloom bits).
    pub table: TableOptions,
    /// Block cache size in bytes.
    pub block_cache_bytes: usize,
    /// Put a flushed table's data blocks into the block cache as they are
    /// written (RocksDB's `prepopulate_block_cache = kFlushOnly`): recent
    /// writes are the likeliest reads, and table reads bypass the page
    /// cache, so otherwise the first read of each flushed block is a disk
    /// read. Costs a copy of each block at flush time: of the compressed
    /// on-disk form where compression saved a fifth or more (decoded on its
    /// first read), else of the decoded block. Also compaction output, but
    /// only compressed blocks and only into free room (see
    /// [`crate::sstable::builder::TableBuilder::fill_free_cache`]). Default true.
    pub cache_on_flush: bool,
    /// Row cache size in bytes (0 disables it): the newest version of
    /// recently read keys, so a repeated point read skips the tables
    /// (see [`crate::rowcache`]). Off while a `compaction_filter` is set:
    /// the filter can drop a live value without a write to invalidate it.
    pub row_cache_bytes: usize,
    /// Flushed memtables kept for point reads, newest first, up to this many
    /// bytes counting their shared index (0: none). One hash index over all
    /// of them answers a read of a recent write in one probe, where its
    /// table costs a bloom check, an index search, a block lookup and, on
    /// the first read of a block, its decompression (see
    /// engine/src/recent.rs). They are kept from the newest flush back, so a key
    /// found in one has no newer version in any table (those came from a
    /// newer memtable, which is kept too). Off while a `compaction_filter`
    /// is set, as for the row cache.
    pub retain_flushed_bytes: usize,
    /// Most bytes per second a flush writes; 0 = as fast as the disk takes
    /// them. A flush that writes flat out fills the device queue ahead of the
    /// WAL's fdatasyncs, and every write waits behind it.
    pub flush_bytes_per_sec: u64,
    /// Direct (default) or page-cache table reads.
    pub table_reads: TableReads,
    /// Compaction policy.
    pub compaction: CompactionStyle,
    /// Compaction write bandwidth in bytes per second (0 = unlimited).
    pub compaction_bytes_per_sec: u64,
    /// How long tombstones are kept before compaction may drop them.
    pub tombstone_grace: Duration,
    /// Size limits.
    pub limits: Limits,
    /// The clock for expiry and tombstone ages.
    pub clock: Clock,
    /// Optional version filter for compaction.
    pub compaction_filter: Option<Rc<dyn CompactionFilter>>,
    /// Open without writing anything (snapshots).
    pub read_only: bool,
    /// Run flushes and compactions in background tasks. When off, flushes run
    /// inline when a memtable fills and compaction runs only when asked.
    pub background: bool,
    /// The manifest is rewritten into a new file past this size.
    pub manifest_max_bytes: u64,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("dir", &self.dir)
            .field("memtable_bytes", &self.memtable_bytes)
            .field("memtable_jitter", &self.memtable_jitter)
            .field("wal", &self.wal)
            .field("table", &self.table)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("row_cache_bytes", &self.row_cache_bytes)
            .field("retain_flushed_bytes", &self.retain_flushed_bytes)
            .field("compaction", &self.compaction)
            .field("limits", &self.limits)
            .field("read_only", &self.read_only)
            .field("background", &self.background)
            .finish()
    }
}

impl Options {
    /// Defaults for a data directory on `fs`.
    pub fn new(fs: Fs, dir: impl Into<PathBuf>) -> Options {
        Options {
            fs,
            dir: dir.into(),
            memtable_bytes: 64 << 20,
            memtable_jitter: 0.0,
            memtable_jitter_seed: 0,
            max_immutable_memtables: 2,
            wal: WalOptions::default(),
            table: TableOptions::default(),
            block_cache_bytes: 64 << 20,
            cache_on_flush: true,
            row_cache_bytes: 16 << 20,
            retain_flushed_bytes: 16 << 20,
            flush_bytes_per_sec: 0,
            table_reads: TableReads::Direct,
            compaction: CompactionStyle::default(),
            compaction_bytes_per_sec: 0,
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            limits: Limits::default(),
            clock: system_clock(),
            compaction_filter: None,
            read_only: false,
            background: true,
            manifest_max_bytes: 4 << 20,
        }
    }
}
