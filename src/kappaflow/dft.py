"""Running pw.x (real or mock) for one input, validating its output, and the cost table.

A run happens in its own scratch directory next to the input (pw.x's ``outdir`` is relative), its
standard output goes to a temporary file, and only a run that passes every check of
:func:`kappaflow.qe.pwout.read_pw_output` is moved to the final output path.  A failure leaves the
partial output beside it (``pw.out.failed``) for inspection and raises with file and reason.
"""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from kappaflow import units
from kappaflow.errors import KappaflowError, PwOutputError
from kappaflow.qe.pwin import read_pw_input
from kappaflow.qe.pwout import read_pw_output

MOCK_EXECUTABLE = "kappaflow-mock-pw"


def is_mock_command(pw_command: str) -> bool:
    words = shlex.split(pw_command)
    return any(Path(w).name == MOCK_EXECUTABLE for w in words)


def engine_tag(pw_command: str) -> str:
    """What decides the physics of a run: 'pw.x' for Quantum ESPRESSO (however it is launched:
    ``pw.x``, ``srun pw.x -nk 2`` and ``mpirun -np 4 pw.x`` share results), or the mock and its model."""
    words = shlex.split(pw_command)
    for i, w in enumerate(words):
        if Path(w).name == MOCK_EXECUTABLE:
            return "mock " + " ".join(words[i + 1:])
    return "pw.x"


def run_pw(input_path, output_path, pw_command: str, keep_scratch: bool = False,
           env: dict | None = None, log=print) -> float:
    """Run pw.x on ``input_path``; write the validated output to ``output_path``; return WALL seconds."""
    input_path = Path(input_path).resolve()
    output_path = Path(output_path).resolve()
    pw = read_pw_input(input_path)
    n_atoms = len(pw.atoms)
    work = output_path.parent / "work"
    if work.exists():
        shutil.rmtree(work)
    (work / "tmp").mkdir(parents=True)  # pw.x refuses a nested outdir whose parent does not exist
    partial = output_path.with_name(output_path.name + ".partial")
    failed = output_path.with_name(output_path.name + ".failed")
    cmd = shlex.split(pw_command) + ["-in", str(input_path)]
    run_env = dict(os.environ)
    run_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    run_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    run_env.update(env or {})
    t0 = time.perf_counter()
    log(f"pw.x: {' '.join(cmd)}  [{n_atoms} atoms, cwd {work}]")
    with open(partial, "w") as out, open(work / "stderr.txt", "w") as err:
        try:
            proc = subprocess.run(cmd, cwd=work, stdout=out, stderr=err, env=run_env)
        except FileNotFoundError:
            raise KappaflowError(f"{input_path}: pw.x command not found: {cmd[0]!r} "
                                 "(set dft.pw_command in the config)") from None
    elapsed = time.perf_counter() - t0
    try:
        run = read_pw_output(partial, expected_n_atoms=n_atoms)
    except PwOutputError as exc:
        partial.replace(failed)
        stderr = (work / "stderr.txt").read_text().strip().splitlines()
        hint = f" (exit code {proc.returncode}{'; stderr: ' + stderr[-1] if stderr else ''})"
        raise PwOutputError(failed, exc.reason + hint, exc.line) from None
    if proc.returncode != 0:
        partial.replace(failed)
        raise PwOutputError(failed, f"pw.x exited with code {proc.returncode}")
    if not keep_scratch:
        shutil.rmtree(work, ignore_errors=True)
    partial.replace(output_path)
    if failed.exists():
        failed.unlink()
    log(f"pw.x: done in {elapsed:.1f} s (pw.x WALL {run.wall_time_s:.1f} s) -> {output_path}")
    return run.wall_time_s


COST_FIELDS = ["key", "role", "index", "n_atoms", "wall_time_s", "mpi_processes", "nodes",
               "node_hours", "core_hours", "qe_version"]


def cost_table(manifest: dict, store_dir, nodes_per_job: float, cores_per_job: float) -> list[dict]:
    """One row per unique pw.x run of the manifest, from pw.x's own WALL time."""
    rows, seen = [], set()
    for job in manifest["jobs"]:
        if job["key"] in seen:
            continue
        seen.add(job["key"])
        path = job.get("output") or Path(store_dir) / job["key"] / "pw.out"  # imported runs name their file
        run = read_pw_output(path, expected_n_atoms=job["n_atoms"])
        hours = float(units.seconds_to_hours(run.wall_time_s))
        rows.append({"key": job["key"], "role": job["role"], "index": job["index"],
                     "n_atoms": run.n_atoms, "wall_time_s": run.wall_time_s,
                     "mpi_processes": run.n_mpi_processes, "nodes": nodes_per_job,
                     "node_hours": hours * nodes_per_job, "core_hours": hours * cores_per_job,
                     "qe_version": run.qe_version})
    return rows


def write_cost_table(path, rows: list[dict]) -> dict:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return {"n_runs": len(rows), "wall_time_s": sum(r["wall_time_s"] for r in rows),
            "node_hours": sum(r["node_hours"] for r in rows),
            "core_hours": sum(r["core_hours"] for r in rows)}
