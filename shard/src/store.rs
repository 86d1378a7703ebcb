//! One core's data: its engine, the per-key locks that make read-modify-write
//! operations atomic, and the version clock.
//!
//! Every command arrives here owned ([`Cmd`]), whether it came from a
//! connection on this core or over the mesh from another, so there is one
//! execution path. Commands are executed only on the core that owns the keys'
//! vnodes; the server routes them (ARCHITECTURE.md section 3).
//!
//! ## Atomicity
//!
//! Every write takes the key's lock for its whole duration, including the
//! fdatasync: a read-modify-write (INCR, CAS, NX/XX, EXPIRE, DEL's count) reads
//! and writes with no other write to the key in between. Reads take no lock:
//! the engine shows a write only once it is durable, so a read concurrent with
//! an unacknowledged write sees the older value, which is a valid linearization.
//! Writes to different keys do not wait for each other and share one group
//! commit. Multi-key writes lock their keys in sorted order, so two of them
//! cannot deadlock.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use corekv_engine::{Cursor, Engine, Error as EngineError, Kind, Record, ScanOptions, WriteBatch};
use futures::channel::oneshot;

use crate::topology::Token;

/// A key with its token (computed once, at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key's token.
    pub token: Token,
    /// The key bytes.
    pub bytes: Vec<u8>,
}

impl Key {
    /// A key and its token.
    pub fn new(bytes: &[u8]) -> Key {
        Key {
            token: crate::topology::token_of(bytes),
            bytes: bytes.to_vec(),
        }
    }
}

/// A write's precondition on whether the key exists (NX / XX): the wire's
/// type, shared.
pub use corekv_net::msg::Condition as Cond;

/// EXPIRE's precondition (Redis 7 semantics: a key without a TTL counts as
/// an infinite TTL for GT and LT); the RESP codec's type, shared.
pub use corekv_net::resp::ExpireCond;

/// What EXPIRE does to an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireAction {
    /// Expire at this absolute time (ms since the epoch).
    At(u64),
    /// Remove the TTL (true for any existing key).
    Persist,
    /// Delete the key now (Redis: EXPIRE with a time in the past).
    Delete,
}

/// A command for the core that owns its keys. Expiry times are absolute (ms
/// since the epoch, 0 = none): the edge turns relative TTLs into deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cmd {
    /// Read one key. Reply: [`Reply::Value`].
    Get(Key),
    /// Write one key. Reply: [`Reply::Bool`] (false: the condition failed).
    Put {
        /// The key.
        key: Key,
        /// The value.
        value: Vec<u8>,
        /// Absolute expiry, 0 = none.
        expiry_ms: u64,
        /// NX / XX.
        cond: Cond,
    },
    /// Delete keys in one batch. Reply: [`Reply::Int`], how many existed.
    Delete(Vec<Key>),
    /// Count the keys that exist. Reply: [`Reply::Int`].
    Exists(Vec<Key>),
    /// Read keys. Reply: [`Reply::Values`], in order.
    MGet(Vec<Key>),
    /// Write keys in one atomic batch. Reply: [`Reply::Ok`].
    MPut {
        /// The pairs.
        entries: Vec<(Key, Vec<u8>)>,
        /// Absolute expiry for all, 0 = none.
        expiry_ms: u64,
    },
    /// Change a key's expiry. Reply: [`Reply::Bool`] (false: missing, or the
    /// condition failed).
    Expire {
        /// The key.
        key: Key,
        /// What to do.
        action: ExpireAction,
        /// NX / XX / GT / LT.
        cond: Option<ExpireCond>,
    },
    /// Remaining time to live. Reply: [`Reply::Int`]: -2 missing, -1 no
    /// expiry, else ms left.
    Ttl(Key),
    /// Add to a decimal integer value (missing = 0), keeping its expiry.
    /// Reply: [`Reply::Int`] (the new value) or a failure.
    Incr {
        /// The key.
        key: Key,
        /// The amount.
        delta: i64,
    },
    /// Write only if the current version is `expected` (empty: the key must
    /// not exist). Reply: [`Reply::Bool`].
    Cas {
        /// The key.
        key: Key,
        /// The version the client read.
        expected: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
        /// Absolute expiry, 0 = none.
        expiry_ms: u64,
    },
    /// Set the key to `new` (`None`: delete) only if its live value is
    /// `expected` (`None`: absent). Reply: [`Reply::Cas`].
    CasValue {
        /// The key.
        key: Key,
        /// The value the key must hold.
        expected: Option<Vec<u8>>,
        /// The value to set; `None` deletes.
        new: Option<Vec<u8>>,
    },
    /// One page of a scan of this core's keys. Reply: [`Reply::Page`].
    Scan {
        /// First token (inclusive).
        start: Token,
        /// Last token (inclusive).
        end: Token,
        /// Resume strictly after this position.
        after: Option<Cursor>,
        /// Only keys with this prefix.
        prefix: Vec<u8>,
        /// Most entries.
        limit: usize,
    },
    /// Counters for INFO. Reply: [`Reply::Info`].
    Info,
    /// This core's figures for a metrics scrape. Reply: [`Reply::Sample`].
    /// Executed by the runtime (it reads the core's metrics, engine and
    /// hints), never by the store.
    Sample,
    /// Cluster mode, replica side: merge `record` (the node's record format,
    /// docs/versions.md) into the key, durably. Reply: [`Reply::Ok`].
    ReplicaMerge {
        /// The key.
        key: Key,
        /// The encoded record.
        record: Vec<u8>,
    },
    /// Cluster mode, replica side: this core's record of the key. Reply:
    /// [`Reply::Record`].
    ReplicaRead(Key),
    /// Cluster mode: a request this core coordinates. Executed by the
    /// cluster module (it needs the ring and the peers), never by the store.
    Cluster(crate::cluster::ClusterCmd),
    /// Checkpoint this core into the snapshot directory `snapshot`
    /// ([`crate::backup::checkpoint_core`]; executed by the shard, which
    /// holds the hints too). Reply: [`Reply::Files`].
    Checkpoint {
        /// `<data_dir>/snapshots/<name>`.
        snapshot: std::path::PathBuf,
    },
    /// Single-node restore: write a backed-up engine entry
    /// ([`crate::backup::encode_plain`]) unless the key holds a version at
    /// least as new. Reply: [`Reply::Bool`] (whether it was written).
    RestorePlain {
        /// The key.
        key: Key,
        /// The encoded entry.
        entry: Vec<u8>,
    },
    /// Cluster mode, replica side: a page of this core's records in tokens
    /// `(start, end]`, wrapping (`start == end`: the whole ring), for range
    /// streaming (repair, join, decommission). Reply: [`Reply::Page`], each
    /// entry's `value` the encoded record; the cursor resumes the range.
    ReplicaScan {
        /// Token after which the range starts.
        start: Token,
        /// Last token of the range.
        end: Token,
        /// Resume strictly after this position (a previous page's cursor).
        after: Option<Cursor>,
        /// Most entries (at least one is returned when any is left).
        limit: usize,
        /// The page ends before an entry that would take its keys and
        /// records past this many bytes (a single larger entry still goes).
        max_bytes: usize,
    },
    /// Cluster mode, replica side: the Merkle leaves of this core's records
    /// in tokens `(start, end]` (wrapping), for a tree over the possibly
    /// wider range `(tree_start, tree_end]` with `2^depth` leaves. Leaves
    /// XOR together, so the cores holding parts of a tree's range each
    /// answer theirs and the caller combines them. Reply: [`Reply::Merkle`].
    ReplicaMerkle {
        /// Token after which the tree's range starts.
        tree_start: Token,
        /// Last token of the tree's range.
        tree_end: Token,
        /// Tree depth (clamped to [`MerkleTree::MAX_DEPTH`](crate::replication::merkle::MerkleTree::MAX_DEPTH)).
        depth: u32,
        /// Token after which this core's part starts.
        start: Token,
        /// Last token of this core's part.
        end: Token,
    },
}

