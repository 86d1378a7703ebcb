//! Client SDK tests against a mock server: a tokio listener per port that
//! decodes frames with the crate's own decoders, answers from a map, and can be
//! scripted to drop connections, answer errors, hold answers, answer out of
//! order or send garbage. Nothing here waits on a timer to let something
//! happen: tests wait for counted events (arrivals) or for answers that are
//! ordered behind the event they need.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corekv_net::client::{
    blocking, Client, ClientError, ClientOptions, CloseReason, Condition, Consistency, ErrorCode, PutOptions, Sibling,
    Ttl, Versions,
};
use corekv_net::frame::{encode_frame, Flags, FrameDecoder};
use corekv_net::msg::{self, KeyValue, Limits, List, Op, Opcode, Request, Response, SiblingRef, ValueRef};
use corekv_net::token::token_of;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// What the mock does with the next request(s) of an opcode.
#[derive(Debug, Clone)]
enum Action {
    /// Close the connection without answering.
    Drop,
    /// Answer ERROR.
    Error(ErrorCode, &'static str),
    /// Answer bytes that are not a frame.
    Garbage,
    /// Answer a well-framed VALUE whose body does not decode.
    BadBody,
    /// Send ERROR with request id 0 (a connection-level report), then close.
    Fatal(ErrorCode, &'static str),
}

#[derive(Default)]
struct Script {
    /// Per opcode, actions for its next arrivals, in order.
    next: HashMap<Opcode, Vec<Action>>,
    /// Requests for these keys are never answered until `release_parked`.
    park_keys: HashSet<Vec<u8>>,
    /// 0: answer at once. n: hold answers until n are held, then send them in
    /// reverse order.
    reverse_batch: usize,
}

#[derive(Debug, Clone)]
struct Arrival {
    port: u16,
    opcode: Opcode,
    consistency: Consistency,
    timeout_ms: u32,
    keys: Vec<Vec<u8>>,
}

#[derive(Clone)]
struct Stored {
    value: Vec<u8>,
    version: u64,
    ttl_ms: u64,
}

/// The mock's causal versions of one key, with a single actor: a context is
/// the counter it saw (8 bytes LE, empty = 0) and covers every dot at or
/// below it, so a write supersedes exactly the siblings its context covers.
#[derive(Default)]
struct Causal {
    clock: u64,
    /// (dot, value or `None` for a tombstone, expiry_ms).
    siblings: Vec<(u64, Option<Vec<u8>>, u64)>,
}

impl Causal {
    fn write(&mut self, context: &[u8], value: Option<Vec<u8>>, expiry_ms: u64) -> Result<(), &'static str> {
        let seen = match context.len() {
            0 => 0,
            8 => u64::from_le_bytes(context.try_into().unwrap()),
            _ => return Err("bad context"),
        };
        self.siblings.retain(|(dot, _, _)| *dot > seen);
        self.clock += 1;
        self.siblings.push((self.clock, value, expiry_ms));
        Ok(())
    }
}

struct RingSpec {
    epoch: u64,
    /// (cores, shard_port, tokens) of the one node; its address is the shared port.
    cores: u16,
    shard_port: u16,
    tokens: Vec<u64>,
}

/// A held answer and the connection to send it on.
type Parked = (mpsc::UnboundedSender<Vec<u8>>, Vec<u8>);

struct MockState {
    shared_port: u16,
    data: Mutex<BTreeMap<Vec<u8>, Stored>>,
    causal: Mutex<BTreeMap<Vec<u8>, Causal>>,
    next_version: Mutex<u64>,
    script: Mutex<Script>,
    arrivals: Mutex<Vec<Arrival>>,
    arrival_count: watch::Sender<usize>,
    accepted: Mutex<HashMap<u16, usize>>,
    max_held: Mutex<usize>,
    parked: Mutex<Vec<Parked>>,
    ring: Mutex<RingSpec>,
}

struct Mock {
    state: Arc<MockState>,
    shared: u16,
    cores: Vec<u16>,
}

async fn bind_consecutive(n: usize) -> Vec<TcpListener> {
    for _ in 0..200 {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = first.local_addr().unwrap().port();
        let mut ls = vec![first];
        for i in 1..n {
            let Some(port) = base.checked_add(i as u16) else { break };
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => ls.push(l),
                Err(_) => break,
            }
        }
        if ls.len() == n {
            return ls;
        }
    }
    panic!("no {n} consecutive free ports");
}

impl Mock {
    /// A node with a shared port and `cores` shard-aware ports (consecutive).
    /// The ring has one vnode per core with the given tokens unless changed.
    async fn start(cores: u16, tokens: Vec<u64>) -> Mock {
        let shared_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = shared_listener.local_addr().unwrap().port();
        let core_listeners = bind_consecutive(cores.into()).await;
        let core_ports: Vec<u16> = core_listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        let (arrival_count, _) = watch::channel(0);
        let state = Arc::new(MockState {
            shared_port: shared,
            data: Mutex::new(BTreeMap::new()),
            causal: Mutex::new(BTreeMap::new()),
            next_version: Mutex::new(1),
            script: Mutex::new(Script::default()),
            arrivals: Mutex::new(Vec::new()),
            arrival_count,
            accepted: Mutex::new(HashMap::new()),
            max_held: Mutex::new(0),
            parked: Mutex::new(Vec::new()),
            ring: Mutex::new(RingSpec {
                epoch: 1,
                cores,
                shard_port: core_ports[0],
                tokens,
            }),
        });
        for l in std::iter::once(shared_listener).chain(core_listeners) {
            tokio::spawn(accept_loop(state.clone(), l));
        }
        Mock {
            state,
            shared,
            cores: core_ports,
        }
    }

    fn seed(&self) -> String {
        format!("127.0.0.1:{}", self.shared)
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    fn count(&self, opcode: Opcode) -> usize {
        self.arrivals().iter().filter(|a| a.opcode == opcode).count()
    }

    fn accepted(&self, port: u16) -> usize {
        self.state.accepted.lock().unwrap().get(&port).copied().unwrap_or(0)
    }

    fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.state.script.lock().unwrap());
    }

    fn on_next(&self, opcode: Opcode, action: Action) {
        self.script(|s| s.next.entry(opcode).or_default().push(action));
    }

    fn insert(&self, key: &[u8], value: &[u8]) {
        self.state.store(key, value.to_vec(), 0);
    }

    /// Waits until at least `n` requests have arrived in total.
    async fn wait_arrivals(&self, n: usize) {
        let mut rx = self.state.arrival_count.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n))
            .await
            .expect("arrivals within 10 s")
            .unwrap();
    }

    /// Sends every held answer of a parked key, in arrival order.
    fn release_parked(&self) {
        self.state.script.lock().unwrap().park_keys.clear();
        for (tx, bytes) in self.state.parked.lock().unwrap().drain(..) {
            let _ = tx.send(bytes);
        }
    }
}

