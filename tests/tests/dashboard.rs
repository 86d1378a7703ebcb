//! The dashboard (docs/http.md, "Dashboard") in headless Chromium against
//! live nodes: a 3-node cluster under load, and a single node. Each test
//! loads `/dashboard`, lets the page poll, and checks what it rendered in
//! the DOM Chromium dumps (every node with its status, the ring's vnode
//! arcs, throughput and latency lines with points, storage bars) and in the
//! screenshot taken of that same page (every node's colour painted). The
//! screenshot is kept under target/dashboard/ and its path printed:
//! `dashboard screenshot: <path>`.
//!
//! ## Why the page runs on virtual time
//!
//! `--virtual-time-budget` runs the page's timers on a virtual clock that
//! Chromium pauses while a fetch is in flight, and `--dump-dom` and
//! `--screenshot` act once the budget is spent: with a 200 ms poll interval
//! and a 4 s budget, the page polls about 20 times however slow the machine
//! is, and the DOM and the screenshot show that same state. The page sets
//! `data-ready` once it has three samples (two rates per node); an attempt
//! whose page is not ready, or whose checks fail, is retried until a
//! deadline. The rates themselves do not depend on the virtual clock: the
//! page divides the nodes' counters by the nodes' own uptime.
//!
//! Needs `chromium` on the PATH (Debian package; `.ci/run` installs it):
//! the tests fail, rather than skip, without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corekv_net::msg::{Condition, Consistency, Op};
use corekv_tests::cluster::{await_until, TestCluster};
use corekv_tests::http::Http;
use corekv_tests::node::{test_dir, TestNode};
use corekv_tests::wire::{Reply, Wire};

const BIN: &str = env!("CARGO_BIN_EXE_corekv-node");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// The page's colours for its first three nodes (dashboard.js, PALETTE).
const NODE_COLOURS: [[u8; 3]; 3] = [[0x4e, 0x79, 0xa7], [0xf2, 0x8e, 0x2b], [0x59, 0xa1, 0x4f]];

/// How long the tests keep trying for a page that rendered everything.
const RENDER_DEADLINE: Duration = Duration::from_secs(60);

/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(45);

/// Virtual milliseconds the page runs for: about 20 polls at 200 ms.
const VIRTUAL_BUDGET_MS: u64 = 4_000;

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
}

fn chromium() -> PathBuf {
    find_on_path("chromium")
        .or_else(|| find_on_path("chromium-browser"))
        .expect("chromium is not on the PATH: apt-get install -y chromium (.ci/run does)")
}

