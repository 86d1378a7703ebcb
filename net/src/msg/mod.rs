//! Client messages of the binary protocol: requests, responses, their opcodes
//! and the limits every decoder enforces. The byte layouts are in
//! `docs/protocol.md`; this module is their single implementation.
//!
//! ## Format
//!
//! Integers are little-endian; `varint` is LEB128; `bytes` is
//! `len varint | len bytes`; `list<T>` is `count varint | count x T`.
//! Every request body starts with `consistency | timeout_ms varint` (the
//! consistency byte's high bit allows a sloppy quorum), then
//! the operation's fields. A body must be consumed exactly: trailing bytes
//! are an error.
//!
//! Decoding borrows: keys, values and lists point into the frame body, and
//! lists are validated once and iterated lazily ([`List`]).
//!
//! ## Causal versions
//!
//! GET_VERSIONS, PUT_VERSIONED and DELETE_VERSIONED carry a key's siblings
//! and its causal context (`docs/versions.md`). The context is opaque bytes
//! here: its format belongs to the node, and a client only hands it back.

pub mod auth;
pub mod codec;
pub mod peer;

use crate::error::FrameError;
use crate::frame::{encode_frame, Flags, Frame};
use codec::{put_bytes, put_opt, put_varint};
pub use codec::{Item, List, ListIter, Reader};

/// Limits a decoder enforces on untrusted lengths and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Largest frame body accepted (checked on the header, before reading).
    pub max_frame: u32,
    /// Largest key; also bounds cursors, version metadata, causal
    /// contexts, error messages and node addresses.
    pub max_key: u32,
    /// Largest value.
    pub max_value: u32,
    /// Most items in one list (MGET keys, MPUT pairs, scan entries, ring
    /// nodes, a node's tokens, a key's siblings).
    pub max_items: u32,
}

impl Limits {
    /// No limit beyond `u32`; for re-reading bytes already validated.
    pub const UNBOUNDED: Limits = Limits {
        max_frame: u32::MAX,
        max_key: u32::MAX,
        max_value: u32::MAX,
        max_items: u32::MAX,
    };
}

impl Default for Limits {
    /// 16 MiB frames, 64 KiB keys, 8 MiB values, 65,536 items.
    fn default() -> Limits {
        Limits {
            max_frame: crate::frame::DEFAULT_MAX_FRAME,
            max_key: 64 << 10,
            max_value: 8 << 20,
            max_items: 1 << 16,
        }
    }
}

/// Request opcodes (client range 0x01-0x3F, response flag clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Read one key.
    Get = 0x01,
    /// Write one key.
    Put = 0x02,
    /// Delete one key.
    Delete = 0x03,
    /// Does a key exist.
    Exists = 0x04,
    /// Read several keys.
    MGet = 0x05,
    /// Write several keys.
    MPut = 0x06,
    /// Page through a token range.
    Scan = 0x07,
    /// Page through keys with a prefix.
    List = 0x08,
    /// Set a key's time to live.
    Expire = 0x09,
    /// Read a key's remaining time to live.
    Ttl = 0x0A,
    /// Add to an integer value.
    Incr = 0x0B,
    /// Compare-and-set on the version.
    Cas = 0x0C,
    /// Liveness check.
    Ping = 0x0D,
    /// Ask for the ring.
    Ring = 0x0E,
    /// Read every sibling of a key and its causal context.
    GetVersions = 0x0F,
    /// Write a key, superseding what a causal context covers.
    PutVersioned = 0x10,
    /// Delete a key, superseding what a causal context covers.
    DeleteVersioned = 0x11,
    /// Linearizable compare-and-set on the value (a Paxos round in a cluster).
    CasValue = 0x12,
    /// Linearizable read (a Paxos round in a cluster).
    SerialGet = 0x13,
}

impl Opcode {
    /// The opcode for a byte, if it names a request.
    pub fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            0x01 => Opcode::Get,
            0x02 => Opcode::Put,
            0x03 => Opcode::Delete,
            0x04 => Opcode::Exists,
            0x05 => Opcode::MGet,
            0x06 => Opcode::MPut,
            0x07 => Opcode::Scan,
            0x08 => Opcode::List,
            0x09 => Opcode::Expire,
            0x0A => Opcode::Ttl,
            0x0B => Opcode::Incr,
            0x0C => Opcode::Cas,
            0x0D => Opcode::Ping,
            0x0E => Opcode::Ring,
            0x0F => Opcode::GetVersions,
            0x10 => Opcode::PutVersioned,
            0x11 => Opcode::DeleteVersioned,
            0x12 => Opcode::CasValue,
            0x13 => Opcode::SerialGet,
            _ => return None,
        })
    }
}

