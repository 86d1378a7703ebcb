//! The Redis-protocol port (docs/resp.md).
//!
//! Commands from one connection run concurrently (pipelined writes share a
//! group commit) but their replies leave in order, as Redis clients require.
//! Redis also guarantees that a command sees the writes sent before it on
//! the same connection; here a write is visible once durable, so a command
//! that reads a key with a write still in flight on this connection waits
//! for that write before it starts. Writes to one key apply in the order sent
//! (the owning core's key lock is FIFO and requests reach it in order).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use corekv_net::resp::{
    glob_match, parse_command, unknown_command_message, ClientRequest, CommandRequest, Expire, Limits as RespLimits,
    Proto, ReplyWriter, RespRequest, SetCond,
};
use futures::AsyncRead;

use super::auth::{LoginError, Session};
use super::native::{by_core, mget, mput};
use super::{read_some, scan, Outbox};
use crate::runtime::Shard;
use crate::security::Access;
use crate::store::{now_ms, Cmd, Cond, ExpireAction, ExpireCond, Failure, FailureKind, Key, Reply, Value};

const READ_CHUNK: usize = 16 << 10;

/// Most keys a SCAN call returns when one hash tag holds more than COUNT keys
/// (the call must finish a token, see [`scan_cmd`]).
const SCAN_GROUP_CAP: usize = 100_000;

/// Per-connection state.
struct Conn {
    proto: Proto,
    name: Option<Vec<u8>>,
    id: u64,
    /// Hashes (xxh3) of keys with a write in flight on this connection, and
    /// how many. A hash, not the key: no copy per write, and a collision only
    /// makes a read wait for an unrelated write, which is still correct.
    writing: RefCell<HashMap<u64, usize>>,
}

fn failure_text(f: &Failure) -> String {
    match f.kind {
        FailureKind::NotInteger => "ERR value is not an integer or out of range".into(),
        FailureKind::Overflow => "ERR increment or decrement would overflow".into(),
        FailureKind::Overloaded => format!("ERR {}", f.message),
        FailureKind::Unavailable | FailureKind::Timeout => format!("TRYAGAIN {}", f.message),
        // Redis' own answer when it cannot persist (a failed AOF write, a full
        // disk): not TRYAGAIN, which cluster clients retry at once.
        FailureKind::DiskFull | FailureKind::Fenced => format!("MISCONF {}", f.message),
        _ => format!("ERR {}", f.message),
    }
}

/// Answers a connection over the per-core limit (Redis' wording), then it closes.
pub fn refuse(out: &Outbox, f: &Failure) {
    let mut b = Vec::new();
    ReplyWriter::new(Proto::Resp2).error(&mut b, &failure_text(f));
    out.push_raw(&b);
}

fn resp_limits(shard: &Shard) -> RespLimits {
    let l = &shard.config.limits;
    RespLimits {
        max_bulk: usize::try_from(l.max_value_bytes.max(l.max_key_bytes)).unwrap_or(usize::MAX),
        max_args: 1 << 20,
        ..RespLimits::default()
    }
}

static NEXT_CLIENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Reads commands until EOF, QUIT, a protocol error, or shutdown.
pub async fn read_loop<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    mut reader: R,
    out: &Rc<Outbox>,
    remote: Option<std::net::SocketAddr>,
) {
    let session = Session::default();
    let limits = resp_limits(shard);
    let max_inflight = usize::try_from(shard.config.limits.max_inflight_per_connection).unwrap_or(usize::MAX);
    let conn = Rc::new(RefCell::new(Conn {
        proto: Proto::Resp2,
        name: None,
        id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        writing: RefCell::new(HashMap::new()),
    }));
    // Initialized once; bytes start..end are unparsed. Not zeroed per read:
    // a connection of small commands would otherwise memset the buffer per command.
    let mut buf: Vec<u8> = vec![0; READ_CHUNK];
    let (mut start, mut end) = (0usize, 0usize);
    let mut seq = 0u64;
    loop {
        loop {
            if !out.room(max_inflight).await {
                return;
            }
            let (cmd, used) = match parse_command(&buf[start..end], &limits) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    let mut b = Vec::new();
                    ReplyWriter::new(conn.borrow().proto).protocol_error(&mut b, &e);
                    out.begin();
                    out.finish_ordered(seq, b);
                    return;
                }
            };
            let this = seq;
            seq += 1;
            let req = RespRequest::parse(&cmd);
            let quit = matches!(req, Ok(RespRequest::Quit));
            dispatch(shard, out, &conn, &session, remote, this, req).await;
            start += used;
            if quit {
                return;
            }
        }
        if start == end {
            start = 0;
            end = 0;
            if buf.len() > 4 * READ_CHUNK {
                buf = vec![0; READ_CHUNK];
            }
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if buf.len() - end < READ_CHUNK / 4 {
            // A command larger than the buffer: grow (bounded by the parser's limits).
            buf.resize((buf.len() * 2).max(end + READ_CHUNK), 0);
        }
        match read_some(shard, &mut reader, &mut buf[end..], end > 0).await {
            Ok(Some(n)) if n > 0 => end += n,
            _ => return,
        }
    }
}

