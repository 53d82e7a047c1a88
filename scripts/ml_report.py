"""Snakemake script: the ML route's figures and summary for one model."""
from kappaflow.ml.steps import ml_report
from kappaflow.scriptutil import run

run(ml_report, snakemake.wildcards.model, snakemake.input.dft_kappa, snakemake.input.ml_kappa,
    snakemake.input.forces, snakemake.input.sigma, list(snakemake.input.metrics), snakemake.input.cost,
    snakemake.input.timing, dict(snakemake.output.items()), title=snakemake.params.title, log=snakemake.log)
