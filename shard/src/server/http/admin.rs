//! The operator routes (docs/http.md, "Admin") and `/metrics`.
//!
//! Each route runs the operator command the `corekv` CLI would
//! (`cluster::admin`), on this node or, through the node-to-node ADMIN
//! frame, on the node it concerns, and answers when the work is done (a
//! repair or a decommission can take minutes: clients need a long
//! timeout). On a single node only the status exists: the others change a
//! cluster.

use std::rc::Rc;
use std::time::Duration;

use corekv_net::msg::peer::{PeerOp, PeerRequest};
use corekv_net::msg::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{permit, query, HttpRequest, Need, Response};
use crate::cluster::{admin as commands, Cluster};
use crate::metrics::{status_name, NodeStats, BUCKETS_US};
use crate::runtime::Shard;
use crate::security::User;
use crate::server::peer::PeerAnswer;
use crate::store::{Failure, FailureKind};
use crate::topology::{NodeId, NodeStatus};

/// How long the status waits for another node's figures.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a long operator command on another node may take (the CLI's).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a waiting node may take to answer `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An operator route.
#[derive(Debug)]
pub(crate) enum Route {
    Status,
    Ring,
    AddNode,
    RemoveNode(String),
    Rebalance,
    Repair,
    Snapshot,
}

/// The operator route for `method` on `/api/v1/admin/<rest>`.
pub(crate) fn route(method: &str, rest: &[&str]) -> Result<Option<Route>, &'static str> {
    let get = method == "GET" || method == "HEAD";
    Ok(Some(match (rest, method) {
        (["cluster", "status"], _) if get => Route::Status,
        (["cluster", "status"], _) => return Err("GET, HEAD"),
        (["cluster", "ring"], _) if get => Route::Ring,
        (["cluster", "ring"], _) => return Err("GET, HEAD"),
        (["cluster", "nodes"], "POST") => Route::AddNode,
        (["cluster", "nodes"], _) => return Err("POST"),
        (["cluster", "nodes", id], "DELETE") => {
            Route::RemoveNode(String::from_utf8_lossy(&super::decode(id)).into_owned())
        }
        (["cluster", "nodes", _], _) => return Err("DELETE"),
        (["cluster", "rebalance"], "POST") => Route::Rebalance,
        (["repair"], "POST") => Route::Repair,
        (["snapshot"], "POST") => Route::Snapshot,
        (["cluster", "rebalance"] | ["repair"] | ["snapshot"], _) => return Err("POST"),
        _ => return Ok(None),
    }))
}

/// Serves an operator route.
pub(crate) async fn serve(shard: &Rc<Shard>, req: &HttpRequest, route: Route, user: Option<&User>) -> Response {
    let mutating = !matches!(route, Route::Status | Route::Ring);
    if let Err(r) = permit(shard, user, Need::Admin { mutating }) {
        return r;
    }
    if let Err(r) = query(&req.query, &[]) {
        return r;
    }
    match route {
        Route::Status => return status(shard).await,
        Route::Ring => return ring(shard),
        _ => {}
    }
    let Some(cluster) = shard.cluster.clone() else {
        return Response::error(
            409,
            "this node is not in cluster mode (cluster.seeds is empty): only the status route applies",
        );
    };
    let r = match route {
        Route::Status => Ok(status(shard).await),
        Route::Ring => Ok(ring(shard)),
        Route::AddNode => add_node(&cluster, req).await,
        Route::RemoveNode(id) => remove_node(shard, &cluster, &id).await,
        Route::Rebalance => Ok(rebalance(shard, &cluster).await),
        Route::Repair => Ok(match commands::run(shard, &cluster, "repair").await {
            Ok(report) => Response::json(200, &json!({ "ok": true, "report": report })),
            Err(f) => Response::failure(&f),
        }),
        Route::Snapshot => snapshot(shard, &cluster, req).await,
    };
    r.unwrap_or_else(|e| e)
}

/// The answer for another node's refusal or silence.
fn remote_failure(node: &str, e: RemoteError) -> Response {
    match e {
        RemoteError::Refused { code, message } => {
            let status = match code {
                ErrorCode::MALFORMED => 409,
                ErrorCode::UNAVAILABLE | ErrorCode::OVERLOADED => 503,
                ErrorCode::TIMEOUT => 504,
                ErrorCode::AUTH_REQUIRED | ErrorCode::AUTH_FAILED | ErrorCode::FORBIDDEN => 502,
                _ => 500,
            };
            Response::error(status, format!("{node}: {message}"))
        }
        RemoteError::Unreachable(m) => Response::error(502, format!("{node} could not be reached: {m}")),
    }
}