impl MockState {
    fn store(&self, key: &[u8], value: Vec<u8>, ttl_ms: u64) -> u64 {
        let mut v = self.next_version.lock().unwrap();
        *v += 1;
        self.data.lock().unwrap().insert(
            key.to_vec(),
            Stored {
                value,
                version: *v,
                ttl_ms,
            },
        );
        *v
    }

    fn record(&self, port: u16, req: &Request<'_>) {
        let keys: Vec<Vec<u8>> = match &req.op {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Exists { key }
            | Op::Expire { key, .. }
            | Op::Ttl { key }
            | Op::Incr { key, .. }
            | Op::Cas { key, .. }
            | Op::CasValue { key, .. }
            | Op::SerialGet { key }
            | Op::GetVersions { key }
            | Op::PutVersioned { key, .. }
            | Op::DeleteVersioned { key, .. } => vec![key.to_vec()],
            Op::MGet { keys } => keys.iter().map(<[u8]>::to_vec).collect(),
            Op::MPut { entries, .. } => entries.iter().map(|kv| kv.key.to_vec()).collect(),
            Op::List { prefix, .. } => vec![prefix.to_vec()],
            Op::Scan { .. } | Op::Ping | Op::Ring => vec![],
        };
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(Arrival {
            port,
            opcode: req.op.opcode(),
            consistency: req.consistency,
            timeout_ms: req.timeout_ms,
            keys,
        });
        self.arrival_count.send_replace(arrivals.len());
    }

    /// The answer to `req`, encoded as a whole frame.
    fn answer(&self, id: u64, req: &Request<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let err = |code: ErrorCode, message: &str, out: &mut Vec<u8>| {
            Response::Error { code, message }.encode_frame(id, out).unwrap();
        };
        let respond = |r: Response<'_>, out: &mut Vec<u8>| r.encode_frame(id, out).unwrap();
        match req.op {
            Op::Get { key } => match self.data.lock().unwrap().get(key) {
                Some(s) => {
                    let meta = s.version.to_le_bytes();
                    respond(
                        Response::Value(ValueRef {
                            value: &s.value,
                            meta: &meta,
                            ttl_ms: s.ttl_ms,
                        }),
                        &mut out,
                    );
                }
                None => respond(Response::NotFound, &mut out),
            },
            Op::Put {
                key,
                value,
                ttl_ms,
                condition,
            } => {
                let exists = self.data.lock().unwrap().contains_key(key);
                let ok = match condition {
                    Condition::Always => true,
                    Condition::IfAbsent => !exists,
                    Condition::IfPresent => exists,
                };
                if ok {
                    self.store(key, value.to_vec(), ttl_ms);
                    respond(Response::Ok, &mut out);
                } else {
                    err(ErrorCode::CONDITION_FAILED, "condition failed", &mut out);
                }
            }
            Op::Delete { key } => {
                self.data.lock().unwrap().remove(key);
                respond(Response::Ok, &mut out);
            }
            Op::Exists { key } => {
                let e = self.data.lock().unwrap().contains_key(key);
                respond(Response::Integer(e.into()), &mut out);
            }
            Op::MGet { keys } => {
                let data = self.data.lock().unwrap();
                let found: Vec<Option<Stored>> = keys.iter().map(|k| data.get(k).cloned()).collect();
                let metas: Vec<[u8; 8]> = found
                    .iter()
                    .map(|f| f.as_ref().map_or([0; 8], |s| s.version.to_le_bytes()))
                    .collect();
                let slots: Vec<Option<ValueRef<'_>>> = found
                    .iter()
                    .zip(&metas)
                    .map(|(f, meta)| {
                        f.as_ref().map(|s| ValueRef {
                            value: &s.value,
                            meta,
                            ttl_ms: s.ttl_ms,
                        })
                    })
                    .collect();
                respond(Response::Values(List::Slice(&slots)), &mut out);
            }
            Op::MPut { entries, ttl_ms } => {
                for kv in entries.iter() {
                    self.store(kv.key, kv.value.to_vec(), ttl_ms);
                }
                respond(Response::Ok, &mut out);
            }
            Op::Scan { cursor, limit, .. } => self.page(id, &[], cursor, limit, &mut out),
            Op::List { prefix, cursor, limit } => self.page(id, prefix, cursor, limit, &mut out),
            Op::Expire { key, ttl_ms } => {
                let mut data = self.data.lock().unwrap();
                let found = match data.get_mut(key) {
                    Some(s) => {
                        s.ttl_ms = ttl_ms;
                        1
                    }
                    None => 0,
                };
                respond(Response::Integer(found), &mut out);
            }
            Op::Ttl { key } => {
                let n = match self.data.lock().unwrap().get(key) {
                    None => -2,
                    Some(s) if s.ttl_ms == 0 => -1,
                    Some(s) => s.ttl_ms as i64,
                };
                respond(Response::Integer(n), &mut out);
            }
            Op::Incr { key, delta } => {
                let current = self.data.lock().unwrap().get(key).map(|s| s.value.clone());
                let n = match current {
                    None => Some(0i64),
                    Some(v) => std::str::from_utf8(&v).ok().and_then(|s| s.parse::<i64>().ok()),
                };
                match n.and_then(|n| n.checked_add(delta)) {
                    Some(n) => {
                        self.store(key, n.to_string().into_bytes(), 0);
                        respond(Response::Integer(n), &mut out);
                    }
                    None => err(ErrorCode::NOT_AN_INTEGER, "not an integer", &mut out),
                }
            }
            Op::Cas {
                key,
                expected,
                value,
                ttl_ms,
            } => {
                let current = self
                    .data
                    .lock()
                    .unwrap()
                    .get(key)
                    .map(|s| s.version.to_le_bytes().to_vec());
                let matches = match current {
                    None => expected.is_empty(),
                    Some(meta) => meta == expected,
                };
                if matches {
                    self.store(key, value.to_vec(), ttl_ms);
                    respond(Response::Ok, &mut out);
                } else {
                    err(ErrorCode::CONDITION_FAILED, "version mismatch", &mut out);
                }
            }
            Op::CasValue { key, expected, new } => {
                let current = self.data.lock().unwrap().get(key).map(|s| s.value.clone());
                if current.as_deref() == expected {
                    match new {
                        Some(v) => {
                            self.store(key, v.to_vec(), 0);
                        }
                        None => {
                            self.data.lock().unwrap().remove(key);
                        }
                    }
                    respond(
                        Response::CasResult {
                            applied: true,
                            value: new,
                        },
                        &mut out,
                    );
                } else {
                    respond(
                        Response::CasResult {
                            applied: false,
                            value: current.as_deref(),
                        },
                        &mut out,
                    );
                }
            }
            Op::SerialGet { key } => {
                let current = self.data.lock().unwrap().get(key).map(|s| s.value.clone());
                respond(
                    Response::CasResult {
                        applied: true,
                        value: current.as_deref(),
                    },
                    &mut out,
                );
            }
            Op::GetVersions { key } => match self.causal.lock().unwrap().get(key) {
                None => respond(Response::NotFound, &mut out),
                Some(c) => {
                    let context = c.clock.to_le_bytes();
                    let live: Vec<SiblingRef<'_>> = c
                        .siblings
                        .iter()
                        .filter_map(|(_, v, e)| {
                            v.as_ref().map(|v| SiblingRef {
                                value: v,
                                expiry_ms: *e,
                            })
                        })
                        .collect();
                    respond(
                        Response::Versions {
                            context: &context,
                            siblings: List::Slice(&live),
                        },
                        &mut out,
                    );
                }
            },
            Op::PutVersioned {
                key,
                value,
                ttl_ms,
                context,
            } => {
                // The mock stores the TTL as the "expiry" so tests can see it arrive.
                let mut causal = self.causal.lock().unwrap();
                match causal
                    .entry(key.to_vec())
                    .or_default()
                    .write(context, Some(value.to_vec()), ttl_ms)
                {
                    Ok(()) => respond(Response::Ok, &mut out),
                    Err(m) => err(ErrorCode::MALFORMED, m, &mut out),
                }
            }
            Op::DeleteVersioned { key, context } => {
                let mut causal = self.causal.lock().unwrap();
                match causal.entry(key.to_vec()).or_default().write(context, None, 0) {
                    Ok(()) => respond(Response::Ok, &mut out),
                    Err(m) => err(ErrorCode::MALFORMED, m, &mut out),
                }
            }
            Op::Ping => respond(Response::Ok, &mut out),
            Op::Ring => {
                let ring = self.ring.lock().unwrap();
                let address = format!("127.0.0.1:{}", self.shared_port);
                let nodes = [msg::Node {
                    address: &address,
                    cores: ring.cores,
                    shard_port: ring.shard_port,
                    tokens: List::Slice(&ring.tokens),
                }];
                respond(
                    Response::Ring {
                        epoch: ring.epoch,
                        nodes: List::Slice(&nodes),
                    },
                    &mut out,
                );
            }
        }
        out
    }

