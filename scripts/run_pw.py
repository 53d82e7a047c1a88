"""Snakemake script: one pw.x run (real or mock), validated, written atomically."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_dft

run(run_dft, snakemake.input[0], snakemake.output[0], snakemake.config["dft"], log=snakemake.log)