/// AUTH's outcome in Redis' words.
async fn login(
    shard: &Shard,
    session: &Session,
    user: &str,
    password: &[u8],
    remote: Option<std::net::SocketAddr>,
) -> Result<(), &'static str> {
    match session.login(shard, user, password, remote).await {
        Ok(_) => Ok(()),
        Err(LoginError::NoUsers) => Err(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        Err(LoginError::Throttled) => Err("ERR too many failed authentications on this node; try again later"),
        Err(LoginError::Wrong) => Err("WRONGPASS invalid username-password pair or user is disabled."),
    }
}

/// With a users file: the refusal of a command the connection may not run
/// (Redis' NOAUTH and NOPERM texts), or `None`.
fn gate(session: &Session, req: &RespRequest<'_>) -> Option<String> {
    match req {
        // HELLO checks for itself (it may carry AUTH).
        RespRequest::Empty | RespRequest::Quit | RespRequest::Hello { .. } => return None,
        RespRequest::UnknownCommand { name, .. } if name.eq_ignore_ascii_case(b"auth") => return None,
        _ => {}
    }
    let Some(user) = session.user() else {
        return Some("NOAUTH Authentication required.".to_owned());
    };
    let key_ok = |access: Access, keys: &[&[u8]]| keys.iter().all(|k| user.can(access, k));
    let ok = match req {
        RespRequest::Get(k) | RespRequest::Ttl { key: k, .. } => key_ok(Access::Read, &[k]),
        RespRequest::Exists(ks) | RespRequest::MGet(ks) => key_ok(Access::Read, ks),
        RespRequest::Set(a) => key_ok(Access::Write, &[a.key]),
        RespRequest::Del(ks) => key_ok(Access::Write, ks),
        RespRequest::MSet(pairs) => pairs.iter().all(|(k, _)| user.can(Access::Write, k)),
        RespRequest::Expire { key, .. } => key_ok(Access::Write, &[key]),
        RespRequest::IncrBy { key, .. } => key_ok(Access::Read, &[key]) && key_ok(Access::Write, &[key]),
        RespRequest::Scan(a) => {
            // SCAN walks every key; MATCH's literal head bounds what it returns.
            let pattern = a.pattern.unwrap_or(b"");
            let head = pattern
                .iter()
                .position(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
                .map_or(pattern, |i| &pattern[..i]);
            user.can_all_under(Access::Read, head)
        }
        _ => true,
    };
    if ok {
        None
    } else {
        Some("NOPERM No permissions to access a key".to_owned())
    }
}

async fn wait_for_writes(out: &Outbox, conn: &RefCell<Conn>, keys: &[&[u8]]) {
    loop {
        let busy = {
            let c = conn.borrow();
            let w = c.writing.borrow();
            !w.is_empty() && keys.iter().any(|k| w.contains_key(&key_hash(k)))
        };
        if !busy || out.is_broken() {
            return;
        }
        out.progressed().await;
    }
}

fn key_hash(k: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(k)
}

/// Registers in-flight writes; the guard unregisters them when dropped.
struct Writing {
    conn: Rc<RefCell<Conn>>,
    keys: Vec<u64>,
}

impl Writing {
    fn new(conn: &Rc<RefCell<Conn>>, keys: &[&[u8]]) -> Writing {
        let keys: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        {
            let c = conn.borrow();
            let mut w = c.writing.borrow_mut();
            for k in &keys {
                *w.entry(*k).or_insert(0) += 1;
            }
        }
        Writing {
            conn: conn.clone(),
            keys,
        }
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let c = self.conn.borrow();
        let mut w = c.writing.borrow_mut();
        for k in &self.keys {
            if let Some(n) = w.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    w.remove(k);
                }
            }
        }
    }
}

