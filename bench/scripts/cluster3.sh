#!/usr/bin/env bash
# A 3-node corekv cluster on this one machine: the most a QUORUM load gets
# from it (closed loop), then the latency at half that rate (open loop, no
# coordinated omission). About 4 minutes with the defaults.
#
#   bench/scripts/cluster3.sh              # full: 15 s per closed-loop test, 30 s per open-loop test
#   bench/scripts/cluster3.sh --quick      # 3 s and 5 s: a smoke run, checks the setup only
#   options: --closed-s S   measured seconds of each closed-loop test (default 15, after 1 s of warm-up)
#            --open-s S     measured seconds of each open-loop test (default 30, after 2 s of warm-up)
#            --clients C    closed-loop clients (default 64)
#            --dir DIR      work dir (default target/cluster3 under the repo; must not be tmpfs)
#            --keep         keep the data dirs (default: deleted once the nodes stopped)
#            --no-build     do not run cargo build first
#   env:     COREKV=path/to/corekv  SDK_BENCH=path/to/sdk-bench (default: $CARGO_TARGET_DIR
#            or target/, then release/); setting COREKV implies --no-build.
#
# Nodes (each listens only on its own address, so all three use the same ports),
# node 1 first, then 2 and 3 once 1 accepts connections:
#   corekv serve --node.id n$i --node.listen 127.0.1.$i --node.cores 1 --node.data_dir DIR/data-n$i
#                --ports.client 7380 --ports.shard_base 7400 --ports.resp 6380
#                --cluster.seeds 127.0.1.1:7380,127.0.1.2:7380,127.0.1.3:7380 --cluster.replication_factor 3
# Then it waits until EVERY node lists 3 members in its RING answer
# (`sdk-bench -h 127.0.1.$i -p 7380 --wait-ring 3 -t ''`), 30 s in all; if the
# ring never gets there it prints each node's ring and log tail and exits 1.
#
# Load (sdk-bench through the SDK, seed 127.0.1.1:7380, --consistency quorum,
# 1 KiB values, keys from [0, 100000), timeout 2 s, no retries):
#   (a) closed loop, SET then GET on the same cluster, at -P 1 and at -P 16:
#       sdk-bench -c 64 -P {1,16} -t set,get -n 100000000 --duration-s 15 --warmup-s 1
#       the achieved rate of each (test, -P) is its maximum here;
#   (b) open loop at 50% of each of those four maxima (SET, then GET):
#       sdk-bench -t {set,get} --rate R --duration-s 30 --warmup-s 2
#       latency counted from each request's intended start (docs in sdk-bench).
# Prints the machine (nproc, CPU, RAM, kernel, disk), the date, the git
# commit, the exact commands and a markdown table for bench/RESULTS.md; the
# summary also goes to DIR/logs/summary.md, every command to
# DIR/logs/commands.txt, each run's JSON and output and each node's log to
# DIR/logs.
#
# Everything runs on this machine: 3 single-core nodes and the load generator
# share its cores, so the figures describe this setup, not a real 3-machine
# cluster. Nodes it started are stopped on exit (trap), whatever happens. It
# refuses to start if one of its ports is already taken on any of the 3 addresses.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLOSED_S=15
CLOSED_WARMUP_S=1
OPEN_S=30
OPEN_WARMUP_S=2
CLIENTS=64
DIR="$ROOT/target/cluster3"
KEEP=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) CLOSED_S=3; OPEN_S=5 ;;
        --closed-s) CLOSED_S="$2"; shift ;;
        --open-s) OPEN_S="$2"; shift ;;
        --clients) CLIENTS="$2"; shift ;;
        --dir) DIR="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

NODES=3
IPS=(127.0.1.1 127.0.1.2 127.0.1.3)
CLIENT_PORT=7380
SHARD_BASE=7400
RESP_PORT=6380
SEED="${IPS[0]}:$CLIENT_PORT,${IPS[1]}:$CLIENT_PORT,${IPS[2]}:$CLIENT_PORT" # all three start the cluster (seeds do not bootstrap)
# The cluster-mode interface; everything else is a single node's command line.
CLUSTER_FLAGS=(--cluster.seeds "$SEED" --cluster.replication_factor 3)
RING_WAIT_S=30
CONSISTENCY=quorum
VALUE=1024
KEYSPACE=100000
PIPELINES="1 16"
OPEN_FRACTION=0.5

for tool in jq timeout findmnt; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool not found (Debian packages jq, coreutils, util-linux)" >&2
        exit 2
    fi
