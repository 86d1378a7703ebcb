//! corekv's per-core LSM storage engine.
//!
//! One [`Engine`] per CPU core: its own WAL, memtables, SSTables, block cache
//! and compaction. It is `!Send` by construction (it lives on one glommio
//! executor), so nothing in it needs a lock. See docs/format-wal.md and
//! docs/format-sstable.md for the bytes on disk.

pub mod cache;
pub mod error;
pub mod filter;
pub mod format;
pub mod io;
pub mod sstable;

pub use error::{Error, Result};
