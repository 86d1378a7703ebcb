//! What a run measures: a corekv cluster through the SDK (`corekv://`) or a
//! Redis-protocol server (`redis://`, redis-server or corekv's RESP port),
//! and how each YCSB operation maps onto it.
//!
//! | operation | corekv (SDK) | RESP |
//! |---|---|---|
//! | read | `get` | `GET` |
//! | update, insert | `put` | `SET` |
//! | scan (start record, length L) | one page of `scan(token(start), token(start), L)`: the L entries that follow the start key in the store's (token, key) order | `MGET` of records start..start+L (the records inserted after the start record) |
//! | read-modify-write | `get`, then `put` | `GET`, then `SET` |
//!
//! A corekv cluster does not offer SCAN yet (it answers an error that says
//! so): on the first such error a corekv target switches its scans to the
//! MGET emulation and the report says so ([`Target::scan_method`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use corekv_net::client::{Client, ClientError, ClientOptions, Consistency};

use super::generator::record_key;
use super::resp::{Pool, Reply};
use super::workload::OpKind;
use super::{Error, Result};

/// The protocol of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// corekv's binary protocol through the client SDK (token-aware).
    Corekv,
    /// RESP: redis-server, or corekv's RESP port.
    Resp,
}

/// A target as given on the command line: `[LABEL=]corekv://HOST:PORT` or
/// `[LABEL=]redis://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Name in reports.
    pub label: String,
    /// Protocol.
    pub protocol: Protocol,
    /// `host:port` (the seed node for corekv).
    pub addr: String,
    /// Nodes behind it (1 unless a spawned cluster).
    pub nodes: u32,
}

impl TargetSpec {
    /// Parses `[LABEL=]corekv://HOST:PORT` or `[LABEL=]redis://HOST:PORT`;
    /// the label defaults to the URL.
    pub fn parse(s: &str) -> Result<TargetSpec> {
        let (label, url) = match s.split_once('=') {
            Some((l, u)) if !l.contains("://") => (Some(l.trim().to_owned()), u.trim()),
            _ => (None, s.trim()),
        };
        let (protocol, addr) = if let Some(a) = url.strip_prefix("corekv://") {
            (Protocol::Corekv, a)
        } else if let Some(a) = url.strip_prefix("redis://") {
            (Protocol::Resp, a)
        } else {
            return Err(Error::Config(format!(
                "target {s:?}: expected [LABEL=]corekv://HOST:PORT or [LABEL=]redis://HOST:PORT"
            )));
        };
        let addr = addr.trim_end_matches('/');
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(Error::Config(format!("target {s:?}: the address must be HOST:PORT")));
        }
        Ok(TargetSpec {
            label: label.unwrap_or_else(|| url.to_owned()),
            protocol,
            addr: addr.to_owned(),
            nodes: 1,
        })
    }

    /// The URL (`corekv://...` or `redis://...`).
    pub fn url(&self) -> String {
        match self.protocol {
            Protocol::Corekv => format!("corekv://{}", self.addr),
            Protocol::Resp => format!("redis://{}", self.addr),
        }
    }
}

/// Consistency level of each operation kind (corekv targets only; RESP has
/// no per-request level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpConsistency(pub [Consistency; 5]);

/// Parses a level: `one`, `two`, `three`, `quorum`, `all`, `local_quorum`.
pub fn parse_consistency(s: &str) -> Result<Consistency> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "two" => Consistency::Count(2),
        "three" => Consistency::Count(3),
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        other => {
            return Err(Error::Config(format!(
                "unknown consistency {other:?} (one, two, three, quorum, all, local_quorum)"
            )))
        }
    })
}

/// The name of a level, as [`parse_consistency`] reads it.
pub fn consistency_name(c: Consistency) -> String {
    match c {
        Consistency::One => "one".to_owned(),
        Consistency::Quorum => "quorum".to_owned(),
        Consistency::All => "all".to_owned(),
        Consistency::LocalQuorum => "local_quorum".to_owned(),
        Consistency::Count(2) => "two".to_owned(),
        Consistency::Count(3) => "three".to_owned(),
        Consistency::Count(n) => format!("count_{n}"),
    }
}

