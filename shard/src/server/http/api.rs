//! The data routes (docs/http.md): each request becomes the binary
//! protocol's request (`corekv_net::msg::Request`), is checked against the
//! user's permissions like one, and runs as the same job on the same core
//! (`server::native`): through the key's owning core on a single node, or
//! the coordinator in cluster mode, so consistency levels, hints and read
//! repair apply as they do to native requests.
//!
//! Values travel raw in single-key GET and PUT bodies, with the version or
//! causal context in headers; batches, listings and CAS use JSON with
//! bytes in base64.

use std::rc::Rc;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use corekv_net::msg::{Condition, Consistency as WireConsistency, KeyValue, List, Op, Request};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{query, HttpRequest, Response};
use crate::cluster::Versions;
use crate::metrics::{Level, OpKind, RequestInfo};
use crate::runtime::Shard;
use crate::security::User;
use crate::server::native::{self, Job};
use crate::store::{now_ms, Failure, FailureKind, Reply, ScanEntry, Value};

/// Standard base64, padding optional on input.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// URL-safe base64 without padding (cursors, which travel in query strings).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Entries per page when the request does not say.
const DEFAULT_PAGE: u32 = 100;

/// Most entries per page.
const MAX_PAGE: u32 = 10_000;

/// A data route.
#[derive(Debug)]
pub(crate) enum Route {
    Get(Vec<u8>),
    Head(Vec<u8>),
    Put(Vec<u8>),
    Delete(Vec<u8>),
    Cas(Vec<u8>),
    Incr(Vec<u8>),
    TtlGet(Vec<u8>),
    TtlSet(Vec<u8>),
    BatchPut,
    BatchGet,
    List,
    Scan,
}

impl Route {
    pub(crate) fn op(&self) -> OpKind {
        match self {
            Route::Get(_) | Route::Head(_) => OpKind::Get,
            Route::Put(_) => OpKind::Put,
            Route::Delete(_) => OpKind::Delete,
            Route::Cas(_) => OpKind::Cas,
            Route::Incr(_) => OpKind::Incr,
            Route::TtlGet(_) => OpKind::Ttl,
            Route::TtlSet(_) => OpKind::Expire,
            Route::BatchPut => OpKind::MPut,
            Route::BatchGet => OpKind::MGet,
            Route::List => OpKind::List,
            Route::Scan => OpKind::Scan,
        }
    }

    pub(crate) fn key_len(&self) -> usize {
        match self {
            Route::Get(k)
            | Route::Head(k)
            | Route::Put(k)
            | Route::Delete(k)
            | Route::Cas(k)
            | Route::Incr(k)
            | Route::TtlGet(k)
            | Route::TtlSet(k) => k.len(),
            _ => 0,
        }
    }
}

/// The data route for `method` on `/api/v1/<rest>`: `Ok(None)` for no
/// such path, `Err(allowed methods)` for a path that takes others.
pub(crate) fn route(method: &str, rest: &[&str]) -> Result<Option<Route>, &'static str> {
    let get = method == "GET" || method == "HEAD";
    let k = |s: &str| super::decode(s);
    Ok(Some(match (rest, method) {
        (["keys"], _) if get => Route::List,
        (["keys"], _) => return Err("GET, HEAD"),
        (["keys", key], "GET") => Route::Get(k(key)),
        (["keys", key], "HEAD") => Route::Head(k(key)),
        (["keys", key], "PUT") => Route::Put(k(key)),
        (["keys", key], "DELETE") => Route::Delete(k(key)),
        (["keys", _], _) => return Err("GET, HEAD, PUT, DELETE"),
        (["keys", key, "cas"], "POST") => Route::Cas(k(key)),
        (["keys", key, "incr"], "POST") => Route::Incr(k(key)),
        (["keys", _, "cas" | "incr"], _) => return Err("POST"),
        (["keys", key, "ttl"], _) if get => Route::TtlGet(k(key)),
        (["keys", key, "ttl"], "POST") => Route::TtlSet(k(key)),
        (["keys", _, "ttl"], _) => return Err("GET, HEAD, POST"),
        (["batch", "put"], "POST") => Route::BatchPut,
        (["batch", "get"], "POST") => Route::BatchGet,
        (["batch", "put" | "get"], _) => return Err("POST"),
        (["scan"], _) if get => Route::Scan,
        (["scan"], _) => return Err("GET, HEAD"),
        _ => return Ok(None),
    }))
}

