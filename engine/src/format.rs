//! Byte layouts shared by the WAL, the memtable and the SSTables.
//!
//! ## Format
//!
//! Integers are little-endian unless said otherwise. `varint` is LEB128
//! (7 bits a byte, low group first, at most 10 bytes for a u64).
//!
//! An entry is identified by its *internal key* `(token, key, seq)`. Entries
//! sort by token ascending, then key bytes ascending, then `seq` descending, so
//! the newest version of a key is met first. The token is the 8-byte hash the
//! layer above supplies (xxh3 of the key's hash part); sorting by it first makes
//! a vnode's range one contiguous scan.
//!
//! An entry *body* is:
//!
//! ```text
//! kind u8 (1 = put, 2 = tombstone) | time varint | meta_len varint | meta | value (to the end)
//! ```
//!
//! `time` is the expiry in milliseconds since the Unix epoch for a put (0 = never
//! expires) and the deletion time for a tombstone (compaction keeps a tombstone
//! for the grace period after it). `meta` is opaque version metadata owned by
//! the layer above (version vectors, HLC timestamps).
//!
//! A *write batch* (the WAL record payload) is:
//!
//! ```text
//! base_seq u64 | count u32 | count x ( kind u8 | token u64 | key_len varint | key
//!                                    | time varint | meta_len varint | meta
//!                                    | value_len varint | value )
//! ```
//!
//! The i-th operation of the batch gets sequence number `base_seq + i`.
//! `count`'s low 24 bits are the number of operations and its high 8 bits
//! the batch format's revision: 0 in version 1 ([`BATCH_FORMAT_VERSION`]),
//! so records written before the revision existed read as version 1. A
//! reader refuses a revision it does not know ([`WriteBatch::format_version`]).

use std::cmp::Ordering;

use crate::error::DecodeError;

/// The 8-byte hash that orders keys (supplied by the layer above).
pub type Token = u64;
/// A sequence number; larger is newer.
pub type SeqNo = u64;

/// What an entry says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// The key has this value.
    Put = 1,
    /// The key is deleted (a tombstone).
    Delete = 2,
}

impl Kind {
    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Delete),
            _ => None,
        }
    }
}

/// Appends `v` as a LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes `put_varint` writes for `v`.
#[inline]
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads a varint at `*pos`, advancing it. Fails on truncation or overflow.
#[inline]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let start = *pos;
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let Some(&b) = buf.get(*pos) else {
            return Err(DecodeError::new(start, "truncated varint"));
        };
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(DecodeError::new(start, "varint overflows u64"));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err(DecodeError::new(start, "varint longer than 10 bytes"));
        }
    }
}

/// Reads a little-endian u64 at `*pos`, advancing it.
#[inline]
pub fn get_u64(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let b = buf.get(*pos..*pos + 8).ok_or(DecodeError::new(*pos, "truncated u64"))?;
    *pos += 8;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// Reads a little-endian u32 at `*pos`, advancing it.
#[inline]
pub fn get_u32(buf: &[u8], pos: &mut usize) -> Result<u32, DecodeError> {
    let b = buf.get(*pos..*pos + 4).ok_or(DecodeError::new(*pos, "truncated u32"))?;
    *pos += 4;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Ok(u32::from_le_bytes(a))
}

/// Reads `len` bytes at `*pos`, advancing it.
#[inline]
pub fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], DecodeError> {
    let end = pos.checked_add(len).ok_or(DecodeError::new(*pos, "length overflows"))?;
    let b = buf
        .get(*pos..end)
        .ok_or(DecodeError::new(*pos, "length runs past the end of the buffer"))?;
    *pos = end;
    Ok(b)
}

/// Reads a varint length and then that many bytes.
#[inline]
pub fn get_len_prefixed<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], DecodeError> {
    let at = *pos;
    let len = get_varint(buf, pos)?;
    let len = usize::try_from(len).map_err(|_| DecodeError::new(at, "length too large"))?;
    get_bytes(buf, pos, len)
}

/// CRC32C (Castagnoli), the checksum of every on-disk structure.
#[inline]
pub fn crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Compares two user keys: token first, then key bytes.
#[inline]
pub fn cmp_user(ta: Token, ka: &[u8], tb: Token, kb: &[u8]) -> Ordering {
    ta.cmp(&tb).then_with(|| ka.cmp(kb))
}

/// Compares two internal keys: user key ascending, then sequence descending.
#[inline]
pub fn cmp_internal(ta: Token, ka: &[u8], sa: SeqNo, tb: Token, kb: &[u8], sb: SeqNo) -> Ordering {
    cmp_user(ta, ka, tb, kb).then_with(|| sb.cmp(&sa))
}

/// An owned entry: one version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key's token.
    pub token: Token,
    /// The user key.
    pub key: Vec<u8>,
    /// The sequence number of the write.
    pub seq: SeqNo,
    /// Put or tombstone.
    pub kind: Kind,
    /// Expiry (put, 0 = never) or deletion time (tombstone), ms since the epoch.
    pub time: u64,
    /// Opaque version metadata.
    pub meta: Vec<u8>,
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
}

impl Entry {
    /// True if this is a put whose expiry is at or before `now_ms`.
    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.kind == Kind::Put && self.time != 0 && self.time <= now_ms
    }

    /// Encodes the body (everything but the internal key).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        encode_body(self.kind, self.time, &self.meta, &self.value, out);
    }

    /// Builds an entry from an internal key and an encoded body.
    pub fn from_body(token: Token, key: &[u8], seq: SeqNo, body: &[u8]) -> Result<Entry, DecodeError> {
        Ok(decode_body(body)?.to_entry(token, key, seq))
    }

    /// Approximate memory footprint, for memtable accounting.
    #[inline]
    pub fn approx_size(&self) -> usize {
        self.key.len() + self.meta.len() + self.value.len() + 48
    }
}

/// A decoded body borrowing from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef<'a> {
    /// Put or tombstone.
    pub kind: Kind,
    /// Expiry or deletion time.
    pub time: u64,
    /// Version metadata.
    pub meta: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

impl BodyRef<'_> {
    /// True for a put that has not expired. The clock is read only for values
    /// that carry an expiry.
    #[inline]
    pub fn is_live(&self, now_ms: impl FnOnce() -> u64) -> bool {
        self.kind == Kind::Put && (self.time == 0 || self.time > now_ms())
    }

    /// An owned entry with this body.
    pub fn to_entry(&self, token: Token, key: &[u8], seq: SeqNo) -> Entry {
        Entry {
            token,
            key: key.to_vec(),
            seq,
            kind: self.kind,
            time: self.time,
            meta: self.meta.to_vec(),
            value: self.value.to_vec(),
        }
    }
}

/// Encodes an entry body.
#[inline]
pub fn encode_body(kind: Kind, time: u64, meta: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(kind as u8);
    put_varint(out, time);
    put_varint(out, meta.len() as u64);
    out.extend_from_slice(meta);
    out.extend_from_slice(value);
}

/// Decodes an entry body.
#[inline]
pub fn decode_body(buf: &[u8]) -> Result<BodyRef<'_>, DecodeError> {
    let kind = buf
        .first()
        .and_then(|b| Kind::from_u8(*b))
        .ok_or(DecodeError::new(0, "bad entry kind"))?;
    let mut pos = 1;
    let time = get_varint(buf, &mut pos)?;
    let meta = get_len_prefixed(buf, &mut pos)?;
    Ok(BodyRef {
        kind,
        time,
        meta,
        value: &buf[pos..],
    })
}

/// A group of writes applied atomically: all or none survive a crash.
///
/// The batch is kept in its WAL encoding, so committing it copies it once into
/// the log buffer and nowhere else.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    buf: Vec<u8>,
    count: u32,
}

const BATCH_HEADER: usize = 12;

