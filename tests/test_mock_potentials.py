"""Tests of the classical potentials behind the mock pw.x (kappaflow.mock.potentials).

Every reference number comes from an independent route: forces and stresses from finite differences
of the energy, the reference equilibrium from its construction, extensivity from a supercell built by
ASE, the SW cohesive energy and lattice constant from the 1985 paper, phonon stability from phonopy.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, make_supercell
from ase.calculators.calculator import Calculator

from kappaflow.mock.potentials import (
    CALCULATOR_NAMES,
    GES2_ALPHA_PER_ANG,
    GES2_CUTOFF_ANG,
    GES2_DEPTH_EV,
    MorseNetwork,
    calculator_from_name,
    ges2_mock_calculator,
    ges2_reference,
    stillinger_weber_si,
)
from kappaflow.units import BOHR_ANG

H = 1e-5  # Å, central finite-difference step
VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


# --------------------------------------------------------------------------------------------------
# helpers (independent routes)
# --------------------------------------------------------------------------------------------------


def energy_of(calc, atoms: Atoms) -> float:
    a = atoms.copy()
    a.calc = calc
    return a.get_potential_energy()


def fd_forces(calc, atoms: Atoms, h: float = H) -> np.ndarray:
    """−∂E/∂x by central differences."""
    a = atoms.copy()
    a.calc = calc
    pos0 = a.positions.copy()
    out = np.zeros_like(pos0)
    for i in range(len(a)):
        for c in range(3):
            p = pos0.copy()
            p[i, c] += h
            a.positions = p
            ep = a.get_potential_energy()
            p[i, c] -= 2 * h
            a.positions = p
            em = a.get_potential_energy()
            out[i, c] = -(ep - em) / (2 * h)
    return out


def fd_stress(calc, atoms: Atoms, h: float = H) -> np.ndarray:
    """(1/V) ∂E/∂ε (symmetric strain, atoms follow the cell) by central differences, Voigt order."""
    a0 = atoms.copy()
    vol = a0.get_volume()
    out = np.zeros(6)
    for v, (p, q) in enumerate(VOIGT):
        energies = []
        for sign in (+1, -1):
            eps = np.zeros((3, 3))
            eps[p, q] += sign * h / 2
            eps[q, p] += sign * h / 2
            a = a0.copy()
            a.set_cell(a0.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            energies.append(energy_of(calc, a))
        out[v] = (energies[0] - energies[1]) / (2 * h) / vol
    return out


def strain(atoms: Atoms, rng, amplitude: float) -> Atoms:
    a = atoms.copy()
    e = amplitude * rng.standard_normal((3, 3))
    a.set_cell(a.cell.array @ (np.eye(3) + 0.5 * (e + e.T)), scale_atoms=True)
    return a


def shuffled(atoms: Atoms, rng) -> tuple[Atoms, np.ndarray]:
    perm = rng.permutation(len(atoms))
    return atoms[perm], perm


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sw():
    return stillinger_weber_si()


@pytest.fixture(scope="module")
def morse():
    return ges2_mock_calculator()


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# --------------------------------------------------------------------------------------------------
# common interface
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [stillinger_weber_si, ges2_mock_calculator])
def test_ase_calculator_interface(factory):
    calc = factory()
    assert isinstance(calc, Calculator)
    for prop in ("energy", "free_energy", "forces", "stress"):
        assert prop in calc.implemented_properties
    atoms = bulk("Si", "diamond", a=5.4309, cubic=True) if factory is stillinger_weber_si else ges2_reference()
    atoms.rattle(0.02, seed=1)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == e
    assert atoms.get_forces().dtype == np.float64 and atoms.get_forces().shape == (len(atoms), 3)
    assert atoms.get_stress().shape == (6,)


def test_calculator_from_name():
    assert isinstance(calculator_from_name("stillinger-weber-si"), Calculator)
    ref = ges2_reference()
    calc = calculator_from_name("morse-network", reference=ref)
    assert isinstance(calc, MorseNetwork)
    assert (calc.cutoff_ang, calc.depth_ev, calc.alpha_per_ang) == (
        GES2_CUTOFF_ANG,
        GES2_DEPTH_EV,
        GES2_ALPHA_PER_ANG,
    )
    assert isinstance(calculator_from_name("Morse_Network"), MorseNetwork)
    custom = calculator_from_name("morse-network", reference=ref, depth_ev=0.7)
    assert custom.depth_ev == 0.7
    assert set(CALCULATOR_NAMES) == {"stillinger-weber-si", "morse-network"}
    with pytest.raises(ValueError, match="unknown mock potential"):
        calculator_from_name("lennard-jones")
    with pytest.raises(TypeError):
        calculator_from_name("morse-network", reference="GeS2.scf.in")


# --------------------------------------------------------------------------------------------------
# Stillinger–Weber silicon
# --------------------------------------------------------------------------------------------------


def test_sw_cohesive_energy(sw):
    # Stillinger & Weber (1985): ε = 2.1683 eV, cohesive energy 2ε = 4.3366 eV/atom at a0 = 5.4309 Å
    for atoms in (bulk("Si", "diamond", a=5.4309), bulk("Si", "diamond", a=5.4309, cubic=True)):
        assert energy_of(sw, atoms) / len(atoms) == pytest.approx(-4.3366, abs=1e-3)


def test_sw_lattice_constant_from_energy_scan(sw):
    lattice = np.linspace(5.38, 5.48, 11)
    energies = np.array([energy_of(sw, bulk("Si", "diamond", a=a)) for a in lattice])
    i = int(np.argmin(energies))
    assert 0 < i < len(lattice) - 1
    fit = np.polyfit(lattice, energies, 4)
    roots = np.roots(np.polyder(fit))
    roots = roots[np.isreal(roots)].real
    a0 = float(roots[np.argmin(np.abs(roots - lattice[i]))])
    print(f"SW Si relaxed lattice constant from E(a): {a0:.5f} Å")
    assert a0 == pytest.approx(5.431, abs=0.002)


def test_sw_forces_are_minus_energy_gradient(sw, rng):
    atoms = strain(bulk("Si", "diamond", a=5.4309, cubic=True).repeat((2, 1, 1)), rng, 0.01)
    atoms.rattle(0.05, seed=3)
    atoms.calc = sw
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, fd_forces(sw, atoms), rtol=0, atol=1e-7)


def test_sw_stress_is_strain_derivative(sw, rng):
    atoms = strain(bulk("Si", "diamond", a=5.4309, cubic=True), rng, 0.01)
    atoms.rattle(0.05, seed=4)
    atoms.calc = sw
    stress = atoms.get_stress()
    assert np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(stress, fd_stress(sw, atoms), rtol=0, atol=1e-8)


# --------------------------------------------------------------------------------------------------
# Morse network / GeS2
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repeat, a, rattle, strain", [
    ((1, 1, 1), 5.4309, 0.0, 0.0), ((2, 2, 2), 5.4309, 0.05, 0.01), ((2, 2, 2), 5.6, 0.3, 0.02),
    ((3, 3, 3), 5.3, 0.1, 0.01),
])
def test_sw_equals_matscipy_manybody(sw, rng, repeat, a, rattle, strain):
    """The numpy Stillinger-Weber against an independent implementation: matscipy's Manybody with its
    Stillinger_Weber_PRB_31_5262_Si parameters (what the mock used before), on rattled, sheared cells."""
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
        StillingerWeber,
        Stillinger_Weber_PRB_31_5262_Si,
    )

    reference = Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))
    atoms = bulk("Si", "diamond", a=a, cubic=True).repeat(repeat)
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    atoms.set_cell(atoms.cell @ (np.eye(3) + strain * rng.normal(size=(3, 3))), scale_atoms=True)
    results = []
    for calc in (reference, sw):
        b = atoms.copy()
        b.calc = calc
        results.append((b.get_potential_energy(), b.get_forces(), b.get_stress()))
    (e_ref, f_ref, s_ref), (e, f, s) = results
    assert abs(e - e_ref) < 1e-11 * len(atoms)
    assert np.abs(f - f_ref).max() < 1e-11
    assert np.abs(s - s_ref).max() < 1e-13


@pytest.mark.parametrize("cell, n_atoms, cutoff", [
    (np.diag([5.43, 5.43, 5.43]), 8, 3.8),
    (np.array([[0.0, 2.7, 2.7], [2.7, 0.0, 2.7], [2.7, 2.7, 0.0]]), 2, 6.0),  # cutoff > cell: several images
    (np.array([[4.0, 0.0, 0.0], [1.9, 3.5, 0.0], [0.3, -0.8, 7.1]]), 5, 4.4),  # oblique
])
def test_periodic_pairs_equal_ase_neighbour_list(rng, cell, n_atoms, cutoff):
    """The numpy neighbour list against ASE's (independent): the same (i, j, lattice translation) set,
    also for positions outside the cell and a cutoff longer than the cell."""
    from ase.neighborlist import primitive_neighbor_list

    from kappaflow.mock.potentials import periodic_pairs

    positions = rng.uniform(-0.5, 1.5, size=(n_atoms, 3)) @ cell
    i, j, n = periodic_pairs(cell, positions, cutoff)
    ri, rj, rs = primitive_neighbor_list("ijS", (True, True, True), cell, positions, cutoff,
                                         self_interaction=False)
    ours = sorted(zip(i.tolist(), j.tolist(), map(tuple, n.tolist())))
    theirs = sorted(zip(ri.tolist(), rj.tolist(), map(tuple, rs.tolist())))
    assert len(ours) > n_atoms and ours == theirs


def test_mock_pw_start_up_imports_no_scipy(tmp_path):
    """The mock pw.x starts in well under a second (benchmarks/mock_pw_startup.py): its SCF path must
    not import scipy (matscipy's calculators and ase.neighborlist import scipy.stats/scipy.sparse,
    about 0.8 s of the former 1-2 s start)."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys; from kappaflow.mock.pw import main; "
            f"rc = main(['--model', '{{model}}', '-in', '{{inp}}']); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'matscipy', 'phonopy', "
            "'phono3py', 'matplotlib')); print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)")
    for model, inp in (("stillinger-weber-si", REPO / "config/systems/si/Si.scf.in"),
                       ("ges2-morse", REPO / "config/systems/ges2/GeS2.scf.in")):
        proc = subprocess.run([sys.executable, "-c", code.format(model=model, inp=inp)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "JOB DONE." in proc.stdout
        assert "HEAVY []" in proc.stderr, (model, proc.stderr.splitlines()[-1])


def test_ges2_reference_structure():
    ref = ges2_reference()
    alat = 6.67592990 * BOHR_ANG
    np.testing.assert_allclose(ref.cell.lengths(), alat * np.array([0.991634235, 0.991634235, 3.114821979]))
    assert ref.get_chemical_symbols() == ["Ge", "Ge", "S", "S", "S", "S"]
    np.testing.assert_allclose(ref.get_scaled_positions()[3], [0.0, 0.5, 0.870911775])
    assert np.all(ref.pbc)
    # the Ge–S bond length (≈ 2.255 Å) is the shortest distance and the tolerance is 0.3 × it
    calc = ges2_mock_calculator()
    d = ref.get_all_distances(mic=True)
    assert calc.shortest_distance_ang == pytest.approx(d[d > 0].min(), abs=1e-12)
    assert calc.site_tolerance_ang == pytest.approx(0.3 * calc.shortest_distance_ang)


def test_morse_reference_is_exact_equilibrium(morse, rng):
    for atoms in (ges2_reference(), shuffled(ges2_reference().repeat((3, 3, 1)), rng)[0]):
        atoms.calc = morse
        assert abs(atoms.get_potential_energy()) < 1e-12
        assert np.abs(atoms.get_forces()).max() < 1e-12
        assert np.abs(atoms.get_stress()).max() < 1e-12


def test_morse_forces_and_stress_are_energy_derivatives(morse, rng):
    atoms, _ = shuffled(strain(ges2_reference().repeat((3, 3, 1)), rng, 0.01), rng)
    atoms.rattle(0.05, seed=5)
    atoms.calc = morse
    forces, stress = atoms.get_forces(), atoms.get_stress()
    assert np.abs(forces).max() > 0.1 and np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(forces, fd_forces(morse, atoms), rtol=0, atol=1e-7)
    np.testing.assert_allclose(stress, fd_stress(morse, atoms), rtol=0, atol=1e-8)


def test_morse_invariances(morse, rng):
    atoms = strain(ges2_reference().repeat((3, 3, 1)), rng, 0.01)
    atoms.rattle(0.05, seed=6)
    atoms.calc = morse
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert e0 > 0
    # forces sum to zero
    assert np.abs(f0.sum(axis=0)).max() < 1e-12
    # rigid translation, also after wrapping atoms back into the cell (images change)
    moved = atoms.copy()
    moved.translate(rng.uniform(-2.0, 2.0, 3))
    moved.wrap()
    moved.calc = morse
    assert moved.get_potential_energy() == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(moved.get_forces(), f0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(moved.get_stress(), s0, rtol=0, atol=1e-12)
    # atom-order permutation permutes the forces
    perm_atoms, perm = shuffled(atoms, rng)
    perm_atoms.calc = morse
    assert perm_atoms.get_potential_energy() == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(perm_atoms.get_forces(), f0[perm], rtol=0, atol=1e-10)
    np.testing.assert_allclose(perm_atoms.get_stress(), s0, rtol=0, atol=1e-12)
    # rigid rotation of the whole crystal (cell and atoms) leaves the energy unchanged
    rot = atoms.copy()
    rot.rotate(37.0, (1.0, 2.0, 0.5), rotate_cell=True)
    calc_rot = MorseNetwork(_rotated_reference(37.0, (1.0, 2.0, 0.5)), GES2_CUTOFF_ANG, GES2_DEPTH_EV, GES2_ALPHA_PER_ANG)
    assert energy_of(calc_rot, rot) == pytest.approx(e0, abs=1e-10)


def _rotated_reference(angle, axis):
    ref = ges2_reference()
    ref.rotate(angle, axis, rotate_cell=True)
    return ref


@pytest.mark.parametrize(
    "matrix",
    [np.diag([2, 2, 1]), np.array([[1, 1, 0], [-1, 1, 0], [0, 0, 1]]), np.array([[2, 1, 0], [0, 1, 0], [0, 1, 2]])],
)
def test_morse_energy_is_extensive(morse, rng, matrix):
    """A displaced and strained cell and any supercell of it (built by ASE) agree per cell.

    The primitive cell (a = 3.50 Å < 2 × cutoff) exercises springs between an atom and several
    images of another one, and between an atom and its own images.
    """
    prim = strain(ges2_reference(), rng, 0.02)
    prim.rattle(0.06, seed=7)
    prim.calc = morse
    e1, f1, s1 = prim.get_potential_energy(), prim.get_forces(), prim.get_stress()
    sc = make_supercell(prim, matrix, wrap=True)
    sc, _ = shuffled(sc, rng)
    sc.calc = morse
    n = round(abs(np.linalg.det(matrix)))
    assert sc.get_potential_energy() == pytest.approx(n * e1, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(sc.get_stress(), s1, rtol=0, atol=1e-12)
    # forces of the copies equal those of the primitive atom they come from
    origin = [int(np.argmin(np.linalg.norm(((p - prim.positions) @ np.linalg.inv(prim.cell.array) + 0.5) % 1 - 0.5, axis=1)))
              for p in sc.positions]
    np.testing.assert_allclose(sc.get_forces(), f1[origin], rtol=0, atol=1e-10)


def test_morse_is_anharmonic(morse):
    atoms = ges2_reference().repeat((3, 3, 1))
    atoms.calc = morse

    def forces_for(u):
        a = atoms.copy()
        a.positions[4] += u
        a.calc = morse
        return a.get_forces()

    u = np.array([0.02, 0.01, 0.03])
    even_1 = forces_for(u) + forces_for(-u)  # ≈ Φ3 u u, vanishes for a harmonic model
    even_2 = forces_for(2 * u) + forces_for(-2 * u)
    assert np.abs(even_1).max() > 1e-3
    # the leading even term is cubic in the energy: it scales as u² (ratio 4 up to O(u²) corrections)
    ratio = np.linalg.norm(even_2) / np.linalg.norm(even_1)
    assert ratio == pytest.approx(4.0, rel=0.05)
    # and the odd part is the harmonic force, of order k u
    odd = forces_for(u) - forces_for(-u)
    assert np.linalg.norm(odd) > 10 * np.linalg.norm(even_1)


def test_morse_mapping_errors(morse):
    ref = ges2_reference()
    bad_cell = ref.copy()
    bad_cell.set_cell(ref.cell.array @ np.diag([1.5, 1.0, 1.0]), scale_atoms=True)
    with pytest.raises(ValueError, match="not an integer supercell"):
        energy_of(morse, bad_cell)
    far = ref.copy()
    far.positions[3] += [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"atom 3 \(S\)"):
        energy_of(morse, far)
    species = ref.copy()
    species.symbols[0] = "S"
    with pytest.raises(ValueError, match=r"atom 0 \(S\).*Ge"):
        energy_of(morse, species)
    missing = ref.repeat((2, 1, 1))[:-1]
    with pytest.raises(ValueError, match="atoms"):
        energy_of(morse, missing)
    flat = ref.copy()
    flat.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic"):
        energy_of(morse, flat)
    with pytest.raises(ValueError, match="neighbour shell"):
        MorseNetwork(ref, ref.cell.lengths()[0], 1.0, 1.0)


def test_morse_ase_relaxation_returns_to_reference(morse):
    from ase.optimize import BFGS

    atoms = ges2_reference()
    atoms.rattle(0.1, seed=8)
    atoms.calc = morse
    assert atoms.get_potential_energy() > 1e-3
    BFGS(atoms, logfile=None).run(fmax=1e-6, steps=500)
    assert atoms.get_potential_energy() < 1e-10
    # the relaxed structure is the reference up to a rigid translation
    shift = atoms.positions - ges2_reference().positions
    np.testing.assert_allclose(shift - shift.mean(axis=0), 0.0, atol=1e-5)


def test_ges2_phonons_are_stable_and_physical(morse):
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    ref = ges2_reference()
    unit = PhonopyAtoms(
        symbols=ref.get_chemical_symbols(),
        cell=ref.cell.array,
        scaled_positions=ref.get_scaled_positions(),
        masses=ref.get_masses(),
    )
    phonon = Phonopy(unit, supercell_matrix=np.diag([3, 3, 1]))
    phonon.generate_displacements(distance=0.01)
    forces = []
    for sc in phonon.supercells_with_displacements:
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = morse
        forces.append(atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    phonon.run_mesh([8, 8, 4], is_gamma_center=True)
    freqs = phonon.mesh.frequencies
    qpoints = phonon.mesh.qpoints
    print(f"GeS2 Morse network: mesh 8x8x4 frequencies {freqs.min():.4f} .. {freqs.max():.3f} THz")
    assert freqs.min() > -0.05
    assert 10.0 < freqs.max() < 15.0
    # rigid network: the only (near-)zero modes are the three acoustic modes at Gamma
    off_gamma = np.linalg.norm(qpoints, axis=1) > 1e-9
    assert freqs[off_gamma].min() > 0.3
    # a high-symmetry path
    path = [[0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0, 0, 0], [0, 0, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0.5]]
    phonon.run_qpoints(np.concatenate([np.linspace(a, b, 21) for a, b in zip(path[:-1], path[1:])]))
    band = phonon.qpoints.frequencies
    print(f"GeS2 Morse network: path frequencies {band.min():.4f} .. {band.max():.3f} THz")
    assert band.min() > -0.05
