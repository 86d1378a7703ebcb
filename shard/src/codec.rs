//! The one bounds-checked reader for the node's own byte formats (version
//! records and contexts, Paxos state, hints, gossip messages): every length is checked against
//! the bytes left before anything is allocated, so untrusted bytes cannot make
//! a decoder panic or allocate more than the input.
//!
//! Varints are strict: a varint must use its shortest form, and decoders call
//! [`Reader::finish`], so every byte string a versioning decoder accepts is
//! the one canonical encoding of its state (a digest of the bytes can then
//! stand for the state).

use corekv_engine::format::{get_varint, varint_len};

use crate::error::{Error, Result};

/// Which error a reader reports, so each format keeps its own error variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Version records and contexts: [`Error::VersionDecode`].
    Versions,
    /// Paxos state and hints: [`Error::ReplicationDecode`].
    Replication,
    /// Gossip messages from peers: [`Error::GossipDecode`].
    Gossip,
}

/// Reads little-endian fields and varints from a byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is being decoded (`"record"`, `"hint"`), for the error.
    what: &'static str,
    format: Format,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`, which holds one `what` of a replication format.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader::of(Format::Replication, buf, what)
    }

    /// A reader of `buf`, which holds one `what` of `format`.
    pub(crate) fn of(format: Format, buf: &'a [u8], what: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            what,
            format,
        }
    }

    fn error_at(&self, offset: usize, reason: &'static str) -> Error {
        let what = self.what;
        match self.format {
            Format::Versions => Error::VersionDecode { what, offset, reason },
            Format::Replication => Error::ReplicationDecode { what, offset, reason },
            Format::Gossip => Error::GossipDecode { what, offset, reason },
        }
    }

    /// An error at the current offset.
    pub(crate) fn error(&self, reason: &'static str) -> Error {
        self.error_at(self.pos, reason)
    }

    /// Reads the leading format version byte; one other than `known` is
    /// [`Error::UnsupportedFormat`] (written by a newer build: no guessing).
    pub(crate) fn version(&mut self, known: u8) -> Result<()> {
        let found = self.u8()?;
        if found != known {
            return Err(Error::UnsupportedFormat {
                what: self.what.to_owned(),
                found: u32::from(found),
                known: known.to_string(),
            });
        }
        Ok(())
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.error("truncated"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A `u16` length, at most `max`, then that many bytes.
    pub(crate) fn bytes_u16(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(self.error("length over the limit"));
        }
        self.take(len)
    }

    /// A `u32` length, at most `max`, then that many bytes.
    pub(crate) fn bytes_u32(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = usize::try_from(self.u32()?).map_err(|_| self.error("length over the limit"))?;
        if len > max {
            return Err(self.error("length over the limit"));
        }
        self.take(len)
    }

    /// A varint in its shortest form (a longer form would make two encodings
    /// of one state, and then two digests).
    pub(crate) fn varint(&mut self) -> Result<u64> {
        let start = self.pos;
        let v = get_varint(self.buf, &mut self.pos).map_err(|e| self.error_at(e.offset, e.reason))?;
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
        self.take(len)
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error("trailing bytes"));
        }
        Ok(())
    }
}
