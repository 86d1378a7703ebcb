//! Reading a table: point lookups and an ordered cursor.
//!
//! The footer, index, filter and properties are read once at open and kept in
//! memory (a few bytes per key and per block). Data blocks are read on demand
//! through the per-core [`BlockCache`].
//!
//! ## Read-ahead
//!
//! Point reads read one block. [`TableIter`] reads a *run* of consecutive data
//! blocks with one file read when it moves on sequentially (see
//! [`TableIter::set_readahead`]): blocks of a table are stored back to back, so
//! a run is one contiguous byte range. The run's raw bytes are kept and each
//! block is checked and decoded only when the cursor reaches it, exactly as a
//! single-block read would be, so a bad block fails with the same typed error
//! naming the file and the block's offset, and blocks read ahead but never
//! reached cost no CPU and never enter the cache.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use super::block::{decode_block_checked, decode_payload, Block, BlockCursor, BlockError, Target};
use super::meta::{decode_index, BlockHandle, Footer, Index, MetaHandle, Properties, FOOTER_LEN};
use super::{TableMeta, FORMAT_VERSION};
use crate::cache::BlockCache;
use crate::error::{DecodeError, Error, Result};
use crate::filter::{hash_key, Filter};
use crate::format::{SeqNo, Token};
use crate::io::{File, ReadBuf};

/// Default upper bound of one read-ahead run, in bytes (RocksDB's
/// `max_auto_readahead_size`): large enough that a full scan or a compaction
/// input costs one I/O per 256 KiB instead of one per 4 KiB block, small
/// enough that the buffer held per open iterator stays modest.
pub const DEFAULT_READAHEAD: usize = 256 * 1024;

/// The first read-ahead run after a seek or `seek_to_first`; each further
/// sequential run doubles, up to the iterator's maximum. A short range scan
/// then reads little more than it uses, a long one reaches the maximum after
/// a handful of I/Os.
pub const INITIAL_READAHEAD: usize = 16 * 1024;

/// Read counters of one table, copied out by [`Table::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Point reads that consulted the bloom filter.
    pub bloom_checks: u64,
    /// Of those, reads the filter answered "absent" (no block read).
    pub bloom_negatives: u64,
    /// Reads the filter let through that found no version of the key.
    pub bloom_false_positives: u64,
    /// Data blocks read from the file (cache misses), by a single-block read
    /// or decoded from a read-ahead run.
    pub block_reads: u64,
    /// On-disk bytes of the blocks counted in `block_reads`.
    pub block_read_bytes: u64,
    /// File reads issued for data blocks: one per single-block read, one per
    /// read-ahead run. Far fewer than `block_reads` on a sequential scan.
    pub data_read_ios: u64,
    /// Bytes read by read-ahead runs, including blocks never reached.
    pub readahead_bytes: u64,
}

/// An open table. Shared by `Rc` between the engine's version set and the
/// iterators reading it.
#[derive(Debug)]
pub struct Table {
    file: File,
    file_no: u64,
    size: u64,
    index: Index,
    filter: Filter,
    props: Properties,
    cache: Rc<BlockCache>,
    stats: Cell<TableStats>,
    /// A cursor reused by point reads so they do not allocate a key buffer.
    scratch: RefCell<BlockCursor>,
}

/// The newest visible version of a key, borrowing its block from the cache.
#[derive(Debug, Clone)]
pub struct Found {
    /// The version's sequence number.
    pub seq: SeqNo,
    block: Rc<Block>,
    start: usize,
    end: usize,
}

impl Found {
    /// The entry body (see [`crate::format::decode_body`]).
    pub fn body(&self) -> &[u8] {
        self.block.data().get(self.start..self.end).unwrap_or(&[])
    }
}

fn block_error(path: &Path, offset: u64, e: BlockError) -> Error {
    match e {
        BlockError::Checksum { expected, got } => Error::ChecksumMismatch {
            path: path.to_path_buf(),
            offset,
            expected,
            got,
        },
        BlockError::Decode(d) => decoded_error(path, offset, d),
    }
}

/// A decode error inside a decoded (perhaps decompressed) block: the block's
/// file offset locates it, the position inside the decoded bytes goes in the text.
fn decoded_error(path: &Path, offset: u64, d: DecodeError) -> Error {
    Error::corruption(
        path,
        offset,
        format!("{} (byte {} of the decoded block)", d.reason, d.offset),
    )
}

