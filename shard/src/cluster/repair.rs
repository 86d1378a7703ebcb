//! Range streaming and anti-entropy repair between the replicas of a range.
//!
//! - [`pull_range`] pages a token range's records from another node
//!   (node-to-node RANGE) and merges each into this node;
//! - [`push_range`] sends this node's records of a range to another node
//!   (node-to-node MUTATE, merged there);
//! - [`repair_node`] (`corekv repair`) compares, for every ring range this
//!   node replicates, its Merkle leaves with each other replica's
//!   (node-to-node MERKLE_TREE) and pulls and pushes only the leaves' token
//!   ranges that differ.
//!
//! Merges are joins (docs/versions.md): applying a record twice, or a
//! record the receiver already supersedes, changes nothing, so a page sent
//! again after a timeout, a range streamed twice, or a repair racing client
//! writes never loses or reverts a version.
//!
//! ## Which core serves a range
//!
//! Inside a node, a ring vnode range `(previous token, token]` lives on one
//! core (`Ring::local_vnode`), but an arbitrary range may cross vnode
//! boundaries. [`scan_local`] and [`local_leaves`] split a range at this
//! node's own vnode tokens (its current view), ask each piece's core
//! ([`Cmd::ReplicaScan`], [`Cmd::ReplicaMerkle`]) and join the answers, so
//! any core of a node answers any range. A range cursor is the last
//! position examined, `(token, key)`; its token says which piece to resume.
//!
//! ## Merkle leaves
//!
//! A leaf's hash is the XOR of one hash per key over (token, record digest,
//! key), as in [`crate::replication::merkle`], computed here by [`Leaves`]
//! because the wire carries bare leaves and the cores' partial leaves of one
//! tree combine by XOR. XOR also makes a shallower tree's leaves the XOR of
//! a deeper tree's adjacent leaves ([`fold`]), so repair hashes its own side
//! once at [`BUILD_DEPTH`] and compares at the depth the range's key count
//! calls for.
//!
//! ## Throttle
//!
//! Every stream of this node (pulls and pushes, on any core) draws from one
//! budget of `cluster.stream_bytes_per_sec`, [`throttle`]: the setting is
//! per node, so it is the one state shared between cores here.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corekv_engine::Cursor;
use corekv_net::msg::peer::{PeerOp, PeerRequest, MAX_MERKLE_DEPTH};
use corekv_net::msg::ErrorCode;
use futures::StreamExt;
use xxhash_rust::xxh3::Xxh3;

use super::Cluster;
use crate::config::Config;
use crate::replication::merkle::{MerkleBuilder, MerkleTree, TokenRange};
use crate::runtime::Shard;
use crate::server::peer::{OwnedRangeEntry, PeerAnswer};
use crate::store::{Cmd, Failure, FailureKind, Key, Page, Reply, ScanEntry};
use crate::topology::{NodeId, NodeStatus, Token};

/// Most entries in one RANGE page, whatever the requester asks.
pub const MAX_PAGE_ENTRIES: usize = 1000;

/// Most bytes of keys and records in one RANGE page (a single larger record
/// still goes alone; the frame limit holds a largest key and value).
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// The depth repair hashes its own side at (1024 leaves) before folding to
/// the compared depth.
pub const BUILD_DEPTH: u32 = 10;

/// The shallowest compared tree: 64 leaves, 512 bytes on the wire.
pub const MIN_DEPTH: u32 = 6;

/// Keys per leaf repair aims at when it picks a range's depth: a differing
/// key costs streaming about this many.
const KEYS_PER_LEAF: u64 = 8;

/// Merges of a pulled page applied at once (their WAL syncs group-commit).
const MERGES_IN_FLIGHT: usize = 64;

/// MUTATEs of a push in flight at once.
const PUSHES_IN_FLIGHT: usize = 32;

/// Tries of one request before a stream gives up.
const ATTEMPTS: u32 = 3;

/// Pause before the first retry; doubled for each next one.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Bytes a stream may send ahead of the throttle's pace (a page at the
/// default rate goes without waiting).
const BURST: Duration = Duration::from_millis(100);

