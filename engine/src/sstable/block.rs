//! Blocks: the unit of compression, checksumming, caching and reading.
//!
//! ## Format
//!
//! On disk:
//!
//! ```text
//! payload | compression u8 (0 none, 1 lz4, 2 zstd) | crc32c u32 LE over payload and compression byte
//! ```
//!
//! A compressed payload is `uncompressed_len varint | compressed bytes` (lz4_flex
//! block format, or one zstd frame). The decoded payload is:
//!
//! ```text
//! entry* | restart u32 LE x n | n u32 LE
//! entry = shared varint | unshared varint | unshared bytes | seq varint | body_len varint | body
//! ```
//!
//! The entry's internal key bytes ("ikey") are `token u64 BIG-endian | user key`,
//! so comparing ikeys as bytes orders by token then key. `shared` bytes come from
//! the previous entry's ikey; at a restart point `shared` is 0. `restart[i]` is
//! the offset of a restart entry, ascending, the first one 0.

use std::cell::RefCell;
use std::cmp::Ordering;

use super::Compression;
use crate::error::DecodeError;
use crate::format::{get_bytes, get_varint, put_varint, SeqNo, Token};

/// Bytes after a block's payload: compression byte and checksum.
pub const TRAILER_LEN: usize = 5;
/// Largest decoded block accepted: a bound on what a damaged length can make
/// the reader allocate.
pub const MAX_DECODED_BLOCK: usize = 64 << 20;

/// Compression byte: stored as is.
pub const COMPRESSION_NONE: u8 = 0;
/// Compression byte: lz4_flex block format.
pub const COMPRESSION_LZ4: u8 = 1;
/// Compression byte: zstd frame.
pub const COMPRESSION_ZSTD: u8 = 2;

/// Length of the token prefix of an ikey.
const TOKEN_LEN: usize = 8;

/// Accumulates sorted entries into one block payload.
#[derive(Debug)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    restart_interval: usize,
    since_restart: usize,
    last_key: Vec<u8>,
    last_seq: SeqNo,
    entries: usize,
}

impl BlockBuilder {
    /// An empty block with a restart point every `restart_interval` entries.
    pub fn new(restart_interval: usize) -> BlockBuilder {
        BlockBuilder {
            buf: Vec::with_capacity(16 * 1024),
            restarts: Vec::new(),
            restart_interval: restart_interval.max(1),
            since_restart: 0,
            last_key: Vec::new(),
            last_seq: 0,
            entries: 0,
        }
    }

    /// Appends an entry; `ikey` must sort after the previous one.
    pub fn add(&mut self, ikey: &[u8], seq: SeqNo, body: &[u8]) {
        debug_assert!(ikey.len() >= TOKEN_LEN);
        debug_assert!(
            self.entries == 0
                || (self.last_key.as_slice(), std::cmp::Reverse(self.last_seq)) < (ikey, std::cmp::Reverse(seq)),
            "block entries out of order"
        );
        let shared = if self.since_restart == 0 || self.since_restart >= self.restart_interval {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            self.last_key.iter().zip(ikey).take_while(|(a, b)| a == b).count()
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (ikey.len() - shared) as u64);
        self.buf.extend_from_slice(&ikey[shared..]);
        put_varint(&mut self.buf, seq);
        put_varint(&mut self.buf, body.len() as u64);
        self.buf.extend_from_slice(body);
        self.last_key.clear();
        self.last_key.extend_from_slice(ikey);
        self.last_seq = seq;
        self.since_restart += 1;
        self.entries += 1;
    }

    /// Size of the payload if finished now.
    #[inline]
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Entries added since the last reset.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// True if no entry was added since the last reset.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The last ikey added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// The last sequence number added.
    pub fn last_seq(&self) -> SeqNo {
        self.last_seq
    }

    /// Appends the restart array and returns the payload. Call [`BlockBuilder::reset`] next.
    pub fn finish(&mut self) -> &[u8] {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        &self.buf
    }

    /// Empties the builder for the next block, keeping its allocations.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.since_restart = 0;
        self.last_key.clear();
        self.last_seq = 0;
        self.entries = 0;
    }
}

