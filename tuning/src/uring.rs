//! io_uring: what the kernel offers (opcodes, features, setup flags), and a
//! small queue-depth runner for the disk measurements.
//!
//! The probe is not the server: plain threads, blocking `io_uring_enter`,
//! one ring per measurement.

use std::os::fd::RawFd;
use std::path::Path;
use std::time::Instant;

use io_uring::{opcode, types, IoUring, Probe};

use crate::error::{Error, Result};
use crate::props::IoUringInfo;

/// The opcodes glommio 0.9 and the engine may submit, by name. A missing one
/// is reported; the node may still run if glommio does not need it on the
/// paths the node takes.
const OPCODES: &[(&str, u8)] = &[
    ("READ", opcode::Read::CODE),
    ("WRITE", opcode::Write::CODE),
    ("READV", opcode::Readv::CODE),
    ("WRITEV", opcode::Writev::CODE),
    ("READ_FIXED", opcode::ReadFixed::CODE),
    ("WRITE_FIXED", opcode::WriteFixed::CODE),
    ("FSYNC", opcode::Fsync::CODE),
    ("FALLOCATE", opcode::Fallocate::CODE),
    ("OPENAT", opcode::OpenAt::CODE),
    ("CLOSE", opcode::Close::CODE),
    ("STATX", opcode::Statx::CODE),
    ("RENAMEAT", opcode::RenameAt::CODE),
    ("UNLINKAT", opcode::UnlinkAt::CODE),
    ("FADVISE", opcode::Fadvise::CODE),
    ("ACCEPT", opcode::Accept::CODE),
    ("CONNECT", opcode::Connect::CODE),
    ("SEND", opcode::Send::CODE),
    ("RECV", opcode::Recv::CODE),
    ("SENDMSG", opcode::SendMsg::CODE),
    ("RECVMSG", opcode::RecvMsg::CODE),
    ("SHUTDOWN", opcode::Shutdown::CODE),
    ("POLL_ADD", opcode::PollAdd::CODE),
    ("POLL_REMOVE", opcode::PollRemove::CODE),
    ("TIMEOUT", opcode::Timeout::CODE),
    ("TIMEOUT_REMOVE", opcode::TimeoutRemove::CODE),
    ("LINK_TIMEOUT", opcode::LinkTimeout::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("PROVIDE_BUFFERS", opcode::ProvideBuffers::CODE),
    ("SYNC_FILE_RANGE", opcode::SyncFileRange::CODE),
    ("SPLICE", opcode::Splice::CODE),
];

/// Probes the kernel's io_uring: opcodes, features and which setup flags a
/// ring accepts. `data_file` is an O_DIRECT file on the data directory, read
/// once through an IOPOLL ring. Fails only when no ring can be made at all.
pub fn probe(data_file: RawFd) -> Result<IoUringInfo> {
    let ring: IoUring = IoUring::new(8).map_err(|source| Error::NoIoUring { source })?;
    let mut probe = Probe::new();
    // An error here means a kernel older than 5.6 (no IORING_REGISTER_PROBE):
    // every opcode is then reported missing, which is the truth for the node.
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let mut supported = Vec::new();
    let mut missing = Vec::new();
    for (name, code) in OPCODES {
        if probed && probe.is_supported(*code) {
            supported.push((*name).to_owned());
        } else {
            missing.push((*name).to_owned());
        }
    }
    let p = ring.params();
    let features = [
        ("SINGLE_MMAP", p.is_feature_single_mmap()),
        ("NODROP", p.is_feature_nodrop()),
        ("SUBMIT_STABLE", p.is_feature_submit_stable()),
        ("RW_CUR_POS", p.is_feature_rw_cur_pos()),
        ("CUR_PERSONALITY", p.is_feature_cur_personality()),
        ("FAST_POLL", p.is_feature_fast_poll()),
        ("POLL_32BITS", p.is_feature_poll_32bits()),
        ("SQPOLL_NONFIXED", p.is_feature_sqpoll_nonfixed()),
        ("EXT_ARG", p.is_feature_ext_arg()),
        ("NATIVE_WORKERS", p.is_feature_native_workers()),
        ("RSRC_TAGS", p.is_feature_resource_tagging()),
        ("CQE_SKIP", p.is_feature_skip_cqe_on_success()),
        ("LINKED_FILE", p.is_feature_linked_file()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name.to_owned())
    .collect();
    drop(ring);
    // Each flag on a ring of its own: the kernel refuses flags it does not
    // know with EINVAL, and SQPOLL without privileges on old kernels with EPERM.
    let setup_sqpoll = builder().setup_sqpoll(10).build(8).is_ok();
    let setup_coop_taskrun = builder().setup_coop_taskrun().build(8).is_ok();
    let setup_single_issuer = builder().setup_single_issuer().build(8).is_ok();
    let setup_defer_taskrun = builder().setup_single_issuer().setup_defer_taskrun().build(8).is_ok();
    Ok(IoUringInfo {
        supported_opcodes: supported,
        missing_opcodes: missing,
        features,
        setup_sqpoll,
        setup_coop_taskrun,
        setup_single_issuer,
        setup_defer_taskrun,
        iopoll_data_dir: iopoll_read(data_file),
    })
}

/// A ring builder of the default entry sizes.
fn builder() -> io_uring::Builder {
    IoUring::builder()
}

/// Whether an IOPOLL ring completes a 4 KiB O_DIRECT read of `fd`. The kernel
/// answers EOPNOTSUPP when the device has no poll queues (virtio, most SATA).
fn iopoll_read(fd: RawFd) -> bool {
    let Ok(mut ring) = builder().setup_iopoll().build(4) else {
        return false;
    };
    let Some(mut buf) = AlignedBuf::new(4096, 4096) else {
        return false;
    };
    let entry = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), 4096)
        .offset(0)
        .build()
        .user_data(0);
    // SAFETY: `buf` outlives the read: we wait for its completion below, and
    // on a failed wait we leak the buffer instead of freeing it under the kernel.
    if unsafe { ring.submission().push(&entry) }.is_err() {
        return false;
    }
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => {
                std::mem::forget(buf);
                return false;
            }
        }
    }
    let ok = ring.completion().next().is_some_and(|c| c.result() == 4096);
    drop(ring);
    drop(buf);
    ok
}

