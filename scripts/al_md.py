"""Snakemake script: MD with a round's committee; its snapshots join the pool (kappaflow.al.md_pool)."""
from pathlib import Path

from kappaflow.al.md_pool import committee_md_pool
from kappaflow.scriptutil import run

run(committee_md_pool, int(snakemake.wildcards.round), [Path(p).parent for p in snakemake.input.models],
    snakemake.input.gvectors, snakemake.input.structure, snakemake.input.template, dict(snakemake.params.sow),
    dict(snakemake.params.dft), dict(snakemake.params.al), snakemake.params.store, snakemake.output[0],
    snakemake.input.get("baseline"), log=snakemake.log)