/// Bytes counted per entry beyond its key and record (token, lengths).
const ENTRY_OVERHEAD: u64 = 16;

/// What one range stream moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeStats {
    /// Records sent or received (a merge that changed nothing counts too).
    pub records: u64,
    /// Their keys' and records' bytes.
    pub bytes: u64,
}

impl std::ops::AddAssign for RangeStats {
    fn add_assign(&mut self, o: RangeStats) {
        self.records += o.records;
        self.bytes += o.bytes;
    }
}

/// Builds Merkle leaves over a range: the leaves of
/// [`MerkleBuilder`] (same assignment of tokens to leaves, same per-key
/// hash), exposed because the wire and the cores exchange bare leaves.
#[derive(Debug, Clone)]
pub struct Leaves {
    range: TokenRange,
    leaves: Vec<u64>,
}

impl Leaves {
    /// `2^depth` empty leaves over `range` (depth clamped to
    /// [`MerkleTree::MAX_DEPTH`]).
    pub fn new(range: TokenRange, depth: u32) -> Leaves {
        Leaves {
            range,
            leaves: vec![0; 1 << depth.min(MerkleTree::MAX_DEPTH)],
        }
    }

    /// Adds one key's record digest; false (adding nothing) for a token
    /// outside the range.
    pub fn insert(&mut self, token: Token, key: &[u8], digest: u64) -> bool {
        if !self.range.contains(token) {
            return false;
        }
        // The offset is below the width (the token is in the range), so the
        // quotient is below the leaf count; `get_mut` keeps a bug from panicking.
        let offset = u128::from(token.wrapping_sub(self.range.start).wrapping_sub(1));
        let leaf = offset * self.leaves.len() as u128 / self.range.width();
        let Some(slot) = usize::try_from(leaf).ok().and_then(|i| self.leaves.get_mut(i)) else {
            return false;
        };
        let mut h = Xxh3::new();
        h.update(&token.to_le_bytes());
        h.update(&digest.to_le_bytes());
        h.update(key);
        *slot ^= h.digest();
        true
    }

    /// The leaves, in token order.
    pub fn into_leaves(self) -> Vec<u64> {
        self.leaves
    }
}

/// The leaves of the same range at depth `depth`, from leaves at a greater
/// depth: each is the XOR of the `2^(from - depth)` leaves it covers. A
/// deeper `depth` than the input's returns the input.
pub fn fold(leaves: &[u64], depth: u32) -> Vec<u64> {
    let n = 1usize << depth.min(MerkleTree::MAX_DEPTH);
    if n >= leaves.len() {
        return leaves.to_vec();
    }
    let per = leaves.len() / n;
    leaves.chunks(per).map(|c| c.iter().fold(0, |a, b| a ^ b)).collect()
}

/// The token ranges of the leaves where `a` and `b` (leaves of `range` at
/// `depth`) differ, adjacent ones merged, in ring order. Leaf vectors of
/// different lengths differ everywhere: the whole range.
pub fn differing(range: TokenRange, depth: u32, a: &[u64], b: &[u64]) -> Vec<TokenRange> {
    if a.len() != b.len() {
        return vec![range];
    }
    // An empty tree of the same shape knows each leaf's tokens.
    let shape = MerkleBuilder::new(range, depth).finish();
    let mut out: Vec<TokenRange> = Vec::new();
    let mut last_leaf = usize::MAX;
    for (i, _) in a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y) {
        let Some(r) = shape.leaf_range(i) else { continue };
        // Merged like `MerkleTree::diff`: consecutive leaves only.
        match out.last_mut() {
            Some(prev) if last_leaf.wrapping_add(1) == i && prev.end == r.start => prev.end = r.end,
            _ => out.push(r),
        }
        last_leaf = i;
    }
    out
}

/// The depth compared for a range holding `keys` keys here: about
/// [`KEYS_PER_LEAF`] keys a leaf, between [`MIN_DEPTH`] and [`BUILD_DEPTH`].
pub fn depth_for(keys: u64) -> u32 {
    let leaves = keys.div_ceil(KEYS_PER_LEAF).max(1);
    let depth = u64::BITS - (leaves - 1).leading_zeros(); // ceil(log2(leaves))
    depth.clamp(MIN_DEPTH, BUILD_DEPTH)
}

