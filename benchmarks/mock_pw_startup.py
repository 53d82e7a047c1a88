"""Benchmark: wall time of one mock pw.x invocation (``kappaflow-mock-pw``), start-up included.

The mock GeS2 pipeline runs 276 mock pw.x jobs, each a fresh Python process, so the start-up (imports)
is what a mock run costs.  For each case the mock runs ``--repeat`` times in a scratch directory and the
minimum and median wall times are printed, next to a bare ``python -c pass`` and ``import numpy`` (the
floor), what a ``dft`` job's script imports (kappaflow.dft now, kappaflow.steps before), and the machine
load (``uptime``) before and after.  ``--ref REV`` also times the mock of an
older commit (its ``src/`` exported with ``git archive``) in the same run, interleaved, so both see the
same load.

    python3 benchmarks/mock_pw_startup.py [--repeat 15] [--ref REV]

Record the output in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "si-2": ("stillinger-weber-si", REPO / "config/systems/si/Si.scf.in"),
    "ges2-6": ("ges2-morse", REPO / "config/systems/ges2/GeS2.scf.in"),
}


def supercell_input(workdir: Path) -> Path:
    """The demo's first displaced 2x2x2 Si supercell (16 atoms), as the sow writes it."""
    sys.path.insert(0, str(REPO / "src"))
    from kappaflow.qe.pwin import read_pw_input
    from kappaflow.sow import supercell_input_text

    atoms = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms.repeat((2, 2, 2))
    atoms.positions[0, 0] += 0.01
    template = REPO / "config/systems/si/Si.sc.in"
    path = workdir / "si16.in"
    path.write_text(supercell_input_text(template.read_text(), str(template), atoms))
    return path


def export_src(rev: str, dest: Path) -> Path:
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest)
    return dest / "src"


def timed(cmd, cwd, env) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or ("JOB DONE" not in proc.stdout and "-c" not in cmd):
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--ref", help="also time the mock of this git revision (e.g. HEAD~3)")
    args = ap.parse_args()
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = dict(CASES, **{"si-16": ("stillinger-weber-si", supercell_input(tmp))})
        trees = {"this tree": REPO / "src"}
        if args.ref:
            trees[f"ref {args.ref}"] = export_src(args.ref, tmp / "ref")
        runs: dict[tuple[str, str], list[float]] = {}
        floor = {"python -c pass": [sys.executable, "-c", "pass"],
                 "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
                 # what scripts/run_pw.py (every dft job) imports now, and what it imported before
                 "dft job: kappaflow.dft": [sys.executable, "-c", "import kappaflow.dft, kappaflow.scriptutil"],
                 "dft job: kappaflow.steps": [sys.executable, "-c", "import kappaflow.steps"]}
        src_env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        for _ in range(args.repeat):
            for label, cmd in floor.items():
                runs.setdefault(("floor", label), []).append(timed(cmd, tmp, src_env))
            for tree, src in trees.items():
                env = dict(os.environ, PYTHONPATH=str(src))
                for case, (model, inp) in cases.items():
                    cmd = [sys.executable, "-m", "kappaflow.mock.pw", "--model", model, "-in", str(inp)]
                    runs.setdefault((tree, case), []).append(timed(cmd, tmp, env))
        print(f"{'':18s} {'case':28s} {'min (s)':>8s} {'median (s)':>11s}   ({args.repeat} runs each)")
        for (tree, case), times in runs.items():
            print(f"{tree:18s} {case:28s} {min(times):8.3f} {statistics.median(times):11.3f}")
    print("uptime after: ", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
