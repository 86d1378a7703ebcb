//! Operator commands against one node: `status`, `ring`, `repair`, `join`, `decommission`,
//! `removenode ID`, `drain`, `hints` (and, in `backup.rs`, `snapshot`,
//! `backup`, `restore`). Each is a node-to-node ADMIN frame (docs/protocol.md)
//! sent straight to the node, which answers a report when the work is done.
//!
//! A node with a cluster secret serves node-to-node opcodes only after the
//! handshake (docs/protocol.md, "Authentication"): give the secret with
//! `--cluster-secret-file` or `--cluster-secret` (or the node's own
//! variables, `COREKV_SECURITY_CLUSTER_SECRET_FILE` /
//! `COREKV_SECURITY_CLUSTER_SECRET`). A single node with a users file and
//! no secret takes them from a user with admin rights on every key
//! (`--user`, `--password`).
//!
//! A node with TLS is reached with `--tls-ca` (and, when the node requires
//! client certificates, as every node in a TLS cluster does,
//! `--tls-cert`/`--tls-key`: a node's own certificate, or one of a client
//! signed by the same CA); see `client.rs` for the flags.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};
use corekv_net::frame::{FrameDecoder, HEADER_LEN};
use corekv_net::msg::auth::AuthRequest;
use corekv_net::msg::peer::{PeerOp, PeerOpcode, PeerRequest, PeerResponse};
use corekv_net::msg::{Limits, Response, ResponseOpcode};

pub(crate) fn node_arg() -> Arg {
    Arg::new("node")
        .long("node")
        .short('n')
        .value_name("HOST:PORT")
        .default_value("127.0.0.1:7380")
        .env("COREKV_NODE")
        .help("The node's client port")
}

/// The credential flags of every admin command.
pub(crate) fn auth_args(c: Command) -> Command {
    c.arg(
        Arg::new("cluster-secret")
            .long("cluster-secret")
            .value_name("SECRET")
            .env("COREKV_SECURITY_CLUSTER_SECRET")
            .hide_env_values(true)
            .help("The cluster secret, when the node has one (prefer --cluster-secret-file)"),
    )
    .arg(
        Arg::new("cluster-secret-file")
            .long("cluster-secret-file")
            .value_name("FILE")
            .env("COREKV_SECURITY_CLUSTER_SECRET_FILE")
            .conflicts_with("cluster-secret")
            .help("A file holding the cluster secret"),
    )
    .arg(super::client::user_arg())
    .arg(super::client::password_arg())
    .pipe(super::client::tls_args)
}

/// `c.pipe(f)` for `f(c)`, so argument chains read top to bottom.
trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}

impl Pipe for Command {}

/// How the admin connection authenticates.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The cluster secret: the node-to-node handshake.
    pub secret: Option<Vec<u8>>,
    /// A user and password: AUTH (single node without a secret).
    pub user: Option<(String, String)>,
    /// TLS to the node, when it has TLS on its client port.
    pub tls: Option<super::client::TlsFlags>,
}

pub(crate) fn credentials(m: &ArgMatches) -> Result<Credentials, String> {
    let secret = if let Some(s) = m.get_one::<String>("cluster-secret").filter(|s| !s.is_empty()) {
        Some(s.as_bytes().to_vec())
    } else if let Some(f) = m.get_one::<String>("cluster-secret-file").filter(|s| !s.is_empty()) {
        let s = corekv_shard::security::read_secret_file(std::path::Path::new(f)).map_err(|e| e.to_string())?;
        Some(s.bytes().to_vec())
    } else {
        None
    };
    let user = super::client::user_password(m)?;
    let tls = super::client::tls_flags(m)?;
    Ok(Credentials { secret, user, tls })
}

pub(crate) fn timeout_arg() -> Arg {
    Arg::new("timeout")
        .long("timeout")
        .value_name("SECONDS")
        .default_value("3600")
        .value_parser(clap::value_parser!(u64))
        .help("Give up waiting for the report after this long")
}

