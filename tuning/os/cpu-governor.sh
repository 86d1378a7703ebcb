#!/bin/sh
# Sets every CPU's frequency governor to "performance", so a core that just
# woke up for a request does not run at a low clock while the governor
# catches up (a thread-per-core node is often idle for microseconds between
# requests, which on-demand governors read as idle).
# Run as root at boot (e.g. from a systemd oneshot unit). Machines without
# cpufreq (most VMs) have nothing to set: the script says so and exits 0.
set -eu
found=0
for g in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
    [ -e "$g" ] || continue
    found=1
    if grep -qw performance "$(dirname "$g")/scaling_available_governors"; then
        echo performance > "$g"
    else
        echo "$(dirname "$g"): no performance governor (has: $(cat "$(dirname "$g")/scaling_available_governors"))" >&2
    fi
done
if [ "$found" = 0 ]; then
    echo "no cpufreq on this machine (a VM, or the host controls the clock): nothing to set"
    exit 0
fi
grep -H . /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor
