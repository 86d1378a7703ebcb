//! One pipelined connection to one endpoint (a node's core port or shared port).
//!
//! A connection has two tasks: a writer that drains a shared output buffer
//! (every caller appends its encoded frame; the writer sends all that queued
//! up in one `write_all`, so a burst of concurrent requests costs one syscall,
//! not one each) and a reader that splits the input into frames with
//! [`FrameDecoder`] and hands each response to the caller waiting for its
//! request id. Answers may come in any order. At most `max_in_flight`
//! requests wait on one connection (a semaphore).
//!
//! With TLS ([`crate::client::Tls`]), the handshake runs right after the TCP
//! connect, within the same `connect_timeout`, and AUTH (if any) goes over
//! the encrypted stream. The reader and writer are generic over the stream's
//! halves, so a plain connection pays nothing for TLS being possible.
//!
//! When the stream ends (EOF, an I/O error, a frame that breaks the framing),
//! the connection closes: every pending request fails with
//! [`ClientError::ConnectionClosed`] and the [`Endpoint`] opens a new one on
//! the next request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::AbortHandle;

use crate::client::error::{ClientError, CloseReason, Result};
use crate::client::routing::RingNode;
use crate::client::{CasResult, Credentials, ScanPage, Sibling, Tls, Value, Versions};
use crate::frame::{Frame, FrameDecoder, HEADER_LEN};
use crate::msg::auth::AuthRequest;
use crate::msg::{ErrorCode, Limits, Request, Response, ResponseOpcode, ValueRef};

/// How much the reader asks the socket for at once.
const READ_CHUNK: usize = 64 << 10;
/// A write buffer that grew past this (one huge request) is freed after use
/// rather than kept for the connection's lifetime.
const KEEP_WRITE_BUFFER: usize = 1 << 20;

/// Locks a std mutex, ignoring poisoning: every critical section here leaves
/// the data consistent at each step, so a panic elsewhere does not corrupt it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A decoded response, owned (it outlives the receive buffer). ERROR
/// responses become `Err(ClientError::Server)` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Ok,
    Value(Value),
    NotFound,
    Values(Vec<Option<Value>>),
    ScanPage(ScanPage),
    Integer(i64),
    Ring { epoch: u64, nodes: Vec<RingNode> },
    Versions(Versions),
    CasResult(CasResult),
}

impl Reply {
    /// The response opcode this reply came as (for error messages).
    pub(crate) fn opcode(&self) -> ResponseOpcode {
        match self {
            Reply::Ok => ResponseOpcode::Ok,
            Reply::Value(_) => ResponseOpcode::Value,
            Reply::NotFound => ResponseOpcode::NotFound,
            Reply::Values(_) => ResponseOpcode::Values,
            Reply::ScanPage(_) => ResponseOpcode::ScanPage,
            Reply::Integer(_) => ResponseOpcode::Integer,
            Reply::Ring { .. } => ResponseOpcode::Ring,
            Reply::Versions(_) => ResponseOpcode::Versions,
            Reply::CasResult(_) => ResponseOpcode::CasResult,
        }
    }

    fn from_response(resp: Response<'_>) -> Result<Reply> {
        fn value(v: ValueRef<'_>) -> Value {
            Value {
                value: v.value.to_vec(),
                meta: v.meta.to_vec(),
                ttl_ms: v.ttl_ms,
            }
        }
        Ok(match resp {
            Response::Ok => Reply::Ok,
            Response::Value(v) => Reply::Value(value(v)),
            Response::NotFound => Reply::NotFound,
            Response::Values(slots) => Reply::Values(slots.iter().map(|s| s.map(value)).collect()),
            Response::ScanPage { entries, next_cursor } => Reply::ScanPage(ScanPage {
                entries: entries.iter().map(|kv| (kv.key.to_vec(), kv.value.to_vec())).collect(),
                next_cursor: next_cursor.to_vec(),
            }),
            Response::Integer(i) => Reply::Integer(i),
            Response::Error { code, message } => {
                return Err(ClientError::Server {
                    code,
                    message: message.to_owned(),
                })
            }
            Response::Ring { epoch, nodes } => Reply::Ring {
                epoch,
                nodes: nodes.iter().map(|n| RingNode::from(&n)).collect(),
            },
            Response::Versions { context, siblings } => Reply::Versions(Versions {
                context: context.to_vec(),
                siblings: siblings
                    .iter()
                    .map(|s| Sibling {
                        value: s.value.to_vec(),
                        expiry_ms: s.expiry_ms,
                    })
                    .collect(),
            }),
            Response::CasResult { applied, value } => Reply::CasResult(CasResult {
                applied,
                value: value.map(<[u8]>::to_vec),
            }),
        })
    }
}

