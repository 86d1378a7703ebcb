//! The engine's only door to the disk.
//!
//! Two backends sit behind one small API: [`Fs::Real`] uses glommio DMA files
//! (O_DIRECT, io_uring, 4 KiB alignment) and [`Fs::Sim`] is an in-memory disk
//! that can lose unsynced bytes, tear writes, fail with EIO or ENOSPC, and flip
//! bits, all under a seed. The engine is written once against this API; tests
//! run it on both.
//!
//! This is the only module of the crate that names glommio, so another
//! io_uring runtime could replace it here alone.
//!
//! Dispatch is an enum rather than a trait object: two backends, no virtual
//! calls on the read path, and async methods without boxing.

mod real;
pub mod sim;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

pub use real::{check_durable_fs, check_memlock, direct_open_error, RealFs, MIN_MEMLOCK};
pub use sim::{CrashMode, SimFs};

use crate::error::{Error, Result};

/// Alignment of every write offset and length (O_DIRECT).
pub const ALIGN: usize = 4096;

/// Rounds `v` up to a multiple of [`ALIGN`].
#[inline]
pub fn align_up(v: usize) -> usize {
    (v + ALIGN - 1) & !(ALIGN - 1)
}

/// Rounds `v` down to a multiple of [`ALIGN`].
#[inline]
pub fn align_down(v: usize) -> usize {
    v & !(ALIGN - 1)
}

/// A file system: the real disk through glommio, or the simulated disk.
#[derive(Clone, Debug)]
pub enum Fs {
    /// glommio DMA files on a real directory.
    Real(RealFs),
    /// The in-memory simulated disk.
    Sim(SimFs),
}

/// An open file.
#[derive(Debug)]
pub enum File {
    /// A glommio DMA file.
    Real(real::RealFile),
    /// A simulated file.
    Sim(sim::SimFile),
    /// A read-only file read through the page cache.
    Buffered(real::RealBufferedFile),
}

/// A buffer to write, aligned as the backend needs.
pub enum IoBuf {
    /// glommio's DMA buffer.
    Dma(glommio::io::DmaBuffer),
    /// A plain vector (simulated disk).
    Vec(Vec<u8>),
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoBuf({} bytes)", self.len())
    }
}

impl IoBuf {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            IoBuf::Dma(b) => b.as_bytes(),
            IoBuf::Vec(v) => v,
        }
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            IoBuf::Dma(b) => b.as_bytes_mut(),
            IoBuf::Vec(v) => v,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes read from a file. Dereferences to `[u8]` without a copy.
pub enum ReadBuf {
    /// glommio's read result (the DMA buffer itself).
    Dma(glommio::io::ReadResult),
    /// A plain vector.
    Vec(Vec<u8>),
}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadBuf({} bytes)", self.len())
    }
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Dma(r) => r,
            ReadBuf::Vec(v) => v,
        }
    }
}

impl Fs {
    /// The real file system (glommio DMA files).
    pub fn real() -> Fs {
        Fs::Real(RealFs::default())
    }

    /// A fresh simulated disk seeded with `seed`.
    pub fn sim(seed: u64) -> Fs {
        Fs::Sim(SimFs::new(seed))
    }

    /// `path` made absolute against the current directory: glommio opens
    /// directories without a base fd, so a relative path fails with EBADF.
    pub fn absolute(&self, path: &Path) -> Result<PathBuf> {
        match self {
            Fs::Real(_) => std::path::absolute(path).map_err(|e| Error::io(path, e)),
            Fs::Sim(_) => Ok(path.to_path_buf()),
        }
    }

    /// True for the simulated disk.
    pub fn is_sim(&self) -> bool {
        matches!(self, Fs::Sim(_))
    }

