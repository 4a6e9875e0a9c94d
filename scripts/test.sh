#!/usr/bin/env bash
# The project's test command (README; .ci/run runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# both tiers in one run: the fast default tier and the end-to-end runs behind the e2e marker
exec .venv/bin/python -m pytest -m "e2e or not e2e" "$@"
