# kappaflow: lattice thermal conductivity from first principles.
#   snakemake --profile profiles/local              (config/config.yaml: system, pw.x command)
#   snakemake --profile profiles/local --configfile config/mock/ges2.yaml
# The DAG, the modules and the files between rules: docs/ARCHITECTURE.md.
import os
import sys

from snakemake.utils import min_version, validate

import kappaflow.config as kfconfig
from kappaflow.errors import KappaflowError

min_version("8.20")

# With `--sdm conda` jobs run in envs/*.yaml, which hold kappaflow's dependencies but not kappaflow:
# they import the checked-out package from src/ (the same code an editable install points to).
kfconfig.put_source_on_pythonpath(workflow.basedir)


configfile: "config/config.yaml"


try:
    _resolved = kfconfig.resolve(dict(config))
except KappaflowError as exc:
    sys.exit(f"kappaflow: {exc}")
config.clear()
config.update(_resolved)
validate(config, kfconfig.schema_path())

R = f"{config['results_dir']}/{config['name']}"


onstart:
    # the SLURM profile takes account and QOS from the environment: stop before submitting without them
    from kappaflow.cluster import check_profile_env

    _plugin = workflow.executor_plugin
    try:
        check_profile_env(getattr(_plugin, "name", None))
    except KappaflowError as exc:
        sys.exit(f"kappaflow: {exc}")


include: "workflow/rules/common.smk"
include: "workflow/rules/structure.smk"
include: "workflow/rules/sow.smk"
include: "workflow/rules/dft.smk"
include: "workflow/rules/reap.smk"
include: "workflow/rules/bte.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ml.smk"
include: "workflow/rules/al.smk"
include: "workflow/rules/gk.smk"
include: "workflow/rules/noise.smk"
include: "workflow/rules/stability.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/scaling.smk"


rule all:
    default_target: True
    input:
        f"{R}/bte/kappa.csv",
        f"{R}/dft/cost.csv",
        f"{R}/report/kappa_linear.png",
        f"{R}/report/kappa_log.png",
        f"{R}/report/dispersion.png",
        # where the heat is carried (phono3py's mode file; not with bte.backend shengbte)
        [f"{R}/analysis/cumulative_kappa.png", f"{R}/analysis/kappa_loglog.png"] if BTE_MODES else [],
