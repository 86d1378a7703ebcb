//! Snapshots, backups and restores (docs/backup.md).
//!
//! - A **snapshot** of a node is one engine checkpoint per core (hard links
//!   of the live tables plus a manifest copy, `Engine::checkpoint`) under
//!   `<data_dir>/snapshots/<name>/core-<i>/`, plus, in cluster mode, the
//!   core's hint store (`hints-<i>/`: writes held for a replica that missed
//!   them, which a restore replays like any record). Every core checkpoints
//!   at once, each after the command reached the node, so the snapshot holds
//!   every write the node acknowledged before the command arrived; keys
//!   never span cores and batches are atomic per core, so per-core cuts lose
//!   no guarantee the node gives. `SNAPSHOT.toml` ([`SnapshotMeta`]) is
//!   written last (aside, synced, renamed): a snapshot without it is
//!   incomplete. It lists every file with its size and CRC32C, computed when
//!   the snapshot is taken.
//! - A **backup** copies every node's snapshot into a directory through the
//!   SNAPSHOT_READ opcode (chunks, each checksummed, then the whole file
//!   checked against the snapshot's CRC32C), beside a [`BackupManifest`]
//!   (`backup.toml`). The CLI does that (`corekv backup`).
//! - A **restore** reads every table of the backup offline
//!   ([`read_backup`], a read-only engine per core directory) and sends the
//!   records to a running cluster with the RESTORE opcode; the receiving
//!   node writes each through the replication path (`cluster::restore`).
//!
//! Nothing here names glommio: files go through the engine's `io::Fs`, and
//! the offline reader runs on [`crate::runtime::run_offline`].

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use corekv_engine::io::{align_up, Fs};
use corekv_engine::{Engine, Kind, ScanOptions};
use serde::{Deserialize, Serialize};

use crate::runtime::Shard;
use crate::store::{now_ms, Failure, FailureKind, RECORD_META};

/// The directory under `node.data_dir` that holds the snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// The file of a snapshot that describes it (written last).
pub const SNAPSHOT_META: &str = "SNAPSHOT.toml";
/// The manifest of a backup directory.
pub const BACKUP_MANIFEST: &str = "backup.toml";
/// The format version of `SNAPSHOT.toml` this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// The format version of `backup.toml` this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
/// The longest snapshot name.
pub const MAX_NAME: usize = 64;
/// The most files a snapshot may list (a bound on what a node or a CLI
/// reads from a `SNAPSHOT.toml` or `backup.toml`).
pub const MAX_FILES: usize = 1 << 20;
/// The largest `SNAPSHOT.toml` or `backup.toml` read.
pub const MAX_META_BYTES: u64 = 256 << 20;
/// Bytes read per call when checksumming a file.
const CHECKSUM_CHUNK: usize = 1 << 20;

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(FailureKind::Invalid, message)
}

fn internal(message: impl Into<String>) -> Failure {
    Failure::new(FailureKind::Internal, message)
}

/// Checks a snapshot name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not `.` or `..`
/// (it names a directory).
pub fn check_name(name: &str) -> Result<(), Failure> {
    check_component(name, "snapshot name").map_err(invalid)
}

fn check_component(c: &str, what: &str) -> Result<(), String> {
    if c.is_empty() || c.len() > MAX_NAME {
        return Err(format!("{what} must be 1 to {MAX_NAME} bytes, got {}", c.len()));
    }
    if c == "." || c == ".." {
        return Err(format!("{what} `{c}` is not allowed"));
    }
    if let Some(bad) = c
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} `{c}` holds `{bad}`; use letters, digits, `.`, `_` and `-` only"
        ));
    }
    Ok(())
}

/// Checks a path inside a snapshot: one or two components (`SNAPSHOT.toml`,
/// `core-0/000012.sst`), each a valid name. Nothing can point outside.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 2 {
        return Err(format!("snapshot path `{path}` is deeper than dir/file"));
    }
    for p in parts {
        check_component(p, "snapshot path component")?;
    }
    Ok(())
}

/// A node id as a directory name of a backup (`<dir>/<node-id>/`).
pub fn check_node_dir(id: &str) -> Result<(), String> {
    check_component(id, "node id")
}

/// One file of a snapshot or a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Path inside the node's snapshot (`core-0/000012.sst`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the whole file.
    pub crc32c: u32,
}

/// `SNAPSHOT.toml`: what a node's snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The snapshot's name.
    pub name: String,
    /// The node's id.
    pub node_id: String,
    /// The node's client address.
    pub address: String,
    /// When the snapshot was taken (ms since the epoch).
    pub taken_ms: u64,
    /// `cluster` (records, docs/versions.md) or `single` (plain values).
    pub mode: String,
    /// `causal` or `lww` (cluster mode).
    pub conflict_mode: String,
    /// `cluster.replication_factor`.
    pub replication_factor: u64,
    /// Data center and rack (empty: none).
    pub dc: String,
    /// Rack (empty: none).
    pub rack: String,
    /// Cores of the node (one `core-<i>` directory each).
    pub cores: u64,
    /// The node's vnode tokens, as `0x` hex (TOML integers are signed).
    pub tokens: Vec<String>,
    /// The members of the cluster when the snapshot was taken (the node
    /// itself on a single node): a backup fetches the snapshot of each.
    pub members: Vec<SnapshotMember>,
    /// Every file, with size and CRC32C.
    pub files: Vec<SnapshotFile>,
}

