//! Merge iteration over memtables, tables and levels.
//!
//! Every source is a cursor over internal keys (token, key, seq desc). The
//! merge keeps all sources positioned and exposes the smallest; there are few
//! sources (memtables, a handful of level-0 tables, one per deeper level), so a
//! linear minimum beats a heap's bookkeeping.

use std::cmp::Ordering;
use std::ops::Bound;
use std::rc::Rc;

use crate::error::Result;
use crate::format::{cmp_internal, cmp_user, SeqNo, Token};
use crate::memtable::{MemEntry, MemKey, MemTable};
use crate::sstable::TableIter;
use crate::version::TableHandle;

const MEM_CHUNK: usize = 256;

/// A cursor over one memtable, showing only versions at or below `read_seq`.
#[derive(Debug)]
pub struct MemSource {
    mem: Rc<MemTable>,
    read_seq: SeqNo,
    chunk: Vec<MemEntry>,
    idx: usize,
    exhausted: bool,
}

impl MemSource {
    /// A cursor over `mem`.
    pub fn new(mem: Rc<MemTable>, read_seq: SeqNo) -> MemSource {
        MemSource {
            mem,
            read_seq,
            chunk: Vec::new(),
            idx: 0,
            exhausted: true,
        }
    }

    fn fill(&mut self, from: Bound<&MemKey>) {
        self.chunk = self.mem.chunk(from, MEM_CHUNK);
        self.exhausted = self.chunk.len() < MEM_CHUNK;
        self.idx = 0;
        self.skip_invisible();
    }

    fn skip_invisible(&mut self) {
        loop {
            while self.idx < self.chunk.len() && self.chunk[self.idx].0.seq() > self.read_seq {
                self.idx += 1;
            }
            if self.idx < self.chunk.len() || self.exhausted {
                return;
            }
            let Some(last) = self.chunk.last().map(|e| e.0.clone()) else {
                return;
            };
            self.chunk = self.mem.chunk(Bound::Excluded(&last), MEM_CHUNK);
            self.exhausted = self.chunk.len() < MEM_CHUNK;
            self.idx = 0;
        }
    }

    /// See [`Source`].
    pub fn seek(&mut self, token: Token, key: &[u8]) {
        let k = MemKey::new(token, key, SeqNo::MAX);
        self.fill(Bound::Included(&k));
    }

    /// See [`Source`].
    pub fn seek_to_first(&mut self) {
        self.fill(Bound::Unbounded);
    }

    /// See [`Source`].
    pub fn advance(&mut self) {
        self.idx += 1;
        self.skip_invisible();
    }

    /// See [`Source`].
    pub fn valid(&self) -> bool {
        self.idx < self.chunk.len()
    }

    /// See [`Source`].
    pub fn cur(&self) -> &MemEntry {
        &self.chunk[self.idx]
    }
}

/// A cursor over one level of non-overlapping tables (level 1 and deeper).
#[derive(Debug)]
pub struct LevelSource {
    tables: Vec<Rc<TableHandle>>,
    fill_cache: bool,
    idx: usize,
    iter: Option<TableIter>,
}

impl LevelSource {
    /// A cursor over `tables`, which must be sorted and disjoint.
    pub fn new(tables: Vec<Rc<TableHandle>>, fill_cache: bool) -> LevelSource {
        LevelSource {
            tables,
            fill_cache,
            idx: 0,
            iter: None,
        }
    }

    async fn open_at(&mut self, idx: usize) -> Result<()> {
        self.idx = idx;
        self.iter = match self.tables.get(idx) {
            Some(t) => {
                let mut it = TableIter::new(t.table.clone());
                it.set_fill_cache(self.fill_cache);
                it.seek_to_first().await?;
                Some(it)
            }
            None => None,
        };
        Ok(())
    }

    async fn skip_empty(&mut self) -> Result<()> {
        while let Some(it) = &self.iter {
            if it.valid() {
                break;
            }
            let next = self.idx + 1;
            self.open_at(next).await?;
        }
        Ok(())
    }

    async fn seek(&mut self, token: Token, key: &[u8]) -> Result<()> {
        // The first table whose largest user key is at or past the target.
        let i = self.tables.partition_point(|t| {
            let (lt, lk, _) = &t.rec.largest;
            cmp_user(*lt, lk, token, key) == Ordering::Less
        });
        self.idx = i;
        self.iter = match self.tables.get(i) {
            Some(t) => {
                let mut it = TableIter::new(t.table.clone());
                it.set_fill_cache(self.fill_cache);
                it.seek(token, key).await?;
                Some(it)
            }
            None => None,
        };
        self.skip_empty().await
    }

