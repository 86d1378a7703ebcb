//! The per-engine row cache: the newest stored version of recently read keys,
//! for point reads that miss the memtables.
//!
//! A point read that reaches the tables costs a bloom probe per table, an
//! index search, a block cache lookup and a block search (bench/RESULTS.md,
//! 2026-12-07: that was most of a GET's user time against Redis). ScyllaDB
//! answers point reads from a row cache for the same reason; RocksDB has one
//! as an option. Here it sits between the memtables and the tables, holds
//! entry bodies exactly as the tables store them, and is bounded in bytes with
//! LRU eviction, like [`crate::cache::BlockCache`].
//!
//! Correctness rests on three rules, all enforced by the engine:
//!
//! 1. Every write removes the key from the cache, when it enters the memtable
//!    ([`RowCache::invalidate`]). A later flush can then never uncover an
//!    older cached version.
//! 2. A read fills the cache only if nothing could have changed the key while
//!    it was reading the tables: [`RowCache::stamp`] takes a generation of the
//!    key's stripe before the read, and [`RowCache::insert`] refuses if a write
//!    to any key of that stripe bumped it since. The engine also refuses when
//!    a memtable holds any version of the key (one not yet durable is skipped
//!    by the read but will be flushed later) or when the table set changed.
//! 3. Only live puts are cached; tombstones never are, so a purged tombstone
//!    cannot come back from here. An expired entry is treated as a miss.
//!
//! Single-threaded (one per core, like the engine): no locks, no atomics.

use std::cell::{Cell, RefCell};

use hashbrown::HashTable;

use crate::format::{SeqNo, Token};
use crate::lru::SlabLru;

/// Bytes charged per cached row on top of its key and body: the slab node,
/// the hash slot and the two allocation headers.
const ENTRY_OVERHEAD: usize = 80;

/// Write generations are kept per stripe of the hash space, not per key: a
/// write bumps one counter, and a read that raced any write of its stripe
/// just does not fill the cache (it still answers correctly).
const STRIPES: usize = 4096;

/// Counters of a row cache, copied out by [`RowCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCacheStats {
    /// Lookups that found the row.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Rows inserted.
    pub inserts: u64,
    /// Fills refused because a write, a flush or a compaction raced the read.
    pub raced: u64,
    /// Rows evicted to make room.
    pub evictions: u64,
    /// Rows removed because their key was written.
    pub invalidations: u64,
    /// Bytes charged by the rows held now.
    pub bytes_used: u64,
    /// Rows held now.
    pub entries: u64,
    /// The capacity in bytes.
    pub capacity: u64,
}

#[derive(Debug)]
struct Row {
    hash: u64,
    token: Token,
    key: Box<[u8]>,
    seq: SeqNo,
    /// The entry body (kind, time, meta, value) as stored.
    body: std::rc::Rc<[u8]>,
}

#[derive(Debug)]
struct Inner {
    /// Slot numbers in `lru`, hashed by each row's `hash`.
    table: HashTable<u32>,
    lru: SlabLru<Row>,
    /// The event counters (the byte and entry counts are the list's).
    stats: RowCacheStats,
}

impl Inner {
    fn find(&self, hash: u64, token: Token, key: &[u8]) -> Option<u32> {
        let lru = &self.lru;
        self.table
            .find(hash, |&i| {
                lru.get(i).is_some_and(|r| r.token == token && &*r.key == key)
            })
            .copied()
    }

    /// Drops slot `i` from the list and the table.
    fn drop_slot(&mut self, i: u32) {
        if let Some(row) = self.lru.remove(i) {
            if let Ok(e) = self.table.find_entry(row.hash, |&j| j == i) {
                e.remove();
            }
        }
    }
}

/// A byte-bounded LRU cache of the newest version of keys. See the module docs.
#[derive(Debug)]
pub struct RowCache {
    inner: RefCell<Inner>,
    gens: Box<[Cell<u32>]>,
}

/// What [`RowCache::stamp`] hands a read, to give back to [`RowCache::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u32);

impl RowCache {
    /// A cache holding at most `capacity_bytes` of rows (0 disables it).
    pub fn new(capacity_bytes: usize) -> RowCache {
        RowCache {
            inner: RefCell::new(Inner {
                table: HashTable::new(),
                lru: SlabLru::new(capacity_bytes as u64),
                stats: RowCacheStats::default(),
            }),
            gens: (0..STRIPES).map(|_| Cell::new(0)).collect(),
        }
    }

