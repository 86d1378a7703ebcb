//! Writes a table from entries given in internal-key order.
//!
//! Bytes go through a 256 KiB DMA buffer written whole at aligned offsets; the
//! final partial buffer is written zero-padded to the next 4 KiB and the file
//! is then truncated to its logical length. Nothing is written twice.

use std::rc::Rc;

use super::block::{Block, BlockBuilder, BlockSealer};
use super::meta::{BlockHandle, Footer, MetaHandle, Properties};
use super::{Compression, TableMeta, TableOptions, FORMAT_VERSION};
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::filter::FilterBuilder;
use crate::format::{get_varint, Kind, SeqNo, Token};
use crate::io::{align_up, File, IoBuf};

/// Size of the write buffer: large sequential writes, few syscalls.
const WRITE_BUF: usize = 256 * 1024;

/// Aligned, buffered appends to a new file.
#[derive(Debug)]
struct Writer {
    file: File,
    buf: Option<IoBuf>,
    filled: usize,
    /// File offset of the buffer's first byte (bytes before it are written).
    flushed: u64,
}

impl Writer {
    /// Logical bytes appended so far.
    fn offset(&self) -> u64 {
        self.flushed + self.filled as u64
    }

    async fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let file = &self.file;
            let buf = self.buf.get_or_insert_with(|| file.alloc(WRITE_BUF));
            let n = bytes.len().min(WRITE_BUF - self.filled);
            buf.as_mut_slice()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == WRITE_BUF {
                if let Some(full) = self.buf.take() {
                    self.file.write_at(full, self.flushed).await?;
                }
                self.flushed += WRITE_BUF as u64;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// Writes the tail, cuts the padding off and syncs. Returns the file size.
    async fn finish(&mut self) -> Result<u64> {
        let size = self.offset();
        if self.filled > 0 {
            let mut tail = self.file.alloc(align_up(self.filled));
            if let Some(buf) = self.buf.as_ref() {
                tail.as_mut_slice()[..self.filled].copy_from_slice(&buf.as_slice()[..self.filled]);
            }
            self.file.write_at(tail, self.flushed).await?;
        }
        self.file.truncate(size).await?;
        self.file.sync().await?;
        Ok(size)
    }
}

/// Builds one table. See the module docs of [`super`] for the layout.
#[derive(Debug)]
pub struct TableBuilder {
    w: Writer,
    opts: TableOptions,
    file_no: u64,
    data: BlockBuilder,
    index: BlockBuilder,
    filter: FilterBuilder,
    sealer: BlockSealer,
    /// The sealed form of the block being written, reused.
    sealed: Vec<u8>,
    /// The current entry's ikey, reused.
    ikey: Vec<u8>,
    handle_buf: Vec<u8>,
    props: Properties,
    /// First entry's internal key, for the properties.
    first: Option<(Token, Vec<u8>, SeqNo)>,
    /// Previous entry, for ordering checks and distinct-key counting.
    prev_seq: SeqNo,
    has_prev: bool,
    /// Where data blocks go as they are written (see
    /// [`TableBuilder::fill_cache`] and [`TableBuilder::fill_free_cache`]).
    cache: Option<Rc<BlockCache>>,
    /// Only compressed blocks, and only into room the cache has free.
    cache_spare_only: bool,
}

impl TableBuilder {
    /// Starts a table in `file` (freshly created, empty). Out-of-range options
    /// are clamped; [`TableOptions::validate`] reports them instead.
    pub fn new(file: File, opts: TableOptions, file_no: u64) -> TableBuilder {
        let opts = opts.clamped();
        TableBuilder {
            w: Writer {
                file,
                buf: None,
                filled: 0,
                flushed: 0,
            },
            data: BlockBuilder::new(opts.restart_interval),
            index: BlockBuilder::new(opts.restart_interval),
            filter: FilterBuilder::new(opts.bloom_bits_per_key),
            sealer: BlockSealer::new(opts.compression),
            sealed: Vec::with_capacity(opts.block_size * 2),
            ikey: Vec::with_capacity(64),
            handle_buf: Vec::with_capacity(20),
            props: Properties {
                format_version: FORMAT_VERSION,
                min_seq: SeqNo::MAX,
                compression: opts.compression,
                block_size: opts.block_size as u32,
                restart_interval: opts.restart_interval as u32,
                bloom_bits_per_key: opts.bloom_bits_per_key,
                created_ms: opts.created_ms,
                ..Properties::default()
            },
            first: None,
            prev_seq: 0,
            has_prev: false,
            cache: None,
            cache_spare_only: false,
            opts,
            file_no,
        }
    }

