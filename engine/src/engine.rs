//! The engine: one per core, tying the WAL, memtables, tables, manifest,
//! cache and compaction together.
//!
//! Write path: validate, append the batch to the WAL (which assigns sequence
//! numbers), insert into the active memtable at once (invisible to reads until
//! durable), wait for the group commit, acknowledge. Read path: memtables
//! newest first, then level 0 newest first, then one table per deeper level,
//! each table guarded by its bloom filter.
//!
//! All state is behind `RefCell`s on one core; no borrow is held across an
//! `.await`. Flush and compaction run as background tasks on the same executor
//! (in a low-share task queue when the caller spawns them there), yielding
//! often so foreground requests keep their latency.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use futures::lock::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::cache::{BlockCache, CacheStats};
use crate::compaction::policy::{self, CompactionPick, FileInfo, PolicyState, StallDecision};
use crate::error::{Error, Result};
use crate::format::{decode_body, BodyRef, Entry, Kind, SeqNo, Token, WriteBatch};
use crate::iter::{LevelSource, MemSource, MergeIter, Source};
use crate::manifest::{self, Manifest, ManifestState, VersionEdit};
use crate::memtable::MemTable;
use crate::notify::{BusyGuard, Notify};
use crate::options::Options;
use crate::recent::Recent;
use crate::rowcache::{RowCache, RowCacheStats, Stamp};
use crate::sstable::{Found, Table, TableBuilder, TableIter, TableMeta};
use crate::version::{TableHandle, Version};
use crate::wal::{Durability, Wal, WalStats, DISK_FULL_RETRY};

/// Where a point read found its version.
enum Hit {
    Mem(SeqNo, Rc<[u8]>),
    Row(SeqNo, Rc<[u8]>),
    Table(Found, Rc<TableHandle>),
}

impl Hit {
    fn seq(&self) -> SeqNo {
        match self {
            Hit::Mem(s, _) | Hit::Row(s, _) => *s,
            Hit::Table(f, _) => f.seq,
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Hit::Mem(_, b) | Hit::Row(_, b) => b,
            Hit::Table(f, _) => f.body(),
        }
    }

    fn corruption(&self, e: crate::error::DecodeError) -> Error {
        match self {
            Hit::Mem(..) => Error::corruption("memtable", 0, e.to_string()),
            Hit::Row(..) => Error::corruption("row cache", 0, e.to_string()),
            Hit::Table(_, t) => Error::corruption(&t.path, 0, format!("undecodable entry body: {e}")),
        }
    }
}

/// A live value returned by a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The value.
    pub value: Vec<u8>,
    /// Version metadata.
    pub meta: Vec<u8>,
    /// Expiry (ms since the epoch), 0 for none.
    pub expiry_ms: u64,
    /// Sequence number of the write.
    pub seq: SeqNo,
}

/// Where a scan starts, or resumes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Token of the last key returned.
    pub token: Token,
    /// The last key returned (the scan resumes strictly after it).
    pub key: Vec<u8>,
}

impl Cursor {
    /// Encodes the cursor for a client: token big-endian, then the key.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.token.to_be_bytes().to_vec();
        v.extend_from_slice(&self.key);
        v
    }

    /// Decodes a cursor from a client.
    pub fn decode(b: &[u8]) -> Result<Cursor> {
        if b.len() < 8 {
            return Err(Error::InvalidArgument("scan cursor shorter than 8 bytes".into()));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        Ok(Cursor {
            token: u64::from_be_bytes(t),
            key: b[8..].to_vec(),
        })
    }
}

/// A scan request over a token range, optionally restricted to a key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// First token of the range (inclusive).
    pub start_token: Token,
    /// Last token of the range (inclusive).
    pub end_token: Token,
    /// Only keys starting with this prefix.
    pub prefix: Vec<u8>,
    /// Resume after this cursor (from a previous page).
    pub after: Option<Cursor>,
    /// Most entries in the page.
    pub limit: usize,
    /// Most entries examined (live or not) before the page ends early with a
    /// cursor, so a range full of tombstones cannot make one call unbounded.
    pub max_examined: usize,
    /// Return tombstones and expired entries too (repair and streaming need them).
    pub include_deleted: bool,
    /// Put the blocks the scan reads into the block cache. Off by default: a
    /// large scan would otherwise evict the blocks point reads keep hot.
    pub fill_cache: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            start_token: 0,
            end_token: Token::MAX,
            prefix: Vec::new(),
            after: None,
            limit: 1000,
            max_examined: 100_000,
            include_deleted: false,
            fill_cache: false,
        }
    }
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Entries in key order (the newest version of each key).
    pub entries: Vec<Entry>,
    /// Where the next page starts; `None` when the range is exhausted.
    pub cursor: Option<Cursor>,
}

/// Engine statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Bytes of keys, values and metadata written by users.
    pub user_bytes_written: u64,
    /// Bytes written to the WAL.
    pub wal_bytes_written: u64,
    /// Bytes written by flushes.
    pub flush_bytes_written: u64,
    /// Bytes read by compactions.
    pub compaction_bytes_read: u64,
    /// Bytes written by compactions.
    pub compaction_bytes_written: u64,
    /// (WAL + flush + compaction bytes written) / user bytes.
    pub write_amplification: f64,
    /// Point reads served.
    pub gets: u64,
    /// Tables whose bloom filter was consulted, per read.
    pub read_amplification: f64,
    /// Bytes of all live tables / bytes of the deepest non-empty level.
    pub space_amplification: f64,
    /// Bloom filter checks.
    pub bloom_checks: u64,
    /// Bloom checks that said "absent" (reads saved).
    pub bloom_negatives: u64,
    /// Bloom checks that said "maybe" for a key the table did not hold.
    pub bloom_false_positives: u64,
    /// Block cache counters.
    pub cache: CacheStats,
    /// Row cache counters.
    pub row_cache: RowCacheStats,
    /// Flushed memtables kept for point reads.
    pub retained_memtables: usize,
    /// Their bytes.
    pub retained_bytes: u64,
    /// Memtable flushes.
    pub flushes: u64,
    /// Compactions run (trivial moves included).
    pub compactions: u64,
    /// Writes that waited for flush or compaction to catch up.
    pub stalls: u64,
    /// Total time writes spent stalled, in microseconds.
    pub stall_micros: u64,
    /// Bytes in memtables (active and frozen).
    pub memtable_bytes: u64,
    /// Frozen memtables waiting for flush.
    pub immutable_memtables: usize,
    /// (tables, bytes) per level.
    pub levels: Vec<(usize, u64)>,
    /// WAL counters.
    pub wal: WalStats,
}

/// Whether an engine can take writes ([`Engine::health`]).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Writes are taken.
    Ok,
    /// The last flush or compaction, or the last WAL segment made ahead,
    /// ran out of space: writes still go to the WAL and the memtables, and
    /// fail with [`Error::DiskFull`] once those are full. Clears by itself
    /// when a retry finds space.
    DiskFull {
        /// The file being written when space ran out.
        path: PathBuf,
    },
    /// Compactions keep failing (not for space): writes fail with
    /// [`Error::CompactionFailing`] once level 0 is full. Clears when a retry
    /// succeeds.
    CompactionFailing {
        /// The last compaction's error.
        reason: String,
    },
    /// A write or sync failed in a way that may have lost data: every write
    /// fails with [`Error::Fenced`] until the engine is reopened.
    Fenced {
        /// What failed.
        reason: String,
    },
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Ok => f.write_str("ok"),
            Health::DiskFull { path } => write!(f, "disk full (while writing {})", path.display()),
            Health::CompactionFailing { reason } => write!(f, "compaction failing: {reason}"),
            Health::Fenced { reason } => write!(f, "fenced: {reason}"),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    user_bytes: u64,
    flush_bytes: u64,
    compaction_read: u64,
    compaction_written: u64,
    gets: u64,
    tables_probed: u64,
    flushes: u64,
    compactions: u64,
    stalls: u64,
    stall_micros: u64,
}

struct Inner {
    opts: Options,
    dir: PathBuf,
    wal: Option<Wal>,
    mem: RefCell<Rc<MemTable>>,
    imm: RefCell<VecDeque<Rc<MemTable>>>,
    version: RefCell<Rc<Version>>,
    manifest: Mutex<Option<Manifest>>,
    cache: Rc<BlockCache>,
    rows: RowCache,
    /// Flushed memtables kept for point reads, behind one index (see
    /// [`Options::retain_flushed_bytes`] and [`crate::recent`]).
    recent: Recent,
    policy: RefCell<PolicyState>,
    obsolete: RefCell<Vec<Rc<TableHandle>>>,
    switching: Cell<bool>,
    flushing: Cell<bool>,
    compacting: Cell<bool>,
    closed: Cell<bool>,
    bg_error: RefCell<Option<String>>,
    /// Set while flushes or compactions fail for lack of space (the file
    /// being written, and when the last attempt failed); cleared by the next
    /// good flush or compaction.
    disk_full: RefCell<Option<(PathBuf, Instant)>>,
    /// The last compaction's error; cleared by the next good compaction. A
    /// writer stalled on a full level 0 gets it rather than waiting (and
    /// waking the compactor) in a loop for a compaction that keeps failing.
    compaction_error: RefCell<Option<String>>,
    /// The active memtable's freeze point (`memtable_bytes` less its jitter).
    mem_limit: Cell<usize>,
    /// Draws each memtable's freeze point.
    jitter_rng: RefCell<SmallRng>,
    /// The stall decision for the current version (computed when it changes,
    /// not on every write).
    stall: Cell<StallDecision>,
    counters: RefCell<Counters>,
    flush_bytes_probe: Cell<u64>,
    rate: RefCell<RateLimiter>,
}

