//! The binary protocol's connection loop and request execution
//! (docs/protocol.md).
//!
//! Requests are decoded in place from the receive buffer, turned into owned
//! commands for the owning core, and executed concurrently: a connection may
//! have up to `limits.max_inflight_per_connection` requests outstanding, and
//! responses go out as they finish (matched by request id), so one slow scan
//! does not hold back the gets pipelined behind it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::Cursor;
use corekv_net::frame::Flags;
use corekv_net::frame::FrameDecoder;
use corekv_net::msg::auth;
use corekv_net::msg::peer::{PeerOpcode, PeerRequest};
use corekv_net::msg::{
    Consistency as WireConsistency, ErrorCode, KeyValue, Limits, List, Node, Op, Request, Response, ResponseOpcode,
    SiblingRef, ValueRef,
};
use futures::AsyncRead;

use super::auth::{LoginError, Session};
use super::{read_some, scan, Outbox};
use crate::runtime::{advertised, Shard};
use crate::store::{now_ms, Cmd, ExpireAction, Failure, FailureKind, Key, Reply, Value};
use crate::topology::token_of;

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 16 << 10;

/// Entries per scan page when the client asks for more (or 0).
const MAX_PAGE: u32 = 10_000;

/// The wire limits from the configuration.
pub fn limits(shard: &Shard) -> Limits {
    let l = &shard.config.limits;
    Limits {
        max_frame: u32::try_from(l.max_frame_bytes).unwrap_or(u32::MAX),
        // Cursors carry a key plus 9 bytes (segment, token); the engine still
        // refuses keys over the configured size with TOO_LARGE.
        // Causal contexts share this bound: 64 clock entries take about 1.1 KiB.
        max_key: u32::try_from(l.max_key_bytes.saturating_add(16).max(4096)).unwrap_or(u32::MAX),
        max_value: u32::try_from(l.max_value_bytes).unwrap_or(u32::MAX),
        ..Limits::default()
    }
}

fn error_code(kind: FailureKind) -> ErrorCode {
    match kind {
        FailureKind::TooLarge => ErrorCode::TOO_LARGE,
        FailureKind::Invalid => ErrorCode::MALFORMED,
        FailureKind::NotInteger | FailureKind::Overflow => ErrorCode::NOT_AN_INTEGER,
        FailureKind::Unavailable => ErrorCode::UNAVAILABLE,
        FailureKind::DiskFull => ErrorCode::DISK_FULL,
        FailureKind::Fenced => ErrorCode::FENCED,
        FailureKind::Timeout => ErrorCode::TIMEOUT,
        FailureKind::Overloaded => ErrorCode::OVERLOADED,
        _ => ErrorCode::INTERNAL,
    }
}

fn encode(out: &mut Vec<u8>, id: u64, r: &Response<'_>) {
    if r.encode_frame(id, out).is_err() {
        // Only a body over 4 GiB fails, which max_frame-bounded replies never reach.
        out.clear();
        let e = Response::Error {
            code: ErrorCode::TOO_LARGE,
            message: "response too large",
        };
        let _ = e.encode_frame(id, out);
    }
}

fn encode_failure(out: &mut Vec<u8>, id: u64, f: &Failure) {
    encode(
        out,
        id,
        &Response::Error {
            code: error_code(f.kind),
            message: &f.message,
        },
    );
}

/// Answers a connection over the per-core connection limit, then it closes.
pub fn refuse(out: &Outbox, f: &Failure) {
    let mut b = Vec::new();
    encode_failure(&mut b, 0, f);
    out.push_raw(&b);
}

/// Reads frames until EOF, a fatal error, or shutdown.
pub async fn read_loop<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    mut reader: R,
    out: &Rc<Outbox>,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
) {
    let limits = limits(shard);
    let session = Session::default();
    let max_inflight = usize::try_from(shard.config.limits.max_inflight_per_connection).unwrap_or(usize::MAX);
    let mut dec = FrameDecoder::new(limits.max_frame);
    let mut msg = String::new();
    loop {
        // Serve every complete frame buffered.
        loop {
            if !out.room(max_inflight).await {
                return;
            }
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    // Fatal: the framing is lost. Answer once and close.
                    let mut b = Vec::new();
                    encode(&mut b, 0, &Response::from_error(&e, &mut msg, 1024));
                    out.push_raw(&b);
                    return;
                }
            };
            let id = frame.header.request_id;
            let opcode = frame.header.opcode;
            if matches!(opcode, auth::AUTH | auth::PEER_HELLO | auth::PEER_PROOF) {
                // Served in order, before the next frame: what follows on
                // the connection may depend on the outcome.
                let request = !frame.header.flags.is_response() && !frame.header.flags.is_error();
                let body = frame.body.to_vec();
                let mut b = Vec::new();
                let keep = authenticate(shard, &session, opcode, id, request, &body, remote, &limits, &mut b).await;
                out.begin();
                out.finish_unordered(&b);
                if !keep {
                    return;
                }
                continue;
            }
            // Node-to-node opcodes share the port and the framing; only the
            // decoder and the executor differ.
            let decoded = if PeerOpcode::from_u8(opcode).is_some() {
                PeerRequest::decode(&frame, &limits).map(|req| {
                    match session.may_serve_peer_op(shard, req.from, remote) {
                        Ok(()) => peer_start(shard, out, id, &req),
                        Err(m) => refused(out, opcode, id, ErrorCode::AUTH_REQUIRED, &m),
                    }
                })
            } else {
                Request::decode(&frame, &limits).map(|req| match client_allowed(shard, &session, &req) {
                    Ok(()) => start(shard, out, id, req, local),
                    Err((code, m)) => refused(out, opcode, id, code, &m),
                })
            };
            let fut = match decoded {
                Ok(fut) => fut,
                Err(e) => {
                    let mut b = Vec::new();
                    encode(&mut b, id, &Response::from_error(&e, &mut msg, 1024));
                    out.begin();
                    out.finish_unordered(&b);
                    if e.is_fatal() {
                        return;
                    }
                    continue;
                }
            };
            if super::run_inline_or_spawn(shard, fut).await.is_err() {
                let mut b = Vec::new();
                encode_failure(
                    &mut b,
                    id,
                    &Failure::new(FailureKind::Internal, "cannot schedule the request"),
                );
                out.finish_unordered(&b);
            }
        }
        let partial = dec.buffered() > 0;
        let buf = dec.spare(READ_CHUNK);
        match read_some(shard, &mut reader, buf, partial).await {
            Ok(Some(0)) => {
                dec.commit(0);
                if dec.buffered() > 0 {
                    let mut b = Vec::new();
                    let detail = format!(
                        "connection closed inside a frame ({} bytes of it received)",
                        dec.buffered()
                    );
                    encode(
                        &mut b,
                        0,
                        &Response::Error {
                            code: ErrorCode::MALFORMED,
                            message: &detail,
                        },
                    );
                    out.push_raw(&b);
                }
                return;
            }
            Ok(Some(n)) => dec.commit(n),
            Ok(None) => return, // shutdown: stop reading, in-flight requests finish
            Err(e) => {
                dec.commit(0);
                if e.kind() == std::io::ErrorKind::TimedOut {
                    let mut b = Vec::new();
                    encode(
                        &mut b,
                        0,
                        &Response::Error {
                            code: ErrorCode::TIMEOUT,
                            message: "request half-sent for too long; closing",
                        },
                    );
                    out.push_raw(&b);
                }
                return;
            }
        }
    }
}

/// Whether the connection may run a client request: anything without a
/// users file; else PING, or an authenticated user's permitted requests (a
/// node that proved the cluster secret may run anything).
fn client_allowed(shard: &Shard, session: &Session, req: &Request<'_>) -> Result<(), (ErrorCode, String)> {
    if !shard.security.requires_auth() || session.is_peer() || matches!(req.op, Op::Ping) {
        return Ok(());
    }
    match session.user() {
        None => Err((
            ErrorCode::AUTH_REQUIRED,
            "authentication required: send AUTH (user, password) first".to_owned(),
        )),
        Some(u) => super::auth::authorize(&u, req).map_err(|m| (ErrorCode::FORBIDDEN, m)),
    }
}

/// A refused request's future: its ERROR answer, as the client range
/// answers (the ERROR response opcode) or, for a node-to-node request, with
/// the request's opcode (node-to-node callers expect their opcode back).
fn refused(
    out: &Rc<Outbox>,
    opcode: u8,
    id: u64,
    code: ErrorCode,
    message: &str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    out.begin();
    let mut b = Vec::new();
    if PeerOpcode::from_u8(opcode).is_some() {
        error_frame(&mut b, opcode, id, code, message);
    } else {
        encode(&mut b, id, &Response::Error { code, message });
    }
    let o = out.clone();
    Box::pin(async move { o.finish_unordered(&b) })
}

fn error_frame(b: &mut Vec<u8>, opcode: u8, id: u64, code: ErrorCode, message: &str) {
    let r = Response::Error { code, message };
    // Only a body over 4 GiB fails; an error message is far below that.
    let _ = corekv_net::frame::encode_frame(b, opcode, Flags::RESPONSE.with(Flags::ERROR), id, |o| r.encode(o));
}

/// Serves AUTH, PEER_HELLO or PEER_PROOF into `b`; false when the
/// connection must close (a failed node handshake: the peer is not
/// trusted with the rest of the stream).
#[allow(clippy::too_many_arguments)] // one call site, in the read loop
async fn authenticate(
    shard: &Shard,
    session: &Session,
    opcode: u8,
    id: u64,
    request: bool,
    body: &[u8],
    remote: Option<SocketAddr>,
    limits: &Limits,
    b: &mut Vec<u8>,
) -> bool {
    if !request {
        let e = Response::Error {
            code: ErrorCode::MALFORMED,
            message: "expected a request",
        };
        if opcode == auth::AUTH {
            encode(b, id, &e);
        } else {
            error_frame(b, opcode, id, ErrorCode::MALFORMED, "expected a request");
        }
        return true;
    }
    match opcode {
        auth::AUTH => {
            let req = match auth::AuthRequest::decode_body(body, limits) {
                Ok(r) => r,
                Err(e) => {
                    encode(b, id, &Response::from_error(&e, &mut String::new(), 1024));
                    return true;
                }
            };
            match session.login(shard, req.user, req.password, remote).await {
                Ok(_) => encode(b, id, &Response::Ok),
                Err(e) => {
                    let m = match e {
                        LoginError::NoUsers => {
                            "AUTH called but this node has no users (security.users_file is not set)"
                        }
                        LoginError::Throttled => "too many failed authentications on this node; try again later",
                        LoginError::Wrong => "invalid username-password pair",
                    };
                    encode(
                        b,
                        id,
                        &Response::Error {
                            code: ErrorCode::AUTH_FAILED,
                            message: m,
                        },
                    );
                }
            }
            true
        }
        auth::PEER_HELLO => {
            let hello = match auth::PeerHello::decode_body(body, limits) {
                Ok(h) => h,
                Err(e) => {
                    error_frame(b, opcode, id, ErrorCode::MALFORMED, &e.to_string());
                    return false;
                }
            };
            match session.peer_hello(shard, &hello) {
                Ok(ch) => {
                    if ch.encode_frame(id, b).is_err() {
                        error_frame(b, opcode, id, ErrorCode::INTERNAL, "cannot encode the challenge");
                        return false;
                    }
                    true
                }
                Err(m) => {
                    error_frame(b, opcode, id, ErrorCode::AUTH_FAILED, &m);
                    false
                }
            }
        }
        _ => {
            let checked = auth::PeerProof::decode_body(body)
                .map_err(|e| e.to_string())
                .and_then(|p| session.peer_proof(shard, &p, remote));
            match checked {
                Ok(()) => {
                    let _ = corekv_net::frame::encode_frame(b, opcode, Flags::RESPONSE, id, |_| {});
                    true
                }
                Err(m) => {
                    error_frame(b, opcode, id, ErrorCode::AUTH_FAILED, &m);
                    false
                }
            }
        }
    }
}

