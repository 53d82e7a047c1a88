"""The Leonardo profile against a real SLURM (Debian's slurmctld/slurmd/slurmdbd on this machine).

`snakemake --profile leonardo`, typed as a user types it in the repository root, runs the mock Si pipeline
(kappa and one committee member) on a single node that looks like a Leonardo Booster node.  What ran where
is read from the scheduler's own accounting records (sacct): partitions, tasks, CPUs and GPUs per rule, the
MPI step of every pw.x job, the state of a failing job; kappa is compared with a local run.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import WORKFLOW_FILES, copy_workflow, mock_invocations, run_snakemake
from kappaflow.bte import read_kappa_csv

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

MOCK = "kappaflow-mock-pw --model stillinger-weber-si"
SETTINGS = {
    "system": "si",
    "relax": {"enabled": False},
    # six rattled supercells (symfc): a short queue of pw.x jobs, the same kappa route as production
    "sow": {"strategy": "random", "n_random": 6, "amplitude_ang": 0.03, "pair_cutoff_ang": 3.0},
    "bte": {"mesh": [11, 11, 11], "temperatures": [200, 300, 600], "sigma_thz": 0.2},
    "ml": {"aimd": {"enabled": False}, "train": {"data": "disp", "epochs": 20, "committee_size": 1}},
    "modules": {"pwx": [], "tensorflow": []},  # no environment modules on the test node
}
# srun launches the mock on 4 ranks x 8 CPUs, as profiles/leonardo/kappaflow.yaml launches pw.x
SLURM_PW = f"env OMP_NUM_THREADS=8 srun --ntasks=4 --cpus-per-task=8 {MOCK}"
MODEL = "results/si/ml/models/disp-full/member0/model.npz"
POLL = ["--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "10"]


@pytest.fixture(scope="module")
def slurm():
    from slurm_cluster import Cluster, ClusterUnavailable

    try:
        c = Cluster().start()
    except ClusterUnavailable as exc:
        if os.environ.get("KAPPAFLOW_REQUIRE_SLURM"):
            raise
        pytest.skip(f"no test SLURM: {exc}")
    yield c
    c.stop()


def copy_checkout(dest: Path) -> Path:
    """A checkout of its own (package included: the jobs and the mock import it through PYTHONPATH)."""
    copy_workflow(dest, WORKFLOW_FILES + ("src",))
    os.symlink("profiles/leonardo", dest / "leonardo")
    return dest


def own_package(work: Path) -> dict:
    return {"PYTHONPATH": str(work / "src")}


def slurm_snakemake(work, *targets, env=None, timeout=1500):
    """Exactly the user's command, plus the test's polling interval; the test config comes last."""
    cmd = ["timeout", "-k", "10", str(timeout), "snakemake", "--profile", "leonardo", *POLL, *targets,
           "--configfile", "config/config.yaml", "profiles/leonardo/kappaflow.yaml", "test.yaml"]
    full_env = dict(os.environ, KAPPAFLOW_SLURM_ACCOUNT="kappaflow_ci", KAPPAFLOW_SLURM_QOS="normal",
                    **own_package(Path(work)), **(env or {}))
    return subprocess.run(cmd, cwd=work, env=full_env, capture_output=True, text=True)


def job_ids(slurm) -> set:
    return {r["JobID"] for r in slurm.sacct()}


def new_records(slurm, before: set, n_new: int) -> list[dict]:
    """sacct rows of the allocations that finished since ``before`` (waiting for at least ``n_new``),
    each with the rule taken from the plugin's --comment."""
    rows = [r for r in slurm.wait_for_accounting(len(before) + n_new) if r["JobID"] not in before]
    for r in rows:
        r["rule"] = r["Comment"].removeprefix("rule_").split("_wildcards_")[0]
    return rows


def steps_of(job_id):
    out = subprocess.run(["sacct", "-a", "-P", "-n", "-j", job_id, "--format=JobID,JobName,NTasks,AllocTRES"],
                         capture_output=True, text=True, check=True).stdout
    return [dict(zip(("JobID", "JobName", "NTasks", "AllocTRES"), line.split("|")))
            for line in out.splitlines() if line.strip()]


def tres(row):
    return dict(item.split("=", 1) for item in row["AllocTRES"].split(",") if "=" in item)


