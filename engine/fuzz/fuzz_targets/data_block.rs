//! SSTable data blocks: `decode_block`, `decode_block_checked`,
//! `decode_payload` (lz4 / zstd), `Block::from_payload`, `Block::iter` and
//! `BlockCursor::seek` / `next`.
//!
//! The input is tried three ways:
//! 1. as an on-disk block (`payload | compression u8 | crc32c`);
//! 2. as `payload | compression u8` with a correct CRC appended, so mutations
//!    reach the decompressors and the restart-array checks past the checksum;
//! 3. as a decoded payload (`Block::from_payload`).
#![no_main]

use corekv_engine::format::{crc, decode_body};
use corekv_engine::sstable::block::{
    decode_block, decode_block_checked, decode_payload, Block, BlockCursor, BlockError, Target,
};
use libfuzzer_sys::fuzz_target;

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn exercise(b: &Block, data: &[u8]) {
    let _ = (b.num_restarts(), b.is_empty(), b.charge(), b.data().len());
    let mut keys: Vec<(u64, Vec<u8>, u64)> = Vec::new();
    let mut n = 0usize;
    for e in b.iter() {
        let Ok(e) = e else { break };
        n += 1;
        let _ = decode_body(e.body);
        if keys.len() < 8 {
            keys.push((e.token, e.key, e.seq));
        }
    }
    // An entry takes at least 4 bytes (two varints, a seq, a body length) plus
    // its key, so a block cannot yield more entries than bytes.
    assert!(n <= b.data().len());

    // Targets: some entries (and just before / after them), both ends of the
    // key space, and one made of input bytes.
    let mut targets = vec![
        (0u64, Vec::new(), u64::MAX),
        (u64::MAX, vec![0xff; 8], 0),
        (u64_at(data, 0), data.get(8..16).unwrap_or(&[]).to_vec(), u64_at(data, 16)),
    ];
    for (t, k, s) in &keys {
        targets.push((*t, k.clone(), *s));
        targets.push((*t, k.clone(), s.wrapping_add(1)));
        targets.push((*t, k.clone(), s.wrapping_sub(1)));
    }
    let mut cur = BlockCursor::new();
    for (t, k, s) in &targets {
        let target = Target::new(*t, k, *s);
        if cur.seek(b, &target).is_err() || !cur.valid() {
            continue;
        }
        assert_ne!(
            target.cmp_entry(cur.ikey(), cur.seq()),
            std::cmp::Ordering::Less,
            "seek stopped before its target"
        );
        let _ = (cur.token(), cur.key(), cur.body(b), cur.body_range());
        for _ in 0..4 {
            if cur.next(b).is_err() || !cur.valid() {
                break;
            }
            let _ = decode_body(cur.body(b));
        }
    }
    if cur.seek_to_first(b).is_ok() {
        while cur.valid() {
            if cur.next(b).is_err() {
                break;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. As stored on disk.
    let checked = decode_block_checked(data);
    let plain = decode_block(data);
    assert_eq!(checked.is_ok(), plain.is_ok());
    if let Ok(b) = checked {
        exercise(&b, data);
    }

    // 2. Past the checksum.
    if !data.is_empty() {
        let mut raw = data.to_vec();
        let c = crc(&raw);
        raw.extend_from_slice(&c.to_le_bytes());
        match decode_payload(&raw) {
            Ok(p) => {
                if let Ok(b) = Block::from_payload(p) {
                    exercise(&b, data);
                }
            }
            Err(BlockError::Checksum { .. }) => panic!("checksum mismatch on a block whose checksum was just computed"),
            Err(BlockError::Decode(_)) => {}
        }
    }

    // 3. As a decoded payload.
    if let Ok(b) = Block::from_payload(data.to_vec()) {
        exercise(&b, data);
    }
});
