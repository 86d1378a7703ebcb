//! Binary protocol tests: round trips for every message, partial input,
//! damaged headers, limits, and arbitrary bytes never panicking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use corekv_net::error::FrameError;
use corekv_net::frame::{
    encode_frame, Flags, Frame, FrameDecoder, FrameHeader, OpcodeClass, HEADER_LEN, MAGIC, PROTOCOL_VERSION,
};
use corekv_net::msg::{
    Condition, Consistency, ErrorCode, KeyValue, Limits, List, Node, Op, Opcode, Request, Response, ResponseOpcode,
    SiblingRef, ValueRef, SLOPPY_QUORUM_BIT,
};
use proptest::prelude::*;

const MAX: u32 = 1 << 20;

/// Checks everything that must hold for any valid frame: it decodes whole,
/// every strict prefix is "need more", a byte-at-a-time decoder yields it
/// exactly once, and every strict prefix of its body is refused.
fn check_frame(bytes: &[u8]) -> Frame<'_> {
    for n in 0..bytes.len() {
        assert_eq!(Frame::decode(&bytes[..n], MAX), Ok(None), "prefix of {n} bytes");
    }
    let mut dec = FrameDecoder::new(MAX);
    for (i, b) in bytes.iter().enumerate() {
        dec.feed(std::slice::from_ref(b));
        let got = dec.next_frame().map(|f| f.map(|f| f.body.to_vec()));
        if i + 1 < bytes.len() {
            assert_eq!(got, Ok(None));
        } else {
            assert_eq!(got, Ok(Some(bytes[HEADER_LEN..].to_vec())));
        }
    }
    assert_eq!(dec.buffered(), 0);
    let (frame, used) = Frame::decode(bytes, MAX).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    frame
}

fn rt_req(req: Request<'_>) {
    let mut out = Vec::new();
    req.encode_frame(42, &mut out).unwrap();
    let frame = check_frame(&out);
    assert_eq!(frame.header.opcode, req.op.opcode() as u8);
    assert_eq!(frame.header.request_id, 42);
    assert!(!frame.header.flags.is_response());
    assert_eq!(OpcodeClass::of(frame.header.opcode), OpcodeClass::Client);
    let got = Request::decode(&frame, &Limits::default()).unwrap();
    assert_eq!(got, req);
    // Re-encoding the decoded (wire-backed) form gives the same bytes.
    let mut again = Vec::new();
    got.encode_frame(42, &mut again).unwrap();
    assert_eq!(again, out);
    for n in 0..frame.body.len() {
        assert!(Request::decode_body(frame.header.opcode, &frame.body[..n], &Limits::default()).is_err());
    }
    assert!(Response::decode(&frame, &Limits::default()).is_err());
}

