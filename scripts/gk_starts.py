"""Snakemake script: NVT thermalisation and the starting points of the GK trajectories (kappaflow.gk.steps)."""
from kappaflow.gk.steps import gk_starts
from kappaflow.scriptutil import run

run(gk_starts, snakemake.input.structure, dict(snakemake.params.gk), float(snakemake.wildcards.T),
    list(snakemake.input.models), snakemake.output[0], log=snakemake.log)
