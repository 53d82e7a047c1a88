"""Snakemake script: sweep table, figure and convergence verdicts."""
from kappaflow.scriptutil import run
from kappaflow.steps import progress
from kappaflow.sweep import run_sweep_summary

kappa_jsons = dict(zip(snakemake.params.kappa_points, snakemake.input.kappa))
run(run_sweep_summary, snakemake.input.structure, snakemake.params.kappa_points, snakemake.params.force_points,
    kappa_jsons, snakemake.params.tolerance, snakemake.params.temperature_k, dict(snakemake.output.items()),
    progress=progress, log=snakemake.log)