/// Turns one request into its reply, inline for the cheap ones and in a task
/// for those that touch data.
async fn dispatch(
    shard: &Rc<Shard>,
    out: &Rc<Outbox>,
    conn: &Rc<RefCell<Conn>>,
    session: &Session,
    remote: Option<std::net::SocketAddr>,
    seq: u64,
    req: Result<RespRequest<'_>, corekv_net::resp::CommandError>,
) {
    out.begin();
    let w = ReplyWriter::new(conn.borrow().proto);
    let mut b = Vec::new();
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            w.error(&mut b, &e.to_string());
            out.finish_ordered(seq, b);
            return;
        }
    };
    if shard.security.requires_auth() {
        if let Some(refusal) = gate(session, &req) {
            w.error(&mut b, &refusal);
            out.finish_ordered(seq, b);
            return;
        }
    }
    // Read-after-write on this connection.
    let read_keys: &[&[u8]] = match &req {
        RespRequest::Get(k) | RespRequest::Ttl { key: k, .. } => std::slice::from_ref(k),
        RespRequest::Exists(ks) | RespRequest::MGet(ks) => ks,
        _ => &[],
    };
    if !read_keys.is_empty() {
        wait_for_writes(out, conn, read_keys).await;
    }
    let job: Option<Job> = match req {
        RespRequest::Empty => {
            // Redis ignores empty inline lines without replying.
            out.finish_ordered(seq, Vec::new());
            return;
        }
        RespRequest::Get(k) => Some(Job::Get(Key::new(k))),
        RespRequest::Set(a) => {
            let expiry_ms = match a.expire {
                None => 0,
                Some(Expire::Seconds(s)) => now_ms().saturating_add(u64::try_from(s).unwrap_or(0).saturating_mul(1000)),
                Some(Expire::Millis(ms)) => now_ms().saturating_add(u64::try_from(ms).unwrap_or(0)),
                Some(Expire::AtSeconds(s)) => u64::try_from(s).unwrap_or(1).saturating_mul(1000),
                Some(Expire::AtMillis(ms)) => u64::try_from(ms).unwrap_or(1),
            };
            let cond = match a.cond {
                None => Cond::Always,
                Some(SetCond::IfAbsent) => Cond::IfAbsent,
                Some(SetCond::IfPresent) => Cond::IfPresent,
            };
            Some(Job::Set {
                guard: Writing::new(conn, &[a.key]),
                key: Key::new(a.key),
                value: a.value.to_vec(),
                expiry_ms,
                cond,
            })
        }
        RespRequest::Del(ks) => Some(Job::Del {
            guard: Writing::new(conn, &ks),
            keys: ks.iter().map(|k| Key::new(k)).collect(),
        }),
        RespRequest::Exists(ks) => Some(Job::Exists(ks.iter().map(|k| Key::new(k)).collect())),
        RespRequest::MGet(ks) => Some(Job::MGet(ks.iter().map(|k| Key::new(k)).collect())),
        RespRequest::MSet(pairs) => {
            let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| *k).collect();
            Some(Job::MSet {
                guard: Writing::new(conn, &keys),
                entries: pairs.iter().map(|(k, v)| (Key::new(k), v.to_vec())).collect(),
            })
        }
        RespRequest::IncrBy { key, by } => Some(Job::Incr {
            guard: Writing::new(conn, &[key]),
            key: Key::new(key),
            by,
        }),
        RespRequest::Expire { key, millis, cond } => Some(Job::Expire {
            guard: Writing::new(conn, &[key]),
            key: Key::new(key),
            action: if millis <= 0 {
                ExpireAction::Delete
            } else {
                ExpireAction::At(now_ms().saturating_add(u64::try_from(millis).unwrap_or(u64::MAX)))
            },
            cond,
        }),
        RespRequest::Ttl { key, millis } => Some(Job::Ttl {
            key: Key::new(key),
            millis,
        }),
        RespRequest::Scan(a) => Some(Job::Scan {
            cursor: a.cursor,
            pattern: a.pattern.map(<[u8]>::to_vec),
            count: a
                .count
                .map_or(10, |c| usize::try_from(c).unwrap_or(usize::MAX))
                .clamp(1, 10_000),
            string_type: a.type_.is_none_or(|t| t.eq_ignore_ascii_case(b"string")),
        }),
        RespRequest::Info(_) => Some(Job::Info),
        RespRequest::Keys(_) => {
            w.error(
                &mut b,
                "ERR KEYS is not supported: it would walk every key while the node waits. \
                 Use SCAN with MATCH and COUNT (redis-cli --scan --pattern works)",
            );
            None
        }
        RespRequest::Ping(None) => {
            w.simple(&mut b, b"PONG");
            None
        }
        RespRequest::Ping(Some(m)) | RespRequest::Echo(m) => {
            w.bulk(&mut b, m);
            None
        }
        RespRequest::Command(c) => {
            command(&w, &mut b, &c);
            None
        }
        RespRequest::Hello {
            protover,
            setname,
            auth: hello_auth,
        } => {
            if let Some((user, password)) = hello_auth {
                let user = String::from_utf8_lossy(user);
                if let Err(refusal) = login(shard, session, &user, password, remote).await {
                    w.error(&mut b, refusal);
                    out.finish_ordered(seq, b);
                    return;
                }
            } else if shard.security.requires_auth() && session.user().is_none() {
                w.error(
                    &mut b,
                    "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
                     HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
                     select the RESP protocol version at the same time",
                );
                out.finish_ordered(seq, b);
                return;
            }
            let mut c = conn.borrow_mut();
            if let Some(p) = protover {
                c.proto = if p == 3 { Proto::Resp3 } else { Proto::Resp2 };
            }
            if let Some(n) = setname {
                c.name = Some(n.to_vec());
            }
            let w = ReplyWriter::new(c.proto);
            w.map(&mut b, 7);
            w.bulk(&mut b, b"server");
            w.bulk(&mut b, b"corekv");
            w.bulk(&mut b, b"version");
            w.bulk(&mut b, b"7.0.0");
            w.bulk(&mut b, b"proto");
            w.integer(&mut b, if c.proto == Proto::Resp3 { 3 } else { 2 });
            w.bulk(&mut b, b"id");
            w.integer(&mut b, i64::try_from(c.id).unwrap_or(i64::MAX));
            w.bulk(&mut b, b"mode");
            w.bulk(&mut b, b"standalone");
            w.bulk(&mut b, b"role");
            w.bulk(&mut b, b"master");
            w.bulk(&mut b, b"modules");
            w.array(&mut b, 0);
            None
        }
        RespRequest::Client(c) => {
            let mut conn = conn.borrow_mut();
            match c {
                ClientRequest::SetName(n) => {
                    conn.name = if n.is_empty() { None } else { Some(n.to_vec()) };
                    w.ok(&mut b);
                }
                ClientRequest::GetName => match &conn.name {
                    Some(n) => w.bulk(&mut b, n),
                    None => w.null(&mut b),
                },
                ClientRequest::Id => w.integer(&mut b, i64::try_from(conn.id).unwrap_or(i64::MAX)),
            }
            None
        }
        RespRequest::Select(0) => {
            w.ok(&mut b);
            None
        }
        RespRequest::Select(_) => {
            w.error(&mut b, "ERR DB index is out of range");
            None
        }
        RespRequest::Quit => {
            w.ok(&mut b);
            None
        }
        RespRequest::UnknownCommand { name, args } if name.eq_ignore_ascii_case(b"auth") => {
            // AUTH password (the user `default`, as Redis) or AUTH user password.
            let (user, password) = match args.as_slice() {
                [p] => (std::borrow::Cow::Borrowed("default"), *p),
                [u, p] => (String::from_utf8_lossy(u), *p),
                _ => {
                    w.error(&mut b, "ERR wrong number of arguments for 'auth' command");
                    out.finish_ordered(seq, b);
                    return;
                }
            };
            match login(shard, session, &user, password, remote).await {
                Ok(()) => w.ok(&mut b),
                Err(refusal) => w.error(&mut b, refusal),
            }
            None
        }
        RespRequest::UnknownCommand { name, args } => {
            if name.eq_ignore_ascii_case(b"config") && args.first().is_some_and(|a| a.eq_ignore_ascii_case(b"get")) {
                // redis-benchmark and other tools read persistence settings
                // at start; answer the two that have a meaning here.
                let durable = matches!(shard.config.storage.durability, crate::config::Durability::Sync);
                let known: Vec<(&[u8], &[u8])> = args[1..]
                    .iter()
                    .filter_map(|p| {
                        if p.eq_ignore_ascii_case(b"save") {
                            Some((&b"save"[..], &b""[..]))
                        } else if p.eq_ignore_ascii_case(b"appendonly") {
                            Some((&b"appendonly"[..], &b"yes"[..]))
                        } else if p.eq_ignore_ascii_case(b"appendfsync") {
                            Some((
                                &b"appendfsync"[..],
                                if durable { &b"always"[..] } else { &b"everysec"[..] },
                            ))
                        } else {
                            None
                        }
                    })
                    .collect();
                w.map(&mut b, known.len());
                for (k, v) in known {
                    w.bulk(&mut b, k);
                    w.bulk(&mut b, v);
                }
            } else {
                w.error(&mut b, &unknown_command_message(name, &args));
            }
            None
        }
    };
    let Some(job) = job else {
        out.finish_ordered(seq, b);
        return;
    };
    let info = job.info(shard);
    let (s, o) = (shard.clone(), out.clone());
    let fut = async move {
        let mut b = Vec::new();
        run(&s, &w, job, &mut b).await;
        // RESP errors start with '-' (and '!' for RESP3 blob errors).
        let ok = !matches!(b.first(), Some(b'-' | b'!'));
        crate::metrics::finish(&s, &info, ok);
        o.finish_ordered(seq, b);
    };
    if super::run_inline_or_spawn(shard, Box::pin(fut)).await.is_err() {
        let mut b = Vec::new();
        w.error(&mut b, "ERR cannot schedule the command");
        out.finish_ordered(seq, b);
    }
}

