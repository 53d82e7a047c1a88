"""Snakemake script: one pw.x run (real or mock), validated, written atomically."""
from kappaflow.dft import run_dft
from kappaflow.scriptutil import run

run(run_dft, snakemake.input[0], snakemake.output[0], snakemake.config["dft"], log=snakemake.log)
