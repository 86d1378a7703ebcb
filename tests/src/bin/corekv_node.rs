//! The `corekv` command under a name the integration tests can locate
//! (`CARGO_BIN_EXE_corekv-node`); identical to tools' binary.

fn main() -> std::process::ExitCode {
    corekv_tools::main()
}