    /// Prepares a data directory: creates it, and on the real disk applies the
    /// glommio quirks (memlock check; a non-empty sentinel DMA file opened before
    /// any other, since glommio's polled-I/O probe reads the first DMA file a
    /// process opens and an empty one breaks later reads with EOPNOTSUPP).
    pub async fn prepare_dir(&self, dir: &Path) -> Result<()> {
        match self {
            Fs::Real(r) => r.prepare_dir(dir).await,
            Fs::Sim(s) => {
                s.create_dir_all(dir);
                Ok(())
            }
        }
    }

    /// Creates (or truncates) a file for reading and writing.
    pub async fn create(&self, path: &Path) -> Result<File> {
        match self {
            Fs::Real(r) => Ok(File::Real(r.create(path).await?)),
            Fs::Sim(s) => Ok(File::Sim(s.create(path)?)),
        }
    }

    /// Opens an existing file, read-only or read-write.
    pub async fn open(&self, path: &Path, write: bool) -> Result<File> {
        match self {
            Fs::Real(r) => Ok(File::Real(r.open(path, write).await?)),
            Fs::Sim(s) => Ok(File::Sim(s.open(path)?)),
        }
    }

    /// Opens an existing file for writes that are durable when they complete
    /// (O_DIRECT | O_DSYNC): one I/O where a write and an fdatasync take two,
    /// and no fdatasync punted to a kernel worker thread. The simulated disk
    /// opens it as [`Fs::open`] does, and [`File::writes_durable`] tells the
    /// caller it must still sync.
    pub async fn open_dsync(&self, path: &Path) -> Result<File> {
        match self {
            Fs::Real(r) => Ok(File::Real(r.open_dsync(path).await?)),
            Fs::Sim(s) => Ok(File::Sim(s.open(path)?)),
        }
    }

    /// Opens an existing file read-only for reads through the OS page cache
    /// (the simulated disk has no page cache: the same as [`Fs::open`]).
    pub async fn open_buffered(&self, path: &Path) -> Result<File> {
        match self {
            Fs::Real(r) => Ok(File::Buffered(r.open_buffered(path).await?)),
            Fs::Sim(s) => Ok(File::Sim(s.open(path)?)),
        }
    }

    /// Removes a file.
    pub async fn remove(&self, path: &Path) -> Result<()> {
        match self {
            Fs::Real(r) => r.remove(path).await,
            Fs::Sim(s) => s.remove(path),
        }
    }

    /// Renames a file (atomic on the same directory once the directory is synced).
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        match self {
            Fs::Real(r) => r.rename(from, to).await,
            Fs::Sim(s) => s.rename(from, to),
        }
    }

    /// Makes a hard link (snapshots).
    pub async fn link(&self, from: &Path, to: &Path) -> Result<()> {
        match self {
            Fs::Real(r) => r.link(from, to),
            Fs::Sim(s) => s.link(from, to),
        }
    }

    /// Makes directory entries created, renamed or removed in `dir` durable.
    pub async fn sync_dir(&self, dir: &Path) -> Result<()> {
        match self {
            Fs::Real(r) => r.sync_dir(dir).await,
            Fs::Sim(s) => s.sync_dir(dir),
        }
    }

    /// Creates a directory and its parents.
    pub async fn create_dir_all(&self, dir: &Path) -> Result<()> {
        match self {
            Fs::Real(r) => r.create_dir_all(dir),
            Fs::Sim(s) => {
                s.create_dir_all(dir);
                Ok(())
            }
        }
    }

    /// File names (not paths) in `dir`, sorted.
    pub async fn list(&self, dir: &Path) -> Result<Vec<String>> {
        match self {
            Fs::Real(r) => r.list(dir),
            Fs::Sim(s) => s.list(dir),
        }
    }

    /// True if `path` exists.
    pub async fn exists(&self, path: &Path) -> bool {
        match self {
            Fs::Real(_) => path.exists(),
            Fs::Sim(s) => s.exists(path),
        }
    }
}