/// Signals between the engine and its background tasks; held apart from the
/// engine so a task waiting on them does not keep the engine alive.
#[derive(Default)]
struct Signals {
    work: Notify,
    progress: Notify,
}

/// A batch applied in memory whose WAL record may not be synced yet
/// ([`Engine::write_staged`]).
#[must_use = "a staged write may be acknowledged only once `durable` returns"]
pub struct StagedWrite {
    engine: Engine,
    /// None for an empty batch (nothing to wait for).
    ticket: Option<crate::wal::Ticket>,
    seq: SeqNo,
}

impl StagedWrite {
    /// Waits until the batch's WAL record is durable (in periodic mode:
    /// accepted) and returns the batch's last sequence number. An error means
    /// the write must not be acknowledged: the WAL is fenced, and whether the
    /// record survives is known only after a reopen.
    pub async fn durable(self) -> Result<SeqNo> {
        if let Some(ticket) = self.ticket {
            self.engine.wal()?.wait(ticket).await?;
            // In periodic mode nothing in the write suspends: give flush and
            // compaction their share when this task's time slice is used up.
            crate::io::yield_if_needed().await;
        }
        Ok(self.seq)
    }
}

/// One core's storage engine. Cheap to clone (a shared handle); `!Send`.
#[derive(Clone)]
pub struct Engine {
    inner: Rc<Inner>,
    signals: Rc<Signals>,
    tasks: Rc<RefCell<Vec<crate::io::TaskHandle>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.inner.dir).finish()
    }
}

/// A token bucket for compaction bandwidth.
#[derive(Debug)]
struct RateLimiter {
    bytes_per_sec: u64,
    available: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_sec,
            available: bytes_per_sec as f64,
            last: Instant::now(),
        }
    }

    /// How long to wait before `bytes` more may be written.
    fn take(&mut self, bytes: u64) -> Option<Duration> {
        if self.bytes_per_sec == 0 {
            return None;
        }
        let now = Instant::now();
        let cap = self.bytes_per_sec as f64;
        self.available = (self.available + now.duration_since(self.last).as_secs_f64() * cap).min(cap);
        self.last = now;
        self.available -= bytes as f64;
        if self.available >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.available / cap))
        }
    }
}

async fn open_table_file(opts: &Options, path: &Path) -> Result<crate::io::File> {
    match opts.table_reads {
        crate::options::TableReads::Direct => opts.fs.open(path, false).await,
        crate::options::TableReads::Buffered => opts.fs.open_buffered(path).await,
    }
}

fn table_name(no: u64) -> String {
    format!("{no:06}.sst")
}

fn parse_table_name(n: &str) -> Option<u64> {
    n.strip_suffix(".sst")?.parse().ok()
}

impl Engine {
    /// Opens (or creates) the engine in `opts.dir`, recovering from the
    /// manifest and the WAL.
    pub async fn open(opts: Options) -> Result<Engine> {
        let fs = opts.fs.clone();
        let mut opts = opts;
        opts.dir = fs.absolute(&opts.dir)?;
        let dir = opts.dir.clone();
        if opts.limits.max_key == 0 || opts.memtable_bytes == 0 {
            return Err(Error::InvalidArgument(
                "max_key and memtable_bytes must be positive".into(),
            ));
        }
        if opts.read_only {
            if !fs.exists(&dir).await {
                return Err(Error::io(&dir, std::io::Error::from(std::io::ErrorKind::NotFound)));
            }
        } else {
            fs.prepare_dir(&dir).await?;
        }
        let cache = Rc::new(BlockCache::new(opts.block_cache_bytes));
        let (number, state) = match manifest::read_latest(&fs, &dir).await? {
            Some(x) => x,
            None if opts.read_only => {
                return Err(Error::corruption(&dir, 0, "no manifest: not a corekv data directory"));
            }
            None => (0, ManifestState::default()),
        };
        // Open every live table; a missing one is damage the operator must see.
        let mut version = Version::default();
        let mut live = BTreeSet::new();
        for (level, files) in state.levels.iter().enumerate() {
            while version.levels.len() <= level {
                version.levels.push(Vec::new());
            }
            for rec in files.values() {
                let path = dir.join(table_name(rec.file_no));
                let file = open_table_file(&opts, &path).await?;
                let table = Table::open(file, rec.file_no, cache.clone()).await?;
                live.insert(rec.file_no);
                version.levels[level].push(Rc::new(TableHandle {
                    rec: rec.clone(),
                    table,
                    path,
                    being_compacted: Cell::new(false),
                }));
            }
        }
        version.normalize();
        let clock = opts.clock.clone();
        let first_mem = Rc::new(MemTable::new(state.min_log_no));
        let mut mems: Vec<Rc<MemTable>> = vec![first_mem];
        let mut max_seq = state.last_seq;
        let limits = opts.limits;
        let mut wal = None;
        if !opts.read_only {
            // Delete tables no manifest names: outputs of a flush or compaction
            // that crashed before its edit was durable.
            for name in fs.list(&dir).await? {
                if let Some(no) = parse_table_name(&name) {
                    if !live.contains(&no) {
                        fs.remove(&dir.join(&name)).await?;
                    }
                }
                if name.ends_with(".sst.tmp") {
                    fs.remove(&dir.join(&name)).await?;
                }
            }
            let memtable_bytes = opts.memtable_bytes;
            let flushed_seq = state.last_seq;
            let (w, _replayed) = Wal::recover(fs.clone(), &dir, opts.wal.clone(), state.min_log_no, |r| {
                match WriteBatch::format_version(r.payload) {
                    Some(v) if v != crate::format::BATCH_FORMAT_VERSION => {
                        return Err(Error::UnsupportedVersion {
                            path: r.path.to_path_buf(),
                            found: v,
                            supported: crate::format::BATCH_FORMAT_VERSION,
                        })
                    }
                    _ => {}
                }
                let it = WriteBatch::iter_encoded(r.payload).map_err(|e| e.at(r.path, r.offset))?;
                let mut body = Vec::new();
                for op in it {
                    let op = op.map_err(|e| e.at(r.path, r.offset))?;
                    if op.key.is_empty() || op.key.len() > limits.max_key.max(1 << 16) {
                        return Err(Error::corruption(r.path, r.offset, "WAL record holds an invalid key"));
                    }
                    max_seq = max_seq.max(op.seq);
                    if op.seq <= flushed_seq {
                        continue;
                    }
                    let cur = mems.last().cloned();
                    let mem = match cur {
                        Some(m) if m.size() < memtable_bytes => m,
                        _ => {
                            let m = Rc::new(MemTable::new(r.log_no));
                            mems.push(m.clone());
                            m
                        }
                    };
                    body.clear();
                    crate::format::encode_body(op.kind, op.time, op.meta, op.value, &mut body);
                    mem.insert(op.token, op.key, op.seq, &body);
                }
                Ok(())
            })
            .await?;
            w.set_last_seq(max_seq);
            wal = Some(w);
        }
        let _ = clock;
        let wal_log = wal.as_ref().map(|w| w.active_log_no()).unwrap_or(0);
        // The newest memtable keeps taking writes if it has room, else a fresh one starts.
        let active = match mems.pop() {
            Some(m) if m.is_empty() => Rc::new(MemTable::new(m.first_log_no().min(wal_log).max(state.min_log_no))),
            Some(m) => {
                mems.push(m);
                Rc::new(MemTable::new(wal_log))
            }
            None => Rc::new(MemTable::new(wal_log)),
        };
        let imm: VecDeque<Rc<MemTable>> = mems.into_iter().filter(|m| !m.is_empty()).collect();
        let st = state.clone();
        let manifest = if opts.read_only {
            None
        } else {
            Some(Manifest::create(fs.clone(), &dir, number + 1, st, opts.manifest_max_bytes).await?)
        };
        let bps = opts.compaction_bytes_per_sec;
        let stall = policy::should_stall(&opts.compaction, &file_infos(&version));
        let inner = Rc::new(Inner {
            dir,
            wal,
            mem: RefCell::new(active),
            imm: RefCell::new(imm),
            version: RefCell::new(Rc::new(version)),
            manifest: Mutex::new(manifest),
            cache,
            // A compaction filter may drop a live put from the tables, which
            // no write would ever invalidate here: no row cache then.
            rows: RowCache::new(if opts.compaction_filter.is_some() {
                0
            } else {
                opts.row_cache_bytes
            }),
            recent: Recent::new(),
            policy: RefCell::new(PolicyState::default()),
            obsolete: RefCell::new(Vec::new()),
            switching: Cell::new(false),
            flushing: Cell::new(false),
            compacting: Cell::new(false),
            closed: Cell::new(false),
            bg_error: RefCell::new(None),
            disk_full: RefCell::new(None),
            compaction_error: RefCell::new(None),
            mem_limit: Cell::new(0),
            jitter_rng: RefCell::new(SmallRng::seed_from_u64(opts.memtable_jitter_seed)),
            stall: Cell::new(stall),
            counters: RefCell::new(Counters::default()),
            flush_bytes_probe: Cell::new(0),
            rate: RefCell::new(RateLimiter::new(bps)),
            opts,
        });
        let engine = Engine {
            inner,
            signals: Rc::new(Signals::default()),
            tasks: Rc::new(RefCell::new(Vec::new())),
        };
        engine.draw_mem_limit();
        if engine.inner.opts.background && !engine.inner.opts.read_only {
            engine.start_background()?;
        } else if !engine.inner.opts.read_only {
            while engine.flush_one().await? {}
        }
        Ok(engine)
    }

