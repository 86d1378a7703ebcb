//! Acceptance: the open loop exposes a server stall that a closed loop
//! hides. A node is SIGSTOPped for one second in the middle of a 4 s
//! measured run at 2000 operations/s: the open-loop p99.9 (latency from
//! each operation's intended start) includes the stall, while a closed-loop
//! run of the same length with the same stall under-reports it (only the
//! few operations in flight saw it), though its maximum shows it happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use corekv_bench::ycsb::report::{RunReport, WorkloadReport};
use corekv_tests::node::TestNode;

const BENCH: &str = env!("CARGO_BIN_EXE_corekv-bench");
const NODE: &str = env!("CARGO_BIN_EXE_corekv-bench-node");
const STALL: Duration = Duration::from_secs(1);
const WARMUP_S: f64 = 0.5;

/// SIGCONTs the node when dropped, so a failing test never leaves it stopped.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the test's own child process.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

/// Runs workload C against `node` with `mode` flags and stops the node for
/// `STALL`, one second into the measured window; returns the workload report.
fn run_with_stall(node: &TestNode, dir: &Path, name: &str, mode: &[&str]) -> WorkloadReport {
    let json = dir.join(format!("{name}.json"));
    let mut child = Command::new(BENCH)
        .args(["run", "--target"])
        .arg(format!("node=corekv://127.0.0.1:{}", node.client))
        .args([
            "--workloads",
            "C",
            "--records",
            "1000",
            "--load-clients",
            "8",
            "--consistency",
            "one",
        ])
        .args([
            "--duration-s",
            "4",
            "--warmup-s",
            &WARMUP_S.to_string(),
            "--timeout-ms",
            "10000",
        ])
        .args(mode)
        .arg("--json")
        .arg(&json)
        .arg("--no-progress")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corekv-bench starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    // The run phase starts when this line is printed (after the load).
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.starts_with("# run C on node");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with("# run C")),
        "no run phase:\n{}",
        seen.join("\n")
    );
    let pid = node.pid() as i32;
    // The stall schedule itself: warm-up, one second of normal load, then
    // one second stopped.
    std::thread::sleep(Duration::from_secs_f64(WARMUP_S + 1.0));
    // SAFETY: kill(2) on the test's own child process.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let resume = Resume(pid);
    std::thread::sleep(STALL);
    drop(resume);
    seen.extend(lines.map_while(Result::ok));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "corekv-bench failed:\n{}\n{}",
        seen.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: RunReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let w = r.targets[0].workloads[0].clone();
    println!(
        "{name}: {:.0} ops/s over {} ops; p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms (latency from {})",
        w.ops_per_s, w.ops, w.latency.p50_ms, w.latency.p99_ms, w.latency.p999_ms, w.latency.max_ms, w.latency_from
    );
    assert_eq!(w.errors, 0, "{:?}", w.first_error);
    w
}

#[test]
fn open_loop_reports_a_sigstop_stall_that_closed_loop_hides() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = TestNode::start(NODE, &dir.join("node"), 1, &[]);
    let stall_ms = STALL.as_secs_f64() * 1000.0;

    let open = run_with_stall(&node, &dir, "open", &["--rate", "2000"]);
    let closed = run_with_stall(&node, &dir, "closed", &["--clients", "8"]);

    // Open loop: the ~2000 operations due during the stall waited up to a
    // second each; the top 0.1% of ~8000 all come from its first moments.
    assert_eq!(open.latency_from, "intended_start");
    assert!(
        open.never_issued == 0,
        "the generator fell behind: {} never sent",
        open.never_issued
    );
    assert!(
        open.latency.p999_ms >= 0.9 * stall_ms,
        "open-loop p99.9 {:.1} ms does not include the {stall_ms} ms stall",
        open.latency.p999_ms
    );
    assert!(
        open.latency.p99_ms >= 0.5 * stall_ms,
        "open-loop p99 {:.1} ms",
        open.latency.p99_ms
    );
    // Closed loop: the stall happened to it too (its worst operation waited
    // through it), but only 8 operations were in flight, so its p99 stays far
    // below the stall: it under-reports.
    assert_eq!(closed.latency_from, "send");
    assert!(
        closed.latency.max_ms >= 0.9 * stall_ms,
        "the closed-loop run did not see the stall at all (max {:.1} ms)",
        closed.latency.max_ms
    );
    assert!(
        closed.latency.p99_ms < 0.25 * stall_ms,
        "closed-loop p99 {:.1} ms is not below the stall",
        closed.latency.p99_ms
    );
    assert!(closed.latency.p99_ms * 4.0 < open.latency.p99_ms);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
