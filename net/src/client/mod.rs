//! The corekv client SDK (feature `client`): an async [`Client`] for tokio
//! applications and a synchronous [`blocking::Client`].
//!
//! The client fetches the ring from a seed node (`RING`), computes each key's
//! owner itself ([`routing`]) and sends the request straight to the owning
//! core's port, over one pipelined connection per (node, core): many requests
//! in flight per connection, matched to answers by request id. Each attempt
//! has a timeout; only idempotent operations are retried (see
//! [`is_idempotent`]). `docs/client.md` describes the SDK for users.
//!
//! ```no_run
//! # async fn demo() -> Result<(), corekv_net::client::ClientError> {
//! use corekv_net::client::{Client, ClientOptions};
//! let client = Client::connect(&["127.0.0.1:7380"], ClientOptions::default()).await?;
//! client.put("user:1", "ada").await?;
//! assert_eq!(client.get("user:1").await?.map(|v| v.value), Some(b"ada".to_vec()));
//! # Ok(()) }
//! ```

pub mod blocking;
mod conn;
pub mod error;
pub mod routing;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use conn::{ConnSettings, Endpoint, Reply};
pub use error::{ClientError, CloseReason, Result};
pub use routing::{Owner, RingError, RingNode, Routing};
pub use tls::Tls;

pub use crate::msg::{Condition, Consistency, ErrorCode};
use crate::msg::{KeyValue, Limits, List, Op, Request};
use crate::token::{token_of, Token};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning is ignored: the maps behind these locks are valid after every
    // single operation, so a panic elsewhere leaves nothing half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Client settings. `ClientOptions::default()` gives the documented defaults;
/// change fields with struct update syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Time limit of one attempt of one request, connecting included
    /// (default 2 s). Also sent to the server as the request's `timeout_ms`.
    /// With retries, a call can take up to `(retries + 1) * timeout` plus backoff.
    /// Zero: no client-side limit, and the server applies its default.
    pub timeout: Duration,
    /// How many times an idempotent request is retried after an I/O error, a
    /// timeout, a lost connection, or the server's `OVERLOADED`,
    /// `UNAVAILABLE` or `TIMEOUT` (default 2). A single-key request's retries
    /// go to the next nodes of the ring in turn (any node coordinates), so a
    /// node that is restarting or draining costs one failed attempt.
    /// Non-idempotent requests are never retried.
    pub retries: u32,
    /// Pause before the first retry, doubled for each further one (default 10 ms).
    pub retry_backoff: Duration,
    /// Most requests waiting for answers on one connection (default 128);
    /// further callers wait for a slot (within their timeout).
    pub max_in_flight: usize,
    /// Consistency level of every request unless overridden with
    /// [`Client::with_consistency`] (default QUORUM).
    pub consistency: Consistency,
    /// Whether writes allow a sloppy quorum unless overridden with
    /// [`Client::with_sloppy_quorum`] (default false).
    pub sloppy_quorum: bool,
    /// Time limit for opening one TCP connection (default 1 s).
    pub connect_timeout: Duration,
    /// Most keys per MGET request and pairs per MPUT request (default 4096):
    /// larger batches are split into several requests.
    pub max_batch: usize,
    /// Limits applied to responses (and to the size of requests sent).
    pub limits: Limits,
    /// Fetch the ring again this often in the background (default 30 s), so
    /// routing follows membership changes; `None`: only on
    /// [`Client::refresh_ring`]. The task ends when the last clone of the
    /// client is dropped.
    pub refresh_interval: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(2),
            retries: 2,
            retry_backoff: Duration::from_millis(10),
            max_in_flight: 128,
            consistency: Consistency::Quorum,
            sloppy_quorum: false,
            connect_timeout: Duration::from_secs(1),
            max_batch: 4096,
            limits: Limits::default(),
            refresh_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// A user and password the client sends as AUTH on every connection it
/// opens (reconnects included), for a node with accounts
/// (`security.users_file`). `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password. Without TLS it crosses the network in clear.
    pub password: String,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"(redacted)")
            .finish()
    }
}

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Value {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Opaque version metadata; pass it to [`Client::cas`] as `expected_meta`.
    pub meta: Vec<u8>,
    /// Remaining time to live in ms; 0 = no expiry.
    pub ttl_ms: u64,
}

/// Options of [`Client::put_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PutOptions {
    /// Time to live in ms; 0 = no expiry.
    pub ttl_ms: u64,
    /// NX ([`Condition::IfAbsent`]), XX ([`Condition::IfPresent`]) or none.
    pub condition: Condition,
}

impl Default for PutOptions {
    fn default() -> PutOptions {
        PutOptions {
            ttl_ms: 0,
            condition: Condition::Always,
        }
    }
}

/// The outcome of [`Client::cas_value`] or [`Client::get_serial`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CasResult {
    /// Whether the condition held and the new value was set.
    pub applied: bool,
    /// The key's value after the operation: the new value if applied, else
    /// the current value that failed the condition (`None`: absent).
    pub value: Option<Vec<u8>>,
}

/// Every live version of a key, as [`Client::get_versions`] returns it.
///
/// In a `causal` keyspace concurrent writes of a key are all kept, as
/// siblings; in an `lww` keyspace there is never more than one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Versions {
    /// The causal context: what this read saw. Opaque: pass it back
    /// **unchanged** to [`Client::put_with_context`] or
    /// [`Client::delete_with_context`], and that write supersedes exactly the
    /// siblings read here (writes this read did not see survive beside it).
    /// Never edit it, and never use one key's context for another key: a
    /// context is a claim of what was seen, and a wrong claim can supersede
    /// writes nobody saw.
    pub context: Vec<u8>,
    /// The values of the concurrent writes, in the server's order. Empty: the
    /// key was deleted, though the context still matters (a write with it
    /// supersedes the delete rather than standing beside it).
    pub siblings: Vec<Sibling>,
}

