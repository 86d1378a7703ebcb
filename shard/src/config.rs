//! The node's configuration.
//!
//! Four layers, each overriding the one before: the built-in defaults, a TOML
//! file, environment variables, then `section.key=value` overrides (the CLI's
//! `--set`). Every layer goes through the same per-key parser, so a bad value is
//! reported the same way wherever it came from: the key, the value, the reason
//! and the origin ([`Error::InvalidValue`]). Unknown keys in the file or in an
//! override are errors ([`Error::UnknownKey`]), because a misspelt key silently
//! ignored is a setting the operator believes is applied and is not.
//!
//! The node prints the effective configuration at start ([`Config`]'s
//! `Display` is TOML that [`Config::apply_toml`] reads back).
//!
//! `corekv serve` adds one more layer, between the defaults and the file:
//! values derived from the io-properties file that `corekv tune` measured
//! ([`Config::load_tuned`], `storage.io_properties`, docs/io-properties.md).
//! An explicit setting in any layer wins over a derived value, and the
//! printed configuration marks each derived value and where it came from
//! ([`Config::display_tuned`]).
//!
//! ## Keys
//!
//! Each key `section.key` can be set by the environment variable
//! `COREKV_<SECTION>_<KEY>` in upper case (for example `ports.shard_base` by
//! `COREKV_PORTS_SHARD_BASE`). Other `COREKV_*` variables are ignored, so
//! tools may use the prefix for their own settings.
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `node.id` | string | `corekv-1` | stable node identity; vnode tokens derive from it |
//! | `node.data_dir` | path | `./corekv-data` | where WAL, SSTables and hints live |
//! | `node.listen` | string | `0.0.0.0` | address the listeners bind |
//! | `node.cores` | integer 1..=1024 | all available | cores (one executor each) |
//! | `node.first_cpu` | integer 0..=1023 | 0 | core `c` runs pinned on CPU `(first_cpu + c) mod CPUs`: several nodes on one machine (tests, benchmarks) spread over the CPUs instead of all taking CPU 0 |
//! | `node.spin_before_park_us` | integer 0..=10000 | 0 | an idle core polls this long before sleeping: lower cross-core latency for CPU that other processes on the machine cannot use |
//! | `node.io_depth` | integer 8..=32768 | 128 (derived from io-properties when present) | io_uring submission ring depth of each core: how many I/Os (disk and socket) a core submits at once |
//! | `cluster.dc` | string | `dc1` | data center |
//! | `cluster.rack` | string | `""` | rack; empty means racks are not configured |
//! | `cluster.vnodes` | integer 1..=4096 | 256 | vnodes per node |
//! | `cluster.replication_factor` | integer 1..=15 | 3 | replicas per key (N); only used in cluster mode |
//! | `cluster.seeds` | string | `""` | comma-separated `host:port` client ports of seed nodes; empty = single-node mode (no replication) |
//! | `cluster.conflict_mode` | `causal` or `lww` | `causal` | concurrent writes kept as siblings (version vectors), or newest HLC timestamp wins |
//! | `cluster.gossip_interval_ms` | integer 10..=60000 | 1000 | gossip round interval |
//! | `cluster.phi_threshold` | integer 1..=64 | 8 | phi-accrual conviction threshold |
//! | `cluster.hinted_handoff` | `true` or `false` | `true` | keep durable hints for replicas that miss a write |
//! | `cluster.hint_window_ms` | integer | 3 hours | hints older than this are dropped (anti-entropy repair restores those replicas) |
//! | `cluster.tombstone_grace_ms` | integer | 10 days | a deleted (or fully expired) key's record is purged this long after its last deletion or expiry; run `corekv repair` on every node more often than this, or a replica that missed a delete can bring the value back (README, "Deletes and the grace period") |
//! | `cluster.request_timeout_ms` | integer 1..=600000 | 2000 | a coordinated request's deadline when the client sets none |
//! | `cluster.auto_bootstrap` | `true` or `false` | `true` | a node that is not a seed and has never joined bootstraps into the cluster as soon as it starts; `false`: it waits, gossiping with no one and refusing client requests, until an operator adds it (`POST /api/v1/admin/cluster/nodes` on a member, docs/http.md) |
//! | `cluster.stream_bytes_per_sec` | integer >= 1024 | 64 MiB | throttle of range streaming (join, decommission, repair), per node |
//! | `cluster.resp_consistency` | `one`, `quorum`, `all` or `local_quorum` | `quorum` | consistency of requests on the RESP port, which has no way to say |
//! | `cluster.resp_sloppy_quorum` | `true` or `false` | `false` | RESP writes allow a sloppy quorum: a down replica's copy goes to a fallback node as a hint, and its ack counts (README, "Consistency in a cluster") |
//! | `ports.client` | port | 7380 | client protocol, any core |
//! | `ports.shard_base` | port | 7400 | shard-aware client port of core 0; core `c` listens on base + c |
//! | `ports.resp` | port | 6380 | RESP (Redis protocol) |
//! | `ports.http` | port, or 0 | 8380 | HTTP (JSON API, admin routes, `/metrics`; docs/http.md); 0 = no HTTP listener |
//! | `storage.memtable_bytes` | integer >= 1 MiB | 256 MiB | memtable budget per node, split across cores (also bounds the WAL replayed at start) |
//! | `storage.memtable_jitter_pct` | integer 0..=90 | 40 | each memtable freezes at a size drawn from [budget x (1 - pct/100), budget], anew per memtable and different per node: replicas of the same writes then flush at different moments, so a quorum write rarely waits on a flushing node. 0 = exactly the budget |
//! | `storage.block_cache_bytes` | integer | a quarter of RAM (256 MiB if unknown) | block cache budget per node, split across cores; 0 disables. Table reads bypass the page cache (O_DIRECT), so this is the node's read cache |
//! | `storage.row_cache_bytes` | integer | a sixteenth of RAM (64 MiB if unknown) | row cache budget per node, split across cores; 0 disables. The newest version of recently read keys, in front of the tables: a repeated point read skips the bloom filters, the index and the block search. Filled only by reads that reached the tables; a write drops its key from it |
//! | `storage.retained_memtable_bytes` | integer | 256 MiB | flushed memtables kept, newest first, to answer point reads of recent writes from one hash index over all of them (one probe instead of a table read and, on a block's first read, its decompression); counts the memtables and that index; per node, split across cores; 0 disables |
//! | `storage.cache_on_flush` | `true` or `false` | `true` | put each flushed table's data blocks into the block cache as they are written (recent writes are the likeliest reads; table reads bypass the page cache): in their compressed on-disk form where compression saved a fifth or more (decoded on first read), else decoded; compaction output too, but only compressed blocks and only into free cache room. Costs a copy of every flushed block in fresh memory: on a write-heavy node whose reads are not of recent writes, `false` saves that CPU |
//! | `storage.wal_segment_bytes` | integer 1 MiB..=1 GiB | 64 MiB | size of each preallocated WAL segment file |
//! | `storage.wal_group_commit_us` | integer 0..=100000 | 0 | in `sync` durability, the least time in microseconds from the start of one WAL group commit to the next; writes arriving meanwhile share the next sync. Fewer, larger syncs for up to this much more write latency: worth it on disks where each sync is dear (virtual disks) |
//! | `storage.wal_max_unsynced_bytes` | integer 64 KiB..=1 GiB | 8 MiB (derived from io-properties when present) | in `periodic` durability, WAL bytes buffered before a writer forces a sync: the group-commit batch bound |
//! | `storage.flush_bytes_per_sec` | integer | 0 (derived from io-properties when present) | most bytes per second a memtable flush writes, per node (split across cores); 0 = unlimited. A flat-out flush queues ahead of the WAL's fdatasyncs, and writes wait behind it |
//! | `storage.compaction_bytes_per_sec` | integer | 0 (derived from io-properties when present) | most bytes per second compaction writes, per node (split across cores); 0 = unlimited |
//! | `storage.io_properties` | path, or `off` | `""`: `<data_dir>/io-properties.toml` if it exists | the file `corekv tune` wrote; the node derives the keys marked above from it (docs/io-properties.md). A value set explicitly in any layer wins over a derived one. A path given here must exist |
//! | `storage.durability` | `sync` or `periodic:<ms>` | `sync` | ack after fdatasync, or at once with a WAL sync every `<ms>` (1..=60000) |
//! | `limits.max_key_bytes` | integer 1..=65535 | 1024 | largest key |
//! | `limits.max_value_bytes` | integer >= 1 | 1 MiB | largest value |
//! | `limits.max_frame_bytes` | integer >= 1 KiB | 16 MiB | largest wire frame; must hold a largest key and value |
//! | `limits.max_inflight_per_connection` | integer >= 1 | 128 | requests a connection may have outstanding |
//! | `limits.max_connections_per_core` | integer >= 1 | 1024 | open connections per core |
//! | `limits.http_max_header_bytes` | integer 1 KiB..=1 MiB | 16 KiB | largest HTTP request head (request line and headers); must hold a largest key percent-encoded (3 x `max_key_bytes` + 1 KiB). Larger: 431 |
//! | `limits.http_max_body_bytes` | integer >= 1 KiB | 32 MiB | largest HTTP request body; at least `max_value_bytes`. Larger: 413 |
//! | `limits.http_max_inflight_per_core` | integer >= 1 | 256 | HTTP requests a core serves at once; past that a request is answered 503 at once |
//! | `log.level` | string | `""`: `COREKV_LOG`, else `info` | what is logged: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or comma-separated `target=level` directives (`warn,corekv_shard=debug`) |
//! | `log.format` | `text` or `json` | `text` | log lines as text, or one JSON object per line |
//! | `log.slow_request_ms` | integer | 1000 | a client request (native, RESP, HTTP) that takes longer is logged at WARN with its operation, key length, consistency and duration; 0 = off |
//! | `security.cluster_secret` | string, empty or >= 16 bytes | `""` (none) | the secret every node-to-node connection proves it knows (HMAC challenge-response, docs/protocol.md "Authentication"); a node without it cannot join. Prefer `cluster_secret_file`: the environment and the command line are visible to other local users. Never printed |
//! | `security.cluster_secret_file` | path | `""` (none) | a file holding the cluster secret (trailing whitespace ignored); exclusive with `cluster_secret` |
//! | `security.users_file` | path | `""` (none) | TOML accounts (`corekv hash-password`, shard/src/security.rs); when set, clients must AUTH and each request is checked against the user's per-prefix permissions. In cluster mode it needs the cluster secret |
//! | `tls.cert_file` | path | `""` (TLS off) | the node's certificate chain (PEM, leaf first); with `key_file`, turns TLS on for the listeners in `tls.listeners`. In cluster mode the node also presents it to the nodes it connects to, so it must allow both server and client authentication |
//! | `tls.key_file` | path | `""` | the private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1). Never printed beyond its path |
//! | `tls.ca_file` | path | `""` (none) | certificate authorities (PEM); when set, every TLS client must present a certificate they signed (mutual TLS). Required in cluster mode, where nodes check each other's certificates against it |
//! | `tls.listeners` | comma list of `client`, `shard`, `resp`, `http` | `client,shard,resp,http` | which listeners speak TLS when it is on: the shared client port, the shard-aware ports, the RESP port, the HTTP port (HTTPS). In cluster mode it must include `client` (nodes talk to each other there) |
//! | `tls.server_name` | string | `""` (the peer's IP address) | in cluster mode, the name this node checks other nodes' certificates against; empty: the IP address it connects to, which their certificates must then list |

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::error::{ConfigOrigin, Error, Result};

