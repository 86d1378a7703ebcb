//! Node-to-node requests this node answers (docs/protocol.md, "Node-to-node
//! messages"): a replica's MUTATE, READ and PAXOS, GOSSIP for core 0, COORDINATE,
//! ADMIN, and the streaming pair RANGE and MERKLE_TREE ([`super::repair`]).
//!
//! RANGE and MERKLE_TREE may cover any token range: any core answers, asking
//! the cores that hold the range's parts. A RANGE page is clamped to
//! [`repair::MAX_PAGE_ENTRIES`] entries and about [`repair::page_bytes`]
//! bytes whatever the requester asks, so a page always fits a frame.

use std::rc::Rc;

use corekv_engine::Cursor;
use corekv_net::frame::{encode_frame, Flags};
use corekv_net::msg::peer::{PeerOp, PeerOpcode, PeerRequest, PeerResponse, RangeEntry, RestoreMode, MAX_MERKLE_DEPTH};
use corekv_net::msg::{ErrorCode, List, Response};

use crate::replication::merkle::TokenRange;
use crate::runtime::Shard;
use crate::store::{Cmd, Failure, FailureKind, Key, Reply, ScanEntry};
use crate::topology::NodeId;
use crate::versioning::Record;

use super::{repair, ClusterCmd};

/// A node-to-node request, copied out of the receive buffer.
#[derive(Debug)]
pub enum PeerJob {
    /// Merge a record into a replica.
    Mutate {
        /// The key.
        key: Key,
        /// The encoded record.
        record: Vec<u8>,
        /// Sloppy quorum: the node this is held for.
        hint_for: String,
    },
    /// A replica's record.
    Read {
        /// The key.
        key: Key,
        /// Only the digest.
        digest_only: bool,
    },
    /// Gossip.
    Gossip(Vec<u8>),
    /// A write to coordinate (encoded [`super::forward::Forwarded`]).
    Coordinate(Vec<u8>),
    /// An operator command.
    Admin(String),
    /// A page of the records in tokens `(start, end]`.
    Range {
        /// Token after which the range starts.
        start: u64,
        /// Last token of the range.
        end: u64,
        /// The previous page's cursor; empty to begin.
        cursor: Vec<u8>,
        /// Most entries asked for.
        limit: u32,
    },
    /// Merkle leaves over tokens `(start, end]`.
    Merkle {
        /// Token after which the range starts.
        start: u64,
        /// Last token of the range.
        end: u64,
        /// `2^depth` leaves.
        depth: u8,
    },
    /// One Paxos step for a key's acceptor.
    Paxos {
        /// The key.
        key: Key,
        /// The proposer's message (or why it cannot be taken).
        msg: Result<crate::coordinator::PaxosMsg, Failure>,
    },
    /// Records of a backup to write (`corekv restore`).
    Restore {
        /// What the record bytes hold.
        mode: RestoreMode,
        /// The consistency tag (1 ONE, 2 QUORUM, 3 ALL, 5 LOCAL_QUORUM).
        consistency: u8,
        /// `(token, key, record)`.
        entries: Vec<(u64, Vec<u8>, Vec<u8>)>,
    },
    /// A chunk of a snapshot file (`corekv backup`).
    SnapshotRead {
        /// The snapshot.
        name: String,
        /// The file inside it.
        path: String,
        /// Where the chunk starts.
        offset: u64,
        /// Most bytes.
        max_len: u32,
    },
}

impl PeerJob {
    /// Copies what the request carries.
    pub fn from_request(req: &PeerRequest<'_>) -> PeerJob {
        match req.op {
            PeerOp::Mutate {
                token,
                key,
                record,
                hint_for,
            } => PeerJob::Mutate {
                key: Key {
                    token,
                    bytes: key.to_vec(),
                },
                record: record.to_vec(),
                hint_for: hint_for.to_owned(),
            },
            PeerOp::Read {
                token,
                key,
                digest_only,
            } => PeerJob::Read {
                key: Key {
                    token,
                    bytes: key.to_vec(),
                },
                digest_only,
            },
            PeerOp::Gossip { payload } => PeerJob::Gossip(payload.to_vec()),
            PeerOp::Coordinate { payload } => PeerJob::Coordinate(payload.to_vec()),
            PeerOp::Admin { command } => PeerJob::Admin(String::from_utf8_lossy(command).into_owned()),
            PeerOp::Range {
                start,
                end,
                cursor,
                limit,
            } => PeerJob::Range {
                start,
                end,
                cursor: cursor.to_vec(),
                limit,
            },
            PeerOp::MerkleTree { start, end, depth } => PeerJob::Merkle { start, end, depth },
            PeerOp::Paxos {
                token,
                key,
                ballot,
                step,
            } => PeerJob::Paxos {
                key: Key {
                    token,
                    bytes: key.to_vec(),
                },
                msg: super::paxos::msg_of(ballot, step),
            },
            PeerOp::Restore {
                mode,
                consistency,
                entries,
            } => PeerJob::Restore {
                mode,
                consistency,
                entries: entries
                    .iter()
                    .map(|e| (e.token, e.key.to_vec(), e.record.to_vec()))
                    .collect(),
            },
            PeerOp::SnapshotRead {
                name,
                path,
                offset,
                max_len,
            } => PeerJob::SnapshotRead {
                name: String::from_utf8_lossy(name).into_owned(),
                path: String::from_utf8_lossy(path).into_owned(),
                offset,
                max_len,
            },
        }
    }

