//! Decoding: commands (server side) and replies (client side), both
//! resumable by re-parsing: "need more" consumes nothing.

use super::{Limits, RespError};

/// Longest length line we wait for: `-9223372036854775808` is 20 bytes, so a
/// line without CRLF after 32 bytes can never become valid.
const MAX_LEN_LINE: usize = 32;

/// One command: its arguments borrowed from the receive buffer.
///
/// `args` may be empty (a blank inline line or `*0`); the server skips such a
/// command without replying, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command<'a> {
    /// The command name followed by its arguments, exactly as sent.
    pub args: Vec<&'a [u8]>,
}

impl<'a> Command<'a> {
    /// The command name as sent (any case), if there is one.
    pub fn name(&self) -> Option<&'a [u8]> {
        self.args.first().copied()
    }
}

/// A decoded reply (RESP2 or RESP3), borrowing strings from the buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `+OK`
    Simple(&'a [u8]),
    /// `-ERR ...` (the whole line, code included).
    Error(&'a [u8]),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(&'a [u8]),
    /// RESP2 `$-1` / `*-1`, RESP3 `_`.
    Null,
    /// `*n`
    Array(Vec<Value<'a>>),
    /// RESP3 `%n`: n key/value pairs in wire order.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// RESP3 `~n`
    Set(Vec<Value<'a>>),
    /// RESP3 `,1.5` (also `inf`, `-inf`, `nan`).
    Double(f64),
    /// RESP3 `#t` / `#f`
    Boolean(bool),
    /// RESP3 `=n\r\nfmt:text`
    Verbatim {
        /// The three-byte format, `txt` or `mkd`.
        format: &'a [u8],
        /// The text after `fmt:`.
        text: &'a [u8],
    },
    /// RESP3 `(123...`: the digits (with an optional sign) as sent.
    BigNumber(&'a [u8]),
    /// RESP3 `!n\r\n...`: an error carried as a bulk string.
    BlobError(&'a [u8]),
    /// RESP3 `>n`: an out-of-band push message.
    Push(Vec<Value<'a>>),
}

/// Outcome of one step: `Ok(None)` means the buffer ends before the item does.
type Step<T> = Result<Option<(T, usize)>, RespError>;

/// Parses Redis' `string2ll` integers: optional `-`, no `+`, no leading zeros,
/// no spaces, no overflow. Both the protocol and command arguments use it.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !neg => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    // Accumulate negatively so i64::MIN parses without overflowing.
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// Finds the line starting at `pos`, ended by CRLF. Returns the line and the
/// position after the CRLF. Fails once `max` bytes have arrived without CR.
fn line(buf: &[u8], pos: usize, max: usize, too_long: RespError) -> Step<&[u8]> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(max.saturating_add(1))];
    match memchr::memchr(b'\r', window) {
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..i], pos + i + 2))),
            Some(_) => Err(RespError::BadLineEnding),
        },
        None if rest.len() > max => Err(too_long),
        None => Ok(None),
    }
}

/// A length line as an integer.
fn len_line(buf: &[u8], pos: usize, bad: RespError) -> Step<i64> {
    match line(buf, pos, MAX_LEN_LINE, RespError::LengthLineTooLong)? {
        None => Ok(None),
        Some((l, next)) => match parse_i64(l) {
            Some(n) => Ok(Some((n, next))),
            None => Err(bad),
        },
    }
}

/// `len` bytes at `pos` followed by CRLF.
fn bulk_body(buf: &[u8], pos: usize, len: usize) -> Step<&[u8]> {
    let end = pos.checked_add(len).ok_or(RespError::InvalidBulkLength)?;
    if buf.len() < end.saturating_add(2) {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(RespError::BulkNotTerminated);
    }
    Ok(Some((&buf[pos..end], end + 2)))
}

/// Initial capacity for `count` elements when `avail` bytes remain: every
/// element needs at least three bytes, so a lying count cannot make us
/// allocate more than the buffer already holds.
fn capacity(count: usize, avail: usize) -> usize {
    count.min(avail / 3 + 1)
}

/// Decodes one command from the front of `buf`.
///
/// `Ok(Some((command, used)))`: drop `used` bytes from the buffer and parse
/// again for the next pipelined command. `Ok(None)`: need more bytes; nothing
/// was consumed. `Err`: protocol error, the connection cannot continue.
pub fn parse_command<'a>(buf: &'a [u8], limits: &Limits) -> Step<Command<'a>> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

fn parse_multibulk<'a>(buf: &'a [u8], limits: &Limits) -> Step<Command<'a>> {
    let Some((count, mut pos)) = len_line(buf, 1, RespError::InvalidMultibulkLength)? else {
        return Ok(None);
    };
    let count = usize::try_from(count).map_err(|_| RespError::InvalidMultibulkLength)?;
    if count > limits.max_args {
        return Err(RespError::InvalidMultibulkLength);
    }
    let mut args = Vec::with_capacity(capacity(count, buf.len() - pos));
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => return Err(RespError::ExpectedBulk(other)),
        }
        let Some((len, next)) = len_line(buf, pos + 1, RespError::InvalidBulkLength)? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| RespError::InvalidBulkLength)?;
        if len > limits.max_bulk {
            return Err(RespError::InvalidBulkLength);
        }
        let Some((arg, next)) = bulk_body(buf, next, len)? else {
            return Ok(None);
        };
        args.push(arg);
        pos = next;
    }
    debug_assert_eq!(args.len(), count);
    Ok(Some((Command { args }, pos)))
}

