"""Stability gate: FC2 from the single-displacement supercells, imaginary modes stop the run before
the pair-displaced pw.x jobs (mock Stillinger–Weber Si; a 28 % stretched cell is dynamically unstable:
the nearest neighbours sit in the potential's soft tail, negative curvature)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow import config as kfconfig
from kappaflow import stability
from kappaflow.mock.potentials import stillinger_weber_si
from kappaflow.qe.pwin import read_pw_input
from kappaflow.structure import from_phonopy, to_phonopy

from conftest import REPO, mock_invocations, run_snakemake

STRETCH = 1.28  # celldm(1) 10.26 → 13.1328 bohr; 1.24 is still stable, 1.26 already not


def _workspace(tmp_path):
    for name in ("Snakefile", "workflow", "scripts", "config", "envs"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    return tmp_path


def _config(work, name, extra=None, stretched=False):
    settings = {"system": "si", "name": name,
                "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
                "relax": {"enabled": False}, "sow": {"pair_cutoff_ang": 3.0},
                "bte": {"mesh": [5, 5, 5], "temperatures": [300], "sigma_thz": 0.2},
                "stability": {"mesh": [8, 8, 8], "band_points": 41}}
    if stretched:
        text = (REPO / "config/systems/si/Si.scf.in").read_text()
        celldm = 10.26 * STRETCH
        (work / "Si_stretched.scf.in").write_text(text.replace("celldm(1) = 10.26", f"celldm(1) = {celldm!r}"))
        settings["unitcell"] = "Si_stretched.scf.in"
    for key, value in (extra or {}).items():
        settings[key] = dict(settings.get(key, {}), **value)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path.name


def _reference_phonopy(unitcell_path):
    """fc2 in process: phonopy's own displacements, forces from the SW calculator (no files)."""
    import phonopy

    unit = read_pw_input(unitcell_path).atoms
    ph = phonopy.Phonopy(to_phonopy(unit), supercell_matrix=np.diag([2, 2, 2]), primitive_matrix=np.eye(3))
    ph.generate_displacements(distance=0.01)
    calc = stillinger_weber_si()

    def forces(cell):
        atoms = from_phonopy(cell)
        atoms.calc = calc
        return atoms.get_forces()

    base = forces(ph.supercell)
    ph.forces = np.array([forces(c) - base for c in ph.supercells_with_displacements])
    ph.produce_force_constants()
    ph.symmetrize_force_constants()
    return ph


def test_config_defaults():
    cfg = kfconfig.validate({"system": "si", "name": "si", "unitcell": "x", "supercell_template": "y"})
    assert cfg["stability"] == {"enabled": True, "tolerance_thz": -0.05, "mesh": [20, 20, 20],
                                "band_points": 101, "override": False}


def test_gate_plan_splits_single_and_pair_displacements(tmp_path):
    from phono3py import Phono3py

    unit = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    ph3 = Phono3py(to_phonopy(unit), supercell_matrix=[2, 2, 2], primitive_matrix=np.eye(3))
    ph3.generate_displacements(distance=0.01, cutoff_pair_distance=4.0, is_plusminus="auto")
    ph3.save(str(tmp_path / "disp.yaml"))
    n_first = len(ph3.dataset["first_atoms"])
    cells = ph3.supercells_with_displacements
    jobs = [{"key": "base", "role": "base", "index": 0, "n_atoms": 16}]
    jobs += [{"key": f"k{i}", "role": "fc3", "index": i, "n_atoms": 16} for i, c in enumerate(cells) if c is not None]
    manifest = {"strategy": "systematic", "fc2_supercell_matrix": None, "jobs": jobs}
    assert stability.first_level_count(tmp_path / "disp.yaml") == n_first == 1
    plan = stability.gate_plan(manifest, n_first)
    assert plan["mode"] == "first_level"
    assert [j["key"] for j in plan["gate_jobs"]] == ["base", "k0"]
    # the gate's supercell moves one atom by the amplitude; every gated one is a second-level
    # (pair) displacement: phono3py lists those after the first level
    perfect = ph3.supercell.positions
    shift = np.linalg.norm(cells[0].positions - perfect, axis=1)
    assert (shift > 1e-9).sum() == 1 and shift.max() == pytest.approx(0.01, abs=1e-12)
    assert all(j["index"] >= n_first for j in jobs if j["key"] in plan["gated_keys"])
    assert plan["gated_keys"] == {j["key"] for j in jobs[2:]} and len(plan["gated_keys"]) == 39 - 1
    random_plan = stability.gate_plan(dict(manifest, strategy="random"), 0)
    assert random_plan["mode"] == "all" and random_plan["gated_keys"] == set()


