"""The Leonardo profile against a real SLURM (Debian's slurmctld/slurmd/slurmdbd on this machine).

`snakemake --profile leonardo --configfile config/mock/si.yaml`, typed as a user types it in the repository
root, runs the SHIPPED mock Si config as it is: a mock vc-relax on the Booster partition, the sow, every
pw.x job, the stability gate, reap, bte, report.  What ran where is read from the scheduler's own
accounting records (sacct): partitions, tasks, CPUs and GPUs per rule, the MPI step of every pw.x job, the
state of a failing job; kappa is compared with a local run of the same command with the local profile.

What the test changes relative to the user's command, and why:
- `--slurm-init-seconds-before-status-checks 2 --latency-wait 10` (POLL): the profile waits 40 s before its
  first status check and 60 s for a shared file system; here everything is on one local disk.
- PYTHONPATH: the jobs import the checkout's own package (a user's jobs import the installed one).
- PATH starts with a stand-in `module` command: the test node has no environment modules; the stand-in
  records what the profile's `--sdm env-modules` loads (Leonardo's names, the config's defaults).
- KAPPAFLOW_MOCK_PW_LOG (and, in the failure test, KAPPAFLOW_MOCK_PW_FAULT): the mock's test hooks.
- The ML run adds `ml_test.yaml` after the shipped config: one committee member, 20 epochs, displacement
  data only, so that training takes a minute; nothing of the DFT route depends on `ml:`.
- The active-learning run (`snakemake al --profile leonardo --configfile config/mock/si_al.yaml`, the shipped
  AL config, in the same folder after the DFT route) adds `al_test.yaml`: two members, 20 epochs, a pool of
  small random displacements only (the sow's supercells are all in the store by then and would cost no
  pw.x job) and the seed round only (`max_rounds: 0`: the round's pw.x, training, inference and κ jobs, then
  the final κ; a second round repeats the same jobs and took 7 more minutes), so that it checks where the
  loop's jobs run, not accuracy.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import WORKFLOW_FILES, copy_workflow, mock_invocations, run_snakemake
from kappaflow.bte import read_kappa_csv

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SHIPPED = "config/mock/si.yaml"
ML_TEST = {"ml": {"aimd": {"enabled": False}, "train": {"data": "disp", "epochs": 20, "committee_size": 1}}}
MODEL = "results/si/ml/models/disp-full/member0/model.npz"
POLL = ["--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "10"]
AL_SHIPPED = "config/mock/si_al.yaml"
AL_TEST = {"ml": {"train": {"epochs": 20, "committee_size": 2},
                  "al": {"pool_sow": False, "pool_amplitudes_ang": [0.01, 0.03], "pool_random_per_amplitude": 4,
                         "max_rounds": 0}}}
LEONARDO_MODULES = {"pwx": ["profile/chem-phys", "quantum-espresso"], "tensorflow": ["profile/deeplrn", "cineca-ai"]}


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
    """A checkout of its own (package included: the jobs and the mock import it through PYTHONPATH), with
    the `leonardo` link at its root and a stand-in `module` command in test_bin/."""
    copy_workflow(dest, WORKFLOW_FILES + ("src",))
    os.symlink("profiles/leonardo", dest / "leonardo")
    (dest / "test_bin").mkdir()
    module = dest / "test_bin" / "module"
    module.write_text('#!/bin/sh\necho "$@" >> "$KAPPAFLOW_TEST_MODULE_LOG"\n')
    module.chmod(0o755)
    return dest


def job_env(work: Path) -> dict:
    return {"PYTHONPATH": str(work / "src"), "PATH": f"{work / 'test_bin'}{os.pathsep}{os.environ['PATH']}",
            "KAPPAFLOW_TEST_MODULE_LOG": str(work / "module.log")}


def slurm_snakemake(work, *targets, configfiles=(SHIPPED,), env=None, timeout=2400):
    """The user's command (`snakemake <targets> --profile leonardo --configfile ...`) plus POLL."""
    cmd = ["timeout", "-k", "10", str(timeout), "snakemake", *targets, "--profile", "leonardo", *POLL,
           "--configfile", *configfiles]
    full_env = dict(os.environ, KAPPAFLOW_SLURM_ACCOUNT="kappaflow_ci", KAPPAFLOW_SLURM_QOS="normal",
                    **job_env(Path(work)), **(env or {}))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, env=full_env, capture_output=True, text=True)
    print(f"slurm run {' '.join(targets) or '(all)'}: {time.monotonic() - t0:.0f} s")
    return proc


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