/// The inline protocol: one line, words split on whitespace, with Redis'
/// single and double quotes (without escapes, see [`RespError::InlineEscape`]).
fn parse_inline<'a>(buf: &'a [u8], limits: &Limits) -> Step<Command<'a>> {
    let window = &buf[..buf.len().min(limits.max_inline.saturating_add(1))];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        if buf.len() > limits.max_inline {
            return Err(RespError::InlineTooLong);
        }
        return Ok(None);
    };
    let mut line = &buf[..nl];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let args = split_inline(line, limits.max_args)?;
    Ok(Some((Command { args }, nl + 1)))
}

fn split_inline(line: &[u8], max_args: usize) -> Result<Vec<&[u8]>, RespError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        if args.len() == max_args {
            return Err(RespError::InlineTooManyArgs);
        }
        let q = line[i];
        let arg = if q == b'"' || q == b'\'' {
            let start = i + 1;
            let close = memchr::memchr(q, &line[start..]).ok_or(RespError::UnbalancedQuotes)? + start;
            let inner = &line[start..close];
            // Redis unescapes `\x..`, `\n`, ... inside "" and `\'` inside ''.
            // Those need a rewritten copy; refusing them keeps commands zero-copy.
            let escaped = if q == b'"' {
                inner.contains(&b'\\')
            } else {
                inner.last() == Some(&b'\\')
            };
            if escaped {
                return Err(RespError::InlineEscape);
            }
            i = close + 1;
            if i < line.len() && !line[i].is_ascii_whitespace() {
                return Err(RespError::UnbalancedQuotes);
            }
            inner
        } else {
            let start = i;
            while i < line.len() && !line[i].is_ascii_whitespace() {
                i += 1;
            }
            &line[start..i]
        };
        args.push(arg);
    }
}

/// Appends `args` as a RESP array of bulk strings (what clients send).
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes one reply from the front of `buf`: same contract as
/// [`parse_command`]. RESP2 `$-1` and `*-1` both decode to [`Value::Null`].
/// RESP3 attributes (`|`) and streamed strings (`$?`) are not supported.
pub fn parse_value<'a>(buf: &'a [u8], limits: &Limits) -> Step<Value<'a>> {
    value(buf, 0, limits, 0)
}

fn value<'a>(buf: &'a [u8], pos: usize, limits: &Limits, depth: usize) -> Step<Value<'a>> {
    let Some(&ty) = buf.get(pos) else {
        return Ok(None);
    };
    let pos = pos + 1;
    match ty {
        b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => {
            let Some((l, next)) = line(buf, pos, limits.max_inline, RespError::LineTooLong)? else {
                return Ok(None);
            };
            let v = match ty {
                b'+' => Value::Simple(l),
                b'-' => Value::Error(l),
                b':' => Value::Integer(parse_i64(l).ok_or(RespError::InvalidInteger)?),
                b',' => Value::Double(parse_double(l)?),
                b'#' => match l {
                    b"t" => Value::Boolean(true),
                    b"f" => Value::Boolean(false),
                    _ => return Err(RespError::InvalidBoolean),
                },
                b'_' if l.is_empty() => Value::Null,
                b'_' => return Err(RespError::InvalidNull),
                _ => {
                    let digits = l.strip_prefix(b"-").or_else(|| l.strip_prefix(b"+")).unwrap_or(l);
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err(RespError::InvalidBigNumber);
                    }
                    Value::BigNumber(l)
                }
            };
            Ok(Some((v, next)))
        }
        b'$' | b'!' | b'=' => {
            let Some((len, next)) = len_line(buf, pos, RespError::InvalidBulkLength)? else {
                return Ok(None);
            };
            if len == -1 && ty == b'$' {
                return Ok(Some((Value::Null, next)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::InvalidBulkLength)?;
            if len > limits.max_bulk {
                return Err(RespError::InvalidBulkLength);
            }
            let Some((body, next)) = bulk_body(buf, next, len)? else {
                return Ok(None);
            };
            let v = match ty {
                b'$' => Value::Bulk(body),
                b'!' => Value::BlobError(body),
                _ => match body {
                    [_, _, _, b':', text @ ..] => Value::Verbatim {
                        format: &body[..3],
                        text,
                    },
                    _ => return Err(RespError::InvalidVerbatim),
                },
            };
            Ok(Some((v, next)))
        }
        b'*' | b'~' | b'>' | b'%' => {
            let Some((count, mut next)) = len_line(buf, pos, RespError::InvalidMultibulkLength)? else {
                return Ok(None);
            };
            if count == -1 && ty == b'*' {
                return Ok(Some((Value::Null, next)));
            }
            let count = usize::try_from(count).map_err(|_| RespError::InvalidMultibulkLength)?;
            let elems = if ty == b'%' { count.checked_mul(2) } else { Some(count) };
            let elems = elems
                .filter(|&n| n <= limits.max_args)
                .ok_or(RespError::InvalidMultibulkLength)?;
            if depth >= limits.max_depth {
                return Err(RespError::TooDeep);
            }
            let mut items = Vec::with_capacity(capacity(elems, buf.len() - next));
            for _ in 0..elems {
                let Some((v, after)) = value(buf, next, limits, depth + 1)? else {
                    return Ok(None);
                };
                items.push(v);
                next = after;
            }
            let v = match ty {
                b'*' => Value::Array(items),
                b'~' => Value::Set(items),
                b'>' => Value::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(count);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    debug_assert_eq!(pairs.len(), count);
                    Value::Map(pairs)
                }
            };
            Ok(Some((v, next)))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

fn parse_double(l: &[u8]) -> Result<f64, RespError> {
    let s = std::str::from_utf8(l).map_err(|_| RespError::InvalidDouble)?;
    // Rust's parser also takes "infinity" and "NaN"; accepting a superset of
    // RESP3's spelling is harmless for a client.
    s.parse::<f64>().map_err(|_| RespError::InvalidDouble)
}