/// Seals payloads into on-disk blocks, compressing when it pays.
pub struct BlockSealer {
    compression: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for BlockSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockSealer({:?})", self.compression)
    }
}

impl BlockSealer {
    /// A sealer for `compression`. If zstd cannot set up its context, blocks
    /// are stored uncompressed (still a valid table).
    pub fn new(compression: Compression) -> BlockSealer {
        let zstd = match compression {
            Compression::Zstd(level) => zstd::bulk::Compressor::new(level).ok(),
            _ => None,
        };
        BlockSealer {
            compression,
            zstd,
            scratch: Vec::new(),
        }
    }

    /// Appends the on-disk form of `payload` (compressed with `compression`
    /// unless that saves less than 12.5%) to `out`.
    pub fn seal(&mut self, payload: &[u8], compression: Compression, out: &mut Vec<u8>) {
        let start = out.len();
        let budget = payload.len() - payload.len() / 8;
        let mut ctype = COMPRESSION_NONE;
        match compression {
            Compression::None => {}
            Compression::Lz4 => {
                let max = lz4_flex::block::get_maximum_output_size(payload.len());
                self.scratch.clear();
                self.scratch.resize(max, 0);
                if let Ok(n) = lz4_flex::block::compress_into(payload, &mut self.scratch) {
                    if n + crate::format::varint_len(payload.len() as u64) <= budget {
                        put_varint(out, payload.len() as u64);
                        out.extend_from_slice(&self.scratch[..n]);
                        ctype = COMPRESSION_LZ4;
                    }
                }
            }
            Compression::Zstd(_) => {
                if let Some(z) = self.zstd.as_mut() {
                    self.scratch.clear();
                    self.scratch.reserve(zstd::zstd_safe::compress_bound(payload.len()));
                    if let Ok(n) = z.compress_to_buffer(payload, &mut self.scratch) {
                        if n + crate::format::varint_len(payload.len() as u64) <= budget {
                            put_varint(out, payload.len() as u64);
                            out.extend_from_slice(&self.scratch[..n]);
                            ctype = COMPRESSION_ZSTD;
                        }
                    }
                }
            }
        }
        if ctype == COMPRESSION_NONE {
            out.extend_from_slice(payload);
        }
        out.push(ctype);
        let crc = crate::format::crc(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert!(
            decode_payload(&out[start..]).is_ok_and(|p| p == payload),
            "a sealed block must decode to its payload"
        );
    }

    /// The table's compression setting.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

/// A decoded, decompressed block, as cached.
#[derive(Debug, Clone)]
pub struct Block {
    data: Vec<u8>,
    /// Where the entries end and the restart array begins.
    restarts_off: usize,
    num_restarts: usize,
}

/// Why a block read from disk was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The stored checksum does not match the bytes.
    Checksum {
        /// Stored.
        expected: u32,
        /// Computed.
        got: u32,
    },
    /// The bytes do not decode.
    Decode(DecodeError),
}

impl From<DecodeError> for BlockError {
    fn from(e: DecodeError) -> Self {
        BlockError::Decode(e)
    }
}

thread_local! {
    /// One zstd decompression context per core, reused across blocks: setting
    /// one up costs more than decoding a 4 KiB block.
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_decompress(src: &[u8], out: &mut Vec<u8>) -> Result<usize, ()> {
    ZSTD_D.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return zstd::bulk::decompress_to_buffer(src, out).map_err(|_| ());
        };
        if slot.is_none() {
            *slot = zstd::bulk::Decompressor::new().ok();
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(src, out).map_err(|_| ()),
            None => zstd::bulk::decompress_to_buffer(src, out).map_err(|_| ()),
        }
    })
}

/// Decodes an on-disk block: checks the trailer and checksum, decompresses
/// (bounded by [`MAX_DECODED_BLOCK`]) and validates the restart array.
pub fn decode_block(raw: &[u8]) -> Result<Block, DecodeError> {
    decode_block_checked(raw).map_err(|e| match e {
        BlockError::Checksum { .. } => DecodeError::new(raw.len().saturating_sub(4), "block checksum mismatch"),
        BlockError::Decode(d) => d,
    })
}

