"""ASE calculator of a network-potential committee (kappaflow.ml.calculator)."""

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces

from _ml_data import GES2_WIDE, SI_SMALL, ges2_cell, si_cubic, si_primitive
from kappaflow.ml.calculator import CommitteeCalculator
from kappaflow.ml.model import Committee, NetworkPotential, save_model
from test_ml_model import random_model


@pytest.fixture(scope="module")
def si_committee(tmp_path_factory):
    dirs = []
    for seed in (1, 2, 3):
        d = tmp_path_factory.mktemp(f"m{seed}")
        model = random_model(SI_SMALL, seed=seed)
        model.metadata = {"format": "kappaflow-nnp-1", "descriptor": SI_SMALL.to_dict(),
                          "architecture": {"network": model.network.to_dict()},
                          "energy_scale_ev": model.energy_scale}
        save_model(model, d)
        dirs.append(d)
    return dirs


def test_forces_are_minus_energy_gradient(si_committee):
    atoms = si_cubic(rattle=0.06, seed=1)
    atoms.calc = CommitteeCalculator(Committee.load(si_committee))
    F = atoms.get_forces()
    F_fd = calculate_numerical_forces(atoms, eps=1e-5)
    assert np.abs(F).max() > 1e-3
    np.testing.assert_allclose(F, F_fd, atol=1e-6, rtol=0)
    assert atoms.get_potential_energy() == atoms.get_potential_energy(force_consistent=True)
    std = atoms.calc.results["forces_std"]
    assert std.shape == (8, 3) and np.all(std > 0) and atoms.calc.results["energy_std"] > 0
    members = atoms.calc.results["members_forces"]
    np.testing.assert_allclose(members.mean(axis=0), F, atol=1e-13)
    np.testing.assert_allclose(members.std(axis=0), std, atol=1e-13)


def test_accepts_model_dirs_and_checks_params(si_committee):
    atoms = si_primitive(seed=4)
    calc = CommitteeCalculator([str(d) for d in si_committee])
    atoms.calc = calc
    e1 = atoms.get_potential_energy()
    single = CommitteeCalculator(NetworkPotential.load(si_committee[0]))
    assert single.get_property("energy", atoms) != e1
    assert single.get_property("forces", atoms).shape == (2, 3)
    with pytest.raises(ValueError, match="params"):
        CommitteeCalculator(si_committee, params=GES2_WIDE)
    with pytest.raises(ValueError, match="not among"):
        calc.get_potential_energy(ges2_cell())


def test_drives_phonopy_and_ase_md(si_committee):
    """phonopy harmonic force constants from the calculator satisfy the acoustic sum rule and are
    symmetric; a short NVE run conserves energy."""
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    comm = Committee.load(si_committee)
    calc = CommitteeCalculator(comm)
    unit = si_primitive(rattle=0.0)
    ph = Phonopy(PhonopyAtoms(symbols=unit.get_chemical_symbols(), cell=unit.cell[:],
                              scaled_positions=unit.get_scaled_positions()),
                 supercell_matrix=np.eye(3, dtype=int) * 2)
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        from ase import Atoms
        a = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        forces.append(calc.get_property("forces", a))
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    fc = ph.force_constants
    assert np.abs(fc).max() > 1e-3
    np.testing.assert_allclose(fc.sum(axis=1), 0, atol=1e-8 * np.abs(fc).max() + 1e-10)

    atoms = si_cubic(rattle=0.02, seed=3)
    atoms.calc = calc
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(0, 0.05, (8, 3)))
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, 0.5 * units.fs).run(20)
    assert abs(atoms.get_total_energy() - e0) < 1e-3 * max(1.0, abs(atoms.get_kinetic_energy()))


def test_two_species(tmp_path):
    model = random_model(GES2_WIDE, seed=8)
    atoms = ges2_cell(rattle=0.04, seed=2)
    atoms.calc = CommitteeCalculator(model)
    F = atoms.get_forces()
    np.testing.assert_allclose(F, calculate_numerical_forces(atoms, eps=1e-5), atol=1e-6, rtol=0)
    assert np.all(atoms.calc.results["forces_std"] == 0)


def test_stress_by_the_strain_trick_equals_finite_differences(si_committee):
    """The committee's stress (kappaflow.gk.heatflux.energy_forces_stress through CommitteeCalculator)
    against central differences of its energy under strain (ASE's numerical stress)."""
    atoms = si_cubic(rattle=0.05, seed=6)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + np.array([[0.01, 0.004, 0], [0.004, -0.006, 0.002],
                                                               [0, 0.002, 0.003]])), scale_atoms=True)
    atoms.calc = CommitteeCalculator(Committee.load(si_committee))
    stress = atoms.get_stress()
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    assert np.abs(stress).max() > 1e-4
    np.testing.assert_allclose(stress, numerical, atol=1e-8, rtol=0)


