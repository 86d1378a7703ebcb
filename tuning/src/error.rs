//! What measuring a disk or reading an io-properties file can fail with.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything the tuning crate can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory is one the engine refuses (tmpfs or ramfs, or a file
    /// system without O_DIRECT): figures measured there would describe memory
    /// or the page cache, and the node could not use that directory anyway.
    #[error(
        "cannot tune {path}: {source}. corekv tune measures the disk under the node's data directory, \
         so run it with --data-dir on that disk; nothing was written"
    )]
    UnsuitableDirectory {
        /// The directory given.
        path: PathBuf,
        /// The engine's own verdict ([`corekv_engine::Error::VolatileStorage`]
        /// or [`corekv_engine::Error::NoDirectIo`]).
        #[source]
        source: corekv_engine::Error,
    },
    /// The device wants a larger O_DIRECT alignment than the engine writes in.
    #[error(
        "{path}: O_DIRECT on this device needs {need}-byte alignment, but the engine aligns to {engine} bytes; \
         put the data directory on a device with 512- or 4096-byte logical blocks"
    )]
    AlignmentTooLarge {
        /// The directory.
        path: PathBuf,
        /// The alignment the device asks for.
        need: u32,
        /// The engine's alignment ([`corekv_engine::io::ALIGN`]).
        engine: usize,
    },
    /// io_uring cannot be set up (kernel too old, or disabled by
    /// `kernel.io_uring_disabled`, or a seccomp profile): the node cannot run.
    #[error(
        "io_uring is not available ({source}); corekv needs Linux 5.8 or newer with io_uring enabled \
         (sysctl kernel.io_uring_disabled=0, and no seccomp profile that blocks io_uring_setup)"
    )]
    NoIoUring {
        /// What io_uring_setup answered.
        #[source]
        source: std::io::Error,
    },
    /// A system call on the scratch file or the data directory failed.
    #[error("{what} on {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O completed with fewer bytes than asked for.
    #[error("short {what} on {path}: {got} of {want} bytes")]
    ShortIo {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Bytes transferred.
        got: u64,
        /// Bytes asked for.
        want: u64,
    },
    /// The measurement options do not make sense.
    #[error("invalid measurement option: {0}")]
    InvalidOption(String),
    /// The io-properties file could not be read.
    #[error("cannot read io-properties file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The io-properties file is not TOML of the expected shape.
    #[error("io-properties file {path} is not valid: {message}; re-run `corekv tune` to write it again")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The io-properties file was written by a newer corekv.
    #[error(
        "io-properties file {path} has format_version {found}, but this corekv reads format_version {supported} \
         at most; re-run `corekv tune` with this corekv, or upgrade corekv"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// The newest version this code reads.
        supported: u32,
    },
    /// The io-properties file could not be written.
    #[error("cannot write io-properties file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