    fn opcode(&self) -> PeerOpcode {
        match self {
            PeerJob::Mutate { .. } => PeerOpcode::Mutate,
            PeerJob::Read { .. } => PeerOpcode::Read,
            PeerJob::Gossip(_) => PeerOpcode::Gossip,
            PeerJob::Coordinate(_) => PeerOpcode::Coordinate,
            PeerJob::Admin(_) => PeerOpcode::Admin,
            PeerJob::Range { .. } => PeerOpcode::Range,
            PeerJob::Merkle { .. } => PeerOpcode::MerkleTree,
            PeerJob::Paxos { .. } => PeerOpcode::Paxos,
            PeerJob::Restore { .. } => PeerOpcode::Restore,
            PeerJob::SnapshotRead { .. } => PeerOpcode::SnapshotRead,
        }
    }
}

fn encode_error(out: &mut Vec<u8>, op: PeerOpcode, id: u64, f: &Failure) {
    let code = match f.kind {
        FailureKind::TooLarge => ErrorCode::TOO_LARGE,
        FailureKind::Invalid => ErrorCode::MALFORMED,
        FailureKind::Unavailable => ErrorCode::UNAVAILABLE,
        FailureKind::Timeout => ErrorCode::TIMEOUT,
        FailureKind::Overloaded => ErrorCode::OVERLOADED,
        FailureKind::DiskFull => ErrorCode::DISK_FULL,
        FailureKind::Fenced => ErrorCode::FENCED,
        _ => ErrorCode::INTERNAL,
    };
    let r = Response::Error {
        code,
        message: &f.message,
    };
    out.clear();
    let _ = encode_frame(out, op as u8, Flags::RESPONSE.with(Flags::ERROR), id, |b| r.encode(b));
}

/// Serves one node-to-node request and appends its response frame to `out`.
pub async fn handle_peer_request(shard: &Rc<Shard>, job: PeerJob, id: u64, out: &mut Vec<u8>) {
    let op = job.opcode();
    match serve(shard, job).await {
        Ok(resp) => {
            if resp.encode_frame(op, id, out).is_err() {
                encode_error(out, op, id, &Failure::new(FailureKind::TooLarge, "response too large"));
            }
        }
        Err(f) => encode_error(out, op, id, &f),
    }
}

/// The owned form of a response (the record is owned by this task).
enum Answer {
    Ack,
    Record(Option<Vec<u8>>, u64),
    Gossip,
    Coordinated(Vec<u8>),
    Report(String),
    Merkle(Vec<u64>),
    /// A range page's entries (each value an encoded record) and the next
    /// page's cursor (empty: done).
    Page(Vec<ScanEntry>, Vec<u8>),
    /// An acceptor's answer to a message about the ballot (`None`: committed).
    Paxos(crate::coordinator::Ballot, Option<crate::coordinator::PaxosReply>),
    /// Records restored.
    Restored(u64),
    /// A snapshot file's size and a chunk of it.
    Chunk(u64, Vec<u8>),
}

impl Answer {
    fn encode_frame(&self, op: PeerOpcode, id: u64, out: &mut Vec<u8>) -> Result<(), corekv_net::error::FrameError> {
        let r = match self {
            Answer::Ack => PeerResponse::Ack,
            Answer::Record(r, digest) => PeerResponse::Record {
                record: r.as_deref(),
                digest: *digest,
            },
            Answer::Gossip => PeerResponse::Gossip { payload: &[] },
            Answer::Coordinated(p) => PeerResponse::Coordinated { payload: p },
            Answer::Report(t) => PeerResponse::Report { text: t.as_bytes() },
            Answer::Restored(n) => PeerResponse::Restored { records: *n },
            Answer::Chunk(size, data) => PeerResponse::SnapshotChunk {
                file_size: *size,
                data,
                crc32c: crc32c::crc32c(data),
            },
            Answer::Merkle(leaves) => PeerResponse::Merkle {
                leaves: List::Slice(leaves),
            },
            Answer::Paxos(ballot, reply) => {
                let (ballot, answer) = super::paxos::answer_of(*ballot, reply.as_ref());
                return PeerResponse::Paxos { ballot, answer }.encode_frame(op, id, out);
            }
            Answer::Page(entries, cursor) => {
                let items: Vec<RangeEntry<'_>> = entries
                    .iter()
                    .map(|e| RangeEntry {
                        token: e.token,
                        key: &e.key,
                        record: &e.value,
                    })
                    .collect();
                let r = PeerResponse::RangePage {
                    entries: List::Slice(&items),
                    next_cursor: cursor,
                };
                return r.encode_frame(op, id, out);
            }
        };
        r.encode_frame(op, id, out)
    }
}

