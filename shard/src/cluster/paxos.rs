//! Cluster-wide compare-and-set (CAS_VALUE) and serial reads (SERIAL_GET):
//! the [`CasOp`] proposer and [`Acceptor`] state machines of
//! `coordinator::paxos` driven by the real server.
//!
//! - **Acceptor state** lives in an engine of its own per core
//!   (`<data_dir>/paxos-<core>`, key = the user key, value = the encoded
//!   [`Acceptor`]), so scans, streaming and Merkle trees never see it. A
//!   prepare or propose that changes the state is written and synced (the
//!   engine's WAL group commit) before the reply leaves, under the key's lock
//!   so two rounds never interleave their read-modify-write.
//! - **The register and the data.** The register's value is the Paxos
//!   accepted value. When a CAS applies, the coordinator also writes the new
//!   value to the key's data replicas (a QUORUM read for the causal context,
//!   then a QUORUM write superseding it), so a plain GET at QUORUM sees it
//!   after the CAS answered.
//! - **Before a key's first CAS**, an acceptor without state reports the
//!   replica's newest live data value as accepted at the pseudo-ballot
//!   `(0, its HLC time)`: below every real ballot, and ordered by write time
//!   among replicas, so the first CAS compares against the newest plainly
//!   written value a majority holds. After that the register ignores plain
//!   writes: a key used with CAS must be written only through CAS (the rule
//!   Cassandra gives for lightweight transactions).
//!
//! Any core of any node can coordinate; each message goes to the core of the
//! replica that owns the key, over the node-to-node PAXOS opcode.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::Engine;
use corekv_net::msg::peer::{Ballot as WireBallot, PaxosAnswer, PaxosStep, PeerOp, PeerRequest};
use futures::channel::{mpsc, oneshot};

use super::{
    close_side_engine, coordinate_read, coordinate_write, forward, next_before, spawn_detached, Cluster, ClusterCmd,
    SideEngine,
};
use crate::config::Config;
use crate::coordinator::{
    Acceptor, Ballot, BallotClock, CasCommand, CasOp, CasOutcome, CasOutput, CasRequest, PaxosMsg, PaxosReply,
    MAX_CAS_VALUE,
};
use crate::coordinator::{Consistency, ReplicaPlan};
use crate::error::Result;
use crate::runtime::Shard;
use crate::server::peer::{OwnedPaxosAnswer, PeerAnswer};
use crate::store::{now_ms, Cmd, Failure, FailureKind, Key, KeyLocks, Reply};
use crate::topology::NodeId;
use crate::versioning::{Record, Value};

/// How long a prepare round waits for a majority before it retries with a
/// higher ballot (a replica killed a moment ago is not convicted yet).
const ROUND_TIMEOUT_MS: u64 = 300;

/// How often the proposer's driver wakes without an answer (backoffs end).
const TICK: Duration = Duration::from_millis(5);

/// One core's acceptor state.
#[derive(Debug)]
pub struct PaxosStore {
    engine: Engine,
    locks: Rc<KeyLocks>,
}

impl PaxosStore {
    /// Opens core `core`'s acceptor state (`<data_dir>/paxos-<core>`).
    pub async fn open(config: &Config, core: usize) -> Result<PaxosStore> {
        // One small entry per CAS key: small budgets.
        let engine = SideEngine {
            name: "paxos",
            what: "the Paxos state",
            budget: 8 << 20,
            cache: 4 << 20,
            max_key: usize::try_from(config.limits.max_key_bytes).unwrap_or(usize::MAX),
            max_value: MAX_CAS_VALUE + 64,
        }
        .open(config, core)
        .await?;
        Ok(PaxosStore {
            engine,
            locks: Rc::new(KeyLocks::default()),
        })
    }

    /// Closes the engine (syncing its WAL).
    pub async fn close(&self) -> Result<()> {
        close_side_engine(&self.engine, "the Paxos state").await
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::Internal, format!("{what}: {e}"))
}

