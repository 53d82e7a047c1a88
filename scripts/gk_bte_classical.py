"""Snakemake script: the intrinsic BTE kappa at the GK temperatures, quantum and classical (kappaflow.gk.steps)."""
from kappaflow.gk.steps import gk_bte_classical
from kappaflow.scriptutil import run

run(gk_bte_classical, snakemake.input.disp, snakemake.input.fc2, snakemake.input.fc3, dict(snakemake.params.bte),
    list(snakemake.params.temperatures_k), snakemake.output[0], log=snakemake.log)
