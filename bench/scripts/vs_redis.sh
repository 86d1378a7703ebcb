#!/usr/bin/env bash
# corekv vs Redis, measured side by side in ONE invocation (issue 3, item 4).
#
#   bench/scripts/vs_redis.sh              # full: -n 500000 per test (as in /work/shared/ANCHORS.md)
#   bench/scripts/vs_redis.sh --quick      # -n 20000: a smoke run, checks the setup only
#   options: -n N           requests per redis-benchmark test
#            --cores N      corekv --node.cores (default: corekv's default, all cores)
#            --dir DIR      work dir (default target/vs_redis under the repo; must not be tmpfs)
#            --keep         keep the data dirs (default: each is deleted once its server stopped)
#            --no-build     do not run cargo build first
#   env:     COREKV=path/to/corekv  SDK_BENCH=path/to/sdk-bench (default: $CARGO_TARGET_DIR
#            or target/, then release/); setting COREKV implies --no-build.
#
# Servers, each started fresh on an empty data dir, waited for with
# `redis-cli -p PORT ping`, loaded, then stopped with SIGTERM (and waited for):
#   redis-none      redis-server --bind 127.0.0.1 --port 6390 --dir D --save '' --appendonly no
#                   (a reference: the in-memory ceiling of this load generator, no threshold)
#   redis-always    redis-server --bind 127.0.0.1 --port 6390 --dir D --save '' --appendonly yes --appendfsync always
#   redis-everysec  the same with --appendfsync everysec
#   corekv-resp     corekv serve --node.data_dir D --node.listen 127.0.0.1 --ports.client 17380
#                   --ports.shard_base 17400 --ports.resp 16380   (durable default: storage.durability=sync)
#   corekv-sdk      the same corekv command, a fresh node, loaded through the native protocol
# Load on each (1 KiB values, 50 clients, 1M-key space; -P 1 then -P 16 on the same instance):
#   redis-benchmark -h 127.0.0.1 -p PORT -t set,get -d 1024 -n N -r 1000000 -c 50 -P {1,16} --csv
#   sdk-bench -h 127.0.0.1 -p 17380 -c 50 -n N -d 1024 -r 1000000 -t set,get -P {1,16} --csv
#     (17380 = ports.client, the node's shared native port; skipped with
#     "sdk-bench not built: skipped" if the binary does not exist)
#
# Prints the machine (nproc, kernel, CPU model, RAM, disk and fs), the versions,
# the exact commands, the CPU time each server used, and a markdown table:
# rows (test, pipeline), columns rps and p99 (ms) for each side, the ratios
# corekv/always, corekv/everysec, SDK/RESP, and a verdict against issue 3 item 4:
#   SET: corekv >= 2.0x redis-always and >= 1.0x redis-everysec (rps)
#   GET: corekv >= 1.0x both Redis configs (rps)
#   all: corekv p99 <= redis-everysec p99
#   SDK: sdk-bench rps >= 1.5x corekv-RESP rps (n/a when sdk-bench is absent)
# Logs, CSVs and commands.txt go to DIR/logs; the summary also to DIR/logs/summary.md.
#
# redis-benchmark and the server share the machine's cores (ANCHORS.md): run it
# on an otherwise idle machine; only the ratios of one invocation mean anything.
# Servers it started are stopped on exit (trap), whatever happens. It refuses
# to start if one of its ports is already taken. Disk guard: if a server's data
# dir grows past max(8 GiB, 20 x N x 1 KiB) during a load, the server and the
# load are killed and the script stops (a runaway, not a measurement).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
N=500000
CORES=""
DIR="$ROOT/target/vs_redis"
KEEP=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) N=20000 ;;
        -n) N="$2"; shift ;;
        --cores) CORES="$2"; shift ;;
        --dir) DIR="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REDIS_PORT=6390
RESP_PORT=16380
CLIENT_PORT=17380
SHARD_BASE=17400
CLIENTS=50
VALUE=1024
KEYSPACE=1000000
PIPELINES="1 16"

for tool in redis-server redis-benchmark redis-cli timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool not found (Debian packages redis-server, redis-tools, coreutils)" >&2
        exit 2
    fi
