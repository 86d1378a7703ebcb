//! The `corekv` binary; the command line lives in the library.

/// mimalloc instead of glibc malloc: the request path allocates and frees small
/// buffers at a high rate on each core, and glibc's arenas spent about 10% of
/// the node's CPU in `_int_free`/`malloc_consolidate` under load (perf, issue 3).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    corekv_tools::main()
}
