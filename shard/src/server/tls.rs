//! TLS on the listeners (README "Security", docs/protocol.md "TLS"): the
//! server side of the handshake on an accepted connection, and the client
//! side for node-to-node connections ([`PeerStream`]).
//!
//! ## Accepting
//!
//! A connection on a TLS listener is served only after its handshake. The
//! first byte decides: a TLS client starts with a handshake record (0x16);
//! anything else is a plain-text client that picked the wrong port, and it
//! gets one plain-text error in its own protocol (an ERROR frame with
//! request id 0, or a RESP `-ERR`) saying the port needs TLS, then the
//! connection closes. The wait for the first byte and the handshake
//! together are bounded by [`HANDSHAKE_TIMEOUT`] (a client that connects
//! and sends nothing, or trickles its handshake, is cut off) and end at
//! shutdown. rustls does the handshake's computation inline on the core:
//! it does no blocking syscall, only a few signature operations per
//! connection.
//!
//! A failed handshake ends that connection only; a refused client
//! certificate is logged as a warning (a misconfigured client or node),
//! other failures at debug level (scanners and plain clients are routine).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use corekv_net::msg::{ErrorCode, Response};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use futures_rustls::{client, server, TlsAcceptor};
use glommio::net::TcpStream;
use rustls::ServerConfig;

use super::Protocol;
use crate::runtime::Shard;

/// How long a client has, from its connect, to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plain-text client on a TLS port is told.
const PLAIN_REFUSAL: &str = "this port requires TLS; connect with TLS (see the node's [tls] settings)";

/// At most this much of a plain-text client's input is read and dropped
/// before closing, so the refusal is not lost to a reset.
const PLAIN_DRAIN_BYTES: usize = 64 << 10;

/// The TLS handshake of an accepted connection; `None` (after logging why)
/// when the connection is not to be served.
pub async fn accept(
    shard: &Shard,
    stream: TcpStream,
    config: Arc<ServerConfig>,
    proto: Protocol,
    remote: Option<SocketAddr>,
) -> Option<server::TlsStream<TcpStream>> {
    let work = async move {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(Failed::Quiet("closed before the handshake".to_owned())),
            Ok(_) => {}
            Err(e) => return Err(Failed::Quiet(format!("waiting for the handshake: {e}"))),
        }
        if first[0] != corekv_net::tls::HANDSHAKE_RECORD {
            refuse_plain(stream, proto).await;
            return Err(Failed::Quiet("a plain-text client on a TLS port".to_owned()));
        }
        TlsAcceptor::from(config).accept(stream).await.map_err(|e| {
            let refused_cert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
                    )
                });
            let reason = format!("TLS handshake failed: {e}");
            if refused_cert {
                Failed::Loud(reason)
            } else {
                Failed::Quiet(reason)
            }
        })
    };
    let timer = glommio::timer::sleep(HANDSHAKE_TIMEOUT);
    let stop = shard.stop.clone();
    futures::pin_mut!(work, timer);
    let outcome = futures::select_biased! {
        r = work.fuse() => r,
        _ = stop.fuse() => Err(Failed::Quiet("the node is stopping".to_owned())),
        _ = timer.fuse() => Err(Failed::Quiet(format!(
            "no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()
        ))),
    };
    match outcome {
        Ok(s) => Some(s),
        Err(Failed::Loud(reason)) => {
            tracing::warn!(core = shard.id, remote = ?remote, %reason, "TLS client refused");
            None
        }
        Err(Failed::Quiet(reason)) => {
            tracing::debug!(core = shard.id, remote = ?remote, %reason, "TLS connection not served");
            None
        }
    }
}

/// Why a TLS connection is not served, and whether an operator should hear of it.
enum Failed {
    /// A certificate was refused: a misconfigured client or node.
    Loud(String),
    /// Routine: a scanner, a plain client, a timeout.
    Quiet(String),
}

/// Tells a plain-text client, in its own protocol, that the port needs TLS.
async fn refuse_plain(mut stream: TcpStream, proto: Protocol) {
    let mut b = Vec::new();
    match proto {
        Protocol::Native => {
            let e = Response::Error {
                code: ErrorCode::BAD_FRAME,
                message: PLAIN_REFUSAL,
            };
            // Request id 0: a connection-level error, sent before closing.
            if e.encode_frame(0, &mut b).is_err() {
                return;
            }
        }
        Protocol::Resp => {
            b.extend_from_slice(b"-ERR ");
            b.extend_from_slice(PLAIN_REFUSAL.as_bytes());
            b.extend_from_slice(b"\r\n");
        }
        Protocol::Http => {
            let body = PLAIN_REFUSAL.as_bytes();
            b.extend_from_slice(
                format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            b.extend_from_slice(body);
        }
    }
    if stream.write_all(&b).await.is_err() {
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    // Closing with unread input makes the kernel send a reset, which can
    // overtake the refusal; read what the client sent (bounded) first.
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < PLAIN_DRAIN_BYTES {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// A node-to-node connection: plain, or TLS when the node has `[tls]` in
/// cluster mode. An enum rather than a trait object: one predictable
/// branch per poll, and nothing boxed on the plain path.
#[derive(Debug)]
pub enum PeerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (mutual: this node presented its certificate).
    Tls(Box<client::TlsStream<TcpStream>>),
}

impl AsyncRead for PeerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_close(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