done

BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
if [ -n "${COREKV:-}" ]; then BUILD=0; fi
COREKV="${COREKV:-$BIN_DIR/corekv}"
SDK_BENCH="${SDK_BENCH:-$BIN_DIR/sdk-bench}"
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p corekv-tools -p corekv-bench)
fi
if [ ! -x "$COREKV" ]; then
    echo "corekv binary not found at $COREKV (cargo build --release -p corekv-tools, or set COREKV)" >&2
    exit 2
fi

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

source "$(dirname "$0")/common.sh"
NCORES="${CORES:-$(nproc)}"
PORTS="$REDIS_PORT $RESP_PORT $CLIENT_PORT"
for ((c = 0; c < NCORES; c++)); do PORTS="$PORTS $((SHARD_BASE + c))"; done
# shellcheck disable=SC2086
check_ports $PORTS

# --- servers -----------------------------------------------------------------

# start LABEL PORT CMD...: starts a server in the background, waits for PING.
start() {
    local label="$1" port="$2"; shift 2
    log_cmd "# $label"
    log_cmd "$(printf '%q ' "$@")"
    "$@" >"$OUT/$label.server.log" 2>&1 &
    SERVER_PID=$!
    SERVER_LABEL="$label"
    local t0=$EPOCHREALTIME
    for _ in $(seq 600); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "FAILED: $label exited before answering PING; its log ($OUT/$label.server.log):" >&2
            tail -20 "$OUT/$label.server.log" >&2
            exit 1
        fi
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; then
            echo "  $label: pid $SERVER_PID answers PING after $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms"
            return 0
        fi
        sleep 0.05
    done
    echo "FAILED: $label did not answer PING on port $port in 30 s" >&2
    exit 1
}

# cpu_secs PID: user + system CPU seconds the process used so far.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo "?"
}

# stop LABEL: SIGTERM, wait (30 s, then SIGKILL); records exit status and CPU.
stop() {
    local label="$1" pid="$SERVER_PID" rc=0
    echo "$(cpu_secs "$pid")" >"$OUT/$label.cpu"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 300 ]; do sleep 0.1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
        echo "  WARNING: $label did not exit 30 s after SIGTERM: killed" | tee -a "$OUT/notes.txt"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || rc=$?
    SERVER_PID=""
    echo "  $label: stopped, exit status $rc, $(cat "$OUT/$label.cpu") CPU seconds"
    if [ "$rc" != 0 ]; then
        echo "$label exited with status $rc after SIGTERM (log: $OUT/$label.server.log)" >>"$OUT/notes.txt"
    fi
    if [[ "$label" == corekv* ]] && ! grep -q "corekv: stopped cleanly" "$OUT/$label.server.log"; then
        echo "$label: no 'corekv: stopped cleanly' line after SIGTERM" >>"$OUT/notes.txt"
    fi
}

# disk_guard LABEL: stops everything if the running server's data dir passes
# GUARD_BYTES (a server writing far more than the load would fill the disk).
if [ -z "${GUARD_BYTES:-}" ]; then   # env GUARD_BYTES overrides (tests)
    GUARD_BYTES=$((20 * N * VALUE)); [ "$GUARD_BYTES" -ge $((8 << 30)) ] || GUARD_BYTES=$((8 << 30))
fi
DATA_DIR=""
disk_guard() {
    [ -n "$DATA_DIR" ] || return 0
    local used
    used=$(du -sb "$DATA_DIR" 2>/dev/null | cut -f1)
    if [ "${used:-0}" -gt "$GUARD_BYTES" ]; then
        echo "ABORTED: $1's data dir holds $((used >> 20)) MiB, more than the guard ($((GUARD_BYTES >> 20)) MiB) for" \
            "$N x $VALUE B values; files:" | tee -a "$OUT/notes.txt" >&2
        (cd "$DATA_DIR" && find . -type f | sed 's/[0-9]\{6\}/N/g' | sort | uniq -c) >&2
        kill -TERM "$LOAD_PID" 2>/dev/null || true   # timeout(1) passes it on to the load generator
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
        exit 1
    fi
}