/// The request options every data route takes from headers.
#[derive(Debug, Clone, Copy)]
struct Options {
    consistency: WireConsistency,
    timeout_ms: u32,
    sloppy: bool,
}

fn options(req: &HttpRequest) -> Result<Options, Response> {
    let consistency = match req.header_str("consistency-level")? {
        None => WireConsistency::Quorum,
        Some(c) => match c.to_ascii_uppercase().as_str() {
            "ONE" => WireConsistency::One,
            "TWO" => WireConsistency::Count(2),
            "QUORUM" => WireConsistency::Quorum,
            "ALL" => WireConsistency::All,
            "LOCAL_QUORUM" => WireConsistency::LocalQuorum,
            _ => {
                return Err(Response::error(
                    400,
                    format!("Consistency-Level `{c}`: expected ONE, TWO, QUORUM, ALL or LOCAL_QUORUM"),
                ))
            }
        },
    };
    let timeout_ms = match req.header_str("x-corekv-timeout-ms")? {
        None => 0,
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|&t| t <= 600_000)
            .ok_or_else(|| Response::error(400, "X-Corekv-Timeout-Ms: expected milliseconds, 0..=600000"))?,
    };
    let sloppy = match req.header_str("x-corekv-sloppy-quorum")? {
        None => false,
        Some(s) => {
            parse_bool(s).ok_or_else(|| Response::error(400, "X-Corekv-Sloppy-Quorum: expected true or false"))?
        }
    };
    Ok(Options {
        consistency,
        timeout_ms,
        sloppy,
    })
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn b64(v: &[u8]) -> String {
    B64.encode(v)
}

fn unb64(what: &str, s: &str) -> Result<Vec<u8>, Response> {
    B64.decode(s)
        .map_err(|e| Response::error(400, format!("{what} is not base64: {e}")))
}

fn bad_body(e: &serde_json::Error) -> Response {
    Response::error(400, format!("malformed JSON body: {e}"))
}

fn body<'a, T: Deserialize<'a>>(req: &'a HttpRequest) -> Result<T, Response> {
    serde_json::from_slice(&req.body).map_err(|e| bad_body(&e))
}

/// Remaining ms of an absolute expiry (at least 1 while not expired), or
/// `None` for no expiry.
fn ttl_left(expiry_ms: u64) -> Option<u64> {
    (expiry_ms != 0).then(|| expiry_ms.saturating_sub(now_ms()).max(1))
}

fn key_fields(key: &[u8]) -> (String, String) {
    (String::from_utf8_lossy(key).into_owned(), b64(key))
}

/// A key's state as JSON: single node, its value and version.
fn value_view(key: &[u8], v: Option<&Value>) -> Json {
    let (k, kb) = key_fields(key);
    match v {
        None => json!({"key": k, "key_b64": kb, "found": false, "version": null, "context": null, "siblings": []}),
        Some(v) => json!({
            "key": k, "key_b64": kb, "found": true,
            "version": b64(&v.meta), "context": null,
            "siblings": [{"value": b64(&v.value), "ttl_ms": ttl_left(v.expiry_ms)}],
        }),
    }
}

