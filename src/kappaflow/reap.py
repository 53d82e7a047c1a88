"""Reap: forces of the displaced supercells -> second- and third-order force constants.

Systematic sets use phono3py's finite-difference solver (``traditional``, then explicit symmetrisation,
which phono3py >= 4.9 no longer does by itself); random and imported sets use symfc's least-squares fit
(:func:`symfc_fit`) of FC2 and FC3 together, FC3 restricted to the set's cutoff (the manifest's
``fc3_cutoff_ang``: every pair distance of a triplet below it).  Force constants are produced as full
arrays (``is_compact_fc=False``) in phonopy's supercell order, eV/Å² and eV/Å³, and written as phono3py
``fc2.hdf5``/``fc3.hdf5`` and ShengBTE ``FORCE_CONSTANTS_2ND``/``FORCE_CONSTANTS_3RD`` (FC3 triplets
within the same cutoff, thirdorder's rule).

A fit is checked before any force constant leaves this module (docs/numerics.md, "Is the fit
determined?"): a least-squares fit must have at least as many independent force equations as free
parameters and a normal matrix of full rank, and the fitted FC2 must reproduce the forces of the
displaced supercells to ``max_fc2_force_residual``; otherwise :class:`UnderdeterminedFitError` names the
cause.  symfc itself solves a singular system without complaint (LAPACK ``posv`` with its error flag
ignored), which is how an underdetermined set used to come out as a κ.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kappaflow.errors import KappaflowError
from kappaflow.fitsize import independent_force_equations, underdetermined_message  # noqa: F401
from kappaflow.qe.pwout import read_pw_output

log = logging.getLogger(__name__)

#: default of reap.max_fc2_force_residual (schema): the fitted FC2 alone must reproduce the forces of the
#: displaced supercells to this relative residual |F + Φ2·u| / |F| (docs/numerics.md)
DEFAULT_MAX_FC2_FORCE_RESIDUAL = 0.2


class UnderdeterminedFitError(KappaflowError):
    """A force-constant fit the displacement set does not determine, or whose FC2 does not reproduce the
    forces it was fitted to."""


@dataclass
class FitReport:
    """What a force-constant fit rested on (logged by rule reap)."""

    solver: str
    n_supercells: int
    n_force_equations: int  # independent: 3N - 3 per supercell (forces sum to zero)
    fc3_cutoff_ang: float | None = None
    n_parameters_fc2: int | None = None  # symfc basis sizes (translational sum rule applied)
    n_parameters_fc3: int | None = None
    rank: int | None = None
    smallest_scaled_eigenvalue: float | None = None
    fc2_force_residual: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = f"{self.solver} fit of {self.n_supercells} supercells"
        if self.n_parameters_fc3 is not None:
            cutoff = ("all triplets" if self.fc3_cutoff_ang is None
                      else f"triplets within {self.fc3_cutoff_ang:.4f} Å")
            text += (f": {self.n_parameters_fc2 + self.n_parameters_fc3} free parameters (FC2 "
                     f"{self.n_parameters_fc2}, FC3 {self.n_parameters_fc3}, {cutoff}), "
                     f"{self.n_force_equations} independent force equations, rank {self.rank} "
                     f"(smallest scaled eigenvalue {self.smallest_scaled_eigenvalue:.3g})")
        if self.fc2_force_residual is not None:
            text += f"; the fitted FC2 reproduces the forces to {100 * self.fc2_force_residual:.2f} %"
        return text


def expected_supercells(ph3):
    """``(role, index) -> Structure``: the supercell each manifest job must hold, from the Phono3py
    object loaded from phono3py_disp.yaml (displaced supercells with their displacements)."""
    from kappaflow.atom_map import Structure

    cache: dict = {}

    def cells(role):
        if role not in cache:
            if role == "fc3":
                cache[role] = ph3.supercells_with_displacements
            elif role == "fc2":
                cache[role] = ph3.phonon_supercells_with_displacements
            elif role == "base":
                cache[role] = [ph3.supercell]
            elif role == "fc2_base":
                cache[role] = [ph3.phonon_supercell]
            else:
                raise KappaflowError(f"manifest job role {role!r}: no reference supercell for it")
        return cache[role]

    def expected(role: str, index: int):
        cell = cells(role)[index]
        if cell is None:
            raise KappaflowError(f"manifest job {role} {index}: phono3py_disp.yaml has no supercell for it "
                                 "(beyond the pair cutoff): manifest and displacement file disagree")
        return Structure.from_phonopy(cell)

    return expected


def check_tolerance(manifest: dict, tolerance_ang: float) -> None:
    """A tolerance of half the displacement amplitude or more could let a wrong supercell through."""
    amplitude = manifest.get("amplitude_ang")
    if amplitude and tolerance_ang >= 0.5 * float(amplitude):
        raise KappaflowError(f"reap.atom_map_tolerance_ang = {tolerance_ang:g} Å is not below half the "
                             f"displacement amplitude ({float(amplitude):g} Å): the output of another "
                             "displacement could be mapped onto this one")


def load_forces(manifest: dict, store_dir, reader=None, expected=None,
                tolerance_ang: float | None = None) -> dict[str, dict[int, np.ndarray]]:
    """Forces (eV/Å) of every job of the manifest, by role and displacement index, in phonopy's order.

    With ``expected`` (``(role, index) -> Structure``, see :func:`expected_supercells`) every output is
    mapped atom by atom onto its expected (displaced) supercell by position
    (:func:`kappaflow.atom_map.map_pw_output`, periodic, ``tolerance_ang``) and its forces reordered, so
    the atom order of the file does not matter and the output of another structure fails naming the
    file and the atom.  Without it, outputs are taken in file order (imported thirdorder runs reordered
    by the position match of their own input, made at the import).

    ``reader(key, n_atoms)`` returns the parsed run (:class:`~kappaflow.qe.pwout.PwRun`) or the forces
    of one stored run; the default reads ``store_dir/key/pw.out`` strictly (any unusable output raises,
    naming the file).  Forces alone cannot be mapped: with ``expected``, the reader must return runs."""
    from kappaflow.atom_map import DEFAULT_TOLERANCE_ANG, map_pw_output, to_reference_order

    tolerance_ang = DEFAULT_TOLERANCE_ANG if tolerance_ang is None else float(tolerance_ang)
    if expected is not None:
        check_tolerance(manifest, tolerance_ang)
    if reader is None:
        def reader(key, n_atoms):
            return read_pw_output(Path(store_dir) / key / "pw.out", expected_n_atoms=n_atoms)
    cache: dict[str, np.ndarray] = {}
    out: dict[str, dict[int, np.ndarray]] = {}
    for job in manifest["jobs"]:
        key = job["key"]
        if key not in cache:
            imported = "output" in job  # imported run: its own file, input atom order
            run = (read_pw_output(job["output"], expected_n_atoms=job["n_atoms"]) if imported
                   else reader(key, job["n_atoms"]))
            forces = run if isinstance(run, np.ndarray) else run.forces_ev_per_ang
            forces = np.asarray(forces, dtype=np.float64)
            if expected is not None:
                if isinstance(run, np.ndarray):
                    raise KappaflowError(f"supercell {key}: the reader returned forces only; atom mapping "
                                         "needs the parsed pw.x output")
                perm = map_pw_output(run, expected(job["role"], job["index"]), tolerance_ang,
                                     f"the expected {job['role']} supercell {job['index']} of the manifest")
                forces = to_reference_order(forces, perm)
            elif imported:
                from kappaflow.thirdorder_import import reorder_forces

                if "import" not in manifest:
                    raise KappaflowError(f"{job['output']}: an imported run is in its own atom order; pass "
                                         "expected=reap.expected_supercells(ph3) to map it (or the sow "
                                         "manifest with its 'import' section)")
                forces = reorder_forces(manifest, forces, job)
            cache[key] = forces
        out.setdefault(job["role"], {})[job["index"]] = cache[key]
    return out


def fc_calculator_for(strategy: str, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "traditional" if strategy == "systematic" else "symfc"


def fc3_cutoff_of(manifest: dict) -> float | None:
    """The FC3 cutoff (Å) a set was sown for: ``fc3_cutoff_ang`` (every strategy since it was recorded),
    else the systematic pair cutoff; None: all triplets."""
    value = manifest.get("fc3_cutoff_ang", manifest.get("pair_cutoff_ang"))
    return None if value is None else float(value)


def _symfc_supercell(ph3):
    from symfc.utils.utils import SymfcAtoms

    sc = ph3.supercell
    return SymfcAtoms(cell=np.asarray(sc.cell, dtype=np.float64),
                      scaled_positions=np.asarray(sc.scaled_positions, dtype=np.float64),
                      numbers=np.asarray(sc.numbers))


def nearest_neighbour_distance_ang(ph3) -> float:
    """The shortest distance (Å) between two atoms of ph3's supercell (minimum image)."""
    sc = ph3.supercell
    lattice = np.asarray(sc.cell, dtype=np.float64)
    pos = np.asarray(sc.scaled_positions, dtype=np.float64) @ lattice
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)],
                      dtype=np.float64) @ lattice
    origins = pos[np.asarray(ph3.primitive.p2s_map)]
    d = np.linalg.norm(pos[None, :, None, :] + images[None, None] - origins[:, None, None, :], axis=-1).min(axis=-1)
    return float(d[d > 1e-8].min())


