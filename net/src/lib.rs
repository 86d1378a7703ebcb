//! corekv's wire formats: the binary protocol (frames and messages) and the
//! RESP codec. Decoders borrow from the receive buffer and bound every length
//! before trusting it; encoders write into caller buffers. No sockets here.

pub mod error;
pub mod frame;
pub mod resp;