/// Where the screenshots are kept: target/dashboard/.
fn shots_dir() -> PathBuf {
    let target = Path::new(TMP).parent().expect("CARGO_TARGET_TMPDIR is under target/");
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// One Chromium run: the DOM it dumped and its stderr.
struct Run {
    dom: String,
    stderr: String,
}

/// Loads `url` in headless Chromium with a fresh profile for
/// [`VIRTUAL_BUDGET_MS`] of virtual time, then dumps the DOM and takes a
/// screenshot to `png`.
fn headless(work: &Path, url: &str, png: &Path) -> Result<Run, String> {
    let profile = work.join("profile");
    let _ = std::fs::remove_dir_all(&profile);
    let dom_file = work.join("dom.html");
    let err_file = work.join("chromium.log");
    let _ = std::fs::remove_file(png);
    let mut child = Command::new(chromium())
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
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_BUDGET_MS}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        // Files, not pipes: the DOM is larger than a pipe's buffer.
        .stdout(std::fs::File::create(&dom_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .expect("chromium starts");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > CHROMIUM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&dom_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&profile);
    match status {
        Some(s) if s.success() => Ok(Run { dom, stderr }),
        Some(s) => Err(format!("chromium exited {s}: {}", tail(&stderr, 15))),
        None => Err(format!("chromium ran over {CHROMIUM_TIMEOUT:?}: {}", tail(&stderr, 15))),
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every start tag `<name ...>` of `dom` with its attributes.
fn tags(dom: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{name} ");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let end = rest.find('>').unwrap_or(rest.len());
        let mut attrs = BTreeMap::new();
        let mut s = &rest[..end];
        // Chromium serializes every attribute as name="value" (a quote
        // inside a value is &quot;).
        while let Some(eq) = s.find("=\"") {
            let key = s[..eq].trim().to_owned();
            let after = &s[eq + 2..];
            let close = after.find('"').unwrap_or(after.len());
            attrs.insert(key, after[..close].replace("&amp;", "&"));
            s = after.get(close + 1..).unwrap_or("");
        }
        out.push(attrs);
        rest = &rest[end..];
    }
    out
}

fn has_class(attrs: &BTreeMap<String, String>, class: &str) -> bool {
    attrs
        .get("class")
        .is_some_and(|c| c.split_whitespace().any(|w| w == class))
}

fn num(attrs: &BTreeMap<String, String>, key: &str) -> f64 {
    attrs.get(key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// What a rendered page must show for `nodes` (each with `vnodes` vnodes;
/// `true` for a node that is up, under load), checked in its DOM: the
/// page's summary `summary`, a row per node with its status (NORMAL and
/// reachable, or DOWN and unreachable), the ring's arcs, and for a node
/// that is up, throughput lines with points and traffic, latency lines with
/// points, and storage bars with keys. Returns what it counted, for the log.
fn check_dom(dom: &str, nodes: &[(&str, bool)], vnodes: usize, summary: &str) -> Result<String, String> {
    let body = tags(dom, "body");
    let body = body.first().ok_or("no body")?;
    if body.get("data-ready").map(String::as_str) != Some("true") {
        return Err(format!(
            "the page is not ready after {} samples; error banner: {:?}",
            body.get("data-samples").map_or("?", String::as_str),
            dom.split("<div id=\"error\"").nth(1).map(|s| &s[..s.len().min(300)])
        ));
    }
    let samples = num(body, "data-samples");
    if !dom.contains("<div id=\"error\" hidden=\"\"") {
        return Err("the error banner is showing".into());
    }
    if !dom.contains(summary) {
        return Err(format!("the header does not say {summary:?}"));
    }
    let rows = tags(dom, "tr");
    let svg = tags(dom, "svg");
    let paths = tags(dom, "path");
    let rects = tags(dom, "rect");
    let ring = svg
        .iter()
        .find(|a| a.get("id").map(String::as_str) == Some("ring"))
        .ok_or("no ring")?;
    if num(ring, "data-vnodes") as usize != vnodes * nodes.len() {
        return Err(format!("the ring says {:?} vnodes", ring.get("data-vnodes")));
    }
    let mut report = format!("{samples} samples; ");
    for &(id, up) in nodes {
        let of = |a: &&BTreeMap<String, String>| a.get("data-node").map(String::as_str) == Some(id);
        let row = rows.iter().find(of).ok_or_else(|| format!("no table row for {id}"))?;
        let (status, reachable) = if up { ("normal", "true") } else { ("down", "false") };
        if row.get("data-status").map(String::as_str) != Some(status)
            || row.get("data-reachable").map(String::as_str) != Some(reachable)
        {
            return Err(format!("{id}'s row: {row:?}, expected {status}, reachable {reachable}"));
        }
        if !dom.contains(&format!("</span>{id}</td>")) {
            return Err(format!("{id}'s name is not in its row"));
        }
        let arcs = paths.iter().filter(of).filter(|a| has_class(a, "vnode")).count();
        if arcs != vnodes {
            return Err(format!("{arcs} ring arcs for {id}, expected {vnodes}"));
        }
        let bars: Vec<_> = rects.iter().filter(of).filter(|a| has_class(a, "bar")).collect();
        if bars.len() != 6 {
            return Err(format!("{} storage bars for {id}, expected 6", bars.len()));
        }
        if !up {
            // Its figures are unknown: no bar drawn, no line.
            if !bars.iter().all(|b| b.get("data-value").is_some_and(|v| v.is_empty())) {
                return Err(format!("{id} is down but has storage figures: {bars:?}"));
            }
            report.push_str(&format!("{id}: {arcs} arcs, down; "));
            continue;
        }
        let series = |field: &str| {
            paths
                .iter()
                .filter(of)
                .find(|a| has_class(a, "series") && has_class(a, field))
                .map(|a| (num(a, "data-points"), num(a, "data-max")))
                .ok_or_else(|| format!("no {field} line for {id}"))
        };
        let (ops_points, ops_max) = series("ops")?;
        let (p99_points, p99_max) = series("p99")?;
        let (p50_points, _) = series("p50")?;
        if !(ops_points >= 2.0 && ops_max > 0.0) {
            return Err(format!(
                "{id}'s throughput line: {ops_points} points, peak {ops_max} requests/s"
            ));
        }
        if !(p99_points >= 2.0 && p50_points >= 2.0 && p99_max > 0.0) {
            return Err(format!(
                "{id}'s latency lines: p99 {p99_points} points (peak {p99_max} ms), p50 {p50_points} points"
            ));
        }
        if !bars.iter().all(|b| b.get("data-value").is_some_and(|v| !v.is_empty())) {
            return Err(format!("{id} has a storage figure missing: {bars:?}"));
        }
        let keys = bars
            .iter()
            .find(|b| b.get("data-metric").map(String::as_str) == Some("keys"))
            .map_or(f64::NAN, |b| num(b, "data-value"));
        if keys.is_nan() || keys <= 0.0 {
            return Err(format!("{id}'s keys bar says {keys} after writes"));
        }
        report.push_str(&format!(
            "{id}: {arcs} arcs, throughput {ops_points} points (peak {ops_max:.0}/s), p99 {p99_points} points \
             (peak {p99_max:.2} ms); "
        ));
    }
    Ok(report)
}

/// Checks the screenshot: the window's size, not blank, and each of the
/// first `nodes` node colours painted on a good number of pixels (the ring
/// and the bars are filled with them).
fn check_png(png: &Path, nodes: usize) -> Result<String, String> {
    let file = std::fs::File::open(png).map_err(|e| format!("no screenshot at {}: {e}", png.display()))?;
    let mut reader = png::Decoder::new(file).read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    if (info.width, info.height) != (1400, 1000) {
        return Err(format!("a {}x{} screenshot", info.width, info.height));
    }
    let px = info.color_type.samples();
    if px < 3 {
        return Err(format!("a screenshot of {px} channels"));
    }
    let mut colours = std::collections::HashSet::new();
    let mut painted = [0usize; 3];
    for c in buf[..info.buffer_size()].chunks(px) {
        colours.insert([c[0], c[1], c[2]]);
        for (i, want) in NODE_COLOURS.iter().enumerate() {
            if c[..3].iter().zip(want).all(|(a, b)| a.abs_diff(*b) <= 3) {
                painted[i] += 1;
            }
        }
    }
    if colours.len() < 16 {
        return Err(format!("the screenshot has {} colours: blank?", colours.len()));
    }
    for (i, n) in painted.iter().take(nodes).enumerate() {
        if *n < 1_000 {
            return Err(format!("node {}'s colour is on only {n} pixels", i + 1));
        }
    }
    Ok(format!(
        "{} colours, node colours on {:?} pixels",
        colours.len(),
        &painted[..nodes]
    ))
}

/// Renders `url` until the page passes `check` (retrying until
/// [`RENDER_DEADLINE`]), keeps its screenshot at `png` and prints where.
fn render_until(
    work: &Path,
    url: &str,
    png: &Path,
    nodes: usize,
    check: impl Fn(&str) -> Result<String, String>,
) -> String {
    std::fs::create_dir_all(work).unwrap();
    let t0 = Instant::now();
    let mut attempts = 0;
    let last = loop {
        attempts += 1;
        let why = match headless(work, url, png) {
            Ok(run) => match check(&run.dom).and_then(|d| check_png(png, nodes).map(|p| format!("{d}\n{p}"))) {
                Ok(report) => {
                    // On stdout for `--nocapture`, and straight to the
                    // process's stderr, which the test harness does not
                    // capture, so that CI logs keep it for a passing test.
                    let line = format!("dashboard screenshot: {}", png.display());
                    println!("{line}");
                    let _ = writeln!(std::io::stderr(), "{line}");
                    eprintln!(
                        "rendered in {:.1} s ({attempts} Chromium runs): {report}",
                        t0.elapsed().as_secs_f64()
                    );
                    return report;
                }
                Err(e) => format!("{e}\nchromium: {}", tail(&run.stderr, 5)),
            },
            Err(e) => e,
        };
        if t0.elapsed() > RENDER_DEADLINE {
            break why;
        }
        eprintln!("attempt {attempts}: {why}");
    };
    panic!(
        "the dashboard did not render within {RENDER_DEADLINE:?} ({attempts} Chromium runs); last: {last}\n\
         screenshot (if any): {}",
        png.display()
    );
}

/// Writes through `wires` (one thread each) until stopped; the counter is
/// the writes acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    done: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(wires: Vec<Wire>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut done = Vec::new();
        let mut threads = Vec::new();
        for (t, mut w) in wires.into_iter().enumerate() {
            let count = Arc::new(AtomicU64::new(0));
            let (stop, c) = (stop.clone(), count.clone());
            threads.push(std::thread::spawn(move || {
                let value = [b'v'; 100];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("dash:{t}:{i}");
                    let r = w.try_call(Op::Put {
                        key: key.as_bytes(),
                        value: &value,
                        ttl_ms: 0,
                        condition: Condition::Always,
                    });
                    if matches!(r, Ok(Reply::Ok)) {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    if i.is_multiple_of(4) {
                        let _ = w.try_call(Op::Get { key: key.as_bytes() });
                    }
                    i += 1;
                }
            }));
            done.push(count);
        }
        Load { stop, done, threads }
    }

    /// Waits until every thread had `n` writes acknowledged.
    fn await_each(&self, n: u64) {
        await_until(Duration::from_secs(60), "load on every node", || {
            let counts: Vec<u64> = self.done.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            counts
                .iter()
                .all(|&c| c >= n)
                .then_some(())
                .ok_or(format!("{counts:?}"))
        });
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.done.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// A 3-node cluster under load, each node coordinating writes: the page
/// shows the three nodes NORMAL and reachable, 768 vnode arcs (256 a node),
/// a throughput line with traffic and latency lines per node, and six
/// storage bars per node. Then node 3 is killed: once node 1 sees it down,
/// the page shows it DOWN and unreachable, its vnodes still on the ring,
/// and the two others' lines.
#[test]
fn dashboard_renders_a_live_cluster() {
    let t0 = Instant::now();
    let mut c = TestCluster::start(BIN, TMP, "dashboard", 3, &[]);
    let load = Load::start((1..=3).map(|i| c.coordinator(i, Consistency::Quorum)).collect());
    load.await_each(20);
    let url = format!("{}/dashboard?interval_ms=200", c.node(1).http_url());
    let shots = shots_dir();
    let work = test_dir(TMP, "dashboard-chromium");
    let up = [("n1", true), ("n2", true), ("n3", true)];
    render_until(&work, &url, &shots.join("dashboard.png"), 3, |dom| {
        check_dom(dom, &up, 256, "cluster of 3 nodes · epoch")
    });
    let writes = load.stop();

    c.kill9(3);
    let mut h = Http::connect(&c.node(1).listen, c.node(1).http).unwrap();
    await_until(Duration::from_secs(60), "n1 sees n3 down", || {
        let st: serde_json::Value = serde_json::from_slice(&h.get("/api/v1/admin/cluster/status").body).unwrap();
        let n3 = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "n3")
            .cloned();
        match n3 {
            Some(n) if n["status"] == "down" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let load = Load::start((1..=2).map(|i| c.coordinator(i, Consistency::Quorum)).collect());
    load.await_each(20);
    let one_down = [("n1", true), ("n2", true), ("n3", false)];
    render_until(&work, &url, &shots.join("dashboard-down.png"), 3, |dom| {
        check_dom(dom, &one_down, 256, "cluster of 3 nodes · epoch")
    });
    let more = load.stop();
    eprintln!(
        "writes through n1, n2, n3: {writes:?}, then through n1, n2: {more:?}; took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// A single node (mode "single"): one row, the node's 256 vnodes, its
/// throughput and latency, its storage.
#[test]
fn dashboard_renders_a_single_node() {
    let n = TestNode::start(BIN, &test_dir(TMP, "dashboard-single"), 2, &[]);
    let load = Load::start(vec![Wire::connect_to(&n.listen, n.client).unwrap()]);
    load.await_each(20);
    let url = format!("{}/dashboard?interval_ms=200&window_s=60", n.http_url());
    let png = shots_dir().join("dashboard-single.png");
    let work = test_dir(TMP, "dashboard-single-chromium");
    let status = Http::connect(&n.listen, n.http)
        .unwrap()
        .get("/api/v1/admin/cluster/status");
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    let id = status["node_id"].as_str().unwrap().to_owned();
    let nodes = [(id.as_str(), true)];
    render_until(&work, &url, &png, 1, |dom| check_dom(dom, &nodes, 256, "single node"));
    load.stop();
    let _ = std::fs::remove_dir_all(&work);
}
