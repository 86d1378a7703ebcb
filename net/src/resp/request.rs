//! Typed requests: a [`Command`] checked against each supported command's
//! arity and options, with Redis' error wording so clients and tests that
//! match on error text keep working.

use super::decode::parse_i64;
use super::Command;

/// A command error: the server replies `-<Display>` and keeps the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Wrong argument count; holds the lower-case command name (`client|setname` for subcommands).
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// An unknown or misplaced option.
    #[error("ERR syntax error")]
    Syntax,
    /// An argument that must be a 64-bit integer is not.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// A non-positive or overflowing expire time.
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    /// A SCAN cursor that is not an unsigned 64-bit integer.
    #[error("ERR invalid cursor")]
    InvalidCursor,
    /// Contradicting EXPIRE options.
    #[error("ERR NX and XX, GT or LT options at the same time are not compatible")]
    ExpireNxConflict,
    /// EXPIRE GT together with LT.
    #[error("ERR GT and LT options at the same time are not compatible")]
    ExpireGtLt,
    /// An EXPIRE option Redis does not know either.
    #[error("ERR Unsupported option {0}")]
    UnsupportedOption(String),
    /// A SET option this server parses but refuses (see docs/resp.md).
    #[error("ERR SET option '{0}' is not supported")]
    SetOptionUnsupported(&'static str),
    /// HELLO with a protocol version that is not an integer.
    #[error("ERR Protocol version is not an integer or out of range")]
    BadProtover,
    /// HELLO with a protocol version other than 2 or 3.
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    /// A malformed HELLO option.
    #[error("ERR Syntax error in HELLO option '{0}'")]
    HelloSyntax(String),
    /// A client name with bytes outside `!`..`~`.
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    BadClientName,
    /// An unknown subcommand of CLIENT or COMMAND.
    #[error("ERR unknown subcommand '{sub}'. Try {cmd} HELP.")]
    UnknownSubcommand {
        /// The parent command, upper case.
        cmd: &'static str,
        /// The subcommand as sent.
        sub: String,
    },
}

/// The expiry requested by SET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expire {
    /// `EX seconds` (positive).
    Seconds(i64),
    /// `PX milliseconds` (positive).
    Millis(i64),
    /// `EXAT unix-seconds` (positive).
    AtSeconds(i64),
    /// `PXAT unix-milliseconds` (positive).
    AtMillis(i64),
}

/// SET's existence condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCond {
    /// `NX`: only if the key does not exist.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

/// SET's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetArgs<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The expiry, if any (none clears an existing TTL, as in Redis).
    pub expire: Option<Expire>,
    /// The NX / XX condition, if any.
    pub cond: Option<SetCond>,
}

/// EXPIRE / PEXPIRE condition (Redis 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireCond {
    /// `NX`: only if the key has no TTL.
    Nx,
    /// `XX`: only if the key has a TTL.
    Xx,
    /// `GT`: only if the new TTL is greater.
    Gt,
    /// `LT`: only if the new TTL is less.
    Lt,
}

/// SCAN's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanArgs<'a> {
    /// The cursor (0 starts a scan).
    pub cursor: u64,
    /// `MATCH pattern` (see [`glob_match`](super::glob_match)); the last one wins, as in Redis.
    pub pattern: Option<&'a [u8]>,
    /// `COUNT n` (at least 1).
    pub count: Option<u64>,
    /// `TYPE t`, as sent.
    pub type_: Option<&'a [u8]>,
}

/// CLIENT subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRequest<'a> {
    /// `CLIENT SETNAME name` (validated; empty clears the name).
    SetName(&'a [u8]),
    /// `CLIENT GETNAME`
    GetName,
    /// `CLIENT ID`
    Id,
}

