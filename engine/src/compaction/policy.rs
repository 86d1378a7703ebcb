//! Compaction policy: which SSTables to compact next, as pure code.
//!
//! The compaction runner hands [`pick`] a snapshot of the levels (a
//! [`FileInfo`] per SSTable) and the clock, and gets back a
//! [`CompactionPick`]: the input files, the output level and what the runner
//! may do while merging. There is no I/O and no async here, so the engine, the
//! simulator and the tests drive the same code; the only state kept between
//! calls is [`PolicyState`] (the leveled round-robin cursors).
//!
//! Three styles, chosen by [`CompactionStyle`]:
//!
//! - **Leveled** (the default): level 0 holds flushed tables that may overlap;
//!   levels 1.. are sorted runs whose files do not overlap. L0 goes to the base
//!   level when it holds `l0_trigger` files; a level over its target size sends
//!   one file (plus everything it overlaps below) one level down.
//! - **Size-tiered** (Cassandra's STCS): every table lives in level 0; tables
//!   of similar size are merged together.
//! - **Time-window** (Cassandra's TWCS): every table lives in level 0 and
//!   belongs to the window of its `created_ms`; tables of the active window are
//!   merged size-tiered, each older window is merged down to one table, and
//!   windows never mix.
//!
//! ## Invariants of every pick
//!
//! - No input has `being_compacted` set, and no `being_compacted` file in the
//!   pick's start or output level overlaps the pick's key range, so two running
//!   compactions never write overlapping outputs into one level.
//! - Leveled: the inputs taken from the output level are exactly the files of
//!   that level overlapping the key range of the start-level inputs, so the
//!   output level stays non-overlapping once the outputs replace the inputs.
//!   A start-level file is taken together with any neighbour it overlaps (two
//!   files sharing a boundary user key), so versions of one key never end up
//!   split across levels in the wrong order.
//! - Leveled: L0 is compacted as a whole and only when no L0 file is already
//!   being compacted. A second concurrent L0 compaction could place a newer
//!   version of a key below an older one that is still in L0, and its output
//!   range could overlap the running one's output in the base level.
//! - `bottommost` is true only when no file outside the pick that could hold an
//!   older version of an input key exists (see [`CompactionPick::bottommost`]).
//!
//! Ranges are inclusive `(token, key)` pairs compared with
//! [`cmp_user`](crate::format::cmp_user). Ties everywhere are broken by key
//! and `file_no`, and files are sorted before use, so a pick depends on the
//! files' contents, never on the order of the slices handed in.
//!
//! Size-tiered and time-window merge arbitrary subsets of overlapping tables,
//! so they rely on the read path resolving versions by sequence number, not by
//! table order. They pick from level 0 only; files in deeper levels (left by a
//! change of style) are never picked but still count as overlapping for
//! `bottommost` and as tables for stalls.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::format::{cmp_user, Token};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const HOUR_MS: u64 = 3_600_000;

/// A user key: `(token, key bytes)`, ordered by [`cmp_user`].
pub type UserKey = (Token, Vec<u8>);

/// What the policy knows about one SSTable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The table's number (unique, names the file).
    pub file_no: u64,
    /// Size on disk in bytes.
    pub size: u64,
    /// Number of entries (all versions, tombstones included).
    pub entries: u64,
    /// Number of tombstones among the entries.
    pub tombstones: u64,
    /// The smallest user key in the table (inclusive).
    pub smallest: UserKey,
    /// The largest user key in the table (inclusive).
    pub largest: UserKey,
    /// When the table was flushed, ms since the epoch. A compaction output
    /// carries the largest `created_ms` of its inputs, so a time window's
    /// output stays in its window and a rewritten file keeps its age.
    pub created_ms: u64,
    /// The largest entry `time` (expiry or deletion time) in the table, ms
    /// since the epoch. Carried for the runner and stats; no rule here reads it.
    pub max_time: u64,
    /// A running compaction has this file as an input.
    pub being_compacted: bool,
}

impl FileInfo {
    /// Fraction of the entries that are tombstones (0 for an empty table).
    pub fn tombstone_ratio(&self) -> f64 {
        if self.entries == 0 {
            0.0
        } else {
            self.tombstones as f64 / self.entries as f64
        }
    }

    /// True when the table's range intersects the inclusive range `[lo, hi]`.
    pub fn overlaps(&self, lo: &UserKey, hi: &UserKey) -> bool {
        key_cmp(&self.smallest, hi) != Ordering::Greater && key_cmp(&self.largest, lo) != Ordering::Less
    }
}

/// Single-file compactions that exist to drop tombstones when nothing else is due.
#[derive(Clone, Debug, PartialEq)]
pub struct TombstoneCompaction {
    /// A table qualifies when `tombstones / entries` is above this.
    pub ratio: f64,
    /// ... and when it was created at least this long ago. Keep it at or above
    /// the tombstone grace period: before that the runner must keep the
    /// tombstones, and since a rewritten file keeps its `created_ms` it would be
    /// picked again and again.
    pub min_age_ms: u64,
}

impl Default for TombstoneCompaction {
    fn default() -> Self {
        TombstoneCompaction {
            ratio: 0.5,
            min_age_ms: HOUR_MS,
        }
    }
}

/// How leveled compaction chooses the file to push down from a level over target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilePickOrder {
    /// The next file after the level's cursor, wrapping around: every part of
    /// the key space is visited in turn, so no range keeps stale data forever.
    #[default]
    RoundRobin,
    /// The file whose overlap with the next level is smallest relative to its
    /// own size: the least bytes rewritten per byte moved down.
    MinOverlappingRatio,
}

/// Options of leveled compaction.
#[derive(Clone, Debug, PartialEq)]
pub struct LeveledOptions {
    /// L0 is compacted when it holds this many files.
    pub l0_trigger: usize,
    /// Writes slow down at this many L0 files.
    pub l0_slowdown: usize,
    /// Writes stop at this many L0 files.
    pub l0_stop: usize,
    /// Target size of L1 (of the base level with dynamic sizing, at most).
    pub level_base_bytes: u64,
    /// Each level's target is this many times the one above.
    pub level_multiplier: u64,
    /// Number of levels, L0 included; the last one is `max_levels - 1`.
    pub max_levels: usize,
    /// Size the levels from the last one upwards (RocksDB's
    /// `level_compaction_dynamic_level_bytes`): the last level's target is its
    /// actual size and L0 compacts into the first level whose target reaches
    /// `level_base_bytes`. Bounds space amplification to about
    /// `1 + 1/multiplier` while the data is still small.
    pub dynamic_level_bytes: bool,
    /// Output file size for level 1 (or the base level).
    pub target_file_size_base: u64,
    /// Each level's output file size is this many times the one above.
    pub target_file_size_multiplier: u64,
    /// Which file a level over target sends down.
    pub file_pick_order: FilePickOrder,
    /// Tombstone compactions of last-level files; `None` turns them off.
    pub tombstone_compaction: Option<TombstoneCompaction>,
    /// Writes slow down when [`compaction_debt`] reaches this; 0 = never.
    pub pending_bytes_slowdown: u64,
    /// Writes stop when [`compaction_debt`] reaches this; 0 = never.
    pub pending_bytes_stop: u64,
}

impl Default for LeveledOptions {
    fn default() -> Self {
        LeveledOptions {
            l0_trigger: 4,
            l0_slowdown: 20,
            l0_stop: 36,
            level_base_bytes: 256 * MIB,
            level_multiplier: 10,
            max_levels: 7,
            dynamic_level_bytes: false,
            target_file_size_base: 64 * MIB,
            target_file_size_multiplier: 1,
            file_pick_order: FilePickOrder::RoundRobin,
            tombstone_compaction: Some(TombstoneCompaction::default()),
            pending_bytes_slowdown: 64 * GIB,
            pending_bytes_stop: 256 * GIB,
        }
    }
}

/// Options of size-tiered compaction (also used inside time windows).
#[derive(Clone, Debug, PartialEq)]
pub struct SizeTieredOptions {
    /// A bucket is compacted once it holds this many tables (at least 2).
    pub min_threshold: usize,
    /// At most this many tables go into one compaction.
    pub max_threshold: usize,
    /// A table joins a bucket when its size is above `bucket_low` times the
    /// bucket's average ...
    pub bucket_low: f64,
    /// ... and below `bucket_high` times it.
    pub bucket_high: f64,
    /// Tables smaller than this all share one bucket, so the many small flushes
    /// merge early instead of each waiting for peers of its exact size.
    pub min_sstable_size: u64,
    /// Writes slow down at this many tables.
    pub slowdown_tables: usize,
    /// Writes stop at this many tables.
    pub stop_tables: usize,
    /// Single-table tombstone compactions; `None` turns them off.
    pub tombstone_compaction: Option<TombstoneCompaction>,
}