type Waiter = oneshot::Sender<Result<Reply>>;

struct State {
    pending: HashMap<u64, Waiter>,
    /// Set once, when the connection closes; no request is accepted after.
    closed: Option<CloseReason>,
    /// The reader and writer tasks, aborted on close.
    tasks: Vec<AbortHandle>,
}

struct Shared {
    address: String,
    limits: Limits,
    state: Mutex<State>,
    /// Encoded frames waiting for the writer.
    out: Mutex<Vec<u8>>,
    out_ready: Notify,
    permits: Semaphore,
    next_id: AtomicU64,
}

impl Shared {
    fn closed_error(&self, reason: CloseReason) -> ClientError {
        ClientError::ConnectionClosed {
            address: self.address.clone(),
            reason,
        }
    }

    /// Closes the connection (idempotent): fails every pending request with
    /// `reason` and stops both tasks.
    fn close(&self, reason: CloseReason) {
        let (pending, tasks) = {
            let mut st = lock(&self.state);
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            (std::mem::take(&mut st.pending), std::mem::take(&mut st.tasks))
        };
        self.permits.close();
        for (_, waiter) in pending {
            let _ = waiter.send(Err(self.closed_error(reason.clone())));
        }
        for t in tasks {
            t.abort();
        }
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    /// Hands one frame to its waiter. Returns a reason to close if the frame
    /// is the server's connection-level error report (request id 0).
    fn dispatch(&self, frame: &Frame<'_>) -> Option<CloseReason> {
        let id = frame.header.request_id;
        if id == 0 {
            // Ids start at 1, so id 0 is never an answer: it is the ERROR a
            // server sends before closing a stream it cannot trust.
            return Some(match Response::decode(frame, &self.limits) {
                Ok(Response::Error { code, message }) => CloseReason::Server {
                    code,
                    message: message.to_owned(),
                },
                Ok(other) => CloseReason::Server {
                    code: crate::msg::ErrorCode::INTERNAL,
                    message: format!("unsolicited {:?} response with request id 0", other.opcode()),
                },
                Err(e) => CloseReason::BadFrame(e),
            });
        }
        let Some(waiter) = lock(&self.state).pending.remove(&id) else {
            // The caller gave up (timeout) or the id is unknown: drop it.
            return None;
        };
        // A body that does not decode fails only its own request: the framing
        // is intact, so the connection carries on.
        let reply = Response::decode(frame, &self.limits)
            .map_err(ClientError::Protocol)
            .and_then(Reply::from_response);
        let _ = waiter.send(reply);
        None
    }
}

/// Removes a request's pending entry if the caller stops waiting (timeout,
/// cancellation), so an abandoned request leaves nothing behind.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.state).pending.remove(&self.id);
    }
}

/// One open connection.
pub(crate) struct Conn {
    shared: Arc<Shared>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.close(CloseReason::Dropped);
    }
}