enum Job {
    Get(Key),
    Set {
        guard: Writing,
        key: Key,
        value: Vec<u8>,
        expiry_ms: u64,
        cond: Cond,
    },
    Del {
        guard: Writing,
        keys: Vec<Key>,
    },
    Exists(Vec<Key>),
    MGet(Vec<Key>),
    MSet {
        guard: Writing,
        entries: Vec<(Key, Vec<u8>)>,
    },
    Incr {
        guard: Writing,
        key: Key,
        by: i64,
    },
    Expire {
        guard: Writing,
        key: Key,
        action: ExpireAction,
        cond: Option<ExpireCond>,
    },
    Ttl {
        key: Key,
        millis: bool,
    },
    Scan {
        cursor: u64,
        pattern: Option<Vec<u8>>,
        count: usize,
        string_type: bool,
    },
    Info,
}

impl Job {
    /// The job's labels for the metrics and the slow-request log.
    fn info(&self, shard: &Shard) -> crate::metrics::RequestInfo {
        use crate::metrics::{Level, OpKind, Proto, RequestInfo};
        let first = |ks: &[Key]| ks.first().map_or(0, |k| k.bytes.len());
        let (op, key_len) = match self {
            Job::Get(k) => (OpKind::Get, k.bytes.len()),
            Job::Set { key, .. } => (OpKind::Put, key.bytes.len()),
            Job::Del { keys, .. } => (OpKind::Delete, first(keys)),
            Job::Exists(ks) => (OpKind::Exists, first(ks)),
            Job::MGet(ks) => (OpKind::MGet, first(ks)),
            Job::MSet { entries, .. } => (OpKind::MPut, entries.first().map_or(0, |(k, _)| k.bytes.len())),
            Job::Incr { key, .. } => (OpKind::Incr, key.bytes.len()),
            Job::Expire { key, .. } => (OpKind::Expire, key.bytes.len()),
            Job::Ttl { key, .. } => (OpKind::Ttl, key.bytes.len()),
            Job::Scan { pattern, .. } => (OpKind::Scan, pattern.as_ref().map_or(0, Vec::len)),
            Job::Info => (OpKind::Info, 0),
        };
        let level = match (shard.cluster.is_some(), op) {
            (false, _) | (true, OpKind::Scan | OpKind::Info) => Level::None,
            (true, OpKind::Incr) => Level::Serial,
            (true, _) => Level::of(resp_consistency(shard)),
        };
        RequestInfo::new(Proto::Resp, op, level, key_len)
    }
}

