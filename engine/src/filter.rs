//! Bloom filter over the user keys `(token, key)` of one SSTable.
//!
//! A point read asks the filter before it touches the table's index or data
//! blocks, so a table that cannot hold the key costs a few cache lines, not a
//! block read.
//!
//! ## Format
//!
//! ```text
//! bits [m/8 bytes] | k u8 | format u8 (= 1)
//! ```
//!
//! `m` is the number of bits (a multiple of 8, at least 64). Format 1 hashes
//! the pair as `h = xxh3_64_with_seed(key, token) ^ fmix64(token)` (fmix64 =
//! MurmurHash3's 64-bit finalizer): the token alone is not enough, since keys
//! sharing a hash tag share a token, and the fold stops xxh3's light seeding
//! from making keys of nearby tokens collide (see [`hash_key`]). Probe `i` (0..k) sets
//! bit `mulhi64(h + i * delta, m)` where `delta = h.rotate_left(31) | 1` and
//! `mulhi64(x, m) = (x as u128 * m as u128) >> 64` (a multiply instead of a
//! modulo). Bit `b` lives in byte `b / 8`, mask `1 << (b % 8)`.
//!
//! The filter is a standard (not blocked) bloom: with 10 bits per key and
//! k = 7 its false-positive rate is about 0.8%; a blocked bloom would save
//! cache misses but costs 20-30% more false positives at the same size.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::DecodeError;
use crate::format::Token;

/// Bits per key when the options do not say otherwise (about 0.8% false positives).
pub const DEFAULT_BITS_PER_KEY: u32 = 10;

/// The only filter format this build writes and reads.
pub const FILTER_FORMAT: u8 = 1;

/// Fewest bits in a filter, so tiny tables do not saturate.
const MIN_BITS: usize = 64;

/// The hash of a user key that the filter stores.
///
/// xxh3 mixes its seed only lightly into short inputs (it is XORed or added
/// to a secret word), so with the token as seed alone, keys of nearby tokens
/// collide outright: `(7, "k12")` and `(8, "k13")` can get the same 64-bit
/// hash. Folding a finalized token back in makes equal xxh3 outputs of
/// different tokens differ.
#[inline]
pub fn hash_key(token: Token, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, token) ^ fmix64(token)
}

/// MurmurHash3's 64-bit finalizer: a cheap bijective mix.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Number of probes for `bits_per_key`: ln 2 x bits/key minimizes false positives.
#[inline]
pub fn probes_for(bits_per_key: u32) -> u8 {
    let k = (f64::from(bits_per_key) * 0.69).round();
    k.clamp(1.0, 30.0) as u8
}

#[inline]
fn probe(h: u64, delta: u64, i: u32, m: u64) -> u64 {
    let x = h.wrapping_add(u64::from(i).wrapping_mul(delta));
    ((u128::from(x) * u128::from(m)) >> 64) as u64
}

/// Collects key hashes and encodes the filter once their number is known.
#[derive(Debug, Clone)]
pub struct FilterBuilder {
    bits_per_key: u32,
    hashes: Vec<u64>,
}

impl FilterBuilder {
    /// A builder that will spend `bits_per_key` bits on each distinct key.
    pub fn new(bits_per_key: u32) -> FilterBuilder {
        FilterBuilder {
            bits_per_key: bits_per_key.clamp(1, 64),
            hashes: Vec::new(),
        }
    }

    /// Adds a user key. Adding the same key twice in a row counts it once
    /// (versions of one key arrive together in table order).
    #[inline]
    pub fn add(&mut self, token: Token, key: &[u8]) {
        let h = hash_key(token, key);
        if self.hashes.last() != Some(&h) {
            self.hashes.push(h);
        }
    }

    /// Number of keys added.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True if no key was added.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Encodes the filter (see the module docs for the layout).
    pub fn finish(&self) -> Vec<u8> {
        let (mut out, m) = self.start();
        Self::set_bits(&mut out, m, &self.hashes);
        out
    }

    /// [`FilterBuilder::finish`] for a table builder on an executor: the same
    /// bytes, but the bits are set a slice of keys at a time with a yield
    /// point between slices. A filter of a million keys takes milliseconds of
    /// random memory access; in one piece it would hold the core (and every
    /// request waiting on it) for all of that.
    pub async fn finish_yielding(&self) -> Vec<u8> {
        const SLICE: usize = 16 * 1024;
        let (mut out, m) = self.start();
        for slice in self.hashes.chunks(SLICE) {
            Self::set_bits(&mut out, m, slice);
            crate::io::yield_if_needed().await;
        }
        out
    }

    /// The zeroed filter with its trailer, and its size in bits.
    fn start(&self) -> (Vec<u8>, u64) {
        let want = self.hashes.len().saturating_mul(self.bits_per_key as usize);
        let m_bytes = want.max(MIN_BITS).div_ceil(8);
        let k = probes_for(self.bits_per_key);
        let mut out = vec![0u8; m_bytes + 2];
        out[m_bytes] = k;
        out[m_bytes + 1] = FILTER_FORMAT;
        (out, (m_bytes * 8) as u64)
    }

    fn set_bits(out: &mut [u8], m: u64, hashes: &[u64]) {
        let Some(&k) = out.get(out.len().saturating_sub(2)) else {
            return;
        };
        for &h in hashes {
            let delta = h.rotate_left(31) | 1;
            for i in 0..u32::from(k) {
                let b = probe(h, delta, i, m) as usize;
                // probe() < m = 8 * m_bytes, so the byte index is in range.
                out[b / 8] |= 1 << (b % 8);
            }
        }
    }
}