impl File {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            File::Real(f) => &f.path,
            File::Sim(f) => f.path(),
            File::Buffered(f) => &f.path,
        }
    }

    /// True if a completed [`File::write_at`] is already durable (the file was
    /// opened by [`Fs::open_dsync`] on the real disk): no [`File::sync`] needed.
    pub fn writes_durable(&self) -> bool {
        matches!(self, File::Real(f) if f.dsync)
    }

    /// Allocates a write buffer of `len` bytes (a multiple of [`ALIGN`]), zeroed.
    pub fn alloc(&self, len: usize) -> IoBuf {
        debug_assert_eq!(len % ALIGN, 0, "write buffers are whole blocks");
        match self {
            File::Real(f) => {
                let mut b = f.file.alloc_dma_buffer(len);
                b.as_bytes_mut().fill(0);
                IoBuf::Dma(b)
            }
            File::Sim(_) | File::Buffered(_) => IoBuf::Vec(vec![0u8; len]),
        }
    }

    /// Writes `buf` at `pos`. Both must be multiples of [`ALIGN`].
    pub async fn write_at(&self, buf: IoBuf, pos: u64) -> Result<()> {
        debug_assert_eq!(pos % ALIGN as u64, 0);
        debug_assert_eq!(buf.len() % ALIGN, 0);
        match (self, buf) {
            (File::Real(f), IoBuf::Dma(b)) => f.write_at(b, pos).await,
            (File::Sim(f), IoBuf::Vec(v)) => {
                yield_now().await;
                f.write_at(&v, pos)
            }
            (f, _) => Err(Error::InvalidArgument(format!(
                "buffer from another backend written to {}",
                f.path().display()
            ))),
        }
    }

    /// Reads up to `len` bytes at `pos` (any alignment); shorter at end of file.
    pub async fn read_at(&self, pos: u64, len: usize) -> Result<ReadBuf> {
        match self {
            File::Real(f) => f.read_at(pos, len).await,
            File::Sim(f) => {
                yield_now().await;
                f.read_at(pos, len).map(ReadBuf::Vec)
            }
            File::Buffered(f) => f.read_at(pos, len).await,
        }
    }

    /// Reads exactly `len` bytes at `pos`, or fails with a corruption error
    /// (the file is shorter than its own metadata says).
    pub async fn read_exact_at(&self, pos: u64, len: usize) -> Result<ReadBuf> {
        let r = self.read_at(pos, len).await?;
        if r.len() != len {
            return Err(Error::corruption(
                self.path(),
                pos,
                format!("file truncated: wanted {len} bytes, found {}", r.len()),
            ));
        }
        Ok(r)
    }

    /// fdatasync: every write before it is durable when it returns Ok.
    pub async fn sync(&self) -> Result<()> {
        match self {
            File::Real(f) => f.sync().await,
            File::Sim(f) => {
                yield_now().await;
                f.sync()
            }
            File::Buffered(_) => Ok(()), // opened read-only: nothing to sync
        }
    }

    /// The file's size in bytes.
    pub async fn size(&self) -> Result<u64> {
        match self {
            File::Real(f) => f.size().await,
            File::Sim(f) => Ok(f.size()),
            File::Buffered(f) => f.size().await,
        }
    }

    /// Sets the file's size.
    pub async fn truncate(&self, len: u64) -> Result<()> {
        match self {
            File::Real(f) => f.truncate(len).await,
            File::Sim(f) => f.truncate(len),
            File::Buffered(_) => Err(read_only(self.path())),
        }
    }

    /// Reserves `len` bytes of space (the file's size becomes at least `len`).
    pub async fn allocate(&self, len: u64) -> Result<()> {
        match self {
            File::Real(f) => f.allocate(len).await,
            File::Sim(f) => f.allocate(len),
            File::Buffered(_) => Err(read_only(self.path())),
        }
    }

    /// Makes the file `len` bytes of written zeros. On the real disk the zeros
    /// are written (not just reserved), so later overwrites followed by
    /// fdatasync have no unwritten-extent conversion to journal.
    pub async fn fill_zeros(&self, len: u64) -> Result<()> {
        self.zero_range(0, len).await
    }

    /// Writes zeros over `pos..pos + len` (`pos` a multiple of [`ALIGN`]; the
    /// length is rounded up to whole blocks), extending the file if needed.
    /// Callers that must not flood the disk write a large file in slices.
    pub async fn zero_range(&self, pos: u64, len: u64) -> Result<()> {
        match self {
            File::Buffered(_) => Err(read_only(self.path())),
            File::Real(_) => {
                let chunk = 1u64 << 20;
                let end = pos + len;
                let mut at = pos;
                while at < end {
                    let n = align_up(chunk.min(end - at) as usize);
                    self.write_at(self.alloc(n), at).await?;
                    at += n as u64;
                    yield_if_needed().await;
                }
                Ok(())
            }
            // The same bytes, without the copying: the simulator is not timing a disk.
            File::Sim(f) => f.allocate(pos + len),
        }
    }

    /// Closes the file.
    pub async fn close(self) -> Result<()> {
        match self {
            File::Real(f) => f.close().await,
            File::Sim(_) => Ok(()),
            File::Buffered(f) => f.close().await,
        }
    }
}

