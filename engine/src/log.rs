//! The record log shared by the WAL and the manifest.
//!
//! ## Format
//!
//! A log file is a sequence of records, packed back to back (a record may
//! cross a 4 KiB block boundary):
//!
//! ```text
//! crc32c u32 | len u32 | log_no u64 | payload (len bytes)
//! ```
//!
//! `crc32c` covers `len`, `log_no` and the payload. `log_no` is the number of
//! this use of the file: WAL segment files are recycled, so bytes of an older
//! use may follow the last record, and they carry a smaller `log_no`. Reading
//! stops at the first record that is zero-length, fails its checksum, runs past
//! the end of the file, or carries another `log_no`: that is the end of the log
//! (a torn tail after a crash looks exactly like this). Writes are whole 4 KiB
//! blocks (O_DIRECT); the tail block is zero-padded and rewritten by the next
//! write.
//!
//! A log that gets no more records (a sealed WAL segment) is followed by at
//! least 16 zero bytes ([`LogBuffer::seal`]), even when that takes one more
//! block: otherwise a last record ending within 16 bytes of a block's end
//! leaves a header that runs into the next block's recycled bytes, which
//! reads as a torn record in the middle of the WAL. A reader also takes a
//! header whose checksum and length are zero up to the block's end as the
//! clean end (files written before sealing existed).

use crate::error::DecodeError;
use crate::format::crc;
use crate::io::{align_down, align_up};

/// Bytes of a record header.
pub const HEADER: usize = 16;

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, log_no: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&log_no.to_le_bytes());
    out.extend_from_slice(payload);
    let c = crc(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&c.to_le_bytes());
}

/// Why reading a log stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// Not enough bytes for a header, or a zero header: the clean end.
    Clean,
    /// A header whose length runs past the end of the file.
    Truncated,
    /// A checksum mismatch.
    BadChecksum,
    /// A record of another use of the file (an older `log_no`).
    OtherLog(u64),
}

/// Decodes the record at `pos`. Returns the payload and the next position, or
/// why the log ends there.
pub fn decode_record(buf: &[u8], pos: usize, log_no: u64) -> Result<(&[u8], usize), LogEnd> {
    let Some(h) = buf.get(pos..pos + HEADER) else {
        return Err(LogEnd::Clean);
    };
    let stored = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let no = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    if len == 0 && stored == 0 && no == 0 {
        return Err(LogEnd::Clean);
    }
    // The zero padding of the log's last written block reaches its end, and
    // what follows is another block (a recycled file's old bytes): the clean
    // end. A real record is never zero in both its checksum and its length.
    let to_block_end = crate::io::ALIGN - pos % crate::io::ALIGN;
    if len == 0 && stored == 0 && to_block_end < HEADER && h[..to_block_end].iter().all(|&b| b == 0) {
        return Err(LogEnd::Clean);
    }
    let end = pos + HEADER + len;
    let Some(body) = buf.get(pos + 4..end) else {
        return Err(LogEnd::Truncated);
    };
    if crc(body) != stored {
        return Err(LogEnd::BadChecksum);
    }
    if no != log_no {
        return Err(LogEnd::OtherLog(no));
    }
    Ok((&body[HEADER - 4..], end))
}

/// Reads the `log_no` of the first record of a file, if it has a valid one.
pub fn first_log_no(buf: &[u8]) -> Option<u64> {
    let h = buf.get(0..HEADER)?;
    let no = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    decode_record(buf, 0, no).ok().map(|_| no)
}

/// The records of one log and where reading stopped.
#[derive(Debug)]
pub struct Scan<'a> {
    /// Each record's payload with its offset.
    pub records: Vec<(usize, &'a [u8])>,
    /// Offset just past the last good record.
    pub end: usize,
    /// Why reading stopped.
    pub why: LogEnd,
    /// If a valid record of the same log follows the stop point, its offset:
    /// the log is damaged in the middle, not torn at its tail.
    pub later_valid: Option<usize>,
}

