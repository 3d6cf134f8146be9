#!/usr/bin/env bash
# Figures for the daemon, through its HTTP API on loopback:
#   - key creation and revocation latency (p50, p99 over N requests, one at a time),
#   - POST /v1/verify requests per second under wrk load.
#
# Usage: bench/daemon.sh
# Knobs (environment): DB=PATH|URL, the store (default: a new directory; a PostgreSQL URL
# must name an empty database, bench/postgres.sh makes one); N=300 requests per latency
# figure; DURATION=10s, THREADS=2,
# CONNECTIONS=32 for wrk; LATCHKEY_LOG=warn (the daemon's log filter: `info` logs every
# request, as `latchkey serve` does by default); RATE_LIMIT=LIMIT/SECONDS gives the key
# /v1/verify asks about one rate limit (never reached at LIMIT above the rate measured: on
# PostgreSQL it is admitted from slices of the limit's shared state).
# Needs: cargo, curl, jq, wrk (apt-get install -y wrk). Writes nothing outside a temp dir.
set -euo pipefail

N=${N:-300}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
require bench/daemon.sh cargo curl jq wrk

root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build --release --quiet -p latchkey-daemon --bin latchkey)
bin="${CARGO_TARGET_DIR:-$root/target}/release/latchkey"

work=$(mktemp -d)
cleanup() {
    stop_daemon
    rm -rf "$work"
}
trap cleanup EXIT

# Start the daemon on a fresh store and a free port; it prints the admin key it makes.
start_daemon "$bin" "${DB:-$work/store}" "$work"
admin=$printed_admin
[[ -n "$admin" ]] || { echo "the daemon did not print an admin key: is the store new?" >&2; exit 1; }

api() { # METHOD PATH [JSON]
    curl -sSf -X "$1" "$url$2" -H "Authorization: Bearer $admin" \
        -H 'Content-Type: application/json' ${3:+--data "$3"}
}

api POST /v1/users '{"name":"bench","permissions":["orders:read"]}' >/dev/null
api POST /v1/users '{"name":"verifier","permissions":["latchkey:verify"]}' >/dev/null

# p50 and p99 (nearest rank) of a file of seconds, printed in milliseconds.
percentiles() {
    sort -g "$1" | awk '
        function rank(p) { r = p * NR; return (r == int(r)) ? r : int(r) + 1 }
        { v[NR] = $1 }
        END { printf "p50 %.2f ms  p99 %.2f ms  (n=%d)\n", v[rank(0.50)] * 1000, v[rank(0.99)] * 1000, NR }'
}

# Key creation: one request at a time, each on a new loopback connection (curl's
# time_total: connect + request + response).
: >"$work/create.txt"
: >"$work/ids.txt"
for i in $(seq 1 "$N"); do
    curl -sSf -o "$work/body.json" -w '%{time_total}\n' -X POST "$url/v1/keys" \
        -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
        --data "{\"name\":\"bench-$i\",\"user_id\":\"bench\"}" >>"$work/create.txt"
    jq -r .id "$work/body.json" >>"$work/ids.txt"
done

: >"$work/revoke.txt"
while IFS= read -r id; do
    curl -sSf -o /dev/null -w '%{time_total}\n' -X POST "$url/v1/keys/$id/revoke" \
        -H "Authorization: Bearer $admin" >>"$work/revoke.txt"
done <"$work/ids.txt"

# /v1/verify under load: a service key (latchkey:verify) asks about an active key.
limits=
if [[ -n "${RATE_LIMIT:-}" ]]; then
    limits=',"rate_limits":[{"name":"bench","limit":'"${RATE_LIMIT%/*}"',"window_seconds":'"${RATE_LIMIT#*/}"'}]'
fi
target=$(api POST /v1/keys '{"name":"target","user_id":"bench"'"$limits"'}' | jq -r .secret)
service=$(api POST /v1/keys '{"name":"service","user_id":"verifier"}' | jq -r .secret)
wrk_post "$work/verify.lua" '{"key":"'"$target"'","permissions":["orders:read"]}' "$service"
# One request first, to check the answer is what is measured.
valid=$(curl -sSf -X POST "$url/v1/verify" -H "Authorization: Bearer $service" \
    -H 'Content-Type: application/json' --data "{\"key\":\"$target\",\"permissions\":[\"orders:read\"]}" | jq -r .valid)
[[ "$valid" == "true" ]] || { echo "/v1/verify does not answer valid=true" >&2; exit 1; }
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/verify.lua" "$url/v1/verify" >"$work/wrk.txt"

echo "latchkey daemon on ${url#http://} ($(nproc) cores; release build; LATCHKEY_LOG=$LATCHKEY_LOG)"
echo "key creation   (POST /v1/keys):            $(percentiles "$work/create.txt")"
echo "key revocation (POST /v1/keys/{id}/revoke): $(percentiles "$work/revoke.txt")"
echo "POST /v1/verify${RATE_LIMIT:+ (a key limited to $RATE_LIMIT)}, wrk -t$THREADS -c$CONNECTIONS -d$DURATION:"
grep -E "Requests/sec|Non-2xx|Socket errors|^ +(50|99)%" "$work/wrk.txt" | sed 's/^ */  /'
