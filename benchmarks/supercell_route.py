"""Benchmark: issue 11's goal 2 on mock Si -- the κ of a supercell larger than any "pw.x" run, from a
committee trained on 16-atom runs.

"DFT" is the mock pw.x's force field (Stillinger–Weber Si, :func:`kappaflow.mock.potentials.stillinger_weber_si`)
called in-process: every force evaluation of a training cell counts as one pw.x run.  Diamond Si at
a = 5.431 Å (SW's equilibrium), the 2-atom primitive cell; the finite-displacement sets are phono3py's
(0.01 Å, pair cutoff 4.0 Å as in the demo), RTA on a 19³ q-mesh, κxx at 300 K, no isotopes.

Training runs: ``--runs`` rattled cells (every atom moved by the next of ``--amplitudes`` Å in a random
direction), taken in turn from the first ``--shapes`` of :data:`SHAPES`: 16-atom supercells of the
primitive cell (det 8) whose inscribed sphere is the largest possible (diameter 6.27 Å), with different
lattice vectors.  In the 2×2×2 cell the second neighbours (3.84 Å) at +a1 and −a1 are one atom
(a(110)-type lattice vectors, 7.68 Å); the other two shapes have fewer of those vectors, so each shape
makes *other* pairs of second neighbours move together, and a mix shows the committee their
independent motion.  The committee (the shipped ``config/mock/si_al.yaml`` descriptors and training,
``--epochs``/``--batch-size``/``--members`` as given) learns the whole forces (``--baseline none``) or what
a first-shell symfc FC2 + FC3 fit of the 2×2×2 runs ≤ 0.03 Å leaves (``--baseline first-shell``: the
only interactions within half the 2×2×2 cell's width, so the fit maps onto any supercell).

Output: the mock's own FD κ and the committee's κ in the 2×2×2 cell and in the ``--target`` cell, as
a JSON line appended to ``--out`` (default benchmarks/results/supercell_route.jsonl) and printed.

    python3 benchmarks/supercell_route.py [--target 3] [--runs 10] [--shapes 3] [--members 2]
        [--epochs 3000] [--batch-size 20] [--amplitudes 0.01,0.02,...] [--baseline none|first-shell]
        [--no-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

A_ANG = 5.431
CUTOFF_ANG = 4.0
FIRST_SHELL_ANG = 3.0  # first neighbours 2.35 Å; half the 2x2x2 cell's width 3.13 Å
MESH = [19, 19, 19]
#: det-8 supercells of the primitive cell with the largest inscribed sphere (6.27 Å), distinct shapes
SHAPES = [np.eye(3, dtype=int) * 2,
          np.array([[-2, 0, 0], [-2, 0, 2], [-1, 2, -1]]),
          np.array([[-2, 0, 0], [-1, -1, 2], [-1, 2, 0]])]
DEFAULT_AMPLITUDES = [0.01, 0.02, 0.03, 0.01, 0.03, 0.05, 0.1, 0.05, 0.03, 0.1]
_SHIFTS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float)


def unit_cell():
    from phonopy.structure.atoms import PhonopyAtoms

    cell = 0.5 * A_ANG * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float)
    return PhonopyAtoms(symbols=["Si"] * 2, cell=cell, scaled_positions=[[0, 0, 0], [0.25, 0.25, 0.25]])


def supercell(matrix):
    from phono3py import Phono3py

    sc = Phono3py(unit_cell(), supercell_matrix=matrix, log_level=0).supercell
    return np.asarray(sc.cell, dtype=np.float64), np.asarray(sc.positions, dtype=np.float64)


def minimum_image(cell, d):
    """The shortest image of each vector of d (..., 3), for any cell shape (rounding the fractional
    coordinates alone is not enough in a skewed cell)."""
    frac = d @ np.linalg.inv(cell)
    cand = ((frac - np.round(frac))[..., None, :] + _SHIFTS) @ cell
    best = np.argmin(np.linalg.norm(cand, axis=-1), axis=-1)
    return np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]


class FirstShellBaseline:
    """symfc FC2 + FC3 with every pair of a cluster within FIRST_SHELL_ANG, fitted in the 2×2×2 cell and
    evaluated in any supercell (each neighbour mapped through its position x_I + d_IJ)."""

    def __init__(self, cell, positions, displacements, forces):
        import scipy.linalg
        from symfc import Symfc
        from symfc.solvers.solver_O2O3 import prepare_normal_equation_O2O3
        from symfc.utils.utils import SymfcAtoms

        from kappaflow.fitsize import independent_force_equations
        from kappaflow.reap import normal_matrix_rank

        self.cell, self.positions = cell, positions
        n = len(positions)
        sym = Symfc(SymfcAtoms(cell=cell, scaled_positions=positions @ np.linalg.inv(cell), numbers=[14] * n),
                    cutoff={2: FIRST_SHELL_ANG, 3: FIRST_SHELL_ANG}, log_level=0)
        sym.compute_basis_set(orders=[2, 3])
        b2, b3 = sym.basis_set[2], sym.basis_set[3]
        n2 = b2.blocked_basis_set.shape[1]
        n3 = b3.blocked_basis_set.shape[1]
        u, f = np.asarray(displacements), np.asarray(forces)
        # the reap's determinacy checks: an underdetermined fit is an error, never a baseline
        if independent_force_equations(len(u), n) < n2 + n3:
            raise SystemExit(f"first-shell baseline: {len(u)} runs give {independent_force_equations(len(u), n)} "
                             f"independent force equations for {n2 + n3} parameters")
        xtx, xty = prepare_normal_equation_O2O3(u.reshape(len(u), -1), f.reshape(len(u), -1), b2, b3)
        rank, _ = normal_matrix_rank(xtx)
        if rank < n2 + n3:
            raise SystemExit(f"first-shell baseline: the runs determine {rank} of {n2 + n3} parameters")
        c = scipy.linalg.solve(xtx, xty, assume_a="pos")
        self.fc2 = (b2.compression_matrix @ (b2.blocked_basis_set @ c[:n2])).reshape(n, n, 3, 3)
        self.fc3 = (b3.compression_matrix @ (b3.blocked_basis_set @ c[n2:])).reshape((n,) * 3 + (3, 3, 3))
        self._cache = {}

    def _small_index(self, x):
        dd = minimum_image(self.cell, self.positions[None] - x[:, None])
        k = np.argmin(np.linalg.norm(dd, axis=2), axis=1)
        assert np.linalg.norm(dd[np.arange(len(x)), k], axis=1).max() < 1e-6, "not a supercell of the same lattice"
        return k

    def force_constants(self, cell, positions):
        key = (cell.tobytes(), positions.tobytes())
        if key not in self._cache:
            nb = len(positions)
            d = np.array([minimum_image(cell, positions - x) for x in positions])
            near = np.linalg.norm(d, axis=2) < FIRST_SHELL_ANG
            fc2, fc3 = np.zeros((nb, nb, 3, 3)), np.zeros((nb,) * 3 + (3, 3, 3))
            for i in range(nb):
                js = np.nonzero(near[i])[0]
                si = self._small_index(positions[[i]])[0]
                sj = self._small_index(positions[i] + d[i, js])
                fc2[i, js] = self.fc2[si, sj]
                for a, j in enumerate(js):
                    m = near[j, js]
                    fc3[i, j, js[m]] = self.fc3[si, sj[a], sj[m]]
            self._cache = {key: (fc2, fc3)}
        return self._cache[key]

    def forces_energy(self, cell, positions, u):
        """Forces and energy of displacements u from ``positions`` (the AL loop's Δ-learning baseline
        formula, :class:`kappaflow.al.baseline.Baseline`, on the mapped constants)."""
        from kappaflow.al.baseline import Baseline

        fc2, fc3 = self.force_constants(cell, positions)
        return Baseline(positions, cell, fc2, fc3, "fc2+fc3").forces_energy(positions + u, cell)


def kappa_xx(n, forces_of):
    """κxx(300 K) of the n×n×n FD set with forces_of(cell, undisplaced positions, [displaced positions])."""
    from phono3py import Phono3py

    ph3 = Phono3py(unit_cell(), supercell_matrix=np.eye(3) * n, log_level=0)
    ph3.generate_displacements(distance=0.01, cutoff_pair_distance=CUTOFF_ANG)
    scs = ph3.supercells_with_displacements
    cell, pos0 = np.asarray(ph3.supercell.cell), np.asarray(ph3.supercell.positions)
    present = [i for i, s in enumerate(scs) if s is not None]
    forces = np.zeros((len(scs), len(pos0), 3))
    forces[present] = forces_of(cell, pos0, [np.asarray(scs[i].positions) for i in present])
    ph3.forces = forces
    ph3.produce_fc3(symmetrize_fc3r=True)
    ph3.mesh_numbers = MESH
    ph3.init_phph_interaction()
    ph3.run_thermal_conductivity(temperatures=[300], is_isotope=False)
    return float(ph3.thermal_conductivity.kappa[0, 0, 0]), len(present)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", type=int, default=3, help="the large supercell: n×n×n primitive cells")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--shapes", type=int, default=3, choices=[1, 2, 3])
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--amplitudes", default=",".join(map(str, DEFAULT_AMPLITUDES)))
    p.add_argument("--baseline", choices=["none", "first-shell"], default="none")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-reference", action="store_true", help="skip the mock's own FD κ (known: see docs)")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/supercell_route.jsonl"))
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ase import Atoms

    from kappaflow import config as kcfg
    from kappaflow.ml.gvectors import compute_descriptors
    from kappaflow.ml.model import Committee, train_model
    from kappaflow.ml.steps import mbp_parameters, train_settings
    from kappaflow.mock.potentials import stillinger_weber_si

    calc = stillinger_weber_si()

    def mock(cell, positions):
        atoms = Atoms("Si" * len(positions), cell=cell, positions=positions, pbc=True)
        atoms.calc = calc
        return atoms.get_forces(), atoms.get_potential_energy()

    t_start = time.time()
    amplitudes = [float(a) for a in args.amplitudes.split(",")]
    rng = np.random.default_rng(args.seed)
    runs = []  # (cell, undisplaced positions, displacement, forces, energy, shape index)
    for n in range(args.runs):
        shape = n % args.shapes
        cell, pos0 = supercell(SHAPES[shape])
        u = rng.normal(size=pos0.shape)
        u *= amplitudes[n % len(amplitudes)] / np.linalg.norm(u, axis=1)[:, None]
        f, e = mock(cell, pos0 + u)
        runs.append((cell, pos0, u, f, e, shape))
    baseline = None
    if args.baseline == "first-shell":
        fit = [r for r in runs if r[5] == 0 and np.linalg.norm(r[2], axis=1).max() <= 0.03 + 1e-9]
        if len(fit) < 2:
            raise SystemExit("--baseline first-shell needs at least 2 runs of the 2x2x2 cell up to 0.03 Å")
        baseline = FirstShellBaseline(fit[0][0], fit[0][1], [r[2] for r in fit], [r[3] for r in fit])

    cfg = kcfg.load(REPO / "config/mock/si_al.yaml", check_files=False)
    params = mbp_parameters(cfg["ml"]["descriptors"], ["Si"])
    records = []
    for n, (cell, pos0, u, f, e, _) in enumerate(runs):
        if baseline is not None:
            fb, eb = baseline.forces_energy(cell, pos0, u)
            f, e = f - fb, e - eb
        desc = compute_descriptors(pos0 + u, cell, ["Si"] * len(pos0), params)
        records.append({"key": f"run{n}", "species_index": desc.species_index, "positions_ang": pos0 + u,
                        "cell_ang": cell, "energy_ev": float(e), "forces_ev_per_ang": f, "G": desc.G,
                        "dG_pairs": desc.dG_pairs, "dG_values": desc.dG_values, "symbols": ["Si"] * len(pos0)})
    train_cfg = dict(cfg["ml"]["train"], epochs=args.epochs, batch_size=args.batch_size)
    workdir = Path(tempfile.mkdtemp(prefix="supercell_route_"))
    dirs, train_rmse = [], []
    for m in range(args.members):
        res = train_model(records, [], params, train_settings(train_cfg, 0.0, m), out_dir=workdir / f"member{m}")
        dirs.append(workdir / f"member{m}")
        train_rmse.append(res["best_metrics"]["train_force_rmse_mev_per_ang"])
        print(f"member {m}: train force RMSE {train_rmse[-1]:.3f} meV/Å, {res['wall_s']:.0f} s", flush=True)
    committee = Committee.load(dirs)

    def committee_forces(cell, pos0, displaced):
        preds = committee.predict_many([Atoms("Si" * len(p), cell=cell, positions=p, pbc=True) for p in displaced])
        out = [np.asarray(pr["forces_ev_per_ang"], dtype=np.float64) for pr in preds]
        if baseline is not None:
            out = [f + baseline.forces_energy(cell, pos0, p - pos0)[0] for f, p in zip(out, displaced)]
        return out

    def mock_forces(cell, pos0, displaced):
        return [mock(cell, p)[0] for p in displaced]

    row = {"date": time.strftime("%Y-%m-%d"), "runs": args.runs, "shapes": args.shapes, "members": args.members,
           "epochs": args.epochs, "batch_size": args.batch_size, "amplitudes_ang": amplitudes,
           "baseline": args.baseline, "seed": args.seed, "train_force_rmse_mev_per_ang": train_rmse}
    for n in (2, args.target):
        if not args.no_reference:
            row[f"mock_fd_{n}x{n}x{n}"], _ = kappa_xx(n, mock_forces)
        row[f"committee_{n}x{n}x{n}"], row[f"fd_supercells_{n}x{n}x{n}"] = kappa_xx(n, committee_forces)
        print(f"{n}x{n}x{n}: committee κxx(300 K) {row[f'committee_{n}x{n}x{n}']:.2f} W/mK"
              + ("" if args.no_reference else f", mock FD {row[f'mock_fd_{n}x{n}x{n}']:.2f}"), flush=True)
    row["wall_s"] = round(time.time() - t_start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