    /// Keys with `prefix` after `cursor` (the last key of the previous page).
    fn page(&self, id: u64, prefix: &[u8], cursor: &[u8], limit: u32, out: &mut Vec<u8>) {
        let data = self.data.lock().unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = data
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && (cursor.is_empty() || k.as_slice() > cursor))
            .take(limit as usize + 1)
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect();
        let more = rows.len() > limit as usize;
        let rows = &rows[..rows.len().min(limit as usize)];
        let next = if more {
            rows.last().map(|r| r.0.clone()).unwrap()
        } else {
            Vec::new()
        };
        let entries: Vec<KeyValue<'_>> = rows.iter().map(|(k, v)| KeyValue { key: k, value: v }).collect();
        Response::ScanPage {
            entries: List::Slice(&entries),
            next_cursor: &next,
        }
        .encode_frame(id, out)
        .unwrap();
    }
}

async fn accept_loop(state: Arc<MockState>, listener: TcpListener) {
    let port = listener.local_addr().unwrap().port();
    while let Ok((stream, _)) = listener.accept().await {
        *state.accepted.lock().unwrap().entry(port).or_default() += 1;
        tokio::spawn(serve(state.clone(), port, stream));
    }
}

async fn serve(state: Arc<MockState>, port: u16, stream: TcpStream) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let limits = Limits::default();
    let mut dec = FrameDecoder::new(limits.max_frame);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            let id = frame.header.request_id;
            let req = match Request::decode(&frame, &limits) {
                Ok(r) => r,
                Err(e) => {
                    let mut s = String::new();
                    let mut out = Vec::new();
                    Response::from_error(&e, &mut s, 1000)
                        .encode_frame(id, &mut out)
                        .unwrap();
                    let _ = tx.send(out);
                    continue;
                }
            };
            state.record(port, &req);
            let (action, parked, reverse) =
                {
                    let mut script = state.script.lock().unwrap();
                    let action = script.next.get_mut(&req.op.opcode()).and_then(|v| {
                        if v.is_empty() {
                            None
                        } else {
                            Some(v.remove(0))
                        }
                    });
                    let parked = match &req.op {
                        Op::Get { key } | Op::Incr { key, .. } => script.park_keys.contains(*key),
                        _ => false,
                    };
                    (action, parked, script.reverse_batch)
                };
            let bytes = match action {
                Some(Action::Drop) => return,
                Some(Action::Garbage) => {
                    let _ = tx.send(b"this is not a corekv frame".to_vec());
                    continue;
                }
                Some(Action::BadBody) => {
                    let mut out = Vec::new();
                    let value = msg::ResponseOpcode::Value as u8;
                    encode_frame(&mut out, value, Flags::RESPONSE, id, |b| {
                        b.extend_from_slice(&[0xff; 3])
                    })
                    .unwrap();
                    out
                }
                Some(Action::Fatal(code, message)) => {
                    let mut out = Vec::new();
                    Response::Error { code, message }.encode_frame(0, &mut out).unwrap();
                    let _ = tx.send(out);
                    return;
                }
                Some(Action::Error(code, message)) => {
                    let mut out = Vec::new();
                    Response::Error { code, message }.encode_frame(id, &mut out).unwrap();
                    out
                }
                None => state.answer(id, &req),
            };
            if parked {
                state.parked.lock().unwrap().push((tx.clone(), bytes));
            } else if reverse > 0 {
                held.push(bytes);
                let mut max = state.max_held.lock().unwrap();
                *max = (*max).max(held.len());
                if held.len() >= reverse {
                    for b in held.drain(..).rev() {
                        let _ = tx.send(b);
                    }
                }
            } else {
                let _ = tx.send(bytes);
            }
        }
    }
}

