//! `resp-load`: a small RESP (Redis protocol) loader with known keys.
//!
//! `-c` threads, each with its own blocking TCP connection (std only, no
//! async), send pipelined commands `-P` at a time and read every reply before
//! sending the next batch. Thread `t` owns the keys `{prefix}:{t}:{i}` for
//! `i` in `0..n/c` (the first `n % c` threads one more), so a later run with the
//! same `-c -n --prefix` knows exactly which keys exist and what they hold.
//!
//! The value of a key is the key itself, followed by `|`, repeated and cut to
//! `-d` bytes: any value read back can be checked against its key.
//!
//! Modes (`--mode`):
//! - `set` (default): SET every key; each reply must be `+OK`.
//! - `get`: GET every key; each reply must be the key's value.
//! - `verify`: GET a sample (`--sample`, spread evenly over every thread's
//!   keys, first and last included) and check the values; exits 1 on a miss.
//!
//! Output: a human line, then one `RESULT key=value ...` line for scripts:
//! `RESULT mode=set ops=.. secs=.. ops_per_sec=.. value_bytes=.. key_bytes=..
//! wire_bytes=.. mib_per_sec=.. errors=.. mismatches=..`.
//! Exits 1 on any error reply, wrong value or lost connection.
//!
//! ```text
//! resp-load -h 127.0.0.1 -p 6380 -c 50 -n 16384 -d 65536 -P 16          # 1 GiB of values
//! resp-load -h 127.0.0.1 -p 6380 -c 50 -n 16384 -d 65536 --mode verify --sample 1000
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Set,
    Get,
    Verify,
}

/// A RESP loader with known keys (`{prefix}:{thread}:{i}`); see the crate docs.
#[derive(Parser, Debug)]
#[command(name = "resp-load", disable_help_flag = true)]
struct Args {
    /// Server host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    host: String,
    /// Server RESP port.
    #[arg(short = 'p', long, default_value_t = 6380)]
    port: u16,
    /// Threads, one connection each.
    #[arg(short = 'c', long = "clients", default_value_t = 50)]
    clients: usize,
    /// Total keys over all threads.
    #[arg(short = 'n', long = "count", default_value_t = 100_000)]
    count: u64,
    /// Value size in bytes.
    #[arg(short = 'd', long = "value-size", default_value_t = 1024)]
    value_size: usize,
    /// Commands per pipelined batch.
    #[arg(short = 'P', long = "pipeline", default_value_t = 16)]
    pipeline: usize,
    /// Key prefix.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// What to do.
    #[arg(long, value_enum, default_value_t = Mode::Set)]
    mode: Mode,
    /// Keys checked in `verify` mode (spread over all threads' ranges).
    #[arg(long, default_value_t = 1000)]
    sample: u64,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// Keys owned by thread `t`.
fn keys_of(count: u64, clients: usize, t: usize) -> u64 {
    let c = clients as u64;
    count / c + u64::from((t as u64) < count % c)
}

fn key(prefix: &str, t: usize, i: u64) -> String {
    format!("{prefix}:{t}:{i}")
}

/// The value stored under `key`: the key and `|`, repeated, cut to `size`.
fn value_of(key: &[u8], size: usize, out: &mut Vec<u8>) {
    out.clear();
    if size == 0 {
        return;
    }
    let mut unit = key.to_vec();
    unit.push(b'|');
    while out.len() < size {
        let take = unit.len().min(size - out.len());
        out.extend_from_slice(&unit[..take]);
    }
}

fn push_cmd(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        buf.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        buf.extend_from_slice(p);
        buf.extend_from_slice(b"\r\n");
    }
}

/// One reply: a simple string/error/integer line, or a bulk string (None = nil).
enum Reply {
    Line(Vec<u8>),
    Error(String),
    Bulk(Option<Vec<u8>>),
}

fn read_line(r: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> std::io::Result<()> {
    line.clear();
    let n = r.read_until(b'\n', line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    if line.ends_with(b"\r\n") {
        line.truncate(line.len() - 2);
    }
    Ok(())
}

fn read_reply(r: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> std::io::Result<Reply> {
    read_line(r, line)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    match line.first() {
        Some(b'+') | Some(b':') => Ok(Reply::Line(line[1..].to_vec())),
        Some(b'-') => Ok(Reply::Error(String::from_utf8_lossy(&line[1..]).into_owned())),
        Some(b'_') => Ok(Reply::Bulk(None)),
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&line[1..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad bulk length"))?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0u8; len as usize + 2];
            std::io::Read::read_exact(r, &mut data)?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(data)))
        }
        _ => Err(bad(&format!("unexpected reply {:?}", String::from_utf8_lossy(line)))),
    }
}

#[derive(Default)]
struct Tally {
    ops: u64,
    value_bytes: u64,
    key_bytes: u64,
    wire_bytes: u64,
    errors: u64,
    mismatches: u64,
    first_problem: Option<String>,
}

impl Tally {
    fn problem(&mut self, p: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(p);
        }
    }
}