/// A key's state as JSON: cluster mode, its live siblings and context.
fn versions_view(key: &[u8], v: Option<&Versions>) -> Json {
    let (k, kb) = key_fields(key);
    let siblings: Vec<Json> = v
        .map(|v| {
            v.siblings
                .iter()
                .map(|s| json!({"value": b64(&s.value), "ttl_ms": ttl_left(s.expiry_ms)}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "key": k, "key_b64": kb, "found": !siblings.is_empty(), "version": null,
        "context": v.filter(|v| !v.context.is_empty()).map(|v| b64(&v.context)),
        "siblings": siblings,
    })
}

fn page_view(entries: &[ScanEntry], next: &[u8]) -> Json {
    let entries: Vec<Json> = entries
        .iter()
        .map(|e| {
            let (k, kb) = key_fields(&e.key);
            json!({"key": k, "key_b64": kb, "value": b64(&e.value)})
        })
        .collect();
    json!({
        "entries": entries,
        "next_cursor": (!next.is_empty()).then(|| B64URL.encode(next)),
    })
}

/// What running a job produced.
enum Outcome {
    /// A single command's reply (not `Failed`).
    Reply(Reply),
    /// Cluster mode, several keys: one reply per key, in order.
    Replies(Vec<Reply>),
    /// Single node MGET.
    Values(Vec<Option<Value>>),
    /// A listing page and the cursor to continue (empty: done).
    Page(Vec<ScanEntry>, Vec<u8>),
    /// Done, nothing to return.
    Done,
    Failed(Failure),
}

/// Runs a job exactly as the binary protocol's connection does
/// (`native::run`), keeping the replies for this module to encode.
async fn run_job(shard: &Rc<Shard>, job: Job) -> Outcome {
    match job {
        Job::One { core, cmd, .. } => match shard.exec(core, cmd).await {
            Reply::Failed(f) => Outcome::Failed(f),
            r => Outcome::Reply(r),
        },
        Job::Cluster(cmds, _) => {
            let replies = futures::future::join_all(cmds.into_iter().map(|(core, cmd)| shard.exec(core, cmd))).await;
            match replies.iter().find_map(|r| match r {
                Reply::Failed(f) => Some(f.clone()),
                _ => None,
            }) {
                Some(f) => Outcome::Failed(f),
                None => Outcome::Replies(replies),
            }
        }
        Job::MGet(keys) => match native::mget(shard, keys).await {
            Ok(v) => Outcome::Values(v),
            Err(f) => Outcome::Failed(f),
        },
        Job::MPut { entries, expiry_ms } => match native::mput(shard, entries, expiry_ms).await {
            Ok(()) => Outcome::Done,
            Err(f) => Outcome::Failed(f),
        },
        Job::Scan {
            start,
            end,
            cursor,
            limit,
        } => match native::scan_tokens(shard, start, end, &cursor, limit).await {
            Ok((e, next)) => Outcome::Page(e, next),
            Err(f) => Outcome::Failed(f),
        },
        Job::List { prefix, cursor, limit } => match native::list(shard, &prefix, &cursor, limit).await {
            Ok((e, next)) => Outcome::Page(e, next),
            Err(f) => Outcome::Failed(f),
        },
        Job::Ping | Job::Ring => Outcome::Done,
    }
}

/// Checks, builds and runs `op` as the binary protocol would; `Err` (403)
/// when the user may not.
async fn execute(
    shard: &Rc<Shard>,
    user: Option<&User>,
    o: Options,
    op: Op<'_>,
    info: &mut RequestInfo,
) -> Result<Outcome, Response> {
    let clustered = shard.cluster.is_some();
    info.level = Level::of_request(clustered, op.opcode(), o.consistency);
    let req = Request {
        consistency: o.consistency,
        timeout_ms: o.timeout_ms,
        sloppy_quorum: o.sloppy,
        op,
    };
    if let Some(u) = user {
        crate::server::auth::authorize(u, &req).map_err(|m| Response::error(403, m))?;
    }
    let job = if clustered {
        native::cluster_job(shard, &req)
    } else {
        native::job(shard, &req.op)
    };
    let job = match job {
        Ok(j) => j,
        Err(f) => return Ok(Outcome::Failed(f)),
    };
    let run = run_job(shard, job);
    if o.timeout_ms == 0 {
        return Ok(run.await);
    }
    futures::pin_mut!(run);
    let t = glommio::timer::sleep(Duration::from_millis(u64::from(o.timeout_ms)));
    futures::pin_mut!(t);
    Ok(match futures::future::select(run, t).await {
        futures::future::Either::Left((out, _)) => out,
        futures::future::Either::Right(_) => Outcome::Failed(Failure::new(
            FailureKind::Timeout,
            format!("no answer within {} ms (a write may still apply)", o.timeout_ms),
        )),
    })
}

fn failed(f: &Failure) -> Response {
    Response::failure(f)
}

fn unexpected(what: &str) -> Response {
    Response::failure(&Failure::new(
        FailureKind::Internal,
        format!("unexpected reply to {what}"),
    ))
}

/// An operation the binary protocol refuses in cluster mode, answered 501
/// with the same explanation.
fn not_in_cluster(what: &str) -> Response {
    Response::error(501, native::not_in_cluster_mode(what).message)
}

/// Serves a data route.
pub(crate) async fn serve(
    shard: &Rc<Shard>,
    req: &HttpRequest,
    route: Route,
    user: Option<&User>,
    info: &mut RequestInfo,
) -> Response {
    match serve_inner(shard, req, route, user, info).await {
        Ok(r) | Err(r) => r,
    }
}

async fn serve_inner(
    shard: &Rc<Shard>,
    req: &HttpRequest,
    route: Route,
    user: Option<&User>,
    info: &mut RequestInfo,
) -> Result<Response, Response> {
    let o = options(req)?;
    let clustered = shard.cluster.is_some();
    let context = match req.header_str("x-corekv-context")? {
        Some(c) if !c.is_empty() => Some(unb64("X-Corekv-Context", c)?),
        _ => None,
    };
    if context.is_some() && (!clustered || !matches!(route, Route::Put(_) | Route::Delete(_))) {
        return Err(Response::error(
            400,
            if clustered {
                "X-Corekv-Context is taken by PUT and DELETE only"
            } else {
                "X-Corekv-Context needs cluster mode (a single node keeps one version per key, without causal contexts)"
            },
        ));
    }
    if !matches!(route, Route::Put(_) | Route::List | Route::Scan) && !req.query.is_empty() {
        query(&req.query, &[])?;
    }
    let wants_json = req
        .header("accept")
        .is_some_and(|a| String::from_utf8_lossy(a).contains("application/json"));
    Ok(match route {
        Route::Get(key) | Route::Head(key) => {
            let op = if clustered {
                Op::GetVersions { key: &key }
            } else {
                Op::Get { key: &key }
            };
            match execute(shard, user, o, op, info).await? {
                Outcome::Reply(Reply::Value(v)) => single_get(&key, v.as_ref(), wants_json),
                Outcome::Reply(Reply::Versions(v)) => cluster_get(&key, v.as_ref(), wants_json),
                Outcome::Failed(f) => failed(&f),
                _ => unexpected("GET"),
            }
        }
        Route::Put(key) => {
            let q = query(&req.query, &["ttl_ms", "if_not_exists"])?;
            let mut ttl_ms = 0;
            let mut nx = false;
            for (n, v) in q {
                let v = String::from_utf8_lossy(&v).into_owned();
                match n {
                    "ttl_ms" => {
                        ttl_ms = v
                            .parse::<u64>()
                            .map_err(|_| Response::error(400, "ttl_ms: expected milliseconds (0 = no expiry)"))?
                    }
                    _ => {
                        nx = parse_bool(&v)
                            .ok_or_else(|| Response::error(400, "if_not_exists: expected true or false"))?
                    }
                }
            }
            if nx && clustered {
                return Ok(not_in_cluster("PUT with if_not_exists (SET NX)"));
            }
            let op = match &context {
                Some(c) => Op::PutVersioned {
                    key: &key,
                    value: &req.body,
                    ttl_ms,
                    context: c,
                },
                None => Op::Put {
                    key: &key,
                    value: &req.body,
                    ttl_ms,
                    condition: if nx { Condition::IfAbsent } else { Condition::Always },
                },
            };
            match execute(shard, user, o, op, info).await? {
                Outcome::Reply(Reply::Bool(true) | Reply::Ok) => Response::empty(204),
                Outcome::Reply(Reply::Bool(false)) => Response::error(412, "the key exists (if_not_exists)"),
                Outcome::Failed(f) => failed(&f),
                _ => unexpected("PUT"),
            }
        }
        Route::Delete(key) => {
            let op = match &context {
                Some(c) => Op::DeleteVersioned { key: &key, context: c },
                None => Op::Delete { key: &key },
            };
            match execute(shard, user, o, op, info).await? {
                Outcome::Reply(Reply::Int(_) | Reply::Ok) => Response::empty(204),
                Outcome::Failed(f) => failed(&f),
                _ => unexpected("DELETE"),
            }
        }
        Route::TtlGet(key) => match execute(shard, user, o, Op::Ttl { key: &key }, info).await? {
            Outcome::Reply(Reply::Int(n)) => ttl_answer(n),
            Outcome::Reply(Reply::Versions(v)) => {
                ttl_answer(native::ttl_of(native::newest(v.as_ref()).map(|(s, _)| s)))
            }
            Outcome::Failed(f) => failed(&f),
            _ => unexpected("TTL"),
        },
        Route::TtlSet(key) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                ttl_ms: u64,
            }
            let b: Body = body(req)?;
            match execute(
                shard,
                user,
                o,
                Op::Expire {
                    key: &key,
                    ttl_ms: b.ttl_ms,
                },
                info,
            )
            .await?
            {
                Outcome::Reply(Reply::Bool(true)) => Response::json(200, &json!({"updated": true})),
                Outcome::Reply(Reply::Bool(false)) => Response::error(404, "no such key"),
                Outcome::Failed(f) => failed(&f),
                _ => unexpected("EXPIRE"),
            }
        }
        Route::Incr(key) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                delta: i64,
            }
            let delta = if req.body.iter().all(u8::is_ascii_whitespace) {
                1
            } else {
                body::<Body>(req)?.delta
            };
            match execute(shard, user, o, Op::Incr { key: &key, delta }, info).await? {
                Outcome::Reply(Reply::Int(n)) => Response::json(200, &json!({ "value": n })),
                Outcome::Reply(r @ Reply::Cas { .. }) => match native::counter_of(&r) {
                    Ok(n) => Response::json(200, &json!({ "value": n })),
                    Err(f) => failed(&f),
                },
                Outcome::Failed(f) => failed(&f),
                _ => unexpected("INCR"),
            }
        }
        Route::Cas(key) => cas(shard, req, &key, user, o, info).await?,
        Route::BatchPut => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Entry {
                key: Option<String>,
                key_b64: Option<String>,
                value: String,
            }
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                entries: Vec<Entry>,
                #[serde(default)]
                ttl_ms: u64,
            }
            let b: Body = body(req)?;
            check_items(shard, b.entries.len())?;
            let mut owned: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(b.entries.len());
            for (i, e) in b.entries.into_iter().enumerate() {
                let key = one_key(i, e.key, e.key_b64)?;
                owned.push((key, unb64(&format!("entries[{i}].value"), &e.value)?));
            }
            let kvs: Vec<KeyValue<'_>> = owned.iter().map(|(k, v)| KeyValue { key: k, value: v }).collect();
            let op = Op::MPut {
                entries: List::Slice(&kvs),
                ttl_ms: b.ttl_ms,
            };
            match execute(shard, user, o, op, info).await? {
                Outcome::Done | Outcome::Replies(_) => Response::json(200, &json!({ "written": kvs.len() })),
                Outcome::Failed(f) => failed(&f),
                _ => unexpected("batch put"),
            }
        }
        Route::BatchGet => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                keys: Option<Vec<String>>,
                keys_b64: Option<Vec<String>>,
            }
            let b: Body = body(req)?;
            let keys: Vec<Vec<u8>> = match (b.keys, b.keys_b64) {
                (Some(k), None) => k.into_iter().map(String::into_bytes).collect(),
                (None, Some(k)) => k
                    .iter()
                    .enumerate()
                    .map(|(i, k)| unb64(&format!("keys_b64[{i}]"), k))
                    .collect::<Result<_, _>>()?,
                _ => return Err(Response::error(400, "give exactly one of `keys` and `keys_b64`")),
            };
            check_items(shard, keys.len())?;
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let op = Op::MGet {
                keys: List::Slice(&refs),
            };
            let results: Vec<Json> = match execute(shard, user, o, op, info).await? {
                Outcome::Values(vs) => {
                    answer_fits(shard, vs.iter().flatten().map(|v| v.value.len()))?;
                    keys.iter().zip(&vs).map(|(k, v)| value_view(k, v.as_ref())).collect()
                }
                Outcome::Replies(rs) => {
                    answer_fits(
                        shard,
                        rs.iter().flat_map(|r| match r {
                            Reply::Versions(Some(v)) => v.siblings.iter().map(|s| s.value.len()).collect(),
                            _ => Vec::new(),
                        }),
                    )?;
                    keys.iter()
                        .zip(&rs)
                        .map(|(k, r)| match r {
                            Reply::Versions(v) => versions_view(k, v.as_ref()),
                            _ => versions_view(k, None),
                        })
                        .collect()
                }
                Outcome::Failed(f) => return Ok(failed(&f)),
                _ => return Ok(unexpected("batch get")),
            };
            Response::json(200, &json!({ "results": results }))
        }
        Route::List | Route::Scan => {
            let listing = matches!(route, Route::List);
            if clustered {
                return Ok(not_in_cluster(if listing { "LIST (GET /api/v1/keys)" } else { "SCAN" }));
            }
            let names: &[&str] = if listing {
                &["prefix", "limit", "cursor"]
            } else {
                &["count", "cursor"]
            };
            let mut prefix = Vec::new();
            let mut cursor = Vec::new();
            let mut limit = DEFAULT_PAGE;
            for (n, v) in query(&req.query, names)? {
                match n {
                    "prefix" => prefix = v,
                    "cursor" => {
                        cursor = B64URL
                            .decode(&v)
                            .map_err(|_| Response::error(400, "cursor: not a cursor this node returned"))?
                    }
                    _ => {
                        limit = String::from_utf8_lossy(&v)
                            .parse::<u32>()
                            .ok()
                            .filter(|l| (1..=MAX_PAGE).contains(l))
                            .ok_or_else(|| Response::error(400, format!("{n}: expected 1..={MAX_PAGE}")))?
                    }
                }
            }
            let op = if listing {
                Op::List {
                    prefix: &prefix,
                    cursor: &cursor,
                    limit,
                }
            } else {
                // The whole ring: [0, 0) wraps around.
                Op::Scan {
                    start: 0,
                    end: 0,
                    cursor: &cursor,
                    limit,
                }
            };
            match execute(shard, user, o, op, info).await? {
                Outcome::Page(entries, next) => {
                    answer_fits(shard, entries.iter().map(|e| e.key.len() + e.value.len()))?;
                    Response::json(200, &page_view(&entries, &next))
                }
                Outcome::Failed(f) => failed(&f),
                _ => unexpected("a listing"),
            }
        }
    })
}

