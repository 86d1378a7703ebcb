//! `corekv cluster up --nodes K`: a local cluster for trying corekv out, and
//! `corekv cluster down` to stop one started with `--detach`.
//!
//! Node `i` (1-based) is `corekv serve` with id `n<i>`, listening on its own
//! loopback address (`--ip` plus `i - 1`: 127.0.0.1, 127.0.0.2, ...; Linux
//! routes all of 127.0.0.0/8 to the loopback device), so every node uses
//! the same ports and a client tells them apart by address, as on real
//! hosts. Its data lives in `DIR/n<i>` and its log in `DIR/n<i>.log`. The
//! first `min(K, 3)` nodes are the seeds.
//!
//! In the foreground (the default) the command waits until every node is
//! ready and the first node sees all K members NORMAL, prints how to reach
//! them, and stops them all (SIGTERM: each drains and exits 0) on Ctrl-C or
//! SIGTERM. With `--detach` it returns once the cluster is up and writes
//! the nodes' process ids to `DIR/cluster.pids` for `cluster down`.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};

/// The most nodes `cluster up` starts: each takes a loopback address and at
/// least one core's executor; more than this on one machine is a mistake.
const MAX_NODES: u32 = 64;
/// How long a node may take to print that it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the members may take to see each other NORMAL.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping node may drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// The file `--detach` writes and `cluster down` reads.
const PIDS_FILE: &str = "cluster.pids";

/// `cluster up` and `cluster down`.
pub fn command() -> Command {
    Command::new("cluster")
        .about("Run a local cluster on 127.0.0.x for trying corekv out")
        .subcommand_required(true)
        .subcommand(
            Command::new("up")
                .about("Start K nodes on consecutive loopback addresses and wait until they form one cluster")
                .arg(
                    Arg::new("nodes")
                        .long("nodes")
                        .short('k')
                        .value_name("K")
                        .default_value("3")
                        .value_parser(clap::value_parser!(u32).range(1..=i64::from(MAX_NODES)))
                        .help("How many nodes"),
                )
                .arg(dir_arg())
                .arg(
                    Arg::new("ip")
                        .long("ip")
                        .value_name("IPV4")
                        .default_value("127.0.0.1")
                        .value_parser(clap::value_parser!(Ipv4Addr))
                        .help("Address of node 1; node i listens on this address plus i - 1 (keep it in 127.0.0.0/8)"),
                )
                .arg(
                    Arg::new("port")
                        .long("port")
                        .value_name("PORT")
                        .default_value("7380")
                        .value_parser(clap::value_parser!(u16).range(1..=60000))
                        .help(
                            "Client port of every node; shard-aware ports follow it (PORT+20+core), RESP is PORT-1000",
                        ),
                )
                .arg(
                    Arg::new("cores")
                        .long("cores")
                        .value_name("N")
                        .default_value("1")
                        .value_parser(clap::value_parser!(u16).range(1..))
                        .help("Cores (executors) per node"),
                )
                .arg(
                    Arg::new("rf")
                        .long("replication-factor")
                        .value_name("N")
                        .default_value("3")
                        .value_parser(clap::value_parser!(u32).range(1..))
                        .help("Replicas per key"),
                )
                .arg(
                    Arg::new("detach")
                        .long("detach")
                        .short('d')
                        .action(ArgAction::SetTrue)
                        .help("Return once the cluster is up (stop it with `corekv cluster down`)"),
                )
                .arg(super::set_arg()),
        )
        .subcommand(
            Command::new("down")
                .about("Stop a cluster started with `cluster up --detach` (SIGTERM, then SIGKILL after 40 s)")
                .arg(dir_arg()),
        )
}

fn dir_arg() -> Arg {
    Arg::new("dir")
        .long("dir")
        .value_name("DIR")
        .default_value("./corekv-cluster")
        .value_parser(clap::value_parser!(PathBuf))
        .help("Where the nodes keep their data and logs")
}