fn rt_resp(resp: Response<'_>) {
    let mut out = Vec::new();
    resp.encode_frame(7, &mut out).unwrap();
    let frame = check_frame(&out);
    assert!(frame.header.flags.is_response());
    assert_eq!(frame.header.flags.is_error(), matches!(resp, Response::Error { .. }));
    let got = Response::decode(&frame, &Limits::default()).unwrap();
    assert_eq!(got, resp);
    let mut again = Vec::new();
    got.encode_frame(7, &mut again).unwrap();
    assert_eq!(again, out);
    for n in 0..frame.body.len() {
        assert!(Response::decode_body(frame.header.opcode, &frame.body[..n], &Limits::default()).is_err());
    }
    assert!(Request::decode(&frame, &Limits::default()).is_err());
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn cons() -> impl Strategy<Value = Consistency> {
    prop_oneof![
        Just(Consistency::One),
        Just(Consistency::Quorum),
        Just(Consistency::All),
        Just(Consistency::LocalQuorum),
        (1u8..).prop_map(Consistency::Count)
    ]
}

fn cond() -> impl Strategy<Value = Condition> {
    prop_oneof![
        Just(Condition::Always),
        Just(Condition::IfAbsent),
        Just(Condition::IfPresent)
    ]
}

/// A request; odd timeouts also allow a sloppy quorum, so the round trips
/// cover the flag with every level.
fn req(c: Consistency, t: u32, op: Op<'_>) -> Request<'_> {
    Request {
        consistency: c,
        timeout_ms: t,
        sloppy_quorum: t % 2 == 1,
        op,
    }
}

proptest! {
    #[test]
    fn get(k in bytes(), c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::Get { key: &k })) }

    #[test]
    fn put(k in bytes(), v in bytes(), ttl in any::<u64>(), cd in cond(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::Put { key: &k, value: &v, ttl_ms: ttl, condition: cd }))
    }

    #[test]
    fn delete(k in bytes(), c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::Delete { key: &k })) }

    #[test]
    fn exists(k in bytes(), c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::Exists { key: &k })) }

    #[test]
    fn mget(ks in prop::collection::vec(bytes(), 0..8), c in cons(), t in any::<u32>()) {
        let keys: Vec<&[u8]> = ks.iter().map(|k| k.as_slice()).collect();
        rt_req(req(c, t, Op::MGet { keys: List::Slice(&keys) }))
    }

    #[test]
    fn mput(kvs in prop::collection::vec((bytes(), bytes()), 0..8), ttl in any::<u64>(), c in cons(), t in any::<u32>()) {
        let e: Vec<KeyValue<'_>> = kvs.iter().map(|(k, v)| KeyValue { key: k, value: v }).collect();
        rt_req(req(c, t, Op::MPut { entries: List::Slice(&e), ttl_ms: ttl }))
    }

    #[test]
    fn scan(s in any::<u64>(), e in any::<u64>(), cur in bytes(), l in any::<u32>(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::Scan { start: s, end: e, cursor: &cur, limit: l }))
    }

    #[test]
    fn list(p in bytes(), cur in bytes(), l in any::<u32>(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::List { prefix: &p, cursor: &cur, limit: l }))
    }

    #[test]
    fn expire(k in bytes(), ttl in any::<u64>(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::Expire { key: &k, ttl_ms: ttl }))
    }

    #[test]
    fn ttl(k in bytes(), c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::Ttl { key: &k })) }

    #[test]
    fn incr(k in bytes(), d in any::<i64>(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::Incr { key: &k, delta: d }))
    }

    #[test]
    fn cas(k in bytes(), x in bytes(), v in bytes(), ttl in any::<u64>(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::Cas { key: &k, expected: &x, value: &v, ttl_ms: ttl }))
    }

    #[test]
    fn ping(c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::Ping)) }

    #[test]
    fn ring_request(c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::Ring)) }

    #[test]
    fn get_versions(k in bytes(), c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::GetVersions { key: &k })) }

    #[test]
    fn put_versioned(k in bytes(), v in bytes(), ttl in any::<u64>(), ctx in bytes(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::PutVersioned { key: &k, value: &v, ttl_ms: ttl, context: &ctx }))
    }

    #[test]
    fn delete_versioned(k in bytes(), ctx in bytes(), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::DeleteVersioned { key: &k, context: &ctx }))
    }

    #[test]
    fn cas_value(k in bytes(), x in prop::option::of(bytes()), v in prop::option::of(bytes()), c in cons(), t in any::<u32>()) {
        rt_req(req(c, t, Op::CasValue { key: &k, expected: x.as_deref(), new: v.as_deref() }))
    }

    #[test]
    fn serial_get(k in bytes(), c in cons(), t in any::<u32>()) { rt_req(req(c, t, Op::SerialGet { key: &k })) }

    #[test]
    fn resp_cas_result(applied in any::<bool>(), v in prop::option::of(bytes())) {
        rt_resp(Response::CasResult { applied, value: v.as_deref() })
    }

    #[test]
    fn resp_versions(ctx in bytes(), sibs in prop::collection::vec((bytes(), any::<u64>()), 0..8)) {
        let s: Vec<SiblingRef<'_>> = sibs.iter().map(|(v, e)| SiblingRef { value: v, expiry_ms: *e }).collect();
        let resp = Response::Versions { context: &ctx, siblings: List::Slice(&s) };
        rt_resp(resp);
        // The decoded list iterates exactly its count, in order.
        let mut out = Vec::new();
        resp.encode(&mut out);
        let Response::Versions { context, siblings } =
            Response::decode_body(ResponseOpcode::Versions as u8, &out, &Limits::default()).unwrap()
        else {
            panic!("not VERSIONS")
        };
        prop_assert_eq!(context, &ctx[..]);
        prop_assert_eq!(siblings.iter().collect::<Vec<_>>(), s);
    }

    #[test]
    fn resp_ok_not_found(_x in 0u8..1) {
        rt_resp(Response::Ok);
        rt_resp(Response::NotFound);
    }

    #[test]
    fn resp_value(v in bytes(), m in bytes(), ttl in any::<u64>()) {
        rt_resp(Response::Value(ValueRef { value: &v, meta: &m, ttl_ms: ttl }))
    }

    #[test]
    fn resp_values(slots in prop::collection::vec(prop::option::of((bytes(), bytes(), any::<u64>())), 0..8)) {
        let s: Vec<Option<ValueRef<'_>>> =
            slots.iter().map(|o| o.as_ref().map(|(v, m, t)| ValueRef { value: v, meta: m, ttl_ms: *t })).collect();
        rt_resp(Response::Values(List::Slice(&s)))
    }

    #[test]
    fn resp_scan_page(kvs in prop::collection::vec((bytes(), bytes()), 0..8), cur in bytes()) {
        let e: Vec<KeyValue<'_>> = kvs.iter().map(|(k, v)| KeyValue { key: k, value: v }).collect();
        rt_resp(Response::ScanPage { entries: List::Slice(&e), next_cursor: &cur })
    }

    #[test]
    fn resp_integer(i in any::<i64>()) { rt_resp(Response::Integer(i)) }

    #[test]
    fn resp_error(code in any::<u16>(), msg in "\\PC{0,30}") {
        rt_resp(Response::Error { code: ErrorCode(code), message: &msg })
    }

    #[test]
    fn resp_ring(
        epoch in any::<u64>(),
        nodes in prop::collection::vec(("\\PC{0,20}", any::<u16>(), prop::collection::vec(any::<u64>(), 0..6)), 0..5),
    ) {
        let n: Vec<Node<'_>> = nodes
            .iter()
            .map(|(a, c, t)| Node { address: a, cores: *c, shard_port: 7400, tokens: List::Slice(t) })
            .collect();
        rt_resp(Response::Ring { epoch, nodes: List::Slice(&n) })
    }

    /// Arbitrary bytes through the decoder, in arbitrary chunks, and every
    /// body through every decoder: errors, never a panic.
    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..300), chunk in 1usize..64) {
        let mut dec = FrameDecoder::new(MAX);
        for c in data.chunks(chunk) {
            dec.feed(c);
            while let Ok(Some(f)) = dec.next_frame() {
                let _ = Request::decode(&f, &Limits::default());
                let _ = Response::decode(&f, &Limits::default());
            }
        }
        for op in 0..=255u8 {
            let _ = Request::decode_body(op, &data, &Limits::default());
            let _ = Response::decode_body(op, &data, &Limits::default());
        }
    }

    /// A valid header over random body bytes: whatever decodes re-encodes to
    /// something that decodes to the same message.
    #[test]
    fn random_bodies_decode_consistently(op in 0u8..0x12, data in prop::collection::vec(any::<u8>(), 0..120)) {
        let lim = Limits::default();
        if let Ok(r) = Request::decode_body(op, &data, &lim) {
            let mut out = Vec::new();
            r.encode(&mut out);
            prop_assert_eq!(Request::decode_body(op, &out, &lim).unwrap(), r);
        }
        if let Ok(r) = Response::decode_body(op, &data, &lim) {
            let mut out = Vec::new();
            r.encode(&mut out);
            prop_assert_eq!(Response::decode_body(op, &out, &lim).unwrap(), r);
        }
    }
}

