//! Flushed memtables kept for point reads, behind one hash index.
//!
//! The engine keeps its most recently flushed memtables ([`Options`]'s
//! `retain_flushed_bytes`) because a read of a recent write then costs a hash
//! probe instead of a table read. Probing each kept memtable in turn cost a
//! probe per memtable: with six kept, a read of a key none of them held paid
//! six probes, each a cache miss or two, and `MemTable::get` was a fifth of a
//! node's CPU under `redis-benchmark -t get -P 16` (bench/RESULTS.md). Here the
//! newest version of every key of the kept memtables sits in one index, so a
//! read pays one probe however many are kept.
//!
//! The rules that keep a hit the newest stored version of its key:
//!
//! 1. Memtables are kept newest-first from the latest flush back, with no
//!    gap (as before): a memtable too large to keep empties the whole set.
//! 2. A kept memtable enters the index in the background, a slice at a time
//!    with yields between ([`Recent::absorb`]). Until it is all in, reads
//!    probe it directly ([`Recent::get`] tries the memtables still pending,
//!    newest first, before the index), and it is newer than everything
//!    already in the index, so its versions replace what is there.
//! 3. Dropping the oldest kept memtable takes its keys out of the index, also
//!    in the background: only entries that still come from it (a newer kept
//!    memtable may have replaced them). An entry of a dropped memtable that
//!    is still in the index is still the newest version of its key: any
//!    newer one is in a newer memtable, kept (it replaced the entry, or is
//!    probed first) or itself dropped, which only happens after this one.
//! 4. Emptying the set (rule 1) empties the index at once; an absorb under
//!    way when that happens clears what it added since and stops.
//!
//! Single-threaded, like the engine.
//!
//! [`Options`]: crate::options::Options

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use hashbrown::HashTable;

use crate::format::{SeqNo, Token};
use crate::memtable::{MemTable, Newest, INDEX_PARTS};

#[derive(Debug)]
struct Entry {
    /// The version, as its memtable's index holds it.
    n: Newest,
    /// The kept memtable it came from.
    gen: u64,
}

/// Bytes the index adds per key it holds: the slot and its control byte over
/// the table's load factor.
const ENTRY_BYTES: usize = (std::mem::size_of::<Entry>() + 1) * 8 / 7;

/// A kept memtable: its generation, the memtable and the bytes charged for
/// it (its own size and its keys' index slots).
type Kept = (u64, Rc<MemTable>, usize);

#[derive(Debug, Default)]
struct State {
    /// Kept, not (all) in the index yet; newest at the back.
    pending: VecDeque<Kept>,
    /// Kept and in the index; newest at the back.
    merged: VecDeque<Kept>,
    /// Dropped, with entries still to take out of the index; oldest first.
    doomed: VecDeque<Kept>,
    /// Bytes charged for the kept memtables (pending and merged).
    bytes: usize,
    next_gen: u64,
}

/// The kept memtables and their index. See the module docs.
#[derive(Debug)]
pub(crate) struct Recent {
    state: RefCell<State>,
    /// Split like the memtable's own index, so that a doubling moves a
    /// 256th of the keys.
    index: RefCell<Vec<HashTable<Entry>>>,
    /// Bumped by [`Recent::clear`]: an absorb that sees it change stops.
    epoch: Cell<u64>,
    absorbing: Cell<bool>,
    /// Memtables no longer kept, for [`Recent::absorb`] to free a slice at
    /// a time ([`MemTable::dismantle`]) instead of in one synchronous drop.
    graveyard: RefCell<Vec<Rc<MemTable>>>,
}

/// Where a memtable index hash falls among the parts (as in [`crate::memtable`]).
fn part_of(hash: u64) -> usize {
    (hash >> 48) as usize % INDEX_PARTS
}

impl Recent {
    pub(crate) fn new() -> Recent {
        Recent {
            state: RefCell::new(State::default()),
            index: RefCell::new((0..INDEX_PARTS).map(|_| HashTable::new()).collect()),
            epoch: Cell::new(0),
            absorbing: Cell::new(false),
            graveyard: RefCell::new(Vec::new()),
        }
    }