impl Table {
    /// Opens a table: reads and checks the footer, properties, index and filter.
    pub async fn open(file: File, file_no: u64, cache: Rc<BlockCache>) -> Result<Rc<Table>> {
        let size = file.size().await?;
        let path = file.path().to_path_buf();
        if size < FOOTER_LEN as u64 {
            return Err(Error::corruption(
                &path,
                0,
                format!("{size} bytes is too short for a table"),
            ));
        }
        let footer_at = size - FOOTER_LEN as u64;
        let raw = file.read_exact_at(footer_at, FOOTER_LEN).await?;
        let footer = Footer::decode(&raw).map_err(|e| e.at(&path, footer_at))?;
        debug_assert_eq!(footer.version, FORMAT_VERSION);

        let check = |h: MetaHandle, what: &str| -> Result<()> {
            let past = match h.offset.checked_add(u64::from(h.len)) {
                Some(end) => end > footer_at,
                None => true,
            };
            if past {
                return Err(Error::corruption(
                    &path,
                    footer_at,
                    format!("{what} block handle ({} + {}) runs past the footer", h.offset, h.len),
                ));
            }
            Ok(())
        };
        check(footer.properties, "properties")?;
        check(footer.index, "index")?;
        check(footer.filter, "filter")?;

        let props_block = read_meta(&file, footer.properties).await?;
        let props = Properties::decode(&props_block).map_err(|d| decoded_error(&path, footer.properties.offset, d))?;
        if props.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path,
                found: props.format_version,
                supported: FORMAT_VERSION,
            });
        }

        let data_end = footer
            .index
            .offset
            .min(footer.filter.offset)
            .min(footer.properties.offset);
        let index_block = Block::from_payload(read_meta(&file, footer.index).await?)
            .map_err(|d| decoded_error(&path, footer.index.offset, d))?;
        let index = decode_index(&index_block, data_end).map_err(|d| decoded_error(&path, footer.index.offset, d))?;
        if (index.len() as u64) != props.data_blocks || (props.entries > 0) == index.is_empty() {
            return Err(Error::corruption(
                &path,
                footer.index.offset,
                format!("index has {} blocks, properties say {}", index.len(), props.data_blocks),
            ));
        }

        let filter_block = read_meta(&file, footer.filter).await?;
        let filter = Filter::decode(&filter_block).map_err(|d| decoded_error(&path, footer.filter.offset, d))?;

        Ok(Rc::new(Table {
            file,
            file_no,
            size,
            index,
            filter,
            props,
            cache,
            stats: Cell::new(TableStats::default()),
            scratch: RefCell::new(BlockCursor::new()),
        }))
    }

    /// The table's file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The table's file number.
    pub fn file_no(&self) -> u64 {
        self.file_no
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The properties block.
    pub fn properties(&self) -> &Properties {
        &self.props
    }

    /// The metadata the manifest records, rebuilt from the properties.
    pub fn meta(&self) -> TableMeta {
        TableMeta::from_properties(self.file_no, self.size, &self.props)
    }

    /// The in-memory index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Read counters.
    pub fn stats(&self) -> TableStats {
        self.stats.get()
    }

    /// Memory held by the open table (index and filter), in bytes.
    pub fn memory(&self) -> usize {
        self.index.memory() + self.filter.memory()
    }

    fn bump(&self, f: impl FnOnce(&mut TableStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// False if the table certainly holds no version of `(token, key)`.
    #[inline]
    pub fn may_contain(&self, token: Token, key: &[u8]) -> bool {
        self.filter.may_contain(token, key)
    }

    /// Reads data block `h`, through the cache. With `fill_cache` false a miss
    /// does not insert (scans and compaction should not evict the hot set).
    pub async fn read_block(&self, h: BlockHandle, fill_cache: bool) -> Result<Rc<Block>> {
        if let Some(b) = self.cache.get(self.file_no, h.offset) {
            return Ok(b);
        }
        self.read_block_uncached(h, fill_cache).await
    }

    /// [`Table::read_block`] after a cache miss: one file read of one block.
    async fn read_block_uncached(&self, h: BlockHandle, fill_cache: bool) -> Result<Rc<Block>> {
        // The index bounded `size` when the table was opened.
        let raw = self.file.read_exact_at(h.offset, h.size as usize).await?;
        self.bump(|s| s.data_read_ios += 1);
        self.decode_data_block(h, &raw, fill_cache)
    }

    /// Checks and decodes the on-disk bytes `raw` of data block `h` (read alone
    /// or cut from a read-ahead run), counts the read and inserts the block
    /// into the cache if `fill_cache`.
    fn decode_data_block(&self, h: BlockHandle, raw: &[u8], fill_cache: bool) -> Result<Rc<Block>> {
        debug_assert_eq!(raw.len() as u64, h.size);
        let block = decode_block_checked(raw).map_err(|e| block_error(self.path(), h.offset, e))?;
        let block = Rc::new(block);
        self.bump(|s| {
            s.block_reads += 1;
            s.block_read_bytes += h.size;
        });
        if fill_cache {
            self.cache.insert(self.file_no, h.offset, block.clone());
        }
        Ok(block)
    }

    /// The newest version of `(token, key)` in this table: its seq and body.
    pub async fn get(&self, token: Token, key: &[u8]) -> Result<Option<(SeqNo, Vec<u8>)>> {
        Ok(self
            .get_ref_at(token, key, SeqNo::MAX)
            .await?
            .map(|f| (f.seq, f.body().to_vec())))
    }

    /// The newest version of `(token, key)` with seq at most `snapshot`,
    /// borrowing the body from its cached block (no copy).
    pub async fn get_ref_at(&self, token: Token, key: &[u8], snapshot: SeqNo) -> Result<Option<Found>> {
        self.get_ref_hashed(token, key, snapshot, hash_key(token, key)).await
    }

    /// [`Table::get_ref_at`] with the filter hash computed by the caller, so a
    /// read probing several tables hashes the key once.
    pub async fn get_ref_hashed(&self, token: Token, key: &[u8], snapshot: SeqNo, hash: u64) -> Result<Option<Found>> {
        let pass = self.filter.may_contain_hash(hash);
        self.bump(|s| {
            s.bloom_checks += 1;
            s.bloom_negatives += u64::from(!pass);
        });
        if !pass {
            return Ok(None);
        }
        let found = self.search(token, key, snapshot).await?;
        if found.is_none() {
            // Versions newer than the snapshot also land here; the filter only
            // knows keys, so count them as filter misses all the same.
            self.bump(|s| s.bloom_false_positives += 1);
        }
        Ok(found)
    }

    async fn search(&self, token: Token, key: &[u8], snapshot: SeqNo) -> Result<Option<Found>> {
        let Some(i) = self.index.find(token, key, snapshot) else {
            return Ok(None);
        };
        let Some(h) = self.index.get(i).map(|e| e.handle) else {
            return Ok(None);
        };
        let block = self.read_block(h, true).await?;
        let target = Target::new(token, key, snapshot);
        // No await while the scratch cursor is borrowed; the fallback only
        // runs if that rule is ever broken.
        let mut own;
        let mut guard = self.scratch.try_borrow_mut();
        let cur: &mut BlockCursor = match guard.as_deref_mut() {
            Ok(c) => c,
            Err(_) => {
                own = BlockCursor::new();
                &mut own
            }
        };
        cur.seek(&block, &target)
            .map_err(|d| decoded_error(self.path(), h.offset, d))?;
        if !cur.valid() || cur.token() != token || cur.key() != key {
            return Ok(None);
        }
        let seq = cur.seq();
        let (start, end) = cur.body_range();
        drop(guard);
        Ok(Some(Found { seq, block, start, end }))
    }
}

async fn read_meta(file: &File, h: MetaHandle) -> Result<Vec<u8>> {
    let raw = file.read_exact_at(h.offset, h.len as usize).await?;
    decode_payload(&raw).map_err(|e| block_error(file.path(), h.offset, e))
}

/// An ordered cursor over a table's entries, newest version of a key first.
///
/// The current key is rebuilt in the cursor's own buffer; the body is borrowed
/// from the `Rc`'d block, so moving along allocates nothing.
///
/// Moving on to the next block reads ahead (see [`TableIter::set_readahead`]).
#[derive(Debug)]
pub struct TableIter {
    table: Rc<Table>,
    /// Index of the current block.
    block_idx: usize,
    block_off: u64,
    block: Option<Rc<Block>>,
    cur: BlockCursor,
    fill_cache: bool,
    /// Largest read-ahead run in bytes; 0 turns read-ahead off.
    readahead_max: usize,
    /// Size of the next read-ahead run (doubles per run up to the maximum).
    readahead_next: usize,
    /// The last read-ahead run, kept until the cursor leaves it.
    run: Option<Run>,
}

/// Raw bytes of consecutive data blocks `first..end` read with one file read;
/// `buf[0]` is the file byte at `start` (the offset of block `first`).
struct Run {
    buf: ReadBuf,
    start: u64,
    first: usize,
    end: usize,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Run(blocks {}..{} at {}, {} bytes)",
            self.first,
            self.end,
            self.start,
            self.buf.len()
        )
    }
}

