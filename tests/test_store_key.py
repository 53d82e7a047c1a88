"""The store key names the engine, its version and the pseudopotential files' contents; runs are checked
against it (kappaflow.engine, sow.engine_key; docs/provenance.md)."""
import json
import shutil

import pytest

from kappaflow import engine, plan, sow
from kappaflow.engine import EngineMismatchError
from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.qe.pwin import read_pw_input
from kappaflow.steps import run_sow, sow_settings
from kappaflow.structure import write_structure

from conftest import REPO

SI_UNIT = REPO / "config/systems/si/Si.scf.in"
SI_TEMPLATE = REPO / "config/systems/si/Si.sc.in"
REAL_PSEUDO = "/usr/share/espresso/pseudo/Si.pz-vbc.UPF"
SOW = {"supercell": [2, 2, 2], "strategy": "systematic", "amplitude_ang": 0.01, "pair_cutoff_ang": 2.5,
       "neighbour_shells": None, "n_random": 1, "random_seed": 0, "fc2_supercell": None,
       "subtract_residual_forces": True, "symprec": 1e-5}
MOCK = "kappaflow-mock-pw --model stillinger-weber-si"
needs_pwx = pytest.mark.skipif(shutil.which("pw.x") is None, reason="pw.x (Quantum ESPRESSO) not installed")


@pytest.fixture
def unitcell(tmp_path):
    path = tmp_path / "unitcell.json"
    write_structure(path, read_pw_input(SI_UNIT).atoms, "test")
    return path


def sow_keys_with(tmp_path, unitcell, dft_cfg, name):
    manifest = run_sow(unitcell, SI_TEMPLATE, SOW, dft_cfg, tmp_path / "store", tmp_path / f"{name}.json",
                       tmp_path / f"{name}.yaml")
    return [j["key"] for j in manifest["jobs"]]


def test_a_changed_pseudopotential_under_the_same_name_gets_new_keys(tmp_path, unitcell):
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    (pseudo / "Si.pz-vbc.UPF").write_text("<UPF version 1> first\n")
    cfg = {"pw_command": "pw.x", "pw_version": "6.7MaX", "pseudo_dir": str(pseudo)}
    first = sow_keys_with(tmp_path, unitcell, cfg, "a")
    (pseudo / "Si.pz-vbc.UPF").write_text("<UPF version 1> first\n")  # rewritten, same bytes
    assert sow_keys_with(tmp_path, unitcell, cfg, "b") == first
    (pseudo / "Si.pz-vbc.UPF").write_text("<UPF version 1> second\n")
    second = sow_keys_with(tmp_path, unitcell, cfg, "c")
    assert len(second) == len(first) and set(second).isdisjoint(first)
    ident = json.loads((tmp_path / "store" / second[0] / engine.IDENTITY_FILE).read_text())
    assert ident["version"] == "6.7MaX" and ident["pseudopotentials"]["Si"]["path"] == str(pseudo / "Si.pz-vbc.UPF")


def test_another_pw_x_version_gets_new_keys(tmp_path, unitcell):
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    (pseudo / "Si.pz-vbc.UPF").write_text("pp\n")
    cfg = {"pw_command": "srun pw.x -nk 2", "pw_version": "6.7MaX", "pseudo_dir": str(pseudo)}
    a = sow_keys_with(tmp_path, unitcell, cfg, "a")
    b = sow_keys_with(tmp_path, unitcell, dict(cfg, pw_command="mpirun -np 4 pw.x"), "b")
    assert a == b  # how pw.x is launched does not matter
    c = sow_keys_with(tmp_path, unitcell, dict(cfg, pw_version="7.2"), "c")
    assert set(a).isdisjoint(c)


def test_mock_keys_need_and_hold_no_pseudopotential(tmp_path, unitcell):
    """The mock reads no pseudopotential: a pseudo_dir that does not exist is fine, and the key names the
    mock's revision."""
    cfg = {"pw_command": MOCK, "pseudo_dir": "/nowhere"}
    keys = sow_keys_with(tmp_path, unitcell, cfg, "a")
    ident = json.loads((tmp_path / "store" / keys[0] / engine.IDENTITY_FILE).read_text())
    assert ident["pseudopotentials"] == {} and ident["version"].startswith("kappaflow-mock-pw ")
    assert ident["engine"] == "mock --model stillinger-weber-si"


def test_real_engine_without_its_pseudopotential_names_the_file(tmp_path, unitcell):
    cfg = {"pw_command": "pw.x", "pw_version": "6.7MaX", "pseudo_dir": "/nowhere"}
    with pytest.raises(InputFileError, match=r"Si.sc.in: pseudopotential for Si not found: /nowhere/Si.pz-vbc.UPF"):
        sow_keys_with(tmp_path, unitcell, cfg, "a")