    fn start_background(&self) -> Result<()> {
        use crate::io::{spawn_background, Priority};
        let weak = Rc::downgrade(&self.inner);
        let sig = self.signals.clone();
        let flusher = spawn_background(background_loop(weak.clone(), sig.clone(), Job::Flush), Priority::Flush)?;
        let compactor = spawn_background(background_loop(weak.clone(), sig.clone(), Job::Compact), Priority::Bulk)?;
        let mut t = self.tasks.borrow_mut();
        t.push(flusher);
        t.push(compactor);
        if let Some(w) = &self.inner.wal {
            let taken = w.spare_taken();
            t.push(spawn_background(provision_loop(weak.clone(), taken), Priority::Flush)?);
        }
        if let Durability::Periodic(every) = self.inner.opts.wal.durability {
            t.push(spawn_background(periodic_sync(weak, sig, every), Priority::Flush)?);
        }
        Ok(())
    }

    fn engine_of(inner: Rc<Inner>, signals: Rc<Signals>) -> Engine {
        Engine {
            inner,
            signals,
            tasks: Rc::new(RefCell::new(Vec::new())),
        }
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    fn now(&self) -> u64 {
        (self.inner.opts.clock)()
    }

    fn wal(&self) -> Result<&Wal> {
        self.inner.wal.as_ref().ok_or(Error::ReadOnly)
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.inner.opts.limits.max_key;
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > max {
            return Err(Error::KeyTooLarge { len: key.len(), max });
        }
        Ok(())
    }

    fn check_op(&self, key: &[u8], value: &[u8], meta: &[u8]) -> Result<()> {
        self.check_key(key)?;
        let l = self.inner.opts.limits;
        if value.len() > l.max_value {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: l.max_value,
            });
        }
        if meta.len() > l.max_meta {
            return Err(Error::MetaTooLarge {
                len: meta.len(),
                max: l.max_meta,
            });
        }
        Ok(())
    }

    /// Writes `value` under (token, key). `expiry_ms` is an absolute time in ms
    /// since the epoch, 0 for none. Returns the write's sequence number once it
    /// is durable (or, in periodic mode, accepted).
    pub async fn put(&self, token: Token, key: &[u8], value: &[u8], meta: &[u8], expiry_ms: u64) -> Result<SeqNo> {
        self.check_op(key, value, meta)?;
        let mut b = WriteBatch::new();
        b.put(token, key, value, meta, expiry_ms);
        self.write(b).await
    }

    /// Deletes (token, key) by writing a tombstone.
    pub async fn delete(&self, token: Token, key: &[u8], meta: &[u8]) -> Result<SeqNo> {
        self.check_op(key, &[], meta)?;
        let mut b = WriteBatch::new();
        b.delete(token, key, meta, self.now());
        self.write(b).await
    }

    /// Applies a batch atomically: after a crash, all of it or none of it is
    /// there. Returns the last sequence number of the batch.
    pub async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        self.write_staged(batch).await?.durable().await
    }

    /// [`Engine::write`] in two steps: returns once the batch is in the WAL's
    /// buffer and the memtable (reads see it once it is durable), and
    /// [`StagedWrite::durable`] then waits for its WAL record to be synced.
    /// A cluster coordinator uses the gap to send the write to the other
    /// replicas while its own copy syncs; nothing may be acknowledged before
    /// `durable` returns. Staged writes become durable in the order they were
    /// staged.
    pub async fn write_staged(&self, mut batch: WriteBatch) -> Result<StagedWrite> {
        if batch.is_empty() {
            return Ok(StagedWrite {
                engine: self.clone(),
                ticket: None,
                seq: self.wal()?.last_seq(),
            });
        }
        let max_batch = self.inner.opts.limits.max_batch;
        if batch.encoded_len() > max_batch {
            return Err(Error::BatchTooLarge {
                len: batch.encoded_len(),
                max: max_batch,
            });
        }
        if batch.len() > crate::format::MAX_BATCH_OPS {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} operations; at most {} fit a WAL record",
                batch.len(),
                crate::format::MAX_BATCH_OPS
            )));
        }
        let mut user_bytes = 0u64;
        for op in batch.iter() {
            let op = op.map_err(|e| Error::InvalidArgument(format!("malformed batch: {e}")))?;
            self.check_op(op.key, op.value, op.meta)?;
            user_bytes += (op.key.len() + op.value.len() + op.meta.len()) as u64;
        }
        self.check_bg_error()?;
        self.make_room().await?;
        let wal = self.wal()?;
        let count = batch.len() as u64;
        let len = batch.encoded_len();
        let (ticket, base) = wal.append(len, count, |base| batch.seal(base).to_vec()).await?;
        // Same poll as the append: the memtable that owns this record's WAL segment.
        {
            let mem = self.inner.mem.borrow().clone();
            let mut body = Vec::new();
            let enc = batch.seal(base);
            let it =
                WriteBatch::iter_encoded(enc).map_err(|e| Error::InvalidArgument(format!("malformed batch: {e}")))?;
            for op in it {
                let op = op.map_err(|e| Error::InvalidArgument(format!("malformed batch: {e}")))?;
                body.clear();
                crate::format::encode_body(op.kind, op.time, op.meta, op.value, &mut body);
                mem.insert(op.token, op.key, op.seq, &body);
                if self.inner.rows.enabled() {
                    let h = crate::filter::hash_key(op.token, op.key);
                    self.inner.rows.invalidate(h, op.token, op.key);
                }
            }
        }
        self.inner.counters.borrow_mut().user_bytes += user_bytes;
        Ok(StagedWrite {
            engine: self.clone(),
            ticket: Some(ticket),
            seq: base + count - 1,
        })
    }

    fn check_bg_error(&self) -> Result<()> {
        if let Some(e) = self.inner.bg_error.borrow().as_ref() {
            return Err(Error::Fenced {
                path: self.inner.dir.clone(),
                reason: e.clone(),
            });
        }
        Ok(())
    }

    /// Refuses every later write until the engine is reopened, saying why
    /// (once, at ERROR: an operator must see it).
    fn fence(&self, reason: String) {
        let mut bg = self.inner.bg_error.borrow_mut();
        if bg.is_none() {
            tracing::error!(
                dir = %self.inner.dir.display(),
                reason = %reason,
                "fencing writes: nothing more is acknowledged until the engine is reopened"
            );
            *bg = Some(reason);
        }
    }

    /// Records that a flush or compaction ran out of space (`Some`) or that
    /// one succeeded (`None`), logging the transitions only: while the disk
    /// stays full the background tasks retry every second.
    fn set_disk_full(&self, path: Option<PathBuf>) {
        let mut d = self.inner.disk_full.borrow_mut();
        match (&*d, &path) {
            (None, Some(p)) => tracing::warn!(
                dir = %self.inner.dir.display(),
                file = %p.display(),
                "disk full: flushes and compactions wait for space (retried every second); writes fail once the memtables are full"
            ),
            (Some(_), None) => {
                tracing::info!(dir = %self.inner.dir.display(), "disk space available again: flushes resume")
            }
            _ => {}
        }
        *d = path.map(|p| (p, Instant::now()));
    }

    /// Whether the engine can take writes, and if not, why: what an operator
    /// needs to see (the node reports it in INFO and `corekv status`).
    pub fn health(&self) -> Health {
        if let Some(Err(Error::Fenced { path, reason })) = self.inner.wal.as_ref().map(|w| w.check_fenced()) {
            return Health::Fenced {
                reason: format!("failed write or sync of {}: {reason}", path.display()),
            };
        }
        if let Some(reason) = self.inner.bg_error.borrow().clone() {
            return Health::Fenced { reason };
        }
        let full = self.inner.disk_full.borrow().clone().map(|(p, _)| p);
        if let Some(path) = full.or_else(|| self.inner.wal.as_ref().and_then(|w| w.out_of_space())) {
            return Health::DiskFull { path };
        }
        if let Some(reason) = self.inner.compaction_error.borrow().clone() {
            return Health::CompactionFailing { reason };
        }
        Health::Ok
    }

    /// Switches a full memtable and stalls while flush or compaction is too far behind.
    async fn make_room(&self) -> Result<()> {
        let mut stalled: Option<Instant> = None;
        let mut retried = false;
        loop {
            self.check_bg_error()?;
            self.wal()?.check_fenced()?;
            let imm_full = self.inner.imm.borrow().len() >= self.inner.opts.max_immutable_memtables.max(1);
            let l0_stop = self.inner.stall.get() == StallDecision::Stop;
            let mem_full = self.inner.mem.borrow().size() >= self.inner.mem_limit.get();
            if !self.inner.opts.background {
                if mem_full {
                    // Older frozen memtables first (a flush may have failed on a full disk).
                    while self.flush_one().await? {}
                    self.switch_memtable().await?;
                    while self.flush_one().await? {}
                }
                break;
            }
            if (mem_full && imm_full) || l0_stop {
                let full = self.inner.disk_full.borrow().clone();
                if let Some((path, failed_at)) = full {
                    if retried || failed_at.elapsed() < DISK_FULL_RETRY {
                        return Err(Error::DiskFull { path });
                    }
                    // Space may have come back since the last attempt: ask
                    // for one now and wait for its outcome (bounded), rather
                    // than refuse writes until the background's next retry,
                    // up to a second after space is freed. At most one
                    // attempt per DISK_FULL_RETRY while the disk stays full.
                    retried = true;
                    self.signals.work.notify();
                    futures::future::select(
                        Box::pin(self.signals.progress.notified()),
                        Box::pin(crate::io::sleep(DISK_FULL_RETRY * 10)),
                    )
                    .await;
                    continue;
                }
                if l0_stop {
                    if let Some(reason) = self.inner.compaction_error.borrow().clone() {
                        return Err(Error::CompactionFailing { reason });
                    }
                }
                stalled.get_or_insert_with(Instant::now);
                self.signals.work.notify();
                self.signals.progress.notified().await;
                continue;
            }
            if mem_full {
                self.switch_memtable().await?;
            }
            break;
        }
        if let Some(t) = stalled {
            let mut c = self.inner.counters.borrow_mut();
            c.stalls += 1;
            c.stall_micros += t.elapsed().as_micros() as u64;
        }
        Ok(())
    }

    /// Freezes the active memtable and starts a new one with a new WAL segment.
    async fn switch_memtable(&self) -> Result<()> {
        if self.inner.mem.borrow().is_empty() {
            return Ok(());
        }
        let Some(_busy) = BusyGuard::try_take(&self.inner.switching, &self.signals.progress) else {
            self.signals.progress.notified().await;
            return Ok(());
        };
        let log_no = self.wal()?.rotate().await?;
        // Synchronous with the rotation: no write can fall between them.
        let fresh = Rc::new(MemTable::new(log_no));
        let old = std::mem::replace(&mut *self.inner.mem.borrow_mut(), fresh);
        self.inner.imm.borrow_mut().push_back(old);
        self.draw_mem_limit();
        self.signals.work.notify();
        Ok(())
    }

    /// Picks the freeze point of the memtable just started (see
    /// [`Options::memtable_jitter`]).
    fn draw_mem_limit(&self) {
        let full = self.inner.opts.memtable_bytes;
        let jitter = self.inner.opts.memtable_jitter.clamp(0.0, 0.9);
        let limit = if jitter > 0.0 {
            let short: f64 = self.inner.jitter_rng.borrow_mut().gen_range(0.0..jitter);
            // In (0.1 * full, full]: the cast cannot overflow, and the
            // max keeps a tiny memtable budget from rounding to zero.
            ((full as f64) * (1.0 - short)) as usize
        } else {
            full
        };
        self.inner.mem_limit.set(limit.clamp(1, full.max(1)));
    }

    /// Finds the newest stored version of (token, key).
    async fn lookup(&self, token: Token, key: &[u8]) -> Result<Option<Hit>> {
        self.check_key(key)?;
        let read_seq = self.inner.wal.as_ref().map_or(SeqNo::MAX, |w| w.visible_seq());
        self.inner.counters.borrow_mut().gets += 1;
        let mh = crate::memtable::index_hash(key);
        if let Some((seq, body)) = self.inner.mem.borrow().get_hashed(mh, token, key, read_seq) {
            return Ok(Some(Hit::Mem(seq, body)));
        }
        for m in self.inner.imm.borrow().iter().rev() {
            if let Some((seq, body)) = m.get_hashed(mh, token, key, read_seq) {
                return Ok(Some(Hit::Mem(seq, body)));
            }
        }
        // Everything kept is flushed, so durable and visible.
        if let Some((seq, body)) = self.inner.recent.get(mh, token, key) {
            return Ok(Some(Hit::Mem(seq, body)));
        }
        let hash = crate::filter::hash_key(token, key);
        let rows = &self.inner.rows;
        let stamp = if rows.enabled() {
            if let Some((seq, body)) = rows.get(hash, token, key) {
                match decode_body(&body) {
                    Ok(b) if b.is_live(|| self.now()) => return Ok(Some(Hit::Row(seq, body))),
                    // Expired since it was cached: the tables decide (a
                    // compaction may have dropped it).
                    _ => rows.remove(hash, token, key),
                }
            }
            Some(rows.stamp(hash))
        } else {
            None
        };
        let version = self.inner.version.borrow().clone();
        let mut probed = 0u64;
        let mut best: Option<(Found, Rc<TableHandle>)> = None;
        if let Some(l0) = version.levels.first() {
            for t in l0 {
                if best.as_ref().is_some_and(|b| b.0.seq >= t.rec.max_seq) {
                    break;
                }
                if !t.covers(token, key) {
                    continue;
                }
                probed += 1;
                if let Some(f) = t.table.get_ref_hashed(token, key, SeqNo::MAX, hash).await? {
                    if best.as_ref().is_none_or(|b| f.seq > b.0.seq) {
                        best = Some((f, t.clone()));
                    }
                }
            }
        }
        if best.is_none() {
            for level in 1..version.levels.len() {
                if let Some(t) = version.find_in_level(level, token, key) {
                    probed += 1;
                    if let Some(f) = t.table.get_ref_hashed(token, key, SeqNo::MAX, hash).await? {
                        best = Some((f, t.clone()));
                        break;
                    }
                }
            }
        }
        self.inner.counters.borrow_mut().tables_probed += probed;
        if let (Some(stamp), Some((f, _))) = (stamp, &best) {
            self.fill_row_cache(stamp, hash, token, key, &version, f.seq, f.body());
        }
        Ok(best.map(|(f, t)| Hit::Table(f, t)))
    }

    /// Caches what a point read found in the tables, unless something may
    /// have changed (token, key) while it read (rules in [`crate::rowcache`]).
    #[allow(clippy::too_many_arguments)]
    fn fill_row_cache(
        &self,
        stamp: Stamp,
        hash: u64,
        token: Token,
        key: &[u8],
        read_from: &Rc<Version>,
        seq: SeqNo,
        body: &[u8],
    ) {
        let rows = &self.inner.rows;
        if !matches!(decode_body(body), Ok(b) if b.kind == Kind::Put && b.is_live(|| self.now())) {
            return;
        }
        // A flush or compaction installed other tables while this read
        // awaited blocks: what it found may already be shadowed there.
        let same_tables = Rc::ptr_eq(read_from, &self.inner.version.borrow());
        // Any version in a memtable, visible yet or not, will reach a table
        // later; the cached row would then be stale.
        let in_mem = self.inner.mem.borrow().get(token, key, SeqNo::MAX).is_some()
            || self
                .inner
                .imm
                .borrow()
                .iter()
                .any(|m| m.get(token, key, SeqNo::MAX).is_some());
        if !same_tables || in_mem {
            rows.note_raced();
            return;
        }
        rows.insert(hash, stamp, token, key, seq, body);
    }

    /// Reads the newest version of (token, key), tombstones included and
    /// expiry not applied (the cluster layer needs both).
    pub async fn get_entry(&self, token: Token, key: &[u8]) -> Result<Option<Entry>> {
        match self.lookup(token, key).await? {
            None => Ok(None),
            Some(h) => Entry::from_body(token, key, h.seq(), h.body())
                .map(Some)
                .map_err(|e| h.corruption(e)),
        }
    }

    /// Reads the live value of (token, key): `None` if absent, deleted or expired.
    pub async fn get(&self, token: Token, key: &[u8]) -> Result<Option<Record>> {
        let Some(h) = self.lookup(token, key).await? else {
            return Ok(None);
        };
        let b = decode_body(h.body()).map_err(|e| h.corruption(e))?;
        if !b.is_live(|| self.now()) {
            return Ok(None);
        }
        Ok(Some(Record {
            value: b.value.to_vec(),
            meta: b.meta.to_vec(),
            expiry_ms: b.time,
            seq: h.seq(),
        }))
    }

    fn sources(&self, read_seq: SeqNo, fill_cache: bool) -> Vec<Source> {
        let mut sources = vec![Source::Mem(MemSource::new(self.inner.mem.borrow().clone(), read_seq))];
        for m in self.inner.imm.borrow().iter().rev() {
            sources.push(Source::Mem(MemSource::new(m.clone(), read_seq)));
        }
        let version = self.inner.version.borrow().clone();
        for (i, level) in version.levels.iter().enumerate() {
            if i == 0 {
                for t in level {
                    let mut it = TableIter::new(t.table.clone());
                    it.set_fill_cache(fill_cache);
                    sources.push(Source::Table(Box::new(it)));
                }
            } else if !level.is_empty() {
                sources.push(Source::Level(LevelSource::new(level.clone(), fill_cache)));
            }
        }
        sources
    }

    /// Returns one page of live entries (newest version of each key) in
    /// (token, key) order within the token range and prefix.
    pub async fn scan(&self, o: &ScanOptions) -> Result<ScanPage> {
        let read_seq = self.inner.wal.as_ref().map_or(SeqNo::MAX, |w| w.visible_seq());
        let now = self.now();
        let mut it = MergeIter::new(self.sources(read_seq, o.fill_cache));
        match &o.after {
            Some(c) => {
                let mut k = c.key.clone();
                k.push(0); // the smallest key after c.key
                it.seek(c.token, &k).await?;
            }
            None => {
                // Within one token, keys with the prefix are contiguous: seek to it.
                let start = if o.start_token == o.end_token {
                    o.prefix.clone()
                } else {
                    Vec::new()
                };
                it.seek(o.start_token, &start).await?;
            }
        }
        let mut out = Vec::new();
        let mut last: Option<(Token, Vec<u8>)> = None;
        let mut examined = 0usize;
        let limit = o.limit.max(1);
        while it.valid() {
            let (token, key, seq, body) = it.current();
            if token > o.end_token {
                return Ok(ScanPage {
                    entries: out,
                    cursor: None,
                });
            }
            let dup = last.as_ref().is_some_and(|(t, k)| *t == token && k.as_slice() == key);
            if !dup {
                last = Some((token, key.to_vec()));
                examined += 1;
                if token >= o.start_token && key.starts_with(&o.prefix) {
                    let b = decode_body(body).map_err(|e| Error::corruption(&self.inner.dir, 0, e.to_string()))?;
                    if o.include_deleted || b.is_live(|| now) {
                        out.push(b.to_entry(token, key, seq));
                    }
                } else if o.start_token == o.end_token && token == o.start_token && key > o.prefix.as_slice() {
                    // Past the prefix inside a single token: nothing more can match.
                    return Ok(ScanPage {
                        entries: out,
                        cursor: None,
                    });
                }
                if out.len() >= limit || examined >= o.max_examined {
                    let cursor = last.take().map(|(token, key)| Cursor { token, key });
                    return Ok(ScanPage { entries: out, cursor });
                }
                crate::io::yield_if_needed().await;
            }
            it.advance().await?;
        }
        Ok(ScanPage {
            entries: out,
            cursor: None,
        })
    }

    /// Flushes every memtable to tables (used by snapshots, tests and shutdown).
    pub async fn flush(&self) -> Result<()> {
        self.switch_memtable().await?;
        while self.flush_one().await? {}
        Ok(())
    }

    /// Flushes the oldest frozen memtable. Returns false if there was none.
    async fn flush_one(&self) -> Result<bool> {
        let Some(mem) = self.inner.imm.borrow().front().cloned() else {
            return Ok(false);
        };
        let Some(busy) = BusyGuard::try_take(&self.inner.flushing, &self.signals.progress) else {
            // Another task is flushing: wait for it rather than race it.
            self.signals.progress.notified().await;
            return Ok(!self.inner.imm.borrow().is_empty());
        };
        let r = self.flush_mem(mem).await;
        drop(busy);
        match &r {
            Ok(()) => self.set_disk_full(None),
            // Out of space: nothing is lost (the memtable and its WAL stay);
            // retry later, and meanwhile writers that would stall get the error.
            Err(Error::DiskFull { path }) => self.set_disk_full(Some(path.clone())),
            // Already fenced (the WAL or the manifest), with its own reason.
            Err(Error::Closed | Error::Fenced { .. }) => {}
            Err(e) => self.fence(format!("memtable flush failed: {e}")),
        }
        r.map(|_| true)
    }

    async fn flush_mem(&self, mem: Rc<MemTable>) -> Result<()> {
        let wal = self.wal()?;
        // The table must not hold a write the WAL could still lose and later
        // replay differently; sync first (cheap: once per memtable).
        wal.sync_now().await?;
        let now = self.now();
        let file_no = {
            let mut m = self.inner.manifest.lock().await;
            m.as_mut().ok_or(Error::ReadOnly)?.next_file_no()
        };
        let path = self.inner.dir.join(table_name(file_no));
        let r = self.flush_to_table(&mem, &path, file_no, now).await;
        if r.is_err() {
            // Blocks the builder cached for a table that will not be installed.
            self.inner.cache.remove_file(file_no);
        }
        if r.is_err() && self.inner.bg_error.borrow().is_none() {
            // Free the space a failed flush used; the memtable and its WAL remain.
            let _ = self.inner.opts.fs.remove(&path).await;
        }
        r
    }

    async fn flush_to_table(&self, mem: &Rc<MemTable>, path: &Path, file_no: u64, now: u64) -> Result<()> {
        let wal = self.wal()?;
        let path = path.to_path_buf();
        let file = self.inner.opts.fs.create(&path).await?;
        let mut topts = self.inner.opts.table.clone();
        topts.created_ms = now;
        let mut b = TableBuilder::new(file, topts, file_no);
        if self.inner.opts.cache_on_flush {
            b = b.fill_cache(self.inner.cache.clone());
        }
        let mut src = MemSource::new(mem.clone(), SeqNo::MAX);
        src.seek_to_first();
        let mut n = 0u64;
        let started = Instant::now();
        let rate = self.inner.opts.flush_bytes_per_sec;
        while src.valid() {
            let (k, body) = src.cur();
            b.add(k.token, &k.key, k.seq(), body).await?;
            src.advance();
            n += 1;
            if n.is_multiple_of(1024) {
                if rate > 0 {
                    // Pace to the rate: sleep off whatever we are ahead of it.
                    let due = Duration::from_secs_f64(b.estimated_size() as f64 / rate as f64);
                    if let Some(ahead) = due.checked_sub(started.elapsed()) {
                        crate::io::sleep(ahead).await;
                    }
                }
                crate::io::yield_if_needed().await;
            }
        }
        let built = started.elapsed();
        let meta = b.finish().await?;
        let finished = started.elapsed();
        self.inner.opts.fs.sync_dir(&self.inner.dir).await?;
        let file = open_table_file(&self.inner.opts, &path).await?;
        let table = Table::open(file, file_no, self.inner.cache.clone()).await?;
        // The builder stamped `created_ms` from the table options.
        let rec = meta.clone();
        let handle = Rc::new(TableHandle {
            rec: rec.clone(),
            table,
            path,
            being_compacted: Cell::new(false),
        });
        let min_log_no = {
            let imm = self.inner.imm.borrow();
            imm.get(1)
                .map_or_else(|| self.inner.mem.borrow().first_log_no(), |m| m.first_log_no())
        };
        {
            let mut m = self.inner.manifest.lock().await;
            let m = m.as_mut().ok_or(Error::ReadOnly)?;
            let edit = VersionEdit {
                added: vec![(0, rec)],
                last_seq: Some(mem.max_seq()),
                min_log_no: Some(min_log_no),
                ..VersionEdit::default()
            };
            self.manifest_append(m, &edit).await?;
            let mut v = (**self.inner.version.borrow()).clone();
            if v.levels.is_empty() {
                v.levels.push(Vec::new());
            }
            v.levels[0].push(handle);
            v.normalize();
            self.install(v);
            let popped = self.inner.imm.borrow_mut().pop_front();
            debug_assert!(popped.as_ref().is_some_and(|p| Rc::ptr_eq(p, mem)));
            // In the same poll as the install: a read sees the memtable among
            // the kept ones from the moment it left `imm`.
            if let Some(p) = popped {
                self.retain_flushed(p);
            }
        }
        wal.release_below(min_log_no).await?;
        // The memtable just kept goes into the kept ones' index (a slice at a
        // time; reads probe it directly until then).
        self.inner.recent.absorb().await;
        tracing::debug!(
            entries = n,
            bytes = meta.size,
            build_ms = built.as_millis() as u64,
            finish_ms = (finished - built).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "memtable flushed"
        );
        let mut c = self.inner.counters.borrow_mut();
        c.flushes += 1;
        c.flush_bytes += meta.size;
        self.inner
            .flush_bytes_probe
            .set(self.inner.flush_bytes_probe.get() + meta.size);
        Ok(())
    }

    /// Keeps a just-flushed memtable for point reads, dropping the oldest
    /// kept ones past the budget (see [`Options::retain_flushed_bytes`]);
    /// [`Recent::absorb`] indexes it later.
    fn retain_flushed(&self, m: Rc<MemTable>) {
        let budget = if self.inner.opts.compaction_filter.is_some() {
            0
        } else {
            self.inner.opts.retain_flushed_bytes
        };
        self.inner.recent.keep(m, budget);
    }

    /// Runs compactions until the policy has nothing to do.
    pub async fn compact(&self) -> Result<()> {
        while self.compact_one().await? {}
        Ok(())
    }

    /// Runs one compaction if the policy picks one. Returns whether it did.
    pub async fn compact_one(&self) -> Result<bool> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly);
        }
        if self.inner.compacting.get() {
            self.signals.progress.notified().await;
            return Ok(true);
        }
        if self.inner.closed.get() {
            return Ok(false);
        }
        let pick = {
            let v = self.inner.version.borrow().clone();
            let infos = file_infos(&v);
            let mut ps = self.inner.policy.borrow_mut();
            policy::pick(&self.inner.opts.compaction, &mut ps, &infos, self.now())
        };
        let Some(pick) = pick else { return Ok(false) };
        let busy = BusyGuard::try_take(&self.inner.compacting, &self.signals.progress);
        let r = self.run_compaction(pick).await;
        match &r {
            Ok(()) => {
                *self.inner.compaction_error.borrow_mut() = None;
                // Its outputs were written: there is space again.
                self.set_disk_full(None);
            }
            Err(Error::Closed) => {}
            Err(Error::DiskFull { path }) => self.set_disk_full(Some(path.clone())),
            Err(e) => *self.inner.compaction_error.borrow_mut() = Some(e.to_string()),
        }
        drop(busy);
        self.purge_obsolete().await?;
        r.map(|_| true)
    }

    /// Compacts every table into one sorted run at the bottom level (what an
    /// operator's `compact` asks for): afterwards no overwritten version, no
    /// expired value and no tombstone past its grace period remains on disk.
    pub async fn compact_range_all(&self) -> Result<()> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly);
        }
        self.flush().await?;
        let busy = loop {
            match BusyGuard::try_take(&self.inner.compacting, &self.signals.progress) {
                Some(b) => break b,
                None => self.signals.progress.notified().await,
            }
        };
        let v = self.inner.version.borrow().clone();
        let inputs: Vec<(usize, u64)> = v
            .levels
            .iter()
            .enumerate()
            .flat_map(|(l, ts)| ts.iter().map(move |t| (l, t.rec.file_no)))
            .collect();
        if inputs.is_empty() {
            return Ok(());
        }
        let (output_level, target_file_size) = match &self.inner.opts.compaction {
            policy::CompactionStyle::Leveled(lo) => {
                let deepest = v.levels.iter().rposition(|l| !l.is_empty()).unwrap_or(0);
                (deepest.max(1), lo.target_file_size_base)
            }
            _ => (0, u64::MAX),
        };
        let pick = CompactionPick {
            inputs,
            output_level,
            bottommost: true,
            trivial_move: false,
            target_file_size,
            reason: policy::PickReason::Manual,
        };
        let r = self.run_compaction(pick).await;
        drop(busy);
        self.purge_obsolete().await?;
        r
    }

    /// How many versions of a key are stored (memtables and tables, tombstones
    /// included): a diagnostic for tools and tests.
    pub async fn versions_of(&self, token: Token, key: &[u8]) -> Result<usize> {
        let mut it = MergeIter::new(self.sources(SeqNo::MAX, false));
        it.seek(token, key).await?;
        let mut n = 0;
        while it.valid() {
            let (t, k, _, _) = it.current();
            if t != token || k != key {
                break;
            }
            n += 1;
            it.advance().await?;
        }
        Ok(n)
    }

    async fn run_compaction(&self, pick: CompactionPick) -> Result<()> {
        let version = self.inner.version.borrow().clone();
        let mut inputs: Vec<(usize, Rc<TableHandle>)> = Vec::new();
        for (level, no) in &pick.inputs {
            let t = version
                .levels
                .get(*level)
                .and_then(|l| l.iter().find(|t| t.rec.file_no == *no))
                .ok_or_else(|| Error::InvalidArgument(format!("compaction input {no} not live")))?;
            t.being_compacted.set(true);
            inputs.push((*level, t.clone()));
        }
        let mut made = Vec::new();
        let r = self.compact_inputs(&pick, &inputs, &mut made).await;
        if r.is_err() {
            for (no, _) in &made {
                // Blocks the builders cached for tables never installed.
                self.inner.cache.remove_file(*no);
            }
        }
        if r.is_err() && self.inner.bg_error.borrow().is_none() {
            for (_, p) in &made {
                let _ = self.inner.opts.fs.remove(p).await;
            }
        }
        for (_, t) in &inputs {
            t.being_compacted.set(false);
        }
        r
    }

    async fn compact_inputs(
        &self,
        pick: &CompactionPick,
        inputs: &[(usize, Rc<TableHandle>)],
        made: &mut Vec<(u64, PathBuf)>,
    ) -> Result<()> {
        let now = self.now();
        let out_level = pick.output_level;
        if pick.trivial_move && inputs.len() == 1 {
            let (lvl, t) = &inputs[0];
            let mut m = self.inner.manifest.lock().await;
            let m = m.as_mut().ok_or(Error::ReadOnly)?;
            let edit = VersionEdit {
                removed: vec![(*lvl, t.rec.file_no)],
                added: vec![(out_level, t.rec.clone())],
                ..VersionEdit::default()
            };
            self.manifest_append(m, &edit).await?;
            let mut v = (**self.inner.version.borrow()).clone();
            v.levels[*lvl].retain(|x| !Rc::ptr_eq(x, t));
            while v.levels.len() <= out_level {
                v.levels.push(Vec::new());
            }
            v.levels[out_level].push(t.clone());
            v.normalize();
            self.install(v);
            self.inner.counters.borrow_mut().compactions += 1;
            return Ok(());
        }
        let sources = inputs
            .iter()
            .map(|(_, t)| {
                let mut it = TableIter::new(t.table.clone());
                // Compaction reads each block once: it must not evict the hot set.
                it.set_fill_cache(false);
                Source::Table(Box::new(it))
            })
            .collect();
        let mut it = MergeIter::new(sources);
        it.seek_to_first().await?;
        let grace_ms = self.inner.opts.tombstone_grace.as_millis() as u64;
        let created = inputs.iter().map(|(_, t)| t.rec.created_ms).max().unwrap_or(now);
        let filter = self.inner.opts.compaction_filter.clone();
        let mut outputs: Vec<(TableMeta, PathBuf)> = Vec::new();
        let mut builder: Option<(TableBuilder, PathBuf)> = None;
        let mut versions: Vec<(SeqNo, Vec<u8>)> = Vec::new();
        let mut read_bytes: u64 = inputs.iter().map(|(_, t)| t.rec.size).sum();
        let mut written_probe = 0u64;
        loop {
            // Gather every version of the next key, newest first.
            versions.clear();
            let Some((token, key)) = (if it.valid() {
                let (t, k, _, _) = it.current();
                Some((t, k.to_vec()))
            } else {
                None
            }) else {
                break;
            };
            while it.valid() {
                let (t, k, s, b) = it.current();
                if t != token || k != key.as_slice() {
                    break;
                }
                versions.push((s, b.to_vec()));
                it.advance().await?;
            }
            let keep = decide(
                &versions,
                token,
                &key,
                now,
                grace_ms,
                pick.bottommost,
                filter.as_deref(),
            )
            .map_err(|e| Error::corruption(&inputs[0].1.path, 0, e.to_string()))?;
            for (seq, body) in keep {
                if builder
                    .as_ref()
                    .is_some_and(|(b, _)| b.estimated_size() >= pick.target_file_size)
                {
                    if let Some((b, p)) = builder.take() {
                        outputs.push((b.finish().await?, p));
                    }
                }
                if builder.is_none() {
                    let file_no = {
                        let mut m = self.inner.manifest.lock().await;
                        m.as_mut().ok_or(Error::ReadOnly)?.next_file_no()
                    };
                    let path = self.inner.dir.join(table_name(file_no));
                    made.push((file_no, path.clone()));
                    let file = self.inner.opts.fs.create(&path).await?;
                    let mut topts = self.inner.opts.table.clone();
                    topts.created_ms = created;
                    let mut b = TableBuilder::new(file, topts, file_no);
                    if self.inner.opts.cache_on_flush {
                        b = b.fill_free_cache(self.inner.cache.clone());
                    }
                    builder = Some((b, path));
                }
                if let Some((b, _)) = builder.as_mut() {
                    let before = b.estimated_size();
                    b.add(token, &key, seq, &body).await?;
                    written_probe += b.estimated_size().saturating_sub(before);
                }
            }
            if written_probe >= 256 << 10 {
                let wait = self.inner.rate.borrow_mut().take(written_probe);
                written_probe = 0;
                if let Some(d) = wait {
                    crate::io::sleep(d).await;
                }
            }
            crate::io::yield_if_needed().await;
            if self.inner.closed.get() {
                // Shutting down: drop the partial outputs; the next open deletes
                // any file the manifest does not name.
                return Err(Error::Closed);
            }
        }
        if let Some((b, p)) = builder.take() {
            outputs.push((b.finish().await?, p));
        }
        self.inner.opts.fs.sync_dir(&self.inner.dir).await?;
        let mut handles = Vec::new();
        let mut written = 0;
        for (meta, path) in &outputs {
            if meta.entries == 0 {
                continue;
            }
            let file = open_table_file(&self.inner.opts, path).await?;
            let table = Table::open(file, meta.file_no, self.inner.cache.clone()).await?;
            written += meta.size;
            handles.push(Rc::new(TableHandle {
                rec: meta.clone(), // created_ms stamped by the builder
                table,
                path: path.clone(),
                being_compacted: Cell::new(false),
            }));
        }
        {
            let mut m = self.inner.manifest.lock().await;
            let m = m.as_mut().ok_or(Error::ReadOnly)?;
            let edit = VersionEdit {
                removed: inputs.iter().map(|(l, t)| (*l, t.rec.file_no)).collect(),
                added: handles.iter().map(|h| (out_level, h.rec.clone())).collect(),
                ..VersionEdit::default()
            };
            self.manifest_append(m, &edit).await?;
            let mut v = (**self.inner.version.borrow()).clone();
            for (l, t) in inputs {
                v.levels[*l].retain(|x| !Rc::ptr_eq(x, t));
            }
            while v.levels.len() <= out_level {
                v.levels.push(Vec::new());
            }
            v.levels[out_level].extend(handles.iter().cloned());
            v.normalize();
            self.install(v);
            self.inner
                .obsolete
                .borrow_mut()
                .extend(inputs.iter().map(|(_, t)| t.clone()));
        }
        // Empty outputs (everything dropped) were never added: remove their files.
        for (meta, path) in &outputs {
            if meta.entries == 0 {
                self.inner.opts.fs.remove(path).await?;
            }
        }
        read_bytes = read_bytes.max(1);
        let mut c = self.inner.counters.borrow_mut();
        c.compactions += 1;
        c.compaction_read += read_bytes;
        c.compaction_written += written;
        Ok(())
    }

    /// Makes `v` the current version.
    fn install(&self, v: Version) {
        self.inner
            .stall
            .set(policy::should_stall(&self.inner.opts.compaction, &file_infos(&v)));
        *self.inner.version.borrow_mut() = Rc::new(v);
    }

    /// Appends a manifest edit. Out of space ([`Error::DiskFull`]) the edit
    /// is not in the log and nothing changed: the flush or compaction fails
    /// and is retried, and nothing acknowledged is at risk. Any other failure
    /// fences the engine: the edit may or may not be on disk, so neither the
    /// old nor the new file set can be trusted until a reopen reads the
    /// manifest back.
    async fn manifest_append(&self, m: &mut Manifest, edit: &VersionEdit) -> Result<()> {
        match m.append(edit).await {
            Ok(()) => Ok(()),
            Err(e @ Error::DiskFull { .. }) => Err(e),
            Err(e) => {
                self.fence(format!("manifest write failed: {e}"));
                Err(e)
            }
        }
    }

    /// Deletes the files of tables no reader holds any more.
    async fn purge_obsolete(&self) -> Result<()> {
        let doomed: Vec<Rc<TableHandle>> = {
            let mut ob = self.inner.obsolete.borrow_mut();
            let (free, held): (Vec<_>, Vec<_>) = ob.drain(..).partition(|t| Rc::strong_count(t) == 1);
            *ob = held;
            free
        };
        for t in doomed {
            self.inner.cache.remove_file(t.rec.file_no);
            self.inner.opts.fs.remove(&t.path).await?;
        }
        Ok(())
    }

    /// Writes a consistent checkpoint into `dest` (a new directory): every
    /// acknowledged write is flushed, the live tables are hard-linked and the
    /// manifest copied. [`Engine::open`] with `read_only` opens it.
    pub async fn checkpoint(&self, dest: &Path) -> Result<()> {
        self.flush().await?;
        let fs = &self.inner.opts.fs;
        if fs.exists(dest).await && !fs.list(dest).await?.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint directory {} is not empty",
                dest.display()
            )));
        }
        fs.create_dir_all(dest).await?;
        let m = self.inner.manifest.lock().await;
        let m = m.as_ref().ok_or(Error::ReadOnly)?;
        let v = self.inner.version.borrow().clone();
        for t in v.all() {
            fs.link(&t.path, &dest.join(table_name(t.rec.file_no))).await?;
        }
        m.write_copy(dest).await?;
        fs.sync_dir(dest).await?;
        Ok(())
    }

    /// Statistics.
    pub fn stats(&self) -> Stats {
        let c = self.inner.counters.borrow();
        let v = self.inner.version.borrow().clone();
        let wal = self.inner.wal.as_ref().map(|w| w.stats()).unwrap_or_default();
        let (mut checks, mut neg, mut fp) = (0, 0, 0);
        for t in v.all() {
            let s = t.table.stats();
            checks += s.bloom_checks;
            neg += s.bloom_negatives;
            fp += s.bloom_false_positives;
        }
        let level_bytes = v.level_bytes();
        let total: u64 = level_bytes.iter().sum();
        let deepest = level_bytes.iter().rev().find(|b| **b > 0).copied().unwrap_or(0);
        let tiered = !matches!(self.inner.opts.compaction, policy::CompactionStyle::Leveled(_));
        let deepest = if tiered {
            v.all().map(|t| t.rec.size).max().unwrap_or(0)
        } else {
            deepest
        };
        let written = wal.bytes_written + c.flush_bytes + c.compaction_written;
        let mem_bytes =
            self.inner.mem.borrow().size() + self.inner.imm.borrow().iter().map(|m| m.size()).sum::<usize>();
        Stats {
            user_bytes_written: c.user_bytes,
            wal_bytes_written: wal.bytes_written,
            flush_bytes_written: c.flush_bytes,
            compaction_bytes_read: c.compaction_read,
            compaction_bytes_written: c.compaction_written,
            write_amplification: if c.user_bytes == 0 {
                0.0
            } else {
                written as f64 / c.user_bytes as f64
            },
            gets: c.gets,
            read_amplification: if c.gets == 0 {
                0.0
            } else {
                c.tables_probed as f64 / c.gets as f64
            },
            space_amplification: if deepest == 0 {
                0.0
            } else {
                total as f64 / deepest as f64
            },
            bloom_checks: checks,
            bloom_negatives: neg,
            bloom_false_positives: fp,
            cache: self.inner.cache.stats(),
            row_cache: self.inner.rows.stats(),
            retained_memtables: self.inner.recent.usage().0,
            retained_bytes: self.inner.recent.usage().1 as u64,
            flushes: c.flushes,
            compactions: c.compactions,
            stalls: c.stalls,
            stall_micros: c.stall_micros,
            memtable_bytes: mem_bytes as u64,
            immutable_memtables: self.inner.imm.borrow().len(),
            levels: v
                .levels
                .iter()
                .zip(level_bytes.iter())
                .map(|(l, b)| (l.len(), *b))
                .collect(),
            wal,
        }
    }

    /// Bytes compaction is behind by: the policy's estimate of what ought
    /// to be compacted now ([`policy::compaction_debt`]), the backlog that
    /// metrics report and that stalls writes when it grows too large.
    pub fn compaction_debt(&self) -> u64 {
        let v = self.inner.version.borrow().clone();
        policy::compaction_debt(&self.inner.opts.compaction, &file_infos(&v))
    }

    /// About how many live keys the engine holds: the entries of every live
    /// table that are not deletions, plus every memtable entry. An
    /// estimate: a key overwritten since its table was written counts once
    /// per copy, a deletion in one table does not subtract the value in
    /// another, and a memtable's deletions count (it keeps no tally of them).
    pub fn estimated_keys(&self) -> u64 {
        let v = self.inner.version.borrow().clone();
        let tables: u64 = v.all().map(|t| t.rec.entries.saturating_sub(t.rec.tombstones)).sum();
        let mems = self.inner.mem.borrow().len() + self.inner.imm.borrow().iter().map(|m| m.len()).sum::<u64>();
        tables + mems
    }

    /// Number of live tables per level.
    pub fn level_counts(&self) -> Vec<usize> {
        self.inner.version.borrow().levels.iter().map(|l| l.len()).collect()
    }

    /// Syncs the WAL and stops the background tasks. In-flight writes finish first.
    pub async fn close(self) -> Result<()> {
        self.inner.closed.set(true);
        self.signals.work.notify();
        self.signals.progress.notify();
        if let Some(w) = &self.inner.wal {
            // Finish a paced segment fill at full speed and wake the provisioner.
            w.hurry();
            w.spare_taken().notify();
        }
        let tasks: Vec<_> = self.tasks.borrow_mut().drain(..).collect();
        for t in tasks {
            // A running flush or compaction finishes (or stops at its next
            // check of `closed`); cancelling it mid-write would strand its files.
            t.await;
        }
        if let Some(w) = &self.inner.wal {
            if w.check_fenced().is_ok() {
                w.sync_now().await?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Flush,
    Compact,
}

/// A background loop. It holds the engine only weakly between rounds, so
/// dropping every `Engine` handle ends it.
async fn background_loop(weak: Weak<Inner>, sig: Rc<Signals>, job: Job) {
    loop {
        let waiter = sig.work.notified();
        let did = {
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.get() {
                return;
            }
            let e = Engine::engine_of(inner, sig.clone());
            match job {
                // Out of space, the retry each second would log the same line
                // each second: the engine logs when the disk fills and frees.
                Job::Flush => match e.flush_one().await {
                    Ok(d) => d,
                    Err(err @ Error::DiskFull { .. }) => {
                        tracing::debug!(error = %err, "flush postponed: disk full");
                        false
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "flush failed");
                        false
                    }
                },
                Job::Compact => match e.compact_one().await {
                    Ok(d) => d,
                    Err(err @ Error::DiskFull { .. }) => {
                        tracing::debug!(error = %err, "compaction postponed: disk full");
                        false
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "compaction failed");
                        false
                    }
                },
            }
        };
        if did {
            sig.progress.notify();
            if job == Job::Flush {
                sig.work.notify();
            }
            crate::io::yield_if_needed().await;
            continue;
        }
        // Wake on new work, or every second to re-check (tombstone ages, errors).
        futures::future::select(Box::pin(waiter), Box::pin(crate::io::sleep(Duration::from_secs(1)))).await;
    }
}

