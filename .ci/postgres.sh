#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: installs the server from Debian's packages when
# the machine lacks it, runs it on a free loopback port with its data under a temp dir (as the
# unprivileged `nobody` when called as root: the server refuses to run as root), and stops it.
#
#   source .ci/postgres.sh        # start one for this shell; exports LATCHKEY_TEST_POSTGRES and
#                                 # LATCHKEY_TEST_PGDATA, stops and deletes it when the shell exits
#   .ci/postgres.sh start [DIR]   # start one in DIR (default: a new temp dir), or restart the
#                                 # cluster already in DIR on its port; prints two lines:
#                                 #   LATCHKEY_TEST_POSTGRES=postgres://latchkey:…@127.0.0.1:PORT/postgres
#                                 #   LATCHKEY_TEST_PGDATA=DIR
#   .ci/postgres.sh stop DIR      # stop it (fast shutdown); the data stays
#   .ci/postgres.sh destroy DIR   # stop it and delete DIR
#   .ci/postgres.sh install       # only the installation step
#
# The tests use `start`/`stop` on a cluster of their own to take PostgreSQL away under a
# running daemon (tests/it/cluster.rs). The password is random per cluster; the URL carries it,
# so print the URL only to a file or a variable. Durability settings are off (fsync): the
# cluster only lives for one test run, and a stop is always a clean shutdown.

pg_bin_dir() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return
    fi
    # Debian keeps the server binaries off PATH, one directory per major version: the newest.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

pg_install() {
    if [ -n "$(pg_bin_dir)" ]; then return 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "postgres.sh: PostgreSQL is not installed and installing it needs root" >&2
        return 1
    fi
    echo "postgres.sh: installing PostgreSQL from Debian's packages" >&2
    # Debian's package would create and start a `main` cluster; the tests run their own.
    mkdir -p /etc/postgresql-common
    if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
        echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    [ -n "$(pg_bin_dir)" ]
}

# Runs a server binary as the cluster's owner: `nobody` when we are root.
pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u nobody -- "$@"
        else
            su -s /bin/sh nobody -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

pg_port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start [DIR]: prints the URL and data dir lines (see the top of this file).
pg_start() {
    pg_install || return 1
    local bin dir port password
    bin=$(pg_bin_dir)
    dir=${1:-}
    if [ -z "$dir" ]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-pg.XXXXXX")
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        printf '%s\n' "$password" >"$dir/password"
        chmod 0755 "$dir"
        [ "$(id -u)" = 0 ] && chown nobody "$dir" "$dir/password"
        pg_as_owner "$bin/initdb" -D "$dir/data" -U latchkey --pwfile="$dir/password" \
            --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            return 1
        }
        # Below the kernel's ephemeral range: a port in it can be taken as the local end
        # of any outgoing connection while the cluster is stopped (a test stops and starts
        # it on the same port), and PostgreSQL then fails to bind (seen once in CI, with
        # other loopback traffic on the machine).
        local low=32768
        read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
        [ "$low" -gt 21024 ] || low=32768
        while :; do
            port=$((20000 + RANDOM % (low - 20000)))
            pg_port_free "$port" && break
        done
        echo "$port" >"$dir/port"
        cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
full_page_writes = off
EOF
    fi
    port=$(cat "$dir/port")
    password=$(cat "$dir/password")
    pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
        tail -n 20 "$dir/server.log" >&2
        return 1
    }
    echo "LATCHKEY_TEST_POSTGRES=postgres://latchkey:$password@127.0.0.1:$port/postgres"
    echo "LATCHKEY_TEST_PGDATA=$dir"
}

pg_stop() {
    local dir=${1:?postgres.sh stop DIR}
    [ -f "$dir/data/postmaster.pid" ] || return 0
    pg_as_owner "$(pg_bin_dir)/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
}

pg_destroy() {
    local dir=${1:?postgres.sh destroy DIR}
    pg_stop "$dir" || true
    rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: one cluster for this shell, gone when it exits.
    pg_lines=$(pg_start) || return 1
    export "${pg_lines%%$'\n'*}"
    export "${pg_lines##*$'\n'}"
    unset pg_lines
    trap 'pg_destroy "$LATCHKEY_TEST_PGDATA"' EXIT
    echo "postgres.sh: PostgreSQL on ${LATCHKEY_TEST_POSTGRES##*@} (data in $LATCHKEY_TEST_PGDATA)" >&2
else
    set -euo pipefail
    case "${1:-}" in
        install) pg_install ;;
        start) pg_start "${2:-}" ;;
        stop) pg_stop "${2:-}" ;;
        destroy) pg_destroy "${2:-}" ;;
        *)
            echo "usage: $0 install | start [DIR] | stop DIR | destroy DIR  (or source it)" >&2
            exit 2
            ;;
    esac
fi