/// Runs `cluster up` or `cluster down`.
pub fn run(m: &ArgMatches) -> Result<bool, String> {
    match m.subcommand() {
        Some(("up", m)) => up(m),
        Some(("down", m)) => down(m.get_one::<PathBuf>("dir").map_or(Path::new("."), PathBuf::as_path)),
        _ => Err("cluster: say `up` or `down`".to_owned()),
    }
}

/// One started node.
struct Member {
    id: String,
    ip: Ipv4Addr,
    child: Child,
}

/// The plan for one node: pure, so a test can check the addresses and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// `n<i>`.
    pub id: String,
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// Its `corekv serve` arguments (after `serve`).
    pub args: Vec<String>,
}

/// The serve command lines of a `k`-node cluster (see the module comment).
pub fn plan(
    k: u32,
    first_ip: Ipv4Addr,
    port: u16,
    cores: u16,
    rf: u32,
    dir: &Path,
    extra: &[String],
) -> Result<Vec<NodePlan>, String> {
    let base = u32::from(first_ip);
    let last = base
        .checked_add(k.saturating_sub(1))
        .map(Ipv4Addr::from)
        .ok_or_else(|| format!("{k} addresses from {first_ip} run past 255.255.255.255"))?;
    if !first_ip.is_loopback() || !last.is_loopback() {
        return Err(format!(
            "addresses {first_ip}..{last} leave 127.0.0.0/8: a local cluster uses loopback addresses only"
        ));
    }
    let shard_base = port
        .checked_add(20)
        .ok_or_else(|| format!("port {port} leaves no room for shard-aware ports"))?;
    let resp = port
        .checked_sub(1000)
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port} leaves no room for the RESP port (PORT - 1000)"))?;
    let seeds: Vec<String> = (0..k.min(3))
        .map(|i| format!("{}:{port}", Ipv4Addr::from(base + i)))
        .collect();
    let seeds = seeds.join(",");
    Ok((1..=k)
        .map(|i| {
            let ip = Ipv4Addr::from(base + i - 1);
            let id = format!("n{i}");
            let mut args = vec![
                "--node.id".to_owned(),
                id.clone(),
                "--node.listen".to_owned(),
                ip.to_string(),
                "--node.data_dir".to_owned(),
                dir.join(&id).display().to_string(),
                "--node.cores".to_owned(),
                cores.to_string(),
                "--ports.client".to_owned(),
                port.to_string(),
                "--ports.shard_base".to_owned(),
                shard_base.to_string(),
                "--ports.resp".to_owned(),
                resp.to_string(),
                "--cluster.seeds".to_owned(),
                seeds.clone(),
                "--cluster.replication_factor".to_owned(),
                rf.to_string(),
            ];
            for s in extra {
                args.push("--set".to_owned());
                args.push(s.clone());
            }
            NodePlan { id, ip, args }
        })
        .collect())
}