/// A stored value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Its version (opaque to clients; CAS sends it back).
    pub meta: Vec<u8>,
    /// Absolute expiry (ms since the epoch), 0 = none.
    pub expiry_ms: u64,
}

/// A scanned entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    /// The key's token.
    pub token: Token,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A page of one core's scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Entries in (token, key) order.
    pub entries: Vec<ScanEntry>,
    /// Where this core stopped; `None` when its range is exhausted. Every key
    /// of this core at or before the cursor has been examined.
    pub cursor: Option<Cursor>,
}

/// Per-core counters for INFO.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreInfo {
    /// Whether the core's engine takes writes (disk full, fenced...).
    pub health: corekv_engine::Health,
    /// Commands executed on this core.
    pub commands: u64,
    /// Bytes written by users.
    pub user_bytes_written: u64,
    /// Write amplification.
    pub write_amplification: f64,
    /// Point reads served.
    pub gets: u64,
    /// Memtable flushes.
    pub flushes: u64,
    /// Compactions.
    pub compactions: u64,
    /// WAL fdatasync calls (writes / syncs = the group-commit batch size).
    pub wal_syncs: u64,
    /// Writes applied (batches count once).
    pub writes: u64,
}

/// The answer to a [`Cmd`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// Done.
    Ok,
    /// A yes/no answer.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A value or none.
    Value(Option<Value>),
    /// Values in request order.
    Values(Vec<Option<Value>>),
    /// A scan page.
    Page(Page),
    /// Counters.
    Info(CoreInfo),
    /// A core's metrics sample.
    Sample(Box<crate::metrics::CoreSample>),
    /// A replica's encoded record of a key, if it has one.
    Record(Option<Vec<u8>>),
    /// A coordinated read's answer.
    Versions(Option<crate::cluster::Versions>),
    /// Merkle leaf hashes (`2^depth`, in token order) and how many keys
    /// went into them.
    Merkle {
        /// The leaves.
        leaves: Vec<u64>,
        /// Records hashed.
        keys: u64,
    },
    /// A compare-and-set's outcome.
    Cas {
        /// Whether the condition held.
        applied: bool,
        /// The value after: the new one if applied, else the current one.
        value: Option<Vec<u8>>,
    },
    /// A Paxos acceptor's answer (`None`: a commit, which needs none).
    Paxos(Option<crate::coordinator::PaxosReply>),
    /// The files of a core's checkpoint.
    Files(Vec<crate::backup::SnapshotFile>),
    /// Named counts (hints pending per target node).
    Counts(Vec<(String, u64)>),
    /// The command failed.
    Failed(Failure),
}

/// Why a command failed, in terms both protocols can report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// A message for humans.
    pub message: String,
}

/// Kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// A key or value over a limit, or an empty key.
    TooLarge,
    /// A malformed argument.
    Invalid,
    /// INCR on a value that is not a decimal i64.
    NotInteger,
    /// INCR would overflow.
    Overflow,
    /// The node cannot take writes now (compaction failing, closing).
    Unavailable,
    /// The disk is full: the write was not applied; it resumes by itself
    /// once space is freed.
    DiskFull,
    /// Writes are fenced after a failed write or sync of the log, until the
    /// node restarts on a healthy disk.
    Fenced,
    /// Too few replicas answered in time: the outcome of a write is unknown
    /// (it may have applied on some).
    Timeout,
    /// The node is overloaded.
    Overloaded,
    /// Anything else: a bug or an I/O error.
    Internal,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        let kind = match &e {
            EngineError::EmptyKey
            | EngineError::KeyTooLarge { .. }
            | EngineError::ValueTooLarge { .. }
            | EngineError::MetaTooLarge { .. }
            | EngineError::BatchTooLarge { .. } => FailureKind::TooLarge,
            EngineError::InvalidArgument(_) => FailureKind::Invalid,
            EngineError::DiskFull { .. } => {
                return Failure::new(
                    FailureKind::DiskFull,
                    format!("{e}: the write was not applied; writes resume once space is freed"),
                )
            }
            EngineError::Fenced { .. } => {
                return Failure::new(
                    FailureKind::Fenced,
                    format!("{e} (restart the node once its disk is healthy)"),
                )
            }
            EngineError::CompactionFailing { .. } | EngineError::ReadOnly | EngineError::Closed => {
                FailureKind::Unavailable
            }
            _ => FailureKind::Internal,
        };
        Failure::new(kind, e.to_string())
    }
}