fn check_key(k: &Key) -> Result<(), Failure> {
    if k.bytes.is_empty() {
        return Err(Failure::new(FailureKind::Invalid, "empty keys are not allowed"));
    }
    Ok(())
}

/// Sends one command per owning core and sums their integer replies.
async fn sum_by_core(shard: &Rc<Shard>, keys: Vec<Key>, make: fn(Vec<Key>) -> Cmd) -> Result<i64, Failure> {
    let groups = by_core(shard, keys.iter().map(|k| k.token));
    let calls = groups.iter().map(|(c, idx)| {
        let ks = idx.iter().map(|&i| keys[i].clone()).collect();
        shard.exec(*c, make(ks))
    });
    let mut n = 0;
    for r in futures::future::join_all(calls).await {
        match r {
            Reply::Int(x) => n += x,
            Reply::Failed(f) => return Err(f),
            other => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                ))
            }
        }
    }
    Ok(n)
}

async fn run(shard: &Rc<Shard>, w: &ReplyWriter, job: Job, b: &mut Vec<u8>) {
    if let Err(f) = run_inner(shard, w, job, b).await {
        b.clear();
        w.error(b, &failure_text(&f));
    }
}

fn unexpected(r: &Reply) -> Failure {
    Failure::new(FailureKind::Internal, format!("unexpected reply {r:?}"))
}

/// Runs the command `make` builds from `key` on the key's core.
async fn one(shard: &Rc<Shard>, key: Key, make: impl FnOnce(Key) -> Cmd) -> Result<Reply, Failure> {
    check_key(&key)?;
    let core = shard.core_of(key.token);
    match shard.exec(core, make(key)).await {
        Reply::Failed(f) => Err(f),
        r => Ok(r),
    }
}

/// A coordinated request in cluster mode, at `cluster.resp_consistency`
/// (writes with a sloppy quorum when `cluster.resp_sloppy_quorum` is set).
/// The level of every coordinated RESP request (`cluster.resp_consistency`):
/// RESP has no way to say.
fn resp_consistency(shard: &Shard) -> crate::coordinator::Consistency {
    use crate::config::RespConsistency;
    use crate::coordinator::Consistency;
    match shard.config.cluster.resp_consistency {
        RespConsistency::One => Consistency::One,
        RespConsistency::Quorum => Consistency::Quorum,
        RespConsistency::All => Consistency::All,
        RespConsistency::LocalQuorum => Consistency::LocalQuorum,
    }
}

async fn coordinated(shard: &Rc<Shard>, key: Key, value: Option<Option<(Vec<u8>, u64)>>) -> Result<Reply, Failure> {
    use crate::cluster::ClusterCmd;
    check_key(&key)?;
    let consistency = resp_consistency(shard);
    let core = shard.core_of(key.token);
    let cmd = match value {
        None => ClusterCmd::Get {
            key,
            consistency,
            timeout_ms: 0,
        },
        Some(v) => {
            let (value, expiry_ms) = match v {
                Some((v, e)) => (Some(v), e),
                None => (None, 0),
            };
            ClusterCmd::Write {
                key,
                value,
                expiry_ms,
                context: None,
                consistency,
                timeout_ms: 0,
                forwarded: false,
                sloppy: shard.config.cluster.resp_sloppy_quorum,
            }
        }
    };
    match shard.exec(core, Cmd::Cluster(cmd)).await {
        Reply::Failed(f) => Err(f),
        r => Ok(r),
    }
}

