#!/usr/bin/env bash
# Creates .venv-bench with CPU PyTorch for the side-by-side speed benchmark (bench/speed.ts).
# The PyPI linux wheel of torch declares the CUDA runtime packages (several GiB) as
# dependencies; it imports and runs on the CPU without them, so torch is installed with
# --no-deps plus its small pure-Python dependencies. If that import fails, the full
# dependency set is installed instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet --no-deps torch
  "$VENV/bin/python" -m pip install --quiet filelock typing-extensions sympy networkx jinja2 fsspec numpy
fi
if ! "$VENV/bin/python" -c 'import torch; torch.ones(2) @ torch.ones(2)' 2>/dev/null; then
  echo "torch without its CUDA dependencies does not import; installing them" >&2
  "$VENV/bin/python" -m pip install --quiet torch
fi
"$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'
