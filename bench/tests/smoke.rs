//! Runs engine-bench on a tiny database so the binary is exercised by
//! `cargo test`. The real benchmark (scripts/vs_rocksdb.sh) never runs in CI.

use std::process::Command;

#[test]
fn engine_bench_runs_every_workload_on_a_tiny_db() {
    // CARGO_TARGET_TMPDIR is under target/: a real disk, where O_DIRECT works (tmpfs has none).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-bench-smoke");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_engine-bench"))
        .args([
            "--num=2000",
            "--reads=500",
            "--threads=2",
            "--benchmarks=fillrandom,overwrite,fillseq,flush,readrandom,readmissing,seekrandom,scan,waitforcompaction",
        ])
        .arg(format!("--db={}", dir.display()))
        .output()
        .expect("engine-bench starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "engine-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for name in [
        "fillseq",
        "fillrandom",
        "overwrite",
        "readrandom",
        "readmissing",
        "seekrandom",
        "scan",
    ] {
        assert!(
            stdout.contains(&format!("RESULT name={name} ")),
            "no result for {name}:\n{stdout}"
        );
    }
    // fillseq (which starts a fresh database) wrote keys 0..2000: every read must find its key.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT name=readrandom "))
        .unwrap_or_default();
    assert!(line.contains("ops=1000 ") && line.contains("found=1000 "), "{line}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT name=readmissing "))
        .unwrap_or_default();
    assert!(line.contains("found=0 "), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
