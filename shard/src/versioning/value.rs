//! What one write stores: bytes (with an optional expiry) or a deletion.
//!
//! ## Format
//!
//! ```text
//! kind u8 | fields
//!   1 = put                 | len varint | bytes
//!   2 = put with an expiry  | expires_at_ms varint | len varint | bytes
//!   3 = tombstone           | (nothing): a deletion of unknown time (written
//!                                       before deletion times were kept); never purged
//!   4 = tombstone with time | deleted_at_ms varint (> 0)
//! ```
//!
//! A deletion carries the coordinator's wall-clock time so that every
//! replica derives the same purge time from the record alone
//! ([`super::Record::purge_at_ms`]): a replica that computed it from its own
//! clock at write time would hand a later one back by repair, forever.

use super::codec::{put_bytes, put_varint, Reader};
use crate::error::Result;

const KIND_PUT: u8 = 1;
const KIND_PUT_EXPIRING: u8 = 2;
const KIND_TOMBSTONE: u8 = 3;
const KIND_TOMBSTONE_AT: u8 = 4;

/// The fewest bytes a value encodes to (a tombstone's kind byte).
pub(crate) const MIN_ENCODED_BYTES: usize = 1;

/// One write's payload.
///
/// The expiry belongs to the write, not to the key: two concurrent writes
/// with different TTLs keep their own, and a write that supersedes another
/// also supersedes its TTL, whichever replica merges them in whichever order.
///
/// The derived order (puts before tombstones, then by bytes, then by expiry)
/// only breaks ties deterministically; it says nothing about which write is
/// newer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// The key holds `bytes`.
    Put {
        /// The value.
        bytes: Vec<u8>,
        /// Milliseconds since the Unix epoch after which this write is gone;
        /// `None` never expires.
        expires_at_ms: Option<u64>,
    },
    /// The key was deleted. A deletion is a version like any other, so a
    /// delete supersedes exactly the writes it saw and no others.
    Tombstone {
        /// When the coordinator took the delete, ms since the Unix epoch; 0
        /// when unknown (such a tombstone is never purged).
        deleted_at_ms: u64,
    },
}

impl Value {
    /// A put of `bytes` that never expires.
    pub fn put(bytes: impl Into<Vec<u8>>) -> Value {
        Value::Put {
            bytes: bytes.into(),
            expires_at_ms: None,
        }
    }

    /// A put of `bytes` that expires at `expires_at_ms` (ms since the Unix epoch).
    pub fn put_expiring(bytes: impl Into<Vec<u8>>, expires_at_ms: u64) -> Value {
        Value::Put {
            bytes: bytes.into(),
            expires_at_ms: Some(expires_at_ms),
        }
    }

    /// A deletion taken at `deleted_at_ms` (ms since the Unix epoch; 0 = unknown).
    pub fn tombstone(deleted_at_ms: u64) -> Value {
        Value::Tombstone { deleted_at_ms }
    }

    /// Whether this is a deletion.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Value::Tombstone { .. })
    }

    /// From when this write stops being live for good, for purging: a put's
    /// expiry, a deletion's time. `None` for a put that never expires and for
    /// a deletion of unknown time.
    pub fn dead_since_ms(&self) -> Option<u64> {
        match self {
            Value::Put { expires_at_ms, .. } => *expires_at_ms,
            Value::Tombstone { deleted_at_ms: 0 } => None,
            Value::Tombstone { deleted_at_ms } => Some(*deleted_at_ms),
        }
    }

    /// The bytes of a put; `None` for a tombstone.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Put { bytes, .. } => Some(bytes),
            Value::Tombstone { .. } => None,
        }
    }

    /// The expiry of a put; `None` for a put that never expires and for a tombstone.
    pub fn expires_at_ms(&self) -> Option<u64> {
        match self {
            Value::Put { expires_at_ms, .. } => *expires_at_ms,
            Value::Tombstone { .. } => None,
        }
    }

    /// Whether a read at `now_ms` sees this value: a put that has not expired.
    /// An expired put still counts for causality (like a tombstone) until
    /// compaction drops it.
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        match self {
            Value::Put { expires_at_ms, .. } => expires_at_ms.is_none_or(|t| t > now_ms),
            Value::Tombstone { .. } => false,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Put {
                bytes,
                expires_at_ms: None,
            } => {
                out.push(KIND_PUT);
                put_bytes(out, bytes);
            }
            Value::Put {
                bytes,
                expires_at_ms: Some(t),
            } => {
                out.push(KIND_PUT_EXPIRING);
                put_varint(out, *t);
                put_bytes(out, bytes);
            }
            Value::Tombstone { deleted_at_ms: 0 } => out.push(KIND_TOMBSTONE),
            Value::Tombstone { deleted_at_ms } => {
                out.push(KIND_TOMBSTONE_AT);
                put_varint(out, *deleted_at_ms);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Value> {
        match r.u8()? {
            KIND_PUT => Ok(Value::put(r.bytes()?)),
            KIND_PUT_EXPIRING => {
                let t = r.varint()?;
                Ok(Value::put_expiring(r.bytes()?, t))
            }
            KIND_TOMBSTONE => Ok(Value::tombstone(0)),
            KIND_TOMBSTONE_AT => match r.varint()? {
                // Time 0 is written as kind 3: one encoding per value.
                0 => Err(r.error("tombstone time 0 in the timed form")),
                t => Ok(Value::tombstone(t)),
            },
            _ => Err(r.error("unknown value kind")),
        }
    }
}