/// The newest live value of a coordinated read (RESP has no siblings: the
/// others stay stored and the SDK's `get_versions` returns them).
fn newest_value(r: Reply) -> Result<Option<Vec<u8>>, Failure> {
    match r {
        Reply::Versions(v) => Ok(v.and_then(|v| v.siblings.into_iter().next()).map(|s| s.value)),
        r => Err(unexpected(&r)),
    }
}

async fn run_cluster(shard: &Rc<Shard>, w: &ReplyWriter, job: Job, b: &mut Vec<u8>) -> Result<(), Failure> {
    use super::native::not_in_cluster_mode;
    match job {
        Job::Get(key) => match newest_value(coordinated(shard, key, None).await?)? {
            Some(v) => w.bulk(b, &v),
            None => w.null(b),
        },
        Job::Set {
            guard,
            key,
            value,
            expiry_ms,
            cond,
        } => {
            if cond != crate::store::Cond::Always {
                return Err(not_in_cluster_mode("SET NX/XX"));
            }
            let r = coordinated(shard, key, Some(Some((value, expiry_ms)))).await;
            drop(guard);
            r?;
            w.ok(b);
        }
        Job::Del { guard, keys } => {
            // DEL answers how many existed: read each, then delete those.
            let mut n = 0;
            for k in keys {
                if newest_value(coordinated(shard, k.clone(), None).await?)?.is_some() {
                    coordinated(shard, k, Some(None)).await?;
                    n += 1;
                }
            }
            drop(guard);
            w.integer(b, n);
        }
        Job::Exists(keys) => {
            let mut n = 0;
            for k in keys {
                n += i64::from(newest_value(coordinated(shard, k, None).await?)?.is_some());
            }
            w.integer(b, n);
        }
        Job::MGet(keys) => {
            let vals = futures::future::join_all(keys.into_iter().map(|k| coordinated(shard, k, None))).await;
            let vals: Vec<Option<Vec<u8>>> = vals
                .into_iter()
                .map(|r| r.and_then(newest_value))
                .collect::<Result<_, _>>()?;
            w.array(b, vals.len());
            for v in vals {
                match v {
                    Some(v) => w.bulk(b, &v),
                    None => w.null(b),
                }
            }
        }
        Job::MSet { guard, entries } => {
            let r = futures::future::join_all(
                entries
                    .into_iter()
                    .map(|(k, v)| coordinated(shard, k, Some(Some((v, 0))))),
            )
            .await;
            drop(guard);
            r.into_iter().collect::<Result<Vec<_>, _>>()?;
            w.ok(b);
        }
        Job::Incr { guard, key, by } => {
            check_key(&key)?;
            let core = shard.core_of(key.token);
            let cmd = Cmd::Cluster(crate::cluster::ClusterCmd::Cas {
                key,
                command: crate::coordinator::CasCommand::Add { delta: by },
                timeout_ms: 0,
            });
            let r = shard.exec(core, cmd).await;
            drop(guard);
            w.integer(b, super::native::counter_of(&r)?);
        }
        Job::Expire {
            guard,
            key,
            action,
            cond,
        } => {
            if cond.is_some() {
                return Err(not_in_cluster_mode("EXPIRE with NX/XX/GT/LT"));
            }
            check_key(&key)?;
            let set = match action {
                ExpireAction::At(t) => Some(t),
                ExpireAction::Persist => Some(0),
                ExpireAction::Delete => None,
            };
            let existed = match set {
                Some(expiry_ms) => {
                    let core = shard.core_of(key.token);
                    let cmd = Cmd::Cluster(crate::cluster::ClusterCmd::Expire {
                        key,
                        expiry_ms,
                        consistency: resp_consistency(shard),
                        timeout_ms: 0,
                    });
                    match shard.exec(core, cmd).await {
                        Reply::Bool(x) => x,
                        r => return Err(unexpected(&r)),
                    }
                }
                // A time in the past deletes the key, as Redis does.
                None => {
                    let there = newest_value(coordinated(shard, key.clone(), None).await?)?.is_some();
                    if there {
                        coordinated(shard, key, Some(None)).await?;
                    }
                    there
                }
            };
            drop(guard);
            w.integer(b, i64::from(existed));
        }
        Job::Ttl { key, millis } => {
            let r = coordinated(shard, key, None).await?;
            let Reply::Versions(v) = r else {
                return Err(unexpected(&r));
            };
            let n = super::native::ttl_of(v.as_ref().and_then(|v| v.siblings.first()));
            // Redis rounds to the nearest second.
            w.integer(b, if n < 0 || millis { n } else { (n + 500) / 1000 });
        }
        Job::Scan { .. } => return Err(not_in_cluster_mode("SCAN")),
        Job::Info => {
            let text = info(shard).await?;
            w.verbatim(b, b"txt", text.as_bytes());
        }
    }
    Ok(())
}

