//! The HTTP port (docs/http.md, docs/openapi.yaml): a JSON and raw-bytes
//! API over the same request paths as the binary protocol, the operator
//! routes, and `/metrics`.
//!
//! Every core accepts on the shared `ports.http` (SO_REUSEPORT) and serves
//! its connections itself, like the other listeners. HTTP/1.1 with
//! keep-alive and pipelining (requests on a connection are answered in
//! order, one at a time); HTTP/1.0 closes after each answer unless asked
//! to keep alive. Request heads are parsed by `httparse`; bodies are framed
//! by Content-Length or chunked transfer coding.
//!
//! ## Limits
//!
//! A head over `limits.http_max_header_bytes` is answered 431, a body over
//! `limits.http_max_body_bytes` 413 (both close the connection: the rest of
//! the request is not read), a malformed head 400 and close, a request half
//! sent for [`super::PARTIAL_REQUEST_TIMEOUT`] closes. Past
//! `limits.http_max_inflight_per_core` requests being served on a core, a
//! request is answered 503 at once. No input panics: every length is
//! bounded before it is trusted and every parse error is an answer.

mod admin;
mod api;
mod dashboard;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};

use sha2::{Digest, Sha256};

use super::auth::{LoginError, Session};
use super::read_some;
use crate::metrics::{Level, OpKind, Proto, RequestInfo};
use crate::runtime::Shard;
use crate::security::{Access, User};
use crate::store::{Failure, FailureKind};

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 16 << 10;

/// Most header lines in a request head.
const MAX_HEADERS: usize = 64;

/// Verified credentials a core remembers, so that a client sending the same
/// Basic credentials on every request (HTTP has no sessions) costs one
/// password hash, not one per request.
const AUTH_CACHE_ENTRIES: usize = 256;

/// Credentials that passed the password check: the user's name, the
/// SHA-256 of the password (the password itself is not kept) and the user.
/// The users file is read once at start, so an entry stays right until the
/// node restarts.
type Verified = (String, [u8; 32], Arc<User>);

/// One core's HTTP state, shared by its HTTP connections.
#[derive(Debug, Default)]
pub struct HttpCore {
    inflight: Cell<usize>,
    verified: RefCell<Vec<Verified>>,
}

/// A request with its head parsed and its body read.
#[derive(Debug)]
pub(crate) struct HttpRequest {
    method: String,
    /// The target's path, still percent-encoded.
    path: String,
    /// The target's query, without the `?`.
    query: String,
    /// Header names in lower case, with their values.
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// Header `name` as text, trimmed; `Err` if it is not UTF-8.
    pub(crate) fn header_str(&self, name: &str) -> Result<Option<&str>, Response> {
        match self.header(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(|s| Some(s.trim()))
                .map_err(|_| Response::error(400, format!("header {name} is not UTF-8"))),
        }
    }
}

