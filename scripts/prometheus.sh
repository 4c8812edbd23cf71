#!/usr/bin/env bash
# Debian's Prometheus (and promtool) for the tests of the shipped scrape config and alert rules.
#
#   scripts/prometheus.sh install    apt-get install Debian's prometheus if it is missing
#   scripts/prometheus.sh bin        print the path of prometheus (exit 3: none)
#   scripts/prometheus.sh promtool   print the path of promtool (exit 3: none)
#
# The tests start their own server (free port, their own data directory, config and rules made
# from deploy/prometheus/) and stop it; nothing here runs in the background.
set -euo pipefail

find_bin() {
    command -v "$1" 2>/dev/null || { [ -x "/usr/bin/$1" ] && echo "/usr/bin/$1"; } || return 3
}

cmd_install() {
    if find_bin prometheus >/dev/null && find_bin promtool >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "prometheus.sh: prometheus is missing; install Debian's 'prometheus' package" >&2
        return 1
    fi
    echo "prometheus.sh: installing Debian's prometheus package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package may start a system service on :9090; the tests never use it.
    find_bin prometheus >/dev/null
}

case "${1:-}" in
    install) cmd_install ;;
    bin) find_bin prometheus ;;
    promtool) find_bin promtool ;;
    *) echo "usage: $0 install | bin | promtool" >&2; exit 2 ;;
esac
