# Sourced by bench/remote.sh and bench/postgres.sh: background processes that announce
# themselves on stdout, stopped in reverse order at exit, a median, and wrk on /orders. Needs
# OUT (a directory for each process's stdout and stderr), and CONNS and DURATION for wrk.

PIDS=()
# stop_all: SIGTERM to every process `start` ran, the last started first (apps before the
# daemons they follow).
stop_all() {
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# start NAME PATTERN CMD...: runs CMD in the background, its stdout in $OUT/NAME.out, and
# waits (at most 60 s) for a line matching the sed PATTERN; sets FOUND to what it captures.
start() {
    local name=$1 pattern=$2
    shift 2
    "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    FOUND=
    for _ in $(seq 600); do
        FOUND=$(sed -n "$pattern" "$OUT/$name.out" 2>/dev/null | head -n1)
        [ -n "$FOUND" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$OUT/$name.err" >&2
    exit 1
}

# median: of the numbers on stdin, one a line.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# orders_rps URL KEY: `GET URL/orders` with KEY under `wrk -t1 -c$CONNS -d$DURATION`; prints
# the requests per second (and any non-2xx count on stderr).
orders_rps() {
    wrk -t1 -c"$CONNS" -d"$DURATION" -H "Authorization: Bearer $2" "$1/orders" |
        awk '/^Requests\/sec:/ { print $2 } /Non-2xx/ { print "non-2xx: " $0 > "/dev/stderr" }'
}
