//! Node-to-node payloads: the bytes a peer (or anyone who reaches a shard
//! port) sends inside the frames of opcodes 0x40-0xC0, after the frame and
//! the `PeerRequest` body decoded (those are the `frame` target's, in
//! `net/fuzz`). Decoders: the gossip message (`membership::wire::decode`),
//! a stored record (`versioning::Record::decode`, MUTATE and RANGE carry
//! them), a causal context (`versioning::Context::decode`), a forwarded
//! write and its outcome (COORDINATE: `cluster::forward::Forwarded::decode`,
//! `decode_outcome`), and the request itself turned into the node's job
//! (`PeerRequest::decode_body` for every peer opcode, then
//! `cluster::inbound::PeerJob::from_request`, which ADMIN and PAXOS go
//! through).
//!
//! Input: any bytes, given to every decoder. Besides "no panic", whatever
//! decodes re-encodes to bytes that decode to the same value.
#![no_main]

use corekv_net::msg::peer::{PeerOpcode, PeerRequest};
use corekv_net::msg::Limits;
use corekv_shard::cluster::forward::{decode_outcome, encode_outcome, Forwarded};
use corekv_shard::cluster::inbound::PeerJob;
use corekv_shard::membership::wire;
use corekv_shard::versioning::{Context, Record};
use libfuzzer_sys::fuzz_target;

const PEER_OPCODES: [PeerOpcode; 8] = [
    PeerOpcode::Mutate,
    PeerOpcode::Read,
    PeerOpcode::Paxos,
    PeerOpcode::Coordinate,
    PeerOpcode::Admin,
    PeerOpcode::MerkleTree,
    PeerOpcode::Range,
    PeerOpcode::Gossip,
];

fn small_limits() -> Limits {
    Limits {
        max_frame: 1 << 20,
        max_key: 256,
        max_value: 4096,
        max_items: 64,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wire::decode(data) {
        let mut out = Vec::new();
        if wire::encode(&m, &mut out).is_ok() {
            assert_eq!(
                wire::decode(&out).ok().as_ref(),
                Some(&m),
                "gossip message does not round-trip"
            );
        }
    }
    if let Ok(r) = Record::decode(data) {
        let out = r.to_bytes();
        assert_eq!(
            Record::decode(&out).ok().as_ref(),
            Some(&r),
            "record does not round-trip"
        );
        let _ = r.digest();
    }
    if let Ok(c) = Context::decode(data) {
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(
            Context::decode(&out).ok().as_ref(),
            Some(&c),
            "context does not round-trip"
        );
    }
    if let Ok(f) = Forwarded::decode(data) {
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(
            Forwarded::decode(&out).ok().as_ref(),
            Some(&f),
            "forwarded write does not round-trip"
        );
    }
    if let Ok(o) = decode_outcome(data) {
        let mut out = Vec::new();
        encode_outcome(&o, &mut out);
        let back = decode_outcome(&out).map(|b| b.map_err(|f| f.kind));
        assert_eq!(back.ok(), Some(o.map_err(|f| f.kind)), "outcome does not round-trip");
    }
    let lim = small_limits();
    for op in PEER_OPCODES {
        if let Ok(req) = PeerRequest::decode_body(op as u8, data, &lim) {
            let _ = PeerJob::from_request(&req);
        }
    }
});