impl Default for SizeTieredOptions {
    fn default() -> Self {
        SizeTieredOptions {
            min_threshold: 4,
            max_threshold: 32,
            bucket_low: 0.5,
            bucket_high: 1.5,
            min_sstable_size: 50 * MIB,
            slowdown_tables: 64,
            stop_tables: 128,
            tombstone_compaction: Some(TombstoneCompaction::default()),
        }
    }
}

/// Options of time-window compaction.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeWindowOptions {
    /// Width of a window in ms; a table belongs to window
    /// `created_ms / window_ms`.
    pub window_ms: u64,
    /// Compaction inside the active window, the `max_threshold` cap of an old
    /// window's compaction, the stall thresholds and tombstone compactions.
    pub size_tiered: SizeTieredOptions,
}

impl Default for TimeWindowOptions {
    fn default() -> Self {
        TimeWindowOptions {
            window_ms: HOUR_MS,
            size_tiered: SizeTieredOptions::default(),
        }
    }
}

/// The compaction style and its options.
#[derive(Clone, Debug, PartialEq)]
pub enum CompactionStyle {
    /// Leveled compaction (the default).
    Leveled(LeveledOptions),
    /// Size-tiered compaction; all tables in level 0.
    SizeTiered(SizeTieredOptions),
    /// Time-window compaction; all tables in level 0.
    TimeWindow(TimeWindowOptions),
}

impl Default for CompactionStyle {
    fn default() -> Self {
        CompactionStyle::Leveled(LeveledOptions::default())
    }
}

/// Why a compaction was picked (for stats and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PickReason {
    /// Leveled: L0 reached `l0_trigger` files.
    L0FileCount,
    /// Leveled: a level is over its target size.
    LevelSize,
    /// A table with many old tombstones and nothing older beneath it.
    Tombstones,
    /// Size-tiered: a bucket of similar-sized tables is full enough.
    SizeTieredBucket,
    /// Time-window: a size-tiered bucket inside an active window.
    ActiveWindow,
    /// Time-window: an old window is merged down to one table.
    OldWindow,
    /// An operator asked for a full compaction (never picked by [`pick`]).
    Manual,
}

/// A compaction for the runner to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPick {
    /// `(level, file_no)` of every input, sorted.
    pub inputs: Vec<(usize, u64)>,
    /// The level the outputs go to.
    pub output_level: usize,
    /// No file outside the pick can hold an older version of a key in the
    /// inputs' range (leveled: no file in a level below `output_level` overlaps
    /// it; size-tiered and time-window: no other table overlaps it). The runner
    /// may then drop tombstones past their grace period and expired values.
    pub bottommost: bool,
    /// A single input with nothing to merge with: the runner may move the file
    /// to `output_level` by editing the manifest instead of rewriting it.
    pub trivial_move: bool,
    /// Split outputs at about this size; `u64::MAX` means one output table
    /// (size-tiered and time-window, whose buckets are made of whole tables).
    pub target_file_size: u64,
    /// Why this compaction was picked.
    pub reason: PickReason,
}

/// What writes should do about compaction falling behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StallDecision {
    /// Write at full speed.
    Proceed,
    /// Delay writes so compaction can catch up.
    Slowdown,
    /// Stop writes until compaction has caught up.
    Stop,
}

/// State the policy keeps between picks: a round-robin cursor per level
/// (leveled only). Losing it (a restart) only restarts the rotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// The largest key of the last file sent down from each level.
    cursors: Vec<Option<UserKey>>,
}

impl PolicyState {
    /// The round-robin cursor of `level`: the largest key of the last file
    /// picked there, if any.
    pub fn cursor(&self, level: usize) -> Option<&UserKey> {
        self.cursors.get(level).and_then(Option::as_ref)
    }

    fn set_cursor(&mut self, level: usize, key: UserKey) {
        if self.cursors.len() <= level {
            self.cursors.resize(level + 1, None);
        }
        self.cursors[level] = Some(key);
    }
}

/// Chooses the next compaction, or `None` when nothing is due or everything
/// due is blocked by running compactions.
///
/// `levels[i]` holds the files of level `i` in any order; missing levels are
/// empty. `now_ms` only matters for tombstone compactions and time windows.
/// Leveled round-robin picks advance `state`; the same `state`, `levels` and
/// `now_ms` always give the same pick.
pub fn pick(
    style: &CompactionStyle,
    state: &mut PolicyState,
    levels: &[Vec<FileInfo>],
    now_ms: u64,
) -> Option<CompactionPick> {
    match style {
        CompactionStyle::Leveled(o) => pick_leveled(o, state, levels, now_ms),
        CompactionStyle::SizeTiered(o) => pick_size_tiered(o, levels, now_ms),
        CompactionStyle::TimeWindow(o) => pick_time_window(o, levels, now_ms),
    }
}

/// Bytes that ought to be compacted, an estimate for stall decisions and stats.
///
/// Leveled follows RocksDB's estimate of pending compaction bytes: L0 when it
/// is due (plus the base level it merges into), then for each level the bytes
/// over target times the fan-out into the next level. Size-tiered counts the
/// tables of buckets that are due; time-window adds the old windows still
/// holding more than one table.
pub fn compaction_debt(style: &CompactionStyle, levels: &[Vec<FileInfo>]) -> u64 {
    match style {
        CompactionStyle::Leveled(o) => leveled_debt(o, levels),
        CompactionStyle::SizeTiered(o) => {
            let tables: Vec<&FileInfo> = level(levels, 0).iter().collect();
            stcs_debt(o, tables)
        }
        CompactionStyle::TimeWindow(o) => twcs_debt(o, levels),
    }
}

