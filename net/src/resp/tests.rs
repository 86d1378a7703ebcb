use super::*;
use proptest::prelude::*;

fn lim() -> Limits {
    Limits::default()
}

fn cmd(buf: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let (c, n) = parse_command(buf, &lim()).unwrap().unwrap();
    (c.args.iter().map(|a| a.to_vec()).collect(), n)
}

fn words(s: &[&str]) -> Vec<Vec<u8>> {
    s.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn req(args: &[&str]) -> Result<RespRequest<'static>, CommandError> {
    let owned: Vec<&'static [u8]> = args
        .iter()
        .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
        .collect();
    RespRequest::parse(&Command { args: owned })
}

fn err_text(args: &[&str]) -> String {
    req(args).unwrap_err().to_string()
}

// ---------- command decoding ----------

#[test]
fn multibulk_command() {
    let (a, n) = cmd(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
    assert_eq!(a, words(&["GET", "key"]));
    assert_eq!(n, 22);
}

#[test]
fn binary_and_empty_bulk() {
    let (a, _) = cmd(b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\n\r\n\x00\xff\r\n");
    assert_eq!(a, vec![b"SET".to_vec(), vec![], b"\r\n\x00\xff".to_vec()]);
}

#[test]
fn inline_commands() {
    assert_eq!(cmd(b"PING\r\n"), (words(&["PING"]), 6));
    assert_eq!(cmd(b"PING\n"), (words(&["PING"]), 5));
    assert_eq!(cmd(b"  set  k \t v  \r\n").0, words(&["set", "k", "v"]));
    assert_eq!(cmd(b"set \"a b\" 'c d'\r\n").0, words(&["set", "a b", "c d"]));
    assert_eq!(cmd(b"set \"\" x\r\n").0, words(&["set", "", "x"]));
    assert_eq!(cmd(b"\r\n"), (vec![], 2), "blank line is an empty command");
    assert_eq!(cmd(b"*0\r\n"), (vec![], 4));
}

#[test]
fn inline_errors() {
    let l = lim();
    assert_eq!(parse_command(b"set \"a b\r\n", &l), Err(RespError::UnbalancedQuotes));
    assert_eq!(parse_command(b"set \"a\"b\r\n", &l), Err(RespError::UnbalancedQuotes));
    assert_eq!(parse_command(b"set \"a\\nb\"\r\n", &l), Err(RespError::InlineEscape));
    let small = Limits {
        max_inline: 10,
        max_args: 2,
        ..lim()
    };
    assert_eq!(parse_command(b"0123456789", &small), Ok(None));
    assert_eq!(parse_command(b"0123456789a", &small), Err(RespError::InlineTooLong));
    assert!(parse_command(b"012345678\n", &small).unwrap().is_some());
    assert_eq!(parse_command(b"a b c\n", &small), Err(RespError::InlineTooManyArgs));
}

#[test]
fn multibulk_errors() {
    let l = lim();
    assert_eq!(parse_command(b"*-1\r\n", &l), Err(RespError::InvalidMultibulkLength));
    assert_eq!(parse_command(b"*x\r\n", &l), Err(RespError::InvalidMultibulkLength));
    assert_eq!(parse_command(b"*+1\r\n", &l), Err(RespError::InvalidMultibulkLength));
    assert_eq!(
        parse_command(b"*99999999999999999999\r\n", &l),
        Err(RespError::InvalidMultibulkLength)
    );
    assert_eq!(parse_command(b"*1\r\n$-1\r\n", &l), Err(RespError::InvalidBulkLength));
    assert_eq!(parse_command(b"*1\r\n$-5\r\n", &l), Err(RespError::InvalidBulkLength));
    assert_eq!(
        parse_command(b"*1\r\n$9223372036854775807\r\n", &l),
        Err(RespError::InvalidBulkLength)
    );
    assert_eq!(parse_command(b"*1\r\n+OK\r\n", &l), Err(RespError::ExpectedBulk(b'+')));
    assert_eq!(
        parse_command(b"*1\r\n$2\r\nabcd\r\n", &l),
        Err(RespError::BulkNotTerminated)
    );
    assert_eq!(parse_command(b"*1\rx", &l), Err(RespError::BadLineEnding));
    assert_eq!(parse_command(&[b'*'; 40], &l), Err(RespError::LengthLineTooLong));
    let small = Limits {
        max_bulk: 4,
        max_args: 2,
        ..lim()
    };
    assert_eq!(parse_command(b"*3\r\n", &small), Err(RespError::InvalidMultibulkLength));
    assert_eq!(parse_command(b"*2\r\n", &small), Ok(None));
    // The bulk limit is enforced from the header alone, before the body arrives.
    assert_eq!(
        parse_command(b"*1\r\n$5\r\n", &small),
        Err(RespError::InvalidBulkLength)
    );
    assert_eq!(parse_command(b"*1\r\n$4\r\n", &small), Ok(None));
}

#[test]
fn huge_count_does_not_allocate_up_front() {
    // 1M args announced, 4 bytes present: must answer need-more without a 16 MiB Vec.
    assert_eq!(parse_command(b"*1048576\r\n", &lim()), Ok(None));
    assert_eq!(parse_value(b"*1048576\r\n", &lim()), Ok(None));
}

#[test]
fn pipelined_commands() {
    let buf = b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let mut pos = 0;
    let mut got = vec![];
    while let Some((c, n)) = parse_command(&buf[pos..], &lim()).unwrap() {
        got.push(c.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
        pos += n;
    }
    assert_eq!(pos, buf.len());
    assert_eq!(
        got,
        vec![words(&["PING"]), words(&["ECHO", "hi"]), words(&["GET", "k"])]
    );
}

#[test]
fn every_prefix_needs_more() {
    let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n";
    let mut starts = vec![0];
    let mut pos = 0;
    while let Some((_, n)) = parse_command(&buf[pos..], &lim()).unwrap() {
        pos += n;
        starts.push(pos);
    }
    assert_eq!(pos, buf.len());
    for w in starts.windows(2) {
        for end in w[0]..w[1] {
            assert_eq!(
                parse_command(&buf[w[0]..end], &lim()),
                Ok(None),
                "prefix {:?}",
                &buf[w[0]..end]
            );
        }
        assert_eq!(parse_command(&buf[w[0]..w[1]], &lim()).unwrap().unwrap().1, w[1] - w[0]);
    }
}

// ---------- reply decoding ----------

fn val(buf: &[u8]) -> Value<'_> {
    let (v, n) = parse_value(buf, &lim()).unwrap().unwrap();
    assert_eq!(n, buf.len());
    v
}

#[test]
fn resp2_values() {
    assert_eq!(val(b"+OK\r\n"), Value::Simple(b"OK"));
    assert_eq!(val(b"-ERR bad\r\n"), Value::Error(b"ERR bad"));
    assert_eq!(val(b":-42\r\n"), Value::Integer(-42));
    assert_eq!(val(b":-9223372036854775808\r\n"), Value::Integer(i64::MIN));
    assert_eq!(val(b"$3\r\nfoo\r\n"), Value::Bulk(b"foo"));
    assert_eq!(val(b"$-1\r\n"), Value::Null);
    assert_eq!(val(b"*-1\r\n"), Value::Null);
    assert_eq!(
        val(b"*2\r\n:1\r\n$-1\r\n"),
        Value::Array(vec![Value::Integer(1), Value::Null])
    );
}

#[test]
fn resp3_values() {
    assert_eq!(val(b"_\r\n"), Value::Null);
    assert_eq!(val(b",1.5\r\n"), Value::Double(1.5));
    assert_eq!(val(b",inf\r\n"), Value::Double(f64::INFINITY));
    assert_eq!(val(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
    assert!(matches!(val(b",nan\r\n"), Value::Double(x) if x.is_nan()));
    assert_eq!(val(b"#t\r\n"), Value::Boolean(true));
    assert_eq!(val(b"#f\r\n"), Value::Boolean(false));
    assert_eq!(
        val(b"=7\r\ntxt:abc\r\n"),
        Value::Verbatim {
            format: b"txt",
            text: b"abc"
        }
    );
    assert_eq!(
        val(b"(-123456789012345678901234567890\r\n"),
        Value::BigNumber(b"-123456789012345678901234567890")
    );
    assert_eq!(val(b"!3\r\nERR\r\n"), Value::BlobError(b"ERR"));
    assert_eq!(
        val(b"%1\r\n+a\r\n:1\r\n"),
        Value::Map(vec![(Value::Simple(b"a"), Value::Integer(1))])
    );
    assert_eq!(val(b"~1\r\n#t\r\n"), Value::Set(vec![Value::Boolean(true)]));
    assert_eq!(
        val(b">2\r\n+message\r\n$1\r\nx\r\n"),
        Value::Push(vec![Value::Simple(b"message"), Value::Bulk(b"x")])
    );
}

#[test]
fn value_errors() {
    let l = lim();
    for (bad, e) in [
        (&b"?x\r\n"[..], RespError::UnknownType(b'?')),
        (b":1.5\r\n", RespError::InvalidInteger),
        (b",abc\r\n", RespError::InvalidDouble),
        (b"#x\r\n", RespError::InvalidBoolean),
        (b"_x\r\n", RespError::InvalidNull),
        (b"(12a\r\n", RespError::InvalidBigNumber),
        (b"(\r\n", RespError::InvalidBigNumber),
        (b"=2\r\nab\r\n", RespError::InvalidVerbatim),
        (b"$-2\r\n", RespError::InvalidBulkLength),
        (b"!-1\r\n", RespError::InvalidBulkLength),
        (b"~-1\r\n", RespError::InvalidMultibulkLength),
        (b"%-1\r\n", RespError::InvalidMultibulkLength),
        (b"*-2\r\n", RespError::InvalidMultibulkLength),
    ] {
        assert_eq!(parse_value(bad, &l), Err(e), "{:?}", String::from_utf8_lossy(bad));
    }
    let shallow = Limits { max_depth: 2, ..l };
    assert!(parse_value(b"*1\r\n*1\r\n:1\r\n", &shallow).is_ok());
    assert_eq!(
        parse_value(b"*1\r\n*1\r\n*1\r\n:1\r\n", &shallow),
        Err(RespError::TooDeep)
    );
    let short = Limits { max_inline: 3, ..l };
    assert_eq!(parse_value(b"+abcd", &short), Err(RespError::LineTooLong));
    assert_eq!(parse_value(b"+abc", &short), Ok(None));
}

// ---------- encoding ----------

fn enc(proto: Proto, f: impl Fn(&ReplyWriter, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![];
    f(&ReplyWriter::new(proto), &mut out);
    out
}

#[test]
fn encoder_common() {
    for p in [Proto::Resp2, Proto::Resp3] {
        assert_eq!(enc(p, |w, o| w.simple(o, b"OK")), b"+OK\r\n");
        assert_eq!(enc(p, |w, o| w.ok(o)), b"+OK\r\n");
        assert_eq!(enc(p, |w, o| w.simple(o, b"a\r\nb")), b"+a  b\r\n");
        assert_eq!(enc(p, |w, o| w.integer(o, -7)), b":-7\r\n");
        assert_eq!(enc(p, |w, o| w.bulk(o, b"hi")), b"$2\r\nhi\r\n");
        assert_eq!(enc(p, |w, o| w.bulk(o, b"")), b"$0\r\n\r\n");
        assert_eq!(enc(p, |w, o| w.array(o, 3)), b"*3\r\n");
        assert_eq!(enc(p, |w, o| w.error(o, "ERR syntax error")), b"-ERR syntax error\r\n");
        assert_eq!(enc(p, |w, o| w.error(o, "WRONGTYPE x")), b"-WRONGTYPE x\r\n");
        assert_eq!(enc(p, |w, o| w.error(o, "oops\nbad")), b"-ERR oops bad\r\n");
        assert_eq!(
            enc(p, |w, o| w.wrongtype(o)),
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        );
        assert_eq!(
            enc(p, |w, o| w.protocol_error(o, &RespError::InvalidBulkLength)),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            enc(p, |w, o| w.protocol_error(o, &RespError::ExpectedBulk(b'+'))),
            b"-ERR Protocol error: expected '$', got '+'\r\n"
        );
    }
}

#[test]
fn encoder_resp2_downgrades() {
    let p = Proto::Resp2;
    assert_eq!(enc(p, |w, o| w.null(o)), b"$-1\r\n");
    assert_eq!(enc(p, |w, o| w.null_array(o)), b"*-1\r\n");
    assert_eq!(enc(p, |w, o| w.map(o, 2)), b"*4\r\n");
    assert_eq!(enc(p, |w, o| w.set(o, 2)), b"*2\r\n");
    assert_eq!(enc(p, |w, o| w.push(o, 2)), b"*2\r\n");
    assert_eq!(enc(p, |w, o| w.double(o, 1.5)), b"$3\r\n1.5\r\n");
    assert_eq!(enc(p, |w, o| w.boolean(o, true)), b":1\r\n");
    assert_eq!(enc(p, |w, o| w.boolean(o, false)), b":0\r\n");
    assert_eq!(enc(p, |w, o| w.verbatim(o, b"txt", b"abc")), b"$3\r\nabc\r\n");
    assert_eq!(enc(p, |w, o| w.big_number(o, b"123")), b"$3\r\n123\r\n");
}

#[test]
fn encoder_resp3() {
    let p = Proto::Resp3;
    assert_eq!(enc(p, |w, o| w.null(o)), b"_\r\n");
    assert_eq!(enc(p, |w, o| w.null_array(o)), b"_\r\n");
    assert_eq!(enc(p, |w, o| w.map(o, 2)), b"%2\r\n");
    assert_eq!(enc(p, |w, o| w.set(o, 2)), b"~2\r\n");
    assert_eq!(enc(p, |w, o| w.push(o, 2)), b">2\r\n");
    assert_eq!(enc(p, |w, o| w.double(o, 1.5)), b",1.5\r\n");
    assert_eq!(enc(p, |w, o| w.double(o, f64::INFINITY)), b",inf\r\n");
    assert_eq!(enc(p, |w, o| w.double(o, f64::NEG_INFINITY)), b",-inf\r\n");
    assert_eq!(enc(p, |w, o| w.double(o, f64::NAN)), b",nan\r\n");
    assert_eq!(enc(p, |w, o| w.boolean(o, true)), b"#t\r\n");
    assert_eq!(enc(p, |w, o| w.verbatim(o, b"txt", b"abc")), b"=7\r\ntxt:abc\r\n");
    assert_eq!(enc(p, |w, o| w.big_number(o, b"-1")), b"(-1\r\n");
}

#[test]
fn unknown_command_text() {
    assert_eq!(
        unknown_command_message(b"foo", &[b"a", b"b"]),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        unknown_command_message(b"foo", &[]),
        "ERR unknown command 'foo', with args beginning with: "
    );
    let long = vec![b'x'; 300];
    let m = unknown_command_message(&long, &[&long, &long]);
    assert!(m.len() < 128 + 128 + 80, "{}", m.len());
    let mut out = vec![];
    ReplyWriter::default().error(&mut out, &unknown_command_message(b"f\r\no", &[b"a\nb"]));
    assert_eq!(
        out,
        b"-ERR unknown command 'f  o', with args beginning with: 'a b' \r\n"
    );
    assert_eq!(
        req(&["FOO", "x"]).unwrap(),
        RespRequest::UnknownCommand {
            name: b"FOO",
            args: vec![b"x"]
        }
    );
    assert!(matches!(
        req(&["getttttttttttt"]).unwrap(),
        RespRequest::UnknownCommand { .. }
    ));
}

// ---------- typed requests ----------

#[test]
fn case_insensitive_names_and_options() {
    for name in ["get", "GET", "Get", "gEt"] {
        assert_eq!(req(&[name, "k"]).unwrap(), RespRequest::Get(b"k"));
    }
    assert_eq!(
        req(&["sEt", "k", "v", "nx", "Ex", "5"]).unwrap(),
        RespRequest::Set(SetArgs {
            key: b"k",
            value: b"v",
            expire: Some(Expire::Seconds(5)),
            cond: Some(SetCond::IfAbsent)
        })
    );
    assert_eq!(req(&["PiNg"]).unwrap(), RespRequest::Ping(None));
}

#[test]
fn arity_errors_in_redis_wording() {
    for (args, name) in [
        (&["get"][..], "get"),
        (&["get", "a", "b"], "get"),
        (&["set", "k"], "set"),
        (&["del"], "del"),
        (&["exists"], "exists"),
        (&["mget"], "mget"),
        (&["mset", "k"], "mset"),
        (&["mset", "k", "v", "k2"], "mset"),
        (&["incr"], "incr"),
        (&["incrby", "k"], "incrby"),
        (&["decr", "a", "b"], "decr"),
        (&["decrby", "k"], "decrby"),
        (&["expire", "k"], "expire"),
        (&["pexpire", "k"], "pexpire"),
        (&["ttl"], "ttl"),
        (&["pttl", "a", "b"], "pttl"),
        (&["scan"], "scan"),
        (&["keys"], "keys"),
        (&["ping", "a", "b"], "ping"),
        (&["echo"], "echo"),
        (&["select"], "select"),
        (&["client"], "client"),
        (&["client", "setname"], "client|setname"),
        (&["client", "getname", "x"], "client|getname"),
        (&["command", "count", "x"], "command|count"),
    ] {
        assert_eq!(
            err_text(args),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{args:?}"
        );
    }
}

#[test]
fn simple_commands() {
    assert_eq!(req(&["del", "a", "b"]).unwrap(), RespRequest::Del(vec![b"a", b"b"]));
    assert_eq!(req(&["exists", "a"]).unwrap(), RespRequest::Exists(vec![b"a"]));
    assert_eq!(req(&["mget", "a", "b"]).unwrap(), RespRequest::MGet(vec![b"a", b"b"]));
    assert_eq!(
        req(&["mset", "a", "1", "b", "2"]).unwrap(),
        RespRequest::MSet(vec![(&b"a"[..], &b"1"[..]), (b"b", b"2")])
    );
    assert_eq!(req(&["incr", "k"]).unwrap(), RespRequest::IncrBy { key: b"k", by: 1 });
    assert_eq!(req(&["decr", "k"]).unwrap(), RespRequest::IncrBy { key: b"k", by: -1 });
    assert_eq!(
        req(&["incrby", "k", "-5"]).unwrap(),
        RespRequest::IncrBy { key: b"k", by: -5 }
    );
    assert_eq!(
        req(&["decrby", "k", "5"]).unwrap(),
        RespRequest::IncrBy { key: b"k", by: -5 }
    );
    assert_eq!(
        req(&["ttl", "k"]).unwrap(),
        RespRequest::Ttl {
            key: b"k",
            millis: false
        }
    );
    assert_eq!(
        req(&["pttl", "k"]).unwrap(),
        RespRequest::Ttl {
            key: b"k",
            millis: true
        }
    );
    assert_eq!(req(&["keys", "*"]).unwrap(), RespRequest::Keys(b"*"));
    assert_eq!(req(&["ping", "hi"]).unwrap(), RespRequest::Ping(Some(b"hi")));
    assert_eq!(req(&["echo", "hi"]).unwrap(), RespRequest::Echo(b"hi"));
    assert_eq!(req(&["info"]).unwrap(), RespRequest::Info(vec![]));
    assert_eq!(
        req(&["info", "server", "keyspace"]).unwrap(),
        RespRequest::Info(vec![b"server", b"keyspace"])
    );
    assert_eq!(req(&["select", "0"]).unwrap(), RespRequest::Select(0));
    assert_eq!(req(&["quit"]).unwrap(), RespRequest::Quit);
    assert_eq!(RespRequest::parse(&Command::default()).unwrap(), RespRequest::Empty);
}

#[test]
fn integer_errors() {
    const NOT_INT: &str = "ERR value is not an integer or out of range";
    for args in [
        &["incrby", "k", "x"][..],
        &["incrby", "k", "1.5"],
        &["incrby", "k", " 1"],
        &["incrby", "k", "+1"],
        &["incrby", "k", "01"],
        &["incrby", "k", "-0"],
        &["incrby", "k", ""],
        &["incrby", "k", "9223372036854775808"],
        &["decrby", "k", "-9223372036854775808"],
        &["expire", "k", "abc"],
        &["pexpire", "k", "1e3"],
        &["select", "x"],
        &["set", "k", "v", "EX", "x"],
        &["scan", "0", "COUNT", "x"],
    ] {
        assert_eq!(err_text(args), NOT_INT, "{args:?}");
    }
    assert_eq!(
        req(&["incrby", "k", "-9223372036854775808"]).unwrap(),
        RespRequest::IncrBy {
            key: b"k",
            by: i64::MIN
        }
    );
    assert_eq!(
        req(&["incrby", "k", "9223372036854775807"]).unwrap(),
        RespRequest::IncrBy {
            key: b"k",
            by: i64::MAX
        }
    );
}

#[test]
fn set_options() {
    let set = |args: &[&str]| match req(args).unwrap() {
        RespRequest::Set(s) => s,
        other => unreachable!("{other:?}"),
    };
    let s = set(&["set", "k", "v"]);
    assert_eq!((s.expire, s.cond), (None, None));
    assert_eq!(set(&["set", "k", "v", "px", "100"]).expire, Some(Expire::Millis(100)));
    assert_eq!(
        set(&["set", "k", "v", "exat", "100"]).expire,
        Some(Expire::AtSeconds(100))
    );
    assert_eq!(
        set(&["set", "k", "v", "pxat", "100"]).expire,
        Some(Expire::AtMillis(100))
    );
    assert_eq!(set(&["set", "k", "v", "xx"]).cond, Some(SetCond::IfPresent));
    assert_eq!(set(&["set", "k", "v", "EX", "1", "XX"]).cond, Some(SetCond::IfPresent));
    let syntax = "ERR syntax error";
    assert_eq!(err_text(&["set", "k", "v", "NX", "XX"]), syntax);
    assert_eq!(err_text(&["set", "k", "v", "EX", "1", "PX", "1"]), syntax);
    assert_eq!(err_text(&["set", "k", "v", "EX"]), syntax);
    assert_eq!(err_text(&["set", "k", "v", "FOO"]), syntax);
    assert_eq!(
        err_text(&["set", "k", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err_text(&["set", "k", "v", "PX", "-1"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err_text(&["set", "k", "v", "EX", "9223372036854775807"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err_text(&["set", "k", "v", "KEEPTTL"]),
        "ERR SET option 'KEEPTTL' is not supported"
    );
    assert_eq!(
        err_text(&["set", "k", "v", "get"]),
        "ERR SET option 'GET' is not supported"
    );
}

#[test]
fn expire_options() {
    assert_eq!(
        req(&["expire", "k", "10"]).unwrap(),
        RespRequest::Expire {
            key: b"k",
            millis: 10_000,
            cond: None
        }
    );
    assert_eq!(
        req(&["pexpire", "k", "10"]).unwrap(),
        RespRequest::Expire {
            key: b"k",
            millis: 10,
            cond: None
        }
    );
    assert_eq!(
        req(&["expire", "k", "-1"]).unwrap(),
        RespRequest::Expire {
            key: b"k",
            millis: -1000,
            cond: None
        }
    );
    assert_eq!(
        req(&["expire", "k", "1", "nx"]).unwrap(),
        RespRequest::Expire {
            key: b"k",
            millis: 1000,
            cond: Some(ExpireCond::Nx)
        }
    );
    assert_eq!(
        req(&["expire", "k", "1", "xx", "gt"]).unwrap(),
        RespRequest::Expire {
            key: b"k",
            millis: 1000,
            cond: Some(ExpireCond::Gt)
        }
    );
    assert_eq!(
        req(&["pexpire", "k", "1", "lt"]).unwrap(),
        RespRequest::Expire {
            key: b"k",
            millis: 1,
            cond: Some(ExpireCond::Lt)
        }
    );
    assert_eq!(
        req(&["pexpire", "k", "1", "xx"]).unwrap(),
        RespRequest::Expire {
            key: b"k",
            millis: 1,
            cond: Some(ExpireCond::Xx)
        }
    );
    assert_eq!(
        err_text(&["expire", "k", "1", "nx", "xx"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err_text(&["expire", "k", "1", "gt", "lt"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(err_text(&["expire", "k", "1", "foo"]), "ERR Unsupported option foo");
    assert_eq!(
        err_text(&["expire", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expire' command"
    );
}

#[test]
fn scan_options() {
    assert_eq!(
        req(&["scan", "0"]).unwrap(),
        RespRequest::Scan(ScanArgs {
            cursor: 0,
            pattern: None,
            count: None,
            type_: None
        })
    );
    assert_eq!(
        req(&[
            "scan",
            "18446744073709551615",
            "match",
            "a*",
            "COUNT",
            "100",
            "type",
            "string"
        ])
        .unwrap(),
        RespRequest::Scan(ScanArgs {
            cursor: u64::MAX,
            pattern: Some(b"a*"),
            count: Some(100),
            type_: Some(b"string")
        })
    );
    for bad in ["x", "-1", "18446744073709551616", "", "+1"] {
        assert_eq!(err_text(&["scan", bad]), "ERR invalid cursor", "{bad}");
    }
    assert_eq!(err_text(&["scan", "0", "COUNT", "0"]), "ERR syntax error");
    assert_eq!(err_text(&["scan", "0", "MATCH"]), "ERR syntax error");
    assert_eq!(err_text(&["scan", "0", "FOO", "x"]), "ERR syntax error");
}

#[test]
fn hello_and_client() {
    assert_eq!(
        req(&["hello"]).unwrap(),
        RespRequest::Hello {
            protover: None,
            auth: None,
            setname: None
        }
    );
    assert_eq!(
        req(&["HELLO", "3", "auth", "u", "p", "setname", "me"]).unwrap(),
        RespRequest::Hello {
            protover: Some(3),
            auth: Some((b"u", b"p")),
            setname: Some(b"me")
        }
    );
    assert_eq!(
        req(&["hello", "2"]).unwrap(),
        RespRequest::Hello {
            protover: Some(2),
            auth: None,
            setname: None
        }
    );
    assert_eq!(err_text(&["hello", "4"]), "NOPROTO unsupported protocol version");
    assert_eq!(err_text(&["hello", "1"]), "NOPROTO unsupported protocol version");
    assert_eq!(
        err_text(&["hello", "x"]),
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        err_text(&["hello", "3", "auth", "u"]),
        "ERR Syntax error in HELLO option 'auth'"
    );
    assert_eq!(
        err_text(&["hello", "3", "foo"]),
        "ERR Syntax error in HELLO option 'foo'"
    );
    assert_eq!(
        err_text(&["hello", "3", "setname", "a b"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        req(&["client", "setname", "me"]).unwrap(),
        RespRequest::Client(ClientRequest::SetName(b"me"))
    );
    assert_eq!(
        req(&["client", "setname", ""]).unwrap(),
        RespRequest::Client(ClientRequest::SetName(b""))
    );
    assert_eq!(
        req(&["CLIENT", "GETNAME"]).unwrap(),
        RespRequest::Client(ClientRequest::GetName)
    );
    assert_eq!(req(&["client", "id"]).unwrap(), RespRequest::Client(ClientRequest::Id));
    assert_eq!(
        err_text(&["client", "setname", "a\nb"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        err_text(&["client", "kill"]),
        "ERR unknown subcommand 'kill'. Try CLIENT HELP."
    );
}

#[test]
fn command_command() {
    assert_eq!(req(&["command"]).unwrap(), RespRequest::Command(CommandRequest::List));
    assert_eq!(
        req(&["COMMAND", "count"]).unwrap(),
        RespRequest::Command(CommandRequest::Count)
    );
    assert_eq!(
        req(&["command", "docs"]).unwrap(),
        RespRequest::Command(CommandRequest::Docs(vec![]))
    );
    assert_eq!(
        req(&["command", "info", "get"]).unwrap(),
        RespRequest::Command(CommandRequest::Info(vec![b"get"]))
    );
    assert_eq!(
        err_text(&["command", "bogus"]),
        "ERR unknown subcommand 'bogus'. Try COMMAND HELP."
    );
}

#[test]
fn end_to_end_over_the_wire() {
    let mut buf = vec![];
    encode_command(&mut buf, &[b"SET", b"k", b"v", b"PX", b"5"]);
    buf.extend_from_slice(b"get k\r\n");
    let (c, n) = parse_command(&buf, &lim()).unwrap().unwrap();
    assert!(matches!(
        RespRequest::parse(&c).unwrap(),
        RespRequest::Set(SetArgs {
            expire: Some(Expire::Millis(5)),
            ..
        })
    ));
    let (c, m) = parse_command(&buf[n..], &lim()).unwrap().unwrap();
    assert_eq!(RespRequest::parse(&c).unwrap(), RespRequest::Get(b"k"));
    assert_eq!(n + m, buf.len());
}

// ---------- properties ----------

fn arb_value() -> impl Strategy<Value = Value<'static>> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..20).prop_map(|v| &*Box::leak(v.into_boxed_slice()));
    let line = || "[a-zA-Z0-9 :]{0,20}".prop_map(|s| &*Box::leak(s.into_bytes().into_boxed_slice()));
    let leaf = prop_oneof![
        line().prop_map(Value::Simple),
        line().prop_map(Value::Error),
        any::<i64>().prop_map(Value::Integer),
        bytes().prop_map(Value::Bulk),
        Just(Value::Null),
        any::<f64>()
            .prop_filter("nan never equals", |x| !x.is_nan())
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        (prop_oneof![Just(&b"txt"[..]), Just(&b"mkd"[..])], bytes())
            .prop_map(|(format, text)| Value::Verbatim { format, text }),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Value::BigNumber(Box::leak(s.into_bytes().into_boxed_slice()))),
        bytes().prop_map(Value::BlobError),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Set),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Push),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #[test]
    fn command_round_trip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12)) {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let mut buf = vec![];
        encode_command(&mut buf, &refs);
        let (c, n) = parse_command(&buf, &lim()).unwrap().unwrap();
        prop_assert_eq!(n, buf.len());
        prop_assert_eq!(&c.args, &refs);
        for end in 0..buf.len() {
            prop_assert_eq!(parse_command(&buf[..end], &lim()), Ok(None));
        }
    }

    #[test]
    fn inline_round_trip(args in proptest::collection::vec("[a-zA-Z0-9_:-][a-zA-Z0-9_:*-]{0,9}", 1..8)) {
        let line = args.join(" ") + "\r\n";
        let (c, n) = parse_command(line.as_bytes(), &lim()).unwrap().unwrap();
        prop_assert_eq!(n, line.len());
        let want: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        prop_assert_eq!(c.args, want);
    }

    #[test]
    fn value_round_trip_resp3(v in arb_value()) {
        let mut buf = vec![];
        ReplyWriter::new(Proto::Resp3).value(&mut buf, &v);
        let (back, n) = parse_value(&buf, &lim()).unwrap().unwrap();
        prop_assert_eq!(n, buf.len());
        prop_assert_eq!(back, v);
        for end in 0..buf.len() {
            prop_assert_eq!(parse_value(&buf[..end], &lim()), Ok(None));
        }
    }

    #[test]
    fn value_resp2_always_decodes(v in arb_value()) {
        // A RESP2 client must be able to decode every downgraded reply with
        // only RESP2 types.
        let mut buf = vec![];
        ReplyWriter::new(Proto::Resp2).value(&mut buf, &v);
        prop_assert!(buf.iter().all(|_| true));
        prop_assert!(matches!(buf.first(), Some(b'+' | b'-' | b':' | b'$' | b'*')));
        let (_, n) = parse_value(&buf, &lim()).unwrap().unwrap();
        prop_assert_eq!(n, buf.len());
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let l = Limits { max_bulk: 64, max_args: 16, max_inline: 64, max_depth: 8 };
        if let Ok(Some((c, n))) = parse_command(&data, &l) {
            prop_assert!(n > 0 && n <= data.len());
            let _ = RespRequest::parse(&c);
        }
        if let Ok(Some((_, n))) = parse_value(&data, &l) {
            prop_assert!(n > 0 && n <= data.len());
        }
    }

    #[test]
    fn resp_shaped_garbage_never_panics(
        parts in proptest::collection::vec(prop_oneof![
            Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()), Just(b"-1".to_vec()),
            Just(b"%".to_vec()), Just(b"~".to_vec()), Just(b"=".to_vec()), Just(b"3".to_vec()),
            Just(b"\"".to_vec()), Just(b" ".to_vec()), Just(b"get".to_vec()), Just(b"set".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ], 0..40)
    ) {
        let data = parts.concat();
        let l = Limits { max_bulk: 64, max_args: 16, max_inline: 64, max_depth: 8 };
        if let Ok(Some((c, _))) = parse_command(&data, &l) {
            let _ = RespRequest::parse(&c);
        }
        let _ = parse_value(&data, &l);
    }

    #[test]
    fn random_commands_parse_without_panic(
        name in prop_oneof![
            Just("get"), Just("set"), Just("del"), Just("mset"), Just("incrby"), Just("expire"), Just("scan"),
            Just("hello"), Just("client"), Just("command"), Just("ping"), Just("select"),
        ],
        rest in proptest::collection::vec(prop_oneof![
            Just("EX".to_string()), Just("PX".to_string()), Just("NX".to_string()), Just("XX".to_string()),
            Just("MATCH".to_string()), Just("COUNT".to_string()), Just("AUTH".to_string()),
            Just("SETNAME".to_string()), "-?[0-9]{1,21}", "[a-z]{0,5}",
        ], 0..8)
    ) {
        let mut args: Vec<&[u8]> = vec![name.as_bytes()];
        args.extend(rest.iter().map(|s| s.as_bytes()));
        let _ = RespRequest::parse(&Command { args });
    }
}

#[test]
fn string2ll_semantics() {
    use super::decode::parse_i64;
    // The cases from Redis' util.c string2ll tests.
    for bad in [
        "+1",
        " 1",
        "1 ",
        "01",
        "-",
        "",
        "-0",
        "-01",
        "-9223372036854775809",
        "9223372036854775808",
        "1a",
    ] {
        assert_eq!(parse_i64(bad.as_bytes()), None, "{bad:?}");
    }
    for (s, v) in [
        ("-1", -1),
        ("0", 0),
        ("1", 1),
        ("99", 99),
        ("-99", -99),
        ("-9223372036854775808", i64::MIN),
        ("9223372036854775807", i64::MAX),
    ] {
        assert_eq!(parse_i64(s.as_bytes()), Some(v), "{s:?}");
    }
}

#[test]
fn max_bulk_header_waits_for_body() {
    // A 512 MiB bulk is within the default limit: the header alone is "need
    // more", and the parser has allocated nothing for the body.
    assert_eq!(parse_command(b"*2\r\n$3\r\nSET\r\n$536870912\r\n", &lim()), Ok(None));
    assert_eq!(
        parse_command(b"*2\r\n$3\r\nSET\r\n$536870913\r\n", &lim()),
        Err(RespError::InvalidBulkLength)
    );
}
