"""Convergence sweeps: smaller cutoffs reuse the largest cutoff's pw.x runs; verdicts; the Si mock sweep."""
import json
import re

import numpy as np
import pytest
import yaml

from kappaflow import config, plan, sweep
from kappaflow.engine import Engine
from kappaflow.qe.pwin import read_pw_input
from kappaflow.steps import sow_settings

from conftest import REPO, mock_invocations, run_snakemake


def keys_at(cfg, unit, supercell, cutoff):
    sow_cfg = sweep.point_sow_config(cfg["sow"], {"supercell": supercell, "cutoff": cutoff})
    jobs, _ = plan.sow_keys(unit, sow_settings(sow_cfg), cfg["supercell_template"], Engine("mock test", "test"), {})
    return {k for _, k in jobs}


@pytest.mark.parametrize("mock, supercell, cutoffs", [
    ("config/mock/si.yaml", [2, 2, 2], [3.0, 4.0, 5.0]),
    ("config/mock/ges2.yaml", [3, 3, 1], [-2, -3, -4]),
])
def test_smaller_cutoff_supercells_are_a_subset(monkeypatch, mock, supercell, cutoffs):
    """phono3py's pair displacements at one supercell and amplitude: the inputs of a smaller cutoff are
    inputs of every larger cutoff (same text, same store key)."""
    monkeypatch.chdir(REPO)
    cfg = config.load(mock)
    unit = read_pw_input(cfg["unitcell"]).atoms
    sets = [keys_at(cfg, unit, supercell, c) for c in cutoffs]
    assert sets[0] < sets[1] < sets[2]
    assert sweep.keys_are_nested([{"jobs": [{"key": k} for k in s]} for s in sets])


