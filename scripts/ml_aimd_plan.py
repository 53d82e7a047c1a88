"""Snakemake script (checkpoint): the md input of the FC3 supercell, into the hash-keyed store."""
from kappaflow.ml.steps import plan_aimd
from kappaflow.scriptutil import run

run(plan_aimd, snakemake.input.structure, snakemake.input.template, snakemake.params.sow,
    dict(snakemake.config["dft"]), snakemake.params.aimd, snakemake.params.store, snakemake.output[0],
    snakemake.params.engine, log=snakemake.log)