fn up(m: &ArgMatches) -> Result<bool, String> {
    let k = m.get_one::<u32>("nodes").copied().unwrap_or(3);
    let dir = m
        .get_one::<PathBuf>("dir")
        .cloned()
        .unwrap_or_else(|| PathBuf::from("./corekv-cluster"));
    let first_ip = m.get_one::<Ipv4Addr>("ip").copied().unwrap_or(Ipv4Addr::LOCALHOST);
    let port = m.get_one::<u16>("port").copied().unwrap_or(7380);
    let cores = m.get_one::<u16>("cores").copied().unwrap_or(1);
    let rf = m.get_one::<u32>("rf").copied().unwrap_or(3);
    let detach = m.get_flag("detach");
    let extra: Vec<String> = m
        .get_many::<String>("set")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let plans = plan(k, first_ip, port, cores, rf, &dir, &extra)?;

    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if let Some(pids) = read_pids(&dir)? {
        if pids.iter().any(|(_, pid)| alive(*pid)) {
            return Err(format!(
                "a cluster started from {} is still running (`corekv cluster down --dir {}` stops it)",
                dir.display(),
                dir.display()
            ));
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding the corekv binary: {e}"))?;
    // Install the handler before starting anything, so a Ctrl-C during the
    // start still stops what was started.
    let signals = if detach {
        None
    } else {
        Some(
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
                .map_err(|e| format!("installing the signal handler: {e}"))?,
        )
    };

    let mut members = Vec::new();
    let started = start_all(&exe, &dir, &plans, &mut members);
    let ready = started.and_then(|()| wait_converged(&members, port, k));
    if let Err(e) = ready {
        stop_all(&mut members);
        return Err(e);
    }
    let pids: Vec<String> = members.iter().map(|m| format!("{} {}", m.id, m.child.id())).collect();
    let pids_path = dir.join(PIDS_FILE);
    fs::write(&pids_path, pids.join("\n") + "\n").map_err(|e| format!("writing {}: {e}", pids_path.display()))?;

    println!(
        "corekv: a {k}-node cluster is up (replication factor {rf}), data and logs in {}",
        dir.display()
    );
    for m in &members {
        println!(
            "  {:<4} client {}:{port}  RESP {}:{}  pid {}",
            m.id,
            m.ip,
            m.ip,
            port - 1000,
            m.child.id()
        );
    }
    println!("try:  redis-cli -h {first_ip} -p {} set greeting hello", port - 1000);
    println!("      corekv get greeting --node {first_ip}:{port}");
    println!("      corekv status --node {first_ip}:{port}     corekv ring --node {first_ip}:{port}");
    match signals {
        None => {
            println!("stop it with: corekv cluster down --dir {}", dir.display());
            // The children outlive this process: they are in their own
            // process groups and nothing here waits for them.
            for m in members {
                drop(m.child);
            }
            Ok(true)
        }
        Some(mut signals) => {
            println!("Ctrl-C stops every node");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let _ = tx.send(sig);
                }
            });
            // Wake up now and then to notice a node that died by itself.
            loop {
                if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
                    break;
                }
                if let Some(dead) = members.iter_mut().find_map(|m| match m.child.try_wait() {
                    Ok(Some(status)) => Some(format!("{} exited ({status})", m.id)),
                    _ => None,
                }) {
                    eprintln!("corekv: {dead}; its log is in {}", dir.display());
                }
            }
            println!("corekv: stopping {} nodes", members.len());
            let clean = stop_all(&mut members);
            let _ = fs::remove_file(&pids_path);
            Ok(clean)
        }
    }
}

fn start_all(exe: &Path, dir: &Path, plans: &[NodePlan], members: &mut Vec<Member>) -> Result<(), String> {
    let mut logs = Vec::new();
    for p in plans {
        let log_path = dir.join(format!("{}.log", p.id));
        fs::File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        // Both streams straight to the file, in append mode so neither
        // overwrites the other, and no pipe that would break when a detached
        // `cluster up` exits.
        let open = || {
            fs::OpenOptions::new()
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("opening {}: {e}", log_path.display()))
        };
        let child = Process::new(exe)
            .arg("serve")
            .args(&p.args)
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            // Its own process group: a Ctrl-C in this terminal reaches only
            // `cluster up`, which then stops the nodes in order.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", p.id))?;
        members.push(Member {
            id: p.id.clone(),
            ip: p.ip,
            child,
        });
        logs.push(log_path);
    }
    // The node prints "corekv: ready ..." on stderr once it serves.
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = vec![false; members.len()];
    while ready.iter().any(|r| !r) {
        for (i, m) in members.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            let log = fs::read_to_string(&logs[i]).unwrap_or_default();
            if log.lines().any(|l| l.starts_with("corekv: ready")) {
                ready[i] = true;
            } else if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before it was ready; see {}",
                    m.id,
                    logs[i].display()
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} nodes were ready after {} s; see the logs in {}",
                ready.iter().filter(|r| **r).count(),
                members.len(),
                READY_TIMEOUT.as_secs(),
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Polls the first node's `status` until it lists `k` members, all NORMAL.
fn wait_converged(members: &[Member], port: u16, k: u32) -> Result<(), String> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let node = format!("{}:{port}", first.ip);
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let creds = super::admin::Credentials::default();
    loop {
        let last = match super::admin::call_with(&node, "status", Duration::from_secs(5), &creds) {
            Ok(report) => {
                let normal = report
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) == Some("NORMAL"))
                    .count();
                if normal == k as usize {
                    return Ok(());
                }
                report
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "the nodes did not all see each other NORMAL within {} s; {node} reports:\n{last}",
                CONVERGE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERM to every node, then waits (SIGKILL after [`STOP_TIMEOUT`]);
/// whether every node exited 0.
fn stop_all(members: &mut [Member]) -> bool {
    for m in members.iter() {
        signal(m.child.id(), libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut clean = true;
    for m in members.iter_mut() {
        loop {
            match m.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("corekv: {} exited with {status}", m.id);
                        clean = false;
                    }
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    eprintln!(
                        "corekv: {} did not drain within {} s: killing it",
                        m.id,
                        STOP_TIMEOUT.as_secs()
                    );
                    let _ = m.child.kill();
                    let _ = m.child.wait();
                    clean = false;
                    break;
                }
            }
        }
    }
    clean
}