/// The replica's side of one Paxos message for `key`, on the key's owning
/// core: the acceptor's answer once its new state is durable (`None` for a
/// commit).
pub(crate) async fn accept(
    shard: &Rc<Shard>,
    cluster: &Cluster,
    key: &Key,
    msg: PaxosMsg,
) -> std::result::Result<Option<PaxosReply>, Failure> {
    let store = &cluster.paxos;
    let _g = store.locks.lock(&key.bytes).await;
    let mut acc = match store.engine.get(key.token, &key.bytes).await {
        Ok(Some(r)) => Acceptor::decode(&r.value).map_err(|e| internal("stored Paxos state unreadable", e))?,
        Ok(None) => Acceptor::default(),
        Err(e) => return Err(internal("reading the Paxos state", e)),
    };
    let before = acc.clone();
    let reply = acc.handle(msg);
    if acc != before {
        let mut b = Vec::new();
        acc.encode(&mut b);
        store
            .engine
            .put(key.token, &key.bytes, &b, &[], 0)
            .await
            .map_err(|e| Failure::new(FailureKind::Unavailable, format!("storing the Paxos state: {e}")))?;
    }
    Ok(match reply {
        Some(PaxosReply::Promise { ballot, accepted: None }) => Some(PaxosReply::Promise {
            ballot,
            accepted: data_seed(shard, key).await?,
        }),
        other => other,
    })
}

/// The register's value before the key's first CAS: the newest live value
/// of this replica's data record, at the pseudo-ballot `(0, HLC time)`.
async fn data_seed(shard: &Rc<Shard>, key: &Key) -> std::result::Result<Option<(Ballot, Option<Vec<u8>>)>, Failure> {
    let Some(record) = shard.store.read_record(key).await? else {
        return Ok(None);
    };
    let now = now_ms();
    let newest = match &record {
        Record::Causal(d) => d
            .siblings()
            .filter(|(_, v)| v.is_live_at(now))
            .max_by_key(|(dot, _)| dot.counter)
            .and_then(|(dot, v)| match v {
                Value::Put { bytes, .. } => Some((dot.counter, bytes.clone())),
                _ => None,
            }),
        Record::Lww(r) => match &r.value {
            Value::Put { bytes, .. } if r.value.is_live_at(now) => Some((r.ts.as_u64(), bytes.clone())),
            _ => None,
        },
    };
    Ok(newest.map(|(ts, v)| (Ballot { counter: 0, node: ts }, Some(v))))
}

fn to_wire(b: Ballot) -> WireBallot {
    WireBallot {
        counter: b.counter,
        node: b.node,
    }
}

fn from_wire(b: WireBallot) -> Ballot {
    Ballot {
        counter: b.counter,
        node: b.node,
    }
}

/// The node-to-node form of an acceptor's answer to a message about `ballot`.
pub(crate) fn answer_of(ballot: Ballot, reply: Option<&PaxosReply>) -> (WireBallot, PaxosAnswer<'_>) {
    match reply {
        None => (to_wire(ballot), PaxosAnswer::Committed),
        Some(PaxosReply::Promise { ballot, accepted }) => (
            to_wire(*ballot),
            PaxosAnswer::Promise {
                accepted: accepted.as_ref().map(|(b, v)| (to_wire(*b), v.as_deref())),
            },
        ),
        Some(PaxosReply::Accepted { ballot }) => (to_wire(*ballot), PaxosAnswer::Accepted),
        Some(PaxosReply::Nack { ballot, promised }) => (
            to_wire(*ballot),
            PaxosAnswer::Nack {
                promised: to_wire(*promised),
            },
        ),
    }
}

