//! Replication beyond the request path: hinted handoff ([`hints`]) and
//! anti-entropy Merkle trees ([`merkle`]). Both are state machines or pure
//! functions without I/O, driven by the server and by the simulator.

pub mod hints;
pub mod merkle;

pub use hints::{Hint, HintConfig, HintId, HintMetrics, HintStore, HintTick};
pub use merkle::{reconcile, Exchange, MerkleBuilder, MerkleTree, TokenRange};