/// A member of the cluster, as a snapshot recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMember {
    /// Its node id.
    pub id: String,
    /// Its client address.
    pub address: String,
}

impl SnapshotMeta {
    /// The TOML text.
    pub fn to_toml(&self) -> Result<String, Failure> {
        toml::to_string(self).map_err(|e| internal(format!("cannot write {SNAPSHOT_META}: {e}")))
    }

    /// Parses and checks `SNAPSHOT.toml` text read from `origin`.
    pub fn from_toml(text: &str, origin: &str) -> Result<SnapshotMeta, String> {
        let format = peek_format(text, origin)?;
        if format != SNAPSHOT_FORMAT {
            return Err(format!(
                "{origin} has snapshot format version {format}; this build reads version {SNAPSHOT_FORMAT}"
            ));
        }
        let m: SnapshotMeta =
            toml::from_str(text).map_err(|e| format!("{origin} is not a valid {SNAPSHOT_META}: {e}"))?;
        check_files(&m.files, origin)?;
        check_mode(&m.mode, origin)?;
        for member in &m.members {
            check_node_dir(&member.id).map_err(|e| format!("{origin}: {e}"))?;
        }
        Ok(m)
    }
}

/// The `format` key of a TOML file, read before the rest so that a newer
/// format is reported as such rather than as a field that does not parse.
fn peek_format(text: &str, origin: &str) -> Result<u32, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("{origin} is not valid TOML: {e}"))?;
    match table.get("format") {
        Some(toml::Value::Integer(v)) => u32::try_from(*v).map_err(|_| format!("{origin}: format {v} is out of range")),
        _ => Err(format!("{origin} has no `format` version")),
    }
}

fn check_files(files: &[SnapshotFile], origin: &str) -> Result<(), String> {
    if files.len() > MAX_FILES {
        return Err(format!("{origin} lists {} files, more than {MAX_FILES}", files.len()));
    }
    for f in files {
        check_relative_path(&f.path).map_err(|e| format!("{origin}: {e}"))?;
    }
    Ok(())
}

fn check_mode(mode: &str, origin: &str) -> Result<(), String> {
    match mode {
        "cluster" | "single" => Ok(()),
        other => Err(format!("{origin}: mode `{other}` is neither `cluster` nor `single`")),
    }
}

/// One node of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupNode {
    /// The node's id (also its directory in the backup).
    pub id: String,
    /// Its client address when backed up.
    pub address: String,
    /// Data center.
    pub dc: String,
    /// Rack (empty: none).
    pub rack: String,
    /// Cores.
    pub cores: u64,
    /// Its vnode tokens, `0x` hex.
    pub tokens: Vec<String>,
    /// When its snapshot was taken (ms since the epoch).
    pub taken_ms: u64,
}

/// One file of a backup: `<dir>/<node>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// The node's id.
    pub node: String,
    /// Path inside the node's snapshot.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the whole file.
    pub crc32c: u32,
}

/// `backup.toml`: what a backup directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`BACKUP_FORMAT`].
    pub format: u32,
    /// The operator's name for the cluster (corekv has no cluster name
    /// setting; `corekv backup --cluster-name`).
    pub cluster_name: String,
    /// The snapshot copied.
    pub snapshot: String,
    /// When the backup finished (ms since the epoch).
    pub created_ms: u64,
    /// `cluster` or `single`.
    pub mode: String,
    /// `causal` or `lww`.
    pub conflict_mode: String,
    /// `cluster.replication_factor` of the nodes.
    pub replication_factor: u64,
    /// The nodes, as their snapshots described them.
    pub nodes: Vec<BackupNode>,
    /// Every file.
    pub files: Vec<BackupFile>,
}

impl BackupManifest {
    /// The TOML text.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot write {BACKUP_MANIFEST}: {e}"))
    }

    /// Parses and checks `backup.toml` text read from `origin`.
    pub fn from_toml(text: &str, origin: &str) -> Result<BackupManifest, String> {
        let format = peek_format(text, origin)?;
        if format != BACKUP_FORMAT {
            return Err(format!(
                "{origin} has backup format version {format}; this build reads version {BACKUP_FORMAT}"
            ));
        }
        let m: BackupManifest =
            toml::from_str(text).map_err(|e| format!("{origin} is not a valid {BACKUP_MANIFEST}: {e}"))?;
        check_mode(&m.mode, origin)?;
        if m.files.len() > MAX_FILES {
            return Err(format!("{origin} lists {} files, more than {MAX_FILES}", m.files.len()));
        }
        for n in &m.nodes {
            check_node_dir(&n.id).map_err(|e| format!("{origin}: {e}"))?;
        }
        for f in &m.files {
            if !m.nodes.iter().any(|n| n.id == f.node) {
                return Err(format!(
                    "{origin}: file {} names node `{}`, which is not listed",
                    f.path, f.node
                ));
            }
            check_relative_path(&f.path).map_err(|e| format!("{origin}: {e}"))?;
        }
        Ok(m)
    }
}