    /// Inserts each data block into `cache` as it is written, keyed as the
    /// table's reader will look it up (file number, offset). A flush uses
    /// it: the newest data is the likeliest to be read, and without it the
    /// first read of every flushed block goes to the disk (table reads
    /// bypass the page cache). The caller removes the file's blocks from the
    /// cache if the table is abandoned.
    pub fn fill_cache(mut self, cache: Rc<BlockCache>) -> TableBuilder {
        self.cache = Some(cache);
        self.cache_spare_only = false;
        self
    }

    /// Like [`TableBuilder::fill_cache`], for compaction output: only blocks
    /// that compression shrank by a fifth or more (cached in their on-disk
    /// form, cheap to copy), and only while the cache has free room, so
    /// speculative copies never evict blocks readers are using. Without it a
    /// compaction turns a warm cache cold: its inputs' blocks leave the cache
    /// with the inputs, and the first read of every output block is a disk
    /// read.
    pub fn fill_free_cache(mut self, cache: Rc<BlockCache>) -> TableBuilder {
        self.cache = Some(cache);
        self.cache_spare_only = true;
        self
    }

    /// The table's file number.
    pub fn file_no(&self) -> u64 {
        self.file_no
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// Appends an entry. Entries must come in strictly increasing internal-key
    /// order (token, key ascending; seq descending). `body` is a
    /// [`crate::format`] entry body.
    pub async fn add(&mut self, token: Token, key: &[u8], seq: SeqNo, body: &[u8]) -> Result<()> {
        let (kind, time) = body_kind_time(body)?;
        let prev_key = self.data_prev_ikey();
        let same_user_key = self.has_prev && prev_key.len() == key.len() + 8 && {
            prev_key[..8] == token.to_be_bytes() && &prev_key[8..] == key
        };
        debug_assert!(
            !self.has_prev || {
                let (pt, pk) = prev_key.split_at(8);
                let mut tb = [0u8; 8];
                tb.copy_from_slice(pt);
                crate::format::cmp_internal(u64::from_be_bytes(tb), pk, self.prev_seq, token, key, seq)
                    == std::cmp::Ordering::Less
            },
            "table entries out of order"
        );
        if !same_user_key {
            self.filter.add(token, key);
            self.props.distinct_keys += 1;
        }
        self.ikey.clear();
        self.ikey.extend_from_slice(&token.to_be_bytes());
        self.ikey.extend_from_slice(key);
        self.data.add(&self.ikey, seq, body);
        if self.first.is_none() {
            self.first = Some((token, key.to_vec(), seq));
        }
        self.has_prev = true;
        self.prev_seq = seq;
        let p = &mut self.props;
        p.entries += 1;
        if kind == Kind::Delete {
            p.tombstones += 1;
        }
        p.min_seq = p.min_seq.min(seq);
        p.max_seq = p.max_seq.max(seq);
        p.max_time = p.max_time.max(time);
        p.raw_key_bytes += key.len() as u64;
        p.raw_body_bytes += body.len() as u64;
        if self.data.estimated_size() >= self.opts.block_size {
            self.flush_data_block().await?;
        }
        Ok(())
    }

    /// The previous entry's ikey: the last of the current data block, or of
    /// the last finished block (kept in `ikey`).
    fn data_prev_ikey(&self) -> &[u8] {
        if self.data.is_empty() {
            &self.ikey
        } else {
            self.data.last_key()
        }
    }

    /// Bytes the file would have if finished now (near enough to cut tables
    /// at a target size).
    pub fn estimated_size(&self) -> u64 {
        let filter = (self.props.distinct_keys * u64::from(self.opts.bloom_bits_per_key)).div_ceil(8);
        self.w.offset() + self.data.estimated_size() as u64 + self.index.estimated_size() as u64 + filter + 256
    }

    async fn flush_data_block(&mut self) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let offset = self.w.offset();
        self.sealed.clear();
        let compression = self.opts.compression;
        let payload = self.data.finish();
        self.sealer.seal(payload, compression, &mut self.sealed);
        // Where compression saved a fifth or more, the cache takes the block
        // as written and decodes it on its first read: a flush then copies
        // (into fresh memory) only what it writes. Otherwise the decoded
        // form, ready to search.
        let sealed_small = self.sealed.len() < payload.len() - payload.len() / 5;
        let cached = match self.cache {
            Some(_) if !sealed_small && !self.cache_spare_only => Some(payload.to_vec()),
            _ => None,
        };
        self.w.append(&self.sealed).await?;
        if let Some(cache) = self.cache.as_ref() {
            if sealed_small {
                if !self.cache_spare_only || cache.has_room_for_sealed(self.sealed.len()) {
                    cache.insert_sealed(self.file_no, offset, &self.sealed);
                }
            } else if let Some(payload) = cached {
                // The payload came from our own block builder, so it decodes; a
                // failure would only mean one block is read from disk later.
                if let Ok(block) = Block::from_payload(payload) {
                    cache.insert(self.file_no, offset, Rc::new(block));
                }
            }
        }
        let handle = BlockHandle {
            offset,
            size: self.sealed.len() as u64,
        };
        self.handle_buf.clear();
        handle.encode(&mut self.handle_buf);
        self.index
            .add(self.data.last_key(), self.data.last_seq(), &self.handle_buf);
        self.props.data_blocks += 1;
        self.props.data_bytes += handle.size;
        self.data.reset();
        Ok(())
    }

