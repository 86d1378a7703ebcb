//! Measuring the disk under a data directory with a scratch file.
//!
//! The order matters. The fdatasync test comes first, on a small file of its
//! own that it lays out and syncs before timing (the WAL's segments are
//! preallocated and written the same way): after the large sequential write,
//! a virtual disk's host is still writing back hundreds of MiB, and every
//! fdatasync pays for that (1 ms instead of tens of us for the first second
//! on our VM). The sequential write then lays the scratch file out, as fio's
//! layout step does, so the random reads find allocated, written blocks, as
//! in finished tables.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corekv_engine::io::ALIGN;

use crate::error::{Error, Result};
use crate::props::{DepthFigures, Disk, Fdatasync, RandomRead, Sequential};
use crate::system;

/// Size of each sequential I/O.
pub const SEQ_BLOCK: usize = 1 << 20;
/// I/Os in flight for the sequential runs (fio's anchor used depth 8).
pub const SEQ_DEPTH: usize = 8;
/// Size of each random read and of each fdatasync test write.
pub const SMALL_BLOCK: usize = 4096;

/// How long and how much to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasureOptions {
    /// Size of the scratch file, bytes: the sequential runs write and read
    /// all of it, the random reads spread over it. A multiple of 1 MiB, at
    /// least 4 MiB.
    pub scratch_bytes: u64,
    /// Time spent on random reads at each depth.
    pub random_read_time: Duration,
    /// Write + fdatasync pairs to time (at most; see `fdatasync_time`).
    pub fdatasync_samples: u64,
    /// Upper bound on the fdatasync test's time, for slow disks.
    pub fdatasync_time: Duration,
    /// Marks the figures as rough in the file.
    pub quick: bool,
}

impl MeasureOptions {
    /// The full run: 256 MiB, 2 s of random reads per depth, 2000 fdatasyncs.
    pub fn full() -> MeasureOptions {
        MeasureOptions {
            scratch_bytes: 256 << 20,
            random_read_time: Duration::from_secs(2),
            fdatasync_samples: 2000,
            fdatasync_time: Duration::from_secs(5),
            quick: false,
        }
    }

    /// The test run: 16 MiB, 200 ms of random reads per depth, 100 fdatasyncs.
    pub fn quick() -> MeasureOptions {
        MeasureOptions {
            scratch_bytes: 16 << 20,
            random_read_time: Duration::from_millis(200),
            fdatasync_samples: 100,
            fdatasync_time: Duration::from_secs(1),
            quick: true,
        }
    }

    fn check(&self) -> Result<()> {
        if self.scratch_bytes < 4 << 20 || !self.scratch_bytes.is_multiple_of(SEQ_BLOCK as u64) {
            return Err(Error::InvalidOption(format!(
                "scratch size {} bytes: must be a multiple of 1 MiB and at least 4 MiB",
                self.scratch_bytes
            )));
        }
        if self.fdatasync_samples < 10 {
            return Err(Error::InvalidOption("at least 10 fdatasync samples".to_owned()));
        }
        Ok(())
    }
}

/// The scratch file: opened O_DIRECT, removed when dropped, whatever happened.
pub struct Scratch {
    fd: RawFd,
    path: PathBuf,
}

