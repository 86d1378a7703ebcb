//! The set of live tables, immutable once built.
//!
//! Readers clone the `Rc<Version>` they start with, so a compaction that
//! replaces tables never pulls a file out from under a read: the old tables
//! stay open until the last reader lets go, and only then are their files
//! deleted.

use std::cell::Cell;
use std::cmp::Ordering;
use std::path::PathBuf;
use std::rc::Rc;

use crate::format::{cmp_user, Token};
use crate::manifest::FileRecord;
use crate::sstable::Table;

/// A live table.
#[derive(Debug)]
pub struct TableHandle {
    /// What the manifest records of it.
    pub rec: FileRecord,
    /// The open table.
    pub table: Rc<Table>,
    /// Its path.
    pub path: PathBuf,
    /// A compaction has taken it as input.
    pub being_compacted: Cell<bool>,
}

impl TableHandle {
    /// True if the table's key range covers (token, key).
    pub fn covers(&self, token: Token, key: &[u8]) -> bool {
        let (st, sk, _) = &self.rec.smallest;
        let (lt, lk, _) = &self.rec.largest;
        cmp_user(*st, sk, token, key) != Ordering::Greater && cmp_user(*lt, lk, token, key) != Ordering::Less
    }
}

/// Tables per level. Level 0 is ordered newest first (by largest sequence);
/// deeper levels by smallest key, disjoint.
#[derive(Debug, Default, Clone)]
pub struct Version {
    /// The levels.
    pub levels: Vec<Vec<Rc<TableHandle>>>,
}

impl Version {
    /// Sorts every level into its reading order.
    pub fn normalize(&mut self) {
        for (i, l) in self.levels.iter_mut().enumerate() {
            if i == 0 {
                l.sort_by_key(|t| std::cmp::Reverse(t.rec.max_seq));
            } else {
                l.sort_by(|a, b| {
                    let (ta, ka, _) = &a.rec.smallest;
                    let (tb, kb, _) = &b.rec.smallest;
                    cmp_user(*ta, ka, *tb, kb)
                });
            }
        }
    }

    /// The table of a deeper level that may hold (token, key).
    pub fn find_in_level(&self, level: usize, token: Token, key: &[u8]) -> Option<&Rc<TableHandle>> {
        let l = self.levels.get(level)?;
        let i = l.partition_point(|t| {
            let (lt, lk, _) = &t.rec.largest;
            cmp_user(*lt, lk, token, key) == Ordering::Less
        });
        l.get(i).filter(|t| t.covers(token, key))
    }

    /// Every live table.
    pub fn all(&self) -> impl Iterator<Item = &Rc<TableHandle>> {
        self.levels.iter().flatten()
    }

    /// Bytes per level.
    pub fn level_bytes(&self) -> Vec<u64> {
        self.levels.iter().map(|l| l.iter().map(|t| t.rec.size).sum()).collect()
    }
}