async fn run_inner(shard: &Rc<Shard>, w: &ReplyWriter, job: Job, b: &mut Vec<u8>) -> Result<(), Failure> {
    if shard.cluster.is_some() {
        return run_cluster(shard, w, job, b).await;
    }
    match job {
        Job::Get(key) => match one(shard, key, Cmd::Get).await? {
            Reply::Value(Some(v)) => w.bulk(b, &v.value),
            Reply::Value(None) => w.null(b),
            r => return Err(unexpected(&r)),
        },
        Job::Set {
            guard,
            key,
            value,
            expiry_ms,
            cond,
        } => {
            let r = one(shard, key, |key| Cmd::Put {
                key,
                value,
                expiry_ms,
                cond,
            })
            .await;
            drop(guard);
            match r? {
                Reply::Bool(true) => w.ok(b),
                Reply::Bool(false) => w.null(b),
                r => return Err(unexpected(&r)),
            }
        }
        Job::Del { guard, keys } => {
            keys.iter().try_for_each(check_key)?;
            let n = sum_by_core(shard, keys, Cmd::Delete).await;
            drop(guard);
            w.integer(b, n?);
        }
        Job::Exists(keys) => {
            keys.iter().try_for_each(check_key)?;
            w.integer(b, sum_by_core(shard, keys, Cmd::Exists).await?);
        }
        Job::MGet(keys) => {
            keys.iter().try_for_each(check_key)?;
            let vals: Vec<Option<Value>> = mget(shard, keys).await?;
            w.array(b, vals.len());
            for v in vals {
                match v {
                    Some(v) => w.bulk(b, &v.value),
                    None => w.null(b),
                }
            }
        }
        Job::MSet { guard, entries } => {
            entries.iter().try_for_each(|(k, _)| check_key(k))?;
            let r = mput(shard, entries, 0).await;
            drop(guard);
            r?;
            w.ok(b);
        }
        Job::Incr { guard, key, by } => {
            let r = one(shard, key, |key| Cmd::Incr { key, delta: by }).await;
            drop(guard);
            match r? {
                Reply::Int(n) => w.integer(b, n),
                r => return Err(unexpected(&r)),
            }
        }
        Job::Expire {
            guard,
            key,
            action,
            cond,
        } => {
            let r = one(shard, key, |key| Cmd::Expire { key, action, cond }).await;
            drop(guard);
            match r? {
                Reply::Bool(x) => w.integer(b, i64::from(x)),
                r => return Err(unexpected(&r)),
            }
        }
        Job::Ttl { key, millis } => match one(shard, key, Cmd::Ttl).await? {
            Reply::Int(n) if n < 0 || millis => w.integer(b, n),
            // Redis rounds to the nearest second.
            Reply::Int(n) => w.integer(b, (n + 500) / 1000),
            r => return Err(unexpected(&r)),
        },
        Job::Scan {
            cursor,
            pattern,
            count,
            string_type,
        } => {
            let (keys, next) = scan_cmd(shard, cursor, count).await?;
            w.array(b, 2);
            w.bulk(b, next.to_string().as_bytes());
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| string_type && pattern.as_ref().is_none_or(|p| glob_match(p, k)))
                .collect();
            w.array(b, keys.len());
            for k in keys {
                w.bulk(b, &k);
            }
        }
        Job::Info => {
            let text = info(shard).await?;
            w.verbatim(b, b"txt", text.as_bytes());
        }
    }
    Ok(())
}

/// SCAN over the node in token order. The cursor is the token to resume at
/// (0: start, and 0 again when done). A call ends on a token boundary: it
/// returns every remaining key of the last token it touched, so resuming at
/// the next token misses nothing even when a hash tag gives many keys one
/// token. Like Redis, a key may come back twice (if written between calls),
/// and a key present for the whole scan is returned at least once.
async fn scan_cmd(shard: &Rc<Shard>, cursor: u64, count: usize) -> Result<(Vec<Vec<u8>>, u64), Failure> {
    let cores = scan::all_cores(shard);
    let p = scan::page(shard, &cores, cursor, u64::MAX, None, &[], count).await?;
    let mut keys: Vec<Vec<u8>> = p.entries.into_iter().map(|e| e.key).collect();
    let Some(mut at) = p.next else {
        return Ok((keys, 0));
    };
    let token = at.token;
    let core = [shard.core_of(token)];
    // Finish the token.
    loop {
        let more = scan::page(shard, &core, token, token, Some(at.clone()), &[], 1000).await?;
        keys.extend(more.entries.into_iter().map(|e| e.key));
        match more.next {
            Some(c) if keys.len() < SCAN_GROUP_CAP => at = c,
            _ => break,
        }
    }
    Ok((keys, token.checked_add(1).unwrap_or(0)))
}

