//! A minimal blocking client for the binary protocol, for tests that must
//! control the bytes (bad input), the port (shard-aware routing) or the node
//! that coordinates a request (cluster tests). Not the SDK: it does no
//! routing or retries; [`Wire::call_many`] pipelines a batch on one
//! connection.
// Test support: a failure here is a failed test, and a panic with the
// message is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use corekv_net::frame::{Frame, FrameDecoder, FrameHeader};
use corekv_net::msg::{Consistency, ErrorCode, Limits, Op, Request, Response};

/// A response with owned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// OK.
    Ok,
    /// VALUE: value, meta, ttl_ms.
    Value(Vec<u8>, Vec<u8>, u64),
    /// NOT_FOUND.
    NotFound,
    /// VALUES.
    Values(Vec<Option<Vec<u8>>>),
    /// SCAN_PAGE: (key, value) pairs and the next cursor.
    Page(Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>),
    /// INTEGER.
    Int(i64),
    /// ERROR code and message.
    Error(ErrorCode, String),
    /// RING: epoch, (address, cores, shard_port, token count).
    Ring(u64, Vec<(String, u16, u16, usize)>),
    /// VERSIONS: context, (value, expiry_ms) per sibling.
    Versions(Vec<u8>, Vec<(Vec<u8>, u64)>),
    /// CAS_RESULT: applied, value after.
    Cas(bool, Option<Vec<u8>>),
}

impl Reply {
    fn of(r: &Response<'_>) -> Reply {
        match r {
            Response::Ok => Reply::Ok,
            Response::Value(v) => Reply::Value(v.value.to_vec(), v.meta.to_vec(), v.ttl_ms),
            Response::NotFound => Reply::NotFound,
            Response::Values(l) => Reply::Values(l.iter().map(|v| v.map(|v| v.value.to_vec())).collect()),
            Response::ScanPage { entries, next_cursor } => Reply::Page(
                entries.iter().map(|kv| (kv.key.to_vec(), kv.value.to_vec())).collect(),
                next_cursor.to_vec(),
            ),
            Response::Integer(n) => Reply::Int(*n),
            Response::Error { code, message } => Reply::Error(*code, message.to_string()),
            Response::Ring { epoch, nodes } => Reply::Ring(
                *epoch,
                nodes
                    .iter()
                    .map(|n| (n.address.to_string(), n.cores, n.shard_port, n.tokens.len()))
                    .collect(),
            ),
            Response::Versions { context, siblings } => Reply::Versions(
                context.to_vec(),
                siblings.iter().map(|s| (s.value.to_vec(), s.expiry_ms)).collect(),
            ),
            Response::CasResult { applied, value } => Reply::Cas(*applied, value.map(<[u8]>::to_vec)),
        }
    }
}

/// One connection.
#[derive(Debug)]
pub struct Wire {
    s: TcpStream,
    dec: FrameDecoder,
    next_id: u64,
    consistency: Consistency,
    sloppy_quorum: bool,
}

/// Most requests [`Wire::call_many`] keeps in flight: below the server's
/// default per-connection limit (128), so the pipeline never stalls on it.
const PIPELINE_WINDOW: usize = 64;

impl Wire {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> std::io::Result<Wire> {
        Wire::connect_to("127.0.0.1", port)
    }

