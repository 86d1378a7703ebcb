# Shared by vs_redis.sh, startup_recovery.sh and cluster3.sh (sourced, not
# run): the port check, the server/load bookkeeping that the EXIT trap cleans
# up, and the command log. Expects OUT (the log dir) to be set before log_cmd
# is called.

# port_taken PORT [HOST]: true if something accepts connections on HOST:PORT
# (default host 127.0.0.1).
port_taken() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# check_ports PORT...: exits 2, naming the holder, if any port is taken.
check_ports() { check_ports_on 127.0.0.1 "$@"; }

# check_ports_on HOST PORT...: the same on HOST.
check_ports_on() {
    local host="$1" p; shift
    for p in "$@"; do
        if port_taken "$p" "$host"; then
            echo "port $p on $host is already in use (this script uses $*); stop whatever holds it:" >&2
            (command -v ss >/dev/null && ss -ltnp "sport = :$p" >&2) || true
            exit 2
        fi
    done
}

# The server and load the script runs now; cleanup stops them on any exit.
# SERVER_PIDS: further servers (a cluster), as space-separated pids.
SERVER_PID=""
SERVER_LABEL="corekv"
SERVER_PIDS=""
LOAD_PID=""
cleanup() {
    if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
    fi
    local p live=""
    for p in $SERVER_PID $SERVER_PIDS; do
        if kill -0 "$p" 2>/dev/null; then live="$live $p"; fi
    done
    [ -n "$live" ] || return 0
    echo "stopping $SERVER_LABEL (pid$live)" >&2
    # SIGCONT first: a server stopped by a test (SIGSTOP) cannot act on SIGTERM.
    for p in $live; do kill -CONT "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local any=0
        for p in $live; do if kill -0 "$p" 2>/dev/null; then any=1; fi; done
        [ "$any" = 1 ] || break
        sleep 0.1
    done
    for p in $live; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log_cmd() { echo "$*" >>"$OUT/commands.txt"; }
