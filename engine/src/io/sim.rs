//! The simulated disk: an in-memory file system that fails the way real disks
//! and kernels do, reproducibly under a seed.
//!
//! What it models:
//! - Page-cache semantics: a write is visible to reads at once but durable only
//!   after `sync` of that file. A new, renamed or removed name is durable only
//!   after `sync_dir` of its directory.
//! - Power loss ([`SimFs::crash`]): every file goes back to its durable bytes,
//!   then a random prefix of its unsynced writes lands, the last of which may be
//!   torn at a 512-byte sector boundary; names go back to the last synced
//!   directory state.
//! - A power cut at a chosen I/O operation ([`SimFs::power_off_after`]): from then
//!   on every operation fails with EIO, as if the machine stopped, until `crash`.
//! - Faults: ENOSPC past a byte quota (or for the files of one kind), EIO on
//!   writes, syncs or reads with a probability, a failed next sync, and bit
//!   flips (on read, or stored).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

const SECTOR: usize = 512;

#[derive(Debug, Clone)]
enum PendingOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingOp>,
}

impl Inode {
    fn apply(data: &mut Vec<u8>, op: &PendingOp) {
        match op {
            PendingOp::Write(pos, bytes) => {
                let pos = *pos as usize;
                if data.len() < pos + bytes.len() {
                    data.resize(pos + bytes.len(), 0);
                }
                data[pos..pos + bytes.len()].copy_from_slice(bytes);
            }
            PendingOp::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

type InodeRef = Rc<RefCell<Inode>>;

/// Fault probabilities and limits; all off by default.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Total bytes all files may hold; a write past it fails with ENOSPC.
    pub space_limit: Option<u64>,
    /// Probability that a write fails with EIO (nothing written).
    pub write_eio: f64,
    /// Probability that a sync fails with EIO (the unsynced writes stay unsynced).
    pub sync_eio: f64,
    /// Probability that a read fails with EIO.
    pub read_eio: f64,
    /// Probability that a read returns one flipped bit (the stored bytes stay intact).
    pub read_bitflip: f64,
    /// Writes to files whose name starts with this fail with ENOSPC, growing
    /// the file or not (as on a copy-on-write file system, which allocates
    /// for every write): a full disk met by one kind of file only.
    pub enospc_for: Option<String>,
}

/// How a crash treats the writes that were not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost.
    DropUnsynced,
    /// A random prefix of the unsynced writes lands, the last one possibly torn.
    Random,
}

#[derive(Debug)]
struct State {
    rng: SmallRng,
    names: BTreeMap<PathBuf, InodeRef>,
    durable_names: BTreeMap<PathBuf, InodeRef>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
    fail_next_sync: bool,
    /// Operations left before the power goes off; `None` = never.
    ops_until_off: Option<u64>,
    powered_off: bool,
    ops: u64,
}

/// The simulated file system. Cloning shares the same disk.
#[derive(Debug, Clone)]
pub struct SimFs {
    st: Rc<RefCell<State>>,
}

/// An open simulated file.
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    inode: InodeRef,
    path: PathBuf,
}

fn eio(path: &Path, what: &str) -> Error {
    Error::io(path, std::io::Error::other(format!("simulated EIO ({what})")))
}

fn enoent(path: &Path) -> Error {
    Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound))
}

