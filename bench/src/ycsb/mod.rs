//! `corekv-bench run`: YCSB workloads A-F (and custom mixes) against corekv
//! through the SDK and against any Redis-protocol server, closed or open
//! loop, with HDR histograms per operation, a per-second timeline, and text,
//! JSON and HTML reports.
//!
//! - [`generator`]: key and value-size distributions (uniform, zipfian,
//!   latest, hotspot).
//! - [`workload`]: the operation mixes.
//! - [`target`]: what is measured (an SDK client, or a RESP connection pool)
//!   and how each operation maps onto it.
//! - [`driver`]: the load phase, closed loop and open loop, and the recorder.
//! - [`report`]: the JSON document, the text summary and the ratios.
//! - [`html`]: the HTML page with inline SVG plots.
//! - [`spawn`]: starting corekv nodes, a local cluster and redis-server.

pub mod driver;
pub mod generator;
pub mod html;
pub mod report;
pub mod resp;
pub mod spawn;
pub mod target;
pub mod workload;

use std::time::Duration;

use corekv_net::client::ClientError;

/// What can go wrong in a benchmark run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed RESP reply.
    #[error("RESP protocol error: {0}")]
    Resp(String),
    /// A RESP error reply (`-ERR ...`).
    #[error("server error: {0}")]
    RespServer(String),
    /// A RESP command got no answer in time.
    #[error("no answer within {after:?}")]
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// An SDK error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A bad flag, target or workload.
    #[error("{0}")]
    Config(String),
    /// A server process could not be started or did not become ready.
    #[error("{0}")]
    Spawn(String),
    /// A JSON report could not be written or read.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The load generator's own machinery failed (a task panicked, a
    /// runtime could not start).
    #[error("load generator: {0}")]
    Internal(String),
}

impl Error {
    /// A short, stable name for the kind of a failed operation, the key of
    /// "errors by kind".
    pub fn kind(&self) -> String {
        match self {
            Error::Client(e) => crate::latency::error_kind(e),
            Error::Io { .. } => "io".to_owned(),
            Error::Resp(_) => "protocol".to_owned(),
            Error::RespServer(m) => format!("server_{}", m.split_whitespace().next().unwrap_or("ERR")),
            Error::Timeout { .. } => "timeout".to_owned(),
            _ => "other".to_owned(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