impl Scratch {
    /// Creates `<dir>/.corekv-tune-<pid>.<kind>` with O_DIRECT. A file system
    /// that refuses O_DIRECT gets the engine's own error for it.
    pub fn create(dir: &Path, kind: &str) -> Result<Scratch> {
        let path = dir.join(format!(".corekv-tune-{}.{kind}", std::process::id()));
        let c = cstring(&path)?;
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_DIRECT | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // O_CREAT may have made the file before O_DIRECT was refused.
            let _ = std::fs::remove_file(&path);
            return Err(Error::UnsuitableDirectory {
                path: dir.to_path_buf(),
                source: corekv_engine::io::direct_open_error(dir, &path, e),
            });
        }
        Ok(Scratch { fd, path })
    }

    /// The open file descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &'static str) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }

    fn fdatasync(&self) -> Result<()> {
        // SAFETY: fdatasync on a descriptor we own.
        if unsafe { libc::fdatasync(self.fd) } != 0 {
            return Err(self.err("fdatasync")(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we own, once.
        unsafe { libc::close(self.fd) };
        let _ = std::fs::remove_file(&self.path);
    }
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Io {
        what: "open",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// A xorshift generator: the random offsets need no quality beyond not
/// following a pattern the device's read-ahead could guess.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The `q`-quantile (0..=1) of sorted nanosecond samples, in microseconds.
pub fn quantile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    sorted_ns[i.min(sorted_ns.len() - 1)] as f64 / 1000.0
}

fn per_sec(count: u64, elapsed: Duration) -> u64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 {
        return count;
    }
    (count as f64 / s) as u64
}

/// Writes the whole scratch file sequentially (its last fdatasync included),
/// then reads it back.
pub fn sequential(s: &Scratch, opts: &MeasureOptions) -> Result<Sequential> {
    let blocks = opts.scratch_bytes / SEQ_BLOCK as u64;
    let mut i = 0u64;
    let mut next = || {
        (i < blocks).then(|| {
            let op = crate::uring::Op {
                offset: i * SEQ_BLOCK as u64,
                len: SEQ_BLOCK as u32,
            };
            i += 1;
            op
        })
    };
    let t0 = Instant::now();
    crate::uring::run(s.fd, &s.path, true, SEQ_DEPTH, SEQ_BLOCK, &mut next, None)?;
    s.fdatasync()?;
    let write = t0.elapsed();

    let mut i = 0u64;
    let mut next = || {
        (i < blocks).then(|| {
            let op = crate::uring::Op {
                offset: i * SEQ_BLOCK as u64,
                len: SEQ_BLOCK as u32,
            };
            i += 1;
            op
        })
    };
    let t0 = Instant::now();
    crate::uring::run(s.fd, &s.path, false, SEQ_DEPTH, SEQ_BLOCK, &mut next, None)?;
    let read = t0.elapsed();
    Ok(Sequential {
        block_bytes: SEQ_BLOCK as u32,
        depth: SEQ_DEPTH as u32,
        write_bytes_per_sec: per_sec(opts.scratch_bytes, write),
        read_bytes_per_sec: per_sec(opts.scratch_bytes, read),
    })
}

/// 4 KiB random reads over the (written) scratch file at `depth`, for `time`.
pub fn random_reads(s: &Scratch, opts: &MeasureOptions, depth: usize) -> Result<DepthFigures> {
    let slots = opts.scratch_bytes / SMALL_BLOCK as u64;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ depth as u64);
    let deadline = Instant::now() + opts.random_read_time;
    let mut next = || {
        (Instant::now() < deadline).then(|| crate::uring::Op {
            offset: (rng.next() % slots) * SMALL_BLOCK as u64,
            len: SMALL_BLOCK as u32,
        })
    };
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let ops = crate::uring::run(s.fd, &s.path, false, depth, SMALL_BLOCK, &mut next, Some(&mut lat))?;
    let elapsed = t0.elapsed();
    lat.sort_unstable();
    Ok(DepthFigures {
        depth: depth as u32,
        ops,
        iops: per_sec(ops, elapsed),
        p50_us: quantile_us(&lat, 0.50),
        p99_us: quantile_us(&lat, 0.99),
    })
}

/// Size of the file the fdatasync test overwrites.
pub const FSYNC_REGION: u64 = 16 << 20;

/// 4 KiB O_DIRECT write then fdatasync, one pair after the other, over a
/// file of [`FSYNC_REGION`] bytes that is first written and synced, so every
/// timed write overwrites allocated blocks (no metadata to journal).
pub fn fdatasync(s: &Scratch, opts: &MeasureOptions) -> Result<Fdatasync> {
    let region_bytes = FSYNC_REGION.min(opts.scratch_bytes);
    let blocks = region_bytes / SEQ_BLOCK as u64;
    let mut i = 0u64;
    let layout = || {
        (i < blocks).then(|| {
            let op = crate::uring::Op {
                offset: i * SEQ_BLOCK as u64,
                len: SEQ_BLOCK as u32,
            };
            i += 1;
            op
        })
    };
    crate::uring::run(s.fd, &s.path, true, SEQ_DEPTH, SEQ_BLOCK, layout, None)?;
    s.fdatasync()?;
    let mut buf = crate::uring::AlignedBuf::new(SMALL_BLOCK, ALIGN)
        .ok_or_else(|| Error::InvalidOption("cannot allocate a 4 KiB buffer".to_owned()))?;
    let region = region_bytes / SMALL_BLOCK as u64;
    let mut lat = Vec::with_capacity(opts.fdatasync_samples as usize);
    let t0 = Instant::now();
    for i in 0..opts.fdatasync_samples {
        if i >= 10 && t0.elapsed() > opts.fdatasync_time {
            break;
        }
        let off = (i % region) * SMALL_BLOCK as u64;
        let t = Instant::now();
        // SAFETY: `buf` holds SMALL_BLOCK bytes, aligned for O_DIRECT, and
        // outlives the call; the descriptor is ours.
        let n = unsafe { libc::pwrite(s.fd, buf.as_mut_ptr().cast(), SMALL_BLOCK, off as libc::off_t) };
        if n < 0 {
            return Err(s.err("write")(std::io::Error::last_os_error()));
        }
        if n as usize != SMALL_BLOCK {
            return Err(Error::ShortIo {
                what: "write",
                path: s.path.clone(),
                got: n as u64,
                want: SMALL_BLOCK as u64,
            });
        }
        s.fdatasync()?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = t0.elapsed();
    let samples = lat.len() as u64;
    lat.sort_unstable();
    Ok(Fdatasync {
        write_bytes: SMALL_BLOCK as u32,
        samples,
        per_sec: per_sec(samples, elapsed),
        p50_us: quantile_us(&lat, 0.50),
        p99_us: quantile_us(&lat, 0.99),
        max_us: quantile_us(&lat, 1.0),
    })
}

/// The smallest alignment an O_DIRECT read of the (written) scratch file
/// accepts: 512 bytes (offset, length and buffer address), else 4096.
pub fn probe_alignment(s: &Scratch) -> Result<u32> {
    let mut buf = crate::uring::AlignedBuf::new(2 * ALIGN, ALIGN)
        .ok_or_else(|| Error::InvalidOption("cannot allocate a probe buffer".to_owned()))?;
    for align in [512usize, ALIGN] {
        // An address aligned to `align` but, for 512, deliberately not to 4096.
        let ptr = buf.as_mut_ptr().wrapping_add(align % ALIGN);
        // SAFETY: `ptr + align` stays inside the 8 KiB buffer we own; the
        // descriptor is ours.
        let n = unsafe { libc::pread(s.fd, ptr.cast(), align, align as libc::off_t) };
        if n == align as isize {
            return Ok(align as u32);
        }
        let e = std::io::Error::last_os_error();
        if n >= 0 || e.raw_os_error() != Some(libc::EINVAL) {
            return Err(s.err("read")(if n >= 0 {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short O_DIRECT read")
            } else {
                e
            }));
        }
    }
    // EINVAL even at the engine's alignment: a larger block size.
    let need = block_size_of(s).unwrap_or(2 * ALIGN as u32);
    Err(Error::AlignmentTooLarge {
        path: s.path.clone(),
        need,
        engine: ALIGN,
    })
}

fn block_size_of(s: &Scratch) -> Option<u32> {
    let st = statx(s)?;
    let dev = system::block_device(st.stx_dev_major, st.stx_dev_minor);
    dev.logical_block_size
}

fn statx(s: &Scratch) -> Option<libc::statx> {
    // SAFETY: an all-zero statx is a valid value for the kernel to overwrite.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH stats the descriptor itself;
    // the string literal is NUL-terminated and `st` is ours.
    let rc = unsafe {
        libc::statx(
            s.fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BASIC_STATS | libc::STATX_DIOALIGN,
            &mut st,
        )
    };
    (rc == 0).then_some(st)
}

/// The file system type's name, from statfs's magic number.
fn fs_type(dir: &Path) -> Result<String> {
    let c = cstring(dir)?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is ours.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::Io {
            what: "statfs",
            path: dir.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let magic = st.f_type as u64;
    Ok(match magic {
        0xEF53 => "ext4".to_owned(),
        0x5846_5342 => "xfs".to_owned(),
        0x9123_683E => "btrfs".to_owned(),
        0x2FC1_2FC1 => "zfs".to_owned(),
        0xF2F5_2010 => "f2fs".to_owned(),
        0x6969 => "nfs".to_owned(),
        0x794C_7630 => "overlayfs".to_owned(),
        0x0102_1994 => "tmpfs".to_owned(),
        other => format!("0x{other:x}"),
    })
}

/// The file system and device facts of the scratch file's directory.
pub fn describe(dir: &Path, s: &Scratch, direct_io_align: u32) -> Result<Disk> {
    let st = statx(s);
    let (major, minor) = st.map_or((0, 0), |st| (st.stx_dev_major, st.stx_dev_minor));
    let dev = system::block_device(major, minor);
    let dio = st.filter(|st| st.stx_mask & libc::STATX_DIOALIGN != 0 && st.stx_dio_offset_align != 0);
    Ok(Disk {
        fs_type: fs_type(dir)?,
        device: format!("{major}:{minor}"),
        device_name: dev.name,
        logical_block_size: dev.logical_block_size,
        physical_block_size: dev.physical_block_size,
        dio_offset_align: dio.map(|st| st.stx_dio_offset_align),
        dio_mem_align: dio.map(|st| st.stx_dio_mem_align),
        direct_io_align,
        rotational: dev.rotational,
        scheduler: dev.scheduler,
        read_ahead_kb: dev.read_ahead_kb,
    })
}

/// Checks the options before any file is made.
pub fn check_options(opts: &MeasureOptions) -> Result<()> {
    opts.check()
}

/// The random-read figures at depths 1 and 32.
pub fn random_read(s: &Scratch, opts: &MeasureOptions) -> Result<RandomRead> {
    Ok(RandomRead {
        block_bytes: SMALL_BLOCK as u32,
        qd1: random_reads(s, opts, 1)?,
        qd32: random_reads(s, opts, 32)?,
    })
}
