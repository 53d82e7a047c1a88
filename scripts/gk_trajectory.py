"""Snakemake script: one NVE trajectory with the heat flux, resumed from its checkpoint (kappaflow.gk.steps)."""
from kappaflow.gk.steps import gk_trajectory
from kappaflow.scriptutil import run

run(gk_trajectory, snakemake.input.starts, int(snakemake.wildcards.k), dict(snakemake.params.gk),
    list(snakemake.input.models), snakemake.params.checkpoint, snakemake.output[0], log=snakemake.log)