/// The message a node-to-node PAXOS request carries.
pub(crate) fn msg_of(ballot: WireBallot, step: PaxosStep<'_>) -> std::result::Result<PaxosMsg, Failure> {
    let value = |v: Option<&[u8]>| -> std::result::Result<Option<Vec<u8>>, Failure> {
        match v {
            Some(b) if b.len() > MAX_CAS_VALUE => Err(Failure::new(
                FailureKind::TooLarge,
                format!("CAS value of {} bytes over the most, {MAX_CAS_VALUE}", b.len()),
            )),
            other => Ok(other.map(<[u8]>::to_vec)),
        }
    };
    let ballot = from_wire(ballot);
    Ok(match step {
        PaxosStep::Prepare => PaxosMsg::Prepare { ballot },
        PaxosStep::Propose(v) => PaxosMsg::Propose {
            ballot,
            value: value(v)?,
        },
        PaxosStep::Commit(v) => PaxosMsg::Commit {
            ballot,
            value: value(v)?,
        },
    })
}

/// The ballot a message is about.
pub(crate) fn ballot_of(msg: &PaxosMsg) -> Ballot {
    match msg {
        PaxosMsg::Prepare { ballot } | PaxosMsg::Propose { ballot, .. } | PaxosMsg::Commit { ballot, .. } => *ballot,
    }
}

/// Sends one message to replica `to` (itself: the owning core here) and
/// returns its answer, or `None` if it did not answer in time.
async fn send(
    shard: &Rc<Shard>,
    cluster: &Cluster,
    to: &NodeId,
    key: &Key,
    msg: PaxosMsg,
    deadline: u64,
) -> Option<PaxosReply> {
    if *to == cluster.me {
        let core = cluster.local_core(key.token);
        let cmd = Cmd::Cluster(ClusterCmd::Paxos { key: key.clone(), msg });
        return match shard.exec(core, cmd).await {
            Reply::Paxos(r) => r,
            _ => None,
        };
    }
    let view = cluster.view();
    let addr = cluster.address_for(&view, to, key.token)?;
    let ballot = to_wire(ballot_of(&msg));
    let step = match &msg {
        PaxosMsg::Prepare { .. } => PaxosStep::Prepare,
        PaxosMsg::Propose { value, .. } => PaxosStep::Propose(value.as_deref()),
        PaxosMsg::Commit { value, .. } => PaxosStep::Commit(value.as_deref()),
    };
    let req = PeerRequest {
        from: &cluster.me.0,
        op: PeerOp::Paxos {
            token: key.token,
            key: &key.bytes,
            ballot,
            step,
        },
    };
    let left = Duration::from_millis(deadline.saturating_sub(now_ms()).max(1));
    let Ok(PeerAnswer::Paxos { ballot, answer }) = cluster.pool.call(&addr, &req, left).await else {
        return None;
    };
    let ballot = from_wire(ballot);
    match answer {
        OwnedPaxosAnswer::Promise { accepted } => Some(PaxosReply::Promise {
            ballot,
            accepted: accepted.map(|(b, v)| (from_wire(b), v)),
        }),
        OwnedPaxosAnswer::Accepted => Some(PaxosReply::Accepted { ballot }),
        OwnedPaxosAnswer::Nack { promised } => Some(PaxosReply::Nack {
            ballot,
            promised: from_wire(promised),
        }),
        OwnedPaxosAnswer::Committed => None,
    }
}

/// Coordinates one CAS or serial read of `key` (on any core of any node).
/// An error other than UNAVAILABLE before the first round means the outcome
/// is unknown, as for any write that timed out.
pub(crate) async fn coordinate_cas(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    key: Key,
    command: CasCommand,
    timeout_ms: u64,
) -> std::result::Result<CasOutcome, Failure> {
    let (reply_tx, reply_rx) = oneshot::channel();
    // A task of its own, so that a client hanging up cannot stop the round
    // between its Paxos steps and the copy to the data replicas.
    let (s, c) = (shard.clone(), cluster.clone());
    glommio::spawn_local_into(
        async move {
            let r = run_cas(&s, &c, key, command, timeout_ms).await;
            let _ = reply_tx.send(r);
        },
        shard.fg,
    )
    .map_err(|e| Failure::new(FailureKind::Internal, format!("cannot spawn a CAS: {e}")))?
    .detach();
    reply_rx.await.unwrap_or_else(|_| {
        Err(Failure::new(
            FailureKind::Internal,
            "the CAS's driver ended without an answer",
        ))
    })
}

