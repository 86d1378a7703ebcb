//! A corekv node in a child process, for end-to-end tests: free ports,
//! start and wait for readiness, SIGKILL, SIGTERM, restart on the same data.
// Test support: a failure here is a failed test, and a panic with the
// message is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a start may take before the test fails (generous: CI machines
/// are slow and debug builds more so).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A node process and its ports.
#[derive(Debug)]
pub struct TestNode {
    bin: PathBuf,
    /// Its data directory.
    pub dir: PathBuf,
    /// The address its listeners bind (`--node.listen`).
    pub listen: String,
    /// Cores (executors).
    pub cores: u16,
    /// The shared client port.
    pub client: u16,
    /// The shard-aware port of core 0.
    pub shard_base: u16,
    /// The RESP port.
    pub resp: u16,
    /// The HTTP port.
    pub http: u16,
    extra: Vec<String>,
    /// Extra environment of the process.
    env: Vec<(String, String)>,
    /// `COREKV_LOG` of the process.
    log_filter: String,
    child: Option<Child>,
    /// Everything the node wrote on stderr so far (for failure messages).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn port_free(p: u16) -> bool {
    // The wildcard address conflicts with a listener on any local address, so
    // a port free here is free on 127.0.0.1 and on every cluster test IP.
    TcpListener::bind(("0.0.0.0", p)).is_ok()
}

/// `n` consecutive free ports (probed, so another process may still take
/// them before the node binds; the node then fails to start and says so).
fn free_ports(n: u16) -> u16 {
    // Tests in one process run in parallel: each call takes its own block of
    // the range (a process-wide counter), offset by the pid so that test
    // processes running side by side start in different places.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let span = 40_000u64;
    let start = (u64::from(std::process::id()) * 7919) % span;
    loop {
        let k = NEXT.fetch_add(u64::from(n), std::sync::atomic::Ordering::Relaxed);
        let base = 20_000 + ((start + k) % (span - u64::from(n))) as u16;
        if (base..base + n).all(port_free) {
            return base;
        }
    }
}

impl TestNode {
    /// Starts a node with `cores` cores on a fresh data directory `dir`
    /// (emptied first), listening on 127.0.0.1, plus `extra` flags.
    pub fn start(bin: &str, dir: &Path, cores: u16, extra: &[&str]) -> TestNode {
        let mut n = TestNode::new(bin, dir, "127.0.0.1", cores, extra);
        n.spawn().expect("the node starts");
        n
    }

    /// A node on a fresh data directory `dir` (emptied first), listening on
    /// `listen` with `cores + 3` free ports, plus `extra` flags; not started
    /// ([`TestNode::spawn`] starts it).
    pub fn new(bin: &str, dir: &Path, listen: &str, cores: u16, extra: &[&str]) -> TestNode {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("create the data dir");
        let base = free_ports(cores + 3);
        TestNode {
            bin: PathBuf::from(bin),
            dir: dir.to_path_buf(),
            listen: listen.to_owned(),
            cores,
            client: base,
            resp: base + 1,
            http: base + 2,
            shard_base: base + 3,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            log_filter: "warn,corekv_shard=debug".to_owned(),
            child: None,
            log: Default::default(),
        }
    }

    /// Sets the process's `COREKV_LOG` (from the next start on).
    pub fn set_log_filter(&mut self, filter: &str) {
        self.log_filter = filter.to_owned();
    }