/// Bytes of one RANGE page this node serves: [`MAX_PAGE_BYTES`], less when
/// frames are smaller (a quarter of a frame, so the page and its largest
/// entry fit).
pub fn page_bytes(config: &Config) -> usize {
    let frame = usize::try_from(config.limits.max_frame_bytes).unwrap_or(usize::MAX);
    MAX_PAGE_BYTES.min(frame / 4).max(1)
}

fn entry_bytes(key: &[u8], record: &[u8]) -> u64 {
    (key.len() + record.len()) as u64 + ENTRY_OVERHEAD
}

/// Node-wide throttle state: the theoretical arrival time of the next byte
/// (GCRA, a token bucket kept as one instant).
static STREAM_TAT: Mutex<Option<Instant>> = Mutex::new(None);

/// Reserves `bytes` at `rate` bytes/s from the bucket whose next free
/// instant is `tat`: returns the new `tat` and how long the caller waits.
fn reserve(tat: Option<Instant>, now: Instant, bytes: u64, rate: u64) -> (Instant, Duration) {
    let from = tat.map_or(now, |t| t.max(now));
    let cost = Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
    let next = from.checked_add(cost).unwrap_or(from);
    (next, next.saturating_duration_since(now).saturating_sub(BURST))
}

/// Waits until this node's streams may send `bytes` more.
pub async fn throttle(config: &Config, bytes: u64) {
    let wait = {
        // A poisoned lock only means a panic elsewhere; the instant is whole.
        let mut tat = STREAM_TAT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, wait) = reserve(*tat, Instant::now(), bytes, config.cluster.stream_bytes_per_sec);
        *tat = Some(next);
        wait
    };
    if !wait.is_zero() {
        glommio::timer::sleep(wait).await;
    }
}

/// `range` cut into pieces each stored on one core of this node, in ring
/// order. A token's core is that of this node's first vnode at or after it
/// (`Ring::local_vnode`), so only this node's own vnode tokens (in the ring
/// that holds it: the next one while it joins) can change the core.
fn pieces(cluster: &Cluster, range: TokenRange) -> Vec<(TokenRange, usize)> {
    let view = cluster.view();
    let ring = view.ring_with(&cluster.me);
    let me = ring.index_of(&cluster.me).and_then(|i| u32::try_from(i).ok());
    let offset = |t: Token| t.wrapping_sub(range.start).wrapping_sub(1);
    let mut cuts: Vec<Token> = ring
        .vnodes()
        .iter()
        .filter(|v| Some(v.node) == me)
        .map(|v| v.token)
        .filter(|&t| t != range.end && range.contains(t))
        .collect();
    cuts.sort_unstable_by_key(|&t| offset(t));
    cuts.dedup();
    let mut out: Vec<(TokenRange, usize)> = Vec::new();
    let mut lo = range.start;
    for hi in cuts.into_iter().chain(std::iter::once(range.end)) {
        // (lo, hi] holds none of this node's vnode tokens but hi: one core.
        let core = cluster.local_core(hi);
        match out.last_mut() {
            Some((p, c)) if *c == core => p.end = hi,
            _ => out.push((TokenRange { start: lo, end: hi }, core)),
        }
        lo = hi;
    }
    out
}

