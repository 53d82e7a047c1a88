"""Snakemake script: the active-learning candidate pool (pw.x inputs into the store, none run)."""
from kappaflow.al.loop import build_pool
from kappaflow.scriptutil import run

run(build_pool, snakemake.input.structure, snakemake.input.template, snakemake.input.manifest,
    snakemake.input.disp, snakemake.params.sow, snakemake.params.dft, snakemake.params.al,
    snakemake.params.stability, snakemake.params.store, snakemake.output[0], snakemake.input.get("aimd_snapshots"),
    log=snakemake.log)
