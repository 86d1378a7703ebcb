//! Binary protocol framing: the fixed header, the receive-side decoder and the
//! frame encoder.
//!
//! ## Format
//!
//! Every frame is a 22-byte header followed by `body_len` body bytes. All
//! integers are little-endian.
//!
//! ```text
//! offset size field
//!      0    2 magic       0x4B43 (the bytes "CK")
//!      2    1 version     PROTOCOL_VERSION (major; a peer refuses any other)
//!      3    1 opcode      client 0x01-0x3F, replication 0x40-0x7F,
//!                         streaming 0x80-0xBF, gossip 0xC0-0xFF
//!      4    2 flags       bit 0 response, bit 1 error, bits 2-15 reserved (zero)
//!      6    8 request_id  echoed by the response
//!     14    4 body_len    bytes of body after the header
//!     18    4 header_crc  crc32c of bytes 0..18
//! ```
//!
//! Magic and version sit at fixed offsets in every version, so a peer can
//! always tell who is talking and refuse a version it does not speak with a
//! clear error rather than misparse the rest.

use crate::error::FrameError;

/// The protocol magic: the bytes `C`, `K` read as a little-endian u16.
pub const MAGIC: u16 = 0x4B43;
/// The protocol major version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 22;
/// Default upper bound on a frame body (16 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// Which subsystem an opcode belongs to (by range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpcodeClass {
    /// 0x00: never assigned, so a zeroed buffer is never a valid message.
    Invalid,
    /// 0x01-0x3F: client requests and responses.
    Client,
    /// 0x40-0x7F: replica-to-replica reads and writes.
    Replication,
    /// 0x80-0xBF: range streaming (bootstrap, repair).
    Streaming,
    /// 0xC0-0xFF: membership gossip.
    Gossip,
}

impl OpcodeClass {
    /// The class of an opcode byte.
    pub fn of(opcode: u8) -> OpcodeClass {
        match opcode {
            0x00 => OpcodeClass::Invalid,
            0x01..=0x3F => OpcodeClass::Client,
            0x40..=0x7F => OpcodeClass::Replication,
            0x80..=0xBF => OpcodeClass::Streaming,
            _ => OpcodeClass::Gossip,
        }
    }
}

/// The header flags field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// Set on every response; clear on requests.
    pub const RESPONSE: Flags = Flags(1 << 0);
    /// Set on a response that reports an error (ERROR body).
    pub const ERROR: Flags = Flags(1 << 1);
    /// Bits this version does not define; a sender leaves them zero and a
    /// receiver refuses a frame that sets one, so a later version can give
    /// them meaning without an old peer silently ignoring it.
    pub const RESERVED_MASK: u16 = !0b11;

    /// True if every bit of `other` is set.
    #[inline]
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both flag sets.
    #[inline]
    #[must_use]
    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// True if this frame is a response.
    #[inline]
    pub fn is_response(self) -> bool {
        self.contains(Flags::RESPONSE)
    }

    /// True if this frame reports an error.
    #[inline]
    pub fn is_error(self) -> bool {
        self.contains(Flags::ERROR)
    }
}

/// A decoded (and verified) frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The message type.
    pub opcode: u8,
    /// Response / error flags.
    pub flags: Flags,
    /// Correlates a response with its request; chosen by the requester.
    pub request_id: u64,
    /// Length of the body that follows the header.
    pub body_len: u32,
}

impl FrameHeader {
    /// Decodes a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` if `buf` is a valid prefix but too short, and
    /// `Ok(Some((header, frame_len)))` where `frame_len` is the whole frame's
    /// length (header + body), the number of bytes to wait for before the body
    /// is complete. Magic and version are checked as soon as their bytes are
    /// present, so garbage is refused early; `body_len` is checked against
    /// `max_frame` before anything trusts it.
    pub fn decode(buf: &[u8], max_frame: u32) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        if let Some(m) = buf.get(0..2) {
            let found = u16::from_le_bytes([m[0], m[1]]);
            if found != MAGIC {
                return Err(FrameError::BadMagic { found, expected: MAGIC });
            }
        }
        if let Some(&v) = buf.get(2) {
            if v != PROTOCOL_VERSION {
                return Err(FrameError::UnsupportedVersion {
                    found: v,
                    supported: PROTOCOL_VERSION,
                });
            }
        }
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut a = [0u8; HEADER_LEN];
        a.copy_from_slice(h);
        let expected = u32::from_le_bytes([a[18], a[19], a[20], a[21]]);
        let got = crc32c::crc32c(&a[..18]);
        if expected != got {
            return Err(FrameError::HeaderChecksum { expected, got });
        }
        let flags = u16::from_le_bytes([a[4], a[5]]);
        if flags & Flags::RESERVED_MASK != 0 {
            return Err(FrameError::ReservedFlags { flags });
        }
        let body_len = u32::from_le_bytes([a[14], a[15], a[16], a[17]]);
        if body_len > max_frame {
            return Err(FrameError::FrameTooLarge {
                len: body_len.into(),
                max: max_frame.into(),
            });
        }
        let header = FrameHeader {
            opcode: a[3],
            flags: Flags(flags),
            request_id: u64::from_le_bytes([a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]]),
            body_len,
        };
        // u32 fits in usize on every platform we build for (64-bit only).
        Ok(Some((header, HEADER_LEN + body_len as usize)))
    }

    /// The 22 header bytes, checksum included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut a = [0u8; HEADER_LEN];
        a[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        a[2] = PROTOCOL_VERSION;
        a[3] = self.opcode;
        a[4..6].copy_from_slice(&self.flags.0.to_le_bytes());
        a[6..14].copy_from_slice(&self.request_id.to_le_bytes());
        a[14..18].copy_from_slice(&self.body_len.to_le_bytes());
        let crc = crc32c::crc32c(&a[..18]);
        a[18..22].copy_from_slice(&crc.to_le_bytes());
        a
    }

    /// Appends the header bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// One complete frame borrowing its body from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The verified header.
    pub header: FrameHeader,
    /// Exactly `header.body_len` bytes.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Decodes one complete frame from the front of `buf`; `Ok(None)` if more
    /// bytes are needed. The `usize` is the number of bytes the frame used.
    pub fn decode(buf: &'a [u8], max_frame: u32) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        let Some((header, len)) = FrameHeader::decode(buf, max_frame)? else {
            return Ok(None);
        };
        let Some(body) = buf.get(HEADER_LEN..len) else {
            return Ok(None);
        };
        Ok(Some((Frame { header, body }, len)))
    }
}

