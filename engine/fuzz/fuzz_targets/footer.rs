//! SSTable footer and properties: `Footer::decode`, `Properties::decode`
//! (and the properties block trailer via `decode_payload`).
//!
//! Input: the tail of a table file (typically `properties block | footer`),
//! or a bare footer or properties payload. Tried: `Footer::decode` on the
//! whole input and on its last 52 bytes (also with the footer CRC fixed up,
//! to get past the checksum), `Properties::decode` on the whole input, and
//! the part before the footer as a stored properties block.
#![no_main]

use corekv_engine::format::crc;
use corekv_engine::sstable::block::{decode_payload, BlockError};
use corekv_engine::sstable::meta::{Footer, Properties, TableDecodeError, FOOTER_LEN};
use libfuzzer_sys::fuzz_target;

fn check_footer(b: &[u8; FOOTER_LEN]) {
    if let Ok(f) = Footer::decode(b) {
        assert_eq!(&f.encode(), b, "footer does not re-encode to its bytes");
    }
}

fn check_properties(buf: &[u8]) {
    if let Ok(p) = Properties::decode(buf) {
        assert!(p.min_seq <= p.max_seq && p.tombstones <= p.entries);
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(Properties::decode(&out).as_ref(), Ok(&p), "properties do not round-trip");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Footer::decode(data);
    check_properties(data);

    let before_footer = if data.len() >= FOOTER_LEN {
        let split = data.len() - FOOTER_LEN;
        let mut tail = [0u8; FOOTER_LEN];
        tail.copy_from_slice(&data[split..]);
        check_footer(&tail);
        // Past the checksum: fix the CRC (it covers bytes 0..36 and 40..52).
        let mut covered = tail[..36].to_vec();
        covered.extend_from_slice(&tail[40..]);
        tail[36..40].copy_from_slice(&crc(&covered).to_le_bytes());
        match Footer::decode(&tail) {
            Ok(_) => check_footer(&tail),
            Err(TableDecodeError::Checksum { .. }) => panic!("footer checksum mismatch after fixing it"),
            Err(_) => {}
        }
        &data[..split]
    } else {
        data
    };

    match decode_payload(before_footer) {
        Ok(p) => check_properties(&p),
        Err(BlockError::Checksum { .. } | BlockError::Decode(_)) => {}
    }
});
