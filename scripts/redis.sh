#!/usr/bin/env bash
# A throwaway Redis server for tests and benchmarks: redis-server on a free port, listening on
# 127.0.0.1 only, in a directory of its own, nothing persisted.
#
#   scripts/redis.sh install      apt-get install Debian's redis-server if it is missing
#   scripts/redis.sh bin          print the path of redis-server (exit 3: none)
#   scripts/redis.sh start [DIR]  start a server; prints URL=redis://... , DIR=... and PID=... lines
#   scripts/redis.sh stop DIR     stop the server started in DIR and remove DIR
set -euo pipefail

server_bin() {
    if [ -n "${REDIS_SERVER:-}" ] && [ -x "$REDIS_SERVER" ]; then
        echo "$REDIS_SERVER"
        return 0
    fi
    command -v redis-server 2>/dev/null || { [ -x /usr/bin/redis-server ] && echo /usr/bin/redis-server; } || return 3
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_install() {
    if server_bin >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "redis.sh: redis-server is missing; install Debian's 'redis-server' package" >&2
        return 1
    fi
    echo "redis.sh: installing Debian's redis-server package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    server_bin >/dev/null
}

# Wait until the server answers PING (redis-cli when present, else a raw socket).
wait_ready() {
    local port=$1 attempt
    for attempt in $(seq 1 100); do
        if python3 - "$port" <<'PY' 2>/dev/null
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5) as s:
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
PY
        then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

cmd_start() {
    local bin dir port attempt
    bin=$(server_bin) || { echo "redis.sh: no redis-server (scripts/redis.sh install)" >&2; exit 3; }
    dir=${1:-$(mktemp -d /tmp/tierserve-redis.XXXXXX)}
    mkdir -p "$dir"
    touch "$dir/.tierserve-redis"  # stop removes only directories that carry this mark
    for attempt in 1 2 3; do
        port=$(free_port)
        "$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" \
            --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null 2>&1 || continue
        if wait_ready "$port"; then
            echo "URL=redis://127.0.0.1:$port/0"
            echo "DIR=$dir"
            echo "PID=$(cat "$dir/redis.pid")"
            return 0
        fi
        stop_pid "$dir"
    done
    echo "redis.sh: the server did not start; its log:" >&2
    tail -n 30 "$dir/redis.log" >&2 || true
    exit 1
}

stop_pid() {
    local dir=$1 pid
    [ -f "$dir/redis.pid" ] || return 0
    pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
    local dir=${1:?usage: redis.sh stop DIR}
    if [ ! -e "$dir/.tierserve-redis" ]; then
        echo "redis.sh: $dir was not made by redis.sh start; leaving it alone" >&2
        exit 1
    fi
    stop_pid "$dir"
    rm -rf "$dir"
}

case "${1:-}" in
    install) cmd_install ;;
    bin) server_bin ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | bin | start [DIR] | stop DIR" >&2; exit 2 ;;
esac