/// What a request becomes once its borrowed bytes are copied out (the
/// HTTP port builds the same jobs, `server::http`).
pub(crate) enum Job {
    /// One command on one core; the opcode picks how its reply is encoded.
    One {
        core: usize,
        cmd: Cmd,
        op: Kind,
    },
    MGet(Vec<Key>),
    MPut {
        entries: Vec<(Key, Vec<u8>)>,
        expiry_ms: u64,
    },
    Scan {
        start: u64,
        end: u64,
        cursor: Vec<u8>,
        limit: usize,
    },
    List {
        prefix: Vec<u8>,
        cursor: Vec<u8>,
        limit: usize,
    },
    Ping,
    Ring,
    /// Cluster mode: coordinated commands run concurrently, one per key,
    /// answered as one MGET (VALUES) or MPUT (OK).
    Cluster(Vec<(usize, Cmd)>, Kind),
}

/// How a single-command reply is encoded.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Get,
    Write,
    Delete,
    Integer,
    Expire,
    ClusterGet,
    ClusterExists,
    ClusterWrite,
    ClusterVersions,
    /// TTL in cluster mode: the newest live sibling's remaining time.
    ClusterTtl,
    /// CAS_VALUE / SERIAL_GET: a [`Reply::Cas`], or (single node, serial
    /// read) a [`Reply::Value`], as CAS_RESULT.
    Cas,
    /// INCR in cluster mode: a [`Reply::Cas`] as INTEGER.
    ClusterIncr,
}

fn expiry(ttl_ms: u64) -> u64 {
    if ttl_ms == 0 {
        0
    } else {
        now_ms().saturating_add(ttl_ms)
    }
}

fn key(k: &[u8]) -> Result<Key, Failure> {
    if k.is_empty() {
        return Err(Failure::new(FailureKind::Invalid, "empty key"));
    }
    Ok(Key::new(k))
}