def test_points_axes_and_grid(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = config.load("config/mock/si.yaml", {"sweep": {"cutoffs_ang": [3.0, 4.0], "supercells": [[2, 2, 2], [3, 3, 3]],
                                                        "meshes": [[5, 5, 5], [7, 7, 7], [9, 9, 9]]}})
    forces, kappas = sweep.sweep_points(cfg)
    # reference: 4 Å, 3x3x3, 9x9x9; axes: 2 cutoffs + 2 supercells + 3 meshes - 2 repeats of the reference
    assert sorted(forces) == ["sc2x2x2_4A", "sc3x3x3_3A", "sc3x3x3_4A"]
    assert len(kappas) == 5
    assert kappas["sc3x3x3_4A/q9x9x9"]["axes"] == ["cutoff", "mesh", "supercell"]
    cfg["sweep"]["design"] = "grid"
    forces, kappas = sweep.sweep_points(cfg)
    assert len(forces) == 4 and len(kappas) == 2 * 2 * 3


def row(label, axis, cutoff, k):
    return {"label": label, "axes": axis, "pair_cutoff_ang": cutoff, "n_atoms_supercell": 16, "n_q": 1,
            "supercell": "2x2x2", "mesh": "q5x5x5", "kappa_xx": k, "kappa_yy": k, "kappa_zz": 2 * k}


def test_verdict_first_point_after_which_all_changes_stay_below_tolerance():
    rows = [row("a", "cutoff", 3.0, 100.0), row("b", "cutoff", 4.0, 110.0), row("c", "cutoff", 5.0, 111.0),
            row("d", "cutoff", 6.0, 111.5)]
    v = sweep.verdict(rows, "cutoff", 0.02)
    # changes |110-100|/110 = 9.1 %, 1/111 = 0.90 %, 0.5/111.5 = 0.45 %
    assert v["relative_changes"] == pytest.approx([10 / 110, 1 / 111, 0.5 / 111.5])
    assert v["converged"] and v["converged_at"] == "c" and v["value_w_per_mk"]["zz"] == 222.0
    rows[3]["kappa_xx"] = 120.0  # the last step jumps: not converged
    v = sweep.verdict(rows, "cutoff", 0.02)
    assert v["converged"] is False and "extend the cutoff list" in v["reason"]
    assert sweep.verdict(rows[:1], "cutoff", 0.02)["converged"] is None


def test_cutoff_warning_beyond_half_the_image_distance():
    si = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    assert sweep.cutoff_warning(si, [2, 2, 2], 3.0) is None
    w = sweep.cutoff_warning(si, [2, 2, 2], 5.0)
    assert "5.000 Å exceeds half the shortest image distance (3.839 Å)" in w
    assert sweep.cutoff_warning(si, [3, 3, 3], 5.0) is None


SI = {"system": "si", "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
      "relax": {"enabled": False}, "sow": {"pair_cutoff_ang": 3.0},
      "bte": {"mesh": [5, 5, 5], "temperatures": [300], "sigma_thz": 0.2},
      "sweep": {"cutoffs_ang": [3.0, 4.0, 5.0]}}


def in_process_kappa_xx(cutoff, mesh):
    """phono3py driven in-process by the mock's Stillinger-Weber calculator, forces rounded as pw.x
    prints them: no store, no files."""
    from phono3py import Phono3py

    from kappaflow import units
    from kappaflow.mock.potentials import stillinger_weber_si
    from kappaflow.structure import from_phonopy, to_phonopy

    unit = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    ph3 = Phono3py(to_phonopy(unit), supercell_matrix=[2, 2, 2], primitive_matrix=np.eye(3))
    ph3.generate_displacements(distance=0.01, cutoff_pair_distance=cutoff, is_plusminus="auto")
    calc = stillinger_weber_si()

    def forces(cell):
        atoms = from_phonopy(cell)
        atoms.calc = calc
        f = atoms.get_forces()
        return units.ry_per_bohr_to_ev_per_ang(np.round(units.ev_per_ang_to_ry_per_bohr(f), 8))

    base = forces(ph3.supercell)
    ph3.forces = np.array([forces(c) - base if c is not None else np.zeros_like(base)
                           for c in ph3.supercells_with_displacements])
    ph3.produce_fc3(is_compact_fc=False)
    ph3.symmetrize_fc3()
    ph3.symmetrize_fc2()
    ph3.sigmas = [0.2]
    ph3.mesh_numbers = mesh
    ph3.init_phph_interaction()
    ph3.run_thermal_conductivity(temperatures=[300.0], is_isotope=True)
    return float(np.asarray(ph3.thermal_conductivity.kappa)[0, 0, 0])


@pytest.mark.slow
def test_si_cutoff_sweep_runs_pw_only_for_the_largest_cutoff(workspace):
    (workspace / "sweep.yaml").write_text(yaml.safe_dump(SI))
    log = workspace / "mock.log"
    proc = run_snakemake(workspace, "sweep", "--configfile", "sweep.yaml", env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    sw = workspace / "results/si/sweep"
    keys = {c: {j["key"] for j in json.loads((sw / f"sc2x2x2_{c}A/manifest.json").read_text())["jobs"]}
            for c in (3, 4, 5)}
    assert keys[3] < keys[4] < keys[5]
    ran = [r[1] for r in mock_invocations(log)]
    assert len(ran) == len(set(ran)) == len(keys[5])  # one pw.x run per unique 5 Å key, nothing else
    assert set(ran) == keys[5]
    finished = re.findall(r"Finished jobid: \d+ \(Rule: dft\)", proc.stdout + proc.stderr)
    assert len(finished) == len(keys[5])
    summary = json.loads((sw / "sweep_summary.json").read_text())
    assert summary["n_pw_runs_unique"] == len(keys[5])
    assert summary["n_pw_runs_if_not_shared"] == sum(len(k) for k in keys.values())
    assert any("5.000 Å exceeds half the shortest image distance" in w for w in summary["warnings"])
    assert summary["verdicts"]["cutoff"]["n_points"] == 3
    assert (sw / "sweep_kappa.png").read_bytes()[:4] == b"\x89PNG"
    table = (sw / "sweep_kappa.csv").read_text().splitlines()
    assert len(table) == 4 and table[0].startswith("label,axes")
    # κ of the smallest cutoff, from forces the 5 Å set computed, equals phono3py in-process at 3 Å
    k3 = json.loads((sw / "sc2x2x2_3A/q5x5x5/kappa.json").read_text())["kappa_w_per_mk"]["xx"]
    assert k3 == pytest.approx(in_process_kappa_xx(3.0, [5, 5, 5]), rel=1e-6)
    # every sweep kappa table has its provenance, pointing at its own manifest and table
    import hashlib

    for c in (3, 4, 5):
        table = sw / f"sc2x2x2_{c}A/q5x5x5/kappa.csv"
        prov = json.loads(table.with_name("kappa.provenance.json").read_text())
        assert prov["route"] == "sweep" and prov["parameters"]["bte"]["temperatures_k"] == [300.0]
        assert prov["kappa_table"]["sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
        assert prov["force_sets"]["dft"] == len(keys[c])
    # a second call reruns nothing
    log2 = workspace / "mock2.log"
    proc = run_snakemake(workspace, "sweep", "--configfile", "sweep.yaml", env={"KAPPAFLOW_MOCK_PW_LOG": str(log2)})
    assert mock_invocations(log2) == [] and "Nothing to be done" in proc.stdout + proc.stderr