/// A page of this node's records in `range` (any cores), resuming after
/// `after`: at most `limit` entries and about `max_bytes` bytes. The
/// cursor is `None` when the range is done.
pub async fn scan_local(
    shard: &Rc<Shard>,
    cluster: &Cluster,
    range: TokenRange,
    after: Option<Cursor>,
    limit: usize,
    max_bytes: usize,
) -> Result<Page, Failure> {
    let pieces = pieces(cluster, range);
    let limit = limit.max(1);
    let mut idx = match &after {
        None => 0,
        Some(c) => pieces
            .iter()
            .position(|(p, _)| p.contains(c.token))
            .ok_or_else(|| Failure::new(FailureKind::Invalid, "range cursor outside the range"))?,
    };
    let mut after = after;
    let mut entries: Vec<ScanEntry> = Vec::new();
    let mut bytes = 0usize;
    while let Some(&(piece, core)) = pieces.get(idx) {
        if let Some(last) = entries.last() {
            if entries.len() >= limit || bytes >= max_bytes {
                // Resuming after the last entry finds its piece exhausted
                // and moves on to the next.
                let cursor = Some(Cursor {
                    token: last.token,
                    key: last.key.clone(),
                });
                return Ok(Page { entries, cursor });
            }
        }
        let cmd = Cmd::ReplicaScan {
            start: piece.start,
            end: piece.end,
            after: after.take(),
            limit: limit - entries.len(),
            max_bytes: max_bytes.saturating_sub(bytes).max(1),
        };
        let page = match shard.exec(core, cmd).await {
            Reply::Page(p) => p,
            Reply::Failed(f) => return Err(f),
            other => return Err(unexpected(&other)),
        };
        bytes += page.entries.iter().map(|e| e.key.len() + e.value.len()).sum::<usize>();
        entries.extend(page.entries);
        if page.cursor.is_some() {
            return Ok(Page {
                entries,
                cursor: page.cursor,
            });
        }
        idx += 1;
        glommio::yield_if_needed().await;
    }
    Ok(Page { entries, cursor: None })
}

/// This node's Merkle leaves of `range` at `depth` (every core holding a
/// part of it answers its part) and how many keys they hash.
pub async fn local_leaves(
    shard: &Rc<Shard>,
    cluster: &Cluster,
    range: TokenRange,
    depth: u32,
) -> Result<(Vec<u64>, u64), Failure> {
    let depth = depth.min(MerkleTree::MAX_DEPTH);
    let asks = pieces(cluster, range).into_iter().map(|(p, core)| {
        shard.exec(
            core,
            Cmd::ReplicaMerkle {
                tree_start: range.start,
                tree_end: range.end,
                depth,
                start: p.start,
                end: p.end,
            },
        )
    });
    let mut leaves = vec![0u64; 1 << depth];
    let mut keys = 0u64;
    for reply in futures::future::join_all(asks).await {
        match reply {
            Reply::Merkle { leaves: part, keys: n } if part.len() == leaves.len() => {
                leaves.iter_mut().zip(part).for_each(|(a, b)| *a ^= b);
                keys += n;
            }
            Reply::Failed(f) => return Err(f),
            other => return Err(unexpected(&other)),
        }
    }
    Ok((leaves, keys))
}

fn unexpected(r: &Reply) -> Failure {
    Failure::new(FailureKind::Internal, format!("unexpected reply {r:?}"))
}

/// How long one streaming request may take: a page or a tree over a big
/// range is more work than a key's request.
fn stream_timeout(config: &Config) -> Duration {
    Duration::from_millis(config.cluster.request_timeout_ms).max(Duration::from_secs(30))
}

/// Sends `op` to `to`'s core storing `route` and returns its answer,
/// retrying a transport failure or an UNAVAILABLE / OVERLOADED / TIMEOUT answer
/// ([`ATTEMPTS`] tries in all). Every streaming request is idempotent.
async fn call_peer(
    shard: &Shard,
    cluster: &Cluster,
    to: &NodeId,
    route: Token,
    op: PeerOp<'_>,
) -> Result<PeerAnswer, Failure> {
    let req = PeerRequest {
        from: &cluster.me.0,
        op,
    };
    let timeout = stream_timeout(&shard.config);
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            glommio::timer::sleep(RETRY_BACKOFF * (1 << (attempt - 1))).await;
        }
        let view = cluster.view();
        let Some(addr) = cluster.address_for(&view, to, route) else {
            return Err(Failure::new(
                FailureKind::Unavailable,
                format!("{to} is not in this node's view of the ring"),
            ));
        };
        match cluster.pool.call(&addr, &req, timeout).await {
            Ok(PeerAnswer::Failed { code, message })
                if [ErrorCode::UNAVAILABLE, ErrorCode::OVERLOADED, ErrorCode::TIMEOUT].contains(&code) =>
            {
                last = format!("{to} ({addr}): {message}");
            }
            Ok(PeerAnswer::Failed { message, .. }) => {
                return Err(Failure::new(FailureKind::Internal, format!("{to} ({addr}): {message}")))
            }
            Ok(answer) => return Ok(answer),
            Err(e) => last = format!("{to} ({addr}): {e}"),
        }
    }
    Err(Failure::new(
        FailureKind::Unavailable,
        format!("{last} ({ATTEMPTS} tries)"),
    ))
}