fn frame_bytes(opcode: u8, flags: Flags, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, opcode, flags, 9, |b| b.extend_from_slice(body)).unwrap();
    out
}

fn ping_frame() -> Vec<u8> {
    let mut out = Vec::new();
    req(Consistency::Quorum, 0, Op::Ping).encode_frame(1, &mut out).unwrap();
    out
}

#[test]
fn header_layout_is_fixed() {
    let h = FrameHeader {
        opcode: 0x02,
        flags: Flags::RESPONSE,
        request_id: 0x0102030405060708,
        body_len: 5,
    };
    let b = h.to_bytes();
    assert_eq!(&b[0..2], b"CK");
    assert_eq!(u16::from_le_bytes([b[0], b[1]]), MAGIC);
    assert_eq!(b[2], PROTOCOL_VERSION);
    assert_eq!(b[3], 0x02);
    assert_eq!(&b[4..6], &[1, 0]);
    assert_eq!(&b[6..14], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(&b[14..18], &[5, 0, 0, 0]);
    assert_eq!(&b[18..22], &crc32c::crc32c(&b[..18]).to_le_bytes());
    assert_eq!(FrameHeader::decode(&b, 5), Ok(Some((h, HEADER_LEN + 5))));
}

#[test]
fn corrupted_header_checksum_is_fatal() {
    let good = ping_frame();
    // Flip every bit of the checksummed bytes past magic and version, one at a time.
    for byte in 3..HEADER_LEN {
        for bit in 0..8 {
            let mut f = good.clone();
            f[byte] ^= 1 << bit;
            let e = Frame::decode(&f, MAX).unwrap_err();
            assert!(
                matches!(e, FrameError::HeaderChecksum { .. }),
                "byte {byte} bit {bit}: {e:?}"
            );
            assert!(e.is_fatal());
        }
    }
}

#[test]
fn bad_magic_is_refused_from_two_bytes() {
    let e = FrameHeader::decode(b"GE", MAX).unwrap_err();
    assert_eq!(
        e,
        FrameError::BadMagic {
            found: u16::from_le_bytes(*b"GE"),
            expected: MAGIC
        }
    );
    assert!(e.is_fatal());
    assert_eq!(e.code(), ErrorCode::BAD_FRAME);
    assert_eq!(FrameHeader::decode(b"C", MAX), Ok(None));
}

#[test]
fn unknown_major_version_is_refused_clearly() {
    let mut f = ping_frame();
    f[2] = 2;
    let e = Frame::decode(&f[..3], MAX).unwrap_err();
    assert_eq!(
        e,
        FrameError::UnsupportedVersion {
            found: 2,
            supported: PROTOCOL_VERSION
        }
    );
    assert!(e.to_string().contains("version 2"));
    assert_eq!(e.code(), ErrorCode::UNSUPPORTED_VERSION);
}

#[test]
fn reserved_flags_are_refused() {
    let f = frame_bytes(0x0D, Flags(1 << 5), &[2, 0]);
    assert_eq!(Frame::decode(&f, MAX), Err(FrameError::ReservedFlags { flags: 1 << 5 }));
}

#[test]
fn oversized_length_is_refused_before_the_body_arrives() {
    let f = frame_bytes(0x01, Flags::default(), &[0u8; 100]);
    let e = Frame::decode(&f[..HEADER_LEN], 99).unwrap_err();
    assert_eq!(e, FrameError::FrameTooLarge { len: 100, max: 99 });
    assert!(e.is_fatal());
    // A header announcing u32::MAX bytes: refused, and the decoder allocates nothing for it.
    let h = FrameHeader {
        opcode: 1,
        flags: Flags::default(),
        request_id: 0,
        body_len: u32::MAX,
    }
    .to_bytes();
    let mut dec = FrameDecoder::new(MAX);
    dec.feed(&h);
    assert!(matches!(dec.next_frame(), Err(FrameError::FrameTooLarge { .. })));
    // The decoder stays failed: the stream has lost its framing.
    dec.feed(&ping_frame());
    assert!(matches!(dec.next_frame(), Err(FrameError::FrameTooLarge { .. })));
}

#[test]
fn unknown_opcode_keeps_the_connection() {
    let mut stream = frame_bytes(0x3F, Flags::default(), b"whatever");
    stream.extend_from_slice(&frame_bytes(0x41, Flags::default(), b""));
    stream.extend_from_slice(&ping_frame());
    let mut dec = FrameDecoder::new(MAX);
    dec.feed(&stream);
    for op in [0x3F, 0x41] {
        let f = dec.next_frame().unwrap().unwrap();
        let e = Request::decode(&f, &Limits::default()).unwrap_err();
        assert_eq!(e, FrameError::UnknownOpcode { opcode: op });
        assert!(!e.is_fatal());
        assert_eq!(e.code(), ErrorCode::UNKNOWN_OPCODE);
        // The server answers with an ERROR response for the same request id.
        let mut s = String::new();
        let resp = Response::from_error(&e, &mut s, 200);
        let mut out = Vec::new();
        resp.encode_frame(f.header.request_id, &mut out).unwrap();
        let (rf, _) = Frame::decode(&out, MAX).unwrap().unwrap();
        assert!(rf.header.flags.is_error());
        assert!(
            matches!(Response::decode(&rf, &Limits::default()), Ok(Response::Error { code, .. }) if code == ErrorCode::UNKNOWN_OPCODE)
        );
    }
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!(Request::decode(&f, &Limits::default()).unwrap().op, Op::Ping);
    assert_eq!(dec.next_frame(), Ok(None));
    assert_eq!(OpcodeClass::of(0x41), OpcodeClass::Replication);
    assert_eq!(OpcodeClass::of(0x80), OpcodeClass::Streaming);
    assert_eq!(OpcodeClass::of(0xC0), OpcodeClass::Gossip);
    assert_eq!(OpcodeClass::of(0), OpcodeClass::Invalid);
}

#[test]
fn malformed_bodies_are_typed_and_not_fatal() {
    let lim = Limits::default();
    // Unknown consistency, zero count, unknown PUT condition, trailing bytes.
    for (op, body) in [
        (Opcode::Get, &[9u8, 0, 0][..]),
        (Opcode::Get, &[4, 0, 0, 0][..]),
        (Opcode::Put, &[1, 0, 1, b'k', 1, b'v', 0, 3][..]),
        (Opcode::Ping, &[1, 0, 0][..]),
    ] {
        let e = Request::decode_body(op as u8, body, &lim).unwrap_err();
        assert!(matches!(e, FrameError::Malformed { .. }), "{op:?}: {e:?}");
        assert!(!e.is_fatal());
        assert_eq!(e.code(), ErrorCode::MALFORMED);
    }
    // Non-UTF-8 error message; bad MGET slot tag.
    assert!(matches!(
        Response::decode_body(ResponseOpcode::Error as u8, &[1, 0, 1, 0xFF], &lim),
        Err(FrameError::Malformed { .. })
    ));
    assert!(matches!(
        Response::decode_body(ResponseOpcode::Values as u8, &[1, 7], &lim),
        Err(FrameError::Malformed { .. })
    ));
    // Error flag on a non-ERROR response.
    let f = frame_bytes(ResponseOpcode::Ok as u8, Flags::RESPONSE.with(Flags::ERROR), b"");
    let (fr, _) = Frame::decode(&f, MAX).unwrap().unwrap();
    assert!(Response::decode(&fr, &lim).is_err());
}

#[test]
fn lengths_and_counts_are_bounded() {
    let lim = Limits {
        max_frame: MAX,
        max_key: 4,
        max_value: 8,
        max_items: 3,
    };
    let enc = |r: Request<'_>| {
        let mut b = Vec::new();
        r.encode(&mut b);
        b
    };
    let long_key = enc(req(Consistency::One, 0, Op::Get { key: b"12345" }));
    assert!(matches!(
        Request::decode_body(1, &long_key, &lim),
        Err(FrameError::LimitExceeded {
            what: "key length",
            len: 5,
            max: 4,
            ..
        })
    ));
    let long_value = enc(req(
        Consistency::One,
        0,
        Op::Put {
            key: b"k",
            value: b"123456789",
            ttl_ms: 0,
            condition: Condition::Always,
        },
    ));
    assert!(matches!(
        Request::decode_body(2, &long_value, &lim),
        Err(FrameError::LimitExceeded {
            what: "value length",
            ..
        })
    ));
    let keys: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
    let many = enc(req(
        Consistency::One,
        0,
        Op::MGet {
            keys: List::Slice(&keys),
        },
    ));
    assert!(matches!(
        Request::decode_body(5, &many, &lim),
        Err(FrameError::LimitExceeded { what: "key count", .. })
    ));
    // A count the remaining bytes cannot hold is refused before any item is read.
    let mut lying = vec![1u8, 0];
    lying.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0x03]); // count = 8,388,607
    lying.push(0);
    let e = Request::decode_body(5, &lying, &Limits::default()).unwrap_err();
    assert!(
        matches!(e, FrameError::LimitExceeded { .. } | FrameError::Malformed { .. }),
        "{e:?}"
    );
    let mut lying = vec![1u8, 0, 200, 1, 0]; // count 200 (< max_items) in 1 byte
    assert!(matches!(
        Request::decode_body(5, &lying, &Limits::default()),
        Err(FrameError::Malformed { .. })
    ));
    lying.truncate(2);
    // A key length of u64::MAX.
    lying.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert!(matches!(
        Request::decode_body(1, &lying, &Limits::default()),
        Err(FrameError::LimitExceeded { .. })
    ));
    // An 11-byte varint.
    let mut v = vec![1u8];
    v.extend_from_slice(&[0x80; 10]);
    v.push(0);
    assert!(matches!(
        Request::decode_body(13, &v, &Limits::default()),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn decoder_handles_many_frames_and_split_reads() {
    let mut stream = Vec::new();
    let keys: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_le_bytes().to_vec()).collect();
    for (i, k) in keys.iter().enumerate() {
        req(Consistency::All, 5, Op::Get { key: k })
            .encode_frame(i as u64, &mut stream)
            .unwrap();
    }
    let mut dec = FrameDecoder::new(MAX);
    let mut seen = 0u64;
    for c in stream.chunks(37) {
        let spare = dec.spare(64);
        spare[..c.len()].copy_from_slice(c);
        dec.commit(c.len());
        while let Some(f) = dec.next_frame().unwrap() {
            assert_eq!(f.header.request_id, seen);
            let r = Request::decode(&f, &Limits::default()).unwrap();
            assert_eq!(
                r.op,
                Op::Get {
                    key: &keys[seen as usize]
                }
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 50);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn from_error_truncates_on_a_char_boundary() {
    let e = FrameError::Malformed {
        opcode: 1,
        offset: 0,
        reason: "é",
    };
    let mut s = String::new();
    for max in 0..80 {
        if let Response::Error { message, .. } = Response::from_error(&e, &mut s, max) {
            assert!(message.len() <= max);
        }
    }
}

/// The consistency byte: tags 1..=5, the sloppy-quorum bit 0x80 on any of
/// them, and every other tag refused as malformed (never a panic, never a
/// dropped connection).
#[test]
fn consistency_tags_and_sloppy_bit() {
    let lim = Limits::default();
    let levels = [
        (Consistency::One, vec![1u8]),
        (Consistency::Quorum, vec![2]),
        (Consistency::All, vec![3]),
        (Consistency::Count(2), vec![4, 2]),
        (Consistency::LocalQuorum, vec![5]),
    ];
    for (level, tag) in &levels {
        assert_eq!(level.tag(), tag[0]);
        for sloppy in [false, true] {
            let r = Request {
                consistency: *level,
                timeout_ms: 7,
                sloppy_quorum: sloppy,
                op: Op::Get { key: b"k" },
            };
            let mut body = Vec::new();
            r.encode(&mut body);
            let mut want = tag.clone();
            if sloppy {
                want[0] |= SLOPPY_QUORUM_BIT;
            }
            want.extend_from_slice(&[7, 1, b'k']);
            assert_eq!(body, want, "{level:?} sloppy={sloppy}");
            assert_eq!(Request::decode_body(Opcode::Get as u8, &body, &lim).unwrap(), r);
        }
    }
    for first in [0u8, 6, 0x7F, SLOPPY_QUORUM_BIT, 0x86, 0xFF] {
        let e = Request::decode_body(Opcode::Get as u8, &[first, 0, 1, b'k'], &lim).unwrap_err();
        assert!(matches!(e, FrameError::Malformed { .. }), "tag {first:#x}: {e:?}");
        assert!(!e.is_fatal());
    }
    // A zero count stays refused with the bit set.
    assert!(Request::decode_body(Opcode::Get as u8, &[0x84, 0, 0, 1, b'k'], &lim).is_err());
}

/// The example in docs/protocol.md, byte for byte.
#[test]
fn docs_example_get() {
    let mut out = Vec::new();
    req(Consistency::Quorum, 0, Op::Get { key: b"k" })
        .encode_frame(1, &mut out)
        .unwrap();
    let header: [u8; 18] = [0x43, 0x4B, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
    assert_eq!(&out[..18], &header);
    assert_eq!(&out[18..22], &crc32c::crc32c(&header).to_le_bytes());
    assert_eq!(&out[18..22], &[0x4A, 0x9C, 0x9D, 0x79]);
    assert_eq!(&out[22..], &[0x02, 0x00, 0x01, b'k']);
}

/// The opcodes of the causal-version messages are fixed on the wire.
#[test]
fn versions_opcodes_are_fixed() {
    assert_eq!(Opcode::GetVersions as u8, 0x0F);
    assert_eq!(Opcode::PutVersioned as u8, 0x10);
    assert_eq!(Opcode::DeleteVersioned as u8, 0x11);
    assert_eq!(ResponseOpcode::Versions as u8, 0x09);
    for op in [Opcode::GetVersions, Opcode::PutVersioned, Opcode::DeleteVersioned] {
        assert_eq!(Opcode::from_u8(op as u8), Some(op));
        assert_eq!(OpcodeClass::of(op as u8), OpcodeClass::Client);
    }
    assert_eq!(ResponseOpcode::from_u8(0x09), Some(ResponseOpcode::Versions));
    assert_eq!(Opcode::CasValue as u8, 0x12);
    assert_eq!(Opcode::SerialGet as u8, 0x13);
    assert_eq!(ResponseOpcode::CasResult as u8, 0x0A);
    assert_eq!(Opcode::from_u8(0x14), None);
    assert_eq!(ResponseOpcode::from_u8(0x0B), None);
}

/// Byte-exact layouts of the causal-version messages (docs/protocol.md).
#[test]
fn versions_layouts_are_fixed() {
    let body = |r: Request<'_>| {
        let mut b = Vec::new();
        r.encode(&mut b);
        b
    };
    assert_eq!(
        body(req(Consistency::Quorum, 300, Op::GetVersions { key: b"k" })),
        [2, 0xAC, 0x02, 1, b'k']
    );
    assert_eq!(
        body(req(
            Consistency::One,
            0,
            Op::PutVersioned {
                key: b"k",
                value: b"vv",
                ttl_ms: 128,
                context: b"\x01\x00",
            }
        )),
        [1, 0, 1, b'k', 2, b'v', b'v', 0x80, 0x01, 2, 1, 0]
    );
    assert_eq!(
        body(req(
            Consistency::All,
            0,
            Op::DeleteVersioned {
                key: b"k",
                context: b"",
            }
        )),
        [3, 0, 1, b'k', 0]
    );
    let sibs = [
        SiblingRef {
            value: b"a",
            expiry_ms: 0,
        },
        SiblingRef {
            value: b"",
            expiry_ms: 0x0102,
        },
    ];
    let mut out = Vec::new();
    Response::Versions {
        context: b"c",
        siblings: List::Slice(&sibs),
    }
    .encode(&mut out);
    assert_eq!(
        out,
        [1, b'c', 2, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]
    );
    // A deleted key: a context and no siblings.
    let mut out = Vec::new();
    Response::Versions {
        context: b"c",
        siblings: List::Slice(&[]),
    }
    .encode(&mut out);
    assert_eq!(out, [1, b'c', 0]);
    assert_eq!(
        Response::decode_body(0x09, &out, &Limits::default()),
        Ok(Response::Versions {
            context: b"c",
            siblings: List::Slice(&[]),
        })
    );
}

/// CAS_VALUE and CAS_RESULT bytes as specified, and their bad input refused.
#[test]
fn cas_value_layout_and_bad_input() {
    let mut b = Vec::new();
    req(
        Consistency::Quorum,
        0,
        Op::CasValue {
            key: b"k",
            expected: None,
            new: Some(b"v"),
        },
    )
    .encode(&mut b);
    assert_eq!(b, [2, 0, 1, b'k', 0, 1, 1, b'v']);
    let mut out = Vec::new();
    Response::CasResult {
        applied: false,
        value: Some(b"x"),
    }
    .encode(&mut out);
    assert_eq!(out, [0, 1, 1, b'x']);
    let lim = Limits {
        max_frame: MAX,
        max_key: 4,
        max_value: 2,
        max_items: 3,
    };
    // Presence tag 2, an over-long value, truncation, trailing bytes.
    for (body, what) in [
        (&[2u8, 0, 1, b'k', 2][..], "bad presence tag"),
        (&[2, 0, 1, b'k', 1, 3, 1, 2, 3, 0][..], "value over max_value"),
        (&[2, 0, 1, b'k', 0][..], "truncated"),
        (&[2, 0, 1, b'k', 0, 0, 9][..], "trailing byte"),
    ] {
        assert!(
            Request::decode_body(Opcode::CasValue as u8, body, &lim).is_err(),
            "{what}"
        );
    }
    assert!(Response::decode_body(ResponseOpcode::CasResult as u8, &[2, 0], &lim).is_err());
    assert!(Response::decode_body(ResponseOpcode::CasResult as u8, &[1, 1, 3, 1, 2, 3], &lim).is_err());
}

/// Bad causal-version bodies: over-long contexts and values, too many
/// siblings, counts the body cannot hold, truncation and trailing bytes are
/// typed errors, never panics, and never fatal to the connection.
#[test]
fn versions_bad_input_is_refused() {
    let lim = Limits {
        max_frame: MAX,
        max_key: 4,
        max_value: 8,
        max_items: 3,
    };
    let enc = |r: Request<'_>| {
        let mut b = Vec::new();
        r.encode(&mut b);
        b
    };
    let long_ctx = [7u8; 5];
    let put = enc(req(
        Consistency::One,
        0,
        Op::PutVersioned {
            key: b"k",
            value: b"v",
            ttl_ms: 0,
            context: &long_ctx,
        },
    ));
    let del = enc(req(
        Consistency::One,
        0,
        Op::DeleteVersioned {
            key: b"k",
            context: &long_ctx,
        },
    ));
    for (op, b) in [(Opcode::PutVersioned, &put), (Opcode::DeleteVersioned, &del)] {
        let e = Request::decode_body(op as u8, b, &lim).unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::LimitExceeded {
                    what: "context length",
                    len: 5,
                    max: 4,
                    ..
                }
            ),
            "{op:?}: {e:?}"
        );
        assert!(!e.is_fatal());
        assert_eq!(e.code(), ErrorCode::TOO_LARGE);
        // Fine under the default limits.
        assert!(Request::decode_body(op as u8, b, &Limits::default()).is_ok());
    }
    let long_value = enc(req(
        Consistency::One,
        0,
        Op::PutVersioned {
            key: b"k",
            value: b"123456789",
            ttl_ms: 0,
            context: b"",
        },
    ));
    assert!(matches!(
        Request::decode_body(Opcode::PutVersioned as u8, &long_value, &lim),
        Err(FrameError::LimitExceeded {
            what: "value length",
            ..
        })
    ));
    let long_key = enc(req(Consistency::One, 0, Op::GetVersions { key: b"12345" }));
    assert!(matches!(
        Request::decode_body(Opcode::GetVersions as u8, &long_key, &lim),
        Err(FrameError::LimitExceeded { what: "key length", .. })
    ));

    // Every strict prefix of a request body, and one trailing byte, fail.
    for (op, b) in [(Opcode::PutVersioned, &put), (Opcode::DeleteVersioned, &del)] {
        for n in 0..b.len() {
            let e = Request::decode_body(op as u8, &b[..n], &Limits::default()).unwrap_err();
            assert!(matches!(e, FrameError::Malformed { .. }), "{op:?} prefix {n}: {e:?}");
        }
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(matches!(
            Request::decode_body(op as u8, &trailing, &Limits::default()),
            Err(FrameError::Malformed {
                reason: "trailing bytes after the message",
                ..
            })
        ));
    }

    let resp = |ctx: &[u8], sibs: &[SiblingRef<'_>]| {
        let mut b = Vec::new();
        Response::Versions {
            context: ctx,
            siblings: List::Slice(sibs),
        }
        .encode(&mut b);
        b
    };
    let v = ResponseOpcode::Versions as u8;
    let sib = |value: &'static [u8]| SiblingRef { value, expiry_ms: 9 };
    // Too many siblings.
    let four = resp(b"c", &[sib(b"a"), sib(b"b"), sib(b"c"), sib(b"d")]);
    assert!(matches!(
        Response::decode_body(v, &four, &lim),
        Err(FrameError::LimitExceeded {
            what: "sibling count",
            len: 4,
            max: 3,
            ..
        })
    ));
    // A sibling value over max_value; a context over max_key.
    assert!(matches!(
        Response::decode_body(v, &resp(b"c", &[sib(b"123456789")]), &lim),
        Err(FrameError::LimitExceeded {
            what: "value length",
            ..
        })
    ));
    assert!(matches!(
        Response::decode_body(v, &resp(&long_ctx, &[]), &lim),
        Err(FrameError::LimitExceeded {
            what: "context length",
            ..
        })
    ));
    // A count the remaining bytes cannot hold (9 bytes a sibling at least) is
    // refused before any sibling is read.
    let lying = [0u8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        Response::decode_body(v, &lying, &Limits::default()),
        Err(FrameError::Malformed {
            reason: "item count exceeds the bytes remaining",
            ..
        })
    ));
    let huge = [0u8, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
    assert!(Response::decode_body(v, &huge, &Limits::default()).is_err());
    // Truncated and trailing.
    let good = resp(b"ctx", &[sib(b"a"), sib(b"bc")]);
    assert!(Response::decode_body(v, &good, &lim).is_ok());
    for n in 0..good.len() {
        assert!(matches!(
            Response::decode_body(v, &good[..n], &lim),
            Err(FrameError::Malformed { .. })
        ));
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Response::decode_body(v, &trailing, &lim),
        Err(FrameError::Malformed {
            reason: "trailing bytes after the message",
            ..
        })
    ));
    // VERSIONS must come as a response, and without the error flag.
    let f = frame_bytes(v, Flags::default(), &good);
    let (fr, _) = Frame::decode(&f, MAX).unwrap().unwrap();
    assert!(matches!(
        Response::decode(&fr, &lim),
        Err(FrameError::WrongDirection { .. })
    ));
    let f = frame_bytes(v, Flags::RESPONSE.with(Flags::ERROR), &good);
    let (fr, _) = Frame::decode(&f, MAX).unwrap().unwrap();
    assert!(Response::decode(&fr, &lim).is_err());
}
