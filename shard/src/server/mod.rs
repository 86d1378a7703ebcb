//! The node's listeners and connection tasks (ARCHITECTURE.md sections 1, 8, 9).
//!
//! Every core binds four listeners: the shared client port, the RESP port
//! and the HTTP port (`http`, unless `ports.http` is 0) with SO_REUSEPORT
//! (the kernel spreads connections over the cores), and its own shard-aware
//! client port (`ports.shard_base + core`), where a token-aware client
//! reaches the owning core without a hop. A connection
//! stays on the core that accepted it; a request for another core's keys is
//! forwarded over the mesh and answered on the same connection.
//!
//! With `[tls]` on, the listeners named in `tls.listeners` serve a
//! connection only after its TLS handshake ([`tls`]). The connection code is
//! generic over the stream, so a plain listener serves the glommio socket
//! itself: no wrapper, copy or dynamic dispatch on its path.

mod auth;
mod http;
mod native;
mod outbox;
pub mod peer;
mod resp;
mod scan;
pub mod tls;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use corekv_engine::notify::Notify;
use futures::future::{select, Either};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use rustls::ServerConfig;

use crate::error::{Error, Result};
use crate::runtime::{report_ready, Shard};
use crate::store::{Failure, FailureKind};

/// The HTTP request parsers on arbitrary bytes, for the `http` fuzz target.
pub use http::fuzz_requests as fuzz_http_requests;
pub use outbox::Outbox;

/// How long a drain waits for in-flight requests before closing anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a peer may leave a request half-sent before the connection is
/// closed with an error (slow-loris protection).
pub const PARTIAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The binary protocol (docs/protocol.md).
    Native,
    /// RESP2/RESP3 (docs/resp.md).
    Resp,
    /// HTTP/1.1 (docs/http.md).
    Http,
}

/// Open connections on this core, and an event when the count drops.
#[derive(Debug, Default)]
struct Connections {
    open: Cell<usize>,
    changed: Notify,
    /// The core's HTTP state (in-flight count, verified credentials).
    http: Rc<http::HttpCore>,
}

/// The per-core server, as the runtime's [`crate::runtime::ServeFn`].
pub fn serve(shard: Rc<Shard>) -> Pin<Box<dyn Future<Output = Result<()>>>> {
    Box::pin(serve_core(shard))
}

fn bind(shard: &Shard, port: u16) -> Result<TcpListener> {
    let addr = format!("{}:{port}", shard.config.node.listen);
    TcpListener::bind(addr.as_str()).map_err(|e| Error::Runtime {
        what: format!("core {} binding {addr}", shard.id),
        reason: e.to_string(),
    })
}