# bench LABEL P CMD...: runs a load generator, keeps its CSV (stdout) and stderr.
bench() {
    local label="$1" p="$2"; shift 2
    local csv="$OUT/$label.P$p.csv" limit=$((600 + N / 200)) rc=0
    log_cmd "$(printf '%q ' "$@")"
    echo "  $label -P $p: $*"
    # In the background and waited for, so that a signal to this script stops it
    # at once; meanwhile the server's data dir is watched (disk_guard).
    timeout -k 5 "$limit" "$@" >"$csv" 2>"$OUT/$label.P$p.stderr" &
    LOAD_PID=$!
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        disk_guard "$label"
        sleep 0.5
    done
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    if [ "$rc" != 0 ]; then
        echo "$label -P $p: load generator exited with status $rc$([ "$rc" = 124 ] && echo " (timed out after $limit s)")" \
            | tee -a "$OUT/notes.txt"
    fi
    # redis-benchmark reports server errors on stdout or stderr, not in its exit code.
    # "Could not fetch server CONFIG" is benign: redis-benchmark asks CONFIG GET save
    # and appendonly only to print them, and carries on without them.
    local said
    said="$(cat "$csv" "$OUT/$label.P$p.stderr" | grep -iE "error|warning" | grep -v "Could not fetch server CONFIG" \
        | sort | uniq -c | head -5 || true)"
    if [ -n "$said" ]; then
        { echo "$label -P $p said:"; echo "$said"; } | tee -a "$OUT/notes.txt"
    fi
    if grep -q "Could not fetch server CONFIG" "$OUT/$label.P$p.stderr"; then
        echo "$label" >>"$OUT/config-warning.txt"
    fi
}

redis_side() {
    local label="$1" fsync="$2" data="$DIR/data-$1"
    rm -rf "$data"; mkdir -p "$data"
    DATA_DIR="$data"
    if [ "$fsync" = none ]; then
        start "$label" $REDIS_PORT redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir "$data" \
            --save '' --appendonly no
    else
        start "$label" $REDIS_PORT redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir "$data" \
            --save '' --appendonly yes --appendfsync "$fsync"
    fi
    for p in $PIPELINES; do
        bench "$label" "$p" redis-benchmark -h 127.0.0.1 -p $REDIS_PORT -t set,get -d $VALUE -n "$N" \
            -r $KEYSPACE -c $CLIENTS -P "$p" --csv
    done
    stop "$label"
    [ "$KEEP" = 1 ] || rm -rf "$data"
}

corekv_cmd() { # DATA_DIR
    local c=("$COREKV" serve --node.data_dir "$1" --node.listen 127.0.0.1 --ports.client $CLIENT_PORT
        --ports.shard_base $SHARD_BASE --ports.resp $RESP_PORT --ports.http 0)
    if [ -n "$CORES" ]; then c+=(--node.cores "$CORES"); fi
    printf '%s\0' "${c[@]}"
}

corekv_side() { # LABEL resp|sdk
    local label="$1" kind="$2" data="$DIR/data-$1"
    rm -rf "$data"; mkdir -p "$data"
    DATA_DIR="$data"
    local cmd=()
    while IFS= read -r -d '' a; do cmd+=("$a"); done < <(corekv_cmd "$data")
    start "$label" $RESP_PORT "${cmd[@]}"
    grep -m1 "^corekv: ready" "$OUT/$label.server.log" | sed 's/^/  /' || true
    for p in $PIPELINES; do
        if [ "$kind" = resp ]; then
            bench "$label" "$p" redis-benchmark -h 127.0.0.1 -p $RESP_PORT -t set,get -d $VALUE -n "$N" \
                -r $KEYSPACE -c $CLIENTS -P "$p" --csv
        else
            bench "$label" "$p" "$SDK_BENCH" -h 127.0.0.1 -p $CLIENT_PORT -c $CLIENTS -n "$N" -d $VALUE \
                -r $KEYSPACE -t set,get -P "$p" --csv
        fi
    done
    redis-cli -p $RESP_PORT info 2>/dev/null | tr -d '\r' | grep -E "^core[0-9]+:" >"$OUT/$label.info" || true
    echo "$(du -sh "$data" | cut -f1) in $(find "$data" -name 'wal-*.log' | wc -l) WAL segments and $(find "$data" -name '*.sst' | wc -l) tables" \
        >"$OUT/$label.disk"
    stop "$label"
    [ "$KEEP" = 1 ] || rm -rf "$data"
}