/// Whether writes should slow down or stop because compaction is behind.
///
/// Leveled: by the L0 file count (`l0_slowdown`, `l0_stop`) and by
/// [`compaction_debt`] (`pending_bytes_*`). Size-tiered and time-window: by
/// the total number of tables (`slowdown_tables`, `stop_tables`).
pub fn should_stall(style: &CompactionStyle, levels: &[Vec<FileInfo>]) -> StallDecision {
    match style {
        CompactionStyle::Leveled(o) => {
            let l0 = level(levels, 0).len();
            let debt = leveled_debt(o, levels);
            if l0 >= o.l0_stop || (o.pending_bytes_stop > 0 && debt >= o.pending_bytes_stop) {
                StallDecision::Stop
            } else if l0 >= o.l0_slowdown || (o.pending_bytes_slowdown > 0 && debt >= o.pending_bytes_slowdown) {
                StallDecision::Slowdown
            } else {
                StallDecision::Proceed
            }
        }
        CompactionStyle::SizeTiered(o) | CompactionStyle::TimeWindow(TimeWindowOptions { size_tiered: o, .. }) => {
            let n: usize = levels.iter().map(Vec::len).sum();
            if n >= o.stop_tables {
                StallDecision::Stop
            } else if n >= o.slowdown_tables {
                StallDecision::Slowdown
            } else {
                StallDecision::Proceed
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Shared helpers.

fn key_cmp(a: &UserKey, b: &UserKey) -> Ordering {
    cmp_user(a.0, &a.1, b.0, &b.1)
}

fn level(levels: &[Vec<FileInfo>], i: usize) -> &[FileInfo] {
    levels.get(i).map_or(&[], Vec::as_slice)
}

/// The smallest range covering every file, `None` for no files.
fn hull<'a>(files: impl IntoIterator<Item = &'a FileInfo>) -> Option<(&'a UserKey, &'a UserKey)> {
    files.into_iter().fold(None, |acc, f| match acc {
        None => Some((&f.smallest, &f.largest)),
        Some((lo, hi)) => Some((
            if key_cmp(&f.smallest, lo) == Ordering::Less {
                &f.smallest
            } else {
                lo
            },
            if key_cmp(&f.largest, hi) == Ordering::Greater {
                &f.largest
            } else {
                hi
            },
        )),
    })
}

/// Sort order inside a level: by smallest key, then file number.
fn by_key(a: &&FileInfo, b: &&FileInfo) -> Ordering {
    key_cmp(&a.smallest, &b.smallest)
        .then_with(|| key_cmp(&a.largest, &b.largest))
        .then(a.file_no.cmp(&b.file_no))
}

fn sorted_level(levels: &[Vec<FileInfo>], i: usize) -> Vec<&FileInfo> {
    let mut v: Vec<&FileInfo> = level(levels, i).iter().collect();
    v.sort_by(by_key);
    v
}

fn total_size<'a>(files: impl IntoIterator<Item = &'a FileInfo>) -> u64 {
    files.into_iter().fold(0u64, |acc, f| acc.saturating_add(f.size))
}

/// True when a file of `level` that a running compaction owns overlaps `[lo, hi]`.
fn busy_overlap(levels: &[Vec<FileInfo>], lvl: usize, lo: &UserKey, hi: &UserKey) -> bool {
    level(levels, lvl)
        .iter()
        .any(|f| f.being_compacted && f.overlaps(lo, hi))
}

/// True when a table old enough and full enough of tombstones qualifies.
fn tombstone_candidate(t: &TombstoneCompaction, f: &FileInfo, now_ms: u64) -> bool {
    !f.being_compacted
        && f.entries > 0
        && f.tombstone_ratio() > t.ratio
        && now_ms >= f.created_ms.saturating_add(t.min_age_ms)
}

/// Most tombstones first; among equals the older file, then the lower number.
fn tombstone_order(a: &FileInfo, b: &FileInfo) -> Ordering {
    b.tombstone_ratio()
        .total_cmp(&a.tombstone_ratio())
        .then(a.created_ms.cmp(&b.created_ms))
        .then(a.file_no.cmp(&b.file_no))
}

fn make_pick(
    start: &[&FileInfo],
    start_level: usize,
    outputs: &[&FileInfo],
    output_level: usize,
    bottommost: bool,
    target_file_size: u64,
    reason: PickReason,
) -> CompactionPick {
    let mut inputs: Vec<(usize, u64)> = start
        .iter()
        .map(|f| (start_level, f.file_no))
        .chain(outputs.iter().map(|f| (output_level, f.file_no)))
        .collect();
    inputs.sort_unstable();
    inputs.dedup();
    CompactionPick {
        trivial_move: start.len() == 1 && outputs.is_empty() && start_level != output_level,
        inputs,
        output_level,
        bottommost,
        target_file_size,
        reason,
    }
}

// ---------------------------------------------------------------------------
// Leveled.

/// Per-level target sizes and the base level (where L0 goes).
struct LevelTargets {
    base: usize,
    /// `targets[i]` for `i` in `0..max_levels`; entries above `base` are 0.
    targets: Vec<u64>,
}

fn level_targets(o: &LeveledOptions, levels: &[Vec<FileInfo>]) -> LevelTargets {
    let n = o.max_levels.max(2);
    let mult = o.level_multiplier.max(1);
    let base_bytes = o.level_base_bytes.max(1);
    let mut targets = vec![0u64; n];
    if !o.dynamic_level_bytes {
        let mut t = base_bytes;
        for target in targets.iter_mut().skip(1) {
            *target = t;
            t = t.saturating_mul(mult);
        }
        return LevelTargets { base: 1, targets };
    }
    // RocksDB's CalculateBaseBytes: make the last level's target the size of
    // the largest level, divide down, and let L0 skip the levels whose target
    // would fall under level_base_bytes.
    let sizes: Vec<u64> = (0..n).map(|i| total_size(level(levels, i))).collect();
    let first_non_empty = (1..n).find(|&i| sizes[i] > 0);
    let Some(first_non_empty) = first_non_empty else {
        // Nothing below L0 yet: L0 goes straight to the last level.
        targets[n - 1] = base_bytes;
        return LevelTargets { base: n - 1, targets };
    };
    let max_level_size = sizes[1..].iter().copied().max().unwrap_or(0);
    let base_bytes_min = base_bytes / mult;
    let mut cur = max_level_size;
    for _ in first_non_empty..n - 1 {
        cur /= mult;
    }
    let (base, base_size) = if cur <= base_bytes_min {
        (first_non_empty, base_bytes_min + 1)
    } else {
        let mut b = first_non_empty;
        while b > 1 && cur > base_bytes {
            b -= 1;
            cur /= mult;
        }
        (b, if cur > base_bytes { base_bytes } else { cur.max(1) })
    };
    let mut t = base_size;
    for (i, target) in targets.iter_mut().enumerate().skip(base) {
        if i > base {
            t = t.saturating_mul(mult);
        }
        // Never under level_base_bytes: tiny targets would make L1+ outscore L0
        // and let L0 pile up until writes stall.
        *target = t.max(base_bytes);
    }
    LevelTargets { base, targets }
}

fn target_file_size(o: &LeveledOptions, base: usize, output_level: usize) -> u64 {
    let mut t = o.target_file_size_base.max(1);
    for _ in base..output_level {
        t = t.saturating_mul(o.target_file_size_multiplier.max(1));
    }
    t
}

fn pick_leveled(
    o: &LeveledOptions,
    state: &mut PolicyState,
    levels: &[Vec<FileInfo>],
    now_ms: u64,
) -> Option<CompactionPick> {
    let lt = level_targets(o, levels);
    let last = lt.targets.len() - 1;

    // Score every level that is due; the most urgent goes first, and a level
    // blocked by running compactions yields to the next.
    let mut due: Vec<(f64, usize)> = Vec::new();
    let l0_free = level(levels, 0).iter().filter(|f| !f.being_compacted).count();
    let trigger = o.l0_trigger.max(1);
    if l0_free >= trigger {
        due.push((l0_free as f64 / trigger as f64, 0));
    }
    for lvl in lt.base..last {
        let size = total_size(level(levels, lvl).iter().filter(|f| !f.being_compacted));
        let target = lt.targets[lvl].max(1);
        if size > target {
            due.push((size as f64 / target as f64, lvl));
        }
    }
    due.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

    for &(_, lvl) in &due {
        let p = if lvl == 0 {
            pick_l0(o, &lt, levels)
        } else {
            pick_level(o, &lt, state, levels, lvl)
        };
        if p.is_some() {
            return p;
        }
    }
    match &o.tombstone_compaction {
        Some(t) => pick_leveled_tombstones(o, &lt, t, levels, now_ms),
        None => None,
    }
}

/// True when no file in a level below `output_level` overlaps `[lo, hi]`.
fn nothing_below(levels: &[Vec<FileInfo>], output_level: usize, lo: &UserKey, hi: &UserKey) -> bool {
    levels
        .iter()
        .skip(output_level + 1)
        .flatten()
        .all(|f| !f.overlaps(lo, hi))
}

fn pick_l0(o: &LeveledOptions, lt: &LevelTargets, levels: &[Vec<FileInfo>]) -> Option<CompactionPick> {
    let l0 = sorted_level(levels, 0);
    // One L0 compaction at a time (see the module docs).
    if l0.is_empty() || l0.iter().any(|f| f.being_compacted) {
        return None;
    }
    let out = lt.base;
    let (lo, hi) = hull(l0.iter().copied())?;
    let overlapping: Vec<&FileInfo> = sorted_level(levels, out)
        .into_iter()
        .filter(|f| f.overlaps(lo, hi))
        .collect();
    if overlapping.iter().any(|f| f.being_compacted) {
        return None;
    }
    let (lo, hi) = hull(l0.iter().chain(overlapping.iter()).copied())?;
    if busy_overlap(levels, out, lo, hi) {
        return None;
    }
    Some(make_pick(
        &l0,
        0,
        &overlapping,
        out,
        nothing_below(levels, out, lo, hi),
        target_file_size(o, lt.base, out),
        PickReason::L0FileCount,
    ))
}

/// Widens `[a, b]` (indices into a level sorted by key) over neighbours that
/// overlap it: two files sharing a boundary user key must move together or an
/// older version could end up above a newer one.
fn clean_cut(files: &[&FileInfo], mut a: usize, mut b: usize) -> (usize, usize) {
    loop {
        let Some((lo, hi)) = hull(files[a..=b].iter().copied()) else {
            return (a, b);
        };
        let grow_lo = a > 0 && files[a - 1].overlaps(lo, hi);
        let grow_hi = b + 1 < files.len() && files[b + 1].overlaps(lo, hi);
        if !grow_lo && !grow_hi {
            return (a, b);
        }
        if grow_lo {
            a -= 1;
        }
        if grow_hi {
            b += 1;
        }
    }
}

/// Tries to build a compaction of `files[i]` (plus neighbours it overlaps)
/// from `lvl` into `out`. `None` when a file involved is busy.
fn try_file<'a>(
    levels: &'a [Vec<FileInfo>],
    files: &[&'a FileInfo],
    next: &[&'a FileInfo],
    i: usize,
    lvl: usize,
    out: usize,
) -> Option<(Vec<&'a FileInfo>, Vec<&'a FileInfo>, bool)> {
    let (a, b) = clean_cut(files, i, i);
    let start: Vec<&FileInfo> = files[a..=b].to_vec();
    if start.iter().any(|f| f.being_compacted) {
        return None;
    }
    let (lo, hi) = hull(start.iter().copied())?;
    let overlapping: Vec<&FileInfo> = if out == lvl {
        Vec::new()
    } else {
        next.iter().copied().filter(|f| f.overlaps(lo, hi)).collect()
    };
    if overlapping.iter().any(|f| f.being_compacted) {
        return None;
    }
    let (lo, hi) = hull(start.iter().chain(overlapping.iter()).copied())?;
    if busy_overlap(levels, lvl, lo, hi) || busy_overlap(levels, out, lo, hi) {
        return None;
    }
    let bottom = nothing_below(levels, out, lo, hi);
    Some((start, overlapping, bottom))
}

fn pick_level(
    o: &LeveledOptions,
    lt: &LevelTargets,
    state: &mut PolicyState,
    levels: &[Vec<FileInfo>],
    lvl: usize,
) -> Option<CompactionPick> {
    let files = sorted_level(levels, lvl);
    let out = lvl + 1;
    let next = sorted_level(levels, out);
    if files.is_empty() {
        return None;
    }
    let order: Vec<usize> = match o.file_pick_order {
        FilePickOrder::RoundRobin => {
            // The first file past the cursor, then around the ring.
            let first = state.cursor(lvl).map_or(0, |c| {
                files.partition_point(|f| key_cmp(&f.smallest, c) != Ordering::Greater)
            });
            (0..files.len()).map(|k| (first + k) % files.len()).collect()
        }
        FilePickOrder::MinOverlappingRatio => {
            // Overlap bytes per byte of the file, in 1/1024ths: integer keys so
            // the order is exact and deterministic.
            let mut scored: Vec<(u128, usize)> = files
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let over = total_size(next.iter().copied().filter(|n| n.overlaps(&f.smallest, &f.largest)));
                    (u128::from(over) * 1024 / u128::from(f.size.max(1)), i)
                })
                .collect();
            scored.sort_unstable();
            scored.into_iter().map(|(_, i)| i).collect()
        }
    };
    for i in order {
        if files[i].being_compacted {
            continue;
        }
        if let Some((start, overlapping, bottom)) = try_file(levels, &files, &next, i, lvl, out) {
            if let Some(f) = start.iter().max_by(|a, b| key_cmp(&a.largest, &b.largest)) {
                state.set_cursor(lvl, f.largest.clone());
            }
            return Some(make_pick(
                &start,
                lvl,
                &overlapping,
                out,
                bottom,
                target_file_size(o, lt.base, out),
                PickReason::LevelSize,
            ));
        }
    }
    None
}

/// Rewrites in place the non-L0 file with the most tombstones that has nothing
/// beneath it, so the runner can drop them.
fn pick_leveled_tombstones(
    o: &LeveledOptions,
    lt: &LevelTargets,
    t: &TombstoneCompaction,
    levels: &[Vec<FileInfo>],
    now_ms: u64,
) -> Option<CompactionPick> {
    let mut cands: Vec<(usize, &FileInfo)> = levels
        .iter()
        .enumerate()
        .skip(1)
        .flat_map(|(lvl, fs)| fs.iter().map(move |f| (lvl, f)))
        .filter(|(lvl, f)| tombstone_candidate(t, f, now_ms) && nothing_below(levels, *lvl, &f.smallest, &f.largest))
        .collect();
    cands.sort_by(|a, b| tombstone_order(a.1, b.1).then(a.0.cmp(&b.0)));
    for (lvl, f) in cands {
        let files = sorted_level(levels, lvl);
        let Some(i) = files.iter().position(|g| g.file_no == f.file_no) else {
            continue;
        };
        if let Some((start, _, true)) = try_file(levels, &files, &[], i, lvl, lvl) {
            return Some(make_pick(
                &start,
                lvl,
                &[],
                lvl,
                true,
                target_file_size(o, lt.base, lvl.max(lt.base)),
                PickReason::Tombstones,
            ));
        }
    }
    None
}

fn leveled_debt(o: &LeveledOptions, levels: &[Vec<FileInfo>]) -> u64 {
    let lt = level_targets(o, levels);
    let last = lt.targets.len() - 1;
    let l0 = level(levels, 0);
    let l0_size = total_size(l0);
    let l0_due = l0.len() >= o.l0_trigger.max(1) || l0_size >= o.level_base_bytes;
    let mut debt: u64 = 0;
    let mut to_next: u64 = 0;
    if l0_due {
        debt = l0_size;
        to_next = l0_size;
    }
    for lvl in lt.base..last {
        let own = total_size(level(levels, lvl));
        if lvl == lt.base && l0_due {
            debt = debt.saturating_add(own);
        }
        let size = own.saturating_add(to_next);
        to_next = 0;
        let target = lt.targets[lvl];
        if size > target {
            to_next = size - target;
            // The bytes pushed down are rewritten together with their share of
            // the next level: estimate the fan-out from the size ratio.
            // An empty next level adds nothing: the bytes can move down
            // without a merge (RocksDB counts them the same way).
            let next = total_size(level(levels, lvl + 1));
            if next > 0 {
                let fanout = next as f64 / size as f64 + 1.0;
                debt = debt.saturating_add((to_next as f64 * fanout) as u64);
            }
        }
    }
    debt
}

// ---------------------------------------------------------------------------
// Size-tiered.

/// Groups tables of similar size, smallest first (Cassandra's getBuckets).
fn buckets<'a>(o: &SizeTieredOptions, mut tables: Vec<&'a FileInfo>) -> Vec<Vec<&'a FileInfo>> {
    tables.sort_by(|a, b| a.size.cmp(&b.size).then(a.file_no.cmp(&b.file_no)));
    let mut out: Vec<(Vec<&FileInfo>, u128)> = Vec::new();
    for f in tables {
        let size = f.size as f64;
        let small = f.size < o.min_sstable_size;
        let fits = |b: &(Vec<&FileInfo>, u128)| {
            let avg = (b.1 / b.0.len().max(1) as u128) as f64;
            (size > avg * o.bucket_low && size < avg * o.bucket_high) || (small && avg < o.min_sstable_size as f64)
        };
        match out.iter_mut().find(|b| fits(b)) {
            Some(b) => {
                b.0.push(f);
                b.1 += u128::from(f.size);
            }
            None => out.push((vec![f], u128::from(f.size))),
        }
    }
    out.into_iter().map(|(b, _)| b).collect()
}

