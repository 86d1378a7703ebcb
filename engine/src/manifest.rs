//! The manifest: an append-only log of version edits, replayed at open.
//!
//! ## Format
//!
//! Files are named `MANIFEST-NNNNNN` and use the record framing of
//! [`crate::log`] with `log_no` = NNNNNN. Each record payload is one edit:
//!
//! ```text
//! edit := version u8 (=1) | field*
//! field := tag u8 | value
//!   1 snapshot        (no value: this edit is the full state; first record of every file)
//!   2 next_file_no    varint
//!   3 last_seq        varint
//!   4 min_log_no      varint   (WAL logs below it hold only flushed data)
//!   5 add_file        level varint | file
//!   6 remove_file     level varint | file_no varint
//! file := file_no varint | size varint | entries varint | tombstones varint
//!         | min_seq varint | max_seq varint | max_time varint | created_ms varint
//!         | smallest_token u64 | smallest_seq varint | smallest_key_len varint | smallest_key
//!         | largest_token u64 | largest_seq varint | largest_key_len varint | largest_key
//! ```
//!
//! At open the engine picks the highest-numbered manifest whose first record
//! is a valid snapshot, replays its edits up to the first bad record (a torn
//! tail: that edit was never acknowledged to anyone, and the files it named are
//! orphans the engine deletes), then writes a fresh manifest starting with a
//! snapshot and deletes the older ones. There is no CURRENT file to rename: the
//! numbering is the pointer. A fresh manifest is written as
//! `MANIFEST-NNNNNN.tmp` and renamed once whole and synced, so one that fails
//! halfway (a full disk) never becomes the newest; leftover `.tmp` files are
//! deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{DecodeError, Error, Result};
use crate::format::{get_bytes, get_u64, get_varint, put_varint, SeqNo};
use crate::io::{File, Fs};
use crate::log::{self, LogBuffer, LogEnd};

/// The manifest edit format version this build writes and reads.
pub const EDIT_VERSION: u8 = 1;

/// What the manifest records of one SSTable: the metadata the table builder
/// returns, as is (one type, so the two cannot drift apart).
pub type FileRecord = crate::sstable::TableMeta;

/// A change to the set of live files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// This edit is the full state.
    pub snapshot: bool,
    /// Next unused file number.
    pub next_file_no: Option<u64>,
    /// Last sequence number flushed.
    pub last_seq: Option<SeqNo>,
    /// Oldest WAL log still needed.
    pub min_log_no: Option<u64>,
    /// Files added, with their level.
    pub added: Vec<(usize, FileRecord)>,
    /// Files removed, with their level.
    pub removed: Vec<(usize, u64)>,
}

fn put_file(out: &mut Vec<u8>, f: &FileRecord) {
    for v in [
        f.file_no,
        f.size,
        f.entries,
        f.tombstones,
        f.min_seq,
        f.max_seq,
        f.max_time,
        f.created_ms,
    ] {
        put_varint(out, v);
    }
    for (t, k, s) in [&f.smallest, &f.largest] {
        out.extend_from_slice(&t.to_le_bytes());
        put_varint(out, *s);
        put_varint(out, k.len() as u64);
        out.extend_from_slice(k);
    }
}

fn get_file(buf: &[u8], pos: &mut usize) -> Result<FileRecord, DecodeError> {
    let mut v = [0u64; 8];
    for x in v.iter_mut() {
        *x = get_varint(buf, pos)?;
    }
    let mut keys = Vec::with_capacity(2);
    for _ in 0..2 {
        let t = get_u64(buf, pos)?;
        let s = get_varint(buf, pos)?;
        let at = *pos;
        let len = usize::try_from(get_varint(buf, pos)?).map_err(|_| DecodeError::new(at, "key length too large"))?;
        if len > 1 << 20 {
            return Err(DecodeError::new(at, "key length over 1 MiB in manifest"));
        }
        keys.push((t, get_bytes(buf, pos, len)?.to_vec(), s));
    }
    let largest = keys.pop().ok_or(DecodeError::new(*pos, "missing largest key"))?;
    let smallest = keys.pop().ok_or(DecodeError::new(*pos, "missing smallest key"))?;
    Ok(FileRecord {
        file_no: v[0],
        size: v[1],
        entries: v[2],
        tombstones: v[3],
        min_seq: v[4],
        max_seq: v[5],
        max_time: v[6],
        created_ms: v[7],
        smallest,
        largest,
    })
}

