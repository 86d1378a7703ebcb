//! Node-to-node messages: replication (0x40-0x7F), streaming (0x80-0xBF) and
//! gossip (0xC0-0xFF) opcodes, on the same frame header as client traffic.
//! The layouts are in `docs/protocol.md` ("Node-to-node messages").
//!
//! ## Format
//!
//! Every request body starts with `from bytes` (the sender's node id, at most
//! `max_key` bytes), then the operation's fields. A response carries the
//! request's opcode with the response flag set; a failed request is answered
//! with the client range's ERROR body (`ErrorCode`, message) and the error
//! flag. Records, Paxos values and gossip payloads are opaque bytes here: the
//! node (`corekv-shard`) owns their formats, and decodes them with its own
//! bounded decoders. Decoding borrows from the frame body, like the client
//! messages.

use super::codec::{put_bytes, put_opt, put_varint, Item, List, Reader};
use super::Limits;
use crate::error::FrameError;
use crate::frame::{encode_frame, Flags, Frame};

/// Node-to-node opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PeerOpcode {
    /// Merge a key's record into the replica; answered once it is durable.
    Mutate = 0x40,
    /// Send the replica's record of a key, or only its digest.
    Read = 0x41,
    /// One Paxos step of a cluster-wide compare-and-set.
    Paxos = 0x42,
    /// Coordinate a client write on a replica (sent by a node that is not one).
    Coordinate = 0x43,
    /// An operator command for the receiving node (`corekv repair`, ...).
    Admin = 0x44,
    /// Records from a backup for the receiving node to write into the
    /// cluster through the replication path (`corekv restore`).
    Restore = 0x45,
    /// A Merkle tree's leaves over a token range (anti-entropy).
    MerkleTree = 0x80,
    /// A page of the records in a token range (repair, join, decommission).
    Range = 0x81,
    /// A chunk of a file of one of the node's snapshots (`corekv backup`).
    SnapshotRead = 0x82,
    /// A membership gossip message.
    Gossip = 0xC0,
}

impl PeerOpcode {
    /// The opcode for a byte, if it names a node-to-node message.
    pub fn from_u8(b: u8) -> Option<PeerOpcode> {
        Some(match b {
            0x40 => PeerOpcode::Mutate,
            0x41 => PeerOpcode::Read,
            0x42 => PeerOpcode::Paxos,
            0x43 => PeerOpcode::Coordinate,
            0x44 => PeerOpcode::Admin,
            0x45 => PeerOpcode::Restore,
            0x80 => PeerOpcode::MerkleTree,
            0x81 => PeerOpcode::Range,
            0x82 => PeerOpcode::SnapshotRead,
            0xC0 => PeerOpcode::Gossip,
            _ => return None,
        })
    }
}

/// A Paxos ballot: a time-derived counter and the proposer's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ballot {
    /// Counter.
    pub counter: u64,
    /// Proposer tag (unique per node and process start).
    pub node: u64,
}

