//! Anti-entropy: Merkle trees over a token range, and the exchange that
//! repairs the ranges where two replicas differ.
//!
//! A tree splits its range into `2^depth` equal token intervals (leaves).
//! A leaf's hash is the XOR of one hash per key, over (token, key, record
//! digest), so it does not depend on the order keys are inserted in and two
//! replicas holding the same versions of the same keys get the same leaf.
//! Inner nodes hash their two children (two empty children hash to 0, so
//! empty subtrees cost nothing to compare). Two replicas exchange trees,
//! [`MerkleTree::diff`] walks down only where hashes differ, and only the
//! keys of the differing leaves' ranges are exchanged and merged
//! ([`reconcile`]) on both sides.
//!
//! Tombstones are records like any other, so repair spreads deletes; they
//! must not be purged before the grace period, or a replica that missed the
//! delete would bring the value back through this very exchange.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::coordinator::{Mutation, Versioned};
use crate::error::Result;
use crate::topology::{Ring, Token};

/// The tokens `(start, end]`, wrapping around the ring; `start == end` is
/// the whole ring (as for a ring of one vnode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenRange {
    /// Exclusive lower end.
    pub start: Token,
    /// Inclusive upper end.
    pub end: Token,
}

impl TokenRange {
    /// The whole ring.
    pub const FULL: TokenRange = TokenRange { start: 0, end: 0 };

    /// The range vnode number `position` (in ring order) owns: from the
    /// previous vnode's token (exclusive) to its own (inclusive).
    pub fn of_vnode(ring: &Ring, position: usize) -> TokenRange {
        let v = ring.vnodes();
        let prev = (position + v.len() - 1) % v.len();
        TokenRange {
            start: v[prev].token,
            end: v[position].token,
        }
    }

    /// How many tokens it holds (up to 2^64).
    pub fn width(&self) -> u128 {
        if self.start == self.end {
            1 << 64
        } else {
            u128::from(self.end.wrapping_sub(self.start))
        }
    }

    /// The token's offset from the range's first token (valid when contained).
    fn offset(&self, token: Token) -> u128 {
        u128::from(token.wrapping_sub(self.start).wrapping_sub(1))
    }

    /// Whether `token` is in the range.
    pub fn contains(&self, token: Token) -> bool {
        self.offset(token) < self.width()
    }
}

/// Builds a [`MerkleTree`] from a replica's keys in a range.
#[derive(Debug, Clone)]
pub struct MerkleBuilder {
    range: TokenRange,
    depth: u32,
    leaves: Vec<u64>,
}

impl MerkleBuilder {
    /// A builder of a tree over `range` with `2^depth` leaves (depth at most
    /// [`MerkleTree::MAX_DEPTH`]; more is clamped, as it only costs memory).
    pub fn new(range: TokenRange, depth: u32) -> Self {
        let depth = depth.min(MerkleTree::MAX_DEPTH);
        MerkleBuilder {
            range,
            depth,
            leaves: vec![0; 1 << depth],
        }
    }

    /// The leaf `token` falls in (the token must be in the range).
    fn leaf_of(&self, token: Token) -> usize {
        // offset < width <= 2^64 and leaves <= 2^20: the product fits a u128,
        // and the quotient is below the leaf count.
        (self.range.offset(token) * self.leaves.len() as u128 / self.range.width()) as usize
    }

    /// Adds one key's record digest. Returns false (adding nothing) for a
    /// token outside the range.
    pub fn insert(&mut self, token: Token, key: &[u8], digest: u64) -> bool {
        if !self.range.contains(token) {
            return false;
        }
        let mut h = Xxh3::new();
        h.update(&token.to_le_bytes());
        h.update(&digest.to_le_bytes());
        // The key last: its length is implied, and the fixed fields cannot alias it.
        h.update(key);
        let leaf = self.leaf_of(token);
        self.leaves[leaf] ^= h.digest();
        true
    }

    /// The finished tree.
    pub fn finish(self) -> MerkleTree {
        let n = self.leaves.len();
        let mut nodes = vec![0u64; 2 * n];
        nodes[n..].copy_from_slice(&self.leaves);
        for i in (1..n).rev() {
            nodes[i] = combine(nodes[2 * i], nodes[2 * i + 1]);
        }
        MerkleTree {
            range: self.range,
            depth: self.depth,
            nodes,
        }
    }
}

fn combine(left: u64, right: u64) -> u64 {
    if left == 0 && right == 0 {
        return 0;
    }
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&left.to_le_bytes());
    buf[8..].copy_from_slice(&right.to_le_bytes());
    xxh3_64(&buf)
}

