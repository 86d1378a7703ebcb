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

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use crate::format::{Kind, SeqNo, Token};

/// A memtable key: the internal key, ordered as in [`crate::format`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemKey {
    /// Token.
    pub token: Token,
    /// User key.
    pub key: Box<[u8]>,
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

/// A sorted in-memory table.
#[derive(Debug)]
pub struct MemTable {
    map: RefCell<BTreeMap<MemKey, Rc<[u8]>>>,
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
            size: Cell::new(0),
            entries: Cell::new(0),
            max_seq: Cell::new(0),
            first_log_no,
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
        let k = MemKey::new(token, key, seq);
        // Per entry: key and body bytes plus the map's node and Rc overheads.
        self.size.set(self.size.get() + key.len() + body.len() + 80);
        self.entries.set(self.entries.get() + 1);
        if seq > self.max_seq.get() {
            self.max_seq.set(seq);
        }
        self.map.borrow_mut().insert(k, Rc::from(body));
    }

    /// The newest version of a key with sequence at most `read_seq`.
    pub fn get(&self, token: Token, key: &[u8], read_seq: SeqNo) -> Option<(SeqNo, Rc<[u8]>)> {
        let probe = MemKey::new(token, key, read_seq);
        let map = self.map.borrow();
        let (k, v) = map.range(probe..).next()?;
        if k.token == token && &*k.key == key {
            Some((k.seq(), v.clone()))
        } else {
            None
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
        let all = m.chunk(Bound::Unbounded, 10);
        assert_eq!(all.len(), 3);
        let rest = m.chunk(Bound::Excluded(&all[0].0), 10);
        assert_eq!(rest.len(), 2);
    }
}
