//! Versions: how concurrent writes of one key are kept apart and merged.
//!
//! Each keyspace picks a [`ConflictMode`]:
//!
//! - `causal` (the default): a key's state is a dotted version vector set
//!   ([`Dvv`]). Concurrent writes are kept as siblings and a read returns them
//!   all with a [`Context`]; a put that carries the context it read supersedes
//!   exactly what it saw. No acknowledged write is lost silently: each is a
//!   sibling until a write whose context covered it replaces it.
//! - `lww`: a key's state is an [`LwwRegister`] stamped by the coordinator's
//!   hybrid logical clock ([`Hlc`]); the newest wins. Of two concurrent writes
//!   one is lost, and which one depends on clock sync.
//!
//! Bounds ([`Limits`]): a put that would leave too many siblings is refused
//! ([`crate::Error::TooManySiblings`]); clock entries beyond the bound are
//! pruned, which can only turn a superseded version back into a sibling, never
//! drop one.
//!
//! A [`Record`] is what the replica stores for a key; its versioned binary
//! format, the bounds and the guarantees are in `docs/versions.md`. All of it
//! is pure code: physical time is passed in, so the server and the simulator
//! run the same code.

mod actor;
mod codec;
mod context;
mod dvv;
mod hlc;
mod keyspace;
mod lww;
mod record;
mod value;

#[cfg(test)]
mod tests;

pub use actor::{Actor, Dot};
pub use context::Context;
pub use dvv::{Dvv, Limits};
pub use hlc::{Hlc, Timestamp};
pub use keyspace::{ConflictMode, KeyspaceConfig};
pub use lww::LwwRegister;
pub use record::Record;
pub use value::Value;