    /// Writes an uncompressed metadata block; returns its handle.
    async fn write_meta_block(&mut self, payload: &[u8]) -> Result<MetaHandle> {
        let offset = self.w.offset();
        self.sealed.clear();
        self.sealer.seal(payload, Compression::None, &mut self.sealed);
        let len = u32::try_from(self.sealed.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "metadata block of {} bytes in {}",
                self.sealed.len(),
                self.w.file.path().display()
            ))
        })?;
        self.w.append(&self.sealed).await?;
        Ok(MetaHandle { offset, len })
    }

    /// Writes the last data block, the filter, index and properties blocks and
    /// the footer, syncs and closes the file. Fails on an empty table (the
    /// caller should not flush nothing).
    pub async fn finish(mut self) -> Result<TableMeta> {
        let Some(first) = self.first.take() else {
            return Err(Error::InvalidArgument(format!(
                "no entries for table {}",
                self.w.file.path().display()
            )));
        };
        // The last entry's key: the end of the pending data block, or of the
        // previous one (its ikey is still in `ikey`).
        let last_ikey = self.data_prev_ikey().to_vec();
        let last_seq = self.prev_seq;
        self.flush_data_block().await?;

        let filter = self.filter.finish_yielding().await;
        let filter_h = self.write_meta_block(&filter).await?;

        let index_payload = self.index.finish().to_vec();
        let index_h = self.write_meta_block(&index_payload).await?;

        let mut tb = [0u8; 8];
        tb.copy_from_slice(&last_ikey[..8]);
        self.props.smallest = first;
        self.props.largest = (u64::from_be_bytes(tb), last_ikey[8..].to_vec(), last_seq);
        let mut props = Vec::with_capacity(256);
        self.props.encode(&mut props);
        let props_h = self.write_meta_block(&props).await?;

        let footer = Footer {
            index: index_h,
            filter: filter_h,
            properties: props_h,
            version: FORMAT_VERSION,
        };
        self.w.append(&footer.encode()).await?;
        let size = self.w.finish().await?;
        let meta = TableMeta::from_properties(self.file_no, size, &self.props);
        self.w.file.close().await?;
        Ok(meta)
    }

    /// Gives up on the table: closes the file without finishing it. The caller
    /// removes the file.
    pub async fn abandon(self) -> Result<()> {
        self.w.file.close().await
    }
}

/// Reads the kind and time of an entry body without decoding the rest.
fn body_kind_time(body: &[u8]) -> Result<(Kind, u64)> {
    let kind = body
        .first()
        .and_then(|b| Kind::from_u8(*b))
        .ok_or_else(|| Error::InvalidArgument("entry body with a bad kind byte".into()))?;
    let mut p = 1;
    let time = get_varint(body, &mut p).map_err(|e| Error::InvalidArgument(format!("entry body: {e}")))?;
    Ok((kind, time))
}
