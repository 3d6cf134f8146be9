#!/usr/bin/env bash
# Figures at scale: a store of KEYS keys (default 1,000,000) held by one user, served by
# `latchkey serve` on loopback. Prints one table, targets beside the figures:
#   - p50/p99 of each key list query (limit=50) at the first and at the 1,000th page,
#   - a tenant-bound caller's key and user lists (its tenant holds 2 users and 4 keys),
#   - GET /metrics, GET /v1/audit/verify,
#   - DELETE of the user holding every key (its return time), and POST /v1/verify p99
#     while the deletion's background work runs,
#   - the daemon's max RSS (VmHWM) over the whole run.
#
# Usage: bench/scale.sh
# Knobs (environment): KEYS=1000000; SAMPLES=20 requests per figure; CREATE_SECONDS=600 of
# create-heavy load (the issue's 10 minutes; wrk, 4 connections; 0 skips it) with the RSS
# before, after and at most (sampled each second) beside the 128 MiB target;
# VERIFY_SECONDS=20 of verification sampling during the background work;
# DRAIN_SECONDS=0: then wait up to this long for the deletion's background work to finish,
# and print its total time, the RSS at most meanwhile and once it is done (idle).
# Other environment reaches the daemon (e.g. `_RJEM_MALLOC_CONF=stats_print:true`, jemalloc's
# options: the binary's jemalloc is prefixed); DAEMON_LOG=FILE keeps the daemon's stderr.
# SEED=DIR: seed once into DIR (kept) and copy it for each run, instead of seeding a fresh
# store every run (~9 minutes and 1.7 GB at a million keys on a loaded 2-core machine).
# The run's store is bench/out/scale-$KEYS, removed at the end (a run deletes the user).
# DB=postgres://USER:PASSWORD@HOST:PORT/DATABASE: run on PostgreSQL instead. The seed (SEED or
# a fresh one) is backed up once to SEED.backup (or bench/out) and restored, for each run,
# into a new database `latchkey_scale_<pid>` on that server (created and dropped through
# psql with the same credentials; DATABASE is only where psql connects to do it).
# Needs: cargo, curl, jq, wrk, python3 (bench/scale_client.py times the requests on one
# keep-alive connection). Writes only under bench/out, SEED and a temp dir.
set -euo pipefail

KEYS=${KEYS:-1000000}
SAMPLES=${SAMPLES:-20}
VERIFY_SECONDS=${VERIFY_SECONDS:-20}
CREATE_SECONDS=${CREATE_SECONDS:-600}
DRAIN_SECONDS=${DRAIN_SECONDS:-0}
DAEMON_LOG=${DAEMON_LOG:-}
SEED=${SEED:-}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

require bench/scale.sh cargo curl jq wrk
DB=${DB:-}
if [[ -n "$DB" ]]; then require bench/scale.sh psql; fi

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release --quiet -p latchkey-daemon --bin latchkey \
    -p latchkey-tower --example bench-server)
bin="$target/release/latchkey"
seeder="$target/release/examples/bench-server"
store="$root/bench/out/scale-$KEYS"
mkdir -p "$root/bench/out"

work=$(mktemp -d)
pid=""
sampler=""
cleanup() {
    if [[ -n "$sampler" ]]; then kill "$sampler" 2>/dev/null || true; fi
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [[ -n "$DAEMON_LOG" && -f "$work/daemon.log" ]]; then cp "$work/daemon.log" "$DAEMON_LOG"; fi
    rm -rf "$work" "$store" "$store".valid "$store".invalid
    if [[ -n "$DB" ]]; then psql -q "$DB" -c "DROP DATABASE IF EXISTS $database" 2>/dev/null || true; fi
}
database=latchkey_scale_$$
trap cleanup EXIT

rm -rf "$store" "$store".valid "$store".invalid
seeding=$(date +%s)
if [[ -n "$SEED" ]]; then
    "$seeder" seed "$SEED" --keys "$KEYS" # reuses SEED once it is seeded
    cp -r "$SEED" "$store"
else
    "$seeder" seed "$store" --keys "$KEYS"
