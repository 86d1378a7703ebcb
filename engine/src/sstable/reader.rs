//! Reading a table: point lookups and an ordered cursor.
//!
//! The footer, index, filter and properties are read once at open and kept in
//! memory (a few bytes per key and per block). Data blocks are read on demand
//! through the per-core [`BlockCache`].

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
use crate::io::File;

/// Read counters of one table, copied out by [`Table::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Point reads that consulted the bloom filter.
    pub bloom_checks: u64,
    /// Of those, reads the filter answered "absent" (no block read).
    pub bloom_negatives: u64,
    /// Reads the filter let through that found no version of the key.
    pub bloom_false_positives: u64,
    /// Data blocks read from the file (cache misses).
    pub block_reads: u64,
    /// Bytes of data blocks read from the file.
    pub block_read_bytes: u64,
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
        // The index bounded `size` when the table was opened.
        let raw = self.file.read_exact_at(h.offset, h.size as usize).await?;
        let block = decode_block_checked(&raw).map_err(|e| block_error(self.path(), h.offset, e))?;
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
#[derive(Debug)]
pub struct TableIter {
    table: Rc<Table>,
    /// Index of the current block.
    block_idx: usize,
    block_off: u64,
    block: Option<Rc<Block>>,
    cur: BlockCursor,
    fill_cache: bool,
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
        }
    }

    /// Whether blocks read on a cache miss are inserted into the cache
    /// (default true; compaction turns it off).
    pub fn set_fill_cache(&mut self, fill: bool) {
        self.fill_cache = fill;
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

    async fn load(&mut self, i: usize) -> Result<bool> {
        let Some(h) = self.table.index.get(i).map(|e| e.handle) else {
            self.invalidate();
            return Ok(false);
        };
        self.block = None;
        let b = self.table.read_block(h, self.fill_cache).await?;
        self.block_idx = i;
        self.block_off = h.offset;
        self.block = Some(b);
        Ok(true)
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
            if !self.load(self.block_idx + 1).await? {
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
        if !self.load(0).await? {
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
        if !loaded && !self.load(i).await? {
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

    use std::path::PathBuf;
    use std::rc::Rc;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::format::{encode_body, Kind};
    use crate::io::Fs;
    use crate::sstable::{TableBuilder, TableOptions};

    fn run<F: std::future::Future<Output = ()> + 'static>(f: F) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(f);
    }

    /// Full-scan time of a ~200 MB table on the real disk (O_DIRECT, so the
    /// page cache does not help). The table is built once and kept in
    /// target/test-data/readahead-bench for later runs.
    /// `cargo test --release -p corekv-engine --lib readahead_scan_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn readahead_scan_cost() {
        run(async {
            let fs = Fs::real();
            let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-data/readahead-bench"));
            fs.prepare_dir(&dir).await.unwrap();
            let path = dir.join("000001.sst");
            let n = 200_000u64;
            if !fs.exists(&path).await {
                let tmp = dir.join("000001.tmp");
                let mut rng = SmallRng::seed_from_u64(7);
                let mut b = TableBuilder::new(fs.create(&tmp).await.unwrap(), TableOptions::default(), 1);
                let mut body = Vec::new();
                let mut value = vec![0u8; 1024];
                for i in 0..n {
                    rng.fill(&mut value[..]);
                    body.clear();
                    encode_body(Kind::Put, 0, &[], &value, &mut body);
                    b.add(0, format!("{i:016}").as_bytes(), 1, &body).await.unwrap();
                }
                b.finish().await.unwrap();
                fs.rename(&tmp, &path).await.unwrap();
            }
            let cache = Rc::new(BlockCache::new(8 << 20));
            let t = Table::open(fs.open(&path, false).await.unwrap(), 1, cache).await.unwrap();
            println!("table {} MiB, {} blocks", t.size() >> 20, t.index().len());
            for round in 0..3 {
                let before = t.stats();
                let t0 = std::time::Instant::now();
                let mut it = TableIter::new(t.clone());
                it.set_fill_cache(false);
                it.seek_to_first().await.unwrap();
                let mut c = 0u64;
                let mut bytes = 0usize;
                while it.valid() {
                    c += 1;
                    bytes += it.body().len();
                    it.advance().await.unwrap();
                }
                let el = t0.elapsed();
                assert_eq!(c, n);
                let s = t.stats();
                println!(
                    "round {round}: {c} entries, {bytes} body bytes in {el:?} = {:.0} MB/s, {} block reads",
                    t.size() as f64 / el.as_secs_f64() / 1e6,
                    s.block_reads - before.block_reads,
                );
            }
        });
    }
}
