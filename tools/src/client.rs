//! Human client commands against a running node: `get`, `put`, `del`, `scan`.
//!
//! Keys and values are taken as UTF-8 text from the command line; output
//! prints bytes as text when they are printable and as `\xNN` escapes otherwise,
//! so binary data cannot garble the terminal.
//!
//! Against a node with TLS (`[tls]`), `--tls-ca FILE` turns TLS on and
//! trusts that authority; `--tls-cert`/`--tls-key` present a client
//! certificate (nodes with `tls.ca_file` require one); `--tls-server-name`
//! checks the node's certificate against that name instead of the address
//! connected to. The same settings come from `COREKV_TLS_CA`,
//! `COREKV_TLS_CERT`, `COREKV_TLS_KEY` and `COREKV_TLS_NAME`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use corekv_net::client::blocking::Client;
use corekv_net::client::{ClientOptions, Credentials, PutOptions, Tls};
use corekv_net::msg::Condition;

fn node_arg() -> Arg {
    Arg::new("node")
        .long("node")
        .short('n')
        .value_name("HOST:PORT")
        .default_value("127.0.0.1:7380")
        .env("COREKV_NODE")
        .help("Any node's client port")
}

/// `--user` (env `COREKV_USER`): the account to AUTH as.
pub fn user_arg() -> Arg {
    Arg::new("user")
        .long("user")
        .short('u')
        .value_name("NAME")
        .env("COREKV_USER")
        .help("Authenticate as this user (the node's security.users_file)")
}

/// `--password` (env `COREKV_PASSWORD`); `--user` without it is an error.
pub fn password_arg() -> Arg {
    Arg::new("password")
        .long("password")
        .value_name("PASSWORD")
        .env("COREKV_PASSWORD")
        .hide_env_values(true)
        .help("The user's password (prefer the COREKV_PASSWORD variable: arguments are visible to other local users)")
}

/// The user and password given, if any.
pub fn user_password(m: &ArgMatches) -> Result<Option<(String, String)>, String> {
    let user = m.try_get_one::<String>("user").ok().flatten().filter(|u| !u.is_empty());
    let password = m.try_get_one::<String>("password").ok().flatten();
    match (user, password) {
        (Some(u), Some(p)) => Ok(Some((u.clone(), p.clone()))),
        (Some(_), None) => Err("--user needs --password (or COREKV_PASSWORD)".to_owned()),
        (None, _) => Ok(None),
    }
}

/// The TLS flags of every command that talks to a node.
pub fn tls_args(c: Command) -> Command {
    c.arg(
        Arg::new("tls-ca")
            .long("tls-ca")
            .value_name("FILE")
            .env("COREKV_TLS_CA")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Connect with TLS, trusting the certificate authorities in this PEM file"),
    )
    .arg(
        Arg::new("tls-cert")
            .long("tls-cert")
            .value_name("FILE")
            .env("COREKV_TLS_CERT")
            .value_parser(clap::value_parser!(PathBuf))
            .requires("tls-key")
            .help("Present this client certificate (PEM) to a node that requires one (mutual TLS)"),
    )
    .arg(
        Arg::new("tls-key")
            .long("tls-key")
            .value_name("FILE")
            .env("COREKV_TLS_KEY")
            .value_parser(clap::value_parser!(PathBuf))
            .requires("tls-cert")
            .help("The private key (PEM) of --tls-cert"),
    )
    .arg(
        Arg::new("tls-server-name")
            .long("tls-server-name")
            .value_name("NAME")
            .env("COREKV_TLS_NAME")
            .help("Check the node's certificate against this name (default: the host of --node)"),
    )
}

/// The TLS files and name given on the command line (`None`: plain TCP).
#[derive(Debug, Clone)]
pub struct TlsFlags {
    /// `--tls-ca`.
    pub ca: PathBuf,
    /// `--tls-cert` and `--tls-key`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `--tls-server-name`.
    pub server_name: Option<String>,
}

/// The TLS flags, checked: the certificate and name flags need `--tls-ca`.
pub fn tls_flags(m: &ArgMatches) -> Result<Option<TlsFlags>, String> {
    let path = |name: &str| {
        m.try_get_one::<PathBuf>(name)
            .ok()
            .flatten()
            .filter(|p| !p.as_os_str().is_empty())
            .cloned()
    };
    let name = m
        .try_get_one::<String>("tls-server-name")
        .ok()
        .flatten()
        .filter(|n| !n.is_empty())
        .cloned();
    let client_cert = match (path("tls-cert"), path("tls-key")) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".to_owned()),
    };
    let Some(ca) = path("tls-ca") else {
        if client_cert.is_some() || name.is_some() {
            return Err("--tls-cert, --tls-key and --tls-server-name need --tls-ca (the authority the node's certificate is checked against)".to_owned());
        }
        return Ok(None);
    };
    Ok(Some(TlsFlags {
        ca,
        client_cert,
        server_name: name,
    }))
}

