#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the CPU build of torch and vlmheads.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first and pinned: the local CPU wheel. Left to the resolver, a bare `torch` pulls GBs of CUDA.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -c "import torch, transformers, nnsight, vlmheads; print('vlmheads', vlmheads.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| nnsight', nnsight.__version__)"