fn ttl_answer(n: i64) -> Response {
    match n {
        -2 => Response::error(404, "no such key"),
        n if n < 0 => Response::json(200, &json!({"ttl_ms": null})),
        n => Response::json(200, &json!({ "ttl_ms": n })),
    }
}

/// Refuses an answer whose values (`sizes`) exceed `limits.max_frame_bytes`,
/// as the binary protocol refuses a response frame past it: ask for fewer.
fn answer_fits(shard: &Shard, sizes: impl Iterator<Item = usize>) -> Result<(), Response> {
    let max = usize::try_from(shard.config.limits.max_frame_bytes).unwrap_or(usize::MAX);
    let total = sizes.fold(0usize, usize::saturating_add);
    if total > max {
        return Err(Response::error(
            413,
            format!("an answer of {total} bytes of values is over limits.max_frame_bytes ({max}); ask for fewer keys or a smaller page"),
        ));
    }
    Ok(())
}

fn check_items(shard: &Shard, n: usize) -> Result<(), Response> {
    let max = native::limits(shard).max_items as usize;
    if n > max {
        return Err(Response::error(413, format!("{n} items over the most, {max}")));
    }
    Ok(())
}

fn one_key(i: usize, key: Option<String>, key_b64: Option<String>) -> Result<Vec<u8>, Response> {
    match (key, key_b64) {
        (Some(k), None) => Ok(k.into_bytes()),
        (None, Some(k)) => unb64(&format!("entries[{i}].key_b64"), &k),
        _ => Err(Response::error(
            400,
            format!("entries[{i}]: give exactly one of `key` and `key_b64`"),
        )),
    }
}