@pytest.fixture(scope="module")
def cluster_run(slurm, tmp_path_factory):
    work = copy_checkout(tmp_path_factory.mktemp("slurm_si"))
    (work / "test.yaml").write_text(yaml.safe_dump({**SETTINGS, "dft": {"pw_command": SLURM_PW}}))
    before = job_ids(slurm)
    log = work / "mock.log"
    proc = slurm_snakemake(work, "all", MODEL, env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    n_jobs = len(list((work / "results/si/dft").glob("*/pw.out")))
    return work, new_records(slurm, before, n_jobs + 4), proc


def test_dft_jobs_ran_on_the_gpu_partition_with_four_ranks_and_four_gpus(cluster_run):
    work, rows, _ = cluster_run
    dft = [r for r in rows if r["rule"] == "dft"]
    keys = {p.parent.name for p in (work / "results/si/dft").glob("*/pw.out")}
    assert len(dft) == len(keys) >= 6
    for r in dft:
        assert r["Partition"] == "boost_usr_prod" and r["State"] == "COMPLETED"
        assert r["Account"] == "kappaflow_ci" and r["QOS"] == "normal"
        t = tres(r)
        assert t["gres/gpu"] == "4" and t["cpu"] == "32" and t["node"] == "1", r
        # the pw.x launch is an srun step of 4 tasks inside the allocation
        mpi_steps = [s for s in steps_of(r["JobID"]) if s["NTasks"] == "4"]
        assert mpi_steps, steps_of(r["JobID"])
    # and the mock saw 4 MPI processes (only rank 0 writes, like pw.x)
    out = next((work / "results/si/dft").glob("*/pw.out")).read_text()
    assert "running on     4 processors" in out


def test_training_requested_one_gpu(cluster_run):
    _, rows, _ = cluster_run
    train = [r for r in rows if r["rule"] == "train"]
    assert len(train) == 1
    t = tres(train[0])
    assert train[0]["Partition"] == "boost_usr_prod" and t["gres/gpu"] == "1" and t["cpu"] == "8"


def test_light_work_was_grouped_on_the_serial_partition(cluster_run):
    _, rows, _ = cluster_run
    grouped = [r for r in rows if r["rule"].startswith(("light", "ml_prep", "prep"))]
    assert {r["rule"].split("_")[0] for r in grouped} >= {"light", "ml", "prep"}
    for r in grouped:
        assert r["Partition"] == "lrd_all_serial" and "gres/gpu" not in tres(r)
    # every non-pw.x submission: a handful, not one per file
    other = [r for r in rows if r["rule"] not in ("dft",)]
    assert len(other) <= 8, [r["rule"] for r in other]


def test_kappa_equals_the_local_run(cluster_run, tmp_path):
    work, _, _ = cluster_run
    local = copy_checkout(tmp_path)
    (local / "test.yaml").write_text(yaml.safe_dump({**SETTINGS, "dft": {"pw_command": MOCK}}))
    run_snakemake(local, "all", "--configfile", "test.yaml", env=own_package(local))
    on_cluster = read_kappa_csv(work / "results/si/bte/kappa.csv")
    at_home = read_kappa_csv(local / "results/si/bte/kappa.csv")
    np.testing.assert_array_equal(on_cluster.temperatures_k, at_home.temperatures_k)
    # same forces bit for bit; the BTE's OpenMP reductions ran on 8 threads there and 2 here
    np.testing.assert_allclose(on_cluster.kappa_w_per_mk, at_home.kappa_w_per_mk, rtol=1e-10, atol=1e-12)
    for a, b in zip(sorted((work / "results/si/dft").glob("*/pw.out")),
                    sorted((local / "results/si/dft").glob("*/pw.out"))):
        assert a.parent.name == b.parent.name  # launching through srun does not change the store keys


def test_failing_pwx_is_reported_and_the_rerun_completes_only_what_is_missing(cluster_run, slurm):
    """One more random supercell whose pw.x crashes: the run fails naming it, SLURM records the job FAILED,
    nothing downstream is submitted; the rerun submits only that pw.x job."""
    work, _, _ = cluster_run
    old_keys = {p.parent.name for p in (work / "results/si/dft").glob("*/pw.out")}
    settings = yaml.safe_load((work / "test.yaml").read_text())
    settings["sow"]["n_random"] += 1
    (work / "test.yaml").write_text(yaml.safe_dump(settings))
    before = job_ids(slurm)
    log = work / "mock_rerun.log"

    failed = slurm_snakemake(work, "all", env={"KAPPAFLOW_MOCK_PW_FAULT": f"crash@{work}/results/si/dft",
                                               "KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert failed.returncode != 0
    manifest = json.loads((work / "results/si/sow/manifest.json").read_text())
    new_keys = {j["key"] for j in manifest["jobs"]} - old_keys
    assert len(new_keys) == 1, new_keys  # the first six rattled supercells are the same as before
    victim = new_keys.pop()
    text = failed.stdout + failed.stderr
    assert "Error in rule dft" in text and victim in text
    rows = new_records(slurm, before, 3)
    dft_rows = [r for r in rows if r["Comment"].startswith("rule_dft")]
    assert {r["Comment"] for r in dft_rows} == {f"rule_dft_wildcards_{victim}"}
    assert len(dft_rows) == 2 and all(r["State"] == "FAILED" for r in dft_rows)  # the profile retries once
    assert not any(r["Comment"].startswith(("rule_reap", "rule_bte")) for r in rows)
    assert not (work / f"results/si/dft/{victim}/pw.out").exists()
    assert (work / f"results/si/dft/{victim}/pw.out.failed").exists()

    before = job_ids(slurm)
    ok = slurm_snakemake(work, "all", env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-4000:]
    rows = new_records(slurm, before, 3)
    dft_rows = [r for r in rows if r["Comment"].startswith("rule_dft")]
    assert [(r["Comment"], r["State"]) for r in dft_rows] == [(f"rule_dft_wildcards_{victim}", "COMPLETED")]
    assert any(r["Comment"] == "rule_bte" and r["State"] == "COMPLETED" for r in rows)
    # pw.x ran for the new supercell only: twice failing (run + retry), once in the rerun
    assert [entry[1] for entry in mock_invocations(log)] == [victim] * 3
    assert read_kappa_csv(work / "results/si/bte/kappa.csv").kappa_w_per_mk.shape[0] == 3
