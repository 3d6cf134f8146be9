#!/usr/bin/env bash
# Figures at scale: a store of KEYS keys (default 1,000,000) held by one user, served by
# `latchkey serve` on loopback. Prints one table, targets beside the figures:
#   - p50/p99 of each key list query (limit=50) at the first and at the 1,000th page,
#   - GET /metrics, GET /v1/audit/verify,
#   - DELETE of the user holding every key (its return time), and POST /v1/verify p99
#     while the deletion's background work runs,
#   - the daemon's max RSS (VmHWM) over the whole run.
#
# Usage: bench/scale.sh
# Knobs (environment): KEYS=1000000; SAMPLES=20 requests per figure; CREATE_SECONDS=60 of
# create-heavy load (wrk, 4 connections; 0 skips it) with the RSS before and after;
# VERIFY_SECONDS=20 of verification sampling during the background work; STORE=bench/out/scale-$KEYS (seeded
# once with `bench-server seed`, ~2 minutes at a million; reused by later runs until the
# deletion has run on it: a run deletes the user, so the store is re-seeded each run).
# Needs: cargo, curl, jq, wrk, python3 (bench/scale_client.py times the requests on one
# keep-alive connection). Writes only under bench/out and a temp dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require bench/scale.sh cargo curl jq wrk

KEYS=${KEYS:-1000000}
SAMPLES=${SAMPLES:-20}
VERIFY_SECONDS=${VERIFY_SECONDS:-20}
CREATE_SECONDS=${CREATE_SECONDS:-60}

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release --quiet -p latchkey-daemon --bin latchkey \
    -p latchkey-tower --example bench-server)
bin="$target/release/latchkey"
seeder="$target/release/examples/bench-server"
store="$root/bench/out/scale-$KEYS"
mkdir -p "$root/bench/out"

work=$(mktemp -d)
cleanup() {
    stop_daemon
    rm -rf "$work" "$store" "$store".valid "$store".invalid
}
trap cleanup EXIT

rm -rf "$store" "$store".valid "$store".invalid
seeding=$(date +%s)
"$seeder" seed "$store" --keys "$KEYS"
seeded_in=$(( $(date +%s) - seeding ))
store_mib=$(du -sm "$store" | cut -f1)

# An admin and a second user, through the CLI on the store directly (no daemon yet).
cli() { env -u LATCHKEY_URL -u LATCHKEY_ADMIN_KEY -u LATCHKEY_CONFIG "$bin" --db "$store" "$@"; }
cli groups add --name admin --permissions '*' >/dev/null
cli users add --name admin --groups admin >/dev/null
admin=$(cli --json keys add --name admin --user admin | jq -r .secret)
cli users add --name other --permissions bench:read >/dev/null
other=$(cli --json keys add --name other --user other | jq -r .secret)

start_daemon "$bin" "$store" "$work"

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
for q in "${queries[@]}"; do
    read -r p50 p99 < <(client sample "$q" "$SAMPLES")
    read -r d50 d99 < <(client deep "$q" 1000 "$SAMPLES")
    row "GET ${q#/v1/keys}" "$p50 / $p99; page 1,000: $d50 / $d99" "≤ 20 p50"
done

read -r p50 p99 < <(client sample /metrics "$SAMPLES")
row "GET /metrics" "$p50 / $p99" "O(1)"
read -r p50 _ < <(client sample /v1/audit/verify 3)
row "GET /v1/audit/verify ($(get /v1/audit/verify | jq .events) events)" "$p50 (p50 of 3)" ""

rss_mib() { awk -v f="$1" '$1 == f":" { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }

# Create-heavy load: does memory grow with the keys created?
if (( CREATE_SECONDS > 0 )); then
    wrk_post "$work/create.lua" '{"name":"load","user_id":"other"}' "$admin"
    before=$(rss_mib VmRSS)
    created=$(wrk -t2 -c4 -d"${CREATE_SECONDS}s" -s "$work/create.lua" "$url/v1/keys" \
        | awk '/requests in/ { print $1 }')
    after=$(rss_mib VmRSS)
    row "RSS through ${CREATE_SECONDS} s of key creation ($created keys created)" \
        "$before → $after MiB (RSS)" "≤ 128 MiB"
fi

# The deletion, then verifications while its background work runs.
deleted=$(curl -sSf -o /dev/null -w '%{time_total}' -X DELETE "$url/v1/users/bench" \
    -H "Authorization: Bearer $admin")
row "DELETE /v1/users/bench ($KEYS keys)" \
    "$(awk -v s="$deleted" 'BEGIN { printf "%.1f", s * 1000 }') (one call)" "≤ 1,000"
read -r p50 p99 count < <(client verify "$VERIFY_SECONDS" "{\"key\":\"$other\"}")
revoked=$(curl -sSf "$url/metrics" | awk '/^latchkey_keys\{status="revoked"\}/ { print $2 }')
row "POST /v1/verify while the deletion's background work runs ($count requests; $revoked keys revoked after ${VERIFY_SECONDS} s)" \
    "$p50 / $p99" "normal latency"

row "daemon RSS now / max (VmRSS / VmHWM)" "$(rss_mib VmRSS) / $(rss_mib VmHWM) MiB" "≤ 128 MiB"

echo
echo "$KEYS keys seeded in $seeded_in s; the store on disk after seeding: $store_mib MiB."
echo
echo "| what | p50 / p99 (ms) | target |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
