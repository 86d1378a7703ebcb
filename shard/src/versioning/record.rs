//! The version metadata and values stored for one key, and their bytes.
//!
//! ## Format
//!
//! ```text
//! version u8 = 1 | mode u8 | body
//!   mode 1 = causal: a DVV set (see `dvv.rs`)
//!   mode 2 = lww:    ts u64 LE | actor u64 LE | value (see `value.rs`)
//! ```
//!
//! Decoding checks every length against the bytes left before allocating,
//! every ordering and range invariant, shortest-form varints and the absence
//! of trailing bytes, so the bytes a decoder accepts are exactly the canonical
//! encodings. There is no checksum: records live inside WAL records and
//! SSTable blocks, which carry their own.

use xxhash_rust::xxh3::xxh3_64;

use super::actor::Actor;
use super::codec::reader;
use super::dvv::Dvv;
use super::hlc::Timestamp;
use super::keyspace::ConflictMode;
use super::lww::LwwRegister;
use super::value::Value;
use crate::error::{Error, Result};

const MODE_CAUSAL: u8 = 1;
const MODE_LWW: u8 = 2;

/// One key's stored versions, in its keyspace's conflict mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// A `causal` keyspace's siblings and clock.
    Causal(Dvv),
    /// An `lww` keyspace's newest write.
    Lww(LwwRegister),
}

impl Record {
    /// The format version byte this code writes (and the only one it reads).
    pub const FORMAT_VERSION: u8 = 1;

    /// The conflict mode the record belongs to.
    pub fn mode(&self) -> ConflictMode {
        match self {
            Record::Causal(_) => ConflictMode::Causal,
            Record::Lww(_) => ConflictMode::Lww,
        }
    }

    /// The merge of two replicas' records ([`Dvv::sync`] or [`LwwRegister::merge`]).
    ///
    /// Fails with [`Error::ModeMismatch`] for records of different modes: a
    /// keyspace's mode is fixed, so that is corruption or a bug, and guessing
    /// which side to keep could lose writes.
    pub fn merge(&self, other: &Record) -> Result<Record> {
        match (self, other) {
            (Record::Causal(a), Record::Causal(b)) => Ok(Record::Causal(Dvv::sync(a, b))),
            (Record::Lww(a), Record::Lww(b)) => Ok(Record::Lww(a.merge(b))),
            _ => Err(Error::ModeMismatch {
                left: self.mode(),
                right: other.mode(),
            }),
        }
    }

    /// Whether a read finds nothing: no sibling (or the winning write) is a put.
    pub fn is_deleted(&self) -> bool {
        match self {
            Record::Causal(d) => d.is_deleted(),
            Record::Lww(r) => r.value.is_tombstone(),
        }
    }

    /// The time after which no put of the record is live; `None` when one
    /// never expires or there is no put. Expiry belongs to each write (see
    /// [`Value`]); this is what the storage engine's per-entry expiry gets.
    pub fn expires_at_ms(&self) -> Option<u64> {
        match self {
            Record::Causal(d) => d.expires_at_ms(),
            Record::Lww(r) => r.value.expires_at_ms(),
        }
    }

    /// When this record may be dropped from storage: `grace_ms` after the
    /// last of its writes stopped being live (the latest deletion time or
    /// put expiry), if every one of them does. `None` while some put never
    /// expires, a deletion's time is unknown, or there is no write at all.
    ///
    /// Until then the record keeps its deletions' causality, so a stale copy
    /// of an older write arriving by repair or hint is recognized as
    /// superseded; the grace period is the time repair has to spread the
    /// deletion to every replica (Cassandra's `gc_grace_seconds`). A replica
    /// that missed the deletion for longer can bring the older write back.
    /// Derived from the record alone, so every replica agrees on it.
    pub fn purge_at_ms(&self, grace_ms: u64) -> Option<u64> {
        let mut latest: Option<u64> = None;
        let mut any = false;
        let values: Vec<&Value> = match self {
            Record::Causal(d) => d.values().collect(),
            Record::Lww(r) => vec![&r.value],
        };
        for v in values {
            any = true;
            let t = v.dead_since_ms()?;
            latest = Some(latest.map_or(t, |l: u64| l.max(t)));
        }
        if !any {
            return None;
        }
        latest.map(|t| t.saturating_add(grace_ms))
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(Self::FORMAT_VERSION);
        match self {
            Record::Causal(d) => {
                out.push(MODE_CAUSAL);
                d.encode(out);
            }
            Record::Lww(r) => {
                out.push(MODE_LWW);
                out.extend_from_slice(&r.ts.as_u64().to_le_bytes());
                out.extend_from_slice(&r.actor.0.to_le_bytes());
                r.value.encode(out);
            }
        }
    }