    /// Sets an environment variable of the process (from the next start on).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the running process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid, which we have not
            // reaped (the Child is still held), so the pid is not reused.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
    }

    /// SIGSTOPs the running process and waits (at most 5 s) until every one
    /// of its threads shows as stopped in /proc: kill(2) only queues the
    /// stop, and a thread still running for a moment after it returns could
    /// answer one more request, which a test that pauses a node to make it
    /// silent would then count as an answer.
    pub fn pause(&self) {
        let Some(c) = &self.child else { return };
        self.signal(libc::SIGSTOP);
        let tasks = PathBuf::from(format!("/proc/{}/task", c.id()));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let states = thread_states(&tasks);
            if states.iter().all(|s| matches!(s, 'T' | 't' | 'Z' | 'X')) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("the process did not stop within 5 s of SIGSTOP (thread states {states:?})");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Appends flags to the command line (from the next start on).
    pub fn add_flags(&mut self, flags: &[String]) {
        self.extra.extend(flags.iter().cloned());
    }

    /// Whether the process is running (started and not killed or stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process and waits for its "ready" line; on failure, the
    /// node's stderr.
    pub fn spawn(&mut self) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--node.data_dir")
            .arg(&self.dir)
            .args(["--node.listen", &self.listen])
            .args(["--node.cores", &self.cores.to_string()])
            .args(["--ports.client", &self.client.to_string()])
            .args(["--ports.resp", &self.resp.to_string()])
            .args(["--ports.shard_base", &self.shard_base.to_string()]);
        // Defaults a test's own flags may replace (a flag may not repeat).
        let http = self.http.to_string();
        for (flag, value) in [
            ("--ports.http", http.as_str()),
            ("--storage.memtable_bytes", "16777216"),
            ("--storage.wal_segment_bytes", "4194304"),
        ] {
            if !self.extra.iter().any(|e| e == flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.args(&self.extra)
            .env("COREKV_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("corekv: ready") {
                    let _ = tx.send(());
                }
                if let Ok(mut l) = log.lock() {
                    l.push(line);
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(t0.elapsed());
            }
            let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if status.is_some() || Instant::now() > deadline {
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "node did not become ready (exit: {status:?}); log:\n{}",
                    self.log_text()
                ));
            }
        }
    }

    /// The node's stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The last `n` lines of the node's stderr.
    pub fn log_tail(&self, n: usize) -> String {
        self.log
            .lock()
            .map(|l| l[l.len().saturating_sub(n)..].join("\n"))
            .unwrap_or_default()
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (panics after 60 s).
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself, at most `limit`; its status
    /// (panics with the log when it does not exit).
    pub fn await_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node did not exit within {limit:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts on the same data and ports after a kill or stop.
    pub fn restart(&mut self) -> Duration {
        self.kill9();
        // The kernel may hold the ports briefly after an abrupt close.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn() {
                Ok(d) => return d,
                Err(e)
                    if Instant::now() < deadline
                        && (e.contains("Address already in use") || e.contains("another process listens")) =>
                {
                    self.kill9();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// `http://` URL of the HTTP port (no trailing slash).
    pub fn http_url(&self) -> String {
        format!("http://{}:{}", self.listen, self.http)
    }

    /// `redis://` URL of the RESP port.
    pub fn redis_url(&self) -> String {
        format!("redis://{}:{}/", self.listen, self.resp)
    }

    /// The core (of this node) that owns `key`, computed as the node does.
    pub fn core_of(&self, key: &[u8]) -> usize {
        let mut c = corekv_shard::Config::default();
        c.node.listen.clone_from(&self.listen);
        c.ports.client = self.client;
        let ring = corekv_shard::runtime::single_node_ring(&c).expect("ring");
        let cores = std::num::NonZeroUsize::new(self.cores as usize).expect("cores > 0");
        ring.route(key, cores).core
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
        // Keep the data of a failed test for a post-mortem; free the disk otherwise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A test data directory on the real disk (target/tmp), unique per name and process.
pub fn test_dir(tmp: &str, name: &str) -> PathBuf {
    PathBuf::from(tmp).join(format!("{name}-{}", std::process::id()))
}

/// The state letter of every thread under `/proc/PID/task` (the field after
/// the parenthesised command name, which may itself hold spaces or ')').
fn thread_states(tasks: &Path) -> Vec<char> {
    let Ok(dir) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter_map(|stat| stat.rsplit_once(')')?.1.trim_start().chars().next())
        .collect()
}