/// Deepest level a manifest may name (a bound before trusting the byte).
pub const MAX_LEVELS: usize = 16;

impl VersionEdit {
    /// Encodes the edit.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![EDIT_VERSION];
        if self.snapshot {
            out.push(1);
        }
        if let Some(v) = self.next_file_no {
            out.push(2);
            put_varint(&mut out, v);
        }
        if let Some(v) = self.last_seq {
            out.push(3);
            put_varint(&mut out, v);
        }
        if let Some(v) = self.min_log_no {
            out.push(4);
            put_varint(&mut out, v);
        }
        for (level, f) in &self.added {
            out.push(5);
            put_varint(&mut out, *level as u64);
            put_file(&mut out, f);
        }
        for (level, no) in &self.removed {
            out.push(6);
            put_varint(&mut out, *level as u64);
            put_varint(&mut out, *no);
        }
        out
    }

    /// Decodes an edit; never panics on arbitrary bytes.
    pub fn decode(buf: &[u8]) -> Result<VersionEdit, DecodeError> {
        let mut e = VersionEdit::default();
        match buf.first() {
            Some(&EDIT_VERSION) => {}
            Some(_) => return Err(DecodeError::new(0, "unknown manifest edit version")),
            None => return Err(DecodeError::new(0, "empty manifest edit")),
        }
        let mut pos = 1;
        let level = |buf: &[u8], pos: &mut usize| -> Result<usize, DecodeError> {
            let at = *pos;
            let l = get_varint(buf, pos)?;
            if l as usize >= MAX_LEVELS {
                return Err(DecodeError::new(at, "level out of range"));
            }
            Ok(l as usize)
        };
        while pos < buf.len() {
            let tag = buf[pos];
            pos += 1;
            match tag {
                1 => e.snapshot = true,
                2 => e.next_file_no = Some(get_varint(buf, &mut pos)?),
                3 => e.last_seq = Some(get_varint(buf, &mut pos)?),
                4 => e.min_log_no = Some(get_varint(buf, &mut pos)?),
                5 => {
                    let l = level(buf, &mut pos)?;
                    e.added.push((l, get_file(buf, &mut pos)?));
                }
                6 => {
                    let l = level(buf, &mut pos)?;
                    e.removed.push((l, get_varint(buf, &mut pos)?));
                }
                _ => return Err(DecodeError::new(pos - 1, "unknown manifest field tag")),
            }
        }
        Ok(e)
    }
}

/// The state the manifest describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Live files per level, by file number.
    pub levels: Vec<BTreeMap<u64, FileRecord>>,
    /// Next unused file number.
    pub next_file_no: u64,
    /// Last sequence number flushed to a table.
    pub last_seq: SeqNo,
    /// Oldest WAL log still needed.
    pub min_log_no: u64,
}

impl ManifestState {
    /// Applies an edit. Fails if it removes a file that is not there.
    pub fn apply(&mut self, e: &VersionEdit) -> std::result::Result<(), &'static str> {
        // Checked before any change: `file_no + 1` below must not overflow.
        if e.added.iter().any(|(_, f)| f.file_no == u64::MAX) {
            return Err("edit adds a file numbered u64::MAX");
        }
        if e.snapshot {
            *self = ManifestState::default();
        }
        if e.next_file_no == Some(u64::MAX) {
            return Err("next_file_no is u64::MAX");
        }
        if let Some(v) = e.next_file_no {
            self.next_file_no = self.next_file_no.max(v);
        }
        if let Some(v) = e.last_seq {
            self.last_seq = self.last_seq.max(v);
        }
        if let Some(v) = e.min_log_no {
            self.min_log_no = self.min_log_no.max(v);
        }
        for (l, no) in &e.removed {
            let lvl = self
                .levels
                .get_mut(*l)
                .ok_or("edit removes a file from an empty level")?;
            lvl.remove(no).ok_or("edit removes a file that is not live")?;
        }
        for (l, f) in &e.added {
            while self.levels.len() <= *l {
                self.levels.push(BTreeMap::new());
            }
            self.next_file_no = self.next_file_no.max(f.file_no + 1);
            self.levels[*l].insert(f.file_no, f.clone());
        }
        Ok(())
    }

    /// The full state as one snapshot edit.
    pub fn snapshot_edit(&self) -> VersionEdit {
        VersionEdit {
            snapshot: true,
            next_file_no: Some(self.next_file_no),
            last_seq: Some(self.last_seq),
            min_log_no: Some(self.min_log_no),
            added: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(l, m)| m.values().map(move |f| (l, f.clone())))
                .collect(),
            removed: Vec::new(),
        }
    }
}