pub(crate) fn job(shard: &Shard, op: &Op<'_>) -> Result<Job, Failure> {
    let one = |k: &[u8], cmd: fn(Key) -> Cmd, op: Kind| -> Result<Job, Failure> {
        let k = key(k)?;
        Ok(Job::One {
            core: shard.core_of(k.token),
            cmd: cmd(k),
            op,
        })
    };
    Ok(match *op {
        Op::Get { key: k } => one(k, Cmd::Get, Kind::Get)?,
        Op::Exists { key: k } => one(k, |k| Cmd::Exists(vec![k]), Kind::Integer)?,
        Op::Delete { key: k } => one(k, |k| Cmd::Delete(vec![k]), Kind::Delete)?,
        Op::Ttl { key: k } => one(k, Cmd::Ttl, Kind::Integer)?,
        Op::Put {
            key: k,
            value,
            ttl_ms,
            condition,
        } => {
            let k = key(k)?;
            Job::One {
                core: shard.core_of(k.token),
                cmd: Cmd::Put {
                    key: k,
                    value: value.to_vec(),
                    expiry_ms: expiry(ttl_ms),
                    cond: condition,
                },
                op: Kind::Write,
            }
        }
        Op::Expire { key: k, ttl_ms } => {
            let k = key(k)?;
            Job::One {
                core: shard.core_of(k.token),
                cmd: Cmd::Expire {
                    key: k,
                    action: if ttl_ms == 0 {
                        ExpireAction::Persist
                    } else {
                        ExpireAction::At(expiry(ttl_ms))
                    },
                    cond: None,
                },
                op: Kind::Expire,
            }
        }
        Op::Incr { key: k, delta } => {
            let k = key(k)?;
            Job::One {
                core: shard.core_of(k.token),
                cmd: Cmd::Incr { key: k, delta },
                op: Kind::Integer,
            }
        }
        Op::Cas {
            key: k,
            expected,
            value,
            ttl_ms,
        } => {
            let k = key(k)?;
            Job::One {
                core: shard.core_of(k.token),
                cmd: Cmd::Cas {
                    key: k,
                    expected: expected.to_vec(),
                    value: value.to_vec(),
                    expiry_ms: expiry(ttl_ms),
                },
                op: Kind::Write,
            }
        }
        Op::MGet { keys } => Job::MGet(keys.iter().map(key).collect::<Result<_, _>>()?),
        Op::MPut { entries, ttl_ms } => Job::MPut {
            entries: entries
                .iter()
                .map(|kv: KeyValue<'_>| Ok((key(kv.key)?, kv.value.to_vec())))
                .collect::<Result<_, Failure>>()?,
            expiry_ms: expiry(ttl_ms),
        },
        Op::Scan {
            start,
            end,
            cursor,
            limit,
        } => Job::Scan {
            start,
            end,
            cursor: cursor.to_vec(),
            limit: page_limit(limit),
        },
        Op::List { prefix, cursor, limit } => Job::List {
            prefix: prefix.to_vec(),
            cursor: cursor.to_vec(),
            limit: page_limit(limit),
        },
        Op::CasValue { key: k, expected, new } => {
            let k = key(k)?;
            Job::One {
                core: shard.core_of(k.token),
                cmd: Cmd::CasValue {
                    key: k,
                    expected: expected.map(<[u8]>::to_vec),
                    new: new.map(<[u8]>::to_vec),
                },
                op: Kind::Cas,
            }
        }
        // One core owns the key: a plain read is already linearizable.
        Op::SerialGet { key: k } => one(k, Cmd::Get, Kind::Cas)?,
        Op::Ping => Job::Ping,
        Op::Ring => Job::Ring,
        // A single node keeps one version per key, without causal contexts.
        Op::GetVersions { .. } | Op::PutVersioned { .. } | Op::DeleteVersioned { .. } => {
            return Err(Failure::new(
                FailureKind::Invalid,
                "GET_VERSIONS/PUT_VERSIONED/DELETE_VERSIONED need cluster mode (cluster.seeds)",
            ))
        }
    })
}

fn page_limit(limit: u32) -> usize {
    let l = if limit == 0 { MAX_PAGE } else { limit.min(MAX_PAGE) };
    l as usize
}

/// A node-to-node request's future (owning its data).
fn peer_start(
    shard: &Rc<Shard>,
    out: &Rc<Outbox>,
    id: u64,
    req: &PeerRequest<'_>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    out.begin();
    let job = crate::cluster::inbound::PeerJob::from_request(req);
    let (s, o) = (shard.clone(), out.clone());
    Box::pin(async move {
        let mut b = Vec::new();
        crate::cluster::handle_peer_request(&s, job, id, &mut b).await;
        o.finish_unordered(&b);
    })
}

/// The coordinator's level for a request's consistency.
pub fn consistency(c: WireConsistency) -> Result<crate::coordinator::Consistency, Failure> {
    use crate::coordinator::Consistency as C;
    Ok(match c {
        WireConsistency::One | WireConsistency::Count(1) => C::One,
        WireConsistency::Count(2) => C::Two,
        WireConsistency::Quorum => C::Quorum,
        WireConsistency::All => C::All,
        WireConsistency::LocalQuorum => C::LocalQuorum,
        other => {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!("consistency {other:?} is not supported (ONE, TWO, QUORUM, ALL, LOCAL_QUORUM)"),
            ))
        }
    })
}

