//! The RESP2/RESP3 codec for the Redis-compatible port.
//!
//! Sans-IO: the server hands [`parse_command`] its receive buffer and gets back
//! either a [`Command`] borrowing from that buffer plus the number of bytes it
//! used, or "need more" (`Ok(None)`, nothing consumed). Replies are written by a
//! [`ReplyWriter`] into a caller `Vec<u8>`. [`RespRequest::parse`] turns a
//! command into a typed request with Redis' error wording. [`parse_value`]
//! decodes replies (RESP2 and RESP3) for clients and tests. The supported
//! surface is written down in `docs/resp.md`.
//!
//! ## Format
//!
//! ```text
//! command  = "*" count CRLF count x ( "$" len CRLF bytes CRLF )   (RESP array of bulk strings)
//!          | inline-line ( "\n" | "\r\n" )                        (what telnet users type)
//! reply    = "+" line | "-" line | ":" int | "$" len CRLF bytes CRLF | "$-1" | "*" count CRLF replies
//!          | "*-1" | "_" | "," double | "#" ("t"|"f") | "=" len CRLF fmt ":" bytes CRLF
//!          | "(" bignum | "!" len CRLF bytes CRLF | "%" pairs CRLF 2*pairs replies
//!          | "~" count CRLF replies | ">" count CRLF replies
//! ```
//!
//! Every length is checked against [`Limits`] before anything is allocated or
//! waited for, so a hostile peer cannot make the server buffer 4 GiB by
//! announcing it.

mod decode;
mod encode;
mod glob;
mod request;

pub use decode::{encode_command, parse_command, parse_value, Command, Value};
pub use encode::{unknown_command_message, Proto, ReplyWriter};
pub use glob::glob_match;
pub use request::{
    ClientRequest, CommandError, CommandRequest, Expire, ExpireCond, RespRequest, ScanArgs, SetArgs, SetCond,
};

/// Bounds applied to every length a peer announces, checked before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string accepted (Redis' `proto-max-bulk-len`, 512 MiB by default).
    pub max_bulk: usize,
    /// Most elements in one command or one aggregate reply (Redis allows 1024*1024 per multibulk).
    pub max_args: usize,
    /// Longest inline command line, and longest simple-string / error / number line in a reply.
    pub max_inline: usize,
    /// Deepest nesting of aggregate replies; bounds the decoder's recursion.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 << 20,
            max_args: 1 << 20,
            max_inline: 64 << 10,
            max_depth: 64,
        }
    }
}

/// A protocol error: the byte stream is not RESP. The server answers
/// `-ERR Protocol error: <Display>` (see [`ReplyWriter::protocol_error`]) and
/// closes that connection, since it can no longer find the next command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespError {
    /// An array count is not an integer, negative where not allowed, or above `max_args`.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk length is not an integer, negative where not allowed, or above `max_bulk`.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A length line has no CRLF within the bytes a valid length can take.
    #[error("too big mbulk count string")]
    LengthLineTooLong,
    /// An element of a command array is not a bulk string.
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// A bulk string is not followed by CRLF.
    #[error("bulk string not terminated by CRLF")]
    BulkNotTerminated,
    /// A line ends in a bare CR.
    #[error("CR not followed by LF")]
    BadLineEnding,
    /// An inline command line is longer than `max_inline`.
    #[error("too big inline request")]
    InlineTooLong,
    /// An inline command has more than `max_args` words.
    #[error("too many arguments in inline request")]
    InlineTooManyArgs,
    /// An inline command has an unterminated quote, or a closing quote glued to the next word.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An inline command uses a backslash escape inside quotes; commands are
    /// zero-copy slices of the buffer, so escapes (which need rewriting) are refused.
    #[error("escapes inside quotes are not supported in inline requests")]
    InlineEscape,
    /// A reply line is longer than `max_inline`.
    #[error("line too long")]
    LineTooLong,
    /// An unknown reply type byte.
    #[error("unknown reply type '{}'", char::from(*.0))]
    UnknownType(u8),
    /// An integer reply that is not a 64-bit integer.
    #[error("invalid integer")]
    InvalidInteger,
    /// A RESP3 double that does not parse.
    #[error("invalid double")]
    InvalidDouble,
    /// A RESP3 boolean other than `t` / `f`.
    #[error("invalid boolean")]
    InvalidBoolean,
    /// A RESP3 null with a payload.
    #[error("invalid null")]
    InvalidNull,
    /// A RESP3 big number with something other than an optional sign and digits.
    #[error("invalid big number")]
    InvalidBigNumber,
    /// A RESP3 verbatim string without its `xxx:` format prefix.
    #[error("invalid verbatim string")]
    InvalidVerbatim,
    /// Aggregates nested deeper than `max_depth`.
    #[error("reply nested too deep")]
    TooDeep,
}

#[cfg(test)]
mod tests;