enum RemoteError {
    /// The node answered with an error.
    Refused { code: ErrorCode, message: String },
    /// No answer.
    Unreachable(String),
}

/// Runs operator command `command` on the node at `addr`.
async fn remote(cluster: &Cluster, addr: &str, command: &str, timeout: Duration) -> Result<String, RemoteError> {
    let req = PeerRequest {
        from: &cluster.me.0,
        op: PeerOp::Admin {
            command: command.as_bytes(),
        },
    };
    match cluster.pool.call(addr, &req, timeout).await {
        Ok(PeerAnswer::Report { text }) => Ok(String::from_utf8_lossy(&text).into_owned()),
        Ok(PeerAnswer::Failed { code, message }) => Err(RemoteError::Refused { code, message }),
        Ok(other) => Err(RemoteError::Refused {
            code: ErrorCode::INTERNAL,
            message: format!("unexpected answer {other:?}"),
        }),
        Err(e) => Err(RemoteError::Unreachable(e.to_string())),
    }
}

/// A node's figures as fields of its status entry, `null` where unknown
/// (the node did not answer, or is of a version that does not send them).
fn figures(s: Option<NodeStats>) -> serde_json::Map<String, Json> {
    let d = s.and_then(|s| s.detail);
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Json| {
        m.insert(k.to_owned(), v);
    };
    put("load_bytes", json!(s.map(|s| s.load_bytes)));
    put("keys", json!(s.map(|s| s.keys)));
    put("memory_bytes", json!(s.map(|s| s.memory_bytes)));
    put("uptime_us", json!(d.map(|d| d.uptime_us)));
    put("requests", json!(d.map(|d| d.requests)));
    put("errors", json!(d.map(|d| d.errors)));
    put("latency_buckets", json!(d.map(|d| d.latency_buckets.to_vec())));
    put("latency_sum_us", json!(d.map(|d| d.latency_sum_us)));
    put("compaction_debt_bytes", json!(d.map(|d| d.compaction_debt_bytes)));
    put("memtable_bytes", json!(d.map(|d| d.memtable_bytes)));
    put("sstables", json!(d.map(|d| d.sstables)));
    put("storage", json!(d.map(|d| d.storage.name())));
    m
}

/// A status entry: `head` (who the node is) and its figures.
fn entry(head: Json, s: Option<NodeStats>) -> Json {
    let mut m = match head {
        Json::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    m.extend(figures(s));
    Json::Object(m)
}

/// GET /admin/cluster/status: every member with its status, ownership and
/// figures (each node asked for its own, in parallel; `null` figures and
/// `reachable: false` for a node that did not answer).
async fn status(shard: &Rc<Shard>) -> Response {
    let mine = crate::metrics::node_stats(shard).await;
    let Some(cluster) = shard.cluster.clone() else {
        let ring = &shard.ring;
        let node = entry(
            json!({
                "id": shard.config.node.id, "address": crate::cluster::client_address(&shard.config),
                "status": "normal", "dc": shard.config.cluster.dc,
                "rack": (!shard.config.cluster.rack.is_empty()).then(|| shard.config.cluster.rack.clone()),
                "tokens": ring.tokens_of(0).len(), "ownership": 1.0, "reachable": true,
            }),
            Some(mine),
        );
        return Response::json(
            200,
            &json!({
                "node_id": shard.config.node.id, "mode": "single", "replication_factor": 1,
                "epoch": 1, "ring_changing": false, "waiting_to_join": false,
                "latency_bounds_us": BUCKETS_US, "nodes": [node],
            }),
        );
    };
    let view = cluster.view();
    let own = view.ring.ownership();
    // Members, then joiners (in the pending ring only).
    let mut nodes: Vec<(crate::topology::Node, &'static str, usize, f64)> = view
        .ring
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.clone(),
                status_name(n.status),
                view.ring.tokens_of(i).len(),
                own.get(i).copied().unwrap_or(0.0),
            )
        })
        .collect();
    if let Some(next) = &view.next {
        for (i, n) in next.nodes().iter().enumerate() {
            if view.ring.index_of(&n.id).is_none() {
                nodes.push((n.clone(), "joining", next.tokens_of(i).len(), 0.0));
            }
        }
    }
    let figures = futures::future::join_all(nodes.iter().map(|(n, status, _, _)| {
        let c = cluster.clone();
        async move {
            if n.id == c.me {
                return Some(mine);
            }
            if *status == "down" {
                return None;
            }
            remote(&c, &n.address, "stats", STATS_TIMEOUT)
                .await
                .ok()
                .and_then(|t| NodeStats::parse(&t))
        }
    }))
    .await;
    let list: Vec<Json> = nodes
        .iter()
        .zip(figures)
        .map(|((n, status, tokens, owns), f)| {
            entry(
                json!({
                    "id": n.id.0, "address": n.address, "status": status, "dc": n.dc, "rack": n.rack,
                    "tokens": tokens, "ownership": owns, "reachable": f.is_some(),
                }),
                f,
            )
        })
        .collect();
    Response::json(
        200,
        &json!({
            "node_id": cluster.me.0, "mode": "cluster",
            "replication_factor": cluster.rf_config, "epoch": view.epoch,
            "ring_changing": view.next.is_some(), "waiting_to_join": cluster.shared().waiting(),
            "latency_bounds_us": BUCKETS_US, "nodes": list,
        }),
    )
}