/// A hybrid logical clock: `physical ms << 16 | counter`, strictly increasing
/// on this core. Used as the version of each write (opaque `meta` bytes, big
/// endian), which CAS compares.
#[derive(Debug, Default)]
pub struct Hlc {
    last: Cell<u64>,
}

impl Hlc {
    /// The next timestamp.
    pub fn tick(&self, now_ms: u64) -> u64 {
        let next = (now_ms << 16).max(self.last.get().saturating_add(1));
        self.last.set(next);
        next
    }
}

/// FIFO per-key locks for one core (single-threaded: no atomics).
#[derive(Debug, Default)]
pub struct KeyLocks {
    held: RefCell<HashMap<Vec<u8>, VecDeque<oneshot::Sender<()>>>>,
}

/// Holds a key's lock until dropped.
#[derive(Debug)]
pub struct KeyGuard {
    locks: Rc<KeyLocks>,
    key: Vec<u8>,
}

impl KeyLocks {
    /// Waits for `key`'s lock. Cancel-safe: if the waiting future is dropped
    /// after the lock was handed to it but before it ran, the drop passes
    /// the lock on, so a cancelled request (a timeout) cannot leave a key
    /// locked forever.
    pub async fn lock(self: &Rc<Self>, key: &[u8]) -> KeyGuard {
        let rx = {
            let mut held = self.held.borrow_mut();
            match held.get_mut(key) {
                None => {
                    held.insert(key.to_vec(), VecDeque::new());
                    None
                }
                Some(q) => {
                    let (tx, rx) = oneshot::channel();
                    q.push_back(tx);
                    Some(rx)
                }
            }
        };
        if let Some(rx) = rx {
            let mut waiting = Waiting {
                locks: self.clone(),
                key: key.to_vec(),
                rx: Some(rx),
            };
            if let Some(rx) = waiting.rx.as_mut() {
                // The sender is consumed only by `release`, which hands us the
                // lock, and it is never dropped unsent while we wait; an error
                // cannot happen, and is treated as granted.
                let _ = rx.await;
            }
            waiting.rx = None; // granted and taken: the guard below owns it
        }
        KeyGuard {
            locks: self.clone(),
            key: key.to_vec(),
        }
    }

    /// Locks several keys in sorted order (deduplicated).
    pub async fn lock_all(self: &Rc<Self>, keys: &[&[u8]]) -> Vec<KeyGuard> {
        let mut sorted: Vec<&[u8]> = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut guards = Vec::with_capacity(sorted.len());
        for k in sorted {
            guards.push(self.lock(k).await);
        }
        guards
    }

    fn release(&self, key: &[u8]) {
        let mut held = self.held.borrow_mut();
        let Some(q) = held.get_mut(key) else { return };
        // Hand the lock to the first waiter still waiting; a waiter whose
        // future was dropped (its request cancelled) refuses the send.
        while let Some(tx) = q.pop_front() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        held.remove(key);
    }

    /// Keys currently locked (for tests and stats).
    pub fn held(&self) -> usize {
        self.held.borrow().len()
    }
}

/// A queued lock request; see [`KeyLocks::lock`].
struct Waiting {
    locks: Rc<KeyLocks>,
    key: Vec<u8>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // Handed the lock but cancelled before taking it: pass it on.
            if let Ok(Some(())) = rx.try_recv() {
                self.locks.release(&self.key);
            }
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.locks.release(&self.key);
    }
}

/// The environment variable that shifts this process's wall clock by a
/// signed number of milliseconds: a fault the torture harness injects to
/// measure what clock skew does to `lww` keyspaces (docs/guarantees.md). It is
/// read once; unset (the normal case) means no shift.
pub const CLOCK_OFFSET_ENV: &str = "COREKV_TEST_CLOCK_OFFSET_MS";

/// The clock shift from [`CLOCK_OFFSET_ENV`], read on first use.
fn clock_offset_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var(CLOCK_OFFSET_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0)
    })
}

/// The wall clock in ms since the epoch (shifted by [`CLOCK_OFFSET_ENV`]
/// when a test sets it).
pub fn now_ms() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    wall.saturating_add_signed(clock_offset_ms())
}

/// A record update applied on this core but maybe not durable yet
/// ([`Store::update_record_staged`]); holds the key's lock until
/// [`LocalWrite::durable`] returns.
#[must_use = "the update may be acknowledged only once `durable` returns"]
pub struct LocalWrite {
    _guard: KeyGuard,
    /// None when the update changed nothing.
    staged: Option<corekv_engine::StagedWrite>,
}

impl LocalWrite {
    /// Waits until the update is durable on this core, then unlocks the key.
    pub async fn durable(self) -> Result<(), Failure> {
        if let Some(s) = self.staged {
            s.durable().await?;
        }
        Ok(())
    }
}

/// One core's store.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Engine,
    locks: Rc<KeyLocks>,
    hlc: Rc<Hlc>,
    commands: Rc<Cell<u64>>,
    writes: Rc<Cell<u64>>,
    /// See [`Store::with_tombstone_grace`].
    tombstone_grace_ms: u64,
}

impl Store {
    /// Wraps this core's engine.
    pub fn new(engine: Engine) -> Store {
        Store {
            engine,
            locks: Rc::new(KeyLocks::default()),
            hlc: Rc::new(Hlc::default()),
            commands: Rc::new(Cell::new(0)),
            writes: Rc::new(Cell::new(0)),
            tombstone_grace_ms: 10 * 24 * 3600 * 1000,
        }
    }