/// An answer.
#[derive(Debug)]
pub(crate) struct Response {
    status: u16,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An answer with `status` and no body.
    pub(crate) fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `status` with a JSON body.
    pub(crate) fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            // Serializing a Value into memory cannot fail.
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    /// `status` with raw bytes.
    pub(crate) fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body,
        }
    }

    /// An error answer: `{"error": message}`.
    pub(crate) fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }

    /// The answer for a failed command.
    pub(crate) fn failure(f: &Failure) -> Response {
        let status = match f.kind {
            FailureKind::TooLarge => 413,
            FailureKind::Invalid => 400,
            FailureKind::NotInteger | FailureKind::Overflow => 409,
            FailureKind::Unavailable | FailureKind::Overloaded => 503,
            FailureKind::Timeout => 504,
            // The write was not applied; it may succeed once space is freed.
            FailureKind::DiskFull => 507,
            // Writes stay refused until an operator restarts the node on a
            // healthy disk (README, "Durability"): the node cannot serve them.
            FailureKind::Fenced => 503,
            _ => 500,
        };
        let mut r = Response::error(status, f.message.clone());
        if status == 503 {
            r.headers.push(("Retry-After", "1".to_owned()));
        }
        r
    }

    /// Adds a header.
    pub(crate) fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The head and (unless `head_only`) the body, as sent.
    fn encode(&self, head_only: bool, close: bool, http10_keep_alive: bool) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut h = String::with_capacity(160);
        let _ = write!(h, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        // 1xx, 204 and 304 answers carry no body and no length.
        if !(self.status < 200 || self.status == 204 || self.status == 304) {
            let _ = write!(h, "Content-Length: {}\r\n", self.body.len());
        }
        if let Some(ct) = self.content_type {
            let _ = write!(h, "Content-Type: {ct}\r\n");
        }
        for (n, v) in &self.headers {
            let _ = write!(h, "{n}: {v}\r\n");
        }
        if close {
            h.push_str("Connection: close\r\n");
        } else if http10_keep_alive {
            h.push_str("Connection: keep-alive\r\n");
        }
        h.push_str("\r\n");
        let mut out = h.into_bytes();
        if !head_only && self.status != 204 && self.status != 304 {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        302 => "Found",
        202 => "Accepted",
        204 => "No Content",
        300 => "Multiple Choices",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What went wrong before a request could be routed; the answer closes the
/// connection (what follows on it can no longer be framed).
#[derive(Debug)]
struct Fatal(Response);

/// A parsed head: the request line, the headers, and where the body starts.
struct Head {
    method: String,
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
    len: usize,
}

/// Parses a head at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8], max: usize) -> Result<Option<Head>, Fatal> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max {
                return Err(Fatal(Response::error(
                    431,
                    format!("request head over {max} bytes (limits.http_max_header_bytes)"),
                )));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Fatal(Response::error(
                431,
                format!("more than {MAX_HEADERS} header lines"),
            )))
        }
        Err(e) => return Err(Fatal(Response::error(400, format!("malformed request: {e}")))),
    };
    if n > max {
        return Err(Fatal(Response::error(
            431,
            format!("request head over {max} bytes (limits.http_max_header_bytes)"),
        )));
    }
    // Complete means every field is present; the defaults never apply.
    let version = req.version.unwrap_or(1);
    Ok(Some(Head {
        method: req.method.unwrap_or("").to_owned(),
        target: req.path.unwrap_or("").to_owned(),
        version,
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
        len: n,
    }))
}

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

fn framing(head: &Head, max_body: usize) -> Result<Framing, Fatal> {
    let bad = |m: &str| Fatal(Response::error(400, m.to_owned()));
    let te: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_slice())
        .collect();
    let cl: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_slice())
        .collect();
    if !te.is_empty() {
        // Both framings at once is how requests are smuggled past proxies.
        if !cl.is_empty() {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        let all = te.join(&b","[..]);
        let codings: Vec<String> = String::from_utf8_lossy(&all)
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if codings.as_slice() == ["chunked"] {
            return Ok(Framing::Chunked);
        }
        return Err(Fatal(Response::error(
            501,
            format!("transfer coding {codings:?} is not supported (only chunked)"),
        )));
    }
    let mut len: Option<usize> = None;
    for v in cl {
        let text = std::str::from_utf8(v).map_err(|_| bad("Content-Length is not a number"))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("Content-Length is not a number"));
            }
            let n: usize = part.parse().unwrap_or(usize::MAX);
            if len.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            len = Some(n);
        }
    }
    let len = len.unwrap_or(0);
    if len > max_body {
        return Err(Fatal(Response::error(
            413,
            format!("body of {len} bytes over {max_body} (limits.http_max_body_bytes)"),
        )));
    }
    Ok(Framing::Length(len))
}

/// Decodes a chunked body at the start of `buf`: the body and the bytes it
/// took, `Ok(None)` while incomplete. Chunk extensions and trailers are
/// read and ignored.
fn dechunk(buf: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, Fatal> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (start, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => {
                // A size line is short; a long one is garbage, not slowness.
                if buf.len() - at > 1024 {
                    return Err(Fatal(Response::error(400, "malformed chunk size line")));
                }
                return Ok(None);
            }
            Err(_) => return Err(Fatal(Response::error(400, "malformed chunk size"))),
        };
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > max_body.saturating_sub(body.len()) {
            return Err(Fatal(Response::error(
                413,
                format!("body over {max_body} bytes (limits.http_max_body_bytes)"),
            )));
        }
        at += start;
        if size == 0 {
            // Trailers, each a line, then an empty line.
            loop {
                let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() - at > 8192 {
                        return Err(Fatal(Response::error(400, "trailer section too long")));
                    }
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err(Fatal(Response::error(400, "chunk data not followed by CRLF")));
        }
        at += 2;
    }
}