async fn run_cas(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    key: Key,
    command: CasCommand,
    timeout_ms: u64,
) -> std::result::Result<CasOutcome, Failure> {
    let view = cluster.view();
    let (deadline, _) = cluster.deadline(timeout_ms);
    let plan = ReplicaPlan::new(&view.ring, None, key.token, cluster.rf, |_| false);
    let writes = command.writes();
    let req = CasRequest {
        id: cluster.fresh_id(),
        key: key.bytes.clone(),
        replicas: plan.replicas,
        command,
        round_timeout: ROUND_TIMEOUT_MS,
        deadline,
    };
    let (mut op, mut pending) = CasOp::start(req, now_ms(), &mut cluster.ballots.borrow_mut());
    let (tx, mut answers) = mpsc::unbounded::<(NodeId, PaxosReply)>();
    let mut result = None;
    loop {
        for o in std::mem::take(&mut pending) {
            match o {
                CasOutput::Send { to, msg } => {
                    let (s, c, tx, k) = (shard.clone(), cluster.clone(), tx.clone(), key.clone());
                    spawn_detached(shard, async move {
                        if let Some(r) = send(&s, &c, &to, &k, msg, deadline).await {
                            let _ = tx.unbounded_send((to, r));
                        }
                    });
                }
                CasOutput::Reply(r) => result = Some(r),
            }
        }
        if op.is_done() {
            break;
        }
        let wake = deadline.min(now_ms() + u64::try_from(TICK.as_millis()).unwrap_or(5));
        pending = match next_before(&mut answers, wake).await {
            Some((from, r)) => op.on_reply(&from, r, now_ms()),
            None => op.on_tick(now_ms(), &mut cluster.ballots.borrow_mut()),
        };
    }
    let outcome = match result {
        Some(Ok(o)) => o,
        Some(Err(e)) => return Err(super::failure(&e)),
        None => return Err(Failure::new(FailureKind::Internal, "the CAS ended without an answer")),
    };
    if writes && outcome.applied {
        copy_to_data(shard, cluster, key, outcome.value.clone(), deadline).await?;
    }
    Ok(outcome)
}

/// Writes a chosen value to the key's data replicas at QUORUM, superseding
/// what a QUORUM read of them sees (so a plain GET at QUORUM returns it).
async fn copy_to_data(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    key: Key,
    value: Option<Vec<u8>>,
    deadline: u64,
) -> std::result::Result<(), Failure> {
    let left = || deadline.saturating_sub(now_ms()).max(1);
    let unknown = |f: Failure| {
        Failure::new(
            FailureKind::Unavailable,
            format!(
                "the CAS was chosen, but copying its value to the key's data replicas failed ({}); \
                 a serial read sees it, a plain read may not yet",
                f.message
            ),
        )
    };
    let seen = coordinate_read(shard, cluster, key.clone(), Consistency::Quorum, left())
        .await
        .map_err(unknown)?;
    let context = seen.map(|v| v.context).filter(|c| !c.is_empty());
    let w = forward::Forwarded {
        key,
        value,
        expiry_ms: 0,
        context,
        consistency: Consistency::Quorum,
        timeout_ms: left(),
        // The copy counts only on the key's own replicas.
        sloppy: false,
    };
    coordinate_write(shard, cluster, w, false).await.map_err(unknown)
}

/// A fresh ballot clock for core `core` of this process: its tag mixes a
/// random number drawn at start, so no two processes share one.
pub(crate) fn ballot_clock(me: &NodeId, core: usize) -> RefCell<BallotClock> {
    let seed = rand::random::<u64>();
    let tag =
        xxhash_rust::xxh3::xxh3_64(&[me.0.as_bytes(), &seed.to_le_bytes(), &(core as u64).to_le_bytes()].concat());
    RefCell::new(BallotClock::new(tag))
}
