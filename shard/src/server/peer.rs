//! Outbound node-to-node connections of one core: a [`PeerPool`] sends
//! [`PeerRequest`]s to other nodes and returns their answers.
//!
//! ## Connections
//!
//! One TCP connection per peer address, opened on the first call and kept.
//! Requests are pipelined: any number of callers (up to `max_inflight`) have
//! a request on the wire at once, and each answer finds its caller by the
//! request id, in whatever order the peer answers. Per connection:
//!
//! - callers append whole encoded frames to an output buffer (a synchronous
//!   append on a single-threaded executor, so two frames never interleave);
//!   a writer task sends what accumulated in one `write_all`, so a burst of
//!   calls costs one syscall;
//! - a reader task splits the input into frames ([`FrameDecoder`], bounded by
//!   `limits.max_frame`) and hands each answer to its caller's oneshot.
//!
//! ## Failures (a dead or slow peer must not stall the caller)
//!
//! - Every call is bounded by its `timeout`, connect and queueing included:
//!   past it, [`Error::PeerTimeout`]. The caller's entry is removed at once,
//!   so a late answer is dropped silently and never reaches another call.
//! - A connect that fails or takes longer than `connect_timeout` fails every
//!   call waiting for it with [`Error::Peer`], and for `reconnect_backoff`
//!   after that, calls to the address fail at once without touching the
//!   network: a dead node costs nothing per request.
//! - A connection that breaks (EOF, I/O error, a frame or body that does not
//!   decode, a connection-level error report from the peer) fails every
//!   request in flight on it with [`Error::Peer`]; the next call opens a new
//!   one. A peer that cannot be decoded is not trusted with the rest of the
//!   stream, so one undecodable answer closes the connection.
//! - A peer that stops acknowledging bytes (a partition that drops packets)
//!   is cut by the kernel after [`UNACKED_TIMEOUT`] (TCP_USER_TIMEOUT), which
//!   turns a silent half-open connection into a broken one.
//! - An answer with the ERROR flag is [`PeerAnswer::Failed`]: the peer is
//!   fine, the request was not.
//! - With `max_inflight` requests outstanding on a connection, further calls
//!   wait for a slot, within their own timeout: a burst is smoothed rather
//!   than refused, and a peer too slow to free slots ends in
//!   [`Error::PeerTimeout`] like any slow answer.
//!
//! ## Source address
//!
//! With `source_ip`, the socket is bound to that address (port 0) before it
//! connects, so traffic between nodes on 127.0.0.x carries the sending
//! node's own address (tests partition nodes with iptables rules on
//! addresses). glommio's `TcpStream::connect` cannot bind first, so the
//! socket is made with `socket2`, bound, and connected in non-blocking mode
//! (the handshake starts, `EINPROGRESS`); the executor never blocks. The
//! socket then becomes a glommio stream, and the pool waits for the handshake
//! with a zero-length send: TCP's `sendmsg` waits for the connection to be
//! established, so glommio parks it on write readiness, which comes with the
//! SYN-ACK or with the failure (then the send returns the connect error).
//! Bound by `connect_timeout` like the rest.
//!
//! ## TLS
//!
//! With `tls` set (a node with `[tls]` in cluster mode), every connection
//! is TLS: after the TCP connect, the pool's handshake presents this node's
//! certificate and checks the peer's against the cluster's CA and the
//! peer's IP address (or `tls.server_name`). The cluster-secret handshake,
//! when configured, follows inside the TLS session. Both count against
//! `connect_timeout`. Without `tls` the stream is the plain socket
//! ([`PeerStream::Plain`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_engine::notify::Notify;
use corekv_net::frame::{Frame, FrameDecoder, HEADER_LEN};
use corekv_net::msg::peer::{Ballot, PaxosAnswer, PeerOpcode, PeerRequest, PeerResponse};
use corekv_net::msg::{ErrorCode, Limits, Response, ResponseOpcode};
use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::TaskQueueHandle;

use super::tls::PeerStream;
use crate::error::{Error, Result};
use crate::security::ClusterSecret;
use crate::tls::PeerTls;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;
/// An output buffer that grew past this (one huge request) is freed after
/// use rather than kept for the connection's lifetime.
const KEEP_WRITE_BUFFER: usize = 1 << 20;
/// How long sent bytes may go unacknowledged before the kernel drops the
/// connection (TCP_USER_TIMEOUT). Long enough for a busy peer's stalls,
/// short enough that a partitioned peer's connection does not linger.
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(10);

/// How a [`PeerPool`] connects and what it accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerPoolOptions {
    /// Local address to send from (bound before connecting); `None` lets the
    /// kernel choose.
    pub source_ip: Option<IpAddr>,
    /// The longest a connect may take (default 1 s).
    pub connect_timeout: Duration,
    /// Limits on the answers received (frame size, lengths, counts); also
    /// bounds the size of a request sent.
    pub limits: Limits,
    /// Most requests outstanding on one connection (default 1024; 0 is taken
    /// as 1); more calls wait for a slot within their timeout.
    pub max_inflight: usize,
    /// How long calls to an address fail fast after a failed connect
    /// (default 200 ms).
    pub reconnect_backoff: Duration,
    /// The cluster secret: when set, every connection starts with the
    /// PEER_HELLO / PEER_PROOF handshake (docs/protocol.md,
    /// "Authentication"), within `connect_timeout`, before any request.
    pub secret: Option<ClusterSecret>,
    /// This node's id, sent in the handshake (bound into both MACs).
    pub node_id: String,
    /// TLS to every peer (mutual: this node presents its certificate).
    pub tls: Option<PeerTls>,
}

impl Default for PeerPoolOptions {
    fn default() -> Self {
        PeerPoolOptions {
            source_ip: None,
            connect_timeout: Duration::from_secs(1),
            limits: Limits::default(),
            max_inflight: 1024,
            reconnect_backoff: Duration::from_millis(200),
            secret: None,
            node_id: String::new(),
            tls: None,
        }
    }
}

/// Counters of a pool's life, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerPoolStats {
    /// Connects attempted.
    pub connects: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Calls refused without trying, inside a reconnect backoff.
    pub fast_failures: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Established connections that broke.
    pub broken: u64,
}

