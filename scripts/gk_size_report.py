"""Snakemake script: the GK kappa vs cell-size table and figure (kappaflow.gk.steps.gk_size_report)."""
from kappaflow.gk.steps import gk_size_report
from kappaflow.scriptutil import run

run(gk_size_report, list(snakemake.input.kappa), list(snakemake.params.cells), snakemake.output.table,
    snakemake.output.figure, snakemake.input.bte[0] if snakemake.input.bte else None, log=snakemake.log)
