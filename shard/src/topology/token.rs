//! Key -> token: the rules live in `corekv_net::token` so the client SDK routes
//! with exactly the code the node uses.

pub use corekv_net::token::{hash_part, token_of, Token};
