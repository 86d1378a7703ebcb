//! The byte-level helpers the record and context decoders share.
//!
//! Decoding is strict: a varint must use its shortest form and a decoder must
//! consume its whole input, so every byte string a decoder accepts is the one
//! canonical encoding of what it decodes to. That is what lets a digest of the
//! bytes stand for the state.

use corekv_engine::format::{get_varint, varint_len};

use crate::error::{Error, Result};

pub(crate) use corekv_engine::format::put_varint;

/// A cursor over untrusted bytes that never panics and reports offsets.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is being decoded (`"record"`, `"context"`), for the error.
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// An error at the current offset.
    pub(crate) fn error(&self, reason: &'static str) -> Error {
        Error::VersionDecode {
            what: self.what,
            offset: self.pos,
            reason,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.error("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u64_le(&mut self) -> Result<u64> {
        let end = self.pos.checked_add(8).ok_or_else(|| self.error("truncated"))?;
        let b = self.buf.get(self.pos..end).ok_or_else(|| self.error("truncated"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        self.pos = end;
        Ok(u64::from_le_bytes(a))
    }

    /// A varint in its shortest form (a longer form would make two encodings
    /// of one state, and then two digests).
    pub(crate) fn varint(&mut self) -> Result<u64> {
        let start = self.pos;
        let v = get_varint(self.buf, &mut self.pos).map_err(|e| Error::VersionDecode {
            what: self.what,
            offset: e.offset,
            reason: e.reason,
        })?;
        if self.pos - start != varint_len(v) {
            self.pos = start;
            return Err(self.error("varint not in its shortest form"));
        }
        Ok(v)
    }

    /// A count of items each at least `min_item_bytes` long: checked against
    /// the bytes left before anyone allocates for it.
    pub(crate) fn count(&mut self, min_item_bytes: usize, max: usize) -> Result<usize> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.error("count does not fit in memory"))?;
        if n > max {
            return Err(self.error("count over the format's limit"));
        }
        if n.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(self.error("count larger than the bytes left"));
        }
        Ok(n)
    }

    /// A varint length and that many bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.count(1, usize::MAX)?;
        // `count` checked `len <= remaining`, so the range is in bounds.
        let b = self
            .buf
            .get(self.pos..self.pos + len)
            .ok_or_else(|| self.error("truncated"))?;
        self.pos += len;
        Ok(b)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error("trailing bytes"));
        }
        Ok(())
    }
}

/// Appends a varint length and the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}
