//! The `corekv` command line: clap's parse of every subcommand and, for
//! `serve`, the configuration its flags build (`corekv_tools::check_args`,
//! the same code `corekv` runs before it starts anything).
//!
//! Input: the arguments after the program name, separated by NUL bytes, as
//! raw OS strings (so non-UTF-8 arguments are fuzzed too). The first byte,
//! if it is below 10, picks a subcommand to put in front (`serve`, `get`,
//! `put`, `del`, `scan`, `status`, `repair`, `decommission`, `removenode`,
//! `tune`), so mutations start inside a subcommand's flags. Besides "no
//! panic": the error message is not empty.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;

const SUBCOMMANDS: [&str; 10] = [
    "serve",
    "get",
    "put",
    "del",
    "scan",
    "status",
    "repair",
    "decommission",
    "removenode",
    "tune",
];

fuzz_target!(|data: &[u8]| {
    let mut args: Vec<OsString> = vec![OsString::from("corekv")];
    let rest = match data.split_first() {
        Some((&b, rest)) if usize::from(b) < SUBCOMMANDS.len() => {
            args.push(OsString::from(SUBCOMMANDS[usize::from(b)]));
            rest
        }
        _ => data,
    };
    if !rest.is_empty() {
        args.extend(rest.split(|&b| b == 0).map(|a| OsString::from_vec(a.to_vec())));
    }
    // `--help` and `--version` are errors of kind DisplayHelp/DisplayVersion
    // in `try_get_matches_from`: nothing is printed, nothing exits.
    if let Err(e) = corekv_tools::check_args(args) {
        assert!(!e.is_empty(), "an empty error message");
    }
});
