//! A small ext4 file system on a loop device, for tests that need a real
//! full disk or a real failing one (`tests/tests/disk_faults.rs`).
//!
//! Needs root, `losetup`, `mkfs.ext4`, `e2fsck`, `mount` and `umount`
//! (util-linux, e2fsprogs, mount: CI installs them, see `.ci/run`). A test
//! that cannot have them fails, it does not skip.
//!
//! The device can be made to fail under a mounted file system without
//! destroying anything: [`LoopFs::set_size_limit`] changes the loop
//! device's size limit (`LOOP_SET_STATUS64`), so every read and write past
//! the limit fails with EIO (the kernel logs "attempt to access beyond end
//! of device"), and setting the limit back to 0 heals it with every byte as
//! it was. (Truncating the backing file would shrink the device too, but
//! would throw away what lies past the new end.)
//!
//! On one loop device an O_DIRECT write past the limit fails at once. A
//! failed *fsync* after a successful write needs a write cache between the
//! file system and the failing device: [`LoopFs::create_in`] puts the image
//! of one loop file system inside another. Writes to the inner device land
//! in the page cache of its image file on the outer one (they succeed);
//! the inner fdatasync flushes that image to the outer device, and fails
//! with EIO when the outer device is limited. The outer file system has no
//! journal, so it carries on once the limit goes: the device heals.
//!
//! [`LoopFs`] unmounts and detaches in `Drop`, also when the test fails;
//! [`LoopFs::create`] first removes what a killed earlier run left behind.
// Test support: a failure here is a failed test, and a panic with the
// message is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A file system on a loop device, mounted.
#[derive(Debug)]
pub struct LoopFs {
    /// The folder holding the image and the mount point.
    pub dir: PathBuf,
    /// The backing file.
    pub image: PathBuf,
    /// The loop device (`/dev/loopN`) while attached.
    pub dev: String,
    /// Where the file system is mounted.
    pub mnt: PathBuf,
    /// Mount options (`-o`), if any.
    options: Option<&'static str>,
    attached: bool,
    mounted: bool,
}

/// Runs a command; its stdout, or a panic with its stderr.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (the disk-fault tests need it, as root): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn umount(mnt: &Path) -> bool {
    let m = mnt.to_string_lossy().into_owned();
    // A process that just died may hold the mount for a moment.
    for _ in 0..50 {
        let ok = Command::new("umount").arg(&m).status().is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Detach it at least, so the device can go.
    Command::new("umount")
        .args(["-l", &m])
        .status()
        .is_ok_and(|s| s.success())
}

/// Mount points of `dev`, from /proc/mounts.
fn mounts_of(dev: &str) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(dev)).then(|| w.next().map(PathBuf::from)).flatten()
        })
        .collect()
}

/// Loop devices whose backing file lies under `root`: (device, backing file).
fn loops_under(root: &Path) -> Vec<(String, PathBuf)> {
    let out = Command::new("losetup")
        .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (dev, file) = l.trim().split_once(char::is_whitespace)?;
            let file = PathBuf::from(file.trim());
            file.starts_with(root).then(|| (dev.to_owned(), file))
        })
        .collect()
}

/// Whether a folder of `path` below `root` is named `NAME-PID` for a
/// process that is gone.
fn dead_owner(root: &Path, path: &Path) -> bool {
    let Ok(below) = path.strip_prefix(root) else {
        return false;
    };
    below.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        match name.rsplit_once('-').and_then(|(_, pid)| pid.parse::<u32>().ok()) {
            Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            None => false,
        }
    })
}

