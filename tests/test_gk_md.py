"""Green-Kubo MD (kappaflow.gk.md): the ASE calculator of a TF potential against the mock's numpy SW, a
killed trajectory resumed from its checkpoint against an uninterrupted one, and the clear stops (a cell
too small for the potential, an exploding MD, a checkpoint of other settings)."""
from dataclasses import replace

import numpy as np
import pytest
from ase.build import bulk

pytest.importorskip("tensorflow")

from kappaflow.errors import KappaflowError  # noqa: E402
from kappaflow.gk.md import (AtomicEnergyCalculator, CompiledModel, MDSettings, check_cell,  # noqa: E402
                             read_trajectory, run_trajectory, thermalise)
from kappaflow.gk.potentials_tf import StillingerWeberTF  # noqa: E402
from kappaflow.mock.potentials import stillinger_weber_si  # noqa: E402

SETTINGS = MDSettings(temperature_k=300.0, timestep_fs=2.0, thermalisation_steps=60, start_spacing_steps=20,
                      n_trajectories=2, trajectory_steps=120, flux_every=2, segment_steps=40)


@pytest.fixture(scope="module")
def compiled():
    return CompiledModel(StillingerWeberTF("central"))


@pytest.fixture(scope="module")
def starts(tmp_path_factory, compiled):
    atoms = bulk("Si", "diamond", a=5.431).repeat(3)  # 54 atoms, plane spacing 9.4 Å > 2 x 3.77 Å
    return thermalise(atoms, AtomicEnergyCalculator(compiled), SETTINGS, tmp_path_factory.mktemp("gk") / "starts.npz",
                      {"test": True}, log=lambda *_: None)


def test_calculator_equals_the_mock_potential(compiled):
    atoms = bulk("Si", "diamond", a=5.431).repeat(3)
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    ref = atoms.copy()
    ref.calc = stillinger_weber_si()
    atoms.calc = AtomicEnergyCalculator(compiled)
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-10)
    assert np.abs(atoms.get_forces() - ref.get_forces()).max() < 1e-12
    assert atoms.calc.results["energies"].sum() == pytest.approx(ref.get_potential_energy(), abs=1e-10)


def test_starting_points_are_thermal_and_carry_provenance(starts):
    data = read_trajectory(starts)
    assert data["positions_ang"].shape == (2, 54, 3)
    kinetic = 0.5 * (data["masses_amu"][None, :, None] * data["velocities_ang_per_fs"] ** 2).sum(axis=(1, 2))
    from kappaflow.units import AMU_ANG2_PER_FS2_EV, K_BOLTZMANN_EV

    temperature = 2 * kinetic * AMU_ANG2_PER_FS2_EV / (3 * 54 * K_BOLTZMANN_EV)
    assert np.all((temperature > 150) & (temperature < 500)), temperature
    assert data["provenance"]["settings"]["temperature_k"] == 300.0 and data["provenance"]["test"]
    # no centre-of-mass drift in the NVE runs
    momentum = (data["masses_amu"][None, :, None] * data["velocities_ang_per_fs"]).sum(axis=1)
    assert np.abs(momentum).max() < 1e-10


def test_killed_trajectory_resumes_from_its_checkpoint(tmp_path, starts, compiled):
    whole = run_trajectory(starts, 1, compiled, SETTINGS, tmp_path / "whole.npz", {}, log=lambda *_: None)
    part = tmp_path / "part.npz"
    run_trajectory(starts, 1, compiled, SETTINGS, part, {}, log=lambda *_: None, stop_after_steps=40)
    first = read_trajectory(part)
    assert int(first["step"]) == 40 and not bool(first["complete"]) and first["flux_ev_ang_per_fs"].shape == (21, 3)
    lines = []
    run_trajectory(starts, 1, compiled, SETTINGS, part, {}, log=lines.append)
    assert any("resuming at step 40" in line for line in lines)
    a, b = read_trajectory(whole), read_trajectory(part)
    assert bool(b["complete"]) and a["flux_ev_ang_per_fs"].shape == (61, 3)
    np.testing.assert_allclose(b["flux_ev_ang_per_fs"], a["flux_ev_ang_per_fs"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(b["positions_ang"], a["positions_ang"], rtol=0, atol=1e-10)
    drift = np.abs(a["total_energy_ev"] - a["initial_total_energy_ev"]).max() / 54
    assert drift < 1e-3  # velocity Verlet at 2 fs conserves the energy
    with pytest.raises(KappaflowError, match="checkpoint of other settings"):
        run_trajectory(starts, 1, compiled, replace(SETTINGS, trajectory_steps=200), part, {}, log=lambda *_: None)


def test_exploding_md_and_a_small_cell_stop_with_the_reason(tmp_path, starts, compiled):
    tight = replace(SETTINGS, max_drift_ev_per_atom=1e-9)
    with pytest.raises(KappaflowError, match=r"drifted by .* eV/atom at step .*gk.max_drift_ev_per_atom"):
        run_trajectory(starts, 0, compiled, tight, tmp_path / "t.npz", {}, log=lambda *_: None)
    small = bulk("Si", "diamond", a=5.431).repeat(2)  # plane spacing 6.3 Å < 2 x 3.77 Å
    with pytest.raises(KappaflowError, match="too small for the potential.*6.27"):
        check_cell(compiled.model, small.cell.array)