def check_cutoff_holds_pairs(ph3, cutoff_ang: float | None) -> None:
    """An FC3 cutoff at or below the nearest-neighbour distance leaves FC3 no parameter (the sum rule
    removes the on-site terms too); symfc then fails on an empty basis."""
    if cutoff_ang is not None:
        nearest = nearest_neighbour_distance_ang(ph3)
        if float(cutoff_ang) <= nearest:
            raise KappaflowError(f"FC3 cutoff {float(cutoff_ang):.4f} Å is not beyond the nearest-neighbour "
                                 f"distance {nearest:.4f} Å: it holds no pair of atoms, so FC3 has nothing to fit "
                                 "(raise sow.pair_cutoff_ang / sow.neighbour_shells)")


def symfc_basis(ph3, cutoff_ang: float | None):
    """symfc's FC2 and FC3 basis sets (symmetry, permutation, translational sum rule; FC3 zero beyond
    ``cutoff_ang``) for the supercell of ``ph3``, with phono3py's symmetry operations."""
    from symfc import Symfc

    symfc = Symfc(_symfc_supercell(ph3), spacegroup_operations=ph3.symmetry.symmetry_operations,
                  symprec=ph3.symmetry.tolerance, cutoff=None if cutoff_ang is None else {3: float(cutoff_ang)},
                  log_level=0)
    symfc.compute_basis_set(orders=[2, 3])
    return symfc.basis_set[2], symfc.basis_set[3]


