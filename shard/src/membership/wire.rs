//! The byte encoding of a gossip [`Message`]: the opaque `payload` of the
//! node-to-node GOSSIP frame (`docs/protocol.md`, "Gossip payload").
//!
//! The bytes come from other nodes, so decoding trusts nothing: every string
//! length and every count is checked against its limit and against the bytes
//! left before anything is allocated, varints must be in their shortest form,
//! unknown tags and trailing bytes are errors ([`Error::GossipDecode`]). The
//! encoder refuses (writing nothing) a message the decoder would refuse, so a
//! message we send is never one a peer of the same version drops.
//!
//! ## Format
//!
//! ```text
//! message = version u8 (= 1) | from str(1024) | from_address str(1024) | tag u8 | body
//! str(max) = len u16 LE (<= max) | len bytes of UTF-8
//!
//! tag body
//!  1  SYN          seq varint | digests
//!  2  ACK          seq varint | deltas | digests (the requests)
//!  3  ACK2         deltas
//!  4  PING         seq varint
//!  5  PING_ACK     seq varint | generation varint | heartbeat varint
//!  6  PING_REQ     seq varint | target str(1024)
//!  7  INDIRECT_ACK seq varint | target str(1024) | generation varint | heartbeat varint
//!  8  SHUTDOWN     generation varint (the sender is draining: take it for down now)
//!
//! digests = count varint (<= MAX_NODES_PER_MESSAGE)
//!           | count x (id str(1024) | generation varint | heartbeat varint | version varint)
//! deltas  = count varint (<= MAX_NODES_PER_MESSAGE) | count x (id str(1024) | state)
//! state   = generation varint | heartbeat varint | present u8 | entries
//! present: bit 0 address, 1 dc, 2 rack, 3 tokens, 4 status, 5 shard; 6-7 zero
//! entries, in bit order, each present one as version varint | value:
//!   address str(1024) | dc str(256) | rack str(256)
//!   | tokens: count varint (<= MAX_TOKENS_PER_NODE) | count x u64 LE
//!   | status u8: 1 joining, 2 normal, 3 leaving, 4 left
//!   | shard: base u16 LE | cores u16 LE
//! ```
//!
//! Counters (sequence numbers, generations, heartbeats, versions) are varints
//! because they are small or slowly growing and a SYN carries one digest per
//! node every round; tokens are uniformly spread, so fixed 8 bytes is their
//! shortest encoding.

use std::sync::Arc;

use corekv_engine::format::put_varint;

use super::gossip::{Body, Message};
use super::state::{Deltas, Digest, MemberStatus, NodeState, ShardPorts, Versioned};
use crate::codec::{Format, Reader};
use crate::error::{Error, Result};
use crate::topology::{NodeId, Token};

/// The format version this code writes (and the only one it reads).
pub const FORMAT_VERSION: u8 = 1;
/// Longest node id, sender address or node address, in bytes.
pub const MAX_ID_BYTES: usize = 1024;
/// Longest data-center or rack name, in bytes.
pub const MAX_PLACE_BYTES: usize = 256;
/// Most digests in one list and most node states in one list of a message.
/// A SYN carries one digest per known node, so a cluster larger than this
/// needs its SYNs split (or this raised: it costs nothing until used, as the
/// decoder also checks every count against the bytes received).
pub const MAX_NODES_PER_MESSAGE: usize = 4096;
/// Most tokens one node state may carry (the ring itself allows fewer:
/// `Ring::MAX_TOKENS_PER_NODE`).
pub const MAX_TOKENS_PER_NODE: usize = 65_536;

const TAG_SYN: u8 = 1;
const TAG_ACK: u8 = 2;
const TAG_ACK2: u8 = 3;
const TAG_PING: u8 = 4;
const TAG_PING_ACK: u8 = 5;
const TAG_PING_REQ: u8 = 6;
const TAG_INDIRECT_ACK: u8 = 7;
const TAG_SHUTDOWN: u8 = 8;

