#!/usr/bin/env bash
# README command 1: install everything, then run the embedded demo (Si, real pw.x, relax -> kappa(T)).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/env.sh   # the virtual environment install.sh made (.venv)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
start=$(date +%s)
snakemake --profile profiles/local "$@"
echo "[demo] finished in $(( $(date +%s) - start )) s"
echo "[demo] kappa table: results/si/bte/kappa.csv ; figures: results/si/report/ ; cost: results/si/dft/cost.csv"
grep -E "^300" results/si/bte/kappa.csv | awk -F, '{printf "[demo] kappa_xx(300 K) = %.1f W/mK\n", $2}'