fn read_only(path: &Path) -> Error {
    Error::InvalidArgument(format!("{} is open read-only", path.display()))
}

/// A shared handle to an open file.
pub type FileRef = Rc<File>;

/// Gives other ready tasks a turn, once. The simulated disk calls it where a
/// real disk would suspend, so tests see the interleavings real I/O causes.
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// The future returned by [`yield_now`].
#[derive(Debug)]
pub struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// A background task's handle; awaiting it waits for the task to end.
pub type TaskHandle = glommio::task::JoinHandle<()>;

/// How much CPU a background task may take when foreground work is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Memtable flushes: writers stall if these fall behind, so they get as
    /// much CPU as the foreground.
    Flush,
    /// Compaction and other bulk work: a fifth of the foreground's share, so
    /// request latency holds while it runs.
    Bulk,
}

thread_local! {
    static QUEUES: std::cell::RefCell<Vec<(usize, Priority, glommio::TaskQueueHandle)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Spawns a detached background task into the task queue for `prio`,
/// creating the queue on first use on this executor.
pub fn spawn_background(fut: impl std::future::Future<Output = ()> + 'static, prio: Priority) -> Result<TaskHandle> {
    let ex = glommio::executor();
    let id = ex.id();
    let handle = QUEUES.with(|q| {
        let mut q = q.borrow_mut();
        if let Some((_, _, h)) = q.iter().find(|(i, p, _)| *i == id && *p == prio) {
            return *h;
        }
        let (shares, name) = match prio {
            Priority::Flush => (1000, "corekv-flush"),
            Priority::Bulk => (200, "corekv-bulk"),
        };
        // glommio arms its preemption timer, before each round of task
        // queues, at the smallest latency among the queues runnable then.
        // When requests all wait on I/O and only this queue is runnable,
        // `NotImportant` would leave the executor default (100 ms): a flush
        // then ran that long before the reactor looked for finished WAL syncs
        // or new requests, however often it called `yield_if_needed`
        // (measured: 82 ms of flush CPU in one stretch, every write of that
        // moment waiting for it). A latency of its own bounds the slice.
        let latency = glommio::Latency::Matters(Duration::from_millis(1));
        let h = ex.create_task_queue(glommio::Shares::Static(shares), latency, name);
        q.push((id, prio, h));
        h
    });
    glommio::spawn_local_into(fut, handle)
        .map(|t| t.detach())
        .map_err(|e| Error::InvalidArgument(format!("cannot spawn a background task: {e}")))
}

/// Sleeps on the current executor's timer.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Lets other tasks run if this one has used its time slice.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// Joins a directory and a file name.
pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
