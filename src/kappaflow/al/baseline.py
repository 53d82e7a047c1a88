"""Δ-learning baseline of the active-learning committee: the linear force-constant fit of the loop's own
pw.x runs (symfc, FC2 + FC3 within the sow's FC3 cutoff; FC2 alone while FC3 is not yet determined).

The committee then learns only what this fit misses (FC3 beyond the cutoff, quartic and higher terms):
forces ``F = F_base(u) + F_net`` with ``F_base = −Φ2·u − ½ Φ3:u u`` and the energy
``E_base = ½ u·Φ2·u + ⅙ Φ3 ⋮ u u u``, ``u`` the displacement from the undisplaced supercell (minimum
image).  The residual is small and smooth, so the same network error costs κ far less; docs/ml.md,
"Active learning", has the measurement that made it the default.

A baseline holds only for structures of the sow's FC3 supercell (same atoms, same order): the pool's
candidates and the sow's supercells are built that way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kappaflow.errors import KappaflowError
from kappaflow.fitsize import independent_force_equations
from kappaflow.steps import atomic_path, progress

MAX_DISPLACEMENT_ANG = 0.5  # larger: not a displaced copy of the supercell (other atom order or cell)


@dataclass
class Baseline:
    positions_ang: np.ndarray  # undisplaced supercell (N, 3)
    cell_ang: np.ndarray
    fc2: np.ndarray  # (N, N, 3, 3) eV/Å²
    fc3: np.ndarray | None  # (N, N, N, 3, 3, 3) eV/Å³, or None (FC2 only)
    orders: str

    def displacements(self, positions_ang, cell_ang=None, what: str = "structure") -> np.ndarray:
        pos = np.asarray(positions_ang, dtype=np.float64)
        if pos.shape != self.positions_ang.shape:
            raise KappaflowError(f"{what}: {len(pos)} atoms, the baseline's supercell has "
                                 f"{len(self.positions_ang)}: the Δ-learning baseline holds for the sow's supercell only")
        if cell_ang is not None and not np.allclose(cell_ang, self.cell_ang, atol=1e-6):
            raise KappaflowError(f"{what}: its cell differs from the baseline's supercell")
        frac = (pos - self.positions_ang) @ np.linalg.inv(self.cell_ang)
        u = (frac - np.round(frac)) @ self.cell_ang
        worst = float(np.abs(u).max()) if len(u) else 0.0
        if worst > MAX_DISPLACEMENT_ANG:
            raise KappaflowError(f"{what}: an atom is {worst:.3f} Å from its place in the undisplaced supercell "
                                 f"(> {MAX_DISPLACEMENT_ANG} Å): not a displaced copy of it in the same atom order")
        return u

    def forces_energy(self, positions_ang, cell_ang=None, what: str = "structure") -> tuple[np.ndarray, float]:
        u = self.displacements(positions_ang, cell_ang, what)
        f = -np.einsum("ijab,jb->ia", self.fc2, u, optimize=True)
        e = -0.5 * float(np.sum(f * u))
        if self.fc3 is not None:
            f3 = -0.5 * np.einsum("ijkabc,jb,kc->ia", self.fc3, u, u, optimize=True)
            f = f + f3
            e += -float(np.sum(f3 * u)) / 3.0
        return f, e

    def corrected(self, prediction: dict, atoms, what: str = "structure") -> dict:
        """A committee prediction of the residual (``Committee.predict_many``) plus the baseline: mean and
        members' forces, mean and members' energies."""
        f, e = self.forces_energy(atoms.positions, np.asarray(atoms.cell), what)
        out = dict(prediction)
        out["forces_ev_per_ang"] = np.asarray(prediction["forces_ev_per_ang"], dtype=np.float64) + f
        out["energy_ev"] = float(prediction["energy_ev"]) + e
        if "members_forces" in prediction:
            out["members_forces"] = np.asarray(prediction["members_forces"], dtype=np.float64) + f[None]
        if "members_energy_ev" in prediction:
            out["members_energy_ev"] = np.asarray(prediction["members_energy_ev"], dtype=np.float64) + e
        return out

    def save(self, path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, positions_ang=self.positions_ang, cell_ang=self.cell_ang, fc2=self.fc2,
                         fc3=self.fc3 if self.fc3 is not None else np.zeros(0), orders=self.orders)

    @classmethod
    def load(cls, path) -> "Baseline":
        d = np.load(path)
        fc3 = d["fc3"] if d["fc3"].size else None
        return cls(d["positions_ang"], d["cell_ang"], d["fc2"], fc3, str(d["orders"]))


def load_optional(path) -> Baseline | None:
    return Baseline.load(path) if path else None


def with_baseline(baseline_path, predictions: list, structures: list, keys=None) -> list:
    """Committee predictions with the baseline of ``baseline_path`` added (unchanged without one)."""
    baseline = load_optional(baseline_path)
    if baseline is None:
        return list(predictions)
    names = keys if keys is not None else [f"structure {n}" for n in range(len(structures))]
    return [baseline.corrected(p, a, str(k)) for p, a, k in zip(predictions, structures, names)]


def _fc2_only(ph3, u, f):
    import scipy.linalg
    from symfc import Symfc
    from symfc.solvers.solver_O2 import prepare_normal_equation_O2

    from kappaflow.reap import _symfc_supercell, normal_matrix_rank

    n_cells, n_atoms = u.shape[:2]
    symfc = Symfc(_symfc_supercell(ph3), spacegroup_operations=ph3.symmetry.symmetry_operations,
                  symprec=ph3.symmetry.tolerance, log_level=0)
    symfc.compute_basis_set(orders=[2])
    basis2 = symfc.basis_set[2]
    n2 = int(basis2.blocked_basis_set.shape[1])
    if independent_force_equations(n_cells, n_atoms) < n2:
        raise KappaflowError(f"active learning baseline: {n_cells} displaced pw.x run(s) give "
                             f"{independent_force_equations(n_cells, n_atoms)} independent force equations for "
                             f"{n2} FC2 parameters: raise ml.al.seed_min or set ml.al.baseline: none")
    xtx, xty = prepare_normal_equation_O2(u.reshape(n_cells, -1), f.reshape(n_cells, -1), basis2)
    rank, _ = normal_matrix_rank(xtx)
    if rank < n2:
        raise KappaflowError(f"active learning baseline: the runs determine {rank} of {n2} FC2 parameters")
    coefs = scipy.linalg.solve(xtx, xty, assume_a="pos")
    fc2 = np.asarray(basis2.compression_matrix @ (basis2.blocked_basis_set @ coefs), dtype=np.float64)
    return fc2.reshape(n_atoms, n_atoms, 3, 3)


def fit_baseline(manifest_path, disp_yaml_path, store_dir, keys, out_path, report_path,
                 max_displacement_ang: float | None = 0.05) -> dict:
    """symfc FC2 + FC3 (within the sow's FC3 cutoff) from the finished runs ``keys`` of the store whose
    largest displacement is at most ``max_displacement_ang`` (larger ones, where quartic and higher terms
    matter, would alias into FC2 and FC3; the committee learns them); FC2 alone while the FC3 fit is
    underdetermined (logged).  Runs without displacement carry no equation."""
    from kappaflow.qe.pwin import read_pw_input
    from kappaflow.qe.pwout import read_pw_output
    from kappaflow.reap import UnderdeterminedFitError, fc2_force_residual, fc3_cutoff_of, symfc_fit
    from kappaflow.sow import load_phono3py, read_manifest

    cutoff_ang = fc3_cutoff_of(read_manifest(manifest_path))
    ph3 = load_phono3py(disp_yaml_path)
    sc = ph3.supercell
    cell = np.asarray(sc.cell, dtype=np.float64)
    base = Baseline(np.asarray(sc.scaled_positions, dtype=np.float64) @ cell, cell,
                    np.zeros((len(sc),) * 2 + (3, 3)), None, "none")
    us, fs, used = [], [], []
    for key in keys:
        pw = read_pw_input(Path(store_dir) / key / "pw.in")
        if len(pw.atoms) != len(sc):
            continue  # another supercell (FC2 supercell): not in this baseline
        u = base.displacements(pw.atoms.positions, np.asarray(pw.atoms.cell), f"{Path(store_dir) / key / 'pw.in'}")
        largest = float(np.linalg.norm(u, axis=1).max())
        if largest < 1e-9 or (max_displacement_ang is not None and largest > max_displacement_ang + 1e-9):
            continue
        us.append(u)
        fs.append(read_pw_output(Path(store_dir) / key / "pw.out", expected_n_atoms=len(sc)).forces_ev_per_ang)
        used.append(key)
    if not us:
        raise KappaflowError("active learning baseline: no displaced supercell with displacements up to "
                             f"{max_displacement_ang} Å among the finished runs yet (raise ml.al.seed_min, "
                             "ml.al.baseline_max_displacement_ang, or set ml.al.baseline: none)")
    u, f = np.array(us), np.array(fs)
    try:
        fc2, fc3, rep = symfc_fit(ph3, u, f, cutoff_ang)
        orders, note = "fc2+fc3", f"FC2 {rep.n_parameters_fc2} + FC3 {rep.n_parameters_fc3} parameters"
    except UnderdeterminedFitError:
        fc2, fc3, orders = _fc2_only(ph3, u, f), None, "fc2"
        note = (f"FC3 not determined yet by {len(used)} runs ({independent_force_equations(len(used), len(sc))} "
                "force equations), FC2 only")
    baseline = Baseline(base.positions_ang, cell, fc2, fc3, orders)
    baseline.save(out_path)
    pred = np.array([baseline.forces_energy(p + base.positions_ang)[0] for p in u])
    residual = float(np.linalg.norm(f - pred) / np.linalg.norm(f))
    record = {"orders": orders, "n_runs": len(used), "keys": used, "cutoff_ang": cutoff_ang,
              "max_displacement_ang": max_displacement_ang,
              "relative_force_residual": residual, "fc2_force_residual": fc2_force_residual(fc2, u, f), "note": note}
    with atomic_path(report_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    progress(f"al baseline: {orders} from {len(used)} displaced runs (largest displacement ≤ "
             f"{max_displacement_ang} Å; {note}); it leaves "
             f"{100 * residual:.2f} % of the force norm to the committee")
    return record
