#!/usr/bin/env bash
# Remote verification benchmark: a latchkey daemon, two apps verifying against it
# (examples/remote-orders) and the same app on an embedded store (examples/orders), all on
# loopback. Two measurements:
#   1. requests per second of `GET /orders` with a valid key: the remote-verifying app with a
#      warm cache against the embedded-store app, interleaved over ROUNDS rounds (the order
#      reversed every other round), medians and their ratio (target >= 85 %);
#   2. revocation propagation: REVOCATIONS times, a fresh key is accepted by both remote
#      apps, revoked through the API, and each app is polled until its first 401; the time
#      from the revoke call's return to that 401, p50/p90/p99/max (target p99 <= 100 ms);
#   3. accuracy of a rate limit across the two remote apps (leases): a key limited to LIMIT
#      requests an hour is hammered through both apps at once for DURATION; the requests
#      accepted beside the limit (target: within 10 % of it, never above).
#
# Usage: bench/remote.sh       (ROUNDS=5 DURATION=3s CONNS=16 REVOCATIONS=100 LIMIT=1000)
#
# The daemon is `latchkey serve` when the daemon package builds a working binary, otherwise
# `remote-bench daemon` (crates/latchkey-tower/examples/remote_bench.rs), which serves the
# same router, `latchkey_admin::router`. Everything goes to bench/out/remote/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/procs.sh
source bench/procs.sh
wrk_knobs
REVOCATIONS=${REVOCATIONS:-100}
LIMIT=${LIMIT:-1000}
OUT=bench/out/remote
REL=target/release

install_missing wrk wrk

cargo build --release --quiet -p example-orders -p example-remote-orders
cargo build --release --quiet -p latchkey-tower --features remote --example remote-bench
BENCH=$REL/examples/remote-bench

rm -rf "$OUT"
mkdir -p "$OUT"

trap stop_all EXIT

# The daemon, and its fixtures: a service key (latchkey:verify) and a reader key.
if cargo build --release --quiet -p latchkey-daemon 2>/dev/null && "$REL/latchkey" serve --help >/dev/null 2>&1; then
    DAEMON_KIND="latchkey serve"
    start daemon 's/^.*listening on \([0-9.:]*\).*$/\1/p' \
        "$REL/latchkey" serve --db "$OUT/daemon-db" --listen 127.0.0.1:0
    ADMIN=$(sed -n '/Secret (store immediately):/{n;s/^ *//;p;q}' "$OUT/daemon.out")
else
    DAEMON_KIND="remote-bench daemon (latchkey_admin::router)"
    start daemon 's/^listening on //p' "$BENCH" daemon "$OUT/daemon-db" 127.0.0.1:0
    ADMIN=$(cat "$OUT/daemon-db.admin")
fi
DAEMON=http://$FOUND
"$BENCH" setup "$DAEMON" "$ADMIN" >"$OUT/fixtures"
SERVICE=$(sed -n 's/^service //p' "$OUT/fixtures")
READER=$(sed -n 's/^reader //p' "$OUT/fixtures")

export LATCHKEY_URL=$DAEMON LATCHKEY_SERVICE_KEY=$SERVICE RUST_LOG=warn
start remote-a 's/^listening on //p' "$REL/example-remote-orders" --listen 127.0.0.1:0
REMOTE_A=http://$FOUND
start remote-b 's/^listening on //p' "$REL/example-remote-orders" --listen 127.0.0.1:0
REMOTE_B=http://$FOUND
start embedded 's/^orders API on \(http:[^,]*\),.*$/\1/p' \
    "$REL/example-orders" --db "$OUT/orders-db" --listen 127.0.0.1:0
EMBEDDED=$FOUND
EMBEDDED_KEY=$(sed -n 's/^ *RW=//p' "$OUT/embedded.out")

check() { # check URL KEY: one request must answer 200 (and warms the remote cache)
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "$1/orders")
    [ "$status" = 200 ] || { echo "$1/orders answered $status" >&2; exit 1; }
}
check "$REMOTE_A" "$READER"
check "$EMBEDDED" "$EMBEDDED_KEY"

echo "daemon: $DAEMON_KIND at $DAEMON"
echo "remote apps: $REMOTE_A $REMOTE_B; embedded app: $EMBEDDED"
echo

# 1. Requests per second, interleaved.
rps_of() { if [ "$1" = remote ]; then orders_rps "$REMOTE_A" "$READER"; else orders_rps "$EMBEDDED" "$EMBEDDED_KEY"; fi; }
interleave "$OUT/rps.tsv" embedded remote
EMB=$(median_of "$OUT/rps.tsv" embedded)
REM=$(median_of "$OUT/rps.tsv" remote)
echo
printf 'median  embedded store  %10.0f req/s\n' "$EMB"
printf 'median  remote (warm)   %10.0f req/s   %.1f %% of embedded (target >= 85 %%)\n' \
    "$REM" "$(awk -v r="$REM" -v e="$EMB" 'BEGIN { print 100 * r / e }')"
echo

# 2. Revocation propagation to both remote apps.
"$BENCH" propagation "$DAEMON" "$ADMIN" "$REVOCATIONS" "$REMOTE_A" "$REMOTE_B" | tee "$OUT/propagation.txt"

# 3. A rate limit's accuracy across both remote apps: each admits from its leased slices.
api() { # api PATH JSON: POST as the admin; the answer
    curl -s -X POST -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
        -d "$2" "$DAEMON$1"
}
api /v1/users '{"name":"bench-limited","permissions":["orders:read"]}' >/dev/null
LIMITED=$(api /v1/keys "{\"name\":\"limited\",\"user_id\":\"bench-limited\",\"rate_limits\":[{\"name\":\"default\",\"limit\":$LIMIT,\"window_seconds\":3600}]}" |
    sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
[ -n "$LIMITED" ] || { echo "could not create the rate-limited key" >&2; exit 1; }
hammering=()
for app in a b; do
    url=$REMOTE_A
    [ "$app" = b ] && url=$REMOTE_B
    wrk -t2 -c"$CONNS" -d"$DURATION" -H "Authorization: Bearer $LIMITED" "$url/orders" \
        >"$OUT/limited-$app.txt" &
    hammering+=($!)
done
# Only the two wrk runs: the daemon and the apps are background jobs of this shell too.
wait "${hammering[@]}"
accepted() { # accepted FILE: requests answered 2xx in a wrk report
    awk '/requests in/ { total = $1 } /Non-2xx/ { refused = $NF } END { print total - refused }' "$1"
}
ACCEPTED=$(( $(accepted "$OUT/limited-a.txt") + $(accepted "$OUT/limited-b.txt") ))
echo
# GCRA also wins back LIMIT/3600 a second during the run: a few above LIMIT at most.
printf 'rate limit %d/h across two apps: accepted %d (%.1f %% of the limit; target 90-100 %%)\n' \
    "$LIMIT" "$ACCEPTED" "$(awk -v a="$ACCEPTED" -v l="$LIMIT" 'BEGIN { print 100 * a / l }')"
