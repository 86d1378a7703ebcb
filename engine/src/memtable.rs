//! The memtable: the newest writes, sorted, in memory.
//!
//! It belongs to one core, so it is a plain `BTreeMap` behind a `RefCell`: no
//! locks, no atomics. Writes are inserted when their WAL record is appended
//! (before it is durable) and become visible to reads only once the WAL's
//! visible sequence number covers them, so a reader never sees a write that a
//! crash could still take away.
//!
//! Nothing borrows the map across an `.await`: iteration copies a chunk of
//! entries at a time (bodies are `Rc`, so a copy is a reference count).
//!
//! Point reads do not search the tree: beside it a hash table keeps each
//! key's newest version, hashed by the whole key (not the token: keys that
//! share a `{hash tag}` share a token, and would share one probe chain). A
//! read at the current sequence number, which is nearly every read, is one
//! probe whether the key is here or not; only a read at an older snapshot
//! than the key's newest version walks the tree. A tree
//! descent over a memtable of 100k entries touched about 30 cache lines and
//! was 17% of a node's CPU under a GET load (perf, `redis-benchmark -P 16`).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use hashbrown::HashTable;

use crate::format::{Kind, SeqNo, Token};

/// A memtable key: the internal key, ordered as in [`crate::format`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemKey {
    /// Token.
    pub token: Token,
    /// User key (shared with the memtable's hash index).
    pub key: Rc<[u8]>,
    /// Sequence number, reversed so the newest version sorts first.
    pub rseq: Reverse<SeqNo>,
}

impl MemKey {
    /// Builds a key.
    pub fn new(token: Token, key: &[u8], seq: SeqNo) -> MemKey {
        MemKey {
            token,
            key: key.into(),
            rseq: Reverse(seq),
        }
    }

    /// The sequence number.
    pub fn seq(&self) -> SeqNo {
        self.rseq.0
    }
}

/// One memtable entry: its key and encoded body.
pub type MemEntry = (MemKey, Rc<[u8]>);

/// A key's newest version, as the hash index keeps it (and the kept
/// memtables' shared index, engine/src/recent.rs).
#[derive(Debug, Clone)]
pub(crate) struct Newest {
    /// [`index_hash`] of the key.
    pub hash: u64,
    /// The key's token.
    pub token: Token,
    /// The key (shared with the tree).
    pub key: Rc<[u8]>,
    /// The version's sequence number.
    pub seq: SeqNo,
    /// The version's body.
    pub body: Rc<[u8]>,
}

/// The hash index is this many independent tables, chosen by the top bits
/// of a key's hash. A hash table grows by moving every entry at once: one
/// table of 2M small entries would hold its core for tens of milliseconds
/// while it doubles, and every request of the moment with it. Split 256
/// ways, a doubling moves at most 1/256th of the keys.
pub(crate) const INDEX_PARTS: usize = 256;

/// Bytes the hash index adds per key: its slot ([`Newest`]) and control byte,
/// over the table's load factor.
const INDEX_BYTES_PER_KEY: usize = (std::mem::size_of::<Newest>() + 1) * 8 / 7;

/// The hash index's hash of a user key.
#[inline]
pub(crate) fn index_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The index table a hash belongs to: bits 48..56 of it. hashbrown takes
/// the bucket from the low bits and the control byte from the top 7: were the
/// part the top bits, every key of one table would carry the same control
/// byte, and each probe would compare the key bytes of every full slot in
/// its group instead of only the likely match.
#[inline]
fn part_of(hash: u64) -> usize {
    (hash >> 48) as usize % INDEX_PARTS
}

/// Entries [`MemTable::dismantle`] frees between two preemption checks
/// (tens of microseconds).
const DISMANTLE_SLICE: usize = 512;

/// A sorted in-memory table.
#[derive(Debug)]
pub struct MemTable {
    map: RefCell<BTreeMap<MemKey, Rc<[u8]>>>,
    newest: RefCell<Vec<HashTable<Newest>>>,
    size: Cell<usize>,
    entries: Cell<u64>,
    max_seq: Cell<SeqNo>,
    first_log_no: u64,
}