/// An open manifest being appended to.
#[derive(Debug)]
pub struct Manifest {
    fs: Fs,
    dir: PathBuf,
    number: u64,
    file: File,
    buf: LogBuffer,
    state: ManifestState,
    /// Rewrite into a new file once the log grows past this.
    max_bytes: u64,
    /// Set once a write or sync failed in a way that leaves the log's bytes
    /// on disk unknown: no edit is appended after it (the reason).
    fenced: Option<String>,
}

fn manifest_name(n: u64) -> String {
    format!("MANIFEST-{n:06}")
}

fn parse_manifest_name(n: &str) -> Option<u64> {
    n.strip_prefix("MANIFEST-")?.parse().ok()
}

/// A manifest being written, not yet renamed to its number.
fn is_manifest_tmp(n: &str) -> bool {
    n.strip_prefix("MANIFEST-")
        .and_then(|r| r.strip_suffix(".tmp"))
        .is_some_and(|d| d.parse::<u64>().is_ok())
}

/// Reads the newest valid manifest in `dir`. Returns its number and state, or
/// `None` for a fresh directory.
pub async fn read_latest(fs: &Fs, dir: &Path) -> Result<Option<(u64, ManifestState)>> {
    let mut nums: Vec<u64> = fs
        .list(dir)
        .await?
        .iter()
        .filter_map(|n| parse_manifest_name(n))
        .collect();
    nums.sort_unstable();
    let mut first_err = None;
    for &n in nums.iter().rev() {
        let path = dir.join(manifest_name(n));
        let f = fs.open(&path, false).await?;
        let size = f.size().await?;
        let data = f.read_at(0, size as usize).await?;
        f.close().await?;
        let sc = log::scan(&data, n);
        let mut state = ManifestState::default();
        let mut ok = false;
        let mut err = None;
        for (i, (off, payload)) in sc.records.iter().enumerate() {
            // A whole record (its checksum holds) of another version is no
            // damage: a newer build wrote it, and this one must not guess.
            if let Some(&v) = payload.first() {
                if v != EDIT_VERSION {
                    return Err(Error::UnsupportedVersion {
                        path: path.clone(),
                        found: u32::from(v),
                        supported: u32::from(EDIT_VERSION),
                    });
                }
            }
            let e = match VersionEdit::decode(payload) {
                Ok(e) => e,
                Err(d) => {
                    err = Some(d.at(&path, (*off + log::HEADER) as u64));
                    break;
                }
            };
            if i == 0 && !e.snapshot {
                err = Some(Error::corruption(&path, 0, "manifest does not start with a snapshot"));
                break;
            }
            if let Err(why) = state.apply(&e) {
                err = Some(Error::corruption(&path, *off as u64, why));
                break;
            }
            ok = true;
        }
        if let Some(e) = err {
            // A manifest that decodes wrongly is damage, not a torn tail: refuse.
            return Err(e);
        }
        if let Some(off) = sc.later_valid {
            return Err(Error::corruption(
                &path,
                sc.end as u64,
                format!("damaged manifest record followed by a valid one at {off}"),
            ));
        }
        if ok {
            return Ok(Some((n, state)));
        }
        // An empty or torn-at-birth newest manifest: a crash while rotating. Use the previous one.
        if first_err.is_none() && sc.why == LogEnd::BadChecksum {
            first_err = Some(Error::corruption(&path, 0, "manifest's first record is damaged"));
        }
    }
    match first_err {
        Some(e) if !nums.is_empty() && nums.len() == 1 => Err(e),
        _ if !nums.is_empty() => Err(Error::corruption(
            dir.join(manifest_name(nums[nums.len() - 1])),
            0,
            "no readable manifest in the directory",
        )),
        _ => Ok(None),
    }
}