/// [`decode_block`], telling a checksum mismatch apart from other damage.
pub fn decode_block_checked(raw: &[u8]) -> Result<Block, BlockError> {
    Ok(Block::from_payload(decode_payload(raw)?)?)
}

/// Checks a block's trailer and checksum and returns its decompressed payload
/// (for metadata blocks whose payload is not a sorted-entry block).
pub fn decode_payload(raw: &[u8]) -> Result<Vec<u8>, BlockError> {
    if raw.len() < TRAILER_LEN {
        return Err(DecodeError::new(0, "block shorter than its trailer").into());
    }
    let crc_at = raw.len() - 4;
    let mut p = crc_at;
    let expected = crate::format::get_u32(raw, &mut p)?;
    let got = crate::format::crc(&raw[..crc_at]);
    if expected != got {
        return Err(BlockError::Checksum { expected, got });
    }
    let ctype = raw[crc_at - 1];
    let payload = &raw[..crc_at - 1];
    let data = match ctype {
        COMPRESSION_NONE => payload.to_vec(),
        COMPRESSION_LZ4 | COMPRESSION_ZSTD => {
            let mut pos = 0;
            let ulen = get_varint(payload, &mut pos)?;
            if ulen > MAX_DECODED_BLOCK as u64 {
                return Err(DecodeError::new(0, "decoded block size over the limit").into());
            }
            let ulen = ulen as usize;
            let src = &payload[pos..];
            if ctype == COMPRESSION_LZ4 {
                let mut out = vec![0u8; ulen];
                match lz4_flex::block::decompress_into(src, &mut out) {
                    Ok(n) if n == ulen => out,
                    _ => return Err(DecodeError::new(pos, "lz4 data does not decode to its stated size").into()),
                }
            } else {
                let mut out = Vec::with_capacity(ulen);
                match zstd_decompress(src, &mut out) {
                    Ok(n) if n == ulen && out.len() == ulen => out,
                    _ => return Err(DecodeError::new(pos, "zstd data does not decode to its stated size").into()),
                }
            }
        }
        _ => return Err(DecodeError::new(crc_at - 1, "unknown block compression").into()),
    };
    Ok(data)
}

impl Block {
    /// Wraps a decoded payload, validating its restart array.
    pub fn from_payload(data: Vec<u8>) -> Result<Block, DecodeError> {
        let len = data.len();
        let mut p = len
            .checked_sub(4)
            .ok_or(DecodeError::new(0, "block shorter than its restart count"))?;
        let n = crate::format::get_u32(&data, &mut p)? as usize;
        let restarts_off = n
            .checked_mul(4)
            .and_then(|b| (len - 4).checked_sub(b))
            .ok_or(DecodeError::new(len - 4, "restart count larger than the block"))?;
        if n == 0 && restarts_off != 0 {
            return Err(DecodeError::new(len - 4, "entries without a restart point"));
        }
        let mut prev: Option<usize> = None;
        for i in 0..n {
            let mut q = restarts_off + 4 * i;
            let r = crate::format::get_u32(&data, &mut q)? as usize;
            let ok = match prev {
                None => r == 0,
                Some(pr) => r > pr,
            };
            if !ok || r >= restarts_off {
                return Err(DecodeError::new(restarts_off + 4 * i, "bad restart offset"));
            }
            prev = Some(r);
        }
        Ok(Block {
            data,
            restarts_off,
            num_restarts: n,
        })
    }

    /// The decoded payload.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Bytes this block holds in memory, for the cache's accounting.
    pub fn charge(&self) -> usize {
        self.data.capacity() + std::mem::size_of::<Block>()
    }

    /// Number of restart points.
    pub fn num_restarts(&self) -> usize {
        self.num_restarts
    }

    /// True if the block holds no entry.
    pub fn is_empty(&self) -> bool {
        self.restarts_off == 0
    }

    #[inline]
    fn restart(&self, i: usize) -> usize {
        let at = self.restarts_off + 4 * i;
        match self.data.get(at..at + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            // Validated in from_payload; an out-of-range index reads as the end.
            None => self.restarts_off,
        }
    }

