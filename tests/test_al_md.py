"""Committee-MD candidates of the active-learning pool (kappaflow.al.md_pool): the thermostat holds the
asked temperature on the mock's own Stillinger-Weber Si (an independent potential), a run-away trajectory
stops with its frames kept, and a round's committee writes pw.x inputs into the store that the parser
reads back at the MD positions."""
import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read as ase_read

from _ml_data import GES2_WIDE, SI_SMALL
from kappaflow.al import loop
from kappaflow.al.md_pool import committee_md_pool, md_family, run_trajectory, snapshot_steps
from kappaflow.al.settings import AlSettings
from kappaflow.errors import ConfigError, KappaflowError
from kappaflow.mock.potentials import stillinger_weber_si
from kappaflow.ml.model import save_model
from kappaflow.ml.steps import undisplaced_supercell
from kappaflow.qe.pwin import read_pw_input
from kappaflow.structure import write_structure
from test_ml_model import random_model

REPO = Path(__file__).resolve().parents[1]
MOCK = "kappaflow-mock-pw --model stillinger-weber-si"


def _si_supercell(tmp_path):
    import os

    from kappaflow import config as kfconfig

    here = os.getcwd()
    os.chdir(REPO)  # the shipped config's paths are relative to the repository
    try:
        cfg = kfconfig.load(REPO / "config/mock/si_al.yaml", check_files=False)
    finally:
        os.chdir(here)
    write_structure(tmp_path / "unit.json", read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms, "test")
    return cfg, undisplaced_supercell(tmp_path / "unit.json", cfg["sow"])


def test_snapshot_steps_and_bad_settings():
    s = AlSettings.from_config({"pool_temperatures_k": [300], "md_steps": 100, "md_equilibration_steps": 40,
                                "md_snapshots": 4})
    steps = snapshot_steps(s)
    assert steps == [41, 61, 80, 100]
    with pytest.raises(ConfigError, match="md_equilibration_steps"):
        AlSettings.from_config({"pool_temperatures_k": [300], "md_steps": 50, "md_equilibration_steps": 50})
    assert md_family(300) == "md:300K" and md_family(1200.0) == "md:1200K"


def test_langevin_holds_the_temperature_on_stillinger_weber_si(tmp_path):
    """Mean kinetic temperature after equilibration within 15 % of the target, and the mean potential
    energy above the minimum near equipartition's (3N − 3)/2 kT for a nearly harmonic crystal."""
    _, atoms = _si_supercell(tmp_path)
    calc = stillinger_weber_si()
    e0 = calc.get_potential_energy(atoms.copy())
    s = AlSettings.from_config({"pool_temperatures_k": [300], "md_steps": 1500, "md_equilibration_steps": 300,
                                "md_snapshots": 5, "md_timestep_fs": 2.0, "md_friction_per_fs": 0.02})
    energies = []
    record = run_trajectory(atoms, calc, 300.0, s, seed=3,
                            on_snapshot=lambda step, a: energies.append((step, a.get_potential_energy())))
    assert record["steps_done"] == 1500 and not record["stopped"]
    assert [e[0] for e in energies] == snapshot_steps(s)
    assert abs(record["mean_temperature_k"] / 300.0 - 1) < 0.15, record
    assert 0.02 < record["largest_displacement_ang"] < 0.4


def test_a_run_away_trajectory_stops_and_keeps_its_earlier_frames(tmp_path):
    _, atoms = _si_supercell(tmp_path)
    s = AlSettings.from_config({"pool_temperatures_k": [3000], "md_steps": 400, "md_equilibration_steps": 0,
                                "md_snapshots": 400, "md_max_displacement_ang": 0.1})
    kept = []
    record = run_trajectory(atoms, stillinger_weber_si(), 3000.0, s, seed=1,
                            on_snapshot=lambda step, a: kept.append(step))
    assert "md_max_displacement_ang" in record["stopped"], record
    assert record["steps_done"] < 400 and kept == list(range(1, record["steps_done"] + 1))


