"""Snakemake script: the training data of a round (every finished pw.x run of the batches so far)."""
from kappaflow.al.loop import build_round_dataset
from kappaflow.scriptutil import run

run(build_round_dataset, list(snakemake.input.selected), snakemake.params.store, snakemake.params.on_failure,
    snakemake.output.examples, snakemake.output.extxyz, snakemake.output.index, snakemake.input.get("baseline"),
    log=snakemake.log)
