//! WAL segment bytes: the record framing (`log::scan`, `decode_record`,
//! `first_log_no`) and the write-batch payload (`WriteBatch::iter_encoded`,
//! entry bodies).
//!
//! Input: `log_no u64 LE | file bytes`. The file is scanned as a WAL segment
//! of that number; every record payload is walked as a write batch. Because
//! a mutated payload rarely keeps its CRC, the file bytes are also walked as
//! one batch directly, so the batch decoder is fuzzed past the checksum.
#![no_main]

use corekv_engine::format::{decode_body, encode_body, WriteBatch};
use corekv_engine::log::{self, LogEnd, HEADER};
use libfuzzer_sys::fuzz_target;

fn walk_batch(payload: &[u8]) {
    let Ok(it) = WriteBatch::iter_encoded(payload) else {
        return;
    };
    let base = it.base_seq();
    let mut body = Vec::new();
    let mut i = 0u64;
    for op in it {
        // The iterator ends itself after an error.
        let Ok(op) = op else { continue };
        assert_eq!(op.seq, base.wrapping_add(i));
        i += 1;
        // What replay does with each operation: re-encode it as a memtable body.
        body.clear();
        encode_body(op.kind, op.time, op.meta, op.value, &mut body);
        let b = decode_body(&body).expect("a body just encoded decodes");
        assert_eq!((b.kind, b.time, b.meta, b.value), (op.kind, op.time, op.meta, op.value));
        // And arbitrary bytes as a body.
        let _ = decode_body(op.value);
    }
    // Each operation takes at least 13 bytes.
    assert!(i as usize <= payload.len() / 13 + 1);
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_body(data);
    if data.len() < 8 {
        walk_batch(data);
        return;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[..8]);
    let log_no = u64::from_le_bytes(n);
    let file = &data[8..];

    if let Some(first) = log::first_log_no(file) {
        assert!(log::decode_record(file, 0, first).is_ok());
    }
    let sc = log::scan(file, log_no);
    assert!(sc.end <= file.len());
    let mut next = 0;
    for (off, payload) in &sc.records {
        assert_eq!(*off, next);
        next = off + HEADER + payload.len();
        walk_batch(payload);
    }
    assert_eq!(next, sc.end);
    if let Some(p) = sc.later_valid {
        assert!(matches!(sc.why, LogEnd::BadChecksum | LogEnd::Truncated));
        assert!(p > sc.end);
        assert!(log::decode_record(file, p, log_no).is_ok());
    }

    // Past the checksum.
    walk_batch(file);
});
