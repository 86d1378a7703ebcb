//! The binary protocol's decoders: `FrameDecoder`, `Frame::decode`,
//! `Request::decode_body` and `Response::decode_body`, and the node-to-node
//! `PeerRequest::decode_body` and `PeerResponse::decode_body`.
//!
//! Input: `chunk u8 | bytes`. The bytes go through a `FrameDecoder` fed in
//! `chunk`-sized pieces (as a socket delivers them), every frame it yields
//! through both message decoders; then the bytes are decoded directly as the
//! body of every client opcode, and wrapped in a valid header (so mutations
//! get past the header checksum) to decode as a frame. Whatever decodes must
//! re-encode to something that decodes to the same message.
#![no_main]

use corekv_net::frame::{encode_frame, Flags, Frame, FrameDecoder};
use corekv_net::msg::peer::{PeerOpcode, PeerRequest, PeerResponse};
use corekv_net::msg::{Limits, Request, Response};
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 1 << 20;

fn small_limits() -> Limits {
    Limits {
        max_frame: MAX,
        max_key: 64,
        max_value: 4096,
        max_items: 64,
    }
}

fn check_body(opcode: u8, body: &[u8], lim: &Limits) {
    // Node-to-node messages (replication, streaming, gossip opcodes).
    if let Ok(r) = PeerRequest::decode_body(opcode, body, lim) {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(PeerRequest::decode_body(opcode, &out, lim), Ok(r), "peer request does not round-trip");
    }
    if let Some(op) = PeerOpcode::from_u8(opcode) {
        if let Ok(r) = PeerResponse::decode_body(op, body, lim) {
            let mut out = Vec::new();
            r.encode(&mut out);
            assert_eq!(PeerResponse::decode_body(op, &out, lim), Ok(r), "peer response does not round-trip");
        }
    }
    if let Ok(r) = Request::decode_body(opcode, body, lim) {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(
            Request::decode_body(opcode, &out, lim),
            Ok(r),
            "request does not round-trip"
        );
        // Lists iterate exactly their count.
        if let corekv_net::msg::Op::MGet { keys } = r.op {
            assert_eq!(keys.iter().count(), keys.len());
        }
    }
    if let Ok(r) = Response::decode_body(opcode, body, lim) {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(
            Response::decode_body(opcode, &out, lim),
            Ok(r),
            "response does not round-trip"
        );
        if let Response::Ring { nodes, .. } = r {
            assert_eq!(nodes.iter().count(), nodes.len());
            for n in nodes.iter() {
                assert_eq!(n.tokens.iter().count(), n.tokens.len());
            }
        }
        if let Response::Versions { siblings, .. } = r {
            assert_eq!(siblings.iter().count(), siblings.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let lim = small_limits();
    let mut dec = FrameDecoder::new(MAX);
    let mut consumed = 0usize;
    let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
    for c in bytes.chunks(usize::from(chunk).max(1)) {
        dec.feed(c);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    consumed += 22 + f.body.len();
                    seen.push((f.header.request_id, f.body.to_vec()));
                    let _ = Request::decode(&f, &lim);
                    let _ = Response::decode(&f, &lim);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.is_fatal(), "the frame decoder returned a non-fatal error");
                    break;
                }
            }
        }
    }
    assert!(consumed <= bytes.len());
    // The server's path: reads land in `spare` regions (of a size unrelated
    // to what arrives) and are committed; the frames must be the same.
    let mut dec2 = FrameDecoder::new(MAX);
    let mut again: Vec<(u64, Vec<u8>)> = Vec::new();
    let read = usize::from(chunk % 7) + 1;
    let mut rest = bytes;
    'outer: while !rest.is_empty() {
        let room = dec2.spare(usize::from(chunk) + 1);
        let n = read.min(rest.len()).min(room.len());
        room[..n].copy_from_slice(&rest[..n]);
        dec2.commit(n);
        rest = &rest[n..];
        loop {
            match dec2.next_frame() {
                Ok(Some(f)) => again.push((f.header.request_id, f.body.to_vec())),
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    assert_eq!(seen, again, "spare/commit and feed disagree");
    // Same stream in one piece agrees on the first frame.
    if let Ok(Some((f, used))) = Frame::decode(bytes, MAX) {
        assert_eq!(used, 22 + f.body.len());
    }
    // Every client opcode (requests up to DELETE_VERSIONED = 0x11) and the
    // node-to-node ones.
    for opcode in (0..0x12u8).chain([0x40, 0x41, 0x42, 0x80, 0x81, 0xC0]) {
        check_body(opcode, bytes, &lim);
    }
    let mut out = Vec::new();
    let flags = Flags(u16::from(chunk & 0b11));
    if encode_frame(&mut out, chunk, flags, 1, |b| b.extend_from_slice(bytes)).is_ok() {
        if let Ok(Some((f, _))) = Frame::decode(&out, MAX) {
            assert_eq!(f.body, bytes);
            let _ = Request::decode(&f, &lim);
            let _ = Response::decode(&f, &lim);
            let _ = PeerRequest::decode(&f, &lim);
        }
    }
});