/// A token as the ring route answers it: 16 hex digits after `0x` (a u64
/// does not fit a JavaScript number).
fn token_text(t: u64) -> String {
    format!("{t:#018x}")
}

/// The members of `ring` with their vnode tokens (ascending).
fn ring_json(ring: &crate::Ring) -> Json {
    let nodes: Vec<Json> = ring
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut tokens = ring.tokens_of(i);
            tokens.sort_unstable();
            json!({
                "id": n.id.0, "address": n.address, "status": status_name(n.status),
                "dc": n.dc, "rack": n.rack,
                "tokens": tokens.into_iter().map(token_text).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "vnodes": ring.vnodes().len(), "nodes": nodes })
}

/// GET /admin/cluster/ring: every member's vnode tokens, in the ring this
/// node routes by and, while nodes join or leave, the pending one. Its
/// size is the ring's: vnodes per node times members.
fn ring(shard: &Shard) -> Response {
    let Some(cluster) = shard.cluster.as_ref() else {
        let mut r = ring_json(&shard.ring);
        // A single node is not in a ring of members: it is the ring.
        if let Some(n) = r["nodes"].get_mut(0) {
            n["id"] = json!(shard.config.node.id);
            n["address"] = json!(crate::cluster::client_address(&shard.config));
            n["dc"] = json!(shard.config.cluster.dc);
            n["rack"] = json!((!shard.config.cluster.rack.is_empty()).then(|| shard.config.cluster.rack.clone()));
        }
        return Response::json(
            200,
            &json!({
                "node_id": shard.config.node.id, "mode": "single", "epoch": 1,
                "replication_factor": 1, "ring": r, "pending": null,
            }),
        );
    };
    let view = cluster.view();
    Response::json(
        200,
        &json!({
            "node_id": cluster.me.0, "mode": "cluster", "epoch": view.epoch,
            "replication_factor": cluster.rf_config, "ring": ring_json(&view.ring),
            "pending": view.next.as_deref().map(ring_json),
        }),
    )
}

/// POST /admin/cluster/nodes: adds a node that was started with the
/// cluster's seeds and `cluster.auto_bootstrap = false` and waits: it is
/// told to join (node-to-node `join`), then gossips and bootstraps. 202:
/// the bootstrap runs; the status shows it JOINING, then NORMAL.
async fn add_node(cluster: &Rc<Cluster>, req: &HttpRequest) -> Result<Response, Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        address: String,
    }
    let b: Body =
        serde_json::from_slice(&req.body).map_err(|e| Response::error(400, format!("malformed JSON body: {e}")))?;
    let addr = b.address.trim();
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid || addr.len() > 256 {
        return Err(Response::error(
            400,
            "address: expected the node's client address, host:port",
        ));
    }
    let view = cluster.view();
    let member = view
        .ring
        .nodes()
        .iter()
        .chain(view.next.iter().flat_map(|n| n.nodes().iter()))
        .find(|n| n.address == addr);
    if let Some(n) = member {
        return Err(Response::error(
            409,
            format!("{} at {addr} is a member already ({})", n.id, status_name(n.status)),
        ));
    }
    match remote(cluster, addr, "join", JOIN_TIMEOUT).await {
        Ok(report) => Ok(Response::json(
            202,
            &json!({ "address": addr, "status": "joining", "report": report }),
        )),
        Err(e) => Err(remote_failure(addr, e)),
    }
}