/// Response opcodes (client range, response flag set). A response's opcode
/// names the shape of its body, not the request it answers (the request id
/// does that), so one shape serves several requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResponseOpcode {
    /// Done, nothing to return.
    Ok = 0x01,
    /// One value.
    Value = 0x02,
    /// The key does not exist.
    NotFound = 0x03,
    /// One slot per MGET key.
    Values = 0x04,
    /// A page of entries and the cursor to continue.
    ScanPage = 0x05,
    /// An integer (INCR, EXISTS, TTL).
    Integer = 0x06,
    /// The request failed.
    Error = 0x07,
    /// The ring.
    Ring = 0x08,
    /// A key's siblings and causal context (GET_VERSIONS).
    Versions = 0x09,
    /// A linearizable operation's outcome (CAS_VALUE, SERIAL_GET).
    CasResult = 0x0A,
}

impl ResponseOpcode {
    /// The response opcode for a byte, if any.
    pub fn from_u8(b: u8) -> Option<ResponseOpcode> {
        Some(match b {
            0x01 => ResponseOpcode::Ok,
            0x02 => ResponseOpcode::Value,
            0x03 => ResponseOpcode::NotFound,
            0x04 => ResponseOpcode::Values,
            0x05 => ResponseOpcode::ScanPage,
            0x06 => ResponseOpcode::Integer,
            0x07 => ResponseOpcode::Error,
            0x08 => ResponseOpcode::Ring,
            0x09 => ResponseOpcode::Versions,
            0x0A => ResponseOpcode::CasResult,
            _ => return None,
        })
    }
}

/// How many replicas must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Any one replica.
    One,
    /// A majority of the replicas.
    Quorum,
    /// Every replica.
    All,
    /// Exactly this many replicas (at least 1).
    Count(u8),
    /// A majority of the replicas in the coordinator's data center, counting
    /// only answers from there (no wait on another data center).
    LocalQuorum,
}

/// The bit of the consistency byte that allows a sloppy quorum
/// ([`Request::sloppy_quorum`]); the low seven bits are the level's tag.
pub const SLOPPY_QUORUM_BIT: u8 = 0x80;

impl Consistency {
    /// The level's tag (the consistency byte without [`SLOPPY_QUORUM_BIT`]).
    pub fn tag(self) -> u8 {
        match self {
            Consistency::One => 1,
            Consistency::Quorum => 2,
            Consistency::All => 3,
            Consistency::Count(_) => 4,
            Consistency::LocalQuorum => 5,
        }
    }

    fn write(self, sloppy: bool, out: &mut Vec<u8>) {
        let flag = if sloppy { SLOPPY_QUORUM_BIT } else { 0 };
        out.push(self.tag() | flag);
        if let Consistency::Count(n) = self {
            out.push(n);
        }
    }

    /// The level and whether a sloppy quorum is allowed.
    fn read(r: &mut Reader<'_>) -> Result<(Consistency, bool), FrameError> {
        let byte = r.u8()?;
        let sloppy = byte & SLOPPY_QUORUM_BIT != 0;
        let level = match byte & !SLOPPY_QUORUM_BIT {
            1 => Consistency::One,
            2 => Consistency::Quorum,
            3 => Consistency::All,
            4 => match r.u8()? {
                0 => return Err(r.malformed("consistency count of zero")),
                n => Consistency::Count(n),
            },
            5 => Consistency::LocalQuorum,
            _ => return Err(r.malformed("unknown consistency level")),
        };
        Ok((level, sloppy))
    }
}

/// A write's precondition on the key's existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Write unconditionally.
    Always = 0,
    /// Write only if the key does not exist (NX).
    IfAbsent = 1,
    /// Write only if the key exists (XX).
    IfPresent = 2,
}