/// `to`'s Merkle leaves of `range` at `depth`.
async fn peer_leaves(
    shard: &Shard,
    cluster: &Cluster,
    to: &NodeId,
    range: TokenRange,
    depth: u32,
) -> Result<Vec<u64>, Failure> {
    let depth = depth.min(u32::from(MAX_MERKLE_DEPTH));
    let op = PeerOp::MerkleTree {
        start: range.start,
        end: range.end,
        // At most MAX_MERKLE_DEPTH (20): fits.
        depth: u8::try_from(depth).unwrap_or(MAX_MERKLE_DEPTH),
    };
    match call_peer(shard, cluster, to, range.end, op).await? {
        PeerAnswer::Merkle { leaves } if leaves.len() == 1 << depth => Ok(leaves),
        PeerAnswer::Merkle { leaves } => Err(Failure::new(
            FailureKind::Internal,
            format!("{to} sent {} Merkle leaves for depth {depth}", leaves.len()),
        )),
        other => Err(Failure::new(
            FailureKind::Internal,
            format!("{to} answered MERKLE_TREE with {other:?}"),
        )),
    }
}

/// Pulls every record `from` holds in tokens `(start, end]` (wrapping;
/// `start == end` is the whole ring) and merges each into this node, on the
/// core of this node that stores its token. Pages of at most
/// [`MAX_PAGE_ENTRIES`] entries, throttled to `cluster.stream_bytes_per_sec`
/// (node-wide); a failed page is asked again (a few tries) from where the
/// previous one ended. Merges are idempotent joins, so a pull can be
/// repeated or overlap client writes. Fails, with what was merged so far
/// kept, when `from` cannot be reached or sends a malformed page.
pub async fn pull_range(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    from: &NodeId,
    start: Token,
    end: Token,
) -> Result<RangeStats, Failure> {
    if *from == cluster.me {
        return Err(Failure::new(
            FailureKind::Invalid,
            "cannot pull a range from this node itself",
        ));
    }
    let range = TokenRange { start, end };
    let mut stats = RangeStats::default();
    let mut cursor: Vec<u8> = Vec::new();
    loop {
        let op = PeerOp::Range {
            start,
            end,
            cursor: &cursor,
            limit: MAX_PAGE_ENTRIES as u32,
        };
        let (entries, next) = match call_peer(shard, cluster, from, end, op).await? {
            PeerAnswer::RangePage { entries, next_cursor } => (entries, next_cursor),
            other => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    format!("{from} answered RANGE with {other:?}"),
                ))
            }
        };
        let bytes: u64 = entries.iter().map(|e| entry_bytes(&e.key, &e.record)).sum();
        for e in &entries {
            check_entry(from, range, e)?;
        }
        throttle(&shard.config, bytes).await;
        let n = entries.len() as u64;
        let merges = entries.into_iter().map(|e| {
            let core = cluster.local_core(e.token);
            let cmd = Cmd::ReplicaMerge {
                key: Key {
                    token: e.token,
                    bytes: e.key,
                },
                record: e.record,
            };
            shard.exec(core, cmd)
        });
        let replies: Vec<Reply> = futures::stream::iter(merges)
            .buffer_unordered(MERGES_IN_FLIGHT)
            .collect()
            .await;
        for r in replies {
            match r {
                Reply::Ok => {}
                Reply::Failed(f) => {
                    return Err(Failure::new(
                        f.kind,
                        format!("merging a record from {from}: {}", f.message),
                    ))
                }
                other => return Err(unexpected(&other)),
            }
        }
        stats += RangeStats { records: n, bytes };
        shard.metrics.streamed_in(n, bytes);
        if next.is_empty() {
            return Ok(stats);
        }
        if next == cursor {
            return Err(Failure::new(
                FailureKind::Internal,
                format!("{from} sent the same range cursor twice (no progress)"),
            ));
        }
        cursor = next;
    }
}

