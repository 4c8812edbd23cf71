#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks: initdb + postgres on a free port, in a
# directory of its own, listening on 127.0.0.1 only, with trust authentication.
#
#   scripts/postgres.sh install      apt-get install Debian's server package if its binaries are missing
#   scripts/postgres.sh bindir       print the directory holding initdb and postgres (exit 3: none)
#   scripts/postgres.sh start [DIR]  start a server; prints DSN=postgresql://... and DIR=... lines
#   scripts/postgres.sh stop DIR     stop the server started in DIR and remove DIR
#
# PostgreSQL refuses to run as root: as root, the server runs as the 'postgres' user (Debian's
# package creates it), else as a system user 'tierserve-pg' made for it. PG_OPTIONS adds server
# settings, e.g. PG_OPTIONS='-c fsync=off'. PG_BINDIR picks the binaries.
set -euo pipefail

bindir() {
    if [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ]; then
        echo "$PG_BINDIR"
        return 0
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 3
}

server_user() {
    if id -u postgres >/dev/null 2>&1; then
        echo postgres
        return
    fi
    if ! id -u tierserve-pg >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin tierserve-pg
    fi
    echo tierserve-pg
}

# Run a command as the server's user (only root needs to switch).
as_server() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$USER_NAME" -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_install() {
    if bindir >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "postgres.sh: PostgreSQL server binaries are missing; install Debian's 'postgresql' package" >&2
        return 1
    fi
    echo "postgres.sh: installing Debian's postgresql package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bindir >/dev/null
}

cmd_start() {
    local bin dir port attempt
    bin=$(bindir) || { echo "postgres.sh: no PostgreSQL server binaries (scripts/postgres.sh install)" >&2; exit 3; }
    dir=${1:-$(mktemp -d /tmp/tierserve-pg.XXXXXX)}
    mkdir -p "$dir"
    touch "$dir/.tierserve-pg"  # stop removes only directories that carry this mark
    USER_NAME=""
    if [ "$(id -u)" -eq 0 ]; then
        USER_NAME=$(server_user)
        chown -R "$USER_NAME" "$dir"
    fi
    as_server "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    for attempt in 1 2 3; do
        port=$(free_port)
        # shellcheck disable=SC2086  # PG_OPTIONS is a list of options
        if as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 ${PG_OPTIONS:-}" start >/dev/null; then
            "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres tierserve
            echo "DSN=postgresql://postgres@127.0.0.1:$port/tierserve"
            echo "DIR=$dir"
            return 0
        fi
    done
    echo "postgres.sh: the server did not start; its log:" >&2
    tail -n 30 "$dir/server.log" >&2 || true
    exit 1
}

cmd_stop() {
    local dir=${1:?usage: postgres.sh stop DIR} bin
    if [ ! -e "$dir/.tierserve-pg" ]; then
        echo "postgres.sh: $dir was not made by postgres.sh start; leaving it alone" >&2
        exit 1
    fi
    bin=$(bindir) || true
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        USER_NAME=$(stat -c %U "$dir/data")
        as_server "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    install) cmd_install ;;
    bindir) bindir ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | bindir | start [DIR] | stop DIR" >&2; exit 2 ;;
esac
