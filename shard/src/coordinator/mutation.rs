//! What replication moves between nodes: a key's versioned state.

use std::fmt;

use crate::error::Result;
use crate::topology::Token;

/// What the coordinator and replication need of a key's stored versions.
///
/// The merge must be a lattice join (commutative, associative, idempotent):
/// replicas then converge whatever order writes, hints, read repairs and
/// anti-entropy arrive in, and applying anything twice is harmless. That is
/// what lets the network duplicate and reorder messages and lets a hint be
/// replayed after a crash that forgot it was delivered.
///
/// The coordinator code is generic over this trait so it does not depend on
/// one version representation; the node implements it for its stored record.
pub trait Versioned: Clone + fmt::Debug + Sized {
    /// The join of two states of one key. Fails only when the two cannot be
    /// merged at all (for instance records of different conflict modes).
    fn merge(&self, other: &Self) -> Result<Self>;

    /// A hash of the canonical encoding: equal states have equal digests,
    /// so replicas compare digests (read repair, Merkle trees) instead of states.
    fn digest(&self) -> u64;

    /// Appends the canonical encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes all of `buf` (untrusted bytes; must not panic).
    fn decode(buf: &[u8]) -> Result<Self>;
}

/// One key's new state, sent by a coordinator to each replica.
///
/// It carries the whole state of the key after the coordinator's update, not
/// a delta: a replica merges it into what it has, so a replica that missed
/// earlier writes catches up on them too, and a duplicate is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation<R> {
    /// The key.
    pub key: Vec<u8>,
    /// Its token (computed once by the coordinator).
    pub token: Token,
    /// The key's state to merge.
    pub record: R,
}

impl<R: Versioned> Mutation<R> {
    /// A mutation of `key` (its token computed here).
    pub fn new(key: impl Into<Vec<u8>>, record: R) -> Self {
        let key = key.into();
        Mutation {
            token: crate::topology::token_of(&key),
            key,
            record,
        }
    }
}

/// The node's stored record: the join is [`Record::merge`](crate::versioning::Record::merge) (which refuses
/// records of two conflict modes), the rest its canonical encoding.
impl Versioned for crate::versioning::Record {
    fn merge(&self, other: &Self) -> Result<Self> {
        crate::versioning::Record::merge(self, other)
    }

    fn digest(&self) -> u64 {
        crate::versioning::Record::digest(self)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        crate::versioning::Record::encode(self, out)
    }

    fn decode(buf: &[u8]) -> Result<Self> {
        crate::versioning::Record::decode(buf)
    }
}