impl Manifest {
    /// Starts manifest number `number` in `dir` holding `state`, durably, and
    /// deletes every older manifest.
    ///
    /// The file is written under a temporary name and renamed once whole and
    /// durable: a manifest that failed halfway (a full disk) never shadows the
    /// live one. A failure before the rename changes nothing on disk; one
    /// after it (the directory sync) is [`Error::Fenced`], since a restart may
    /// then read either file.
    pub async fn create(fs: Fs, dir: &Path, number: u64, state: ManifestState, max_bytes: u64) -> Result<Manifest> {
        let path = dir.join(manifest_name(number));
        let tmp = dir.join(format!("{}.tmp", manifest_name(number)));
        let file = fs.create(&tmp).await?;
        let mut m = Manifest {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            number,
            file,
            buf: LogBuffer::new(number, 0, &[]),
            state: ManifestState::default(),
            max_bytes,
            fenced: None,
        };
        let snap = state.snapshot_edit();
        let written = match m.write_edit(&snap).await {
            Ok(_) => fs.rename(&tmp, &path).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let _ = m.file.close().await;
            if let Err(rm) = fs.remove(&tmp).await {
                tracing::warn!(path = %tmp.display(), error = %rm, "cannot remove a half-written manifest");
            }
            return Err(e);
        }
        let fenced = |e: Error| Error::Fenced {
            path: path.clone(),
            reason: format!("a new manifest was renamed into place but is not known to be durable: {e}"),
        };
        fs.sync_dir(dir).await.map_err(fenced)?;
        // Errors from now on name the file by its real name.
        let old = std::mem::replace(&mut m.file, fs.open(&path, true).await.map_err(fenced)?);
        if let Err(e) = old.close().await {
            tracing::warn!(path = %path.display(), error = %e, "closing a manifest failed");
        }
        for name in fs.list(dir).await? {
            let stale = parse_manifest_name(&name).is_some_and(|n| n < number) || is_manifest_tmp(&name);
            if stale {
                // Harmless if it stays (the highest number wins), so only say so.
                if let Err(e) = fs.remove(&dir.join(&name)).await {
                    tracing::warn!(file = %name, error = %e, "cannot remove an old manifest");
                }
            }
        }
        Ok(m)
    }

    /// The state after every edit so far.
    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    /// Allocates a file number (recorded with the next edit).
    pub fn next_file_no(&mut self) -> u64 {
        let n = self.state.next_file_no;
        self.state.next_file_no += 1;
        n
    }

    /// Appends an edit durably, then applies it. The caller serialises calls.
    ///
    /// [`Error::DiskFull`] means the edit is not in the log, and the next
    /// append may succeed once space returns. Any other error may leave the
    /// edit on disk or not: the manifest then refuses every later edit
    /// ([`Error::Fenced`]) until it is reopened.
    pub async fn append(&mut self, e: &VersionEdit) -> Result<()> {
        let end = self.write_edit(e).await?;
        if end > self.max_bytes {
            let fresh = Box::pin(Manifest::create(
                self.fs.clone(),
                &self.dir,
                self.number + 1,
                self.state.clone(),
                self.max_bytes,
            ))
            .await;
            match fresh {
                Ok(fresh) => {
                    let old = std::mem::replace(self, fresh);
                    if let Err(e) = old.file.close().await {
                        tracing::warn!(error = %e, "closing the previous manifest failed");
                    }
                }
                Err(err @ Error::Fenced { .. }) => {
                    self.fenced = Some(err.to_string());
                    return Err(err);
                }
                // The edit is durable here; the rewrite is tried again at the next one.
                Err(err) => tracing::warn!(error = %err, "cannot start a new manifest; the current one keeps growing"),
            }
        }
        Ok(())
    }

    /// Refuses every later edit: returns the error that says why.
    fn fence(&mut self, e: Error) -> Error {
        if self.fenced.is_none() {
            tracing::error!(path = %self.file.path().display(), error = %e, "manifest write failed; fencing writes");
            self.fenced = Some(e.to_string());
        }
        Error::Fenced {
            path: self.file.path().to_path_buf(),
            reason: self.fenced.clone().unwrap_or_else(|| e.to_string()),
        }
    }

    async fn write_edit(&mut self, e: &VersionEdit) -> Result<u64> {
        if let Some(reason) = &self.fenced {
            return Err(Error::Fenced {
                path: self.file.path().to_path_buf(),
                reason: reason.clone(),
            });
        }
        let mut next = self.state.clone();
        next.apply(e)
            .map_err(|why| Error::InvalidArgument(format!("manifest edit does not apply: {why}")))?;
        let mut e = e.clone();
        e.next_file_no = Some(next.next_file_no.max(self.state.next_file_no));
        let mark = self.buf.end();
        self.buf.append(&e.encode());
        let (pos, bytes) = self.buf.pending();
        let mut io = self.file.alloc(self.buf.padded_len());
        io.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
        let end = self.buf.end();
        if let Err(err) = self.file.write_at(io, pos).await {
            if matches!(err, Error::DiskFull { .. }) {
                // The block holding the edit could not be written: the edit is
                // not in the log. Out of the buffer with it, or the next
                // edit's write would carry it to disk after all.
                self.buf.truncate(mark);
                return Err(err);
            }
            return Err(self.fence(err));
        }
        if let Err(err) = self.file.sync().await {
            return Err(self.fence(err));
        }
        self.buf.written(end);
        next.next_file_no = next.next_file_no.max(self.state.next_file_no);
        self.state = next;
        Ok(end)
    }