/// Refuses an entry a peer should not have sent: outside the range asked
/// for, or with a token that is not its key's (it would be stored where no
/// read finds it).
fn check_entry(from: &NodeId, range: TokenRange, e: &OwnedRangeEntry) -> Result<(), Failure> {
    if !range.contains(e.token) {
        return Err(Failure::new(
            FailureKind::Invalid,
            format!(
                "{from} sent a record at token {:#x}, outside ({:#x}, {:#x}]",
                e.token, range.start, range.end
            ),
        ));
    }
    if e.key.is_empty() || crate::topology::token_of(&e.key) != e.token {
        return Err(Failure::new(
            FailureKind::Invalid,
            format!("{from} sent a record whose token {:#x} is not its key's", e.token),
        ));
    }
    Ok(())
}

/// Sends every record this node holds in tokens `(start, end]` (wrapping;
/// `start == end` is the whole ring) to `to` as MUTATEs, which `to` merges
/// on its core storing each token (it need not be a replica: this is how a
/// joining node is filled). Up to [`PUSHES_IN_FLIGHT`] in flight, throttled
/// node-wide; each MUTATE is tried a few times. Fails when `to` does not
/// acknowledge a record, with the acknowledged ones kept.
pub async fn push_range(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    to: &NodeId,
    start: Token,
    end: Token,
) -> Result<RangeStats, Failure> {
    if *to == cluster.me {
        return Err(Failure::new(
            FailureKind::Invalid,
            "cannot push a range to this node itself",
        ));
    }
    let range = TokenRange { start, end };
    let budget = page_bytes(&shard.config);
    let mut stats = RangeStats::default();
    let mut after = None;
    loop {
        let page = scan_local(shard, cluster, range, after.take(), MAX_PAGE_ENTRIES, budget).await?;
        let bytes: u64 = page.entries.iter().map(|e| entry_bytes(&e.key, &e.value)).sum();
        throttle(&shard.config, bytes).await;
        let sends = page.entries.iter().map(|e| async move {
            let op = PeerOp::Mutate {
                token: e.token,
                key: &e.key,
                record: &e.value,
                hint_for: "",
            };
            match call_peer(shard, cluster, to, e.token, op).await? {
                PeerAnswer::Ack => Ok(()),
                other => Err(Failure::new(
                    FailureKind::Internal,
                    format!("{to} answered MUTATE with {other:?}"),
                )),
            }
        });
        let results: Vec<Result<(), Failure>> = futures::stream::iter(sends)
            .buffer_unordered(PUSHES_IN_FLIGHT)
            .collect()
            .await;
        if let Some(Err(f)) = results.into_iter().find(Result::is_err) {
            return Err(f);
        }
        stats += RangeStats {
            records: page.entries.len() as u64,
            bytes,
        };
        shard.metrics.streamed_out(page.entries.len() as u64, bytes);
        match page.cursor {
            Some(c) => after = Some(c),
            None => return Ok(stats),
        }
    }
}

/// Set while a repair runs on this node: a second `corekv repair` would
/// only double the load.
static REPAIRING: AtomicBool = AtomicBool::new(false);

/// Clears [`REPAIRING`] when the repair ends, however it ends.
struct RepairGuard;

impl Drop for RepairGuard {
    fn drop(&mut self) {
        REPAIRING.store(false, Ordering::Release);
    }
}

/// What a repair did, for its report.
#[derive(Debug, Default)]
struct Tally {
    ranges: u64,
    compared: u64,
    differing: u64,
    pulled: RangeStats,
    pushed: RangeStats,
    skipped_down: std::collections::BTreeSet<String>,
    failed_peers: std::collections::BTreeMap<String, String>,
}