/// Keeps a spare WAL segment ready. A rotation that finds none makes one on
/// the write path (create, zero-fill, fsync, directory fsync: hundreds of ms
/// for a fresh 64 MiB segment), so the next spare is made as soon as a
/// rotation takes the current one, long before the new segment fills. It used
/// to be made only after a compaction round, which a rotation could outrun.
async fn provision_loop(weak: Weak<Inner>, taken: Rc<Notify>) {
    // Whether the last attempt failed: a failure is logged once, not each second.
    let mut failing = false;
    loop {
        let waiter = taken.notified();
        {
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.get() {
                return;
            }
            if let Some(w) = &inner.wal {
                match w.prepare_spare().await {
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot prepare a spare WAL segment (retried every second)");
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot prepare a spare WAL segment"),
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(dir = %inner.dir.display(), "spare WAL segment ready again");
                    }
                    Ok(()) => {}
                }
            }
        }
        // Also re-check every second (after an error, or to notice `closed`).
        futures::future::select(Box::pin(waiter), Box::pin(crate::io::sleep(Duration::from_secs(1)))).await;
    }
}

/// Periodic durability: sync the WAL every interval.
async fn periodic_sync(weak: Weak<Inner>, sig: Rc<Signals>, every: Duration) {
    let _ = sig;
    loop {
        crate::io::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.get() {
            return;
        }
        if let Some(w) = &inner.wal {
            if w.has_unsynced() {
                if let Err(e) = w.sync_now().await {
                    tracing::error!(error = %e, "periodic WAL sync failed");
                }
            }
        }
    }
}

