"""The Leonardo profile without a scheduler: the sbatch options the SLURM executor plugin generates from it,
the start-up check of the account/QOS variables, the profile lookup by name, and the submission count.

The real-scheduler runs are in tests/test_cluster_slurm.py.
"""
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_snakemake
from kappaflow import cluster
from kappaflow.errors import KappaflowError
import _submissions

PROFILE = _submissions.load_profile(REPO / "profiles/leonardo")
KAPPAFLOW_YAML = yaml.safe_load((REPO / "profiles/leonardo/kappaflow.yaml").read_text())


class _Resources(dict):
    """What the plugin sees of a job's resources: mapping access and attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Job:
    def __init__(self, rule, resources, threads=1):
        self.name = rule
        self.resources = _Resources(resources)
        self.threads = threads


def job_of(rule, profile=PROFILE):
    """A job of ``rule`` with the resources the profile gives it (set-resources over default-resources)."""
    res = dict(profile["default-resources"])
    res.update((profile.get("set-resources") or {}).get(rule, {}))
    res = {k: (os.path.expandvars(v) if isinstance(v, str) else v) for k, v in res.items()}
    return _Job(rule, res, threads=(profile.get("set-threads") or {}).get(rule, 1))


def sbatch_call(job):
    """The plugin's own sbatch command line for ``job`` (account and partition as the executor formats them)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    params = {"run_uuid": "uuid", "slurm_logfile": "log", "comment_str": f"rule_{job.name}",
              "account": f" -A {shlex.quote(job.resources['slurm_account'])}",
              "partition": f" -p {job.resources['slurm_partition']}", "workdir": "/work"}
    return get_submit_command(job, params) + set_gres_string(job)


def options(call):
    return shlex.split(call)


@pytest.fixture(autouse=True)
def _account(monkeypatch):
    monkeypatch.setenv("KAPPAFLOW_SLURM_ACCOUNT", "prj_kappa")
    monkeypatch.setenv("KAPPAFLOW_SLURM_QOS", "normal")


def test_dft_job_is_one_booster_node_with_four_ranks_and_four_gpus():
    opts = options(sbatch_call(job_of("dft")))
    assert opts[opts.index("-p") + 1] == "boost_usr_prod"
    assert opts[opts.index("-A") + 1] == "prj_kappa"
    for expected in ("--nodes=1", "--ntasks=4", "--ntasks-per-gpu=1", "--cpus-per-task=8", "--gres=gpu:4"):
        assert expected in opts, (expected, opts)
    assert opts[opts.index("--mem") + 1] == "120000"
    assert opts[opts.index("-t") + 1] == "120"
    assert not any(o.startswith("--gpus") for o in opts)


def test_gpu_request_form_is_a_profile_setting():
    """Clusters that want --gpus=N: replace `gres: gpu:4` by `gpu: 4` in the profile."""
    profile = yaml.safe_load((REPO / "profiles/leonardo/config.yaml").read_text())
    dft = dict(profile["set-resources"]["dft"])
    dft.pop("gres")
    dft["gpu"] = 4
    profile["set-resources"]["dft"] = dft
    opts = options(sbatch_call(job_of("dft", profile)))
    assert "--gpus=4" in opts and not any(o.startswith("--gres") for o in opts)
    assert "--ntasks=4" in opts and "--ntasks-per-gpu=1" in opts


def test_tasks_per_gpu_is_explicit_for_every_multi_rank_gpu_rule():
    """Without it the plugin writes --ntasks-per-gpu=<tasks> (16 ranks on 4 GPUs), which SLURM rejects with
    'Requested node configuration is not available' (seen on the test scheduler)."""
    for rule, res in PROFILE["set-resources"].items():
        if "gres" in res or "gpu" in res:
            assert res.get("tasks_per_gpu") == 1, rule
    profile = yaml.safe_load((REPO / "profiles/leonardo/config.yaml").read_text())
    profile["set-resources"]["dft"].pop("tasks_per_gpu")
    assert "--ntasks-per-gpu=4" in options(sbatch_call(job_of("dft", profile)))


