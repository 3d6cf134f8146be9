#!/usr/bin/env bash
# The layer on PostgreSQL while the database refuses the app's progress record (a lock held
# on `latchkey_followers`, as a read-only database or a revoked privilege would): past
# `max_staleness` (5 s) the others' writes no longer wait for the app, so each verification,
# cache hits included, first waits for a read of the changes committed before it began
# (coalesced: one read serves every verification waiting; see `store/follow.rs`). This is
# what that costs: `GET /orders` on examples/orders with `--db URL`, a valid key, warm cache,
# wrk rounds interleaved between the normal state (`acknowledged`) and that one
# (`unacknowledged`), the order reversed every other round; medians and their ratio.
#
# Usage: bench/postgres-unacknowledged.sh     (ROUNDS=5 DURATION=3s CONNS=16)
#
# PostgreSQL: the cluster of LATCHKEY_TEST_POSTGRES when set (its role must create databases),
# else a throwaway one from .ci/postgres.sh. Needs cargo, psql and wrk (installed from Debian
# when missing). Outputs go to bench/out/postgres-unacknowledged/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/procs.sh
source bench/procs.sh
wrk_knobs
OUT=bench/out/postgres-unacknowledged
REL=${CARGO_TARGET_DIR:-target}/release
export RUST_LOG=${RUST_LOG:-warn}
# The app logs each failed record at warn; keep them out of the way, not off.
export LATCHKEY_LOG=${LATCHKEY_LOG:-error}

install_missing wrk wrk
OWN_PG=
if [ -z "${LATCHKEY_TEST_POSTGRES:-}" ]; then
    # shellcheck source=.ci/postgres.sh
    source .ci/postgres.sh
    OWN_PG=$LATCHKEY_TEST_PGDATA
fi
SERVER=$LATCHKEY_TEST_POSTGRES
require bench/postgres-unacknowledged.sh psql

cargo build --release --quiet -p example-orders

rm -rf "$OUT"
mkdir -p "$OUT"
NAME=bench_unack_$$
psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $NAME WITH (FORCE)" -c "CREATE DATABASE $NAME" >/dev/null
DB=${SERVER%/*}/$NAME
LOCKER=latchkey_bench_locker

# unlock: ends the session that holds the lock, if any.
unlock() {
    psql -qtA "$DB" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
        WHERE application_name = '$LOCKER'" >/dev/null
}
trap 'unlock || true; stop_all; if [ -n "$OWN_PG" ]; then pg_destroy "$OWN_PG"; fi' EXIT

# staleness: how long ago the app last recorded its progress, in seconds.
staleness() { psql -qtA "$DB" -c "SELECT extract(epoch FROM now() - max(seen))::numeric(10,1) FROM latchkey_followers"; }

# staleness_until CONDITION WHAT: waits (at most 20 s) until the awk CONDITION on `s`, the
# staleness, holds; else says that WHAT did not happen and exits.
staleness_until() {
    local i
    for i in $(seq 100); do
        [ "$(awk -v s="$(staleness)" "BEGIN { print ($1) }")" = 1 ] && return
        sleep 0.2
    done
    echo "$2" >&2
    exit 1
}

# lock: holds every followers' row in a session of its own (ended by `unlock`), then waits
# until the app's last record is older than max_staleness, so that it is in the state measured.
lock() {
    PGAPPNAME=$LOCKER psql -q "$DB" -c "BEGIN" -c "SELECT 1 FROM latchkey_followers FOR UPDATE" \
        -c "SELECT pg_sleep(3600)" >/dev/null 2>&1 &
    staleness_until 's > 6' "the app's record did not go stale under the lock"
}

# unlocked: ends the lock and waits until the app has recorded its progress again.
unlocked() {
    unlock
    staleness_until 's < 1' "the app did not record its progress again after the lock"
}

start orders 's/^orders API on \(http:[^,]*\),.*$/\1/p' \
    "$REL/example-orders" --db "$DB" --listen 127.0.0.1:0
URL=$FOUND KEY=$(sed -n 's/^ *RW=//p' "$OUT/orders.out")
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$URL/orders")
[ "$status" = 200 ] || { echo "$URL/orders answered $status" >&2; exit 1; }

echo "examples/orders on PostgreSQL ($(psql -tA "$SERVER" -c 'SHOW server_version')), $(nproc) cores, release build"
echo "== GET /orders, valid key, wrk -t1 -c$CONNS -d$DURATION; unacknowledged: followers' rows locked"
rps_of() {
    if [ "$1" = unacknowledged ]; then
        lock
        printf 'record %ss old: ' "$(staleness)" >&2
        orders_rps "$URL" "$KEY"
        unlocked
    else
        orders_rps "$URL" "$KEY"
    fi
}
interleave "$OUT/rps.tsv" acknowledged unacknowledged
medians "$OUT/rps.tsv" acknowledged unacknowledged
