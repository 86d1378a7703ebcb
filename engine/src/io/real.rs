//! glommio DMA files on the real disk.

use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};

use super::ReadBuf;
use crate::error::{Error, Result};

/// Locked memory glommio needs at the least (its io_uring rings and buffers).
pub const MIN_MEMLOCK: u64 = 512 * 1024;

const SENTINEL: &str = "SENTINEL";

/// Checks RLIMIT_MEMLOCK before glommio starts, so a low limit fails with a
/// message saying how to raise it instead of an opaque io_uring error.
pub fn check_memlock() -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return Ok(()); // cannot tell; let glommio report what it finds
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0; // CAP_IPC_LOCK ignores the limit
    let have = lim.rlim_cur;
    if !root && lim.rlim_cur != libc::RLIM_INFINITY && have < MIN_MEMLOCK {
        return Err(Error::MemlockTooLow {
            have,
            need: MIN_MEMLOCK,
            need_kib: MIN_MEMLOCK / 1024,
        });
    }
    Ok(())
}

/// Refuses memory-backed file systems: fdatasync there promises nothing
/// across a reboot. (Since Linux 6.6 tmpfs even accepts O_DIRECT, so the open
/// alone would not catch it.) Public so `corekv tune` refuses the same
/// directories the engine does.
pub fn check_durable_fs(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let mut c = dir.as_os_str().as_bytes().to_vec();
    c.push(0);
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is ours.
    let rc = unsafe { libc::statfs(c.as_ptr().cast(), &mut st) };
    if rc != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let t = st.f_type as i64;
    let fs_type = match t {
        TMPFS_MAGIC => "tmpfs",
        RAMFS_MAGIC => "ramfs",
        _ => return Ok(()),
    };
    Err(Error::VolatileStorage {
        path: dir.to_path_buf(),
        fs_type,
    })
}

/// The error for a failed O_DIRECT open of a file in `dir`: EINVAL is the
/// kernel's answer for a file system without O_DIRECT, which deserves a
/// message that says so; anything else is an ordinary I/O error on `file`.
/// Shared with `corekv tune`, which opens its scratch file with plain libc.
pub fn direct_open_error(dir: &Path, file: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EINVAL) {
        return Error::NoDirectIo {
            path: dir.to_path_buf(),
            source: e,
        };
    }
    Error::io(file, e)
}

/// The real file system.
#[derive(Clone, Debug, Default)]
pub struct RealFs {}

/// A glommio DMA file.
#[derive(Debug)]
pub struct RealFile {
    pub(super) file: DmaFile,
    pub(super) path: PathBuf,
    /// Opened with O_DSYNC: a write completes only once its data is durable.
    pub(super) dsync: bool,
}

fn gio<T>(path: &Path, r: glommio::Result<T, ()>) -> Result<T> {
    r.map_err(|e| Error::io(path, std::io::Error::from(e)))
}

impl RealFs {
    pub(super) async fn prepare_dir(&self, dir: &Path) -> Result<()> {
        check_memlock()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        check_durable_fs(dir)?;
        let sentinel = dir.join(SENTINEL);
        let ok = std::fs::metadata(&sentinel).map(|m| m.len() >= 4096).unwrap_or(false);
        if !ok {
            // A one-off blocking write at start-up, before the node serves anything.
            std::fs::write(&sentinel, vec![0x5au8; 4096]).map_err(|e| Error::io(&sentinel, e))?;
        }
        let f = DmaFile::open(&sentinel)
            .await
            .map_err(|e| direct_open_error(dir, &sentinel, std::io::Error::from(e)))?;
        gio(&sentinel, f.read_at_aligned(0, 4096).await)?;
        gio(&sentinel, f.close().await)?;
        Ok(())
    }

    pub(super) async fn create(&self, path: &Path) -> Result<RealFile> {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(true);
        Self::dma_open(path, &o, false).await
    }

    pub(super) async fn open(&self, path: &Path, write: bool) -> Result<RealFile> {
        let mut o = OpenOptions::new();
        o.read(true).write(write);
        Self::dma_open(path, &o, false).await
    }

    pub(super) async fn open_dsync(&self, path: &Path) -> Result<RealFile> {
        let mut o = OpenOptions::new();
        o.read(true).write(true).custom_flags(libc::O_DSYNC);
        Self::dma_open(path, &o, true).await
    }

    /// `dsync` records that `o` carries O_DSYNC (see [`RealFile::dsync`]).
    async fn dma_open(path: &Path, o: &OpenOptions, dsync: bool) -> Result<RealFile> {
        let file = gio(path, o.dma_open(path).await)?;
        Ok(RealFile {
            file,
            path: path.to_path_buf(),
            dsync,
        })
    }

    pub(super) async fn remove(&self, path: &Path) -> Result<()> {
        gio(path, glommio::io::remove(path).await)
    }

