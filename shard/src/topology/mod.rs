//! Where a key lives: key -> token -> vnode -> node (and replicas) -> core.
//!
//! All of it is pure, deterministic code: every node that knows the same set of
//! nodes computes the same ring, so no token assignment has to be agreed on.

mod node;
mod ring;
mod token;

pub use node::{Node, NodeId, NodeStatus};
pub use ring::{core_of_vnode, Ring, Route, Vnode};
pub use token::{hash_part, token_of, Token};