@pytest.mark.slow
def test_stretched_si_stops_at_the_gate_and_override_passes(tmp_path):
    work = _workspace(tmp_path)
    cfg = _config(work, "si_stretched", stretched=True)
    log = work / "mock.log"
    proc = run_snakemake(work, "--configfile", cfg, env={"KAPPAFLOW_MOCK_PW_LOG": str(log)}, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"Error in rule stability_gate", out), out[-3000:]
    R = work / "results/si_stretched"
    manifest = json.loads((R / "sow/manifest.json").read_text())
    plan = stability.plan_from_files(R / "sow/manifest.json", R / "sow/phono3py_disp.yaml")
    ran = {row[1] for row in mock_invocations(log)}
    assert ran == {j["key"] for j in plan["gate_jobs"]} and len(ran) == 2  # base + the one single displacement
    all_keys = {j["key"] for j in manifest["jobs"]}
    assert plan["gated_keys"] == all_keys - ran and len(plan["gated_keys"]) > 0  # the rest all waited
    assert not (R / "stability/stability.json").exists()
    figure = R / "stability/dispersion.unstable.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((R / "stability/stability.unstable.json").read_text())
    assert summary["status"] == "unstable" and summary["passed"] is False
    message = (R / "logs/stability_gate.log").read_text()
    f_low = summary["lowest_frequency_thz"]
    q = summary["lowest_q_frac"]
    for piece in (f"{f_low:.4f} THz", "below the tolerance -0.05 THz", str(figure.relative_to(work)),
                  "stability.override: true", ", ".join(f"{x:.4f}" for x in q)):
        assert piece in message, (piece, message)
    # independent route: phonopy in process on the same stretched cell, at the reported q-point
    ph = _reference_phonopy(work / "Si_stretched.scf.in")
    ph.run_qpoints([q])
    ref = float(np.min(ph.qpoints.frequencies))
    assert ref < -1.0 and abs(ref - f_low) < 2e-3, (ref, f_low)  # pw.x prints forces to 1e-8 Ry/bohr

    cfg2 = _config(work, "si_stretched", {"stability": {"override": True}}, stretched=True)
    log2 = work / "mock2.log"
    run_snakemake(work, "results/si_stretched/fc/fc2.hdf5", "--configfile", cfg2,
                  env={"KAPPAFLOW_MOCK_PW_LOG": str(log2)})
    passed = json.loads((R / "stability/stability.json").read_text())
    assert passed["status"] == "unstable_overridden" and passed["passed"] and passed["override"]
    assert passed["lowest_frequency_thz"] == pytest.approx(f_low, abs=1e-9)
    assert not figure.exists() and (R / "stability/dispersion.png").read_bytes()[:4] == b"\x89PNG"
    assert {row[1] for row in mock_invocations(log2)} == plan["gated_keys"]  # the pair jobs, now, once


@pytest.mark.slow
def test_normal_si_passes_before_the_pair_jobs(tmp_path):
    import phonopy
    from phono3py.file_IO import read_fc2_from_hdf5

    work = _workspace(tmp_path)
    cfg = _config(work, "si_ok")
    log = work / "mock.log"
    run_snakemake(work, "results/si_ok/fc/fc2.hdf5", "--configfile", cfg, env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    R = work / "results/si_ok"
    summary = json.loads((R / "stability/stability.json").read_text())
    assert summary["status"] == "stable" and summary["passed"] and summary["lowest_frequency_thz"] > -0.05
    plan = stability.plan_from_files(R / "sow/manifest.json", R / "sow/phono3py_disp.yaml")
    # order: every pair-displaced pw.x run started after the gate had written its JSON
    calls = mock_invocations(log)
    t_gate = (R / "stability/stability.json").stat().st_mtime
    pair_starts = [float(row[0]) for row in calls if row[1] in plan["gated_keys"]]
    assert len(pair_starts) == len(plan["gated_keys"]) > 0 and min(pair_starts) >= t_gate
    # the gate's fc2 (phonopy, single displacements) against reap's fc2.hdf5 (phono3py's produce_fc3)
    unit = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    ph = phonopy.Phonopy(to_phonopy(unit), supercell_matrix=np.diag([2, 2, 2]), primitive_matrix=np.eye(3))
    ph.force_constants = read_fc2_from_hdf5(filename=str(R / "fc/fc2.hdf5"))
    ph.run_mesh([8, 8, 8], is_gamma_center=True)
    assert summary["mesh"]["highest_frequency_thz"] == pytest.approx(float(ph.mesh.frequencies.max()), rel=1e-6)
    assert summary["mesh"]["lowest_frequency_thz"] == pytest.approx(0.0, abs=1e-3)
    # and against the in-process reference (no files, no printing)
    ref = _reference_phonopy(REPO / "config/systems/si/Si.scf.in")
    ref.run_mesh([8, 8, 8], is_gamma_center=True)
    assert summary["mesh"]["highest_frequency_thz"] == pytest.approx(float(ref.mesh.frequencies.max()), rel=1e-4)
