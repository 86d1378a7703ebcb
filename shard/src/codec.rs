//! A bounds-checked reader for the coordinator's and replication's byte
//! formats (Paxos state, hints): every length is checked against the bytes left before anything
//! is allocated, so untrusted bytes cannot make a decoder panic or allocate
//! more than the input.

use crate::error::{Error, Result};

/// Reads little-endian fields from a byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`, which holds one `what`.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// An error at the current offset.
    pub(crate) fn error(&self, reason: &'static str) -> Error {
        Error::ReplicationDecode {
            what: self.what,
            offset: self.pos,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
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

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(self.error("trailing bytes"));
        }
        Ok(())
    }
}
