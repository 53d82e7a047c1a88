"""SCF rescue: a pw.x run stopping with 'convergence NOT achieved' is retried once; what still fails is
recorded (failure.json) and listed together (kappaflow failures, the Snakemake onerror handler)."""
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow import cli, dft, steps, units
from kappaflow.errors import PwOutputError
from kappaflow.mock.potentials import stillinger_weber_si
from kappaflow.qe.pwin import read_pw_input
from kappaflow.qe.pwout import ScfNotConvergedError, read_pw_output

from conftest import DATA, REPO, run_snakemake

REAL_OUT = DATA / "si_scf_not_converged_qe6.7.out"  # pw.x 6.7 (Debian), electron_maxstep = 3
REAL_IN = DATA / "si_scf_not_converged.in"
MOCK = "kappaflow-mock-pw --model stillinger-weber-si"
KEY = "0123456789abcdef0123"


def dft_cfg(**rescue):
    return {"pw_command": MOCK, "keep_scratch": False, "scf_rescue": dict(
        {"enabled": True, "mixing_beta_factor": 0.5, "mixing_beta": None, "electron_maxstep": 300,
         "restart_from_charge_density": True}, **rescue)}


@pytest.fixture
def store(tmp_path):
    """results/si/dft/<key>/pw.in (the Si primitive cell) and a manifest naming it fc3 supercell 4."""
    results = tmp_path / "results" / "si"
    (results / "dft" / KEY).mkdir(parents=True)
    shutil.copy(REPO / "config/systems/si/Si.scf.in", results / "dft" / KEY / "pw.in")
    (results / "sow").mkdir()
    (results / "sow" / "manifest.json").write_text(json.dumps(
        {"jobs": [{"key": KEY, "role": "fc3", "index": 4, "n_atoms": 2}]}))
    return results


# --- the parser reads pw.x's own text --------------------------------------------------------------
def test_parser_recognises_real_pwx_non_convergence():
    text = REAL_OUT.read_text()
    assert "JOB DONE." in text and "PWSCF        :" in text  # pw.x finishes normally, exit code 2
    line = 1 + next(i for i, l in enumerate(text.splitlines()) if "convergence NOT achieved" in l)
    with pytest.raises(ScfNotConvergedError) as exc:
        read_pw_output(REAL_OUT, expected_n_atoms=2)
    assert isinstance(exc.value, PwOutputError)
    assert exc.value.line == line and exc.value.iterations == 3
    assert str(exc.value) == (f"{REAL_OUT}:{line}: SCF did not converge "
                              "('convergence NOT achieved after 3 iterations')")