impl OpConsistency {
    /// `default` for every kind, then the `op=level,...` overrides.
    pub fn parse(default: &str, overrides: &str) -> Result<OpConsistency> {
        let mut levels = [parse_consistency(default)?; 5];
        for part in overrides.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (op, level) = part
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("--op-consistency: expected OP=LEVEL, got {part:?}")))?;
            let op = OpKind::parse(op).map_err(Error::Config)?;
            levels[op_index(op)] = parse_consistency(level)?;
        }
        Ok(OpConsistency(levels))
    }

    /// `read=quorum,update=quorum,...`.
    pub fn describe(&self) -> String {
        OpKind::ALL
            .iter()
            .zip(self.0)
            .map(|(k, c)| format!("{}={}", k.name().to_lowercase(), consistency_name(c)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The index of `op` in [`OpKind::ALL`].
pub fn op_index(op: OpKind) -> usize {
    match op {
        OpKind::Read => 0,
        OpKind::Update => 1,
        OpKind::Insert => 2,
        OpKind::Scan => 3,
        OpKind::ReadModifyWrite => 4,
    }
}

enum Backend {
    /// One SDK client per operation kind (each with its consistency level;
    /// clones share the connections).
    Corekv([Client; 5]),
    Resp(Pool),
}

/// A connected target.
pub struct Target {
    /// What it is.
    pub spec: TargetSpec,
    backend: Backend,
    /// corekv only: scans fell back to MGET (the server refused SCAN).
    scan_fallback: AtomicBool,
}

/// Most connections to a RESP target (one command per round trip on each):
/// a bound on sockets when an open-loop run piles up operations during a
/// stall.
pub const MAX_RESP_CONNECTIONS: usize = 512;

/// How a target serves the scan operation.
pub const SCAN_SDK: &str = "sdk token scan: one page of `limit` entries from the start key's token";
/// The MGET emulation of scans.
pub const SCAN_MGET: &str = "MGET of the `length` consecutive records from the start record";

impl Target {
    /// Connects: the SDK opens its connections to every node; a RESP target
    /// answers PING. `max_in_flight` is the most operations the run keeps
    /// outstanding (the SDK's per-connection bound; a RESP target opens at
    /// most [`MAX_RESP_CONNECTIONS`] connections).
    pub async fn connect(
        spec: TargetSpec,
        consistency: OpConsistency,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Target> {
        let backend = match spec.protocol {
            Protocol::Corekv => {
                let options = ClientOptions {
                    timeout,
                    // Every failure is reported, not hidden by a retry.
                    retries: 0,
                    consistency: consistency.0[0],
                    max_in_flight: max_in_flight.max(128),
                    ..ClientOptions::default()
                };
                let client = Client::connect(&[spec.addr.as_str()], options).await?;
                client.connect_all().await?;
                Backend::Corekv(consistency.0.map(|c| client.with_consistency(c)))
            }
            Protocol::Resp => {
                let pool = Pool::new(&spec.addr, max_in_flight.min(MAX_RESP_CONNECTIONS), timeout);
                match pool.call(&[b"PING"]).await? {
                    Reply::Status(s) if s == "PONG" => {}
                    other => return Err(Error::Resp(format!("PING answered {other:?}"))),
                }
                Backend::Resp(pool)
            }
        };
        Ok(Target {
            spec,
            backend,
            scan_fallback: AtomicBool::new(false),
        })
    }

    /// How scans were served (see the module docs).
    pub fn scan_method(&self) -> &'static str {
        match self.backend {
            Backend::Corekv(_) if !self.scan_fallback.load(Ordering::Relaxed) => SCAN_SDK,
            _ => SCAN_MGET,
        }
    }

    /// Reads one record; whether it exists.
    pub async fn read(&self, key: &str) -> Result<bool> {
        match &self.backend {
            Backend::Corekv(c) => Ok(c[op_index(OpKind::Read)].get(key).await?.is_some()),
            Backend::Resp(p) => match p.call(&[b"GET", key.as_bytes()]).await? {
                Reply::Bulk(v) => Ok(v.is_some()),
                other => Err(Error::Resp(format!("GET answered {other:?}"))),
            },
        }
    }

    /// Writes one record (update or insert: `op`).
    pub async fn write(&self, op: OpKind, key: &str, value: &[u8]) -> Result<()> {
        match &self.backend {
            Backend::Corekv(c) => Ok(c[op_index(op)].put(key, value).await?),
            Backend::Resp(p) => match p.call(&[b"SET", key.as_bytes(), value]).await? {
                Reply::Status(s) if s == "OK" => Ok(()),
                other => Err(Error::Resp(format!("SET answered {other:?}"))),
            },
        }
    }

    /// Reads a record and writes it back with `value` (YCSB's
    /// read-modify-write: the read's latency is part of the operation's).
    pub async fn read_modify_write(&self, key: &str, value: &[u8]) -> Result<()> {
        match &self.backend {
            Backend::Corekv(c) => {
                let client = &c[op_index(OpKind::ReadModifyWrite)];
                client.get(key).await?;
                Ok(client.put(key, value).await?)
            }
            Backend::Resp(_) => {
                self.read(key).await?;
                self.write(OpKind::ReadModifyWrite, key, value).await
            }
        }
    }

    /// Reads `len` records from record `start` (see the module docs); how
    /// many came back.
    pub async fn scan(&self, start: u64, len: u32) -> Result<usize> {
        if let Backend::Corekv(c) = &self.backend {
            if !self.scan_fallback.load(Ordering::Relaxed) {
                let token = corekv_net::token::token_of(record_key(start).as_bytes());
                match c[op_index(OpKind::Scan)].scan(token, token, b"", len).await {
                    Ok(page) => return Ok(page.entries.len()),
                    Err(ClientError::Server { message, .. }) => {
                        // The server does not offer SCAN here (a cluster):
                        // emulate from now on, and say so in the report.
                        if !self.scan_fallback.swap(true, Ordering::Relaxed) {
                            eprintln!(
                                "{}: SCAN refused ({message}); scans use the MGET emulation from now on",
                                self.spec.label
                            );
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let keys: Vec<String> = (start..start + u64::from(len)).map(record_key).collect();
        match &self.backend {
            Backend::Corekv(c) => Ok(c[op_index(OpKind::Scan)]
                .mget(&keys)
                .await?
                .iter()
                .filter(|v| v.is_some())
                .count()),
            Backend::Resp(p) => {
                let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
                args.push(b"MGET");
                args.extend(keys.iter().map(|k| k.as_bytes()));
                match p.call(&args).await? {
                    Reply::Array(Some(items)) => Ok(items.iter().filter(|r| matches!(r, Reply::Bulk(Some(_)))).count()),
                    other => Err(Error::Resp(format!("MGET answered {other:?}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_labels() {
        let t = TargetSpec::parse("redis=redis://127.0.0.1:6379").unwrap();
        assert_eq!(
            (t.label.as_str(), t.protocol, t.addr.as_str()),
            ("redis", Protocol::Resp, "127.0.0.1:6379")
        );
        let t = TargetSpec::parse("corekv://10.0.0.1:7380/").unwrap();
        assert_eq!(
            (t.label.as_str(), t.protocol, t.addr.as_str()),
            ("corekv://10.0.0.1:7380/", Protocol::Corekv, "10.0.0.1:7380")
        );
        assert!(TargetSpec::parse("http://x:1").is_err());
        assert!(TargetSpec::parse("corekv://nohost").is_err());
        let c = OpConsistency::parse("one", "update=quorum, rmw=all").unwrap();
        assert_eq!(c.0[0], Consistency::One);
        assert_eq!(c.0[1], Consistency::Quorum);
        assert_eq!(c.0[4], Consistency::All);
        assert!(c.describe().starts_with("read=one,update=quorum"));
        assert!(OpConsistency::parse("one", "delete=all").is_err());
    }
}