impl Ballot {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(&self.node.to_le_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Ballot, FrameError> {
        Ok(Ballot {
            counter: r.u64()?,
            node: r.u64()?,
        })
    }
}

/// A proposer's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaxosStep<'a> {
    /// Promise to ignore lower ballots; say what you accepted.
    Prepare,
    /// Accept `value` (None: the register is empty) at the ballot.
    Propose(Option<&'a [u8]>),
    /// `value` was chosen at the ballot.
    Commit(Option<&'a [u8]>),
}

/// An acceptor's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaxosAnswer<'a> {
    /// Promised; with the highest-ballot proposal accepted before, if any.
    Promise {
        /// What was accepted before: its ballot and value.
        accepted: Option<(Ballot, Option<&'a [u8]>)>,
    },
    /// The proposal was accepted.
    Accepted,
    /// Refused: a higher ballot was promised.
    Nack {
        /// The ballot promised instead.
        promised: Ballot,
    },
    /// The commit was applied.
    Committed,
}

/// A node-to-node request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRequest<'a> {
    /// The sender's node id.
    pub from: &'a str,
    /// The operation.
    pub op: PeerOp<'a>,
}

/// A node-to-node operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOp<'a> {
    /// Merge `record` into the key. Answer: [`PeerResponse::Ack`].
    Mutate {
        /// The key's token.
        token: u64,
        /// The key.
        key: &'a [u8],
        /// The record to merge (the node's record format).
        record: &'a [u8],
        /// The node this write is held for (sloppy quorum); empty when the
        /// receiver is one of the key's replicas.
        hint_for: &'a str,
    },
    /// The replica's record of a key. Answer: [`PeerResponse::Record`].
    Read {
        /// The key's token.
        token: u64,
        /// The key.
        key: &'a [u8],
        /// Only the digest, not the record.
        digest_only: bool,
    },
    /// A Paxos step for a key. Answer: [`PeerResponse::Paxos`].
    Paxos {
        /// The key's token.
        token: u64,
        /// The key.
        key: &'a [u8],
        /// The ballot.
        ballot: Ballot,
        /// The step.
        step: PaxosStep<'a>,
    },
    /// A Merkle tree over tokens `(start, end]`. Answer: [`PeerResponse::Merkle`].
    MerkleTree {
        /// Token after which the range starts.
        start: u64,
        /// Last token of the range.
        end: u64,
        /// Tree depth: `2^depth` leaves (at most 20).
        depth: u8,
    },
    /// A page of records in tokens `(start, end]`. Answer: [`PeerResponse::RangePage`].
    Range {
        /// Token after which the range starts.
        start: u64,
        /// Last token of the range.
        end: u64,
        /// Empty to begin, else the previous page's `next_cursor`.
        cursor: &'a [u8],
        /// Most entries in the page.
        limit: u32,
    },
    /// A client write for a replica to coordinate (the node's format). Answer:
    /// [`PeerResponse::Coordinated`].
    Coordinate {
        /// The encoded request.
        payload: &'a [u8],
    },
    /// An operator command (UTF-8 text such as `repair` or `decommission`).
    /// Answer: [`PeerResponse::Report`].
    Admin {
        /// The command line.
        command: &'a [u8],
    },
    /// A gossip message (the membership module's format). Answer: [`PeerResponse::Gossip`].
    Gossip {
        /// The encoded message.
        payload: &'a [u8],
    },
    /// Records of a backup to write into the cluster (`corekv restore`).
    /// Answer: [`PeerResponse::Restored`] once every one is written at
    /// `consistency`.
    Restore {
        /// What the entries' `record` bytes hold ([`RestoreMode`]).
        mode: RestoreMode,
        /// The consistency level byte of the client protocol (`Consistency`
        /// in `msg`): how many replicas must hold each record.
        consistency: u8,
        /// The records, in any order.
        entries: List<'a, RangeEntry<'a>>,
    },
    /// Up to `max_len` bytes of a snapshot file from `offset`. Answer:
    /// [`PeerResponse::SnapshotChunk`].
    SnapshotRead {
        /// The snapshot's name.
        name: &'a [u8],
        /// The file's path inside the snapshot (`core-0/000012.sst`,
        /// `SNAPSHOT.toml`).
        path: &'a [u8],
        /// Where the chunk starts.
        offset: u64,
        /// Most bytes wanted (the node sends at most [`MAX_SNAPSHOT_CHUNK`]).
        max_len: u32,
    },
}

/// What the `record` bytes of a RESTORE entry hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestoreMode {
    /// Cluster records (docs/versions.md), merged into the key's replicas.
    Records = 1,
    /// Single-node entries: `kind u8 (1 put, 2 tombstone) | expiry_ms u64 |
    /// meta bytes | value bytes` (docs/backup.md).
    Plain = 2,
}

/// The largest chunk of a snapshot file a node sends in one answer.
pub const MAX_SNAPSHOT_CHUNK: u32 = 512 << 10;

/// Longest snapshot name or file path accepted in a SNAPSHOT_READ.
pub const MAX_SNAPSHOT_PATH: u32 = 256;