/// Unmounts and detaches the loop devices of earlier runs under `root`
/// whose test process is gone (killed before its `Drop` ran), inner ones
/// (deeper images) first, then removes their folders.
pub fn clean_stale(root: &Path) {
    let mut stale: Vec<(String, PathBuf)> = loops_under(root)
        .into_iter()
        .filter(|(_, f)| dead_owner(root, f))
        .collect();
    stale.sort_by_key(|(_, f)| std::cmp::Reverse(f.components().count()));
    for (dev, _) in &stale {
        for m in mounts_of(dev) {
            umount(&m);
        }
        let _ = Command::new("losetup").args(["-d", dev]).status();
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            // Only folders this module made (an image in them), never
            // another test's.
            let ours = p.join("disk.img").exists() || p.join("outer").join("disk.img").exists();
            if ours && dead_owner(root, &p) && loops_under(&p).is_empty() && mounts_under(&p).is_empty() {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
}

/// Mount points under `root`, from /proc/mounts.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(PathBuf::from))
        .filter(|m| m.starts_with(root))
        .collect()
}

/// `struct loop_info64` of linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

impl LoopFs {
    /// Makes a `mib` MiB ext4 (4 KiB blocks, no reserved blocks, a journal)
    /// on a fresh loop device backed by `dir/disk.img`, and mounts it on
    /// `dir/mnt`. A folder of `dir` must be named `NAME-PID` (see
    /// [`crate::node::test_dir`]), so a later run can tell a stale one.
    pub fn create(dir: &Path, mib: u64) -> LoopFs {
        if let Some(root) = dir.parent() {
            clean_stale(root);
        }
        LoopFs::make(dir, mib, true, None)
    }

    /// A `mib` MiB ext4 whose image lives on another loop file system: see
    /// the module docs and [`LoopStack`].
    pub fn create_in(dir: &Path, mib: u64) -> LoopStack {
        if let Some(root) = dir.parent() {
            clean_stale(root);
        }
        let outer = LoopFs::make(&dir.join("outer"), mib + 16, false, Some("errors=continue"));
        let inner = LoopFs::make(&outer.mnt.join("inner"), mib, true, None);
        LoopStack { inner, outer }
    }

    fn make(dir: &Path, mib: u64, journal: bool, options: Option<&'static str>) -> LoopFs {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("create the loop folder");
        let image = dir.join("disk.img");
        let f = std::fs::File::create(&image).expect("create the image");
        f.set_len(mib << 20).expect("size the image");
        drop(f);
        let mut fs = LoopFs {
            dir: dir.to_path_buf(),
            image,
            dev: String::new(),
            mnt: dir.join("mnt"),
            options,
            attached: false,
            mounted: false,
        };
        fs.attach();
        // -m 0: no blocks reserved for root (the node runs as root in CI and
        // would use them anyway).
        let mut args = vec!["-q", "-F", "-m", "0", "-b", "4096"];
        if !journal {
            args.extend(["-O", "^has_journal"]);
        }
        args.push(&fs.dev);
        run("mkfs.ext4", &args);
        std::fs::create_dir_all(&fs.mnt).expect("create the mount point");
        fs.mount();
        fs
    }

    /// Attaches the image to a free loop device.
    pub fn attach(&mut self) {
        let img = self.image.to_string_lossy().into_owned();
        self.dev = run("losetup", &["--find", "--show", &img]).trim().to_owned();
        assert!(self.dev.starts_with("/dev/loop"), "losetup printed {:?}", self.dev);
        self.attached = true;
    }

    /// Unmounts (if mounted) and detaches the loop device.
    pub fn detach(&mut self) {
        self.unmount();
        if self.attached {
            run("losetup", &["-d", &self.dev]);
            self.attached = false;
        }
    }

    /// Mounts the file system.
    pub fn mount(&mut self) {
        let mnt = self.mnt.to_string_lossy().into_owned();
        match self.options {
            Some(o) => run("mount", &["-o", o, &self.dev, &mnt]),
            None => run("mount", &[&self.dev, &mnt]),
        };
        self.mounted = true;
    }

    /// Unmounts the file system (if mounted).
    pub fn unmount(&mut self) {
        if self.mounted {
            assert!(umount(&self.mnt), "cannot unmount {}", self.mnt.display());
            self.mounted = false;
        }
    }

    /// Bytes available to a writer (statvfs `f_bavail`).
    pub fn free_bytes(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let mut c = self.mnt.as_os_str().as_bytes().to_vec();
        c.push(0);
        // SAFETY: an all-zero statvfs is a valid value for the kernel to overwrite.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and outlives the call; `st` is ours.
        let rc = unsafe { libc::statvfs(c.as_ptr().cast(), &mut st) };
        assert_eq!(
            rc,
            0,
            "statvfs {}: {}",
            self.mnt.display(),
            std::io::Error::last_os_error()
        );
        st.f_bavail * st.f_frsize
    }

    /// Fills the file system with a ballast file until `leave` bytes stay
    /// free (blocks really allocated: fallocate), and returns its path.
    ///
    /// A node may be writing meanwhile, so the free space can shrink between
    /// the measure and the allocation (and the allocation needs extent
    /// blocks of its own): on ENOSPC the ballast grows by what is free now,
    /// less `leave`, until it leaves at most `leave` (or nothing is left to
    /// take). A file system the node filled by itself gets an empty ballast.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::os::fd::AsRawFd;
        let path = self.mnt.join(name);
        let f = std::fs::File::create(&path).expect("create the ballast");
        let mut size: u64 = 0;
        for _ in 0..64 {
            let free = self.free_bytes();
            if free <= leave {
                break;
            }
            // Below `leave` plus a margin for the extent tree, halve the
            // step after each ENOSPC so the loop converges.
            let mut step = (free - leave) & !4095;
            let mut placed = false;
            while step >= 4096 {
                // SAFETY: fallocate on a file descriptor we own.
                let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, size as libc::off_t, step as libc::off_t) };
                if rc == 0 {
                    size += step;
                    placed = true;
                    break;
                }
                let e = std::io::Error::last_os_error();
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "fallocate the ballast: {e}");
                step = (step / 2) & !4095;
            }
            if !placed {
                break;
            }
        }
        f.sync_all().expect("sync the ballast");
        path
    }

    /// Limits the device to its first `bytes` (0: the whole backing file):
    /// past it, every read and write fails with EIO, until the limit goes.
    pub fn set_size_limit(&self, bytes: u64) {
        if let Err(e) = self.try_set_size_limit(bytes) {
            panic!("cannot set the size limit of {} to {bytes}: {e}", self.dev);
        }
    }

    fn try_set_size_limit(&self, bytes: u64) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&self.dev)?;
        // SAFETY: an all-zero loop_info64 is valid; the kernel overwrites it.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        // SAFETY: LOOP_GET_STATUS64 writes one loop_info64 into `info`.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        info.sizelimit = bytes;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: LOOP_SET_STATUS64 reads one loop_info64 from `info`.
            let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_SET_STATUS64, &info as *const LoopInfo64) };
            if rc == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            // The kernel refuses while the device has I/O in flight.
            if e.raw_os_error() != Some(libc::EAGAIN) || Instant::now() > deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks and repairs the (unmounted) file system with `e2fsck -fy`, as
    /// an operator would after a device error; returns its report.
    pub fn fsck(&self) -> String {
        assert!(!self.mounted, "e2fsck on a mounted file system");
        let out = Command::new("e2fsck")
            .args(["-f", "-y", &self.dev])
            .output()
            .expect("run e2fsck");
        // 0: clean, 1: errors corrected; anything else is a damaged disk.
        let code = out.status.code().unwrap_or(-1);
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(code == 0 || code == 1, "e2fsck exit {code}:\n{report}");
        report
    }

    /// Unmounts, checks and repairs ([`LoopFs::fsck`]) and mounts again.
    pub fn fsck_and_remount(&mut self) -> String {
        self.unmount();
        let report = self.fsck();
        self.mount();
        report
    }
}