impl Conn {
    /// Starts the reader and writer tasks on a stream's two halves (must be
    /// called inside a tokio runtime).
    fn start<R, W>(rd: R, wr: W, address: String, limits: Limits, max_in_flight: usize) -> Conn
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            address,
            limits,
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: None,
                tasks: Vec::new(),
            }),
            out: Mutex::new(Vec::new()),
            out_ready: Notify::new(),
            permits: Semaphore::new(max_in_flight.max(1)),
            next_id: AtomicU64::new(1),
        });
        let reader = tokio::spawn(read_loop(shared.clone(), rd)).abort_handle();
        let writer = tokio::spawn(write_loop(shared.clone(), wr)).abort_handle();
        {
            let mut st = lock(&shared.state);
            if st.closed.is_some() {
                // A task already failed and closed before its handle was stored.
                reader.abort();
                writer.abort();
            } else {
                st.tasks = vec![reader, writer];
            }
        }
        Conn { shared }
    }

    /// True once the connection has closed; the endpoint then opens a new one.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Requests waiting for an answer.
    pub(crate) fn pending(&self) -> usize {
        lock(&self.shared.state).pending.len()
    }

    /// Sends `req` and waits for its answer. No timeout here: the caller wraps
    /// the call, and dropping the future removes the pending entry.
    pub(crate) async fn call(&self, req: &Request<'_>) -> Result<Reply> {
        let sh = &*self.shared;
        let _permit = match sh.permits.acquire().await {
            Ok(p) => p,
            // The semaphore closes with the connection.
            Err(_) => return Err(sh.closed_error(self.close_reason())),
        };
        let (tx, rx) = oneshot::channel();
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = lock(&sh.state);
            if let Some(reason) = &st.closed {
                return Err(sh.closed_error(reason.clone()));
            }
            st.pending.insert(id, tx);
        }
        let guard = PendingGuard { shared: sh, id };
        {
            let mut out = lock(&sh.out);
            let start = out.len();
            req.encode_frame(id, &mut out)?;
            let body = out.len() - start - HEADER_LEN;
            // A frame over the server's limit would make it close the
            // connection and fail every other request pipelined on it.
            if body > sh.limits.max_frame as usize {
                out.truncate(start);
                return Err(ClientError::Protocol(crate::error::FrameError::FrameTooLarge {
                    len: body as u64,
                    max: sh.limits.max_frame.into(),
                }));
            }
        }
        sh.out_ready.notify_one();
        let reply = match rx.await {
            Ok(r) => r,
            Err(_) => Err(sh.closed_error(self.close_reason())),
        };
        drop(guard);
        reply
    }

    fn close_reason(&self) -> CloseReason {
        lock(&self.shared.state).closed.clone().unwrap_or(CloseReason::Dropped)
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut rd: R) {
    let mut dec = FrameDecoder::new(shared.limits.max_frame);
    // Read into a buffer zeroed once and copy what arrived, rather than have
    // the decoder zero a fresh 64 KiB region for every (usually small) read.
    let mut chunk = vec![0u8; READ_CHUNK];
    let reason = 'conn: loop {
        match rd.read(&mut chunk).await {
            Ok(0) => break CloseReason::Eof,
            Ok(n) => dec.feed(chunk.get(..n).unwrap_or_default()),
            Err(e) => break CloseReason::io(&e),
        }
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(reason) = shared.dispatch(&frame) {
                        break 'conn reason;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn CloseReason::BadFrame(e),
            }
        }
    };
    shared.close(reason);
}

async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut wr: W) {
    let mut batch = Vec::new();
    loop {
        std::mem::swap(&mut *lock(&shared.out), &mut batch);
        if batch.is_empty() {
            // `notify_one` stores a permit when nobody waits, so a frame
            // queued between the swap and this wait is not missed.
            shared.out_ready.notified().await;
            continue;
        }
        // A TLS stream buffers what it encrypts until flushed; a plain
        // socket's flush does nothing.
        if let Err(e) = async {
            wr.write_all(&batch).await?;
            wr.flush().await
        }
        .await
        {
            shared.close(CloseReason::io(&e));
            return;
        }
        batch.clear();
        if batch.capacity() > KEEP_WRITE_BUFFER {
            batch = Vec::new();
        }
    }
}

/// An endpoint address and its current connection, opened lazily and
/// reopened after it closes.
pub(crate) struct Endpoint {
    address: String,
    current: Mutex<Option<Arc<Conn>>>,
    /// Serializes connection attempts, so a burst of first requests opens one
    /// connection rather than one each.
    connecting: tokio::sync::Mutex<()>,
}

/// Connection settings an endpoint needs.
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) limits: Limits,
    /// Sent as AUTH on every connection before it carries a request.
    pub(crate) credentials: Option<Arc<Credentials>>,
    /// TLS on every connection, when set.
    pub(crate) tls: Option<Tls>,
}