/// DELETE /admin/cluster/nodes/{id}: this node decommissions itself; a
/// member that is up is told to decommission (streaming its ranges out
/// first); a member believed down is removed and the survivors repair.
async fn remove_node(shard: &Rc<Shard>, cluster: &Rc<Cluster>, id: &str) -> Result<Response, Response> {
    let view = cluster.view();
    let Some(node) = view.ring.node(&NodeId(id.to_owned())).cloned() else {
        return Err(Response::error(404, format!("no member {id} in this node's view")));
    };
    let (action, result) = if node.id == cluster.me {
        ("decommissioned", commands::run(shard, cluster, "decommission").await)
    } else if node.status == NodeStatus::Down {
        (
            "removed",
            commands::run(shard, cluster, &format!("removenode {id}")).await,
        )
    } else {
        match remote(cluster, &node.address, "decommission", COMMAND_TIMEOUT).await {
            Ok(report) => ("decommissioned", Ok(report)),
            Err(e) => return Err(remote_failure(id, e)),
        }
    };
    match result {
        Ok(report) => Ok(Response::json(
            200,
            &json!({ "node": id, "action": action, "report": report }),
        )),
        Err(f) => Err(Response::failure(&f)),
    }
}

/// POST /admin/cluster/rebalance: anti-entropy repair on every member that
/// is up, one after the other, so that every node holds every range it
/// replicates in the current ring (after joins, removals, outages).
/// Ownership itself is fixed by the nodes' tokens: nothing moves that the
/// ring does not assign. 200 when every node repaired, 503 otherwise.
async fn rebalance(shard: &Rc<Shard>, cluster: &Rc<Cluster>) -> Response {
    let view = cluster.view();
    let mut results = Vec::new();
    let mut all_ok = true;
    for n in view.ring.nodes() {
        let (ok, report) = if n.status == NodeStatus::Down {
            (false, "skipped: believed down".to_owned())
        } else if n.id == cluster.me {
            match commands::run(shard, cluster, "repair").await {
                Ok(r) => (true, r),
                Err(f) => (false, f.message),
            }
        } else {
            match remote(cluster, &n.address, "repair", COMMAND_TIMEOUT).await {
                Ok(r) => (true, r),
                Err(RemoteError::Refused { message, .. } | RemoteError::Unreachable(message)) => (false, message),
            }
        };
        all_ok &= ok;
        results.push(json!({ "node": n.id.0, "ok": ok, "report": report }));
    }
    let r = Response::json(
        if all_ok { 200 } else { 503 },
        &json!({ "ok": all_ok, "nodes": results }),
    );
    if all_ok {
        r
    } else {
        r.with("Retry-After", "10")
    }
}

/// POST /admin/snapshot: the `snapshot NAME` operator command.
async fn snapshot(shard: &Rc<Shard>, cluster: &Rc<Cluster>, req: &HttpRequest) -> Result<Response, Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
    }
    let b: Body =
        serde_json::from_slice(&req.body).map_err(|e| Response::error(400, format!("malformed JSON body: {e}")))?;
    let valid = !b.name.is_empty()
        && b.name.len() <= 64
        && b.name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && !b.name.starts_with('.');
    if !valid {
        return Err(Response::error(
            400,
            "name: 1 to 64 of A-Z a-z 0-9 - _ . (not starting with a dot)",
        ));
    }
    match commands::run(shard, cluster, &format!("snapshot {}", b.name)).await {
        Ok(report) => Ok(Response::json(200, &json!({ "name": b.name, "report": report }))),
        Err(f) => Err(snapshot_failure(&f)),
    }
}

/// A snapshot's failure; an unknown command (a build without snapshots) is
/// the client's to learn, not a server error.
fn snapshot_failure(f: &Failure) -> Response {
    if f.kind == FailureKind::Invalid {
        return Response::error(400, f.message.clone());
    }
    Response::failure(f)
}

/// GET /metrics: every core's and the node's figures, in the Prometheus
/// text format, or OpenMetrics when the scraper asks for it.
pub(crate) async fn metrics(shard: &Rc<Shard>, req: &HttpRequest) -> Response {
    if let Err(r) = query(&req.query, &[]) {
        return r;
    }
    let openmetrics = req
        .header("accept")
        .is_some_and(|a| String::from_utf8_lossy(a).contains("application/openmetrics-text"));
    let snapshot = crate::metrics::collect(shard).await;
    let (text, ct) = crate::metrics::render(snapshot, openmetrics);
    Response::bytes(200, ct, text.into_bytes())
}
