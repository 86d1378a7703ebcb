//! The shard crate's error type.
//!
//! A configuration error names the key (as `section.key`), the bad value and
//! where it came from, so an operator can fix the right line of the right file
//! or the right environment variable without reading code.

use std::fmt;
use std::path::PathBuf;

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
    /// A `section.key=value` override (command line).
    Override,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::Default => f.write_str("the defaults"),
            ConfigOrigin::File(path) => write!(f, "file {}", path.display()),
            ConfigOrigin::Env(name) => write!(f, "environment variable {name}"),
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

    /// The runtime could not start, serve or stop.
    #[error("{what}: {reason}")]
    Runtime {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
}