/// `<data_dir>/snapshots/<name>`, absolute (glommio opens directories
/// without a base descriptor, so a relative path fails).
pub fn snapshot_dir(data_dir: &Path, name: &str) -> PathBuf {
    snapshots_root(data_dir).join(name)
}

fn snapshots_root(data_dir: &Path) -> PathBuf {
    let root = data_dir.join(SNAPSHOTS_DIR);
    std::path::absolute(&root).unwrap_or(root)
}

fn engine_failure(what: &str, e: &corekv_engine::Error) -> Failure {
    internal(format!("{what}: {e}"))
}

/// Size and CRC32C of a file, read through the page cache.
pub async fn checksum_file(path: &Path) -> Result<(u64, u32), Failure> {
    let fs = Fs::real();
    let f = fs
        .open_buffered(path)
        .await
        .map_err(|e| engine_failure("opening a snapshot file", &e))?;
    let size = f
        .size()
        .await
        .map_err(|e| engine_failure("sizing a snapshot file", &e))?;
    let mut crc = 0u32;
    let mut pos = 0u64;
    while pos < size {
        let len = usize::try_from((size - pos).min(CHECKSUM_CHUNK as u64)).unwrap_or(CHECKSUM_CHUNK);
        let b = f
            .read_exact_at(pos, len)
            .await
            .map_err(|e| engine_failure("reading a snapshot file", &e))?;
        crc = crc32c::crc32c_append(crc, &b);
        pos += len as u64;
        corekv_engine::io::yield_if_needed().await;
    }
    f.close()
        .await
        .map_err(|e| engine_failure("closing a snapshot file", &e))?;
    Ok((size, crc))
}

/// The files of `dir` (one level), as snapshot entries under `prefix/`.
async fn list_checksummed(dir: &Path, prefix: &str) -> Result<Vec<SnapshotFile>, Failure> {
    let fs = Fs::real();
    let mut out = Vec::new();
    for name in fs
        .list(dir)
        .await
        .map_err(|e| engine_failure("listing a checkpoint", &e))?
    {
        let (size, crc32c) = checksum_file(&dir.join(&name)).await?;
        out.push(SnapshotFile {
            path: format!("{prefix}/{name}"),
            size,
            crc32c,
        });
    }
    Ok(out)
}

/// Checkpoints this core's engines into `<snapshot>/core-<id>` (and, in
/// cluster mode, its hints into `<snapshot>/hints-<id>`) and returns the
/// files with their sizes and checksums. Runs on the core itself.
pub async fn checkpoint_core(shard: &Rc<Shard>, snapshot: &Path) -> Result<Vec<SnapshotFile>, Failure> {
    let core = format!("core-{}", shard.id);
    let dest = snapshot.join(&core);
    shard
        .store
        .engine()
        .checkpoint(&dest)
        .await
        .map_err(|e| engine_failure(&format!("checkpointing core {}", shard.id), &e))?;
    let mut files = list_checksummed(&dest, &core).await?;
    if let Some(c) = &shard.cluster {
        let hints = format!("hints-{}", shard.id);
        let dest = snapshot.join(&hints);
        c.hints
            .checkpoint(&dest)
            .await
            .map_err(|e| engine_failure(&format!("checkpointing the hints of core {}", shard.id), &e))?;
        files.extend(list_checksummed(&dest, &hints).await?);
    }
    Ok(files)
}

/// Writes `bytes` to `path` durably: aside as `<path>.tmp`, synced, renamed
/// over, the directory synced.
pub async fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let fs = Fs::real();
    let fail = |e: corekv_engine::Error| engine_failure(&format!("writing {}", path.display()), &e);
    let tmp = path.with_extension("tmp");
    let f = fs.create(&tmp).await.map_err(fail)?;
    // O_DIRECT writes whole aligned blocks; the tail is cut off after.
    let mut buf = f.alloc(align_up(bytes.len().max(1)));
    buf.as_mut_slice().fill(0);
    buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    f.write_at(buf, 0).await.map_err(fail)?;
    f.truncate(bytes.len() as u64).await.map_err(fail)?;
    f.sync().await.map_err(fail)?;
    f.close().await.map_err(fail)?;
    fs.rename(&tmp, path).await.map_err(fail)?;
    if let Some(dir) = path.parent() {
        fs.sync_dir(dir).await.map_err(fail)?;
    }
    Ok(())
}

