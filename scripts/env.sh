# Sourced by the README commands (scripts/demo.sh, scripts/setup_and_test.sh) after scripts/install.sh:
# puts kappaflow's virtual environment first on PATH, so that snakemake, pytest, kappaflow and the mock
# pw.x -- and every job they start, SLURM jobs included (sbatch exports the environment) -- run from it.
#   source scripts/env.sh        (to work in the same environment by hand)
_kf_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAPPAFLOW_VENV="${KAPPAFLOW_VENV:-$_kf_root/.venv}"
if [ ! -x "$KAPPAFLOW_VENV/bin/python" ]; then
  echo "kappaflow: no virtual environment at $KAPPAFLOW_VENV: run 'bash scripts/install.sh' first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$KAPPAFLOW_VENV/bin/activate"
export KAPPAFLOW_VENV
unset _kf_root
