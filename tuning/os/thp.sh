#!/bin/sh
# Transparent huge pages: "madvise" (or "never"), not "always".
# With "always", khugepaged compacts and collapses pages in the background and
# page faults may stall on direct compaction: latency spikes of milliseconds
# on a node whose requests take microseconds. corekv allocates through
# mimalloc, which does not need THP to perform. "madvise" keeps huge pages for
# programs that ask for them.
# Run as root at boot; MODE defaults to madvise (pass "never" to turn THP off).
set -eu
MODE=${1:-madvise}
case "$MODE" in madvise|never) ;; *) echo "usage: $0 [madvise|never]" >&2; exit 2;; esac
for f in /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag; do
    [ -w "$f" ] || { echo "$f not writable (not root, or no THP in this kernel)" >&2; exit 1; }
    echo "$MODE" > "$f"
    echo "$f: $(cat "$f")"
done
# To make it permanent instead: add transparent_hugepage=madvise to the
# kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub).