/// One concurrent version of a key (see [`Versions`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Sibling {
    /// The value bytes.
    pub value: Vec<u8>,
    /// When this write expires, in ms since the Unix epoch by the server's
    /// clock; 0 = never. Each sibling keeps its own write's expiry.
    pub expiry_ms: u64,
}

/// A key and its value, as scans and listings return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One page of a scan or listing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ScanPage {
    /// Keys and values, in scan order.
    pub entries: Vec<Entry>,
    /// Pass back to get the next page; empty = the scan is complete.
    pub next_cursor: Vec<u8>,
}

/// A key's remaining time to live (answer to TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// The key does not exist.
    Missing,
    /// The key exists and never expires.
    NoExpiry,
    /// The key expires in this many ms.
    Millis(u64),
}

/// True if `op` can be sent twice with the effect of once, so the client may
/// retry it when it cannot tell whether the first attempt was applied: reads,
/// unconditional PUT, DELETE, MPUT and EXPIRE, PING and RING.
///
/// INCR would add twice, CAS and NX/XX PUT could report a false failure (the
/// first attempt applied, the retry sees the new state), so they are never
/// retried. Neither are PUT_VERSIONED and DELETE_VERSIONED: the retry carries
/// the same context, which does not cover the first attempt's write, so a
/// retry after an applied first attempt adds a second sibling (a duplicate
/// value, or an extra tombstone counting towards the sibling bound).
pub fn is_idempotent(op: &Op<'_>) -> bool {
    match op {
        Op::Get { .. }
        | Op::GetVersions { .. }
        | Op::Exists { .. }
        | Op::MGet { .. }
        | Op::Scan { .. }
        | Op::List { .. }
        | Op::Ttl { .. }
        | Op::Ping
        | Op::Ring
        | Op::SerialGet { .. }
        | Op::Delete { .. }
        | Op::MPut { .. }
        | Op::Expire { .. } => true,
        Op::Put { condition, .. } => *condition == Condition::Always,
        Op::Incr { .. }
        | Op::Cas { .. }
        | Op::CasValue { .. }
        | Op::PutVersioned { .. }
        | Op::DeleteVersioned { .. } => false,
    }
}

fn unexpected(request: &'static str, reply: &Reply) -> ClientError {
    ClientError::UnexpectedResponse {
        request,
        got: reply.opcode(),
    }
}

/// Connections: one endpoint per address, opened lazily.
struct Transport {
    options: ClientOptions,
    settings: ConnSettings,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl Transport {
    fn endpoint(&self, address: &str) -> Arc<Endpoint> {
        lock(&self.endpoints)
            .entry(address.to_owned())
            .or_insert_with(|| Arc::new(Endpoint::new(address.to_owned())))
            .clone()
    }

    /// One attempt: connect if needed, send, wait, all within `timeout`.
    async fn attempt(&self, endpoint: &Endpoint, req: &Request<'_>, timeout: Duration) -> Result<Reply> {
        let call = async {
            let conn = endpoint.conn(&self.settings).await?;
            conn.call(req).await
        };
        if timeout.is_zero() {
            return call.await;
        }
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { after: timeout }),
        }
    }

    /// RING from the first of `addresses` that answers with a usable ring.
    async fn fetch_ring(&self, addresses: &[String], consistency: Consistency) -> Result<Routing> {
        let timeout = self.options.timeout;
        let req = Request {
            consistency,
            timeout_ms: timeout_ms(timeout),
            sloppy_quorum: false,
            op: Op::Ring,
        };
        let mut last = None;
        for address in addresses {
            let endpoint = self.endpoint(address);
            let result = match self.attempt(&endpoint, &req, timeout).await {
                Ok(Reply::Ring { epoch, nodes }) => Routing::new(epoch, nodes).map_err(ClientError::Ring),
                Ok(other) => Err(unexpected("RING", &other)),
                Err(e) => Err(e),
            };
            match result {
                Ok(routing) => return Ok(routing),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(last) => ClientError::Unavailable {
                tried: addresses.to_vec(),
                last: Box::new(last),
            },
            None => ClientError::NoSeeds,
        })
    }
}

/// A routing table and the endpoint of each of its targets.
struct Topology {
    routing: Arc<Routing>,
    /// Indexed like `routing.targets()`.
    endpoints: Vec<Arc<Endpoint>>,
}

impl Topology {
    fn new(routing: Routing, transport: &Transport) -> Topology {
        let endpoints: Vec<_> = routing.targets().iter().map(|t| transport.endpoint(t)).collect();
        // Forget endpoints the new ring no longer names (their connections
        // close when the last request on them finishes).
        lock(&transport.endpoints).retain(|address, _| routing.targets().contains(address));
        debug_assert_eq!(endpoints.len(), routing.targets().len());
        Topology {
            routing: Arc::new(routing),
            endpoints,
        }
    }

    fn target(&self, target: usize) -> Result<Arc<Endpoint>> {
        // `Topology::new` made one endpoint per target, so this always finds one.
        self.endpoints
            .get(target)
            .cloned()
            .ok_or(ClientError::Ring(RingError::NoVnodes))
    }