/// A record of a range page, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedRangeEntry {
    /// Token.
    pub token: u64,
    /// Key.
    pub key: Vec<u8>,
    /// The record (the node's format).
    pub record: Vec<u8>,
}

/// An acceptor's Paxos answer, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnedPaxosAnswer {
    /// Promised; with the highest-ballot proposal accepted before, if any
    /// (its ballot and value, `None` for the empty register).
    Promise {
        /// What was accepted before.
        accepted: Option<(Ballot, Option<Vec<u8>>)>,
    },
    /// The proposal was accepted.
    Accepted,
    /// Refused: a higher ballot was promised.
    Nack {
        /// The ballot promised instead.
        promised: Ballot,
    },
    /// The commit was applied.
    Committed,
}

/// A peer's answer, owned: the borrowed [`PeerResponse`] cannot outlive the
/// receive buffer it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// A mutation is durable on the replica.
    Ack,
    /// A replica's record of a key (`None`: it has none, or only the digest
    /// was asked for) and its digest.
    Record {
        /// The record.
        record: Option<Vec<u8>>,
        /// The record's digest (0 when absent).
        digest: u64,
    },
    /// An acceptor's answer about `ballot`.
    Paxos {
        /// The ballot the answer is about.
        ballot: Ballot,
        /// The answer.
        answer: OwnedPaxosAnswer,
    },
    /// A Merkle tree's leaf hashes, in token order.
    Merkle {
        /// The leaves.
        leaves: Vec<u64>,
    },
    /// A page of records and the cursor of the next (empty: done).
    RangePage {
        /// Records in (token, key) order.
        entries: Vec<OwnedRangeEntry>,
        /// Where the next page starts.
        next_cursor: Vec<u8>,
    },
    /// The peer's gossip answer (`membership::wire` bytes).
    Gossip {
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// A coordinated write's outcome (`cluster` module bytes).
    Coordinated {
        /// The encoded outcome.
        payload: Vec<u8>,
    },
    /// An operator command's report.
    Report {
        /// The text.
        text: Vec<u8>,
    },
    /// Records of a RESTORE written.
    Restored {
        /// How many.
        records: u64,
    },
    /// A chunk of a snapshot file.
    SnapshotChunk {
        /// The whole file's size.
        file_size: u64,
        /// The bytes.
        data: Vec<u8>,
        /// CRC32C of `data`, as the sender computed it.
        crc32c: u32,
    },
    /// The peer answered with an ERROR frame: it is alive, the request failed.
    Failed {
        /// What kind of failure.
        code: ErrorCode,
        /// The peer's detail.
        message: String,
    },
}

impl PeerAnswer {
    fn from_response(r: PeerResponse<'_>) -> PeerAnswer {
        match r {
            PeerResponse::Ack => PeerAnswer::Ack,
            PeerResponse::Record { record, digest } => PeerAnswer::Record {
                record: record.map(<[u8]>::to_vec),
                digest,
            },
            PeerResponse::Paxos { ballot, answer } => PeerAnswer::Paxos {
                ballot,
                answer: match answer {
                    PaxosAnswer::Promise { accepted } => OwnedPaxosAnswer::Promise {
                        accepted: accepted.map(|(b, v)| (b, v.map(<[u8]>::to_vec))),
                    },
                    PaxosAnswer::Accepted => OwnedPaxosAnswer::Accepted,
                    PaxosAnswer::Nack { promised } => OwnedPaxosAnswer::Nack { promised },
                    PaxosAnswer::Committed => OwnedPaxosAnswer::Committed,
                },
            },
            PeerResponse::Merkle { leaves } => PeerAnswer::Merkle {
                leaves: leaves.iter().collect(),
            },
            PeerResponse::RangePage { entries, next_cursor } => PeerAnswer::RangePage {
                entries: entries
                    .iter()
                    .map(|e| OwnedRangeEntry {
                        token: e.token,
                        key: e.key.to_vec(),
                        record: e.record.to_vec(),
                    })
                    .collect(),
                next_cursor: next_cursor.to_vec(),
            },
            PeerResponse::Gossip { payload } => PeerAnswer::Gossip {
                payload: payload.to_vec(),
            },
            PeerResponse::Coordinated { payload } => PeerAnswer::Coordinated {
                payload: payload.to_vec(),
            },
            PeerResponse::Report { text } => PeerAnswer::Report { text: text.to_vec() },
            PeerResponse::Restored { records } => PeerAnswer::Restored { records },
            PeerResponse::SnapshotChunk {
                file_size,
                data,
                crc32c,
            } => PeerAnswer::SnapshotChunk {
                file_size,
                data: data.to_vec(),
                crc32c,
            },
        }
    }
}

fn count(stats: &Cell<PeerPoolStats>, f: impl FnOnce(&mut PeerPoolStats)) {
    let mut s = stats.get();
    f(&mut s);
    stats.set(s);
}

fn peer_error(addr: &str, reason: impl Into<String>) -> Error {
    Error::Peer {
        addr: addr.to_owned(),
        reason: reason.into(),
    }
}

/// The outbound connections of one core. Single-threaded: share it by `Rc`
/// within its executor.
#[derive(Debug)]
pub struct PeerPool {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: PeerPoolOptions,
    task_queue: TaskQueueHandle,
    peers: RefCell<HashMap<String, Slot>>,
    /// The next request id; 0 is never used, because a peer reports a
    /// connection-level error (before it closes) under request id 0.
    next_id: Cell<u64>,
    closed: Cell<bool>,
    /// Shared with the connections, which count their own breakage.
    stats: Rc<Cell<PeerPoolStats>>,
}

#[derive(Debug)]
enum Slot {
    /// A connect is under way; callers wait for its outcome.
    Connecting(Rc<Attempt>),
    /// Connected (possibly closed since: the next call replaces it).
    Up(Rc<Conn>),
    /// The last connect failed; calls fail fast until `until`.
    Down { until: Instant, reason: String },
}

/// One connect, awaited by every caller that arrived during it. Each gets
/// this attempt's outcome: none starts another, so a backoff of zero cannot
/// make waiters spin on connects.
#[derive(Debug, Default)]
struct Attempt {
    done: Notify,
    outcome: RefCell<Option<std::result::Result<Rc<Conn>, String>>>,
}