/// A request in cluster mode: coordinated on the key's owning core.
pub(crate) fn cluster_job(shard: &Shard, req: &Request<'_>) -> Result<Job, Failure> {
    use crate::cluster::ClusterCmd;
    let level = consistency(req.consistency)?;
    let sloppy = req.sloppy_quorum;
    let timeout_ms = u64::from(req.timeout_ms);
    let get = |k: Key| {
        Cmd::Cluster(ClusterCmd::Get {
            key: k,
            consistency: level,
            timeout_ms,
        })
    };
    let write = |k: Key, value: Option<Vec<u8>>, expiry_ms: u64| {
        Cmd::Cluster(ClusterCmd::Write {
            key: k,
            value,
            expiry_ms,
            context: None,
            consistency: level,
            timeout_ms,
            forwarded: false,
            sloppy,
        })
    };
    let one = |k: Key, cmd: Cmd, op: Kind| Job::One {
        core: shard.core_of(k.token),
        cmd,
        op,
    };
    Ok(match req.op {
        Op::Get { key: k } => {
            let k = key(k)?;
            one(k.clone(), get(k), Kind::ClusterGet)
        }
        Op::Exists { key: k } => {
            let k = key(k)?;
            one(k.clone(), get(k), Kind::ClusterExists)
        }
        Op::Put {
            key: k,
            value,
            ttl_ms,
            condition,
        } => {
            if condition != crate::store::Cond::Always {
                return Err(not_in_cluster_mode("PUT with NX/XX"));
            }
            let k = key(k)?;
            one(
                k.clone(),
                write(k, Some(value.to_vec()), expiry(ttl_ms)),
                Kind::ClusterWrite,
            )
        }
        Op::Delete { key: k } => {
            let k = key(k)?;
            one(k.clone(), write(k, None, 0), Kind::ClusterWrite)
        }
        Op::MGet { keys } => Job::Cluster(
            keys.iter()
                .map(|k| key(k).map(|k| (shard.core_of(k.token), get(k))))
                .collect::<Result<_, _>>()?,
            Kind::ClusterGet,
        ),
        Op::MPut { entries, ttl_ms } => Job::Cluster(
            entries
                .iter()
                .map(|kv: KeyValue<'_>| {
                    key(kv.key).map(|k| {
                        (
                            shard.core_of(k.token),
                            write(k, Some(kv.value.to_vec()), expiry(ttl_ms)),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Kind::ClusterWrite,
        ),
        Op::GetVersions { key: k } => {
            let k = key(k)?;
            one(k.clone(), get(k), Kind::ClusterVersions)
        }
        Op::PutVersioned {
            key: k,
            value,
            ttl_ms,
            context,
        } => {
            let k = key(k)?;
            let cmd = Cmd::Cluster(ClusterCmd::Write {
                key: k.clone(),
                value: Some(value.to_vec()),
                expiry_ms: expiry(ttl_ms),
                context: Some(context.to_vec()),
                consistency: level,
                timeout_ms,
                forwarded: false,
                sloppy,
            });
            one(k, cmd, Kind::ClusterWrite)
        }
        Op::DeleteVersioned { key: k, context } => {
            let k = key(k)?;
            let cmd = Cmd::Cluster(ClusterCmd::Write {
                key: k.clone(),
                value: None,
                expiry_ms: 0,
                context: Some(context.to_vec()),
                consistency: level,
                timeout_ms,
                forwarded: false,
                sloppy,
            });
            one(k, cmd, Kind::ClusterWrite)
        }
        Op::Ping => Job::Ping,
        Op::Ring => Job::Ring,
        Op::Scan { .. } => return Err(not_in_cluster_mode("SCAN")),
        Op::List { .. } => return Err(not_in_cluster_mode("LIST")),
        Op::Expire { key: k, ttl_ms } => {
            let k = key(k)?;
            let cmd = Cmd::Cluster(ClusterCmd::Expire {
                key: k.clone(),
                expiry_ms: expiry(ttl_ms),
                consistency: level,
                timeout_ms,
            });
            one(k, cmd, Kind::Expire)
        }
        Op::Ttl { key: k } => {
            let k = key(k)?;
            one(k.clone(), get(k), Kind::ClusterTtl)
        }
        Op::Incr { key: k, delta } => {
            let k = key(k)?;
            let cmd = Cmd::Cluster(ClusterCmd::Cas {
                key: k.clone(),
                command: crate::coordinator::CasCommand::Add { delta },
                timeout_ms,
            });
            one(k, cmd, Kind::ClusterIncr)
        }
        Op::Cas { .. } => {
            return Err(Failure::new(
                FailureKind::Invalid,
                "CAS on the version is not available in cluster mode; use CAS_VALUE \
                 (compare-and-set on the value, linearizable through Paxos)",
            ))
        }
        Op::CasValue { key: k, expected, new } => {
            let too_large = [expected, new].into_iter().flatten().map(<[u8]>::len).max();
            if let Some(len) = too_large.filter(|&l| l > crate::coordinator::MAX_CAS_VALUE) {
                return Err(Failure::new(
                    FailureKind::TooLarge,
                    format!(
                        "CAS value of {len} bytes over the most, {}",
                        crate::coordinator::MAX_CAS_VALUE
                    ),
                ));
            }
            let k = key(k)?;
            let cmd = Cmd::Cluster(ClusterCmd::Cas {
                key: k.clone(),
                command: crate::coordinator::CasCommand::Cas {
                    expected: expected.map(<[u8]>::to_vec),
                    new: new.map(<[u8]>::to_vec),
                },
                timeout_ms,
            });
            one(k, cmd, Kind::Cas)
        }
        Op::SerialGet { key: k } => {
            let k = key(k)?;
            let cmd = Cmd::Cluster(ClusterCmd::Cas {
                key: k.clone(),
                command: crate::coordinator::CasCommand::Read,
                timeout_ms,
            });
            one(k, cmd, Kind::Cas)
        }
    })
}

/// The new value of a cluster INCR (a Paxos add), or why it was refused.
pub fn counter_of(r: &Reply) -> Result<i64, Failure> {
    match r {
        Reply::Cas { applied: true, value } => value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
            .ok_or_else(|| Failure::new(FailureKind::Internal, "INCR chose a value that is not an integer")),
        Reply::Cas { applied: false, .. } => Err(Failure::new(
            FailureKind::NotInteger,
            "value is not an integer or the increment would overflow",
        )),
        Reply::Failed(f) => Err(f.clone()),
        other => Err(Failure::new(
            FailureKind::Internal,
            format!("unexpected reply {other:?}"),
        )),
    }
}

/// The error for an operation cluster mode does not offer yet.
pub fn not_in_cluster_mode(what: &str) -> Failure {
    Failure::new(
        FailureKind::Invalid,
        format!("{what} is not available in cluster mode yet (it works on a single node: cluster.seeds empty)"),
    )
}

/// Turns a decoded request into the future that answers it (owning its data).
fn start(
    shard: &Rc<Shard>,
    out: &Rc<Outbox>,
    id: u64,
    req: Request<'_>,
    local: Option<SocketAddr>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    out.begin();
    let opcode = req.op.opcode();
    let info = crate::metrics::RequestInfo::new(
        crate::metrics::Proto::Native,
        crate::metrics::OpKind::of_opcode(opcode),
        crate::metrics::Level::of_request(shard.cluster.is_some(), opcode, req.consistency),
        first_key_len(&req.op),
    );
    let job = if shard.cluster.is_some() {
        cluster_job(shard, &req)
    } else {
        job(shard, &req.op)
    };
    let (s, o) = (shard.clone(), out.clone());
    let timeout = Duration::from_millis(u64::from(req.timeout_ms));
    Box::pin(async move {
        let mut b = Vec::new();
        match job {
            Err(f) => encode_failure(&mut b, id, &f),
            Ok(job) => {
                let mut rb = Vec::new();
                let done = if timeout.is_zero() {
                    run(&s, job, id, &mut rb, local).await;
                    true
                } else {
                    let r = run(&s, job, id, &mut rb, local);
                    futures::pin_mut!(r);
                    let t = glommio::timer::sleep(timeout);
                    futures::pin_mut!(t);
                    matches!(futures::future::select(r, t).await, futures::future::Either::Left(_))
                };
                if done {
                    b = rb;
                } else {
                    let m = format!(
                        "no answer within {} ms (the write may still apply)",
                        timeout.as_millis()
                    );
                    encode(
                        &mut b,
                        id,
                        &Response::Error {
                            code: ErrorCode::TIMEOUT,
                            message: &m,
                        },
                    );
                }
            }
        }
        // Byte 3 of a frame is its opcode.
        let ok = b.get(3) != Some(&(ResponseOpcode::Error as u8));
        crate::metrics::finish(&s, &info, ok);
        o.finish_unordered(&b);
    })
}

/// Length of a request's key (its first, for several), for the
/// slow-request log.
pub(crate) fn first_key_len(op: &Op<'_>) -> usize {
    match *op {
        Op::Get { key }
        | Op::Put { key, .. }
        | Op::Delete { key }
        | Op::Exists { key }
        | Op::Expire { key, .. }
        | Op::Ttl { key }
        | Op::Incr { key, .. }
        | Op::Cas { key, .. }
        | Op::GetVersions { key }
        | Op::PutVersioned { key, .. }
        | Op::DeleteVersioned { key, .. }
        | Op::CasValue { key, .. }
        | Op::SerialGet { key } => key.len(),
        Op::MGet { keys } => keys.iter().next().map_or(0, <[u8]>::len),
        Op::MPut { entries, .. } => entries.iter().next().map_or(0, |kv| kv.key.len()),
        Op::List { prefix, .. } => prefix.len(),
        Op::Scan { .. } | Op::Ping | Op::Ring => 0,
    }
}

/// The sibling a single-value read returns (the newest) with the context.
pub(crate) fn newest(v: Option<&crate::cluster::Versions>) -> Option<(&crate::cluster::Sibling, &[u8])> {
    let v = v?;
    v.siblings.first().map(|s| (s, v.context.as_slice()))
}

/// TTL's answer for the value a GET returns: -2 none, -1 no expiry, else
/// the milliseconds left (at least 1: it has not expired yet).
pub(crate) fn ttl_of(s: Option<&crate::cluster::Sibling>) -> i64 {
    match s {
        None => -2,
        Some(s) if s.expiry_ms == 0 => -1,
        Some(s) => i64::try_from(s.expiry_ms.saturating_sub(now_ms()).max(1)).unwrap_or(i64::MAX),
    }
}

fn sibling_ref<'a>(s: &'a crate::cluster::Sibling, context: &'a [u8]) -> ValueRef<'a> {
    let now = now_ms();
    ValueRef {
        value: &s.value,
        meta: context,
        ttl_ms: if s.expiry_ms == 0 {
            0
        } else {
            s.expiry_ms.saturating_sub(now).max(1)
        },
    }
}

fn value_ref(v: &Value) -> ValueRef<'_> {
    let now = now_ms();
    ValueRef {
        value: &v.value,
        meta: &v.meta,
        ttl_ms: if v.expiry_ms == 0 {
            0
        } else {
            v.expiry_ms.saturating_sub(now).max(1)
        },
    }
}

fn unexpected(b: &mut Vec<u8>, id: u64, r: &Reply) {
    encode_failure(
        b,
        id,
        &Failure::new(FailureKind::Internal, format!("unexpected reply {r:?}")),
    );
}

async fn run(shard: &Rc<Shard>, job: Job, id: u64, b: &mut Vec<u8>, local: Option<SocketAddr>) {
    match job {
        Job::One { core, cmd, op } => {
            let r = shard.exec(core, cmd).await;
            match (op, &r) {
                (_, Reply::Failed(f)) => encode_failure(b, id, f),
                (Kind::Get, Reply::Value(Some(v))) => encode(b, id, &Response::Value(value_ref(v))),
                (Kind::Get, Reply::Value(None)) => encode(b, id, &Response::NotFound),
                (Kind::Write, Reply::Bool(true)) | (Kind::Delete, Reply::Int(_)) => encode(b, id, &Response::Ok),
                (Kind::Write, Reply::Bool(false)) => encode(
                    b,
                    id,
                    &Response::Error {
                        code: ErrorCode::CONDITION_FAILED,
                        message: "condition not met",
                    },
                ),
                (Kind::Integer, Reply::Int(n)) => encode(b, id, &Response::Integer(*n)),
                (Kind::Expire, Reply::Bool(x)) => encode(b, id, &Response::Integer(i64::from(*x))),
                (Kind::ClusterGet, Reply::Versions(v)) => match newest(v.as_ref()) {
                    Some((s, ctx)) => encode(b, id, &Response::Value(sibling_ref(s, ctx))),
                    None => encode(b, id, &Response::NotFound),
                },
                (Kind::ClusterTtl, Reply::Versions(v)) => {
                    encode(b, id, &Response::Integer(ttl_of(newest(v.as_ref()).map(|(s, _)| s))))
                }
                (Kind::ClusterExists, Reply::Versions(v)) => {
                    encode(b, id, &Response::Integer(i64::from(newest(v.as_ref()).is_some())))
                }
                (Kind::ClusterWrite, Reply::Ok) => encode(b, id, &Response::Ok),
                (Kind::Cas, Reply::Cas { applied, value }) => encode(
                    b,
                    id,
                    &Response::CasResult {
                        applied: *applied,
                        value: value.as_deref(),
                    },
                ),
                (Kind::ClusterIncr, Reply::Cas { .. }) => match counter_of(&r) {
                    Ok(n) => encode(b, id, &Response::Integer(n)),
                    Err(f) => encode_failure(b, id, &f),
                },
                (Kind::Cas, Reply::Value(v)) => encode(
                    b,
                    id,
                    &Response::CasResult {
                        applied: true,
                        value: v.as_ref().map(|v| v.value.as_slice()),
                    },
                ),
                (Kind::ClusterVersions, Reply::Versions(None)) => encode(b, id, &Response::NotFound),
                (Kind::ClusterVersions, Reply::Versions(Some(v))) => {
                    let sibs: Vec<SiblingRef<'_>> = v
                        .siblings
                        .iter()
                        .map(|s| SiblingRef {
                            value: &s.value,
                            expiry_ms: s.expiry_ms,
                        })
                        .collect();
                    encode(
                        b,
                        id,
                        &Response::Versions {
                            context: &v.context,
                            siblings: List::Slice(&sibs),
                        },
                    )
                }
                _ => unexpected(b, id, &r),
            }
        }
        Job::Cluster(cmds, kind) => {
            let replies = futures::future::join_all(cmds.into_iter().map(|(core, cmd)| shard.exec(core, cmd))).await;
            if let Some(f) = replies.iter().find_map(|r| match r {
                Reply::Failed(f) => Some(f),
                _ => None,
            }) {
                encode_failure(b, id, f);
            } else if matches!(kind, Kind::ClusterWrite) {
                encode(b, id, &Response::Ok);
            } else {
                let vals: Vec<Option<ValueRef<'_>>> = replies
                    .iter()
                    .map(|r| match r {
                        Reply::Versions(v) => newest(v.as_ref()).map(|(s, ctx)| sibling_ref(s, ctx)),
                        _ => None,
                    })
                    .collect();
                encode(b, id, &Response::Values(List::Slice(&vals)));
            }
        }
        Job::MGet(keys) => match mget(shard, keys).await {
            Ok(vals) => {
                let refs: Vec<Option<ValueRef<'_>>> = vals.iter().map(|v| v.as_ref().map(value_ref)).collect();
                encode(b, id, &Response::Values(List::Slice(&refs)));
            }
            Err(f) => encode_failure(b, id, &f),
        },
        Job::MPut { entries, expiry_ms } => match mput(shard, entries, expiry_ms).await {
            Ok(()) => encode(b, id, &Response::Ok),
            Err(f) => encode_failure(b, id, &f),
        },
        Job::Scan {
            start,
            end,
            cursor,
            limit,
        } => match scan_tokens(shard, start, end, &cursor, limit).await {
            Ok((entries, next)) => encode_page(b, id, &entries, &next),
            Err(f) => encode_failure(b, id, &f),
        },
        Job::List { prefix, cursor, limit } => match list(shard, &prefix, &cursor, limit).await {
            Ok((entries, next)) => encode_page(b, id, &entries, &next),
            Err(f) => encode_failure(b, id, &f),
        },
        Job::Ping => encode(b, id, &Response::Ok),
        Job::Ring => {
            let (ring, epoch) = shard.current_ring();
            let ports = shard.cluster.as_ref().map(|c| c.view().ports.clone());
            let listed: Vec<usize> = (0..ring.nodes().len())
                // A node believed down is left out, so a client routes its keys
                // to the next replica clockwise until it is back.
                .filter(|&n| ring.nodes()[n].status != crate::topology::NodeStatus::Down)
                .collect();
            let tokens: Vec<Vec<u64>> = listed.iter().map(|&n| ring.tokens_of(n)).collect();
            let own = advertised(&shard.config.node.listen, shard.config.ports.client, local);
            let nodes: Vec<Node<'_>> = listed
                .iter()
                .zip(&tokens)
                .map(|(&n, t)| {
                    let node = &ring.nodes()[n];
                    match &ports {
                        None => Node {
                            address: &own,
                            cores: u16::try_from(shard.cores).unwrap_or(u16::MAX),
                            shard_port: shard.config.ports.shard_base,
                            tokens: List::Slice(t),
                        },
                        Some(p) => {
                            let sp = p.get(&node.id);
                            Node {
                                address: &node.address,
                                cores: sp.map_or(1, |s| s.cores.max(1)),
                                shard_port: sp.map_or(0, |s| s.base),
                                tokens: List::Slice(t),
                            }
                        }
                    }
                })
                .collect();
            encode(
                b,
                id,
                &Response::Ring {
                    epoch,
                    nodes: List::Slice(&nodes),
                },
            );
        }
    }
}

fn encode_page(b: &mut Vec<u8>, id: u64, entries: &[crate::store::ScanEntry], next: &[u8]) {
    let kvs: Vec<KeyValue<'_>> = entries
        .iter()
        .map(|e| KeyValue {
            key: &e.key,
            value: &e.value,
        })
        .collect();
    encode(
        b,
        id,
        &Response::ScanPage {
            entries: List::Slice(&kvs),
            next_cursor: next,
        },
    );
}

/// Groups item indexes by owning core.
pub fn by_core(shard: &Shard, tokens: impl Iterator<Item = u64>) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, t) in tokens.enumerate() {
        let c = shard.core_of(t);
        match groups.iter_mut().find(|(gc, _)| *gc == c) {
            Some((_, v)) => v.push(i),
            None => groups.push((c, vec![i])),
        }
    }
    groups
}

/// Reads keys from their cores in parallel; values in request order.
pub async fn mget(shard: &Rc<Shard>, keys: Vec<Key>) -> Result<Vec<Option<Value>>, Failure> {
    let groups = by_core(shard, keys.iter().map(|k| k.token));
    let calls = groups.iter().map(|(c, idx)| {
        let ks = idx.iter().map(|&i| keys[i].clone()).collect();
        shard.exec(*c, Cmd::MGet(ks))
    });
    let replies = futures::future::join_all(calls).await;
    let mut out = vec![None; keys.len()];
    for ((_, idx), r) in groups.iter().zip(replies) {
        match r {
            Reply::Values(vs) => {
                for (&i, v) in idx.iter().zip(vs) {
                    out[i] = v;
                }
            }
            Reply::Failed(f) => return Err(f),
            other => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                ))
            }
        }
    }
    Ok(out)
}