# --- machine and versions ----------------------------------------------------
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")"
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then GIT_REV="$GIT_REV (with uncommitted changes)"; fi
{
    echo "## Machine"
    echo
    echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- RAM: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); kernel $(uname -r)"
    echo "- data: $DIR on $(findmnt -n -o SOURCE,FSTYPE -T "$DIR" | tr -s ' '), $(df -h --output=avail "$DIR" | tail -1 | tr -d ' ') free"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- $(redis-server --version | cut -d' ' -f1-3); $(redis-benchmark --version)"
    echo "- $("$COREKV" --version) ($COREKV), git $GIT_REV"
    if [ -x "$SDK_BENCH" ]; then echo "- sdk-bench: $SDK_BENCH"; else echo "- sdk-bench: not built ($SDK_BENCH)"; fi
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); n=$N, $CLIENTS clients, $VALUE B values, keys from [0, $KEYSPACE)"
} | tee "$OUT/machine.md"
echo

# --- the disk ----------------------------------------------------------------
# How much a durable write costs on this disk right now: Redis-always is
# bounded by it, so the always/everysec gap (and what 2.0x always means)
# depends on it. 4 KiB O_DIRECT|O_DSYNC writes to an allocated file.
probe="$DIR/dsync-probe"
dd if=/dev/zero of="$probe" bs=1M count=16 oflag=direct status=none
t0=$EPOCHREALTIME
dd if=/dev/zero of="$probe" bs=4k count=4000 oflag=direct,dsync conv=notrunc status=none
dsync_us=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1e6 / 4000 }')
rm -f "$probe"
echo "- durable 4 KiB write (dd oflag=direct,dsync, 4000 writes): $dsync_us us each" | tee -a "$OUT/machine.md"
echo

# --- the runs ----------------------------------------------------------------
echo "== redis-server, no persistence (the in-memory ceiling of this load generator)"
redis_side redis-none none
echo "== redis-server, appendfsync always"
redis_side redis-always always
echo "== redis-server, appendfsync everysec"
redis_side redis-everysec everysec
echo "== corekv, RESP (redis-benchmark)"
corekv_side corekv-resp resp
echo "== corekv, native SDK (sdk-bench)"
HAVE_SDK=0
if [ -x "$SDK_BENCH" ]; then
    HAVE_SDK=1
    corekv_side corekv-sdk sdk
else
    echo "sdk-bench not built: skipped" | tee -a "$OUT/notes.txt"
fi

# --- the table ---------------------------------------------------------------
# field LABEL P TEST COL: a column of a redis-benchmark-style CSV row (2 = rps, 7 = p99 ms).
field() {
    local f="$OUT/$1.P$2.csv"
    [ -f "$f" ] || { echo "?"; return; }
    awk -F'","' -v t="$3" -v c="$4" '{ gsub(/^"|"$/, "") } $1 == t { v = $c } END { print (v == "" ? "?" : v) }' "$f"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "?" }'; }
# verdict TEST RESP_RPS RESP_P99 ALWAYS_RPS EVERYSEC_RPS EVERYSEC_P99 SDK_RPS
verdict() {
    awk -v t="$1" -v c="$2" -v cp="$3" -v a="$4" -v e="$5" -v ep="$6" -v s="$7" -v have_sdk="$HAVE_SDK" 'BEGIN {
        if (c + 0 <= 0 || a + 0 <= 0 || e + 0 <= 0) { print "FAIL: missing figures"; exit }
        fail = ""
        if (t == "SET") {
            if (c / a < 2.0) fail = fail sprintf("; %.2fx always < 2.0x", c / a)
            if (c / e < 1.0) fail = fail sprintf("; %.2fx everysec < 1.0x", c / e)
        } else {
            if (c / a < 1.0) fail = fail sprintf("; %.2fx always < 1.0x", c / a)
            if (c / e < 1.0) fail = fail sprintf("; %.2fx everysec < 1.0x", c / e)
        }
        if (cp + 0 > ep + 0) fail = fail sprintf("; p99 %s > everysec %s ms", cp, ep)
        if (have_sdk == 1) {
            if (s + 0 <= 0) fail = fail "; SDK figure missing"
            else if (s / c < 1.5) fail = fail sprintf("; SDK %.2fx RESP < 1.5x", s / c)
        }
        if (fail == "") print "PASS" (have_sdk == 1 ? "" : " (SDK n/a)")
        else print "FAIL" substr(fail, 2)
    }'
}

