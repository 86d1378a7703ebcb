//! Bloom filter blocks: `Filter::decode` and `may_contain`; plus a builder
//! round trip with keys taken from the input (no false negatives).
#![no_main]

use corekv_engine::filter::{Filter, FilterBuilder};
use libfuzzer_sys::fuzz_target;

fn keys(data: &[u8]) -> Vec<(u64, &[u8])> {
    data.chunks(11)
        .take(64)
        .map(|c| {
            let mut t = [0u8; 8];
            for (x, y) in t.iter_mut().zip(c) {
                *x = *y;
            }
            (u64::from_le_bytes(t), c.get(8..).unwrap_or(&[]))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let ks = keys(data);
    if let Ok(f) = Filter::decode(data) {
        assert_eq!(f.bits(), (data.len() as u64 - 2) * 8);
        assert!((1..=30).contains(&f.probes()));
        let all_set = data[..data.len() - 2].iter().all(|b| *b == 0xff);
        for (t, k) in ks.iter().copied().chain([(0, &b""[..]), (u64::MAX, &b"key"[..])]) {
            let hit = f.may_contain(t, k);
            if all_set {
                assert!(hit, "a filter with every bit set must contain everything");
            }
        }
        let _ = f.memory();
    }

    // Builder round trip: every key added is found.
    let bits = data.first().map_or(10, |b| u32::from(*b % 70));
    let mut b = FilterBuilder::new(bits);
    for (t, k) in &ks {
        b.add(*t, k);
    }
    let f = Filter::decode(&b.finish()).expect("a built filter decodes");
    for (t, k) in &ks {
        assert!(f.may_contain(*t, k), "false negative");
    }
});
