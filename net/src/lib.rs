//! corekv's wire formats: the binary protocol (frames and messages) and the
//! RESP codec. Decoders borrow from the receive buffer and bound every length
//! before trusting it; encoders write into caller buffers. No sockets outside
//! the optional client.
//!
//! The binary protocol is specified in `docs/protocol.md`: [`frame`] owns the
//! fixed header and the receive-side [`frame::FrameDecoder`], [`msg`] the
//! client request and response bodies.
//!
//! With the `client` feature, `client` is the client SDK (tokio): token-aware
//! routing, pipelined connections, timeouts and retries; see `docs/client.md`.

#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod frame;
pub mod msg;
pub mod resp;
pub mod token;