/// A replica's Merkle tree over one token range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    range: TokenRange,
    depth: u32,
    /// Heap order: the root at 1, node i's children at 2i and 2i + 1, the
    /// leaves from `2^depth` on (index 0 unused).
    nodes: Vec<u64>,
}

impl MerkleTree {
    /// The default depth: 1024 leaves per vnode range.
    pub const DEFAULT_DEPTH: u32 = 10;
    /// The deepest tree built (a million leaves, 16 MiB).
    pub const MAX_DEPTH: u32 = 20;

    /// The range covered.
    pub fn range(&self) -> TokenRange {
        self.range
    }

    /// The depth (`2^depth` leaves).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The root hash (0: no keys).
    pub fn root(&self) -> u64 {
        self.nodes[1]
    }

    fn leaves(&self) -> usize {
        1 << self.depth
    }

    /// The tokens leaf `i` covers; `None` when it covers none (a range
    /// narrower than the leaf count).
    pub fn leaf_range(&self, i: usize) -> Option<TokenRange> {
        let w = self.range.width();
        let l = self.leaves() as u128;
        let lo = (i as u128 * w).div_ceil(l);
        let hi = ((i as u128 + 1) * w).div_ceil(l);
        // Offsets are below 2^64 + 1; as u64 wraps 2^64 to 0, which is the
        // right token arithmetic on the ring.
        (lo < hi).then(|| TokenRange {
            start: self.range.start.wrapping_add(lo as u64),
            end: self.range.start.wrapping_add(hi as u64),
        })
    }

    /// The ranges where `a` and `b` differ, adjacent leaves merged, in order.
    /// Trees of different ranges or depths cannot be compared leaf by leaf:
    /// their whole ranges are returned, which repairs too much but never
    /// too little.
    pub fn diff(a: &MerkleTree, b: &MerkleTree) -> Vec<TokenRange> {
        if a.range != b.range || a.depth != b.depth {
            let mut out = vec![a.range];
            if b.range != a.range {
                out.push(b.range);
            }
            return out;
        }
        let n = a.leaves();
        let mut differing = Vec::new();
        let mut stack = vec![1usize];
        while let Some(i) = stack.pop() {
            if a.nodes[i] == b.nodes[i] {
                continue;
            }
            if i >= n {
                differing.push(i - n);
            } else {
                // Right first, so leaves pop in ascending order.
                stack.push(2 * i + 1);
                stack.push(2 * i);
            }
        }
        debug_assert!(differing.windows(2).all(|w| w[0] < w[1]));
        let mut out: Vec<TokenRange> = Vec::new();
        let mut last_leaf = usize::MAX;
        for leaf in differing {
            let Some(r) = a.leaf_range(leaf) else {
                continue;
            };
            match out.last_mut() {
                Some(prev) if last_leaf.wrapping_add(1) == leaf && prev.end == r.start => prev.end = r.end,
                _ => out.push(r),
            }
            last_leaf = leaf;
        }
        out
    }
}

/// What each side of a repair must apply.
#[derive(Debug, Clone, Default)]
pub struct Exchange<R> {
    /// Merged states for our side (keys where ours differs from the merge).
    pub to_ours: Vec<Mutation<R>>,
    /// Merged states for their side.
    pub to_theirs: Vec<Mutation<R>>,
}

