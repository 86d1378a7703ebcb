//! A byte-bounded LRU order over a slab: what the block cache
//! ([`crate::cache`]) and the row cache ([`crate::rowcache`]) share.
//!
//! Values live in a `Vec` of slots linked into a doubly linked list by `u32`
//! indices (most recently used at the head), so a hit is four index moves and
//! no allocation, and a freed slot is reused by the next insert. Each slot is
//! charged a caller-chosen number of bytes; the list keeps the total. It has
//! no index of its own: each cache maps its keys to slot numbers, and removes
//! a slot's key from that map when it removes the slot here
//! ([`SlabLru::remove`] hands the value back, so its key can be read; to
//! evict, remove [`SlabLru::lru`] until [`SlabLru::fits`]).
//!
//! Single-threaded, like the caches that own it.

/// "No slot": the end of the list.
const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Slot<T> {
    /// `None` for a free slot (listed in `free`, not in the list).
    value: Option<T>,
    charge: u64,
    prev: u32,
    next: u32,
}

/// The LRU order and byte count of a cache's entries. See the module docs.
#[derive(Debug)]
pub(crate) struct SlabLru<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to go.
    tail: u32,
    bytes: u64,
    len: u64,
    capacity: u64,
}

impl<T> SlabLru<T> {
    /// An empty list for at most `capacity` bytes (the caller evicts; see
    /// [`SlabLru::fits`]).
    pub(crate) fn new(capacity: u64) -> SlabLru<T> {
        SlabLru {
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            len: 0,
            capacity,
        }
    }

    /// The byte bound.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes charged by the entries held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries held.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// True if `charge` more bytes stay within the bound.
    pub(crate) fn fits(&self, charge: u64) -> bool {
        self.bytes + charge <= self.capacity
    }

    /// The value in slot `i` (`None` for a free or unknown slot).
    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        self.slots.get(i as usize)?.value.as_ref()
    }

    /// The value in slot `i`, mutably.
    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.slots.get_mut(i as usize)?.value.as_mut()
    }

    /// Marks slot `i` most recently used.
    pub(crate) fn touch(&mut self, i: u32) {
        if self.head != i && self.get(i).is_some() {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Sets slot `i`'s charge (a value that changed size).
    pub(crate) fn recharge(&mut self, i: u32, charge: u64) {
        if let Some(s) = self.slots.get_mut(i as usize) {
            if s.value.is_some() {
                self.bytes = self.bytes - s.charge + charge;
                s.charge = charge;
            }
        }
    }

    /// Adds `value` as the most recently used entry; its slot number. Evicts
    /// nothing: the caller makes room first (it must drop the evicted keys
    /// from its own index).
    pub(crate) fn insert(&mut self, value: T, charge: u64) -> u32 {
        let slot = Slot {
            value: Some(value),
            charge,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                // A cache of 2^32 entries would need hundreds of GiB: its
                // bytes bound it long before the index width does.
                (self.slots.len() - 1) as u32
            }
        };
        self.push_front(i);
        self.bytes += charge;
        self.len += 1;
        i
    }

    /// Removes slot `i`; its value (`None` if the slot was free).
    pub(crate) fn remove(&mut self, i: u32) -> Option<T> {
        let value = self.slots.get_mut(i as usize)?.value.take()?;
        self.unlink(i);
        let charge = std::mem::take(&mut self.slots[i as usize].charge);
        self.bytes -= charge;
        self.len -= 1;
        self.free.push(i);
        Some(value)
    }

    /// The least recently used slot, if any.
    pub(crate) fn lru(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Every entry held, in slot order (a dense walk, several times faster
    /// than following the list or a hash map).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.value.as_ref().map(|v| (i as u32, v)))
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.slots[old as usize].prev = i;
        }
        self.head = i;
    }

    /// Walks the list from the head and checks it against the counters and
    /// the slab: (entries, bytes) found. For the caches' tests.
    #[cfg(test)]
    pub(crate) fn check(&self) -> (u64, u64) {
        let (mut n, mut bytes, mut prev) = (0u64, 0u64, NIL);
        let mut i = self.head;
        while i != NIL {
            let s = &self.slots[i as usize];
            assert!(s.value.is_some(), "a free slot {i} is in the list");
            assert_eq!(s.prev, prev, "slot {i}'s back link");
            n += 1;
            bytes += s.charge;
            prev = i;
            i = s.next;
        }
        assert_eq!(self.tail, prev, "the tail is the last slot of the list");
        assert_eq!((n, bytes), (self.len, self.bytes));
        assert_eq!(self.slots.len() - self.free.len(), n as usize);
        (n, bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn order_charges_and_slot_reuse() {
        let mut l = SlabLru::new(100);
        let a = l.insert('a', 10);
        let b = l.insert('b', 20);
        let c = l.insert('c', 30);
        assert_eq!((l.len(), l.bytes()), (3, 60));
        assert_eq!(l.lru(), Some(a));
        l.touch(a);
        assert_eq!(l.lru(), Some(b));
        assert!(l.fits(40) && !l.fits(41));
        assert_eq!(l.remove(l.lru().unwrap()), Some('b'));
        l.recharge(c, 5);
        assert_eq!((l.len(), l.bytes()), (2, 15));
        assert_eq!(l.remove(c), Some('c'));
        assert_eq!(l.remove(c), None);
        assert_eq!(l.get(c), None);
        // Freed slots come back before the slab grows.
        let d = l.insert('d', 1);
        assert!(d == b || d == c);
        assert_eq!(l.iter().map(|(_, v)| *v).collect::<String>().len(), 2);
        l.check();
    }

    proptest! {
        /// Random operations against a model (a Vec, most recent first).
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..5, 0usize..16, 1u64..50), 1..300)) {
            let mut l = SlabLru::new(u64::MAX);
            let mut model: Vec<(u32, u64)> = Vec::new();
            let mut next = 0u64;
            for (op, pick, charge) in ops {
                match op {
                    0 | 1 => {
                        let i = l.insert(next, charge);
                        next += 1;
                        model.insert(0, (i, charge));
                    }
                    2 if !model.is_empty() => {
                        let (i, c) = model.remove(pick % model.len());
                        model.insert(0, (i, c));
                        l.touch(i);
                    }
                    3 if !model.is_empty() => {
                        let (i, _) = model.remove(pick % model.len());
                        prop_assert!(l.remove(i).is_some());
                    }
                    4 => {
                        let want = model.pop().map(|(i, _)| i);
                        prop_assert_eq!(l.lru(), want);
                        if let Some(i) = want {
                            prop_assert!(l.remove(i).is_some());
                        }
                    }
                    _ => {}
                }
                let (n, bytes) = l.check();
                prop_assert_eq!(n, model.len() as u64);
                prop_assert_eq!(bytes, model.iter().map(|&(_, c)| c).sum::<u64>());
                prop_assert_eq!(l.lru(), model.last().map(|&(i, _)| i));
            }
        }
    }
}