impl SimFs {
    /// A fresh, empty disk.
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            st: Rc::new(RefCell::new(State {
                rng: SmallRng::seed_from_u64(seed),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                faults: Faults::default(),
                fail_next_sync: false,
                ops_until_off: None,
                powered_off: false,
                ops: 0,
            })),
        }
    }

    /// Sets the fault configuration.
    pub fn set_faults(&self, f: Faults) {
        self.st.borrow_mut().faults = f;
    }

    /// The next sync of any file fails with EIO.
    pub fn fail_next_sync(&self) {
        self.st.borrow_mut().fail_next_sync = true;
    }

    /// The power goes off after `n` more I/O operations: the rest fail with EIO.
    pub fn power_off_after(&self, n: u64) {
        self.st.borrow_mut().ops_until_off = Some(n);
    }

    /// I/O operations performed so far (to choose crash points).
    pub fn op_count(&self) -> u64 {
        self.st.borrow().ops
    }

    /// True once the power went off.
    pub fn is_powered_off(&self) -> bool {
        self.st.borrow().powered_off
    }

    /// Simulates power loss and reboot: see the module docs.
    pub fn crash(&self, mode: CrashMode) {
        let mut st = self.st.borrow_mut();
        let durable = st.durable_names.clone();
        let mut seen: Vec<*const RefCell<Inode>> = Vec::new();
        let all: Vec<InodeRef> = st.names.values().chain(durable.values()).cloned().collect();
        for ino in all {
            let p = Rc::as_ptr(&ino);
            if seen.contains(&p) {
                continue;
            }
            seen.push(p);
            let mut i = ino.borrow_mut();
            let mut data = i.durable.clone();
            let pending = std::mem::take(&mut i.pending);
            if mode == CrashMode::Random && !pending.is_empty() {
                let landed = st.rng.gen_range(0..=pending.len());
                for (n, op) in pending.iter().take(landed).enumerate() {
                    let torn = n + 1 == landed && st.rng.gen_bool(0.5);
                    match op {
                        PendingOp::Write(pos, bytes) if torn => {
                            let sectors = bytes.len().div_ceil(SECTOR);
                            let keep = st.rng.gen_range(0..sectors.max(1)) * SECTOR;
                            let keep = keep.min(bytes.len());
                            Inode::apply(&mut data, &PendingOp::Write(*pos, bytes[..keep].to_vec()));
                        }
                        op => Inode::apply(&mut data, op),
                    }
                }
            }
            i.durable = data.clone();
            i.data = data;
        }
        st.names = durable;
        st.powered_off = false;
        st.ops_until_off = None;
        st.fail_next_sync = false;
    }

    /// Flips one bit of a file's stored bytes (durable and current): persistent corruption.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> Result<()> {
        let st = self.st.borrow();
        let ino = st.names.get(path).ok_or_else(|| enoent(path))?;
        let mut i = ino.borrow_mut();
        let o = offset as usize;
        if o >= i.data.len() {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} past the end of {}",
                path.display()
            )));
        }
        i.data[o] ^= 1 << (bit % 8);
        if o < i.durable.len() {
            i.durable[o] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// Cuts a file to `len` bytes, durably (a damaged file).
    pub fn truncate_file(&self, path: &Path, len: u64) -> Result<()> {
        let st = self.st.borrow();
        let ino = st.names.get(path).ok_or_else(|| enoent(path))?;
        let mut i = ino.borrow_mut();
        i.data.truncate(len as usize);
        i.durable.truncate(len as usize);
        i.pending.clear();
        Ok(())
    }

    /// Replaces a file's bytes, durably.
    pub fn overwrite_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let st = self.st.borrow();
        let ino = st.names.get(path).ok_or_else(|| enoent(path))?;
        let mut i = ino.borrow_mut();
        i.data = bytes.to_vec();
        i.durable = bytes.to_vec();
        i.pending.clear();
        Ok(())
    }

    /// A file's current bytes.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
        let st = self.st.borrow();
        let ino = st.names.get(path).ok_or_else(|| enoent(path))?;
        let d = ino.borrow().data.clone();
        Ok(d)
    }

    /// Bytes held by all files.
    pub fn used_bytes(&self) -> u64 {
        let st = self.st.borrow();
        let mut seen: Vec<*const RefCell<Inode>> = Vec::new();
        let mut total = 0;
        for ino in st.names.values() {
            let p = Rc::as_ptr(ino);
            if !seen.contains(&p) {
                seen.push(p);
                total += ino.borrow().data.len() as u64;
            }
        }
        total
    }

    /// Counts an operation and applies the power-off schedule.
    fn tick(&self, path: &Path) -> Result<()> {
        let mut st = self.st.borrow_mut();
        st.ops += 1;
        if st.powered_off {
            return Err(eio(path, "power is off"));
        }
        if let Some(n) = st.ops_until_off.as_mut() {
            if *n == 0 {
                st.powered_off = true;
                return Err(eio(path, "power is off"));
            }
            *n -= 1;
        }
        Ok(())
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.st.borrow_mut().rng.gen_bool(p.min(1.0))
    }

    pub(super) fn create_dir_all(&self, dir: &Path) {
        let mut st = self.st.borrow_mut();
        let mut d = Some(dir);
        while let Some(x) = d {
            st.dirs.insert(x.to_path_buf());
            d = x.parent();
        }
    }

    pub(super) fn create(&self, path: &Path) -> Result<SimFile> {
        self.tick(path)?;
        let mut st = self.st.borrow_mut();
        if let Some(parent) = path.parent() {
            if !st.dirs.contains(parent) {
                return Err(enoent(parent));
            }
        }
        let inode: InodeRef = Rc::new(RefCell::new(Inode::default()));
        st.names.insert(path.to_path_buf(), inode.clone());
        Ok(SimFile {
            fs: self.clone(),
            inode,
            path: path.to_path_buf(),
        })
    }

    pub(super) fn open(&self, path: &Path) -> Result<SimFile> {
        self.tick(path)?;
        let st = self.st.borrow();
        let inode = st.names.get(path).cloned().ok_or_else(|| enoent(path))?;
        Ok(SimFile {
            fs: self.clone(),
            inode,
            path: path.to_path_buf(),
        })
    }

    pub(super) fn remove(&self, path: &Path) -> Result<()> {
        self.tick(path)?;
        let mut st = self.st.borrow_mut();
        st.names.remove(path).map(|_| ()).ok_or_else(|| enoent(path))
    }

    pub(super) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.tick(from)?;
        let mut st = self.st.borrow_mut();
        let ino = st.names.remove(from).ok_or_else(|| enoent(from))?;
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    pub(super) fn link(&self, from: &Path, to: &Path) -> Result<()> {
        self.tick(from)?;
        let mut st = self.st.borrow_mut();
        let ino = st.names.get(from).cloned().ok_or_else(|| enoent(from))?;
        if st.names.contains_key(to) {
            return Err(Error::io(to, std::io::Error::from(std::io::ErrorKind::AlreadyExists)));
        }
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    pub(super) fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.tick(dir)?;
        let mut st = self.st.borrow_mut();
        let in_dir = |p: &Path| p.parent() == Some(dir);
        let keep: Vec<(PathBuf, InodeRef)> = st
            .durable_names
            .iter()
            .filter(|(p, _)| !in_dir(p))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        let now: Vec<(PathBuf, InodeRef)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        st.durable_names = keep.into_iter().chain(now).collect();
        Ok(())
    }

    pub(super) fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let st = self.st.borrow();
        if !st.dirs.contains(dir) {
            return Err(enoent(dir));
        }
        let mut out: Vec<String> = st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    pub(super) fn exists(&self, path: &Path) -> bool {
        let st = self.st.borrow();
        st.names.contains_key(path) || st.dirs.contains(path)
    }
}

