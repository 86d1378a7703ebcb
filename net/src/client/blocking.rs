//! A synchronous client for plain threads: the async [`crate::client::Client`]
//! on a small tokio runtime the blocking client owns. The runtime's one worker
//! thread runs the connections' reader and writer tasks and drives sockets and
//! timers; each call runs its request on the calling thread
//! (`futures::executor::block_on` inside the runtime's context) and blocks
//! that thread until the answer.
//!
//! Clones share the runtime and the connections, so several threads can each
//! hold a clone and have requests in flight at once (pipelined on the shared
//! connections). It also works from `tokio::task::spawn_blocking`. Calling it
//! from async code works but blocks that executor thread for the whole call:
//! use the async client there.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::client::{
    self as asynch, CasResult, ClientError, ClientOptions, Consistency, Credentials, Entry, PutOptions, Result,
    Routing, ScanPage, Tls, Ttl, Value, Versions,
};
use crate::token::Token;

/// Owns the runtime; shuts it down without blocking when the last clone goes.
struct RuntimeBox(Option<Runtime>);

impl Drop for RuntimeBox {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // A plain drop would block waiting for tasks, which panics if the
            // last clone is dropped inside another runtime.
            rt.shutdown_background();
        }
    }
}

/// The blocking client. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    inner: asynch::Client,
    rt: Arc<RuntimeBox>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Runs `fut` on the calling thread with `rt` as the tokio context (for
/// spawning connection tasks and for timers). Unlike `Runtime::block_on`, this
/// does not refuse to run inside another runtime's thread.
fn run_on<T>(rt: &RuntimeBox, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let Some(rt) = &rt.0 else {
        // Only `Drop` takes the runtime, and no call runs through a dropped client.
        return Err(ClientError::Runtime(std::io::Error::other(
            "the client's runtime has shut down",
        )));
    };
    let _context = rt.enter();
    futures::executor::block_on(fut)
}

impl Client {
    /// Starts the runtime and connects as [`crate::client::Client::connect`].
    pub fn connect<S: AsRef<str>>(seeds: &[S], options: ClientOptions) -> Result<Client> {
        Client::open(seeds, options, None, None)
    }

    /// Starts the runtime and connects as
    /// [`crate::client::Client::connect_tls`]: every connection is TLS.
    pub fn connect_tls<S: AsRef<str>>(seeds: &[S], options: ClientOptions, tls: Tls) -> Result<Client> {
        Client::open(seeds, options, None, Some(tls))
    }

    /// Starts the runtime and connects as
    /// [`crate::client::Client::connect_tls_as`]: TLS, then AUTH.
    pub fn connect_tls_as<S: AsRef<str>>(
        seeds: &[S],
        options: ClientOptions,
        tls: Tls,
        credentials: Credentials,
    ) -> Result<Client> {
        Client::open(seeds, options, Some(credentials), Some(tls))
    }

    /// Starts the runtime and connects as
    /// [`crate::client::Client::connect_as`]: every connection
    /// authenticates with `credentials`.
    pub fn connect_as<S: AsRef<str>>(seeds: &[S], options: ClientOptions, credentials: Credentials) -> Result<Client> {
        Client::open(seeds, options, Some(credentials), None)
    }

    fn open<S: AsRef<str>>(
        seeds: &[S],
        options: ClientOptions,
        credentials: Option<Credentials>,
        tls: Option<Tls>,
    ) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("corekv-client")
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let rt = RuntimeBox(Some(rt));
        let inner = match (credentials, tls) {
            (Some(c), Some(t)) => run_on(&rt, asynch::Client::connect_tls_as(seeds, options, t, c))?,
            (Some(c), None) => run_on(&rt, asynch::Client::connect_as(seeds, options, c))?,
            (None, Some(t)) => run_on(&rt, asynch::Client::connect_tls(seeds, options, t))?,
            (None, None) => run_on(&rt, asynch::Client::connect(seeds, options))?,
        };
        Ok(Client {
            inner,
            rt: Arc::new(rt),
        })
    }

    fn run<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        run_on(&self.rt, fut)
    }

    /// The async client inside (usable only from within this client's
    /// runtime, e.g. to pass to code that also has an async path).
    pub fn as_async(&self) -> &asynch::Client {
        &self.inner
    }

    /// See [`crate::client::Client::with_consistency`].
    #[must_use]
    pub fn with_consistency(&self, c: Consistency) -> Client {
        Client {
            inner: self.inner.with_consistency(c),
            rt: self.rt.clone(),
        }
    }

    /// A handle whose writes allow (`true`) or refuse a sloppy quorum: see
    /// [`crate::client::Client::with_sloppy_quorum`] for what it gives and
    /// what it does not.
    #[must_use]
    pub fn with_sloppy_quorum(&self, allow: bool) -> Client {
        Client {
            inner: self.inner.with_sloppy_quorum(allow),
            rt: self.rt.clone(),
        }
    }

    /// Whether this handle's writes allow a sloppy quorum.
    pub fn sloppy_quorum(&self) -> bool {
        self.inner.sloppy_quorum()
    }

    /// See [`crate::client::Client::with_timeout`].
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.with_timeout(timeout),
            rt: self.rt.clone(),
        }
    }

    /// The consistency level this handle's requests carry.
    pub fn consistency(&self) -> Consistency {
        self.inner.consistency()
    }

    /// The epoch of the ring in use.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// The routing table in use.
    pub fn routing(&self) -> Arc<Routing> {
        self.inner.routing()
    }

    /// Requests currently waiting for an answer, over all connections.
    pub fn pending_requests(&self) -> usize {
        self.inner.pending_requests()
    }

    /// See [`crate::client::Client::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>> {
        self.run(self.inner.get(key))
    }

    /// See [`crate::client::Client::put`].
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.inner.put(key, value))
    }

    /// See [`crate::client::Client::put_with`].
    pub fn put_with(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, options: PutOptions) -> Result<bool> {
        self.run(self.inner.put_with(key, value, options))
    }

    /// See [`crate::client::Client::delete`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.inner.delete(key))
    }

    /// See [`crate::client::Client::exists`].
    pub fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.run(self.inner.exists(key))
    }

    /// See [`crate::client::Client::mget`].
    pub fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        self.run(self.inner.mget(keys))
    }

    /// See [`crate::client::Client::mput`] (atomic per core and batch only).
    pub fn mput<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)], ttl_ms: u64) -> Result<()> {
        self.run(self.inner.mput(pairs, ttl_ms))
    }

    /// See [`crate::client::Client::scan`].
    pub fn scan(&self, start_token: Token, end_token: Token, cursor: &[u8], limit: u32) -> Result<ScanPage> {
        self.run(self.inner.scan(start_token, end_token, cursor, limit))
    }

    /// See [`crate::client::Client::list`].
    pub fn list(&self, prefix: impl AsRef<[u8]>, cursor: &[u8], limit: u32) -> Result<ScanPage> {
        self.run(self.inner.list(prefix, cursor, limit))
    }

    /// See [`crate::client::Client::scan_all`].
    pub fn scan_all(&self, start_token: Token, end_token: Token, page_size: u32) -> Result<Vec<Entry>> {
        self.run(self.inner.scan_all(start_token, end_token, page_size))
    }

    /// See [`crate::client::Client::list_all`].
    pub fn list_all(&self, prefix: impl AsRef<[u8]>, page_size: u32) -> Result<Vec<Entry>> {
        self.run(self.inner.list_all(prefix, page_size))
    }

    /// Pages through the keys starting with `prefix`; see [`Pages`].
    pub fn list_pages(&self, prefix: impl AsRef<[u8]>, page_size: u32) -> Pages {
        Pages {
            inner: self.inner.list_pages(prefix, page_size),
            rt: self.rt.clone(),
        }
    }

    /// Pages through `[start_token, end_token)`; see [`Pages`].
    pub fn scan_pages(&self, start_token: Token, end_token: Token, page_size: u32) -> Pages {
        Pages {
            inner: self.inner.scan_pages(start_token, end_token, page_size),
            rt: self.rt.clone(),
        }
    }

    /// See [`crate::client::Client::expire`].
    pub fn expire(&self, key: impl AsRef<[u8]>, ttl_ms: u64) -> Result<bool> {
        self.run(self.inner.expire(key, ttl_ms))
    }

    /// See [`crate::client::Client::ttl`].
    pub fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Ttl> {
        self.run(self.inner.ttl(key))
    }

    /// See [`crate::client::Client::incr`] (never retried).
    pub fn incr(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        self.run(self.inner.incr(key, delta))
    }

    /// See [`crate::client::Client::cas`] (never retried).
    pub fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expected_meta: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl_ms: u64,
    ) -> Result<bool> {
        self.run(self.inner.cas(key, expected_meta, value, ttl_ms))
    }

    /// See [`crate::client::Client::cas_value`] (never retried).
    pub fn cas_value(&self, key: impl AsRef<[u8]>, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<CasResult> {
        self.run(self.inner.cas_value(key, expected, new))
    }

    /// See [`crate::client::Client::get_serial`].
    pub fn get_serial(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.run(self.inner.get_serial(key))
    }

    /// See [`crate::client::Client::get_versions`].
    pub fn get_versions(&self, key: impl AsRef<[u8]>) -> Result<Option<Versions>> {
        self.run(self.inner.get_versions(key))
    }

    /// See [`crate::client::Client::put_with_context`] (never retried).
    pub fn put_with_context(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        context: &[u8],
        ttl_ms: u64,
    ) -> Result<()> {
        self.run(self.inner.put_with_context(key, value, context, ttl_ms))
    }

    /// See [`crate::client::Client::delete_with_context`] (never retried).
    pub fn delete_with_context(&self, key: impl AsRef<[u8]>, context: &[u8]) -> Result<()> {
        self.run(self.inner.delete_with_context(key, context))
    }

    /// See [`crate::client::Client::connect_all`].
    pub fn connect_all(&self) -> Result<()> {
        self.run(self.inner.connect_all())
    }

    /// See [`crate::client::Client::ping`].
    pub fn ping(&self) -> Result<()> {
        self.run(self.inner.ping())
    }

    /// See [`crate::client::Client::refresh_ring`].
    pub fn refresh_ring(&self) -> Result<u64> {
        self.run(self.inner.refresh_ring())
    }
}

/// A blocking scan or listing in progress; see [`crate::client::Pages`].
pub struct Pages {
    inner: asynch::Pages,
    rt: Arc<RuntimeBox>,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Pages")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Pages {
    /// The next page's entries; `Ok(None)` once the scan is complete.
    pub fn next_page(&mut self) -> Result<Option<Vec<Entry>>> {
        run_on(&self.rt, self.inner.next_page())
    }

    /// The cursor the next page will be asked with.
    pub fn cursor(&self) -> &[u8] {
        self.inner.cursor()
    }
}
