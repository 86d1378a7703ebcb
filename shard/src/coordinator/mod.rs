//! The coordinator: any node can coordinate a request for any key.
//!
//! Each request is a state machine without I/O: created from the request and
//! the replica plan, fed acknowledgements, answers and ticks, returning what
//! to send, what to answer and what to keep as hints. The server and the
//! deterministic simulator drive the same code.
//!
//! - [`WriteOp`]: writes go to all replicas; the client is answered after
//!   `W` durable acks; replicas without a copy get hints; a sloppy quorum
//!   may count fallback nodes holding hints.
//! - [`ReadOp`]: reads ask every live replica, merge with the version join,
//!   answer after `R`, and read-repair stale replicas.
//! - [`CasOp`] and [`Acceptor`]: cluster-wide compare-and-set, one Paxos
//!   register per key among its replicas.
//!
//! In `causal` keyspaces a write's new state is made by a replica of the key
//! (the coordinator's own update of the version vector set names a dot of
//! its own, and only a node holding every dot it issued for the key may do
//! that), so a coordinator that is not a replica forwards the write to one.

mod consistency;
mod mutation;
mod paxos;
mod plan;
mod read;
mod write;

pub use consistency::Consistency;
pub use mutation::{Mutation, Versioned};
pub use paxos::{
    Acceptor, Ballot, BallotClock, CasCommand, CasOp, CasOutcome, CasOutput, CasRequest, CasValue, PaxosMsg,
    PaxosReply, MAX_CAS_VALUE,
};
pub use plan::{Replica, ReplicaPlan};
pub use read::{ReadOp, ReadOutput, ReadReply, ReadRequest};
pub use write::{WriteAck, WriteOp, WriteOutput, WriteRequest};

/// A request's id, unique among its coordinator's requests in flight.
pub type RequestId = u64;

/// Milliseconds on the driver's clock (wall clock in the server, virtual
/// time in the simulator).
pub type Millis = u64;
