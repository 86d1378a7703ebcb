//! The `corekv` binary; the command line lives in the library.

fn main() -> std::process::ExitCode {
    corekv_tools::main()
}
