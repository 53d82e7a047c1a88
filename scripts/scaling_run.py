"""Snakemake script: one pw.x run of the scaling study on the requested number of ranks."""
from kappaflow.scaling import step_run
from kappaflow.scriptutil import run

run(step_run, snakemake.input[0], snakemake.output[0], snakemake.params.scaling, snakemake.params.ranks,
    log=snakemake.log)
