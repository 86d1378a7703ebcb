//! Format versions end to end (issue 7): a data directory holding a file of
//! a version this build does not know (a manifest, an SSTable, the
//! directory's stamp, the saved membership) makes `corekv serve` exit
//! non-zero with a message naming the file and the version it reads. (A
//! wire frame of an unknown version is answered with an error frame:
//! tests/tests/bad_input.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corekv_net::client::{blocking, ClientOptions};
use corekv_tests::node::{test_dir, TestNode};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// A data directory with tables: a node writes, drains (flushing) and exits.
fn make_data_dir(name: &str) -> PathBuf {
    let dir = test_dir(TMP, name);
    let mut node = TestNode::start(BIN, &dir, 1, &[]);
    let sdk = blocking::Client::connect(&[format!("127.0.0.1:{}", node.client)], ClientOptions::default()).unwrap();
    for i in 0..200 {
        sdk.put(format!("k{i}"), format!("v{i}")).unwrap();
    }
    drop(sdk);
    assert!(node.sigterm().success());
    // Dropping the node would remove the directory; keep it.
    let kept = PathBuf::from(TMP).join(format!("{name}-kept-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&kept);
    std::fs::rename(&dir, &kept).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    kept
}

/// Copies `src` (a data directory) to a fresh one named `name`.
fn copy_dir(src: &Path, name: &str) -> PathBuf {
    let dst = PathBuf::from(TMP).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    let ok = Command::new("cp")
        .args(["-r", src.to_str().unwrap(), dst.to_str().unwrap()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -r {} {}", src.display(), dst.display());
    dst
}

fn file_with(dir: &Path, pred: impl Fn(&str) -> bool) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .unwrap_or_else(|| panic!("no such file in {}", dir.display()))
}

/// Runs `corekv serve` on `dir` (plus `extra`) and returns its exit status
/// and stderr; it must exit on its own within 60 s.
fn serve(dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    // Ports the kernel picks, free a moment ago: the node fails before it
    // binds them anyway.
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port().to_string())
        .collect();
    drop(listeners);
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--node.data_dir", dir.to_str().unwrap()])
        .args(["--node.listen", "127.0.0.1", "--node.cores", "1"])
        .args(["--ports.client", &ports[0]])
        .args(["--ports.resp", &ports[1], "--ports.shard_base", &ports[2]])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corekv serve on {} did not exit", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_refused(dir: &Path, extra: &[&str], want: &str) {
    let (status, err) = serve(dir, extra);
    assert!(!status.success(), "serve started on {}: {err}", dir.display());
    assert!(err.contains(want), "serve's error does not say {want:?}:\n{err}");
}

#[test]
fn serve_refuses_files_of_an_unknown_version_by_name() {
    let good = make_data_dir("formats-src");
    let stamp = std::fs::read_to_string(good.join("FORMAT")).unwrap();
    assert_eq!(stamp, "corekv data directory format 1\n");

    // An SSTable whose footer says version 2 (version before checksum, so
    // the version is what is reported).
    let d = copy_dir(&good, "formats-table");
    let table = file_with(&d.join("core-0"), |n| n.ends_with(".sst"));
    let mut b = std::fs::read(&table).unwrap();
    let at = b.len() - 12;
    b[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&table, &b).unwrap();
    assert_refused(
        &d,
        &[],
        &format!("{} has format version 2; this build reads version 1", table.display()),
    );

    // A manifest whose (whole, checksummed) edit says version 2.
    let d = copy_dir(&good, "formats-manifest");
    let manifest = file_with(&d.join("core-0"), |n| n.starts_with("MANIFEST-"));
    let number: u64 = manifest.file_name().unwrap().to_str().unwrap()["MANIFEST-".len()..]
        .parse()
        .unwrap();
    let mut rec = Vec::new();
    corekv_engine::log::encode_record(&mut rec, number, &[2, 1]);
    rec.resize(4096, 0);
    std::fs::write(&manifest, &rec).unwrap();
    assert_refused(
        &d,
        &[],
        &format!(
            "{} has format version 2; this build reads version 1",
            manifest.display()
        ),
    );

    // The directory's stamp.
    let d = copy_dir(&good, "formats-stamp");
    std::fs::write(d.join("FORMAT"), "corekv data directory format 2\n").unwrap();
    assert_refused(&d, &[], "format version 2; this build reads version 1");
    assert_refused(&d, &[], &d.join("FORMAT").display().to_string());

    // The saved membership of a cluster node (magic CKVMEMB2).
    let d = copy_dir(&good, "formats-membership");
    let mut state = b"CKVMEMB2".to_vec();
    state.extend_from_slice(&[0; 8]);
    std::fs::write(d.join("cluster-state"), &state).unwrap();
    assert_refused(
        &d,
        &["--node.id", "n1", "--cluster.seeds", "127.0.0.1:1"],
        &format!(
            "the saved cluster membership {} has format version 2; this build reads version 1",
            d.join("cluster-state").display()
        ),
    );

    for name in [
        "formats-table",
        "formats-manifest",
        "formats-stamp",
        "formats-membership",
    ] {
        let _ = std::fs::remove_dir_all(PathBuf::from(TMP).join(format!("{name}-{}", std::process::id())));
    }
    let _ = std::fs::remove_dir_all(&good);
}