/// An error code carried by an ERROR response. A newtype rather than an enum
/// so a client passes through codes a newer server adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl std::fmt::Display for ErrorCode {
    /// The code's name in docs/protocol.md (`DISK_FULL`), or `code N` for
    /// one this build does not know.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            ErrorCode::BAD_FRAME => "BAD_FRAME",
            ErrorCode::UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
            ErrorCode::UNKNOWN_OPCODE => "UNKNOWN_OPCODE",
            ErrorCode::MALFORMED => "MALFORMED",
            ErrorCode::TOO_LARGE => "TOO_LARGE",
            ErrorCode::TIMEOUT => "TIMEOUT",
            ErrorCode::UNAVAILABLE => "UNAVAILABLE",
            ErrorCode::CONDITION_FAILED => "CONDITION_FAILED",
            ErrorCode::NOT_AN_INTEGER => "NOT_AN_INTEGER",
            ErrorCode::OVERLOADED => "OVERLOADED",
            ErrorCode::INTERNAL => "INTERNAL",
            ErrorCode::AUTH_REQUIRED => "AUTH_REQUIRED",
            ErrorCode::AUTH_FAILED => "AUTH_FAILED",
            ErrorCode::FORBIDDEN => "FORBIDDEN",
            ErrorCode::DISK_FULL => "DISK_FULL",
            ErrorCode::FENCED => "FENCED",
            ErrorCode(other) => return write!(f, "code {other}"),
        };
        f.write_str(name)
    }
}

impl ErrorCode {
    /// The frame header was bad (magic, checksum, reserved flags); the
    /// connection closes after this response.
    pub const BAD_FRAME: ErrorCode = ErrorCode(1);
    /// The peer's protocol version is not spoken here; the connection closes.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(2);
    /// Unknown opcode; the connection stays open.
    pub const UNKNOWN_OPCODE: ErrorCode = ErrorCode(3);
    /// The body did not decode; the connection stays open.
    pub const MALFORMED: ErrorCode = ErrorCode(4);
    /// A frame, key, value or count exceeded a limit.
    pub const TOO_LARGE: ErrorCode = ErrorCode(5);
    /// Not enough replicas answered within the timeout.
    pub const TIMEOUT: ErrorCode = ErrorCode(6);
    /// Too few replicas are alive to reach the consistency level.
    pub const UNAVAILABLE: ErrorCode = ErrorCode(7);
    /// NX, XX or CAS precondition failed.
    pub const CONDITION_FAILED: ErrorCode = ErrorCode(8);
    /// INCR on a value that is not a decimal i64, or the sum overflows.
    pub const NOT_AN_INTEGER: ErrorCode = ErrorCode(9);
    /// The node is shedding load; retry later.
    pub const OVERLOADED: ErrorCode = ErrorCode(10);
    /// A bug or an unexpected failure on the server.
    pub const INTERNAL: ErrorCode = ErrorCode(11);
    /// The node requires authentication (AUTH, or the node-to-node
    /// handshake) before this request; the connection stays open.
    pub const AUTH_REQUIRED: ErrorCode = ErrorCode(12);
    /// The credentials or the handshake proof were wrong.
    pub const AUTH_FAILED: ErrorCode = ErrorCode(13);
    /// The authenticated user lacks the permission on the key or prefix.
    pub const FORBIDDEN: ErrorCode = ErrorCode(14);
    /// The node's disk is full: the write was not applied. Reads still work;
    /// writes resume by themselves once space is freed.
    pub const DISK_FULL: ErrorCode = ErrorCode(15);
    /// The node stopped taking writes after a failed write or sync of its
    /// log (it may have lost what it buffered), and stays so until it is
    /// restarted on a healthy disk. The write was not acknowledged.
    pub const FENCED: ErrorCode = ErrorCode(16);
}

/// A key and a value (MPUT pairs, scan entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyValue<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

impl<'a> Item<'a> for KeyValue<'a> {
    const MIN_LEN: usize = 2;
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let (mk, mv) = (r.limits().max_key, r.limits().max_value);
        Ok(KeyValue {
            key: r.bytes("key length", mk)?,
            value: r.bytes("value length", mv)?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.key);
        put_bytes(out, self.value);
    }
}

/// A stored value as returned to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueRef<'a> {
    /// The value bytes.
    pub value: &'a [u8],
    /// Opaque version metadata (version vector or HLC); CAS sends it back.
    pub meta: &'a [u8],
    /// Remaining time to live in ms; 0 = no expiry.
    pub ttl_ms: u64,
}