/// The admin subcommands.
pub fn commands() -> Vec<Command> {
    [
        Command::new("status")
            .about("Print the cluster as this node sees it")
            .arg(node_arg())
            .arg(timeout_arg()),
        Command::new("ring")
            .about("Print the ring as this node sees it: each node's vnodes, primary and replicated ownership")
            .arg(node_arg())
            .arg(timeout_arg())
            .arg(
                Arg::new("tokens")
                    .long("tokens")
                    .action(clap::ArgAction::SetTrue)
                    .help("Also list every vnode token in ring order"),
            ),
        Command::new("repair")
            .about("Anti-entropy: compare this node's ranges with the other replicas (Merkle trees) and exchange what differs")
            .arg(node_arg())
            .arg(timeout_arg()),
        Command::new("join")
            .about(
                "Add a node that waits to be added (started with cluster.auto_bootstrap = false): it announces \
                 JOINING, streams its ranges from their owners, then turns NORMAL. --node is the new node",
            )
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
        Command::new("drain")
            .about(
                "Drain the node for a restart: tell the cluster it is going (peers mark it down and hint its \
                 writes), stop taking requests, finish those in flight, flush, exit 0",
            )
            .arg(node_arg())
            .arg(timeout_arg()),
        Command::new("hints")
            .about("Print the hints the node holds for other nodes (writes they missed), per node")
            .arg(node_arg())
            .arg(timeout_arg()),
    ]
    .into_iter()
    .map(auth_args)
    .collect()
}

/// Whether `name` is an admin subcommand.
pub fn is_admin(name: &str) -> bool {
    matches!(
        name,
        "status" | "ring" | "repair" | "join" | "decommission" | "removenode" | "drain" | "hints"
    )
}

/// Runs an admin subcommand; prints the node's report.
pub fn run(name: &str, m: &ArgMatches) -> Result<bool, String> {
    let node = m.get_one::<String>("node").map_or("127.0.0.1:7380", String::as_str);
    let timeout = Duration::from_secs(m.get_one::<u64>("timeout").copied().unwrap_or(3600));
    // Only `removenode` has an id; `get_one` on an argument a command lacks panics.
    let command = match m.try_get_one::<String>("id").ok().flatten() {
        Some(id) => format!("{name} {id}"),
        None if m.try_get_one::<bool>("tokens").ok().flatten() == Some(&true) => format!("{name} tokens"),
        None => name.to_owned(),
    };
    let creds = credentials(m)?;
    let report = call_with(node, &command, timeout, &creds)?;
    print!("{report}");
    if !report.ends_with('\n') {
        println!();
    }
    Ok(true)
}

/// Sends one ADMIN command to `node`, authenticating first with `creds`,
/// and waits for its report.
pub fn call_with(node: &str, command: &str, timeout: Duration, creds: &Credentials) -> Result<String, String> {
    let mut conn = AdminConn::open(node, timeout, creds)?;
    let body = conn.call(PeerOp::Admin {
        command: command.as_bytes(),
    })?;
    match PeerResponse::decode_body(PeerOpcode::Admin, &body, &Limits::default()) {
        Ok(PeerResponse::Report { text }) => Ok(String::from_utf8_lossy(text).into_owned()),
        Ok(_) | Err(_) => Err(format!("{node} answered something other than a report")),
    }
}