    /// The entries, in order, each with its key copied out (for tools and
    /// fuzzing; scans use [`BlockCursor`], which does not allocate per entry).
    pub fn iter(&self) -> BlockEntries<'_> {
        BlockEntries {
            block: self,
            cursor: BlockCursor::new(),
            started: false,
            done: false,
        }
    }

    /// A block of `n` bytes of zeros with no entries, for cache tests.
    #[cfg(test)]
    pub(crate) fn for_test(n: usize) -> Block {
        Block {
            data: vec![0u8; n],
            restarts_off: 0,
            num_restarts: 0,
        }
    }
}

/// One entry of a block, key copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry<'a> {
    /// Token.
    pub token: Token,
    /// User key.
    pub key: Vec<u8>,
    /// Sequence number.
    pub seq: SeqNo,
    /// The entry body (for data blocks, `format::decode_body` reads it).
    pub body: &'a [u8],
}

/// Iterator over a block's entries; stops after the first error.
#[derive(Debug)]
pub struct BlockEntries<'a> {
    block: &'a Block,
    cursor: BlockCursor,
    started: bool,
    done: bool,
}

impl<'a> Iterator for BlockEntries<'a> {
    type Item = Result<BlockEntry<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = if self.started {
            self.cursor.next(self.block)
        } else {
            self.started = true;
            self.cursor.seek_to_first(self.block)
        };
        if let Err(e) = r {
            self.done = true;
            return Some(Err(e));
        }
        if !self.cursor.valid() {
            self.done = true;
            return None;
        }
        Some(Ok(BlockEntry {
            token: self.cursor.token(),
            key: self.cursor.key().to_vec(),
            seq: self.cursor.seq(),
            body: self.cursor.body(self.block),
        }))
    }
}

/// A seek target: an internal key, compared without building its ikey bytes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    token_be: [u8; 8],
    key: &'a [u8],
    seq: SeqNo,
}

impl<'a> Target<'a> {
    /// The position of `(token, key, seq)`: before every older version of the key.
    pub fn new(token: Token, key: &'a [u8], seq: SeqNo) -> Target<'a> {
        Target {
            token_be: token.to_be_bytes(),
            key,
            seq,
        }
    }

    /// Orders an entry `(ikey, seq)` relative to the target (`Less`: the entry
    /// comes before it).
    #[inline]
    pub fn cmp_entry(&self, ikey: &[u8], seq: SeqNo) -> Ordering {
        let (t, k) = ikey.split_at(TOKEN_LEN.min(ikey.len()));
        t.cmp(&self.token_be[..])
            .then_with(|| k.cmp(self.key))
            .then_with(|| self.seq.cmp(&seq))
    }
}

/// A position inside one block. It does not borrow the block (every method
/// takes it), so an iterator can keep both the `Rc<Block>` and the cursor; the
/// current key lives in the cursor's own buffer, reused from entry to entry.
#[derive(Debug, Clone, Default)]
pub struct BlockCursor {
    key: Vec<u8>,
    seq: SeqNo,
    body_start: usize,
    body_end: usize,
    /// Offset of the entry after the current one.
    next: usize,
    valid: bool,
}

impl BlockCursor {
    /// A cursor positioned nowhere.
    pub fn new() -> BlockCursor {
        BlockCursor::default()
    }

    /// True when positioned on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current entry's ikey (token BE + user key).
    #[inline]
    pub fn ikey(&self) -> &[u8] {
        &self.key
    }

    /// The current entry's token.
    #[inline]
    pub fn token(&self) -> Token {
        let mut b = [0u8; 8];
        if let Some(t) = self.key.get(..TOKEN_LEN) {
            b.copy_from_slice(t);
        }
        u64::from_be_bytes(b)
    }

    /// The current entry's user key.
    #[inline]
    pub fn key(&self) -> &[u8] {
        self.key.get(TOKEN_LEN..).unwrap_or(&[])
    }

    /// The current entry's sequence number.
    #[inline]
    pub fn seq(&self) -> SeqNo {
        self.seq
    }

