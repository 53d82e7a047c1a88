"""The ML route in the DAG (Si, mock Stillinger–Weber): AIMD → dataset → G-vectors → TFRecords →
committee → inference → injection → the DFT route's reap and BTE."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kappaflow import steps
from kappaflow.bte import read_kappa_csv
from kappaflow.ml import forcesfile
from kappaflow.ml import steps as mlsteps
from kappaflow.qe.pwout import read_pw_output

from conftest import copy_workflow, mock_invocations, run_snakemake

pytestmark = pytest.mark.slow

SETTINGS = {
    "system": "si",
    "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
    "relax": {"enabled": False},
    "sow": {"pair_cutoff_ang": 3.0},
    "bte": {"mesh": [11, 11, 11], "temperatures": [200, 300, 600], "sigma_thz": 0.2},
    "ml": {"aimd": {"steps": 240, "equilibration_steps": 40, "n_snapshots": 40},
           "train": {"epochs": 400, "committee_size": 3}},
}


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("si_ml")
    copy_workflow(work)
    (work / "ml.yaml").write_text(yaml.safe_dump(SETTINGS))
    run_snakemake(work, "all", "ml", "--configfile", "ml.yaml", timeout=3000)
    return work


def test_ml_route_produces_kappa_figures_and_a_summary(ml_run):
    ml = ml_run / "results/si/ml"
    summary = json.loads((ml / "disp_aimd-full/report/summary.json").read_text())
    for name in ("kappa_ml_vs_dft.png", "force_parity.png", "training_curves.png",
                 "committee_disagreement.png", "timing_dft_vs_ml.csv"):
        assert (ml / "disp_aimd-full/report" / name).stat().st_size > 0
    # the analysis of the ML route's BTE (in the ml target): the cumulative κ ends at the ML κ table's tr/3
    cumulative = pd.read_csv(ml / "disp_aimd-full/analysis/cumulative_kappa.csv")
    ml_kappa = read_kappa_csv(ml / "disp_aimd-full/bte/kappa.csv")
    i300 = int(np.argmin(abs(ml_kappa.temperatures_k - 300)))
    assert cumulative["cumulative_kappa_w_per_mk"].iloc[-1] == pytest.approx(
        np.trace(ml_kappa.kappa_w_per_mk[i300]) / 3, rel=1e-9)
    index = json.loads((ml / "dataset/index.json").read_text())
    assert index["counts"] == {"disp": 19, "aimd": 40}
    assert len(list((ml / "dataset/examples").glob("*.example"))) == 59
    dft = read_kappa_csv(ml_run / "results/si/bte/kappa.csv").kappa_w_per_mk[1, 0, 0]
    assert summary["kappa_xx_dft_300K"] == pytest.approx(dft, rel=1e-12)
    print("ML summary:", json.dumps(summary, indent=1))
    # acceptance: the 100 % displacements + AIMD model gives kappa_xx(300 K) within 10 % of DFT
    assert abs(summary["kappa_xx_ml_300K"] / dft - 1) < 0.10, summary


def test_dft_forces_injected_as_ml_forces_reproduce_the_dft_kappa_exactly(ml_run, tmp_path):
    R = ml_run / "results/si"
    keys = mlsteps.supercell_keys(R / "sow/manifest.json")
    dft_forces = {k: read_pw_output(R / "dft" / k / "pw.out", expected_n_atoms=n).forces_ev_per_ang
                  for k, n in keys.items()}
    forcesfile.write_forces(tmp_path / "forces.dat", dft_forces, dft_forces)
    mlsteps.inject(R / "sow/manifest.json", tmp_path / "forces.dat", R / "dft", tmp_path / "store", "ml")
    for k, n in keys.items():  # every supercell now carries an ML-injected output ...
        assert "kappaflow ML injection" in (tmp_path / "store" / k / "pw.out").read_text()
        # ... whose forces read back bit for bit as the DFT ones
        injected_forces = read_pw_output(tmp_path / "store" / k / "pw.out", expected_n_atoms=n).forces_ev_per_ang
        assert np.array_equal(injected_forces, dft_forces[k])
    cfg = yaml.safe_load((ml_run / "ml.yaml").read_text())
    from kappaflow import config

    resolved = config.resolve(dict(cfg, systems_dir=str(ml_run / "config/systems")), check_files=False)
    out = {name: tmp_path / "fc" / fname for name, fname in (
        ("fc2", "fc2.hdf5"), ("fc3", "fc3.hdf5"), ("fc2_shengbte", "FORCE_CONSTANTS_2ND"),
        ("fc3_shengbte", "FORCE_CONSTANTS_3RD"))}
    (tmp_path / "fc").mkdir()
    steps.run_reap(R / "sow/manifest.json", R / "sow/phono3py_disp.yaml", tmp_path / "store", resolved["reap"], out)
    steps.run_bte(R / "sow/phono3py_disp.yaml", out["fc2"], out["fc3"], resolved["bte"], tmp_path / "kappa.csv")
    injected = read_kappa_csv(tmp_path / "kappa.csv").kappa_w_per_mk
    dft = read_kappa_csv(R / "bte/kappa.csv").kappa_w_per_mk
    # same forces, same reap; the BTE's OpenMP reductions may sum in another order when the thread
    # count differs from the Snakemake job's, hence 1e-12 rather than bit equality for kappa
    np.testing.assert_allclose(injected, dft, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("damage,reason", [
    ("missing_atom", r"missing|atom"),
    ("nan", r"not finite|nan|NaN"),
    ("unknown_key", r"unknown|unexpected|0123456789abcdef0123"),
])
def test_bad_forces_file_stops_injection_naming_it(ml_run, tmp_path, damage, reason):
    R = ml_run / "results/si"
    good = (R / "ml/disp_aimd-full/infer/forces.dat").read_text().splitlines()
    if damage == "missing_atom":
        bad = good[:5] + good[6:]
    elif damage == "nan":
        fields = good[3].split()
        fields[2] = "nan"
        bad = good[:3] + [" ".join(fields)] + good[4:]
    else:
        bad = good + [line.replace(line.split()[0], "0123456789abcdef0123") for line in good[1:17]]
    path = tmp_path / "forces.dat"
    path.write_text("\n".join(bad) + "\n")
    from kappaflow.errors import KappaflowError

    with pytest.raises(KappaflowError, match=reason) as info:
        mlsteps.inject(R / "sow/manifest.json", path, R / "dft", tmp_path / "store", "ml")
    assert str(path) in str(info.value) or "0123456789abcdef0123" in str(info.value)
    assert not (tmp_path / "store").exists()


def test_rerunning_ml_runs_no_pw_x(ml_run):
    log = ml_run / "mock_rerun.log"
    run_snakemake(ml_run, "ml", "--configfile", "ml.yaml", env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert mock_invocations(log) == []


def test_noise_machinery_places_the_ml_model_on_the_curve(ml_run):
    """noise_ml_kappa: the committee's forces in place of noise give the ML route's kappa (up to the
    8-decimal print rounding of the injected pw.x outputs) and the model's force RMSE."""
    target = "results/si/noise/ml_disp_aimd-full/kappa.csv"
    run_snakemake(ml_run, target, "--configfile", "ml.yaml")
    via_noise = read_kappa_csv(ml_run / target).kappa_w_per_mk
    via_route = read_kappa_csv(ml_run / "results/si/ml/disp_aimd-full/bte/kappa.csv").kappa_w_per_mk
    np.testing.assert_allclose(via_noise, via_route, rtol=1e-3, atol=1e-9)
    meta = json.loads((ml_run / target).with_suffix(".json").read_text())
    table = forcesfile.read_forces(ml_run / "results/si/ml/disp_aimd-full/infer/forces.dat")
    manifest = json.loads((ml_run / "results/si/sow/manifest.json").read_text())
    displaced = [j["key"] for j in manifest["jobs"] if j["role"] == "fc3"]
    diff = np.concatenate([(table[k][0] - table[k][1]).ravel() for k in displaced])
    assert meta["force_rmse_ev_per_ang"] == pytest.approx(np.sqrt(np.mean(diff**2)), rel=1e-9)
