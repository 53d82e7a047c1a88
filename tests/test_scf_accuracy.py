"""pw.x's 'Total SCF correction' against the force accuracy kappa needs (reap.max_scf_correction_ev_per_ang).

Real data: the demo's undisplaced Si supercell run by pw.x 6.7 at conv_thr 1d-10 and at 1d-12
(tests/data/si_sc_base_conv1e-1*); the reference force error is the difference of the two runs' forces.
"""
import math

import numpy as np
import pytest

from kappaflow import dft, steps
from kappaflow.errors import KappaflowError
from kappaflow.qe.pwout import read_pw_output
from kappaflow.structure import write_structure

from conftest import DATA, REPO

LOOSE = DATA / "si_sc_base_conv1e-10_qe6.7.out"
TIGHT = DATA / "si_sc_base_conv1e-12_qe6.7.out"
RY_PER_BOHR_EV_PER_ANG = 13.605693122994 / 0.529177210903  # CODATA 2018 (Ry in eV, Bohr in Å)
LIMIT = 1.0e-5  # the schema default, docs/noise.md


def test_estimate_is_the_printed_correction_per_component():
    """0.000017 Ry/au over 16 atoms: 17e-6 × 25.711 eV/Å / sqrt(48) = 63.1 µeV/Å per component."""
    assert "Total SCF correction =     0.000017" in LOOSE.read_text()
    expected = 17e-6 * RY_PER_BOHR_EV_PER_ANG / math.sqrt(48)
    assert dft.scf_force_error_ev_per_ang(LOOSE) == pytest.approx(expected, rel=1e-12)
    assert dft.scf_force_error_ev_per_ang(TIGHT) == pytest.approx(1e-6 * RY_PER_BOHR_EV_PER_ANG / math.sqrt(48))


def test_estimate_bounds_the_actual_scf_force_error():
    """The conv_thr 1d-10 forces differ from the 1d-12 ones by less than pw.x's estimate: the check is
    conservative (docs/robustness.md: 3-6 times, over four supercells)."""
    loose, tight = read_pw_output(LOOSE, 16), read_pw_output(TIGHT, 16)
    actual_rms = float(np.sqrt(np.mean((loose.forces_ev_per_ang - tight.forces_ev_per_ang) ** 2)))
    assert 1e-6 < actual_rms < dft.scf_force_error_ev_per_ang(LOOSE)


def _manifest(path):
    return {"jobs": [{"key": "k1", "role": "base", "index": 0, "n_atoms": 16, "output": str(path)}]}


def test_check_refuses_the_loose_run_and_passes_the_tight_one():
    with pytest.raises(KappaflowError) as exc:
        dft.check_scf_accuracy(_manifest(LOOSE), "/nowhere", LIMIT)
    text = str(exc.value)
    assert "1 of 1 pw.x runs" in text and "63.1" in text and str(LOOSE) in text and "conv_thr" in text
    dft.check_scf_accuracy(_manifest(TIGHT), "/nowhere", LIMIT)
    dft.check_scf_accuracy(_manifest(LOOSE), "/nowhere", None)  # null: no check
    dft.check_scf_accuracy(_manifest(LOOSE), "/nowhere", 1e-4)


def test_reap_refuses_a_run_with_a_large_scf_correction(tmp_path, monkeypatch):
    """The mock prints 'Total SCF correction = 0.00002' (Ry/au) for one displaced supercell: the reap
    lists that run and fits nothing; with the check off the same forces are fitted."""
    from kappaflow.qe.pwin import read_pw_input

    monkeypatch.chdir(tmp_path)
    sow_cfg = {"supercell": [2, 2, 2], "strategy": "systematic", "amplitude_ang": 0.01, "pair_cutoff_ang": 2.5,
               "neighbour_shells": None, "n_random": 1, "random_seed": 0, "fc2_supercell": None,
               "subtract_residual_forces": True, "symprec": 1e-5}
    mock = "kappaflow-mock-pw --model stillinger-weber-si"
    dft_cfg = {"pw_command": mock, "pseudo_dir": None, "keep_scratch": False}
    write_structure(tmp_path / "unit.json", read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms, "test")
    store = tmp_path / "dft"
    manifest = steps.run_sow(tmp_path / "unit.json", REPO / "config/systems/si/Si.sc.in", sow_cfg, dft_cfg,
                             store, tmp_path / "manifest.json", tmp_path / "disp.yaml")
    bad = next(j["key"] for j in manifest["jobs"] if j["role"] == "fc3")
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_SCF_CORRECTION", f"0.00002@{bad}")
    for key in sorted({j["key"] for j in manifest["jobs"]}):
        dft.run_pw(store / key / "pw.in", store / key / "pw.out", mock, log=lambda _: None)
    out = {"fc2": tmp_path / "fc/fc2.hdf5", "fc3": tmp_path / "fc/fc3.hdf5",
           "fc2_shengbte": tmp_path / "fc/FORCE_CONSTANTS_2ND", "fc3_shengbte": tmp_path / "fc/FORCE_CONSTANTS_3RD"}
    (tmp_path / "fc").mkdir()
    reap_cfg = {"fc_calculator": "traditional", "max_scf_correction_ev_per_ang": LIMIT}
    with pytest.raises(KappaflowError, match=rf"(?s)1 of {len({j['key'] for j in manifest['jobs']})} pw.x runs.*{bad}"):
        steps.run_reap(tmp_path / "manifest.json", tmp_path / "disp.yaml", store, reap_cfg, out)
    assert not out["fc3"].exists()
    steps.run_reap(tmp_path / "manifest.json", tmp_path / "disp.yaml", store,
                   dict(reap_cfg, max_scf_correction_ev_per_ang=None), out)
    assert out["fc3"].exists()
