//! Where a key lives: key -> token -> vnode -> node (and replicas) -> core.
//!
//! All of it is pure, deterministic code: every node that knows the same set of
//! nodes (with their tokens, gossiped) computes the same ring. A joining node
//! picks its own tokens with [`allocate_tokens`]; nodes without a token list
//! fall back to hashed tokens, which need no agreement at all.

mod allocate;
mod node;
mod ring;
mod token;

pub use allocate::{allocate_tokens, evenly_spaced_tokens};
pub use node::{Node, NodeId, NodeStatus};
pub use ring::{core_of_vnode, Ring, Route, Vnode};
pub use token::{hash_part, token_of, Token};