/// Defaults, but no backoff sleeps and no background ring refresh (so the
/// mock's arrival counts are exactly the test's requests).
fn options() -> ClientOptions {
    ClientOptions {
        retry_backoff: Duration::ZERO,
        refresh_interval: None,
        ..ClientOptions::default()
    }
}

/// Where the test expects `key` to go: the vnode with the smallest token >=
/// the key's token, wrapping; core = vnode index % cores.
fn expected_core(tokens: &[u64], cores: u16, key: &[u8]) -> usize {
    let t = token_of(key);
    let mut all: Vec<(u64, usize)> = tokens.iter().copied().zip(0..).collect();
    all.sort();
    let (_, index) = all.iter().find(|(tok, _)| *tok >= t).or(all.first()).copied().unwrap();
    index % usize::from(cores)
}

#[tokio::test]
async fn routes_each_key_to_its_core_port() {
    let (ta, tb) = (token_of(b"alpha"), token_of(b"beta"));
    let mock = Mock::start(2, vec![ta, tb]).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    assert_eq!(client.epoch(), 1);
    assert_eq!(mock.arrivals()[0].opcode, Opcode::Ring);
    assert_eq!(mock.arrivals()[0].port, mock.shared);

    client.put("alpha", "a").await.unwrap();
    client.put("beta", "b").await.unwrap();
    client.put("{beta}.tagged", "c").await.unwrap();
    assert_eq!(client.get("alpha").await.unwrap().unwrap().value, b"a");
    assert_eq!(client.get("beta").await.unwrap().unwrap().value, b"b");
    let by_key: Vec<(Vec<u8>, u16)> = mock.arrivals()[1..]
        .iter()
        .map(|a| (a.keys[0].clone(), a.port))
        .collect();
    let (c0, c1) = (mock.cores[0], mock.cores[1]);
    assert_eq!(
        by_key,
        vec![
            (b"alpha".to_vec(), c0),
            (b"beta".to_vec(), c1),
            (b"{beta}.tagged".to_vec(), c1),
            (b"alpha".to_vec(), c0),
            (b"beta".to_vec(), c1),
        ]
    );
    // One connection per core port, reused.
    assert_eq!((mock.accepted(c0), mock.accepted(c1)), (1, 1));
    client.connect_all().await.unwrap();
    assert_eq!(
        (mock.accepted(c0), mock.accepted(c1), mock.accepted(mock.shared)),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn routes_many_keys_like_the_plain_rule() {
    let tokens: Vec<u64> = (0..16u64).map(|i| token_of(format!("vnode-{i}").as_bytes())).collect();
    let mock = Mock::start(3, tokens.clone()).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        client.put(k, "v").await.unwrap();
    }
    let arrivals = mock.arrivals();
    let mut per_core = [0usize; 3];
    for (k, a) in keys.iter().zip(&arrivals[1..]) {
        assert_eq!(a.keys[0], k.as_bytes());
        let core = expected_core(&tokens, 3, k.as_bytes());
        assert_eq!(a.port, mock.cores[core], "key {k}");
        per_core[core] += 1;
    }
    assert!(per_core.iter().all(|&n| n > 0), "{per_core:?}");
}

#[tokio::test]
async fn mget_and_mput_split_by_core_and_reassemble_in_order() {
    let tokens: Vec<u64> = (0..8u64).map(|i| token_of(format!("vn{i}").as_bytes())).collect();
    let mock = Mock::start(2, tokens.clone()).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    let pairs: Vec<(String, String)> = (0..40).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    client.mput(&pairs, 0).await.unwrap();
    let mputs: Vec<Arrival> = mock
        .arrivals()
        .into_iter()
        .filter(|a| a.opcode == Opcode::MPut)
        .collect();
    assert_eq!(mputs.len(), 2, "one MPUT per core");
    for a in &mputs {
        let core = if a.port == mock.cores[0] { 0 } else { 1 };
        for k in &a.keys {
            assert_eq!(expected_core(&tokens, 2, k), core);
        }
    }

    // Present and missing keys interleaved, in an order unrelated to the cores.
    let mut keys: Vec<String> = (0..60).rev().map(|i| format!("k{i}")).collect();
    keys.push("k3".to_owned());
    let got = client.mget(&keys).await.unwrap();
    assert_eq!(got.len(), keys.len());
    for (k, v) in keys.iter().zip(&got) {
        let i: usize = k[1..].parse().unwrap();
        if i < 40 {
            assert_eq!(v.as_ref().unwrap().value, format!("v{i}").as_bytes(), "{k}");
        } else {
            assert!(v.is_none(), "{k}");
        }
    }
    let mgets: Vec<Arrival> = mock
        .arrivals()
        .into_iter()
        .filter(|a| a.opcode == Opcode::MGet)
        .collect();
    assert_eq!(mgets.len(), 2);
    for a in &mgets {
        let core = if a.port == mock.cores[0] { 0 } else { 1 };
        assert!(a.keys.iter().all(|k| expected_core(&tokens, 2, k) == core));
    }
    assert!(client.mget::<&str>(&[]).await.unwrap().is_empty());

    // max_batch splits a core's keys into several requests.
    let small = Client::connect(
        &[mock.seed()],
        ClientOptions {
            max_batch: 3,
            ..options()
        },
    )
    .await
    .unwrap();
    let before = mock.count(Opcode::MGet);
    let got = small.mget(&keys).await.unwrap();
    assert_eq!(got, client.mget(&keys).await.unwrap());
    assert!(mock.count(Opcode::MGet) - before - 2 >= keys.len() / 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_many_requests_on_one_connection_answered_out_of_order() {
    // No shard-aware ports: every request shares the one connection.
    let mock = Mock::start(1, vec![0]).await;
    mock.state.ring.lock().unwrap().shard_port = 0;
    for i in 0..1000 {
        mock.insert(format!("p{i}").as_bytes(), format!("value-{i}").as_bytes());
    }
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    // From now on the mock holds answers until 100 are waiting and sends them
    // newest first: this only completes if 100 requests are in flight at once.
    mock.script(|s| s.reverse_batch = 100);
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { (i, c.get(format!("p{i}")).await) }));
    }
    for t in tasks {
        let (i, got) = t.await.unwrap();
        assert_eq!(got.unwrap().unwrap().value, format!("value-{i}").as_bytes());
    }
    assert_eq!(mock.accepted(mock.shared), 1);
    assert_eq!(*mock.state.max_held.lock().unwrap(), 100);
    assert_eq!(client.pending_requests(), 0);
}

