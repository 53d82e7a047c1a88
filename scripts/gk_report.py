"""Snakemake script: the GK kappa(T) table and figure next to the BTE kappa of the same potential."""
from kappaflow.gk.steps import gk_report
from kappaflow.scriptutil import run

run(gk_report, list(snakemake.input.kappa), snakemake.input.bte[0] if snakemake.input.bte else None,
    snakemake.output.table, snakemake.output.figure,
    snakemake.input.bte_classical[0] if snakemake.input.bte_classical else None, log=snakemake.log)
