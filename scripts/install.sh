#!/usr/bin/env bash
# Installs what kappaflow needs on a fresh Debian/Ubuntu machine: Quantum ESPRESSO (pw.x) from apt,
# and the kappaflow package with its Python dependencies from PyPI.  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v pw.x >/dev/null 2>&1; then
  echo "[install] apt: quantum-espresso"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq quantum-espresso >/dev/null
fi
# The cluster tests' single-node SLURM (tests/slurm_cluster.py starts it; docs/cluster.md).  Only with
# KAPPAFLOW_INSTALL_SLURM=1 (the test command sets it): a workstation that only runs the demo skips it.
if [ "${KAPPAFLOW_INSTALL_SLURM:-0}" = "1" ] && ! command -v slurmdbd >/dev/null 2>&1; then
  echo "[install] apt: slurmctld slurmd slurm-client slurmdbd munge mariadb-server (test scheduler)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
fi
echo "[install] pip: kappaflow and its dependencies"
python3 -m pip install -q --disable-pip-version-check -e ".[test,ml]"
TF_CPP_MIN_LOG_LEVEL=3 python3 -c "import kappaflow, phono3py, spglib, snakemake, tensorflow; print('[install] kappaflow', kappaflow.__version__, '| phono3py', phono3py.__version__, '| tensorflow', tensorflow.__version__)"
