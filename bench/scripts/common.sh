# Shared by vs_redis.sh and startup_recovery.sh (sourced, not run): the port
# check, the server/load bookkeeping that the EXIT trap cleans up, and the
# command log. Expects OUT (the log dir) to be set before log_cmd is called.

# port_taken PORT: true if something accepts connections on 127.0.0.1:PORT.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# check_ports PORT...: exits 2, naming the holder, if any port is taken.
check_ports() {
    local p
    for p in "$@"; do
        if port_taken "$p"; then
            echo "port $p on 127.0.0.1 is already in use (this script uses $*); stop whatever holds it:" >&2
            (command -v ss >/dev/null && ss -ltnp "sport = :$p" >&2) || true
            exit 2
        fi
    done
}

# The server and load the script runs now; cleanup stops them on any exit.
SERVER_PID=""
SERVER_LABEL="corekv"
LOAD_PID=""
cleanup() {
    if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "stopping $SERVER_LABEL (pid $SERVER_PID)" >&2
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log_cmd() { echo "$*" >>"$OUT/commands.txt"; }