/// Every configuration key, as `section.key`, in display order.
pub const KEYS: &[&str] = &[
    "node.id",
    "node.data_dir",
    "node.listen",
    "node.cores",
    "node.first_cpu",
    "node.spin_before_park_us",
    "node.io_depth",
    "cluster.dc",
    "cluster.rack",
    "cluster.vnodes",
    "cluster.replication_factor",
    "cluster.seeds",
    "cluster.conflict_mode",
    "cluster.gossip_interval_ms",
    "cluster.phi_threshold",
    "cluster.hinted_handoff",
    "cluster.hint_window_ms",
    "cluster.tombstone_grace_ms",
    "cluster.request_timeout_ms",
    "cluster.resp_consistency",
    "cluster.resp_sloppy_quorum",
    "cluster.stream_bytes_per_sec",
    "cluster.auto_bootstrap",
    "ports.client",
    "ports.shard_base",
    "ports.resp",
    "ports.http",
    "storage.memtable_bytes",
    "storage.memtable_jitter_pct",
    "storage.block_cache_bytes",
    "storage.row_cache_bytes",
    "storage.retained_memtable_bytes",
    "storage.cache_on_flush",
    "storage.wal_segment_bytes",
    "storage.wal_max_unsynced_bytes",
    "storage.wal_group_commit_us",
    "storage.flush_bytes_per_sec",
    "storage.compaction_bytes_per_sec",
    "storage.durability",
    "storage.io_properties",
    "limits.max_key_bytes",
    "limits.max_value_bytes",
    "limits.max_frame_bytes",
    "limits.max_inflight_per_connection",
    "limits.max_connections_per_core",
    "limits.http_max_header_bytes",
    "limits.http_max_body_bytes",
    "limits.http_max_inflight_per_core",
    "log.level",
    "log.format",
    "log.slow_request_ms",
    "security.cluster_secret",
    "security.cluster_secret_file",
    "security.users_file",
    "tls.cert_file",
    "tls.key_file",
    "tls.ca_file",
    "tls.listeners",
    "tls.server_name",
];

/// Keys whose TOML value is a string; all others are integers.
const STRING_KEYS: &[&str] = &[
    "node.id",
    "node.data_dir",
    "node.listen",
    "cluster.dc",
    "cluster.rack",
    "cluster.seeds",
    "cluster.conflict_mode",
    "cluster.hinted_handoff",
    "cluster.resp_consistency",
    "cluster.resp_sloppy_quorum",
    "cluster.auto_bootstrap",
    "storage.cache_on_flush",
    "storage.durability",
    "storage.io_properties",
    "log.level",
    "log.format",
    "security.cluster_secret",
    "security.cluster_secret_file",
    "security.users_file",
    "tls.cert_file",
    "tls.key_file",
    "tls.ca_file",
    "tls.listeners",
    "tls.server_name",
];

/// The io-properties file's name under the data directory, where `corekv
/// tune` writes it and the node looks for it by default.
pub const IO_PROPERTIES_FILE: &str = "io-properties.toml";

/// The largest configuration file read. A real one is a few KiB; the bound
/// keeps a wrong path (`--config /dev/zero`, a log file) from filling memory
/// before the node says what is wrong.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// A value derived from the io-properties file, in the text form
/// [`Config::set`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedValue {
    /// The key (`section.key`).
    pub key: String,
    /// The value, as it would be written in a flag.
    pub value: String,
    /// Which measured figure it came from, shown beside it at start.
    pub reason: String,
}

/// What the node took from its io-properties file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuned {
    /// The file.
    pub path: PathBuf,
    /// Derived values in effect.
    pub applied: Vec<DerivedValue>,
    /// Derived values that an explicit setting replaced.
    pub overridden: Vec<DerivedValue>,
}

/// The upper bound on cores; a limit on everything, and the shard port range
/// must fit below 65536.
const MAX_CORES: u64 = 1024;

/// The node's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `[node]`: identity and placement on the machine.
    pub node: NodeConfig,
    /// `[cluster]`: placement in the cluster.
    pub cluster: ClusterConfig,
    /// `[ports]`: listener ports.
    pub ports: PortsConfig,
    /// `[storage]`: memory budgets and durability.
    pub storage: StorageConfig,
    /// `[limits]`: sizes and counts bounded on every path.
    pub limits: LimitsConfig,
    /// `[log]`: what the node logs and how.
    pub log: LogConfig,
    /// `[security]`: cluster secret and client accounts (off by default).
    pub security: SecurityConfig,
    /// `[tls]`: TLS on the listeners and between nodes (off by default).
    pub tls: TlsConfig,
}

/// `[tls]`. Empty paths mean "off"; TLS is on when `cert_file` and
/// `key_file` are set. The files are read at start (`crate::tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct TlsConfig {
    /// The node's certificate chain (PEM).
    pub cert_file: String,
    /// Its private key (PEM).
    pub key_file: String,
    /// Authorities client certificates must chain to; empty: no client
    /// certificates asked for.
    pub ca_file: String,
    /// Which listeners use TLS.
    pub listeners: TlsListeners,
    /// The name other nodes' certificates are checked against; empty: their IP.
    pub server_name: String,
}

impl TlsConfig {
    /// Whether TLS is on (a certificate and a key are configured).
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty() && !self.key_file.is_empty()
    }

    /// Whether clients must present certificates (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.enabled() && !self.ca_file.is_empty()
    }
}

/// `tls.listeners`: which listeners speak TLS when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsListeners {
    /// The shared client port (`ports.client`), where nodes also reach each other.
    pub client: bool,
    /// The shard-aware ports (`ports.shard_base` + core).
    pub shard: bool,
    /// The RESP port (`ports.resp`).
    pub resp: bool,
    /// The HTTP port (`ports.http`): HTTPS when on.
    pub http: bool,
}

impl Default for TlsListeners {
    fn default() -> Self {
        TlsListeners {
            client: true,
            shard: true,
            resp: true,
            http: true,
        }
    }
}

impl fmt::Display for TlsListeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.client, "client"),
            (self.shard, "shard"),
            (self.resp, "resp"),
            (self.http, "http"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for TlsListeners {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for TlsListeners {
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        let mut l = TlsListeners {
            client: false,
            shard: false,
            resp: false,
            http: false,
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "client" => l.client = true,
                "shard" => l.shard = true,
                "resp" => l.resp = true,
                "http" => l.http = true,
                _ => {
                    return Err(format!(
                        "unknown listener `{name}`: expected `client`, `shard`, `resp` or `http`"
                    ))
                }
            }
        }
        if !(l.client || l.shard || l.resp || l.http) {
            return Err("name at least one of `client`, `shard`, `resp`, `http`".to_owned());
        }
        Ok(l)
    }
}

