#!/usr/bin/env bash
# README command 2: install everything, then run the whole test suite (unit, mock pipeline, real pw.x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TF_CPP_MIN_LOG_LEVEL=3
python3 -m pytest -q -rs --durations=15 tests "$@"
