#!/usr/bin/env bash
# videogene's two entry points on a fresh machine:
#   bash run.sh demo [INPUT.h5ad ...] [key=value ...]   set up .venv, run the main job
#   bash run.sh test [pytest args]                      set up .venv, run the test suite
# Idempotent: the environment is (re)installed only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VIDEOGENE_VENV:-.venv}
PY="$VENV/bin/python"

setup() {
    if [ ! -x "$PY" ]; then
        echo "[videogene] creating $VENV" >&2
        python3 -m venv "$VENV"
        "$PY" -m pip install -q --upgrade pip
    fi
    # torch first, so that the package's own "torch>=2.1" is already satisfied: on a CPU-only
    # machine this takes the CPU build instead of several GB of CUDA wheels.
    if ! "$PY" -c "import torch" 2>/dev/null; then
        if [ -n "${TORCH_SPEC:-}" ]; then spec=$TORCH_SPEC
        elif command -v nvidia-smi >/dev/null 2>&1; then spec="torch"
        else spec="torch==2.13.0"; fi
        echo "[videogene] installing $spec" >&2
        "$PY" -m pip install -q "$spec"
    fi
    stamp="$VENV/.videogene-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "[videogene] installing videogene (editable) with dev extras" >&2
        "$PY" -m pip install -q -e ".[dev]"
        touch "$stamp"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        setup
        exec "$VENV/bin/videogene" demo "$@" ;;
    test)
        setup
        exec "$PY" -m pytest -q "$@" ;;
    setup)
        setup ;;
    *)
        echo "usage: bash run.sh demo [INPUT.h5ad ...] [key=value ...] | bash run.sh test [pytest args]" >&2
        exit 2 ;;
esac