/// A file system (`inner`) whose loop device's image lives on another
/// (`outer`, without a journal): limiting `outer`'s device makes the inner
/// writes succeed and the inner fdatasync fail.
#[derive(Debug)]
pub struct LoopStack {
    // Fields drop in order: the inner file system goes before the one
    // holding its image.
    /// The file system the test uses.
    pub inner: LoopFs,
    /// The one holding `inner`'s image; its device is the one to fail.
    pub outer: LoopFs,
}

impl LoopStack {
    /// After a fault: detaches the inner file system, repairs the outer
    /// one, then the inner one (`e2fsck -fy` each), and mounts the inner
    /// one again. Returns both reports.
    pub fn repair(&mut self) -> String {
        self.inner.detach();
        let outer = self.outer.fsck_and_remount();
        self.inner.attach();
        let inner = self.inner.fsck();
        self.inner.mount();
        format!("outer:\n{outer}\ninner:\n{inner}")
    }
}

impl Drop for LoopStack {
    fn drop(&mut self) {
        // A test that failed mid-fault leaves the outer device limited: heal
        // it first, so the inner file system unmounts cleanly.
        let _ = self.outer.try_set_size_limit(0);
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // The device may still be limited if the test failed mid-fault.
        if self.attached {
            let _ = self.try_set_size_limit(0);
        }
        if self.mounted {
            umount(&self.mnt);
        }
        if self.attached {
            let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        }
        // Keep the image of a failed test for a post-mortem (e2fsck, debugfs).
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