/// The repair of two replicas' keys in the differing ranges: for each key
/// either side has, the merge, for each side whose state differs from it.
pub fn reconcile<R: Versioned>(ours: &BTreeMap<Vec<u8>, R>, theirs: &BTreeMap<Vec<u8>, R>) -> Result<Exchange<R>> {
    let mut to_ours = Vec::new();
    let mut to_theirs = Vec::new();
    let mut keys: Vec<&Vec<u8>> = ours.keys().chain(theirs.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (a, b) = (ours.get(key), theirs.get(key));
        let merged = match (a, b) {
            (Some(a), Some(b)) => a.merge(b)?,
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (None, None) => continue,
        };
        let digest = merged.digest();
        let m = || Mutation::new(key.clone(), merged.clone());
        if a.is_none_or(|a| a.digest() != digest) {
            to_ours.push(m());
        }
        if b.is_none_or(|b| b.digest() != digest) {
            to_theirs.push(m());
        }
    }
    Ok(Exchange { to_ours, to_theirs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree(range: TokenRange, depth: u32, entries: &[(Token, u64)]) -> MerkleTree {
        let mut b = MerkleBuilder::new(range, depth);
        for (t, d) in entries {
            assert!(b.insert(*t, &t.to_le_bytes(), *d));
        }
        b.finish()
    }

    #[test]
    fn ranges_wrap() {
        let r = TokenRange {
            start: u64::MAX - 1,
            end: 1,
        };
        assert_eq!(r.width(), 3);
        assert!(r.contains(u64::MAX) && r.contains(0) && r.contains(1));
        assert!(!r.contains(u64::MAX - 1) && !r.contains(2));
        assert!(TokenRange::FULL.contains(0) && TokenRange::FULL.contains(u64::MAX));
        assert_eq!(TokenRange::FULL.width(), 1 << 64);
    }

    #[test]
    fn leaves_tile_the_range() {
        for range in [
            TokenRange::FULL,
            TokenRange { start: 10, end: 13 },
            TokenRange {
                start: u64::MAX - 100,
                end: 900,
            },
        ] {
            let t = MerkleBuilder::new(range, 4).finish();
            let leaves: Vec<_> = (0..16).filter_map(|i| t.leaf_range(i)).collect();
            assert_eq!(leaves.first().unwrap().start, range.start);
            assert_eq!(leaves.last().unwrap().end, range.end);
            assert!(leaves.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(leaves.iter().map(TokenRange::width).sum::<u128>(), range.width());
        }
    }

    #[test]
    fn equal_sets_equal_trees_in_any_order() {
        let entries: Vec<(Token, u64)> = (0..500u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i))
            .collect();
        let a = tree(TokenRange::FULL, 10, &entries);
        let mut rev = entries.clone();
        rev.reverse();
        let b = tree(TokenRange::FULL, 10, &rev);
        assert_eq!(a, b);
        assert!(MerkleTree::diff(&a, &b).is_empty());
        assert_ne!(a.root(), 0);
        assert_eq!(MerkleBuilder::new(TokenRange::FULL, 10).finish().root(), 0);
    }

    #[test]
    fn out_of_range_is_refused() {
        let mut b = MerkleBuilder::new(TokenRange { start: 10, end: 20 }, 2);
        assert!(!b.insert(10, b"k", 1));
        assert!(b.insert(20, b"k", 1));
    }

    proptest! {
        /// The diff covers exactly the tokens whose entries differ, nothing
        /// that is equal outside their leaves.
        #[test]
        fn diff_finds_every_difference(
            start: u64, width in 1u64..u64::MAX, depth in 0u32..8,
            base in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..60),
            changes in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5),
        ) {
            let range = TokenRange { start, end: start.wrapping_add(width) };
            let clamp = |t: u64| start.wrapping_add(1).wrapping_add(t % width);
            let mut a: BTreeMap<Token, u64> = base.iter().map(|(t, d)| (clamp(*t), *d)).collect();
            let b_map = a.clone();
            let mut changed = Vec::new();
            for (t, d) in changes {
                let t = clamp(t);
                if a.insert(t, d) != Some(d) {
                    changed.push(t);
                }
            }
            let ta = tree(range, depth, &a.iter().map(|(t, d)| (*t, *d)).collect::<Vec<_>>());
            let tb = tree(range, depth, &b_map.iter().map(|(t, d)| (*t, *d)).collect::<Vec<_>>());
            let diff = MerkleTree::diff(&ta, &tb);
            for t in &changed {
                prop_assert!(diff.iter().any(|r| r.contains(*t)), "change at {t} not covered by {diff:?}");
            }
            if changed.is_empty() {
                prop_assert!(diff.is_empty());
            }
            for r in &diff {
                prop_assert!(range.contains(r.end));
            }
        }
    }

    #[test]
    fn reconcile_merges_both_ways() {
        #[derive(Debug, Clone, PartialEq)]
        struct Max(u64);
        impl Versioned for Max {
            fn merge(&self, o: &Self) -> Result<Self> {
                Ok(Max(self.0.max(o.0)))
            }
            fn digest(&self) -> u64 {
                self.0
            }
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.0.to_le_bytes());
            }
            fn decode(_: &[u8]) -> Result<Self> {
                Ok(Max(0))
            }
        }
        let ours: BTreeMap<Vec<u8>, Max> = [
            (b"a".to_vec(), Max(1)),
            (b"b".to_vec(), Max(5)),
            (b"c".to_vec(), Max(2)),
        ]
        .into();
        let theirs: BTreeMap<Vec<u8>, Max> = [
            (b"b".to_vec(), Max(7)),
            (b"c".to_vec(), Max(2)),
            (b"d".to_vec(), Max(3)),
        ]
        .into();
        let Exchange { to_ours, to_theirs } = reconcile(&ours, &theirs).unwrap();
        let keys = |v: &[Mutation<Max>]| v.iter().map(|m| (m.key.clone(), m.record.0)).collect::<Vec<_>>();
        assert_eq!(keys(&to_ours), [(b"b".to_vec(), 7), (b"d".to_vec(), 3)]);
        assert_eq!(keys(&to_theirs), [(b"a".to_vec(), 1)]);
    }
}