/// Anti-entropy for every ring vnode range this node replicates (in this
/// node's current view): for each other replica believed up, compares the
/// range's Merkle leaves (one MERKLE_TREE request; equal ranges cost
/// nothing more) and, for each differing leaves' token range, pulls the
/// peer's records, then pushes this node's if the two still differ. A
/// replica gossip convicted is skipped; a replica that fails a request is
/// skipped for the rest of the repair. Returns a report for a human; fails,
/// with the report as the message, when a replica could not be repaired.
pub async fn repair_node(shard: &Rc<Shard>, cluster: &Rc<Cluster>) -> Result<String, Failure> {
    if REPAIRING.swap(true, Ordering::AcqRel) {
        return Err(Failure::new(
            FailureKind::Unavailable,
            "a repair is already running on this node",
        ));
    }
    let _guard = RepairGuard;
    let t0 = Instant::now();
    let view = cluster.view();
    let mut t = Tally::default();
    let mine: Vec<usize> = (0..view.ring.vnodes().len())
        .filter(|&pos| {
            let range = TokenRange::of_vnode(&view.ring, pos);
            cluster.replicas(&view, range.end).contains(&cluster.me)
        })
        .collect();
    shard.metrics.repair_started(mine.len() as u64);
    for pos in mine {
        let range = TokenRange::of_vnode(&view.ring, pos);
        let replicas = cluster.replicas(&view, range.end);
        t.ranges += 1;
        let mut peers = Vec::new();
        for id in replicas.into_iter().filter(|id| *id != cluster.me) {
            let down = view.ring.node(&id).is_none_or(|n| n.status == NodeStatus::Down);
            if down {
                t.skipped_down.insert(id.0.clone());
            } else if !t.failed_peers.contains_key(&id.0) {
                peers.push(id);
            }
        }
        if !peers.is_empty() {
            if let Err((peer, f)) = repair_range(shard, cluster, range, &peers, &mut t).await {
                t.failed_peers.insert(peer.0, f.message);
            }
        }
        shard.metrics.repair_progress();
        glommio::yield_if_needed().await;
    }
    shard.metrics.repair_finished(t.failed_peers.is_empty());
    let report = report(cluster, &t, t0.elapsed());
    if t.failed_peers.is_empty() {
        Ok(report)
    } else {
        Err(Failure::new(FailureKind::Unavailable, report))
    }
}

/// Repairs one ring range with `peers`; a failure names the peer.
async fn repair_range(
    shard: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    range: TokenRange,
    peers: &[NodeId],
    t: &mut Tally,
) -> Result<(), (NodeId, Failure)> {
    let me = |f: Failure| (cluster.me.clone(), f);
    let (built, keys) = local_leaves(shard, cluster, range, BUILD_DEPTH).await.map_err(me)?;
    let depth = depth_for(keys);
    let mut mine = fold(&built, depth);
    for peer in peers {
        if t.failed_peers.contains_key(&peer.0) {
            continue;
        }
        let on_peer = |f: Failure| (peer.clone(), f);
        t.compared += 1;
        let theirs = peer_leaves(shard, cluster, peer, range, depth).await.map_err(on_peer)?;
        let diffs = differing(range, depth, &mine, &theirs);
        if diffs.is_empty() {
            continue;
        }
        t.differing += 1;
        for sub in diffs {
            t.pulled += pull_range(shard, cluster, peer, sub.start, sub.end)
                .await
                .map_err(on_peer)?;
            // After the pull this side holds the join of both; the peer
            // lacks something only if this side had records it did not.
            let (now_mine, _) = local_leaves(shard, cluster, sub, 0).await.map_err(me)?;
            let now_theirs = peer_leaves(shard, cluster, peer, sub, 0).await.map_err(on_peer)?;
            if now_mine != now_theirs {
                t.pushed += push_range(shard, cluster, peer, sub.start, sub.end)
                    .await
                    .map_err(on_peer)?;
            }
        }
        // This side changed: the next peer is compared with what it holds now.
        let (rebuilt, _) = local_leaves(shard, cluster, range, depth).await.map_err(me)?;
        mine = rebuilt;
    }
    Ok(())
}