impl Attempt {
    fn settle(&self, outcome: std::result::Result<Rc<Conn>, String>) {
        let mut o = self.outcome.borrow_mut();
        if o.is_none() {
            *o = Some(outcome);
        }
        drop(o);
        self.done.notify();
    }
}

impl PeerPool {
    /// A pool that runs its connection tasks in `task_queue`.
    pub fn new(options: PeerPoolOptions, task_queue: TaskQueueHandle) -> PeerPool {
        PeerPool {
            inner: Rc::new(Inner {
                options,
                task_queue,
                peers: RefCell::new(HashMap::new()),
                next_id: Cell::new(1),
                closed: Cell::new(false),
                stats: Rc::new(Cell::new(PeerPoolStats::default())),
            }),
        }
    }

    /// Sends `request` to `addr` ("ip:port") and waits for its answer, at most `timeout`.
    ///
    /// Fails with [`Error::PeerTimeout`] when the time is up (the request may
    /// still be applied), [`Error::Peer`] when no answer can come (bad
    /// address, failed connect or one within the backoff, broken
    /// connection, undecodable answer, closed pool) and [`Error::TooLarge`]
    /// for a request over `limits.max_frame`, which is never sent. A peer's
    /// ERROR answer is `Ok(PeerAnswer::Failed)`.
    pub async fn call(&self, addr: &str, request: &PeerRequest<'_>, timeout: Duration) -> Result<PeerAnswer> {
        let inner = &self.inner;
        let id = inner.next_id.get();
        inner.next_id.set(id + 1);
        let mut frame = Vec::new();
        request
            .encode_frame(id, &mut frame)
            .map_err(|e| peer_error(addr, format!("cannot encode the request: {e}")))?;
        let body_len = frame.len() - HEADER_LEN;
        let max = inner.options.limits.max_frame as usize;
        if body_len > max {
            // The peer would refuse the frame and close the connection, failing
            // every other request on it.
            return Err(Error::TooLarge {
                what: "peer request",
                len: body_len,
                max,
            });
        }
        let exchange = inner.exchange(addr, id, request.op.opcode(), frame);
        let timer = glommio::timer::sleep(timeout);
        futures::pin_mut!(exchange, timer);
        match select(exchange, timer).await {
            Either::Left((answer, _)) => answer,
            Either::Right(_) => {
                inner.count(|s| s.timeouts += 1);
                Err(Error::PeerTimeout {
                    addr: addr.to_owned(),
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
        // `exchange` is dropped here: its guard removes a pending entry left.
    }

    /// Drops every connection (shutdown): requests in flight fail with
    /// [`Error::Peer`], and so does every later call: a pool does not
    /// reconnect once closed.
    pub fn close_all(&self) {
        self.inner.close_all();
    }

    /// The pool's counters so far.
    pub fn stats(&self) -> PeerPoolStats {
        self.inner.stats.get()
    }

    /// Requests outstanding on the connection to `addr` (0 without one).
    pub fn inflight(&self, addr: &str) -> usize {
        match self.inner.peers.borrow().get(addr) {
            Some(Slot::Up(c)) => c.pending.borrow().len(),
            _ => 0,
        }
    }
}

impl Drop for PeerPool {
    /// The connection tasks hold their connection, not the pool: without
    /// this they would keep idle sockets open until the executor ends.
    fn drop(&mut self) {
        self.inner.close_all();
    }
}

impl Inner {
    fn count(&self, f: impl FnOnce(&mut PeerPoolStats)) {
        count(&self.stats, f);
    }

    fn close_all(&self) {
        self.closed.set(true);
        let peers = std::mem::take(&mut *self.peers.borrow_mut());
        for slot in peers.into_values() {
            match slot {
                Slot::Up(c) => c.close("the peer pool was closed"),
                // The connect task closes what it opens once it sees `closed`;
                // its waiters need not wait for that.
                Slot::Connecting(a) => a.settle(Err("the peer pool was closed".to_owned())),
                Slot::Down { .. } => {}
            }
        }
    }

    async fn exchange(self: &Rc<Self>, addr: &str, id: u64, opcode: PeerOpcode, frame: Vec<u8>) -> Result<PeerAnswer> {
        let conn = self.connection(addr).await?;
        conn.room().await?;
        let answer = conn.submit(id, opcode, &frame)?;
        let _forget = Forget { conn: &conn, id };
        match answer.await {
            Ok(r) => r,
            // Every path that removes a waiter sends to it first; this is a
            // guard against a future change that forgets to.
            Err(oneshot::Canceled) => Err(conn.error("the request was dropped without an answer")),
        }
    }

    /// The open connection to `addr`, connecting if there is none.
    async fn connection(self: &Rc<Self>, addr: &str) -> Result<Rc<Conn>> {
        if self.closed.get() {
            return Err(peer_error(addr, "the peer pool was closed"));
        }
        let attempt = {
            let mut peers = self.peers.borrow_mut();
            match peers.get(addr) {
                Some(Slot::Up(c)) if !c.is_closed() => return Ok(c.clone()),
                Some(Slot::Down { until, reason }) if Instant::now() < *until => {
                    let left = until.saturating_duration_since(Instant::now()).as_millis();
                    let err = peer_error(addr, format!("{reason}; not retrying for another {left} ms"));
                    drop(peers);
                    self.count(|s| s.fast_failures += 1);
                    return Err(err);
                }
                Some(Slot::Connecting(a)) => a.clone(),
                _ => {
                    let sock: SocketAddr = addr.parse().map_err(|_| peer_error(addr, "not an ip:port address"))?;
                    let a = Rc::new(Attempt::default());
                    peers.insert(addr.to_owned(), Slot::Connecting(a.clone()));
                    drop(peers);
                    let task = connect_task(self.clone(), addr.to_owned(), sock, a.clone());
                    if let Err(e) = glommio::spawn_local_into(task, self.task_queue).map(|t| t.detach()) {
                        self.peers.borrow_mut().remove(addr);
                        return Err(peer_error(addr, format!("cannot spawn the connect task: {e}")));
                    }
                    a
                }
            }
        };
        loop {
            if let Some(outcome) = attempt.outcome.borrow().as_ref() {
                return outcome.clone().map_err(|reason| peer_error(addr, reason));
            }
            attempt.done.notified().await;
        }
    }
}

/// Connects, installs the outcome in the pool and hands it to the waiters.
async fn connect_task(inner: Rc<Inner>, addr: String, sock: SocketAddr, attempt: Rc<Attempt>) {
    inner.count(|s| s.connects += 1);
    let options = &inner.options;
    let opened = {
        let open = async {
            let stream = open(sock, options.source_ip)
                .await
                .map_err(|e| match options.source_ip {
                    Some(ip) => format!("connect from {ip} failed: {e}"),
                    None => format!("connect failed: {e}"),
                })?;
            let mut stream = match &options.tls {
                None => PeerStream::Plain(stream),
                Some(tls) => {
                    let connector = futures_rustls::TlsConnector::from(tls.config.clone());
                    let s = connector.connect(tls.name_for(sock), stream).await.map_err(|e| {
                        // A peer whose certificate is refused (or that refuses
                        // ours) is misconfigured or not one of ours.
                        tracing::warn!(peer = %addr, error = %e, "node-to-node TLS handshake failed");
                        format!("TLS handshake failed: {e}")
                    })?;
                    PeerStream::Tls(Box::new(s))
                }
            };
            if let Some(secret) = &options.secret {
                handshake(&mut stream, secret, &options.node_id)
                    .await
                    .map_err(|reason| {
                        // A peer that fails the handshake is misconfigured or not
                        // one of ours: worth an operator's attention.
                        tracing::warn!(peer = %addr, %reason, "node-to-node handshake failed");
                        format!("handshake failed: {reason}")
                    })?;
            }
            Ok::<PeerStream, String>(stream)
        };
        let timer = glommio::timer::sleep(options.connect_timeout);
        futures::pin_mut!(open, timer);
        match select(open, timer).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => Err(format!(
                "connect timed out after {} ms",
                options.connect_timeout.as_millis()
            )),
        }
        // A connect still under way is abandoned here: dropping the stream
        // closes the socket.
    };
    let outcome = match opened {
        Ok(_) if inner.closed.get() => Err("the peer pool was closed".to_owned()),
        Ok(stream) => Conn::start(stream, &addr, options, inner.task_queue, inner.stats.clone()),
        Err(reason) => Err(reason),
    };
    let ours = matches!(inner.peers.borrow().get(&addr), Some(Slot::Connecting(a)) if Rc::ptr_eq(a, &attempt));
    match &outcome {
        Ok(conn) if ours => {
            inner.peers.borrow_mut().insert(addr, Slot::Up(conn.clone()));
        }
        // The pool was closed meanwhile: nobody may use this connection.
        Ok(conn) => conn.close("the peer pool was closed"),
        Err(reason) => {
            inner.count(|s| s.connect_failures += 1);
            if ours {
                let until = Instant::now() + options.reconnect_backoff;
                let reason = reason.clone();
                inner.peers.borrow_mut().insert(addr, Slot::Down { until, reason });
            }
        }
    }
    attempt.settle(outcome);
}

/// Opens a TCP connection to `addr`, from `source` if given, without
/// blocking the executor (see the module docs).
async fn open(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.set_nodelay(true)?;
    socket.set_tcp_user_timeout(Some(UNACKED_TIMEOUT))?;
    // Non-blocking only for the connect call, so it returns at once; then
    // back to blocking, the mode of every socket glommio makes itself (its
    // reads and writes pass MSG_DONTWAIT and poll through io_uring).
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    socket.set_nonblocking(false)?;
    let mut stream = TcpStream::from(socket);
    // Completes when the handshake does, or fails with its error.
    let sent = stream.write(&[]).await?;
    debug_assert_eq!(sent, 0);
    Ok(stream)
}

/// The opening side of the node-to-node handshake (docs/protocol.md,
/// "Authentication"): proves this node knows `secret` and checks that the
/// peer does, over nonces fresh for this connection.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    from: &str,
) -> std::result::Result<(), String> {
    use corekv_net::msg::auth::{peer_mac, verify_peer_mac, PeerChallenge, PeerHello, PeerProof, Role, NONCE_LEN};
    use rand::RngCore;
    let mut client_nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut client_nonce);
    let mut buf = Vec::new();
    PeerHello { from, client_nonce }
        .encode_frame(1, &mut buf)
        .map_err(|e| e.to_string())?;
    stream.write_all(&buf).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    // Handshake answers are small; a default-limited decoder is plenty.
    let mut dec = FrameDecoder::new(Limits::default().max_frame);
    let body = handshake_answer(stream, &mut dec).await?;
    let challenge = PeerChallenge::decode_body(&body).map_err(|e| format!("undecodable PEER_HELLO answer: {e}"))?;
    if !verify_peer_mac(
        secret.bytes(),
        Role::Server,
        from,
        &client_nonce,
        &challenge.server_nonce,
        &challenge.server_mac,
    ) {
        return Err("the peer does not know the cluster secret (its proof is wrong)".to_owned());
    }
    let client_mac = peer_mac(
        secret.bytes(),
        Role::Client,
        from,
        &client_nonce,
        &challenge.server_nonce,
    );
    buf.clear();
    PeerProof { client_mac }
        .encode_frame(2, &mut buf)
        .map_err(|e| e.to_string())?;
    stream.write_all(&buf).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    handshake_answer(stream, &mut dec).await.map(|_| ())
}

/// The body of the next handshake answer; the peer's refusal (an ERROR
/// answer) as `Err` with its message.
async fn handshake_answer<S: AsyncRead + Unpin>(
    stream: &mut S,
    dec: &mut FrameDecoder,
) -> std::result::Result<Vec<u8>, String> {
    loop {
        match dec.next_frame() {
            Ok(Some(f)) if f.header.flags.is_error() => {
                return Err(match failure(f.body, &Limits::default()) {
                    Ok(PeerAnswer::Failed { message, .. }) => format!("the peer refused: {message}"),
                    _ => "the peer refused (undecodable error)".to_owned(),
                })
            }
            Ok(Some(f)) if !f.header.flags.is_response() => {
                return Err("the peer sent a request during the handshake".to_owned())
            }
            Ok(Some(f)) => return Ok(f.body.to_vec()),
            Ok(None) => {}
            Err(e) => return Err(format!("undecodable handshake answer: {e}")),
        }
        let spare = dec.spare(4096);
        let n = stream.read(spare).await.map_err(|e| e.to_string())?;
        dec.commit(n);
        if n == 0 {
            return Err("the peer closed the connection during the handshake".to_owned());
        }
    }
}

/// A caller waiting for an answer.
#[derive(Debug)]
struct Waiter {
    opcode: PeerOpcode,
    tx: oneshot::Sender<Result<PeerAnswer>>,
}

/// One connection: its pending requests, its output buffer and the events
/// its two tasks wait on.
#[derive(Debug)]
struct Conn {
    addr: String,
    limits: Limits,
    max_inflight: usize,
    pending: RefCell<HashMap<u64, Waiter>>,
    /// Encoded frames waiting for the writer.
    out: RefCell<Vec<u8>>,
    wake_writer: Notify,
    /// A request slot came free, or the connection closed.
    changed: Notify,
    /// The connection closed: both tasks exit.
    shutdown: Notify,
    /// Why it closed; set once.
    closed: RefCell<Option<String>>,
    /// The pool's counters (`broken`).
    stats: Rc<Cell<PeerPoolStats>>,
}

impl Conn {
    /// Starts the reader and writer tasks of a connected stream.
    fn start(
        stream: PeerStream,
        addr: &str,
        options: &PeerPoolOptions,
        tq: TaskQueueHandle,
        stats: Rc<Cell<PeerPoolStats>>,
    ) -> std::result::Result<Rc<Conn>, String> {
        let (reader, writer) = stream.split();
        let conn = Rc::new(Conn {
            addr: addr.to_owned(),
            limits: options.limits,
            max_inflight: options.max_inflight.max(1),
            pending: RefCell::new(HashMap::new()),
            out: RefCell::new(Vec::new()),
            wake_writer: Notify::new(),
            changed: Notify::new(),
            shutdown: Notify::new(),
            closed: RefCell::new(None),
            stats,
        });
        let spawned = glommio::spawn_local_into(read_loop(conn.clone(), reader), tq)
            .map(|t| t.detach())
            .and_then(|_| glommio::spawn_local_into(write_loop(conn.clone(), writer), tq).map(|t| t.detach()));
        if let Err(e) = spawned {
            let reason = format!("cannot spawn the connection tasks: {e}");
            conn.close(&reason);
            return Err(reason);
        }
        Ok(conn)
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        peer_error(&self.addr, reason)
    }

    fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    fn closed_error(&self) -> Error {
        let reason = self.closed.borrow().clone().unwrap_or_default();
        self.error(format!("connection closed: {reason}"))
    }

    /// Closes the connection (once): every pending request fails with
    /// `reason`, queued output is dropped and both tasks exit.
    fn close(&self, reason: &str) {
        if self.is_closed() {
            return;
        }
        *self.closed.borrow_mut() = Some(reason.to_owned());
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (_, w) in pending {
            let _ = w.tx.send(Err(self.closed_error()));
        }
        self.out.borrow_mut().clear();
        self.shutdown.notify();
        self.wake_writer.notify();
        self.changed.notify();
    }

    /// Closes an established connection that failed (counted as broken).
    fn fail(&self, reason: &str) {
        if !self.is_closed() {
            count(&self.stats, |s| s.broken += 1);
            self.close(reason);
        }
    }

    /// Waits for a free request slot; fails if the connection closes.
    async fn room(&self) -> Result<()> {
        loop {
            if self.is_closed() {
                return Err(self.closed_error());
            }
            if self.pending.borrow().len() < self.max_inflight {
                return Ok(());
            }
            self.changed.notified().await;
        }
    }

    /// Queues a request frame and registers its caller.
    fn submit(&self, id: u64, opcode: PeerOpcode, frame: &[u8]) -> Result<oneshot::Receiver<Result<PeerAnswer>>> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, Waiter { opcode, tx });
        debug_assert!(self.pending.borrow().len() <= self.max_inflight);
        self.out.borrow_mut().extend_from_slice(frame);
        self.wake_writer.notify();
        Ok(rx)
    }

    /// Forgets a request whose caller stopped waiting.
    fn forget(&self, id: u64) {
        if self.pending.borrow_mut().remove(&id).is_some() {
            self.changed.notify();
        }
    }

    /// Hands one frame to its caller. `Err` (why) if the connection can no
    /// longer be trusted.
    fn dispatch(&self, frame: &Frame<'_>) -> std::result::Result<(), String> {
        let h = frame.header;
        if !h.flags.is_response() {
            return Err(format!("the peer sent a request frame (opcode {:#04x})", h.opcode));
        }
        if h.request_id == 0 {
            // Never one of ours: the peer's report of why it closes the stream.
            return Err(match failure(frame.body, &self.limits) {
                Ok(PeerAnswer::Failed { code, message }) => {
                    format!("the peer closed the connection with error {}: {message}", code.0)
                }
                _ => "the peer sent an undecodable connection-level error".to_owned(),
            });
        }
        let Some(waiter) = self.pending.borrow_mut().remove(&h.request_id) else {
            // Its caller timed out: the answer has nobody to go to.
            return Ok(());
        };
        self.changed.notify();
        let answer = if h.flags.is_error() {
            // Any opcode: the ERROR body is the same whatever was asked.
            failure(frame.body, &self.limits)
        } else if h.opcode != waiter.opcode as u8 {
            Err(format!(
                "answer to request {} has opcode {:#04x}, expected {:#04x}",
                h.request_id, h.opcode, waiter.opcode as u8
            ))
        } else {
            PeerResponse::decode_body(waiter.opcode, frame.body, &self.limits)
                .map(PeerAnswer::from_response)
                .map_err(|e| format!("undecodable answer to request {}: {e}", h.request_id))
        };
        match answer {
            Ok(a) => {
                let _ = waiter.tx.send(Ok(a));
                Ok(())
            }
            Err(reason) => {
                let _ = waiter.tx.send(Err(self.error(reason.clone())));
                Err(reason)
            }
        }
    }
}

