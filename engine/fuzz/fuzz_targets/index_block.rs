//! SSTable index blocks: `Block::from_payload` then `decode_index`, then
//! lookups with `Index::find`.
//!
//! Input: an index block payload (as `read_meta` returns it, after the
//! trailer check).
#![no_main]

use corekv_engine::format::{cmp_internal, Token};
use corekv_engine::sstable::block::Block;
use corekv_engine::sstable::meta::{decode_index, Index};
use libfuzzer_sys::fuzz_target;

fn use_index(idx: &Index, data_end: u64, data: &[u8]) {
    let mut prev_end = 0u64;
    for i in 0..idx.len() {
        let e = idx.get(i).expect("entry below len");
        assert!(e.handle.offset >= prev_end, "blocks overlap");
        prev_end = e.handle.offset + e.handle.size;
        assert!(prev_end <= data_end, "block past the data");
        let _ = idx.key(e);
    }
    assert!(idx.get(idx.len()).is_none());
    let _ = idx.memory();

    // Keys ascend strictly, so each entry's own key finds that entry.
    for i in 0..idx.len().min(64) {
        let e = *idx.get(i).expect("entry below len");
        let k = idx.key(&e).to_vec();
        assert_eq!(idx.find(e.token, &k, e.seq), Some(i), "entry {i} not found by its own key");
        if i > 0 {
            let p = *idx.get(i - 1).expect("entry below len");
            assert_eq!(
                cmp_internal(p.token, idx.key(&p), p.seq, e.token, &k, e.seq),
                std::cmp::Ordering::Less
            );
        }
    }
    // The smallest internal key is at or before every block.
    let first = idx.find(0, b"", u64::MAX);
    assert_eq!(first, (!idx.is_empty()).then_some(0));
    let _ = idx.find(Token::MAX, &[0xff; 16], 0);
    let mut t = [0u8; 8];
    for (x, y) in t.iter_mut().zip(data) {
        *x = *y;
    }
    let _ = idx.find(u64::from_be_bytes(t), data.get(8..24).unwrap_or(&[]), 7);
}

fuzz_target!(|data: &[u8]| {
    let Ok(block) = Block::from_payload(data.to_vec()) else {
        return;
    };
    for data_end in [u64::MAX, (data.len() as u64) * 16] {
        if let Ok(idx) = decode_index(&block, data_end) {
            use_index(&idx, data_end, data);
        }
    }
});