    pub(super) async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        gio(from, glommio::io::rename(from, to).await)
    }

    pub(super) fn link(&self, from: &Path, to: &Path) -> Result<()> {
        // Blocking, but only taken by snapshots, a rare administrative action;
        // io_uring's linkat would need a newer glommio.
        std::fs::hard_link(from, to).map_err(|e| Error::io(to, e))
    }

    pub(super) async fn sync_dir(&self, dir: &Path) -> Result<()> {
        let d = gio(dir, glommio::io::Directory::open(dir).await)?;
        gio(dir, d.sync().await)?;
        gio(dir, d.close().await)
    }

    pub(super) fn create_dir_all(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
    }

    pub(super) fn list(&self, dir: &Path) -> Result<Vec<String>> {
        // Directory listing happens at open and snapshot time only.
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

impl RealFile {
    pub(super) async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<()> {
        let len = buf.len();
        let buf = std::rc::Rc::new(buf);
        let mut done = gio(&self.path, self.file.write_rc_at(buf.clone(), pos).await)?;
        // A short O_DIRECT write is how ext4 answers when the disk fills in
        // the middle of the buffer: write the rest, so that a full disk is
        // reported as ENOSPC (DiskFull: retried once space returns) and not
        // as an I/O error (which fences the engine).
        while done < len {
            if done == 0 || done % super::ALIGN != 0 {
                return Err(Error::io(
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write: {done} of {len} bytes"),
                    ),
                ));
            }
            let mut rest = self.file.alloc_dma_buffer(len - done);
            rest.as_bytes_mut().copy_from_slice(&buf.as_bytes()[done..]);
            done += gio(&self.path, self.file.write_at(rest, pos + done as u64).await)?;
        }
        Ok(())
    }

    pub(super) async fn read_at(&self, pos: u64, len: usize) -> Result<ReadBuf> {
        if len == 0 {
            return Ok(ReadBuf::Vec(Vec::new()));
        }
        Ok(ReadBuf::Dma(gio(&self.path, self.file.read_at(pos, len).await)?))
    }

    pub(super) async fn sync(&self) -> Result<()> {
        gio(&self.path, self.file.fdatasync().await)
    }

    pub(super) async fn size(&self) -> Result<u64> {
        gio(&self.path, self.file.file_size().await)
    }

    pub(super) async fn truncate(&self, len: u64) -> Result<()> {
        gio(&self.path, self.file.truncate(len).await)
    }

    pub(super) async fn allocate(&self, len: u64) -> Result<()> {
        gio(&self.path, self.file.pre_allocate(len, false).await)
    }

    pub(super) async fn close(self) -> Result<()> {
        gio(&self.path, self.file.close().await)
    }
}

/// A read-only file read through the OS page cache (io_uring buffered reads):
/// the table-read mode that lets the kernel's page cache act as a second-level
/// cache, as RocksDB's default does.
#[derive(Debug)]
pub struct RealBufferedFile {
    pub(super) file: BufferedFile,
    pub(super) path: PathBuf,
}

impl RealFs {
    pub(super) async fn open_buffered(&self, path: &Path) -> Result<RealBufferedFile> {
        let file = gio(path, BufferedFile::open(path).await)?;
        Ok(RealBufferedFile {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl RealBufferedFile {
    pub(super) async fn read_at(&self, pos: u64, len: usize) -> Result<ReadBuf> {
        if len == 0 {
            return Ok(ReadBuf::Vec(Vec::new()));
        }
        if let Some(v) = self.read_cached(pos, len) {
            return Ok(ReadBuf::Vec(v));
        }
        Ok(ReadBuf::Dma(gio(&self.path, self.file.read_at(pos, len).await)?))
    }

    /// Reads straight from the page cache with `preadv2(RWF_NOWAIT)`, which
    /// never blocks: the kernel answers EAGAIN when any page would need the
    /// disk. A cached read then costs one syscall instead of an io_uring round
    /// trip through the reactor; anything else falls back to io_uring.
    fn read_cached(&self, pos: u64, len: usize) -> Option<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let off = libc::off_t::try_from(pos).ok()?;
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: the iovec points at `len` bytes of capacity owned by `buf`,
        // which outlives the call; the fd is open for as long as `self` is.
        let n = unsafe { libc::preadv2(self.file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
        if n < 0 || n as usize != len {
            // EAGAIN (not cached), a partial answer, or EOF: io_uring decides.
            return None;
        }
        // SAFETY: the kernel wrote exactly `len` initialised bytes.
        unsafe { buf.set_len(len) };
        Some(buf)
    }

    pub(super) async fn size(&self) -> Result<u64> {
        gio(&self.path, self.file.file_size().await)
    }

    pub(super) async fn close(self) -> Result<()> {
        gio(&self.path, self.file.close().await)
    }
}