def test_training_asks_for_one_gpu_on_the_gpu_partition():
    opts = options(sbatch_call(job_of("train")))
    assert opts[opts.index("-p") + 1] == "boost_usr_prod"
    assert "--gres=gpu:1" in opts and "--ntasks-per-gpu=1" in opts and "--cpus-per-task=8" in opts


@pytest.mark.parametrize("rule", ["al_train", "al_infer", "al_predict", "al_md"])
def test_active_learning_tensorflow_jobs_ask_for_one_gpu_on_the_gpu_partition(rule):
    """Every active-learning job that runs the committee (training, inference, pool scores, committee MD)
    goes to the Booster partition with one A100."""
    opts = options(sbatch_call(job_of(rule)))
    assert opts[opts.index("-p") + 1] == "boost_usr_prod"
    assert "--gres=gpu:1" in opts and "--ntasks-per-gpu=1" in opts


@pytest.mark.parametrize("rule", ["gk_trajectory", "gk_starts", "gk_size_trajectory", "gk_size_starts"])
def test_green_kubo_md_jobs_ask_for_one_gpu_on_the_gpu_partition(rule):
    """Each GK trajectory (and the thermalisation) runs the potential in TensorFlow: one A100, a day."""
    opts = options(sbatch_call(job_of(rule)))
    assert opts[opts.index("-p") + 1] == "boost_usr_prod"
    assert "--gres=gpu:1" in opts and "--ntasks-per-gpu=1" in opts
    assert opts[opts.index("-t") + 1] == "1440"


@pytest.mark.parametrize("rule", ["cost", "report", "dataset", "gvectors", "infer", "inject"])
def test_light_jobs_go_to_the_serial_partition_without_gpus(rule):
    opts = options(sbatch_call(job_of(rule)))
    assert opts[opts.index("-p") + 1] == "lrd_all_serial"
    assert not any(o.startswith(("--gres", "--gpus", "--ntasks-per-gpu")) for o in opts)
    assert rule in PROFILE["groups"]


@pytest.mark.parametrize("rule", ["dft", "relax"])
def test_pwx_launch_is_built_from_the_job_resources(rule):
    """Slurm >= 22.05: srun does not inherit --cpus-per-task, and pw.x's OpenMP threads must match it.  The
    launch comes from the job's own resources (`mpi: srun`, tasks, cpus_per_task), not from a config file
    that a user's --configfile would replace."""
    res = job_of(rule).resources
    assert res["mpi"] == "srun"
    assert (cluster.launch_command("pw.x -nk 2", res)
            == "env OMP_NUM_THREADS=8 srun --ntasks=4 --cpus-per-task=8 pw.x -nk 2")
    assert (cluster.launch_command("kappaflow-mock-pw --model stillinger-weber-si", res)
            == "env OMP_NUM_THREADS=8 srun --ntasks=4 --cpus-per-task=8 kappaflow-mock-pw --model stillinger-weber-si")
    # the launch line of profiles/leonardo/kappaflow.yaml has no launcher of its own
    assert not {"srun", "mpirun"} & set(shlex.split(KAPPAFLOW_YAML["dft"]["pw_command"]))


def test_pwx_launch_without_mpi_resource_or_with_its_own_launcher_is_unchanged():
    assert cluster.launch_command("pw.x", {"tasks": 4, "cpus_per_task": 8}) == "pw.x"  # local runs
    res = job_of("dft").resources
    assert cluster.launch_command("srun -n 2 pw.x", res) == "srun -n 2 pw.x"
    assert cluster.launch_command("env OMP_NUM_THREADS=2 mpirun -np 2 pw.x", res) == \
        "env OMP_NUM_THREADS=2 mpirun -np 2 pw.x"
    assert cluster.launch_command("pw.x", {"mpi": "mpirun", "tasks": 2}) == "mpirun -np 2 pw.x"
    with pytest.raises(KappaflowError, match="aprun"):
        cluster.launch_command("pw.x", {"mpi": "aprun", "tasks": 2})


def test_throttling_retries_and_no_mpi_job_arrays():
    assert int(PROFILE["jobs"]) <= 200
    n, per = PROFILE["max-jobs-per-timespan"].split("/")
    assert int(n) <= 20 and per == "1s"
    assert PROFILE["retries"] >= 1 and PROFILE["slurm-init-seconds-before-status-checks"] >= 30
    # the jobstep plugin runs the first task's job in every task of an MPI array (docs/cluster.md)
    arrays = str(PROFILE.get("slurm-array-jobs", "")).replace(";", ",").split(",")
    mpi_rules = {r for r, res in PROFILE["set-resources"].items() if "mpi" in res}
    assert not ({a.strip() for a in arrays} & (mpi_rules | {"all"}))


