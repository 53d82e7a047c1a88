"""Snakemake script: noise table, figures and the tolerance JSON."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_noise_summary

run(run_noise_summary, list(snakemake.input.noise), dict(zip(snakemake.params.models, snakemake.input.ml)),
    snakemake.params.band, dict(snakemake.output.items()), log=snakemake.log)