const HAS_ADDRESS: u8 = 1 << 0;
const HAS_DC: u8 = 1 << 1;
const HAS_RACK: u8 = 1 << 2;
const HAS_TOKENS: u8 = 1 << 3;
const HAS_STATUS: u8 = 1 << 4;
const HAS_SHARD: u8 = 1 << 5;
const ALL_ENTRIES: u8 = HAS_ADDRESS | HAS_DC | HAS_RACK | HAS_TOKENS | HAS_STATUS | HAS_SHARD;

/// Smallest encoding of a digest: empty id (2) and three one-byte varints.
const MIN_DIGEST_BYTES: usize = 5;
/// Smallest encoding of a delta: empty id (2), two one-byte varints and `present`.
const MIN_DELTA_BYTES: usize = 5;

/// Appends the encoding of `msg` to `out`.
///
/// Fails with [`Error::TooLarge`], writing nothing, if a string or a list is
/// over its limit: such a message would be refused by every receiver, and
/// the caller (the gossip driver) is the one that can split or skip it.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    let r = encode_message(msg, out);
    if r.is_err() {
        out.truncate(start);
    }
    debug_assert!(
        r.is_err() || matches!(decode(&out[start..]), Ok(ref back) if back == msg),
        "gossip encoding does not decode back to the message"
    );
    r
}

/// Decodes one whole message (untrusted bytes; never panics). Fails with
/// [`Error::GossipDecode`] naming the offset and what was wrong.
pub fn decode(buf: &[u8]) -> Result<Message> {
    let mut r = Reader::of(Format::Gossip, buf, "gossip message");
    r.version(FORMAT_VERSION)?;
    let from = NodeId(read_str(&mut r, MAX_ID_BYTES)?);
    let from_address = read_str(&mut r, MAX_ID_BYTES)?;
    let body = match r.u8()? {
        TAG_SYN => Body::Syn {
            seq: r.varint()?,
            digests: read_digests(&mut r)?,
        },
        TAG_ACK => Body::Ack {
            seq: r.varint()?,
            deltas: read_deltas(&mut r)?,
            requests: read_digests(&mut r)?,
        },
        TAG_ACK2 => Body::Ack2 {
            deltas: read_deltas(&mut r)?,
        },
        TAG_PING => Body::Ping { seq: r.varint()? },
        TAG_PING_ACK => Body::PingAck {
            seq: r.varint()?,
            generation: r.varint()?,
            heartbeat: r.varint()?,
        },
        TAG_PING_REQ => Body::PingReq {
            seq: r.varint()?,
            target: NodeId(read_str(&mut r, MAX_ID_BYTES)?),
        },
        TAG_INDIRECT_ACK => Body::IndirectAck {
            seq: r.varint()?,
            target: NodeId(read_str(&mut r, MAX_ID_BYTES)?),
            generation: r.varint()?,
            heartbeat: r.varint()?,
        },
        TAG_SHUTDOWN => Body::Shutdown {
            generation: r.varint()?,
        },
        _ => return Err(r.error("unknown gossip message tag")),
    };
    r.finish()?;
    Ok(Message {
        from,
        from_address,
        body,
    })
}

fn encode_message(msg: &Message, out: &mut Vec<u8>) -> Result<()> {
    out.push(FORMAT_VERSION);
    put_str(out, "gossip sender id", &msg.from.0, MAX_ID_BYTES)?;
    put_str(out, "gossip sender address", &msg.from_address, MAX_ID_BYTES)?;
    match &msg.body {
        Body::Syn { seq, digests } => {
            out.push(TAG_SYN);
            put_varint(out, *seq);
            put_digests(out, digests)?;
        }
        Body::Ack { seq, deltas, requests } => {
            out.push(TAG_ACK);
            put_varint(out, *seq);
            put_deltas(out, deltas)?;
            put_digests(out, requests)?;
        }
        Body::Ack2 { deltas } => {
            out.push(TAG_ACK2);
            put_deltas(out, deltas)?;
        }
        Body::Ping { seq } => {
            out.push(TAG_PING);
            put_varint(out, *seq);
        }
        Body::PingAck {
            seq,
            generation,
            heartbeat,
        } => {
            out.push(TAG_PING_ACK);
            put_varint(out, *seq);
            put_varint(out, *generation);
            put_varint(out, *heartbeat);
        }
        Body::PingReq { seq, target } => {
            out.push(TAG_PING_REQ);
            put_varint(out, *seq);
            put_str(out, "gossip probe target", &target.0, MAX_ID_BYTES)?;
        }
        Body::IndirectAck {
            seq,
            target,
            generation,
            heartbeat,
        } => {
            out.push(TAG_INDIRECT_ACK);
            put_varint(out, *seq);
            put_str(out, "gossip probe target", &target.0, MAX_ID_BYTES)?;
            put_varint(out, *generation);
            put_varint(out, *heartbeat);
        }
        Body::Shutdown { generation } => {
            out.push(TAG_SHUTDOWN);
            put_varint(out, *generation);
        }
    }
    Ok(())
}