{
    echo
    echo "## corekv vs Redis: rps (p99 ms), n=$N, $CLIENTS clients, $VALUE B values"
    echo
    echo "| test | -P | redis none | redis always | redis everysec | corekv RESP | corekv SDK | corekv/always | corekv/everysec | SDK/RESP | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for p in $PIPELINES; do
        for t in SET GET; do
            nr=$(field redis-none "$p" "$t" 2); np=$(field redis-none "$p" "$t" 7)
            ar=$(field redis-always "$p" "$t" 2); ap=$(field redis-always "$p" "$t" 7)
            er=$(field redis-everysec "$p" "$t" 2); ep=$(field redis-everysec "$p" "$t" 7)
            cr=$(field corekv-resp "$p" "$t" 2); cp=$(field corekv-resp "$p" "$t" 7)
            if [ "$HAVE_SDK" = 1 ]; then
                sr=$(field corekv-sdk "$p" "$t" 2); sp=$(field corekv-sdk "$p" "$t" 7)
                sdk="$sr ($sp)"; sdk_ratio=$(ratio "$sr" "$cr")
            else
                sr="?"; sdk="skipped"; sdk_ratio="n/a"
            fi
            echo "| $t | $p | $nr ($np) | $ar ($ap) | $er ($ep) | $cr ($cp) | $sdk | $(ratio "$cr" "$ar") | $(ratio "$cr" "$er") | $sdk_ratio | $(verdict "$t" "$cr" "$cp" "$ar" "$er" "$ep" "$sr") |"
        done
    done
    echo
    echo "Thresholds (issue 3, item 4): SET >= 2.0x always and >= 1.0x everysec; GET >= 1.0x both;"
    echo "p99 <= everysec; SDK >= 1.5x RESP. Both pipelines are held to the same ratios."
    echo "'redis none' (no persistence) is a reference, not a threshold: no server measured by this"
    echo "one redis-benchmark process does much better than Redis without persistence."
    echo
    echo "CPU seconds used by each server over its two runs (machine: $(nproc) cores):"
    for l in redis-none redis-always redis-everysec corekv-resp corekv-sdk; do
        [ -f "$OUT/$l.cpu" ] && echo "- $l: $(cat "$OUT/$l.cpu")"
    done
    for l in corekv-resp corekv-sdk; do
        if [ -s "$OUT/$l.info" ]; then echo "- $l INFO at the end: $(paste -sd' ' "$OUT/$l.info")"; fi
        if [ -s "$OUT/$l.disk" ]; then echo "- $l data dir at the end: $(cat "$OUT/$l.disk")"; fi
    done
    echo
    echo "Notes:"
    if [ -s "$OUT/notes.txt" ]; then sed 's/^/- /' "$OUT/notes.txt"; else echo "- no errors, warnings or unclean exits"; fi
    if [ -s "$OUT/config-warning.txt" ]; then
        echo "- redis-benchmark printed 'WARNING: Could not fetch server CONFIG' against: $(sort -u "$OUT/config-warning.txt" | paste -sd' ')"
        echo "  (benign: it wants a [name, value] pair for CONFIG GET save/appendonly, only to print them)"
    fi
    echo
    echo "Exact commands, in order:"
    echo '```'
    cat "$OUT/commands.txt"
    echo '```'
    echo "Logs and CSVs: $OUT"
} | tee "$OUT/summary.md"