    /// The newest kept version of (token, key): `hash` is
    /// [`crate::memtable::index_hash`] of the key.
    pub(crate) fn get(&self, hash: u64, token: Token, key: &[u8]) -> Option<(SeqNo, Rc<[u8]>)> {
        {
            let st = self.state.borrow();
            for (_, m, _) in st.pending.iter().rev() {
                if let Some(hit) = m.get_hashed(hash, token, key, SeqNo::MAX) {
                    return Some(hit);
                }
            }
        }
        let index = self.index.borrow();
        let e = index
            .get(part_of(hash))?
            .find(hash, |e| e.n.token == token && *e.n.key == *key)?;
        Some((e.n.seq, e.n.body.clone()))
    }

    /// Keeps `m`, just flushed, then drops the oldest kept memtables past
    /// `budget` bytes; a memtable over the whole budget empties the set.
    /// Call [`Recent::absorb`] after it.
    pub(crate) fn keep(&self, m: Rc<MemTable>, budget: usize) {
        let charge = m.size() + m.distinct_keys() * ENTRY_BYTES;
        if charge > budget {
            self.clear();
            self.graveyard.borrow_mut().push(m);
            return;
        }
        let mut st = self.state.borrow_mut();
        let gen = st.next_gen;
        st.next_gen += 1;
        st.bytes += charge;
        st.pending.push_back((gen, m, charge));
        while st.bytes > budget {
            // Oldest first: merged ones are older than pending ones.
            if let Some(old) = st.merged.pop_front() {
                st.bytes -= old.2;
                st.doomed.push_back(old);
            } else if let Some(old) = st.pending.pop_front() {
                // Not in the index (or partly, if being absorbed: the
                // absorb sees it gone and dooms it).
                st.bytes -= old.2;
                self.graveyard.borrow_mut().push(old.1);
            } else {
                break;
            }
        }
    }

    /// Forgets every kept memtable and empties the index.
    pub(crate) fn clear(&self) {
        self.epoch.set(self.epoch.get() + 1);
        let next_gen = self.state.borrow().next_gen;
        let old = std::mem::replace(
            &mut *self.state.borrow_mut(),
            State {
                next_gen,
                ..State::default()
            },
        );
        let mut graveyard = self.graveyard.borrow_mut();
        for (_, m, _) in old.pending.into_iter().chain(old.merged).chain(old.doomed) {
            graveyard.push(m);
        }
        drop(graveyard);
        for part in self.index.borrow_mut().iter_mut() {
            *part = HashTable::new();
        }
    }

    /// (kept memtables, the bytes charged for them: their own and their
    /// keys' slots in the index).
    pub(crate) fn usage(&self) -> (usize, usize) {
        let st = self.state.borrow();
        (st.pending.len() + st.merged.len(), st.bytes)
    }

    /// Moves pending memtables into the index and takes dropped ones out,
    /// one index part (a 256th) at a time, giving other tasks a turn after
    /// each. One absorb
    /// runs at a time; a call while one runs returns at once (the running
    /// one takes the new work too).
    pub(crate) async fn absorb(&self) {
        if self.absorbing.replace(true) {
            return;
        }
        let _done = Reset(&self.absorbing);
        loop {
            let doomed = self.state.borrow().doomed.front().cloned();
            if let Some((gen, m, _)) = doomed {
                let epoch = self.epoch.get();
                for part in 0..INDEX_PARTS {
                    self.remove_part(&m, part, gen);
                    crate::io::yield_now().await;
                    if self.epoch.get() != epoch {
                        break;
                    }
                }
                let mut st = self.state.borrow_mut();
                if st.doomed.front().is_some_and(|(g, _, _)| *g == gen) {
                    if let Some((_, m, _)) = st.doomed.pop_front() {
                        self.graveyard.borrow_mut().push(m);
                    }
                }
                continue;
            }
            let pending = self.state.borrow().pending.front().cloned();
            let Some((gen, m, charge)) = pending else {
                // Last, so that reads find new memtables in the index first.
                let dead = self.graveyard.borrow_mut().pop();
                match dead {
                    Some(m) => {
                        MemTable::dismantle(m).await;
                        continue;
                    }
                    None => return,
                }
            };
            let epoch = self.epoch.get();
            for part in 0..INDEX_PARTS {
                self.add_part(&m, part, gen);
                crate::io::yield_now().await;
                if self.epoch.get() != epoch {
                    // Cleared meanwhile: what is in the index now came from
                    // this absorb, of a memtable no longer kept.
                    for p in self.index.borrow_mut().iter_mut() {
                        *p = HashTable::new();
                    }
                    break;
                }
            }
            if self.epoch.get() != epoch {
                continue;
            }
            let mut st = self.state.borrow_mut();
            if st.pending.front().is_some_and(|(g, _, _)| *g == gen) {
                if let Some(kept) = st.pending.pop_front() {
                    st.merged.push_back(kept);
                }
            } else {
                // Dropped while it was going in: take its entries out again.
                st.doomed.push_back((gen, m, charge));
            }
        }
    }