/// The consistency of a RESTORE's tag.
fn restore_consistency(tag: u8) -> Result<crate::coordinator::Consistency, Failure> {
    use crate::coordinator::Consistency as C;
    Ok(match tag {
        1 => C::One,
        2 => C::Quorum,
        3 => C::All,
        5 => C::LocalQuorum,
        other => {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!("consistency tag {other} in a RESTORE (1 ONE, 2 QUORUM, 3 ALL, 5 LOCAL_QUORUM)"),
            ))
        }
    })
}

/// The requests a node answers in either mode: operator commands,
/// snapshot reads and restores.
async fn serve_any_mode(shard: &Rc<Shard>, job: PeerJob) -> Result<Result<Answer, Failure>, PeerJob> {
    Ok(match job {
        PeerJob::Admin(command) => super::admin::run_node(shard, &command).await.map(Answer::Report),
        PeerJob::SnapshotRead {
            name,
            path,
            offset,
            max_len,
        } => crate::backup::read_chunk(&shard.config.node.data_dir, &name, &path, offset, max_len)
            .await
            .map(|(size, data)| Answer::Chunk(size, data)),
        PeerJob::Restore {
            mode,
            consistency,
            entries,
        } => restore(shard, mode, consistency, entries).await.map(Answer::Restored),
        other => return Err(other),
    })
}

async fn restore(
    shard: &Rc<Shard>,
    mode: RestoreMode,
    consistency: u8,
    entries: Vec<(u64, Vec<u8>, Vec<u8>)>,
) -> Result<u64, Failure> {
    let consistency = restore_consistency(consistency)?;
    match (mode, shard.cluster.clone()) {
        (RestoreMode::Records, Some(cluster)) => {
            let timeout = shard.config.cluster.request_timeout_ms.max(10_000);
            super::restore::restore_records(shard, &cluster, consistency, entries, timeout).await
        }
        (RestoreMode::Plain, None) => {
            if entries.len() > super::restore::MAX_RESTORE_BATCH {
                return Err(Failure::new(
                    FailureKind::TooLarge,
                    format!("{} entries in one RESTORE", entries.len()),
                ));
            }
            let n = entries.len() as u64;
            let writes = entries.into_iter().map(|(token, key, entry)| {
                let core = shard.core_of(token);
                let cmd = Cmd::RestorePlain {
                    key: Key { token, bytes: key },
                    entry,
                };
                async move {
                    match shard.exec(core, cmd).await {
                        Reply::Bool(_) => Ok(()),
                        Reply::Failed(f) => Err(f),
                        other => Err(Failure::new(
                            FailureKind::Internal,
                            format!("unexpected reply {other:?}"),
                        )),
                    }
                }
            });
            for r in futures::future::join_all(writes).await {
                r?;
            }
            Ok(n)
        }
        (RestoreMode::Records, None) => Err(Failure::new(
            FailureKind::Invalid,
            "the backup is of a cluster, but this node runs alone (cluster.seeds is empty): restore it into a cluster",
        )),
        (RestoreMode::Plain, Some(_)) => Err(Failure::new(
            FailureKind::Invalid,
            "the backup is of a single node (plain values, no version records), but this node is in a cluster: \
             restore it into a single node",
        )),
    }
}

