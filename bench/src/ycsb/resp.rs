//! A small RESP2 client over tokio TCP for the Redis-protocol targets
//! (redis-server, or corekv's own RESP port): one command per round trip on
//! a connection, connections pooled so concurrent operations use their own.
//!
//! Replies are parsed with every length bounded before it is trusted
//! ([`MAX_BULK`], [`MAX_ARRAY`]), and a malformed reply is an error, never a
//! panic.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Error;

/// Largest bulk string accepted in a reply (bytes).
pub const MAX_BULK: usize = 64 << 20;
/// Largest array accepted in a reply (elements).
pub const MAX_ARRAY: usize = 1 << 20;
/// Longest simple line (status, error, integer, length header) accepted.
const MAX_LINE: usize = 64 << 10;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other statuses.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` bulk string; `None` for the nil bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for the nil array `*-1`.
    Array(Option<Vec<Reply>>),
}

/// A reply being read (boxed: arrays read their elements recursively).
type ReplyFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, Error>> + Send + 'a>>;

/// One connection.
pub struct Conn {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
}

fn protocol(what: impl Into<String>) -> Error {
    Error::Resp(what.into())
}

impl Conn {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<Conn, Error> {
        let s = TcpStream::connect(addr).await.map_err(|e| Error::Io {
            what: format!("connect to {addr}"),
            source: e,
        })?;
        // One small command per round trip: Nagle would add up to 40 ms.
        s.set_nodelay(true).map_err(|e| Error::Io {
            what: "TCP_NODELAY".to_owned(),
            source: e,
        })?;
        Ok(Conn {
            stream: BufReader::new(s),
            out: Vec::with_capacity(2048),
        })
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, Error> {
        self.out.clear();
        self.out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
        let io = |e| Error::Io {
            what: "RESP connection".to_owned(),
            source: e,
        };
        self.stream.get_mut().write_all(&self.out).await.map_err(io)?;
        self.read_reply(0).await
    }

    async fn line(&mut self) -> Result<Vec<u8>, Error> {
        let mut line = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| Error::Io {
                what: "RESP connection".to_owned(),
                source: e,
            })?;
        if n == 0 {
            return Err(protocol("connection closed by the server"));
        }
        if !line.ends_with(b"\r\n") {
            return Err(protocol("reply line too long or not CRLF-terminated"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// Reads one reply; arrays recurse (boxed), at most 8 levels deep.
    fn read_reply(&mut self, depth: u32) -> ReplyFuture<'_> {
        Box::pin(async move {
            if depth > 8 {
                return Err(protocol("reply nested too deeply"));
            }
            let line = self.line().await?;
            let (&kind, rest) = line.split_first().ok_or_else(|| protocol("empty reply line"))?;
            let text = String::from_utf8_lossy(rest).into_owned();
            let int = |t: &str| t.parse::<i64>().map_err(|_| protocol(format!("bad integer {t:?}")));
            match kind {
                b'+' => Ok(Reply::Status(text)),
                b'-' => Ok(Reply::Error(text)),
                b':' => Ok(Reply::Integer(int(&text)?)),
                b'$' => {
                    let n = int(&text)?;
                    if n < 0 {
                        return Ok(Reply::Bulk(None));
                    }
                    let n = usize::try_from(n).map_err(|_| protocol("bulk length"))?;
                    if n > MAX_BULK {
                        return Err(protocol(format!("bulk of {n} bytes is over the {MAX_BULK}-byte bound")));
                    }
                    let mut buf = vec![0; n + 2];
                    self.stream.read_exact(&mut buf).await.map_err(|e| Error::Io {
                        what: "RESP connection".to_owned(),
                        source: e,
                    })?;
                    if !buf.ends_with(b"\r\n") {
                        return Err(protocol("bulk string not CRLF-terminated"));
                    }
                    buf.truncate(n);
                    Ok(Reply::Bulk(Some(buf)))
                }
                b'*' => {
                    let n = int(&text)?;
                    if n < 0 {
                        return Ok(Reply::Array(None));
                    }
                    let n = usize::try_from(n).map_err(|_| protocol("array length"))?;
                    if n > MAX_ARRAY {
                        return Err(protocol(format!("array of {n} elements is over the bound")));
                    }
                    let mut items = Vec::with_capacity(n.min(1024));
                    for _ in 0..n {
                        items.push(self.read_reply(depth + 1).await?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
                other => Err(protocol(format!("unknown reply type byte 0x{other:02x}"))),
            }
        })
    }
}

/// A pool of at most `max_conns` connections to one server: an operation
/// takes one (or opens a new one), and puts it back when it succeeded; a
/// connection that saw an error is dropped, since its stream may be out of
/// step. When all are busy an operation waits for one, within its timeout
/// (an open-loop run counts the wait, from the intended start).
pub struct Pool {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    slots: tokio::sync::Semaphore,
    timeout: Duration,
}

impl Pool {
    /// A pool of at most `max_conns` connections to `addr`; every command
    /// is limited to `timeout`.
    pub fn new(addr: &str, max_conns: usize, timeout: Duration) -> Pool {
        Pool {
            addr: addr.to_owned(),
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(max_conns.clamp(1, tokio::sync::Semaphore::MAX_PERMITS)),
            timeout,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn take(&self) -> Option<Conn> {
        // Poisoning: the Vec is valid after every push and pop.
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put(&self, c: Conn) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    /// Runs one command on a pooled connection; an error reply is
    /// [`Error::RespServer`].
    pub async fn call(&self, args: &[&[u8]]) -> Result<Reply, Error> {
        let fut = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| Error::Internal("the connection pool is closed".to_owned()))?;
            let mut c = match self.take() {
                Some(c) => c,
                None => Conn::connect(&self.addr).await?,
            };
            let r = c.call(args).await?;
            self.put(c);
            Ok::<Reply, Error>(r)
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(Reply::Error(e))) => Err(Error::RespServer(e)),
            Ok(r) => r,
            Err(_) => Err(Error::Timeout { after: self.timeout }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn reply_of(bytes: &'static [u8]) -> Result<Reply, Error> {
        let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::Io {
            what: "bind".into(),
            source: e,
        })?;
        let addr = l.local_addr().map_err(|e| Error::Io {
            what: "addr".into(),
            source: e,
        })?;
        let server = tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(bytes).await;
            }
        });
        let mut c = Conn::connect(&addr.to_string()).await?;
        let r = c.call(&[b"GET", b"k"]).await;
        let _ = server.await;
        r
    }

    #[tokio::test]
    async fn parses_replies_and_rejects_garbage() {
        assert_eq!(reply_of(b"+OK\r\n").await.ok(), Some(Reply::Status("OK".into())));
        assert_eq!(reply_of(b"$-1\r\n").await.ok(), Some(Reply::Bulk(None)));
        assert_eq!(
            reply_of(b"$3\r\nabc\r\n").await.ok(),
            Some(Reply::Bulk(Some(b"abc".to_vec())))
        );
        assert_eq!(
            reply_of(b"*2\r\n$1\r\na\r\n$-1\r\n").await.ok(),
            Some(Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a".to_vec())),
                Reply::Bulk(None)
            ])))
        );
        assert_eq!(reply_of(b":42\r\n").await.ok(), Some(Reply::Integer(42)));
        assert!(reply_of(b"$999999999999\r\n").await.is_err());
        assert!(reply_of(b"$3\r\nabcXY").await.is_err());
        assert!(reply_of(b"?what\r\n").await.is_err());
        assert!(reply_of(b":notanumber\r\n").await.is_err());
        assert!(reply_of(b"").await.is_err());
    }
}
