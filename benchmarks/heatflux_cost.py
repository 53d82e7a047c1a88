"""Benchmark: the cost of the heat flux per MD step against the force call alone, and its scaling with N.

For diamond Si supercells of N atoms (the 8-atom cubic cell repeated n × n × n), random displacements
(0.05 Å) and velocities: the compiled force call (:class:`kappaflow.gk.md.CompiledModel.energy_forces`)
and the compiled unfolded heat flux (one JVP + one reverse gradient over the cell and its replicas,
:meth:`~kappaflow.gk.md.CompiledModel.heat_flux`), each timed as the median of ``--repeat`` calls after
one warm-up; also the eager MIC form (full Jacobian, O(N²)) up to ``--mic-max-atoms``.  Model: the
TensorFlow Stillinger–Weber (``central``: effective cutoff aσ = 3.77 Å; ``equal``: 2aσ).  The times
include the neighbour list and the unfolding (numpy), as in the MD.

    python3 benchmarks/heatflux_cost.py [--sizes 2 3 4 5] [--repeat 5] [--mic-max-atoms 216]

Prints a Markdown table (N, N_unfolded, force ms, flux ms, flux/force, MIC ms); record it in
docs/benchmarks.md with the machine load (``uptime``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


def timed(fn, repeat: int) -> float:
    fn()  # warm-up: tracing and the first neighbour list
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mic-max-atoms", type=int, default=216)
    ap.add_argument("--partitions", nargs="+", default=["central", "equal"])
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ase.build import bulk

    from kappaflow.gk.heatflux import heat_flux, mic_valid
    from kappaflow.gk.md import CompiledModel
    from kappaflow.gk.potentials_tf import StillingerWeberTF
    from kappaflow.gk.unfold import unfold

    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores", flush=True)
    print("| model | N | N unfolded | force (ms) | flux (ms) | flux / force | MIC flux (ms) |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for partition in args.partitions:
        model = StillingerWeberTF(partition)
        compiled = CompiledModel(model)
        for n in args.sizes:
            atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(n)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            v = rng.normal(scale=0.01, size=(len(atoms), 3))
            sym = atoms.get_chemical_symbols()
            masses = atoms.get_masses()
            cell = atoms.cell.array
            n_unf = unfold(atoms.positions, cell, model.effective_cutoff_ang).n_unfolded
            t_force = timed(lambda: compiled.energy_forces(atoms.positions, cell, sym), args.repeat)
            t_flux = timed(lambda: compiled.heat_flux(atoms.positions, v, masses, cell, sym), args.repeat)
            t_mic = ""
            if len(atoms) <= args.mic_max_atoms and mic_valid(model, cell):
                t_mic = f"{timed(lambda: heat_flux(model, atoms.positions, v, masses, cell, sym, form='mic'), 1):.0f}"
            print(f"| SW {partition} | {len(atoms)} | {n_unf} | {t_force:.1f} | {t_flux:.1f} | {t_flux / t_force:.1f} | "
                  f"{t_mic} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
