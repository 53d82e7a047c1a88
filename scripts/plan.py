"""Snakemake script: the plan table (printed, CSV) and figure, without running pw.x."""
from kappaflow.plan import run_plan
from kappaflow.scriptutil import run
from kappaflow.steps import progress

run(run_plan, dict(snakemake.config), snakemake.output.table, snakemake.output.figure, progress=progress,
    log=snakemake.log)