/// Reads a whole small file (at most [`MAX_META_BYTES`]).
pub async fn read_small_file(path: &Path) -> Result<Vec<u8>, Failure> {
    let fs = Fs::real();
    let fail = |e: corekv_engine::Error| engine_failure(&format!("reading {}", path.display()), &e);
    let f = fs.open_buffered(path).await.map_err(fail)?;
    let size = f.size().await.map_err(fail)?;
    if size > MAX_META_BYTES {
        return Err(invalid(format!(
            "{} is {size} bytes, more than the {MAX_META_BYTES} read",
            path.display()
        )));
    }
    let b = f
        .read_exact_at(0, usize::try_from(size).unwrap_or(0))
        .await
        .map_err(fail)?;
    let out = b.to_vec();
    f.close().await.map_err(fail)?;
    Ok(out)
}

/// A snapshot as the node lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Its name.
    pub name: String,
    /// Its description, `None` when `SNAPSHOT.toml` is missing (the
    /// snapshot did not complete) or unreadable (the reason).
    pub meta: Result<SnapshotMeta, String>,
}

/// The node's snapshots, by name.
pub async fn list_local(data_dir: &Path) -> Result<Vec<SnapshotSummary>, Failure> {
    let root = snapshots_root(data_dir);
    let fs = Fs::real();
    if !fs.exists(&root).await {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in fs
        .list(&root)
        .await
        .map_err(|e| engine_failure("listing the snapshots", &e))?
    {
        let meta_path = root.join(&name).join(SNAPSHOT_META);
        let meta = if fs.exists(&meta_path).await {
            match read_small_file(&meta_path).await {
                Ok(b) => match std::str::from_utf8(&b) {
                    Ok(text) => SnapshotMeta::from_toml(text, &meta_path.display().to_string()),
                    Err(_) => Err(format!("{} is not UTF-8", meta_path.display())),
                },
                Err(f) => Err(f.message),
            }
        } else {
            Err(format!("incomplete: no {SNAPSHOT_META}"))
        };
        out.push(SnapshotSummary { name, meta });
    }
    Ok(out)
}

/// Deletes snapshot `name` of this node; returns the files removed. The
/// snapshot's tables are hard links: their space returns once the live data
/// directory no longer uses them either (compaction replaced them).
pub async fn delete_local(data_dir: &Path, name: &str) -> Result<usize, Failure> {
    check_name(name)?;
    let dir = snapshot_dir(data_dir, name);
    let fs = Fs::real();
    if !fs.exists(&dir).await {
        return Err(invalid(format!("no snapshot `{name}` on this node")));
    }
    let fail = |e: corekv_engine::Error| engine_failure(&format!("deleting snapshot {name}"), &e);
    let mut removed = 0;
    // The description goes first: a half-deleted snapshot reads as incomplete.
    let meta = dir.join(SNAPSHOT_META);
    if fs.exists(&meta).await {
        fs.remove(&meta).await.map_err(fail)?;
        removed += 1;
    }
    for sub in fs.list(&dir).await.map_err(fail)? {
        let path = dir.join(&sub);
        if path.is_dir() {
            for f in fs.list(&path).await.map_err(fail)? {
                fs.remove(&path.join(f)).await.map_err(fail)?;
                removed += 1;
            }
            // An empty directory: one rmdir, as rare as the snapshot itself.
            std::fs::remove_dir(&path).map_err(|e| internal(format!("removing {}: {e}", path.display())))?;
        } else {
            fs.remove(&path).await.map_err(fail)?;
            removed += 1;
        }
    }
    std::fs::remove_dir(&dir).map_err(|e| internal(format!("removing {}: {e}", dir.display())))?;
    Ok(removed)
}

/// Up to `max_len` bytes of `path` in snapshot `name` from `offset`, with
/// the file's size; `path` is checked to stay inside the snapshot.
pub async fn read_chunk(
    data_dir: &Path,
    name: &str,
    path: &str,
    offset: u64,
    max_len: u32,
) -> Result<(u64, Vec<u8>), Failure> {
    check_name(name)?;
    check_relative_path(path).map_err(invalid)?;
    let dir = snapshot_dir(data_dir, name);
    let fs = Fs::real();
    if !fs.exists(&dir.join(SNAPSHOT_META)).await {
        return Err(invalid(format!("no complete snapshot `{name}` on this node")));
    }
    let full = dir.join(path);
    if full.is_dir() || !fs.exists(&full).await {
        return Err(invalid(format!("snapshot `{name}` has no file `{path}`")));
    }
    let fail = |e: corekv_engine::Error| engine_failure(&format!("reading {path} of snapshot {name}"), &e);
    let f = fs.open_buffered(&full).await.map_err(fail)?;
    let size = f.size().await.map_err(fail)?;
    let want = u64::from(max_len.min(corekv_net::msg::peer::MAX_SNAPSHOT_CHUNK));
    let len = size.saturating_sub(offset).min(want);
    let data = if len == 0 {
        Vec::new()
    } else {
        f.read_exact_at(offset, usize::try_from(len).unwrap_or(0))
            .await
            .map_err(fail)?
            .to_vec()
    };
    f.close().await.map_err(fail)?;
    Ok((size, data))
}

/// Why [`read_backup`] stopped, or what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Entries sent on.
    pub entries: u64,
    /// Their key and record bytes.
    pub bytes: u64,
    /// Engine entries skipped: purged records, non-record values in a
    /// cluster backup.
    pub skipped: u64,
    /// Hints found (sent as records).
    pub hints: u64,
    /// Core and hint directories read.
    pub dirs: u64,
}

