"""The ML point of the noise study subtracts the model's *own* residual forces (issue 12, item 2).

reap subtracts the undisplaced supercell's forces from every displaced one.  When ML forces replace the
displaced supercells' forces, the undisplaced one must carry the ML forces too: a model's residual force
at equilibrium -- any force field common to every supercell -- then cancels exactly as the DFT residual
does.  With the DFT base kept, that field stays in every force set and shifts FC2/FC3.
"""
import numpy as np
import pytest
import yaml

from kappaflow import config as kfconfig
from kappaflow import noise, sow, steps
from kappaflow.bte import read_kappa_csv
from kappaflow.ml.forcesfile import write_forces
from kappaflow.qe.pwout import read_pw_output

from conftest import run_snakemake


def test_ml_replacement_covers_the_undisplaced_supercell():
    manifest = {"jobs": [{"key": "b", "role": "base", "index": 0}, {"key": "d0", "role": "fc3", "index": 0},
                         {"key": "d1", "role": "fc3", "index": 1}]}
    dft = {"base": {0: np.zeros((2, 3))}, "fc3": {0: np.ones((2, 3)), 1: 2 * np.ones((2, 3))}}
    ml = {"b": np.full((2, 3), 0.5), "d0": np.full((2, 3), 1.5), "d1": np.full((2, 3), 2.5)}
    out = noise.replaced_forces(dft, manifest, ml)
    assert np.array_equal(out["base"][0], ml["b"])
    assert np.array_equal(out["fc3"][1], ml["d1"])
    with pytest.raises(KeyError, match="b"):
        noise.replaced_forces(dft, manifest, {k: v for k, v in ml.items() if k != "b"})


@pytest.mark.slow
def test_a_common_residual_field_of_the_model_cancels_like_the_dft_residual(workspace, monkeypatch):
    cfg = {"system": "si", "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
           "relax": {"enabled": False}, "sow": {"pair_cutoff_ang": 3.0},
           "bte": {"mesh": [11, 11, 11], "temperatures": [300, 600], "sigma_thz": 0.2}}
    (workspace / "t.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(workspace, "--configfile", "t.yaml")
    r = workspace / "results/si"
    manifest = sow.read_manifest(r / "sow/manifest.json")
    n_atoms = manifest["jobs"][0]["n_atoms"]
    # a "model" that is exact up to one fixed, non-symmetric force field on every supercell (1 meV/Å),
    # e.g. the residual force of an imperfect fit at equilibrium; not translation-invariant either
    field = np.random.default_rng(7).normal(0.0, 1e-3, size=(n_atoms, 3))
    ml = {}
    for job in manifest["jobs"]:
        out = read_pw_output(r / "dft" / job["key"] / "pw.out", expected_n_atoms=n_atoms)
        ml[job["key"]] = out.forces_ev_per_ang + field
    write_forces(workspace / "ml_forces.dat", ml)
    monkeypatch.chdir(workspace)
    resolved = kfconfig.load("t.yaml")
    run = steps.run_noise_job(r / "sow/manifest.json", r / "sow/phono3py_disp.yaml", r / "dft",
                              resolved["reap"], resolved["bte"], None, 0.0, 0, workspace / "ml_kappa.csv",
                              ml_forces_path=workspace / "ml_forces.dat")
    dft = read_kappa_csv(r / "bte/kappa.csv").kappa_w_per_mk
    ml_kappa = read_kappa_csv(workspace / "ml_kappa.csv").kappa_w_per_mk
    # the field is the model's error on every force set, so the RMSE sees it ...
    assert run["rmse"] == pytest.approx(np.sqrt(np.mean(field**2)), rel=1e-6)
    # ... but it is common to the undisplaced supercell, so the force differences -- and kappa -- are exact
    np.testing.assert_allclose(ml_kappa, dft, rtol=1e-8, atol=1e-8)