/// `[security]`. Empty strings mean "off".
#[derive(Clone, PartialEq, Eq, Serialize, Default)]
pub struct SecurityConfig {
    /// The cluster secret itself.
    #[serde(serialize_with = "redacted")]
    pub cluster_secret: String,
    /// A file holding the cluster secret.
    pub cluster_secret_file: String,
    /// The users file.
    pub users_file: String,
}

/// `Debug` leaves the secret out: configurations are logged.
impl fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityConfig")
            .field(
                "cluster_secret",
                &if self.cluster_secret.is_empty() {
                    ""
                } else {
                    "(redacted)"
                },
            )
            .field("cluster_secret_file", &self.cluster_secret_file)
            .field("users_file", &self.users_file)
            .finish()
    }
}

// The effective configuration is printed at start: a set secret shows as
// `(redacted)`, which is shorter than the least a secret may be, so a
// printed configuration fed back as a file fails loudly instead of
// starting a node with the wrong secret.
fn redacted<S: Serializer>(v: &str, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(if v.is_empty() { "" } else { "(redacted)" })
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    /// A level or `target=level` directives; empty: `COREKV_LOG`, else `info`.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Requests slower than this are logged at WARN; 0 = off.
    pub slow_request_ms: u64,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The levels a `log.level` directive may name.
const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Checks `log.level`: empty, or comma-separated `level` / `target=level`
/// directives (the subset of tracing's filter syntax the node documents),
/// so a typo stops the start instead of silently logging nothing.
fn parse_log_level(value: &str) -> std::result::Result<String, String> {
    let value = value.trim();
    for d in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, d),
        };
        if target.is_some_and(|t| t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        {
            return Err(format!(
                "directive `{d}`: a target is a Rust module path (corekv_shard::server)"
            ));
        }
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "directive `{d}`: the level must be one of {}",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(value.to_owned())
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeConfig {
    /// Stable node identity.
    pub id: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Address the listeners bind.
    pub listen: String,
    /// Number of cores (executors).
    pub cores: u64,
    /// CPU of core 0; core `c` runs on `(first_cpu + c) mod CPUs`.
    pub first_cpu: u64,
    /// Microseconds an idle executor polls before it sleeps.
    pub spin_before_park_us: u64,
    /// io_uring submission ring depth of each core.
    pub io_depth: u64,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// Data center.
    pub dc: String,
    /// Rack; empty when racks are not configured.
    pub rack: String,
    /// Vnodes per node.
    pub vnodes: u64,
    /// Replicas per key.
    pub replication_factor: u64,
    /// Client addresses (`host:port`) of seed nodes; empty: single-node mode.
    #[serde(serialize_with = "comma_list")]
    pub seeds: Vec<String>,
    /// `causal` or `lww`.
    pub conflict_mode: ConflictModeSetting,
    /// Gossip round interval.
    pub gossip_interval_ms: u64,
    /// Phi-accrual conviction threshold.
    pub phi_threshold: u64,
    /// Whether coordinators keep hints for replicas that missed a write.
    #[serde(serialize_with = "bool_string")]
    pub hinted_handoff: bool,
    /// How long a hint is kept.
    pub hint_window_ms: u64,
    /// How long a deleted or fully expired record is kept before it is
    /// purged (so repair can spread the deletion first), ms.
    pub tombstone_grace_ms: u64,
    /// Default deadline of a coordinated request.
    pub request_timeout_ms: u64,
    /// Consistency of RESP requests.
    pub resp_consistency: RespConsistency,
    /// Whether RESP writes allow a sloppy quorum.
    #[serde(serialize_with = "bool_string")]
    pub resp_sloppy_quorum: bool,
    /// Range streaming throttle, bytes per second.
    pub stream_bytes_per_sec: u64,
    /// Whether a node that must bootstrap does so at start (else it waits
    /// to be added).
    #[serde(serialize_with = "bool_string")]
    pub auto_bootstrap: bool,
}

/// `cluster.conflict_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictModeSetting {
    /// Version vectors; concurrent writes become siblings.
    Causal,
    /// Hybrid-logical-clock timestamps; the newest write wins.
    Lww,
}

/// `cluster.resp_consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RespConsistency {
    /// One replica.
    One,
    /// A majority of the replicas.
    Quorum,
    /// Every replica.
    All,
    /// A majority of the replicas in this node's data center.
    LocalQuorum,
}

// The file format keeps every non-integer key a string, so `Display` output
// reads back through `apply_toml` unchanged.
fn comma_list<S: Serializer>(v: &[String], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&v.join(","))
}

fn bool_string<S: Serializer>(v: &bool, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn parse_bool(value: &str) -> std::result::Result<bool, String> {
    match value {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected `true` or `false`".to_owned()),
    }
}

fn parse_seeds(value: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                out.push(s.to_owned())
            }
            _ => return Err(format!("seed `{s}` is not host:port")),
        }
    }
    Ok(out)
}

impl ClusterConfig {
    /// Whether the node runs as a member of a cluster (seeds configured).
    pub fn enabled(&self) -> bool {
        !self.seeds.is_empty()
    }
}

/// `[ports]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortsConfig {
    /// Client protocol port (any core answers and forwards).
    pub client: u16,
    /// Shard-aware port of core 0; core `c` listens on `shard_base + c`.
    pub shard_base: u16,
    /// RESP port.
    pub resp: u16,
    /// HTTP port; 0 = none.
    pub http: u16,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageConfig {
    /// Memtable budget for the node, split across cores.
    pub memtable_bytes: u64,
    /// How far below the budget, in percent at most, each memtable's freeze
    /// point is drawn (staggers flushes across replicas).
    pub memtable_jitter_pct: u64,
    /// Block cache budget for the node, split across cores.
    pub block_cache_bytes: u64,
    /// Row cache budget for the node, split across cores.
    pub row_cache_bytes: u64,
    /// Flushed memtables kept for point reads, per node, split across cores.
    pub retained_memtable_bytes: u64,
    /// Fill the block cache with each flushed table's blocks.
    #[serde(serialize_with = "bool_string")]
    pub cache_on_flush: bool,
    /// Size of each WAL segment file.
    pub wal_segment_bytes: u64,
    /// In periodic durability, WAL bytes buffered before a sync is forced.
    pub wal_max_unsynced_bytes: u64,
    /// Least microseconds between the starts of two WAL group commits.
    pub wal_group_commit_us: u64,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Flush write rate per node, bytes/s; 0 = unlimited.
    pub flush_bytes_per_sec: u64,
    /// Compaction write rate per node, bytes/s; 0 = unlimited.
    pub compaction_bytes_per_sec: u64,
    /// The io-properties file: empty for `<data_dir>/io-properties.toml`
    /// when it exists, `off` for none.
    pub io_properties: String,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitsConfig {
    /// Largest key in bytes.
    pub max_key_bytes: u64,
    /// Largest value in bytes.
    pub max_value_bytes: u64,
    /// Largest wire frame in bytes.
    pub max_frame_bytes: u64,
    /// Outstanding requests per connection.
    pub max_inflight_per_connection: u64,
    /// Open connections per core.
    pub max_connections_per_core: u64,
    /// Largest HTTP request head in bytes.
    pub http_max_header_bytes: u64,
    /// Largest HTTP request body in bytes.
    pub http_max_body_bytes: u64,
    /// HTTP requests served at once per core.
    pub http_max_inflight_per_core: u64,
}

/// When a write is acknowledged (mirrors the engine's WAL durability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the WAL record is fdatasynced; nothing acknowledged is lost.
    Sync,
    /// At once; the WAL is synced every `interval_ms`, the window a power loss can lose.
    Periodic {
        /// Sync interval in milliseconds.
        interval_ms: u64,
    },
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Sync => f.write_str("sync"),
            Durability::Periodic { interval_ms } => write!(f, "periodic:{interval_ms}"),
        }
    }
}

impl Serialize for Durability {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "sync" {
            return Ok(Durability::Sync);
        }
        let Some(ms) = s.strip_prefix("periodic:") else {
            return Err("expected `sync` or `periodic:<ms>`".to_owned());
        };
        let interval_ms = parse_int(ms, 1, 60_000)?;
        Ok(Durability::Periodic { interval_ms })
    }
}

