import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "config", "profiles", "envs")

#: what the tests marked ``pwx`` need from Debian's quantum-espresso (scripts/install.sh installs both)
PWX_TOOLS = ("pw.x", "mpirun")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """With KAPPAFLOW_REQUIRE_PWX=1 (the README's test command sets it) a test marked ``pwx`` fails
    when pw.x or mpirun is missing, before its own skipif marker could skip it silently."""
    if item.get_closest_marker("pwx") is None or os.environ.get("KAPPAFLOW_REQUIRE_PWX") != "1":
        return
    missing = [tool for tool in PWX_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"KAPPAFLOW_REQUIRE_PWX=1 but {', '.join(missing)} not on PATH "
                    "(scripts/install.sh installs Debian's quantum-espresso)", pytrace=False)


def copy_workflow(dest, names=WORKFLOW_FILES):
    """Copy the workflow (Snakefile, rules, scripts, config, profiles, envs) into ``dest``; return it."""
    dest = Path(dest)
    for name in names:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=False)
        else:
            shutil.copy(src, dest / name)
    return dest


@pytest.fixture
def workspace(tmp_path):
    """A copy of the workflow to run Snakemake in isolation."""
    return copy_workflow(tmp_path)


def run_snakemake(workdir, *args, env=None, check=True, timeout=1800):
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = ["snakemake", "--cores", "2", "--rerun-incomplete", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def mock_invocations(log_path):
    path = Path(log_path)
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def lammps_or_skip():
    """Skip without LAMMPS, except under KAPPAFLOW_REQUIRE_LAMMPS=1 (the README's test command): fail."""
    import os

    from kappaflow.gk.lammps_ref import lammps_available

    why = lammps_available()
    if why and os.environ.get("KAPPAFLOW_REQUIRE_LAMMPS") == "1":
        pytest.fail(f"KAPPAFLOW_REQUIRE_LAMMPS=1 but {why}", pytrace=False)
    if why:
        pytest.skip(why)