fn file_infos(v: &Version) -> Vec<Vec<FileInfo>> {
    v.levels
        .iter()
        .map(|l| {
            l.iter()
                .map(|t| FileInfo {
                    file_no: t.rec.file_no,
                    size: t.rec.size,
                    entries: t.rec.entries,
                    tombstones: t.rec.tombstones,
                    smallest: (t.rec.smallest.0, t.rec.smallest.1.clone()),
                    largest: (t.rec.largest.0, t.rec.largest.1.clone()),
                    created_ms: t.rec.created_ms,
                    max_time: t.rec.max_time,
                    being_compacted: t.being_compacted.get(),
                })
                .collect()
        })
        .collect()
}

/// Which versions of one key survive a compaction (newest first in, newest
/// first out).
fn decide(
    versions: &[(SeqNo, Vec<u8>)],
    token: Token,
    key: &[u8],
    now: u64,
    grace_ms: u64,
    bottommost: bool,
    filter: Option<&dyn crate::options::CompactionFilter>,
) -> std::result::Result<Vec<(SeqNo, Vec<u8>)>, crate::error::DecodeError> {
    let Some((seq, body)) = versions.first() else {
        return Ok(Vec::new());
    };
    let b = decode_body(body)?;
    // An expired value is a deletion that happened at its expiry time.
    let (kind, time) = if b.kind == Kind::Put && b.time != 0 && b.time <= now {
        (Kind::Delete, b.time)
    } else {
        (b.kind, b.time)
    };
    if kind == Kind::Delete {
        if bottommost && now.saturating_sub(time) >= grace_ms {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        crate::format::encode_body(Kind::Delete, time, b.meta, &[], &mut out);
        return Ok(vec![(*seq, out)]);
    }
    let Some(f) = filter else {
        return Ok(vec![(*seq, body.clone())]);
    };
    let mut decoded: Vec<BodyRef<'_>> = Vec::with_capacity(versions.len());
    for (_, v) in versions {
        let d = decode_body(v)?;
        if d.kind == Kind::Delete || (d.time != 0 && d.time <= now) {
            break; // older than a deletion: not live
        }
        decoded.push(d);
    }
    let n = f.retain(token, key, &decoded, now).min(decoded.len());
    if n == 0 {
        if bottommost {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        crate::format::encode_body(Kind::Delete, now, b.meta, &[], &mut out);
        return Ok(vec![(*seq, out)]);
    }
    Ok(versions[..n].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_asks_for_the_time_the_bytes_take() {
        let mut r = RateLimiter::new(1 << 20);
        // The first second's budget is free.
        assert_eq!(r.take(1 << 20), None);
        // Another MiB at once must wait about a second.
        let w = r.take(1 << 20).unwrap_or_default();
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_millis(1000),
            "{w:?}"
        );
        let mut off = RateLimiter::new(0);
        assert_eq!(off.take(u64::MAX / 2), None, "0 means unlimited");
    }

    #[test]
    fn decide_keeps_newest_turns_expiry_into_tombstone_and_purges_at_the_bottom() {
        let body = |kind: Kind, time: u64, v: &[u8]| {
            let mut b = Vec::new();
            crate::format::encode_body(kind, time, b"m", v, &mut b);
            b
        };
        let now = 10_000;
        let vs = vec![(9, body(Kind::Put, 0, b"new")), (3, body(Kind::Put, 0, b"old"))];
        let out = decide(&vs, 1, b"k", now, 100, false, None).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 9);
        // Expired, not at the bottom: becomes a tombstone dated at the expiry.
        let vs = vec![(9, body(Kind::Put, 5_000, b"x")), (3, body(Kind::Put, 0, b"old"))];
        let out = decide(&vs, 1, b"k", now, 100_000, false, None).unwrap();
        let b = decode_body(&out[0].1).unwrap();
        assert_eq!((b.kind, b.time), (Kind::Delete, 5_000));
        // A tombstone inside its grace period survives even at the bottom...
        let vs = vec![(9, body(Kind::Delete, 9_000, b""))];
        assert_eq!(decide(&vs, 1, b"k", now, 5_000, true, None).unwrap().len(), 1);
        // ...and goes once the grace period is over, but only at the bottom.
        assert!(decide(&vs, 1, b"k", now, 500, true, None).unwrap().is_empty());
        assert_eq!(decide(&vs, 1, b"k", now, 500, false, None).unwrap().len(), 1);
    }
}
