//! A small HTTP/1.1 client over one TCP connection, for the HTTP port's
//! tests: keep-alive, raw bytes (malformed requests, pipelining, chunked
//! bodies) and the answers parsed with `httparse`, so a test sees exactly
//! what went over the wire.
// Test support: a failure here is a failed test, and a panic with the
// message is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a test waits for an answer (operator routes run repairs).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// One answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection to a node's HTTP port.
#[derive(Debug)]
pub struct Http {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    /// `Authorization` sent with every request, if set.
    auth: Option<String>,
}

impl Http {
    /// Connects to `host:port`.
    pub fn connect(host: &str, port: u16) -> std::io::Result<Http> {
        let stream = TcpStream::connect((host, port))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            host: format!("{host}:{port}"),
            buf: Vec::new(),
            auth: None,
        })
    }

    /// Sends HTTP Basic credentials with every request from now on.
    pub fn with_basic(mut self, user: &str, password: &str) -> Http {
        self.auth = Some(format!(
            "Basic {}",
            base64_encode(format!("{user}:{password}").as_bytes())
        ));
        self
    }

    /// Sends one request and reads its answer. `headers` are `(name, value)`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(a) = &self.auth {
            head.push_str(&format!("Authorization: {a}\r\n"));
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        self.read_response(method == "HEAD")
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], b"").expect("GET")
    }

    /// `method` `path` with a JSON body.
    pub fn json(&mut self, method: &str, path: &str, body: &str) -> HttpResponse {
        self.request(method, path, &[("Content-Type", "application/json")], body.as_bytes())
            .expect("request")
    }

    /// Writes raw bytes on the connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one answer (`head_only`: the answer to a HEAD, whose
    /// Content-Length describes a body that is not sent).
    pub fn read_response(&mut self, head_only: bool) -> std::io::Result<HttpResponse> {
        loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = r
                .parse(&self.buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
            {
                let status = r.code.unwrap_or(0);
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len = if head_only || status == 204 || status < 200 {
                    0
                } else {
                    headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap_or(0))
                };
                while self.buf.len() < n + len {
                    self.fill()?;
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Ok(HttpResponse { status, headers, body });
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Whether the server closed the connection (reads EOF within `wait`).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut b = [0u8; 1024];
        let closed = loop {
            match self.stream.read(&mut b) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    break false
                }
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_read_timeout(Some(READ_TIMEOUT));
        closed
    }
}

/// Percent-encodes every byte but unreserved ones (for keys in paths).
pub fn percent(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64; `None` if it is not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0, 255, 7, 128, 9]] {
            let e = base64_encode(s);
            assert_eq!(base64_decode(&e).unwrap(), s, "{e}");
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(percent(b"a/b c"), "a%2Fb%20c");
    }
}