    /// The shared-port endpoint of the node owning `token`.
    fn node_of_token(&self, token: Token) -> Result<Arc<Endpoint>> {
        let node = self.routing.owner_of_token(token).node;
        let target = self
            .routing
            .node_target(node)
            .ok_or(ClientError::Ring(RingError::NoVnodes))?;
        self.target(target)
    }
}

struct Inner {
    transport: Transport,
    seeds: Vec<String>,
    topology: RwLock<Arc<Topology>>,
    /// One ring refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Rotates the node a refresh asks first.
    refresh_turn: AtomicUsize,
    /// When a failed attempt last asked for a ring refresh (ms since the
    /// client started), so a burst of failures asks once.
    last_failure_refresh: std::sync::atomic::AtomicU64,
    /// When the client started (the clock of `last_failure_refresh`).
    started: std::time::Instant,
    /// Attempts made again after a retryable failure.
    retries_made: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn topology(&self) -> Arc<Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn timeout_ms(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

/// The async client. Cheap to clone (all clones share connections and the
/// ring), `Send + Sync`, so tokio tasks can share it.
///
/// Keys and values are anything that is `AsRef<[u8]>` (`&str`, `String`,
/// `Vec<u8>`, `&[u8]`).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    consistency: Consistency,
    sloppy_quorum: bool,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("epoch", &self.epoch())
            .field("consistency", &self.consistency)
            .field("sloppy_quorum", &self.sloppy_quorum)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects: asks the seeds, in order, for the ring (RING, on their shared
    /// client port) and builds the routing table from the first answer.
    /// Data connections open lazily, on each endpoint's first request.
    pub async fn connect<S: AsRef<str>>(seeds: &[S], options: ClientOptions) -> Result<Client> {
        Client::open(seeds, options, None, None).await
    }

    /// [`Client::connect`] over TLS: every connection (to the seeds, then
    /// to every node and core port of the ring) starts with a TLS handshake
    /// checked against `tls` ([`Tls`]: trusted authorities, an optional
    /// client certificate, the server name). A refused handshake is
    /// [`ClientError::Tls`].
    pub async fn connect_tls<S: AsRef<str>>(seeds: &[S], options: ClientOptions, tls: Tls) -> Result<Client> {
        Client::open(seeds, options, None, Some(tls)).await
    }

    /// [`Client::connect_tls`] and [`Client::connect_as`] together: TLS, then
    /// AUTH with `credentials` over the encrypted connection.
    pub async fn connect_tls_as<S: AsRef<str>>(
        seeds: &[S],
        options: ClientOptions,
        tls: Tls,
        credentials: Credentials,
    ) -> Result<Client> {
        Client::open(seeds, options, Some(Arc::new(credentials)), Some(tls)).await
    }

    /// [`Client::connect`] to nodes with accounts: every connection the
    /// client opens, to any node and on every reconnect, authenticates with
    /// `credentials` before it carries a request. A refusal is
    /// [`ClientError::Auth`].
    pub async fn connect_as<S: AsRef<str>>(
        seeds: &[S],
        options: ClientOptions,
        credentials: Credentials,
    ) -> Result<Client> {
        Client::open(seeds, options, Some(Arc::new(credentials)), None).await
    }

    async fn open<S: AsRef<str>>(
        seeds: &[S],
        options: ClientOptions,
        credentials: Option<Arc<Credentials>>,
        tls: Option<Tls>,
    ) -> Result<Client> {
        let seeds: Vec<String> = seeds.iter().map(|s| s.as_ref().to_owned()).collect();
        if seeds.is_empty() {
            return Err(ClientError::NoSeeds);
        }
        let transport = Transport {
            options,
            settings: ConnSettings {
                connect_timeout: options.connect_timeout,
                max_in_flight: options.max_in_flight,
                limits: options.limits,
                credentials,
                tls,
            },
            endpoints: Mutex::new(HashMap::new()),
        };
        let routing = transport.fetch_ring(&seeds, options.consistency).await?;
        let topology = Topology::new(routing, &transport);
        let client = Client {
            inner: Arc::new(Inner {
                transport,
                seeds,
                topology: RwLock::new(Arc::new(topology)),
                refreshing: tokio::sync::Mutex::new(()),
                refresh_turn: AtomicUsize::new(0),
                last_failure_refresh: std::sync::atomic::AtomicU64::new(0),
                started: std::time::Instant::now(),
                retries_made: std::sync::atomic::AtomicU64::new(0),
            }),
            consistency: options.consistency,
            sloppy_quorum: options.sloppy_quorum,
            timeout: options.timeout,
        };
        if let Some(every) = options.refresh_interval.filter(|d| !d.is_zero()) {
            tokio::spawn(refresh_loop(
                Arc::downgrade(&client.inner),
                client.consistency,
                client.timeout,
                every,
            ));
        }
        Ok(client)
    }

    /// A handle whose requests carry consistency `c`. It shares this client's
    /// connections and ring; creating one costs a reference count.
    #[must_use]
    pub fn with_consistency(&self, c: Consistency) -> Client {
        Client {
            consistency: c,
            ..self.clone()
        }
    }

    /// A handle whose writes allow (`true`) or refuse a sloppy quorum.
    ///
    /// With a sloppy quorum, a write whose replica is believed down (convicted
    /// by the cluster's failure detector) goes to a healthy fallback node
    /// instead, which keeps it as a durable hint and replays it to the replica
    /// when it returns; the fallback's acknowledgement counts toward the
    /// level. The write then stays available while replicas are down, but it
    /// is weaker: the acknowledgements are not all from the key's replicas,
    /// so a later QUORUM read of the replicas may miss the write until the
    /// hint is replayed. Reads ignore the setting. Shares connections and
    /// ring like [`Client::with_consistency`].
    #[must_use]
    pub fn with_sloppy_quorum(&self, allow: bool) -> Client {
        Client {
            sloppy_quorum: allow,
            ..self.clone()
        }
    }

    /// Whether this handle's writes allow a sloppy quorum.
    pub fn sloppy_quorum(&self) -> bool {
        self.sloppy_quorum
    }

    /// A handle whose requests use `timeout` (per attempt, and sent to the
    /// server as `timeout_ms`). Shares connections and ring like
    /// [`Client::with_consistency`].
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// The consistency level this handle's requests carry.
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// The epoch of the ring in use.
    pub fn epoch(&self) -> u64 {
        self.inner.topology().routing.epoch()
    }

    /// The routing table in use.
    pub fn routing(&self) -> Arc<Routing> {
        self.inner.topology().routing.clone()
    }

    /// How many attempts this client (and its clones) made again after a
    /// retryable failure, since it connected: each retried request counts
    /// once per retry. A request whose retry succeeded returned `Ok`.
    pub fn retries_made(&self) -> u64 {
        self.inner.retries_made.load(Ordering::Relaxed)
    }

    /// Requests currently waiting for an answer, over the connections of the
    /// current ring.
    pub fn pending_requests(&self) -> usize {
        lock(&self.inner.transport.endpoints)
            .values()
            .map(|e| e.pending())
            .sum()
    }

    /// Opens a connection to every endpoint of the ring now (each core port
    /// and each node's shared port) instead of on first use, so the first
    /// requests do not pay for connecting. Fails with the first error.
    pub async fn connect_all(&self) -> Result<()> {
        let topo = self.inner.topology();
        let transport = &self.inner.transport;
        // Each connection attempt is bounded by `connect_timeout`.
        let opens = topo
            .endpoints
            .iter()
            .map(|e| async move { e.conn(&transport.settings).await.map(drop) });
        futures::future::try_join_all(opens).await?;
        Ok(())
    }

    /// Sends `op` to `endpoint`, retrying idempotent operations on retryable
    /// errors.
    async fn call(&self, endpoint: &Arc<Endpoint>, op: Op<'_>) -> Result<Reply> {
        self.call_on(std::slice::from_ref(endpoint), op).await
    }

    /// Sends `op` to `endpoints[0]`; an idempotent operation that fails with
    /// a retryable error is sent again, after a backoff, to the next
    /// endpoint in turn (wrapping), up to `retries` times.
    async fn call_on(&self, endpoints: &[Arc<Endpoint>], op: Op<'_>) -> Result<Reply> {
        let req = Request {
            consistency: self.consistency,
            timeout_ms: timeout_ms(self.timeout),
            sloppy_quorum: self.sloppy_quorum,
            op,
        };
        let opts = &self.inner.transport.options;
        let retries = if is_idempotent(&op) { opts.retries } else { 0 };
        let mut attempt = 0u32;
        loop {
            let Some(endpoint) = endpoints.get(attempt as usize % endpoints.len().max(1)) else {
                return Err(ClientError::Ring(RingError::NoVnodes));
            };
            match self.inner.transport.attempt(endpoint, &req, self.timeout).await {
                Err(e) if attempt < retries && e.is_retryable() => {
                    self.inner.retries_made.fetch_add(1, Ordering::Relaxed);
                    if endpoints.len() > 1 {
                        self.refresh_after_failure();
                    }
                    let backoff = opts.retry_backoff.saturating_mul(1u32 << attempt.min(16));
                    attempt += 1;
                    if !backoff.is_zero() {
                        tokio::time::sleep(backoff).await;
                    }
                }
                result => return result,
            }
        }
    }

    /// After a failed attempt: fetch the ring again in the background (at
    /// most once a second), so routing soon leaves out a node the cluster
    /// took for down (RING lists only live nodes).
    fn refresh_after_failure(&self) {
        let now = u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.inner.last_failure_refresh.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1000 {
            return;
        }
        if self
            .inner
            .last_failure_refresh
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            // A failed refresh keeps the current ring; the next failure asks again.
            let _ = client.refresh_ring().await;
        });
    }