/// Decodes an ERROR body (`code u16 | message str`).
fn failure(body: &[u8], limits: &Limits) -> std::result::Result<PeerAnswer, String> {
    match Response::decode_body(ResponseOpcode::Error as u8, body, limits) {
        Ok(Response::Error { code, message }) => Ok(PeerAnswer::Failed {
            code,
            message: message.to_owned(),
        }),
        Ok(_) => Err("an ERROR answer without an error body".to_owned()),
        Err(e) => Err(format!("undecodable ERROR answer: {e}")),
    }
}

/// Removes a request's pending entry when its caller stops waiting
/// (timeout, cancellation), so an abandoned request leaves nothing behind.
struct Forget<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.conn.forget(self.id);
    }
}

/// The reader task: frames to callers until the stream ends or breaks.
async fn read_loop(conn: Rc<Conn>, mut reader: ReadHalf<PeerStream>) {
    let mut dec = FrameDecoder::new(conn.limits.max_frame);
    loop {
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(reason) = conn.dispatch(&frame) {
                        conn.fail(&reason);
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    conn.fail(&format!("bad frame from the peer: {e}"));
                    return;
                }
            }
        }
        if conn.is_closed() {
            return;
        }
        let read = {
            let buf = dec.spare(READ_CHUNK);
            let read = reader.read(buf);
            let stop = conn.shutdown.notified();
            futures::pin_mut!(read, stop);
            match select(read, stop).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => return,
            }
        };
        match read {
            Ok(0) => {
                dec.commit(0);
                conn.fail("connection closed by the peer");
                return;
            }
            Ok(n) => dec.commit(n),
            Err(e) => {
                dec.commit(0);
                conn.fail(&format!("read failed: {e}"));
                return;
            }
        }
    }
}