done

BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
if [ -n "${COREKV:-}" ]; then BUILD=0; fi
COREKV="${COREKV:-$BIN_DIR/corekv}"
SDK_BENCH="${SDK_BENCH:-$BIN_DIR/sdk-bench}"
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && nice -n 19 cargo build --release -q -p corekv-tools -p corekv-bench --bin corekv --bin sdk-bench)
fi
for b in "$COREKV" "$SDK_BENCH"; do
    if [ ! -x "$b" ]; then
        echo "$b not found (cargo build --release -p corekv-tools -p corekv-bench --bin corekv --bin sdk-bench, or set COREKV / SDK_BENCH)" >&2
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
SERVER_LABEL="the cluster"
for ip in "${IPS[@]}"; do check_ports_on "$ip" $CLIENT_PORT $SHARD_BASE $RESP_PORT; done
T_START=$SECONDS

# --- machine and versions ----------------------------------------------------
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")"
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then GIT_REV="$GIT_REV (with uncommitted changes)"; fi
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
{
    echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- RAM: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); kernel $(uname -r)"
    echo "- disk: $DIR on $(findmnt -n -o SOURCE,FSTYPE -T "$DIR" | tr -s ' '), $(df -h --output=avail "$DIR" | tail -1 | tr -d ' ') free"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- $("$COREKV" --version) ($COREKV), git $GIT_REV; sdk-bench: $SDK_BENCH"
    echo "- date: $DATE"
} | tee "$OUT/machine.md"
echo

# --- the cluster -------------------------------------------------------------
# cmdline CMD...: CMD quoted for commands.txt (commas need no escape).
cmdline() { printf '%q ' "$@" | sed 's/\\,/,/g'; }

PIDS=()
node_cmd() { # I: prints node I's command, NUL-separated
    local i="$1" ip="${IPS[$(($1 - 1))]}"
    # Spread the nodes over the CPUs (by default every node's core 0 would be CPU 0).
    printf '%s\0' "$COREKV" serve --node.id "n$i" --node.listen "$ip" --node.cores 1 --node.first_cpu $((i - 1)) \
        --node.data_dir "$DIR/data-n$i" --ports.client $CLIENT_PORT --ports.shard_base $SHARD_BASE \
        --ports.resp $RESP_PORT --ports.http 0 "${CLUSTER_FLAGS[@]}"
}

# node_failed I WHY: reports node I's failure with its log and stops.
node_failed() {
    local i="$1" log="$OUT/n$1.log"
    echo "FAILED: node n$i (${IPS[$(($i - 1))]}) $2; its log ($log):" >&2
    tail -20 "$log" >&2
    if grep -q "unexpected argument '--cluster" "$log"; then
        echo "This corekv has no cluster mode (it does not know the --cluster.* flags above):" \
            "build one that does, then run this script again." >&2
    fi
    exit 1
}

# start_node I: starts node I in the background and waits (30 s) until its
# client port accepts connections.
start_node() {
    local i="$1" ip="${IPS[$(($1 - 1))]}" cmd=() t0=$EPOCHREALTIME
    while IFS= read -r -d '' a; do cmd+=("$a"); done < <(node_cmd "$i")
    mkdir -p "$DIR/data-n$i"
    log_cmd "$(cmdline "${cmd[@]}")&"
    "${cmd[@]}" >"$OUT/n$i.log" 2>&1 &
    PIDS[$i]=$!
    SERVER_PIDS="$SERVER_PIDS ${PIDS[$i]}"
    for _ in $(seq 600); do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then node_failed "$i" "exited before accepting connections"; fi
        if port_taken $CLIENT_PORT "$ip"; then
            echo "  n$i: pid ${PIDS[$i]} accepts connections on $ip:$CLIENT_PORT after" \
                "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms"
            return 0
        fi
        sleep 0.05
    done
    node_failed "$i" "did not accept connections on $ip:$CLIENT_PORT in 30 s"
}

echo "== starting $NODES nodes"
for ((i = 1; i <= NODES; i++)); do start_node "$i"; done