/// The key indices thread `t` works on in this mode.
fn indices(a: &Args, t: usize) -> Vec<u64> {
    let mine = keys_of(a.count, a.clients, t);
    if a.mode != Mode::Verify {
        return (0..mine).collect();
    }
    // Spread the sample over the threads, then evenly over each range.
    let per = keys_of(a.sample, a.clients, t).min(mine);
    if per == 0 {
        return Vec::new();
    }
    if per == 1 {
        return vec![mine - 1];
    }
    let mut v: Vec<u64> = (0..per).map(|j| j * (mine - 1) / (per - 1)).collect();
    v.dedup();
    v
}

fn run_thread(a: &Args, t: usize) -> std::io::Result<Tally> {
    let stream = TcpStream::connect((a.host.as_str(), a.port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(1 << 20, stream);
    let mut tally = Tally::default();
    let mut buf = Vec::new();
    let mut val = Vec::new();
    let mut line = Vec::new();
    let idx = indices(a, t);
    for batch in idx.chunks(a.pipeline.max(1)) {
        buf.clear();
        let mut keys = Vec::with_capacity(batch.len());
        for &i in batch {
            let k = key(&a.prefix, t, i);
            match a.mode {
                Mode::Set => {
                    value_of(k.as_bytes(), a.value_size, &mut val);
                    push_cmd(&mut buf, &[b"SET", k.as_bytes(), &val]);
                    tally.value_bytes += val.len() as u64;
                }
                Mode::Get | Mode::Verify => push_cmd(&mut buf, &[b"GET", k.as_bytes()]),
            }
            tally.key_bytes += k.len() as u64;
            keys.push(k);
        }
        tally.wire_bytes += buf.len() as u64;
        w.write_all(&buf)?;
        for k in &keys {
            let reply = read_reply(&mut r, &mut line)?;
            tally.ops += 1;
            match (a.mode, reply) {
                (_, Reply::Error(e)) => {
                    tally.errors += 1;
                    tally.problem(format!("{k}: error reply -{e}"));
                }
                (Mode::Set, Reply::Line(l)) if l == b"OK" => {}
                (Mode::Set, _) => {
                    tally.errors += 1;
                    tally.problem(format!("{k}: SET did not answer +OK"));
                }
                (_, Reply::Bulk(Some(v))) => {
                    value_of(k.as_bytes(), a.value_size, &mut val);
                    tally.value_bytes += v.len() as u64;
                    if v != val {
                        tally.mismatches += 1;
                        tally.problem(format!("{k}: wrong value ({} bytes)", v.len()));
                    }
                }
                (_, Reply::Bulk(None)) => {
                    tally.mismatches += 1;
                    tally.problem(format!("{k}: missing (nil)"));
                }
                (_, Reply::Line(l)) => {
                    tally.errors += 1;
                    tally.problem(format!("{k}: unexpected reply +{}", String::from_utf8_lossy(&l)));
                }
            }
        }
    }
    Ok(tally)
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.clients == 0 {
        eprintln!("resp-load: -c must be at least 1");
        return ExitCode::from(2);
    }
    let start = Instant::now();
    let results: Vec<std::io::Result<Tally>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.clients)
            .map(|t| {
                s.spawn({
                    let a = &a;
                    move || run_thread(a, t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("thread panicked")))
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut total = Tally::default();
    let mut io_errors = Vec::new();
    for (t, r) in results.into_iter().enumerate() {
        match r {
            Ok(x) => {
                total.ops += x.ops;
                total.value_bytes += x.value_bytes;
                total.key_bytes += x.key_bytes;
                total.wire_bytes += x.wire_bytes;
                total.errors += x.errors;
                total.mismatches += x.mismatches;
                if let Some(p) = x.first_problem {
                    total.problem(p);
                }
            }
            Err(e) => io_errors.push(format!("thread {t}: {e}")),
        }
    }
    let mode = match a.mode {
        Mode::Set => "set",
        Mode::Get => "get",
        Mode::Verify => "verify",
    };
    let ops_per_sec = total.ops as f64 / secs.max(1e-9);
    let mib_per_sec = total.wire_bytes as f64 / secs.max(1e-9) / (1 << 20) as f64;
    // A closed stdout (`| head -1`) must not turn a finished load into a panic.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "resp-load: {mode} {} keys ({} clients, pipeline {}, {} B values) in {secs:.3} s: {ops_per_sec:.0} ops/s, \
         {:.1} MiB of values, {mib_per_sec:.1} MiB/s on the wire; {} error replies, {} wrong/missing values",
        total.ops,
        a.clients,
        a.pipeline,
        a.value_size,
        total.value_bytes as f64 / (1 << 20) as f64,
        total.errors,
        total.mismatches
    );
    let _ = writeln!(
        stdout,
        "RESULT mode={mode} ops={} secs={secs:.3} ops_per_sec={ops_per_sec:.0} value_bytes={} key_bytes={} \
         wire_bytes={} mib_per_sec={mib_per_sec:.1} errors={} mismatches={} io_errors={}",
        total.ops,
        total.value_bytes,
        total.key_bytes,
        total.wire_bytes,
        total.errors,
        total.mismatches,
        io_errors.len()
    );
    if let Some(p) = &total.first_problem {
        eprintln!("resp-load: first problem: {p}");
    }
    for e in &io_errors {
        eprintln!("resp-load: {e}");
    }
    if total.errors > 0 || total.mismatches > 0 || !io_errors.is_empty() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