def test_mock_prints_the_layout_of_real_pwx(tmp_path, monkeypatch):
    """The mock's non-converged output has pw.x's markers in pw.x's order, and parses to the same error."""
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA", "0.5")
    proc = subprocess.run(MOCK.split() + ["-in", str(REAL_IN)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2  # run_pwscf: exit_status 2 = scf convergence error, as real pw.x
    (tmp_path / "mock.out").write_text(proc.stdout)
    markers = re.compile(r"^\s*(iteration #\s*\d+|End of self-consistent calculation|convergence NOT achieved "
                         r"after\s+\d+ iterations: stopping|JOB DONE\.|Initial potential from superposition)")

    def sequence(text):
        return [re.sub(r"\s+", " ", m.group(1)) for l in text.splitlines() if (m := markers.match(l))]

    assert sequence(proc.stdout) == sequence(REAL_OUT.read_text())
    with pytest.raises(ScfNotConvergedError) as exc:
        read_pw_output(tmp_path / "mock.out", expected_n_atoms=2)
    assert exc.value.iterations == 3  # the input's electron_maxstep
    assert (tmp_path / "tmp/si.save/charge-density.dat").is_file()  # like pw.x's punch('config')


# --- rescue through steps.run_dft with the mock ---------------------------------------------------
def test_non_converging_scf_is_rescued(store, monkeypatch):
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA", "0.5")  # the input's 0.7 fails, 0.35 converges
    here = store / "dft" / KEY
    original = (here / "pw.in").read_text()
    steps.run_dft(here / "pw.in", here / "pw.out", dft_cfg())
    assert (here / "pw.in").read_text() == original  # the store key's text is never touched
    rescue = read_pw_input(here / "pw.rescue.in")
    assert rescue.get("electrons", "mixing_beta") == pytest.approx(0.35)
    assert rescue.get("electrons", "electron_maxstep") == 300
    assert rescue.get("electrons", "startingpot") == "file"
    assert rescue.get("electrons", "conv_thr") == pytest.approx(1e-10)  # everything else as in pw.in
    assert np.allclose(rescue.atoms.positions, read_pw_input(here / "pw.in").atoms.positions, atol=1e-12)
    text = (here / "pw.out").read_text()
    assert "The initial density is read from file :" in text  # restarted from the failed run's density
    run = read_pw_output(here / "pw.out", expected_n_atoms=2)
    atoms = read_pw_input(here / "pw.in").atoms
    atoms.calc = stillinger_weber_si()
    half_last_digit = float(units.ry_per_bohr_to_ev_per_ang(0.5e-8))
    assert np.abs(run.forces_ev_per_ang - atoms.get_forces()).max() <= half_last_digit * 1.001
    record = json.loads((here / "rescue.json").read_text())
    assert record["changes"]["electrons.mixing_beta"] == [0.7, 0.35]
    assert record["first_attempt"]["reason"].startswith("SCF did not converge ('convergence NOT achieved "
                                                         "after 100 iterations')")
    assert "convergence NOT achieved" in (here / "pw.out.unconverged").read_text()
    assert not (here / "failure.json").exists() and not (here / "pw.out.failed").exists()
    assert not (here / "work").exists()
    assert dft.collect_failures(store) == []


def test_fixed_mixing_beta_and_no_restart(store, monkeypatch):
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA", "0.2")
    here = store / "dft" / KEY
    steps.run_dft(here / "pw.in", here / "pw.out",
                  dft_cfg(mixing_beta=0.1, electron_maxstep=50, restart_from_charge_density=False))
    rescue = read_pw_input(here / "pw.rescue.in")
    assert rescue.get("electrons", "mixing_beta") == pytest.approx(0.1)
    assert rescue.get("electrons", "electron_maxstep") == 100  # never fewer than the input's (pw.x default)
    assert rescue.get("electrons", "startingpot") is None
    assert "Initial potential from superposition of free atoms" in (here / "pw.out").read_text()


def test_still_failing_run_is_recorded_and_listed(store, monkeypatch, capsys):
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA", "0.1")  # 0.35 still fails
    here = store / "dft" / KEY
    with pytest.raises(ScfNotConvergedError) as exc:
        steps.run_dft(here / "pw.in", here / "pw.out", dft_cfg())
    failed = here / "pw.out.failed"
    message = str(exc.value)
    assert message.startswith(f"{failed}:") and "SCF did not converge" in message
    assert "after the SCF rescue (mixing_beta 0.7 -> 0.35" in message
    assert not (here / "pw.out").exists()
    record = json.loads((here / "failure.json").read_text())
    line = 1 + next(i for i, l in enumerate(failed.read_text().splitlines()) if "convergence NOT achieved" in l)
    assert record["key"] == KEY and record["reason_code"] == "scf_not_converged"
    assert record["line"] == line and record["log"] == str(failed) and record["rescue_attempted"] is True
    assert [a["input"] for a in record["attempts"]] == [str(here / "pw.in"), str(here / "pw.rescue.in")]
    assert "after 300 iterations" in record["attempts"][1]["reason"]
    assert (here / "work" / "stderr.txt").exists()  # scratch kept for inspection

    assert cli.main(["failures", str(store)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 failed pw.x run(s) (1 after an SCF rescue):"
    assert out[1].split()[:4] == ["key", "role", "index", "reason"]
    row = out[2]
    assert row.split()[:3] == [KEY, "fc3", "4"] and row.endswith(str(failed))
    assert "convergence NOT achieved after 300 iterations" in row and "[after the SCF rescue]" in row
    assert cli.main(["failures", str(store), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["key"], r["role"], r["index"]) for r in rows] == [(KEY, "fc3", "4")]

    # a later run that succeeds clears the record
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA", "0.5")
    steps.run_dft(here / "pw.in", here / "pw.out", dft_cfg())
    assert not (here / "failure.json").exists() and dft.collect_failures(store) == []


def test_rescue_disabled_and_other_failures_are_not_retried(store, monkeypatch):
    here = store / "dft" / KEY
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA", "0.5")
    with pytest.raises(ScfNotConvergedError):
        steps.run_dft(here / "pw.in", here / "pw.out", dft_cfg(enabled=False))
    assert not (here / "pw.rescue.in").exists()
    assert json.loads((here / "failure.json").read_text())["rescue_attempted"] is False
    monkeypatch.delenv("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA")
    monkeypatch.setenv("KAPPAFLOW_MOCK_PW_FAULT", "nan-force")
    with pytest.raises(PwOutputError, match="force on atom 1 is nan") as exc:
        steps.run_dft(here / "pw.in", here / "pw.out", dft_cfg())
    assert not isinstance(exc.value, ScfNotConvergedError)
    assert not (here / "pw.rescue.in").exists()
    record = json.loads((here / "failure.json").read_text())
    assert record["reason_code"] == "pw_output_error" and "nan" in record["reason"]
    assert len(record["attempts"]) == 1


@pytest.mark.pwx
@pytest.mark.skipif(shutil.which("pw.x") is None, reason="needs pw.x")
def test_real_pwx_rescue_restarts_from_its_charge_density(tmp_path):
    """Real pw.x, electron_maxstep 3: stops unconverged (exit 2), then converges from pw.rescue.in."""
    here = tmp_path / "dft" / KEY
    here.mkdir(parents=True)
    shutil.copy(REAL_IN, here / "pw.in")
    dft.run_pw(here / "pw.in", here / "pw.out", "pw.x", rescue=dft.ScfRescue(), log=lambda m: None)
    assert "convergence NOT achieved after   3 iterations" in (here / "pw.out.unconverged").read_text()
    text = (here / "pw.out").read_text()
    assert "The initial density is read from file :" in text and "convergence has been achieved" in text
    rescue = read_pw_input(here / "pw.rescue.in")
    assert rescue.get("electrons", "startingpot") == "file"
    assert rescue.get("electrons", "electron_maxstep") == 300
    assert read_pw_output(here / "pw.out", expected_n_atoms=2).forces_ev_per_ang.shape == (2, 3)


# --- through Snakemake -----------------------------------------------------------------------------
@pytest.mark.slow
def test_snakemake_rescues_lists_failures_and_does_not_reap(workspace):
    settings = {"system": "si", "dft": {"pw_command": MOCK}, "relax": {"enabled": False},
                "sow": {"pair_cutoff_ang": 3.0}}
    (workspace / "t.yaml").write_text(yaml.safe_dump(settings))
    run_snakemake(workspace, "results/si/sow/manifest.json", "--configfile", "t.yaml")
    manifest = json.loads((workspace / "results/si/sow/manifest.json").read_text())
    job = [j for j in manifest["jobs"] if j["role"] == "fc3"][-1]  # a pair displacement
    key = job["key"]
    env = {"KAPPAFLOW_MOCK_PW_SCF_MAX_BETA": f"0.5,0.1@{key}"}  # all need rescue; one fails even then
    proc = run_snakemake(workspace, "results/si/fc/fc3.hdf5", "--keep-going", "--configfile", "t.yaml",
                         env=env, check=False)
    assert proc.returncode != 0
    store = workspace / "results/si/dft"
    assert not (workspace / "results/si/fc/fc3.hdf5").exists()  # the reap did not run
    assert not (store / key / "pw.out").exists() and (store / key / "failure.json").exists()
    done = [k for k in {j["key"] for j in manifest["jobs"]} - {key} if (store / k / "pw.out").exists()]
    assert len(done) >= 10, proc.stderr[-3000:]  # --keep-going: the others ran (all rescued)
    assert all((store / k / "pw.rescue.in").exists() and (store / k / "rescue.json").exists() for k in done)
    table = proc.stderr[proc.stderr.index("kappaflow: 1 failed pw.x run(s)"):]
    row = next(l for l in table.splitlines() if l.startswith(key))
    assert row.split()[1:3] == ["fc3", str(job["index"])] and row.endswith("pw.out.failed")
    cli_out = subprocess.run(["kappaflow", "failures", "results/si"], cwd=workspace, capture_output=True,
                             text=True, check=True).stdout
    assert key in cli_out and "convergence NOT achieved after 300 iterations" in cli_out

    # changing the rescue settings never reruns finished pw.x jobs
    settings["dft"]["scf_rescue"] = {"mixing_beta_factor": 0.3}
    (workspace / "t2.yaml").write_text(yaml.safe_dump(settings))
    dry = run_snakemake(workspace, "results/si/fc/fc3.hdf5", "-n", "--configfile", "t2.yaml")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, re.M))
    assert counts.get("dft") == "1"  # only the failed one

    # with the rescue reaching its beta, the failed supercell is rescued and the reap runs
    run_snakemake(workspace, "results/si/fc/fc3.hdf5", "--configfile", "t2.yaml",
                  env={"KAPPAFLOW_MOCK_PW_SCF_MAX_BETA": "0.5"})
    assert (workspace / "results/si/fc/fc3.hdf5").exists()
    assert read_pw_input(store / key / "pw.rescue.in").get("electrons", "mixing_beta") == pytest.approx(0.21)
    assert not (store / key / "failure.json").exists()
