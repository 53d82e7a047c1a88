"""Snakemake script: DFT forces where the loop ran pw.x, committee forces elsewhere (a store reap reads)."""
from kappaflow.al.loop import inject_stage
from kappaflow.scriptutil import run

run(inject_stage, snakemake.input.manifest, snakemake.input.forces, list(snakemake.input.selected),
    snakemake.params.store, snakemake.output[0], dict(snakemake.params.al), snakemake.input.get("scores"),
    log=snakemake.log)
