//! corekv's per-core LSM storage engine.
//!
//! One [`Engine`] per CPU core: its own WAL, memtables, SSTables, block cache,
//! row cache and compaction. It is `!Send` by construction (it lives on one glommio
//! executor), so nothing in it needs a lock. See docs/format-wal.md and
//! docs/format-sstable.md for the bytes on disk.

pub mod cache;
pub mod compaction;
pub mod engine;
pub mod error;
pub mod filter;
pub mod format;
pub mod io;
pub mod iter;
pub mod log;
mod lru;
pub mod manifest;
pub mod memtable;
pub mod notify;
pub mod options;
mod recent;
pub mod rowcache;
pub mod sstable;
pub mod version;
pub mod wal;

pub use engine::{Cursor, Engine, Health, Record, ScanOptions, ScanPage, StagedWrite, Stats};
pub use error::{Error, Result};
pub use format::{Entry, Kind, SeqNo, Token, WriteBatch};
pub use io::Fs;
pub use options::{CompactionFilter, Limits, Options, TableReads};
pub use rowcache::RowCacheStats;
pub use wal::Durability;