/// Writes pairs, one atomic batch per core, the cores in parallel.
pub async fn mput(shard: &Rc<Shard>, entries: Vec<(Key, Vec<u8>)>, expiry_ms: u64) -> Result<(), Failure> {
    let groups = by_core(shard, entries.iter().map(|(k, _)| k.token));
    let calls = groups.iter().map(|(c, idx)| {
        let es = idx.iter().map(|&i| entries[i].clone()).collect();
        shard.exec(*c, Cmd::MPut { entries: es, expiry_ms })
    });
    for r in futures::future::join_all(calls).await {
        match r {
            Reply::Ok => {}
            Reply::Failed(f) => return Err(f),
            other => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                ))
            }
        }
    }
    Ok(())
}

/// Cursor layout: `segment u8 | token u64 BE | key` (resume after that key in
/// that segment) or `segment u8` alone (start of the segment). Segment 1 is
/// `[start, end or MAX]`, segment 2 the wrapped part `[0, end)`.
fn decode_cursor(c: &[u8]) -> Result<(u8, Option<Cursor>), Failure> {
    let bad = || Failure::new(FailureKind::Invalid, "malformed scan cursor");
    match c.split_first() {
        None => Ok((1, None)),
        Some((&seg, rest)) if seg == 1 || seg == 2 => {
            if rest.is_empty() {
                Ok((seg, None))
            } else {
                Ok((seg, Some(Cursor::decode(rest).map_err(|_| bad())?)))
            }
        }
        _ => Err(bad()),
    }
}