#[tokio::test]
async fn in_flight_requests_are_bounded_per_connection() {
    let mock = Mock::start(1, vec![0]).await;
    mock.state.ring.lock().unwrap().shard_port = 0;
    mock.script(|s| {
        s.park_keys.insert(b"hang".to_vec());
    });
    let client = Client::connect(
        &[mock.seed()],
        ClientOptions {
            max_in_flight: 4,
            retries: 0,
            timeout: Duration::from_secs(30),
            ..options()
        },
    )
    .await
    .unwrap();
    let hung: Vec<_> = (0..4)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("hang").await })
        })
        .collect();
    mock.wait_arrivals(1 + 4).await;
    // Every slot is taken by a parked request: a fifth cannot be sent.
    let fifth = client.with_timeout(Duration::from_millis(200)).get("free").await;
    assert!(matches!(fifth, Err(ClientError::Timeout { .. })), "{fifth:?}");
    assert_eq!(mock.count(Opcode::Get), 4);
    mock.release_parked();
    for h in hung {
        assert_eq!(h.await.unwrap().unwrap(), None);
    }
    assert_eq!(client.get("free").await.unwrap(), None);
}

#[tokio::test]
async fn a_request_times_out_and_a_late_answer_is_ignored() {
    let mock = Mock::start(1, vec![0]).await;
    mock.script(|s| {
        s.park_keys.insert(b"late".to_vec());
    });
    mock.insert(b"late", b"eventually");
    let client = Client::connect(
        &[mock.seed()],
        ClientOptions {
            retries: 0,
            ..options()
        },
    )
    .await
    .unwrap();
    let timeout = Duration::from_millis(100);
    let got = client.with_timeout(timeout).get("late").await;
    assert!(
        matches!(got, Err(ClientError::Timeout { after }) if after == timeout),
        "{got:?}"
    );
    assert_eq!(
        client.pending_requests(),
        0,
        "the timed-out request left its pending entry"
    );
    // The late answer is queued on the connection before the next GET is
    // even sent, so the client reads (and discards) it first.
    mock.release_parked();
    assert_eq!(client.get("late").await.unwrap().unwrap().value, b"eventually");
    assert_eq!(mock.accepted(mock.cores[0]), 1, "the connection survived the timeout");
    // The timeout travels with every request.
    let sent: Vec<u32> = mock.arrivals().iter().map(|a| a.timeout_ms).collect();
    assert_eq!(sent, [2000, 100, 2000]);
}

#[tokio::test]
async fn idempotent_reads_retry_after_timeouts() {
    let mock = Mock::start(1, vec![0]).await;
    mock.script(|s| {
        s.park_keys.insert(b"never".to_vec());
    });
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    // Open the connection first, so every attempt below is sent (a frame
    // queued before its attempt times out is still written).
    assert_eq!(client.get("warm").await.unwrap(), None);
    let got = client.with_timeout(Duration::from_millis(50)).get("never").await;
    assert!(matches!(got, Err(ClientError::Timeout { .. })), "{got:?}");
    // Answers on one connection come in order, so once this GET is answered
    // every earlier frame has been read by the mock.
    assert_eq!(client.get("other").await.unwrap(), None);
    assert_eq!(mock.count(Opcode::Get), 1 + 3 + 1, "one attempt and two retries");
}

#[tokio::test]
async fn get_is_retried_after_a_dropped_connection() {
    let mock = Mock::start(1, vec![0]).await;
    mock.insert(b"k", b"v");
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    mock.on_next(Opcode::Get, Action::Drop);
    assert_eq!(client.get("k").await.unwrap().unwrap().value, b"v");
    assert_eq!(mock.count(Opcode::Get), 2);
    assert_eq!(mock.accepted(mock.cores[0]), 2, "reconnected");
    // Unconditional writes are idempotent too.
    mock.on_next(Opcode::Put, Action::Drop);
    mock.on_next(Opcode::Delete, Action::Drop);
    client.put("k", "w").await.unwrap();
    client.delete("k").await.unwrap();
    assert_eq!((mock.count(Opcode::Put), mock.count(Opcode::Delete)), (2, 2));
}

#[tokio::test]
async fn incr_cas_and_conditional_put_are_not_retried() {
    let mock = Mock::start(1, vec![0]).await;
    mock.insert(b"n", b"41");
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();

    mock.on_next(Opcode::Incr, Action::Drop);
    let got = client.incr("n", 1).await;
    assert!(
        matches!(
            got,
            Err(ClientError::ConnectionClosed {
                reason: CloseReason::Eof,
                ..
            })
        ),
        "{got:?}"
    );
    // The call has returned, so any retry would already have been sent.
    assert_eq!(mock.count(Opcode::Incr), 1);
    assert_eq!(client.incr("n", 1).await.unwrap(), 42);

    mock.on_next(Opcode::Cas, Action::Drop);
    assert!(client.cas("c", "", "v", 0).await.is_err());
    assert_eq!(mock.count(Opcode::Cas), 1);

    mock.on_next(Opcode::CasValue, Action::Drop);
    assert!(client.cas_value("c", None, Some(b"v")).await.is_err());
    assert_eq!(mock.count(Opcode::CasValue), 1);

    mock.on_next(Opcode::Put, Action::Drop);
    let nx = PutOptions {
        ttl_ms: 0,
        condition: Condition::IfAbsent,
    };
    assert!(client.put_with("p", "v", nx).await.is_err());
    assert_eq!(mock.count(Opcode::Put), 1);

    // OVERLOADED: retried for GET, not for INCR.
    mock.on_next(Opcode::Get, Action::Error(ErrorCode::OVERLOADED, "busy"));
    assert_eq!(client.get("n").await.unwrap().unwrap().value, b"42");
    assert_eq!(mock.count(Opcode::Get), 2);
    mock.on_next(Opcode::Incr, Action::Error(ErrorCode::OVERLOADED, "busy"));
    let got = client.incr("n", 1).await;
    assert!(
        matches!(&got, Err(ClientError::Server { code, .. }) if *code == ErrorCode::OVERLOADED),
        "{got:?}"
    );
    assert_eq!(mock.count(Opcode::Incr), 3);
}