    /// Connects to `ip`:`port` (a cluster node listens on its own loopback IP).
    pub fn connect_to(ip: &str, port: u16) -> std::io::Result<Wire> {
        let addr: std::net::IpAddr = ip
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{ip}: {e}")))?;
        let s = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Wire {
            s,
            dec: FrameDecoder::new(64 << 20),
            next_id: 1,
            consistency: Consistency::One,
            sloppy_quorum: false,
        })
    }

    /// The same connection, its requests carrying consistency `c` (ONE until set).
    #[must_use]
    pub fn with_consistency(mut self, c: Consistency) -> Wire {
        self.consistency = c;
        self
    }

    /// The same connection, its requests allowing a sloppy quorum or not
    /// (not until set).
    #[must_use]
    pub fn with_sloppy_quorum(mut self, allow: bool) -> Wire {
        self.sloppy_quorum = allow;
        self
    }

    /// A fresh request id for a frame the caller encodes itself.
    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)
    }

    /// Closes the sending direction (the server sees EOF).
    pub fn shutdown_write(&self) -> std::io::Result<()> {
        self.s.shutdown(std::net::Shutdown::Write)
    }

    /// Encodes a request (the connection's consistency, ONE unless set;
    /// the server's default timeout) and returns its id.
    pub fn send(&mut self, op: Op<'_>) -> std::io::Result<u64> {
        let id = self.next_request_id();
        let mut b = Vec::new();
        Request {
            consistency: self.consistency,
            timeout_ms: 0,
            sloppy_quorum: self.sloppy_quorum,
            op,
        }
        .encode_frame(id, &mut b)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.s.write_all(&b)?;
        Ok(id)
    }

    /// The next response frame: (request id, reply); `Ok(None)` at EOF.
    pub fn recv(&mut self) -> std::io::Result<Option<(u64, Reply)>> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => return Ok(Some(decode(&f)?)),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// The next frame, undecoded (for node-to-node answers, which are not
    /// client responses); `Ok(None)` at EOF.
    pub fn recv_frame(&mut self) -> std::io::Result<Option<(FrameHeader, Vec<u8>)>> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => return Ok(Some((f.header, f.body.to_vec()))),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes into the decoder; false at EOF.
    fn fill(&mut self) -> std::io::Result<bool> {
        let buf = self.dec.spare(64 << 10);
        let n = loop {
            match self.s.read(buf) {
                // A signal to the test process (a child exiting) interrupts
                // a blocked read; it is not an answer, so read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.dec.commit(n);
        Ok(n > 0)
    }

    /// Sends every op, at most [`PIPELINE_WINDOW`] in flight, and returns
    /// the replies in the order of `ops` (the server may answer out of order).
    pub fn call_many(&mut self, ops: &[Op<'_>]) -> std::io::Result<Vec<Reply>> {
        let mut slot_of: HashMap<u64, usize> = HashMap::new();
        let mut out: Vec<Option<Reply>> = vec![None; ops.len()];
        let (mut sent, mut done) = (0, 0);
        while done < ops.len() {
            while sent < ops.len() && sent - done < PIPELINE_WINDOW {
                let id = self.send(ops[sent])?;
                slot_of.insert(id, sent);
                sent += 1;
            }
            let (id, reply) = self.recv()?.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {} of {} answers", done, ops.len()),
                )
            })?;
            let slot = slot_of
                .remove(&id)
                .ok_or_else(|| std::io::Error::other(format!("answer to unknown request {id}")))?;
            out[slot] = Some(reply);
            done += 1;
        }
        // Each request id was sent once and removed once, so every slot is filled.
        let out: Vec<Reply> = out.into_iter().flatten().collect();
        if out.len() != ops.len() {
            return Err(std::io::Error::other("a pipelined request got no answer"));
        }
        Ok(out)
    }

    /// Sends `op` and waits for its response; an I/O error (connection
    /// lost, read timeout) or EOF is an `Err`, for callers that expect the
    /// node to die under them.
    pub fn try_call(&mut self, op: Op<'_>) -> std::io::Result<Reply> {
        let id = self.send(op)?;
        loop {
            match self.recv()? {
                Some((rid, r)) if rid == id => return Ok(r),
                // An answer to an earlier request that timed out on our side.
                Some(_) => continue,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed before the answer",
                    ))
                }
            }
        }
    }

    /// Sets how long a read waits for the node (30 s after connect).
    pub fn set_read_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.s.set_read_timeout(Some(t))
    }

    /// Sends `op` and waits for its response.
    pub fn call(&mut self, op: Op<'_>) -> Reply {
        let id = self.send(op).expect("send");
        let (rid, r) = self.recv().expect("recv").expect("response before EOF");
        assert_eq!(rid, id, "response to another request");
        r
    }
}

fn decode(f: &Frame<'_>) -> std::io::Result<(u64, Reply)> {
    let r = Response::decode(f, &Limits::UNBOUNDED).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((f.header.request_id, Reply::of(&r)))
}
