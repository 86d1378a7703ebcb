//! The io-properties file: what `corekv tune` measured, as TOML.
//!
//! The file holds facts (figures and what the probe found), never settings:
//! the node derives its settings from the facts at every start
//! ([`crate::derive`]), so a better derivation in a newer corekv applies
//! without measuring again. Every field, its unit and how it is measured are
//! in docs/io-properties.md.
//!
//! `format_version` is read before anything else. A file of a newer version
//! is refused with [`Error::NewerFormat`] rather than half understood; fields
//! this version does not know are ignored, so a later version may add fields
//! without a bump as long as their absence means what it meant before.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The file name under the data directory where `corekv tune` writes and the
/// node looks by default.
pub const FILE_NAME: &str = "io-properties.toml";

/// Everything `corekv tune` measured on one data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoProperties {
    /// The file format's version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// When, where and how the figures were taken.
    pub measured: Measured,
    /// The file system and block device under the data directory.
    pub disk: Disk,
    /// Sequential O_DIRECT bandwidth.
    pub sequential: Sequential,
    /// 4 KiB random O_DIRECT reads.
    pub random_read: RandomRead,
    /// 4 KiB O_DIRECT write followed by fdatasync.
    pub fdatasync: Fdatasync,
    /// What the kernel's io_uring offers.
    pub io_uring: IoUringInfo,
    /// Cores, NUMA, locked memory and the OS settings the notes in tuning/os cover.
    pub system: System,
}

/// When, where and how the figures were taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// UTC time of the measurement, RFC 3339 (`2026-11-23T07:01:02Z`).
    pub at: String,
    /// The same, seconds since the Unix epoch.
    pub unix_time: u64,
    /// The directory measured (the scratch file lived there).
    pub data_dir: PathBuf,
    /// The corekv version that measured.
    pub tool_version: String,
    /// Whether the short test mode was used (`--quick`): figures are rougher.
    pub quick: bool,
    /// Size of the scratch file, bytes.
    pub scratch_bytes: u64,
}

/// The file system and block device under the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// File system type (`ext4`, `xfs`, ...), or its magic number in hex when unknown.
    pub fs_type: String,
    /// The block device holding the file system, `major:minor`.
    pub device: String,
    /// Its kernel name (`vda`, `nvme0n1`), when sysfs names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Logical block size of the device (sysfs `queue/logical_block_size`), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_block_size: Option<u32>,
    /// Physical block size of the device (sysfs `queue/physical_block_size`), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_block_size: Option<u32>,
    /// O_DIRECT file offset alignment the file system reports (statx `STATX_DIOALIGN`, Linux 6.1+), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dio_offset_align: Option<u32>,
    /// O_DIRECT memory alignment the file system reports (statx), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dio_mem_align: Option<u32>,
    /// The smallest alignment an O_DIRECT read was accepted with, 512 or
    /// 4096 bytes, found by trying (the engine always uses 4096).
    pub direct_io_align: u32,
    /// Whether the device says it is rotational (sysfs `queue/rotational`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// The active I/O scheduler (sysfs `queue/scheduler`, the bracketed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// Kernel read-ahead of the device (sysfs `queue/read_ahead_kb`), KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ahead_kb: Option<u32>,
}

/// Sequential O_DIRECT bandwidth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequential {
    /// Size of each I/O, bytes.
    pub block_bytes: u32,
    /// I/Os kept in flight (io_uring).
    pub depth: u32,
    /// Writing a new scratch file start to end, including the final fdatasync, bytes per second.
    pub write_bytes_per_sec: u64,
    /// Reading it back, bytes per second.
    pub read_bytes_per_sec: u64,
}

/// 4 KiB random O_DIRECT reads over the scratch file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomRead {
    /// Size of each read, bytes.
    pub block_bytes: u32,
    /// One read in flight at a time.
    pub qd1: DepthFigures,
    /// 32 reads in flight.
    pub qd32: DepthFigures,
}

/// Figures of one random-read run at a fixed queue depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthFigures {
    /// Reads kept in flight.
    pub depth: u32,
    /// Reads completed.
    pub ops: u64,
    /// Reads per second.
    pub iops: u64,
    /// Median completion latency (submission to completion), microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

/// 4 KiB O_DIRECT write followed by fdatasync, over an allocated region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fdatasync {
    /// Size of each write, bytes.
    pub write_bytes: u32,
    /// Write + fdatasync pairs timed.
    pub samples: u64,
    /// Pairs per second, one after the other.
    pub per_sec: u64,
    /// Median of one write + fdatasync, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Slowest, microseconds.
    pub max_us: f64,
}

