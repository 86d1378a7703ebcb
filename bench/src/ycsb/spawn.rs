//! Starting the servers a run measures (`--spawn-node`, `--spawn-cluster N`,
//! `--spawn-redis`): real `corekv serve` and `redis-server` processes on free
//! ports, data in the run's data directory (on the real disk: corekv needs
//! O_DIRECT), stopped when the [`Server`] is dropped (SIGCONT, SIGTERM, then
//! SIGKILL after 10 s) and their data removed unless kept.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Error, Result};

/// How long a server may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a server's log kept for error messages.
const LOG_LINES: usize = 200;

/// A server process this run started.
pub struct Server {
    /// Name in messages (`corekv n1`, `redis-server`).
    pub name: String,
    /// Its data directory.
    pub dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    keep: bool,
}

impl Server {
    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last lines the server wrote on stderr/stdout.
    pub fn log_tail(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(c.id()) {
            // SAFETY: kill(2) on our own child's pid, which has not been
            // reaped yet (so the pid is still ours). SIGCONT first: a server a
            // test stopped (SIGSTOP) cannot act on SIGTERM.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn port_free(p: u16) -> bool {
    // The wildcard address conflicts with a listener on any local address, so
    // a port free here is free on every loopback address.
    TcpListener::bind(("0.0.0.0", p)).is_ok()
}

/// `n` consecutive free ports (probed: another process may still take them
/// before the server binds; it then fails to start and says so).
pub fn free_ports(n: u16) -> Result<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Start somewhere that depends on the pid, so two runs side by side
    // probe different places; stay below the usual ephemeral range.
    let span = 12_000u64;
    let origin = (u64::from(std::process::id()) * 7_919) % span;
    for _ in 0..span {
        let k = NEXT.fetch_add(u64::from(n), Ordering::Relaxed);
        let base = 16_000 + ((origin + k) % (span - u64::from(n))) as u16;
        if (base..base + n).all(port_free) {
            return Ok(base);
        }
    }
    Err(Error::Spawn(format!("no {n} consecutive free ports in 16000..28000")))
}

/// Starts `cmd`, collects its output lines, and waits until a line contains
/// `ready` (or, with `ready = None`, until `probe` succeeds).
fn start(
    name: &str,
    dir: &Path,
    mut cmd: Command,
    ready: Option<&str>,
    keep: bool,
    probe: impl Fn() -> bool,
) -> Result<Server> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Spawn(format!("cannot start {name} ({:?}): {e}", cmd.get_program())))?;
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let outs: Vec<Box<dyn std::io::Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for out in outs {
        let (log, tx, ready) = (log.clone(), tx.clone(), ready.map(str::to_owned));
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
                if ready.as_deref().is_some_and(|r| line.contains(r)) {
                    let _ = tx.send(());
                }
                if let Ok(mut l) = log.lock() {
                    if l.len() >= LOG_LINES {
                        l.remove(0);
                    }
                    l.push(line);
                }
            }
        });
    }
    let mut server = Server {
        name: name.to_owned(),
        dir: dir.to_path_buf(),
        child: Some(child),
        log,
        keep,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let is_ready = match ready {
            Some(_) => rx.recv_timeout(Duration::from_millis(50)).is_ok(),
            None => {
                std::thread::sleep(Duration::from_millis(50));
                probe()
            }
        };
        if is_ready {
            return Ok(server);
        }
        let exited = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            // Let the readers collect the last lines.
            std::thread::sleep(Duration::from_millis(100));
            return Err(Error::Spawn(format!(
                "{name} did not become ready ({}); its output:\n{}",
                exited.map_or_else(|| "timed out".to_owned(), |s| format!("exited: {s}")),
                server.log_tail()
            )));
        }
    }
}

/// Where the `corekv` binary is: `explicit`, else `corekv` beside this
/// executable, else `corekv-bench-node` beside it (the test build's copy),
/// else `corekv` on the PATH.
pub fn find_corekv(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let here = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    for name in ["corekv", "corekv-bench-node"] {
        if let Some(p) = here.as_ref().map(|d| d.join(name)).filter(|p| p.is_file()) {
            return Ok(p);
        }
    }
    find_on_path("corekv").ok_or_else(|| {
        Error::Spawn(
            "no corekv binary beside corekv-bench nor on the PATH: build it (cargo build --release -p corekv-tools) or pass --corekv PATH"
                .to_owned(),
        )
    })
}

/// `name` on the PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A started corekv node's addresses.
pub struct Node {
    /// The process.
    pub server: Server,
    /// `ip:client_port`.
    pub client_addr: String,
    /// `ip:resp_port`.
    pub resp_addr: String,
}

