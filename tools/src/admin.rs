//! Operator commands against one node: `status`, `repair`, `decommission`,
//! `removenode ID`. Each is a node-to-node ADMIN frame (docs/protocol.md)
//! sent straight to the node, which answers a report when the work is done.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};
use corekv_net::frame::{FrameDecoder, HEADER_LEN};
use corekv_net::msg::peer::{PeerOp, PeerOpcode, PeerRequest, PeerResponse};
use corekv_net::msg::{Limits, Response};

fn node_arg() -> Arg {
    Arg::new("node")
        .long("node")
        .short('n')
        .value_name("HOST:PORT")
        .default_value("127.0.0.1:7380")
        .env("COREKV_NODE")
        .help("The node's client port")
}

fn timeout_arg() -> Arg {
    Arg::new("timeout")
        .long("timeout")
        .value_name("SECONDS")
        .default_value("3600")
        .value_parser(clap::value_parser!(u64))
        .help("Give up waiting for the report after this long")
}

/// The admin subcommands.
pub fn commands() -> Vec<Command> {
    vec![
        Command::new("status")
            .about("Print the cluster as this node sees it")
            .arg(node_arg())
            .arg(timeout_arg()),
        Command::new("repair")
            .about("Anti-entropy: compare this node's ranges with the other replicas (Merkle trees) and exchange what differs")
            .arg(node_arg())
            .arg(timeout_arg()),
        Command::new("decommission")
            .about("Stream this node's ranges to their next owners, then leave the cluster")
            .arg(node_arg())
            .arg(timeout_arg()),
        Command::new("removenode")
            .about("Remove a dead node from the ring; the survivors re-replicate its ranges")
            .arg(node_arg())
            .arg(timeout_arg())
            .arg(Arg::new("id").required(true).help("The dead node's id")),
    ]
}

/// Whether `name` is an admin subcommand.
pub fn is_admin(name: &str) -> bool {
    matches!(name, "status" | "repair" | "decommission" | "removenode")
}

/// Runs an admin subcommand; prints the node's report.
pub fn run(name: &str, m: &ArgMatches) -> Result<bool, String> {
    let node = m.get_one::<String>("node").map_or("127.0.0.1:7380", String::as_str);
    let timeout = Duration::from_secs(m.get_one::<u64>("timeout").copied().unwrap_or(3600));
    // Only `removenode` has an id; `get_one` on an argument a command lacks panics.
    let command = match m.try_get_one::<String>("id").ok().flatten() {
        Some(id) => format!("{name} {id}"),
        None => name.to_owned(),
    };
    let report = call(node, &command, timeout)?;
    print!("{report}");
    if !report.ends_with('\n') {
        println!();
    }
    Ok(true)
}

/// Sends one ADMIN command to `node` and waits for its report.
pub fn call(node: &str, command: &str, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect(node).map_err(|e| format!("connecting to {node}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let req = PeerRequest {
        from: "corekv-cli",
        op: PeerOp::Admin {
            command: command.as_bytes(),
        },
    };
    let mut buf = Vec::new();
    req.encode_frame(1, &mut buf).map_err(|e| e.to_string())?;
    s.write_all(&buf).map_err(|e| format!("sending to {node}: {e}"))?;
    let limits = Limits::default();
    let mut dec = FrameDecoder::new(limits.max_frame);
    loop {
        if let Some(f) = dec.next_frame().map_err(|e| format!("bad answer from {node}: {e}"))? {
            if f.header.flags.is_error() {
                return match Response::decode_body(corekv_net::msg::ResponseOpcode::Error as u8, f.body, &limits) {
                    Ok(Response::Error { message, .. }) => Err(format!("{node}: {message}")),
                    _ => Err(format!("{node} answered an error")),
                };
            }
            return match PeerResponse::decode_body(PeerOpcode::Admin, f.body, &limits) {
                Ok(PeerResponse::Report { text }) => Ok(String::from_utf8_lossy(text).into_owned()),
                Ok(_) | Err(_) => Err(format!("{node} answered something other than a report")),
            };
        }
        let spare = dec.spare(HEADER_LEN.max(64 << 10));
        let n = s.read(spare).map_err(|e| format!("waiting for {node}: {e}"))?;
        dec.commit(n);
        if n == 0 {
            return Err(format!("{node} closed the connection without answering"));
        }
    }
}