/// Most Merkle depth accepted: a million leaves, 8 MiB of hashes.
pub const MAX_MERKLE_DEPTH: u8 = 20;

impl<'a> PeerOp<'a> {
    /// The opcode of this operation.
    pub fn opcode(&self) -> PeerOpcode {
        match self {
            PeerOp::Mutate { .. } => PeerOpcode::Mutate,
            PeerOp::Read { .. } => PeerOpcode::Read,
            PeerOp::Paxos { .. } => PeerOpcode::Paxos,
            PeerOp::MerkleTree { .. } => PeerOpcode::MerkleTree,
            PeerOp::Range { .. } => PeerOpcode::Range,
            PeerOp::Coordinate { .. } => PeerOpcode::Coordinate,
            PeerOp::Admin { .. } => PeerOpcode::Admin,
            PeerOp::Gossip { .. } => PeerOpcode::Gossip,
            PeerOp::Restore { .. } => PeerOpcode::Restore,
            PeerOp::SnapshotRead { .. } => PeerOpcode::SnapshotRead,
        }
    }
}

fn read_opt<'a>(r: &mut Reader<'a>, what: &'static str, max: u32) -> Result<Option<&'a [u8]>, FrameError> {
    r.opt_bytes(what, max)
}

/// Largest record or payload: a value plus its version metadata.
fn max_record(l: &Limits) -> u32 {
    l.max_value.saturating_add(l.max_key).saturating_add(64 << 10)
}

