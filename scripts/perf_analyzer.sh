#!/usr/bin/env bash
# Triton's perf_analyzer, for tests/grpc_api/test_perf_analyzer.py and benchmarks.
#
# The binary ships only in older tritonclient wheels (2.41 is the last of the 2.4x line with it); it
# links against Debian's libb64 and against libcudart (not used on a CPU-only run, but loaded),
# which the nvidia-cuda-runtime-cu12 wheel carries. Both wheels are unpacked into .cache/, leaving
# the project's own tritonclient untouched.
#
#   scripts/perf_analyzer.sh install   fetch and unpack it (and apt-get install libb64-0d) if missing
#   scripts/perf_analyzer.sh bin       print the path of the wrapper that runs it (exit 3: none)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.cache/perf_analyzer"
WRAPPER="$DIR/perf_analyzer"
TRITONCLIENT="tritonclient==2.41.0"
CUDART="nvidia-cuda-runtime-cu12==12.9.79"

cmd_bin() {
    [ -x "$WRAPPER" ] && echo "$WRAPPER" || return 3
}

cmd_install() {
    if ! ldconfig -p 2>/dev/null | grep libb64.so.0d >/dev/null; then  # not -q: pipefail and SIGPIPE
        if [ "$(id -u)" -ne 0 ]; then
            echo "perf_analyzer.sh: install Debian's 'libb64-0d' package" >&2
            return 1
        fi
        echo "perf_analyzer.sh: installing Debian's libb64-0d package" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
    fi
    if cmd_bin >/dev/null; then
        return 0
    fi
    local wheels="$DIR/wheels"
    mkdir -p "$wheels"
    python3 -m pip download -q --no-deps --only-binary :all: -d "$wheels" "$TRITONCLIENT" "$CUDART"
    python3 - "$wheels" "$DIR" <<'PY'
import sys, zipfile
from pathlib import Path

wheels, target = Path(sys.argv[1]), Path(sys.argv[2])
wanted = {"perf_analyzer": target / "bin", "libcudart.so.12": target / "lib"}
for wheel in wheels.glob("*.whl"):
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            base = name.rsplit("/", 1)[-1]
            if base in wanted:
                wanted[base].mkdir(parents=True, exist_ok=True)
                (wanted[base] / base).write_bytes(archive.read(name))
                (wanted[base] / base).chmod(0o755)
PY
    rm -rf "$wheels"
    cat >"$WRAPPER" <<SH
#!/usr/bin/env bash
LD_LIBRARY_PATH="$DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$DIR/bin/perf_analyzer" "\$@"
SH
    chmod +x "$WRAPPER"
    "$WRAPPER" --version >/dev/null 2>&1 || { echo "perf_analyzer.sh: the unpacked binary does not run" >&2; return 1; }
}

case "${1:-}" in
    install) cmd_install ;;
    bin) cmd_bin ;;
    *) echo "usage: $0 install|bin" >&2; exit 2 ;;
esac