    fn add_part(&self, m: &MemTable, part: usize, gen: u64) {
        let mut index = self.index.borrow_mut();
        let Some(table) = index.get_mut(part) else { return };
        m.for_each_newest_in_part(part, |n: &Newest| {
            match table.find_mut(n.hash, |e| e.n.token == n.token && *e.n.key == *n.key) {
                Some(e) => {
                    // Newer memtable, newer version; the check only guards
                    // against a sequence number from a replayed or repaired
                    // write that is older than what is here.
                    if n.seq >= e.n.seq {
                        e.n.seq = n.seq;
                        e.n.body = n.body.clone();
                        e.gen = gen;
                    }
                }
                None => {
                    table.insert_unique(n.hash, Entry { n: n.clone(), gen }, |e| e.n.hash);
                }
            }
        });
    }

    fn remove_part(&self, m: &MemTable, part: usize, gen: u64) {
        let mut index = self.index.borrow_mut();
        let Some(table) = index.get_mut(part) else { return };
        m.for_each_newest_in_part(part, |n: &Newest| {
            if let Ok(e) = table.find_entry(n.hash, |e| e.n.token == n.token && *e.n.key == *n.key) {
                if e.get().gen == gen {
                    e.remove();
                }
            }
        });
        // Give back the room of a part that emptied a lot.
        if table.capacity() > 64 && table.len() < table.capacity() / 4 {
            table.shrink_to(table.len() * 2, |e| e.n.hash);
        }
    }

    /// Entries in the index (for tests).
    #[cfg(test)]
    fn indexed(&self) -> usize {
        self.index.borrow().iter().map(HashTable::len).sum()
    }
}