    fn stripe(&self, hash: u64) -> &Cell<u32> {
        // The table takes its bucket from the low bits; the stripe comes from
        // higher ones so a stripe is not one bucket's worth of keys.
        &self.gens[((hash >> 40) as usize) % STRIPES]
    }

    /// The cached (sequence number, body) of (token, key), marked recently used.
    pub fn get(&self, hash: u64, token: Token, key: &[u8]) -> Option<(SeqNo, std::rc::Rc<[u8]>)> {
        let mut g = self.inner.borrow_mut();
        let inner = &mut *g;
        let Some(i) = inner.find(hash, token, key) else {
            inner.stats.misses += 1;
            return None;
        };
        inner.lru.touch(i);
        inner.stats.hits += 1;
        inner.lru.get(i).map(|r| (r.seq, r.body.clone()))
    }

    /// Forgets (token, key) because it was just written, and makes every read
    /// of its stripe that is under way unable to fill the cache.
    pub fn invalidate(&self, hash: u64, token: Token, key: &[u8]) {
        let s = self.stripe(hash);
        s.set(s.get().wrapping_add(1));
        let mut g = self.inner.borrow_mut();
        if g.lru.len() == 0 {
            return;
        }
        if let Some(i) = g.find(hash, token, key) {
            g.drop_slot(i);
            g.stats.invalidations += 1;
        }
    }

    /// Forgets (token, key) without counting it as written: an entry found
    /// expired, for one.
    pub fn remove(&self, hash: u64, token: Token, key: &[u8]) {
        let mut g = self.inner.borrow_mut();
        if let Some(i) = g.find(hash, token, key) {
            g.drop_slot(i);
        }
    }

    /// The write generation of the key's stripe, taken before a read.
    pub fn stamp(&self, hash: u64) -> Stamp {
        Stamp(self.stripe(hash).get())
    }

    /// Counts a fill the engine refused for its own reasons (the memtables
    /// or the table set changed during the read).
    pub fn note_raced(&self) {
        self.inner.borrow_mut().stats.raced += 1;
    }

    /// Caches `body` as the newest version of (token, key), read under
    /// `stamp`; refused (false) if a write of the stripe came since. Evicts
    /// the least recently used rows to make room; a row larger than the
    /// whole cache is not kept.
    pub fn insert(&self, hash: u64, stamp: Stamp, token: Token, key: &[u8], seq: SeqNo, body: &[u8]) -> bool {
        let mut g = self.inner.borrow_mut();
        let inner = &mut *g;
        if self.stripe(hash).get() != stamp.0 {
            inner.stats.raced += 1;
            return false;
        }
        let charge = (key.len() + body.len() + ENTRY_OVERHEAD) as u64;
        if charge > inner.lru.capacity() {
            return false;
        }
        if let Some(i) = inner.find(hash, token, key) {
            // Two reads missed at once and both fill: same version (no write
            // came between, by the stamp), so keep the first.
            inner.lru.touch(i);
            return true;
        }
        while !inner.lru.fits(charge) {
            let Some(t) = inner.lru.lru() else { break };
            inner.drop_slot(t);
            inner.stats.evictions += 1;
        }
        let row = Row {
            hash,
            token,
            key: key.into(),
            seq,
            body: body.into(),
        };
        let i = inner.lru.insert(row, charge);
        let lru = &inner.lru;
        inner
            .table
            .insert_unique(hash, i, |&j| lru.get(j).map_or(0, |r| r.hash));
        inner.stats.inserts += 1;
        true
    }

    /// True if the cache can hold anything (a capacity of 0 disables it).
    pub fn enabled(&self) -> bool {
        self.inner.borrow().lru.capacity() > 0
    }