/// A batch of entries for one RESTORE request: `(token, key, record)`,
/// the record in the backup's mode (`RestoreMode`).
pub type RestoreBatch = Vec<(u64, Vec<u8>, Vec<u8>)>;

/// Encodes a single-node engine entry for a RESTORE in `Plain` mode:
/// `kind u8 | time u64 LE | meta_len u32 LE | meta | value`.
pub fn encode_plain(kind: Kind, time: u64, meta: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + meta.len() + value.len());
    out.push(kind as u8);
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(value);
    out
}

/// A decoded `Plain` entry: kind, time, meta, value.
pub type PlainEntry<'a> = (Kind, u64, &'a [u8], &'a [u8]);

/// Decodes [`encode_plain`]'s bytes (untrusted).
pub fn decode_plain(b: &[u8]) -> Result<PlainEntry<'_>, String> {
    let kind = match b.first() {
        Some(1) => Kind::Put,
        Some(2) => Kind::Delete,
        Some(k) => return Err(format!("unknown entry kind {k}")),
        None => return Err("empty entry".into()),
    };
    let time = b
        .get(1..9)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or("truncated entry time")?;
    let meta_len = b
        .get(9..13)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or("truncated meta length")?;
    let meta_end = 13usize
        .checked_add(usize::try_from(meta_len).map_err(|_| "meta length too large")?)
        .ok_or("meta length too large")?;
    let meta = b.get(13..meta_end).ok_or("meta runs past the entry")?;
    let value = b.get(meta_end..).unwrap_or_default();
    Ok((kind, time, meta, value))
}

/// Where [`read_backup`] sends its batches, and their bounds.
#[derive(Debug)]
pub struct BatchSink {
    /// The channel (bounded: the reader waits when the sender is behind).
    pub tx: SyncSender<RestoreBatch>,
    /// Most entries per batch.
    pub max_entries: usize,
    /// Most key and record bytes per batch (one larger entry still goes).
    pub max_bytes: usize,
}

impl BatchSink {
    /// Sends `batch` without blocking the executor: a full channel is
    /// retried after a short sleep.
    async fn send(&self, batch: RestoreBatch) -> Result<(), String> {
        let mut batch = batch;
        loop {
            match self.tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(b)) => {
                    batch = b;
                    corekv_engine::io::sleep(Duration::from_millis(2)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err("the restore stopped taking records".into()),
            }
        }
    }
}

/// Reads every core and hint directory of every node of a backup (`dir`,
/// already verified against `manifest`) with read-only engines, and sends
/// the records in batches to `sink`. Runs on an executor of its own
/// ([`crate::runtime::run_offline`]); blocks the calling thread until done.
pub fn read_backup(dir: &Path, manifest: &BackupManifest, sink: BatchSink) -> Result<ReadStats, String> {
    let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
    for n in &manifest.nodes {
        let mut subs: Vec<&str> = manifest
            .files
            .iter()
            .filter(|f| f.node == n.id)
            .filter_map(|f| f.path.split_once('/').map(|(d, _)| d))
            .collect();
        subs.sort_unstable();
        subs.dedup();
        for s in subs {
            if s.starts_with("core-") {
                dirs.push((dir.join(&n.id).join(s), false));
            } else if s.starts_with("hints-") {
                dirs.push((dir.join(&n.id).join(s), true));
            }
        }
    }
    let cluster = manifest.mode == "cluster";
    crate::runtime::run_offline("corekv-restore-reader", move || async move {
        let mut stats = ReadStats::default();
        for (d, hints) in dirs {
            read_dir(&d, hints, cluster, &sink, &mut stats).await?;
            stats.dirs += 1;
        }
        Ok(stats)
    })
    .map_err(|e| e.to_string())?
}

