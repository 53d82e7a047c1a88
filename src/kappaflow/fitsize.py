"""Is a force-constant fit determined?  The counts both sides of the question.

Free parameters: symfc's FC2 and FC3 basis sizes for a supercell and an FC3 cutoff (the translational
sum rule applied); equations: 3N - 3 independent force components per supercell.  The sow refuses a
random set with fewer equations than parameters before any pw.x run, reap checks again (rank and
residual), and ``kappaflow plan`` prints both (docs/numerics.md).
"""

from __future__ import annotations

import numpy as np


def independent_force_equations(n_supercells: int, n_atoms: int) -> int:
    """Force components of the supercells that a translation-invariant model can fit independently:
    3N - 3 per supercell (the forces of a model obeying the sum rule add up to zero)."""
    return int(n_supercells) * (3 * int(n_atoms) - 3)


def underdetermined_message(n_parameters: int, n_fc2: int, n_fc3: int, cutoff_ang, n_supercells: int,
                            n_atoms: int, what: str) -> str:
    cutoff = "no FC3 cutoff" if cutoff_ang is None else f"FC3 cutoff {float(cutoff_ang):.4f} Å"
    return (f"{what}: {n_parameters} free force-constant parameters (FC2 {n_fc2} + FC3 {n_fc3}, {cutoff}) "
            f"but {n_supercells} supercells of {n_atoms} atoms give only "
            f"{independent_force_equations(n_supercells, n_atoms)} independent force equations "
            f"(3N - 3 each): the fit is underdetermined and its κ would be meaningless. Use at least "
            f"{-(-n_parameters // (3 * n_atoms - 3))} supercells, or a (smaller) cutoff "
            "(sow.neighbour_shells / sow.pair_cutoff_ang)")


_BASIS_CACHE: dict = {}


def free_parameters(unitcell, supercell, cutoff_ang: float | None, mode: str = "exact",
                    symprec: float = 1e-5) -> dict:
    """Number of independent FC2 and FC3 parameters (symfc basis sizes, translational sum rule
    applied) for the supercell and an FC3 cutoff in Å (None: all triplets).  ``mode`` estimate uses
    symfc's cheaper estimate_basis_size (without the sum rule), off returns NaN."""
    if mode == "off":
        return {"fc2": float("nan"), "fc3": float("nan"), "fc3_basis_bytes": 0.0}
    from phonopy.structure.cells import get_supercell
    from symfc import Symfc
    from symfc.utils.utils import SymfcAtoms

    from kappaflow.structure import supercell_matrix_3x3, to_phonopy

    m = supercell_matrix_3x3(supercell)
    cache_key = (unitcell.get_scaled_positions().round(8).tobytes(), m.tobytes(),
                 None if cutoff_ang is None else round(float(cutoff_ang), 8), mode)
    if cache_key in _BASIS_CACHE:
        return _BASIS_CACHE[cache_key]
    sc = get_supercell(to_phonopy(unitcell), m)
    atoms = SymfcAtoms(cell=np.asarray(sc.cell), scaled_positions=np.asarray(sc.scaled_positions),
                       numbers=np.asarray(sc.numbers))
    symfc = Symfc(atoms, cutoff=None if cutoff_ang is None else {3: float(cutoff_ang)}, symprec=symprec,
                  log_level=0)
    if mode == "estimate":
        est = symfc.estimate_basis_size(orders=[2, 3])
        out = {"fc2": int(est[2]), "fc3": int(est[3]), "fc3_basis_bytes": 0.0}
    else:
        symfc.compute_basis_set(orders=[2, 3])
        b2, b3 = symfc.basis_set[2].basis_set, symfc.basis_set[3].basis_set
        out = {"fc2": int(b2.shape[1]), "fc3": int(b3.shape[1]), "fc3_basis_bytes": float(b3.nbytes)}
    _BASIS_CACHE[cache_key] = out
    return out