impl<'a> PeerRequest<'a> {
    /// Appends the body (no header).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.from.as_bytes());
        match &self.op {
            PeerOp::Mutate {
                token,
                key,
                record,
                hint_for,
            } => {
                out.extend_from_slice(&token.to_le_bytes());
                put_bytes(out, key);
                put_bytes(out, record);
                put_bytes(out, hint_for.as_bytes());
            }
            PeerOp::Read {
                token,
                key,
                digest_only,
            } => {
                out.extend_from_slice(&token.to_le_bytes());
                put_bytes(out, key);
                out.push(u8::from(*digest_only));
            }
            PeerOp::Paxos {
                token,
                key,
                ballot,
                step,
            } => {
                out.extend_from_slice(&token.to_le_bytes());
                put_bytes(out, key);
                ballot.write(out);
                match step {
                    PaxosStep::Prepare => out.push(1),
                    PaxosStep::Propose(v) => {
                        out.push(2);
                        put_opt(out, *v);
                    }
                    PaxosStep::Commit(v) => {
                        out.push(3);
                        put_opt(out, *v);
                    }
                }
            }
            PeerOp::MerkleTree { start, end, depth } => {
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
                out.push(*depth);
            }
            PeerOp::Range {
                start,
                end,
                cursor,
                limit,
            } => {
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
                put_bytes(out, cursor);
                put_varint(out, (*limit).into());
            }
            PeerOp::Gossip { payload } | PeerOp::Coordinate { payload } | PeerOp::Admin { command: payload } => {
                put_bytes(out, payload)
            }
            PeerOp::Restore {
                mode,
                consistency,
                entries,
            } => {
                out.push(*mode as u8);
                out.push(*consistency);
                entries.write(out);
            }
            PeerOp::SnapshotRead {
                name,
                path,
                offset,
                max_len,
            } => {
                put_bytes(out, name);
                put_bytes(out, path);
                out.extend_from_slice(&offset.to_le_bytes());
                put_varint(out, (*max_len).into());
            }
        }
    }

    /// Appends a whole request frame.
    pub fn encode_frame(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, self.op.opcode() as u8, Flags::default(), request_id, |b| {
            self.encode(b)
        })
    }

    /// Decodes a request frame (`WrongDirection` on a response).
    pub fn decode(frame: &Frame<'a>, limits: &Limits) -> Result<PeerRequest<'a>, FrameError> {
        let opcode = frame.header.opcode;
        if frame.header.flags.is_response() || frame.header.flags.is_error() {
            return Err(FrameError::WrongDirection {
                opcode,
                expected_response: false,
            });
        }
        PeerRequest::decode_body(opcode, frame.body, limits)
    }

    /// Decodes a request body for `opcode`.
    pub fn decode_body(opcode: u8, body: &'a [u8], limits: &Limits) -> Result<PeerRequest<'a>, FrameError> {
        let op = PeerOpcode::from_u8(opcode).ok_or(FrameError::UnknownOpcode { opcode })?;
        let mut r = Reader::new(body, opcode, *limits);
        let (mk, mr) = (limits.max_key, max_record(limits));
        let from = r.str("node id length", mk)?;
        let op = match op {
            PeerOpcode::Mutate => PeerOp::Mutate {
                token: r.u64()?,
                key: r.bytes("key length", mk)?,
                record: r.bytes("record length", mr)?,
                hint_for: r.str("hint target length", mk)?,
            },
            PeerOpcode::Read => PeerOp::Read {
                token: r.u64()?,
                key: r.bytes("key length", mk)?,
                digest_only: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.malformed("bad digest flag")),
                },
            },
            PeerOpcode::Paxos => {
                let token = r.u64()?;
                let key = r.bytes("key length", mk)?;
                let ballot = Ballot::read(&mut r)?;
                let step = match r.u8()? {
                    1 => PaxosStep::Prepare,
                    2 => PaxosStep::Propose(read_opt(&mut r, "value length", mr)?),
                    3 => PaxosStep::Commit(read_opt(&mut r, "value length", mr)?),
                    _ => return Err(r.malformed("unknown Paxos step")),
                };
                PeerOp::Paxos {
                    token,
                    key,
                    ballot,
                    step,
                }
            }
            PeerOpcode::MerkleTree => {
                let start = r.u64()?;
                let end = r.u64()?;
                let depth = r.u8()?;
                if depth > MAX_MERKLE_DEPTH {
                    return Err(r.malformed("Merkle depth above 20"));
                }
                PeerOp::MerkleTree { start, end, depth }
            }
            PeerOpcode::Range => PeerOp::Range {
                start: r.u64()?,
                end: r.u64()?,
                cursor: r.bytes("cursor length", mk.saturating_add(16))?,
                limit: r.varint_u32("limit")?,
            },
            PeerOpcode::Gossip => PeerOp::Gossip {
                payload: r.bytes("gossip length", mr)?,
            },
            PeerOpcode::Coordinate => PeerOp::Coordinate {
                payload: r.bytes("request length", mr)?,
            },
            PeerOpcode::Admin => PeerOp::Admin {
                command: r.bytes("command length", mk)?,
            },
            PeerOpcode::Restore => PeerOp::Restore {
                mode: match r.u8()? {
                    1 => RestoreMode::Records,
                    2 => RestoreMode::Plain,
                    _ => return Err(r.malformed("unknown restore mode")),
                },
                consistency: r.u8()?,
                entries: List::read(&mut r, "entry count")?,
            },
            PeerOpcode::SnapshotRead => PeerOp::SnapshotRead {
                name: r.bytes("snapshot name length", MAX_SNAPSHOT_PATH)?,
                path: r.bytes("snapshot path length", MAX_SNAPSHOT_PATH)?,
                offset: r.u64()?,
                max_len: r.varint_u32("chunk length")?,
            },
        };
        r.finish()?;
        Ok(PeerRequest { from, op })
    }
}

/// One record of a range page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RangeEntry<'a> {
    /// Token.
    pub token: u64,
    /// Key.
    pub key: &'a [u8],
    /// The record (the node's format).
    pub record: &'a [u8],
}

impl<'a> Item<'a> for RangeEntry<'a> {
    const MIN_LEN: usize = 10;
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let l = *r.limits();
        Ok(RangeEntry {
            token: r.u64()?,
            key: r.bytes("key length", l.max_key)?,
            record: r.bytes("record length", max_record(&l))?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.token.to_le_bytes());
        put_bytes(out, self.key);
        put_bytes(out, self.record);
    }
}