#[tokio::test]
async fn server_errors_map_to_client_errors() {
    let mock = Mock::start(1, vec![0]).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    mock.on_next(Opcode::Get, Action::Error(ErrorCode::INTERNAL, "boom"));
    match client.get("x").await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!((code, message.as_str()), (ErrorCode::INTERNAL, "boom"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.count(Opcode::Get), 1, "INTERNAL is not retried");
    // A code this build does not know passes through.
    mock.on_next(Opcode::Get, Action::Error(ErrorCode(777), "new"));
    let e = client.get("x").await.unwrap_err();
    assert_eq!(e.server_code(), Some(ErrorCode(777)));
    assert_eq!(e.to_string(), "server error CODE_777: new");

    mock.insert(b"word", b"hello");
    assert!(matches!(
        client.incr("word", 1).await,
        Err(ClientError::NotAnInteger { .. })
    ));
}

#[tokio::test]
async fn a_bad_frame_fails_every_pending_request_and_the_connection_reopens() {
    let mock = Mock::start(1, vec![0]).await;
    mock.state.ring.lock().unwrap().shard_port = 0;
    mock.script(|s| {
        s.park_keys.insert(b"parked".to_vec());
    });
    let client = Client::connect(
        &[mock.seed()],
        ClientOptions {
            retries: 0,
            ..options()
        },
    )
    .await
    .unwrap();
    let c = client.clone();
    let parked = tokio::spawn(async move { c.get("parked").await });
    mock.wait_arrivals(2).await;
    mock.on_next(Opcode::Incr, Action::Garbage);
    let got = client.incr("n", 1).await;
    assert!(
        matches!(
            got,
            Err(ClientError::ConnectionClosed {
                reason: CloseReason::BadFrame(_),
                ..
            })
        ),
        "{got:?}"
    );
    let got = parked.await.unwrap();
    assert!(
        matches!(
            got,
            Err(ClientError::ConnectionClosed {
                reason: CloseReason::BadFrame(_),
                ..
            })
        ),
        "{got:?}"
    );
    assert_eq!(client.pending_requests(), 0);
    assert_eq!(client.incr("n", 1).await.unwrap(), 1);
    assert_eq!(mock.accepted(mock.shared), 2);
}

#[tokio::test]
async fn a_bad_body_fails_only_its_request_and_a_server_report_closes() {
    let mock = Mock::start(1, vec![0]).await;
    mock.insert(b"k", b"v");
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    mock.on_next(Opcode::Get, Action::BadBody);
    let e = client.get("k").await.unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    assert_eq!(mock.count(Opcode::Get), 1, "a protocol error is not retried");
    assert_eq!(client.get("k").await.unwrap().unwrap().value, b"v");
    assert_eq!(
        mock.accepted(mock.cores[0]),
        1,
        "the framing was intact, the connection stayed"
    );

    mock.on_next(Opcode::Incr, Action::Fatal(ErrorCode::BAD_FRAME, "lost framing"));
    match client.incr("n", 1).await {
        Err(ClientError::ConnectionClosed {
            reason: CloseReason::Server { code, message },
            ..
        }) => assert_eq!((code, message.as_str()), (ErrorCode::BAD_FRAME, "lost framing")),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.incr("n", 1).await.unwrap(), 1);
    assert_eq!(mock.accepted(mock.cores[0]), 2);
}

#[tokio::test]
async fn single_key_operations() {
    let mock = Mock::start(2, vec![token_of(b"a"), token_of(b"b")]).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), None);
    assert!(!client.exists("k").await.unwrap());
    assert_eq!(client.ttl("k").await.unwrap(), Ttl::Missing);
    assert!(!client.expire("k", 10).await.unwrap());
    client.put("k", "v1").await.unwrap();
    assert!(client.exists("k").await.unwrap());
    assert_eq!(client.ttl("k").await.unwrap(), Ttl::NoExpiry);
    assert!(client.expire("k", 5000).await.unwrap());
    assert_eq!(client.ttl("k").await.unwrap(), Ttl::Millis(5000));

    let nx = PutOptions {
        ttl_ms: 0,
        condition: Condition::IfAbsent,
    };
    let xx = PutOptions {
        ttl_ms: 700,
        condition: Condition::IfPresent,
    };
    assert!(!client.put_with("k", "nx", nx).await.unwrap());
    assert!(client.put_with("k", "xx", xx).await.unwrap());
    let v = client.get("k").await.unwrap().unwrap();
    assert_eq!((v.value.as_slice(), v.ttl_ms), (&b"xx"[..], 700));
    assert!(!client.put_with("new", "xx", xx).await.unwrap());
    assert!(client.put_with("new", "nx", nx).await.unwrap());

    // CAS against the version read.
    assert!(!client.cas("k", b"stale-version", "c", 0).await.unwrap());
    assert!(client.cas("k", &v.meta, "c", 0).await.unwrap());
    assert!(!client.cas("k", &v.meta, "again", 0).await.unwrap());
    assert!(client.cas("fresh", b"", "c", 0).await.unwrap());
    assert_eq!(client.get("k").await.unwrap().unwrap().value, b"c");

    // Compare-and-set on the value, and the serial read.
    let r = client.cas_value("k", Some(b"wrong"), Some(b"d")).await.unwrap();
    assert_eq!((r.applied, r.value.as_deref()), (false, Some(&b"c"[..])));
    let r = client.cas_value("k", Some(b"c"), Some(b"d")).await.unwrap();
    assert_eq!((r.applied, r.value.as_deref()), (true, Some(&b"d"[..])));
    assert_eq!(client.get_serial("k").await.unwrap().as_deref(), Some(&b"d"[..]));
    assert!(client.cas_value("k", Some(b"d"), None).await.unwrap().applied);
    assert_eq!(client.get_serial("k").await.unwrap(), None);
    assert!(client.cas_value("k", None, Some(b"e")).await.unwrap().applied);

    assert_eq!(client.incr("cnt", 5).await.unwrap(), 5);
    assert_eq!(client.incr("cnt", -7).await.unwrap(), -2);
    client.delete("k").await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), None);
    client.ping().await.unwrap();
    let pings: Vec<Arrival> = mock
        .arrivals()
        .into_iter()
        .filter(|a| a.opcode == Opcode::Ping)
        .collect();
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].port, mock.shared, "PING goes to the shared port");
}