impl MemTable {
    /// An empty memtable whose writes start in WAL log `first_log_no`.
    pub fn new(first_log_no: u64) -> MemTable {
        MemTable {
            map: RefCell::new(BTreeMap::new()),
            newest: RefCell::new((0..INDEX_PARTS).map(|_| HashTable::new()).collect()),
            size: Cell::new(0),
            entries: Cell::new(0),
            max_seq: Cell::new(0),
            first_log_no,
        }
    }

    /// Frees a memtable a slice at a time, letting other tasks run between
    /// slices (at glommio's preemption points). A full memtable is hundreds
    /// of thousands of allocations; dropping one in a single call held its
    /// core for tens of milliseconds, and every request of the moment with
    /// it (bench/RESULTS.md). A memtable someone else still holds (a scan) is
    /// only released here; its last holder frees it.
    pub(crate) async fn dismantle(m: Rc<MemTable>) {
        let Ok(m) = Rc::try_unwrap(m) else { return };
        let mut parts = m.newest.into_inner();
        while let Some(part) = parts.pop() {
            drop(part);
            crate::io::yield_if_needed().await;
        }
        let mut map = m.map.into_inner();
        while !map.is_empty() {
            for _ in 0..DISMANTLE_SLICE {
                if map.pop_first().is_none() {
                    break;
                }
            }
            crate::io::yield_if_needed().await;
        }
    }

    /// The first WAL log holding this memtable's writes.
    pub fn first_log_no(&self) -> u64 {
        self.first_log_no
    }

    /// Approximate bytes used.
    pub fn size(&self) -> usize {
        self.size.get()
    }

    /// Entries held (every version counts).
    pub fn len(&self) -> u64 {
        self.entries.get()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.entries.get() == 0
    }

    /// Largest sequence number inserted.
    pub fn max_seq(&self) -> SeqNo {
        self.max_seq.get()
    }

    /// Inserts one version.
    pub fn insert(&self, token: Token, key: &[u8], seq: SeqNo, body: &[u8]) {
        let body: Rc<[u8]> = Rc::from(body);
        let hash = index_hash(key);
        let mut parts = self.newest.borrow_mut();
        let Some(newest) = parts.get_mut(part_of(hash)) else {
            // part_of is below INDEX_PARTS, the length of `parts`.
            return;
        };
        // One allocation of the key, shared by the tree and the index.
        let shared = match newest.find_mut(hash, |n| n.token == token && *n.key == *key) {
            Some(n) => {
                // Versions may arrive out of order (replay, repair): the
                // index keeps the highest sequence number it saw.
                if seq > n.seq {
                    n.seq = seq;
                    n.body = body.clone();
                }
                n.key.clone()
            }
            None => {
                let k: Rc<[u8]> = Rc::from(key);
                newest.insert_unique(
                    hash,
                    Newest {
                        hash,
                        token,
                        key: k.clone(),
                        seq,
                        body: body.clone(),
                    },
                    |n| n.hash,
                );
                self.size.set(self.size.get() + INDEX_BYTES_PER_KEY);
                k
            }
        };
        drop(parts);
        // Per entry: key and body bytes plus the map's node and Rc overheads.
        self.size.set(self.size.get() + key.len() + body.len() + 80);
        self.entries.set(self.entries.get() + 1);
        if seq > self.max_seq.get() {
            self.max_seq.set(seq);
        }
        let k = MemKey {
            token,
            key: shared,
            rseq: Reverse(seq),
        };
        self.map.borrow_mut().insert(k, body);
    }

    /// The newest version of a key with sequence at most `read_seq`.
    pub fn get(&self, token: Token, key: &[u8], read_seq: SeqNo) -> Option<(SeqNo, Rc<[u8]>)> {
        self.get_hashed(index_hash(key), token, key, read_seq)
    }