async fn serve(shard: &Rc<Shard>, job: PeerJob) -> Result<Answer, Failure> {
    let job = match serve_any_mode(shard, job).await {
        Ok(answer) => return answer,
        Err(job) => job,
    };
    let Some(cluster) = shard.cluster.clone() else {
        return Err(Failure::new(
            FailureKind::Unavailable,
            "this node is not in cluster mode (cluster.seeds is empty)",
        ));
    };
    match job {
        PeerJob::Mutate { key, record, hint_for } => {
            if !hint_for.is_empty() {
                let rec = Record::decode(&record).map_err(|e| Failure::new(FailureKind::Invalid, e.to_string()))?;
                let m = crate::coordinator::Mutation {
                    key: key.bytes,
                    token: key.token,
                    record: rec,
                };
                // Acked only once the hint is synced: this ack may be one
                // of the `W` the client is told about.
                cluster.hints.store(shard, NodeId(hint_for), m).await?;
                return Ok(Answer::Ack);
            }
            let core = cluster.local_core(key.token);
            match shard.exec(core, Cmd::ReplicaMerge { key, record }).await {
                Reply::Ok => Ok(Answer::Ack),
                Reply::Failed(f) => Err(f),
                other => Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                )),
            }
        }
        PeerJob::Read { key, digest_only } => {
            let core = cluster.local_core(key.token);
            match shard.exec(core, Cmd::ReplicaRead(key)).await {
                Reply::Record(r) => {
                    let digest = match &r {
                        Some(b) => Record::decode(b).map(|r| r.digest()).unwrap_or(0),
                        None => 0,
                    };
                    Ok(Answer::Record(if digest_only { None } else { r }, digest))
                }
                Reply::Failed(f) => Err(f),
                other => Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                )),
            }
        }
        PeerJob::Gossip(payload) => match shard.exec(0, Cmd::Cluster(ClusterCmd::Gossip(payload))).await {
            Reply::Ok => Ok(Answer::Gossip),
            Reply::Failed(f) => Err(f),
            other => Err(Failure::new(
                FailureKind::Internal,
                format!("unexpected reply {other:?}"),
            )),
        },
        PeerJob::Coordinate(payload) => {
            let w = super::forward::Forwarded::decode(&payload)
                .map_err(|e| Failure::new(FailureKind::Invalid, e.to_string()))?;
            let core = cluster.local_core(w.key.token);
            let cmd = ClusterCmd::Write {
                key: w.key,
                value: w.value,
                expiry_ms: w.expiry_ms,
                context: w.context,
                consistency: w.consistency,
                timeout_ms: w.timeout_ms,
                forwarded: true,
                sloppy: w.sloppy,
            };
            let outcome = match shard.exec(core, Cmd::Cluster(cmd)).await {
                Reply::Ok => Ok(()),
                Reply::Failed(f) => Err(f),
                other => Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                )),
            };
            let mut b = Vec::new();
            super::forward::encode_outcome(&outcome, &mut b);
            Ok(Answer::Coordinated(b))
        }
        PeerJob::Admin(_) | PeerJob::SnapshotRead { .. } | PeerJob::Restore { .. } => Err(Failure::new(
            FailureKind::Internal,
            "an operator request reached the cluster-only path",
        )),
        PeerJob::Range {
            start,
            end,
            cursor,
            limit,
        } => {
            let after = if cursor.is_empty() {
                None
            } else {
                Some(Cursor::decode(&cursor).map_err(|e| Failure::new(FailureKind::Invalid, e.to_string()))?)
            };
            // 0 asks for the most; more than the most is clamped.
            let limit = match usize::try_from(limit) {
                Ok(0) | Err(_) => repair::MAX_PAGE_ENTRIES,
                Ok(n) => n.min(repair::MAX_PAGE_ENTRIES),
            };
            let range = TokenRange { start, end };
            let page =
                repair::scan_local(shard, &cluster, range, after, limit, repair::page_bytes(&shard.config)).await?;
            Ok(Answer::Page(
                page.entries,
                page.cursor.map(|c| c.encode()).unwrap_or_default(),
            ))
        }
        PeerJob::Merkle { start, end, depth } => {
            // The decoder refuses deeper trees; checked again because a
            // deeper one would be 2^depth leaves of memory.
            if depth > MAX_MERKLE_DEPTH {
                return Err(Failure::new(
                    FailureKind::Invalid,
                    format!("Merkle depth {depth} over the most, {MAX_MERKLE_DEPTH}"),
                ));
            }
            let range = TokenRange { start, end };
            let (leaves, _) = repair::local_leaves(shard, &cluster, range, u32::from(depth)).await?;
            Ok(Answer::Merkle(leaves))
        }
        PeerJob::Paxos { key, msg } => {
            let msg = msg?;
            let ballot = super::paxos::ballot_of(&msg);
            let core = cluster.local_core(key.token);
            match shard.exec(core, Cmd::Cluster(ClusterCmd::Paxos { key, msg })).await {
                Reply::Paxos(r) => Ok(Answer::Paxos(ballot, r)),
                Reply::Failed(f) => Err(f),
                other => Err(Failure::new(
                    FailureKind::Internal,
                    format!("unexpected reply {other:?}"),
                )),
            }
        }
    }
}