/// A rustls client session for `node` from the TLS flags.
fn tls_client(
    flags: &super::client::TlsFlags,
    node: &str,
) -> Result<corekv_net::tls::rustls::ClientConnection, String> {
    use corekv_net::tls as pem;
    let identity = match &flags.client_cert {
        Some((cert, key)) => Some(
            pem::Identity::load(
                cert,
                key,
                "client certificate file (--tls-cert)",
                "client key file (--tls-key)",
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let config = pem::client_config(
        Path::new(&flags.ca),
        "CA file (--tls-ca)",
        identity.as_ref(),
        "client key file (--tls-key)",
    )
    .map_err(|e| e.to_string())?;
    let name = match &flags.server_name {
        Some(n) => pem::server_name(n),
        None => pem::server_name_of(node),
    }
    .map_err(|e| e.to_string())?;
    corekv_net::tls::rustls::ClientConnection::new(Arc::clone(&config), name).map_err(|e| e.to_string())
}

/// Why a node-to-node request failed: the node's ERROR answer (with its
/// code), or no answer at all (connection, I/O, undecodable bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The node's error code; `None` when there was no answer.
    pub code: Option<corekv_net::msg::ErrorCode>,
    /// What happened, naming the node.
    pub message: String,
}

impl CallError {
    fn io(message: String) -> CallError {
        CallError { code: None, message }
    }

    /// Whether sending the request again may succeed: no answer came, or
    /// the node was unavailable, timed out or overloaded.
    pub fn is_transient(&self) -> bool {
        use corekv_net::msg::ErrorCode;
        self.code
            .is_none_or(|c| [ErrorCode::UNAVAILABLE, ErrorCode::TIMEOUT, ErrorCode::OVERLOADED].contains(&c))
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.message
    }
}

/// A byte stream to a node: plain TCP, or TLS over it.
trait Stream: Read + Write {}

impl<T: Read + Write> Stream for T {}

/// An authenticated connection to one node for node-to-node requests
/// (operator commands, snapshot reads, restores), one at a time.
pub struct AdminConn {
    s: Box<dyn Stream>,
    dec: FrameDecoder,
    node: String,
    next_id: u64,
}

impl std::fmt::Debug for AdminConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConn")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl AdminConn {
    /// Connects to `node` and authenticates with `creds`; every answer is
    /// waited for at most `timeout`.
    pub fn open(node: &str, timeout: Duration, creds: &Credentials) -> Result<AdminConn, String> {
        let tcp = TcpStream::connect(node).map_err(|e| format!("connecting to {node}: {e}"))?;
        tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let mut s: Box<dyn Stream> = match &creds.tls {
            None => Box::new(tcp),
            Some(flags) => {
                let conn = tls_client(flags, node)?;
                let mut tls = corekv_net::tls::rustls::StreamOwned::new(conn, tcp);
                // Complete the handshake now, so a refused certificate is
                // reported as such rather than as a failed send.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| format!("{node}: TLS handshake failed: {e}"))?;
                }
                Box::new(tls)
            }
        };
        let mut dec = FrameDecoder::new(Limits::default().max_frame);
        if let Some(secret) = &creds.secret {
            handshake(&mut s, &mut dec, secret).map_err(|e| format!("{node}: cluster handshake failed: {e}"))?;
        }
        if let Some((user, password)) = &creds.user {
            let mut buf = Vec::new();
            AuthRequest {
                user,
                password: password.as_bytes(),
            }
            .encode_frame(3, &mut buf)
            .map_err(|e| e.to_string())?;
            s.write_all(&buf)
                .and_then(|()| s.flush())
                .map_err(|e| format!("sending to {node}: {e}"))?;
            answer(&mut s, &mut dec).map_err(|e| format!("{node}: AUTH failed: {e}"))?;
        }
        Ok(AdminConn {
            s,
            dec,
            node: node.to_owned(),
            next_id: 16,
        })
    }

    /// The node's address.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sends one node-to-node request and returns the body of its answer;
    /// an ERROR answer is `Err` with the node's message.
    pub fn call(&mut self, op: PeerOp<'_>) -> Result<Vec<u8>, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = Vec::new();
        PeerRequest { from: "corekv-cli", op }
            .encode_frame(id, &mut buf)
            .map_err(|e| CallError::io(e.to_string()))?;
        self.s
            .write_all(&buf)
            .and_then(|()| self.s.flush())
            .map_err(|e| CallError::io(format!("sending to {}: {e}", self.node)))?;
        self.answer(id)
    }

    /// RING: the client addresses of the nodes the contacted node lists.
    pub fn ring(&mut self) -> Result<Vec<String>, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = Vec::new();
        corekv_net::msg::Request {
            consistency: corekv_net::msg::Consistency::One,
            timeout_ms: 0,
            sloppy_quorum: false,
            op: corekv_net::msg::Op::Ring,
        }
        .encode_frame(id, &mut buf)
        .map_err(|e| e.to_string())?;
        self.s
            .write_all(&buf)
            .and_then(|()| self.s.flush())
            .map_err(|e| format!("sending to {}: {e}", self.node))?;
        let body = self.answer(id).map_err(String::from)?;
        match Response::decode_body(corekv_net::msg::ResponseOpcode::Ring as u8, &body, &Limits::default()) {
            Ok(Response::Ring { nodes, .. }) => Ok(nodes.iter().map(|n| n.address.to_owned()).collect()),
            _ => Err(format!("{} answered RING with something else", self.node)),
        }
    }

    fn answer(&mut self, id: u64) -> Result<Vec<u8>, CallError> {
        let limits = Limits::default();
        let node = &self.node;
        loop {
            let frame = self
                .dec
                .next_frame()
                .map_err(|e| CallError::io(format!("bad answer from {node}: {e}")))?;
            if let Some(f) = frame {
                if f.header.request_id != id {
                    if f.header.request_id == 0 && f.header.flags.is_error() {
                        let why = match Response::decode_body(ResponseOpcode::Error as u8, f.body, &limits) {
                            Ok(Response::Error { message, .. }) => message.to_owned(),
                            _ => "an undecodable error".to_owned(),
                        };
                        return Err(CallError::io(format!("{node} closed the connection: {why}")));
                    }
                    continue;
                }
                if f.header.flags.is_error() {
                    return Err(
                        match Response::decode_body(ResponseOpcode::Error as u8, f.body, &limits) {
                            Ok(Response::Error { code, message }) => CallError {
                                code: Some(code),
                                message: format!("{node}: {message}"),
                            },
                            _ => CallError::io(format!("{node} answered an undecodable error")),
                        },
                    );
                }
                return Ok(f.body.to_vec());
            }
            let spare = self.dec.spare(HEADER_LEN.max(64 << 10));
            let n = match self.s.read(spare) {
                Ok(n) => n,
                // A signal interrupted the read: nothing was lost, read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CallError::io(format!("waiting for {node}: {e}"))),
            };
            self.dec.commit(n);
            if n == 0 {
                return Err(CallError::io(format!("{node} closed the connection without answering")));
            }
        }
    }
}