/// Reads every record of `log_no` from `buf`.
pub fn scan(buf: &[u8], log_no: u64) -> Scan<'_> {
    let mut records = Vec::new();
    let mut pos = 0;
    let why = loop {
        match decode_record(buf, pos, log_no) {
            Ok((p, next)) => {
                records.push((pos, p));
                pos = next;
            }
            Err(e) => break e,
        }
    };
    let later_valid = match why {
        LogEnd::BadChecksum | LogEnd::Truncated => find_later(buf, pos, log_no),
        _ => None,
    };
    Scan {
        records,
        end: pos,
        why,
        later_valid,
    }
}

/// Looks for a valid record of `log_no` after a damaged one. Records start
/// anywhere, so this probes each 4-byte position (bounded: only a damaged log pays).
fn find_later(buf: &[u8], from: usize, log_no: u64) -> Option<usize> {
    let mut p = from + 1;
    let needle = log_no.to_le_bytes();
    while p + HEADER <= buf.len() {
        if buf[p + 8..p + 16] == needle && decode_record(buf, p, log_no).is_ok() {
            return Some(p);
        }
        p += 1;
    }
    None
}

/// The unwritten tail of a log being appended to.
///
/// `buf[0]` sits at the aligned file offset `base`; the bytes up to `end()` are
/// the log's content. Writing copies `base..end()` padded to whole blocks; after
/// a write, every whole block before the written end is dropped, keeping the
/// partial last block (the next write rewrites it with more records).
#[derive(Debug)]
pub struct LogBuffer {
    base: u64,
    buf: Vec<u8>,
    log_no: u64,
}

impl LogBuffer {
    /// A buffer for log `log_no` that starts at file offset `start` (any alignment;
    /// the bytes before it in the same block are `prefix`).
    pub fn new(log_no: u64, start: u64, prefix: &[u8]) -> LogBuffer {
        let base = align_down(start as usize) as u64;
        debug_assert_eq!(prefix.len() as u64, start - base);
        LogBuffer {
            base,
            buf: prefix.to_vec(),
            log_no,
        }
    }

    /// The log number written into records.
    pub fn log_no(&self) -> u64 {
        self.log_no
    }

    /// Logical end of the log (file offset).
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Appends a record; returns the new end.
    pub fn append(&mut self, payload: &[u8]) -> u64 {
        encode_record(&mut self.buf, self.log_no, payload);
        self.end()
    }

    /// The bytes to write: the file offset and the content (unpadded).
    pub fn pending(&self) -> (u64, &[u8]) {
        (self.base, &self.buf)
    }

    /// Size of the padded write [`LogBuffer::pending`] needs.
    pub fn padded_len(&self) -> usize {
        align_up(self.buf.len())
    }

    /// Drops whole blocks before `written_end` after it was written.
    pub fn written(&mut self, written_end: u64) {
        let keep_from = align_down(written_end as usize) as u64;
        if keep_from > self.base {
            let drop = (keep_from - self.base) as usize;
            self.buf.drain(..drop.min(self.buf.len()));
            self.base = keep_from;
        }
    }

