//! `corekv tune`: measure the machine a node runs on and write the
//! io-properties file the node sizes itself from (Seastar's iotune, for
//! corekv).
//!
//! [`measure`] probes io_uring (opcodes, features, setup flags), checks the
//! data directory the way the engine does (no tmpfs, O_DIRECT required),
//! finds the O_DIRECT alignment, and times a scratch file in that directory:
//! sequential O_DIRECT write and read bandwidth, 4 KiB random-read IOPS at
//! depth 1 and 32, and 4 KiB write + fdatasync latency. It adds locked
//! memory, cores and NUMA nodes, and returns an [`IoProperties`], which
//! [`IoProperties::write`] stores as TOML (docs/io-properties.md). The node
//! reads the file at start and [`derive`]s its flush and compaction
//! bandwidth, io_uring depth and WAL batch from it.
//!
//! This crate runs before the node, on plain threads with blocking calls: it
//! is a measuring tool, not part of the server. It depends on the engine for
//! the engine's own storage checks only, so `tune` refuses exactly the
//! directories the node would.
//!
//! tuning/os/ holds the OS settings an operator applies by hand (systemd
//! limits, NVMe scheduler, CPU governor, IRQ affinity, transparent huge
//! pages); tuning/README.md explains each.

pub mod derive;
pub mod disk;
pub mod error;
pub mod props;
pub mod system;
pub mod uring;

use std::path::Path;

pub use derive::{derive, Derived, Figure};
pub use disk::MeasureOptions;
pub use error::{Error, Result};
pub use props::{IoProperties, FILE_NAME, FORMAT_VERSION};

/// The steps of [`measure`], in order, reported as each starts so a caller
/// can show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Checking the directory.
    Probe,
    /// Write + fdatasync pairs.
    Fdatasync,
    /// Sequential write then read of the scratch file; then the alignment
    /// and io_uring probes, which read it.
    Sequential,
    /// Random reads at depth 1 and 32.
    RandomRead,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Probe => "checking the directory (durable file system, O_DIRECT)",
            Step::Sequential => "sequential O_DIRECT write and read (1 MiB, depth 8)",
            Step::RandomRead => "4 KiB random O_DIRECT reads at depth 1 and 32",
            Step::Fdatasync => "4 KiB write + fdatasync",
        })
    }
}

/// Measures the disk under `dir` (created if missing) and the machine.
///
/// Refuses tmpfs/ramfs and file systems without O_DIRECT with
/// [`Error::UnsuitableDirectory`], carrying the engine's own error. The
/// scratch file is removed whatever happens.
pub fn measure(dir: &Path, opts: &MeasureOptions, mut progress: impl FnMut(Step)) -> Result<IoProperties> {
    disk::check_options(opts)?;
    progress(Step::Probe);
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let dir = std::path::absolute(dir).map_err(|source| Error::Io {
        what: "resolve",
        path: dir.to_path_buf(),
        source,
    })?;
    corekv_engine::io::check_durable_fs(&dir).map_err(|source| Error::UnsuitableDirectory {
        path: dir.clone(),
        source,
    })?;
    // Before the large write: see the disk module on the order.
    let fsync_file = disk::Scratch::create(&dir, "fsync")?;
    progress(Step::Fdatasync);
    let fdatasync = disk::fdatasync(&fsync_file, opts)?;
    drop(fsync_file);

    let scratch = disk::Scratch::create(&dir, "scratch")?;
    progress(Step::Sequential);
    let sequential = disk::sequential(&scratch, opts)?;
    // The alignment and IOPOLL probes read the file, so they follow the write.
    let direct_io_align = disk::probe_alignment(&scratch)?;
    let disk_info = disk::describe(&dir, &scratch, direct_io_align)?;
    let io_uring = uring::probe(scratch.fd())?;

    progress(Step::RandomRead);
    let random_read = disk::random_read(&scratch, opts)?;

    drop(scratch);

    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(IoProperties {
        format_version: FORMAT_VERSION,
        measured: props::Measured {
            at: props::rfc3339_utc(unix_time),
            unix_time,
            data_dir: dir,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            quick: opts.quick,
            scratch_bytes: opts.scratch_bytes,
        },
        disk: disk_info,
        sequential,
        random_read,
        fdatasync,
        io_uring,
        system: system::probe(),
    })
}

#[cfg(test)]
mod tests;
