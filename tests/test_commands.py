"""Every shipped command as a user types it, from a copy of the repository.

`snakemake -n --profile <profile> --configfile <config>` for every profile in profiles/ and every config in
config/, config/mock/ and config/systems/; the Leonardo profile's pw.x jobs as the SLURM plugin would submit
them (Booster partition, 4 GPUs); the warnings a run must not print; command lines in the docs.
"""
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_workflow, run_snakemake
from kappaflow import cluster
from test_cluster import _Job, options, sbatch_call
import _submissions

PROFILES = {"local": "profiles/local", "ci": "profiles/ci", "leonardo": "leonardo"}  # as the docs type them
CONFIGS = sorted(str(p.relative_to(REPO)) for d in ("config", "config/mock", "config/systems")
                 for p in (REPO / d).glob("*.yaml") if p.name != "schema.yaml")
SLURM_ENV = {"KAPPAFLOW_SLURM_ACCOUNT": "a", "KAPPAFLOW_SLURM_QOS": "normal"}
# warnings that a run must not print (issue 12): Snakemake's schema-version fallback, and its
# "Shell command: None" line for every script job when printshellcmds is on
UNWANTED = ("No validator found for JSON Schema", "Shell command: None")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the repository as a user has it (the `leonardo` link at the root included)."""
    work = copy_workflow(tmp_path_factory.mktemp("checkout"))
    os.symlink("profiles/leonardo", work / "leonardo")
    return work


def typed(work, *args, timeout=600):
    """`snakemake <args>` exactly as typed (nothing added: the profile decides cores etc.)."""
    env = dict(os.environ, **SLURM_ENV)
    for name in ("SNAKEMAKE_PROFILE",):
        env.pop(name, None)
    proc = subprocess.run(["snakemake", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, proc.stdout + proc.stderr


def expected_name(config_path: Path) -> str:
    """The results folder the config should produce: its `system:` or, for a system file, its own name."""
    data = yaml.safe_load(config_path.read_text()) or {}
    if config_path.parent.name == "systems":
        return config_path.stem
    return data.get("name") or data.get("system")


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("configfile", CONFIGS)
def test_dry_run_of_every_shipped_config_with_every_profile(checkout, profile, configfile):
    proc, text = typed(checkout, "-n", "--profile", PROFILES[profile], "--configfile", configfile)
    assert proc.returncode == 0, text[-5000:]
    counts = _submissions.dryrun_job_counts(text)
    name = expected_name(REPO / configfile)
    assert f"results/{name}/" in text, (name, text[-3000:])
    data = yaml.safe_load((REPO / "config/systems" / f"{name}.yaml").read_text())
    if (data.get("relax") or {}).get("enabled", True):  # the chain starts with the vc-relax
        assert counts.get("relax_input") == counts.get("relax") == counts.get("structure") == 1, counts
    assert counts.get("sow") == 1 and counts.get("all") == 1, counts
    for unwanted in UNWANTED:
        assert unwanted not in text, (unwanted, profile, configfile)


# -- the Leonardo acceptance: pw.x jobs on the Booster partition with 4 GPUs -----------------------------
def job_blocks(text: str) -> list[dict]:
    """The jobs of a `snakemake -n` listing: rule name and the resources Snakemake resolved for it."""
    jobs, current = [], None
    for line in text.splitlines():
        m = re.match(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):\s*$", line)
        if m:
            current = {"rule": m.group(1), "resources": {}, "threads": 1}
            jobs.append(current)
            continue
        if current is None:
            continue
        m = re.match(r"^\s*(resources|threads|wildcards): (.*)$", line)
        if m and m.group(1) == "resources":
            for item in m.group(2).split(", "):
                key, _, value = item.partition("=")
                current["resources"][key] = int(value) if value.isdigit() else value
        elif m and m.group(1) == "threads":
            current["threads"] = int(m.group(2))
    return jobs


def assert_booster_node_with_four_gpus(job):
    """The sbatch line the SLURM plugin builds from the job's resolved resources."""
    opts = options(sbatch_call(_Job(job["rule"], job["resources"], job["threads"])))
    assert opts[opts.index("-p") + 1] == "boost_usr_prod", opts
    for expected in ("--nodes=1", "--ntasks=4", "--ntasks-per-gpu=1", "--cpus-per-task=8", "--gres=gpu:4"):
        assert expected in opts, (expected, job["rule"], opts)
    # and inside the job pw.x is launched on those 4 ranks x 8 threads, from the same resources
    assert cluster.launch_command("pw.x", job["resources"]) == \
        "env OMP_NUM_THREADS=8 srun --ntasks=4 --cpus-per-task=8 pw.x"


