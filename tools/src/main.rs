//! The `corekv` binary; the command line lives in the library.

/// mimalloc instead of glibc malloc: the request path allocates and frees small
/// buffers at a high rate on each core, and glibc's arenas spent about 10% of
/// the node's CPU in `_int_free`/`malloc_consolidate` under load (perf, issue 3).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, the
/// same in mimalloc 2 and 3; libmimalloc-sys names only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // mimalloc hands freed pages back to the kernel after a delay (1 s), and
    // the next allocation there faults them in again, zeroed. An LSM store
    // frees a whole memtable at a time and refills another at once, so
    // under a write load a third of the node's CPU went to `clear_page`
    // (perf, `redis-benchmark -t set -P 16`, bench/RESULTS.md): 96k -> 108k
    // SET/s with purging off. A node's memory is bounded by its budgets, so
    // keeping its peak is what a database process should do (Redis keeps
    // jemalloc's pages the same way). `MIMALLOC_PURGE_DELAY`, when set,
    // still decides.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator this binary
        // links; mimalloc reads it at each purge, so setting it after
        // allocations have happened is allowed.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    corekv_tools::main()
}
