"""Snakemake script: the harmonic-trap ablation figure and table (four models vs DFT)."""
from kappaflow.ml.steps import ablation_report
from kappaflow.scriptutil import run

run(ablation_report, snakemake.input.dft_kappa, dict(zip(snakemake.params.models, snakemake.input.models)),
    snakemake.output.figure, snakemake.output.table, log=snakemake.log)
