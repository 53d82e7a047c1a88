"""Snakemake script: every finished pw.x output -> PANNA .example + one extxyz entry."""
from kappaflow.ml.steps import build_dataset
from kappaflow.scriptutil import run

run(build_dataset, snakemake.input.manifest, snakemake.params.snapshots, snakemake.params.store,
    snakemake.output.examples, snakemake.output.extxyz, snakemake.output.index, log=snakemake.log)