fn check(what: &'static str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::TooLarge { what, len, max });
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, what: &'static str, s: &str, max: usize) -> Result<()> {
    check(what, s.len(), max)?;
    // Every `max` here is at most 1024, so the checked length fits a u16.
    debug_assert!(max <= usize::from(u16::MAX));
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn read_str(r: &mut Reader<'_>, max: usize) -> Result<String> {
    let b = r.bytes_u16(max)?;
    let s = std::str::from_utf8(b).map_err(|_| r.error("string is not UTF-8"))?;
    Ok(s.to_owned())
}

fn put_digests(out: &mut Vec<u8>, digests: &[Digest]) -> Result<()> {
    check("gossip digest list", digests.len(), MAX_NODES_PER_MESSAGE)?;
    put_varint(out, digests.len() as u64);
    for d in digests {
        put_str(out, "gossip node id", &d.id.0, MAX_ID_BYTES)?;
        put_varint(out, d.generation);
        put_varint(out, d.heartbeat);
        put_varint(out, d.version);
    }
    Ok(())
}

fn read_digests(r: &mut Reader<'_>) -> Result<Vec<Digest>> {
    let n = r.count(MIN_DIGEST_BYTES, MAX_NODES_PER_MESSAGE)?;
    let mut digests = Vec::with_capacity(n);
    for _ in 0..n {
        digests.push(Digest {
            id: NodeId(read_str(r, MAX_ID_BYTES)?),
            generation: r.varint()?,
            heartbeat: r.varint()?,
            version: r.varint()?,
        });
    }
    Ok(digests)
}

fn put_deltas(out: &mut Vec<u8>, deltas: &Deltas) -> Result<()> {
    check("gossip node state list", deltas.len(), MAX_NODES_PER_MESSAGE)?;
    put_varint(out, deltas.len() as u64);
    for (id, state) in deltas {
        put_str(out, "gossip node id", &id.0, MAX_ID_BYTES)?;
        put_state(out, state)?;
    }
    Ok(())
}

fn read_deltas(r: &mut Reader<'_>) -> Result<Deltas> {
    let n = r.count(MIN_DELTA_BYTES, MAX_NODES_PER_MESSAGE)?;
    let mut deltas = Vec::with_capacity(n);
    for _ in 0..n {
        let id = NodeId(read_str(r, MAX_ID_BYTES)?);
        deltas.push((id, read_state(r)?));
    }
    Ok(deltas)
}

fn put_state(out: &mut Vec<u8>, s: &NodeState) -> Result<()> {
    put_varint(out, s.generation);
    put_varint(out, s.heartbeat);
    let mut present = 0;
    for (bit, set) in [
        (HAS_ADDRESS, s.address.is_some()),
        (HAS_DC, s.dc.is_some()),
        (HAS_RACK, s.rack.is_some()),
        (HAS_TOKENS, s.tokens.is_some()),
        (HAS_STATUS, s.status.is_some()),
        (HAS_SHARD, s.shard.is_some()),
    ] {
        if set {
            present |= bit;
        }
    }
    out.push(present);
    if let Some(e) = &s.address {
        put_varint(out, e.version);
        put_str(out, "gossip node address", &e.value, MAX_ID_BYTES)?;
    }
    if let Some(e) = &s.dc {
        put_varint(out, e.version);
        put_str(out, "gossip data center", &e.value, MAX_PLACE_BYTES)?;
    }
    if let Some(e) = &s.rack {
        put_varint(out, e.version);
        put_str(out, "gossip rack", &e.value, MAX_PLACE_BYTES)?;
    }
    if let Some(e) = &s.tokens {
        check("gossip token list", e.value.len(), MAX_TOKENS_PER_NODE)?;
        put_varint(out, e.version);
        put_varint(out, e.value.len() as u64);
        for t in e.value.iter() {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    if let Some(e) = &s.status {
        put_varint(out, e.version);
        out.push(status_byte(e.value));
    }
    if let Some(e) = &s.shard {
        put_varint(out, e.version);
        out.extend_from_slice(&e.value.base.to_le_bytes());
        out.extend_from_slice(&e.value.cores.to_le_bytes());
    }
    Ok(())
}

fn read_state(r: &mut Reader<'_>) -> Result<NodeState> {
    let mut s = NodeState::new(r.varint()?);
    s.heartbeat = r.varint()?;
    let present = r.u8()?;
    if present & !ALL_ENTRIES != 0 {
        return Err(r.error("unknown entry bits in a node state"));
    }
    if present & HAS_ADDRESS != 0 {
        s.address = Some(Versioned::new(r.varint()?, read_str(r, MAX_ID_BYTES)?));
    }
    if present & HAS_DC != 0 {
        s.dc = Some(Versioned::new(r.varint()?, read_str(r, MAX_PLACE_BYTES)?));
    }
    if present & HAS_RACK != 0 {
        s.rack = Some(Versioned::new(r.varint()?, read_str(r, MAX_PLACE_BYTES)?));
    }
    if present & HAS_TOKENS != 0 {
        let version = r.varint()?;
        let n = r.count(8, MAX_TOKENS_PER_NODE)?;
        let mut tokens: Vec<Token> = Vec::with_capacity(n);
        for _ in 0..n {
            tokens.push(r.u64()?);
        }
        s.tokens = Some(Versioned::new(version, Arc::from(tokens)));
    }
    if present & HAS_STATUS != 0 {
        let version = r.varint()?;
        let status = match r.u8()? {
            1 => MemberStatus::Joining,
            2 => MemberStatus::Normal,
            3 => MemberStatus::Leaving,
            4 => MemberStatus::Left,
            _ => return Err(r.error("unknown member status")),
        };
        s.status = Some(Versioned::new(version, status));
    }
    if present & HAS_SHARD != 0 {
        let version = r.varint()?;
        let ports = ShardPorts {
            base: r.u16()?,
            cores: r.u16()?,
        };
        s.shard = Some(Versioned::new(version, ports));
    }
    Ok(s)
}

fn status_byte(s: MemberStatus) -> u8 {
    match s {
        MemberStatus::Joining => 1,
        MemberStatus::Normal => 2,
        MemberStatus::Leaving => 3,
        MemberStatus::Left => 4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = NodeId> {
        "[a-z0-9-]{1,24}".prop_map(NodeId)
    }

    fn addr() -> impl Strategy<Value = String> {
        (1u8..=254, 1u16..).prop_map(|(h, p)| format!("127.0.0.{h}:{p}"))
    }

    fn entry<T: std::fmt::Debug + Clone + 'static>(
        value: impl Strategy<Value = T> + 'static,
    ) -> impl Strategy<Value = Option<Versioned<T>>> {
        proptest::option::of((any::<u64>(), value).prop_map(|(version, value)| Versioned { version, value }))
    }

    fn status() -> impl Strategy<Value = MemberStatus> {
        prop_oneof![
            Just(MemberStatus::Joining),
            Just(MemberStatus::Normal),
            Just(MemberStatus::Leaving),
            Just(MemberStatus::Left)
        ]
    }

    fn node_state() -> impl Strategy<Value = NodeState> {
        (
            (any::<u64>(), any::<u64>()),
            entry(addr()),
            entry("dc[0-9]|europe-west-[0-9]"),
            entry("(r[0-9]{1,2})?"),
            entry(proptest::collection::vec(any::<u64>(), 0..300).prop_map(Arc::from)),
            entry(status()),
            entry((any::<u16>(), any::<u16>()).prop_map(|(base, cores)| ShardPorts { base, cores })),
        )
            .prop_map(
                |((generation, heartbeat), address, dc, rack, tokens, status, shard)| NodeState {
                    generation,
                    heartbeat,
                    address,
                    dc,
                    rack,
                    tokens,
                    status,
                    shard,
                },
            )
    }

    fn digest() -> impl Strategy<Value = Digest> {
        (id(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(id, generation, heartbeat, version)| Digest {
            id,
            generation,
            heartbeat,
            version,
        })
    }

    fn deltas() -> impl Strategy<Value = Deltas> {
        proptest::collection::vec((id(), node_state()), 0..6)
    }

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (any::<u64>(), proptest::collection::vec(digest(), 0..40))
                .prop_map(|(seq, digests)| Body::Syn { seq, digests }),
            (any::<u64>(), deltas(), proptest::collection::vec(digest(), 0..10))
                .prop_map(|(seq, deltas, requests)| Body::Ack { seq, deltas, requests }),
            deltas().prop_map(|deltas| Body::Ack2 { deltas }),
            any::<u64>().prop_map(|seq| Body::Ping { seq }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(seq, generation, heartbeat)| Body::PingAck {
                seq,
                generation,
                heartbeat
            }),
            (any::<u64>(), id()).prop_map(|(seq, target)| Body::PingReq { seq, target }),
            (any::<u64>(), id(), any::<u64>(), any::<u64>()).prop_map(|(seq, target, generation, heartbeat)| {
                Body::IndirectAck {
                    seq,
                    target,
                    generation,
                    heartbeat,
                }
            }),
            any::<u64>().prop_map(|generation| Body::Shutdown { generation }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (id(), addr(), body()).prop_map(|(from, from_address, body)| Message {
            from,
            from_address,
            body,
        })
    }

    fn bytes(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode(msg, &mut out).unwrap();
        out
    }

    /// A node as a real cluster announces it: every entry set, 256 tokens.
    fn full_state(i: u64) -> NodeState {
        NodeState {
            generation: 1_767_000_000_000 + i,
            heartbeat: 4_000 + i,
            address: Some(Versioned::new(1, format!("127.0.0.{}:7000", i + 1))),
            dc: Some(Versioned::new(2, "dc1".to_owned())),
            rack: Some(Versioned::new(3, format!("rack{}", i % 3))),
            tokens: Some(Versioned::new(
                4,
                (0..256u64).map(|t| t.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i).collect(),
            )),
            status: Some(Versioned::new(5, MemberStatus::Normal)),
            shard: Some(Versioned::new(6, ShardPorts { base: 9100, cores: 2 })),
        }
    }

    fn msg(body: Body) -> Message {
        Message {
            from: NodeId::from("node-1"),
            from_address: "127.0.0.1:7000".to_owned(),
            body,
        }
    }

    /// One message of every body variant, with realistic content.
    fn every_variant() -> Vec<Message> {
        let digests: Vec<Digest> = (0..5u64)
            .map(|i| Digest {
                id: NodeId(format!("node-{i}")),
                generation: 1_767_000_000_000 + i,
                heartbeat: 4_000 + i,
                version: 6,
            })
            .collect();
        let mut partial = NodeState::new(1_767_000_000_002);
        partial.heartbeat = 4_100;
        partial.status = Some(Versioned::new(7, MemberStatus::Leaving));
        let deltas: Deltas = vec![
            (NodeId::from("node-1"), full_state(1)),
            (NodeId::from("node-2"), partial),
            (NodeId::from("node-3"), NodeState::new(0)),
        ];
        vec![
            msg(Body::Syn {
                seq: 17,
                digests: digests.clone(),
            }),
            msg(Body::Ack {
                seq: 17,
                deltas: deltas.clone(),
                requests: digests[..2].to_vec(),
            }),
            msg(Body::Ack2 { deltas }),
            msg(Body::Ping { seq: u64::MAX }),
            msg(Body::PingAck {
                seq: 3,
                generation: 1_767_000_000_000,
                heartbeat: 99,
            }),
            msg(Body::PingReq {
                seq: 4,
                target: NodeId::from("node-4"),
            }),
            msg(Body::IndirectAck {
                seq: 4,
                target: NodeId::from("node-4"),
                generation: 1_767_000_000_004,
                heartbeat: 12,
            }),
            msg(Body::Shutdown {
                generation: 1_767_000_000_005,
            }),
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        for m in every_variant() {
            let b = bytes(&m);
            assert_eq!(b[0], FORMAT_VERSION);
            assert_eq!(decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for m in every_variant() {
            let b = bytes(&m);
            for cut in 0..b.len() {
                assert!(
                    matches!(decode(&b[..cut]), Err(Error::GossipDecode { .. })),
                    "{m:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_values_are_errors() {
        let mut b = bytes(&msg(Body::Ping { seq: 1 }));
        b.push(0);
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "trailing bytes",
                ..
            })
        ));

        let mut b = bytes(&msg(Body::Ping { seq: 1 }));
        b[0] = 2;
        let e = decode(&b).unwrap_err();
        assert!(matches!(e, Error::UnsupportedFormat { found: 2, .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "gossip message has format version 2; this build reads version 1"
        );

        // The tag follows version (1), sender id (2 + 6) and address (2 + 14).
        let mut b = bytes(&msg(Body::Ping { seq: 1 }));
        assert_eq!(b[25], TAG_PING);
        b[25] = 9;
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "unknown gossip message tag",
                ..
            })
        ));

        // A status byte of 5: the last byte of a one-node ACK2 whose only entry is a status.
        let mut s = NodeState::new(1);
        s.status = Some(Versioned::new(1, MemberStatus::Left));
        let mut b = bytes(&msg(Body::Ack2 {
            deltas: vec![(NodeId::from("n"), s)],
        }));
        let last = b.len() - 1;
        assert_eq!(b[last], 4);
        b[last] = 5;
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "unknown member status",
                ..
            })
        ));
        b[last] = 0;
        assert!(decode(&b).is_err());
        // And an entry bit this version does not define.
        let present = last - 2;
        assert_eq!(b[present], HAS_STATUS);
        b[last] = 4;
        b[present] |= 1 << 6;
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "unknown entry bits in a node state",
                ..
            })
        ));
    }

    #[test]
    fn non_shortest_varints_are_errors() {
        // PING seq 1 written as two bytes (0x81 0x00) instead of one.
        let mut b = bytes(&msg(Body::Ping { seq: 1 }));
        let last = b.len() - 1;
        b[last] = 0x81;
        b.push(0x00);
        assert!(matches!(decode(&b), Err(Error::GossipDecode { .. })));
    }

    /// A message header (version, sender, address) followed by `tag`.
    fn header(tag: u8) -> Vec<u8> {
        let mut b = vec![FORMAT_VERSION];
        put_str(&mut b, "id", "n", MAX_ID_BYTES).unwrap();
        put_str(&mut b, "addr", "127.0.0.1:1", MAX_ID_BYTES).unwrap();
        b.push(tag);
        b
    }

    #[test]
    fn over_limit_counts_are_refused_before_allocating() {
        // A SYN announcing one digest more than the limit, in a few bytes:
        // refused on the count, whatever follows.
        let mut b = header(TAG_SYN);
        put_varint(&mut b, 1);
        put_varint(&mut b, (MAX_NODES_PER_MESSAGE + 1) as u64);
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "count over the format's limit",
                ..
            })
        ));
        // Within the limit but larger than the bytes received: refused too,
        // before a vector of that size exists.
        let mut b = header(TAG_ACK2);
        put_varint(&mut b, MAX_NODES_PER_MESSAGE as u64);
        b.extend_from_slice(&[0; 64]);
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "count larger than the bytes left",
                ..
            })
        ));
        // A node state announcing 65,537 tokens.
        let mut b = header(TAG_ACK2);
        put_varint(&mut b, 1);
        put_str(&mut b, "id", "n", MAX_ID_BYTES).unwrap();
        b.extend_from_slice(&[1, 1, HAS_TOKENS, 1]);
        put_varint(&mut b, (MAX_TOKENS_PER_NODE + 1) as u64);
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "count over the format's limit",
                ..
            })
        ));
        // A node id of 1025 bytes announced (and present).
        let mut b = vec![FORMAT_VERSION];
        b.extend_from_slice(&1025u16.to_le_bytes());
        b.extend_from_slice(&[b'a'; 1025]);
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                offset: 3,
                reason: "length over the limit",
                ..
            })
        ));
        // A rack of 257 bytes.
        let mut b = header(TAG_ACK2);
        put_varint(&mut b, 1);
        put_str(&mut b, "id", "n", MAX_ID_BYTES).unwrap();
        b.extend_from_slice(&[1, 1, HAS_RACK, 1]);
        b.extend_from_slice(&257u16.to_le_bytes());
        b.extend_from_slice(&[b'r'; 257]);
        assert!(matches!(
            decode(&b),
            Err(Error::GossipDecode {
                reason: "length over the limit",
                ..
            })
        ));
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would() {
        let mut out = vec![9];
        let long = Message {
            from: NodeId("x".repeat(MAX_ID_BYTES + 1)),
            ..msg(Body::Ping { seq: 1 })
        };
        assert!(matches!(
            encode(&long, &mut out),
            Err(Error::TooLarge {
                len: 1025,
                max: 1024,
                ..
            })
        ));
        assert_eq!(out, [9], "nothing written on failure");

        let digests = vec![Digest::nothing(NodeId::from("n")); MAX_NODES_PER_MESSAGE + 1];
        assert!(matches!(
            encode(&msg(Body::Syn { seq: 1, digests }), &mut out),
            Err(Error::TooLarge {
                max: MAX_NODES_PER_MESSAGE,
                ..
            })
        ));
        let mut s = NodeState::new(1);
        s.dc = Some(Versioned::new(1, "d".repeat(MAX_PLACE_BYTES + 1)));
        assert!(encode(
            &msg(Body::Ack2 {
                deltas: vec![(NodeId::from("n"), s)]
            }),
            &mut out
        )
        .is_err());
        let mut s = NodeState::new(1);
        s.tokens = Some(Versioned::new(1, vec![0; MAX_TOKENS_PER_NODE + 1].into()));
        assert!(encode(
            &msg(Body::Ack2 {
                deltas: vec![(NodeId::from("n"), s)]
            }),
            &mut out
        )
        .is_err());
        assert_eq!(out, [9]);

        // Exactly at the limits is fine.
        let mut s = full_state(0);
        s.tokens = Some(Versioned::new(1, vec![7; MAX_TOKENS_PER_NODE].into()));
        s.rack = Some(Versioned::new(1, "r".repeat(MAX_PLACE_BYTES)));
        let m = Message {
            from: NodeId("i".repeat(MAX_ID_BYTES)),
            ..msg(Body::Ack2 {
                deltas: vec![(NodeId::from("n"), s)],
            })
        };
        assert_eq!(decode(&bytes(&m)).unwrap(), m);
        let digests = vec![Digest::nothing(NodeId::from("n")); MAX_NODES_PER_MESSAGE];
        let m = msg(Body::Syn { seq: 1, digests });
        assert_eq!(decode(&bytes(&m)).unwrap(), m);
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in message()) {
            let b = bytes(&m);
            prop_assert_eq!(decode(&b).unwrap(), m);
            // Canonical: one message, one encoding.
            prop_assert_eq!(bytes(&decode(&b).unwrap()), b);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&b);
        }

        /// Damage anywhere in a valid message: an error or another valid
        /// message, never a panic; whatever decodes re-encodes to the bytes.
        #[test]
        fn damaged_messages_never_panic(m in message(), at in any::<prop::sample::Index>(), x in 1u8..) {
            let mut b = bytes(&m);
            let i = at.index(b.len());
            b[i] ^= x;
            if let Ok(back) = decode(&b) {
                prop_assert_eq!(bytes(&back), b);
            }
        }
    }
}
