//! corekv's wire formats: the binary protocol (frames and messages) and the
//! RESP codec. Decoders borrow from the receive buffer and bound every length
//! before trusting it; encoders write into caller buffers. No sockets here.
//!
//! The binary protocol is specified in `docs/protocol.md`: [`frame`] owns the
//! fixed header and the receive-side [`frame::FrameDecoder`], [`msg`] the
//! client request and response bodies.

pub mod error;
pub mod frame;
pub mod msg;
pub mod resp;
pub mod token;
