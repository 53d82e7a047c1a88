"""Cluster execution helpers: the SLURM profile's start-up check, pw.x's launch line inside a SLURM job,
and the submission bound of a dry run.

Snakemake's SLURM executor takes the account and QOS from environment variables named in
``profiles/leonardo/config.yaml`` (``KAPPAFLOW_SLURM_ACCOUNT``, ``KAPPAFLOW_SLURM_QOS``), so that nobody
edits the repository to run it.  An unset variable would otherwise reach ``sbatch`` as the literal text
``$KAPPAFLOW_SLURM_ACCOUNT``; :func:`check_profile_env` stops the run first, with the fix in the message.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from kappaflow.errors import KappaflowError

MPI_LAUNCHERS = ("srun", "mpirun", "mpiexec")

PROFILE_ENV = {
    "KAPPAFLOW_SLURM_ACCOUNT": "your project account (sbatch -A), e.g. `saldo -b` on Leonardo lists it",
    "KAPPAFLOW_SLURM_QOS": "the QOS to submit with, e.g. normal (boost_qos_dbg for short tests)",
}


def check_profile_env(executor_name: str | None, environ=None) -> None:
    """Raise a KappaflowError naming every unset variable the SLURM profile needs (other executors: no-op)."""
    if executor_name != "slurm":
        return
    environ = os.environ if environ is None else environ
    missing = [name for name in PROFILE_ENV if not environ.get(name, "").strip()]
    if missing:
        lines = "\n".join(f"  export {name}=...   # {PROFILE_ENV[name]}" for name in missing)
        raise KappaflowError(
            "the SLURM profile needs " + ", ".join(missing) + " (set once, e.g. in ~/.bashrc; "
            "see docs/cluster.md):\n" + lines)


# ----------------------------------------------------------------------------------------------------
# pw.x's launch inside a job: from the job's own resources, so that no config file has to repeat them.
def _resource(resources, name):
    if resources is None:
        return None
    if isinstance(resources, dict):
        return resources.get(name)
    return getattr(resources, name, None)


def launch_command(pw_command: str, resources) -> str:
    """The command that runs pw.x (or the mock) inside a job with Snakemake resources ``resources``.

    A job with the ``mpi`` resource (the SLURM profile's ``dft`` and ``relax``: ``mpi: srun``) is not
    wrapped in a step by the SLURM jobstep: the job launches its MPI ranks itself (Snakemake's
    ``{resources.mpi}`` pattern).  The launch is then built from the job's own ``tasks`` and
    ``cpus_per_task``: ``env OMP_NUM_THREADS=<cpus> srun --ntasks=<tasks> --cpus-per-task=<cpus>
    <pw_command>`` (Slurm >= 22.05: srun does not inherit --cpus-per-task).  So the launch follows the
    profile's resources whatever config files are given (a user's ``--configfile`` replaces the profile's
    ``configfiles:``; docs/cluster.md).  A ``pw_command`` that names a launcher itself
    (``srun ... pw.x``, ``mpirun -np 4 pw.x``) is used as it is; without ``mpi`` nothing changes.
    """
    mpi = _resource(resources, "mpi")
    if not mpi or not str(mpi).strip():
        return pw_command
    words = shlex.split(pw_command)
    mpi_words = shlex.split(str(mpi))
    launchers = set(MPI_LAUNCHERS) | {Path(mpi_words[0]).name}
    if any(Path(w).name in launchers for w in words):
        return pw_command
    tasks = int(_resource(resources, "tasks") or 1)
    cpus = _resource(resources, "cpus_per_task")
    cpus = int(cpus) if cpus else None
    name = Path(mpi_words[0]).name
    if name == "srun":
        launch = [*mpi_words, f"--ntasks={tasks}"] + ([f"--cpus-per-task={cpus}"] if cpus else [])
    elif name in ("mpirun", "mpiexec"):
        launch = [*mpi_words, "-np", str(tasks)]
    else:
        raise KappaflowError(f"resource mpi={mpi!r}: kappaflow builds the pw.x launch for "
                             f"{', '.join(MPI_LAUNCHERS)}; for another launcher put it into dft.pw_command")
    env = ["env", f"OMP_NUM_THREADS={cpus}"] if cpus else []
    return shlex.join(env + launch) + " " + pw_command