impl Default for Config {
    fn default() -> Self {
        // The machine's cores; 1 if the OS will not say, which is safe (slow, not wrong).
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get() as u64)
            .min(MAX_CORES);
        Config {
            node: NodeConfig {
                id: "corekv-1".to_owned(),
                data_dir: PathBuf::from("./corekv-data"),
                listen: "0.0.0.0".to_owned(),
                cores,
                first_cpu: 0,
                spin_before_park_us: 0,
                // glommio's own default.
                io_depth: 128,
            },
            cluster: ClusterConfig {
                dc: "dc1".to_owned(),
                rack: String::new(),
                vnodes: 256,
                replication_factor: 3,
                seeds: Vec::new(),
                conflict_mode: ConflictModeSetting::Causal,
                gossip_interval_ms: 1000,
                phi_threshold: 8,
                hinted_handoff: true,
                hint_window_ms: 3 * 3600 * 1000,
                tombstone_grace_ms: 10 * 24 * 3600 * 1000,
                request_timeout_ms: 2000,
                resp_consistency: RespConsistency::Quorum,
                resp_sloppy_quorum: false,
                stream_bytes_per_sec: 64 << 20,
                auto_bootstrap: true,
            },
            ports: PortsConfig {
                client: 7380,
                shard_base: 7400,
                resp: 6380,
                http: 8380,
            },
            storage: StorageConfig {
                memtable_bytes: 256 << 20,
                memtable_jitter_pct: 40,
                block_cache_bytes: default_block_cache(),
                row_cache_bytes: default_row_cache(),
                // As much as the memtable budget, not a share of RAM: every
                // byte kept is memory the node grows into under writes, and
                // until it stops growing, faulting fresh pages in stalls the
                // core (bench/RESULTS.md: on this project's VM, a 3-node
                // cluster's SET p99 was 190 ms while a sixteenth of RAM, 1.5
                // GiB, filled, and 13 ms with 256 MiB).
                retained_memtable_bytes: 256 << 20,
                cache_on_flush: true,
                wal_segment_bytes: 64 << 20,
                // The engine's own default.
                wal_max_unsynced_bytes: 8 << 20,
                wal_group_commit_us: 0,
                flush_bytes_per_sec: 0,
                compaction_bytes_per_sec: 0,
                durability: Durability::Sync,
                io_properties: String::new(),
            },
            limits: LimitsConfig {
                max_key_bytes: 1024,
                max_value_bytes: 1 << 20,
                max_frame_bytes: 16 << 20,
                max_inflight_per_connection: 128,
                max_connections_per_core: 1024,
                http_max_header_bytes: 16 << 10,
                http_max_body_bytes: 32 << 20,
                http_max_inflight_per_core: 256,
            },
            log: LogConfig {
                level: String::new(),
                format: LogFormat::Text,
                slow_request_ms: 1000,
            },
            security: SecurityConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// Parses a decimal integer in `min..=max`.
/// A quarter of the machine's memory: table reads use O_DIRECT, so the block
/// cache is the only read cache and the node should use the memory a store
/// on this machine is expected to (ScyllaDB takes most of it; a quarter leaves
/// room for memtables, connections and other processes).
fn default_block_cache() -> u64 {
    mem_total().map_or(256 << 20, |b| (b / 4).max(64 << 20))
}

/// A sixteenth of the machine's memory: enough for the hot keys of a
/// point-read workload, small next to the block cache it sits in front of.
fn default_row_cache() -> u64 {
    mem_total().map_or(64 << 20, |b| (b / 16).max(16 << 20))
}

/// MemTotal from /proc/meminfo, in bytes.
fn mem_total() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    })
}

fn parse_int(value: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| "expected a non-negative integer".to_owned())?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

fn parse_port(value: &str) -> std::result::Result<u16, String> {
    // 1..=65535 fits a u16 by construction.
    parse_int(value, 1, u64::from(u16::MAX)).map(|p| p as u16)
}

/// The file's text, refused past [`MAX_CONFIG_FILE_BYTES`] (read that far
/// and no further, so an endless file ends too).
fn read_config_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_FILE_BYTES} bytes; is it a configuration file?"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn non_empty(value: &str) -> std::result::Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(value.to_owned())
}

