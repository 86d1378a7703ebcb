//! Reply encoding for RESP2 and RESP3 clients.
//!
//! The server keeps one [`ReplyWriter`] per connection (HELLO switches its
//! protocol) and calls it for every reply; RESP3-only types are downgraded the
//! way Redis downgrades them for RESP2 clients.

use super::{RespError, Value};

/// The protocol a connection speaks; RESP2 until the client sends `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// RESP2 (every client's default).
    #[default]
    Resp2,
    /// RESP3 (after `HELLO 3`).
    Resp3,
}

/// Writes replies for one protocol version into caller buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyWriter {
    /// The protocol replies are written in.
    pub proto: Proto,
}

/// Appends `prefix n CRLF`.
fn header(out: &mut Vec<u8>, prefix: u8, n: i64) {
    out.push(prefix);
    // itoa by hand would save a String per header; keep it simple until a profile says otherwise.
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a line, with CR and LF turned into spaces: a line-based reply must
/// not be able to inject a second reply into the stream (Redis does the same for errors).
fn line(out: &mut Vec<u8>, prefix: u8, text: &[u8]) {
    out.push(prefix);
    out.extend(text.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

fn len_i64(n: usize) -> i64 {
    // A Vec never holds more than isize::MAX elements, so this never saturates in practice.
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ReplyWriter {
    /// A writer for `proto`.
    pub fn new(proto: Proto) -> Self {
        ReplyWriter { proto }
    }

    /// `+text` (CR/LF in `text` become spaces).
    pub fn simple(&self, out: &mut Vec<u8>, text: &[u8]) {
        line(out, b'+', text);
    }

    /// `+OK`
    pub fn ok(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK\r\n");
    }

    /// `-msg`, where `msg` starts with its error code (`ERR ...`, `WRONGTYPE ...`).
    /// A message without an upper-case code gets `ERR ` in front, as Redis does.
    pub fn error(&self, out: &mut Vec<u8>, msg: &str) {
        let code_end = msg.find(' ').unwrap_or(msg.len());
        let has_code = code_end > 0 && msg[..code_end].bytes().all(|b| b.is_ascii_uppercase());
        if has_code {
            line(out, b'-', msg.as_bytes());
        } else {
            let mut m = Vec::with_capacity(msg.len() + 4);
            m.extend_from_slice(b"ERR ");
            m.extend_from_slice(msg.as_bytes());
            line(out, b'-', &m);
        }
    }

    /// `-WRONGTYPE Operation against a key holding the wrong kind of value`
    pub fn wrongtype(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    }

    /// `-ERR Protocol error: ...`, the last reply before closing the connection.
    pub fn protocol_error(&self, out: &mut Vec<u8>, err: &RespError) {
        self.error(out, &format!("ERR Protocol error: {err}"));
    }

    /// `:n`
    pub fn integer(&self, out: &mut Vec<u8>, n: i64) {
        header(out, b':', n);
    }

    /// `$len` + bytes.
    pub fn bulk(&self, out: &mut Vec<u8>, data: &[u8]) {
        // Header (at most 1 + 20 digits + CRLF), data, CRLF in one allocation:
        // a 1 KiB value into an empty reply otherwise reallocates it 4 times.
        out.reserve(data.len() + 27);
        header(out, b'$', len_i64(data.len()));
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }

    /// A missing value: RESP2 `$-1` (null bulk), RESP3 `_`.
    pub fn null(&self, out: &mut Vec<u8>) {
        match self.proto {
            Proto::Resp2 => out.extend_from_slice(b"$-1\r\n"),
            Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
        }
    }

    /// A missing aggregate: RESP2 `*-1` (null array), RESP3 `_`.
    pub fn null_array(&self, out: &mut Vec<u8>) {
        match self.proto {
            Proto::Resp2 => out.extend_from_slice(b"*-1\r\n"),
            Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
        }
    }

    /// `*n`; the caller writes `n` replies after it.
    pub fn array(&self, out: &mut Vec<u8>, n: usize) {
        header(out, b'*', len_i64(n));
    }

    /// A map of `pairs` entries; the caller writes key, value, key, value...
    /// RESP3 `%pairs`, RESP2 a flat array of `2 * pairs` (what HELLO returns to RESP2 clients).
    pub fn map(&self, out: &mut Vec<u8>, pairs: usize) {
        match self.proto {
            Proto::Resp2 => header(out, b'*', len_i64(pairs).saturating_mul(2)),
            Proto::Resp3 => header(out, b'%', len_i64(pairs)),
        }
    }

    /// A set of `n` members: RESP3 `~n`, RESP2 an array.
    pub fn set(&self, out: &mut Vec<u8>, n: usize) {
        match self.proto {
            Proto::Resp2 => header(out, b'*', len_i64(n)),
            Proto::Resp3 => header(out, b'~', len_i64(n)),
        }
    }

    /// A push message of `n` elements: RESP3 `>n`, RESP2 an array.
    pub fn push(&self, out: &mut Vec<u8>, n: usize) {
        match self.proto {
            Proto::Resp2 => header(out, b'*', len_i64(n)),
            Proto::Resp3 => header(out, b'>', len_i64(n)),
        }
    }

    /// A double: RESP3 `,x` (`inf`, `-inf`, `nan`), RESP2 a bulk string of the same text.
    pub fn double(&self, out: &mut Vec<u8>, x: f64) {
        let text = if x.is_nan() {
            "nan".to_string()
        } else if x.is_infinite() {
            if x > 0.0 { "inf" } else { "-inf" }.to_string()
        } else {
            // Debug prints the shortest text that parses back to the same f64,
            // switching to exponent form for very large or small magnitudes.
            format!("{x:?}")
        };
        match self.proto {
            Proto::Resp2 => self.bulk(out, text.as_bytes()),
            Proto::Resp3 => line(out, b',', text.as_bytes()),
        }
    }

    /// A boolean: RESP3 `#t` / `#f`, RESP2 `:1` / `:0`.
    pub fn boolean(&self, out: &mut Vec<u8>, b: bool) {
        match (self.proto, b) {
            (Proto::Resp2, true) => out.extend_from_slice(b":1\r\n"),
            (Proto::Resp2, false) => out.extend_from_slice(b":0\r\n"),
            (Proto::Resp3, true) => out.extend_from_slice(b"#t\r\n"),
            (Proto::Resp3, false) => out.extend_from_slice(b"#f\r\n"),
        }
    }

    /// A verbatim string (`format` is `txt` or `mkd`, three bytes): RESP3
    /// `=len\r\nfmt:text`, RESP2 a bulk string of `text` (as Redis does for INFO).
    pub fn verbatim(&self, out: &mut Vec<u8>, format: &[u8; 3], text: &[u8]) {
        match self.proto {
            Proto::Resp2 => self.bulk(out, text),
            Proto::Resp3 => {
                header(out, b'=', len_i64(text.len()).saturating_add(4));
                out.extend_from_slice(format);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A big number (digits with an optional sign): RESP3 `(n`, RESP2 a bulk string.
    pub fn big_number(&self, out: &mut Vec<u8>, digits: &[u8]) {
        match self.proto {
            Proto::Resp2 => self.bulk(out, digits),
            Proto::Resp3 => line(out, b'(', digits),
        }
    }

    /// Writes a whole [`Value`] tree, downgrading RESP3 types for RESP2.
    /// Blob errors become simple errors for RESP2; malformed verbatim formats
    /// (not three bytes) are written as `txt`.
    pub fn value(&self, out: &mut Vec<u8>, v: &Value<'_>) {
        match v {
            Value::Simple(s) => self.simple(out, s),
            Value::Error(e) => line(out, b'-', e),
            Value::Integer(n) => self.integer(out, *n),
            Value::Bulk(b) => self.bulk(out, b),
            Value::Null => self.null(out),
            Value::Array(items) => {
                self.array(out, items.len());
                items.iter().for_each(|i| self.value(out, i));
            }
            Value::Set(items) => {
                self.set(out, items.len());
                items.iter().for_each(|i| self.value(out, i));
            }
            Value::Push(items) => {
                self.push(out, items.len());
                items.iter().for_each(|i| self.value(out, i));
            }
            Value::Map(pairs) => {
                self.map(out, pairs.len());
                for (k, v) in pairs {
                    self.value(out, k);
                    self.value(out, v);
                }
            }
            Value::Double(x) => self.double(out, *x),
            Value::Boolean(b) => self.boolean(out, *b),
            Value::Verbatim { format, text } => {
                let fmt: [u8; 3] = <[u8; 3]>::try_from(*format).unwrap_or(*b"txt");
                self.verbatim(out, &fmt, text);
            }
            Value::BigNumber(d) => self.big_number(out, d),
            Value::BlobError(e) => match self.proto {
                Proto::Resp2 => line(out, b'-', e),
                Proto::Resp3 => {
                    header(out, b'!', len_i64(e.len()));
                    out.extend_from_slice(e);
                    out.extend_from_slice(b"\r\n");
                }
            },
        }
    }
}

/// Redis' reply to an unknown command:
/// `ERR unknown command 'foo', with args beginning with: 'a' 'b' `
/// (name cut at 128 bytes, arguments listed until 128 bytes are used).
pub fn unknown_command_message(name: &[u8], args: &[&[u8]]) -> String {
    let name = &name[..name.len().min(128)];
    let mut listed = String::new();
    for a in args {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        let a = String::from_utf8_lossy(&a[..a.len().min(room)]);
        listed.push('\'');
        listed.push_str(&a);
        listed.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        String::from_utf8_lossy(name)
    )
}
