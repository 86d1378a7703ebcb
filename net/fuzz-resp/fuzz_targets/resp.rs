//! The RESP codec on untrusted bytes: the command parser over a pipelined
//! buffer (plus typed request parsing), the reply parser, and the glob
//! matcher. Besides "no panic", it checks that consumed counts are sane, that
//! every prefix of a decoded item is "need more", and that encoding what was
//! decoded decodes again to the same thing.
#![no_main]

use corekv_net::resp::{
    encode_command, glob_match, parse_command, parse_value, Limits, Proto, ReplyWriter, RespRequest,
};
use libfuzzer_sys::fuzz_target;

/// Small limits so the fuzzer reaches every bound quickly.
const LIMITS: Limits = Limits { max_bulk: 256, max_args: 32, max_inline: 256, max_depth: 8 };

fn commands(data: &[u8]) {
    let mut pos = 0;
    while let Ok(Some((cmd, used))) = parse_command(&data[pos..], &LIMITS) {
        assert!(used > 0 && pos + used <= data.len());
        // A prefix of a complete command is never an error nor a command: it
        // is "need more" (a shorter inline line cannot end before its newline).
        if used > 1 {
            let cut = &data[pos..pos + used - 1];
            assert_eq!(parse_command(cut, &LIMITS), Ok(None));
        }
        let mut wire = Vec::new();
        encode_command(&mut wire, &cmd.args);
        let (again, n) = parse_command(&wire, &LIMITS).ok().flatten().expect("re-encoded command parses");
        assert_eq!(n, wire.len());
        assert_eq!(again.args, cmd.args);
        let _ = RespRequest::parse(&cmd);
        pos += used;
    }
}

fn replies(data: &[u8]) {
    let Ok(Some((v, used))) = parse_value(data, &LIMITS) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    assert_eq!(parse_value(&data[..used - 1], &LIMITS), Ok(None));
    // The writer normalises (CR/LF in lines, "infinity" -> "inf"), so compare
    // the second encoding with the first rather than values (NaN != NaN).
    let w3 = ReplyWriter::new(Proto::Resp3);
    let mut first = Vec::new();
    w3.value(&mut first, &v);
    let (v2, n) = parse_value(&first, &LIMITS).ok().flatten().expect("re-encoded reply parses");
    assert_eq!(n, first.len());
    let mut second = Vec::new();
    w3.value(&mut second, &v2);
    assert_eq!(first, second);
    let mut resp2 = Vec::new();
    ReplyWriter::new(Proto::Resp2).value(&mut resp2, &v);
    let (_, n) = parse_value(&resp2, &LIMITS).ok().flatten().expect("RESP2 downgrade parses");
    assert_eq!(n, resp2.len());
}

fn glob(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (pattern, key) = rest.split_at(at);
    let hit = glob_match(pattern, key);
    if !pattern.iter().any(|b| b"*?[\\".contains(b)) {
        assert_eq!(hit, pattern == key, "a pattern without metacharacters is a literal");
    }
}

fuzz_target!(|data: &[u8]| {
    commands(data);
    replies(data);
    glob(data);
});