/// What the kernel's io_uring offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoUringInfo {
    /// Opcodes the kernel supports, of those glommio and the engine may use.
    pub supported_opcodes: Vec<String>,
    /// Opcodes of that list the kernel does not support.
    pub missing_opcodes: Vec<String>,
    /// `IORING_FEAT_*` flags the kernel reported at ring setup.
    pub features: Vec<String>,
    /// A ring with `IORING_SETUP_SQPOLL` could be created (kernel polling thread).
    pub setup_sqpoll: bool,
    /// A ring with `IORING_SETUP_COOP_TASKRUN` could be created (Linux 5.19+).
    pub setup_coop_taskrun: bool,
    /// A ring with `IORING_SETUP_SINGLE_ISSUER` could be created (Linux 6.0+).
    pub setup_single_issuer: bool,
    /// A ring with `IORING_SETUP_DEFER_TASKRUN` could be created (Linux 6.1+).
    pub setup_defer_taskrun: bool,
    /// An `IORING_SETUP_IOPOLL` ring completed an O_DIRECT read of the
    /// scratch file (polled completions; needs device support, e.g. NVMe poll queues).
    pub iopoll_data_dir: bool,
}

/// Cores, NUMA, locked memory, and the OS settings tuning/os covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// CPUs this process may run on (the node's default core count).
    pub cores: u32,
    /// CPUs online on the machine.
    pub online_cpus: u32,
    /// NUMA nodes (`/sys/devices/system/node/node*`); 1 when the kernel shows none.
    pub numa_nodes: u32,
    /// The CPU list of each NUMA node, in node order.
    pub numa_cpus: Vec<String>,
    /// Soft RLIMIT_MEMLOCK, bytes; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memlock_soft_bytes: Option<u64>,
    /// Hard RLIMIT_MEMLOCK, bytes; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memlock_hard_bytes: Option<u64>,
    /// The process is root (CAP_IPC_LOCK ignores the limit).
    pub memlock_exempt: bool,
    /// Transparent huge pages mode (`always`, `madvise`, `never`), when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_hugepages: Option<String>,
    /// CPU frequency governor of CPU 0, when the machine exposes cpufreq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_governor: Option<String>,
}

impl IoProperties {
    /// The file's TOML text: a comment saying what it is, then the fields.
    pub fn to_toml(&self) -> std::result::Result<String, toml::ser::Error> {
        let body = toml::to_string(self)?;
        Ok(format!(
            "# corekv io-properties: what `corekv tune` measured on {} at {}.\n\
             # Facts, not settings: the node derives its settings from them at start\n\
             # (docs/io-properties.md). Run `corekv tune` again after changing the disk.\n\n{body}",
            self.measured.data_dir.display(),
            self.measured.at
        ))
    }

    /// Parses a file's text; `path` only names it in errors. Refuses a newer
    /// `format_version` before looking at anything else.
    pub fn from_toml(text: &str, path: &Path) -> Result<IoProperties> {
        let malformed = |message: String| Error::Malformed {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| malformed(e.to_string()))?;
        let version = match table.get("format_version") {
            Some(toml::Value::Integer(v)) => *v,
            Some(other) => return Err(malformed(format!("format_version is {other}, not an integer"))),
            None => return Err(malformed("format_version is missing".to_owned())),
        };
        if version > i64::from(FORMAT_VERSION) {
            return Err(Error::NewerFormat {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < 1 {
            return Err(malformed(format!("format_version {version} is not a version")));
        }
        let props: IoProperties = table
            .try_into()
            .map_err(|e: toml::de::Error| malformed(e.to_string()))?;
        props.check().map_err(malformed)?;
        Ok(props)
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<IoProperties> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        IoProperties::from_toml(&text, path)
    }

    /// Writes the file at `path` whole or not at all (a temporary file,
    /// fsynced, then renamed over it), so a node starting meanwhile reads the
    /// old file or the new one, never half of one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let werr = |source: std::io::Error| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = self
            .to_toml()
            .map_err(|e| werr(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(werr)?;
        f.write_all(text.as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(werr)?;
        Ok(())
    }

    /// The rules a measured file always meets; a hand-edited file that breaks
    /// them would derive nonsense (a zero bandwidth, a zero-IOPS depth).
    fn check(&self) -> std::result::Result<(), String> {
        let positive = [
            ("sequential.write_bytes_per_sec", self.sequential.write_bytes_per_sec),
            ("sequential.read_bytes_per_sec", self.sequential.read_bytes_per_sec),
            ("random_read.qd1.iops", self.random_read.qd1.iops),
            ("random_read.qd32.iops", self.random_read.qd32.iops),
            ("fdatasync.per_sec", self.fdatasync.per_sec),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        let latencies = [
            ("random_read.qd1.p50_us", self.random_read.qd1.p50_us),
            ("random_read.qd1.p99_us", self.random_read.qd1.p99_us),
            ("random_read.qd32.p50_us", self.random_read.qd32.p50_us),
            ("random_read.qd32.p99_us", self.random_read.qd32.p99_us),
            ("fdatasync.p50_us", self.fdatasync.p50_us),
            ("fdatasync.p99_us", self.fdatasync.p99_us),
        ];
        for (name, v) in latencies {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} is {v}, not a positive number"));
            }
        }
        Ok(())
    }
}

/// Formats Unix seconds as RFC 3339 UTC. Days to a civil date by Howard
/// Hinnant's algorithm, so the file carries a readable time without a
/// date-time dependency.
pub fn rfc3339_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