/// Starts `corekv serve` with `cores` cores on `ip`, data in `dir` (emptied
/// first), plus `extra` flags; waits for its ready line.
pub fn spawn_node(bin: &Path, dir: &Path, ip: &str, cores: u16, extra: &[String], keep: bool) -> Result<Node> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        what: format!("create {}", dir.display()),
        source: e,
    })?;
    let base = free_ports(cores + 2)?;
    let (client, resp, shard) = (base, base + 1, base + 2);
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--node.data_dir")
        .arg(dir)
        .args(["--node.listen", ip])
        .args(["--node.cores", &cores.to_string()])
        .args(["--ports.client", &client.to_string()])
        .args(["--ports.resp", &resp.to_string()])
        .args(["--ports.shard_base", &shard.to_string()])
        // Benchmarks drive the client and RESP ports only.
        .args(["--ports.http", "0"])
        .args(extra)
        .env("COREKV_LOG", "warn");
    let name = format!("corekv at {ip}:{client}");
    let server = start(&name, dir, cmd, Some("corekv: ready"), keep, || false)?;
    Ok(Node {
        server,
        client_addr: format!("{ip}:{client}"),
        resp_addr: format!("{ip}:{resp}"),
    })
}

/// Starts an `n`-node cluster on `127.0.K.1..n` (one core each, replication
/// factor `min(3, n)`, nodes 1 and 2 as seeds) and waits until every node's
/// ring lists all `n`. Data in `root/n1..`; `extra` flags for every node.
pub async fn spawn_cluster(
    bin: &Path,
    root: &Path,
    n: usize,
    cores: u16,
    extra: &[String],
    keep: bool,
) -> Result<Vec<Node>> {
    if !(1..=250).contains(&n) {
        return Err(Error::Config(format!("--spawn-cluster {n}: 1..=250 nodes")));
    }
    // 127.0.250-254.x: away from the integration tests' 127.0.50-249.x.
    let k = 250 + std::process::id() % 5;
    let ips: Vec<String> = (1..=n).map(|i| format!("127.0.{k}.{i}")).collect();
    // The seeds' ports must be known before any node starts: pick every
    // node's ports first.
    let ports: Vec<u16> = (0..n).map(|_| free_ports(cores + 2)).collect::<Result<_>>()?;
    let seeds: Vec<String> = (0..n.min(2)).map(|i| format!("{}:{}", ips[i], ports[i])).collect();
    let rf = n.min(3).to_string();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let dir = root.join(format!("n{}", i + 1));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            what: format!("create {}", dir.display()),
            source: e,
        })?;
        let (client, resp, shard) = (ports[i], ports[i] + 1, ports[i] + 2);
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--node.data_dir")
            .arg(&dir)
            .args(["--node.id", &format!("n{}", i + 1)])
            .args(["--node.listen", &ips[i]])
            .args(["--node.cores", &cores.to_string()])
            .args(["--ports.client", &client.to_string()])
            .args(["--ports.resp", &resp.to_string()])
            .args(["--ports.shard_base", &shard.to_string()])
            .args(["--ports.http", "0"])
            .args(["--cluster.seeds", &seeds.join(",")])
            .args(["--cluster.replication_factor", &rf])
            .args(extra)
            .env("COREKV_LOG", "warn");
        let name = format!("corekv n{} at {}:{client}", i + 1, ips[i]);
        let server = start(&name, &dir, cmd, Some("corekv: ready"), keep, || false)?;
        nodes.push(Node {
            server,
            client_addr: format!("{}:{client}", ips[i]),
            resp_addr: format!("{}:{resp}", ips[i]),
        });
    }
    for node in &nodes {
        crate::ring::wait_ring(&node.client_addr, n, START_TIMEOUT)
            .await
            .map_err(|e| {
                Error::Spawn(format!(
                    "{e}\n{}'s output:\n{}",
                    node.server.name,
                    node.server.log_tail()
                ))
            })?;
    }
    Ok(nodes)
}

/// Starts `redis-server` on 127.0.0.1 with data in `dir` and AOF fsync policy
/// `appendfsync` (`always` matches corekv's default durability: every
/// acknowledged write is on disk), no RDB snapshots; returns it and its
/// address once it answers.
pub fn spawn_redis(bin: &Path, dir: &Path, appendfsync: &str, keep: bool) -> Result<(Server, String)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        what: format!("create {}", dir.display()),
        source: e,
    })?;
    let port = free_ports(1)?;
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--daemonize", "no"]);
    if appendfsync == "off" {
        cmd.args(["--appendonly", "no"]);
    } else {
        cmd.args(["--appendonly", "yes", "--appendfsync", appendfsync]);
    }
    let addr = format!("127.0.0.1:{port}");
    let probe_addr = addr.clone();
    let probe = move || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&probe_addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    };
    let server = start("redis-server", dir, cmd, None, keep, probe)?;
    Ok((server, addr))
}
