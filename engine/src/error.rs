//! The engine's error type.
//!
//! Every error that comes from bytes on disk names the file and the offset, so
//! an operator can find the damaged file and a developer can reproduce it.

use std::path::PathBuf;

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or the simulated disk's quota) is full. Nothing was acknowledged.
    #[error("disk full while writing {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Bytes on disk do not decode.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A checksum did not match.
    #[error("checksum mismatch in {path} at offset {offset}: stored {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the checksummed structure.
        offset: u64,
        /// The checksum stored on disk.
        expected: u32,
        /// The checksum computed over the bytes read.
        got: u32,
    },
    /// A file carries a format version this build does not read.
    #[error("{path} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// A key of length zero.
    #[error("key is empty")]
    EmptyKey,
    /// A key over the configured limit.
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value over the configured limit.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Version metadata over the limit.
    #[error("version metadata of {len} bytes exceeds the limit of {max} bytes")]
    MetaTooLarge {
        /// The metadata's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write batch over the limit.
    #[error("write batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// The batch's encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write or sync of the write-ahead log (or of the manifest, or a
    /// flush) failed earlier. The engine can no longer promise that buffered
    /// writes reached the disk, so it refuses every write until it is
    /// reopened (and recovery decides what is really there).
    #[error("writes are fenced after a failed write or sync of {path}: {reason}; reopen the engine")]
    Fenced {
        /// The file whose sync failed.
        path: PathBuf,
        /// The original failure.
        reason: String,
    },
    /// glommio cannot run with the process's locked-memory limit.
    #[error("RLIMIT_MEMLOCK is {have} bytes but io_uring needs at least {need}; raise it (ulimit -l {need_kib}, or LimitMEMLOCK= in the systemd unit)")]
    MemlockTooLow {
        /// The current soft limit in bytes.
        have: u64,
        /// The minimum needed in bytes.
        need: u64,
        /// The same in KiB, for the ulimit command.
        need_kib: u64,
    },
    /// The data directory does not support O_DIRECT (tmpfs, for example).
    #[error(
        "{path} does not support O_DIRECT ({source}); put the data directory on a real disk (ext4 or xfs), not tmpfs"
    )]
    NoDirectIo {
        /// The directory.
        path: PathBuf,
        /// The error returned by the open.
        #[source]
        source: std::io::Error,
    },
    /// The data directory is on memory-backed storage (tmpfs, ramfs), whose
    /// contents vanish at reboot: acknowledged writes would be lost.
    #[error(
        "{path} is on {fs_type}, which loses everything at reboot; put the data directory on a real disk (ext4 or xfs)"
    )]
    VolatileStorage {
        /// The directory.
        path: PathBuf,
        /// The file system found.
        fs_type: &'static str,
    },
    /// An invalid argument or option.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The engine was opened read-only (a snapshot) and a write was attempted.
    #[error("the engine is open read-only")]
    ReadOnly,
    /// The engine is shut down.
    #[error("the engine is closed")]
    Closed,
    /// Level 0 is full, so writes must wait for a compaction, and the last
    /// compaction failed. Nothing was written; the compaction is retried in
    /// the background and writes resume when it succeeds.
    #[error("writes stalled: level 0 is full and compaction is failing: {reason}")]
    CompactionFailing {
        /// The compaction's error.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error for `path`, turning ENOSPC (and EDQUOT, a full
    /// quota: the same to the engine) into [`Error::DiskFull`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        let full = matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            || matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            );
        if full {
            Error::DiskFull { path }
        } else {
            Error::Io { path, source }
        }
    }

    /// A corruption error.
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True when the error came from damaged bytes on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. } | Error::ChecksumMismatch { .. } | Error::UnsupportedVersion { .. }
        )
    }
}

/// A failure to decode bytes, before the caller knows which file they came from.
///
/// Pure decoders return this; the code that read the bytes turns it into
/// [`Error::Corruption`] with the path and the absolute offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset inside the decoded buffer.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

impl DecodeError {
    /// Creates a decode error.
    pub fn new(offset: usize, reason: &'static str) -> DecodeError {
        DecodeError { offset, reason }
    }

    /// Converts into an engine error for the buffer that starts at `base` in `path`.
    pub fn at(self, path: impl Into<PathBuf>, base: u64) -> Error {
        Error::corruption(path, base + self.offset as u64, self.reason)
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}", self.reason, self.offset)
    }
}
