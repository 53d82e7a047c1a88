"""Time mBP G-vectors with derivatives for the seed thesis' workload (not a test).

Structure: the 3x3x1 supercell (54 atoms) of ``config/systems/ges2/GeS2.scf.in``, read with
``kappaflow.qe.pwin.read_pw_input``; 212 copies rattled with Gaussian noise (default 0.03 Å per
component, seeded), the number of displaced supercells thirdorder makes for GeS2 (3 3 1 -3).
Descriptor parameters: ``MBPParameters.seed_ges2()`` (128 values per atom).

Usage:  python benchmarks/gvectors_bench.py [--n-structures 212] [--rattle-ang 0.03] [--repeat 3]
Prints wall times, the sparse derivative size and peak memory (tracemalloc for one structure, and
the process's peak RSS).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from kappaflow.ml.gvectors import MBPParameters, descriptors_for_atoms
from kappaflow.qe.pwin import read_pw_input

REPO = Path(__file__).resolve().parents[1]
GES2_INPUT = REPO / "config" / "systems" / "ges2" / "GeS2.scf.in"


def ges2_supercell():
    # pwin logs a note that the thesis input spells celldm(1) as 'cellldm(1)'; that is expected.
    atoms = read_pw_input(GES2_INPUT).atoms
    atoms = atoms.repeat((3, 3, 1))
    atoms.pbc = True
    return atoms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-structures", type=int, default=212)
    parser.add_argument("--rattle-ang", type=float, default=0.03)
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    params = MBPParameters.seed_ges2()
    base = ges2_supercell()
    rng = np.random.default_rng(args.seed)
    structures = []
    for _ in range(args.n_structures):
        atoms = base.copy()
        atoms.positions += args.rattle_ang * rng.standard_normal(atoms.positions.shape)
        structures.append(atoms)
    cell = base.cell.lengths()
    print(f"structure: {len(base)} atoms ({base.get_chemical_formula()}), cell {cell[0]:.3f} x "
          f"{cell[1]:.3f} x {cell[2]:.3f} Å, {args.n_structures} copies rattled by "
          f"{args.rattle_ang} Å (Gaussian, per component)")
    print(f"parameters: seed_ges2, g_size {params.g_size}, Rc_rad {params.Rc_rad} Å, Rc_ang {params.Rc_ang} Å")

    descriptors_for_atoms(structures[0], params)         # warm-up (imports, caches)
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        for atoms in structures:
            desc = descriptors_for_atoms(atoms, params)
        best = min(best, time.perf_counter() - start)
    n = args.n_structures
    print(f"time with derivatives: {best:.3f} s for {n} structures ({1e3 * best / n:.2f} ms each, "
          f"best of {args.repeat})")

    start = time.perf_counter()
    for atoms in structures:
        descriptors_for_atoms(atoms, params, derivatives=False)
    t_g = time.perf_counter() - start
    print(f"time without derivatives: {t_g:.3f} s ({1e3 * t_g / n:.2f} ms each)")

    n_pairs = desc.dG_pairs.shape[0]
    print(f"sparse dG: {n_pairs} (i, k) rows ({n_pairs / len(base):.1f} per atom), "
          f"{desc.dG_values.nbytes / 1e6:.2f} MB float64 per structure "
          f"(dense would be {len(base) ** 2 * params.g_size * 3 * 8 / 1e6:.2f} MB)")

    tracemalloc.start()
    descriptors_for_atoms(structures[0], params)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak memory: {peak / 1e6:.2f} MB traced for one structure; process peak RSS "
          f"{rss_kb / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
