//! `corekv serve`: start a node.
//!
//! Configuration precedence: built-in defaults < `--config` file <
//! `COREKV_<SECTION>_<KEY>` environment variables < flags (`--node.data_dir
//! DIR`, one per key, or `--set node.data_dir=DIR`). Values derived from the
//! io-properties file (`corekv tune`) sit between the defaults and the file,
//! so any explicit setting wins over them. The effective configuration is
//! printed at start, derived values marked with where they came from.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command};
use corekv_shard::config::{DerivedValue, LogFormat, KEYS};
use corekv_shard::{runtime, server, Config};
use corekv_tuning::IoProperties;

/// The `serve` subcommand: `--config`, `--set`, and one flag per key.
pub fn command() -> Command {
    let mut c = Command::new("serve")
        .about("Start a node (defaults: one node, data in ./corekv-data, all cores)")
        .arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file"),
        )
        .arg(super::set_arg());
    for key in KEYS {
        c = c.arg(
            Arg::new(*key)
                .long(*key)
                .value_name("VALUE")
                .help(format!("Set `{key}` (env {})", Config::env_var(key))),
        );
    }
    c
}

/// Reads the io-properties file `corekv tune` wrote and derives the node's
/// settings from its figures (corekv_tuning::derive).
fn derive(path: &Path) -> Result<Vec<DerivedValue>, String> {
    let props = IoProperties::read(path).map_err(|e| e.to_string())?;
    let d = corekv_tuning::derive(&props);
    let mut out: Vec<DerivedValue> = [
        ("storage.flush_bytes_per_sec", d.flush_bytes_per_sec),
        ("storage.compaction_bytes_per_sec", d.compaction_bytes_per_sec),
        ("node.io_depth", d.io_depth),
        ("storage.wal_max_unsynced_bytes", d.wal_max_unsynced_bytes),
    ]
    .into_iter()
    .map(|(key, f)| DerivedValue {
        key: key.to_owned(),
        value: f.value.to_string(),
        reason: f.reason,
    })
    .collect();
    if props.measured.quick {
        // Say so beside each value: quick figures are for tests, not production.
        for v in &mut out {
            v.reason.push_str(" [quick-mode figures]");
        }
    }
    Ok(out)
}

/// The `section.key=value` overrides of the command line: every `--set`,
/// then one per key flag given (flags win over `--set`).
pub fn overrides(m: &ArgMatches) -> Vec<String> {
    let mut overrides: Vec<String> = m
        .get_many::<String>("set")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    for key in KEYS {
        if let Some(v) = m.get_one::<String>(key) {
            overrides.push(format!("{key}={v}"));
        }
    }
    overrides
}

/// The log filter: `log.level` when set, else `COREKV_LOG`, else `info`.
fn log_filter(config: &Config) -> Result<tracing_subscriber::EnvFilter, String> {
    use tracing_subscriber::EnvFilter;
    if !config.log.level.is_empty() {
        return EnvFilter::try_new(&config.log.level).map_err(|e| format!("log.level `{}`: {e}", config.log.level));
    }
    match std::env::var("COREKV_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).map_err(|e| format!("COREKV_LOG `{v}`: {e}")),
        _ => Ok(EnvFilter::new("info")),
    }
}

/// Logs to stderr as `log.format` says, filtered by [`log_filter`].
fn init_logging(config: &Config) -> Result<(), String> {
    let filter = log_filter(config)?;
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let r = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    r.map_err(|e| format!("cannot start logging: {e}"))
}

/// Loads the configuration, starts the node, waits for SIGTERM/SIGINT, drains.
pub fn run(m: &ArgMatches) -> Result<(), String> {
    let overrides = overrides(m);
    let file = m.get_one::<PathBuf>("config");
    let (config, tuned) = Config::load_tuned(file.map(PathBuf::as_path), std::env::vars(), &overrides, derive)
        .map_err(|e| e.to_string())?;
    init_logging(&config)?;
    eprintln!(
        "# corekv {} effective configuration\n{}",
        env!("CARGO_PKG_VERSION"),
        config.display_tuned(tuned.as_ref())
    );
    let started = std::time::Instant::now();
    let node = runtime::start(config.clone(), server::serve).map_err(|e| e.to_string())?;
    runtime::install_signal_handler(node.stop_handle()).map_err(|e| e.to_string())?;
    let tls = if config.tls.enabled() {
        format!(
            ", TLS on {}{}",
            config.tls.listeners,
            if config.tls.mutual() {
                " (client certificates required)"
            } else {
                ""
            }
        )
    } else {
        String::new()
    };
    let http = if config.ports.http == 0 {
        "off".to_owned()
    } else {
        format!("{}:{}", config.node.listen, config.ports.http)
    };
    eprintln!(
        "corekv: ready in {} ms: client {}:{}, shard-aware {}:{}..{}, RESP {}:{}, HTTP {http}, data in {}{tls}",
        started.elapsed().as_millis(),
        config.node.listen,
        config.ports.client,
        config.node.listen,
        config.ports.shard_base,
        u64::from(config.ports.shard_base) + config.node.cores - 1,
        config.node.listen,
        config.ports.resp,
        config.node.data_dir.display()
    );
    node.wait().map_err(|e| e.to_string())?;
    eprintln!("corekv: stopped cleanly");
    Ok(())
}
