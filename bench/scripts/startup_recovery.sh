#!/usr/bin/env bash
# corekv start-up and WAL recovery times (issue 3, item 5: "starts in under 1
# second on an empty data dir and recovers 1 GiB of WAL in under 10 seconds").
#
#   bench/scripts/startup_recovery.sh            # 5 empty starts, then 1 GiB of WAL
#   bench/scripts/startup_recovery.sh --quick    # 5 empty starts, then 128 MiB of WAL (smoke run)
#   options: --runs N        empty-dir starts (default 5)
#            --wal-mib M     MiB of values to write before the crash (default 1024)
#            --value-bytes B value size for the WAL load (default 65536)
#            --clients C     loader connections (default 8); --pipeline P (default 4): see below
#            --sample S      keys read back and checked after recovery (default 4096)
#            --cores N       corekv --node.cores (default: corekv's default, all cores)
#            --dir DIR       work dir (default target/startup_recovery; must not be tmpfs)
#            --keep          keep the data dirs;  --no-build  skip cargo build
#   env:     COREKV, RESP_LOAD: binaries (default $CARGO_TARGET_DIR or target/, then release/)
#
# (a) Start-up: N times, a fresh empty data dir, then
#       corekv serve --node.data_dir D --node.listen 127.0.0.1 --ports.client 17380
#                    --ports.shard_base 17400 --ports.resp 16380
#     Measured from just before exec: until the "corekv: ready" line appears on
#     stderr (each line is stamped with bash's $EPOCHREALTIME as it arrives),
#     and until PING on the RESP port answers PONG (polled every 2 ms over
#     bash's /dev/tcp, no fork). Also the "ready in N ms" the server reports
#     (its own clock, from after config parsing to every core serving), and the
#     time from SIGTERM to exit. Prints each run, then min/median/max.
# (b) Recovery: one node with the default durability (sync: every
#     acknowledged write is fdatasynced) and a memtable large enough that
#     nothing is flushed (--storage.memtable_bytes = max(4 GiB, 4 x the load);
#     split per core; the config has no upper bound), loaded by
#       resp-load -h 127.0.0.1 -p 16380 -c 8 -n K -d 65536 -P 4      (K keys load:{thread}:{i})
#     (one WAL record per SET), then SIGKILLed, so
#     every write must come back from the WAL. Prints the WAL
#     on disk (files, allocated size, and the bytes actually written: each
#     segment up to its last non-zero byte, since segments are zero-filled when
#     created), INFO's flush counters (must be 0), then restarts the node on the
#     same dir and times exec -> "ready" and exec -> PING, and reads back a
#     sample of keys with `resp-load --mode verify` (values are derived from the
#     keys, so every byte is checked). Finally SIGTERM and a clean stop.
# Verdicts: median start-up < 1000 ms; recovery ready < 10 s with >= 1 GiB of WAL
# ("n/a" with a smaller WAL, the replay rate is printed for extrapolation).
#
# Disk guard: if the data dir grows past 3 x the load + 1 GiB during the load,
# the server and the load are killed and the script stops with the file list.
# Logs and commands go to DIR/logs (summary.md, commands.txt, *.server.log).
# Servers it started are stopped on exit (trap). It refuses to start if a port is taken.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUNS=5
WAL_MIB=1024
VALUE=65536
CLIENTS=8
PIPELINE=4
SAMPLE=4096
CORES=""
DIR="$ROOT/target/startup_recovery"
KEEP=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) WAL_MIB=128 ;;
        --runs) RUNS="$2"; shift ;;
        --wal-mib) WAL_MIB="$2"; shift ;;
        --value-bytes) VALUE="$2"; shift ;;
        --clients) CLIENTS="$2"; shift ;;
        --pipeline) PIPELINE="$2"; shift ;;
        --sample) SAMPLE="$2"; shift ;;
        --cores) CORES="$2"; shift ;;
        --dir) DIR="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

RESP_PORT=16380
CLIENT_PORT=17380
SHARD_BASE=17400

BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
if [ -n "${COREKV:-}" ]; then BUILD=0; fi
COREKV="${COREKV:-$BIN_DIR/corekv}"
RESP_LOAD="${RESP_LOAD:-$BIN_DIR/resp-load}"
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p corekv-tools -p corekv-bench)
fi
for b in "$COREKV" "$RESP_LOAD"; do
    if [ ! -x "$b" ]; then
        echo "$b not found (cargo build --release -p corekv-tools -p corekv-bench, or set COREKV / RESP_LOAD)" >&2
        exit 2
    fi
done

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
if [ "$(stat -f -c %T "$DIR")" = "tmpfs" ]; then
    echo "$DIR is on tmpfs: corekv refuses it (O_DIRECT); pass --dir on a real disk" >&2
    exit 2
fi
OUT="$DIR/logs"
rm -rf "$OUT" "$DIR"/data-*
mkdir -p "$OUT"
: >"$OUT/commands.txt"
: >"$OUT/notes.txt"

source "$(dirname "$0")/common.sh"
NCORES="${CORES:-$(nproc)}"
PORTS="$RESP_PORT $CLIENT_PORT"
for ((c = 0; c < NCORES; c++)); do PORTS="$PORTS $((SHARD_BASE + c))"; done
# shellcheck disable=SC2086
check_ports $PORTS