impl<'a> ValueRef<'a> {
    fn read_fields(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let (mk, mv) = (r.limits().max_key, r.limits().max_value);
        Ok(ValueRef {
            value: r.bytes("value length", mv)?,
            meta: r.bytes("meta length", mk)?,
            ttl_ms: r.varint()?,
        })
    }
    fn write_fields(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.value);
        put_bytes(out, self.meta);
        put_varint(out, self.ttl_ms);
    }
}

/// An MGET slot: `0` (missing) or `1 | value | meta | ttl_ms`.
impl<'a> Item<'a> for Option<ValueRef<'a>> {
    const MIN_LEN: usize = 1;
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some(ValueRef::read_fields(r)?)),
            _ => Err(r.malformed("bad MGET slot tag")),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.write_fields(out);
            }
        }
    }
}

/// One sibling in a VERSIONS response: the value of one write that no other
/// surviving write has seen. Tombstones are not sent (a deleted key has an
/// empty sibling list and a context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiblingRef<'a> {
    /// The value bytes.
    pub value: &'a [u8],
    /// When this write expires, in ms since the Unix epoch on the server's
    /// clock; 0 = never. Absolute rather than time-left because each sibling
    /// keeps the expiry of its own write (`docs/versions.md`, Expiry).
    pub expiry_ms: u64,
}

impl<'a> Item<'a> for SiblingRef<'a> {
    /// A 1-byte length (empty value) and the fixed 8-byte expiry.
    const MIN_LEN: usize = 9;
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let mv = r.limits().max_value;
        Ok(SiblingRef {
            value: r.bytes("value length", mv)?,
            expiry_ms: r.u64()?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.value);
        out.extend_from_slice(&self.expiry_ms.to_le_bytes());
    }
}

/// A member of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node<'a> {
    /// Where to connect, `host:port`.
    pub address: &'a str,
    /// Cores (shards) on the node; a vnode's core is its index (its position
    /// in `tokens`) modulo `cores`.
    pub cores: u16,
    /// Shard-aware port of core 0: core `c` answers on `shard_port + c` on the
    /// host of `address`; 0 when the node has no shard-aware ports.
    pub shard_port: u16,
    /// The node's vnode tokens.
    pub tokens: List<'a, u64>,
}

impl<'a> Item<'a> for Node<'a> {
    const MIN_LEN: usize = 6;
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let mk = r.limits().max_key;
        Ok(Node {
            address: r.str("address length", mk)?,
            cores: r.u16()?,
            shard_port: r.u16()?,
            tokens: List::read(r, "token count")?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.address.as_bytes());
        out.extend_from_slice(&self.cores.to_le_bytes());
        out.extend_from_slice(&self.shard_port.to_le_bytes());
        self.tokens.write(out);
    }
}

/// A client request: options common to all, then the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Replicas that must answer.
    pub consistency: Consistency,
    /// Give up after this many ms; 0 = the server's default.
    pub timeout_ms: u32,
    /// Whether a write may count acknowledgements from fallback nodes that
    /// hold a hint for a replica believed down (sloppy quorum): the write
    /// stays available when replicas are down, but its `W` acks are then not
    /// all on the key's replicas (README, "Consistency in a cluster"). Sent
    /// as [`SLOPPY_QUORUM_BIT`] of the consistency byte; reads ignore it.
    pub sloppy_quorum: bool,
    /// The operation.
    pub op: Op<'a>,
}

