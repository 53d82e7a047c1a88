#!/usr/bin/env bash
# README command 2: install everything, then run the whole test suite (unit, mock pipeline, real pw.x).
set -euo pipefail
cd "$(dirname "$0")/.."
KAPPAFLOW_INSTALL_SLURM=1 bash scripts/install.sh
source scripts/env.sh   # the virtual environment install.sh made (.venv)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TF_CPP_MIN_LOG_LEVEL=3
# the real-SLURM tests (marker slurm) must run here, not skip: a scheduler that cannot start fails them
export KAPPAFLOW_REQUIRE_SLURM=1
export KAPPAFLOW_REQUIRE_PWX=1   # likewise the real pw.x tests (marker pwx): a missing pw.x fails them
export KAPPAFLOW_REQUIRE_LAMMPS=1   # and the LAMMPS checks of the heat flux: a LAMMPS that cannot start fails them
export KAPPAFLOW_REQUIRE_BROWSER=1  # and the headless-Chromium test of the HTML report
# two workers, one test file each at a time (module fixtures stay on one worker): the suite's longest parts
# (the active-learning loop, the real-SLURM run) wait on the scheduler or on single-threaded steps much of
# the time, so two files share the 2 cores here; the SLURM daemons are started only by test_cluster_slurm.py
python -m pytest -q -rs --durations=15 -n 2 --dist loadfile tests "$@"