    /// The current entry's body, borrowed from `block` (the block the cursor
    /// was positioned in).
    #[inline]
    pub fn body<'b>(&self, block: &'b Block) -> &'b [u8] {
        block.data.get(self.body_start..self.body_end).unwrap_or(&[])
    }

    /// The current entry's body as a byte range of the block's data.
    #[inline]
    pub fn body_range(&self) -> (usize, usize) {
        (self.body_start, self.body_end)
    }

    /// Positions on the first entry (invalid if the block is empty).
    pub fn seek_to_first(&mut self, b: &Block) -> Result<(), DecodeError> {
        self.key.clear();
        self.next = 0;
        self.next(b)
    }

    /// Moves to the next entry (invalid past the last).
    pub fn next(&mut self, b: &Block) -> Result<(), DecodeError> {
        if self.next >= b.restarts_off {
            self.valid = false;
            return Ok(());
        }
        match self.decode_at(b, self.next) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.valid = false;
                Err(e)
            }
        }
    }

    fn decode_at(&mut self, b: &Block, pos: usize) -> Result<(), DecodeError> {
        let entries = &b.data[..b.restarts_off];
        let mut p = pos;
        let shared = get_varint(entries, &mut p)?;
        let unshared = get_varint(entries, &mut p)?;
        if shared > self.key.len() as u64 {
            return Err(DecodeError::new(pos, "shared prefix longer than the previous key"));
        }
        let unshared = usize::try_from(unshared).map_err(|_| DecodeError::new(pos, "key length too large"))?;
        let tail = get_bytes(entries, &mut p, unshared)?;
        self.key.truncate(shared as usize);
        self.key.extend_from_slice(tail);
        if self.key.len() < TOKEN_LEN {
            return Err(DecodeError::new(pos, "internal key shorter than its token"));
        }
        self.seq = get_varint(entries, &mut p)?;
        let blen_at = p;
        let blen = get_varint(entries, &mut p)?;
        let blen = usize::try_from(blen).map_err(|_| DecodeError::new(blen_at, "body length too large"))?;
        let body = p;
        get_bytes(entries, &mut p, blen)?;
        self.body_start = body;
        self.body_end = p;
        self.next = p;
        self.valid = true;
        Ok(())
    }

    /// The ikey and seq of restart entry `i`, read in place.
    fn restart_key(b: &Block, i: usize) -> Result<(&[u8], SeqNo), DecodeError> {
        let entries = &b.data[..b.restarts_off];
        let pos = b.restart(i);
        let mut p = pos;
        if get_varint(entries, &mut p)? != 0 {
            return Err(DecodeError::new(pos, "restart entry with a shared prefix"));
        }
        let n = get_varint(entries, &mut p)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::new(pos, "key length too large"))?;
        let k = get_bytes(entries, &mut p, n)?;
        if k.len() < TOKEN_LEN {
            return Err(DecodeError::new(pos, "internal key shorter than its token"));
        }
        let seq = get_varint(entries, &mut p)?;
        Ok((k, seq))
    }

    /// Positions on the first entry at or after `target` (invalid if none in
    /// this block). Binary search over the restart points, then a short scan.
    pub fn seek(&mut self, b: &Block, target: &Target<'_>) -> Result<(), DecodeError> {
        let r = self.seek_inner(b, target);
        if r.is_err() {
            self.valid = false;
        }
        r
    }

    fn seek_inner(&mut self, b: &Block, target: &Target<'_>) -> Result<(), DecodeError> {
        if b.num_restarts == 0 {
            self.valid = false;
            return Ok(());
        }
        let (mut lo, mut hi) = (0usize, b.num_restarts - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let (k, s) = Self::restart_key(b, mid)?;
            if target.cmp_entry(k, s) == Ordering::Less {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        self.key.clear();
        self.next = b.restart(lo);
        loop {
            self.next(b)?;
            if !self.valid || target.cmp_entry(&self.key, self.seq) != Ordering::Less {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn ikey(t: Token, k: &[u8]) -> Vec<u8> {
        let mut v = t.to_be_bytes().to_vec();
        v.extend_from_slice(k);
        v
    }

    type Ent = (Token, Vec<u8>, SeqNo, Vec<u8>);

    fn sample(n: usize, restart: usize) -> (Vec<Ent>, Vec<u8>) {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(n as u64);
        let mut es: Vec<Ent> = (0..n)
            .map(|i| {
                let t = rng.gen_range(0..5u64);
                let k = format!("key{:04}", rng.gen_range(0..50)).into_bytes();
                (t, k, i as u64, vec![b'v'; rng.gen_range(0..40)])
            })
            .collect();
        es.sort_by(|a, b| crate::format::cmp_internal(a.0, &a.1, a.2, b.0, &b.1, b.2));
        let mut bb = BlockBuilder::new(restart);
        for (t, k, s, v) in &es {
            bb.add(&ikey(*t, k), *s, v);
        }
        (es, bb.finish().to_vec())
    }

    #[test]
    fn roundtrip_all_compressions_and_seek() {
        for restart in [1, 3, 16] {
            let (es, payload) = sample(300, restart);
            for c in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
                let mut s = BlockSealer::new(c);
                let mut raw = Vec::new();
                s.seal(&payload, c, &mut raw);
                if c != Compression::None {
                    assert_ne!(raw[raw.len() - 5], COMPRESSION_NONE, "compressible sample stays raw");
                }
                let b = decode_block(&raw).unwrap();
                let got: Vec<_> = b
                    .iter()
                    .map(|e| {
                        let e = e.unwrap();
                        (e.token, e.key, e.seq, e.body.to_vec())
                    })
                    .collect();
                assert_eq!(got, es);
                let mut cur = BlockCursor::new();
                for (i, (t, k, s, _)) in es.iter().enumerate() {
                    cur.seek(&b, &Target::new(*t, k, *s)).unwrap();
                    assert!(cur.valid());
                    assert_eq!((cur.token(), cur.key(), cur.seq()), (*t, k.as_slice(), *s), "entry {i}");
                }
                cur.seek(&b, &Target::new(u64::MAX, b"zzzz", 0)).unwrap();
                assert!(!cur.valid());
                cur.seek(&b, &Target::new(0, b"", u64::MAX)).unwrap();
                assert_eq!(cur.seq(), es[0].2);
            }
        }
    }

    #[test]
    fn damaged_blocks_fail_cleanly() {
        let (_, payload) = sample(100, 4);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
        for c in [Compression::None, Compression::Lz4, Compression::Zstd(1)] {
            let mut raw = Vec::new();
            BlockSealer::new(c).seal(&payload, c, &mut raw);
            for cut in 0..raw.len() {
                assert!(decode_block(&raw[..cut]).is_err());
            }
            for _ in 0..2000 {
                let mut r = raw.clone();
                let at = rng.gen_range(0..r.len());
                r[at] ^= 1 << rng.gen_range(0..8);
                assert!(matches!(decode_block_checked(&r), Err(BlockError::Checksum { .. })));
            }
        }
        // Damaged payloads with a valid checksum: decoding and walking must not panic.
        for _ in 0..5000 {
            let mut p = payload.clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..p.len());
                p[at] = rng.gen();
            }
            if rng.gen_bool(0.2) {
                p.truncate(rng.gen_range(0..p.len()));
            }
            if let Ok(b) = Block::from_payload(p) {
                for e in b.iter() {
                    if e.is_err() {
                        break;
                    }
                }
                let mut cur = BlockCursor::new();
                let _ = cur.seek(&b, &Target::new(rng.gen_range(0..5), b"key0025", rng.gen()));
            }
        }
        for len in 0..200 {
            let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = decode_block(&junk);
        }
    }

    #[test]
    fn incompressible_payload_is_stored_raw() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut bb = BlockBuilder::new(16);
        for i in 0..40u64 {
            let v: Vec<u8> = (0..100).map(|_| rng.gen()).collect();
            bb.add(&ikey(i, b"k"), 1, &v);
        }
        let payload = bb.finish().to_vec();
        for c in [Compression::Lz4, Compression::Zstd(3)] {
            let mut raw = Vec::new();
            BlockSealer::new(c).seal(&payload, c, &mut raw);
            assert_eq!(raw[raw.len() - 5], COMPRESSION_NONE);
            assert_eq!(raw.len(), payload.len() + TRAILER_LEN);
        }
    }
}