def normal_matrix_rank(xtx: np.ndarray) -> tuple[int, float]:
    """Numerical rank of a normal matrix XᵀX and its smallest eigenvalue after Jacobi scaling
    (D^-1/2 XᵀX D^-1/2, D = diag: FC2 and FC3 columns differ by the displacement amplitude).  Rank:
    eigenvalues above λ_max · p · ε (numpy's matrix_rank rule); a parameter no equation touches (zero
    diagonal) counts as a zero eigenvalue."""
    xtx = np.asarray(xtx, dtype=np.float64)
    diag = np.diag(xtx).copy()
    scale = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    scaled = xtx * scale[:, None] * scale[None, :]
    scaled[diag <= 0, :] = 0.0
    scaled[:, diag <= 0] = 0.0
    eigenvalues = np.linalg.eigvalsh(scaled)
    tolerance = max(eigenvalues[-1], 0.0) * len(eigenvalues) * np.finfo(np.float64).eps
    return int((eigenvalues > tolerance).sum()), float(eigenvalues[0])


def symfc_fit(ph3, displacements, forces, cutoff_ang: float | None):
    """FC2 and FC3 (full arrays) by symfc's least squares, refusing an underdetermined system.

    The same basis sets and normal equations as symfc's own O2O3 solver (and so phono3py's
    ``produce_fc3(fc_calculator="symfc")``, to the last bit), with two checks symfc does not make: the
    independent force equations must be at least as many as the free parameters, and the normal matrix
    must have full rank."""
    import scipy.linalg
    from symfc.solvers.solver_O2O3 import prepare_normal_equation_O2O3

    d = np.asarray(displacements, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    n_cells, n_atoms = d.shape[:2]
    check_cutoff_holds_pairs(ph3, cutoff_ang)
    basis2, basis3 = symfc_basis(ph3, cutoff_ang)
    n2, n3 = int(basis2.blocked_basis_set.shape[1]), int(basis3.blocked_basis_set.shape[1])
    report = FitReport("symfc", n_cells, independent_force_equations(n_cells, n_atoms), cutoff_ang, n2, n3)
    if report.n_force_equations < n2 + n3:
        raise UnderdeterminedFitError(underdetermined_message(n2 + n3, n2, n3, cutoff_ang, n_cells, n_atoms,
                                                              "reap"))
    xtx, xty = prepare_normal_equation_O2O3(d.reshape(n_cells, -1), f.reshape(n_cells, -1), basis2, basis3)
    report.rank, report.smallest_scaled_eigenvalue = normal_matrix_rank(xtx)
    if report.rank < n2 + n3:
        cutoff = "no FC3 cutoff" if cutoff_ang is None else f"FC3 cutoff {cutoff_ang:.4f} Å"
        raise UnderdeterminedFitError(
            f"reap: the {n_cells} displaced supercells determine only {report.rank} of the {n2 + n3} free "
            f"force-constant parameters (FC2 {n2} + FC3 {n3}, {cutoff}; normal matrix of rank "
            f"{report.rank}): the fit is underdetermined and its κ would be meaningless. The set does not "
            "probe every triplet within the cutoff: use the cutoff it was sown for (sow.neighbour_shells / "
            "sow.pair_cutoff_ang) or more supercells")
    coefs = scipy.linalg.solve(xtx, xty, assume_a="pos")
    fc2 = np.asarray(basis2.compression_matrix @ (basis2.blocked_basis_set @ coefs[:n2]), dtype=np.float64)
    fc3 = np.asarray(basis3.compression_matrix @ (basis3.blocked_basis_set @ coefs[n2:]), dtype=np.float64)
    return (np.ascontiguousarray(fc2.reshape(n_atoms, n_atoms, 3, 3)),
            np.ascontiguousarray(fc3.reshape((n_atoms,) * 3 + (3, 3, 3))), report)


def fc2_force_residual(fc2, displacements, forces) -> float:
    """|F + Φ2·u| / |F| over every displaced supercell: how well the harmonic forces of the fitted FC2
    alone reproduce the forces (the cubic part adds about Φ3·u / Φ2, ~1 % at 0.01-0.03 Å)."""
    fc2 = np.asarray(fc2, dtype=np.float64)
    u = np.asarray(displacements, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    norm = float(np.linalg.norm(f))
    if norm == 0.0:
        raise UnderdeterminedFitError("reap: every displaced supercell has zero forces: nothing to fit")
    harmonic = -np.einsum("ijab,njb->nia", fc2, u, optimize=True)
    return float(np.linalg.norm(f - harmonic) / norm)


def fit_force_constants(ph3, manifest: dict, forces: dict, fc_calculator: str = "auto",
                        max_fc2_force_residual: float | None = None) -> FitReport:
    """Attach forces to the Phono3py object (loaded from phono3py_disp.yaml), produce fc2 and fc3 and
    check the fit (see the module docstring); ``max_fc2_force_residual`` None skips the residual bound
    (the noise study perturbs forces on purpose), the determinacy checks always apply."""
    from phono3py.phonon3.dataset import get_displacements_and_forces_fc3

    n_cells = manifest["n_supercells_total"]
    n_atoms = len(ph3.supercell)
    fc3_forces = np.zeros((n_cells, n_atoms, 3), dtype=np.float64)
    for index, f in forces.get("fc3", {}).items():
        fc3_forces[index] = f
    base = forces.get("base", {}).get(0)
    if base is not None:
        included = sorted(forces.get("fc3", {}))
        fc3_forces[included] -= base  # residual forces of the undisplaced supercell
    ph3.forces = fc3_forces
    separate_fc2 = manifest.get("fc2_supercell_matrix") is not None
    if separate_fc2:
        fc2 = forces.get("fc2", {})
        n2 = len(fc2)
        fc2_forces = np.array([fc2[i] for i in range(n2)], dtype=np.float64)
        if "fc2_base" in forces:
            fc2_forces -= forces["fc2_base"][0]
        ph3.phonon_forces = fc2_forces
    calc = fc_calculator_for(manifest["strategy"], fc_calculator)
    displacements, set_forces = get_displacements_and_forces_fc3(ph3.dataset)
    if calc == "symfc":
        fc2_full, fc3_full, report = symfc_fit(ph3, displacements, set_forces, fc3_cutoff_of(manifest))
        ph3.fc3 = fc3_full
        if not separate_fc2:
            ph3.fc2 = fc2_full
    elif calc == "traditional":
        report = FitReport("traditional", len(displacements),
                           independent_force_equations(len(displacements), n_atoms), fc3_cutoff_of(manifest))
        ph3.produce_fc3(fc_calculator=calc, is_compact_fc=False)
        ph3.symmetrize_fc3()
        if not separate_fc2:
            ph3.symmetrize_fc2()
    else:
        raise KappaflowError(f"reap.fc_calculator must be auto, traditional or symfc, got {calc!r}")
    if separate_fc2:
        ph3.produce_fc2(fc_calculator=calc, is_compact_fc=False)
        if calc == "traditional":
            ph3.symmetrize_fc2()
    if not np.all(np.isfinite(ph3.fc3)) or not np.all(np.isfinite(ph3.fc2)):
        raise KappaflowError("force constants contain NaN or inf: check the forces")
    if not separate_fc2:  # FC2 of another supercell cannot be compared with these forces
        report.fc2_force_residual = fc2_force_residual(ph3.fc2, displacements, set_forces)
        if max_fc2_force_residual is not None and report.fc2_force_residual > max_fc2_force_residual:
            raise UnderdeterminedFitError(
                f"reap: the fitted FC2 reproduces the forces of the {len(displacements)} displaced supercells "
                f"only to a relative residual |F + FC2·u|/|F| = {report.fc2_force_residual:.3g} (bound "
                f"reap.max_fc2_force_residual = {max_fc2_force_residual:g}; the cubic terms of a small "
                "displacement add about 1 %): the set does not determine FC2, or forces and displacements "
                "do not belong together")
    return report


def produce_force_constants(ph3, manifest: dict, forces: dict, fc_calculator: str = "auto",
                            log_level: int = 0, max_fc2_force_residual: float | None = None):
    """:func:`fit_force_constants`, returning the Phono3py object holding fc2 and fc3."""
    fit_force_constants(ph3, manifest, forces, fc_calculator, max_fc2_force_residual)
    return ph3


def fc3_within_cutoff(ph3, cutoff_ang: float) -> np.ndarray:
    """A copy of ph3's full fc3 projected by symfc's projector onto the force constants that vanish beyond
    ``cutoff_ang`` and keep the symmetries and the translational sum rule (zero when no pair of atoms is
    that close: the sum rule then removes the on-site terms too).  Merely dropping the triplets beyond
    the cutoff would break the sum rule of a finite-difference fc3 (mock Stillinger-Weber Si 3x3x3 at -3:
    κ from the file +0.8 %, projected +0.3 %; docs/numerics.md).  A symfc fit with that cutoff is already
    in this space and comes back unchanged."""
    from phonopy.interface.symfc import symmetrize_by_projector

    if float(cutoff_ang) <= nearest_neighbour_distance_ang(ph3):
        return np.zeros_like(np.asarray(ph3.fc3, dtype=np.float64))  # no pair within: the projection is 0
    return np.asarray(symmetrize_by_projector(ph3.supercell, np.array(ph3.fc3, dtype=np.float64), 3,
                                              primitive=ph3.primitive, options={"cutoff": {3: float(cutoff_ang)}},
                                              symmetry=ph3.symmetry), dtype=np.float64)


def write_force_constants(ph3, out_dir, shengbte: bool = True, fc3_cutoff_ang: float | None = None) -> dict[str, Path]:
    """fc2.hdf5 and fc3.hdf5 (full arrays, as fitted) and, with ``shengbte``, FORCE_CONSTANTS_2ND and
    FORCE_CONSTANTS_3RD.  With ``fc3_cutoff_ang`` (the set's FC3 cutoff, :func:`fc3_cutoff_of`) the 3RD
    file holds exactly thirdorder's triplets within it (every block, as thirdorder writes them) of the fc3
    projected onto that cutoff (:func:`fc3_within_cutoff`); without one, every triplet with a constant
    above the writer's threshold."""
    from phono3py.file_IO import write_fc2_to_hdf5, write_fc3_to_hdf5

    out_dir = Path(out_dir)
    paths = {"fc2": out_dir / "fc2.hdf5", "fc3": out_dir / "fc3.hdf5"}
    write_fc3_to_hdf5(ph3.fc3, filename=str(paths["fc3"]))
    write_fc2_to_hdf5(ph3.fc2, filename=str(paths["fc2"]))
    if shengbte:
        from kappaflow import shengbte as sb

        paths["fc2_shengbte"] = out_dir / "FORCE_CONSTANTS_2ND"
        paths["fc3_shengbte"] = out_dir / "FORCE_CONSTANTS_3RD"
        sb.write_force_constants_2nd(paths["fc2_shengbte"], ph3.fc2)
        if fc3_cutoff_ang is None:
            sb.write_force_constants_3rd(paths["fc3_shengbte"], ph3.fc3, ph3.supercell, ph3.primitive)
        else:
            sb.write_force_constants_3rd(paths["fc3_shengbte"], fc3_within_cutoff(ph3, fc3_cutoff_ang),
                                         ph3.supercell, ph3.primitive, cutoff_ang=fc3_cutoff_ang,
                                         threshold_ev_per_ang3=0.0)
    return paths