/// The writer task: sends what callers queued until the connection closes.
async fn write_loop(conn: Rc<Conn>, mut writer: WriteHalf<PeerStream>) {
    let mut spare = Vec::new();
    loop {
        if conn.is_closed() {
            break;
        }
        if conn.out.borrow().is_empty() {
            conn.wake_writer.notified().await;
            continue;
        }
        std::mem::swap(&mut *conn.out.borrow_mut(), &mut spare);
        let written = {
            // TLS keeps encrypted records until flushed; a socket's flush is free.
            let write = async {
                writer.write_all(&spare).await?;
                writer.flush().await
            };
            let stop = conn.shutdown.notified();
            futures::pin_mut!(write, stop);
            match select(write, stop).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => break,
            }
        };
        if let Err(e) = written {
            conn.fail(&format!("write failed: {e}"));
            break;
        }
        spare.clear();
        if spare.capacity() > KEEP_WRITE_BUFFER {
            spare = Vec::new();
        }
    }
    let _ = writer.close().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::future::Future;

    use corekv_net::frame::{encode_frame, Flags};
    use corekv_net::msg::peer::PeerOp;
    use glommio::net::TcpListener;

    use super::*;
    use crate::server::Outbox;

    /// A failure bound only: no test waits for it to pass.
    const BOUND: Duration = Duration::from_secs(10);

    /// Runs a test in its own executor, failing it if it hangs.
    fn run(test: impl Future<Output = ()>) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(async {
                let bound = glommio::timer::sleep(Duration::from_secs(60));
                futures::pin_mut!(test, bound);
                let finished = matches!(select(test, bound).await, Either::Left(_));
                assert!(finished, "the test did not finish within 60 s");
            });
    }

    fn pool(options: PeerPoolOptions) -> PeerPool {
        PeerPool::new(options, glommio::executor().current_task_queue())
    }

    fn gossip(payload: &[u8]) -> PeerRequest<'_> {
        PeerRequest {
            from: "node-a",
            op: PeerOp::Gossip { payload },
        }
    }

    fn echo(payload: &[u8]) -> PeerAnswer {
        PeerAnswer::Gossip {
            payload: payload.to_vec(),
        }
    }

    /// A peer on 127.0.0.1 that answers GOSSIP by echoing the payload and
    /// MUTATE with ACK. Payloads steer it: `hold` answers only at
    /// [`TestPeer::release`], `close` drops the connection, `fail` answers
    /// ERROR, `garbage` answers a body that does not decode.
    #[derive(Default)]
    struct TestPeer {
        accepted: Cell<usize>,
        sources: RefCell<Vec<IpAddr>>,
        received: Cell<usize>,
        got_request: Notify,
        held: RefCell<Vec<(Rc<Outbox>, Vec<u8>)>>,
        /// When non-zero: collect this many answers, then send them in reverse.
        reverse_batch: Cell<usize>,
        batch: RefCell<Vec<(Rc<Outbox>, Vec<u8>)>>,
    }

    impl TestPeer {
        fn start() -> (Rc<TestPeer>, String) {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let peer = Rc::new(TestPeer::default());
            let p = peer.clone();
            glommio::spawn_local(async move {
                while let Ok(stream) = listener.accept().await {
                    p.accepted.set(p.accepted.get() + 1);
                    glommio::spawn_local(serve(p.clone(), stream)).detach();
                }
            })
            .detach();
            (peer, addr)
        }

        async fn wait_received(&self, n: usize) {
            while self.received.get() < n {
                self.got_request.notified().await;
            }
        }

        /// Sends every held answer.
        fn release(&self) {
            for (out, b) in self.held.borrow_mut().drain(..) {
                out.push_raw(&b);
            }
        }
    }

    async fn serve(peer: Rc<TestPeer>, stream: TcpStream) {
        if let Ok(a) = stream.peer_addr() {
            peer.sources.borrow_mut().push(a.ip());
        }
        let (mut reader, writer) = stream.split();
        let out = Rc::new(Outbox::new());
        let o = out.clone();
        let writer = glommio::spawn_local(async move { o.run_writer(writer).await });
        let limits = Limits::default();
        let mut dec = FrameDecoder::new(limits.max_frame);
        'conn: loop {
            while let Some(frame) = dec.next_frame().unwrap() {
                let id = frame.header.request_id;
                let req = PeerRequest::decode(&frame, &limits).unwrap();
                peer.received.set(peer.received.get() + 1);
                peer.got_request.notify();
                let op = req.op.opcode();
                let mut b = Vec::new();
                let mut hold = false;
                match req.op {
                    PeerOp::Gossip { payload } if payload == b"close" => break 'conn,
                    PeerOp::Gossip { payload } if payload == b"fail" => {
                        let error = Response::Error {
                            code: ErrorCode::OVERLOADED,
                            message: "busy",
                        };
                        encode_frame(&mut b, op as u8, Flags::RESPONSE.with(Flags::ERROR), id, |o| {
                            error.encode(o)
                        })
                        .unwrap();
                    }
                    PeerOp::Gossip { payload } if payload == b"garbage" => {
                        // A payload length of 127 with nothing after it.
                        encode_frame(&mut b, op as u8, Flags::RESPONSE, id, |o| o.push(0x7F)).unwrap();
                    }
                    PeerOp::Gossip { payload } => {
                        hold = payload == b"hold";
                        PeerResponse::Gossip { payload }.encode_frame(op, id, &mut b).unwrap();
                    }
                    _ => PeerResponse::Ack.encode_frame(op, id, &mut b).unwrap(),
                }
                if hold {
                    peer.held.borrow_mut().push((out.clone(), b));
                } else if peer.reverse_batch.get() > 0 {
                    let mut batch = peer.batch.borrow_mut();
                    batch.push((out.clone(), b));
                    if batch.len() == peer.reverse_batch.get() {
                        for (o, b) in batch.drain(..).rev() {
                            o.push_raw(&b);
                        }
                    }
                } else {
                    out.push_raw(&b);
                }
            }
            let buf = dec.spare(16 << 10);
            match reader.read(buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dec.commit(n),
            }
        }
        out.close();
        writer.await;
    }

    #[test]
    fn pipelined_calls_get_their_own_answers() {
        run(async {
            let (peer, addr) = TestPeer::start();
            // Answers leave in the reverse order of the requests.
            peer.reverse_batch.set(200);
            let pool = pool(PeerPoolOptions {
                max_inflight: 256,
                ..PeerPoolOptions::default()
            });
            let payloads: Vec<Vec<u8>> = (0..200).map(|i| format!("payload-{i}").into_bytes()).collect();
            let calls = payloads.iter().enumerate().map(|(i, p)| {
                let (pool, addr) = (&pool, &addr);
                async move {
                    if i % 10 == 0 {
                        let op = PeerOp::Mutate {
                            token: i as u64,
                            key: b"k",
                            record: p,
                            hint_for: "",
                        };
                        let req = PeerRequest { from: "node-a", op };
                        (i, pool.call(addr, &req, BOUND).await)
                    } else {
                        (i, pool.call(addr, &gossip(p), BOUND).await)
                    }
                }
            });
            for (i, answer) in futures::future::join_all(calls).await {
                let want = if i % 10 == 0 {
                    PeerAnswer::Ack
                } else {
                    echo(&payloads[i])
                };
                assert_eq!(answer.unwrap(), want, "call {i}");
            }
            assert_eq!(peer.accepted.get(), 1, "one connection for all");
            assert_eq!(pool.stats().connects, 1);
            assert_eq!(pool.inflight(&addr), 0);
        });
    }

    #[test]
    fn max_inflight_bounds_a_connection() {
        run(async {
            let (peer, addr) = TestPeer::start();
            let pool = pool(PeerPoolOptions {
                max_inflight: 8,
                ..PeerPoolOptions::default()
            });
            let hold = gossip(b"hold");
            let calls = futures::future::join_all((0..20).map(|_| pool.call(&addr, &hold, BOUND)));
            let driver = async {
                let mut answered = 0;
                while answered < 20 {
                    let batch = (20 - answered).min(8);
                    peer.wait_received(answered + batch).await;
                    assert_eq!(pool.inflight(&addr), batch, "the slots are full, the rest wait");
                    assert_eq!(peer.received.get(), answered + batch, "nothing past the bound was sent");
                    answered += batch;
                    peer.release();
                }
            };
            let (answers, ()) = futures::join!(calls, driver);
            for a in answers {
                assert_eq!(a.unwrap(), echo(b"hold"));
            }
            assert_eq!(peer.accepted.get(), 1);
        });
    }

    #[test]
    fn a_timed_out_call_leaves_nothing_behind() {
        run(async {
            let (peer, addr) = TestPeer::start();
            let pool = pool(PeerPoolOptions::default());
            let r = pool.call(&addr, &gossip(b"hold"), Duration::from_millis(50)).await;
            assert!(matches!(r, Err(Error::PeerTimeout { after_ms: 50, .. })), "{r:?}");
            assert_eq!(pool.inflight(&addr), 0, "the timed-out caller's entry is gone");
            // The late answer goes out before the next call is even sent.
            peer.wait_received(1).await;
            peer.release();
            let a = pool.call(&addr, &gossip(b"next"), BOUND).await.unwrap();
            assert_eq!(a, echo(b"next"));
            let stats = pool.stats();
            assert_eq!((stats.timeouts, stats.broken), (1, 0), "{stats:?}");
            assert_eq!(peer.accepted.get(), 1, "the late answer did not break the connection");
        });
    }

    #[test]
    fn a_closed_connection_fails_inflight_calls_and_the_next_call_reconnects() {
        run(async {
            let (peer, addr) = TestPeer::start();
            let pool = pool(PeerPoolOptions::default());
            let hold = gossip(b"hold");
            let waiting = pool.call(&addr, &hold, BOUND);
            let closing = async {
                peer.wait_received(1).await;
                pool.call(&addr, &gossip(b"close"), BOUND).await
            };
            let (a, b) = futures::join!(waiting, closing);
            for r in [a, b] {
                assert!(
                    matches!(&r, Err(Error::Peer { reason, .. }) if reason.contains("closed by the peer")),
                    "{r:?}"
                );
            }
            assert_eq!(pool.stats().broken, 1);
            let a = pool.call(&addr, &gossip(b"again"), BOUND).await.unwrap();
            assert_eq!(a, echo(b"again"));
            assert_eq!(peer.accepted.get(), 2);
            assert_eq!(pool.stats().connects, 2);
        });
    }

    #[test]
    fn error_answers_and_undecodable_answers() {
        run(async {
            let (peer, addr) = TestPeer::start();
            let pool = pool(PeerPoolOptions::default());
            let a = pool.call(&addr, &gossip(b"fail"), BOUND).await.unwrap();
            assert_eq!(
                a,
                PeerAnswer::Failed {
                    code: ErrorCode::OVERLOADED,
                    message: "busy".to_owned()
                }
            );
            assert_eq!(pool.call(&addr, &gossip(b"ok"), BOUND).await.unwrap(), echo(b"ok"));
            assert_eq!(peer.accepted.get(), 1, "an ERROR answer keeps the connection");
            let r = pool.call(&addr, &gossip(b"garbage"), BOUND).await;
            assert!(
                matches!(&r, Err(Error::Peer { reason, .. }) if reason.contains("undecodable")),
                "{r:?}"
            );
            assert_eq!(pool.stats().broken, 1, "an undecodable answer closes the connection");
            assert_eq!(pool.call(&addr, &gossip(b"ok"), BOUND).await.unwrap(), echo(b"ok"));
            assert_eq!(peer.accepted.get(), 2);
        });
    }

    #[test]
    fn a_closed_port_fails_fast_within_the_backoff() {
        run(async {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let addr = format!("127.0.0.1:{port}");
            let pool = pool(PeerPoolOptions {
                reconnect_backoff: Duration::from_secs(600),
                ..PeerPoolOptions::default()
            });
            let r = pool.call(&addr, &gossip(b"x"), BOUND).await;
            assert!(
                matches!(&r, Err(Error::Peer { reason, .. }) if reason.contains("refused")),
                "{r:?}"
            );
            assert_eq!((pool.stats().connects, pool.stats().connect_failures), (1, 1));
            // Within the backoff: refused without a connect.
            for _ in 0..3 {
                let r = pool.call(&addr, &gossip(b"x"), BOUND).await;
                assert!(
                    matches!(&r, Err(Error::Peer { reason, .. }) if reason.contains("not retrying")),
                    "{r:?}"
                );
            }
            assert_eq!(pool.stats().connects, 1, "no connect inside the backoff");
            assert_eq!(pool.stats().fast_failures, 3);

            // After the backoff, the next call tries again.
            let backoff = Duration::from_millis(20);
            let pool = self::pool(PeerPoolOptions {
                reconnect_backoff: backoff,
                ..PeerPoolOptions::default()
            });
            assert!(pool.call(&addr, &gossip(b"x"), BOUND).await.is_err());
            glommio::timer::sleep(backoff + Duration::from_millis(5)).await;
            assert!(pool.call(&addr, &gossip(b"x"), BOUND).await.is_err());
            assert_eq!(pool.stats().connects, 2);

            // Not an ip:port: refused before any connect.
            let r = pool.call("localhost:1", &gossip(b"x"), BOUND).await;
            assert!(
                matches!(&r, Err(Error::Peer { reason, .. }) if reason.contains("ip:port")),
                "{r:?}"
            );
            assert_eq!(pool.stats().connects, 2);
        });
    }

    /// A listener whose accept queue is full drops SYNs: a connect to it
    /// hangs, as one to a partitioned node does.
    #[test]
    fn a_hanging_connect_is_bounded() {
        use socket2::{Domain, Socket, Type};
        run(async {
            let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            listener.bind(&any.into()).unwrap();
            listener.listen(0).unwrap();
            let target = listener.local_addr().unwrap().as_socket().unwrap();
            // Fill the queue (never accepted); non-blocking, as a connect
            // past the first may hang.
            let _fillers: Vec<Socket> = (0..3)
                .map(|_| {
                    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    s.set_nonblocking(true).unwrap();
                    let _ = s.connect(&target.into());
                    s
                })
                .collect();
            let addr = target.to_string();
            let pool = pool(PeerPoolOptions {
                connect_timeout: Duration::from_millis(200),
                reconnect_backoff: Duration::from_secs(600),
                ..PeerPoolOptions::default()
            });
            // A caller with a shorter timeout than the connect's is not held up...
            let r = pool.call(&addr, &gossip(b"x"), Duration::from_millis(20)).await;
            assert!(matches!(r, Err(Error::PeerTimeout { after_ms: 20, .. })), "{r:?}");
            // ...and the next caller waits for the same connect, which times out.
            let r = pool.call(&addr, &gossip(b"x"), BOUND).await;
            assert!(
                matches!(&r, Err(Error::Peer { reason, .. }) if reason.contains("connect timed out")),
                "{r:?}"
            );
            let stats = pool.stats();
            assert_eq!((stats.connects, stats.connect_failures), (1, 1), "{stats:?}");
        });
    }

    #[test]
    fn source_ip_is_bound_before_connecting() {
        run(async {
            let (peer, addr) = TestPeer::start();
            for (i, source) in ["127.0.0.1", "127.0.0.2"].into_iter().enumerate() {
                let ip: IpAddr = source.parse().unwrap();
                let pool = pool(PeerPoolOptions {
                    source_ip: Some(ip),
                    ..PeerPoolOptions::default()
                });
                assert_eq!(pool.call(&addr, &gossip(b"hi"), BOUND).await.unwrap(), echo(b"hi"));
                assert_eq!(peer.sources.borrow()[i], ip, "the peer sees the bound source");
            }
        });
    }

    #[test]
    fn close_all_fails_inflight_and_later_calls() {
        run(async {
            let (peer, addr) = TestPeer::start();
            let pool = pool(PeerPoolOptions::default());
            let hold = gossip(b"hold");
            let waiting = pool.call(&addr, &hold, BOUND);
            let closing = async {
                peer.wait_received(1).await;
                pool.close_all();
            };
            let (r, ()) = futures::join!(waiting, closing);
            assert!(
                matches!(&r, Err(Error::Peer { reason, .. }) if reason.contains("pool was closed")),
                "{r:?}"
            );
            let r = pool.call(&addr, &gossip(b"x"), BOUND).await;
            assert!(matches!(&r, Err(Error::Peer { .. })), "{r:?}");
            assert_eq!(pool.stats().connects, 1);
        });
    }

    #[test]
    fn an_oversized_request_is_not_sent() {
        run(async {
            let (peer, addr) = TestPeer::start();
            let pool = pool(PeerPoolOptions {
                limits: Limits {
                    max_frame: 64,
                    ..Limits::default()
                },
                ..PeerPoolOptions::default()
            });
            let r = pool.call(&addr, &gossip(&[7; 100]), BOUND).await;
            assert!(matches!(r, Err(Error::TooLarge { max: 64, .. })), "{r:?}");
            assert_eq!(pool.stats().connects, 0);
            assert_eq!(peer.accepted.get(), 0);
        });
    }
}