/// A node-to-node response; its opcode is the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerResponse<'a> {
    /// A mutation is durable on the replica.
    Ack,
    /// A replica's record of a key (`None`: it has none) and its digest
    /// (0 when it has none).
    Record {
        /// The record, unless absent or only the digest was asked for.
        record: Option<&'a [u8]>,
        /// The record's digest.
        digest: u64,
    },
    /// An acceptor's answer about `ballot`.
    Paxos {
        /// The ballot the answer is about.
        ballot: Ballot,
        /// The answer.
        answer: PaxosAnswer<'a>,
    },
    /// A Merkle tree's leaf hashes, in token order.
    Merkle {
        /// `2^depth` hashes.
        leaves: List<'a, u64>,
    },
    /// A page of records and the cursor of the next (empty: done).
    RangePage {
        /// Records in (token, key) order.
        entries: List<'a, RangeEntry<'a>>,
        /// Where the next page starts; empty when the range is done.
        next_cursor: &'a [u8],
    },
    /// A coordinated write's outcome (the node's format).
    Coordinated {
        /// The encoded outcome.
        payload: &'a [u8],
    },
    /// An operator command's report (UTF-8 text for a human).
    Report {
        /// The text.
        text: &'a [u8],
    },
    /// The receiver's gossip answer.
    Gossip {
        /// The encoded message.
        payload: &'a [u8],
    },
    /// Every record of a RESTORE is written at its level.
    Restored {
        /// Records written.
        records: u64,
    },
    /// A chunk of a snapshot file.
    SnapshotChunk {
        /// The whole file's size.
        file_size: u64,
        /// The bytes from the request's offset (empty at or past the end).
        data: &'a [u8],
        /// CRC32C of `data`, computed by the sender as it read them.
        crc32c: u32,
    },
}

impl<'a> PeerResponse<'a> {
    /// Whether this response shape answers `op`.
    pub fn answers(&self, op: PeerOpcode) -> bool {
        matches!(
            (self, op),
            (PeerResponse::Ack, PeerOpcode::Mutate)
                | (PeerResponse::Record { .. }, PeerOpcode::Read)
                | (PeerResponse::Paxos { .. }, PeerOpcode::Paxos)
                | (PeerResponse::Merkle { .. }, PeerOpcode::MerkleTree)
                | (PeerResponse::RangePage { .. }, PeerOpcode::Range)
                | (PeerResponse::Gossip { .. }, PeerOpcode::Gossip)
                | (PeerResponse::Coordinated { .. }, PeerOpcode::Coordinate)
                | (PeerResponse::Report { .. }, PeerOpcode::Admin)
                | (PeerResponse::Restored { .. }, PeerOpcode::Restore)
                | (PeerResponse::SnapshotChunk { .. }, PeerOpcode::SnapshotRead)
        )
    }