    /// [`MemTable::get`] with the key's [`index_hash`] already computed
    /// (a read probes several memtables with one hash).
    pub(crate) fn get_hashed(&self, hash: u64, token: Token, key: &[u8], read_seq: SeqNo) -> Option<(SeqNo, Rc<[u8]>)> {
        {
            let parts = self.newest.borrow();
            let n = parts
                .get(part_of(hash))?
                .find(hash, |n| n.token == token && *n.key == *key)?;
            if n.seq <= read_seq {
                return Some((n.seq, n.body.clone()));
            }
        }
        // A snapshot older than the key's newest version: the tree has every
        // version in order.
        let probe = MemKey::new(token, key, read_seq);
        let map = self.map.borrow();
        let (k, v) = map.range(probe..).next()?;
        if k.token == token && *k.key == *key {
            Some((k.seq(), v.clone()))
        } else {
            None
        }
    }

    /// Keys held (each counted once, however many versions).
    pub(crate) fn distinct_keys(&self) -> usize {
        self.newest.borrow().iter().map(HashTable::len).sum()
    }

    /// Calls `f` with the newest version of each key of index part `part`
    /// (below [`INDEX_PARTS`]).
    pub(crate) fn for_each_newest_in_part(&self, part: usize, f: impl FnMut(&Newest)) {
        let parts = self.newest.borrow();
        if let Some(table) = parts.get(part) {
            table.iter().for_each(f);
        }
    }

    /// Up to `n` entries after `from` (exclusive) or from `start` (inclusive).
    pub fn chunk(&self, from: Bound<&MemKey>, n: usize) -> Vec<MemEntry> {
        let map = self.map.borrow();
        map.range((from, Bound::Unbounded))
            .take(n)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Counts tombstones (for flush statistics).
    pub fn is_tombstone(body: &[u8]) -> bool {
        body.first() == Some(&(Kind::Delete as u8))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn newest_visible_version_wins() {
        let m = MemTable::new(1);
        m.insert(5, b"k", 1, b"\x01\x00\x00a");
        m.insert(5, b"k", 3, b"\x01\x00\x00b");
        m.insert(5, b"kk", 2, b"\x01\x00\x00c");
        assert_eq!(m.get(5, b"k", 10).unwrap().0, 3);
        assert_eq!(m.get(5, b"k", 2).unwrap().0, 1);
        assert!(m.get(5, b"k", 0).is_none());
        assert!(m.get(4, b"k", 10).is_none());
        // Same token, other key: the index compares the key bytes too.
        assert!(m.get(5, b"q", 10).is_none());
        let all = m.chunk(Bound::Unbounded, 10);
        assert_eq!(all.len(), 3);
        let rest = m.chunk(Bound::Excluded(&all[0].0), 10);
        assert_eq!(rest.len(), 2);
    }

    #[test]
    fn out_of_order_versions_keep_the_newest_in_the_index() {
        let m = MemTable::new(1);
        m.insert(7, b"k", 9, b"new");
        m.insert(7, b"k", 4, b"old");
        assert_eq!(m.get(7, b"k", 100).unwrap(), (9, Rc::from(&b"new"[..])));
        assert_eq!(m.get(7, b"k", 8).unwrap(), (4, Rc::from(&b"old"[..])));
        assert!(m.get(7, b"k", 3).is_none());
    }

    proptest::proptest! {
        /// The hash index answers exactly what a tree search answers, at every
        /// snapshot, whatever the insert order and token collisions.
        #[test]
        fn index_agrees_with_the_tree(
            ops in proptest::collection::vec((0u64..4, 0u8..6, 1u64..60), 1..80),
            reads in proptest::collection::vec((0u64..4, 0u8..6, 0u64..70), 1..40),
        ) {
            let m = MemTable::new(1);
            let mut seen = std::collections::HashSet::new();
            for (token, key, seq) in ops {
                if seen.insert(seq) {
                    m.insert(token, &[key], seq, &seq.to_le_bytes());
                }
            }
            for (token, key, read_seq) in reads {
                let probe = MemKey::new(token, &[key], read_seq);
                let want = m.map.borrow().range(probe..).next()
                    .filter(|(k, _)| k.token == token && *k.key == [key])
                    .map(|(k, v)| (k.seq(), v.clone()));
                proptest::prop_assert_eq!(m.get(token, &[key], read_seq), want);
            }
        }
    }
}