async fn serve_core(shard: Rc<Shard>) -> Result<()> {
    let core = u16::try_from(shard.id).unwrap_or(u16::MAX);
    // The server TLS configuration of the listeners `tls.listeners` names.
    let tls = |on: fn(&crate::config::TlsListeners) -> bool| {
        shard
            .security
            .tls
            .as_ref()
            .filter(|t| on(&t.listeners))
            .map(|t| t.server.clone())
    };
    let mut listeners = vec![
        (
            bind(&shard, shard.config.ports.client)?,
            Protocol::Native,
            tls(|l| l.client),
        ),
        (
            bind(&shard, shard.config.shard_port(core))?,
            Protocol::Native,
            tls(|l| l.shard),
        ),
        (bind(&shard, shard.config.ports.resp)?, Protocol::Resp, tls(|l| l.resp)),
    ];
    if shard.config.ports.http != 0 {
        listeners.push((bind(&shard, shard.config.ports.http)?, Protocol::Http, tls(|l| l.http)));
    }
    let conns = Rc::new(Connections::default());
    let mut loops = Vec::new();
    for (l, proto, tls) in listeners {
        let task = glommio::spawn_local_into(accept_loop(shard.clone(), l, proto, tls, conns.clone()), shard.fg)
            .map_err(|e| Error::Runtime {
                what: "spawning an accept loop".into(),
                reason: e.to_string(),
            })?;
        loops.push(task);
    }
    report_ready();
    shard.stop.clone().await.ok();
    futures::future::join_all(loops).await;
    // Connections see the stop signal themselves; wait for them to drain.
    let deadline = glommio::timer::sleep(DRAIN_TIMEOUT).fuse();
    futures::pin_mut!(deadline);
    while conns.open.get() > 0 {
        let changed = conns.changed.notified();
        futures::pin_mut!(changed);
        if let Either::Right(_) = select(changed, &mut deadline).await {
            tracing::warn!(
                core = shard.id,
                open = conns.open.get(),
                "drain timed out; closing connections"
            );
            break;
        }
    }
    Ok(())
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    proto: Protocol,
    tls: Option<Arc<ServerConfig>>,
    conns: Rc<Connections>,
) {
    let max = usize::try_from(shard.config.limits.max_connections_per_core).unwrap_or(usize::MAX);
    loop {
        let stop = shard.stop.clone();
        let accepted = match select(Box::pin(listener.accept()), stop).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => return,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(core = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let full = conns.open.get() >= max;
        conns.open.set(conns.open.get() + 1);
        let (s, c, tls) = (shard.clone(), conns.clone(), tls.clone());
        let task = glommio::spawn_local_into(
            async move {
                if proto == Protocol::Http {
                    let _counted = s.metrics.connection();
                    let _ = stream.set_nodelay(true);
                    let remote = stream.peer_addr().ok();
                    match tls {
                        None => http::serve_connection(&s, &c.http, stream, remote, full).await,
                        Some(config) => {
                            if let Some(t) = tls::accept(&s, stream, config, proto, remote).await {
                                http::serve_connection(&s, &c.http, t, remote, full).await;
                            }
                        }
                    }
                } else {
                    connection(s, stream, proto, tls, full).await;
                }
                c.open.set(c.open.get() - 1);
                c.changed.notify();
            },
            shard.fg,
        );
        match task {
            Ok(t) => drop(t.detach()),
            Err(e) => {
                conns.open.set(conns.open.get() - 1);
                tracing::error!(error = %e, "cannot spawn a connection task");
            }
        }
    }
}

async fn connection(
    shard: Rc<Shard>,
    stream: TcpStream,
    proto: Protocol,
    tls: Option<Arc<ServerConfig>>,
    over_limit: bool,
) {
    // The guard borrows its own handle: `shard` moves into the stream's server.
    let counted_on = shard.clone();
    let _counted = counted_on.metrics.connection();
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let remote = stream.peer_addr().ok();
    match tls {
        None => serve_stream(shard, stream, proto, over_limit, local, remote).await,
        Some(config) => {
            if let Some(s) = tls::accept(&shard, stream, config, proto, remote).await {
                serve_stream(shard, s, proto, over_limit, local, remote).await;
            }
        }
    }
}

/// Serves one connection's requests on `stream` (a socket, or a TLS stream
/// over one) until it ends.
async fn serve_stream<S>(
    shard: Rc<Shard>,
    stream: S,
    proto: Protocol,
    over_limit: bool,
    local: Option<std::net::SocketAddr>,
    remote: Option<std::net::SocketAddr>,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (reader, writer) = stream.split();
    let out = Rc::new(Outbox::new());
    let o = out.clone();
    let writer = glommio::spawn_local_into(async move { o.run_writer(writer).await }, shard.fg);
    let Ok(writer) = writer else {
        return;
    };
    if over_limit {
        let f = Failure::new(FailureKind::Overloaded, "max number of clients reached");
        match proto {
            Protocol::Native => native::refuse(&out, &f),
            Protocol::Resp => resp::refuse(&out, &f),
            // Served by `http::serve_connection` before a connection is split.
            Protocol::Http => {}
        }
    } else {
        match proto {
            Protocol::Native => native::read_loop(&shard, reader, &out, local, remote).await,
            Protocol::Resp => resp::read_loop(&shard, reader, &out, remote).await,
            Protocol::Http => {}
        }
    }
    out.close();
    writer.await;
}

/// Polls a request's future once in the calling task and spawns it only
/// if it has to wait: a read served from memory then costs no task. The
/// future registered the connection task's waker during that poll; after the
/// spawn its next poll registers the new task's, and a wake-up meanwhile only
/// wakes the connection task needlessly, so none is lost.
pub async fn run_inline_or_spawn(
    shard: &Shard,
    mut fut: Pin<Box<dyn Future<Output = ()>>>,
) -> std::result::Result<(), ()> {
    let done = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready())).await;
    if done {
        return Ok(());
    }
    match glommio::spawn_local_into(fut, shard.fg) {
        Ok(t) => {
            t.detach();
            Ok(())
        }
        Err(_) => Err(()),
    }
}

/// Reads into `buf`'s spare room, giving up when the node stops (`Ok(None)`)
/// or, while a request is half-received, after [`PARTIAL_REQUEST_TIMEOUT`].
async fn read_some<R: futures::AsyncRead + Unpin>(
    shard: &Shard,
    reader: &mut R,
    buf: &mut [u8],
    partial: bool,
) -> std::io::Result<Option<usize>> {
    let read = reader.read(buf);
    let stop = shard.stop.clone();
    let timer = async {
        if partial {
            glommio::timer::sleep(PARTIAL_REQUEST_TIMEOUT).await;
        } else {
            futures::future::pending::<()>().await;
        }
    };
    futures::pin_mut!(read, timer);
    futures::select_biased! {
        r = read.fuse() => r.map(Some),
        _ = stop.fuse() => Ok(None),
        _ = timer.fuse() => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request half-sent for too long")),
    }
}