    /// Sends a single-key `op` to the core owning `key`; its retries go to
    /// the next nodes of the ring.
    async fn call_key(&self, key: &[u8], op: Op<'_>) -> Result<Reply> {
        let endpoints = {
            let topo = self.inner.topology();
            let n = (self.inner.transport.options.retries as usize)
                .saturating_add(1)
                .min(16);
            topo.routing
                .failover_targets(token_of(key), n)
                .into_iter()
                .map(|t| topo.target(t))
                .collect::<Result<Vec<_>>>()?
        };
        self.call_on(&endpoints, op).await
    }

    /// The value of `key`, `None` if it does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>> {
        let key = key.as_ref();
        match self.call_key(key, Op::Get { key }).await? {
            Reply::Value(v) => Ok(Some(v)),
            Reply::NotFound => Ok(None),
            other => Err(unexpected("GET", &other)),
        }
    }

    /// Writes `key` unconditionally, without expiry.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let op = Op::Put {
            key,
            value,
            ttl_ms: 0,
            condition: Condition::Always,
        };
        match self.call_key(key, op).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("PUT", &other)),
        }
    }

    /// Writes `key` with a TTL and/or an NX/XX condition. `Ok(false)` if the
    /// condition did not hold (the server's `CONDITION_FAILED`); nothing was
    /// written then. Retried only when unconditional.
    pub async fn put_with(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, options: PutOptions) -> Result<bool> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let op = Op::Put {
            key,
            value,
            ttl_ms: options.ttl_ms,
            condition: options.condition,
        };
        condition_result("PUT", self.call_key(key, op).await)
    }

    /// Deletes `key` (no error if it does not exist).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        match self.call_key(key, Op::Delete { key }).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("DELETE", &other)),
        }
    }

    /// True if `key` exists.
    pub async fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        let reply = self.call_key(key, Op::Exists { key }).await?;
        integer_bool("EXISTS", reply)
    }

    /// Sets `key`'s time to live (`ttl_ms` 0 removes the expiry). `Ok(false)`
    /// if the key does not exist.
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl_ms: u64) -> Result<bool> {
        let key = key.as_ref();
        let reply = self.call_key(key, Op::Expire { key, ttl_ms }).await?;
        integer_bool("EXPIRE", reply)
    }

    /// `key`'s remaining time to live.
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Ttl> {
        let key = key.as_ref();
        match self.call_key(key, Op::Ttl { key }).await? {
            Reply::Integer(-2) => Ok(Ttl::Missing),
            Reply::Integer(-1) => Ok(Ttl::NoExpiry),
            Reply::Integer(ms) if ms >= 0 => Ok(Ttl::Millis(ms.unsigned_abs())),
            Reply::Integer(value) => Err(ClientError::UnexpectedInteger { request: "TTL", value }),
            other => Err(unexpected("TTL", &other)),
        }
    }

    /// Adds `delta` to the decimal integer stored at `key` (a missing key
    /// counts as 0) and returns the new value. Never retried: a retry after a
    /// lost answer could add twice. Fails with [`ClientError::NotAnInteger`]
    /// if the value is not an integer or the sum overflows.
    pub async fn incr(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        let key = key.as_ref();
        match self.call_key(key, Op::Incr { key, delta }).await {
            Ok(Reply::Integer(n)) => Ok(n),
            Ok(other) => Err(unexpected("INCR", &other)),
            Err(ClientError::Server { code, message }) if code == ErrorCode::NOT_AN_INTEGER => {
                Err(ClientError::NotAnInteger { message })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `value` only if `key`'s current version metadata equals
    /// `expected_meta` (from [`Value::meta`]; empty = only if the key does not
    /// exist). `Ok(false)` if it did not match. Never retried.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expected_meta: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl_ms: u64,
    ) -> Result<bool> {
        let (key, expected, value) = (key.as_ref(), expected_meta.as_ref(), value.as_ref());
        let op = Op::Cas {
            key,
            expected,
            value,
            ttl_ms,
        };
        condition_result("CAS", self.call_key(key, op).await)
    }

    /// Sets `key` to `new` (`None` deletes it) only if its current value is
    /// `expected` (`None`: only if the key does not exist), and says whether
    /// it did, with the value that failed the condition otherwise.
    ///
    /// Linearizable per key, on one node and in a cluster, where it is a
    /// Paxos round among the key's replicas (it needs a majority of them up).
    /// Plain writes are not: a key used with `cas_value` should be written
    /// only through it (a plain PUT made after the key's first CAS is not
    /// seen by later ones in a cluster). The value it sets has no TTL.
    ///
    /// Never retried: the first attempt may have applied. A timeout means
    /// the outcome is unknown; read with [`Client::get_serial`] to learn it.
    pub async fn cas_value(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasResult> {
        let key = key.as_ref();
        match self.call_key(key, Op::CasValue { key, expected, new }).await? {
            Reply::CasResult(r) => Ok(r),
            other => Err(unexpected("CAS_VALUE", &other)),
        }
    }

    /// A linearizable read of `key`: it sees every [`Client::cas_value`]
    /// that answered before it was sent (in a cluster, a Paxos round among
    /// the key's replicas). `None`: the key is absent.
    pub async fn get_serial(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        match self.call_key(key, Op::SerialGet { key }).await? {
            Reply::CasResult(r) => Ok(r.value),
            other => Err(unexpected("SERIAL_GET", &other)),
        }
    }

    /// Every live version of `key` and the causal context covering them;
    /// `None` if the key has no versions at all. A key whose versions are all
    /// deletes answers `Some` with no siblings and a context.
    ///
    /// Routed like [`Client::get`] and retried like it. To resolve siblings,
    /// merge them and write the result back with
    /// [`Client::put_with_context`], passing [`Versions::context`] unchanged:
    ///
    /// ```no_run
    /// # async fn demo(client: corekv_net::client::Client) -> corekv_net::client::Result<()> {
    /// use std::collections::BTreeSet;
    /// loop {
    ///     let (context, mut items) = match client.get_versions("cart:7").await? {
    ///         // Merge every sibling: the union of the carts written concurrently.
    ///         Some(v) => {
    ///             let items: BTreeSet<Vec<u8>> = v
    ///                 .siblings
    ///                 .iter()
    ///                 .flat_map(|s| s.value.split(|b| *b == b'\n').map(<[u8]>::to_vec))
    ///                 .filter(|i| !i.is_empty())
    ///                 .collect();
    ///             (v.context, items)
    ///         }
    ///         None => (Vec::new(), BTreeSet::new()),
    ///     };
    ///     items.insert(b"pear".to_vec());
    ///     let value = items.into_iter().collect::<Vec<_>>().join(&b'\n');
    ///     // Supersedes exactly the siblings read; a write made since stays beside it.
    ///     match client.put_with_context("cart:7", value, &context, 0).await {
    ///         Ok(()) => break,
    ///         Err(e) if e.is_retryable() => continue, // unknown outcome: read again and merge
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_versions(&self, key: impl AsRef<[u8]>) -> Result<Option<Versions>> {
        let key = key.as_ref();
        match self.call_key(key, Op::GetVersions { key }).await? {
            Reply::Versions(v) => Ok(Some(v)),
            Reply::NotFound => Ok(None),
            other => Err(unexpected("GET_VERSIONS", &other)),
        }
    }

    /// Writes `key`, superseding exactly the versions `context` covers: pass
    /// the [`Versions::context`] of a [`Client::get_versions`] unchanged, or
    /// an empty context for a blind write that supersedes nothing (and so
    /// becomes one more sibling in a `causal` keyspace). `ttl_ms` 0 = no
    /// expiry.
    ///
    /// Never retried: a retry would carry a context that does not cover the
    /// first attempt, which could add a duplicate sibling.
    pub async fn put_with_context(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        context: &[u8],
        ttl_ms: u64,
    ) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let op = Op::PutVersioned {
            key,
            value,
            ttl_ms,
            context,
        };
        match self.call_key(key, op).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("PUT_VERSIONED", &other)),
        }
    }

    /// Deletes `key`, superseding exactly the versions `context` covers
    /// (pass [`Versions::context`] unchanged). Versions written concurrently,
    /// which the context did not see, survive the delete. Never retried, like
    /// [`Client::put_with_context`].
    pub async fn delete_with_context(&self, key: impl AsRef<[u8]>, context: &[u8]) -> Result<()> {
        let key = key.as_ref();
        match self.call_key(key, Op::DeleteVersioned { key, context }).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("DELETE_VERSIONED", &other)),
        }
    }

    /// Groups item indices by owning endpoint, in first-appearance order, and
    /// cuts each group into batches of at most `max_batch`.
    fn batches(&self, keys: impl Iterator<Item = Token>) -> Result<Vec<(Arc<Endpoint>, Vec<usize>)>> {
        let topo = self.inner.topology();
        let max = self.inner.transport.options.max_batch.max(1);
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut by_target: HashMap<usize, usize> = HashMap::new();
        for (i, token) in keys.enumerate() {
            let target = topo.routing.owner_of_token(token).target;
            let g = *by_target.entry(target).or_insert_with(|| {
                groups.push((target, Vec::new()));
                groups.len() - 1
            });
            if let Some(group) = groups.get_mut(g) {
                group.1.push(i);
            }
        }
        let mut out = Vec::new();
        for (target, idxs) in groups {
            let endpoint = topo.target(target)?;
            for chunk in idxs.chunks(max) {
                out.push((endpoint.clone(), chunk.to_vec()));
            }
        }
        Ok(out)
    }

    /// The values of `keys`, in the same order (`None` for missing keys).
    ///
    /// The keys are split by owning core and the per-core MGETs are sent in
    /// parallel (each at most `max_batch` keys). If any fails, the call fails.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let batches = self.batches(keys.iter().map(|k| token_of(k.as_ref())))?;
        let calls = batches.into_iter().map(|(endpoint, idxs)| async move {
            let ks: Vec<&[u8]> = idxs.iter().filter_map(|&i| keys.get(i)).map(|k| k.as_ref()).collect();
            let reply = self.call(&endpoint, Op::MGet { keys: List::Slice(&ks) }).await?;
            match reply {
                Reply::Values(slots) if slots.len() == ks.len() => Ok((idxs, slots)),
                Reply::Values(slots) => Err(ClientError::SlotCountMismatch {
                    asked: ks.len(),
                    got: slots.len(),
                }),
                other => Err(unexpected("MGET", &other)),
            }
        });
        let results = futures::future::try_join_all(calls).await?;
        let mut out = vec![None; keys.len()];
        for (idxs, slots) in results {
            for (i, slot) in idxs.into_iter().zip(slots) {
                if let Some(o) = out.get_mut(i) {
                    *o = slot;
                }
            }
        }
        Ok(out)
    }

    /// Writes every pair, all with `ttl_ms` (0 = no expiry).
    ///
    /// The pairs are split by owning core and the per-core MPUTs (each at most
    /// `max_batch` pairs) are sent in parallel. **Atomicity holds per request
    /// only**: the pairs of one core within one batch are applied together,
    /// but pairs on different cores (or nodes, or batches) are independent;
    /// if the call fails, some batches may have been written and others not.
    pub async fn mput<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)], ttl_ms: u64) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let batches = self.batches(pairs.iter().map(|(k, _)| token_of(k.as_ref())))?;
        let calls = batches.into_iter().map(|(endpoint, idxs)| async move {
            let entries: Vec<KeyValue<'_>> = idxs
                .iter()
                .filter_map(|&i| pairs.get(i))
                .map(|(k, v)| KeyValue {
                    key: k.as_ref(),
                    value: v.as_ref(),
                })
                .collect();
            let op = Op::MPut {
                entries: List::Slice(&entries),
                ttl_ms,
            };
            match self.call(&endpoint, op).await? {
                Reply::Ok => Ok(()),
                other => Err(unexpected("MPUT", &other)),
            }
        });
        futures::future::try_join_all(calls).await?;
        Ok(())
    }

    /// One page of the entries whose tokens are in `[start_token, end_token)`
    /// (wrapping when `end_token <= start_token`, so `scan(0, 0, ..)` is the
    /// whole ring). Start with an empty `cursor`, then pass each page's
    /// `next_cursor` until it is empty. At most `limit` entries a page.
    ///
    /// Sent to the shared port of the node owning `start_token` (the node
    /// gathers from its cores); every page of one scan goes to the same node.
    pub async fn scan(&self, start_token: Token, end_token: Token, cursor: &[u8], limit: u32) -> Result<ScanPage> {
        let endpoint = self.inner.topology().node_of_token(start_token)?;
        let op = Op::Scan {
            start: start_token,
            end: end_token,
            cursor,
            limit,
        };
        page_result("SCAN", cursor, self.call(&endpoint, op).await?)
    }

    /// One page of the entries whose keys start with `prefix`; paging as in
    /// [`Client::scan`]. Sent to the shared port of the node owning the
    /// prefix's token, so every page of one listing goes to the same node.
    pub async fn list(&self, prefix: impl AsRef<[u8]>, cursor: &[u8], limit: u32) -> Result<ScanPage> {
        let prefix = prefix.as_ref();
        let endpoint = self.inner.topology().node_of_token(token_of(prefix))?;
        let op = Op::List { prefix, cursor, limit };
        page_result("LIST", cursor, self.call(&endpoint, op).await?)
    }

    /// Pages through `[start_token, end_token)`, `page_size` entries a page;
    /// see [`Pages`].
    pub fn scan_pages(&self, start_token: Token, end_token: Token, page_size: u32) -> Pages {
        Pages::new(
            self.clone(),
            PageQuery::Scan {
                start: start_token,
                end: end_token,
            },
            page_size,
        )
    }

    /// Pages through the keys starting with `prefix`; see [`Pages`].
    pub fn list_pages(&self, prefix: impl AsRef<[u8]>, page_size: u32) -> Pages {
        Pages::new(self.clone(), PageQuery::List(prefix.as_ref().to_vec()), page_size)
    }

    /// Every entry whose key starts with `prefix`, fetched `page_size` at a
    /// time. Holds them all in memory: for large listings use
    /// [`Client::list_pages`].
    pub async fn list_all(&self, prefix: impl AsRef<[u8]>, page_size: u32) -> Result<Vec<Entry>> {
        self.list_pages(prefix, page_size).collect_all().await
    }

    /// Every entry with a token in `[start_token, end_token)`, fetched
    /// `page_size` at a time; held in memory like [`Client::list_all`].
    pub async fn scan_all(&self, start_token: Token, end_token: Token, page_size: u32) -> Result<Vec<Entry>> {
        self.scan_pages(start_token, end_token, page_size).collect_all().await
    }

    /// Pings the shared port of every node in the ring, in parallel. Fails
    /// with the first error if any node does not answer.
    pub async fn ping(&self) -> Result<()> {
        let topo = self.inner.topology();
        let endpoints: Vec<Arc<Endpoint>> = (0..topo.routing.nodes().len())
            .filter_map(|n| topo.routing.node_target(n))
            .map(|t| topo.target(t))
            .collect::<Result<_>>()?;
        let calls = endpoints.iter().map(|e| async move {
            match self.call(e, Op::Ping).await? {
                Reply::Ok => Ok(()),
                other => Err(unexpected("PING", &other)),
            }
        });
        futures::future::try_join_all(calls).await?;
        Ok(())
    }

    /// Fetches the ring again (from the ring's nodes, then the seeds) and
    /// switches to it if its epoch is at least the current one. Returns the
    /// epoch in use afterwards. Connections to endpoints the new ring still
    /// names are kept.
    pub async fn refresh_ring(&self) -> Result<u64> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let current = self.inner.topology();
        let nodes = current.routing.nodes();
        let turn = self.inner.refresh_turn.fetch_add(1, Ordering::Relaxed);
        let mut candidates: Vec<String> = Vec::with_capacity(nodes.len() + self.inner.seeds.len());
        for i in 0..nodes.len() {
            if let Some(n) = nodes.get((turn + i) % nodes.len()) {
                candidates.push(n.address.clone());
            }
        }
        for s in &self.inner.seeds {
            if !candidates.contains(s) {
                candidates.push(s.clone());
            }
        }
        let routing = self.inner.transport.fetch_ring(&candidates, self.consistency).await?;
        if routing.epoch() < current.routing.epoch() {
            return Ok(current.routing.epoch());
        }
        let epoch = routing.epoch();
        let topology = Arc::new(Topology::new(routing, &self.inner.transport));
        *self.inner.topology.write().unwrap_or_else(|e| e.into_inner()) = topology;
        Ok(epoch)
    }
}

