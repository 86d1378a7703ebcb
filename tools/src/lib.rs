//! `corekv`: start a node (`serve`) or a local cluster (`cluster up`), measure its disk (`tune`),
//! talk to a running one (`get`, `put`, `del`, `scan`), operate it (`status`, `ring`, `repair`, `drain`,
//! `snapshot`, `backup`, `restore`, ...) and write its users file (`hash-password`, `user add`). A library so test crates can build the same command
//! under their own binary name.

mod admin;
mod backup;
mod client;
mod local_cluster;
mod serve;
mod tune;
mod users;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};

fn cli() -> Command {
    Command::new("corekv")
        .about("corekv: a distributed key-value store")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(serve::command())
        .subcommand(tune::command())
        .subcommand(local_cluster::command())
        .subcommands(client::commands())
        .subcommands(admin::commands())
        .subcommands(backup::commands())
        .subcommands(users::commands())
}

/// Runs the command line of this process and returns its exit code.
pub fn main() -> ExitCode {
    let matches = cli().get_matches();
    let r = match matches.subcommand() {
        Some(("serve", m)) => serve::run(m).map(|()| true),
        Some(("tune", m)) => tune::run(m).map(|()| true),
        Some(("cluster", m)) => local_cluster::run(m),
        Some((name, m)) if admin::is_admin(name) => admin::run(name, m),
        Some((name, m)) if backup::is_backup(name) => backup::run(name, m),
        Some((name, m)) if users::is_users(name) => users::run(name, m),
        Some((name, m)) => client::run(name, m),
        None => Err("no command (see corekv --help)".to_string()),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("corekv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a command line (`args[0]` is the program name) as [`main`] does,
/// without running anything: clap's parse, then for `serve` the
/// configuration its flags build (defaults, `--set` and per-key flags; no
/// file, environment or io-properties). The error is the message `corekv`
/// would print. For the CLI fuzz target (`tools/fuzz`, docs/fuzzing.md).
pub fn check_args<I, T>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = cli().try_get_matches_from(args).map_err(|e| e.to_string())?;
    if let Some(("serve", m)) = matches.subcommand() {
        let overrides = serve::overrides(m);
        corekv_shard::Config::load(None, std::iter::empty(), &overrides).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A repeatable `--set section.key=value` argument.
fn set_arg() -> Arg {
    Arg::new("set")
        .long("set")
        .value_name("SECTION.KEY=VALUE")
        .action(ArgAction::Append)
        .help("Override one configuration key (repeatable)")
}