/// Runs the request parsers on arbitrary bytes as a connection would, one
/// request after another while the bytes last: the head, the body framing
/// (length or chunked), the target, the route and the query string. For
/// the `http` fuzz target (`tools/fuzz`, docs/fuzzing.md): it must never
/// panic, and what it accepts must lie within the bytes it was given.
pub fn fuzz_requests(buf: &[u8]) {
    const MAX_HEAD: usize = 16 << 10;
    const MAX_BODY: usize = 1 << 20;
    const QUERY_KEYS: &[&str] = &["prefix", "limit", "cursor", "count", "consistency", "name", "json"];
    let mut at = 0;
    while at < buf.len() {
        let head = match parse_head(&buf[at..], MAX_HEAD) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        assert!(head.len > 0 && head.len <= buf.len() - at, "a head past the bytes");
        at += head.len;
        let used = match framing(&head, MAX_BODY) {
            Ok(Framing::Length(n)) if n <= buf.len() - at => n,
            Ok(Framing::Length(_)) | Err(_) => return,
            Ok(Framing::Chunked) => match dechunk(&buf[at..], MAX_BODY) {
                Ok(Some((body, used))) => {
                    assert!(used <= buf.len() - at, "a chunked body past the bytes");
                    assert!(
                        body.len() <= MAX_BODY && body.len() <= used,
                        "a body larger than its chunks"
                    );
                    used
                }
                Ok(None) | Err(_) => return,
            },
        };
        let _ = connection_option(&head);
        let (path, q) = split_target(&head.target);
        let _ = route(&head.method, &path);
        let _ = query(&q, QUERY_KEYS);
        at += used;
    }
}

/// Splits a request target into path and query; an absolute-form target
/// (`http://host/path`) keeps its path.
fn split_target(target: &str) -> (String, String) {
    let t = match target.find("://") {
        Some(i) if !target.starts_with('/') => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        _ => target,
    };
    match t.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (t.to_owned(), String::new()),
    }
}

