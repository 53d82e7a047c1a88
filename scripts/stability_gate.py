"""Snakemake script: the stability gate (FC2 from the single-displacement supercells, imaginary modes)."""
from kappaflow.scriptutil import run
from kappaflow.steps import run_stability_gate

run(run_stability_gate, snakemake.input.manifest, snakemake.input.disp, snakemake.params.store,
    snakemake.params.stability, snakemake.params.reap, dict(snakemake.output.items()),
    title=snakemake.params.title, log=snakemake.log)
