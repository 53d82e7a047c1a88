"""Heat flux and stress by automatic differentiation (kappaflow.gk), against numbers from outside:
the mock's numpy Stillinger-Weber (energy, forces, stress), LAMMPS (per-atom energies, forces, and
``compute heat/flux`` with ``centroid/stress/atom`` for a pair potential), finite differences of
LAMMPS's per-atom energies for the many-body SW flux, and finite differences of the energy for the
strain-trick stress.  The unfolded, MIC and edge forms are compared where each is valid."""

import tempfile

import numpy as np
import pytest
from ase.build import bulk
from conftest import lammps_or_skip

pytest.importorskip("tensorflow")

from kappaflow.gk.heatflux import energy_forces_stress, gauge_matrices, heat_flux  # noqa: E402
from kappaflow.gk.potentials_tf import MorseTF, StillingerWeberTF  # noqa: E402
from kappaflow.gk.unfold import unfold  # noqa: E402
from kappaflow.mock.potentials import stillinger_weber_si  # noqa: E402
from kappaflow.units import AMU_ANG2_PER_FS2_EV  # noqa: E402


def si_cell(repeat=2, cubic=True, seed=0, strain=True, rattle=0.05):
    atoms = bulk("Si", "diamond", a=5.431, cubic=cubic).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    if strain:
        eps = 0.01 * np.array([[0.1, 0.3, 0.0], [0.3, -0.2, 0.1], [0.0, 0.1, 0.4]])
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    velocities = rng.normal(scale=0.01, size=(len(atoms), 3))  # Å/fs, ~300 K for Si
    return atoms, velocities


def flux(model, atoms, v, **kw):
    return heat_flux(model, atoms.positions, v, atoms.get_masses(), atoms.cell.array, atoms.get_chemical_symbols(), **kw)


@pytest.mark.parametrize("partition", ["equal", "central"])
def test_tf_stillinger_weber_equals_the_mock_numpy_potential(partition):
    atoms, _ = si_cell()
    atoms.calc = stillinger_weber_si()
    e, f, s, U = energy_forces_stress(StillingerWeberTF(partition), atoms.positions, atoms.cell.array,
                                      atoms.get_chemical_symbols())
    assert e == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    assert U.sum() == pytest.approx(e, abs=1e-10)
    assert np.abs(f - atoms.get_forces()).max() < 1e-12
    assert np.abs(s - atoms.get_stress()).max() < 1e-12


def test_strain_trick_stress_equals_finite_differences_of_the_energy():
    atoms, _ = si_cell(seed=3)
    model = StillingerWeberTF("equal")
    sym = atoms.get_chemical_symbols()
    _, _, stress, _ = energy_forces_stress(model, atoms.positions, atoms.cell.array, sym)
    volume = atoms.get_volume()
    h = 1e-5
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for k, (a, b) in enumerate(voigt):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = sign * h / (1 if a == b else 2)
            deformed = np.eye(3) + eps
            energies.append(energy_forces_stress(model, atoms.positions @ deformed, atoms.cell.array @ deformed, sym)[0])
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[k] == pytest.approx(fd, abs=1e-9), (k, stress[k], fd)


def test_unfold_keeps_every_atom_within_the_cutoff_of_the_cell():
    atoms, _ = si_cell(repeat=2, cubic=False, seed=1)  # a triclinic (fcc primitive) cell
    cutoff = 4.0
    unf = unfold(atoms.positions, atoms.cell.array, cutoff)
    assert unf.n_cell == len(atoms)
    base = unf.positions_ang[:unf.n_cell]
    assert np.allclose(unf.positions_ang, base[unf.replica_of] + unf.offsets @ atoms.cell.array, atol=1e-12)
    # brute force: every image within `cutoff` of some cell atom is in the cluster
    cell = atoms.cell.array
    have = {(int(i), *map(int, o)) for i, o in zip(unf.replica_of, unf.offsets)}
    for n in np.ndindex(7, 7, 7):
        offset = np.array(n) - 3
        images = base + offset @ cell
        d = np.linalg.norm(images[:, None, :] - base[None, :, :], axis=2).min(axis=1)
        for i in np.flatnonzero(d < cutoff):
            assert (int(i), *map(int, offset)) in have, (i, offset)


