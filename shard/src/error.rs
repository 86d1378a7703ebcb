//! The shard crate's error type.
//!
//! A configuration error names the key (as `section.key`), the bad value and
//! where it came from, so an operator can fix the right line of the right file
//! or the right environment variable without reading code.

use std::fmt;
use std::path::PathBuf;

use crate::versioning::{Actor, ConflictMode};

/// Result alias for the shard crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a configuration value came from.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// The built-in default.
    Default,
    /// A TOML configuration file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// A value derived from an io-properties file (`corekv tune`).
    IoProperties(PathBuf),
    /// A `section.key=value` override (command line).
    Override,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::Default => f.write_str("the defaults"),
            ConfigOrigin::File(path) => write!(f, "file {}", path.display()),
            ConfigOrigin::Env(name) => write!(f, "environment variable {name}"),
            ConfigOrigin::IoProperties(path) => write!(f, "io-properties file {}", path.display()),
            ConfigOrigin::Override => f.write_str("a command-line override"),
        }
    }
}

/// Everything the shard crate can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("configuration file {path} is not valid TOML: {message}")]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (it carries line and column).
        message: String,
    },
    /// A key that the configuration does not have.
    #[error("unknown configuration key `{key}` in {origin}")]
    UnknownKey {
        /// The key as written (`section.key`, or `section` for an unknown section).
        key: String,
        /// Where it came from.
        origin: ConfigOrigin,
    },
    /// A value that does not parse or is out of range.
    #[error("invalid value `{value}` for `{key}` in {origin}: {reason}")]
    InvalidValue {
        /// The key (`section.key`).
        key: String,
        /// The value as written.
        value: String,
        /// What was wrong.
        reason: String,
        /// Where it came from.
        origin: ConfigOrigin,
    },
    /// An override that is not of the form `section.key=value`.
    #[error("malformed override `{item}`: expected section.key=value")]
    MalformedOverride {
        /// The override as given.
        item: String,
    },
    /// Two values that are each valid but not together.
    #[error("`{key}` conflicts with `{other}`: {reason}")]
    Conflict {
        /// The key reported first.
        key: String,
        /// The key it conflicts with.
        other: String,
        /// Why.
        reason: String,
    },
    /// The io-properties file (`storage.io_properties`, or
    /// `<data_dir>/io-properties.toml`) could not be used.
    #[error("{reason} (set storage.io_properties = \"off\" to start without it)")]
    IoProperties {
        /// The file.
        path: PathBuf,
        /// What was wrong, naming the file.
        reason: String,
    },
    /// A security file (`security.cluster_secret_file`,
    /// `security.users_file`) could not be used.
    #[error("{what} {path}: {reason}")]
    SecurityFile {
        /// Which setting named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong (never the secret itself).
        reason: String,
    },
    /// A password could not be hashed.
    #[error("cannot hash the password: {reason}")]
    PasswordHash {
        /// The hasher's message.
        reason: String,
    },
    /// A ring was built without nodes.
    #[error("the ring has no nodes")]
    EmptyRing,
    /// A ring was asked for zero vnodes per node.
    #[error("vnodes per node must be at least 1")]
    ZeroVnodes,
    /// Two nodes share an id.
    #[error("node id `{id}` appears twice")]
    DuplicateNode {
        /// The id.
        id: String,
    },
    /// A node carries an explicit token list that is empty or too long.
    #[error("node `{id}` carries {count} tokens; 1..={max} are allowed")]
    TokenCount {
        /// The node.
        id: String,
        /// How many tokens it carries.
        count: usize,
        /// The most a node may carry.
        max: usize,
    },
    /// A node carries the same token twice (its two vnodes would split nothing).
    #[error("node `{id}` carries token {token} twice")]
    DuplicateToken {
        /// The node.
        id: String,
        /// The repeated token.
        token: u64,
    },

    /// A remote HLC timestamp further ahead of the local clock than allowed:
    /// the remote node's clock is wrong, and taking its time would carry the
    /// error into ours.
    #[error("remote clock at {remote_ms} ms is more than {max_drift_ms} ms ahead of the local clock at {local_ms} ms")]
    ClockDrift {
        /// The remote timestamp's physical part (ms since the Unix epoch).
        remote_ms: u64,
        /// The local physical time.
        local_ms: u64,
        /// The configured maximum drift.
        max_drift_ms: u64,
    },
    /// A causal put refused because it would leave too many siblings; the
    /// client resolves by reading the key and writing back with its context.
    #[error("the put would leave {siblings} siblings (limit {max}): read the key and write back with its context")]
    TooManySiblings {
        /// Siblings the put would have left.
        siblings: usize,
        /// The limit.
        max: usize,
    },
    /// A version counter would pass `u64::MAX` (only a forged context gets there).
    #[error("the version counter of actor {actor} would overflow")]
    CounterOverflow {
        /// The actor whose counter it is.
        actor: Actor,
    },
    /// Version bytes (a stored record or a client's context) that do not decode.
    #[error("cannot decode {what} at offset {offset}: {reason}")]
    VersionDecode {
        /// What was being decoded (`record`, `context`).
        what: &'static str,
        /// Offset in the decoded bytes.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// Records of two conflict modes were merged; a keyspace's mode is fixed,
    /// so one of them is corrupt or misfiled.
    #[error("cannot merge a {left} record with a {right} record")]
    ModeMismatch {
        /// The first record's mode.
        left: ConflictMode,
        /// The second record's mode.
        right: ConflictMode,
    },
    /// Version limits that do not fit together.
    #[error("invalid version limits (max_siblings {max_siblings}, max_entries {max_entries}): {reason}")]
    InvalidVersionLimits {
        /// The sibling limit asked for.
        max_siblings: usize,
        /// The clock entry limit asked for.
        max_entries: usize,
        /// What was wrong.
        reason: &'static str,
    },

    /// The runtime could not start, serve or stop.
    #[error("{what}: {reason}")]
    Runtime {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// Too few replicas believed alive to reach the request's consistency
    /// level; nothing was sent, so nothing was written.
    #[error("{op} at {consistency} unavailable: {alive} replica(s) believed alive, {required} required")]
    Unavailable {
        /// The operation (`write`, `read`, `cas`).
        op: &'static str,
        /// The consistency level asked for.
        consistency: crate::coordinator::Consistency,
        /// Replicas (or sloppy fallbacks) that could have answered.
        alive: usize,
        /// Acknowledgements the level needs.
        required: usize,
    },
    /// The deadline passed before enough replicas answered. A write may still
    /// have been applied by the replicas that did answer (and by hint replay
    /// later): the outcome is unknown, not failed.
    #[error("{op} at {consistency} timed out: {acked} replica(s) answered, {required} required")]
    Timeout {
        /// The operation (`write`, `read`, `cas`, `cas (propose)`).
        op: &'static str,
        /// The consistency level asked for.
        consistency: crate::coordinator::Consistency,
        /// Replicas that answered in time.
        acked: usize,
        /// Answers the level needs.
        required: usize,
    },
    /// Bytes of a format version this build does not read (a file, a
    /// stored value or a peer's message written by a newer build). Refused,
    /// never guessed at.
    #[error("{what} has format version {found}; this build reads version {known}")]
    UnsupportedFormat {
        /// What carried the version (a file's path, `record`, `hint`, a peer).
        what: String,
        /// The version found.
        found: u32,
        /// The version(s) this build reads (`1`, `1 or 2`).
        known: String,
    },
    /// Too many replicas refused the write (a full disk, a fenced node) or
    /// could not be reached for the level to be met, so the client is told
    /// before the deadline. The write may still have applied on the
    /// replicas that acknowledged (and reaches the others through hints):
    /// the outcome is unknown, as after a timeout.
    #[error("{op} at {consistency} failed: {refused} replica(s) refused it or could not be reached, {acked} acknowledged, {required} required (it may still apply)")]
    Refused {
        /// The operation (`write`).
        op: &'static str,
        /// The consistency level asked for.
        consistency: crate::coordinator::Consistency,
        /// Replicas that acknowledged.
        acked: usize,
        /// Replicas that refused or could not be reached.
        refused: usize,
        /// Acknowledgements the level needs.
        required: usize,
    },
    /// Replication bytes (a stored hint or Paxos state) that do not decode.
    #[error("cannot decode {what} at offset {offset}: {reason}")]
    ReplicationDecode {
        /// What was being decoded (`hint`, `paxos state`).
        what: &'static str,
        /// Offset in the decoded bytes.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// The hint store is at its bound; the write is still repaired by
    /// anti-entropy, but no hint keeps it for `target`.
    #[error("hint store full ({pending} pending, limit {max}): no hint kept for {target}")]
    HintsFull {
        /// The node the hint was for.
        target: crate::topology::NodeId,
        /// Hints pending.
        pending: usize,
        /// The limit.
        max: usize,
    },
    /// A value over a size limit (a hint's key or record, a CAS value).
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// Gossip bytes from a peer that do not decode (the payload of a GOSSIP
    /// frame): the message is dropped, nothing of it is merged.
    #[error("cannot decode {what} at offset {offset}: {reason}")]
    GossipDecode {
        /// What was being decoded (`gossip message`).
        what: &'static str,
        /// Offset in the decoded bytes.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },

    /// A node-to-node request failed without an answer: the address is not
    /// `ip:port`, the connect failed (or failed recently, within the
    /// reconnect backoff), the connection broke or the peer sent bytes that
    /// do not decode. Every request in flight on the connection fails with
    /// it; whether a write it carried was applied is unknown.
    #[error("peer {addr}: {reason}")]
    Peer {
        /// The peer's `ip:port`.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// A node-to-node request got no answer in time. The request may still
    /// be applied by the peer: the outcome is unknown, not failed.
    #[error("peer {addr} did not answer within {after_ms} ms")]
    PeerTimeout {
        /// The peer's `ip:port`.
        addr: String,
        /// The timeout that passed.
        after_ms: u64,
    },
}
