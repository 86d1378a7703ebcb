//! End to end: `corekv-bench run` with all six YCSB workloads against a
//! spawned corekv node and a spawned redis-server in one invocation (tiny
//! sizes), its text and JSON output, and its HTML report rendered by
//! headless Chromium (screenshot not blank, plots in the rendered DOM).
//!
//! A third test drives corekv's own RESP port with the Redis-protocol
//! target, beside the SDK.
//!
//! Needs `redis-server` and `chromium` on the PATH (CI installs them); the
//! test fails, rather than skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use corekv_bench::ycsb::report::RunReport;
use corekv_bench::ycsb::spawn::find_on_path;
use corekv_bench::ycsb::target::{SCAN_MGET, SCAN_SDK};

const BENCH: &str = env!("CARGO_BIN_EXE_corekv-bench");
const NODE: &str = env!("CARGO_BIN_EXE_corekv-bench-node");
/// A run short enough for CI: 0.2 s warm-up and 3 s measured per workload
/// (a generous timeout: a busy CI disk can stall an fsync for a while).
/// The window outlasts such a stall: with 1 s, a group commit that waited
/// over 1.2 s for the kernel's writeback of the fresh build (a CI run, just
/// after compiling) held all four clients of workload F in their writes, and
/// the run measured nothing.
const TINY: &[&str] = &[
    "--timeout-ms",
    "10000",
    "--duration-s",
    "3",
    "--warmup-s",
    "0.2",
    "--clients",
    "4",
    "--load-clients",
    "4",
];

fn tmp(name: &str) -> PathBuf {
    // CARGO_TARGET_TMPDIR is under target/: a real disk, where O_DIRECT works.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium() -> PathBuf {
    find_on_path("chromium")
        .or_else(|| find_on_path("chromium-browser"))
        .expect("chromium is not on the PATH: apt-get install -y chromium (.ci/run does)")
}

/// Runs headless Chromium on `url` with `args`, a fresh profile in `dir`.
fn headless(dir: &Path, args: &[String], url: &str) -> std::process::Output {
    let profile = dir.join(format!("chromium-profile-{}", args.len()));
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium starts")
}

