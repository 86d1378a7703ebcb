//! A client write forwarded by a node that holds no replica of the key to
//! one that does (node-to-node COORDINATE): in `causal` mode only a replica
//! may mint the key's next version (docs/versions.md), so the first node to
//! receive the write hands it on, once.
//!
//! ## Format (docs/protocol.md, "COORDINATE payload")
//!
//! ```text
//! request: version u8 (1 or 2) | token u64 LE | key_len u32 LE | key
//!          | has_value u8 (0/1) | [value_len u32 LE | value]
//!          | expiry_ms u64 LE | has_context u8 (0/1) | [context_len u32 LE | context]
//!          | consistency u8 (1 ONE, 2 TWO, 3 QUORUM, 4 ALL, 5 LOCAL_QUORUM) | timeout_ms u64 LE
//!          | version 2 only: flags u8 (bit 0: sloppy quorum allowed; other bits 0)
//! outcome: 0 (done) | 1 kind u8 | message_len u32 LE | message (UTF-8)
//! ```
//!
//! A write without flags is encoded as version 1, so a node of the previous
//! release still takes it; one that allows a sloppy quorum needs version 2,
//! which such a node refuses cleanly (unknown format version) rather than
//! coordinating it strictly.

use crate::codec::Reader;
use crate::coordinator::Consistency;
use crate::error::Result;
use crate::store::{Failure, FailureKind, Key};

/// The format without flags.
const VERSION_1: u8 = 1;
/// The format with the trailing flags byte.
const VERSION_2: u8 = 2;
/// Flags bit: a sloppy quorum is allowed.
const FLAG_SLOPPY: u8 = 0x01;
/// Bounds for decoding (the frame is bounded too; these keep one field sane).
const MAX_KEY: usize = 1 << 16;
const MAX_VALUE: usize = 1 << 30;
const MAX_CONTEXT: usize = 1 << 20;
const MAX_MESSAGE: usize = 1 << 16;

/// A forwarded write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The key.
    pub key: Key,
    /// The value; `None` deletes.
    pub value: Option<Vec<u8>>,
    /// Absolute expiry, 0 = none.
    pub expiry_ms: u64,
    /// The client's context, if it sent one.
    pub context: Option<Vec<u8>>,
    /// Acks required.
    pub consistency: Consistency,
    /// Deadline from receipt.
    pub timeout_ms: u64,
    /// Whether a down replica's copy may go to a fallback node (with a hint
    /// for it) and count toward the level.
    pub sloppy: bool,
}

