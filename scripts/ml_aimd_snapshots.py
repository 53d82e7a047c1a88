"""Snakemake script (checkpoint): N snapshots of the md run -> one SCF input each, into the store."""
from kappaflow.ml.steps import sow_snapshots
from kappaflow.scriptutil import run

run(sow_snapshots, snakemake.input.plan, snakemake.input.template, dict(snakemake.config["dft"]),
    snakemake.params.store, snakemake.output[0], log=snakemake.log)
