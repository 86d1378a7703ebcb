//! Shared pieces of corekv's integration tests: deterministic keys and values
//! that a checker can recompute without storing them.

/// The key written as number `i` by the crash writer.
pub fn crash_key(i: u64) -> Vec<u8> {
    format!("crash-{i:010}").into_bytes()
}

/// The value written for key number `i`: its length and bytes follow from `i`,
/// so the checker knows exactly what an acknowledged write must read back as.
pub fn crash_value(i: u64) -> Vec<u8> {
    let len = 100 + (i.wrapping_mul(2_654_435_761) % 1900) as usize;
    (0..len)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}

/// The token of a key (xxh3, as the node computes it).
pub fn token(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

pub mod cluster;
pub mod http;
pub mod loopfs;
pub mod netfault;
pub mod node;
pub mod torture;
pub mod wire;