/// How long a connection's AUTH may take at least: the server hashes the
/// password on purpose slowly, and delays a refusal.
const MIN_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends AUTH on a fresh connection and waits for its answer.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    c: &Credentials,
    address: &str,
    limits: &Limits,
) -> Result<()> {
    let io = |source| ClientError::Connect {
        address: address.to_owned(),
        source,
    };
    let mut buf = Vec::new();
    AuthRequest {
        user: &c.user,
        password: c.password.as_bytes(),
    }
    .encode_frame(1, &mut buf)?;
    stream.write_all(&buf).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut dec = FrameDecoder::new(limits.max_frame);
    loop {
        if let Some(f) = dec.next_frame()? {
            if !f.header.flags.is_error() {
                return Ok(());
            }
            let (code, message) = match Response::decode_body(ResponseOpcode::Error as u8, f.body, limits) {
                Ok(Response::Error { code, message }) => (code, message.to_owned()),
                _ => (ErrorCode::MALFORMED, "an undecodable refusal".to_owned()),
            };
            return Err(ClientError::Auth {
                address: address.to_owned(),
                code,
                message,
            });
        }
        let spare = dec.spare(4096);
        let n = stream.read(spare).await.map_err(io)?;
        dec.commit(n);
        if n == 0 {
            return Err(ClientError::Auth {
                address: address.to_owned(),
                code: ErrorCode::INTERNAL,
                message: "the node closed the connection during AUTH".to_owned(),
            });
        }
    }
}

impl Endpoint {
    pub(crate) fn new(address: String) -> Endpoint {
        Endpoint {
            address,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// AUTH on a fresh stream, when the settings carry credentials.
    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        settings: &ConnSettings,
    ) -> Result<()> {
        let Some(c) = &settings.credentials else {
            return Ok(());
        };
        let limit = settings.connect_timeout.max(MIN_AUTH_TIMEOUT);
        match tokio::time::timeout(limit, authenticate(stream, c, &self.address, &settings.limits)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::ConnectTimeout {
                address: self.address.clone(),
                after: limit,
            }),
        }
    }

    /// The TLS handshake on a fresh TCP stream, within `limit`.
    async fn tls_handshake(
        &self,
        stream: TcpStream,
        tls: &Tls,
        limit: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = tls.name_for(&self.address).map_err(ClientError::TlsSetup)?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        match tokio::time::timeout(limit, connector.connect(name, stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(source)) => Err(ClientError::Tls {
                address: self.address.clone(),
                source,
            }),
            Err(_) => Err(ClientError::ConnectTimeout {
                address: self.address.clone(),
                after: limit,
            }),
        }
    }

    fn open_conn(&self) -> Option<Arc<Conn>> {
        lock(&self.current).as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Requests waiting on the current connection.
    pub(crate) fn pending(&self) -> usize {
        self.open_conn().map_or(0, |c| c.pending())
    }

    /// The open connection, connecting first if there is none.
    pub(crate) async fn conn(&self, settings: &ConnSettings) -> Result<Arc<Conn>> {
        if let Some(c) = self.open_conn() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.open_conn() {
            return Ok(c);
        }
        let stream = match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(&self.address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    address: self.address.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    address: self.address.clone(),
                    after: settings.connect_timeout,
                })
            }
        };
        // Requests are small and latency-bound; batching happens in the writer.
        stream.set_nodelay(true).map_err(|source| ClientError::Connect {
            address: self.address.clone(),
            source,
        })?;
        let conn = match &settings.tls {
            None => {
                let mut stream = stream;
                self.authenticate(&mut stream, settings).await?;
                let (rd, wr) = stream.into_split();
                Conn::start(rd, wr, self.address.clone(), settings.limits, settings.max_in_flight)
            }
            Some(tls) => {
                let mut stream = self.tls_handshake(stream, tls, settings.connect_timeout).await?;
                self.authenticate(&mut stream, settings).await?;
                let (rd, wr) = tokio::io::split(stream);
                Conn::start(rd, wr, self.address.clone(), settings.limits, settings.max_in_flight)
            }
        };
        let conn = Arc::new(conn);
        *lock(&self.current) = Some(conn.clone());
        Ok(conn)
    }
}