echo "== waiting until every node lists $NODES members in its ring (at most $RING_WAIT_S s)"
ring_deadline=$((SECONDS + RING_WAIT_S))
for ((i = 1; i <= NODES; i++)); do
    ip="${IPS[$((i - 1))]}"
    left=$((ring_deadline - SECONDS)); [ "$left" -ge 1 ] || left=1
    cmd=("$SDK_BENCH" -h "$ip" -p $CLIENT_PORT --wait-ring $NODES --wait-ring-s "$left" -t '')
    log_cmd "$(cmdline "${cmd[@]}")"
    if ! "${cmd[@]}" >"$OUT/ring-n$i.txt" 2>&1; then
        {
            echo "FAILED: the ring did not reach $NODES members on every node within $RING_WAIT_S s."
            echo "n$i ($ip): $(tail -1 "$OUT/ring-n$i.txt")"
            for ((j = 1; j <= NODES; j++)); do
                echo "-- n$j's ring now:"
                "$SDK_BENCH" -h "${IPS[$((j - 1))]}" -p $CLIENT_PORT --wait-ring 1 --wait-ring-s 2 -t '' 2>&1 | tail -1 || true
                echo "-- n$j's log (last 10 lines):"
                tail -10 "$OUT/n$j.log"
            done
        } >&2
        exit 1
    fi
    sed "s/^/  n$i: /" "$OUT/ring-n$i.txt"
done
for ((i = 1; i <= NODES; i++)); do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then node_failed "$i" "exited"; fi
done

# --- the load ----------------------------------------------------------------
COMMON=(-h "${IPS[0]}" -p $CLIENT_PORT --consistency $CONSISTENCY -d $VALUE -r $KEYSPACE --timeout-ms 2000 --retries 0)

# load NAME LIMIT_S ARGS...: one sdk-bench run; its JSON in OUT/NAME.json.
load() {
    local name="$1" limit="$2" rc=0; shift 2
    local cmd=("$SDK_BENCH" "${COMMON[@]}" "$@" --json "$OUT/$name.json")
    log_cmd "$(cmdline "${cmd[@]}")"
    echo "  $name: ${cmd[*]}"
    # In the background and waited for, so that a signal to this script stops it at once.
    timeout -k 5 "$limit" "${cmd[@]}" >"$OUT/$name.out" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    sed 's/^/    /' "$OUT/$name.out"
    if [ "$rc" != 0 ]; then
        echo "$name: sdk-bench exited with status $rc$([ "$rc" = 124 ] && echo " (timed out after $limit s)")" \
            | tee -a "$OUT/notes.txt"
    fi
    for ((i = 1; i <= NODES; i++)); do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then node_failed "$i" "exited during $name"; fi
    done
}

# field NAME TEST JQ: a figure of one test from a run's JSON ("?" if absent).
field() {
    local f="$OUT/$1.json"
    [ -s "$f" ] || { echo "?"; return; }
    jq -r --arg t "$2" "(.tests[] | select(.test == \$t) | $3) // \"?\"" "$f" 2>/dev/null | head -1 | grep . || echo "?"
}

echo "== (a) closed loop, $CONSISTENCY, -c $CLIENTS: the maximum"
for p in $PIPELINES; do
    load "closed-P$p" $((2 * (CLOSED_S + CLOSED_WARMUP_S) + 60)) -c "$CLIENTS" -P "$p" -t set,get \
        -n 100000000 --duration-s "$CLOSED_S" --warmup-s "$CLOSED_WARMUP_S"
done

echo "== (b) open loop at $OPEN_FRACTION x each maximum, $CONSISTENCY"
for p in $PIPELINES; do
    for t in SET GET; do
        max=$(field "closed-P$p" "$t" .achieved_rps)
        rate=$(awk -v m="$max" -v f="$OPEN_FRACTION" 'BEGIN { if (m + 0 > 0) printf "%.0f", m * f; else print 0 }')
        name="open-$(echo "$t" | tr 'A-Z' 'a-z')-P$p"
        if [ "$rate" -lt 1 ]; then
            echo "$name: skipped, no closed-loop maximum for $t -P $p" | tee -a "$OUT/notes.txt"
            continue
        fi
        load "$name" $((OPEN_S + OPEN_WARMUP_S + 60)) -t "$(echo "$t" | tr 'A-Z' 'a-z')" --rate "$rate" \
            --duration-s "$OPEN_S" --warmup-s "$OPEN_WARMUP_S"
    done
done