impl SimFile {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn write_at(&self, buf: &[u8], pos: u64) -> Result<()> {
        self.fs.tick(&self.path)?;
        let faults = self.fs.st.borrow().faults.clone();
        if let Some(limit) = faults.space_limit {
            let cur = self.inode.borrow().data.len() as u64;
            let grow = (pos + buf.len() as u64).saturating_sub(cur);
            if self.fs.used_bytes() + grow > limit {
                return Err(Error::io(&self.path, std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
        }
        if let Some(prefix) = &faults.enospc_for {
            let name = self.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            if name.starts_with(prefix.as_str()) {
                return Err(Error::io(&self.path, std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
        }
        if self.fs.roll(faults.write_eio) {
            return Err(eio(&self.path, "write"));
        }
        let mut i = self.inode.borrow_mut();
        let op = PendingOp::Write(pos, buf.to_vec());
        Inode::apply(&mut i.data, &op);
        i.pending.push(op);
        Ok(())
    }

    pub(super) fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        self.fs.tick(&self.path)?;
        let faults = self.fs.st.borrow().faults.clone();
        if self.fs.roll(faults.read_eio) {
            return Err(eio(&self.path, "read"));
        }
        let i = self.inode.borrow();
        let start = (pos as usize).min(i.data.len());
        let end = (start + len).min(i.data.len());
        let mut out = i.data[start..end].to_vec();
        drop(i);
        if !out.is_empty() && self.fs.roll(faults.read_bitflip) {
            let mut st = self.fs.st.borrow_mut();
            let at = st.rng.gen_range(0..out.len());
            let bit = st.rng.gen_range(0..8);
            out[at] ^= 1 << bit;
        }
        Ok(out)
    }

    pub(super) fn sync(&self) -> Result<()> {
        self.fs.tick(&self.path)?;
        let fail = {
            let mut st = self.fs.st.borrow_mut();
            std::mem::take(&mut st.fail_next_sync)
        };
        let p = self.fs.st.borrow().faults.sync_eio;
        if fail || self.fs.roll(p) {
            return Err(eio(&self.path, "fdatasync"));
        }
        // Replay only what changed since the last sync: cost follows the
        // unsynced bytes, not the file size (WAL segments are 64 MiB).
        let mut i = self.inode.borrow_mut();
        let pending = std::mem::take(&mut i.pending);
        for op in &pending {
            Inode::apply(&mut i.durable, op);
        }
        debug_assert_eq!(i.durable.len(), i.data.len());
        Ok(())
    }

    pub(super) fn size(&self) -> u64 {
        self.inode.borrow().data.len() as u64
    }

    pub(super) fn truncate(&self, len: u64) -> Result<()> {
        self.fs.tick(&self.path)?;
        let mut i = self.inode.borrow_mut();
        let op = PendingOp::SetLen(len);
        Inode::apply(&mut i.data, &op);
        i.pending.push(op);
        Ok(())
    }

    pub(super) fn allocate(&self, len: u64) -> Result<()> {
        self.fs.tick(&self.path)?;
        if let Some(limit) = self.fs.st.borrow().faults.space_limit {
            let cur = self.inode.borrow().data.len() as u64;
            if self.fs.used_bytes() + len.saturating_sub(cur) > limit {
                return Err(Error::io(&self.path, std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
        }
        let mut i = self.inode.borrow_mut();
        if (i.data.len() as u64) < len {
            let op = PendingOp::SetLen(len);
            Inode::apply(&mut i.data, &op);
            i.pending.push(op);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_bytes_and_names_vanish() {
        let fs = SimFs::new(1);
        let dir = Path::new("/d");
        fs.create_dir_all(dir);
        let f = fs.create(&dir.join("a")).unwrap();
        f.write_at(&[1u8; 4096], 0).unwrap();
        f.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_at(&[2u8; 4096], 4096).unwrap();
        let _g = fs.create(&dir.join("b")).unwrap();
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(fs.list(dir).unwrap(), vec!["a".to_string()]);
        let f = fs.open(&dir.join("a")).unwrap();
        assert_eq!(f.size(), 4096);
    }

    #[test]
    fn power_off_fails_everything_until_crash() {
        let fs = SimFs::new(2);
        let dir = Path::new("/d");
        fs.create_dir_all(dir);
        let f = fs.create(&dir.join("a")).unwrap();
        fs.power_off_after(1);
        assert!(f.write_at(&[1u8; 512], 0).is_ok());
        assert!(f.sync().is_err());
        assert!(f.read_at(0, 1).is_err());
        fs.crash(CrashMode::DropUnsynced);
        assert!(!fs.is_powered_off());
    }

    #[test]
    fn enospc_past_quota() {
        let fs = SimFs::new(3);
        let dir = Path::new("/d");
        fs.create_dir_all(dir);
        fs.set_faults(Faults {
            space_limit: Some(8192),
            ..Faults::default()
        });
        let f = fs.create(&dir.join("a")).unwrap();
        f.write_at(&[0u8; 8192], 0).unwrap();
        let e = f.write_at(&[0u8; 4096], 8192).unwrap_err();
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
    }
}