async fn info(shard: &Rc<Shard>) -> Result<String, Failure> {
    use std::fmt::Write;
    let calls = (0..shard.cores).map(|c| shard.exec(c, Cmd::Info));
    let mut t = String::new();
    let up = shard.started.elapsed().as_secs();
    let _ = write!(
        t,
        "# Server\r\nredis_version:7.0.0\r\ncorekv_version:{}\r\nredis_mode:standalone\r\nos:Linux\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\ncores:{}\r\n\r\n# Persistence\r\naof_enabled:1\r\ncorekv_durability:{}\r\n\r\n# Stats\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        shard.config.ports.resp,
        shard.cores,
        shard.config.storage.durability,
    );
    let mut total = 0u64;
    let mut storage = String::new();
    let mut worst = StorageState::Ok;
    for (c, r) in futures::future::join_all(calls).await.into_iter().enumerate() {
        match r {
            Reply::Info(i) => {
                total += i.commands;
                let state = StorageState::of(&i.health);
                worst = worst.max(state);
                let _ = write!(storage, "core{c}_storage:{}", state.name());
                if state != StorageState::Ok {
                    // One line per field: the reason must not break it.
                    let why = i.health.to_string().replace(['\r', '\n'], " ");
                    let _ = write!(storage, " ({why})");
                }
                storage.push_str("\r\n");
                let _ = write!(
                    t,
                    "core{c}:commands={},writes={},wal_syncs={},user_bytes_written={},write_amplification={:.2},gets={},flushes={},compactions={}\r\n",
                    i.commands, i.writes, i.wal_syncs, i.user_bytes_written, i.write_amplification, i.gets, i.flushes, i.compactions
                );
            }
            Reply::Failed(f) => return Err(f),
            r => return Err(unexpected(&r)),
        }
    }
    let _ = write!(t, "total_commands_processed:{total}\r\n");
    let _ = write!(t, "\r\n# Storage\r\nstorage_state:{}\r\n{storage}", worst.name());
    Ok(t)
}

/// A core's storage state in INFO, ordered from healthy to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StorageState {
    Ok,
    CompactionFailing,
    DiskFull,
    Fenced,
}

impl StorageState {
    fn of(h: &corekv_engine::Health) -> StorageState {
        match h {
            corekv_engine::Health::Ok => StorageState::Ok,
            corekv_engine::Health::DiskFull { .. } => StorageState::DiskFull,
            corekv_engine::Health::CompactionFailing { .. } => StorageState::CompactionFailing,
            // Health is non-exhaustive: an unknown state is not healthy.
            _ => StorageState::Fenced,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StorageState::Ok => "ok",
            StorageState::CompactionFailing => "compaction_failing",
            StorageState::DiskFull => "disk_full",
            StorageState::Fenced => "fenced",
        }
    }
}

/// A COMMAND entry: name, arity (Redis convention: negative = at least),
/// flags, first key, last key, step.
type CommandInfo = (&'static str, i64, &'static [&'static str], i64, i64, i64);

/// Supported commands.
const COMMANDS: &[CommandInfo] = &[
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", -3, &["write", "denyoom"], 1, 1, 1),
    ("del", -2, &["write"], 1, -1, 1),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("expire", -3, &["write", "fast"], 1, 1, 1),
    ("pexpire", -3, &["write", "fast"], 1, 1, 1),
    ("ttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("pttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("ping", -1, &["fast"], 0, 0, 0),
    ("echo", 2, &["fast"], 0, 0, 0),
    ("info", -1, &["loading", "stale"], 0, 0, 0),
    ("command", -1, &["loading", "stale"], 0, 0, 0),
    ("hello", -1, &["noscript", "loading", "stale", "fast"], 0, 0, 0),
    ("client", -2, &["noscript", "loading", "stale"], 0, 0, 0),
    ("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    ("quit", -1, &["noscript", "loading", "stale", "fast"], 0, 0, 0),
];

fn command_entry(w: &ReplyWriter, b: &mut Vec<u8>, c: &CommandInfo) {
    w.array(b, 6);
    w.bulk(b, c.0.as_bytes());
    w.integer(b, c.1);
    w.set(b, c.2.len());
    for f in c.2 {
        w.simple(b, f.as_bytes());
    }
    w.integer(b, c.3);
    w.integer(b, c.4);
    w.integer(b, c.5);
}

fn command(w: &ReplyWriter, b: &mut Vec<u8>, c: &CommandRequest<'_>) {
    let find = |n: &[u8]| COMMANDS.iter().find(|c| c.0.as_bytes().eq_ignore_ascii_case(n));
    match c {
        CommandRequest::List => {
            w.array(b, COMMANDS.len());
            for c in COMMANDS {
                command_entry(w, b, c);
            }
        }
        CommandRequest::Count => w.integer(b, i64::try_from(COMMANDS.len()).unwrap_or(0)),
        CommandRequest::Info(names) => {
            w.array(b, names.len());
            for n in names {
                match find(n) {
                    Some(c) => command_entry(w, b, c),
                    None => w.null_array(b),
                }
            }
        }
        // redis-cli asks for docs at start for its hints; it works without them.
        CommandRequest::Docs(_) => w.map(b, 0),
    }
}
