//! The byte-level helpers the record and context codecs share. Decoding goes
//! through the crate's one strict reader (`crate::codec`): shortest-form
//! varints and no trailing bytes, so every byte string a decoder accepts is
//! the one canonical encoding of what it decodes to, which is what lets a
//! digest of the bytes stand for the state.

pub(crate) use corekv_engine::format::put_varint;

pub(crate) use crate::codec::Reader;

/// A reader of `buf`, which holds one `what` (`"record"`, `"context"`);
/// its errors are [`crate::Error::VersionDecode`].
pub(crate) fn reader<'a>(buf: &'a [u8], what: &'static str) -> Reader<'a> {
    Reader::of(crate::codec::Format::Versions, buf, what)
}

/// Appends a varint length and the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}