/// COMMAND subcommands (redis-cli sends `COMMAND DOCS` when it starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandRequest<'a> {
    /// `COMMAND`: describe every command.
    List,
    /// `COMMAND COUNT`
    Count,
    /// `COMMAND INFO [name...]`
    Info(Vec<&'a [u8]>),
    /// `COMMAND DOCS [name...]`
    Docs(Vec<&'a [u8]>),
}

/// A typed, validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespRequest<'a> {
    /// A blank inline line or `*0`: no reply.
    Empty,
    /// `GET key`
    Get(&'a [u8]),
    /// `SET key value [NX|XX] [EX s|PX ms|EXAT t|PXAT t]`
    Set(SetArgs<'a>),
    /// `DEL key...`
    Del(Vec<&'a [u8]>),
    /// `EXISTS key...`
    Exists(Vec<&'a [u8]>),
    /// `MGET key...`
    MGet(Vec<&'a [u8]>),
    /// `MSET key value [key value...]`
    MSet(Vec<(&'a [u8], &'a [u8])>),
    /// `INCR key` and `INCRBY key n` (`DECR`/`DECRBY` become negative `by`;
    /// `DECRBY i64::MIN` is refused as out of range, since it cannot be negated).
    IncrBy {
        /// The key.
        key: &'a [u8],
        /// The signed increment.
        by: i64,
    },
    /// `EXPIRE key s [cond]` and `PEXPIRE key ms [cond]`.
    Expire {
        /// The key.
        key: &'a [u8],
        /// The relative TTL in milliseconds (EXPIRE's seconds multiplied out;
        /// may be zero or negative, which deletes the key, as in Redis).
        millis: i64,
        /// NX / XX / GT / LT.
        cond: Option<ExpireCond>,
    },
    /// `TTL key` (`millis: false`) and `PTTL key` (`millis: true`).
    Ttl {
        /// The key.
        key: &'a [u8],
        /// Reply in milliseconds.
        millis: bool,
    },
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`
    Scan(ScanArgs<'a>),
    /// `KEYS pattern`
    Keys(&'a [u8]),
    /// `PING [message]`
    Ping(Option<&'a [u8]>),
    /// `ECHO message`
    Echo(&'a [u8]),
    /// `INFO [section...]`
    Info(Vec<&'a [u8]>),
    /// `COMMAND [COUNT|INFO|DOCS ...]`
    Command(CommandRequest<'a>),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    Hello {
        /// 2 or 3; none keeps the current protocol.
        protover: Option<u8>,
        /// `AUTH username password`
        auth: Option<(&'a [u8], &'a [u8])>,
        /// `SETNAME name` (validated like CLIENT SETNAME).
        setname: Option<&'a [u8]>,
    },
    /// `CLIENT ...`
    Client(ClientRequest<'a>),
    /// `SELECT db` (the server checks the range).
    Select(i64),
    /// `QUIT`
    Quit,
    /// Not a command this server knows: reply with
    /// [`unknown_command_message`](super::unknown_command_message).
    UnknownCommand {
        /// The name as sent.
        name: &'a [u8],
        /// The arguments after the name.
        args: Vec<&'a [u8]>,
    },
}

fn int(a: &[u8]) -> Result<i64, CommandError> {
    parse_i64(a).ok_or(CommandError::NotInteger)
}

/// Redis' client name rule: printable ASCII without spaces.
fn valid_name(name: &[u8]) -> Result<&[u8], CommandError> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(name)
    } else {
        Err(CommandError::BadClientName)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned()
}

/// Checks Redis-style arity: positive = exactly, negative = at least |arity| (name included).
fn arity(args: &[&[u8]], n: isize, name: &'static str) -> Result<(), CommandError> {
    let ok = if n >= 0 {
        args.len() as isize == n
    } else {
        args.len() as isize >= -n
    };
    if ok {
        Ok(())
    } else {
        Err(CommandError::WrongArity(name))
    }
}

impl<'a> RespRequest<'a> {
    /// Validates `cmd`. Command names and options are case-insensitive.
    pub fn parse(cmd: &Command<'a>) -> Result<RespRequest<'a>, CommandError> {
        let a = cmd.args.as_slice();
        let Some(&name) = a.first() else {
            return Ok(RespRequest::Empty);
        };
        // Lower-case into a small stack buffer: no allocation per command, and
        // any name longer than every known one is unknown anyway.
        let mut lower = [0u8; 8];
        let known = name.len() <= lower.len();
        if known {
            for (d, s) in lower.iter_mut().zip(name) {
                *d = s.to_ascii_lowercase();
            }
        }
        let lname: &[u8] = if known { &lower[..name.len()] } else { b"" };
        let req = match lname {
            b"get" => {
                arity(a, 2, "get")?;
                RespRequest::Get(a[1])
            }
            b"set" => RespRequest::Set(parse_set(a)?),
            b"del" => {
                arity(a, -2, "del")?;
                RespRequest::Del(a[1..].to_vec())
            }
            b"exists" => {
                arity(a, -2, "exists")?;
                RespRequest::Exists(a[1..].to_vec())
            }
            b"mget" => {
                arity(a, -2, "mget")?;
                RespRequest::MGet(a[1..].to_vec())
            }
            b"mset" => {
                arity(a, -3, "mset")?;
                if a.len().is_multiple_of(2) {
                    return Err(CommandError::WrongArity("mset"));
                }
                RespRequest::MSet(a[1..].chunks_exact(2).map(|p| (p[0], p[1])).collect())
            }
            b"incr" => {
                arity(a, 2, "incr")?;
                RespRequest::IncrBy { key: a[1], by: 1 }
            }
            b"decr" => {
                arity(a, 2, "decr")?;
                RespRequest::IncrBy { key: a[1], by: -1 }
            }
            b"incrby" => {
                arity(a, 3, "incrby")?;
                RespRequest::IncrBy {
                    key: a[1],
                    by: int(a[2])?,
                }
            }
            b"decrby" => {
                arity(a, 3, "decrby")?;
                let by = int(a[2])?.checked_neg().ok_or(CommandError::NotInteger)?;
                RespRequest::IncrBy { key: a[1], by }
            }
            b"expire" => parse_expire(a, "expire", 1000)?,
            b"pexpire" => parse_expire(a, "pexpire", 1)?,
            b"ttl" => {
                arity(a, 2, "ttl")?;
                RespRequest::Ttl {
                    key: a[1],
                    millis: false,
                }
            }
            b"pttl" => {
                arity(a, 2, "pttl")?;
                RespRequest::Ttl {
                    key: a[1],
                    millis: true,
                }
            }
            b"scan" => RespRequest::Scan(parse_scan(a)?),
            b"keys" => {
                arity(a, 2, "keys")?;
                RespRequest::Keys(a[1])
            }
            b"ping" => match a.len() {
                1 => RespRequest::Ping(None),
                2 => RespRequest::Ping(Some(a[1])),
                _ => return Err(CommandError::WrongArity("ping")),
            },
            b"echo" => {
                arity(a, 2, "echo")?;
                RespRequest::Echo(a[1])
            }
            b"info" => RespRequest::Info(a[1..].to_vec()),
            b"command" => RespRequest::Command(parse_command_cmd(a)?),
            b"hello" => parse_hello(a)?,
            b"client" => RespRequest::Client(parse_client(a)?),
            b"select" => {
                arity(a, 2, "select")?;
                RespRequest::Select(int(a[1])?)
            }
            b"quit" => RespRequest::Quit,
            _ => RespRequest::UnknownCommand {
                name,
                args: a[1..].to_vec(),
            },
        };
        Ok(req)
    }
}

fn parse_set<'a>(a: &[&'a [u8]]) -> Result<SetArgs<'a>, CommandError> {
    arity(a, -3, "set")?;
    let mut out = SetArgs {
        key: a[1],
        value: a[2],
        expire: None,
        cond: None,
    };
    let mut i = 3;
    while i < a.len() {
        let opt = a[i].to_ascii_uppercase();
        let next = a.get(i + 1);
        match opt.as_slice() {
            b"NX" | b"XX" => {
                let c = if opt == b"NX" {
                    SetCond::IfAbsent
                } else {
                    SetCond::IfPresent
                };
                if out.cond.is_some_and(|old| old != c) {
                    return Err(CommandError::Syntax);
                }
                out.cond = Some(c);
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                let Some(v) = next else {
                    return Err(CommandError::Syntax);
                };
                if out.expire.is_some() {
                    return Err(CommandError::Syntax);
                }
                let n = int(v)?;
                if n <= 0 {
                    return Err(CommandError::InvalidExpire("set"));
                }
                let unit_ms = if opt.starts_with(b"E") { 1000 } else { 1 };
                // The server adds "now" to a relative expiry; refuse values that
                // overflow as milliseconds here, as Redis does.
                if n.checked_mul(unit_ms).is_none() {
                    return Err(CommandError::InvalidExpire("set"));
                }
                out.expire = Some(match opt.as_slice() {
                    b"EX" => Expire::Seconds(n),
                    b"PX" => Expire::Millis(n),
                    b"EXAT" => Expire::AtSeconds(n),
                    _ => Expire::AtMillis(n),
                });
                i += 1;
            }
            b"KEEPTTL" => return Err(CommandError::SetOptionUnsupported("KEEPTTL")),
            b"GET" => return Err(CommandError::SetOptionUnsupported("GET")),
            _ => return Err(CommandError::Syntax),
        }
        i += 1;
    }
    Ok(out)
}

fn parse_expire<'a>(a: &[&'a [u8]], name: &'static str, unit_ms: i64) -> Result<RespRequest<'a>, CommandError> {
    arity(a, -3, name)?;
    let n = int(a[2])?;
    let millis = n.checked_mul(unit_ms).ok_or(CommandError::InvalidExpire(name))?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => return Err(CommandError::UnsupportedOption(lossy(opt))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::ExpireNxConflict);
    }
    if gt && lt {
        return Err(CommandError::ExpireGtLt);
    }
    // XX combines with GT or LT in Redis; the comparison is the stronger condition.
    let cond = if nx {
        Some(ExpireCond::Nx)
    } else if gt {
        Some(ExpireCond::Gt)
    } else if lt {
        Some(ExpireCond::Lt)
    } else if xx {
        Some(ExpireCond::Xx)
    } else {
        None
    };
    Ok(RespRequest::Expire {
        key: a[1],
        millis,
        cond,
    })
}

fn parse_scan<'a>(a: &[&'a [u8]]) -> Result<ScanArgs<'a>, CommandError> {
    arity(a, -2, "scan")?;
    let cursor = std::str::from_utf8(a[1])
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CommandError::InvalidCursor)?;
    let mut out = ScanArgs {
        cursor,
        pattern: None,
        count: None,
        type_: None,
    };
    let mut i = 2;
    while i < a.len() {
        let Some(&v) = a.get(i + 1) else {
            return Err(CommandError::Syntax);
        };
        match a[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => out.pattern = Some(v),
            b"COUNT" => {
                let n = int(v)?;
                if n < 1 {
                    return Err(CommandError::Syntax);
                }
                out.count = Some(n.unsigned_abs());
            }
            b"TYPE" => out.type_ = Some(v),
            _ => return Err(CommandError::Syntax),
        }
        i += 2;
    }
    Ok(out)
}

fn parse_command_cmd<'a>(a: &[&'a [u8]]) -> Result<CommandRequest<'a>, CommandError> {
    let Some(sub) = a.get(1) else {
        return Ok(CommandRequest::List);
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" => {
            arity(a, 2, "command|count")?;
            Ok(CommandRequest::Count)
        }
        b"INFO" => Ok(CommandRequest::Info(a[2..].to_vec())),
        b"DOCS" => Ok(CommandRequest::Docs(a[2..].to_vec())),
        _ => Err(CommandError::UnknownSubcommand {
            cmd: "COMMAND",
            sub: lossy(sub),
        }),
    }
}

fn parse_client<'a>(a: &[&'a [u8]]) -> Result<ClientRequest<'a>, CommandError> {
    arity(a, -2, "client")?;
    match a[1].to_ascii_uppercase().as_slice() {
        b"SETNAME" => {
            arity(a, 3, "client|setname")?;
            Ok(ClientRequest::SetName(valid_name(a[2])?))
        }
        b"GETNAME" => {
            arity(a, 2, "client|getname")?;
            Ok(ClientRequest::GetName)
        }
        b"ID" => {
            arity(a, 2, "client|id")?;
            Ok(ClientRequest::Id)
        }
        _ => Err(CommandError::UnknownSubcommand {
            cmd: "CLIENT",
            sub: lossy(a[1]),
        }),
    }
}

fn parse_hello<'a>(a: &[&'a [u8]]) -> Result<RespRequest<'a>, CommandError> {
    let mut protover = None;
    let (mut auth, mut setname) = (None, None);
    if let Some(v) = a.get(1) {
        let v = parse_i64(v).ok_or(CommandError::BadProtover)?;
        protover = Some(match v {
            2 => 2,
            3 => 3,
            _ => return Err(CommandError::NoProto),
        });
    }
    let mut i = 2;
    while i < a.len() {
        let left = a.len() - i - 1;
        match a[i].to_ascii_uppercase().as_slice() {
            b"AUTH" if left >= 2 => {
                auth = Some((a[i + 1], a[i + 2]));
                i += 3;
            }
            b"SETNAME" if left >= 1 => {
                setname = Some(valid_name(a[i + 1])?);
                i += 2;
            }
            _ => return Err(CommandError::HelloSyntax(lossy(a[i]))),
        }
    }
    Ok(RespRequest::Hello {
        protover,
        auth,
        setname,
    })
}
