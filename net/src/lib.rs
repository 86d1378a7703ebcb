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
//! routing, pipelined connections, timeouts and retries, optional TLS; see
//! `docs/client.md`. With the `tls` feature (implied by `client`), `tls`
//! reads certificates and keys and builds the rustls configurations.

#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod frame;
pub mod msg;
pub mod resp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;
