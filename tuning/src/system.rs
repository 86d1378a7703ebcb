//! The machine around the disk: cores, NUMA, locked memory, kernel, and the
//! sysfs facts of the block device under a directory.

use std::path::Path;

use crate::props::System;

/// Locked memory the node needs at least (the engine's check at start).
pub use corekv_engine::io::MIN_MEMLOCK;

/// Reads a sysfs (or procfs) file, trimmed; `None` when absent or unreadable:
/// every such fact is optional, since containers and VMs hide many of them.
fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The number of CPUs in a kernel CPU list such as `0-3,8,10-11`.
pub fn cpulist_len(list: &str) -> u32 {
    let mut n = 0u32;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    n += b.saturating_sub(a) + 1;
                }
            }
            None => {
                if part.parse::<u32>().is_ok() {
                    n += 1;
                }
            }
        }
    }
    n
}

/// The bracketed choice of a sysfs multiple-choice file (`always [madvise] never`).
pub fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_owned())
}

/// Soft and hard RLIMIT_MEMLOCK in bytes, `None` meaning unlimited.
fn memlock() -> (Option<u64>, Option<u64>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return (Some(0), Some(0));
    }
    let f = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    (f(lim.rlim_cur), f(lim.rlim_max))
}

/// The kernel release, as `uname -r` prints it.
fn kernel() -> String {
    // SAFETY: an all-zero utsname is a valid value for the kernel to overwrite.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes into the struct we own.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_owned();
    }
    // SAFETY: the kernel NUL-terminates `release` inside the array.
    let c = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    c.to_string_lossy().into_owned()
}

/// NUMA nodes and their CPU lists, from `root` (normally
/// `/sys/devices/system/node`); one node holding every CPU when the kernel
/// shows none.
pub fn numa(root: &Path, online: &str) -> (u32, Vec<String>) {
    let mut nodes: Vec<(u32, String)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(root) {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let cpus = read_trim(&e.path().join("cpulist")).unwrap_or_default();
            nodes.push((id, cpus));
        }
    }
    nodes.sort();
    if nodes.is_empty() {
        return (1, vec![online.to_owned()]);
    }
    (nodes.len() as u32, nodes.into_iter().map(|(_, c)| c).collect())
}

/// The machine's facts.
pub fn probe() -> System {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let online = read_trim(Path::new("/sys/devices/system/cpu/online")).unwrap_or_default();
    let online_cpus = match cpulist_len(&online) {
        0 => cores,
        n => n,
    };
    let (numa_nodes, numa_cpus) = numa(Path::new("/sys/devices/system/node"), &online);
    let (soft, hard) = memlock();
    System {
        kernel: kernel(),
        cores,
        online_cpus,
        numa_nodes,
        numa_cpus,
        memlock_soft_bytes: soft,
        memlock_hard_bytes: hard,
        // SAFETY: geteuid has no preconditions.
        memlock_exempt: unsafe { libc::geteuid() } == 0,
        transparent_hugepages: read_trim(Path::new("/sys/kernel/mm/transparent_hugepage/enabled"))
            .and_then(|t| bracketed(&t)),
        cpu_governor: read_trim(Path::new("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")),
    }
}

/// What sysfs says about the block device `major:minor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`vda`, `nvme0n1`; the whole disk for a partition).
    pub name: Option<String>,
    /// `queue/logical_block_size`.
    pub logical_block_size: Option<u32>,
    /// `queue/physical_block_size`.
    pub physical_block_size: Option<u32>,
    /// `queue/rotational`.
    pub rotational: Option<bool>,
    /// The active `queue/scheduler`.
    pub scheduler: Option<String>,
    /// `queue/read_ahead_kb`.
    pub read_ahead_kb: Option<u32>,
}

/// Reads the device's queue attributes. A partition has no `queue/` of its
/// own: its parent directory is the whole disk, which does.
pub fn block_device(major: u32, minor: u32) -> BlockDevice {
    let dev = Path::new("/sys/dev/block").join(format!("{major}:{minor}"));
    let Ok(real) = std::fs::canonicalize(&dev) else {
        return BlockDevice::default();
    };
    let disk = if real.join("partition").exists() {
        real.parent().map_or(real.clone(), Path::to_path_buf)
    } else {
        real
    };
    let q = disk.join("queue");
    let num = |f: &str| read_trim(&q.join(f)).and_then(|v| v.parse::<u32>().ok());
    BlockDevice {
        name: disk.file_name().and_then(|n| n.to_str()).map(str::to_owned),
        logical_block_size: num("logical_block_size"),
        physical_block_size: num("physical_block_size"),
        rotational: num("rotational").map(|r| r != 0),
        scheduler: read_trim(&q.join("scheduler")).and_then(|s| bracketed(&s).or(Some(s))),
        read_ahead_kb: num("read_ahead_kb"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(cpulist_len("0-3,8,10-11"), 7);
        assert_eq!(cpulist_len("0"), 1);
        assert_eq!(cpulist_len(""), 0);
        assert_eq!(cpulist_len("0-1\n"), 2);
    }

    #[test]
    fn bracketed_choice() {
        assert_eq!(bracketed("always [madvise] never").as_deref(), Some("madvise"));
        assert_eq!(bracketed("[none] mq-deadline").as_deref(), Some("none"));
        assert_eq!(bracketed("none"), None);
    }
}