/// The cheapest due bucket: at least `min_threshold` tables, trimmed to the
/// `max_threshold` smallest, lowest average size first.
fn most_interesting<'a>(o: &SizeTieredOptions, tables: Vec<&'a FileInfo>) -> Option<Vec<&'a FileInfo>> {
    let min = o.min_threshold.max(2);
    let max = o.max_threshold.max(min);
    buckets(o, tables)
        .into_iter()
        .filter(|b| b.len() >= min)
        .map(|mut b| {
            b.truncate(max);
            b
        })
        .min_by(|a, b| {
            let avg = |v: &Vec<&FileInfo>| u128::from(total_size(v.iter().copied())) / v.len().max(1) as u128;
            avg(a)
                .cmp(&avg(b))
                .then(b.len().cmp(&a.len()))
                // Buckets here hold at least `min` (>= 2) tables: [0] exists.
                .then(a[0].file_no.cmp(&b[0].file_no))
        })
}

/// True when no file outside `picked` overlaps their combined range.
fn no_other_overlap(levels: &[Vec<FileInfo>], picked: &[&FileInfo]) -> bool {
    let Some((lo, hi)) = hull(picked.iter().copied()) else {
        return false;
    };
    levels
        .iter()
        .flatten()
        .filter(|f| !picked.iter().any(|p| p.file_no == f.file_no))
        .all(|f| !f.overlaps(lo, hi))
}

fn tiered_pick(levels: &[Vec<FileInfo>], mut tables: Vec<&FileInfo>, reason: PickReason) -> CompactionPick {
    tables.sort_by_key(|f| f.file_no);
    make_pick(&tables, 0, &[], 0, no_other_overlap(levels, &tables), u64::MAX, reason)
}