/// GET on a single node: the value raw, its version in a header, or JSON.
fn single_get(key: &[u8], v: Option<&Value>, json: bool) -> Response {
    let Some(v) = v else {
        return Response::error(404, "no such key");
    };
    let r = if json {
        Response::json(200, &value_view(key, Some(v)))
    } else {
        Response::bytes(200, "application/octet-stream", v.value.clone())
    };
    let r = r.with("X-Corekv-Version", b64(&v.meta)).with("X-Corekv-Siblings", "1");
    match ttl_left(v.expiry_ms) {
        Some(t) => r.with("X-Corekv-Ttl-Ms", t.to_string()),
        None => r,
    }
}

/// GET in cluster mode: one sibling raw with the context in a header;
/// concurrent siblings as JSON with status 300 (or 200 when JSON was
/// asked for).
fn cluster_get(key: &[u8], v: Option<&Versions>, json: bool) -> Response {
    let ctx = |r: Response| match v.filter(|v| !v.context.is_empty()) {
        Some(v) => r.with("X-Corekv-Context", b64(&v.context)),
        None => r,
    };
    let siblings = v.map_or(0, |v| v.siblings.len());
    let r = match (siblings, json, v) {
        (0, _, _) | (_, _, None) => Response::error(404, "no such key"),
        (1, false, Some(v)) => {
            let s = &v.siblings[0];
            let r = Response::bytes(200, "application/octet-stream", s.value.clone());
            match ttl_left(s.expiry_ms) {
                Some(t) => r.with("X-Corekv-Ttl-Ms", t.to_string()),
                None => r,
            }
        }
        (_, false, Some(v)) => Response::json(300, &versions_view(key, Some(v))),
        (_, true, Some(v)) => Response::json(200, &versions_view(key, Some(v))),
    };
    ctx(r).with("X-Corekv-Siblings", siblings.to_string())
}