    /// The manifest's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Writes a copy of the current state as a new manifest in `dir` (snapshots).
    pub async fn write_copy(&self, dir: &Path) -> Result<()> {
        let m = Manifest::create(self.fs.clone(), dir, self.number, self.state.clone(), self.max_bytes).await?;
        m.file.close().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(no: u64) -> FileRecord {
        FileRecord {
            file_no: no,
            size: 100,
            entries: 3,
            tombstones: 1,
            min_seq: 1,
            max_seq: 9,
            max_time: 0,
            created_ms: 5,
            smallest: (1, b"a".to_vec(), 9),
            largest: (7, b"zz".to_vec(), 1),
        }
    }

    #[test]
    fn edit_roundtrip_and_garbage() {
        let e = VersionEdit {
            snapshot: true,
            next_file_no: Some(10),
            last_seq: Some(99),
            min_log_no: Some(3),
            added: vec![(0, rec(4)), (2, rec(5))],
            removed: vec![(1, 2)],
        };
        let b = e.encode();
        assert_eq!(VersionEdit::decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            let _ = VersionEdit::decode(&b[..cut]);
        }
        let mut x = 12345u64;
        for _ in 0..2000 {
            let mut g = b.clone();
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let i = (x >> 33) as usize % g.len();
            g[i] ^= (x >> 20) as u8 | 1;
            let _ = VersionEdit::decode(&g);
        }
    }

    #[test]
    fn manifest_reopens_to_the_same_state() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let fs = Fs::sim(1);
                let dir = Path::new("/m");
                fs.prepare_dir(dir).await.unwrap();
                assert!(read_latest(&fs, dir).await.unwrap().is_none());
                let mut m = Manifest::create(fs.clone(), dir, 1, ManifestState::default(), 1 << 20)
                    .await
                    .unwrap();
                let f = m.next_file_no();
                m.append(&VersionEdit {
                    added: vec![(0, rec(f))],
                    last_seq: Some(7),
                    ..Default::default()
                })
                .await
                .unwrap();
                m.append(&VersionEdit {
                    removed: vec![(0, f)],
                    added: vec![(1, rec(f + 1))],
                    ..Default::default()
                })
                .await
                .unwrap();
                let (n, st) = read_latest(&fs, dir).await.unwrap().unwrap();
                assert_eq!(n, 1);
                assert_eq!(&st, m.state());
                assert_eq!(st.levels[1].len(), 1);
                assert_eq!(st.last_seq, 7);
            });
    }

    #[test]
    fn a_manifest_of_a_future_version_is_refused_by_name() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let fs = Fs::sim(2);
                let dir = Path::new("/m");
                fs.prepare_dir(dir).await.unwrap();
                // A whole record (valid checksum) whose edit says version 2.
                let mut rec = Vec::new();
                log::encode_record(&mut rec, 1, &[EDIT_VERSION + 1, 1]);
                let path = dir.join(manifest_name(1));
                let f = fs.create(&path).await.unwrap();
                let mut buf = f.alloc(crate::io::align_up(rec.len()));
                buf.as_mut_slice().fill(0);
                buf.as_mut_slice()[..rec.len()].copy_from_slice(&rec);
                f.write_at(buf, 0).await.unwrap();
                f.sync().await.unwrap();
                f.close().await.unwrap();
                let e = read_latest(&fs, dir).await.unwrap_err();
                assert!(
                    matches!(&e, Error::UnsupportedVersion { path: p, found: 2, supported: 1 } if *p == path),
                    "{e:?}"
                );
                assert_eq!(
                    e.to_string(),
                    "/m/MANIFEST-000001 has format version 2; this build reads version 1"
                );
            });
    }

    /// Regression: an edit that found the disk full fenced the engine for
    /// good, and stayed in the write buffer, so the next edit's write would
    /// have put it on disk after all. Now it is taken back and the next
    /// edit, once space returns, goes through.
    #[test]
    fn an_edit_that_finds_the_disk_full_is_not_written_and_the_next_one_is() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let fs = Fs::sim(2);
                let Fs::Sim(sim) = &fs else { unreachable!() };
                let dir = Path::new("/m");
                fs.prepare_dir(dir).await.unwrap();
                let mut m = Manifest::create(fs.clone(), dir, 1, ManifestState::default(), 1 << 20)
                    .await
                    .unwrap();
                sim.set_faults(crate::io::sim::Faults {
                    space_limit: Some(sim.used_bytes()),
                    ..Default::default()
                });
                // Large enough to need a new block.
                let big: Vec<(usize, FileRecord)> = (0..200).map(|i| (0, rec(100 + i))).collect();
                let e = m
                    .append(&VersionEdit {
                        added: big.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                assert!(matches!(e, Error::DiskFull { .. }), "{e}");
                assert!(
                    m.state().levels.iter().all(|l| l.is_empty()),
                    "a failed edit is not applied"
                );
                sim.set_faults(crate::io::sim::Faults::default());
                m.append(&VersionEdit {
                    added: vec![(1, rec(7))],
                    ..Default::default()
                })
                .await
                .unwrap();
                let (_, st) = read_latest(&fs, dir).await.unwrap().unwrap();
                assert_eq!(&st, m.state());
                assert_eq!(
                    st.levels.iter().map(|l| l.len()).sum::<usize>(),
                    1,
                    "only the second edit is on disk"
                );
            });
    }

    /// A rewrite into a new manifest (past `max_bytes`) that finds the disk
    /// full leaves the edit durable in the current one, no half-written
    /// manifest behind, and is tried again at the next edit.
    #[test]
    fn a_rewrite_that_finds_the_disk_full_keeps_the_current_manifest() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let fs = Fs::sim(3);
                let Fs::Sim(sim) = &fs else { unreachable!() };
                let dir = Path::new("/m");
                fs.prepare_dir(dir).await.unwrap();
                // Every append rewrites.
                let mut m = Manifest::create(fs.clone(), dir, 1, ManifestState::default(), 1)
                    .await
                    .unwrap();
                m.append(&VersionEdit {
                    added: vec![(0, rec(3))],
                    ..Default::default()
                })
                .await
                .unwrap();
                assert_eq!(m.number(), 2);
                let n = m.number();
                // Room for the edit in the current file's block, none for a new file.
                sim.set_faults(crate::io::sim::Faults {
                    space_limit: Some(sim.used_bytes()),
                    ..Default::default()
                });
                m.append(&VersionEdit {
                    added: vec![(0, rec(4))],
                    ..Default::default()
                })
                .await
                .unwrap();
                assert_eq!(m.number(), n, "the rewrite failed; the current manifest stays");
                let names = fs.list(dir).await.unwrap();
                assert_eq!(names, vec![manifest_name(n)], "no half-written manifest left");
                let (got, st) = read_latest(&fs, dir).await.unwrap().unwrap();
                assert_eq!((got, &st), (n, m.state()), "the edit is durable");
                sim.set_faults(crate::io::sim::Faults::default());
                m.append(&VersionEdit {
                    removed: vec![(0, 3)],
                    ..Default::default()
                })
                .await
                .unwrap();
                assert_eq!(m.number(), n + 1, "the rewrite is retried");
                let (got, st) = read_latest(&fs, dir).await.unwrap().unwrap();
                assert_eq!((got, &st), (n + 1, m.state()));
            });
    }

    /// A failed sync leaves the edit's fate unknown: the manifest refuses
    /// every later edit.
    #[test]
    fn a_failed_sync_fences_the_manifest() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let fs = Fs::sim(4);
                let Fs::Sim(sim) = &fs else { unreachable!() };
                let dir = Path::new("/m");
                fs.prepare_dir(dir).await.unwrap();
                let mut m = Manifest::create(fs.clone(), dir, 1, ManifestState::default(), 1 << 20)
                    .await
                    .unwrap();
                sim.fail_next_sync();
                let edit = VersionEdit {
                    added: vec![(0, rec(3))],
                    ..Default::default()
                };
                let e = m.append(&edit).await.unwrap_err();
                assert!(matches!(e, Error::Fenced { .. }), "{e}");
                let e = m.append(&edit).await.unwrap_err();
                assert!(matches!(e, Error::Fenced { .. }), "{e}");
            });
    }
}