/// Serves one HTTP connection until it closes, the node stops, or a
/// request cannot be framed.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    shard: &Rc<Shard>,
    core: &Rc<HttpCore>,
    mut stream: S,
    remote: Option<SocketAddr>,
    over_limit: bool,
) {
    if over_limit {
        let r = Response::error(503, "max number of clients reached").with("Retry-After", "1");
        let _ = send(&mut stream, &r.encode(false, true, false)).await;
        return;
    }
    let max_head = usize::try_from(shard.config.limits.http_max_header_bytes).unwrap_or(usize::MAX);
    let max_body = usize::try_from(shard.config.limits.http_max_body_bytes).unwrap_or(usize::MAX);
    let max_inflight = usize::try_from(shard.config.limits.http_max_inflight_per_core).unwrap_or(usize::MAX);
    // Bytes buffered for one request: its head, its body and (chunked)
    // as much again for the framing.
    let limit = max_head.saturating_add(max_body).saturating_mul(2);
    let session = Session::default();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        // The head.
        let head = loop {
            match parse_head(&buf, max_head) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(Fatal(r)) => {
                    let _ = send(&mut stream, &r.encode(false, true, false)).await;
                    return;
                }
            }
            let partial = !buf.is_empty();
            if !fill(shard, &mut stream, &mut buf, partial, limit).await {
                return;
            }
        };
        let keep_alive = match (head.version, connection_option(&head)) {
            (_, Some(ConnOpt::Close)) => false,
            (1, _) => true,
            (_, Some(ConnOpt::KeepAlive)) => true,
            _ => false,
        };
        let http10_keep_alive = head.version == 0 && keep_alive;
        let head_only = head.method == "HEAD";
        // The body.
        let framed = match framing(&head, max_body) {
            Ok(f) => f,
            Err(Fatal(r)) => {
                let _ = send(&mut stream, &r.encode(head_only, true, false)).await;
                return;
            }
        };
        let expects_continue = head
            .headers
            .iter()
            .any(|(n, v)| n == "expect" && v.eq_ignore_ascii_case(b"100-continue"));
        let mut continued = false;
        let (body, used) = loop {
            let got = match framed {
                Framing::Length(n) if buf.len() >= head.len + n => {
                    Ok(Some((buf[head.len..head.len + n].to_vec(), head.len + n)))
                }
                Framing::Length(_) => Ok(None),
                Framing::Chunked => dechunk(&buf[head.len..], max_body).map(|o| o.map(|(b, n)| (b, head.len + n))),
            };
            match got {
                Ok(Some(x)) => break x,
                Ok(None) => {}
                Err(Fatal(r)) => {
                    let _ = send(&mut stream, &r.encode(head_only, true, false)).await;
                    return;
                }
            }
            if expects_continue && !continued {
                continued = true;
                if send(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                    return;
                }
            }
            if !fill(shard, &mut stream, &mut buf, true, limit).await {
                return;
            }
        };
        let (path, query) = split_target(&head.target);
        let req = HttpRequest {
            method: head.method,
            path,
            query,
            headers: head.headers,
            body,
        };
        buf.drain(..used);
        // Serve it.
        let resp = if core.inflight.get() >= max_inflight {
            shard.metrics.http_rejected();
            Response::error(
                503,
                format!("{max_inflight} HTTP requests in flight on this core (limits.http_max_inflight_per_core)"),
            )
            .with("Retry-After", "1")
        } else {
            core.inflight.set(core.inflight.get() + 1);
            let r = handle(shard, core, &session, &req, remote).await;
            core.inflight.set(core.inflight.get().saturating_sub(1));
            r
        };
        let close = !keep_alive || shard.stopping();
        if send(&mut stream, &resp.encode(head_only, close, http10_keep_alive))
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

/// Reads more into `buf`; false when the connection is done (EOF, error,
/// shutdown, or a request half sent for too long, which is answered 408),
/// or when `max` bytes are buffered without a complete request (answered
/// 413: a chunked body whose framing costs more than its data).
/// Writes `bytes` and flushes: over TLS, written bytes may wait in the
/// session until a flush.
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn fill<S: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    stream: &mut S,
    buf: &mut Vec<u8>,
    partial: bool,
    max: usize,
) -> bool {
    let len = buf.len();
    if len >= max {
        let r = Response::error(413, "request too large (framing included)");
        let _ = send(stream, &r.encode(false, true, false)).await;
        return false;
    }
    buf.resize(len + READ_CHUNK, 0);
    let r = read_some(shard, stream, &mut buf[len..], partial).await;
    match r {
        Ok(Some(n)) if n > 0 => {
            buf.truncate(len + n);
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            buf.truncate(len);
            let r = Response::error(408, "request half-sent for too long; closing");
            let _ = send(stream, &r.encode(false, true, false)).await;
            false
        }
        // EOF, a socket error, or shutdown (nothing half-received is served).
        _ => {
            buf.truncate(len);
            false
        }
    }
}

enum ConnOpt {
    Close,
    KeepAlive,
}

fn connection_option(head: &Head) -> Option<ConnOpt> {
    let mut out = None;
    for (n, v) in &head.headers {
        if n != "connection" {
            continue;
        }
        for opt in String::from_utf8_lossy(v).split(',') {
            let o = opt.trim();
            if o.eq_ignore_ascii_case("close") {
                return Some(ConnOpt::Close);
            }
            if o.eq_ignore_ascii_case("keep-alive") {
                out = Some(ConnOpt::KeepAlive);
            }
        }
    }
    out
}