    /// The canonical encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a record from untrusted bytes (all of `buf`). Never panics.
    pub fn decode(buf: &[u8]) -> Result<Record> {
        let mut r = reader(buf, "record");
        r.version(Self::FORMAT_VERSION)?;
        let record = match r.u8()? {
            MODE_CAUSAL => Record::Causal(Dvv::decode(&mut r)?),
            MODE_LWW => {
                let ts = Timestamp::from_u64(r.u64()?);
                let actor = Actor(r.u64()?);
                Record::Lww(LwwRegister::new(ts, actor, Value::decode(&mut r)?))
            }
            _ => return Err(r.error("unknown conflict mode")),
        };
        r.finish()?;
        Ok(record)
    }

    /// xxh3-64 of the canonical encoding: equal records have equal digests, so
    /// replicas compare digests (reads, Merkle trees) instead of values.
    pub fn digest(&self) -> u64 {
        xxh3_64(&self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Context, Limits};
    use super::*;

    #[test]
    fn layout_of_an_lww_record() {
        let r = Record::Lww(LwwRegister::new(
            Timestamp::from_u64(0x0102),
            Actor(7),
            Value::put_expiring("hi", 300),
        ));
        let mut want = vec![1, 2];
        want.extend_from_slice(&0x0102u64.to_le_bytes());
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&[2, 0xac, 0x02, 2, b'h', b'i']);
        assert_eq!(r.to_bytes(), want);
        assert_eq!(Record::decode(&want).unwrap(), r);
        assert_eq!(r.expires_at_ms(), Some(300));
        assert_eq!(r.purge_at_ms(1000), Some(1300));
        // A timed deletion is kind 4 and its varint; time 0 keeps kind 3.
        let del = |t| {
            Record::Lww(LwwRegister::new(
                Timestamp::from_u64(0x0102),
                Actor(7),
                Value::tombstone(t),
            ))
        };
        let head = &want[..18];
        assert_eq!(del(300).to_bytes(), [head, &[4, 0xac, 0x02]].concat());
        assert_eq!(del(0).to_bytes(), [head, &[3]].concat());
        assert_eq!(Record::decode(&del(300).to_bytes()).unwrap(), del(300));
        assert_eq!(del(300).purge_at_ms(1000), Some(1300));
        assert_eq!(
            del(0).purge_at_ms(1000),
            None,
            "a deletion of unknown time is never purged"
        );
        assert!(
            Record::decode(&[head, &[4, 0]].concat()).is_err(),
            "time 0 has one encoding: kind 3"
        );
    }

    #[test]
    fn layout_of_a_causal_record() {
        let l = Limits::default();
        let d = Dvv::new()
            .update(&Context::new(), Actor(5), Timestamp::ZERO, Value::put("a"), &l)
            .unwrap();
        let d = d
            .update(&Context::new(), Actor(5), Timestamp::ZERO, Value::tombstone(0), &l)
            .unwrap();
        let r = Record::Causal(d);
        let mut want = vec![1, 1, 1];
        want.extend_from_slice(&5u64.to_le_bytes());
        // counter 2, two siblings: dot 2 (delta 0) tombstone, dot 1 (delta 0) "a".
        want.extend_from_slice(&[2, 2, 0, 3, 0, 1, 1, b'a']);
        assert_eq!(r.to_bytes(), want);
        assert_eq!(Record::decode(&want).unwrap(), r);
        assert!(!r.is_deleted());
    }

    #[test]
    fn rejects_bad_bytes() {
        let lww = Record::Lww(LwwRegister::new(Timestamp::ZERO, Actor(1), Value::tombstone(0))).to_bytes();
        for bad in [
            &[][..],
            &[2, 2][..],
            &[1, 3][..],
            &lww[..lww.len() - 1],
            &[&lww[..], &[0]].concat()[..],
            // A sibling count over the counter; a dot below 1; zero counter.
            &[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 3, 0, 3][..],
            &[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 0, 3, 1, 3][..],
            &[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            // An entry count the bytes cannot hold.
            &[1, 1, 0xff, 0xff, 0x03][..],
        ] {
            assert!(Record::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_do_not_merge() {
        let a = Record::Causal(Dvv::new());
        let b = Record::Lww(LwwRegister::new(Timestamp::ZERO, Actor(1), Value::tombstone(0)));
        assert!(matches!(a.merge(&b), Err(Error::ModeMismatch { .. })));
        assert_eq!(a.merge(&a).unwrap(), a);
        assert_eq!(b.merge(&b).unwrap(), b);
    }
}
