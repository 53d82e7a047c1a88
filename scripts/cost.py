"""Snakemake script: pw.x WALL times -> cost table (node-hours)."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_cost

run(run_cost, snakemake.input.manifest, snakemake.params.store, snakemake.config["dft"],
    snakemake.output.table, snakemake.output.summary, log=snakemake.log)
