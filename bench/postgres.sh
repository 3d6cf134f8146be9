#!/usr/bin/env bash
# sled and PostgreSQL side by side, in one run, on loopback:
#   1. the daemon (bench/daemon.sh on each backend): key creation p50/p99, revocation
#      p50/p99, POST /v1/verify requests per second;
#   2. the layer on an embedded store of each kind (examples/orders with --db DIR and
#      --db URL): GET /orders req/s with a valid key, warm cache, interleaved over ROUNDS
#      rounds (the order reversed every other round), medians (target: equal within noise);
#   3. revocation propagation across two daemons on one database: app A follows daemon A,
#      app B follows daemon B, each revocation goes through daemon B; the time from the
#      revoke call's return to each app's first 401 (target p99 <= 100 ms).
#
# Usage: bench/postgres.sh     (ROUNDS=5 DURATION=3s CONNS=16 REVOCATIONS=100 N=300)
#
# PostgreSQL: the cluster of LATCHKEY_TEST_POSTGRES when set (its role must create
# databases), else a throwaway one from .ci/postgres.sh (installed from Debian's packages when
# missing). Needs cargo, curl, jq, psql and wrk (installed from Debian when missing). Outputs go
# to bench/out/postgres/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/procs.sh
source bench/procs.sh
wrk_knobs
REVOCATIONS=${REVOCATIONS:-100}
export N=${N:-300}
OUT=bench/out/postgres
REL=${CARGO_TARGET_DIR:-target}/release
export LATCHKEY_LOG=${LATCHKEY_LOG:-warn} RUST_LOG=${RUST_LOG:-warn}

for tool in wrk jq curl; do install_missing "$tool" "$tool"; done
OWN_PG=
if [ -z "${LATCHKEY_TEST_POSTGRES:-}" ]; then
    # shellcheck source=.ci/postgres.sh
    source .ci/postgres.sh
    OWN_PG=$LATCHKEY_TEST_PGDATA
fi
SERVER=$LATCHKEY_TEST_POSTGRES
command -v psql >/dev/null || { echo "bench/postgres.sh needs psql (Debian: postgresql-client)" >&2; exit 1; }

cargo build --release --quiet -p latchkey-daemon -p example-orders -p example-remote-orders
cargo build --release --quiet -p latchkey-tower --features remote --example remote-bench
BENCH=$REL/examples/remote-bench

rm -rf "$OUT"
mkdir -p "$OUT"

# new_db NAME: a fresh database on SERVER; prints its URL (with the password: keep it out of
# the output).
new_db() {
    local name="bench_$1_$$"
    psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null
    echo "${SERVER%/*}/$name"
}

trap 'stop_all; if [ -n "$OWN_PG" ]; then pg_destroy "$OWN_PG"; fi' EXIT

echo "sled and PostgreSQL ($(psql -tA "$SERVER" -c 'SHOW server_version'), ${SERVER##*@}), $(nproc) cores, release builds"
echo

# 1. The daemon on each backend.
for backend in sled postgres; do
    if [ "$backend" = sled ]; then db=$OUT/daemon-sled; else db=$(new_db daemon); fi
    echo "== daemon on $backend"
    DB=$db bench/daemon.sh | tee "$OUT/daemon-$backend.txt" | sed 1d
    echo
done

# 2. The layer on an embedded store of each kind.
start embedded-sled 's/^orders API on \(http:[^,]*\),.*$/\1/p' \
    "$REL/example-orders" --db "$OUT/orders-sled" --listen 127.0.0.1:0
SLED_URL=$FOUND SLED_KEY=$(sed -n 's/^ *RW=//p' "$OUT/embedded-sled.out")
start embedded-postgres 's/^orders API on \(http:[^,]*\),.*$/\1/p' \
    "$REL/example-orders" --db "$(new_db orders)" --listen 127.0.0.1:0
PG_URL=$FOUND PG_KEY=$(sed -n 's/^ *RW=//p' "$OUT/embedded-postgres.out")
for pair in "$SLED_URL $SLED_KEY" "$PG_URL $PG_KEY"; do
    set -- $pair
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "$1/orders")
    [ "$status" = 200 ] || { echo "$1/orders answered $status" >&2; exit 1; }
done
echo "== the layer (examples/orders, GET /orders, wrk -t1 -c$CONNS -d$DURATION)"
rps_of() { if [ "$1" = sled ]; then orders_rps "$SLED_URL" "$SLED_KEY"; else orders_rps "$PG_URL" "$PG_KEY"; fi; }
interleave "$OUT/rps.tsv" sled postgres
medians "$OUT/rps.tsv" sled postgres "(target: equal within noise)"
echo

# 3. Two daemons on one database, an app following each; revocations through daemon B.
CLUSTER_DB=$(new_db cluster)
start daemon-a 's/^.*listening on \([0-9.:]*\).*$/\1/p' \
    "$REL/latchkey" serve --db "$CLUSTER_DB" --listen 127.0.0.1:0
DAEMON_A=http://$FOUND
ADMIN=$(sed -n '/Secret (store immediately):/{n;s/^ *//;p;q}' "$OUT/daemon-a.out")
start daemon-b 's/^.*listening on \([0-9.:]*\).*$/\1/p' \
    "$REL/latchkey" serve --db "$CLUSTER_DB" --listen 127.0.0.1:0
DAEMON_B=http://$FOUND
"$BENCH" setup "$DAEMON_A" "$ADMIN" >"$OUT/fixtures"
SERVICE=$(sed -n 's/^service //p' "$OUT/fixtures")
start app-a 's/^listening on //p' env LATCHKEY_URL="$DAEMON_A" LATCHKEY_SERVICE_KEY="$SERVICE" \
    "$REL/example-remote-orders" --listen 127.0.0.1:0
APP_A=http://$FOUND
start app-b 's/^listening on //p' env LATCHKEY_URL="$DAEMON_B" LATCHKEY_SERVICE_KEY="$SERVICE" \
    "$REL/example-remote-orders" --listen 127.0.0.1:0
APP_B=http://$FOUND
echo "== revocation propagation: daemons $DAEMON_A (A) and $DAEMON_B (B) on one database;"
echo "   app A ($APP_A) follows A, app B ($APP_B) follows B; every revoke goes through B"
"$BENCH" propagation "$DAEMON_B" "$ADMIN" "$REVOCATIONS" "$APP_A" "$APP_B" | tee "$OUT/propagation.txt"
echo "target: p99 <= 100 ms for every app"