def test_plan_sow_and_aimd_keys_are_the_same_function(tmp_path, unitcell):
    """kappaflow plan computes the keys the sow writes (same engine, same texts)."""
    from kappaflow.structure import read_structure

    cfg = {"pw_command": MOCK, "pseudo_dir": None}
    keys = sow_keys_with(tmp_path, unitcell, cfg, "a")
    eng = engine.engine_for(cfg)
    jobs, _ = plan.sow_keys(read_structure(unitcell), sow_settings(SOW), SI_TEMPLATE, eng, {})
    assert [k for _, k in jobs] == keys
    unkeyed, _ = plan.sow_keys(read_structure(unitcell), sow_settings(SOW), SI_TEMPLATE, None, {})
    assert len({k for _, k in unkeyed}) == len(set(keys)) and all(k.startswith(plan.UNKEYED) for _, k in unkeyed)
    text = (tmp_path / "store" / keys[0] / "pw.in").read_text()
    assert sow.engine_key(eng, text) == keys[0] == sow.store_input(tmp_path / "store", eng, text)


def test_version_of_the_mock_and_of_an_unknown_program():
    assert engine.detect_version(MOCK).startswith("kappaflow-mock-pw ")
    with pytest.raises(KappaflowError, match="dft.pw_version"):
        engine.detect_version("nonexistent-pw.x -nk 2")
    assert engine.version_command("env OMP_NUM_THREADS=8 srun --ntasks=4 pw.x -nk 2") == \
        ["env", "OMP_NUM_THREADS=8", "pw.x"]


@needs_pwx
def test_version_of_the_installed_pw_x():
    assert engine.detect_version("mpirun -np 2 pw.x -nk 2") == "6.7MaX"


# --- runs checked against their key -----------------------------------------------------------------
def stored_input(tmp_path, unitcell, dft_cfg):
    keys = sow_keys_with(tmp_path, unitcell, dft_cfg, "m")
    here = tmp_path / "store" / keys[0]
    return here, json.loads((here / engine.IDENTITY_FILE).read_text())


def test_a_run_by_another_version_than_the_key_claims_fails(tmp_path, unitcell):
    from kappaflow.dft import run_pw

    here, ident = stored_input(tmp_path, unitcell, {"pw_command": MOCK, "pw_version": "kappaflow-mock-pw 1"})
    with pytest.raises(EngineMismatchError, match="reports version 'kappaflow-mock-pw 2'.*'kappaflow-mock-pw 1'"):
        run_pw(here / "pw.in", here / "pw.out", MOCK, log=lambda _: None)
    record = json.loads((here / "failure.json").read_text())
    assert record["reason_code"] == "engine_mismatch" and not (here / "pw.out").exists()


def test_a_pseudopotential_changed_after_the_sow_stops_the_run(tmp_path, unitcell):
    from kappaflow.dft import run_pw

    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    (pseudo / "Si.pz-vbc.UPF").write_text("first\n")
    here, _ = stored_input(tmp_path, unitcell, {"pw_command": "pw.x", "pw_version": "6.7MaX", "pseudo_dir": str(pseudo)})
    (pseudo / "Si.pz-vbc.UPF").write_text("second\n")
    with pytest.raises(KappaflowError, match="pseudopotential Si .* changed since the sow keyed this input"):
        run_pw(here / "pw.in", here / "pw.out", "pw.x", log=lambda _: None)


@needs_pwx
def test_real_pw_x_run_is_checked_against_its_key(tmp_path, unitcell):
    """A real pw.x run passes (its header's version and the MD5 it prints for the pseudopotential match
    the key); the same output against an identity holding another MD5 fails."""
    from kappaflow.dft import run_pw
    from kappaflow.qe.pwout import read_pw_output

    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    shutil.copy(REAL_PSEUDO, pseudo)
    sow_small = dict(SOW, supercell=[1, 1, 1])
    manifest = run_sow(unitcell, SI_TEMPLATE, sow_small, {"pw_command": "pw.x", "pseudo_dir": str(pseudo)},
                       tmp_path / "store", tmp_path / "m.json", tmp_path / "m.yaml")
    here = tmp_path / "store" / manifest["jobs"][0]["key"]
    run_pw(here / "pw.in", here / "pw.out", "pw.x", log=lambda _: None)
    ident = json.loads((here / engine.IDENTITY_FILE).read_text())
    run = read_pw_output(here / "pw.out")
    assert run.engine_version == ident["version"] == "6.7MaX"
    assert run.pseudopotentials["Si"][1] == ident["pseudopotentials"]["Si"]["md5"]
    ident["pseudopotentials"]["Si"]["md5"] = "0" * 32
    with pytest.raises(EngineMismatchError, match="MD5"):
        engine.check_run(run, ident, here / "pw.in")