fi
seeded_in=$(( $(date +%s) - seeding ))
store_mib=$(du -sm "$store" | cut -f1)
if [[ -n "$DB" ]]; then
    # The seed, backed up once and restored into a new database for this run.
    backup=${SEED:+$SEED.backup}
    backup=${backup:-$root/bench/out/scale-$KEYS.backup}
    if [[ ! -s "$backup" ]]; then "$bin" --db "$store" backup --out "$backup.partial" && mv "$backup.partial" "$backup"; fi
    psql -q "$DB" -c "CREATE DATABASE $database"
    rm -rf "$store"
    store="${DB%/*}/$database"
    restoring=$(date +%s)
    "$bin" --db "$store" restore "$backup" >/dev/null
    echo "restored into PostgreSQL in $(( $(date +%s) - restoring )) s" >&2
    store_mib=$(psql -tA "$store" -c "SELECT pg_database_size(current_database()) / 1048576")
fi

# An admin and a second user, through the CLI on the store directly (no daemon yet).
# (On PostgreSQL, `store` is the run's database URL from here on.)
cli() { env -u LATCHKEY_URL -u LATCHKEY_ADMIN_KEY -u LATCHKEY_CONFIG "$bin" --db "$store" "$@"; }
cli groups add --name admin --permissions '*' >/dev/null
cli users add --name admin --groups admin >/dev/null
admin=$(cli --json keys add --name admin --user admin | jq -r .secret)
cli users add --name other --permissions bench:read >/dev/null
other=$(cli --json keys add --name other --user other | jq -r .secret)
# A tenant among the million keys (none of them its): its admin and a bot with 3 keys.
cli users add --name acme-admin --tenant-id acme \
    --permissions latchkey:keys:read,latchkey:users:read >/dev/null
acme=$(cli --json keys add --name acme-admin --user acme-admin | jq -r .secret)
cli users add --name acme-bot --tenant-id acme --permissions bench:read >/dev/null
for i in 1 2 3; do cli keys add --name "acme-bot-$i" --user acme-bot >/dev/null; done

mkfifo "$work/stdout"
env -u LATCHKEY_DB -u LATCHKEY_URL -u LATCHKEY_ADMIN_KEY -u LATCHKEY_CONFIG \
    "$bin" serve --db "$store" --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/daemon.log" &
