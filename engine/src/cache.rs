//! The per-core block cache: decoded (decompressed) data blocks, bounded in bytes.
//!
//! One cache per core, shared by that core's tables through an `Rc`. It is
//! single-threaded on purpose (the engine is `!Send`), so lookups take no lock
//! and no atomic: a hash lookup and four pointer moves in a slab.
//!
//! Eviction is plain LRU. Keys are `(file_no, block_offset)`; file numbers are
//! never reused, so blocks of a deleted table are never hit again and age out
//! on their own. [`BlockCache::remove_file`] frees them at once instead, at the
//! cost of one pass over the cache.
//!
//! A block may also be cached in its on-disk (sealed, compressed) form: a
//! memtable flush fills the cache that way when compression shrank the
//! block, and the first hit decodes it once and keeps the decoded form. A
//! flush of a 256 MiB memtable of compressible values then copies the few
//! MiB it writes rather than the 256 MiB it decodes to: fresh memory is not
//! free (the kernel zeroes every new page; on the 2-vCPU VM of
//! bench/RESULTS.md zeroing ran at 0.1-0.6 GB/s and made a flush hold its
//! core for seconds).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::lru::SlabLru;
use crate::sstable::block::{decode_payload, Block};

/// Bytes charged per cached block on top of its data: the slab node, the hash
/// slot, the `Rc` header and the `Block` itself.
const ENTRY_OVERHEAD: usize = 96;

/// Counters of a cache, copied out by [`BlockCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found the block.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Blocks inserted.
    pub inserts: u64,
    /// Blocks evicted to make room (not counting `remove_file`).
    pub evictions: u64,
    /// Bytes charged by the blocks held now.
    pub bytes_used: u64,
    /// Blocks held now.
    pub entries: u64,
    /// The capacity in bytes.
    pub capacity: u64,
}

/// Multiplicative hashing for the (file, offset) key: the keys come from our
/// own metadata, not from clients, so there is no flooding to defend against,
/// and SipHash would cost more than the rest of a cache hit.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its group tag from the top
        // 7 bits and its bucket from the low bits.
        self.0 ^ (self.0 >> 29)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Key = (u64, u64);

/// What a cache slot holds.
#[derive(Debug)]
enum Entry {
    /// Ready to search.
    Decoded(Rc<Block>),
    /// The block as written to disk (checksummed, maybe compressed).
    Sealed(Box<[u8]>),
}

#[derive(Debug)]
struct Inner {
    map: HashMap<Key, u32, BuildHasherDefault<KeyHasher>>,
    lru: SlabLru<(Key, Entry)>,
    /// Hits, misses, inserts, evictions (the byte and entry counts are the list's).
    stats: CacheStats,
}

/// A sealed block decoded (`None`: it does not decode, which only memory
/// corruption or a bug can cause, since only our own sealer's bytes are
/// cached this way).
fn decode_sealed(raw: &[u8]) -> Option<Block> {
    decode_payload(raw).ok().and_then(|p| Block::from_payload(p).ok())
}

impl Inner {
    /// The slot of (file_no, offset), counting a miss if there is none.
    fn find(&mut self, file_no: u64, offset: u64) -> Option<u32> {
        let i = self.map.get(&(file_no, offset)).copied();
        if i.is_none() {
            self.stats.misses += 1;
        }
        i
    }

    /// Drops slot `i` from the list and the map.
    fn drop_slot(&mut self, i: u32) {
        if let Some((key, _)) = self.lru.remove(i) {
            self.map.remove(&key);
        }
    }

    /// Evicts least recently used blocks, other than `keep`, until `charge`
    /// more bytes fit.
    fn make_room(&mut self, charge: u64, keep: Option<u32>) {
        while !self.lru.fits(charge) {
            match self.lru.lru() {
                Some(t) if Some(t) != keep => {
                    self.drop_slot(t);
                    self.stats.evictions += 1;
                }
                _ => break,
            }
        }
    }
}

