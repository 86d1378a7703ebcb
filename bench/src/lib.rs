//! corekv benchmarks.
//!
//! The `engine-bench` binary runs db_bench-style workloads against one
//! [`corekv_engine::Engine`] pinned to one core; `scripts/vs_rocksdb.sh` runs it
//! side by side with RocksDB's `db_bench`. This library holds the parts that
//! must match db_bench byte for byte so the two sides store the same data: the
//! key format and the value generator (whose output decides how well blocks
//! compress).
//!
//! The modules below are the load-generating side: [`latency`] and
//! [`open_loop`] (shared by `sdk-bench` and `corekv-bench`), [`ring`] (waiting
//! for a cluster to form), [`ycsb`] (the `corekv-bench run` workloads,
//! targets, drivers and reports) and [`plan`] (`corekv-bench plan`, capacity
//! planning from measured figures).

pub mod latency;
pub mod open_loop;
pub mod plan;
pub mod ring;
pub mod ycsb;

/// LevelDB's / RocksDB's `Random` (util/random.h): the Park-Miller "minimal
/// standard" generator, `seed = seed * 16807 % (2^31 - 1)`. db_bench builds its
/// value buffer with it, seeded with 301.
#[derive(Debug, Clone)]
pub struct DbBenchRandom {
    seed: u32,
}

impl DbBenchRandom {
    const M: u32 = 2_147_483_647; // 2^31 - 1
    const A: u64 = 16_807;

    /// A generator seeded like RocksDB's: the seed is masked to 31 bits and
    /// the two fixed points (0 and 2^31 - 1) are replaced by 1.
    pub fn new(seed: u32) -> DbBenchRandom {
        let mut s = seed & 0x7fff_ffff;
        if s == 0 || s == Self::M {
            s = 1;
        }
        DbBenchRandom { seed: s }
    }

    /// The next value in [1, 2^31 - 2].
    pub fn next_u32(&mut self) -> u32 {
        // seed * A < 2^31 * 2^15 fits in u64; (p >> 31) + (p & M) is p mod M
        // up to one subtraction, as in RocksDB.
        let p = u64::from(self.seed) * Self::A;
        let mut s = (p >> 31) + (p & u64::from(Self::M));
        if s > u64::from(Self::M) {
            s -= u64::from(Self::M);
        }
        // s <= M < 2^31: the cast is lossless.
        self.seed = s as u32;
        self.seed
    }

    /// A value in [0, n).
    pub fn uniform(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
}

/// db_bench's `RandomGenerator`: a buffer of at least 1 MiB made of 100-byte
/// pieces, each `compression_ratio * 100` random printable bytes repeated to
/// fill the piece (RocksDB's `test::CompressibleString`), handed out as
/// consecutive slices. With the default ratio 0.5 a block compresses to about
/// half its size under any LZ-family codec, on both sides.
#[derive(Debug, Clone)]
pub struct ValueGenerator {
    data: Vec<u8>,
    pos: usize,
}

impl ValueGenerator {
    /// The generator db_bench builds for each writing thread (seed 301).
    pub fn new(compression_ratio: f64, value_size: usize) -> ValueGenerator {
        let mut rnd = DbBenchRandom::new(301);
        let target = value_size.max(1 << 20);
        let mut data = Vec::with_capacity(target + 100);
        let raw_len = ((100.0 * compression_ratio) as usize).max(1);
        let mut raw = Vec::with_capacity(raw_len);
        while data.len() < target {
            // CompressibleString(rnd, ratio, 100): raw random printable bytes,
            // repeated until the piece is 100 bytes long.
            raw.clear();
            for _ in 0..raw_len {
                // ' ' + Uniform(95): a printable ASCII byte, < 127.
                raw.push(b' ' + rnd.uniform(95) as u8);
            }
            let start = data.len();
            while data.len() - start < 100 {
                data.extend_from_slice(&raw);
            }
            data.truncate(start + 100);
        }
        ValueGenerator { data, pos: 0 }
    }

    /// The next `len` bytes of the buffer, wrapping to its start when they do
    /// not fit (db_bench's `Generate`).
    pub fn generate(&mut self, len: usize) -> &[u8] {
        if self.pos + len > self.data.len() {
            self.pos = 0;
        }
        let start = self.pos;
        self.pos += len;
        &self.data[start..start + len.min(self.data.len() - start)]
    }
}

/// Writes db_bench's key for index `v` into `out` (cleared first): the 8 bytes
/// of `v` big-endian (fewer if `key_size < 8`), then `'0'` bytes up to
/// `key_size` (db_bench's `GenerateKeyFromInt` without prefixes).
pub fn make_key(v: u64, key_size: usize, out: &mut Vec<u8>) {
    out.clear();
    let n = key_size.min(8);
    for i in 0..n {
        out.push((v >> ((n - i - 1) * 8)) as u8);
    }
    out.resize(key_size, b'0');
}

/// The token the layer above passes with a key (xxh3_64 of the whole key).
#[inline]
pub fn token_of(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_matches_park_miller() {
        // seed 1 -> 16807 -> 282475249 (the published minimal-standard sequence).
        let mut r = DbBenchRandom::new(1);
        assert_eq!(r.next_u32(), 16_807);
        assert_eq!(r.next_u32(), 282_475_249);
        assert_eq!(r.next_u32(), 1_622_650_073);
    }

    #[test]
    fn keys_are_big_endian_then_zero_padded() {
        let mut k = Vec::new();
        make_key(0x0102, 16, &mut k);
        assert_eq!(&k[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&k[8..], b"00000000");
        make_key(0x0102, 4, &mut k);
        assert_eq!(k, vec![0, 0, 1, 2]);
    }

    #[test]
    fn values_compress_about_half() {
        let mut g = ValueGenerator::new(0.5, 1024);
        let v = g.generate(1024).to_vec();
        assert_eq!(v.len(), 1024);
        assert!(v.iter().all(|b| (b' '..127).contains(b)));
        // Each 100-byte piece is 50 random bytes written twice.
        assert_eq!(v[..50], v[50..100]);
        let w = g.generate(1024).to_vec();
        assert_ne!(v, w);
        let sample = &g.data[..64 << 10];
        let c = lz4_flex::block::compress(sample).len() as f64 / sample.len() as f64;
        assert!((0.4..0.7).contains(&c), "lz4 ratio {c}");
    }
}