/// Refreshes the ring every `every` while any clone of the client lives. It
/// holds the client only weakly between refreshes, so dropping the client ends it.
async fn refresh_loop(inner: std::sync::Weak<Inner>, consistency: Consistency, timeout: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let client = Client {
            inner,
            consistency,
            // RING reads nothing: the flag would not matter.
            sloppy_quorum: false,
            timeout,
        };
        // A failed refresh keeps the current ring; the next tick tries again.
        let _ = client.refresh_ring().await;
    }
}

/// OK = true, CONDITION_FAILED = false.
fn condition_result(request: &'static str, reply: Result<Reply>) -> Result<bool> {
    match reply {
        Ok(Reply::Ok) => Ok(true),
        Ok(other) => Err(unexpected(request, &other)),
        Err(ClientError::Server { code, .. }) if code == ErrorCode::CONDITION_FAILED => Ok(false),
        Err(e) => Err(e),
    }
}

/// INTEGER 1 = true, 0 = false.
fn integer_bool(request: &'static str, reply: Reply) -> Result<bool> {
    match reply {
        Reply::Integer(1) => Ok(true),
        Reply::Integer(0) => Ok(false),
        Reply::Integer(value) => Err(ClientError::UnexpectedInteger { request, value }),
        other => Err(unexpected(request, &other)),
    }
}