impl Config {
    /// Defaults, then `file` (if any), then the `COREKV_*` entries of `env`,
    /// then `overrides` (`section.key=value`), then [`Config::validate`].
    ///
    /// `env` is passed in, not read, so tests and the simulator control it;
    /// the binary passes `std::env::vars()`.
    pub fn load<I, S>(file: Option<&Path>, env: I, overrides: &[S]) -> Result<Config>
    where
        I: IntoIterator<Item = (String, String)>,
        S: AsRef<str>,
    {
        let entries = Self::layers(file, env, overrides)?;
        let mut config = Config::default();
        config.apply_entries(&entries)?;
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load`], with values derived from the io-properties file
    /// (see [`Config::io_properties_path`]) as a layer between the defaults
    /// and the file: any key set explicitly, by the file, the environment or
    /// a flag, wins over its derived value.
    ///
    /// `derive` reads the file and returns the derived values; it is passed
    /// in because the file's format and the derivation belong to the tuning
    /// crate, which this crate does not depend on. Its error (a message
    /// naming the file) stops the start: a file that is there but unreadable
    /// or of a newer format is a mistake to fix, not to ignore.
    pub fn load_tuned<I, S, F>(
        file: Option<&Path>,
        env: I,
        overrides: &[S],
        derive: F,
    ) -> Result<(Config, Option<Tuned>)>
    where
        I: IntoIterator<Item = (String, String)>,
        S: AsRef<str>,
        F: FnOnce(&Path) -> std::result::Result<Vec<DerivedValue>, String>,
    {
        let entries = Self::layers(file, env, overrides)?;
        let mut explicit = Config::default();
        explicit.apply_entries(&entries)?;
        let Some(path) = explicit.io_properties_path()? else {
            explicit.validate()?;
            return Ok((explicit, None));
        };
        let derived = derive(&path).map_err(|reason| Error::IoProperties {
            path: path.clone(),
            reason,
        })?;
        let origin = ConfigOrigin::IoProperties(path.clone());
        let mut config = Config::default();
        let mut tuned = Tuned {
            path,
            applied: Vec::new(),
            overridden: Vec::new(),
        };
        for d in derived {
            config.set(&d.key, &d.value, &origin)?;
            if entries.iter().any(|(key, _, _)| *key == d.key) {
                tuned.overridden.push(d);
            } else {
                tuned.applied.push(d);
            }
        }
        config.apply_entries(&entries)?;
        config.validate()?;
        Ok((config, Some(tuned)))
    }

    /// The io-properties file the node reads: `storage.io_properties` when it
    /// names one (it must exist: the operator asked for it), else
    /// `<data_dir>/io-properties.toml` when that exists; none for `off`.
    pub fn io_properties_path(&self) -> Result<Option<PathBuf>> {
        match self.storage.io_properties.as_str() {
            "off" => Ok(None),
            "" => {
                let p = self.node.data_dir.join(IO_PROPERTIES_FILE);
                Ok(p.is_file().then_some(p))
            }
            given => {
                let p = PathBuf::from(given);
                if p.is_file() {
                    return Ok(Some(p));
                }
                Err(Error::IoProperties {
                    reason: format!(
                        "io-properties file {given} (storage.io_properties) does not exist; \
                         write it with `corekv tune --data-dir {} --out {given}`",
                        self.node.data_dir.display()
                    ),
                    path: p,
                })
            }
        }
    }

    /// Every `(key, value, origin)` the file, the environment and the
    /// overrides set, in the order they apply. Collected before anything is
    /// applied so [`Config::load_tuned`] knows which keys were set explicitly.
    fn layers<I, S>(file: Option<&Path>, env: I, overrides: &[S]) -> Result<Vec<(String, String, ConfigOrigin)>>
    where
        I: IntoIterator<Item = (String, String)>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        if let Some(path) = file {
            let text = read_config_file(path).map_err(|source| Error::ConfigRead {
                path: path.to_owned(),
                source,
            })?;
            let origin = ConfigOrigin::File(path.to_owned());
            for (key, value) in Self::toml_entries(&text, path)? {
                out.push((key, value, origin.clone()));
            }
        }
        out.extend(Self::env_entries(env));
        for item in overrides {
            let (key, value) = Self::override_entry(item.as_ref())?;
            out.push((key, value, ConfigOrigin::Override));
        }
        Ok(out)
    }

    fn apply_entries(&mut self, entries: &[(String, String, ConfigOrigin)]) -> Result<()> {
        for (key, value, origin) in entries {
            self.set(key, value, origin)?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, like `Display`, with each value
    /// derived from the io-properties file marked by a comment saying so and
    /// why, and each derived value an explicit setting replaced marked too.
    /// Reads back through [`Config::apply_toml`] (comments are ignored).
    pub fn display_tuned(&self, tuned: Option<&Tuned>) -> String {
        use fmt::Write;
        let text = match toml::to_string(self) {
            Ok(t) => t,
            // Only a data_dir that is not UTF-8 fails; show the fields anyway.
            Err(e) => format!("# (not TOML: {e})\n# {self:?}\n"),
        };
        let Some(t) = tuned else {
            return text;
        };
        let mut out = format!(
            "# io-properties: {} (measured by `corekv tune`); values marked \"from io-properties\" were derived from it\n",
            t.path.display()
        );
        let mut section = String::new();
        for line in text.lines() {
            out.push_str(line);
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((name, _)) = line.split_once(" = ") {
                let key = format!("{section}.{}", name.trim());
                if let Some(d) = t.applied.iter().find(|d| d.key == key) {
                    let _ = write!(out, "  # from io-properties: {}", d.reason);
                } else if let Some(d) = t.overridden.iter().find(|d| d.key == key) {
                    let _ = write!(
                        out,
                        "  # set explicitly; io-properties would give {} ({})",
                        d.value, d.reason
                    );
                }
            }
            out.push('\n');
        }
        out
    }

    /// The environment variable for `key` (`section.key`).
    pub fn env_var(key: &str) -> String {
        format!("COREKV_{}", key.replace('.', "_").to_ascii_uppercase())
    }

    /// Sets `key` (`section.key`) from its text form, checking the value's own range.
    pub fn set(&mut self, key: &str, value: &str, origin: &ConfigOrigin) -> Result<()> {
        let bad = |reason: String| Error::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
            origin: origin.clone(),
        };
        match key {
            "node.id" => self.node.id = non_empty(value).map_err(bad)?,
            "node.data_dir" => self.node.data_dir = PathBuf::from(non_empty(value).map_err(bad)?),
            "node.listen" => self.node.listen = non_empty(value).map_err(bad)?,
            "node.cores" => self.node.cores = parse_int(value, 1, MAX_CORES).map_err(bad)?,
            "node.first_cpu" => self.node.first_cpu = parse_int(value, 0, MAX_CORES - 1).map_err(bad)?,
            "node.spin_before_park_us" => self.node.spin_before_park_us = parse_int(value, 0, 10_000).map_err(bad)?,
            // 32768: the kernel's largest io_uring submission queue.
            "node.io_depth" => self.node.io_depth = parse_int(value, 8, 32_768).map_err(bad)?,
            "cluster.dc" => self.cluster.dc = non_empty(value).map_err(bad)?,
            // Empty is meaningful here: racks not configured.
            "cluster.rack" => self.cluster.rack = value.to_owned(),
            "cluster.vnodes" => self.cluster.vnodes = parse_int(value, 1, 4096).map_err(bad)?,
            "cluster.replication_factor" => self.cluster.replication_factor = parse_int(value, 1, 15).map_err(bad)?,
            "cluster.seeds" => self.cluster.seeds = parse_seeds(value).map_err(bad)?,
            "cluster.conflict_mode" => {
                self.cluster.conflict_mode = match value {
                    "causal" => ConflictModeSetting::Causal,
                    "lww" => ConflictModeSetting::Lww,
                    _ => return Err(bad("expected `causal` or `lww`".to_owned())),
                }
            }
            "cluster.gossip_interval_ms" => {
                self.cluster.gossip_interval_ms = parse_int(value, 10, 60_000).map_err(bad)?
            }
            "cluster.phi_threshold" => self.cluster.phi_threshold = parse_int(value, 1, 64).map_err(bad)?,
            "cluster.hinted_handoff" => self.cluster.hinted_handoff = parse_bool(value).map_err(bad)?,
            "cluster.hint_window_ms" => self.cluster.hint_window_ms = parse_int(value, 0, u64::MAX).map_err(bad)?,
            "cluster.tombstone_grace_ms" => {
                self.cluster.tombstone_grace_ms = parse_int(value, 0, u64::MAX).map_err(bad)?
            }
            "cluster.request_timeout_ms" => {
                self.cluster.request_timeout_ms = parse_int(value, 1, 600_000).map_err(bad)?
            }
            "cluster.stream_bytes_per_sec" => {
                self.cluster.stream_bytes_per_sec = parse_int(value, 1024, u64::MAX).map_err(bad)?
            }
            "cluster.resp_consistency" => {
                self.cluster.resp_consistency = match value {
                    "one" => RespConsistency::One,
                    "quorum" => RespConsistency::Quorum,
                    "all" => RespConsistency::All,
                    "local_quorum" => RespConsistency::LocalQuorum,
                    _ => return Err(bad("expected `one`, `quorum`, `all` or `local_quorum`".to_owned())),
                }
            }
            "cluster.resp_sloppy_quorum" => self.cluster.resp_sloppy_quorum = parse_bool(value).map_err(bad)?,
            "cluster.auto_bootstrap" => self.cluster.auto_bootstrap = parse_bool(value).map_err(bad)?,
            "ports.client" => self.ports.client = parse_port(value).map_err(bad)?,
            "ports.shard_base" => self.ports.shard_base = parse_port(value).map_err(bad)?,
            "ports.resp" => self.ports.resp = parse_port(value).map_err(bad)?,
            // 0 is meaningful here: no HTTP listener.
            "ports.http" => self.ports.http = parse_int(value, 0, u64::from(u16::MAX)).map_err(bad)? as u16,
            "storage.memtable_bytes" => {
                self.storage.memtable_bytes = parse_int(value, 1 << 20, u64::MAX).map_err(bad)?
            }
            "storage.memtable_jitter_pct" => self.storage.memtable_jitter_pct = parse_int(value, 0, 90).map_err(bad)?,
            "storage.wal_segment_bytes" => {
                self.storage.wal_segment_bytes = parse_int(value, 1 << 20, 1 << 30).map_err(bad)?
            }
            "storage.block_cache_bytes" => {
                self.storage.block_cache_bytes = parse_int(value, 0, u64::MAX).map_err(bad)?
            }
            "storage.row_cache_bytes" => self.storage.row_cache_bytes = parse_int(value, 0, u64::MAX).map_err(bad)?,
            "storage.retained_memtable_bytes" => {
                self.storage.retained_memtable_bytes = parse_int(value, 0, u64::MAX).map_err(bad)?
            }
            "storage.durability" => self.storage.durability = value.parse().map_err(bad)?,
            "storage.flush_bytes_per_sec" => {
                self.storage.flush_bytes_per_sec = parse_int(value, 0, u64::MAX).map_err(bad)?
            }
            "storage.cache_on_flush" => self.storage.cache_on_flush = parse_bool(value).map_err(bad)?,
            "storage.compaction_bytes_per_sec" => {
                self.storage.compaction_bytes_per_sec = parse_int(value, 0, u64::MAX).map_err(bad)?
            }
            "storage.wal_group_commit_us" => {
                self.storage.wal_group_commit_us = parse_int(value, 0, 100_000).map_err(bad)?
            }
            "storage.wal_max_unsynced_bytes" => {
                self.storage.wal_max_unsynced_bytes = parse_int(value, 64 << 10, 1 << 30).map_err(bad)?
            }
            // Empty is meaningful: the default file under the data directory.
            "storage.io_properties" => self.storage.io_properties = value.trim().to_owned(),
            "limits.max_key_bytes" => self.limits.max_key_bytes = parse_int(value, 1, 65_535).map_err(bad)?,
            "limits.max_value_bytes" => self.limits.max_value_bytes = parse_int(value, 1, u64::MAX).map_err(bad)?,
            // u32::MAX: the frame header's length field is 32 bits.
            "limits.max_frame_bytes" => {
                self.limits.max_frame_bytes = parse_int(value, 1024, u64::from(u32::MAX)).map_err(bad)?
            }
            "limits.max_inflight_per_connection" => {
                self.limits.max_inflight_per_connection = parse_int(value, 1, 1 << 20).map_err(bad)?
            }
            "limits.max_connections_per_core" => {
                self.limits.max_connections_per_core = parse_int(value, 1, 1 << 20).map_err(bad)?
            }
            "limits.http_max_header_bytes" => {
                self.limits.http_max_header_bytes = parse_int(value, 1 << 10, 1 << 20).map_err(bad)?
            }
            "limits.http_max_body_bytes" => {
                self.limits.http_max_body_bytes = parse_int(value, 1 << 10, u64::from(u32::MAX)).map_err(bad)?
            }
            "limits.http_max_inflight_per_core" => {
                self.limits.http_max_inflight_per_core = parse_int(value, 1, 1 << 20).map_err(bad)?
            }
            "log.level" => self.log.level = parse_log_level(value).map_err(bad)?,
            "log.format" => {
                self.log.format = match value {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(bad("expected `text` or `json`".to_owned())),
                }
            }
            "log.slow_request_ms" => self.log.slow_request_ms = parse_int(value, 0, u64::MAX).map_err(bad)?,
            "security.cluster_secret" => {
                if !value.is_empty() && value.len() < crate::security::MIN_SECRET_LEN {
                    // Built by hand: `bad` would echo the secret into the error.
                    return Err(Error::InvalidValue {
                        key: key.to_owned(),
                        value: "(redacted)".to_owned(),
                        reason: format!("a secret must be at least {} bytes", crate::security::MIN_SECRET_LEN),
                        origin: origin.clone(),
                    });
                }
                self.security.cluster_secret = value.to_owned();
            }
            // Empty is meaningful for both: off.
            "security.cluster_secret_file" => self.security.cluster_secret_file = value.trim().to_owned(),
            "security.users_file" => self.security.users_file = value.trim().to_owned(),
            // Empty is meaningful for the paths and the name: off / the default.
            "tls.cert_file" => self.tls.cert_file = value.trim().to_owned(),
            "tls.key_file" => self.tls.key_file = value.trim().to_owned(),
            "tls.ca_file" => self.tls.ca_file = value.trim().to_owned(),
            "tls.listeners" => self.tls.listeners = value.parse().map_err(bad)?,
            "tls.server_name" => {
                let name = value.trim();
                if !name.is_empty() && corekv_net::tls::server_name(name).is_err() {
                    return Err(bad("expected a DNS name or an IP address".to_owned()));
                }
                self.tls.server_name = name.to_owned();
            }
            _ => {
                return Err(Error::UnknownKey {
                    key: key.to_owned(),
                    origin: origin.clone(),
                })
            }
        }
        Ok(())
    }

    /// Applies a TOML document (`path` only names it in errors).
    pub fn apply_toml(&mut self, text: &str, path: &Path) -> Result<()> {
        let origin = ConfigOrigin::File(path.to_owned());
        for (key, value) in Self::toml_entries(text, path)? {
            self.set(&key, &value, &origin)?;
        }
        Ok(())
    }

    /// The `(section.key, value as text)` pairs of a TOML document, checked
    /// for unknown keys and for the TOML type each key takes.
    fn toml_entries(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
        let origin = ConfigOrigin::File(path.to_owned());
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::ConfigSyntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut out = Vec::new();
        for (section, body) in &table {
            // Name the section alone when it is unknown: `[nodes]` is one typo, not one per key.
            if !KEYS.iter().any(|k| k.split('.').next() == Some(section.as_str())) {
                return Err(Error::UnknownKey {
                    key: section.clone(),
                    origin,
                });
            }
            let toml::Value::Table(body) = body else {
                return Err(Error::InvalidValue {
                    key: section.clone(),
                    value: body.to_string(),
                    reason: "expected a [section] table".to_owned(),
                    origin,
                });
            };
            for (name, value) in body {
                let key = format!("{section}.{name}");
                if !KEYS.contains(&key.as_str()) {
                    return Err(Error::UnknownKey { key, origin });
                }
                // TOML is typed: a port written as "7380" is a mistake worth naming.
                let text = match (value, STRING_KEYS.contains(&key.as_str())) {
                    (toml::Value::String(s), true) => s.clone(),
                    (toml::Value::Integer(i), false) => i.to_string(),
                    (other, want_string) => {
                        return Err(Error::InvalidValue {
                            key,
                            value: other.to_string(),
                            reason: if want_string {
                                "expected a string"
                            } else {
                                "expected an integer"
                            }
                            .to_owned(),
                            origin,
                        })
                    }
                };
                out.push((key, text));
            }
        }
        Ok(out)
    }

    /// Applies the `COREKV_<SECTION>_<KEY>` entries of `env`; other entries are ignored.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, env: I) -> Result<()> {
        for (key, value, origin) in Self::env_entries(env) {
            self.set(&key, &value, &origin)?;
        }
        Ok(())
    }

    fn env_entries<I: IntoIterator<Item = (String, String)>>(env: I) -> Vec<(String, String, ConfigOrigin)> {
        let mut found: Vec<(usize, String, String)> = Vec::new();
        for (name, value) in env {
            if let Some(i) = KEYS.iter().position(|k| Self::env_var(k) == name) {
                found.push((i, name, value));
            }
        }
        // Apply in key order, not environment order, so errors are reproducible.
        found.sort();
        found
            .into_iter()
            .map(|(i, name, value)| (KEYS[i].to_owned(), value, ConfigOrigin::Env(name)))
            .collect()
    }

    /// Applies one `section.key=value` override.
    pub fn apply_override(&mut self, item: &str) -> Result<()> {
        let (key, value) = Self::override_entry(item)?;
        self.set(&key, &value, &ConfigOrigin::Override)
    }

    fn override_entry(item: &str) -> Result<(String, String)> {
        let Some((key, value)) = item.split_once('=') else {
            return Err(Error::MalformedOverride { item: item.to_owned() });
        };
        Ok((key.trim().to_owned(), value.to_owned()))
    }

    /// Checks the rules between keys (each key's own range is checked by [`Config::set`]).
    pub fn validate(&self) -> Result<()> {
        let conflict = |key: &str, other: &str, reason: String| {
            Err(Error::Conflict {
                key: key.to_owned(),
                other: other.to_owned(),
                reason,
            })
        };
        let base = u64::from(self.ports.shard_base);
        let last = base + self.node.cores - 1;
        if last > u64::from(u16::MAX) {
            return conflict(
                "ports.shard_base",
                "node.cores",
                format!("{} cores from port {base} run past 65535", self.node.cores),
            );
        }
        let in_shard_range = |p: u16| (base..=last).contains(&u64::from(p));
        if in_shard_range(self.ports.client) {
            return conflict(
                "ports.client",
                "ports.shard_base",
                format!("port {} is a shard port", self.ports.client),
            );
        }
        if in_shard_range(self.ports.resp) {
            return conflict(
                "ports.resp",
                "ports.shard_base",
                format!("port {} is a shard port", self.ports.resp),
            );
        }
        if !self.security.cluster_secret.is_empty() && !self.security.cluster_secret_file.is_empty() {
            return conflict(
                "security.cluster_secret",
                "security.cluster_secret_file",
                "set one or the other".to_owned(),
            );
        }
        let secret = !self.security.cluster_secret.is_empty() || !self.security.cluster_secret_file.is_empty();
        if !self.security.users_file.is_empty() && self.cluster.enabled() && !secret {
            return conflict(
                "security.users_file",
                "security.cluster_secret",
                "in cluster mode, client accounts need a cluster secret: node-to-node \
                 connections would otherwise reach every key without a password"
                    .to_owned(),
            );
        }
        if self.ports.client == self.ports.resp {
            return conflict("ports.client", "ports.resp", format!("both are {}", self.ports.client));
        }
        if self.ports.http != 0 {
            if in_shard_range(self.ports.http) {
                return conflict(
                    "ports.http",
                    "ports.shard_base",
                    format!("port {} is a shard port", self.ports.http),
                );
            }
            for (other, p) in [("ports.client", self.ports.client), ("ports.resp", self.ports.resp)] {
                if p == self.ports.http {
                    return conflict("ports.http", other, format!("both are {p}"));
                }
            }
        }
        // A PUT's path holds the key percent-encoded (3 bytes per byte at worst).
        let head = self.limits.max_key_bytes.saturating_mul(3).saturating_add(1024);
        if self.limits.http_max_header_bytes < head {
            return conflict(
                "limits.http_max_header_bytes",
                "limits.max_key_bytes",
                format!(
                    "a request head of {} bytes cannot carry a largest key percent-encoded (needs {head})",
                    self.limits.http_max_header_bytes
                ),
            );
        }
        if self.limits.http_max_body_bytes < self.limits.max_value_bytes {
            return conflict(
                "limits.http_max_body_bytes",
                "limits.max_value_bytes",
                format!(
                    "an HTTP body of {} bytes cannot carry a largest value ({})",
                    self.limits.http_max_body_bytes, self.limits.max_value_bytes
                ),
            );
        }
        self.validate_tls()?;
        // A put of the largest key and value must fit one frame, with room for headers.
        let need = self
            .limits
            .max_key_bytes
            .saturating_add(self.limits.max_value_bytes)
            .saturating_add(1024);
        if need > self.limits.max_frame_bytes {
            return conflict(
                "limits.max_frame_bytes",
                "limits.max_value_bytes",
                format!(
                    "a frame of {} bytes cannot carry a key and value needing {need}",
                    self.limits.max_frame_bytes
                ),
            );
        }
        Ok(())
    }

    /// The `[tls]` rules (the files themselves are read at start).
    fn validate_tls(&self) -> Result<()> {
        let conflict = |key: &str, other: &str, reason: &str| {
            Err(Error::Conflict {
                key: key.to_owned(),
                other: other.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let t = &self.tls;
        if t.cert_file.is_empty() != t.key_file.is_empty() {
            return conflict(
                "tls.cert_file",
                "tls.key_file",
                "TLS needs both a certificate and its key: set both, or neither",
            );
        }
        if !t.enabled() {
            // Set alone they would be silently ignored: the operator believes
            // TLS is on.
            if !t.ca_file.is_empty() {
                return conflict(
                    "tls.ca_file",
                    "tls.cert_file",
                    "client certificates need TLS: set tls.cert_file and tls.key_file too",
                );
            }
            if !t.server_name.is_empty() {
                return conflict(
                    "tls.server_name",
                    "tls.cert_file",
                    "a server name needs TLS: set tls.cert_file and tls.key_file too",
                );
            }
            return Ok(());
        }
        if self.cluster.enabled() {
            if !t.listeners.client {
                return conflict(
                    "tls.listeners",
                    "cluster.seeds",
                    "in cluster mode nodes talk to each other on the client port, so it must use TLS \
                     (add `client` to tls.listeners)",
                );
            }
            if t.ca_file.is_empty() {
                return conflict(
                    "tls.ca_file",
                    "cluster.seeds",
                    "in cluster mode nodes check each other's certificates (mutual TLS): \
                     set tls.ca_file to the authority that signed every node's certificate",
                );
            }
        }
        Ok(())
    }

    /// The shard-aware port of `core`.
    pub fn shard_port(&self, core: u16) -> u16 {
        debug_assert!(u64::from(core) < self.node.cores);
        self.ports.shard_base.saturating_add(core)
    }
}

/// The effective configuration as TOML, readable by [`Config::apply_toml`].
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fails only for a data_dir that is not UTF-8; fmt::Error is all Display can say.
        let text = toml::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corekv-shard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.ports.client, 7380);
        assert_eq!(c.ports.shard_base, 7400);
        assert_eq!(c.ports.resp, 6380);
        assert_eq!(c.ports.http, 8380);
        assert_eq!(c.node.data_dir, PathBuf::from("./corekv-data"));
        assert!(c.node.cores >= 1);
        assert_eq!(c.shard_port(1), 7401);
        assert_eq!(c.storage.durability, Durability::Sync);
    }

    #[test]
    fn every_key_is_settable_and_documented() {
        let doc = include_str!("config.rs");
        let c = Config::default();
        for key in KEYS {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "{key} missing from the key table"
            );
            let mut copy = c.clone();
            // Setting a key to its displayed value is a no-op: get and set agree.
            let shown = toml::Table::try_from(&c).unwrap();
            let (section, name) = key.split_once('.').unwrap();
            let v = &shown[section][name];
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            copy.set(key, &text, &ConfigOrigin::Override).unwrap();
            assert_eq!(copy, c, "{key}");
        }
    }

    #[test]
    fn precedence_default_file_env_override() {
        let path = write_file(
            "precedence.toml",
            "[ports]\nclient = 8000\nresp = 8001\nshard_base = 9000\n[node]\nid = \"from-file\"\n",
        );
        let env = env(&[
            ("COREKV_PORTS_RESP", "8101"),
            ("COREKV_PORTS_SHARD_BASE", "9100"),
            ("COREKV_UNRELATED", "ignored"),
            ("PATH", "/bin"),
        ]);
        let c = Config::load(Some(&path), env, &["ports.shard_base=9200"]).unwrap();
        assert_eq!(c.ports.client, 8000, "file over default");
        assert_eq!(c.ports.resp, 8101, "env over file");
        assert_eq!(c.ports.shard_base, 9200, "override over env");
        assert_eq!(c.node.id, "from-file");
        assert_eq!(c.limits.max_key_bytes, 1024, "default where nothing set it");
    }

    #[test]
    fn durability_forms() {
        let mut c = Config::default();
        c.apply_override("storage.durability=periodic:50").unwrap();
        assert_eq!(c.storage.durability, Durability::Periodic { interval_ms: 50 });
        for bad in ["periodic:0", "periodic:", "periodic:x", "async", "periodic:60001"] {
            let err = c.apply_override(&format!("storage.durability={bad}")).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidValue { key, value, .. } if key == "storage.durability" && value == bad)
            );
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = Config::default();
        let err = c.apply_override("ports.client=70000").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidValue { key, value, origin: ConfigOrigin::Override, .. }
            if key == "ports.client" && value == "70000")
        );
        assert!(
            err.to_string().contains("ports.client") && err.to_string().contains("70000"),
            "{err}"
        );

        let err = c.apply_env(env(&[("COREKV_NODE_CORES", "zero")])).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidValue { key, origin: ConfigOrigin::Env(v), .. }
            if key == "node.cores" && v == "COREKV_NODE_CORES")
        );
        assert!(err.to_string().contains("COREKV_NODE_CORES"), "{err}");

        let err = c.apply_override("ports.clinet=1").unwrap_err();
        assert!(matches!(&err, Error::UnknownKey { key, .. } if key == "ports.clinet"));
        assert!(matches!(
            c.apply_override("ports.client"),
            Err(Error::MalformedOverride { .. })
        ));
        assert!(matches!(c.apply_override("node.id="), Err(Error::InvalidValue { key, .. }) if key == "node.id"));
    }

    #[test]
    fn file_errors_name_the_key() {
        let p = Path::new("corekv.toml");
        let mut c = Config::default();
        let err = c.apply_toml("[ports]\nclient = 7380\nbogus = 1\n", p).unwrap_err();
        assert!(matches!(&err, Error::UnknownKey { key, origin: ConfigOrigin::File(_) } if key == "ports.bogus"));
        assert!(
            err.to_string().contains("ports.bogus") && err.to_string().contains("corekv.toml"),
            "{err}"
        );
        let err = c.apply_toml("[nodes]\nid = \"x\"\n", p).unwrap_err();
        assert!(matches!(&err, Error::UnknownKey { key, .. } if key == "nodes"));
        let err = c.apply_toml("[ports]\nclient = \"7380\"\n", p).unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { key, .. } if key == "ports.client"));
        let err = c.apply_toml("[node]\nid = 5\n", p).unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { key, .. } if key == "node.id"));
        let err = c.apply_toml("[limits]\nmax_key_bytes = -1\n", p).unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { key, .. } if key == "limits.max_key_bytes"));
        let err = c.apply_toml("node = 3\n", p).unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { key, .. } if key == "node"));
        assert!(matches!(c.apply_toml("[ports\n", p), Err(Error::ConfigSyntax { .. })));
        let missing = Path::new("/nonexistent/corekv.toml");
        let none: [&str; 0] = [];
        assert!(matches!(
            Config::load(Some(missing), Vec::new(), &none),
            Err(Error::ConfigRead { .. })
        ));
    }

    #[test]
    fn conflicts_name_both_keys() {
        let mut c = Config::default();
        c.node.cores = 8;
        c.ports.client = 7403;
        assert!(matches!(c.validate(), Err(Error::Conflict { key, other, .. })
            if key == "ports.client" && other == "ports.shard_base"));
        let mut c = Config::default();
        c.node.cores = 200;
        c.ports.shard_base = 65_500;
        assert!(matches!(c.validate(), Err(Error::Conflict { key, other, .. })
            if key == "ports.shard_base" && other == "node.cores"));
        let mut c = Config::default();
        c.ports.resp = c.ports.client;
        assert!(matches!(c.validate(), Err(Error::Conflict { .. })));
        let mut c = Config::default();
        c.limits.max_value_bytes = c.limits.max_frame_bytes;
        assert!(matches!(c.validate(), Err(Error::Conflict { key, .. }) if key == "limits.max_frame_bytes"));
        // load() validates.
        let err = Config::load(None, Vec::new(), &["ports.resp=7380"]).unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));
    }

    #[test]
    fn display_is_toml_that_reads_back() {
        let mut c = Config::default();
        c.apply_override("storage.durability=periodic:10").unwrap();
        c.apply_override("cluster.rack=r2").unwrap();
        let text = c.to_string();
        assert!(
            text.contains("[ports]") && text.contains("durability = \"periodic:10\""),
            "{text}"
        );
        println!("{text}");
        let mut back = Config::default();
        back.apply_toml(&text, Path::new("display.toml")).unwrap();
        assert_eq!(back, c);
    }

    fn derived(path: &Path) -> std::result::Result<Vec<DerivedValue>, String> {
        assert!(path.is_file(), "only called with a file that exists");
        Ok(vec![
            DerivedValue {
                key: "storage.flush_bytes_per_sec".to_owned(),
                value: "104857600".to_owned(),
                reason: "1/2 of measured sequential write".to_owned(),
            },
            DerivedValue {
                key: "node.io_depth".to_owned(),
                value: "256".to_owned(),
                reason: "disk keeps ~16 reads busy".to_owned(),
            },
        ])
    }

    #[test]
    fn io_properties_are_a_layer_under_every_explicit_setting() {
        let dir = write_file("io-properties.toml", "format_version = 1\n")
            .parent()
            .unwrap()
            .to_path_buf();
        let data_dir = format!("node.data_dir={}", dir.display());
        let none: Vec<(String, String)> = Vec::new();

        // Found under the data directory and applied.
        let (c, tuned) = Config::load_tuned(None, none.clone(), &[data_dir.as_str()], derived).unwrap();
        let tuned = tuned.unwrap();
        assert_eq!(tuned.path, dir.join(IO_PROPERTIES_FILE));
        assert_eq!(c.storage.flush_bytes_per_sec, 100 << 20);
        assert_eq!(c.node.io_depth, 256);
        assert_eq!(tuned.applied.len(), 2);
        assert!(tuned.overridden.is_empty());
        let shown = c.display_tuned(Some(&tuned));
        assert!(
            shown.contains(&format!("# io-properties: {}", tuned.path.display())),
            "{shown}"
        );
        assert!(
            shown.contains("flush_bytes_per_sec = 104857600  # from io-properties: 1/2 of measured"),
            "{shown}"
        );
        assert!(
            shown.contains("io_depth = 256  # from io-properties: disk keeps"),
            "{shown}"
        );
        let mut back = Config::default();
        back.apply_toml(&shown, Path::new("shown.toml")).unwrap();
        assert_eq!(back, c, "the marked display reads back");

        // An explicit value wins even when it equals the default, from any layer.
        let env = env(&[("COREKV_NODE_IO_DEPTH", "128")]);
        let (c, tuned) = Config::load_tuned(
            None,
            env,
            &[data_dir.as_str(), "storage.flush_bytes_per_sec=0"],
            derived,
        )
        .unwrap();
        let tuned = tuned.unwrap();
        assert_eq!(c.storage.flush_bytes_per_sec, 0);
        assert_eq!(c.node.io_depth, 128);
        assert!(tuned.applied.is_empty());
        assert_eq!(tuned.overridden.len(), 2);
        let shown = c.display_tuned(Some(&tuned));
        assert!(
            shown.contains("flush_bytes_per_sec = 0  # set explicitly; io-properties would give 104857600"),
            "{shown}"
        );

        // `off`: the file is not read.
        let (c, tuned) = Config::load_tuned(
            None,
            none.clone(),
            &[data_dir.as_str(), "storage.io_properties=off"],
            |_| Err("not read when off".to_owned()),
        )
        .unwrap();
        assert!(tuned.is_none());
        assert_eq!(
            c,
            Config::load(None, none.clone(), &[data_dir.as_str(), "storage.io_properties=off"]).unwrap()
        );

        // No file under the data directory: nothing derived, nothing printed about it.
        let empty = dir.join("no-such-subdir");
        let (c, tuned) = Config::load_tuned(
            None,
            none.clone(),
            &[format!("node.data_dir={}", empty.display())],
            |_| Err("no file to read".to_owned()),
        )
        .unwrap();
        assert!(tuned.is_none());
        assert_eq!(c.display_tuned(None), c.to_string());

        // A path that was asked for must exist.
        let missing = dir.join("missing.toml");
        let err = Config::load_tuned(
            None,
            none.clone(),
            &[format!("storage.io_properties={}", missing.display())],
            derived,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::IoProperties { path, .. } if *path == missing),
            "{err}"
        );
        assert!(err.to_string().contains("corekv tune"), "{err}");

        // The reader's error stops the start, naming the way out.
        let err = Config::load_tuned(None, none.clone(), &[data_dir.as_str()], |_| {
            Err("io-properties file x has format_version 9".to_owned())
        })
        .unwrap_err();
        assert!(matches!(err, Error::IoProperties { .. }));
        assert!(
            err.to_string().contains("format_version 9") && err.to_string().contains("storage.io_properties = \"off\""),
            "{err}"
        );

        // A derived value out of range is refused naming the file as its origin.
        let err = Config::load_tuned(None, none, &[data_dir.as_str()], |_| {
            Ok(vec![DerivedValue {
                key: "node.io_depth".to_owned(),
                value: "0".to_owned(),
                reason: String::new(),
            }])
        })
        .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::InvalidValue {
                    origin: ConfigOrigin::IoProperties(_),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn http_and_log_keys() {
        let c = Config::load(None, Vec::new(), &["ports.http=0"]).unwrap();
        assert_eq!(c.ports.http, 0, "0 turns the HTTP port off");
        let err = Config::load(None, Vec::new(), &["ports.http=6380"]).unwrap_err();
        assert!(matches!(&err, Error::Conflict { key, other, .. } if key == "ports.http" && other == "ports.resp"));
        let err = Config::load(None, Vec::new(), &["ports.http=7401", "node.cores=4"]).unwrap_err();
        assert!(
            matches!(&err, Error::Conflict { key, .. } if key == "ports.http"),
            "{err}"
        );
        let err = Config::load(None, Vec::new(), &["limits.http_max_body_bytes=2048"]).unwrap_err();
        assert!(matches!(&err, Error::Conflict { key, .. } if key == "limits.http_max_body_bytes"));
        let err = Config::load(None, Vec::new(), &["limits.http_max_header_bytes=1024"]).unwrap_err();
        assert!(matches!(&err, Error::Conflict { key, .. } if key == "limits.http_max_header_bytes"));
        for good in [
            "",
            "info",
            "WARN",
            "warn,corekv_shard=debug",
            "corekv_shard::server=trace",
        ] {
            let c = Config::load(None, Vec::new(), &[format!("log.level={good}")]).unwrap();
            assert_eq!(c.log.level, good.trim());
        }
        for bad in ["loud", "warn,=debug", "x y=info", "corekv=verbose"] {
            let err = Config::load(None, Vec::new(), &[format!("log.level={bad}")]).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidValue { key, .. } if key == "log.level"),
                "{bad}: {err}"
            );
        }
        let c = Config::load(None, env(&[("COREKV_LOG_FORMAT", "json")]), &["log.slow_request_ms=0"]).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.slow_request_ms, 0);
        assert!(Config::load(None, Vec::new(), &["log.format=xml"]).is_err());
    }

    #[test]
    fn security_keys() {
        let c = Config::default();
        assert_eq!(c.security, SecurityConfig::default(), "off by default");
        let env = env(&[("COREKV_SECURITY_USERS_FILE", "/etc/corekv/users.toml")]);
        let c = Config::load(None, env, &["security.cluster_secret=0123456789abcdef-secret"]).unwrap();
        assert_eq!(c.security.users_file, "/etc/corekv/users.toml");
        assert_eq!(c.security.cluster_secret, "0123456789abcdef-secret");
        // Never shown: neither in the printed configuration nor in Debug.
        let text = c.to_string();
        assert!(
            text.contains("[security]") && text.contains("cluster_secret = \"(redacted)\""),
            "{text}"
        );
        assert!(!text.contains("0123456789abcdef-secret") && !format!("{c:?}").contains("0123456789abcdef-secret"));
        // A printed configuration read back fails loudly instead of starting with a wrong secret.
        assert!(Config::default().apply_toml(&text, Path::new("printed.toml")).is_err());

        let err = Config::load(None, Vec::new(), &["security.cluster_secret=short"]).unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { key, .. } if key == "security.cluster_secret"));
        assert!(!err.to_string().contains("short"), "the secret is not echoed: {err}");
        let err = Config::load(
            None,
            Vec::new(),
            &[
                "security.cluster_secret=0123456789abcdef",
                "security.cluster_secret_file=/x",
            ],
        )
        .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));
        // Accounts in cluster mode need the secret.
        let err = Config::load(
            None,
            Vec::new(),
            &["security.users_file=/u.toml", "cluster.seeds=127.0.0.1:7380"],
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Conflict { key, .. } if key == "security.users_file"),
            "{err}"
        );
        Config::load(
            None,
            Vec::new(),
            &[
                "security.users_file=/u.toml",
                "cluster.seeds=127.0.0.1:7380",
                "security.cluster_secret_file=/s",
            ],
        )
        .unwrap();
    }

    #[test]
    fn tls_keys() {
        let c = Config::default();
        assert!(!c.tls.enabled(), "off by default");
        assert_eq!(c.tls.listeners, TlsListeners::default());
        let env = env(&[
            ("COREKV_TLS_KEY_FILE", "/k.pem"),
            ("COREKV_TLS_LISTENERS", "resp, client"),
        ]);
        let c = Config::load(None, env, &["tls.cert_file=/c.pem"]).unwrap();
        assert!(c.tls.enabled() && !c.tls.mutual());
        assert_eq!(
            c.tls.listeners,
            TlsListeners {
                client: true,
                shard: false,
                resp: true,
                http: false,
            }
        );
        // Printed (paths only) and read back.
        let text = c.to_string();
        assert!(
            text.contains("[tls]") && text.contains("listeners = \"client,resp\""),
            "{text}"
        );
        let mut back = Config::default();
        back.apply_toml(&text, Path::new("printed.toml")).unwrap();
        assert_eq!(back, c);

        let conflict = |overrides: &[&str], want: &str| {
            let err = Config::load(None, Vec::new(), overrides).unwrap_err();
            assert!(
                matches!(&err, Error::Conflict { key, .. } if key == want),
                "{overrides:?}: {err}"
            );
        };
        conflict(&["tls.cert_file=/c.pem"], "tls.cert_file");
        conflict(&["tls.key_file=/k.pem"], "tls.cert_file");
        conflict(&["tls.ca_file=/ca.pem"], "tls.ca_file");
        conflict(&["tls.server_name=db"], "tls.server_name");
        let on = [
            "tls.cert_file=/c.pem",
            "tls.key_file=/k.pem",
            "cluster.seeds=127.0.0.1:7380",
        ];
        conflict(&on, "tls.ca_file");
        conflict(
            &[&on[..], &["tls.ca_file=/ca.pem", "tls.listeners=shard,resp"]].concat(),
            "tls.listeners",
        );
        let c = Config::load(None, Vec::new(), &[&on[..], &["tls.ca_file=/ca.pem"]].concat()).unwrap();
        assert!(c.tls.mutual());

        for bad in [
            "tls.listeners=",
            "tls.listeners=client,https",
            "tls.server_name=not a name",
        ] {
            let err = Config::load(None, Vec::new(), &[bad]).unwrap_err();
            assert!(matches!(err, Error::InvalidValue { .. }), "{bad}: {err}");
        }
    }

    proptest! {
        /// Any in-range port set by any layer reads back; any out-of-range one is refused naming the key.
        #[test]
        fn ports_round_trip(port in 0u32..70_000, layer in 0u8..3) {
            let mut c = Config::default();
            let res = match layer {
                0 => c.apply_toml(&format!("[ports]\nresp = {port}\n"), Path::new("p.toml")),
                1 => c.apply_env(env(&[("COREKV_PORTS_RESP", &port.to_string())])),
                _ => c.apply_override(&format!("ports.resp={port}")),
            };
            if (1..=65_535).contains(&port) {
                prop_assert!(res.is_ok());
                prop_assert_eq!(u32::from(c.ports.resp), port);
            } else {
                let ok = matches!(res, Err(Error::InvalidValue { ref key, .. }) if key == "ports.resp");
                prop_assert!(ok);
            }
        }
    }
}