#[tokio::test]
async fn consistency_can_be_overridden_per_handle() {
    let mock = Mock::start(1, vec![0]).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    client.get("a").await.unwrap();
    client.with_consistency(Consistency::One).get("a").await.unwrap();
    client
        .with_consistency(Consistency::Count(3))
        .put("a", "b")
        .await
        .unwrap();
    let c: Vec<Consistency> = mock.arrivals()[1..].iter().map(|a| a.consistency).collect();
    assert_eq!(c, vec![Consistency::Quorum, Consistency::One, Consistency::Count(3)]);
    assert_eq!(client.consistency(), Consistency::Quorum);
}

#[tokio::test]
async fn list_and_scan_page_through_the_shared_port() {
    let mock = Mock::start(2, vec![1 << 62, 3 << 62]).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    for i in 0..5 {
        client.put(format!("user:{i}"), format!("{i}")).await.unwrap();
    }
    client.put("other", "x").await.unwrap();
    let page = client.list("user:", &[], 2).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.next_cursor, b"user:1");
    let all = client.list_all("user:", 2).await.unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [&b"user:0"[..], b"user:1", b"user:2", b"user:3", b"user:4"]);
    let all = client.scan_all(0, 0, 4).await.unwrap();
    assert_eq!(all.len(), 6);
    let mut pages = client.list_pages("user:", 3);
    assert_eq!(pages.next_page().await.unwrap().unwrap().len(), 3);
    assert_eq!(pages.cursor(), b"user:2");
    assert_eq!(pages.next_page().await.unwrap().unwrap().len(), 2);
    assert_eq!(pages.next_page().await.unwrap(), None);
    for a in mock.arrivals() {
        if matches!(a.opcode, Opcode::List | Opcode::Scan) {
            assert_eq!(a.port, mock.shared);
        }
    }
}

#[tokio::test]
async fn refresh_keeps_the_newest_ring() {
    let (ta, tb) = (token_of(b"alpha"), token_of(b"beta"));
    let mock = Mock::start(2, vec![ta, tb]).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    assert_eq!(
        client.routing().endpoint(b"alpha"),
        format!("127.0.0.1:{}", mock.cores[0])
    );
    {
        let mut ring = mock.state.ring.lock().unwrap();
        ring.epoch = 5;
        ring.tokens = vec![tb, ta];
    }
    assert_eq!(client.refresh_ring().await.unwrap(), 5);
    assert_eq!(
        client.routing().endpoint(b"alpha"),
        format!("127.0.0.1:{}", mock.cores[1])
    );
    client.put("alpha", "x").await.unwrap();
    assert_eq!(mock.arrivals().last().unwrap().port, mock.cores[1]);
    {
        let mut ring = mock.state.ring.lock().unwrap();
        ring.epoch = 4;
        ring.tokens = vec![ta, tb];
    }
    assert_eq!(client.refresh_ring().await.unwrap(), 5, "an older ring is ignored");
    assert_eq!(
        client.routing().endpoint(b"alpha"),
        format!("127.0.0.1:{}", mock.cores[1])
    );
}

#[tokio::test]
async fn the_ring_is_refreshed_in_the_background() {
    let (ta, tb) = (token_of(b"alpha"), token_of(b"beta"));
    let mock = Mock::start(2, vec![ta, tb]).await;
    let client = Client::connect(
        &[mock.seed()],
        ClientOptions {
            refresh_interval: Some(Duration::from_millis(20)),
            ..options()
        },
    )
    .await
    .unwrap();
    {
        let mut ring = mock.state.ring.lock().unwrap();
        ring.epoch = 2;
        ring.tokens = vec![tb, ta];
    }
    // Wait for two more RING requests: the second starts after the first
    // refresh has installed its ring.
    mock.wait_arrivals(3).await;
    assert!(mock.count(Opcode::Ring) >= 3);
    assert_eq!(client.epoch(), 2);
    assert_eq!(
        client.routing().endpoint(b"alpha"),
        format!("127.0.0.1:{}", mock.cores[1])
    );
}

#[tokio::test]
async fn connect_tries_the_seeds_in_order() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = Client::connect(&[dead.as_str()], options()).await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable { .. }), "{e:?}");
    assert!(matches!(
        Client::connect::<&str>(&[], options()).await.unwrap_err(),
        ClientError::NoSeeds
    ));
    let mock = Mock::start(1, vec![7]).await;
    let client = Client::connect(&[dead, mock.seed()], options()).await.unwrap();
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_request_over_the_frame_limit_fails_alone() {
    let mock = Mock::start(1, vec![0]).await;
    let client = Client::connect(
        &[mock.seed()],
        ClientOptions {
            limits: Limits {
                max_frame: 1024,
                ..Limits::default()
            },
            ..options()
        },
    )
    .await
    .unwrap();
    let e = client.put("big", vec![0u8; 2000]).await.unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    client.put("small", "ok").await.unwrap();
    assert_eq!(mock.count(Opcode::Put), 1);
}

