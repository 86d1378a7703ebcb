//! Wire errors.
//!
//! `FrameError` is the one error of the binary protocol (frames and messages).
//! It separates two families, because a server treats them differently:
//! a *framing* error (bad magic, version, header checksum, oversized length,
//! reserved flags) means the byte stream can no longer be trusted and the
//! connection must close; a *message* error (unknown opcode, malformed body,
//! a limit exceeded) leaves the framing intact, so the server answers the
//! request with an ERROR response and keeps the connection.

use crate::msg::ErrorCode;

/// Everything decoding a binary frame or message can fail with.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first two bytes are not the protocol magic: the peer is not
    /// speaking this protocol (or the stream lost its framing).
    #[error("bad magic {found:#06x} (expected {expected:#06x}): the peer does not speak the corekv binary protocol")]
    BadMagic {
        /// The bytes found, read little-endian.
        found: u16,
        /// The protocol magic.
        expected: u16,
    },
    /// The peer speaks a major protocol version this build does not.
    #[error("peer speaks corekv protocol version {found}; this build speaks version {supported} only")]
    UnsupportedVersion {
        /// The version byte received.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The header checksum does not match its bytes.
    #[error("frame header checksum mismatch: stored {expected:#010x}, computed {got:#010x}")]
    HeaderChecksum {
        /// The checksum carried by the header.
        expected: u32,
        /// The checksum computed over the received header bytes.
        got: u32,
    },
    /// A flag bit this version reserves is set.
    #[error("frame sets reserved flag bits {flags:#06x}")]
    ReservedFlags {
        /// The whole flags field.
        flags: u16,
    },
    /// The body length exceeds the receiver's frame limit (or u32 when encoding).
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The body length announced (or produced).
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The opcode names no message this build knows.
    #[error("unknown opcode {opcode:#04x}")]
    UnknownOpcode {
        /// The opcode received.
        opcode: u8,
    },
    /// A request arrived with the response flag set, or a response without it.
    #[error("opcode {opcode:#04x}: expected a {} frame", if *expected_response { "response" } else { "request" })]
    WrongDirection {
        /// The opcode received.
        opcode: u8,
        /// True if a response was expected.
        expected_response: bool,
    },
    /// The body does not decode as the message its opcode names.
    #[error("malformed body for opcode {opcode:#04x} at byte {offset}: {reason}")]
    Malformed {
        /// The frame's opcode.
        opcode: u8,
        /// Byte offset inside the body.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A length or count inside the body exceeds a configured limit.
    #[error("opcode {opcode:#04x}: {what} of {len} exceeds the limit of {max}")]
    LimitExceeded {
        /// The frame's opcode.
        opcode: u8,
        /// Which field.
        what: &'static str,
        /// The length or count announced.
        len: u64,
        /// The limit.
        max: u64,
    },
}

impl FrameError {
    /// True if the connection must close: the byte stream has lost its framing
    /// (or was never ours). False if only this message is bad and the server
    /// should answer it with an ERROR response and read the next frame.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FrameError::BadMagic { .. }
                | FrameError::UnsupportedVersion { .. }
                | FrameError::HeaderChecksum { .. }
                | FrameError::ReservedFlags { .. }
                | FrameError::FrameTooLarge { .. }
        )
    }

    /// The error code an ERROR response for this error carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::BadMagic { .. } | FrameError::HeaderChecksum { .. } | FrameError::ReservedFlags { .. } => {
                ErrorCode::BAD_FRAME
            }
            FrameError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            FrameError::FrameTooLarge { .. } | FrameError::LimitExceeded { .. } => ErrorCode::TOO_LARGE,
            FrameError::UnknownOpcode { .. } => ErrorCode::UNKNOWN_OPCODE,
            FrameError::WrongDirection { .. } | FrameError::Malformed { .. } => ErrorCode::MALFORMED,
        }
    }
}