/// A byte-bounded LRU cache of decoded blocks. See the module docs.
#[derive(Debug)]
pub struct BlockCache {
    inner: RefCell<Inner>,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks (0 disables it).
    pub fn new(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            inner: RefCell::new(Inner {
                map: HashMap::default(),
                lru: SlabLru::new(capacity_bytes as u64),
                stats: CacheStats::default(),
            }),
        }
    }

    /// The block at `offset` of table `file_no`, if cached; marks it recently used.
    #[inline]
    pub fn get(&self, file_no: u64, offset: u64) -> Option<Rc<Block>> {
        let mut g = self.inner.borrow_mut();
        let inner = &mut *g;
        let i = inner.find(file_no, offset)?;
        inner.lru.touch(i);
        let raw = match inner.lru.get(i) {
            Some((_, Entry::Decoded(b))) => {
                inner.stats.hits += 1;
                return Some(b.clone());
            }
            Some((_, Entry::Sealed(raw))) => raw,
            None => return None,
        };
        // Decoded once, on its first read: the decoded form replaces it.
        let Some(block) = decode_sealed(raw) else {
            // Only our own sealer's bytes get here, so this is memory
            // corruption or a bug: forget the slot and let the reader go to
            // the disk, which checks the block again.
            inner.drop_slot(i);
            inner.stats.misses += 1;
            return None;
        };
        inner.stats.hits += 1;
        let block = Rc::new(block);
        if let Some((_, e)) = inner.lru.get_mut(i) {
            *e = Entry::Decoded(block.clone());
        }
        inner.lru.recharge(i, (block.charge() + ENTRY_OVERHEAD) as u64);
        // The decoded form is larger: make room behind it (it is the head).
        inner.make_room(0, Some(i));
        if !inner.lru.fits(0) {
            // Alone, and larger than the whole cache: not kept.
            inner.drop_slot(i);
        }
        Some(block)
    }

    /// The block at `offset` of table `file_no`, if cached, for a reader
    /// that must leave the cache as it is (a compaction reads each block
    /// once, and its input tables are deleted after): a decoded block as
    /// cached, a sealed one decoded into a private copy. Neither the LRU
    /// order nor a cached form changes. Decoding a compaction's sealed
    /// blocks in place used to grow the cache by their decoded size (250 MB
    /// after 1M writes; fresh memory, zeroed by the kernel) for blocks of
    /// tables about to be deleted.
    pub fn peek(&self, file_no: u64, offset: u64) -> Option<Rc<Block>> {
        let mut g = self.inner.borrow_mut();
        let inner = &mut *g;
        let i = inner.find(file_no, offset)?;
        let found = match inner.lru.get(i) {
            Some((_, Entry::Decoded(b))) => Some(b.clone()),
            Some((_, Entry::Sealed(raw))) => decode_sealed(raw).map(Rc::new),
            None => None,
        };
        match found {
            Some(b) => {
                inner.stats.hits += 1;
                Some(b)
            }
            None => {
                // As in `get`: a sealed block that does not decode is dropped
                // and the reader goes to the disk, which checks it again.
                inner.drop_slot(i);
                inner.stats.misses += 1;
                None
            }
        }
    }

    /// Caches a block, evicting the least recently used ones to make room.
    /// A block larger than the whole cache is not kept.
    pub fn insert(&self, file_no: u64, offset: u64, block: Rc<Block>) {
        let charge = block.charge() + ENTRY_OVERHEAD;
        self.insert_entry(file_no, offset, Entry::Decoded(block), charge);
    }

    /// Caches a block in its on-disk form (`raw`: payload, compression type
    /// and checksum, as [`crate::sstable::block::BlockSealer::seal`] wrote
    /// it), decoded on its first [`BlockCache::get`]. Charged its sealed size
    /// until then.
    pub fn insert_sealed(&self, file_no: u64, offset: u64, raw: &[u8]) {
        let charge = raw.len() + ENTRY_OVERHEAD;
        self.insert_entry(file_no, offset, Entry::Sealed(raw.into()), charge);
    }

    /// True if a sealed block of `len` bytes fits without evicting anything.
    pub fn has_room_for_sealed(&self, len: usize) -> bool {
        self.inner.borrow().lru.fits((len + ENTRY_OVERHEAD) as u64)
    }

    fn insert_entry(&self, file_no: u64, offset: u64, block: Entry, charge: usize) {
        let mut g = self.inner.borrow_mut();
        let inner = &mut *g;
        let charge = charge as u64;
        if charge > inner.lru.capacity() {
            return;
        }
        let key = (file_no, offset);
        if let Some(i) = inner.map.get(&key).copied() {
            // Two readers missed on the same block at once; keep the first copy.
            inner.lru.touch(i);
            return;
        }
        inner.make_room(charge, None);
        let i = inner.lru.insert((key, block), charge);
        inner.map.insert(key, i);
        inner.stats.inserts += 1;
    }

    /// Drops every block of table `file_no` (after the table is deleted).
    /// One pass over the cache: call it per deleted table, not per read.
    pub fn remove_file(&self, file_no: u64) {
        let mut g = self.inner.borrow_mut();
        let inner = &mut *g;
        // The slab, not the map: a dense array is several times faster to
        // walk, and this runs with the core held (a cache of 150k blocks).
        let doomed: Vec<u32> = inner
            .lru
            .iter()
            .filter(|(_, ((f, _), _))| *f == file_no)
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            inner.drop_slot(i);
        }
    }

    /// A copy of the counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.borrow();
        CacheStats {
            bytes_used: inner.lru.bytes(),
            entries: inner.lru.len(),
            capacity: inner.lru.capacity(),
            ..inner.stats
        }
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.inner.borrow().lru.capacity() as usize
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn blk(n: usize) -> Rc<Block> {
        Rc::new(Block::for_test(n))
    }

    #[test]
    fn lru_evicts_oldest_and_counts() {
        let one = blk(1000).charge() + ENTRY_OVERHEAD;
        let c = BlockCache::new(one * 3);
        c.insert(1, 0, blk(1000));
        c.insert(1, 100, blk(1000));
        c.insert(1, 200, blk(1000));
        assert!(c.get(1, 0).is_some()); // 0 becomes most recent
        c.insert(2, 0, blk(1000)); // evicts (1, 100)
        assert!(c.get(1, 100).is_none());
        assert!(c.get(1, 0).is_some());
        assert!(c.get(1, 200).is_some());
        assert!(c.get(2, 0).is_some());
        let s = c.stats();
        assert_eq!(s.inserts, 4);
        assert_eq!(s.evictions, 1);
        assert_eq!(s.hits, 4);
        assert_eq!(s.misses, 1);
        assert_eq!(s.entries, 3);
        assert_eq!(s.bytes_used, (one * 3) as u64);
    }

    #[test]
    fn remove_file_and_oversized() {
        let c = BlockCache::new(1 << 20);
        for off in 0..10 {
            c.insert(1, off, blk(100));
            c.insert(2, off, blk(100));
        }
        c.remove_file(1);
        assert_eq!(c.stats().entries, 10);
        assert!(c.get(1, 3).is_none());
        assert!(c.get(2, 3).is_some());
        c.insert(3, 0, blk(2 << 20));
        assert!(c.get(3, 0).is_none());
        // Freed slots are reused.
        for off in 0..10 {
            c.insert(4, off, blk(100));
        }
        assert_eq!(c.stats().entries, 20);
        let zero = BlockCache::new(0);
        zero.insert(1, 0, blk(1));
        assert!(zero.get(1, 0).is_none());
    }

    /// A real block of `n` entries with compressible bodies: (payload, sealed).
    fn sealed_block(n: u32) -> (Vec<u8>, Vec<u8>) {
        use crate::sstable::block::{BlockBuilder, BlockSealer};
        let mut b = BlockBuilder::new(16);
        for i in 0..n {
            let mut ikey = vec![0u8; 8];
            ikey.extend_from_slice(format!("key{i:06}").as_bytes());
            b.add(&ikey, 1, &[b'x'; 200]);
        }
        let payload = b.finish().to_vec();
        let mut sealed = Vec::new();
        BlockSealer::new(crate::sstable::Compression::Lz4).seal(
            &payload,
            crate::sstable::Compression::Lz4,
            &mut sealed,
        );
        (payload, sealed)
    }

    #[test]
    fn a_sealed_block_is_decoded_on_its_first_hit_and_recharged() {
        let (payload, sealed) = sealed_block(40);
        assert!(
            sealed.len() * 4 < payload.len(),
            "the test needs a block that compresses"
        );
        let want = Block::from_payload(payload).unwrap();
        let c = BlockCache::new(1 << 20);
        c.insert_sealed(7, 4096, &sealed);
        assert_eq!(c.stats().bytes_used, (sealed.len() + ENTRY_OVERHEAD) as u64);
        let got = c.get(7, 4096).unwrap();
        assert_eq!(got.num_restarts(), want.num_restarts());
        assert_eq!(got.charge(), want.charge());
        // Charged its decoded size from now on, and served decoded.
        assert_eq!(c.stats().bytes_used, (want.charge() + ENTRY_OVERHEAD) as u64);
        assert!(Rc::ptr_eq(&got, &c.get(7, 4096).unwrap()));
        assert_eq!(c.stats().hits, 2);
    }

    #[test]
    fn peek_leaves_the_cache_as_it_was() {
        let (payload, sealed) = sealed_block(40);
        let want = Block::from_payload(payload).unwrap();
        let c = BlockCache::new(1 << 20);
        c.insert_sealed(1, 0, &sealed);
        c.insert(1, 1, blk(100));
        let before = c.stats();
        let got = c.peek(1, 0).unwrap();
        assert_eq!(got.charge(), want.charge());
        assert!(c.peek(1, 1).is_some());
        assert!(c.peek(1, 2).is_none());
        let after = c.stats();
        // Still sealed, same bytes; the hits and the miss are counted.
        assert_eq!((after.bytes_used, after.entries), (before.bytes_used, before.entries));
        assert_eq!((after.hits, after.misses), (before.hits + 2, before.misses + 1));
        // The LRU order is untouched: (1, 0) is still the oldest and goes first.
        let c2 = BlockCache::new(c.stats().bytes_used as usize);
        c2.insert_sealed(1, 0, &sealed);
        c2.insert(1, 1, blk(100));
        assert!(c2.peek(1, 0).is_some());
        c2.insert(1, 2, blk(10));
        assert!(c2.peek(1, 0).is_none());
        assert!(c2.peek(1, 1).is_some());
        // A sealed block that does not decode is dropped.
        let mut bad = sealed.clone();
        bad[3] ^= 0xff;
        c.insert_sealed(9, 0, &bad);
        assert!(c.peek(9, 0).is_none());
        assert_eq!(c.stats().entries, before.entries);
    }

    #[test]
    fn decoding_makes_room_and_a_bad_sealed_block_is_a_miss() {
        let (payload, sealed) = sealed_block(40);
        let decoded = Block::from_payload(payload).unwrap().charge() + ENTRY_OVERHEAD;
        let small = sealed.len() + ENTRY_OVERHEAD;
        // Room for two sealed blocks, or one decoded one, not one of each.
        let c = BlockCache::new(decoded + small - 1);
        c.insert_sealed(1, 0, &sealed);
        c.insert_sealed(1, 1, &sealed);
        assert!(c.get(1, 1).is_some());
        // (1, 0) was least recently used: evicted for the decoded (1, 1).
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.stats().evictions, 1);
        assert!(c.stats().bytes_used <= c.stats().capacity);
        // A corrupt slot is dropped and counted as a miss.
        let c = BlockCache::new(1 << 20);
        let mut bad = sealed.clone();
        bad[3] ^= 0xff;
        c.insert_sealed(2, 0, &bad);
        assert!(c.get(2, 0).is_none());
        assert!(c.get(2, 0).is_none());
        let s = c.stats();
        assert_eq!((s.entries, s.bytes_used, s.hits, s.misses), (0, 0, 0, 2));
    }

    #[test]
    fn random_ops_keep_the_invariants() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let c = BlockCache::new(50_000);
        let (_, sealed) = sealed_block(30);
        for _ in 0..20_000 {
            let f = rng.gen_range(0..4u64);
            let o = rng.gen_range(0..64u64);
            match rng.gen_range(0..10) {
                0 => c.remove_file(f),
                1..=3 => c.insert(f, o, blk(rng.gen_range(1..3000))),
                4 => c.insert_sealed(f, o, &sealed),
                _ => {
                    let _ = c.get(f, o);
                }
            }
            let s = c.stats();
            assert!(s.bytes_used <= s.capacity);
            let inner = c.inner.borrow();
            assert_eq!(inner.map.len() as u64, s.entries);
            assert_eq!(inner.lru.check(), (s.entries, s.bytes_used));
            for (&key, &i) in &inner.map {
                assert_eq!(inner.lru.get(i).map(|(k, _)| *k), Some(key));
            }
        }
    }
}
