"""End-to-end Snakemake runs with the mock pw.x (Stillinger–Weber Si, Morse GeS2)."""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow.bte import read_kappa_csv
from kappaflow.mock.potentials import stillinger_weber_si
from kappaflow.qe.pwin import read_pw_input

from conftest import copy_workflow, mock_invocations, run_snakemake

pytestmark = pytest.mark.slow

SI_SETTINGS = {
    "system": "si",
    "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
    "relax": {"enabled": False},
    "sow": {"pair_cutoff_ang": 3.0},
    # Gaussian smearing: the tetrahedron method makes kappa jump by ~3e-4 for 1e-13 changes of fc2
    # (docs/numerics.md), which would blur the comparison with the independent force constants
    "bte": {"mesh": [11, 11, 11], "temperatures": [200, 300, 600], "sigma_thz": 0.2},
}


def write_config(workdir, name, settings):
    path = Path(workdir) / name
    path.write_text(yaml.safe_dump(settings))
    return path.name


def keys(workdir, system="si"):
    manifest = json.loads((Path(workdir) / f"results/{system}/sow/manifest.json").read_text())
    return {j["key"] for j in manifest["jobs"]}, manifest


def executed_rules(proc):
    return re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", proc.stdout + proc.stderr, re.M)


@pytest.fixture(scope="module")
def si_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("si_mock")
    copy_workflow(work)
    cfg = write_config(work, "test.yaml", SI_SETTINGS)
    log = work / "mock1.log"
    run_snakemake(work, "--configfile", cfg, env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    return work, cfg


@pytest.fixture(scope="module")
def sw_reference(si_run, tmp_path_factory):
    """The independent route: kALDo's finite differences (0.001 Å) over the Stillinger–Weber
    calculator itself (no pw.x format, no sow, no reap; tests/_kaldo_fd.py), phono3py's pair-cutoff rule
    at 3.0 Å, in phonopy's supercell order."""
    from kappaflow.steps import load_phono3py

    from _kaldo_fd import kaldo_force_constants, pair_cutoff_fc3, to_phonopy_order
    from conftest import REPO

    work, _ = si_run
    ph3 = load_phono3py(work / "results/si/sow/phono3py_disp.yaml")
    unit = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms  # relax is off in SI_SETTINGS
    fd = kaldo_force_constants(unit, (2, 2, 2), stillinger_weber_si(), delta_ang=1e-3,
                               threshold_ang=SI_SETTINGS["sow"]["pair_cutoff_ang"],
                               folder=tmp_path_factory.mktemp("kaldo_fd"))
    fc2, fc3 = to_phonopy_order(fd, ph3)
    return ph3, fc2, pair_cutoff_fc3(fc3, ph3, SI_SETTINGS["sow"]["pair_cutoff_ang"])


def test_pipeline_force_constants_equal_kaldo_finite_differences(si_run, sw_reference):
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    work, _ = si_run
    _, fc2_ref, fc3_ref = sw_reference
    fc2 = read_fc2_from_hdf5(filename=str(work / "results/si/fc/fc2.hdf5"))
    fc3 = read_fc3_from_hdf5(filename=str(work / "results/si/fc/fc3.hdf5"))
    assert np.abs(fc2_ref).max() > 10 and np.abs(fc3_ref).max() > 20  # eV/Å², eV/Å³ of SW Si
    # the pipeline's 0.01 Å displacements (O(h²)) and pw.x's 8-decimal forces: measured 2.5e-4 eV/Å²
    # and 5.2e-3 eV/Å³ (of 27)
    print("max |fc2 - ref| eV/Å²:", np.abs(fc2 - fc2_ref).max(), " max |fc3 - ref| eV/Å³:",
          np.abs(fc3 - fc3_ref).max())
    assert np.abs(fc2 - fc2_ref).max() < 2e-3
    assert np.abs(fc3 - fc3_ref).max() < 2e-2


def test_pipeline_kappa_equals_kappa_of_the_independent_force_constants(si_run, sw_reference):
    """The same BTE (phono3py, anchored against kALDo in tests/test_kaldo.py) on both sets of force
    constants: what differs is everything between the potential and fc2/fc3 (pw.x-format outputs,
    parsing, atom mapping, phono3py's displacements and solver)."""
    from kappaflow.bte import run_phono3py, temperatures_from_config

    work, _ = si_run
    ph3_template, fc2_ref, fc3_ref = sw_reference
    from phono3py import Phono3py

    ph3 = Phono3py(ph3_template.unitcell, supercell_matrix=ph3_template.supercell_matrix,
                   primitive_matrix=ph3_template.primitive_matrix, log_level=0)
    ph3.fc2, ph3.fc3 = fc2_ref, fc3_ref
    bte = SI_SETTINGS["bte"]
    reference = run_phono3py(ph3, bte["mesh"], temperatures_from_config(bte["temperatures"]),
                             sigma_thz=bte["sigma_thz"]).kappa_w_per_mk[:, 0, 0]
    result = read_kappa_csv(work / "results/si/bte/kappa.csv")
    kxx = result.kappa_w_per_mk[:, 0, 0]
    print("kappa_xx pipeline", kxx, " independent force constants", reference)
    assert np.all(kxx > 100) and np.all(np.diff(kxx) < 0)
    # measured 2e-5 / 1.2e-4 / 2.4e-4 at 200 / 300 / 600 K (289.56 vs 289.60 W/mK at 300 K)
    assert np.allclose(kxx, reference, rtol=2e-3), (kxx, reference)


def test_force_constants_and_cost_table_written(si_run):
    work, _ = si_run
    fc = work / "results/si/fc"
    for name in ("fc2.hdf5", "fc3.hdf5", "FORCE_CONSTANTS_2ND", "FORCE_CONSTANTS_3RD"):
        assert (fc / name).stat().st_size > 0
    lines = (work / "results/si/dft/cost.csv").read_text().splitlines()
    unique, _ = keys(work)
    assert len(lines) == len(unique) + 1
    for name in ("kappa_linear.png", "kappa_log.png", "dispersion.png"):
        assert (work / "results/si/report" / name).read_bytes()[:4] == b"\x89PNG"


def test_bte_change_reruns_only_bte_and_what_reads_it(si_run):
    work, cfg = si_run
    settings = dict(SI_SETTINGS, bte=dict(SI_SETTINGS["bte"], mesh=[9, 9, 9]))
    cfg2 = write_config(work, "test_mesh.yaml", settings)
    log = work / "mock_mesh.log"
    proc = run_snakemake(work, "--configfile", cfg2, env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    # the κ figures and the mode analysis read the BTE; no pw.x, reap or gate job runs again
    assert sorted(set(executed_rules(proc)) - {"all"}) == ["analysis_route", "bte", "report"]
    assert mock_invocations(log) == []


def test_larger_cutoff_runs_only_new_supercells(si_run):
    work, _ = si_run
    old, _ = keys(work)
    settings = dict(SI_SETTINGS, sow={"pair_cutoff_ang": 4.0})
    cfg3 = write_config(work, "test_cutoff.yaml", settings)
    log = work / "mock_cutoff.log"
    run_snakemake(work, "--configfile", cfg3, env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    new, manifest = keys(work)
    assert old < new and manifest["n_displaced_fc3"] == 39  # facts.md: Si 2x2x2 at 4.0 Å
    ran = {row[1] for row in mock_invocations(log)}
    assert ran == new - old


def test_kill_during_dft_then_resume(workspace):
    cfg = write_config(workspace, "test.yaml", dict(SI_SETTINGS, bte={"mesh": [5, 5, 5], "temperatures": [300]}))
    log1, log2 = workspace / "mock1.log", workspace / "mock2.log"
    env = dict(os.environ, KAPPAFLOW_MOCK_PW_LOG=str(log1))
    proc = subprocess.Popen(["snakemake", "--cores", "2", "--configfile", cfg], cwd=workspace, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = workspace / "results/si/dft"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(store.glob("*/pw.out"))) < 6:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # a node crash: no clean-up at all
    proc.wait()
    finished = {p.parent.name for p in store.glob("*/pw.out")}
    all_keys, _ = keys(workspace)
    assert 6 <= len(finished) < len(all_keys)
    run_snakemake(workspace, "--unlock", "--configfile", cfg)
    run_snakemake(workspace, "--configfile", cfg, env={"KAPPAFLOW_MOCK_PW_LOG": str(log2)})
    rerun = {row[1] for row in mock_invocations(log2)}
    assert rerun == all_keys - finished
    assert (workspace / "results/si/bte/kappa.csv").exists()


@pytest.mark.parametrize("fault, reason", [
    ("truncate", "output truncated?"),
    ("no-convergence", "SCF did not converge"),
    ("wrong-natoms", "run has 17 atoms, expected 16"),
    ("nan-force", "force on atom 1 is nan"),
    ("no-forces", "no forces block"),
])
def test_broken_pw_output_stops_before_reap(workspace, fault, reason):
    cfg = write_config(workspace, "test.yaml", SI_SETTINGS)
    proc = run_snakemake(workspace, "--configfile", cfg, check=False,
                         env={"KAPPAFLOW_MOCK_PW_FAULT": fault})
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if "[kappaflow] ERROR:" in l]
    assert errors and reason in errors[0] and "pw.out.failed" in errors[0], proc.stderr[-3000:]
    assert not (workspace / "results/si/fc/fc3.hdf5").exists()
    assert not list((workspace / "results/si/dft").glob("*/pw.out"))


def test_ges2_dry_run_lists_one_dft_job_per_supercell(workspace):
    run_snakemake(workspace, "sow", "--configfile", "config/mock/ges2.yaml")
    unique, manifest = keys(workspace, "ges2")
    assert manifest["n_displaced_fc3"] == 278 and manifest["pair_cutoff_ang"] == pytest.approx(4.304, abs=1e-3)
    proc = run_snakemake(workspace, "--configfile", "config/mock/ges2.yaml", "-n")
    count = re.search(r"^dft\s+(\d+)$", proc.stdout, re.M)
    assert count and int(count.group(1)) == len(unique) == 276  # 275 distinct displaced + the base


def test_bad_config_fails_before_any_job(workspace):
    cfg = write_config(workspace, "bad.yaml", dict(SI_SETTINGS, sow={"supercel": [2, 2, 2]}))
    proc = run_snakemake(workspace, "--configfile", cfg, check=False)
    assert proc.returncode != 0
    assert "kappaflow: config (config/systems/si.yaml + user config): sow: unknown key(s)" in proc.stderr
    assert not (workspace / "results").exists()


def test_leonardo_profile_dry_run_shows_gpu_resources(workspace):
    run_snakemake(workspace, "sow", "--configfile", "config/mock/ges2.yaml")
    env = {"KAPPAFLOW_SLURM_ACCOUNT": "myproject", "KAPPAFLOW_SLURM_QOS": "normal"}
    proc = subprocess.run(["snakemake", "-n", "--profile", "profiles/leonardo", "--configfile",
                           "config/mock/ges2.yaml"], cwd=workspace, env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a job's block runs to the next job's time stamp line (no blank line between jobs without printshellcmds)
    blocks = re.findall(r"^rule dft:\n(.*?)(?=^\[|^\s*$|\Z)", proc.stdout, re.M | re.S)
    assert len(blocks) == 276
    for needle in ("slurm_partition=boost_usr_prod", "nodes=1", "tasks=4", "cpus_per_task=8", "gres=gpu:4",
                   "tasks_per_gpu=1",
                   "mpi=srun", "slurm_account=myproject"):
        assert all(needle in b for b in blocks), needle
