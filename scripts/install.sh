#!/usr/bin/env bash
# Install mergeprune and everything it needs into ./.venv (CPU PyTorch 2.13.0 first, then the package).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# Pin torch first: a looser requirement would pull the CUDA build and several GB of packages.
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev,launchers]"
echo "installed: $(.venv/bin/python -c 'import torch, mergeprune; print("mergeprune", mergeprune.__version__, "torch", torch.__version__)')"