/// A decoded filter, ready for queries.
#[derive(Debug, Clone)]
pub struct Filter {
    bits: Vec<u8>,
    m: u64,
    k: u8,
}

impl Filter {
    /// Decodes a filter. Fails (never panics) on any malformed input.
    pub fn decode(buf: &[u8]) -> Result<Filter, DecodeError> {
        if buf.len() < 2 {
            return Err(DecodeError::new(0, "filter shorter than its trailer"));
        }
        let n = buf.len() - 2;
        if buf[n + 1] != FILTER_FORMAT {
            return Err(DecodeError::new(n + 1, "unknown filter format"));
        }
        let k = buf[n];
        if !(1..=30).contains(&k) {
            return Err(DecodeError::new(n, "filter probe count out of range"));
        }
        if n == 0 {
            return Err(DecodeError::new(0, "filter has no bits"));
        }
        Ok(Filter {
            bits: buf[..n].to_vec(),
            m: (n as u64) * 8,
            k,
        })
    }

    /// False if `(token, key)` is certainly absent; true if it may be present.
    #[inline]
    pub fn may_contain(&self, token: Token, key: &[u8]) -> bool {
        self.may_contain_hash(hash_key(token, key))
    }

    /// [`Filter::may_contain`] for a hash from [`hash_key`] (lets a caller
    /// probe many tables with one hash).
    #[inline]
    pub fn may_contain_hash(&self, h: u64) -> bool {
        let delta = h.rotate_left(31) | 1;
        for i in 0..u32::from(self.k) {
            let b = probe(h, delta, i, self.m) as usize;
            match self.bits.get(b / 8) {
                Some(byte) if byte & (1 << (b % 8)) != 0 => {}
                _ => return false,
            }
        }
        true
    }

    /// Number of probes per query.
    pub fn probes(&self) -> u8 {
        self.k
    }

    /// Size of the bit array in bits.
    pub fn bits(&self) -> u64 {
        self.m
    }

    /// Memory held, in bytes.
    pub fn memory(&self) -> usize {
        self.bits.capacity()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn finish_yielding_writes_the_same_filter() {
        for n in [0usize, 1, 1000, 40_000] {
            let mut b = FilterBuilder::new(10);
            for i in 0..n as u64 {
                b.add(i % 7, &i.to_le_bytes());
            }
            let sync = b.finish();
            let (tx, rx) = std::sync::mpsc::channel();
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .spawn(move || async move {
                    tx.send(b.finish_yielding().await).unwrap();
                })
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(rx.recv().unwrap(), sync, "{n} keys");
            let f = Filter::decode(&sync).unwrap();
            assert!((0..n as u64).all(|i| f.may_contain(i % 7, &i.to_le_bytes())));
        }
    }

    #[test]
    fn probes_from_bits() {
        assert_eq!(probes_for(10), 7);
        assert_eq!(probes_for(1), 1);
        assert_eq!(probes_for(0), 1);
        assert_eq!(probes_for(100), 30);
    }

    #[test]
    fn no_false_negatives_and_fp_rate_under_one_percent() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
        let n = 100_000u64;
        let mut b = FilterBuilder::new(DEFAULT_BITS_PER_KEY);
        // Few distinct tokens: keys sharing a hash tag must still be told apart.
        let keys: Vec<(u64, Vec<u8>)> = (0..n).map(|i| (i % 16, format!("user:{i:016}").into_bytes())).collect();
        for (t, k) in &keys {
            b.add(*t, k);
        }
        let f = Filter::decode(&b.finish()).unwrap();
        assert_eq!(f.probes(), 7);
        for (t, k) in &keys {
            assert!(f.may_contain(*t, k));
        }
        let mut fp = 0u64;
        let trials = 100_000u64;
        for i in 0..trials {
            let t = if i % 2 == 0 { i % 16 } else { rng.gen() };
            let k = format!("absent:{i:016}").into_bytes();
            if f.may_contain(t, &k) {
                fp += 1;
            }
        }
        let rate = fp as f64 / trials as f64;
        println!(
            "bloom false-positive rate at 10 bits/key over 100k keys: {:.4}%",
            rate * 100.0
        );
        assert!(rate <= 0.01, "false-positive rate {rate}");
    }

    #[test]
    fn same_key_other_token_is_distinguished() {
        let mut b = FilterBuilder::new(20);
        for i in 0..1000u64 {
            b.add(7, format!("k{i}").as_bytes());
        }
        let f = Filter::decode(&b.finish()).unwrap();
        let fp = (0..1000u64)
            .filter(|i| f.may_contain(8, format!("k{i}").as_bytes()))
            .count();
        assert!(fp < 20, "{fp}");
    }

    #[test]
    fn decode_never_panics() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for len in 0..64 {
            for _ in 0..50 {
                let buf: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if let Ok(f) = Filter::decode(&buf) {
                    let _ = f.may_contain(rng.gen(), b"x");
                }
            }
        }
        assert!(Filter::decode(&[]).is_err());
        assert!(Filter::decode(&[7, 1]).is_err());
        assert!(Filter::decode(&[0, 0, 0, 1]).is_err());
    }

    #[test]
    fn empty_filter_rejects_everything() {
        let f = Filter::decode(&FilterBuilder::new(10).finish()).unwrap();
        assert!(!f.may_contain(1, b"a"));
    }
}