@pytest.mark.slow
@pytest.mark.parametrize("system", ["si", "ges2"])
def test_leonardo_sends_every_pwx_job_to_the_booster_partition_with_four_gpus(tmp_path, system):
    """`KAPPAFLOW_SLURM_ACCOUNT=a KAPPAFLOW_SLURM_QOS=normal snakemake -n --profile leonardo --configfile
    config/mock/<system>.yaml`: the relax job, then (after running relax and sow locally, where the dry run
    stops: the sow is a checkpoint) the dft jobs."""
    work = copy_workflow(tmp_path)
    os.symlink("profiles/leonardo", work / "leonardo")
    configfile = f"config/mock/{system}.yaml"
    command = ("-n", "--profile", "leonardo", "--configfile", configfile)
    proc, text = typed(work, *command)
    assert proc.returncode == 0, text[-5000:]
    relax = [j for j in job_blocks(text) if j["rule"] == "relax"]
    assert len(relax) == 1
    assert_booster_node_with_four_gpus(relax[0])

    run_snakemake(work, f"results/{system}/sow/manifest.json", "--configfile", configfile)
    proc, text = typed(work, *command)
    assert proc.returncode == 0, text[-5000:]
    dft = [j for j in job_blocks(text) if j["rule"] == "dft"]
    assert len(dft) == _submissions.dryrun_job_counts(text)["dft"] > 0
    for job in dft:
        assert_booster_node_with_four_gpus(job)


# -- the trap of the profile's configfiles: a --configfile keeps modules and launch ----------------------
def test_configfile_keeps_the_environment_modules(tmp_path):
    """`--configfile` replaces the profile's `configfiles:`; the module names must not live only there.
    A stand-in `module` command records what Snakemake loads (--sdm env-modules, as the profile sets it)."""
    work = copy_workflow(tmp_path)
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "module").write_text('#!/bin/sh\necho "$@" >> "$KAPPAFLOW_TEST_MODULE_LOG"\n')
    (bin_dir / "module").chmod(0o755)
    log = work / "module.log"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KAPPAFLOW_TEST_MODULE_LOG": str(log)}
    run_snakemake(work, "results/si/relax/pw.out", "--sdm", "env-modules", "--configfile",
                  "config/mock/si.yaml", env=env)
    loads = [line.split()[1:] for line in log.read_text().splitlines() if line.startswith("load")]
    assert loads and all(mods == ["profile/chem-phys", "quantum-espresso"] for mods in loads), loads


# -- pseudopotentials: planning needs none, a real run stops before pw.x ----------------------------------
def test_plan_and_dry_run_need_no_pseudopotential_files(checkout):
    """config/systems/ges2.yaml keeps the seed's pseudo_dir on another machine; the real pw.x is asked for
    (config/config.yaml: pw.x), so the mock's exemption does not apply."""
    pseudo_dir = "/leonardo/home/userexternal/nkulhari/PPs"
    assert pseudo_dir in (REPO / "config/systems/ges2/GeS2.scf.in").read_text() and not Path(pseudo_dir).exists()
    proc, text = typed(checkout, "-n", "--cores", "1", "--config", "system=ges2")
    assert proc.returncode == 0, text[-3000:]
    assert "results/ges2/relax/pw.out" in text
    (checkout / "ges2_real.yaml").write_text("system: ges2\n")
    plan = subprocess.run(["kappaflow", "plan", "ges2_real.yaml", "--out-dir", "plan_ges2"],
                          cwd=checkout, capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-3000:]
    assert (checkout / "plan_ges2/plan.csv").exists()