/// Who is asking: with a users file, the user of the request's Basic
/// credentials (`Ok(None)` without a users file).
async fn authenticate(
    shard: &Shard,
    core: &HttpCore,
    session: &Session,
    req: &HttpRequest,
    remote: Option<SocketAddr>,
) -> Result<Option<Arc<User>>, Response> {
    use base64::Engine as _;
    if !shard.security.requires_auth() {
        return Ok(None);
    }
    let challenge = |m: &str| Response::error(401, m.to_owned()).with("WWW-Authenticate", "Basic realm=\"corekv\"");
    let Some(h) = req.header("authorization") else {
        return Err(challenge(
            "authentication required: send HTTP Basic credentials (Authorization: Basic base64(user:password))",
        ));
    };
    let h = String::from_utf8_lossy(h);
    let Some((scheme, cred)) = h.trim().split_once(' ') else {
        return Err(challenge("malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(challenge("only the Basic authentication scheme is supported"));
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(cred.trim()) else {
        return Err(challenge("malformed Basic credentials (not base64)"));
    };
    let Some(colon) = raw.iter().position(|&b| b == b':') else {
        return Err(challenge("malformed Basic credentials (no ':')"));
    };
    let user = String::from_utf8_lossy(&raw[..colon]).into_owned();
    let password = &raw[colon + 1..];
    let digest: [u8; 32] = Sha256::digest(password).into();
    if let Some(u) = core
        .verified
        .borrow()
        .iter()
        .find(|(n, d, _)| *n == user && *d == digest)
        .map(|(_, _, u)| u.clone())
    {
        return Ok(Some(u));
    }
    match session.login(shard, &user, password, remote).await {
        Ok(u) => {
            let mut v = core.verified.borrow_mut();
            if v.len() >= AUTH_CACHE_ENTRIES {
                v.remove(0);
            }
            v.push((user, digest, u.clone()));
            Ok(Some(u))
        }
        Err(LoginError::Throttled) => Err(Response::error(
            429,
            "too many failed authentications on this node; try again later",
        )
        .with("Retry-After", "1")),
        Err(_) => Err(challenge("invalid username-password pair")),
    }
}

/// What a route needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Anyone authenticated (or anyone, without a users file).
    Any,
    /// A user with admin on every key; without a users file, nothing,
    /// unless the node has a cluster secret: then the operator routes that
    /// change the cluster are refused (they would otherwise be open to
    /// whoever reaches the HTTP port, while the binary port asks for the
    /// secret).
    Admin {
        /// Whether the route changes the cluster (GET status does not).
        mutating: bool,
    },
}

/// Checks `user` against what the route needs.
pub(crate) fn permit(shard: &Shard, user: Option<&User>, need: Need) -> Result<(), Response> {
    match (need, user) {
        (Need::Any, _) => Ok(()),
        (Need::Admin { .. }, Some(u)) if u.can_all_under(Access::Admin, b"") => Ok(()),
        (Need::Admin { .. }, Some(u)) => Err(Response::error(
            403,
            format!(
                "user {} has no admin permission on every key (prefix \"\"), which operator routes need",
                u.name
            ),
        )),
        (Need::Admin { mutating }, None) => {
            if mutating && shard.security.cluster_secret.is_some() && !shard.security.requires_auth() {
                return Err(Response::error(
                    403,
                    "this node has a cluster secret and no users file: the operator routes that change the \
                     cluster need an admin user over HTTP (security.users_file); or use the corekv command \
                     with --cluster-secret-file",
                ));
            }
            Ok(())
        }
    }
}

/// Routes a request, records its metrics and logs it if slow.
async fn handle(
    shard: &Rc<Shard>,
    core: &HttpCore,
    session: &Session,
    req: &HttpRequest,
    remote: Option<SocketAddr>,
) -> Response {
    let route = route(&req.method, &req.path);
    let mut info = RequestInfo::new(Proto::Http, route.op(), Level::None, route.key_len());
    let resp = match route {
        Route::NotFound => Response::error(404, format!("no route {}", req.path)),
        Route::BadMethod(allow) => Response::error(405, format!("{} is not allowed on {}", req.method, req.path))
            .with("Allow", allow.to_owned()),
        Route::Openapi => Response::bytes(200, "application/yaml", OPENAPI.as_bytes().to_vec()),
        // The way in for a browser; nothing to protect in a redirect.
        Route::Root => Response::empty(302).with("Location", "/dashboard"),
        r => match authenticate(shard, core, session, req, remote).await {
            Err(resp) => resp,
            Ok(user) => match r {
                Route::Api(a) => api::serve(shard, req, a, user.as_deref(), &mut info).await,
                Route::Admin(a) => admin::serve(shard, req, a, user.as_deref()).await,
                Route::Metrics => match permit(shard, user.as_deref(), Need::Any) {
                    Err(resp) => resp,
                    Ok(()) => admin::metrics(shard, req).await,
                },
                // The page holds no data, but asking for credentials here
                // has the browser send them with the page's own requests
                // (which need admin: operator routes).
                Route::Dashboard => match permit(shard, user.as_deref(), Need::Any) {
                    Err(resp) => resp,
                    Ok(()) => dashboard::serve(req),
                },
                _ => Response::error(404, "no route"),
            },
        },
    };
    crate::metrics::finish(shard, &info, resp.status < 400);
    resp
}

/// The OpenAPI description of this port, served at `/api/v1/openapi.yaml`.
const OPENAPI: &str = include_str!("../../../../docs/openapi.yaml");

/// A request's destination.
#[derive(Debug)]
enum Route {
    Api(api::Route),
    Admin(admin::Route),
    Metrics,
    Openapi,
    Dashboard,
    /// `/`: a redirect to the dashboard.
    Root,
    NotFound,
    /// A known path with another method; the methods it takes.
    BadMethod(&'static str),
}

impl Route {
    fn op(&self) -> OpKind {
        match self {
            Route::Api(a) => a.op(),
            Route::Admin(_) => OpKind::Admin,
            Route::Metrics => OpKind::Metrics,
            _ => OpKind::Other,
        }
    }

    fn key_len(&self) -> usize {
        match self {
            Route::Api(a) => a.key_len(),
            _ => 0,
        }
    }
}

/// Percent-decodes a path segment or query component into bytes.
pub(crate) fn decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

fn route(method: &str, path: &str) -> Route {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segs.as_slice() {
        ["metrics"] => only(method, "GET", Route::Metrics),
        [""] => only(method, "GET", Route::Root),
        ["dashboard"] => only(method, "GET", Route::Dashboard),
        ["api", "v1", "openapi.yaml"] => only(method, "GET", Route::Openapi),
        ["api", "v1", "admin", rest @ ..] => match admin::route(method, rest) {
            Ok(Some(a)) => Route::Admin(a),
            Ok(None) => Route::NotFound,
            Err(allow) => Route::BadMethod(allow),
        },
        ["api", "v1", rest @ ..] => match api::route(method, rest) {
            Ok(Some(a)) => Route::Api(a),
            Ok(None) => Route::NotFound,
            Err(allow) => Route::BadMethod(allow),
        },
        _ => Route::NotFound,
    }
}

fn only(method: &str, allowed: &'static str, r: Route) -> Route {
    if method == allowed || (allowed == "GET" && method == "HEAD") {
        r
    } else {
        Route::BadMethod(if allowed == "GET" { "GET, HEAD" } else { allowed })
    }
}

/// Parses a query string into (name, value) byte pairs; names must be in
/// `known`, each at most once.
pub(crate) fn query<'a>(q: &str, known: &[&'a str]) -> Result<Vec<(&'a str, Vec<u8>)>, Response> {
    let mut out: Vec<(&'a str, Vec<u8>)> = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (n, v) = part.split_once('=').unwrap_or((part, ""));
        let plus = |s: &str| s.replace('+', " ");
        let name = String::from_utf8_lossy(&decode(&plus(n))).into_owned();
        let Some(&k) = known.iter().find(|k| **k == name) else {
            return Err(Response::error(
                400,
                format!("unknown query parameter `{name}` (known: {})", known.join(", ")),
            ));
        };
        if out.iter().any(|(x, _)| *x == k) {
            return Err(Response::error(400, format!("query parameter `{k}` given twice")));
        }
        out.push((k, decode(&plus(v))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_or_fail_with_a_status() {
        let h = parse_head(
            b"GET /api/v1/keys/a%2Fb?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            1024,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.version),
            ("GET", "/api/v1/keys/a%2Fb?x=1", 1)
        );
        assert_eq!(framing(&h, 10).unwrap(), Framing::Length(3));
        assert!(matches!(framing(&h, 2), Err(Fatal(r)) if r.status == 413));
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost", 1024).unwrap().is_none());
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost: x", 10), Err(Fatal(r)) if r.status == 431));
        assert!(matches!(parse_head(b"\x00\x01garbage\r\n\r\n", 1024), Err(Fatal(r)) if r.status == 400));
        let both = parse_head(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            1024,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(framing(&both, 100), Err(Fatal(r)) if r.status == 400));
        let twice = parse_head(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            1024,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(framing(&twice, 100), Err(Fatal(r)) if r.status == 400));
        let neg = parse_head(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert!(matches!(framing(&neg, 100), Err(Fatal(r)) if r.status == 400));
        let gz = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert!(matches!(framing(&gz, 100), Err(Fatal(r)) if r.status == 501));
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nNEXT", 100).unwrap(),
            Some((b"abcde".to_vec(), 24))
        );
        assert_eq!(dechunk(b"3\r\nab", 100).unwrap(), None);
        assert_eq!(dechunk(b"0\r\nTrailer: 1\r\n", 100).unwrap(), None);
        assert_eq!(
            dechunk(b"0\r\nTrailer: 1\r\n\r\n", 100).unwrap(),
            Some((Vec::new(), 17))
        );
        assert!(matches!(dechunk(b"zz\r\n", 100), Err(Fatal(r)) if r.status == 400));
        assert!(matches!(dechunk(b"ffffffffffff\r\n", 100), Err(Fatal(r)) if r.status == 413));
        assert!(matches!(dechunk(b"3\r\nabcXY", 100), Err(Fatal(r)) if r.status == 400));
    }

    #[test]
    fn routes_and_queries() {
        assert!(matches!(route("GET", "/metrics"), Route::Metrics));
        assert!(matches!(route("POST", "/metrics"), Route::BadMethod(_)));
        assert!(matches!(route("GET", "/nope"), Route::NotFound));
        assert!(matches!(route("GET", "/"), Route::Root));
        assert!(matches!(route("HEAD", "/dashboard"), Route::Dashboard));
        assert!(matches!(route("POST", "/dashboard"), Route::BadMethod(_)));
        assert!(matches!(route("GET", "/dashboard/x"), Route::NotFound));
        assert!(matches!(route("GET", "/api/v1/nope"), Route::NotFound));
        assert!(matches!(route("PATCH", "/api/v1/keys/k"), Route::BadMethod(_)));
        assert_eq!(split_target("/a/b?c=d"), ("/a/b".to_owned(), "c=d".to_owned()));
        assert_eq!(split_target("http://h:1/a?x"), ("/a".to_owned(), "x".to_owned()));
        let q = query("prefix=a%2Fb+c&limit=5", &["prefix", "limit", "cursor"]).unwrap();
        assert_eq!(q, vec![("prefix", b"a/b c".to_vec()), ("limit", b"5".to_vec())]);
        assert!(query("what=1", &["prefix"]).is_err());
        assert!(query("prefix=1&prefix=2", &["prefix"]).is_err());
    }

    #[test]
    fn encoded_answers() {
        let r = Response::bytes(200, "text/plain", b"hi".to_vec()).with("X-A", "1");
        let text = String::from_utf8(r.encode(false, false, false)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nhi"
        );
        let head = String::from_utf8(r.encode(true, true, false)).unwrap();
        assert!(head.ends_with("Connection: close\r\n\r\n") && head.contains("Content-Length: 2"));
        let none = String::from_utf8(Response::empty(204).encode(false, false, true)).unwrap();
        assert_eq!(none, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");
        let f = Response::failure(&Failure::new(FailureKind::Timeout, "slow"));
        assert_eq!(f.status, 504);
    }
}