impl TableIter {
    /// A cursor positioned nowhere; call a seek first.
    pub fn new(table: Rc<Table>) -> TableIter {
        TableIter {
            table,
            block_idx: 0,
            block_off: 0,
            block: None,
            cur: BlockCursor::new(),
            fill_cache: true,
            readahead_max: DEFAULT_READAHEAD,
            readahead_next: INITIAL_READAHEAD,
            run: None,
        }
    }

    /// Whether blocks read on a cache miss are inserted into the cache
    /// (default true; compaction turns it off).
    ///
    /// Read-ahead follows the same rule per block: a block of a run is
    /// inserted (when `fill`) only once the cursor reaches it, like a block
    /// read alone; blocks read ahead but never reached are never inserted, so
    /// a scan stopped early does not push its unread tail into the cache.
    /// Without `fill`, a block found in the cache is only peeked at
    /// ([`BlockCache::peek`]): its LRU position and cached form stay.
    pub fn set_fill_cache(&mut self, fill: bool) {
        self.fill_cache = fill;
    }

    /// Largest read-ahead run in bytes ([`DEFAULT_READAHEAD`] by default; 0
    /// turns read-ahead off, so every cache miss reads one block).
    ///
    /// A seek reads only the block it lands in. When the cursor then moves on
    /// to the next block (by [`TableIter::advance`], or from
    /// [`TableIter::seek_to_first`]) and misses the cache, it reads that block
    /// and the following ones with one file read: [`INITIAL_READAHEAD`] bytes
    /// at first, doubling per run up to `max_bytes`. A run holds at least one
    /// block, so a block larger than the run is still read whole.
    pub fn set_readahead(&mut self, max_bytes: usize) {
        self.readahead_max = max_bytes;
        self.readahead_next = INITIAL_READAHEAD.min(max_bytes);
        self.run = None;
    }