    /// A copy of the counters.
    pub fn stats(&self) -> RowCacheStats {
        let inner = self.inner.borrow();
        RowCacheStats {
            bytes_used: inner.lru.bytes(),
            entries: inner.lru.len(),
            capacity: inner.lru.capacity(),
            ..inner.stats
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn h(token: Token, key: &[u8]) -> u64 {
        crate::filter::hash_key(token, key)
    }

    #[test]
    fn hit_after_fill_and_invalidated_by_a_write() {
        let c = RowCache::new(1 << 20);
        let hk = h(7, b"k");
        assert!(c.get(hk, 7, b"k").is_none());
        let s = c.stamp(hk);
        assert!(c.insert(hk, s, 7, b"k", 3, b"body"));
        let (seq, body) = c.get(hk, 7, b"k").unwrap();
        assert_eq!((seq, &*body), (3, &b"body"[..]));
        // Same key, other token: a different row.
        assert!(c.get(h(8, b"k"), 8, b"k").is_none());
        c.invalidate(hk, 7, b"k");
        assert!(c.get(hk, 7, b"k").is_none());
        let st = c.stats();
        assert_eq!(
            (st.hits, st.misses, st.inserts, st.invalidations, st.entries),
            (1, 3, 1, 1, 0)
        );
        assert_eq!(st.bytes_used, 0);
    }

    #[test]
    fn a_write_during_the_read_refuses_the_fill() {
        let c = RowCache::new(1 << 20);
        let hk = h(1, b"a");
        let s = c.stamp(hk);
        c.invalidate(hk, 1, b"a");
        assert!(!c.insert(hk, s, 1, b"a", 1, b"old"));
        assert!(c.get(hk, 1, b"a").is_none());
        assert_eq!(c.stats().raced, 1);
        // A fresh stamp after the write fills.
        let s = c.stamp(hk);
        assert!(c.insert(hk, s, 1, b"a", 2, b"new"));
        assert_eq!(&*c.get(hk, 1, b"a").unwrap().1, b"new");
    }

    #[test]
    fn lru_eviction_keeps_the_bound_and_a_zero_cache_holds_nothing() {
        let c = RowCache::new(3 * (ENTRY_OVERHEAD + 1 + 10));
        for k in 0u8..3 {
            let hk = h(0, &[k]);
            assert!(c.insert(hk, c.stamp(hk), 0, &[k], 1, &[k; 10]));
        }
        // Touch 0, so 1 is the oldest.
        assert!(c.get(h(0, &[0]), 0, &[0]).is_some());
        let hk = h(0, &[3]);
        assert!(c.insert(hk, c.stamp(hk), 0, &[3], 1, &[3; 10]));
        assert!(c.get(h(0, &[1]), 0, &[1]).is_none());
        assert!(c.get(h(0, &[0]), 0, &[0]).is_some());
        assert!(c.stats().bytes_used <= c.stats().capacity);
        assert_eq!(c.stats().evictions, 1);

        let z = RowCache::new(0);
        assert!(!z.enabled());
        assert!(!z.insert(hk, z.stamp(hk), 0, &[3], 1, &[3; 10]));
        assert!(z.get(hk, 0, &[3]).is_none());
    }

    proptest! {
        /// Against a model: every row the cache returns is the last one
        /// inserted for the key since its last invalidation, and the byte
        /// count matches the rows held and stays under the capacity.
        #[test]
        fn random_ops_match_a_model(ops in proptest::collection::vec((0u8..4, 0u8..24, 0usize..200), 1..400)) {
            let cap = 2_000;
            let c = RowCache::new(cap);
            let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
            let mut seq = 0;
            for (op, k, len) in ops {
                let key = [k];
                let hk = h(u64::from(k % 3), &key);
                let token = u64::from(k % 3);
                match op {
                    0 | 1 => {
                        seq += 1;
                        let body = vec![k; len];
                        if c.insert(hk, c.stamp(hk), token, &key, seq, &body) && !model.contains_key(&k) {
                            model.insert(k, body);
                        } else if model.contains_key(&k) {
                            // An existing row is kept (same version by the stamp rule).
                        }
                    }
                    2 => {
                        c.invalidate(hk, token, &key);
                        model.remove(&k);
                    }
                    _ => {
                        if let Some((_, body)) = c.get(hk, token, &key) {
                            prop_assert_eq!(Some(&body.to_vec()), model.get(&k));
                        }
                    }
                }
                let st = c.stats();
                prop_assert!(st.bytes_used <= cap as u64);
                let inner = c.inner.borrow();
                prop_assert_eq!(inner.lru.check(), (st.entries, st.bytes_used));
                prop_assert_eq!(inner.table.len() as u64, st.entries);
                // Evicted rows leave the model too (the cache may forget).
                drop(inner);
                model.retain(|k, _| {
                    let key = [*k];
                    let token = u64::from(*k % 3);
                    c.inner.borrow().find(h(token, &key), token, &key).is_some()
                });
            }
        }
    }
}