def test_heat_flux_forms_agree_for_the_committee(si_committee):
    """The committee is strictly local: unfolded (O(N)), MIC (full Jacobian) and edge forms agree; the
    mean of the members' fluxes is the flux of the committee mean (the flux is linear in U)."""
    from kappaflow.gk.committee_tf import CommitteeAtomicEnergies
    from kappaflow.gk.heatflux import heat_flux

    comm = Committee.load(si_committee)
    atoms = si_cubic(rattle=0.05, seed=7, repeat=(2, 2, 2))  # 64 atoms: half width 5.4 Å > the 4.6 Å cutoff
    v = np.random.default_rng(3).normal(scale=0.01, size=(len(atoms), 3))
    args = (atoms.positions, v, atoms.get_masses(), atoms.cell.array, atoms.get_chemical_symbols())
    model = CommitteeAtomicEnergies(comm)
    ref = heat_flux(model, *args, form="mic")
    assert np.abs(ref.potential).max() > 1e-5
    for form in ("unfolded", "edges"):
        np.testing.assert_allclose(heat_flux(model, *args, form=form).potential, ref.potential,
                                   rtol=1e-11, atol=1e-14)
    members = [heat_flux(CommitteeAtomicEnergies(comm, member=k), *args, form="edges").total for k in range(3)]
    np.testing.assert_allclose(np.mean(members, axis=0), ref.total, rtol=1e-11, atol=1e-14)


def test_committee_members_fluxes_on_the_mean_trajectory_and_their_kappa_spread(si_committee, tmp_path):
    """gk.committee_spread: every member's J on the mean's positions and velocities at every sample; the
    flux is linear in U, so the members' mean flux is the mean's flux; a killed run resumes with them; each
    member's κ at the mean's cutoff, and their spread."""
    from kappaflow.errors import KappaflowError
    from kappaflow.gk.committee_tf import CommitteeAtomicEnergies
    from kappaflow.gk.md import AtomicEnergyCalculator, CompiledModel, MDSettings, read_trajectory, run_trajectory, thermalise
    from kappaflow.gk.steps import committee_spread, member_models

    comm = Committee.load(si_committee)
    mean = CommitteeAtomicEnergies(comm)
    members = member_models({"potential": "committee", "committee_spread": True}, mean)
    assert [m.member for m in members] == [0, 1, 2]
    assert member_models({"potential": "committee", "committee_spread": False}, mean) == []
    settings = MDSettings(temperature_k=30.0, timestep_fs=1.0, thermalisation_steps=10, start_spacing_steps=5,
                          n_trajectories=2, trajectory_steps=40, flux_every=2, segment_steps=10,
                          max_drift_ev_per_atom=10.0)
    atoms = si_cubic(repeat=(2, 2, 2))  # 64 atoms: plane spacing 10.9 Å > twice the 4.6 Å cutoff
    compiled = CompiledModel(mean)
    starts = thermalise(atoms, AtomicEnergyCalculator(compiled), settings, tmp_path / "starts.npz", {},
                        log=lambda *_: None)
    compiled_members = tuple(CompiledModel(m) for m in members)
    trajs = []
    for k in range(2):
        path = tmp_path / f"traj{k}.npz"
        if k == 1:  # killed after 20 steps, then resumed
            run_trajectory(starts, k, compiled, settings, path, {}, log=lambda *_: None, stop_after_steps=20,
                           members=compiled_members)
            assert read_trajectory(path)["member_flux_ev_ang_per_fs"].shape == (3, 11, 3)
        run_trajectory(starts, k, compiled, settings, path, {}, log=lambda *_: None, members=compiled_members)
        trajs.append(read_trajectory(path))
    for t in trajs:
        m = t["member_flux_ev_ang_per_fs"]
        assert m.shape == (3, 21, 3) and bool(t["complete"])
        np.testing.assert_allclose(m.mean(axis=0), t["flux_ev_ang_per_fs"], rtol=1e-10, atol=1e-14)
        assert np.abs(m[0] - m[1]).max() > 1e-6  # the members differ
    partial = tmp_path / "partial.npz"
    run_trajectory(starts, 0, compiled, settings, partial, {}, log=lambda *_: None, stop_after_steps=10,
                   members=compiled_members)
    with pytest.raises(KappaflowError, match="3 committee members, this run has 0"):
        run_trajectory(starts, 0, compiled, settings, partial, {}, log=lambda *_: None)
    out = committee_spread([t["member_flux_ev_ang_per_fs"] for t in trajs], 2.0, 30.0, atoms.get_volume(), 16.0,
                           {"max_lag_fs": 20.0, "filter_thz": 10.0, "subtract_mean": False})
    assert len(out["kappa_per_member_w_per_mk"]) == 3 and out["spread_w_per_mk"] > 0
    assert out["spread_w_per_mk"] == pytest.approx(np.std(out["kappa_per_member_w_per_mk"], ddof=1))
