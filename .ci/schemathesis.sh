#!/usr/bin/env bash
# Fuzzes the management API against its own OpenAPI document: schemathesis (from PyPI, in a
# venv) runs every check on a daemon started here on 127.0.0.1 over a fresh store, and any
# finding fails CI. Bounded: a fixed number of examples per operation, and a time limit.
#
#   .ci/schemathesis.sh            # after `cargo build`, from anywhere in the repository
#
# Environment: SCHEMATHESIS_EXAMPLES (per operation, default 50), SCHEMATHESIS_SEED
# (default 1, so a finding reproduces), SCHEMATHESIS_VENV (default target/schemathesis-venv).
#
# Not covered: `GET /v1/events` (a stream that never ends; tests/api/events.rs covers it),
# and the stateful phase, which chains responses into requests and so revokes, rotates or
# deletes the very key the run authenticates with, after which every request is a 401.
#
# One worker: with two, schemathesis runs Hypothesis in threads, and CPython 3.11's `ast`
# module counts recursion depth in state the threads share, so a run fails at random with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). That
# failed CI once, on GET /v1/users, with every check passing. One worker is no slower
# here: 22 s against 29 s with two.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=4.32.5
examples=${SCHEMATHESIS_EXAMPLES:-50}
seed=${SCHEMATHESIS_SEED:-1}
venv=${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}
bin=${CARGO_TARGET_DIR:-$root/target}/debug/latchkey

if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q "$version"; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian ships venv apart from python3.
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "schemathesis==$version"
fi

cargo build --locked -q -p latchkey-daemon

work=$(mktemp -d)
daemon=
cleanup() {
    if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

LATCHKEY_FUZZ_KEY=$("$bin" init --db "$work/store" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')
export LATCHKEY_FUZZ_KEY
"$bin" serve --db "$work/store" --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
daemon=$!
for _ in $(seq 100); do
    grep -q '^listening on ' "$work/serve.out" && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$work/serve.out")
[ -n "$addr" ] || { echo "the daemon did not start" >&2; cat "$work/serve.err" >&2; exit 1; }

# Its cache and reports go to the temporary directory, not the repository.
cd "$work"
timeout 600 "$venv/bin/schemathesis" --config-file "$root/.ci/schemathesis.toml" run \
    "http://$addr/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing \
    --exclude-path /v1/events \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    --no-color
