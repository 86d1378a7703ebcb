//! `corekv tune` end to end: the real command measures a real-disk directory
//! and writes its io-properties file, a node started on that directory takes
//! its settings from it (and says so in its effective configuration), an
//! explicit flag wins over a derived value, a newer file format stops the
//! node, and tmpfs is refused with a clear message and a non-zero exit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use corekv_tests::node::{test_dir, TestNode};
use corekv_tuning::{derive, IoProperties, FILE_NAME};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");

fn tune(dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("tune")
        .arg("--quick")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run corekv tune")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn no_scratch_left(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".corekv-tune-"), "scratch file {name} left behind");
    }
}

#[test]
fn tune_writes_the_file_and_a_node_uses_it() {
    let dir = test_dir(env!("CARGO_TARGET_TMPDIR"), "tune-serve");
    // Empties the directory; the node is started after tune wrote into it.
    let mut node = TestNode::new(BIN, &dir, "127.0.0.1", 1, &[]);

    let out = tune(&dir, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "tune failed:\n{stdout}\n{stderr}");
    let path = dir.join(FILE_NAME);
    assert!(stdout.contains(&format!("wrote {}", path.display())), "{stdout}");
    for row in [
        "sequential write",
        "4 KiB random read, depth 32",
        "4 KiB write + fdatasync",
        "node.io_depth",
    ] {
        assert!(stdout.contains(row), "the table shows {row}:\n{stdout}");
    }
    no_scratch_left(&dir);

    let p = IoProperties::read(&path).unwrap();
    assert_eq!(p.format_version, 1);
    assert!(p.measured.quick);
    assert_eq!(p.measured.scratch_bytes, 16 << 20);
    assert_ne!(p.disk.fs_type, "tmpfs");
    assert!([512, 4096].contains(&p.disk.direct_io_align), "{:?}", p.disk);
    // Sane, not tight: the machine is shared, but any real disk does 1 MB/s.
    assert!(p.sequential.write_bytes_per_sec > 1_000_000, "{:?}", p.sequential);
    assert!(p.sequential.read_bytes_per_sec > 1_000_000, "{:?}", p.sequential);
    for f in [&p.random_read.qd1, &p.random_read.qd32] {
        assert!(f.ops > 0 && f.iops > 0, "{f:?}");
        assert!(0.0 < f.p50_us && f.p50_us <= f.p99_us, "{f:?}");
    }
    assert_eq!((p.random_read.qd1.depth, p.random_read.qd32.depth), (1, 32));
    let s = &p.fdatasync;
    assert!(s.samples >= 10 && s.per_sec > 0, "{s:?}");
    assert!(0.0 < s.p50_us && s.p50_us <= s.p99_us && s.p99_us <= s.max_us, "{s:?}");
    for op in ["READ", "WRITE", "FSYNC"] {
        assert!(p.io_uring.supported_opcodes.iter().any(|o| o == op), "{:?}", p.io_uring);
    }
    assert!(p.system.cores >= 1 && p.system.numa_nodes >= 1);
    assert_eq!(p.system.numa_cpus.len(), p.system.numa_nodes as usize);

    // The node derives the same values and marks them as derived.
    let d = derive(&p);
    node.spawn().unwrap();
    let log = node.log_text();
    assert!(log.contains(&format!("# io-properties: {}", path.display())), "{log}");
    for (key, value) in [
        ("flush_bytes_per_sec", d.flush_bytes_per_sec.value),
        ("compaction_bytes_per_sec", d.compaction_bytes_per_sec.value),
        ("io_depth", d.io_depth.value),
        ("wal_max_unsynced_bytes", d.wal_max_unsynced_bytes.value),
    ] {
        let line = format!("\n{key} = {value}  # from io-properties: ");
        assert!(log.contains(&line), "effective configuration lacks {line:?}:\n{log}");
    }
    // It serves with them.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+OK\r\n");
    drop(c);
    assert!(node.sigterm().success());

    // An explicit flag wins over the derived value, and the print says so.
    let seen = node.log.lock().unwrap().len();
    node.add_flags(&["--storage.flush_bytes_per_sec".to_owned(), "12345678".to_owned()]);
    node.spawn().unwrap();
    let log = node.log.lock().unwrap()[seen..].join("\n");
    let line = format!(
        "flush_bytes_per_sec = 12345678  # set explicitly; io-properties would give {}",
        d.flush_bytes_per_sec.value
    );
    assert!(log.contains(&line), "{log}");
    assert!(
        log.contains(&format!("io_depth = {}  # from io-properties", d.io_depth.value)),
        "{log}"
    );
    assert!(node.sigterm().success());

    // A file of a newer format stops the node with a message that says why.
    let newer = std::fs::read_to_string(&path)
        .unwrap()
        .replace("format_version = 1", "format_version = 2");
    std::fs::write(&path, newer).unwrap();
    let err = node.spawn().unwrap_err();
    assert!(
        err.contains("format_version 2") && err.contains("corekv tune") && err.contains("storage.io_properties"),
        "{err}"
    );
}

#[test]
fn tune_out_writes_elsewhere() {
    let dir = test_dir(env!("CARGO_TARGET_TMPDIR"), "tune-out");
    let _ = std::fs::remove_dir_all(&dir);
    let out_file = dir.with_extension("toml");
    let out = tune(&dir, &["--out", out_file.to_str().unwrap(), "--size-mib", "8"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p = IoProperties::read(&out_file).unwrap();
    assert_eq!(p.measured.scratch_bytes, 8 << 20);
    assert!(!dir.join(FILE_NAME).exists());
    assert!(
        text(&out.stdout).contains("--storage.io_properties"),
        "{}",
        text(&out.stdout)
    );
    no_scratch_left(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&out_file).unwrap();
}

#[test]
fn tune_refuses_tmpfs_clearly() {
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (tmpfs)");
    let dir = shm.join(format!("corekv-tune-test-{}", std::process::id()));
    let out = tune(&dir, &[]);
    let stderr = text(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "tune on tmpfs must fail:\n{stderr}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("tmpfs") && stderr.contains("real disk") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("wrote"), "{}", text(&out.stdout));
}