    /// Appends the body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            PeerResponse::Ack => {}
            PeerResponse::Record { record, digest } => {
                put_opt(out, *record);
                out.extend_from_slice(&digest.to_le_bytes());
            }
            PeerResponse::Paxos { ballot, answer } => {
                ballot.write(out);
                match answer {
                    PaxosAnswer::Promise { accepted } => {
                        out.push(1);
                        match accepted {
                            None => out.push(0),
                            Some((b, v)) => {
                                out.push(1);
                                b.write(out);
                                put_opt(out, *v);
                            }
                        }
                    }
                    PaxosAnswer::Accepted => out.push(2),
                    PaxosAnswer::Nack { promised } => {
                        out.push(3);
                        promised.write(out);
                    }
                    PaxosAnswer::Committed => out.push(4),
                }
            }
            PeerResponse::Merkle { leaves } => leaves.write(out),
            PeerResponse::RangePage { entries, next_cursor } => {
                entries.write(out);
                put_bytes(out, next_cursor);
            }
            PeerResponse::Gossip { payload }
            | PeerResponse::Coordinated { payload }
            | PeerResponse::Report { text: payload } => put_bytes(out, payload),
            PeerResponse::Restored { records } => put_varint(out, *records),
            PeerResponse::SnapshotChunk {
                file_size,
                data,
                crc32c,
            } => {
                out.extend_from_slice(&file_size.to_le_bytes());
                put_bytes(out, data);
                out.extend_from_slice(&crc32c.to_le_bytes());
            }
        }
    }

    /// Appends a whole response frame answering `op` / `request_id`.
    pub fn encode_frame(&self, op: PeerOpcode, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, op as u8, Flags::RESPONSE, request_id, |b| self.encode(b))
    }

    /// Decodes the response body to a request of opcode `op`.
    pub fn decode_body(op: PeerOpcode, body: &'a [u8], limits: &Limits) -> Result<PeerResponse<'a>, FrameError> {
        let opcode = op as u8;
        let mut r = Reader::new(body, opcode, *limits);
        let mr = max_record(limits);
        let resp = match op {
            PeerOpcode::Mutate => PeerResponse::Ack,
            PeerOpcode::Read => PeerResponse::Record {
                record: read_opt(&mut r, "record length", mr)?,
                digest: r.u64()?,
            },
            PeerOpcode::Paxos => {
                let ballot = Ballot::read(&mut r)?;
                let answer = match r.u8()? {
                    1 => PaxosAnswer::Promise {
                        accepted: match r.u8()? {
                            0 => None,
                            1 => {
                                let b = Ballot::read(&mut r)?;
                                Some((b, read_opt(&mut r, "value length", mr)?))
                            }
                            _ => return Err(r.malformed("bad presence tag")),
                        },
                    },
                    2 => PaxosAnswer::Accepted,
                    3 => PaxosAnswer::Nack {
                        promised: Ballot::read(&mut r)?,
                    },
                    4 => PaxosAnswer::Committed,
                    _ => return Err(r.malformed("unknown Paxos answer")),
                };
                PeerResponse::Paxos { ballot, answer }
            }
            PeerOpcode::MerkleTree => {
                let leaves: List<'a, u64> = List::read(&mut r, "leaf count")?;
                if leaves.len() > 1usize << MAX_MERKLE_DEPTH {
                    return Err(r.malformed("more Merkle leaves than depth 20 has"));
                }
                PeerResponse::Merkle { leaves }
            }
            PeerOpcode::Range => PeerResponse::RangePage {
                entries: List::read(&mut r, "entry count")?,
                next_cursor: r.bytes("cursor length", limits.max_key.saturating_add(16))?,
            },
            PeerOpcode::Gossip => PeerResponse::Gossip {
                payload: r.bytes("gossip length", mr)?,
            },
            PeerOpcode::Coordinate => PeerResponse::Coordinated {
                payload: r.bytes("outcome length", mr)?,
            },
            PeerOpcode::Admin => PeerResponse::Report {
                text: r.bytes("report length", mr)?,
            },
            PeerOpcode::Restore => PeerResponse::Restored { records: r.varint()? },
            PeerOpcode::SnapshotRead => PeerResponse::SnapshotChunk {
                file_size: r.u64()?,
                data: r.bytes("chunk length", MAX_SNAPSHOT_CHUNK)?,
                crc32c: {
                    let b = [r.u8()?, r.u8()?, r.u8()?, r.u8()?];
                    u32::from_le_bytes(b)
                },
            },
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;
    use proptest::prelude::*;

    fn roundtrip_request(req: PeerRequest<'_>) {
        let mut buf = Vec::new();
        req.encode_frame(7, &mut buf).unwrap();
        let limits = Limits::default();
        let mut d = FrameDecoder::new(limits.max_frame);
        d.spare(buf.len())[..buf.len()].copy_from_slice(&buf);
        d.commit(buf.len());
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(frame.header.request_id, 7);
        let back = PeerRequest::decode(&frame, &limits).unwrap();
        assert_eq!(back, req);
    }

    fn roundtrip_response(op: PeerOpcode, resp: PeerResponse<'_>) {
        let mut body = Vec::new();
        resp.encode(&mut body);
        assert!(resp.answers(op));
        let back = PeerResponse::decode_body(op, &body, &Limits::default()).unwrap();
        assert_eq!(back, resp);
    }

    fn u64_list(v: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v.len() as u64);
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    #[test]
    fn every_request_round_trips() {
        let b = Ballot { counter: 9, node: 3 };
        for op in [
            PeerOp::Mutate {
                token: 5,
                key: b"k",
                record: b"rec",
                hint_for: "n2",
            },
            PeerOp::Read {
                token: u64::MAX,
                key: b"k",
                digest_only: true,
            },
            PeerOp::Paxos {
                token: 1,
                key: b"c",
                ballot: b,
                step: PaxosStep::Prepare,
            },
            PeerOp::Paxos {
                token: 1,
                key: b"c",
                ballot: b,
                step: PaxosStep::Propose(Some(b"v")),
            },
            PeerOp::Paxos {
                token: 1,
                key: b"c",
                ballot: b,
                step: PaxosStep::Commit(None),
            },
            PeerOp::MerkleTree {
                start: 1,
                end: 0,
                depth: 10,
            },
            PeerOp::Range {
                start: 3,
                end: 4,
                cursor: b"cur",
                limit: 100,
            },
            PeerOp::Gossip { payload: b"g" },
            PeerOp::Coordinate { payload: b"c" },
            PeerOp::Admin { command: b"repair" },
            PeerOp::SnapshotRead {
                name: b"nightly",
                path: b"core-0/000012.sst",
                offset: 1 << 33,
                max_len: MAX_SNAPSHOT_CHUNK,
            },
        ] {
            roundtrip_request(PeerRequest { from: "node-1", op });
        }
        let entries = [
            RangeEntry {
                token: 9,
                key: b"k",
                record: b"r",
            },
            RangeEntry {
                token: u64::MAX,
                key: b"other",
                record: b"",
            },
        ];
        for mode in [RestoreMode::Records, RestoreMode::Plain] {
            roundtrip_request(PeerRequest {
                from: "corekv-cli",
                op: PeerOp::Restore {
                    mode,
                    consistency: 3,
                    entries: List::Slice(&entries),
                },
            });
        }
    }

    #[test]
    fn snapshot_and_restore_bodies_are_bounded() {
        let limits = Limits::default();
        let mut body = Vec::new();
        put_bytes(&mut body, b"n");
        put_bytes(&mut body, &[b'a'; 300]);
        assert!(matches!(
            PeerRequest::decode_body(0x82, &body, &limits),
            Err(FrameError::LimitExceeded { .. })
        ));
        let mut body = Vec::new();
        put_bytes(&mut body, b"n");
        body.extend_from_slice(&[9, 1, 0]);
        assert!(PeerRequest::decode_body(0x45, &body, &limits).is_err(), "mode 9");
        let mut chunk = Vec::new();
        chunk.extend_from_slice(&5u64.to_le_bytes());
        put_varint(&mut chunk, u64::from(MAX_SNAPSHOT_CHUNK) + 1);
        assert!(PeerResponse::decode_body(PeerOpcode::SnapshotRead, &chunk, &limits).is_err());
    }

    #[test]
    fn every_response_round_trips() {
        let b = Ballot { counter: 1, node: 2 };
        roundtrip_response(PeerOpcode::Mutate, PeerResponse::Ack);
        roundtrip_response(
            PeerOpcode::Read,
            PeerResponse::Record {
                record: Some(b"r"),
                digest: 42,
            },
        );
        roundtrip_response(
            PeerOpcode::Read,
            PeerResponse::Record {
                record: None,
                digest: 0,
            },
        );
        for answer in [
            PaxosAnswer::Promise { accepted: None },
            PaxosAnswer::Promise {
                accepted: Some((b, Some(b"x"))),
            },
            PaxosAnswer::Promise {
                accepted: Some((b, None)),
            },
            PaxosAnswer::Accepted,
            PaxosAnswer::Nack { promised: b },
            PaxosAnswer::Committed,
        ] {
            roundtrip_response(PeerOpcode::Paxos, PeerResponse::Paxos { ballot: b, answer });
        }
        let leaves = u64_list(&[1, 2, 3, 4]);
        let mut r = Reader::new(&leaves, 0x80, Limits::default());
        let list: List<'_, u64> = List::read(&mut r, "leaf count").unwrap();
        roundtrip_response(PeerOpcode::MerkleTree, PeerResponse::Merkle { leaves: list });
        let mut entries = Vec::new();
        put_varint(&mut entries, 1);
        RangeEntry {
            token: 9,
            key: b"k",
            record: b"r",
        }
        .write(&mut entries);
        let mut r = Reader::new(&entries, 0x81, Limits::default());
        let list: List<'_, RangeEntry<'_>> = List::read(&mut r, "entry count").unwrap();
        roundtrip_response(
            PeerOpcode::Range,
            PeerResponse::RangePage {
                entries: list,
                next_cursor: b"",
            },
        );
        roundtrip_response(PeerOpcode::Gossip, PeerResponse::Gossip { payload: b"p" });
        roundtrip_response(PeerOpcode::Coordinate, PeerResponse::Coordinated { payload: b"o" });
        roundtrip_response(PeerOpcode::Admin, PeerResponse::Report { text: b"done" });
        roundtrip_response(PeerOpcode::Restore, PeerResponse::Restored { records: 300 });
        roundtrip_response(
            PeerOpcode::SnapshotRead,
            PeerResponse::SnapshotChunk {
                file_size: 10,
                data: b"0123",
                crc32c: 0xDEAD_BEEF,
            },
        );
    }

    #[test]
    fn bounds_are_checked_before_trust() {
        let limits = Limits {
            max_key: 4,
            ..Limits::default()
        };
        let mut body = Vec::new();
        PeerRequest {
            from: "n",
            op: PeerOp::Read {
                token: 1,
                key: b"too-long",
                digest_only: false,
            },
        }
        .encode(&mut body);
        assert!(PeerRequest::decode_body(0x41, &body, &limits).is_err());
        let mut body = Vec::new();
        PeerRequest {
            from: "n",
            op: PeerOp::MerkleTree {
                start: 0,
                end: 0,
                depth: 21,
            },
        }
        .encode(&mut body);
        assert!(PeerRequest::decode_body(0x80, &body, &Limits::default()).is_err());
        assert!(matches!(
            PeerRequest::decode_body(0x7F, &[], &Limits::default()),
            Err(FrameError::UnknownOpcode { opcode: 0x7F })
        ));
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(op in prop::sample::select(vec![0x40u8, 0x41, 0x42, 0x45, 0x80, 0x81, 0x82, 0xC0]),
                                     body in prop::collection::vec(any::<u8>(), 0..256)) {
            let limits = Limits::default();
            let _ = PeerRequest::decode_body(op, &body, &limits);
            if let Some(op) = PeerOpcode::from_u8(op) {
                let _ = PeerResponse::decode_body(op, &body, &limits);
            }
        }

        #[test]
        fn mutations_round_trip(token in any::<u64>(), key in prop::collection::vec(any::<u8>(), 1..64),
                                record in prop::collection::vec(any::<u8>(), 0..512), hint in "[a-z0-9-]{0,12}") {
            let req = PeerRequest { from: "node-x", op: PeerOp::Mutate { token, key: &key, record: &record, hint_for: &hint } };
            let mut body = Vec::new();
            req.encode(&mut body);
            let back = PeerRequest::decode_body(0x40, &body, &Limits::default()).unwrap();
            prop_assert_eq!(back, req);
            // Every strict prefix is an error, never a panic or a shorter message.
            for cut in 0..body.len() {
                prop_assert!(PeerRequest::decode_body(0x40, &body[..cut], &Limits::default()).is_err());
            }
        }
    }
}