@pytest.fixture
def committee_dirs(tmp_path):
    dirs = []
    for seed in (1, 2):
        d = tmp_path / f"models/member{seed}"
        model = random_model(SI_SMALL, seed=seed)
        model.metadata = {"format": "kappaflow-nnp-1", "descriptor": SI_SMALL.to_dict(),
                          "architecture": {"network": model.network.to_dict()}, "energy_scale_ev": model.energy_scale}
        save_model(model, d)
        dirs.append(d)
    return dirs


def test_a_rounds_committee_writes_md_candidates_into_the_store(tmp_path, monkeypatch, committee_dirs):
    """Random-weight committee plus a Δ-learning baseline made of the Stillinger-Weber FC2 (finite
    differences of the mock's potential): the MD stays in the crystal, every snapshot's pw.x input reads
    back at the trajectory's positions, and the pool reader merges the MD pool with pool.json."""
    from kappaflow.al.baseline import Baseline

    monkeypatch.chdir(tmp_path)
    cfg, sc = _si_supercell(tmp_path)
    n = len(sc)
    calc = stillinger_weber_si()
    fc2 = np.zeros((n, n, 3, 3))
    h = 1e-4
    for j in range(n):
        for b in range(3):
            plus, minus = sc.copy(), sc.copy()
            plus.positions[j, b] += h
            minus.positions[j, b] -= h
            fc2[:, j, :, b] = -(calc.get_forces(plus) - calc.get_forces(minus)) / (2 * h)
    baseline = Baseline(sc.positions.copy(), np.asarray(sc.cell).copy(), fc2, None, "fc2")
    baseline.save(tmp_path / "baseline.npz")
    np.savez(tmp_path / "gvectors.npz", params=json.dumps(SI_SMALL.to_dict()))
    np.savez(tmp_path / "other.npz", params=json.dumps(GES2_WIDE.to_dict()))
    al = dict(cfg["ml"]["al"], pool_temperatures_k=[200, 400], md_steps=60, md_equilibration_steps=20,
              md_snapshots=3, md_max_displacement_ang=0.45)
    dft_cfg = dict(cfg["dft"], pw_command=MOCK, pseudo_dir=None)
    pool = committee_md_pool(1, committee_dirs, tmp_path / "gvectors.npz", tmp_path / "unit.json",
                             REPO / "config/systems/si/Si.sc.in", cfg["sow"], dft_cfg, al, tmp_path / "dft",
                             tmp_path / "round1/md/pool.json", tmp_path / "baseline.npz")
    families = sorted({c["family"] for c in pool["candidates"]})
    assert families == ["md:200K", "md:400K"]
    for rec in pool["trajectories"]:
        assert rec["n_snapshots"] == 3 and not rec["stopped"] and abs(rec["mean_temperature_k"] / rec["temperature_k"] - 1) < 0.5
        frames = ase_read(tmp_path / "round1/md" / rec["trajectory"], index=":") if rec["n_snapshots"] else []
        for frame in frames:
            pw = read_pw_input(tmp_path / "dft" / frame.info["key"] / "pw.in").atoms
            np.testing.assert_allclose(pw.positions, frame.positions, atol=1e-8)
            assert frame.info["sigma_max_ev_per_ang"] > 0
    assert sum(r["n_snapshots"] for r in pool["trajectories"]) == len(pool["candidates"]) > 0
    (tmp_path / "pool.json").write_text(json.dumps({"candidates": [{"key": "k0", "family": "random:0.01",
                                                                  "n_atoms": n, "amplitude_ang": 0.01}]}))
    merged = loop.read_pool([tmp_path / "pool.json", tmp_path / "round1/md/pool.json"])
    assert len(merged) == 1 + len(pool["candidates"]) and merged[0]["key"] == "k0"
    with pytest.raises(KappaflowError, match="G-vector"):
        committee_md_pool(1, committee_dirs, tmp_path / "other.npz", tmp_path / "unit.json",
                          REPO / "config/systems/si/Si.sc.in", cfg["sow"], dft_cfg, al, tmp_path / "dft",
                          tmp_path / "x/pool.json")