fn report(cluster: &Cluster, t: &Tally, took: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "repair on {} finished in {:.3} s", cluster.me, took.as_secs_f64());
    let _ = writeln!(
        out,
        "ranges: {} replicated here, {} compared with a replica, {} differing",
        t.ranges, t.compared, t.differing
    );
    let _ = writeln!(out, "pulled: {} records, {} bytes", t.pulled.records, t.pulled.bytes);
    let _ = writeln!(out, "pushed: {} records, {} bytes", t.pushed.records, t.pushed.bytes);
    let list = |s: &mut dyn Iterator<Item = &String>| {
        let v: Vec<&str> = s.map(String::as_str).collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "skipped as down: {}", list(&mut t.skipped_down.iter()));
    let _ = writeln!(out, "failed: {}", list(&mut t.failed_peers.keys()));
    for (peer, why) in &t.failed_peers {
        let _ = writeln!(out, "  {peer}: {why}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn builder_tree(range: TokenRange, depth: u32, entries: &[(Token, u64)]) -> MerkleTree {
        let mut b = MerkleBuilder::new(range, depth);
        for (t, d) in entries {
            b.insert(*t, &t.to_le_bytes(), *d);
        }
        b.finish()
    }

    fn leaves(range: TokenRange, depth: u32, entries: &[(Token, u64)]) -> Vec<u64> {
        let mut l = Leaves::new(range, depth);
        for (t, d) in entries {
            l.insert(*t, &t.to_le_bytes(), *d);
        }
        l.into_leaves()
    }

    #[test]
    fn depth_follows_the_key_count() {
        assert_eq!(depth_for(0), MIN_DEPTH);
        assert_eq!(depth_for(512), MIN_DEPTH);
        assert_eq!(depth_for(513), 7);
        assert_eq!(depth_for(8192), BUILD_DEPTH);
        assert_eq!(depth_for(u64::MAX), BUILD_DEPTH);
    }

    #[test]
    fn throttle_paces_after_the_burst() {
        let now = Instant::now();
        // 1 MiB/s: 50 KiB fits the burst, 1 MiB more waits about 0.9 s.
        let (tat, wait) = reserve(None, now, 50 << 10, 1 << 20);
        assert!(wait.is_zero());
        let (tat, wait) = reserve(Some(tat), now, 1 << 20, 1 << 20);
        assert!(
            wait > Duration::from_millis(900) && wait < Duration::from_millis(1000),
            "{wait:?}"
        );
        // Idle time is not saved up beyond the burst.
        let later = tat + Duration::from_secs(10);
        let (_, wait) = reserve(Some(tat), later, 50 << 10, 1 << 20);
        assert!(wait.is_zero());
    }

    proptest! {
        /// Leaves agree with merkle.rs's trees: the same leaves differ, and
        /// folding a deep tree gives the shallow one.
        #[test]
        fn leaves_match_merkle_trees(
            start: u64, width in 1u64..u64::MAX, depth in 0u32..8, extra in 0u32..4,
            base in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..60),
            changes in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5),
        ) {
            let range = TokenRange { start, end: start.wrapping_add(width) };
            let clamp = |t: u64| start.wrapping_add(1).wrapping_add(t % width);
            let a: std::collections::BTreeMap<Token, u64> = base.iter().map(|(t, d)| (clamp(*t), *d)).collect();
            let mut b = a.clone();
            for (t, d) in changes {
                b.insert(clamp(t), d);
            }
            let (a, b): (Vec<_>, Vec<_>) = (a.into_iter().collect(), b.into_iter().collect());
            let want = MerkleTree::diff(&builder_tree(range, depth, &a), &builder_tree(range, depth, &b));
            let got = differing(range, depth, &leaves(range, depth, &a), &leaves(range, depth, &b));
            prop_assert_eq!(&got, &want);
            let deep = leaves(range, depth + extra, &a);
            prop_assert_eq!(fold(&deep, depth), leaves(range, depth, &a));
        }
    }
}