/// Appends a whole frame to `out`: a header with the right body length and
/// checksum, then whatever `body` writes.
///
/// The header is written first with a placeholder and patched after the body,
/// so the body is encoded once, straight into `out`. If the body exceeds
/// `u32::MAX` bytes, `out` is restored and `FrameTooLarge` returned.
pub fn encode_frame(
    out: &mut Vec<u8>,
    opcode: u8,
    flags: Flags,
    request_id: u64,
    body: impl FnOnce(&mut Vec<u8>),
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    body(out);
    let body_len = out.len() - start - HEADER_LEN;
    let Ok(body_len) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(FrameError::FrameTooLarge {
            len: body_len as u64,
            max: u32::MAX.into(),
        });
    };
    let header = FrameHeader {
        opcode,
        flags,
        request_id,
        body_len,
    }
    .to_bytes();
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    // Pairs with the receiver's check: what we send must pass it (reserved
    // flags aside, which only tests forge on purpose).
    debug_assert!(!matches!(
        FrameHeader::decode(&out[start..], u32::MAX),
        Err(FrameError::HeaderChecksum { .. })
    ));
    Ok(())
}

/// Splits a growing receive buffer into frames.
///
/// Bytes arrive with [`FrameDecoder::feed`] (or are written into
/// [`FrameDecoder::spare`] and committed with [`FrameDecoder::commit`]); each
/// [`FrameDecoder::next_frame`] yields one frame borrowing from the buffer, so
/// the caller must finish with it before feeding more. The buffer grows only
/// as bytes actually arrive, never from an announced length. After a fatal
/// error the decoder stays failed: the stream has lost its framing.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Initialized storage: bytes `start..end` are received and unreturned;
    /// `end..` is room for the next read. It is zeroed once when it grows, not
    /// per read, so a connection of small requests does not memset a read
    /// buffer per request.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: u32,
    failed: Option<FrameError>,
    /// Length of the region `spare` handed out and `commit` has not settled.
    pending: usize,
}

/// Above this, an empty decoder gives its storage back (one large frame must
/// not pin megabytes per idle connection).
const KEEP_BYTES: usize = 1 << 20;

impl FrameDecoder {
    /// A decoder refusing bodies longer than `max_frame` bytes.
    pub fn new(max_frame: u32) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame,
            failed: None,
            pending: 0,
        }
    }

    /// Drops the bytes of frames already returned. Called before new bytes
    /// land, when no frame can still borrow them; it moves only the tail of an
    /// incomplete frame.
    fn compact(&mut self) {
        self.commit(0);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > KEEP_BYTES {
                self.buf = Vec::new();
            }
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Room for `min` more bytes after `end`.
    fn reserve(&mut self, min: usize) {
        let want = self.end + min;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// A writable region of at least `min` bytes at the end of the buffer,
    /// for a read straight into it; follow with [`FrameDecoder::commit`]. Its
    /// contents are unspecified (stale bytes from earlier reads).
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        self.compact();
        self.reserve(min);
        self.pending = self.buf.len() - self.end;
        &mut self.buf[self.end..]
    }

    /// Keeps the first `n` bytes of the region the last
    /// [`FrameDecoder::spare`] returned and forgets the rest. Without a
    /// commit, the region is forgotten (as if `commit(0)`) by the next call.
    pub fn commit(&mut self, n: usize) {
        self.end += n.min(self.pending);
        self.pending = 0;
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.commit(0);
        let rest = &self.buf[self.start..self.end];
        match FrameHeader::decode(rest, self.max_frame) {
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
            Ok(Some((header, len))) if rest.len() >= len => {
                let at = self.start;
                self.start += len;
                Ok(Some(Frame {
                    header,
                    body: &self.buf[at + HEADER_LEN..at + len],
                }))
            }
            Ok(_) => Ok(None),
        }
    }
}
