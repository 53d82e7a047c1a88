"""The systematic route's κ of the mock GeS2 (``ges2-morse``), in process: phono3py's pair displacements
at thirdorder's -3 cutoff (config/systems/ges2.yaml: 3x3x1, 3 shells, 0.01 Å), forces from the mock's
Morse network, phono3py's finite-difference solver (``traditional`` + symmetrisation) and RTA.  It is the
expected number for fits of other displacement sets (thirdorder's, random) of the same potential: a
different set and a different solver, the same physics.

Mesh: 7x7x3 with 0.3 THz Gaussian smearing, not the shipped 11x11x4 with tetrahedra: a BTE there takes
~70 s on the shared CI cores against ~3 s.  Both routes use the same mesh and smearing; smearing is smooth
in the force constants, whereas the tetrahedron method on so coarse a mesh jumps by 0.4 % between two
fits whose κ agree to 1e-4 on finer meshes (docs/numerics.md).
"""

from __future__ import annotations

import functools

import numpy as np

from conftest import REPO

GES2_UNITCELL = REPO / "config/systems/ges2/GeS2.scf.in"
GES2_TEMPLATE = REPO / "config/systems/ges2/GeS2.sc.scf.in"
MESH = [7, 7, 3]
SIGMA_THZ = 0.3
TEMPERATURES_K = [300.0]


def ges2_unitcell():
    from kappaflow.qe.pwin import read_pw_input

    return read_pw_input(GES2_UNITCELL).atoms


def mock_forces(cells):
    """Forces (eV/Å) of the mock GeS2 potential on phonopy cells (None: a row of zeros)."""
    from kappaflow.mock.potentials import ges2_mock_calculator
    from kappaflow.structure import from_phonopy

    calc = ges2_mock_calculator()
    out = []
    for cell in cells:
        atoms = from_phonopy(cell)
        atoms.calc = calc
        out.append(np.asarray(atoms.get_forces(), dtype=np.float64))
    return out


def rta_kappa(ph3) -> np.ndarray:
    """κ (W/mK, (n_T, 3, 3)) of the fc2/fc3 held by ``ph3`` on this module's mesh."""
    from kappaflow import bte

    return bte.run_phono3py(ph3, MESH, TEMPERATURES_K, "rta", True, None, SIGMA_THZ).kappa_w_per_mk


@functools.lru_cache(maxsize=None)
def systematic_kappa() -> np.ndarray:
    from kappaflow import sow

    ph3 = sow.generate_displacements(ges2_unitcell(),
                                     sow.SowSettings(supercell_matrix=[3, 3, 1], neighbour_shells=3))
    base = mock_forces([ph3.supercell])[0]
    cells = ph3.supercells_with_displacements
    forces = mock_forces([c if c is not None else ph3.supercell for c in cells])
    ph3.forces = np.array([f - base if c is not None else np.zeros_like(base) for f, c in zip(forces, cells)])
    ph3.produce_fc3(is_compact_fc=False)
    ph3.symmetrize_fc3()
    ph3.symmetrize_fc2()
    return rta_kappa(ph3)