fn down(dir: &Path) -> Result<bool, String> {
    let Some(pids) = read_pids(dir)? else {
        return Err(format!("no {} in {}: nothing to stop", PIDS_FILE, dir.display()));
    };
    for (_, pid) in &pids {
        signal(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pids.iter().any(|(_, p)| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut clean = true;
    for (id, pid) in &pids {
        if alive(*pid) {
            eprintln!(
                "corekv: {id} (pid {pid}) did not drain within {} s: killing it",
                STOP_TIMEOUT.as_secs()
            );
            signal(*pid, libc::SIGKILL);
            clean = false;
        } else {
            println!("corekv: {id} stopped");
        }
    }
    let _ = fs::remove_file(dir.join(PIDS_FILE));
    Ok(clean)
}

/// The `(id, pid)` lines of `DIR/cluster.pids`, if the file exists.
fn read_pids(dir: &Path) -> Result<Option<Vec<(String, i32)>>, String> {
    let path = dir.join(PIDS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut w = line.split_whitespace();
        match (w.next(), w.next().and_then(|p| p.parse::<i32>().ok()), w.next()) {
            (Some(id), Some(pid), None) if pid > 0 => out.push((id.to_owned(), pid)),
            _ => {
                return Err(format!(
                    "{} line {}: expected `ID PID`, got `{line}`",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    Ok(Some(out))
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) has finished draining: read its
    // state, since kill(pid, 0) still succeeds on one. Detached nodes are
    // reparented when `cluster up` exits, and not every init reaps them.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold ") ".
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: impl TryInto<i32>, sig: i32) {
    if let Ok(pid) = pid.try_into() {
        // SAFETY: kill(2) on a pid this command started (or read from its
        // own pids file); a pid that no longer exists gives ESRCH, ignored.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_gives_each_node_its_own_address_and_the_first_three_as_seeds() {
        let p = plan(5, Ipv4Addr::new(127, 0, 0, 1), 7380, 1, 3, Path::new("/d"), &[]).unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(p[4].ip, Ipv4Addr::new(127, 0, 0, 5));
        assert_eq!(p[4].id, "n5");
        let seeds_at = p[4].args.iter().position(|a| a == "--cluster.seeds").unwrap();
        assert_eq!(p[4].args[seeds_at + 1], "127.0.0.1:7380,127.0.0.2:7380,127.0.0.3:7380");
        assert!(p[1]
            .args
            .windows(2)
            .any(|w| w[0] == "--node.data_dir" && w[1] == "/d/n2"));
    }

    #[test]
    fn plan_refuses_addresses_outside_loopback_and_ports_without_room() {
        assert!(plan(3, Ipv4Addr::new(10, 0, 0, 1), 7380, 1, 3, Path::new("/d"), &[]).is_err());
        assert!(plan(3, Ipv4Addr::new(127, 255, 255, 254), 7380, 1, 3, Path::new("/d"), &[]).is_err());
        assert!(plan(3, Ipv4Addr::new(127, 0, 0, 1), 500, 1, 3, Path::new("/d"), &[]).is_err());
        assert!(plan(1, Ipv4Addr::new(127, 0, 0, 1), 65530, 1, 3, Path::new("/d"), &[]).is_err());
    }
}