def test_unfolded_equals_mic_for_the_many_body_potential():
    # 3x3x3 conventional cells: half the plane spacing (8.1 Å) exceeds SW's effective cutoff 2 a sigma (7.5 Å)
    atoms, v = si_cell(repeat=3, seed=1, strain=False)
    model = StillingerWeberTF("equal")
    unf, mic = flux(model, atoms, v), flux(model, atoms, v, form="mic")
    assert np.abs(unf.potential).max() > 1e-3
    assert np.abs(unf.potential - mic.potential).max() < 1e-12 * np.abs(mic.potential).max() + 1e-14
    assert np.allclose(unf.convective, mic.convective, rtol=1e-13, atol=0)


def test_forms_agree_for_a_strictly_local_model_on_a_triclinic_cell():
    atoms, v = si_cell(repeat=4, cubic=False, seed=2)  # 128 atoms, fcc primitive vectors
    model = StillingerWeberTF("central")
    ref = flux(model, atoms, v, form="mic").potential
    for form in ("unfolded", "edges"):
        assert np.abs(flux(model, atoms, v, form=form).potential - ref).max() < 1e-12 * np.abs(ref).max()


def test_invalid_forms_are_refused_with_the_reason():
    atoms, v = si_cell(repeat=2)
    with pytest.raises(ValueError, match="edge form.*not strictly local"):
        flux(StillingerWeberTF("equal"), atoms, v, form="edges")
    with pytest.raises(ValueError, match="MIC form.*effective cutoff 7.542 Å"):
        flux(StillingerWeberTF("equal"), atoms, v, form="mic")
    with pytest.raises(ValueError, match="form must be one of"):
        flux(StillingerWeberTF("equal"), atoms, v, form="hardy")


def test_gauge_term_is_the_flux_linear_in_the_velocities_at_the_reference():
    perfect = bulk("Si", "diamond", a=5.30, cubic=True).repeat(2)  # compressed: Ω far from zero
    model = StillingerWeberTF("equal")
    sym = perfect.get_chemical_symbols()
    omega = gauge_matrices(model, perfect.positions, perfect.cell.array, sym)
    assert np.abs(omega).max() > 0.5  # eV (0.96 x identity per atom at 5.30 Å; 3.5e-4 at 5.431)
    rng = np.random.default_rng(5)
    for _ in range(2):
        v = rng.normal(scale=0.01, size=(len(perfect), 3))
        out = heat_flux(model, perfect.positions, v, perfect.get_masses(), perfect.cell.array, sym, gauge=omega)
        assert np.abs(out.gauge - out.potential).max() < 1e-12 * np.abs(out.potential).max()
        assert np.abs(out.total - out.convective).max() < 1e-12 * np.abs(out.potential).max()


# --- LAMMPS ----------------------------------------------------------------------------------------
def test_pair_potential_flux_equals_lammps_compute_heat_flux():
    lammps_or_skip()
    from kappaflow.gk.lammps_ref import LammpsSystem, morse_pair_commands

    atoms, v = si_cell(repeat=2, seed=1)
    morse = MorseTF(d0_ev=1.0, alpha_per_ang=1.4, r0_ang=2.35, cutoff_ang=4.5)
    with LammpsSystem(atoms.positions, v, atoms.get_masses(), atoms.cell.array, morse_pair_commands(morse)) as lmp:
        j_lammps, jconv_lammps = lmp.heat_flux()
        u_lammps, f_lammps = lmp.atomic_energies(), lmp.forces()
    _, f, _, u = energy_forces_stress(morse, atoms.positions, atoms.cell.array, atoms.get_chemical_symbols())
    assert np.abs(u - u_lammps).max() < 1e-12 and np.abs(f - f_lammps).max() < 1e-11
    jpot_lammps = j_lammps - jconv_lammps  # the virial part: no mass-velocity unit constant in it
    for form in ("unfolded", "edges"):
        out = flux(morse, atoms, v, form=form)
        assert np.abs(out.potential - jpot_lammps).max() < 1e-10 * np.abs(jpot_lammps).max(), form
        # the kinetic part of J_conv: LAMMPS's metal mvv2e is 1.0364269e-4 eV/(amu Å²/ps²) (8 digits),
        # kappaflow.units has CODATA 2018's 103.6426965 eV/(amu Å²/fs²): 6.3e-8 apart
        kinetic_ours = out.convective - (u[:, None] * v).sum(axis=0)
        kinetic_lammps = jconv_lammps - (u_lammps[:, None] * v).sum(axis=0)
        assert np.allclose(kinetic_ours / kinetic_lammps, AMU_ANG2_PER_FS2_EV / 103.64269, rtol=1e-12, atol=0)


