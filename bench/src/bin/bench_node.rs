//! The `corekv` command under a name this package's integration tests can
//! locate (`CARGO_BIN_EXE_corekv-bench-node`), so `corekv-bench run
//! --spawn-node` can start a real node from `cargo test -p corekv-bench`
//! without building the tools package's binary first. Identical to `corekv`
//! except for the allocator (glibc here, mimalloc there): benchmark figures
//! come from the real `corekv` binary (`--corekv`, or the one beside
//! `corekv-bench`).

fn main() -> std::process::ExitCode {
    corekv_tools::main()
}
