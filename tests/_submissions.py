"""Test helpers: how many sbatch submissions a DAG costs, from `snakemake -n`'s job stats and a profile's
groups (tests/test_cluster.py, tests/test_commands.py).  Test-side only: the product submits, it does
not predict submissions."""
from __future__ import annotations

from kappaflow.errors import KappaflowError

# rules Snakemake runs itself, never submitted: targets without an action, and the light structure rules
# (`localrules` in workflow/rules/structure.smk and stability.smk)
LOCAL_RULES = ("all", "ml", "ablation", "noise_study", "plan", "sweep", "scaling", "relax_input", "structure",
               "stability_pass")

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
                local_rules=LOCAL_RULES) -> dict:
    """Upper bound of sbatch submissions per rule or group.

    A group job holds ``group-components`` connected components of its group, and a component holds at
    least one job, so ``ceil(jobs in the group / group-components)`` bounds the group's submissions.  Target
    rules without an action (``all``, ``ml`` ...) and the local rules run inside the main Snakemake process,
    not as jobs.
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
