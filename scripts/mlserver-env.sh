#!/usr/bin/env bash
# A virtualenv of its own for a real MLServer (the remote-pool peer in tests/integration), kept apart
# from tierserve's .venv: MLServer pins its own FastAPI, pydantic and uvloop.
#
#   scripts/mlserver-env.sh [DIR]    create DIR (default: .cache/mlserver-venv under the repository
#                                    root) unless it already works; prints its python's path last
#
# Installs mlserver==1.7.1, uvloop<0.22 (1.7.1 fails with newer uvloop), onnxruntime and numpy, and
# nothing of PyTorch or CUDA (checked after the install). Idempotent and safe to run concurrently
# (a lock beside DIR). PYTHON picks the interpreter (3.9 to 3.12; default python3.11, else python3).
#
# Exit status: 0 ready; 3 the environment could not be created (no usable interpreter, or pip could
# not install the packages, e.g. no access to the package index); 1 anything else, e.g. the
# installed set pulled PyTorch or CUDA packages.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$REPO/.cache/mlserver-venv}
case "$DIR" in /*) ;; *) DIR=$PWD/$DIR ;; esac
MARK=$DIR/.tierserve-mlserver-env
REQUIREMENTS=("mlserver==1.7.1" "uvloop<0.22" "onnxruntime" "numpy")
FORBIDDEN='^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|cupy.*|jax.*|tensorflow.*)$'

log() { echo "mlserver-env: $*" >&2; }

works() {
    [ -f "$MARK" ] && [ -x "$DIR/bin/python" ] && [ -x "$DIR/bin/mlserver" ] &&
        "$DIR/bin/python" - >/dev/null 2>&1 <<'EOF'
import mlserver, numpy, onnxruntime, uvloop
from importlib.metadata import version
assert version("mlserver") == "1.7.1", version("mlserver")
assert tuple(int(p) for p in version("uvloop").split(".")[:2]) < (0, 22)
EOF
}

pick_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.11 python3.12 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 12))' \
                >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

mkdir -p "$(dirname "$DIR")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR.lock"
    flock 9  # one creator at a time; the others find it ready afterwards
fi

if works; then
    log "ready (already there): $DIR"
    echo "$DIR/bin/python"
    exit 0
fi

python=$(pick_python) || { log "no Python 3.9-3.12 interpreter found (set PYTHON)"; exit 3; }
started=$(date +%s)
log "creating $DIR with $python ($("$python" --version 2>&1))"
rm -rf "$DIR"
"$python" -m venv "$DIR" || { log "venv creation failed"; rm -rf "$DIR"; exit 3; }
pip_log=$(mktemp)
trap 'rm -f "$pip_log"' EXIT
if ! "$DIR/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}" >"$pip_log" 2>&1; then
    grep -v "^WARNING: Location" "$pip_log" | tail -n 20 >&2
    log "pip could not install ${REQUIREMENTS[*]} (is the package index reachable?)"
    rm -rf "$DIR"
    exit 3
fi

# MLServer must not drag in PyTorch or CUDA: fail loudly if anything did.
unwanted=$("$DIR/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null |
    cut -d= -f1 | tr '[:upper:]_' '[:lower:]-' | grep -E "$FORBIDDEN" || true)
if [ -n "$unwanted" ]; then
    log "the install pulled packages it must not:" $unwanted
    exit 1
fi
touch "$MARK"
if ! works; then
    rm -f "$MARK"
    log "installed, but mlserver/onnxruntime/numpy/uvloop do not import as expected"
    exit 1
fi
log "ready in $(($(date +%s) - started)) s: $DIR"
echo "$DIR/bin/python"