async fn read_dir(
    dir: &Path,
    hints: bool,
    cluster: bool,
    sink: &BatchSink,
    stats: &mut ReadStats,
) -> Result<(), String> {
    let mut o = corekv_engine::Options::new(Fs::real(), dir.to_path_buf());
    o.read_only = true;
    o.table_reads = corekv_engine::TableReads::Buffered;
    o.block_cache_bytes = 8 << 20;
    o.row_cache_bytes = 0;
    o.retain_flushed_bytes = 0;
    o.background = false;
    // The checkpoint's own keys passed these bounds when written; a read
    // checks nothing against them.
    o.limits.max_key = 1 << 20;
    o.limits.max_value = usize::MAX >> 1;
    let engine = Engine::open(o)
        .await
        .map_err(|e| format!("opening {} read-only: {e}", dir.display()))?;
    let now = now_ms();
    let mut after = None;
    let mut batch: RestoreBatch = Vec::new();
    let mut bytes = 0usize;
    loop {
        let page = engine
            .scan(&ScanOptions {
                after: after.take(),
                limit: 1024,
                max_examined: 4096,
                include_deleted: true,
                ..ScanOptions::default()
            })
            .await
            .map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for e in page.entries {
            let item = if hints {
                if e.kind != Kind::Put {
                    continue;
                }
                let h = crate::replication::hints::Hint::<crate::versioning::Record>::decode(&e.value)
                    .map_err(|err| format!("a hint in {} does not decode: {err}", dir.display()))?;
                stats.hints += 1;
                (h.mutation.token, h.mutation.key, h.mutation.record.to_bytes())
            } else if cluster {
                // A record whose purge time passed is gone for the cluster
                // too; anything else than a record is not cluster data.
                if e.kind != Kind::Put || e.meta != RECORD_META || (e.time != 0 && e.time <= now) {
                    stats.skipped += 1;
                    continue;
                }
                (e.token, e.key, e.value)
            } else {
                let plain = encode_plain(e.kind, e.time, &e.meta, &e.value);
                (e.token, e.key, plain)
            };
            bytes += item.1.len() + item.2.len();
            stats.entries += 1;
            stats.bytes += (item.1.len() + item.2.len()) as u64;
            batch.push(item);
            if batch.len() >= sink.max_entries || bytes >= sink.max_bytes {
                sink.send(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
        }
        match page.cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    if !batch.is_empty() {
        sink.send(batch).await?;
    }
    engine
        .close()
        .await
        .map_err(|e| format!("closing {}: {e}", dir.display()))?;
    Ok(())
}

/// Takes this node's snapshot `name`: every core checkpoints at once, then
/// `SNAPSHOT.toml` is written. Fails if the name is taken.
pub async fn take_local(shard: &Rc<Shard>, name: &str) -> Result<SnapshotMeta, Failure> {
    check_name(name)?;
    let config = &shard.config;
    let dir = snapshot_dir(&config.node.data_dir, name);
    let fs = Fs::real();
    if fs.exists(&dir).await {
        return Err(invalid(format!(
            "snapshot `{name}` already exists on node {} (delete it first, or pick another name)",
            config.node.id
        )));
    }
    fs.create_dir_all(&dir)
        .await
        .map_err(|e| engine_failure("creating the snapshot directory", &e))?;
    let taken_ms = now_ms();
    let calls = (0..shard.cores).map(|core| {
        let dir = dir.clone();
        async move {
            match shard.exec(core, crate::store::Cmd::Checkpoint { snapshot: dir }).await {
                crate::store::Reply::Files(f) => Ok(f),
                crate::store::Reply::Failed(f) => Err(f),
                other => Err(internal(format!("unexpected reply {other:?}"))),
            }
        }
    });
    let mut files = Vec::new();
    let mut failed = None;
    for r in futures::future::join_all(calls).await {
        match r {
            Ok(f) => files.extend(f),
            Err(f) => failed = failed.or(Some(f)),
        }
    }
    if let Some(f) = failed {
        // Leave no half-made snapshot behind: the name stays free.
        if let Err(e) = delete_local(&config.node.data_dir, name).await {
            tracing::warn!(snapshot = name, error = %e.message, "removing a failed snapshot");
        }
        return Err(f);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let me = SnapshotMember {
        id: config.node.id.clone(),
        address: crate::cluster::client_address(config),
    };
    let (mode, tokens, members) = match &shard.cluster {
        Some(c) => {
            let view = c.view();
            let ring = view.ring_with(&c.me);
            let tokens = match ring.index_of(&c.me) {
                Some(i) => ring.tokens_of(i),
                None => crate::cluster::local_tokens(config),
            };
            let mut members: Vec<SnapshotMember> = Vec::new();
            for ring in std::iter::once(&view.ring).chain(view.next.iter()) {
                for n in ring.nodes() {
                    if !members.iter().any(|m| m.id == n.id.0) {
                        members.push(SnapshotMember {
                            id: n.id.0.clone(),
                            address: n.address.clone(),
                        });
                    }
                }
            }
            if !members.iter().any(|m| m.id == me.id) {
                members.push(me.clone());
            }
            members.sort_by(|a, b| a.id.cmp(&b.id));
            ("cluster", tokens, members)
        }
        None => ("single", crate::cluster::local_tokens(config), vec![me.clone()]),
    };
    let meta = SnapshotMeta {
        format: SNAPSHOT_FORMAT,
        name: name.to_owned(),
        node_id: me.id.clone(),
        address: me.address.clone(),
        taken_ms,
        mode: mode.to_owned(),
        conflict_mode: match config.cluster.conflict_mode {
            crate::config::ConflictModeSetting::Causal => "causal".to_owned(),
            crate::config::ConflictModeSetting::Lww => "lww".to_owned(),
        },
        replication_factor: if shard.cluster.is_some() {
            config.cluster.replication_factor
        } else {
            1
        },
        dc: config.cluster.dc.clone(),
        rack: config.cluster.rack.clone(),
        cores: shard.cores as u64,
        tokens: tokens.iter().map(|t| format!("{t:#018x}")).collect(),
        members,
        files,
    };
    write_file_atomically(&dir.join(SNAPSHOT_META), meta.to_toml()?.as_bytes()).await?;
    Ok(meta)
}

/// Parses a `0x` hex token of a [`SnapshotMeta`] or [`BackupNode`].
pub fn parse_token(t: &str) -> Result<u64, String> {
    let hex = t
        .strip_prefix("0x")
        .ok_or_else(|| format!("token `{t}` does not start with 0x"))?;
    u64::from_str_radix(hex, 16).map_err(|e| format!("token `{t}`: {e}"))
}

/// A human size: `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_stay_inside_the_snapshot() {
        for ok in ["nightly", "2024-01-01_a.b", "A"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["SNAPSHOT.toml", "core-0/000012.sst", "hints-3/MANIFEST-000002"] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../x",
            "core-0/../../etc",
            "/etc/passwd",
            "a/b/c",
            "core-0/",
            "",
            "core-0//x",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            format: SNAPSHOT_FORMAT,
            name: "n".into(),
            node_id: "n1".into(),
            address: "127.0.0.1:7380".into(),
            taken_ms: 1_700_000_000_000,
            mode: "cluster".into(),
            conflict_mode: "causal".into(),
            replication_factor: 3,
            dc: "dc1".into(),
            rack: String::new(),
            cores: 2,
            tokens: vec![format!("{:#018x}", u64::MAX)],
            members: vec![SnapshotMember {
                id: "n1".into(),
                address: "127.0.0.1:7380".into(),
            }],
            files: vec![SnapshotFile {
                path: "core-0/000001.sst".into(),
                size: 4096,
                crc32c: u32::MAX,
            }],
        }
    }

    #[test]
    fn snapshot_meta_round_trips_and_a_future_format_is_named() {
        let m = meta();
        let text = m.to_toml().unwrap();
        assert_eq!(SnapshotMeta::from_toml(&text, "x").unwrap(), m);
        assert_eq!(parse_token(&m.tokens[0]).unwrap(), u64::MAX);
        let future = text.replace("format = 1", "format = 2");
        let e = SnapshotMeta::from_toml(&future, "/d/SNAPSHOT.toml").unwrap_err();
        assert!(
            e.contains("/d/SNAPSHOT.toml has snapshot format version 2; this build reads version 1"),
            "{e}"
        );
        let escaping = text.replace("core-0/000001.sst", "../../etc/passwd");
        assert!(SnapshotMeta::from_toml(&escaping, "x").is_err());
    }

    #[test]
    fn backup_manifest_checks_its_nodes_and_files() {
        let m = BackupManifest {
            format: BACKUP_FORMAT,
            cluster_name: "prod".into(),
            snapshot: "n".into(),
            created_ms: 5,
            mode: "cluster".into(),
            conflict_mode: "lww".into(),
            replication_factor: 3,
            nodes: vec![BackupNode {
                id: "n1".into(),
                address: "a:1".into(),
                dc: "dc1".into(),
                rack: String::new(),
                cores: 1,
                tokens: vec!["0x01".into()],
                taken_ms: 4,
            }],
            files: vec![BackupFile {
                node: "n1".into(),
                path: "core-0/MANIFEST-000003".into(),
                size: 10,
                crc32c: 7,
            }],
        };
        let text = m.to_toml().unwrap();
        assert_eq!(BackupManifest::from_toml(&text, "b").unwrap(), m);
        let orphan = text.replace("node = \"n1\"", "node = \"n9\"");
        assert!(BackupManifest::from_toml(&orphan, "b").unwrap_err().contains("n9"));
        let future = text.replace("format = 1", "format = 7");
        assert!(BackupManifest::from_toml(&future, "b")
            .unwrap_err()
            .contains("backup format version 7; this build reads version 1"));
    }

    #[test]
    fn plain_entries_round_trip_and_garbage_is_refused() {
        let b = encode_plain(Kind::Put, 99, b"meta", b"value");
        assert_eq!(decode_plain(&b).unwrap(), (Kind::Put, 99, &b"meta"[..], &b"value"[..]));
        let t = encode_plain(Kind::Delete, 5, b"m", b"");
        assert_eq!(decode_plain(&t).unwrap(), (Kind::Delete, 5, &b"m"[..], &b""[..]));
        for cut in 0..13 {
            assert!(decode_plain(&b[..cut]).is_err(), "{cut}");
        }
        let mut huge = b.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_plain(&huge).is_err());
        assert!(decode_plain(&[7]).is_err());
    }

    #[test]
    fn sizes_for_humans() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    fn lww(value: &str) -> crate::versioning::Record {
        crate::versioning::Record::Lww(crate::versioning::LwwRegister::new(
            crate::versioning::Timestamp::from_u64(1 << 20),
            crate::versioning::Actor(3),
            crate::versioning::Value::put(value),
        ))
    }

    /// Engines checkpointed under `<root>/bk/n1/{core-0,hints-0}` on the
    /// real disk (target/), read back by [`read_backup`].
    #[test]
    fn read_backup_sends_records_hints_and_plain_entries() {
        use crate::topology::token_of;
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/unit-backup")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&root);
        let bk = root.join("bk");
        let (live, bk2) = (root.join("live"), bk.clone());
        crate::runtime::run_offline("fixture", move || async move {
            let open = |dir: PathBuf| async move {
                let mut o = corekv_engine::Options::new(Fs::real(), dir);
                o.background = false;
                Engine::open(o).await.unwrap()
            };
            let e = open(live.join("core-0")).await;
            for (k, v) in [("a", "va"), ("b", "vb")] {
                e.put(token_of(k.as_bytes()), k.as_bytes(), &lww(v).to_bytes(), RECORD_META, 0)
                    .await
                    .unwrap();
            }
            // Not a record; and a record past its purge time: both skipped.
            e.put(token_of(b"c"), b"c", b"plain", b"hlc", 0).await.unwrap();
            e.put(token_of(b"d"), b"d", &lww("vd").to_bytes(), RECORD_META, 1)
                .await
                .unwrap();
            e.delete(token_of(b"t"), b"t", b"hlc2").await.unwrap();
            e.checkpoint(&bk2.join("n1").join("core-0")).await.unwrap();
            e.close().await.unwrap();
            let h = open(live.join("hints-0")).await;
            let hint = crate::replication::hints::Hint {
                id: crate::replication::hints::HintId(9),
                target: crate::topology::NodeId::from("n2"),
                mutation: crate::coordinator::Mutation {
                    key: b"h".to_vec(),
                    token: token_of(b"h"),
                    record: lww("vh"),
                },
                created: 5,
            };
            let mut b = Vec::new();
            hint.encode(&mut b).unwrap();
            h.put(9, &9u64.to_be_bytes(), &b, b"", 0).await.unwrap();
            h.checkpoint(&bk2.join("n1").join("hints-0")).await.unwrap();
            h.close().await.unwrap();
        })
        .unwrap();
        let mut files = Vec::new();
        for sub in ["core-0", "hints-0"] {
            for f in std::fs::read_dir(bk.join("n1").join(sub)).unwrap().flatten() {
                files.push(BackupFile {
                    node: "n1".into(),
                    path: format!("{sub}/{}", f.file_name().to_str().unwrap()),
                    size: 0,
                    crc32c: 0,
                });
            }
        }
        let mut manifest = BackupManifest {
            format: BACKUP_FORMAT,
            cluster_name: "t".into(),
            snapshot: "s".into(),
            created_ms: 0,
            mode: "cluster".into(),
            conflict_mode: "lww".into(),
            replication_factor: 3,
            nodes: vec![BackupNode {
                id: "n1".into(),
                address: "a:1".into(),
                dc: "dc1".into(),
                rack: String::new(),
                cores: 1,
                tokens: Vec::new(),
                taken_ms: 0,
            }],
            files,
        };
        let read = |manifest: &BackupManifest| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let (dir, m) = (bk.clone(), manifest.clone());
            let reader = std::thread::spawn(move || {
                read_backup(
                    &dir,
                    &m,
                    BatchSink {
                        tx,
                        max_entries: 2,
                        max_bytes: 1 << 20,
                    },
                )
            });
            let mut got: Vec<(u64, Vec<u8>, Vec<u8>)> = rx.iter().flatten().collect();
            got.sort();
            (reader.join().unwrap().unwrap(), got)
        };
        let (stats, got) = read(&manifest);
        let mut want: Vec<(u64, Vec<u8>, Vec<u8>)> = [("a", "va"), ("b", "vb"), ("h", "vh")]
            .iter()
            .map(|(k, v)| (token_of(k.as_bytes()), k.as_bytes().to_vec(), lww(v).to_bytes()))
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!((stats.entries, stats.hints, stats.skipped, stats.dirs), (3, 1, 3, 2));

        // The same tables as a single node's: every engine entry, plain.
        manifest.mode = "single".into();
        manifest.files.retain(|f| f.path.starts_with("core-"));
        let (stats, got) = read(&manifest);
        assert_eq!(stats.entries, 5);
        let t = got.iter().find(|(_, k, _)| k == b"t").unwrap();
        let (kind, _, meta, value) = decode_plain(&t.2).unwrap();
        assert_eq!((kind, meta, value), (Kind::Delete, &b"hlc2"[..], &b""[..]));
        let c = got.iter().find(|(_, k, _)| k == b"c").unwrap();
        assert_eq!(decode_plain(&c.2).unwrap(), (Kind::Put, 0, &b"hlc"[..], &b"plain"[..]));
        let _ = std::fs::remove_dir_all(&root);
    }
}