/// A heap buffer aligned for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    /// `len` bytes aligned to `align` (a power of two), filled with a
    /// pattern that does not compress, so a device or hypervisor that
    /// compresses or deduplicates cannot flatter the figures. `None` if the
    /// layout is invalid or memory is short.
    pub fn new(len: usize, align: usize) -> Option<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(len, align).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return None;
        }
        let mut b = AlignedBuf { ptr, layout };
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (ptr as u64);
        for chunk in b.as_mut_slice().chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Some(b)
    }

    /// The buffer's start.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// The buffer's length.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Never true: a zero-length buffer is not made.
    pub fn is_empty(&self) -> bool {
        self.layout.size() == 0
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at `len` bytes we allocated and own uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// One I/O of a run.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// File offset.
    pub offset: u64,
    /// Length in bytes (at most the slot buffer's length).
    pub len: u32,
}

/// Reads or writes `fd` keeping `depth` I/Os in flight, one aligned buffer of
/// `buf_len` bytes per slot, until `next` returns `None`. Returns the number
/// of I/Os done and, when `latencies` is given, pushes each one's time from
/// submission to completion in nanoseconds.
pub fn run(
    fd: RawFd,
    path: &Path,
    write: bool,
    depth: usize,
    buf_len: usize,
    mut next: impl FnMut() -> Option<Op>,
    mut latencies: Option<&mut Vec<u64>>,
) -> Result<u64> {
    let what = if write { "write" } else { "read" };
    let io_err = |source: std::io::Error| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let depth = depth.max(1);
    let entries = (depth as u32).next_power_of_two();
    let mut ring: IoUring = IoUring::new(entries).map_err(|source| Error::NoIoUring { source })?;
    let mut bufs = Vec::with_capacity(depth);
    for _ in 0..depth {
        let b = AlignedBuf::new(buf_len, corekv_engine::io::ALIGN)
            .ok_or_else(|| Error::InvalidOption(format!("cannot allocate a {buf_len}-byte I/O buffer")))?;
        bufs.push(b);
    }
    let mut started: Vec<Option<(Instant, u32)>> = vec![None; depth];
    let mut in_flight = 0usize;
    let mut done = 0u64;
    let mut exhausted = false;
    let mut first_error: Option<Error> = None;
    loop {
        // Fill every free slot, unless a failure means we only drain now.
        if first_error.is_none() && !exhausted {
            for (slot, st) in started.iter_mut().enumerate() {
                if st.is_some() {
                    continue;
                }
                let Some(op) = next() else {
                    exhausted = true;
                    break;
                };
                let len = op.len.min(buf_len as u32);
                let ptr = bufs[slot].as_mut_ptr();
                let entry = if write {
                    opcode::Write::new(types::Fd(fd), ptr, len).offset(op.offset).build()
                } else {
                    opcode::Read::new(types::Fd(fd), ptr, len).offset(op.offset).build()
                }
                .user_data(slot as u64);
                // SAFETY: the slot's buffer lives in `bufs` until this
                // function returns, and it returns only once every submitted
                // I/O has completed (or leaks `bufs` when it cannot know).
                // The ring has `entries >= depth` slots and at most `depth`
                // are in flight, so the push cannot find the queue full.
                if unsafe { ring.submission().push(&entry) }.is_err() {
                    first_error = Some(Error::InvalidOption("io_uring submission queue full".to_owned()));
                    break;
                }
                *st = Some((Instant::now(), len));
                in_flight += 1;
            }
        }
        if in_flight == 0 {
            break;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                // The kernel may still own buffers: leak them rather than free
                // memory it could write into.
                std::mem::forget(bufs);
                return Err(io_err(e));
            }
        }
        let now = Instant::now();
        for cqe in ring.completion() {
            let slot = cqe.user_data() as usize;
            let Some((t0, len)) = started.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            in_flight -= 1;
            let res = cqe.result();
            if res < 0 {
                first_error.get_or_insert(io_err(std::io::Error::from_raw_os_error(-res)));
            } else if res as u32 != len {
                first_error.get_or_insert(Error::ShortIo {
                    what,
                    path: path.to_path_buf(),
                    got: res as u64,
                    want: u64::from(len),
                });
            } else {
                done += 1;
                if let Some(l) = latencies.as_deref_mut() {
                    l.push(now.duration_since(t0).as_nanos() as u64);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