fn encode_cursor(seg: u8, c: &Cursor) -> Vec<u8> {
    let mut v = vec![seg];
    v.extend_from_slice(&c.encode());
    v
}

/// A page of tokens `[start, end)`, wrapping when `end <= start`.
pub(crate) async fn scan_tokens(
    shard: &Rc<Shard>,
    start: u64,
    end: u64,
    cursor: &[u8],
    limit: usize,
) -> Result<(Vec<crate::store::ScanEntry>, Vec<u8>), Failure> {
    let (seg, after) = decode_cursor(cursor)?;
    let wraps = end <= start;
    let (lo, hi) = match (seg, wraps) {
        (1, false) => (start, end - 1),
        (1, true) => (start, u64::MAX),
        (_, true) if end > 0 => (0, end - 1),
        _ => return Ok((Vec::new(), Vec::new())),
    };
    let cores = scan::all_cores(shard);
    let p = scan::page(shard, &cores, lo, hi, after, &[], limit).await?;
    let next = match p.next {
        Some(c) => encode_cursor(seg, &c),
        None if seg == 1 && wraps && end > 0 => vec![2],
        None => Vec::new(),
    };
    Ok((p.entries, next))
}

/// A page of keys starting with `prefix`. A prefix that holds a whole hash
/// tag (`{user1}...`) pins every match to one token, so one core answers.
pub(crate) async fn list(
    shard: &Rc<Shard>,
    prefix: &[u8],
    cursor: &[u8],
    limit: usize,
) -> Result<(Vec<crate::store::ScanEntry>, Vec<u8>), Failure> {
    let (_, after) = decode_cursor(cursor)?;
    // A complete hash tag inside the prefix is the first tag of every key
    // that has the prefix, so they all share its token.
    let tagged = crate::topology::hash_part(prefix) != prefix;
    let (lo, hi, cores) = if tagged {
        let t = token_of(prefix);
        (t, t, vec![shard.core_of(t)])
    } else {
        (0, u64::MAX, scan::all_cores(shard))
    };
    let p = scan::page(shard, &cores, lo, hi, after, prefix, limit).await?;
    let next = p.next.map(|c| encode_cursor(1, &c)).unwrap_or_default();
    Ok((p.entries, next))
}
