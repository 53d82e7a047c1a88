"""Snakemake script: κ of one sweep point (reap + BTE in memory, one temperature), no pw.x."""
from kappaflow.scriptutil import run
from kappaflow.steps import progress
from kappaflow.sweep import run_sweep_kappa

run(run_sweep_kappa, snakemake.input.manifest, snakemake.input.disp, snakemake.params.store,
    snakemake.params.reap, snakemake.params.bte, snakemake.params.mesh, snakemake.params.temperature_k,
    snakemake.output.kappa, point={"label": snakemake.params.label}, progress=progress,
    provenance=snakemake.params.provenance, log=snakemake.log)
