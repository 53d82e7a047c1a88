"""Snakemake script: scaling table and figures from pw.x's WALL times."""
from kappaflow.scaling import step_report
from kappaflow.scriptutil import run

run(step_report, snakemake.params.runs, list(snakemake.input), snakemake.output.table, snakemake.output.strong,
    snakemake.output.weak, title=snakemake.params.title, log=snakemake.log)
