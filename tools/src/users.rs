//! Writing the users file (`security.users_file`, README "Security"):
//! `corekv hash-password` prints a password hash for a hand-written entry;
//! `corekv user add` appends a whole entry.
//!
//! The password is read from `--password`, else `COREKV_PASSWORD`, else the
//! first line of standard input, so it need not appear in the shell's
//! history or in the process list.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use corekv_shard::security::{hash_password, Users};

/// The subcommands.
pub fn commands() -> Vec<Command> {
    vec![
        Command::new("hash-password")
            .about("Print an Argon2id hash of a password (stdin, COREKV_PASSWORD or --password) for the users file")
            .arg(super::client::password_arg()),
        Command::new("user")
            .about("Manage the users file (security.users_file)")
            .subcommand_required(true)
            .subcommand(
                Command::new("add")
                    .about("Append a user to the users file (created if missing)")
                    .arg(
                        Arg::new("file")
                            .long("file")
                            .short('f')
                            .value_name("FILE")
                            .required(true)
                            .value_parser(clap::value_parser!(PathBuf))
                            .help("The users file"),
                    )
                    .arg(Arg::new("name").required(true).help("The user's name"))
                    .arg(super::client::password_arg())
                    .arg(
                        Arg::new("grant")
                            .long("grant")
                            .value_name("PREFIX=RIGHTS")
                            .action(ArgAction::Append)
                            .help(
                                "A permission: a key prefix (empty: every key) and rights from r, w, a \
                                 (read, write, admin), e.g. --grant app1:=rw or --grant =r (repeatable)",
                            ),
                    ),
            ),
    ]
}

/// Whether `name` is one of these subcommands.
pub fn is_users(name: &str) -> bool {
    matches!(name, "hash-password" | "user")
}

fn password(m: &ArgMatches) -> Result<String, String> {
    if let Some(p) = m.get_one::<String>("password") {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        return Err("no password (give it on stdin, in COREKV_PASSWORD or with --password)".to_owned());
    }
    Ok(p)
}

/// TOML's basic string: quotes and backslashes escaped, control bytes as
/// `\uXXXX`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `PREFIX=RIGHTS` as a TOML inline table.
fn grant(spec: &str) -> Result<String, String> {
    let (prefix, rights) = spec
        .rsplit_once('=')
        .ok_or_else(|| format!("grant `{spec}` is not PREFIX=RIGHTS"))?;
    if rights.is_empty() || !rights.chars().all(|c| matches!(c, 'r' | 'w' | 'a')) {
        return Err(format!("grant `{spec}`: rights are letters from r, w, a"));
    }
    Ok(format!(
        "{{ prefix = {}, read = {}, write = {}, admin = {} }}",
        toml_string(prefix),
        rights.contains('r'),
        rights.contains('w'),
        rights.contains('a')
    ))
}

fn add(file: &Path, name: &str, password: &str, grants: &[String]) -> Result<(), String> {
    let old = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    if !old.trim().is_empty() {
        let users = Users::parse(&old, file).map_err(|e| e.to_string())?;
        if users.get(name).is_some() {
            return Err(format!("user `{name}` is already in {}", file.display()));
        }
    }
    let hash = hash_password(password.as_bytes()).map_err(|e| e.to_string())?;
    let grants: Vec<String> = grants.iter().map(|g| grant(g)).collect::<Result<_, _>>()?;
    let entry = format!(
        "\n[[users]]\nname = {}\npassword_hash = {}\npermissions = [\n{}]\n",
        toml_string(name),
        toml_string(&hash),
        grants.iter().map(|g| format!("  {g},\n")).collect::<String>()
    );
    let new = format!("{old}{entry}");
    // Checked before writing: a file the node cannot read would stop its start.
    Users::parse(&new, file).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("opening {}: {e}", file.display()))?;
    f.write_all(entry.as_bytes())
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    Ok(())
}

/// Runs `hash-password` or `user ...`.
pub fn run(name: &str, m: &ArgMatches) -> Result<bool, String> {
    match (name, m.subcommand()) {
        ("hash-password", _) => {
            let h = hash_password(password(m)?.as_bytes()).map_err(|e| e.to_string())?;
            println!("{h}");
            Ok(true)
        }
        ("user", Some(("add", m))) => {
            let file = m.get_one::<PathBuf>("file").ok_or("--file is required")?;
            let user = m.get_one::<String>("name").ok_or("a user name is required")?;
            let grants: Vec<String> = m.get_many::<String>("grant").into_iter().flatten().cloned().collect();
            add(file, user, &password(m)?, &grants)?;
            println!("added user {user} to {}", file.display());
            Ok(true)
        }
        _ => Err("unknown users command (see corekv user --help)".to_owned()),
    }
}