def store_keys(work) -> set:
    return {p.parent.name for p in (work / "results/si/dft").glob("*/pw.out")}


def assert_booster_pwx_job(row):
    assert row["Partition"] == "boost_usr_prod" and row["State"] == "COMPLETED", row
    assert row["Account"] == "kappaflow_ci" and row["QOS"] == "normal"
    t = tres(row)
    assert t["gres/gpu"] == "4" and t["cpu"] == "32" and t["node"] == "1", row
    # the pw.x launch is an srun step of 4 tasks inside the allocation
    assert [s for s in steps_of(row["JobID"]) if s["NTasks"] == "4"], steps_of(row["JobID"])


def start_local_run(local: Path) -> subprocess.Popen:
    """`snakemake --profile profiles/local --configfile config/mock/si.yaml` in a checkout of its own.  It
    runs while the cluster run runs (that one mostly waits for the scheduler and one job at a time)."""
    log = open(local / "local_run.log", "w")
    return subprocess.Popen(["snakemake", "--profile", "profiles/local", "--configfile", SHIPPED], cwd=local,
                            env=dict(os.environ, PYTHONPATH=str(local / "src")), stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cluster_run(slurm, tmp_path_factory):
    work = copy_checkout(tmp_path_factory.mktemp("slurm_si"))
    local = copy_checkout(tmp_path_factory.mktemp("local_si"))
    local_run = start_local_run(local)
    before = job_ids(slurm)
    t0 = time.monotonic()
    try:
        proc = slurm_snakemake(work, env={"KAPPAFLOW_MOCK_PW_LOG": str(work / "mock.log")})
    finally:
        local_rc = local_run.wait(timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    # relax, sow, gate, reap, bte, the light group: at least 6 allocations besides the pw.x jobs
    rows = new_records(slurm, before, len(store_keys(work)) + 6)
    print(f"shipped config on SLURM: {len(rows)} allocations, {time.monotonic() - t0:.0f} s "
          f"(the local run beside it: exit {local_rc})")
    return work, rows, (local, local_rc)


def test_the_shipped_config_ran_relax_first_on_a_booster_node(cluster_run):
    work, rows, _ = cluster_run
    relax = [r for r in rows if r["rule"] == "relax"]
    assert len(relax) == 1
    assert_booster_pwx_job(relax[0])
    # the mock's first invocation is the vc-relax, and the supercells were built from its result
    calls = mock_invocations(work / "mock.log")
    assert calls[0][1] == "relax" and "relax" not in [c[1] for c in calls[1:]]
    assert "vc-relax" in (work / "results/si/relax/pw.in").read_text()
    assert "Begin final coordinates" in (work / "results/si/relax/pw.out").read_text()
    unit = json.loads((work / "results/si/structure/unitcell.json").read_text())
    assert unit  # written by the local structure rule from the relaxed cell
    # relax_input and structure are local rules: Snakemake ran them, nothing was submitted for them
    assert not [r for r in rows if r["rule"] in ("relax_input", "structure", "prep")]


def test_dft_jobs_ran_on_the_gpu_partition_with_four_ranks_and_four_gpus(cluster_run):
    work, rows, _ = cluster_run
    dft = [r for r in rows if r["rule"] == "dft"]
    manifest = json.loads((work / "results/si/sow/manifest.json").read_text())
    keys = {j["key"] for j in manifest["jobs"]}
    assert {r["Comment"].split("_wildcards_")[1] for r in dft} == keys == store_keys(work)
    assert len(dft) == len(keys) == 39  # the README's demo setup: 39 unique pw.x runs
    for r in dft:
        assert_booster_pwx_job(r)
    # and the mock saw 4 MPI processes (only rank 0 writes, like pw.x): the srun launch was built in the
    # job from its resources, the shipped config's pw_command has no srun
    assert "srun" not in yaml.safe_load((work / SHIPPED).read_text())["dft"]["pw_command"]
    for out in (work / "results/si/dft").glob("*/pw.out"):
        assert "running on     4 processors" in out.read_text(), out


def test_environment_modules_were_loaded_for_every_pwx_job(cluster_run):
    """`--configfile` replaced the profile's configfiles; the modules still come (the config's defaults)."""
    work, rows, _ = cluster_run
    loads = [line.split()[1:] for line in (work / "module.log").read_text().splitlines()
             if line.startswith("load")]
    n_pwx = len([r for r in rows if r["rule"] in ("relax", "dft")])
    assert len(loads) >= n_pwx and all(m == LEONARDO_MODULES["pwx"] for m in loads), loads[:5]


def test_light_work_was_grouped_on_the_serial_partition(cluster_run):
    _, rows, _ = cluster_run
    grouped = [r for r in rows if r["rule"].startswith("light")]
    assert grouped
    for r in grouped + [r for r in rows if r["rule"] == "sow"]:
        assert r["Partition"] == "lrd_all_serial" and "gres/gpu" not in tres(r)
    # every non-pw.x submission: a handful, not one per file
    other = sorted(r["rule"] for r in rows if r["rule"] not in ("dft", "relax"))
    assert len(other) <= 6, other
    assert all(r["State"] == "COMPLETED" for r in rows)


@pytest.fixture(scope="module")
def ml_run(cluster_run, slurm):
    """One committee member trained on the cluster on the DFT store of the shipped run."""
    work, _, _ = cluster_run
    (work / "ml_test.yaml").write_text(yaml.safe_dump(ML_TEST))
    before = job_ids(slurm)
    proc = slurm_snakemake(work, MODEL, configfiles=(SHIPPED, "ml_test.yaml"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return work, new_records(slurm, before, 2)


def test_training_requested_one_gpu_and_ml_preparation_was_grouped(ml_run):
    work, rows = ml_run
    train = [r for r in rows if r["rule"] == "train"]
    assert len(train) == 1
    t = tres(train[0])
    assert train[0]["Partition"] == "boost_usr_prod" and t["gres/gpu"] == "1" and t["cpu"] == "8"
    prep = [r for r in rows if r["rule"].startswith("ml_prep")]
    assert prep and all(r["Partition"] == "lrd_all_serial" for r in prep)
    assert not [r for r in rows if r["rule"] in ("dft", "relax")]  # the DFT store was reused
    loads = [line.split()[1:] for line in (work / "module.log").read_text().splitlines() if line.startswith("load")]
    assert LEONARDO_MODULES["tensorflow"] in loads


def test_kappa_equals_the_local_run(cluster_run):
    """`snakemake --profile profiles/local --configfile config/mock/si.yaml` on this machine."""
    work, _, (local, local_rc) = cluster_run
    assert local_rc == 0, (local / "local_run.log").read_text()[-5000:]
    on_cluster = read_kappa_csv(work / "results/si/bte/kappa.csv")
    at_home = read_kappa_csv(local / "results/si/bte/kappa.csv")
    np.testing.assert_array_equal(on_cluster.temperatures_k, at_home.temperatures_k)
    # same forces bit for bit; the BTE's OpenMP reductions ran on 8 threads there and 2 here
    np.testing.assert_allclose(on_cluster.kappa_w_per_mk, at_home.kappa_w_per_mk, rtol=1e-10, atol=1e-12)
    assert store_keys(work) == store_keys(local)  # launching through srun does not change the store keys
    for key in store_keys(work):
        forces = [[line for line in (root / f"results/si/dft/{key}/pw.out").read_text().splitlines()
                   if "force =" in line] for root in (work, local)]
        assert forces[0] == forces[1], key


def test_failing_pwx_is_reported_and_the_rerun_completes_only_what_is_missing(cluster_run, slurm):
    """A pw.x result judged bad is removed and the force constants are recomputed (`--forcerun reap`, as
    docs/cluster.md says); its rerun crashes: the run fails naming it, SLURM records the job FAILED (twice:
    the profile retries once), nothing downstream is submitted; the same command again submits only that
    pw.x job and reproduces kappa bit for bit.  (Without --forcerun nothing would start: Snakemake does not
    remake a missing intermediate file whose consumers are up to date.)"""
    work, _, _ = cluster_run
    kappa_before = (work / "results/si/bte/kappa.csv").read_text()
    manifest = json.loads((work / "results/si/sow/manifest.json").read_text())
    victim = manifest["jobs"][-1]["key"]  # a pair-displaced supercell (after the stability gate)
    assert manifest["jobs"][-1]["role"] == "fc3"
    (work / f"results/si/dft/{victim}/pw.out").unlink()
    before = job_ids(slurm)
    log = work / "mock_rerun.log"

    failed = slurm_snakemake(work, "--forcerun", "reap",
                             env={"KAPPAFLOW_MOCK_PW_FAULT": f"crash@{work}/results/si/dft/{victim}",
                                  "KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert failed.returncode != 0
    text = failed.stdout + failed.stderr
    assert "Error in rule dft" in text and victim in text
    rows = new_records(slurm, before, 2)
    dft_rows = [r for r in rows if r["Comment"].startswith("rule_dft")]
    assert {r["Comment"] for r in dft_rows} == {f"rule_dft_wildcards_{victim}"}
    assert len(dft_rows) == 2 and all(r["State"] == "FAILED" for r in dft_rows)  # the profile retries once
    assert not any(r["Comment"].startswith(("rule_reap", "rule_bte")) for r in rows)
    assert not (work / f"results/si/dft/{victim}/pw.out").exists()
    assert (work / f"results/si/dft/{victim}/pw.out.failed").exists()

    before = job_ids(slurm)
    ok = slurm_snakemake(work, "--forcerun", "reap", env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-4000:]
    rows = new_records(slurm, before, 3)
    dft_rows = [r for r in rows if r["Comment"].startswith("rule_dft")]
    assert [(r["Comment"], r["State"]) for r in dft_rows] == [(f"rule_dft_wildcards_{victim}", "COMPLETED")]
    assert any(r["Comment"] == "rule_bte" and r["State"] == "COMPLETED" for r in rows)
    # pw.x ran for that supercell only: twice failing (run + retry), once in the rerun
    assert [entry[1] for entry in mock_invocations(log)] == [victim] * 3
    assert (work / "results/si/bte/kappa.csv").read_text() == kappa_before


@pytest.fixture(scope="module")
def al_slurm_run(cluster_run, slurm):
    """The seed round of active learning and the final κ, on the cluster."""
    work, _, _ = cluster_run
    (work / "al_test.yaml").write_text(yaml.safe_dump(AL_TEST))
    log = work / "mock_al.log"
    before = job_ids(slurm)
    proc = slurm_snakemake(work, "al", configfiles=(AL_SHIPPED, "al_test.yaml"), env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ran = [entry[1] for entry in mock_invocations(log)]
    # pw.x jobs, 2 members' training and at least the pool, baseline and report jobs
    return work, ran, new_records(slurm, before, len(ran) + 2 + 3)


def test_active_learning_ran_pwx_on_the_booster_and_training_on_one_gpu_per_member(al_slurm_run):
    """The seed round on the cluster: its pw.x jobs on the Booster, one GPU job per member, the round's and
    the final κ (a group job on a node, which reads the loop's checkpoints through its inputs)."""
    work, ran, rows = al_slurm_run
    R = work / "results/si/al"
    rounds = [json.loads((R / f"round{r}/selected.json").read_text()) for r in range(2)]
    assert not rounds[0].get("stop") and rounds[1]["stop"] and "max_rounds" in rounds[1]["reason"]
    selected = rounds[0]["keys"]
    assert sorted(ran) == sorted(selected) and len(set(ran)) == len(ran) == 2  # each selected run once
    dft = [r for r in rows if r["rule"] == "dft"]
    assert sorted(r["Comment"].split("_wildcards_")[1] for r in dft) == sorted(selected)
    for r in dft:
        assert_booster_pwx_job(r)
    train = [r for r in rows if r["rule"] == "al_train"]
    assert len(train) == 2  # one job per member
    for r in train:
        t = tres(r)
        assert r["Partition"] == "boost_usr_prod" and t["gres/gpu"] == "1" and r["State"] == "COMPLETED", r
    assert not [r for r in rows if r["rule"] in ("relax", "sow")]  # the DFT route's relax and sow were reused
    assert all(r["State"] == "COMPLETED" for r in rows)
    summary = json.loads((R / "final/summary.json").read_text())
    assert summary["pw_runs"] == 2 and summary["pw_runs_failed"] == []
    assert read_kappa_csv(R / "final/bte/kappa.csv").kappa_w_per_mk.shape[0] > 0
