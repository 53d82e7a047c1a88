"""Snakemake script: one pw.x run of the scaling study on the requested number of ranks."""
from kappaflow.dft import run_scaling_pw
from kappaflow.scriptutil import run

run(run_scaling_pw, snakemake.input[0], snakemake.output[0], snakemake.params.scaling, snakemake.params.ranks,
    log=snakemake.log)
