//! Compaction: merging SSTables to drop overwritten versions, expired values
//! and old tombstones, and to keep reads touching few files.
//!
//! [`policy`] decides *what* to compact (pure code, no I/O); the runner that
//! reads the inputs and writes the outputs lives beside it and calls the policy
//! with a snapshot of the levels.

pub mod policy;