/// The body of the next answer, or the node's refusal (an ERROR answer).
fn answer<S: Read>(s: &mut S, dec: &mut FrameDecoder) -> Result<Vec<u8>, String> {
    let limits = Limits::default();
    loop {
        match dec.next_frame() {
            Ok(Some(f)) if f.header.flags.is_error() => {
                return Err(
                    match Response::decode_body(corekv_net::msg::ResponseOpcode::Error as u8, f.body, &limits) {
                        Ok(Response::Error { message, .. }) => message.to_owned(),
                        _ => "an undecodable error".to_owned(),
                    },
                )
            }
            Ok(Some(f)) => return Ok(f.body.to_vec()),
            Ok(None) => {}
            Err(e) => return Err(format!("bad answer: {e}")),
        }
        let spare = dec.spare(4096);
        let n = s.read(spare).map_err(|e| e.to_string())?;
        dec.commit(n);
        if n == 0 {
            return Err("the node closed the connection".to_owned());
        }
    }
}

/// The opening side of the node-to-node handshake, on a blocking socket
/// (the node's own is `corekv_shard::server::peer::handshake`).
fn handshake<S: Read + Write>(s: &mut S, dec: &mut FrameDecoder, secret: &[u8]) -> Result<(), String> {
    use corekv_net::msg::auth::{peer_mac, verify_peer_mac, PeerChallenge, PeerHello, PeerProof, Role, NONCE_LEN};
    use rand::RngCore;
    const FROM: &str = "corekv-cli";
    let mut client_nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut client_nonce);
    let mut buf = Vec::new();
    PeerHello {
        from: FROM,
        client_nonce,
    }
    .encode_frame(1, &mut buf)
    .map_err(|e| e.to_string())?;
    s.write_all(&buf).and_then(|()| s.flush()).map_err(|e| e.to_string())?;
    let body = answer(s, dec)?;
    let ch = PeerChallenge::decode_body(&body).map_err(|e| e.to_string())?;
    if !verify_peer_mac(
        secret,
        Role::Server,
        FROM,
        &client_nonce,
        &ch.server_nonce,
        &ch.server_mac,
    ) {
        return Err("the node does not know this cluster secret".to_owned());
    }
    buf.clear();
    PeerProof {
        client_mac: peer_mac(secret, Role::Client, FROM, &client_nonce, &ch.server_nonce),
    }
    .encode_frame(2, &mut buf)
    .map_err(|e| e.to_string())?;
    s.write_all(&buf).and_then(|()| s.flush()).map_err(|e| e.to_string())?;
    answer(s, dec).map(|_| ())
}