pid=$!
exec 3<"$work/stdout"
addr=""
for _ in $(seq 1 50); do
    IFS= read -r line <&3 || break
    case "$line" in "listening on "*) addr=${line#listening on }; break ;; esac
done
[[ -n "$addr" ]] || { echo "the daemon did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }
url="http://$addr"

rss_mib() { awk -v f="$1" '$1 == f":" { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }
opened_rss=$(rss_mib VmRSS)
opened_hwm=$(rss_mib VmHWM)
# VmRSS each second into FILE while a phase runs (VmHWM would include the peak while opening).
sample_from() { ( while kill -0 "$pid" 2>/dev/null; do rss_mib VmRSS; echo; sleep 1; done ) >"$1" & sampler=$!; }
sample_max() { kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=""; rss_mib VmRSS >>"$1"; echo >>"$1"; sort -n "$1" | tail -1; }

get() { curl -sSf "$url$1" -H "Authorization: Bearer $admin"; }
client() { python3 "$root/bench/scale_client.py" "$url" "$admin" "$@"; }

rows=()
row() { rows+=("$(printf '| %s | %s | %s |' "$1" "$2" "$3")"); }

queries=(
    "/v1/keys?limit=50"
    "/v1/keys?limit=50&sort=-created_at"
    "/v1/keys?limit=50&sort=name"
    "/v1/keys?limit=50&sort=-name"
    "/v1/keys?limit=50&sort=last_used_at"
    "/v1/keys?limit=50&sort=-last_used_at"
    "/v1/keys?limit=50&user_id=bench"
    "/v1/keys?limit=50&user_id=admin"
    "/v1/keys?limit=50&status=active"
    "/v1/keys?limit=50&q=bench%2099"
)
sample_from "$work/rss-lists"
for q in "${queries[@]}"; do
    read -r p50 p99 < <(client sample "$q" "$SAMPLES")
    read -r d50 d99 < <(client deep "$q" 1000 "$SAMPLES")
    row "GET ${q#/v1/keys}" "$p50 / $p99; page 1,000: $d50 / $d99" "≤ 20 p50"
done

# A tenant-bound caller: its first page holds its tenant's keys, all of them.
for q in "/v1/keys?limit=50" "/v1/keys?limit=50&sort=-name" "/v1/users?limit=50"; do
    read -r p50 p99 < <(python3 "$root/bench/scale_client.py" "$url" "$acme" sample "$q" "$SAMPLES")
    page=$(curl -sSf "$url$q" -H "Authorization: Bearer $acme")
    held="$(jq '.items | length' <<<"$page") items, next_cursor $(jq -c .next_cursor <<<"$page")"
    row "GET $q as a tenant-bound caller ($held)" "$p50 / $p99" "≤ 20 p50; 4 keys or 2 users, null"
done

read -r p50 p99 < <(client sample /metrics "$SAMPLES")
row "GET /metrics" "$p50 / $p99" "O(1)"
read -r p50 _ < <(client sample /v1/audit/verify 3)
row "GET /v1/audit/verify ($(get /v1/audit/verify | jq .events) events)" "$p50 (p50 of 3)" ""

row "daemon RSS after opening the store (VmRSS / VmHWM)" "$opened_rss / $opened_hwm MiB" "≤ 128 MiB"
lists_most=$(sample_max "$work/rss-lists")
row "daemon RSS after the list queries above (VmRSS)" "$(rss_mib VmRSS) MiB, at most $lists_most" "≤ 128 MiB"

# Create-heavy load: does memory grow with the keys created?
if (( CREATE_SECONDS > 0 )); then
    wrk_post "$work/create.lua" '{"name":"load","user_id":"other"}' "$admin"
    before=$(rss_mib VmRSS)
    sample_from "$work/rss-create"
    created=$(wrk -t2 -c4 -d"${CREATE_SECONDS}s" -s "$work/create.lua" "$url/v1/keys" \
        | awk '/requests in/ { print $1 }')
    most=$(sample_max "$work/rss-create")
    after=$(rss_mib VmRSS)
    row "RSS through ${CREATE_SECONDS} s of key creation ($created keys created)" \
        "$before → $after MiB, at most $most MiB (VmRSS)" "≤ 128 MiB"
fi

# The deletion, then verifications while its background work runs.
sample_from "$work/rss-delete"
deleting=$(date +%s)
deleted=$(curl -sSf -o /dev/null -w '%{time_total}' -X DELETE "$url/v1/users/bench" \
    -H "Authorization: Bearer $admin")
row "DELETE /v1/users/bench ($KEYS keys)" \
    "$(awk -v s="$deleted" 'BEGIN { printf "%.1f", s * 1000 }') (one call)" "≤ 1,000"
read -r p50 p99 count < <(client verify "$VERIFY_SECONDS" "{\"key\":\"$other\"}")
revoked=$(curl -sSf "$url/metrics" | awk '/^latchkey_keys\{status="revoked"\}/ { print $2 }')
row "POST /v1/verify while the deletion's background work runs ($count requests; $revoked keys revoked after ${VERIFY_SECONDS} s)" \
    "$p50 / $p99" "normal latency"

revoked_count() { curl -sSf "$url/metrics" | awk '/^latchkey_keys\{status="revoked"\}/ { print $2 }'; }
if (( DRAIN_SECONDS > 0 )); then
    until (( $(revoked_count) >= KEYS )) || (( $(date +%s) - deleting >= DRAIN_SECONDS )); do sleep 1; done
    row "the deletion's background work: $(revoked_count) keys revoked" \
        "$(( $(date +%s) - deleting )) s" ""
fi
row "daemon RSS at most during the deletion's background work (VmRSS)" "$(sample_max "$work/rss-delete") MiB" "≤ 128 MiB"
row "daemon RSS now / max (VmRSS / VmHWM)" "$(rss_mib VmRSS) / $(rss_mib VmHWM) MiB" "≤ 128 MiB"

echo
echo "$KEYS keys seeded in $seeded_in s; the store on disk after seeding: $store_mib MiB."
echo
echo "| what | p50 / p99 (ms) | target |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
