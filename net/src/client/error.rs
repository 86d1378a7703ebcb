//! The client's errors.

use std::time::Duration;

use crate::client::routing::RingError;
use crate::error::FrameError;
use crate::msg::{ErrorCode, ResponseOpcode};

/// The protocol name of an error code (`"CODE_<n>"` for codes this build does
/// not know: a newer server may send them).
pub fn error_code_name(code: ErrorCode) -> std::borrow::Cow<'static, str> {
    let name = match code {
        ErrorCode::BAD_FRAME => "BAD_FRAME",
        ErrorCode::UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
        ErrorCode::UNKNOWN_OPCODE => "UNKNOWN_OPCODE",
        ErrorCode::MALFORMED => "MALFORMED",
        ErrorCode::TOO_LARGE => "TOO_LARGE",
        ErrorCode::TIMEOUT => "TIMEOUT",
        ErrorCode::UNAVAILABLE => "UNAVAILABLE",
        ErrorCode::CONDITION_FAILED => "CONDITION_FAILED",
        ErrorCode::NOT_AN_INTEGER => "NOT_AN_INTEGER",
        ErrorCode::OVERLOADED => "OVERLOADED",
        ErrorCode::INTERNAL => "INTERNAL",
        ErrorCode::AUTH_REQUIRED => "AUTH_REQUIRED",
        ErrorCode::AUTH_FAILED => "AUTH_FAILED",
        ErrorCode::FORBIDDEN => "FORBIDDEN",
        ErrorCode::DISK_FULL => "DISK_FULL",
        ErrorCode::FENCED => "FENCED",
        ErrorCode(n) => return format!("CODE_{n}").into(),
    };
    name.into()
}

/// Why a connection ended; every request pending on it fails with
/// [`ClientError::ConnectionClosed`] carrying this.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// The server closed the connection (end of stream).
    #[error("the server closed the connection")]
    Eof,
    /// Reading or writing the socket failed.
    #[error("socket error ({kind:?}): {message}")]
    Io {
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
        /// Its text.
        message: String,
    },
    /// The server sent bytes that are not a valid frame: the stream lost its
    /// framing and cannot be trusted any more.
    #[error("the server sent a bad frame: {0}")]
    BadFrame(FrameError),
    /// The server reported a connection-level error (request id 0) before closing.
    #[error("the server reported {} before closing: {message}", error_code_name(*code))]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The client dropped the connection (the client itself was dropped or
    /// replaced the connection).
    #[error("the client closed the connection")]
    Dropped,
}

impl CloseReason {
    pub(crate) fn io(e: &std::io::Error) -> CloseReason {
        CloseReason::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Everything a client call can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Opening a connection failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The endpoint.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Opening a connection took longer than `connect_timeout`.
    #[error("connecting to {address} timed out after {after:?}")]
    ConnectTimeout {
        /// The endpoint.
        address: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The request got no answer within the client's timeout (one attempt).
    #[error("request timed out after {after:?}")]
    Timeout {
        /// The timeout of the attempt.
        after: Duration,
    },
    /// The connection carrying the request ended before the answer came.
    #[error("connection to {address} closed: {reason}")]
    ConnectionClosed {
        /// The endpoint.
        address: String,
        /// Why it closed.
        reason: CloseReason,
    },
    /// The server answered with an ERROR response.
    #[error("server error {}: {message}", error_code_name(*code))]
    Server {
        /// The error code (codes this build does not know pass through).
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// INCR on a value that is not a decimal integer, or the sum overflowed
    /// (the server's `NOT_AN_INTEGER`).
    #[error("value is not an integer or the increment overflows: {message}")]
    NotAnInteger {
        /// The server's message.
        message: String,
    },
    /// A response body did not decode, or a request could not be encoded
    /// (e.g. larger than the frame limit).
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// The server answered with a response of the wrong shape for the request.
    #[error("unexpected {got:?} response to {request}")]
    UnexpectedResponse {
        /// The request's name.
        request: &'static str,
        /// The response opcode received.
        got: ResponseOpcode,
    },
    /// The server answered with an integer outside the request's range.
    #[error("unexpected integer {value} in response to {request}")]
    UnexpectedInteger {
        /// The request's name.
        request: &'static str,
        /// The value.
        value: i64,
    },
    /// A scan or listing returned its own cursor again without entries: it
    /// would never end.
    #[error("the server returned the same cursor without entries; the scan would not end")]
    CursorDidNotAdvance,
    /// MGET answered with a different number of slots than keys asked.
    #[error("MGET asked {asked} keys and got {got} slots")]
    SlotCountMismatch {
        /// Keys sent.
        asked: usize,
        /// Slots received.
        got: usize,
    },
    /// The ring a node sent cannot be routed on.
    #[error("bad ring: {0}")]
    Ring(#[from] RingError),
    /// No seed was given to [`crate::client::Client::connect`].
    #[error("no seed addresses given")]
    NoSeeds,
    /// No node (seed or ring member) answered RING.
    #[error("no node answered RING (tried {tried:?}); last error: {last}")]
    Unavailable {
        /// The addresses tried, in order.
        tried: Vec<String>,
        /// The last attempt's error.
        last: Box<ClientError>,
    },
    /// The node refused the client's credentials (or has no accounts, or
    /// predates AUTH): every connection the client opens authenticates first.
    #[error("authentication with {address} failed: {message}")]
    Auth {
        /// The endpoint.
        address: String,
        /// The server's error code (`AUTH_FAILED`, or `UNKNOWN_OPCODE` from
        /// a node without authentication support).
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The TLS handshake with a node failed: its certificate is not trusted
    /// or not valid for the name checked, it requires a client certificate
    /// this client does not have, or it does not speak TLS on that port.
    #[error("TLS handshake with {address} failed: {source}")]
    Tls {
        /// The endpoint.
        address: String,
        /// The cause (rustls' errors are of kind `InvalidData`).
        source: std::io::Error,
    },
    /// The TLS settings cannot be used (a CA, certificate or key file is
    /// missing or bad, or a server name is invalid).
    #[error("TLS settings: {0}")]
    TlsSetup(#[from] crate::tls::TlsError),
    /// Building the blocking client's runtime failed.
    #[error("cannot start the blocking client's runtime: {0}")]
    Runtime(std::io::Error),
}

impl ClientError {
    /// True if the request may not have reached the server, or another
    /// attempt (on another node) may succeed: I/O failures (a TLS handshake
    /// cut short included), timeouts, lost connections, and the server's
    /// `OVERLOADED`, `UNAVAILABLE` (the coordinator believed too few replicas
    /// alive: another node, or the same a moment later, may see more) and
    /// `TIMEOUT` (too few replicas answered in time; the outcome is unknown,
    /// as for a client timeout).
    /// Only idempotent requests are retried automatically.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::ConnectTimeout { .. }
            | ClientError::Timeout { .. }
            | ClientError::ConnectionClosed { .. } => true,
            ClientError::Server { code, .. } => {
                [ErrorCode::OVERLOADED, ErrorCode::UNAVAILABLE, ErrorCode::TIMEOUT].contains(code)
            }
            // A certificate refused is refused again; a connection that broke
            // mid-handshake is not.
            ClientError::Tls { source, .. } => source.kind() != std::io::ErrorKind::InvalidData,
            _ => false,
        }
    }

    /// The server's error code, if the server answered with ERROR.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::NotAnInteger { .. } => Some(ErrorCode::NOT_AN_INTEGER),
            _ => None,
        }
    }
}

/// The result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