    /// Sets how long a cluster record whose every write is deleted or
    /// expired is kept ([`VRecord::purge_at_ms`]): the engine entry is
    /// written with that purge time as its expiry, so reads stop seeing it
    /// then and compaction drops its bytes.
    pub fn with_tombstone_grace(mut self, grace_ms: u64) -> Store {
        self.tombstone_grace_ms = grace_ms;
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Executes a command; never panics, failures come back as [`Reply::Failed`].
    pub async fn exec(&self, cmd: Cmd) -> Reply {
        self.commands.set(self.commands.get() + 1);
        match self.run(cmd).await {
            Ok(r) => r,
            Err(f) => Reply::Failed(f),
        }
    }

    fn version(&self) -> Vec<u8> {
        self.hlc.tick(now_ms()).to_be_bytes().to_vec()
    }

    async fn read(&self, key: &Key) -> Result<Option<Record>, Failure> {
        Ok(self.engine.get(key.token, &key.bytes).await?)
    }

    async fn write(&self, key: &Key, value: &[u8], expiry_ms: u64) -> Result<(), Failure> {
        self.writes.set(self.writes.get() + 1);
        let meta = self.version();
        self.engine.put(key.token, &key.bytes, value, &meta, expiry_ms).await?;
        Ok(())
    }

    async fn run(&self, cmd: Cmd) -> Result<Reply, Failure> {
        match cmd {
            Cmd::Get(key) => Ok(Reply::Value(self.read(&key).await?.map(to_value))),
            Cmd::Put {
                key,
                value,
                expiry_ms,
                cond,
            } => {
                let _g = self.locks.lock(&key.bytes).await;
                if cond != Cond::Always {
                    let exists = self.read(&key).await?.is_some();
                    if exists != (cond == Cond::IfPresent) {
                        return Ok(Reply::Bool(false));
                    }
                }
                self.write(&key, &value, expiry_ms).await?;
                Ok(Reply::Bool(true))
            }
            Cmd::Delete(keys) => {
                let names: Vec<&[u8]> = keys.iter().map(|k| k.bytes.as_slice()).collect();
                let _g = self.locks.lock_all(&names).await;
                let mut batch = WriteBatch::new();
                let mut existed = 0i64;
                let now = now_ms();
                let mut seen = std::collections::HashSet::new();
                for k in &keys {
                    if !seen.insert(&k.bytes) {
                        continue;
                    }
                    if self.read(k).await?.is_some() {
                        existed += 1;
                        batch.delete(k.token, &k.bytes, &self.version(), now);
                    }
                }
                if existed > 0 {
                    self.engine.write(batch).await?;
                }
                Ok(Reply::Int(existed))
            }
            Cmd::Exists(keys) => {
                let mut n = 0;
                for k in &keys {
                    if self.read(k).await?.is_some() {
                        n += 1;
                    }
                }
                Ok(Reply::Int(n))
            }
            Cmd::MGet(keys) => {
                let mut out = Vec::with_capacity(keys.len());
                for k in &keys {
                    out.push(self.read(k).await?.map(to_value));
                }
                Ok(Reply::Values(out))
            }
            Cmd::MPut { entries, expiry_ms } => {
                let names: Vec<&[u8]> = entries.iter().map(|(k, _)| k.bytes.as_slice()).collect();
                let _g = self.locks.lock_all(&names).await;
                let mut batch = WriteBatch::new();
                for (k, v) in &entries {
                    if k.bytes.is_empty() {
                        return Err(EngineError::EmptyKey.into());
                    }
                    batch.put(k.token, &k.bytes, v, &self.version(), expiry_ms);
                }
                self.engine.write(batch).await?;
                Ok(Reply::Ok)
            }
            Cmd::Expire { key, action, cond } => {
                let _g = self.locks.lock(&key.bytes).await;
                let Some(cur) = self.read(&key).await? else {
                    return Ok(Reply::Bool(false));
                };
                // No TTL counts as an infinite one for GT and LT.
                let cur_exp = if cur.expiry_ms == 0 { u64::MAX } else { cur.expiry_ms };
                let new_exp = match action {
                    ExpireAction::At(t) => t,
                    ExpireAction::Persist => u64::MAX,
                    ExpireAction::Delete => 0,
                };
                let ok = match cond {
                    None => true,
                    Some(ExpireCond::Nx) => cur.expiry_ms == 0,
                    Some(ExpireCond::Xx) => cur.expiry_ms != 0,
                    Some(ExpireCond::Gt) => new_exp > cur_exp,
                    Some(ExpireCond::Lt) => new_exp < cur_exp,
                };
                if !ok {
                    return Ok(Reply::Bool(false));
                }
                match action {
                    ExpireAction::Delete => {
                        self.engine.delete(key.token, &key.bytes, &self.version()).await?;
                    }
                    ExpireAction::Persist => {
                        if cur.expiry_ms != 0 {
                            self.write(&key, &cur.value, 0).await?;
                        }
                    }
                    ExpireAction::At(t) => self.write(&key, &cur.value, t).await?,
                }
                Ok(Reply::Bool(true))
            }
            Cmd::Ttl(key) => Ok(Reply::Int(match self.read(&key).await? {
                None => -2,
                Some(r) if r.expiry_ms == 0 => -1,
                Some(r) => i64::try_from(r.expiry_ms.saturating_sub(now_ms())).unwrap_or(i64::MAX),
            })),
            Cmd::Incr { key, delta } => {
                let _g = self.locks.lock(&key.bytes).await;
                let cur = self.read(&key).await?;
                let (n, expiry) = match &cur {
                    None => (0i64, 0),
                    Some(r) => (parse_int(&r.value)?, r.expiry_ms),
                };
                let Some(next) = n.checked_add(delta) else {
                    return Err(Failure::new(
                        FailureKind::Overflow,
                        "increment or decrement would overflow",
                    ));
                };
                self.write(&key, next.to_string().as_bytes(), expiry).await?;
                Ok(Reply::Int(next))
            }
            Cmd::Cas {
                key,
                expected,
                value,
                expiry_ms,
            } => {
                let _g = self.locks.lock(&key.bytes).await;
                let matches = match self.read(&key).await? {
                    None => expected.is_empty(),
                    Some(r) => !expected.is_empty() && r.meta == expected,
                };
                if !matches {
                    return Ok(Reply::Bool(false));
                }
                self.write(&key, &value, expiry_ms).await?;
                Ok(Reply::Bool(true))
            }
            Cmd::CasValue { key, expected, new } => {
                let _g = self.locks.lock(&key.bytes).await;
                let current = self.read(&key).await?.map(|r| r.value);
                if current != expected {
                    return Ok(Reply::Cas {
                        applied: false,
                        value: current,
                    });
                }
                match &new {
                    Some(v) => self.write(&key, v, 0).await?,
                    None if current.is_some() => {
                        self.engine.delete(key.token, &key.bytes, &self.version()).await?;
                    }
                    None => {}
                }
                Ok(Reply::Cas {
                    applied: true,
                    value: new,
                })
            }
            Cmd::Scan {
                start,
                end,
                after,
                prefix,
                limit,
            } => {
                let page = self
                    .engine
                    .scan(&ScanOptions {
                        start_token: start,
                        end_token: end,
                        prefix,
                        after,
                        limit: limit.max(1),
                        ..ScanOptions::default()
                    })
                    .await?;
                Ok(Reply::Page(Page {
                    entries: page
                        .entries
                        .into_iter()
                        .map(|e| ScanEntry {
                            token: e.token,
                            key: e.key,
                            value: e.value,
                        })
                        .collect(),
                    cursor: page.cursor,
                }))
            }
            Cmd::Info => {
                let s = self.engine.stats();
                Ok(Reply::Info(CoreInfo {
                    health: self.engine.health(),
                    commands: self.commands.get(),
                    user_bytes_written: s.user_bytes_written,
                    write_amplification: s.write_amplification,
                    gets: s.gets,
                    flushes: s.flushes,
                    compactions: s.compactions,
                    wal_syncs: s.wal.syncs,
                    writes: self.writes.get(),
                }))
            }
            Cmd::ReplicaMerge { key, record } => {
                let record = VRecord::decode(&record).map_err(|e| Failure::new(FailureKind::Invalid, e.to_string()))?;
                self.merge_record(&key, &record).await?;
                Ok(Reply::Ok)
            }
            Cmd::ReplicaRead(key) => Ok(Reply::Record(self.read_record(&key).await?.map(|r| r.to_bytes()))),
            Cmd::ReplicaScan {
                start,
                end,
                after,
                limit,
                max_bytes,
            } => Ok(Reply::Page(
                self.replica_scan(start, end, after, limit, max_bytes).await?,
            )),
            Cmd::ReplicaMerkle {
                tree_start,
                tree_end,
                depth,
                start,
                end,
            } => {
                let tree = crate::replication::merkle::TokenRange {
                    start: tree_start,
                    end: tree_end,
                };
                let (leaves, keys) = self.replica_merkle(tree, depth, start, end).await?;
                Ok(Reply::Merkle { leaves, keys })
            }
            Cmd::Sample => Err(Failure::new(
                FailureKind::Internal,
                "a metrics sample is taken by the runtime, not the store",
            )),
            Cmd::Cluster(_) => Err(Failure::new(
                FailureKind::Internal,
                "a cluster command reached the store instead of the cluster module",
            )),
            Cmd::Checkpoint { .. } => Err(Failure::new(
                FailureKind::Internal,
                "a checkpoint reached the store instead of the shard",
            )),
            Cmd::RestorePlain { key, entry } => self.restore_plain(&key, &entry).await.map(Reply::Bool),
        }
    }

    /// See [`Cmd::RestorePlain`]. Single-node versions are HLC timestamps
    /// (big-endian, so bytes compare as numbers): the newer of the stored
    /// and the backed-up entry stays, which makes a restore idempotent and
    /// never lets it replace a write made since.
    async fn restore_plain(&self, key: &Key, entry: &[u8]) -> Result<bool, Failure> {
        let (kind, time, meta, value) = crate::backup::decode_plain(entry).map_err(|e| {
            Failure::new(
                FailureKind::Invalid,
                format!("restore entry of the key at token {:#x}: {e}", key.token),
            )
        })?;
        if key.bytes.is_empty() {
            return Err(EngineError::EmptyKey.into());
        }
        let _g = self.locks.lock(&key.bytes).await;
        if let Some(cur) = self.engine.get_entry(key.token, &key.bytes).await? {
            if cur.meta.as_slice() >= meta {
                return Ok(false);
            }
        }
        let mut batch = WriteBatch::new();
        match kind {
            Kind::Put => batch.put(key.token, &key.bytes, value, meta, time),
            Kind::Delete => batch.delete(key.token, &key.bytes, meta, time),
        }
        self.writes.set(self.writes.get() + 1);
        self.engine.write(batch).await?;
        Ok(true)
    }

    /// This core's record of `key` (cluster mode).
    pub async fn read_record(&self, key: &Key) -> Result<Option<VRecord>, Failure> {
        let Some(r) = self.read(key).await? else {
            return Ok(None);
        };
        if r.meta != RECORD_META {
            return Err(Failure::new(
                FailureKind::Internal,
                "the stored value is not a cluster record (was this data directory written in single-node mode?)",
            ));
        }
        VRecord::decode(&r.value)
            .map(Some)
            .map_err(|e| Failure::new(FailureKind::Internal, format!("stored record unreadable: {e}")))
    }

    /// Merges `incoming` into the key's record, durably, under the key's
    /// lock. A merge that changes nothing writes nothing (replays of hints
    /// and read repairs are often no-ops).
    pub async fn merge_record(&self, key: &Key, incoming: &VRecord) -> Result<(), Failure> {
        self.update_record(key, |cur| match cur {
            Some(c) => c
                .merge(incoming)
                .map_err(|e| Failure::new(FailureKind::Invalid, e.to_string())),
            None => Ok(incoming.clone()),
        })
        .await
        .map(|_| ())
    }

    /// Replaces the key's record by `f(current)` under the key's lock,
    /// durably (the engine acknowledges after its WAL sync), and returns it.
    /// Updates of one key are serialized, which is what lets a coordinator
    /// mint its next dot from the state holding every dot it issued.
    pub async fn update_record(
        &self,
        key: &Key,
        f: impl FnOnce(Option<&VRecord>) -> Result<VRecord, Failure>,
    ) -> Result<VRecord, Failure> {
        let (next, local) = self.update_record_staged(key, f).await?;
        local.durable().await?;
        Ok(next)
    }

    /// [`Store::update_record`] in two steps: returns the new record once it
    /// is in the memtable, with a [`LocalWrite`] that says when it is durable.
    /// The key stays locked until then, so the next update of the key (or a
    /// merge that finds nothing to change and acknowledges at once) starts
    /// from durable state.
    pub async fn update_record_staged(
        &self,
        key: &Key,
        f: impl FnOnce(Option<&VRecord>) -> Result<VRecord, Failure>,
    ) -> Result<(VRecord, LocalWrite), Failure> {
        let guard = self.locks.lock(&key.bytes).await;
        let cur = self.read_record(key).await?;
        let next = f(cur.as_ref())?;
        let mut staged = None;
        if cur.as_ref() != Some(&next) {
            self.writes.set(self.writes.get() + 1);
            let purge_at = next.purge_at_ms(self.tombstone_grace_ms).unwrap_or(0);
            let mut batch = corekv_engine::WriteBatch::new();
            batch.put(key.token, &key.bytes, &next.to_bytes(), RECORD_META, purge_at);
            staged = Some(self.engine.write_staged(batch).await?);
        }
        Ok((next, LocalWrite { _guard: guard, staged }))
    }

    /// See [`Cmd::ReplicaScan`].
    async fn replica_scan(
        &self,
        start: Token,
        end: Token,
        after: Option<Cursor>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page, Failure> {
        let spans = token_spans(start, end);
        let limit = limit.max(1);
        let mut span = match &after {
            None => 0,
            Some(c) => spans
                .iter()
                .position(|&(lo, hi)| lo <= c.token && c.token <= hi)
                .ok_or_else(|| Failure::new(FailureKind::Invalid, "range cursor outside the range"))?,
        };
        // `pos`: the last position examined, where the next page resumes;
        // `seek`: where the next engine call starts (none at a span's start).
        let mut seek = after.clone();
        let mut pos = after;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut calls = 0usize;
        while let Some(&(lo, hi)) = spans.get(span) {
            // A full page with spans left: `pos` is set, as an entry was kept.
            if !out.is_empty() && (out.len() >= limit || bytes >= max_bytes) {
                return Ok(Page {
                    entries: out,
                    cursor: pos,
                });
            }
            let page = self
                .engine
                .scan(&ScanOptions {
                    start_token: lo,
                    end_token: hi,
                    after: seek.take(),
                    limit: (limit - out.len()).min(SCAN_CHUNK),
                    include_deleted: true,
                    ..ScanOptions::default()
                })
                .await?;
            for e in page.entries {
                let size = e.key.len() + e.value.len() + ENTRY_OVERHEAD;
                if !out.is_empty() && bytes + size > max_bytes {
                    // Resume before this entry: `pos` is the one examined
                    // before it (set, since an entry was kept).
                    return Ok(Page {
                        entries: out,
                        cursor: pos,
                    });
                }
                pos = Some(Cursor {
                    token: e.token,
                    key: e.key.clone(),
                });
                // Engine tombstones and single-node values carry no record:
                // nothing to stream, and a cluster node never writes them.
                if e.kind == Kind::Put && e.meta == RECORD_META {
                    bytes += size;
                    out.push(ScanEntry {
                        token: e.token,
                        key: e.key,
                        value: e.value,
                    });
                }
            }
            match page.cursor {
                Some(c) => {
                    pos = Some(c.clone());
                    seek = Some(c);
                    calls += 1;
                    // A bound on one page's work even when every entry
                    // examined is skipped.
                    if calls >= MAX_SCAN_CALLS {
                        return Ok(Page {
                            entries: out,
                            cursor: pos,
                        });
                    }
                }
                None => span += 1,
            }
        }
        Ok(Page {
            entries: out,
            cursor: None,
        })
    }

    /// See [`Cmd::ReplicaMerkle`]; returns the leaves and the keys hashed.
    async fn replica_merkle(
        &self,
        tree: crate::replication::merkle::TokenRange,
        depth: u32,
        start: Token,
        end: Token,
    ) -> Result<(Vec<u64>, u64), Failure> {
        let mut leaves = crate::cluster::repair::Leaves::new(tree, depth);
        let mut keys = 0u64;
        for (lo, hi) in token_spans(start, end) {
            let mut after = None;
            loop {
                let page = self
                    .engine
                    .scan(&ScanOptions {
                        start_token: lo,
                        end_token: hi,
                        after: after.take(),
                        limit: MERKLE_CHUNK,
                        include_deleted: true,
                        ..ScanOptions::default()
                    })
                    .await?;
                for e in &page.entries {
                    if e.kind != Kind::Put || e.meta != RECORD_META {
                        continue;
                    }
                    let digest = VRecord::decode(&e.value).map(|r| r.digest()).map_err(|err| {
                        Failure::new(
                            FailureKind::Internal,
                            format!("stored record of a key at token {:#x} unreadable: {err}", e.token),
                        )
                    })?;
                    if leaves.insert(e.token, &e.key, digest) {
                        keys += 1;
                    }
                }
                // Decoding and hashing a large range is CPU work on a core
                // that also serves requests.
                glommio::yield_if_needed().await;
                match page.cursor {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
        }
        Ok((leaves.into_leaves(), keys))
    }
}

/// Entries per engine call of a replica scan: small, so a page's byte
/// budget is not overshot by much in memory (values reach 1 MiB).
const SCAN_CHUNK: usize = 64;

/// Engine calls per replica scan page at most (each examines at most
/// `ScanOptions::max_examined` entries).
const MAX_SCAN_CALLS: usize = 64;

/// Entries per engine call of a Merkle build.
const MERKLE_CHUNK: usize = 256;

/// Bytes counted for an entry beyond its key and record (token, lengths),
/// as on the wire.
const ENTRY_OVERHEAD: usize = 16;

/// The inclusive token spans of `(start, end]`: one, or two when it wraps
/// past the largest token (`start == end`: the whole ring). In ring order
/// from `start`, so a cursor's span follows the spans before it.
fn token_spans(start: Token, end: Token) -> Vec<(Token, Token)> {
    if start < end {
        return vec![(start + 1, end)];
    }
    let mut spans = Vec::with_capacity(2);
    if start < Token::MAX {
        spans.push((start + 1, Token::MAX));
    }
    spans.push((0, end));
    spans
}

/// Engine `meta` of every record written in cluster mode: a format tag, so
/// a single-node value is never misread as a record or the reverse.
pub const RECORD_META: &[u8] = b"\xC1";

use crate::versioning::Record as VRecord;

fn to_value(r: Record) -> Value {
    Value {
        value: r.value,
        meta: r.meta,
        expiry_ms: r.expiry_ms,
    }
}

/// Parses a stored value as Redis does for INCR: optional `-`, decimal digits,
/// no spaces or `+`, fits in i64.
fn parse_int(b: &[u8]) -> Result<i64, Failure> {
    let bad = || Failure::new(FailureKind::NotInteger, "value is not an integer or out of range");
    if b.is_empty() || b.len() > 20 || b[0] == b'+' || (b.len() > 1 && b[0] == b'0') {
        return Err(bad());
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n != 0 || b == b"0")
        .ok_or_else(bad)
}

#[cfg(test)]
// A failed test panics with its message.
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn incr_parses_like_redis() {
        assert_eq!(parse_int(b"0").ok(), Some(0));
        assert_eq!(parse_int(b"-12").ok(), Some(-12));
        assert_eq!(parse_int(b"9223372036854775807").ok(), Some(i64::MAX));
        for bad in [
            &b""[..],
            b" 1",
            b"+1",
            b"01",
            b"1.0",
            b"-0",
            b"9223372036854775808",
            b"abc",
        ] {
            assert!(parse_int(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hlc_is_strictly_increasing() {
        let h = Hlc::default();
        let a = h.tick(1000);
        let b = h.tick(1000);
        let c = h.tick(999); // the wall clock stepped back
        assert!(a < b && b < c);
        assert!(h.tick(2000) > c);
    }

    /// A record whose writes are all deleted or expired is kept for the
    /// grace period after the last of them (so repair can still tell a stale
    /// older write is superseded), then reads stop finding it; a record with
    /// a live put, or a deletion of unknown time, is never purged.
    #[test]
    fn dead_records_are_purged_after_the_grace_period_and_only_then() {
        use crate::versioning::{Actor, Context, Dvv, Limits, LwwRegister, Timestamp, Value};
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let engine = Engine::open(corekv_engine::Options::new(corekv_engine::Fs::sim(8), "/db"))
                    .await
                    .unwrap();
                let hour = 3_600_000;
                let store = Store::new(engine).with_tombstone_grace(hour);
                let now = now_ms();
                let key = |n: u8| Key {
                    token: u64::from(n),
                    bytes: vec![b'k', n],
                };
                let lww = |v: Value| VRecord::Lww(LwwRegister::new(Timestamp::new(1000, 0), Actor(1), v));
                let causal = |vals: Vec<Value>| {
                    let limits = Limits::default();
                    let mut d = Dvv::default();
                    for (i, v) in vals.into_iter().enumerate() {
                        // Blind writes from distinct actors: concurrent siblings.
                        d = d
                            .update(&Context::new(), Actor(i as u64 + 1), Timestamp::ZERO, v, &limits)
                            .unwrap();
                    }
                    VRecord::Causal(d)
                };
                let cases: Vec<(VRecord, bool)> = vec![
                    (lww(Value::tombstone(now - 2 * hour)), true),
                    (lww(Value::tombstone(now - hour / 2)), false),
                    (lww(Value::tombstone(0)), false),
                    (lww(Value::put_expiring(b"x".to_vec(), now - 2 * hour)), true),
                    (lww(Value::put(b"x".to_vec())), false),
                    (
                        causal(vec![Value::tombstone(now - 3 * hour), Value::tombstone(now - 2 * hour)]),
                        true,
                    ),
                    // One sibling died recently: the whole record waits for it.
                    (
                        causal(vec![Value::tombstone(now - 3 * hour), Value::tombstone(now - 1000)]),
                        false,
                    ),
                    (
                        causal(vec![Value::tombstone(now - 3 * hour), Value::put(b"live".to_vec())]),
                        false,
                    ),
                ];
                for (i, (record, purged)) in cases.iter().enumerate() {
                    let k = key(i as u8);
                    store.merge_record(&k, record).await.unwrap();
                    let got = store.read_record(&k).await.unwrap();
                    if *purged {
                        assert_eq!(got, None, "case {i}: {record:?} outlived its grace period");
                    } else {
                        assert_eq!(got.as_ref(), Some(record), "case {i}: purged too early");
                    }
                }
                // Merging a purged record back (a late repair) purges again at
                // once: the purge time comes from the record, not the clock.
                store.merge_record(&key(0), &cases[0].0).await.unwrap();
                assert_eq!(store.read_record(&key(0)).await.unwrap(), None);
            });
    }

    /// A store on a simulated disk holding one lww record at each token.
    async fn store_with(tokens: &[Token]) -> Store {
        let engine = Engine::open(corekv_engine::Options::new(corekv_engine::Fs::sim(7), "/db"))
            .await
            .unwrap();
        let store = Store::new(engine);
        for &t in tokens {
            let key = Key {
                token: t,
                bytes: format!("k{t:x}").into_bytes(),
            };
            let v = crate::versioning::Value::put(vec![b'v'; 100]);
            let r = VRecord::Lww(crate::versioning::LwwRegister::new(
                crate::versioning::Timestamp::new(1000, 0),
                crate::versioning::Actor(1),
                v,
            ));
            store.merge_record(&key, &r).await.unwrap();
        }
        store
    }

    /// Pages through `(start, end]` with ReplicaScan; the tokens seen, in order.
    async fn scan_all(store: &Store, start: Token, end: Token, limit: usize, max_bytes: usize) -> Vec<Token> {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..1000 {
            let cmd = Cmd::ReplicaScan {
                start,
                end,
                after: after.take(),
                limit,
                max_bytes,
            };
            let Reply::Page(p) = store.exec(cmd).await else {
                panic!("not a page")
            };
            assert!(p.entries.len() <= limit);
            for e in &p.entries {
                assert!(VRecord::decode(&e.value).is_ok());
            }
            seen.extend(p.entries.iter().map(|e| e.token));
            match p.cursor {
                Some(c) => after = Some(c),
                None => return seen,
            }
        }
        panic!("the scan did not end")
    }

    #[test]
    fn replica_scan_pages_through_wrapping_ranges() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let m = Token::MAX;
                let store = store_with(&[0, 5, 10, 11, 1 << 40, m - 10, m - 5, m]).await;
                // Wrapping: (MAX - 10, 10] is MAX-9..=MAX then 0..=10, in that order.
                let want = vec![m - 5, m, 0, 5, 10];
                for limit in [1, 2, 3, 1000] {
                    assert_eq!(
                        scan_all(&store, m - 10, 10, limit, 1 << 20).await,
                        want,
                        "limit {limit}"
                    );
                }
                // A byte budget below one entry still makes progress, one a page.
                assert_eq!(scan_all(&store, m - 10, 10, 1000, 1).await, want);
                // Not wrapping, and a start at the largest token (only 0..=end).
                assert_eq!(scan_all(&store, 5, 1 << 40, 1000, 1 << 20).await, [10, 11, 1 << 40]);
                assert_eq!(scan_all(&store, m, 5, 2, 1 << 20).await, [0, 5]);
                // start == end: the whole ring, from just after start.
                assert_eq!(
                    scan_all(&store, 10, 10, 3, 1 << 20).await,
                    [11, 1 << 40, m - 10, m - 5, m, 0, 5, 10]
                );
                // A cursor from outside the range is refused, not trusted.
                let bad = Cmd::ReplicaScan {
                    start: 100,
                    end: 200,
                    after: Some(Cursor {
                        token: 5,
                        key: b"k5".to_vec(),
                    }),
                    limit: 10,
                    max_bytes: 1 << 20,
                };
                assert!(matches!(store.exec(bad).await, Reply::Failed(f) if f.kind == FailureKind::Invalid));
            });
    }

    #[test]
    fn merkle_parts_of_a_range_combine_by_xor() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let m = Token::MAX;
                let store = store_with(&[0, 5, 10, 11, 1 << 40, m - 10, m - 5, m]).await;
                let merkle = |start: Token, end: Token| Cmd::ReplicaMerkle {
                    tree_start: m - 10,
                    tree_end: 1 << 40,
                    depth: 4,
                    start,
                    end,
                };
                let Reply::Merkle { leaves: whole, keys } = store.exec(merkle(m - 10, 1 << 40)).await else {
                    panic!("not leaves")
                };
                assert_eq!((whole.len(), keys), (16, 7));
                let Reply::Merkle { leaves: a, keys: ka } = store.exec(merkle(m - 10, 5)).await else {
                    panic!("not leaves")
                };
                let Reply::Merkle { leaves: b, keys: kb } = store.exec(merkle(5, 1 << 40)).await else {
                    panic!("not leaves")
                };
                assert_eq!((ka, kb), (4, 3));
                let joined: Vec<u64> = a.iter().zip(&b).map(|(x, y)| x ^ y).collect();
                assert_eq!(joined, whole);
                assert!(whole.iter().any(|&l| l != 0));
            });
    }

    #[test]
    fn a_staged_update_keeps_its_key_locked_until_it_is_durable() {
        use crate::versioning::{Actor, LwwRegister, Timestamp, Value};
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let store = store_with(&[]).await;
                let k = Key::new(b"k");
                let other = Key::new(b"other");
                let lww = |n: u64| VRecord::Lww(LwwRegister::new(Timestamp::new(n, 0), Actor(1), Value::put(vec![1])));
                let (first, local) = store.update_record_staged(&k, |_| Ok(lww(1000))).await.unwrap();
                // The next update of the key must start from the staged state
                // once durable (reads see a write only then), so it waits.
                let mut next = Box::pin(store.update_record(&k, |cur| {
                    assert_eq!(cur, Some(&first), "the second update saw the first one");
                    Ok(lww(2000))
                }));
                assert!(futures::poll!(next.as_mut()).is_pending());
                // Other keys do not wait.
                store.update_record(&other, |_| Ok(lww(5))).await.unwrap();
                local.durable().await.unwrap();
                assert_eq!(next.await.unwrap(), lww(2000));
                assert_eq!(store.read_record(&k).await.unwrap(), Some(lww(2000)));
            });
    }

    #[test]
    fn a_cancelled_waiter_does_not_keep_the_lock() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let locks = Rc::new(KeyLocks::default());
                let first = locks.lock(b"k").await;
                // A waiter queued behind `first`, then handed the lock and
                // dropped before it runs (a request timing out at that moment).
                let mut waiter = Box::pin(locks.lock(b"k"));
                assert!(futures::poll!(waiter.as_mut()).is_pending());
                drop(first); // hands the lock to the waiter
                drop(waiter); // cancelled before it took it
                assert_eq!(locks.held(), 0, "the lock was passed on, not leaked");
                let again = locks.lock(b"k").await; // would wait forever if leaked
                drop(again);
                assert_eq!(locks.held(), 0);
            });
    }
}
