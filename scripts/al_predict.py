"""Snakemake script: committee spread on the pool and the sow supercells (the scores of the next selection)."""
from pathlib import Path

from kappaflow.al.loop import predict_pool
from kappaflow.scriptutil import run

run(predict_pool, [Path(p).parent for p in snakemake.input.models], snakemake.input.pool, snakemake.input.manifest,
    snakemake.params.store, snakemake.input.gvectors, snakemake.input.index, snakemake.output[0],
    snakemake.input.get("baseline"), log=snakemake.log)
