//! Body primitives: a bounded reader over a frame body, writers, and
//! [`List`], a zero-copy sequence of items validated once at decode time.
//!
//! Lengths and counts are LEB128 varints (7 bits a byte, low group first, at
//! most 10 bytes), as in the engine's formats. Every length is checked against
//! both a configured limit and the bytes actually remaining before it is used,
//! so nothing is ever allocated or sliced from an untrusted number.

use std::fmt;

use crate::error::FrameError;
use crate::msg::Limits;

/// A cursor over a frame body that turns every failure into a typed
/// [`FrameError`] naming the opcode and the offset.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    opcode: u8,
    limits: Limits,
}

impl<'a> Reader<'a> {
    /// A reader over the body of a frame with `opcode`.
    pub fn new(buf: &'a [u8], opcode: u8, limits: Limits) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            opcode,
            limits,
        }
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A `Malformed` error at the current offset.
    pub fn malformed(&self, reason: &'static str) -> FrameError {
        FrameError::Malformed {
            opcode: self.opcode,
            offset: self.pos,
            reason,
        }
    }

    fn limit(&self, what: &'static str, len: u64, max: u64) -> FrameError {
        FrameError::LimitExceeded {
            opcode: self.opcode,
            what,
            len,
            max,
        }
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FrameError> {
        let b = self
            .buf
            .get(self.pos..self.pos + N)
            .ok_or_else(|| self.malformed(what))?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        self.pos += N;
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take::<1>("truncated u8")?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.take("truncated u16")?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take("truncated u64")?))
    }

    /// A little-endian two's-complement i64.
    pub fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_le_bytes(self.take("truncated i64")?))
    }

    /// A LEB128 varint; refuses truncation, more than 10 bytes and overflow.
    pub fn varint(&mut self) -> Result<u64, FrameError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8().map_err(|_| self.malformed("truncated varint"))?;
            if shift == 63 && b > 1 {
                return Err(self.malformed("varint overflows u64"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.malformed("varint longer than 10 bytes"));
            }
        }
    }

    /// A varint that must fit in a u32.
    pub fn varint_u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.limit(what, v, u32::MAX.into()))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: u32) -> Result<&'a [u8], FrameError> {
        let len = self.varint()?;
        if len > u64::from(max) {
            return Err(self.limit(what, len, max.into()));
        }
        // len <= max <= u32::MAX, so it fits in usize.
        let len = len as usize;
        let b = self
            .buf
            .get(self.pos..self.pos + len)
            .ok_or_else(|| self.malformed("length runs past the end of the body"))?;
        self.pos += len;
        Ok(b)
    }

    /// An optional length-prefixed byte string: a presence tag (0 absent,
    /// 1 present) then, if present, the bytes (at most `max`).
    pub fn opt_bytes(&mut self, what: &'static str, max: u32) -> Result<Option<&'a [u8]>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes(what, max)?)),
            _ => Err(self.malformed("bad presence tag")),
        }
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, what: &'static str, max: u32) -> Result<&'a str, FrameError> {
        let b = self.bytes(what, max)?;
        std::str::from_utf8(b).map_err(|_| self.malformed("string is not UTF-8"))
    }

    /// An item count: at most `max_items`, and small enough that `count`
    /// items of at least `min_item_len` bytes fit in what remains.
    pub fn count(&mut self, what: &'static str, min_item_len: usize) -> Result<usize, FrameError> {
        let n = self.varint()?;
        let max = u64::from(self.limits.max_items);
        if n > max {
            return Err(self.limit(what, n, max));
        }
        let n = n as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(self.malformed("item count exceeds the bytes remaining"));
        }
        Ok(n)
    }

    /// Fails unless the whole body was consumed: trailing bytes mean the
    /// sender and receiver disagree about the layout.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.remaining() != 0 {
            return Err(self.malformed("trailing bytes after the message"));
        }
        Ok(())
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

/// Appends an optional byte string: a presence tag (0 absent, 1 present)
/// then, if present, the varint length and the bytes.
pub fn put_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

/// Appends a varint length and the bytes.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// An element of a [`List`]: something with a self-delimiting encoding.
pub trait Item<'a>: Sized {
    /// The fewest bytes one item can encode to; bounds a count by the bytes
    /// remaining before any item is read.
    const MIN_LEN: usize;
    /// Reads one item.
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError>;
    /// Appends one item.
    fn write(&self, out: &mut Vec<u8>);
}

/// A sequence of items, zero-copy in both directions.
///
/// Decoding yields `Encoded`: the count and the bytes, validated once
/// (every item read, every limit checked), then iterated lazily without
/// allocating. Encoding takes `Slice`, borrowed from the caller.
pub enum List<'a, T> {
    /// Validated wire bytes holding `count` items.
    Encoded {
        /// Number of items.
        count: usize,
        /// Their bytes (no count prefix).
        bytes: &'a [u8],
    },
    /// Items supplied by the caller, to encode.
    Slice(&'a [T]),
}

impl<'a, T> Clone for List<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<'a, T> Copy for List<'a, T> {}

impl<'a, T: Item<'a> + Clone> List<'a, T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        match self {
            List::Encoded { count, .. } => *count,
            List::Slice(s) => s.len(),
        }
    }

    /// True if there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items, in order.
    pub fn iter(&self) -> ListIter<'a, T> {
        match *self {
            List::Encoded { count, bytes } => ListIter::Encoded {
                // The bytes were validated with the real limits; re-reading
                // them needs none.
                r: Reader::new(bytes, 0, Limits::UNBOUNDED),
                left: count,
            },
            List::Slice(s) => ListIter::Slice(s.iter()),
        }
    }

    /// Reads `count | items`, validating every item.
    pub fn read(r: &mut Reader<'a>, what: &'static str) -> Result<List<'a, T>, FrameError> {
        let count = r.count(what, T::MIN_LEN)?;
        let start = r.pos;
        for _ in 0..count {
            T::read(r)?;
        }
        Ok(List::Encoded {
            count,
            bytes: &r.buf[start..r.pos],
        })
    }

    /// Appends `count | items`.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        match self {
            List::Encoded { bytes, .. } => out.extend_from_slice(bytes),
            List::Slice(s) => s.iter().for_each(|t| t.write(out)),
        }
    }
}

/// Iterator over a [`List`].
pub enum ListIter<'a, T> {
    /// Over validated wire bytes.
    Encoded {
        /// Reader positioned at the next item.
        r: Reader<'a>,
        /// Items left.
        left: usize,
    },
    /// Over caller items.
    Slice(std::slice::Iter<'a, T>),
}

impl<'a, T: Item<'a> + Clone> Iterator for ListIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            ListIter::Encoded { r, left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // Cannot fail: `List::read` read these very bytes; stop
                // rather than panic if that invariant is ever broken.
                T::read(r).ok()
            }
            ListIter::Slice(s) => s.next().cloned(),
        }
    }
}

impl<'a, T: Item<'a> + Clone + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: Item<'a> + Clone + Eq> Eq for List<'a, T> {}

impl<'a, T: Item<'a> + Clone + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A key: a length-prefixed byte string bounded by `max_key`.
impl<'a> Item<'a> for &'a [u8] {
    const MIN_LEN: usize = 1;
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        let max = r.limits().max_key;
        r.bytes("key length", max)
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_bytes(out, self);
    }
}

/// A token: a fixed 8-byte little-endian u64.
impl<'a> Item<'a> for u64 {
    const MIN_LEN: usize = 8;
    fn read(r: &mut Reader<'a>) -> Result<Self, FrameError> {
        r.u64()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