def test_many_body_flux_equals_finite_differences_of_lammps_atomic_energies():
    lammps_or_skip()
    from kappaflow.gk.lammps_ref import LammpsSystem, finite_difference_potential_flux, sw_pair_commands

    atoms, v = si_cell(repeat=3, seed=1, strain=False)
    model = StillingerWeberTF("equal")
    with tempfile.TemporaryDirectory() as tmp, \
            LammpsSystem(atoms.positions, v, atoms.get_masses(), atoms.cell.array, sw_pair_commands(tmp)) as lmp:
        u_lammps = lmp.atomic_energies()
        j_fd = finite_difference_potential_flux(lmp, atoms.positions, v, atoms.cell.array, step_fs=1e-4)
    _, _, _, u = energy_forces_stress(model, atoms.positions, atoms.cell.array, atoms.get_chemical_symbols())
    assert np.abs(u - u_lammps).max() < 1e-12  # the same partition: a third of each three-body term per atom
    ours = flux(model, atoms, v, convective=False).potential
    assert np.abs(ours - j_fd).max() < 1e-8 * np.abs(j_fd).max(), (ours, j_fd)


def test_strain_trick_stress_matches_the_mock_pw_x_stress(tmp_path):
    """The stress of the TF Stillinger-Weber by the strain trick against the mock pw.x's printed stress (its
    output as pw.x writes it, `total   stress` in Ry/bohr³, read by kappaflow.qe.pwout) on a strained,
    rattled 64-atom cell: the route an ML vc-relax would be compared by."""
    import contextlib

    from conftest import REPO
    from kappaflow.mock.pw import main as mock_pw_main
    from kappaflow.qe.pwin import read_pw_input, write_pw_input
    from kappaflow.qe.pwout import read_pw_output

    atoms, _ = si_cell(repeat=2, seed=4)
    pw = read_pw_input(REPO / "config/systems/si/Si.scf.in").with_structure(atoms)
    pw.set("control", "tstress", True)
    (tmp_path / "pw.in").write_text(write_pw_input(pw))
    with open(tmp_path / "pw.out", "w") as out, contextlib.redirect_stdout(out):
        assert mock_pw_main(["--model", "stillinger-weber-si", "-in", str(tmp_path / "pw.in")]) == 0
    run = read_pw_output(tmp_path / "pw.out")
    printed = run.stress_ev_per_ang3  # 3x3, ASE's sign (the reader undoes pw.x's -(1/V) dE/deps)
    _, _, voigt, _ = energy_forces_stress(StillingerWeberTF("central"), atoms.positions, atoms.cell.array,
                                          atoms.get_chemical_symbols())
    ours = np.array([[voigt[0], voigt[5], voigt[4]], [voigt[5], voigt[1], voigt[3]], [voigt[4], voigt[3], voigt[2]]])
    assert np.abs(ours).max() > 1e-3  # a strained cell: a stress worth comparing (eV/Å³)
    # pw.x prints 8 decimals in Ry/bohr³: rounding at most 0.5e-8 Ry/bohr³ = 4.6e-7 eV/Å³
    assert np.abs(ours - printed).max() < 2e-6, (ours, printed)