    /// The largest read-ahead run in bytes (0 = off).
    pub fn readahead(&self) -> usize {
        self.readahead_max
    }

    /// The table.
    pub fn table(&self) -> &Rc<Table> {
        &self.table
    }

    /// True when positioned on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        self.block.is_some() && self.cur.valid()
    }

    /// Current token. Only meaningful while [`TableIter::valid`].
    #[inline]
    pub fn token(&self) -> Token {
        self.cur.token()
    }

    /// Current user key.
    #[inline]
    pub fn key(&self) -> &[u8] {
        self.cur.key()
    }

    /// Current sequence number.
    #[inline]
    pub fn seq(&self) -> SeqNo {
        self.cur.seq()
    }

    /// Current entry body.
    #[inline]
    pub fn body(&self) -> &[u8] {
        match &self.block {
            Some(b) => self.cur.body(b),
            None => &[],
        }
    }

    fn invalidate(&mut self) {
        self.block = None;
    }

    /// Loads block `i`. `sequential`: the cursor moves on from the block
    /// before (or starts a full scan), so a cache miss reads ahead.
    async fn load(&mut self, i: usize, sequential: bool) -> Result<bool> {
        let Some(h) = self.table.index.get(i).map(|e| e.handle) else {
            self.invalidate();
            return Ok(false);
        };
        self.block = None;
        self.block_idx = i;
        self.block_off = h.offset;
        let t = &self.table;
        let cached = if self.fill_cache {
            t.cache.get(t.file_no, h.offset)
        } else {
            t.cache.peek(t.file_no, h.offset)
        };
        let b = if let Some(b) = cached {
            b
        } else if let Some(b) = self.block_from_run(i, h)? {
            b
        } else if sequential && self.readahead_max > 0 {
            self.read_run(i).await?;
            match self.block_from_run(i, h)? {
                Some(b) => b,
                // read_run always covers block i; should that ever break,
                // reading the block alone is still correct.
                None => self.table.read_block_uncached(h, self.fill_cache).await?,
            }
        } else {
            if !sequential {
                // A jump elsewhere: the run is stale and the next scan starts small.
                self.run = None;
                self.readahead_next = INITIAL_READAHEAD.min(self.readahead_max);
            }
            self.table.read_block_uncached(h, self.fill_cache).await?
        };
        self.block = Some(b);
        Ok(true)
    }

    /// Block `i` (handle `h`) decoded from the current run, if the run holds it.
    fn block_from_run(&self, i: usize, h: BlockHandle) -> Result<Option<Rc<Block>>> {
        let Some(run) = &self.run else {
            return Ok(None);
        };
        if !(run.first..run.end).contains(&i) {
            return Ok(None);
        }
        // read_run only puts blocks at or after `start` in a run.
        let from = usize::try_from(h.offset.saturating_sub(run.start)).unwrap_or(usize::MAX);
        let raw = from
            .checked_add(h.size as usize)
            .and_then(|to| run.buf.get(from..to))
            .ok_or_else(|| {
                Error::corruption(
                    self.table.path(),
                    h.offset,
                    format!(
                        "file truncated: wanted {} bytes, found {}",
                        h.size,
                        run.buf.len().saturating_sub(from)
                    ),
                )
            })?;
        self.table.decode_data_block(h, raw, self.fill_cache).map(Some)
    }

    /// Reads a run starting at block `i`: the blocks from `i` on that are
    /// stored back to back and fit in the next run size (at least block `i`).
    async fn read_run(&mut self, i: usize) -> Result<()> {
        self.run = None;
        let index = &self.table.index;
        let Some(first) = index.get(i).map(|e| e.handle) else {
            return Ok(());
        };
        let budget = self.readahead_next.max(1) as u64;
        let mut end = i + 1;
        let mut stop = first.offset.saturating_add(first.size);
        while let Some(h) = index.get(end).map(|e| e.handle) {
            // The format leaves no gap between data blocks; a handle that
            // does not follow on ends the run rather than reading a gap.
            let Some(next_stop) = h.offset.checked_add(h.size) else {
                break;
            };
            if h.offset != stop || next_stop - first.offset > budget {
                break;
            }
            stop = next_stop;
            end += 1;
        }
        let len = (stop - first.offset) as usize;
        let buf = self.table.file.read_at(first.offset, len).await?;
        self.table.bump(|s| {
            s.data_read_ios += 1;
            s.readahead_bytes += buf.len() as u64;
        });
        self.readahead_next = self.readahead_next.saturating_mul(2).min(self.readahead_max);
        self.run = Some(Run {
            buf,
            start: first.offset,
            first: i,
            end,
        });
        Ok(())
    }

    fn wrap(&mut self, r: std::result::Result<(), DecodeError>) -> Result<()> {
        r.map_err(|d| {
            self.block = None;
            decoded_error(self.table.path(), self.block_off, d)
        })
    }

    /// While the block cursor is exhausted, moves to the next block's first entry.
    async fn skip_exhausted(&mut self) -> Result<()> {
        while self.block.is_some() && !self.cur.valid() {
            if !self.load(self.block_idx + 1, true).await? {
                return Ok(());
            }
            let r = match &self.block {
                Some(b) => self.cur.seek_to_first(b),
                None => Ok(()),
            };
            self.wrap(r)?;
        }
        Ok(())
    }

    /// Positions on the table's first entry.
    pub async fn seek_to_first(&mut self) -> Result<()> {
        let r = self.seek_to_first_inner().await;
        if r.is_err() {
            self.invalidate();
        }
        r
    }

    async fn seek_to_first_inner(&mut self) -> Result<()> {
        // A full scan from the start: read ahead from the first block on.
        self.readahead_next = INITIAL_READAHEAD.min(self.readahead_max);
        if !self.load(0, true).await? {
            return Ok(());
        }
        let r = match &self.block {
            Some(b) => self.cur.seek_to_first(b),
            None => Ok(()),
        };
        self.wrap(r)?;
        self.skip_exhausted().await
    }

    /// Positions on the first entry with `(token, key)` at or after the target,
    /// newest version first.
    pub async fn seek(&mut self, token: Token, key: &[u8]) -> Result<()> {
        self.seek_at(token, key, SeqNo::MAX).await
    }

    /// Positions on the first entry at or after the internal key
    /// `(token, key, seq)`: for a snapshot read, the newest version of the
    /// key at or below `seq`.
    pub async fn seek_at(&mut self, token: Token, key: &[u8], seq: SeqNo) -> Result<()> {
        let r = self.seek_inner(token, key, seq).await;
        if r.is_err() {
            self.invalidate();
        }
        r
    }

    async fn seek_inner(&mut self, token: Token, key: &[u8], seq: SeqNo) -> Result<()> {
        let Some(i) = self.table.index.find(token, key, seq) else {
            self.invalidate();
            return Ok(());
        };
        let loaded = self.block.is_some() && self.block_idx == i;
        // Only the block the seek lands in; read-ahead starts once the
        // cursor moves on (from a run already read, if it holds block i).
        if !loaded && !self.load(i, false).await? {
            return Ok(());
        }
        let target = Target::new(token, key, seq);
        let r = match &self.block {
            Some(b) => self.cur.seek(b, &target),
            None => Ok(()),
        };
        self.wrap(r)?;
        self.skip_exhausted().await
    }

    /// Moves to the next entry (invalid after the last).
    pub async fn advance(&mut self) -> Result<()> {
        let r = match &self.block {
            Some(b) => self.cur.next(b),
            None => return Ok(()),
        };
        self.wrap(r)?;
        let r = self.skip_exhausted().await;
        if r.is_err() {
            self.invalidate();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::{Path, PathBuf};
    use std::rc::Rc;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::format::{encode_body, Kind};
    use crate::io::Fs;
    use crate::sstable::{Compression, TableBuilder, TableOptions};

    type Ent = (Token, Vec<u8>, SeqNo, Vec<u8>);

    use super::super::tests::{run, RealDir};

    /// Random entries in table order: few tokens, 1-3 versions per key,
    /// compressible and random values of 0..600 bytes.
    fn gen_entries(rng: &mut SmallRng, keys: usize) -> Vec<Ent> {
        let tokens: Vec<Token> = (0..8).map(|_| rng.gen()).collect();
        let mut users = std::collections::BTreeSet::new();
        while users.len() < keys {
            let t = tokens[rng.gen_range(0..tokens.len())];
            let k: Vec<u8> = (0..rng.gen_range(1..20))
                .map(|_| b"abcd0189"[rng.gen_range(0..8)])
                .collect();
            users.insert((t, k));
        }
        let mut out = Vec::new();
        for (t, k) in users {
            let versions = rng.gen_range(1..=3u64);
            for v in 0..versions {
                let mut body = Vec::new();
                let vlen = rng.gen_range(0..600);
                let value: Vec<u8> = if rng.gen_bool(0.5) {
                    (0..vlen).map(|i| b"value-"[i % 6]).collect()
                } else {
                    (0..vlen).map(|_| rng.gen()).collect()
                };
                encode_body(Kind::Put, 0, &[], &value, &mut body);
                // Newest version first.
                out.push((t, k.clone(), 100 - v, body));
            }
        }
        out
    }

    async fn build(fs: &Fs, path: &Path, entries: &[Ent], opts: TableOptions) {
        let mut b = TableBuilder::new(fs.create(path).await.unwrap(), opts, 1);
        for (t, k, s, body) in entries {
            b.add(*t, k, *s, body).await.unwrap();
        }
        b.finish().await.unwrap();
    }

    async fn open(fs: &Fs, path: &Path, cache_bytes: usize) -> Rc<Table> {
        let cache = Rc::new(BlockCache::new(cache_bytes));
        Table::open(fs.open(path, false).await.unwrap(), 1, cache)
            .await
            .unwrap()
    }

    fn entry(it: &TableIter) -> Ent {
        (it.token(), it.key().to_vec(), it.seq(), it.body().to_vec())
    }

    async fn scan(t: &Rc<Table>, readahead: usize, fill_cache: bool) -> Vec<Ent> {
        let mut it = TableIter::new(t.clone());
        it.set_readahead(readahead);
        it.set_fill_cache(fill_cache);
        it.seek_to_first().await.unwrap();
        let mut out = Vec::new();
        while it.valid() {
            out.push(entry(&it));
            it.advance().await.unwrap();
        }
        out
    }

    /// Full scans and seek-then-advance walks give the same entries with
    /// read-ahead off and at several sizes, over every compression and a
    /// range of block sizes.
    async fn readahead_matrix(fs: Fs, dir: PathBuf, seed: u64) {
        fs.prepare_dir(&dir).await.unwrap();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut n = 0;
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
            for block_size in [4 * 1024, 8 * 1024, 16 * 1024] {
                n += 1;
                let entries = gen_entries(&mut rng, 2500);
                let opts = TableOptions {
                    block_size,
                    compression,
                    ..TableOptions::default()
                };
                let path = dir.join(format!("{n:06}.sst"));
                build(&fs, &path, &entries, opts).await;
                // A cache smaller than the table, so runs mix with hits.
                let t = open(&fs, &path, 96 * 1024).await;
                let reference = scan(&t, 0, false).await;
                assert_eq!(reference, entries);
                for (ra, fill) in [
                    (DEFAULT_READAHEAD, false),
                    (DEFAULT_READAHEAD, true),
                    (1, true),
                    (40_000, false),
                ] {
                    assert_eq!(
                        scan(&t, ra, fill).await,
                        entries,
                        "{compression:?} {block_size} ra {ra}"
                    );
                }

                let mut off = TableIter::new(t.clone());
                off.set_readahead(0);
                let mut on = TableIter::new(t.clone());
                on.set_fill_cache(rng.gen());
                for _ in 0..300 {
                    if rng.gen_bool(0.05) {
                        off.seek_to_first().await.unwrap();
                        on.seek_to_first().await.unwrap();
                    } else {
                        let e = &entries[rng.gen_range(0..entries.len())];
                        let mut k = e.1.clone();
                        if rng.gen_bool(0.3) {
                            k.push(rng.gen());
                        }
                        off.seek(e.0, &k).await.unwrap();
                        on.seek(e.0, &k).await.unwrap();
                    }
                    let steps = if rng.gen_bool(0.2) {
                        rng.gen_range(0..2000)
                    } else {
                        rng.gen_range(0..60)
                    };
                    for _ in 0..steps {
                        assert_eq!(on.valid(), off.valid());
                        if !on.valid() {
                            break;
                        }
                        assert_eq!(entry(&on), entry(&off));
                        off.advance().await.unwrap();
                        on.advance().await.unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn readahead_same_results_on_sim_disk() {
        run(readahead_matrix(Fs::sim(5), PathBuf::from("/db"), 5));
    }

    #[test]
    fn readahead_same_results_on_real_disk() {
        let dir = RealDir::new("readahead");
        let d = dir.0.clone();
        run(readahead_matrix(Fs::real(), d, 6));
    }

    /// A multi-MB table: a full scan reads it in a few dozen I/Os instead of
    /// one per block, and with `fill_cache` off inserts nothing into the cache.
    #[test]
    fn readahead_cuts_read_ios() {
        run(async {
            let fs = Fs::sim(3);
            let dir = Path::new("/db");
            fs.prepare_dir(dir).await.unwrap();
            let path = dir.join("000001.sst");
            let mut rng = SmallRng::seed_from_u64(3);
            let entries = gen_entries(&mut rng, 12_000);
            let opts = TableOptions {
                compression: Compression::None,
                ..TableOptions::default()
            };
            build(&fs, &path, &entries, opts).await;
            let t = open(&fs, &path, 1 << 20).await;
            let blocks = t.index().len() as u64;
            assert!(
                t.size() > 4 << 20 && blocks > 1000,
                "{} bytes, {blocks} blocks",
                t.size()
            );

            let s0 = t.stats();
            assert_eq!(scan(&t, 0, false).await.len(), entries.len());
            let s1 = t.stats();
            assert_eq!(s1.data_read_ios - s0.data_read_ios, blocks);
            assert_eq!(s1.block_reads - s0.block_reads, blocks);
            assert_eq!(s1.readahead_bytes, 0);

            assert_eq!(scan(&t, DEFAULT_READAHEAD, false).await.len(), entries.len());
            let s2 = t.stats();
            let ios = s2.data_read_ios - s1.data_read_ios;
            // 16 + 32 + 64 + 128 KiB, then 256 KiB less at most one block per I/O.
            let max_ios = 4 + t.size() / (DEFAULT_READAHEAD as u64 - 17 * 1024) + 1;
            assert!(ios <= max_ios && ios * 20 < blocks, "{ios} I/Os for {blocks} blocks");
            assert_eq!(s2.block_reads - s1.block_reads, blocks);
            assert_eq!(
                s2.block_read_bytes - s1.block_read_bytes,
                s1.block_read_bytes - s0.block_read_bytes
            );
            assert_eq!(s2.readahead_bytes, s2.block_read_bytes - s1.block_read_bytes);
            let cs = t.cache.stats();
            assert_eq!(cs.inserts, 0, "{cs:?}");

            // fill_cache: every block the cursor reaches is inserted, once.
            assert_eq!(scan(&t, DEFAULT_READAHEAD, true).await.len(), entries.len());
            assert_eq!(t.cache.stats().inserts, blocks);

            // A seek reads only its block; advancing on then reads ahead.
            let mut it = TableIter::new(t.clone());
            it.set_fill_cache(false);
            let mid = &entries[entries.len() / 2];
            let s3 = t.stats();
            it.seek(mid.0, &mid.1).await.unwrap();
            assert_eq!(entry(&it), *mid);
            let s4 = t.stats();
            assert!(s4.data_read_ios - s3.data_read_ios <= 1);
            assert_eq!(s4.readahead_bytes, s3.readahead_bytes);
            // Point reads stay single-block reads.
            let s5 = t.stats();
            let last = &entries[entries.len() - 1];
            assert!(t.get(last.0, &last.1).await.unwrap().is_some());
            assert_eq!(t.stats().readahead_bytes, s5.readahead_bytes);
        });
    }

    /// A bit flipped inside a read-ahead run: the blocks before it come out
    /// intact, then the scan fails with a checksum error naming the file and
    /// the damaged block's offset (never a panic, never wrong data).
    #[test]
    fn readahead_bit_flip_is_a_typed_error() {
        run(async {
            for seed in 0..12u64 {
                let fs = Fs::sim(seed);
                let Fs::Sim(sim) = &fs else { unreachable!() };
                let dir = Path::new("/db");
                fs.prepare_dir(dir).await.unwrap();
                let path = dir.join("000009.sst");
                let mut rng = SmallRng::seed_from_u64(seed);
                let entries = gen_entries(&mut rng, 3000);
                let compression = [Compression::None, Compression::Lz4, Compression::Zstd(1)][seed as usize % 3];
                let opts = TableOptions {
                    compression,
                    ..TableOptions::default()
                };
                build(&fs, &path, &entries, opts).await;
                let t = open(&fs, &path, 1 << 20).await;
                let nblocks = t.index().len();
                assert!(nblocks > 20);
                // Past the first runs, so the block is in the middle of a run.
                let bad = rng.gen_range(8..nblocks);
                let h = t.index().get(bad).unwrap().handle;
                sim.flip_bit(&path, h.offset + rng.gen_range(0..h.size), rng.gen())
                    .unwrap();
                // Before the damaged block, the same entries as a clean read.
                let t = open(&fs, &path, 1 << 20).await;
                let mut it = TableIter::new(t.clone());
                it.set_fill_cache(seed % 2 == 0);
                let mut r = it.seek_to_first().await;
                let mut i = 0;
                while r.is_ok() && it.valid() {
                    assert_eq!(entry(&it), entries[i]);
                    i += 1;
                    r = it.advance().await;
                }
                let e = r.unwrap_err();
                assert!(
                    matches!(&e, Error::ChecksumMismatch { path: p, offset, .. } if *p == path && *offset == h.offset),
                    "seed {seed}: block {bad} at {}: {e:?}",
                    h.offset
                );
                assert!(e.to_string().contains("000009.sst"), "{e}");
                assert!(!it.valid());
                assert!(t.stats().readahead_bytes > 0);
                // The damaged block never reached the cache.
                assert!(t.cache.get(1, h.offset).is_none());
            }
        });
    }
}