    /// Takes back everything appended after the log ended at `end` (a value
    /// [`LogBuffer::end`] returned before): records whose write failed and
    /// that must not reach the disk with the next write.
    pub fn truncate(&mut self, end: u64) {
        debug_assert!(end >= self.base, "cannot take back bytes already written");
        let keep = usize::try_from(end.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.buf.truncate(keep);
    }

    /// Ends the log: zeros up to [`HEADER`] bytes past the last record, but
    /// not past `limit` (the file's size: a header that would run past the
    /// end of the file already reads as the clean end). The next write of
    /// the buffer puts them on disk.
    pub fn seal(&mut self, limit: u64) {
        let want = (self.end() + HEADER as u64).min(limit);
        if want > self.end() {
            let more = (want - self.end()) as usize;
            self.buf.resize(self.buf.len() + more, 0);
        }
    }

    /// Bytes buffered and not yet trimmed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes a payload-carrying decode error for the log at `path`.
pub fn decode_error(reason: &'static str, offset: usize) -> DecodeError {
    DecodeError::new(offset, reason)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A log whose last record ends `gap` bytes before a block boundary, in
    /// a recycled file (the next block holds old non-zero bytes): the bytes
    /// a sealed (or unsealed) buffer puts on disk, and how a reader ends it.
    fn recycled_file_with_gap(gap: usize, seal: bool) -> (Scan<'static>, usize) {
        let mut lb = LogBuffer::new(9, 0, &[]);
        lb.append(&vec![b'r'; 4096 - gap - HEADER]);
        let end = lb.end() as usize;
        if seal {
            lb.seal(1 << 20);
        }
        let mut file = vec![0xABu8; 3 * 4096];
        let (pos, bytes) = lb.pending();
        let mut padded = bytes.to_vec();
        padded.resize(lb.padded_len(), 0);
        file[pos as usize..pos as usize + padded.len()].copy_from_slice(&padded);
        let file: &'static [u8] = Box::leak(file.into_boxed_slice());
        (scan(file, 9), end)
    }

    #[test]
    fn a_log_ending_next_to_a_block_boundary_ends_cleanly() {
        for gap in [1, 5, 7, 8, 14, 15, 16, 100] {
            let (s, end) = recycled_file_with_gap(gap, true);
            assert_eq!(
                (s.records.len(), s.end, s.why),
                (1, end, LogEnd::Clean),
                "sealed, gap {gap}"
            );
        }
        // Unsealed (files from before sealing): zeros that cover the checksum
        // and the length up to the block's end are read as the clean end...
        for gap in [8, 14, 15] {
            let (s, _) = recycled_file_with_gap(gap, false);
            assert_eq!(s.why, LogEnd::Clean, "unsealed, gap {gap}");
        }
        // ...fewer cannot be told from a record, and read as torn: what
        // sealing prevents.
        let (s, _) = recycled_file_with_gap(5, false);
        assert_ne!(s.why, LogEnd::Clean);
        // Sealing stops at the limit (the file's end).
        let mut lb = LogBuffer::new(9, 0, &[]);
        lb.append(b"x");
        let end = lb.end();
        lb.seal(end + 3);
        assert_eq!(lb.end(), end + 3);
    }

    #[test]
    fn records_roundtrip_and_stop_at_other_logs() {
        let mut b = Vec::new();
        encode_record(&mut b, 7, b"hello");
        encode_record(&mut b, 7, b"world");
        let n = b.len();
        encode_record(&mut b, 6, b"stale");
        let s = scan(&b, 7);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.end, n);
        assert_eq!(s.why, LogEnd::OtherLog(6));
        assert_eq!(first_log_no(&b), Some(7));
    }

    #[test]
    fn damage_in_the_middle_is_told_apart_from_a_torn_tail() {
        let mut b = Vec::new();
        for i in 0..10u8 {
            encode_record(&mut b, 3, &[i; 100]);
        }
        let mut torn = b.clone();
        torn.truncate(b.len() - 50);
        let s = scan(&torn, 3);
        assert_eq!(s.records.len(), 9);
        assert_eq!(s.later_valid, None);
        let mut mid = b.clone();
        mid[HEADER + 20] ^= 1;
        let s = scan(&mid, 3);
        assert_eq!(s.records.len(), 0);
        assert!(s.later_valid.is_some());
    }

    #[test]
    fn buffer_keeps_partial_block() {
        let mut lb = LogBuffer::new(1, 0, &[]);
        lb.append(&[1u8; 5000]);
        let end = lb.end();
        lb.written(end);
        assert_eq!(lb.pending().0, 4096);
        assert_eq!(lb.buffered() as u64, end - 4096);
    }
}
