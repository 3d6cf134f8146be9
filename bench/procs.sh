# Sourced by bench/remote.sh and bench/postgres.sh: background processes that announce
# themselves on stdout, stopped in reverse order at exit, and interleaved wrk rounds on /orders. Needs
# OUT (a directory for each process's stdout and stderr), and CONNS and DURATION for wrk.

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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
    PIDS+=("$!")
    wait_for "$!" "$OUT/$name.out" "$OUT/$name.err" "$name" "$pattern"
}

# orders_rps URL KEY: `GET URL/orders` with KEY under `wrk -t1 -c$CONNS -d$DURATION`; prints
# the requests per second (and any non-2xx count on stderr).
orders_rps() {
    wrk -t1 -c"$CONNS" -d"$DURATION" -H "Authorization: Bearer $2" "$1/orders" |
        awk '/^Requests\/sec:/ { print $2 } /Non-2xx/ { print "non-2xx: " $0 > "/dev/stderr" }'
}

# interleave FILE A B: ROUNDS rounds of `rps_of VARIANT` (the caller's function, printing
# one figure) for the variants A and B, A first in odd rounds and B first in even ones, so
# that neither always runs on a warmer machine; each figure is a line `ROUND VARIANT RPS`
# of FILE, and printed.
interleave() {
    local file=$1 round variant rps
    : >"$file"
    for round in $(seq "$ROUNDS"); do
        local order=("$2" "$3")
        [ $((round % 2)) -eq 0 ] && order=("$3" "$2")
        for variant in "${order[@]}"; do
            rps=$(rps_of "$variant")
            printf '%s\t%s\t%s\n' "$round" "$variant" "$rps" >>"$file"
            printf 'round %s  %-9s %10.0f req/s\n' "$round" "$variant" "$rps"
        done
    done
}
