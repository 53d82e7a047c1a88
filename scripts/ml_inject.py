"""Snakemake script: ML forces -> pw.x-format outputs (a store the DFT route's reap reads)."""
from kappaflow.ml.steps import inject
from kappaflow.scriptutil import run

run(inject, snakemake.input.manifest, snakemake.input.forces, snakemake.params.store, snakemake.output[0],
    snakemake.params.mode, log=snakemake.log)
