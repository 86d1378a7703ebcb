//! The `corekv` binary; the command line lives in the library.

/// mimalloc instead of glibc malloc: the request path allocates and frees small
/// buffers at a high rate on each core, and glibc's arenas spent about 10% of
/// the node's CPU in `_int_free`/`malloc_consolidate` under load (perf, issue 3).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, the
/// same in mimalloc 2 and 3; libmimalloc-sys names only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp` (mimalloc 3's option enum; not named by libmimalloc-sys).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

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
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // No transparent huge pages: a fault on fresh memory then zeroes 4 KiB,
        // not 2 MiB at once. On this project's VM a 2 MiB fault took ~5 ms and
        // they came in bursts as memtables and caches grew: a 3-node cluster
        // at 8,000 QUORUM SET/s had p99 50-80 ms with them and 6-7 ms without
        // (bench/RESULTS.md). Redis, MongoDB and Cassandra advise the same.
        // `MIMALLOC_ALLOW_THP`, when set, decides instead.
        // SAFETY: as above, an integer option; read at each OS allocation.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // mimalloc applies its option at start-up only; the kernel switch
        // covers every later mapping, mimalloc's arenas included.
        // SAFETY: PR_SET_THP_DISABLE takes integers and sets a flag of this
        // process; no memory is passed.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    corekv_tools::main()
}