fn level_byte(c: Consistency) -> u8 {
    match c {
        Consistency::One => 1,
        Consistency::Two => 2,
        Consistency::Quorum => 3,
        Consistency::All => 4,
        Consistency::LocalQuorum => 5,
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Bounded by the frame limit long before u32 overflows.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

impl Forwarded {
    /// Appends the request's encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(if self.sloppy { VERSION_2 } else { VERSION_1 });
        out.extend_from_slice(&self.key.token.to_le_bytes());
        put_bytes(out, &self.key.bytes);
        match &self.value {
            Some(v) => {
                out.push(1);
                put_bytes(out, v);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.expiry_ms.to_le_bytes());
        match &self.context {
            Some(c) => {
                out.push(1);
                put_bytes(out, c);
            }
            None => out.push(0),
        }
        out.push(level_byte(self.consistency));
        out.extend_from_slice(&self.timeout_ms.to_le_bytes());
        if self.sloppy {
            out.push(FLAG_SLOPPY);
        }
    }

    /// Decodes a request.
    pub fn decode(buf: &[u8]) -> Result<Forwarded> {
        let mut r = Reader::new(buf, "forwarded write");
        let version = r.u8()?;
        if version != VERSION_1 && version != VERSION_2 {
            return Err(crate::error::Error::UnsupportedFormat {
                what: "forwarded write (COORDINATE payload)".to_owned(),
                found: u32::from(version),
                known: format!("{VERSION_1} or {VERSION_2}"),
            });
        }
        let token = r.u64()?;
        let key = r.bytes_u32(MAX_KEY)?.to_vec();
        let value = match r.u8()? {
            0 => None,
            1 => Some(r.bytes_u32(MAX_VALUE)?.to_vec()),
            _ => return Err(r.error("bad value flag")),
        };
        let expiry_ms = r.u64()?;
        let context = match r.u8()? {
            0 => None,
            1 => Some(r.bytes_u32(MAX_CONTEXT)?.to_vec()),
            _ => return Err(r.error("bad context flag")),
        };
        let consistency = match r.u8()? {
            1 => Consistency::One,
            2 => Consistency::Two,
            3 => Consistency::Quorum,
            4 => Consistency::All,
            5 => Consistency::LocalQuorum,
            _ => return Err(r.error("unknown consistency")),
        };
        let timeout_ms = r.u64()?;
        let sloppy = if version == VERSION_2 {
            match r.u8()? {
                0 => false,
                FLAG_SLOPPY => true,
                _ => return Err(r.error("unknown flags")),
            }
        } else {
            false
        };
        r.finish()?;
        Ok(Forwarded {
            key: Key { token, bytes: key },
            value,
            expiry_ms,
            context,
            consistency,
            timeout_ms,
            sloppy,
        })
    }
}

fn kind_byte(k: FailureKind) -> u8 {
    match k {
        FailureKind::TooLarge => 1,
        FailureKind::Invalid => 2,
        FailureKind::NotInteger => 3,
        FailureKind::Overflow => 4,
        FailureKind::Unavailable => 5,
        FailureKind::Overloaded => 6,
        FailureKind::Timeout => 8,
        FailureKind::DiskFull => 9,
        FailureKind::Fenced => 10,
        _ => 7,
    }
}

/// Encodes a forwarded write's outcome.
pub fn encode_outcome(r: &std::result::Result<(), Failure>, out: &mut Vec<u8>) {
    match r {
        Ok(()) => out.push(0),
        Err(f) => {
            out.push(1);
            out.push(kind_byte(f.kind));
            put_bytes(out, &f.message.as_bytes()[..f.message.len().min(MAX_MESSAGE)]);
        }
    }
}

/// Decodes a forwarded write's outcome.
pub fn decode_outcome(buf: &[u8]) -> Result<std::result::Result<(), Failure>> {
    let mut r = Reader::new(buf, "forwarded outcome");
    let out = match r.u8()? {
        0 => Ok(()),
        1 => {
            let kind = match r.u8()? {
                1 => FailureKind::TooLarge,
                2 => FailureKind::Invalid,
                3 => FailureKind::NotInteger,
                4 => FailureKind::Overflow,
                5 => FailureKind::Unavailable,
                6 => FailureKind::Overloaded,
                8 => FailureKind::Timeout,
                9 => FailureKind::DiskFull,
                10 => FailureKind::Fenced,
                _ => FailureKind::Internal,
            };
            let msg = String::from_utf8_lossy(r.bytes_u32(MAX_MESSAGE)?).into_owned();
            Err(Failure::new(kind, msg))
        }
        _ => return Err(r.error("unknown outcome")),
    };
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Forwarded {
        Forwarded {
            key: Key::new(b"user:1"),
            value: Some(b"v".to_vec()),
            expiry_ms: 42,
            context: Some(vec![1, 2, 3]),
            consistency: Consistency::Quorum,
            timeout_ms: 2000,
            sloppy: false,
        }
    }

    #[test]
    fn requests_and_outcomes_round_trip() {
        for f in [
            sample(),
            Forwarded {
                value: None,
                context: None,
                consistency: Consistency::One,
                ..sample()
            },
            Forwarded {
                consistency: Consistency::LocalQuorum,
                sloppy: true,
                ..sample()
            },
            Forwarded {
                consistency: Consistency::All,
                sloppy: true,
                value: None,
                ..sample()
            },
        ] {
            let mut b = Vec::new();
            f.encode(&mut b);
            assert_eq!(Forwarded::decode(&b).unwrap(), f);
        }
        for o in [Ok(()), Err(Failure::new(FailureKind::Unavailable, "2 of 3"))] {
            let mut b = Vec::new();
            encode_outcome(&o, &mut b);
            assert_eq!(decode_outcome(&b).unwrap(), o);
        }
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_an_error() {
        for f in [
            sample(),
            Forwarded {
                sloppy: true,
                ..sample()
            },
        ] {
            let mut b = Vec::new();
            f.encode(&mut b);
            for n in 0..b.len() {
                assert!(Forwarded::decode(&b[..n]).is_err(), "prefix {n}");
            }
            b.push(0);
            assert!(Forwarded::decode(&b).is_err());
        }
    }

    /// A strict write keeps version 1 (a node of the previous release takes
    /// it); a sloppy one is version 2 with its flags byte last.
    #[test]
    fn versions_and_flags() {
        let mut strict = Vec::new();
        sample().encode(&mut strict);
        assert_eq!(strict[0], 1);
        let mut sloppy = Vec::new();
        Forwarded {
            sloppy: true,
            ..sample()
        }
        .encode(&mut sloppy);
        assert_eq!(sloppy[0], 2);
        assert_eq!(sloppy.len(), strict.len() + 1);
        assert_eq!(sloppy.last(), Some(&1));
        // Version 2 without the sloppy flag decodes as a strict write.
        let mut v2 = strict.clone();
        v2[0] = 2;
        v2.push(0);
        assert_eq!(Forwarded::decode(&v2).unwrap(), sample());
        // Unknown flags and unknown versions are refused.
        for flags in [2u8, 0x80, 0xFF] {
            let mut bad = v2.clone();
            *bad.last_mut().unwrap() = flags;
            assert!(Forwarded::decode(&bad).is_err(), "flags {flags:#x}");
        }
        for version in [0u8, 3, 0xFF] {
            let mut bad = strict.clone();
            bad[0] = version;
            assert!(Forwarded::decode(&bad).is_err(), "version {version}");
        }
        // An unknown consistency byte is refused, never mapped to a level.
        let level_at = strict.len() - 9;
        for level in [0u8, 6, 0x85] {
            let mut bad = strict.clone();
            bad[level_at] = level;
            assert!(Forwarded::decode(&bad).is_err(), "level {level:#x}");
        }
    }
}