def test_qos_is_not_in_slurm_extra():
    """The plugin refuses --qos in slurm_extra; the profile uses its slurm-qos setting."""
    assert "slurm_extra" not in PROFILE["default-resources"]
    assert PROFILE["slurm-qos"] == "$KAPPAFLOW_SLURM_QOS"


def test_unset_account_stops_with_the_fix_in_the_message():
    with pytest.raises(KappaflowError) as err:
        cluster.check_profile_env("slurm", {"KAPPAFLOW_SLURM_QOS": "normal"})
    assert "KAPPAFLOW_SLURM_ACCOUNT" in str(err.value) and "export" in str(err.value)
    assert "KAPPAFLOW_SLURM_QOS" not in str(err.value).split(":")[0]
    cluster.check_profile_env("slurm", {"KAPPAFLOW_SLURM_ACCOUNT": "a", "KAPPAFLOW_SLURM_QOS": "q"})
    cluster.check_profile_env("local", {})  # other executors need nothing


def test_profile_is_found_by_name_from_the_repository_root(monkeypatch):
    """`snakemake --profile leonardo` typed in the repository root: Snakemake searches the working directory."""
    from snakemake.cli import get_profile_dir

    monkeypatch.chdir(REPO)
    profile_dir, config_file = get_profile_dir("leonardo")
    assert config_file.resolve() == (REPO / "profiles/leonardo/config.yaml").resolve()


def test_dryrun_job_stats_parser():
    text = ("Job stats:\njob      count\n-----  -------\ndft        12\ncost        1\nall         1\n"
            "total      14\n\nReasons:\n")
    assert _submissions.dryrun_job_counts(text) == {"dft": 12, "cost": 1, "all": 1}
    with pytest.raises(KappaflowError):
        _submissions.dryrun_job_counts("Nothing to be done.")
    bound = _submissions.submissions({"dft": 12, "relax": 1, "relax_input": 1, "structure": 1, "cost": 1, "report": 1,
                                 "noise_kappa": 70, "train": 5, "all": 1}, PROFILE)
    assert bound["dft"] == 13  # relax is a pw.x job; relax_input and structure are local rules
    assert bound["other"] == {"group light": 1, "group noise": 2, "train": 5}


@pytest.mark.slow
def test_ges2_submissions_do_not_grow_with_the_number_of_supercells(workspace):
    """`snakemake -n --profile leonardo` for GeS2 (every target: kappa, ML ablation, noise study): the
    non-DFT submissions stay at a few dozen whatever the supercell count."""
    os.symlink("profiles/leonardo", workspace / "leonardo")
    (workspace / "noaimd.yaml").write_text("ml: {aimd: {enabled: false}}\n")
    totals = {}
    for shells in (2, 3):
        (workspace / "shells.yaml").write_text(yaml.safe_dump(
            {"sow": {"neighbour_shells": shells}}))
        cfg = ["config/mock/ges2.yaml", "noaimd.yaml", "shells.yaml"]
        run_snakemake(workspace, "results/ges2/sow/manifest.json", "--configfile", *cfg)
        proc = run_snakemake(workspace, "all", "ablation", "noise_study", "-n", "--profile", "leonardo",
                             "--configfile", "config/config.yaml", "profiles/leonardo/kappaflow.yaml", *cfg)
        counts = _submissions.dryrun_job_counts(proc.stdout + proc.stderr)
        bound = _submissions.submissions(counts, _submissions.load_profile(workspace / "leonardo"))
        totals[shells] = (counts["dft"], bound["non_dft_total"])
        shutil.rmtree(workspace / "results/ges2/sow")
    (n_dft_2, other_2), (n_dft_3, other_3) = totals[2], totals[3]
    assert n_dft_3 > n_dft_2 > 50
    print("GeS2 submissions (pw.x jobs, other):", totals)
    assert other_2 == other_3 <= 36, totals