/// A single table whose tombstones can all go: nothing else overlaps it.
fn tiered_tombstones(o: &SizeTieredOptions, levels: &[Vec<FileInfo>], now_ms: u64) -> Option<CompactionPick> {
    let t = o.tombstone_compaction.as_ref()?;
    let mut cands: Vec<&FileInfo> = level(levels, 0)
        .iter()
        .filter(|f| tombstone_candidate(t, f, now_ms) && no_other_overlap(levels, &[f]))
        .collect();
    cands.sort_by(|a, b| tombstone_order(a, b));
    let f = *cands.first()?;
    Some(make_pick(&[f], 0, &[], 0, true, u64::MAX, PickReason::Tombstones))
}

fn pick_size_tiered(o: &SizeTieredOptions, levels: &[Vec<FileInfo>], now_ms: u64) -> Option<CompactionPick> {
    let free: Vec<&FileInfo> = level(levels, 0).iter().filter(|f| !f.being_compacted).collect();
    if let Some(b) = most_interesting(o, free) {
        return Some(tiered_pick(levels, b, PickReason::SizeTieredBucket));
    }
    tiered_tombstones(o, levels, now_ms)
}

fn stcs_debt(o: &SizeTieredOptions, tables: Vec<&FileInfo>) -> u64 {
    let min = o.min_threshold.max(2);
    buckets(o, tables)
        .iter()
        .filter(|b| b.len() >= min)
        .map(|b| total_size(b.iter().copied()))
        .fold(0u64, u64::saturating_add)
}

// ---------------------------------------------------------------------------
// Time-window.

/// The window of every level-0 table, with the free tables of each and whether
/// a running compaction holds any of it.
fn windows<'a>(o: &TimeWindowOptions, levels: &'a [Vec<FileInfo>]) -> BTreeMap<u64, (Vec<&'a FileInfo>, bool)> {
    let mut w: BTreeMap<u64, (Vec<&FileInfo>, bool)> = BTreeMap::new();
    for f in level(levels, 0) {
        let e = w.entry(f.created_ms / o.window_ms.max(1)).or_default();
        if f.being_compacted {
            e.1 = true;
        } else {
            e.0.push(f);
        }
    }
    w
}

fn pick_time_window(o: &TimeWindowOptions, levels: &[Vec<FileInfo>], now_ms: u64) -> Option<CompactionPick> {
    // Windows from the one holding `now` on (later ones only exist through
    // clock skew) still take flushes, so they are merged size-tiered; older
    // windows are closed and merged down to one table, newest first.
    let active_from = now_ms / o.window_ms.max(1);
    let ws = windows(o, levels);
    for (_, (tables, _)) in ws.range(active_from..).rev() {
        if let Some(b) = most_interesting(&o.size_tiered, tables.clone()) {
            return Some(tiered_pick(levels, b, PickReason::ActiveWindow));
        }
    }
    let max = o.size_tiered.max_threshold.max(2);
    for (_, (tables, busy)) in ws.range(..active_from).rev() {
        // A window with a running compaction waits for it, so each window is
        // merged once into one table rather than in overlapping pieces.
        if *busy || tables.len() < 2 {
            continue;
        }
        let mut t = tables.clone();
        t.sort_by(|a, b| a.size.cmp(&b.size).then(a.file_no.cmp(&b.file_no)));
        t.truncate(max);
        return Some(tiered_pick(levels, t, PickReason::OldWindow));
    }
    tiered_tombstones(&o.size_tiered, levels, now_ms)
}