/// The write batch (WAL record) format version this build writes and reads.
pub const BATCH_FORMAT_VERSION: u32 = 1;

/// Most operations in one batch: the low 24 bits of `count`.
pub const MAX_BATCH_OPS: usize = (1 << 24) - 1;

const COUNT_MASK: u32 = (1 << 24) - 1;

impl Default for WriteBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch {
            buf: vec![0u8; BATCH_HEADER],
            count: 0,
        }
    }

    /// Adds a put. `expiry_ms` is 0 for no expiry.
    pub fn put(&mut self, token: Token, key: &[u8], value: &[u8], meta: &[u8], expiry_ms: u64) {
        self.push(Kind::Put, token, key, expiry_ms, meta, value);
    }

    /// Adds a tombstone written at `now_ms`.
    pub fn delete(&mut self, token: Token, key: &[u8], meta: &[u8], now_ms: u64) {
        self.push(Kind::Delete, token, key, now_ms, meta, &[]);
    }

    fn push(&mut self, kind: Kind, token: Token, key: &[u8], time: u64, meta: &[u8], value: &[u8]) {
        self.buf.push(kind as u8);
        self.buf.extend_from_slice(&token.to_le_bytes());
        put_varint(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key);
        put_varint(&mut self.buf, time);
        put_varint(&mut self.buf, meta.len() as u64);
        self.buf.extend_from_slice(meta);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(value);
        self.count += 1;
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Removes every operation.
    pub fn clear(&mut self) {
        self.buf.truncate(BATCH_HEADER);
        self.count = 0;
    }

    /// Stamps the base sequence number and returns the encoded record payload.
    /// The batch must hold at most [`MAX_BATCH_OPS`] operations (the engine
    /// refuses larger ones before sealing).
    pub fn seal(&mut self, base_seq: SeqNo) -> &[u8] {
        debug_assert!(self.count as usize <= MAX_BATCH_OPS);
        let word = (self.count & COUNT_MASK) | ((BATCH_FORMAT_VERSION - 1) << 24);
        self.buf[0..8].copy_from_slice(&base_seq.to_le_bytes());
        self.buf[8..12].copy_from_slice(&word.to_le_bytes());
        &self.buf
    }

    /// The format version of an encoded batch (`None`: too short to say).
    pub fn format_version(buf: &[u8]) -> Option<u32> {
        let word = u32::from_le_bytes(buf.get(8..12)?.try_into().ok()?);
        Some((word >> 24) + 1)
    }

    /// Iterates the operations of an encoded batch (as written by [`WriteBatch::seal`]).
    /// A batch of another format version is an error (check
    /// [`WriteBatch::format_version`] first to report it as such).
    pub fn iter_encoded(buf: &[u8]) -> Result<BatchIter<'_>, DecodeError> {
        let mut pos = 0;
        let base_seq = get_u64(buf, &mut pos)?;
        let word = get_u32(buf, &mut pos)?;
        if (word >> 24) + 1 != BATCH_FORMAT_VERSION {
            return Err(DecodeError::new(8, "write batch of an unknown format version"));
        }
        let count = word & COUNT_MASK;
        Ok(BatchIter {
            buf,
            pos,
            base_seq,
            remaining: count,
            index: 0,
        })
    }

    /// Iterates the operations of this (unsealed) batch; sequence numbers start at 0.
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            buf: &self.buf,
            pos: BATCH_HEADER,
            base_seq: 0,
            remaining: self.count,
            index: 0,
        }
    }
}

/// One operation of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOp<'a> {
    /// Sequence number (base + index).
    pub seq: SeqNo,
    /// Put or tombstone.
    pub kind: Kind,
    /// Token.
    pub token: Token,
    /// User key.
    pub key: &'a [u8],
    /// Expiry or deletion time.
    pub time: u64,
    /// Version metadata.
    pub meta: &'a [u8],
    /// Value.
    pub value: &'a [u8],
}

