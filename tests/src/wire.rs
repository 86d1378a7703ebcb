//! A minimal blocking client for the binary protocol, for tests that must
//! control the bytes (bad input) or the port (shard-aware routing). Not the
//! SDK: it does no routing, pipelining or retries.
// Test support: a failure here is a failed test, and a panic with the
// message is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use corekv_net::frame::{Frame, FrameDecoder};
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
        }
    }
}

/// One connection.
#[derive(Debug)]
pub struct Wire {
    s: TcpStream,
    dec: FrameDecoder,
    next_id: u64,
}

impl Wire {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> std::io::Result<Wire> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Wire {
            s,
            dec: FrameDecoder::new(64 << 20),
            next_id: 1,
        })
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)
    }

    /// Closes the sending direction (the server sees EOF).
    pub fn shutdown_write(&self) -> std::io::Result<()> {
        self.s.shutdown(std::net::Shutdown::Write)
    }

    /// Encodes a request (consistency ONE, no timeout) and returns its id.
    pub fn send(&mut self, op: Op<'_>) -> std::io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut b = Vec::new();
        Request {
            consistency: Consistency::One,
            timeout_ms: 0,
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
            let buf = self.dec.spare(64 << 10);
            let n = self.s.read(buf)?;
            self.dec.commit(n);
            if n == 0 {
                return Ok(None);
            }
        }
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