#[test]
fn all_workloads_against_a_node_and_redis_with_an_html_report() {
    assert!(
        find_on_path("redis-server").is_some(),
        "redis-server is not on the PATH: apt-get install -y redis-server (.ci/run does)"
    );
    let dir = tmp("ycsb-run");
    let json = dir.join("run.json");
    let html = dir.join("run.html");
    let out = Command::new(BENCH)
        .args(["run", "--spawn-node", "--spawn-redis", "--corekv", NODE])
        .args(["--workloads", "A,B,C,D,E,F", "--records", "300", "--max-scan", "10"])
        .args(TINY)
        .args(["--node-set", "storage.memtable_bytes=16777216"])
        .args(["--node-set", "storage.wal_segment_bytes=4194304"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg("--no-progress")
        .output()
        .expect("corekv-bench starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "corekv-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // Text: a table per workload and the ratios to redis.
    for w in ["A", "B", "C", "D", "E", "F"] {
        assert!(
            stdout.contains(&format!("\nworkload {w} (")),
            "no table for {w}:\n{stdout}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{w}    corekv-node")) && l.contains("throughput x")),
            "no ratio line for {w}:\n{stdout}"
        );
    }
    assert!(stdout.contains("ratios to redis"), "{stdout}");

    // JSON: both targets, every workload measured without errors.
    let r: RunReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r.baseline, "redis");
    let labels: Vec<&str> = r.targets.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["corekv-node", "redis"]);
    for t in &r.targets {
        assert_eq!((t.load.records, t.load.errors), (300, 0), "{}: {:?}", t.label, t.load);
        let names: Vec<&str> = t.workloads.iter().map(|w| w.workload.as_str()).collect();
        assert_eq!(names, ["A", "B", "C", "D", "E", "F"]);
        for w in &t.workloads {
            assert!(
                w.ops > 0 && w.ops_per_s > 0.0,
                "{} {}: nothing measured",
                t.label,
                w.workload
            );
            assert_eq!(w.errors, 0, "{} {}: {:?}", t.label, w.workload, w.first_error);
            assert!(!w.timeline.is_empty() && !w.spectrum.is_empty());
            assert!(w.latency.p50_ms <= w.latency.p99_ms && w.latency.p99_ms <= w.latency.max_ms);
            let kinds: Vec<&str> = w.ops_by_kind.iter().map(|o| o.op.as_str()).collect();
            // The kinds of the mix, the main one first.
            let want: &[&str] = match w.workload.as_str() {
                "A" => &["READ", "UPDATE"],
                "B" => &["READ", "UPDATE"],
                "C" => &["READ"],
                "D" => &["READ", "INSERT"],
                "E" => &["SCAN", "INSERT"],
                _ => &["READ-MODIFY-WRITE", "READ"],
            };
            // Never a kind outside the mix; the main kind always there.
            assert!(
                kinds.iter().all(|k| want.contains(k)),
                "{} {}: {kinds:?}",
                t.label,
                w.workload
            );
            assert!(kinds.contains(&want[0]), "{} {}: {kinds:?}", t.label, w.workload);
        }
        let e = t.workloads.iter().find(|w| w.workload == "E").unwrap();
        let scans = if t.label == "redis" { SCAN_MGET } else { SCAN_SDK };
        assert_eq!(e.scan_method.as_deref(), Some(scans), "{}", t.label);
    }
    assert_eq!(r.ratios.len(), 6);
    assert!(r
        .ratios
        .iter()
        .all(|x| x.target == "corekv-node" && x.throughput_ratio > 0.0 && x.p99_ratio > 0.0));

    // HTML: three plots per workload, each with its series.
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 18, "plots in the page");
    assert!(page.matches("<polyline class=\"series\"").count() >= 18 * 2);
    assert!(
        !page.contains("http://")
            || page.matches("http://").count() == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "the page must load nothing from the network"
    );

    // Rendered by Chromium: the DOM after rendering holds the plots...
    let url = format!("file://{}", html.display());
    let dom = headless(&dir, &["--dump-dom".to_owned()], &url);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert_eq!(dom_text.matches("<svg").count(), 18, "plots in the rendered DOM");
    let polylines: Vec<&str> = dom_text.split("<polyline").skip(1).collect();
    assert!(polylines.len() >= 36);
    for p in polylines {
        let points = p
            .split("points=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        assert!(!points.trim().is_empty(), "an empty series in the rendered page");
    }
    // ...and the screenshot is not blank: many colours, much non-white.
    let shot = dir.join("shot.png");
    let s = headless(
        &dir,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,2000".to_owned(),
        ],
        &url,
    );
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&s.stderr));
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut ink = 0usize;
    let n = pixels.len() / px;
    for c in pixels.chunks(px) {
        colours.insert(c[..3.min(px)].to_vec());
        ink += usize::from(c[..3.min(px)].iter().any(|&v| v < 200));
    }
    assert!(
        (info.width, info.height) == (1200, 2000),
        "{}x{}",
        info.width,
        info.height
    );
    assert!(
        colours.len() >= 16,
        "the screenshot has {} colours: blank?",
        colours.len()
    );
    assert!(ink * 100 >= n, "only {ink} of {n} pixels are not near-white");

    // `report` re-renders the same page from the JSON.
    let again = dir.join("again.html");
    let out = Command::new(BENCH)
        .args(["report", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&again)
        .output()
        .expect("corekv-bench report starts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ratios to redis"));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), page);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_prints_the_sized_cluster() {
    // The seeds' example with given per-node figures (the arithmetic is
    // checked step by step in plan.rs's unit test).
    let out = Command::new(BENCH)
        .args([
            "plan",
            "--reads-per-s",
            "500000",
            "--writes-per-s",
            "100000",
            "--key-bytes",
            "16",
        ])
        .args([
            "--value-bytes",
            "1024",
            "--total",
            "100TB",
            "--rf",
            "3",
            "--p99-ms",
            "10",
        ])
        .args(["--node-reads", "50000", "--node-writes", "20000", "--node-p99-ms", "4"])
        .output()
        .expect("corekv-bench plan starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4. nodes = max(90, 61, RF 3) = 90"), "{stdout}");
    assert!(stdout.contains("cluster: 90 nodes, 3.78 TB disk"), "{stdout}");
    let bad = Command::new(BENCH)
        .args(["plan", "--reads-per-s", "1", "--writes-per-s", "1", "--total", "1TB"])
        .output()
        .expect("corekv-bench plan starts");
    assert!(!bad.status.success(), "no per-node figures must be an error");
}

#[test]
fn redis_protocol_target_works_against_corekvs_resp_port() {
    let dir = tmp("ycsb-resp-port");
    let node = corekv_tests::node::TestNode::start(NODE, &dir.join("node"), 1, &[]);
    let json = dir.join("resp.json");
    let out = Command::new(BENCH)
        .args(["run", "--target"])
        .arg(format!("corekv-resp=redis://127.0.0.1:{}", node.resp))
        .arg("--target")
        .arg(format!("corekv-sdk=corekv://127.0.0.1:{}", node.client))
        .args(["--workloads", "A,E,F", "--records", "200", "--max-scan", "5"])
        .args(TINY)
        .arg("--json")
        .arg(&json)
        .arg("--no-progress")
        .output()
        .expect("corekv-bench starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: RunReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r.baseline, "corekv-resp", "no redis target: the first is the baseline");
    assert_eq!(r.targets[0].protocol, "resp");
    for t in &r.targets {
        assert_eq!(t.load.errors, 0, "{}: {:?}", t.label, t.load.first_error);
        for w in &t.workloads {
            assert!(w.ops > 0, "{} {}", t.label, w.workload);
            assert_eq!(w.errors, 0, "{} {}: {:?}", t.label, w.workload, w.first_error);
        }
    }
    assert!(stdout.contains("ratios to corekv-resp"), "{stdout}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