fn twcs_debt(o: &TimeWindowOptions, levels: &[Vec<FileInfo>]) -> u64 {
    // Without a clock, the newest window stands for the active one.
    let ws = windows(o, levels);
    let newest = ws.keys().next_back().copied();
    let mut debt = 0u64;
    for (w, (tables, _)) in &ws {
        let d = if Some(*w) == newest {
            stcs_debt(&o.size_tiered, tables.clone())
        } else if tables.len() >= 2 {
            total_size(tables.iter().copied())
        } else {
            0
        };
        debt = debt.saturating_add(d);
    }
    debt
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- builders ------------------------------------------------------

    fn file(no: u64, lo: u64, hi: u64, size: u64) -> FileInfo {
        FileInfo {
            file_no: no,
            size,
            entries: 100,
            tombstones: 0,
            smallest: (lo, Vec::new()),
            largest: (hi, Vec::new()),
            created_ms: 0,
            max_time: 0,
            being_compacted: false,
        }
    }

    fn busy(mut f: FileInfo) -> FileInfo {
        f.being_compacted = true;
        f
    }

    fn created(mut f: FileInfo, ms: u64) -> FileInfo {
        f.created_ms = ms;
        f
    }

    fn leveled(f: impl FnOnce(&mut LeveledOptions)) -> CompactionStyle {
        let mut o = LeveledOptions::default();
        f(&mut o);
        CompactionStyle::Leveled(o)
    }

    fn pick0(style: &CompactionStyle, levels: &[Vec<FileInfo>], now: u64) -> Option<CompactionPick> {
        pick(style, &mut PolicyState::default(), levels, now)
    }

    fn nos(p: &CompactionPick, lvl: usize) -> Vec<u64> {
        p.inputs.iter().filter(|x| x.0 == lvl).map(|x| x.1).collect()
    }

    // ---- leveled scenarios ---------------------------------------------

    #[test]
    fn l0_waits_for_trigger_then_takes_all_l0_and_overlapping_l1() {
        let style = CompactionStyle::default();
        let l1 = vec![file(10, 0, 10, MIB), file(11, 20, 30, MIB), file(12, 40, 50, MIB)];
        let mut levels = vec![vec![file(1, 5, 8, MIB), file(2, 6, 9, MIB), file(3, 7, 25, MIB)], l1];
        assert_eq!(pick0(&style, &levels, 0), None);

        levels[0].push(file(4, 12, 14, MIB));
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!(p.reason, PickReason::L0FileCount);
        assert_eq!(p.output_level, 1);
        assert_eq!(nos(&p, 0), vec![1, 2, 3, 4]);
        assert_eq!(nos(&p, 1), vec![10, 11]);
        assert!(p.bottommost);
        assert!(!p.trivial_move);
        assert_eq!(p.target_file_size, 64 * MIB);
    }

    #[test]
    fn l0_runs_one_compaction_at_a_time() {
        let style = leveled(|o| o.l0_trigger = 2);
        let levels = vec![vec![busy(file(1, 0, 5, 1)), file(2, 10, 15, 1), file(3, 20, 25, 1)]];
        assert_eq!(pick0(&style, &levels, 0), None);
    }

    #[test]
    fn l0_blocked_by_busy_overlapping_l1_file() {
        let style = leveled(|o| o.l0_trigger = 1);
        let levels = vec![vec![file(1, 0, 5, 1)], vec![busy(file(2, 4, 9, 1))]];
        assert_eq!(pick0(&style, &levels, 0), None);
        // Not overlapping: a trivial move.
        let levels = vec![vec![file(1, 0, 5, 1)], vec![busy(file(2, 6, 9, 1))]];
        let p = pick0(&style, &levels, 0).unwrap();
        assert!(p.trivial_move);
        assert_eq!(p.inputs, vec![(0, 1)]);
    }

    #[test]
    fn level_over_target_round_robins_and_takes_overlaps_below() {
        let style = leveled(|o| o.level_base_bytes = 100);
        let levels = vec![
            vec![],
            vec![file(1, 0, 10, 60), file(2, 20, 30, 60), file(3, 40, 50, 60)],
            vec![file(4, 5, 12, 10), file(5, 13, 19, 10), file(6, 25, 45, 10)],
            vec![file(7, 100, 110, 10)],
        ];
        let mut st = PolicyState::default();
        let p = pick(&style, &mut st, &levels, 0).unwrap();
        assert_eq!((p.reason, p.output_level), (PickReason::LevelSize, 2));
        assert_eq!((nos(&p, 1), nos(&p, 2)), (vec![1], vec![4]));
        assert!(p.bottommost, "L3 does not overlap");
        assert_eq!(st.cursor(1), Some(&(10, Vec::new())));

        let p = pick(&style, &mut st, &levels, 0).unwrap();
        assert_eq!((nos(&p, 1), nos(&p, 2)), (vec![2], vec![6]));
        let p = pick(&style, &mut st, &levels, 0).unwrap();
        assert_eq!((nos(&p, 1), nos(&p, 2)), (vec![3], vec![6]));
        // Around the ring.
        let p = pick(&style, &mut st, &levels, 0).unwrap();
        assert_eq!(nos(&p, 1), vec![1]);
    }

    #[test]
    fn round_robin_skips_busy_files_and_busy_overlaps() {
        let style = leveled(|o| o.level_base_bytes = 100);
        let levels = vec![
            vec![],
            vec![busy(file(1, 0, 10, 60)), file(2, 20, 30, 60), file(3, 40, 50, 60)],
            vec![busy(file(4, 25, 28, 10))],
        ];
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!(p.inputs, vec![(1, 3)]);
        assert!(p.trivial_move);
    }

    #[test]
    fn bottommost_false_when_a_deeper_level_overlaps() {
        let style = leveled(|o| o.level_base_bytes = 100);
        let levels = vec![
            vec![],
            vec![file(1, 0, 10, 200)],
            vec![file(2, 5, 6, 1)],
            vec![file(3, 9, 20, 1)],
        ];
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!(p.output_level, 2);
        assert!(!p.bottommost);
    }

    #[test]
    fn highest_score_goes_first() {
        let style = leveled(|o| {
            o.level_base_bytes = 100;
            o.level_multiplier = 10;
        });
        // L1 at 1.5x, L2 at 3x.
        let levels = vec![
            vec![],
            vec![file(1, 0, 10, 150)],
            vec![file(2, 50, 60, 1500), file(3, 70, 80, 1500)],
        ];
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!(p.output_level, 3);
        assert!(p.trivial_move);
        assert_eq!(p.target_file_size, 64 * MIB);
    }

    #[test]
    fn min_overlapping_ratio_picks_the_cheapest_file() {
        let style = leveled(|o| {
            o.level_base_bytes = 100;
            o.file_pick_order = FilePickOrder::MinOverlappingRatio;
        });
        let levels = vec![
            vec![],
            vec![file(1, 0, 10, 60), file(2, 20, 30, 60), file(3, 40, 50, 60)],
            vec![file(4, 0, 10, 500), file(5, 20, 30, 10), file(6, 40, 50, 100)],
        ];
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!((nos(&p, 1), nos(&p, 2)), (vec![2], vec![5]));
    }

    #[test]
    fn files_sharing_a_boundary_key_move_together() {
        let style = leveled(|o| o.level_base_bytes = 100);
        let levels = vec![
            vec![],
            vec![file(1, 0, 10, 60), file(2, 10, 20, 60), file(3, 30, 40, 1)],
        ];
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!(nos(&p, 1), vec![1, 2]);
        assert!(!p.trivial_move);
    }

    #[test]
    fn tombstone_compaction_rewrites_an_old_bottom_file_in_place() {
        let style = CompactionStyle::default();
        let mut t = created(file(2, 0, 10, MIB), 1_000);
        t.tombstones = 60;
        let levels = vec![vec![], vec![file(1, 50, 60, MIB), t.clone()]];
        assert_eq!(pick0(&style, &levels, 1_000 + HOUR_MS - 1), None, "too young");
        let p = pick0(&style, &levels, 1_000 + HOUR_MS).unwrap();
        assert_eq!(p.reason, PickReason::Tombstones);
        assert_eq!((p.inputs.clone(), p.output_level), (vec![(1, 2)], 1));
        assert!(p.bottommost && !p.trivial_move);

        // Something beneath could hold older versions: rewriting drops nothing.
        let deeper = vec![vec![], vec![t.clone()], vec![file(3, 5, 6, 1)]];
        assert_eq!(pick0(&style, &deeper, u64::MAX), None);
        // Turned off.
        let off = leveled(|o| o.tombstone_compaction = None);
        assert_eq!(pick0(&off, &levels, u64::MAX), None);
        // At the ratio exactly: not above it.
        t.tombstones = 50;
        assert_eq!(pick0(&style, &[vec![], vec![t]], u64::MAX), None);
    }

    #[test]
    fn dynamic_level_bytes_sends_l0_to_the_base_level() {
        let style = leveled(|o| {
            o.dynamic_level_bytes = true;
            o.l0_trigger = 1;
        });
        // Empty tree: L0 goes straight to the last level.
        let levels = vec![vec![file(1, 0, 10, MIB)]];
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!(p.output_level, 6);
        assert!(p.trivial_move);

        // 10 GiB in L6: 10 GiB, 1 GiB, 102 MiB -> base level 4.
        let mut levels = vec![vec![file(1, 0, 10, MIB)], vec![], vec![], vec![], vec![], vec![]];
        levels.push(vec![file(2, 0, 100, 10 * GIB)]);
        let CompactionStyle::Leveled(o) = &style else {
            unreachable!()
        };
        let lt = level_targets(o, &levels);
        assert_eq!(lt.base, 4);
        // Integer division on the way up loses a few bytes.
        assert!(lt.targets[6] <= 10 * GIB && lt.targets[6] > 10 * GIB - 1_000);
        let p = pick0(&style, &levels, 0).unwrap();
        assert_eq!(p.output_level, 4);
        assert!(!p.bottommost);
    }

    #[test]
    fn leveled_stall_thresholds() {
        let style = CompactionStyle::default();
        let l0 = |n: u64| vec![(0..n).map(|i| file(i, i, i, 1)).collect::<Vec<_>>()];
        assert_eq!(should_stall(&style, &l0(19)), StallDecision::Proceed);
        assert_eq!(should_stall(&style, &l0(20)), StallDecision::Slowdown);
        assert_eq!(should_stall(&style, &l0(35)), StallDecision::Slowdown);
        assert_eq!(should_stall(&style, &l0(36)), StallDecision::Stop);
        // Pending bytes.
        let big = vec![vec![], vec![file(1, 0, 1, 100 * GIB)], vec![file(2, 0, 1, 100 * GIB)]];
        assert_eq!(should_stall(&style, &big), StallDecision::Slowdown);
        let huge = vec![vec![], vec![file(1, 0, 1, 300 * GIB)], vec![file(2, 0, 1, 10 * GIB)]];
        assert_eq!(should_stall(&style, &huge), StallDecision::Stop);
    }

    #[test]
    fn leveled_debt() {
        let style = leveled(|o| o.level_base_bytes = 100);
        assert_eq!(compaction_debt(&style, &[]), 0);
        let calm = vec![vec![file(1, 0, 1, 10)], vec![file(2, 0, 1, 50)]];
        assert_eq!(compaction_debt(&style, &calm), 0);
        // L0 due: its 40 bytes plus L1's 50 they merge with.
        let l0: Vec<FileInfo> = (1..=4).map(|i| file(i, 0, 1, 10)).collect();
        let due = vec![l0, vec![file(5, 0, 1, 50)]];
        assert_eq!(compaction_debt(&style, &due), 90);
        // L1 150 over 100: 50 bytes, fan-out 300/150 + 1 = 3.
        let over = vec![vec![], vec![file(1, 0, 1, 150)], vec![file(2, 0, 1, 300)]];
        assert_eq!(compaction_debt(&style, &over), 150);
    }

    // ---- size-tiered scenarios ------------------------------------------

    fn stcs() -> CompactionStyle {
        CompactionStyle::SizeTiered(SizeTieredOptions::default())
    }

    #[test]
    fn stcs_buckets_similar_sizes_and_prefers_small_ones() {
        let mut l0: Vec<FileInfo> = (1..=3).map(|i| file(i, 0, 100, 10 * MIB)).collect();
        l0.extend((4..=7).map(|i| file(i, 0, 100, 100 * MIB + i * MIB)));
        l0.extend((8..=11).map(|i| file(i, 0, 100, GIB + i * MIB)));
        let levels = vec![l0];
        let p = pick0(&stcs(), &levels, 0).unwrap();
        assert_eq!(p.reason, PickReason::SizeTieredBucket);
        assert_eq!(nos(&p, 0), vec![4, 5, 6, 7]);
        assert_eq!((p.output_level, p.target_file_size), (0, u64::MAX));
        assert!(!p.bottommost, "other tables overlap");
        assert_eq!(compaction_debt(&stcs(), &levels), total_size(&levels[0][3..]));

        // A fourth small table: the small bucket is due and cheaper.
        let mut levels = levels;
        levels[0].push(file(12, 0, 100, 30 * MIB));
        assert_eq!(nos(&pick0(&stcs(), &levels, 0).unwrap(), 0), vec![1, 2, 3, 12]);
    }

    #[test]
    fn stcs_needs_min_threshold_and_caps_at_max_threshold() {
        let three: Vec<FileInfo> = (1..=3).map(|i| file(i, 0, 100, MIB)).collect();
        assert_eq!(pick0(&stcs(), &[three], 0), None);
        let many: Vec<FileInfo> = (1..=40).map(|i| file(i, 0, 100, MIB)).collect();
        let p = pick0(&stcs(), &[many], 0).unwrap();
        assert_eq!(p.inputs.len(), 32);
        assert!(!p.bottommost);
    }

    #[test]
    fn stcs_bottommost_when_no_other_table_overlaps() {
        let mut l0: Vec<FileInfo> = (1..=4).map(|i| file(i, 0, 10, MIB)).collect();
        l0.push(file(5, 20, 30, 10 * GIB));
        let p = pick0(&stcs(), &[l0.clone()], 0).unwrap();
        assert!(p.bottommost);
        l0.push(file(6, 10, 30, 10 * GIB));
        assert!(!pick0(&stcs(), &[l0], 0).unwrap().bottommost);
    }

    #[test]
    fn stcs_ignores_busy_tables_and_does_tombstone_compactions() {
        let mut l0: Vec<FileInfo> = (1..=4).map(|i| file(i, i * 10, i * 10 + 5, MIB)).collect();
        l0[0].being_compacted = true;
        l0[1].tombstones = 90;
        let p = pick0(&stcs(), &[l0.clone()], HOUR_MS).unwrap();
        assert_eq!(
            (p.inputs.clone(), p.reason, p.bottommost),
            (vec![(0, 2)], PickReason::Tombstones, true)
        );
        // Overlapped by another table: tombstones could not be dropped.
        l0.push(file(9, 0, 100, 100 * GIB));
        assert_eq!(pick0(&stcs(), &[l0], HOUR_MS), None);
    }

    #[test]
    fn tiered_stall_thresholds() {
        let n = |k: u64| vec![(0..k).map(|i| file(i, i, i, 1)).collect::<Vec<_>>()];
        assert_eq!(should_stall(&stcs(), &n(63)), StallDecision::Proceed);
        assert_eq!(should_stall(&stcs(), &n(64)), StallDecision::Slowdown);
        assert_eq!(should_stall(&stcs(), &n(128)), StallDecision::Stop);
        let twcs = CompactionStyle::TimeWindow(TimeWindowOptions::default());
        assert_eq!(should_stall(&twcs, &n(64)), StallDecision::Slowdown);
    }

    // ---- time-window scenarios ------------------------------------------

    fn twcs() -> CompactionStyle {
        CompactionStyle::TimeWindow(TimeWindowOptions::default())
    }

    #[test]
    fn twcs_active_window_is_size_tiered() {
        let now = 10 * HOUR_MS + 5;
        let mut l0: Vec<FileInfo> = (1..=3).map(|i| created(file(i, 0, 10, MIB), now - i)).collect();
        l0.push(created(file(4, 0, 10, MIB), 9 * HOUR_MS)); // previous window, alone
        assert_eq!(pick0(&twcs(), &[l0.clone()], now), None);
        l0.push(created(file(5, 0, 10, MIB), now));
        let p = pick0(&twcs(), &[l0], now).unwrap();
        assert_eq!((nos(&p, 0), p.reason), (vec![1, 2, 3, 5], PickReason::ActiveWindow));
        assert!(!p.bottommost, "table 4 overlaps");
    }

    #[test]
    fn twcs_old_windows_merge_to_one_newest_first_without_mixing() {
        let now = 10 * HOUR_MS;
        let l0 = vec![
            created(file(1, 0, 10, MIB), 7 * HOUR_MS),
            created(file(2, 0, 10, 5 * GIB), 7 * HOUR_MS + 1),
            created(file(3, 20, 30, MIB), 8 * HOUR_MS),
            created(file(4, 20, 30, MIB), 9 * HOUR_MS - 1),
            created(file(5, 0, 10, MIB), now),
        ];
        let p = pick0(&twcs(), std::slice::from_ref(&l0), now).unwrap();
        assert_eq!((nos(&p, 0), p.reason), (vec![3, 4], PickReason::OldWindow));
        assert!(p.bottommost, "nothing else overlaps 20..=30");
        assert_eq!(compaction_debt(&twcs(), std::slice::from_ref(&l0)), 5 * GIB + 3 * MIB);

        // Window 8 busy: wait for it, take window 7 (two very different sizes).
        let mut l0 = l0;
        l0[2].being_compacted = true;
        let p = pick0(&twcs(), &[l0.clone()], now).unwrap();
        assert_eq!(nos(&p, 0), vec![1, 2]);
        assert!(!p.bottommost, "table 5 overlaps");

        // Every old window down to one table: nothing to do.
        let done = vec![l0[1].clone(), l0[3].clone(), l0[4].clone()];
        assert_eq!(pick0(&twcs(), &[done], now), None);
    }

    // ---- properties -------------------------------------------------------

    /// Inclusive overlap on plain tuple ordering, independent of the code under test.
    fn oracle_overlaps(f: &FileInfo, lo: &UserKey, hi: &UserKey) -> bool {
        f.smallest <= *hi && f.largest >= *lo
    }

    fn oracle_range<'a>(files: impl IntoIterator<Item = &'a FileInfo>) -> (UserKey, UserKey) {
        let files: Vec<&FileInfo> = files.into_iter().collect();
        let lo = files.iter().map(|f| f.smallest.clone()).min().unwrap();
        let hi = files.iter().map(|f| f.largest.clone()).max().unwrap();
        (lo, hi)
    }

    fn find(levels: &[Vec<FileInfo>], lvl: usize, no: u64) -> &FileInfo {
        let found: Vec<&FileInfo> = level(levels, lvl).iter().filter(|f| f.file_no == no).collect();
        assert_eq!(found.len(), 1, "input ({lvl}, {no}) not in its level");
        found[0]
    }

    fn assert_non_overlapping(files: &[FileInfo]) {
        let mut v: Vec<&FileInfo> = files.iter().collect();
        v.sort_by(|a, b| a.smallest.cmp(&b.smallest));
        for w in v.windows(2) {
            assert!(w[0].largest < w[1].smallest, "overlap: {:?} {:?}", w[0], w[1]);
        }
    }

    /// Checks every invariant of a pick; returns its input files.
    fn check_pick<'a>(style: &CompactionStyle, levels: &'a [Vec<FileInfo>], p: &CompactionPick) -> Vec<&'a FileInfo> {
        assert!(!p.inputs.is_empty());
        let mut sorted = p.inputs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, p.inputs, "inputs sorted and unique");
        let files: Vec<&FileInfo> = p.inputs.iter().map(|&(l, n)| find(levels, l, n)).collect();
        // (a) nothing a running compaction owns.
        assert!(files.iter().all(|f| !f.being_compacted));
        let (lo, hi) = oracle_range(files.iter().copied());
        // Level 0 overlaps by design; in a sorted run a busy overlapping file
        // means two compactions would write overlapping outputs.
        assert!(
            p.output_level == 0
                || !level(levels, p.output_level)
                    .iter()
                    .any(|f| f.being_compacted && oracle_overlaps(f, &lo, &hi)),
            "busy file in the output level overlaps the pick"
        );
        if p.trivial_move {
            assert_eq!(p.inputs.len(), 1);
            assert_ne!(p.inputs[0].0, p.output_level);
            assert!(!level(levels, p.output_level)
                .iter()
                .any(|f| oracle_overlaps(f, &lo, &hi)));
        }
        match style {
            CompactionStyle::Leveled(_) => {
                let start = p.inputs[0].0;
                assert!(p.inputs.iter().all(|x| x.0 == start || x.0 == p.output_level));
                assert!(p.output_level >= start);
                if start == 0 {
                    assert_eq!(nos(p, 0).len(), levels[0].len(), "L0 goes as a whole");
                } else if p.output_level > start {
                    assert_eq!(p.output_level, start + 1);
                }
                // (b) the output level's inputs are exactly its files overlapping
                // the start-level inputs.
                let start_files: Vec<&FileInfo> = files
                    .iter()
                    .copied()
                    .filter(|f| p.inputs.contains(&(start, f.file_no)))
                    .collect();
                let (slo, shi) = oracle_range(start_files);
                let mut expected: Vec<u64> = level(levels, p.output_level)
                    .iter()
                    .filter(|f| oracle_overlaps(f, &slo, &shi))
                    .map(|f| f.file_no)
                    .collect();
                expected.sort_unstable();
                assert_eq!(nos(p, p.output_level), expected);
                // (c) bottommost only when nothing deeper overlaps.
                if p.bottommost {
                    assert!(levels
                        .iter()
                        .skip(p.output_level + 1)
                        .flatten()
                        .all(|f| !oracle_overlaps(f, &lo, &hi)));
                }
            }
            CompactionStyle::SizeTiered(_) | CompactionStyle::TimeWindow(_) => {
                assert!(p.inputs.iter().all(|x| x.0 == 0) && p.output_level == 0);
                if p.bottommost {
                    let others = levels.iter().flatten().filter(|f| !p.inputs.contains(&(0, f.file_no)));
                    assert!(others.into_iter().all(|f| !oracle_overlaps(f, &lo, &hi)));
                }
                // (d) never mixes windows.
                if let CompactionStyle::TimeWindow(o) = style {
                    let w = files[0].created_ms / o.window_ms;
                    assert!(files.iter().all(|f| f.created_ms / o.window_ms == w));
                }
            }
        }
        files
    }

    /// Replaces the inputs by one output covering their range, as the runner would.
    fn apply(levels: &mut Vec<Vec<FileInfo>>, p: &CompactionPick, next_no: &mut u64) {
        let files: Vec<FileInfo> = p.inputs.iter().map(|&(l, n)| find(levels, l, n).clone()).collect();
        let (lo, hi) = oracle_range(&files);
        *next_no += 1;
        let out = FileInfo {
            file_no: *next_no,
            size: files.iter().map(|f| f.size).sum(),
            entries: files.iter().map(|f| f.entries).sum(),
            tombstones: if p.bottommost {
                0
            } else {
                files.iter().map(|f| f.tombstones).sum()
            },
            smallest: lo,
            largest: hi,
            created_ms: files.iter().map(|f| f.created_ms).max().unwrap(),
            max_time: 0,
            being_compacted: false,
        };
        for (l, fs) in levels.iter_mut().enumerate() {
            fs.retain(|f| !p.inputs.contains(&(l, f.file_no)));
        }
        while levels.len() <= p.output_level {
            levels.push(Vec::new());
        }
        levels[p.output_level].push(out);
    }

    #[derive(Clone, Debug)]
    struct Meta {
        size: u64,
        entries: u64,
        tombstones: u64,
        created_ms: u64,
        busy: bool,
    }

    fn arb_key() -> impl Strategy<Value = UserKey> {
        (0u64..6, prop::collection::vec(0u8..3, 0..2))
    }

    fn arb_meta() -> impl Strategy<Value = Meta> {
        (1u64..400, 0u64..50, 0u64..=100, 0u64..20_000, prop::bool::weighted(0.2)).prop_map(
            |(size, entries, pct, created_ms, busy)| Meta {
                size,
                entries,
                tombstones: entries * pct / 100,
                created_ms,
                busy,
            },
        )
    }

    fn mk(no: u64, lo: UserKey, hi: UserKey, m: &Meta) -> FileInfo {
        FileInfo {
            file_no: no,
            size: m.size,
            entries: m.entries,
            tombstones: m.tombstones,
            smallest: lo,
            largest: hi,
            created_ms: m.created_ms,
            max_time: 0,
            being_compacted: m.busy,
        }
    }

    /// L0 with arbitrary overlapping files, deeper levels as sorted runs.
    fn arb_levels() -> impl Strategy<Value = Vec<Vec<FileInfo>>> {
        let l0 = prop::collection::vec((arb_key(), arb_key(), arb_meta()), 0..10);
        let deeper = prop::collection::vec(
            (
                prop::collection::vec(arb_key(), 0..14),
                prop::collection::vec(arb_meta(), 7),
            ),
            0..5,
        );
        (l0, deeper).prop_map(|(l0, deeper)| {
            let mut no = 0u64;
            let mut levels = Vec::new();
            let mut v = Vec::new();
            for (a, b, m) in l0 {
                let (lo, hi) = if a > b { (b, a) } else { (a, b) };
                no += 1;
                v.push(mk(no, lo, hi, &m));
            }
            levels.push(v);
            for (mut keys, metas) in deeper {
                keys.sort();
                keys.dedup();
                let mut v = Vec::new();
                for (pair, m) in keys.chunks_exact(2).zip(&metas) {
                    no += 1;
                    v.push(mk(no, pair[0].clone(), pair[1].clone(), m));
                }
                levels.push(v);
            }
            levels
        })
    }

    fn arb_style() -> impl Strategy<Value = CompactionStyle> {
        let leveled =
            (1usize..5, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(trigger, dynamic, rr, tomb)| {
                CompactionStyle::Leveled(LeveledOptions {
                    l0_trigger: trigger,
                    level_base_bytes: 300,
                    level_multiplier: 3,
                    max_levels: 4,
                    dynamic_level_bytes: dynamic,
                    file_pick_order: if rr {
                        FilePickOrder::RoundRobin
                    } else {
                        FilePickOrder::MinOverlappingRatio
                    },
                    tombstone_compaction: tomb.then_some(TombstoneCompaction {
                        ratio: 0.5,
                        min_age_ms: 5_000,
                    }),
                    ..LeveledOptions::default()
                })
            });
        let tiered = (2usize..5, 2usize..8).prop_map(|(min, extra)| SizeTieredOptions {
            min_threshold: min,
            max_threshold: min + extra,
            min_sstable_size: 50,
            tombstone_compaction: Some(TombstoneCompaction {
                ratio: 0.5,
                min_age_ms: 5_000,
            }),
            ..SizeTieredOptions::default()
        });
        prop_oneof![
            leveled,
            tiered.clone().prop_map(CompactionStyle::SizeTiered),
            (tiered, 1u64..8_000).prop_map(|(st, w)| CompactionStyle::TimeWindow(TimeWindowOptions {
                window_ms: w,
                size_tiered: st
            })),
        ]
    }

    /// The style's valid states: tiered styles keep everything in L0.
    fn shape(style: &CompactionStyle, mut levels: Vec<Vec<FileInfo>>) -> Vec<Vec<FileInfo>> {
        if !matches!(style, CompactionStyle::Leveled(_)) {
            let all: Vec<FileInfo> = levels.drain(..).flatten().collect();
            levels = vec![all];
        }
        levels
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn picks_keep_the_invariants(
            style in arb_style(),
            levels in arb_levels(),
            cursor in prop::option::of(arb_key()),
            now in 0u64..30_000,
        ) {
            let levels = shape(&style, levels);
            let mut st = PolicyState::default();
            if let Some(c) = cursor {
                for l in 1..4 {
                    st.set_cursor(l, c.clone());
                }
            }
            let mut st1 = st.clone();
            let p = pick(&style, &mut st1, &levels, now);
            if let Some(p) = &p {
                check_pick(&style, &levels, p);
            }
            // (e) deterministic, and blind to the order the files come in.
            let mut st2 = st.clone();
            prop_assert_eq!(&pick(&style, &mut st2, &levels, now), &p);
            prop_assert_eq!(&st1, &st2);
            let reversed: Vec<Vec<FileInfo>> =
                levels.iter().map(|l| l.iter().rev().cloned().collect()).collect();
            let mut st3 = st.clone();
            prop_assert_eq!(&pick(&style, &mut st3, &reversed, now), &p);
            prop_assert_eq!(&st1, &st3);
            // Debt and stall decisions are total functions of the state.
            prop_assert_eq!(compaction_debt(&style, &levels), compaction_debt(&style, &reversed));
            prop_assert_eq!(should_stall(&style, &levels), should_stall(&style, &reversed));
        }

        /// Pick and apply until quiet: every pick stays valid, sorted runs stay
        /// non-overlapping, the loop ends, and leveled ends with every level
        /// under its target.
        #[test]
        fn compacting_to_quiescence(style in arb_style(), levels in arb_levels(), now in 0u64..30_000) {
            let mut levels = shape(&style, levels);
            for f in levels.iter_mut().flatten() {
                f.being_compacted = false;
            }
            let mut next_no = 1_000u64;
            let mut st = PolicyState::default();
            let mut quiet = false;
            for _ in 0..500 {
                let Some(p) = pick(&style, &mut st, &levels, now) else {
                    quiet = true;
                    break;
                };
                check_pick(&style, &levels, &p);
                apply(&mut levels, &p, &mut next_no);
                if matches!(style, CompactionStyle::Leveled(_)) {
                    for l in levels.iter().skip(1) {
                        assert_non_overlapping(l);
                    }
                }
            }
            prop_assert!(quiet, "no quiescence after 500 compactions");
            if let CompactionStyle::Leveled(o) = &style {
                prop_assert!(level(&levels, 0).len() < o.l0_trigger);
                let lt = level_targets(o, &levels);
                for l in lt.base..o.max_levels - 1 {
                    prop_assert!(total_size(level(&levels, l)) <= lt.targets[l], "L{} over target", l);
                }
            }
        }
    }
}
