"""Cluster execution helpers: the SLURM profile's start-up check and reading SLURM's own records.

Snakemake's SLURM executor takes the account and QOS from environment variables named in
``profiles/leonardo/config.yaml`` (``KAPPAFLOW_SLURM_ACCOUNT``, ``KAPPAFLOW_SLURM_QOS``), so that nobody
edits the repository to run it.  An unset variable would otherwise reach ``sbatch`` as the literal text
``$KAPPAFLOW_SLURM_ACCOUNT``; :func:`check_profile_env` stops the run first, with the fix in the message.
"""

from __future__ import annotations

import os

from kappaflow.errors import KappaflowError

PROFILE_ENV = {
    "KAPPAFLOW_SLURM_ACCOUNT": "your project account (sbatch -A), e.g. `saldo -b` on Leonardo lists it",
    "KAPPAFLOW_SLURM_QOS": "the QOS to submit with, e.g. normal (boost_qos_dbg for short tests)",
}


def check_profile_env(executor_name: str | None, environ=None) -> None:
    """Raise a KappaflowError naming every unset variable the SLURM profile needs (other executors: no-op)."""
    if executor_name != "slurm":
        return
    environ = os.environ if environ is None else environ
    missing = [name for name in PROFILE_ENV if not environ.get(name, "").strip()]
    if missing:
        lines = "\n".join(f"  export {name}=...   # {PROFILE_ENV[name]}" for name in missing)
        raise KappaflowError(
            "the SLURM profile needs " + ", ".join(missing) + " (set once, e.g. in ~/.bashrc; "
            "see docs/cluster.md):\n" + lines)


# ----------------------------------------------------------------------------------------------------
# How many sbatch submissions a DAG costs: from `snakemake -n`'s job stats and the profile's groups.
def dryrun_job_counts(text: str) -> dict[str, int]:
    """The ``Job stats`` table of ``snakemake -n`` output: {rule: number of jobs}."""
    lines = text.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except ValueError:
        raise KappaflowError("no 'Job stats:' table in the snakemake -n output "
                             "(nothing to be done, or the dry run failed)") from None
    counts: dict[str, int] = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def load_profile(profile_dir) -> dict:
    import yaml
    from pathlib import Path

    path = Path(profile_dir) / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise KappaflowError(f"{path}: no such profile file") from None


def submissions(job_counts: dict[str, int], profile: dict, dft_rules=("dft", "relax"),
                local_rules=("all", "ml", "ablation", "noise_study", "plan", "sweep", "scaling")) -> dict:
    """Upper bound of sbatch submissions per rule or group.

    A group job holds ``group-components`` connected components of its group, and a component holds at
    least one job, so ``ceil(jobs in the group / group-components)`` bounds the group's submissions.  Target
    rules without an action (``all``, ``ml`` ...) run inside the main Snakemake process, not as jobs.
    """
    groups = profile.get("groups") or {}
    components = profile.get("group-components") or {}
    per_group: dict[str, int] = {}
    result = {"dft": 0, "other": {}}
    for rule, n in job_counts.items():
        if rule in local_rules:
            continue
        if rule in dft_rules:
            result["dft"] += n
        elif rule in groups:
            per_group[groups[rule]] = per_group.get(groups[rule], 0) + n
        else:
            result["other"][rule] = n
    for group, n in per_group.items():
        k = int(components.get(group, 1))
        result["other"][f"group {group}"] = -(-n // k)
    result["non_dft_total"] = sum(result["other"].values())
    return result
