"""benchmarks/supercell_route.py's geometry, checked by independent routes: its minimum image against a
brute-force search over lattice translations in a skewed cell, and its first-shell force constants
mapped from the 16-atom cell onto a 54-atom one against phonopy (the same Γ frequencies, the acoustic
sum rule) and against the 16-atom forces of a commensurate displacement pattern."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "supercell_route.py"


@pytest.fixture(scope="module")
def route():
    spec = importlib.util.spec_from_file_location("supercell_route", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["supercell_route"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["supercell_route"]


def test_minimum_image_is_the_shortest_lattice_image_in_a_skewed_cell(route):
    cell = np.array([[0.0, 2.7155, 2.7155], [2.7155, 0.0, 2.7155], [2.7155, 2.7155, 0.0]]) * 2
    rng = np.random.default_rng(3)
    d = rng.uniform(-12, 12, size=(200, 3))
    shifts = np.array([[i, j, k] for i in range(-3, 4) for j in range(-3, 4) for k in range(-3, 4)]) @ cell
    brute = np.linalg.norm(d[:, None, :] + shifts[None], axis=2).min(axis=1)
    got = route.minimum_image(cell, d)
    assert np.allclose(np.linalg.norm(got, axis=1), brute, atol=1e-9)
    frac = (got - d) @ np.linalg.inv(cell)
    assert np.allclose(frac, np.round(frac), atol=1e-9)  # differs from d by a lattice vector


@pytest.fixture(scope="module")
def first_shell(route):
    from ase import Atoms

    from kappaflow.mock.potentials import stillinger_weber_si

    cell, pos0 = route.supercell(np.eye(3, dtype=int) * 2)
    rng = np.random.default_rng(0)
    calc = stillinger_weber_si()
    us, fs = [], []
    for amp in (0.01, 0.02, 0.03):
        u = rng.normal(size=pos0.shape)
        u *= amp / np.linalg.norm(u, axis=1)[:, None]
        atoms = Atoms("Si16", cell=cell, positions=pos0 + u, pbc=True)
        atoms.calc = calc
        us.append(u)
        fs.append(atoms.get_forces())
    return route.FirstShellBaseline(cell, pos0, us, fs), cell, pos0


def _gamma_frequencies(route, matrix, fc2):
    from phonopy import Phonopy

    ph = Phonopy(route.unit_cell(), supercell_matrix=matrix)
    ph.force_constants = fc2
    ph.run_qpoints([[0, 0, 0]])
    return np.sort(ph.qpoints.frequencies[0])


def test_first_shell_constants_on_a_54_atom_cell_obey_the_sum_rule_and_give_the_same_gamma_phonons(route, first_shell):
    base, cell_s, pos_s = first_shell
    cell_b, pos_b = route.supercell(np.eye(3, dtype=int) * 3)
    fc2_b, fc3_b = base.force_constants(cell_b, pos_b)
    assert np.abs(fc2_b.sum(axis=1)).max() < 1e-10
    assert np.abs(fc3_b.sum(axis=2)).max() < 1e-10
    # five blocks per atom in FC2 (itself and its four first neighbours at 2.35 Å), none farther
    d = np.linalg.norm(np.array([route.minimum_image(cell_b, pos_b - x) for x in pos_b]), axis=2)
    nonzero = np.abs(fc2_b).max(axis=(2, 3)) > 1e-12
    assert (nonzero.sum(axis=1) == 5).all() and d[nonzero].max() < 2.5
    w_small = _gamma_frequencies(route, np.eye(3) * 2, base.fc2)
    w_big = _gamma_frequencies(route, np.eye(3) * 3, fc2_b)
    assert w_small[-1] > 10  # THz: the optical mode is there
    assert np.allclose(w_small, w_big, atol=1e-6)


def test_a_pattern_commensurate_with_both_cells_gets_the_same_forces_in_both(route, first_shell):
    """A displacement field periodic in the 2×2×2 cell, written out in the 4×4×4 cell (twice as large
    in every direction): the mapped constants must give every atom the force its image has in 16 atoms."""
    base, cell_s, pos_s = first_shell
    cell_b, pos_b = route.supercell(np.eye(3, dtype=int) * 4)
    rng = np.random.default_rng(5)
    u_s = 0.02 * rng.normal(size=pos_s.shape)
    image = []
    for x in pos_b:
        dd = np.linalg.norm(route.minimum_image(cell_s, pos_s - x), axis=1)
        image.append(int(np.argmin(dd)))
        assert dd[image[-1]] < 1e-6
    u_b = u_s[image]
    f_s, e_s = base.forces_energy(cell_s, pos_s, u_s)
    f_b, e_b = base.forces_energy(cell_b, pos_b, u_b)
    assert np.allclose(f_b, f_s[image], atol=1e-10)
    assert e_b == pytest.approx(8 * e_s, rel=1e-10)