#[test]
fn blocking_client_from_plain_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mock = rt.block_on(Mock::start(2, vec![token_of(b"a"), token_of(b"b")]));
    let client = blocking::Client::connect(&[mock.seed()], options()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = client.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    c.put(format!("t{t}-{i}"), format!("{i}")).unwrap();
                    c.incr("counter", 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(client.get("t3-49").unwrap().unwrap().value, b"49");
    assert_eq!(client.incr("counter", 0).unwrap(), 200);
    let keys: Vec<String> = (0..50).map(|i| format!("t0-{i}")).collect();
    assert!(client.mget(&keys).unwrap().iter().all(Option::is_some));
    assert_eq!(client.list_all("t1-", 7).unwrap().len(), 50);
    client.ping().unwrap();

    // From a tokio application's blocking pool, and (discouraged, it blocks
    // the executor thread) from async code, without panicking.
    let c = client.clone();
    let got = rt.block_on(async move { tokio::task::spawn_blocking(move || c.get("t0-1")).await.unwrap() });
    assert_eq!(got.unwrap().unwrap().value, b"1");
    let c = client.clone();
    assert!(rt.block_on(async move { c.exists("t0-2") }).unwrap());

    // Causal versions through the blocking wrappers.
    assert_eq!(client.get_versions("cv").unwrap(), None);
    client.put_with_context("cv", "x", b"", 0).unwrap();
    client.put_with_context("cv", "y", b"", 0).unwrap();
    let v = client.get_versions("cv").unwrap().unwrap();
    assert_eq!(v.siblings.len(), 2);
    client.put_with_context("cv", "xy", &v.context, 0).unwrap();
    let v = client.get_versions("cv").unwrap().unwrap();
    assert_eq!(v.siblings.iter().map(|s| &s.value[..]).collect::<Vec<_>>(), [b"xy"]);
    client.delete_with_context("cv", &v.context).unwrap();
    assert!(client.get_versions("cv").unwrap().unwrap().siblings.is_empty());
    // The last clone dropped inside a runtime does not panic either.
    rt.block_on(async move { drop(client) });
}

/// GET_VERSIONS, PUT_VERSIONED and DELETE_VERSIONED: a read-modify-write that
/// resolves siblings, routed like GET and PUT and carrying the handle's
/// consistency and timeout.
#[tokio::test]
async fn causal_versions_read_modify_write() {
    let tokens = vec![token_of(b"alpha"), token_of(b"beta")];
    let mock = Mock::start(2, tokens.clone()).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();
    let handle = client
        .with_consistency(Consistency::All)
        .with_timeout(Duration::from_millis(1234));
    let key = "cart:7";
    assert_eq!(handle.get_versions(key).await.unwrap(), None);

    // Two blind writes (empty context) that saw nothing of each other.
    handle.put_with_context(key, "apple", b"", 0).await.unwrap();
    handle.put_with_context(key, "pear", b"", 60_000).await.unwrap();
    let v = handle.get_versions(key).await.unwrap().unwrap();
    let mut values: Vec<&[u8]> = v.siblings.iter().map(|s| s.value.as_slice()).collect();
    values.sort();
    assert_eq!(values, [&b"apple"[..], &b"pear"[..]]);
    assert!(v.siblings.contains(&Sibling {
        value: b"pear".to_vec(),
        expiry_ms: 60_000
    }));

    // Meanwhile another client writes without having read: its write survives
    // the resolution below, which did not see it.
    client.put_with_context(key, "plum", b"", 0).await.unwrap();

    // Resolve: merge the siblings read and write back with their context.
    let merged = values.join(&b","[..]);
    handle.put_with_context(key, &merged, &v.context, 0).await.unwrap();
    let after = handle.get_versions(key).await.unwrap().unwrap();
    let mut values: Vec<Vec<u8>> = after.siblings.iter().map(|s| s.value.clone()).collect();
    values.sort();
    assert_eq!(values, [b"apple,pear".to_vec(), b"plum".to_vec()]);

    // A delete with the latest context supersedes everything: the key reads as
    // deleted (no siblings) but still has a context.
    handle.delete_with_context(key, &after.context).await.unwrap();
    let deleted = handle.get_versions(key).await.unwrap().unwrap();
    assert_eq!(
        deleted,
        Versions {
            context: deleted.context.clone(),
            siblings: vec![]
        }
    );
    assert!(!deleted.context.is_empty());

    // A server ERROR is returned as such.
    let got = handle.put_with_context(key, "x", b"bad", 0).await;
    assert!(
        matches!(&got, Err(ClientError::Server { code, .. }) if *code == ErrorCode::MALFORMED),
        "{got:?}"
    );

    // Every versioned request went to the key's core port with the handle's
    // consistency and timeout (the plain client's one write kept QUORUM).
    let core = mock.cores[expected_core(&tokens, 2, key.as_bytes())];
    let versioned: Vec<Arrival> = mock
        .arrivals()
        .into_iter()
        .filter(|a| {
            matches!(
                a.opcode,
                Opcode::GetVersions | Opcode::PutVersioned | Opcode::DeleteVersioned
            )
        })
        .collect();
    assert_eq!(versioned.len(), 10);
    for a in &versioned {
        assert_eq!((a.port, a.keys.as_slice()), (core, &[key.as_bytes().to_vec()][..]));
    }
    let from_handle: Vec<&Arrival> = versioned
        .iter()
        .filter(|a| a.consistency != Consistency::Quorum)
        .collect();
    assert_eq!(from_handle.len(), 9);
    assert!(from_handle
        .iter()
        .all(|a| a.consistency == Consistency::All && a.timeout_ms == 1234));
}

#[tokio::test]
async fn versioned_writes_are_not_retried_and_reads_are() {
    let mock = Mock::start(1, vec![0]).await;
    let client = Client::connect(&[mock.seed()], options()).await.unwrap();

    mock.on_next(Opcode::PutVersioned, Action::Drop);
    assert!(client.put_with_context("k", "v", b"", 0).await.is_err());
    // The call has returned, so any retry would already have been sent.
    assert_eq!(mock.count(Opcode::PutVersioned), 1);

    mock.on_next(Opcode::DeleteVersioned, Action::Error(ErrorCode::OVERLOADED, "busy"));
    let got = client.delete_with_context("k", b"").await;
    assert!(
        matches!(&got, Err(ClientError::Server { code, .. }) if *code == ErrorCode::OVERLOADED),
        "{got:?}"
    );
    assert_eq!(mock.count(Opcode::DeleteVersioned), 1);

    client.put_with_context("k", "v", b"", 0).await.unwrap();
    mock.on_next(Opcode::GetVersions, Action::Drop);
    let v = client.get_versions("k").await.unwrap().unwrap();
    assert_eq!(v.siblings.len(), 1);
    assert_eq!(mock.count(Opcode::GetVersions), 2, "retried once after the drop");

    // A response that does not decode fails the call, and is not retried.
    mock.on_next(Opcode::GetVersions, Action::BadBody);
    let got = client.get_versions("k").await;
    assert!(matches!(got, Err(ClientError::Protocol(_))), "{got:?}");
    assert_eq!(mock.count(Opcode::GetVersions), 3);
}