/// A client operation. TTLs are in ms; 0 means no expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Read a key. Answer: VALUE or NOT_FOUND.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Write a key. Answer: OK, or ERROR CONDITION_FAILED.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Time to live; 0 = none.
        ttl_ms: u64,
        /// NX / XX.
        condition: Condition,
    },
    /// Delete a key. Answer: OK.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Does the key exist. Answer: INTEGER 0 or 1.
    Exists {
        /// The key.
        key: &'a [u8],
    },
    /// Read several keys. Answer: VALUES, one slot per key in order.
    MGet {
        /// The keys.
        keys: List<'a, &'a [u8]>,
    },
    /// Write several keys. Answer: OK.
    MPut {
        /// The pairs.
        entries: List<'a, KeyValue<'a>>,
        /// Time to live for all of them; 0 = none.
        ttl_ms: u64,
    },
    /// Page through tokens `[start, end)` (wrapping if `end <= start`).
    /// Answer: SCAN_PAGE.
    Scan {
        /// First token.
        start: u64,
        /// Token after the last.
        end: u64,
        /// Empty to begin; else the previous page's `next_cursor`.
        cursor: &'a [u8],
        /// Most entries in the page.
        limit: u32,
    },
    /// Page through keys starting with `prefix`. Answer: SCAN_PAGE.
    List {
        /// The key prefix.
        prefix: &'a [u8],
        /// Empty to begin; else the previous page's `next_cursor`.
        cursor: &'a [u8],
        /// Most entries in the page.
        limit: u32,
    },
    /// Set a key's time to live (0 = persist). Answer: INTEGER 1 if set, 0 if missing.
    Expire {
        /// The key.
        key: &'a [u8],
        /// Time to live.
        ttl_ms: u64,
    },
    /// Remaining ms to live. Answer: INTEGER (-1 no expiry, -2 missing).
    Ttl {
        /// The key.
        key: &'a [u8],
    },
    /// Add `delta` to a decimal integer value. Answer: INTEGER (new value).
    Incr {
        /// The key.
        key: &'a [u8],
        /// The amount.
        delta: i64,
    },
    /// Write `value` only if the current version is `expected` (empty =
    /// the key must not exist). Answer: OK, or ERROR CONDITION_FAILED.
    Cas {
        /// The key.
        key: &'a [u8],
        /// The version metadata the client read.
        expected: &'a [u8],
        /// The new value.
        value: &'a [u8],
        /// Time to live; 0 = none.
        ttl_ms: u64,
    },
    /// Answer: OK.
    Ping,
    /// Answer: RING.
    Ring,
    /// Read every sibling of a key and the causal context that covers them.
    /// Answer: VERSIONS (an empty sibling list when every sibling is a
    /// tombstone), or NOT_FOUND when the key has no versions at all.
    GetVersions {
        /// The key.
        key: &'a [u8],
    },
    /// Write a key, superseding exactly the siblings `context` covers.
    /// Answer: OK.
    PutVersioned {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Time to live; 0 = none.
        ttl_ms: u64,
        /// The context from a VERSIONS answer, unchanged; empty = a blind
        /// write that supersedes nothing. Bounded by `max_key`.
        context: &'a [u8],
    },
    /// Delete a key (write a tombstone), superseding exactly the siblings
    /// `context` covers. Answer: OK.
    DeleteVersioned {
        /// The key.
        key: &'a [u8],
        /// The context from a VERSIONS answer, unchanged; empty = supersedes
        /// nothing. Bounded by `max_key`.
        context: &'a [u8],
    },
    /// Set the key to `new` (`None` deletes) only if its value is
    /// `expected` (`None`: the key must be absent). Linearizable per key: in
    /// a cluster a Paxos round among the key's replicas. Answer: CAS_RESULT.
    CasValue {
        /// The key.
        key: &'a [u8],
        /// The value the key must hold; `None`: it must not exist.
        expected: Option<&'a [u8]>,
        /// The value to set; `None` deletes the key.
        new: Option<&'a [u8]>,
    },
    /// A linearizable read of the key (in a cluster a Paxos round, so it
    /// sees every CAS_VALUE that answered before it). Answer: CAS_RESULT
    /// with `applied` set.
    SerialGet {
        /// The key.
        key: &'a [u8],
    },
}

impl<'a> Op<'a> {
    /// The opcode of this operation.
    pub fn opcode(&self) -> Opcode {
        match self {
            Op::Get { .. } => Opcode::Get,
            Op::Put { .. } => Opcode::Put,
            Op::Delete { .. } => Opcode::Delete,
            Op::Exists { .. } => Opcode::Exists,
            Op::MGet { .. } => Opcode::MGet,
            Op::MPut { .. } => Opcode::MPut,
            Op::Scan { .. } => Opcode::Scan,
            Op::List { .. } => Opcode::List,
            Op::Expire { .. } => Opcode::Expire,
            Op::Ttl { .. } => Opcode::Ttl,
            Op::Incr { .. } => Opcode::Incr,
            Op::Cas { .. } => Opcode::Cas,
            Op::Ping => Opcode::Ping,
            Op::Ring => Opcode::Ring,
            Op::GetVersions { .. } => Opcode::GetVersions,
            Op::PutVersioned { .. } => Opcode::PutVersioned,
            Op::DeleteVersioned { .. } => Opcode::DeleteVersioned,
            Op::CasValue { .. } => Opcode::CasValue,
            Op::SerialGet { .. } => Opcode::SerialGet,
        }
    }
}

impl<'a> Request<'a> {
    /// Appends the body (no header).
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.consistency.write(self.sloppy_quorum, out);
        put_varint(out, self.timeout_ms.into());
        match &self.op {
            Op::Get { key }
            | Op::Delete { key }
            | Op::Exists { key }
            | Op::Ttl { key }
            | Op::GetVersions { key }
            | Op::SerialGet { key } => put_bytes(out, key),
            Op::CasValue { key, expected, new } => {
                put_bytes(out, key);
                put_opt(out, *expected);
                put_opt(out, *new);
            }
            Op::Put {
                key,
                value,
                ttl_ms,
                condition,
            } => {
                put_bytes(out, key);
                put_bytes(out, value);
                put_varint(out, *ttl_ms);
                out.push(*condition as u8);
            }
            Op::MGet { keys } => keys.write(out),
            Op::MPut { entries, ttl_ms } => {
                entries.write(out);
                put_varint(out, *ttl_ms);
            }
            Op::Scan {
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
            Op::List { prefix, cursor, limit } => {
                put_bytes(out, prefix);
                put_bytes(out, cursor);
                put_varint(out, (*limit).into());
            }
            Op::Expire { key, ttl_ms } => {
                put_bytes(out, key);
                put_varint(out, *ttl_ms);
            }
            Op::Incr { key, delta } => {
                put_bytes(out, key);
                out.extend_from_slice(&delta.to_le_bytes());
            }
            Op::Cas {
                key,
                expected,
                value,
                ttl_ms,
            } => {
                put_bytes(out, key);
                put_bytes(out, expected);
                put_bytes(out, value);
                put_varint(out, *ttl_ms);
            }
            Op::PutVersioned {
                key,
                value,
                ttl_ms,
                context,
            } => {
                put_bytes(out, key);
                put_bytes(out, value);
                put_varint(out, *ttl_ms);
                put_bytes(out, context);
            }
            Op::DeleteVersioned { key, context } => {
                put_bytes(out, key);
                put_bytes(out, context);
            }
            Op::Ping | Op::Ring => {}
        }
    }