    async fn seek_to_first(&mut self) -> Result<()> {
        self.open_at(0).await?;
        self.skip_empty().await
    }

    async fn advance(&mut self) -> Result<()> {
        if let Some(it) = self.iter.as_mut() {
            it.advance().await?;
        }
        self.skip_empty().await
    }

    fn valid(&self) -> bool {
        self.iter.as_ref().is_some_and(|i| i.valid())
    }
}

/// One input of a merge.
#[derive(Debug)]
pub enum Source {
    /// A memtable.
    Mem(MemSource),
    /// One table.
    Table(Box<TableIter>),
    /// A level of disjoint tables.
    Level(LevelSource),
}

impl Source {
    /// Positions at the first entry at or after (token, key).
    pub async fn seek(&mut self, token: Token, key: &[u8]) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.seek(token, key);
                Ok(())
            }
            Source::Table(t) => t.seek(token, key).await,
            Source::Level(l) => l.seek(token, key).await,
        }
    }

    /// Positions at the first entry.
    pub async fn seek_to_first(&mut self) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.seek_to_first();
                Ok(())
            }
            Source::Table(t) => t.seek_to_first().await,
            Source::Level(l) => l.seek_to_first().await,
        }
    }

    /// Moves to the next entry.
    pub async fn advance(&mut self) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.advance();
                Ok(())
            }
            Source::Table(t) => t.advance().await,
            Source::Level(l) => l.advance().await,
        }
    }

    /// True while positioned on an entry.
    pub fn valid(&self) -> bool {
        match self {
            Source::Mem(m) => m.valid(),
            Source::Table(t) => t.valid(),
            Source::Level(l) => l.valid(),
        }
    }

    /// The current entry: token, key, seq, body. Only while `valid()`.
    pub fn current(&self) -> (Token, &[u8], SeqNo, &[u8]) {
        match self {
            Source::Mem(m) => {
                let (k, b) = m.cur();
                (k.token, &k.key, k.seq(), b)
            }
            Source::Table(t) => (t.token(), t.key(), t.seq(), t.body()),
            Source::Level(l) => match &l.iter {
                Some(t) => (t.token(), t.key(), t.seq(), t.body()),
                None => (0, &[], 0, &[]),
            },
        }
    }
}

/// The merge of several sources in internal-key order.
#[derive(Debug)]
pub struct MergeIter {
    sources: Vec<Source>,
    cur: Option<usize>,
}

impl MergeIter {
    /// A merge over `sources` (not yet positioned).
    pub fn new(sources: Vec<Source>) -> MergeIter {
        MergeIter { sources, cur: None }
    }

    fn pick(&mut self) {
        let mut best: Option<usize> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if !s.valid() {
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) => {
                    let (ta, ka, sa, _) = s.current();
                    let (tb, kb, sb, _) = self.sources[b].current();
                    if cmp_internal(ta, ka, sa, tb, kb, sb) == Ordering::Less {
                        Some(i)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        self.cur = best;
    }

    /// Positions every source at (token, key).
    pub async fn seek(&mut self, token: Token, key: &[u8]) -> Result<()> {
        for s in self.sources.iter_mut() {
            s.seek(token, key).await?;
        }
        self.pick();
        Ok(())
    }

    /// Positions every source at its first entry.
    pub async fn seek_to_first(&mut self) -> Result<()> {
        for s in self.sources.iter_mut() {
            s.seek_to_first().await?;
        }
        self.pick();
        Ok(())
    }

    /// True while positioned on an entry.
    pub fn valid(&self) -> bool {
        self.cur.is_some()
    }

    /// The current entry (token, key, seq, body). Only while `valid()`.
    pub fn current(&self) -> (Token, &[u8], SeqNo, &[u8]) {
        match self.cur {
            Some(i) => self.sources[i].current(),
            None => (0, &[], 0, &[]),
        }
    }

    /// Moves to the next entry.
    pub async fn advance(&mut self) -> Result<()> {
        if let Some(i) = self.cur {
            self.sources[i].advance().await?;
            self.pick();
        }
        Ok(())
    }
}