fn page_result(request: &'static str, cursor: &[u8], reply: Reply) -> Result<ScanPage> {
    match reply {
        Reply::ScanPage(page) => {
            if !page.next_cursor.is_empty() && page.next_cursor == cursor {
                return Err(ClientError::CursorDidNotAdvance);
            }
            Ok(page)
        }
        other => Err(unexpected(request, &other)),
    }
}

#[derive(Debug, Clone)]
enum PageQuery {
    Scan { start: Token, end: Token },
    List(Vec<u8>),
}

/// A scan or listing in progress: call [`Pages::next_page`] until it returns
/// `Ok(None)`. Each page is one request (retried like any read).
#[derive(Debug, Clone)]
pub struct Pages {
    client: Client,
    query: PageQuery,
    cursor: Vec<u8>,
    page_size: u32,
    done: bool,
}

impl Pages {
    fn new(client: Client, query: PageQuery, page_size: u32) -> Pages {
        Pages {
            client,
            query,
            cursor: Vec::new(),
            page_size,
            done: false,
        }
    }

    /// The next page's entries; `Ok(None)` once the scan is complete. After
    /// an error the same page can be asked for again.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Entry>>> {
        if self.done {
            return Ok(None);
        }
        let page = match &self.query {
            PageQuery::Scan { start, end } => self.client.scan(*start, *end, &self.cursor, self.page_size).await?,
            PageQuery::List(prefix) => self.client.list(prefix, &self.cursor, self.page_size).await?,
        };
        self.done = page.next_cursor.is_empty();
        self.cursor = page.next_cursor;
        Ok(Some(page.entries))
    }

    /// The cursor the next page will be asked with (empty before the first
    /// page and after the last); save it to resume later.
    pub fn cursor(&self) -> &[u8] {
        &self.cursor
    }

    /// Every remaining entry.
    pub async fn collect_all(mut self) -> Result<Vec<Entry>> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn retry_policy() {
        let put = |condition| Op::Put {
            key: b"k",
            value: b"v",
            ttl_ms: 0,
            condition,
        };
        assert!(is_idempotent(&put(Condition::Always)));
        assert!(!is_idempotent(&put(Condition::IfAbsent)));
        assert!(!is_idempotent(&put(Condition::IfPresent)));
        assert!(!is_idempotent(&Op::Incr { key: b"k", delta: 1 }));
        assert!(!is_idempotent(&Op::PutVersioned {
            key: b"k",
            value: b"v",
            ttl_ms: 0,
            context: b"",
        }));
        assert!(!is_idempotent(&Op::DeleteVersioned {
            key: b"k",
            context: b"ctx",
        }));
        assert!(!is_idempotent(&Op::Cas {
            key: b"k",
            expected: b"",
            value: b"v",
            ttl_ms: 0
        }));
        for op in [
            Op::Get { key: b"k" },
            Op::GetVersions { key: b"k" },
            Op::Exists { key: b"k" },
            Op::Ttl { key: b"k" },
            Op::Delete { key: b"k" },
            Op::Expire { key: b"k", ttl_ms: 5 },
            Op::MGet { keys: List::Slice(&[]) },
            Op::MPut {
                entries: List::Slice(&[]),
                ttl_ms: 0,
            },
            Op::Scan {
                start: 0,
                end: 0,
                cursor: b"",
                limit: 1,
            },
            Op::List {
                prefix: b"",
                cursor: b"",
                limit: 1,
            },
            Op::Ping,
            Op::Ring,
        ] {
            assert!(is_idempotent(&op), "{op:?}");
        }
    }

    #[test]
    fn retryable_errors() {
        assert!(ClientError::Timeout {
            after: Duration::from_secs(1)
        }
        .is_retryable());
        for code in [ErrorCode::OVERLOADED, ErrorCode::UNAVAILABLE, ErrorCode::TIMEOUT] {
            assert!(ClientError::Server {
                code,
                message: String::new()
            }
            .is_retryable());
        }
        assert!(!ClientError::Server {
            code: ErrorCode::INTERNAL,
            message: String::new()
        }
        .is_retryable());
        assert!(!ClientError::Server {
            code: ErrorCode::CONDITION_FAILED,
            message: String::new()
        }
        .is_retryable());
        assert!(!ClientError::NotAnInteger { message: String::new() }.is_retryable());
    }

    #[test]
    fn error_names() {
        assert_eq!(error::error_code_name(ErrorCode::OVERLOADED), "OVERLOADED");
        assert_eq!(error::error_code_name(ErrorCode(999)), "CODE_999");
        let e = ClientError::Server {
            code: ErrorCode(999),
            message: "new".into(),
        };
        assert_eq!(e.to_string(), "server error CODE_999: new");
    }

    fn _client_is_shareable() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
        check::<blocking::Client>();
    }
}