/// POST /keys/{key}/cas: on the version (single node) or on the value
/// (Paxos in a cluster; also on a single node).
async fn cas(
    shard: &Rc<Shard>,
    req: &HttpRequest,
    key: &[u8],
    user: Option<&User>,
    o: Options,
    info: &mut RequestInfo,
) -> Result<Response, Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        expected_version: Option<String>,
        expected_value: Option<String>,
        #[serde(default)]
        expect_absent: bool,
        value: Option<String>,
        #[serde(default)]
        delete: bool,
        ttl_ms: Option<u64>,
    }
    let b: Body = body(req)?;
    let new = match (b.value, b.delete) {
        (Some(v), false) => Some(unb64("value", &v)?),
        (None, true) => None,
        _ => return Err(Response::error(400, "give exactly one of `value` and `delete: true`")),
    };
    let given = [
        b.expected_version.is_some(),
        b.expected_value.is_some(),
        b.expect_absent,
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err(Response::error(
            400,
            "give exactly one of `expected_version`, `expected_value` and `expect_absent: true`",
        ));
    }
    if let Some(ver) = b.expected_version {
        if shard.cluster.is_some() {
            return Ok(Response::error(
                501,
                "CAS on the version is not available in cluster mode; use `expected_value` or \
                 `expect_absent` (compare-and-set on the value, linearizable through Paxos)",
            ));
        }
        let Some(value) = new else {
            return Err(Response::error(
                400,
                "a CAS on the version writes a value; `delete` needs `expected_value`",
            ));
        };
        let expected = unb64("expected_version", &ver)?;
        let op = Op::Cas {
            key,
            expected: &expected,
            value: &value,
            ttl_ms: b.ttl_ms.unwrap_or(0),
        };
        return Ok(match execute(shard, user, o, op, info).await? {
            Outcome::Reply(Reply::Bool(true)) => Response::json(200, &json!({"applied": true, "value": null})),
            Outcome::Reply(Reply::Bool(false)) => Response::json(409, &json!({"applied": false, "value": null})),
            Outcome::Failed(f) => failed(&f),
            _ => unexpected("CAS"),
        });
    }
    if b.ttl_ms.is_some() {
        return Err(Response::error(400, "`ttl_ms` is taken by the CAS on the version only"));
    }
    let expected = match b.expected_value {
        Some(v) => Some(unb64("expected_value", &v)?),
        None => None,
    };
    let op = Op::CasValue {
        key,
        expected: expected.as_deref(),
        new: new.as_deref(),
    };
    Ok(match execute(shard, user, o, op, info).await? {
        Outcome::Reply(Reply::Cas { applied, value }) => Response::json(
            if applied { 200 } else { 409 },
            &json!({"applied": applied, "value": value.as_deref().map(b64)}),
        ),
        Outcome::Failed(f) => failed(&f),
        _ => unexpected("CAS"),
    })
}