# --- stop --------------------------------------------------------------------
echo "== stopping the nodes"
for ((i = 1; i <= NODES; i++)); do
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' \
        "/proc/${PIDS[$i]}/stat" >"$OUT/n$i.cpu" 2>/dev/null || echo "?" >"$OUT/n$i.cpu"
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
done
for ((i = 1; i <= NODES; i++)); do
    rc=0
    waited=0
    while kill -0 "${PIDS[$i]}" 2>/dev/null && [ $waited -lt 300 ]; do sleep 0.1; waited=$((waited + 1)); done
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
        echo "n$i did not exit 30 s after SIGTERM: killed" | tee -a "$OUT/notes.txt"
        kill -KILL "${PIDS[$i]}" 2>/dev/null || true
    fi
    wait "${PIDS[$i]}" || rc=$?
    [ "$rc" = 0 ] || echo "n$i exited with status $rc after SIGTERM (log: $OUT/n$i.log)" >>"$OUT/notes.txt"
    grep -q "corekv: stopped cleanly" "$OUT/n$i.log" || echo "n$i: no 'corekv: stopped cleanly' line after SIGTERM" >>"$OUT/notes.txt"
    said="$(grep -iE "panic|error|warn" "$OUT/n$i.log" | sort | uniq -c | sort -rn | head -5 || true)"
    [ -z "$said" ] || { echo "n$i's log says:"; echo "$said"; } >>"$OUT/notes.txt"
    echo "  n$i: exit status $rc, $(cat "$OUT/n$i.cpu") CPU seconds, data $(du -sh "$DIR/data-n$i" | cut -f1)"
done
SERVER_PIDS=""
[ "$KEEP" = 1 ] || rm -rf "$DIR"/data-*

# --- the table ---------------------------------------------------------------
ms() { awk -v v="$1" 'BEGIN { if (v == "?") print "?"; else printf "%.3f", v }'; }
row() { # NAME TEST LOAD
    local n="$1" t="$2" target errs kinds
    target=$(field "$n" "$t" .target_rps)
    errs=$(field "$n" "$t" .errors)
    kinds=$(field "$n" "$t" '(.errors_by_kind | to_entries | map("\(.key) \(.value)") | join(", "))')
    [ "$kinds" = "?" ] && kinds=""
    echo "| $t | $3 | $([ "$target" = "?" ] && echo "-" || printf '%.0f' "$target") | $(field "$n" "$t" .achieved_rps)" \
        "| $(ms "$(field "$n" "$t" .latency_ms.p50)") | $(ms "$(field "$n" "$t" .latency_ms.p99)")" \
        "| $(ms "$(field "$n" "$t" .latency_ms.p99_9)") | $(ms "$(field "$n" "$t" .latency_ms.max)")" \
        "| $errs${kinds:+ ($kinds)} |"
}
{
    echo
    echo "## 3-node cluster on one machine, $CONSISTENCY, $VALUE B values ($DATE, git $GIT_REV)"
    echo
    echo "\`bench/scripts/cluster3.sh$([ "$CLOSED_S" = 15 ] && [ "$OPEN_S" = 30 ] || echo " --closed-s $CLOSED_S --open-s $OPEN_S")\`:"
    echo "3 nodes of 1 core each on 127.0.1.1-3 (replication factor 3), sdk-bench on the same"
    echo "machine (1 tokio worker; open loop adds its pacer thread). Closed loop: -c $CLIENTS, SET then"
    echo "GET for $CLOSED_S s each after $CLOSED_WARMUP_S s of warm-up; open loop: $OPEN_FRACTION x that maximum for $OPEN_S s"
    echo "after $OPEN_WARMUP_S s, latency from each request's intended start. Keys from [0, $KEYSPACE)."
    echo
    echo "Machine:"
    echo
    cat "$OUT/machine.md"
    echo
    echo "| test | load | target ops/s | achieved ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for p in $PIPELINES; do
        for t in SET GET; do row "closed-P$p" "$t" "closed loop, -c $CLIENTS -P $p (maximum)"; done
    done
    for p in $PIPELINES; do
        for t in SET GET; do
            row "open-$(echo "$t" | tr 'A-Z' 'a-z')-P$p" "$t" "open loop, $OPEN_FRACTION x the -P $p maximum"
        done
    done
    echo
    echo "Node CPU seconds over the whole run: $(for ((i = 1; i <= NODES; i++)); do printf 'n%d %s  ' "$i" "$(cat "$OUT/n$i.cpu")"; done)"
    echo
    echo "Notes:"
    if [ -s "$OUT/notes.txt" ]; then sed 's/^/- /' "$OUT/notes.txt"; else echo "- no errors, warnings or unclean exits"; fi
    echo
    echo "Exact commands, in order:"
    echo '```'
    cat "$OUT/commands.txt"
    echo '```'
    echo "Logs, JSON and outputs: $OUT; whole run $((SECONDS - T_START)) s."
} | tee "$OUT/summary.md"