/// Iterator over a batch's operations.
#[derive(Debug)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    base_seq: SeqNo,
    remaining: u32,
    index: u64,
}

impl<'a> BatchIter<'a> {
    /// The batch's base sequence number.
    pub fn base_seq(&self) -> SeqNo {
        self.base_seq
    }

    /// Operations not yet returned.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    fn decode_one(&mut self) -> Result<BatchOp<'a>, DecodeError> {
        let buf = self.buf;
        let at = self.pos;
        let kind = Kind::from_u8(*buf.get(at).ok_or(DecodeError::new(at, "truncated batch"))?)
            .ok_or(DecodeError::new(at, "bad operation kind in batch"))?;
        self.pos += 1;
        let token = get_u64(buf, &mut self.pos)?;
        let key = get_len_prefixed(buf, &mut self.pos)?;
        let time = get_varint(buf, &mut self.pos)?;
        let meta = get_len_prefixed(buf, &mut self.pos)?;
        let value = get_len_prefixed(buf, &mut self.pos)?;
        let seq = self.base_seq.wrapping_add(self.index);
        self.index += 1;
        Ok(BatchOp {
            seq,
            kind,
            token,
            key,
            time,
            meta,
            value,
        })
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchOp<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.pos != self.buf.len() {
                self.pos = self.buf.len();
                return Some(Err(DecodeError::new(self.pos, "trailing bytes after batch")));
            }
            return None;
        }
        self.remaining -= 1;
        match self.decode_one() {
            Ok(op) => Some(Ok(op)),
            Err(e) => {
                self.remaining = 0;
                self.pos = self.buf.len();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_and_bounds() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut p = 0;
            assert_eq!(get_varint(&b, &mut p).unwrap(), v);
            assert_eq!(p, b.len());
        }
        let mut p = 0;
        assert!(get_varint(&[0x80, 0x80], &mut p).is_err());
        let mut p = 0;
        assert!(get_varint(&[0xff; 11], &mut p).is_err());
    }

    #[test]
    fn a_batch_carries_its_format_version() {
        let mut b = WriteBatch::new();
        b.put(7, b"k1", b"v1", b"m", 0);
        let enc = b.seal(100).to_vec();
        assert_eq!(WriteBatch::format_version(&enc), Some(BATCH_FORMAT_VERSION));
        // Written before the revision byte existed: the same bytes.
        assert_eq!(&enc[8..12], &1u32.to_le_bytes());
        let mut future = enc.clone();
        future[11] = 1;
        assert_eq!(WriteBatch::format_version(&future), Some(2));
        assert!(WriteBatch::iter_encoded(&future).is_err());
        assert_eq!(WriteBatch::format_version(&enc[..11]), None);
    }

    #[test]
    fn batch_roundtrip() {
        let mut b = WriteBatch::new();
        b.put(7, b"k1", b"v1", b"m", 0);
        b.delete(9, b"k2", b"", 1234);
        let enc = b.seal(100).to_vec();
        let ops: Vec<_> = WriteBatch::iter_encoded(&enc).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].seq, 100);
        assert_eq!(ops[0].key, b"k1");
        assert_eq!(ops[0].value, b"v1");
        assert_eq!(ops[1].seq, 101);
        assert_eq!(ops[1].kind, Kind::Delete);
        assert_eq!(ops[1].time, 1234);
        // Every truncation is an error, never a panic.
        for cut in 0..enc.len() {
            if let Ok(it) = WriteBatch::iter_encoded(&enc[..cut]) {
                assert!(it.into_iter().any(|r| r.is_err()));
            }
        }
    }

    #[test]
    fn internal_order_newest_first() {
        assert_eq!(cmp_internal(1, b"a", 5, 1, b"a", 3), Ordering::Less);
        assert_eq!(cmp_internal(1, b"b", 5, 2, b"a", 3), Ordering::Less);
        assert_eq!(cmp_internal(1, b"a", 5, 1, b"ab", 9), Ordering::Less);
    }
}