# run_load OUTFILE GUARD_DIR GUARD_BYTES CMD...: runs a load in the background
# (a signal to this script then stops it at once) with its output in OUTFILE;
# returns its status. If GUARD_DIR grows past GUARD_BYTES meanwhile, the load
# and the server are killed and the script stops: the server is writing far
# more than the load (a runaway that would fill the disk), not a measurement.
run_load() {
    local out="$1" gdir="$2" glimit="$3" rc=0 used; shift 3
    log_cmd "$(printf '%q ' "$@")"
    "$@" >"$out" 2>&1 &
    LOAD_PID=$!
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        used=$(du -sb "$gdir" 2>/dev/null | cut -f1)
        if [ "${used:-0}" -gt "$glimit" ]; then
            {
                echo "ABORTED: $gdir holds $((used >> 20)) MiB, more than the guard ($((glimit >> 20)) MiB) for this load."
                echo "Files (digits as N):"
                (cd "$gdir" && find . -type f | sed 's/[0-9]\{6\}/N/g' | sort | uniq -c)
                du -sh "$gdir"/*/
            } | tee -a "$OUT/notes.txt" >&2
            kill -KILL "$LOAD_PID" "$SERVER_PID" 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
    done
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    cat "$out"
    return "$rc"
}
ms_since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

# stamp: copies stdin to stdout, each line prefixed by the time it arrived.
stamp() { local line; while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done; }

# ping_ok: true if the RESP port answers PING with +PONG (no fork: bash /dev/tcp).
ping_ok() {
    local fd reply=""
    { exec {fd}<>"/dev/tcp/127.0.0.1/$RESP_PORT"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&"$fd" 2>/dev/null || { exec {fd}>&-; return 1; }
    IFS= read -r -t 2 -u "$fd" reply || true
    exec {fd}>&-
    [ "${reply%$'\r'}" = "+PONG" ]
}

# launch DATA LOG EXTRA...: starts corekv with stamped stderr in LOG; sets SERVER_PID, T0.
launch() {
    local data="$1" log="$2"; shift 2
    local cmd=("$COREKV" serve --node.data_dir "$data" --node.listen 127.0.0.1 --ports.client $CLIENT_PORT
        --ports.shard_base $SHARD_BASE --ports.resp $RESP_PORT --ports.http 0)
    if [ -n "$CORES" ]; then cmd+=(--node.cores "$CORES"); fi
    cmd+=("$@")
    log_cmd "$(printf '%q ' "${cmd[@]}")"
    : >"$log"
    T0=$EPOCHREALTIME
    "${cmd[@]}" > /dev/null 2> >(stamp >"$log") &
    SERVER_PID=$!
}


# wait_ready LOG: waits for PING then the ready line; sets PING_MS, READY_MS, SELF_MS.
wait_ready() {
    local log="$1" t_ping="" i
    for ((i = 0; i < 30000; i++)); do   # 60 s at 2 ms
        if ping_ok; then t_ping=$EPOCHREALTIME; break; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "FAILED: corekv exited during start-up; its log ($log):" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        sleep 0.002
    done
    if [ -z "$t_ping" ]; then echo "FAILED: no PONG within 60 s ($log)" >&2; exit 1; fi
    for ((i = 0; i < 500; i++)); do
        grep -q " corekv: ready" "$log" && break
        sleep 0.01
    done
    local line
    line="$(grep -m1 " corekv: ready" "$log" || true)"
    if [ -z "$line" ]; then echo "FAILED: PONG but no 'corekv: ready' line ($log)" >&2; exit 1; fi
    PING_MS=$(ms_since "$T0" "$t_ping")
    READY_MS=$(ms_since "$T0" "${line%% *}")
    SELF_MS=$(echo "$line" | sed -n 's/.*corekv: ready in \([0-9]*\) ms.*/\1/p')
}

# stop_clean LOG: SIGTERM, waits; sets STOP_MS; notes an unclean stop.
stop_clean() {
    local log="$1" rc=0 t
    t=$EPOCHREALTIME
    kill -TERM "$SERVER_PID"
    local n=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [ $n -lt 3000 ]; do sleep 0.01; n=$((n + 1)); done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "corekv did not exit 30 s after SIGTERM ($log): killed" >>"$OUT/notes.txt"
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" || rc=$?
    STOP_MS=$(ms_since "$t" "$EPOCHREALTIME")
    SERVER_PID=""
    sleep 0.05   # let the stamper drain the last lines
    if [ "$rc" != 0 ]; then echo "corekv exited with status $rc after SIGTERM ($log)" >>"$OUT/notes.txt"; fi
    if ! grep -q "corekv: stopped cleanly" "$log"; then
        echo "no 'corekv: stopped cleanly' line after SIGTERM ($log)" >>"$OUT/notes.txt"
    fi
}

# info_field FIELD: sum of FIELD=value over the coreN: lines of INFO.
info_sum() {
    redis-cli -p $RESP_PORT info 2>/dev/null | tr -d '\r' | grep -E '^core[0-9]+:' \
        | tr ',' '\n' | awk -F= -v f="$1" '$1 ~ ("(^|:)" f "$") { s += $2 } END { printf "%d", s }'
}

# wal_report DATA: per-core WAL files, allocated and written bytes; sets WAL_USED, WAL_FILES, WAL_ALLOC.
wal_report() {
    local data="$1"
    WAL_FILES=0; WAL_ALLOC=0; WAL_USED=0
    local f used alloc
    while IFS= read -r f; do
        # Bytes up to the last non-zero byte (segments are zero-filled when created).
        used=$(perl -e 'open(my $h, "<:raw", $ARGV[0]) or die "$ARGV[0]: $!"; my ($off, $last) = (0, 0);
            while ((my $n = read($h, my $b, 1 << 20)) > 0) {
                if ($b =~ tr/\0//c) { my $i = $n; $i-- while $i > 0 && substr($b, $i - 1, 1) eq "\0"; $last = $off + $i }
                $off += $n }
            print $last' "$f")
        alloc=$(( $(stat -c %b "$f") * $(stat -c %B "$f") ))
        printf '    %-40s size %10d  allocated %10d  written %10d\n' "${f#"$data"/}" "$(stat -c %s "$f")" "$alloc" "$used"
        WAL_FILES=$((WAL_FILES + 1)); WAL_ALLOC=$((WAL_ALLOC + alloc)); WAL_USED=$((WAL_USED + used))
    done < <(find "$data" -name 'wal-*.log' | sort)
}

stats() { # values...: "min median max"
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%d %d %d", v[1], m, v[NR] }'
}

GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")"
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then GIT_REV="$GIT_REV (with uncommitted changes)"; fi
{
    echo "## Machine"
    echo
    echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- RAM: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); kernel $(uname -r)"
    echo "- data: $DIR on $(findmnt -n -o SOURCE,FSTYPE -T "$DIR" | tr -s ' '), $(df -h --output=avail "$DIR" | tail -1 | tr -d ' ') free"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- $("$COREKV" --version) ($COREKV), git $GIT_REV"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
} | tee "$OUT/summary.md"

# --- (a) start-up on an empty data dir ------------------------------------------
{
    echo
    echo "## (a) Start-up on an empty data dir, $RUNS runs"
    echo
    echo "| run | exec -> 'ready' line (ms) | exec -> PONG (ms) | server's 'ready in' (ms) | SIGTERM -> exit (ms) |"
    echo "|---|---|---|---|---|"
} | tee -a "$OUT/summary.md"
log_cmd "# (a) start-up, $RUNS times, each on a new empty dir"
R=(); P=(); S=(); Q=()
for ((run = 1; run <= RUNS; run++)); do
    data="$DIR/data-start-$run"
    rm -rf "$data"; mkdir -p "$data"
    launch "$data" "$OUT/start-$run.server.log"
    wait_ready "$OUT/start-$run.server.log"
    stop_clean "$OUT/start-$run.server.log"
    R+=("$READY_MS"); P+=("$PING_MS"); S+=("$SELF_MS"); Q+=("$STOP_MS")
    echo "| $run | $READY_MS | $PING_MS | $SELF_MS | $STOP_MS |" | tee -a "$OUT/summary.md"
    [ "$KEEP" = 1 ] || rm -rf "$data"
done
read -r rmin rmed rmax <<<"$(stats "${R[@]}")"
read -r pmin pmed pmax <<<"$(stats "${P[@]}")"
read -r smin smed smax <<<"$(stats "${S[@]}")"
read -r qmin qmed qmax <<<"$(stats "${Q[@]}")"
START_VERDICT=$([ "$rmed" -lt 1000 ] && echo "PASS" || echo "FAIL")
{
    echo "| min / median / max | $rmin / $rmed / $rmax | $pmin / $pmed / $pmax | $smin / $smed / $smax | $qmin / $qmed / $qmax |"
    echo
    echo "Start-up verdict (median exec -> ready < 1000 ms): **$START_VERDICT** ($rmed ms)"
} | tee -a "$OUT/summary.md"

# --- (b) recovery of a large WAL -----------------------------------------------
KEYS=$(( (WAL_MIB << 20) / VALUE ))
LOAD_BYTES=$(( KEYS * VALUE ))
MEM=$(( LOAD_BYTES * 4 )); [ "$MEM" -ge $((4 << 30)) ] || MEM=$((4 << 30))
data="$DIR/data-recovery"
rm -rf "$data"; mkdir -p "$data"
log_cmd "# (b) recovery: load, SIGKILL, restart, verify"
echo
echo "== (b) loading $KEYS keys x $VALUE B ($WAL_MIB MiB of values), memtable_bytes=$MEM, durability sync (default)"
launch "$data" "$OUT/recovery-load.server.log" --storage.memtable_bytes "$MEM"
wait_ready "$OUT/recovery-load.server.log"
GUARD=${GUARD_BYTES:-$(( 3 * LOAD_BYTES + (1 << 30) ))}   # env GUARD_BYTES overrides (tests)
if ! run_load "$OUT/load.txt" "$data" "$GUARD" "$RESP_LOAD" -h 127.0.0.1 -p $RESP_PORT -c "$CLIENTS" -n "$KEYS" -d "$VALUE" -P "$PIPELINE"; then
    echo "FAILED: the load did not complete (see $OUT/load.txt and $OUT/recovery-load.server.log)" >&2
    exit 1
fi
FLUSHES=$(info_sum flushes)
USER_BYTES=$(info_sum user_bytes_written)
echo "INFO before the crash: flushes=$FLUSHES user_bytes_written=$USER_BYTES"
if [ "$FLUSHES" != 0 ]; then
    echo "$FLUSHES memtable flushes happened during the load: less than the whole load is in the WAL" >>"$OUT/notes.txt"
fi
log_cmd "kill -KILL <corekv pid>"
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
echo "WAL on disk after SIGKILL ($data):"
du -sh "$data"/core-*/ | sed 's/^/    /'
wal_report "$data" >"$OUT/wal.txt"   # not in a pipeline: it sets WAL_* here
cat "$OUT/wal.txt"

log_cmd "# restart on the same data dir"
launch "$data" "$OUT/recovery.server.log" --storage.memtable_bytes "$MEM"
wait_ready "$OUT/recovery.server.log"
REC_READY=$READY_MS; REC_PING=$PING_MS; REC_SELF=$SELF_MS
VERIFY_RC=0
run_load "$OUT/verify.txt" "$data" "$GUARD" "$RESP_LOAD" -h 127.0.0.1 -p $RESP_PORT -c "$CLIENTS" -n "$KEYS" -d "$VALUE" \
    -P "$PIPELINE" --mode verify --sample "$SAMPLE" || VERIFY_RC=$?
if [ "$VERIFY_RC" != 0 ]; then echo "verify after recovery FAILED (exit $VERIFY_RC): see $OUT/verify.txt" >>"$OUT/notes.txt"; fi
stop_clean "$OUT/recovery.server.log"
[ "$KEEP" = 1 ] || rm -rf "$data"

GIB=$((1 << 30))
REC_VERDICT=$(awk -v used="$WAL_USED" -v gib=$GIB -v ms="$REC_READY" -v vrc="$VERIFY_RC" 'BEGIN {
    if (vrc != 0) print "FAIL (keys missing after recovery)"
    else if (used < gib) printf "n/a (%.0f MiB of WAL < 1 GiB; at this rate 1 GiB would take %.1f s)", used / 1048576, ms / 1000 * gib / (used > 0 ? used : 1)
    else if (ms < 10000) print "PASS"
    else print "FAIL" }')
{
    echo
    echo "## (b) Recovery after SIGKILL"
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| load | $(sed -n 's/^resp-load: //p' "$OUT/load.txt") |"
    echo "| user bytes written (INFO) | $USER_BYTES ($(awk -v b="$USER_BYTES" 'BEGIN { printf "%.1f MiB", b / 1048576 }')) |"
    echo "| memtable flushes before the crash | $FLUSHES |"
    echo "| WAL segments on disk | $WAL_FILES files, $(awk -v b="$WAL_ALLOC" 'BEGIN { printf "%.1f MiB", b / 1048576 }') allocated |"
    echo "| WAL bytes written (to the last non-zero byte of each segment) | $WAL_USED ($(awk -v b="$WAL_USED" 'BEGIN { printf "%.1f MiB", b / 1048576 }')) |"
    echo "| restart: exec -> 'ready' line | $REC_READY ms |"
    echo "| restart: exec -> PONG | $REC_PING ms |"
    echo "| restart: server's 'ready in' | $REC_SELF ms |"
    echo "| replay rate (WAL bytes / exec -> ready) | $(awk -v b="$WAL_USED" -v ms="$REC_READY" 'BEGIN { if (ms > 0) printf "%.0f MiB/s", b / 1048576 / (ms / 1000); else print "?" }') |"
    echo "| keys checked after recovery | $(sed -n 's/^resp-load: verify \([0-9]*\) keys.*; \(.*\)$/\1 keys: \2/p' "$OUT/verify.txt") |"
    echo "| SIGTERM -> exit after recovery | $STOP_MS ms |"
    echo
    echo "Recovery verdict (1 GiB of WAL replayed, ready in < 10 s): **$REC_VERDICT**"
    echo
    echo "Notes:"
    if [ -s "$OUT/notes.txt" ]; then sed 's/^/- /' "$OUT/notes.txt"; else echo "- no errors or unclean exits"; fi
    echo
    echo "Exact commands, in order:"
    echo '```'
    cat "$OUT/commands.txt"
    echo '```'
    echo "Logs: $OUT"
} | tee -a "$OUT/summary.md"