    /// Appends a whole request frame (header + body).
    pub fn encode_frame(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, self.op.opcode() as u8, Flags::default(), request_id, |b| {
            self.encode(b)
        })
    }

    /// Decodes a request frame. Fails with `WrongDirection` on a response,
    /// `UnknownOpcode` on an opcode this build does not know.
    pub fn decode(frame: &Frame<'a>, limits: &Limits) -> Result<Request<'a>, FrameError> {
        let opcode = frame.header.opcode;
        if frame.header.flags.is_response() || frame.header.flags.is_error() {
            return Err(FrameError::WrongDirection {
                opcode,
                expected_response: false,
            });
        }
        Request::decode_body(opcode, frame.body, limits)
    }

    /// Decodes a request body for `opcode`.
    pub fn decode_body(opcode: u8, body: &'a [u8], limits: &Limits) -> Result<Request<'a>, FrameError> {
        let op = Opcode::from_u8(opcode).ok_or(FrameError::UnknownOpcode { opcode })?;
        let mut r = Reader::new(body, opcode, *limits);
        let (mk, mv) = (limits.max_key, limits.max_value);
        let (consistency, sloppy_quorum) = Consistency::read(&mut r)?;
        let timeout_ms = r.varint_u32("timeout")?;
        let op = match op {
            Opcode::Get => Op::Get {
                key: r.bytes("key length", mk)?,
            },
            Opcode::Delete => Op::Delete {
                key: r.bytes("key length", mk)?,
            },
            Opcode::Exists => Op::Exists {
                key: r.bytes("key length", mk)?,
            },
            Opcode::Ttl => Op::Ttl {
                key: r.bytes("key length", mk)?,
            },
            Opcode::Put => Op::Put {
                key: r.bytes("key length", mk)?,
                value: r.bytes("value length", mv)?,
                ttl_ms: r.varint()?,
                condition: match r.u8()? {
                    0 => Condition::Always,
                    1 => Condition::IfAbsent,
                    2 => Condition::IfPresent,
                    _ => return Err(r.malformed("unknown PUT condition")),
                },
            },
            Opcode::MGet => Op::MGet {
                keys: List::read(&mut r, "key count")?,
            },
            Opcode::MPut => Op::MPut {
                entries: List::read(&mut r, "pair count")?,
                ttl_ms: r.varint()?,
            },
            Opcode::Scan => Op::Scan {
                start: r.u64()?,
                end: r.u64()?,
                cursor: r.bytes("cursor length", mk)?,
                limit: r.varint_u32("scan limit")?,
            },
            Opcode::List => Op::List {
                prefix: r.bytes("prefix length", mk)?,
                cursor: r.bytes("cursor length", mk)?,
                limit: r.varint_u32("list limit")?,
            },
            Opcode::Expire => Op::Expire {
                key: r.bytes("key length", mk)?,
                ttl_ms: r.varint()?,
            },
            Opcode::Incr => Op::Incr {
                key: r.bytes("key length", mk)?,
                delta: r.i64()?,
            },
            Opcode::Cas => Op::Cas {
                key: r.bytes("key length", mk)?,
                expected: r.bytes("expected version length", mk)?,
                value: r.bytes("value length", mv)?,
                ttl_ms: r.varint()?,
            },
            Opcode::Ping => Op::Ping,
            Opcode::Ring => Op::Ring,
            Opcode::GetVersions => Op::GetVersions {
                key: r.bytes("key length", mk)?,
            },
            // Contexts are bounded like version metadata, by `max_key`: a
            // clock pruned to its default 64 (actor, counter) entries with
            // HLC counters encodes to about 1.1 KiB (docs/versions.md), so a
            // node must keep `max_key` above that for a full context to pass.
            Opcode::PutVersioned => Op::PutVersioned {
                key: r.bytes("key length", mk)?,
                value: r.bytes("value length", mv)?,
                ttl_ms: r.varint()?,
                context: r.bytes("context length", mk)?,
            },
            Opcode::DeleteVersioned => Op::DeleteVersioned {
                key: r.bytes("key length", mk)?,
                context: r.bytes("context length", mk)?,
            },
            Opcode::CasValue => Op::CasValue {
                key: r.bytes("key length", mk)?,
                expected: r.opt_bytes("expected value length", mv)?,
                new: r.opt_bytes("value length", mv)?,
            },
            Opcode::SerialGet => Op::SerialGet {
                key: r.bytes("key length", mk)?,
            },
        };
        r.finish()?;
        Ok(Request {
            consistency,
            timeout_ms,
            sloppy_quorum,
            op,
        })
    }
}

/// A response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// Done.
    Ok,
    /// One value.
    Value(ValueRef<'a>),
    /// The key does not exist.
    NotFound,
    /// MGET slots, in request order.
    Values(List<'a, Option<ValueRef<'a>>>),
    /// A page of entries.
    ScanPage {
        /// The entries, in scan order.
        entries: List<'a, KeyValue<'a>>,
        /// Where to continue; empty = the scan is complete.
        next_cursor: &'a [u8],
    },
    /// An integer.
    Integer(i64),
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Human-readable detail.
        message: &'a str,
    },
    /// The ring.
    Ring {
        /// Ring version: grows with every membership change, so a client
        /// keeps the newest ring it has seen.
        epoch: u64,
        /// Members and their tokens.
        nodes: List<'a, Node<'a>>,
    },
    /// A key's siblings and causal context.
    Versions {
        /// Opaque causal context covering every sibling listed (and the
        /// tombstones not listed); the client hands it back unchanged.
        context: &'a [u8],
        /// The live siblings; empty = every sibling is a tombstone.
        siblings: List<'a, SiblingRef<'a>>,
    },
    /// A CAS_VALUE's or SERIAL_GET's outcome.
    CasResult {
        /// Whether the condition held (always for SERIAL_GET).
        applied: bool,
        /// The key's value after the operation: the new value if applied,
        /// else the value that failed the condition; `None`: absent.
        value: Option<&'a [u8]>,
    },
}

impl<'a> Response<'a> {
    /// The response opcode.
    pub fn opcode(&self) -> ResponseOpcode {
        match self {
            Response::Ok => ResponseOpcode::Ok,
            Response::Value(_) => ResponseOpcode::Value,
            Response::NotFound => ResponseOpcode::NotFound,
            Response::Values(_) => ResponseOpcode::Values,
            Response::ScanPage { .. } => ResponseOpcode::ScanPage,
            Response::Integer(_) => ResponseOpcode::Integer,
            Response::Error { .. } => ResponseOpcode::Error,
            Response::Ring { .. } => ResponseOpcode::Ring,
            Response::Versions { .. } => ResponseOpcode::Versions,
            Response::CasResult { .. } => ResponseOpcode::CasResult,
        }
    }

    /// The header flags this response is sent with.
    pub fn flags(&self) -> Flags {
        match self {
            Response::Error { .. } => Flags::RESPONSE.with(Flags::ERROR),
            _ => Flags::RESPONSE,
        }
    }

    /// An ERROR response for a decode failure (message: the error's text,
    /// cut to fit `max_len` bytes on a char boundary).
    pub fn from_error(err: &FrameError, buf: &'a mut String, max_len: usize) -> Response<'a> {
        use std::fmt::Write;
        buf.clear();
        let _ = write!(buf, "{err}");
        let mut end = buf.len().min(max_len);
        while !buf.is_char_boundary(end) {
            end -= 1;
        }
        buf.truncate(end);
        Response::Error {
            code: err.code(),
            message: buf.as_str(),
        }
    }

    /// Appends the body (no header).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Response::Ok | Response::NotFound => {}
            Response::Value(v) => v.write_fields(out),
            Response::Values(slots) => slots.write(out),
            Response::ScanPage { entries, next_cursor } => {
                entries.write(out);
                put_bytes(out, next_cursor);
            }
            Response::Integer(i) => out.extend_from_slice(&i.to_le_bytes()),
            Response::Error { code, message } => {
                out.extend_from_slice(&code.0.to_le_bytes());
                put_bytes(out, message.as_bytes());
            }
            Response::Ring { epoch, nodes } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                nodes.write(out);
            }
            Response::Versions { context, siblings } => {
                put_bytes(out, context);
                siblings.write(out);
            }
            Response::CasResult { applied, value } => {
                out.push(u8::from(*applied));
                put_opt(out, *value);
            }
        }
    }

    /// Appends a whole response frame answering `request_id`.
    pub fn encode_frame(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, self.opcode() as u8, self.flags(), request_id, |b| self.encode(b))
    }

    /// Decodes a response frame; the error flag must be set exactly on ERROR.
    pub fn decode(frame: &Frame<'a>, limits: &Limits) -> Result<Response<'a>, FrameError> {
        let opcode = frame.header.opcode;
        if !frame.header.flags.is_response() {
            return Err(FrameError::WrongDirection {
                opcode,
                expected_response: true,
            });
        }
        let resp = Response::decode_body(opcode, frame.body, limits)?;
        if frame.header.flags.is_error() != matches!(resp, Response::Error { .. }) {
            return Err(FrameError::Malformed {
                opcode,
                offset: 0,
                reason: "error flag disagrees with the opcode",
            });
        }
        Ok(resp)
    }

    /// Decodes a response body for `opcode`.
    pub fn decode_body(opcode: u8, body: &'a [u8], limits: &Limits) -> Result<Response<'a>, FrameError> {
        let op = ResponseOpcode::from_u8(opcode).ok_or(FrameError::UnknownOpcode { opcode })?;
        let mut r = Reader::new(body, opcode, *limits);
        let resp = match op {
            ResponseOpcode::Ok => Response::Ok,
            ResponseOpcode::NotFound => Response::NotFound,
            ResponseOpcode::Value => Response::Value(ValueRef::read_fields(&mut r)?),
            ResponseOpcode::Values => Response::Values(List::read(&mut r, "slot count")?),
            ResponseOpcode::ScanPage => Response::ScanPage {
                entries: List::read(&mut r, "entry count")?,
                next_cursor: r.bytes("cursor length", limits.max_key)?,
            },
            ResponseOpcode::Integer => Response::Integer(r.i64()?),
            ResponseOpcode::Error => Response::Error {
                code: ErrorCode(r.u16()?),
                message: r.str("message length", limits.max_key)?,
            },
            ResponseOpcode::Ring => Response::Ring {
                epoch: r.u64()?,
                nodes: List::read(&mut r, "node count")?,
            },
            ResponseOpcode::Versions => Response::Versions {
                context: r.bytes("context length", limits.max_key)?,
                siblings: List::read(&mut r, "sibling count")?,
            },
            ResponseOpcode::CasResult => Response::CasResult {
                applied: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.malformed("bad applied flag")),
                },
                value: r.opt_bytes("value length", limits.max_value)?,
            },
        };
        r.finish()?;
        Ok(resp)
    }
}