def test_lammps_gk_reference_flux_on_the_unfolded_cluster_equals_ours():
    """The flux of the LAMMPS GK reference (kappaflow.gk.lammps_gk): directional finite differences of
    LAMMPS's pe/atom on the unfolded cluster, on a 54-atom cell where the minimum-image check above is not
    valid for the `equal` partition (effective cutoff 7.5 Å, half the plane spacing 4.7 Å); one atom given
    by an image one lattice vector away, as LAMMPS's unwrapped positions may be."""
    lammps_or_skip()
    from kappaflow.gk.heatflux import mic_valid
    from kappaflow.gk.lammps_gk import LammpsCluster
    from kappaflow.gk.lammps_ref import sw_pair_commands

    atoms, v = si_cell(repeat=3, cubic=False, seed=2, strain=False)
    model = StillingerWeberTF("equal")
    assert len(atoms) == 54 and not mic_valid(model, atoms.cell.array)
    pos = atoms.positions.copy()
    pos[0] += atoms.cell.array[1]
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LammpsCluster(atoms.cell.array, float(atoms.get_masses()[0]), sw_pair_commands(tmp),
                                model.effective_cutoff_ang)
        try:
            j_lammps, u_lammps = cluster.potential_flux(pos, v)
        finally:
            cluster.close()
    _, _, _, u = energy_forces_stress(model, atoms.positions, atoms.cell.array, atoms.get_chemical_symbols())
    assert np.abs(u - u_lammps).max() < 1e-12
    ours = flux(model, atoms, v, convective=False).potential
    assert np.abs(ours - j_lammps).max() < 3e-7 * np.abs(ours).max(), (ours, j_lammps)


def test_a_travelling_phonon_carries_its_energy_at_the_group_velocity():
    """A single travelling wave of a non-degenerate branch at q = (1/3, 0, 0) of a 54-atom Si cell, built from
    phonopy's eigenvector (FC2 of the mock's SW by phonopy's own displacements): the heat flux equals
    E v_g with phonopy's group velocity (an outside number; small amplitude, so nearly harmonic)."""
    from ase import Atoms
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from kappaflow.units import AMU_ANG2_PER_FS2_EV

    prim = bulk("Si", "diamond", a=5.431)
    ph = Phonopy(PhonopyAtoms(symbols=prim.get_chemical_symbols(), cell=prim.cell[:],
                              scaled_positions=prim.get_scaled_positions()),
                 supercell_matrix=np.eye(3, dtype=int) * 3, primitive_matrix=np.eye(3))
    ph.generate_displacements(distance=0.01)
    calc = stillinger_weber_si()
    forces = []
    for sc in ph.supercells_with_displacements:
        a = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        a.calc = calc
        forces.append(a.get_forces())
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    q = np.array([1 / 3, 0, 0])
    ph.run_qpoints([q], with_eigenvectors=True, with_group_velocities=True)
    res = ph.qpoints
    freqs, eig, vg = res.frequencies[0], res.eigenvectors[0], res.group_velocities[0]
    sc = ph.supercell
    atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
    masses, R, sym = atoms.get_masses(), atoms.positions, atoms.get_chemical_symbols()
    s2p, p2p = ph.primitive.s2p_map, ph.primitive.p2p_map
    model = StillingerWeberTF("central")
    e_perfect = energy_forces_stress(model, R, atoms.cell.array, sym)[0]
    checked = 0
    for branch in range(6):
        if np.min(np.abs(np.delete(freqs, branch) - freqs[branch])) < 0.05:
            continue  # degenerate: the eigenvector within the pair is arbitrary
        omega = 2 * np.pi * freqs[branch] * 1e-3  # rad/fs
        u = np.zeros((len(atoms), 3))
        v = np.zeros_like(u)
        for i in range(len(atoms)):
            p = p2p[s2p[i]]
            z = 0.02 * eig[3 * p:3 * p + 3, branch] * np.exp(2j * np.pi * q @ np.linalg.solve(prim.cell.array.T, R[i]))
            u[i], v[i] = z.real, (-1j * omega * z).real
        energy = (energy_forces_stress(model, R + u, atoms.cell.array, sym)[0] - e_perfect
                  + 0.5 * (masses[:, None] * v**2).sum() * AMU_ANG2_PER_FS2_EV)
        j = heat_flux(model, R + u, v, masses, atoms.cell.array, sym).total
        expected = energy * vg[branch] * 1e-3  # THz Å -> Å/fs
        assert np.abs(j - expected).max() < 0.02 * np.abs(expected).max(), (branch, j, expected)
        checked += 1
    assert checked >= 2
