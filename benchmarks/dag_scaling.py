"""Benchmark: how Snakemake copes with a sow of ~10 000 displaced supercells.

Runs in a scratch copy of the workflow (GeS2, mock pw.x, random strategy with N supercells):
1. the sow checkpoint (writes N pw.x inputs into the hash-keyed store),
2. ``snakemake -n`` on the full pipeline, which must list N + 1 dft jobs,
3. a second ``snakemake -n`` (warm file-system cache).

    python3 benchmarks/dag_scaling.py [--n 10000] [--keep]

Prints wall times and peak memory (RSS of the Snakemake process tree); record them in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd) -> tuple[float, float, str]:
    """(wall seconds, peak child RSS in MB since the last call, combined output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, max(peak, before) / 1024.0, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="number of random displaced supercells")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kappaflow-dag-"))
    for name in ("Snakefile", "workflow", "scripts", "config", "envs"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
    (work / "bench.yaml").write_text(
        "system: ges2\n"
        "dft: {pw_command: kappaflow-mock-pw --model ges2-morse}\n"
        "relax: {enabled: false}\n"
        f"sow: {{strategy: random, n_random: {args.n}, amplitude_ang: 0.01}}\n")
    manifest = "results/ges2/sow/manifest.json"
    print(f"[bench] scratch {work}, {args.n} random GeS2 supercells (54 atoms)", flush=True)
    t_sow, rss_sow, _ = run(["snakemake", "--cores", "1", manifest, "--configfile", "bench.yaml"], work)
    print(f"[bench] sow checkpoint: {t_sow:.1f} s, peak RSS {rss_sow:.0f} MB", flush=True)
    timings = []
    for attempt in (1, 2):
        t, rss, out = run(["snakemake", "-n", "--cores", "2", "--configfile", "bench.yaml"], work)
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
        timings.append(t)
        print(f"[bench] snakemake -n #{attempt}: {t:.1f} s, peak RSS {rss:.0f} MB, "
              f"dft jobs {counts.get('dft')}, total {counts.get('total')}", flush=True)
        if int(counts.get("dft", 0)) != args.n + 1:
            sys.exit(f"expected {args.n + 1} dft jobs (N displaced + the undisplaced supercell)")
    n_inputs = sum(1 for _ in (work / "results/ges2/dft").glob("*/pw.in"))
    print(f"[bench] store holds {n_inputs} pw.x inputs")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