def test_real_run_without_pseudopotentials_stops_before_pwx(tmp_path):
    """A real GeS2 run: relax_input runs, then the relax job stops naming the file, before pw.x starts
    (a stand-in pw.x on the PATH records whether it was started)."""
    work = copy_workflow(tmp_path)
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "pw.x").write_text('#!/bin/sh\necho started >> "$KAPPAFLOW_TEST_PWX_LOG"\nexit 1\n')
    (bin_dir / "pw.x").chmod(0o755)
    pw_log = work / "pwx.log"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KAPPAFLOW_TEST_PWX_LOG": str(pw_log)}
    proc = run_snakemake(work, "--config", "system=ges2", env=env, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (work / "results/ges2/relax/pw.in").exists()  # the relax input was written (a local rule)
    message = ("results/ges2/relax/pw.in: pseudopotential for Ge not found: "
               "/leonardo/home/userexternal/nkulhari/PPs/Ge.pbe-n-rrkjus_psl.1.0.0.UPF")
    assert message in text, text[-4000:]
    assert not pw_log.exists()  # pw.x never started


# -- command lines in the docs ------------------------------------------------------------------------------
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def doc_commands(text: str) -> list[str]:
    """Shell commands of a markdown text: lines of fenced code blocks and inline code spans."""
    commands = []
    fenced = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    for block in fenced.findall(text):
        commands += block.replace("\\\n", " ").splitlines()
    for span in re.findall(r"`([^`]+)`", fenced.sub("", text)):
        commands.append(" ".join(span.split()))
    return [c for c in commands if "snakemake" in c]


def targets_after_configfile(command: str) -> list[str]:
    """Words after `--configfile` that are no config file: Snakemake reads them as config files too."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    bad = []
    for i, word in enumerate(words):
        if word != "--configfile":
            continue
        for following in words[i + 1:]:
            if following.startswith("-") or following in ("|", "&&", ";", ">", "..."):
                break
            if not following.endswith(CONFIG_SUFFIXES) and following not in ("…",):
                bad.append(following)
    return bad


def test_doc_command_scanner_finds_a_target_after_configfile():
    text = ("Run `snakemake --configfile config/mock/si.yaml ml` or\n"
            "```bash\nsnakemake ml --configfile a.yaml b.yml\n```\n")
    assert [targets_after_configfile(c) for c in doc_commands(text)] == [[], ["ml"]]


@pytest.mark.parametrize("doc", ["README.md"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
def test_docs_put_targets_before_configfile(doc):
    text = (REPO / doc).read_text()
    bad = {c: t for c in doc_commands(text) if (t := targets_after_configfile(c))}
    assert not bad, f"{doc}: targets after --configfile are read as config files: {bad}"


# -- results/: a fresh clone has it, with a README that names what the rules write -------------------------
def test_results_readme_is_tracked_and_names_every_folder_the_rules_write():
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert tracked.stdout.split() == ["results/README.md"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/si/bte/kappa.csv"], cwd=REPO)
    assert ignored.returncode == 0  # what the workflow writes stays out of git
    text = (REPO / "results/README.md").read_text()
    rules = "".join(p.read_text() for p in [REPO / "Snakefile", *(REPO / "workflow/rules").glob("*.smk")])
    folders = set(re.findall(r"\{R\}/(\w+)", rules)) | {"ml", "scaling", "sweep", "noise"}
    missing = sorted(f for f in folders if f"{f}/" not in text)
    assert not missing, missing


@pytest.mark.slow
def test_leonardo_sends_active_learning_pwx_to_the_booster_and_training_to_a_gpu(tmp_path):
    """`snakemake -n --profile leonardo al --configfile config/mock/si_al.yaml` once the seed is chosen (run
    locally up to round 0's selection, where the dry run stops: al_select is a checkpoint): the seed's
    pw.x jobs are ordinary dft jobs on a Booster node, each committee member trains on one A100."""
    work = copy_workflow(tmp_path)
    os.symlink("profiles/leonardo", work / "leonardo")
    configfile = "config/mock/si_al.yaml"
    run_snakemake(work, "results/si/al/round0/selected.json", "--configfile", configfile)
    proc, text = typed(work, "-n", "--profile", "leonardo", "al", "--configfile", configfile)
    assert proc.returncode == 0, text[-5000:]
    jobs = job_blocks(text)
    seed = json.loads((work / "results/si/al/round0/selected.json").read_text())["keys"]
    dft = [j for j in jobs if j["rule"] == "dft"]
    assert len(dft) == len(seed) > 0, (len(dft), seed)
    for job in dft:
        assert_booster_node_with_four_gpus(job)
    train = [j for j in jobs if j["rule"] == "al_train"]
    members = yaml.safe_load((REPO / configfile).read_text())["ml"]["train"]["committee_size"]
    assert len(train) == members
    for job in train:
        opts = options(sbatch_call(_Job(job["rule"], job["resources"], job["threads"])))
        assert opts[opts.index("-p") + 1] == "boost_usr_prod" and "--gres=gpu:1" in opts, opts
