# Shared by the bench scripts: `source "$(dirname "$0")/lib.sh"` after `set -euo pipefail`.
# Defines functions only, plus the knobs of an interleaved wrk comparison on request.

# The log filter of the daemons the benches start: `warn` unless set (`info` logs every
# request, as `latchkey serve` does by default).
export LATCHKEY_LOG=${LATCHKEY_LOG:-warn}

# require SCRIPT TOOL...: exits with a message naming SCRIPT when a TOOL is not installed.
require() {
    local script=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$script needs $tool" >&2; exit 1; }
    done
}

# install_missing COMMAND PACKAGE: installs the Debian PACKAGE when COMMAND is missing.
install_missing() {
    if ! command -v "$1" >/dev/null; then
        echo "installing $2 (Debian package)" >&2
        apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
    fi
}

# wrk_knobs: the defaults of an interleaved wrk comparison (ROUNDS rounds of DURATION with
# CONNS connections), for the scripts that run one.
wrk_knobs() {
    ROUNDS=${ROUNDS:-5}
    DURATION=${DURATION:-3s}
    CONNS=${CONNS:-16}
}

# median: of the numbers on stdin, one a line.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# median_of FILE VARIANT: the median of VARIANT's figures in a file of `ROUND VARIANT FIGURE`
# lines.
median_of() { awk -v v="$2" '$2 == v { print $3 }' "$1" | median; }

# wrk_post FILE BODY KEY: writes to FILE a wrk script that POSTs the JSON BODY with KEY as
# its bearer token.
wrk_post() {
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $3"
LUA
}

# wait_for PID OUT ERR WHAT SCRIPT [TENTHS]: waits at most TENTHS tenths of a second
# (default 600) for a line of the file OUT that the sed SCRIPT prints, and sets FOUND to
# the first such output. Exits, showing the file ERR, when PID ends first or time runs out.
wait_for() {
    local pid=$1 out=$2 err=$3 what=$4 script=$5 tenths=${6:-600}
    FOUND=
    for _ in $(seq "$tenths"); do
        FOUND=$(sed -n "$script" "$out" 2>/dev/null | head -n1)
        [ -n "$FOUND" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$what did not start:" >&2
    cat "$err" >&2
    exit 1
}

# start_daemon BIN STORE WORK: runs `BIN serve` on STORE and a free loopback port, its
# stdout through a fifo in WORK and its log in WORK/daemon.log. Sets `pid`, `url` and
# `printed_admin` (the admin key it prints when it initializes STORE, empty otherwise),
# reading its first lines (a bounded read, no sleeping); exits when it does not start.
start_daemon() {
    local bin=$1 store=$2 work=$3 line addr=""
    printed_admin=""
    mkfifo "$work/stdout"
    env -u LATCHKEY_DB -u LATCHKEY_URL -u LATCHKEY_ADMIN_KEY -u LATCHKEY_CONFIG \
        "$bin" serve --db "$store" --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/daemon.log" &
    pid=$!
    exec 3<"$work/stdout"
    for _ in $(seq 1 50); do
        IFS= read -r line <&3 || break
        case "$line" in
            "Secret (store immediately):") IFS= read -r printed_admin <&3 ;;
            "listening on "*) addr=${line#listening on }; break ;;
        esac
    done
    [[ -n "$addr" ]] || { echo "the daemon did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }
    url="http://$addr"
}

# stop_daemon: ends the daemon start_daemon started, if any.
stop_daemon() {
    if [[ -n "${pid:-}" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
}

# medians FILE A B [NOTE]: prints the medians of variants A and B in a file of `ROUND VARIANT
# FIGURE` lines (requests a second), and B as a share of A, followed by NOTE.
medians() {
    local a b
    a=$(median_of "$1" "$2")
    b=$(median_of "$1" "$3")
    printf 'median  %-15s %10.0f req/s\n' "$2" "$a"
    printf 'median  %-15s %10.0f req/s   %.1f %% of %s %s\n' "$3" "$b" \
        "$(awk -v b="$b" -v a="$a" 'BEGIN { print 100 * b / a }')" "$2" "${4:-}"
}