/// Clears a flag when dropped (an absorb ends, or its future is dropped).
struct Reset<'a>(&'a Cell<bool>);

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::memtable::index_hash;

    fn mem(first: u64, rows: &[(&str, SeqNo, &str)]) -> Rc<MemTable> {
        let m = MemTable::new(first);
        for (k, seq, v) in rows {
            m.insert(7, k.as_bytes(), *seq, v.as_bytes());
        }
        Rc::new(m)
    }

    fn get(r: &Recent, k: &str) -> Option<(SeqNo, String)> {
        r.get(index_hash(k.as_bytes()), 7, k.as_bytes())
            .map(|(s, b)| (s, String::from_utf8(b.to_vec()).unwrap()))
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn memtables_no_longer_kept_are_freed_by_the_next_absorb() {
        run(|| async {
            let r = Recent::new();
            let rows: Vec<(String, SeqNo, String)> = (0..3000).map(|i| (format!("k{i}"), i, "v".repeat(20))).collect();
            let rows: Vec<(&str, SeqNo, &str)> = rows.iter().map(|(k, s, v)| (k.as_str(), *s, v.as_str())).collect();
            let a = mem(1, &rows);
            let b = mem(2, &rows);
            let budget = a.size() + 3000 * ENTRY_BYTES;
            let (weak_a, weak_b) = (Rc::downgrade(&a), Rc::downgrade(&b));
            r.keep(a, budget);
            r.absorb().await;
            // `b` pushes `a` out; `a`'s entries leave the index, then `a` is
            // freed a slice at a time, not in `keep`.
            r.keep(b, budget);
            assert!(weak_a.upgrade().is_some(), "dropped out of the budget, not freed yet");
            r.absorb().await;
            assert!(weak_a.upgrade().is_none(), "the absorb freed it");
            assert_eq!(get(&r, "k7"), Some((7, "v".repeat(20))));
            // Cleared (a memtable over the budget): everything kept goes the same way.
            let big = mem(3, &[("w", 10, &"v".repeat(budget))]);
            let weak_big = Rc::downgrade(&big);
            r.keep(big, budget);
            assert!(weak_b.upgrade().is_some() && weak_big.upgrade().is_some());
            r.absorb().await;
            assert!(weak_b.upgrade().is_none() && weak_big.upgrade().is_none());
            assert_eq!(get(&r, "k7"), None);
        });
    }

    #[test]
    fn newest_version_wins_before_and_after_absorbing_and_dropping() {
        run(|| async {
            let r = Recent::new();
            let a = mem(1, &[("k", 1, "a1"), ("x", 2, "x2")]);
            let b = mem(2, &[("k", 5, "b5"), ("y", 6, "y6")]);
            let budget = (a.size() + 2 * ENTRY_BYTES) + (b.size() + 2 * ENTRY_BYTES);
            r.keep(a.clone(), budget);
            r.keep(b.clone(), budget);
            // Pending: probed directly, newest first.
            assert_eq!(get(&r, "k"), Some((5, "b5".into())));
            r.absorb().await;
            assert_eq!(r.indexed(), 3);
            assert_eq!(get(&r, "k"), Some((5, "b5".into())));
            assert_eq!(get(&r, "x"), Some((2, "x2".into())));
            assert_eq!(get(&r, "nope"), None);
            // A third one pushes `a` out: its own keys leave, the replaced one stays.
            let c = mem(3, &[("z", 9, "z9")]);
            r.keep(c.clone(), budget);
            assert_eq!(r.usage().0, 2);
            r.absorb().await;
            assert_eq!(get(&r, "x"), None);
            assert_eq!(get(&r, "k"), Some((5, "b5".into())));
            assert_eq!(get(&r, "z"), Some((9, "z9".into())));
            assert_eq!(r.indexed(), 3);
            // One too large for the budget empties everything.
            let big = mem(4, &[("w", 10, &"v".repeat(budget))]);
            r.keep(big, budget);
            assert_eq!((r.usage(), r.indexed()), ((0, 0), 0));
            assert_eq!(get(&r, "k"), None);
        });
    }

    #[test]
    fn a_clear_during_an_absorb_leaves_nothing_behind() {
        run(|| async {
            let r = Rc::new(Recent::new());
            let rows: Vec<(String, SeqNo, String)> =
                (0..5000).map(|i| (format!("key{i}"), i + 1, format!("v{i}"))).collect();
            let m = MemTable::new(1);
            for (k, s, v) in &rows {
                m.insert(7, k.as_bytes(), *s, v.as_bytes());
            }
            let m = Rc::new(m);
            r.keep(m.clone(), usize::MAX);
            let r2 = r.clone();
            let t = glommio::spawn_local(async move { r2.absorb().await });
            // Let it take a few parts in, then clear under it.
            for _ in 0..3 {
                crate::io::yield_now().await;
            }
            assert!(r.indexed() > 0, "the absorb started");
            r.clear();
            t.await;
            assert_eq!(r.indexed(), 0);
            assert_eq!(get(&r, "key1"), None);
            // And a drop while it goes in: its entries come out again.
            let r2 = r.clone();
            r.keep(m.clone(), usize::MAX);
            let t = glommio::spawn_local(async move { r2.absorb().await });
            crate::io::yield_now().await;
            let small = mem(2, &[("other", 9000, "o")]);
            r.keep(small.clone(), small.size() + ENTRY_BYTES);
            t.await;
            assert_eq!(r.usage().0, 1);
            assert_eq!(get(&r, "key1"), None);
            assert_eq!(get(&r, "other"), Some((9000, "o".into())));
            assert_eq!(r.indexed(), 1);
        });
    }
}