/// The SDK's TLS settings from the flags.
fn sdk_tls(f: &TlsFlags) -> Result<Tls, String> {
    let cert = f.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    let tls = Tls::from_pem_files(Path::new(&f.ca), cert).map_err(|e| e.to_string())?;
    match &f.server_name {
        Some(n) => tls.with_server_name(n).map_err(|e| e.to_string()),
        None => Ok(tls),
    }
}

/// The client subcommands.
pub fn commands() -> Vec<Command> {
    [
        Command::new("get")
            .about("Print a key's value (exit 1 if missing)")
            .arg(node_arg())
            .arg(Arg::new("key").required(true)),
        Command::new("put")
            .about("Write a key")
            .arg(node_arg())
            .arg(Arg::new("key").required(true))
            .arg(Arg::new("value").required(true))
            .arg(
                Arg::new("ttl")
                    .long("ttl")
                    .value_name("SECONDS")
                    .value_parser(clap::value_parser!(u64))
                    .help("Expire after this many seconds"),
            )
            .arg(
                Arg::new("nx")
                    .long("nx")
                    .action(ArgAction::SetTrue)
                    .help("Only if the key does not exist"),
            )
            .arg(
                Arg::new("xx")
                    .long("xx")
                    .action(ArgAction::SetTrue)
                    .conflicts_with("nx")
                    .help("Only if the key exists"),
            ),
        Command::new("del")
            .about("Delete keys")
            .arg(node_arg())
            .arg(Arg::new("keys").required(true).num_args(1..)),
        Command::new("scan")
            .about("List keys (and values) with a prefix, in pages")
            .arg(node_arg())
            .arg(Arg::new("prefix").default_value(""))
            .arg(
                Arg::new("limit")
                    .long("limit")
                    .value_parser(clap::value_parser!(u64))
                    .default_value("100")
                    .help("Most entries to print (0: all)"),
            )
            .arg(
                Arg::new("keys-only")
                    .long("keys-only")
                    .action(ArgAction::SetTrue)
                    .help("Print keys only"),
            ),
    ]
    .into_iter()
    .map(|c| tls_args(c.arg(user_arg()).arg(password_arg())))
    .collect()
}

fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for c in b.escape_ascii() {
        s.push(char::from(c));
    }
    s
}

fn connect(m: &ArgMatches) -> Result<Client, String> {
    let node = m.get_one::<String>("node").map_or("127.0.0.1:7380", String::as_str);
    let opts = ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let tls = tls_flags(m)?.map(|f| sdk_tls(&f)).transpose()?;
    let connected = match (user_password(m)?, tls) {
        (Some((user, password)), Some(tls)) => {
            Client::connect_tls_as(&[node], opts, tls, Credentials::new(user, password))
        }
        (Some((user, password)), None) => Client::connect_as(&[node], opts, Credentials::new(user, password)),
        (None, Some(tls)) => Client::connect_tls(&[node], opts, tls),
        (None, None) => Client::connect(&[node], opts),
    };
    connected.map_err(|e| format!("cannot reach {node}: {e}"))
}

fn arg<'a>(m: &'a ArgMatches, name: &str) -> &'a str {
    m.get_one::<String>(name).map_or("", String::as_str)
}

/// Runs a client subcommand; `Ok(false)` means "ran, but the answer is no"
/// (a missing key, a failed condition), which exits 1 like `grep`.
pub fn run(name: &str, m: &ArgMatches) -> Result<bool, String> {
    let c = connect(m)?;
    match name {
        "get" => match c.get(arg(m, "key")).map_err(|e| e.to_string())? {
            Some(v) => {
                println!("{}", show(&v.value));
                Ok(true)
            }
            None => {
                eprintln!("(not found)");
                Ok(false)
            }
        },
        "put" => {
            let condition = if m.get_flag("nx") {
                Condition::IfAbsent
            } else if m.get_flag("xx") {
                Condition::IfPresent
            } else {
                Condition::Always
            };
            let ttl_ms = m.get_one::<u64>("ttl").map_or(0, |s| s.saturating_mul(1000));
            let ok = c
                .put_with(arg(m, "key"), arg(m, "value"), PutOptions { ttl_ms, condition })
                .map_err(|e| e.to_string())?;
            if ok {
                println!("OK");
            } else {
                eprintln!("(condition not met: nothing written)");
            }
            Ok(ok)
        }
        "del" => {
            for k in m.get_many::<String>("keys").into_iter().flatten() {
                c.delete(k).map_err(|e| e.to_string())?;
            }
            println!("OK");
            Ok(true)
        }
        "scan" => {
            let limit = m.get_one::<u64>("limit").copied().unwrap_or(100);
            let keys_only = m.get_flag("keys-only");
            let mut pages = c.list_pages(arg(m, "prefix"), 500);
            let mut n = 0u64;
            while let Some(page) = pages.next_page().map_err(|e| e.to_string())? {
                for (k, v) in page {
                    if limit != 0 && n >= limit {
                        eprintln!("(stopped at --limit {limit})");
                        return Ok(true);
                    }
                    if keys_only {
                        println!("{}", show(&k));
                    } else {
                        println!("{}\t{}", show(&k), show(&v));
                    }
                    n += 1;
                }
            }
            Ok(true)
        }
        other => Err(format!("unknown command {other}")),
    }
}
