"""Provenance: every κ table of the mock pipeline (bte, bte_ml, the noise study with and without ML
forces) gets kappa.provenance.json; its values are checked against the config and the files, hashes
recomputed here with hashlib, versions read from the packages, QE versions counted from the banners."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow import provenance

from conftest import REPO, copy_workflow, run_snakemake

pytestmark = pytest.mark.slow

MODEL = "disp-full"
SETTINGS = {
    "system": "si",
    "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
    "relax": {"enabled": False},
    "sow": {"pair_cutoff_ang": 3.0},
    "bte": {"mesh": [5, 5, 5], "temperatures": [200, 300], "sigma_thz": 0.2},
    "stability": {"mesh": [6, 6, 6], "band_points": 21},
    "ml": {"aimd": {"enabled": False},
           "train": {"data": "disp", "validation_fraction": 0.0, "epochs": 10, "committee_size": 2,
                     "hidden_layers": [8]}},
    "noise": {"amplitudes_ev_per_ang": [1.0e-3], "seeds": 1, "ml_models": [MODEL]},
}
TABLES = {
    "dft": "results/si/bte/kappa.csv",
    "ml": f"results/si/ml/{MODEL}/bte/kappa.csv",
    "noise0": "results/si/noise/a0_s0/kappa.csv",
    "noise": "results/si/noise/a1000_s0/kappa.csv",
    "noise_ml": f"results/si/noise/ml_{MODEL}/kappa.csv",
}


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("prov")
    copy_workflow(work)
    (work / "prov.yaml").write_text(yaml.safe_dump(SETTINGS))
    run_snakemake(work, *TABLES.values(), "--configfile", "prov.yaml", timeout=3000)
    records = {name: json.loads((work / path).with_name("kappa.provenance.json").read_text())
               for name, path in TABLES.items()}
    return work, records


def banner_versions(paths):
    counts = {}
    for path in paths:
        m = re.search(r"Program PWSCF v\.(\S+)", Path(path).read_text())
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def test_every_kappa_table_has_its_provenance(run):
    work, records = run
    for name, path in TABLES.items():
        rec = records[name]
        assert provenance.provenance_path(work / path) == (work / path).parent / "kappa.provenance.json"
        assert rec["schema"] == "kappaflow-provenance/1"
        assert rec["kappa_table"]["sha256"] == sha(work / path)
        assert rec["route"] == {"dft": "dft", "ml": "ml", "noise0": "noise", "noise": "noise",
                                "noise_ml": "noise_ml"}[name]


def test_code_versions(run):
    import phono3py
    import phonopy
    import spglib
    import symfc

    import kappaflow

    _, records = run
    R = run[0] / "results/si"
    manifest = json.loads((R / "sow/manifest.json").read_text())
    keys = {j["key"] for j in manifest["jobs"]}
    qe = banner_versions(R / "dft" / k / "pw.out" for k in keys)
    assert qe == {"6.7MaX": len(keys)}  # the mock speaks pw.x 6.7MaX's output format
    for name, rec in records.items():
        codes = rec["codes"]
        assert codes["kappaflow"] == kappaflow.__version__
        assert codes["phono3py"] == phono3py.__version__ and codes["phonopy"] == phonopy.__version__
        assert codes["spglib"] == spglib.__version__ and codes["symfc"] == symfc.__version__
        assert codes["numpy"] == np.__version__
        assert codes["quantum_espresso"] == qe
        assert codes["dft_engine"] == "mock --model stillinger-weber-si"
        assert ("tensorflow" in codes) == (name in ("ml", "noise_ml"))
    import tensorflow as tf

    assert records["ml"]["codes"]["tensorflow"] == tf.__version__
    ml_store = R / f"ml/{MODEL}/store"
    assert records["ml"]["codes"]["force_outputs"] == banner_versions(ml_store / k / "pw.out" for k in keys)


def test_parameters_match_the_config(run):
    work, records = run
    manifest = json.loads((work / "results/si/sow/manifest.json").read_text())
    for name, rec in records.items():
        p = rec["parameters"]
        assert p["bte"]["mesh"] == SETTINGS["bte"]["mesh"] and p["bte"]["method"] == "rta"
        assert p["bte"]["temperatures_k"] == [200.0, 300.0] and p["bte"]["isotopes"] is True
        assert p["bte"]["bz_integration"] == "Gaussian smearing" and p["bte"]["sigma_thz"] == 0.2
        assert p["sow"]["supercell_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
        assert p["sow"]["amplitude_ang"] == 0.01 and p["sow"]["pair_cutoff_ang"] == 3.0
        assert p["sow"]["n_displaced_fc3"] == manifest["n_displaced_fc3"]
        assert p["reap"]["fc_calculator"] == "traditional"
        template = (work / "config/systems/si/Si.sc.in").read_text()
        assert p["dft"]["ecutwfc_ry"] == float(re.search(r"ecutwfc = (\S+)", template).group(1))
        assert p["dft"]["k_points"].split() == ["K_POINTS", "automatic", "2", "2", "2", "0", "0", "0"]
    noise = json.loads((work / TABLES["noise"]).with_name("kappa.json").read_text())
    assert records["noise"]["parameters"]["noise"]["amplitude_ev_per_ang"] == noise["amplitude_ev_per_ang"] == 1e-3
    assert records["noise"]["parameters"]["noise"]["force_rmse_ev_per_ang"] == noise["force_rmse_ev_per_ang"]
    assert records["noise0"]["parameters"]["noise"]["amplitude_ev_per_ang"] == 0.0
    assert records["ml"]["ml"]["model"] == MODEL and records["ml"]["ml"]["inject_mode"] == "ml"


def test_force_set_counts(run):
    work, records = run
    R = work / "results/si"
    manifest = json.loads((R / "sow/manifest.json").read_text())
    keys = {j["key"] for j in manifest["jobs"]}
    displaced = {j["key"] for j in manifest["jobs"] if j["role"] == "fc3"}
    assert records["dft"]["force_sets"] == {"dft": len(keys), "ml": 0}
    assert records["noise"]["force_sets"] == {"dft": len(keys), "ml": 0}
    ml_banners = sum("Program PWSCF v.kappaflow-ml" in (R / f"ml/{MODEL}/store" / k / "pw.out").read_text()
                     for k in keys)
    assert records["ml"]["force_sets"] == {"dft": len(keys) - ml_banners, "ml": ml_banners}
    assert ml_banners >= len(displaced)
    assert records["noise_ml"]["force_sets"] == {"dft": len(keys) - len(displaced), "ml": len(displaced)}


def test_input_and_model_hashes(run):
    work, records = run
    R = work / "results/si"
    expected = {"manifest": R / "sow/manifest.json", "phono3py_disp_yaml": R / "sow/phono3py_disp.yaml",
                "unitcell": work / "config/systems/si/Si.scf.in",
                "supercell_template": work / "config/systems/si/Si.sc.in",
                "structure": R / "structure/unitcell.json"}
    fc = {"fc2": "fc2.hdf5", "fc3": "fc3.hdf5", "fc2_shengbte": "FORCE_CONSTANTS_2ND",
          "fc3_shengbte": "FORCE_CONSTANTS_3RD"}
    for name, rec in records.items():
        files = dict(expected)
        if name == "dft":
            files.update({k: R / "fc" / v for k, v in fc.items()})
        if name == "ml":
            files.update({k: R / f"ml/{MODEL}/fc" / v for k, v in fc.items()})
        for key, path in files.items():
            assert rec["inputs"][key]["sha256"] == sha(path), (name, key)
        if name.startswith("noise"):
            assert not set(fc) & set(rec["inputs"])  # in memory: no fc files to vouch for
        base_in = Path(work / rec["parameters"]["dft"]["input"]["path"])
        assert rec["parameters"]["dft"]["input"]["sha256"] == sha(base_in)
    for name in ("ml", "noise_ml"):
        models = sorted((R / f"ml/models/{MODEL}").glob("member*/model.npz"))
        assert len(models) == SETTINGS["ml"]["train"]["committee_size"]
        assert [(Path(m["path"]).name, m["sha256"]) for m in records[name]["models"]] == \
            [(m.name, sha(m)) for m in models]
    assert records["dft"]["models"] == [] and records["noise"]["models"] == []
    assert records["noise_ml"]["inputs"]["ml_forces"]["sha256"] == sha(R / f"ml/{MODEL}/infer/forces.dat")
